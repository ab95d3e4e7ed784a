"""Tests of noisegeom.chapters.ch04_linear_models (chapter 4, *Linear models*): every closed form and
bound of the chapter against an independent route.

* Population model: the Isserlis identity and Σ₁ by Monte Carlo (CLT tolerances, 5 standard
  errors; a wrong coefficient is shown to be rejected), μ and g against their p×p definitions,
  the bounds μ ∈ [1, 1 + ‖S‖₂²/‖S‖_F²] and g ∈ [1, 1 + ρ] with equality cases, label noise.
* Finite samples: μ = eᵀMe/‖e‖² against the package's Gram route and a dense definition; the
  range of μ over θ against brute force (dense generalized eigenproblems, explicit θ);
  Tr M = n − 1 and the spherical mean 1 − 1/n by Monte Carlo; the deterministic lemmas on
  random and adversarial Gram matrices; the high-probability theorem's events at their
  stated probability (binomial tolerance) and its limit; the Bartlett sampler's moments.
* Directions: the range [0, λ_max(n Diag(ê²) − êêᵀ)] with its extreme directions built
  explicitly, g along eigenvectors of G against dense eigenvectors.
* Reparameterised models: ∂F and μ through the features XP^{1/2} against autodiff on the
  models themselves; μ unchanged when p grows at fixed P; the population formula with P by
  Monte Carlo through the deep linear network.
* Bad inputs raise errors that name the argument.
"""

import math

import numpy as np
import pytest
import scipy.linalg as sl
import torch

import noisegeom as ng
import noisegeom.chapters.ch04_linear_models as lt
from _fixtures import DT, cov_within, dense_sigma1, loop_jacobian

TOL = 1e-10


def close(a, b, tol=TOL):
    return abs(a - b) <= tol * max(abs(b), 1.0)


def random_spd(d, rng, cond=20.0):
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(1.0, 1.0 / cond, d)
    return (Q * lam) @ Q.T


def dense_mu(X, e):
    """μ from its definition with p×p matrices: Σ₁ assembled term by term, G = XᵀX/n."""
    X, e = np.asarray(X, float), np.asarray(e, float)
    n = X.shape[0]
    S1 = dense_sigma1(e[:, None] * X)
    G = X.T @ X / n
    return np.trace(S1 @ G) / ((e ** 2).mean() * (G ** 2).sum())


# =========================================================================== population model

def test_isserlis_identity_by_monte_carlo():
    """E[(δᵀx)² x xᵀ] = (δᵀSδ) S + 2 SδδᵀS for x ~ N(0, S), S not diagonal; 6 entries, 5 SE.

    The same samples reject the formula with coefficient 1 on SδδᵀS (a plausible slip).
    """
    rng = np.random.default_rng(0)
    S = random_spd(3, rng, cond=5.0)
    delta = np.array([0.7, -1.2, 0.4])
    N = 400_000
    x = rng.multivariate_normal(np.zeros(3), S, size=N)
    w = (x @ delta) ** 2
    prods = w[:, None, None] * x[:, :, None] * x[:, None, :]
    est = prods.mean(0)
    se = prods.std(0, ddof=1) / math.sqrt(N)
    Sd = S @ delta
    right = (delta @ S @ delta) * S + 2 * np.outer(Sd, Sd)
    wrong = (delta @ S @ delta) * S + np.outer(Sd, Sd)
    assert np.max(np.abs(est - right) / se) < 5
    assert np.max(np.abs(est - wrong) / se) > 10


@pytest.mark.parametrize("sigma", [0.0, 0.8])
def test_population_noise_covariance_by_monte_carlo(sigma):
    """Σ₁ = 2L·S + SδδᵀS, ∇L = Sδ, 2L = δᵀSδ + σ² against per-sample gradients g = e x (CLT, 5 SE)."""
    rng = np.random.default_rng(1)
    S = random_spd(3, rng, cond=8.0)
    delta = np.array([1.0, 0.5, -0.8])
    pop = lt.population_geometry(S, delta, noise_std=sigma)
    N = 400_000
    x = rng.multivariate_normal(np.zeros(3), S, size=N)
    e = x @ delta - sigma * rng.standard_normal(N)
    g = e[:, None] * x
    ok, zmax, _ = cov_within(g, pop["grad"], pop["Sigma1"])
    assert ok, zmax
    assert np.all(np.abs(g.mean(0) - pop["grad"]) <= 5 * g.std(0) / math.sqrt(N))
    assert abs((e ** 2).mean() - pop["two_L"]) <= 5 * (e ** 2).std() / math.sqrt(N)
    # the structure 2L·G + ∇L∇Lᵀ, exactly
    assert np.allclose(pop["Sigma1"], pop["two_L"] * pop["G"] + np.outer(pop["grad"], pop["grad"]), atol=1e-14)


def test_population_mu_definition_bounds_and_equality_cases():
    rng = np.random.default_rng(2)
    d = 6
    S = random_spd(d, rng, cond=30.0)
    lam, V = np.linalg.eigh(S)
    fro2 = (lam ** 2).sum()
    for _ in range(20):
        delta = rng.standard_normal(d)
        for sigma in (0.0, 0.3, 2.0):
            pop = lt.population_geometry(S, delta, noise_std=sigma)
            mu_def = np.trace(pop["Sigma1"] @ pop["G"]) / (pop["two_L"] * (pop["G"] ** 2).sum())
            mu = lt.population_mu(S, delta, noise_std=sigma)
            assert close(mu, mu_def)
            rho = (delta @ S @ delta) / (delta @ S @ delta + sigma ** 2)
            assert close(lt.signal_fraction(S, delta, sigma), rho)
            lo, hi = lt.population_mu_bounds(S, snr=rho)
            assert close(lo, 1 + rho * lam[0] ** 2 / fro2) and close(hi, 1 + rho * lam[-1] ** 2 / fro2)
            assert 1 <= lo <= mu + 1e-14 and mu <= hi + 1e-14 and hi <= 2
    # equality: δ along the top / bottom eigenvector
    assert close(lt.population_mu(S, V[:, -1]), 1 + lam[-1] ** 2 / fro2)
    assert close(lt.population_mu(S, V[:, 0]), 1 + lam[0] ** 2 / fro2)
    # label noise pulls μ toward 1; at the teacher with noise μ = 1 exactly
    delta = rng.standard_normal(d)
    mus = [lt.population_mu(S, delta, noise_std=s) for s in (0.0, 0.5, 1.0, 4.0)]
    assert all(a > b for a, b in zip(mus, mus[1:])) and mus[-1] > 1
    assert close(lt.population_mu(S, np.zeros(d), noise_std=0.7), 1.0)
    # isotropic S = I_d: μ = 1 + ρ/d
    assert close(lt.population_mu(np.ones(5), delta[:5], noise_std=0.5),
                 1 + (delta[:5] @ delta[:5]) / (delta[:5] @ delta[:5] + 0.25) / 5)
    # singular S: the lower bound uses the smallest positive eigenvalue
    lo, hi = lt.population_mu_bounds(np.array([3.0, 1.0, 0.0]))
    assert close(lo, 1 + 1 / 10) and close(hi, 1 + 9 / 10)


