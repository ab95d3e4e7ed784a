"""Curvature as linear operators: Gauss–Newton and Hessian products, Lanczos, Hutchinson.

G = (1/n) JᵀJ (or the generalized Gauss–Newton AᵀA/n) and
H = G + (1/n) Σ_i e_i ∇²f_i are p×p; for a network p is large, so the book
works with products v ↦ Gv (two passes through J) and v ↦ Hv (forward-over-
reverse autodiff, ``jvp`` of ``grad``), and with their top eigenpairs from
Lanczos. Dense versions exist for small p and for tests.

Devices: the operators are scipy ``LinearOperator`` objects, so they take and return numpy
arrays on the host; each product moves its block of vectors to the device of the data the
operator was built from (the factor, or θ and X), computes there, and brings the result back.
Lanczos (ARPACK) runs on the host; only its products touch the device. Dense results
(:func:`~noisegeom.gauss_newton_matrix`, :func:`~noisegeom.hessian_matrix`) stay on the data's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import grad, hessian, jacrev, jvp, vmap

from ._checks import as_tensor, check_finite_result, check_int, check_seed, device_of, follow_device
from .autodiff import _check_inputs, _sample_loss
from .models import FlatModel

__all__ = [
    "gauss_newton_operator",
    "gauss_newton_matrix",
    "hessian_operator",
    "hessian_matrix",
    "Eigenpairs",
    "top_eigenpairs",
    "hutchinson",
    "hessian_spectra",
    "gauss_newton_spectra",
    "sharpness_summary",
]


def _as_operator(matmat, p: int, device: torch.device = torch.device("cpu")) -> LinearOperator:
    # the host round trip of a product: numpy block → device → matmat there → numpy
    def mm(V):
        V = np.asarray(V, dtype=np.float64)
        out = check_finite_result(matmat(torch.as_tensor(V.reshape(p, -1), device=device)),
                                  "a product of the operator",
                                  "the vector, or theta, X, y or the factor it was built from,").cpu()
        return out.numpy().reshape(V.shape) if V.ndim == 1 else out.numpy()

    return LinearOperator((p, p), matvec=mm, matmat=mm, rmatvec=mm, rmatmat=mm, dtype=np.float64)


def _factor(factor, n):
    A = as_tensor(factor, "factor", ndim=2)
    n = A.shape[0] if n is None else check_int(n, "n", low=1)
    if A.shape[0] % n:
        raise ValueError(f"factor has {A.shape[0]} rows, not a multiple of n = {n}")
    return A, n


def gauss_newton_operator(factor, *, n: int | None = None) -> LinearOperator:
    """G = AᵀA/n as a LinearOperator; two passes through A, no p×p matrix.

    Parameters
    ----------
    factor : array, shape (m, p)
        J (n×p) for a scalar square-loss model, or the output of
        :func:`noisegeom.ggn_factor` (m = n·k rows for k outputs). A tensor stays on its
        device (CUDA included), where every product is computed.
    n : int, optional
        Number of samples; defaults to m (right for scalar models).
    """
    A, n = _factor(factor, n)
    return _as_operator(lambda V: A.T @ (A @ V) / n, A.shape[1], A.device)


def gauss_newton_matrix(factor, *, n: int | None = None) -> torch.Tensor:
    """Dense G = AᵀA/n, shape (p, p), on the factor's device: for small p and tests."""
    A, n = _factor(factor, n)
    return check_finite_result(A.T @ A / n, "G = AᵀA/n", "the entries of factor")


def _full_loss(model, X, y, loss):
    ell = _sample_loss(model, loss)

    def L(theta):
        return vmap(ell, in_dims=(None, 0, 0))(theta, X, y).mean()

    return L


def hessian_operator(model, theta, X, y, *, loss: str = "mse", chunk_size: int = 32) -> LinearOperator:
    """H = ∇²L(θ) as a LinearOperator through Hessian-vector products.

    Each product is a ``jvp`` of ``grad`` (forward-over-reverse), costing a
    small multiple of one gradient; ``chunk_size`` products are vmapped together.
    They run on the device of X (θ and y are moved there; the model must be there too).
    """
    dev = device_of(X)
    theta, X, y = _check_inputs(model, follow_device(theta, dev), X, follow_device(y, dev), loss)
    gL = grad(_full_loss(model, X, y, loss))
    chunk_size = check_int(chunk_size, "chunk_size", low=1)

    def hvp(v):
        return jvp(gL, (theta,), (v,))[1]

    batched = vmap(hvp, chunk_size=chunk_size)

    def matmat(V):
        return batched(V.T.contiguous()).T

    return _as_operator(matmat, model.p, theta.device)


