"""Solvers for the natural gradient ``x = (F + lambda I)^{-1} g``.

* :func:`conjugate_gradient` -- matrix-free CG (Hestenes & Stiefel 1952; Nocedal & Wright,
  "Numerical Optimization", Algorithm 5.2), with the final residual, the iteration count and
  breakdown detection (non-positive curvature or a non-finite value stops it and says so);
* :func:`dense_solve` -- Cholesky solve of a dense ``F + lambda I`` (the exact natural
  gradient for small actors);
* :func:`dual_solve` -- Woodbury identity for ``F = L^T L / N`` with fewer rows than
  parameters: ``x = (g - L^T (N lambda I + L L^T)^{-1} L g) / lambda``;
* :func:`compatible_least_squares` -- Natural Actor-Critic's compatible critic
  ``w = argmin_w (1/N) sum_i (psi_i . w - A_i)^2 + lambda |w|^2``, primal or dual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch as th

from sb3_natural.common.checks import check_int, check_nonnegative, check_positive, check_weights

LstsqMethod = Literal["auto", "primal", "dual"]


@dataclass
class CGResult:
    """Result of :func:`conjugate_gradient`.

    :ivar x: the approximate solution (the last finite iterate)
    :ivar residual_norm: ``|b - A x|`` as tracked by the recurrence
    :ivar iterations: matrix-vector products spent on iterations
    :ivar converged: the squared residual fell below ``residual_tol``
    :ivar breakdown: stopped on non-positive curvature ``p^T A p <= 0`` or a non-finite value
    """

    x: th.Tensor
    residual_norm: float
    iterations: int
    converged: bool
    breakdown: bool


def _product(matvec: Callable[[th.Tensor], th.Tensor], v: th.Tensor) -> th.Tensor:
    """``matvec(v)``, checked to be a tensor of ``v``'s shape (a clear error instead of a broadcast one)."""
    out = matvec(v)
    if not isinstance(out, th.Tensor) or out.shape != v.shape:
        shape = tuple(out.shape) if isinstance(out, th.Tensor) else type(out).__name__
        raise ValueError(f"matvec must return a tensor of b's shape {tuple(v.shape)}, got {shape}")
    return out


