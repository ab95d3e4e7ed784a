"""Tests of noisegeom.chapters.ch02_minibatch_noise (chapter 2, *The covariance of minibatch noise*).

Every function is checked against an independent route: exact enumeration of all
minibatches, dense p×p matrices, explicit loops, closed forms, or Monte Carlo with a
tolerance derived from the number of draws.
"""

import itertools
import math

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters.ch02_minibatch_noise import (batch_weights, captured_fraction, covariance_ellipse,
                                                     covariance_error, losses_at, noise_loss_term, noise_spectra,
                                                     one_step_excess, one_step_expansion)

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _all_batches(n, B, replacement):
    """Every equally likely minibatch: ordered tuples (with) or subsets (without replacement)."""
    if replacement:
        return [list(b) for b in itertools.product(range(n), repeat=B)]
    return [list(b) for b in itertools.combinations(range(n), B)]


@pytest.fixture(scope="module")
def quad():
    """Least squares (an exactly quadratic loss): linear model, n = 7, p = 4."""
    X = torch.randn(7, 4, dtype=DT, generator=_gen(1))
    y = torch.randn(7, dtype=DT, generator=_gen(2))
    model = ng.linear_model(4)
    theta = torch.randn(4, dtype=DT, generator=_gen(3))
    return model, theta, X, y


@pytest.fixture(scope="module")
def small_net():
    return ng.two_layer_task(d=4, width=6, n=12, seed=3)


# ----------------------------------------------------------------- batch_weights
def test_batch_weights_matches_loop():
    idx = ng.sample_batches(9, 4, 50, replacement=True, seed=0)
    W = batch_weights(idx, 9)
    for m in range(50):
        expect = np.zeros(9)
        for i in idx[m].tolist():
            expect[i] += 1 / 4
        assert np.allclose(W[m].numpy(), expect, atol=1e-15)
    assert torch.allclose(W.sum(1), torch.ones(50, dtype=DT))


def test_batch_weights_bad_inputs():
    with pytest.raises(ValueError, match="indices"):
        batch_weights(torch.zeros(3, 2), 5)            # float indices
    with pytest.raises(ValueError, match="indices"):
        batch_weights(torch.tensor([[0, 5]]), 5)       # out of range
    with pytest.raises(ValueError, match="indices"):
        batch_weights(torch.tensor([0, 1]), 5)         # 1-D
    with pytest.raises(ValueError, match="n"):
        batch_weights(torch.tensor([[0, 1]]), 0)


# ----------------------------------------------------------------- covariance_error
@pytest.mark.parametrize("replacement", [True, False])
def test_covariance_error_matches_dense_route(replacement):
    grads = torch.randn(10, 6, dtype=DT, generator=_gen(4))
    n, B, draws, seed = 10, 3, [5, 20, 80], 11
    err, _ = covariance_error(grads, B, draws, replacement=replacement, n_seeds=3, seed=seed)
    # redo the draws with the same generator and compute the errors with p×p matrices
    gen = _gen(seed)
    sigma_B = ng.noise_covariance(grads, batch_size=B, replacement=replacement)
    for s in range(3):
        idx = ng.sample_batches(n, B, draws[-1], replacement=replacement, generator=gen)
        xi = grads[idx].mean(1) - grads.mean(0)
        for j, M in enumerate(draws):
            S_hat = xi[:M].T @ xi[:M] / M
            expect = torch.linalg.norm(S_hat - sigma_B) / torch.linalg.norm(sigma_B)
            assert err[s, j] == pytest.approx(float(expect), rel=1e-9)


def test_covariance_error_follows_the_lemma():
    """E‖Ŝ_M − Σ_B‖² = (E‖ξ‖⁴ − ‖Σ_B‖²)/M with E‖ξ‖⁴ from exact enumeration (n = 6, B = 2)."""
    grads = torch.randn(6, 5, dtype=DT, generator=_gen(5))
    n, B, M, S = 6, 2, 10, 400
    batches = _all_batches(n, B, replacement=True)
    xi = torch.stack([grads[b].mean(0) for b in batches]) - grads.mean(0)
    m4 = float(((xi ** 2).sum(1) ** 2).mean())
    sigma_B = ng.noise_covariance(grads, batch_size=B, replacement=True)
    fro2 = float((sigma_B ** 2).sum())
    expect = (m4 - fro2) / M / fro2
    err, pred = covariance_error(grads, B, [M], replacement=True, n_seeds=S, seed=0)
    sq = err[:, 0] ** 2
    # mean of S i.i.d. squared errors: tolerance of 5 standard errors
    assert abs(sq.mean() - expect) < 5 * sq.std(ddof=1) / math.sqrt(S)
    # the plug-in prediction uses the sample fourth moment: same value up to sampling error
    assert pred[0] ** 2 == pytest.approx(expect, rel=0.1)


