"""The device path: geometry, operators, factored J and runs stay on the device of the data.

CI has no GPU, so the device path is tested on the ``meta`` device: tensors with a shape and
no data, which the package treats as it treats CUDA (anything not the CPU takes the torch-only
paths, and host transfers are explicit). While a public function runs on meta inputs,
:class:`_DeviceLog` (a ``TorchFunctionMode``) looks at every tensor that every torch call takes
or returns, factories included: one with data on the CPU is a stray (a CPU allocation, a
CPU generator's draw, a mix of devices) and fails the test. The only CPU tensors allowed are
host input on its way to the device (``torch.as_tensor``/``from_numpy`` output, ``.to`` input)
and 0-d scalars (which CUDA accepts too).

Why not ``FakeTensorMode`` with fake CUDA tensors: on a CPU-only torch it cannot index them
(``t[i]``, ``t[a:b]`` need the CUDA device guard: "PyTorch is not linked with support for cuda
devices"), and the package indexes everywhere. Meta tensors index; their one blind spot, a
matrix product that accepts a CPU operand, is what the log covers.

Meta tensors have no values, so the data-dependent steps are stubbed for them
(:func:`host_stub`): ``float(t)`` is 1.0, ``bool(t)`` True (False for the result of ``.any()``
where a test asks, the error checks of the metrics), ``.cpu()`` gives zeros of the right
shape, the finiteness checks pass. The numbers are meaningless; what is tested is where every
tensor lives, and that the functions run to the end. The real comparison, CUDA against CPU to
1e-10, is :func:`test_cuda_matches_cpu`, which runs where a GPU is.
"""

import importlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import noisegeom as ng
from noisegeom import _checks, factored, models, noise

simulate_module = importlib.import_module("noisegeom.simulate")        # ng.simulate is the function

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

META = torch.device("meta")
DT = torch.float64
# host input on its way to the device: outputs may be on the CPU; inputs of transfers may be
HOST_INPUT = {torch.as_tensor, torch.from_numpy, torch.tensor}
TRANSFERS = {torch.Tensor.to}
# calls that read a host tensor without computing with it: metadata, detach, the hand-over to numpy
NO_COMPUTE = {"__get__", "detach", "numpy", "is_floating_point", "dim", "size"}


class _DeviceLog(TorchFunctionMode):
    """Every tensor, argument or result of a torch call, that is not on the meta device."""

    def __init__(self):
        super().__init__()
        self.strays = []
        self.calls = 0

    def _look(self, func, where, obj):
        for t in tree_leaves(obj):
            if isinstance(t, torch.Tensor) and t.device != META and t.ndim > 0:
                self.strays.append((getattr(func, "__qualname__", repr(func)), where, str(t.device),
                                    tuple(t.shape)))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls += 1
        if func in TRANSFERS or getattr(func, "__name__", "") in NO_COMPUTE:
            return func(*args, **kwargs)
        if func not in TRANSFERS:
            self._look(func, "argument", (args, kwargs))
        out = func(*args, **kwargs)
        if func not in HOST_INPUT:
            self._look(func, "result", out)
        return out


_NP = {torch.float64: np.float64, torch.float32: np.float32, torch.bool: np.bool_, torch.int64: np.int64}


@pytest.fixture
def host_stub(monkeypatch):
    """Stub the data-dependent steps for meta tensors; ``host_stub(any_value)`` sets what
    ``bool(t.any())`` gives (False: no error check fires; True: a run keeps going)."""
    state = {"any": False}
    real_bool, real_float, real_int = torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__
    real_any, real_cpu, real_allclose = torch.Tensor.any, torch.Tensor.cpu, torch.allclose

    def any_(self, *a, **k):
        out = real_any(self, *a, **k)
        if out.device == META:
            out._from_any = True
        return out

    def bool_(self):
        if self.device != META:
            return real_bool(self)
        return state["any"] if getattr(self, "_from_any", False) else True

    def cpu(self, *a, **k):
        if self.device != META:
            return real_cpu(self, *a, **k)
        return torch.from_numpy(np.zeros(tuple(self.shape), dtype=_NP[self.dtype]))

    def allclose(a, b, *args, **kw):
        return True if a.device == META else real_allclose(a, b, *args, **kw)

    monkeypatch.setattr(_checks, "_all_finite", lambda t: True)
    monkeypatch.setattr(torch.Tensor, "__bool__", bool_)
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: 1.0 if self.device == META else real_float(self))
    monkeypatch.setattr(torch.Tensor, "__int__", lambda self: 0 if self.device == META else real_int(self))
    monkeypatch.setattr(torch.Tensor, "any", any_)
    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch, "allclose", allclose)
    # torch.equal has no meta kernel: the per-sample probe compares outputs by value
    monkeypatch.setattr(models, "probe_per_sample", lambda *a, **k: None)
    monkeypatch.setattr(factored, "probe_per_sample", lambda *a, **k: None)
    # the factored check compares ‖Jᵀ1 − autograd‖ = 1.0 with 1e-9·1.0 under the float stub
    monkeypatch.setattr(factored, "_CHECK_RTOL", 2.0)
    # a generator cannot live on meta; a CPU generator's draws are still asked for on the device
    cpu_gen = lambda seed, device: torch.Generator().manual_seed(int(seed))   # noqa: E731
    monkeypatch.setattr(simulate_module, "seeded_generator", cpu_gen)
    monkeypatch.setattr(noise, "seeded_generator", cpu_gen)

    def set_any(value):
        state["any"] = value
    return set_any


