"""Fisher-vector products and the dense Fisher of an SB3 actor.

Notation (batch-first): N samples, P actor parameters, d = distribution parameters per
sample; ``z_i = f_theta(s_i)`` (``[N, d]``), ``J_i = dz_i/dtheta`` (``d x P``), ``M_i`` the
closed-form output Fisher (:mod:`sb3_natural.common.distributions`).

The policy's Fisher (Kakade 2001; Amari 1998) is

    F = (1/N) sum_i E_{a ~ pi(.|s_i)}[psi psi^T] = (1/N) sum_i J_i^T M_i J_i        (1)

and equals the Hessian of the mean KL(pi_old || pi_theta) at theta = theta_old (Schulman et
al. 2015, TRPO, Appendix C). Three ways to multiply it with a vector v:

* :class:`AnalyticFVP` -- ``F v = (1/N) J^T (M (J v))`` (Eq. 1; Martens & Grosse 2015,
  Pascanu & Bengio 2013): one Jacobian-vector product, the closed-form ``M``, one
  vector-Jacobian product. The forward pass, ``M``'s statistics and the backward graph
  are built once and reused by every product of an update (a CG solve).
* :class:`EmpiricalFVP` -- ``F_hat v = Psi^T (Psi v) / N`` with the sampled actions'
  scores (the compatible-features Fisher of Natural Actor-Critic).
* :class:`DirectFVP` -- ``grad_theta[(grad_theta KL) . v]``, the KL double backprop that
  sb3-contrib's TRPO uses; the reference.

``kl_convention="mean"`` scales F by the factor sb3-contrib's per-action-dimension KL
has (``OutputDistribution.kl_scale``); ``"sum"`` (the default) is the true KL.
"""

from __future__ import annotations

from typing import Any

import torch as th

from sb3_natural.common.checks import check_nonnegative
from sb3_natural.common.distributions import KLConvention, check_kl_convention
from sb3_natural.common.heads import ActorHead, Obs
from sb3_natural.common.scores import ScoreMethod, batch_size_of, per_sample_grads, prepare_obs


def _prepare(policy: Any, obs: Any) -> tuple[ActorHead, Obs, int]:
    head, obs_t = prepare_obs(policy, obs)
    n = batch_size_of(obs_t)
    if n < 1:
        raise ValueError("obs must hold at least one sample")
    return head, obs_t, n


class _LinearizedOutput:
    """Reusable ``J v`` and ``J^T u`` for an output ``y(theta)`` ([N, k]) of the actor.

    The forward graph of ``y`` is built once. ``J^T u`` is a backward pass through it
    (retained); ``J v`` uses the double-vjp identity ``J v = d/du [(J^T u) . v]`` on a graph
    of ``J^T u`` built once with ``create_graph=True`` (linear in u, so one backward through
    it per product; no forward pass is repeated).
    """

    def __init__(self, head: ActorHead, y: th.Tensor) -> None:
        self.head = head
        self.y = y
        self._u0 = th.zeros_like(y, requires_grad=True)
        grads = th.autograd.grad(y, head.params, grad_outputs=self._u0, create_graph=True, allow_unused=True)
        self._used = [g is not None for g in grads]
        self._gp = [g for g in grads if g is not None]

    def jvp(self, v: th.Tensor) -> th.Tensor:
        """``J v`` for a flat P-vector v, shape like ``y``."""
        vs = [t for t, used in zip(self.head.unflat(v), self._used, strict=True) if used]
        (jv,) = th.autograd.grad(self._gp, self._u0, grad_outputs=vs, retain_graph=True)
        return jv

    def vjp(self, u: th.Tensor) -> th.Tensor:
        """``J^T u`` as a flat P-vector."""
        grads = th.autograd.grad(self.y, self.head.params, grad_outputs=u, retain_graph=True, allow_unused=True)
        return self.head.flat([th.zeros_like(p) if g is None else g for p, g in zip(self.head.params, grads, strict=True)])


class AnalyticFVP:
    """``v -> F v + damping v`` with ``F = (1/N) J^T M J`` (Eq. 1), reusable across products.

    :param policy: an SB3 ``ActorCriticPolicy`` or :class:`ActorHead`
    :param obs: the batch of observations (states s_i)
    :param kl_convention: ``"sum"`` (true KL, default) or ``"mean"`` (sb3-contrib's TRPO)
    :param damping: lambda >= 0 added as ``lambda v``
    :param z: the actor outputs ``head(obs)`` at the current parameters, with their autograd
        graph, when the caller has already computed them (saves a forward pass)
    """

    def __init__(
        self,
        policy: Any,
        obs: Any,
        kl_convention: KLConvention = "sum",
        damping: float = 0.0,
        z: th.Tensor | None = None,
    ) -> None:
        head, obs_t, n = _prepare(policy, obs)
        check_kl_convention(kl_convention)
        check_nonnegative(damping=damping)
        self.head, self.n, self.damping = head, n, float(damping)
        self.scale = head.dist.kl_scale(kl_convention) / n
        with th.enable_grad():
            self.z = head(obs_t) if z is None else z
            if self.z.shape != (n, head.dist.out_dim) or not self.z.requires_grad:
                raise ValueError(f"z must be head(obs) with its graph, shape [{n}, {head.dist.out_dim}]")
            self._lin = _LinearizedOutput(head, self.z)
        self.stats = head.dist.fisher_stats(self.z)

    def __call__(self, v: th.Tensor) -> th.Tensor:
        with th.enable_grad():
            jv = self._lin.jvp(v)
            mjv = self.head.dist.fisher_mvp(self.stats, jv) * self.scale
            fv = self._lin.vjp(mjv)
        return fv + self.damping * v if self.damping else fv


