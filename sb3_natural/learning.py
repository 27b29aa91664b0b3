"""``learn()`` with its arguments checked, shared by every algorithm class."""

from __future__ import annotations

from typing import TypeVar

from stable_baselines3.common.type_aliases import MaybeCallback

from sb3_natural.common.checks import check_learn_args

SelfLearn = TypeVar("SelfLearn", bound="CheckedLearnMixin")


class CheckedLearnMixin:
    """Mixed into every algorithm class before SB3's base: ``learn`` refuses bad arguments before any
    step, with a ``ValueError`` naming them (:func:`~sb3_natural.common.checks.check_learn_args`; SB3
    divided by ``log_interval=0`` and called ``callback=3``), and ``tb_log_name`` defaults to the class
    name (``"NAC"``, ``"ACKTR"``, ``"TD3"``, ...). A model without an environment (loaded without ``env``)
    raises an ``AssertionError``, SB3's type, that says how to give it one (SB3's on-policy ``learn``
    failed on a bare ``assert self.env is not None``)."""

    def learn(
        self: SelfLearn,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfLearn:
        """SB3's ``learn``: train for ``total_timesteps`` environment steps (see SB3's ``BaseAlgorithm.learn``)."""
        flags = {"reset_num_timesteps": reset_num_timesteps, "progress_bar": progress_bar}
        check_learn_args(total_timesteps, callback, log_interval, tb_log_name, **flags)
        if getattr(self, "env", None) is None:
            name = type(self).__name__
            raise AssertionError(
                f"{name} has no environment to learn from (it was built or loaded without env): call "
                f"model.set_env(env) or load it with {name}.load(path, env=env) before learn()"
            )
        return super().learn(  # type: ignore[misc]
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name or type(self).__name__,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
