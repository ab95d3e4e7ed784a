"""Tests of noisegeom.chapters.ch08_cyclical_learning_rates (chapter 8, *Cyclical learning rates*).

The schedules against their explicit formulas, the growth over a cycle against explicit products
of the aligned second-moment maps (noisegeom.aligned_second_moment_map) and the chapter's bounds,
and the resting threshold against the spectral radius and closed forms.
"""

import warnings

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters.ch08_cyclical_learning_rates import (SCHEDULES, cycle_growth, cyclical_schedule,
                                                             resting_threshold, sharpness_along_run)


def test_cyclical_schedules_against_explicit_formulas():
    T, lo, hi, P = 23, 0.1, 0.9, 8
    tri = cyclical_schedule("triangular", T, lo, hi, P)
    cos = cyclical_schedule("cosine", T, lo, hi, P)
    for t in range(T):
        ph = (t % P) / P
        assert tri[t] == pytest.approx(lo + (hi - lo) * (1 - abs(2 * ph - 1)))
        assert cos[t] == pytest.approx(lo + (hi - lo) * (1 + np.cos(np.pi * ph)) / 2)
    assert tri[0] == lo and tri[4] == pytest.approx(hi) and cos[0] == hi and cos[8] == hi
    assert np.all(cyclical_schedule("constant", 5, lo, hi, 2) == hi)
    assert set(SCHEDULES) == {"constant", "triangular", "cosine"}
    for kind in SCHEDULES:
        eta = cyclical_schedule(kind, T, lo, hi, P)
        assert eta.shape == (T,) and np.all((eta >= lo) & (eta <= hi * (1 + 1e-15))), kind
    for kwargs, match in [(dict(kind="saw"), "kind"), (dict(eta_max=0.05), "eta_max"), (dict(period=0), "period"),
                          (dict(eta_min=0.0), "eta_min")]:
        args = dict(kind="cosine", steps=5, eta_min=0.1, eta_max=0.5, period=2) | kwargs
        with pytest.raises((ValueError, TypeError), match=match):
            cyclical_schedule(**args)


def test_cycle_growth_against_explicit_products_and_bounds():
    rng = np.random.default_rng(6)
    lam = np.concatenate([rng.uniform(0.05, 1.0, 6), [0.0]])
    etas = rng.uniform(0.2, 1.6, 9)
    B, mu = 2, 0.9
    pos = lam > 0
    Pm = np.eye(pos.sum())
    for e in etas:
        Pm = ng.aligned_second_moment_map(lam[pos], e, B, mu) @ Pm
    want = np.abs(np.linalg.eigvals(Pm)).max() ** (1 / etas.size)
    got = cycle_growth(lam, etas, B, mu)
    assert got == pytest.approx(want, rel=1e-10)
    # constant schedule: ρ(M(η)), by eigenvalues of the aligned map
    rho = np.abs(np.linalg.eigvals(ng.aligned_second_moment_map(lam[pos], 0.7, B, mu))).max()
    assert cycle_growth(lam, [0.7] * 5, B, mu) == pytest.approx(rho, rel=1e-10)
    # chapter 8: per-step growth ≥ geometric-mean Frobenius bound and ≥ GD's cycle factor
    eta_g = np.exp(np.log(etas).mean())
    assert got >= mu * eta_g ** 2 * (lam ** 2).sum() / B * (1 - 1e-12)
    gd = (((1 - np.outer(etas, lam[pos])) ** 2).prod(0) ** (1 / etas.size)).max()
    assert got >= gd * (1 - 1e-12)
    with pytest.raises(ValueError, match="etas"):
        cycle_growth(lam, [0.1, -0.2])
    with pytest.raises(ValueError, match="lams"):
        cycle_growth([0.0, 0.0], [0.1])


