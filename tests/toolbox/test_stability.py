"""Tests of noisegeom.stability: second-moment maps against exact enumeration, Monte Carlo and long SGD runs."""


import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import DT, cov_within, enumerated_second_moment_map


def _data(n=6, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.standard_normal((n, d)) * np.linspace(1.0, 0.5, d))


def _sym(d, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d + 2))
    return torch.as_tensor(A @ A.T / (d + 2))


# ---------------------------------------------------------------- exact least-squares map

@pytest.mark.parametrize("B,replacement", [(1, False), (2, False), (3, True), (6, False), (None, False)])
def test_least_squares_map_equals_enumeration_over_every_batch(B, replacement):
    """One SGD step at interpolation: w⁺ = (I − η H_b) w, H_b = (1/B) Σ_{i∈b} x_i x_iᵀ.

    E[w⁺w⁺ᵀ] = avg over all batches b of (I − ηH_b) W (I − ηH_b), exactly (all B-subsets,
    or all n^B ordered tuples with replacement; B=None is GD).
    """
    X = _data(6, 3, seed=1)
    n, d = X.shape
    eta = 0.4
    W = _sym(d, 2)
    exact = enumerated_second_moment_map(X.numpy(), eta, B, replacement, W.numpy())
    apply = ng.least_squares_second_moment_map(X, eta, B, replacement=replacement)
    got = apply(W).numpy()
    assert np.abs(got - exact).max() <= 1e-13 * np.abs(exact).max()
    # a stack of matrices is mapped one by one
    stack = torch.stack([W, 2 * W])
    assert torch.allclose(apply(stack)[1], 2 * apply(W), rtol=1e-13, atol=0)


@pytest.mark.parametrize("B,replacement", [(2, False), (2, True)])
def test_least_squares_map_against_monte_carlo_of_real_minibatch_steps(B, replacement):
    """Monte Carlo over minibatches drawn by sample_batches: 5 SE entrywise (fourth moments)."""
    X = _data(6, 3, seed=3)
    n, d = X.shape
    eta, N = 0.5, 30000
    w = torch.tensor([1.0, -0.7, 0.4], dtype=DT)
    idx = ng.sample_batches(n, B, N, replacement=replacement, seed=11)
    Xb = X[idx]                                              # (N, B, d)
    Hw = torch.einsum("nbd,nbe,e->nd", Xb, Xb, w) / B        # H_b w
    wplus = (w - eta * Hw).numpy()
    target = ng.least_squares_second_moment_map(X, eta, B, replacement=replacement)(torch.outer(w, w)).numpy()
    ok, z, _ = cov_within(wplus, np.zeros(d), target)
    assert ok, z


def test_second_moment_spectral_radius_against_kronecker_matrix():
    """ρ of T = E[(I−ηH_b) ⊗ (I−ηH_b)] = (I−ηH)⊗(I−ηH) + η² c [(1/n) Σ H_i⊗H_i − H⊗H], by np.kron."""
    X = _data(7, 3, seed=4)
    Xn = X.numpy()
    n, d = Xn.shape
    H = Xn.T @ Xn / n
    I = np.eye(d)
    for eta in (0.3, 1.2):
        for B, rep in [(1, True), (3, False), (7, False), (None, False)]:
            c = 0.0 if B is None else ng.batch_noise_factor(n, B, replacement=rep)
            four = sum(np.kron(np.outer(x, x), np.outer(x, x)) for x in Xn) / n
            T = np.kron(I - eta * H, I - eta * H) + eta ** 2 * c * (four - np.kron(H, H))
            rho = np.abs(np.linalg.eigvals(T)).max()
            got = ng.second_moment_spectral_radius(X, eta, B, replacement=rep)
            assert got == pytest.approx(rho, rel=1e-10)
    # GD (B = None, or B = n without replacement): ρ = max_k (1 − ηλ_k)²
    lam = np.linalg.eigvalsh(H)
    for B in (None, n):
        assert ng.second_moment_spectral_radius(X, 0.9, B) == pytest.approx(((1 - 0.9 * lam) ** 2).max(), rel=1e-10)


