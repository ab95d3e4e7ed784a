"""Linear stability of GD and SGD at a minimum, and the second-moment maps (chapter 7).

GD on a quadratic with Hessian H is stable iff λ_max(H) ≤ 2/η. For SGD the
mean can be stable while the second moment grows. On a quadratic whose
noise is aligned with the curvature, Σ = μ·(2L/B)·H, the second moments
q_k = E w_k² along the eigen-directions obey q(t+1) = M q(t) with

    M = (I − ηΛ)² + (μη²/B) λλᵀ,

an entrywise non-negative matrix whose spectral radius satisfies
ρ(M) ≥ μη²‖H‖_F²/B. Hence SGD is unstable once ‖H‖_F > √(B/μ)/η, even where GD
is stable, and its Perron vector u_k ∝ λ_k / (ρ − (1 − ηλ_k)²) puts mass on
every direction with λ_k > 0.

For least squares at an interpolating minimum (y = Xθ*, w = θ − θ*) the map
on the full second moment W = E[wwᵀ] is exact:

    W ↦ W − η(HW + WH) + η² [HWH + c · ((1/n) Σ_i x_i x_iᵀ W x_i x_iᵀ − HWH)],

with c = c(n, B) from :func:`noisegeom.batch_noise_factor`.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import as_tensor, check_batch_size, check_finite_result, check_int, check_positive
from .noise import batch_noise_factor

__all__ = [
    "gd_stable",
    "frobenius_threshold",
    "aligned_second_moment_map",
    "perron",
    "perron_vector_formula",
    "least_squares_second_moment_map",
    "second_moment_spectral_radius",
    "nonuniformity",
]


def gd_stable(sharpness: float, eta: float) -> bool:
    """GD is linearly stable at a minimum iff λ_max ≤ 2/η."""
    sharpness = check_positive(sharpness, "sharpness", allow_zero=True)
    return sharpness <= 2.0 / check_positive(eta, "eta")


def frobenius_threshold(eta: float, batch_size: int, mu: float = 1.0) -> float:
    """√(B/μ)/η: SGD with aligned noise is unstable once ‖H‖_F exceeds it."""
    eta = check_positive(eta, "eta")
    B = check_int(batch_size, "batch_size", low=1)
    mu = check_positive(mu, "mu")
    return float(np.sqrt(B / mu) / eta)


def _eigs(lams) -> np.ndarray:
    lam = as_tensor(lams, "lams", ndim=1).numpy()
    if (lam < 0).any():
        raise ValueError("lams must be non-negative (eigenvalues of H at a minimum)")
    return lam


def aligned_second_moment_map(lams, eta: float, batch_size: int, mu: float = 1.0) -> np.ndarray:
    """M = (I − ηΛ)² + (μη²/B) λλᵀ, the map q(t) ↦ q(t+1) of second moments E w_k².

    Parameters
    ----------
    lams : array, shape (p,)
        Eigenvalues λ_k ≥ 0 of H.
    eta : float
        Learning rate.
    batch_size : int
        B.
    mu : float
        Alignment strength: Σ = μ (2L/B) H (μ = 1 is perfect alignment).
    """
    lam = _eigs(lams)
    eta = check_positive(eta, "eta")
    B = check_int(batch_size, "batch_size", low=1)
    mu = check_positive(mu, "mu", allow_zero=True)
    with np.errstate(over="ignore"):                      # an overflow is reported just below
        M = np.diag((1 - eta * lam) ** 2) + (mu * eta * eta / B) * np.outer(lam, lam)
    return check_finite_result(M, "the second-moment map", "lams or eta")


def perron(M) -> tuple[float, np.ndarray]:
    """Spectral radius ρ and non-negative Perron vector (summing to 1) of a non-negative matrix."""
    M = as_tensor(M, "M", ndim=2).numpy()
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be square, got shape {M.shape}")
    if (M < 0).any():
        raise ValueError("M must be entrywise non-negative")
    w, U = np.linalg.eig(M)
    j = int(np.argmax(w.real))
    u = np.abs(U[:, j].real)
    return float(w[j].real), u / u.sum()


def perron_vector_formula(lams, eta: float, batch_size: int, rho: float, *,
                          mu: float | None = None) -> np.ndarray:
    """u_k ∝ λ_k / (ρ − (1 − ηλ_k)²), normalised to sum 1 (chapter 7).

    This is the Perron vector of :func:`aligned_second_moment_map` when ρ is the
    noise-driven root, i.e. solves the secular equation
    (μη²/B) Σ_k λ_k² / (ρ − (1 − ηλ_k)²) = 1. When some λ_k = 0 and that root is
    below 1, the Perron root is 1 with the flat direction as its vector, and the
    formula does not apply. Pass ``mu`` to have the secular equation checked.

    Parameters
    ----------
    lams : array, shape (p,)
        Eigenvalues λ_k ≥ 0 of H.
    eta : float
    batch_size : int
    rho : float
        The Perron root, e.g. from :func:`perron`.
    mu : float, optional
        Alignment strength of the map; if given, raise unless ρ solves the
        secular equation to relative accuracy 1e-6.
    """
    lam = _eigs(lams)
    eta = check_positive(eta, "eta")
    B = check_int(batch_size, "batch_size", low=1)
    rho = check_positive(rho, "rho")
    gap = rho - (1 - eta * lam) ** 2
    if (gap[lam > 0] <= 0).any():
        raise ValueError("rho must exceed (1 − ηλ_k)² for every λ_k > 0 (is it the Perron root?)")
    curved = lam > 0
    if mu is not None:
        mu = check_positive(mu, "mu")
        secular = mu * eta * eta / B * float((lam[curved] ** 2 / gap[curved]).sum())
        if abs(secular - 1.0) > 1e-6:
            raise ValueError(
                f"rho = {float(rho):.6g} does not solve the secular equation (left side {secular:.6g} ≠ 1): "
                "it is not the noise-driven Perron root, so the formula is not an eigenvector")
    u = np.where(curved, lam / np.where(gap == 0, 1, gap), 0.0)
    return u / u.sum()


def least_squares_second_moment_map(X, eta: float, batch_size: int | None = None, *,
                                    replacement: bool = False):
    """The exact map W ↦ E[w⁺w⁺ᵀ] for minibatch SGD on least squares at interpolation.

    Parameters
    ----------
    X : array, shape (n, d)
        Inputs; H = XᵀX/n.
    eta : float
    batch_size : int, optional
        B (None: GD).
    replacement : bool

    Returns
    -------
    callable
        ``apply(W)`` for a symmetric (d, d) array W (or a stack (..., d, d)).
    """
    X = as_tensor(X, "X", ndim=2)
    n, d = X.shape
    eta = check_positive(eta, "eta")
    c = 0.0 if batch_size is None else batch_noise_factor(n, check_batch_size(batch_size, n),
                                                          replacement=replacement)
    H = X.T @ X / n

    def apply(W):
        W = as_tensor(W, "W")
        if W.shape[-2:] != (d, d):
            raise ValueError(f"W must have trailing shape ({d}, {d}), got {tuple(W.shape)}")
        HW = H @ W
        HWH = HW @ H
        # (1/n) Σ_i x_i (x_iᵀ W x_i) x_iᵀ
        quad = torch.einsum("id,...de,ie->...i", X, W, X)
        fourth = torch.einsum("id,...i,ie->...de", X, quad, X) / n
        # W H, not (H W)ᵀ: the two agree only for symmetric W, and second_moment_spectral_radius
        # applies the map to a basis of all d×d matrices (W ↦ E[(I − ηA) W (I − ηA)] for every W)
        return W - eta * (HW + W @ H) + (eta * eta) * (HWH + c * (fourth - HWH))

    return apply


def second_moment_spectral_radius(X, eta: float, batch_size: int | None = None, *,
                                  replacement: bool = False) -> float:
    """Spectral radius of the exact least-squares second-moment map (d² × d² matrix; small d)."""
    X = as_tensor(X, "X", ndim=2)
    d = X.shape[1]
    if d > 60:
        raise ValueError(f"second_moment_spectral_radius forms a d²×d² matrix; d = {d} > 60 is too large")
    apply = least_squares_second_moment_map(X, eta, batch_size, replacement=replacement)
    basis = torch.eye(d * d, dtype=X.dtype).reshape(d * d, d, d)
    T = check_finite_result(apply(basis).reshape(d * d, d * d).T, "the second-moment map",
                            "the entries of X, or eta,")
    return float(np.abs(np.linalg.eigvals(T.numpy())).max())


def nonuniformity(X) -> float:
    """Non-uniformity of least squares, √λ_max((1/n) Σ H_i² − H²) with H_i = x_i x_iᵀ (Wu, Ma, E 2018)."""
    X = as_tensor(X, "X", ndim=2)
    n = X.shape[0]
    H = X.T @ X / n
    sq = (X * X).sum(1)  # H_i² = ‖x_i‖² x_i x_iᵀ
    M = (X * sq[:, None]).T @ X / n - H @ H
    check_finite_result(M, "(1/n) Σ H_i² − H²", "the entries of X")
    return float(np.sqrt(max(np.linalg.eigvalsh(M.numpy()).max(), 0.0)))
