from __future__ import annotations

from typing import Any, Literal

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_natural.common.checks import check_at_least_one, check_bool, check_interval, check_nonnegative, check_positive
from sb3_natural.common.distributions import check_kl_convention
from sb3_natural.common.fisher import AnalyticFVP, DirectFVP, dense_fisher
from sb3_natural.common.heads import index_obs
from sb3_natural.common.solvers import conjugate_gradient, dense_solve
from sb3_natural.common.updates import (
    LineSearchResult,
    backtracking_line_search,
    natural_step_scale,
    normalize_advantages,
)
from sb3_natural.on_policy import NaturalOnPolicyAlgorithm

FISHERS = ("analytic", "direct")
SOLVERS = ("cg", "dense", "auto")

#: ``solver="dense"`` builds the P x P Fisher: refused above this many actor parameters (4 x 10^8
#: entries, 1.6 GB in float32), where CG is also orders of magnitude faster (see DENSE_MAX_PARAMS).
DENSE_LIMIT_PARAMS = 20_000

#: ``solver="auto"`` solves exactly with the dense Fisher when the actor has at most this many
#: parameters, else by CG. Measured crossover (benchmarks/bench_trpo.py --crossover, CartPole,
#: N = 1024, 15 CG products, one thread): dense is 0.6x the time of CG at P = 50, 1.4x at P = 130,
#: 18x at P = 1282 and 144x at P = 4610 (building F costs N d P^2). See docs/fisher_trpo.md.
DENSE_MAX_PARAMS = 100