def test_spectral_radius_is_not_polluted_by_antisymmetric_matrices():
    """Regression: the map applied to a non-symmetric basis matrix must be E[(I−ηA) W (I−ηA)].

    With B = 1 and replacement (c = 1) the old form W − η(HW + (HW)ᵀ) had a spurious
    eigenvalue exactly 1 on antisymmetric W, so ρ read 1 for a contracting run.
    """
    X = _data(6, 2, seed=0)
    lam_max = np.linalg.eigvalsh((X.T @ X / 6).numpy()).max()
    rho = ng.second_moment_spectral_radius(X, 0.5 / lam_max, 1, replacement=True)
    assert rho < 0.99


# ---------------------------------------------------------------- long SGD runs vs the map

def _log_sq_dist(X, B, replacement, eta, steps, n_seeds, seed=1):
    """log ‖w_t‖² over seeds for SGD on least squares with θ* = 0 (so w = θ keeps full precision)."""
    d = X.shape[1]
    model = ng.linear_model(d)
    zero = torch.zeros(d, dtype=DT)
    traj = ng.simulate(model, X, X @ zero, torch.ones(d, dtype=DT) / np.sqrt(d), eta=eta, steps=steps,
                       batch_size=B, replacement=replacement, n_seeds=n_seeds, seed=seed, theta_ref=zero,
                       record_every=5)
    return traj.steps, 2 * np.log(traj.distance)


def _slope(t, v, start):
    sel = t >= start
    return float(np.polyfit(t[sel], v[sel], 1)[0])


def test_long_sgd_log_moments_decay_at_the_rate_of_the_exact_map():
    """Weak noise (B = 8 of n = 10, without replacement, ηλ_max = 1.6): rates match log ρ.

    Why log-moments and medians, not raw means: E‖w_t‖² = Tr(Tᵗ W₀) ~ ρᵗ is carried by rare
    paths (the log of ‖w_t‖² is close to a random walk with drift γ and variance rate s², so
    E‖w_t‖² ≈ exp(t(γ + s²/2)) while the median and E log‖w_t‖² move at rate γ). A sample
    mean over a few thousand seeds misses those paths. So we fit the slope γ̂ of E log‖w_t‖²
    and s² of Var log‖w_t‖² over t, and check γ̂ + s²/2 ≈ log ρ (2% of |log ρ|) and, since the
    noise is weak here, γ̂ ≈ log ρ and the median slope ≈ log ρ (5%).
    """
    X = _data(10, 3, seed=0)
    lam_max = np.linalg.eigvalsh((X.T @ X / 10).numpy()).max()
    eta = 1.6 / lam_max
    log_rho = np.log(ng.second_moment_spectral_radius(X, eta, 8))
    assert log_rho < -0.05                                   # a contracting case
    t, l = _log_sq_dist(X, 8, False, eta, steps=200, n_seeds=1000)
    g = _slope(t, l.mean(1), 60)
    s2 = _slope(t, l.var(1), 60)
    med = _slope(t, np.median(l, 1), 60)
    assert abs(g + s2 / 2 - log_rho) <= 0.02 * abs(log_rho), (g, s2, log_rho)
    assert abs(g - log_rho) <= 0.05 * abs(log_rho)
    assert abs(med - log_rho) <= 0.05 * abs(log_rho)


