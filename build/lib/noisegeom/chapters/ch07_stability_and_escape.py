"""Numerics of chapter 7, *Stability and escape from sharp minima*.

Chapter 7 compares how GD and SGD leave a minimum that is too sharp for their
learning rate. The core maps live in ``noisegeom.stability``; this module
adds what the chapter computes on top of them:

* closed forms for the one-dimensional two-parabola example
  (:func:`two_parabola_rates`);
* over-parameterized least squares with a prescribed Hessian spectrum at an
  interpolating minimum (:func:`prescribed_least_squares`);
* the exact second-moment map of minibatch SGD on least squares, restricted
  to symmetric matrices on the range of H, as a small symmetric matrix
  (:class:`SecondMomentOperator`, :func:`second_moment_operator`), and the
  alignment constant μ_H of its Frobenius bound (:func:`least_squares_mu_h`);
* the aligned-noise model solved through its secular equation
  (:func:`aligned_escape`);
* escape runs and an (η, B) stability diagram on least squares
  (:func:`least_squares_escape`, :func:`stability_diagram`);
* energy fractions of θ_t − θ* on groups of eigen-directions
  (:func:`group_fractions`);
* a two-dimensional double basin with a sharp and a flat minimum and a
  vectorised noisy-GD simulator on it (:class:`DoubleBasin`,
  :func:`basin_escape`).

The chapter's network experiment uses the toolbox: :func:`noisegeom.find_minimum`,
:func:`noisegeom.hessian_spectra` and :func:`noisegeom.sharpness_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.sparse.linalg import eigsh

from .._checks import DTYPE, as_tensor, check_batch_size, check_int, check_positive
from ..noise import batch_noise_factor

__all__ = [
    "two_parabola_rates",
    "LeastSquaresProblem",
    "prescribed_least_squares",
    "SecondMomentOperator",
    "second_moment_operator",
    "least_squares_mu_h",
    "aligned_escape",
    "least_squares_escape",
    "stability_diagram",
    "group_fractions",
    "DoubleBasin",
    "basin_escape",
    "BASIN_NOISES",
]


# --------------------------------------------------------------------------- 1-D example

def two_parabola_rates(curvatures, eta: float) -> dict:
    """Growth factors of GD and of SGD with B = 1 on ℓ_i(w) = ½ a_i w² (chapter 7).

    All per-sample losses share the minimum w = 0; L = ½ ā w² with ā = mean a_i.
    GD multiplies w by 1 − ηā each step. SGD with one uniformly drawn sample
    multiplies it by 1 − η a_I, so

    * E w² is multiplied by m₂ = mean_i (1 − η a_i)² (the second-moment factor);
    * log|w| moves by a mean of γ = mean_i log|1 − η a_i| per step (the
      Lyapunov exponent: the median path grows like e^{γt}).

    Parameters
    ----------
    curvatures : array, shape (n,)
        a_i ≥ 0, not all zero.
    eta : float
        Learning rate η > 0.

    Returns
    -------
    dict
        ``gd_factor`` abs(1 − ηā); ``second_moment_factor`` m₂; ``lyapunov`` γ
        (−inf if some 1 − η a_i = 0); ``eta_gd`` = 2/ā, the GD threshold;
        ``eta_second_moment`` = 2ā / mean(a²), the η above which E w² grows.
    """
    a = as_tensor(curvatures, "curvatures", ndim=1).numpy()
    if (a < 0).any() or not (a > 0).any():
        raise ValueError("curvatures must be non-negative and not all zero")
    eta = check_positive(eta, "eta")
    factors = np.abs(1 - eta * a)
    with np.errstate(divide="ignore"):
        lyap = float(np.mean(np.log(factors)))
    abar = float(a.mean())
    return {
        "gd_factor": abs(1 - eta * abar),
        "second_moment_factor": float(np.mean((1 - eta * a) ** 2)),
        "lyapunov": lyap,
        "eta_gd": 2.0 / abar,
        "eta_second_moment": 2.0 * abar / float(np.mean(a ** 2)),
    }


# --------------------------------------------------------------------------- least squares

@dataclass
class LeastSquaresProblem:
    """Least squares with an interpolating minimum θ* and a prescribed Hessian spectrum.

    Attributes
    ----------
    X : torch.Tensor, shape (n, p)
        Inputs; H = XᵀX/n has the eigenvalues ``lams`` on the columns of ``U``
        and zero on their orthogonal complement.
    y : torch.Tensor, shape (n,)
        Labels y = Xθ*.
    theta_star : torch.Tensor, shape (p,)
    U : torch.Tensor, shape (p, n)
        Orthonormal eigenvectors of H, largest eigenvalue first.
    lams : numpy.ndarray, shape (n,)
        Eigenvalues of H on ``U``, non-increasing.
    """

    X: torch.Tensor
    y: torch.Tensor
    theta_star: torch.Tensor
    U: torch.Tensor
    lams: np.ndarray

    @property
    def coordinates(self) -> torch.Tensor:
        """Z = XU, the inputs in the eigenbasis of H (shape (n, n)); ZᵀZ/n = diag(lams)."""
        return self.X @ self.U

    def perturbations(self, n_seeds: int, scale: float, *, seed: int = 0) -> torch.Tensor:
        """n_seeds starting points θ* + w₀ with w₀ ~ N(0, scale² I) inside the range of H."""
        n_seeds = check_int(n_seeds, "n_seeds", low=1)
        scale = check_positive(scale, "scale")
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n_seeds, self.U.shape[1], generator=g, dtype=DTYPE)
        return self.theta_star + scale * z @ self.U.T


def prescribed_least_squares(eigenvalues, p: int, *, seed: int = 0) -> LeastSquaresProblem:
    """Over-parameterized least squares whose Hessian has exactly the given spectrum (chapter 7).

    With n = len(eigenvalues) samples, X = √n · Q Λ^{1/2} Vᵀ where Q (n×n) is a
    Haar-random orthogonal matrix and V (p×n) has Haar-random orthonormal
    columns; then H = XᵀX/n = V Λ Vᵀ exactly, and every row x_i is a generic
    point (no sample is aligned with an eigenvector). θ* ~ N(0, I_p/p) and
    y = Xθ*, so L(θ*) = 0: θ* is an interpolating minimum, and every point of
    θ* + null(X) is one too.

    Parameters
    ----------
    eigenvalues : array, shape (n,)
        Positive eigenvalues λ_1 ≥ … ≥ λ_n of H (they are sorted here).
    p : int
        Number of parameters, p ≥ n.
    seed : int
    """
    lam = as_tensor(eigenvalues, "eigenvalues", ndim=1).numpy()
    if (lam <= 0).any():
        raise ValueError("eigenvalues must be > 0 (the zero eigenvalues are the p − n null directions)")
    lam = np.sort(lam)[::-1].copy()
    n = lam.size
    p = check_int(p, "p", low=n)
    rng = np.random.default_rng(seed)

    def haar(rows, cols):
        A = rng.standard_normal((rows, cols))
        Qm, R = np.linalg.qr(A)
        return Qm * np.sign(np.diag(R))

    Q, V = haar(n, n), haar(p, n)
    X = np.sqrt(n) * (Q * np.sqrt(lam)) @ V.T
    theta_star = rng.standard_normal(p) / np.sqrt(p)
    Xt = torch.as_tensor(X, dtype=DTYPE)
    ts = torch.as_tensor(theta_star, dtype=DTYPE)
    return LeastSquaresProblem(X=Xt, y=Xt @ ts, theta_star=ts, U=torch.as_tensor(V, dtype=DTYPE), lams=lam)


@dataclass
class SecondMomentOperator:
    """The exact second-moment map of minibatch SGD on least squares at interpolation.

    With w = θ − θ*, H_b = (1/B) Σ_{i∈b} x_i x_iᵀ and w⁺ = (I − ηH_b) w,

        W ↦ E[w⁺w⁺ᵀ] = (I − ηH) W (I − ηH) + η² c · Σ̄₁(W),
        Σ̄₁(W) = (1/n) Σ_i x_i x_iᵀ W x_i x_iᵀ − HWH,

    where c = c(n, B) and Σ̄₁(W) is the noise covariance Σ₁(w) averaged over
    w with E wwᵀ = W (chapter 7 derives it). The map is restricted here to
    symmetric matrices on the range of H — the null space of H is left
    untouched by every step — and written in the orthonormal basis
    E_jk = (e_j e_kᵀ + e_k e_jᵀ)/√2 (j < k), E_jj = e_j e_jᵀ of the eigenbasis
    of H. In that basis it is the symmetric matrix

        T = diag((1 − ηλ_j)(1 − ηλ_k) − η²c λ_j λ_k) + (η²c/n) ΦᵀΦ,
        Φ_{i,(jk)} = z_iᵀ E_jk z_i,  z_i = Uᵀ x_i.

    Attributes
    ----------
    matrix : numpy.ndarray, shape (m, m)
        T, m = r(r+1)/2 for rank r.
    j, k : numpy.ndarray of int, shape (m,)
        The pair (j ≤ k) of each basis element.
    lams : numpy.ndarray, shape (r,)
        Nonzero eigenvalues of H, non-increasing.
    U : numpy.ndarray, shape (d, r)
        Their eigenvectors.
    eta, c : float
        Learning rate and batch factor c(n, B) (0 for GD).
    """

    matrix: np.ndarray
    j: np.ndarray
    k: np.ndarray
    lams: np.ndarray
    U: np.ndarray
    eta: float
    c: float

    def to_coordinates(self, W) -> np.ndarray:
        """Coordinates of a symmetric matrix W (given in the eigen-coordinates, r×r) in the basis E_jk."""
        W = np.asarray(W, dtype=float)
        s = np.where(self.j == self.k, 1.0, np.sqrt(2.0))
        return W[..., self.j, self.k] * s

    def from_coordinates(self, v) -> np.ndarray:
        """The symmetric r×r matrix with coordinates v."""
        v = np.asarray(v, dtype=float)
        r = self.lams.size
        W = np.zeros(v.shape[:-1] + (r, r))
        s = np.where(self.j == self.k, 1.0, 1.0 / np.sqrt(2.0))
        W[..., self.j, self.k] = v * s
        W[..., self.k, self.j] = v * s
        return W

    def apply(self, W) -> np.ndarray:
        """E[w⁺w⁺ᵀ] for E[wwᵀ] = W, both r×r in the eigen-coordinates of H."""
        return self.from_coordinates(self.to_coordinates(W) @ self.matrix.T)

    def leading(self) -> tuple[float, np.ndarray]:
        """Spectral radius ρ and the leading eigen-matrix W★ (r×r, PSD, trace 1).

        The map preserves positive semi-definite matrices, so ρ is attained by
        a PSD eigen-matrix: the second moment of a run that grows (or decays)
        at rate ρ settles on W★; diag(W★) is the predicted share of E‖w‖² on each
        eigen-direction.
        """
        vals, vecs = np.linalg.eigh(self.matrix)
        W = self.from_coordinates(vecs[:, -1])
        if np.trace(W) < 0:
            W = -W
        return float(max(vals[-1], -vals[0])), W / np.trace(W)

    def spectral_radius(self) -> float:
        """ρ(T): E‖w_t‖² grows like ρᵗ when ρ > 1 (for a generic start).

        T preserves the PSD cone, so ρ is its largest algebraic eigenvalue;
        for large T it is found by Lanczos (``eigsh``, ``which='LA'``).
        """
        if self.matrix.shape[0] <= 120:
            vals = np.linalg.eigvalsh(self.matrix)
            return float(max(vals[-1], -vals[0]))
        v0 = self.to_coordinates(np.diag(self.lams))
        val = eigsh(self.matrix, k=1, which="LA", v0=v0, tol=1e-12, return_eigenvectors=False)
        return float(val[0])

    def rayleigh_h(self) -> float:
        """⟨Ĥ, T Ĥ⟩ with Ĥ = H/‖H‖_F: the lower bound on ρ of chapter 7.

        Equals Σ_k (1 − ηλ_k)² λ_k² / ‖λ‖² + η² c μ_H ‖H‖_F².
        """
        v = self.to_coordinates(np.diag(self.lams))
        v = v / np.linalg.norm(v)
        return float(v @ self.matrix @ v)


def _second_moment_parts(X: np.ndarray, rtol: float):
    """Eigen-decomposition of H on its range and the fourth-moment Gram A = ΦᵀΦ/n."""
    n = X.shape[0]
    H = X.T @ X / n
    w, V = np.linalg.eigh(H)
    keep = w > rtol * max(w.max(), 0.0)
    if not keep.any():
        raise ValueError("X is zero: H has no positive eigenvalue")
    lam, U = w[keep][::-1].copy(), V[:, keep][:, ::-1].copy()
    r = lam.size
    if r > 80:
        raise ValueError(f"H has rank {r} > 80: the operator would be {r * (r + 1) // 2}-dimensional")
    Z = X @ U
    j, k = np.triu_indices(r)
    s = np.where(j == k, 1.0, np.sqrt(2.0))
    Phi = Z[:, j] * Z[:, k] * s
    return lam, U, j, k, Phi.T @ Phi / n


def _assemble(parts, eta: float, c: float) -> SecondMomentOperator:
    lam, U, j, k, A = parts
    D = (1 - eta * lam[j]) * (1 - eta * lam[k]) - eta ** 2 * c * lam[j] * lam[k]
    T = eta ** 2 * c * A
    T[np.diag_indices_from(T)] += D
    return SecondMomentOperator(matrix=0.5 * (T + T.T), j=j, k=k, lams=lam, U=U, eta=eta, c=c)


def second_moment_operator(X, eta: float, batch_size: int | None = None, *, replacement: bool = False,
                           rtol: float = 1e-10) -> SecondMomentOperator:
    """The exact second-moment map of minibatch SGD on least squares, on the range of H (chapter 7).

    Parameters
    ----------
    X : array, shape (n, d)
        Inputs, H = XᵀX/n.
    eta : float
        Learning rate.
    batch_size : int, optional
        B; ``None`` is GD (c = 0).
    replacement : bool
        Sampling scheme of the minibatch (c = 1/B with, (n − B)/(B(n − 1)) without).
    rtol : float
        Eigenvalues of H below rtol·λ_max count as zero.

    Returns
    -------
    SecondMomentOperator
    """
    X = as_tensor(X, "X", ndim=2).numpy()
    n = X.shape[0]
    eta = check_positive(eta, "eta")
    rtol = check_positive(rtol, "rtol")
    c = 0.0 if batch_size is None else batch_noise_factor(n, check_batch_size(batch_size, n),
                                                          replacement=replacement)
    return _assemble(_second_moment_parts(X, rtol), eta, c)


def least_squares_mu_h(X) -> float:
    """μ_H = ⟨H, Σ̄₁(H)⟩ / ‖H‖_F⁴ for least squares (chapter 7).

    Σ̄₁(W) is the one-sample noise covariance averaged over w with E wwᵀ = W, so
    μ_H = E[Tr(Σ₁(w) H)] / (E[2L(w)] ‖H‖_F²) for any such w: the average
    alignment μ of chapter 3 as a ratio of means over perturbations shaped
    like H. In closed form μ_H = [(1/n) Σ_i (x_iᵀ H x_i)² − Tr H⁴] / ‖H‖_F⁴.
    """
    X = as_tensor(X, "X", ndim=2)
    n = X.shape[0]
    H = X.T @ X / n
    f2 = float((H * H).sum())
    if f2 == 0:
        raise ValueError("X is zero: H = 0 and μ_H is 0/0")
    quad = torch.einsum("id,de,ie->i", X, H, X)
    H2 = H @ H
    return float(((quad ** 2).mean() - (H2 * H2).sum()) / f2 ** 2)


# --------------------------------------------------------------------------- aligned model

def aligned_escape(lams, eta: float, batch_size: float = 1, mu: float = 1.0) -> dict:
    """The aligned-noise model M = (I − ηΛ)² + (μη²/B) λλᵀ solved in closed form (chapter 7).

    For λ_k > 0 the Perron root ρ of M is the unique root above
    max_k (1 − ηλ_k)² of the secular equation

        1 = (μη²/B) Σ_k λ_k² / (ρ − (1 − ηλ_k)²),

    its Perron vector is u_k ∝ λ_k / (ρ − (1 − ηλ_k)²), and ρ > 1 iff
    max_k ηλ_k ≥ 2 or s = (μη/B) Σ_k λ_k / (2 − ηλ_k) > 1. Directions with
    λ_k = 0 are neutral (M acts on them as the identity) and get no mass.

    Parameters
    ----------
    lams : array, shape (p,)
        Eigenvalues λ_k ≥ 0 of H, at least one positive.
    eta : float
    batch_size : float
        B, or more generally 1/c(n, B) (any positive number).
    mu : float
        Alignment strength μ > 0 in Σ = μ (2L/B) H.

    Returns
    -------
    dict
        ``rho``: ρ(M) restricted to λ_k > 0; ``perron``: the Perron vector
        (sums to 1, zero where λ_k = 0); ``criterion``: s (inf if some ηλ_k ≥ 2);
        ``gd_stable``: ηλ_max ≤ 2; ``sgd_stable``: ρ ≤ 1;
        ``frobenius_bound``: μη²‖H‖_F²/B ≤ ρ; ``trace_bound``: μη Tr H/(2B),
        which, when GD is stable, is ≤ s.
    """
    lam = as_tensor(lams, "lams", ndim=1).numpy()
    if (lam < 0).any():
        raise ValueError("lams must be non-negative (eigenvalues of H at a minimum)")
    if not (lam > 0).any():
        raise ValueError("lams must contain a positive eigenvalue")
    eta = check_positive(eta, "eta")
    B = check_positive(batch_size, "batch_size")
    mu = check_positive(mu, "mu")
    pos = lam > 0
    lp = lam[pos]
    a = (1 - eta * lp) ** 2
    kappa = mu * eta ** 2 / B

    def secular(rho):
        return kappa * np.sum(lp ** 2 / (rho - a)) - 1.0

    lo = a.max()
    hi = lo + kappa * float(np.sum(lp ** 2)) + 1.0
    # the secular function decreases from +inf (just above lo) to −1 (at hi): one root in between
    left = lo + 1e-13 * max(lo, 1.0)
    rho = brentq(secular, left, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500) \
        if secular(left) > 0 else lo
    u = np.zeros_like(lam)
    u[pos] = lp / np.maximum(rho - a, np.finfo(float).tiny)
    u /= u.sum()
    gd_ok = bool(eta * lp.max() <= 2)
    crit = float(mu * eta / B * np.sum(lp / (2 - eta * lp))) if eta * lp.max() < 2 else np.inf
    return {
        "rho": float(rho),
        "perron": u,
        "criterion": crit,
        "gd_stable": gd_ok,
        "sgd_stable": bool(rho <= 1),
        "frobenius_bound": float(kappa * np.sum(lp ** 2)),
        "trace_bound": float(mu * eta * lp.sum() / (2 * B)),
    }


# --------------------------------------------------------------------------- experiments

def group_fractions(energy, distance, edges) -> np.ndarray:
    """Share of ‖θ_t − θ*‖² on consecutive groups of directions, plus the complement.

    Parameters
    ----------
    energy : array, shape (..., k)
        ((θ_t − θ*)·u_j)² for orthonormal u_1..u_k (``Trajectory.energy``).
    distance : array, shape (...)
        ‖θ_t − θ*‖ (``Trajectory.distance``).
    edges : sequence of int
        Group boundaries 0 = e_0 < e_1 < … < e_m ≤ k: group g holds directions
        e_{g−1} … e_g − 1 (0-based).

    Returns
    -------
    numpy.ndarray, shape (..., m + 1)
        The m group shares and, last, the share outside span(u_1..u_k);
        rows sum to 1 (0 where the distance is 0).
    """
    E = np.asarray(energy, dtype=float)
    D = np.asarray(distance, dtype=float)
    if E.shape[:-1] != D.shape:
        raise ValueError(f"distance must have shape {E.shape[:-1]} to match energy, got {D.shape}")
    edges = [check_int(e, "edges[i]", low=0, high=E.shape[-1]) for e in edges]
    if len(edges) < 2 or edges[0] != 0 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise ValueError(f"edges must start at 0 and increase strictly, got {edges}")
    d2 = D ** 2
    safe = np.where(d2 > 0, d2, 1.0)
    parts = [E[..., a:b].sum(-1) / safe for a, b in zip(edges[:-1], edges[1:])]
    inside = E.sum(-1) / safe
    parts.append(np.clip(1.0 - inside, 0.0, None))
    out = np.stack(parts, -1)
    return np.where((d2 > 0)[..., None], out, 0.0)


def least_squares_escape(problem: LeastSquaresProblem, etas, batch_size: int | None = None, *,
                         steps: int = 200, n_seeds: int = 100, init_scale: float = 1e-3,
                         escape_factor: float = 1e4, replacement: bool = False, seed: int = 0) -> dict:
    """Real minibatch SGD on a :class:`LeastSquaresProblem` for many learning rates at once (chapter 7).

    Runs ``n_seeds`` seeds for every η in ``etas`` in one vectorised loop, in
    the eigen-coordinates of H (the null space of H never moves). Every η
    sees the same minibatch sequence, drawn exactly as :func:`noisegeom.simulate`
    draws it (:func:`noisegeom.sample_batches` with a generator seeded by
    ``seed``), and the same starts ``problem.perturbations(n_seeds, init_scale,
    seed=seed)``; for a single η the runs coincide with ``simulate``'s.
    A seed escapes when its loss first exceeds ``escape_factor`` × the median
    starting loss, and is frozen from then on (as with ``simulate``'s
    ``escape_loss``).

    Why not :func:`noisegeom.simulate` itself: the chapter's escape curves need a
    whole grid of η, and ``simulate`` runs one schedule per call; this loop runs the
    grid at the cost of one run, and for a single η it reproduces ``simulate``
    (tested).

    Returns
    -------
    dict
        ``escaped_at`` (m, S) first step above the threshold (−1 if never),
        ``escaped`` (m,) fraction escaped, ``threshold``, ``final_w`` (m, S, r)
        last coordinates w = Uᵀ(θ − θ*).
    """
    if not isinstance(problem, LeastSquaresProblem):
        raise TypeError(f"problem must be a LeastSquaresProblem, got {type(problem).__name__}")
    etas_t = as_tensor(etas, "etas", ndim=(0, 1)).reshape(-1)
    if (etas_t <= 0).any():
        raise ValueError("etas must be > 0")
    n = problem.X.shape[0]
    B = None if batch_size is None else check_batch_size(batch_size, n)
    steps = check_int(steps, "steps", low=1)
    S = check_int(n_seeds, "n_seeds", low=1)
    escape_factor = check_positive(escape_factor, "escape_factor")
    Z = problem.coordinates                                     # (n, r)
    lam = torch.as_tensor(problem.lams, dtype=DTYPE)
    w = ((problem.perturbations(S, init_scale, seed=seed) - problem.theta_star) @ problem.U)
    thresh = float(escape_factor * torch.median(0.5 * (w * w * lam).sum(1)))
    m = etas_t.numel()
    W = w[:, :, None].expand(S, w.shape[1], m).clone()         # (S, r, m): seeds, coordinates, etas
    eta = etas_t[None, None, :]
    lam_c = lam[None, :, None]
    gen = torch.Generator().manual_seed(int(seed))
    escaped = torch.full((S, m), -1, dtype=torch.long)
    active = torch.ones(S, m, dtype=torch.bool)
    from ..noise import sample_batches

    for t in range(steps):
        if B is None:
            g = W * lam_c
        else:
            idx = sample_batches(n, B, S, replacement=replacement, generator=gen)
            Zb = Z[idx]                                         # (S, B, r)
            g = torch.bmm(Zb.transpose(1, 2), torch.bmm(Zb, W)) / B
        W = torch.where(active[:, None, :], W - eta * g, W)
        L = 0.5 * (W * W * lam_c).sum(1)                        # (S, m)
        out = active & ~(L <= thresh)                           # also catches inf / nan
        escaped[out] = t + 1
        active &= ~out
        if not bool(active.any()):
            break
    escaped = escaped.T
    w = W.permute(2, 0, 1)
    esc = escaped.numpy()
    return {"escaped_at": esc, "escaped": (esc >= 0).mean(1), "threshold": thresh, "final_w": w.numpy()}


def stability_diagram(problem: LeastSquaresProblem, etas, batch_sizes, *, steps: int = 200,
                      n_seeds: int = 100, init_scale: float = 1e-3, escape_factor: float = 1e4,
                      replacement: bool = False, seed: int = 0) -> dict:
    """Exact second-moment spectral radius and observed escape on an (η, B) grid (chapter 7).

    For each batch size B and learning rate η: ρ of the exact map
    (:func:`second_moment_operator`), and the fraction of ``n_seeds`` real
    minibatch-SGD runs (:func:`least_squares_escape`) started at θ* + w₀
    (w₀ ~ N(0, init_scale² I) in the range of H) whose loss exceeds
    ``escape_factor`` × the median starting loss within ``steps`` steps.

    Returns
    -------
    dict
        ``etas`` (m,), ``batch_sizes`` (b,), ``rho`` (b, m), ``escaped`` (b, m)
        fractions, ``median_escape_step`` (b, m; nan where fewer than half escaped),
        ``lam_max``, ``frobenius`` ‖H‖_F, ``trace``, ``mu_h``, ``c`` (b,).
    """
    if not isinstance(problem, LeastSquaresProblem):
        raise TypeError(f"problem must be a LeastSquaresProblem, got {type(problem).__name__}")
    etas = as_tensor(etas, "etas", ndim=1).numpy()
    if (etas <= 0).any():
        raise ValueError("etas must be > 0")
    n = problem.X.shape[0]
    Bs = [check_batch_size(b, n) for b in batch_sizes]
    rho = np.zeros((len(Bs), etas.size))
    esc = np.zeros_like(rho)
    med = np.full_like(rho, np.nan)
    parts = _second_moment_parts(problem.X.numpy(), 1e-10)
    for a, B in enumerate(Bs):
        c = batch_noise_factor(n, B, replacement=replacement)
        for b, eta in enumerate(etas):
            rho[a, b] = _assemble(parts, float(eta), c).spectral_radius()
        run = least_squares_escape(problem, etas, B, steps=steps, n_seeds=n_seeds, init_scale=init_scale,
                                   escape_factor=escape_factor, replacement=replacement, seed=seed + a)
        esc[a] = run["escaped"]
        t_hit = np.where(run["escaped_at"] >= 0, run["escaped_at"], np.inf).astype(float)
        ok = esc[a] >= 0.5
        med[a, ok] = np.median(t_hit[ok], 1)
    lam = problem.lams
    return {
        "etas": etas, "batch_sizes": np.array(Bs), "rho": rho, "escaped": esc, "median_escape_step": med,
        "lam_max": float(lam.max()), "frobenius": float(np.sqrt((lam ** 2).sum())), "trace": float(lam.sum()),
        "mu_h": least_squares_mu_h(problem.X),
        "c": np.array([batch_noise_factor(n, B, replacement=replacement) for B in Bs]),
    }


# --------------------------------------------------------------------------- double basin

class DoubleBasin:
    """A two-dimensional loss with a sharp and a flat minimum (chapter 7).

    L(w) = −τ log(e^{−L_s(w)/τ} + e^{−L_f(w)/τ}), a smooth minimum of the sharp
    quadratic L_s(w) = ½ wᵀ H_s w (minimum at 0) and the flat quadratic
    L_f(w) = ½ (w − m)ᵀ H_f (w − m) (minimum at m). Following the description
    of Zhu et al. (2019), H_s has eigenvalues 200 and 20 and H_f = 2I by
    default; the construction (a smoothed minimum of two quadratics) is ours.
    Near each minimum L agrees with its quadratic up to terms of order
    e^{−ΔL/τ}. A point belongs to the sharp basin while L_s(w) < L_f(w).

    Parameters
    ----------
    sharp : (2, 2) array
        H_s (symmetric positive definite).
    flat : (2, 2) array
        H_f.
    center : (2,) array
        m, the flat minimum.
    tau : float
        Smoothing temperature τ > 0.
    """

    def __init__(self, sharp=((200.0, 0.0), (0.0, 20.0)), flat=((2.0, 0.0), (0.0, 2.0)),
                 center=(0.3, 0.0), tau: float = 0.005):
        self.Hs = self._spd(sharp, "sharp")
        self.Hf = self._spd(flat, "flat")
        self.m = as_tensor(center, "center", ndim=1).numpy()
        if self.m.shape != (2,):
            raise ValueError(f"center must have 2 entries, got {self.m.shape}")
        self.tau = check_positive(tau, "tau")

    @staticmethod
    def _spd(A, name):
        A = as_tensor(A, name, ndim=2).numpy()
        if A.shape != (2, 2) or not np.allclose(A, A.T) or np.linalg.eigvalsh(A).min() <= 0:
            raise ValueError(f"{name} must be a symmetric positive definite 2×2 matrix")
        return A

    def _parts(self, W):
        W = np.asarray(W, dtype=float)
        if W.shape[-1] != 2:
            raise ValueError(f"w must have trailing dimension 2, got shape {W.shape}")
        Ls = 0.5 * np.einsum("...i,ij,...j->...", W, self.Hs, W)
        D = W - self.m
        Lf = 0.5 * np.einsum("...i,ij,...j->...", D, self.Hf, D)
        return W, D, Ls, Lf

    def sharp_loss(self, W) -> np.ndarray:
        """L_s(w) = ½ wᵀH_s w."""
        return self._parts(W)[2]

    def flat_loss(self, W) -> np.ndarray:
        """L_f(w) = ½ (w − m)ᵀH_f (w − m)."""
        return self._parts(W)[3]

    def loss(self, W) -> np.ndarray:
        """L(w) for w of shape (..., 2)."""
        _, _, Ls, Lf = self._parts(W)
        lo = np.minimum(Ls, Lf)
        return lo - self.tau * np.log(np.exp(-(Ls - lo) / self.tau) + np.exp(-(Lf - lo) / self.tau))

    def weight_sharp(self, W) -> np.ndarray:
        """π_s = e^{−L_s/τ} / (e^{−L_s/τ} + e^{−L_f/τ}), the sharp quadratic's share of ∇L."""
        _, _, Ls, Lf = self._parts(W)
        return 0.5 * (1 + np.tanh(np.clip((Lf - Ls) / (2 * self.tau), -350.0, 350.0)))

    def grad(self, W) -> np.ndarray:
        """∇L = π_s H_s w + (1 − π_s) H_f (w − m)."""
        W, D, _, _ = self._parts(W)
        p = self.weight_sharp(W)[..., None]
        return p * (W @ self.Hs) + (1 - p) * (D @ self.Hf)

    def hessian(self, W) -> np.ndarray:
        """∇²L = π_s H_s + (1 − π_s) H_f − π_s(1 − π_s)/τ · (g_s − g_f)(g_s − g_f)ᵀ."""
        W, D, _, _ = self._parts(W)
        p = self.weight_sharp(W)[..., None, None]
        gd = W @ self.Hs - D @ self.Hf
        return p * self.Hs + (1 - p) * self.Hf - p * (1 - p) / self.tau * gd[..., :, None] * gd[..., None, :]

    def in_sharp_basin(self, W) -> np.ndarray:
        _, _, Ls, Lf = self._parts(W)
        return Ls < Lf

    def barrier(self) -> float:
        """min of L_s over the boundary {L_s = L_f} of the sharp basin (by a fine scan of directions)."""
        ang = np.linspace(0, 2 * np.pi, 20001)
        dirs = np.stack([np.cos(ang), np.sin(ang)], 1)
        # along w = t·d: ½t² dᵀH_s d = ½(t d − m)ᵀH_f(t d − m), first root t > 0
        a = 0.5 * (np.einsum("ki,ij,kj->k", dirs, self.Hs, dirs) - np.einsum("ki,ij,kj->k", dirs, self.Hf, dirs))
        b = np.einsum("ki,ij,j->k", dirs, self.Hf, self.m)
        c = -0.5 * self.m @ self.Hf @ self.m
        disc = b ** 2 - 4 * a * c
        t = np.where(np.abs(a) > 1e-14, (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a), -c / np.where(b == 0, 1, b))
        t = np.where(t > 0, t, np.inf)
        return float(np.min(0.5 * t ** 2 * np.einsum("ki,ij,kj->k", dirs, self.Hs, dirs)))