class EmpiricalFVP:
    """``v -> Psi^T (Psi v) / N + damping v``, the empirical Fisher of the sampled actions.

    Matrix-free (jvp/vjp of the log-probability vector); pass ``scores`` to use an
    already computed ``Psi`` instead (two matrix-vector products).
    """

    def __init__(
        self,
        policy: Any,
        obs: Any,
        actions: th.Tensor,
        damping: float = 0.0,
        scores: th.Tensor | None = None,
    ) -> None:
        head, obs_t, n = _prepare(policy, obs)
        check_nonnegative(damping=damping)
        self.head, self.n, self.damping = head, n, float(damping)
        self.scores = scores
        if scores is not None:
            if scores.shape != (n, head.num_params):
                raise ValueError(f"scores must have shape [{n}, {head.num_params}], got {tuple(scores.shape)}")
            return
        actions = th.as_tensor(actions, device=head.params[0].device)
        with th.enable_grad():
            logp = head.dist.log_prob(head(obs_t), actions)
            self._lin = _LinearizedOutput(head, logp[:, None])

    def __call__(self, v: th.Tensor) -> th.Tensor:
        if self.scores is not None:
            fv = self.scores.T @ (self.scores @ v) / self.n
        else:
            with th.enable_grad():
                fv = self._lin.vjp(self._lin.jvp(v) / self.n)
        return fv + self.damping * v if self.damping else fv


class DirectFVP:
    """``v -> grad[(grad KL) . v] + damping v``: the KL double backprop (sb3-contrib's TRPO).

    ``KL = mean_i KL(pi(.|z_i_old) || pi(.|z_i(theta)))`` with ``z_old`` the detached
    outputs at the current parameters; its Hessian there is the Fisher.
    """

    def __init__(self, policy: Any, obs: Any, kl_convention: KLConvention = "sum", damping: float = 0.0) -> None:
        head, obs_t, n = _prepare(policy, obs)
        check_kl_convention(kl_convention)
        check_nonnegative(damping=damping)
        self.head, self.n, self.damping = head, n, float(damping)
        with th.enable_grad():
            z = head(obs_t)
            kl = head.dist.kl(z.detach(), z, kl_convention).mean()
            grads = th.autograd.grad(kl, head.params, create_graph=True, allow_unused=True)
        self._grad_kl = head.flat([th.zeros_like(p) if g is None else g for p, g in zip(head.params, grads, strict=True)])

    def __call__(self, v: th.Tensor) -> th.Tensor:
        with th.enable_grad():
            grads = th.autograd.grad((self._grad_kl * v).sum(), self.head.params, retain_graph=True, allow_unused=True)
        fv = self.head.flat([th.zeros_like(p) if g is None else g for p, g in zip(self.head.params, grads, strict=True)])
        return fv + self.damping * v if self.damping else fv


def fisher_rows(
    policy: Any,
    obs: Any,
    kl_convention: KLConvention = "sum",
    method: ScoreMethod = "layerwise",
) -> th.Tensor:
    """Rows ``L`` with ``F = L^T L / N`` (Eq. 1), shape ``[N * d, P]``.

    Row ``(k, i)`` is ``r_{i,k} J_i``, row k of the factor ``R_i`` (``M_i = R_i^T R_i``) times
    the Jacobian, i.e. the per-sample gradient of ``r_{i,k} . z_i`` with ``r`` held fixed;
    computed with the fast per-sample machinery of :mod:`scores`. These are the rows the
    dual (Woodbury) solver works with when ``N d < P``.
    """
    head, obs_t, n = _prepare(policy, obs)
    check_kl_convention(kl_convention)
    with th.no_grad():
        z = head(obs_t)
        r = head.dist.fisher_factor(z) * head.dist.kl_scale(kl_convention) ** 0.5  # [N, d, d]
    d = r.shape[1]
    out = th.empty(d * n, head.num_params, dtype=z.dtype, device=z.device)

    def dot(zz: th.Tensor, rk: th.Tensor) -> th.Tensor:
        return (zz * rk).sum(dim=1)

    for k in range(d):
        per_sample_grads(head, obs_t, dot, (r[:, k, :],), method=method, out=out[k * n : (k + 1) * n])
    return out


def dense_fisher(policy: Any, obs: Any, kl_convention: KLConvention = "sum") -> th.Tensor:
    """The dense ``P x P`` Fisher ``F = (1/N) sum_i J_i^T M_i J_i`` (Eq. 1), symmetric PSD.

    Cost ``O(N d P^2)``: meant for small actors (the dense solver) and tests.
    """
    head, obs_t, n = _prepare(policy, obs)
    rows = fisher_rows(head, obs_t, kl_convention)
    f = rows.T @ rows / n
    return 0.5 * (f + f.T)


def empirical_fisher(scores: th.Tensor) -> th.Tensor:
    """``F_hat = Psi^T Psi / N`` from a score matrix ``[N, P]``."""
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be a [N, P] matrix with N >= 1, got shape {tuple(scores.shape)}")
    return scores.T @ scores / scores.shape[0]
