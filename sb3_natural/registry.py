"""The one table of this package's algorithm keys: the class each trains, its Optuna sampler and converter,
and whether the benchmark suites run it. ``train``, ``enjoy``, ``-optimize``, the demo and the benchmark
all read it; adding an algorithm is one row here (see CONTRIBUTING.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sb3_natural import samplers
from sb3_natural.acktr import ACKTR
from sb3_natural.deterministic import DDPG, TD3
from sb3_natural.fisher_trpo import FisherTRPO
from sb3_natural.nac import NAC
from sb3_natural.reinforce import REINFORCE


@dataclass(frozen=True)
class ZooEntry:
    """One zoo key: ``cls`` trains it with ``zoo_configs/<key>.yml``; ``sampler``/``converter`` are its
    Optuna search space (rl-zoo3's contracts); ``in_suites``: the benchmark suites include it."""

    cls: type
    sampler: Callable[..., dict[str, Any]]
    converter: Callable[[dict[str, Any]], dict[str, Any]]
    in_suites: bool = False


REGISTRY: dict[str, ZooEntry] = {
    "nac": ZooEntry(NAC, samplers.sample_nac_params, samplers.convert_nac_params, in_suites=True),
    "fisher_trpo": ZooEntry(
        FisherTRPO, samplers.sample_fisher_trpo_params, samplers.convert_fisher_trpo_params, in_suites=True
    ),
    "reinforce": ZooEntry(REINFORCE, samplers.sample_reinforce_params, samplers.convert_reinforce_params, in_suites=True),
    "acktr": ZooEntry(ACKTR, samplers.sample_acktr_params, samplers.convert_acktr_params, in_suites=True),
    "td3_ig": ZooEntry(TD3, samplers.sample_td3_ig_params, samplers.convert_td3_ig_params),
    # td3_ig's values with SB3's tanh actor kept (zoo_configs/td3_ig_tanh.yml): same class
    "td3_ig_tanh": ZooEntry(TD3, samplers.sample_td3_ig_params, samplers.convert_td3_ig_params),
    "ddpg_ig": ZooEntry(DDPG, samplers.sample_td3_ig_params, samplers.convert_td3_ig_params),
}

#: key -> class, as rl-zoo3's ``ALGOS`` holds them
ZOO_ALGOS: dict[str, type] = {key: entry.cls for key, entry in REGISTRY.items()}


def make_zoo_model(key: str, env_id: str, seed: int = 0, device: str = "cpu") -> tuple[Any, Any, int]:
    """The untrained model of ``<key>.yml``'s ``env_id`` entry (its ``policy``, ``n_envs`` and
    hyperparameters, as ``python -m sb3_natural.train`` builds it, without rl-zoo3's wrappers), an
    evaluation env seeded ``seed + 1000`` (apart from the training envs) and the entry's ``n_timesteps``."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_natural.configs import load_zoo_entry

    if key not in REGISTRY:
        raise ValueError(f"unknown zoo key {key!r}; keys: {sorted(REGISTRY)}")
    hp = load_zoo_entry(key, env_id)
    n_timesteps = int(hp.pop("n_timesteps"))
    n_envs = int(hp.pop("n_envs", 1))
    policy = hp.pop("policy", "MlpPolicy")
    normalize = hp.pop("normalize", False)
    unsupported = sorted(set(hp) & _ZOO_ONLY_KEYS)
    if unsupported:
        raise ValueError(f"make_zoo_model does not apply rl-zoo3's {unsupported}; train with python -m sb3_natural.train")
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 1000)
    if normalize:  # rl-zoo3's `normalize: True` (or a dict of VecNormalize kwargs)
        from stable_baselines3.common.vec_env import VecNormalize

        kwargs = normalize if isinstance(normalize, dict) else {}
        env = VecNormalize(env, gamma=hp.get("gamma", 0.99), **kwargs)
        eval_env = VecNormalize(eval_env, gamma=hp.get("gamma", 0.99), training=False, norm_reward=False, **kwargs)
    return REGISTRY[key].cls(policy, env, seed=seed, device=device, **hp), eval_env, n_timesteps


#: rl-zoo3 keys of a config entry that are not algorithm arguments (``make_zoo_model`` refuses them)
_ZOO_ONLY_KEYS = {"env_wrapper", "frame_stack", "callback", "vec_env_wrapper", "normalize_kwargs"}
