"""FisherTRPO vs sb3-contrib TRPO: time of one train() update on the same rollout, same weights.

    python benchmarks/bench_trpo.py [--repeats 7]

For each zoo config (rl-zoo's TRPO hyperparameters for CartPole-v1, and those of HalfCheetah-v4 on
HalfCheetah-v5), sb3-contrib's TRPO collects one rollout; FisherTRPO gets the same policy weights and
the same rollout buffer. Both train() calls are timed alternately, restoring the weights and the
optimizer state before every run; medians and the ratio are printed (one torch thread).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from datetime import date

import torch as th

# rl-zoo3's TRPO hyperparameters (HalfCheetah: its HalfCheetah-v4 entry).
CONFIGS: dict[str, dict] = {
    "CartPole-v1": {
        "n_envs": 2,
        "n_steps": 512,
        "batch_size": 512,
        "cg_damping": 1e-3,
        "gae_lambda": 0.98,
        "learning_rate": 1e-3,
        "n_critic_updates": 20,
    },
    "HalfCheetah-v5": {
        "n_envs": 2,
        "n_steps": 1024,
        "batch_size": 128,
        "gae_lambda": 0.95,
        "cg_max_steps": 25,
        "cg_damping": 0.1,
        "n_critic_updates": 20,
        "learning_rate": 1e-3,
        "target_kl": 0.04,
    },
}


def setup(env_id: str, kl_convention: str, solver: str):
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_natural import FisherTRPO

    cfg = dict(CONFIGS[env_id])
    env = make_vec_env(env_id, n_envs=cfg.pop("n_envs"), seed=0)
    ref = TRPO("MlpPolicy", env, seed=0, device="cpu", **cfg)
    ours = FisherTRPO("MlpPolicy", env, seed=0, device="cpu", kl_convention=kl_convention, solver=solver, **cfg)
    ours.policy.load_state_dict(ref.policy.state_dict())
    for model in (ref, ours):
        model._setup_learn(10**6)
    _, callback = ref._setup_learn(10**6)
    ref.collect_rollouts(ref.env, callback, ref.rollout_buffer, ref.n_steps)
    ours.rollout_buffer = ref.rollout_buffer
    return ref, ours


def snapshot(model):
    buf = io.BytesIO()
    th.save({"policy": model.policy.state_dict(), "opt": model.policy.optimizer.state_dict()}, buf)
    return buf.getvalue()


def restore(model, blob):
    state = th.load(io.BytesIO(blob), weights_only=False)
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["opt"])


def bench(env_id: str, repeats: int, kl_convention: str, solver: str) -> dict:
    ref, ours = setup(env_id, kl_convention, solver)
    snaps = {id(m): snapshot(m) for m in (ref, ours)}
    times: dict[str, list[float]] = {"sb3_contrib": [], "fisher_trpo": []}
    for _ in range(repeats):
        for name, model in (("sb3_contrib", ref), ("fisher_trpo", ours)):
            restore(model, snaps[id(model)])
            t0 = time.perf_counter()
            model.train()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "env": env_id,
        "N": ref.rollout_buffer.buffer_size * ref.n_envs,
        "P_actor": ours._head.num_params,
        "kl_convention": kl_convention,
        "solver": solver,
        "sb3_contrib_train_s": med["sb3_contrib"],
        "fisher_trpo_train_s": med["fisher_trpo"],
        "speedup": med["sb3_contrib"] / med["fisher_trpo"],
    }


def crossover(repeats: int) -> None:
    """Time of the trust-region step with solver="dense" vs "cg" as the actor grows (CartPole, N = 1024)."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_natural import FisherTRPO

    print("| hidden | actor P | dense step (s) | cg step, 15 products (s) | dense / cg |\n|---|---|---|---|---|")
    for hidden in (4, 8, 16, 24, 32, 48, 64):
        times = {}
        for solver in ("dense", "cg"):
            env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
            kw = {
                "n_steps": 512,
                "seed": 0,
                "device": "cpu",
                "solver": solver,
                "policy_kwargs": {"net_arch": [hidden, hidden]},
            }
            model = FisherTRPO("MlpPolicy", env, **kw)
            _, callback = model._setup_learn(10**6)
            model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
            data = next(model.rollout_buffer.get(None))
            actions = data.actions.long().flatten()
            adv = (data.advantages - data.advantages.mean()) / data.advantages.std()
            blob = snapshot(model)
            runs = []
            for _ in range(repeats):
                restore(model, blob)
                t0 = time.perf_counter()
                model.trust_region_step(data.observations, actions, data.old_log_prob, adv)
                runs.append(time.perf_counter() - t0)
            times[solver] = statistics.median(runs)
        p = model._head.num_params
        print(
            f"| {hidden}x{hidden} | {p} | {times['dense']:.4f} | {times['cg']:.4f} | {times['dense'] / times['cg']:.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--envs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--crossover", action="store_true", help="measure where solver='dense' stops paying off")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.crossover:
        crossover(args.repeats)
        return
    rows = []
    for env_id in args.envs:
        for conv, solver in (("mean", "cg"), ("sum", "cg"), ("sum", "dense")):
            if solver == "dense" and env_id != "CartPole-v1":
                continue
            row = bench(env_id, args.repeats, conv, solver)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nOne train() update, median of {args.repeats}, one thread, {date.today().isoformat()}\n")
    print("| env | N | actor P | kl_convention | solver | sb3-contrib TRPO (s) | FisherTRPO (s) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['env']} | {r['N']} | {r['P_actor']} | {r['kl_convention']} | {r['solver']} "
            f"| {r['sb3_contrib_train_s']:.3f} | {r['fisher_trpo_train_s']:.3f} | {r['speedup']:.2f}x |"
        )


if __name__ == "__main__":
    main()
