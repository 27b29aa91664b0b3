"""Monte-Carlo returns of complete episodes and the REINFORCE estimator's weights.

REINFORCE (Williams 1992; Sutton & Barto 2018, Sec. 13.3-13.4)::

    grad J = E[ sum_t (G_t - b(s_t)) grad log pi(a_t | s_t) ]                      (1)
    G_t    = sum_{k >= 0} gamma^k r_{t+k}      (reward-to-go within ONE episode)   (2)

The expectation over trajectories is replaced by the average over sampled steps: the samples
are drawn from pi itself, so their empirical average estimates (1) without weighting by
p(trajectory). A baseline b(s) that does not depend on the action leaves the mean unchanged
(E[grad log pi] = 0) and can lower the variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def discounted_returns(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """Reward-to-go ``G_t = r_t + gamma G_{t+1}`` with ``G_T = bootstrap`` (Eq. 2), for one episode.

    ``bootstrap`` is the value of the state after the last step: 0 for a terminal state, ``V(s_T)``
    for an episode cut by a time limit when a value baseline is available.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    out = np.empty_like(rewards)
    g = float(bootstrap)
    for t in range(rewards.shape[0] - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def episode_weights(rewards: np.ndarray, gamma: float, reward_to_go: bool = True, bootstrap: float = 0.0) -> np.ndarray:
    """Per-step returns of one episode: the reward-to-go ``G_t`` (``reward_to_go=True``), or the
    whole-episode return ``G_0`` at every step (the original REINFORCE estimator, higher variance)."""
    g = discounted_returns(rewards, gamma, bootstrap)
    return g if reward_to_go else np.full_like(g, g[0] if g.size else 0.0)


@dataclass
class Episode:
    """One finished episode of one env: per-step observations, actions and rewards.

    ``truncated``: cut by a time limit (not a terminal state); ``final_obs``: the observation
    after the last step (used to bootstrap a truncated episode).
    """

    observations: list[Any]
    actions: list[np.ndarray]
    rewards: list[float]
    truncated: bool = False
    final_obs: Any = None


@dataclass
class EpisodeStore:
    """Transitions per env; an episode moves to ``finished`` when it ends, never before.

    Episodes still running when an update happens stay here and continue in the next rollout,
    so no return is ever truncated by a rollout boundary, and no return mixes two episodes or
    two envs.
    """

    n_envs: int
    running: list[Episode] = field(default_factory=list)
    finished: list[Episode] = field(default_factory=list)
    skipping: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if not self.running:
            self.running = [Episode([], [], []) for _ in range(self.n_envs)]
        if self.skipping.shape != (self.n_envs,):
            self.skipping = np.zeros(self.n_envs, dtype=bool)

    def join(self, episode_starts: np.ndarray) -> None:
        """Start recording envs already running: an env whose next step does not begin an episode
        (``episode_starts[e]`` False, SB3's ``_last_episode_starts``) has its steps dropped until that
        episode ends, as its beginning was never recorded (a whole episode or none, never a tail)."""
        starts = np.asarray(episode_starts, dtype=bool).reshape(-1)
        if starts.shape != (self.n_envs,):
            raise ValueError(f"episode_starts must have {self.n_envs} entries, got {starts.shape[0]}")
        self.skipping = ~starts

    def add(self, obs: Any, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> None:
        """Record one vectorized step (SB3 VecEnv conventions: auto-reset, ``terminal_observation``)."""
        for e in range(self.n_envs):
            if self.skipping[e]:
                self.skipping[e] = not dones[e]  # the next step of this env begins an episode
                continue
            ep = self.running[e]
            ep.observations.append({k: v[e] for k, v in obs.items()} if isinstance(obs, dict) else obs[e])
            ep.actions.append(np.asarray(actions[e]))
            ep.rewards.append(float(rewards[e]))
            if dones[e]:
                ep.truncated = bool(infos[e].get("TimeLimit.truncated", False))
                ep.final_obs = infos[e].get("terminal_observation")
                self.finished.append(ep)
                self.running[e] = Episode([], [], [])

    def pop_finished(self) -> list[Episode]:
        done, self.finished = self.finished, []
        return done

    @property
    def n_finished(self) -> int:
        return len(self.finished)
