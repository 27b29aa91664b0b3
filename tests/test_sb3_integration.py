"""Every algorithm with SB3's machinery: callbacks, progress bar, VecNormalize, several envs, evaluate_policy."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EveryNTimesteps
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_natural import DDPG, NAC, REINFORCE, TD3, FisherTRPO

CASES = [
    (NAC, "CartPole-v1", {"n_steps": 32}),
    (FisherTRPO, "Pendulum-v1", {"n_steps": 32, "batch_size": 32}),
    (REINFORCE, "CartPole-v1", {"n_episodes": 2}),
    (TD3, "Pendulum-v1", {"learning_starts": 50, "action_grad_transform": "invert", "actor_output": "linear"}),
    (DDPG, "Pendulum-v1", {"learning_starts": 50}),
]


class CountSteps(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.rollouts = 0

    def _on_step(self) -> bool:
        self.calls += 1
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1


@pytest.mark.parametrize("cls, env_id, kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_callbacks_progress_bar_vecnormalize_two_envs(cls, env_id, kwargs):
    env = VecNormalize(make_vec_env(env_id, n_envs=2, seed=0))
    model = cls("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [16]}, **kwargs)
    counter = CountSteps()
    every = CountSteps()
    model.learn(200, callback=CallbackList([counter, EveryNTimesteps(50, every)]), progress_bar=True)
    assert counter.calls >= 100  # one call per vectorized step of 2 envs
    assert counter.rollouts >= 1
    assert every.calls >= 3
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    assert math.isfinite(mean)


class _NanReward(gym.Wrapper):
    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        return obs, float("nan"), term, trunc, info


class _InfObservation(gym.ObservationWrapper):
    def observation(self, observation):
        return np.full_like(observation, np.inf)


@pytest.mark.parametrize(
    "wrapper, match", [(_NanReward, "rewards contain NaN"), (_InfObservation, "observations contain NaN")]
)
@pytest.mark.parametrize("cls, env_id, kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_non_finite_rollout_gives_clear_error(cls, env_id, kwargs, wrapper, match):
    model = cls("MlpPolicy", wrapper(gym.make(env_id)), seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **kwargs)
    with pytest.raises(ValueError, match=match):
        model.learn(64)
