"""Bad constructor arguments: every number, count and flag of every on-policy class is checked up front,
with an error that names the argument and the accepted values (not an ``int()``/``float()`` error from
deep inside SB3, and never a NaN in the parameters later)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_natural import ACKTR, DDPG, NAC, REINFORCE, TD3, FisherTRPO
from sb3_natural.common import checks

ON_POLICY = [NAC, FisherTRPO, REINFORCE, ACKTR]
# SB3's own arguments, passed through unchanged (SB3 checks or ignores them), and the ones that are objects
NOT_NUMBERS = {"policy", "env", "tensorboard_log", "policy_kwargs", "verbose", "seed", "device"}
NOT_NUMBERS |= {"_init_setup_model", "rollout_buffer_class", "rollout_buffer_kwargs"}


def _numeric_arguments(cls: type) -> list[tuple[str, object]]:
    """(name, default) of every constructor argument whose default is a bool, an int or a float."""
    found = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in NOT_NUMBERS or name == "self" or p.default is inspect.Parameter.empty:
            continue
        if isinstance(p.default, (bool, int, float)):
            found.append((name, p.default))
    return found


def _bad_values(default: object) -> list[object]:
    if isinstance(default, bool):
        return ["yes", 1.5, None]
    if isinstance(default, int):
        return ["8", 2.5, 4.0, True, float("nan")]
    return ["0.1", float("nan"), [0.1]]


CASES = [
    pytest.param(cls, name, bad, id=f"{cls.__name__}-{name}-{bad!r}")
    for cls in ON_POLICY
    for name, default in _numeric_arguments(cls)
    for bad in _bad_values(default)
]


@pytest.fixture(scope="module")
def vec_env():
    return make_vec_env("Pendulum-v1", n_envs=1, seed=0)


def test_the_table_covers_every_class_argument_kind():
    names = {cls.__name__: {name for name, _ in _numeric_arguments(cls)} for cls in ON_POLICY}
    assert {"n_steps", "gamma", "use_sde", "sde_sample_freq"} <= names["ACKTR"]
    assert {"kfac_decay", "momentum", "inverse_update_freq", "normalize_advantage"} <= names["ACKTR"]
    assert {"ridge", "cg_residual_tol", "discount_weighting", "cg_warm_start"} <= names["NAC"]
    assert {"line_search_shrinking_factor", "sub_sampling_factor", "cg_damping"} <= names["FisherTRPO"]
    assert {"reward_to_go", "normalize_returns", "ent_coef", "max_grad_norm"} <= names["REINFORCE"]
    assert all("stats_window_size" in found for found in names.values())


@pytest.mark.parametrize("cls, name, bad", CASES)
def test_bad_type_or_value_is_refused_naming_the_argument(cls, name, bad, vec_env):
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls("MlpPolicy", vec_env, **{name: bad})


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (NAC, {"target_kl": math.inf}),  # a step of infinite length: NaN parameters before this check
        (NAC, {"ridge": math.inf}),
        (FisherTRPO, {"target_kl": None}),  # FisherTRPO's line search needs a KL bound
        (FisherTRPO, {"cg_damping": math.nan}),
        (REINFORCE, {"ent_coef": math.inf}),  # inf * entropy gradient: NaN parameters before this check
        (REINFORCE, {"n_episodes": math.inf}),
        (REINFORCE, {"max_grad_norm": math.nan}),
        (ACKTR, {"kfac_stats_samples": 512.0}),
        (ACKTR, {"sde_sample_freq": -2}),
    ],
)
def test_values_that_used_to_pass_unchecked(cls, kwargs, vec_env):
    (name,) = kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls("MlpPolicy", vec_env, **kwargs)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (NAC, {"n_steps": np.int64(32), "gamma": 1, "normalize_advantage": np.bool_(False), "target_kl": None}),
        (FisherTRPO, {"cg_damping": 0, "batch_size": np.int32(16), "n_steps": 32}),
        (REINFORCE, {"max_grad_norm": math.inf, "n_episodes": None, "ent_coef": 0}),
        (ACKTR, {"max_grad_norm": 0, "momentum": 0, "kfac_decay": 0.0, "sde_sample_freq": 0, "kfac_stats_samples": None}),
    ],
)
def test_numpy_scalars_ints_for_floats_and_documented_special_values_are_accepted(cls, kwargs, vec_env):
    model = cls("MlpPolicy", vec_env, seed=0, **kwargs)
    for name, value in kwargs.items():
        if name in ("n_steps", "batch_size", "gamma", "target_kl", "n_episodes", "kfac_stats_samples", "momentum"):
            assert getattr(model, name) == value


# SB3's off-policy arguments, which TD3 and DDPG pass to SB3: each bad value below was accepted by SB3 and
# failed later (ZeroDivisionError, IndexError, RuntimeError) or trained on (gamma=-1, tau=-1, buffer_size=-1)
OFF_POLICY_BAD = [
    ("learning_rate", [0, -1e-3, math.inf, math.nan, "1e-3", None]),
    ("buffer_size", [0, -1, 2.5, math.inf, None]),
    ("learning_starts", [-1, 2.5, math.nan, "100"]),
    ("batch_size", [0, -1, 2.5, True, [1]]),
    ("tau", [-1, 1.5, math.nan, True, "0.005"]),
    ("gamma", [-1, 2.5, math.inf, None]),
    ("train_freq", [0, -1, 2.5, "1", (1, "steps"), (0, "episode"), (1.0, "step"), (1, "step", 2), [1]]),
    ("gradient_steps", [-2, 2.5, math.nan, None]),
    ("n_steps", [0, 2.5, math.inf]),
    ("optimize_memory_usage", [1, "yes", None]),
    ("action_noise", [0.1, "normal"]),
]
OFF_POLICY_CASES = [
    pytest.param(cls, name, bad, id=f"{cls.__name__}-{name}-{bad!r}")
    for cls in (TD3, DDPG)
    for name, bads in OFF_POLICY_BAD
    for bad in bads
] + [
    pytest.param(TD3, name, bad, id=f"TD3-{name}-{bad!r}")
    for name, bads in [  # DDPG takes none of these (SB3 refuses them as unexpected)
        ("policy_delay", [0, -1, 2.5]),
        ("stats_window_size", [0, -1, 2.5, None]),
        ("target_policy_noise", [-0.1, math.nan, math.inf]),
        ("target_noise_clip", [-0.5, math.nan, "0.5"]),
    ]
    for bad in bads
]


@pytest.mark.parametrize("cls, name, bad", OFF_POLICY_CASES)
def test_off_policy_bad_arguments_are_refused_naming_them(cls, name, bad, vec_env):
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls("MlpPolicy", vec_env, **{name: bad})


@pytest.mark.parametrize("cls", [TD3, DDPG])
def test_off_policy_documented_values_are_accepted_as_sb3_takes_them(cls, vec_env):
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    kwargs = {"learning_rate": np.float32(1e-3), "buffer_size": np.int64(500), "learning_starts": 0, "tau": 1,
              "gamma": 0, "gradient_steps": -1, "batch_size": 8, "seed": np.int64(0),
              "action_noise": NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))}  # fmt: skip
    freqs = [
        (2, (2, "step")),
        ((1, "episode"), (1, "episode")),
        ([3, "step"], (3, "step")),  # rl-zoo3's YAML list
        ((np.int64(4), "step"), (4, "step")),
        (TrainFreq(5, TrainFrequencyUnit.STEP), (5, "step")),  # a saved model's
    ]
    for train_freq, expected in freqs:
        model = cls("MlpPolicy", vec_env, train_freq=train_freq, **kwargs)
        assert (model.train_freq.frequency, model.train_freq.unit.value) == expected
        assert type(model.train_freq.frequency) is int
    assert type(model.learning_rate) is float and model.buffer_size == 500
    model.learn(20)  # gradient_steps=-1: as many as the steps collected; finite parameters after
    assert all(bool(np.isfinite(p.detach().numpy()).all()) for p in model.policy.parameters())


BASE_BAD = [
    ("policy_kwargs", ["net_arch=[8]", [8]]),
    ("seed", [-1, 2**32, 1.5, "0", True]),
    ("verbose", [-1, "1", 1.0]),
    ("device", ["gpu0", 0, None]),
    ("tensorboard_log", [3, True]),
]
BASE_CASES = [
    pytest.param(cls, name, bad, id=f"{cls.__name__}-{name}-{bad!r}")
    for cls in [*ON_POLICY, TD3, DDPG]
    for name, bads in BASE_BAD
    for bad in bads
] + [
    pytest.param(cls, f"{kind}_buffer_{what}", bad, id=f"{cls.__name__}-{kind}_buffer_{what}-{bad!r}")
    for cls, kind in [(NAC, "rollout"), (FisherTRPO, "rollout"), (ACKTR, "rollout"), (TD3, "replay"), (DDPG, "replay")]
    for what, bads in [("class", [dict, "RolloutBuffer", 3]), ("kwargs", ["x", 3])]
    for bad in bads
]


@pytest.mark.parametrize("cls, name, bad", BASE_CASES)
def test_sb3_base_arguments_are_refused_naming_them(cls, name, bad, vec_env):
    # SB3 raised "'str' object is not callable", numpy casting errors or "Cannot access accelerator device"
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls("MlpPolicy", vec_env, **{name: bad})


def test_sb3_base_arguments_accept_what_sb3_documents(tmp_path, vec_env):
    from stable_baselines3.common.buffers import DictReplayBuffer, RolloutBuffer

    checks.check_base_args({"seed": np.int64(2**32 - 1), "verbose": 2, "device": th.device("cpu"), "policy_kwargs": None})
    checks.check_base_args({"device": "cuda:1", "tensorboard_log": tmp_path, "rollout_buffer_class": RolloutBuffer})
    checks.check_base_args({"replay_buffer_class": DictReplayBuffer, "replay_buffer_kwargs": {}})
    model = NAC("MlpPolicy", vec_env, seed=np.uint32(7), device="cpu", rollout_buffer_class=RolloutBuffer, n_steps=16)
    assert model.seed == 7 and model.device == th.device("cpu")


LEARN_BAD = [
    ("total_timesteps", [-1, math.nan, "100", None, True]),
    ("callback", [3, "x", [3]]),
    ("log_interval", [0, -1, 2.5, "1"]),  # SB3: ZeroDivisionError for 0
    ("tb_log_name", [3]),
    ("reset_num_timesteps", ["no", None]),
    ("progress_bar", ["yes"]),
]


@pytest.mark.parametrize("cls", [*ON_POLICY, TD3, DDPG], ids=lambda c: c.__name__)
def test_learn_arguments_are_refused_naming_them_before_any_step(cls, vec_env):
    model = cls("MlpPolicy", vec_env, seed=0)
    for name, bads in LEARN_BAD:
        for bad in bads:
            kwargs = {"total_timesteps": 10, name: bad}
            with pytest.raises(ValueError, match=rf"^{name} must be "):
                model.learn(**kwargs)
    assert model.num_timesteps == 0


@pytest.mark.parametrize("cls", [*ON_POLICY, TD3, DDPG], ids=lambda c: c.__name__)
def test_learn_without_an_env_says_how_to_give_one(cls, vec_env, tmp_path):
    # SB3's on-policy learn failed on a bare `assert self.env is not None` (an empty message)
    cls("MlpPolicy", vec_env, seed=0).save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m")
    with pytest.raises(AssertionError, match=rf"^{cls.__name__} has no environment .*set_env\(env\)"):
        loaded.learn(10)
    loaded.set_env(vec_env)
    loaded.learn(1)
    assert loaded.num_timesteps >= 1


def test_learn_accepts_what_sb3_takes(vec_env):
    from stable_baselines3.common.callbacks import CallbackList, EveryNTimesteps

    calls = []
    model = TD3("MlpPolicy", vec_env, seed=0, learning_starts=5)
    model.learn(1e1, callback=lambda loc, glob: calls.append(1) is None, log_interval=None)  # a float, a callable
    model.learn(np.int64(5), callback=[EveryNTimesteps(5, CallbackList([]))], reset_num_timesteps=np.bool_(False))
    assert model.num_timesteps == 15 and len(calls) == 10


def test_check_off_policy_args_checks_only_what_the_sb3_class_takes():
    # DDPG has no policy_delay: left for SB3 to refuse as an unexpected argument, not judged as a value
    assert checks.check_off_policy_args({"policy_delay": 0}, accepted=["gamma"]) == {"policy_delay": 0}
    with pytest.raises(ValueError, match=r"^policy_delay must be an int >= 1"):
        checks.check_off_policy_args({"policy_delay": 0})
    with pytest.raises(TypeError, match="stats_window_size"):
        DDPG("MlpPolicy", "Pendulum-v1", stats_window_size=10)  # SB3's own refusal
    out = checks.check_off_policy_args({"train_freq": [2, "episode"], "learning_rate": np.float64(0.5)})
    assert out == {"train_freq": (2, "episode"), "learning_rate": 0.5} and type(out["learning_rate"]) is float


def test_argument_type_error_is_both_a_type_and_a_value_error():
    with pytest.raises(checks.ArgumentTypeError) as info:
        checks.check_int(1, n_steps="8")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert str(info.value) == "n_steps must be an int >= 1, got '8'"
    with pytest.raises(ValueError) as low:
        checks.check_int(1, n_steps=0)
    assert not isinstance(low.value, TypeError)  # the right type, a value out of range


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (lambda v: checks.check_int(0, x=v), [0, 7, np.int64(3), np.uint8(2)], [-1, 1.0, True, np.bool_(True), None, "1"]),
        (lambda v: checks.check_int(1, allow_none=True, x=v), [None, 1], [0, 0.5]),
        (lambda v: checks.check_bool(x=v), [True, False, np.bool_(True)], [1, 0, "True", None, 1.0]),
        (lambda v: checks.check_interval(0.0, 1.0, x=v), [0, 1, 0.5, np.float32(0.25)], [-0.1, 1.1, math.nan, "0.5", None]),
        (lambda v: checks.check_interval(0.0, 1.0, low_closed=False, high_closed=False, x=v), [0.5, 1e-9], [0.0, 1.0]),
        (lambda v: checks.check_interval(0.0, 1.0, high_closed=False, x=v), [0.0, 0.999], [1.0]),
        (lambda v: checks.check_max_grad_norm(v), [None, 0.5, math.inf, 3], [0.0, -1.0, math.nan, "0.5"]),
        (lambda v: checks.check_max_grad_norm(v, allow_zero=True), [0, 0.0], [-1e-9]),
        (lambda v: checks.check_positive(x=v), [1e-12, 3], [0, -1, math.inf, math.nan, None, "1"]),
        (lambda v: checks.check_nonnegative(x=v), [0, 2.5], [-1e-12, math.inf, math.nan, None]),
    ],
)
def test_checks_accept_and_refuse(check, good, bad):
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(ValueError, match="must be"):
            check(value)


def _pure_function_calls():
    """(id, call, argument named in the error) for the public pure functions of ``sb3_natural.common``."""
    import torch as th
    from stable_baselines3 import PPO

    import sb3_natural.common as c

    th.manual_seed(0)
    policy = PPO("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, seed=0, device="cpu").policy
    obs, actions, adv = th.randn(12, 3), th.randn(12, 1), th.randn(12)
    scores = c.per_sample_scores(policy, obs, actions)
    fisher = c.empirical_fisher(scores)
    g = th.randn(scores.shape[1])

    def matvec(v):
        return fisher @ v + 1e-3 * v

    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy, MultiInputActorCriticPolicy

    def built(cls, obs_space, action_space):
        return cls(obs_space, action_space, lambda _: 1e-3, net_arch=[8])

    box = spaces.Box(-1, 1, (3,))
    categorical = built(ActorCriticPolicy, box, spaces.Discrete(4))
    multi = built(ActorCriticPolicy, box, spaces.MultiDiscrete([3, 2]))
    binary = built(ActorCriticPolicy, box, spaces.MultiBinary(2))
    dict_policy = built(MultiInputActorCriticPolicy, spaces.Dict({"a": box, "b": spaces.Discrete(3)}), spaces.Discrete(2))
    ints = th.zeros(12, dtype=th.long)
    # observations that are not a batch of the space's (SB3 failed in a matrix product), discrete actions
    # outside the space (SB3 failed in gather, or took 0.5 as 0): named, before any computation
    obs_and_actions = [
        ("scores_obs_shape", lambda: c.per_sample_scores(policy, th.randn(12, 4), actions), "obs"),
        ("scores_unbatched_obs", lambda: c.per_sample_scores(policy, obs[0], actions[:1]), "obs"),
        ("fvp_obs_shape", lambda: c.AnalyticFVP(policy, th.randn(12, 2)), "obs"),
        ("kfac_obs_shape", lambda: c.KFAC(policy).update(th.randn(12, 2)), "obs"),
        ("kfac_value_unbatched_obs", lambda: c.KFAC.for_value(policy).update(obs[0]), "obs"),
        ("gram_obs_shape", lambda: c.score_gram(policy, th.randn(12, 3, 1), actions), "obs"),
        ("dict_obs_missing_key", lambda: c.per_sample_scores(dict_policy, {"a": obs}, ints[:, None]), "obs"),
        ("dict_obs_shape", lambda: c.per_sample_scores(dict_policy, {"a": obs[:, :2], "b": ints}, ints), "obs\\['a'\\]"),
        ("discrete_fraction", lambda: c.per_sample_scores(categorical, obs, ints + 0.5), "actions"),
        ("discrete_range", lambda: c.per_sample_scores(categorical, obs, ints + 4), "actions"),
        ("discrete_negative", lambda: c.weighted_score_sum(categorical, obs, ints - 1, adv), "actions"),
        ("multi_discrete_column", lambda: c.per_sample_scores(multi, obs, th.tensor([[2, 2]] * 12)), "actions"),
        ("multi_binary_two", lambda: c.score_products(binary, obs, th.full((12, 2), 2.0), th.zeros(24 * 4)), "actions"),
    ]
    numbers = [
        ("analytic_fvp_nan", lambda: c.AnalyticFVP(policy, obs, damping=math.nan), "damping"),
        ("direct_fvp_str", lambda: c.DirectFVP(policy, obs, damping="0.1"), "damping"),
        ("empirical_fvp_inf", lambda: c.EmpiricalFVP(policy, obs, actions, damping=math.inf), "damping"),
        ("dense_solve_nan", lambda: c.dense_solve(fisher, g, damping=math.nan), "damping"),
        ("dual_solve_n0", lambda: c.dual_solve(scores, g, 1e-3, 0), "n"),
        ("dual_solve_n_float", lambda: c.dual_solve(scores, g, 1e-3, 2.5), "n"),
        ("dual_solve_nan", lambda: c.dual_solve(scores, g, math.nan, 12), "damping"),
        ("cg_max_iter_float", lambda: c.conjugate_gradient(matvec, g, max_iter=2.5), "max_iter"),
        ("cg_tol_negative", lambda: c.conjugate_gradient(matvec, g, residual_tol=-1.0), "residual_tol"),
        ("cg_tol_nan", lambda: c.conjugate_gradient(matvec, g, residual_tol=math.nan), "residual_tol"),
        ("cg_x0_shape", lambda: c.conjugate_gradient(matvec, g, x0=th.zeros(g.shape[0] + 1)), "x0"),
        ("lstsq_ridge_nan", lambda: c.compatible_least_squares(scores, adv, math.nan), "ridge"),
        ("lstsq_ridge_none", lambda: c.compatible_least_squares(scores, adv, None), "ridge"),
        ("lstsq_weights_negative", lambda: c.compatible_least_squares(scores, adv, 1e-3, weights=-th.ones(12)), "weights"),
        (
            "lstsq_weights_nan",
            lambda: c.compatible_least_squares(scores, adv, 1e-3, weights=th.full((12,), math.nan)),
            "weights",
        ),
        ("gram_weights_negative", lambda: c.gram_least_squares(scores @ scores.T, adv, 1e-3, weights=-th.ones(12)), "weights"),
        ("gram_weights_shape", lambda: c.gram_least_squares(scores @ scores.T, adv, 1e-3, weights=th.ones(5)), "weights"),
        ("gram_ridge_nan", lambda: c.gram_least_squares(scores @ scores.T, adv, math.nan), "ridge"),
        ("scores_chunk_float", lambda: c.per_sample_scores(policy, obs, actions, chunk_size=2.5), "chunk_size"),
        ("scores_chunk_str", lambda: c.per_sample_scores(policy, obs, actions, chunk_size="4"), "chunk_size"),
        ("kfac_freq_float", lambda: c.KFAC(policy, inverse_update_freq=2.5), "inverse_update_freq"),
        ("kfac_stats_float", lambda: c.KFAC(policy, stats_samples=3.0), "stats_samples"),
        ("kfac_decay_nan", lambda: c.KFAC(policy, decay=math.nan), "decay"),
        ("squash_eps", lambda: c.OutputDistribution("diag_gaussian", (2,), squash=True, squash_eps=-1.0), "squash_eps"),
    ]
    return obs_and_actions + numbers


PURE_CALLS = _pure_function_calls()


@pytest.mark.parametrize("call, name", [pytest.param(f, n, id=i) for i, f, n in PURE_CALLS])
def test_pure_functions_refuse_bad_arguments_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must "):
        call()


# load(path, env, **kwargs): SB3 sets each keyword on the model as given; the constructor's arguments among
# them are checked as the constructor checks them (n_steps=0 failed with UnboundLocalError in the next
# rollout, gamma=2.0 and fisher="bogus" trained on).
LOAD_CASES = [
    (ACKTR, "fisher", "bogus"),
    (ACKTR, "n_steps", 0),
    (ACKTR, "momentum", 2.0),
    (NAC, "solver", "qr"),
    (NAC, "gamma", 2.0),
    (FisherTRPO, "target_kl", -1.0),
    (REINFORCE, "max_grad_norm", 0.0),
    (TD3, "policy_delay", 0),
    (DDPG, "tau", -1.0),
]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, vec_env):
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for cls in {c for c, _, _ in LOAD_CASES}:
        kwargs = {"learning_starts": 10} if cls in (TD3, DDPG) else {"n_steps": 16}
        if cls is REINFORCE:
            kwargs = {"n_episodes": None, "n_steps": 16}
        model = cls("MlpPolicy", vec_env, seed=0, **kwargs)
        model.learn(16)
        paths[cls] = folder / cls.__name__
        model.save(paths[cls])
    return paths


@pytest.mark.parametrize("cls, name, bad", LOAD_CASES, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_load_refuses_bad_constructor_arguments_naming_them(cls, name, bad, saved_models, vec_env):
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls.load(saved_models[cls], env=vec_env, **{name: bad})


def test_load_takes_good_constructor_arguments_and_names_them_when_the_state_does_not_fit(saved_models, vec_env):
    loaded = ACKTR.load(saved_models[ACKTR], env=vec_env, target_kl=0.01, n_steps=8, verbose=0)
    assert (loaded.target_kl, loaded.n_steps, loaded.rollout_buffer.buffer_size) == (0.01, 8, 8)
    loaded.learn(16, reset_num_timesteps=False)
    # saved with the joint K-FAC critic: its state has the value's blocks, which critic="adam" has not
    with pytest.raises((ValueError, RuntimeError), match=r"loading with critic='adam' failed"):
        ACKTR.load(saved_models[ACKTR], env=vec_env, critic="adam")


def test_load_of_a_subclass_checks_through_its_constructor(saved_models, vec_env):
    class Tagged(ACKTR):
        def __init__(self, policy, env, tag="a", **kwargs):
            if tag not in ("a", "b"):
                raise ValueError(f"tag must be 'a' or 'b', got {tag!r}")
            super().__init__(policy, env, **kwargs)
            self.tag = tag

    loaded = Tagged.load(saved_models[ACKTR], env=vec_env, n_steps=8, tag="b")
    assert (loaded.n_steps, loaded.tag) == (8, "b")
    with pytest.raises(ValueError, match=r"^n_steps must be "):  # the base's check, through **kwargs
        Tagged.load(saved_models[ACKTR], env=vec_env, n_steps=0)
    with pytest.raises(ValueError, match=r"^tag must be "):
        Tagged.load(saved_models[ACKTR], env=vec_env, tag="c")

    class NeedsEnv(ACKTR):
        def __init__(self, policy, env, **kwargs):
            if env is None and kwargs.get("n_steps") is not None:
                raise RuntimeError("NeedsEnv checks n_steps against its env")  # not the user's error
            super().__init__(policy, env, **kwargs)

    assert NeedsEnv.load(saved_models[ACKTR], env=vec_env, n_steps=8).n_steps == 8


def test_load_sets_the_arguments_as_the_constructor_stores_them(saved_models, vec_env):
    """What the constructor converts, load converts too: rl-zoo3's YAML gives train_freq as a 2-list (SB3
    took it for a frequency and failed), a numpy seed failed in Python's random.seed."""
    loaded = TD3.load(saved_models[TD3], env=vec_env, train_freq=[4, "step"], seed=np.int64(3))
    loaded.learn(20, reset_num_timesteps=False)
    assert (loaded.train_freq.frequency, loaded.train_freq.unit.value, loaded.seed) == (4, "step", 3)
    assert type(loaded.seed) is int