def test_covariance_error_bad_inputs():
    grads = torch.randn(5, 3, dtype=DT, generator=_gen(6))
    with pytest.raises(ValueError, match="draws"):
        covariance_error(grads, 2, [10, 5])
    with pytest.raises(ValueError, match="draws"):
        covariance_error(grads, 2, [1.5, 3.0])
    with pytest.raises(ValueError, match="batch_size"):
        covariance_error(grads, 6, [3])
    with pytest.raises(ValueError, match="batch_size = n"):
        covariance_error(grads, 5, [3], replacement=False)
    with pytest.raises(ValueError, match="grads"):
        covariance_error(grads[:1], 1, [3])
    with pytest.raises(ValueError, match="Σ₁ = 0"):
        covariance_error(torch.ones(5, 3, dtype=DT), 2, [3])
    with pytest.raises(ValueError, match="n_seeds"):
        covariance_error(grads, 2, [3], n_seeds=0)


# ----------------------------------------------------------------- the one-step expansion
@pytest.mark.parametrize("replacement", [True, False])
def test_one_step_expansion_exact_for_quadratic(quad, replacement):
    """E L(θ⁺) over *every* minibatch equals the expansion exactly for least squares."""
    model, theta, X, y = quad
    n, B, eta = 7, 3, 0.3
    grads = ng.per_sample_gradients(model, theta, X, y)
    exact = np.mean([ng.loss_value(model, theta - eta * grads[b].mean(0), X, y)
                     for b in _all_batches(n, B, replacement)])
    H = X.T @ X / n
    terms = one_step_expansion(ng.loss_value(model, theta, X, y), grads.mean(0), H,
                               ng.noise_covariance(grads, batch_size=B, replacement=replacement), eta)
    assert terms.expected == pytest.approx(exact, rel=1e-12)
    # GD is the ξ = 0 case, and the excess over it is the noise term alone
    gd = ng.loss_value(model, theta - eta * grads.mean(0), X, y)
    assert exact - gd == pytest.approx(terms.noise, rel=1e-10)
    assert terms.descent == pytest.approx(-eta * float(grads.mean(0) @ grads.mean(0)))


def test_one_step_expansion_is_second_order_for_a_network(small_net):
    """For a non-quadratic loss the error of the expansion shrinks like η³."""
    model, X, y, theta = small_net
    n, B = X.shape[0], 2
    grads = ng.per_sample_gradients(model, theta, X, y)
    H = ng.hessian_matrix(model, theta, X, y)
    sigma = ng.noise_covariance(grads, batch_size=B)
    batches = _all_batches(n, B, replacement=False)
    errs = []
    for eta in (0.04, 0.02):
        thetas = torch.stack([theta - eta * grads[b].mean(0) for b in batches])
        exact = float(losses_at(model, thetas, X, y).mean())
        errs.append(abs(exact - one_step_expansion(ng.loss_value(model, theta, X, y), grads.mean(0), H,
                                                   sigma, eta).expected))
    assert 5.0 < errs[0] / errs[1] < 12.0   # 2³ = 8 for a third-order remainder


def test_one_step_expansion_bad_inputs():
    g, H = torch.ones(3, dtype=DT), torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="hessian and noise_cov"):
        one_step_expansion(1.0, g, torch.eye(2, dtype=DT), H, 0.1)
    with pytest.raises(ValueError, match="hessian"):
        one_step_expansion(1.0, g, torch.ones(3, 2, dtype=DT), H, 0.1)
    with pytest.raises(ValueError, match="eta"):
        one_step_expansion(1.0, g, H, H, 0.0)
    with pytest.raises(ValueError, match="loss"):
        one_step_expansion(float("nan"), g, H, H, 0.1)


