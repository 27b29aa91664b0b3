"""Checks shared by every class: argument values (a ``ValueError`` naming the argument and the accepted
values) and NaN/inf in rewards and observations (a clear error before a value reaches a buffer)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np


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


def check_at_least_one(**values: int) -> None:
    """Raise ``ValueError`` naming the first argument that is below 1."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def is_real(value: object) -> bool:
    """A real number (Python or numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite_real(value: object) -> bool:
    return is_real(value) and math.isfinite(value)  # type: ignore[arg-type]


def check_positive(allow_none: bool = False, **values: float | None) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number > 0 (or None, where
    ``allow_none``)."""
    for name, value in values.items():
        if value is None and allow_none:
            continue
        if not (_is_finite_real(value) and value > 0):  # type: ignore[operator]
            raise ValueError(f"{name} must be a finite float > 0{' or None' if allow_none else ''}, got {value!r}")


def check_nonnegative(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number >= 0."""
    for name, value in values.items():
        if not (_is_finite_real(value) and value >= 0):
            raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")


def check_discount(**values: float) -> None:
    """Raise ``ValueError`` naming the first factor (gamma, gae_lambda) outside [0, 1]."""
    for name, value in values.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


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
