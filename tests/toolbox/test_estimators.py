"""Tests of noisegeom.estimators: μ and g from m of n samples.

* m = n: the U-statistics recombine to the exact metrics (NoiseGeometry and dense p×p
  definitions from per-sample loops, 1e-10) with zero standard error.
* Unbiasedness: the mean over all C(n, m) subsamples of every piece equals the n-sample value,
  computed by explicit loops over pairs and triples of samples (1e-12).
* The jackknife: the standard error equals the delete-one jackknife by brute force (m
  recomputations on m − 1 rows), with the finite-population correction.
* Coverage by Monte Carlo against the exact value (400 subsamples, nominal 95 %).
* estimate_mu / estimate_g from a model draw the rows they say and agree with the rows'
  gradients computed by a loop; bad inputs are refused with errors naming the argument.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import noisegeom as ng
from _fixtures import DT, dense_sigma1, loop_ggn, loop_per_sample_gradients, models_for_tests, random_theta

TOL = 1e-10


def close(a, b, tol=TOL):
    return np.all(np.abs(np.asarray(a) - np.asarray(b)) <= tol * np.maximum(np.abs(np.asarray(b)), 1e-300))


def rows_of(idx, k):
    """The factor rows of samples idx (k consecutive rows per sample)."""
    idx = torch.as_tensor(idx)
    return (idx[:, None] * k + torch.arange(k)).reshape(-1)


def random_problem(n=6, p=5, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(n, p, generator=g, dtype=DT)
    factor = torch.randn(n * k, p, generator=g, dtype=DT)
    losses = torch.rand(n, generator=g, dtype=DT) + 0.1
    return grads, factor, losses


# ------------------------------------------------------------------ m = n: exact

@pytest.mark.parametrize("case", models_for_tests(), ids=[c[0] for c in models_for_tests()])
def test_with_every_sample_the_estimates_are_the_exact_metrics(case):
    name, model, X, y, loss = case
    theta = random_theta(model, seed=3)
    n = X.shape[0]
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss)
    # the dense p×p definitions, from loops over samples
    grads = loop_per_sample_gradients(model, theta, X, y, loss).numpy()
    S1, G = dense_sigma1(grads), loop_ggn(model, theta, X, y, loss).numpy()
    for normalization in ("loss", "fisher"):
        est = ng.estimate_mu(model, theta, X, y, m=n, loss=loss, normalization=normalization)
        assert close(est.value, geo.mu(normalization=normalization))
        assert close(est.parts["trace_sigma1_G"], geo.trace_sigma1_G())
        assert close(est.parts["trace_sigma1_G"], np.trace(S1 @ G))
        assert close(est.parts["frobenius2_G"], geo.frobenius2_G())
        assert close(est.parts["frobenius2_G"], (G ** 2).sum())
        assert est.stderr == 0.0 and est.ci_low == est.ci_high == est.value
        assert (est.m, est.n) == (n, n) and sorted(est.indices) == list(range(n))
    assert close(est.parts["scale"], 1.0)
    est = ng.estimate_mu(model, theta, X, y, m=n, loss=loss)
    assert close(est.parts["scale"], 2 * geo.loss)
    V = torch.randn(model.p, 3, generator=torch.Generator().manual_seed(4), dtype=DT)
    eg = ng.estimate_g(model, theta, X, y, V, m=n, loss=loss)
    assert close(eg.value, geo.g(V)) and eg.value.shape == (3,)
    assert close(eg.parts["vSigma1v"], np.einsum("pr,pq,qr->r", V.numpy(), S1, V.numpy()))
    assert close(eg.parts["vGv"], np.einsum("pr,pq,qr->r", V.numpy(), G, V.numpy()))
    one = ng.estimate_g(model, theta, X, y, V[:, 0], m=n, loss=loss, normalization="fisher")
    assert isinstance(one.value, float) and close(one.value, geo.g(V[:, 0], normalization="fisher"))


@pytest.mark.parametrize("k", [1, 3])
def test_both_sides_of_the_frobenius_sum_agree(k):
    grads, factor, losses = random_problem(n=9, p=4, k=k, seed=7)
    a = ng.estimate_mu_from_sample(grads, factor, 20, losses=losses, side="samples")
    b = ng.estimate_mu_from_sample(grads, factor, 20, losses=losses, side="parameters")
    for key in ("f0", "f1", "frobenius2_G"):
        assert close(a.parts[key], b.parts[key], 1e-12)
    assert close(a.value, b.value, 1e-12) and close(a.stderr, b.stderr, 1e-10)


# ------------------------------------------------------------------ unbiasedness, by enumeration

def population_pieces(grads, factor, v):
    """The n-sample means over distinct indices, by explicit loops, and the metrics' pieces."""
    Gr, A = grads.numpy(), factor.numpy()
    n, p = Gr.shape
    k = A.shape[0] // n
    Ab = [A[i * k:(i + 1) * k] for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    out = {
        "f0": np.mean([np.sum((Ab[i] @ Ab[i].T) ** 2) for i in range(n)]),
        "f1": np.mean([np.sum((Ab[i] @ Ab[j].T) ** 2) for i, j in pairs]),
    }
    S1, G = dense_sigma1(Gr), A.T @ A / n
    # Tr(Σ₁G) = (1/n²) Σ_ij ‖A_j g_i‖² − (1/n³) Σ_ijl g_iᵀA_jᵀA_j g_l, the sums written out
    out["trace_sigma1_G"] = (sum(np.sum((Ab[j] @ Gr[i]) ** 2) for i in range(n) for j in range(n)) / n ** 2
                             - sum((Ab[j] @ Gr[i]) @ (Ab[j] @ Gr[l])
                                   for i, j, l in itertools.product(range(n), repeat=3)) / n ** 3)
    assert close(out["trace_sigma1_G"], np.trace(S1 @ G), 1e-12)
    out["frobenius2_G"] = np.sum(G ** 2)
    a = Gr @ v
    out["q0"], out["q1"] = np.mean(a ** 2), np.mean([a[i] * a[j] for i, j in pairs])
    out["vSigma1v"], out["vGv"] = v @ S1 @ v, v @ G @ v
    return out


@pytest.mark.parametrize("n,m,k", [(6, 4, 2), (6, 5, 1), (7, 4, 3)])
def test_every_piece_is_unbiased_over_all_subsamples(n, m, k):
    grads, factor, losses = random_problem(n=n, p=5, k=k, seed=n + m + k)
    v = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=DT)
    truth = population_pieces(grads, factor, v.numpy())
    truth["scale"] = 2 * float(losses.mean())
    subsets = list(itertools.combinations(range(n), m))
    assert len(subsets) == math.comb(n, m)
    sums_mu, sums_g = {}, {}
    for S in subsets:
        S = list(S)
        est = ng.estimate_mu_from_sample(grads[S], factor[rows_of(S, k)], n, losses=losses[S])
        eg = ng.estimate_g_from_sample(grads[S], factor[rows_of(S, k)], v, n, losses=losses[S])
        for key, val in est.parts.items():
            sums_mu[key] = sums_mu.get(key, 0.0) + val / len(subsets)
        for key, val in eg.parts.items():
            sums_g[key] = sums_g.get(key, 0.0) + val / len(subsets)
    for key, val in sums_mu.items():
        assert close(val, truth[key], 1e-12), key
    for key, val in sums_g.items():
        assert close(val, truth[key], 1e-12), key
    # the ratio itself is not unbiased: the test above could tell (it is not a tautology)
    mean_mu = np.mean([ng.estimate_mu_from_sample(grads[list(S)], factor[rows_of(S, k)], n,
                                                  losses=losses[list(S)]).value for S in subsets])
    assert abs(mean_mu - truth["trace_sigma1_G"] / (truth["scale"] * truth["frobenius2_G"])) > 1e-6


