"""Property-based tests (hypothesis) of the toolbox's entry points on generated inputs.

Strategies draw shapes (n = 1 included), dtypes, values (normal, huge, nan, inf), zero loss,
batch and chunk sizes, label ranges, losses given as strings or torch modules, and models
with one or several outputs. The property, for every call: it returns finite numbers of the
promised shapes, or it raises a ``ValueError`` or ``TypeError`` whose message names one of
the call's arguments, from noisegeom's own code (never an error from inside torch, never a
silent ``nan``, never a broadcast). The one other outcome allowed is
:class:`noisegeom.DivergenceError` from the functions documented to raise it when their run
diverges.

The estimates of μ and g from a subsample are drawn with m from 0 to n + 2, levels in and out
of (0, 1), wrong option strings and seeds, directions of the wrong shape, non-finite inputs and
n < 4; a computed :class:`noisegeom.Estimate` must be finite, lie inside its interval and have
zero error at m = n. The per-sample passes run with each ``route`` on convolutional nets of a
few image shapes and on an MLP, and where the layerwise route computes it must equal vmap's
to 1e-10. The readers of MNIST and CIFAR-10 run on a temporary folder of small valid, damaged
or missing files; there a missing folder or file is a ``FileNotFoundError`` (documented), and
a damaged file a ``ValueError`` that names the file.

The nine tests of whole problems run ``EXAMPLES`` = 300 generated cases each, the readers'
200, the 36 per-function ones 45 each: 4,520 per ``make test``. The database is off and the
run derandomised, so that a run is repeatable.
"""

from __future__ import annotations

import math
import re
import traceback

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import noisegeom as ng

