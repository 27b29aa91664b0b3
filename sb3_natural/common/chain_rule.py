"""The deterministic actor's gradient written as a chain rule, with a hook on the action gradient.

DDPG/TD3 (Silver et al. 2014, Eq. 7; Lillicrap et al. 2016) ascend ``J = E_s[Q(s, mu_theta(s))]``::

    grad_theta J = E_s[ grad_a Q(s, a)|_{a = mu(s)} . grad_theta mu(s) ]                   (1)

Autograd computes the same number from ``grad_theta Q(s, mu_theta(s))`` directly; writing the
two factors out lets the action gradient ``g = grad_a Q`` be changed before it reaches the actor.
Inverting gradients (Hausknecht & Stone 2016, "Deep Reinforcement Learning in Parameterized
Action Space", Eq. 8) for a bounded action in ``[low, high]``::

    g <- g * (high - a) / (high - low)   if g > 0  (the critic pushes a up)
    g <- g * (a - low) / (high - low)    otherwise                                        (2)

so the push shrinks as ``a`` approaches the bound it is pushed toward and reverses beyond it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th

ActionGradTransform = Callable[[th.Tensor, th.Tensor, th.Tensor, th.Tensor], th.Tensor]


def invert_gradients(actions: th.Tensor, grad: th.Tensor, low: th.Tensor, high: th.Tensor) -> th.Tensor:
    """Eq. (2): scale ``grad`` (an ascent direction on Q, ``[B, k]``) by the room left toward the bound it pushes to."""
    if actions.shape != grad.shape:
        raise ValueError(f"actions and grad must have the same shape, got {tuple(actions.shape)} and {tuple(grad.shape)}")
    width = high - low
    if bool((width <= 0).any()):
        raise ValueError("invert_gradients needs high > low in every action dimension")
    up = (high - actions) / width
    down = (actions - low) / width
    return th.where(grad > 0, grad * up, grad * down)


def resolve_transform(transform: str | ActionGradTransform | None) -> ActionGradTransform | None:
    """None, ``"invert"`` or a callable ``(actions, grad_a, low, high) -> grad_a``."""
    if transform is None:
        return None
    if transform == "invert":
        return invert_gradients
    if callable(transform):
        return transform
    raise ValueError(
        f"action_grad_transform must be None, 'invert' or a callable (actions, grad_a, low, high) -> grad_a, got {transform!r}"
    )


def action_gradient(q_fn: Callable[[th.Tensor], th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(Q(s_i, a_i), g_i = grad_a Q(s_i, a)|_{a = a_i})`` for every sample: one critic forward and
    one critic backward to the actions only (no critic parameter gradients)."""
    a = actions.detach().requires_grad_(True)
    with th.enable_grad():
        q = q_fn(a)
        (g,) = th.autograd.grad(q.sum(), a)
    return q.detach(), g


def transform_action_gradient(
    transform: ActionGradTransform | None, actions: th.Tensor, grad: th.Tensor, low: th.Tensor, high: th.Tensor
) -> th.Tensor:
    """Apply ``transform`` and check what it returned (same shape, finite), with a clear error otherwise."""
    if transform is None:
        return grad
    out = transform(actions.detach(), grad, low, high)
    if not isinstance(out, th.Tensor) or out.shape != grad.shape:
        shape = tuple(out.shape) if isinstance(out, th.Tensor) else type(out).__name__
        raise ValueError(f"action_grad_transform must return a tensor shaped like grad_a {tuple(grad.shape)}, got {shape}")
    if not bool(th.isfinite(out).all()):
        raise ValueError("action_grad_transform returned NaN or inf")
    return out


def chain_rule_actor_backward(actions: th.Tensor, grad_a: th.Tensor) -> None:
    """Backpropagate the actor loss ``-(1/B) sum_i Q(s_i, mu(s_i))`` through mu given ``grad_a`` (Eq. 1).

    ``actions = mu(s)`` with its graph; d loss / d a_i = -g_i / B, so one backward through the actor.
    """
    actions.backward(-grad_a / grad_a.shape[0])
