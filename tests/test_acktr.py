"""ACKTR: parity with SB3's A2C, the joint K-FAC curvature, the step rule, failed updates, resuming."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_natural import ACKTR
from sb3_natural.common.kfac import KFAC
from sb3_natural.common.updates import all_finite, clip_by_norm, clipped_step_size, momentum_update


def _no_train_rollout(model):
    """Fill the model's rollout buffer (one rollout) without its update."""
    train = model.train
    model.train = lambda: None
    model.learn(model.n_steps * model.n_envs)
    model.train = train


ENVS = {
    "discrete": lambda: gym.make("CartPole-v1"),
    "box": lambda: gym.make("Pendulum-v1"),
    "multidiscrete": lambda: IdentityEnvMultiDiscrete(dim=3),
    "multibinary": lambda: IdentityEnvMultiBinary(dim=3),
}


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("space", [*ENVS, "box_sde"])
def test_identity_curvature_no_trust_region_and_sgd_is_a2c(space, share):
    """fisher="identity", target_kl=None, momentum=0: one ACKTR update equals SB3's A2C update with SGD
    on the same batch and weights (loss, entropy bonus, value loss, gradient clipping)."""
    sde = space == "box_sde"
    env_fn = ENVS["box" if sde else space]
    common = {
        "n_steps": 16, "learning_rate": 0.3, "gamma": 0.95, "gae_lambda": 0.9, "ent_coef": 0.01, "vf_coef": 0.4,
        "max_grad_norm": 0.5, "use_sde": sde, "seed": 0, "device": "cpu",
    }  # fmt: skip
    policy_kwargs = {"net_arch": [16], "share_features_extractor": share}
    a2c = A2C("MlpPolicy", env_fn(), policy_kwargs={**policy_kwargs, "optimizer_class": th.optim.SGD}, **common)
    acktr = ACKTR(
        "MlpPolicy", env_fn(), fisher="identity", target_kl=None, momentum=0.0, policy_kwargs=policy_kwargs, **common
    )
    acktr.policy.load_state_dict(a2c.policy.state_dict())
    _no_train_rollout(a2c)
    acktr.rollout_buffer = copy.deepcopy(a2c.rollout_buffer)
    acktr._current_progress_remaining = a2c._current_progress_remaining
    acktr.set_logger(configure(None, []))
    before = [p.detach().clone() for p in a2c.policy.parameters()]
    a2c.train()
    acktr.train()
    moved = 0.0
    for p0, pa, pb in zip(before, a2c.policy.parameters(), acktr.policy.parameters(), strict=True):
        th.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((pa - p0).detach().abs().max()))
    assert moved > 1e-4  # the update did move the parameters


