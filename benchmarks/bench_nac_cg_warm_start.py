"""NAC's CG solver started from 0 vs warm-started from the last w, on the HalfCheetah-v5 zoo entry.

    python benchmarks/bench_nac_cg_warm_start.py [--variants cold warm] [--steps 300000] [--seed 0]

Trains NAC with zoo_configs/nac.yml's HalfCheetah-v5 hyperparameters (normalized observations and
rewards, 2 envs), once per variant with the same seed, ``cg_warm_start=False`` ("cold") or True
("warm"). Every 50k steps it evaluates the deterministic policy for 5 episodes on a separately
seeded env (observation statistics copied from training) and prints ``variant steps mean_return``;
the last lines give each variant's median train/solver_residual (the CG residual norm
``|b - A x|`` after ``cg_max_steps`` iterations: the solve is truncated, so the start point
matters) and train/kl.
One variant takes 8-10 min here at 300k steps.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from sb3_natural import NAC
from sb3_natural.configs import zoo_config_dir

ENV = "HalfCheetah-v5"
NOT_ALGO_KWARGS = {"normalize", "n_envs", "n_timesteps", "policy"}


class _Collect(Logger):
    """Logger that keeps the train/* values it is given (nothing written to disk)."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.values: dict[str, list[float]] = {}

    def record(self, key: str, value: Any, exclude: Any = None) -> None:
        if key.startswith("train/") and isinstance(value, float):
            self.values.setdefault(key, []).append(value)


def entry() -> dict[str, Any]:
    with open(zoo_config_dir() / "nac.yml") as f:
        conf = yaml.safe_load(f)[ENV]
    return {k: v for k, v in conf.items() if k not in NOT_ALGO_KWARGS}


def run(variant: str, steps: int, seed: int) -> None:
    env = VecNormalize(make_vec_env(ENV, n_envs=2, seed=seed))
    kwargs = {**entry(), "cg_warm_start": variant == "warm"}
    model = NAC("MlpPolicy", env, seed=seed, device="cpu", **kwargs)
    logger = _Collect()
    model.set_logger(logger)
    eval_env = VecNormalize(make_vec_env(ENV, n_envs=1, seed=seed + 123), training=False, norm_reward=False)
    while model.num_timesteps < steps:
        model.learn(min(50_000, steps), reset_num_timesteps=False)
        eval_env.obs_rms = env.obs_rms
        mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
        print(f"{variant} {model.num_timesteps} {mean:.0f}", flush=True)
    for key in ("train/solver_residual", "train/kl"):
        vals = logger.values.get(key, [])
        if vals:
            print(f"{variant} {key}: median {statistics.median(vals):.3g} over {len(vals)} updates", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=["cold", "warm"], default=["cold", "warm"])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    for variant in args.variants:
        run(variant, args.steps, args.seed)


if __name__ == "__main__":
    main()