def test_population_g_bounds_equality_and_sum_rule():
    rng = np.random.default_rng(3)
    d = 5
    S = random_spd(d, rng, cond=10.0)
    lam, V = np.linalg.eigh(S)
    delta = rng.standard_normal(d)
    for sigma in (0.0, 0.6):
        pop = lt.population_geometry(S, delta, noise_std=sigma)
        rho = pop["snr"]
        W = rng.standard_normal((d, 50))
        g = lt.population_g(S, delta, W, noise_std=sigma)
        g_def = np.einsum("ik,ij,jk->k", W, pop["Sigma1"], W) / (pop["two_L"] * np.einsum("ik,ij,jk->k", W, S, W))
        assert np.allclose(g, g_def, rtol=1e-12)
        assert np.all(g >= 1 - 1e-14) and np.all(g <= 1 + rho + 1e-14)
        assert close(lt.population_g(S, delta, delta, noise_std=sigma), 1 + rho)      # v = δ: the top
        v_perp = np.linalg.solve(S, _s_orthogonal(S, delta, rng))          # vᵀSδ = 0
        assert close(lt.population_g(S, delta, v_perp, noise_std=sigma), 1.0)
        # along the eigenvectors of G = S the excesses add up to ρ
        gk = lt.population_g(S, delta, V, noise_std=sigma)
        assert close(float((gk - 1).sum()), rho)


def _s_orthogonal(S, delta, rng):
    """A vector w with wᵀSδ = 0, returned as S w (so that solve(S, ·) gives w back)."""
    w = rng.standard_normal(S.shape[0])
    Sd = S @ delta
    w = w - (w @ Sd) / (Sd @ Sd) * Sd
    return S @ w


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_isotropic_baseline_limit_for_one_dominant_direction(sigma):
    """Errata C4-M (ex-ch4-isotropic): for S = diag(1, ε, ..., ε), μ_iso → (1/d)(1 + δ₁²/(δ₁² + σ²))
    as ε → 0. μ_iso from the dense Σ₁ and G of population_geometry, error shrinking like ε."""
    d = 6
    delta = np.array([0.8, -0.3, 0.5, 0.1, -0.6, 0.2])
    limit = (1 + delta[0] ** 2 / (delta[0] ** 2 + sigma ** 2)) / d
    errs = []
    for eps in (1e-2, 1e-4, 1e-6):
        S = np.diag([1.0] + [eps] * (d - 1))
        geo = lt.population_geometry(S, delta, noise_std=sigma)
        G = geo["G"]
        mu_iso = np.trace(geo["Sigma1"]) * np.trace(G) / (d * geo["two_L"] * (G ** 2).sum())
        errs.append(abs(mu_iso - limit))
    assert errs[-1] < 1e-4 * limit and errs[0] > errs[1] > errs[2]
    assert errs[0] > 1e-3 * limit                       # the limit is not reached at ε = 1e-2
    # and μ itself stays at least 1 (cor-ch4-mu-population)
    assert lt.population_mu(np.diag([1.0] + [1e-6] * (d - 1)), delta, noise_std=sigma) >= 1


def test_reparameterised_population_formula():
    """With P: μ = 1 + δᵀSPSPSδ/(2L Tr(SPSP)) equals Tr(Σ₁G)/(2L‖G‖_F²) for Σ₁ = ∂Fᵀ Σ_lin ∂F, G = ∂FᵀS∂F."""
    rng = np.random.default_rng(4)
    d, p = 4, 9
    S = random_spd(d, rng)
    dF = rng.standard_normal((d, p))
    P = dF @ dF.T
    delta = rng.standard_normal(d)
    for sigma in (0.0, 0.5):
        pop = lt.population_geometry(S, delta, noise_std=sigma)
        S1 = dF.T @ pop["Sigma1"] @ dF
        G = dF.T @ S @ dF
        mu_def = np.trace(S1 @ G) / (pop["two_L"] * (G ** 2).sum())
        assert close(lt.population_mu(S, delta, noise_std=sigma, P=P), mu_def)
        lo, hi = lt.population_mu_bounds(S, snr=pop["snr"], P=P)
        assert 1 <= lo <= mu_def <= hi <= 2
        v = rng.standard_normal((p, 7))
        g_def = np.einsum("ik,ij,jk->k", v, S1, v) / (pop["two_L"] * np.einsum("ik,ij,jk->k", v, G, v))
        assert np.allclose(lt.population_g(S, delta, v, noise_std=sigma, dF=dF), g_def, rtol=1e-12)
    # P = I reproduces the plain formula
    assert close(lt.population_mu(S, delta, P=np.eye(d)), lt.population_mu(S, delta))


