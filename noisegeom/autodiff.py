"""Residuals, per-sample gradients and Jacobians.

Notation (the book's, see the Toolbox appendix): residual e_i = f(x_i; θ) − y_i, per-sample loss
ℓ_i = ½ e_i², J ∈ R^{n×p} with rows ∇f_i, per-sample gradient g_i = e_i ∇f_i.
For multi-output models the square loss is ℓ_i = ½‖f(x_i) − y_i‖², and for
classification ℓ_i is the cross-entropy of the logits; then g_i is the
per-sample loss gradient and the curvature matrix is the generalized
Gauss–Newton G = (1/n) Σ_i J_iᵀ Λ_i J_i, Λ_i = ∇²_f ℓ_i (see :func:`~noisegeom.ggn_factor`).

Two routes (``route=``), the same numbers to rounding. 'layerwise' (:mod:`noisegeom.layerwise`):
for networks whose parameters are all weights and biases of linear layers and convolutions,
one forward and one backward pass (k for k outputs) give every sample's gradient as outer
products, Δ_i U_iᵀ per layer. 'vmap': ``torch.func.vmap`` over samples, for any model. The
default, 'auto', takes the first for models with convolutions (torch's vmap rule for a
convolution's weight gradient loops over the samples), the second otherwise. Both work in chunks of samples so
that memory stays bounded at about ``chunk_size × p`` numbers per intermediate (times k for k
outputs; the layerwise route also holds the layers' inputs and signals).
"""

from __future__ import annotations

import torch
from torch.func import grad, jacrev, vmap

from ._checks import as_tensor, check_finite_result, check_int, device_of
from .layerwise import NotLayerwiseError, layerwise_rows
from .models import FlatModel

__all__ = [
    "LOSSES",
    "residuals",
    "loss_value",
    "per_sample_losses",
    "jacobian",
    "per_sample_gradients",
    "ggn_factor",
    "ROUTES",
]

LOSSES = ("mse", "cross_entropy")
ROUTES = ("auto", "layerwise", "vmap")
# Relative tolerance of the check of the layerwise route's first and last rows against vmap's.
_ROW_RTOL = 1e-9

# Bound on the numbers held by one vmapped chunk (about 256 MB in float64).
_CHUNK_BUDGET = 2 ** 25


