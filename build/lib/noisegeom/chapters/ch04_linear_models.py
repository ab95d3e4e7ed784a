"""Numerics of chapter 4, *Linear models*: closed forms and bounds for their noise geometry.

Notation (science.md): f(x; θ) = θᵀx (or ⟨F(θ), x⟩), residual e_i = f(x_i) − y_i,
2L = (1/n) Σ e_i², J the n×p Jacobian, K = JJᵀ, G = JᵀJ/n,
Σ₁ = (1/n) Σ g_i g_iᵀ − ∇L∇Lᵀ, μ = Tr(Σ₁G) / (2L‖G‖_F²),
g(v) = vᵀΣ₁v / (2L vᵀGv).

Population Gaussian model (chapter 4, section "The population model").
x ~ N(0, S), y = θ*ᵀx + ε with ε ~ N(0, σ²) independent, δ = θ − θ*:

    G = S,  ∇L = Sδ,  2L = δᵀSδ + σ²,  Σ₁ = 2L·S + Sδ δᵀS = 2L·G + ∇L∇Lᵀ,
    μ = 1 + δᵀS³δ / (2L ‖S‖_F²) ∈ [1 + ρ λ₋²/‖S‖_F², 1 + ρ ‖S‖₂²/‖S‖_F²],
    g(v) = 1 + (vᵀSδ)² / (2L vᵀSv) ∈ [1, 1 + ρ],

with ρ = δᵀSδ / (δᵀSδ + σ²) (the signal fraction of the loss) and λ₋ the
smallest positive eigenvalue of S.

Finite samples (chapter 4, section "Finite samples"). With a_i = (K²)_ii,

    μ = eᵀMe / ‖e‖²,   M = (n·Diag(a) − K²) / ‖K‖_F²,   Tr M = n − 1,

so the range of μ over all residuals e in range(K) is [λ_min, λ_max] of M
restricted to range(K), and its mean over uniformly random residual
directions is exactly 1 − 1/n. The low-sample theorem bounds that range with
high probability in terms of n, d_eff = (Tr S)²/‖S‖_F², r = Tr S/‖S‖₂ and the
failure probability γ.

Reparameterised linear models f = ⟨F(θ), x⟩ (chapter 4, section
"Over-parameterisation does not enter"): J = X ∂F with ∂F the d×p Jacobian of
F, K = X P Xᵀ with P = ∂F ∂Fᵀ, so μ is the μ of the plain linear model with
inputs x̃ = P^{1/2} x and the same residuals; p never enters.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import DTYPE, as_tensor, check_int, check_positive
from ..autodiff import jacobian
from ..models import FlatModel, deep_linear_model, diagonal_linear_model, linear_model

__all__ = [
    "spectral_summary",
    "signal_fraction",
    "population_geometry",
    "population_mu",
    "population_mu_bounds",
    "population_g",
    "alignment_matrix",
    "mu_from_residuals",
    "mu_range",
    "g_range",
    "g_eigendirections",
    "gram_deviations",
    "entrywise_mu_bounds",
    "condition_number_mu_bounds",
    "low_sample_bounds",
    "wishart_gram",
    "mu_vs_n",
    "feature_jacobian",
    "feature_metric",
    "reparam_features",
    "balanced_diagonal_point",
    "linear_alignment_summary",
    "PARAMETERIZATIONS",
]

# Relative threshold below which an eigenvalue of a Gram matrix counts as zero.
_RANK_RTOL = 1e-10


# --------------------------------------------------------------------------- helpers

def _spectrum(lam: np.ndarray, name: str) -> np.ndarray:
    """A 1-D spectrum (the diagonal of a covariance) must be non-negative."""
    if (lam < 0).any():
        raise ValueError(f"{name} (a spectrum) must be non-negative")
    return lam


def _covariance(S, name: str = "S") -> np.ndarray:
    """S as a dense symmetric PSD matrix; a 1-D array is read as the diagonal (a spectrum)."""
    A = as_tensor(S, name, ndim=(1, 2)).numpy()
    if A.ndim == 1:
        A = np.diag(_spectrum(A, name))
    else:
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"{name} must be square, got shape {A.shape}")
        if not np.allclose(A, A.T, atol=1e-12 * max(1.0, float(np.abs(A).max()))):
            raise ValueError(f"{name} must be symmetric")
        lam = np.linalg.eigvalsh(A)
        if lam[0] < -1e-10 * max(1.0, float(lam[-1])):
            raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {lam[0]:.3g})")
    if not np.any(A):
        raise ValueError(f"{name} is identically zero")
    return A


def _vector(v, name: str, d: int) -> np.ndarray:
    a = as_tensor(v, name, ndim=1).numpy()
    if a.shape[0] != d:
        raise ValueError(f"{name} must have length d = {d}, got {a.shape[0]}")
    return a


def _prob(x, name: str) -> float:
    x = check_positive(x, name)
    if not x < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {x}")
    return x


def _eigenvalues(S, name: str = "S") -> np.ndarray:
    """Ascending eigenvalues of S (clipped at 0); a 1-D spectrum is used as is, without a d×d matrix."""
    A = as_tensor(S, name, ndim=(1, 2)).numpy()
    if A.ndim == 1:
        lam = np.sort(_spectrum(A, name))
    else:
        lam = np.linalg.eigvalsh(_covariance(A, name))
    lam = np.clip(lam, 0.0, None)
    if lam[-1] <= 0:
        raise ValueError(f"{name} is identically zero")
    return lam


def spectral_summary(S) -> dict:
    """Trace, norms and effective ranks of a covariance S (chapter 4).

    Parameters
    ----------
    S : array, shape (d,) or (d, d)
        A spectrum (the diagonal of a diagonal S) or a symmetric PSD matrix.

    Returns
    -------
    dict
        ``trace`` = Tr S, ``op`` = ‖S‖₂, ``fro2`` = ‖S‖_F², ``d_eff`` = (Tr S)²/‖S‖_F²,
        ``r`` = Tr S/‖S‖₂, ``lam_min_pos`` (smallest positive eigenvalue) and
        ``rank``. Always r ≤ d_eff ≤ r² and 1 ≤ d_eff ≤ rank.
    """
    lam = _eigenvalues(S)
    op = float(lam[-1])
    pos = lam[lam > _RANK_RTOL * op]
    tr, fro2 = float(lam.sum()), float((lam ** 2).sum())
    return {"trace": tr, "op": op, "fro2": fro2, "d_eff": tr ** 2 / fro2, "r": tr / op,
            "lam_min_pos": float(pos[0]), "rank": int(pos.size)}


def signal_fraction(S, delta, noise_std: float = 0.0) -> float:
    """ρ = δᵀSδ / (δᵀSδ + σ²): the share of 2L that the parameters can remove (chapter 4).

    Raises if both δᵀSδ and σ vanish (then L = 0 and the metrics are 0/0).
    """
    A = as_tensor(S, "S", ndim=(1, 2)).numpy()
    if A.ndim == 1:                       # a spectrum: δᵀSδ = Σ λ_k δ_k², no d×d matrix
        lam = _eigenvalues(A)             # validates it
        delta = _vector(delta, "delta", lam.size)
        q = float((A * delta ** 2).sum())
    else:
        S = _covariance(A)
        delta = _vector(delta, "delta", S.shape[0])
        q = float(delta @ S @ delta)
    sigma = check_positive(noise_std, "noise_std", allow_zero=True)
    two_L = q + sigma ** 2
    if two_L <= 0:
        raise ValueError("delta has δᵀSδ = 0 and noise_std = 0: the loss is zero and the "
                         "alignment metrics are 0/0")
    return q / two_L


# --------------------------------------------------------------------------- population model

def population_geometry(S, delta, *, noise_std: float = 0.0) -> dict:
    """Σ₁, G, ∇L and 2L of the population Gaussian linear model (chapter 4, Isserlis).

    x ~ N(0, S), y = θ*ᵀx + ε, ε ~ N(0, σ²), δ = θ − θ*. Then
    G = S, ∇L = Sδ, 2L = δᵀSδ + σ² and Σ₁ = 2L·S + SδδᵀS.

    Returns
    -------
    dict with numpy arrays ``Sigma1`` (d, d), ``G`` (d, d), ``grad`` (d,), float ``two_L``
    and ``snr`` = ρ.
    """
    S = _covariance(S)
    rho = signal_fraction(S, delta, noise_std)
    delta = _vector(delta, "delta", S.shape[0])
    grad = S @ delta
    two_L = float(delta @ S @ delta) + float(noise_std) ** 2
    return {"Sigma1": two_L * S + np.outer(grad, grad), "G": S.copy(), "grad": grad,
            "two_L": two_L, "snr": rho}


def population_mu(S, delta, *, noise_std: float = 0.0, P=None):
    """Population average alignment μ (chapter 4).

    Plain linear model (``P=None``): μ = 1 + δᵀS³δ / (2L‖S‖_F²), 2L = δᵀSδ + σ².
    Reparameterised model f = ⟨F(θ), x⟩ with P = ∂F∂Fᵀ (d×d) and δ = F(θ) − θ*:
    μ = 1 + δᵀSPSPSδ / (2L · Tr(SPSP)).

    Parameters
    ----------
    S : array, shape (d,) or (d, d)
        A spectrum (diagonal S) or a covariance matrix.
    delta : array, shape (d,), or (m, d) when S is a spectrum and P is None
        δ = θ − θ*; with m rows the result is an array of m values.
    noise_std : float
        Label noise σ.
    P : array (d, d) or (d,), optional
        A 1-D P is the diagonal of a diagonal P; with a spectrum S the whole
        computation is then on vectors, O(d) instead of O(d³).
    """
    St = as_tensor(S, "S", ndim=(1, 2))
    if St.ndim == 1 and P is not None and np.ndim(P) == 1:
        lam = St.numpy()
        pd = _spectrum(as_tensor(P, "P", ndim=1).numpy(), "P")
        if pd.shape != lam.shape:
            raise ValueError(f"P must have the shape of S {lam.shape}, got {pd.shape}")
        signal_fraction(lam, delta, noise_std)                 # validates, rules out L = 0
        delta = _vector(delta, "delta", lam.size)
        two_L = float((lam * delta ** 2).sum()) + float(noise_std) ** 2
        den = float(((lam * pd) ** 2).sum())
        if den <= 0:
            raise ValueError("Tr(SPSP) = 0: G vanishes, μ is undefined")
        w = pd * lam * delta                                    # w = PSδ
        return 1.0 + float((lam * w ** 2).sum()) / (two_L * den)
    if St.ndim == 1 and P is None:
        _eigenvalues(St, "S")                                   # validates the spectrum
        lam = St.numpy()
        D = as_tensor(delta, "delta", ndim=(1, 2)).numpy()
        if D.shape[-1] != lam.size:
            raise ValueError(f"delta must have length d = {lam.size}, got shape {D.shape}")
        sigma = check_positive(noise_std, "noise_std", allow_zero=True)
        two_L = (lam * D ** 2).sum(-1) + sigma ** 2
        if np.any(two_L <= 0):
            raise ValueError("delta has δᵀSδ = 0 and noise_std = 0: the loss is zero and the "
                             "alignment metrics are 0/0")
        out = 1.0 + (lam ** 3 * D ** 2).sum(-1) / (two_L * float((lam ** 2).sum()))
        return float(out) if D.ndim == 1 else out
    S = _covariance(S)
    delta = _vector(delta, "delta", S.shape[0])
    signal_fraction(S, delta, noise_std)          # validates and rules out L = 0
    two_L = float(delta @ S @ delta) + float(noise_std) ** 2
    if P is None:
        Sd = S @ delta
        return 1.0 + float(Sd @ S @ Sd) / (two_L * float((S ** 2).sum()))
    P = _covariance(P, "P")
    if P.shape != S.shape:
        raise ValueError(f"P must have the shape of S {S.shape}, got {P.shape}")
    SP = S @ P
    den = float(np.trace(SP @ SP))
    if den <= 0:
        raise ValueError("Tr(SPSP) = 0: G vanishes, μ is undefined")
    w = P @ (S @ delta)                       # δᵀSPSPSδ = wᵀSw with w = PSδ
    return 1.0 + float(w @ S @ w) / (two_L * den)


def population_mu_bounds(S, *, snr: float = 1.0, P=None) -> tuple[float, float]:
    """Bounds on the population μ over all δ with a given signal fraction ρ (chapter 4).

    Plain model: 1 + ρ λ₋²/‖S‖_F² ≤ μ ≤ 1 + ρ ‖S‖₂²/‖S‖_F², λ₋ the smallest positive
    eigenvalue of S; both are attained (δ along the bottom and the top eigenvector).
    With P = ∂F∂Fᵀ, the same with S replaced by A = S^{1/2} P S^{1/2} (and λ₋ by the
    smallest eigenvalue of A, zero included); a 1-D P with a 1-D S (both diagonal)
    gives A = Diag(λ_k p_k) without any d×d matrix. The bounds lie in [1, 2].
    """
    rho = check_positive(snr, "snr", allow_zero=True)
    if rho > 1:
        raise ValueError(f"snr must lie in [0, 1], got {rho}")
    if P is None:
        lam = _eigenvalues(S)
        low = lam[lam > _RANK_RTOL * lam[-1]][0]
    elif np.ndim(S) == 1 and np.ndim(P) == 1:      # diagonal S and P: A = Diag(λ_k p_k)
        lam = as_tensor(S, "S", ndim=1).numpy()
        pd = _spectrum(as_tensor(P, "P", ndim=1).numpy(), "P")
        if pd.shape != lam.shape:
            raise ValueError(f"P must have the shape of S {lam.shape}, got {pd.shape}")
        lam = np.sort(_spectrum(lam, "S") * pd)
        low = lam[0]
    else:
        S = _covariance(S)
        P = _covariance(P, "P")
        if P.shape != S.shape:
            raise ValueError(f"P must have the shape of S {S.shape}, got {P.shape}")
        w, V = np.linalg.eigh(S)
        Sh = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
        lam = np.clip(np.linalg.eigvalsh(Sh @ P @ Sh), 0, None)
        low = lam[0]
    fro2 = float((lam ** 2).sum())
    return 1.0 + rho * float(low) ** 2 / fro2, 1.0 + rho * float(lam[-1]) ** 2 / fro2


def population_g(S, delta, v, *, noise_std: float = 0.0, dF=None):
    """Population directional alignment g(v) = 1 + (wᵀSδ)² / (2L · wᵀSw) (chapter 4).

    w = v for the plain model, w = ∂F v for f = ⟨F(θ), x⟩ (pass ``dF`` = ∂F, shape (d, p)).
    Always 1 ≤ g ≤ 1 + ρ.

    Parameters
    ----------
    v : array, shape (p,) or (p, k)
        One direction or k directions as columns.
    """
    S = _covariance(S)
    d = S.shape[0]
    delta = _vector(delta, "delta", d)
    signal_fraction(S, delta, noise_std)
    two_L = float(delta @ S @ delta) + float(noise_std) ** 2
    V = as_tensor(v, "v", ndim=(1, 2)).numpy()
    single = V.ndim == 1
    V = V[:, None] if single else V
    if dF is not None:
        D = as_tensor(dF, "dF", ndim=2).numpy()
        if D.shape[0] != d or D.shape[1] != V.shape[0]:
            raise ValueError(f"dF must have shape (d, p) = ({d}, {V.shape[0]}), got {D.shape}")
        W = D @ V
    else:
        if V.shape[0] != d:
            raise ValueError(f"v must have d = {d} rows, got shape {V.shape}")
        W = V
    den = np.einsum("ik,ij,jk->k", W, S, W)
    scale = float(np.abs(S).max()) * (W ** 2).sum(0)
    if np.any(den <= 1e-14 * scale):
        j = int(np.nonzero(den <= 1e-14 * scale)[0][0])
        raise ValueError(f"v column {j} has vᵀGv = 0 (a flat direction of G): g is undefined there")
    out = 1.0 + (W.T @ (S @ delta)) ** 2 / (two_L * den)
    return float(out[0]) if single else out


# --------------------------------------------------------------------------- finite samples

def _gram_eig(X=None, K=None):
    """Positive eigenpairs of K = XXᵀ (descending): s (r,), U (n, r), through the smaller Gram.

    Exactly one of X (n×d) and K (n×n, symmetric PSD) must be given.
    """
    if (X is None) == (K is None):
        raise ValueError("pass exactly one of X (the n×d inputs or features) and K (the n×n Gram)")
    if K is not None:
        K = as_tensor(K, "K", ndim=2)
        if K.shape[0] != K.shape[1]:
            raise ValueError(f"K must be square, got shape {tuple(K.shape)}")
        if not torch.allclose(K, K.T, atol=1e-10 * max(1.0, float(K.abs().max()))):
            raise ValueError("K must be symmetric")
        s, U = torch.linalg.eigh(K)
        s, U = s.flip(0), U.flip(1)
    else:
        X = as_tensor(X, "X", ndim=2)
        n, d = X.shape
        if n <= d:
            s, U = torch.linalg.eigh(X @ X.T)
            s, U = s.flip(0), U.flip(1)
        else:
            s, V = torch.linalg.eigh(X.T @ X)
            s, V = s.flip(0), V.flip(1)
            keep = s > _RANK_RTOL * s[0].clamp_min(1e-300)
            s, V = s[keep], V[:, keep]
            U = (X @ V) / s.sqrt()
    if not s.numel() or s[0] <= 0:
        raise ValueError("the Gram matrix is zero: every input is zero, so G = 0 and μ is undefined")
    if s[-1] < -1e-8 * s[0]:
        raise ValueError("K must be positive semi-definite")
    keep = s > _RANK_RTOL * s[0]
    return s[keep], U[:, keep]


def _residuals(e, n: int) -> torch.Tensor:
    e = as_tensor(e, "e", ndim=1)
    if e.shape[0] != n:
        raise ValueError(f"e must have one entry per sample (n = {n}), got {e.shape[0]}")
    if not bool((e != 0).any()):
        raise ValueError("e is zero: the loss vanishes and the alignment metrics are 0/0 "
                         "(an interpolating point); evaluate them where L > 0")
    return e


def alignment_matrix(K) -> np.ndarray:
    """M = (n·Diag(K²) − K²) / ‖K‖_F², so that μ = eᵀMe/‖e‖² (chapter 4).

    Dense n×n; Tr M = n − 1 and M is PSD.
    """
    K = as_tensor(K, "K", ndim=2).numpy()
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    n = K.shape[0]
    K2 = K @ K
    fro2 = float((K ** 2).sum())
    if fro2 == 0:
        raise ValueError("K is zero: G = 0 and μ is undefined")
    return (n * np.diag(np.diag(K2)) - K2) / fro2


def mu_from_residuals(e, X=None, K=None) -> float:
    """μ = [n Σ_i e_i² (K²)_ii − eᵀK²e] / (‖e‖² ‖K‖_F²) for any residual vector e (chapter 4).

    Pass the inputs (or features) X, n×d, or the Gram K = XXᵀ.
    """
    return _mu_from_eig(*_gram_eig(X, K), e)


def _mu_from_eig(s: torch.Tensor, U: torch.Tensor, e) -> float:
    """:func:`mu_from_residuals` from the positive eigenpairs (s, U) of K."""
    e = _residuals(e, U.shape[0])
    n = U.shape[0]
    a = (U ** 2) @ (s ** 2)                  # a_i = (K²)_ii
    Ke2 = float(((U.T @ e) ** 2 * s ** 2).sum())
    fro2 = float((s ** 2).sum())
    return float((n * (e ** 2 * a).sum() - Ke2) / ((e ** 2).sum() * fro2))


def _restricted_M(s: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """UᵀMU for M = (n Diag(a) − K²)/‖K‖_F² with K = U diag(s) Uᵀ (batched over a leading axis)."""
    n = U.shape[-2]
    a = (U ** 2) @ (s ** 2).unsqueeze(-1)            # (..., n, 1)
    fro2 = (s ** 2).sum(-1)[..., None, None]
    A = n * (U.transpose(-1, -2) @ (a * U)) - torch.diag_embed(s ** 2)
    return A / fro2


def mu_range(X=None, K=None) -> tuple[float, float]:
    """Smallest and largest μ over all residuals e ∈ range(K), e ≠ 0 (chapter 4).

    For a linear model with noiseless labels the residual e = X(θ − θ*) sweeps
    exactly range(X) = range(K) as θ varies, so this is the range of μ over all
    parameters θ with L(θ) > 0. When rank X = n (p ≥ n) it is [λ_min(M), λ_max(M)].
    """
    return _mu_range_eig(*_gram_eig(X, K))


def _mu_range_eig(s: torch.Tensor, U: torch.Tensor) -> tuple[float, float]:
    """:func:`mu_range` from the positive eigenpairs (s, U) of K."""
    lam = torch.linalg.eigvalsh(_restricted_M(s, U))
    return float(lam[0]), float(lam[-1])


def g_range(e) -> float:
    """λ_max(n·Diag(ê²) − êêᵀ), ê = e/‖e‖: the largest g(v) over directions v (chapter 4).

    When rank X = n, g(v) takes every value in [0, g_range(e)] as v varies over the
    directions with Xv ≠ 0; (n − 1) max ê_i² ≤ g_range(e) ≤ n max ê_i².
    """
    e = as_tensor(e, "e", ndim=1)
    e = _residuals(e, e.shape[0]).numpy()
    w = e / np.linalg.norm(e)
    n = w.size
    return float(np.linalg.eigvalsh(n * np.diag(w ** 2) - np.outer(w, w))[-1])


def g_eigendirections(e, X=None, K=None):
    """Directional alignment along the eigenvectors u_k of G = XᵀX/n, sharp to flat (chapter 4).

    g(u_k) = n Σ_i ê_i² a_{ki}² − (êᵀa_k)², with a_k the unit eigenvector of K for its
    k-th largest eigenvalue and ê = e/‖e‖; it does not depend on the eigenvalue.

    Returns
    -------
    (lam_G, g) : numpy arrays of shape (r,)
        The positive eigenvalues of G (descending) and g(u_k), r = rank K.
    """
    return _g_eigendirections(*_gram_eig(X, K), e)


def _g_eigendirections(s: torch.Tensor, U: torch.Tensor, e):
    """:func:`g_eigendirections` from the positive eigenpairs (s, U) of K."""
    n = U.shape[0]
    e = _residuals(e, n)
    w = e / e.norm()
    g = n * ((w ** 2)[:, None] * U ** 2).sum(0) - (w @ U) ** 2
    return (s / n).numpy(), g.numpy()


def gram_deviations(K, c: float | None = None) -> tuple[float, float]:
    """Realised η̂ = max_i abs(K_ii/c − 1) and τ̂ = max_i Σ_{j≠i} K_ij²/c² (chapter 4).

    ``c`` defaults to the mean diagonal entry (Tr K / n). These are the two
    quantities of the deterministic lemma (:func:`entrywise_mu_bounds`).
    """
    K = as_tensor(K, "K", ndim=2).numpy()
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    c = float(np.trace(K)) / K.shape[0] if c is None else check_positive(c, "c")
    if c <= 0:
        raise ValueError("K has zero trace")
    D = np.diag(K) / c
    R = ((K / c) ** 2).sum(1) - D ** 2
    return float(np.abs(D - 1).max()), float(R.max())


def entrywise_mu_bounds(n, eta, tau):
    """The deterministic lemma of chapter 4: bounds on every μ from the entries of K.

    If, for some c > 0, abs(K_ii/c − 1) ≤ η < 1 and Σ_{j≠i} K_ij²/c² ≤ τ for every i, then
    for every residual e ≠ 0,

        μ ≥ (1−η)²/((1+η)² + τ) − (1 + η + √(nτ))² / (n (1−η)²),
        μ ≤ ((1+η)² + τ)/(1−η)² − max(0, 1 − η − √(nτ))² / (n ((1+η)² + τ)).

    Both equal 1 − 1/n at η = τ = 0. Vectorised over numpy arrays; where η ≥ 1 the
    bounds are (0, inf) (μ ≥ 0 always).
    """
    n = np.asarray(n, dtype=float)
    eta = np.asarray(eta, dtype=float)
    tau = np.asarray(tau, dtype=float)
    if np.any(n < 2):
        raise ValueError("n must be >= 2")
    if np.any(eta < 0) or np.any(tau < 0) or not (np.all(np.isfinite(eta)) and np.all(np.isfinite(tau))):
        raise ValueError("eta and tau must be finite and >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        hi_a = (1 + eta) ** 2 + tau
        lo_a = (1 - eta) ** 2
        root = np.sqrt(n * tau)
        lower = lo_a / hi_a - (1 + eta + root) ** 2 / (n * lo_a)
        upper = hi_a / lo_a - np.clip(1 - eta - root, 0, None) ** 2 / (n * hi_a)
    ok = eta < 1
    lower = np.where(ok, np.maximum(lower, 0.0), 0.0)
    upper = np.where(ok, upper, np.inf)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def condition_number_mu_bounds(kappa, n):
    """If every eigenvalue of K lies in [l, u] with u/l = κ, then κ⁻² − 1/n ≤ μ ≤ κ² − 1/n (chapter 4)."""
    kappa = np.asarray(kappa, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(kappa < 1):
        raise ValueError("kappa (a condition number) must be >= 1")
    if np.any(n < 2):
        raise ValueError("n must be >= 2")
    lo, hi = kappa ** -2 - 1 / n, kappa ** 2 - 1 / n
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def low_sample_bounds(n, S, *, failure_prob: float = 0.1) -> dict:
    """The low-sample theorem of chapter 4: high-probability bounds on μ for every θ.

    For x_i i.i.d. N(0, S), n ≥ 2, γ = ``failure_prob``, t = ln(4n/γ),

        η = 2√(t/d_eff) + 2t/r,
        τ = (1 + √(2 t d_eff)/r)² (√(n−1) + √(2t))² / d_eff,

    with d_eff = (Tr S)²/‖S‖_F² and r = Tr S/‖S‖₂. With probability at least 1 − γ,
    abs(K_ii/Tr S − 1) ≤ η and Σ_{j≠i} K_ij²/(Tr S)² ≤ τ for all i, and then every μ(θ)
    lies between the bounds of :func:`entrywise_mu_bounds`.

    Parameters
    ----------
    n : int or array of int
    S : array, shape (d,) or (d, d)
    failure_prob : float in (0, 1)

    Returns
    -------
    dict with ``lower``, ``upper``, ``eta``, ``tau``, ``t`` (arrays shaped like n).
    """
    gamma = _prob(failure_prob, "failure_prob")
    info = spectral_summary(S)
    n_arr = np.asarray(n)
    if not np.issubdtype(n_arr.dtype, np.integer) or np.any(n_arr < 2):
        raise ValueError(f"n must be an integer (or integers) >= 2, got {n}")
    nf = n_arr.astype(float)
    d_eff, r = info["d_eff"], info["r"]
    t = np.log(4 * nf / gamma)
    eta = 2 * np.sqrt(t / d_eff) + 2 * t / r
    tau = (1 + np.sqrt(2 * t * d_eff) / r) ** 2 * (np.sqrt(nf - 1) + np.sqrt(2 * t)) ** 2 / d_eff
    lower, upper = entrywise_mu_bounds(nf, eta, tau)
    return {"lower": lower, "upper": upper, "eta": eta, "tau": tau, "t": t}


def wishart_gram(n: int, d: int, *, n_seeds: int = 1, seed: int = 0) -> torch.Tensor:
    """Draw K = XXᵀ for X with i.i.d. N(0, 1) entries, n×d, d ≥ n, in O(n³) (Bartlett).

    K ~ Wishart_n(d, I) equals LLᵀ in distribution, with L lower triangular and
    independent entries, L_ii² ~ χ²_{d−i+1} (i = 1..n), L_ij ~ N(0, 1) below the
    diagonal. For isotropic inputs μ depends on X only through K, so chapter 4 can
    take d (= d_eff) up to 10⁶ without forming X.

    Returns
    -------
    torch.Tensor, shape (n_seeds, n, n)
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=n)
    n_seeds = check_int(n_seeds, "n_seeds", low=1)
    rng = np.random.default_rng(int(seed))
    L = np.tril(rng.standard_normal((n_seeds, n, n)), -1)
    dof = np.arange(d, d - n, -1, dtype=float)                # d, d−1, ..., d−n+1
    idx = np.arange(n)
    L[:, idx, idx] = np.sqrt(rng.chisquare(dof, size=(n_seeds, n)))
    L = torch.as_tensor(L, dtype=DTYPE)
    return L @ L.transpose(-1, -2)


