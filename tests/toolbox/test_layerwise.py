"""Tests of noisegeom.layerwise, the layer-by-layer route of per_sample_gradients, jacobian and
ggn_factor: against explicit loops over samples (.backward() on the nn.Module, one sample at a
time) in float64, and the fallback to vmap for models outside its rule."""

import pytest
import torch
from torch import nn

import noisegeom as ng
import noisegeom.autodiff as autodiff
from _fixtures import loop_ggn, loop_jacobian, loop_per_sample_gradients, random_theta

DT = torch.float64
# _Conv1dNet's even kernel with padding='same' is on purpose: torch pads one more at the end
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def rel(a, b):
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


def _data(n, shape, k, loss, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *shape, generator=g, dtype=DT)
    if loss == "cross_entropy":
        y = torch.randint(0, k, (n,), generator=g)
    else:
        y = torch.randn(n, k, generator=g, dtype=DT) if k > 1 else torch.randn(n, generator=g, dtype=DT)
    return X, y


def _sequential(k, seed=0):
    """Conv2d(stride 2, padding 0, dilation 2, no bias), MaxPool, Flatten, Linear: 11×11 → 4×4 → 2×2."""
    torch.manual_seed(seed)
    return ng.FlatModel(nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=0, dilation=2, bias=False),
                                      nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, k)))


class _Conv1dNet(nn.Module):
    """A 1-D convolution with padding='same' and groups=2 (even kernel: torch pads unevenly),
    then a 2-D one whose weight is shared by two calls."""

    def __init__(self, k):
        super().__init__()
        self.c1 = nn.Conv1d(4, 4, 4, padding="same", groups=2)
        self.c2 = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(4 * 6, k)

    def forward(self, X):
        h = torch.tanh(self.c1(X))                               # (n, 4, 6)
        h = torch.tanh(self.c2(h[:, None]))                      # (n, 1, 4, 6)
        h = self.c2(h)[:, 0]                                     # the same weight again
        return self.head(h.reshape(X.shape[0], -1))


def _conv1d_net(k, seed=0):
    torch.manual_seed(seed)
    return ng.FlatModel(_Conv1dNet(k))


# (name, model, input shape per sample, outputs)
MODELS = [
    ("small_cnn", lambda k: ng.small_cnn(n_classes=k, seed=1), (64,)),
    ("small_cnn_3x7x9", lambda k: ng.small_cnn(n_classes=k, image_shape=(3, 7, 9), channels=3, seed=2), (3, 7, 9)),
    ("sequential", _sequential, (2, 11, 11)),
    ("conv1d_groups_shared", _conv1d_net, (4, 6)),
]
CASES = [(name, make, shape, k, loss) for name, make, shape in MODELS
         for k, loss in ((1, "mse"), (3, "mse"), (4, "cross_entropy"))]
