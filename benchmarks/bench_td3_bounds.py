"""Share of actions at the bounds for the TD3 runs of a benchmark grid (issue: inverting gradients).

    python benchmarks/bench_td3_bounds.py benchmarks/results/td3_invert

For every finished run, loads its final model (and VecNormalize statistics, if any) and plays 10
deterministic episodes on a fresh env; an action dimension counts as "at the bound" when it lies
within 1% of the range from the bound (|a| >= 0.98 in SB3's scaled [-1, 1] space). For a tanh actor
it also counts the action dimensions where the tanh is saturated, d tanh(u)/du = 1 - tanh(u)^2 < 1e-3
(|u| > 4.1, u the input of the final tanh): there the gradient reaching the actor's weights is
scaled down more than 1000-fold, and a policy stuck at a bound cannot move back. Prints a Markdown
table (median over seeds) and writes bounds.md next to the grid's report.

Each run's numbers are kept in bounds.json beside its result.json (committed, like result.json; the
models are not), so a later call measures only the runs that have none and still reports the others.
A run with neither a model nor a bounds.json is left out, with a warning.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch as th


def final_model(run_dir: Path) -> Path | None:
    """The zip of a finished run's final model, or None where the run's logs were not kept."""
    result = json.loads((run_dir / "result.json").read_text())
    algo, env_id = result["algo"], result["env"]
    return next((run_dir / "logs").glob(f"{algo}/{env_id}_*/{env_id}.zip"), None)


def run_model(run_dir: Path) -> tuple[dict, type, Path]:
    """A finished run's result.json, its algorithm class (ours or rl-zoo3's) and its final model's zip."""
    from sb3_natural.zoo import ZOO_ALGOS

    zip_path = final_model(run_dir)
    if zip_path is None:
        raise FileNotFoundError(f"{run_dir} has no final model under logs/")
    result = json.loads((run_dir / "result.json").read_text())
    algo = result["algo"]
    if algo in ZOO_ALGOS:
        return result, ZOO_ALGOS[algo], zip_path
    from rl_zoo3.utils import ALGOS

    return result, ALGOS[algo], zip_path


SATURATED_DERIVATIVE = 1e-3


def bound_stats(run_dir: Path, episodes: int = 10, threshold: float = 0.98) -> tuple[float, float | None]:
    """(share of action dims at the bounds, share with a saturated tanh or None for a linear actor)."""
    from stable_baselines3.common.env_util import make_vec_env

    result, cls, zip_path = run_model(run_dir)
    env_id = result["env"]
    model = cls.load(zip_path, device="cpu")
    env = make_vec_env(env_id, n_envs=1, seed=12345)
    stats = zip_path.parent / env_id / "vecnormalize.pkl"
    if stats.is_file():  # observations normalized as in training, statistics frozen
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize.load(str(stats), env)
        env.training, env.norm_reward = False, False
    last = model.actor.mu[-1]
    tanh_inputs: list[th.Tensor] = []
    if isinstance(last, th.nn.Tanh):
        last.register_forward_hook(lambda _m, inputs, _out: tanh_inputs.append(inputs[0].detach()))
    obs = env.reset()
    at_bound, total, done_eps = 0, 0, 0
    while done_eps < episodes:
        action, _ = model.predict(obs, deterministic=True)
        scaled = model.policy.scale_action(action)
        at_bound += int((np.abs(scaled) >= threshold).sum())
        total += scaled.size
        obs, _, dones, _ = env.step(action)
        done_eps += int(dones.sum())
    if not tanh_inputs:
        return at_bound / total, None
    derivative = 1.0 - th.tanh(th.cat(tanh_inputs).double()) ** 2
    return at_bound / total, float((derivative < SATURATED_DERIVATIVE).double().mean())


def cached_bound_stats(run_dir: Path) -> tuple[float, float | None] | None:
    """bound_stats of a run, read from its bounds.json or measured and written there; None if it cannot be."""
    cache = run_dir / "bounds.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["at_bounds"], saved["saturated_tanh"]
    if final_model(run_dir) is None:
        print(f"warning: {run_dir} has no model and no bounds.json: left out", file=sys.stderr)
        return None
    at_bounds, saturated = bound_stats(run_dir)
    cache.write_text(json.dumps({"at_bounds": at_bounds, "saturated_tanh": saturated}, indent=1) + "\n")
    return at_bounds, saturated


def main() -> None:
    th.set_num_threads(1)
    grid = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/td3_invert")
    rows: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    for rfile in sorted(grid.glob("runs/*/*/*/result.json")):
        r = json.loads(rfile.read_text())
        stats = cached_bound_stats(rfile.parent)
        if stats is not None:
            rows.setdefault((r["algo"], r["env"]), []).append(stats)
    lines = [
        "| algorithm | env | seeds | share of action dims at the bounds (median) | per seed "
        "| saturated tanh, 1 - tanh^2 < 1e-3 (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for (algo, env_id), seeds in sorted(rows.items()):
        shares = [share for share, _ in seeds]
        per = ", ".join(f"{share:.2f}" for share in shares)
        sat = ", ".join("-" if s is None else f"{s:.2f}" for _, s in seeds)
        lines.append(f"| {algo} | {env_id} | {len(seeds)} | {statistics.median(shares):.2f} | {per} | {sat} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (grid / "bounds.md").write_text(text)


if __name__ == "__main__":
    main()