def test_reparameterised_population_by_monte_carlo_through_a_deep_linear_net():
    """μ of a depth-3 linear network on R = 24 samples of n = 1500: mean within 4 SE + 5/n of the formula."""
    d = 3
    lam = np.array([3.0, 1.0, 0.3])
    model = ng.deep_linear_model(d, depth=3, width=3)
    # W1 = diag(1, 1, 4), W2 = I, w3 = (1, 1, 1): P = 3I + 4 W1ᵀW1 = diag(7, 7, 67) by hand,
    # far from a multiple of the identity whatever the random initialisation would give
    theta = torch.cat([torch.diag(torch.tensor([1.0, 1.0, 4.0])).flatten(), torch.eye(3).flatten(),
                       torch.ones(3)]).to(DT)
    assert np.allclose(lt.feature_metric(model, theta, d).numpy(), np.diag([7.0, 7.0, 67.0]))
    F = model(theta, torch.eye(d, dtype=DT)).numpy()
    theta_star = np.array([0.5, -1.0, 0.2])
    P = lt.feature_metric(model, theta, d).numpy()
    want = lt.population_mu(lam, F - theta_star, noise_std=0.3, P=P)
    n, R = 1500, 24
    got = []
    for r in range(R):
        X = ng.gaussian_inputs(n, lam, seed=500 + r)
        y = ng.teacher_labels(X, torch.as_tensor(theta_star), noise_std=0.3, seed=500 + r)
        got.append(ng.NoiseGeometry.from_model(model, theta, X, y).mu())
    got = np.array(got)
    se = got.std(ddof=1) / math.sqrt(R)
    assert abs(got.mean() - want) <= 4 * se + 5 / n * want, (got.mean(), want, se)
    # and the plain-model value differs clearly (P matters)
    assert abs(lt.population_mu(lam, F - theta_star, noise_std=0.3) - want) > 10 * se


def test_diagonal_P_as_a_vector_gives_the_dense_values():
    """A 1-D P (diagonal S and P) takes the O(d) route; it must agree with the dense d×d one."""
    rng = np.random.default_rng(5)
    lam = ng.power_law_spectrum(40, 1.0)
    pd = np.logspace(2, 0, 40)
    pd[3] = 0.0                                   # a zero of P: A has a zero eigenvalue
    delta = rng.standard_normal(40)
    for sigma in (0.0, 0.7):
        dense = lt.population_mu(lam, delta, noise_std=sigma, P=np.diag(pd))
        assert close(lt.population_mu(lam, delta, noise_std=sigma, P=pd), dense, 1e-12)
        rho = lt.signal_fraction(lam, delta, sigma)
        assert close(rho, lt.signal_fraction(np.diag(lam), delta, sigma), 1e-12)
        for got, want in zip(lt.population_mu_bounds(lam, snr=rho, P=pd),
                             lt.population_mu_bounds(lam, snr=rho, P=np.diag(pd))):
            assert close(got, want, 1e-12)
    with pytest.raises(ValueError, match="P"):
        lt.population_mu(lam, delta, P=-pd)
    with pytest.raises(ValueError, match="shape"):
        lt.population_mu_bounds(lam, P=pd[:5])


# =========================================================================== finite samples

@pytest.mark.parametrize("shape", [(7, 12), (15, 4)])
def test_mu_through_alignment_matrix(shape):
    n, d = shape
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, d)) * np.geomspace(1, 0.1, d)
    e = rng.standard_normal(n)
    want = dense_mu(X, e)
    assert close(lt.mu_from_residuals(e, X=X), want, 1e-9)
    assert close(lt.mu_from_residuals(e, K=X @ X.T), want, 1e-9)
    assert close(ng.average_alignment(X, e), want, 1e-9)
    M = lt.alignment_matrix(X @ X.T)
    assert close(e @ M @ e / (e @ e), want, 1e-9)
    assert close(np.trace(M), n - 1, 1e-12)
    assert np.linalg.eigvalsh(M)[0] >= -1e-12


def test_mu_range_over_parameters_is_exact():
    """n ≤ d: [λ_min(M), λ_max(M)], attained by θ = θ* + X⁺e*; n > d: the generalized eigenproblem."""
    rng = np.random.default_rng(6)
    # over-parameterised
    n, d = 6, 10
    X = rng.standard_normal((n, d)) * np.geomspace(2, 0.2, d)
    theta_star = rng.standard_normal(d)
    lo, hi = lt.mu_range(X=X)
    M = lt.alignment_matrix(X @ X.T)
    w, U = np.linalg.eigh(M)
    assert close(lo, w[0], 1e-9) and close(hi, w[-1], 1e-9)
    model = ng.linear_model(d)
    y = torch.as_tensor(X @ theta_star)
    Xt = torch.as_tensor(X)
    for k, target in ((-1, hi), (0, lo)):
        theta = theta_star + np.linalg.pinv(X) @ U[:, k]
        geo = ng.NoiseGeometry.from_model(model, torch.as_tensor(theta), Xt, y)
        assert close(geo.mu(), target, 1e-8)
    for _ in range(200):
        mu = lt.mu_from_residuals(rng.standard_normal(n), X=X)
        assert lo - 1e-12 <= mu <= hi + 1e-12
    # under-parameterised: e = Xβ, μ = βᵀAβ / βᵀBβ
    n, d = 25, 4
    X = rng.standard_normal((n, d)) * np.array([2.0, 1.0, 0.5, 0.1])
    K = X @ X.T
    a = np.diag(K @ K)
    A = (n * X.T @ (a[:, None] * X) - np.linalg.matrix_power(X.T @ X, 3)) / (K ** 2).sum()
    gen = sl.eigh(A, X.T @ X, eigvals_only=True)
    lo, hi = lt.mu_range(X=X)
    assert close(lo, gen[0], 1e-8) and close(hi, gen[-1], 1e-8)
    for _ in range(200):
        beta = rng.standard_normal(d)
        mu = lt.mu_from_residuals(X @ beta, X=X)
        assert lo - 1e-12 <= mu <= hi + 1e-12
    # rank-deficient inputs (zero columns): the range lives on range(X)
    Xz = np.hstack([X, np.zeros((n, 3))])
    assert np.allclose(lt.mu_range(X=Xz), (lo, hi), rtol=1e-9)


