"""CnnPolicy on image observations, for every class and option of the model list (tiny budgets)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from model_list import MODEL_LIST, ModelCase
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import DummyVecEnv


class _Rewarded(gym.Wrapper):
    """FakeImageEnv pays 0 always; reward the first action (Discrete) or a positive one (Box)."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        reward = (
            float(np.asarray(action).ravel()[0] == 0)
            if isinstance(self.action_space, gym.spaces.Discrete)
            else float(np.asarray(action).ravel()[0])
        )
        return obs, reward, terminated, truncated, info


def _image_env(discrete: bool):
    def make():
        env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=discrete)
        env.observation_space.seed(0)
        return _Rewarded(env)

    return DummyVecEnv([make])


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_cnn_policy(case: ModelCase):
    env = _image_env(discrete=case.env_id == "CartPole-v1")
    extra = {"buffer_size": 200} if case.off_policy else {}
    policy_kwargs = {"net_arch": [16], "features_extractor_kwargs": {"features_dim": 16}}
    if case.kwargs.get("solver") == "dense":  # the P x P Fisher of a CNN would not fit in memory
        with pytest.raises(ValueError, match="solver='dense'"):
            case.build(env=env, policy="CnnPolicy", policy_kwargs=policy_kwargs)
        return
    model = case.build(env=env, policy="CnnPolicy", policy_kwargs=policy_kwargs, **extra)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(case.steps)
    assert model._n_updates >= 1
    after = list(model.policy.parameters())
    assert all(bool(th.isfinite(p).all()) for p in after)
    assert any(not th.equal(a, b) for a, b in zip(before, after, strict=True))