def test_the_mu_estimate_is_unchanged_by_a_common_shift_of_the_gradients():
    """Σ₁ ignores a common shift of the g_i; so does T̂, exactly (module docstring), and with it the
    jackknife. The code centres the gradients: an uncentred reference is the same formula evaluated
    after a shift that is undone by the centring, so compare shifts of very different sizes."""
    grads, factor, losses = random_problem(n=9, p=5, k=2, seed=3)
    w = torch.randn(5, generator=torch.Generator().manual_seed(9), dtype=DT)
    base = ng.estimate_mu_from_sample(grads, factor, 50, losses=losses)
    for shift in (1.0, 100.0):
        moved = ng.estimate_mu_from_sample(grads + shift * w, factor, 50, losses=losses)
        assert close(moved.parts["trace_sigma1_G"], base.parts["trace_sigma1_G"], 1e-9 * shift ** 2)
        assert close(moved.stderr, base.stderr, 1e-8 * shift ** 2)


# ------------------------------------------------------------------ the jackknife

@pytest.mark.parametrize("scale", ["losses", "exact", "fisher"])
def test_stderr_is_the_delete_one_jackknife_with_the_population_correction(scale):
    n, m, k = 30, 8, 2
    grads, factor, losses = random_problem(n=m, p=6, k=k, seed=11)
    v = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    kw = {"losses": dict(losses=losses), "exact": dict(exact_loss=0.7), "fisher": dict(normalization="fisher")}[scale]
    est = ng.estimate_mu_from_sample(grads, factor, n, level=0.9, **kw)
    eg = ng.estimate_g_from_sample(grads, factor, v, n, level=0.9, **kw)
    loo_mu, loo_g = [], []
    for r in range(m):
        keep = [i for i in range(m) if i != r]
        kr = dict(kw, losses=losses[keep]) if scale == "losses" else kw
        loo_mu.append(ng.estimate_mu_from_sample(grads[keep], factor[rows_of(keep, k)], n, **kr).value)
        loo_g.append(ng.estimate_g_from_sample(grads[keep], factor[rows_of(keep, k)], v, n, **kr).value)
    for loo, e in ((np.array(loo_mu), est), (np.array(loo_g), eg)):
        var = (m - 1) / m * ((loo - loo.mean(0)) ** 2).sum(0)
        assert close(e.stderr, np.sqrt((1 - m / n) * var), 1e-9)
        z = norm.ppf(0.95)
        assert close(e.ci_high - e.value, z * e.stderr, 1e-12) and close(e.value - e.ci_low, z * e.stderr, 1e-12)
        assert e.level == 0.9 and e.interval == "normal"


