"""Closed-form math of SB3's action distributions, written against raw tensors.

Every function here is pure: it takes the network output ``z`` (the distribution
parameters, batch-first, shape ``[N, d]``) and returns tensors; nothing is sampled
and nothing is stored. SB3's ``Distribution`` objects are stateful
(``proba_distribution`` mutates ``self``), which makes them unusable under
``torch.func``; these functions reproduce their numbers exactly.

Layout of ``z`` per distribution (``d`` = ``OutputDistribution.out_dim``):

=====================  ==============================================  ===============================
kind                   z                                               SB3 class
=====================  ==============================================  ===============================
``categorical``        logits ``l`` (n)                                CategoricalDistribution
``multi_categorical``  concatenated logits, one block per sub-action   MultiCategoricalDistribution
``bernoulli``          logits (k)                                      BernoulliDistribution
``diag_gaussian``      ``[mean (k), log_std (k)]`` per sample          DiagGaussianDistribution,
                                                                       StateDependentNoiseDistribution
=====================  ==============================================  ===============================

For the state-independent ``log_std`` of ``DiagGaussianDistribution`` the head
broadcasts the single parameter to every sample; the vector-Jacobian product then
sums its per-sample contributions, which is the correct Fisher block
(``(1/N) sum_i 2 v = 2 v``). Treating it as one output added once per sample is a
known bug of public TRPO code (see DESIGN.md, "Pitfall").

Output Fisher ``M(z) = E_{a ~ pi(.|z)}[grad_z log pi(a|z) grad_z log pi(a|z)^T]``
(Amari 1998; closed forms e.g. in Martens 2020, "New insights and perspectives on
the natural gradient method", Sec. 9.2):

* categorical: ``M = diag(p) - p p^T``, ``p = softmax(l)``;
* multi-categorical: block diagonal of the above;
* bernoulli: ``M = diag(p (1 - p))``, ``p = sigmoid(l)``;
* diagonal Gaussian in ``(mean, log_std)``: ``M = diag(1 / sigma^2, 2)``.

The Fisher is invariant under the tanh bijection used by squashed Gaussians, so
the same ``M`` holds there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch as th
import torch.nn.functional as F

from sb3_natural.common.checks import check_positive

Kind = Literal["categorical", "multi_categorical", "bernoulli", "diag_gaussian"]
KLConvention = Literal["sum", "mean"]

KINDS: tuple[str, ...] = ("categorical", "multi_categorical", "bernoulli", "diag_gaussian")
KL_CONVENTIONS: tuple[str, ...] = ("sum", "mean")


def check_kl_convention(value: object, name: str = "kl_convention") -> None:
    """Raise a ValueError naming the argument ``name`` unless ``value`` is one of :data:`KL_CONVENTIONS`."""
    if value not in KL_CONVENTIONS:
        raise ValueError(f"{name} must be one of {KL_CONVENTIONS}, got {value!r}")


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _tanh_inverse(y: th.Tensor, eps: float) -> th.Tensor:
    """atanh with the clipping SB3's ``TanhBijector.inverse`` applies (same numbers)."""
    finfo = th.finfo(y.dtype)
    y = y.clamp(min=-1.0 + finfo.eps, max=1.0 - finfo.eps)
    return 0.5 * (y.log1p() - (-y).log1p())


