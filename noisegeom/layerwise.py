"""Per-sample gradients and Jacobians layer by layer: outer products and unfolded convolutions.

A linear layer z = W x + b that acts on the rows of a batch passes sample i's back-propagated
signal δ_i = ∂r_i/∂z_i (r_i a scalar of sample i: its loss ℓ_i, or one output f_a(x_i)) to its
parameters as an outer product,

    ∇_W r_i = Σ_t δ_{i,t} x_{i,t}ᵀ,     ∇_b r_i = Σ_t δ_{i,t},

summed over the positions t at which the layer acts (one position for a plain (n, d_in) input).
A convolution is such a layer too: its weight W (C_out × C_in/G·k_h·k_w per group) acts at every
output position t on the input patch x_{i,t}, the columns of the unfolded input
U_i = unfold(x_i) ∈ R^{C_in·k_h·k_w × T}, so with Δ_i ∈ R^{C_out × T} the signals at the output,

    ∇_W r_i = Δ_i U_iᵀ,     ∇_b r_i = Δ_i 1,

one batched product per layer for all samples (Goodfellow, arXiv:1510.01799, 2015, for linear
layers; Rochette, Manoel and Tramel, arXiv:1912.06015, 2019, as Opacus and BackPACK do for
convolutions). One forward pass records each layer's input, and one backward pass of
Σ_i r_i gives every δ_i at once, because sample i's outputs depend on sample i alone. For the
Jacobian of k outputs, the k cotangents e_a (one per output) give k backward passes and a
product with k·C_out rows per layer. torch's ``vmap`` rule for a convolution's weight gradient
instead loops over the samples.

The layers are found by watching the forward pass (a ``TorchFunctionMode``) for calls of
``torch.nn.functional.linear``, ``conv1d`` and ``conv2d`` (every ``nn.Linear``, ``nn.Conv1d``
and ``nn.Conv2d`` makes one; any stride, padding, dilation and groups) whose weight or bias is
a trainable tensor, located as a slice of θ. The route applies when every trainable tensor is
the weight or bias of such calls (a tensor used by several calls, shared weights, gets the sum
of their contributions) and reaches the outputs through them only. Both are checked: the
first structurally, the second numerically on every chunk, Σ_i of the rows against autograd's
gradient of Σ_i r_i; the samples' independence by :func:`~noisegeom.models.probe_per_sample`.
A model outside the rule raises :class:`NotLayerwiseError`, on which
:func:`~noisegeom.per_sample_gradients`, :func:`~noisegeom.jacobian` and
:func:`~noisegeom.ggn_factor` fall back to ``vmap``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair, _single
from torch.overrides import TorchFunctionMode

from .models import FlatModel, probe_per_sample

__all__ = ["NotLayerwiseError", "layerwise_rows"]

# Relative tolerance of the check Σ_i rows_i = autograd's gradient of Σ_i r_i.
_CHECK_RTOL = 1e-9
# Default chunks: about this many numbers (8 MB, the size of a core's L2 cache or two), at least
# _MIN_CHUNK samples (per-chunk overheads), at most what the caller's memory budget allows.
_CACHE_NUMBERS = 2 ** 20
_MIN_CHUNK = 32
# Samples on which the independence of the samples is tested (models.probe_per_sample).
_PROBE_SAMPLES = 64


class NotLayerwiseError(ValueError):
    """The model is outside the rule of the layerwise route (see :mod:`noisegeom.layerwise`)."""


def _linear_args(input, weight, bias=None):
    return input, weight, bias, {}


def _conv_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


_RECORDED = {F.linear: ("linear", _linear_args), F.conv1d: ("conv1d", _conv_args), F.conv2d: ("conv2d", _conv_args)}


class _Call:
    """One recorded call: its kind, input, weight, bias, options and output; ``w`` and ``b`` are
    the slices of θ of its trainable weight and bias (None when fixed). A convolution evaluated
    here as a matrix product (:func:`_conv_as_product`) also keeps its ``patches`` and has as
    ``out`` its output rows, one per sample and position."""

    __slots__ = ("kind", "inp", "weight", "bias", "opts", "out", "w", "b", "patches")

    def __init__(self, kind, inp, weight, bias, opts, out=None):
        self.kind, self.inp, self.weight, self.bias, self.opts, self.out = kind, inp, weight, bias, opts, out
        self.w = self.b = self.patches = None


class _Calls(TorchFunctionMode):
    """Records every call of F.linear, F.conv1d and F.conv2d during a forward pass.

    With ``th`` given, a convolution (groups = 1, batched input) whose weight lies in θ's memory
    is evaluated by :func:`_conv_as_product`, so that its unfolded input serves the forward pass
    and the per-sample gradients alike.
    """

    def __init__(self, th: torch.Tensor | None = None):
        super().__init__()
        self.calls = []
        self._storage = None if th is None else th.untyped_storage().data_ptr()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = _RECORDED.get(func) if callable(func) else None
        if rec is None:
            return func(*args, **kwargs)
        kind, parse = rec
        c = _Call(kind, *parse(*args, **kwargs))
        if (self._storage is not None and kind != "linear" and c.opts["groups"] == 1
                and isinstance(c.inp, torch.Tensor) and c.inp.ndim == (3 if kind == "conv1d" else 4)
                and isinstance(c.weight, torch.Tensor) and c.weight.untyped_storage().data_ptr() == self._storage):
            out = _conv_as_product(c)
        else:
            out = func(*args, **kwargs)
            c.out = out
        self.calls.append(c)
        return out


def _geometry(c: _Call):
    """A convolution as a 2-D one: its input (m, C, H, W), kernel, stride, dilation, the padding
    (top, bottom, left, right) and the output size (H', W'). A 1-D convolution has height 1."""
    o, x = c.opts, c.inp
    if c.kind == "conv1d":
        x = x[:, :, None, :]
        kernel = (1, c.weight.shape[2])
        stride, dilation = (1,) + _single(o["stride"]), (1,) + _single(o["dilation"])
        padding = o["padding"] if isinstance(o["padding"], str) else (0,) + _single(o["padding"])
    else:
        kernel = tuple(c.weight.shape[2:])
        stride, dilation = _pair(o["stride"]), _pair(o["dilation"])
        padding = o["padding"] if isinstance(o["padding"], str) else _pair(o["padding"])
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        # torch pads d(k − 1) in all, the odd one at the end
        pads = ()
        for d, k in zip(dilation, kernel):
            total = d * (k - 1)
            pads += (total // 2, total - total // 2)
    else:
        pads = (padding[0], padding[0], padding[1], padding[1])
    size = tuple((n + pads[2 * j] + pads[2 * j + 1] - dilation[j] * (kernel[j] - 1) - 1) // stride[j] + 1
                 for j, n in enumerate(x.shape[2:]))
    return x, kernel, stride, dilation, pads, size


def _patches(x, kernel, stride, dilation, pads, size) -> torch.Tensor:
    """The input patches of a convolution, (m, H'·W', k_h·k_w·C): row t of sample i holds the
    k_h × k_w × C entries of x_i that the kernel meets at output position t (channels last)."""
    m, C, H, W = x.shape
    xp = x.new_zeros(m, H + pads[0] + pads[1], W + pads[2] + pads[3], C)
    xp[:, pads[0]:pads[0] + H, pads[2]:pads[2] + W] = x.permute(0, 2, 3, 1)
    s = xp.stride()
    view = xp.as_strided((m, size[0], size[1], kernel[0], kernel[1], C),
                         (s[0], s[1] * stride[0], s[2] * stride[1], s[1] * dilation[0], s[2] * dilation[1], s[3]))
    return view.reshape(m, size[0] * size[1], kernel[0] * kernel[1] * C)


class _Patches(torch.autograd.Function):
    """:func:`_patches` with its backward: each patch entry's gradient added back to its pixel."""

    @staticmethod
    def forward(ctx, x, kernel, stride, dilation, pads, size):
        ctx.geometry = (x.shape, kernel, stride, dilation, pads, size)
        return _patches(x, kernel, stride, dilation, pads, size)

    @staticmethod
    def backward(ctx, dP):
        (m, C, H, W), kernel, stride, dilation, pads, size = ctx.geometry
        dxp = dP.new_zeros(m, H + pads[0] + pads[1], W + pads[2] + pads[3], C)
        dP = dP.reshape(m, size[0], size[1], kernel[0], kernel[1], C)
        for a in range(kernel[0]):
            for b in range(kernel[1]):
                r, q = a * dilation[0], b * dilation[1]
                dxp[:, r:r + (size[0] - 1) * stride[0] + 1:stride[0],
                    q:q + (size[1] - 1) * stride[1] + 1:stride[1]] += dP[:, :, :, a, b]
        return dxp[:, pads[0]:pads[0] + H, pads[2]:pads[2] + W].permute(0, 3, 1, 2), None, None, None, None, None


