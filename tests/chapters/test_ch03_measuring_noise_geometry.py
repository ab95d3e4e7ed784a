"""Tests of noisegeom.chapters.ch03_measuring_noise_geometry (chapter 3, *Measuring noise geometry*).

The chapter's Gram-matrix identities written out against dense p×p matrices, the dense
route against the Gram route, and the measurements along GD/SGD runs against explicit
loops and alignment_at at the same points. The task they run on (noisegeom.two_layer_task)
and the runs (noisegeom.measure_along_run) are tested in tests/toolbox/.
"""

import math

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters.ch03_measuring_noise_geometry import (AlignmentRecord, alignment_along_run, alignment_at,
                                                              dense_alignment)

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def small_net():
    return ng.two_layer_task(d=4, width=6, n=12, seed=3)


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
    model, X, y, theta = ng.two_layer_task(d=6, width=20, n=15, seed=4)
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
