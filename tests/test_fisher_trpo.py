"""FisherTRPO: parity with sb3-contrib's TRPO, exact line-search failure, solvers, save/load, errors."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver
from stable_baselines3.common.distributions import kl_divergence
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_natural import FisherTRPO
from sb3_natural.common.distributions import OutputDistribution
from sb3_natural.common.fisher import AnalyticFVP
from sb3_natural.common.solvers import conjugate_gradient

CASES = {
    "discrete": ("CartPole-v1", {}),
    "box": ("Pendulum-v1", {}),
    "box_sde": ("Pendulum-v1", {"use_sde": True}),
    "multidiscrete": (lambda: IdentityEnvMultiDiscrete(dim=3, ep_length=20), {}),
    "multibinary": (lambda: IdentityEnvMultiBinary(dim=3, ep_length=20), {}),
}


def _pair(case: str, **kw):
    env_fn, extra = CASES[case]
    env = make_vec_env(env_fn, n_envs=2, seed=0)
    cfg = dict(n_steps=64, batch_size=64, seed=0, device="cpu", **extra, **kw)
    ref = TRPO("MlpPolicy", env, **cfg)
    ours = FisherTRPO("MlpPolicy", env, kl_convention="mean", **cfg)
    ours.policy.load_state_dict(ref.policy.state_dict())
    _, callback = ref._setup_learn(10_000)
    ours._setup_learn(10_000)
    ref.collect_rollouts(ref.env, callback, ref.rollout_buffer, ref.n_steps)
    ours.rollout_buffer = ref.rollout_buffer
    return ref, ours


@pytest.mark.parametrize("case", list(CASES))
def test_fvp_and_search_direction_match_sb3_contrib(case):
    ref, ours = _pair(case)
    data = next(ref.rollout_buffer.get(batch_size=None))
    actions = data.actions.long().flatten() if isinstance(ref.action_space, spaces.Discrete) else data.actions
    adv = (data.advantages - data.advantages.mean()) / (data.advantages.std() + 1e-8)
    # sb3-contrib's own computation (TRPO.train up to the CG solve)
    with th.no_grad():
        old_dist = copy.copy(ref.policy.get_distribution(data.observations))
    dist = ref.policy.get_distribution(data.observations)
    objective = (adv * th.exp(dist.log_prob(actions) - data.old_log_prob)).mean()
    kl = kl_divergence(dist, old_dist).mean()
    params, g_ref, grad_kl, _ = ref._compute_actor_grad(kl, objective)
    hvp = partial(ref.hessian_vector_product, params, grad_kl)
    d_ref = conjugate_gradient_solver(hvp, g_ref, max_iter=ref.cg_max_steps)
    # ours, on the same batch and weights
    head = ours._head
    assert [id(p) for p in head.params] == [id(p) for p in ours.policy.parameters() if id(p) in {id(q) for q in head.params}]
    z = head(data.observations)
    obj = (adv * th.exp(head.dist.log_prob(z, actions) - data.old_log_prob)).mean()
    g = head.flat(list(th.autograd.grad(obj, head.params, retain_graph=True)))
    th.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    fvp = AnalyticFVP(head, data.observations, "mean", damping=ours.cg_damping, z=z)
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(0))
    ref_v = hvp(v)
    assert float((fvp(v) - ref_v).norm() / ref_v.norm()) < 1e-4
    x = conjugate_gradient(fvp, g, max_iter=ours.cg_max_steps).x
    cos = float(x @ d_ref / (x.norm() * d_ref.norm()))
    assert cos >= 0.999, cos


@dataclass(frozen=True)
class _NeverTrustedDistribution(OutputDistribution):
    def kl(self, z_old, z_new, convention="sum"):  # every candidate step violates the KL constraint
        return th.full((z_new.shape[0],), float("inf"))


def test_failed_line_search_leaves_parameters_bit_identical():
    _, ours = _pair("box")
    head = ours._head
    head.dist = _NeverTrustedDistribution(head.dist.kind, head.dist.action_dims)
    before = [p.detach().clone() for p in head.params]
    ours.train()
    for p, b in zip(head.params, before, strict=True):
        assert th.equal(p, b)
    assert ours.logger.name_to_value["train/is_line_search_success"] == 0.0
    assert ours.logger.name_to_value["train/kl_divergence_loss"] == 0.0


def test_successful_step_respects_target_kl():
    _, ours = _pair("discrete")
    z_old = ours._head(next(ours.rollout_buffer.get(None)).observations).detach()
    ours.train()
    logs = ours.logger.name_to_value
    assert logs["train/is_line_search_success"] == 1.0
    assert 0.0 < logs["train/kl_divergence_loss"] < ours.target_kl
    assert logs["train/surrogate_improvement"] > 0
    assert z_old.shape[1] == 2


def test_dense_and_cg_directions_agree():
    directions = {}
    for solver in ("dense", "cg"):
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        model = FisherTRPO(
            "MlpPolicy", env, n_steps=64, seed=0, device="cpu", solver=solver, cg_max_steps=300, cg_damping=0.1,
            policy_kwargs={"net_arch": [8]},
        )  # fmt: skip
        before = model._head.flat().detach().clone()
        model.learn(64)
        assert model.logger.name_to_value["train/solver"] == solver
        directions[solver] = model._head.flat().detach() - before
    d, c = directions["dense"], directions["cg"]
    assert float(d @ c / (d.norm() * c.norm())) > 0.999


@pytest.mark.parametrize("case", list(CASES))
def test_run_with_several_envs(case):
    env_fn, extra = CASES[case]
    model = FisherTRPO(
        "MlpPolicy", make_vec_env(env_fn, n_envs=2, seed=0), n_steps=32, batch_size=16, seed=0, device="cpu", **extra
    )
    model.learn(128)
    assert model._n_updates == 2


def test_direct_fisher_and_vecnormalize_run():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = FisherTRPO("MlpPolicy", env, n_steps=64, fisher="direct", solver="auto", seed=0, device="cpu")
    model.learn(256, progress_bar=False)
    assert model._n_updates == 2


def test_same_seed_same_result():
    params = []
    for _ in range(2):
        model = FisherTRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=1), n_steps=64, seed=1, device="cpu")
        model.learn(384)
        params.append(th.cat([p.detach().flatten() for p in model.policy.parameters()]))
    assert th.equal(params[0], params[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_kl": 0.0}, "target_kl must be a finite float > 0"),
        ({"cg_damping": -0.1}, "cg_damping must be a finite float >= 0"),
        ({"fisher": "exact"}, "fisher must be one of"),
        ({"solver": "qr"}, "solver must be one of"),
        ({"kl_convention": "avg"}, "kl_convention must be one of"),
        ({"solver": "dense", "cg_damping": 0.0}, "cg_damping > 0"),
        ({"line_search_shrinking_factor": 1.5}, "line_search_shrinking_factor"),
        ({"sub_sampling_factor": 0}, "sub_sampling_factor must be an int >= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be a float"),
        ({"n_critic_updates": -1}, "n_critic_updates must be an int >= 0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FisherTRPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_unsupported_action_space():
    import gymnasium as gym

    class TupleActions(gym.Env):
        observation_space = spaces.Box(-1, 1, (2,))
        action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))

    with pytest.raises(AssertionError, match="only supports"):
        FisherTRPO("MlpPolicy", TupleActions())


def test_learns_cartpole_quickly():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = FisherTRPO(
        "MlpPolicy",
        env,
        n_steps=512,
        batch_size=512,
        cg_damping=1e-3,
        gae_lambda=0.98,
        n_critic_updates=20,
        seed=0,
        device="cpu",
    )
    model.learn(30_000)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=5, deterministic=True)
    assert mean >= 150, mean
