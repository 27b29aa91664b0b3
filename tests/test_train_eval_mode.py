"""BatchNorm and Dropout in the policy (SB3's ``test_train_eval_mode``, for every class of the model list).

The on-policy updates run in evaluation mode: the per-sample scores, Fisher products and K-FAC
statistics are those of the policy the rollouts sampled from (BatchNorm by its running statistics,
dropout off); one training-mode forward of the rollout after an update that moved the actor refreshes
the running statistics. The off-policy classes keep SB3's TD3 semantics (training mode in ``train()``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_natural import ACKTR, NAC, REINFORCE, FisherTRPO
from sb3_natural.common import KFAC, ActorHead, AnalyticFVP, fisher_rows, per_sample_scores, score_gram
from sb3_natural.common.checks import batch_norm_layers, check_samples_independent
from sb3_natural.common.heads import (
    actor_modules,
    normalization_layers,
    running_statistics_frozen,
    value_modules,
)
from sb3_natural.common.updates import refresh_running_statistics
from tests.conftest import make_policy
from tests.model_list import MODEL_LIST, ON_POLICY_CASES, ModelCase


class BatchNormDropoutExtractor(BaseFeaturesExtractor):
    """Flatten, Linear, BatchNorm1d, Dropout, Tanh (SB3's test uses the same kind of extractor)."""

    def __init__(self, observation_space, track_running_stats: bool = True) -> None:
        super().__init__(observation_space, 8)
        n_in = int(np.prod(observation_space.shape))
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_in, 8),
            nn.BatchNorm1d(8, track_running_stats=track_running_stats),
            nn.Dropout(0.3),
            nn.Tanh(),
        )

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.net(obs)


def _build(case: ModelCase, **policy_kwargs):
    kwargs = {"net_arch": [16], "features_extractor_class": BatchNormDropoutExtractor, **policy_kwargs}
    return case.build(policy_kwargs=kwargs)


def _batch_norms(model) -> list[nn.BatchNorm1d]:
    seen, out = set(), []
    for m in model.policy.modules():
        if isinstance(m, nn.BatchNorm1d) and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    assert out
    return out


def _stats(model) -> list[th.Tensor]:
    return [t.detach().clone() for b in _batch_norms(model) for t in (b.running_mean, b.running_var, b.bias)]


@pytest.mark.parametrize("case", MODEL_LIST, ids=lambda c: c.id)
def test_batch_norm_learns_and_round_trips(case: ModelCase) -> None:
    model = _build(case)
    # building the model (the probes that find the actor's and the value's parameters) moves no statistic
    assert all(int(b.num_batches_tracked) == 0 for b in _batch_norms(model))
    before = _stats(model)
    obs = model.get_env().reset()
    first, _ = model.predict(obs, deterministic=True)
    for _ in range(3):  # dropout is off and the statistics are left alone when predicting
        again, _ = model.predict(obs, deterministic=True)
        np.testing.assert_array_equal(first, again)
    for x, y in zip(before, _stats(model), strict=True):
        assert th.equal(x, y)
    model.learn(case.steps * 2)
    after = _stats(model)
    tracked = [int(b.num_batches_tracked) > 0 for b in _batch_norms(model)]
    # every layer of an on-policy policy; TD3's targets copy the running statistics, not the count (SB3)
    assert all(tracked) if not case.off_policy else any(tracked)
    running_mean_moved = [not th.equal(x, y) for x, y in list(zip(before, after, strict=True))[0::3]]
    bias_moved = [not th.equal(x, y) for x, y in list(zip(before, after, strict=True))[2::3]]
    assert any(running_mean_moved) and any(bias_moved)

    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    loaded = type(model).load(buf, env=model.get_env(), device="cpu")
    for x, y in zip(_stats(model), _stats(loaded), strict=True):
        assert th.equal(x, y)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)
    loaded.learn(case.steps, reset_num_timesteps=False)


@pytest.mark.parametrize("case", [c for c in ON_POLICY_CASES if c.cls is not REINFORCE], ids=lambda c: c.id)
def test_one_statistics_refresh_per_update(case: ModelCase) -> None:
    """The critic's epochs run in evaluation mode: with a shared extractor, the only forward passes that
    move the actor's BatchNorm statistics are the one refresh per update that moved the actor."""
    model = _build(case)
    moved = []
    train = model.train

    def counted_train() -> None:
        params = [p.detach().clone() for p in model._head.params]
        train()
        moved.append(any(not th.equal(p, q) for p, q in zip(params, model._head.params, strict=True)))

    model.train = counted_train
    model.learn(case.steps * 3)
    assert moved and any(moved)
    for b in _batch_norms(model):
        assert int(b.num_batches_tracked) == sum(moved)


def test_skipped_step_leaves_statistics() -> None:
    """A skipped NAC step (w = 0) leaves the actor's parameters and its BatchNorm statistics as they were."""
    case = next(c for c in ON_POLICY_CASES if c.id == "nac_lstsq")
    model = _build(case)
    model.learn(case.steps)
    model._natural_gradient = lambda obs, actions, adv, weights: (th.zeros(model._head.num_params), {})
    stats, params = _stats(model), [p.detach().clone() for p in model._head.params]
    model.learn(case.steps, reset_num_timesteps=False)
    for x, y in zip(params, model._head.params, strict=True):
        assert th.equal(x, y)
    for x, y in list(zip(stats, _stats(model), strict=True))[0::3]:  # running statistics (bias: the critic may move it)
        assert th.equal(x, y)


