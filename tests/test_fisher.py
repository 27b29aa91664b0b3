"""Fisher products and the dense Fisher against independent float64 references."""

from __future__ import annotations

import pytest
import torch as th
from conftest import ACTION_KINDS, make_obs, make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_natural.common.fisher import AnalyticFVP, DirectFVP, EmpiricalFVP, dense_fisher, empirical_fisher, fisher_rows
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.scores import per_sample_scores


def kl_hessian(head: ActorHead, obs, convention="sum") -> th.Tensor:
    """Reference: Hessian of mean_i KL(pi_old || pi_theta) at theta_old, by torch.func.hessian."""
    pre = head.preprocess(obs)
    theta0 = head.flat().detach()
    z_old = head(obs).detach()

    def mean_kl(theta: th.Tensor) -> th.Tensor:
        z = head.functional(head.param_dict(head.unflat(theta)), pre)
        return head.dist.kl(z_old, z, convention).mean()

    return th.func.hessian(mean_kl)(theta0)


@pytest.mark.parametrize("obs_kind", ["box", "dict"])
@pytest.mark.parametrize("action_kind", ACTION_KINDS)
def test_dense_fisher_is_kl_hessian(action_kind, obs_kind):
    policy = make_policy(action_kind, obs_kind)
    head = ActorHead(policy)
    obs = make_obs(policy, 7)
    f = dense_fisher(head, obs)
    ref = kl_hessian(head, obs)
    assert f.shape == (head.num_params, head.num_params)
    th.testing.assert_close(f, ref, rtol=1e-8, atol=1e-10)
    th.testing.assert_close(f, f.T)
    assert th.linalg.eigvalsh(f).min() > -1e-10


@pytest.mark.parametrize("action_kind", ACTION_KINDS)
@pytest.mark.parametrize("convention", ["sum", "mean"])
def test_products_equal_dense_fisher(action_kind, convention):
    policy = make_policy(action_kind)
    head = ActorHead(policy)
    obs = make_obs(policy, 9)
    f = dense_fisher(head, obs, convention)
    th.testing.assert_close(f, kl_hessian(head, obs, convention), rtol=1e-8, atol=1e-10)
    gen = th.Generator().manual_seed(3)
    for _ in range(3):
        v = th.randn(head.num_params, generator=gen, dtype=th.float64)
        expected = f @ v + 0.1 * v
        th.testing.assert_close(AnalyticFVP(head, obs, convention, damping=0.1)(v), expected, rtol=1e-9, atol=1e-11)
        th.testing.assert_close(DirectFVP(head, obs, convention, damping=0.1)(v), expected, rtol=1e-9, atol=1e-11)


def test_analytic_product_reusable_across_calls():
    policy = make_policy("box")
    head = ActorHead(policy)
    obs = make_obs(policy, 5)
    fvp = AnalyticFVP(head, obs)
    f = dense_fisher(head, obs)
    for seed in range(4):
        v = th.randn(head.num_params, generator=th.Generator().manual_seed(seed), dtype=th.float64)
        th.testing.assert_close(fvp(v), f @ v)


def test_shared_log_std_block_is_two_identity():
    """log_std is one parameter shared by all samples: its Fisher block is 2 I, not 2 N I."""
    policy = make_policy("box")
    head = ActorHead(policy)
    obs = make_obs(policy, 13)
    f = dense_fisher(head, obs)
    i = head.names.index("log_std")
    sl = slice(head.offsets[i], head.offsets[i] + head.numels[i])
    th.testing.assert_close(f[sl, sl], 2.0 * th.eye(2, dtype=th.float64))
    # and the product agrees on that block with the rest of the matrix involved
    v = th.zeros(head.num_params, dtype=th.float64)
    v[sl] = th.tensor([1.0, -2.0], dtype=th.float64)
    th.testing.assert_close(AnalyticFVP(head, obs)(v), f @ v)


@pytest.mark.parametrize("action_kind", ["discrete", "multidiscrete", "multibinary"])
def test_fisher_is_expectation_of_score_outer_products(action_kind):
    """Discrete spaces: F = (1/N) sum_i sum_a pi(a|s_i) psi psi^T, by enumerating every action."""
    import itertools

    policy = make_policy(action_kind)
    head = ActorHead(policy)
    obs = make_obs(policy, 4)
    n = 4
    space = policy.action_space
    if action_kind == "discrete":
        all_actions = [th.tensor(a) for a in range(space.n)]
    elif action_kind == "multidiscrete":
        all_actions = [th.tensor(a) for a in itertools.product(*[range(int(k)) for k in space.nvec])]
    else:
        all_actions = [th.tensor(a, dtype=th.float64) for a in itertools.product([0.0, 1.0], repeat=space.n)]
    ref = th.zeros(head.num_params, head.num_params, dtype=th.float64)
    z = head(obs)
    for a in all_actions:
        acts = a.expand(n, *a.shape).clone()
        prob = head.dist.log_prob(z, acts).exp().detach()
        psi = per_sample_scores(head, obs, acts, method="loop")
        ref += (psi * prob[:, None]).T @ psi / n
    th.testing.assert_close(dense_fisher(head, obs), ref, rtol=1e-8, atol=1e-10)