def _sorted_ns(ns) -> list[int]:
    arr = np.atleast_1d(np.asarray(ns))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ns must be a 1-D sequence of integers, got {ns!r}")
    if np.any(arr < 2):
        raise ValueError("ns must be >= 2 (with one sample Σ₁ = 0)")
    if np.any(np.diff(arr) <= 0):
        raise ValueError("ns must be strictly increasing")
    return [int(v) for v in arr]


def mu_vs_n(spectrum, ns, *, n_seeds: int = 20, theta_star=None, theta=None, noise_std: float = 0.0,
            seed: int = 0, n_directions: int = 0, chunk: int = 4) -> dict:
    """μ, its range over θ and g(u_k) for a linear model, for many n and seeds (chapter 4).

    For each seed s, inputs x_i ~ N(0, diag(spectrum)) and label noise ε_i ~ N(0, σ²)
    are drawn once for n = max(ns); the sample of size n is the first n of them
    (nested samples). The draws are reproducible: with
    ``gen = torch.Generator().manual_seed(seed * 1_000_003 + s)``, first
    ``X = torch.randn(max(ns), d₊, generator=gen) * sqrt(λ₊)`` (λ₊ the positive part
    of the spectrum, d₊ its size), then ``ε = σ * torch.randn(max(ns), generator=gen)``.
    At the point θ the residuals are e = X(θ − θ*) − ε, and

    * ``mu``: μ(θ) = [n Σ e_i² (K²)_ii − eᵀK²e] / (‖e‖²‖K‖_F²);
    * ``lo``, ``hi``: the smallest and largest μ over all θ with noiseless labels
      (:func:`mu_range`, residuals in range(X));
    * ``g``: g(u_k) along the eigenvectors of G for the n_directions largest eigenvalues
      (:func:`g_eigendirections`; nan beyond the rank).

    Everything goes through the eigenpairs of the smaller of K = XXᵀ (n×n) and XᵀX
    (d×d), batched over ``chunk`` seeds: cost O(n d min(n, d)) per n and seed; no p×p
    matrix beyond d×d. Coordinates with zero variance are dropped first (they change
    nothing), so a rank-r spectrum costs as if d = r.

    Parameters
    ----------
    spectrum : array (d,)
        Eigenvalues of the (diagonal) input covariance, e.g. :func:`noisegeom.power_law_spectrum`.
    ns : increasing sequence of int >= 2
    n_seeds : int
    theta_star, theta : array (d,), optional
        Teacher and evaluation point; defaults θ* = (1, ..., 1)/√d and θ = 0.
    noise_std : float
        Label noise σ.
    seed : int
    n_directions : int
        How many eigen-directions of G to report g for (0: none).

    Returns
    -------
    dict with ``n`` (array), ``mu``, ``lo``, ``hi`` of shape (len(ns), n_seeds) and
    ``g`` of shape (len(ns), n_seeds, n_directions).
    """
    lam = as_tensor(spectrum, "spectrum", ndim=1)
    if (lam < 0).any():
        raise ValueError("spectrum must be non-negative")
    d = lam.numel()
    ns = _sorted_ns(ns)
    n_seeds = check_int(n_seeds, "n_seeds", low=1)
    chunk = check_int(chunk, "chunk", low=1)
    n_directions = check_int(n_directions, "n_directions", low=0)
    sigma = check_positive(noise_std, "noise_std", allow_zero=True)
    theta_star = (torch.ones(d, dtype=DTYPE) / math.sqrt(d) if theta_star is None
                  else torch.as_tensor(_vector(theta_star, "theta_star", d)))
    theta = torch.zeros(d, dtype=DTYPE) if theta is None else torch.as_tensor(_vector(theta, "theta", d))
    keep = lam > 0
    if not bool(keep.any()):
        raise ValueError("spectrum is identically zero")
    sd = lam[keep].sqrt()
    delta = (theta - theta_star)[keep]
    dk = int(keep.sum())
    if sigma == 0 and float((delta ** 2 * lam[keep]).sum()) == 0:
        raise ValueError("theta equals the teacher on the support of the inputs and noise_std = 0: "
                         "every residual vanishes and μ is 0/0")
    n_max = ns[-1]
    m = len(ns)
    mu = np.full((m, n_seeds), np.nan)
    lo, hi = mu.copy(), mu.copy()
    g = np.full((m, n_seeds, n_directions), np.nan)
    for start in range(0, n_seeds, chunk):
        seeds = range(start, min(n_seeds, start + chunk))
        Xs, eps = [], []
        for s in seeds:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + s)
            Xs.append(torch.randn(n_max, dk, generator=gen, dtype=DTYPE) * sd)
            eps.append(sigma * torch.randn(n_max, generator=gen, dtype=DTYPE))
        X = torch.stack(Xs)
        E = torch.stack(eps)
        cols = slice(start, start + len(Xs))
        for j, n in enumerate(ns):
            Xn = X[:, :n]
            e = Xn @ delta - E[:, :n]
            if n <= dk:
                s, U = torch.linalg.eigh(Xn @ Xn.transpose(1, 2))
                s, U = s.flip(-1), U.flip(-1)
            else:
                s, V = torch.linalg.eigh(Xn.transpose(1, 2) @ Xn)
                s, V = s.flip(-1), V.flip(-1)
                U = (Xn @ V) / s.clamp_min(1e-300).sqrt()[:, None, :]
            s = s.clamp_min(0)
            a = (U ** 2) @ (s ** 2)[..., None]                    # (c, n, 1): (K²)_ii
            fro2 = (s ** 2).sum(-1)
            e2 = (e ** 2).sum(-1)
            Ue = (U.transpose(1, 2) @ e[..., None])[..., 0]      # (c, r)
            num = n * ((e ** 2) * a[..., 0]).sum(-1) - ((Ue ** 2) * s ** 2).sum(-1)
            mu[j, cols] = (num / (e2 * fro2)).numpy()
            lam_M = torch.linalg.eigvalsh(_restricted_M(s, U))
            lo[j, cols], hi[j, cols] = lam_M[:, 0].numpy(), lam_M[:, -1].numpy()
            if n_directions:
                k = min(n_directions, U.shape[-1])
                w = e / e2.sqrt()[:, None]
                Uk = U[..., :k]
                gk = n * ((w ** 2)[..., None] * Uk ** 2).sum(1) - ((w[:, None, :] @ Uk)[:, 0]) ** 2
                g[j, cols, :k] = gk.numpy()
    return {"n": np.asarray(ns), "mu": mu, "lo": lo, "hi": hi, "g": g}


