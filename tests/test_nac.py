"""NAC: solvers against float64 references, gamma^t weights, save/load, determinism, errors, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import NAC
from sb3_natural.common.scores import per_sample_scores
from sb3_natural.common.weighting import discount_weights, episode_times


def _rollout_model(solver="lstsq", env="CartPole-v1", n_envs=2, **kw) -> NAC:
    model = NAC("MlpPolicy", env, n_steps=32, seed=0, device="cpu", solver=solver, policy_kwargs={"net_arch": [8]}, **kw)
    model.learn(64 * n_envs // 2)
    return model


def _float64_batch(model: NAC):
    model.policy.double()
    data = next(model.rollout_buffer.get(batch_size=None))
    obs = data.observations.double()
    actions = data.actions.long().flatten()
    adv = data.advantages.double()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return obs, actions, adv


def test_lstsq_equals_dense_float64_solution():
    model = _rollout_model("lstsq")
    obs, actions, adv = _float64_batch(model)
    w, stats = model._natural_gradient(obs, actions, adv, None)
    psi = per_sample_scores(model._head, obs, actions, method="loop").numpy()
    n, p = psi.shape
    ref = np.linalg.solve(psi.T @ psi / n + model.ridge * np.eye(p), psi.T @ adv.numpy() / n)
    assert np.linalg.norm(w.numpy() - ref) / np.linalg.norm(ref) < 1e-4
    assert 0.0 < stats["natural_vanilla_cosine"] <= 1.0
    assert stats["compatible_r2"] <= 1.0


def test_cg_converges_to_lstsq():
    model = _rollout_model("cg", cg_max_steps=500, cg_residual_tol=1e-30)
    obs, actions, adv = _float64_batch(model)
    w_cg, stats = model._natural_gradient(obs, actions, adv, None)
    model.solver = "lstsq"
    w_ls, _ = model._natural_gradient(obs, actions, adv, None)
    assert (w_cg - w_ls).norm() / w_ls.norm() < 1e-4
    assert stats["solver_iterations"] > 1
    model.solver, model.fisher = "cg", "analytic"
    w_an, _ = model._natural_gradient(obs, actions, adv, None)  # a different Fisher: only roughly aligned
    assert th.isfinite(w_an).all() and float(w_an @ w_ls) > 0


@pytest.mark.parametrize("warm", [False, True])
def test_cg_warm_start_only_when_asked(warm):
    # Truncated CG (2 steps) keeps part of its start: from 0 and from the last w give different w.
    model = _rollout_model("cg", cg_max_steps=2, cg_warm_start=warm)
    obs, actions, adv = _float64_batch(model)
    assert model._w is not None  # the first update's w
    model._w = model._w.double()
    w, _ = model._natural_gradient(obs, actions, adv, None)
    model._w = None
    w_cold, _ = model._natural_gradient(obs, actions, adv, None)
    assert th.equal(w, w_cold) != warm


def test_sgd_reduces_compatible_loss_and_approaches_lstsq():
    model = _rollout_model("sgd", sgd_epochs=2000, sgd_batch_size=64, sgd_learning_rate=1e-2)
    obs, actions, adv = _float64_batch(model)
    model._w = None
    w_sgd, stats = model._natural_gradient(obs, actions, adv, None)
    assert stats["compatible_loss_after"] < stats["compatible_loss_before"]
    model.solver = "lstsq"
    w_ls, _ = model._natural_gradient(obs, actions, adv, None)
    psi = per_sample_scores(model._head, obs, actions)

    def loss(w):
        return float(((psi @ w - adv) ** 2).mean() + model.ridge * (w * w).sum())

    # Approaches the optimum: the remaining gap is a small fraction of the gap at w = 0.
    gap = (loss(w_sgd) - loss(w_ls)) / (loss(th.zeros_like(w_ls)) - loss(w_ls))
    assert 0.0 <= gap < 0.05, gap
    assert float(w_sgd @ w_ls / (w_sgd.norm() * w_ls.norm())) > 0.7


def test_episode_times_across_rollouts_and_envs():
    # env 0: episode of length 3 starting at step 0, then a new one at step 3;
    # env 1: continues an episode from the previous rollout (last t = 4), new one at step 2.
    starts = np.array([[1, 0], [0, 0], [0, 1], [1, 0], [0, 0]])
    t = episode_times(starts, np.array([7, 4]))
    np.testing.assert_array_equal(t, [[0, 5], [1, 6], [2, 0], [0, 1], [1, 2]])
    # the next rollout continues from the last row
    t2 = episode_times(np.array([[0, 0], [0, 1]]), t[-1])
    np.testing.assert_array_equal(t2, [[2, 3], [3, 0]])
    np.testing.assert_allclose(discount_weights(t2, 0.5), [[0.25, 0.125], [0.125, 1.0]])
    with pytest.raises(ValueError, match="gamma"):
        discount_weights(t2, 1.5)


def test_discount_weighting_tracks_time_per_env_across_rollouts():
    # IdentityEnvBox episodes last exactly ep_length steps.
    env = make_vec_env(lambda: IdentityEnvBox(ep_length=5), n_envs=2, seed=0)
    model = NAC("MlpPolicy", env, n_steps=3, seed=0, device="cpu", discount_weighting=True, policy_kwargs={"net_arch": [4]})
    model.learn(6)  # one rollout: t = 0, 1, 2 in both envs
    np.testing.assert_array_equal(model._episode_t, [2, 2])
    model.learn(6, reset_num_timesteps=False)  # t = 3, 4, then a new episode: 0
    np.testing.assert_array_equal(model._episode_t, [0, 0])
    model.learn(6, reset_num_timesteps=False)  # 1, 2, 3
    np.testing.assert_array_equal(model._episode_t, [3, 3])


def test_gsde_and_solvers_run():
    for solver, fisher in [("cg", "analytic"), ("cg", "empirical"), ("sgd", "empirical")]:
        model = NAC("MlpPolicy", "Pendulum-v1", n_steps=32, use_sde=True, solver=solver, fisher=fisher, seed=0, device="cpu")
        model.learn(64)
        assert model.logger.name_to_value["train/step_skipped"] == 0.0


def test_classic_step_uses_learning_rate():
    model = NAC("MlpPolicy", "CartPole-v1", n_steps=32, target_kl=None, learning_rate=0.05, seed=0, device="cpu")
    before = model._head.flat().detach().clone()
    model.learn(32)
    step = model._head.flat().detach() - before
    th.testing.assert_close(step, 0.05 * model._w, rtol=1e-5, atol=1e-7)


def test_target_kl_step_reaches_target_kl_approximately():
    model = NAC("MlpPolicy", "CartPole-v1", n_steps=256, target_kl=0.005, seed=0, device="cpu")
    model.learn(256)
    kl = model.logger.name_to_value["train/kl"]
    assert 0.001 < kl < 0.02, kl


def test_degenerate_w_skips_step_and_keeps_parameters():
    model = NAC("MlpPolicy", "CartPole-v1", n_steps=32, seed=0, device="cpu")
    model.learn(32)
    before = model._head.flat().detach().clone()
    model._natural_gradient = lambda *a, **k: (th.full_like(before, float("nan")), {})  # type: ignore[method-assign]
    model.learn(32, reset_num_timesteps=False)
    assert th.equal(model._head.flat().detach(), before)
    assert model.logger.name_to_value["train/step_skipped"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"solver": "qr"}, "solver must be one of"),
        ({"fisher": "exact"}, "fisher must be one of"),
        ({"ridge": 0.0}, "ridge must be a finite float > 0"),
        ({"target_kl": -1.0}, "target_kl must be a finite float > 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"n_critic_updates": -1}, "n_critic_updates"),
        ({"gamma": 1.5}, "gamma"),
        ({"sgd_learning_rate": 0.0}, "sgd_learning_rate must be a finite float > 0"),
        ({"critic_learning_rate": -1e-3}, "critic_learning_rate must be"),
        ({"critic_learning_rate": lambda _: 0.0}, "critic_learning_rate must be a schedule"),
        ({"learning_rate": float("nan")}, "learning_rate must be"),
        ({"cg_residual_tol": -1.0}, "cg_residual_tol must be a finite float >= 0"),
        ({"cg_max_steps": 0}, "cg_max_steps must be an int >= 1"),
        ({"cg_warm_start": "yes"}, "cg_warm_start must be True or False"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NAC("MlpPolicy", "CartPole-v1", **kwargs)


def test_learns_cartpole_quickly():
    from sb3_natural.configs import load_zoo_entry

    hp = load_zoo_entry("nac", "CartPole-v1")
    for key in ("n_timesteps", "n_envs", "policy"):
        hp.pop(key)
    model = NAC("MlpPolicy", "CartPole-v1", seed=0, device="cpu", **hp)
    model.learn(30_000)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=5, deterministic=True)
    assert mean >= 150, mean
