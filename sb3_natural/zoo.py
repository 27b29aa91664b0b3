"""rl-zoo3 integration: register the keys of :mod:`sb3_natural.registry` and run rl-zoo3's CLI.

rl-zoo3 has no plugin mechanism: its ``ALGOS``, ``HYPERPARAMS_SAMPLER`` and
``HYPERPARAMS_CONVERTER`` dicts are module-level, and ``train``/``enjoy`` read them at call
time. :func:`register` adds our keys to them; :func:`with_default_config` adds
``--conf-file <zoo configs>/<key>.yml`` for our keys when the user gave none (found by
:func:`sb3_natural.configs.zoo_config_dir`: installed with the package, or the checkout's).
"""

from __future__ import annotations

import sys

from sb3_natural.configs import zoo_config_file
from sb3_natural.extras import MissingExtraError, require_extra
from sb3_natural.registry import REGISTRY, ZOO_ALGOS

__all__ = ["REGISTRY", "ZOO_ALGOS", "register", "run_zoo", "with_default_config"]


def register() -> None:
    """Add our algorithms to rl-zoo3's registries (idempotent).

    :raises ~sb3_natural.extras.MissingExtraError: rl-zoo3 is not installed (the ``zoo`` extra)"""
    require_extra("zoo", "the rl-zoo3 integration (sb3_natural.zoo, sb3-natural-train / enjoy)", ("rl_zoo3",))
    from rl_zoo3 import utils
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    for key, entry in REGISTRY.items():
        utils.ALGOS[key] = entry.cls
        HYPERPARAMS_SAMPLER[key] = entry.sampler
        HYPERPARAMS_CONVERTER[key] = entry.converter  # type: ignore[assignment]


def _flag_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def with_default_config(argv: list[str]) -> list[str]:
    """Add ``--conf-file <zoo configs>/<algo>.yml`` for our keys, and check the algorithm key."""
    from rl_zoo3 import utils

    algo = _flag_value(argv, "--algo") or "ppo"
    if algo not in utils.ALGOS:
        raise SystemExit(f"error: unknown algorithm {algo!r}; available: {', '.join(sorted(utils.ALGOS))}")
    if algo in ZOO_ALGOS and _flag_value(argv, "--conf-file", "-conf") is None:
        try:
            config = zoo_config_file(algo)
        except FileNotFoundError as err:
            raise SystemExit(f"error: {err}") from err
        argv = [*argv, "--conf-file", str(config)]
    return argv


def run_zoo(entry: str, argv: list[str] | None = None) -> None:
    """Run rl-zoo3's ``train`` or ``enjoy`` with our algorithms registered, one torch thread.

    Our own flag, removed before rl-zoo3 parses the rest: ``--flush-denormal`` calls
    ``torch.set_flush_denormal(True)``, so that values below float32's smallest normal (1.2e-38)
    become 0. On sparse-reward tasks Adam's moment estimates decay into that range, where x86 CPUs
    compute slowly: TD3's updates on MountainCarContinuous-v0 ran 2.5x slower without it.
    """
    import torch as th

    raw = list(sys.argv[1:] if argv is None else argv)
    if "--flush-denormal" in raw:
        raw.remove("--flush-denormal")
        th.set_flush_denormal(True)
    if "--num-threads" not in raw:
        th.set_num_threads(1)
    try:
        register()
    except MissingExtraError as err:
        raise SystemExit(f"error: {err}") from None
    args = with_default_config(raw) if entry == "train" else raw
    if entry == "enjoy":
        from rl_zoo3 import utils

        algo = _flag_value(args, "--algo") or "ppo"
        if algo not in utils.ALGOS:
            raise SystemExit(f"error: unknown algorithm {algo!r}; available: {', '.join(sorted(utils.ALGOS))}")
    sys.argv = [f"sb3_natural.{entry}", *args]
    if entry == "train":
        from rl_zoo3.train import train

        train()
    else:
        from rl_zoo3.enjoy import enjoy

        enjoy()