# --------------------------------------------------------------------------- reparameterised models

def feature_jacobian(model: FlatModel, theta, d: int) -> torch.Tensor:
    """∂F, the d×p Jacobian of F(θ) for a model f(x; θ) = ⟨F(θ), x⟩ (chapter 4).

    F_k(θ) = f(e_k; θ), so ∂F is the Jacobian of the outputs at the inputs I_d.
    Valid for models linear in x (linear, deep linear, diagonal u ⊙ v).
    """
    d = check_int(d, "d", low=1)
    return jacobian(model, theta, torch.eye(d, dtype=DTYPE))


def feature_metric(model: FlatModel, theta, d: int) -> torch.Tensor:
    """P = ∂F ∂Fᵀ (d×d) for f(x; θ) = ⟨F(θ), x⟩: then K = X P Xᵀ (chapter 4)."""
    D = feature_jacobian(model, theta, d)
    return D @ D.T


def reparam_features(model: FlatModel, theta, X) -> torch.Tensor:
    """X̃ = X P^{1/2}, the inputs of the plain linear model with the same K = XPXᵀ (chapter 4).

    μ and g(u_k) of f = ⟨F(θ), x⟩ at θ equal those of the plain linear model on the
    features X̃ with the same residuals: pass X̃ to :func:`mu_from_residuals`,
    :func:`mu_range`, :func:`g_eigendirections`. Cost O(d² p + n d²), never p×p.
    """
    X = as_tensor(X, "X", ndim=2)
    P = feature_metric(model, theta, X.shape[1])
    w, V = torch.linalg.eigh(P)
    return X @ ((V * w.clamp_min(0).sqrt()) @ V.T)


