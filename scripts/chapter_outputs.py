"""Execute every chapter on a fresh kernel and compare what a reader sees, before and after a change.

    python scripts/chapter_outputs.py execute OUT   # executed notebooks -> OUT/*.ipynb, frames -> OUT/frames
    python scripts/chapter_outputs.py compare A B   # every output of A against B; exit 1 on a difference

For refactors that must not change the book (issue 14 moved the chapter numerics into
``noisegeom/chapters/``): each chapter runs as the book build runs it (one thread, the
interactive figures rendered into a frames folder, the working directory ``chapters/``).
``compare`` matches the chapters' outputs in order (text, HTML, images and the
widget frames they name, byte for byte) after masking wall-clock times, and prints each
difference. Code cells may differ (imports change in a refactor); outputs may not.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"

# Wall-clock times, ratios of times and memory addresses: the only outputs allowed to change
# between runs.
MASKS = [
    (re.compile(r"\d+(\.\d+)?\s*(s|ms|µs|us|min|seconds?)\b"), "<time>"),
    (re.compile(r"(time: )\d+(\.\d+)?"), r"\1<ratio>"),
    (re.compile(r"0x[0-9a-f]{6,}"), "<addr>"),
]


def executed_chapters() -> list[Path]:
    return sorted(p for p in CHAPTERS.glob("[0-9][0-9]_*.md") if "kernelspec" in p.read_text()[:600])


def execute(out: Path, only: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NOISEGEOM_WIDGET_FRAMES=str(out / "frames"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    jupytext = Path(sys.executable).with_name("jupytext")
    rc = 0
    for md in executed_chapters():
        if only and not any(md.name.startswith(o) for o in only):
            continue
        start = time.time()
        done = subprocess.run([str(jupytext), "--to", "ipynb", "--execute", "--output",
                               str(out / md.with_suffix(".ipynb").name), md.name], cwd=CHAPTERS, env=env,
                              capture_output=True, text=True)
        print(f"{md.name}: exit {done.returncode}, {time.time() - start:.0f} s", flush=True)
        if done.returncode:
            print(done.stderr[-3000:])
            rc = 1
    return rc


def _mask(text: str) -> str:
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def _merged_streams(outputs: list) -> list:
    """Consecutive prints to one stream as one output: the kernel splits them by timing."""
    merged = []
    for output in outputs:
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1] = nbformat.from_dict(dict(merged[-1], text=merged[-1].text + output.text))
        else:
            merged.append(output)
    return merged


def outputs(nb_path: Path) -> list[tuple[str, str]]:
    """(where, content) of every output, images as hashes, in order."""
    nb = nbformat.read(nb_path, as_version=4)
    items = []
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n += 1
        for k, output in enumerate(_merged_streams(cell.get("outputs", []))):
            where = f"code cell {n}, output {k}"
            if output.output_type == "stream":
                items.append((f"{where} ({output.name})", _mask(output.text)))
            elif output.output_type in ("execute_result", "display_data"):
                for mime, data in sorted(output.data.items()):
                    if mime.startswith("image/") and mime != "image/svg+xml":
                        digest = hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
                        items.append((f"{where} ({mime})", digest))
                    elif mime == "application/vnd.jupyter.widget-view+json":
                        continue   # model ids are random per kernel
                    else:
                        text = data if isinstance(data, str) else repr(data)
                        items.append((f"{where} ({mime})", _mask(text)))
            elif output.output_type == "error":
                items.append((f"{where} (error)", output.ename + ": " + output.evalue))
    return items


def compare(a: Path, b: Path) -> int:
    differences = 0
    names = sorted({p.name for p in a.glob("*.ipynb")} | {p.name for p in b.glob("*.ipynb")})
    for name in names:
        if not (a / name).exists() or not (b / name).exists():
            print(f"{name}: only in {'B' if (b / name).exists() else 'A'}")
            differences += 1
            continue
        left, right = outputs(a / name), outputs(b / name)
        if left == right:
            print(f"{name}: {len(left)} outputs identical")
            continue
        differences += 1
        print(f"{name}: DIFFERENT ({len(left)} vs {len(right)} outputs)")
        for line in difflib.unified_diff([f"{w}: {c}" for w, c in left], [f"{w}: {c}" for w, c in right],
                                         "A", "B", lineterm="", n=0):
            print("   ", line[:400])
    frames_a = {p.name: p.read_bytes() for p in (a / "frames").glob("*")}
    frames_b = {p.name: p.read_bytes() for p in (b / "frames").glob("*")}
    # Frame files are named by their content hash, so equal names mean equal images.
    if frames_a.keys() == frames_b.keys():
        print(f"widget frames: {len(frames_a)} identical")
    else:
        differences += 1
        print(f"widget frames: {len(frames_a.keys() - frames_b.keys())} only in A, "
              f"{len(frames_b.keys() - frames_a.keys())} only in B")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute every chapter into OUT")
    ex.add_argument("out", type=Path)
    ex.add_argument("--only", nargs="*", default=[], help="chapter number prefixes, e.g. 02 07")
    co = sub.add_parser("compare", help="compare the outputs of two executions")
    co.add_argument("a", type=Path)
    co.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "execute":
        return execute(args.out.resolve(), args.only)
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