@pytest.mark.parametrize("cls", [NAC, FisherTRPO, REINFORCE, ACKTR])
def test_batch_norm_without_running_statistics_refused(cls) -> None:
    with pytest.raises(
        ValueError, match=r"BatchNorm1d layer \(pi_features_extractor\.net\.2\) built with track_running_stats=False"
    ):
        cls(
            "MlpPolicy",
            "CartPole-v1",
            policy_kwargs={
                "features_extractor_class": BatchNormDropoutExtractor,
                "features_extractor_kwargs": {"track_running_stats": False},
            },
        )


def _bn_policy() -> nn.Module:
    return make_policy("box", net_arch=[4], features_extractor_class=BatchNormDropoutExtractor, features_extractor_kwargs={})


def test_pure_functions_refuse_training_mode_batch_norm() -> None:
    policy = _bn_policy()
    obs = th.randn(6, 3, dtype=th.float64)
    actions = th.randn(6, 2, dtype=th.float64)
    policy.set_training_mode(True)
    calls = [
        lambda: per_sample_scores(policy, obs, actions),
        lambda: score_gram(policy, obs, actions),
        lambda: fisher_rows(policy, obs),
        lambda: AnalyticFVP(policy, obs),
        lambda: KFAC(policy).record(obs),
        lambda: KFAC.for_actor_critic(policy).record(obs),
        lambda: KFAC.for_value(policy).record(obs),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"BatchNorm1d layer \(.*\) in training mode.*set_training_mode\(False\)"):
            call()
    policy.set_training_mode(False)
    for call in calls:
        call()


def test_eval_mode_scores_are_single_sample_gradients() -> None:
    """In evaluation mode BatchNorm is a per-sample affine map: the fast scores equal one autograd call per
    sample (float64), with nonzero running statistics so the normalization is not the identity."""
    policy = _bn_policy()
    for b in policy.modules():
        if isinstance(b, nn.BatchNorm1d):
            b.running_mean.copy_(th.linspace(-0.5, 0.5, 8, dtype=th.float64))
            b.running_var.copy_(th.linspace(0.5, 2.0, 8, dtype=th.float64))
    policy.set_training_mode(False)
    obs = th.randn(5, 3, dtype=th.float64)
    actions = th.randn(5, 2, dtype=th.float64)
    fast = per_sample_scores(policy, obs, actions)
    loop = per_sample_scores(policy, obs, actions, method="loop")
    th.testing.assert_close(fast, loop, rtol=1e-10, atol=1e-12)
    params = [p for p in policy.parameters() if p.requires_grad]
    for i in (0, 3):  # an independent reference: the policy's own log_prob of one sample
        # SB3's own path from features to distribution (its public one casts observations to float32)
        latent = policy.mlp_extractor.forward_actor(policy.pi_features_extractor(obs[i : i + 1]))
        dist = policy._get_action_dist_from_latent(latent)
        grads = th.autograd.grad(dist.log_prob(actions[i : i + 1]).sum(), params, allow_unused=True)
        ref = {id(p): g for p, g in zip(params, grads, strict=True) if g is not None}
        head = ActorHead(policy)
        expected = head.flat([ref.get(id(p), th.zeros_like(p)) for p in head.params])
        th.testing.assert_close(fast[i], expected, rtol=1e-10, atol=1e-12)


def test_refresh_and_frozen_helpers() -> None:
    policy = _bn_policy()
    bn = next(m for m in policy.modules() if isinstance(m, nn.BatchNorm1d))
    drop = next(m for m in policy.modules() if isinstance(m, nn.Dropout))
    policy.set_training_mode(False)
    obs = th.randn(16, 3, dtype=th.float64)
    state = th.random.get_rng_state()
    assert refresh_running_statistics(normalization_layers(policy), lambda: policy.pi_features_extractor(obs))
    assert th.equal(state, th.random.get_rng_state())  # dropout stayed off: no random number drawn
    assert int(bn.num_batches_tracked) == 1 and not bn.training and not drop.training
    assert not th.equal(bn.running_mean, th.zeros_like(bn.running_mean))
    policy.set_training_mode(True)
    with running_statistics_frozen(policy):
        assert not bn.training and drop.training
        policy.pi_features_extractor(obs)
    assert bn.training and int(bn.num_batches_tracked) == 1
    assert refresh_running_statistics(policy, lambda: policy.pi_features_extractor(obs))  # a module: its layers
    assert int(bn.num_batches_tracked) == 2 and bn.training  # the mode each layer had is restored
    assert not refresh_running_statistics(
        normalization_layers(nn.Linear(2, 2)), lambda: pytest.fail("called without a norm layer")
    )


def test_check_samples_independent_judges_the_given_mode() -> None:
    policy = _bn_policy()
    policy.set_training_mode(False)
    check_samples_independent(actor_modules(policy))
    with pytest.raises(ValueError, match="in training mode"):
        check_samples_independent(actor_modules(policy), training=True)
    policy.set_training_mode(True)
    check_samples_independent(actor_modules(policy), training=False)
    check_samples_independent([("layer", nn.LayerNorm(3))], training=True)  # per-sample normalization
    with pytest.raises(ValueError, match=r"BatchNorm1d layer \(features_extractor\.net\.2\) in training mode"):
        check_samples_independent(policy, training=True)  # a module alone: searched whole
    # the shared extractor's layer once, under the actor's name; the cached list is judged the same way
    layers = batch_norm_layers(actor_modules(policy) + value_modules(policy))
    assert [name for name, _ in layers] == ["pi_features_extractor.net.2"]
    check_samples_independent(layers, training=False)
    with pytest.raises(ValueError, match=r"\(pi_features_extractor\.net\.2\) in training mode"):
        check_samples_independent(layers)