@dataclass(frozen=True)
class OutputDistribution:
    """Description of an SB3 action distribution as a function of its raw parameters ``z``.

    :param kind: one of ``categorical``, ``multi_categorical``, ``bernoulli``, ``diag_gaussian``
    :param action_dims: number of categories (categorical), categories per sub-action
        (multi_categorical), or the action dimension (bernoulli, diag_gaussian)
    :param squash: Gaussian actions are ``tanh`` of the Gaussian sample (gSDE with
        ``squash_output=True``); log-probabilities include SB3's tanh correction
    :param squash_eps: epsilon of SB3's ``TanhBijector``
    """

    kind: Kind
    action_dims: tuple[int, ...]
    squash: bool = False
    squash_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown distribution kind {self.kind!r}; expected one of {KINDS}")
        if not self.action_dims or any(int(n) <= 0 for n in self.action_dims):
            raise ValueError(f"action_dims must be positive integers, got {self.action_dims}")
        if self.kind != "multi_categorical" and len(self.action_dims) != 1:
            raise ValueError(f"kind {self.kind!r} takes a single action dimension, got {self.action_dims}")
        if self.squash and self.kind != "diag_gaussian":
            raise ValueError("squash=True is only meaningful for kind='diag_gaussian'")
        check_positive(squash_eps=self.squash_eps)

    # ------------------------------------------------------------------ shapes
    @property
    def action_dim(self) -> int:
        """Number of action components (sub-actions, binary flags, or Gaussian dims)."""
        if self.kind == "categorical":
            return 1
        if self.kind == "multi_categorical":
            return len(self.action_dims)
        return self.action_dims[0]

    @property
    def out_dim(self) -> int:
        """d, the number of distribution parameters per sample (columns of ``z``)."""
        if self.kind == "diag_gaussian":
            return 2 * self.action_dims[0]
        return int(sum(self.action_dims))

    def check_z(self, z: th.Tensor, name: str = "z") -> None:
        if z.dim() != 2 or z.shape[1] != self.out_dim:
            raise ValueError(
                f"{name} must have shape [N, {self.out_dim}] for a {self.kind} distribution "
                f"with action_dims={self.action_dims}, got {tuple(z.shape)}"
            )

    def prepare_actions(self, actions: th.Tensor, n: int) -> th.Tensor:
        """Reshape actions as SB3 stores them in buffers to ``[N]`` (categorical) or ``[N, k]``."""
        if actions.shape[0] != n:
            raise ValueError(f"actions has {actions.shape[0]} rows but the batch has {n} observations")
        if self.kind == "categorical":
            if actions.numel() != n:
                raise ValueError(f"Discrete actions must have one entry per sample, got shape {tuple(actions.shape)}")
            return actions.reshape(n).long()
        k = self.action_dim
        if actions.numel() != n * k:
            raise ValueError(f"actions must have shape [N, {k}] for {self.kind}, got {tuple(actions.shape)}")
        actions = actions.reshape(n, k)
        return actions.long() if self.kind == "multi_categorical" else actions

    def _split_gaussian(self, z: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        k = self.action_dims[0]
        return z[:, :k], z[:, k:]

    # --------------------------------------------------------------- log-prob
    def log_prob(self, z: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """log pi(a_i | z_i) for every sample, shape ``[N]``; equals SB3's ``Distribution.log_prob``."""
        n = z.shape[0]
        a = self.prepare_actions(actions, n)
        if self.kind == "categorical":
            return F.log_softmax(z, dim=-1).gather(1, a[:, None]).squeeze(1)
        if self.kind == "multi_categorical":
            out = z.new_zeros(n)
            for j, block in enumerate(th.split(z, list(self.action_dims), dim=1)):
                out = out + F.log_softmax(block, dim=-1).gather(1, a[:, j : j + 1]).squeeze(1)
            return out
        if self.kind == "bernoulli":
            # log p(a) = a l - softplus(l)
            return (a * z - F.softplus(z)).sum(dim=1)
        mean, log_std = self._split_gaussian(z)
        x = _tanh_inverse(a, self.squash_eps) if self.squash else a
        lp = (-0.5 * ((x - mean) * th.exp(-log_std)) ** 2 - log_std - _LOG_SQRT_2PI).sum(dim=1)
        if self.squash:
            # SB3's TanhBijector.log_prob_correction; independent of the parameters.
            lp = lp - th.log(1.0 - th.tanh(x) ** 2 + self.squash_eps).sum(dim=1)
        return lp

    def entropy(self, z: th.Tensor) -> th.Tensor:
        """Entropy per sample, shape ``[N]`` (of the Gaussian before squashing)."""
        if self.kind == "categorical":
            logp = F.log_softmax(z, dim=-1)
            return -(logp.exp() * logp).sum(dim=1)
        if self.kind == "multi_categorical":
            return sum(  # type: ignore[return-value]
                -(F.log_softmax(b, -1).exp() * F.log_softmax(b, -1)).sum(1) for b in th.split(z, list(self.action_dims), 1)
            )
        if self.kind == "bernoulli":
            p = th.sigmoid(z)
            return (F.softplus(z) - p * z).sum(dim=1)
        _, log_std = self._split_gaussian(z)
        return (log_std + 0.5 + _LOG_SQRT_2PI).sum(dim=1)

    def mode(self, z: th.Tensor) -> th.Tensor:
        """Deterministic action (SB3's ``mode()``)."""
        if self.kind == "categorical":
            return z.argmax(dim=1)
        if self.kind == "multi_categorical":
            return th.stack([b.argmax(dim=1) for b in th.split(z, list(self.action_dims), 1)], dim=1)
        if self.kind == "bernoulli":
            return (z > 0).to(z.dtype)
        mean, _ = self._split_gaussian(z)
        return th.tanh(mean) if self.squash else mean

    def sample(self, z: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """Actions drawn from pi(.|z_i), one per sample, shaped as SB3 returns them.

        The draws are made on the ``generator``'s device (this package seeds CPU generators, so that a
        seed gives the same draws on every device) and moved to ``z``'s."""
        device = z.device
        if generator is not None and generator.device != device:
            return self._draw(z.detach().to(generator.device), generator).to(device)
        return self._draw(z.detach(), generator)

    def _draw(self, z: th.Tensor, generator: th.Generator | None) -> th.Tensor:
        if self.kind == "categorical":
            return th.multinomial(th.softmax(z, -1), 1, generator=generator).squeeze(1)
        if self.kind == "multi_categorical":
            blocks = th.split(z, list(self.action_dims), 1)
            return th.cat([th.multinomial(th.softmax(b, -1), 1, generator=generator) for b in blocks], dim=1)
        if self.kind == "bernoulli":
            return th.bernoulli(th.sigmoid(z), generator=generator)
        mean, log_std = self._split_gaussian(z)
        x = mean + log_std.exp() * th.randn(mean.shape, generator=generator, dtype=z.dtype, device=z.device)
        return th.tanh(x) if self.squash else x

    # --------------------------------------------------------------------- KL
    def kl(self, z_old: th.Tensor, z_new: th.Tensor, convention: KLConvention = "sum") -> th.Tensor:
        """KL(pi(.|z_old) || pi(.|z_new)) per sample, shape ``[N]``.

        ``convention="sum"`` is the true KL of the joint action distribution (summed over
        independent action dimensions). ``"mean"`` divides the Gaussian and Bernoulli KL by
        the number of action dimensions, which is what sb3-contrib's TRPO computes
        (``kl_divergence(...).mean()`` over an ``[N, k]`` tensor). Categorical and
        multi-categorical KLs are the same under both conventions (as in sb3-contrib).
        """
        check_kl_convention(convention, name="convention")
        if self.kind == "categorical":
            lo, ln = F.log_softmax(z_old, -1), F.log_softmax(z_new, -1)
            return (lo.exp() * (lo - ln)).sum(dim=1)
        if self.kind == "multi_categorical":
            out = z_new.new_zeros(z_new.shape[0])
            splits = list(self.action_dims)
            for bo, bn in zip(th.split(z_old, splits, 1), th.split(z_new, splits, 1), strict=True):
                lo, ln = F.log_softmax(bo, -1), F.log_softmax(bn, -1)
                out = out + (lo.exp() * (lo - ln)).sum(dim=1)
            return out
        if self.kind == "bernoulli":
            po = th.sigmoid(z_old)
            # KL = p_o (log p_o - log p_n) + (1 - p_o)(log(1 - p_o) - log(1 - p_n)), in logits:
            per_dim = po * (F.logsigmoid(z_old) - F.logsigmoid(z_new)) + (1 - po) * (
                F.logsigmoid(-z_old) - F.logsigmoid(-z_new)
            )
        else:
            mo, lso = self._split_gaussian(z_old)
            mn, lsn = self._split_gaussian(z_new)
            # KL(N(mo, so) || N(mn, sn)) = log(sn/so) + (so^2 + (mo - mn)^2) / (2 sn^2) - 1/2
            per_dim = lsn - lso + 0.5 * (th.exp(2 * (lso - lsn)) + ((mo - mn) * th.exp(-lsn)) ** 2) - 0.5
        kl = per_dim.sum(dim=1)
        return kl / per_dim.shape[1] if convention == "mean" else kl

    def kl_scale(self, convention: KLConvention) -> float:
        """Factor c with KL_convention = c * KL_sum (so the Fisher of that KL is c * F)."""
        check_kl_convention(convention, name="convention")
        if convention == "mean" and self.kind in ("bernoulli", "diag_gaussian"):
            return 1.0 / self.action_dims[0]
        return 1.0

    # ----------------------------------------------------------- output Fisher
    def fisher_stats(self, z: th.Tensor) -> th.Tensor:
        """What ``M(z)`` depends on, computed once per update and reused by every product.

        probabilities for the discrete kinds, ``exp(-2 log_std)`` (= 1/sigma^2) for Gaussians.
        """
        self.check_z(z)
        z = z.detach()
        if self.kind == "categorical":
            return th.softmax(z, dim=-1)
        if self.kind == "multi_categorical":
            return th.cat([th.softmax(b, -1) for b in th.split(z, list(self.action_dims), 1)], dim=1)
        if self.kind == "bernoulli":
            return th.sigmoid(z)
        _, log_std = self._split_gaussian(z)
        return th.exp(-2.0 * log_std)

    def fisher_mvp(self, stats: th.Tensor, u: th.Tensor) -> th.Tensor:
        """Per-sample output-Fisher product ``M(z_i) u_i`` for ``u`` of shape ``[N, d]``.

        categorical: ``p * u - p (p . u)``; bernoulli: ``p (1 - p) u``;
        Gaussian: ``[u_mean / sigma^2, 2 u_log_std]``.
        """
        if self.kind == "categorical":
            return stats * u - stats * (stats * u).sum(dim=1, keepdim=True)
        if self.kind == "multi_categorical":
            pu = stats * u
            blocks = []
            splits = list(self.action_dims)
            for p_b, pu_b in zip(th.split(stats, splits, 1), th.split(pu, splits, 1), strict=True):
                blocks.append(pu_b - p_b * pu_b.sum(dim=1, keepdim=True))
            return th.cat(blocks, dim=1)
        if self.kind == "bernoulli":
            return stats * (1.0 - stats) * u
        k = self.action_dims[0]
        return th.cat([u[:, :k] * stats, 2.0 * u[:, k:]], dim=1)

    def fisher_matrix(self, z: th.Tensor) -> th.Tensor:
        """Dense per-sample output Fisher ``M(z_i)``, shape ``[N, d, d]``."""
        stats = self.fisher_stats(z)
        n, d = z.shape
        eye = th.eye(d, dtype=z.dtype, device=z.device).expand(n, d, d)
        # Column j of M_i is M_i e_j: apply the product to every basis vector at once.
        cols = [self.fisher_mvp(stats, eye[:, :, j]) for j in range(d)]
        return th.stack(cols, dim=2)

    def fisher_factor(self, z: th.Tensor) -> th.Tensor:
        """A factor ``R_i`` with ``M(z_i) = R_i^T R_i``, shape ``[N, r, d]``.

        categorical: ``M = sum_k p_k (e_k - p)(e_k - p)^T`` so row k of R is ``sqrt(p_k) (e_k - p)``;
        bernoulli: ``diag(sqrt(p (1 - p)))``; Gaussian: ``diag(1/sigma, sqrt(2))``.
        Used to build the dense Fisher ``F = (1/N) sum_i (R_i J_i)^T (R_i J_i)`` and the
        rows of the dual (Woodbury) solver.
        """
        stats = self.fisher_stats(z)
        n, d = z.shape
        if self.kind in ("categorical", "multi_categorical"):
            splits = list(self.action_dims)
            r = z.new_zeros(n, d, d)
            start = 0
            for p in th.split(stats, splits, 1):
                m = p.shape[1]
                eye = th.eye(m, dtype=z.dtype, device=z.device)
                block = p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])
                r[:, start : start + m, start : start + m] = block
                start += m
            return r
        if self.kind == "bernoulli":
            return th.diag_embed((stats * (1.0 - stats)).sqrt())
        k = self.action_dims[0]
        diag = th.cat([stats.sqrt(), th.full((n, k), math.sqrt(2.0), dtype=z.dtype, device=z.device)], dim=1)
        return th.diag_embed(diag)
