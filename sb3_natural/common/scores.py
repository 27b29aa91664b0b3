"""Per-sample scores psi_i = grad_theta log pi(a_i | s_i), batched.

The score matrix ``Psi`` (``[N, P]``, P = number of actor parameters, columns in
:class:`~sb3_natural.common.heads.ActorHead` order) is what Natural Actor-Critic's
compatible features are made of (Peters & Schaal 2008) and what the empirical Fisher
``Psi^T Psi / N`` is built from.

Three ways to compute it:

* ``"layerwise"`` (default): one forward pass with hooks on the ``nn.Linear`` and
  ``nn.Conv2d`` layers, the closed-form ``dlogp_i/dz_i``, and ONE backward pass to the
  layers' outputs. For a linear layer ``y = W x + b`` the per-sample gradient is the
  outer product ``dlogp_i/dW = g_i x_i^T`` with ``g_i = dlogp_i/dy_i`` (Goodfellow 2015,
  "Efficient per-example gradient computations"); for a convolution it is
  ``g_i unfold(x_i)^T``. The shared Gaussian ``log_std`` gets ``dlogp_i/dlog_std`` straight
  from ``z``. Any other parameter (gSDE's ``log_std``, a LayerNorm, a custom module) falls
  back to ``torch.func.vmap(grad(...))`` for that parameter only.
  Assumes the layers treat samples independently (no BatchNorm in training mode).
* ``"vmap"``: ``torch.func.vmap(torch.func.grad(...))`` over all parameters.
* ``"loop"``: one ``torch.autograd.grad`` call per sample (the approach of the question
  this package started from); the reference for tests and benchmarks.

Batches are processed ``chunk_size`` samples at a time so that the memory beyond the
``N x P`` result stays bounded.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_natural.common.checks import (
    check_actions_in_space,
    check_int,
    check_observation_batch,
    check_samples_independent,
)
from sb3_natural.common.heads import ActorHead, Obs, index_obs

ScoreMethod = Literal["layerwise", "vmap", "loop"]
SCORE_METHODS: tuple[str, ...] = ("layerwise", "vmap", "loop")


def as_head(policy_or_head: Any) -> ActorHead:
    """Accept an SB3 ``ActorCriticPolicy`` or an :class:`ActorHead`."""
    return policy_or_head if isinstance(policy_or_head, ActorHead) else ActorHead(policy_or_head)


def batch_size_of(obs: Obs) -> int:
    if isinstance(obs, Mapping):
        sizes = {int(v.shape[0]) for v in obs.values()}
        if len(sizes) != 1:
            raise ValueError(f"all entries of a dict observation must have the same batch size, got {sorted(sizes)}")
        return sizes.pop()
    return int(obs.shape[0])


def prepare_obs(policy: Any, obs: Any) -> tuple[ActorHead, Obs]:
    """The actor head and the observations as tensors, checked to be a batch of the policy's observation
    space and the policy to treat its samples independently (the common start of every per-sample
    routine: scores, Gram, Fisher products)."""
    head = as_head(policy)
    check_samples_independent(head.batch_norms)
    obs_t = head.obs_to_tensor(obs)
    check_observation_batch(head.policy.observation_space, obs_t)
    return head, obs_t


def prepare_batch(policy: Any, obs: Any, actions: Any) -> tuple[ActorHead, Obs, th.Tensor]:
    """:func:`prepare_obs`, and the actions on the policy's device, their shape checked against the batch
    and their values against the action space (the common start of every routine that takes
    ``(policy, obs, actions)``)."""
    head, obs_t = prepare_obs(policy, obs)
    actions = th.as_tensor(actions, device=head.params[0].device)
    head.dist.prepare_actions(actions, batch_size_of(obs_t))  # validates the shape
    check_actions_in_space(head.dist.kind, head.dist.action_dims, actions)
    return head, obs_t, actions


def per_sample_scores(
    policy: Any,
    obs: Any,
    actions: th.Tensor,
    method: ScoreMethod = "layerwise",
    chunk_size: int | None = 4096,
    out: th.Tensor | None = None,
) -> th.Tensor:
    """Per-sample scores ``Psi[i] = grad_theta log pi(a_i | s_i)``, shape ``[N, P]``.

    :param policy: an SB3 ``ActorCriticPolicy`` or an :class:`ActorHead` built from one
        (build the head once and reuse it when calling this in a loop)
    :param obs: observations, ``[N, ...]`` (tensor, numpy array, or dict of them)
    :param actions: actions as SB3 stores them (``[N]``/``[N, 1]`` for Discrete, ``[N, k]`` otherwise)
    :param method: ``"layerwise"`` (fast), ``"vmap"`` or ``"loop"`` (naive reference)
    :param chunk_size: samples per chunk (None: the whole batch at once)
    :param out: optional ``[N, P]`` tensor to write into. Reusing one buffer across updates
        avoids the operating system's first-touch cost of fresh memory (see
        :func:`empty_output` and BENCHMARKS.md)
    :return: the score matrix; column order is ``ActorHead.flat`` order
    """
    head, obs_t, actions = prepare_batch(policy, obs, actions)
    return per_sample_grads(head, obs_t, head.dist.log_prob, (actions,), method, chunk_size, out)


PerSampleFn = Callable[..., th.Tensor]

_HUGE_PAGE_MIN_BYTES = 4 << 20
_NUMPY_DTYPES = {th.float32: np.float32, th.float64: np.float64}


def empty_output(n: int, p: int, dtype: th.dtype, device: th.device) -> th.Tensor:
    """An uninitialized ``[n, p]`` tensor for a large score matrix.

    On Linux CPUs, a large buffer is an anonymous mapping advised ``MADV_HUGEPAGE``: the
    kernel then faults it in 2 MiB pages instead of 4 KiB ones. For ``N x P`` outputs
    (tens to hundreds of MB, freshly mapped on every call by the system allocator) the
    first-touch page faults otherwise cost several times the arithmetic; see BENCHMARKS.md.
    The mapping is released when the tensor is. Elsewhere this is ``torch.empty``.
    """
    np_dtype = _NUMPY_DTYPES.get(dtype)
    nbytes = n * p * (np.dtype(np_dtype).itemsize if np_dtype is not None else 0)
    if device.type != "cpu" or np_dtype is None or nbytes < _HUGE_PAGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return th.empty(n, p, dtype=dtype, device=device)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError, AttributeError):
        return th.empty(n, p, dtype=dtype, device=device)
    return th.from_numpy(np.frombuffer(buf, dtype=np_dtype, count=n * p).reshape(n, p))


def per_sample_grads(
    head: ActorHead,
    obs: Obs,
    fn: PerSampleFn,
    extra: tuple[th.Tensor, ...] = (),
    method: ScoreMethod = "layerwise",
    chunk_size: int | None = 4096,
    out: th.Tensor | None = None,
) -> th.Tensor:
    """Per-sample gradients ``G[i] = grad_theta fn(z, *extra)[i]``, shape ``[N, P]``.

    ``fn(z, *extra) -> [N]`` must be row-separable: entry i depends on ``z[i]`` and
    ``extra[..][i]`` only (a log-probability, ``r_i . z_i``, ...). The scores are
    ``fn = dist.log_prob`` with ``extra = (actions,)``.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {SCORE_METHODS}, got {method!r}")
    check_int(1, allow_none=True, chunk_size=chunk_size)
    check_samples_independent(head.batch_norms)
    n = batch_size_of(obs)
    dtype, device = head.params[0].dtype, head.params[0].device
    if out is None:
        out = empty_output(n, head.num_params, dtype, device)
    elif out.shape != (n, head.num_params) or out.dtype != dtype or out.device != device or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous [{n}, {head.num_params}] {dtype} tensor on {device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    step = n if chunk_size is None else chunk_size
    impl = {"layerwise": _layerwise_grads, "vmap": _vmap_all, "loop": _loop_grads}[method]
    checked = partial(_one_value_per_sample, fn)
    for start in range(0, n, step):
        stop = min(n, start + step)
        impl(head, index_obs(obs, slice(start, stop)), checked, tuple(e[start:stop] for e in extra), out[start:stop])
    return out


def _one_value_per_sample(fn: PerSampleFn, z: th.Tensor, *extra: th.Tensor) -> th.Tensor:
    """``fn(z, *extra)``, checked to be one value per row of ``z`` (shape ``[N]``)."""
    vals = fn(z, *extra)
    if not isinstance(vals, th.Tensor) or vals.shape != z.shape[:1]:
        shape = tuple(vals.shape) if isinstance(vals, th.Tensor) else type(vals).__name__
        raise ValueError(
            "fn must return one value per sample (shape [N] for z of shape [N, ...]), "
            f"got {shape} for z of shape {tuple(z.shape)}"
        )
    return vals


# ----------------------------------------------------------------------- loop
def _loop_grads(head: ActorHead, obs: Obs, fn: PerSampleFn, extra: tuple[th.Tensor, ...], out: th.Tensor) -> None:
    with th.enable_grad():
        vals = fn(head(obs), *extra)
        for i in range(vals.shape[0]):
            grads = th.autograd.grad(vals[i], head.params, retain_graph=True, allow_unused=True)
            out[i] = head.flat([th.zeros_like(p) if g is None else g for p, g in zip(head.params, grads, strict=True)])


# ----------------------------------------------------------------------- vmap
def per_sample_param_grads(
    head: ActorHead, names: list[str], obs: Obs, fn: PerSampleFn, extra: tuple[th.Tensor, ...]
) -> dict[str, th.Tensor]:
    """Per-sample gradients of ``fn`` w.r.t. the parameters ``names`` (keys of ``param_dict``), by
    ``torch.func.vmap(grad(...))``: ``{name: [N, *shape]}``."""
    sub = {k: v.detach() for k, v in head.param_dict().items() if k in names}
    pre = head.preprocess(obs)

    def one(p: dict[str, th.Tensor], o: Any, *e: th.Tensor) -> th.Tensor:
        o1 = {k: v.unsqueeze(0) for k, v in o.items()} if isinstance(o, Mapping) else o.unsqueeze(0)
        z = head.functional(p, o1)
        return fn(z, *(t.unsqueeze(0) for t in e)).sum()

    in_dims = (None, 0, *([0] * len(extra)))
    return th.func.vmap(th.func.grad(one), in_dims=in_dims)(sub, pre, *extra)


def _vmap_all(head: ActorHead, obs: Obs, fn: PerSampleFn, extra: tuple[th.Tensor, ...], out: th.Tensor) -> None:
    keys = list(head.param_dict().keys())
    grads = per_sample_param_grads(head, keys, obs, fn, extra)
    n = out.shape[0]
    for key, off, m in zip(keys, head.offsets, head.numels, strict=True):
        out[:, off : off + m] = grads[key].reshape(n, m)


# ------------------------------------------------------------------ layerwise
_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _conv_supported(m: nn.Conv2d) -> bool:
    return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)


