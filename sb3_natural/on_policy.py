"""The on-policy base shared by NAC, FisherTRPO, REINFORCE and ACKTR (orchestration only; math is in ``common/``).

What is the same in every on-policy class lives here once:

* the policy aliases (SB3's ActorCriticPolicy family);
* the actor view (:class:`~sb3_natural.common.heads.ActorHead`) and ONE rule for the critic's
  parameters: the critic optimizer holds every trainable parameter that the action distribution does
  NOT depend on (sb3-contrib's TRPO semantics). A shared features extractor belongs to the actor, so
  the critic's own epochs never move a parameter the actor depends on;
* the NaN/inf guards of rollout collection, including the ``terminal_observation`` of an episode cut
  by a time limit, which SB3 feeds into the value bootstrap;
* the checks of SB3's shared arguments, the learning-rate schedules of the optimizer's groups, the
  batch preparation (Discrete actions, advantage normalization) and the logging of the keys every
  class shares (docs/metrics.md);
* the policy's mode in ``train()``: evaluation mode, the mode SB3 collects rollouts in, so the update
  differentiates the policy that sampled the actions, per sample (BatchNorm by its running statistics,
  dropout off), and the critic's epochs leave BatchNorm statistics the actor uses unchanged; after an
  update that moved the actor, one forward pass of the rollout in training mode refreshes the running
  statistics (once per update, as A2C's training-mode forward does);
* a clear error when ``load()`` is given a truncated or empty file.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv

from sb3_natural.common.checks import (
    check_at_least_one,
    check_base_args,
    check_bool,
    check_discount,
    check_finite_rollout,
    check_int,
    check_rate,
    check_samples_independent,
    check_terminal_observations,
    nonfinite_observations_named,
)
from sb3_natural.common.heads import ActorHead, actor_modules, normalization_layers, value_modules
from sb3_natural.common.scores import batch_size_of
from sb3_natural.common.updates import fit_critic, make_optimizer, normalize_advantages, refresh_running_statistics
from sb3_natural.learning import CheckedLearnMixin
from sb3_natural.saving import ClearLoadErrorsMixin


def critic_parameters(policy: ActorCriticPolicy, head: ActorHead) -> list[th.nn.Parameter]:
    """Trainable parameters of ``policy`` that the actor (``head.params``) does not depend on.

    The critic optimizer is built over exactly these, so the value loss never moves the actor: with a
    shared features extractor (CnnPolicy's default) the extractor is the actor's, and the critic fits
    the value branch on top of it (as sb3-contrib's TRPO, which clears the actor's gradients before
    its critic step).
    """
    actor_ids = {id(p) for p in head.params}
    return [p for p in policy.parameters() if p.requires_grad and id(p) not in actor_ids]


class NaturalOnPolicyAlgorithm(ClearLoadErrorsMixin, CheckedLearnMixin, OnPolicyAlgorithm):
    """SB3's ``OnPolicyAlgorithm`` with the pieces every on-policy class of this package shares.

    Subclasses keep their explicit SB3-style constructor and call ``super().__init__`` with SB3's
    arguments; this constructor checks the shared ones (``learning_rate``, ``n_steps``, ``gamma``,
    ``gae_lambda``). In ``_setup_model`` they call :meth:`_setup_critic`; ``train`` uses
    :meth:`_update_schedules`, :meth:`_rollout_batch`, :meth:`_fit_critic` and :meth:`_record_update`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    policy: ActorCriticPolicy
    n_critic_updates: int
    batch_size: int

    def __init__(self, policy: Any, env: Any, **kwargs: Any) -> None:
        kwargs["learning_rate"] = check_rate("learning_rate", kwargs["learning_rate"])
        check_at_least_one(n_steps=kwargs["n_steps"])
        check_discount(gamma=kwargs["gamma"], gae_lambda=kwargs["gae_lambda"])
        check_bool(use_sde=kwargs.get("use_sde", False))
        check_int(-1, sde_sample_freq=kwargs.get("sde_sample_freq", -1))  # -1: only at a rollout's start
        kwargs = check_base_args(kwargs)  # policy_kwargs, buffers, seed, verbose, device, tensorboard_log, stats_window_size
        super().__init__(policy, env, **kwargs)

    @staticmethod
    def _check_critic_args(n_critic_updates: int, batch_size: int) -> None:
        check_int(0, n_critic_updates=n_critic_updates)
        check_at_least_one(batch_size=batch_size)

    # ------------------------------------------------------------------ setup
    def _group_schedules(self) -> list[Schedule]:
        """One learning-rate schedule per param group of ``policy.optimizer``, in order."""
        raise NotImplementedError

    def _setup_critic(self, actor_group: bool = False) -> None:
        """The actor view (:class:`ActorHead`) and the policy's optimizer over the critic's parameters
        (:func:`critic_parameters`), preceded by an actor group when ``actor_group`` (REINFORCE).
        A BatchNorm layer without running statistics is refused here (:func:`check_samples_independent`:
        it would normalize by the batch's statistics in every mode)."""
        check_samples_independent(actor_modules(self.policy) + value_modules(self.policy), training=False)
        self._norm_layers = normalization_layers(self.policy)
        self._head = ActorHead(self.policy)
        self._critic_params = critic_parameters(self.policy, self._head)
        groups: list[list[th.nn.Parameter]] = [list(self._head.params)] if actor_group else []
        groups.append(self._critic_params)
        schedules = self._group_schedules()
        self.policy.optimizer = make_optimizer(
            self.policy, [{"params": params, "lr": schedule(1.0)} for params, schedule in zip(groups, schedules, strict=True)]
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_head", "_critic_params", "_norm_layers"]

    # ------------------------------------------------------------------ collection
    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """SB3's collection; a NaN/inf observation becomes a clear error instead of a distribution error."""
        with nonfinite_observations_named(lambda: self._last_obs):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        # Called right after env.step, before SB3 bootstraps a truncated episode's value from its
        # terminal_observation: a NaN/inf there would silently enter the stored reward.
        if dones is not None:
            check_terminal_observations(infos, dones)
        super()._update_info_buffer(infos, dones)

    # ------------------------------------------------------------------ train
    def _start_update(self) -> None:
        """The start of every ``train()``: the policy in evaluation mode for the whole update (see the
        module's docstring and :meth:`_refresh_running_statistics`), then :meth:`_update_schedules`."""
        self.policy.set_training_mode(False)
        self._update_schedules()

    def _refresh_running_statistics(self, obs: Any, actions: th.Tensor) -> None:
        """After an update that moved the actor (not after a skipped or rejected step, which leaves the
        policy as it was): one forward pass of the batch, ``evaluate_actions``, with the policy's BatchNorm
        layers in training mode and no gradient (:func:`refresh_running_statistics`), so their running
        statistics follow the features; a policy without them is not called. Skipped for a batch of one
        sample (torch's BatchNorm refuses it in training mode)."""
        if batch_size_of(obs) > 1:
            refresh_running_statistics(self._norm_layers, lambda: self.policy.evaluate_actions(obs, actions))

    def _update_schedules(self) -> None:
        """Set each optimizer group's rate from its schedule; log ``train/learning_rate`` (``learning_rate``'s
        schedule, whatever it drives in the class) and ``train/critic_learning_rate``."""
        progress = self._current_progress_remaining
        self.logger.record("train/learning_rate", self.lr_schedule(progress))
        for group, schedule in zip(self.policy.optimizer.param_groups, self._group_schedules(), strict=True):
            group["lr"] = schedule(progress)
        if self._critic_optimizer_used():
            self.logger.record("train/critic_learning_rate", self._group_schedules()[-1](progress))

    def _critic_optimizer_used(self) -> bool:
        """Whether the critic is fitted by ``policy.optimizer`` (ACKTR's joint K-FAC step is not)."""
        return True

    def _flat_actions(self, actions: th.Tensor) -> th.Tensor:
        """Actions as the distributions take them: Discrete ``[N, 1]`` floats -> ``[N]`` ints."""
        return actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else actions

    def _rollout_batch(self, normalize_advantage: bool) -> tuple[RolloutBufferSamples, th.Tensor, th.Tensor]:
        """The whole rollout as one batch (checked for NaN/inf), its actions and (normalized) advantages."""
        buf = self.rollout_buffer
        check_finite_rollout(buf.observations, buf.rewards)
        data = next(buf.get(batch_size=None))
        adv = normalize_advantages(data.advantages) if normalize_advantage else data.advantages
        return data, self._flat_actions(data.actions), adv

    def _fit_critic(self, obs: Any, returns: th.Tensor) -> float:
        """``n_critic_updates`` epochs of the value loss over the critic's parameters only (:func:`fit_critic`)."""
        return fit_critic(self.policy, obs, returns, self.n_critic_updates, self.batch_size, critic_params=self._critic_params)

    def _record_update(self, stats: dict[str, Any], value_loss: float, explained_var: float | None) -> None:
        """Count the update and log its statistics and the keys every class shares (docs/metrics.md)."""
        self._n_updates += 1
        for key, value in stats.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/value_loss", value_loss)
        if explained_var is not None:
            self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def _rollout_explained_variance(self) -> float:
        buf = self.rollout_buffer
        return float(explained_variance(buf.values.flatten(), buf.returns.flatten()))
