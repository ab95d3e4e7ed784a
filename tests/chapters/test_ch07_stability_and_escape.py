"""Tests of noisegeom.chapters.ch07_stability_and_escape (chapter 7, *Stability and escape from sharp
minima*), and the statements of chapter 7 as the chapter states them.

Every check uses an independent route: exhaustive enumeration of minibatches,
dense matrices and eigen-solvers, finite differences, explicit loops,
noisegeom.simulate run side by side, or Monte Carlo with a tolerance derived
from the sample size. The toolbox functions the chapter's network experiment uses
(find_minimum, hessian_spectra, sharpness_summary) are tested in tests/toolbox/.
"""

import warnings

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters.ch07_stability_and_escape import (BASIN_NOISES, DoubleBasin, aligned_escape, basin_escape,
                                                          group_fractions, least_squares_escape, least_squares_mu_h,
                                                          prescribed_least_squares, second_moment_operator,
                                                          stability_diagram, two_parabola_rates)
from _fixtures import enumerated_second_moment_map

DT = torch.float64


def _X(n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(1.2, 0.6, d)


def _psd(d, seed):
    A = np.random.default_rng(seed).standard_normal((d, d + 3))
    return A @ A.T / (d + 3)


# ------------------------------------------------------------------ two parabolas (prop-two-parabolas)

def test_two_parabola_rates_match_enumeration_and_thresholds():
    a = np.array([0.5, 3.5, 1.0])
    eta = 0.6
    r = two_parabola_rates(a, eta)
    f = 1 - eta * a
    # E w_2² / w_0² over all 9 ordered pairs of draws = m₂²
    pairs = [(f[i] * f[j]) ** 2 for i in range(3) for j in range(3)]
    assert np.mean(pairs) == pytest.approx(r["second_moment_factor"] ** 2, rel=1e-14)
    assert r["lyapunov"] == pytest.approx(np.log(np.abs(f)).mean(), rel=1e-14)
    assert r["gd_factor"] == pytest.approx(abs(1 - eta * a.mean()), rel=1e-14)
    # at the thresholds the factors equal 1
    assert two_parabola_rates(a, r["eta_gd"])["gd_factor"] == pytest.approx(1.0, rel=1e-12)
    assert two_parabola_rates(a, r["eta_second_moment"])["second_moment_factor"] == pytest.approx(1.0, rel=1e-12)
    # part 4 of the proposition: γ ≤ ½ log m₂
    for e in np.linspace(0.05, 1.2, 40):
        rr = two_parabola_rates(a, e)
        assert rr["lyapunov"] <= 0.5 * np.log(rr["second_moment_factor"]) + 1e-12


def test_two_parabola_lyapunov_against_real_sgd():
    """Mean of log|w_t/w_0|/t over seeds of ng.simulate ≈ γ, within 5 standard errors."""
    a = np.array([0.5, 3.5])
    eta, t, S = 0.85, 100, 2000
    X1 = torch.tensor(np.sqrt(a)[:, None])
    tr = ng.simulate(ng.linear_model(1), X1, torch.zeros(2, dtype=DT), torch.ones(1, dtype=DT), eta=eta,
                     steps=t, batch_size=1, n_seeds=S, seed=3, record_every=t)
    logs = 0.5 * np.log(tr.loss[-1] / tr.loss[0]) / t
    f = np.log(np.abs(1 - eta * a))
    se = f.std() / np.sqrt(t * S)             # each step adds an independent log-factor
    assert abs(logs.mean() - two_parabola_rates(a, eta)["lyapunov"]) < 5 * se


@pytest.mark.parametrize("bad,match", [(([-1.0, 2.0], 0.1), "curvatures"), (([0.0, 0.0], 0.1), "curvatures"),
                                       (([1.0, 2.0], 0.0), "eta"), (([[1.0]], 0.1), "curvatures")])
def test_two_parabola_rates_bad_inputs(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        two_parabola_rates(*bad)


# ------------------------------------------------------------------ prescribed least squares

def test_prescribed_least_squares_has_the_spectrum_and_interpolates():
    lam = np.array([0.3, 2.0, 1.0, 0.7])
    pr = prescribed_least_squares(lam, p=9, seed=4)
    X, U = pr.X.numpy(), pr.U.numpy()
    n = X.shape[0]
    H = X.T @ X / n
    w = np.linalg.eigvalsh(H)[::-1]
    assert np.allclose(w[:4], np.sort(lam)[::-1], rtol=0, atol=1e-13)
    assert np.allclose(w[4:], 0, atol=1e-13)
    assert np.allclose(U.T @ U, np.eye(4), atol=1e-13)
    assert np.allclose(H @ U, U * pr.lams, atol=1e-13)
    assert torch.allclose(pr.y, pr.X @ pr.theta_star, atol=1e-14)
    Z = pr.coordinates.numpy()
    assert np.allclose(Z.T @ Z / n, np.diag(pr.lams), atol=1e-13)
    # starting points lie in the range of H
    th = pr.perturbations(7, 1e-2, seed=1)
    diff = (th - pr.theta_star).numpy()
    assert np.allclose(diff - diff @ U @ U.T, 0, atol=1e-15)


@pytest.mark.parametrize("args,match", [(([1.0, 0.0], 5), "eigenvalues"), (([1.0, 2.0, 3.0], 2), "p"),
                                        (([[1.0]], 3), "eigenvalues")])
def test_prescribed_least_squares_bad_inputs(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        prescribed_least_squares(*args)


# ------------------------------------------------------------------ exact second-moment map (thm-second-moment-map)

@pytest.mark.parametrize("B,replacement", [(1, False), (2, False), (3, False), (2, True), (None, False), (5, False)])
def test_second_moment_operator_equals_enumeration_full_rank(B, replacement):
    X = _X(5, 3, seed=1)
    W = _psd(3, 2)
    op = second_moment_operator(X, 0.45, B, replacement=replacement)
    got = op.U @ op.apply(op.U.T @ W @ op.U) @ op.U.T
    exact = enumerated_second_moment_map(X, 0.45, B, replacement, W)
    assert np.abs(got - exact).max() <= 1e-13 * np.abs(exact).max()


def test_second_moment_operator_on_the_range_when_p_exceeds_n():
    """p > n: the map restricted to range(H) is Uᵀ E[(I−ηH_b)W(I−ηH_b)] U for W inside the range."""
    X = _X(4, 7, seed=3)
    op = second_moment_operator(X, 0.3, 2)
    assert op.lams.size == 4
    Wr = _psd(4, 5)
    W = op.U @ Wr @ op.U.T
    exact = op.U.T @ enumerated_second_moment_map(X, 0.3, 2, False, W) @ op.U
    assert np.abs(op.apply(Wr) - exact).max() <= 1e-13 * np.abs(exact).max()
    # and the core map (noisegeom.stability) agrees on symmetric matrices
    core = ng.least_squares_second_moment_map(torch.tensor(X), 0.3, 2)(torch.tensor(W)).numpy()
    assert np.abs(op.U.T @ core @ op.U - op.apply(Wr)).max() <= 1e-13 * np.abs(exact).max()


def test_second_moment_operator_properties():
    X = _X(6, 4, seed=6)
    op = second_moment_operator(X, 0.5, 2, replacement=True)
    T = op.matrix
    assert np.allclose(T, T.T, atol=0)
    # spectral radius: dense eigenvalues of T; and of the Kronecker matrix on all d×d matrices
    vals = np.linalg.eigvalsh(T)
    rho = op.spectral_radius()
    assert rho == pytest.approx(np.abs(vals).max(), rel=1e-12)
    n, d = X.shape
    H = X.T @ X / n
    four = sum(np.kron(np.outer(x, x), np.outer(x, x)) for x in X) / n
    c = 1 / 2
    K = np.kron(np.eye(d) - 0.5 * H, np.eye(d) - 0.5 * H) + 0.25 * c * (four - np.kron(H, H))
    assert rho == pytest.approx(np.abs(np.linalg.eigvals(K)).max(), rel=1e-10)
    # leading eigen-matrix: PSD, trace 1, eigen-matrix of the map
    r, Wstar = op.leading()
    assert r == pytest.approx(rho, rel=1e-12)
    assert np.trace(Wstar) == pytest.approx(1.0)
    assert np.linalg.eigvalsh(Wstar).min() > -1e-12
    assert np.allclose(op.apply(Wstar), rho * Wstar, atol=1e-12)
    # coordinates round trip
    W = _psd(4, 1)
    assert np.allclose(op.from_coordinates(op.to_coordinates(W)), W, atol=1e-15)


def test_spectral_radius_lanczos_path_matches_dense():
    pr = prescribed_least_squares(np.arange(1, 21) ** -0.5, p=30, seed=0)   # m = 210 > 120: Lanczos
    for eta, B in [(1.0, 2), (0.2, 8), (2.1, None), (1.5, 16)]:
        op = second_moment_operator(pr.X, eta, B)
        assert op.matrix.shape[0] == 210
        vals = np.linalg.eigvalsh(op.matrix)
        assert op.spectral_radius() == pytest.approx(max(vals[-1], -vals[0]), rel=1e-9)


def test_gd_operator_is_the_linear_map():
    X = _X(5, 3, seed=2)
    op = second_moment_operator(X, 0.7, None)
    H = X.T @ X / 5
    W = _psd(3, 3)
    P = np.eye(3) - 0.7 * H
    assert np.allclose(op.U @ op.apply(op.U.T @ W @ op.U) @ op.U.T, P @ W @ P, atol=1e-13)
    assert op.spectral_radius() == pytest.approx(((1 - 0.7 * np.linalg.eigvalsh(H)) ** 2).max(), rel=1e-12)


@pytest.mark.parametrize("kwargs,match", [(dict(X=np.zeros((3, 2)), eta=0.1), "X is zero"),
                                          (dict(X=_X(), eta=-1.0), "eta"),
                                          (dict(X=_X(), eta=0.1, batch_size=9), "batch_size"),
                                          (dict(X=np.ones(3), eta=0.1), "X")])
def test_second_moment_operator_bad_inputs(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        second_moment_operator(**kwargs)


# ------------------------------------------------------------------ μ_H and the exact Frobenius bound

def test_mu_h_against_noise_covariance_of_the_package():
    """μ_H = Tr(Σ̄₁(H) H)/‖H‖_F⁴ with Σ̄₁(H) = Σ_j λ_j Σ₁(u_j), Σ₁ from ng.noise_covariance at θ* + u_j."""
    X = torch.tensor(_X(7, 4, seed=8))
    n, d = X.shape
    ts = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=DT)
    y = X @ ts
    model = ng.linear_model(d)
    H = (X.T @ X / n).numpy()
    lam, U = np.linalg.eigh(H)
    Sbar = np.zeros((d, d))
    for j in range(d):
        G = ng.per_sample_gradients(model, ts + torch.tensor(U[:, j]), X, y)
        Sbar += lam[j] * ng.noise_covariance(G).numpy()
    mu = np.trace(Sbar @ H) / (H * H).sum() ** 2
    assert least_squares_mu_h(X) == pytest.approx(mu, rel=1e-12)
    with pytest.raises(ValueError, match="X is zero"):
        least_squares_mu_h(np.zeros((3, 2)))


def test_exact_map_frobenius_bound_prop_exact_frobenius():
    """ρ(T) ≥ ⟨Ĥ, TĤ⟩ = Σ(1−ηλ)²λ²/‖λ‖² + η² c μ_H ‖H‖_F², as stated in chapter 7."""
    for seed, (eta, B, rep) in enumerate([(0.3, 1, False), (0.8, 2, True), (1.2, 3, False), (0.1, 1, True)]):
        X = _X(6, 3, seed=seed)
        op = second_moment_operator(X, eta, B, replacement=rep)
        lam = op.lams
        c = ng.batch_noise_factor(6, B, replacement=rep)
        formula = ((1 - eta * lam) ** 2 * lam ** 2).sum() / (lam ** 2).sum() \
            + eta ** 2 * c * least_squares_mu_h(X) * (lam ** 2).sum()
        assert op.rayleigh_h() == pytest.approx(formula, rel=1e-12)
        assert op.spectral_radius() >= formula * (1 - 1e-12)


# ------------------------------------------------------------------ the aligned model (prop-aligned-map, thm-frobenius-bound,
#                                                                    prop-secular, thm-perron-vector)

def test_aligned_map_against_monte_carlo_of_the_aligned_noise():
    """One step from a fixed w: E (u_kᵀw⁺)² = (M w²)_k for w⁺ = (I − ηΛ)w − ηξ, ξ ~ N(0, μ (wᵀΛw/B) Λ)."""
    rng = np.random.default_rng(0)
    lam = np.array([2.0, 1.0, 0.5, 0.1, 0.0])
    eta, B, mu = 0.6, 2, 0.8
    w = rng.standard_normal(5)
    N = 200_000
    xi = rng.standard_normal((N, 5)) * np.sqrt(mu * (w @ (lam * w)) / B * lam)
    wp = (1 - eta * lam) * w - eta * xi
    est = (wp ** 2).mean(0)
    se = (wp ** 2).std(0) / np.sqrt(N)
    pred = ng.aligned_second_moment_map(lam, eta, B, mu) @ w ** 2
    assert np.all(np.abs(est - pred) <= 5 * se + 1e-10 * np.abs(pred))


def test_rho_bound_and_perron_formula_as_stated():
    rng = np.random.default_rng(1)
    for _ in range(60):
        p = int(rng.integers(2, 12))
        lam = rng.uniform(0, 1, p) ** 2 * rng.uniform(0.5, 3)
        lam[rng.integers(0, p)] = 0.0 if rng.random() < 0.3 else lam[0]
        if not (lam > 0).any():
            continue
        eta = rng.uniform(0.05, 2.5) / lam.max()
        B, mu = int(rng.integers(1, 9)), rng.uniform(0.3, 2)
        res = aligned_escape(lam, eta, B, mu)
        pos = lam > 0
        M = ng.aligned_second_moment_map(lam[pos], eta, B, mu)
        vals, vecs = np.linalg.eigh(M)
        rho = vals[-1]
        assert res["rho"] == pytest.approx(rho, rel=1e-10)
        # thm-frobenius-bound: ρ ≥ Σ(1−ηλ)²λ²/‖λ‖² + μη²‖H‖_F²/B ≥ μη²‖H‖_F²/B
        first = ((1 - eta * lam) ** 2 * lam ** 2).sum() / (lam ** 2).sum()
        assert rho >= first + mu * eta ** 2 * (lam ** 2).sum() / B - 1e-10 * rho
        assert res["frobenius_bound"] == pytest.approx(mu * eta ** 2 * (lam ** 2).sum() / B, rel=1e-14)
        # thm-perron-vector: u_k ∝ λ_k/(ρ − (1−ηλ_k)²), positive on λ_k > 0, zero elsewhere
        v = np.abs(vecs[:, -1])
        assert np.allclose(res["perron"][pos], v / v.sum(), atol=1e-9)
        assert np.all(res["perron"][~pos] == 0) and np.all(res["perron"][pos] > 0)
        core = ng.perron_vector_formula(lam, eta, B, rho)
        assert np.allclose(core, res["perron"], atol=1e-9)
        # prop-secular: ρ > 1 iff ηλ_1 ≥ 2 or s > 1; trace and Frobenius conditions are sufficient
        unstable = eta * lam.max() >= 2 or res["criterion"] > 1
        if abs(rho - 1) > 1e-9:
            assert unstable == (rho > 1)
            assert res["sgd_stable"] == (rho <= 1)
        if eta * lam.max() < 2:
            assert res["criterion"] >= res["trace_bound"] - 1e-12
            assert res["criterion"] >= res["frobenius_bound"] - 1e-12


def test_aligned_escape_equal_eigenvalues_closed_form():
    """Exercise ex-ch7-trace-frobenius: m equal eigenvalues ℓ give ρ = (1−ηℓ)² + (μ/B) m η² ℓ²."""
    for m, ell, eta, B, mu in [(5, 0.4, 1.0, 1, 1.0), (30, 1.0, 0.1, 2, 0.7), (1, 2.0, 0.3, 4, 1.5)]:
        res = aligned_escape(np.full(m, ell), eta, B, mu)
        assert res["rho"] == pytest.approx((1 - eta * ell) ** 2 + mu / B * m * eta ** 2 * ell ** 2, rel=1e-12)
        assert np.allclose(res["perron"], 1 / m)


@pytest.mark.parametrize("args,match", [(([-1.0, 1.0], 0.1), "lams"), (([0.0, 0.0], 0.1), "positive"),
                                        (([1.0], -0.1), "eta"), (([1.0], 0.1, 0), "batch_size"),
                                        (([1.0], 0.1, 1, -1.0), "mu")])
def test_aligned_escape_bad_inputs(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        aligned_escape(*args)


# ------------------------------------------------------------------ energy fractions

def test_group_fractions_against_a_loop():
    rng = np.random.default_rng(2)
    U = np.linalg.qr(rng.standard_normal((8, 5)))[0]
    D = rng.standard_normal((3, 4, 8))
    E = (D @ U) ** 2
    dist = np.linalg.norm(D, axis=-1)
    got = group_fractions(E, dist, [0, 1, 3, 5])
    for i in range(3):
        for j in range(4):
            d2 = (D[i, j] ** 2).sum()
            want = [E[i, j, 0] / d2, E[i, j, 1:3].sum() / d2, E[i, j, 3:5].sum() / d2,
                    1 - E[i, j].sum() / d2]
            assert np.allclose(got[i, j], want, atol=1e-14)
    assert np.allclose(got.sum(-1), 1)
    assert np.all(group_fractions(E, np.zeros((3, 4)), [0, 5]) == 0)


@pytest.mark.parametrize("edges,match", [([1, 3], "edges"), ([0, 3, 3], "edges"), ([0, 9], "edges")])
def test_group_fractions_bad_edges(edges, match):
    with pytest.raises(ValueError, match=match):
        group_fractions(np.ones((2, 5)), np.ones(2), edges)
    with pytest.raises(ValueError, match="distance"):
        group_fractions(np.ones((2, 5)), np.ones(3), [0, 2])


# ------------------------------------------------------------------ escape runs and the diagram

@pytest.mark.parametrize("B,eta", [(2, 1.0), (None, 2.1), (1, 0.4)])
def test_least_squares_escape_reproduces_simulate(B, eta):
    pr = prescribed_least_squares(np.arange(1, 13) ** -0.5, p=20, seed=1)
    S = 12
    th0 = pr.perturbations(S, 1e-3, seed=4)
    L0 = ((pr.X @ (th0 - pr.theta_star).T) ** 2).mean(0) / 2
    thr = float(1e4 * L0.median())
    tr = ng.simulate(ng.linear_model(20), pr.X, pr.y, th0, eta=eta, steps=60, batch_size=B, n_seeds=S,
                     seed=4, escape_loss=thr, record_every=60)
    got = least_squares_escape(pr, [0.3, eta], B, steps=60, n_seeds=S, seed=4, init_scale=1e-3)
    assert got["threshold"] == pytest.approx(thr, rel=1e-12)
    assert np.array_equal(got["escaped_at"][1], tr.escaped_at)
    w_sim = ((torch.tensor(tr.final_theta) - pr.theta_star) @ pr.U).numpy()
    assert np.abs(w_sim - got["final_w"][1]).max() <= 1e-10 * (1 + np.abs(w_sim).max())


def test_stability_diagram_consistency():
    pr = prescribed_least_squares(np.arange(1, 9) ** -0.5, p=12, seed=2)
    etas = np.array([0.2, 1.0, 2.3])
    d = stability_diagram(pr, etas, [1, 8], steps=40, n_seeds=16, seed=3)
    for a, B in enumerate([1, 8]):
        for b, eta in enumerate(etas):
            assert d["rho"][a, b] == pytest.approx(second_moment_operator(pr.X, eta, B).spectral_radius(), rel=1e-9)
        run = least_squares_escape(pr, etas, B, steps=40, n_seeds=16, seed=3 + a)
        assert np.allclose(d["escaped"][a], run["escaped"])
    # the row B = n is GD: ρ = max (1 − ηλ)², escape iff ηλ_1 > 2
    assert np.allclose(d["rho"][1], ((1 - np.outer(etas, pr.lams)) ** 2).max(1), rtol=1e-9)
    assert list(d["escaped"][1]) == [0.0, 0.0, 1.0]
    assert d["c"][1] == 0.0 and d["mu_h"] == pytest.approx(least_squares_mu_h(pr.X))
    with pytest.raises(TypeError, match="problem"):
        stability_diagram(pr.X, etas, [1])
    with pytest.raises(ValueError, match="etas"):
        stability_diagram(pr, [-1.0], [1])
    with pytest.raises(ValueError, match="batch_size"):
        least_squares_escape(pr, [0.1], 99)


# ------------------------------------------------------------------ the double basin

def test_double_basin_derivatives_by_finite_differences_and_autograd():
    basin = DoubleBasin(tau=0.01)
    rng = np.random.default_rng(4)
    pts = rng.uniform([-0.1, -0.1], [0.4, 0.1], (20, 2))
    h = 1e-6
    E = np.eye(2)
    fd = np.stack([(basin.loss(pts + h * E[i]) - basin.loss(pts - h * E[i])) / (2 * h) for i in range(2)], 1)
    assert np.allclose(basin.grad(pts), fd, rtol=1e-6, atol=1e-7)
    fdH = np.stack([(basin.grad(pts + h * E[i]) - basin.grad(pts - h * E[i])) / (2 * h) for i in range(2)], 1)
    assert np.allclose(basin.hessian(pts), fdH, rtol=1e-5, atol=1e-4)
    # autograd of the same formula written in torch
    w = torch.tensor(pts[3], requires_grad=True)
    Hs, Hf, m = (torch.tensor(a) for a in (basin.Hs, basin.Hf, basin.m))
    L = -basin.tau * torch.logsumexp(torch.stack([-0.5 * w @ Hs @ w, -0.5 * (w - m) @ Hf @ (w - m)]) / basin.tau, 0)
    L.backward()
    assert np.allclose(w.grad.numpy(), basin.grad(pts[3]), rtol=1e-12, atol=1e-14)


def test_double_basin_minima_and_barrier():
    basin = DoubleBasin()
    assert np.allclose(basin.hessian(np.zeros(2)), basin.Hs, atol=1e-8)
    assert np.allclose(basin.hessian(basin.m), basin.Hf, atol=1e-8)
    assert np.sort(np.linalg.eigvalsh(basin.Hs)).tolist() == [20.0, 200.0]
    # barrier: brute force min of L_s over grid points on the boundary band of the sharp basin
    xs = np.linspace(-0.2, 0.2, 1601)
    G = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    gap = basin.sharp_loss(G) - basin.flat_loss(G)
    outside = gap >= 0                        # L_s ≥ L_f: not in the sharp basin
    assert basin.barrier() == pytest.approx(basin.sharp_loss(G[outside]).min(), rel=3e-2)
    # along the sharp axis the boundary is at w1 = m/(1 + sqrt(200/2)) = 0.3/11
    assert basin.barrier() == pytest.approx(0.5 * 200 * (0.3 / 11) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="sharp"):
        DoubleBasin(sharp=((1.0, 2.0), (2.0, 1.0)))
    with pytest.raises(ValueError, match="tau"):
        DoubleBasin(tau=0.0)


@pytest.mark.parametrize("noise", ["isotropic", "hessian", "top_eigenvector", "sgd_like"])
def test_basin_noise_covariance_one_step(noise):
    """From w0, one step: w1 = w0 − η∇L(w0) − ηξ, so Cov(w1)/η² must be C (5 standard errors)."""
    basin = DoubleBasin()
    eta, S, trace = 0.002, 40_000, 30.0
    w0 = np.array([0.004, -0.01])
    out = basin_escape(basin, eta=eta, steps=1, noise=noise, trace=trace, batch_size=2, n_seeds=S, seed=5, w0=w0)
    xi = -(out["final"] - (w0 - eta * basin.grad(w0))) / eta
    vals, vecs = np.linalg.eigh(basin.Hs)
    C = {"isotropic": trace / 2 * np.eye(2), "hessian": trace * basin.Hs / vals.sum(),
         "top_eigenvector": trace * np.outer(vecs[:, -1], vecs[:, -1]),
         "sgd_like": 2 * basin.loss(w0) / 2 * basin.Hs}[noise]
    emp = xi.T @ xi / S
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / S)
    assert np.all(np.abs(emp - C) <= 5 * se + 1e-12)
    assert np.abs(xi.mean(0)).max() <= 5 * np.sqrt(np.diag(C).max() / S) + 1e-12


def test_basin_gd_loop_escape_and_divergence():
    basin = DoubleBasin()
    w = np.array([0.05, 0.02])
    out = basin_escape(basin, eta=0.003, steps=30, noise="none", n_seeds=2, w0=w, record_every=1)
    for t in range(30):
        w = w - 0.003 * basin.grad(w)
    assert np.allclose(out["final"][0], w, atol=1e-15)
    assert out["paths"].shape == (31, 2, 2)
    # starting in the flat basin counts as escaped at the first step
    assert np.all(basin_escape(basin, eta=0.001, steps=3, noise="none", n_seeds=2, w0=basin.m)["escaped_at"] == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = basin_escape(basin, eta=3.0, steps=1000, noise="none", n_seeds=2, w0=[0.05, 0.0])
    assert np.all(big["diverged_at"] > 0) and np.isfinite(big["final"]).all()
    with pytest.raises(ValueError, match="noise"):
        basin_escape(basin, eta=0.01, steps=1, noise="levy")
    with pytest.raises(ValueError, match="trace"):
        basin_escape(basin, eta=0.01, steps=1, noise="isotropic")
    assert "sgd_like" in BASIN_NOISES
