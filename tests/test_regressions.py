"""Regression tests for the defects of issue 22, one group per defect; each failed before its fix.

1. torch.func replaced the policy's parameters (tied names of a shared features extractor).
2. FisherTRPO's (and REINFORCE's) critic epochs moved the actor through a shared features extractor.
3. TD3/DDPG ``load`` rejected the policy_kwargs the model was built with.
4. A linear TD3/DDPG actor came back from ``Actor.load`` with a tanh.
5. A linear actor's own ``predict`` left the action space.
6. REINFORCE crashed on a Dict observation with a Python-int Discrete entry at a time-limit truncation.
7. FisherTRPO did not validate gamma/gae_lambda; NAC accepted discount_weighting + cg + analytic.
8. A NaN/inf only in a truncated episode's ``terminal_observation`` went into the value bootstrap.
Plus: ``load`` of a truncated file names the file.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import make_obs, make_policy
from gymnasium import spaces
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from torch import nn

from sb3_natural import ACKTR, DDPG, NAC, REINFORCE, TD3, FisherTRPO
from sb3_natural.common.fisher import AnalyticFVP, DirectFVP, EmpiricalFVP, dense_fisher, fisher_rows
from sb3_natural.common.heads import ActorHead
from sb3_natural.common.scores import per_sample_scores


class LayerNormExtractor(BaseFeaturesExtractor):
    """A features extractor with a parameter that is neither Linear nor Conv2d (the layerwise fallback)."""

    def __init__(self, observation_space: spaces.Space, features_dim: int = 6) -> None:
        super().__init__(observation_space, features_dim)
        self.flatten = FlattenExtractor(observation_space)
        self.net = nn.Sequential(nn.Linear(self.flatten.features_dim, features_dim), nn.LayerNorm(features_dim), nn.Tanh())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(self.flatten(observations))


LN_KWARGS = {"features_extractor_class": LayerNormExtractor}


def _param_identity(policy: nn.Module) -> list[tuple[str, int, type]]:
    return [(n, id(p), type(p)) for n, p in policy.named_parameters(remove_duplicate=False)]


# ----------------------------------------------------------------------------- 1
POLICY_KINDS = {
    "mlp": {"obs_kind": "box"},
    "cnn": {"obs_kind": "image"},
    "multi_input": {"obs_kind": "dict"},
    "layernorm": {"obs_kind": "box", **LN_KWARGS},
}

ROUTINES = {
    "scores_layerwise": lambda head, obs, act: per_sample_scores(head, obs, act, method="layerwise"),
    "scores_vmap": lambda head, obs, act: per_sample_scores(head, obs, act, method="vmap"),
    "scores_loop": lambda head, obs, act: per_sample_scores(head, obs, act, method="loop"),
    "fisher_rows": lambda head, obs, act: fisher_rows(head, obs),
    "dense_fisher": lambda head, obs, act: dense_fisher(head, obs),
    "analytic_fvp": lambda head, obs, act: AnalyticFVP(head, obs)(th.ones(head.num_params, dtype=th.float64)),
    "empirical_fvp": lambda head, obs, act: EmpiricalFVP(head, obs, act)(th.ones(head.num_params, dtype=th.float64)),
    "direct_fvp": lambda head, obs, act: DirectFVP(head, obs)(th.ones(head.num_params, dtype=th.float64)),
}


def _actions(policy, obs) -> th.Tensor:
    n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
    space = policy.action_space
    space.seed(0)
    return th.as_tensor(np.stack([space.sample() for _ in range(n)]), dtype=th.float64)


@pytest.mark.parametrize("routine", list(ROUTINES))
@pytest.mark.parametrize("kind", list(POLICY_KINDS))
def test_routines_keep_the_policy_parameters_the_same_objects(kind, routine):
    if kind == "cnn" and routine == "dense_fisher":
        pytest.skip("P x P is 40 GB for NatureCNN; fisher_rows covers the same code path")
    policy = make_policy("box", **POLICY_KINDS[kind])
    obs = make_obs(policy, 6)
    before = _param_identity(policy)
    head = ActorHead(policy)
    ROUTINES[routine](head, obs, _actions(policy, obs))
    assert _param_identity(policy) == before
    assert all(type(p) is nn.Parameter for p in policy.parameters())


@pytest.mark.parametrize("method", ["layerwise", "vmap"])
def test_fisher_from_a_head_reused_after_scores_equals_a_fresh_heads(method):
    policy = make_policy("box", **LN_KWARGS)
    obs = make_obs(policy, 10)
    head = ActorHead(policy)
    per_sample_scores(head, obs, _actions(policy, obs), method=method)
    v = th.randn(head.num_params, generator=th.Generator().manual_seed(0), dtype=th.float64)
    reused = AnalyticFVP(head, obs)(v)
    fresh = AnalyticFVP(ActorHead(policy), obs)(v)
    th.testing.assert_close(reused, fresh, rtol=1e-12, atol=1e-14)
    # the LayerNorm weight block is not lost
    ln = policy.features_extractor.net[1].weight
    i = [id(p) for p in head.params].index(id(ln))
    off = head.offsets[i]
    assert fresh[off : off + ln.numel()].abs().max() > 0


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (FisherTRPO, {"solver": "dense", "batch_size": 32}),
        (FisherTRPO, {"solver": "cg", "batch_size": 32}),
        (NAC, {"solver": "lstsq"}),
        (NAC, {"solver": "cg", "fisher": "analytic"}),
        (ACKTR, {}),
        (ACKTR, {"fisher": "sample", "critic": "adam"}),
    ],
    ids=["trpo_dense", "trpo_cg", "nac_lstsq", "nac_cg_analytic", "acktr_joint", "acktr_sample_adam"],
)
def test_several_updates_with_a_layernorm_extractor(cls, kwargs):
    model = cls("MlpPolicy", "CartPole-v1", n_steps=32, seed=0, device="cpu", policy_kwargs=LN_KWARGS, **kwargs)
    model.learn(4 * 32)
    assert model._n_updates == 4
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert all(type(p) is nn.Parameter for p in model.policy.parameters())


# ----------------------------------------------------------------------------- 2
ON_POLICY = [
    (NAC, {"n_steps": 64}),
    (NAC, {"n_steps": 64, "solver": "cg", "fisher": "analytic"}),
    (FisherTRPO, {"n_steps": 64, "batch_size": 32}),
    (REINFORCE, {"n_episodes": None, "n_steps": 64}),
    (ACKTR, {"n_steps": 64, "critic": "adam"}),
]
ON_POLICY_IDS = ["nac", "nac_cg", "fisher_trpo", "reinforce", "acktr_adam"]


def _actor_after_one_update(cls, env, policy, kwargs, n_critic_updates, share):
    model = cls(
        policy,
        env,
        seed=0,
        device="cpu",
        n_critic_updates=n_critic_updates,
        policy_kwargs={**kwargs.pop("policy_kwargs", {}), "share_features_extractor": share},
        **kwargs,
    )
    model.learn(64)
    return [p.detach().clone() for p in model._head.params], model


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("cls, kwargs", ON_POLICY, ids=ON_POLICY_IDS)
def test_critic_epochs_never_move_the_actor(cls, kwargs, share):
    env = "CartPole-v1"
    with_critic, model = _actor_after_one_update(cls, env, "MlpPolicy", {**kwargs, "policy_kwargs": LN_KWARGS}, 3, share)
    without, _ = _actor_after_one_update(cls, env, "MlpPolicy", {**kwargs, "policy_kwargs": LN_KWARGS}, 0, share)
    assert model._n_updates == 1
    for a, b in zip(with_critic, without, strict=True):
        assert th.equal(a, b)
    # the critic did train: its value head moved
    assert model.policy.optimizer.state


@pytest.mark.parametrize("cls, kwargs", ON_POLICY, ids=ON_POLICY_IDS)
def test_critic_epochs_never_move_a_shared_cnn(cls, kwargs):
    def env():
        image_env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
        image_env.observation_space.seed(0)  # its observations are samples of this space
        return image_env

    policy_kwargs = {"features_extractor_kwargs": {"features_dim": 8}}
    kw = {**kwargs, "policy_kwargs": policy_kwargs}
    with_critic, model = _actor_after_one_update(cls, env(), "CnnPolicy", dict(kw), 2, True)
    without, _ = _actor_after_one_update(cls, env(), "CnnPolicy", dict(kw), 0, True)
    cnn_ids = {id(p) for p in model.policy.features_extractor.parameters()}
    assert cnn_ids <= {id(p) for p in model._head.params}  # the shared CNN is the actor's
    assert not cnn_ids & {id(p) for g in model.policy.optimizer.param_groups[-1:] for p in g["params"]}
    for a, b in zip(with_critic, without, strict=True):
        assert th.equal(a, b)


# ----------------------------------------------------------------------------- 3, 4, 5
DETERMINISTIC = [
    (cls, output, transform) for cls in (TD3, DDPG) for output in ("tanh", "linear") for transform in (None, "invert")
]
DET_IDS = [f"{c.__name__}-{o}-{t}" for c, o, t in DETERMINISTIC]


def _deterministic_model(cls, output, transform):
    return cls(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=20,
        seed=0,
        device="cpu",
        actor_output=output,
        action_grad_transform=transform,
        policy_kwargs={"net_arch": [32]},
    )


@pytest.mark.parametrize("cls, output, transform", DETERMINISTIC, ids=DET_IDS)
def test_load_accepts_the_policy_kwargs_the_model_was_built_with(cls, output, transform, tmp_path):
    model = _deterministic_model(cls, output, transform)
    model.learn(40)
    model.save(tmp_path / "m.zip")
    assert "actor_output" not in model.policy_kwargs  # (SB3's DDPG adds n_critics=1 itself)
    loaded = cls.load(tmp_path / "m.zip", policy_kwargs={"net_arch": [32]}, device="cpu")
    assert loaded.actor_output == output and loaded.policy.actor_output == output
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_policy_kwargs_actor_output_must_agree_with_the_argument():
    with pytest.raises(ValueError, match="actor_output"):
        TD3("MlpPolicy", "Pendulum-v1", actor_output="tanh", policy_kwargs={"actor_output": "linear"})
    with pytest.raises(ValueError, match="actor_output must be one of"):
        TD3("MlpPolicy", "Pendulum-v1", actor_output="relu")


@pytest.mark.parametrize("cls, output, transform", DETERMINISTIC, ids=DET_IDS)
def test_actor_save_load_keeps_its_output_layer(cls, output, transform, tmp_path):
    model = _deterministic_model(cls, output, transform)
    actor = model.policy.actor
    actor.save(tmp_path / "actor.pt")
    loaded = type(actor).load(tmp_path / "actor.pt", device="cpu")
    assert isinstance(loaded.mu[-1], nn.Tanh) == (output == "tanh")
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(5)]))
    with th.no_grad():
        th.testing.assert_close(loaded(obs), actor(obs), rtol=0, atol=0)


@pytest.mark.parametrize("cls, output, transform", DETERMINISTIC, ids=DET_IDS)
def test_actor_and_policy_predict_inside_the_space_and_agree(cls, output, transform):
    model = _deterministic_model(cls, output, transform)
    with th.no_grad():  # push the actor's raw output far outside [-1, 1]
        model.policy.actor.mu[-2 if output == "tanh" else -1].bias.fill_(5.0)
    space = model.action_space
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    from_policy, _ = model.policy.predict(obs, deterministic=True)
    from_actor, _ = model.policy.actor.predict(obs, deterministic=True)
    assert all(space.contains(a.astype(space.dtype)) for a in from_actor)
    assert all(space.contains(a.astype(space.dtype)) for a in from_policy)
    np.testing.assert_array_equal(from_actor, from_policy)


# ----------------------------------------------------------------------------- 6
class _DictIntEnv(gym.Env):
    """Dict observation whose Discrete entry is a Python int, cut by a time limit every 5 steps."""

    observation_space = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, (2,), np.float32), "flag": spaces.Discrete(3)})
    action_space = spaces.Discrete(2)

    def __init__(self, final_value: float = 0.5) -> None:
        self.t = 0
        self.final_value = final_value

    def _obs(self, value: float) -> dict:
        return {"pos": np.full(2, value, dtype=np.float32), "flag": int(self.t % 3)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(0.1), {}

    def step(self, action):
        self.t += 1
        truncated = self.t >= 5
        return self._obs(self.final_value if truncated else 0.1), 1.0, False, truncated, {}


ON_POLICY_DICT = [
    (REINFORCE, {"n_episodes": 2, "baseline": "value"}),
    (NAC, {"n_steps": 16}),
    (FisherTRPO, {"n_steps": 16, "batch_size": 16}),
    (ACKTR, {"n_steps": 16}),
]


@pytest.mark.parametrize("cls, kwargs", ON_POLICY_DICT, ids=[c.__name__ for c, _ in ON_POLICY_DICT])
def test_dict_observation_with_python_int_discrete_entry(cls, kwargs):
    assert _DictIntEnv.observation_space.contains(_DictIntEnv().reset()[0])
    model = cls("MultiInputPolicy", _DictIntEnv(), seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **kwargs)
    model.learn(32)
    assert model._n_updates >= 1


# ----------------------------------------------------------------------------- 7
@pytest.mark.parametrize("name, value", [("gamma", 1.5), ("gamma", -0.1), ("gae_lambda", 2.0)])
@pytest.mark.parametrize("cls", [FisherTRPO, NAC, ACKTR])
def test_discount_factors_are_validated(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls("MlpPolicy", "CartPole-v1", **{name: value})


def test_reinforce_validates_gamma():
    with pytest.raises(ValueError, match="gamma"):
        REINFORCE("MlpPolicy", "CartPole-v1", gamma=1.5)


@pytest.mark.parametrize("cls", [NAC, FisherTRPO, REINFORCE, ACKTR])
def test_rates_given_as_numpy_scalars_are_taken(cls):
    """A numpy scalar rate (e.g. read from an array or a config parsed with numpy) passed our check and
    then failed SB3's FloatSchedule with an AssertionError; it is now taken as the float it is."""
    kwargs = {"learning_rate": np.float32(0.05)}
    if cls is not FisherTRPO:
        kwargs["critic_learning_rate"] = np.float64(1e-3)
    model = cls("MlpPolicy", "CartPole-v1", **kwargs)
    assert model.lr_schedule(1.0) == pytest.approx(0.05)
    if cls is not FisherTRPO:
        assert model.critic_lr_schedule(1.0) == pytest.approx(1e-3)
    model.learn(2 * model.n_steps)