# ----------------------------------------------------------------------------- joint K-FAC
class _LinearExtractor(BaseFeaturesExtractor):
    """A features extractor with parameters (Linear, or Linear + LayerNorm), shared by both heads."""

    def __init__(self, observation_space, features_dim=5, layer_norm=False):
        super().__init__(observation_space, features_dim)
        n = int(np.prod(observation_space.shape))
        layers = [nn.Flatten(), nn.Linear(n, features_dim), nn.Tanh()]
        if layer_norm:
            layers.append(nn.LayerNorm(features_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, obs):
        return self.net(obs)


def _dense_joint_fisher(kfac, policy, obs, vf_fisher_coef):
    """``J^T diag(M_pi, c) J`` of ``y = [z, v]`` at one observation, in K-FAC's parameter order (float64)."""
    from sb3_natural.common.heads import ActorHead

    head = ActorHead(policy)
    y = kfac.record(obs).y  # [1, d + 1]
    d = head.dist.out_dim
    rows = []
    for j in range(y.shape[1]):
        gs = th.autograd.grad(y[0, j], kfac.params, retain_graph=True, allow_unused=True)
        rows.append(th.cat([(th.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(kfac.params, gs, strict=True)]))
    jac = th.stack(rows)  # [d + 1, P]
    m = th.zeros(d + 1, d + 1, dtype=th.float64)
    m[:d, :d] = head.dist.fisher_matrix(y[:, :d].detach())[0]
    m[d, d] = vf_fisher_coef
    return jac.T @ m @ jac


@pytest.mark.parametrize(
    "env_id, extractor",
    [("CartPole-v1", None), ("Pendulum-v1", None), ("CartPole-v1", "linear"), ("Pendulum-v1", "layer_norm")],
)
def test_joint_kfac_blocks_are_exact_on_one_state(env_id, extractor):
    """On one state every diagonal block of the joint K-FAC (policy Fisher + c * value Gauss-Newton) equals
    the dense joint matrix's block (1e-10): Linear layers of each head, a shared extractor's layer (both
    heads' output gradients), the shared log_std and a shared LayerNorm (dense blocks)."""
    policy_kwargs: dict = {"net_arch": [4]}
    if extractor is not None:
        policy_kwargs.update(
            features_extractor_class=_LinearExtractor,
            features_extractor_kwargs={"layer_norm": extractor == "layer_norm"},
            share_features_extractor=True,
        )
    model = ACKTR("MlpPolicy", env_id, policy_kwargs=policy_kwargs, seed=0, device="cpu")
    policy = model.policy.double()
    kfac = KFAC.for_actor_critic(policy, vf_fisher_coef=0.7, damping=1e-3)
    obs = th.as_tensor(model.observation_space.sample()[None], dtype=th.float64)
    kfac.update(obs)
    dense = _dense_joint_fisher(kfac, policy, obs, 0.7)
    approx = kfac.matrix()
    assert approx.shape == dense.shape
    n_blocks = 0
    for block in kfac.blocks:
        idx = []
        for i in [block.layer.weight_index, block.layer.bias_index] if block.layer is not None else [block.dense_index]:
            if i is not None:
                idx += list(range(kfac.offsets[i], kfac.offsets[i] + kfac.numels[i]))
        ix = th.tensor(idx)
        sub_dense, sub_kfac = dense[ix][:, ix], approx[ix][:, ix]
        assert float(sub_dense.abs().max()) > 0
        th.testing.assert_close(sub_kfac, sub_dense, rtol=1e-10, atol=1e-10)
        n_blocks += 1
    shared = extractor is not None
    assert n_blocks == len(kfac.blocks) >= 4 + int(shared)
    value_ids = {id(p) for p in policy.value_net.parameters()}
    assert value_ids <= {id(p) for p in kfac.params}


def test_joint_kfac_precondition_inverts_the_damped_matrix():
    model = ACKTR("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [6]}, seed=0, device="cpu")
    policy = model.policy.double()
    kfac = KFAC.for_actor_critic(policy, damping=1e-2)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(32)]), dtype=th.float64)
    kfac.update(obs)
    g = th.randn(kfac.num_params, dtype=th.float64, generator=th.Generator().manual_seed(0))
    x = kfac.precondition(g)
    th.testing.assert_close(kfac.matrix(damped=True) @ x, g, rtol=1e-8, atol=1e-8)


# ----------------------------------------------------------------------------- step rule
def test_all_finite_is_the_elementwise_test():
    big = th.tensor([3e38, 3e38])  # finite entries whose float32 sum overflows
    assert not math.isfinite(float(big.sum())) and all_finite(big)
    assert all_finite(th.zeros(0)) and all_finite(th.tensor([1.0, -2.0]))
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not all_finite(th.tensor([1.0, bad, 2.0]))
    assert not all_finite(th.tensor([float("inf"), -float("inf")]))


def test_step_size_rule():
    assert clipped_step_size(0.25, 2.0, 0.001) == pytest.approx(math.sqrt(2 * 0.001 / 2.0))
    assert clipped_step_size(0.01, 2.0, 0.001) == 0.01  # eta_max binds
    assert clipped_step_size(0.25, 2.0, None) == 0.25
    assert clipped_step_size(0.25, 0.0, 0.001) == 0.25
    v = momentum_update(None, th.ones(3), 0.9)
    th.testing.assert_close(v, th.full((3,), 0.1))
    th.testing.assert_close(momentum_update(v, th.ones(3), 0.9), th.full((3,), 0.19))
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(None, th.ones(3), 1.0)
    g, norm = clip_by_norm(th.tensor([3.0, 4.0]), 1.0)
    assert norm == pytest.approx(5.0) and float(g.norm()) == pytest.approx(1.0, rel=1e-5)
    assert th.equal(clip_by_norm(th.tensor([3.0, 4.0]), None)[0], th.tensor([3.0, 4.0]))


