#!/usr/bin/env python
"""Chapter 9's measurements on real images: the digits sweep of the book, and larger data sets.

    python scripts/real_data.py digits [--seeds 5] [--out chapters/data/ch09_digits.json]
        The chapter's bands: both networks, SGD and GD, five seeds, on scikit-learn's digits
        (about 10 minutes on one CPU core). The chapter reads the JSON this writes.

    python scripts/real_data.py mnist   --root DIR [options]
    python scripts/real_data.py fashion --root DIR [options]
    python scripts/real_data.py cifar10 --root DIR [options]
        The same measurements on the training split of MNIST, Fashion-MNIST or CIFAR-10, read
        from the folder DIR by ``ng.load_mnist`` / ``ng.load_cifar10`` (standardised by the
        training set's statistics; their docstrings list the file names and layouts). Nothing is
        downloaded: a folder without the files is an error that lists the paths tried.

    python scripts/real_data.py synthetic [--image-shape 1 28 28] [--n 60000] [options]
        Pixels drawn N(0, 1) and labels drawn uniformly from 10 classes (``--labels teacher``:
        the argmax of a random linear map of the image instead, which a network can learn): for
        timing a machine on data of a real set's size without the files.

Options of these four, with their defaults:

    --device auto|cpu|cuda  where the data, the networks and every computation live
                            (auto: cuda when torch.cuda.is_available(), else cpu)
    --n N                   training images: the first N of the split (all of it; synthetic 60000)
    --seeds S               seeds 0..S-1, each a network initialisation and a run (3)
    --models MLP CNN        chapter 9's networks (ch9.digits_models) sized for the images
    --optimizers SGD GD     SGD: minibatches of --batch-size drawn without replacement; GD: full batch
    --record-at T ...       steps at which to measure (0 300 1000 3000)
    --steps T               the last step (max of --record-at); record steps beyond it are dropped
                            and T is recorded
    --eta ETA               learning rate (0.1)
    --batch-size B          SGD's batch size (64)
    --m M                   subsample of ng.estimate_mu on the whole training set (500)
    --eval-n N              a fixed random subset (drawn with --eval-seed, 0) on which ch9.measure
                            runs exactly (2000)
    --k K                   Hessian eigenpairs (Lanczos) and flattest directions of G (10)
    --n-random R            random directions (10)
    --out DIR               where to write (runs/<data>-<UTC date and time>)

At each recorded step of each run (network, optimizer, seed) the script records

* μ_F = Tr(Σ₁G)/‖G‖_F² on all n training samples (cross-entropy, the Fisher normalisation),
  estimated from m of them by ``ng.estimate_mu`` with its jackknife standard error and 95%
  interval (a new subsample at every record);
* on the eval subset, exactly (``ch9.measure``): μ_F, μ_iso, the loss and accuracy, the top-k
  Hessian eigenpairs by Lanczos, and g_F along them, along random directions and along the
  flattest resolved eigen-directions of G;
* the loss and accuracy on the whole training set;
* the seconds spent training up to it, estimating, measuring and evaluating.

The exact value on the eval subset is μ_F of those eval-n samples, which is not μ_F of all n:
μ has terms that scale like 1/n (the decomposition in ``noisegeom.estimators``), and after
training they can matter (the MLP on 2000 synthetic 12×12 images with a teacher's labels, after
300 SGD steps: μ_F = 0.615 on all 2000, 0.763 on an eval subset of 200; the estimate from
m = 100, 0.585 with interval [0.506, 0.663], covered the former).

and writes to DIR

* ``results.json``: ``provenance`` (command, commit, versions, device and its name, threads,
  date, seconds, and seconds per phase: load, to_device, train, estimate_mu, measure, evaluate,
  figures), ``data``, ``settings``, and ``results[model][optimizer][name]``, arrays over
  seeds × records (× directions); a run that diverges is marked in ``diverged`` and its later
  records are null;
* ``alignment.png``: μ_F against the step, the estimate (median and 10–90% band over seeds,
  each seed's interval as a bar) and the exact value on the eval subset, and μ_iso;
* ``directions.png``: g_F along the top-k Hessian, random and flattest directions at the last
  record, every seed;

and prints a summary table. Runs happen with ``ng.simulate`` on the device of the data, in
segments between recorded steps (``ng.measure_along_run``; run seed 1000·s for seed s, segment j
seeded 1000·s + j).

Cost. An SGD step costs B forward and backward passes, a GD step n. Each segment between records
also evaluates the loss on all n images at its start and end (``ng.simulate``, in one pass: on a
CPU the CNN's forward pass on 60 000 images of 28×28 takes about 50 s and 17 GB, the unfolded
inputs of its convolutions), so GD on a whole real set, and --n 60000 at all, is for a GPU. At
each record, ``ch9.measure`` runs Lanczos on the Hessian of the eval subset (about 45 products,
each a pass over the eval-n images: with the CNN on 28×28 images and --eval-n 1000, a minute on
one CPU core) and forms G's p×p matrix and all its eigenvalues: cheap for the CNN (p = 758 on
28×28 images), but the MLP has p = 12 730 on 28×28 images (two 1.3 GB matrices and a dense
eigendecomposition of order p: minutes on a CPU) and p = 49 338 on CIFAR-10 (19 GB each: too large;
use --models CNN there). For scale, on one shared CPU core
``synthetic --n 60000 --steps 100 --record-at 0 100 --seeds 1 --models CNN --optimizers SGD
--eval-n 1000 --m 500 --device cpu`` took 333 s: train 107, measure 183, evaluate 37,
estimate_mu 4 (both records together), with a peak of 17 GB of memory.

Every run writes a JSON file whose ``provenance`` entry says how it was made (command, commit,
versions, date, device, seconds).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import noisegeom as ng  # noqa: E402
from noisegeom.chapters import ch09_real_data as ch9  # noqa: E402

DIGITS_JSON = os.path.join(ROOT, "chapters", "data", "ch09_digits.json")
IMAGE_SETS = ("mnist", "fashion", "cifar10", "synthetic")
RECORD_AT = (0, 300, 1000, 3000)
# images per forward pass of the whole-set loss (a CNN's activations on 60 000 images would take GBs)
_EVAL_CHUNK = 4096
# p above which ch9.measure's p×p matrices (G and its eigenvectors) exceed about 3 GB
_LARGE_P = 20_000


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name on CUDA, the processor on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=None)
def git_state() -> tuple:
    """(commit, uncommitted changes in noisegeom/ or scripts/): read once, when the run starts,
    so that the file names the code that ran, not what the checkout holds when it ends."""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "noisegeom", "scripts"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return commit, dirty


def provenance(args, seconds: float, device: str, timings: dict | None = None) -> dict:
    commit, dirty = git_state()
    argv = getattr(args, "argv", None)
    argv = sys.argv[1:] if argv is None else argv
    out = {"command": "python scripts/real_data.py " + " ".join(argv), "commit": commit,
           "uncommitted_changes_in_noisegeom_or_scripts": dirty, "torch": torch.__version__,
           "noisegeom": ng.__version__, "python": platform.python_version(), "device": device,
           "threads": torch.get_num_threads(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "seconds": round(seconds, 1)}
    if timings is not None:
        dev = torch.device(device)
        out.update({"device_name": device_name(dev), "cuda": torch.version.cuda if dev.type == "cuda" else None,
                    "timings": {k: round(v, 3) for k, v in timings.items()}})
    return out


def run_digits(args) -> None:
    from tqdm import tqdm

    digits = ng.load_digits(seed=0)
    X, y = digits["X_train"], digits["y_train"]
    seeds = list(range(args.seeds))
    total = len(seeds) * 2 * 2
    t0 = time.perf_counter()
    with tqdm(total=total, desc="digits sweep", unit="run") as bar:
        def progress(model, opt, seed):
            bar.set_postfix_str(f"{model} {opt} seed {seed}")
            bar.update(0 if bar.n == 0 and not getattr(progress, "started", False) else 1)
            progress.started = True

        sweep = ch9.digits_sweep(X, y, seeds=seeds, progress=progress)
        bar.update(total - bar.n)
    seconds = time.perf_counter() - t0
    result = {"provenance": provenance(args, seconds, "cpu"),
              "data": {"name": "scikit-learn digits", "split": "ng.load_digits(seed=0)",
                       "n_train": int(X.shape[0])},
              "settings": {**ch9.DIGITS_RUN, "seeds": seeds, "loss": "cross_entropy", "normalization": "fisher",
                           "mlp_sizes": list(ch9.MLP_SIZES), "cnn_channels": ch9.CNN_CHANNELS},
              "results": sweep}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    print(f"wrote {args.out} ({seconds:.0f} s)")


# ---------------------------------------------------------------------------------------------
# MNIST, Fashion-MNIST, CIFAR-10 and synthetic images

def resolve_device(name: str, parser: argparse.ArgumentParser) -> torch.device:
    """--device: 'auto' is CUDA when there is one; 'cuda' without CUDA is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
                     f"torch.cuda.is_available() is False); use --device cpu or auto")
    return torch.device(name)


