"""TD3/DDPG policies with a choice of actor output: SB3's tanh, or linear (for inverting gradients).

With ``actor_output="linear"`` the final tanh of the actor is removed (Hausknecht & Stone 2016
keep the action in bounds with inverting gradients instead of a squashing function); actions are
clipped to [-1, 1] (SB3's scaled action space) only when acting, never in the actor update.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.td3.policies import Actor, CnnPolicy, MultiInputPolicy, TD3Policy
from torch import nn

ACTOR_OUTPUTS = ("tanh", "linear")


class _ActorOutputMixin:
    """Adds ``actor_output`` ("tanh" | "linear") to an SB3 TD3 policy."""

    actor_output: str

    def __init__(self, *args: Any, actor_output: str = "tanh", **kwargs: Any) -> None:
        if actor_output not in ACTOR_OUTPUTS:
            raise ValueError(f"actor_output must be one of {ACTOR_OUTPUTS}, got {actor_output!r}")
        self.actor_output = actor_output
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)  # type: ignore[misc]
        if self.actor_output == "linear":
            layers = list(actor.mu)
            if layers and isinstance(layers[-1], nn.Tanh):
                actor.mu = nn.Sequential(*layers[:-1])
        return actor

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data["actor_output"] = self.actor_output
        return data

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        actions = super()._predict(observation, deterministic)  # type: ignore[misc]
        return actions.clamp(-1.0, 1.0) if self.actor_output == "linear" else actions


class MlpPolicy(_ActorOutputMixin, TD3Policy):
    """SB3's TD3 MlpPolicy with ``actor_output``."""


class CnnChainPolicy(_ActorOutputMixin, CnnPolicy):
    """SB3's TD3 CnnPolicy with ``actor_output``."""


class MultiInputChainPolicy(_ActorOutputMixin, MultiInputPolicy):
    """SB3's TD3 MultiInputPolicy with ``actor_output``."""
