from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_natural.common.checks import (
    check_bool,
    check_finite_observations,
    check_finite_rewards,
    check_int,
    check_max_grad_norm,
    check_nonnegative,
    check_rate,
)
from sb3_natural.common.returns import Episode, EpisodeStore, episode_weights
from sb3_natural.common.updates import normalize_advantages
from sb3_natural.on_policy import NaturalOnPolicyAlgorithm

BASELINES = (None, "mean", "value")
LOSS_REDUCTIONS = ("mean", "sum")


class REINFORCE(NaturalOnPolicyAlgorithm):
    """
    REINFORCE: Monte-Carlo policy gradient on complete episodes, with an optional baseline.

    Paper: Williams, "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning", Machine Learning 1992 (Sutton & Barto 2018, Sec. 13.3-13.4).

    The policy gradient is ``grad J = E[sum_t (G_t - b(s_t)) grad log pi(a_t|s_t)]`` with ``G_t`` the
    discounted reward-to-go of the step's own episode. Sampling episodes from pi replaces the
    expectation by an average over the collected steps (no p(trajectory) factor appears: the
    samples already follow it), and since optimizers minimize, the loss is the negative::

        loss = -(1/N) sum_t (G_t - b(s_t)) log pi(a_t | s_t)      (loss_reduction="mean")

    Updates use complete episodes only: an episode still running when an update happens is
    carried over to the next rollout, never cut. Returns never cross an episode or an env.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Adam learning rate of the actor (float or schedule)
    :param n_episodes: Update once at least this many episodes have finished (across envs).
        Set to None to update every ``n_steps`` steps per env on the episodes finished by then.
    :param n_steps: Steps per env per update when ``n_episodes`` is None
    :param gamma: Discount factor
    :param baseline: None, ``"mean"`` (the batch mean of the returns) or ``"value"`` (SB3's value
        head, fitted on the returns; it also bootstraps episodes cut by a time limit)
    :param reward_to_go: Weight step t by ``G_t`` (True) or by the whole-episode return ``G_0`` (False)
    :param normalize_returns: Standardize the weights ``G_t - b(s_t)`` to zero mean and unit std per update
    :param loss_reduction: ``"mean"`` (divide by the number of steps N) or ``"sum"``; with ``"sum"``
        the gradient, hence the effective step, grows with the batch size
    :param ent_coef: Entropy bonus coefficient
    :param max_grad_norm: Maximum norm of the actor gradient (clipping)
    :param n_critic_updates: Epochs of minibatch Adam on the value loss (``baseline="value"``)
    :param critic_learning_rate: Adam learning rate of the value head
    :param batch_size: Minibatch size of the value fit
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param stats_window_size: Window size for the rollout logging (episodes)
    :param tensorboard_log: The log location for tensorboard (if None, no logging)
    :param policy_kwargs: Additional arguments passed to the policy on creation
    :param verbose: 0 no output, 1 info messages, 2 debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_episodes: int | None = 8,
        n_steps: int = 1000,
        gamma: float = 0.99,
        baseline: Literal["mean", "value"] | None = "value",
        reward_to_go: bool = True,
        normalize_returns: bool = False,
        loss_reduction: Literal["mean", "sum"] = "mean",
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 0.5,
        n_critic_updates: int = 5,
        critic_learning_rate: float | Schedule = 1e-3,
        batch_size: int = 64,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_int(1, allow_none=True, n_episodes=n_episodes)
        check_max_grad_norm(max_grad_norm)  # before SB3 stores it (None: no clipping)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=0.0,
            max_grad_norm=0.0 if max_grad_norm is None else max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=None,
            rollout_buffer_kwargs=None,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        check_nonnegative(ent_coef=ent_coef)
        check_bool(reward_to_go=reward_to_go, normalize_returns=normalize_returns)
        critic_learning_rate = check_rate("critic_learning_rate", critic_learning_rate)
        self._check_critic_args(n_critic_updates, batch_size)
        self.n_episodes = n_episodes
        self.baseline = baseline
        self.reward_to_go = reward_to_go
        self.normalize_returns = normalize_returns
        self.loss_reduction = loss_reduction
        self.max_grad_norm = max_grad_norm  # type: ignore[assignment]  # None: no clipping (SB3 got 0.0)
        self.n_critic_updates = n_critic_updates
        self.critic_learning_rate = critic_learning_rate
        self.batch_size = batch_size
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # SB3's RolloutBuffer is not used: episodes are kept whole in an EpisodeStore.
        n_steps = self.n_steps
        self.n_steps = 1
        super()._setup_model()
        self.n_steps = n_steps
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        # One optimizer, two groups: the actor (learning_rate) and the value head (critic_learning_rate).
        self._setup_critic(actor_group=True)
        self._episodes = EpisodeStore(self.n_envs)
        if self._last_obs is not None:
            # load(..., force_reset=False): the envs go on where they were, and the running episodes' first
            # steps are not in the file, so each env's steps count from its next episode.
            self._episodes.join(self._last_episode_starts)  # type: ignore[arg-type]  # saved with _last_obs
        legacy = self.__dict__.pop("max_grad_norm_value", 0.0)  # files of 0.1.0 kept the user's value here
        if legacy is None and self.max_grad_norm == 0.0:  # and SB3's placeholder 0.0 for None
            self.max_grad_norm = None  # type: ignore[assignment]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_episodes"]

    def _group_schedules(self) -> list[Schedule]:
        return [self.lr_schedule, self.critic_lr_schedule]

    # ------------------------------------------------------------- collection
    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Step the envs until ``n_episodes`` episodes have finished (or ``n_steps`` steps per env).

        Transitions go to the episode store; SB3's rollout buffer is left empty.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        n_steps = 0
        while True:
            if self.n_episodes is None:
                if n_steps >= self.n_steps:
                    break
            elif self._episodes.n_finished >= self.n_episodes or self.num_timesteps >= self._total_timesteps > 0:
                break
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            check_finite_observations(self._last_obs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions_t, _, _ = self.policy(obs_tensor)
            actions = actions_t.cpu().numpy()
            clipped = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped = self.policy.unscale_action(actions)
                else:
                    clipped = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            check_finite_rewards(np.asarray(rewards))
            self._episodes.add(self._last_obs, actions, rewards, dones, infos)
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ train
    def _batch(self, episodes: list[Episode]) -> tuple[Any, th.Tensor, th.Tensor]:
        """Observations, actions and returns G_t of finished episodes, concatenated."""
        obs_list = [o for ep in episodes for o in ep.observations]
        if isinstance(obs_list[0], dict):
            obs_np: Any = {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
        else:
            obs_np = np.stack(obs_list)
        obs = obs_as_tensor(obs_np, self.device)
        actions = th.as_tensor(np.stack([a for ep in episodes for a in ep.actions]), device=self.device)
        returns = []
        for ep in episodes:
            bootstrap = 0.0
            if ep.truncated and self.baseline == "value" and ep.final_obs is not None:
                final = ep.final_obs
                # np.asarray: a Dict space's Discrete entry may be a Python int (Discrete.contains(1) is True)
                final_np = (
                    {k: np.asarray(v)[None] for k, v in final.items()} if isinstance(final, dict) else np.asarray(final)[None]
                )
                with th.no_grad():
                    bootstrap = float(self.policy.predict_values(obs_as_tensor(final_np, self.device))[0, 0])
            returns.append(episode_weights(np.asarray(ep.rewards), self.gamma, self.reward_to_go, bootstrap))
        g = th.as_tensor(np.concatenate(returns), dtype=th.float32, device=self.device)
        return obs, actions, g

    def train(self) -> None:
        """One policy-gradient step on all finished episodes (skipped when there are none)."""
        self._start_update()
        episodes = self._episodes.pop_finished()
        self.logger.record("train/n_episodes", len(episodes))
        if not episodes:
            self.logger.record("train/update_skipped", 1)
            return
        obs, actions, returns = self._batch(episodes)
        actions = self._flat_actions(actions)

        if self.baseline == "value":
            with th.no_grad():
                b = self.policy.predict_values(obs).flatten()
        elif self.baseline == "mean":
            b = returns.mean().expand_as(returns)
        else:
            b = th.zeros_like(returns)
        weights = returns - b
        if self.normalize_returns:
            weights = normalize_advantages(weights)

        head = self._head
        z = head(obs)
        log_prob = head.dist.log_prob(z, actions)
        pg = -(weights * log_prob)
        policy_loss = pg.mean() if self.loss_reduction == "mean" else pg.sum()
        entropy = head.dist.entropy(z).mean()
        loss = policy_loss - self.ent_coef * entropy
        self.policy.optimizer.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(
            head.params, self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        )
        self.policy.optimizer.step()
        self._refresh_running_statistics(obs, actions)

        value_loss, ev = 0.0, None
        if self.baseline == "value":
            value_loss = self._fit_critic(obs, returns)
            ev = float(explained_variance(b.cpu().numpy(), returns.cpu().numpy()))
        stats = {
            "policy_loss": policy_loss.item(),
            "entropy_loss": -entropy.item(),
            "grad_norm": float(grad_norm),
            "mean_return": returns.mean().item(),
            "n_steps_in_update": int(returns.numel()),
            "update_skipped": 0,
        }
        self._record_update(stats, value_loss, ev)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if reset_num_timesteps or self._last_obs is None:  # SB3 resets the envs: drop the running episodes
            self._episodes = EpisodeStore(self.n_envs)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
