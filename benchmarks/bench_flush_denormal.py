"""What flushing denormal floats buys an off-policy update, A/B in one process.

    python benchmarks/bench_flush_denormal.py RUN_DIR [--steps 150] [--repeats 3]

RUN_DIR is a benchmark run trained *without* --flush-denormal (e.g.
benchmarks/results/td3_invert/runs/td3_ig/MountainCarContinuous-v0/seed0); its final model carries
the Adam states training left behind. Each block reloads that model (so flushed blocks never see
states an earlier flushed block had zeroed), fills the replay buffer with 5000 random transitions
of the env's spaces, counts the denormal Adam moments (0 < |x| < 1.2e-38, float32's smallest
normal), then times ``train()`` with ``torch.set_flush_denormal`` off or on. Blocks alternate
off/on; the median ratio is the speed-up. Prints one line per block and the summary.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch as th


def denormal_share(optimizers: list[th.optim.Optimizer]) -> float:
    """Share of Adam moments (exp_avg, exp_avg_sq) that are denormal: 0 < |x| < finfo(float32).tiny."""
    total = denormal = 0
    for opt in optimizers:
        for state in opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                t = state[key]
                total += t.numel()
                denormal += int(((t != 0) & (t.abs() < th.finfo(th.float32).tiny)).sum())
    return denormal / max(total, 1)


def block(zip_path: Path, cls: type, flush: bool, steps: int) -> tuple[float, float, float]:
    """Reload, fill the buffer, time ``steps`` updates; returns (s/update, denormal share before, after)."""
    from stable_baselines3.common.logger import configure

    th.set_flush_denormal(False)
    model = cls.load(zip_path, device="cpu")
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    low, high = np.clip(model.observation_space.low, -10, 10), np.clip(model.observation_space.high, -10, 10)
    act_space = model.action_space
    for _ in range(5000):
        obs = rng.uniform(low, high).astype(np.float32)
        nxt = rng.uniform(low, high).astype(np.float32)
        act = rng.uniform(-1, 1, act_space.shape).astype(np.float32)  # SB3 stores scaled actions
        model.replay_buffer.add(obs[None], nxt[None], act[None], np.array([-0.01]), np.array([False]), [{}])
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    before = denormal_share(optimizers)
    th.set_flush_denormal(flush)
    model.train(gradient_steps=20, batch_size=model.batch_size)  # warm-up
    t0 = time.perf_counter()
    model.train(gradient_steps=steps, batch_size=model.batch_size)
    elapsed = (time.perf_counter() - t0) / steps
    after = denormal_share(optimizers)
    th.set_flush_denormal(False)
    return elapsed, before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=150, help="timed updates per block")
    parser.add_argument("--repeats", type=int, default=3, help="off/on block pairs")
    args = parser.parse_args()
    th.set_num_threads(1)
    if not th.set_flush_denormal(True):
        raise SystemExit("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")
    th.set_flush_denormal(False)

    from bench_td3_bounds import run_model  # this folder is on sys.path when run as a script

    result, cls, zip_path = run_model(args.run_dir)
    if result.get("flush_denormal"):
        raise SystemExit(f"{args.run_dir} was trained with --flush-denormal: its Adam states hold no denormals")
    algo, env_id = result["algo"], result["env"]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for flush in (False, True):
            dt, before, after = block(zip_path, cls, flush, args.steps)
            times[flush].append(dt)
            print(f"flush={flush!s:5} {dt * 1e3:6.1f} ms/update  denormal Adam moments {before:.2f} -> {after:.2f}")
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"{algo} {env_id}: median {off * 1e3:.1f} ms without flushing, {on * 1e3:.1f} ms with: {off / on:.2f}x")


if __name__ == "__main__":
    main()
