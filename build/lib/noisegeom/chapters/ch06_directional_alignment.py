"""Numerics of chapter 6, *Directional alignment*: directional alignment along sharp and flat directions, and Lanczos.

Chapter 6 measures the directional alignment g(θ; v) = vᵀΣ₁v/(2L vᵀGv)
(chapter 3) along every eigen-direction of the curvature, from the sharpest
to the flattest one inside range(G). This module adds

* :func:`lanczos`: Lanczos with full re-orthogonalisation, written out so the
  chapter can show the computation (Ritz values per iteration, residuals);
* :func:`gauss_newton_eigs`: the non-zero eigenpairs (λ_j, v_j) of G = JᵀJ/n
  from the n×n Gram K = JJᵀ = n Σ λ_j w_j w_jᵀ, with v_j = Jᵀw_j/√(nλ_j);
* :func:`spectrum_alignment`: g(v_j) and g_iso(v_j) along all of them, using
  the chapter's identity g(v_j) = [n Σ_i e_i² w_ij² − (e·w_j)²]/‖e‖²;
* :func:`range_directions`: random unit directions in range(G);
* :func:`directional_along_run`: all of the above, plus g along the top-k
  Hessian eigenvectors (Lanczos on Hessian-vector products), at chosen
  steps of a GD or SGD run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import as_tensor, check_int, check_loss_positive, check_positive
from ..alignment import NoiseGeometry
from ..autodiff import residuals
from ..curvature import _to_operator, hessian_operator, top_eigenpairs
from ..models import FlatModel
from ..simulate import measure_along_run

__all__ = [
    "LanczosResult",
    "lanczos",
    "gauss_newton_eigs",
    "spectrum_alignment",
    "range_directions",
    "DirectionalRecord",
    "directional_along_run",
]


@dataclass
class LanczosResult:
    """Output of :func:`lanczos`.

    Attributes
    ----------
    values : ndarray (k,)
        The k largest Ritz values θ_1 ≥ … ≥ θ_k after the last step.
    vectors : ndarray (p, k)
        Ritz vectors y_i = Q s_i (orthonormal columns).
    residuals : ndarray (k,)
        ‖A y_i − θ_i y_i‖, computed with one more product by A.
    residual_estimates : ndarray (k,)
        β_m abs(s_{m,i}), the same residuals read off the tridiagonal matrix (no product by A).
    history : ndarray (m, k)
        Row j: the k largest eigenvalues of T_{j+1} (nan where j + 1 < k).
    alpha, beta : ndarray (m,), (m,)
        Diagonal and off-diagonal of T_m (beta[j] couples q_{j+1} and q_{j+2}).
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    residual_estimates: np.ndarray
    history: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def lanczos(op, k: int = 1, *, steps: int = 50, seed: int = 0, reorthogonalize: bool = True,
            start=None) -> LanczosResult:
    """The k largest (algebraic) Ritz pairs of a symmetric operator after ``steps`` Lanczos steps.

    With q_1 a seeded random unit vector, step j computes w = A q_j − β_{j−1} q_{j−1},
    α_j = q_jᵀw, w ← w − α_j q_j, then (``reorthogonalize``) removes from w its
    components along all previous q's, twice, and sets β_j = ‖w‖, q_{j+1} = w/β_j.
    Then A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ with T_m tridiagonal, and the Ritz
    pairs are the eigenpairs (θ_i, s_i) of T_m mapped back, y_i = Q_m s_i, with
    residual ‖A y_i − θ_i y_i‖ = β_m abs(s_{m,i}) (chapter 6). Stops early if the
    Krylov space becomes invariant (β_j ≈ 0).

    Parameters
    ----------
    op : LinearOperator or square matrix
        Symmetric.
    k : int
        Number of Ritz pairs, 1 ≤ k ≤ steps.
    steps : int
        Lanczos steps m, k ≤ m ≤ p.
    seed : int
        Seed of the start vector.
    reorthogonalize : bool
        Full re-orthogonalisation (default). Without it, rounding makes the q's
        lose orthogonality and copies ("ghosts") of converged Ritz values appear.
    start : array (p,), optional
        Start vector q_1 (normalised here) instead of the seeded random one. A start
        orthogonal to the top eigenvector never finds it (chapter 6): keep the
        default unless that is the point.

    Returns
    -------
    LanczosResult
    """
    A = _to_operator(op)
    p = A.shape[0]
    steps = check_int(steps, "steps", low=1, high=p)
    k = check_int(k, "k", low=1, high=steps)
    Q = np.zeros((p, steps + 1))
    if start is None:
        q = np.random.default_rng(seed).standard_normal(p)
    else:
        q = as_tensor(start, "start", ndim=1).numpy()
        if q.size != p:
            raise ValueError(f"start must have length p = {p}, got {q.size}")
        if not np.linalg.norm(q) > 0:
            raise ValueError("start must be a non-zero vector")
    Q[:, 0] = q / np.linalg.norm(q)
    alpha, beta = np.zeros(steps), np.zeros(steps)
    history = np.full((steps, k), np.nan)
    m = steps
    for j in range(steps):
        w = np.asarray(A @ Q[:, j], dtype=float).ravel()
        if j > 0:
            w -= beta[j - 1] * Q[:, j - 1]
        alpha[j] = Q[:, j] @ w
        w -= alpha[j] * Q[:, j]
        if reorthogonalize:
            for _ in range(2):
                w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        beta[j] = np.linalg.norm(w)
        T = np.diag(alpha[: j + 1]) + np.diag(beta[:j], 1) + np.diag(beta[:j], -1)
        theta = np.linalg.eigvalsh(T)[::-1]
        history[j, : min(k, j + 1)] = theta[:k]
        scale = max(abs(theta[0]), abs(theta[-1]), 1e-300)
        if beta[j] <= 1e-12 * scale:
            m = j + 1
            break
        Q[:, j + 1] = w / beta[j]
    if m < k:
        raise ValueError(f"the Krylov space became invariant after {m} steps, fewer than k = {k}; "
                         "use another seed or a smaller k")
    T = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    theta, S = np.linalg.eigh(T)
    theta, S = theta[::-1][:k].copy(), S[:, ::-1][:, :k].copy()
    Y = Q[:, :m] @ S
    res = np.linalg.norm(np.asarray(A @ Y) - Y * theta, axis=0)
    return LanczosResult(values=theta, vectors=Y, residuals=res, residual_estimates=beta[m - 1] * np.abs(S[-1]),
                         history=history[:m], alpha=alpha[:m], beta=beta[:m])