def test_spherical_mean_is_one_minus_one_over_n():
    """Tr M/n = 1 − 1/n: Monte Carlo over uniform residual directions on a degenerate X (5 SE)."""
    rng = np.random.default_rng(7)
    n, d = 8, 30
    X = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -1.5
    M = lt.alignment_matrix(X @ X.T)
    E = rng.standard_normal((40_000, n))
    vals = np.einsum("ki,ij,kj->k", E, M, E) / (E ** 2).sum(1)
    assert abs(vals.mean() - (1 - 1 / n)) <= 5 * vals.std() / math.sqrt(vals.size)
    # at the teacher with label noise the residual is isotropic: same mean even when n > d
    X = rng.standard_normal((40, 3))
    M = lt.alignment_matrix(X @ X.T)
    E = rng.standard_normal((40_000, 40))
    vals = np.einsum("ki,ij,kj->k", E, M, E) / (E ** 2).sum(1)
    assert abs(vals.mean() - (1 - 1 / 40)) <= 5 * vals.std() / math.sqrt(vals.size)


def _gram_cases(rng):
    """Random and adversarial Gram matrices: Gaussian with several spectra, one heavy row, near-duplicate rows."""
    out = []
    for d, alpha in ((400, 0.0), (400, 0.5), (2000, 0.0), (60, 1.0)):
        lam = ng.power_law_spectrum(d, alpha)
        for n in (3, 8, 20):
            X = rng.standard_normal((n, d)) * np.sqrt(lam)
            out.append(X @ X.T)
    n = 10
    X = rng.standard_normal((n, 3000))
    X[0] *= 1.3                                    # one long input
    out.append(X @ X.T)
    X = rng.standard_normal((n, 3000))
    X[1] = X[0] + 0.3 * X[1]                       # two strongly correlated inputs
    out.append(X @ X.T)
    B = np.eye(n) + 0.15 * (np.ones((n, n)) - np.eye(n))   # equicorrelated Gram
    out.append(B)
    D = np.diag(np.linspace(0.8, 1.2, n)) + 0.02 * np.diag(np.ones(n - 1), 1) + 0.02 * np.diag(np.ones(n - 1), -1)
    out.append(D)
    # near-extremal cases: one row at the top of the lemma's range (μ(e₁) → ((1+η)² + τ)/(1−η)²) ...
    n, eta, tau = 50, 0.2, 0.3
    A = np.diag(np.r_[1 + eta, np.full(n - 1, 1 - eta)])
    A[0, 1:] = A[1:, 0] = math.sqrt(tau / (n - 1))
    out.append(A)
    # ... and one row at the bottom (μ(e₁) → (1−η)²/((1+η)² + τ))
    B = np.full((n, n), math.sqrt(tau / (n - 2)))
    B[0, :] = B[:, 0] = 0
    np.fill_diagonal(B, np.r_[1 - eta, np.full(n - 1, 1 + eta)])
    out.append(B)
    return out


def test_orthogonal_design_has_G_eigenvectors_but_not_its_proportions():
    """K = cI (errata C4-E1): Σ₁ + ∇L∇Lᵀ = (1/n)Σ e_i² x_i x_iᵀ ≠ 2L·G unless all |e_i| agree;
    g(x_j) = (n − 1)ê_j² and μ = 1 − 1/n. Σ₁ and G are assembled densely, term by term."""
    rng = np.random.default_rng(11)
    n, d, c = 7, 12, 3.0
    Q, _ = np.linalg.qr(rng.standard_normal((d, n)))
    X = math.sqrt(c) * Q.T                                  # orthogonal rows, ‖x_i‖² = c
    assert np.allclose(X @ X.T, c * np.eye(n), atol=1e-12)
    e = rng.standard_normal(n) * np.geomspace(0.03, 3.0, n)   # unequal residuals
    grads = e[:, None] * X
    S1 = dense_sigma1(grads)
    G = sum(np.outer(x, x) for x in X) / n
    two_L = (e ** 2).mean()
    gbar = grads.mean(0)
    assert np.allclose(S1 + np.outer(gbar, gbar), sum(ei ** 2 * np.outer(x, x) for ei, x in zip(e, X)) / n)
    assert not np.allclose(S1 + np.outer(gbar, gbar), two_L * G, atol=1e-3)
    mu = np.trace(S1 @ G) / (two_L * (G ** 2).sum())
    assert abs(mu - (1 - 1 / n)) < 1e-12
    assert abs(lt.mu_from_residuals(torch.as_tensor(e), X=torch.as_tensor(X)) - mu) < 1e-12
    ehat2 = e ** 2 / (e ** 2).sum()
    for j in range(n):
        v = X[j]
        g = (v @ S1 @ v) / (two_L * (v @ G @ v))
        assert abs(g - (n - 1) * ehat2[j]) < 1e-12
    spread = (n - 1) * ehat2
    assert spread.min() < 0.01 and spread.max() > 3          # far from 1 in both directions


def test_entrywise_lemma_on_random_and_adversarial_grams():
    """Every eigenvalue of M lies in the lemma's [ℓ(n, η̂, τ̂), u(n, η̂, τ̂)] for the realised η̂, τ̂."""
    rng = np.random.default_rng(8)
    checked = 0
    for K in _gram_cases(rng):
        n = K.shape[0]
        w = np.linalg.eigvalsh(lt.alignment_matrix(K))
        for c in (np.trace(K) / n, np.median(np.diag(K)), 1.05 * np.trace(K) / n, 1.0):
            eta, tau = lt.gram_deviations(K, c)
            # explicit loops for η̂, τ̂
            e_ref = max(abs(K[i, i] / c - 1) for i in range(n))
            t_ref = max(sum(K[i, j] ** 2 for j in range(n) if j != i) / c ** 2 for i in range(n))
            assert close(eta, e_ref) and close(tau, t_ref)
            lo, hi = lt.entrywise_mu_bounds(n, eta, tau)
            if eta < 1:
                checked += 1
                assert lo - 1e-12 <= w[0] and w[-1] <= hi + 1e-12, (n, eta, tau, lo, w[0], w[-1], hi)
    assert checked > 30
    # the first terms are nearly sharp: on the two extremal cases μ comes within 10% of them
    *_, A, B = _gram_cases(np.random.default_rng(0))
    eta, tau = lt.gram_deviations(A, 1.0)
    assert np.linalg.eigvalsh(lt.alignment_matrix(A))[-1] >= 0.9 * ((1 + eta) ** 2 + tau) / (1 - eta) ** 2
    eta, tau = lt.gram_deviations(B, 1.0)
    assert np.linalg.eigvalsh(lt.alignment_matrix(B))[0] <= 1.1 * (1 - eta) ** 2 / ((1 + eta) ** 2 + tau)
    # K = cI: both bounds are 1 − 1/n, and so is μ for every e
    for n in (2, 5, 50):
        assert lt.entrywise_mu_bounds(n, 0.0, 0.0) == pytest.approx((1 - 1 / n, 1 - 1 / n), abs=1e-15)


