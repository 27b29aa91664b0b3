from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule

from sb3_natural.common.checks import check_at_least_one, check_bool, check_nonnegative, check_positive, check_rate
from sb3_natural.common.fisher import AnalyticFVP, EmpiricalFVP
from sb3_natural.common.gram import gram_least_squares, score_gram, score_products, weighted_score_sum
from sb3_natural.common.scores import empty_output, per_sample_scores
from sb3_natural.common.solvers import compatible_least_squares, compatible_sgd, conjugate_gradient
from sb3_natural.common.updates import apply_step, natural_step_scale
from sb3_natural.common.weighting import discount_weights, episode_times
from sb3_natural.on_policy import NaturalOnPolicyAlgorithm

SOLVERS = ("lstsq", "cg", "sgd")
FISHERS = ("empirical", "analytic")

#: ``solver="lstsq"`` takes the Gram path (the dual ``N x N`` system, common/gram.py) when the actor has more
#: than this many parameters per sample, else the primal ``P x P`` system from the materialized scores. Measured
#: (BENCHMARKS.md section 5, "Which path"): the Gram path is 2.5-3.5x faster at P / N = 0.56-0.9 for 32- and
#: 64-wide actors and about even for a 16-wide one at 0.75; the primal one is faster at P / N <= 0.38 (1.1x for
#: a 32-wide actor at 0.31, 1.9-2.9x for a 16-wide one at 0.38-0.19).
GRAM_MIN_P_OVER_N = 0.5


