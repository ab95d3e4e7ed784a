"""Tests of noisegeom.autodiff: against explicit loops over samples on the nn.Module itself (float64)."""

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import (loop_ggn, loop_jacobian, loop_outputs, loop_per_sample_gradients, models_for_tests,
                       module_at, random_theta, sample_loss_of_output)

CASES = models_for_tests()
DT = torch.float64
IDS = [c[0] for c in CASES]


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_sample_gradients_match_loop(case):
    _, model, X, y, loss = case
    theta = random_theta(model, seed=11)
    got = ng.per_sample_gradients(model, theta, X, y, loss=loss)
    ref = loop_per_sample_gradients(model, theta, X, y, loss)
    assert got.shape == (X.shape[0], model.p)
    assert got.dtype == torch.float64
    assert rel(got, ref) < 1e-12
    # the mean of the per-sample gradients is the full gradient of L, by a separate autograd call
    mod, params = module_at(model, theta)
    out = mod(X)
    out = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
    L = torch.stack([sample_loss_of_output(out[i], y[i], loss) for i in range(X.shape[0])]).mean()
    full = torch.cat([t.reshape(-1) for t in torch.autograd.grad(L, params)])
    assert rel(got.mean(0), full) < 1e-12


def test_loop_reference_would_catch_accumulated_grads():
    """The oracle is sharp: forgetting to zero .grad (the peer-code bug) gives different rows."""
    _, model, X, y, loss = CASES[0]
    theta = random_theta(model, seed=2)
    mod, params = module_at(model, theta)
    acc = []
    for i in range(X.shape[0]):
        out = mod(X[i:i + 1])[0, 0] if mod(X[i:i + 1]).ndim == 2 else mod(X[i:i + 1])[0]
        sample_loss_of_output(out, y[i], loss).backward()  # no zeroing: gradients accumulate
        acc.append(torch.cat([q.grad.reshape(-1) for q in params]).clone())
    acc = torch.stack(acc)
    got = ng.per_sample_gradients(model, theta, X, y, loss=loss)
    assert rel(got[0], acc[0]) < 1e-12          # the first row agrees ...
    assert rel(got[1:], acc[1:]) > 1e-3         # ... the accumulated ones do not
    assert rel(got.cumsum(0), acc) < 1e-12      # accumulation is a running sum


def test_scalar_square_loss_gradient_is_residual_times_jacobian():
    _, model, X, y, _ = CASES[0]
    theta = random_theta(model, seed=5)
    e = ng.residuals(model, theta, X, y)
    J = ng.jacobian(model, theta, X)
    assert rel(ng.per_sample_gradients(model, theta, X, y), e[:, None] * J) < 1e-12


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
def test_jacobian_matches_loop(case):
    _, model, X, y, _ = case
    theta = random_theta(model, seed=7)
    got = ng.jacobian(model, theta, X)
    ref = loop_jacobian(model, theta, X)
    assert got.shape == ref.shape
    assert rel(got, ref) < 1e-12


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_chunking_does_not_change_results(chunk_size):
    _, model, X, y, loss = CASES[1]
    theta = random_theta(model, seed=8)
    ref_g = ng.per_sample_gradients(model, theta, X, y, loss=loss)
    ref_J = ng.jacobian(model, theta, X)
    assert rel(ng.per_sample_gradients(model, theta, X, y, loss=loss, chunk_size=chunk_size), ref_g) < 1e-14
    assert rel(ng.jacobian(model, theta, X, chunk_size=chunk_size), ref_J) < 1e-14


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ggn_factor_gives_dense_generalized_gauss_newton(case):
    _, model, X, y, loss = case
    theta = random_theta(model, seed=9)
    A = ng.ggn_factor(model, theta, X, y, loss=loss)
    n = X.shape[0]
    G_ref = loop_ggn(model, theta, X, y, loss)
    assert A.shape[1] == model.p and A.shape[0] % n == 0
    assert rel(A.T @ A / n, G_ref) < 1e-11
    assert rel(ng.gauss_newton_matrix(A, n=n), G_ref) < 1e-11


def test_residuals_losses_and_loss_value():
    for name, model, X, y, loss in CASES:
        theta = random_theta(model, seed=4)
        F = loop_outputs(model, theta, X)
        if loss == "mse":
            assert rel(ng.residuals(model, theta, X, y), F - y) < 1e-14
            ell = 0.5 * ((F - y) ** 2).reshape(X.shape[0], -1).sum(1)
        else:
            ell = torch.stack([torch.logsumexp(F[i], 0) - F[i, y[i]] for i in range(X.shape[0])])
        assert rel(ng.per_sample_losses(model, theta, X, y, loss=loss), ell) < 1e-13, name
        assert ng.loss_value(model, theta, X, y, loss=loss) == pytest.approx(float(ell.mean()), rel=1e-13)


def test_square_loss_convention_two_L_is_mean_squared_residual():
    _, model, X, y, _ = CASES[0]
    theta = random_theta(model, seed=1)
    e = ng.residuals(model, theta, X, y)
    assert 2 * ng.loss_value(model, theta, X, y) == pytest.approx(float((e ** 2).mean()), rel=1e-14)


def test_flat_model_theta0_and_call():
    _, model, X, _, _ = CASES[1]
    params = [q for q in model.module.parameters() if q.requires_grad]
    assert model.p == sum(q.numel() for q in params)
    assert torch.equal(model.theta0, torch.cat([q.detach().reshape(-1) for q in params]))
    theta = random_theta(model, seed=3)
    assert rel(model(theta, X), loop_outputs(model, theta, X)) < 1e-14
    parts = model.unflatten(theta)
    assert list(parts) == [k for k, q in model.module.named_parameters() if q.requires_grad]
    assert rel(torch.cat([v.reshape(-1) for v in parts.values()]), theta) == 0
    assert "FlatModel(p=" in repr(model)


def test_a_mix_of_devices_is_named_before_the_model_runs():
    """θ, y or the model's buffers on another device than X: a clear error, not 'X does not fit the
    model' from the first forward pass (meta tensors stand in for CUDA ones: no data is read)."""
    meta = torch.device("meta")
    model = ng.mlp([3, 4, 2])
    X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    labels = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"theta is on cpu but X on meta; move them to one device, e\.g\. "
                                         r"theta\.to\(X\.device\) \(model\.to\(X\.device\)"):
        ng.per_sample_gradients(model, model.theta0, X.to(meta), labels.to(meta), loss="cross_entropy")
    moved = ng.mlp([3, 4, 2]).to("meta")                           # θ₀ on meta, X left on the CPU
    with pytest.raises(ValueError, match=r"theta is on meta but X on cpu"):
        ng.jacobian(moved, moved.theta0, X)
    with pytest.raises(ValueError, match=r"y is on meta but X on cpu"):
        ng.per_sample_gradients(model, model.theta0, X, labels.to(meta), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"y is a ndarray on the host \(cpu\) but X on meta"):
        ng.per_sample_losses(moved, moved.theta0, X.to(meta), np.zeros(5, dtype=np.int64), loss="cross_entropy")
    two = ng.two_layer_net(3, 4)                                   # its buffer a stays on the CPU
    with pytest.raises(ValueError, match=r"the model's buffer 'a' is on cpu but X on meta; .* model\.to\(X\.device\)"):
        ng.residuals(two, two.theta0.to(meta), X.to(meta), torch.zeros(5, dtype=DT, device=meta))
    # on one device nothing changes: the same call on the CPU runs
    assert ng.per_sample_gradients(model, model.theta0, X, labels, loss="cross_entropy").shape == (5, model.p)
