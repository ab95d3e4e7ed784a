"""Tests of noisegeom.noise: Σ₁ and Σ_B against exact enumeration and Monte Carlo over real minibatches."""

import itertools
from math import comb

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import DT, cov_within, dense_sigma1


def _grads(n=7, p=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a non-zero mean and unequal scales, so that Σ₁ ≠ second moment and entries differ
    return torch.randn(n, p, generator=g, dtype=DT) * torch.tensor([1.0, 2.0, 0.5][:p], dtype=DT) + 0.7


def test_batch_noise_factor_closed_forms():
    for n in (1, 2, 5, 40):
        for B in range(1, n + 1):
            assert ng.batch_noise_factor(n, B, replacement=True) == pytest.approx(1.0 / B, rel=1e-15)
            want = 0.0 if n == 1 else (n - B) / (B * (n - 1))
            assert ng.batch_noise_factor(n, B) == pytest.approx(want, rel=1e-15, abs=0)
        # B = 1 (n ≥ 2): both schemes draw one uniform sample; B = n without replacement is GD
        if n >= 2:
            assert ng.batch_noise_factor(n, 1) == pytest.approx(1.0, rel=1e-15)
        assert ng.batch_noise_factor(n, n, replacement=False) == 0.0
    # without replacement is never noisier than with replacement
    assert all(ng.batch_noise_factor(30, B) <= ng.batch_noise_factor(30, B, replacement=True) for B in range(1, 31))


@pytest.mark.parametrize("n,B", [(6, 1), (6, 2), (6, 3), (5, 5)])
@pytest.mark.parametrize("replacement", [False, True])
def test_sigma_B_equals_exact_enumeration_of_all_minibatches(n, B, replacement):
    """Average over EVERY possible batch (all B-subsets, or all n^B ordered tuples): exact, no randomness."""
    grads = _grads(n, 3, seed=n + B)
    g = grads.numpy()
    batches = (itertools.product(range(n), repeat=B) if replacement else itertools.combinations(range(n), B))
    means = np.array([g[list(b)].mean(0) for b in batches])
    assert len(means) == (n ** B if replacement else comb(n, B))
    gbar = g.mean(0)
    assert np.allclose(means.mean(0), gbar, rtol=0, atol=1e-13)          # unbiased
    exact = (means - gbar).T @ (means - gbar) / len(means)
    got = ng.noise_covariance(grads, batch_size=B, replacement=replacement).numpy()
    assert np.abs(got - exact).max() <= 1e-12 * max(np.abs(exact).max(), 1.0)


def test_noise_covariance_matches_termwise_sum():
    grads = _grads(9, 3, seed=1)
    ref = dense_sigma1(grads)
    S1 = ng.noise_covariance(grads).numpy()
    assert np.abs(S1 - ref).max() < 1e-13 * np.abs(ref).max()
    assert np.allclose(S1, S1.T, atol=0)
    assert np.linalg.eigvalsh(S1).min() > -1e-12   # a covariance
    # Σ_B is the factor times Σ₁
    for B, rep in [(3, False), (3, True), (9, False)]:
        c = ng.batch_noise_factor(9, B, replacement=rep)
        assert np.allclose(ng.noise_covariance(grads, batch_size=B, replacement=rep).numpy(), c * ref,
                           rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size,replacement", [(None, False), (4, False), (4, True)])
def test_noise_covariance_operator_matches_dense(batch_size, replacement):
    grads = _grads(9, 3, seed=2)
    dense = ng.noise_covariance(grads, batch_size=batch_size, replacement=replacement).numpy()
    op = ng.noise_covariance_operator(grads, batch_size=batch_size, replacement=replacement)
    assert op.shape == (3, 3)
    V = np.random.default_rng(0).standard_normal((3, 4))
    assert np.allclose(op @ V, dense @ V, rtol=1e-13, atol=1e-13)
    assert np.allclose(op.matvec(V[:, 0]).ravel(), dense @ V[:, 0], rtol=1e-13, atol=1e-13)
    assert np.allclose(op.rmatvec(V[:, 1]).ravel(), dense @ V[:, 1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("replacement", [False, True])
def test_minibatch_gradients_covariance_is_sigma_B_monte_carlo(replacement):
    """Real minibatches: empirical covariance within 5 standard errors of Σ_B, entrywise.

    The minibatch mean is exactly ∇L, so the estimator (1/N) Σ (b − ∇L)(b − ∇L)ᵀ is unbiased
    and each of its entries is a mean of N i.i.d. products; its standard error comes from
    the fourth moments of the same draws (see _fixtures.cov_within). N = 40000 draws.
    """
    n, B, N = 8, 3, 40000
    grads = _grads(n, 3, seed=3)
    gbar = grads.mean(0).numpy()
    draws = ng.minibatch_gradients(grads, B, N, replacement=replacement, seed=123).numpy()
    assert draws.shape == (N, 3)
    SB = ng.noise_covariance(grads, batch_size=B, replacement=replacement).numpy()
    ok, z, C = cov_within(draws, gbar, SB)
    assert ok, f"max |C_hat - Sigma_B| = {z:.2f} standard errors"
    # the mean is ∇L within 5 standard errors
    se_mean = draws.std(0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(draws.mean(0) - gbar) <= 5 * se_mean)
    # power: the other scheme's factor (1/3 vs 5/21 here) is rejected by the same criterion
    other = ng.noise_covariance(grads, batch_size=B, replacement=not replacement).numpy()
    ok_other, z_other, _ = cov_within(draws, gbar, other)
    assert not ok_other and z_other > 10


def test_minibatch_gradients_full_batch_without_replacement_is_gd():
    grads = _grads(6, 3, seed=4)
    draws = ng.minibatch_gradients(grads, 6, 5, replacement=False, seed=0)
    assert torch.allclose(draws, grads.mean(0).expand(5, 3), rtol=0, atol=1e-14)


def test_sample_batches_without_replacement_distinct_and_uniform():
    n, B, N = 10, 4, 20000
    idx = ng.sample_batches(n, B, N, replacement=False, seed=7).numpy()
    assert idx.shape == (N, B) and idx.min() >= 0 and idx.max() < n
    srt = np.sort(idx, axis=1)
    assert (np.diff(srt, axis=1) > 0).all(), "a batch drawn without replacement repeats an index"
    # marginal: each index is in a batch with probability B/n, independently across batches,
    # so its count is Binomial(N, B/n); allow 5 binomial standard deviations
    counts = np.bincount(idx.ravel(), minlength=n)
    q = B / n
    assert np.all(np.abs(counts - N * q) <= 5 * np.sqrt(N * q * (1 - q)))
    # a uniform B-subset also has pair inclusion probability B(B−1)/(n(n−1)) for every pair
    inc = np.zeros((N, n), dtype=bool)
    inc[np.arange(N)[:, None], idx] = True
    pair = (inc[:, :, None] & inc[:, None, :]).sum(0)
    q2 = B * (B - 1) / (n * (n - 1))
    off = ~np.eye(n, dtype=bool)
    assert np.all(np.abs(pair[off] - N * q2) <= 5 * np.sqrt(N * q2 * (1 - q2)))


def test_sample_batches_with_replacement_iid_uniform():
    n, B, N = 6, 3, 20000
    idx = ng.sample_batches(n, B, N, replacement=True, seed=8).numpy()
    assert idx.shape == (N, B) and idx.min() >= 0 and idx.max() < n
    counts = np.bincount(idx.ravel(), minlength=n)
    m = N * B
    assert np.all(np.abs(counts - m / n) <= 5 * np.sqrt(m * (1 / n) * (1 - 1 / n)))
    # repeats happen: P(all B distinct) = n(n−1)(n−2)/n³ = 5/9 here
    distinct = (np.diff(np.sort(idx, 1), axis=1) > 0).all(1).mean()
    q = n * (n - 1) * (n - 2) / n ** 3
    assert abs(distinct - q) <= 5 * np.sqrt(q * (1 - q) / N)


def test_sample_batches_reproducible():
    a = ng.sample_batches(9, 3, 5, seed=1)
    assert torch.equal(a, ng.sample_batches(9, 3, 5, seed=1))
    assert not torch.equal(a, ng.sample_batches(9, 3, 5, seed=2))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(ng.sample_batches(9, 3, 5, generator=g1, replacement=True),
                       ng.sample_batches(9, 3, 5, generator=g2, replacement=True))