def _check_inputs(model, theta, X, y=None, loss="mse"):
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    _check_devices(model, theta, X, y)
    theta = as_tensor(theta, "theta", ndim=1)
    if theta.numel() != model.p:
        raise ValueError(f"theta must have length p = {model.p}, got {theta.numel()}")
    X = as_tensor(X, "X")
    if X.ndim < 1 or X.shape[0] == 0:
        raise ValueError(f"X must hold at least one sample along dim 0, got shape {tuple(X.shape)}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if y is not None:
        if loss == "cross_entropy":
            y = torch.as_tensor(y)
            if y.dtype.is_floating_point:
                raise TypeError("y must hold integer class labels for loss='cross_entropy'")
            y = y.long()
            if y.ndim != 1:
                raise ValueError(f"y must be a 1-D tensor of class labels for loss='cross_entropy', "
                                 f"got shape {tuple(y.shape)}")
            if y.numel() and int(y.min()) < 0:
                raise ValueError(f"y must hold class labels 0, ..., k-1 for loss='cross_entropy', got {int(y.min())} "
                                 f"(torch's ignore_index -100 is not supported: leave those samples out)")
        else:
            y = as_tensor(y, "y")
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have one entry per sample: X has {X.shape[0]} rows, y has shape {tuple(y.shape)}")
    # one sample through the model: X that does not fit it is reported here, not deep in torch
    try:
        with torch.no_grad():
            out = model.forward(theta, X[:1])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(f"X of shape {tuple(X.shape)} does not fit the model: {exc}") from exc
    if y is not None:
        y = _check_targets(X, y, loss, out)
    return theta, X, y


def _check_devices(model, theta, X, y) -> None:
    """θ, y and the model's buffers on X's device, checked before anything reads their values.

    Without this a mix of devices surfaces from the first forward pass as torch's "Expected all
    tensors to be on the same device", which :func:`_check_inputs` would report as X not fitting
    the model. Arrays that are not tensors live on the host, where ``as_tensor`` puts them.
    """
    where = device_of(X)
    for name, t in (("theta", theta), ("y", y)):
        if t is None or device_of(t) == where:
            continue
        if isinstance(t, torch.Tensor):
            raise ValueError(f"{name} is on {t.device} but X on {where}; move them to one device, e.g. "
                             f"{name}.to(X.device) (model.to(X.device) moves a FlatModel, its theta0 and buffers)")
        raise ValueError(f"{name} is a {type(t).__name__} on the host (cpu) but X on {where}; move them to one "
                         f"device, e.g. torch.as_tensor({name}, device=X.device)")
    for name, b in model._buffers.items():
        # a 0-d CPU tensor enters a CUDA computation as a scalar, as torch allows
        if b.device != where and b.ndim > 0:
            raise ValueError(f"the model's buffer {name!r} is on {b.device} but X on {where}; move them to one "
                             f"device, e.g. model.to(X.device)")


def _check_targets(X, y, loss, out):
    """y against the model's outputs on one sample, ``out``: its shape (a scalar model's (n, 1)
    targets become (n,), never broadcast against (n,) outputs) or, for the cross-entropy, its labels."""
    if loss == "cross_entropy":
        if out.ndim != 2:
            raise ValueError(f"loss='cross_entropy' needs k class scores per sample, outputs of shape (n, k); "
                             f"the model gives {tuple(out.shape[1:]) or 'one number'} per sample")
        if y.numel() and int(y.max()) >= out.shape[1]:
            raise ValueError(f"y must hold class labels 0, ..., {out.shape[1] - 1} for loss='cross_entropy' "
                             f"(the model has {out.shape[1]} outputs), got {int(y.max())}")
        return y
    if out.ndim == 1 and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if tuple(y.shape[1:]) != tuple(out.shape[1:]):
        raise ValueError(f"y must have shape {(X.shape[0],) + tuple(out.shape[1:])} like the model's outputs "
                         f"(or (n, 1) for a scalar model), got {tuple(y.shape)}")
    return y


def loss_name(loss) -> str:
    """The package's name of a loss: ``'mse'`` or ``'cross_entropy'``, or a torch loss module.

    ``torch.nn.MSELoss`` means ``'mse'`` and ``torch.nn.CrossEntropyLoss`` means
    ``'cross_entropy'``, whatever their ``reduction``: the metrics are defined with the book's
    normalisation, ℓ_i = ½‖f(x_i) − y_i‖² or the cross-entropy of sample i, and L = (1/n) Σ ℓ_i.
    Options that change the per-sample loss (class weights, label smoothing) are refused.
    """
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a torch.nn.MSELoss / CrossEntropyLoss, got {loss!r}")
        return loss
    if isinstance(loss, torch.nn.MSELoss):
        return "mse"
    if isinstance(loss, torch.nn.CrossEntropyLoss):
        if loss.weight is not None or loss.label_smoothing != 0.0:
            raise ValueError("loss: CrossEntropyLoss with class weights or label smoothing is not supported; "
                             "use the plain cross-entropy")
        return "cross_entropy"
    raise TypeError(f"loss must be 'mse', 'cross_entropy', torch.nn.MSELoss() or torch.nn.CrossEntropyLoss(), "
                    f"got {type(loss).__name__}")


def _auto_chunk(p: int, k: int = 1, chunk_size=None, n: int | None = None):
    """Samples per vmapped chunk; None (one unchunked vmap) when a single chunk holds all n samples.

    torch's chunked vmap concatenates the chunk outputs even when there is only one chunk,
    a full copy of an n×p result: skipping it makes per-sample gradients and J up to 2× faster.
    """
    if chunk_size is not None:
        chunk = check_int(chunk_size, "chunk_size", low=1)
    else:
        chunk = max(1, _CHUNK_BUDGET // max(1, p * k))
    return None if n is not None and chunk >= n else chunk


def _sample_loss(model: FlatModel, loss: str):
    """ℓ(θ; x, y) for one sample, written for vmap (x, y without batch dim)."""
    if loss == "mse":
        def ell(theta, x, y):
            e = model.forward(theta, x[None])[0] - y
            return 0.5 * (e * e).sum()
    else:
        def ell(theta, x, y):
            logits = model.forward(theta, x[None])[0]
            # gather, not logits[y]: indexing by a vmapped label is data-dependent and fails under vmap
            return torch.logsumexp(logits, 0) - logits.gather(0, y.reshape(1))[0]
    return ell


def residuals(model: FlatModel, theta, X, y) -> torch.Tensor:
    """e = f(X; θ) − y, shape (n,) or (n, k) for multi-output models."""
    theta, X, y = _check_inputs(model, theta, X, y)
    return check_finite_result(model.forward(theta, X) - y, "the residuals", "theta, X or y")


def _losses_of_outputs(out: torch.Tensor, y, loss: str) -> torch.Tensor:
    """ℓ_i from the model outputs of a batch, without checks (usable inside vmap and grad)."""
    if loss == "mse":
        e = (out - y).reshape(out.shape[0], -1)
        return 0.5 * (e * e).sum(1)
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


def per_sample_losses(model: FlatModel, theta, X, y, *, loss: str = "mse") -> torch.Tensor:
    """ℓ_i for every sample, shape (n,)."""
    theta, X, y = _check_inputs(model, theta, X, y, loss)
    return check_finite_result(_losses_of_outputs(model.forward(theta, X), y, loss), "the losses", "theta, X or y")


def loss_value(model: FlatModel, theta, X, y, *, loss: str = "mse") -> float:
    """L(θ) = (1/n) Σ ℓ_i."""
    return float(per_sample_losses(model, theta, X, y, loss=loss).mean())


def _check_route(route) -> str:
    if not isinstance(route, str) or route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    return route


def _layerwise_or_none(route: str, rows, reference, n: int):
    """The layerwise route's result, rows(), or None where the model is outside its rule
    (route='auto'; route='layerwise' raises). Its first and last rows are compared with
    reference(idx), the vmap route on those samples alone: a layer that mixes up the samples
    in a way the other checks cannot see is caught here."""
    try:
        out = rows()
        idx = sorted({0, n - 1})
        ref = reference(idx)
        err = float(torch.linalg.vector_norm(out[idx] - ref))
        if not err <= _ROW_RTOL * max(float(torch.linalg.vector_norm(ref)), 1e-300):
            raise NotLayerwiseError(f"its rows differ from vmap's on single samples by {err:.3g}")
        return out
    except NotLayerwiseError as exc:
        if route == "layerwise":
            raise NotLayerwiseError(f"route='layerwise' does not apply to this model: {exc}") from exc
        return None


def _vmap_jacobian(model: FlatModel, theta, X, k: int, chunk_size):
    def f1(th, x):
        return model.forward(th, x[None])[0]

    return vmap(jacrev(f1), in_dims=(None, 0), chunk_size=_auto_chunk(model.p, k, chunk_size, X.shape[0]))(theta, X)


def _vmap_per_sample_gradients(model: FlatModel, theta, X, y, loss: str, chunk_size):
    g = vmap(grad(_sample_loss(model, loss)), in_dims=(None, 0, 0),
             chunk_size=_auto_chunk(model.p, 1, chunk_size, X.shape[0]))
    return g(theta, X, y)


def jacobian(model: FlatModel, theta, X, *, chunk_size: int | None = None, route: str = "auto") -> torch.Tensor:
    """Jacobian of the outputs: rows ∇_θ f(x_i; θ).

    Parameters
    ----------
    model : FlatModel
    theta : array, shape (p,)
    X : array, shape (n, ...)
    chunk_size : int, optional
        Samples per chunk (memory bound); by default about 2²⁵ numbers per chunk.
    route : {'auto', 'layerwise', 'vmap'}
        'layerwise': one backward pass per output, the rows formed layer by layer
        (:mod:`noisegeom.layerwise`; every trainable parameter a weight or bias of linear
        layers or 1-D/2-D convolutions), else :class:`~noisegeom.NotLayerwiseError`. 'vmap':
        ``vmap(jacrev)`` over samples, any model. 'auto' (default): 'layerwise' for models
        with convolutions (where torch's vmap rule loops over the samples) that it applies
        to, else 'vmap' (which batches linear layers into single products and is faster there).

    Returns
    -------
    torch.Tensor
        Shape (n, p) for a scalar model, (n, k, p) for k outputs.
    """
    theta, X, _ = _check_inputs(model, theta, X)
    route = _check_route(route)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1)
    shape = model.forward(theta, X[:1]).shape[1:]
    k = shape.numel()
    J = None
    if route != "vmap":
        def roots(f, lo, hi):
            R = f.reshape(f.shape[0], k)
            # cotangent a: e_a for every sample, so that the signals are those of output a
            return R, torch.eye(k, dtype=R.dtype, device=R.device)[:, None, :].expand(k, *R.shape)

        def rows():
            return layerwise_rows(model, theta, X, roots, k, chunk_size=chunk_size, budget=_CHUNK_BUDGET,
                                  convolutions_only=route == "auto").reshape(X.shape[0], *shape, model.p)

        J = _layerwise_or_none(route, rows, lambda idx: _vmap_jacobian(model, theta, X[idx], k, None), X.shape[0])
    if J is None:
        J = _vmap_jacobian(model, theta, X, k, chunk_size)
    return check_finite_result(J, "the Jacobian", "theta or X")


def per_sample_gradients(model: FlatModel, theta, X, y, *, loss: str = "mse",
                         chunk_size: int | None = None, route: str = "auto") -> torch.Tensor:
    """Per-sample loss gradients g_i = ∇_θ ℓ_i, shape (n, p).

    For the scalar square loss g_i = e_i ∇f_i. ``chunk_size`` and ``route`` as in
    :func:`jacobian`; the layerwise route needs one backward pass of Σ_i ℓ_i.
    """
    theta, X, y = _check_inputs(model, theta, X, y, loss)
    route = _check_route(route)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1)
    G = None
    if route != "vmap":
        def roots(f, lo, hi):
            R = _losses_of_outputs(f, y[lo:hi], loss)
            return R, torch.ones_like(R)[None]

        def rows():
            return layerwise_rows(model, theta, X, roots, 1, chunk_size=chunk_size, budget=_CHUNK_BUDGET,
                                  convolutions_only=route == "auto")[:, 0]

        G = _layerwise_or_none(route, rows, lambda idx: _vmap_per_sample_gradients(model, theta, X[idx], y[idx],
                                                                                   loss, None), X.shape[0])
    if G is None:
        G = _vmap_per_sample_gradients(model, theta, X, y, loss, chunk_size)
    return check_finite_result(G, "the per-sample gradients", "theta, X or y")


