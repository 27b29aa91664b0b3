"""K-FAC: the cost of one step against one batched backward, and its error against the dense Fisher.

    python benchmarks/bench_kfac.py [--repeats 7] [--n 2048]     # cost (one torch thread)
    python benchmarks/bench_kfac.py --report                      # error table for docs/kfac.md
    python benchmarks/bench_kfac.py --flops                       # the matrix-product flops of each step

Cost. For the 64x64 tanh actor of SB3's MlpPolicy on CartPole-v1's spaces (Box(4) -> Discrete(2)) and
HalfCheetah-v5's (Box(17) -> Box(6)), N states: one batched backward is the forward pass of the actor
and the backward of ``-(A * log pi(a|s)).mean()`` to its parameters (what a plain policy-gradient step
costs). One K-FAC step is ``KFAC.update`` (forward with hooks, the factors, for ``"sample"`` one
backward of the sampled log-likelihood to the layer outputs, for ``"exact"`` one batched backward of
the rows of M's factor) plus ``precondition`` of a gradient, with the eigendecompositions refreshed
every 10 updates (``inverse_update_freq=10``) and so amortized over 10 steps. Rounds alternate the
three measurements; the medians and ratios are printed.

Flops. The same three computations under ``torch.utils.flop_counter.FlopCounterMode``: the flops of
their matrix products (mm, addmm, bmm, convolutions; elementwise work and the eigendecompositions are
not counted), one step each after the warm-up. Their ratios are the arithmetic each mode has to do,
whatever the implementation: a timing ratio below the flop ratio needs the larger computation to run
its products faster than the smaller one runs its own.

Error. On small MLPs (Box(3) observations, net_arch [8, 8]) of every SB3 action space, N = 256
random states: the relative Frobenius error of block-diagonal K-FAC (``"exact"`` and ``"sample"``)
against the dense Fisher, and how much of it is the block-diagonal structure (the error of the dense
Fisher's own diagonal blocks) rather than the Kronecker factorization within a block.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_natural.common.heads import ActorHead
from sb3_natural.common.kfac import KFAC

SPACES = {
    "CartPole-v1": (spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2)),
    "HalfCheetah-v5": (spaces.Box(-np.inf, np.inf, (17,), np.float64), spaces.Box(-1.0, 1.0, (6,), np.float32)),
}


def _policy(obs_space, action_space, net_arch, seed=0, **kwargs) -> ActorCriticPolicy:
    th.manual_seed(seed)
    return ActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, net_arch=net_arch, **kwargs)


def _batch(policy: ActorCriticPolicy, n: int, seed: int = 0):
    gen = th.Generator().manual_seed(seed)
    obs = th.randn(n, *policy.observation_space.shape, generator=gen)
    head = ActorHead(policy)
    with th.no_grad():
        actions = head.dist.sample(head(obs), generator=gen)
    adv = th.randn(n, generator=gen)
    return head, obs, actions, adv


def _time(fn, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def _setup(env_id: str, n: int):
    policy = _policy(*SPACES[env_id], net_arch=[64, 64])
    head, obs, actions, adv = _batch(policy, n)
    kfacs = {mode: KFAC(head, mode=mode, inverse_update_freq=10) for mode in ("sample", "exact")}
    gen = th.Generator().manual_seed(1)
    g = th.randn(head.num_params, generator=gen)

    def backward() -> None:
        for p in head.params:
            p.grad = None
        loss = -(adv * head.dist.log_prob(head(obs), actions)).mean()
        loss.backward()

    def step(kfac: KFAC):
        def run() -> None:
            kfac.update(obs, generator=gen)
            kfac.precondition(g)

        return run

    for fn in (backward, step(kfacs["sample"]), step(kfacs["exact"])):
        _time(fn, 10)  # warm-up, and the first update's factors
    return head, {"backward": backward, "sample": step(kfacs["sample"]), "exact": step(kfacs["exact"])}


def cost(env_id: str, n: int, repeats: int) -> dict:
    head, fns = _setup(env_id, n)
    backward = fns["backward"]
    times: dict[str, list[float]] = {"backward": [], "sample": [], "exact": []}
    for _ in range(repeats):
        times["backward"].append(_time(backward, 10))
        for mode in ("sample", "exact"):
            times[mode].append(_time(fns[mode], 10))  # 10 steps: one eigendecomposition refresh
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "env": env_id,
        "n": n,
        "params": head.num_params,
        "backward_ms": 1e3 * med["backward"],
        "sample_ms": 1e3 * med["sample"],
        "exact_ms": 1e3 * med["exact"],
        "sample_over_backward": med["sample"] / med["backward"],
        "exact_over_backward": med["exact"] / med["backward"],
        "exact_over_sample": med["exact"] / med["sample"],
    }


def flops(env_id: str, n: int) -> dict:
    """The matrix-product flops of one backward, one ``"sample"`` and one ``"exact"`` step (see the top)."""
    from torch.utils.flop_counter import FlopCounterMode

    head, fns = _setup(env_id, n)
    counted = {}
    for name, fn in fns.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        counted[name] = counter.get_total_flops()
    return {
        "env": env_id, "n": n, "params": head.num_params, **{f"{k}_mflop": v / 1e6 for k, v in counted.items()},
        "sample_over_backward": counted["sample"] / counted["backward"],
        "exact_over_backward": counted["exact"] / counted["backward"],
        "exact_over_sample": counted["exact"] / counted["sample"],
    }  # fmt: skip


def report(n: int = 256) -> list[dict]:
    from sb3_natural.common.fisher import dense_fisher

    rows = []
    kinds = {
        "Discrete(3)": (spaces.Discrete(3), {}),
        "Box(2)": (spaces.Box(-1.0, 1.0, (2,), np.float32), {"log_std_init": -0.3}),
        "Box(2), gSDE": (spaces.Box(-1.0, 1.0, (2,), np.float32), {"use_sde": True, "log_std_init": -0.5}),
        "MultiDiscrete([2, 3])": (spaces.MultiDiscrete([2, 3]), {}),
        "MultiBinary(3)": (spaces.MultiBinary(3), {}),
    }
    for name, (action_space, kwargs) in kinds.items():
        policy = _policy(spaces.Box(-1.0, 1.0, (3,), np.float32), action_space, [8, 8], **kwargs).double()
        with th.no_grad():
            policy.action_net.weight.mul_(30.0)  # as the tests: distributions not nearly uniform
        head, obs, _, _ = _batch(policy, n)
        obs = obs.double()
        f = dense_fisher(head, obs)
        row = {"space": name, "P": head.num_params}
        mask = th.zeros_like(f, dtype=th.bool)
        for mode in ("exact", "sample"):
            kfac = KFAC(head, mode=mode)
            kfac.update(obs, generator=th.Generator().manual_seed(0))
            k = kfac.matrix()
            row[f"{mode}_rel_error"] = float((k - f).norm() / f.norm())
            mask = k != 0
        row["block_diagonal_rel_error"] = float((f * (~mask)).norm() / f.norm())
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--report", action="store_true", help="the error table instead of the timings")
    parser.add_argument("--flops", action="store_true", help="the matrix-product flops instead of the timings")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.flops:
        print("| spaces | N | backward (MFLOP) | sample step | exact step | sample/backward | exact/backward | exact/sample |")
        print("|---|---|---|---|---|---|---|---|")
        for r in (flops(env_id, args.n) for env_id in SPACES):
            print(
                f"| {r['env']} | {r['n']} | {r['backward_mflop']:.1f} | {r['sample_mflop']:.1f} | {r['exact_mflop']:.1f} | "
                f"{r['sample_over_backward']:.2f} | {r['exact_over_backward']:.2f} | {r['exact_over_sample']:.2f} |"
            )
        return
    if args.report:
        print("| space | P | exact K-FAC | sample K-FAC | off-block-diagonal part of F |")
        print("|---|---|---|---|---|")
        for r in report():
            print(
                f"| {r['space']} | {r['P']} | {r['exact_rel_error']:.3f} | {r['sample_rel_error']:.3f} | "
                f"{r['block_diagonal_rel_error']:.3f} |"
            )
        return
    results = [cost(env_id, args.n, args.repeats) for env_id in SPACES]
    print(json.dumps({"date": str(date.today()), "torch": th.__version__, "threads": 1, "results": results}, indent=1))
    header = ["spaces", "N", "P", "backward (ms)", "sample step (ms)", "exact step (ms)"]
    header += ["sample/backward", "exact/backward", "exact/sample"]
    print("\n| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['env']} | {r['n']} | {r['params']} | {r['backward_ms']:.2f} | {r['sample_ms']:.2f} | "
            f"{r['exact_ms']:.2f} | {r['sample_over_backward']:.2f} | {r['exact_over_backward']:.2f} | "
            f"{r['exact_over_sample']:.2f} |"
        )


if __name__ == "__main__":
    main()