class NAC(NaturalOnPolicyAlgorithm):
    """
    Natural Actor-Critic with compatible function approximation.

    Papers: Kakade, "A Natural Policy Gradient" (NIPS 2001); Peters & Schaal, "Natural
    Actor-Critic" (Neurocomputing 2008); Thomas, "Bias in Natural Actor-Critic Algorithms"
    (ICML 2014).

    The advantage is approximated by the compatible critic ``A_w(s, a) = psi(s, a)^T w`` with
    ``psi = grad_theta log pi(a|s)``. The ``w`` minimizing ``L(w) = E[(psi^T w - A)^2] + ridge |w|^2``
    is the damped natural gradient ``(F + ridge I)^{-1} grad J``, so fitting the compatible critic
    IS solving for the natural gradient. Advantages ``A`` come from GAE on SB3's value head, which
    is fitted by Adam. The actor moves along ``w``: ``theta += learning_rate * w`` or, with
    ``target_kl``, the normalized step ``sqrt(2 target_kl / (w^T F w)) * w``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Actor step size alpha in ``theta += alpha * w`` (a float or a schedule of
        the remaining progress). Unused when ``target_kl`` is set.
    :param n_steps: Steps per environment per update (the rollout is ``n_steps * n_envs`` samples)
    :param batch_size: Minibatch size for the value-function (critic) fit
    :param gamma: Discount factor
    :param gae_lambda: GAE lambda for the advantages
    :param n_critic_updates: Epochs of minibatch Adam on the value loss per update
    :param critic_learning_rate: Adam learning rate of the value function (float or schedule)
    :param solver: How ``w`` is found: ``"lstsq"`` (exact ridge least squares: primal P x P from the
        scores when P <= N / 2, else the dual N x N system from the score Gram matrix, assembled per layer
        without the N x P score matrix, and ``w = Psi^T beta`` by one backward), ``"cg"`` (conjugate
        gradient on ``(F + ridge I) w = g``) or ``"sgd"`` (two-timescale: Adam on ``L(w)``,
        warm-started from the previous ``w``)
    :param fisher: Fisher used by ``solver="cg"``: ``"empirical"`` (``Psi^T Psi / N``, the
        compatible-features Fisher) or ``"analytic"`` (closed form ``J^T M J / N``)
    :param ridge: Damping lambda > 0 of the least squares / Fisher system
    :param cg_max_steps: Maximum CG iterations
    :param cg_residual_tol: CG tolerance on the squared residual norm
    :param cg_warm_start: Start CG from the previous update's ``w`` instead of 0. Off by default, as
        in TRPO: CG truncated at ``cg_max_steps`` barely changes the start's components along
        low-curvature directions, so a stale ``w`` lingers (on HalfCheetah-v5 it kept seed 0 on a
        slow path that the start from 0 left; BENCHMARKS.md, "MuJoCo")
    :param sgd_epochs: Epochs over the rollout for ``solver="sgd"``
    :param sgd_batch_size: Minibatch size for ``solver="sgd"``
    :param sgd_learning_rate: Adam learning rate of ``w`` for ``solver="sgd"``
    :param target_kl: If set, the step is normalized to this KL (true KL, summed over action
        dimensions): ``sqrt(2 target_kl / (w^T F w)) * w`` with the analytic Fisher
    :param normalize_advantage: Normalize advantages (zero mean, unit std) before the fit
    :param discount_weighting: Weight each sample by ``gamma^t``, t = steps since its episode began
        (Thomas 2014): unbiased for the discounted objective, at the price of variance (late
        samples count little); False gives the usual estimator, unbiased for the average reward
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: only at
        the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use (None: selected automatically)
    :param rollout_buffer_kwargs: Keyword arguments for the rollout buffer
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
        learning_rate: float | Schedule = 0.01,
        n_steps: int = 2048,
        batch_size: int = 64,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        n_critic_updates: int = 10,
        critic_learning_rate: float | Schedule = 1e-3,
        solver: Literal["lstsq", "cg", "sgd"] = "lstsq",
        fisher: Literal["empirical", "analytic"] = "empirical",
        ridge: float = 1e-3,
        cg_max_steps: int = 20,
        cg_residual_tol: float = 1e-10,
        cg_warm_start: bool = False,
        sgd_epochs: int = 10,
        sgd_batch_size: int = 256,
        sgd_learning_rate: float = 1e-2,
        target_kl: float | None = 0.01,
        normalize_advantage: bool = True,
        discount_weighting: bool = False,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,
            vf_coef=0.0,
            max_grad_norm=0.0,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        check_positive(ridge=ridge)
        check_positive(allow_none=True, target_kl=target_kl)
        check_bool(normalize_advantage=normalize_advantage, discount_weighting=discount_weighting)
        check_at_least_one(cg_max_steps=cg_max_steps, sgd_epochs=sgd_epochs, sgd_batch_size=sgd_batch_size)
        self._check_critic_args(n_critic_updates, batch_size)
        if discount_weighting and solver == "cg" and fisher == "analytic":
            raise ValueError(
                "discount_weighting=True with solver='cg' needs fisher='empirical' (the analytic Fisher has no "
                "per-sample weights); or use solver='lstsq' or 'sgd'"
            )
        critic_learning_rate = check_rate("critic_learning_rate", critic_learning_rate)
        check_positive(sgd_learning_rate=sgd_learning_rate)  # a float: compatible_sgd takes no schedule
        check_nonnegative(cg_residual_tol=cg_residual_tol)
        check_bool(cg_warm_start=cg_warm_start)
        self.batch_size = batch_size
        self.n_critic_updates = n_critic_updates
        self.critic_learning_rate = critic_learning_rate
        self.solver = solver
        self.fisher = fisher
        self.ridge = ridge
        self.cg_max_steps = cg_max_steps
        self.cg_residual_tol = cg_residual_tol
        self.cg_warm_start = bool(cg_warm_start)
        self.sgd_epochs = sgd_epochs
        self.sgd_batch_size = sgd_batch_size
        self.sgd_learning_rate = float(sgd_learning_rate)
        self.target_kl = target_kl
        self.normalize_advantage = normalize_advantage
        self.discount_weighting = discount_weighting
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self._setup_critic()  # the policy's optimizer trains the value function only; the actor moves along w
        # Kept when load() restored them (saved with the model): the warm start of the "sgd" solver (and "cg"
        # with cg_warm_start), and the steps since each env's episode began (discount_weighting; for the
        # same number of envs; after a reset of the envs every episode starts again at t = 0 anyway).
        self._w: th.Tensor | None = getattr(self, "_w", None)
        episode_t = getattr(self, "_episode_t", None)
        if not isinstance(episode_t, np.ndarray) or episode_t.shape != (self.n_envs,):
            episode_t = np.full(self.n_envs, -1, dtype=np.int64)
        self._episode_t = episode_t
        self._scores_buffer: th.Tensor | None = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_scores_buffer"]

    def _group_schedules(self) -> list[Schedule]:
        return [self.critic_lr_schedule]  # learning_rate is the actor's step size, not an optimizer rate

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Update the value function and move the actor along the natural gradient w."""
        self._start_update()
        buf = self.rollout_buffer
        weights_np = None
        if self.discount_weighting:
            times = episode_times(buf.episode_starts, self._episode_t)
            self._episode_t = times[-1].copy()
            weights_np = discount_weights(times, self.gamma)
        data, actions, adv = self._rollout_batch(self.normalize_advantage)
        weights = None
        if weights_np is not None:
            # buffer.get() flattens [T, E] env-major (swap_and_flatten); do the same.
            weights = th.as_tensor(weights_np.swapaxes(0, 1).reshape(-1), dtype=adv.dtype, device=adv.device)

        w, stats = self._natural_gradient(data.observations, actions, adv, weights)
        step_info = self._actor_step(data.observations, w)
        if step_info["step_skipped"] == 0.0:
            self._refresh_running_statistics(data.observations, actions)
        value_loss = self._fit_critic(data.observations, data.returns)
        self._record_update({**stats, **step_info}, value_loss, self._rollout_explained_variance())

    def _natural_gradient(
        self, obs: Any, actions: th.Tensor, adv: th.Tensor, weights: th.Tensor | None
    ) -> tuple[th.Tensor, dict[str, float]]:
        """w = argmin_w mean_i c_i (psi_i . w - A_i)^2 + ridge |w|^2, by the chosen solver."""
        head = self._head
        n = adv.shape[0]
        if self.solver == "lstsq" and head.num_params > GRAM_MIN_P_OVER_N * n:
            return self._gram_dual(obs, actions, adv, weights)
        c = th.ones_like(adv) if weights is None else weights
        stats: dict[str, float] = {}
        psi: th.Tensor | None = None
        if self.solver in ("lstsq", "sgd") or self.fisher == "empirical":
            dtype = head.params[0].dtype
            buf = self._scores_buffer
            if buf is None or buf.shape != (n, head.num_params) or buf.dtype != dtype or buf.device != adv.device:
                self._scores_buffer = empty_output(n, head.num_params, dtype, adv.device)
            psi = per_sample_scores(head, obs, actions, out=self._scores_buffer)
            g = psi.T @ (c * adv) / n
        else:
            with th.enable_grad():
                logp = head.dist.log_prob(head(obs), actions)
                grads = th.autograd.grad((c * adv * logp).mean(), head.params)
            g = head.flat(list(grads)).detach()

        if self.solver == "lstsq":
            assert psi is not None
            w = compatible_least_squares(psi, adv, self.ridge, weights=weights)
            stats["solver_iterations"] = 1.0
        elif self.solver == "cg":
            if self.fisher == "empirical":
                assert psi is not None
                sw = c.sqrt()[:, None]
                fvp: Any = EmpiricalFVP(
                    head, obs, actions, damping=self.ridge, scores=psi * sw if weights is not None else psi
                )
            else:
                if weights is not None:
                    raise ValueError("discount_weighting with solver='cg' needs fisher='empirical'")
                fvp = AnalyticFVP(head, obs, damping=self.ridge)
            x0 = self._warm_start(g) if self.cg_warm_start else None
            res = conjugate_gradient(fvp, g, self.cg_max_steps, self.cg_residual_tol, x0=x0)
            w = res.x
            stats.update(solver_residual=res.residual_norm, solver_iterations=float(res.iterations))
            stats["solver_breakdown"] = float(res.breakdown)
        else:
            assert psi is not None
            w, loss_before, loss_after = compatible_sgd(
                psi, adv, self.ridge, weights=weights, w0=self._warm_start(g), epochs=self.sgd_epochs,
                batch_size=self.sgd_batch_size, learning_rate=self.sgd_learning_rate,
                generator=th.Generator(device="cpu").manual_seed(int(self._n_updates)),
            )  # fmt: skip
            stats.update(compatible_loss_before=loss_before, compatible_loss_after=loss_after)
            stats["solver_iterations"] = float(self.sgd_epochs * int(np.ceil(n / self.sgd_batch_size)))

        if psi is not None and th.isfinite(w).all():
            pred = psi @ w
            resid = (c * (pred - adv) ** 2).sum()
            total = (c * (adv - (c * adv).sum() / c.sum()) ** 2).sum()
            stats["compatible_r2"] = float(1.0 - resid / total) if total > 0 else 0.0
        wn, gn = float(w.norm()), float(g.norm())
        stats["natural_vanilla_cosine"] = float(w @ g) / (wn * gn) if wn > 0 and gn > 0 else 0.0
        return w.detach(), stats

    def _gram_dual(
        self, obs: Any, actions: th.Tensor, adv: th.Tensor, weights: th.Tensor | None
    ) -> tuple[th.Tensor, dict[str, float]]:
        """The exact dual solve without the N x P score matrix: ``K = Psi Psi^T`` per block (common/gram.py),
        ``beta`` from the N x N system (CG to float32's rounding, or factored in K's memory when CG does not get
        there), ``w = Psi^T beta`` by one backward; the
        statistics from ``Psi w`` (one forward-mode pass) and ``g = Psi^T C A / N`` (one backward)."""
        head, n = self._head, adv.shape[0]
        c = th.ones_like(adv) if weights is None else weights
        gram = score_gram(head, obs, actions)
        sol = gram_least_squares(gram, adv, self.ridge, weights=weights, overwrite=True)  # gram may be consumed
        del gram
        w = weighted_score_sum(head, obs, actions, sol.beta)
        ca = c * adv
        g = weighted_score_sum(head, obs, actions, ca / n)  # the vanilla gradient Psi^T C A / N
        stats: dict[str, float] = {"solver_iterations": float(sol.iterations)}
        if sol.residual is not None:
            stats["solver_residual"] = sol.residual
        if bool(th.isfinite(w).all()):
            pred = score_products(head, obs, actions, w)  # Psi w, one forward-mode pass
            resid = (c * (pred - adv) ** 2).sum()
            total = (c * (adv - ca.sum() / c.sum()) ** 2).sum()
            stats["compatible_r2"] = float(1.0 - resid / total) if total > 0 else 0.0
        wn, gn = float(w.norm()), float(g.norm())
        stats["natural_vanilla_cosine"] = float(w @ g) / (wn * gn) if wn > 0 and gn > 0 else 0.0
        return w.detach(), stats

    def _warm_start(self, g: th.Tensor) -> th.Tensor | None:
        w = self._w
        if w is not None and w.shape == g.shape and w.dtype == g.dtype and w.device == g.device and th.isfinite(w).all():
            return self._w
        return None

    def _actor_step(self, obs: Any, w: th.Tensor) -> dict[str, float]:
        """theta += alpha * w, or the KL-normalized step; a degenerate w skips the step."""
        head = self._head
        info: dict[str, float] = {"step_skipped": 0.0}
        if not bool(th.isfinite(w).all()) or float(w.norm()) == 0.0:
            info["step_skipped"] = 1.0
            self.logger.record("train/skip_reason", "w is zero or not finite")
            return info
        with th.no_grad():
            z_old = head(obs).detach()
        if self.target_kl is not None:
            fvp = AnalyticFVP(head, obs)
            scale = natural_step_scale(w, fvp(w), self.target_kl)
            if scale is None:
                info["step_skipped"] = 1.0
                self.logger.record("train/skip_reason", "w^T F w is not positive")
                return info
        else:
            scale = float(self.lr_schedule(self._current_progress_remaining))
        step = scale * w
        apply_step(head, step)
        self._w = w
        with th.no_grad():
            kl = head.dist.kl(z_old, head(obs)).mean()
        info.update(step_norm=float(step.norm()), kl=float(kl), step_scale=scale)
        return info
