"""Tests of noisegeom.simulate: closed forms for GD, minibatch structure of SGD, records, divergence,
the covariance of every injected-noise shape, and escape freezing."""

import itertools
import warnings

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import DT, cov_within, dense_sigma1, loop_ggn, loop_per_sample_gradients, random_theta


def _linear_problem(n, d, seed=0, interpolate=True):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT) * torch.linspace(1.0, 0.4, d, dtype=DT)
    theta_star = torch.randn(d, generator=g, dtype=DT)
    y = X @ theta_star if interpolate else X @ theta_star + 0.3 * torch.randn(n, generator=g, dtype=DT)
    return ng.linear_model(d), X, y, theta_star


@pytest.mark.parametrize("n,d,interpolate", [(12, 4, False), (4, 10, True)])
def test_gd_on_least_squares_is_the_closed_form_iteration(n, d, interpolate):
    """θ_t − θ* = (I − ηH)ᵗ (θ₀ − θ*) with Hθ* = Xᵀy/n (any interpolant when p > n)."""
    model, X, y, theta_star = _linear_problem(n, d, interpolate=interpolate)
    H = (X.T @ X / n).numpy()
    if not interpolate:
        theta_star = torch.as_tensor(np.linalg.solve(H, (X.T @ y / n).numpy()))
    eta = 1.0 / np.linalg.eigvalsh(H).max()
    theta0 = theta_star + 1.0
    traj = ng.simulate(model, X, y, theta0, eta=eta, steps=25, record_theta=True, theta_ref=theta_star)
    A = np.eye(d) - eta * H
    w0 = (theta0 - theta_star).numpy()
    for r, t in enumerate(traj.steps):
        want = theta_star.numpy() + np.linalg.matrix_power(A, int(t)) @ w0
        assert np.allclose(traj.theta[r, 0], want, rtol=1e-12, atol=1e-12)
        e = X.numpy() @ want - y.numpy()
        assert traj.loss[r, 0] == pytest.approx(0.5 * (e ** 2).mean(), rel=1e-10, abs=1e-15)
        assert traj.distance[r, 0] == pytest.approx(np.linalg.norm(want - theta_star.numpy()), rel=1e-10, abs=1e-14)
    assert np.array_equal(traj.steps, np.arange(26))
    assert np.allclose(traj.final_theta[0], traj.theta[-1, 0], rtol=0, atol=0)
    assert traj.message == "" and (traj.escaped_at == -1).all() and (traj.diverged_at == -1).all()


def test_schedules_array_and_callable_match_manual_gd():
    model, X, y, _ = _linear_problem(10, 3, seed=1, interpolate=False)
    n = X.shape[0]
    etas = 0.2 + 0.1 * np.sin(np.arange(12))
    th = torch.zeros(3, dtype=DT)
    for t in range(12):
        th = th - etas[t] * (X.T @ (X @ th - y) / n)
    a = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), eta=etas, steps=12)
    b = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), eta=lambda t: etas[t], steps=12)
    assert np.allclose(a.final_theta[0], th.numpy(), rtol=1e-12, atol=1e-14)
    assert np.array_equal(a.final_theta, b.final_theta)


def test_full_batch_sgd_without_replacement_is_gd_nonlinear_and_cross_entropy():
    for loss in ("mse", "cross_entropy"):
        g = torch.Generator().manual_seed(2)
        X = torch.randn(7, 3, generator=g, dtype=DT)
        if loss == "mse":
            model = ng.two_layer_net(3, 5, train_outer=True, seed=1)
            y = torch.randn(7, generator=g, dtype=DT)
        else:
            model = ng.mlp([3, 4, 3], seed=1)
            y = torch.randint(0, 3, (7,), generator=g)
        th0 = random_theta(model, seed=3)
        gd = ng.simulate(model, X, y, th0, eta=0.3, steps=15, loss=loss, record_theta=True)
        sgd = ng.simulate(model, X, y, th0, eta=0.3, steps=15, loss=loss, batch_size=7, n_seeds=3,
                          record_theta=True, seed=5)
        assert np.allclose(sgd.theta, np.broadcast_to(gd.theta, sgd.theta.shape), rtol=1e-11, atol=1e-13)
        # one GD step is θ − η ∇L with ∇L = mean of the loop's per-sample gradients
        grad = loop_per_sample_gradients(model, th0, X, y, loss).mean(0)
        assert np.allclose(gd.theta[1, 0], (th0 - 0.3 * grad).numpy(), rtol=1e-12, atol=1e-14)
        assert gd.loss[-1, 0] < gd.loss[0, 0]


