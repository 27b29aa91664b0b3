"""K-FAC (common/kfac.py) against the dense Fisher in float64: exact where K-FAC is exact, the sampled
factor converging to the exact one, the damped product inverting its matrix, save/load of the state."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch as th
from conftest import ACTION_KINDS, make_obs, make_policy
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_natural.common.fisher import dense_fisher
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.kfac import (
    KFAC,
    OutputFactor,
    OutputRows,
    backprop_rows,
    batch_output_factor,
    input_factor,
    output_factor,
    pi_damping,
    reachable_rows,
    symmetric_eigh,
)

SINGLE_LAYER_KINDS = ["discrete", "box", "multidiscrete", "multibinary"]


def _indices(kfac: KFAC, block) -> th.Tensor:
    idx: list[int] = []
    owners = [block.layer.weight_index, block.layer.bias_index] if block.layer is not None else [block.dense_index]
    for i in owners:
        if i is not None:
            idx += range(kfac.offsets[i], kfac.offsets[i] + kfac.numels[i])
    return th.tensor(idx)


def _one_state(policy, n: int = 4):
    obs = make_obs(policy, 1)
    if isinstance(obs, dict):
        return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in obs.items()}
    return obs.repeat(n, *([1] * (obs.dim() - 1)))


@pytest.mark.parametrize("kind", SINGLE_LAYER_KINDS)
def test_exact_kfac_of_a_single_linear_layer_on_one_state_is_the_fisher(kind):
    policy = make_policy(kind, net_arch=[])  # z = action_net(obs) (+ log_std): one Linear layer
    obs = _one_state(policy)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact")
    kfac.update(obs)
    th.testing.assert_close(kfac.matrix(), dense_fisher(head, obs), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_each_diagonal_block_is_exact_on_one_state(kind):
    # a is constant on one state, so every layer's block E[(a a^T) (x) (g g^T)] = A (x) S exactly
    policy = make_policy(kind, net_arch=[6, 5])
    obs = _one_state(policy)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact")
    kfac.update(obs)
    f, k = dense_fisher(head, obs), kfac.matrix()
    for block in kfac.blocks:
        idx = _indices(kfac, block)
        th.testing.assert_close(k[idx][:, idx], f[idx][:, idx], rtol=0, atol=1e-10)
    if kind == "box":
        log_std = next(b for b in kfac.blocks if b.dense_index is not None)
        idx = _indices(kfac, log_std)
        th.testing.assert_close(k[idx][:, idx], 2.0 * th.eye(len(idx), dtype=th.float64))  # DESIGN.md: 2 I


class _OnePositionConv(BaseFeaturesExtractor):
    """A Conv2d whose kernel covers the whole 6x6 image: its output has a single spatial position."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 5) -> None:
        super().__init__(observation_space, features_dim)
        self.conv = nn.Conv2d(observation_space.shape[0], features_dim, kernel_size=6)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return th.tanh(self.conv(x)).flatten(1)


def _conv_policy(kind: str, extractor=_OnePositionConv):
    th.manual_seed(0)
    obs_space = spaces.Box(0, 255, (2, 6, 6), np.uint8)
    from conftest import ACTION_SPACES

    policy = ActorCriticCnnPolicy(
        obs_space, ACTION_SPACES[kind], lambda _: 1e-3, net_arch=[], features_extractor_class=extractor
    )
    with th.no_grad():
        policy.action_net.weight.mul_(30.0)
    return policy.double()


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_conv_block_with_one_spatial_position_is_exact(kind):
    policy = _conv_policy(kind)
    obs = _one_state(policy)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact")
    kfac.update(obs)
    conv = next(b for b in kfac.blocks if b.layer is not None and isinstance(b.layer.module, nn.Conv2d))
    idx = _indices(kfac, conv)
    th.testing.assert_close(kfac.matrix()[idx][:, idx], dense_fisher(head, obs)[idx][:, idx], rtol=0, atol=1e-10)