def _conv_as_product(c: _Call) -> torch.Tensor:
    """The convolution of call c as one matrix product, rows P_it (patches) times Wᵀ: what torch's
    CPU kernel computes sample by sample, here for the whole batch; keeps the patches in c.

    Returns the output as the model expects it, (m, C_out, H', W') (or (m, C_out, W') for conv1d),
    a view of the rows (m·H'·W', C_out) that become c.out."""
    x, kernel, stride, dilation, pads, size = _geometry(c)
    P = _Patches.apply(x, kernel, stride, dilation, pads, size)
    W = c.weight if c.kind == "conv2d" else c.weight[:, :, None, :]
    Wr = W.permute(0, 2, 3, 1).reshape(W.shape[0], -1)           # the patches' order: k_h, k_w, C
    rows = P.reshape(-1, P.shape[-1])
    z = rows @ Wr.T if c.bias is None else torch.addmm(c.bias, rows, Wr.T)
    c.patches, c.out = P.detach(), z
    y = z.view(x.shape[0], size[0], size[1], W.shape[0]).permute(0, 3, 1, 2)
    return y if c.kind == "conv2d" else y[:, :, 0, :]


def _param_slices(model: FlatModel) -> dict:
    """{offset in θ: slice} for every trainable tensor of the model."""
    out, start = {}, 0
    for numel in model._numels:
        out[start] = slice(start, start + numel)
        start += numel
    return out