@pytest.mark.parametrize("replacement", [False, True])
def test_every_sgd_step_is_a_real_minibatch_gradient(replacement):
    """Each seed's update equals −η × the mean gradient of SOME batch of B samples, and only
    batches allowed by the sampling scheme occur (repeated indices only with replacement)."""
    model, X, y, _ = _linear_problem(6, 3, seed=3, interpolate=False)
    n, B, eta = 6, 2, 0.1
    traj = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), eta=eta, steps=6, batch_size=B,
                       replacement=replacement, n_seeds=12, seed=4, record_theta=True)
    seen_repeat = False
    for t in range(6):
        for s in range(12):
            th = torch.as_tensor(traj.theta[t, s])
            G = loop_per_sample_gradients(model, th, X, y).numpy()
            step = traj.theta[t + 1, s] - traj.theta[t, s]
            batches = list(itertools.combinations_with_replacement(range(n), B))
            dist = [np.abs(step + eta * G[list(b)].mean(0)).max() for b in batches]
            j = int(np.argmin(dist))
            assert dist[j] < 1e-13
            seen_repeat |= len(set(batches[j])) < B
    assert seen_repeat == replacement   # P(no repeat in 72 draws with replacement) = (5/6)^72 ≈ 2e-6


def test_seeds_reproducible_and_independent():
    model, X, y, _ = _linear_problem(8, 3, seed=5)
    kw = dict(eta=0.2, steps=10, batch_size=2, n_seeds=4)
    a = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), seed=1, **kw)
    b = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), seed=1, **kw)
    c = ng.simulate(model, X, y, torch.zeros(3, dtype=DT), seed=2, **kw)
    assert np.array_equal(a.final_theta, b.final_theta)
    assert not np.allclose(a.final_theta, c.final_theta)
    assert len({tuple(r) for r in a.final_theta.round(12)}) == 4       # seeds differ from each other
    # theta0 of shape (n_seeds, p): one start per seed
    starts = torch.arange(12, dtype=DT).reshape(4, 3) / 10
    gd = ng.simulate(model, X, y, starts, eta=0.2, steps=3, n_seeds=4, record_theta=True)
    assert np.allclose(gd.theta[0], starts.numpy())


def test_records_energy_on_directions_plus_complement_is_squared_distance():
    model, X, y, theta_star = _linear_problem(9, 5, seed=6)
    H = (X.T @ X / 9).numpy()
    _, U = np.linalg.eigh(H)
    top = U[:, ::-1][:, :2]
    traj = ng.simulate(model, X, y, theta_star + 0.5, eta=0.3, steps=20, batch_size=3, n_seeds=5,
                       record_every=4, record_theta=True, theta_ref=theta_star, directions=top)
    assert np.array_equal(traj.steps, [0, 4, 8, 12, 16, 20])
    assert traj.energy.shape == (6, 5, 2) and traj.distance.shape == (6, 5)
    diff = traj.theta - theta_star.numpy()
    comp = diff - (diff @ top) @ top.T
    total = traj.energy.sum(-1) + (comp ** 2).sum(-1)
    assert np.allclose(total, traj.distance ** 2, rtol=1e-12)
    assert np.allclose(traj.energy, (diff @ top) ** 2, rtol=1e-12)
    # with a full orthonormal basis the energies add up to the squared distance
    full = ng.simulate(model, X, y, theta_star + 0.5, eta=0.3, steps=5, batch_size=3, n_seeds=2,
                       theta_ref=theta_star, directions=U)
    assert np.allclose(full.energy.sum(-1), full.distance ** 2, rtol=1e-12)
    assert np.allclose(full.energy_fraction().sum(-1), 1.0, rtol=1e-12)
    # the recorded loss is the full-data loss at the recorded iterate
    for r in (0, 3):
        for s in (0, 4):
            th = torch.as_tensor(traj.theta[r, s])
            assert traj.loss[r, s] == pytest.approx(ng.loss_value(model, th, X, y), rel=1e-12, abs=1e-15)
    # record_every that does not divide steps still records the last step
    odd = ng.simulate(model, X, y, theta_star, eta=0.3, steps=10, record_every=4)
    assert np.array_equal(odd.steps, [0, 4, 8, 10])


