"""Tests of noisegeom.minibatch_noise (chapter 2) and noisegeom.alignment_runs (chapter 3).

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
from noisegeom.alignment_runs import (AlignmentRecord, alignment_along_run, alignment_at, dense_alignment,
                                      two_layer_task)
from noisegeom.minibatch_noise import (batch_weights, captured_fraction, covariance_ellipse, covariance_error,
                                       losses_at, noise_loss_term, noise_spectra, one_step_excess,
                                       one_step_expansion)

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
    return two_layer_task(d=4, width=6, n=12, seed=3)


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


# ----------------------------------------------------------------- chapter 3: the task
def test_two_layer_task_is_a_teacher_student_problem():
    model, X, y, theta0 = two_layer_task(d=5, width=7, n=11, alpha=1.0, seed=2)
    assert model.p == 35 and X.shape == (11, 5) and y.shape == (11,)
    assert torch.equal(X, ng.gaussian_inputs(11, ng.power_law_spectrum(5, 1.0), seed=2))
    teacher = ng.two_layer_net(5, 4, seed=3)
    assert torch.allclose(y, teacher(teacher.theta0, X))
    assert torch.equal(theta0, ng.two_layer_net(5, 7, seed=2).theta0)
    again = two_layer_task(d=5, width=7, n=11, alpha=1.0, seed=2)
    assert torch.equal(again.y, y) and torch.equal(again.theta0, theta0)


def test_two_layer_task_bad_inputs():
    with pytest.raises(ValueError, match="n"):
        two_layer_task(n=1)
    with pytest.raises(TypeError, match="width"):
        two_layer_task(width=2.5)
    with pytest.raises(ValueError, match="activation"):
        two_layer_task(activation="swish")


# ----------------------------------------------------------------- chapter 3: the Gram identities
def _dense_metrics(J, e):
    n, p = J.shape
    grads = e[:, None] * J
    S1 = ng.noise_covariance(grads)
    G = J.T @ J / n
    L2 = float((e * e).mean())
    return S1, G, L2


def test_gram_formulas_of_chapter_3():
    """The formulas of the chapter-3 theorem, written out here, against dense p×p matrices."""
    gen = _gen(12)
    J = torch.randn(9, 40, dtype=DT, generator=gen)
    e = torch.randn(9, dtype=DT, generator=gen)
    n, p = J.shape
    S1, G, L2 = _dense_metrics(J, e)
    K = J @ J.T
    K2 = K @ K
    mu = (n * (e ** 2 * K2.diagonal()).sum() - e @ K2 @ e) / ((e @ e) * (K ** 2).sum())
    assert float(mu) == pytest.approx(float(torch.trace(S1 @ G)) / (L2 * float((G ** 2).sum())), rel=1e-10)
    mu_iso = (n * (e ** 2 * K.diagonal()).sum() - e @ K @ e) * K.trace() / (p * (e @ e) * (K ** 2).sum())
    assert float(mu_iso) == pytest.approx(float(S1.trace() * G.trace()) / (p * L2 * float((G ** 2).sum())),
                                          rel=1e-10)
    v = torch.randn(p, dtype=DT, generator=gen)
    s = J @ v
    g_v = (n * (e ** 2 * s ** 2).sum() - (e @ s) ** 2) / ((e @ e) * (s @ s))
    assert float(g_v) == pytest.approx(float(v @ S1 @ v) / (L2 * float(v @ G @ v)), rel=1e-10)
    V, _ = torch.linalg.qr(torch.randn(p, 4, dtype=DT, generator=gen))
    S = J @ V
    g_V = (n * (e ** 2 * (S ** 2).sum(1)).sum() - ((S.T @ e) ** 2).sum()) / ((e @ e) * (S ** 2).sum())
    assert float(g_V) == pytest.approx(float((V * (S1 @ V)).sum()) / (L2 * float((V * (G @ V)).sum())), rel=1e-10)
    # chapter 3: g(V) is the G-weighted average of the g(v_j); μ is the least-squares coefficient
    gs = np.array([float(V[:, j] @ S1 @ V[:, j]) / (L2 * float(V[:, j] @ G @ V[:, j])) for j in range(4)])
    w = np.array([float(V[:, j] @ G @ V[:, j]) for j in range(4)])
    assert float(g_V) == pytest.approx(float((w * gs).sum() / w.sum()), rel=1e-10)
    a_grid = np.linspace(float(mu) - 0.5, float(mu) + 0.5, 2001)
    resid = [float(torch.linalg.norm(S1 - a * L2 * G)) for a in a_grid]
    assert abs(a_grid[int(np.argmin(resid))] - float(mu)) < 1e-3


def test_isotropic_baseline_identity_and_bound():
    """μ_iso = ρ r_eff(G)/p ≤ κ r_eff(G)/p, and μ/μ_iso is the Zhu et al. ratio (chapter 3)."""
    model, X, y, theta = two_layer_task(d=6, width=20, n=15, seed=4)
    geo = ng.NoiseGeometry.from_model(model, theta, X, y)
    J = geo.factor
    rho = geo.trace_sigma1() / (2 * geo.loss * geo.trace_G())
    G = J.T @ J / X.shape[0]
    ev = torch.linalg.eigvalsh(G).clamp_min(0)
    r_eff = float(ev.sum() ** 2 / (ev ** 2).sum())
    assert geo.mu_isotropic() == pytest.approx(rho * r_eff / model.p, rel=1e-10)
    norms = (J ** 2).sum(1)
    kappa = float(norms.max() / norms.mean())
    assert geo.mu_isotropic() <= kappa * r_eff / model.p
    assert 1 <= r_eff <= int(torch.linalg.matrix_rank(G)) + 1e-9
    assert geo.zhu_indicator() == pytest.approx(geo.mu() / geo.mu_isotropic(), rel=1e-10)


def test_dense_alignment_matches_gram_route():
    gen = _gen(13)
    J = torch.randn(12, 50, dtype=DT, generator=gen)
    e = torch.randn(12, dtype=DT, generator=gen)
    out = dense_alignment(J, e)
    geo = ng.NoiseGeometry.square_loss(J, e)
    assert out["mu"] == pytest.approx(geo.mu(), rel=1e-10)
    assert out["mu_iso"] == pytest.approx(geo.mu_isotropic(), rel=1e-10)
    assert out["zhu"] == pytest.approx(out["mu"] / out["mu_iso"], rel=1e-10)
    # perfect alignment: all residuals equal and ∇L = 0 is impossible in general, but the
    # value 1 is reached when e_i² is constant and Jᵀe = 0 (chapter 3, proposition 1)
    J2 = torch.randn(6, 8, dtype=DT, generator=gen)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0], dtype=DT)
    J2 = J2 - torch.outer(signs, signs @ J2) / 6   # now signsᵀJ2 = 0, so ∇L = 0
    assert dense_alignment(J2, 0.3 * signs)["mu"] == pytest.approx(1.0, rel=1e-10)


def test_dense_alignment_bad_inputs():
    J = torch.randn(4, 6, dtype=DT, generator=_gen(14))
    with pytest.raises(ValueError, match="e must have"):
        dense_alignment(J, torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="loss is zero"):
        dense_alignment(J, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="max_p"):
        dense_alignment(J, torch.ones(4, dtype=DT), max_p=5)
    with pytest.raises(ValueError, match="G = 0"):
        dense_alignment(torch.zeros(4, 6, dtype=DT), torch.ones(4, dtype=DT))


# ----------------------------------------------------------------- chapter 3: measurements
def test_alignment_at_against_dense(small_net):
    model, X, y, theta = small_net
    k = 4
    out = alignment_at(model, theta, X, y, k=k, with_hessian=True)
    J = ng.jacobian(model, theta, X)
    e = ng.residuals(model, theta, X, y)
    S1, G, L2 = _dense_metrics(J, e)
    H = ng.hessian_matrix(model, theta, X, y)
    w, U = np.linalg.eigh(H.numpy())
    assert np.allclose(out["eigenvalues"], w[::-1][:k], rtol=1e-8, atol=1e-10)
    assert out["residuals"].max() < 1e-8
    dense = dense_alignment(J, e)
    assert out["mu"] == pytest.approx(dense["mu"], rel=1e-10)
    assert out["mu_iso"] == pytest.approx(dense["mu_iso"], rel=1e-10)
    assert out["loss"] == pytest.approx(L2 / 2, rel=1e-12)
    for j in range(k):
        u = torch.as_tensor(U[:, -1 - j])
        assert out["g"][j] == pytest.approx(float(u @ S1 @ u) / (L2 * float(u @ G @ u)), rel=1e-6)
        assert out["g_iso"][j] == pytest.approx(float(S1.trace()) / model.p / (L2 * float(u @ G @ u)), rel=1e-6)
        assert out["g_hessian"][j] == pytest.approx(float(u @ S1 @ u) / (L2 * w[-1 - j]), rel=1e-6)
    assert out["mu_hessian"] == pytest.approx(float(torch.trace(S1 @ H)) / (L2 * float((H ** 2).sum())), rel=1e-10)
    geo = ng.NoiseGeometry.from_model(model, theta, X, y)
    assert out["mu_hessian"] == pytest.approx(geo.mu(curvature=ng.hessian_operator(model, theta, X, y)), rel=1e-8)
    assert out["hessian_gap"] == pytest.approx(float(torch.linalg.norm(H - G) / torch.linalg.norm(H)), rel=1e-10)


def test_alignment_at_bad_inputs(small_net):
    model, X, y, theta = small_net
    with pytest.raises(ValueError, match="k"):
        alignment_at(model, theta, X, y, k=0)
    with pytest.raises(ValueError, match="max_dense_p"):
        alignment_at(model, theta, X, y, k=2, with_hessian=True, max_dense_p=5)
    with pytest.raises(TypeError, match="model"):
        alignment_at(object(), theta, X, y)


def test_alignment_along_run_matches_direct_computation(small_net):
    model, X, y, theta0 = small_net
    rec = alignment_along_run(model, X, y, theta0, eta=0.3, record_at=[0, 2, 5], k=3)
    assert isinstance(rec, AlignmentRecord)
    assert list(rec.steps) == [0, 2, 5] and rec.p == model.p
    assert rec.g.shape == (3, 3) and rec.g_hessian is None and rec.mu_hessian is None
    # GD: an explicit loop reaches the same points
    th = theta0.clone()
    for t in range(6):
        if t in (0, 2, 5):
            row = [0, 2, 5].index(t)
            assert np.allclose(rec.theta[row], th.numpy(), atol=1e-12)
            ref = alignment_at(model, th, X, y, k=3)
            assert rec.mu[row] == pytest.approx(ref["mu"], rel=1e-10)
            assert np.allclose(rec.g[row], ref["g"], rtol=1e-6)
            assert rec.loss[row] == pytest.approx(ng.loss_value(model, th, X, y), rel=1e-12)
        th = th - 0.3 * ng.per_sample_gradients(model, th, X, y).mean(0)


def test_alignment_along_run_sgd_is_seeded(small_net):
    model, X, y, theta0 = small_net
    a = alignment_along_run(model, X, y, theta0, eta=0.3, record_at=[3], batch_size=4, k=2, with_hessian=True, seed=5)
    b = alignment_along_run(model, X, y, theta0, eta=0.3, record_at=[3], batch_size=4, k=2, with_hessian=True, seed=5)
    assert np.array_equal(a.theta, b.theta) and a.hessian_gap.shape == (1,)
    c = alignment_along_run(model, X, y, theta0, eta=0.3, record_at=[3], batch_size=4, k=2, seed=6)
    assert not np.allclose(a.theta, c.theta)


def test_alignment_along_run_bad_inputs(small_net):
    model, X, y, theta0 = small_net
    with pytest.raises(ValueError, match="record_at"):
        alignment_along_run(model, X, y, theta0, eta=0.1, record_at=[3, 1])
    with pytest.raises(ValueError, match="record_at"):
        alignment_along_run(model, X, y, theta0, eta=0.1, record_at=[-1, 2])
    with pytest.raises(ValueError, match="record_at"):
        alignment_along_run(model, X, y, theta0, eta=0.1, record_at=[])
    with pytest.raises(ValueError, match="eta"):
        alignment_along_run(model, X, y, theta0, eta=0.0, record_at=[0])
    with pytest.raises(ValueError, match="theta0"):
        alignment_along_run(model, X, y, theta0[:3], eta=0.1, record_at=[0])


def test_alignment_invariances_and_the_rank_one_bound():
    """Errata C3-E1 and C3-M1, against Σ₁ and G assembled densely from the per-sample gradients:
    μ, g(v) are unchanged under θ-rescaling (J → aJ) and under rescaling outputs and labels
    together (J → aJ, e → ae), but rescaling G alone divides them by a; and
    (vᵀ∇L)² ≤ 2L·vᵀGv in every direction."""
    rng = np.random.default_rng(3)
    n, p, a = 9, 6, 2.5
    J = rng.standard_normal((n, p)) * np.geomspace(3, 0.1, p)
    e = rng.standard_normal(n)
    v = rng.standard_normal(p)

    def dense(J, e, G_scale=1.0):
        grads = e[:, None] * J
        S1 = sum(np.outer(g, g) for g in grads) / n - np.outer(grads.mean(0), grads.mean(0))
        G = G_scale * sum(np.outer(r, r) for r in J) / n
        two_L = (e ** 2).mean()
        return (np.trace(S1 @ G) / (two_L * (G ** 2).sum()), (v @ S1 @ v) / (two_L * (v @ G @ v)))

    mu0, g0 = dense(J, e)
    geo = ng.NoiseGeometry.square_loss(torch.as_tensor(J), torch.as_tensor(e))
    assert math.isclose(geo.mu(), mu0, rel_tol=1e-10)
    assert math.isclose(float(geo.g(torch.as_tensor(v))), g0, rel_tol=1e-10)
    for J2, e2 in [(a * J, e), (a * J, a * e)]:             # θ-rescaling; outputs and labels
        geo2 = ng.NoiseGeometry.square_loss(torch.as_tensor(J2), torch.as_tensor(e2))
        assert math.isclose(geo2.mu(), mu0, rel_tol=1e-10)
        assert math.isclose(float(geo2.g(torch.as_tensor(v))), g0, rel_tol=1e-10)
    mu_a, g_a = dense(J, e, G_scale=a)                       # G alone: not invariant
    assert math.isclose(mu_a, mu0 / a, rel_tol=1e-10) and math.isclose(g_a, g0 / a, rel_tol=1e-10)
    # the rank-one term: (vᵀ∇L)² ≤ 2L vᵀGv in 200 random directions
    grad = (e[:, None] * J).mean(0)
    G = J.T @ J / n
    V = rng.standard_normal((p, 200))
    lhs, rhs = (V.T @ grad) ** 2, (e ** 2).mean() * np.einsum("pk,pq,qk->k", V, G, V)
    assert np.all(lhs <= rhs * (1 + 1e-12))
    # equality for residuals proportional to Jv: then the rank-one term is all of 2L·G along v
    e_eq = J @ v
    lhs_eq = (v @ (e_eq[:, None] * J).mean(0)) ** 2
    assert math.isclose(lhs_eq, (e_eq ** 2).mean() * (v @ G @ v), rel_tol=1e-12)