def test_empirical_fisher_matches_in_expectation_gaussian():
    policy = make_policy("box")
    head = ActorHead(policy)
    obs1 = make_obs(policy, 2)
    reps = 20000
    obs = obs1.repeat(reps, 1)
    actions = head.dist.sample(head(obs), generator=th.Generator().manual_seed(0))
    psi = per_sample_scores(head, obs, actions)
    f_emp = empirical_fisher(psi)
    f = dense_fisher(head, obs1)
    rel = (f_emp - f).norm() / f.norm()
    assert rel < 0.05, rel
    # Matrix-free empirical product == Psi^T Psi v / N
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(1), dtype=th.float64)
    small_obs, small_act = obs[:50], actions[:50]
    th.testing.assert_close(
        EmpiricalFVP(head, small_obs, small_act, damping=0.5)(v),
        empirical_fisher(psi[:50]) @ v + 0.5 * v,
    )
    th.testing.assert_close(EmpiricalFVP(head, small_obs, small_act, scores=psi[:50])(v), empirical_fisher(psi[:50]) @ v)


def test_fisher_rows_factorize_fisher():
    policy = make_policy("multidiscrete")
    head = ActorHead(policy)
    obs = make_obs(policy, 6)
    rows = fisher_rows(head, obs)
    assert rows.shape == (6 * head.dist.out_dim, head.num_params)
    th.testing.assert_close(rows.T @ rows / 6, dense_fisher(head, obs))


def test_cnn_policy_products_agree():
    policy = make_policy("discrete", "image", net_arch=[])
    head = ActorHead(policy)
    obs = make_obs(policy, 3)
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(0), dtype=th.float64)
    th.testing.assert_close(AnalyticFVP(head, obs)(v), DirectFVP(head, obs)(v), rtol=1e-8, atol=1e-10)


def test_bad_fisher_arguments():
    policy = make_policy("box")
    head = ActorHead(policy)
    obs = make_obs(policy, 3)
    with pytest.raises(ValueError, match="damping"):
        AnalyticFVP(head, obs, damping=-1.0)
    # each public entry point names its own argument (not the internal ``convention``)
    for make in (AnalyticFVP, DirectFVP, fisher_rows, dense_fisher):
        with pytest.raises(ValueError, match=r"^kl_convention must be one of \('sum', 'mean'\), got 'avg'"):
            make(head, obs, kl_convention="avg")  # type: ignore[operator]
    with pytest.raises(ValueError, match="P"):
        AnalyticFVP(head, obs)(th.zeros(3, dtype=th.float64))
    with pytest.raises(ValueError, match="scores"):
        EmpiricalFVP(head, obs, th.zeros(3, 2), scores=th.zeros(2, 2))
    with pytest.raises(ValueError, match=r"scores must be a \[N, P\] matrix with N >= 1, got shape \(0, 4\)"):
        empirical_fisher(th.zeros(0, 4))  # an empty batch: no mean (was a NaN matrix)


def test_parity_with_sb3_contrib_hessian_vector_product():
    """With sb3-contrib's KL convention, our products equal TRPO's own hessian_vector_product."""
    import copy

    from sb3_contrib import TRPO
    from stable_baselines3.common.distributions import kl_divergence

    for env_id in ["CartPole-v1", "Pendulum-v1"]:
        model = TRPO("MlpPolicy", env_id, n_steps=64, batch_size=64, device="cpu", seed=0)
        policy = model.policy
        head = ActorHead(policy)
        obs = make_obs(policy, 64).float()
        with th.no_grad():
            old = copy.copy(policy.get_distribution(obs))
        kl = kl_divergence(policy.get_distribution(obs), old).mean()
        params, grads = [], []
        for name, p in policy.named_parameters():
            if "value" in name:
                continue
            (g,) = th.autograd.grad(kl, p, create_graph=True, allow_unused=True)
            if g is not None:
                params.append(p)
                grads.append(g.reshape(-1))
        assert [id(p) for p in params] == [id(p) for p in head.params]
        v = th.randn(head.num_params, generator=th.Generator().manual_seed(0))
        ref = model.hessian_vector_product(params, th.cat(grads), v)
        ours = AnalyticFVP(head, obs, kl_convention="mean", damping=model.cg_damping)(v)
        assert ((ours - ref).norm() / ref.norm()) < 1e-4


@settings(max_examples=12, deadline=None)
@given(
    action_kind=st.sampled_from(ACTION_KINDS),
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    n=st.integers(1, 9),
    seed=st.integers(0, 10_000),
)
def test_property_analytic_equals_dense(action_kind, hidden, n, seed):
    policy = make_policy(action_kind, net_arch=hidden, seed=seed)
    head = ActorHead(policy)
    obs = make_obs(policy, n, seed=seed)
    f = dense_fisher(head, obs)
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(seed), dtype=th.float64)
    th.testing.assert_close(AnalyticFVP(head, obs)(v), f @ v, rtol=1e-8, atol=1e-10)
    th.testing.assert_close(f, kl_hessian(head, obs), rtol=1e-8, atol=1e-10)
