"""Tests of noisegeom.models: parameter counts, outputs against hand-written formulas, Jacobian
structure, seeding (independent of the data drawn from the same seed), and FlatModel's handling
of buffers, frozen parameters and dtypes. The data generators are tested in test_data.py."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import noisegeom as ng
from _fixtures import DT, random_theta

X5 = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=DT)


def test_linear_model():
    m = ng.linear_model(5)
    assert m.p == 5 and torch.equal(m.theta0, torch.zeros(5, dtype=DT))
    th = torch.randn(5, dtype=DT)
    assert torch.allclose(m(th, X5), X5 @ th, rtol=1e-15, atol=0)
    a, b = ng.linear_model(5, init_scale=1.0, seed=3), ng.linear_model(5, init_scale=2.0, seed=3)
    assert torch.allclose(b.theta0, 2 * a.theta0) and a.theta0.abs().sum() > 0
    assert not torch.equal(a.theta0, ng.linear_model(5, init_scale=1.0, seed=4).theta0)


@pytest.mark.parametrize("depth,width", [(1, None), (2, 3), (3, 4), (4, 2)])
def test_deep_linear_model_is_linear_in_x_with_product_predictor(depth, width):
    m = ng.deep_linear_model(5, depth=depth, width=width, seed=1)
    w = 5 if width is None else width
    want_p = 5 if depth == 1 else 5 * w + (depth - 2) * w * w + w
    assert m.p == want_p
    th = random_theta(m, seed=2)
    Ws = list(m.unflatten(th).values())
    F = Ws[0].T
    for W in Ws[1:]:
        F = F @ W.T                                   # (W_L ⋯ W_1)ᵀ, shape (d, 1)
    assert torch.allclose(m(th, X5), (X5 @ F)[:, 0], rtol=1e-13, atol=1e-14)
    # the predictor is linear in x: f(2x − 3z) = 2 f(x) − 3 f(z)
    x, z = X5[:3], X5[3:6]
    assert torch.allclose(m(th, 2 * x - 3 * z), 2 * m(th, x) - 3 * m(th, z), rtol=1e-12, atol=1e-13)


def test_diagonal_linear_model():
    m = ng.diagonal_linear_model(5, init_scale=0.5, seed=2)
    assert m.p == 10
    th = random_theta(m, seed=1)
    u, v = th[:5], th[5:]
    assert torch.allclose(m(th, X5), X5 @ (u * v), rtol=1e-14, atol=0)
    assert torch.allclose(m.theta0.abs().mean(), torch.tensor(0.5, dtype=DT), rtol=0.3)


@pytest.mark.parametrize("activation", sorted(ng.ACTIVATIONS))
def test_two_layer_net_formula_and_jacobian_rows(activation):
    """f = Σ_k a_k σ(w_kᵀx) and ∇_{w_k} f = a_k σ'(w_kᵀx) x (science.md result 4)."""
    d, width = 5, 6
    m = ng.two_layer_net(d, width, activation=activation, seed=3)
    assert m.p == width * d
    a = m.module.a
    assert torch.allclose(a.abs(), torch.full((width,), 1 / math.sqrt(width), dtype=DT))
    th = random_theta(m, seed=4)
    W = th.reshape(width, d)
    sigma = ng.ACTIVATIONS[activation]
    assert torch.allclose(m(th, X5), sigma(X5 @ W.T) @ a, rtol=1e-13, atol=1e-14)
    if activation != "relu":                                  # σ' by autograd on the scalar activation
        z = (X5 @ W.T).clone().requires_grad_(True)
        dsig = torch.autograd.grad(sigma(z).sum(), z)[0]      # (n, width)
        J = ng.jacobian(m, th, X5)
        want = (a * dsig)[:, :, None] * X5[:, None, :]        # (n, width, d)
        assert torch.allclose(J, want.reshape(7, -1), rtol=1e-12, atol=1e-14)
    mt = ng.two_layer_net(d, width, activation=activation, train_outer=True, seed=3)
    assert mt.p == width * (d + 1)


def test_two_layer_net_initial_scale():
    m = ng.two_layer_net(50, 400, seed=0)
    W = m.theta0.reshape(400, 50)
    # W entries ~ N(0, 1/d): the sample variance of 20000 entries is within 5 SE = 5·√(2/20000)/d
    assert abs(float(W.var()) * 50 - 1) < 5 * math.sqrt(2 / 20000)


def test_mlp_counts_flattening_and_output():
    m = ng.mlp([6, 4, 3], activation="relu", seed=0)
    assert m.p == 6 * 4 + 4 + 4 * 3 + 3
    th = random_theta(m, seed=1)
    Xi = torch.randn(5, 2, 3, dtype=DT)                        # images of any shape are flattened
    P = m.unflatten(th)
    h = torch.relu(Xi.reshape(5, 6) @ P["layers.0.weight"].T + P["layers.0.bias"])
    want = h @ P["layers.1.weight"].T + P["layers.1.bias"]
    assert torch.allclose(m(th, Xi), want, rtol=1e-13, atol=1e-14)
    scalar = ng.mlp([6, 1])
    assert scalar(scalar.theta0, Xi).shape == (5,)            # scalar models squeeze to (n,)


