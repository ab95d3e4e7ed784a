"""Tests of noisegeom.factored: J held per linear layer, against the Jacobian from an explicit loop over
samples, dense products, chapter 5's closed form K = C ⊙ XXᵀ, and refusals of models without
the structure (each with its reason; route='auto' then falls back to the vmap Jacobian)."""

import numpy as np
import pytest
import torch
from torch import nn

import noisegeom as ng
from _fixtures import DT, loop_per_sample_gradients, random_theta

TOL = 1e-12


def _X(n=11, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def loop_jacobian(model, theta, X):
    """Rows ∇_θ f(x_i) by a loop with .backward() on the module: per-sample gradients of ½(f − y)²
    at y = f − 1, where the residual is 1 and g_i = ∇f_i."""
    f = model(theta, X).detach()
    return loop_per_sample_gradients(model, theta, X, f - 1.0)


FACTORABLE = {
    "two_layer_fixed_outer": lambda: ng.two_layer_net(4, 6, activation="tanh", seed=1),
    "two_layer_trained_outer": lambda: ng.two_layer_net(4, 6, activation="softplus", train_outer=True, seed=2),
    "mlp_tanh_biases": lambda: ng.mlp([4, 5, 3, 1], activation="tanh", seed=3),
    "mlp_relu": lambda: ng.mlp([4, 6, 1], activation="relu", seed=4),
}


@pytest.mark.parametrize("block", [None, 3])
@pytest.mark.parametrize("name", sorted(FACTORABLE))
def test_factored_products_equal_loop_jacobian(name, block, monkeypatch):
    if block is not None:                      # products by blocks of rows (one or a few samples each)
        monkeypatch.setattr("noisegeom.factored._BLOCK_NUMBERS", 2 * block)
        monkeypatch.setattr("noisegeom.factored._GRAM_BLOCK_ROWS", block)
    model = FACTORABLE[name]()
    theta = random_theta(model, seed=5, scale=0.3)
    X = _X()
    J = loop_jacobian(model, theta, X)
    fj = ng.factored_jacobian(model, theta, X)
    assert fj.shape == (X.shape[0], model.p) == tuple(J.shape)
    scale = float(J.abs().max())
    assert float((fj.dense() - J).abs().max()) <= TOL * scale
    K = J @ J.T
    got = fj.gram()
    assert torch.equal(got, got.T)                                  # symmetric to the last bit
    assert float((got - K).abs().max()) <= TOL * float(K.abs().max())
    # what the metrics read off the upper blocks in one sweep, without the lower triangle or K
    rows = [(lo, hi) for lo, hi, _ in fj._gram_rows()]
    assert len(rows) == (1 if block is None else -(-X.shape[0] // block))
    e = torch.randn(X.shape[0], generator=torch.Generator().manual_seed(7), dtype=DT)
    diag, Ke, sq = fj._gram_sweep(e)
    assert torch.allclose(diag, torch.diagonal(K), rtol=TOL, atol=0)
    assert torch.allclose(fj.row_norms2(), torch.diagonal(K), rtol=TOL, atol=0)
    assert torch.allclose(Ke, K @ e, rtol=0, atol=TOL * float((K.abs() @ e.abs()).max()))
    assert torch.allclose(sq, (K * K).sum(1), rtol=TOL, atol=0)
    rng = torch.Generator().manual_seed(6)
    V = torch.randn(model.p, 3, generator=rng, dtype=DT)
    u = torch.randn(X.shape[0], generator=rng, dtype=DT)
    JV = J @ V
    assert float((fj @ V - JV).abs().max()) <= TOL * float(JV.abs().max())
    assert float((fj @ V[:, 0] - JV[:, 0]).abs().max()) <= TOL * float(JV.abs().max())
    Ju = J.T @ u
    assert float((fj.rmatvec(u) - Ju).abs().max()) <= TOL * float(Ju.abs().max())


# σ' in closed form, written out here (the toolbox's tests do not use the chapter floor)
ACTIVATION_DERIVATIVES = {
    "tanh": lambda z: 1 - torch.tanh(z) ** 2,
    "softplus": torch.sigmoid,
    "relu": lambda z: (z > 0).to(DT),
}


@pytest.mark.parametrize("act", sorted(ACTIVATION_DERIVATIVES))
def test_two_layer_gram_is_chapter_5_closed_form(act):
    """K = C ⊙ XXᵀ, C = D Diag(a²) Dᵀ, D_ik = σ'(w_kᵀx_i) in closed form (chapter 5), from the factored route."""
    model = ng.two_layer_net(4, 9, activation=act, seed=7)
    theta = random_theta(model, seed=8)
    X = _X(n=13)
    D = ACTIVATION_DERIVATIVES[act](X @ theta.reshape(9, 4).T)            # (n, width)
    want = (D * model.module.a.detach() ** 2) @ D.T * (X @ X.T)
    got = ng.factored_jacobian(model, theta, X).gram()
    assert float((got - want).abs().max()) <= TOL * float(want.abs().max())


def test_layer_whose_output_is_unused_has_zero_jacobian():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 1, dtype=DT)
            self.unused = nn.Linear(4, 3, dtype=DT)

        def forward(self, X):
            self.unused(X)
            return self.used(X)

    model = ng.FlatModel(Dead())
    theta = random_theta(model, seed=10)
    X = _X()
    # f = wᵀx + b: the rows of J are (x_i, 1) and zero on the 15 parameters of the unused layer
    J = torch.cat([X, torch.ones(X.shape[0], 1, dtype=DT), torch.zeros(X.shape[0], 15, dtype=DT)], 1)
    fj = ng.factored_jacobian(model, theta, X)
    assert torch.equal(fj.dense(), J)


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4, dtype=DT)
        self.out = nn.Linear(4, 1, dtype=DT)

    def forward(self, X):
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(X)))))


