"""K-FAC: Kronecker-factored curvature of an SB3 actor (the policy's Fisher) or value head (Gauss-Newton).

Notation (batch-first): N samples; for a layer ``y = W a (+ b)``, ``a`` its input (with a 1 appended when
it has a bias, so that ``[W | b]`` is one matrix), ``g`` a gradient at its output ``y``.

Linear layers (Martens & Grosse 2015, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", Eq. 1 and section 3): the Fisher block of ``vec([W | b])`` is ``E[(a a^T) (x) (g g^T)]``,
approximated by ``A (x) S`` with::

    A = (1/N) sum_i a_i a_i^T                                   (input factor)
    S = (1/N) sum_i E_{a ~ pi}[g_i g_i^T]                       (output factor)

Convolutions (Grosse & Martens 2016, "A Kronecker-factored approximate Fisher matrix for convolution
layers", KFC, Eq. 24-25): with ``a_{i,t}`` the unfolded input patch and ``g_{i,t}`` the output gradient at
spatial position t of T::

    A = (1/N) sum_i sum_t a_{i,t} a_{i,t}^T,   S = (1/N) sum_i (1/T) sum_t E[g_{i,t} g_{i,t}^T]

(the spatially uncorrelated, homogeneous approximation; exact when T = 1 and the state is one).

Two output factors ``mode``:

* ``"exact"``: the expectation over actions in closed form. With the output Fisher ``M(z_i) = R_i^T R_i``
  (:meth:`~sb3_natural.common.distributions.OutputDistribution.fisher_factor`, rows ``r_{i,k}``),
  ``E_a[g g^T] = J_y^T M J_y = sum_k (J_y^T r_{i,k}) (J_y^T r_{i,k})^T``: the rows of R are
  backpropagated to every layer output (one backward per row through the graph of the forward pass).
  For a DiagGaussian with SB3's shared ``log_std`` the rows are the same for every state,
  ``r_k = e_k / sigma_k``, and two layers get theirs in closed form (:func:`last_layers_output_factors`):
  the action layer ``mean = W h``: ``S = diag(1/sigma^2)``; the layer before it, ``h = phi(y)`` with an
  elementwise activation phi: ``g_{i,k} = phi'(y_i) * (W^T r_k)``, so
  ``S = ((1/N) sum_i phi'(y_i) phi'(y_i)^T) * (W^T diag(1/sigma^2) W)`` (``*``: elementwise), one
  product over the batch instead of one per row; the rows are backpropagated from there to the layers
  before.
* ``"sample"``: one action ``a_i ~ pi(.|s_i)`` per state and ``g_i = d log pi(a_i|s_i) / dy_i`` (ACKTR's
  choice, Wu et al. 2017); an unbiased estimate of the exact factor.

For the value head (ACKTR's critic) the loss ``(1/2)(v - target)^2`` has the Gauss-Newton matrix of a unit
Gaussian output: ``M = 1``, ``R = [1]`` (``"exact"``), or ``g = eps``, ``eps ~ N(0, 1)`` (``"sample"``).

Parameters K-FAC does not factor (the shared Gaussian ``log_std``, gSDE's ``log_std``, a LayerNorm, any
non-Linear/Conv2d module) get their exact dense Fisher block ``(1/N) sum_i J_i^T M_i J_i`` restricted to
the parameter; for the shared ``log_std`` of a DiagGaussian that is ``2 I`` (DESIGN.md section 3).

The curvature is block diagonal over these blocks. Factors are running averages
``A <- decay A + (1 - decay) A_batch`` (the first update takes the batch's). Inverses come from
eigendecompositions ``A = Q_A diag(l_A) Q_A^T`` refreshed every ``inverse_update_freq`` updates, and the
damped product is, for ``G = [dW | db]``::

    damping_mode="pi":    ((A + pi sqrt(lambda) I) (x) (S + sqrt(lambda)/pi I))^{-1} vec(G),
                          pi = sqrt((tr(A) / dim A) / (tr(S) / dim S))   (Martens & Grosse 2015, Sec. 6.3)
                          (A, S: the factors of the last refresh, whose eigendecompositions are used)
    damping_mode="exact": (A (x) S + lambda I)^{-1} vec(G)  (exact Tikhonov, elementwise in the eigenbasis)

with ``(alpha, beta) = (pi sqrt(lambda), sqrt(lambda) / pi)``: ``"pi"`` is ``(S + beta I)^{-1} G (A + alpha I)^{-1}``,
the damped factor inverses ``Q diag(1 / (l + alpha)) Q^T`` formed once per refresh (two products per
block and update); ``"exact"`` is ``Q_S [(Q_S^T G Q_A) / D] Q_A^T`` with ``D[j, k] = l_S[j] l_A[k] + lambda``.
Dense blocks use ``(F_block + lambda I)^{-1}``, also formed once per refresh.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_natural.common.checks import (
    batch_norm_layers,
    check_at_least_one,
    check_int,
    check_interval,
    check_observation_batch,
    check_positive,
    check_samples_independent,
)
from sb3_natural.common.distributions import KLConvention, check_kl_convention
from sb3_natural.common.heads import (
    ActorHead,
    Obs,
    actor_modules,
    preprocess_as,
    slot_aliases,
    take_rows,
    value_modules,
)
from sb3_natural.common.scores import Layer, LayerRecord, hookable_layers, per_sample_param_grads, record_layers

KFACMode = Literal["exact", "sample"]
DampingMode = Literal["pi", "exact"]
KFAC_MODES: tuple[str, ...] = ("exact", "sample")
DAMPING_MODES: tuple[str, ...] = ("pi", "exact")


# ------------------------------------------------------------------ pure factor functions
def input_factor(layer: nn.Module, x: th.Tensor, with_bias: bool) -> th.Tensor:
    """``A = (1/N) sum_i sum_t a_{i,t} a_{i,t}^T`` of a Linear or Conv2d input ``x`` (``[N, ...]``).

    Linear: ``a`` is the last dimension (extra middle dimensions are positions t); Conv2d: the unfolded
    patches (KFC). A 1 is appended to ``a`` when ``with_bias``.
    """
    a = layer_input_rows(layer, x, with_bias)
    return a.T @ a / x.shape[0]


def layer_input_rows(layer: nn.Module, x: th.Tensor, with_bias: bool) -> th.Tensor:
    """The rows ``a_{i,t}`` of a Linear or Conv2d input ``x`` (``[N * T, d_in (+1)]``, sample-major: the T
    positions of sample i are rows ``i*T .. i*T + T - 1``), a 1 appended when ``with_bias``."""
    if isinstance(layer, nn.Conv2d):
        padding = layer.padding
        assert not isinstance(padding, str)
        cols = F.unfold(x, layer.kernel_size, layer.dilation, padding, layer.stride)  # [N, C*kh*kw, T]
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        a = x.reshape(-1, x.shape[-1])
    if with_bias:
        a = th.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    return a


def _output_rows(g: th.Tensor) -> th.Tensor:
    """Output gradients as rows ``[N * T, out]`` in the order of :func:`layer_input_rows`."""
    if g.dim() == 4:  # conv: [N, O, H, W] -> [N, T, O]
        g = g.flatten(2).transpose(1, 2)
    return g.reshape(-1, g.shape[-1])


def _linear_input_factor(x: th.Tensor, with_bias: bool, n: int) -> th.Tensor:
    """``[X | 1]^T [X | 1] / n`` from its blocks ``X^T X``, ``X^T 1`` and the row count (no copy of X)."""
    xx = x.T @ x
    if not with_bias:
        return xx / n
    col = x.sum(dim=0)
    top = th.cat([xx, col[:, None]], dim=1)
    bottom = th.cat([col, col.new_full((1,), float(x.shape[0]))])[None, :]
    return th.cat([top, bottom], dim=0) / n


def weighted_layer_gradient(a: th.Tensor, g: th.Tensor, weights: th.Tensor) -> th.Tensor:
    """``sum_i w_i sum_t g_{i,t} a_{i,t}^T`` (``[out, d_in (+1)]``): the gradient of ``sum_i w_i f_i`` with
    respect to ``[W | b]`` when ``g_{i,t} = d f_i / d y_{i,t}`` (backprop is linear in the per-sample
    output gradients, so one backward of ``sum_i f_i`` serves any weights). ``a``, ``g``: the rows of
    :func:`layer_input_rows` and :func:`_output_rows`; ``weights``: ``[N]``."""
    t = a.shape[0] // weights.shape[0]
    return (g * weights.repeat_interleave(t)[:, None]).T @ a


def output_factor(grads: Sequence[th.Tensor]) -> th.Tensor:
    """``S = (1/N) sum_i (1/T) sum_t sum_k g_{k,i,t} g_{k,i,t}^T`` from output gradients ``grads[k]``.

    Each ``grads[k]`` is ``[N, out]`` (Linear), ``[N, ..., out]`` (Linear with positions) or
    ``[N, out, H, W]`` (Conv2d); k indexes the rows of M's factor (``"exact"``) or there is one
    (``"sample"``). The K products are accumulated in place (no ``[K, N, ...]`` stack is built).
    """
    s: th.Tensor | None = None
    for g in grads:
        n = g.shape[0]
        if isinstance(g, th.Tensor) and g.dim() == 4:  # conv: [N, O, H, W] -> positions first
            g = g.flatten(2).transpose(1, 2)  # [N, T, O]
        t = g[0].numel() // g.shape[-1]
        flat = g.reshape(-1, g.shape[-1])
        term = flat.T @ flat
        s = term if s is None else s.add_(term)
    if s is None:
        raise ValueError("output_factor needs at least one gradient")
    return s / (n * t)


@dataclass
class OutputFactor:
    """A layer's exact output factor in closed form, given in place of its row gradients:
    ``S = inner`` (``phi`` None) or ``S = ((1/n) sum_i phi_i phi_i^T) * inner`` (elementwise), over the
    batch or its ``stats_samples`` subset."""

    inner: th.Tensor
    phi: th.Tensor | None = None

    def factor(self, sub: th.Tensor | slice | None = None) -> th.Tensor:
        if self.phi is None:
            return self.inner
        p = self.phi if sub is None else take_rows(self.phi, sub)
        return (p.T @ p / p.shape[0]) * self.inner


@dataclass
class OutputRows:
    """A Linear layer's row gradients stacked as one tensor ``rows`` (``[N, K, out]``: sample i, row k of
    M's factor), whose exact output factor is ``S = (1/N) sum_i sum_k g_{i,k} g_{i,k}^T``, one product.
    ``on_stats_samples``: the rows are already those of the ``stats_samples`` subset (``N`` = its size)."""

    rows: th.Tensor
    on_stats_samples: bool = False

    def factor(self, sub: th.Tensor | slice | None = None) -> th.Tensor:
        r = self.rows if sub is None or self.on_stats_samples else take_rows(self.rows, sub)
        flat = r.reshape(-1, r.shape[-1])
        return flat.T @ flat / r.shape[0]


# a layer's "exact" output gradients: one tensor per row of M's factor, or the factor's closed form / stacked rows
LayerRows = list[th.Tensor] | OutputFactor | OutputRows


def batch_output_factor(
    grads: Sequence[th.Tensor] | OutputFactor | OutputRows, sub: th.Tensor | slice | None = None
) -> th.Tensor:
    """The output factor of one batch from a layer's output gradients (:func:`output_factor`, on the
    samples ``sub`` when given), or its closed form (:class:`OutputFactor`) or stacked rows (:class:`OutputRows`)."""
    if isinstance(grads, (OutputFactor, OutputRows)):
        return grads.factor(sub)
    return output_factor([g.detach() if sub is None else take_rows(g.detach(), sub) for g in grads])


def kron_matvec(a: th.Tensor, s: th.Tensor, v: th.Tensor) -> th.Tensor:
    """``(A (x) S) vec(V)`` as the matrix ``S V A`` (V is ``[out, in]``, A symmetric)."""
    return s @ v @ a


def symmetric_eigh(m: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``sym(M) = Q diag(l) Q^T`` of a K-FAC factor, ``sym(M) = (M + M^T) / 2``, eigenvalues clamped at 0
    (the factor is PSD; rounding can leave its zero eigenvalues slightly negative).

    LAPACK's float32 solver can fail to converge when most eigenvalues are (numerically) zero and
    repeated: seen on a CnnPolicy's last convolution (a 577 x 577 input factor of 16 samples, rank 16,
    92 rows zero after ReLU) with one torch thread. The decomposition is then taken in float64 and cast
    back. A factor that is not finite gets NaN eigenvalues and vectors instead of an exception, so
    the products with it are not finite either (ACKTR then rejects the step and restores K-FAC).
    """
    sym = 0.5 * (m + m.T)
    try:
        vals, vecs = th.linalg.eigh(sym)
    except th.linalg.LinAlgError:
        try:
            vals64, vecs64 = th.linalg.eigh(sym.double())
            vals, vecs = vals64.to(sym.dtype), vecs64.to(sym.dtype)
        except th.linalg.LinAlgError:  # not finite (eigh converges on any finite symmetric float64 matrix)
            vals, vecs = th.full_like(sym[0], float("nan")), th.full_like(sym, float("nan"))
    return vals.clamp_min(0.0), vecs


