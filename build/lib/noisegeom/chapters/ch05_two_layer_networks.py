"""Numerics of chapter 5, *Two-layer networks*: noise geometry with a fixed outer layer.

Model (``noisegeom.two_layer_net``, ``train_outer=False``): f(x; W) = Σ_k a_k σ(w_kᵀx),
θ = vec(W) ∈ R^{m·d}, so ∇_{w_k} f(x) = a_k σ'(w_kᵀx) x. With D_ik = σ'(w_kᵀx_i)
and K₀ = XXᵀ the Gram matrix of the inputs,

    K = JJᵀ = C ⊙ K₀,   C = D Diag(a²) Dᵀ,   c_i = C_ii = Σ_k a_k² σ'(w_kᵀx_i)².

Chapter 5 proves (Schur product theorem) that λ_min(K₀)·Diag(c) ≼ K ≼ λ_max(K₀)·Diag(c)
and, with ω = min_i c_i / max_i c_i, the sandwich bounds, for every residual e ≠ 0,

    ω² q₀ − s₀²/(ω² n) ≤ μ ≤ Q₀/ω²,
    q₀ = n min_i (K₀)_ii² / ‖K₀‖_F²,  s₀ = λ_max(K₀) / min_i (K₀)_ii,
    Q₀ = max_i (K₀²)_ii / min_i (K₀)_ii²,

which depend on the network only through ω. If β₁ ≤ abs(σ') ≤ β₂ on the data and
Σ_k a_k² = 1, then ω ≥ (β₁/β₂)²: a bound free of the width m. At a Gaussian
initialisation the c_i concentrate (Hoeffding), and for ReLU c_i → 1/2 for every sample.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from .._checks import as_tensor, check_int
from ..models import ACTIVATIONS

__all__ = [
    "activation_derivative",
    "TwoLayerGram",
    "two_layer_gram",
    "gram_from_preactivations",
    "InitEnsemble",
    "gram_mu",
    "sandwich_bounds",
    "init_concentration",
    "relu_init_ratio_bound",
    "mu_across_widths",
]


def _sigma(activation) -> Callable:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}")
    return ACTIVATIONS[activation]


def activation_derivative(activation, z) -> torch.Tensor:
    """σ'(z) elementwise, by automatic differentiation of the elementwise function σ (chapter 5).

    Parameters
    ----------
    activation : str or callable
        A name of ``noisegeom.models.ACTIVATIONS`` or an elementwise torch function.
    z : array
        Pre-activations, any shape.

    Returns
    -------
    torch.Tensor
        σ'(z), same shape (float64). ReLU follows torch's convention σ'(0) = 0.
    """
    sigma = _sigma(activation)
    z = as_tensor(z, "z").clone().requires_grad_(True)
    with torch.enable_grad():
        out = sigma(z)
        if out.shape != z.shape:
            raise ValueError("activation must act elementwise (same output shape as its input)")
        (dz,) = torch.autograd.grad(out.sum(), z, allow_unused=True)
    if dz is None:                      # a constant activation
        return torch.zeros_like(z.detach())
    return dz.detach()


class TwoLayerGram(NamedTuple):
    """The Gram factors of f = Σ_k a_k σ(w_kᵀx), batched over leading axes.

    Attributes
    ----------
    K : (..., n, n)     the NTK Gram JJᵀ = C ⊙ K₀
    C : (..., n, n)     D Diag(a²) Dᵀ
    c : (..., n)        diagonal of C, c_i = Σ_k a_k² σ'(w_kᵀx_i)²
    K0 : (n, n)         XXᵀ
    f : (..., n)        network outputs f(x_i)
    """

    K: torch.Tensor
    C: torch.Tensor
    c: torch.Tensor
    K0: torch.Tensor
    f: torch.Tensor


def two_layer_gram(X, W, a, activation="tanh") -> TwoLayerGram:
    """K = C ⊙ XXᵀ with C = D Diag(a²) Dᵀ, D_ik = σ'(w_kᵀx_i), without forming J (chapter 5).

    Parameters
    ----------
    X : array (n, d)
    W : array (m, d) or (S, m, d)
        Inner weights (rows w_k); a leading axis batches S networks.
    a : array (m,) or (S, m)
        Outer weights (fixed).
    activation : str or callable

    Returns
    -------
    TwoLayerGram
    """
    X = as_tensor(X, "X", ndim=2)
    W = as_tensor(W, "W", ndim=(2, 3))
    a = as_tensor(a, "a", ndim=(1, 2))
    if W.shape[-1] != X.shape[1]:
        raise ValueError(f"W must have d = {X.shape[1]} columns (one per input coordinate), got {W.shape[-1]}")
    if a.shape[-1] != W.shape[-2] or (a.ndim == 2 and (W.ndim != 3 or a.shape[0] != W.shape[0])):
        raise ValueError(f"a must have shape {tuple(W.shape[:-1])} (one weight per hidden unit), got {tuple(a.shape)}")
    return gram_from_preactivations(X @ W.transpose(-1, -2), a, X @ X.T, activation)


def gram_from_preactivations(Z, a, K0, activation="tanh") -> TwoLayerGram:
    """:func:`two_layer_gram` from the pre-activations Z_ik = w_kᵀx_i and K₀ = XXᵀ (chapter 5).

    Parameters
    ----------
    Z : array (n, m) or (S, n, m)
    a : array (m,) or (S, m)
    K0 : array (n, n)
    activation : str or callable
    """
    Z = as_tensor(Z, "Z", ndim=(2, 3))
    a = as_tensor(a, "a", ndim=(1, 2))
    K0 = as_tensor(K0, "K0", ndim=2)
    n = Z.shape[-2]
    if K0.shape != (n, n):
        raise ValueError(f"K0 must be ({n}, {n}) for Z with n = {n} rows, got {tuple(K0.shape)}")
    if a.shape[-1] != Z.shape[-1] or (a.ndim == 2 and (Z.ndim != 3 or a.shape[0] != Z.shape[0])):
        raise ValueError(f"a must have shape {tuple(Z.shape[:-2]) + (Z.shape[-1],)} (one weight per hidden unit), "
                         f"got {tuple(a.shape)}")
    with torch.no_grad():
        f = _sigma(activation)(Z) @ a.unsqueeze(-1)
    D = activation_derivative(activation, Z)
    C = (D * (a * a).unsqueeze(-2)) @ D.transpose(-1, -2)
    return TwoLayerGram(C * K0, C, torch.diagonal(C, dim1=-2, dim2=-1).clone(), K0, f.squeeze(-1))


def gram_mu(K, e) -> torch.Tensor:
    """μ = [n Σ_i e_i² (K²)_ii − eᵀK²e] / (‖e‖² ‖K‖_F²), batched over leading axes (chapters 3–5).

    Parameters
    ----------
    K : array (..., n, n)
        Symmetric PSD Gram matrix JJᵀ.
    e : array (..., n)
        Residuals, not all zero.
    """
    K = as_tensor(K, "K", ndim=(2, 3))
    e = as_tensor(e, "e", ndim=(1, 2))
    n = K.shape[-1]
    if K.shape[-2] != n or e.shape[-1] != n:
        raise ValueError(f"K must be (..., n, n) and e (..., n); got {tuple(K.shape)} and {tuple(e.shape)}")
    ee = (e * e).sum(-1)
    if bool((ee == 0).any()):
        raise ValueError("e is zero: the loss vanishes and μ is 0/0 (an interpolating point)")
    fro2 = (K * K).sum((-2, -1))
    if bool((fro2 == 0).any()):
        raise ValueError("K is zero: G = 0 and μ is undefined")
    rows = (K * K).sum(-1)                            # (K²)_ii
    Ke = (K @ e.unsqueeze(-1)).squeeze(-1)
    return (n * (e * e * rows).sum(-1) - (Ke * Ke).sum(-1)) / (ee * fro2)


def sandwich_bounds(K0, *, c=None, omega=None) -> dict:
    """The sandwich bounds of chapter 5 on μ of a two-layer network, from the input Gram K₀.

    With ω = min_i c_i / max_i c_i (or ω given, e.g. (β₁/β₂)² for β₁ ≤ abs(σ') ≤ β₂),

        lower = max(0, ω² q₀ − s₀²/(ω² n)),   upper = Q₀/ω²,

    q₀ = n min_i (K₀)_ii²/‖K₀‖_F², s₀ = λ_max(K₀)/min_i (K₀)_ii,
    Q₀ = max_i (K₀²)_ii / min_i (K₀)_ii². Every μ of the network with these c_i
    lies in [lower, upper]; ω = 1 gives bounds for the linear model on the same inputs.

    Parameters
    ----------
    K0 : array (n, n)
        XXᵀ, every x_i ≠ 0.
    c : array (..., n), optional
        The realised c_i = Σ_k a_k² σ'(w_kᵀx_i)² (batched over leading axes).
    omega : float or array in [0, 1], optional
        Pass exactly one of ``c`` and ``omega``.

    Returns
    -------
    dict with ``lower``, ``upper``, ``omega`` (numpy, shaped like the batch) and the data
    factors ``q0``, ``s0``, ``Q0`` (floats).
    """
    if (c is None) == (omega is None):
        raise ValueError("pass exactly one of c (the realised c_i) and omega (a ratio in [0, 1])")
    K0 = as_tensor(K0, "K0", ndim=2)
    n = K0.shape[0]
    if K0.shape[1] != n or n < 2:
        raise ValueError(f"K0 must be square with n >= 2, got shape {tuple(K0.shape)}")
    if not torch.allclose(K0, K0.T, atol=1e-10 * max(1.0, float(K0.abs().max()))):
        raise ValueError("K0 must be symmetric")
    diag = torch.diagonal(K0)
    if float(diag.min()) <= 0:
        raise ValueError("K0 has a zero diagonal entry (an input x_i = 0): the bounds need every x_i ≠ 0")
    lam_max = float(torch.linalg.eigvalsh(K0)[-1])
    dmin = float(diag.min())
    fro2 = float((K0 * K0).sum())
    q0 = n * dmin ** 2 / fro2
    s0 = lam_max / dmin
    Q0 = float((K0 * K0).sum(1).max()) / dmin ** 2
    if c is not None:
        c = as_tensor(c, "c", ndim=(1, 2)).numpy()
        if c.shape[-1] != n:
            raise ValueError(f"c must have one entry per sample (n = {n}), got {c.shape[-1]}")
        if np.any(c < 0):
            raise ValueError("c must be non-negative (c_i is a sum of squares)")
        cmax = c.max(-1)
        if np.any(cmax <= 0):
            raise ValueError("c is zero: every per-sample gradient vanishes")
        r = c.min(-1) / cmax
    else:
        r = np.asarray(omega, dtype=float)
        if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > 1):
            raise ValueError(f"omega must lie in [0, 1], got {omega}")
    with np.errstate(divide="ignore"):
        lower = np.where(r > 0, np.maximum(0.0, r ** 2 * q0 - s0 ** 2 / (np.where(r > 0, r, 1) ** 2 * n)), 0.0)
        upper = np.where(r > 0, Q0 / np.where(r > 0, r, 1) ** 2, np.inf)
    if np.ndim(r) == 0:
        lower, upper, r = float(lower), float(upper), float(r)
    return {"lower": lower, "upper": upper, "omega": r, "q0": q0, "s0": s0, "Q0": Q0}


def init_concentration(n, m, failure_prob: float = 0.1):
    """ε = √(ln(2n/γ)/(2m)) of chapter 5's initialisation proposition (Hoeffding).

    With w_k i.i.d. N(0, I/d), a_k² = 1/m and abs(σ') ≤ β₂, with probability at least
    1 − γ every c_i lies within β₂² ε of its mean E σ'(w_1ᵀx_i)². Vectorised over n, m.
    """
    n = np.asarray(n, dtype=float)
    m = np.asarray(m, dtype=float)
    if np.any(n < 1) or np.any(m < 1):
        raise ValueError("n and m must be >= 1")
    if not 0 < failure_prob < 1:
        raise ValueError(f"failure_prob must lie in (0, 1), got {failure_prob}")
    eps = np.sqrt(np.log(2 * n / failure_prob) / (2 * m))
    return float(eps) if eps.ndim == 0 else eps


def relu_init_ratio_bound(n, m, failure_prob: float = 0.1):
    """ReLU at a Gaussian initialisation: with probability ≥ 1 − γ, ω ≥ (1 − 2ε)/(1 + 2ε) (chapter 5).

    ε from :func:`init_concentration`; the bound is clipped at 0. Vectorised over n, m.
    """
    eps = np.asarray(init_concentration(n, m, failure_prob))
    out = np.clip((1 - 2 * eps) / (1 + 2 * eps), 0.0, None)
    return float(out) if out.ndim == 0 else out


class InitEnsemble:
    """Networks at a Gaussian initialisation, several widths and seeds, with cached pre-activations (chapter 5).

    For each width m and seed s: w_k ~ N(0, I/d), a_k = ±1/√m as in
    ``noisegeom.two_layer_net``. The pre-activations Z = XWᵀ are stored so that
    :meth:`measure` (any activation, the first n samples) costs O(S n² m) and no
    p×p matrix is formed.

    Parameters
    ----------
    X : array (n_max, d)
    widths : sequence of int
    n_seeds : int
    seed : int
    """

    def __init__(self, X, widths, *, n_seeds: int = 10, seed: int = 0):
        self.X = as_tensor(X, "X", ndim=2)
        n, d = self.X.shape
        self.n_seeds = check_int(n_seeds, "n_seeds", low=1)
        self.widths = [check_int(w, "widths", low=1) for w in np.atleast_1d(widths).tolist()]
        if not self.widths:
            raise ValueError("widths must be non-empty")
        gen = torch.Generator().manual_seed(int(seed))
        self.W, self.a, self.Z = {}, {}, {}
        for m in self.widths:
            W = torch.randn(self.n_seeds, m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
            a = (2.0 * torch.randint(0, 2, (self.n_seeds, m), generator=gen).to(torch.float64) - 1) / math.sqrt(m)
            self.W[m], self.a[m], self.Z[m] = W, a, self.X @ W.transpose(-1, -2)
        self._K0 = self.X @ self.X.T

    def measure(self, y, activation="tanh", width: int | None = None, n: int | None = None) -> dict:
        """μ at initialisation and the sandwich bounds with the realised ω, one value per seed.

        Uses the first ``n`` samples (default all) and residuals e = f(X) − y.

        Returns
        -------
        dict of numpy arrays (n_seeds,): ``mu``, ``lower``, ``upper``, ``omega``.
        """
        m = self.widths[0] if width is None else check_int(width, "width", low=1)
        if m not in self.Z:
            raise ValueError(f"width must be one of {self.widths}, got {width}")
        n_max = self.X.shape[0]
        n = n_max if n is None else check_int(n, "n", low=2, high=n_max)
        y = as_tensor(y, "y", ndim=1)
        if y.shape[0] < n:
            raise ValueError(f"y must have at least n = {n} entries, got {y.shape[0]}")
        K0 = self._K0[:n, :n]
        gram = gram_from_preactivations(self.Z[m][:, :n], self.a[m], K0, activation)
        out = {"mu": gram_mu(gram.K, gram.f - y[:n]).numpy()}
        b = sandwich_bounds(K0, c=gram.c)
        for k in ("lower", "upper", "omega"):
            out[k] = np.asarray(b[k])
        return out


def mu_across_widths(X, y, widths, activation="tanh", *, n_seeds: int = 10, seed: int = 0) -> dict:
    """μ of f = Σ_k a_k σ(w_kᵀx) at a Gaussian initialisation, for several widths and seeds (chapter 5).

    For each width m and seed s, w_k ~ N(0, I/d) and a_k = ±1/√m as in
    ``noisegeom.two_layer_net`` (:class:`InitEnsemble`); the residuals are
    e = f(X) − y and μ comes from the Gram route K = C ⊙ XXᵀ
    (:func:`two_layer_gram`, :func:`gram_mu`), never a p×p matrix.

    Returns
    -------
    dict of numpy arrays of shape (len(widths), n_seeds): ``mu``, ``lower`` and
    ``upper`` (:func:`sandwich_bounds` with the realised c_i), ``omega``; and ``widths``.
    """
    X = as_tensor(X, "X", ndim=2)
    y = as_tensor(y, "y", ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have one entry per row of X ({X.shape[0]}), got {y.shape[0]}")
    _sigma(activation)
    ens = InitEnsemble(X, widths, n_seeds=n_seeds, seed=seed)
    rows = [ens.measure(y, activation, m) for m in ens.widths]
    out = {k: np.stack([r[k] for r in rows]) for k in ("mu", "lower", "upper", "omega")}
    out["widths"] = np.asarray(ens.widths)
    return out
