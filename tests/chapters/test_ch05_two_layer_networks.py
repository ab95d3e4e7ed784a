"""Tests of noisegeom.chapters.ch05_two_layer_networks (chapter 5, *Two-layer networks*), each against an
independent route (autodiff Jacobians, dense p×p matrices, the routes of chapters 3 and 4, Monte Carlo)."""

import math

import numpy as np
import pytest
import torch

import noisegeom as ng
from noisegeom.chapters import ch05_two_layer_networks as tl
from noisegeom.chapters.ch03_measuring_noise_geometry import dense_alignment
from noisegeom.chapters.ch04_linear_models import mu_from_residuals

DT = torch.float64


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ----------------------------------------------------------------- σ'

@pytest.mark.parametrize("name,formula", [
    ("tanh", lambda z: 1 - np.tanh(z) ** 2),
    ("relu", lambda z: (z > 0).astype(float)),
    ("softplus", lambda z: 1 / (1 + np.exp(-z))),
    ("sigmoid", lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    ("linear", lambda z: np.ones_like(z)),
])
def test_activation_derivative_closed_forms(name, formula):
    z = np.linspace(-4, 4, 81) + 0.013
    np.testing.assert_allclose(tl.activation_derivative(name, z).numpy(), formula(z), atol=1e-12)


def test_activation_derivative_gelu_finite_difference():
    z = torch.linspace(-3, 3, 31, dtype=DT)
    h = 1e-6
    f = torch.nn.functional.gelu
    fd = (f(z + h) - f(z - h)) / (2 * h)
    np.testing.assert_allclose(tl.activation_derivative("gelu", z).numpy(), fd.numpy(), atol=1e-8)


# ----------------------------------------------------------------- Gram matrix

@pytest.mark.parametrize("act", ["tanh", "relu", "softplus", "linear"])
def test_two_layer_gram_matches_autodiff_jacobian(act):
    model, X, y, th = ng.two_layer_task(d=12, width=7, n=9, alpha=0.5, activation=act, seed=2)
    gram = tl.two_layer_gram(X, th.reshape(7, 12), model.module.a, act)
    J = ng.jacobian(model, th, X)
    np.testing.assert_allclose(gram.K.numpy(), (J @ J.T).numpy(), atol=1e-12)
    np.testing.assert_allclose(gram.f.numpy(), model(th, X).numpy(), atol=1e-12)
    # μ: Gram route vs NoiseGeometry (autodiff) vs chapter 4's eigen route
    e = gram.f - y
    mu = float(tl.gram_mu(gram.K, e))
    assert mu == pytest.approx(ng.NoiseGeometry.from_model(model, th, X, y).mu(), rel=1e-10)
    assert mu == pytest.approx(mu_from_residuals(e, K=gram.K), rel=1e-8)


def test_two_layer_gram_explicit_loop_and_batching():
    X, W, a = _randn(5, 4, seed=0), _randn(3, 6, 4, seed=1), _randn(3, 6, seed=2)
    gram = tl.two_layer_gram(X, W, a, "tanh")
    for s in range(3):
        K = np.zeros((5, 5))
        for i in range(5):
            for j in range(5):
                for k in range(6):
                    K[i, j] += (a[s, k] ** 2 * (1 - math.tanh(float(W[s, k] @ X[i])) ** 2)
                                * (1 - math.tanh(float(W[s, k] @ X[j])) ** 2) * float(X[i] @ X[j]))
        np.testing.assert_allclose(gram.K[s].numpy(), K, atol=1e-12)
        single = tl.two_layer_gram(X, W[s], a[s], "tanh")
        np.testing.assert_allclose(single.K.numpy(), gram.K[s].numpy(), atol=1e-13)
        np.testing.assert_allclose(single.c.numpy(), np.diag(K) / (X ** 2).sum(1).numpy(), atol=1e-12)


def test_gram_mu_dense_route():
    """μ from the Gram formula equals Tr(Σ₁G)/(2L‖G‖_F²) with explicit p×p matrices."""
    J, e = _randn(7, 11, seed=3), _randn(7, seed=4)
    dense = dense_alignment(J, e)["mu"]
    assert float(tl.gram_mu(J @ J.T, e)) == pytest.approx(dense, rel=1e-10)


# ----------------------------------------------------------------- bounds

def _random_case(seed, n=8, d=30, m=5, act="tanh", scale=1.0):
    X = _randn(n, d, seed=seed)
    W = scale * _randn(m, d, seed=seed + 100) / math.sqrt(d)
    a = torch.where(_randn(m, seed=seed + 200) > 0, 1.0, -1.0).to(DT) / math.sqrt(m)
    return X, tl.two_layer_gram(X, W, a, act)


def test_sandwich_factors_by_loops():
    X, gram = _random_case(0)
    K0 = (X @ X.T).numpy()
    n = K0.shape[0]
    b = tl.sandwich_bounds(K0, c=gram.c)
    dmin = min(K0[i, i] for i in range(n))
    fro2 = sum(K0[i, j] ** 2 for i in range(n) for j in range(n))
    row2 = max(sum(K0[i, j] ** 2 for j in range(n)) for i in range(n))
    lam = max(np.linalg.eigvals(K0).real)
    c = gram.c.numpy()
    w = min(c) / max(c)
    assert b["omega"] == pytest.approx(w)
    assert b["q0"] == pytest.approx(n * dmin ** 2 / fro2)
    assert b["s0"] == pytest.approx(lam / dmin)
    assert b["Q0"] == pytest.approx(row2 / dmin ** 2)
    assert b["lower"] == pytest.approx(max(0.0, w ** 2 * n * dmin ** 2 / fro2 - (lam / dmin) ** 2 / (w ** 2 * n)))
    assert b["upper"] == pytest.approx(row2 / dmin ** 2 / w ** 2)


@pytest.mark.parametrize("act,scale", [("tanh", 1.0), ("tanh", 3.0), ("softplus", 2.0), ("relu", 1.0)])
def test_loewner_sandwich_and_mu_bounds_hold(act, scale):
    """Part 1 (eigenvalues of K − λ_min(K₀)Diag(c) and λ_max(K₀)Diag(c) − K) and part 2 over random e."""
    for seed in range(5):
        X, gram = _random_case(seed, n=10, d=40, m=6, act=act, scale=scale)
        if float(gram.c.min()) == 0:
            continue
        K0 = X @ X.T
        l0, u0 = torch.linalg.eigvalsh(K0)[[0, -1]]
        Dc = torch.diag(gram.c)
        tol = 1e-10 * float(u0)
        assert float(torch.linalg.eigvalsh(gram.K - l0 * Dc)[0]) >= -tol
        assert float(torch.linalg.eigvalsh(u0 * Dc - gram.K)[0]) >= -tol
        b = tl.sandwich_bounds(K0, c=gram.c)
        E = _randn(200, 10, seed=seed + 7)
        E[:10] = torch.eye(10, dtype=DT)                 # adversarial: one sample misfit
        mus = tl.gram_mu(gram.K.expand(200, 10, 10), E).numpy()
        # the extreme μ over all residual directions are the extreme eigenvalues of M
        K = gram.K.numpy()
        M = (10 * np.diag((K ** 2).sum(1)) - K @ K) / (K ** 2).sum()
        lam = np.linalg.eigvalsh(M)
        assert b["lower"] <= lam[0] + 1e-12 and lam[-1] <= b["upper"] + 1e-12
        assert np.all(mus >= b["lower"] - 1e-12) and np.all(mus <= b["upper"] + 1e-12)


def test_sharp_example_fourth_power():
    """Orthonormal inputs, slopes β₁ on sample 1 and β₂ elsewhere: μ(e₁) = (n−1)r⁴/(r⁴+n−1) (exercise ex-ch5-sharp)."""
    n, beta1, beta2 = 50, 0.3, 1.0
    X = torch.eye(n, dtype=DT)
    # leaky ReLU with slope beta1: sample 1 has all pre-activations negative, the others positive
    m = 4
    W = torch.ones(m, n, dtype=DT)
    W[:, 0] = -1.0
    a = torch.full((m,), 1 / math.sqrt(m), dtype=DT)
    gram = tl.two_layer_gram(X, W, a, lambda z: torch.maximum(z, beta1 * z))
    e = torch.zeros(n, dtype=DT)
    e[0] = 1.0
    r4 = (beta1 / beta2) ** 4
    assert float(tl.gram_mu(gram.K, e)) == pytest.approx((n - 1) * r4 / (r4 + n - 1), rel=1e-12)
    b = tl.sandwich_bounds(X @ X.T, omega=(beta1 / beta2) ** 2)
    assert b["lower"] == pytest.approx(max(0.0, r4 - 1 / (r4 * n)))
    assert b["lower"] <= float(tl.gram_mu(gram.K, e))


def test_linear_activation_gives_linear_model():
    X, gram = _random_case(3, act="linear")
    np.testing.assert_allclose(gram.K.numpy(), (X @ X.T).numpy(), atol=1e-12)
    np.testing.assert_allclose(gram.c.numpy(), 1.0, atol=1e-12)


def test_relu_init_concentration_monte_carlo():
    """P(all c_i within ε of 1/2) ≥ 1 − γ, checked on 400 draws (binomial tolerance)."""
    n, m, d, gamma, draws = 6, 64, 20, 0.2, 400
    X = _randn(n, d, seed=11)
    eps = tl.init_concentration(n, m, gamma)
    assert eps == pytest.approx(math.sqrt(math.log(2 * n / gamma) / (2 * m)))
    W = _randn(draws, m, d, seed=12) / math.sqrt(d)
    c = ((X @ W.transpose(1, 2)) > 0).to(DT).mean(-1)       # (draws, n)
    ok = ((c - 0.5).abs() <= eps).all(-1).to(DT).mean()
    # the failure frequency should be ≤ γ; allow 3 binomial standard deviations
    assert 1 - float(ok) <= gamma + 3 * math.sqrt(gamma * (1 - gamma) / draws)
    omega = c.min(-1).values / c.max(-1).values
    frac = float((omega >= tl.relu_init_ratio_bound(n, m, gamma)).to(DT).mean())
    assert frac >= 1 - gamma - 3 * math.sqrt(gamma * (1 - gamma) / draws)
    assert tl.relu_init_ratio_bound(n, m, gamma) == pytest.approx((1 - 2 * eps) / (1 + 2 * eps))
    assert tl.relu_init_ratio_bound(2, 1, 0.5) == 0.0


def test_mu_across_widths_matches_two_layer_net_route():
    d, n = 25, 8
    X = ng.gaussian_inputs(n, np.ones(d), seed=0)
    y = torch.sin(X[:, 0])
    out = tl.mu_across_widths(X, y, [3, 10], "relu", n_seeds=4, seed=5)
    assert out["mu"].shape == (2, 4)
    ens = tl.InitEnsemble(X, [3, 10], n_seeds=4, seed=5)
    for j, m in enumerate([3, 10]):
        for s in range(4):
            W, a = ens.W[m][s], ens.a[m][s]
            np.testing.assert_allclose(np.abs(a.numpy()), 1 / math.sqrt(m))
            J = torch.cat([(a[k] * (X @ W[k] > 0).to(DT))[:, None] * X for k in range(m)], 1)
            e = torch.relu(X @ W.T) @ a - y
            assert out["mu"][j, s] == pytest.approx(ng.average_alignment(J, e), rel=1e-10)
        sub = ens.measure(y, "relu", m, n=5)
        gram = tl.two_layer_gram(X[:5], ens.W[m], ens.a[m], "relu")
        np.testing.assert_allclose(sub["mu"], tl.gram_mu(gram.K, gram.f - y[:5]).numpy(), rtol=1e-12)


# ----------------------------------------------------------------- bad inputs

def test_bad_inputs():
    X, W, a = _randn(4, 3, seed=0), _randn(5, 3, seed=1), _randn(5, seed=2)
    with pytest.raises(ValueError, match="activation"):
        tl.two_layer_gram(X, W, a, "swish")
    with pytest.raises(ValueError, match="W must have d = 3"):
        tl.two_layer_gram(X, _randn(5, 4, seed=1), a, "tanh")
    with pytest.raises(ValueError, match="a must have shape"):
        tl.two_layer_gram(X, W, _randn(4, seed=2), "tanh")
    with pytest.raises(ValueError, match="elementwise"):
        tl.activation_derivative(lambda z: z.sum(), _randn(3, seed=0))
    with pytest.raises(ValueError, match="e is zero"):
        tl.gram_mu(X @ X.T, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="K is zero"):
        tl.gram_mu(torch.zeros(4, 4, dtype=DT), torch.ones(4, dtype=DT))
    with pytest.raises(ValueError, match="exactly one of c"):
        tl.sandwich_bounds(X @ X.T)
    with pytest.raises(ValueError, match="omega must lie"):
        tl.sandwich_bounds(X @ X.T, omega=1.5)
    Xz = X.clone()
    Xz[0] = 0
    with pytest.raises(ValueError, match="x_i = 0"):
        tl.sandwich_bounds(Xz @ Xz.T, omega=0.5)
    with pytest.raises(ValueError, match="c must have one entry"):
        tl.sandwich_bounds(X @ X.T, c=torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="c is zero"):
        tl.sandwich_bounds(X @ X.T, c=torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="failure_prob"):
        tl.init_concentration(4, 10, 1.5)
    with pytest.raises(ValueError, match="y must have one entry"):
        tl.mu_across_widths(X, torch.ones(3, dtype=DT), [4])
    with pytest.raises(ValueError, match="widths"):
        tl.mu_across_widths(X, torch.ones(4, dtype=DT), [0])
    ens = tl.InitEnsemble(X, [4], n_seeds=2)
    with pytest.raises(ValueError, match="width must be one of"):
        ens.measure(torch.ones(4, dtype=DT), "tanh", 8)
    with pytest.raises(ValueError, match="n"):
        ens.measure(torch.ones(4, dtype=DT), "tanh", 4, n=9)


def test_omega_zero_gives_void_bounds():
    X = _randn(4, 3, seed=0)
    b = tl.sandwich_bounds(X @ X.T, c=torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=DT))
    assert b["omega"] == 0 and b["lower"] == 0 and b["upper"] == math.inf