def test_strong_noise_sgd_escapes_where_gd_is_stable_and_jensen_bounds_the_rate():
    """Strong noise (B = 2 of n = 10 with replacement, ηλ_max = 1.6 < 2: GD contracts).

    The exact map has ρ > 1 and the median of ‖w_t‖² indeed grows (SGD escapes, GD would
    not), but more slowly than ρᵗ: by Jensen E log‖w_t‖² ≤ log E‖w_t‖² = log Tr(Tᵗ W₀), so
    the slope of E log‖w_t‖² is at most log ρ, here by a wide margin (rare paths again).
    The map itself is checked exactly against the same simulator over the first steps, where
    5000 seeds estimate E[w_t w_tᵀ] well (5 SE entrywise).
    """
    X = _data(10, 5, seed=5)
    n, d = X.shape
    lam = np.linalg.eigvalsh((X.T @ X / n).numpy())
    eta = 1.6 / lam.max()
    assert np.abs(1 - eta * lam).max() < 1                   # GD is stable
    rho = ng.second_moment_spectral_radius(X, eta, 2, replacement=True)
    assert rho > 1.5
    t, l = _log_sq_dist(X, 2, True, eta, steps=150, n_seeds=1000, seed=2)
    g = _slope(t, l.mean(1), 50)
    med = _slope(t, np.median(l, 1), 50)
    assert med > 0.05 and g > 0.05                           # typical paths grow
    assert g < np.log(rho) - 0.1                             # Jensen, with room to spare

    # short horizon: the exact map against the simulator's own minibatches
    model = ng.linear_model(d)
    zero = torch.zeros(d, dtype=DT)
    w0 = torch.ones(d, dtype=DT) / np.sqrt(d)
    traj = ng.simulate(model, X, X @ zero, w0, eta=eta, steps=3, batch_size=2, replacement=True,
                       n_seeds=5000, seed=3, record_theta=True)
    apply = ng.least_squares_second_moment_map(X, eta, 2, replacement=True)
    W = torch.outer(w0, w0)
    for step in range(1, 4):
        W = apply(W)
        ok, z, _ = cov_within(traj.theta[step], np.zeros(d), W.numpy())
        assert ok, (step, z)


# ---------------------------------------------------------------- aligned quadratic model

def test_aligned_map_against_monte_carlo_of_the_noisy_step():
    """w⁺ = (I − ηΛ)w − ηξ, ξ ~ N(0, μ(2L/B)Λ), L = ½wᵀΛw: E[(w⁺_k)²] = (M q)_k with q = w²."""
    lam = np.array([3.0, 1.0, 0.2, 0.0])
    eta, B, mu = 0.3, 2, 0.7
    M = ng.aligned_second_moment_map(lam, eta, B, mu)
    w = np.array([0.5, -1.0, 2.0, 1.5])
    L = 0.5 * (lam * w * w).sum()
    rng = np.random.default_rng(0)
    N = 200000
    xi = rng.standard_normal((N, 4)) * np.sqrt(mu * 2 * L / B * lam)
    wp2 = ((1 - eta * lam) * w - eta * xi) ** 2
    se = wp2.std(0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(wp2.mean(0) - M @ (w * w)) <= 5 * se + 1e-15)
    assert np.all(M >= 0)
    assert np.allclose(M, M.T)


def _secular_root(lam, eta, B, mu):
    """Largest root of 1 = (μη²/B) Σ_{λ_k>0} λ_k² / (ρ − (1 − ηλ_k)²), by bisection.

    M u = ρ u with M = D + (μη²/B) λλᵀ, D = diag((1 − ηλ)²) gives u = (μη²/B)(λᵀu)(ρ − D)⁻¹λ,
    hence this equation for every eigenvalue ρ above max D over curved directions.
    """
    lp = lam[lam > 0]
    f = lambda r: mu * eta ** 2 / B * (lp ** 2 / (r - (1 - eta * lp) ** 2)).sum() - 1
    lo = ((1 - eta * lp) ** 2).max() * (1 + 1e-15) + 1e-300
    hi = lo + mu * eta ** 2 / B * (lp ** 2).sum() + 1
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("mu", [1.0, 0.6])
def test_perron_root_vector_formula_and_frobenius_lower_bound(mu):
    rng = np.random.default_rng(7)
    for trial in range(20):
        lam = np.sort(rng.uniform(0, 4, 6))[::-1]
        lam[-1] = 0.0 if trial % 3 == 0 else lam[-1]          # a flat direction now and then
        eta, B = rng.uniform(0.05, 0.45), int(rng.integers(1, 6))
        M = ng.aligned_second_moment_map(lam, eta, B, mu)
        rho, u = ng.perron(M)
        assert rho == pytest.approx(np.abs(np.linalg.eigvals(M)).max(), rel=1e-10)
        assert np.all(u >= 0) and u.sum() == pytest.approx(1.0)
        assert np.allclose(M @ u, rho * u, rtol=1e-9, atol=1e-12)
        # ρ is the secular root, or 1 when a flat direction (λ_k = 0, M_kk = 1) dominates it
        rho_s = _secular_root(lam, eta, B, mu)
        flat = (lam == 0).any()
        assert rho == pytest.approx(max(rho_s, 1.0) if flat else rho_s, rel=1e-9)
        if rho_s > 1 or not flat:
            # the formula u_k ∝ λ_k / (ρ − (1 − ηλ_k)²): every curved direction gets mass, a flat one none
            assert np.allclose(ng.perron_vector_formula(lam, eta, B, rho), u, rtol=1e-7, atol=1e-12)
            assert np.all(u[lam > 0] > 0) and np.all(u[lam == 0] == 0)
        else:
            # the noise cannot grow the second moment: the Perron vector is the flat direction
            assert np.allclose(u, (lam == 0) / (lam == 0).sum(), atol=1e-9)
        # ρ ≥ μη²‖H‖_F²/B  (Rayleigh quotient of M at λ/‖λ‖, M ≥ (μη²/B)λλᵀ entrywise)
        assert rho >= mu * eta ** 2 * (lam ** 2).sum() / B * (1 - 1e-12)


