"""The Jacobian of a network of linear layers, held in factored form.

A linear layer z = W x + b maps its input x ∈ R^{d_in} to z ∈ R^{d_out} (for the first
layer x is the data point; deeper, a hidden representation). If
δ_i = ∂f(x_i)/∂z_i is the back-propagated signal of sample i at the layer's
output, the sample's gradient with respect to the layer is an outer product,

    ∇_W f(x_i) = δ_i x_iᵀ,     ∇_b f(x_i) = δ_i,

so the rows of J need never be written down (Goodfellow, "Efficient per-example
gradient computations", arXiv:1510.01799, 2015). Inner products of such rows
factor too, ⟨δ_i x_iᵀ, δ_j x_jᵀ⟩ = (x_iᵀx_j)(δ_iᵀδ_j), which gives the Gram
matrix of J layer by layer:

    K = J Jᵀ = Σ_l (X_l X_lᵀ + 1[l has a bias]) ⊙ (Δ_l Δ_lᵀ),

with X_l (n×d_in) and Δ_l (n×d_out) the stacked inputs and output signals. One
forward and one backward pass and two thin Grams per layer cost
O(n p + n² Σ_l (d_in + d_out)) instead of the O(n² p) of J Jᵀ; for the
two-layer network of chapter 5 this is the identity K = C ⊙ XXᵀ.
Products J V and Jᵀu factor the same way, at O(n p) per column.

:func:`~noisegeom.factored_jacobian` finds the layers by watching the forward pass for calls
of ``torch.nn.functional.linear`` (which every ``nn.Linear`` makes) whose weight
is a trainable parameter, and refuses, with the reason, any model that does not
have this structure: every trainable parameter must be the weight or bias of
exactly one such call on an (n, d_in) input, and the scalar output must depend on
the parameters through these calls only. The last condition is verified
numerically on every call: the factored Jᵀ1 must equal autograd's gradient of
Σ_i f(x_i). The identity also assumes that the network treats the samples of a batch
independently: :class:`~noisegeom.FlatModel` refuses batch statistics and dropout in
training mode, and every call checks by evaluation that the first samples' outputs neither
change between two passes nor with the rest of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ._checks import device_of, follow_device
from .autodiff import _check_inputs
from .layerwise import _param_slices, _theta_locator
from .models import FlatModel, probe_per_sample

__all__ = ["FactoredJacobian", "factored_jacobian", "NotFactorableError"]

# Relative tolerance of the check that the factored Jᵀ1 equals autograd's gradient of Σ_i f_i.
_CHECK_RTOL = 1e-9


class NotFactorableError(ValueError):
    """The model is not a network of linear layers in the sense of :func:`factored_jacobian`."""


# Rows per block of K in _gram_rows(): the blocks below the diagonal, about (1 − 1/b)/2 of K
# for b blocks, are never computed, and a block of 128 rows stays in cache while it is read.
_GRAM_BLOCK_ROWS = 128
# Numbers per reused buffer in J·V (2 MB): big enough for full-speed products, small enough
# to stay in cache and to avoid fresh n×n allocations.
_BLOCK_NUMBERS = 2 ** 18


class _Layer:
    """One linear layer: inputs X (n×d_in), output signals Δ (n×d_out), and where its
    weight and bias sit in θ (slices, or None when that tensor is not trainable)."""

    __slots__ = ("X", "D", "w", "b")

    def __init__(self, X, D, w, b):
        self.X, self.D, self.w, self.b = X, D, w, b


class FactoredJacobian:
    """J ∈ R^{n×p} of a scalar network of linear layers, as per-layer factors.

    Build it with :func:`factored_jacobian` (the constructor's arguments are internal). Row i
    of J restricted to layer l is vec(δ_il x_ilᵀ) for the weight and δ_il for the bias (see
    the module docstring).

    Attributes
    ----------
    n : int
        Number of samples (rows of J).
    p : int
        Number of parameters (columns of J).
    shape : tuple
        (n, p).
    outputs : torch.Tensor
        f(x_i; θ) from the same forward pass, shape (n,).
    device : torch.device
        Where the factors live (the device of θ and X); every product is computed there and
        returned there, and vectors passed in are moved there.
    """

    def __init__(self, layers: list, n: int, p: int, outputs: torch.Tensor):
        self._layers = layers
        self.n, self.p = n, p
        self.shape = (n, p)
        self.outputs = outputs
        self.device = outputs.device

    def gram(self) -> torch.Tensor:
        """K = J Jᵀ = Σ_l (X_l X_lᵀ + 1[bias]) ⊙ (Δ_l Δ_lᵀ), shape (n, n), exactly symmetric."""
        K = torch.empty(self.n, self.n, dtype=torch.float64, device=self.device)
        for lo, hi, R in self._gram_rows():
            K[lo:hi, lo:] = R
            K[hi:, lo:hi] = R[:, hi - lo:].T             # the lower part is the upper one, copied
        return K

    def row_norms2(self) -> torch.Tensor:
        """‖∇f_i‖² = K_ii = Σ_l (‖x_il‖² + 1[bias]) ‖δ_il‖², shape (n,), without K."""
        out = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        for L in self._layers:
            d2 = (L.D * L.D).sum(1)
            if L.w is not None:
                out += (L.X * L.X).sum(1) * d2
            if L.b is not None:
                out += d2
        return out

    def _gram_rows(self):
        """Yield (lo, hi, R) with R = K[lo:hi, lo:], block row by block row: only the blocks on
        and above the diagonal are computed. R lives in a buffer that the next block overwrites."""
        n = self.n
        rows = max(1, min(n, _GRAM_BLOCK_ROWS))
        bufs = [torch.empty(rows * n, dtype=torch.float64, device=self.device) for _ in range(3 if len(self._layers) > 1 else 2)]
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            shape = (hi - lo, n - lo)
            R, T, *S = (b[:shape[0] * shape[1]].view(shape) for b in bufs)   # S: the next layer's term
            for j, L in enumerate(self._layers):
                dst = R if j == 0 else S[0]
                if L.w is None:
                    torch.mm(L.D[lo:hi], L.D[lo:].T, out=dst)
                else:
                    torch.mm(L.X[lo:hi], L.X[lo:].T, out=dst)
                    if L.b is not None:
                        dst += 1.0
                    dst *= torch.mm(L.D[lo:hi], L.D[lo:].T, out=T)
                if j > 0:
                    R += S[0]
            yield lo, hi, R

    def _gram_sweep(self, e: torch.Tensor):
        """diag K, K e and the row sums Σ_j K_ij², from one sweep over the blocks of K on and above
        the diagonal, each read while it is in cache (K itself is never stored). Each stored entry
        also stands for its mirror image below the diagonal."""
        n = self.n
        diag = torch.empty(n, dtype=torch.float64, device=self.device)
        Ke = torch.zeros(n, dtype=torch.float64, device=self.device)
        sq = torch.zeros(n, dtype=torch.float64, device=self.device)
        for lo, hi, R in self._gram_rows():
            m = hi - lo
            diag[lo:hi] = torch.diagonal(R[:, :m])
            Ke[lo:hi] += R @ e[lo:]
            Ke[hi:] += R[:, m:].T @ e[lo:hi]
            R *= R                                       # the block is not read again
            sq[lo:hi] += R.sum(1)
            sq[hi:] += R[:, m:].sum(0)
        return diag, Ke, sq

    def __matmul__(self, V) -> torch.Tensor:
        """J V for V of shape (p,) or (p, k): (J V)_i = Σ_l δ_ilᵀ V_l x_il, O(n p) per column."""
        V = torch.as_tensor(V, dtype=torch.float64, device=self.device)
        single = V.ndim == 1
        V = V[:, None] if single else V
        if V.ndim != 2 or V.shape[0] != self.p:
            raise ValueError(f"V must have p = {self.p} rows, got shape {tuple(V.shape)}")
        V = V.contiguous()
        k = V.shape[1]
        out = torch.zeros(self.n, k, dtype=torch.float64, device=self.device)
        for L in self._layers:
            d_out, d_in = L.D.shape[1], L.X.shape[1]
            if L.w is not None:
                rows = max(1, min(self.n, _BLOCK_NUMBERS // (d_in * k)))
                # U_i = δ_iᵀ V_l (d_in × k for each sample) by one product, then x_iᵀ U_i by a batched
                # one; V's weight block viewed as d_out × (d_in·k) needs no copy, and U is formed for a
                # block of samples at a time in one reused buffer
                Vw = V[L.w].view(d_out, d_in * k)
                buf = torch.empty(rows, d_in * k, dtype=torch.float64, device=self.device)
                for lo in range(0, self.n, rows):
                    hi = min(self.n, lo + rows)
                    U = torch.mm(L.D[lo:hi], Vw, out=buf[:hi - lo]).view(hi - lo, d_in, k)
                    out[lo:hi] += torch.bmm(L.X[lo:hi, None, :], U)[:, 0, :]
            if L.b is not None:
                out += L.D @ V[L.b]
        return out[:, 0] if single else out

    def rmatvec(self, u=None) -> torch.Tensor:
        """Jᵀu for u of shape (n,) (u = 1 if omitted): the weight block is Δ_lᵀ diag(u) X_l."""
        if u is not None:
            u = torch.as_tensor(u, dtype=torch.float64, device=self.device)
            if u.shape != (self.n,):
                raise ValueError(f"u must have shape ({self.n},), got {tuple(u.shape)}")
        out = torch.zeros(self.p, dtype=torch.float64, device=self.device)
        for L in self._layers:
            Du = L.D if u is None else L.D * u[:, None]
            if L.w is not None:
                out[L.w] = (Du.T @ L.X).reshape(-1)
            if L.b is not None:
                out[L.b] = Du.sum(0)
        return out

    def dense(self) -> torch.Tensor:
        """J as an n×p tensor (n·p numbers; the outer products written out)."""
        J = torch.zeros(self.n, self.p, dtype=torch.float64, device=self.device)
        for L in self._layers:
            if L.w is not None:
                J[:, L.w] = (L.D[:, :, None] * L.X[:, None, :]).reshape(self.n, -1)
            if L.b is not None:
                J[:, L.b] = L.D
        return J

    def __repr__(self) -> str:
        return f"FactoredJacobian(n={self.n}, p={self.p}, layers={len(self._layers)})"


class _LinearCalls(TorchFunctionMode):
    """Records every call of F.linear during a forward pass: (input, weight, bias, output)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            inp = args[0] if args else kwargs["input"]
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            self.calls.append((inp, weight, bias, out))
        return out


def factored_jacobian(model: FlatModel, theta, X) -> FactoredJacobian:
    """The Jacobian of a scalar network of linear layers in factored form, at θ.

    One forward pass (recording the inputs of every linear layer) and one backward pass
    (the signals Δ_l at their outputs). See the module docstring for the identities and the
    conditions on the model; chapter 5 derives the two-layer case K = C ⊙ XXᵀ.

    Parameters
    ----------
    model : FlatModel
        A model with one output per sample whose trainable parameters are all weights and
        biases of linear layers (``nn.Linear`` or ``F.linear``), e.g. :func:`two_layer_net`,
        :func:`mlp` with one output.
    theta : array, shape (p,)
    X : array, shape (n, ...)

    Returns
    -------
    FactoredJacobian
        On the device of θ and X (which must be the model's): the factors X_l and Δ_l stay
        where the forward and backward passes left them, and :meth:`~FactoredJacobian.gram`,
        products and :meth:`~FactoredJacobian.dense` are computed and returned there. The one
        host synchronisation is the scalar check of the factors against autograd.

    Raises
    ------
    NotFactorableError
        With the reason, when the model does not have this structure (a convolution, a
        parameter used twice or outside a linear layer, several outputs, ...); use
        :func:`jacobian` for such models.
    """
    try:
        return _factored_jacobian(model, theta, X)
    except NotFactorableError as exc:
        if str(exc).startswith("model"):
            raise
        raise NotFactorableError(f"model: {exc}") from exc


def _factored_jacobian(model: FlatModel, theta, X) -> FactoredJacobian:
    theta, X, _ = _check_inputs(model, follow_device(theta, device_of(X)), X)
    n = X.shape[0]
    th = theta.detach().clone().requires_grad_(True)
    rec = _LinearCalls()
    with torch.enable_grad(), rec:
        f = model.forward(th, X)
    # the layer identity needs outputs that are functions of θ and their own sample only:
    # FlatModel refused the known culprits (batch statistics, dropout); test the rest
    reason = probe_per_sample(model, theta, X, full=f)
    if reason:
        raise NotFactorableError(reason)
    if f.shape != (n,):
        raise NotFactorableError(f"the model must have one output per sample, shape ({n},); got {tuple(f.shape)}")
    slices = _param_slices(model)
    locate = _theta_locator(th, slices, NotFactorableError,
                            "a linear layer uses part of a parameter, or a strided view of one, as its weight or bias")

    layers, outputs, seen = [], [], {}
    for k, (inp, weight, bias, out) in enumerate(rec.calls):
        w, b = locate(weight), locate(bias)
        if w is None and b is None:
            continue                                  # a fixed linear map: back-propagation passes through it
        if inp.ndim != 2 or inp.shape[0] != n:
            raise NotFactorableError(f"linear layer {k} acts on an input of shape {tuple(inp.shape)}, "
                                     f"not on one row per sample ({n}, d_in)")
        for s in (w, b):
            if s is not None:
                if s.start in seen:
                    raise NotFactorableError(f"the parameter at θ[{s.start}:{s.stop}] is used by two linear "
                                             "layers (shared weights)")
                seen[s.start] = k
        layers.append(_Layer(inp.detach(), None, w, b))
        outputs.append(out)
    missing = [s for off, s in slices.items() if off not in seen]
    if missing:
        s = missing[0]
        raise NotFactorableError(f"the parameter at θ[{s.start}:{s.stop}] is not the weight or bias of a "
                                 "linear layer (e.g. a convolution, or a parameter used directly)")
    # Δ_l from one backward pass of Σ_i f_i (samples are independent, so row i of a layer's
    # output gradient is δ_il); the same pass gives autograd's Jᵀ1 to check the factors against.
    grads = torch.autograd.grad(f.sum(), outputs + [th], allow_unused=True)
    for L, out, g in zip(layers, outputs, grads[:-1]):
        # None: the layer's output does not reach f (its parameters have zero gradient)
        L.D = torch.zeros(out.shape, dtype=torch.float64, device=out.device) if g is None else g
    fj = FactoredJacobian(layers, n, model.p, f.detach())
    g_auto = grads[-1] if grads[-1] is not None else torch.zeros_like(th)
    err = float(torch.linalg.vector_norm(fj.rmatvec() - g_auto))
    if not err <= _CHECK_RTOL * max(float(torch.linalg.vector_norm(g_auto)), 1e-300):
        raise NotFactorableError(
            f"the gradient of the output reaches the parameters outside the linear layers "
            f"(the factored Jᵀ1 differs from autograd's gradient of Σ f_i by {err:.3g})")
    return fj