@pytest.mark.parametrize("replacement", [True, False])
def test_noise_loss_term_against_dense(small_net, replacement):
    model, X, y, theta = small_net
    grads = ng.per_sample_gradients(model, theta, X, y)
    H = ng.hessian_matrix(model, theta, X, y)
    op = ng.hessian_operator(model, theta, X, y)
    B, eta, p = 3, 0.2, model.p
    sigma = ng.noise_covariance(grads, batch_size=B, replacement=replacement)
    expect = 0.5 * eta ** 2 * float(torch.trace(sigma @ H))
    for hess in (H, op):
        assert noise_loss_term(grads, hess, eta, batch_size=B, replacement=replacement) == pytest.approx(expect, rel=1e-10)
        assert noise_loss_term(grads, hess, eta, batch_size=B, replacement=replacement,
                               noise="gaussian") == pytest.approx(expect, rel=1e-10)
        iso = 0.5 * eta ** 2 * float(torch.trace(sigma)) / p * float(torch.trace(H))
        assert noise_loss_term(grads, hess, eta, batch_size=B, replacement=replacement,
                               noise="isotropic") == pytest.approx(iso, rel=1e-10)


def test_noise_loss_term_bad_inputs(small_net):
    model, X, y, theta = small_net
    grads = ng.per_sample_gradients(model, theta, X, y)
    with pytest.raises(ValueError, match="noise"):
        noise_loss_term(grads, torch.eye(model.p, dtype=DT), 0.1, batch_size=2, noise="cauchy")
    with pytest.raises(ValueError, match="hessian"):
        noise_loss_term(grads, torch.eye(3, dtype=DT), 0.1, batch_size=2)
    with pytest.raises(ValueError, match="hessian"):
        noise_loss_term(grads, torch.eye(3, dtype=DT), 0.1, batch_size=2, noise="isotropic")
    with pytest.raises(ValueError, match="batch_size"):
        noise_loss_term(grads, torch.eye(model.p, dtype=DT), 0.1, batch_size=0)
    with pytest.raises(ValueError, match="eta"):
        noise_loss_term(grads, torch.eye(model.p, dtype=DT), -1.0, batch_size=2)


def test_losses_at_matches_loop(small_net):
    model, X, y, theta = small_net
    thetas = theta + 0.1 * torch.randn(7, model.p, dtype=DT, generator=_gen(7))
    vals = losses_at(model, thetas, X, y, chunk_size=3)
    for m in range(7):
        assert float(vals[m]) == pytest.approx(ng.loss_value(model, thetas[m], X, y), rel=1e-12)
    with pytest.raises(ValueError, match="thetas"):
        losses_at(model, thetas[:, :3], X, y)
    with pytest.raises(ValueError, match="chunk_size"):
        losses_at(model, thetas, X, y, chunk_size=0)


@pytest.mark.parametrize("noise,replacement", [("minibatch", False), ("minibatch", True), ("gaussian", False),
                                               ("isotropic", False)])
def test_one_step_excess_unbiased_on_quadratic(quad, noise, replacement):
    """On a quadratic the excess equals (η²/2)Tr(ΣH) exactly; the estimate is within 4 standard errors."""
    model, theta, X, y = quad
    eta, B = 0.2, 2
    grads = ng.per_sample_gradients(model, theta, X, y)
    exact = noise_loss_term(grads, X.T @ X / 7, eta, batch_size=B, replacement=replacement, noise=noise)
    for cv in (True, False):
        mean, se = one_step_excess(model, theta, X, y, eta, batch_size=B, replacement=replacement, noise=noise,
                                   num_draws=3000, seed=1, control_variate=cv)
        assert se > 0
        assert abs(mean - exact) < 4 * se


def test_one_step_excess_control_variate_shrinks_error(quad):
    model, theta, X, y = quad
    _, se_cv = one_step_excess(model, theta, X, y, 0.05, batch_size=2, num_draws=2000, seed=2)
    _, se_raw = one_step_excess(model, theta, X, y, 0.05, batch_size=2, num_draws=2000, seed=2,
                                control_variate=False)
    assert se_cv < 0.5 * se_raw


def test_one_step_excess_bad_inputs(quad):
    model, theta, X, y = quad
    with pytest.raises(ValueError, match="noise"):
        one_step_excess(model, theta, X, y, 0.1, batch_size=2, noise="laplace")
    with pytest.raises(ValueError, match="num_draws"):
        one_step_excess(model, theta, X, y, 0.1, batch_size=2, num_draws=1)
    with pytest.raises(ValueError, match="batch_size"):
        one_step_excess(model, theta, X, y, 0.1, batch_size=8)
    with pytest.raises(ValueError, match="eta"):
        one_step_excess(model, theta, X, y, 0.0, batch_size=2)
    with pytest.raises(ValueError, match="theta"):
        one_step_excess(model, theta[:2], X, y, 0.1, batch_size=2)


