"""Numerics of chapter 8, *Cyclical learning rates*.

Chapter 8 asks what a learning-rate schedule does to where SGD can rest. The
second-moment maps are ``noisegeom.stability``'s; this module adds

* cyclical schedules (:func:`cyclical_schedule`: constant, triangular, cosine);
* the growth of second moments over one cycle of a schedule in the aligned-noise
  model (:func:`cycle_growth`);
* the largest learning rate at which SGD can rest at a minimum
  (:func:`resting_threshold`);
* SGD runs that record the sharpness λ_max(G) along the way
  (:func:`sharpness_along_run`: :func:`noisegeom.simulate` and
  :func:`noisegeom.gauss_newton_spectra`).

The chapter's minima come from :func:`noisegeom.find_minimum` and their spectra from
:func:`noisegeom.hessian_spectra`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from .._checks import as_tensor, check_int, check_positive
from ..curvature import gauss_newton_spectra
from ..models import FlatModel
from ..simulate import simulate

__all__ = ["SCHEDULES", "cyclical_schedule", "cycle_growth", "resting_threshold", "sharpness_along_run"]

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


def sharpness_along_run(model: FlatModel, X, y, theta0, *, eta, steps: int, batch_size: int | None = None,
                        n_seeds: int = 1, seed: int = 0, record_every: int = 1) -> dict:
    """GD or SGD with the sharpness λ_max(G) and Tr G at every record (chapter 8).

    The run is :func:`noisegeom.simulate` (square loss, minibatches without
    replacement); at every recorded iterate :func:`noisegeom.gauss_newton_spectra`
    gives the eigenvalues of the Gauss–Newton matrix G = JᵀJ/n, whose largest equals
    λ_max(H) at an interpolating minimum. A seed that diverges is reported as nan
    from its divergence on (``simulate`` freezes it at its last finite iterate; here
    it has no sharpness), and no warning is issued: blowing up is one of the outcomes
    the chapter's schedules are compared by.

    Parameters
    ----------
    model : FlatModel
    X, y : arrays
    theta0 : array (p,) or (n_seeds, p)
    eta : float or array (steps,)
        Learning rate or schedule.
    steps : int
    batch_size : int, optional
        B; ``None`` is GD.
    n_seeds, seed, record_every : int
        As in :func:`noisegeom.simulate`.

    Returns
    -------
    dict
        ``steps`` (R,), ``loss`` (R, S), ``sharpness`` (R, S) λ_max(G), ``trace``
        (R, S) Tr G, ``theta`` (S, p) the final iterates (nan rows for seeds that
        diverged), ``diverged_at`` (S,) (−1: never).
    """
    tr = simulate(model, X, y, theta0, eta=eta, steps=steps, batch_size=batch_size, n_seeds=n_seeds, seed=seed,
                  record_every=record_every, record_theta=True, on_divergence="ignore")
    R, S, p = tr.theta.shape
    ev = gauss_newton_spectra(model, tr.theta.reshape(R * S, p), X).reshape(R, S, -1)
    # a record at or after a seed's divergence holds its frozen last finite state: not a point of the run
    gone = (tr.diverged_at[None, :] >= 0) & (tr.steps[:, None] >= tr.diverged_at[None, :])
    out = {"steps": tr.steps, "loss": np.where(gone, np.nan, tr.loss),
           "sharpness": np.where(gone, np.nan, ev[..., -1]), "trace": np.where(gone, np.nan, ev.sum(-1)),
           "theta": np.where((tr.diverged_at >= 0)[:, None], np.nan, tr.final_theta),
           "diverged_at": tr.diverged_at}
    return out
