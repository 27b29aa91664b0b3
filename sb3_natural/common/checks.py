"""Checks shared by every class: argument values (a ``ValueError`` naming the argument and the accepted
values) and NaN/inf in rewards and observations (a clear error before a value reaches a buffer)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def check_finite_rewards(rewards: np.ndarray) -> None:
    """Raise a clear error for NaN/inf in rewards."""
    if not np.isfinite(rewards).all():
        raise ValueError(
            "rewards contain NaN or inf; check the environment or wrap it with VecCheckNan / VecNormalize(clip_reward=...)"
        )


def check_finite_rollout(observations: object, rewards: np.ndarray) -> None:
    """Raise a clear error for NaN/inf in a rollout's observations or rewards."""
    check_finite_rewards(rewards)
    check_finite_observations(observations)


def has_nonfinite(observations: object) -> bool:
    """True when a (dict of) float observation array holds NaN or inf."""
    obs_items = observations.values() if isinstance(observations, dict) else [observations]
    for obs in obs_items:
        arr = np.asarray(obs)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return True
    return False


NONFINITE_OBS_MESSAGE = "observations contain NaN or inf; check the environment or wrap it with VecCheckNan"


def check_finite_observations(observations: object) -> None:
    """Raise a clear error for NaN/inf in observations."""
    if has_nonfinite(observations):
        raise ValueError(NONFINITE_OBS_MESSAGE)


def check_terminal_observations(infos: list[dict], dones: np.ndarray, truncated_only: bool = True) -> None:
    """Raise the NaN/inf observation error for a finished episode's ``infos[i]["terminal_observation"]``.

    On-policy classes bootstrap an episode cut by a time limit with ``V(terminal_observation)``
    (``truncated_only=True``: only those are read); off-policy classes store it as the next observation
    of every finished episode (``truncated_only=False``), where even a terminal step's ``0 * Q`` of an
    inf is NaN. A NaN/inf there otherwise enters the returns or targets without failing anywhere.
    """
    for info, done in zip(infos, dones):
        if not done or (truncated_only and not info.get("TimeLimit.truncated", False)):
            continue
        final = info.get("terminal_observation")
        if final is not None and has_nonfinite(final):
            raise ValueError(f"{NONFINITE_OBS_MESSAGE} (in infos['terminal_observation'] of a truncated episode)")


@contextmanager
def nonfinite_observations_named(last_obs: Callable[[], object]) -> Iterator[None]:
    """Turn the distribution error that a NaN/inf observation causes inside SB3's rollout collection
    into a clear error naming the observations (no per-step cost: checked only once an error is raised).
    """
    try:
        yield
    except ValueError as err:
        if has_nonfinite(last_obs()):
            raise ValueError(NONFINITE_OBS_MESSAGE) from err
        raise


class ArgumentTypeError(TypeError, ValueError):
    """A constructor argument of the wrong type (a string for a number, a float for a count, None where
    None is not accepted). A ``TypeError``, and a ``ValueError`` like every other bad argument of this
    package, so that ``except ValueError`` catches every rejected argument."""