@dataclass(frozen=True)
class Layer:
    """A ``nn.Linear`` or ``nn.Conv2d`` whose weight is among ``params`` (indices into that list)."""

    module: nn.Module
    weight_index: int
    bias_index: int | None


def hookable_layers(root: nn.Module, params: Sequence[th.Tensor]) -> list[Layer]:
    """The Linear/Conv2d layers under ``root`` whose weight is one of ``params``.

    Convolutions with groups, non-zero padding modes or string padding are left out (the callers
    treat their parameters like any other, through ``torch.func``).
    """
    index = {id(p): i for i, p in enumerate(params)}
    layers: list[Layer] = []
    for m in root.modules():
        if isinstance(m, nn.Conv2d) and not _conv_supported(m):
            continue
        if isinstance(m, _LAYER_TYPES) and id(m.weight) in index:
            bias = m.bias
            bi = index.get(id(bias)) if bias is not None else None
            layers.append(Layer(m, index[id(m.weight)], bi))
    return layers


@dataclass
class LayerRecord:
    """One call of a hooked layer: its input (detached) and its output (with graph)."""

    layer: Layer
    inputs: th.Tensor
    output: th.Tensor


@contextmanager
def record_layers(layers: list[Layer]) -> Iterator[list[LayerRecord]]:
    """Forward hooks on ``layers`` for the duration of the block; yields the records, in call order.

    The one pass that per-sample scores (Goodfellow 2015) and K-FAC's factors (Martens & Grosse 2015)
    both need: every layer's input ``a`` and output ``y``, from which ``dlogp/dW = g a^T`` and the
    factors ``E[a a^T]``, ``E[g g^T]`` follow once ``g = d(.)/dy`` is backpropagated.
    """
    records: list[LayerRecord] = []
    by_module = {id(layer.module): layer for layer in layers}

    def hook(module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> None:
        records.append(LayerRecord(by_module[id(module)], inputs[0].detach(), output))

    handles = [layer.module.register_forward_hook(hook) for layer in layers]
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def _layerwise_grads(head: ActorHead, obs: Obs, fn: PerSampleFn, extra: tuple[th.Tensor, ...], out: th.Tensor) -> None:
    n = out.shape[0]
    layers = hookable_layers(head.policy, head.params)
    covered: set[int] = set()
    for layer in layers:
        covered.add(layer.weight_index)
        if layer.bias_index is not None:
            covered.add(layer.bias_index)

    with th.enable_grad(), record_layers(layers) as records:
        z = head(obs)

    # g_z[i] = d fn_i / d z_i (row i depends on sample i only), e.g. d log pi(a_i | z_i) / d z_i.
    with th.enable_grad():
        z_leaf = z.detach().requires_grad_(True)
        g_z = th.autograd.grad(fn(z_leaf, *extra).sum(), z_leaf)[0]

    written: set[int] = set()

    def view_of(i: int) -> th.Tensor:
        return out[:, head.offsets[i] : head.offsets[i] + head.numels[i]].view(n, *head.shapes[i])

    @th.no_grad()
    def write(i: int, value: th.Tensor) -> None:
        if i in written:
            view_of(i).add_(value)
        else:
            view_of(i).copy_(value)
            written.add(i)

    @th.no_grad()
    def write_outer(i: int, g: th.Tensor, x: th.Tensor) -> None:
        # g_i x_i^T straight into the output (no [N, out, in] temporary).
        if i in written:
            view_of(i).addcmul_(g[:, :, None], x[:, None, :])
        else:
            th.mul(g[:, :, None], x[:, None, :], out=view_of(i))
            written.add(i)

    if records:
        outputs = [r.output for r in records]
        out_grads = th.autograd.grad(z, outputs, grad_outputs=g_z, allow_unused=True, retain_graph=True)
        for record, g in zip(records, out_grads, strict=True):
            if g is None:
                continue
            module, x = record.layer.module, record.inputs
            wi, bi = record.layer.weight_index, record.layer.bias_index
            if isinstance(module, nn.Linear):
                # Per-sample dlogp/dW = g_i x_i^T (summed over any extra middle dims).
                if x.dim() == 2:
                    write_outer(wi, g, x)
                    if bi is not None:
                        write(bi, g)
                else:
                    write(wi, th.einsum("n...o,n...i->noi", g, x))
                    if bi is not None:
                        write(bi, g.reshape(n, -1, g.shape[-1]).sum(1))
            else:
                assert isinstance(module, nn.Conv2d)
                padding = module.padding
                assert not isinstance(padding, str)  # excluded by _conv_supported
                cols = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)  # [N, C*kh*kw, L]
                g2 = g.reshape(n, g.shape[1], -1)  # [N, O, L]
                write(wi, th.bmm(g2, cols.transpose(1, 2)).view(n, *module.weight.shape))
                if bi is not None:
                    write(bi, g2.sum(2))

    for name, sl in head.direct_slices.items():
        i = head.names.index(name)
        write(i, g_z[:, sl])
        covered.add(i)

    rest = [i for i in range(len(head.params)) if i not in covered]
    if rest:
        keys = ["policy." + head.names[i] for i in rest]
        grads = per_sample_param_grads(head, keys, obs, fn, extra)
        for i, key in zip(rest, keys, strict=True):
            write(i, grads[key])
    for i in range(len(head.params)):
        if i not in written:  # no gradient path from this chunk
            out[:, head.offsets[i] : head.offsets[i] + head.numels[i]].zero_()
