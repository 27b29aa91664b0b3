"""Callback the harness injects (through rl-zoo3's ``callback`` hyperparameter) to time updates."""

from __future__ import annotations

import json
import os
import time

from stable_baselines3.common.callbacks import BaseCallback

TIMING_ENV_VAR = "SB3_NATURAL_TIMING_FILE"


class UpdateTimer(BaseCallback):
    """Measures ``train()``: the time between the end of a rollout and the start of the next one.

    SB3 calls ``train()`` exactly there, except that an off-policy algorithm skips it until
    ``num_timesteps > learning_starts`` (SB3's ``OffPolicyAlgorithm.learn``): those rollouts are not
    counted, so the mean is over real updates only. Writes
    ``{"updates": n, "mean_update_s": ..., "total_update_s": ...}`` to ``$SB3_NATURAL_TIMING_FILE``
    (when set) at the end of training.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._rollout_end: float | None = None
        self.durations: list[float] = []

    def _on_rollout_end(self) -> None:
        learning_starts = getattr(self.model, "learning_starts", None)  # off-policy only
        if learning_starts is not None and not (self.model.num_timesteps > max(learning_starts, 0)):
            self._rollout_end = None  # no train() follows this rollout
            return
        self._rollout_end = time.perf_counter()

    def _on_rollout_start(self) -> None:
        if self._rollout_end is not None:
            self.durations.append(time.perf_counter() - self._rollout_end)
            self._rollout_end = None

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        path = os.environ.get(TIMING_ENV_VAR)
        if not path:
            return
        n = len(self.durations)
        with open(path, "w") as f:
            json.dump(
                {"updates": n, "mean_update_s": sum(self.durations) / n if n else None, "total_update_s": sum(self.durations)},
                f,
            )
