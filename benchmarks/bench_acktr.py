"""ACKTR's update against A2C's, on the same rollout, one torch thread.

    python benchmarks/bench_acktr.py [--repeats 9] [--out benchmarks/results/acktr_speed]
    python benchmarks/bench_acktr.py --flops      # the matrix-product flops of each train() instead
    python benchmarks/bench_acktr.py --ablations  # "sample" without the KL diagnostic / the preconditioning
    python benchmarks/bench_acktr.py --products   # the exact first-layer factor's two products, float32 vs bfloat16
    python benchmarks/bench_acktr.py --scaling    # each update at 16 samples and at the full N: fixed vs per-sample time

For CartPole-v1 (8 envs x 32 steps = 256 samples) and HalfCheetah-v5 (1 env x 2048 steps), SB3's
default MlpPolicy (64x64 tanh, shared=False): one rollout is collected by SB3's A2C and copied into
each model, then ``train()`` (one update) is timed for A2C (RMSprop, SB3's default), ACKTR with
``fisher="exact"`` and ``"sample"`` (``critic="kfac"``, the joint step; eigendecompositions every 10
updates, so amortized), the same with ``kfac_stats_samples=1024`` (factors estimated on 1024 of the
rollout's samples; CartPole's 256 are all taken) and ACKTR with ``critic="adam"`` (10 epochs of the
critic, as NAC). Each
variant is timed in its own rounds beside A2C (the two alternate, A2C first every other round); the
medians and each variant's ratio to the median of the A2C updates timed beside it, in the same process,
are printed and written as JSON. ``--flops``: one ``train()`` of each model after the warm-up under
``torch.utils.flop_counter.FlopCounterMode`` (matrix products only: elementwise work, the optimizer's
step and the eigendecompositions are not counted), and the ratios to A2C's: the arithmetic each update
has to do, which its time ratio could only go below by running its products faster than A2C's.
``--scaling``: A2C and ACKTR (exact, sample) timed the same way on a rollout of 16 samples and on the
full one. ``t(16)`` is (almost all) the per-update cost that does not grow with the batch (Python,
dispatch, the step, the eigendecompositions' amortized share); ``t(N) - t(16)`` the part that does. An
update with no fixed cost at all would still take ``(t(N) - t(16)) / t_A2C(N)`` of A2C's update, and
one with A2C's own fixed cost ``(t(N) - t(16) + t_A2C(16)) / t_A2C(N)``: the ratios that making the
per-update overhead smaller could reach, at this implementation's per-sample work.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch as th
from bench_math import median_ms  # benchmarks/ is the script's folder
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from sb3_natural import ACKTR

CASES = {"CartPole-v1": (8, 32), "HalfCheetah-v5": (1, 2048)}
SMALL_CASES = {"CartPole-v1": (8, 2), "HalfCheetah-v5": (1, 16)}  # --scaling: 16 samples
VARIANTS = {
    "acktr_exact": {"fisher": "exact"},
    "acktr_sample": {"fisher": "sample"},
    "acktr_sample_stats_1024": {"fisher": "sample", "kfac_stats_samples": 1024},
    "acktr_exact_stats_1024": {"fisher": "exact", "kfac_stats_samples": 1024},
    "acktr_exact_adam_critic": {"fisher": "exact", "critic": "adam"},
}


def _rollout(env_id: str, n_envs: int, n_steps: int):
    a2c = A2C("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), n_steps=n_steps, seed=0, device="cpu")
    train = a2c.train
    a2c.train = lambda: None  # type: ignore[method-assign]
    a2c.learn(n_envs * n_steps)
    a2c.train = train  # type: ignore[method-assign]
    return a2c


# --ablations: fisher="sample" with a part of the update left out (timing only: the patched updates are
# not ACKTR's), to show how much of the gap to A2C each part accounts for
ABLATIONS = {
    "acktr_sample": {"fisher": "sample"},
    "sample_without_kl_diagnostic": {"fisher": "sample"},
    "sample_without_preconditioning": {"fisher": "sample"},
}


def _ablate(name: str, m: ACKTR) -> None:
    if name == "sample_without_kl_diagnostic":
        m._measured_kl = lambda obs, z_old: 0.0  # type: ignore[method-assign]
    elif name == "sample_without_preconditioning":  # direction = gradient: no K-FAC product at all
        m._state.kfac.precondition_and_quadratic = lambda g, num_leading=None: (g.clone(), 1.0)  # type: ignore[method-assign]


def measure(
    env_id: str,
    repeats: int,
    count_flops: bool = False,
    ablations: bool = False,
    case: tuple[int, int] | None = None,
    only: tuple[str, ...] | None = None,
    warmup: int = 2,
) -> dict:
    """``case``: ``(n_envs, n_steps)`` instead of :data:`CASES`'s; ``only``: these variants; ``warmup``:
    untimed rounds first."""
    n_envs, n_steps = CASES[env_id] if case is None else case
    a2c = _rollout(env_id, n_envs, n_steps)
    models = {"a2c": a2c}
    variants = ABLATIONS if ablations else VARIANTS
    if only is not None:
        variants = {name: variants[name] for name in only}
    for name, kwargs in variants.items():
        m = ACKTR("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), n_steps=n_steps, seed=0, device="cpu", **kwargs)
        m.policy.load_state_dict(a2c.policy.state_dict())
        m.set_logger(configure(None, []))
        _ablate(name, m)
        models[name] = m
    buffers = {name: copy.deepcopy(a2c.rollout_buffer) for name in models}
    if count_flops:
        return _flops(env_id, n_envs * n_steps, models, buffers)
    # one group per variant: A2C and the variant alternate (A2C first in even rounds), so that each ratio
    # is to A2C timed beside it, not after another variant (the Adam critic's epochs, run just before a
    # model, were measured to slow its next update by 0.2-0.3 ms at CartPole's N = 256)
    times: dict[str, list[float]] = {name: [] for name in models}
    a2c_times: dict[str, list[float]] = {name: [] for name in variants}
    for name in variants:
        for r in range(repeats + warmup):
            for which in ("a2c", name) if r % 2 == 0 else (name, "a2c"):
                m = models[which]
                m.rollout_buffer = copy.deepcopy(buffers[which])
                t0 = time.perf_counter()
                m.train()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    (a2c_times[name] if which == "a2c" else times[name]).append(dt)
    times["a2c"] = [t for ts in a2c_times.values() for t in ts]
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    a2c_med = {name: statistics.median(ts) * 1e3 for name, ts in a2c_times.items()}
    return {
        "env": env_id,
        "batch": n_envs * n_steps,
        "median_ms": med,
        "a2c_median_ms_beside": a2c_med,
        "ratio_to_a2c": {name: med[name] / a2c_med[name] for name in variants},
    }


def _flops(env_id: str, batch: int, models: dict, buffers: dict) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    counted = {}
    for name, m in models.items():
        for _ in range(2):  # warm-up: the first update's factors and inverses
            m.rollout_buffer = copy.deepcopy(buffers[name])
            m.train()
        m.rollout_buffer = copy.deepcopy(buffers[name])
        with FlopCounterMode(display=False) as counter:
            m.train()
        counted[name] = counter.get_total_flops() / 1e6
    return {"env": env_id, "batch": batch, "mflop": counted,
            "ratio_to_a2c": {k: v / counted["a2c"] for k, v in counted.items() if k != "a2c"}}  # fmt: skip


SCALING_VARIANTS = ("acktr_exact", "acktr_sample")


def scaling(env_id: str, repeats: int) -> dict:
    """:func:`measure` on 16 samples and on the full rollout (exact and sample), and the ratios to A2C's
    full update that an update without fixed cost / with A2C's fixed cost would have (module docstring)."""
    # 12 untimed rounds: every model past its second eigendecomposition refresh (inverse_update_freq = 10)
    small = measure(env_id, repeats, case=SMALL_CASES[env_id], only=SCALING_VARIANTS, warmup=12)
    full = measure(env_id, repeats, only=SCALING_VARIANTS, warmup=12)
    a2c_full, a2c_small = full["median_ms"]["a2c"], small["median_ms"]["a2c"]
    per_variant = {}
    for name in SCALING_VARIANTS:
        grows = full["median_ms"][name] - small["median_ms"][name]
        per_variant[name] = {
            "ms_small": small["median_ms"][name],
            "ms_full": full["median_ms"][name],
            "ratio_full": full["ratio_to_a2c"][name],
            "ratio_without_fixed_cost": grows / a2c_full,
            "ratio_with_a2c_fixed_cost": (grows + a2c_small) / a2c_full,
        }
    return {"env": env_id, "batch": full["batch"], "batch_small": small["batch"], "a2c_ms_small": a2c_small,
            "a2c_ms_full": a2c_full, "variants": per_variant}  # fmt: skip