def test_log_interval():
    grads, factor, losses = random_problem(n=10, p=5, k=2, seed=5)
    a = ng.estimate_mu_from_sample(grads, factor, 40, losses=losses)
    b = ng.estimate_mu_from_sample(grads, factor, 40, losses=losses, interval="log")
    assert a.value == b.value and a.stderr == b.stderr and b.interval == "log"
    z = norm.ppf(0.975)
    assert close(b.ci_low, a.value * math.exp(-z * a.stderr / a.value), 1e-12)
    assert close(b.ci_high, a.value * math.exp(z * a.stderr / a.value), 1e-12)
    assert b.ci_low < a.value < b.ci_high and b.ci_high - a.value > a.value - b.ci_low
    # identical gradients: no noise along any v, ĝ ≈ 0 and never negative (the variance is computed centred)
    same = grads[:1].expand(10, 5).clone()
    flat = ng.estimate_g_from_sample(same, factor, torch.ones(5, 3, dtype=DT), 40, losses=losses)
    assert np.all((flat.value >= 0) & (flat.value < 1e-25))
    # gradients orthogonal to v: ĝ = 0 exactly, and a log interval does not exist
    v = torch.zeros(5, dtype=DT)
    v[4] = 1.0
    ortho = grads.clone()
    ortho[:, 4] = 0.0
    assert ng.estimate_g_from_sample(ortho, factor, v, 40, losses=losses).value == 0.0
    with pytest.raises(ValueError, match="interval='log' needs a positive estimate"):
        ng.estimate_g_from_sample(ortho, factor, v, 40, losses=losses, interval="log")
    assert "m = 10 of n = 40" in str(a) and "95% CI" in str(a)


# ------------------------------------------------------------------ coverage

def coverage_problem(loss):
    g = torch.Generator().manual_seed(0)
    n, d = 400, 5
    X = torch.randn(n, d, generator=g, dtype=DT)
    if loss == "mse":
        model = ng.mlp([d, 8, 1], seed=1)
        y = torch.tanh(X[:, 0]) + 0.3 * torch.randn(n, generator=g, dtype=DT)
    else:
        model = ng.mlp([d, 8, 3], seed=1)
        y = torch.randint(0, 3, (n,), generator=g)
    return model, model.theta0, X, y


@pytest.mark.parametrize("loss,normalization", [("mse", "loss"), ("cross_entropy", "fisher")])
def test_coverage_of_the_95_percent_interval(loss, normalization):
    """400 subsamples of m = 40 from n = 400. If the interval had exactly 95 % coverage, the hit count
    would be Binomial(400, 0.95), sd 0.011, and [0.88, 0.99] holds it with probability > 1 − 1e-6;
    the band is wide below because the normal interval of a ratio at m = 40 is approximate."""
    model, theta, X, y = coverage_problem(loss)
    n, m, R = X.shape[0], 40, 400
    geo = ng.NoiseGeometry.from_model(model, theta, X, y, loss=loss)
    mu = geo.mu(normalization=normalization)
    V = geo.top_eigenpairs(2).vectors
    g_true = geo.g(V, normalization=normalization)
    grads, factor = geo.grads, geo.factor
    k = factor.shape[0] // n
    losses = ng.per_sample_losses(model, theta, X, y, loss=loss)
    gen = torch.Generator().manual_seed(5)
    hits, hits_g = 0, np.zeros(2)
    for _ in range(R):
        S = torch.randperm(n, generator=gen)[:m]
        est = ng.estimate_mu_from_sample(grads[S], factor[rows_of(S, k)], n, losses=losses[S],
                                         normalization=normalization)
        hits += est.ci_low <= mu <= est.ci_high
        eg = ng.estimate_g_from_sample(grads[S], factor[rows_of(S, k)], V, n, losses=losses[S],
                                       normalization=normalization)
        hits_g += (eg.ci_low <= g_true) & (g_true <= eg.ci_high)
    assert 0.88 <= hits / R <= 0.99, hits / R
    assert np.all((0.88 <= hits_g / R) & (hits_g / R <= 0.99)), hits_g / R