def synthetic_images(n: int, image_shape, *, labels: str = "random", n_classes: int = 10, seed: int = 0) -> dict:
    """n images of i.i.d. N(0, 1) pixels, with uniform random labels or a random linear teacher's.

    The teacher's label is argmax_c (W x)_c with W a (n_classes × C·H·W) matrix of N(0, 1) entries:
    a rule a network can learn, unlike random labels, which it can only memorise.
    """
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, int(np.prod(image_shape)), generator=gen, dtype=torch.float64)
    if labels == "random":
        y = torch.randint(0, n_classes, (n,), generator=gen)
    else:
        W = torch.randn(X.shape[1], n_classes, generator=gen, dtype=torch.float64)
        y = torch.cat([(X[i:i + _EVAL_CHUNK] @ W).argmax(1) for i in range(0, n, _EVAL_CHUNK)])
    return {"X": X, "y": y, "image_shape": tuple(image_shape), "n_classes": n_classes,
            "classes": tuple(str(c) for c in range(n_classes))}


def load_images(args) -> tuple[dict, dict]:
    """The training images of the subcommand's data set, and what to record about them."""
    if args.command == "synthetic":
        data = synthetic_images(args.n, args.image_shape, labels=args.labels, seed=args.data_seed)
        about = {"name": "synthetic", "pixels": "N(0, 1)", "labels": args.labels, "data_seed": args.data_seed}
    elif args.command == "cifar10":
        data = ng.load_cifar10(args.root, train=True, limit=args.n)
        about = {"name": "CIFAR-10", "root": os.path.abspath(args.root), "split": "train"}
    else:
        data = ng.load_mnist(args.root, kind=args.command, train=True, limit=args.n)
        about = {"name": {"mnist": "MNIST", "fashion": "Fashion-MNIST"}[args.command],
                 "root": os.path.abspath(args.root), "split": "train"}
    about.update({"n_train": int(data["X"].shape[0]), "image_shape": list(data["image_shape"]),
                  "n_classes": int(data["n_classes"]), "standardized": args.command != "synthetic"})
    return data, about