def test_conv_input_factor_sums_patches_and_output_factor_averages_positions():
    conv = nn.Conv2d(1, 2, kernel_size=2).double()
    x = th.randn(3, 1, 3, 3, dtype=th.float64, generator=th.Generator().manual_seed(0))
    a = input_factor(conv, x, with_bias=True)
    cols = th.nn.functional.unfold(x, 2)  # [3, 4, 4 positions]
    patches = th.cat([cols.transpose(1, 2), th.ones(3, 4, 1, dtype=th.float64)], dim=2)
    th.testing.assert_close(a, th.einsum("ntk,ntl->kl", patches, patches) / 3)
    g = th.randn(2, 3, 2, 2, 2, dtype=th.float64, generator=th.Generator().manual_seed(1))  # K = 2 rows
    expected = th.einsum("knohw,knphw->op", g, g) / (3 * 4)
    th.testing.assert_close(output_factor(list(g)), expected)


def test_sampled_factor_converges_to_the_exact_one():
    # S_sample is a mean of N i.i.d. terms with mean S_exact: its relative error falls like 1/sqrt(N).
    policy = make_policy("discrete", net_arch=[6])
    head = ActorHead(policy)
    base = make_obs(policy, 4)
    exact = KFAC(head, mode="exact")
    exact.update(base)
    errors = {}
    for reps in (25, 2500):
        obs = base.repeat(reps, 1)
        sample = KFAC(head, mode="sample")
        sample.update(obs, generator=th.Generator().manual_seed(0))
        errs = [
            float((fs["S"] - fe["S"]).norm() / fe["S"].norm())
            for fs, fe in zip(sample.factors, exact.factors, strict=True)
            if "S" in fe
        ]
        errors[reps] = max(errs)
        for fs, fe in zip(sample.factors, exact.factors, strict=True):
            if "A" in fe:  # the input factor does not depend on the actions
                th.testing.assert_close(fs["A"], fe["A"])
    # stated tolerance: 10% at 10k samples, and at least 3x smaller than at 100 (expected: 10x)
    assert errors[2500] < 0.10
    assert errors[2500] < errors[25] / 3


@pytest.mark.parametrize("damping_mode", ["pi", "exact"])
@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_precondition_inverts_the_damped_kfac_matrix(kind, damping_mode):
    policy = make_policy(kind, net_arch=[5])
    obs = make_obs(policy, 12)
    kfac = KFAC(ActorHead(policy), mode="exact", damping=1e-2, damping_mode=damping_mode)
    kfac.update(obs)
    g = th.randn(kfac.num_params, dtype=th.float64, generator=th.Generator().manual_seed(0))
    x = kfac.precondition(g)
    th.testing.assert_close(kfac.matrix(damped=True) @ x, g, rtol=0, atol=1e-8)
    if damping_mode == "exact":
        th.testing.assert_close(
            kfac.matrix(damped=True), kfac.matrix() + 1e-2 * th.eye(kfac.num_params, dtype=th.float64), rtol=0, atol=1e-12
        )
    assert kfac.quadratic(g) == pytest.approx(float(g @ kfac.matrix() @ g), rel=1e-10)
    # the one-pass direction and quadratic are those of the two calls, also over the leading blocks only
    joint = KFAC.for_actor_critic(ActorHead(policy), damping=1e-2, damping_mode=damping_mode)
    joint.update(obs)
    g_joint = th.randn(joint.num_params, dtype=th.float64, generator=th.Generator().manual_seed(1))
    n_actor = len(ActorHead(policy).params)
    for k, (one, kf, v) in enumerate([(None, kfac, g), (None, joint, g_joint), (n_actor, joint, g_joint)]):
        direction, quadratic = kf.precondition_and_quadratic(v, num_leading=one)
        assert th.equal(direction, kf.precondition(v))
        expected = kf.quadratic(direction, num_leading=one)  # without num_leading: one dot product, to rounding
        assert quadratic == (expected if one is not None else pytest.approx(expected, rel=1e-12)), k
    assert joint.quadratic(g_joint, num_leading=n_actor) < joint.quadratic(g_joint)