def balanced_diagonal_point(F, pdiag) -> torch.Tensor:
    """θ = (u, v) with u ⊙ v = F and u² + v² = pdiag, for :func:`noisegeom.diagonal_linear_model`.

    For f = ⟨u ⊙ v, x⟩, ∂F = [Diag(v), Diag(u)], so P = Diag(u² + v²): this point has
    the predictor F and the metric P = Diag(pdiag). Needs pdiag ≥ 2 abs(F) entrywise
    (u² + v² ≥ 2 abs(uv)); u² = (pdiag + √(pdiag² − 4F²))/2, v = F/u.
    """
    F = as_tensor(F, "F", ndim=1)
    Pd = as_tensor(pdiag, "pdiag", ndim=1)
    if Pd.shape != F.shape:
        raise ValueError(f"pdiag must have the shape of F {tuple(F.shape)}, got {tuple(Pd.shape)}")
    if bool((Pd < 2 * F.abs() - 1e-12 * (1 + F.abs())).any()):
        raise ValueError("pdiag must satisfy pdiag >= 2|F| entrywise (u² + v² >= 2|uv|)")
    u2 = (Pd + (Pd ** 2 - 4 * F ** 2).clamp_min(0).sqrt()) / 2
    u = u2.sqrt()
    v = torch.where(u > 0, F / u.clamp_min(1e-300), torch.zeros_like(u))
    return torch.cat([u, v])


