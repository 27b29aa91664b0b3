"""Benchmark of the score / Fisher core against the naive loop and sb3-contrib's TRPO.

For each (env spaces, MLP size): N observations from a rollout of a real sb3-contrib
``TRPO`` model, then, all in one process with one torch thread, the median over repeats of

* per-sample scores: ours (fresh output, and into a reused buffer), torch.func vmap, the
  naive per-sample ``autograd.grad`` loop, and ONE batched backward of the summed log-prob;
* Fisher-vector products: sb3-contrib's own ``TRPO.hessian_vector_product`` on that model and
  batch (with its KL convention), against our analytic, direct and empirical products; the
  one-off build cost of each (sb3-contrib: the KL gradient with ``create_graph``) is separate.

Ratios are what to read (the machine is shared); absolute times are printed for context.

    python benchmarks/bench_math.py                 # the full grid (about 10 minutes)
    python benchmarks/bench_math.py --quick         # fewer repeats, 64x64 only
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch as th


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def rollout_batch(model, n: int, seed: int = 0):
    """n observations and actions from the model's own policy acting in its env."""
    env = model.get_env()
    env.seed(seed)
    obs = env.reset()
    all_obs, all_act = [], []
    for _ in range(n // env.num_envs):
        action, _ = model.predict(obs, deterministic=False)
        all_obs.append(obs)
        all_act.append(action)
        obs, _, _, _ = env.step(action)
    import numpy as np

    obs_t = th.as_tensor(np.concatenate(all_obs)).float()
    act_t = th.as_tensor(np.concatenate(all_act))
    return obs_t, act_t


def sb3_contrib_fvp(model, obs: th.Tensor):
    """(params, grad_kl) exactly as sb3-contrib's TRPO.train() builds them."""
    from stable_baselines3.common.distributions import kl_divergence

    policy = model.policy
    with th.no_grad():
        old = copy.copy(policy.get_distribution(obs))
    kl = kl_divergence(policy.get_distribution(obs), old).mean()
    params, grads = [], []
    for name, p in policy.named_parameters():
        if "value" in name:
            continue
        (g,) = th.autograd.grad(kl, p, create_graph=True, retain_graph=True, allow_unused=True)
        if g is not None:
            params.append(p)
            grads.append(g.reshape(-1))
    return params, th.cat(grads)


def bench_case(env_id: str, arch: int, n: int, repeats: int, loop_repeats: int) -> dict:
    from sb3_contrib import TRPO

    from sb3_natural.common.fisher import AnalyticFVP, DirectFVP, EmpiricalFVP
    from sb3_natural.common.heads import ActorHead
    from sb3_natural.common.scores import per_sample_scores

    model = TRPO("MlpPolicy", env_id, seed=0, device="cpu", policy_kwargs={"net_arch": [arch, arch]})
    obs, actions = rollout_batch(model, n)
    head = ActorHead(model.policy)
    res: dict = {"env": env_id, "mlp": f"{arch}x{arch}", "N": n, "P": head.num_params}

    def batched_backward():
        lp = head.dist.log_prob(head(obs), actions).sum()
        th.autograd.grad(lp, head.params)

    buf = th.empty(n, head.num_params)
    res["batched_backward_ms"] = median_ms(batched_backward, repeats)
    res["scores_ms"] = median_ms(lambda: per_sample_scores(head, obs, actions), repeats)
    res["scores_reused_ms"] = median_ms(lambda: per_sample_scores(head, obs, actions, out=buf), repeats)
    res["scores_vmap_ms"] = median_ms(lambda: per_sample_scores(head, obs, actions, method="vmap"), max(3, repeats // 3))
    res["scores_loop_ms"] = median_ms(lambda: per_sample_scores(head, obs, actions, method="loop"), loop_repeats, warmup=0)

    params, grad_kl = sb3_contrib_fvp(model, obs)
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(0))
    res["sb3_contrib_build_ms"] = median_ms(lambda: sb3_contrib_fvp(model, obs), repeats)
    res["sb3_contrib_fvp_ms"] = median_ms(lambda: model.hessian_vector_product(params, grad_kl, v), repeats)
    damping = model.cg_damping
    analytic = AnalyticFVP(head, obs, kl_convention="mean", damping=damping)
    ref = model.hessian_vector_product(params, grad_kl, v)
    res["analytic_rel_err_vs_sb3_contrib"] = float((analytic(v) - ref).norm() / ref.norm())
    res["analytic_build_ms"] = median_ms(lambda: AnalyticFVP(head, obs, kl_convention="mean", damping=damping), repeats)
    res["analytic_fvp_ms"] = median_ms(lambda: analytic(v), repeats)
    direct = DirectFVP(head, obs, kl_convention="mean", damping=damping)
    res["direct_fvp_ms"] = median_ms(lambda: direct(v), repeats)
    empirical = EmpiricalFVP(head, obs, actions, damping=damping)
    res["empirical_fvp_ms"] = median_ms(lambda: empirical(v), repeats)
    # A CG solve with 10 products (sb3-contrib's default is 15): build once + 10 products.
    k = 10
    res["cg10_sb3_contrib_ms"] = res["sb3_contrib_build_ms"] + k * res["sb3_contrib_fvp_ms"]
    res["cg10_analytic_ms"] = res["analytic_build_ms"] + k * res["analytic_fvp_ms"]
    model.get_env().close()
    return res


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| env spaces | MLP | P | batched bwd (ms) | scores (ms) | scores, reused buffer | loop (ms) "
        "| loop / scores | scores / bwd | scores reused / bwd | vmap / scores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['mlp']} | {r['P']} | {r['batched_backward_ms']:.2f} | {r['scores_ms']:.2f} "
            f"| {r['scores_reused_ms']:.2f} | {r['scores_loop_ms']:.0f} | {r['scores_loop_ms'] / r['scores_ms']:.0f}x "
            f"| {r['scores_ms'] / r['batched_backward_ms']:.1f}x | {r['scores_reused_ms'] / r['batched_backward_ms']:.1f}x "
            f"| {r['scores_vmap_ms'] / r['scores_ms']:.1f}x |"
        )
    lines += [
        "",
        "| env spaces | MLP | sb3-contrib FVP (ms) | analytic / sb3-contrib | direct / sb3-contrib "
        "| empirical / sb3-contrib | build: analytic / sb3-contrib | CG(10): analytic / sb3-contrib | rel. err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["sb3_contrib_fvp_ms"]
        lines.append(
            f"| {r['env']} | {r['mlp']} | {s:.2f} | {r['analytic_fvp_ms'] / s:.2f} | {r['direct_fvp_ms'] / s:.2f} "
            f"| {r['empirical_fvp_ms'] / s:.2f} | {r['analytic_build_ms'] / r['sb3_contrib_build_ms']:.2f} "
            f"| {r['cg10_analytic_ms'] / r['cg10_sb3_contrib_ms']:.2f} | {r['analytic_rel_err_vs_sb3_contrib']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="batch size N")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per measurement (median)")
    parser.add_argument("--loop-repeats", type=int, default=10, help="repeats of the naive loop")
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5"])
    parser.add_argument("--archs", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--quick", action="store_true", help="3 repeats, 64x64 only")
    parser.add_argument("--out", default="benchmarks/results/bench_math", help="output prefix (.md and .json)")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.quick:
        args.repeats, args.loop_repeats, args.archs = 3, 1, [64]
    rows = []
    for env_id in args.envs:
        for arch in args.archs:
            r = bench_case(env_id, arch, args.n, args.repeats, args.loop_repeats)
            print(json.dumps(r), flush=True)
            rows.append(r)
    header = (
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {th.__version__}, "
        f"{th.get_num_threads()} thread; date {date.today().isoformat()}; N = {args.n}; "
        f"median of {args.repeats} runs (naive loop: {args.loop_repeats})."
    )
    md = header + "\n\n" + to_markdown(rows) + "\n"
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