def test_entrywise_bounds_formula_independent():
    n, eta, tau = 9.0, 0.13, 0.021
    Am, Ap = (1 - eta) ** 2, (1 + eta) ** 2 + tau
    r = math.sqrt(n * tau)
    want_lo = Am / Ap - (1 + eta + r) ** 2 / (n * Am)
    want_hi = Ap / Am - (1 - eta - r) ** 2 / (n * Ap)
    lo, hi = lt.entrywise_mu_bounds(n, eta, tau)
    assert close(lo, want_lo) and close(hi, want_hi)
    lo, hi = lt.entrywise_mu_bounds(np.array([4, 4]), np.array([0.2, 1.5]), np.array([0.0, 0.0]))
    assert np.isinf(hi[1]) and lo[1] == 0 and hi[0] < np.inf


def test_condition_number_lemma():
    rng = np.random.default_rng(9)
    for K in _gram_cases(rng):
        n = K.shape[0]
        s = np.linalg.eigvalsh(K)
        if s[0] <= 0:
            continue
        w = np.linalg.eigvalsh(lt.alignment_matrix(K))
        lo, hi = lt.condition_number_mu_bounds(s[-1] / s[0], n)
        assert lo - 1e-12 <= w[0] and w[-1] <= hi + 1e-12
    # and the exercise's corollary: ‖K/c − I‖ ≤ ε ⇒ |μ − (1 − 1/n)| ≤ 4ε/(1 − ε)²
    for K in _gram_cases(rng):
        n = K.shape[0]
        c = np.trace(K) / n
        eps = np.linalg.norm(K / c - np.eye(n), 2)
        if eps < 1:
            w = np.linalg.eigvalsh(lt.alignment_matrix(K))
            assert np.max(np.abs(w - (1 - 1 / n))) <= 4 * eps / (1 - eps) ** 2 + 1e-12


def test_laurent_massart_tails():
    """The cited lemma at its stated rates (binomial tolerance, 4 SE)."""
    rng = np.random.default_rng(10)
    a = np.arange(1, 41, dtype=float) ** -0.7
    N = 100_000
    Z = ((rng.standard_normal((N, a.size)) ** 2 - 1) * a).sum(1)
    for t in (0.5, 1.5, 3.0):
        p = math.exp(-t)
        tol = 4 * math.sqrt(p * (1 - p) / N)
        up = 2 * np.linalg.norm(a) * math.sqrt(t) + 2 * a.max() * t
        assert (Z >= up).mean() <= p + tol
        assert (Z <= -2 * np.linalg.norm(a) * math.sqrt(t)).mean() <= p + tol


def test_low_sample_theorem_events_hold_at_the_stated_probability():
    """The events of the theorem fail with frequency ≤ γ (+ 3 binomial SE); so does its conclusion.

    γ = 0.5 makes the check informative: with η multiplied by 0.4 the diagonal event alone already
    fails more than half of the time, so the stated η is within a factor 2.5 of the sharp threshold.
    """
    rng = np.random.default_rng(11)
    d, n, gamma, R = 5000, 6, 0.5, 400
    lam = ng.power_law_spectrum(d, 0.3)
    c = lam.sum()
    thm = lt.low_sample_bounds(n, lam, failure_prob=gamma)
    eta, tau = float(thm["eta"]), float(thm["tau"])
    assert eta < 1 and thm["lower"] > 0
    fail_events = fail_range = fail_half = 0
    for _ in range(R):
        X = rng.standard_normal((n, d)) * np.sqrt(lam)
        K = X @ X.T
        D = np.diag(K) / c
        Roff = ((K / c) ** 2).sum(1) - D ** 2
        fail_events += bool(np.any(np.abs(D - 1) > eta) or np.any(Roff > tau))
        fail_half += bool(np.any(np.abs(D - 1) > 0.4 * eta))
        w = np.linalg.eigvalsh(lt.alignment_matrix(K))
        fail_range += bool(w[0] < thm["lower"] or w[-1] > thm["upper"])
    tol = 3 * math.sqrt(gamma * (1 - gamma) / R)
    assert fail_events / R <= gamma + tol
    assert fail_range / R <= gamma + tol
    assert fail_half / R > gamma


