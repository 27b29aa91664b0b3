"""The optional dependencies (pip "extras") and a clear error where one is not installed.

The algorithms need only the core dependencies. The rl-zoo3 integration (``sb3-natural-train``,
``sb3-natural-enjoy``, :mod:`sb3_natural.zoo`) and the benchmark harness (``python -m
sb3_natural.benchmark``) need the ``zoo`` extra; its Dask and Slurm executors the ``cluster`` extra
(:mod:`sb3_natural.benchmark.executors`). Without them these entry points say which modules are missing
and the ``pip install`` that brings them, instead of failing with a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

__all__ = ["MissingExtraError", "missing_modules", "require_extra"]


class MissingExtraError(ImportError):
    """A feature's optional dependencies are not installed (the message has the pip command)."""


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be imported (found without importing them)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_extra(extra: str, what: str, modules: Sequence[str]) -> None:
    """Raise :class:`MissingExtraError` when any of ``modules`` is not installed.

    :param extra: the extra that brings them, e.g. ``"zoo"``
    :param what: the feature that needs them, for the message
    :param modules: importable top-level names, e.g. ``("rl_zoo3", "scipy")``
    """
    missing = missing_modules(modules)
    if missing:
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f'pip install "sb3-natural[{extra}]"'
        )
