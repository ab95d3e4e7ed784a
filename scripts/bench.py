#!/usr/bin/env python
"""Benchmarks of the numerical core of noisegeom (`make bench`). Not a test.

Prints one ``name: value`` line per figure, then a short table of the targets.
Two problems, both with p ≈ 10⁴ parameters and n = 10³ samples:

* ``twolayer``: a two-layer tanh network f(x) = Σ_k a_k tanh(w_kᵀx), d = 100 Gaussian
  inputs, width 100 (outer layer fixed), p = 10⁴. Its Jacobian is cheap: about 4np flops.
* ``cnn``: ``noisegeom.small_cnn(channels=32, n_classes=1)`` on the 8×8 digits
  (``load_digits()['X_train'][:1000]``, standardised label as the scalar target), p = 9697
  (9C² + 15C + 1 for C channels and one output). Its Jacobian is expensive: each weight of
  the second convolution acts at 64 pixel positions, about 384np flops.

For each: (a) the alignment metrics through the n×n Gram route against the dense p×p route
(Σ₁ and G formed as p×p matrices, then the traces) — agreement and speed; (b) per-sample
gradients with vmap against a loop over samples (.backward() on the module, gradients zeroed
every sample); (c) the time of the metrics once J and e are known, against the time of J.
For the two-layer net also (d) peak memory of the Gram route and how its time grows with n
and p, and the render time of one widget plot.

Both routes use BLAS syrk for their symmetric Gram products (K = JJᵀ in the Gram route,
CᵀC and JᵀJ in the dense route), so their flop counts are n²p and 2np²; their ratio 2p/n
bounds the speed-up of (a). The script prints these operation counts next to the times.

Runs single-threaded by default (``--threads N`` to change; it sets torch's threads and, via
threadpoolctl, the BLAS threads of numpy/scipy): on this shared two-core machine two threads
wait on each other whenever another process holds a core, and the timings then scatter by
factors of several. Timings are the minimum over repeats (the least disturbed run); functions
compared with each other are called round-robin so that load from other processes hits them
alike. Everything is float64. Runtime: about 2 minutes (100 s single-threaded at load average 3–4).
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time

import numpy as np
import torch
from scipy.linalg.blas import dsymm, dsyrk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import noisegeom as ng  # noqa: E402

DT = torch.float64
N, D, WIDTH = 1000, 100, 100
CNN_CHANNELS = 32
K_DIRS = 10
RESULTS: dict[str, float] = {}

def emit(name: str, value, fmt: str = "{:.4g}") -> None:
    RESULTS[name] = value
    print(f"{name}: {fmt.format(value) if isinstance(value, (int, float)) else value}", flush=True)


class Timing(float):
    """A wall-clock time (the float value) that also carries the process CPU time of the same run."""

    cpu: float

    def __new__(cls, wall: float, cpu: float):
        obj = super().__new__(cls, wall)
        obj.cpu = cpu
        return obj


def best_time(fn, repeat: int = 3):
    """Minimum wall time and minimum process CPU time over ``repeat`` calls, and the last result.

    On a shared machine the wall time of a run depends on what else runs; the process CPU
    time (all threads of this process) depends much less on it, so ratios are reported both ways.
    """
    best, best_cpu, out = math.inf, math.inf, None
    for _ in range(repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return Timing(best, best_cpu), out


def best_times_interleaved(fns: dict, repeat: int):
    """best_time for several functions, called round-robin so that a burst of load on the
    shared machine hits all of them alike; returns {name: (Timing, last result)}."""
    wall = {k: math.inf for k in fns}
    cpu = {k: math.inf for k in fns}
    out = {}
    for _ in range(repeat):
        for k, fn in fns.items():
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            out[k] = fn()
            wall[k] = min(wall[k], time.perf_counter() - t0)
            cpu[k] = min(cpu[k], time.process_time() - c0)
    return {k: (Timing(wall[k], cpu[k]), out[k]) for k in fns}


def ratio(a: Timing, b: Timing) -> tuple[float, float]:
    return float(a) / float(b), a.cpu / b.cpu


# ------------------------------------------------------------------ memory

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ problems

def problem(n=N, d=D, width=WIDTH, seed=0):
    model = ng.two_layer_net(d, width, activation="tanh", seed=seed)
    X = ng.gaussian_inputs(n, ng.power_law_spectrum(d, 1.0), seed=seed)
    teacher = ng.two_layer_net(d, width, activation="tanh", seed=seed + 1)
    y = teacher(teacher.theta0, X) + 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return model, X, y, model.theta0


def cnn_problem(n=N, channels=CNN_CHANNELS, seed=0):
    """small_cnn with one output on n training digits; target: the standardised digit label, shape (n,)."""
    model = ng.small_cnn(channels=channels, n_classes=1, seed=seed)
    data = ng.load_digits(seed=seed)
    X = data["X_train"][:n].contiguous()
    lab = data["y_train"][:n].to(DT)
    y = (lab - lab.mean()) / lab.std()
    return model, X, y, model.theta0


def directions(p, k=K_DIRS, seed=0):
    V = torch.randn(p, k, generator=torch.Generator().manual_seed(seed), dtype=DT)
    Q, _ = torch.linalg.qr(V)
    return V, Q


def gram_metrics(J, e, V, Q):
    """Every metric of chapter 3 through n×n Grams (a fresh object: nothing cached)."""
    geo = ng.NoiseGeometry.square_loss(J, e)
    return {
        "mu": geo.mu(), "mu_iso": geo.mu_isotropic(), "zhu": geo.zhu_indicator(),
        "tr_sigma1": geo.trace_sigma1(), "tr_sigma1_G": geo.trace_sigma1_G(), "fro2_G": geo.frobenius2_G(),
        "g_v": geo.g(V), "g_V": geo.g_subspace(Q),
    }


def _syrk_pp(M: torch.Tensor, alpha: float) -> np.ndarray:
    """alpha·MᵀM (p×p) for a row-major n×p M: BLAS syrk on the zero-copy Fortran view Mᵀ (p×n),
    trans=0, so np² flops; the upper triangle is filled, the lower one left zero."""
    return dsyrk(alpha, np.asfortranarray(M.numpy().T), trans=0)


def _sym_dot(A: np.ndarray, B: np.ndarray) -> float:
    """Σ_ij A_ij B_ij for symmetric A, B stored as upper triangles (lower zero), same layout:
    twice the sum over the stored triangle minus the diagonal once; no p×p temporary."""
    return float(2 * np.dot(A.ravel(order="K"), B.ravel(order="K")) - np.dot(np.diagonal(A), np.diagonal(B)))


def dense_metrics(J, e, V, Q):
    """The same metrics from p×p matrices: Σ₁ = CᵀC/n (C the centred per-sample gradients), G = JᵀJ/n.

    Both p×p matrices come from BLAS syrk (one triangle, np² flops each); traces of products are
    taken without forming the product (Tr(Σ₁G) = Σ_ij (Σ₁)_ij G_ij) and quadratic forms with symm:
    the cheapest dense route, which still needs the two p×p matrices.
    """
    n, p = J.shape
    grads = e[:, None] * J
    C = grads - grads.mean(0)
    S1 = _syrk_pp(C, 1.0 / n)
    del grads, C
    G = _syrk_pp(J, 1.0 / n)
    two_L = float((e * e).mean())
    fro2 = _sym_dot(G, G)
    tr_SG = _sym_dot(S1, G)
    tr_S, tr_G = float(np.trace(S1)), float(np.trace(G))
    k = V.shape[1]
    W = np.asfortranarray(np.concatenate([V.numpy(), Q.numpy()], axis=1))   # one pass over each p×p matrix
    num = (W * dsymm(1.0, S1, W)).sum(0)
    den = (W * dsymm(1.0, G, W)).sum(0)
    out = {
        "mu": tr_SG / (two_L * fro2), "mu_iso": tr_S * tr_G / (p * two_L * fro2), "zhu": p * tr_SG / (tr_G * tr_S),
        "tr_sigma1": tr_S, "tr_sigma1_G": tr_SG, "fro2_G": fro2,
        "g_v": num[:k] / (two_L * den[:k]),
        "g_V": float(num[k:].sum() / (two_L * den[k:].sum())),
    }
    del S1, G
    return out


def dense_metrics_gemm(J, e, V, Q):
    """The dense route with general products (torch/MKL gemm, 2np² flops per p×p matrix): the
    previous version of this benchmark's reference, kept for comparison."""
    n, p = J.shape
    grads = e[:, None] * J
    C = grads - grads.mean(0)
    S1 = C.T @ C / n
    G = J.T @ J / n
    two_L = float((e * e).mean())
    fro2 = float(torch.dot(G.reshape(-1), G.reshape(-1)))
    tr_SG = float(torch.dot(S1.reshape(-1), G.reshape(-1)))
    del S1, G
    return {"mu": tr_SG / (two_L * fro2)}