EXAMPLES = 300
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _raised_by_noisegeom(exc: BaseException) -> bool:
    """The innermost frame of the traceback is noisegeom's own code (not torch, numpy or scipy)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "/noisegeom/" in frames[-1].filename.replace("\\", "/")


def _names(message: str, argnames) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?!\w)", message) for a in argnames)


def check_call(call, argnames):
    """Run ``call``: a finite result, or a clear ValueError/TypeError naming an argument."""
    try:
        out = call()
    except ng.DivergenceError as exc:
        # not bad input but a documented outcome of a run asked to raise on divergence
        # (find_minimum, measure_along_run): it says so, and carries the records
        assert _raised_by_noisegeom(exc) and "diverged" in str(exc)
        event("run diverged")
        return None
    except (ValueError, TypeError) as exc:
        assert _raised_by_noisegeom(exc), "".join(traceback.format_exception(exc))
        assert _names(str(exc), argnames), f"{type(exc).__name__} names none of {argnames}: {exc}"
        event(f"refused: {type(exc).__name__}")
        return None
    event("computed")
    values = (out.values, out.vectors, out.residuals) if isinstance(out, ng.Eigenpairs) else \
        out if isinstance(out, tuple) else (out,)
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().numpy()
        if isinstance(value, (float, int, np.ndarray, np.floating)):
            assert np.all(np.isfinite(value)), f"non-finite result {value}"
    return out


# ------------------------------------------------------------------ strategies

SPECIAL = st.sampled_from([0.0, 1e150, -1e300, math.nan, math.inf, -math.inf, 1e-300])


@st.composite
def arrays(draw, shape, *, special: float = 0.1, dtype=None, specials=SPECIAL):
    """A tensor of the given shape: normal entries, some of them huge, tiny or non-finite."""
    dtype = dtype or draw(st.sampled_from([torch.float64, torch.float32]))
    seed = draw(st.integers(0, 2 ** 16))
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if t.numel() and draw(st.floats(0, 1)) < special:
        flat = t.reshape(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(specials)
    return t.to(dtype)


def _mlp(d, k, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 3), torch.nn.Tanh(), torch.nn.Linear(3, k))


# Each strategy draws a valid problem and then, about half the time, one fault of a list: so
# that both the computation and every refusal are exercised.
FAULT = st.one_of(st.none(), st.integers(0, 12))


@st.composite
def module_problems(draw):
    """A plain module, data, targets and a loss, valid or with one fault."""
    n = draw(st.integers(2, 7))
    d = draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 2, 3]))
    ce = k > 1 and draw(st.booleans())
    loss = draw(st.sampled_from(["cross_entropy", torch.nn.CrossEntropyLoss()] if ce else
                                ["mse", torch.nn.MSELoss()]))
    module = _mlp(d, k, draw(st.integers(0, 99)))
    X = draw(arrays((n, d), special=0.0))
    if ce:
        y = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    else:
        y = draw(arrays(draw(st.sampled_from([(n, k)] if k > 1 else [(n,), (n, 1)])), special=0.0))
    route = draw(st.sampled_from(["auto", "jacobian", "parameters"] + (["factored"] if k == 1 else [])))
    chunk = draw(st.sampled_from([None, 1, 3]))
    fault = draw(FAULT)
    if fault == 0:
        X, y = X[:1], y[:1]                                   # n = 1
    elif fault == 1:
        X = draw(arrays((n, d + 1), special=0.0))            # X of the wrong width
    elif fault == 2:
        X = draw(arrays((n, d), special=1.0))                # huge, tiny or non-finite entries
    elif fault == 3 and not ce:
        y = draw(arrays((n, k + 1), special=0.0))            # y of the wrong shape
    elif fault == 4 and not ce:
        y = draw(arrays(tuple(y.shape), special=1.0))
    elif fault == 5 and ce:
        y = y.clone()
        y[0] = draw(st.sampled_from([-100, -1, k, k + 3]))   # labels out of range
    elif fault == 6 and ce:
        y = y.double()
    elif fault == 7:
        loss = draw(st.sampled_from(["hinge", 3, torch.nn.L1Loss(), torch.nn.CrossEntropyLoss(label_smoothing=0.1)]))
    elif fault == 8:
        route = draw(st.sampled_from(["gram", "factored"]))
    elif fault == 9:
        chunk = draw(st.sampled_from([0, -1, 2.5]))
    elif fault == 10 and not ce:                              # zero loss: y = f(X)
        with torch.no_grad():
            y = module(X.float()).reshape(y.shape).double()
    elif fault == 11:
        y = y[:-1]
    elif fault == 12:
        X = 1e150 * X.double()
    # the module and the data on one of the devices at hand (the metrics come back computed on the CPU)
    device = draw(st.sampled_from(DEVICES))
    return module.to(device), X.to(device), y.to(device), loss, route, chunk


@SETTINGS
@given(module_problems(), st.integers(-1, 5), st.sampled_from(["loss", "fisher", "bad"]))
def test_from_module_and_the_metrics_on_generated_problems(problem, k, normalization):
    module, X, y, loss, route, chunk = problem
    state = {key: v.clone() for key, v in module.state_dict().items()}
    args = ("module", "X", "y", "loss", "route", "chunk_size", "k", "normalization")
    geo = check_call(lambda: ng.NoiseGeometry.from_module(module, X, y, loss=loss, route=route, chunk_size=chunk),
                     args)
    assert all(torch.equal(state[key], v) for key, v in module.state_dict().items())
    if geo is None:
        return
    check_call(lambda: geo.mu(normalization=normalization), args)
    check_call(lambda: geo.mu_isotropic(normalization=normalization), args)
    check_call(lambda: geo.g(torch.ones(geo.p), normalization=normalization), args + ("v",))
    pairs = check_call(lambda: geo.top_eigenpairs(k), args)
    if pairs is not None:
        assert pairs.vectors.shape == (geo.p, k) and np.all(np.diff(pairs.values) <= 0)


@st.composite
def simulations(draw):
    n = draw(st.integers(2, 6))
    d = draw(st.integers(1, 3))
    model = draw(st.sampled_from([ng.two_layer_net(d, 2, seed=1), ng.linear_model(d, init_scale=1.0, seed=2),
                                  ng.mlp([d, 2, 2], seed=3)]))
    k = 2 if isinstance(model.module, torch.nn.Module) and model.p == ng.mlp([d, 2, 2]).p else 1
    X = draw(arrays((n, d), special=0.0))
    y = draw(arrays((n, k) if k > 1 else draw(st.sampled_from([(n,), (n, 1)])), special=0.0))
    seeds = draw(st.sampled_from([1, 2]))
    theta0 = draw(st.sampled_from([model.theta0, model.theta0.expand(seeds, -1)]))
    eta = draw(st.one_of(st.floats(0.01, 0.5), st.just(np.full(3, 0.1))))
    steps = 3
    batch = draw(st.sampled_from([None, 1, n]))
    fault = draw(FAULT)
    if fault == 0:
        eta = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf, np.full(2, 0.1)]))
    elif fault == 1:
        steps = draw(st.sampled_from([0, -2]))
    elif fault == 2:
        batch = draw(st.sampled_from([0, n + 1, 1.5]))
    elif fault == 3:
        seeds = 0
    elif fault == 4:
        y = draw(arrays((n + 1,), special=0.0))
    elif fault == 5:
        y = draw(arrays((n, k + 1), special=0.0))
    elif fault == 6:
        X = draw(arrays((n, d), special=1.0))
    elif fault == 7:
        theta0 = model.theta0[:1]
    elif fault == 8:
        eta = 1e6                                         # diverges: reported, frozen, not an error
    elif fault == 9:
        X, y = X[:1], y[:1]
    return model, X, y, theta0, eta, steps, batch, seeds


@SETTINGS
@given(simulations(), st.sampled_from([1, 2, 0]))
def test_simulate_on_generated_problems(problem, record_every):
    model, X, y, theta0, eta, steps, batch, seeds = problem
    args = ("model", "X", "y", "theta0", "eta", "steps", "batch_size", "n_seeds", "record_every", "loss")

    def run():
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # a diverging run is reported, not an error
            tr = ng.simulate(model, X, y, theta0, eta=eta, steps=steps, batch_size=batch, n_seeds=seeds,
                             record_every=record_every)
        assert tr.loss.shape[1] == tr.final_theta.shape[0]
        return tr.loss[0]                                    # the start is finite or the inputs were refused
    check_call(run, args)


def _fault_in_theta_or_X(draw, fault, model, theta, X):
    """Faults 0-3 of the strategies of a model and data: θ of the wrong length or with bad entries,
    X of the wrong width or with bad entries."""
    n, d = X.shape
    if fault == 0:
        theta = draw(arrays((model.p + 1,), special=0.0))
    elif fault == 1:
        theta = draw(arrays((model.p,), special=1.0))
    elif fault == 2:
        X = draw(arrays((n, d + 2), special=0.0))
    elif fault == 3:
        X = draw(arrays((n, d), special=1.0))
    return theta, X


@st.composite
def autodiff_calls(draw):
    n = draw(st.integers(1, 6))
    d = draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3]))
    model = ng.mlp([d, 2, k], seed=draw(st.integers(0, 9))) if k > 1 else ng.two_layer_net(d, 2, seed=0)
    theta = draw(arrays((model.p,), special=0.0, dtype=torch.float64))
    X = draw(arrays((n, d), special=0.0))
    loss = draw(st.sampled_from(["mse", "cross_entropy"] if k > 1 else ["mse"]))
    if loss == "cross_entropy":
        y = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    else:
        y = draw(arrays((n, k) if k > 1 else draw(st.sampled_from([(n,), (n, 1)])), special=0.0))
    chunk = draw(st.sampled_from([None, 1, 4]))
    fault = draw(FAULT)
    theta, X = _fault_in_theta_or_X(draw, fault, model, theta, X)
    if fault == 4:
        y = draw(arrays((n + 2,), special=0.0))
    elif fault == 5 and loss == "cross_entropy":
        y = y.clone()
        y[0] = draw(st.sampled_from([-1, -100, k]))
    elif fault == 6:
        loss = "l1"
    elif fault == 7:
        chunk = 0
    elif fault == 8 and loss == "mse":
        y = draw(arrays(tuple(y.shape), special=1.0))
    which = draw(st.sampled_from(["residuals", "loss_value", "per_sample_losses", "per_sample_gradients",
                                  "jacobian", "ggn_factor"]))
    return which, model, theta, X, y, loss, chunk


@SETTINGS
@given(autodiff_calls())
def test_autodiff_functions_on_generated_inputs(call):
    which, model, theta, X, y, loss, chunk = call
    args = ("model", "theta", "X", "y", "loss", "chunk_size")
    fn = getattr(ng, which)
    if which == "residuals":
        check_call(lambda: fn(model, theta, X, y), args)
    elif which == "jacobian":
        check_call(lambda: fn(model, theta, X, chunk_size=chunk), args)
    elif which in ("per_sample_gradients", "ggn_factor"):
        check_call(lambda: fn(model, theta, X, y, loss=loss, chunk_size=chunk), args)
    else:
        check_call(lambda: fn(model, theta, X, y, loss=loss), args)


@SETTINGS
@given(st.integers(-2, 8), st.integers(-2, 10), st.booleans(), st.integers(-1, 4),
       st.sampled_from([(4, 3), (4, 3), (5, 2), (1, 3), (0, 3), (4,), (4, 0)]), st.floats(0, 1))
def test_noise_functions_on_generated_inputs(n, batch, replacement, num, grads_shape, special):
    args = ("n", "batch_size", "num_batches", "grads", "replacement")
    c = check_call(lambda: ng.batch_noise_factor(n, batch, replacement=replacement), args)
    if c is not None:
        assert 0 <= c <= 1
    idx = check_call(lambda: ng.sample_batches(n, batch, num, replacement=replacement, seed=0), args)
    if idx is not None:
        assert idx.shape == (num, batch) and bool(((idx >= 0) & (idx < n)).all())
    g = torch.randn(*grads_shape, dtype=torch.float64)
    if g.numel() and special < 0.2:
        g.reshape(-1)[0] = math.nan
    S = check_call(lambda: ng.noise_covariance(g, batch_size=None if batch < 0 else batch,
                                               replacement=replacement), args)
    if S is not None:
        assert S.shape == (g.shape[1], g.shape[1])


# ------------------------------------------------------------------ every other public function

# Values that are wrong for most arguments: each argument is drawn valid or, now and then, one
# of these.
WEIRD = st.sampled_from([0, -1, 2.5, math.nan, math.inf, -math.inf, 1e300, "x", None, [], True,
                         [[1.0, 2.0], [3.0]], np.array([math.nan]), torch.ones(2, 2, 2)])


def _arg(valid, weird_share: float = 0.15):
    @st.composite
    def draw_arg(draw):
        return draw(WEIRD) if draw(st.floats(0, 1)) < weird_share else draw(valid)
    return draw_arg()


POS = st.floats(0.01, 3.0)
INT = st.integers(1, 4)
SEED = st.integers(0, 99)


@st.composite
def mats(draw, rows, cols, *, symmetric=False, nonneg=False, orthonormal=False):
    r, c = draw(rows) if not isinstance(rows, int) else rows, draw(cols) if not isinstance(cols, int) else cols
    M = draw(arrays((r, c), special=0.05, dtype=torch.float64))
    if symmetric and r == c:
        M = M @ M.T
    if nonneg:
        M = M.abs()
    if orthonormal and torch.isfinite(M).all() and r >= c:
        M = torch.linalg.qr(M)[0]
    return M


def vecs(size, *, positive=False):
    @st.composite
    def draw_vec(draw):
        v = draw(arrays((draw(size) if not isinstance(size, int) else size,), special=0.05, dtype=torch.float64))
        return v.abs() if positive else v
    return draw_vec()


# function -> {argument: strategy of (mostly valid) values}; positional in this order
CALLS = {
    "gaussian_inputs": lambda: {"n": INT, "spectrum": vecs(3, positive=True), "seed": SEED},
    "power_law_spectrum": lambda: {"d": INT, "alpha": st.floats(0, 2), "rank": st.sampled_from([None, 1, 2])},
    "effective_dimension": lambda: {"spectrum": vecs(INT, positive=True)},
    "teacher_labels": lambda: {"X": mats(INT, 3), "theta_star": vecs(3), "noise_std": st.floats(0, 1),
                               "seed": SEED},
    "linear_model": lambda: {"d": INT, "init_scale": st.floats(0, 2), "seed": SEED},
    "two_layer_net": lambda: {"d": INT, "width": INT, "activation": st.sampled_from(sorted(ng.ACTIVATIONS)),
                              "train_outer": st.booleans(), "seed": SEED},
    "mlp": lambda: {"sizes": st.lists(INT, min_size=2, max_size=3), "activation": st.just("tanh"), "seed": SEED},
    "deep_linear_model": lambda: {"d": INT, "depth": INT, "width": st.sampled_from([None, 2]), "seed": SEED},
    "diagonal_linear_model": lambda: {"d": INT, "init_scale": POS, "seed": SEED},
    "gd_stable": lambda: {"sharpness": POS, "eta": POS},
    "frobenius_threshold": lambda: {"eta": POS, "batch_size": INT, "mu": POS},
    "aligned_second_moment_map": lambda: {"lams": vecs(3, positive=True), "eta": POS, "batch_size": INT, "mu": POS},
    "perron": lambda: {"M": mats(3, 3, nonneg=True)},
    "perron_vector_formula": lambda: {"lams": vecs(3, positive=True), "eta": POS, "batch_size": INT, "rho": POS,
                                      "mu": st.sampled_from([None, 1.0])},
    "second_moment_spectral_radius": lambda: {"X": mats(st.integers(2, 4), 2), "eta": POS,
                                              "batch_size": st.sampled_from([None, 1, 2]),
                                              "replacement": st.booleans()},
    "nonuniformity": lambda: {"X": mats(st.integers(2, 4), 2)},
    "least_squares_second_moment_map": lambda: {"X": mats(st.integers(2, 4), 2), "eta": POS,
                                                "batch_size": st.sampled_from([None, 1, 2]),
                                                "replacement": st.booleans()},
    "top_eigenpairs": lambda: {"op": mats(4, 4, symmetric=True), "k": st.integers(1, 4), "tol": st.just(1e-10),
                               "seed": SEED},
    "hutchinson": lambda: {"op": mats(4, 4, symmetric=True), "num_samples": INT,
                           "quantity": st.sampled_from(["trace", "frobenius2"]), "seed": SEED},
    "gauss_newton_matrix": lambda: {"factor": mats(INT, 3), "n": st.sampled_from([None, 2])},
    "gauss_newton_operator": lambda: {"factor": mats(INT, 3), "n": st.sampled_from([None, 2])},
    "noise_covariance_operator": lambda: {"grads": mats(st.integers(2, 4), 3),
                                          "batch_size": st.sampled_from([None, 1, 2]), "replacement": st.booleans()},
    "minibatch_gradients": lambda: {"grads": mats(st.integers(2, 4), 3), "batch_size": st.sampled_from([1, 2]),
                                    "num_batches": INT, "replacement": st.booleans(), "seed": SEED},
    "average_alignment": lambda: {"J": mats(4, 3), "e": vecs(4)},
    "isotropic_alignment": lambda: {"J": mats(4, 3), "e": vecs(4)},
    "directional_alignment": lambda: {"J": mats(4, 3), "e": vecs(4), "v": vecs(3)},
    "subspace_alignment": lambda: {"J": mats(4, 3), "e": vecs(4), "V": mats(3, st.integers(1, 2), orthonormal=True)},
    "sharpness_summary": lambda: {"eigenvalues": vecs(INT)},
}
KEYWORD_ONLY = {"seed", "init_scale", "activation", "train_outer", "depth", "width", "rank", "noise_std", "tol",
                "quantity", "n", "replacement", "mu"}


def _values_finite(out) -> None:
    if isinstance(out, dict):
        for v in out.values():
            _values_finite(v)
    elif isinstance(out, (tuple, list)):
        for v in out:
            _values_finite(v)
    elif isinstance(out, torch.Tensor) and out.is_floating_point():
        assert bool(torch.isfinite(out).all()), out
    elif isinstance(out, (np.ndarray, float, np.floating)) and np.asarray(out).dtype.kind == "f":
        assert np.all(np.isfinite(out)), out


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_public_function_on_generated_arguments(name):
    fn = getattr(ng, name)
    spec = CALLS[name]()

    @settings(max_examples=45, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.fixed_dictionaries({arg: _arg(strategy) for arg, strategy in spec.items()}))
    def run(kwargs):
        # positional where the signature has them positional, keywords otherwise
        import inspect
        params = inspect.signature(fn).parameters
        pos = [kwargs[a] for a in kwargs if params[a].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        kw = {a: v for a, v in kwargs.items() if params[a].kind is inspect.Parameter.KEYWORD_ONLY}
        out = check_call(lambda: fn(*pos, **kw), tuple(spec))
        if out is not None:
            _values_finite(out)
    run()


# ------------------------------------------------------------------ functions of a model and data

MODELS = [ng.two_layer_net(2, 3, seed=0), ng.linear_model(2, init_scale=1.0, seed=1), ng.mlp([2, 3, 2], seed=2)]


@st.composite
def model_data(draw):
    """A book model, a point θ (or a stack of them), data and targets: valid or with one fault."""
    model = draw(st.sampled_from(MODELS))
    k = 2 if model is MODELS[2] else 1
    n = draw(st.integers(2, 5))
    X = draw(arrays((n, 2), special=0.0))
    y = draw(arrays((n, k) if k > 1 else (n,), special=0.0))
    theta = draw(arrays((model.p,), special=0.0, dtype=torch.float64))
    fault = draw(FAULT)
    theta, X = _fault_in_theta_or_X(draw, fault, model, theta, X)
    if fault == 4:
        y = draw(arrays((n + 1,), special=0.0))
    elif fault == 5:
        model = draw(WEIRD)
    elif fault == 6:
        X, y = X[:1], y[:1]
    return model, theta, X, y


MODEL_CALLS = {
    "hessian_matrix": lambda m, th, X, y, i: ng.hessian_matrix(m, th, X, y),
    "hessian_operator": lambda m, th, X, y, i: ng.hessian_operator(m, th, X, y, chunk_size=i) @ np.ones(
        getattr(m, "p", 1)),
    "factored_jacobian": lambda m, th, X, y, i: ng.factored_jacobian(m, th, X).gram(),
    "hessian_spectra": lambda m, th, X, y, i: ng.hessian_spectra(m, th, X, y, chunk=i),
    "gauss_newton_spectra": lambda m, th, X, y, i: _nan_rows_whole(ng.gauss_newton_spectra(m, th, X, chunk=i)),
    "find_minimum": lambda m, th, X, y, i: ng.find_minimum(m, X, y, th, eta=0.05, steps=i, polish_steps=1),
    "measure_along_run": lambda m, th, X, y, i: np.array(ng.measure_along_run(
        m, X, y, th, eta=0.05, record_at=[0, i], measure=lambda t: float(t.sum()))[1]),
    "from_model": lambda m, th, X, y, i: ng.NoiseGeometry.from_model(m, th, X, y, chunk_size=i).mu(),
}
def _nan_rows_whole(ev):
    """gauss_newton_spectra's documented answer for a point whose Jacobian overflows: a row of nan."""
    bad = np.isnan(ev).any(1)
    assert np.isnan(ev[bad]).all()
    return ev[~bad]