def on_meta(fn, host_ok=()):
    """Run fn() under the device log; return its result, failing on any stray tensor (but those
    of the functions named in ``host_ok``, computations the package does on the host on purpose)."""
    log = _DeviceLog()
    with log:
        out = fn()
    assert log.calls > 0
    strays = [s for s in log.strays if s[0] not in host_ok]
    assert not strays, f"tensors off the device: {strays[:5]}"
    return out


def meta_net(d=3, h=5, k=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).to(device=META, dtype=DT)


def meta_data(n, d=3, k=None):
    X = torch.empty(n, d, dtype=DT, device=META)
    y = torch.empty(n, dtype=DT, device=META) if k is None else torch.empty(n, k, dtype=DT, device=META)
    return X, y


def all_metrics(geo, p):
    V = np.linalg.qr(np.random.default_rng(0).standard_normal((p, 2)))[0]
    out = dict(mu=geo.mu(), mu_iso=geo.mu_isotropic(), zhu=geo.zhu_indicator(),
               mu_F=geo.mu(normalization="fisher"), trS=geo.trace_sigma1(), trG=geo.trace_G(),
               g1=geo.g(V[:, 0]), g2=geo.g(torch.as_tensor(V)), gV=geo.g_subspace(V),
               eig=geo.top_eigenpairs(2), mu_H=geo.mu(curvature=geo.G_operator(), frobenius2=1.0),
               g_H=geo.g(V, curvature=geo.G_operator()), sigma=geo.sigma_operator(4) @ V)
    assert geo.device == META and geo.gbar.device == META
    return out


# ----- NoiseGeometry --------------------------------------------------------------------------------
@pytest.mark.parametrize("n, p", [(6, 20), (30, 8)], ids=["samples", "parameters"])
def test_square_loss_metrics_stay_on_device(host_stub, n, p):
    J = torch.empty(n, p, dtype=DT, device=META)
    e = np.ones(n)                                          # host residuals move to J's device

    def run():
        geo = ng.NoiseGeometry.square_loss(J, e)
        assert geo.side == ("samples" if p > n else "parameters")
        res = all_metrics(geo, p)
        (geo.K if geo.side == "samples" else geo.M).device == META
        return res

    res = on_meta(run)
    assert isinstance(res["mu"], float) and res["g2"].shape == (2,)
    assert res["eig"].vectors.shape == (p, 2) and isinstance(res["eig"].values, np.ndarray)


@pytest.mark.parametrize("side", ["samples", "parameters"])
def test_general_factor_metrics_stay_on_device(host_stub, side):
    n, k = 5, 3
    p = 40 if side == "samples" else 7
    grads = torch.empty(n, p, dtype=DT, device=META)
    A = np.zeros((n * k, p))                               # the factor follows the gradients' device
    res = on_meta(lambda: (lambda geo: (geo.side, geo.AG.device, all_metrics(geo, p)))(
        ng.NoiseGeometry(grads, A, 0.7)))
    assert res[0] == side and res[1] == META


@pytest.mark.parametrize("route", ["factored", "jacobian", "parameters"])
def test_from_model_routes_stay_on_device(host_stub, route):
    model = ng.FlatModel(meta_net())
    X, y = meta_data(12)
    theta = model.theta0

    def run():
        geo = ng.NoiseGeometry.from_model(model, theta, X, y, route=route)
        assert geo.route == route
        if route == "factored":
            assert geo._factored.device == META
            geo.trace_sigma1()                  # diag K from the factors, before any sweep
        return all_metrics(geo, model.p)

    on_meta(run)