def whole_set_loss(model, theta, X, y) -> tuple[float, float]:
    """Cross-entropy loss and accuracy on all of X, in chunks of images (bounded memory)."""
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    correct = torch.zeros((), dtype=torch.int64, device=X.device)
    with torch.no_grad():
        for i in range(0, X.shape[0], _EVAL_CHUNK):
            out = model.forward(theta, X[i:i + _EVAL_CHUNK])
            total += torch.nn.functional.cross_entropy(out, y[i:i + _EVAL_CHUNK], reduction="sum")
            correct += (out.argmax(1) == y[i:i + _EVAL_CHUNK]).sum()
    return float(total) / X.shape[0], int(correct) / X.shape[0]


def _sync(device: torch.device) -> None:
    # CUDA works asynchronously: without this a phase's clock would stop before its kernels do
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds per phase, summed over the whole run."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    def lap(self, phase: str, since: float) -> float:
        _sync(self.device)
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now


def one_run(name, opt, seed, args, data, X, y, Xe, ye, record_at, clock, bar) -> tuple[dict, dict, int]:
    """One network, optimizer and seed: ``ng.measure_along_run`` with the records of the module docstring."""
    model = ch9.digits_models(seed, image_shape=data["image_shape"], n_classes=data["n_classes"])[name]
    model.to(X.device)
    rows, est_info = [], {}
    state = {"t": time.perf_counter()}

    def record(theta):
        j = len(rows)
        bar.set_postfix_str(f"{name} {opt} seed {seed} step {record_at[j]}")
        t0 = clock.lap("train", state["t"])
        est = ng.estimate_mu(model, theta, X, y, m=args.m, loss="cross_entropy", normalization="fisher",
                             seed=1000 * seed + j)
        t1 = clock.lap("estimate_mu", t0)
        meas = ch9.measure(model, theta, Xe, ye, loss="cross_entropy", k=args.k, n_random=args.n_random,
                           seed=seed)
        t2 = clock.lap("measure", t1)
        loss, accuracy = whole_set_loss(model, theta, X, y)
        t3 = clock.lap("evaluate", t2)
        est_info.update(m=est.m, n=est.n, level=est.level, interval=est.interval)
        row = {"mu_est": est.value, "mu_est_stderr": est.stderr, "mu_est_ci_low": est.ci_low,
               "mu_est_ci_high": est.ci_high, "train_loss": loss, "train_accuracy": accuracy,
               "mu_eval": meas.pop("mu"), "mu_iso_eval": meas.pop("mu_iso"), "loss_eval": meas.pop("loss"),
               "accuracy_eval": meas.pop("accuracy"), **meas,
               "seconds_train": t0 - state["t"], "seconds_estimate_mu": t1 - t0, "seconds_measure": t2 - t1,
               "seconds_evaluate": t3 - t2}
        rows.append(row)
        bar.update(1)
        state["t"] = time.perf_counter()

    diverged = False
    try:
        ng.measure_along_run(model, X, y, model.theta0, eta=args.eta, record_at=list(record_at),
                             batch_size=args.batch_size if opt == "SGD" else None, seed=1000 * seed,
                             loss="cross_entropy", measure=record)
    except ng.DivergenceError as exc:
        diverged = True
        bar.write(f"{name} {opt} seed {seed}: diverged after step {record_at[len(rows) - 1]} ({exc})")
        bar.update(len(record_at) - len(rows))
    out = {}
    for key in rows[0]:
        vals = [np.asarray(r[key], dtype=float) for r in rows]
        vals += [np.full_like(vals[0], np.nan)] * (len(record_at) - len(rows))
        out[key] = np.stack(vals)
    out["diverged"] = diverged
    return out, est_info, model.p