def max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k in b:
        x, y = np.atleast_1d(np.asarray(a[k], dtype=float)), np.atleast_1d(np.asarray(b[k], dtype=float))
        worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))))
    return worst


def loop_per_sample_gradients(model, theta, X, y):
    """Reference loop: the module's own autograd, .grad zeroed before every sample."""
    import copy

    mod = copy.deepcopy(model.module)
    params = [q for q in mod.parameters() if q.requires_grad]
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, params)
    rows = []
    for i in range(X.shape[0]):
        for q in params:
            q.grad = None
        out = mod(X[i:i + 1]).reshape(())
        (0.5 * (out - y[i].reshape(())) ** 2).backward()
        rows.append(torch.cat([q.grad.reshape(-1) for q in params]))
    return torch.stack(rows)


def fit_exponent(x, t) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


# ------------------------------------------------------------------ one model: (a), (b), (c)

def model_section(tag: str, model, X, y, theta, *, jac_flops_per_sample_param: float, reps: dict,
                  extra_chunk: int | None = None) -> dict:
    """Targets (a), (b), (c) for one scalar-output model; returns the figures for the table."""
    n, p = X.shape[0], model.p
    print(f"# --- {tag}: n = {n}, p = {p}", flush=True)
    emit(f"{tag}_n", n, "{:d}")
    emit(f"{tag}_p", p, "{:d}")
    V, Q = directions(p)
    out = {"n": n, "p": p}

    # (b) per-sample gradients: vmap vs loop
    ng.per_sample_gradients(model, theta, X[:8], y[:8])              # warm up torch.func
    fns = {"vmap": lambda: ng.per_sample_gradients(model, theta, X, y),
           "loop": lambda: loop_per_sample_gradients(model, theta, X, y)}
    if extra_chunk is not None:
        fns["vmap_chunk"] = lambda: ng.per_sample_gradients(model, theta, X, y, chunk_size=extra_chunk)
    res = best_times_interleaved(fns, repeat=reps["b"])
    (t_vmap, G_vmap), (t_loop, G_loop) = res["vmap"], res["loop"]
    emit(f"{tag}_per_sample_gradients_vmap_s", t_vmap)
    emit(f"{tag}_per_sample_gradients_loop_s", t_loop)
    out["sp_b"] = ratio(t_loop, t_vmap)
    emit(f"{tag}_per_sample_gradients_speedup", out["sp_b"][0], "{:.1f}")
    emit(f"{tag}_per_sample_gradients_speedup_cpu", out["sp_b"][1], "{:.1f}")
    emit(f"{tag}_per_sample_gradients_max_rel_diff",
         float((G_vmap - G_loop).abs().max() / G_loop.abs().max()), "{:.1e}")
    if extra_chunk is not None:
        t_ch = res["vmap_chunk"][0]
        emit(f"{tag}_per_sample_gradients_vmap_chunk{extra_chunk}_s", t_ch)
        out["sp_b_chunk"] = ratio(t_loop, t_ch)
        emit(f"{tag}_per_sample_gradients_speedup_chunk{extra_chunk}", out["sp_b_chunk"][0], "{:.1f}")
    del G_loop, G_vmap, res
    gc.collect()

    # (c) J, residuals, and the metrics beyond them
    def jac():
        J = ng.jacobian(model, theta, X)
        return J.reshape(n, p)                                       # (n, 1, p) for a one-output model: a view
    jac()
    J = jac()
    e = ng.residuals(model, theta, X, y).reshape(n)
    res = best_times_interleaved({"J": jac,
                                  "metrics": lambda: gram_metrics(J, e, V, Q),
                                  "mu": lambda: ng.NoiseGeometry.square_loss(J, e).mu(),
                                  "K": lambda: J @ J.T}, repeat=reps["c"])
    t_J, t_mu, t_K = res["J"][0], res["mu"][0], res["K"][0]
    t_gram, m_gram = res["metrics"]
    emit(f"{tag}_jacobian_s", t_J)
    emit(f"{tag}_gram_K_torch_matmul_s", t_K)
    emit(f"{tag}_gram_metrics_all_s", t_gram)
    emit(f"{tag}_gram_mu_only_s", t_mu)
    out["r_c"] = ratio(t_gram, t_J)
    out["r_c_mu"] = ratio(t_mu, t_J)
    emit(f"{tag}_metrics_over_jacobian_ratio", out["r_c"][0], "{:.2f}")
    emit(f"{tag}_metrics_over_jacobian_ratio_cpu", out["r_c"][1], "{:.2f}")
    emit(f"{tag}_mu_over_jacobian_ratio", out["r_c_mu"][0], "{:.2f}")
    emit(f"{tag}_mu", m_gram["mu"], "{:.6f}")
    emit(f"{tag}_mu_isotropic", m_gram["mu_iso"], "{:.6f}")
    emit(f"{tag}_zhu_indicator", m_gram["zhu"], "{:.3f}")
    flops_J, flops_K = jac_flops_per_sample_param * n * p, float(n) * n * p
    emit(f"{tag}_jacobian_GFLOP_per_s", flops_J / float(t_J) / 1e9, "{:.1f}")
    emit(f"{tag}_gram_mu_GFLOP_per_s", flops_K / float(t_mu) / 1e9, "{:.1f}")
    print(f"# {tag} (c) operation counts: J ≈ {jac_flops_per_sample_param:.0f}·np = {flops_J:.2e} flops; "
          f"K = JJᵀ by syrk n²p = {flops_K:.2e} flops, so μ needs {flops_K / flops_J:.2f}× the flops of J "
          f"(flop bound on the ratio: {'met' if flops_K / flops_J <= 0.5 else 'not met'} unless J runs below "
          f"BLAS speed; measured rates: J {flops_J / float(t_J) / 1e9:.1f}, "
          f"Gram μ {flops_K / float(t_mu) / 1e9:.1f} GFLOP/s)", flush=True)
    out["flop_c"] = flops_K / flops_J

    # (a) Gram route vs dense p×p route
    rss0 = _status_kb("VmRSS")
    reset_peak_rss()
    res = best_times_interleaved({"gram": lambda: gram_metrics(J, e, V, Q),
                                  "dense": lambda: dense_metrics(J, e, V, Q)}, repeat=reps["a"])
    (t_gram_a, _), (t_dense, m_dense) = res["gram"], res["dense"]
    t_gram_a = Timing(min(float(t_gram_a), float(t_gram)), min(t_gram_a.cpu, t_gram.cpu))
    peak = _status_kb("VmHWM")
    if rss0 is not None and peak is not None:
        emit(f"{tag}_dense_route_peak_rss_delta_MB", (peak - rss0) / 1024, "{:.0f}")
    emit(f"{tag}_gram_metrics_best_s", t_gram_a)
    emit(f"{tag}_dense_metrics_s", t_dense)
    out["diff_a"] = max_rel_diff(m_gram, m_dense)
    emit(f"{tag}_gram_vs_dense_max_rel_diff", out["diff_a"], "{:.1e}")
    out["sp_a"] = ratio(t_dense, t_gram_a)
    emit(f"{tag}_gram_speedup_over_dense", out["sp_a"][0], "{:.1f}")
    emit(f"{tag}_gram_speedup_over_dense_cpu", out["sp_a"][1], "{:.1f}")
    out["flop_a"] = (2.0 * n * p * p) / (float(n) * n * p)
    emit(f"{tag}_flop_ratio_dense_over_gram", out["flop_a"], "{:.0f}")
    print(f"# {tag} (a) operation counts: dense route 2 syrk p×p = 2np² = {2.0 * n * p * p:.2e} flops, "
          f"Gram route syrk n×n = n²p = {float(n) * n * p:.2e} flops: ratio 2p/n = {out['flop_a']:.0f} "
          f"({'≥' if out['flop_a'] >= 50 else '<'} 50, so the 50× target is "
          f"{'within' if out['flop_a'] >= 50 else 'beyond'} the flop ratio at this n, p)", flush=True)
    out["J"], out["e"], out["V"], out["Q"], out["t_gram"] = J, e, V, Q, t_gram_a
    gc.collect()
    return out


