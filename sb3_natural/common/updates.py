"""Update steps shared by the algorithms: advantage normalization, the trust-region scale and line search,
applying a step, the critic fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from torch import nn

from sb3_natural.common.heads import ActorHead, index_obs, layers_in_mode, normalization_layers, take_rows


def natural_step_scale(x: th.Tensor, fx: th.Tensor, target_kl: float) -> float | None:
    """Step length beta with KL(theta, theta + beta x) ~= target_kl to second order.

    ``KL ~= (1/2) beta^2 x^T F x``, so ``beta = sqrt(2 target_kl / (x^T F x))`` (Schulman et al. 2015,
    TRPO, Appendix C; Peters & Schaal 2008). Returns None when ``x^T F x`` is not positive or not
    finite (the step is then undefined and must be skipped).
    """
    if not target_kl > 0:
        raise ValueError(f"target_kl must be > 0, got {target_kl}")
    xfx = float(x @ fx)
    if not math.isfinite(xfx) or xfx <= 0.0:
        return None
    return math.sqrt(2.0 * target_kl / xfx)


def clipped_step_size(eta_max: float, quadratic: float, target_kl: float | None) -> float:
    """ACKTR's trust-region step size (Wu et al. 2017, section 3.1, "Trust region"):

        eta = min(eta_max, sqrt(2 delta / (Delta^T F Delta)))

    with ``delta = target_kl`` and ``quadratic = Delta^T F Delta`` for the natural direction Delta, so that
    the step's second-order KL ``(1/2) eta^2 Delta^T F Delta`` is at most delta. ``target_kl=None``, or a
    ``quadratic`` that is not positive and finite, leaves ``eta_max`` (no trust region).
    """
    if target_kl is None or not math.isfinite(quadratic) or quadratic <= 0.0:
        return float(eta_max)
    return float(min(eta_max, math.sqrt(2.0 * target_kl / quadratic)))


def momentum_update(velocity: th.Tensor | None, step: th.Tensor, momentum: float) -> th.Tensor:
    """``u <- momentum * u + (1 - momentum) * step`` (u = 0 before the first update).

    The parameters then move by ``u``: the heavy-ball momentum of ACKTR (Wu et al. 2017; in OpenAI
    baselines' K-FAC a momentum optimizer of rate ``eta (1 - momentum)``), so that a constant step is
    taken at its own length and ``momentum=0`` is the plain step.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if velocity is None or momentum == 0.0:
        return (1.0 - momentum) * step
    return momentum * velocity + (1.0 - momentum) * step


def all_finite(x: th.Tensor) -> bool:
    """Whether every entry of ``x`` is finite: one sum first (finite only if every entry is; a NaN or an
    infinity makes it non-finite), the elementwise test only when the sum is not finite (it may overflow)."""
    return math.isfinite(float(x.sum())) or bool(th.isfinite(x).all())


def clip_by_norm(g: th.Tensor, max_norm: float | None) -> tuple[th.Tensor, float]:
    """``g * min(1, max_norm / |g|)`` and ``|g|`` (as ``torch.nn.utils.clip_grad_norm_``, on a flat vector;
    ``max_norm=None`` or ``<= 0``: no clipping)."""
    norm = float(g.norm())
    if max_norm is None or max_norm <= 0 or not math.isfinite(norm):
        return g, norm
    coef = max_norm / (norm + 1e-6)
    return (g * coef if coef < 1.0 else g), norm


def apply_step(head: ActorHead, step: th.Tensor) -> None:
    """theta += step for the actor parameters (in place, outside autograd)."""
    with th.no_grad():
        for p, s in zip(head.params, head.unflat(step), strict=True):
            p.add_(s)


def refresh_running_statistics(layers: nn.Module | Sequence[nn.Module], forward: Callable[[], object]) -> bool:
    """Update the running statistics of the normalization ``layers`` (those of a module:
    :func:`~sb3_natural.common.heads.normalization_layers`) by one call of ``forward`` without gradient,
    with only those layers in training mode: each folds the batch's statistics into its own,
    ``running <- (1 - momentum) running + momentum batch`` (torch.nn.BatchNorm1d; the cumulative average
    for ``momentum=None``). Dropout and every other module keep their mode, so no random number is drawn.
    Their modes are restored after. Returns whether there was any layer (no call of ``forward`` if not).
    A module (a policy) stands for its normalization layers."""
    if isinstance(layers, nn.Module):
        layers = normalization_layers(layers)
    if not layers:
        return False
    with layers_in_mode(layers, True), th.no_grad():
        forward()
    return True


def normalize_advantages(adv: th.Tensor) -> th.Tensor:
    """``(A - mean A) / (std A + 1e-8)``, as SB3's PPO/A2C and sb3-contrib's TRPO (unchanged for one sample)."""
    if adv.numel() <= 1:
        return adv
    return (adv - adv.mean()) / (adv.std() + 1e-8)


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`: ``accepted`` False means the parameters were restored."""

    accepted: bool
    coefficient: float  # the accepted multiple of the full step (0 when none was accepted)
    objective: float  # the surrogate at the accepted point (the old one when none was accepted)
    kl: float  # the KL at the accepted point (0 when none was accepted)
    iterations: int


def backtracking_line_search(
    head: ActorHead,
    direction: th.Tensor,
    step_size: float,
    evaluate: Callable[[], tuple[float, float]],
    old_objective: float,
    max_kl: float,
    shrinking_factor: float = 0.8,
    max_iter: int = 10,
) -> LineSearchResult:
    """Try ``theta_old + (c step_size) direction`` for ``c = 1, f, f^2, ...`` (f = ``shrinking_factor``);
    accept the first with a finite surrogate above
    ``old_objective`` and KL below ``max_kl`` (Schulman et al. 2015, TRPO, Appendix C).

    ``evaluate()`` returns ``(surrogate, kl)`` at the actor's current parameters. When no candidate is
    accepted the actor parameters are restored bit-identically (a copy of the flat vector taken before
    the first try) and ``accepted`` is False.
    """
    with th.no_grad():
        original = head.flat([p.detach() for p in head.params]).clone()
        coef = 1.0
        for i in range(max_iter):
            head.set_flat(original + (coef * step_size) * direction)
            objective, kl = evaluate()
            if math.isfinite(objective) and kl < max_kl and objective > old_objective:
                return LineSearchResult(True, coef, objective, kl, i + 1)
            coef *= shrinking_factor
        head.set_flat(original)
    return LineSearchResult(False, 0.0, old_objective, 0.0, max_iter)


def fit_critic(
    policy: ActorCriticPolicy,
    obs: Any,
    returns: th.Tensor,
    epochs: int,
    batch_size: int,
    generator: th.Generator | None = None,
    critic_params: list[th.nn.Parameter] | None = None,
) -> float:
    """Fit the value head on ``returns``: ``epochs`` passes of minibatch MSE with the policy's
    optimizer, moving only ``critic_params`` (default: every parameter the optimizer holds).

    The algorithms pass the parameters the actor does not depend on, so the value loss never moves
    the actor, also when the optimizer holds actor parameters too (REINFORCE's one optimizer with an
    actor group): the other parameters' gradients are cleared before each step, and Adam skips them.

    Minibatches index the tensors directly (no buffer generator per epoch). Returns the mean
    minibatch loss of the last epoch (0.0 when epochs=0).
    """
    if epochs == 0:
        return 0.0
    returns = returns.flatten()
    n = returns.shape[0]
    extractor = policy.vf_features_extractor
    fixed_features = None
    held = [p for group in policy.optimizer.param_groups for p in group["params"]]
    trained = {id(p) for p in (held if critic_params is None else critic_params)}
    others = [p for p in held if id(p) not in trained]
    if not any(id(p) in trained for p in extractor.parameters()):
        # The optimizer does not move the extractor (a parameter-free Flatten, or a features extractor
        # shared with the actor, which the critic must not move): its output is the same every epoch,
        # so compute it once; values = value_net(forward_critic(features)) as in
        # ActorCriticPolicy.predict_values.
        with th.no_grad():
            fixed_features = BaseModel.extract_features(policy, obs, extractor)
    losses: list[th.Tensor] = []
    for _ in range(epochs):
        losses = []
        perm = th.randperm(n, generator=generator).to(returns.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if fixed_features is not None:
                values = policy.value_net(policy.mlp_extractor.forward_critic(take_rows(fixed_features, idx))).flatten()
            else:
                values = policy.predict_values(index_obs(obs, idx)).flatten()  # type: ignore[arg-type]
            loss = F.mse_loss(values, take_rows(returns, idx))
            policy.optimizer.zero_grad()
            loss.backward()
            for p in others:
                p.grad = None
            policy.optimizer.step()
            losses.append(loss.detach())
    return float(th.stack(losses).mean())


def make_optimizer(policy: ActorCriticPolicy, param_groups: list[dict[str, Any]]) -> th.optim.Optimizer:
    """The policy's optimizer class and kwargs over ``param_groups``.

    For Adam/AdamW, unless the user set ``foreach`` or ``fused``, the fused implementation (one
    kernel for all parameters) is used, or the multi-tensor one where fused is unavailable: the
    same update rule, in roughly 0.6x the time per step for the small value networks of on-policy
    RL (PyTorch picks these only on CUDA by default). See BENCHMARKS.md.
    """
    kwargs = dict(policy.optimizer_kwargs)
    cls = policy.optimizer_class
    if cls in (th.optim.Adam, th.optim.AdamW) and "foreach" not in kwargs and "fused" not in kwargs:
        try:
            return cls(param_groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            kwargs["foreach"] = True
    return cls(param_groups, **kwargs)