def hessian_matrix(model, theta, X, y, *, loss: str = "mse") -> torch.Tensor:
    """Dense Hessian ∇²L(θ), shape (p, p), by ``torch.func.hessian`` on the device of X: small p and tests."""
    dev = device_of(X)
    theta, X, y = _check_inputs(model, follow_device(theta, dev), X, follow_device(y, dev), loss)
    return torch.func.hessian(_full_loss(model, X, y, loss))(theta)


@dataclass
class Eigenpairs:
    """Top eigenpairs of a symmetric operator.

    Attributes
    ----------
    values : numpy.ndarray, shape (k,)
        Eigenvalues, largest (algebraic) first.
    vectors : numpy.ndarray, shape (p, k)
        Orthonormal eigenvectors as columns, sign fixed so the largest entry is positive.
    residuals : numpy.ndarray, shape (k,)
        ‖A u_j − λ_j u_j‖, the a-posteriori accuracy of each pair.
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray


def _to_operator(op) -> LinearOperator:
    if isinstance(op, LinearOperator):
        return op
    if isinstance(op, torch.Tensor) or isinstance(op, np.ndarray):
        M = as_tensor(op, "op", ndim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"op must be square, got shape {tuple(M.shape)}")
        return _as_operator(lambda V: M @ V, M.shape[0], M.device)
    raise TypeError(f"op must be a scipy LinearOperator or a square matrix, got {type(op).__name__}")


def _fix_signs(U):
    """Eigenvectors with the sign that makes the largest entry of each column positive.

    A numpy array, or a tensor (on its own device, with the same result: both take the first
    of tied largest entries, and a sign flip is exact)."""
    if isinstance(U, torch.Tensor):
        signs = torch.sign(U[U.abs().argmax(0), torch.arange(U.shape[1], device=U.device)])
        return U * torch.where(signs == 0, 1.0, signs)
    signs = np.sign(U[np.abs(U).argmax(0), np.arange(U.shape[1])])
    return U * np.where(signs == 0, 1.0, signs)


def top_eigenpairs(op, k: int = 1, *, tol: float = 1e-10, seed: int = 0,
                   dense_below: int = 64) -> Eigenpairs:
    """The k algebraically largest eigenpairs of a symmetric operator (Lanczos).

    Uses implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) with
    ``which='LA'`` — largest *algebraic*, not largest magnitude, so a Hessian
    with large negative eigenvalues does not report them as "sharpest" — and
    a seeded start vector. For p ≤ ``dense_below`` (or k ≥ p − 1) it forms the
    matrix and calls ``eigh``.

    Lanczos runs on the host; the products run where the operator's data lives (an operator
    from this module built on CUDA tensors, or a CUDA matrix ``op``, computes each product
    on the GPU), so the results are the same numpy arrays whatever the device.

    Parameters
    ----------
    op : LinearOperator or square matrix
        Symmetric, e.g. from :func:`hessian_operator` or :func:`gauss_newton_operator`.
    k : int
        Number of eigenpairs, 1 ≤ k ≤ p.
    tol : float
        Lanczos tolerance on the relative residual.
    seed : int
        Seed of the start vector.
    dense_below : int
        Dimension under which the dense route is used.

    Returns
    -------
    Eigenpairs
        numpy arrays on the host (pass ``vectors`` to the package's functions as they are:
        they move them to their data's device).
    """
    A = _to_operator(op)
    p = A.shape[0]
    k = check_int(k, "k", low=1, high=p)
    seed = check_seed(seed)
    if p <= dense_below or k >= p - 1:
        M = A @ np.eye(p)
        M = 0.5 * (M + M.T)
        w, U = np.linalg.eigh(M)
        w, U = w[::-1][:k].copy(), U[:, ::-1][:, :k].copy()
    else:
        v0 = np.random.default_rng(seed).standard_normal(p)
        w, U = eigsh(A, k=k, which="LA", v0=v0, tol=tol)
        order = np.argsort(w)[::-1]
        w, U = w[order], U[:, order]
    U = _fix_signs(U)
    res = np.linalg.norm(A @ U - U * w, axis=0)
    check_finite_result(np.concatenate([w, res]), "the eigenpairs", "the entries of op")
    return Eigenpairs(values=w, vectors=U, residuals=res)


def hutchinson(op, num_samples: int = 100, *, quantity: str = "trace", seed: int = 0):
    """Hutchinson estimate of Tr A or ‖A‖_F² with its standard error.

    With Rademacher z, E[zᵀAz] = Tr A and E[‖Az‖²] = ‖A‖_F². The standard
    error is the sample standard deviation over √num_samples.

    Returns
    -------
    (estimate, standard_error) : tuple of float
    """
    A = _to_operator(op)
    num_samples = check_int(num_samples, "num_samples", low=2)
    if quantity not in ("trace", "frobenius2"):
        raise ValueError(f"quantity must be 'trace' or 'frobenius2', got {quantity!r}")
    rng = np.random.default_rng(check_seed(seed))
    Z = rng.choice([-1.0, 1.0], size=(A.shape[0], num_samples))
    AZ = A @ Z
    samples = (Z * AZ).sum(0) if quantity == "trace" else (AZ * AZ).sum(0)
    check_finite_result(samples, f"the {quantity} samples", "the entries of op")
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(num_samples))


def hessian_spectra(model: FlatModel, thetas, X, y, *, loss: str = "mse", chunk: int = 32) -> np.ndarray:
    """All eigenvalues of ∇²L at each of many points, batched with ``vmap`` (chapters 7 and 8).

    Dense p×p Hessians: for small models (p up to a few hundred).

    Parameters
    ----------
    thetas : array, shape (S, p) or (p,)
    chunk : int
        Hessians formed at once.

    Returns
    -------
    numpy.ndarray, shape (S, p)
        Eigenvalues in increasing order (as ``eigvalsh``).
    """
    T = follow_device(_thetas(model, thetas), device_of(X))
    _, X, y = _check_inputs(model, T[0], X, follow_device(y, device_of(X)), loss)
    chunk = check_int(chunk, "chunk", low=1)
    ell = _sample_loss(model, loss)

    def L(theta):
        return vmap(ell, in_dims=(None, 0, 0))(theta, X, y).mean()

    hb = vmap(hessian(L))
    out = []
    for s in range(0, T.shape[0], chunk):
        Hs = check_finite_result(hb(T[s:s + chunk]), "the Hessian", "thetas, X or y")
        out.append(np.linalg.eigvalsh(0.5 * (Hs + Hs.transpose(1, 2)).cpu().numpy()))
    return np.concatenate(out, 0)


def _thetas(model, thetas) -> torch.Tensor:
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    T = as_tensor(thetas, "thetas", ndim=(1, 2))
    T = T[None] if T.ndim == 1 else T
    if T.shape[1] != model.p:
        raise ValueError(f"thetas must have p = {model.p} columns, got shape {tuple(T.shape)}")
    return T


def gauss_newton_spectra(model: FlatModel, thetas, X, *, chunk: int = 64) -> np.ndarray:
    """The eigenvalues of G = JᵀJ/n at each of many points, batched with ``vmap`` (chapter 8).

    G is p×p and the Gram matrix K = JJᵀ/n is nk×nk (k outputs); both have
    the same non-zero eigenvalues, so this forms whichever is smaller, from the
    Jacobian J(θ) ∈ R^{nk×p} of every point in ``chunk``-sized batches. At an
    interpolating minimum of the square loss G = H, so the last eigenvalue is
    the sharpness λ_max(H) there (chapter 8 tracks it along SGD runs).

    Parameters
    ----------
    thetas : array, shape (S, p) or (p,)
    X : array, shape (n, ...)
    chunk : int
        Points whose Jacobians are formed at once.

    Returns
    -------
    numpy.ndarray, shape (S, min(nk, p))
        Eigenvalues in increasing order (as ``eigvalsh``); a point with a
        non-finite Jacobian gets a row of nan.
    """
    T = follow_device(_thetas(model, thetas), device_of(X))
    _, X, _ = _check_inputs(model, T[0], X)                   # X must fit the model
    chunk = check_int(chunk, "chunk", low=1)
    n = X.shape[0]
    jac = vmap(jacrev(lambda theta: model.forward(theta, X).reshape(-1)))
    out = []
    for s in range(0, T.shape[0], chunk):
        J = jac(T[s:s + chunk])                                   # (s, nk, p)
        M = J.transpose(1, 2) @ J if J.shape[2] <= J.shape[1] else J @ J.transpose(1, 2)
        M = M / n
        ok = torch.isfinite(M).all(2).all(1)
        ev = torch.full(M.shape[:2], float("nan"), dtype=M.dtype, device=M.device)
        if ok.any():
            ev[ok] = torch.linalg.eigvalsh(M[ok])
        out.append(ev.cpu().numpy())
    return np.concatenate(out, 0)


def sharpness_summary(eigenvalues) -> dict:
    """λ_max, Frobenius norm and trace from the eigenvalues of H (or G), shape (..., p)."""
    ev = as_tensor(eigenvalues, "eigenvalues").cpu().numpy()
    if ev.ndim < 1 or ev.shape[-1] == 0:
        raise ValueError("eigenvalues must have a non-empty last axis")
    with np.errstate(over="ignore"):                      # an overflow is reported just below
        squares = (ev ** 2).sum(-1)
    check_finite_result(squares, "Σ λ²", "the eigenvalues")
    return {"lam_max": ev.max(-1), "frobenius": np.sqrt((ev ** 2).sum(-1)), "trace": ev.sum(-1)}