# ------------------------------------------------------------------ main

def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads and BLAS threads (default 1: on a shared 2-core machine "
                             "two threads wait on each other and the timings scatter by factors of several)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)                  # numpy/scipy OpenBLAS (syrk) like torch
        blas_note = f"BLAS threads {args.threads}"
    except ImportError:
        blas_note = "BLAS threads not set (threadpoolctl missing)"
    t_start = time.perf_counter()
    torch.manual_seed(0)

    def load():
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    load0 = load()
    print(f"# noisegeom benchmark: torch {torch.__version__}, {torch.get_num_threads()} torch threads, {blas_note}, "
          f"{os.cpu_count()} CPUs, load average {load0:.1f} at start", flush=True)
    print("# times: minimum wall-clock seconds over repeats; ratios also from process CPU time", flush=True)
    table = []

    # ---- two-layer net: (a), (b), (c)
    model, X, y, theta = problem()
    tl = model_section("twolayer", model, X, y, theta, jac_flops_per_sample_param=4,
                       reps={"b": 7, "c": 10, "a": 3})
    J, e, V, Q = tl["J"], tl["e"], tl["V"], tl["Q"]
    n, p = J.shape
    # the previous dense reference (general gemm products), once, for comparison
    t_gemm, m_gemm = best_time(lambda: dense_metrics_gemm(J, e, V, Q), repeat=1)
    emit("twolayer_dense_gemm_mu_only_s", t_gemm)
    emit("twolayer_gram_speedup_over_dense_gemm", float(t_gemm) / float(tl["t_gram"]), "{:.1f}")
    gc.collect()

    # same comparison where p/n is larger (n = 200, p = 10⁴)
    n_small = 200
    Js, es = J[:n_small].contiguous(), e[:n_small].contiguous()
    res = best_times_interleaved({"gram": lambda: gram_metrics(Js, es, V, Q),
                                  "dense": lambda: dense_metrics(Js, es, V, Q)}, repeat=2)
    (t_gram_s, m_gs), (t_dense_s, m_ds) = res["gram"], res["dense"]
    sp_a200 = ratio(t_dense_s, t_gram_s)
    diff_a200 = max_rel_diff(m_gs, m_ds)
    emit("twolayer_gram_speedup_over_dense_n200", sp_a200[0], "{:.1f}")
    emit("twolayer_gram_speedup_over_dense_n200_cpu", sp_a200[1], "{:.1f}")
    emit("twolayer_gram_vs_dense_max_rel_diff_n200", diff_a200, "{:.1e}")
    emit("twolayer_flop_ratio_dense_over_gram_n200", 2 * p / n_small, "{:.0f}")
    del Js, es, res
    gc.collect()

    # (c) at n = 100: the metrics cost O(n²p) (the Gram K), J only O(np)
    n_c = 100
    J100, e100 = ng.jacobian(model, theta, X[:n_c]), e[:n_c].contiguous()
    res = best_times_interleaved({"J": lambda: ng.jacobian(model, theta, X[:n_c]),
                                  "mu": lambda: ng.NoiseGeometry.square_loss(J100, e100).mu()}, repeat=15)
    r_c100 = ratio(res["mu"][0], res["J"][0])
    emit("twolayer_mu_over_jacobian_ratio_n100", r_c100[0], "{:.2f}")

    # (d) peak memory of the Gram route
    gc.collect()
    rss0 = _status_kb("VmRSS")
    if reset_peak_rss() and rss0 is not None:
        ng.NoiseGeometry.from_model(model, theta, X, y).mu()
        peak = _status_kb("VmHWM")
        emit("gram_route_peak_rss_delta_MB", (peak - rss0) / 1024, "{:.0f}")
        print("# peak memory: VmHWM − VmRSS from /proc/self/status, the peak reset through "
              "/proc/self/clear_refs, around from_model(...).mu() (J, e and the n×n Gram; "
              "tracemalloc does not see torch's allocations)")
    emit("J_array_MB", J.numel() * 8 / 2 ** 20, "{:.0f}")
    emit("dense_p_by_p_matrix_MB", p * p * 8 / 2 ** 20, "{:.0f}")
    tl.pop("J"), tl.pop("e")
    del J, e, J100, e100
    gc.collect()

    # ---- CNN: (a), (b), (c)
    mc, Xc, yc, thc = cnn_problem()
    cn = model_section("cnn", mc, Xc, yc, thc, jac_flops_per_sample_param=384,
                       reps={"b": 4, "c": 6, "a": 3}, extra_chunk=64)
    print("# cnn (b): torch's vmap rule for the per-sample weight gradient of a convolution runs a grouped "
          "convolution backward, one group (one _slow_conv2d_backward call) per sample in float64 on CPU, "
          "so vmap removes the Python/autograd overhead of the loop but not the per-sample loop itself", flush=True)
    del cn["J"], cn["e"]
    gc.collect()

    # (d) scaling of the Gram metrics with n (p = 10⁴) and with p (n = 10³), two-layer net
    ns = [250, 500, 1000, 2000]
    Xbig = ng.gaussian_inputs(max(ns), ng.power_law_spectrum(D, 1.0), seed=5)
    ybig = torch.zeros(max(ns), dtype=DT) + 0.3
    Js_n = {m: ng.jacobian(model, theta, Xbig[:m]) for m in ns}
    es_n = {m: ng.residuals(model, theta, Xbig[:m], ybig[:m]) for m in ns}
    res = best_times_interleaved({m: (lambda m=m: ng.NoiseGeometry.square_loss(Js_n[m], es_n[m]).mu())
                                  for m in ns}, repeat=5)
    tn = [res[m][0] for m in ns]
    resJ = best_times_interleaved({m: (lambda m=m: ng.jacobian(model, theta, Xbig[:m])) for m in ns}, repeat=4)
    tJn = [resJ[m][0] for m in ns]
    del Js_n, resJ
    gc.collect()
    Js_p, es_p, ps = {}, {}, []
    for width in (25, 50, 100, 200):
        mw, Xw, yw, thw = problem(width=width)
        Js_p[mw.p] = ng.jacobian(mw, thw, Xw)
        es_p[mw.p] = ng.residuals(mw, thw, Xw, yw)
        ps.append(mw.p)
    res = best_times_interleaved({q: (lambda q=q: ng.NoiseGeometry.square_loss(Js_p[q], es_p[q]).mu())
                                  for q in ps}, repeat=5)
    tp = [res[q][0] for q in ps]
    del Js_p
    gc.collect()
    a_n, a_n_cpu = fit_exponent(ns, tn), fit_exponent(ns, [t.cpu for t in tn])
    a_p, a_p_cpu = fit_exponent(ps, tp), fit_exponent(ps, [t.cpu for t in tp])
    emit("mu_time_exponent_in_n", a_n, "{:.2f}")
    emit("mu_time_exponent_in_n_cpu", a_n_cpu, "{:.2f}")
    emit("mu_time_exponent_in_p", a_p, "{:.2f}")
    emit("mu_time_exponent_in_p_cpu", a_p_cpu, "{:.2f}")
    emit("jacobian_time_exponent_in_n", fit_exponent(ns, tJn), "{:.2f}")
    print("# mu through the Gram route, seconds: n -> " + ", ".join(f"{a}: {float(b):.3f}" for a, b in zip(ns, tn))
          + " (p = 10000) | p -> " + ", ".join(f"{a}: {float(b):.3f}" for a, b in zip(ps, tp)) + " (n = 1000)",
          flush=True)

    # widget render: one plot function (a band over seeds of a small SGD run)
    t_render = None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lin = ng.linear_model(20)
        Xl = ng.gaussian_inputs(40, ng.power_law_spectrum(20, 1.0), seed=1)
        yl = Xl @ torch.ones(20, dtype=DT)

        def plot_sgd(eta=0.2, batch_size=4):
            tr = ng.simulate(lin, Xl, yl, torch.zeros(20, dtype=DT), eta=eta, steps=100, batch_size=batch_size,
                             n_seeds=20, seed=0, record_every=5)
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ng.plotting.band(ax, tr.steps, tr.loss, label="SGD")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.legend()
            return fig

        _, _, render = ng.widgets.build_controls(plot_sgd, eta=(0.05, 0.5, 0.05), batch_size=[1, 4, 10])

        def draw():
            fig, _ = render()
            fig.canvas.draw()
            plt.close(fig)

        t_render, _ = best_time(draw, repeat=5)
        emit("widget_render_s", t_render)
    except Exception as exc:  # optional figure: never fail the benchmark on it
        print(f"# widget render skipped: {exc!r}")

    total = time.perf_counter() - t_start
    load1 = load()
    emit("load_average_end", load1, "{:.1f}")
    emit("bench_total_s", total, "{:.0f}")

    # table ----------------------------------------------------------------------------------------
    def row(name, wall, cpu, target, ok):
        table.append((name, wall, cpu, target, "-" if ok is None else ("yes" if ok else "NO")))

    for label, r in (("2-layer", tl), ("CNN", cn)):
        pp_ = r["p"]
        row(f"{label} (a) Gram = dense p×p, max rel. diff", f"{r['diff_a']:.1e}", "", "≤ 1e-8", r["diff_a"] <= 1e-8)
        row(f"{label} (a) Gram speed-up over dense (flop ratio 2p/n = {r['flop_a']:.0f})",
            f"{r['sp_a'][0]:.1f}×", f"{r['sp_a'][1]:.1f}×", "≥ 50×", min(r["sp_a"]) >= 50)
        if label == "2-layer":
            row(f"{label} (a) same at n=200 (flop ratio 2p/n = {2 * pp_ / n_small:.0f})", f"{sp_a200[0]:.1f}×",
                f"{sp_a200[1]:.1f}×", "≥ 50×", min(sp_a200) >= 50)
        row(f"{label} (b) vmap speed-up over the loop", f"{r['sp_b'][0]:.1f}×", f"{r['sp_b'][1]:.1f}×", "≥ 5×",
            min(r["sp_b"]) >= 5)
        if "sp_b_chunk" in r:
            row(f"{label} (b) same, vmap with chunk_size=64", f"{r['sp_b_chunk'][0]:.1f}×",
                f"{r['sp_b_chunk'][1]:.1f}×", "≥ 5×", min(r["sp_b_chunk"]) >= 5)
        row(f"{label} (c) all metrics / J (flops n²p / cost of J = {r['flop_c']:.2g})", f"{r['r_c'][0]:.2f}",
            f"{r['r_c'][1]:.2f}", "≤ 0.5", max(r["r_c"]) <= 0.5)
        row(f"{label} (c) μ alone / J", f"{r['r_c_mu'][0]:.2f}", f"{r['r_c_mu'][1]:.2f}", "≤ 0.5",
            max(r["r_c_mu"]) <= 0.5)
        if label == "2-layer":
            row(f"{label} (c) μ alone / J at n=100", f"{r_c100[0]:.2f}", f"{r_c100[1]:.2f}", "≤ 0.5",
                max(r_c100) <= 0.5)
    row("2-layer (d) Gram route peak RSS (MB)", f"{RESULTS.get('gram_route_peak_rss_delta_MB', float('nan')):.0f}",
        "", "report", None)
    row("2-layer (d) dense route peak RSS (MB)",
        f"{RESULTS.get('twolayer_dense_route_peak_rss_delta_MB', float('nan')):.0f}", "", "report", None)
    row("2-layer (d) μ time ∝ n^a (p = 10⁴)", f"a = {a_n:.2f}", f"a = {a_n_cpu:.2f}", "2 (n²p)", None)
    row("2-layer (d) μ time ∝ p^b (n = 10³)", f"b = {a_p:.2f}", f"b = {a_p_cpu:.2f}", "1 (n²p)", None)
    if t_render is not None:
        row("widget render, one plot (s)", f"{float(t_render):.3f}", f"{t_render.cpu:.3f}", "< 0.15", None)
    w0 = max(len(r[0]) for r in table)
    print()
    print(f"| {'figure'.ljust(w0)} | {'wall clock':>10} | {'CPU time':>10} | {'target':>8} | met |")
    print(f"|{'-' * (w0 + 2)}|{'-' * 12}|{'-' * 12}|{'-' * 10}|-----|")
    for name, wall, cpu, target, flag in table:
        print(f"| {name.ljust(w0)} | {wall:>10} | {cpu:>10} | {target:>8} | {flag:>3} |")
    print(f"\n(2-layer: p = {tl['p']}, n = {tl['n']}; CNN: p = {cn['p']}, n = {cn['n']}; times are minima over "
          f"repeats; 'met' needs both columns; {torch.get_num_threads()} thread(s); load average {load0:.1f} at "
          f"start, {load1:.1f} at end; total {total:.0f} s)")


if __name__ == "__main__":
    main()