def ggn_factor(model: FlatModel, theta, X, y=None, *, loss: str = "mse",
               chunk_size: int | None = None, route: str = "auto") -> torch.Tensor:
    """A factor A with G = AᵀA / n (the generalized Gauss–Newton matrix).

    For the scalar square loss A = J. For k outputs, the rows of A are the k
    rows of Λ_i^{1/2} J_i for each sample i, with Λ_i = I (square loss) or
    Λ_i = diag(s_i) − s_i s_iᵀ, s_i = softmax(f(x_i)) (cross-entropy), so
    G = (1/n) Σ_i J_iᵀ Λ_i J_i. ``chunk_size`` and ``route``: those of :func:`jacobian`.

    Returns
    -------
    torch.Tensor
        Shape (n·k, p).
    """
    J = jacobian(model, theta, X, chunk_size=chunk_size, route=route)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if J.ndim == 2:
        if loss == "cross_entropy":
            raise ValueError("loss='cross_entropy' needs a model with at least 2 outputs")
        return J
    n, k, p = J.shape
    if loss == "mse":
        return J.reshape(n * k, p)
    theta = as_tensor(theta, "theta", ndim=1)
    s = torch.softmax(model.forward(theta, as_tensor(X, "X")), dim=1)
    lam = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]
    w, Q = torch.linalg.eigh(lam)
    root = Q @ torch.diag_embed(w.clamp_min(0).sqrt()) @ Q.transpose(1, 2)
    return check_finite_result((root @ J).reshape(n * k, p), "the factor", "theta or X")