def is_real(value: object) -> bool:
    """A real number (Python or numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool: what SB3 sizes buffers and loops with."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_finite_real(value: object) -> bool:
    return is_real(value) and math.isfinite(value)  # type: ignore[arg-type]


def _reject(name: str, accepted: str, value: object, wrong_type: bool) -> None:
    error = ArgumentTypeError if wrong_type else ValueError
    raise error(f"{name} must be {accepted}, got {value!r}")


def check_int(minimum: int = 1, allow_none: bool = False, **values: object) -> None:
    """Raise naming the first argument that is not an int >= ``minimum`` (or None, where ``allow_none``);
    a float, even 10.0, is refused: SB3 sizes its buffers and loops with these."""
    _check_ints(minimum, allow_none, values)


def _check_ints(minimum: int, allow_none: bool, values: dict[str, object]) -> None:
    accepted = f"an int >= {minimum}{' or None' if allow_none else ''}"
    for name, value in values.items():
        if value is None and allow_none:
            continue
        if not is_int(value):
            _reject(name, accepted, value, wrong_type=True)
        if value < minimum:  # type: ignore[operator]
            _reject(name, accepted, value, wrong_type=False)


def check_at_least_one(**values: object) -> None:
    """Raise naming the first argument that is not an int >= 1."""
    _check_ints(1, False, values)


def check_bool(**values: object) -> None:
    """Raise naming the first argument that is not True or False (a Python or numpy bool)."""
    for name, value in values.items():
        if not isinstance(value, (bool, np.bool_)):
            _reject(name, "True or False", value, wrong_type=True)


def check_interval(low: float, high: float, low_closed: bool = True, high_closed: bool = True, **values: object) -> None:
    """Raise naming the first argument that is not a real number in the interval (``[low, high]``,
    ``(low, high)`` or half-open, by ``low_closed`` / ``high_closed``); NaN is in no interval."""
    _check_intervals(low, high, low_closed, high_closed, values)


def _check_intervals(low: float, high: float, low_closed: bool, high_closed: bool, values: dict[str, object]) -> None:
    accepted = f"a float in {'[' if low_closed else '('}{low}, {high}{']' if high_closed else ')'}"
    for name, value in values.items():
        if not is_real(value):
            _reject(name, accepted, value, wrong_type=True)
        v = float(value)  # type: ignore[arg-type]
        above = v >= low if low_closed else v > low
        below = v <= high if high_closed else v < high
        if not (above and below):
            _reject(name, accepted, value, wrong_type=False)


def check_positive(allow_none: bool = False, **values: float | None) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number > 0 (or None, where
    ``allow_none``)."""
    accepted = f"a finite float > 0{' or None' if allow_none else ''}"
    for name, value in values.items():
        if value is None and allow_none:
            continue
        if not (_is_finite_real(value) and value > 0):  # type: ignore[operator]
            _reject(name, accepted, value, wrong_type=not is_real(value))