def run_images(args, parser) -> dict:
    from tqdm import tqdm

    t_start = time.perf_counter()
    device = resolve_device(args.device, parser)
    record_at = list(args.record_at)
    if args.steps is not None:
        record_at = [t for t in record_at if t < args.steps] + [args.steps]
    if record_at[0] < 0 or any(b <= a for a, b in zip(record_at, record_at[1:])):
        parser.error(f"--record-at must be non-negative and increasing, got {record_at}")
    clock = Clock(device)
    t = time.perf_counter()
    data, about = load_images(args)
    t = clock.lap("load", t)
    n = about["n_train"]
    for flag, value, low in (("--eval-n", args.eval_n, 1), ("--m", args.m, 4), ("--batch-size", args.batch_size, 1)):
        if flag == "--batch-size" and "SGD" not in args.optimizers:
            continue
        if not low <= value <= n:
            parser.error(f"{flag} must lie in {low}..n = {n} (the training images), got {value}")
    X, y = data["X"].to(device), data["y"].to(device)
    # the eval subset: one random draw, the same for every network, optimizer, seed and record
    draw = torch.randperm(n, generator=torch.Generator().manual_seed(args.eval_seed))
    eval_idx = torch.sort(draw[:args.eval_n]).values
    Xe, ye = X[eval_idx.to(device)], y[eval_idx.to(device)]
    t = clock.lap("to_device", t)
    out_dir = args.out or os.path.join(
        "runs", f"{args.command}-{datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out_dir, exist_ok=True)

    seeds = list(range(args.seeds))
    sizes = {name: ch9.digits_models(0, image_shape=data["image_shape"], n_classes=data["n_classes"])[name].p
             for name in args.models}
    for name, p in sizes.items():
        if p > _LARGE_P:
            print(f"note: the {name} has p = {p}: ch9.measure forms {p}×{p} matrices "
                  f"({2 * 8 * p * p / 1e9:.1f} GB) and their eigendecomposition at every record", file=sys.stderr)
    print(f"{about['name']}: n = {n} images {tuple(data['image_shape'])}, device {device} ({device_name(device)}), "
          f"p = {sizes}", file=sys.stderr)
    results, estimator = {}, {}
    total = len(args.models) * len(args.optimizers) * len(seeds) * len(record_at)
    with tqdm(total=total, desc=f"{args.command}", unit="record", dynamic_ncols=True) as bar:
        for name in args.models:
            results[name] = {"p": sizes[name]}
            for opt in args.optimizers:
                runs = []
                for s in seeds:
                    run, estimator, _ = one_run(name, opt, s, args, data, X, y, Xe, ye, record_at, clock, bar)
                    runs.append(run)
                stacked = {key: np.stack([r[key] for r in runs]) for key in runs[0]}
                stacked["steps"] = np.asarray(record_at)
                results[name][opt] = stacked
    t = time.perf_counter()
    settings = {"eta": args.eta, "batch_size": args.batch_size, "record_at": record_at, "steps": record_at[-1],
                "seeds": seeds, "run_seed": "1000*seed (segment j: 1000*seed + j)", "models": list(args.models),
                "optimizers": list(args.optimizers), "loss": "cross_entropy", "normalization": "fisher",
                "m": args.m, "estimator": estimator, "estimate_seed": "1000*seed + record index",
                "eval_n": args.eval_n, "eval_seed": args.eval_seed, "k": args.k, "n_random": args.n_random,
                "mlp_sizes": [int(np.prod(data["image_shape"])), ch9.MLP_SIZES[1], int(data["n_classes"])],
                "cnn_channels": ch9.CNN_CHANNELS}
    figures(results, settings, about, out_dir)
    clock.lap("figures", t)
    seconds = time.perf_counter() - t_start
    result = {"provenance": provenance(args, seconds, str(device), clock.seconds), "data": about,
              "settings": settings, "results": results}
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    print(summary(results, settings, clock.seconds, seconds))
    print(f"wrote {path}, alignment.png and directions.png ({seconds:.0f} s)")
    return result


def summary(results: dict, settings: dict, timings: dict, seconds: float) -> str:
    """The last record of each network and optimizer (medians over seeds), and the seconds per phase."""
    head = (f"{'model':<5} {'opt':<4} {'p':>6} {'step':>6} {'train acc':>9} {'mu_F est':>9} {'(95% CI)':>19} "
            f"{'mu_F eval':>9} {'mu_iso':>8} {'g top':>8} {'g rand':>8} {'g flat':>8} {'s/record':>8}")
    lines = [head, "-" * len(head)]
    for name, per_opt in results.items():
        for opt, r in per_opt.items():
            if opt == "p":
                continue
            med = lambda key: float(np.nanmedian(r[key][:, -1]))   # noqa: E731
            per_record = sum(np.nanmean(r[key]) for key in
                             ("seconds_train", "seconds_estimate_mu", "seconds_measure", "seconds_evaluate"))
            ci = f"[{med('mu_est_ci_low'):.3g}, {med('mu_est_ci_high'):.3g}]"
            lines.append(f"{name:<5} {opt:<4} {per_opt['p']:>6} {settings['steps']:>6} "
                         f"{med('train_accuracy'):>9.3f} {med('mu_est'):>9.4g} {ci:>19} {med('mu_eval'):>9.4g} "
                         f"{med('mu_iso_eval'):>8.3g} {float(np.nanmedian(r['g_top'][:, -1])):>8.3g} "
                         f"{float(np.nanmedian(r['g_random'][:, -1])):>8.3g} "
                         f"{float(np.nanmedian(r['g_bottom'][:, -1])):>8.3g} {per_record:>8.2f}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f"; total {seconds:.1f}")
    lines.append(f"(medians over seeds at the last record; estimate from m = {settings['estimator'].get('m')} of "
                 f"n = {settings['estimator'].get('n')}, exact values on the eval subset of {settings['eval_n']})")
    return "\n".join(lines)


def figures(results: dict, settings: dict, about: dict, out_dir: str) -> None:
    """alignment.png and directions.png (see the module docstring), in the book's style.

    The style is set inside ``matplotlib.rc_context``: a caller in the same process (the tests,
    a notebook) keeps its own settings."""
    import matplotlib

    matplotlib.use("Agg")
    from noisegeom import plotting

    with matplotlib.rc_context():
        plotting.use_book_style()
        _draw_figures(results, settings, about, out_dir)


def _draw_figures(results: dict, settings: dict, about: dict, out_dir: str) -> None:
    import matplotlib.pyplot as plt

    from noisegeom import plotting

    colors = {"SGD": plotting.COLORS["sgd"], "GD": plotting.COLORS["gd"]}
    models = list(results)
    steps = np.asarray(settings["record_at"])
    fig, axes = plt.subplots(1, len(models), figsize=(max(6.5, 5.5 * len(models)), 4.4), squeeze=False)
    for ax, name in zip(axes[0], models):
        for opt in settings["optimizers"]:
            r, c = results[name][opt], colors[opt]
            plotting.band(ax, steps, r["mu_est"].T, color=c, label=f"{opt}: estimate on all n")
            # each seed's interval, nudged sideways so that the seeds' bars do not cover one another
            S = r["mu_est"].shape[0]
            for s in range(S):
                x = steps * (1 + 0.04 * (s - (S - 1) / 2)) + 0.3 * (s - (S - 1) / 2)
                ax.vlines(x, r["mu_est_ci_low"][s], r["mu_est_ci_high"][s], color=c, alpha=0.5, linewidth=1)
            plotting.band(ax, steps, r["mu_eval"].T, color=c, linestyle="--", label=f"{opt}: exact on the eval subset")
            plotting.band(ax, steps, r["mu_iso_eval"].T, color=c, linestyle=":", label=f"{opt}: μ_iso (eval)")
        ax.axhline(1.0, color=plotting.COLORS["theory"], linewidth=0.8)
        ax.set_xscale("symlog", linthresh=max(1, int(steps[1]) if len(steps) > 1 else 1))
        ax.set_xticks(steps, [str(t) for t in steps])
        ax.set_xlabel("step")
        ax.set_ylabel("μ_F")
        ax.set_title(f"{name} (p = {results[name]['p']})")
    axes[0][0].legend(fontsize=8)
    # two lines: one network's figure is narrow
    fig.suptitle(f"{about['name']}, n = {about['n_train']}: μ_F from m = {settings['m']} samples\n"
                 f"(bars: 95% intervals) and exactly on {settings['eval_n']}", fontsize=11)
    fig.savefig(os.path.join(out_dir, "alignment.png"))
    plt.close(fig)

    kinds = (("g_top", f"top {settings['k']} of H"), ("g_random", "random"), ("g_bottom", "flattest of G"))
    fig, axes = plt.subplots(1, len(models), figsize=(max(6.5, 5.5 * len(models)), 4.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], models):
        ticks, labels = [], []
        for i, opt in enumerate(settings["optimizers"]):
            for j, (key, label) in enumerate(kinds):
                x = 4 * i + j
                vals = results[name][opt][key][:, -1].ravel()
                vals = vals[np.isfinite(vals) & (vals > 0)]
                ax.scatter(x + 0.15 * rng.standard_normal(vals.size), vals, s=10, color=colors[opt], alpha=0.6)
                if vals.size:
                    ax.hlines(np.median(vals), x - 0.3, x + 0.3, color="k", linewidth=1.5)
                ticks.append(x)
                labels.append(f"{opt}\n{label}")
        ax.axhline(1.0, color=plotting.COLORS["theory"], linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_ylabel("g_F(v)")
        ax.set_title(f"{name}, step {settings['steps']} (eval subset)")
    fig.savefig(os.path.join(out_dir, "directions.png"))
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    sub = parser.add_subparsers(dest="command", required=True)
    dg = sub.add_parser("digits", help="the chapter's sweep on the 8×8 digits")
    dg.add_argument("--seeds", type=int, default=5)
    dg.add_argument("--out", default=DIGITS_JSON)
    helps = {"mnist": "MNIST from IDX files in --root", "fashion": "Fashion-MNIST from IDX files in --root",
             "cifar10": "CIFAR-10 from its python batches in --root",
             "synthetic": "N(0, 1) images and random labels, for timing"}
    for name in IMAGE_SETS:
        sp = sub.add_parser(name, help=helps[name], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if name == "synthetic":
            sp.add_argument("--image-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"),
                            help="channels, height, width")
            sp.add_argument("--n", type=int, default=60000, help="images")
            sp.add_argument("--labels", choices=("random", "teacher"), default="random",
                            help="uniform labels, or the argmax of a random linear map of the image")
            sp.add_argument("--data-seed", type=int, default=0, help="seed of the pixels and labels")
        else:
            sp.add_argument("--root", required=True, help="folder with the files (required; nothing is downloaded)")
            sp.add_argument("--n", type=int, default=None, help="keep the first N training images; None: all")
        sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when torch.cuda.is_available()")
        sp.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1: initialisations and runs")
        sp.add_argument("--models", nargs="+", choices=("MLP", "CNN"), default=["MLP", "CNN"],
                        help="chapter 9's networks")
        sp.add_argument("--optimizers", nargs="+", choices=("SGD", "GD"), default=["SGD", "GD"],
                        help="SGD: minibatches without replacement; GD: full batch")
        sp.add_argument("--steps", type=int, default=None, help="last step; None: the last of --record-at")
        sp.add_argument("--record-at", type=int, nargs="+", default=list(RECORD_AT), help="steps at which to measure")
        # 0.1 trains both networks on synthetic images with a teacher's labels; on correlated images
        # (blurred blobs) λ_max of the MLP's Hessian at initialisation was 17.5, so GD at 0.1 stays
        # just below 2/λ_max, where higher rates would start at the edge of stability
        sp.add_argument("--eta", type=float, default=0.1, help="learning rate")
        sp.add_argument("--batch-size", type=int, default=64, help="SGD's batch size")
        sp.add_argument("--m", type=int, default=500, help="subsample of the μ estimate on all n images")
        sp.add_argument("--eval-n", type=int, default=2000, help="images of the exact measurement")
        sp.add_argument("--eval-seed", type=int, default=0, help="seed of the eval subset's draw")
        sp.add_argument("--k", type=int, default=10, help="Hessian eigenpairs and flattest directions of G")
        sp.add_argument("--n-random", type=int, default=10, help="random directions")
        sp.add_argument("--out", default=None, help="folder to write; None: runs/<data>-<UTC time>")
    return parser


def main(argv=None):
    """The command line; ``argv`` (a list of strings, without the program name) for calls from Python."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    git_state()                                  # the code that runs, recorded before it runs
    torch.set_num_threads(args.threads)
    if args.command == "digits":
        return run_digits(args)
    for flag in ("seeds", "k", "n_random"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if not args.eta > 0:
        parser.error(f"--eta must be > 0, got {args.eta}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return run_images(args, parser)


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as exc:                   # data not where --root says: the loader's message
        sys.exit(f"real_data.py: error: {exc}")