def test_from_model_cross_entropy_and_multi_output_stay_on_device(host_stub):
    model = ng.FlatModel(meta_net(k=3))
    X, _ = meta_data(10)
    labels = torch.zeros(10, dtype=torch.long, device=META)
    on_meta(lambda: all_metrics(ng.NoiseGeometry.from_model(model, model.theta0, X, labels,
                                                            loss="cross_entropy"), model.p))
    _, Y = meta_data(10, k=3)
    on_meta(lambda: all_metrics(ng.NoiseGeometry.from_model(model, model.theta0, X, Y), model.p))


def test_from_module_keeps_the_module_device(host_stub):
    net = meta_net()
    X = np.zeros((9, 3), dtype=np.float32)                  # host data goes to the module's device
    y = np.zeros(9)
    geo = on_meta(lambda: ng.NoiseGeometry.from_module(net, X, y, loss=nn.MSELoss()))
    assert geo.device == META and geo.route == "factored"
    on_meta(lambda: all_metrics(geo, geo.p))
    assert next(net.parameters()).dtype == DT and next(net.parameters()).device == META   # untouched


# ----- factored J ---------------------------------------------------------------------------------
def test_factored_jacobian_products_stay_on_device(host_stub, monkeypatch):
    model = ng.FlatModel(meta_net(d=4, h=6))
    X, _ = meta_data(300, d=4)                              # 3 blocks of _gram_rows
    monkeypatch.setattr(factored, "_BLOCK_NUMBERS", 64)      # several blocks in J·V

    def run():
        fj = ng.factored_jacobian(model, model.theta0, X)
        assert fj.device == META
        outs = [fj.gram(), fj.row_norms2(), *fj._gram_sweep(torch.empty(300, dtype=DT, device=META)),
                fj @ np.zeros(model.p), fj @ np.zeros((model.p, 3)), fj.rmatvec(np.zeros(300)),
                fj.rmatvec(), fj.dense()]
        assert all(o.device == META for o in outs)

    on_meta(run)


# ----- operators ----------------------------------------------------------------------------------
def test_operators_stay_on_device(host_stub):
    model = ng.FlatModel(meta_net())
    X, y = meta_data(8)
    A = torch.empty(8, model.p, dtype=DT, device=META)
    grads = torch.empty(8, model.p, dtype=DT, device=META)
    v, V = np.ones(model.p), np.ones((model.p, 3))

    def run():
        G = ng.gauss_newton_operator(A)
        H = ng.hessian_operator(model, model.theta0, X, y, chunk_size=2)
        S = ng.noise_covariance_operator(grads, batch_size=3)
        outs = [G @ v, G @ V, H @ v, H @ V, S @ v, S @ V]
        assert all(isinstance(o, np.ndarray) for o in outs)
        assert ng.gauss_newton_matrix(A).device == META
        assert ng.hessian_matrix(model, model.theta0, X, y).device == META
        assert ng.noise_covariance(grads).device == META
        assert ng.minibatch_gradients(grads, 3, 5).device == META
        ep = ng.top_eigenpairs(G, k=2)                       # p = 26 ≤ dense_below: products of I
        ep2 = ng.top_eigenpairs(ng.gauss_newton_matrix(A), k=1)
        ng.hessian_spectra(model, model.theta0, X, y)
        return ep, ep2

    ep, ep2 = on_meta(run)
    assert ep.vectors.shape == (model.p, 2) and ep2.values.shape == (1,)


# ----- runs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, noise_shape, replacement", [
    (None, None, False), (4, None, False), (4, None, True), (4, "sgd_covariance", False),
    (4, "isotropic", False), (4, "diagonal", False), (4, "gauss_newton", False), (4, "top_eigenvector", False)])
def test_simulate_stays_on_device(host_stub, batch_size, noise_shape, replacement):
    host_stub(True)                                         # active.any(): the runs go on
    model = ng.FlatModel(meta_net())
    X, y = meta_data(10)
    theta0 = np.zeros(model.p)                               # host θ₀, θ_ref and directions move to X's device
    traj = on_meta(lambda: ng.simulate(model, X, y, theta0, eta=0.1, steps=3, batch_size=batch_size,
                                       noise=noise_shape, replacement=replacement, n_seeds=2,
                                       record_theta=True, theta_ref=np.zeros(model.p),
                                       directions=np.eye(model.p)[:, :2], escape_loss=10.0))
    assert traj.loss.shape == (4, 2) and traj.theta.shape == (4, 2, model.p) and traj.energy.shape == (4, 2, 2)