@pytest.mark.parametrize("critic", ["kfac", "adam"])
def test_one_update_moves_by_the_trust_region_step(critic):
    """momentum=0: the parameters move by exactly ``-eta Delta`` with ``eta = min(lr, sqrt(2 delta / q))``,
    ``q = Delta^T F_kfac Delta`` (logged), and the second-order KL ``eta^2 q / 2`` is at most delta."""
    model = ACKTR(
        "MlpPolicy", "CartPole-v1", n_steps=64, momentum=0.0, target_kl=1e-4, critic=critic, seed=0, device="cpu",
        policy_kwargs={"net_arch": [16]},
    )  # fmt: skip
    _no_train_rollout(model)
    before = th.cat([p.detach().reshape(-1).clone() for p in model._state.kfac.params])
    model.train()
    after = th.cat([p.detach().reshape(-1) for p in model._state.kfac.params])
    logged = model.logger.name_to_value
    eta, q = logged["train/step_scale"], logged["train/kfac_quadratic"]
    assert eta == pytest.approx(min(0.25, math.sqrt(2e-4 / q)))
    assert eta < 0.25  # the trust region binds at this delta
    assert 0.5 * eta**2 * q == pytest.approx(1e-4, rel=1e-6)
    assert float((after - before).norm()) == pytest.approx(logged["train/step_norm"], rel=1e-5)
    assert 0 < logged["train/kl"] < 1e-2


def test_failed_update_leaves_parameters_kfac_and_momentum_as_they_were(monkeypatch):
    model = ACKTR("MlpPolicy", "CartPole-v1", n_steps=16, seed=0, device="cpu", policy_kwargs={"net_arch": [8]})
    model.learn(32)  # two good updates: K-FAC state and momentum exist
    state = model._state
    kfac_before, velocity_before = state.kfac.state_dict(), state.velocity.clone()
    params_before = [p.detach().clone() for p in model.policy.parameters()]
    nan_direction = lambda g, num_leading=None: (th.full_like(g, float("nan")), 1.0)  # noqa: E731
    monkeypatch.setattr(state.kfac, "precondition_and_quadratic", nan_direction)
    _no_train_rollout(model)
    model.train()
    for a, b in zip(params_before, model.policy.parameters(), strict=True):
        assert th.equal(a, b)
    assert th.equal(state.velocity, velocity_before)
    assert state.kfac.steps == kfac_before["steps"]
    for mine, old in zip(state.kfac.factors, kfac_before["factors"], strict=True):
        assert all(th.equal(mine[k], old[k]) for k in old)
    assert model.logger.name_to_value["train/step_skipped"] == 1.0
    assert "not finite" in model.logger.name_to_value["train/skip_reason"]


def test_non_finite_factor_at_a_refresh_skips_the_step():
    """A factor that is not finite when the inverses are refreshed (its eigendecomposition raised before)
    gives a non-finite direction: the step is skipped and the parameters stay as they were."""
    model = ACKTR(
        "MlpPolicy", "CartPole-v1", n_steps=16, seed=0, device="cpu", inverse_update_freq=1, policy_kwargs={"net_arch": [8]}
    )
    model.learn(32)
    kfac = model._state.kfac
    kfac.factors[0] = {**kfac.factors[0], "A": th.full_like(kfac.factors[0]["A"], float("nan"))}
    params_before = [p.detach().clone() for p in model.policy.parameters()]
    _no_train_rollout(model)
    model.train()  # folds the batch, refreshes every factor (inverse_update_freq=1), preconditions
    for a, b in zip(params_before, model.policy.parameters(), strict=True):
        assert th.equal(a, b)
    assert model.logger.name_to_value["train/step_skipped"] == 1.0
    assert "not finite" in model.logger.name_to_value["train/skip_reason"]


