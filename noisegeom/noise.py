"""The exact covariance of minibatch SGD noise.

With per-sample gradients g_i and full gradient ∇L = (1/n) Σ g_i, the
one-sample noise covariance is

    Σ₁ = (1/n) Σ_i g_i g_iᵀ − ∇L ∇Lᵀ,

and a minibatch of size B has noise covariance Σ_B = c(n, B) Σ₁ with
c = 1/B (sampling with replacement) or c = (n − B) / (B (n − 1)) (without
replacement). Chapter 2 derives both factors.

Devices: everything is computed on the device of ``grads`` (CUDA when they are there); the
operator's products take and return numpy arrays and move each block of vectors there and back.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ._checks import as_tensor, check_batch_size, check_bool, check_int, check_seed, seeded_generator

__all__ = [
    "batch_noise_factor",
    "noise_covariance",
    "noise_covariance_operator",
    "sample_batches",
    "minibatch_gradients",
]


def batch_noise_factor(n: int, batch_size: int, *, replacement: bool = False) -> float:
    """The factor c(n, B) in Σ_B = c Σ₁ (chapter 2).

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        B, between 1 and n.
    replacement : bool
        Sample the batch with replacement (c = 1/B) or without
        (c = (n − B) / (B (n − 1)); c = 0 at B = n, plain GD).
    """
    n = check_int(n, "n", low=1)
    B = check_batch_size(batch_size, n)
    if check_bool(replacement, "replacement"):
        return 1.0 / B
    if n == 1:
        return 0.0
    return (n - B) / (B * (n - 1))


def _grads(grads) -> torch.Tensor:
    g = as_tensor(grads, "grads", ndim=2)
    if g.shape[0] < 1:
        raise ValueError("grads must have at least one row")
    return g


def noise_covariance(grads, *, batch_size: int | None = None, replacement: bool = False) -> torch.Tensor:
    """Dense Σ₁ (or Σ_B when ``batch_size`` is given), shape (p, p), on the device of ``grads``.

    Builds a p×p matrix: meant for small p and for tests. Use
    :func:`noise_covariance_operator` or :class:`noisegeom.NoiseGeometry` otherwise.

    Parameters
    ----------
    grads : array, shape (n, p)
        Per-sample gradients g_i as rows.
    batch_size : int, optional
        If given, return Σ_B = c(n, B) Σ₁.
    replacement : bool
        Sampling scheme for Σ_B.
    """
    g = _grads(grads)
    n = g.shape[0]
    centred = g - g.mean(0)
    sigma1 = centred.T @ centred / n
    if batch_size is None:
        return sigma1
    return batch_noise_factor(n, batch_size, replacement=replacement) * sigma1


def noise_covariance_operator(grads, *, batch_size: int | None = None,
                              replacement: bool = False) -> LinearOperator:
    """Σ₁ (or Σ_B) as a matrix-free ``scipy`` LinearOperator: v ↦ (1/n) Cᵀ(C v).

    C is the matrix of centred per-sample gradients, so a product costs
    O(n p) and no p×p matrix is formed. C stays on the device of ``grads``; each product moves
    its block of vectors there and the result back to the host (scipy works in numpy).
    """
    g = _grads(grads)
    n, p = g.shape
    centred = g - g.mean(0)
    c = 1.0 if batch_size is None else batch_noise_factor(n, batch_size, replacement=replacement)

    def matmat(V):
        V = torch.as_tensor(np.asarray(V, dtype=np.float64).reshape(p, -1), device=centred.device)
        return (c / n * (centred.T @ (centred @ V))).cpu().numpy()

    return LinearOperator((p, p), matvec=matmat, matmat=matmat, rmatvec=matmat, rmatmat=matmat,
                          dtype=np.float64)


def sample_batches(n: int, batch_size: int, num_batches: int, *, replacement: bool = False,
                   generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
    """Indices of ``num_batches`` independent minibatches, shape (num_batches, B).

    Without replacement each row holds B distinct indices (a uniformly random
    B-subset); with replacement the B indices are i.i.d. uniform. The indices are drawn on
    the generator's device (the CPU without one): a CUDA generator gives CUDA indices.
    """
    n = check_int(n, "n", low=1)
    B = check_batch_size(batch_size, n)
    num_batches = check_int(num_batches, "num_batches", low=1)
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else check_seed(seed))
    return _draw_batches(n, B, num_batches, check_bool(replacement, "replacement"), generator,
                         generator.device)


def _draw_batches(n: int, B: int, num_batches: int, replacement: bool, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """:func:`sample_batches` without checks, drawn on ``device`` (that of ``generator``)."""
    if replacement:
        return torch.randint(0, n, (num_batches, B), generator=generator, device=device)
    # the first B entries of a uniform random permutation form a uniform B-subset
    return torch.rand(num_batches, n, generator=generator, device=device).argsort(dim=1)[:, :B]


def minibatch_gradients(grads, batch_size: int, num_batches: int, *, replacement: bool = False,
                        seed: int = 0) -> torch.Tensor:
    """Gradients of real minibatches, (1/B) Σ_{i∈b} g_i, shape (num_batches, p).

    Their empirical covariance converges to Σ_B (tested in tests/toolbox/test_noise.py).
    The batches are drawn by a generator on the device of ``grads``.
    """
    g = _grads(grads)
    B = check_batch_size(batch_size, g.shape[0])
    num_batches = check_int(num_batches, "num_batches", low=1)
    replacement = check_bool(replacement, "replacement")
    idx = _draw_batches(g.shape[0], B, num_batches, replacement, seeded_generator(check_seed(seed), g.device),
                        g.device)
    return g[idx].mean(1)