MODEL_ARGS = ("model", "theta", "thetas", "theta0", "X", "y", "chunk", "chunk_size", "steps", "record_at",
              "loss")


@pytest.mark.parametrize("name", sorted(MODEL_CALLS))
def test_functions_of_a_model_on_generated_inputs(name):
    @settings(max_examples=45, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(model_data(), st.sampled_from([1, 2, 5, 0, -1]))
    def run(problem, i):
        model, theta, X, y = problem
        check_call(lambda: MODEL_CALLS[name](model, theta, X, y, i), MODEL_ARGS)
    run()


@SETTINGS
@given(st.integers(-1, 6), st.integers(-1, 5), st.floats(0, 1), st.sampled_from([1.0, 0.0, -1.0, math.nan]))
def test_noise_geometry_constructors_on_generated_inputs(n, p, special, loss):
    args = ("grads", "factor", "loss", "J", "e", "n")
    grads = torch.randn(max(n, 0), max(p, 0), dtype=torch.float64)
    if grads.numel() and special < 0.2:
        grads.reshape(-1)[0] = math.inf
    geo = check_call(lambda: ng.NoiseGeometry(grads, grads, loss), args)
    if geo is not None:
        check_call(lambda: geo.mu(), args)
    e = torch.randn(max(n, 0), dtype=torch.float64)
    geo = check_call(lambda: ng.NoiseGeometry.square_loss(grads, e[:max(n - (special > 0.8), 0)]), args)
    if geo is not None:
        check_call(lambda: geo.mu(), args)


# ------------------------------------------------------------------ estimates of μ and g from a subsample

# Wrong values of the options, one of which replaces the valid value when a case's fault is that option.
BAD_OPTIONS = {
    "normalization": ["Fisher", "", None, 1, "mse"],
    "level": [0.0, 1.0, -0.5, 1.5, 95, math.nan, math.inf, True, "0.95", None, [0.9]],
    "interval": ["t", "Normal", None, 0, "lognormal"],
    "seed": [-1, 2.5, None, "0", True, math.nan],
    "exact_loss": [0.0, -1.0, math.nan, math.inf, "1", True],
    "chunk_size": [0, -1, 2.5, "3"],
    "side": ["p", None, 0, "Samples"],
}


def _option_fault(draw, options, fault, first: int):
    """Faults ``first``, ``first`` + 1, ...: the options in turn, given a wrong value."""
    names = sorted(name for name in options if name in BAD_OPTIONS)
    if fault is not None and first <= fault < first + len(names):
        name = names[fault - first]
        options[name] = draw(st.sampled_from(BAD_OPTIONS[name]))
    return options


def _check_estimate(est, *, m, n, directions=None):
    """An Estimate: finite, a non-negative error, the estimate inside its interval, zero error at m = n."""
    fields = [np.asarray(x, dtype=float) for x in (est.value, est.stderr, est.ci_low, est.ci_high)]
    shape = () if directions is None else (directions,)
    for x in fields:
        assert x.shape == shape and np.all(np.isfinite(x)), est
    value, se, lo, hi = fields
    assert np.all(se >= 0) and np.all(lo <= value) and np.all(value <= hi), est
    assert est.m == m and est.n == n
    if m == n:
        assert np.all(se == 0), est                      # the finite-population correction: no error left
    for part, err in zip(est.parts.values(), est.parts_stderr.values()):
        assert np.all(np.isfinite(part)) and np.all(np.isfinite(err)) and np.all(np.asarray(err) >= 0), est


EST_MODELS = [ng.linear_model(2, init_scale=1.0, seed=1), ng.two_layer_net(2, 3, seed=0), ng.mlp([2, 3, 3], seed=2)]
EST_ARGS = ("model", "theta", "X", "y", "v", "m", "loss", "normalization", "level", "interval", "seed",
            "exact_loss", "chunk_size")


@st.composite
def estimator_problems(draw):
    """A model, data and the options of estimate_mu / estimate_g: valid, or with one fault."""
    model = draw(st.sampled_from(EST_MODELS))
    k = 3 if model is EST_MODELS[2] else 1
    n = draw(st.integers(4, 10))
    loss = draw(st.sampled_from(["mse", "cross_entropy"])) if k > 1 else "mse"
    theta = draw(st.sampled_from([model.theta0, draw(arrays((model.p,), special=0.0, dtype=torch.float64))]))
    X = draw(arrays((n, 2), special=0.0))
    if loss == "cross_entropy":
        y = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    else:
        y = draw(arrays((n, k) if k > 1 else draw(st.sampled_from([(n,), (n, 1)])), special=0.0))
    v = draw(arrays(draw(st.sampled_from([(model.p,), (model.p, 2)])), special=0.0, dtype=torch.float64))
    options = {
        "m": draw(st.integers(4, n)),
        "loss": loss,
        "normalization": draw(st.sampled_from(["loss", "fisher"])),
        "level": draw(st.one_of(st.just(0.95), st.floats(0.01, 0.999))),
        "interval": draw(st.sampled_from(["normal", "log"])),
        "seed": draw(st.one_of(st.integers(0, 2 ** 31), st.just(torch.Generator().manual_seed(3)))),
        "exact_loss": draw(st.one_of(st.none(), st.floats(0.01, 10.0))),
        "chunk_size": draw(st.sampled_from([None, 1, 3])),
    }
    fault = draw(st.one_of(st.none(), st.integers(0, 18)))
    if fault == 0:
        theta = draw(arrays((model.p + 1,), special=0.0))
    elif fault == 1:
        theta = draw(arrays((model.p,), special=1.0, specials=SPECIAL))
    elif fault == 2:
        X = draw(arrays((n, 3), special=0.0))
    elif fault == 3:
        X = draw(arrays((n, 2), special=1.0, specials=SPECIAL))
    elif fault == 4:
        y = y[:-1]                                                # y of n − 1 rows
    elif fault == 5:
        v = draw(st.sampled_from([torch.ones(model.p + 1, dtype=torch.float64), torch.ones(model.p, 1, 1),
                                  torch.ones(0), torch.ones(model.p, 0), torch.zeros(model.p),
                                  torch.full((model.p,), math.nan), torch.full((model.p, 2), math.inf),
                                  "v", None]))
    elif fault == 6:
        r = draw(st.integers(1, 3))                               # n < 4 (n < 3 for g)
        X, y = X[:r], y[:r]
        options["m"] = draw(st.integers(0, r + 1))
    elif fault == 7 and loss == "mse":                            # zero loss: y = f(X)
        y = model.forward(theta, X.double()).detach().reshape(y.shape)
    elif fault == 8 and loss == "cross_entropy":
        y = y.clone()
        y[0] = draw(st.sampled_from([-1, -100, k]))
    elif fault == 9:
        options["loss"] = draw(st.sampled_from(["hinge", None, "MSE"]))
    elif fault == 10:
        model = draw(st.sampled_from([torch.nn.Linear(2, 1), None, "mlp"]))
    elif fault == 11:
        X = X[:, :1].expand(n, 2).clone()                         # the two inputs equal: G singular
    elif fault == 12:                                             # m from 0 to n + 2, or not an integer
        options["m"] = draw(st.sampled_from([0, 1, 2, 3, n + 1, n + 2, 4.0, "4", None, True]))
    _option_fault(draw, options, fault, 13)                       # faults 13-18: the options
    return model, theta, X, y, v, options


@SETTINGS
@given(estimator_problems(), st.sampled_from(["estimate_mu", "estimate_g"]))
def test_estimators_on_generated_problems(problem, which):
    model, theta, X, y, v, options = problem
    if which == "estimate_mu":
        est = check_call(lambda: ng.estimate_mu(model, theta, X, y, **options), EST_ARGS)
    else:
        est = check_call(lambda: ng.estimate_g(model, theta, X, y, v, **options), EST_ARGS)
    if est is None:
        return
    n, m = X.shape[0], options["m"]
    _check_estimate(est, m=m, n=n, directions=None if which == "estimate_mu" or v.ndim == 1 else v.shape[1])
    idx = est.indices
    assert idx.shape == (m,) and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n


SAMPLE_ARGS = ("grads", "factor", "n", "v", "losses", "exact_loss", "normalization", "level", "interval", "side")


@st.composite
def sample_problems(draw):
    """Gradients, factor rows and losses of a subsample of m rows: valid, or with one fault."""
    m = draw(st.integers(4, 8))
    p = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 2]))
    grads = draw(arrays((m, p), special=0.0))
    factor = draw(arrays((m * k, p), special=0.0))
    n = draw(st.integers(m, m + 6))
    losses, exact_loss = draw(arrays((m,), special=0.0)).abs(), None
    if draw(st.booleans()):                                       # L of all n given instead of the losses
        losses, exact_loss = None, draw(st.floats(0.01, 10.0))
    v = draw(arrays(draw(st.sampled_from([(p,), (p, 3)])), special=0.0, dtype=torch.float64))
    options = {"normalization": draw(st.sampled_from(["loss", "fisher"])), "level": draw(st.floats(0.01, 0.999)),
               "interval": draw(st.sampled_from(["normal", "log"])),
               "side": draw(st.sampled_from(["auto", "samples", "parameters"]))}
    fault = draw(st.one_of(st.none(), st.integers(0, 16)))
    if fault == 0:
        grads = draw(arrays((m, p), special=1.0, specials=SPECIAL))   # tiny or non-finite entries
    elif fault == 1:
        factor = draw(arrays((m * k, p + draw(st.sampled_from([-1, 1]))), special=0.0))   # other p
    elif fault == 2:
        factor = draw(arrays((draw(st.sampled_from([0, m * k + 1, m * k - 1, 3 * m + 1])), p), special=0.0))
    elif fault == 3:
        grads = draw(st.sampled_from([grads[0], grads[None], grads[:, :0], grads[:3], grads[:2], "grads"]))
    elif fault == 4:
        losses, exact_loss = draw(st.sampled_from([
            (torch.ones(m - 1), None), (-torch.ones(m), None), (torch.zeros(m), None),
            (torch.full((m,), math.nan), None), (torch.ones(m, 1), None), (torch.ones(m), 1.0), (None, None),
            (torch.full((m,), 1e308, dtype=torch.float64), None)]))
    elif fault == 5:
        v = draw(st.sampled_from([torch.ones(p + 1), torch.ones(p, 1, 1), torch.zeros(p), torch.ones(p, 0),
                                  torch.full((p,), math.nan), "v", None]))
    elif fault == 6:
        factor = torch.zeros(m * k, p)                            # G estimated as 0
    elif fault == 7:
        grads, factor = 1e-120 * grads.double(), 1e-120 * factor.double()     # their products underflow
    elif fault == 8:
        grads = grads[:1].expand(m, p).clone()                    # every gradient the same: Σ₁ estimated as 0
    elif fault == 9:
        factor = factor.to(torch.int64)                           # integer entries (converted to float64)
    elif fault == 10:
        n = draw(st.sampled_from([m - 1, 0, -1, float(m), None, "9", True]))   # n < m, or not an integer
    elif fault == 11:
        grads, factor = grads.tolist(), factor.numpy()            # lists and arrays are taken too
    exact_loss = draw(st.sampled_from(BAD_OPTIONS["exact_loss"])) if fault == 12 else exact_loss
    _option_fault(draw, options, fault, 13)                       # faults 13-16: the options
    return grads, factor, n, v, losses, exact_loss, options