def pi_damping(a: th.Tensor, s: th.Tensor, damping: float) -> tuple[float, float]:
    """Factored Tikhonov damping (Martens & Grosse 2015, Sec. 6.3): ``(alpha, beta) = (pi sqrt(lambda),
    sqrt(lambda) / pi)`` with ``pi = sqrt((tr(A)/dim A) / (tr(S)/dim S))`` (pi = 1 when a trace is 0)."""
    return pi_damping_from_traces(float(th.trace(a)) / a.shape[0], float(th.trace(s)) / s.shape[0], damping)


def pi_damping_from_traces(ta: float, ts: float, damping: float) -> tuple[float, float]:
    """:func:`pi_damping` from the mean traces ``ta = tr(A)/dim A`` and ``ts = tr(S)/dim S``."""
    pi = math.sqrt(ta / ts) if ta > 0 and ts > 0 else 1.0
    root = math.sqrt(damping)
    return pi * root, root / pi


# ------------------------------------------------------------------ curvature targets
def reachable_rows(r: th.Tensor, unreached: Sequence[slice]) -> th.Tensor:
    """The rows of M's factor ``R`` (``[N, K, d]``) that reach a layer output: the columns ``unreached``
    (those of the shared Gaussian ``log_std``, which no layer computes) zeroed, and the rows left with
    nothing to backpropagate dropped (for a DiagGaussian: its k log_std rows). ``R`` itself when
    ``unreached`` is empty."""
    if not unreached:
        return r
    mask = th.ones(r.shape[2], dtype=th.bool, device=r.device)
    for sl in unreached:
        mask[sl] = False
    sub = r[:, :, mask]
    keep = sub.abs().amax(dim=(0, 2)) > 0
    if not bool(keep.any()):
        keep[0] = True
    rows = r.new_zeros(r.shape[0], int(keep.sum()), r.shape[2])
    rows[:, :, mask] = sub[:, keep]
    return rows


@dataclass
class _Target:
    """What K-FAC is computed for: parameters, the layers among them, the output and its M factor."""

    params: list[nn.Parameter]
    layers: list[Layer]
    forward: Callable[[Obs], th.Tensor]  # obs -> y [N, d] with graph (layer hooks fire inside)
    factor: Callable[[th.Tensor], th.Tensor]  # y -> R [N, r, d] with M = R^T R
    exact_rows: Callable[[th.Tensor], th.Tensor]  # y -> the rows of R that reach a layer ("exact" backprops them)
    sample_grad: Callable[[th.Tensor, th.Generator | None], th.Tensor]  # y -> [N, d] sampled g_y
    dense_block: Callable[[Obs, th.Tensor, int], th.Tensor]  # (obs, R, param index) -> exact block
    # joint target: the last forward's (z, v) before their concatenation (backpropagating from z alone
    # skips the value branch); None for a single output
    # param index -> its exact block in closed form, without the batch (None: compute it)
    closed_form: Callable[[int], th.Tensor | None] = lambda i: None
    pieces: Callable[[], tuple[th.Tensor, ...]] | None = None
    policy_rows: Callable[[th.Tensor], th.Tensor] | None = None  # z -> the rows of R_pi reaching a layer
    head: ActorHead | None = None  # the actor (actor and joint targets)
    batch_norms: list[tuple[str, nn.Module]] = field(default_factory=list)  # those y's forward runs (batch_norm_layers)
    observation_space: spaces.Space | None = None  # the policy's: obs given to record() are checked against it


