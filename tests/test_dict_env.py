"""MultiInputPolicy with a Dict observation space, for every class and option of the model list."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from model_list import MODEL_LIST, ModelCase
from stable_baselines3.common.vec_env import DummyVecEnv


class DictEnv(gym.Env):
    """Dict observations (a vector, an image-free Discrete flag, a MultiBinary mask); the reward prefers
    actions near the vector's mean. Discrete actions for ``discrete=True``, else a Box."""

    def __init__(self, discrete: bool) -> None:
        self.observation_space = spaces.Dict(
            {
                "vec": spaces.Box(-1.0, 1.0, (3,), np.float32),
                "flag": spaces.Discrete(3),
                "mask": spaces.MultiBinary(2),
            }
        )
        self.action_space = spaces.Discrete(2) if discrete else spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        self._obs = self.observation_space.sample()
        return self._obs, {}

    def step(self, action):
        target = float(self._obs["vec"].mean())
        a = float(action) if np.ndim(action) == 0 else float(np.asarray(action).ravel()[0])
        reward = -abs(a - target)
        self.t += 1
        self._obs = self.observation_space.sample()
        return self._obs, reward, False, self.t >= 10, {}


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_multi_input_policy(case: ModelCase, tmp_path):
    discrete = case.env_id == "CartPole-v1"
    env = DummyVecEnv([lambda: DictEnv(discrete), lambda: DictEnv(discrete)])
    model = case.build(env=env, policy="MultiInputPolicy")
    model.learn(max(case.steps, 64))
    assert model._n_updates >= 1
    assert all(bool(th.isfinite(p).all()) for p in model.policy.parameters())
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "m")
    loaded = case.cls.load(tmp_path / "m", env=env, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
