"""NAC learning benchmark: zoo_configs/nac.yml entries, several seeds, deterministic evaluation.

    python benchmarks/bench_nac.py --env CartPole-v1 --seeds 0 1 2 3 4 --workers 2

Each seed trains for the config's n_timesteps and is evaluated on 10 deterministic episodes of a
separately seeded env; prints one JSON line per seed and a Markdown summary (median, mean, std).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date


def run_seed(env_id: str, seed: int) -> dict:
    import torch as th
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_natural.registry import make_zoo_model

    th.set_num_threads(1)
    model, eval_env, n_timesteps = make_zoo_model("nac", env_id, seed)
    t0 = time.perf_counter()
    model.learn(n_timesteps)
    wall = time.perf_counter() - t0
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    return {"env": env_id, "seed": seed, "timesteps": n_timesteps, "mean": float(mean), "std": float(std), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_seed, [args.env] * len(args.seeds), args.seeds))
    for r in results:
        print(json.dumps(r))
    means = [r["mean"] for r in results]
    print(
        f"\n| env | steps | seeds | median | mean +/- std over seeds | per-seed | date |\n|---|---|---|---|---|---|---|\n"
        f"| {args.env} | {results[0]['timesteps']} | {len(means)} | {statistics.median(means):.1f} "
        f"| {statistics.mean(means):.1f} +/- {statistics.pstdev(means):.1f} | {', '.join(f'{m:.0f}' for m in means)} "
        f"| {date.today().isoformat()} |"
    )


if __name__ == "__main__":
    main()