IDS = [f"{c[0]}-{c[4]}-k{c[3]}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_sample_gradients_match_loop(case):
    _, make, shape, k, loss = case
    model = make(k)
    theta = random_theta(model, seed=3, scale=0.3)
    X, y = _data(7, shape, k, loss)
    ref = loop_per_sample_gradients(model, theta, X, y, loss)
    got = ng.per_sample_gradients(model, theta, X, y, loss=loss, route="layerwise")
    assert got.shape == (7, model.p) and got.dtype == DT
    assert rel(got, ref) < 1e-12
    # chunks of 3 samples (the last one shorter) give the same rows
    assert rel(ng.per_sample_gradients(model, theta, X, y, loss=loss, route="layerwise", chunk_size=3), ref) < 1e-12
    # a model with convolutions takes this route by default
    assert torch.equal(ng.per_sample_gradients(model, theta, X, y, loss=loss), got)


@pytest.mark.parametrize("case", [c for c in CASES if c[4] == "mse"], ids=[i for c, i in zip(CASES, IDS)
                                                                          if c[4] == "mse"])
def test_jacobian_matches_loop(case):
    _, make, shape, k, _ = case
    model = make(k)
    theta = random_theta(model, seed=4, scale=0.3)
    X, _ = _data(6, shape, k, "mse")
    ref = loop_jacobian(model, theta, X)
    got = ng.jacobian(model, theta, X, route="layerwise")
    assert got.shape == ((6, model.p) if k == 1 else (6, k, model.p))
    assert rel(got, ref) < 1e-12
    assert rel(ng.jacobian(model, theta, X, route="layerwise", chunk_size=4), ref) < 1e-12
    assert torch.equal(ng.jacobian(model, theta, X), got)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_factor_matches_dense_loop(loss):
    model = ng.small_cnn(channels=2, n_classes=3, seed=5)
    theta = random_theta(model, seed=6, scale=0.3)
    X, y = _data(5, (64,), 3, loss)
    A = ng.ggn_factor(model, theta, X, y, loss=loss, route="layerwise")
    assert A.shape == (15, model.p)
    G = loop_ggn(model, theta, X, y, loss)
    assert rel(A.T @ A / 5, G) < 1e-12


def test_the_default_route_is_layerwise_for_convolutions_and_vmap_otherwise(monkeypatch):
    """Counting calls: 'auto' forms a CNN's rows layer by layer (vmap sees only the two samples of
    the check), and a network of linear layers' by vmap, faster there."""
    calls = {"layerwise": 0, "vmap_rows": []}
    real_rows, real_vmap = autodiff.layerwise_rows, autodiff._vmap_per_sample_gradients

    def rows(*args, **kwargs):
        calls["layerwise"] += 1
        return real_rows(*args, **kwargs)

    def vmap_rows(model, theta, X, *args):
        calls["vmap_rows"].append(X.shape[0])
        return real_vmap(model, theta, X, *args)

    monkeypatch.setattr(autodiff, "layerwise_rows", rows)
    monkeypatch.setattr(autodiff, "_vmap_per_sample_gradients", vmap_rows)
    model = ng.small_cnn(n_classes=3, seed=1)
    X, y = _data(9, (64,), 3, "cross_entropy")
    ng.per_sample_gradients(model, model.theta0, X, y, loss="cross_entropy")
    assert calls == {"layerwise": 1, "vmap_rows": [2]}
    mlp = ng.mlp([64, 5, 3], seed=2)
    calls.update(layerwise=0, vmap_rows=[])
    G = ng.per_sample_gradients(mlp, mlp.theta0, X, y, loss="cross_entropy")
    assert calls["vmap_rows"] == [9]
    # the layerwise route applies to it too, when asked for, with the same rows
    assert rel(ng.per_sample_gradients(mlp, mlp.theta0, X, y, loss="cross_entropy", route="layerwise"), G) < 1e-12


class _Shift(nn.Module):
    """A CNN plus a parameter added to its outputs directly (outside any layer)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 16, 2)
        self.shift = nn.Parameter(torch.tensor([0.3, -0.2]))

    def forward(self, X):
        h = torch.tanh(self.conv(X.reshape(-1, 1, 4, 4)))
        return self.head(h.flatten(1)) * (1 + self.shift)


class _Leak(nn.Module):
    """Every parameter is a layer's, but the conv weight also reaches the output directly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 16, 2)

    def forward(self, X):
        h = torch.tanh(self.conv(X.reshape(-1, 1, 4, 4)))
        # a factor, not a summand: the cross-entropy does not see a shift common to all logits
        return self.head(h.flatten(1)) * (1 + torch.sin(self.conv.weight).mean())


class _Conv3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 2)
        self.head = nn.Linear(2 * 27, 2)

    def forward(self, X):
        return self.head(torch.tanh(self.conv(X.reshape(-1, 1, 4, 4, 4))).flatten(1))


class _BatchCentred(nn.Module):
    """Couples the samples: the outputs are centred over the batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 16, 2)

    def forward(self, X):
        out = self.head(torch.tanh(self.conv(X.reshape(-1, 1, 4, 4))).flatten(1))
        return out - out.mean(0)


@pytest.mark.parametrize("make, d, reason", [
    (_Shift, 16, "not the weight or bias"),
    (_Leak, 16, "outside the recorded layers"),
    (_Conv3d, 64, "not the weight or bias"),
], ids=["parameter_used_directly", "weight_also_used_directly", "conv3d"])
def test_models_outside_the_rule_fall_back_to_vmap(make, d, reason):
    torch.manual_seed(0)
    model = ng.FlatModel(make())
    theta = random_theta(model, seed=7, scale=0.3)
    X, y = _data(6, (d,), 2, "cross_entropy")
    with pytest.raises(ng.NotLayerwiseError, match=f"route='layerwise' does not apply to this model: .*{reason}"):
        ng.per_sample_gradients(model, theta, X, y, loss="cross_entropy", route="layerwise")
    with pytest.raises(ng.NotLayerwiseError, match=reason):
        ng.jacobian(model, theta, X, route="layerwise")
    assert rel(ng.per_sample_gradients(model, theta, X, y, loss="cross_entropy"),
               loop_per_sample_gradients(model, theta, X, y, "cross_entropy")) < 1e-12
    assert rel(ng.jacobian(model, theta, X), loop_jacobian(model, theta, X)) < 1e-12


def test_coupled_samples_are_refused():
    torch.manual_seed(0)
    model = ng.FlatModel(_BatchCentred())
    X, y = _data(6, (16,), 2, "mse")
    with pytest.raises(ng.NotLayerwiseError, match="changes with the other samples"):
        ng.per_sample_gradients(model, model.theta0, X, y, route="layerwise")
    # 'auto' keeps vmap's answer, the gradients of each sample evaluated alone
    assert torch.allclose(ng.per_sample_gradients(model, model.theta0, X, y),
                          ng.per_sample_gradients(model, model.theta0, X, y, route="vmap"), rtol=0, atol=0)


def test_route_is_checked():
    model = ng.small_cnn(seed=1)
    X, y = _data(3, (64,), 10, "cross_entropy")
    for fn in (lambda r: ng.per_sample_gradients(model, model.theta0, X, y, loss="cross_entropy", route=r),
               lambda r: ng.jacobian(model, model.theta0, X, route=r),
               lambda r: ng.ggn_factor(model, model.theta0, X, y, loss="cross_entropy", route=r)):
        with pytest.raises(ValueError, match="route must be one of"):
            fn("unfold")