# ------------------------------------------------------------------ from a model and data

@pytest.mark.parametrize("case", models_for_tests(), ids=[c[0] for c in models_for_tests()])
def test_estimate_mu_uses_the_rows_it_draws(case):
    name, model, X, y, loss = case
    theta = random_theta(model, seed=8)
    est = ng.estimate_mu(model, theta, X, y, m=5, loss=loss, seed=3)
    idx = est.indices
    assert len(idx) == 5 and len(set(idx)) == 5 and list(idx) == sorted(idx) and 0 <= idx.min() and idx.max() < 9
    # the rows' gradients and factor from a loop over samples (the factor: ggn_factor of those rows alone)
    grads = loop_per_sample_gradients(model, theta, X[idx], y[idx], loss)
    factor = ng.ggn_factor(model, theta, X[idx], y[idx], loss=loss)
    losses = ng.per_sample_losses(model, theta, X[idx], y[idx], loss=loss)
    ref = ng.estimate_mu_from_sample(grads, factor, 9, losses=losses)
    assert close(est.value, ref.value) and close(est.stderr, ref.stderr, 1e-8)
    assert close(ng.estimate_mu(model, theta, X, y, m=5, loss=loss, seed=3).value, est.value, 0.0)
    # a generator is advanced: two calls draw two subsamples
    gen = torch.Generator().manual_seed(0)
    draws = {tuple(ng.estimate_mu(model, theta, X, y, m=5, loss=loss, seed=gen).indices) for _ in range(4)}
    assert len(draws) > 1
    L = ng.loss_value(model, theta, X, y, loss=loss)
    exact = ng.estimate_mu(model, theta, X, y, m=5, loss=loss, seed=3, exact_loss=L)
    assert close(exact.parts["scale"], 2 * L) and exact.parts_stderr["scale"] == 0.0
    V = torch.randn(model.p, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    eg = ng.estimate_g(model, theta, X, y, V, m=4, loss=loss, seed=2)
    S = eg.indices
    ref = ng.estimate_g_from_sample(loop_per_sample_gradients(model, theta, X[S], y[S], loss),
                                    ng.ggn_factor(model, theta, X[S], y[S], loss=loss), V, 9,
                                    losses=ng.per_sample_losses(model, theta, X[S], y[S], loss=loss))
    assert close(eg.value, ref.value)


# ------------------------------------------------------------------ bad input


def test_overflow_is_an_error_naming_the_callers_arguments():
    """Found by the fuzz tests: a huge input gave a nan in parts_stderr, blamed a vanishing G, or named
    the arguments of the _from_sample functions from estimate_mu/estimate_g."""
    model = ng.linear_model(2, init_scale=1.0, seed=1)
    X = torch.tensor([[1.541, -0.2934], [-2.1788, 0.5684], [-1.0845, -1.3986], [0.4033, 0.838]], dtype=DT)
    y = torch.tensor([1.541, -0.2934, -2.1788, 0.5684], dtype=DT)
    theta = torch.tensor([0.3793, 0.9714], dtype=DT)
    huge_X = X.clone()
    huge_X[0, 0] = 1e150
    for call in (lambda: ng.estimate_mu(model, theta, huge_X, y, m=4),
                 lambda: ng.estimate_g(model, theta, huge_X, y, torch.tensor([1.541, -0.2934], dtype=DT), m=4)):
        with pytest.raises(ValueError, match=r"not finite: theta, X or y too large"):
            call()
    grads = ng.per_sample_gradients(model, theta, huge_X, y)
    with pytest.raises(ValueError, match=r"not finite: grads, factor or losses too large"):
        ng.estimate_mu_from_sample(grads, ng.jacobian(model, theta, huge_X), 4,
                                   losses=torch.ones(4, dtype=DT))
    # μ does not depend on the scale of θ: a huge θ with m = n is the exact, finite value, with zero error
    est = ng.estimate_mu(model, torch.tensor([1e150, -0.2934], dtype=DT), X, y, m=4)
    assert np.isfinite(est.value) and est.stderr == 0
    assert all(np.isfinite(v) and v == 0 for v in est.parts_stderr.values())


def test_losses_whose_sum_overflows_are_named():
    """Found by the fuzz tests: finite losses of 1e308 overflowed in 2L̂ and were reported as a loss that
    'is not finite', naming none of the arguments."""
    g = torch.tensor([[1.541], [-0.2934], [-2.1788], [0.5684]], dtype=DT)
    with pytest.raises(ValueError, match=r"sum of the losses is not finite: losses too large"):
        ng.estimate_mu_from_sample(g, g.clone(), 4, losses=torch.full((4,), 1e308, dtype=DT))