def check_nonnegative(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number >= 0."""
    for name, value in values.items():
        if not (_is_finite_real(value) and value >= 0):
            _reject(name, "a finite float >= 0", value, wrong_type=not is_real(value))


def check_max_grad_norm(value: object, allow_zero: bool = False) -> None:
    """Raise naming ``max_grad_norm`` unless it is None (no clipping), a float > 0 (``inf``: no
    clipping) or, where ``allow_zero``, 0 (no clipping)."""
    accepted = f"a float {'>=' if allow_zero else '>'} 0 or None"
    if value is None:
        return
    if not is_real(value):
        _reject("max_grad_norm", accepted, value, wrong_type=True)
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v) or v < 0 or (v == 0 and not allow_zero):
        _reject("max_grad_norm", accepted, value, wrong_type=False)


def check_weights(weights: th.Tensor | None, n: int) -> None:
    """Raise naming ``weights`` unless it is None or a finite, non-negative tensor of shape ``[n]``
    (per-sample weights ``c_i`` of a least-squares fit: ``sqrt(c_i)`` scales sample ``i``)."""
    if weights is None:
        return
    if not isinstance(weights, th.Tensor):
        _reject("weights", f"a finite non-negative tensor of shape [{n}] or None", weights, wrong_type=True)
    accepted = f"weights must be a finite non-negative tensor of shape [{n}]"
    if tuple(weights.shape) != (n,):
        raise ValueError(f"{accepted}, got shape {tuple(weights.shape)}")
    if not bool(th.isfinite(weights).all()):
        raise ValueError(f"{accepted}, got NaN or inf entries")
    if bool((weights < 0).any()):
        raise ValueError(f"{accepted}, got {int((weights < 0).sum())} negative entries")


def batch_norm_layers(modules: nn.Module | Iterable[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of the BatchNorm layers inside ``modules`` (``(name, module)`` pairs such as
    :func:`~sb3_natural.common.heads.actor_modules`, or one module, searched whole), each once: what
    :func:`check_samples_independent` looks at, found once instead of on every call."""
    seen: set[int] = set()
    out: list[tuple[str, nn.Module]] = []
    for prefix, module in [("", modules)] if isinstance(modules, nn.Module) else modules:
        for name, m in module.named_modules(prefix=prefix):
            if isinstance(m, _BatchNorm) and id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
    return out


def check_samples_independent(
    layers: nn.Module | Iterable[tuple[str, nn.Module]], what: str = "the policy", training: bool | None = None
) -> None:
    """Raise ``ValueError`` naming the first BatchNorm layer among ``layers`` (:func:`batch_norm_layers`'
    list, or what it searches: ``(name, module)`` pairs such as
    :func:`~sb3_natural.common.heads.actor_modules`, or one module) that normalizes each sample by the
    batch's mean and variance, so that one sample's output depends on the others': one in training mode
    (``training``: judge every layer as if in that mode instead), or one built with
    ``track_running_stats=False`` (batch statistics in every mode). Per-sample scores
    ``grad log pi(a_i|s_i)``, the Fisher ``(1/N) sum_i J_i^T M_i J_i`` and K-FAC's per-sample statistics
    are defined only for layers that treat the samples independently; in evaluation mode BatchNorm is the
    per-sample affine map of its running statistics, the policy SB3 collects rollouts with."""
    for name, m in batch_norm_layers(layers):
        layer = f"{what} has a {type(m).__name__} layer ({name})"
        if not m.track_running_stats:
            raise ValueError(
                f"{layer} built with track_running_stats=False: it normalizes each sample by the batch's "
                "statistics in every mode, so per-sample scores and Fisher products are not defined; build it "
                "with track_running_stats=True or use a per-sample normalization (nn.LayerNorm, nn.GroupNorm)"
            )
        if m.training if training is None else training:
            raise ValueError(
                f"{layer} in training mode: it normalizes each sample by the batch's statistics, so per-sample "
                "scores and Fisher products are not defined; call policy.set_training_mode(False) first "
                "(the mode SB3 collects rollouts in: the running statistics)"
            )


def check_discount(**values: float) -> None:
    """Raise ``ValueError`` naming the first factor (gamma, gae_lambda) that is not a float in [0, 1]."""
    _check_intervals(0.0, 1.0, True, True, dict(values))


def check_rate(name: str, value: float | Callable[[float], float]) -> float | Callable[[float], float]:
    """Raise ``ValueError`` unless ``value`` is a positive finite rate or a schedule; return it, a numpy
    scalar as a Python float (SB3's ``FloatSchedule`` takes only those).

    A schedule (SB3's ``Schedule``: progress_remaining in [0, 1] -> rate) is checked at the start
    of training (progress_remaining = 1), where rl-zoo3's ``lin_`` schedules take their largest value.
    """
    rate = value(1.0) if callable(value) else value
    if not (_is_finite_real(rate) and rate > 0):
        kind = "a schedule whose start value" if callable(value) else "a float that"
        raise ValueError(f"{name} must be {kind} is > 0 and finite, got {rate!r}")
    return value if callable(value) else float(value)


_TRAIN_FREQ = "an int >= 1 or a tuple (int >= 1, 'step' or 'episode')"


def _checked_train_freq(value: object) -> object:
    """SB3's ``train_freq`` (an int: steps, or ``(n, unit)``), refused naming it unless ``n`` is an int
    >= 1 and ``unit`` ``"step"`` or ``"episode"``; a 2-list (rl-zoo3's YAML ``[1, "episode"]``) as a
    tuple, a numpy count as an int."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, "step")
    units = [u.value for u in TrainFrequencyUnit]
    unit_ok = len(pair) == 2 and (isinstance(pair[1], TrainFrequencyUnit) or (isinstance(pair[1], str) and pair[1] in units))
    if not unit_ok or not is_int(pair[0]) or pair[0] < 1:
        raise (ValueError if unit_ok and is_int(pair[0]) else ArgumentTypeError)(
            f"train_freq must be {_TRAIN_FREQ}, got {value!r}"
        )
    if isinstance(value, TrainFreq):  # SB3's own (a saved model's), as it is
        return value
    return (int(pair[0]), pair[1]) if isinstance(value, (tuple, list)) else int(pair[0])  # SB3 wants a Python int


def check_off_policy_args(kwargs: dict[str, Any], accepted: Iterable[str] | None = None) -> dict[str, Any]:
    """SB3's off-policy arguments given to TD3 / DDPG, checked before SB3 stores them (SB3 checks
    few: a negative ``gamma`` or ``tau``, ``batch_size=0``, ``policy_delay=0`` or an infinite learning rate
    were accepted and failed later, or trained to NaN): a ``ValueError`` naming the argument and the
    accepted values. Returns the arguments to pass on (a numpy learning rate as a float, a listed
    ``train_freq`` as a tuple). ``accepted``: the names the SB3 class takes (DDPG has no ``policy_delay``,
    ``target_policy_noise``, ``target_noise_clip`` or ``stats_window_size``): the others are not
    checked, so that SB3 refuses them as unexpected arguments."""
    out = dict(kwargs)
    names = None if accepted is None else set(accepted)
    given = {name for name in out if names is None or name in names}
    if "learning_rate" in given:
        out["learning_rate"] = check_rate("learning_rate", out["learning_rate"])
    ints = {"buffer_size": 1, "batch_size": 1, "n_steps": 1, "policy_delay": 1,
            "learning_starts": 0, "gradient_steps": -1}  # fmt: skip  # gradient_steps: -1 = as many as env steps
    for name, minimum in ints.items():
        if name in given:
            check_int(minimum, **{name: out[name]})
    if "gamma" in given:
        check_discount(gamma=out["gamma"])
    if "tau" in given:
        check_interval(0.0, 1.0, tau=out["tau"])
    for name in ("target_policy_noise", "target_noise_clip"):
        if name in given:
            check_nonnegative(**{name: out[name]})
    if "optimize_memory_usage" in given:
        check_bool(optimize_memory_usage=out["optimize_memory_usage"])
    if "train_freq" in given:
        out["train_freq"] = _checked_train_freq(out["train_freq"])
    out.update(check_base_args({name: out[name] for name in given}))
    noise = out.get("action_noise")
    if "action_noise" in given and noise is not None and not isinstance(noise, ActionNoise):
        raise ArgumentTypeError(f"action_noise must be an ActionNoise (stable_baselines3.common.noise) or None, got {noise!r}")
    return out


_BUFFER_CLASSES = {"rollout_buffer_class": RolloutBuffer, "replay_buffer_class": ReplayBuffer}


def check_base_args(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """SB3's own arguments of every class, checked before SB3 uses them (SB3 raised ``'str' object is not
    callable``, numpy casting errors or ``Cannot access accelerator device`` for them): a ``ValueError``
    naming the argument and the accepted values. ``policy_kwargs``, ``rollout_buffer_kwargs`` and
    ``replay_buffer_kwargs``: a dict or None; ``rollout_buffer_class`` / ``replay_buffer_class``: a subclass
    of SB3's ``RolloutBuffer`` / ``ReplayBuffer`` or None; ``seed``: None or an int in [0, 2**32 - 1];
    ``verbose``: an int >= 0; ``stats_window_size``: an int >= 1; ``device``: ``"auto"``, a torch device
    or its name (``"cpu"``, ``"cuda:0"``); ``tensorboard_log``: None or a path. Only the names present are
    checked. Returns them to pass on, a numpy ``seed`` as a Python int (Python's ``random.seed``, which
    SB3 calls, refuses numpy ints)."""
    for name in ("policy_kwargs", "rollout_buffer_kwargs", "replay_buffer_kwargs"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], Mapping):
            _reject(name, "a dict or None", kwargs[name], wrong_type=True)
    for name, base in _BUFFER_CLASSES.items():
        value = kwargs.get(name)
        if value is not None and not (isinstance(value, type) and issubclass(value, base)):
            _reject(name, f"a subclass of stable_baselines3's {base.__name__} or None", value, wrong_type=True)
    seed = kwargs.get("seed")
    if seed is not None and not (is_int(seed) and 0 <= seed < 2**32):
        _reject("seed", "None or an int in [0, 2**32 - 1]", seed, wrong_type=not is_int(seed))
    if "verbose" in kwargs:
        check_int(0, verbose=kwargs["verbose"])
    if "stats_window_size" in kwargs:
        check_int(1, stats_window_size=kwargs["stats_window_size"])
    if "device" in kwargs:
        _check_device(kwargs["device"])
    log = kwargs.get("tensorboard_log")
    if log is not None and not isinstance(log, (str, os.PathLike)):
        _reject("tensorboard_log", "a folder path or None", log, wrong_type=True)
    out = dict(kwargs)
    if seed is not None:
        out["seed"] = int(seed)
    return out


def _check_device(device: object) -> None:
    accepted = "'auto', a torch.device or a device name such as 'cpu' or 'cuda:0'"
    if isinstance(device, th.device) or device == "auto":
        return
    if not isinstance(device, str):
        _reject("device", accepted, device, wrong_type=True)
    try:
        th.device(str(device))
    except RuntimeError:
        _reject("device", accepted, device, wrong_type=False)


def check_learn_args(
    total_timesteps: object, callback: object, log_interval: object, tb_log_name: object, **flags: object
) -> None:
    """``learn``'s arguments, checked before SB3 runs (SB3 divided by ``log_interval=0``, called a
    callback ``3``, trained no step for ``total_timesteps=-1`` or NaN): a ``ValueError`` naming the
    argument. ``total_timesteps``: a finite number >= 0 (``1e5`` is taken, as SB3 does); ``callback``:
    None, a ``BaseCallback``, a list of them or a callable ``(locals, globals) -> bool``; ``log_interval``:
    None or an int >= 1; ``tb_log_name``: a string; ``flags`` (``reset_num_timesteps``, ``progress_bar``):
    True or False."""
    if not (_is_finite_real(total_timesteps) and total_timesteps >= 0):  # type: ignore[operator]
        _reject("total_timesteps", "a finite number >= 0", total_timesteps, wrong_type=not is_real(total_timesteps))
    items = callback if isinstance(callback, list) else [callback]
    if callback is not None and not all(isinstance(c, BaseCallback) for c in items) and not callable(callback):
        accepted = "None, a BaseCallback, a list of BaseCallbacks or a callable (locals, globals) -> bool"
        _reject("callback", accepted, callback, wrong_type=True)
    check_int(1, allow_none=True, log_interval=log_interval)
    if not isinstance(tb_log_name, str):
        _reject("tb_log_name", "a string", tb_log_name, wrong_type=True)
    check_bool(**flags)


def _expected_obs_shapes(space: spaces.Space) -> tuple[tuple[int, ...], ...]:
    """The per-sample shapes SB3 accepts for an observation of ``space`` (a Discrete one as ``()`` or
    ``(1,)``, as SB3's buffers store it)."""
    if isinstance(space, spaces.Discrete):
        return ((), (1,))
    return (tuple(space.shape),) if space.shape is not None else ()


def check_observation_batch(space: spaces.Space, obs: object) -> None:
    """Raise a ``ValueError`` naming ``obs`` unless it is a batch of observations of ``space``: a tensor
    (for a Dict space, a mapping with every key of it) whose shape is ``[N, *space.shape]``. The
    per-sample routines need the batch axis; without this check a single observation or the wrong
    shape fails deep inside a matrix product (``mat1 and mat2 shapes cannot be multiplied``)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise ValueError(f"obs must be a dict with the keys {sorted(space.spaces)} of the observation space, got {got}")
        for key, sub in space.spaces.items():
            _check_obs_tensor(f"obs[{key!r}]", sub, obs[key])
        return
    _check_obs_tensor("obs", space, obs)


def _check_obs_tensor(name: str, space: spaces.Space, obs: object) -> None:
    shapes = _expected_obs_shapes(space)
    if not isinstance(obs, th.Tensor) or not shapes:
        return
    if tuple(obs.shape[1:]) not in shapes or obs.dim() == 0:
        accepted = " or ".join(str(["N", *s]).replace("'", "") for s in shapes)
        raise ValueError(
            f"{name} must be a batch of observations of shape {accepted} (the observation space's "
            f"{tuple(space.shape or ())} with a batch axis first), got shape {tuple(obs.shape)}"
        )


def check_actions_in_space(kind: str, action_dims: tuple[int, ...], actions: th.Tensor) -> None:
    """Raise a ``ValueError`` naming ``actions`` when a discrete action is not one of the space's: not a
    whole number in ``[0, n)`` (Discrete; per column for MultiDiscrete) or not 0/1 (MultiBinary).
    SB3's buffers store them as floats, so whole-number floats are accepted; a fractional one would
    be truncated and one out of range fails inside ``gather`` (or reads another action's logit)."""
    if kind not in ("categorical", "multi_categorical", "bernoulli") or actions.numel() == 0:
        return
    a = actions.detach()
    if a.is_floating_point() and not bool((a == a.round()).all()):
        raise ValueError(f"actions must be whole numbers for a {_SPACE_OF[kind]} space, got a fractional value")
    if kind == "bernoulli":
        ok, accepted = bool(((a == 0) | (a == 1)).all()), "0 or 1"
    elif kind == "categorical":
        ok, accepted = bool((a >= 0).all() and (a < action_dims[0]).all()), f"in [0, {action_dims[0]})"
    else:
        cols = a.reshape(a.shape[0], -1)
        high = th.as_tensor(action_dims, device=a.device, dtype=a.dtype)
        ok = cols.shape[1] == len(action_dims) and bool((cols >= 0).all() and (cols < high).all())
        accepted = f"in [0, nvec) per column, nvec = {list(action_dims)}"
    if not ok:
        got = f"min {a.min().item()}, max {a.max().item()}"
        raise ValueError(f"actions must be {accepted} for a {_SPACE_OF[kind]} space, got {got}")


_SPACE_OF = {"categorical": "Discrete", "multi_categorical": "MultiDiscrete", "bernoulli": "MultiBinary"}
