"""Numerics of chapter 3, *Measuring noise geometry*: μ, g(u_k) and the isotropic baseline along training.

Chapter 3 defines the average alignment μ = Tr(Σ₁G)/(2L‖G‖_F²), the
directional alignment g(v) = vᵀΣ₁v/(2L vᵀGv) and the isotropic baseline
μ_iso = Tr Σ₁ Tr G/(p 2L ‖G‖_F²), and proves the Gram-matrix identities that
:class:`noisegeom.NoiseGeometry` uses. This module adds

* :func:`alignment_at` and :func:`alignment_along_run`: μ, μ_iso and g along
  the top-k Hessian eigen-directions u_k (Lanczos), at one point or at chosen
  steps of a GD/SGD run, optionally with the Hessian in place of G;
* :func:`dense_alignment`: the same metrics through explicit p×p matrices,
  the slow route that the chapter times against the Gram route.

The problem it measures on is :func:`noisegeom.two_layer_task`; the runs go through
:func:`noisegeom.measure_along_run`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import as_tensor, check_int, check_loss_positive
from ..alignment import NoiseGeometry
from ..curvature import hessian_matrix, hessian_operator, top_eigenpairs
from ..models import FlatModel
from ..simulate import measure_along_run

__all__ = [
    "AlignmentRecord",
    "alignment_at",
    "alignment_along_run",
    "dense_alignment",
]


@dataclass
class AlignmentRecord:
    """Alignment measured at R points (e.g. steps of a run), k Hessian directions each.

    Attributes
    ----------
    steps : ndarray (R,)
        Step of each record.
    loss : ndarray (R,)
        L(θ).
    mu, mu_iso : ndarray (R,)
        μ = Tr(Σ₁G)/(2L‖G‖_F²) and μ_iso = Tr Σ₁ Tr G/(p 2L‖G‖_F²).
    eigenvalues, residuals : ndarray (R, k)
        Top-k Hessian eigenvalues λ_j (largest algebraic first) and their Lanczos residuals.
    g : ndarray (R, k)
        g(u_j) = u_jᵀΣ₁u_j/(2L u_jᵀGu_j) along the Hessian eigenvectors u_j.
    g_iso : ndarray (R, k)
        The same for isotropic noise of trace Tr Σ₁: (Tr Σ₁/p)/(2L u_jᵀGu_j).
    g_hessian : ndarray (R, k) or None
        u_jᵀΣ₁u_j/(2L λ_j), with H in place of G (only with ``with_hessian``).
    mu_hessian : ndarray (R,) or None
        Tr(Σ₁H)/(2L‖H‖_F²).
    hessian_gap : ndarray (R,) or None
        ‖H − G‖_F/‖H‖_F: zero at an interpolating minimum.
    theta : ndarray (R, p)
        The points.
    p : int
    """

    steps: np.ndarray
    loss: np.ndarray
    mu: np.ndarray
    mu_iso: np.ndarray
    eigenvalues: np.ndarray
    residuals: np.ndarray
    g: np.ndarray
    g_iso: np.ndarray
    g_hessian: np.ndarray | None
    mu_hessian: np.ndarray | None
    hessian_gap: np.ndarray | None
    theta: np.ndarray
    p: int


_FIELDS = ("loss", "mu", "mu_iso", "eigenvalues", "residuals", "g", "g_iso", "g_hessian", "mu_hessian",
           "hessian_gap", "theta")


def alignment_at(model: FlatModel, theta, X, y, *, k: int = 10, with_hessian: bool = False,
                 seed: int = 0, max_dense_p: int = 2048) -> dict:
    """μ, μ_iso and g along the top-k Hessian eigenvectors at one point (square loss).

    The eigenpairs come from Lanczos on Hessian-vector products
    (:func:`noisegeom.top_eigenpairs` of :func:`noisegeom.hessian_operator`);
    μ, μ_iso and g from n×n Grams (:class:`noisegeom.NoiseGeometry`). With
    ``with_hessian`` the dense Hessian is formed (p ≤ ``max_dense_p``) to give
    μ and g with H in place of G and ‖H − G‖_F/‖H‖_F.

    Returns
    -------
    dict
        Keys as the attributes of :class:`AlignmentRecord` (one point each, no ``steps``).
    """
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    theta = as_tensor(theta, "theta", ndim=1)
    k = check_int(k, "k", low=1, high=model.p)
    geo = NoiseGeometry.from_model(model, theta, X, y)
    pairs = top_eigenpairs(hessian_operator(model, theta, X, y), k, seed=seed)
    U = torch.as_tensor(pairs.vectors)
    out = {
        "loss": geo.loss, "mu": geo.mu(), "mu_iso": geo.mu_isotropic(),
        "eigenvalues": pairs.values, "residuals": pairs.residuals, "g": np.atleast_1d(geo.g(U)),
        "theta": theta.numpy().copy(),
    }
    uGu = ((geo.factor @ U) ** 2).sum(0).numpy() / geo.n
    out["g_iso"] = geo.trace_sigma1() / geo.p / (2 * geo.loss * uGu)
    if with_hessian:
        if model.p > check_int(max_dense_p, "max_dense_p", low=1):
            raise ValueError(f"with_hessian forms the dense p×p Hessian; p = {model.p} > max_dense_p = {max_dense_p}")
        H = hessian_matrix(model, theta, X, y)
        G = geo.factor.T @ geo.factor / geo.n
        cols = torch.cat([geo.grads.T, geo.gbar[:, None]], 1)
        HC = H @ cols
        tr = float((cols[:, :-1] * HC[:, :-1]).sum()) / geo.n - float(cols[:, -1] @ HC[:, -1])
        fro_H = float(torch.linalg.norm(H))
        out["mu_hessian"] = tr / (2 * geo.loss * fro_H ** 2)
        uSu = ((geo.grads @ U) ** 2).sum(0).numpy() / geo.n - (geo.gbar @ U).numpy() ** 2
        out["g_hessian"] = uSu / (2 * geo.loss * pairs.values)
        out["hessian_gap"] = float(torch.linalg.norm(H - G)) / fro_H
    return out


def alignment_along_run(model: FlatModel, X, y, theta0, *, eta: float, record_at, batch_size: int | None = None,
                        replacement: bool = False, k: int = 10, with_hessian: bool = False,
                        seed: int = 0) -> AlignmentRecord:
    """Train with GD (``batch_size=None``) or SGD and measure alignment at chosen steps (chapter 3).

    The run is :func:`noisegeom.simulate` in segments between the steps of
    ``record_at``; at each of them :func:`alignment_at` measures μ, μ_iso and
    g(u_j) for the top-k Hessian eigenvectors.

    Parameters
    ----------
    model : FlatModel
    X, y : arrays
    theta0 : array (p,)
    eta : float
        Constant learning rate.
    record_at : sequence of int
        Non-negative, strictly increasing steps (0 = the start).
    batch_size : int, optional
        B for SGD; None for GD.
    replacement : bool
    k : int
        Number of Hessian eigen-directions.
    with_hessian : bool
        Also measure with H in place of G (dense Hessian; small p).
    seed : int
        Seeds the minibatches (segment j uses seed + j) and the Lanczos start vector.

    Returns
    -------
    AlignmentRecord
    """
    steps, rows = measure_along_run(
        model, X, y, theta0, eta=eta, record_at=record_at, batch_size=batch_size, replacement=replacement,
        seed=seed, measure=lambda theta: alignment_at(model, theta, X, y, k=k, with_hessian=with_hessian,
                                                      seed=seed))
    stacked = {}
    for name in _FIELDS:
        vals = [r.get(name) for r in rows]
        stacked[name] = None if vals[0] is None else np.stack([np.asarray(v) for v in vals])
    return AlignmentRecord(steps=steps, p=model.p, **stacked)


def dense_alignment(J, e, *, max_p: int = 8192) -> dict:
    """μ, μ_iso and the Zhu et al. ratio through explicit p×p matrices Σ₁ and G (chapter 3).

    The direct route for the scalar square loss, O(n p²) time and O(p²)
    memory: per-sample gradients g_i = e_i ∇f_i, Σ₁ = CᵀC/n with C the centred
    g_i, G = JᵀJ/n, then the traces. Chapter 3 times it against the Gram route
    of :class:`noisegeom.NoiseGeometry` (O(n²p + n³), no p×p matrix).

    Parameters
    ----------
    J : array, shape (n, p)
        Jacobian, rows ∇f_i.
    e : array, shape (n,)
        Residuals e_i = f(x_i) − y_i.
    max_p : int
        Refuse larger p.

    Returns
    -------
    dict
        ``mu``, ``mu_iso`` and ``zhu`` = Tr(Σ₁G)/(Tr G · Tr Σ₁/p) = μ/μ_iso.
    """
    J = as_tensor(J, "J", ndim=2)
    e = as_tensor(e, "e", ndim=1)
    n, p = J.shape
    if e.shape[0] != n:
        raise ValueError(f"e must have one entry per row of J ({n}), got {e.shape[0]}")
    if p > check_int(max_p, "max_p", low=1):
        raise ValueError(f"dense_alignment forms p×p matrices; p = {p} > max_p = {max_p}")
    loss = 0.5 * float((e * e).mean())
    check_loss_positive(loss)
    g = e[:, None] * J
    C = g - g.mean(0)
    sigma1 = C.T @ C / n
    G = J.T @ J / n
    fro2 = float((G * G).sum())
    if fro2 == 0:
        raise ValueError("G = 0 (J vanishes): μ is undefined")
    tr_sg = float((sigma1 * G).sum())
    tr_s, tr_g = float(torch.trace(sigma1)), float(torch.trace(G))
    mu = tr_sg / (2 * loss * fro2)
    mu_iso = tr_s * tr_g / (p * 2 * loss * fro2)
    return {"mu": mu, "mu_iso": mu_iso, "zhu": p * tr_sg / (tr_s * tr_g)}