def gauss_newton_eigs(J, *, rtol: float = 1e-10):
    """Non-zero eigenpairs of G = JᵀJ/n through the n×n Gram matrix K = JJᵀ.

    If K = Σ_j (nλ_j) w_j w_jᵀ with orthonormal w_j, then v_j = Jᵀw_j/√(nλ_j)
    are orthonormal eigenvectors of G with eigenvalues λ_j, and they span
    range(G) (chapter 6). Eigenvalues below ``rtol``·λ_1 count as zero.

    Parameters
    ----------
    J : array (n, p)
    rtol : float

    Returns
    -------
    (lam, V, W) : ndarrays (r,), (p, r), (n, r)
        λ_1 ≥ … ≥ λ_r > 0, the eigenvectors v_j of G as columns of V and the
        eigenvectors w_j of K as columns of W; r = rank G.
    """
    J = as_tensor(J, "J", ndim=2)
    rtol = check_positive(rtol, "rtol")
    n = J.shape[0]
    K = (J @ J.T).numpy()
    kappa, W = np.linalg.eigh(0.5 * (K + K.T))
    kappa, W = kappa[::-1], W[:, ::-1]
    if kappa[0] <= 0:
        raise ValueError("J is zero: G has no non-zero eigenvalue")
    keep = kappa > rtol * kappa[0]
    lam, W = kappa[keep] / n, W[:, keep].copy()
    V = J.numpy().T @ W / np.sqrt(n * lam)
    return lam.copy(), V, W