@SETTINGS
@given(sample_problems(), st.sampled_from(["mu", "g"]))
def test_estimates_from_a_sample_on_generated_inputs(problem, which):
    grads, factor, n, v, losses, exact_loss, options = problem
    if which == "mu":
        est = check_call(lambda: ng.estimate_mu_from_sample(grads, factor, n, losses=losses, exact_loss=exact_loss,
                                                            **options), SAMPLE_ARGS)
    else:
        options = {key: val for key, val in options.items() if key != "side"}
        est = check_call(lambda: ng.estimate_g_from_sample(grads, factor, v, n, losses=losses, exact_loss=exact_loss,
                                                           **options), SAMPLE_ARGS)
    if est is not None:
        _check_estimate(est, m=len(grads), n=n, directions=None if which == "mu" or v.ndim == 1 else v.shape[1])


# ------------------------------------------------------------------ the routes of the per-sample passes

# (model, the shape of one input, outputs): convolutional nets of a few image shapes, which the
# layerwise route takes by default; networks of linear layers (layerwise on request); and a
# model outside its rule (linear_model uses its parameter directly: NotLayerwiseError on request)
ROUTE_MODELS = [
    (ng.small_cnn(channels=2, n_classes=3, image_shape=(1, 4, 4), seed=0), (1, 4, 4), 3),
    (ng.small_cnn(channels=1, n_classes=1, image_shape=(2, 3, 5), seed=1), (2, 3, 5), 1),
    (ng.small_cnn(channels=2, n_classes=2, image_shape=(3, 2, 2), seed=2), (3, 2, 2), 2),
    (ng.mlp([4, 3, 2], seed=3), (4,), 2),
    (ng.two_layer_net(4, 3, seed=4), (4,), 1),
    (ng.linear_model(4, init_scale=1.0, seed=5), (4,), 1),
]
ROUTE_ARGS = ("model", "theta", "X", "y", "loss", "chunk_size", "route")


