"""Where the zoo configs are, and one loader for them (the CLI, the demo, the benchmark and the tests).

``zoo_configs/`` sits at the top of the repository and is the only copy in git. The wheel and the sdist
carry it inside the package as ``sb3_natural/zoo_configs/`` (mapped there at build time by
``setup.py``), so an installed package finds its configs from any directory. Lookup order:

1. ``$SB3_NATURAL_ZOO_CONFIGS`` (a folder of ``<key>.yml`` files), when set;
2. the installed package's ``sb3_natural/zoo_configs/`` (a wheel or sdist install);
3. the checkout's top-level ``zoo_configs/`` (an editable install, or running from the clone).

``--conf-file`` on the command line overrides all of them for one run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "SB3_NATURAL_ZOO_CONFIGS"
_PACKAGE_DIR = Path(__file__).resolve().parent


def zoo_config_dir() -> Path:
    """The folder of ``<key>.yml`` zoo configs, by the lookup order above.

    :raises FileNotFoundError: when none of the places exists (the message lists them)
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"${ENV_VAR}={env!r} is not a directory")
        return path
    candidates = [_PACKAGE_DIR / "zoo_configs", _PACKAGE_DIR.parent / "zoo_configs"]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.yml")):
            return path
    raise FileNotFoundError(f"no zoo configs found; looked in {[str(p) for p in candidates]}; set ${ENV_VAR}")


def zoo_config_file(algo: str) -> Path:
    """``<config dir>/<algo>.yml``; :raises FileNotFoundError: naming the path when it is missing."""
    path = zoo_config_dir() / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"no zoo config for {algo!r} at {path}; pass --conf-file")
    return path


def load_zoo_entry(algo: str, env_id: str, config_dir: Path | None = None) -> dict[str, Any]:
    """The hyperparameters of ``env_id`` in ``<algo>.yml`` (rl-zoo3 format), as a new dict.

    :raises KeyError: when the file has no entry for ``env_id`` (the message lists the entries)
    """
    path = zoo_config_file(algo) if config_dir is None else Path(config_dir) / f"{algo}.yml"
    with open(path) as f:
        entries = yaml.safe_load(f)
    if env_id not in entries:
        raise KeyError(f"{path} has no entry for {env_id!r}; entries: {sorted(entries)}")
    return dict(entries[env_id])