def spectrum_alignment(J, e, *, rtol: float = 1e-10) -> dict:
    """g and g_iso along every eigen-direction of G in range(G) (square loss, chapter 6).

    For v_j = Jᵀw_j/√(nλ_j) (see :func:`gauss_newton_eigs`), Jv_j = √(nλ_j) w_j, so

        g(v_j) = [n Σ_i e_i² w_ij² − (e·w_j)²] / ‖e‖²,

    which does not depend on λ_j, while isotropic noise of trace Tr Σ₁ gives
    g_iso(v_j) = (Tr Σ₁/p)/(2L λ_j).

    Parameters
    ----------
    J : array (n, p)
        Jacobian, rows ∇f_i.
    e : array (n,)
        Residuals; 2L = ‖e‖²/n must be positive.
    rtol : float
        Relative threshold for zero eigenvalues of G.

    Returns
    -------
    dict
        ``lam`` (r,), ``g`` (r,), ``g_iso`` (r,), ``vectors`` (p, r), ``mu``,
        ``trace_sigma1``, ``loss``.
    """
    J = as_tensor(J, "J", ndim=2)
    e = as_tensor(e, "e", ndim=1)
    n, p = J.shape
    if e.shape[0] != n:
        raise ValueError(f"e must have one entry per row of J ({n}), got {e.shape[0]}")
    loss = 0.5 * float((e * e).mean())
    check_loss_positive(loss)
    lam, V, W = gauss_newton_eigs(J, rtol=rtol)
    en = e.numpy()
    ee = float(en @ en)
    g = (n * (en[:, None] ** 2 * W ** 2).sum(0) - (en @ W) ** 2) / ee
    # Tr Σ₁ = (1/n) Σ e_i² ‖∇f_i‖² − ‖∇L‖²
    Jn = J.numpy()
    grad = Jn.T @ en / n
    tr_s = float((en ** 2 * (Jn ** 2).sum(1)).sum() / n - grad @ grad)
    g_iso = tr_s / p / (2 * loss * lam)
    mu = float((lam ** 2 * g).sum() / (lam ** 2).sum())
    return {"lam": lam, "g": g, "g_iso": g_iso, "vectors": V, "mu": mu, "trace_sigma1": tr_s, "loss": loss}


def range_directions(J, m: int, *, seed: int = 0) -> np.ndarray:
    """m random unit directions in range(G) = range(Jᵀ): v = Jᵀz/‖Jᵀz‖, z ~ N(0, I_n).

    Returns
    -------
    ndarray (p, m)
    """
    J = as_tensor(J, "J", ndim=2)
    m = check_int(m, "m", low=1)
    Z = np.random.default_rng(seed).standard_normal((J.shape[0], m))
    V = J.numpy().T @ Z
    norms = np.linalg.norm(V, axis=0)
    if (norms == 0).any():
        raise ValueError("J is zero: range(G) is {0}")
    return V / norms