class FisherTRPO(NaturalOnPolicyAlgorithm):
    """
    Trust Region Policy Optimization with the closed-form Fisher of the policy's distribution.

    Paper: Schulman et al., "Trust Region Policy Optimization", ICML 2015 (https://arxiv.org/abs/1502.05477).
    Same algorithm and constructor arguments as ``sb3_contrib.TRPO``; the differences are in how the
    update is computed:

    * Fisher-vector products ``F v = (1/N) J^T (M (J v))`` with the closed-form output Fisher ``M``
      (``fisher="analytic"``), the forward pass reused by the surrogate gradient and every CG product,
      instead of the KL double backprop (``fisher="direct"``, kept for comparison);
    * for small actors the exact natural gradient (``solver="dense"``: build F, Cholesky);
    * a lean critic phase (same epochs, minibatch size and Adam hyperparameters as sb3-contrib, but
      minibatches indexed from tensors, and Adam only over the parameters the actor does not depend on:
      as in sb3-contrib, the critic epochs never move the actor, also through a shared features extractor);
    * the true KL (summed over action dimensions) by default; ``kl_convention="mean"`` reproduces
      sb3-contrib, whose Gaussian/Bernoulli KL is averaged over action dimensions, so that its
      ``target_kl`` is per action dimension.

    A failed line search leaves the actor parameters bit-identical and logs
    ``train/is_line_search_success = 0``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the value function (Adam), constant or a schedule
    :param n_steps: Steps per environment per update
    :param batch_size: Minibatch size for the value function
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate-gradient steps
    :param cg_damping: Damping lambda of the Fisher (``F + lambda I``)
    :param line_search_shrinking_factor: Step-size reduction factor of the line search
    :param line_search_max_iter: Maximum number of line-search iterations
    :param n_critic_updates: Number of critic updates (epochs) per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use (None: selected automatically)
    :param rollout_buffer_kwargs: Keyword arguments for the rollout buffer
    :param normalize_advantage: Whether to normalize the advantage
    :param target_kl: Maximum KL of an update (the trust region delta)
    :param sub_sampling_factor: Use every k-th sample of the rollout for the actor step
    :param fisher: ``"analytic"`` (closed form, default) or ``"direct"`` (KL double backprop)
    :param solver: ``"cg"``, ``"dense"`` (exact) or ``"auto"`` (dense when the actor has at most
        ``DENSE_MAX_PARAMS`` parameters, else CG)
    :param kl_convention: ``"sum"`` (true KL, default) or ``"mean"`` (sb3-contrib's)
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
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        fisher: Literal["analytic", "direct"] = "analytic",
        solver: Literal["cg", "dense", "auto"] = "cg",
        kl_convention: Literal["sum", "mean"] = "sum",
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
        if fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        check_kl_convention(kl_convention)
        check_positive(target_kl=target_kl)
        check_nonnegative(cg_damping=cg_damping)
        check_bool(normalize_advantage=normalize_advantage)
        if solver == "dense" and cg_damping == 0:
            raise ValueError("solver='dense' needs cg_damping > 0 (the Fisher of a network is singular)")
        shrink = line_search_shrinking_factor
        check_interval(0.0, 1.0, low_closed=False, high_closed=False, line_search_shrinking_factor=shrink)
        check_at_least_one(
            cg_max_steps=cg_max_steps, line_search_max_iter=line_search_max_iter, sub_sampling_factor=sub_sampling_factor
        )
        self._check_critic_args(n_critic_updates, batch_size)
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.n_critic_updates = n_critic_updates
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.sub_sampling_factor = sub_sampling_factor
        self.fisher = fisher
        self.solver = solver
        self.kl_convention = kl_convention
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        # Adam over the critic's parameters (sb3-contrib: over all of them, with the actor's gradients
        # cleared first, so the same ones move), with the same learning rate and hyperparameters.
        self._setup_critic()
        if self.solver == "dense" and self._head.num_params > DENSE_LIMIT_PARAMS:
            raise ValueError(
                f"solver='dense' builds the P x P Fisher, and this actor has P = {self._head.num_params} parameters "
                f"(limit {DENSE_LIMIT_PARAMS}); use solver='cg' or 'auto'"
            )

    def _group_schedules(self) -> list[Schedule]:
        return [self.lr_schedule]  # as sb3-contrib: learning_rate is the critic's Adam rate

    def _use_dense(self) -> bool:
        return self.solver == "dense" or (self.solver == "auto" and self._head.num_params <= DENSE_MAX_PARAMS)

    def train(self) -> None:
        """One trust-region step of the actor, then the critic epochs."""
        self._start_update()
        data, actions, adv = self._rollout_batch(normalize_advantage=False)
        obs: Any = data.observations
        old_log_prob = data.old_log_prob
        if self.sub_sampling_factor > 1:
            idx = th.arange(0, adv.shape[0], self.sub_sampling_factor, device=adv.device)
            obs, actions, old_log_prob, adv = index_obs(obs, idx), actions[idx], old_log_prob[idx], adv[idx]
        if self.normalize_advantage:  # after sub-sampling, as sb3-contrib
            adv = normalize_advantages(adv)
        stats = self.trust_region_step(obs, actions, old_log_prob, adv)
        if stats.get("is_line_search_success") == 1.0:
            self._refresh_running_statistics(data.observations, self._flat_actions(data.actions))
        value_loss = self._fit_critic(data.observations, data.returns)
        self._record_update(stats, value_loss, self._rollout_explained_variance())

    def trust_region_step(
        self, obs: Any, actions: th.Tensor, old_log_prob: th.Tensor, adv: th.Tensor
    ) -> dict[str, float | str]:
        """Search direction x = (F + damping I)^{-1} g, step sqrt(2 delta / x^T (F + damping I) x) x,
        backtracking line search on the surrogate with the KL constraint (TRPO, Appendix C)."""
        head, dist, conv = self._head, self._head.dist, self.kl_convention
        stats: dict[str, float | str] = {}
        with th.enable_grad():
            z = head(obs)
            ratio = th.exp(dist.log_prob(z, actions) - old_log_prob)
            objective = (adv * ratio).mean()
            g = head.flat(list(th.autograd.grad(objective, head.params, retain_graph=True)))
        z_old = z.detach()

        fvp: Any
        if self.fisher == "analytic":
            fvp = AnalyticFVP(head, obs, conv, damping=self.cg_damping, z=z)
        else:
            fvp = DirectFVP(head, obs, conv, damping=self.cg_damping)
        if self._use_dense():
            with th.no_grad():
                f = dense_fisher(head, obs, conv)
            try:
                x = dense_solve(f, g, self.cg_damping)
            except ValueError:
                x = th.full_like(g, float("nan"))
            stats.update(solver="dense", solver_iterations=1.0)
        else:
            res = conjugate_gradient(fvp, g, max_iter=self.cg_max_steps)
            x = res.x
            stats.update(solver="cg", solver_residual=res.residual_norm, solver_iterations=float(res.iterations))
            stats["solver_breakdown"] = float(res.breakdown)

        step_scale = natural_step_scale(x, fvp(x), self.target_kl) if bool(th.isfinite(x).all()) else None
        objective_value = float(objective.detach())
        result = LineSearchResult(False, 0.0, objective_value, 0.0, 0)
        if step_scale is not None:

            def evaluate() -> tuple[float, float]:
                z_new = head(obs)
                surrogate = float((adv * th.exp(dist.log_prob(z_new, actions) - old_log_prob)).mean())
                return surrogate, float(dist.kl(z_old, z_new, conv).mean())

            result = backtracking_line_search(
                head, x, step_scale, evaluate, objective_value, self.target_kl,
                self.line_search_shrinking_factor, self.line_search_max_iter,
            )  # fmt: skip
        else:
            self.logger.record("train/line_search_skip_reason", "search direction not finite or x^T F x <= 0")
        stats.update(
            policy_objective=objective_value,
            surrogate_improvement=result.objective - objective_value,
            kl=result.kl,
            kl_divergence_loss=result.kl,  # sb3-contrib's name for the same number
            is_line_search_success=float(result.accepted),
            line_search_iterations=float(result.iterations),
            step_norm=abs(result.coefficient * (step_scale or 0.0)) * float(x.norm()) if result.accepted else 0.0,
        )
        return stats
