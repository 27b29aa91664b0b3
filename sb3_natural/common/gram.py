"""The score Gram matrix ``Psi C Psi^T`` and ``Psi^T beta`` without the ``N x P`` score matrix.

Natural Actor-Critic's exact compatible least squares in its dual form (P > N) needs only inner products
of scores and one combination of them (:func:`~sb3_natural.common.solvers.compatible_least_squares`)::

    w = Psi^T C^(1/2) (C^(1/2) Psi Psi^T C^(1/2) + N ridge I)^{-1} C^(1/2) A

For a Linear layer ``y = W x + b`` the score of sample i is ``g_i x_i^T`` (and ``g_i`` for the bias),
``g_i = d log pi(a_i|s_i) / d y_i`` (Goodfellow 2015), so::

    <psi_i, psi_j>_layer = (x_i . x_j)(g_i . g_j) + (g_i . g_j)        i.e.   (X X^T + 1) o (G G^T)

(``o`` elementwise): ``N^2 (d_in + d_out)`` per layer instead of ``N^2 d_in d_out`` (DESIGN.md section 6).
The shared Gaussian ``log_std`` contributes ``D D^T`` with ``D = d log pi / d log_std`` read off the output;
Conv2d layers, Linear layers applied over extra positions, and every other parameter (gSDE, LayerNorm, ...)
fall back to their per-block scores, materialized one block at a time (never the whole ``N x P``).
And ``Psi^T beta = grad_theta sum_i beta_i log pi(a_i|s_i)`` is ONE backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_natural.common.checks import check_int, check_positive, check_weights
from sb3_natural.common.scores import batch_size_of, hookable_layers, per_sample_param_grads, prepare_batch, record_layers
from sb3_natural.common.solvers import conjugate_gradient

#: entries of each work buffer (a block of rows of an N x N product): 256k floats, 1 MB in float32, so
#: that the two products and the running sum of a block stay in the cache while they are combined
_CHUNK_ENTRIES = 1 << 18


def score_gram(policy: Any, obs: Any, actions: th.Tensor) -> th.Tensor:
    """``K = Psi Psi^T`` (``[N, N]``), ``Psi[i] = grad_theta log pi(a_i|s_i)``, assembled per block.

    :param policy: an SB3 ``ActorCriticPolicy`` or an :class:`ActorHead`
    :param obs: observations ``[N, ...]`` (tensor, numpy array, or dict of them)
    :param actions: actions as SB3 stores them
    """
    head, obs_t, actions = prepare_batch(policy, obs, actions)
    n = batch_size_of(obs_t)
    layers = hookable_layers(head.policy, head.params)
    with th.enable_grad(), record_layers(layers) as records:
        z = head(obs_t)
    with th.enable_grad():
        z_leaf = z.detach().requires_grad_(True)
        (g_z,) = th.autograd.grad(head.dist.log_prob(z_leaf, actions).sum(), z_leaf)
    calls: dict[int, int] = {}
    for rec in records:
        calls[id(rec.layer.module)] = calls.get(id(rec.layer.module), 0) + 1
    covered: set[int] = set()
    linear: list[tuple[th.Tensor, th.Tensor, bool]] = []  # (X, G, has bias) of the Hadamard layers
    fallback: dict[int, list[tuple[Any, th.Tensor]]] = {}
    if records:
        out_grads = th.autograd.grad(z, [r.output for r in records], grad_outputs=g_z, allow_unused=True, retain_graph=True)
        for rec, g in zip(records, out_grads, strict=True):
            lay = rec.layer
            covered.add(lay.weight_index)
            if lay.bias_index is not None:
                covered.add(lay.bias_index)
            if g is None:
                continue
            g = g.detach()
            if isinstance(lay.module, nn.Linear) and rec.inputs.dim() == 2 and calls[id(lay.module)] == 1:
                linear.append((rec.inputs.detach(), g, lay.bias_index is not None))
            else:
                fallback.setdefault(id(lay.module), []).append((rec, g))
    with th.no_grad():
        gram = _hadamard_grams(n, linear) if linear else z.new_zeros(n, n)
    for parts in fallback.values():  # per-sample scores of this layer's weight (and bias), summed over calls
        block = _layer_scores(parts, n)
        with th.no_grad():
            gram += block @ block.T
    for name, sl in head.direct_slices.items():
        d = g_z[:, sl]
        gram += d @ d.T
        covered.add(head.names.index(name))
    rest = [i for i in range(len(head.params)) if i not in covered]
    if rest:
        keys = ["policy." + head.names[i] for i in rest]
        grads = per_sample_param_grads(head, keys, obs_t, head.dist.log_prob, (actions,))
        for key in keys:
            block = grads[key].reshape(n, -1)
            gram += block @ block.T
    return gram.detach()  # symmetric: the Linear layers' part mirrored, the other blocks B B^T


def _hadamard_grams(n: int, layers: list[tuple[th.Tensor, th.Tensor, bool]]) -> th.Tensor:
    """``sum_layers (X X^T + 1) o (G G^T)`` (``[N, N]``, symmetric), from each layer's ``(X, G, has bias)``.

    Computed by blocks of rows, on and below the diagonal only (``K[i, :i+B]`` for rows ``i..i+B``; the
    block above the diagonal is the transpose of the one below), every layer's terms of one block
    before the next block: the ``N x N`` products are never made whole, the work is about half of the
    full products, and the elementwise products run on blocks that fit the cache.
    """
    gram = layers[0][1].new_zeros(n, n)
    rows = max(1, min(n, _CHUNK_ENTRIES // max(n, 1)))
    xx, gg = gram.new_empty(rows * n), gram.new_empty(rows * n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        shape = (stop - start, stop)  # the block's columns up to the end of its diagonal part
        bx, bg = xx[: shape[0] * shape[1]].view(shape), gg[: shape[0] * shape[1]].view(shape)
        block = gram[start:stop, :stop]
        for x, g, bias in layers:
            th.mm(x[start:stop], x[:stop].T, out=bx)
            if bias:
                bx.add_(1.0)
            th.mm(g[start:stop], g[:stop].T, out=bg)
            block.addcmul_(bx, bg)
        gram[:start, start:stop] = gram[start:stop, :start].T  # mirror onto the block above the diagonal
    return gram


def _layer_scores(parts: list[tuple[Any, th.Tensor]], n: int) -> th.Tensor:
    """Per-sample scores ``[N, P_layer]`` of one Linear/Conv2d layer (weight, then bias), from its calls."""
    total: th.Tensor | None = None
    for rec, g in parts:
        module, x = rec.layer.module, rec.inputs
        with th.no_grad():
            if isinstance(module, nn.Conv2d):
                padding = module.padding
                assert not isinstance(padding, str)
                cols = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)  # [N, C*k*k, T]
                g2 = g.reshape(n, g.shape[1], -1)  # [N, O, T]
                w = th.bmm(g2, cols.transpose(1, 2)).reshape(n, -1)
                b = g2.sum(2)
            else:
                w = th.einsum("n...o,n...i->noi", g, x).reshape(n, -1)
                b = g.reshape(n, -1, g.shape[-1]).sum(1)
            piece = th.cat([w, b], dim=1) if rec.layer.bias_index is not None else w
        total = piece if total is None else total + piece
    assert total is not None
    return total


def weighted_score_sum(policy: Any, obs: Any, actions: th.Tensor, beta: th.Tensor) -> th.Tensor:
    """``Psi^T beta = grad_theta sum_i beta_i log pi(a_i|s_i)``, a flat P-vector, by one backward pass."""
    head, obs_t, actions = prepare_batch(policy, obs, actions)
    n = batch_size_of(obs_t)
    if beta.shape != (n,):
        raise ValueError(f"beta must have shape [{n}], got {tuple(beta.shape)}")
    with th.enable_grad():
        logp = head.dist.log_prob(head(obs_t), actions)
        grads = th.autograd.grad((beta.detach() * logp).sum(), head.params, allow_unused=True)
    return head.flat([th.zeros_like(p) if gr is None else gr for p, gr in zip(head.params, grads, strict=True)])


@dataclass
class GramSolution:
    """Result of :func:`gram_least_squares`.

    :ivar beta: the dual coefficients, ``w = Psi^T beta``
    :ivar method: ``"cg"`` (conjugate gradient to ``rtol``) or ``"cholesky"`` (factored)
    :ivar iterations: CG iterations spent (also when it then fell back to the Cholesky factorization)
    :ivar residual: ``|b - S x| / |b|`` of the returned solution of the scaled system ``S x = b``
        (``S = C^(1/2) K C^(1/2) + N ridge I``, ``b = C^(1/2) A``, ``beta = C^(1/2) x``); None after a
        factorization in ``gram``'s own memory, where ``S`` is no longer there to check against
    """

    beta: th.Tensor
    method: str
    iterations: int
    residual: float | None


#: default ``rtol`` of the CG recurrence per dtype, about the dtype's unit roundoff; the true residual
#: then stagnates where the rounding of the ``N x N`` products leaves it (about 1e-6 in float32, where
#: the float32 Cholesky solve's own residual lies: BENCHMARKS.md section 5), hence the accepted 100 rtol
_RTOL = {th.float32: 1e-7, th.float64: 1e-12}
_ACCEPT = 100.0


def gram_least_squares(
    gram: th.Tensor,
    advantages: th.Tensor,
    ridge: float,
    weights: th.Tensor | None = None,
    overwrite: bool = False,
    method: Literal["cg", "cholesky"] = "cg",
    rtol: float | None = None,
    max_iter: int | None = None,
) -> GramSolution:
    """``beta`` with ``w = Psi^T beta`` the compatible least squares of :func:`compatible_least_squares`::

        beta = C^(1/2) (C^(1/2) K C^(1/2) + N ridge I)^{-1} C^(1/2) A        (K = Psi Psi^T)

    The system is symmetric positive definite with every eigenvalue at least ``N ridge``, so its
    condition number is ``1 + lambda_max(C^(1/2) K C^(1/2)) / (N ridge)``: tens to a few hundred on NAC's
    rollouts, where conjugate gradients (Hestenes & Stiefel 1952; Nocedal & Wright, Alg. 5.2) reach a
    relative residual of ``1e-7`` in 9-70 products with the ``N x N`` matrix (``2 N^2`` flops each)
    against the ``N^3 / 3`` of a factorization.

    ``method="cg"`` (default): CG from zero until the recurrence's ``|r| <= rtol |b|`` (``rtol`` defaults
    to 1e-7 in float32, 1e-12 in float64); the true residual ``|b - S x| / |b|`` is recomputed once at the
    end and must be at most ``100 rtol`` (rounding leaves it near 1e-6 in float32, as it does the
    Cholesky solve's), else, or if CG did not stop in ``max_iter`` iterations (default
    ``max(50, N // 16)``, at most N) or broke down, the system is factored instead.
    ``method="cholesky"``: the Cholesky factorization only.
    Either way the result is the exact least squares up to the stated rounding. ``overwrite=True``
    builds the system and its factor in ``gram``'s own memory (``gram`` is then destroyed): one ``N x N``
    matrix instead of three.
    """
    n = gram.shape[0]
    if gram.shape != (n, n) or advantages.shape != (n,):
        raise ValueError(f"gram must be [N, N] and advantages [N], got {tuple(gram.shape)} and {tuple(advantages.shape)}")
    check_positive(ridge=ridge)  # the dual form needs ridge > 0
    if method not in ("cg", "cholesky"):
        raise ValueError(f"method must be one of ('cg', 'cholesky'), got {method!r}")
    check_positive(allow_none=True, rtol=rtol)
    check_int(1, allow_none=True, max_iter=max_iter)
    check_weights(weights, n)
    system = gram if overwrite else gram.clone()
    sw = None
    if weights is not None:
        sw = weights.sqrt()
        system.mul_(sw[:, None]).mul_(sw[None, :])
    system.diagonal().add_(n * ridge)
    rhs = advantages if sw is None else sw * advantages
    iterations = 0
    if method == "cg":
        tol = rtol if rtol is not None else _RTOL.get(gram.dtype, 1e-6)
        b_norm = float(rhs.norm())
        if b_norm == 0.0:
            return GramSolution(th.zeros_like(rhs), "cg", 0, 0.0)
        res = None
        if math.isfinite(b_norm):  # a NaN/inf right-hand side goes to the Cholesky path (and gives NaN)
            res = conjugate_gradient(
                lambda v: system @ v, rhs, max_iter=min(n, max_iter or max(50, n // 16)), residual_tol=(tol * b_norm) ** 2
            )
            iterations = res.iterations
        if res is not None and res.converged and not res.breakdown:
            residual = float((rhs - system @ res.x).norm()) / b_norm  # the recurrence's residual drifts in float32
            if residual <= _ACCEPT * tol:
                return GramSolution(res.x if sw is None else sw * res.x, "cg", iterations, residual)
    chol = th.linalg.cholesky(system, out=system if overwrite else None)
    alpha = th.cholesky_solve(rhs[:, None], chol).squeeze(1)
    residual_chol = None if overwrite else float((rhs - system @ alpha).norm() / rhs.norm().clamp_min(1e-300))
    return GramSolution(alpha if sw is None else sw * alpha, "cholesky", iterations, residual_chol)


def score_products(policy: Any, obs: Any, actions: th.Tensor, v: th.Tensor) -> th.Tensor:
    """``Psi v`` (``[N]``: ``psi_i . v``, the directional derivative of each log-likelihood along the flat
    P-vector ``v``) by one forward-mode pass (``torch.func.jvp``), without the scores."""
    head, obs_t, actions = prepare_batch(policy, obs, actions)
    pre = head.preprocess(obs_t)
    params = {k: p.detach() for k, p in head.param_dict().items()}
    tangents = dict(zip(params, head.unflat(v.detach()), strict=True))

    def logp(p: dict[str, th.Tensor]) -> th.Tensor:
        return head.dist.log_prob(head.functional(p, pre), actions)

    result = th.func.jvp(logp, (params,), (tangents,))
    return result[1].detach()
