#!/usr/bin/env python
"""Chapter 9's measurements on real images: the digits sweep of the book, and larger data sets.

    python scripts/real_data.py digits [--out chapters/data/ch09_digits.json]
        The chapter's bands: both networks, SGD and GD, five seeds, on scikit-learn's digits
        (about 10 minutes on one CPU core). The chapter reads the JSON this writes.

Every run writes a JSON file whose ``provenance`` entry says how it was made (command, commit,
versions, date, device, seconds).
"""

from __future__ import annotations

import argparse
import datetime
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
    return x


def provenance(args, seconds: float, device: str) -> dict:
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "noisegeom", "scripts"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return {"command": "python scripts/real_data.py " + " ".join(sys.argv[1:]), "commit": commit,
            "uncommitted_changes_in_noisegeom_or_scripts": dirty, "torch": torch.__version__,
            "noisegeom": ng.__version__, "python": platform.python_version(), "device": device,
            "threads": torch.get_num_threads(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "seconds": round(seconds, 1)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    sub = parser.add_subparsers(dest="command", required=True)
    dg = sub.add_parser("digits", help="the chapter's sweep on the 8×8 digits")
    dg.add_argument("--seeds", type=int, default=5)
    dg.add_argument("--out", default=DIGITS_JSON)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "digits":
        run_digits(args)


if __name__ == "__main__":
    main()