@st.composite
def route_calls(draw):
    model, shape, k = draw(st.sampled_from(ROUTE_MODELS))
    n = draw(st.integers(1, 5))
    d = math.prod(shape)
    X = draw(arrays(draw(st.sampled_from([(n, d), (n, *shape)])), special=0.0))
    theta = draw(st.sampled_from([model.theta0, 0.5 * draw(arrays((model.p,), special=0.0, dtype=torch.float64))]))
    loss = draw(st.sampled_from(["mse", "cross_entropy"] if k > 1 else ["mse"]))
    if loss == "cross_entropy":
        y = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    else:
        y = draw(arrays((n, k) if k > 1 else draw(st.sampled_from([(n,), (n, 1)])), special=0.0))
    route = draw(st.sampled_from(["auto", "layerwise", "vmap"]))
    chunk = draw(st.sampled_from([None, 1, 2]))
    fault = draw(FAULT)
    if fault == 0:
        route = draw(st.sampled_from(["unfold", "Layerwise", "", None, 3, ("auto",)]))
    elif fault == 1:
        X = draw(arrays((n, d + 1), special=0.0))                  # one number too many per sample
    elif fault == 2 and len(shape) == 3:
        c, h, w = shape
        X = draw(arrays(draw(st.sampled_from([(n, c, h + 1, w), (n, c + 1, h, w), (d,)])), special=0.0))
    elif fault == 3:
        X = draw(arrays(tuple(X.shape), special=1.0))
    elif fault == 4:
        theta = draw(arrays((model.p + draw(st.sampled_from([-1, 1])),), special=0.0))
    elif fault == 5:
        theta = draw(arrays((model.p,), special=1.0, dtype=torch.float64))
    elif fault == 6:
        y = y[:-1]
    elif fault == 7 and loss == "cross_entropy":
        y = y.clone()
        y[0] = draw(st.sampled_from([-1, k]))
    elif fault == 8:
        chunk = draw(st.sampled_from([0, -2, 1.5]))
    elif fault == 9:
        loss = "cross_entropy" if k == 1 else "hinge"
    elif fault == 10:
        X = 1e150 * X.double()
    which = draw(st.sampled_from(["per_sample_gradients", "jacobian", "ggn_factor"]))
    return which, model, k, theta, X, y, loss, chunk, route