def _divergent():
    model, X, y, theta_star = _linear_problem(8, 3, seed=7)
    lam_max = np.linalg.eigvalsh((X.T @ X / 8).numpy()).max()
    return model, X, y, theta_star, 10.0 / lam_max   # |1 − ηλ_max| = 9: overflow within ~330 steps


def test_divergent_run_warns_and_keeps_records():
    model, X, y, theta_star, eta = _divergent()
    with pytest.warns(RuntimeWarning, match=r"diverged \(non-finite iterate or loss\)"):
        traj = ng.simulate(model, X, y, theta_star + 0.1, eta=eta, steps=2000, n_seeds=2, record_every=10,
                           theta_ref=theta_star, record_theta=True)
    assert (traj.diverged_at > 0).all()
    assert "stopped at step" in traj.message and "diverged" in traj.message
    assert traj.steps[-1] < 2000 and len(traj.steps) == traj.loss.shape[0] == traj.distance.shape[0]
    assert np.isfinite(traj.theta).all() and np.isfinite(traj.final_theta).all()
    finite_loss = traj.loss[np.isfinite(traj.loss)]
    assert finite_loss.max() > 1e100                     # it really blew up before being frozen
    assert np.all(np.diff(traj.distance[:, 0]) >= 0)     # recorded distances grow up to the freeze


def test_divergent_run_raise_and_ignore():
    model, X, y, theta_star, eta = _divergent()
    with pytest.raises(ng.DivergenceError, match="diverged") as info:
        ng.simulate(model, X, y, theta_star + 0.1, eta=eta, steps=2000, on_divergence="raise")
    traj = info.value.trajectory
    assert isinstance(traj, ng.Trajectory) and traj.diverged_at[0] > 0 and len(traj.steps) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = ng.simulate(model, X, y, theta_star + 0.1, eta=eta, steps=2000, on_divergence="ignore")
    assert quiet.diverged_at[0] > 0


def test_escape_loss_freezes_each_seed_at_its_escape_step():
    """GD from θ* + a_s u₁ with |1 − ηλ₁| > 1: L_t = ½λ₁ a_s² (1 − ηλ₁)^{2t}, so the escape step is known."""
    model, X, y, theta_star = _linear_problem(8, 3, seed=8)
    H = (X.T @ X / 8).numpy()
    lam, U = np.linalg.eigh(H)
    lam1, u1 = lam[-1], U[:, -1]
    eta = 2.2 / lam1
    a = np.array([1e-1, 1e-2, 1e-3, 1e-9])
    starts = torch.as_tensor(theta_star.numpy() + a[:, None] * u1)
    thr = 0.5
    traj = ng.simulate(model, X, y, starts, eta=eta, steps=40, n_seeds=4, escape_loss=thr, record_theta=True)
    r = abs(1 - eta * lam1)
    L = lambda t: 0.5 * lam1 * a ** 2 * r ** (2 * t)
    want = np.array([next((t for t in range(1, 41) if L(t)[s] > thr), -1) for s in range(4)])
    assert np.array_equal(traj.escaped_at, want)
    assert want[-1] == -1 and (want[:3] > 0).all()
    for s in range(3):
        k = int(np.searchsorted(traj.steps, want[s]))
        # frozen from the escape step on: the same loss and iterate in every later record
        assert np.all(traj.loss[k:, s] == traj.loss[k, s]) and traj.loss[k, s] > thr
        assert np.all(traj.theta[k:, s] == traj.theta[k, s])
        assert traj.loss[k - 1, s] <= thr
    assert traj.loss[-1, 3] < thr and traj.steps[-1] == 40      # the last seed kept running
    assert "3 of 4 runs escaped" in traj.message


# ------------------------------------------------------------ injected-noise covariances

def _noise_setup():
    g = torch.Generator().manual_seed(9)
    n, d = 8, 3
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(n, generator=g, dtype=DT)
    model = ng.two_layer_net(d, 2, activation="tanh", seed=2)    # p = 6, outer layer fixed
    theta = random_theta(model, seed=4, scale=0.8)
    return model, X, y, theta


def _one_step_noise(model, X, y, theta, eta, **kw):
    """ξ = −(θ₁ − θ₀)/η − ∇L(θ₀) over many seeds: the noise of one step."""
    traj = ng.simulate(model, X, y, theta, eta=eta, steps=1, record_theta=True, **kw)
    grad = loop_per_sample_gradients(model, theta, X, y).mean(0).numpy()
    return -(traj.theta[1] - traj.theta[0]) / eta - grad