# --------------------------------------------------------------------------- widget back-end

PARAMETERIZATIONS = ("linear", "diagonal", "diagonal_ill", "deep_linear")


def linear_alignment_summary(n: int = 60, d: int = 120, alpha: float = 1.0, noise_std: float = 0.0,
                             parameterization: str = "linear", seed: int = 0, failure_prob: float = 0.1,
                             deep_width: int = 32) -> dict:
    """Every quantity of chapter 4 for one draw of data and one parameterisation (widget back-end).

    Inputs x_i ~ N(0, S), S = diag(power_law_spectrum(d, alpha)) (Tr S = d); teacher θ*
    uniform on the unit sphere; labels y = θ*ᵀx + ε, ε ~ N(0, σ²). The model point:

    * ``'linear'``: f = θᵀx at θ = 0 (P = I);
    * ``'diagonal'``: f = ⟨u ⊙ v, x⟩ at F = u⊙v = 0 with P = 2I (u = √2, v = 0);
    * ``'diagonal_ill'``: the same F = 0 with P = Diag(p_k), p_k log-spaced from 100 down to 1;
    * ``'deep_linear'``: depth-3 linear network of width ``deep_width`` at its random init.

    Returns
    -------
    dict
        ``mu``, ``mu_range`` (lo, hi over residual directions), ``theorem`` (lo, hi) of
        :func:`low_sample_bounds` for S̃ = P^{1/2}SP^{1/2}, ``mu_pop``, ``mu_pop_bounds``,
        ``lam_G`` and ``g`` (along the eigenvectors of G), ``g_pop_bounds`` (1, 1+ρ),
        ``g_max`` (:func:`g_range`), ``snr``, ``d_eff`` (of S̃), ``p``.
    """
    from ..data import gaussian_inputs, power_law_spectrum

    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=1)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    sigma = check_positive(noise_std, "noise_std", allow_zero=True)
    lam = power_law_spectrum(d, alpha)
    X = gaussian_inputs(n, lam, seed=seed)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    theta_star = torch.randn(d, generator=gen, dtype=DTYPE)
    theta_star = theta_star / theta_star.norm()
    eps = sigma * torch.randn(n, generator=gen, dtype=DTYPE)
    y = X @ theta_star + eps
    if parameterization == "linear":
        model, theta = linear_model(d), torch.zeros(d, dtype=DTYPE)
    elif parameterization in ("diagonal", "diagonal_ill"):
        model = diagonal_linear_model(d)
        pd = (2.0 * torch.ones(d, dtype=DTYPE) if parameterization == "diagonal"
              else torch.logspace(2, 0, d, dtype=DTYPE))
        theta = balanced_diagonal_point(torch.zeros(d, dtype=DTYPE), pd)
    else:
        model = deep_linear_model(d, depth=3, width=check_int(deep_width, "deep_width", low=1), seed=seed)
        theta = model.theta0
    Fvec = model(theta, torch.eye(d, dtype=DTYPE))
    e = X @ Fvec - y
    D = feature_jacobian(model, theta, d)
    P = (D @ D.T).numpy()
    if np.count_nonzero(P - np.diag(np.diag(P))) == 0:        # linear and diagonal models: P diagonal
        ph = np.sqrt(np.clip(np.diag(P), 0, None))
        Xt = X * torch.as_tensor(ph)
        S_tilde = lam * ph ** 2                                # a spectrum: no d×d work
        P = np.diag(P).copy()              # and P by its diagonal (population_mu: O(d))
    else:
        w, V = np.linalg.eigh(P)
        Ph = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
        Xt = X @ torch.as_tensor(Ph)
        # d_eff and the theorem need only the spectrum of S̃: one eigvalsh for both
        S_tilde = np.clip(np.linalg.eigvalsh(Ph @ np.diag(lam) @ Ph), 0, None)
    delta = (Fvec - theta_star).numpy()
    rho = signal_fraction(lam, delta, sigma)
    s, U = _gram_eig(X=Xt)                 # K̃ = X̃X̃ᵀ, once for μ, its range and g(u_k)
    lam_G, g = _g_eigendirections(s, U, e)
    thm = low_sample_bounds(n, S_tilde, failure_prob=failure_prob)
    return {
        "mu": _mu_from_eig(s, U, e), "mu_range": _mu_range_eig(s, U),
        "theorem": (float(thm["lower"]), float(thm["upper"])),
        "mu_pop": population_mu(lam, delta, noise_std=sigma, P=P),
        "mu_pop_bounds": population_mu_bounds(lam, snr=rho, P=P),
        "lam_G": lam_G, "g": g, "g_pop_bounds": (1.0, 1.0 + rho), "g_max": g_range(e),
        "snr": rho, "d_eff": spectral_summary(S_tilde)["d_eff"], "p": model.p, "n": n,
    }