def _actor_target(head: ActorHead, kl_convention: KLConvention) -> _Target:
    dist = head.dist
    scale = dist.kl_scale(kl_convention)
    direct = list(head.direct_slices.values())
    direct_index = {head.names.index(name): sl for name, sl in head.direct_slices.items()}

    def factor(z: th.Tensor) -> th.Tensor:
        return dist.fisher_factor(z.detach()) * math.sqrt(scale)

    gaussian_shared = dist.kind == "diag_gaussian" and bool(direct)
    k = dist.action_dims[0]

    def policy_rows(z: th.Tensor) -> th.Tensor:
        if not gaussian_shared:
            return reachable_rows(factor(z), direct)
        # A DiagGaussian with the shared log_std: M = diag(1/sigma^2, 2) (DESIGN.md section 3), so
        # reachable_rows(factor(z), direct) is [diag(1/sigma) | 0] (the log_std rows reach no layer): built directly,
        # without the [N, 2k, 2k] factor and its row search
        inv_sigma = dist.fisher_stats(z).sqrt() * math.sqrt(scale)  # [N, k]
        rows = z.new_zeros(z.shape[0], k, 2 * k)
        rows[:, :, :k] = th.diag_embed(inv_sigma)
        return rows

    def sample_grad(z: th.Tensor, generator: th.Generator | None) -> th.Tensor:
        with th.no_grad():
            actions = dist.sample(z.detach(), generator=generator)
        with th.enable_grad():
            z_leaf = z.detach().requires_grad_(True)
            (g,) = th.autograd.grad(dist.log_prob(z_leaf, actions).sum(), z_leaf)
        return g

    def dense_block(obs: Obs, r: th.Tensor, i: int) -> th.Tensor:
        # (the shared log_std never gets here: closed_form gives its block)
        n = r.shape[0]
        key = "policy." + head.names[i]
        block = r.new_zeros(head.numels[i], head.numels[i])
        for k in range(r.shape[1]):
            rows = per_sample_param_grads(head, [key], obs, lambda zz, rk: (zz * rk).sum(dim=1), (r[:, k, :],))[key].reshape(
                n, -1
            )
            block += rows.T @ rows / n
        return block

    def closed_form(i: int) -> th.Tensor | None:
        # A DiagGaussian's shared log_std: M's log_std block is 2 I for every state (DESIGN.md section 3),
        # so the parameter's block is 2 I (times the KL convention's scale), whatever the batch.
        if i in direct_index and dist.kind == "diag_gaussian":
            p = head.params[i]
            return 2.0 * scale * th.eye(p.numel(), dtype=p.dtype, device=p.device)
        return None

    return _Target(
        params=list(head.params),
        layers=hookable_layers(head.policy, head.params),
        forward=head,
        factor=factor,
        exact_rows=policy_rows,
        sample_grad=sample_grad,
        dense_block=dense_block,
        closed_form=closed_form,
        policy_rows=policy_rows,
        head=head,
        batch_norms=head.batch_norms,
        observation_space=head.policy.observation_space,
    )


def _value_forward(policy: ActorCriticPolicy) -> Callable[[Obs], th.Tensor]:
    """``obs -> V(s)`` as ``ActorCriticPolicy.predict_values``, with observations cast to the parameters' dtype."""
    dtype = next(policy.parameters()).dtype

    def forward(obs: Obs) -> th.Tensor:
        pre = preprocess_as(obs, policy.observation_space, policy.normalize_images, dtype)
        features = policy.vf_features_extractor(pre)
        return policy.value_net(policy.mlp_extractor.forward_critic(features))

    return forward


def value_parameters(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """Trainable parameters the value prediction depends on (found from the autograd graph)."""
    from sb3_natural.common.heads import running_statistics_frozen, sample_observations

    named = [p for p in policy.parameters() if p.requires_grad]
    obs, _ = policy.obs_to_tensor(sample_observations(policy.observation_space, 2))
    with th.enable_grad(), running_statistics_frozen(policy):  # the probe must not move BatchNorm statistics
        grads = th.autograd.grad(_value_forward(policy)(obs).sum(), named, allow_unused=True)
    return [p for p, g in zip(named, grads, strict=True) if g is not None]


def _value_target(policy: ActorCriticPolicy, params: Sequence[nn.Parameter] | None) -> _Target:
    chosen = list(value_parameters(policy) if params is None else params)
    forward = _value_forward(policy)

    def factor(v: th.Tensor) -> th.Tensor:
        return v.new_ones(v.shape[0], 1, 1)  # Gauss-Newton of (1/2)(v - target)^2: M = 1

    def sample_grad(v: th.Tensor, generator: th.Generator | None) -> th.Tensor:
        return th.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)  # target ~ N(v, 1)

    def dense_block(obs: Obs, r: th.Tensor, i: int) -> th.Tensor:
        raise ValueError(
            f"K-FAC of the value head supports Linear and Conv2d parameters only; parameter {i} of shape "
            f"{tuple(chosen[i].shape)} is in another module (pass params= to leave it out)"
        )

    return _Target(
        chosen,
        hookable_layers(policy, chosen),
        forward,
        factor,
        factor,
        sample_grad,
        dense_block,
        batch_norms=batch_norm_layers(value_modules(policy)),
        observation_space=policy.observation_space,
    )


class _ActorCriticModule(nn.Module):
    """``pre -> y = [z, V(s)]`` (``[N, d + 1]``) with every module called once: a shared features
    extractor runs once for both heads, as in ``ActorCriticPolicy.forward``."""

    def __init__(self, head: ActorHead) -> None:
        super().__init__()
        self.policy = head.policy
        self._from_latent = head.module.from_latent  # a bound method, not a submodule

    def forward(self, pre: Obs) -> th.Tensor:
        return th.cat(self.parts(pre), dim=1)

    def parts(self, pre: Obs) -> tuple[th.Tensor, th.Tensor]:
        """``(z, v)``, ``[N, d]`` and ``[N, 1]``."""
        p = self.policy
        f_pi = p.pi_features_extractor(pre)
        f_vf = f_pi if p.share_features_extractor else p.vf_features_extractor(pre)
        latent_pi = p.mlp_extractor.forward_actor(f_pi)
        latent_vf = p.mlp_extractor.forward_critic(f_vf)
        return self._from_latent(latent_pi), p.value_net(latent_vf)


def _actor_critic_target(head: ActorHead, vf_fisher_coef: float, kl_convention: KLConvention) -> _Target:
    """The joint curvature of ACKTR (Wu et al. 2017, section 3.2): the output ``y = [z, v]`` has the
    block-diagonal output matrix ``M = diag(M_pi(z), c)``, the policy's Fisher beside ``c`` times the
    Gauss-Newton matrix of the value's squared loss (a unit Gaussian on ``v``), ``c = vf_fisher_coef``.
    A layer of a shared features extractor gets ``A (x) (S_pi + c S_v)`` (one input factor, the output
    gradients of both heads); parameters: the actor's (``head.params``), then the value's own."""
    actor = _actor_target(head, kl_convention)
    actor_rows = actor.policy_rows
    assert actor_rows is not None
    d = head.dist.out_dim
    root_c = math.sqrt(vf_fisher_coef)
    actor_ids = {id(p) for p in head.params}
    params = [*head.params, *(p for p in value_parameters(head.policy) if id(p) not in actor_ids)]
    module = _ActorCriticModule(head)
    aliases = slot_aliases(module)
    direct = {head.names.index(name) for name in head.direct_slices}

    last: dict[str, tuple[th.Tensor, th.Tensor]] = {}

    def forward(obs: Obs) -> th.Tensor:
        z, v = module.parts(head.preprocess(obs))
        head.dist.check_z(z)
        last["parts"] = (z, v)
        return th.cat([z, v], dim=1)

    def pieces() -> tuple[th.Tensor, ...]:
        return last.pop("parts")

    def with_value_row(r_pi: th.Tensor) -> th.Tensor:
        n, k = r_pi.shape[0], r_pi.shape[1]
        r = r_pi.new_zeros(n, k + 1, d + 1)
        r[:, :k, :d] = r_pi
        r[:, k, d] = root_c
        return r

    def sample_grad(y: th.Tensor, generator: th.Generator | None) -> th.Tensor:
        g_pi = actor.sample_grad(y[:, :d], generator)
        eps = th.randn((y.shape[0], 1), generator=generator, dtype=y.dtype).to(y.device)
        return th.cat([g_pi, root_c * eps], dim=1)

    def dense_block(obs: Obs, r: th.Tensor, i: int) -> th.Tensor:
        # (the shared log_std never gets here: closed_form gives its block)
        pre = head.preprocess(obs)
        names = aliases[id(params[i])]
        n = r.shape[0]

        def one(t: th.Tensor, o: Any, rk: th.Tensor) -> th.Tensor:
            o1 = {key: v.unsqueeze(0) for key, v in o.items()} if isinstance(o, dict) else o.unsqueeze(0)
            y1 = th.func.functional_call(module, dict.fromkeys(names, t), (o1,), strict=False, tie_weights=False)
            return (y1 * rk.unsqueeze(0)).sum()

        block = r.new_zeros(params[i].numel(), params[i].numel())
        for k in range(r.shape[1]):
            rows = th.func.vmap(th.func.grad(one), in_dims=(None, 0, 0))(params[i].detach(), pre, r[:, k]).reshape(n, -1)
            block += rows.T @ rows / n
        return block

    return _Target(
        params=params,
        layers=hookable_layers(head.policy, params),
        forward=forward,
        factor=lambda y: with_value_row(actor.factor(y[:, :d])),
        exact_rows=lambda y: with_value_row(actor_rows(y[:, :d])),
        sample_grad=sample_grad,
        dense_block=dense_block,
        closed_form=lambda i: actor.closed_form(i) if i in direct else None,
        pieces=pieces,
        policy_rows=actor_rows,
        head=head,
        batch_norms=batch_norm_layers(actor_modules(head.policy) + value_modules(head.policy)),
        observation_space=head.policy.observation_space,
    )


@dataclass
class Recorded:
    """One forward pass of a K-FAC target: the output ``y`` (with graph) and every factored layer's
    input and output (:func:`~sb3_natural.common.scores.record_layers`). ACKTR computes its loss from
    ``y`` and K-FAC's factors from the same pass (:meth:`KFAC.record`)."""

    y: th.Tensor
    records: list[LayerRecord]
    parts: tuple[th.Tensor, ...] | None = None  # (z, v) of a joint target, with their own graphs


