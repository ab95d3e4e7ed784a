"""Numerics of chapter 8, *Cyclical learning rates*.

Chapter 8 asks what a learning-rate schedule does to where SGD can rest. The
second-moment maps are :mod:`noisegeom.stability`'s; this module adds

* cyclical schedules (:func:`cyclical_schedule`: constant, triangular, cosine);
* the growth of second moments over one cycle of a schedule in the aligned-noise
  model (:func:`cycle_growth`);
* the largest learning rate at which SGD can rest at a minimum
  (:func:`resting_threshold`).

The chapter's networks run through :func:`noisegeom.simulate`, with minima from
:func:`noisegeom.find_minimum` and sharpness from :func:`noisegeom.hessian_spectra`
and :func:`noisegeom.gauss_newton_spectra`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from .._checks import as_tensor, check_int, check_positive

__all__ = ["SCHEDULES", "cyclical_schedule", "cycle_growth", "resting_threshold"]

SCHEDULES = ("constant", "triangular", "cosine")


def cyclical_schedule(kind: str, steps: int, eta_min: float, eta_max: float, period: int) -> np.ndarray:
    """A learning-rate schedule as an array of length ``steps`` (chapter 8).

    With phase φ_t = (t mod P)/P ∈ [0, 1):

    * ``'constant'``: η_t = η_max;
    * ``'triangular'`` (Smith 2017): η_t = η_min + (η_max − η_min)(1 − abs(2φ_t − 1)),
      from η_min up to η_max at mid-cycle and back;
    * ``'cosine'`` (cosine with warm restarts): η_t = η_min + ½(η_max − η_min)(1 + cos πφ_t),
      a jump to η_max at every restart and a slow decay to η_min.

    Returns
    -------
    numpy.ndarray, shape (steps,)
    """
    if kind not in SCHEDULES:
        raise ValueError(f"kind must be one of {SCHEDULES}, got {kind!r}")
    steps = check_int(steps, "steps", low=1)
    period = check_int(period, "period", low=1)
    eta_min = check_positive(eta_min, "eta_min")
    eta_max = check_positive(eta_max, "eta_max")
    if eta_max < eta_min:
        raise ValueError(f"eta_max must be >= eta_min, got {eta_max} < {eta_min}")
    phase = (np.arange(steps) % period) / period
    if kind == "constant":
        return np.full(steps, eta_max)
    if kind == "triangular":
        return eta_min + (eta_max - eta_min) * (1 - np.abs(2 * phase - 1))
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + np.cos(np.pi * phase))


def cycle_growth(lams, etas, batch_size: float = 1, mu: float = 1.0) -> float:
    """Per-step growth of second moments over one cycle of a schedule, aligned model (chapter 8).

    With M(η) = (I − ηΛ)² + (μη²/B) λλᵀ on the directions with λ_k > 0, one
    pass through the schedule η_0, …, η_{P−1} multiplies the second moments by
    Π = M(η_{P−1}) ⋯ M(η_0). Returns ρ(Π)^{1/P}, the geometric-mean growth per
    step of a schedule repeated forever (> 1: unstable). For a constant
    schedule it is ρ(M(η)).

    Parameters
    ----------
    lams : array (p,)
        Eigenvalues λ_k ≥ 0 of H (at least one positive).
    etas : array (P,)
        One period of the schedule (η_t > 0).
    batch_size : float
        B, or more generally 1/c(n, B) (any positive number).
    mu : float
        Alignment strength μ > 0 in Σ = μ (2L/B) H (the aligned-noise model of chapter 7).
    """
    lam = as_tensor(lams, "lams", ndim=1).numpy()
    if (lam < 0).any() or not (lam > 0).any():
        raise ValueError("lams must be non-negative with at least one positive entry")
    et = as_tensor(etas, "etas", ndim=(0, 1)).numpy().reshape(-1)
    if (et <= 0).any():
        raise ValueError("etas must be > 0")
    B = check_positive(batch_size, "batch_size")
    mu = check_positive(mu, "mu")
    lp = lam[lam > 0]
    P = np.eye(lp.size)
    log_scale = 0.0
    for eta in et:
        P = ((1 - eta * lp) ** 2)[:, None] * P + (mu * eta ** 2 / B) * np.outer(lp, lp @ P)
        m = np.abs(P).max()
        if m == 0:
            return 0.0
        P /= m
        log_scale += np.log(m)
    rho = np.abs(np.linalg.eigvals(P)).max()
    if rho == 0:
        return 0.0
    return float(np.exp((np.log(rho) + log_scale) / et.size))


def resting_threshold(lams, batch_size: float = 1, mu: float = 1.0) -> float:
    """The largest learning rate at which SGD can rest at a minimum, aligned model (chapter 8).

    With s(η) = (μη/B) Σ_{k: λ_k>0} λ_k / (2 − ηλ_k), SGD can rest for η iff
    ηλ_1 < 2 and s(η) ≤ 1 (proposition ``prop-resting-set``). s increases
    strictly from 0 to ∞ on (0, 2/λ_1), so the set of such η is (0, η_c] with
    s(η_c) = 1; this returns η_c, found by bracketing the root. At η_c the
    second-moment map M(η) has spectral radius exactly 1.

    Parameters
    ----------
    lams : array (p,)
        Eigenvalues of H at the minimum; negative entries are clipped to 0 (the
        rounding error of a positive semi-definite Hessian), at least one must be
        positive.
    batch_size : float
        B; for a batch drawn without replacement use 1/c(n, B).
    mu : float
        Alignment strength μ > 0 in Σ = μ (2L/B) H (the aligned-noise model of chapter 7).
    """
    lam = as_tensor(lams, "lams", ndim=1).numpy()
    lp = np.clip(lam, 0.0, None)
    lp = lp[lp > 0]
    if lp.size == 0:
        raise ValueError("lams must have at least one positive entry")
    B = check_positive(batch_size, "batch_size")
    mu = check_positive(mu, "mu")
    top = 2.0 / lp.max()

    def s_minus_one(eta):
        return mu * eta / B * (lp / (2.0 - eta * lp)).sum() - 1.0

    gap = 1e-3                      # s → ∞ as η → 2/λ_1 from below: close in until s > 1
    while s_minus_one(top * (1 - gap)) <= 0:
        gap /= 10
        if gap < 1e-15:             # noise negligible: GD's threshold to machine precision
            return float(top)
    return float(brentq(s_minus_one, 0.0, top * (1 - gap), xtol=1e-15 * top, rtol=1e-14))


