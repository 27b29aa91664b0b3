"""Per-sample scores: the fast path equals the naive loop, exactly, for every policy type."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from conftest import ACTION_KINDS, make_obs, make_policy
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_natural.common.heads import ActorHead, actor_parameters, output_distribution
from sb3_natural.common.scores import per_sample_grads, per_sample_scores


def _batch(policy, n, seed=0):
    head = ActorHead(policy)
    obs = make_obs(policy, n, seed=seed)
    gen = th.Generator().manual_seed(seed)
    actions = head.dist.sample(head(obs), generator=gen)
    return head, obs, actions


@pytest.mark.parametrize("obs_kind", ["box", "dict"])
@pytest.mark.parametrize("action_kind", ACTION_KINDS)
def test_scores_match_naive_loop(action_kind, obs_kind):
    policy = make_policy(action_kind, obs_kind)
    head, obs, actions = _batch(policy, 17)
    loop = per_sample_scores(head, obs, actions, method="loop")
    fast = per_sample_scores(head, obs, actions, method="layerwise", chunk_size=5)
    vm = per_sample_scores(head, obs, actions, method="vmap")
    assert loop.shape == (17, head.num_params)
    assert loop.abs().max() > 0
    th.testing.assert_close(fast, loop, rtol=1e-10, atol=1e-12)
    th.testing.assert_close(vm, loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("action_kind", ["discrete", "box"])
def test_scores_cnn_policy(action_kind):
    policy = make_policy(action_kind, "image", net_arch=[])
    head, obs, actions = _batch(policy, 4)
    names = " ".join(head.names)
    assert "features_extractor.cnn" in names
    loop = per_sample_scores(head, obs, actions, method="loop")
    fast = per_sample_scores(head, obs, actions)
    th.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("action_kind", ACTION_KINDS)
def test_log_prob_matches_sb3(action_kind):
    policy = make_policy(action_kind, dtype=th.float32)
    head, obs, actions = _batch(policy, 9)
    obs = obs.float()
    ours = head.dist.log_prob(head(obs), actions)
    sb3 = policy.get_distribution(obs).log_prob(actions.float() if action_kind != "discrete" else actions)
    th.testing.assert_close(ours, sb3, rtol=1e-5, atol=1e-5)


def test_scores_sum_is_batched_gradient():
    policy = make_policy("box")
    head, obs, actions = _batch(policy, 11)
    scores = per_sample_scores(head, obs, actions)
    logp = head.dist.log_prob(head(obs), actions).sum()
    total = head.flat(list(th.autograd.grad(logp, head.params)))
    th.testing.assert_close(scores.sum(0), total)


def test_squashed_gsde_scores():
    policy = make_policy("box_sde", squash_output=True)
    assert output_distribution(policy).squash
    head, obs, actions = _batch(policy, 6)
    assert actions.abs().max() < 1
    th.testing.assert_close(per_sample_scores(head, obs, actions), per_sample_scores(head, obs, actions, method="loop"))


@pytest.mark.parametrize("share", [True, False])
def test_actor_parameters_exclude_value_branch(share):
    policy = make_policy("discrete", share_features_extractor=share)
    names, params = actor_parameters(policy)
    assert all("value_net" not in n and "value_net" not in n for n in names)
    assert not any(n.startswith("mlp_extractor.value_net") for n in names)
    assert any(n.startswith("action_net") for n in names)
    # The value head must not influence the actor outputs: perturbing it changes nothing.
    head = ActorHead(policy)
    obs = make_obs(policy, 4)
    z0 = head(obs).detach()
    with th.no_grad():
        for p in policy.value_net.parameters():
            p.add_(1.0)
    th.testing.assert_close(head(obs), z0)
    value_ids = {id(p) for p in policy.value_net.parameters()} | {id(p) for p in policy.mlp_extractor.value_net.parameters()}
    assert not any(id(p) in value_ids for p in params)


def test_actor_parameters_found_from_graph_not_names():
    """A parameter called 'value_scale' that the actor uses is kept; an unused one is dropped."""

    policy = make_policy("box")
    policy.value_scale = th.nn.Parameter(th.ones(1, dtype=th.float64))  # used by the actor below
    policy.unused_policy_param = th.nn.Parameter(th.ones(1, dtype=th.float64))
    original = policy.action_net.forward
    policy.action_net.forward = lambda x: original(x) * policy.value_scale  # type: ignore[method-assign]
    names, _ = actor_parameters(policy)
    assert "value_scale" in names
    assert "unused_policy_param" not in names
    head, obs, actions = _batch(policy, 5)
    th.testing.assert_close(per_sample_scores(head, obs, actions), per_sample_scores(head, obs, actions, method="loop"))


def test_bad_inputs_give_clear_errors():
    policy = make_policy("box")
    head, obs, actions = _batch(policy, 4)
    with pytest.raises(ValueError, match="actions"):
        per_sample_scores(head, obs, actions[:3])
    with pytest.raises(ValueError, match=r"actions must have shape \[N, 2\]"):
        per_sample_scores(head, obs, actions[:, :1])
    with pytest.raises(ValueError, match="method must be one of"):
        per_sample_scores(head, obs, actions, method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample_scores(head, obs, actions, chunk_size=0)
    with pytest.raises(ValueError, match="out must be"):
        per_sample_scores(head, obs, actions, out=th.empty(4, 3, dtype=th.float64))
    with pytest.raises(TypeError, match="ActorCriticPolicy"):
        ActorHead(th.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"policy must be an SB3 ActorCriticPolicy .*, got Linear"):
        output_distribution(th.nn.Linear(2, 2))  # type: ignore[arg-type]  # was an AttributeError


@pytest.mark.parametrize("method", ["layerwise", "vmap", "loop"])
def test_per_sample_grads_needs_one_value_per_sample(method):
    policy = make_policy("discrete")
    head = ActorHead(policy)
    obs = make_obs(policy, 4)
    good = per_sample_grads(head, obs, lambda z: z[:, 0], method=method)  # row-separable: accepted
    assert good.shape == (4, head.num_params)
    with pytest.raises(
        ValueError, match=r"fn must return one value per sample .*, got \((4|1), 3\) for z of shape \((4|1), 3\)"
    ):
        per_sample_grads(head, obs, lambda z: z, method=method)  # [N, d]: was summed or refused by autograd


def test_unsupported_distribution_error():
    policy = make_policy("discrete")
    policy.action_dist = object()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="Unsupported action distribution object"):
        output_distribution(policy)


def test_out_buffer_reused():
    policy = make_policy("discrete")
    head, obs, actions = _batch(policy, 8)
    buf = th.full((8, head.num_params), float("nan"), dtype=th.float64)
    res = per_sample_scores(head, obs, actions, out=buf)
    assert res.data_ptr() == buf.data_ptr()
    th.testing.assert_close(res, per_sample_scores(head, obs, actions, method="loop"))


@settings(max_examples=12, deadline=None)
@given(
    action_kind=st.sampled_from(ACTION_KINDS),
    hidden=st.lists(st.integers(1, 9), min_size=0, max_size=3),
    n=st.integers(1, 13),
    seed=st.integers(0, 10_000),
    activation=st.sampled_from([th.nn.Tanh, th.nn.ReLU, th.nn.ELU]),
)
def test_property_scores_random_nets(action_kind, hidden, n, seed, activation):
    policy = make_policy(action_kind, net_arch=hidden, seed=seed, activation_fn=activation)
    head, obs, actions = _batch(policy, n, seed=seed)
    th.testing.assert_close(
        per_sample_scores(head, obs, actions, chunk_size=4), per_sample_scores(head, obs, actions, method="loop")
    )


def test_numpy_inputs_accepted():
    policy = make_policy("discrete", dtype=th.float32)
    obs = np.stack([policy.observation_space.sample() for _ in range(5)])
    actions = np.array([0, 1, 2, 1, 0])
    scores = per_sample_scores(policy, obs, actions)
    assert scores.shape[0] == 5 and th.isfinite(scores).all()
    assert isinstance(policy.action_space, spaces.Discrete)
