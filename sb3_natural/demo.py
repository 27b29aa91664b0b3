"""`make demo`: train NAC on CartPole-v1 with its zoo config, evaluate it, plot the learning curve.

python -m sb3_natural.demo [--timesteps N] [--seed S] [--out DIR]

The default seed is 1 because the curve must start where an untrained policy stands. SB3 initializes
the action head with a small gain, so an untrained policy's deterministic action (the argmax of
nearly equal logits) is a fixed linear rule of the state, and for some initializations that rule
happens to balance the pole: with seed 0 the untrained NAC policy already scores 375 +/- 191 over
10 deterministic evaluation episodes (500 on some), so a curve from seed 0 starts near the top and
shows no learning. With seed 1 it scores 9.5 +/- 0.7 (pole down in ~10 steps), as do most seeds
(seeds 0-9: 375, 9.5, 8.9, 133, 9.4, 8.8, 25, 9.2, 179, 71). Evaluation uses its own env, seeded
apart from the training env, and 10 episodes per point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import NAC
from sb3_natural.registry import make_zoo_model


class EvalCurve(BaseCallback):
    """Deterministic evaluation every ``eval_freq`` steps on a separately seeded env, and the
    returns of the training episodes (stochastic policy, from the Monitor wrapper)."""

    def __init__(self, eval_env: Any, eval_freq: int, n_eval_episodes: int = 10) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.steps: list[int] = []
        self.means: list[float] = []
        self.train_steps: list[int] = []
        self.train_returns: list[float] = []
        self._next = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.train_steps.append(self.num_timesteps)
                self.train_returns.append(float(info["episode"]["r"]))
        if self.num_timesteps >= self._next:
            mean, _ = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, deterministic=True)
            self.steps.append(self.num_timesteps)
            self.means.append(float(mean))  # type: ignore[arg-type]
            self._next += self.eval_freq
        return True


ENV_ID = "CartPole-v1"
DEFAULT_SEED = 1  # see the module docstring: the untrained policy of seed 1 fails (9.5 of 500)


def build(seed: int = DEFAULT_SEED) -> tuple[NAC, Any, int]:
    """The untrained NAC model from ``nac.yml``'s CartPole-v1 entry, its evaluation env (seeded
    ``seed + 1000``, apart from the training env) and the entry's ``n_timesteps``."""
    return make_zoo_model("nac", ENV_ID, seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_natural.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timesteps", type=int, default=None, help="default: the zoo config's n_timesteps")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default 1: see the module docstring")
    parser.add_argument("--out", default="demo_output")
    args = parser.parse_args()
    th.set_num_threads(1)

    env_id = ENV_ID
    model, eval_env, zoo_timesteps = build(args.seed)
    n_timesteps = int(args.timesteps or zoo_timesteps)
    curve = EvalCurve(eval_env, eval_freq=max(n_timesteps // 10, 1))
    print(f"Training NAC on {env_id} for {n_timesteps} steps (zoo_configs/nac.yml, seed {args.seed}) ...", flush=True)
    t0 = time.perf_counter()
    model.learn(n_timesteps, callback=curve)
    train_s = time.perf_counter() - t0
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    curve.steps.append(model.num_timesteps)
    curve.means.append(float(mean))  # type: ignore[arg-type]
    print(f"NAC {env_id}: mean return {mean:.1f} +/- {std:.1f} over 10 deterministic episodes ({train_s:.0f} s training)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if curve.train_returns:
        window = 20
        r = np.array(curve.train_returns)
        rolling = np.convolve(r, np.ones(window) / window, mode="valid") if len(r) >= window else r
        ax.plot(curve.train_steps[len(r) - len(rolling) :], rolling, label="training episodes (stochastic, mean of 20)")
    ax.plot(curve.steps, curve.means, marker="o", label="evaluation (deterministic, 10 episodes; first point: untrained)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"NAC on {env_id} (seed {args.seed})")
    ax.set_ylim(0, 520)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "nac_cartpole_learning_curve.png"
    fig.savefig(png, dpi=100)
    np.savetxt(
        out / "nac_cartpole_learning_curve.csv", np.c_[curve.steps, curve.means], delimiter=",", header="steps,mean_return"
    )
    print(f"learning curve: {png}")


if __name__ == "__main__":
    main()
