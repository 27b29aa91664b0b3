from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule
from torch import nn

from sb3_natural.common.checks import (
    check_at_least_one,
    check_bool,
    check_int,
    check_interval,
    check_max_grad_norm,
    check_nonnegative,
    check_positive,
    check_rate,
)
from sb3_natural.common.heads import index_obs, take_rows
from sb3_natural.common.kfac import DAMPING_MODES, KFAC, LayerRows, value_parameters
from sb3_natural.common.updates import all_finite, clip_by_norm, clipped_step_size, momentum_update
from sb3_natural.on_policy import NaturalOnPolicyAlgorithm

FISHERS = ("exact", "sample", "identity")
CRITICS = ("kfac", "adam")


class UpdateState:
    """What ACKTR's update carries from one rollout to the next, as SB3 saves it (``state_dict`` /
    ``load_state_dict``): the K-FAC factors and inverses and the momentum, one flat mapping of names to
    tensors as every object SB3's ``get_parameters`` returns: ``velocity`` (once there is one), then
    :meth:`KFAC.flat_state_dict` under ``kfac.``."""

    def __init__(self, kfac: KFAC) -> None:
        self.kfac = kfac
        self.velocity: th.Tensor | None = None

    def state_dict(self) -> dict[str, th.Tensor]:
        out = {} if self.velocity is None else {"velocity": self.velocity.clone()}
        out.update({f"kfac.{k}": v for k, v in self.kfac.flat_state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict` (``strict``: SB3's ``exact_match``; see :meth:`KFAC.load_flat_state_dict`;
        without ``velocity`` there is none). A refused state changes nothing. Files of sb3_natural 0.1
        (``{"kfac": nested, "velocity": ...}``) load too."""
        keep = not strict and "velocity" not in state
        velocity = self.velocity if keep else self._checked_velocity(state.get("velocity"))
        if isinstance(state.get("kfac"), Mapping):
            self.kfac.load_state_dict(state["kfac"], strict=strict)
        else:
            unknown = [k for k in state if k != "velocity" and not k.startswith("kfac.")]
            if strict and unknown:
                raise RuntimeError(f"Error(s) in loading ACKTR's update state: unexpected keys {unknown}")
            kfac_state = {k[len("kfac.") :]: v for k, v in state.items() if k.startswith("kfac.")}
            self.kfac.load_flat_state_dict(kfac_state, strict=strict)
        self.velocity = velocity

    def _checked_velocity(self, velocity: object) -> th.Tensor | None:
        """``velocity`` (a copy), checked: None or a tensor of shape ``[P]``."""
        if velocity is None:
            return None
        if not isinstance(velocity, th.Tensor):
            raise TypeError(f"velocity must be a tensor or None, got {type(velocity).__name__}")
        if velocity.shape != (self.kfac.num_params,):
            raise ValueError(f"velocity has shape {tuple(velocity.shape)}, expected ({self.kfac.num_params},)")
        return velocity.detach().clone()


class ACKTR(NaturalOnPolicyAlgorithm):
    """
    Actor Critic using Kronecker-Factored Trust Region (ACKTR).

    Paper: Wu, Mansimov, Liao, Grosse & Ba, "Scalable trust-region method for deep reinforcement
    learning using Kronecker-factored approximation" (NeurIPS 2017). K-FAC: Martens & Grosse (2015);
    convolutions: Grosse & Martens (2016).

    A2C's rollouts and loss ``L = -mean(A log pi) - ent_coef * mean(H) + vf_coef * mean((R - V)^2)``;
    the gradient ``g`` (clipped to ``max_grad_norm``) is preconditioned by K-FAC,
    ``Delta = (F_kfac + damping)^{-1} g``, and the parameters move by ``-eta Delta`` with the trust-region
    step size ``eta = min(learning_rate, sqrt(2 target_kl / (Delta^T F_kfac Delta)))``, through momentum.
    ``Delta^T F_kfac Delta`` is taken over the policy's K-FAC blocks (the value's own blocks left out), so
    that ``target_kl`` bounds the second-order KL of the policy, not of the value's Gaussian.
    The policy's Fisher has its expectation over actions in closed form (``fisher="exact"``) or one
    sampled action per state (``"sample"``, the paper's). With ``critic="kfac"`` (the paper's) the value
    loss is in ``L`` and the curvature is the joint one: the policy's Fisher and ``vf_fisher_coef`` times
    the value's Gauss-Newton matrix, one step for the actor and the critic (a shared features extractor
    gets both). With ``critic="adam"`` the actor takes the natural step alone and the value function is
    then fitted by Adam epochs over the parameters the actor does not depend on (as NAC does).

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: ``eta_max``, the largest step size (a float or a schedule of the remaining progress)
    :param n_steps: Steps per environment per update (the rollout is ``n_steps * n_envs`` samples)
    :param gamma: Discount factor
    :param gae_lambda: GAE lambda (1.0: A2C's n-step returns)
    :param ent_coef: Entropy coefficient of the loss
    :param vf_coef: Value-loss coefficient of the loss (``critic="kfac"``)
    :param max_grad_norm: Clip the loss gradient to this norm before preconditioning (None or 0: no clipping)
    :param target_kl: The trust region delta (true KL, summed over action dimensions) of the step size
        rule; None: ``eta = learning_rate`` (no trust region)
    :param momentum: Momentum of the step, in [0, 1): ``u <- momentum u + (1 - momentum) eta Delta``,
        ``theta <- theta - u`` (0: the plain step)
    :param fisher: The actor's curvature: ``"exact"`` (K-FAC with the expectation over actions in
        closed form), ``"sample"`` (one action per state, as the paper: the rollout's own action, a draw
        from the current policy since there is one update per rollout, so that one backward pass gives
        the factors and the gradient) or ``"identity"`` (no curvature: the plain gradient, an ablation;
        with ``target_kl=None`` and ``momentum=0`` it is A2C with SGD)
    :param critic: ``"kfac"`` (the joint K-FAC step of actor and critic) or ``"adam"`` (Adam epochs on
        the value loss after the actor's step)
    :param kfac_damping: Tikhonov damping lambda > 0 of the K-FAC inverse
    :param kfac_damping_mode: ``"pi"`` (factored Tikhonov, Martens & Grosse 2015, section 6.3) or ``"exact"``
    :param kfac_decay: Weight of the old factors in K-FAC's running averages, in [0, 1)
    :param inverse_update_freq: Refresh K-FAC's eigendecompositions every this many updates
    :param kfac_stats_samples: Estimate each rollout's K-FAC layer factors on at most this many of its
        samples (evenly spaced; None: all). Cheaper factor products for large rollouts; the gradient
        always uses the whole rollout
    :param vf_fisher_coef: Weight c > 0 of the value's Gauss-Newton matrix in the joint curvature
        (``critic="kfac"``)
    :param n_critic_updates: Epochs of minibatch Adam on the value loss per update (``critic="adam"``)
    :param batch_size: Minibatch size of those epochs (``critic="adam"``)
    :param critic_learning_rate: Adam learning rate of the value function (``critic="adam"``; float or schedule)
    :param normalize_advantage: Normalize advantages (zero mean, unit std) before the update
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
        learning_rate: float | Schedule = 0.25,
        n_steps: int = 20,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = 0.001,
        momentum: float = 0.9,
        fisher: Literal["exact", "sample", "identity"] = "exact",
        critic: Literal["kfac", "adam"] = "kfac",
        kfac_damping: float = 1e-2,
        kfac_damping_mode: Literal["pi", "exact"] = "pi",
        kfac_decay: float = 0.95,
        inverse_update_freq: int = 10,
        kfac_stats_samples: int | None = None,
        vf_fisher_coef: float = 1.0,
        n_critic_updates: int = 10,
        batch_size: int = 64,
        critic_learning_rate: float | Schedule = 1e-3,
        normalize_advantage: bool = False,
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
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=0.0 if max_grad_norm is None else max_grad_norm,
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
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
        if kfac_damping_mode not in DAMPING_MODES:
            raise ValueError(f"kfac_damping_mode must be one of {DAMPING_MODES}, got {kfac_damping_mode!r}")
        check_nonnegative(ent_coef=ent_coef, vf_coef=vf_coef)
        check_max_grad_norm(max_grad_norm, allow_zero=True)  # 0 or None: no clipping
        check_bool(normalize_advantage=normalize_advantage)
        check_positive(allow_none=True, target_kl=target_kl)
        check_interval(0.0, 1.0, high_closed=False, momentum=momentum)
        check_positive(kfac_damping=kfac_damping, vf_fisher_coef=vf_fisher_coef)
        check_interval(0.0, 1.0, high_closed=False, kfac_decay=kfac_decay)
        check_at_least_one(inverse_update_freq=inverse_update_freq)
        check_int(1, allow_none=True, kfac_stats_samples=kfac_stats_samples)
        self._check_critic_args(n_critic_updates, batch_size)
        critic_learning_rate = check_rate("critic_learning_rate", critic_learning_rate)
        self.max_grad_norm = max_grad_norm  # type: ignore[assignment]  # None: no clipping
        self.target_kl = target_kl
        self.momentum = float(momentum)
        self.fisher = fisher
        self.critic = critic
        self.kfac_damping = kfac_damping
        self.kfac_damping_mode = kfac_damping_mode
        self.kfac_decay = kfac_decay
        self.inverse_update_freq = int(inverse_update_freq)
        self.kfac_stats_samples = kfac_stats_samples
        self.vf_fisher_coef = vf_fisher_coef
        self.n_critic_updates = n_critic_updates
        self.batch_size = batch_size
        self.critic_learning_rate = critic_learning_rate
        self.normalize_advantage = normalize_advantage
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self._setup_critic()  # the Adam critic's optimizer (used with critic="adam")
        kwargs: dict[str, Any] = {
            "mode": "sample" if self.fisher == "sample" else "exact",
            "damping": float(self.kfac_damping),
            "damping_mode": self.kfac_damping_mode,
            "decay": float(self.kfac_decay),
            "inverse_update_freq": self.inverse_update_freq,
            "stats_samples": self.kfac_stats_samples,
        }
        if self.critic == "kfac":
            kfac = KFAC.for_actor_critic(self._head, vf_fisher_coef=float(self.vf_fisher_coef), **kwargs)
        else:
            kfac = KFAC(self._head, **kwargs)
        self._state = UpdateState(kfac)
        self._one_backward = self._one_backward_plan(kfac)

    def _one_backward_plan(self, kfac: KFAC) -> tuple[list[nn.Module], list[int], list[tuple[int, slice]]] | None:
        """For the one-backward update: the value's layers, the unfactored parameters whose gradient
        autograd gives, and those copied into ``z`` unchanged (the shared Gaussian ``log_std``: index and
        columns of ``z``), or None when a factored layer feeds both heads (a shared features extractor),
        whose per-head output gradients one backward pass cannot separate (the two-pass path is used then)."""
        n_actor = len(self._head.params)
        value_ids = {id(p) for p in value_parameters(self.policy)} if self.critic == "kfac" else set()
        value_layers: list[nn.Module] = []  # modules, not ids: a deep copy of the model keeps them right
        covered: set[int] = set()
        for block in kfac.blocks:
            if block.layer is None:
                continue
            lay = block.layer
            covered.update(i for i in (lay.weight_index, lay.bias_index) if i is not None)
            if lay.weight_index < n_actor and id(kfac.params[lay.weight_index]) in value_ids:
                return None  # shared by both heads
            if lay.weight_index >= n_actor:
                value_layers.append(lay.module)
        direct = {self._head.names.index(name): sl for name, sl in self._head.direct_slices.items()}
        other = [i for i in range(len(kfac.params)) if i not in covered]
        return value_layers, [i for i in other if i not in direct], [(i, direct[i]) for i in other if i in direct]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return [*state_dicts, "_state"], tensors

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_state", "_one_backward"]

    def _group_schedules(self) -> list[Schedule]:
        return [self.critic_lr_schedule]  # learning_rate is eta_max, not an optimizer rate

    def _critic_optimizer_used(self) -> bool:
        return self.critic == "adam"

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """One ACKTR update from the rollout: the K-FAC natural step (joint with the critic for
        ``critic="kfac"``), then the critic's Adam epochs for ``critic="adam"``."""
        self._start_update()
        data, actions, adv = self._rollout_batch(self.normalize_advantage)
        obs, kfac, head = data.observations, self._state.kfac, self._head
        d = head.dist.out_dim
        joint = self.critic == "kfac"

        recorded = kfac.record(obs)  # one forward: the loss and K-FAC's factors
        z = recorded.y[:, :d] if recorded.parts is None else recorded.parts[0]
        logp = head.dist.log_prob(z, actions)
        entropy = -logp if head.dist.squash else head.dist.entropy(z)  # SB3: no closed form when squashed
        policy_loss = -(adv * logp).mean()
        entropy_loss = -entropy.mean()
        loss = policy_loss + self.ent_coef * entropy_loss
        value_loss = th.zeros(())
        if joint:
            values = recorded.y[:, d] if recorded.parts is None else recorded.parts[1].flatten()
            value_loss = F.mse_loss(data.returns, values)
            loss = loss + self.vf_coef * value_loss
        before = kfac.snapshot()
        if self.fisher != "identity" and self._one_backward is not None:
            g = self._one_backward_gradient(obs, recorded, z, logp, adv, data.returns, entropy_loss)
        else:
            grads = th.autograd.grad(loss, kfac.params, allow_unused=True, retain_graph=self.fisher != "identity")
            g = kfac_flat(kfac.params, grads)
            if self.fisher != "identity":
                kfac.update(obs, generator=self._generator(), recorded=recorded)
        g, grad_norm = clip_by_norm(g.detach(), self.max_grad_norm)
        stats: dict[str, Any] = {
            "policy_loss": float(policy_loss.detach()),
            "entropy_loss": float(entropy_loss.detach()),
            "grad_norm": grad_norm,
        }
        z_old = z.detach()
        del recorded, z, logp, entropy, loss
        step_info = self._natural_step(g, before)
        stats.update(step_info)
        stats["kl"] = self._measured_kl(obs, z_old) if step_info["step_skipped"] == 0.0 else 0.0
        if step_info["step_skipped"] == 0.0:
            self._refresh_running_statistics(obs, actions)
        value_loss_value = float(value_loss.detach()) if joint else self._fit_critic(obs, data.returns)
        self._record_update(stats, value_loss_value, self._rollout_explained_variance())

    def _one_backward_gradient(
        self,
        obs: Any,
        recorded: Any,
        z: th.Tensor,
        logp: th.Tensor,
        adv: th.Tensor,
        returns: th.Tensor,
        entropy_loss: th.Tensor,
    ) -> th.Tensor:
        """The loss gradient and K-FAC's factors from ONE backward pass (when no factored layer feeds both
        heads): ``d/dy`` of ``sum_i log pi(a_i|s_i) (+ sum_i v_i)`` at every layer output gives, weighted
        per sample by ``-A_i / N`` (``2 vf_coef (v_i - R_i) / N``), the loss gradient of the layer
        (:meth:`KFAC.update_with_gradient`), the value layers' output factor exactly (``M = 1``) and, for
        ``fisher="sample"``, the actor layers' (the rollout's own actions are draws from the current
        policy: one update per rollout). ``fisher="exact"`` backpropagates the rows of the policy's
        output factor from ``z`` alone (the value branch is not traversed). Parameters K-FAC does not
        factor (``log_std``) get the loss gradient by the chain rule from ``dL/dz`` and ``dL/dv`` (the
        same pass gives ``d log pi_i / d z_i``), the entropy term of the factored layers from autograd."""
        kfac, d, n = self._state.kfac, self._head.dist.out_dim, adv.shape[0]
        assert self._one_backward is not None
        value_modules, other, direct = self._one_backward
        value_layers = {id(m) for m in value_modules}
        scalar = logp.sum()
        if self.critic == "kfac":
            values = recorded.y[:, d] if recorded.parts is None else recorded.parts[1].flatten()
            scalar = scalar + values.sum()
            w_value = (2.0 * self.vf_coef / n) * (values.detach() - returns)
        w_actor = -adv / n
        outputs = [rec.output for rec in recorded.records]
        found = th.autograd.grad(scalar, [*outputs, z], retain_graph=True, allow_unused=True)
        out_grads = [th.zeros_like(out) if g_out is None else g_out for out, g_out in zip(outputs, found[:-1], strict=True)]
        dlogp_dz = found[-1]  # [N, d]: row i is d log pi(a_i|s_i) / d z_i (z_i feeds log pi_i only)
        rows: list[LayerRows | None] = [None] * len(outputs)
        if self.fisher == "exact":
            rows = kfac.policy_row_grads(z, recorded.records)  # None at the value's layers
        given: dict[int, tuple[th.Tensor, th.Tensor, float, LayerRows | None]] = {}
        for rec, g_out, r_out in zip(recorded.records, out_grads, rows, strict=True):
            key = id(rec.layer.module)
            if key in value_layers:
                given[key] = (g_out, w_value, float(self.vf_fisher_coef), None)
            else:
                given[key] = (g_out, w_actor, 1.0, r_out)
        g = kfac.update_with_gradient(obs, recorded, given)
        if other or direct:  # the unfactored parameters: the whole loss, by the chain rule through z (and v)
            # L depends on the parameters only through z and v: dL/dz_i = w_i dlogp_i/dz_i + ent_coef dH/dz_i,
            # dL/dv_i = w_value_i; backpropagated from z and v (a short graph) instead of from L. A parameter
            # copied into z's columns for every sample (log_std) gets sum_i dL/dz_i over its columns.
            dl_dz = w_actor[:, None] * dlogp_dz
            if self.ent_coef > 0:
                dl_dz = dl_dz + self.ent_coef * th.autograd.grad(entropy_loss, z, retain_graph=True)[0]
            for i, cols in direct:
                th.sum(dl_dz[:, cols], dim=0, out=g[kfac.offsets[i] : kfac.offsets[i] + kfac.numels[i]])
        if other:
            heads, head_grads = [z], [dl_dz]
            if self.critic == "kfac":
                heads.append(values)
                head_grads.append(w_value)
            wrt = [kfac.params[i] for i in other]
            grads = th.autograd.grad(heads, wrt, head_grads, retain_graph=self.ent_coef > 0, allow_unused=True)
            for i, gi in zip(other, grads, strict=True):
                if gi is not None:
                    g[kfac.offsets[i] : kfac.offsets[i] + kfac.numels[i]] += gi.reshape(-1)
        if self.ent_coef > 0:  # the entropy term of the factored layers
            unfactored = set(other) | {i for i, _ in direct}
            layer_idx = [i for i in range(len(kfac.params)) if i not in unfactored]
            grads = th.autograd.grad(self.ent_coef * entropy_loss, [kfac.params[i] for i in layer_idx], allow_unused=True)
            for i, gi in zip(layer_idx, grads, strict=True):
                if gi is not None:
                    g[kfac.offsets[i] : kfac.offsets[i] + kfac.numels[i]] += gi.reshape(-1)
        return g

    def _measured_kl(self, obs: Any, z_old: th.Tensor) -> float:
        """Mean true KL between the policy before and after the step, on at most 256 states of the
        batch (evenly spaced), so that the diagnostic costs a fraction of a forward pass."""
        n = z_old.shape[0]
        idx = th.linspace(0, n - 1, min(n, 256), device=z_old.device).long() if n > 256 else slice(None)
        with th.no_grad():
            return float(self._head.dist.kl(take_rows(z_old, idx), self._head(index_obs(obs, idx))).mean())

    def _natural_step(self, g: th.Tensor, before: Any) -> dict[str, Any]:
        """``Delta = (F_kfac + damping)^{-1} g``, ``eta`` by the trust region, momentum, the step.

        A non-finite gradient, direction or step leaves the parameters, the K-FAC state (``before``) and
        the momentum as they were (``train/step_skipped`` = 1 and ``train/skip_reason`` say why)."""
        state, kfac = self._state, self._state.kfac
        info: dict[str, Any] = {"step_skipped": 0.0}

        def skip(reason: str) -> dict[str, Any]:
            kfac.restore(before)
            self.logger.record("train/skip_reason", reason)
            info.update(step_skipped=1.0, step_norm=0.0, step_scale=0.0)
            return info

        if not all_finite(g):
            return skip("the loss gradient is not finite")
        n_actor = len(self._head.params)
        if self.fisher != "identity":
            # Delta and Delta^T F_kfac Delta over the policy's blocks (the KL of the policy), in one pass
            direction, quadratic = kfac.precondition_and_quadratic(g, num_leading=n_actor)
        else:  # the plain gradient
            direction = g
            head_part = g[: self._head.num_params]
            quadratic = float(head_part @ head_part)
        if not (math.isfinite(quadratic) and all_finite(direction)):
            return skip("the K-FAC direction is not finite")
        eta = clipped_step_size(self.lr_schedule(self._current_progress_remaining), quadratic, self.target_kl)
        velocity = momentum_update(state.velocity, eta * direction, self.momentum)
        if not all_finite(velocity):
            return skip("the step is not finite")
        with th.no_grad():
            params: list[th.Tensor] = list(kfac.params)
            th._foreach_sub_(params, [u.view_as(p) for u, p in zip(velocity.split(kfac.numels), params, strict=True)])
        state.velocity = velocity
        info.update(step_scale=eta, step_norm=float(velocity.norm()), kfac_quadratic=quadratic)
        return info

    def _generator(self) -> th.Generator:
        """The actions of ``fisher="sample"``: a generator seeded by the seed and the update count, so
        that a loaded model resumes with the same draws."""
        base = 0 if self.seed is None else int(self.seed)
        return th.Generator(device="cpu").manual_seed(base * 1_000_003 + int(self._n_updates))


def kfac_flat(params: list[th.nn.Parameter], grads: tuple[th.Tensor | None, ...]) -> th.Tensor:
    """Per-parameter gradients as one flat vector in ``params`` order (0 for an unused parameter)."""
    return th.cat([(th.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)])