def test_low_sample_bounds_formula_and_limit():
    lam = ng.power_law_spectrum(300, 0.5)
    info = lt.spectral_summary(lam)
    assert close(info["d_eff"], ng.effective_dimension(lam))
    assert close(info["r"], lam.sum() / lam.max())
    assert info["r"] <= info["d_eff"] <= info["r"] ** 2
    n, gamma = np.array([2, 5, 40]), 0.05
    thm = lt.low_sample_bounds(n, lam, failure_prob=gamma)
    t = np.log(4 * n / gamma)
    eta = 2 * np.sqrt(t / info["d_eff"]) + 2 * t / info["r"]
    tau = (1 + np.sqrt(2 * t * info["d_eff"]) / info["r"]) ** 2 * (np.sqrt(n - 1) + np.sqrt(2 * t)) ** 2 / info["d_eff"]
    assert np.allclose(thm["eta"], eta, rtol=1e-13) and np.allclose(thm["tau"], tau, rtol=1e-13)
    lo, hi = lt.entrywise_mu_bounds(n, eta, tau)
    assert np.allclose(thm["lower"], lo) and np.allclose(thm["upper"], hi)
    # the low-sample regime: the bounds → 1 − 1/n as d_eff → ∞, with the first-order deviations
    # of the theorem (lower: 4η(1+1/n) + 2τ + 2√(τ/n); upper: 4η(1+1/n) + τ/n + 2√(τ/n) when
    # √(nτ) < 1 − η, else 4η + τ + 1/n), from nτ ≪ 1 to nτ ≫ 1, where the first-order τ of the
    # lower side is visible. The exact bounds come from entrywise_mu_bounds (the lemma's
    # closed form); the expansions are typed here. Their error is second order: below first².
    big = np.ones(10 ** 6)
    branches, n_tau = set(), []
    for n in (5, 50, 500, 2000, 10 ** 4):
        thm = lt.low_sample_bounds(n, big, failure_prob=0.1)
        eta, tau = float(thm["eta"]), float(thm["tau"])
        below = (1 - 1 / n) - float(thm["lower"])
        above = float(thm["upper"]) - (1 - 1 / n)
        first_lo = 4 * eta * (1 + 1 / n) + 2 * tau + 2 * math.sqrt(tau / n)
        small = math.sqrt(n * tau) < 1 - eta
        branches.add(small)
        first_hi = (4 * eta * (1 + 1 / n) + tau / n + 2 * math.sqrt(tau / n) if small
                    else 4 * eta + tau + 1 / n)
        assert abs(below - first_lo) <= first_lo ** 2, (n, below, first_lo)
        assert abs(above - first_hi) <= first_hi ** 2, (n, above, first_hi)
        n_tau.append(n * tau)
        if n == 10 ** 4:
            # the old expansion 4η(1+1/n) + τ + 2√(τ/n) misses the lower deviation here by τ
            old = 4 * eta * (1 + 1 / n) + tau + 2 * math.sqrt(tau / n)
            assert abs(below - old) > 3 * first_lo ** 2
    assert branches == {True, False} and min(n_tau) < 1e-3 and max(n_tau) > 100


def test_wishart_gram_moments_and_alignment_law():
    """Bartlett's K against XXᵀ: Cov(K_ij, K_kl) = d(δ_ik δ_jl + δ_il δ_jk) by Monte Carlo, and λ_max(M) in law."""
    n, d, N = 3, 7, 200_000
    K = lt.wishart_gram(n, d, n_seeds=N, seed=3).numpy()
    iu = np.triu_indices(n)
    vech = K[:, iu[0], iu[1]]
    pairs = list(zip(*iu))
    target = np.array([[d * (int(i == k and j == l) + int(i == l and j == k)) for (k, l) in pairs]
                       for (i, j) in pairs], dtype=float)
    ok, zmax, _ = cov_within(vech, d * np.array([float(i == j) for i, j in pairs]), target)
    assert ok, zmax
    assert np.all(np.abs(vech.mean(0) - d * np.array([i == j for i, j in pairs])) <= 5 * vech.std(0) / math.sqrt(N))
    # the law of the alignment range: Bartlett vs explicit X (two-sample, 5 SE on mean of λ_max(M))
    rng = np.random.default_rng(12)
    n, d, R = 6, 40, 3000
    KB = lt.wishart_gram(n, d, n_seeds=R, seed=4).numpy()
    top_b = np.array([np.linalg.eigvalsh(lt.alignment_matrix(k))[-1] for k in KB])
    top_x = []
    for _ in range(R):
        X = rng.standard_normal((n, d))
        top_x.append(np.linalg.eigvalsh(lt.alignment_matrix(X @ X.T))[-1])
    top_x = np.array(top_x)
    se = math.sqrt(top_b.var() / R + top_x.var() / R)
    assert abs(top_b.mean() - top_x.mean()) <= 5 * se


def test_mu_vs_n_against_direct_computation():
    """mu_vs_n's documented draws recomputed here, μ via ng.average_alignment, ranges via dense eigenproblems."""
    d = 10
    lam = np.concatenate([ng.power_law_spectrum(8, 1.0), [0.0, 0.0]])      # two dead coordinates
    ns = [3, 8, 20]
    sigma, seed = 0.4, 5
    rng = np.random.default_rng(13)
    theta_star, theta = rng.standard_normal(d), rng.standard_normal(d)
    out = lt.mu_vs_n(lam, ns, n_seeds=3, theta_star=theta_star, theta=theta, noise_std=sigma, seed=seed,
                     n_directions=4, chunk=2)
    keep = lam > 0
    for s in range(3):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
        X = torch.randn(20, int(keep.sum()), generator=gen, dtype=DT) * torch.as_tensor(np.sqrt(lam[keep]))
        eps = sigma * torch.randn(20, generator=gen, dtype=DT)
        for j, n in enumerate(ns):
            Xn = X[:n].numpy()
            e = Xn @ (theta - theta_star)[keep] - eps[:n].numpy()
            assert close(out["mu"][j, s], ng.average_alignment(Xn, e), 1e-8)
            assert close(out["mu"][j, s], dense_mu(Xn, e), 1e-8)
            lo, hi = lt.mu_range(X=Xn)
            assert close(out["lo"][j, s], lo, 1e-8) and close(out["hi"][j, s], hi, 1e-8)
            _, g = lt.g_eigendirections(e, X=Xn)
            k = min(4, g.size)
            assert np.allclose(out["g"][j, s, :k], g[:k], rtol=1e-7, atol=1e-10)
            assert np.all(np.isnan(out["g"][j, s, k:]))


# =========================================================================== directions