def test_small_cnn_shapes_seed_and_global_rng_untouched():
    state = torch.get_rng_state()
    m = ng.small_cnn(channels=3, n_classes=4, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(m.theta0, ng.small_cnn(channels=3, n_classes=4, seed=5).theta0)
    assert not torch.equal(m.theta0, ng.small_cnn(channels=3, n_classes=4, seed=6).theta0)
    X = torch.randn(6, 64, dtype=DT)
    out = m(m.theta0, X)
    assert out.shape == (6, 4) and out.dtype == torch.float64
    assert ng.per_sample_gradients(m, m.theta0, X, torch.arange(6) % 4, loss="cross_entropy").shape == (6, m.p)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (2, 5, 6)])
def test_small_cnn_on_other_images_against_explicit_layers(shape):
    # the same network written out with torch.nn.functional, on flat and on image-shaped inputs
    c, h, w = shape
    m = ng.small_cnn(channels=3, n_classes=4, image_shape=shape, seed=2)
    P = m.unflatten(m.theta0)
    X = torch.randn(5, c, h, w, dtype=DT, generator=torch.Generator().manual_seed(0))
    F = torch.nn.functional
    z = torch.tanh(F.conv2d(X, P["conv1.weight"], P["conv1.bias"], padding=1))
    z = F.avg_pool2d(torch.tanh(F.conv2d(z, P["conv2.weight"], P["conv2.bias"], padding=1)), 2)
    want = z.mean(2).flatten(1) @ P["head.weight"].T + P["head.bias"]
    assert m.p == 3 * c * 9 + 3 + 3 * 3 * 9 + 3 + 4 * 3 * (w // 2) + 4
    assert torch.allclose(m(m.theta0, X), want, rtol=1e-13, atol=1e-14)
    assert torch.equal(m(m.theta0, X.flatten(1)), m(m.theta0, X))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_models_and_data_with_one_seed_are_independent(seed):
    # With a shared stream the first layer was exactly X[:w]/sqrt(d) (errata C4-N1): check
    # that the first layers of three constructors are uncorrelated with the inputs drawn
    # from the same seed (|corr| of N independent pairs is below 5/sqrt(N) but for 6e-7).
    d, w = 20, 30
    X = ng.gaussian_inputs(w, np.ones(d), seed=seed)
    firsts = {"deep_linear": ng.deep_linear_model(d, depth=3, width=w, seed=seed).module.weights[0],
              "two_layer": ng.two_layer_net(d, w, seed=seed).module.W,
              "mlp": ng.mlp([d, w, 1], seed=seed).module.layers[0].weight}
    for name, W in firsts.items():
        W = W.detach()
        assert W.shape == X.shape, name
        corr = np.corrcoef(W.flatten().numpy(), X.flatten().numpy())[0, 1]
        assert abs(corr) < 5 / math.sqrt(X.numel()), (name, corr)
    # the same seed still gives the same model
    assert torch.equal(ng.two_layer_net(d, w, seed=seed).theta0, ng.two_layer_net(d, w, seed=seed).theta0)


def test_flat_model_keeps_buffers_fixed_and_casts_to_float64():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(2.0))
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

        def forward(self, X):
            return self.scale * (X @ (self.w + self.frozen))

    m = ng.FlatModel(Net())
    assert m.p == 3 and m.theta0.dtype == torch.float64
    th = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    x = torch.eye(3, dtype=DT)
    assert torch.allclose(m(th, x), 2 * (th + 1))


def test_flat_model_to_moves_module_theta0_and_buffers():
    meta = torch.device("meta")
    model = ng.two_layer_net(3, 4, seed=2)                       # the outer layer a is a buffer
    assert model.device == torch.device("cpu") and set(model._buffers) == {"a"}
    p, names = model.p, list(model.unflatten(model.theta0))
    assert model.to("meta") is model                               # in place, as nn.Module.to
    assert model.device == meta and model.theta0.device == meta and model.theta0.dtype == DT
    assert model.theta0.shape == (p,) and model.p == p and list(model.unflatten(model.theta0)) == names
    assert all(q.device == meta and q.dtype == DT for q in model.module.parameters())
    assert all(b.device == meta and b.dtype == DT for b in model.module.buffers())
    # the buffers forward passes to the module are the moved ones, not the CPU tensors of construction
    assert model._buffers["a"] is dict(model.module.named_buffers())["a"]
    out = model.forward(model.theta0, torch.empty(5, 3, dtype=DT, device=meta))
    assert out.device == meta and out.shape == (5,)
    cnn = ng.small_cnn(image_shape=(1, 6, 6)).to(torch.device("meta"))
    assert cnn.theta0.device == meta and cnn.module.conv1.weight.device == meta


def test_flat_model_to_the_cpu_keeps_every_value():
    model = ng.two_layer_net(3, 4, seed=5)
    theta0, a = model.theta0.clone(), model._buffers["a"].clone()
    X = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    before = model(theta0, X)
    model.to("cpu")
    assert torch.equal(model.theta0, theta0) and torch.equal(model._buffers["a"], a)
    assert torch.equal(model(theta0, X), before)


def test_flat_model_to_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = ng.mlp([3, 2])
    with pytest.raises(ValueError, match=r"device is cuda:0 but CUDA is not available here"):
        model.to("cuda:0")
    assert model.device == torch.device("cpu")                    # nothing moved