@dataclass
class DirectionalRecord:
    """Directional alignment at R points of a run (chapter 6).

    Attributes
    ----------
    steps : ndarray (R,)
    loss, mu : ndarray (R,)
    hess_values, hess_residuals : ndarray (R, k)
        Top-k Hessian eigenvalues (largest algebraic first) and Lanczos residuals.
    g_top, g_iso_top : ndarray (R, k)
        g(u_j) and g_iso(u_j) = (Tr Σ₁/p)/(2L u_jᵀGu_j) along the Hessian eigenvectors u_j.
    g_top_hessian : ndarray (R, k)
        u_jᵀΣ₁u_j/(2L λ_j): H in place of G (nan where λ_j ≤ 0).
    overlap : ndarray (R, k)
        abs(u_jᵀv_j): the j-th Hessian eigenvector against the j-th eigenvector of G.
    G_lam, G_g, G_g_iso : ndarray (R, n)
        Eigenvalues of G, g(v_j), g_iso(v_j) along all its eigenvectors in
        range(G) (padded with nan beyond rank G).
    g_random : ndarray (R, m)
        g along m random unit directions in range(G).
    p : int
    """

    steps: np.ndarray
    loss: np.ndarray
    mu: np.ndarray
    hess_values: np.ndarray
    hess_residuals: np.ndarray
    g_top: np.ndarray
    g_iso_top: np.ndarray
    g_top_hessian: np.ndarray
    overlap: np.ndarray
    G_lam: np.ndarray
    G_g: np.ndarray
    G_g_iso: np.ndarray
    g_random: np.ndarray
    p: int


def _measure(model, theta, X, y, k, n_random, seed):
    geo = NoiseGeometry.from_model(model, theta, X, y)
    J = geo.factor
    e = residuals(model, theta, X, y)
    pairs = top_eigenpairs(hessian_operator(model, theta, X, y), k, seed=seed)
    U = torch.as_tensor(pairs.vectors)
    JU = (J @ U).numpy()
    uGu = (JU ** 2).sum(0) / geo.n
    num = ((e.numpy()[:, None] * JU) ** 2).sum(0) / geo.n - (geo.gbar.numpy() @ pairs.vectors) ** 2
    spec = spectrum_alignment(J, e)
    n = geo.n
    pad = lambda a: np.concatenate([a, np.full(n - a.size, np.nan)])  # noqa: E731
    lam_h = pairs.values
    kk = min(k, spec["vectors"].shape[1])
    overlap = np.full(k, np.nan)
    overlap[:kk] = np.abs((pairs.vectors[:, :kk] * spec["vectors"][:, :kk]).sum(0))
    return {
        "loss": geo.loss, "mu": geo.mu(),
        "hess_values": lam_h, "hess_residuals": pairs.residuals,
        "g_top": num / (2 * geo.loss * uGu), "g_iso_top": spec["trace_sigma1"] / geo.p / (2 * geo.loss * uGu),
        "g_top_hessian": np.where(lam_h > 0, num / (2 * geo.loss * np.where(lam_h > 0, lam_h, 1.0)), np.nan),
        "overlap": overlap,
        "G_lam": pad(spec["lam"]), "G_g": pad(spec["g"]), "G_g_iso": pad(spec["g_iso"]),
        "g_random": np.atleast_1d(geo.g(range_directions(J, n_random, seed=seed))),
    }


def directional_along_run(model: FlatModel, X, y, theta0, *, eta: float, record_at, batch_size: int | None = None,
                          k: int = 10, n_random: int = 20, seed: int = 0) -> DirectionalRecord:
    """Train with GD (``batch_size=None``) or SGD (without replacement) and measure directional alignment.

    At each step of ``record_at`` (non-negative, strictly increasing) it records
    the top-k Hessian eigenpairs by Lanczos (:func:`noisegeom.top_eigenpairs`,
    ``which='LA'``, residuals), g and g_iso along them, g along every
    eigenvector of G in range(G) (:func:`spectrum_alignment`) and along
    ``n_random`` random directions in range(G). The run is
    :func:`noisegeom.simulate` in segments; segment j uses seed + j.

    Returns
    -------
    DirectionalRecord
    """
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    k = check_int(k, "k", low=1, high=model.p)
    n_random = check_int(n_random, "n_random", low=1)
    steps, rows = measure_along_run(model, X, y, theta0, eta=eta, record_at=record_at, batch_size=batch_size,
                                    seed=seed, measure=lambda theta: _measure(model, theta, X, y, k, n_random, seed))
    out = {name: np.stack([np.asarray(r[name]) for r in rows]) for name in rows[0]}
    return DirectionalRecord(steps=steps, p=model.p, **out)