def backprop_rows(y: th.Tensor, outputs: list[th.Tensor], rows: th.Tensor) -> list[list[th.Tensor] | None]:
    """``J_y^T r_k`` at every layer output for each row k of ``rows`` (``[N, K, d]``): per output, the K
    gradients (None for an output ``y`` does not depend on).

    One backward per row through the graph kept from the forward pass. ``is_grads_batched=True`` (a vmap
    over the backward) gives the same numbers in one call but measured slower on one CPU thread (K = 6,
    N = 2048, a 64x64 actor: 3.5 ms against 2.9 ms; BENCHMARKS.md, "K-FAC"), so the rows are looped.
    """
    per_row = [
        th.autograd.grad(y, outputs, grad_outputs=rows[:, k], allow_unused=True, retain_graph=True)
        for k in range(rows.shape[1])
    ]
    return [None if gs[0] is None else list(gs) for gs in zip(*per_row, strict=True)]


# elementwise activations: h = phi(y) entry by entry, so d h / d y = diag(phi'(y))
_ELEMENTWISE = (
    nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Softplus,
    nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign, nn.LogSigmoid,
)  # fmt: skip


@dataclass
class _Chain:
    """The end of SB3's actor: ``z = action_net(h_L)`` (the action layer's output is ``z``, or the mean
    columns of a DiagGaussian's ``z``) and ``h_j = phi_j(linears[j](h_{j-1}))`` for the last pairs of
    ``MlpExtractor.policy_net`` (factored Linear layers, elementwise activations), first to last. The rows of
    M's factor go down it as tensors ``[N, K, out]``: ``G_j = (G_{j+1} W_{j+1}) * phi_j'(y_j)``, one product
    per layer for all rows (autograd would take one backward per row). ``before``: whether factored actor
    layers precede it (reached by autograd from the first Linear's output)."""

    action: nn.Linear
    linears: list[nn.Linear]
    activations: list[nn.Module]
    before: bool


def _policy_chain(head: ActorHead, layers: Sequence[Layer]) -> _Chain | None:
    """The :class:`_Chain` of the actor, or None: SB3's ``MlpExtractor`` (``forward_actor`` not overridden),
    ``action_net`` a factored Linear whose output is ``z`` (Categorical, MultiCategorical, Bernoulli) or the
    mean of a DiagGaussian with the shared ``log_std`` (not gSDE, whose sigma depends on the latent), and
    ``policy_net`` ending in at least one (factored Linear, elementwise activation) pair. In-place
    activations are excluded: they overwrite ``y``, from which ``phi'`` is computed."""
    from stable_baselines3.common.torch_layers import MlpExtractor

    p, dist = head.policy, head.dist
    if dist.kind == "diag_gaussian":
        if not head.direct_slices or dist.squash:
            return None
    elif dist.kind not in ("categorical", "multi_categorical", "bernoulli"):
        return None
    ext = getattr(p, "mlp_extractor", None)
    if not isinstance(ext, MlpExtractor) or type(ext).forward_actor is not MlpExtractor.forward_actor:
        return None  # a custom extractor: its own actor path
    net = getattr(ext, "policy_net", None)
    factored = {id(layer.module) for layer in layers}
    if not isinstance(net, nn.Sequential) or not isinstance(p.action_net, nn.Linear) or id(p.action_net) not in factored:
        return None
    linears: list[nn.Linear] = []
    activations: list[nn.Module] = []
    j = len(net)
    while j >= 2:
        lin, act = net[j - 2], net[j - 1]
        if not (isinstance(lin, nn.Linear) and id(lin) in factored):
            break
        if type(act) not in _ELEMENTWISE or getattr(act, "inplace", False):
            break
        linears.insert(0, lin)
        activations.insert(0, act)
        j -= 2
    if not linears:
        return None
    chain_ids = {id(m) for m in (p.action_net, *linears)}
    n_actor = len(head.params)  # a joint target's value layers come after the actor's parameters
    before = any(id(layer.module) not in chain_ids for layer in layers if layer.weight_index < n_actor)
    return _Chain(p.action_net, linears, activations, before)


@dataclass
class _LastLayers:
    """SB3's actor ends ``mean = action_net(phi(policy_net[-2](.)))``: the two Linear layers and phi."""

    action: nn.Linear
    hidden: nn.Linear
    activation: nn.Module


def _last_layers(head: ActorHead, chain: _Chain | None) -> _LastLayers | None:
    """The structure :func:`last_layers_output_factors` needs, or None: a DiagGaussian with the shared
    ``log_std`` (so the rows of M's factor are the same for every state) and an actor :class:`_Chain`
    (:func:`_policy_chain`; its last pair is the hidden layer)."""
    if chain is None or head.dist.kind != "diag_gaussian":
        return None
    return _LastLayers(chain.action, chain.linears[-1], chain.activations[-1])


def _activation_derivative(act: nn.Module, y: th.Tensor, h: th.Tensor) -> th.Tensor:
    """``phi'(y)`` for ``h = phi(y)`` elementwise: from ``h`` for tanh and ReLU (as their backward does),
    by one elementwise backward otherwise."""
    if type(act) is nn.Tanh:
        return 1.0 - h * h
    if type(act) is nn.ReLU:
        return (h > 0).to(h.dtype)
    with th.enable_grad():
        leaf = y.detach().requires_grad_(True)
        (d,) = th.autograd.grad(act(leaf).sum(), leaf)
    return d


def last_layers_output_factors(
    last: _LastLayers, inv_sigma: th.Tensor, hidden_rec: LayerRecord, action_rec: LayerRecord
) -> tuple[OutputFactor, OutputFactor, th.Tensor]:
    """Exact output factors of SB3's last two actor layers for a DiagGaussian with the shared log_std.

    The rows of M's factor that reach a layer are ``r_k = e_k / sigma_k`` for every state (``inv_sigma``:
    ``[k]``, the KL scale included). At the action layer's output ``mean = W h`` they are the gradients
    themselves: ``S_action = sum_k r_k r_k^T = diag(1/sigma^2)``. At the hidden layer's output ``y``
    (``h = phi(y)``): ``g_{i,k} = phi'(y_i) * (W^T r_k)`` and::

        S_hidden = (1/N) sum_i sum_k g_{i,k} g_{i,k}^T = ((1/N) sum_i phi'_i phi'_i^T) * (V^T V),  V = diag(1/sigma) W

    since ``sum_k (phi' * v_k)(phi' * v_k)^T = (phi' phi'^T) * (sum_k v_k v_k^T)`` for the rows ``v_k`` of V
    (``*``: elementwise). Returns the two factors and V (``[k, out]``): the row gradients at ``y``,
    to backpropagate to the layers before, are ``phi'_i * v_k`` (``phi'`` is the hidden factor's ``phi``).
    """
    phi = _activation_derivative(last.activation, hidden_rec.output.detach(), action_rec.inputs)
    v = inv_sigma[:, None] * last.action.weight.detach()  # [k, h]: row k = W^T r_k
    return OutputFactor(th.diag(inv_sigma * inv_sigma)), OutputFactor(v.T @ v, phi), v


def _rows_through(rows: th.Tensor | tuple[th.Tensor, th.Tensor], weight: th.Tensor) -> th.Tensor:
    """Row gradients at a Linear layer's output (``[N, K, out]``) times its weight ``W`` (``[out, in]``): the
    rows at its input, ``[N, K, in]``. ``rows = (phi, v)`` stands for ``phi_i * v_k`` (the same ``v`` for every
    state, :func:`last_layers_output_factors`): then ``(phi_i * v_k) W = phi_i (diag(v_k) W)``, one
    ``[N, out] x [out, K in]`` product without building the ``[N, K, out]`` rows."""
    if isinstance(rows, tuple):
        phi, v = rows
        u = (v.T[:, :, None] * weight[:, None, :]).reshape(weight.shape[0], -1)  # u[c, k in + a] = v[k, c] W[c, a]
        return (phi @ u).view(phi.shape[0], v.shape[0], weight.shape[1])
    return rows @ weight


def _weight(layer: Layer) -> th.Tensor:
    w = layer.module.weight
    assert isinstance(w, th.Tensor)
    return w


def _leads(block: _Block, num_leading: int) -> bool:
    """Whether the block is among the first ``num_leading`` parameters (its weight's, or its own, index)."""
    first = block.layer.weight_index if block.layer is not None else block.dense_index
    assert first is not None
    return first < num_leading


def _block_quadratic(fac: dict[str, th.Tensor], part: th.Tensor) -> th.Tensor:
    """``v_b^T F_b v_b`` of one block (a 0-d tensor): ``sum(V * (S V A))`` (a layer) or ``v^T F v`` (a dense block)."""
    return (part * (kron_matvec(fac["A"], fac["S"], part) if "A" in fac else fac["F"] @ part)).sum()


def _total(terms: list[th.Tensor]) -> float:
    """The sum of 0-d tensors as a float (one read; 0.0 for none)."""
    return float(th.stack(terms).sum()) if terms else 0.0


