"""REINFORCE: exact per-episode returns, an unbiased gradient on a bandit, baselines, errors, learning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_natural import REINFORCE
from sb3_natural.common.returns import EpisodeStore, discounted_returns, episode_weights
from sb3_natural.common.scores import per_sample_scores


class CountingEnv(gym.Env):
    """Reward t + 1 at step t; terminates after `length` steps (or is truncated, if `truncate`)."""

    observation_space = spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int, truncate: bool = False):
        self.length, self.truncate, self.t = length, truncate, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return np.array([self.t], np.float32), float(self.t), done and not self.truncate, done and self.truncate, {}


class Bandit(gym.Env):
    """One-step episodes; arm a pays MEANS[a] + N(0, 1)."""

    MEANS = np.array([1.0, 3.0])
    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), float(self.MEANS[int(action)] + self.np_random.normal()), True, False, {}


def test_discounted_returns_reference():
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 2.0, 3.0]), 0.5), [2.75, 3.5, 3.0])
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 2.0]), 0.5, bootstrap=4.0), [3.0, 4.0])
    np.testing.assert_allclose(episode_weights(np.array([1.0, 2.0, 3.0]), 0.5, reward_to_go=False), [2.75] * 3)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(np.ones(2), -0.1)


def _capture_returns(model: REINFORCE) -> list[np.ndarray]:
    captured: list[np.ndarray] = []
    original = model._batch

    def spy(episodes):
        obs, actions, g = original(episodes)
        start = 0
        for ep in episodes:
            captured.append(g[start : start + len(ep.rewards)].numpy().astype(np.float64))
            start += len(ep.rewards)
        return obs, actions, g

    model._batch = spy  # type: ignore[method-assign]
    return captured


def test_returns_per_episode_across_rollouts_and_envs():
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(5)])
    # n_steps=2 < episode lengths: every episode spans several rollouts.
    model = REINFORCE("MlpPolicy", env, n_episodes=None, n_steps=2, gamma=0.5, baseline=None, seed=0, device="cpu")
    captured = _capture_returns(model)
    model.learn(2 * 2 * 8)
    ref3 = discounted_returns(np.array([1.0, 2.0, 3.0]), 0.5)
    ref5 = discounted_returns(np.arange(1.0, 6.0), 0.5)
    assert len(captured) >= 4
    for g in captured:
        ref = ref3 if len(g) == 3 else ref5
        np.testing.assert_allclose(g, ref, rtol=1e-6)
    assert {len(g) for g in captured} == {3, 5}


def test_truncated_episodes_bootstrap_only_with_value_baseline():
    for baseline in (None, "value"):
        env = DummyVecEnv([lambda: CountingEnv(4, truncate=True)])
        model = REINFORCE("MlpPolicy", env, n_episodes=1, gamma=0.9, baseline=baseline, seed=0, device="cpu")
        captured = _capture_returns(model)
        model.learn(4)
        g = captured[0]
        if baseline is None:
            np.testing.assert_allclose(g, discounted_returns(np.arange(1.0, 5.0), 0.9), rtol=1e-6)
        else:
            with th.no_grad():
                final_v = float(model.policy.predict_values(th.tensor([[4.0]]))[0, 0])
            # the value head has been fitted since; recompute the bootstrap with the captured g instead:
            boot = (g[-1] - 4.0) / 0.9
            np.testing.assert_allclose(g, discounted_returns(np.arange(1.0, 5.0), 0.9, bootstrap=boot), rtol=1e-5)
            assert boot != 0.0 and np.isfinite(final_v)


def _bandit_estimates(n: int, seed: int = 0):
    env = DummyVecEnv([Bandit])
    model = REINFORCE("MlpPolicy", env, n_episodes=n, baseline=None, seed=seed, device="cpu", policy_kwargs={"net_arch": []})
    _, callback = model._setup_learn(n, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 0)
    obs, actions, g = model._batch(model._episodes.pop_finished())
    psi = per_sample_scores(model._head, obs, actions.long().flatten()).double()
    with th.no_grad():
        p = th.softmax(model._head(obs[:1]).double(), -1)[0]
    return model, psi, g.double(), p


def test_bandit_gradient_unbiased_and_baseline_lowers_variance():
    model, psi, g, p = _bandit_estimates(6000)
    means = th.tensor(Bandit.MEANS, dtype=th.float64)
    j = float(p @ means)
    dj_dlogits = p * (means - j)
    assert model._head.names == ["action_net.weight", "action_net.bias"]
    analytic = th.cat([dj_dlogits, dj_dlogits])  # logits = W * 1 + b
    for baseline in (0.0, j):
        est = psi * (g - baseline)[:, None]  # one REINFORCE estimate per episode
        mean, se = est.mean(0), est.std(0) / est.shape[0] ** 0.5
        assert ((mean - analytic).abs() <= 4 * se + 1e-9).all(), (mean, analytic, se)
    var_none = (psi * g[:, None]).var(0).sum()
    var_base = (psi * (g - j)[:, None]).var(0).sum()
    var_mean = (psi * (g - g.mean())[:, None]).var(0).sum()
    assert var_base < 0.5 * var_none and var_mean < 0.5 * var_none


def test_options_run():
    model = REINFORCE(
        "MlpPolicy", "Pendulum-v1", n_episodes=1, use_sde=True, reward_to_go=False, normalize_returns=True,
        loss_reduction="sum", ent_coef=0.01, max_grad_norm=None, seed=0, device="cpu",
    )  # fmt: skip
    model.learn(400)
    assert model._n_updates == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"baseline": "median"}, "baseline must be one of"),
        ({"loss_reduction": "avg"}, "loss_reduction must be one of"),
        ({"n_episodes": 0}, "n_episodes must be an int >= 1"),
        ({"n_steps": 0}, "n_steps must be an int >= 1"),
        ({"gamma": 2.0}, "gamma must be a float in \\[0.0, 1.0\\]"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"ent_coef": -1.0}, "ent_coef"),
        ({"n_critic_updates": -1}, "n_critic_updates must be an int >= 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be a float"),
        ({"critic_learning_rate": lambda _: -1.0}, "critic_learning_rate must be a schedule"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        REINFORCE("MlpPolicy", "CartPole-v1", **kwargs)


def test_learns_cartpole_quickly():
    model = REINFORCE("MlpPolicy", "CartPole-v1", n_episodes=8, seed=0, device="cpu")
    model.learn(20_000)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=5, deterministic=True)
    assert mean >= 150, mean


def test_learn_drops_partial_episodes_only_when_the_envs_are_reset():
    # reset_num_timesteps=True resets the envs, so an episode still running would continue in another;
    # reset_num_timesteps=False continues the same envs, so it is kept. A refused learn() changes neither.
    model = REINFORCE("MlpPolicy", "CartPole-v1", n_episodes=None, n_steps=8, seed=0)
    model.learn(8)
    running = [len(ep.rewards) for ep in model._episodes.running]
    assert sum(running) > 0
    with pytest.raises(ValueError, match=r"^log_interval must be "):
        model.learn(8, log_interval=0, reset_num_timesteps=True)
    assert [len(ep.rewards) for ep in model._episodes.running] == running
    model.learn(4, reset_num_timesteps=False)  # 8 more steps: the running episode goes on past 8 steps
    kept = [len(ep.rewards) for ep in model._episodes.running]
    assert kept[0] > 8, kept
    model.learn(0, reset_num_timesteps=True)
    assert [len(ep.rewards) for ep in model._episodes.running] == [0]


def _step(store: EpisodeStore, t: int, dones: list[bool]) -> None:
    n = len(dones)
    obs = np.full((n, 1), float(t))
    store.add(obs, np.zeros((n, 1)), np.ones(n), np.asarray(dones), [{} for _ in range(n)])


def test_episode_store_joined_mid_episode_records_whole_episodes_only():
    """An env whose running episode began before the store (a model loaded with force_reset=False) has its
    steps dropped until that episode ends: a tail of an episode is never taken for a whole one."""
    store = EpisodeStore(2)
    store.join(np.array([True, False]))  # env 0 starts an episode next, env 1 is in the middle of one
    for t, dones in enumerate([[False, False], [True, True], [False, False], [True, True]]):
        _step(store, t, dones)
    finished = store.pop_finished()
    lengths = sorted((len(ep.observations), float(ep.observations[0][0])) for ep in finished)
    assert lengths == [(2, 0.0), (2, 2.0), (2, 2.0)]  # env 0: steps 0-1 and 2-3; env 1: only steps 2-3
    with pytest.raises(ValueError, match="episode_starts must have 2 entries"):
        EpisodeStore(2).join(np.array([True]))


def test_loaded_with_force_reset_false_goes_on_from_the_next_episodes(tmp_path):
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    model = REINFORCE("MlpPolicy", env, n_episodes=1, seed=0)
    model.learn(30)
    model.save(tmp_path / "m")
    loaded = REINFORCE.load(tmp_path / "m", env=env, force_reset=False)
    started = np.asarray(model._last_episode_starts, dtype=bool)
    np.testing.assert_array_equal(loaded._episodes.skipping, ~started)  # joined the running envs at load
    loaded.learn(1, reset_num_timesteps=False)  # one step
    # the env that took the one step either stays skipped or ended its episode
    assert not any(loaded._episodes.skipping & started)
    assert all(len(ep.observations) == 0 for ep, skip in zip(loaded._episodes.running, ~started) if skip)


def test_max_grad_norm_is_the_attribute_load_sets_and_files_of_0_1_0_keep_none(tmp_path):
    model = REINFORCE("MlpPolicy", "CartPole-v1", max_grad_norm=None, n_episodes=1, seed=0)
    assert model.max_grad_norm is None
    model.save(tmp_path / "new")
    assert REINFORCE.load(tmp_path / "new").max_grad_norm is None
    assert REINFORCE.load(tmp_path / "new", max_grad_norm=0.1).max_grad_norm == 0.1
    model.max_grad_norm, model.max_grad_norm_value = 0.0, None  # as 0.1.0 stored max_grad_norm=None
    model.save(tmp_path / "old")
    loaded = REINFORCE.load(tmp_path / "old")
    assert loaded.max_grad_norm is None and not hasattr(loaded, "max_grad_norm_value")
    loaded.set_env(model.get_env())
    loaded.learn(50)  # with clipping at 0.0 the actor's gradient would be zeroed (a fresh Adam: no step)
    assert any(not th.equal(a, b) for a, b in zip(model._head.params, loaded._head.params, strict=True))