# ----------------------------------------------------------------- spectra and shares
def test_noise_spectra_against_numpy(small_net):
    model, X, y, theta = small_net
    grads = ng.per_sample_gradients(model, theta, X, y)
    J = ng.jacobian(model, theta, X)
    sp = noise_spectra(grads, J, loss=ng.loss_value(model, theta, X, y))
    S1 = ng.noise_covariance(grads).numpy()
    G = (J.T @ J / X.shape[0]).numpy()
    assert np.allclose(sp.sigma_values, np.clip(np.sort(np.linalg.eigvalsh(S1))[::-1], 0, None), atol=1e-12)
    assert np.allclose(sp.G_values, np.clip(np.sort(np.linalg.eigvalsh(G))[::-1], 0, None), atol=1e-12)
    for vals, vecs, M in [(sp.sigma_values, sp.sigma_vectors, S1), (sp.G_values, sp.G_vectors, G)]:
        assert np.allclose(vecs.T @ vecs, np.eye(model.p), atol=1e-10)
        assert np.allclose(M @ vecs[:, :3], vecs[:, :3] * vals[:3], atol=1e-10)
    assert sp.isotropic_level() == pytest.approx(np.trace(S1) / model.p, rel=1e-10)
    assert np.allclose(sp.gradient, grads.mean(0).numpy())
    # chapter 2: rank Σ₁ ≤ n − 1 and Σ₁ vanishes on null(G)
    n = X.shape[0]
    assert sp.sigma_values[n - 1:].max() < 1e-12 * sp.sigma_values[0]


def test_noise_spectra_bad_inputs():
    g = torch.randn(4, 5, dtype=DT, generator=_gen(8))
    with pytest.raises(ValueError, match="factor"):
        noise_spectra(g, g[:, :3])
    with pytest.raises(ValueError, match="factor"):
        noise_spectra(g, torch.randn(6, 5, dtype=DT))
    with pytest.raises(ValueError, match="max_p"):
        noise_spectra(g, g, max_p=4)


def test_captured_fraction():
    A = torch.randn(6, 6, dtype=DT, generator=_gen(9))
    S = A @ A.T
    U, _ = torch.linalg.qr(torch.randn(6, 4, dtype=DT, generator=_gen(10)))
    got = captured_fraction(S, U)
    expect = np.cumsum([float(U[:, j] @ S @ U[:, j]) for j in range(4)]) / float(torch.trace(S))
    assert np.allclose(got, expect, rtol=1e-12)
    w, V = torch.linalg.eigh(S)
    own = captured_fraction(S, V.flip(1))
    assert np.allclose(own, np.cumsum(w.flip(0).numpy()) / float(w.sum()))
    assert own[-1] == pytest.approx(1.0)
    assert np.allclose(captured_fraction(torch.eye(6, dtype=DT) * 3.0, U), np.arange(1, 5) / 6)


def test_captured_fraction_bad_inputs():
    S = torch.eye(4, dtype=DT)
    with pytest.raises(ValueError, match="orthonormal"):
        captured_fraction(S, torch.ones(4, 2, dtype=DT))
    with pytest.raises(ValueError, match="basis"):
        captured_fraction(S, torch.eye(3, dtype=DT))
    with pytest.raises(ValueError, match="sigma"):
        captured_fraction(torch.ones(4, 3, dtype=DT), torch.eye(4, dtype=DT))
    with pytest.raises(ValueError, match="trace"):
        captured_fraction(torch.zeros(4, 4, dtype=DT), torch.eye(4, dtype=DT))


def test_covariance_ellipse():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    pts = covariance_ellipse(cov, radius=2.0, center=(1.0, -1.0), num=50)
    d = pts - np.array([1.0, -1.0])
    assert pts.shape == (50, 2)
    assert np.allclose(np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d), 4.0)
    # Gaussian draws: the r = 1 ellipse holds 1 − e^{−1/2} of them
    z = np.random.default_rng(0).multivariate_normal([0, 0], cov, size=20000)
    inside = (np.einsum("ij,jk,ik->i", z, np.linalg.inv(cov), z) <= 1).mean()
    q = 1 - math.exp(-0.5)
    assert abs(inside - q) < 4 * math.sqrt(q * (1 - q) / 20000)


def test_covariance_ellipse_bad_inputs():
    with pytest.raises(ValueError, match="2×2"):
        covariance_ellipse(np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        covariance_ellipse(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="semi-definite"):
        covariance_ellipse(np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="radius"):
        covariance_ellipse(np.eye(2), radius=0.0)
    with pytest.raises(ValueError, match="center"):
        covariance_ellipse(np.eye(2), center=(0.0, 0.0, 0.0))
