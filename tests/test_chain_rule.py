"""DDPG/TD3 with the explicit chain rule: SB3 parity, inverting gradients, bad transforms, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DDPG as SB3DDPG
from stable_baselines3 import TD3 as SB3TD3
from torch import nn

from sb3_natural import DDPG, TD3
from sb3_natural.common.chain_rule import action_gradient, chain_rule_actor_backward, invert_gradients

KW = {"learning_starts": 100, "seed": 0, "device": "cpu", "policy_kwargs": {"net_arch": [16, 16]}}


def test_invert_gradients_hand_example():
    low, high = th.tensor([-1.0, -1.0]), th.tensor([1.0, 1.0])
    a = th.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, -0.5], [1.5, -2.0]])  # inside, at, inside, beyond
    g = th.tensor([[2.0, -2.0], [2.0, -2.0], [-4.0, 4.0], [2.0, -2.0]])
    out = invert_gradients(a, g, low, high)
    expected = th.tensor(
        [
            [2.0 * (1 - 0) / 2, -2.0 * (0 + 1) / 2],  # halfway: half the push
            [0.0, 0.0],  # at the bound it is pushed toward: no push
            [-4.0 * (0.5 + 1) / 2, 4.0 * (1 - -0.5) / 2],  # pushed away from the near bound: scaled by the far room
            [2.0 * (1 - 1.5) / 2, -2.0 * (-2 + 1) / 2],  # beyond: the push is reversed (back inside)
        ]
    )
    th.testing.assert_close(out, expected)
    assert out[3, 0] < 0 and out[3, 1] > 0


@pytest.mark.parametrize("cls, ref_cls", [(TD3, SB3TD3), (DDPG, SB3DDPG)])
def test_actor_gradient_equals_sb3_actor_loss_gradient(cls, ref_cls):
    model = cls("MlpPolicy", "Pendulum-v1", **KW)
    model.learn(300)
    batch = model.replay_buffer.sample(64)
    obs = batch.observations
    actor, critic = model.actor, model.critic
    # SB3's actor loss, differentiated directly
    actor.optimizer.zero_grad()
    (-critic.q1_forward(obs, actor(obs)).mean()).backward()
    direct = [p.grad.clone() for p in actor.parameters()]
    # the chain rule
    actor.optimizer.zero_grad()
    actions = actor(obs)
    _, g = action_gradient(lambda a: critic.q1_forward(obs, a), actions)
    chain_rule_actor_backward(actions, g)
    for d, c in zip(direct, [p.grad for p in actor.parameters()], strict=True):
        th.testing.assert_close(c, d, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls, ref_cls", [(TD3, SB3TD3), (DDPG, SB3DDPG)])
def test_training_follows_sb3_with_the_same_seed(cls, ref_cls):
    ref = ref_cls("MlpPolicy", "Pendulum-v1", **KW)
    ref.learn(2000)
    ours = cls("MlpPolicy", "Pendulum-v1", **KW)
    ours.learn(2000)
    for a, b in zip(ref.policy.state_dict().values(), ours.policy.state_dict().values(), strict=True):
        th.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_invert_with_linear_actor_runs_and_logs():
    model = TD3("MlpPolicy", "Pendulum-v1", action_grad_transform="invert", actor_output="linear", **KW)
    assert not any(isinstance(m, nn.Tanh) for m in model.actor.mu)
    model.learn(600)
    logs = model.logger.name_to_value
    assert logs["train/action_grad_abs"] > 0
    assert 0.0 <= logs["train/action_grad_scaled_fraction"] <= 1.0
    assert "train/action_distance_to_bounds" in logs
    obs = model.get_env().reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(actions[0].astype(np.float32))


def test_tanh_actor_keeps_sb3_architecture():
    model = TD3("MlpPolicy", "Pendulum-v1", action_grad_transform="invert", **KW)
    assert isinstance(list(model.actor.mu)[-1], nn.Tanh)


def test_custom_transform_is_applied():
    calls = []

    def halve(actions, grad, low, high):
        calls.append(grad.shape)
        return 0.5 * grad

    model = TD3("MlpPolicy", "Pendulum-v1", action_grad_transform=halve, **KW)
    model.learn(200)
    assert calls and calls[0] == (model.batch_size, 1)
    assert model.logger.name_to_value["train/action_grad_scaled_fraction"] == 1.0


@pytest.mark.parametrize(
    "transform, match",
    [
        (lambda a, g, lo, hi: g[:, :0], "shaped like grad_a"),
        (lambda a, g, lo, hi: g * float("nan"), "NaN or inf"),
        (lambda a, g, lo, hi: 3.0, "shaped like grad_a"),
    ],
)
def test_bad_transform_gives_clear_error(transform, match):
    model = TD3("MlpPolicy", "Pendulum-v1", action_grad_transform=transform, **KW)
    with pytest.raises(ValueError, match=match):
        model.learn(200)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="action_grad_transform must be None, 'invert' or a callable"):
        TD3("MlpPolicy", "Pendulum-v1", action_grad_transform="clip")
    with pytest.raises(ValueError, match="actor_output must be one of"):
        TD3("MlpPolicy", "Pendulum-v1", actor_output="sigmoid")
