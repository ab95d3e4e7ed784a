"""Tests of noisegeom.alignment: Gram-identity metrics against dense p×p computations (1e-10 relative),
exact perfect alignment, and the population Gaussian linear model against Monte Carlo."""

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import (dense_loss_hessian, dense_sigma1, loop_ggn, loop_outputs, loop_per_sample_gradients,
                       models_for_tests, random_theta, sample_loss_of_output)

# forward-mode AD (the HVPs) makes torch import its jit decompositions once, which warns
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# (name, model, X, y, loss, route): the scalar model once with J held per linear layer
# (ng.factored_jacobian, what route='auto' picks for it) and once with J from vmap
CASES = []
for _c in models_for_tests():
    if _c[0] == "scalar_mse":
        CASES += [(_c[0] + "_factored",) + _c[1:] + ("factored",), (_c[0] + "_jacobian",) + _c[1:] + ("jacobian",)]
    else:
        CASES.append(_c + ("jacobian",))
IDS = [c[0] for c in CASES]
TOL = 1e-10


def close(a, b, tol=TOL):
    return abs(a - b) <= tol * max(abs(b), 1e-300)


def dense_reference(model, theta, X, y, loss):
    """Σ₁, G, L from loops and numpy; every metric by its p×p definition."""
    grads = loop_per_sample_gradients(model, theta, X, y, loss).numpy()
    S1 = dense_sigma1(grads)
    G = loop_ggn(model, theta, X, y, loss).numpy()
    F = loop_outputs(model, theta, X)
    L = float(np.mean([float(sample_loss_of_output(F[i], y[i], loss)) for i in range(X.shape[0])]))
    return S1, G, L


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gram_metrics_equal_dense_definitions(case):
    _, model, X, y, loss, route = case
    theta = random_theta(model, seed=21)
    S1, G, L = dense_reference(model, theta, X, y, loss)
    p = model.p
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss, route="auto" if loss != "mse" else route)
    assert geo.route == route
    assert (geo.n, geo.p) == (X.shape[0], p)
    assert close(geo.loss, L)
    fro2 = (G ** 2).sum()
    trSG = np.trace(S1 @ G)
    assert close(geo.trace_sigma1(), np.trace(S1))
    assert close(geo.trace_G(), np.trace(G))
    assert close(geo.frobenius2_G(), fro2)
    assert close(geo.trace_sigma1_G(), trSG)
    mu = trSG / (2 * L * fro2)
    mu_iso = np.trace(S1) * np.trace(G) / (p * 2 * L * fro2)
    zhu = trSG / (np.trace(G) * np.trace(S1) / p)
    assert close(geo.mu(), mu)
    assert close(geo.mu_isotropic(), mu_iso)
    assert close(geo.zhu_indicator(), zhu)
    assert close(geo.mu() / geo.mu_isotropic(), geo.zhu_indicator())  # the identity μ/μ_iso = indicator
    rng = np.random.default_rng(0)
    V = rng.standard_normal((p, 4))
    want = np.array([V[:, j] @ S1 @ V[:, j] / (2 * L * (V[:, j] @ G @ V[:, j])) for j in range(4)])
    got = geo.g(V)
    assert got.shape == (4,) and all(close(a, b) for a, b in zip(got, want))
    assert isinstance(geo.g(V[:, 0]), float) and close(geo.g(V[:, 0]), want[0])
    assert close(geo.g(3.0 * V[:, 0]), want[0])                 # scale-free in v
    Q, _ = np.linalg.qr(V[:, :3])
    sub = np.trace(Q.T @ S1 @ Q) / (2 * L * np.trace(Q.T @ G @ Q))
    assert close(geo.g_subspace(Q), sub)
    # the matrix-free operators are the dense matrices
    W = rng.standard_normal((p, 2))
    assert np.allclose(geo.sigma_operator() @ W, S1 @ W, rtol=1e-11, atol=1e-13 * np.abs(S1).max())
    assert np.allclose(geo.G_operator() @ W, G @ W, rtol=1e-11, atol=1e-13 * np.abs(G).max())
    c = ng.batch_noise_factor(X.shape[0], 3)
    assert np.allclose(geo.sigma_operator(3) @ W, c * S1 @ W, rtol=1e-11, atol=1e-13 * np.abs(S1).max())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_metrics_with_hessian_curvature_equal_dense(case):
    _, model, X, y, loss, route = case
    theta = random_theta(model, seed=22)
    S1, _, L = dense_reference(model, theta, X, y, loss)
    H = dense_loss_hessian(model, theta, X, y, loss).numpy()
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss, route="auto" if loss != "mse" else route)
    assert geo.route == route
    Hop = ng.hessian_operator(model, theta, X, y, loss=loss)
    fro2 = (H ** 2).sum()
    mu_H = np.trace(S1 @ H) / (2 * L * fro2)
    assert close(geo.mu(Hop), mu_H)                          # ‖H‖_F² from p exact products
    assert close(geo.mu(Hop, frobenius2=fro2), mu_H)         # ‖H‖_F² supplied
    # directions with positive curvature: the top eigenvectors of H
    w, U = np.linalg.eigh(H)
    V = U[:, -3:]
    want = np.array([V[:, j] @ S1 @ V[:, j] / (2 * L * w[-3 + j]) for j in range(3)])
    assert np.allclose(geo.g(V, Hop), want, rtol=TOL)
    assert close(geo.g_subspace(V, Hop), np.trace(V.T @ S1 @ V) / (2 * L * w[-3:].sum()))