def test_measure_along_run_and_find_minimum_stay_on_device(host_stub):
    host_stub(True)
    model = ng.FlatModel(meta_net())
    X, y = meta_data(6)
    seen = []
    on_meta(lambda: ng.measure_along_run(model, X, y, np.zeros(model.p), eta=0.1, record_at=[0, 2, 3],
                                         measure=lambda th: seen.append(th.device), batch_size=3))
    assert seen == [META] * 3
    # the polishing least squares runs on the host (gelsd exists on the CPU only); nothing else does
    th = on_meta(lambda: ng.find_minimum(model, X, y, np.zeros(model.p), eta=0.1, steps=2, polish_steps=2),
                 host_ok={"linalg_lstsq"})
    assert th.device == META


# ----- the log itself -----------------------------------------------------------------------------
def test_device_log_catches_host_allocations_and_mixes():
    a = torch.empty(3, 3, dtype=DT, device=META)
    for stray in (lambda: a @ torch.zeros(3, 3, dtype=DT),       # meta's matmul accepts a CPU operand
                  lambda: torch.zeros(3, dtype=DT),                 # an allocation without device=
                  lambda: torch.randn(2, generator=torch.Generator())):
        log = _DeviceLog()
        with log:
            stray()
        assert log.strays
    log = _DeviceLog()
    with log:
        torch.as_tensor(np.ones(3)).to(META) * a[0]
    assert not log.strays


# ----- a real GPU ---------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA: compares CUDA with CPU results; on CPU-only CI the device path is "
                           "covered by the meta-device tests above")
def test_cuda_matches_cpu():
    cuda = torch.device("cuda")

    def close(a, b, tol=1e-10):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return np.all(np.abs(a - b) <= tol * max(np.abs(b).max(), 1e-300))

    def nets(device):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 30), nn.Tanh(), nn.Linear(30, 1)).to(DT)
        return net.to(device)

    g = torch.Generator().manual_seed(1)
    X = torch.randn(50, 4, generator=g, dtype=DT)
    y = torch.randn(50, generator=g, dtype=DT)
    V = np.linalg.qr(np.random.default_rng(0).standard_normal((151, 3)))[0]
    for route in ("factored", "jacobian", "parameters"):
        res = {}
        for dev in ("cpu", cuda):
            model = ng.FlatModel(nets(dev))
            geo = ng.NoiseGeometry.from_model(model, model.theta0, X.to(dev), y.to(dev), route=route)
            assert geo.device.type == torch.device(dev).type and geo.route == route
            H = ng.hessian_operator(model, model.theta0, X.to(dev), y.to(dev))
            ep = geo.top_eigenpairs(2)
            res[str(dev)] = [geo.mu(), geo.mu_isotropic(), geo.zhu_indicator(), geo.g(V), geo.g_subspace(V),
                             ep.values, np.abs(ep.vectors), geo.mu(curvature=H), geo.sigma_operator(5) @ V]
        for a, b in zip(res["cuda"], res["cpu"]):
            assert close(a, b)
    mod = {str(d): ng.NoiseGeometry.from_module(nets(d), X, y) for d in ("cpu", cuda)}
    assert mod["cuda"].device.type == "cuda" and close(mod["cuda"].mu(), mod["cpu"].mu())
    model_c, model_g = ng.FlatModel(nets("cpu")), ng.FlatModel(nets(cuda))
    fc, fg = (ng.factored_jacobian(m, m.theta0, X) for m in (model_c, model_g))
    assert fg.device.type == "cuda" and close(fg.gram().cpu(), fc.gram())
    assert close((fg @ V).cpu(), fc @ V) and close(fg.rmatvec(y).cpu(), fc.rmatvec(y))
    gd = [ng.simulate(m, X, y, m.theta0, eta=0.05, steps=20, n_seeds=2) for m in (model_c, model_g)]
    assert close(gd[1].final_theta, gd[0].final_theta) and close(gd[1].loss, gd[0].loss)
    sgd = ng.simulate(model_g, X, y, model_g.theta0, eta=0.05, steps=20, batch_size=5, n_seeds=3, seed=4)
    again = ng.simulate(model_g, X, y, model_g.theta0, eta=0.05, steps=20, batch_size=5, n_seeds=3, seed=4)
    assert np.array_equal(sgd.final_theta, again.final_theta)          # seeded on the device
    assert np.isfinite(sgd.loss).all() and sgd.loss[-1].mean() < sgd.loss[0].mean()