def test_directional_range_and_extreme_directions():
    rng = np.random.default_rng(14)
    n, d = 6, 11
    X = rng.standard_normal((n, d))
    e = rng.standard_normal(n)
    w2 = e ** 2 / (e @ e)
    top = lt.g_range(e)
    assert (n - 1) * w2.max() - 1e-12 <= top <= n * w2.max() + 1e-12
    Xp = np.linalg.pinv(X)
    # the noiseless direction: projections c = 1/e make every g_i·v equal
    v0 = Xp @ (1 / e)
    assert abs(ng.directional_alignment(X, e, v0)) < 1e-10
    # isolating sample i: g = (n − 1) ê_i²
    for i in range(n):
        vi = Xp @ np.eye(n)[i]
        assert close(ng.directional_alignment(X, e, vi), (n - 1) * w2[i], 1e-9)
    # the top is attained, and random directions stay inside [0, top]
    N = n * np.diag(w2) - np.outer(e, e) / (e @ e)
    vt = Xp @ np.linalg.eigh(N)[1][:, -1]
    assert close(ng.directional_alignment(X, e, vt), top, 1e-9)
    V = rng.standard_normal((d, 300))
    g = ng.directional_alignment(X, e, V)
    assert np.all(g >= -1e-12) and np.all(g <= top + 1e-12)


@pytest.mark.parametrize("shape", [(7, 12), (30, 5)])
def test_g_along_eigenvectors_of_G(shape):
    n, d = shape
    rng = np.random.default_rng(15)
    X = rng.standard_normal((n, d)) * np.geomspace(3, 0.3, d)
    e = rng.standard_normal(n)
    lam_G, g = lt.g_eigendirections(e, X=X)
    w, V = np.linalg.eigh(X.T @ X / n)
    w, V = w[::-1][:min(n, d)], V[:, ::-1][:, :min(n, d)]
    assert np.allclose(lam_G, w, rtol=1e-10)
    assert np.allclose(g, ng.directional_alignment(X, e, V), rtol=1e-8, atol=1e-12)
    top = lt.g_range(e)
    assert np.all(g <= top + 1e-12) and np.all(g >= -1e-12)


# =========================================================================== reparameterised models

def _models(d):
    return [ng.deep_linear_model(d, depth=3, width=5, seed=1), ng.deep_linear_model(d, depth=2, width=3, seed=2),
            ng.diagonal_linear_model(d, init_scale=0.8, seed=3), ng.linear_model(d, init_scale=1.0, seed=4)]


@pytest.mark.parametrize("k", range(4))
def test_reparam_features_reproduce_the_model(k):
    d, n = 4, 9
    model = _models(d)[k]
    rng = np.random.default_rng(16 + k)
    theta = model.theta0 + 0.3 * torch.as_tensor(rng.standard_normal(model.p))
    X = torch.as_tensor(rng.standard_normal((n, d)))
    y = torch.as_tensor(rng.standard_normal(n))
    dF = lt.feature_jacobian(model, theta, d)
    assert torch.allclose(dF, loop_jacobian(model, theta, torch.eye(d, dtype=DT)), atol=1e-12)
    F = model(theta, torch.eye(d, dtype=DT))
    assert torch.allclose(model(theta, X), X @ F, atol=1e-12)                  # f = ⟨F(θ), x⟩
    J = loop_jacobian(model, theta, X)
    assert torch.allclose(J, X @ dF, atol=1e-12)                               # J = X ∂F
    Xt = lt.reparam_features(model, theta, X)
    assert torch.allclose(Xt @ Xt.T, J @ J.T, atol=1e-10)                      # K = X P Xᵀ
    e = (X @ F - y).numpy()
    geo = ng.NoiseGeometry.from_model(model, theta, X, y)
    assert close(lt.mu_from_residuals(e, X=Xt), geo.mu(), 1e-9)
    lam_G, g = lt.g_eigendirections(e, X=Xt)
    G = (J.T @ J / n).numpy()
    w, V = np.linalg.eigh(G)
    r = lam_G.size
    assert np.allclose(lam_G, w[::-1][:r], rtol=1e-8)
    assert np.allclose(g, geo.g(V[:, ::-1][:, :r].copy()), rtol=1e-7, atol=1e-10)


def test_mu_does_not_change_when_p_grows_at_fixed_P():
    """Depth-2 networks f = aᵀWx of widths 3 and 40 with W₂ = QW₁, a₂ = Qa₁ (QᵀQ = I): same F and P, same μ."""
    d, n = 5, 8
    rng = np.random.default_rng(17)
    m1, m2 = ng.deep_linear_model(d, depth=2, width=3), ng.deep_linear_model(d, depth=2, width=40)
    W1, a1 = rng.standard_normal((3, d)), rng.standard_normal(3)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 3)))
    th1 = torch.as_tensor(np.concatenate([W1.ravel(), a1]))
    th2 = torch.as_tensor(np.concatenate([(Q @ W1).ravel(), Q @ a1]))
    assert (m1.p, m2.p) == (18, 240)
    X = torch.as_tensor(rng.standard_normal((n, d)))
    y = torch.as_tensor(rng.standard_normal(n))
    P1, P2 = lt.feature_metric(m1, th1, d), lt.feature_metric(m2, th2, d)
    assert torch.allclose(P1, P2, atol=1e-12)
    assert torch.allclose(P1, float(a1 @ a1) * torch.eye(d, dtype=DT) + torch.as_tensor(W1.T @ W1), atol=1e-12)
    mu1 = ng.NoiseGeometry.from_model(m1, th1, X, y).mu()
    mu2 = ng.NoiseGeometry.from_model(m2, th2, X, y).mu()
    assert close(mu1, mu2, 1e-10)
    # and the plain linear model with inputs XP^{1/2} gives the same number
    e = (m1(th1, X) - y).numpy()
    assert close(lt.mu_from_residuals(e, X=lt.reparam_features(m1, th1, X)), mu1, 1e-9)


def test_balanced_diagonal_point():
    F = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=DT)
    Pd = torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=DT)
    theta = lt.balanced_diagonal_point(F, Pd)
    model = ng.diagonal_linear_model(4)
    assert torch.allclose(model(theta, torch.eye(4, dtype=DT)), F, atol=1e-13)
    assert torch.allclose(lt.feature_metric(model, theta, 4), torch.diag(Pd), atol=1e-12)
    with pytest.raises(ValueError, match="pdiag"):
        lt.balanced_diagonal_point(F, torch.tensor([0.5, 2.0, 3.0, 10.0], dtype=DT))


