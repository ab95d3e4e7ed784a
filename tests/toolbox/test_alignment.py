"""Tests of noisegeom.alignment: Gram-identity metrics against dense p×p computations (1e-10 relative),
exact perfect alignment, and the population Gaussian linear model against Monte Carlo."""

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import (DT, dense_loss_hessian, dense_sigma1, loop_ggn, loop_jacobian, loop_outputs,
                       loop_per_sample_gradients,
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


# ------------------------------------------------------------------ a plain nn.Module: from_module

def _dense_metrics_of_module(module, X, y, loss):
    """μ, μ_iso and g(v) of a module from per-sample loops on a float64 copy of it: g_i by autograd
    per sample, J_i row by row, Λ_i = I (square loss) or diag(s) − ssᵀ (cross-entropy, s = softmax),
    then Σ₁, G and the definitions with explicit p×p matrices."""
    import copy

    mod = copy.deepcopy(module).double()
    params = [q for q in mod.parameters() if q.requires_grad]
    X = X.double()
    grads, G, losses = [], 0.0, []
    for i in range(X.shape[0]):
        out = mod(X[i:i + 1])[0]
        if loss == "mse":
            target = y[i].double().reshape(out.shape)
            ell = 0.5 * ((out - target) ** 2).sum()
            lam = torch.eye(out.numel(), dtype=torch.float64)
        else:
            ell = torch.logsumexp(out, 0) - out[int(y[i])]
            s = torch.softmax(out.detach(), 0)
            lam = torch.diag(s) - torch.outer(s, s)
        losses.append(float(ell.detach()))
        grads.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(ell, params, retain_graph=True)]))
        rows = [torch.cat([t.reshape(-1) for t in torch.autograd.grad(o, params, retain_graph=True)])
                for o in out.reshape(-1)]
        Ji = torch.stack(rows)
        G = G + Ji.T @ lam @ Ji
    n = X.shape[0]
    G = G / n
    Gr = torch.stack(grads)
    S1 = Gr.T @ Gr / n - torch.outer(Gr.mean(0), Gr.mean(0))
    L2 = 2 * float(np.mean(losses))
    p = G.shape[0]
    v = torch.linspace(-1, 1, p, dtype=torch.float64)
    return {"mu": float((S1 * G).sum()) / (L2 * float((G * G).sum())),
            "mu_iso": float(S1.trace() * G.trace()) / (p * L2 * float((G * G).sum())),
            "g": float(v @ S1 @ v) / (L2 * float(v @ G @ v)), "v": v, "p": p}


def _user_modules():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 4 * 4, 5))
    two = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Softplus(), torch.nn.Linear(5, 2))
    g = torch.Generator().manual_seed(1)
    X4 = torch.randn(20, 4, generator=g)
    return [("mlp_mse_column_targets", mlp, X4, torch.randn(20, 1, generator=g), torch.nn.MSELoss(), "mse"),
            ("cnn_cross_entropy", cnn, torch.randn(20, 1, 6, 6, generator=g), torch.randint(0, 5, (20,), generator=g),
             torch.nn.CrossEntropyLoss(), "cross_entropy"),
            ("two_outputs_mse", two, X4, torch.randn(20, 2, generator=g), "mse", "mse")]


@pytest.mark.parametrize("case", _user_modules(), ids=lambda c: c[0])
def test_from_module_matches_a_dense_per_sample_computation_and_leaves_the_module_alone(case):
    _, module, X, y, loss, name = case
    state = {k: v.clone() for k, v in module.state_dict().items()}
    geo = ng.NoiseGeometry.from_module(module, X, y, loss=loss)
    ref = _dense_metrics_of_module(module, X, y, name)
    assert geo.p == ref["p"] == sum(q.numel() for q in module.parameters())
    assert close(geo.mu(), ref["mu"], 1e-9)
    assert close(geo.mu_isotropic(), ref["mu_iso"], 1e-9)
    assert close(float(geo.g(ref["v"])), ref["g"], 1e-9)
    # untouched: dtype, values, buffers, gradients, mode; and the caller's float32 training still runs
    assert all(v.dtype == torch.float32 for v in module.state_dict().values())
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert all(q.grad is None for q in module.parameters()) and module.training
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    out = module(X)
    (torch.nn.functional.cross_entropy(out, y) if name == "cross_entropy" else ((out - y) ** 2).mean()).backward()
    opt.step()
    # ...and the next call reads the parameters as they are now
    assert not close(ng.NoiseGeometry.from_module(module, X, y, loss=loss).mu(), geo.mu(), 1e-6)