BASIN_NOISES = ("none", "isotropic", "hessian", "top_eigenvector", "sgd_like")


def basin_escape(basin: DoubleBasin, *, eta: float, steps: int, noise: str, trace: float = 0.0,
                 batch_size: float = 1.0, n_seeds: int = 100, seed: int = 0, w0=None,
                 record_every: int = 0) -> dict:
    """Noisy GD w ← w − η(∇L(w) + ξ) on a :class:`DoubleBasin`, vectorised over seeds (chapter 7).

    ``noise`` picks the covariance C of ξ ~ N(0, C):

    * ``'none'``: GD;
    * ``'isotropic'``: C = (trace/2) I;
    * ``'hessian'``: C = trace · H_s / Tr H_s (aligned with the sharp minimum's Hessian);
    * ``'top_eigenvector'``: C = trace · u₁u₁ᵀ, u₁ the top eigenvector of H_s;
    * ``'sgd_like'``: C = (2 L(w) / B) H_s, the aligned model of chapter 7:
      noise that vanishes with the loss, so at the (interpolating) minima;
      ``trace`` is unused.

    The first three have the same trace (Zhu et al.'s comparison at matched
    noise size) and do not vanish at the minimum. A seed has escaped once it
    leaves the sharp basin (L_s(w) ≥ L_f(w)); it keeps running. A seed whose
    iterate becomes non-finite is frozen at its last finite point and
    reported in ``diverged_at``.

    Why not :func:`noisegeom.simulate`: the double basin is a loss on R², not a
    model fitted to samples, and its noises are prescribed covariances (C ∝ H_s,
    C ∝ u₁u₁ᵀ, C = (2L/B) H_s), not the covariance of minibatches of data.

    Parameters
    ----------
    w0 : (2,) array, optional
        Start (default: the sharp minimum 0).
    record_every : int
        If > 0, keep the iterates every this many steps.

    Returns
    -------
    dict
        ``escaped_at`` (S,) first step outside the sharp basin (−1 if never),
        ``diverged_at`` (S,) (−1 if never), ``final`` (S, 2), ``paths``
        (R, S, 2) if recorded, ``steps`` (R,).
    """
    if not isinstance(basin, DoubleBasin):
        raise TypeError(f"basin must be a DoubleBasin, got {type(basin).__name__}")
    eta = check_positive(eta, "eta")
    steps = check_int(steps, "steps", low=1)
    if noise not in BASIN_NOISES:
        raise ValueError(f"noise must be one of {BASIN_NOISES}, got {noise!r}")
    trace = check_positive(trace, "trace", allow_zero=True)
    if noise in ("isotropic", "hessian", "top_eigenvector") and trace == 0:
        raise ValueError(f"noise={noise!r} needs trace > 0")
    B = check_positive(batch_size, "batch_size")
    S = check_int(n_seeds, "n_seeds", low=1)
    record_every = check_int(record_every, "record_every", low=0)
    rng = np.random.default_rng(seed)
    W = np.zeros((S, 2)) if w0 is None else np.tile(as_tensor(w0, "w0", ndim=1).numpy(), (S, 1))
    if W.shape[1] != 2:
        raise ValueError("w0 must have 2 entries")
    vals, vecs = np.linalg.eigh(basin.Hs)
    root_hs = (vecs * np.sqrt(vals)) @ vecs.T
    if noise == "isotropic":
        root = np.sqrt(trace / 2) * np.eye(2)
    elif noise == "hessian":
        root = np.sqrt(trace / vals.sum()) * root_hs
    elif noise == "top_eigenvector":
        root = np.sqrt(trace) * np.outer(vecs[:, -1], vecs[:, -1])
    else:
        root = np.zeros((2, 2))
    escaped = np.full(S, -1)
    diverged = np.full(S, -1)
    rec, rec_steps = [], []
    if record_every:
        rec.append(W.copy())
        rec_steps.append(0)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            g = basin.grad(W)
            z = rng.standard_normal((S, 2))
            if noise in ("isotropic", "hessian", "top_eigenvector"):
                g = g + z @ root.T
            elif noise == "sgd_like":
                scale = np.sqrt(np.maximum(2 * basin.loss(W), 0.0) / B)
                g = g + scale[:, None] * (z @ root_hs.T)
            new = W - eta * g
            ok = np.isfinite(new).all(1) & (diverged < 0)
            diverged[~ok & (diverged < 0)] = t + 1
            W = np.where(ok[:, None], new, W)
            out = ok & ~basin.in_sharp_basin(W) & (escaped < 0)
            escaped[out] = t + 1
            if record_every and ((t + 1) % record_every == 0 or t + 1 == steps):
                rec.append(W.copy())
                rec_steps.append(t + 1)
    return {"escaped_at": escaped, "diverged_at": diverged, "final": W,
            "paths": np.stack(rec) if rec else None, "steps": np.array(rec_steps)}
