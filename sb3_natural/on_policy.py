"""The on-policy base shared by NAC, FisherTRPO and REINFORCE (orchestration only; math is in ``common/``).

What is the same in every on-policy class lives here once:

* the policy aliases (SB3's ActorCriticPolicy family);
* the actor view (:class:`~sb3_natural.common.heads.ActorHead`) and ONE rule for the critic's
  parameters: the critic optimizer holds every trainable parameter that the action distribution does
  NOT depend on (sb3-contrib's TRPO semantics). A shared features extractor belongs to the actor, so
  the critic's own epochs never move a parameter the actor depends on;
* the NaN/inf guards of rollout collection, including the ``terminal_observation`` of an episode cut
  by a time limit, which SB3 feeds into the value bootstrap;
* a clear error when ``load()`` is given a truncated or empty file.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from sb3_natural.common.heads import ActorHead
from sb3_natural.common.updates import fit_critic
from sb3_natural.common.weighting import check_terminal_observations, nonfinite_observations_named
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


class NaturalOnPolicyAlgorithm(ClearLoadErrorsMixin, OnPolicyAlgorithm):
    """SB3's ``OnPolicyAlgorithm`` with the pieces every on-policy class of this package shares."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    policy: ActorCriticPolicy
    n_critic_updates: int
    batch_size: int

    def _setup_actor_head(self) -> list[th.nn.Parameter]:
        """Build the actor view; return the critic's parameters (:func:`critic_parameters`)."""
        self._head = ActorHead(self.policy)
        self._critic_params = critic_parameters(self.policy, self._head)
        return self._critic_params

    def _fit_critic(self, obs: Any, returns: th.Tensor) -> float:
        """``n_critic_updates`` epochs of the value loss over the critic's parameters only (:func:`fit_critic`)."""
        return fit_critic(self.policy, obs, returns, self.n_critic_updates, self.batch_size, critic_params=self._critic_params)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_head", "_critic_params"]

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