def _route_call(which, model, theta, X, y, loss, chunk, route):
    if which == "jacobian":
        return ng.jacobian(model, theta, X, chunk_size=chunk, route=route)
    return getattr(ng, which)(model, theta, X, y, loss=loss, chunk_size=chunk, route=route)


@SETTINGS
@given(route_calls())
def test_routes_of_the_per_sample_passes_on_generated_inputs(call):
    which, model, k, theta, X, y, loss, chunk, route = call
    out = check_call(lambda: _route_call(which, model, theta, X, y, loss, chunk, route), ROUTE_ARGS)
    if out is None:
        return
    n, p = X.shape[0], model.p
    expected = {"per_sample_gradients": (n, p), "jacobian": (n, k, p) if k > 1 else (n, p),
                "ggn_factor": (n * k, p)}[which]
    assert tuple(out.shape) == expected
    if route != "vmap":
        # the two routes are the same numbers to rounding
        ref = _route_call(which, model, theta, X, y, loss, chunk, "vmap")
        err = float(torch.linalg.vector_norm(out - ref))
        assert err <= 1e-10 * max(float(torch.linalg.vector_norm(ref)), 1e-300), (err, route)
        event(f"route {route} = vmap")


# ------------------------------------------------------------------ small_cnn and the readers of image data sets

