"""``load()`` with a clear error for a file that is truncated, empty or not a saved model."""

from __future__ import annotations

import pathlib
import zipfile
import zlib
from typing import Any, TypeVar

SelfLoad = TypeVar("SelfLoad", bound="ClearLoadErrorsMixin")


class ClearLoadErrorsMixin:
    """Mixed into every algorithm class before SB3's base: ``load`` names the file it could not read.

    SB3 raises a bare ``AssertionError("No data found in the saved file")`` for a zip archive that is
    cut short (a copy interrupted, a disk that filled up), and zlib/EOF errors from deeper inside for
    one cut in its middle; here each becomes a ``ValueError`` that names the path.
    """

    @classmethod
    def load(cls: type[SelfLoad], path: str | pathlib.Path | Any, *args: Any, **kwargs: Any) -> SelfLoad:
        try:
            return super().load(path, *args, **kwargs)  # type: ignore[misc]
        except AssertionError as err:
            if "No data found" not in str(err):
                raise
            raise ValueError(f"{path}: no data found in the saved file (truncated, or not written by save())") from err
        except (EOFError, zlib.error, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: the saved file is damaged or truncated ({type(err).__name__}: {err})") from err
