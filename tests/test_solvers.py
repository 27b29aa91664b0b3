"""Solvers agree with each other and with a direct float64 solve; failures are reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from conftest import make_obs, make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_natural.common.fisher import AnalyticFVP, dense_fisher, fisher_rows
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.scores import per_sample_scores
from sb3_natural.common.solvers import compatible_least_squares, conjugate_gradient, dense_solve, dual_solve


def _spd(p: int, seed: int, rank: int | None = None) -> th.Tensor:
    g = th.Generator().manual_seed(seed)
    a = th.randn(rank or p, p, generator=g, dtype=th.float64)
    return a.T @ a / (rank or p)


def test_cg_dense_dual_agree_on_same_system():
    rows = th.randn(12, 30, generator=th.Generator().manual_seed(0), dtype=th.float64)
    n, lam = 4, 0.3
    f = rows.T @ rows / n
    g = th.randn(30, generator=th.Generator().manual_seed(1), dtype=th.float64)
    exact = th.linalg.solve(f + lam * th.eye(30, dtype=th.float64), g)
    th.testing.assert_close(dense_solve(f, g, lam), exact)
    th.testing.assert_close(dual_solve(rows, g, lam, n), exact)
    res = conjugate_gradient(lambda v: f @ v + lam * v, g, max_iter=200, residual_tol=1e-24)
    assert res.converged and not res.breakdown
    assert res.iterations <= 30 + 1
    th.testing.assert_close(res.x, exact, rtol=1e-7, atol=1e-9)
    assert res.residual_norm < 1e-11


def test_cg_reports_residual_and_iterations():
    a = _spd(20, 2) + 0.1 * th.eye(20, dtype=th.float64)
    b = th.ones(20, dtype=th.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=3)
    assert res.iterations == 3 and not res.converged
    assert res.residual_norm == pytest.approx(float((b - a @ res.x).norm()), rel=1e-6)


def test_cg_breakdown_on_indefinite_matrix_is_flagged():
    a = th.diag(th.tensor([1.0, -1.0, 2.0], dtype=th.float64))
    b = th.tensor([0.0, 1.0, 0.0], dtype=th.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=10)
    assert res.breakdown and not res.converged
    assert th.isfinite(res.x).all()
    nan = conjugate_gradient(lambda v: v, th.tensor([float("nan"), 1.0]), max_iter=5)
    assert nan.breakdown and th.equal(nan.x, th.zeros(2))


def test_cg_warm_start():
    a = _spd(10, 3) + th.eye(10, dtype=th.float64)
    b = th.randn(10, generator=th.Generator().manual_seed(4), dtype=th.float64)
    exact = th.linalg.solve(a, b)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=5, x0=exact)
    assert res.iterations == 0 and res.converged


def test_solver_argument_errors():
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, th.ones(2), max_iter=0)
    for x0 in (None, th.ones(3)):  # a matvec of the wrong size: named, not a broadcast error
        with pytest.raises(ValueError, match=r"matvec must return a tensor of b's shape \(3,\), got \(2,\)"):
            conjugate_gradient(lambda v: v[:2], th.ones(3), x0=x0)
    with pytest.raises(ValueError, match="positive definite"):
        dense_solve(th.zeros(3, 3), th.ones(3), 0.0)
    with pytest.raises(ValueError, match="damping"):
        dense_solve(th.eye(3), th.ones(3), -1.0)
    with pytest.raises(ValueError, match="damping must be a finite float > 0"):
        dual_solve(th.ones(2, 3), th.ones(3), 0.0, 2)
    with pytest.raises(ValueError, match="method"):
        compatible_least_squares(th.ones(3, 2), th.ones(3), 0.1, method="qr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="advantages"):
        compatible_least_squares(th.ones(3, 2), th.ones(4), 0.1)


@pytest.mark.parametrize("shape", [(40, 7), (6, 25)])
def test_compatible_least_squares_primal_equals_dual(shape):
    n, p = shape
    gen = th.Generator().manual_seed(5)
    psi = th.randn(n, p, generator=gen, dtype=th.float64)
    adv = th.randn(n, generator=gen, dtype=th.float64)
    lam = 0.05
    # Reference: normal equations of min (1/N)|Psi w - A|^2 + lam |w|^2, by numpy.
    ref = np.linalg.solve(psi.numpy().T @ psi.numpy() / n + lam * np.eye(p), psi.numpy().T @ adv.numpy() / n)
    for method in ("auto", "primal", "dual"):
        w = compatible_least_squares(psi, adv, lam, method=method)  # type: ignore[arg-type]
        np.testing.assert_allclose(w.numpy(), ref, rtol=1e-8, atol=1e-10)
    weights = th.rand(n, generator=gen, dtype=th.float64)
    wp = compatible_least_squares(psi, adv, lam, "primal", weights)
    wd = compatible_least_squares(psi, adv, lam, "dual", weights)
    th.testing.assert_close(wp, wd)


def test_cg_on_policy_fisher_converges_to_dense_and_dual():
    policy = make_policy("discrete", net_arch=[6])
    head = ActorHead(policy)
    obs = make_obs(policy, 5)  # N d = 15 < P: the dual form applies
    lam = 0.01
    g = per_sample_scores(head, obs, th.zeros(5, dtype=th.long)).mean(0)
    f = dense_fisher(head, obs)
    exact = dense_solve(f, g, lam)
    th.testing.assert_close(dual_solve(fisher_rows(head, obs), g, lam, 5), exact)
    res = conjugate_gradient(AnalyticFVP(head, obs, damping=lam), g, max_iter=400, residual_tol=1e-26)
    assert not res.breakdown
    th.testing.assert_close(res.x, exact, rtol=1e-6, atol=1e-8)


@settings(max_examples=20, deadline=None)
@given(p=st.integers(1, 25), rank=st.integers(1, 30), seed=st.integers(0, 1000), lam=st.floats(1e-3, 10.0))
def test_property_solvers_agree(p, rank, seed, lam):
    rows = th.randn(rank, p, generator=th.Generator().manual_seed(seed), dtype=th.float64)
    f = rows.T @ rows / rank
    g = th.randn(p, generator=th.Generator().manual_seed(seed + 1), dtype=th.float64)
    x = dense_solve(f, g, lam)
    th.testing.assert_close((f + lam * th.eye(p, dtype=th.float64)) @ x, g, rtol=1e-8, atol=1e-8)
    th.testing.assert_close(dual_solve(rows, g, lam, rank), x, rtol=1e-7, atol=1e-8)
    res = conjugate_gradient(lambda v: f @ v + lam * v, g, max_iter=4 * p + 10, residual_tol=1e-28)
    th.testing.assert_close(res.x, x, rtol=1e-5, atol=1e-6)
