"""Synthetic Gaussian data with a chosen covariance spectrum, and the digits data.

The linear-model results (chapter 4) depend on the input covariance S only
through its spectrum, in particular through the effective dimension
d_eff = (Tr S)² / ‖S‖_F². The functions here draw x ~ N(0, S) with S diagonal
(a power law k^{-α}, optionally truncated to rank r) so that d_eff can be
dialled from 1 to d.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import DTYPE, as_tensor, check_finite_result, check_int, check_positive, check_seed

__all__ = [
    "power_law_spectrum",
    "effective_dimension",
    "gaussian_inputs",
    "teacher_labels",
    "load_digits",
]


def power_law_spectrum(d: int, alpha: float = 1.0, *, rank: int | None = None) -> np.ndarray:
    """Eigenvalues λ_k ∝ k^{-α}, k = 1..d, zero beyond ``rank``, normalised to Tr S = d.

    Parameters
    ----------
    d : int
        Dimension.
    alpha : float, default 1
        Decay exponent; α = 0 is isotropic (d_eff = rank).
    rank : int, optional
        Keep only the first ``rank`` eigenvalues (low-rank inputs).

    Returns
    -------
    numpy.ndarray, shape (d,)
        Non-increasing, summing to d.
    """
    d = check_int(d, "d", low=1)
    rank = d if rank is None else check_int(rank, "rank", low=1, high=d)
    alpha = check_positive(alpha, "alpha", allow_zero=True)
    lam = np.zeros(d)
    lam[:rank] = np.arange(1, rank + 1, dtype=float) ** (-alpha)
    return lam * (d / lam.sum())


def effective_dimension(spectrum) -> float:
    """d_eff = (Σ λ_k)² / Σ λ_k², between 1 and the rank (chapter 4)."""
    lam = as_tensor(spectrum, "spectrum", ndim=1).numpy()
    if (lam < 0).any():
        raise ValueError("spectrum must be non-negative")
    with np.errstate(over="ignore"):                      # an overflow is reported just below
        s2 = float(check_finite_result((lam ** 2).sum(), "Σ λ_k²", "the entries of spectrum"))
    if s2 == 0:
        raise ValueError("spectrum is identically zero")
    return float(check_finite_result(lam.sum() ** 2 / s2, "d_eff", "the entries of spectrum"))


def gaussian_inputs(n: int, spectrum, *, seed: int = 0) -> torch.Tensor:
    """Draw n inputs x_i ~ N(0, diag(spectrum)), float64, shape (n, d)."""
    n = check_int(n, "n", low=1)
    lam = as_tensor(spectrum, "spectrum", ndim=1)
    if (lam < 0).any():
        raise ValueError("spectrum must be non-negative (it is the diagonal of a covariance)")
    g = torch.Generator().manual_seed(check_seed(seed))
    return torch.randn(n, lam.numel(), generator=g, dtype=DTYPE) * lam.sqrt()


def teacher_labels(X, theta_star, *, noise_std: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Labels y_i = θ*ᵀx_i + ε_i with ε_i ~ N(0, noise_std²)."""
    X = as_tensor(X, "X", ndim=2)
    theta_star = as_tensor(theta_star, "theta_star", ndim=1)
    if theta_star.numel() != X.shape[1]:
        raise ValueError(f"theta_star must have length d = {X.shape[1]}, got {theta_star.numel()}")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    seed = check_seed(seed)
    y = check_finite_result(X @ theta_star, "y = X θ*", "X or theta_star")
    if noise_std > 0:
        g = torch.Generator().manual_seed(seed + 1)
        y = y + noise_std * torch.randn(X.shape[0], generator=g, dtype=DTYPE)
    return y


def load_digits(*, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True,
                classes=None) -> dict:
    """scikit-learn's bundled 8×8 digits (1797 images; no download).

    Parameters
    ----------
    test_fraction : float
        Fraction held out for testing (stratified split).
    seed : int
        Seed of the split.
    standardize : bool
        Centre and scale pixels by training statistics.
    classes : sequence of int, optional
        Keep only these digits (labels are re-indexed 0..len(classes)-1).

    Returns
    -------
    dict
        ``X_train``, ``X_test`` (float64, shape (m, 64)), ``y_train``, ``y_test``
        (int64 labels), and ``n_classes``.
    """
    try:
        from sklearn.datasets import load_digits as _load
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError('load_digits reads the digits bundled with scikit-learn: pip install "noisegeom[book]"'
                          ) from exc

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    data = _load()
    X, y = data.data.astype(np.float64), data.target.astype(np.int64)
    if classes is not None:
        classes = list(classes)
        keep = np.isin(y, classes)
        X, y = X[keep], np.searchsorted(np.array(sorted(classes)), y[keep])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    if standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd[sd == 0] = 1.0
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    return {
        "X_train": torch.as_tensor(Xtr, dtype=DTYPE), "y_train": torch.as_tensor(ytr),
        "X_test": torch.as_tensor(Xte, dtype=DTYPE), "y_test": torch.as_tensor(yte),
        "n_classes": int(y.max() + 1),
    }
