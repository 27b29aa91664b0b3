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


def _check_actor_output(actor_output: str) -> None:
    if actor_output not in ACTOR_OUTPUTS:
        raise ValueError(f"actor_output must be one of {ACTOR_OUTPUTS}, got {actor_output!r}")


class ChainActor(Actor):
    """SB3's TD3 ``Actor`` with ``actor_output``: ``"tanh"`` (SB3's) or ``"linear"`` (no final tanh).

    ``actor_output`` is one of its constructor parameters, so ``actor.save(path)`` and
    ``ChainActor.load(path)`` give back the same network. A linear actor's ``predict`` clips its
    actions to the scaled bounds [-1, 1] before rescaling them, as the policy's does.
    """

    def __init__(self, *args: Any, actor_output: str = "tanh", **kwargs: Any) -> None:
        _check_actor_output(actor_output)
        super().__init__(*args, **kwargs)
        self.actor_output = actor_output
        layers = list(self.mu)
        if actor_output == "linear" and layers and isinstance(layers[-1], nn.Tanh):
            # Dropping the last (parameter-free) layer keeps the state_dict keys unchanged.
            self.mu = nn.Sequential(*layers[:-1])

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["actor_output"] = self.actor_output
        return data

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        actions = super()._predict(observation, deterministic)
        return actions.clamp(-1.0, 1.0) if self.actor_output == "linear" else actions


class _ActorOutputMixin:
    """Adds ``actor_output`` ("tanh" | "linear") to an SB3 TD3 policy; its actors are :class:`ChainActor`."""

    actor_output: str
    actor_kwargs: dict[str, Any]
    device: th.device

    def __init__(self, *args: Any, actor_output: str = "tanh", **kwargs: Any) -> None:
        _check_actor_output(actor_output)
        self.actor_output = actor_output
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> ChainActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)  # type: ignore[attr-defined]
        return ChainActor(**actor_kwargs, actor_output=self.actor_output).to(self.device)

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