# ------------------------------------------------------------------ the state object
@dataclass
class _Block:
    """A factored layer (``layer`` set) or a dense block of one parameter (``dense_index`` set)."""

    layer: Layer | None = None
    dense_index: int | None = None
    # where the block sits in a flat P-vector: a layer's (weight offset, weight numel, out, bias offset or
    # None); a dense block's (offset, numel, 0, None)
    where: tuple[int, int, int, int | None] = (0, 0, 0, None)


# the names a block's entries have in the state: its factors, and their eigendecompositions (refresh_inverses)
_STATE_KEYS = {"factors": ("A", "S", "F"), "eigen": tuple(f"{k}_{part}" for k in ("A", "S", "F") for part in ("vals", "vecs"))}


class KFAC:
    """Block-diagonal K-FAC curvature with running factors, eigenbasis inverses and damped products.

    :param target: an :class:`~sb3_natural.common.heads.ActorHead` (or SB3 ``ActorCriticPolicy``: its actor),
        for the policy's Fisher; use :meth:`for_value` for a value head's Gauss-Newton matrix
    :param mode: ``"exact"`` (expectation over actions in closed form) or ``"sample"`` (one action per state)
    :param damping: Tikhonov lambda > 0
    :param damping_mode: ``"pi"`` (factored, Martens & Grosse 2015 Sec. 6.3) or ``"exact"``
    :param decay: weight of the old factors in the running average, in [0, 1)
    :param inverse_update_freq: refresh the eigendecompositions every this many :meth:`update` calls
    :param kl_convention: ``"sum"`` (true KL, default) or ``"mean"`` (sb3-contrib's per-dimension KL)
    :param stats_samples: estimate the layer factors ``A`` and ``S`` of each batch on at most this many
        of its samples (evenly spaced: every ``(N/m)``-th when ``m`` divides ``N``; None: all). An
        unbiased estimate of the batch's factors, and the running average spans many batches; it makes
        the factor products cheaper for large batches.
        Dense blocks and the gradient of :meth:`update_with_gradient` always use the whole batch.

    Vectors are flat P-vectors in the order of ``params`` (``ActorHead.flat`` order for an actor).
    """

    def __init__(
        self,
        target: Any,
        mode: KFACMode = "exact",
        damping: float = 1e-3,
        damping_mode: DampingMode = "pi",
        decay: float = 0.95,
        inverse_update_freq: int = 10,
        kl_convention: KLConvention = "sum",
        stats_samples: int | None = None,
        _target: _Target | None = None,
    ) -> None:
        if mode not in KFAC_MODES:
            raise ValueError(f"mode must be one of {KFAC_MODES}, got {mode!r}")
        if damping_mode not in DAMPING_MODES:
            raise ValueError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")
        check_kl_convention(kl_convention)
        check_positive(damping=damping)
        check_interval(0.0, 1.0, high_closed=False, decay=decay)
        check_at_least_one(inverse_update_freq=inverse_update_freq)
        if _target is None:
            head = target if isinstance(target, ActorHead) else ActorHead(target)
            _target = _actor_target(head, kl_convention)
        self._t = _target
        self.params = self._t.params
        self.mode, self.damping, self.damping_mode = mode, float(damping), damping_mode
        self.decay, self.inverse_update_freq = float(decay), int(inverse_update_freq)
        check_int(1, allow_none=True, stats_samples=stats_samples)
        self.stats_samples = None if stats_samples is None else int(stats_samples)
        self._stats_cache: dict[tuple[int, int, str], th.Tensor] = {}
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for m in self.numels[:-1]:
            self.offsets.append(self.offsets[-1] + m)
        self.num_params = sum(self.numels)
        covered: set[int] = set()
        self.blocks: list[_Block] = []
        for layer in self._t.layers:
            self.blocks.append(_Block(layer=layer))
            covered.add(layer.weight_index)
            if layer.bias_index is not None:
                covered.add(layer.bias_index)
        self.blocks += [_Block(dense_index=i) for i in range(len(self.params)) if i not in covered]
        for block in self.blocks:
            if block.layer is not None:
                lay = block.layer
                b_off = None if lay.bias_index is None else self.offsets[lay.bias_index]
                d_out = int(_weight(lay).shape[0])
                block.where = (self.offsets[lay.weight_index], self.numels[lay.weight_index], d_out, b_off)
            else:
                assert block.dense_index is not None
                block.where = (self.offsets[block.dense_index], self.numels[block.dense_index], 0, None)
        # the actor's Linear layers whose exact rows are propagated as tensors, without autograd, and its
        # last two layers, when their exact output factors have a closed form
        self._chain = None if self._t.head is None else _policy_chain(self._t.head, self._t.layers)
        self._last = None if self._t.head is None else _last_layers(self._t.head, self._chain)
        # tensors only (state_dict): per block "A", "S" or "F", and their eigendecompositions
        self.factors: list[dict[str, th.Tensor]] = [{} for _ in self.blocks]
        self.eigen: list[dict[str, th.Tensor]] = [{} for _ in self.blocks]
        self.steps = 0
        # (damping, mode), the eigenvalue tensors and what precondition() applies, computed from them (_inverses)
        self._inverse_cache: tuple[tuple[float, str], list[th.Tensor], list[tuple[th.Tensor, ...]]] | None = None
        self._layouts: dict[str, tuple[th.Tensor, th.Tensor, list[tuple[int, tuple[int, ...]]]]] = {}
        # how to build this K-FAC again on copies of its target (__deepcopy__); the classmethods set their own
        options: dict[str, Any] = {"mode": mode, "damping": damping, "damping_mode": damping_mode, "decay": decay}
        options.update(inverse_update_freq=inverse_update_freq, kl_convention=kl_convention, stats_samples=stats_samples)
        self._recipe: tuple[Callable[..., KFAC], tuple[Any, ...], dict[str, Any]] = (KFAC, (target,), options)

    def __deepcopy__(self, memo: dict[int, Any]) -> KFAC:
        """A copy built again on the copies of its target (the head or policy, in ``memo`` when the copy is
        part of a model's), with the same factors, eigendecompositions and step count. The target's
        functions are closures over the original modules, which ``copy.deepcopy`` does not copy: a plain
        copy would record the copied layers while running the original ones."""
        build, args, options = self._recipe
        new = build(*copy.deepcopy(args, memo), **options)
        memo[id(self)] = new
        new.load_state_dict(self.state_dict())
        return new

    def _stats_rows(self, n: int, device: th.device) -> th.Tensor | slice | None:
        """The samples the layer factors are estimated on (None: all ``n``): every ``(n / k)``-th when
        ``k = stats_samples`` divides ``n`` (a strided view, no copy), else ``k`` rounded evenly spaced ones."""
        if self.stats_samples is None or self.stats_samples >= n:
            return None
        if n % self.stats_samples == 0:
            return slice(0, n, n // self.stats_samples)
        key = (n, self.stats_samples, str(device))
        if key not in self._stats_cache:  # the same rows for every batch of n samples
            self._stats_cache[key] = th.linspace(0, n - 1, self.stats_samples, device=device).round().long()
        return self._stats_cache[key]

    @classmethod
    def for_value(cls, policy: ActorCriticPolicy, params: Sequence[nn.Parameter] | None = None, **kwargs: Any) -> KFAC:
        """K-FAC of the value head's Gauss-Newton matrix (squared loss, ``M = 1``), over ``params``
        (default: every trainable parameter the value depends on; Linear/Conv2d layers only)."""
        kfac = cls(policy, _target=_value_target(policy, params), **kwargs)
        kfac._recipe = (cls.for_value, (policy, params), kwargs)
        return kfac

    @classmethod
    def for_actor_critic(cls, target: Any, vf_fisher_coef: float = 1.0, **kwargs: Any) -> KFAC:
        """K-FAC of the joint output ``[z, v]`` of an ``ActorCriticPolicy`` (or its :class:`ActorHead`):
        the policy's Fisher and ``vf_fisher_coef`` times the value's Gauss-Newton matrix, as ACKTR's joint
        update (see :func:`_actor_critic_target`). ``params``: the actor's, then the value's own. The forward
        (:meth:`record`) returns ``y = [z, v]``."""
        check_positive(vf_fisher_coef=vf_fisher_coef)
        head = target if isinstance(target, ActorHead) else ActorHead(target)
        kl = kwargs.get("kl_convention", "sum")
        check_kl_convention(kl)
        kfac = cls(head, _target=_actor_critic_target(head, float(vf_fisher_coef), kl), **kwargs)
        kfac._recipe = (cls.for_actor_critic, (head, vf_fisher_coef), kwargs)
        return kfac

    # -------------------------------------------------------------- statistics
    def record(self, obs: Any) -> Recorded:
        """The target's forward pass with the factored layers recorded (graph kept): ``y`` is ``z`` (actor),
        ``v`` (value) or ``[z, v]`` (:meth:`for_actor_critic`). Pass it to :meth:`update` to reuse the pass."""
        t = self._t
        check_samples_independent(t.batch_norms)
        if t.observation_space is not None:
            check_observation_batch(t.observation_space, obs)
        with th.enable_grad(), record_layers(t.layers) as records:
            y = t.forward(obs)
        if y.shape[0] == 0:  # the factors are means over the batch: an empty one would fold NaN into them
            raise ValueError("obs must hold at least one sample")
        return Recorded(y, records, t.pieces() if t.pieces is not None else None)

    def policy_rows(self, z: th.Tensor) -> th.Tensor:
        """The rows of the policy's output factor ``R_pi(z)`` (``M_pi = R_pi^T R_pi``, KL scale included)
        that reach a layer output: backpropagated from ``z`` they give ``"exact"``'s output factors."""
        if self._t.policy_rows is None:
            raise ValueError("this K-FAC is not of a policy (use KFAC(head) or KFAC.for_actor_critic)")
        return self._t.policy_rows(z)

    def policy_row_grads(self, z: th.Tensor, records: Sequence[LayerRecord]) -> list[LayerRows | None]:
        """``"exact"``'s output gradients of the policy at every recorded layer: per record, the gradients of
        the rows of M's factor backpropagated from ``z`` (None where no row reaches), the layer's factor in
        closed form (:func:`last_layers_output_factors`, for a DiagGaussian with the shared log_std) or the
        rows stacked (:class:`OutputRows`, down the actor's :class:`_Chain`; only on the ``stats_samples``
        when no factored layer precedes the chain). Autograd (one backward per row) is used for what the
        chain does not reach, or for every layer where the actor has no such structure."""
        outputs = [rec.output for rec in records]
        chain, last = self._chain, self._last
        where = {id(rec.layer.module): j for j, rec in enumerate(records)}
        gaussian = self._t.head is not None and self._t.head.dist.kind == "diag_gaussian"
        if chain is None or (gaussian and last is None) or any(id(m) not in where for m in (chain.action, *chain.linears)):
            return list(backprop_rows(z, outputs, self.policy_rows(z.detach())))
        sub = None if chain.before else self._stats_rows(z.shape[0], z.device)

        def pick(t: th.Tensor) -> th.Tensor:
            return t if sub is None else take_rows(t, sub)

        out: list[LayerRows | None] = [None] * len(records)
        ia = where[id(chain.action)]
        linears, activations = chain.linears, chain.activations
        upper: nn.Linear = chain.action  # the layer whose output the current rows are at
        rows: th.Tensor | tuple[th.Tensor, th.Tensor]
        if gaussian:
            assert last is not None
            k = self._t.head.dist.action_dims[0]  # type: ignore[union-attr]
            ib = where[id(last.hidden)]
            inv_sigma = self.policy_rows(z[:1].detach())[0, :, :k].diagonal()  # the same for every state
            s_action, s_hidden, v = last_layers_output_factors(last, inv_sigma, records[ib], records[ia])
            out[ia], out[ib] = s_action, s_hidden
            assert s_hidden.phi is not None
            rows = (pick(s_hidden.phi), v)  # phi'_i * v_k at the hidden layer's output
            upper, linears, activations = last.hidden, linears[:-1], activations[:-1]
        else:  # z is the action layer's output
            rows = pick(self.policy_rows(z.detach()))
            out[ia] = OutputRows(rows, sub is not None)
        for lin, act in zip(reversed(linears), reversed(activations), strict=True):
            j = where[id(lin)]
            phi = _activation_derivative(act, pick(records[j].output.detach()), pick(records[where[id(upper)]].inputs))
            rows = _rows_through(rows, upper.weight.detach()).mul_(phi[:, None, :])  # G_j = (G_{j+1} W_{j+1}) * phi_j'
            out[j] = OutputRows(rows, sub is not None)
            upper = lin
        if chain.before:  # the factored layers before the chain (e.g. a CNN): autograd from its first output
            if isinstance(rows, tuple):
                rows = rows[0][:, None, :] * rows[1][None, :, :]
            todo = [j for j in range(len(records)) if out[j] is None]
            grads = backprop_rows(records[where[id(upper)]].output, [outputs[j] for j in todo], rows)
            for j, g in zip(todo, grads, strict=True):
                out[j] = g
        return out

    def batch_factors(
        self, obs: Any, generator: th.Generator | None = None, recorded: Recorded | None = None
    ) -> list[dict[str, th.Tensor]]:
        """The factors of one batch (no running average): per block ``{"A", "S"}`` or ``{"F"}``.

        ``recorded``: a :meth:`record` of ``obs`` to reuse (its graph is kept for the caller)."""
        t = self._t
        if recorded is None:
            recorded = self.record(obs)
        y, records = recorded.y, recorded.records
        calls: dict[int, int] = {}
        for rec in records:
            calls[id(rec.layer.module)] = calls.get(id(rec.layer.module), 0) + 1
        if any(c > 1 for c in calls.values()):
            raise ValueError("K-FAC needs each factored layer to be called once per forward pass")
        outputs = [rec.output for rec in records]
        closed = {b.dense_index: t.closed_form(b.dense_index) for b in self.blocks if b.dense_index is not None}
        r = t.factor(y) if any(v is None for v in closed.values()) else None  # [N, K, d], M = R^T R
        grads: list[LayerRows | None]
        if self.mode == "exact" and t.pieces is None and t.policy_rows is not None:  # the actor: y = z
            grads = self.policy_row_grads(y, records)
        elif self.mode == "exact":
            grads = list(backprop_rows(y, outputs, t.exact_rows(y.detach())))
        else:
            gy = t.sample_grad(y, generator)
            grads = [
                None if g is None else [g]
                for g in th.autograd.grad(y, outputs, grad_outputs=gy, allow_unused=True, retain_graph=True)
            ]
        by_module = {id(rec.layer.module): (rec, g) for rec, g in zip(records, grads, strict=True)}
        out: list[dict[str, th.Tensor]] = []
        for block in self.blocks:
            if block.layer is not None:
                module = block.layer.module
                with_bias = block.layer.bias_index is not None
                rec, g = by_module.get(id(module), (None, None))  # type: ignore[assignment]
                if rec is None or g is None:  # not reached by this batch's output
                    d_in = self._in_dim(block.layer) + int(with_bias)
                    d_out = int(_weight(block.layer).shape[0])
                    out.append({"A": y.new_zeros(d_in, d_in), "S": y.new_zeros(d_out, d_out)})
                    continue
                sub = self._stats_rows(rec.inputs.shape[0], rec.inputs.device)
                a_rows = rec.inputs if sub is None else take_rows(rec.inputs, sub)
                out.append({"A": input_factor(module, a_rows, with_bias), "S": batch_output_factor(g, sub)})
            else:
                assert block.dense_index is not None
                known = closed[block.dense_index]
                if known is not None:
                    out.append({"F": known})
                    continue
                assert r is not None
                out.append({"F": t.dense_block(obs, r, block.dense_index).detach()})
        return out

    def update_with_gradient(
        self,
        obs: Any,
        recorded: Recorded,
        output_grads: dict[int, tuple[th.Tensor, th.Tensor, float, LayerRows | None]],
    ) -> th.Tensor:
        """Fold one batch into the running factors from given per-sample output gradients, and return the
        weighted gradient of the factored layers from the same products (ACKTR's one-backward update).

        ``output_grads[id(module)] = (g, w, c, rows)`` for every factored layer: ``g`` the per-sample
        gradients ``d f_i / d y_i`` at its output (``[N, out]``, ``[N, ..., out]`` or ``[N, out, H, W]``),
        ``w`` the ``[N]`` weights of the returned gradient, ``c`` the scale of its output factor
        ``S = c (1/N) sum_i (1/T) sum_t g_{i,t} g_{i,t}^T`` (``"sample"`` with the rollout's own actions,
        or an exact Gauss-Newton factor when ``f_i`` is the output itself, ``M = 1``); ``rows``: None, or
        the output gradients of the rows of M's factor, whose :func:`output_factor` (times ``c``) is then
        ``S`` (``"exact"``), or that factor in closed form or from stacked rows (:class:`OutputFactor`,
        :class:`OutputRows`, from :meth:`policy_row_grads`). Returns a flat
        P-vector: ``sum_i w_i d f_i / d theta`` on the factored layers' entries, 0 elsewhere. Dense blocks
        get their exact block as in :meth:`batch_factors`.
        """
        t = self._t
        by_module = {id(rec.layer.module): rec for rec in recorded.records}
        closed = {b.dense_index: t.closed_form(b.dense_index) for b in self.blocks if b.dense_index is not None}
        r = t.factor(recorded.y) if any(v is None for v in closed.values()) else None
        grad = th.zeros(self.num_params, dtype=recorded.y.dtype, device=recorded.y.device)
        batch: list[dict[str, th.Tensor]] = []
        a_cache: dict[tuple[int, tuple[int, ...], bool], th.Tensor] = {}
        w_cache: dict[int, th.Tensor] = {}  # the [N, 1] column of each weight vector (the heads share theirs)
        for block in self.blocks:
            if block.layer is None:
                assert block.dense_index is not None
                known = closed[block.dense_index]
                if known is None:
                    assert r is not None
                    known = t.dense_block(obs, r, block.dense_index).detach()
                batch.append({"F": known})
                continue
            module = block.layer.module
            rec = by_module[id(module)]
            g_out, weights, scale, rows = output_grads[id(module)]
            with_bias = block.layer.bias_index is not None
            g_out = g_out.detach() if g_out.requires_grad else g_out
            g = _output_rows(g_out)
            n = rec.inputs.shape[0]
            sub = self._stats_rows(n, g.device)
            if rows is not None:
                s_factor = scale * batch_output_factor(rows, sub)
            else:
                g_s = g if sub is None else _output_rows(take_rows(g_out, sub))
                s_factor = (scale / g_s.shape[0]) * (g_s.T @ g_s)  # g_s.shape[0] = N T
            if isinstance(module, nn.Linear):  # [X | 1] without building it
                x = rec.inputs.reshape(-1, rec.inputs.shape[-1])
                key = (x.data_ptr(), tuple(x.shape), with_bias)  # the actor's and the value's first layers share x
                if key not in a_cache:
                    inputs_s = rec.inputs if sub is None else take_rows(rec.inputs, sub)
                    a_cache[key] = _linear_input_factor(inputs_s.reshape(-1, x.shape[-1]), with_bias, inputs_s.shape[0])
                if g.shape[0] == n:
                    if id(weights) not in w_cache:
                        w_cache[id(weights)] = weights.detach()[:, None]
                    gw = g * w_cache[id(weights)]
                else:  # positions: each sample's weight on its T rows
                    gw = g * weights.detach().repeat_interleave(g.shape[0] // n)[:, None]
                w_off, w_n, d_out, b_off = block.where  # [G^T X | G^T 1] into the flat gradient's entries
                th.mm(gw.T, x, out=grad[w_off : w_off + w_n].view(d_out, -1))
                if b_off is not None:
                    th.sum(gw, dim=0, out=grad[b_off : b_off + d_out])
                batch.append({"A": a_cache[key], "S": s_factor})
                continue
            a = layer_input_rows(module, rec.inputs, with_bias)
            inputs_s = rec.inputs if sub is None else take_rows(rec.inputs, sub)
            a_s = a if sub is None else layer_input_rows(module, inputs_s, with_bias)
            batch.append({"A": a_s.T @ a_s / inputs_s.shape[0], "S": s_factor})
            self._scatter(grad, block, weighted_layer_gradient(a, g, weights.detach()))
        self._fold(batch)
        return grad

    def _fold(self, batch: list[dict[str, th.Tensor]]) -> None:
        first = self.steps == 0
        slots = [(stored, key) for stored, new in zip(self.factors, batch, strict=True) for key in new]
        values = [value for new in batch for value in new.values()]
        if first:
            folded = [value.clone() for value in values]
        else:  # decay * old + (1 - decay) * new, one op for all (new tensors: snapshot() keeps references)
            folded = list(th._foreach_lerp([stored[key] for stored, key in slots], values, 1.0 - self.decay))
        for (stored, key), value in zip(slots, folded, strict=True):
            stored[key] = value
        self.steps += 1
        if first or (self.steps - 1) % self.inverse_update_freq == 0:
            self.refresh_inverses()

    @staticmethod
    def _in_dim(layer: Layer) -> int:
        return int(_weight(layer)[0].numel())

    def update(self, obs: Any, generator: th.Generator | None = None, recorded: Recorded | None = None) -> None:
        """Fold one batch into the running factors; refresh the inverses when due (``recorded``: see
        :meth:`batch_factors`)."""
        self._fold(self.batch_factors(obs, generator, recorded))

    def refresh_inverses(self) -> None:
        """Eigendecompositions of every factor (:func:`symmetric_eigh`: symmetrized, eigenvalues clamped at
        0, float64 where float32 does not converge, NaN for a factor that is not finite)."""
        for stored, eig in zip(self.factors, self.eigen, strict=True):
            for key, value in stored.items():
                eig[key + "_vals"], eig[key + "_vecs"] = symmetric_eigh(value)

    # -------------------------------------------------------------- products
    @staticmethod
    def _split(v: th.Tensor, block: _Block) -> th.Tensor:
        """The block's part of a flat vector: ``[out, in(+1)]`` for a layer, the parameter's entries otherwise."""
        off, n, d_out, b_off = block.where
        if block.layer is None:
            return v[off : off + n]
        w = v[off : off + n].view(d_out, -1)
        return w if b_off is None else th.cat([w, v[b_off : b_off + d_out, None]], dim=1)

    @staticmethod
    def _scatter(out: th.Tensor, block: _Block, value: th.Tensor) -> None:
        off, n, d_out, b_off = block.where
        if block.layer is None:
            out[off : off + n] = value
        elif b_off is None:
            out[off : off + n].view(d_out, -1).copy_(value)
        else:
            out[off : off + n].view(d_out, -1).copy_(value[:, :-1])
            out[b_off : b_off + d_out] = value[:, -1]

    def _check_ready(self, v: th.Tensor) -> None:
        if self.steps == 0:
            raise RuntimeError("call update(obs) before using the K-FAC curvature")
        if v.dim() != 1 or v.numel() != self.num_params:
            raise ValueError(f"expected a vector of {self.num_params} entries (P), got shape {tuple(v.shape)}")

    def mvp(self, v: th.Tensor) -> th.Tensor:
        """``F_kfac v`` (undamped, with the current running factors)."""
        self._check_ready(v)
        out = th.empty_like(v)
        for block, fac in zip(self.blocks, self.factors, strict=True):
            part = self._split(v, block)
            self._scatter(out, block, kron_matvec(fac["A"], fac["S"], part) if "A" in fac else fac["F"] @ part)
        return out

    def quadratic(self, v: th.Tensor, num_leading: int | None = None) -> float:
        """``v^T F_kfac v`` (for step sizes, e.g. ACKTR's ``sqrt(2 delta / (v^T F v))``).

        ``num_leading``: sum only the blocks of the first ``num_leading`` parameters (for
        :meth:`for_actor_critic`, ``len(head.params)``: the policy's part, without the value's own
        blocks; a shared layer's block keeps its joint factor, so the policy's part is then over-, never
        under-estimated)."""
        if num_leading is None:
            return float(v @ self.mvp(v))
        self._check_ready(v)
        blocks = zip(self.blocks, self.factors, strict=True)
        return _total([_block_quadratic(fac, self._split(v, block)) for block, fac in blocks if _leads(block, num_leading)])

    def precondition(self, g: th.Tensor) -> th.Tensor:
        """The damped natural gradient ``(F_kfac + lambda)^{-1} g`` per block, in the eigenbases of the
        factors as of the last :meth:`refresh_inverses` (see the module docstring for the damping)."""
        return self._precondition(g, None, False)[0]

    def precondition_and_quadratic(self, g: th.Tensor, num_leading: int | None = None) -> tuple[th.Tensor, float]:
        """``Delta = precondition(g)`` and ``quadratic(Delta, num_leading)`` in one pass over the blocks
        (ACKTR's step size needs both): the same numbers as the two calls (to rounding for
        ``num_leading=None``, where :meth:`quadratic` takes one dot product instead of a sum over blocks)."""
        return self._precondition(g, num_leading, True)

    def _precondition(self, g: th.Tensor, num_leading: int | None, with_quadratic: bool) -> tuple[th.Tensor, float]:
        self._check_ready(g)
        perm, inverse, spans = self._blocked_layout(g.device)
        blocked = g.index_select(0, perm)  # every block's [out, in(+1)] matrix contiguous: views, no cat
        out = th.empty_like(blocked)
        quads: list[th.Tensor] = []
        for block, fac, inv, (start, shape) in zip(self.blocks, self.factors, self._inverses(), spans, strict=True):
            n = math.prod(shape)
            part, value = blocked[start : start + n].view(shape), out[start : start + n].view(shape)
            if len(inv) == 2:  # "pi": (S + beta I)^{-1} G (A + alpha I)^{-1}
                th.mm(inv[0] @ part, inv[1], out=value)
            elif len(inv) == 3:  # "exact": Q_S [(Q_S^T G Q_A) / D] Q_A^T
                qs, qa, denom = inv
                th.mm(qs @ ((qs.T @ part @ qa) / denom), qa.T, out=value)
            else:  # a dense block: (F + lambda I)^{-1} v
                th.mv(inv[0], part, out=value)
            if with_quadratic and (num_leading is None or _leads(block, num_leading)):
                quads.append(_block_quadratic(fac, value))
        return out.index_select(0, inverse), _total(quads)

    def _inverses(self) -> list[tuple[th.Tensor, ...]]:
        """Per block, what :meth:`precondition` applies (see the module docstring), from the
        eigendecompositions of the last :meth:`refresh_inverses`: ``"pi"``: the damped factor inverses
        ``((S + beta I)^{-1}, (A + alpha I)^{-1}) = Q diag(1 / (l + damping)) Q^T`` (pi's traces those of
        the same factors, ``tr = sum`` of the clamped eigenvalues: the damping of the factors whose inverses
        these are, as Martens & Grosse compute it with each inverse); ``"exact"``: ``(Q_S, Q_A, D)`` with
        ``D = l_S l_A^T + lambda``; a dense block: ``((F + lambda I)^{-1},)``. Computed once per refresh (and
        per ``damping``), not per product."""
        vals = [eig[key] for eig in self.eigen for key in ("A_vals", "S_vals", "F_vals") if key in eig]
        cached = self._inverse_cache
        if (
            cached is not None
            and cached[0] == (self.damping, self.damping_mode)
            and len(cached[1]) == len(vals)
            and all(a is b for a, b in zip(cached[1], vals, strict=True))
        ):
            return cached[2]
        lam = self.damping
        out: list[tuple[th.Tensor, ...]] = []

        def damped_inverse(q: th.Tensor, lv: th.Tensor, d: float) -> th.Tensor:
            return (q / (lv + d)) @ q.T  # Q diag(1 / (l + d)) Q^T

        for fac, eig in zip(self.factors, self.eigen, strict=True):
            if "A" in fac:
                la, ls = eig["A_vals"], eig["S_vals"]
                if self.damping_mode == "pi":
                    ta, ts = th.stack([la.sum() / la.numel(), ls.sum() / ls.numel()]).tolist()
                    alpha, beta = pi_damping_from_traces(ta, ts, lam)
                    out.append((damped_inverse(eig["S_vecs"], ls, beta), damped_inverse(eig["A_vecs"], la, alpha)))
                else:
                    out.append((eig["S_vecs"], eig["A_vecs"], ls[:, None] * la[None, :] + lam))
            else:
                out.append((damped_inverse(eig["F_vecs"], eig["F_vals"], lam),))
        self._inverse_cache = ((self.damping, str(self.damping_mode)), vals, out)
        return out

    def _blocked_layout(self, device: th.device) -> tuple[th.Tensor, th.Tensor, list[tuple[int, tuple[int, ...]]]]:
        """The permutation of a flat P-vector that lays every block out as one contiguous matrix (a layer's
        ``[W | b]`` row by row, a dense block's entries), its inverse, and each block's (start, shape)."""
        key = str(device)
        if key not in self._layouts:
            index = th.arange(self.num_params)
            parts, spans, start = [], [], 0
            for block in self.blocks:
                part = self._split(index, block)
                parts.append(part.reshape(-1))
                spans.append((start, tuple(part.shape)))
                start += part.numel()
            perm = th.cat(parts)
            self._layouts[key] = (perm.to(device), th.argsort(perm).to(device), spans)
        return self._layouts[key]

    def matrix(self, damped: bool = False) -> th.Tensor:
        """The dense ``P x P`` block-diagonal K-FAC matrix (tests and small nets only); ``damped=True``:
        the matrix :meth:`precondition` inverts (``F_kfac + lambda I``, or the pi-damped factors)."""
        eye = th.eye(self.num_params, dtype=self.params[0].dtype, device=self.params[0].device)
        if not damped:
            return th.stack([self.mvp(e) for e in eye], dim=1)
        cols = []
        for e in eye:
            out = th.empty_like(e)
            for block, fac in zip(self.blocks, self.factors, strict=True):
                part = self._split(e, block)
                if "A" in fac:
                    if self.damping_mode == "pi":
                        alpha, beta = pi_damping(fac["A"], fac["S"], self.damping)
                        ia, i_s = (th.eye(fac[k].shape[0], dtype=e.dtype, device=e.device) for k in ("A", "S"))
                        value = kron_matvec(fac["A"] + alpha * ia, fac["S"] + beta * i_s, part)
                    else:
                        value = kron_matvec(fac["A"], fac["S"], part) + self.damping * part
                else:
                    value = fac["F"] @ part + self.damping * part
                self._scatter(out, block, value)
            cols.append(out)
        return th.stack(cols, dim=1)

    def snapshot(self) -> tuple[int, list[dict[str, th.Tensor]], list[dict[str, th.Tensor]]]:
        """A cheap copy of the state for :meth:`restore` (factors and inverses are replaced, never changed
        in place, so references suffice): lets a failed update leave K-FAC exactly as it was."""
        return self.steps, [dict(f) for f in self.factors], [dict(e) for e in self.eigen]

    def restore(self, snap: tuple[int, list[dict[str, th.Tensor]], list[dict[str, th.Tensor]]]) -> None:
        self.steps, factors, eigen = snap
        self.factors, self.eigen = [dict(f) for f in factors], [dict(e) for e in eigen]

    # -------------------------------------------------------------- save / load
    def state_dict(self) -> dict[str, Any]:
        """Tensors and counters only: what ``load_state_dict`` needs to resume exactly."""
        return {
            "steps": self.steps,
            "factors": [{k: v.clone() for k, v in f.items()} for f in self.factors],
            "eigen": [{k: v.clone() for k, v in e.items()} for e in self.eigen],
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict` (``strict`` is accepted for SB3's ``set_parameters``; shapes are always checked)."""
        missing = [key for key in ("steps", "factors", "eigen") if key not in state]
        if missing:
            raise ValueError(f"K-FAC state is missing {missing}: expected a KFAC.state_dict() (steps, factors, eigen)")
        if len(state["factors"]) != len(self.blocks):
            raise ValueError(f"state has {len(state['factors'])} blocks, this K-FAC has {len(self.blocks)}")
        for mine, theirs in zip(self.factors, state["factors"], strict=True):
            for key, value in theirs.items():
                if key in mine and mine[key].shape != value.shape:
                    raise ValueError(f"factor {key} has shape {tuple(value.shape)}, expected {tuple(mine[key].shape)}")
        self.steps = int(state["steps"])
        self.factors = [{k: v.clone() for k, v in f.items()} for f in state["factors"]]
        self.eigen = [{k: v.clone() for k, v in e.items()} for e in state["eigen"]]

    def flat_state_dict(self) -> dict[str, th.Tensor]:
        """:meth:`state_dict` as one flat mapping of names to tensors, as torch's modules give it and SB3's
        ``get_parameters`` expects of every saved object: ``factors.{block}.{key}``, ``eigen.{block}.{key}``,
        then ``steps`` (a 0-d float64 tensor: exact for any count below 2^53)."""
        out: dict[str, th.Tensor] = {}
        for part, blocks in (("factors", self.factors), ("eigen", self.eigen)):
            for i, entries in enumerate(blocks):
                for key, value in entries.items():
                    out[f"{part}.{i}.{key}"] = value.clone()
        out["steps"] = th.tensor(float(self.steps), dtype=th.float64)
        return out

    def load_flat_state_dict(self, state: Mapping[str, th.Tensor], strict: bool = True) -> None:
        """Restore :meth:`flat_state_dict`. ``strict`` (SB3's ``set_parameters(exact_match=True)``, used by
        ``load``): ``steps`` must be given and every name known; the factors and inverses are then exactly
        the given ones. Not strict (``exact_match=False``): the given entries replace those of the same
        name, the others are kept. Raises ``RuntimeError`` as torch's ``load_state_dict`` does for a missing
        or unknown name (strict) and for a block or shape this K-FAC does not have (always)."""
        factors, eigen = ([{} for _ in self.blocks], [{} for _ in self.blocks]) if strict else self.snapshot()[1:]
        parts = {"factors": factors, "eigen": eigen}
        unknown: list[str] = []
        for name, value in state.items():
            if not isinstance(value, th.Tensor):
                raise TypeError(f"K-FAC state: {name!r} must be a tensor, got {type(value).__name__}")
            pieces = name.split(".")
            if name == "steps":
                continue
            if (
                len(pieces) != 3
                or pieces[0] not in parts
                or not pieces[1].isdigit()
                or pieces[2] not in _STATE_KEYS[pieces[0]]
            ):
                unknown.append(name)
                continue
            part, i, key = pieces[0], int(pieces[1]), pieces[2]
            if i >= len(self.blocks):
                raise RuntimeError(f"K-FAC state: {name!r} is for block {i}, this K-FAC has {len(self.blocks)} blocks")
            mine = (self.factors if part == "factors" else self.eigen)[i].get(key)
            if mine is not None and mine.shape != value.shape:
                raise RuntimeError(f"K-FAC state: {name!r} has shape {tuple(value.shape)}, expected {tuple(mine.shape)}")
            parts[part][i][key] = value.detach().clone()
        if strict and (unknown or "steps" not in state):
            missing = [] if "steps" in state else ["steps"]
            raise RuntimeError(f"Error(s) in loading the K-FAC state: missing keys {missing}, unexpected keys {unknown}")
        if "steps" in state:
            steps = state["steps"]
            count = float(steps) if steps.numel() == 1 else math.nan
            if not (math.isfinite(count) and count >= 0 and count == round(count)):
                raise ValueError(f"K-FAC state: 'steps' must be one whole number >= 0, got {steps}")
            self.steps = round(count)
        self.factors, self.eigen = factors, eigen