@pytest.mark.parametrize("shape", ["sgd_covariance", "isotropic", "diagonal", "gauss_newton", "top_eigenvector",
                                   "minibatch", "minibatch_with_replacement"])
def test_injected_noise_has_its_intended_covariance_at_matched_trace(shape):
    """Empirical covariance over 20000 seeds of one step, within 5 SE entrywise (_fixtures.cov_within).

    Intended covariances, from loop gradients and the loop GGN (independent of the simulator):
    Σ_B; (Tr Σ_B / p) I; diag Σ_B; Tr Σ_B · G / Tr G; Tr Σ_B · u₁u₁ᵀ (u₁ top eigenvector of G);
    and real minibatches (noise=None), whose covariance is Σ_B for either scheme.
    """
    model, X, y, theta = _noise_setup()
    n, p, B, eta, S = X.shape[0], model.p, 3, 0.05, 20000
    replacement = shape == "minibatch_with_replacement"
    c = ng.batch_noise_factor(n, B, replacement=replacement)
    SB = c * dense_sigma1(loop_per_sample_gradients(model, theta, X, y))
    G = loop_ggn(model, theta, X, y).numpy()
    w, U = np.linalg.eigh(G)
    u1 = U[:, -1]
    target = {
        "sgd_covariance": SB, "minibatch": SB, "minibatch_with_replacement": SB,
        "isotropic": np.trace(SB) / p * np.eye(p),
        "diagonal": np.diag(np.diag(SB)),
        "gauss_newton": np.trace(SB) * G / np.trace(G),
        "top_eigenvector": np.trace(SB) * np.outer(u1, u1),
    }[shape]
    noise = None if shape.startswith("minibatch") else shape
    xi = _one_step_noise(model, X, y, theta, eta, batch_size=B, replacement=replacement, noise=noise,
                         n_seeds=S, seed=10)
    ok, z, C = cov_within(xi, np.zeros(p), target)
    assert ok, f"{shape}: max deviation {z:.1f} SE"
    assert np.abs(xi.mean(0)).max() <= 5 * (xi.std(0).max() / np.sqrt(S))   # zero mean
    # power: Σ_B itself is rejected for the shapes that are not Σ_B
    if shape in ("isotropic", "diagonal", "top_eigenvector"):
        assert not cov_within(xi, np.zeros(p), SB)[0]


# ------------------------------------------------------------ measurements along a run

def test_measure_along_run_is_simulate_in_segments_seeded_seed_plus_j():
    """θ at record_at[j] is the end of a separate simulate run from the previous record, with seed
    seed + j (no run before a record at step 0); measure sees exactly those points, once each, in order."""
    model, X, y, _ = _linear_problem(8, 3, seed=11, interpolate=False)
    th0 = torch.tensor([0.3, -0.2, 0.1], dtype=DT)
    for record_at, B, replacement in [([0, 2, 5, 9], 3, False), ([3, 4, 8], 2, True)]:
        seen = []
        steps, rows = ng.measure_along_run(model, X, y, th0, eta=0.2, record_at=record_at, batch_size=B,
                                           replacement=replacement, seed=7,
                                           measure=lambda th: seen.append(th.clone()) or float(th.sum()))
        assert isinstance(steps, np.ndarray) and np.issubdtype(steps.dtype, np.integer)
        assert steps.tolist() == record_at and len(rows) == len(seen) == len(record_at)
        th, t = th0, 0
        for j, target in enumerate(record_at):
            if target > t:
                tr = ng.simulate(model, X, y, th, eta=0.2, steps=target - t, batch_size=B, replacement=replacement,
                                 seed=7 + j, record_theta=True)
                th, t = torch.as_tensor(tr.theta[-1, 0]), target
            assert seen[j].dtype == torch.float64 and seen[j].shape == (3,)
            assert torch.equal(seen[j], th), (record_at, j)
            assert rows[j] == float(th.sum())
        # power: one continuous run with the first seed is a different SGD path
        one = ng.simulate(model, X, y, th0, eta=0.2, steps=record_at[-1], batch_size=B, replacement=replacement,
                          seed=7)
        assert not np.allclose(one.final_theta[0], seen[-1].numpy())
    # GD has no randomness: the segments make up one run of simulate
    steps, rows = ng.measure_along_run(model, X, y, th0, eta=0.2, record_at=[0, 4, 10], measure=lambda th: th)
    gd = ng.simulate(model, X, y, th0, eta=0.2, steps=10, record_theta=True)
    for r, t in enumerate([0, 4, 10]):
        assert np.allclose(rows[r].numpy(), gd.theta[t, 0], rtol=1e-13, atol=1e-15)