@pytest.mark.parametrize("fisher", ["exact", "sample"])
def test_loaded_model_resumes_exactly(fisher, tmp_path):
    """save/load carries the K-FAC factors, inverses and momentum: the next update of the loaded model
    on the same rollout equals the original's, bit for bit."""
    kwargs = {
        "n_steps": 16,
        "fisher": fisher,
        "inverse_update_freq": 3,
        "seed": 0,
        "device": "cpu",
        "policy_kwargs": {"net_arch": [8]},
    }
    model = ACKTR("MlpPolicy", "Pendulum-v1", **kwargs)
    model.learn(64)
    model.save(tmp_path / "acktr")
    loaded = ACKTR.load(tmp_path / "acktr", env=model.get_env(), device="cpu")
    assert loaded._state.kfac.steps == model._state.kfac.steps == 4
    assert th.equal(loaded._state.velocity, model._state.velocity)
    _no_train_rollout(model)
    loaded.rollout_buffer = copy.deepcopy(model.rollout_buffer)
    loaded._current_progress_remaining = model._current_progress_remaining
    loaded.set_logger(configure(None, []))
    for m in (model, loaded):
        np.random.seed(1)  # SB3's buffer.get() shuffles with numpy's global generator (which SB3 does not save)
        m.train()
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert th.equal(a, b)


@pytest.mark.parametrize(
    "name, value",
    [
        ("fisher", "diagonal"),
        ("critic", "sgd"),
        ("kfac_damping_mode", "none"),
        ("kfac_damping", 0.0),
        ("kfac_decay", 1.0),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("target_kl", 0.0),
        ("vf_fisher_coef", 0.0),
        ("inverse_update_freq", 0),
        ("kfac_stats_samples", 0),
        ("ent_coef", -1.0),
        ("max_grad_norm", -1.0),
        ("n_critic_updates", -1),
        ("critic_learning_rate", 0.0),
        ("learning_rate", -1.0),
        ("gae_lambda", 1.5),
    ],
)
def test_bad_arguments_name_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        ACKTR("MlpPolicy", "CartPole-v1", **{name: value})


NUMERIC = ["kfac_damping", "vf_fisher_coef", "target_kl", "ent_coef", "vf_coef", "momentum", "kfac_decay", "max_grad_norm"]


@pytest.mark.parametrize("name", [*NUMERIC, "learning_rate", "critic_learning_rate"])
def test_numeric_arguments_accept_numpy_scalars_and_reject_nan_and_bools(name):
    model = ACKTR("MlpPolicy", "CartPole-v1", **{name: np.float32(0.02)})
    if name in NUMERIC:
        assert getattr(model, name) == pytest.approx(0.02)
    for bad in (float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=name):
            ACKTR("MlpPolicy", "CartPole-v1", **{name: bad})


# ----------------------------------------------------------------------------- one-backward sample path
def _gradient_of_update(model, monkeypatch):
    """The (clipped) gradient that one train() hands to the natural step."""
    seen = {}
    step = model._natural_step

    def spy(g, before):
        seen["g"] = g.clone()
        return step(g, before)

    monkeypatch.setattr(model, "_natural_step", spy)
    np.random.seed(3)
    model.train()
    return seen["g"]