def test_square_loss_formula_of_science_md_and_functional_forms():
    """μ = [n Σ e_i² (K²)_ii − eᵀK²e] / [‖e‖² ‖K‖_F²] with K = JJᵀ (science.md), and g(v)'s sample form."""
    _, model, X, y, _, _ = CASES[0]
    theta = random_theta(model, seed=23)
    J = ng.jacobian(model, theta, X).numpy()
    e = (loop_outputs(model, theta, X) - y).numpy()
    n, p = J.shape
    K = J @ J.T
    K2 = K @ K
    mu = (n * (e ** 2 * np.diag(K2)).sum() - e @ K2 @ e) / ((e @ e) * (K ** 2).sum())
    assert close(ng.average_alignment(J, e), mu)
    assert close(ng.NoiseGeometry.square_loss(J, e).mu(), mu)
    v = np.random.default_rng(1).standard_normal(p)
    a = J @ v
    L2 = (e ** 2).mean()
    gv = ((e ** 2 * a ** 2).mean() - (e * a).mean() ** 2) / (L2 * (a ** 2).mean())
    assert close(ng.directional_alignment(J, e, v), gv)
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((p, 2)))
    geo = ng.NoiseGeometry.square_loss(J, e)
    assert close(ng.subspace_alignment(J, e, Q), geo.g_subspace(Q))
    S1 = dense_sigma1(e[:, None] * J)
    G = J.T @ J / n
    assert close(ng.isotropic_alignment(J, e), np.trace(S1) * np.trace(G) / (p * L2 * (G ** 2).sum()))
    # the same object from (J, e) and from the model
    geo_m = ng.NoiseGeometry.from_model(model, theta, X, y)
    for name in ("mu", "mu_isotropic", "zhu_indicator", "trace_sigma1", "trace_G"):
        assert close(getattr(geo, name)(), getattr(geo_m, name)())


