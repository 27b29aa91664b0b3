"""Shared fixtures: small SB3 policies of every supported kind, in float64."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

th.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

OBS_BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
OBS_DICT = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, (2,), np.float32), "flag": spaces.Discrete(3)})
OBS_IMAGE = spaces.Box(0, 255, (1, 36, 36), np.uint8)

ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, (2,), np.float32),
    "box_sde": spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(3),
}
ACTION_KINDS = list(ACTION_SPACES)


def make_policy(
    action_kind: str,
    obs_kind: str = "box",
    net_arch: list[int] | None = None,
    seed: int = 0,
    dtype: th.dtype = th.float64,
    **kwargs,
) -> ActorCriticPolicy:
    """A freshly initialized policy (no env needed), converted to ``dtype``."""
    th.manual_seed(seed)
    action_space = ACTION_SPACES[action_kind]
    kw = dict(lr_schedule=lambda _: 1e-3, net_arch=[8, 8] if net_arch is None else net_arch, **kwargs)
    if action_kind == "box_sde":
        kw.update(use_sde=True, log_std_init=-0.5)
    if action_kind == "box":
        kw.setdefault("log_std_init", -0.3)
    if obs_kind == "box":
        policy = ActorCriticPolicy(OBS_BOX, action_space, **kw)
    elif obs_kind == "dict":
        policy = MultiInputActorCriticPolicy(OBS_DICT, action_space, **kw)
    elif obs_kind == "image":
        kw.setdefault("features_extractor_kwargs", {"features_dim": 8})
        policy = ActorCriticCnnPolicy(OBS_IMAGE, action_space, **kw)
    else:
        raise ValueError(obs_kind)
    # Larger than SB3's 0.01 output gain so that the distributions are not nearly uniform.
    with th.no_grad():
        policy.action_net.weight.mul_(30.0)
    return policy.to(dtype)


def make_obs(policy: ActorCriticPolicy, n: int, seed: int = 1):
    """``n`` observations as tensors (float64 where floating)."""
    from sb3_natural.common.heads import sample_observations

    obs_np = sample_observations(policy.observation_space, n, seed=seed)
    obs, _ = policy.obs_to_tensor(obs_np)
    return obs


@pytest.fixture(params=ACTION_KINDS)
def action_kind(request) -> str:
    return request.param