@pytest.mark.parametrize("damping_mode", ["pi", "exact"])
def test_precondition_follows_the_refreshed_inverses_and_the_damping(damping_mode):
    """The damped inverses precondition() applies are formed once per refresh: a later update that does
    not refresh leaves the direction unchanged, a refresh or a new damping changes it, and right after a
    refresh it still inverts matrix(damped=True)."""
    policy = make_policy("box", net_arch=[5])
    kfac = KFAC(ActorHead(policy), damping=1e-2, damping_mode=damping_mode, inverse_update_freq=2)
    kfac.update(make_obs(policy, 12, seed=1))
    g = th.randn(kfac.num_params, dtype=th.float64, generator=th.Generator().manual_seed(0))
    x1 = kfac.precondition(g)
    kfac.update(make_obs(policy, 12, seed=2))  # step 2: factors move, inverses not refreshed
    assert th.equal(kfac.precondition(g), x1)
    kfac.update(make_obs(policy, 12, seed=3))  # step 3: (3 - 1) % 2 == 0, refreshed
    x3 = kfac.precondition(g)
    assert not th.allclose(x3, x1)
    th.testing.assert_close(kfac.matrix(damped=True) @ x3, g, rtol=0, atol=1e-8)
    kfac.damping = 0.5
    x_damped = kfac.precondition(g)
    assert float(x_damped.norm()) < float(x3.norm())
    th.testing.assert_close(kfac.matrix(damped=True) @ x_damped, g, rtol=0, atol=1e-8)


def test_pi_damping_balances_the_traces():
    a, s = th.diag(th.tensor([4.0, 4.0], dtype=th.float64)), th.diag(th.tensor([1.0, 1.0, 1.0], dtype=th.float64))
    alpha, beta = pi_damping(a, s, 0.01)
    assert alpha == pytest.approx(2 * 0.1) and beta == pytest.approx(0.1 / 2)
    assert alpha * beta == pytest.approx(0.01)


def test_running_average_and_inverse_refresh():
    policy = make_policy("discrete", net_arch=[4])
    kfac = KFAC(ActorHead(policy), decay=0.5, inverse_update_freq=3)
    obs1, obs2 = make_obs(policy, 8, seed=1), make_obs(policy, 8, seed=2)
    b1, b2 = kfac.batch_factors(obs1), kfac.batch_factors(obs2)
    kfac.update(obs1)
    eig_after_first = kfac.eigen[0]["A_vals"].clone()
    kfac.update(obs2)
    th.testing.assert_close(kfac.factors[0]["A"], 0.5 * b1[0]["A"] + 0.5 * b2[0]["A"])
    assert th.equal(kfac.eigen[0]["A_vals"], eig_after_first)  # not refreshed at step 2
    kfac.update(obs2)
    kfac.update(obs2)  # step 4: (4 - 1) % 3 == 0
    assert not th.equal(kfac.eigen[0]["A_vals"], eig_after_first)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_state_dict_round_trip_resumes_exactly(layout):
    policy = make_policy("box", net_arch=[4])
    head = ActorHead(policy)
    a, b = KFAC(head, inverse_update_freq=2), KFAC(head, inverse_update_freq=2)
    obs = [make_obs(policy, 8, seed=s) for s in range(4)]
    a.update(obs[0])
    a.update(obs[1])
    flat = a.flat_state_dict()
    assert list(flat)[-1] == "steps" and all(isinstance(v, th.Tensor) for v in flat.values())
    if layout == "nested":
        b.load_state_dict(a.state_dict())
    else:
        b.load_flat_state_dict(flat)
    assert b.steps == a.steps == 2
    for o in obs[2:]:
        a.update(o)
        b.update(o)
    g = th.randn(a.num_params, dtype=th.float64, generator=th.Generator().manual_seed(0))
    assert th.equal(a.precondition(g), b.precondition(g))
    with pytest.raises(ValueError, match="blocks"):
        KFAC(ActorHead(make_policy("box", net_arch=[4, 4]))).load_state_dict(a.state_dict())
    if layout == "nested":
        return
    # not strict: only the given entries change
    c = KFAC(head, inverse_update_freq=2)
    c.load_flat_state_dict(flat)
    first = next(k for k in flat if k.startswith("factors."))
    c.load_flat_state_dict({first: 2.0 * flat[first]}, strict=False)
    assert th.equal(c.flat_state_dict()[first], 2.0 * flat[first]) and c.steps == 2
    for key, value in flat.items():
        if key != first:
            assert th.equal(c.flat_state_dict()[key], value)
    with pytest.raises(RuntimeError, match="block 99"):
        c.load_flat_state_dict({"factors.99.A": flat[first]}, strict=False)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        c.load_flat_state_dict({**flat, "eigen.0": flat[first]})
    with pytest.raises(RuntimeError, match=r"unexpected keys \['factors.0.Z'\]"):
        c.load_flat_state_dict({**flat, "factors.0.Z": flat[first]})
    with pytest.raises(TypeError, match=r"'factors\.0\.A' must be a tensor, got list"):
        c.load_flat_state_dict({**flat, "factors.0.A": [[1.0]]})
    for bad in (th.tensor(float("nan")), th.tensor(-3.0), th.tensor(2.5), th.zeros(3)):
        with pytest.raises(ValueError, match="'steps' must be one whole number >= 0"):
            c.load_flat_state_dict({**flat, "steps": bad})
    assert c.steps == 2  # a refused state changes nothing