def test_measure_along_run_trains_with_the_loss_it_is_given():
    """loss='cross_entropy' trains on the cross-entropy: the segments are simulate runs with that loss."""
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(12, 4, dtype=DT, generator=g), torch.arange(12) % 3
    model = ng.mlp([4, 5, 3], seed=1)
    steps, rows = ng.measure_along_run(model, X, y, model.theta0, eta=0.3, record_at=[0, 3, 7], batch_size=4,
                                       seed=2, loss="cross_entropy", measure=lambda th: th)
    th = model.theta0
    for j, (a, b) in enumerate([(0, 3), (3, 7)]):
        tr = ng.simulate(model, X, y, th, eta=0.3, steps=b - a, batch_size=4, seed=2 + j + 1, loss="cross_entropy")
        th = torch.as_tensor(tr.final_theta[0])
        assert torch.equal(rows[j + 1], th)
    mse = ng.measure_along_run(model, X, torch.nn.functional.one_hot(y, 3).double(), model.theta0, eta=0.3, record_at=[0, 7], batch_size=4,
                               seed=2, measure=lambda th: th)[1]
    assert not torch.allclose(mse[-1], rows[-1])


def test_measure_along_run_raises_on_divergence_and_on_bad_inputs():
    model, X, y, theta_star, eta = _divergent()
    with pytest.raises(ng.DivergenceError, match="diverged"):
        ng.measure_along_run(model, X, y, theta_star + 0.1, eta=eta, record_at=[0, 2000], measure=lambda th: th)
    kw = dict(eta=0.1, measure=lambda th: th)
    for record_at in ([], [3, 1], [2, 2], [-1, 2], [1.5, 2.5], [[0, 1]], "0"):
        with pytest.raises(ValueError, match="record_at"):
            ng.measure_along_run(model, X, y, theta_star, record_at=record_at, **kw)
    with pytest.raises(ValueError, match="eta"):
        ng.measure_along_run(model, X, y, theta_star, record_at=[1], eta=0.0, measure=lambda th: th)
    with pytest.raises(TypeError, match="model"):
        ng.measure_along_run(torch.nn.Linear(3, 1), X, y, theta_star, record_at=[1], **kw)
    with pytest.raises(ValueError, match="theta0"):
        ng.measure_along_run(model, X, y, theta_star[:2], record_at=[1], **kw)


# ------------------------------------------------------------ minima

def test_find_minimum_linear_is_the_min_norm_correction():
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((4, 9)))
    y = torch.tensor(rng.standard_normal(4))
    th0 = torch.tensor(rng.standard_normal(9))
    got = ng.find_minimum(ng.linear_model(9), X, y, th0, eta=0.1, steps=0, polish_steps=2)
    want = th0 - torch.linalg.pinv(X) @ (X @ th0 - y)
    assert torch.allclose(got, want, atol=1e-12)


def test_find_minimum_network_interpolates():
    X = ng.gaussian_inputs(6, np.ones(3), seed=0)
    teacher = ng.two_layer_net(3, 2, seed=7)
    y = teacher(teacher.theta0, X)
    model = ng.two_layer_net(3, 4, seed=0)
    th = ng.find_minimum(model, X, y, model.theta0, eta=0.3, steps=200)
    assert ng.loss_value(model, th, X, y) < 1e-18
    with pytest.raises(ValueError, match="steps"):
        ng.find_minimum(model, X, y, model.theta0, eta=0.3, steps=-1)


# ------------------------------------------------------------------ the plain batched pass