def test_perfect_alignment_is_exact_for_paired_samples():
    """Σ₁ = 2L·G exactly when |e_i| is constant and ∇L = 0: duplicate every input with residuals ±1.

    Then (1/n) Σ e_i² ∇f_i∇f_iᵀ = G and 2L = 1, so μ = g(v) = g(V) = 1 for every v, V.
    """
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5, 8))
    X = np.vstack([A, A])
    e = np.concatenate([np.ones(5), -np.ones(5)])
    geo = ng.NoiseGeometry.square_loss(X, e)
    assert abs(geo.mu() - 1) < 1e-12
    v = rng.standard_normal((8, 6))
    # directions inside the row space of A (vᵀGv > 0)
    v = A.T @ rng.standard_normal((5, 6))
    assert np.allclose(geo.g(v), 1.0, atol=1e-12)
    Q, _ = np.linalg.qr(A.T[:, :3])
    assert abs(geo.g_subspace(Q) - 1) < 1e-12
    # isotropic noise of the same trace is worse: μ_iso = (Tr G)² / (p ‖G‖_F²) ≤ rank/p < 1
    G = X.T @ X / 10
    assert close(geo.mu_isotropic(), np.trace(G) ** 2 / (8 * (G ** 2).sum()))
    assert geo.mu_isotropic() <= 5 / 8
    assert close(geo.zhu_indicator(), 1 / geo.mu_isotropic())


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_population_gaussian_linear_model_against_monte_carlo(sigma):
    """science.md result 1, written here in closed form: x ~ N(0, S), y = θ*ᵀx + ε, δ = θ − θ*,

        2L = δᵀSδ + σ²,  G = S,  Σ₁ = (δᵀSδ + σ²) S + S δ δᵀ S = 2L·G + ∇L∇Lᵀ,
        μ = 1 + δᵀS³δ / ((δᵀSδ + σ²) ‖S‖_F²),  g(v) = 1 + (vᵀSδ)² / ((δᵀSδ + σ²) vᵀSv).

    NoiseGeometry is computed on R = 40 independent samples of size n = 800 (Gram route).
    Tolerance: 4 standard errors of the replicate mean, plus 5/n for the O(1/n) bias of the
    ratio estimators (the ḡḡᵀ term alone is Σ₁/n in expectation).
    """
    lam = np.array([4.0, 2.0, 1.0, 0.5])
    S = np.diag(lam)
    theta_star = np.array([0.3, -1.0, 0.5, 2.0])
    delta = np.array([1.0, -0.5, 0.3, 0.8])
    q = delta @ S @ delta
    two_L = q + sigma ** 2
    Sd = S @ delta
    Sigma1 = two_L * S + np.outer(Sd, Sd)
    fro2 = (lam ** 2).sum()
    mu_pop = np.trace(Sigma1 @ S) / (two_L * fro2)
    assert close(mu_pop, 1 + delta @ S @ S @ S @ delta / (two_L * fro2), 1e-13)
    if sigma == 0:   # the bounds of result 1
        assert 1 <= mu_pop <= 1 + lam.max() ** 2 / fro2
    V = np.column_stack([np.eye(4)[:, 0], delta / np.linalg.norm(delta), np.ones(4) / 2])
    g_pop = np.array([1 + (v @ Sd) ** 2 / (two_L * (v @ S @ v)) for v in V.T])
    assert np.all((g_pop >= 1) & (g_pop <= 2))

    n, R = 800, 40
    model = ng.linear_model(4)
    theta = torch.as_tensor(theta_star + delta)
    mus, gs, trs = [], [], []
    for r in range(R):
        X = ng.gaussian_inputs(n, lam, seed=100 + r)
        y = ng.teacher_labels(X, torch.as_tensor(theta_star), noise_std=sigma, seed=100 + r)
        geo = ng.NoiseGeometry.from_model(model, theta, X, y)
        mus.append(geo.mu())
        gs.append(geo.g(V))
        trs.append(geo.trace_sigma1() / (2 * geo.loss))
    for est, pop in [(np.array(mus), mu_pop), (np.array(gs), g_pop),
                     (np.array(trs), np.trace(Sigma1) / two_L)]:
        m = est.mean(0)
        se = est.std(0, ddof=1) / np.sqrt(R)
        assert np.all(np.abs(m - pop) <= 4 * se + 5.0 / n * np.abs(pop)), (m, pop, se)
    # the isotropic baseline is far below
    assert np.trace(Sigma1) * lam.sum() / (4 * two_L * fro2) < 0.8 * mu_pop


def test_square_loss_shortcuts_equal_general_route_in_any_call_order():
    """square_loss reuses K for A·Gradsᵀ and Tr Σ₁; the general constructor does not. Same numbers,
    whether or not the Gram K has been formed before a trace is asked for."""
    _, model, X, y, _, _ = CASES[0]
    theta = random_theta(model, seed=24)
    J = ng.jacobian(model, theta, X)
    e = ng.residuals(model, theta, X, y)
    names = ("trace_sigma1", "trace_G", "frobenius2_G", "trace_sigma1_G", "mu", "mu_isotropic", "zhu_indicator")
    general = ng.NoiseGeometry(e[:, None] * J, J, 0.5 * float((e ** 2).mean()))
    ref = {k: getattr(general, k)() for k in names}
    fresh = ng.NoiseGeometry.square_loss(J, e)
    before = {k: getattr(fresh, k)() for k in ("trace_sigma1", "trace_G")}   # K not formed yet
    after = {k: getattr(fresh, k)() for k in names}                          # K formed by now
    for k in names:
        assert close(after[k], ref[k], 1e-12), k
    for k in before:
        assert close(before[k], ref[k], 1e-12), k
    V = np.random.default_rng(5).standard_normal((model.p, 3))
    assert np.allclose(fresh.g(V), general.g(V), rtol=1e-12)