@pytest.mark.parametrize("kind", ["actor", "value", "joint"])
def test_deepcopy_binds_the_copy_to_the_copied_policy(kind):
    """A deep copy of K-FAC is built again on the copy of its target: its parameters are the copied
    policy's, its factors equal the original's, and updating it reads the copied modules only (the
    target's functions are closures over the original modules, which ``copy.deepcopy`` does not copy)."""
    import copy

    policy = make_policy("box", net_arch=[4])
    build = {
        "actor": lambda p: KFAC(ActorHead(p), inverse_update_freq=2),
        "value": lambda p: KFAC.for_value(p, inverse_update_freq=2),
        "joint": lambda p: KFAC.for_actor_critic(ActorHead(p), vf_fisher_coef=0.5, inverse_update_freq=2),
    }[kind]
    a = build(policy)
    obs = [make_obs(policy, 8, seed=s) for s in range(3)]
    a.update(obs[0])
    b = copy.deepcopy(a)
    copied = {id(p) for p in b.params}
    assert not copied & {id(p) for p in policy.parameters()}
    for f, g in zip(a.factors, b.factors, strict=True):
        assert f.keys() == g.keys() and all(th.equal(f[k], g[k]) for k in f)
    with th.no_grad():  # the original's weights change; the copy must not see it
        for p in policy.parameters():
            p.mul_(2.0)
    b.update(obs[1])
    c = build(make_policy("box", net_arch=[4]))  # the same initial weights (seed 0): what b must equal
    c.update(obs[0])
    c.update(obs[1])
    for f, g in zip(c.factors, b.factors, strict=True):
        assert all(th.allclose(f[k], g[k], rtol=1e-12, atol=1e-14) for k in f)


