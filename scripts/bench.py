#!/usr/bin/env python
"""Benchmarks of the numerical core of noisegeom (`make bench`). Not a test.

Prints one ``name: value`` line per figure, then a short table of the targets.
Problem: a two-layer tanh network f(x) = Σ_k a_k tanh(w_kᵀx), d = 100 inputs,
width 100 (outer layer fixed), so p = 10⁴ parameters, on n = 10³ samples.

(a) alignment metrics through the n×n Gram route against the dense p×p route
    (build Σ₁ and G as p×p matrices, then take the traces): agreement and speed;
(b) per-sample gradients with vmap against a loop over samples (.backward() on
    the module, gradients zeroed every sample);
(c) the time of the metrics once J and e are known, against the time of J;
(d) peak memory of the Gram route and how its time grows with n and p.

Runs single-threaded by default (``--threads N`` to change): on this shared two-core
machine two torch threads wait on each other whenever another process holds a core,
and the timings then scatter by factors of several. Timings are the minimum over
repeats (the least disturbed run); functions compared with each other are called
round-robin so that load from other processes hits them alike. Everything is
float64. Runtime: about 2–3 minutes.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import noisegeom as ng  # noqa: E402

DT = torch.float64
N, D, WIDTH = 1000, 100, 100
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


# ------------------------------------------------------------------ problem

def problem(n=N, d=D, width=WIDTH, seed=0):
    model = ng.two_layer_net(d, width, activation="tanh", seed=seed)
    X = ng.gaussian_inputs(n, ng.power_law_spectrum(d, 1.0), seed=seed)
    teacher = ng.two_layer_net(d, width, activation="tanh", seed=seed + 1)
    y = teacher(teacher.theta0, X) + 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=DT)
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


def dense_metrics(J, e, V, Q):
    """The same metrics from p×p matrices: Σ₁ = CᵀC/n (C the centred per-sample gradients), G = JᵀJ/n.

    Traces of products are taken without forming the product (Tr(Σ₁G) = Σ_ij (Σ₁)_ij G_ij),
    which is the cheapest dense route; it still needs the two p×p matrices.
    """
    n, p = J.shape
    grads = e[:, None] * J
    C = grads - grads.mean(0)
    S1 = C.T @ C / n
    G = J.T @ J / n
    two_L = float((e * e).mean())
    fro2 = float(torch.dot(G.reshape(-1), G.reshape(-1)))
    tr_SG = float(torch.dot(S1.reshape(-1), G.reshape(-1)))
    tr_S, tr_G = float(torch.diagonal(S1).sum()), float(torch.diagonal(G).sum())
    num = ((V.T @ S1) * V.T).sum(1)
    den = ((V.T @ G) * V.T).sum(1)
    out = {
        "mu": tr_SG / (two_L * fro2), "mu_iso": tr_S * tr_G / (p * two_L * fro2), "zhu": p * tr_SG / (tr_G * tr_S),
        "tr_sigma1": tr_S, "tr_sigma1_G": tr_SG, "fro2_G": fro2,
        "g_v": (num / (two_L * den)).numpy(),
        "g_V": float(torch.trace(Q.T @ S1 @ Q) / (two_L * torch.trace(Q.T @ G @ Q))),
    }
    del S1, G
    return out


def max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k in a:
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
        (0.5 * (out - y[i]) ** 2).backward()
        rows.append(torch.cat([q.grad.reshape(-1) for q in params]))
    return torch.stack(rows)


def fit_exponent(x, t) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


# ------------------------------------------------------------------ main

def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine two threads "
                             "wait on each other and the timings scatter by factors of several)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# noisegeom benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start", flush=True)
    print("# times: minimum wall-clock seconds over repeats; ratios also from process CPU time", flush=True)
    model, X, y, theta = problem()
    n, p = X.shape[0], model.p
    emit("n", n, "{:d}")
    emit("p", p, "{:d}")
    V, Q = directions(p)
    table = []

    # (b) per-sample gradients: vmap vs loop ------------------------------------------------
    ng.per_sample_gradients(model, theta, X[:8], y[:8])              # warm up torch.func
    res = best_times_interleaved({"vmap": lambda: ng.per_sample_gradients(model, theta, X, y),
                                  "loop": lambda: loop_per_sample_gradients(model, theta, X, y)}, repeat=7)
    (t_vmap, G_vmap), (t_loop, G_loop) = res["vmap"], res["loop"]
    emit("per_sample_gradients_vmap_s", t_vmap)
    emit("per_sample_gradients_loop_s", t_loop)
    sp_b = ratio(t_loop, t_vmap)
    emit("per_sample_gradients_speedup", sp_b[0], "{:.1f}")
    emit("per_sample_gradients_speedup_cpu", sp_b[1], "{:.1f}")
    emit("per_sample_gradients_max_rel_diff", float((G_vmap - G_loop).abs().max() / G_loop.abs().max()), "{:.1e}")
    del G_loop

    # (c) J, residuals, and the metrics beyond them ------------------------------------------
    ng.jacobian(model, theta, X[:8])
    J = ng.jacobian(model, theta, X)
    e = ng.residuals(model, theta, X, y)
    res = best_times_interleaved({"J": lambda: ng.jacobian(model, theta, X),
                                  "e": lambda: ng.residuals(model, theta, X, y),
                                  "metrics": lambda: gram_metrics(J, e, V, Q),
                                  "mu": lambda: ng.NoiseGeometry.square_loss(J, e).mu(),
                                  "K": lambda: J @ J.T}, repeat=10)
    t_J, t_e, t_mu, t_K = res["J"][0], res["e"][0], res["mu"][0], res["K"][0]
    t_gram, m_gram = res["metrics"]
    t_from_model, _ = best_time(lambda: ng.NoiseGeometry.from_model(model, theta, X, y).mu(), repeat=5)
    emit("jacobian_s", t_J)
    emit("residuals_s", t_e)
    emit("gram_K_matmul_s", t_K)
    emit("gram_metrics_all_s", t_gram)
    emit("gram_mu_only_s", t_mu)
    emit("from_model_mu_total_s", t_from_model)
    r_c = ratio(t_gram, t_J)
    r_c_mu = ratio(t_mu, t_J)
    r_c2 = (float(t_gram) / (float(t_J) + float(t_vmap)), t_gram.cpu / (t_J.cpu + t_vmap.cpu))
    emit("metrics_over_jacobian_ratio", r_c[0], "{:.2f}")
    emit("metrics_over_jacobian_ratio_cpu", r_c[1], "{:.2f}")
    emit("mu_over_jacobian_ratio", r_c_mu[0], "{:.2f}")
    emit("metrics_over_jacobian_plus_gradients_ratio", r_c2[0], "{:.2f}")
    emit("K_matmul_over_jacobian_ratio", float(t_K) / float(t_J), "{:.2f}")
    # the same ratio at n = 100: the metrics cost O(n²p) (the Gram K), J only O(np)
    n_c = 100
    J100, e100 = ng.jacobian(model, theta, X[:n_c]), e[:n_c].contiguous()
    res = best_times_interleaved({"J": lambda: ng.jacobian(model, theta, X[:n_c]),
                                  "mu": lambda: ng.NoiseGeometry.square_loss(J100, e100).mu()}, repeat=15)
    t_J100, t_mu100 = res["J"][0], res["mu"][0]
    r_c100 = ratio(t_mu100, t_J100)
    emit("mu_over_jacobian_ratio_n100", r_c100[0], "{:.2f}")
    emit("mu", m_gram["mu"], "{:.6f}")
    emit("mu_isotropic", m_gram["mu_iso"], "{:.6f}")
    emit("zhu_indicator", m_gram["zhu"], "{:.3f}")

    # (d) peak memory of the Gram route -------------------------------------------------------
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

    # (a) Gram route vs dense p×p route --------------------------------------------------------
    rss0 = _status_kb("VmRSS")
    reset_peak_rss()
    res = best_times_interleaved({"gram": lambda: gram_metrics(J, e, V, Q),
                                  "dense": lambda: dense_metrics(J, e, V, Q)}, repeat=2)
    (t_gram_a, _), (t_dense, m_dense) = res["gram"], res["dense"]
    t_gram_a = Timing(min(float(t_gram_a), float(t_gram)), min(t_gram_a.cpu, t_gram.cpu))
    peak = _status_kb("VmHWM")
    if rss0 is not None and peak is not None:
        emit("dense_route_peak_rss_delta_MB", (peak - rss0) / 1024, "{:.0f}")
    emit("dense_metrics_s", t_dense)
    diff_a = max_rel_diff(m_gram, m_dense)
    emit("gram_vs_dense_max_rel_diff", diff_a, "{:.1e}")
    sp_a = ratio(t_dense, t_gram_a)
    emit("gram_speedup_over_dense", sp_a[0], "{:.1f}")
    emit("gram_speedup_over_dense_cpu", sp_a[1], "{:.1f}")
    flops_gram, flops_dense = 2 * n * n * p, 2 * 2 * n * p * p
    emit("flop_ratio_dense_over_gram", flops_dense / flops_gram, "{:.0f}")
    gc.collect()

    # the same comparison where p/n is larger (n = 200, p = 10⁴)
    n_small = 200
    Js, es = J[:n_small].contiguous(), e[:n_small].contiguous()
    res = best_times_interleaved({"gram": lambda: gram_metrics(Js, es, V, Q),
                                  "dense": lambda: dense_metrics(Js, es, V, Q)}, repeat=3)
    (t_gram_s, m_gs), (t_dense_s, m_ds) = res["gram"], res["dense"]
    sp_a200 = ratio(t_dense_s, t_gram_s)
    diff_a200 = max_rel_diff(m_gs, m_ds)
    emit("gram_speedup_over_dense_n200", sp_a200[0], "{:.1f}")
    emit("gram_speedup_over_dense_n200_cpu", sp_a200[1], "{:.1f}")
    emit("gram_vs_dense_max_rel_diff_n200", diff_a200, "{:.1e}")
    gc.collect()

    # (d) scaling of the Gram metrics with n (p = 10⁴) and with p (n = 10³) ---------------------
    ns = [250, 500, 1000, 2000]
    Xbig = ng.gaussian_inputs(max(ns), ng.power_law_spectrum(D, 1.0), seed=5)
    ybig = torch.zeros(max(ns), dtype=DT) + 0.3
    Js_n = {m: ng.jacobian(model, theta, Xbig[:m]) for m in ns}
    es_n = {m: ng.residuals(model, theta, Xbig[:m], ybig[:m]) for m in ns}
    res = best_times_interleaved({m: (lambda m=m: ng.NoiseGeometry.square_loss(Js_n[m], es_n[m]).mu())
                                  for m in ns}, repeat=7)
    tn = [res[m][0] for m in ns]
    resJ = best_times_interleaved({m: (lambda m=m: ng.jacobian(model, theta, Xbig[:m])) for m in ns}, repeat=5)
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
                                  for q in ps}, repeat=7)
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

    # widget render: one plot function (a band over seeds of a small SGD run) -------------------
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
    emit("bench_total_s", total, "{:.0f}")

    # table ----------------------------------------------------------------------------------------
    def row(name, wall, cpu, target, ok):
        table.append((name, wall, cpu, target, "-" if ok is None else ("yes" if ok else "NO")))

    row("(a) Gram = dense p×p, max rel. diff", f"{diff_a:.1e}", "", "≤ 1e-8", diff_a <= 1e-8)
    row("(a) Gram speed-up over dense, n=1000", f"{sp_a[0]:.1f}×", f"{sp_a[1]:.1f}×", "≥ 50×", min(sp_a) >= 50)
    row("(a) same at n=200 (p/n = 50)", f"{sp_a200[0]:.1f}×", f"{sp_a200[1]:.1f}×", "≥ 50×", min(sp_a200) >= 50)
    row("(b) vmap speed-up over the loop", f"{sp_b[0]:.1f}×", f"{sp_b[1]:.1f}×", "≥ 5×", min(sp_b) >= 5)
    row("(c) all metrics / J", f"{r_c[0]:.2f}", f"{r_c[1]:.2f}", "≤ 0.5", max(r_c) <= 0.5)
    row("(c) μ alone / J", f"{r_c_mu[0]:.2f}", f"{r_c_mu[1]:.2f}", "≤ 0.5", max(r_c_mu) <= 0.5)
    row("(c) μ alone / J at n=100", f"{r_c100[0]:.2f}", f"{r_c100[1]:.2f}", "≤ 0.5", max(r_c100) <= 0.5)
    row("(d) Gram route peak RSS (MB)", f"{RESULTS.get('gram_route_peak_rss_delta_MB', float('nan')):.0f}", "",
        "report", None)
    row("(d) dense route peak RSS (MB)", f"{RESULTS.get('dense_route_peak_rss_delta_MB', float('nan')):.0f}", "",
        "report", None)
    row("(d) μ time ∝ n^a (p = 10⁴)", f"a = {a_n:.2f}", f"a = {a_n_cpu:.2f}", "2 (n²p)", None)
    row("(d) μ time ∝ p^b (n = 10³)", f"b = {a_p:.2f}", f"b = {a_p_cpu:.2f}", "1 (n²p)", None)
    if t_render is not None:
        row("widget render, one plot (s)", f"{float(t_render):.3f}", f"{t_render.cpu:.3f}", "< 0.15", None)
    w0 = max(len(r[0]) for r in table)
    print()
    print(f"| {'figure'.ljust(w0)} | {'wall clock':>10} | {'CPU time':>10} | {'target':>8} | met |")
    print(f"|{'-' * (w0 + 2)}|{'-' * 12}|{'-' * 12}|{'-' * 10}|-----|")
    for name, wall, cpu, target, flag in table:
        print(f"| {name.ljust(w0)} | {wall:>10} | {cpu:>10} | {target:>8} | {flag:>3} |")
    print(f"\n(p = {p}, n = {n}; times are minima over repeats; 'met' needs both columns; total {total:.0f} s)")


if __name__ == "__main__":
    main()