# Wrong values of small_cnn's and the readers' arguments, one of which replaces the valid value
# when a case's fault is that argument.
BAD_ARGUMENTS = {
    "channels": [0, -1, 2.5, True, None, "2"],
    "n_classes": [0, -3, 1.0, False, "10"],
    "image_shape": [(1, 1, 8), (0, 4, 4), (1, 8, 1), (1, 8), (1, 2, 2, 2), (1, 2.5, 3), (True, 4, 4), (1, "4", 4),
                    (-1, 4, 4), "abc", 784, None, {1: 2, 3: 4, 5: 6}],
    "seed": [-1, 2.5, None, "0", True],
    "root": [3, None, b"/tmp", ["/tmp"], 2.5],
    "kind": ["MNIST", "kmnist", "", None, 0],
    "train": [1, 0, "yes", None, np.array([True])],
    "standardize": [1, "no", None, 2.0],
    "limit": [0, -1, 2.5, "3", True],
}


def _faulty(draw, valid: dict) -> dict:
    """The valid arguments, or (about half the time) with one of them wrong."""
    name = draw(st.one_of(st.none(), st.sampled_from(sorted(valid))))
    if name is not None:
        valid = {**valid, name: draw(st.sampled_from(BAD_ARGUMENTS[name]))}
    return valid