class _UsedOutside(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1, dtype=DT)

    def forward(self, X):
        return self.lin(X)[:, 0] + (self.lin.weight ** 2).sum()


class _PartOfWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.ones(3, 4, dtype=DT))

    def forward(self, X):
        return torch.nn.functional.linear(X, self.W[:1])[:, 0]


class _Sequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1, dtype=DT)

    def forward(self, X):
        return self.lin(X.reshape(X.shape[0], 2, 2)).sum((1, 2))


REFUSED = {
    "convolution": (lambda: ng.small_cnn(channels=2, n_classes=1), 64, "not the weight or bias of a linear layer"),
    "parameter_used_directly": (lambda: ng.linear_model(4), 4, "not the weight or bias of a linear layer"),
    "several_outputs": (lambda: ng.mlp([4, 3, 2]), 4, "one output per sample"),
    "shared_weights": (lambda: ng.FlatModel(_Shared()), 4, "used by two linear layers"),
    "parameter_also_used_outside": (lambda: ng.FlatModel(_UsedOutside()), 4, "outside the linear layers"),
    "part_of_a_parameter": (lambda: ng.FlatModel(_PartOfWeight()), 4, "part of a parameter"),
    "sequence_input": (lambda: ng.FlatModel(_Sequence()), 4, "one row per sample"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_models_without_the_structure_are_refused_and_auto_falls_back(name):
    make, d, reason = REFUSED[name]
    model = make()
    X = _X(n=6, d=d)
    theta = random_theta(model, seed=11)
    with pytest.raises(ng.NotFactorableError, match=reason):
        ng.factored_jacobian(model, theta, X)
    out = model(theta, X)
    if out.ndim != 1:
        return
    y = out.detach() + 1.0
    with pytest.raises(ng.NotFactorableError, match=reason):
        ng.NoiseGeometry.from_model(model, theta, X, y, route="factored")
    auto = ng.NoiseGeometry.from_model(model, theta, X, y)
    ref = ng.NoiseGeometry.from_model(model, theta, X, y, route="jacobian")
    # auto falls back to the vmap Jacobian, on the p×p side when that is the smaller one
    assert ref.route == "jacobian" and auto.route == ("parameters" if model.p < X.shape[0] else "jacobian")
    assert auto.mu() == pytest.approx(ref.mu(), rel=1e-12)


@pytest.mark.parametrize("block_rows", [128, 7])
def test_from_model_routes_agree_and_factored_never_writes_J(block_rows, monkeypatch):
    monkeypatch.setattr("noisegeom.factored._GRAM_BLOCK_ROWS", block_rows)
    model = ng.two_layer_net(6, 20, seed=12)
    theta = random_theta(model, seed=13, scale=0.2)
    X = _X(n=30, d=6, seed=14)
    y = torch.sin(X[:, 0])
    fac = ng.NoiseGeometry.from_model(model, theta, X, y)
    jac = ng.NoiseGeometry.from_model(model, theta, X, y, route="jacobian")
    assert (fac.route, jac.route) == ("factored", "jacobian")
    V = torch.linalg.qr(torch.randn(model.p, 4, generator=torch.Generator().manual_seed(15), dtype=DT))[0]
    for k in ("mu", "mu_isotropic", "zhu_indicator", "trace_sigma1", "trace_G", "frobenius2_G"):
        a, b = getattr(fac, k)(), getattr(jac, k)()
        assert abs(a - b) <= 1e-12 * abs(b), k
    assert np.allclose(fac.g(V), jac.g(V), rtol=1e-12)
    assert abs(fac.g_subspace(V) - jac.g_subspace(V)) <= 1e-12 * abs(jac.g_subspace(V))
    assert fac._factor is None and fac._K is None                   # the metrics used one sweep of K's upper blocks and J·V
    lone = ng.NoiseGeometry.from_model(model, theta, X, y)          # g and Tr Σ₁ alone need no Gram sweep
    assert np.allclose(lone.g(V), jac.g(V), rtol=1e-12)
    assert abs(lone.trace_sigma1() - jac.trace_sigma1()) <= 1e-12 * jac.trace_sigma1()
    assert lone._sweep_cache is None and lone._K is None
    assert torch.allclose(fac.K, jac.K, rtol=1e-13, atol=0)
    assert torch.allclose(fac.factor, jac.factor, rtol=0, atol=1e-14)   # written out on request
    assert torch.allclose(fac.factor_times(V), jac.factor_times(V), rtol=0, atol=1e-13)


def test_bad_inputs_name_the_argument():
    model = FACTORABLE["mlp_tanh_biases"]()
    X = _X()
    fj = ng.factored_jacobian(model, model.theta0, X)
    with pytest.raises(ValueError, match=r"V must have p = 47 rows"):
        fj @ torch.ones(5, dtype=DT)
    with pytest.raises(ValueError, match=r"u must have shape \(11,\)"):
        fj.rmatvec(torch.ones(10, dtype=DT))
    with pytest.raises(ValueError, match="theta must have length p = 47"):
        ng.factored_jacobian(model, torch.ones(3, dtype=DT), X)
    with pytest.raises(ValueError, match="X contains non-finite"):
        ng.factored_jacobian(model, model.theta0, X * float("nan"))
    y = torch.zeros(11, dtype=DT)
    with pytest.raises(ValueError, match="route must be 'auto', 'factored', 'jacobian' or 'parameters'"):
        ng.NoiseGeometry.from_model(model, model.theta0, X, y, route="gram")
    with pytest.raises(ValueError, match="route='factored' needs loss='mse'"):
        ng.NoiseGeometry.from_model(model, model.theta0, X, y.long(), loss="cross_entropy", route="factored")
