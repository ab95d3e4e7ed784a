"""Numerics of chapter 2, *The covariance of minibatch noise*: the covariance of minibatch noise and the one-step loss expansion.

Chapter 2 proves that a minibatch gradient g_b = (1/B) Σ_{i∈b} g_i has mean ∇L
and covariance Σ_B = c(n, B) Σ₁ (:func:`noisegeom.batch_noise_factor`), and that
one SGD step θ⁺ = θ − η(∇L + ξ), E ξ = 0, E ξξᵀ = Σ, changes the loss by

    E[L(θ⁺)] = L − η‖∇L‖² + (η²/2) ∇LᵀH∇L + (η²/2) Tr(ΣH) + O(η³),

with equality (no remainder) when L is quadratic. The functions here

* measure how fast the empirical covariance of real minibatch gradients
  converges to Σ_B (:func:`covariance_error`), through n×n Gram matrices;
* evaluate the expansion (:func:`one_step_expansion`, :func:`noise_loss_term`)
  and estimate the left-hand side by Monte Carlo over many real minibatches or
  Gaussian noise (:func:`one_step_excess`), vectorised over draws;
* describe the shape of the noise: spectra of Σ₁ and G
  (:func:`noise_spectra`), the share of Tr Σ carried by a set of directions
  (:func:`captured_fraction`) and the covariance ellipse of a 2-D projection
  (:func:`covariance_ellipse`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch.func import grad, vmap

from .._checks import DTYPE, as_tensor, check_batch_size, check_int, check_positive
from ..autodiff import _check_inputs, _sample_loss, per_sample_gradients
from ..noise import batch_noise_factor, sample_batches

__all__ = [
    "batch_weights",
    "covariance_error",
    "OneStepTerms",
    "one_step_expansion",
    "noise_loss_term",
    "losses_at",
    "one_step_excess",
    "NoiseSpectra",
    "noise_spectra",
    "captured_fraction",
    "covariance_ellipse",
]

NOISE_KINDS = ("minibatch", "gaussian", "isotropic")


def _grads(grads) -> torch.Tensor:
    g = as_tensor(grads, "grads", ndim=2)
    if g.shape[0] < 2:
        raise ValueError(f"grads must have at least 2 rows (samples), got shape {tuple(g.shape)}")
    return g


def batch_weights(indices, n: int) -> torch.Tensor:
    """Sample weights of minibatches: w_{m,i} = (times sample i is in batch m) / B.

    A minibatch gradient is then g_b = Σ_i w_{b,i} g_i, and its noise
    ξ_b = g_b − ∇L = Σ_i w_{b,i} (g_i − ∇L) because Σ_i w_{b,i} = 1.

    Parameters
    ----------
    indices : integer array, shape (M, B)
        Batches as rows of sample indices, e.g. from :func:`noisegeom.sample_batches`.
    n : int
        Number of samples.

    Returns
    -------
    torch.Tensor, shape (M, n)
    """
    n = check_int(n, "n", low=1)
    idx = torch.as_tensor(indices)
    if idx.ndim != 2 or idx.dtype.is_floating_point:
        raise ValueError(f"indices must be a 2-D integer array (batches × B), got shape {tuple(idx.shape)} "
                         f"and dtype {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"indices must lie in 0..{n - 1}")
    M, B = idx.shape
    W = torch.zeros(M, n, dtype=DTYPE)
    W.scatter_add_(1, idx.long(), torch.full((M, B), 1.0 / B, dtype=DTYPE))
    return W


def covariance_error(grads, batch_size: int, draws, *, replacement: bool = False, n_seeds: int = 8,
                     seed: int = 0):
    """Relative error of the Monte-Carlo covariance of real minibatch gradients (chapter 2).

    For M i.i.d. minibatches with noise ξ_m = g_{b_m} − ∇L, the estimate
    Ŝ_M = (1/M) Σ_m ξ_m ξ_mᵀ (the mean ∇L is known exactly) is unbiased for
    Σ_B, and chapter 2 shows

        E‖Ŝ_M − Σ_B‖_F² = (E‖ξ‖⁴ − ‖Σ_B‖_F²) / M,

    so the relative error decays like M^{-1/2}. Everything is computed with
    n×n matrices: with C the centred per-sample gradients, K = CCᵀ, and the
    batch weights W (M×n, :func:`batch_weights`), Ŝ_M − Σ_B = Cᵀ A C with
    A = WᵀW/M − (c/n) I, so ‖Ŝ_M − Σ_B‖_F² = Tr(AKAK) and no p×p matrix is formed.

    Parameters
    ----------
    grads : array, shape (n, p)
        Per-sample gradients g_i.
    batch_size : int
        B.
    draws : sequence of int
        Increasing numbers of minibatches M at which to report the error
        (the estimates are nested: the first M of the largest sample).
    replacement : bool
        Sampling scheme.
    n_seeds : int
        Independent repetitions.
    seed : int

    Returns
    -------
    errors : numpy.ndarray, shape (n_seeds, len(draws))
        ‖Ŝ_M − Σ_B‖_F / ‖Σ_B‖_F.
    predicted : numpy.ndarray, shape (len(draws),)
        √((E‖ξ‖⁴ − ‖Σ_B‖_F²)/M) / ‖Σ_B‖_F, the root-mean-square error of the
        lemma, with E‖ξ‖⁴ estimated by the average of ‖ξ_m‖⁴ over all draws and seeds.
    """
    g = _grads(grads)
    n = g.shape[0]
    B = check_batch_size(batch_size, n)
    draws = np.asarray(draws)
    if draws.ndim != 1 or draws.size == 0 or not np.issubdtype(draws.dtype, np.integer):
        raise ValueError(f"draws must be a non-empty 1-D sequence of integers, got {draws!r}")
    if (draws < 1).any() or (np.diff(draws) <= 0).any():
        raise ValueError("draws must be positive and strictly increasing")
    S = check_int(n_seeds, "n_seeds", low=1)
    c = batch_noise_factor(n, B, replacement=replacement)
    if c == 0:
        raise ValueError("Σ_B = 0 (batch_size = n without replacement): the relative error is undefined")
    C = g - g.mean(0)
    K = C @ C.T
    fro2 = (c / n) ** 2 * float((K * K).sum())
    if fro2 == 0:
        raise ValueError("Σ₁ = 0 (all per-sample gradients are equal): the relative error is undefined")
    Mmax = int(draws[-1])
    gen = torch.Generator().manual_seed(int(seed))
    errors = np.empty((S, draws.size))
    fourth = 0.0
    eye = torch.eye(n, dtype=DTYPE)
    for s in range(S):
        W = batch_weights(sample_batches(n, B, Mmax, replacement=replacement, generator=gen), n)
        sq = ((W @ K) * W).sum(1)                     # ‖ξ_m‖² = w_mᵀ K w_m
        fourth += float((sq ** 2).sum())
        prev, acc = 0, torch.zeros(n, n, dtype=DTYPE)
        for j, M in enumerate(draws):
            Wm = W[prev:M]
            acc += Wm.T @ Wm
            prev = M
            AK = (acc / M - (c / n) * eye) @ K
            errors[s, j] = math.sqrt(max(float((AK * AK.T).sum()), 0.0) / fro2)
    m4 = fourth / (S * Mmax)
    predicted = np.sqrt(max(m4 - fro2, 0.0) / draws / fro2)
    return errors, predicted


@dataclass
class OneStepTerms:
    """The terms of E[L(θ⁺)] for θ⁺ = θ − η(∇L + ξ) (chapter 2).

    Attributes
    ----------
    loss : float
        L(θ).
    descent : float
        −η ‖∇L‖².
    curvature : float
        (η²/2) ∇LᵀH∇L, the curvature penalty that GD pays too.
    noise : float
        (η²/2) Tr(ΣH), the only place where the noise enters.
    expected : float
        Their sum: E[L(θ⁺)] exactly for a quadratic, up to O(η³) otherwise.
    """

    loss: float
    descent: float
    curvature: float
    noise: float

    @property
    def expected(self) -> float:
        return self.loss + self.descent + self.curvature + self.noise


def _square(M, name: str) -> torch.Tensor:
    t = as_tensor(M, name, ndim=2)
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    return t


def one_step_expansion(loss: float, gradient, hessian, noise_cov, eta: float) -> OneStepTerms:
    """E[L(θ⁺)] = L − η‖∇L‖² + (η²/2)∇LᵀH∇L + (η²/2)Tr(ΣH), term by term (chapter 2).

    Exact when L is quadratic with Hessian H; a second-order expansion otherwise.

    Parameters
    ----------
    loss : float
        L(θ).
    gradient : array, shape (p,)
        ∇L(θ).
    hessian : array, shape (p, p)
        H = ∇²L(θ).
    noise_cov : array, shape (p, p)
        Σ, the covariance of the gradient noise ξ (Σ_B for minibatch SGD).
    eta : float
        Learning rate.
    """
    gr = as_tensor(gradient, "gradient", ndim=1)
    H = _square(hessian, "hessian")
    Sig = _square(noise_cov, "noise_cov")
    p = gr.numel()
    if H.shape[0] != p or Sig.shape[0] != p:
        raise ValueError(f"hessian and noise_cov must be ({p}, {p}) like the gradient, got "
                         f"{tuple(H.shape)} and {tuple(Sig.shape)}")
    eta = check_positive(eta, "eta")
    loss = float(loss)
    if not math.isfinite(loss):
        raise ValueError(f"loss must be finite, got {loss}")
    return OneStepTerms(loss=loss, descent=-eta * float(gr @ gr),
                        curvature=0.5 * eta ** 2 * float(gr @ H @ gr),
                        noise=0.5 * eta ** 2 * float((Sig * H.T).sum()))


def _apply(hessian, V: torch.Tensor) -> torch.Tensor:
    """H @ V for a dense matrix or a LinearOperator."""
    p = V.shape[0]
    if isinstance(hessian, LinearOperator):
        if hessian.shape != (p, p):
            raise ValueError(f"hessian must have shape ({p}, {p}), got {hessian.shape}")
        return torch.as_tensor(np.asarray(hessian @ V.numpy()), dtype=DTYPE)
    H = _square(hessian, "hessian")
    if H.shape[0] != p:
        raise ValueError(f"hessian must have shape ({p}, {p}), got {tuple(H.shape)}")
    return H @ V


def noise_loss_term(grads, hessian, eta: float, *, batch_size: int, replacement: bool = False,
                    noise: str = "minibatch") -> float:
    """(η²/2) Tr(ΣH), the noise term of the one-step expansion, without forming Σ (chapter 2).

    For ``noise='minibatch'`` or ``'gaussian'`` Σ = Σ_B = c Σ₁ and
    Tr(Σ₁H) = (1/n) Σ_i g_iᵀHg_i − ∇LᵀH∇L (n + 1 products with H). For
    ``'isotropic'`` Σ = (Tr Σ_B / p) I and Tr(ΣH) = Tr Σ_B · Tr H / p
    (p products with H when ``hessian`` is an operator).

    Parameters
    ----------
    grads : array, shape (n, p)
        Per-sample gradients at θ.
    hessian : array (p, p) or LinearOperator
        H at θ, e.g. :func:`noisegeom.hessian_operator`.
    eta : float
    batch_size : int
    replacement : bool
    noise : {'minibatch', 'gaussian', 'isotropic'}
    """
    g = _grads(grads)
    n, p = g.shape
    eta = check_positive(eta, "eta")
    c = batch_noise_factor(n, check_batch_size(batch_size, n), replacement=replacement)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    gbar = g.mean(0)
    if noise == "isotropic":
        C = g - gbar
        tr_sigma = c * float((C * C).sum()) / n
        if isinstance(hessian, LinearOperator):
            eye = torch.eye(p, dtype=DTYPE)
            tr_H = sum(float(torch.diagonal(_apply(hessian, eye[:, j:j + 256])[j:j + 256]).sum())
                       for j in range(0, p, 256))
        else:
            H = _square(hessian, "hessian")
            if H.shape[0] != p:
                raise ValueError(f"hessian must have shape ({p}, {p}), got {tuple(H.shape)}")
            tr_H = float(torch.trace(H))
        return 0.5 * eta ** 2 * tr_sigma * tr_H / p
    cols = torch.cat([g.T, gbar[:, None]], dim=1)
    HC = _apply(hessian, cols)
    tr = float((cols[:, :-1] * HC[:, :-1]).sum()) / n - float(cols[:, -1] @ HC[:, -1])
    return 0.5 * eta ** 2 * c * tr


def losses_at(model, thetas, X, y, *, loss: str = "mse", chunk_size: int = 2048) -> torch.Tensor:
    """L(θ_m) for many parameter vectors at once (rows of ``thetas``), vectorised with vmap.

    Returns
    -------
    torch.Tensor, shape (M,)
    """
    _, X, y = _check_inputs(model, model.theta0, X, y, loss)
    T = as_tensor(thetas, "thetas", ndim=2)
    if T.shape[1] != model.p:
        raise ValueError(f"thetas must have p = {model.p} columns, got shape {tuple(T.shape)}")
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    ell = _sample_loss(model, loss)

    def full(theta):
        return vmap(ell, in_dims=(None, 0, 0))(theta, X, y).mean()

    batched = vmap(full)
    return torch.cat([batched(T[i:i + chunk_size]) for i in range(0, T.shape[0], chunk_size)])


def one_step_excess(model, theta, X, y, eta: float, *, batch_size: int, replacement: bool = False,
                    noise: str = "minibatch", num_draws: int = 4000, seed: int = 0,
                    control_variate: bool = True, loss: str = "mse") -> tuple[float, float]:
    """Monte-Carlo estimate of E[L(θ − η(∇L + ξ))] − L(θ − η∇L), the excess loss of one noisy step.

    The second-order expansion (chapter 2) predicts (η²/2) Tr(ΣH)
    (:func:`noise_loss_term`), exactly for a quadratic loss.

    Parameters
    ----------
    model : FlatModel
    theta : array, shape (p,)
    X, y : arrays
        The n training samples.
    eta : float
    batch_size : int
        B.
    replacement : bool
        Sampling scheme of the minibatches (and the factor c(n, B) for Gaussian noise).
    noise : {'minibatch', 'gaussian', 'isotropic'}
        ξ from real minibatches g_b − ∇L; Gaussian ξ ~ N(0, Σ_B); or isotropic
        Gaussian ξ ~ N(0, (Tr Σ_B/p) I) with the same trace.
    num_draws : int
        Number of noise draws M.
    seed : int
    control_variate : bool
        Subtract −η ∇L(θ_GD)ᵀξ, θ_GD = θ − η∇L, from every sample. Its mean is
        exactly zero, so the estimate stays unbiased, but it removes the
        first-order fluctuation and shrinks the standard error by a factor ~1/η.
    loss : {'mse', 'cross_entropy'}

    Returns
    -------
    (mean, standard_error) : tuple of float
    """
    theta, X, y = _check_inputs(model, theta, X, y, loss)
    eta = check_positive(eta, "eta")
    M = check_int(num_draws, "num_draws", low=2)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    g = per_sample_gradients(model, theta, X, y, loss=loss)
    n, p = g.shape
    B = check_batch_size(batch_size, n)
    gbar = g.mean(0)
    gen = torch.Generator().manual_seed(int(seed))
    c = batch_noise_factor(n, B, replacement=replacement)
    C = g - gbar
    if noise == "minibatch":
        xi = batch_weights(sample_batches(n, B, M, replacement=replacement, generator=gen), n) @ C
    elif noise == "gaussian":
        z = torch.randn(M, n, generator=gen, dtype=DTYPE)
        xi = math.sqrt(c / n) * (z @ C)
    else:
        tr = c * float((C * C).sum()) / n
        xi = math.sqrt(tr / p) * torch.randn(M, p, generator=gen, dtype=DTYPE)
    theta_gd = theta - eta * gbar
    vals = losses_at(model, theta_gd[None, :] - eta * xi, X, y, loss=loss) - losses_at(
        model, theta_gd[None, :], X, y, loss=loss)[0]
    if control_variate:
        ell = _sample_loss(model, loss)
        g_gd = grad(lambda t: vmap(ell, in_dims=(None, 0, 0))(t, X, y).mean())(theta_gd)
        vals = vals + eta * (xi @ g_gd)
    return float(vals.mean()), float(vals.std() / math.sqrt(M))


@dataclass
class NoiseSpectra:
    """Eigen-decompositions of Σ₁ and G at one point (dense; small p).

    Attributes
    ----------
    sigma_values, G_values : numpy.ndarray, shape (p,)
        Eigenvalues, largest first (tiny negative round-off clipped to 0).
    sigma_vectors, G_vectors : numpy.ndarray, shape (p, p)
        Orthonormal eigenvectors as columns, in the same order.
    loss : float
        L(θ), so that 2L·G can be compared with Σ₁.
    gradient : numpy.ndarray, shape (p,)
        ∇L(θ).
    """

    sigma_values: np.ndarray
    sigma_vectors: np.ndarray
    G_values: np.ndarray
    G_vectors: np.ndarray
    loss: float
    gradient: np.ndarray

    @property
    def p(self) -> int:
        return self.sigma_values.size

    def isotropic_level(self) -> float:
        """Each eigenvalue of isotropic noise with the trace of Σ₁: Tr Σ₁ / p."""
        return float(self.sigma_values.sum() / self.p)


def noise_spectra(grads, factor, *, loss: float | None = None, max_p: int = 4096) -> NoiseSpectra:
    """Spectra of Σ₁ = (1/n) Σ g_i g_iᵀ − ∇L∇Lᵀ and G = AᵀA/n by dense ``eigh`` (chapter 2).

    Parameters
    ----------
    grads : array, shape (n, p)
        Per-sample gradients.
    factor : array, shape (n·k, p)
        Gauss–Newton factor A (J for the scalar square loss).
    loss : float, optional
        L(θ); stored for comparisons with 2L·G. Defaults to nan.
    max_p : int
        Refuse larger p (the p×p matrices would be too big).
    """
    g = _grads(grads)
    A = as_tensor(factor, "factor", ndim=2)
    n, p = g.shape
    if A.shape[1] != p:
        raise ValueError(f"factor must have p = {p} columns like grads, got shape {tuple(A.shape)}")
    if A.shape[0] % n:
        raise ValueError(f"factor must have a multiple of n = {n} rows, got {A.shape[0]}")
    if p > check_int(max_p, "max_p", low=1):
        raise ValueError(f"noise_spectra forms p×p matrices; p = {p} > max_p = {max_p}")
    C = g - g.mean(0)
    ws, Us = torch.linalg.eigh(C.T @ C / n)
    wg, Ug = torch.linalg.eigh(A.T @ A / n)
    flip = slice(None, None, -1)
    return NoiseSpectra(sigma_values=ws.numpy()[flip].clip(min=0).copy(),
                        sigma_vectors=Us.numpy()[:, flip].copy(),
                        G_values=wg.numpy()[flip].clip(min=0).copy(), G_vectors=Ug.numpy()[:, flip].copy(),
                        loss=float("nan") if loss is None else float(loss),
                        gradient=g.mean(0).numpy())


def captured_fraction(sigma, basis) -> np.ndarray:
    """Cumulative share of Tr Σ carried by the first k columns of an orthonormal basis.

    f_k = Σ_{j≤k} u_jᵀ Σ u_j / Tr Σ, k = 1..K. For the top eigenvectors of Σ
    itself this is the largest possible share (Ky Fan); for isotropic noise
    f_k = k/p in every basis (chapter 2).

    Parameters
    ----------
    sigma : array, shape (p, p)
        A covariance (symmetric positive semi-definite).
    basis : array, shape (p, K)
        Orthonormal columns u_1..u_K.

    Returns
    -------
    numpy.ndarray, shape (K,)
    """
    S = _square(sigma, "sigma")
    U = as_tensor(basis, "basis", ndim=2)
    if U.shape[0] != S.shape[0]:
        raise ValueError(f"basis must have p = {S.shape[0]} rows, got shape {tuple(U.shape)}")
    if not torch.allclose(U.T @ U, torch.eye(U.shape[1], dtype=DTYPE), atol=1e-8):
        raise ValueError("basis must have orthonormal columns (UᵀU = I)")
    tr = float(torch.trace(S))
    if not tr > 0:
        raise ValueError(f"sigma must have a positive trace, got {tr}")
    return (torch.cumsum(((S @ U) * U).sum(0), 0) / tr).numpy()


def covariance_ellipse(cov, *, radius: float = 1.0, center=(0.0, 0.0), num: int = 200) -> np.ndarray:
    """Points of the ellipse {x : (x − m)ᵀ Σ⁻¹ (x − m) = r²} of a 2×2 covariance Σ.

    For Gaussian noise the r = 1 and r = 2 ellipses hold about 39% and 86% of
    the draws (1 − e^{−r²/2}).

    Returns
    -------
    numpy.ndarray, shape (num, 2)
    """
    S = _square(cov, "cov").numpy()
    if S.shape != (2, 2):
        raise ValueError(f"cov must be 2×2, got shape {S.shape}")
    if not np.allclose(S, S.T, rtol=1e-10, atol=1e-14 * max(np.abs(S).max(), 1e-300)):
        raise ValueError("cov must be symmetric")
    w, U = np.linalg.eigh(S)
    if w[0] < 0:
        raise ValueError("cov must be positive semi-definite")
    radius = check_positive(radius, "radius")
    num = check_int(num, "num", low=3)
    m = as_tensor(center, "center", ndim=1).numpy()
    if m.shape != (2,):
        raise ValueError(f"center must have 2 entries, got shape {m.shape}")
    t = np.linspace(0, 2 * np.pi, num)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    return m + radius * (circle * np.sqrt(w)) @ U.T