def conjugate_gradient(
    matvec: Callable[[th.Tensor], th.Tensor],
    b: th.Tensor,
    max_iter: int = 10,
    residual_tol: float = 1e-10,
    x0: th.Tensor | None = None,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``.

    Iteration (Nocedal & Wright, Alg. 5.2)::

        alpha = r.r / p.Ap;  x += alpha p;  r -= alpha Ap;  beta = r'.r' / r.r;  p = r' + beta p

    Stops when ``r.r < residual_tol`` (the squared norm, as sb3-contrib), after ``max_iter``
    iterations, or on breakdown (``p.Ap <= 0`` or non-finite), in which case ``x`` is the last
    finite iterate and ``breakdown`` is True.

    :param matvec: v -> A v
    :param b: right-hand side, a vector
    :param max_iter: maximum number of iterations (>= 1)
    :param residual_tol: tolerance on the squared residual norm
    :param x0: initial guess (zeros by default); warm starts save iterations
    """
    check_int(1, max_iter=max_iter)
    check_nonnegative(residual_tol=residual_tol)
    if b.dim() != 1:
        raise ValueError(f"b must be a vector, got shape {tuple(b.shape)}")
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0 must have the shape of b, {tuple(b.shape)}, got {tuple(x0.shape)}")
    if x0 is None:
        x = th.zeros_like(b)
        r = b.clone()
    else:
        x = x0.clone()
        r = b - _product(matvec, x)
    p = r.clone()
    rr = float(r @ r)
    if not th.isfinite(b).all():
        return CGResult(th.zeros_like(b), float("nan"), 0, False, True)
    it = 0
    while it < max_iter and rr >= residual_tol:
        ap = _product(matvec, p)
        pap = float(p @ ap)
        if not (pap > 0.0) or pap != pap or pap == float("inf"):
            return CGResult(x, rr**0.5, it, False, True)
        alpha = rr / pap
        x_new = x + alpha * p
        r_new = r - alpha * ap
        rr_new = float(r_new @ r_new)
        if not th.isfinite(x_new).all() or rr_new != rr_new:
            return CGResult(x, rr**0.5, it, False, True)
        x, r = x_new, r_new
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    return CGResult(x, rr**0.5, it, rr < residual_tol, False)


def dense_solve(fisher: th.Tensor, g: th.Tensor, damping: float = 0.0) -> th.Tensor:
    """``x = (F + damping I)^{-1} g`` by Cholesky; F is ``[P, P]`` symmetric PSD.

    :raises ValueError: on bad shapes, negative damping, or when ``F + damping I`` is not
        positive definite (use damping > 0 for a singular F)
    """
    p = g.shape[0]
    if fisher.shape != (p, p) or g.dim() != 1:
        raise ValueError(f"fisher must be [P, P] and g a P-vector, got {tuple(fisher.shape)} and {tuple(g.shape)}")
    check_nonnegative(damping=damping)
    a = fisher + damping * th.eye(p, dtype=fisher.dtype, device=fisher.device)
    chol, info = th.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError("F + damping I is not positive definite; increase damping")
    return th.cholesky_solve(g[:, None], chol).squeeze(1)


def dual_solve(rows: th.Tensor, g: th.Tensor, damping: float, n: int) -> th.Tensor:
    """``x = (L^T L / n + damping I)^{-1} g`` through the Woodbury identity (``m x m`` system).

    With ``F = L^T L / n`` (``L`` is ``[m, P]``, m < P)::

        (F + lambda I)^{-1} g = (g - L^T (n lambda I + L L^T)^{-1} L g) / lambda

    :param rows: L, ``[m, P]``
    :param g: right-hand side, a P-vector
    :param damping: lambda > 0 (the identity needs it)
    :param n: the N in ``F = L^T L / N``
    """
    check_positive(damping=damping)  # dual_solve needs damping > 0: the identity of the dual form
    check_int(1, n=n)
    if rows.dim() != 2 or g.dim() != 1 or rows.shape[1] != g.shape[0]:
        raise ValueError(f"rows must be [m, P] and g a P-vector, got {tuple(rows.shape)} and {tuple(g.shape)}")
    m = rows.shape[0]
    gram = rows @ rows.T + n * damping * th.eye(m, dtype=rows.dtype, device=rows.device)
    chol = th.linalg.cholesky(gram)
    y = th.cholesky_solve((rows @ g)[:, None], chol).squeeze(1)
    return (g - rows.T @ y) / damping


def compatible_least_squares(
    scores: th.Tensor,
    advantages: th.Tensor,
    ridge: float,
    method: LstsqMethod = "auto",
    weights: th.Tensor | None = None,
) -> th.Tensor:
    """Compatible-critic weights ``w = argmin (1/N) sum_i c_i (psi_i . w - A_i)^2 + ridge |w|^2``.

    Natural Actor-Critic (Peters & Schaal 2008, Eq. 8; Kakade 2001): the minimizer is the
    (damped) natural gradient ``(F_hat + ridge I)^{-1} g`` with ``F_hat = Psi^T C Psi / N`` and
    ``g = Psi^T C A / N`` (``C = diag(c)``, all ones by default)::

        primal (P <= N):  w = (Psi^T C Psi + N ridge I)^{-1} Psi^T C A
        dual   (N <  P):  w = Psi^T C^(1/2) (C^(1/2) Psi Psi^T C^(1/2) + N ridge I)^{-1} C^(1/2) A

    :param scores: Psi, ``[N, P]``
    :param advantages: A, ``[N]``
    :param ridge: lambda > 0 for the dual form; >= 0 for primal
    :param method: ``"auto"`` (primal when P <= N), ``"primal"`` or ``"dual"``
    :param weights: optional non-negative per-sample weights c (e.g. gamma^t)
    """
    if scores.dim() != 2 or advantages.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [N, P] and advantages [N], got {tuple(scores.shape)} and {tuple(advantages.shape)}")
    if method not in ("auto", "primal", "dual"):
        raise ValueError(f"method must be 'auto', 'primal' or 'dual', got {method!r}")
    check_nonnegative(ridge=ridge)
    n, p = scores.shape
    check_weights(weights, n)
    if weights is not None:
        sw = weights.sqrt()
        scores, advantages = scores * sw[:, None], advantages * sw
    if method == "auto":
        method = "primal" if p <= n else "dual"
    if method == "primal":
        g = scores.T @ advantages / n
        return dense_solve(scores.T @ scores / n, g, ridge)
    if ridge <= 0:
        raise ValueError("the dual form needs ridge > 0")
    gram = scores @ scores.T + n * ridge * th.eye(n, dtype=scores.dtype, device=scores.device)
    chol = th.linalg.cholesky(gram)
    return scores.T @ th.cholesky_solve(advantages[:, None], chol).squeeze(1)


def compatible_sgd(
    psi: th.Tensor,
    adv: th.Tensor,
    ridge: float,
    weights: th.Tensor | None = None,
    w0: th.Tensor | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    generator: th.Generator | None = None,
) -> tuple[th.Tensor, float, float]:
    """The compatible critic fitted by Adam: the fast timescale of a two-timescale Natural Actor-Critic.

    Minimizes ``L(w) = mean_i c_i (psi_i . w - A_i)^2 + ridge |w|^2`` (Peters & Schaal 2008, Eq. 13; the
    question this package started from fits it by SGD), whose minimizer is the damped natural gradient
    (:func:`compatible_least_squares` solves it exactly). ``epochs`` passes of minibatches of
    ``batch_size`` in an order drawn from ``generator``, starting from ``w0`` (zeros when None).

    :param psi: scores ``[N, P]``; :param adv: advantages ``[N]``; :param weights: ``c_i`` (ones when None)
    :return: ``(w, L(w0), L(w))``
    """
    n = psi.shape[0]
    c = th.ones_like(adv) if weights is None else weights
    w_init = th.zeros(psi.shape[1], dtype=psi.dtype, device=psi.device) if w0 is None else w0.detach().clone()
    w = w_init.requires_grad_(True)
    opt = th.optim.Adam([w], lr=learning_rate)

    def loss_on(idx: th.Tensor | slice) -> th.Tensor:
        return (c[idx] * (psi[idx] @ w - adv[idx]) ** 2).mean() + ridge * (w * w).sum()

    with th.enable_grad():
        with th.no_grad():
            before = float(loss_on(slice(None)))
        for _ in range(epochs):
            perm = th.randperm(n, generator=generator).to(psi.device)
            for start in range(0, n, batch_size):
                opt.zero_grad()
                loss_on(perm[start : start + batch_size]).backward()
                opt.step()
        with th.no_grad():
            after = float(loss_on(slice(None)))
    return w.detach(), before, after
