"""Per-sample weights of the on-policy algorithms: episode times and Thomas (2014) discount weights."""

from __future__ import annotations

import numpy as np


def episode_times(episode_starts: np.ndarray, t_prev: np.ndarray) -> np.ndarray:
    """Steps since the episode began for every transition of a rollout, ``[T, E]`` ints.

    ``episode_starts[k, e]`` is 1 where the observation at step k of env e is the first of an
    episode (as SB3's rollout buffers store it). ``t_prev[e]`` is the time of env e's last
    transition in the previous rollout (-1 before the first), so episodes running across
    rollout boundaries keep counting::

        t[k] = 0                 if episode_starts[k]
        t[k] = t[k - 1] + 1      otherwise (t[-1] = t_prev)
    """
    starts = np.asarray(episode_starts).astype(bool)
    if starts.ndim != 2 or t_prev.shape != (starts.shape[1],):
        raise ValueError(f"episode_starts must be [T, E] and t_prev [E], got {starts.shape} and {t_prev.shape}")
    t = np.empty(starts.shape, dtype=np.int64)
    current = np.asarray(t_prev, dtype=np.int64).copy()
    for k in range(starts.shape[0]):
        current = np.where(starts[k], 0, current + 1)
        t[k] = current
    return t


def discount_weights(times: np.ndarray, gamma: float) -> np.ndarray:
    """Thomas (2014) weights ``gamma^t`` for the discounted objective's unbiased gradient.

    P. Thomas, "Bias in Natural Actor-Critic Algorithms", ICML 2014: the gradient of the
    discounted return ``J = E[sum_t gamma^t r_t]`` weights the sample at time t of an episode
    by ``gamma^t``; dropping the weight (as most implementations do) gives an estimator of the
    average-reward objective's gradient instead.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return np.power(gamma, times.astype(np.float64))
