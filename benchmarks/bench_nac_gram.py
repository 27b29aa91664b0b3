"""NAC's exact solve without the N x P score matrix (common/gram.py) against the dense dual and CG.

    python benchmarks/bench_nac_gram.py solve [--repeats 7]     # N = 2048, 64x64 CartPole/HalfCheetah actors
    python benchmarks/bench_nac_gram.py train [--repeats 5]     # NAC.train() on the zoo entries' rollouts
    python benchmarks/bench_nac_gram.py large --path gram|dense # N = 8192, 256x256 HalfCheetah: time, peak RSS
    python benchmarks/bench_nac_gram.py large-train --path gram|dense  # the same, one whole NAC.train()
    python benchmarks/bench_nac_gram.py rule [--repeats 5]     # primal vs Gram path around P = N / 2

``solve``: on the same batch (random states, actions drawn from the policy, random advantages), the time
of (a) the Gram path (``score_gram`` + the N x N solve, CG to float32's rounding, + ``w = Psi^T beta`` by one
backward), (a') the same with the N x N Cholesky factorization instead of CG, (b) the dense dual it replaces
(``per_sample_scores`` + ``compatible_least_squares(method="dual")``) and (c) a 10-iteration CG on the
empirical Fisher from the materialized scores; and the relative distance of each path's ``w`` from the
float64 solution. ``train``: ``NAC.train()`` on one
rollout of the zoo entry (CartPole-v1 as it is; HalfCheetah-v5 with ``solver="lstsq"``), the Gram path
against the same model patched to the dense dual, weights and optimizer restored before every call.
``rule``: the primal path (``per_sample_scores`` + the ``P x P`` Cholesky) against the Gram path for
actors of width 16, 32 and 64 at batch sizes on both sides of ``P = N / 2`` (NAC's rule). ``large``: one
process per path (so that the peak resident memory is its own). ``large-train``: one
whole ``NAC.train()`` (the solve, the actor step with its KL, the critic's 10 epochs) of a NAC with a
256x256 actor and critic on one HalfCheetah-v5 rollout of N = 8192 steps (``solver="lstsq"``; the
dense dual patched in for ``--path dense``), its time and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import time
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_natural.common.fisher import EmpiricalFVP
from sb3_natural.common.gram import gram_least_squares, score_gram, weighted_score_sum
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.scores import empty_output, per_sample_scores
from sb3_natural.common.solvers import compatible_least_squares, conjugate_gradient

SPACES = {
    "CartPole-v1": (spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2)),
    "HalfCheetah-v5": (spaces.Box(-np.inf, np.inf, (17,), np.float64), spaces.Box(-1.0, 1.0, (6,), np.float32)),
}
RIDGE = 0.1


def _batch(env_id: str, n: int, hidden: int):
    th.manual_seed(0)
    policy = ActorCriticPolicy(*SPACES[env_id], lambda _: 3e-4, net_arch=[hidden, hidden])
    head = ActorHead(policy)
    gen = th.Generator().manual_seed(0)
    obs = th.randn(n, *policy.observation_space.shape, generator=gen)
    with th.no_grad():
        actions = head.dist.sample(head(obs), generator=gen)
    adv = th.randn(n, generator=gen)
    return head, obs, actions, adv


def gram_path(head: ActorHead, obs: Any, actions: th.Tensor, adv: th.Tensor, method: str = "cg") -> th.Tensor:
    gram = score_gram(head, obs, actions)
    sol = gram_least_squares(gram, adv, RIDGE, overwrite=True, method=method)  # type: ignore[arg-type]
    return weighted_score_sum(head, obs, actions, sol.beta)


def dense_path(head: ActorHead, obs: Any, actions: th.Tensor, adv: th.Tensor, out: th.Tensor | None = None) -> th.Tensor:
    psi = per_sample_scores(head, obs, actions, out=out)
    return compatible_least_squares(psi, adv, RIDGE, method="dual")


def cg_path(head: ActorHead, obs: Any, actions: th.Tensor, adv: th.Tensor, out: th.Tensor | None = None) -> th.Tensor:
    psi = per_sample_scores(head, obs, actions, out=out)
    g = psi.T @ adv / psi.shape[0]
    return conjugate_gradient(EmpiricalFVP(head, obs, actions, damping=RIDGE, scores=psi), g, max_iter=10).x


def solve(repeats: int, n: int = 2048) -> list[dict]:
    rows = []
    for env_id in SPACES:
        head, obs, actions, adv = _batch(env_id, n, 64)
        out = empty_output(n, head.num_params, th.float32, th.device("cpu"))  # reused, as NAC does
        ws = {"gram": gram_path(head, obs, actions, adv), "gram_cholesky": gram_path(head, obs, actions, adv, "cholesky"),
              "dense": dense_path(head, obs, actions, adv, out)}  # fmt: skip
        exact = _float64_solution(head, obs, actions, adv)
        rel = {f"w_rel_err_{k}": float((w - exact).norm() / exact.norm()) for k, w in ws.items()}
        times: dict[str, list[float]] = {"gram": [], "gram_cholesky": [], "dense": [], "cg10": []}
        for _ in range(repeats):
            for name in times:
                t0 = time.perf_counter()
                if name == "gram":
                    gram_path(head, obs, actions, adv)
                elif name == "gram_cholesky":
                    gram_path(head, obs, actions, adv, "cholesky")
                elif name == "dense":
                    dense_path(head, obs, actions, adv, out)
                else:
                    cg_path(head, obs, actions, adv, out)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {"env": env_id, "N": n, "P": head.num_params, **{f"{k}_ms": 1e3 * v for k, v in med.items()},
             "gram_over_cg10": med["gram"] / med["cg10"], "dense_over_gram": med["dense"] / med["gram"],
             "gram_cholesky_over_cg10": med["gram_cholesky"] / med["cg10"], **rel}
        )  # fmt: skip
    return rows


RULE_CASES = [("CartPole-v1", 16, n) for n in (256, 512, 1024, 2048)] + [("CartPole-v1", 32, n) for n in (1024, 2048, 4096)]
RULE_CASES += [("HalfCheetah-v5", 32, 2048), ("CartPole-v1", 64, 4096), ("CartPole-v1", 64, 8192)]
RULE_CASES += [("HalfCheetah-v5", 64, 8192)]


def primal_path(head: ActorHead, obs: Any, actions: th.Tensor, adv: th.Tensor, out: th.Tensor) -> th.Tensor:
    psi = per_sample_scores(head, obs, actions, out=out)
    return compatible_least_squares(psi, adv, RIDGE, method="primal")


def rule(repeats: int) -> list[dict]:
    rows = []
    for env_id, hidden, n in RULE_CASES:
        head, obs, actions, adv = _batch(env_id, n, hidden)
        out = empty_output(n, head.num_params, th.float32, th.device("cpu"))
        times: dict[str, list[float]] = {"primal": [], "gram": []}
        for _ in range(repeats + 1):  # one warm-up round
            t0 = time.perf_counter()
            primal_path(head, obs, actions, adv, out)
            t1 = time.perf_counter()
            gram_path(head, obs, actions, adv)
            times["primal"].append(t1 - t0)
            times["gram"].append(time.perf_counter() - t1)
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        rows.append(
            {"env": env_id, "width": hidden, "N": n, "P": head.num_params, "P_over_N": head.num_params / n,
             "primal_ms": 1e3 * med["primal"], "gram_ms": 1e3 * med["gram"], "primal_over_gram": med["primal"] / med["gram"]}
        )  # fmt: skip
    return rows


def _float64_solution(head: ActorHead, obs: Any, actions: th.Tensor, adv: th.Tensor) -> th.Tensor:
    """The exact ``w`` in float64 (the Gram and its Cholesky solve on a float64 copy of the actor)."""
    head.policy.double()
    try:
        obs64, adv64 = obs.double(), adv.double()
        sol = gram_least_squares(score_gram(head, obs64, actions), adv64, RIDGE, method="cholesky")
        return weighted_score_sum(head, obs64, actions, sol.beta).float()
    finally:
        head.policy.float()


def _snapshot(model) -> bytes:
    buf = io.BytesIO()
    th.save({"policy": model.policy.state_dict(), "opt": model.policy.optimizer.state_dict(), "w": model._w}, buf)
    return buf.getvalue()


def _restore(model, blob: bytes) -> None:
    state = th.load(io.BytesIO(blob), weights_only=False)
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["opt"])
    model._w = state["w"]


def _dense_dual(model: Any) -> Any:
    """A stand-in for ``model._gram_dual``: the dense dual it replaced (the N x P scores, then the N x N solve)."""

    def dense_dual(obs: Any, actions: th.Tensor, adv: th.Tensor, weights: th.Tensor | None) -> Any:
        psi = per_sample_scores(model._head, obs, actions)
        w = compatible_least_squares(psi, adv, model.ridge, method="dual", weights=weights)
        return w, {"solver_iterations": 1.0}

    return dense_dual


def train(repeats: int) -> list[dict]:
    from sb3_natural.registry import make_zoo_model

    rows = []
    for env_id, extra in (("CartPole-v1", {}), ("HalfCheetah-v5", {"solver": "lstsq"})):
        model, _, _ = make_zoo_model("nac", env_id, seed=0)
        for key, value in extra.items():
            setattr(model, key, value)
        _, callback = model._setup_learn(10**6)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        blob = _snapshot(model)
        gram_dual = model._gram_dual

        times: dict[str, list[float]] = {"gram": [], "dense": []}
        for _ in range(repeats):
            for name, impl in (("gram", gram_dual), ("dense", _dense_dual(model))):
                _restore(model, blob)
                model._gram_dual = impl  # type: ignore[method-assign]
                t0 = time.perf_counter()
                model.train()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        n = model.rollout_buffer.buffer_size * model.n_envs
        rows.append(
            {"env": env_id, "N": n, "P": model._head.num_params, "gram_train_s": med["gram"],
             "dense_train_s": med["dense"], "speedup": med["dense"] / med["gram"]}
        )  # fmt: skip
    return rows


def large(path: str, n: int = 8192) -> dict:
    head, obs, actions, adv = _batch("HalfCheetah-v5", n, 256)
    t0 = time.perf_counter()
    (gram_path if path == "gram" else dense_path)(head, obs, actions, adv)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"path": path, "N": n, "P": head.num_params, "solve_s": wall, "peak_rss_mb": peak_mb}


def large_train(path: str, n: int = 8192) -> dict:
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_natural import NAC

    model = NAC(
        "MlpPolicy", make_vec_env("HalfCheetah-v5", n_envs=1, seed=0), n_steps=n, solver="lstsq", ridge=0.1,
        seed=0, device="cpu", policy_kwargs={"net_arch": [256, 256]},
    )  # fmt: skip
    if path == "dense":
        model._gram_dual = _dense_dual(model)  # type: ignore[method-assign]
    _, callback = model._setup_learn(10**6)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    t0 = time.perf_counter()
    model.train()
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logs = model.logger.name_to_value
    return {"path": path, "N": n, "P": model._head.num_params, "train_s": wall, "peak_rss_mb": peak_mb,
            "kl": logs.get("train/kl"), "compatible_r2": logs.get("train/compatible_r2")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["solve", "train", "large", "large-train", "rule"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--path", choices=["gram", "dense"], default="gram")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.what == "solve":
        out: Any = solve(args.repeats)
    elif args.what == "train":
        out = train(args.repeats)
    elif args.what == "large":
        out = large(args.path)
    elif args.what == "rule":
        out = rule(args.repeats)
    else:
        out = large_train(args.path)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