def test_nac_rejects_discount_weighting_with_analytic_cg_at_construction():
    with pytest.raises(ValueError, match="discount_weighting"):
        NAC("MlpPolicy", "CartPole-v1", discount_weighting=True, solver="cg", fisher="analytic")
    NAC("MlpPolicy", "CartPole-v1", discount_weighting=True, solver="cg", fisher="empirical")


# ----------------------------------------------------------------------------- 8
class _InfTerminalObservation(gym.Wrapper):
    """CartPole cut by a time limit after 10 steps, whose last observation (only) is inf."""

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, _, _, info = self.env.step(action)
        self.t += 1
        if self.t >= 10:
            return np.full_like(obs, np.inf), reward, False, True, info
        return obs, reward, False, False, info


TERMINAL_CASES = [
    (NAC, {"n_steps": 32}),
    (FisherTRPO, {"n_steps": 32, "batch_size": 32}),
    (REINFORCE, {"n_episodes": 2, "baseline": "value"}),
    (ACKTR, {"n_steps": 32}),
    (TD3, {"learning_starts": 5}),
    (DDPG, {"learning_starts": 5}),
]


@pytest.mark.parametrize("cls, kwargs", TERMINAL_CASES, ids=[c.__name__ for c, _ in TERMINAL_CASES])
def test_non_finite_terminal_observation_gives_clear_error(cls, kwargs):
    env_id = "Pendulum-v1" if cls in (TD3, DDPG) else "CartPole-v1"
    env = _InfTerminalObservation(gym.make(env_id))
    model = cls("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **kwargs)
    with pytest.raises(ValueError, match=r"observations contain NaN or inf.*terminal_observation"):
        model.learn(64)


# ----------------------------------------------------------------------------- load of a damaged file
@pytest.mark.parametrize("cls, env_id", [(NAC, "CartPole-v1"), (ACKTR, "CartPole-v1"), (TD3, "Pendulum-v1")])
def test_load_of_a_truncated_file_names_it(cls, env_id, tmp_path):
    path = tmp_path / "model.zip"
    cls("MlpPolicy", env_id, policy_kwargs={"net_arch": [8]}).save(path)
    data = path.read_bytes()
    for size in (len(data) // 2, 30):
        cut = tmp_path / f"cut{size}.zip"
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=f"cut{size}.zip"):
            cls.load(cut)
