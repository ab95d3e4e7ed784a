"""Tests of noisegeom.data: the spectra and the effective dimension against closed forms, the
Gaussian inputs and teacher labels against Monte Carlo, and the digits data set's split."""

import math

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import DT, cov_within


def test_power_law_spectrum():
    lam = ng.power_law_spectrum(10, 1.5)
    assert lam.shape == (10,) and lam.sum() == pytest.approx(10.0, rel=1e-14)
    k = np.arange(1, 11)
    assert np.allclose(lam / lam[0], k ** -1.5, rtol=1e-14)
    assert np.allclose(ng.power_law_spectrum(7, 0.0), 1.0)
    low = ng.power_law_spectrum(10, 1.0, rank=3)
    assert (low[3:] == 0).all() and low.sum() == pytest.approx(10.0)
    assert np.allclose(low[:3] / low[0], [1, 1 / 2, 1 / 3])


def test_effective_dimension_closed_forms():
    assert ng.effective_dimension(np.ones(8)) == pytest.approx(8.0)
    assert ng.effective_dimension(ng.power_law_spectrum(10, 0.0, rank=4)) == pytest.approx(4.0)
    assert ng.effective_dimension([3.0, 0, 0]) == pytest.approx(1.0)
    lam = np.array([4.0, 2.0, 1.0])
    assert ng.effective_dimension(lam) == pytest.approx(49.0 / 21.0, rel=1e-14)
    # decreasing in α at fixed d
    d_effs = [ng.effective_dimension(ng.power_law_spectrum(50, a)) for a in (0.0, 0.5, 1.0, 2.0)]
    assert all(x > y for x, y in zip(d_effs, d_effs[1:]))


def test_gaussian_inputs_covariance_monte_carlo():
    lam = np.array([3.0, 1.0, 0.25, 0.0])
    X = ng.gaussian_inputs(20000, lam, seed=3)
    assert X.shape == (20000, 4) and X.dtype == torch.float64
    ok, z, _ = cov_within(X.numpy()[:, :3], np.zeros(3), np.diag(lam[:3]))
    assert ok, z
    assert (X[:, 3] == 0).all()
    assert torch.equal(X, ng.gaussian_inputs(20000, lam, seed=3))


def test_teacher_labels():
    X = ng.gaussian_inputs(5000, np.ones(3), seed=1)
    ts = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    assert torch.equal(ng.teacher_labels(X, ts), X @ ts)
    y = ng.teacher_labels(X, ts, noise_std=0.5, seed=2)
    eps = (y - X @ ts).numpy()
    # sample variance of 5000 N(0, 0.25) draws: SE = 0.25·√(2/5000)
    assert abs(eps.var() - 0.25) < 5 * 0.25 * math.sqrt(2 / 5000)
    assert torch.equal(y, ng.teacher_labels(X, ts, noise_std=0.5, seed=2))


def test_load_digits():
    data = ng.load_digits(seed=0)
    Xtr, Xte, ytr, yte = data["X_train"], data["X_test"], data["y_train"], data["y_test"]
    assert Xtr.shape[0] + Xte.shape[0] == 1797 and Xtr.shape[1] == Xte.shape[1] == 64
    assert Xtr.dtype == torch.float64 and ytr.dtype == torch.int64
    assert data["n_classes"] == 10
    assert abs(Xte.shape[0] / 1797 - 0.25) < 0.01
    # standardised by training statistics: mean 0 and std 1 (or 0 for constant pixels)
    assert torch.allclose(Xtr.mean(0), torch.zeros(64, dtype=DT), atol=1e-12)
    sd = Xtr.std(0, unbiased=False)
    assert torch.all(((sd - 1).abs() < 1e-12) | (sd < 1e-12))
    # stratified: class shares agree between train and test to within one sample per class
    ftr = np.bincount(ytr.numpy(), minlength=10) / len(ytr)
    fte = np.bincount(yte.numpy(), minlength=10) / len(yte)
    assert np.abs(ftr - fte).max() < 1.5 / len(yte)
    sub = ng.load_digits(classes=[3, 8], standardize=False, test_fraction=0.5)
    assert sub["n_classes"] == 2 and set(sub["y_train"].tolist()) == {0, 1}
    assert sub["X_train"].max() <= 16 and sub["X_train"].min() >= 0   # raw pixel intensities 0..16