def _theta_locator(th: torch.Tensor, slices: dict, error: type, message: str):
    """locate(t): the slice of θ that the tensor t is (None when t is not part of θ); raises
    an error when t is part of a parameter, or a strided view of one.

    A trainable tensor is a contiguous slice of θ: it is recognised by the storage it views and its
    offset there (not by data pointers, which a tensor without data, on 'meta', lacks). Raises
    ``error(message)`` otherwise. Shared with
    :mod:`noisegeom.factored`."""
    storage = th.untyped_storage()._cdata

    def locate(t):
        if not isinstance(t, torch.Tensor) or t.untyped_storage()._cdata != storage:
            return None
        s = slices.get(t.storage_offset() - th.storage_offset())
        if s is None or t.numel() != s.stop - s.start or not t.is_contiguous():
            raise error(message)
        return s

    return locate


def _layers(calls, th: torch.Tensor, slices: dict, m: int) -> list:
    """The recorded calls with a trainable weight or bias, each located in θ; NotLayerwiseError
    when a trainable tensor is used otherwise, or a layer does not act on one row per sample."""
    locate = _theta_locator(th, slices, NotLayerwiseError,
                            "a layer uses part of a parameter, or a strided view of one, as its weight or bias")
    layers, used = [], set()
    for j, c in enumerate(calls):
        c.w, c.b = locate(c.weight), locate(c.bias)
        if c.w is None and c.b is None:
            continue                          # a fixed map: back-propagation passes through it
        ndim = {"linear": None, "conv1d": 3, "conv2d": 4}[c.kind]
        if c.inp.ndim < 2 or c.inp.shape[0] != m or (ndim is not None and c.inp.ndim != ndim):
            raise NotLayerwiseError(f"layer {j} ({c.kind}) acts on an input of shape {tuple(c.inp.shape)}, "
                                    f"not on one entry per sample ({m}, ...)")
        used.update(s.start for s in (c.w, c.b) if s is not None)
        layers.append(c)
    missing = [s for off, s in slices.items() if off not in used]
    if missing:
        s = missing[0]
        raise NotLayerwiseError(f"the parameter at θ[{s.start}:{s.stop}] is not the weight or bias of a linear "
                                "layer or a 1-D/2-D convolution (e.g. a parameter used directly)")
    return layers