def test_sgd_unstable_beyond_frobenius_threshold_while_gd_is_stable():
    eta, B, mu = 0.1, 1, 1.0
    lam = np.full(30, 6.0)                                    # λ_max = 6 < 2/η = 20: GD stable
    assert ng.gd_stable(lam.max(), eta)
    fro = np.sqrt((lam ** 2).sum())
    assert fro > ng.frobenius_threshold(eta, B, mu)           # ‖H‖_F ≈ 32.9 > √(B/μ)/η = 10
    rho, u = ng.perron(ng.aligned_second_moment_map(lam, eta, B, mu))
    assert rho > 1
    # below the threshold with the same λ_max the noise term is small
    rho_small, _ = ng.perron(ng.aligned_second_moment_map(lam[:2], eta, B, mu))
    assert rho_small < 1


def test_gd_stable_and_frobenius_threshold_closed_forms():
    assert ng.gd_stable(2.0, 1.0) and not ng.gd_stable(2.0 + 1e-9, 1.0)
    assert ng.frobenius_threshold(0.5, 8, 2.0) == pytest.approx(np.sqrt(8 / 2.0) / 0.5, rel=1e-15)
    assert ng.frobenius_threshold(0.5, 8) == pytest.approx(np.sqrt(8) / 0.5, rel=1e-15)


def test_nonuniformity_against_dense_loop():
    X = _data(9, 4, seed=8)
    Xn = X.numpy()
    n = Xn.shape[0]
    Hs = [np.outer(x, x) for x in Xn]
    H = sum(Hs) / n
    M = sum(Hi @ Hi for Hi in Hs) / n - H @ H
    assert ng.nonuniformity(X) == pytest.approx(np.sqrt(np.linalg.eigvalsh(M).max()), rel=1e-12)
    # identical samples: every H_i = H, so the non-uniformity vanishes
    same = torch.as_tensor(np.tile(Xn[:1], (5, 1)))
    # (a square root of a rounding-level eigenvalue: zero to about √ε ≈ 1e-8 relative)
    assert ng.nonuniformity(same) <= 1e-7 * float((same ** 2).sum(1).max())


def test_perron_vector_formula_checks_the_secular_equation():
    # With a flat direction and weak noise the Perron root is 1 (the flat direction's
    # diagonal entry), not the noise-driven root: the formula must refuse it when mu is given.
    lam = np.array([1.0, 0.5, 0.0])
    eta, B, mu = 0.1, 4, 1.0
    M = ng.aligned_second_moment_map(lam, eta, B, mu)
    rho, u = ng.perron(M)
    assert rho == pytest.approx(1.0)
    with pytest.raises(ValueError, match="secular equation"):
        ng.perron_vector_formula(lam, eta, B, rho, mu=mu)
    # where the noise-driven root is the Perron root the check passes and the formula is the vector
    lam = np.array([3.0, 2.0, 1.0])
    eta, B = 0.5, 1
    M = ng.aligned_second_moment_map(lam, eta, B, mu)
    rho, u = ng.perron(M)
    assert np.allclose(ng.perron_vector_formula(lam, eta, B, rho, mu=mu), u, atol=1e-10)
