"""The score Gram matrix and the exact dual solve without the N x P score matrix (common/gram.py), in
float64 against the materialized scores, on every action space, Mlp/Dict/Cnn policies, a LayerNorm
extractor (the per-block fallback) and discount weights; and NAC's lstsq path that uses them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from conftest import ACTION_KINDS, make_obs, make_policy
from test_regressions import LN_KWARGS

from sb3_natural.common.gram import gram_least_squares, score_gram, score_products, weighted_score_sum
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.scores import per_sample_scores
from sb3_natural.common.solvers import compatible_least_squares

POLICIES = {"mlp": {"obs_kind": "box"}, "dict": {"obs_kind": "dict"}, "cnn": {"obs_kind": "image"}, "layernorm": LN_KWARGS}


def _batch(kind: str, policy_kind: str, n: int = 10):
    policy = make_policy(kind, **POLICIES[policy_kind])
    head = ActorHead(policy)
    obs = make_obs(policy, n)
    space = policy.action_space
    space.seed(0)
    actions = th.as_tensor(np.stack([space.sample() for _ in range(n)]), dtype=th.float64)
    return head, obs, actions


@pytest.mark.parametrize("policy_kind", list(POLICIES))
@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_gram_and_dual_solve_match_the_materialized_scores(kind, policy_kind):
    head, obs, actions = _batch(kind, policy_kind)
    psi = per_sample_scores(head, obs, actions, method="loop")
    gram = score_gram(head, obs, actions)
    th.testing.assert_close(gram, psi @ psi.T, rtol=1e-10, atol=1e-12)
    gen = th.Generator().manual_seed(0)
    adv = th.randn(10, dtype=th.float64, generator=gen)
    weights = th.rand(10, dtype=th.float64, generator=gen)  # e.g. gamma^t
    for c in (None, weights):
        beta = gram_least_squares(gram, adv, 0.05, weights=c).beta
        w = weighted_score_sum(head, obs, actions, beta)
        th.testing.assert_close(w, psi.T @ beta, rtol=1e-10, atol=1e-12)
        ref = compatible_least_squares(psi, adv, 0.05, method="dual", weights=c)
        assert float((w - ref).norm() / ref.norm()) < 1e-6


def test_nac_lstsq_uses_the_gram_path_when_p_exceeds_n_and_matches_the_dense_dual():
    from sb3_natural import NAC

    model = NAC("MlpPolicy", "CartPole-v1", n_steps=32, seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    model.policy.double()
    model._setup_critic()
    head = model._head
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(32, 4)))
    actions = th.as_tensor(np.random.default_rng(1).integers(0, 2, 32))
    adv = th.as_tensor(np.random.default_rng(2).normal(size=32))
    assert head.num_params > 32
    w, stats = model._natural_gradient(obs, actions, adv, None)
    psi = per_sample_scores(head, obs, actions)
    ref = compatible_least_squares(psi, adv, model.ridge, method="dual")
    assert float((w - ref).norm() / ref.norm()) < 1e-6
    pred = psi @ ref
    r2 = 1 - float(((pred - adv) ** 2).sum() / ((adv - adv.mean()) ** 2).sum())
    assert stats["compatible_r2"] == pytest.approx(r2, rel=1e-6)
    g = psi.T @ adv / 32
    assert stats["natural_vanilla_cosine"] == pytest.approx(float(ref @ g / (ref.norm() * g.norm())), rel=1e-6)


def _spd_system(n: int, scale: float, seed: int = 0) -> th.Tensor:
    gen = th.Generator().manual_seed(seed)
    psi = th.randn(n, 3 * n, dtype=th.float64, generator=gen) * th.logspace(0, math.log10(scale), 3 * n, dtype=th.float64)
    return psi @ psi.T


@pytest.mark.parametrize("weighted", [False, True])
def test_cg_solve_equals_the_cholesky_solve(weighted):
    n = 80
    gram = _spd_system(n, 2.0)  # condition number of the system about 20: CG converges in well under N steps
    gen = th.Generator().manual_seed(1)
    adv = th.randn(n, dtype=th.float64, generator=gen)
    c = th.rand(n, dtype=th.float64, generator=gen) if weighted else None
    cg = gram_least_squares(gram, adv, 0.5, weights=c)
    chol = gram_least_squares(gram, adv, 0.5, weights=c, method="cholesky")
    assert cg.method == "cg" and chol.method == "cholesky" and chol.iterations == 0
    assert 1 <= cg.iterations < n and cg.residual is not None and cg.residual <= 1e-11
    th.testing.assert_close(cg.beta, chol.beta, rtol=1e-9, atol=1e-12)
    system = gram.clone() if c is None else gram * c.sqrt()[:, None] * c.sqrt()[None, :]
    system.diagonal().add_(n * 0.5)
    rhs = adv if c is None else c.sqrt() * adv
    x = cg.beta if c is None else cg.beta / c.sqrt()
    assert float((rhs - system @ x).norm() / rhs.norm()) == pytest.approx(cg.residual, rel=1e-6, abs=1e-15)


def test_cg_solve_falls_back_to_the_factorization_when_it_does_not_converge():
    gram = _spd_system(60, 1e4)  # condition number ~1e8 / (N ridge): far more than 3 iterations
    adv = th.randn(60, dtype=th.float64, generator=th.Generator().manual_seed(2))
    chol = gram_least_squares(gram, adv, 1e-3, method="cholesky")
    for overwrite in (False, True):
        sol = gram_least_squares(gram.clone(), adv, 1e-3, max_iter=3, overwrite=overwrite)
        assert sol.method == "cholesky" and sol.iterations == 3
        th.testing.assert_close(sol.beta, chol.beta, rtol=1e-12, atol=1e-14)
        assert (sol.residual is None) == overwrite
    mild = _spd_system(80, 2.0)
    adv80 = th.randn(80, dtype=th.float64, generator=th.Generator().manual_seed(3))
    tight = gram_least_squares(mild, adv80, 0.5)
    loose = gram_least_squares(mild, adv80, 0.5, rtol=1e-3)  # stops earlier, within 10 rtol
    assert loose.method == "cg" and loose.iterations < tight.iterations
    assert loose.residual is not None and loose.residual <= 1e-2
    zero = gram_least_squares(gram, th.zeros(60, dtype=th.float64), 1e-3)
    assert zero.method == "cg" and zero.iterations == 0 and th.equal(zero.beta, th.zeros(60, dtype=th.float64))


@pytest.mark.parametrize("n, gram", [(40, True), (59, True), (61, False), (80, False)])
def test_nac_lstsq_takes_the_gram_path_from_p_over_n_one_half(n, gram, monkeypatch):
    from sb3_natural import NAC
    from sb3_natural.nac.nac import GRAM_MIN_P_OVER_N

    model = NAC("MlpPolicy", "CartPole-v1", n_steps=n, seed=0, device="cpu", policy_kwargs={"net_arch": [4]})
    model.policy.double()
    model._setup_critic()
    head = model._head
    assert head.num_params == 30 and GRAM_MIN_P_OVER_N == 0.5  # P = 30: the Gram path for N < 60
    calls = []
    gram_dual = model._gram_dual
    monkeypatch.setattr(model, "_gram_dual", lambda *a: calls.append(1) or gram_dual(*a))
    rng = np.random.default_rng(0)
    obs = th.as_tensor(rng.normal(size=(n, 4)))
    actions = th.as_tensor(rng.integers(0, 2, n))
    adv = th.as_tensor(rng.normal(size=n))
    w, _ = model._natural_gradient(obs, actions, adv, None)
    assert bool(calls) == gram
    ref = compatible_least_squares(per_sample_scores(head, obs, actions), adv, model.ridge, method="primal")
    assert float((w - ref).norm() / ref.norm()) < 1e-6


def test_bad_inputs():
    head, obs, actions = _batch("discrete", "mlp")
    with pytest.raises(ValueError, match="beta must have shape"):
        weighted_score_sum(head, obs, actions, th.ones(3, dtype=th.float64))
    with pytest.raises(ValueError, match="ridge must be a finite float > 0"):
        gram_least_squares(th.eye(10, dtype=th.float64), th.ones(10, dtype=th.float64), 0.0)
    eye, ones = th.eye(10, dtype=th.float64), th.ones(10, dtype=th.float64)
    with pytest.raises(ValueError, match=r"method must be one of \('cg', 'cholesky'\), got 'lu'"):
        gram_least_squares(eye, ones, 0.1, method="lu")  # type: ignore[arg-type]
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="rtol must be a finite float > 0"):
            gram_least_squares(eye, ones, 0.1, rtol=bad)
    for bad_iter in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
            gram_least_squares(eye, ones, 0.1, max_iter=bad_iter)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_score_products_and_in_place_solve(kind):
    head, obs, actions = _batch(kind, "mlp")
    psi = per_sample_scores(head, obs, actions, method="loop")
    v = th.randn(head.num_params, dtype=th.float64, generator=th.Generator().manual_seed(0))
    th.testing.assert_close(score_products(head, obs, actions, v), psi @ v, rtol=1e-10, atol=1e-12)
    gram = psi @ psi.T
    adv = th.randn(10, dtype=th.float64, generator=th.Generator().manual_seed(1))
    kept = gram_least_squares(gram, adv, 0.05, method="cholesky").beta
    assert th.equal(gram, psi @ psi.T)  # not overwritten by default
    in_place = gram_least_squares(gram, adv, 0.05, overwrite=True, method="cholesky")
    th.testing.assert_close(in_place.beta, kept, rtol=1e-12, atol=1e-14)
    assert in_place.residual is None  # the system is gone


def test_row_chunks_give_the_same_gram(monkeypatch):
    from sb3_natural.common import gram as gram_module

    head, obs, actions = _batch("box", "mlp", n=10)
    whole = score_gram(head, obs, actions)
    monkeypatch.setattr(gram_module, "_CHUNK_ENTRIES", 30)  # 3 rows per block
    th.testing.assert_close(score_gram(head, obs, actions), whole, rtol=1e-12, atol=1e-14)