def test_value_head_gauss_newton_factors():
    policy = make_policy("discrete", net_arch=[5])
    obs = make_obs(policy, 6)
    kfac = KFAC.for_value(policy)
    kfac.update(obs)
    # Gauss-Newton of (1/2)(v - t)^2: (1/N) J^T J, J = dv/dtheta
    with th.enable_grad():
        values = kfac._t.forward(obs).flatten()
        rows = th.stack([th.cat([g.reshape(-1) for g in th.autograd.grad(v, kfac.params, retain_graph=True)]) for v in values])
    gn = rows.T @ rows / len(values)
    k = kfac.matrix()
    for block in kfac.blocks:
        idx = _indices(kfac, block)
        assert idx.numel() > 0
    # the last layer's block (value_net) is exact: its output gradient is 1 for every sample
    last = _indices(kfac, kfac.blocks[-1])
    th.testing.assert_close(k[last][:, last], gn[last][:, last], rtol=0, atol=1e-10)
    assert {id(p) for p in kfac.params}.isdisjoint({id(p) for p in ActorHead(policy).params})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "empirical"}, "mode must be one of"),
        ({"damping": 0.0}, "damping must be"),
        ({"damping_mode": "tikhonov"}, "damping_mode must be one of"),
        ({"decay": 1.0}, "decay must be a float in"),
        ({"inverse_update_freq": 0}, "inverse_update_freq must be"),
        ({"kl_convention": "avg"}, r"^kl_convention must be one of \('sum', 'mean'\), got 'avg'"),
        ({"stats_samples": 0}, "stats_samples must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KFAC(make_policy("discrete"), **kwargs)
    with pytest.raises(ValueError, match=match):  # the joint actor-critic target checks them too
        KFAC.for_actor_critic(make_policy("discrete"), **kwargs)


@pytest.mark.parametrize("mode", ["exact", "sample"])
def test_empty_batch_is_an_error_and_changes_nothing(mode):
    policy = make_policy("discrete")
    kfac = KFAC(policy, mode=mode)
    obs = make_obs(policy, 6)
    kfac.update(obs)
    before = copy.deepcopy(kfac.state_dict())
    with pytest.raises(ValueError, match="obs must hold at least one sample"):
        kfac.update(obs[:0])  # was: NaN factors (a mean over no samples), silently
    after = kfac.state_dict()
    assert after["steps"] == before["steps"]
    for old, new in zip(before["factors"], after["factors"], strict=True):
        for key in old:
            th.testing.assert_close(new[key], old[key], rtol=0, atol=0)


def test_load_state_dict_names_missing_entries():
    kfac = KFAC(make_policy("discrete"))
    with pytest.raises(ValueError, match=r"K-FAC state is missing \['steps', 'eigen'\]"):
        kfac.load_state_dict({"factors": []})  # was: KeyError 'steps'


def test_use_before_update_is_an_error():
    kfac = KFAC(make_policy("discrete"))
    with pytest.raises(RuntimeError, match="update"):
        kfac.precondition(th.zeros(kfac.num_params, dtype=th.float64))


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(ACTION_KINDS),
    hidden=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    n=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_property_kfac_is_symmetric_psd_and_exact_per_block_on_one_state(kind, hidden, n, seed):
    policy = make_policy(kind, net_arch=hidden, seed=seed)
    obs = _one_state(policy, n)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact", damping_mode="exact", damping=1e-3)
    kfac.update(obs)
    k = kfac.matrix()
    th.testing.assert_close(k, k.T, rtol=0, atol=1e-12)
    assert float(th.linalg.eigvalsh(k).min()) > -1e-10
    f = dense_fisher(head, obs)
    for block in kfac.blocks:
        idx = _indices(kfac, block)
        th.testing.assert_close(k[idx][:, idx], f[idx][:, idx], rtol=0, atol=1e-9)
    g = th.randn(kfac.num_params, dtype=th.float64, generator=th.Generator().manual_seed(seed))
    th.testing.assert_close(kfac.matrix(damped=True) @ kfac.precondition(g), g, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["exact", "sample"])
@pytest.mark.parametrize("obs_kind", ["image", "dict"])
@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_cnn_and_multi_input_policies(kind, obs_kind, mode):
    policy = make_policy(kind, obs_kind=obs_kind)
    obs = make_obs(policy, 6)
    kfac = KFAC(ActorHead(policy), mode=mode)
    kfac.update(obs, generator=th.Generator().manual_seed(0))
    kfac.update(obs, generator=th.Generator().manual_seed(1))
    types = {type(b.layer.module) for b in kfac.blocks if b.layer is not None}
    assert (nn.Conv2d in types) == (obs_kind == "image")
    g = th.randn(kfac.num_params, dtype=th.float64, generator=th.Generator().manual_seed(2))
    x = kfac.precondition(g)
    assert th.isfinite(x).all() and float(x @ g) > 0  # a descent-compatible direction: (F + lambda)^-1 is PD
    value = KFAC.for_value(policy)
    value.update(obs)
    assert th.isfinite(value.precondition(th.ones(value.num_params, dtype=th.float64))).all()


@pytest.mark.parametrize(
    ("m", "rows"),
    [(10, th.arange(0, 40, 4)), (12, th.linspace(0, 39, 12).round().long())],  # m divides N: every (N/m)-th
)
def test_stats_samples_estimates_the_factors_on_that_subset_of_the_batch(m, rows):
    """stats_samples=m: each layer's A and S are those of the m evenly spaced samples; dense blocks (the
    shared log_std) and the number of blocks are unchanged."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    th.manual_seed(0)
    policy = ActorCriticPolicy(
        spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32), lambda _: 1e-3, net_arch=[5]
    ).double()
    obs = th.randn(40, 3, dtype=th.float64)
    sub = KFAC(policy, stats_samples=m)
    full = KFAC(policy)
    got, want = sub.batch_factors(obs), full.batch_factors(obs[rows])
    assert len(got) == len(want) == len(full.blocks)
    for block, g, w in zip(full.blocks, got, want, strict=True):
        for key in w:
            th.testing.assert_close(g[key], w[key], rtol=1e-12, atol=1e-14)
        if block.layer is not None:
            assert not th.allclose(g["A"], full.batch_factors(obs)[full.blocks.index(block)]["A"])
    with pytest.raises(ValueError, match="stats_samples"):
        KFAC(policy, stats_samples=0)


@pytest.mark.parametrize("kl_convention", ["sum", "mean"])
@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_policy_rows_are_the_rows_of_m_factor_that_reach_a_layer(kind, kl_convention):
    # The DiagGaussian's rows are built in closed form; every kind must give reachable_rows(factor(z)),
    # the generic search, and M restricted to the layer-reachable columns must be rows^T rows
    policy = make_policy(kind, net_arch=[5])
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact", kl_convention=kl_convention)
    with th.no_grad():
        z = head(make_obs(policy, 7))
    rows = kfac.policy_rows(z)
    generic = reachable_rows(kfac._t.factor(z), list(head.direct_slices.values()))
    th.testing.assert_close(rows, generic, rtol=0, atol=1e-12)
    # the joint target's rows: the policy's, and the value's sqrt(c) on its own column
    joint = KFAC.for_actor_critic(head, vf_fisher_coef=0.5, kl_convention=kl_convention)
    y = th.cat([z, th.zeros(z.shape[0], 1, dtype=z.dtype)], dim=1)
    joint_rows = joint._t.exact_rows(y)
    d = z.shape[1]
    th.testing.assert_close(joint_rows[:, :-1, :d], generic, rtol=0, atol=1e-12)
    assert not joint_rows[:, :-1, d].any() and not joint_rows[:, -1, :d].any()
    th.testing.assert_close(joint_rows[:, -1, d], th.full((z.shape[0],), 0.5**0.5, dtype=z.dtype))
    m = head.dist.fisher_matrix(z) * head.dist.kl_scale(kl_convention)
    reach = rows.abs().amax(dim=(0, 1)) > 0
    th.testing.assert_close((rows.transpose(1, 2) @ rows)[:, reach][:, :, reach], m[:, reach][:, :, reach])


def _factors_with_and_without_the_closed_form(kfac: KFAC, obs):
    fast = kfac.batch_factors(obs)
    last, kfac._last = kfac._last, None
    try:
        generic = kfac.batch_factors(obs)
    finally:
        kfac._last = last
    return fast, generic


@pytest.mark.parametrize("stats_samples", [None, 5])
@pytest.mark.parametrize("obs_kind", ["box", "image"])
@pytest.mark.parametrize(
    ("activation", "net_arch"),
    [(nn.Tanh, [6, 5]), (nn.ReLU, [6, 5]), (nn.ELU, [6, 5]), (nn.Tanh, [5]), (nn.SiLU, {"pi": [7, 4], "vf": [3]})],
)
def test_closed_form_last_layers_give_the_factors_of_the_backpropagated_rows(activation, net_arch, obs_kind, stats_samples):
    # DiagGaussian with the shared log_std: the action layer's S = diag(1/sigma^2) and the hidden layer's
    # S = (phi'^T phi' / N) * (V^T V) must equal what backpropagating every row of M's factor gives
    policy = make_policy("box", obs_kind=obs_kind, net_arch=net_arch, activation_fn=activation)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact", kl_convention="mean", stats_samples=stats_samples)
    assert kfac._last is not None and kfac._last.action is policy.action_net
    obs = make_obs(policy, 9)
    fast, generic = _factors_with_and_without_the_closed_form(kfac, obs)
    for f, g in zip(fast, generic, strict=True):
        assert f.keys() == g.keys()
        for key in f:
            th.testing.assert_close(f[key], g[key], rtol=0, atol=1e-12)
    # the one-backward path of ACKTR (the joint K-FAC's policy rows from z) gets the same factors
    joint = KFAC.for_actor_critic(head, kl_convention="mean", stats_samples=stats_samples)
    rec = joint.record(obs)
    z = rec.parts[0] if rec.parts is not None else rec.y[:, : head.dist.out_dim]
    fast_rows = joint.policy_row_grads(z, rec.records)
    generic_rows = joint.policy_rows(z.detach())
    _assert_row_grads_match(joint, z, rec.records, fast_rows, generic_rows)
    assert sum(isinstance(r, OutputFactor) for r in fast_rows) == 2


def _assert_row_grads_match(kfac: KFAC, z, records, fast_rows, generic_rows) -> None:
    """Each layer's output gradients from policy_row_grads (closed form, stacked rows or autograd's) give
    the factor that backpropagating every row of M's factor by autograd gives, on the stats samples."""
    slow = backprop_rows(z, [r.output for r in records], generic_rows)
    sub = kfac._stats_rows(z.shape[0], z.device)
    for f, g in zip(fast_rows, slow, strict=True):
        if g is None:
            assert f is None
            continue
        slow_factor = output_factor([gk if sub is None else gk[sub] for gk in g])
        th.testing.assert_close(batch_output_factor(f, sub), slow_factor, rtol=0, atol=1e-12)
        if isinstance(f, OutputRows) and not f.on_stats_samples:
            th.testing.assert_close(f.rows, th.stack(g, dim=1), rtol=0, atol=1e-12)
        elif isinstance(f, list):
            for fk, gk in zip(f, g, strict=True):
                th.testing.assert_close(fk, gk, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stats_samples", [None, 5])
@pytest.mark.parametrize("obs_kind", ["box", "dict", "image"])
@pytest.mark.parametrize(
    ("kind", "activation", "net_arch"),
    [
        ("discrete", nn.Tanh, [6, 5]),
        ("discrete", nn.GELU, [4, 6, 5]),
        ("multidiscrete", nn.ReLU, [6, 5]),
        ("multibinary", nn.Tanh, {"pi": [7, 4], "vf": [3]}),
        ("box", nn.Tanh, [6, 4, 5]),
    ],
)
def test_chain_rows_give_the_factors_of_the_backpropagated_rows(kind, activation, net_arch, obs_kind, stats_samples):
    # Down SB3's policy_net (Linear, elementwise activation pairs) the rows of M's factor are propagated as
    # [N, K, out] tensors, G_j = (G_{j+1} W_{j+1}) * phi_j'; the factors must equal autograd's (one backward
    # per row, the chain switched off), and layers before the chain (a CNN) still get autograd's rows
    policy = make_policy(kind, obs_kind=obs_kind, net_arch=net_arch, activation_fn=activation)
    head = ActorHead(policy)
    kfac = KFAC(head, mode="exact", stats_samples=stats_samples)
    chain = kfac._chain
    assert chain is not None and chain.action is policy.action_net
    assert len(chain.linears) == len(net_arch if isinstance(net_arch, list) else net_arch["pi"])
    assert chain.before == (obs_kind == "image")
    obs = make_obs(policy, 9)
    fast = kfac.batch_factors(obs)
    kfac._chain, kfac._last = None, None
    generic = kfac.batch_factors(obs)
    for f, g in zip(fast, generic, strict=True):
        assert f.keys() == g.keys()
        for key in f:
            th.testing.assert_close(f[key], g[key], rtol=0, atol=1e-12)
    # and per layer, through the joint K-FAC's policy_row_grads (ACKTR's one-backward path)
    joint = KFAC.for_actor_critic(head, stats_samples=stats_samples)
    rec = joint.record(obs)
    z = rec.parts[0] if rec.parts is not None else rec.y[:, : head.dist.out_dim]
    fast_rows = joint.policy_row_grads(z, rec.records)
    assert sum(isinstance(r, OutputRows) for r in fast_rows) == len(chain.linears) + (kind != "box") - (kind == "box")
    _assert_row_grads_match(joint, z, rec.records, fast_rows, joint.policy_rows(z.detach()))


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("discrete", {}),  # rows depend on the state
        ("box_sde", {}),  # gSDE: sigma depends on the state
        ("box", {"net_arch": []}),  # no hidden layer
        ("box", {"activation_fn": partial(nn.Softmax, dim=-1)}),  # not elementwise
        ("box", {"activation_fn": partial(nn.LeakyReLU, inplace=True)}),  # overwrites its input
    ],
)
def test_closed_form_last_layers_only_where_they_hold(kind, kwargs):
    policy = make_policy(kind, **kwargs)
    assert KFAC(ActorHead(policy), mode="exact")._last is None


