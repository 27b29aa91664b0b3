"""``load()`` with a clear error for a file that is truncated, empty or not a saved model, and for
constructor arguments given to it that the constructor would refuse."""

from __future__ import annotations

import contextlib
import inspect
import io
import pathlib
import warnings
import zipfile
import zlib
from typing import Any, TypeVar

SelfLoad = TypeVar("SelfLoad", bound="ClearLoadErrorsMixin")


class ClearLoadErrorsMixin:
    """Mixed into every algorithm class before SB3's base: ``load`` names the file it could not read.

    SB3 raises a bare ``AssertionError("No data found in the saved file")`` for a zip archive that is
    cut short (a copy interrupted, a disk that filled up), and zlib/EOF errors from deeper inside for
    one cut in its middle; here each becomes a ``ValueError`` that names the path.

    SB3's ``load(path, env, **kwargs)`` sets each keyword argument on the model as it is; here those
    that are constructor arguments (``n_steps``, ``gamma``, ``fisher``, ...) are first checked as the
    constructor checks them, with the same errors, and an error while the saved state is restored
    into the model built with them (``critic="adam"`` for a model saved with ``critic="kfac"``: other
    K-FAC blocks) names them.
    """

    @classmethod
    def load(cls: type[SelfLoad], path: str | pathlib.Path | Any, *args: Any, **kwargs: Any) -> SelfLoad:
        given = {k: v for k, v in kwargs.items() if k in constructor_arguments(cls)}
        if given:
            kwargs.update(_check_as_the_constructor(cls, given))
        try:
            return super().load(path, *args, **kwargs)  # type: ignore[misc]
        except AssertionError as err:
            if "No data found" not in str(err):
                raise
            raise ValueError(f"{path}: no data found in the saved file (truncated, or not written by save())") from err
        except (EOFError, zlib.error, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: the saved file is damaged or truncated ({type(err).__name__}: {err})") from err
        except (ValueError, RuntimeError) as err:
            if not given:
                raise
            names = ", ".join(f"{k}={v!r}" for k, v in given.items())
            kind = ValueError if isinstance(err, ValueError) else RuntimeError
            raise kind(f"{path}: loading with {names} failed: {err}") from err


def _check_as_the_constructor(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Build ``cls`` with ``given`` (the rest the defaults, no env, no model) for its argument checks, and
    return ``given`` as that model stores them (what the constructor converts: ``train_freq=[4, "step"]``
    as rl-zoo3's YAML writes it, a numpy ``seed``), for ``load`` to set. An error that does not name one
    of ``given`` (a user's subclass whose constructor needs arguments of its own) is not the user's:
    ``load`` then goes on as SB3's does, with ``given`` unchecked."""
    aliases = getattr(cls, "policy_aliases", {})
    policy = "MlpPolicy" if "MlpPolicy" in aliases or not aliases else next(iter(aliases))
    # the defaults' warnings and prints are not the user's
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            built = cls(policy, None, _init_setup_model=False, **given)
        except Exception as err:
            if str(err).startswith(tuple(given)):
                raise
            return given
    return {k: getattr(built, k, v) for k, v in given.items()}


_NOT_SETTABLE = ("self", "policy", "env", "_init_setup_model", "device")


def constructor_arguments(cls: type) -> frozenset[str]:
    """The keyword arguments ``cls(...)`` takes: those of its ``__init__`` and, through ``**kwargs``, of
    each next ``__init__`` in the MRO, down to the first without ``**kwargs`` (SB3's class), less
    ``policy``, ``env``, ``device`` and ``_init_setup_model`` (``load`` takes them itself or not at all)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(names - set(_NOT_SETTABLE))
