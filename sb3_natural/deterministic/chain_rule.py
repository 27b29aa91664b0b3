"""DDPG and TD3 whose actor update writes the chain rule out, with an action-gradient transform."""

from __future__ import annotations

import inspect
import re
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DDPG as SB3DDPG
from stable_baselines3 import TD3 as SB3TD3
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import polyak_update

from sb3_natural.common.chain_rule import (
    ActionGradTransform,
    action_gradient,
    chain_rule_actor_backward,
    resolve_transform,
    transform_action_gradient,
)
from sb3_natural.common.checks import (
    check_finite_observations,
    check_finite_rewards,
    check_off_policy_args,
    check_terminal_observations,
)
from sb3_natural.deterministic.policies import ACTOR_OUTPUTS, CnnChainPolicy, MlpPolicy, MultiInputChainPolicy
from sb3_natural.learning import CheckedLearnMixin
from sb3_natural.saving import ClearLoadErrorsMixin

SelfDDPG = TypeVar("SelfDDPG", bound="DDPG")
SelfChainRule = TypeVar("SelfChainRule", bound="_ChainRuleActorMixin")

if TYPE_CHECKING:
    _MixinBase = SB3TD3
else:
    _MixinBase = object


class _ChainRuleActorMixin(ClearLoadErrorsMixin, CheckedLearnMixin, _MixinBase):
    """Replaces SB3's TD3 ``train()``: same critic update, actor update by the explicit chain rule.

    Actor step (Silver et al. 2014, Eq. 7): ``a = mu(s)``; ``g = grad_a Q1(s, a)`` (one critic backward
    to the actions only, no critic parameter gradients); ``g = transform(a, g, low, high)``;
    backpropagate ``-g / B`` through mu (one actor backward). With no transform this is the gradient
    of SB3's actor loss ``-Q1(s, mu(s)).mean()``. ``low``/``high`` are the bounds of the actor's
    output, SB3's scaled action space [-1, 1] (rescaled to the env's bounds when acting).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnChainPolicy,
        "MultiInputPolicy": MultiInputChainPolicy,
    }

    def __init__(
        self,
        policy: Any,
        env: Any,
        action_grad_transform: str | ActionGradTransform | None = None,
        actor_output: str = "tanh",
        **kwargs: Any,
    ) -> None:
        if actor_output not in ACTOR_OUTPUTS:
            raise ValueError(f"actor_output must be one of {ACTOR_OUTPUTS}, got {actor_output!r}")
        self._transform = resolve_transform(action_grad_transform)
        self.action_grad_transform = action_grad_transform
        self.actor_output = actor_output
        sb3_class = next(c for c in type(self).__mro__ if c.__module__.startswith("stable_baselines3."))
        accepted = inspect.signature(sb3_class).parameters
        super().__init__(policy, env, **check_off_policy_args(kwargs, accepted))

    def learn(
        self: SelfChainRule,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,  # SB3's TD3/DDPG default: every 4 episodes
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfChainRule:
        """SB3's ``learn``, the arguments checked (:class:`~sb3_natural.learning.CheckedLearnMixin`)."""
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        excluded = [*super()._excluded_save_params(), "_transform"]
        if callable(self.action_grad_transform) and not isinstance(self.action_grad_transform, str):
            excluded.append("action_grad_transform")  # a user callable is not saved: pass it to load()
        return excluded

    def _setup_model(self) -> None:
        # actor_output reaches the policy for its construction only: the stored policy_kwargs stay the
        # user's, so that load(path, policy_kwargs=<the ones the model was built with>) is accepted.
        user_kwargs: dict[str, Any] = self.policy_kwargs
        given = user_kwargs.get("actor_output", self.actor_output)
        if given != self.actor_output:
            raise ValueError(
                f"policy_kwargs['actor_output']={given!r} contradicts actor_output={self.actor_output!r}; "
                "pass actor_output to the algorithm only"
            )
        self.policy_kwargs = {**user_kwargs, "actor_output": self.actor_output}
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = user_kwargs
        # from the attribute, which load() restores (or takes from its kwargs) after __init__ ran with the default
        self._transform = resolve_transform(self.action_grad_transform)

    def _store_transition(
        self,
        replay_buffer: Any,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # A NaN/inf that reaches the replay buffer poisons every later critic target: stop at the source.
        check_finite_rewards(np.asarray(reward))
        check_finite_observations(new_obs)  # after step 1, self._last_obs is the checked new_obs
        check_terminal_observations(infos, dones, truncated_only=False)  # stored as next_obs of a finished episode
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._setup_learn(*args, **kwargs)
        check_finite_observations(self._last_obs)  # the first observation, from reset: checked once
        return result

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        actor_losses, critic_losses, grad_norms, scaled, distances = [], [], [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            assert self.replay_buffer is not None
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = batch.discounts if batch.discounts is not None else self.gamma
            # Critic: clipped double-Q target with target-policy smoothing (Fujimoto et al. 2018).
            with th.no_grad():
                noise = batch.actions.clone().data.normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(batch.next_observations) + noise).clamp(-1, 1)
                next_q = th.cat(self.critic_target(batch.next_observations, next_actions), dim=1)
                next_q, _ = th.min(next_q, dim=1, keepdim=True)
                target_q = batch.rewards + (1 - batch.dones) * discounts * next_q
            current_q = self.critic(batch.observations, batch.actions)
            critic_loss = sum(F.mse_loss(q, target_q) for q in current_q)
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            if self._n_updates % self.policy_delay == 0:
                obs = batch.observations
                actions = self.actor(obs)
                q1, grad_a = action_gradient(partial(self.critic.q1_forward, obs), actions)
                low, high = -th.ones_like(grad_a[0]), th.ones_like(grad_a[0])
                new_grad = transform_action_gradient(self._transform, actions, grad_a, low, high)
                with th.no_grad():
                    actor_losses.append(-q1.mean().item())
                    grad_norms.append(grad_a.abs().mean().item())
                    scaled.append((new_grad.abs() < grad_a.abs()).float().mean().item())
                    distances.append(th.minimum(high - actions, actions - low).mean().item())
                self.actor.optimizer.zero_grad()
                chain_rule_actor_backward(actions, new_grad)
                self.actor.optimizer.step()

                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
            self.logger.record("train/action_grad_abs", np.mean(grad_norms))
            self.logger.record("train/action_grad_scaled_fraction", np.mean(scaled))
            self.logger.record("train/action_distance_to_bounds", np.mean(distances))


_EXTRA_DOC = """
    sb3_natural additions:

    :param action_grad_transform: None (SB3's update, exactly), ``"invert"`` (inverting gradients,
        Hausknecht & Stone 2016) or a callable ``(actions, grad_a, low, high) -> grad_a`` applied to the
        action gradient ``grad_a Q1`` ([batch, action_dim], an ascent direction) before it is
        backpropagated through the actor; bounds are those of the actor output, [-1, 1]
    :param actor_output: ``"tanh"`` (SB3's squashed actor) or ``"linear"`` (no squashing, meant for
        ``"invert"``; actions are clipped to the bounds when acting)
"""


def _docstring(sb3_class: type) -> str:
    """SB3's class docstring (its ``:ref:`` roles point into SB3's own site: made literal) plus ours."""
    return re.sub(r":ref:`([^`]*)`", r"``\1``", sb3_class.__doc__ or "") + _EXTRA_DOC


class TD3(_ChainRuleActorMixin, SB3TD3):
    __doc__ = _docstring(SB3TD3)


class DDPG(_ChainRuleActorMixin, SB3DDPG):
    __doc__ = _docstring(SB3DDPG)

    @classmethod
    def load(cls: type[SelfDDPG], path: Any, *args: Any, **kwargs: Any) -> SelfDDPG:
        # SB3's DDPG adds n_critics=1 to the stored policy_kwargs, so SB3 rejects the policy_kwargs a
        # model was built with (``DDPG.load(p, policy_kwargs=dict(net_arch=[32]))``); add the same default.
        if kwargs.get("policy_kwargs") is not None:
            kwargs["policy_kwargs"] = {"n_critics": 1, **kwargs["policy_kwargs"]}
        return super().load(path, *args, **kwargs)