@st.composite
def small_cnn_arguments(draw):
    shape = draw(st.one_of(st.tuples(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9)),
                           st.lists(st.integers(1, 3), min_size=1, max_size=1).map(lambda c: [c[0], 3, 4]),
                           st.just((np.int64(1), np.int64(3), np.int64(3)))))
    return _faulty(draw, {"channels": draw(INT), "n_classes": draw(st.integers(1, 4)), "image_shape": shape,
                          "seed": draw(SEED)})


@SETTINGS
@given(small_cnn_arguments(), st.integers(1, 3))
def test_small_cnn_on_generated_arguments(kwargs, n):
    model = check_call(lambda: ng.small_cnn(**kwargs), tuple(kwargs))
    if model is None:
        return
    # the network it builds reads flat images of that shape: outputs of shape (n, n_classes), or (n,)
    d = math.prod(int(s) for s in kwargs["image_shape"])
    out = model(model.theta0, torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    k = kwargs["n_classes"]
    assert tuple(out.shape) == ((n, k) if k > 1 else (n,)) and bool(torch.isfinite(out).all())


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + \
        array.astype(np.uint8).tobytes()


def _reader_folders(root):
    """Folders for the readers: empty, with four small valid MNIST files and CIFAR-10 batches, and
    with damaged ones; also a plain file, and a path that does not exist."""
    import pickle
    rng = np.random.default_rng(0)
    folders = {name: root / name for name in ("empty", "valid", "damaged")}
    for folder in folders.values():
        folder.mkdir()
    for prefix, count in (("train", 5), ("t10k", 3)):
        images, labels = rng.integers(0, 256, (count, 4, 4)), rng.integers(0, 10, count)
        (folders["valid"] / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images, 0x803))
        (folders["valid"] / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x801))
        (folders["damaged"] / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images, 0x803)[:-1])
        (folders["damaged"] / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x801))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [int(c) for c in
                                                                                      rng.integers(0, 10, 2)]}
        (folders["valid"] / name).write_bytes(pickle.dumps(batch, protocol=4))
        (folders["damaged"] / name).write_bytes(pickle.dumps(batch, protocol=4)[:-7])
    (root / "a_file").write_bytes(b"not a folder")
    return {**folders, "a_file": root / "a_file", "absent": root / "absent"}


def test_readers_on_generated_arguments(tmp_path):
    folders = _reader_folders(tmp_path)

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.sampled_from(["load_mnist", "load_cifar10"]), st.data())
    def run(which, data):
        # mostly the folder with valid files, so that the other arguments are exercised
        root = data.draw(st.sampled_from(["valid"] * 4 + ["damaged", "empty", "a_file", "absent"]))
        root = data.draw(st.sampled_from([folders[root], str(folders[root])]))
        valid = {"root": root, "train": data.draw(st.booleans()), "standardize": data.draw(st.booleans()),
                 "limit": data.draw(st.one_of(st.none(), st.integers(1, 12)))}
        if which == "load_mnist":
            valid["kind"] = data.draw(st.sampled_from(["mnist", "fashion"]))
        kwargs = _faulty(data.draw, valid)
        root = kwargs.pop("root")
        call = (lambda: getattr(ng, which)(root, **kwargs))
        try:
            out = check_call(call, ("root",) + tuple(kwargs))
        except FileNotFoundError as exc:
            # documented: a folder or file that is not there, named with the paths tried
            assert _raised_by_noisegeom(exc) and ("root must be an existing folder" in str(exc) or
                                                   "not found; looked for" in str(exc)), exc
            event("refused: FileNotFoundError")
            return
        except AssertionError:
            # documented: a damaged file is refused by a ValueError that names the file, not an argument
            if "damaged" not in str(root):
                raise
            with pytest.raises(ValueError, match=re.escape(str(folders["damaged"]))):
                call()
            event("refused: damaged file named")
            return
        if out is None:
            return
        size = (5 if kwargs["train"] else 3) if which == "load_mnist" else (10 if kwargs["train"] else 2)
        shape = (1, 4, 4) if which == "load_mnist" else (3, 32, 32)
        m = size if kwargs["limit"] is None else min(kwargs["limit"], size)
        assert tuple(out["X"].shape) == (m, math.prod(shape)) and tuple(out["image_shape"]) == shape
        assert out["X"].dtype == torch.float64 and bool(torch.isfinite(out["X"]).all())
        assert tuple(out["y"].shape) == (m,) and bool(((out["y"] >= 0) & (out["y"] < 10)).all())
    run()
