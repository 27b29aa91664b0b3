"""Every class and option of the model list trains with several envs, on every action space it declares."""

from __future__ import annotations

import pytest
import torch as th
from model_list import MODEL_LIST, ON_POLICY_CASES, ModelCase
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.vec_env import DummyVecEnv

SPACES = {
    "discrete": lambda: IdentityEnv(3, ep_length=8),
    "box": lambda: IdentityEnvBox(eps=0.5, ep_length=8),
    "multidiscrete": lambda: IdentityEnvMultiDiscrete(2, ep_length=8),
    "multibinary": lambda: IdentityEnvMultiBinary(2, ep_length=8),
}


def _finite(model) -> bool:
    return all(bool(th.isfinite(p).all()) for p in model.policy.parameters())


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_learn_with_two_envs(case: ModelCase):
    model = case.build(env=make_vec_env(case.env_id, n_envs=2, seed=0))
    model.learn(2 * case.steps)
    assert model._n_updates >= 1 and model.num_timesteps >= 2 * case.steps
    assert _finite(model)


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("case", ON_POLICY_CASES, ids=[c.id for c in ON_POLICY_CASES])
def test_every_declared_action_space(case: ModelCase, space):
    model = case.build(env=DummyVecEnv([SPACES[space], SPACES[space]]))
    model.learn(64)
    assert model._n_updates >= 1
    assert _finite(model)
    obs = model.get_env().reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert all(model.action_space.contains(a) for a in actions)


def test_off_policy_classes_reject_discrete_actions():
    off = next(c for c in MODEL_LIST if c.off_policy)
    with pytest.raises(AssertionError, match="action space"):
        off.build(env=DummyVecEnv([SPACES["discrete"]]))