def test_take_rows_and_index_obs_select_the_same_rows_as_indexing():
    from sb3_natural.common.heads import index_obs, take_rows

    t = th.arange(40.0).reshape(10, 4)
    for idx in (th.tensor([7, 0, 3]), th.tensor([2, 2], dtype=th.int32), slice(1, 9, 3), t[:, 0] > 15):
        th.testing.assert_close(take_rows(t, idx), t[idx], rtol=0, atol=0)
    got = index_obs({"a": t, "b": t[:, :1]}, th.tensor([4, 1]))
    th.testing.assert_close(got["a"], t[[4, 1]], rtol=0, atol=0)
    th.testing.assert_close(got["b"], t[[4, 1], :1], rtol=0, atol=0)


def test_symmetric_eigh_takes_float64_where_float32_does_not_converge(monkeypatch):
    """LAPACK's float32 eigh failing (simulated here) is retried in float64 and cast back; a factor that is
    not finite gets NaN instead of an exception."""
    g = th.Generator().manual_seed(0)
    x = th.randn(5, 9, generator=g)
    m = x.T @ x / 5  # rank 5 of 9
    m[0, 1] += 1e-4  # not exactly symmetric: the symmetrized matrix is decomposed
    real, dtypes = th.linalg.eigh, []

    def flaky(a):
        dtypes.append(a.dtype)
        if a.dtype == th.float32:
            raise th.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(a)

    monkeypatch.setattr(th.linalg, "eigh", flaky)
    vals, vecs = symmetric_eigh(m)
    assert dtypes == [th.float32, th.float64]
    assert vals.dtype == vecs.dtype == th.float32 and bool((vals >= 0).all())
    sym = 0.5 * (m + m.T)
    assert th.allclose((vecs * vals) @ vecs.T, sym, atol=1e-5)
    bad = m.clone()
    bad[2, 3] = float("nan")
    vals, vecs = symmetric_eigh(bad)  # float32 "fails", float64 fails on the NaN: no exception
    assert bool(vals.isnan().all()) and bool(vecs.isnan().all())


def test_symmetric_eigh_on_a_cnn_factor_where_float32_lapack_fails():
    """A CnnPolicy's last-convolution input factor (577 x 577, 16 samples, rank 16; stored as its 16
    scaled eigenvectors) on which torch's float32 eigh raised with one thread on an Intel Xeon
    (``refresh_inverses`` crashed ACKTR's update; on an AMD EPYC, MKL's AVX2 path, it converges): the
    decomposition is taken either way and reconstructs the factor to float32's rounding of its norm
    (146 here: 4e-5 from float32's eigh, 1e-7 from the float64 fallback; a failed one is off by O(1))."""
    b = th.from_numpy(np.load(Path(__file__).parent / "data" / "kfac_conv_input_factor_rank16.npy"))
    a = b @ b.T
    vals, vecs = symmetric_eigh(a)
    assert vals.dtype == th.float32 and bool((vals >= 0).all())
    assert th.allclose((vecs * vals) @ vecs.T, a, atol=1e-6 * float(vals.max()))
    assert th.allclose(vecs.T @ vecs, th.eye(a.shape[0]), atol=1e-4)
    assert int((vals > 1e-3 * vals.max()).sum()) == 16
