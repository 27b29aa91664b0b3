"""Benchmark suites: algorithms x environments x seeds, with one training budget per env."""

from __future__ import annotations

from dataclasses import dataclass

from sb3_natural.registry import REGISTRY


@dataclass(frozen=True)
class Suite:
    """A grid: every algorithm is trained on every env with that env's budget, for every seed."""

    algos: tuple[str, ...]
    budgets: dict[str, int]
    seeds: tuple[int, ...]


OURS = tuple(key for key, entry in REGISTRY.items() if entry.in_suites)
REFERENCES = ("a2c", "ppo", "trpo")

SUITES: dict[str, Suite] = {
    # minutes on 2 cores
    "quick": Suite(
        algos=OURS + REFERENCES,
        budgets={"CartPole-v1": 20_000, "Acrobot-v1": 20_000, "Pendulum-v1": 20_000},
        seeds=(0, 1, 2),
    ),
    # rl-zoo budgets for classic control and Box2D
    "classic": Suite(
        algos=OURS + REFERENCES,
        budgets={
            "CartPole-v1": 100_000,
            "Acrobot-v1": 100_000,
            "MountainCar-v0": 100_000,
            "Pendulum-v1": 200_000,
            "MountainCarContinuous-v0": 50_000,
            "LunarLander-v3": 200_000,
            "LunarLanderContinuous-v3": 200_000,
        },
        seeds=(0, 1, 2, 3, 4),
    ),
    # hours: run it in the background
    "mujoco": Suite(
        algos=OURS + REFERENCES,
        budgets={"HalfCheetah-v5": 1_000_000, "Hopper-v5": 1_000_000},
        seeds=(0, 1, 2),
    ),
}