_PRODUCT_DTYPES = (("float32", th.float32), ("bfloat16", th.bfloat16))


def products(repeats: int, n: int = 2048, k: int = 6, h: int = 64) -> dict:
    """Median times (ms) of the two products of the exact first-layer output factor at HalfCheetah-v5's
    shapes (``R = phi_2 @ U``: ``[N, h] x [h, k h]``; ``S_1 = R^T R``: ``[h, N k] x [N k, h]``) in float32
    and in bfloat16 with the casts (inputs to bfloat16, ``S_1`` back to float32): whether lower precision
    could close the exact update's gap (bfloat16 keeps 8 bits of mantissa, so its factors are not exact)."""
    gen = th.Generator().manual_seed(0)
    phi, u = th.randn(n, h, generator=gen), th.randn(h, k * h, generator=gen)

    def once(dtype: th.dtype) -> None:
        r = phi.to(dtype) @ u.to(dtype)
        flat = r.view(n * k, h)
        (flat.T @ flat).float()

    return {f"{name}_ms": median_ms(lambda d=dtype: once(d), repeats, warmup=3) for name, dtype in _PRODUCT_DTYPES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--envs", nargs="+", default=list(CASES))
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON result")
    parser.add_argument("--flops", action="store_true", help="count the matrix-product flops instead of timing")
    parser.add_argument(
        "--ablations", action="store_true", help="time fisher='sample' without the KL diagnostic / the preconditioning"
    )
    parser.add_argument("--products", action="store_true", help="time the exact factor's products, float32 vs bfloat16")
    parser.add_argument("--scaling", action="store_true", help="time each update at 16 samples and at the full N")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.scaling:
        found = [scaling(env_id, args.repeats) for env_id in args.envs]
        for res in found:
            print(f"{res['env']}: A2C {res['a2c_ms_small']:.2f} ms at N = {res['batch_small']}, "
                  f"{res['a2c_ms_full']:.2f} ms at N = {res['batch']}")  # fmt: skip
            for name, v in res["variants"].items():
                print(f"  {name}: {v['ms_small']:.2f} ms / {v['ms_full']:.2f} ms = {v['ratio_full']:.2f}x A2C; "
                      f"without fixed cost {v['ratio_without_fixed_cost']:.2f}x, "
                      f"with A2C's fixed cost {v['ratio_with_a2c_fixed_cost']:.2f}x")  # fmt: skip
        _write(args.out, "scaling", found)
        return
    if args.products:
        res = products(max(args.repeats, 50))
        print(f"exact first-layer factor products (N = 2048, K = 6, h = 64): float32 {res['float32_ms']:.3f} ms, "
              f"bfloat16 with casts {res['bfloat16_ms']:.3f} ms")  # fmt: skip
        return
    if args.flops:
        for res in (measure(env_id, 0, count_flops=True) for env_id in args.envs):
            print(f"{res['env']} (N = {res['batch']}): A2C update {res['mflop']['a2c']:.1f} MFLOP")
            for name, ratio in res["ratio_to_a2c"].items():
                print(f"  {name}: {res['mflop'][name]:.1f} MFLOP = {ratio:.2f}x A2C")
        return
    results = [measure(env_id, args.repeats, ablations=args.ablations) for env_id in args.envs]
    for res in results:
        print(f"{res['env']} (N = {res['batch']}): A2C update {res['median_ms']['a2c']:.2f} ms")
        for name, ratio in res["ratio_to_a2c"].items():
            beside = res["a2c_median_ms_beside"][name]
            print(f"  {name}: {res['median_ms'][name]:.2f} ms = {ratio:.2f}x A2C (A2C beside it: {beside:.2f} ms)")
    _write(args.out, "ablations" if args.ablations else None, results)


def _write(out: Path | None, kind: str | None, results: list[dict]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": str(date.today()), "machine": platform.processor() or platform.machine(), "threads": 1}
    path = out / f"bench_acktr{'' if kind is None else '_' + kind}_{int(time.time())}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