def _contributions(c: _Call, signals: list):
    """(weight rows, bias rows) of one layer from its k signals (each shaped like c.out): tensors
    (m, k, *shape) whose trailing dims flatten in the parameter's order, or None where fixed."""
    k = len(signals)
    if c.kind == "linear":
        m = c.inp.shape[0]
        x = c.inp.detach().reshape(m, -1, c.inp.shape[-1])           # (m, T, d_in)
        D = torch.stack(signals, 1).reshape(m, k, x.shape[1], -1)     # (m, k, T, d_out)
        w = None
        if c.w is not None:
            w = (D[:, :, 0, :, None] * x[:, None, 0, None, :] if x.shape[1] == 1 else
                 torch.einsum("mktd,mte->mkde", D, x))
        return w, (D.sum(2) if c.b is not None else None)
    c_out = c.weight.shape[0]
    if c.patches is not None:                                         # rows (m·T, C_out) of the product
        m, T, _ = c.patches.shape
        D = torch.stack(signals, 1).view(m, T, k * c_out)
        w = None
        if c.w is not None:
            kh, kw = (1, c.weight.shape[2]) if c.kind == "conv1d" else c.weight.shape[2:]
            # Δ_i P_i for all samples and cotangents at once: (m, k·C_out, T) times (m, T, k_h·k_w·C_in)
            w = torch.bmm(D.transpose(1, 2), c.patches).view(m, k, c_out, kh, kw, -1).permute(0, 1, 2, 5, 3, 4)
        return w, (D.sum(1).view(m, k, c_out) if c.b is not None else None)
    # a convolution torch evaluated (groups > 1, or a fixed weight): its output (m, C_out, ...)
    m = c.inp.shape[0]
    D = torch.stack(signals, 1).reshape(m, k, c_out, -1)            # (m, k, C_out, T)
    w = None
    if c.w is not None:
        x, kernel, stride, dilation, pads, size = _geometry(c)
        groups = c.opts["groups"]
        P = _patches(x.detach(), kernel, stride, dilation, pads, size)
        P = P.view(m, P.shape[1], kernel[0] * kernel[1], groups, -1)  # (m, T, k_h·k_w, G, C_in/G)
        w = torch.einsum("mkgot,mtsgc->mkgocs", D.view(m, k, groups, c_out // groups, -1), P)
        w = w.reshape(m, k, c_out, -1, *kernel) if c.kind == "conv2d" else w.reshape(m, k, c_out, -1, kernel[1])
    return w, (D.sum(3) if c.b is not None else None)


def _footprint(layers, m: int, k: int) -> int:
    """Numbers held per sample by one chunk beyond its rows: inputs, unfolded inputs, signals."""
    total = 0
    for c in layers:
        total += (c.inp.numel() + (k + 1) * c.out.numel()) // m
        if c.kind != "linear" and c.w is not None:            # the unfolded input
            positions = c.out.numel() // (m * c.out.shape[1])
            total += c.weight[0].numel() * c.opts["groups"] * positions
    return total


def layerwise_rows(model: FlatModel, theta: torch.Tensor, X: torch.Tensor, roots, k: int, *,
                   chunk_size: int | None = None, budget: int = 2 ** 25,
                   convolutions_only: bool = False) -> torch.Tensor:
    """Rows ∇_θ ⟨R_i, C_a,i⟩ for every sample i and cotangent a, shape (n, k, p).

    Internal to :func:`~noisegeom.per_sample_gradients`, :func:`~noisegeom.jacobian` and
    :func:`~noisegeom.ggn_factor` (which check the inputs).

    Parameters
    ----------
    model : FlatModel
    theta : torch.Tensor, shape (p,)
    X : torch.Tensor, shape (n, ...)
    roots : callable
        ``roots(f, lo, hi) -> (R, C)``: from the outputs f of samples lo..hi−1 (m of them), a
        tensor R of shape (m, ...) whose row i depends on sample i alone, and the k cotangents
        C, shape (k, *R.shape). E.g. R the per-sample losses and C = 1 (per-sample gradients),
        or R = f, shape (m, k), and C_a = e_a (the Jacobian).
    k : int
        Number of cotangents.
    chunk_size : int, optional
        Samples per chunk; by default about 2²⁰ numbers per chunk (cache-sized, faster than one
        pass), at most ``budget``.
    convolutions_only : bool
        Refuse a model without a convolution whose weight is trainable: there ``vmap`` batches
        every layer into one product and is as fast or faster (route='auto').

    Raises
    ------
    NotLayerwiseError
        With the reason, when the model is outside the rule of the module docstring.
    """
    n, p = X.shape[0], model.p
    slices = _param_slices(model)
    th = theta.detach().clone().requires_grad_(True)
    # one sample through the recorder: the layers' sizes, and an early refusal
    rec = _Calls()
    with torch.no_grad(), rec:
        model.forward(th, X[:1])
    layers = _layers(rec.calls, th, slices, 1)
    if convolutions_only and not any(c.kind != "linear" and c.w is not None for c in layers):
        raise NotLayerwiseError("it has no convolution with a trainable weight (vmap is as fast there)")
    if chunk_size is None:
        per_sample = 2 * p * k + _footprint(layers, 1, k)
        # chunks that stay in cache are faster than one big pass, which is memory-bound
        chunk_size = max(1, min(max(_CACHE_NUMBERS // per_sample, _MIN_CHUNK), budget // per_sample))
    chunk_size = min(chunk_size, n)
    rows = torch.empty(n, k, p, dtype=theta.dtype, device=X.device)   # every entry is written
    for lo in range(0, n, chunk_size):
        hi = min(n, lo + chunk_size)
        _chunk_rows(model, th, X[lo:hi], lambda f: roots(f, lo, hi), k, slices, rows[lo:hi],
                    probe=X[:_PROBE_SAMPLES] if lo == 0 else None)
    return rows


def _chunk_rows(model, th, Xc, roots, k, slices, out, probe):
    """Fill out (m, k, p) with the rows of the samples Xc; ``probe``: samples to test the
    model's independence of the samples on (the first chunk's own pass when it holds them)."""
    rec = _Calls(th)
    with torch.enable_grad(), rec:
        f = model.forward(th, Xc)
    if probe is not None:
        # the identity needs outputs that are functions of θ and their own sample only
        own = Xc.shape[0] >= probe.shape[0]
        reason = probe_per_sample(model, th.detach(), Xc if own else probe, full=f if own else None)
        if reason:
            raise NotLayerwiseError(reason)
    layers = _layers(rec.calls, th, slices, Xc.shape[0])
    with torch.enable_grad():
        R, C = roots(f)
    outs = [c.out for c in layers]
    signals = [[] for _ in layers]
    for a in range(k):
        # with one cotangent, the same pass gives autograd's gradient to check the rows against
        grads = torch.autograd.grad(R, outs + [th] if k == 1 else outs, grad_outputs=C[a],
                                    retain_graph=True, allow_unused=True)
        for s, g, o in zip(signals, grads, outs):
            s.append(torch.zeros_like(o) if g is None else g)    # None: the layer does not reach R
    if k == 1:
        g_auto = grads[-1]
    else:
        g_auto = torch.autograd.grad(R, th, grad_outputs=C.sum(0), allow_unused=True)[0]
    del R, C, f, grads
    written = set()
    with torch.no_grad():
        for c, s in zip(layers, signals):
            for where, rows in zip((c.w, c.b), _contributions(c, s)):
                if rows is None:
                    continue
                dst = out[:, :, where].view(rows.shape)
                # a tensor shared by several layers gets the sum of their contributions
                dst.add_(rows) if where.start in written else dst.copy_(rows)
                written.add(where.start)
        g_auto = torch.zeros_like(th) if g_auto is None else g_auto
        err = float(torch.linalg.vector_norm(out.sum((0, 1)) - g_auto))
        scale = float(torch.linalg.vector_norm(g_auto)) + float(torch.linalg.vector_norm(out))
    if not err <= _CHECK_RTOL * max(scale, 1e-300):
        raise NotLayerwiseError(f"the parameters reach the outputs outside the recorded layers (the rows' sum "
                                f"differs from autograd's gradient by {err:.3g})")