class _WithoutHook(torch.nn.Module):
    """The same network without ``forward_batched``: FlatModel takes the generic vmap route."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, X):
        return self.inner(X)


@pytest.mark.parametrize("make", [
    lambda: ng.two_layer_net(3, 5, seed=1),
    lambda: ng.two_layer_net(3, 5, activation="relu", seed=2),
    lambda: ng.two_layer_net(3, 5, train_outer=True, seed=3),
    lambda: ng.linear_model(3, init_scale=1.0, seed=4),
])
@pytest.mark.parametrize("per_theta", [False, True])
def test_forward_batched_equals_vmap_and_a_loop(make, per_theta):
    model = make()
    assert hasattr(model.module, "forward_batched")
    generic = ng.FlatModel(_WithoutHook(model.module))
    g = torch.Generator().manual_seed(0)
    S, B = 4, 6
    thetas = torch.randn(S, model.p, generator=g, dtype=torch.float64)
    X = torch.randn(S, B, 3, generator=g, dtype=torch.float64) if per_theta else \
        torch.randn(B, 3, generator=g, dtype=torch.float64)
    plain = model.forward_batched(thetas, X, per_theta=per_theta)
    assert plain.shape == (S, B)
    # bit for bit the generic route, so that simulate's trajectories do not depend on the route
    assert torch.equal(plain, generic.forward_batched(thetas, X, per_theta=per_theta))
    loop = torch.stack([model(thetas[s], X[s] if per_theta else X) for s in range(S)])
    assert torch.allclose(plain, loop, rtol=1e-13, atol=1e-14)


def test_forward_batched_generic_route_for_a_multi_output_model():
    model = ng.mlp([3, 4, 2], seed=0)                 # no plain hook: vmap over the module
    assert not hasattr(model.module, "forward_batched")
    g = torch.Generator().manual_seed(1)
    thetas = torch.randn(3, model.p, generator=g, dtype=torch.float64)
    X = torch.randn(5, 3, generator=g, dtype=torch.float64)
    out = model.forward_batched(thetas, X, per_theta=False)
    assert out.shape == (3, 5, 2)
    for s in range(3):
        assert torch.allclose(out[s], model(thetas[s], X), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kw", [dict(), dict(batch_size=2), dict(batch_size=3, replacement=True),
                                dict(batch_size=2, noise="isotropic")])
@pytest.mark.parametrize("make,d", [(lambda d: ng.two_layer_net(d, 4, seed=0), 3),
                                    (lambda d: ng.two_layer_net(d, 7, activation="relu", seed=1), 5),
                                    (lambda d: ng.two_layer_net(d, 3, train_outer=True, seed=2), 2),
                                    (lambda d: ng.linear_model(d, init_scale=0.5, seed=3), 1),
                                    (lambda d: ng.linear_model(d, init_scale=0.5, seed=3), 3),
                                    (lambda d: ng.linear_model(d, init_scale=0.5, seed=3), 7)])
def test_simulate_plain_route_reproduces_the_vmap_route_bit_for_bit(kw, make, d):
    X = ng.gaussian_inputs(10, np.ones(d), seed=0)
    teacher = ng.two_layer_net(d, 2, seed=5)
    y = teacher(teacher.theta0, X)
    model = make(d)
    generic = ng.FlatModel(_WithoutHook(model.module))
    runs = [ng.simulate(m, X, y, model.theta0, eta=0.3, steps=60, n_seeds=3, seed=7, record_every=20,
                        record_theta=True, **kw) for m in (model, generic)]
    assert np.array_equal(runs[0].theta, runs[1].theta)
    assert np.array_equal(runs[0].loss, runs[1].loss)


def test_full_data_passes_in_chunks_agree_with_one_pass(monkeypatch):
    """simulate takes full-data losses and GD gradients in chunks of samples when runs × samples exceed
    _FULL_CHUNK (memory for large n); the chunked run equals the one-pass run to rounding."""
    import sys

    sim = sys.modules["noisegeom.simulate"]      # the module: ng.simulate is the function

    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(50, 4, dtype=DT, generator=g), torch.arange(50) % 3
    model = ng.mlp([4, 6, 3], seed=1)
    runs = {}
    for chunk in (2 ** 14, 7):                    # one pass; chunks of 7 // 2 = 3 samples for 2 seeds
        monkeypatch.setattr(sim, "_FULL_CHUNK", chunk)
        runs[chunk] = [ng.simulate(model, X, y, model.theta0, eta=0.3, steps=5, batch_size=bs, n_seeds=2, seed=4,
                                   loss="cross_entropy", record_theta=True) for bs in (None, 8)]
    for one, chunked in zip(runs[2 ** 14], runs[7]):
        np.testing.assert_allclose(chunked.loss, one.loss, rtol=1e-13)
        np.testing.assert_allclose(chunked.theta, one.theta, rtol=1e-12, atol=1e-15)
    assert not np.array_equal(runs[7][0].theta[-1], runs[7][0].theta[0])       # GD moved