@pytest.mark.parametrize("stats", [None, 12])
@pytest.mark.parametrize("critic", ["kfac", "adam"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_one_backward_path_gives_the_autograd_gradient_and_factors(env_id, critic, stats, monkeypatch):
    """The loss gradient of the factored layers from the output gradients of ONE backward pass equals
    autograd's (the two-pass path), for "sample" and "exact"; "exact"'s factors (the policy's rows
    backpropagated from z alone) equal the two-pass path's; under "sample" the value layers' factor is
    the exact Gauss-Newton one and the action layer's factor of a Categorical policy is
    mean((onehot(a) - softmax(z)) (onehot(a) - softmax(z))^T) over the rollout's own actions."""
    kwargs = {"n_steps": 32, "ent_coef": 0.01, "max_grad_norm": None, "seed": 0, "device": "cpu", "critic": critic}
    kwargs["kfac_stats_samples"] = stats  # factors on 12 of the 32 samples: both paths take the same ones

    def build(fisher, one_backward=True):
        model = ACKTR("MlpPolicy", env_id, fisher=fisher, policy_kwargs={"net_arch": [8]}, **kwargs)
        assert model._one_backward is not None
        if not one_backward:
            model._one_backward = None  # the two-pass path: autograd's gradient, KFAC.update
        return model

    fast_sample, fast_exact, two_pass = build("sample"), build("exact"), build("exact", one_backward=False)
    _no_train_rollout(fast_sample)
    for m in (fast_exact, two_pass):
        m.policy.load_state_dict(fast_sample.policy.state_dict())
        m.rollout_buffer = copy.deepcopy(fast_sample.rollout_buffer)
        m._current_progress_remaining = fast_sample._current_progress_remaining
        m.set_logger(configure(None, []))
    np.random.seed(3)
    data = next(copy.deepcopy(fast_sample.rollout_buffer).get(batch_size=None))  # the batch train() sees
    with th.no_grad():
        z_before = fast_sample._head(data.observations)
    g_sample = _gradient_of_update(fast_sample, monkeypatch)
    g_exact = _gradient_of_update(fast_exact, monkeypatch)
    g_autograd = _gradient_of_update(two_pass, monkeypatch)
    assert float(g_autograd.norm()) > 0
    th.testing.assert_close(g_sample, g_autograd, rtol=1e-5, atol=1e-7)
    th.testing.assert_close(g_exact, g_autograd, rtol=1e-5, atol=1e-7)
    ks, ke, k2 = fast_sample._state.kfac, fast_exact._state.kfac, two_pass._state.kfac
    for f_exact, f_two in zip(ke.factors, k2.factors, strict=True):  # after one update: the batch's factors
        assert f_exact.keys() == f_two.keys()
        for key in f_two:
            th.testing.assert_close(f_exact[key], f_two[key], rtol=1e-5, atol=1e-8)
    value_layers, _, _ = fast_sample._one_backward
    n_value = 0
    for block, f_sample, f_two in zip(ks.blocks, ks.factors, k2.factors, strict=True):
        if block.layer is not None and any(block.layer.module is m for m in value_layers):
            th.testing.assert_close(f_sample["S"], f_two["S"], rtol=1e-5, atol=1e-8)
            n_value += 1
        if block.layer is not None:
            th.testing.assert_close(f_sample["A"], f_two["A"], rtol=1e-5, atol=1e-8)
    assert n_value == (2 if critic == "kfac" else 0)
    if env_id == "CartPole-v1" and stats is None:
        probs = th.softmax(z_before, dim=1)  # the policy before the update
        g = th.nn.functional.one_hot(data.actions.long().flatten(), 2).float() - probs
        action_net = fast_sample.policy.action_net
        action_block = next(f for b, f in zip(ks.blocks, ks.factors, strict=True) if b.layer and b.layer.module is action_net)
        th.testing.assert_close(action_block["S"], g.T @ g / g.shape[0], rtol=1e-5, atol=1e-7)


def test_shared_extractor_takes_the_two_pass_sample_path():
    model = ACKTR(
        "MlpPolicy", "CartPole-v1", fisher="sample", n_steps=16, seed=0, device="cpu",
        policy_kwargs={"features_extractor_class": _LinearExtractor, "share_features_extractor": True, "net_arch": [4]},
    )  # fmt: skip
    assert model._one_backward is None
    model.learn(32)
    assert model._n_updates == 2


@pytest.mark.parametrize("fisher", ["sample", "exact"])
def test_one_backward_path_with_separate_cnns(fisher, monkeypatch):
    """CnnPolicy with share_features_extractor=False: the Conv2d layers' gradient from the one backward
    pass (unfolded patches, summed over positions) equals autograd's, and so do their input factors (and,
    for "exact", their output factors)."""
    from stable_baselines3.common.envs import FakeImageEnv

    def env():
        image_env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
        image_env.observation_space.seed(0)
        return image_env

    policy_kwargs = {"features_extractor_kwargs": {"features_dim": 8}, "share_features_extractor": False, "net_arch": [8]}
    kwargs = {
        "n_steps": 8,
        "fisher": fisher,
        "max_grad_norm": None,
        "seed": 0,
        "device": "cpu",
        "policy_kwargs": policy_kwargs,
    }
    fast = ACKTR("CnnPolicy", env(), **kwargs)
    two_pass = ACKTR("CnnPolicy", env(), **kwargs)
    assert fast._one_backward is not None
    two_pass._one_backward = None
    two_pass.policy.load_state_dict(fast.policy.state_dict())
    _no_train_rollout(fast)
    two_pass.rollout_buffer = copy.deepcopy(fast.rollout_buffer)
    two_pass._current_progress_remaining = fast._current_progress_remaining
    two_pass.set_logger(configure(None, []))
    g_fast = _gradient_of_update(fast, monkeypatch)
    g_two = _gradient_of_update(two_pass, monkeypatch)
    assert float(g_two.norm()) > 0
    th.testing.assert_close(g_fast, g_two, rtol=1e-4, atol=1e-6)
    conv_blocks = [
        i for i, b in enumerate(fast._state.kfac.blocks) if b.layer is not None and isinstance(b.layer.module, nn.Conv2d)
    ]
    assert len(conv_blocks) == 6  # NatureCNN's 3 convolutions, in each of the two extractors
    for i in conv_blocks:
        f_fast, f_two = fast._state.kfac.factors[i], two_pass._state.kfac.factors[i]
        th.testing.assert_close(f_fast["A"], f_two["A"], rtol=1e-4, atol=1e-6)
        if fisher == "exact":  # "sample" draws differ between the paths (rollout actions, fresh ones)
            th.testing.assert_close(f_fast["S"], f_two["S"], rtol=1e-4, atol=1e-8)


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sample_fisher_on_cuda(env_id):
    model = ACKTR("MlpPolicy", env_id, n_steps=16, fisher="sample", device="cuda", seed=0)
    model.learn(64)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_update_state_loads_the_nested_layout_of_earlier_files():
    """Files saved by sb3_natural 0.1 hold ``{"kfac": KFAC.state_dict(), "velocity": ...}`` as ACKTR's
    update state; they load into the flat layout and resume the same."""
    model = ACKTR("MlpPolicy", "CartPole-v1", n_steps=16, seed=0, device="cpu", momentum=0.9, policy_kwargs={"net_arch": [8]})
    model.learn(48)
    state = model._state
    nested = {"kfac": state.kfac.state_dict(), "velocity": state.velocity.clone()}
    flat = state.state_dict()
    other = ACKTR("MlpPolicy", "CartPole-v1", n_steps=16, seed=1, device="cpu", momentum=0.9, policy_kwargs={"net_arch": [8]})
    other._state.load_state_dict(nested)
    assert other._state.state_dict().keys() == flat.keys()
    for key, value in flat.items():
        assert th.equal(other._state.state_dict()[key], value), key
    with pytest.raises(RuntimeError, match="unexpected keys"):
        other._state.load_state_dict({**flat, "kfac.bogus": th.zeros(1)})
    with pytest.raises(RuntimeError, match="missing keys"):
        other._state.load_state_dict({k: v for k, v in flat.items() if k != "kfac.steps"})
    with pytest.raises(RuntimeError, match="shape"):
        other._state.load_state_dict({**flat, "kfac.factors.0.A": th.zeros(2, 2)})
    with pytest.raises(TypeError, match="velocity must be a tensor or None, got list"):
        other._state.load_state_dict({**flat, "velocity": [0.0]})
    with pytest.raises(ValueError, match="velocity has shape"):
        other._state.load_state_dict({**flat, "velocity": th.zeros(3), "kfac.steps": th.tensor(7.0)})
    assert other._state.kfac.steps == state.kfac.steps  # the refused states changed nothing