def test_resting_threshold_against_the_spectral_radius_and_closed_forms():
    # independent route: ρ(M(η)) of the aligned map (cycle_growth of a constant schedule) crosses 1 at η_c
    rng = np.random.default_rng(3)
    for lam, B, mu in [(np.concatenate([rng.uniform(0.05, 3.0, 12), [0.0, -1e-13]]), 1, 0.8),
                       (rng.uniform(0.01, 1.0, 40), 4.6, 1.3), (np.array([5.0, 1e-3]), 1, 1.0)]:
        eta_c = resting_threshold(lam, B, mu)
        lam_pos = np.clip(lam, 0, None)
        assert 0 < eta_c < 2 / lam_pos.max()
        assert cycle_growth(lam_pos, [eta_c], B, mu) == pytest.approx(1.0, abs=1e-9)
        assert cycle_growth(lam_pos, [0.999 * eta_c], B, mu) < 1 < cycle_growth(lam_pos, [1.001 * eta_c], B, mu)
        s = mu * eta_c / B * (lam_pos[lam_pos > 0] / (2 - eta_c * lam_pos[lam_pos > 0])).sum()
        assert s == pytest.approx(1.0, rel=1e-10)
    # λ = (1, 1), μ = B = 1: s(η) = 2η/(2 − η) = 1 at η = 2/3 (exercise ex-ch8-monotone)
    assert resting_threshold([1.0, 1.0]) == pytest.approx(2 / 3, rel=1e-12)
    # one direction: s = μηλ/(B(2 − ηλ)) = 1 at η = 2B/(λ(μ + B))
    assert resting_threshold([2.0], batch_size=3, mu=0.5) == pytest.approx(2 * 3 / (2.0 * 3.5), rel=1e-12)
    # noise vanishing (huge B): the threshold approaches GD's 2/λ_1 from below
    assert 2 / 3.0 * (1 - 1e-6) < resting_threshold([3.0, 1.0], batch_size=1e9) < 2 / 3.0
    assert resting_threshold([3.0, 1.0], batch_size=1e30) == pytest.approx(2 / 3.0, rel=1e-14)
    for args, match in [(([0.0, -1.0],), "positive"), (([1.0], 0), "batch_size"), (([1.0], 1, -1.0), "mu")]:
        with pytest.raises(ValueError, match=match):
            resting_threshold(*args)


# ------------------------------------------------------------------ sharpness along a run

def _small_problem():
    X = ng.gaussian_inputs(8, np.ones(3), seed=0)
    teacher = ng.two_layer_net(3, 2, seed=11)
    return ng.two_layer_net(3, 4, seed=0), X, teacher(teacher.theta0, X)


def test_sharpness_along_run_is_simulate_plus_dense_gauss_newton_eigenvalues():
    model, X, y = _small_problem()
    run = sharpness_along_run(model, X, y, model.theta0, eta=0.2, steps=30, batch_size=2, n_seeds=3, seed=4,
                              record_every=10)
    tr = ng.simulate(model, X, y, model.theta0, eta=0.2, steps=30, batch_size=2, n_seeds=3, seed=4,
                     record_every=10, record_theta=True)
    assert np.array_equal(run["steps"], tr.steps) and np.array_equal(run["loss"], tr.loss)
    assert np.array_equal(run["theta"], tr.final_theta)
    for r in range(len(tr.steps)):
        for s in range(3):
            J = ng.jacobian(model, torch.as_tensor(tr.theta[r, s]), X)
            ev = np.linalg.eigvalsh((J.T @ J / X.shape[0]).numpy())        # the p×p matrix G itself
            assert run["sharpness"][r, s] == pytest.approx(ev[-1], rel=1e-10)
            assert run["trace"][r, s] == pytest.approx(ev.sum(), rel=1e-10)
    assert (run["diverged_at"] == -1).all()


def test_sharpness_along_run_reports_a_diverged_seed_as_nan_without_a_warning():
    # least squares at a learning rate far above 2/λ_max: a start off the minimum blows up
    # geometrically, the start at the minimum stays there
    model = ng.linear_model(3)
    # small integers: every product and sum is exact, so the start at the minimum has e = 0 exactly
    X = torch.tensor([[1, 2, 0], [0, 1, -1], [2, 0, 1], [1, 1, 1], [-1, 0, 2], [0, 3, 1]], dtype=torch.float64)
    star = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    starts = torch.stack([star, star + 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = sharpness_along_run(model, X, X @ star, starts, eta=1e4, steps=200, n_seeds=2, record_every=5)
    assert run["diverged_at"][0] == -1 and run["diverged_at"][1] > 0
    assert np.isfinite(run["sharpness"][:, 0]).all() and np.isfinite(run["theta"][0]).all()
    after = run["steps"] >= run["diverged_at"][1]
    assert after.any() and (~after).any()
    assert np.isnan(run["sharpness"][after, 1]).all() and np.isnan(run["loss"][after, 1]).all()
    assert np.isnan(run["trace"][after, 1]).all() and np.isfinite(run["sharpness"][~after, 1]).all()
    assert np.isnan(run["theta"][1]).all()
    # G = XᵀX/n for the linear model, whatever θ
    lam = np.linalg.eigvalsh((X.T @ X / 6).numpy())
    assert run["sharpness"][0, 0] == pytest.approx(lam[-1], rel=1e-12)


def test_sharpness_along_run_bad_inputs():
    model, X, y = _small_problem()
    with pytest.raises(ValueError, match="eta"):
        sharpness_along_run(model, X, y, model.theta0, eta=-1.0, steps=3)
    with pytest.raises(TypeError, match="model"):
        sharpness_along_run("net", X, y, model.theta0, eta=0.1, steps=3)