def test_from_module_reads_only_trainable_parameters_and_accepts_scalar_targets_either_way():
    _, module, X, y, _, _ = _user_modules()[0]
    a = ng.NoiseGeometry.from_module(module, X, y)
    b = ng.NoiseGeometry.from_module(module, X, y[:, 0], loss="mse")
    assert a.mu() == b.mu()
    module[0].weight.requires_grad_(False)
    frozen = ng.NoiseGeometry.from_module(module, X, y)
    assert frozen.p == 6 + 6 + 1 and module[0].weight.requires_grad is False


class _Coupled(torch.nn.Module):
    """Centres the batch: a sample's output depends on the others (no BatchNorm class to spot)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, X):
        return self.lin(X - X.mean(0))


class _Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, X):
        return self.lin(X) + 1e-3 * torch.randn(X.shape[0], 1)


def test_from_module_refuses_layers_that_couple_samples_or_are_random():
    X, y = torch.randn(10, 4), torch.randn(10)
    bn = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    drop = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.2), torch.nn.Linear(3, 1))
    running = dict(bn.state_dict())
    for module, what in ((bn, "BatchNorm1d"), (drop, "Dropout")):
        with pytest.raises(ValueError, match=rf"training mode and contains {what}.*call module\.eval\(\)"):
            ng.NoiseGeometry.from_module(module, X, y)
    assert all(torch.equal(running[k], v) for k, v in bn.state_dict().items())   # running statistics untouched
    assert np.isfinite(ng.NoiseGeometry.from_module(bn.eval(), X, y).mu())
    assert np.isfinite(ng.NoiseGeometry.from_module(drop.eval(), X, y).mu())
    batch_stats = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, track_running_stats=False),
                                      torch.nn.Linear(3, 1)).eval()
    with pytest.raises(ValueError, match="without running statistics"):
        ng.NoiseGeometry.from_module(batch_stats, X, y)
    with pytest.raises(ValueError, match="changes with the other samples"):
        ng.NoiseGeometry.from_module(_Coupled(), X, y)
    with pytest.raises(ValueError, match="random"):
        ng.NoiseGeometry.from_module(_Noisy(), X, y)
    # the factored route never takes a coupled network of linear layers for per-sample
    model = ng.FlatModel(_Coupled())
    with pytest.raises(ng.NotFactorableError, match="other samples"):
        ng.factored_jacobian(model, model.theta0, X.double())
    with pytest.raises(ValueError, match="BatchNorm1d"):
        ng.FlatModel(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train())


def test_from_module_bad_inputs():
    _, module, X, y, _, _ = _user_modules()[0]
    _, cnn, Xc, labels, _, _ = _user_modules()[1]
    with pytest.raises(TypeError, match="module"):
        ng.NoiseGeometry.from_module(lambda x: x, X, y)
    with pytest.raises(TypeError, match="loss"):
        ng.NoiseGeometry.from_module(module, X, y, loss=torch.nn.L1Loss())
    with pytest.raises(ValueError, match="loss"):
        ng.NoiseGeometry.from_module(module, X, y, loss="hinge")
    with pytest.raises(ValueError, match="label smoothing"):
        ng.NoiseGeometry.from_module(cnn, Xc, labels, loss=torch.nn.CrossEntropyLoss(label_smoothing=0.1))
    with pytest.raises(ValueError, match=r"y must have one entry per sample"):
        ng.NoiseGeometry.from_module(module, X, y[:5])
    with pytest.raises(ValueError, match=r"y must have shape \(20,\)"):
        ng.NoiseGeometry.from_module(module, X, torch.randn(20, 3))
    with pytest.raises(ValueError, match=r"labels 0, \.\.\., 4"):
        ng.NoiseGeometry.from_module(cnn, Xc, torch.full((20,), 5), loss="cross_entropy")
    with pytest.raises(ValueError, match="-100"):
        ng.NoiseGeometry.from_module(cnn, Xc, torch.full((20,), -100), loss="cross_entropy")
    with pytest.raises(TypeError, match="integer class labels"):
        ng.NoiseGeometry.from_module(cnn, Xc, labels.float(), loss="cross_entropy")
    with pytest.raises(ValueError, match="X contains non-finite"):
        ng.NoiseGeometry.from_module(module, torch.full((20, 4), float("nan")), y)
    frozen = torch.nn.Linear(4, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        ng.NoiseGeometry.from_module(frozen, X, y)


def test_cross_entropy_fisher_normalisation_tends_to_one_for_the_models_own_labels():
    """Labels drawn from the model's predictive distribution: G (the generalized Gauss–Newton matrix
    of the cross-entropy) is then the Fisher matrix and E Σ₁ = (1 − 1/n) G exactly, because
    E_y[(s − e_y)(s − e_y)ᵀ] = diag(s) − ssᵀ and E ḡḡᵀ = G/n. So E μ_F = 1 − 1/n, and μ_F → 1.
    Monte Carlo over label draws at fixed inputs and θ, within 4 standard errors; the spread
    shrinks like 1/√n."""
    model = ng.mlp([4, 3], seed=0)                                     # softmax regression, p = 15
    theta = random_theta(model, seed=1, scale=1.0)
    gen = torch.Generator().manual_seed(2)
    spread = {}
    for n, draws in ((60, 60), (600, 60)):
        X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        probs = torch.softmax(model(theta, X), dim=1)
        mus = []
        for _ in range(draws):
            labels = torch.multinomial(probs, 1, generator=gen)[:, 0]
            geo = ng.NoiseGeometry.from_model(model, theta, X, labels, loss="cross_entropy")
            mu_f = geo.mu(normalization="fisher")
            assert mu_f == pytest.approx(2 * geo.loss * geo.mu(), rel=1e-12)   # the two scales differ by 2L
            mus.append(mu_f)
        mus = np.array(mus)
        se = mus.std(ddof=1) / np.sqrt(draws)
        assert abs(mus.mean() - (1 - 1 / n)) < 4 * se, (n, mus.mean(), se)
        spread[n] = mus.std(ddof=1)
    assert spread[600] < spread[60] / 2                                # about √10 ≈ 3.2 times smaller
    assert abs(np.median(mus) - 1) < 0.1


def test_normalization_argument():
    model, X, y = ng.linear_model(3), torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    geo = ng.NoiseGeometry.from_model(model, torch.ones(3, dtype=torch.float64), X, y)
    v = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    for name in ("mu", "mu_isotropic"):
        assert getattr(geo, name)(normalization="fisher") == pytest.approx(2 * geo.loss * getattr(geo, name)(), rel=1e-12)
    assert geo.g(v, normalization="fisher") == pytest.approx(2 * geo.loss * geo.g(v), rel=1e-12)
    with pytest.raises(ValueError, match="normalization must be 'loss' or 'fisher'"):
        geo.mu(normalization="2L")


# ------------------------------------------------------------------ the p×p side and G's eigenpairs

def _side_cases():
    g = torch.Generator().manual_seed(5)
    clf = ng.mlp([4, 5, 3], seed=0)                                   # p = 43 < n·k = 150
    Xc = torch.randn(50, 4, generator=g, dtype=DT)
    two = ng.mlp([4, 3, 2], seed=1)                                   # p = 23 < n·k = 100
    net = ng.two_layer_net(3, 4, seed=2)                              # p = 12 < n = 40
    Xn = torch.randn(40, 3, generator=g, dtype=DT)
    return [("cross_entropy", clf, Xc, torch.randint(0, 3, (50,), generator=g), "cross_entropy"),
            ("two_outputs", two, Xc, torch.randn(50, 2, generator=g, dtype=DT), "mse"),
            ("scalar", net, Xn, torch.sin(Xn[:, 0]), "mse")]


@pytest.mark.parametrize("case", _side_cases(), ids=lambda c: c[0])
def test_auto_takes_the_parameter_side_when_p_is_smaller_and_both_sides_agree(case):
    _, model, X, y, loss = case
    theta = random_theta(model, seed=3)
    auto = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss)
    gram = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss, route="jacobian")
    assert (auto.route, auto.side, gram.side) == ("parameters", "parameters", "samples")
    for name in ("mu", "mu_isotropic", "zhu_indicator", "trace_sigma1", "trace_G", "frobenius2_G"):
        assert close(getattr(auto, name)(), getattr(gram, name)(), 1e-11), name
    assert auto._K is None and gram._M is None                        # each side formed only its own matrix
    # and against the p×p definitions
    G = loop_ggn(model, theta, X, y, loss)
    S1 = dense_sigma1(loop_per_sample_gradients(model, theta, X, y, loss))
    L2 = 2 * ng.loss_value(model, theta, X, y, loss=loss)
    assert close(auto.mu(), float(np.sum(S1 * G.numpy())) / (L2 * float((G ** 2).sum())), 1e-9)


def _dense_top(G, k):
    vals, vecs = torch.linalg.eigh(G)
    return vals.flip(0)[:k].numpy(), vecs.flip(1)[:, :k].numpy()


@pytest.mark.parametrize("route", ["auto", "factored", "jacobian", "parameters"])
def test_top_eigenpairs_of_G_from_either_side_match_eigh_of_the_dense_matrix(route):
    g = torch.Generator().manual_seed(7)
    model = ng.two_layer_net(5, 12, seed=3)                           # p = 60 > n = 25
    X = torch.randn(25, 5, generator=g, dtype=DT)
    y = torch.sin(X[:, 0])
    theta = random_theta(model, seed=4)
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, route=route)
    J = loop_jacobian(model, theta, X)
    vals, vecs = _dense_top(J.T @ J / 25, 6)
    ep = geo.top_eigenpairs(6)
    assert np.allclose(ep.values, vals, rtol=1e-10, atol=1e-14)
    assert np.allclose(np.abs((ep.vectors * vecs).sum(0)), 1.0, atol=1e-9)       # the same directions
    assert np.allclose(ep.vectors.T @ ep.vectors, np.eye(6), atol=1e-10)
    assert ep.residuals.max() < 1e-10 * vals[0]
    assert (ep.vectors[np.abs(ep.vectors).argmax(0), range(6)] > 0).all()
    with pytest.raises(ValueError, match="k must be <= 25"):
        geo.top_eigenpairs(26)
    with pytest.raises(TypeError, match="k must be an integer"):
        geo.top_eigenpairs(2.5)


def test_top_eigenpairs_on_the_parameter_side_and_too_many_pairs():
    _, model, X, y, loss = _side_cases()[0]
    theta = random_theta(model, seed=3)
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss)
    assert geo.side == "parameters"
    vals, vecs = _dense_top(loop_ggn(model, theta, X, y, loss), 4)
    ep = geo.top_eigenpairs(4)
    assert np.allclose(ep.values, vals, rtol=1e-10) and ep.residuals.max() < 1e-10 * vals[0]
    # a rank-deficient G seen from the Gram side: more pairs than non-zero eigenvalues is an error
    lin = ng.linear_model(5)
    Xl = torch.randn(4, 5, dtype=DT)
    Xl[3] = Xl[2]                                                     # rank 3: G has 3 non-zero eigenvalues
    geo = ng.NoiseGeometry.from_model(lin, torch.ones(5, dtype=DT), Xl, torch.zeros(4, dtype=DT))
    assert geo.side == "samples" and np.isfinite(geo.top_eigenpairs(3).values).all()
    with pytest.raises(ValueError, match="non-zero eigenvalues"):
        geo.top_eigenpairs(4)
