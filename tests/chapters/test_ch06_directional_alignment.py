"""Tests of noisegeom.chapters.ch06_directional_alignment (chapter 6, *Directional alignment*) against
independent routes.

Dense p×p matrices (numpy eigh of G and of the Hessian, Σ₁ from a loop over
per-sample gradients), a dense tridiagonal check of the Lanczos relation, and
an explicit simulate + dense evaluation of every recorded quantity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters.ch06_directional_alignment import (directional_along_run, gauss_newton_eigs, lanczos,
                                                          range_directions, spectrum_alignment)

from _fixtures import dense_loss_hessian, dense_sigma1, loop_jacobian, loop_per_sample_gradients


def _sym(p, seed, spectrum):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (Q * spectrum) @ Q.T


def test_lanczos_matches_dense_eigh_and_residual_identity():
    p = 80
    lam = np.concatenate([[10.0, 7.0, 5.0, -12.0], np.linspace(-1, 1, p - 4)])
    A = _sym(p, 0, lam)
    r = lanczos(A, 4, steps=60, seed=1)
    top = np.sort(lam)[::-1][:4]
    np.testing.assert_allclose(r.values, top, atol=1e-10)
    # residuals recomputed directly, and the β_m|s_m| identity
    res = np.linalg.norm(A @ r.vectors - r.vectors * r.values, axis=0)
    np.testing.assert_allclose(r.residuals, res, atol=1e-12)
    np.testing.assert_allclose(r.residual_estimates, res, atol=1e-9)
    # eigenvectors: |<y, u>| = 1 with the dense ones
    w, U = np.linalg.eigh(A)
    U = U[:, np.argsort(w)[::-1][:4]]
    np.testing.assert_allclose(np.abs((U * r.vectors).sum(0)), 1.0, atol=1e-8)
    np.testing.assert_allclose(r.vectors.T @ r.vectors, np.eye(4), atol=1e-10)
    # the tridiagonal T_m equals Q_mᵀ A Q_m: check T's spectrum against Rayleigh–Ritz bounds
    # (Ritz values nondecreasing in m and ≤ λ_1) from the recorded history
    h = r.history[:, 0]
    assert np.all(np.diff(h) >= -1e-10) and np.all(h <= lam.max() + 1e-10)


def test_lanczos_operator_equals_matrix_route_and_top_eigenpairs():
    net, X, y, th0 = ng.two_layer_task(d=6, width=12, n=20, seed=2)
    Hd = dense_loss_hessian(net, th0, X, y).numpy()
    op = ng.hessian_operator(net, th0, X, y)
    r = lanczos(op, 3, steps=net.p, seed=0)
    w = np.sort(np.linalg.eigvalsh(0.5 * (Hd + Hd.T)))[::-1]
    np.testing.assert_allclose(r.values, w[:3], atol=1e-9)
    assert r.residuals.max() < 1e-8


def test_lanczos_without_reorthogonalisation_still_gets_top_value():
    lam = np.concatenate([[5.0], np.linspace(0, 1, 59)])
    A = _sym(60, 3, lam)
    r = lanczos(A, 1, steps=40, seed=0, reorthogonalize=False)
    assert abs(r.values[0] - 5.0) < 1e-9


def test_lanczos_from_a_start_orthogonal_to_the_top_eigenvector_misses_it():
    """Errata C6-E2: parts 1 and 3 of the Ritz proposition cannot certify λ₁. From q₁ ⟂ u₁ the
    Krylov space never meets u₁: the top Ritz value converges to λ₂ (dense eigvalsh), with a
    small residual; the default random start finds λ₁."""
    lam = np.linalg.eigvalsh(np.diag(np.linspace(10, 1, 60)))[::-1]
    A = np.diag(np.linspace(10, 1, 60))
    start = np.ones(60)
    start[0] = 0.0                                        # u₁ = e₁
    r = lanczos(A, 1, steps=40, start=start)
    assert abs(r.values[0] - lam[1]) < 1e-8 and r.residuals[0] < 1e-4
    assert lam[0] - r.values[0] > 0.15                    # converged, and wrong by λ₁ − λ₂
    assert abs(r.vectors[0, 0]) == 0.0
    rand = lanczos(A, 1, steps=40, seed=0)
    assert abs(rand.values[0] - lam[0]) < 1e-6
    # the start is only normalised: a multiple gives the same Ritz values
    assert np.allclose(lanczos(A, 2, steps=20, start=3 * start).values,
                       lanczos(A, 2, steps=20, start=start).values, rtol=1e-12)


def test_lanczos_invariant_subspace_stops_early():
    A = np.diag([3.0, 1.0, 0.0, 0.0, 0.0])  # start vector e1+e2 spans a 2-D invariant space
    r = lanczos(A, 2, steps=5, seed=0)
    np.testing.assert_allclose(r.values, [3.0, 1.0], atol=1e-12)
    assert r.alpha.size == 3  # three distinct eigenvalues: K_3 is invariant


def test_gauss_newton_eigs_against_dense_G():
    rng = np.random.default_rng(0)
    J = torch.as_tensor(rng.standard_normal((15, 40)) * np.linspace(3, 0.1, 40))
    lam, V, W = gauss_newton_eigs(J)
    G = (J.T @ J).numpy() / 15
    w = np.sort(np.linalg.eigvalsh(G))[::-1][:15]
    np.testing.assert_allclose(lam, w, rtol=1e-10)
    np.testing.assert_allclose(G @ V, V * lam, atol=1e-10)
    np.testing.assert_allclose(V.T @ V, np.eye(15), atol=1e-10)
    # rank-deficient J: duplicated rows → rank 10
    J2 = torch.cat([J[:10], J[:5]])
    lam2, V2, _ = gauss_newton_eigs(J2)
    assert lam2.size == 10


def test_spectrum_alignment_against_dense_sigma1_and_theorem():
    net, X, y, th0 = ng.two_layer_task(d=5, width=8, n=25, seed=4)
    J = loop_jacobian(net, th0, X)
    grads = loop_per_sample_gradients(net, th0, X, y)
    e = ng.residuals(net, th0, X, y)
    S = np.asarray(dense_sigma1(grads))
    G = (J.T @ J).numpy() / 25
    loss = 0.5 * float((e ** 2).mean())
    out = spectrum_alignment(J, e)
    w, U = np.linalg.eigh(G)
    order = np.argsort(w)[::-1][: out["lam"].size]
    w, U = w[order], U[:, order]
    np.testing.assert_allclose(out["lam"], w, rtol=1e-9)
    g_dense = np.einsum("pj,pq,qj->j", U, S, U) / (2 * loss * w)
    np.testing.assert_allclose(out["g"], g_dense, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["g_iso"], np.trace(S) / net.p / (2 * loss * w), rtol=1e-9)
    mu_dense = np.sum(S * G) / (2 * loss * np.sum(G * G))
    np.testing.assert_allclose(out["mu"], mu_dense, rtol=1e-9)
    # theorem part 3: rank n → mean g = 1 − 1/n
    assert out["lam"].size == 25
    np.testing.assert_allclose(out["g"].mean(), 1 - 1 / 25, rtol=1e-10)
    # theorem part 2 bound
    _, _, W = gauss_newton_eigs(J)
    assert np.all(out["g"] <= 25 * (W ** 2).max(0) + 1e-12) and np.all(out["g"] >= -1e-12)


def test_range_directions_lie_in_range_and_are_unit():
    rng = np.random.default_rng(1)
    J = torch.as_tensor(rng.standard_normal((6, 30)))
    V = range_directions(J, 4, seed=0)
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1.0, atol=1e-12)
    P = np.linalg.pinv(J.numpy()) @ J.numpy()  # projector onto range(Jᵀ)
    np.testing.assert_allclose(P @ V, V, atol=1e-10)


def test_directional_along_run_against_simulate_and_dense():
    net, X, y, th0 = ng.two_layer_task(d=4, width=6, n=12, seed=5)
    rec = directional_along_run(net, X, y, th0, eta=0.2, record_at=[0, 7], batch_size=4, k=3, n_random=5, seed=3)
    traj = ng.simulate(net, X, y, th0, eta=0.2, steps=7, batch_size=4, seed=4, record_every=7)
    theta = torch.as_tensor(traj.final_theta[0])
    for i, th in enumerate([th0, theta]):
        Hd = dense_loss_hessian(net, th, X, y).numpy()
        J = loop_jacobian(net, th, X).numpy()
        grads = loop_per_sample_gradients(net, th, X, y)
        S = np.asarray(dense_sigma1(grads))
        G = J.T @ J / 12
        e = ng.residuals(net, th, X, y).numpy()
        loss = 0.5 * float(e @ e) / 12
        w, U = np.linalg.eigh(0.5 * (Hd + Hd.T))
        w, U = w[::-1][:3], U[:, ::-1][:, :3]
        np.testing.assert_allclose(rec.loss[i], loss, rtol=1e-10)
        np.testing.assert_allclose(rec.hess_values[i], w, atol=1e-9)
        uGu = np.einsum("pj,pq,qj->j", U, G, U)
        uSu = np.einsum("pj,pq,qj->j", U, S, U)
        np.testing.assert_allclose(rec.g_top[i], uSu / (2 * loss * uGu), rtol=1e-7)
        np.testing.assert_allclose(rec.g_iso_top[i], np.trace(S) / net.p / (2 * loss * uGu), rtol=1e-7)
        np.testing.assert_allclose(rec.g_top_hessian[i], uSu / (2 * loss * w), rtol=1e-7)
        wg = np.sort(np.linalg.eigvalsh(G))[::-1][:12]
        np.testing.assert_allclose(rec.G_lam[i], wg, rtol=1e-8)
        V = range_directions(torch.as_tensor(J), 5, seed=3)
        g_rand = np.einsum("pj,pq,qj->j", V, S, V) / (2 * loss * np.einsum("pj,pq,qj->j", V, G, V))
        np.testing.assert_allclose(rec.g_random[i], g_rand, rtol=1e-7)
        wG, UG = np.linalg.eigh(G)
        UG = UG[:, np.argsort(wG)[::-1][:3]]
        np.testing.assert_allclose(rec.overlap[i], np.abs((U * UG).sum(0)), atol=1e-6)
    assert rec.p == net.p


def test_bad_inputs_raise_clear_errors():
    A = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="steps"):
        lanczos(A, 1, steps=10)
    with pytest.raises(ValueError, match="k"):
        lanczos(A, 3, steps=2)
    with pytest.raises(TypeError, match="op must be a scipy LinearOperator"):
        lanczos("matrix", 1, steps=2)
    with pytest.raises(ValueError, match="start must have length p = 3"):
        lanczos(A, 1, steps=2, start=np.ones(4))
    with pytest.raises(ValueError, match="start must be a non-zero"):
        lanczos(A, 1, steps=2, start=np.zeros(3))
    with pytest.raises(ValueError, match="start"):
        lanczos(A, 1, steps=2, start=np.ones((3, 1)))
    with pytest.raises(ValueError, match="invariant"):
        lanczos(np.eye(4), 2, steps=4, seed=0)  # K_m(I, q) = span{q}: one step only
    J = torch.ones(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="e must have one entry"):
        spectrum_alignment(J, torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="loss is zero"):
        spectrum_alignment(J, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="J is zero"):
        gauss_newton_eigs(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="J must be 2-D"):
        gauss_newton_eigs(torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="m must be >= 1"):
        range_directions(J, 0)
    net, X, y, th0 = ng.two_layer_task(d=3, width=2, n=5, seed=0)
    with pytest.raises(ValueError, match="record_at"):
        directional_along_run(net, X, y, th0, eta=0.1, record_at=[3, 1], k=2)
    with pytest.raises(ValueError, match="eta"):
        directional_along_run(net, X, y, th0, eta=-1.0, record_at=[0], k=2)
    with pytest.raises(TypeError, match="model"):
        directional_along_run(lambda t, x: x, X, y, th0, eta=0.1, record_at=[0])
    with pytest.raises(ValueError, match="theta0"):
        directional_along_run(net, X, y, th0[:-1], eta=0.1, record_at=[0], k=2)