@pytest.mark.parametrize("name", lt.PARAMETERIZATIONS)
def test_linear_alignment_summary_matches_the_model(name):
    out = lt.linear_alignment_summary(n=20, d=30, alpha=1.0, noise_std=0.3, parameterization=name, seed=2)
    # rebuild the draw independently through the public data functions and autodiff on the model
    lam = ng.power_law_spectrum(30, 1.0)
    X = ng.gaussian_inputs(20, lam, seed=2)
    gen = torch.Generator().manual_seed(2 + 7919)
    ts = torch.randn(30, generator=gen, dtype=DT)
    ts = ts / ts.norm()
    y = X @ ts + 0.3 * torch.randn(20, generator=gen, dtype=DT)
    if name == "linear":
        model, theta = ng.linear_model(30), torch.zeros(30, dtype=DT)
    elif name.startswith("diagonal"):
        model = ng.diagonal_linear_model(30)
        pd = 2.0 * torch.ones(30, dtype=DT) if name == "diagonal" else torch.logspace(2, 0, 30, dtype=DT)
        theta = torch.cat([pd.sqrt(), torch.zeros(30, dtype=DT)])
    else:
        model = ng.deep_linear_model(30, depth=3, width=32, seed=2)
        theta = model.theta0
    geo = ng.NoiseGeometry.from_model(model, theta, X, y)
    assert close(out["mu"], geo.mu(), 1e-8)
    assert out["p"] == model.p
    lo, hi = out["mu_range"]
    assert lo <= out["mu"] <= hi
    assert out["g_pop_bounds"][0] == 1 and 1 <= out["g_pop_bounds"][1] <= 2
    assert 1 <= out["mu_pop_bounds"][0] <= out["mu_pop"] <= out["mu_pop_bounds"][1] <= 2
    assert np.all(out["g"] <= out["g_max"] + 1e-12)


# =========================================================================== bad inputs

def test_bad_inputs_name_the_argument():
    S = np.array([2.0, 1.0])
    with pytest.raises(ValueError, match="S"):
        lt.population_mu(np.array([1.0, -1.0]), [1.0, 0.0])
    with pytest.raises(ValueError, match="delta"):
        lt.population_mu(S, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="0/0"):
        lt.population_mu(S, [0.0, 0.0])
    with pytest.raises(ValueError, match="noise_std"):
        lt.population_mu(S, [1.0, 0.0], noise_std=-1.0)
    with pytest.raises(ValueError, match="symmetric"):
        lt.population_mu(np.array([[1.0, 2.0], [0.0, 1.0]]), [1.0, 0.0])
    with pytest.raises(ValueError, match="snr"):
        lt.population_mu_bounds(S, snr=1.5)
    with pytest.raises(ValueError, match="P"):
        lt.population_mu(S, [1.0, 0.0], P=np.eye(3))
    with pytest.raises(ValueError, match="flat"):
        lt.population_g(np.array([1.0, 0.0]), [1.0, 0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="dF"):
        lt.population_g(S, [1.0, 0.0], np.ones(3), dF=np.ones((3, 3)))
    with pytest.raises(ValueError, match="e must have"):
        lt.mu_from_residuals(np.ones(3), X=np.ones((4, 2)))
    with pytest.raises(ValueError, match="interpolating"):
        lt.mu_from_residuals(np.zeros(4), X=np.random.default_rng(0).standard_normal((4, 2)))
    with pytest.raises(ValueError, match="exactly one"):
        lt.mu_range()
    with pytest.raises(ValueError, match="K must be square"):
        lt.mu_range(K=np.ones((2, 3)))
    with pytest.raises(ValueError, match="zero"):
        lt.mu_range(X=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="failure_prob"):
        lt.low_sample_bounds(5, S, failure_prob=1.5)
    with pytest.raises(ValueError, match="n must be"):
        lt.low_sample_bounds(1, S)
    with pytest.raises(ValueError, match="n must be"):
        lt.entrywise_mu_bounds(1, 0.1, 0.1)
    with pytest.raises(ValueError, match="eta and tau"):
        lt.entrywise_mu_bounds(3, -0.1, 0.1)
    with pytest.raises(ValueError, match="kappa"):
        lt.condition_number_mu_bounds(0.5, 3)
    with pytest.raises(ValueError, match="d must be"):
        lt.wishart_gram(5, 3)
    with pytest.raises(ValueError, match="ns must be strictly increasing"):
        lt.mu_vs_n(S, [5, 3])
    with pytest.raises(ValueError, match="ns must be >= 2"):
        lt.mu_vs_n(S, [1, 3])
    with pytest.raises(TypeError, match="ns"):
        lt.mu_vs_n(S, [2.5, 3.0])
    with pytest.raises(ValueError, match="theta_star"):
        lt.mu_vs_n(S, [2, 3], theta_star=np.ones(3))
    with pytest.raises(ValueError, match="0/0"):
        lt.mu_vs_n(S, [2, 3], theta_star=np.zeros(2))
    with pytest.raises(ValueError, match="spectrum"):
        lt.mu_vs_n(np.array([1.0, -1.0]), [2, 3])
    with pytest.raises(ValueError, match="parameterization"):
        lt.linear_alignment_summary(parameterization="conv")
    with pytest.raises(TypeError, match="n"):
        lt.linear_alignment_summary(n=2.5)
    with pytest.raises(ValueError, match="c must be"):
        lt.gram_deviations(np.eye(3), c=-1.0)


def test_population_mu_vectorised_over_delta():
    rng = np.random.default_rng(18)
    lam = ng.power_law_spectrum(7, 1.3)
    D = rng.standard_normal((5, 7))
    got = lt.population_mu(lam, D, noise_std=0.4)
    want = [lt.population_mu(np.diag(lam), D[i], noise_std=0.4) for i in range(5)]
    assert got.shape == (5,) and np.allclose(got, want, rtol=1e-13)
    with pytest.raises(ValueError, match="delta"):
        lt.population_mu(lam, np.ones((2, 6)))
