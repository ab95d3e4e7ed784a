#!/usr/bin/env python
"""Time every chapter's widget update (`make widget-times`). Not a test.

Each chapter with an ``ng.widgets.explore`` call is executed on a fresh kernel, as the book
build does (one thread), with ``explore`` replaced by a recorder. Its figure is then moved
from the default settings to each control, one at a time, at each end of its range (the
first and last option of a list, the minimum and maximum of a slider). An update is timed
the way a live page pays for it in the kernel: ``ng.widgets.LiveFigure``, as ``explore``
uses it (a plotting function's new figure, laid out once; a ``LivePlot`` updated in place,
only its animated artists redrawn when nothing else changed), plus the PNG. The kernel round trip and the browser's painting come on top:
``scripts/widget_times_live.py`` measures those in JupyterLab. The aim is under
150 ms per update. Prints one ``name: value`` line per chapter and setting,
then a table: the update at the defaults and the slowest update. Runtime: about 3 minutes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIM_S = 0.15
REPEAT = 3

# Runs before the chapter: record the explore() calls instead of displaying widgets.
RECORD = """
import noisegeom as _ng
_WIDGETS = []
def _record(plot_fn, web=None, **controls):
    _WIDGETS.append((plot_fn, controls))
_ng.widgets.explore = _record
"""

# Runs after the chapter: time each recorded plotting function, print one JSON line per widget.
TIME = """
import inspect as _inspect, json as _json, time as _time
import ipywidgets as _ipw
import matplotlib.pyplot as _plt

def _ends(w):
    if isinstance(w, (_ipw.Dropdown, _ipw.ToggleButtons, _ipw.RadioButtons, _ipw.Select)):
        return [w.options[0][1] if isinstance(w.options[0], tuple) else w.options[0],
                w.options[-1][1] if isinstance(w.options[-1], tuple) else w.options[-1]]
    if hasattr(w, "min") and hasattr(w, "max"):
        return [w.min, w.max]
    return []

def _update_seconds(live, kwargs, base):
    # (update to kwargs, drawn in full?) from the fastest of REPEAT moves base -> kwargs:
    # a move, as a reader makes it, not a redraw of the setting on screen
    best = (float("inf"), False)
    for _ in range(REPEAT):
        live.image(**base)
        full = live.full_draws
        t0 = _time.perf_counter()
        live.image(**kwargs)
        best = min(best, (_time.perf_counter() - t0, live.full_draws > full))
    return best

for _fn, _controls in _WIDGETS:
    _made, _values, _ = _ng.widgets.build_controls(_fn, **_controls)
    _base = _values()
    _live = _ng.widgets.LiveFigure(_fn)
    _live.image(**_base)                              # as explore: the first drawing lays out
    _rows = [("defaults", _update_seconds(_live, _base, _base))]
    for _name, _w in _made.items():
        for _v in _ends(_w):
            if _v != _base[_name]:
                _rows.append((f"{_name}={_v}", _update_seconds(_live, {**_base, _name: _v}, _base)))
    print("WIDGET " + _json.dumps({"function": _fn.__name__, "rows": _rows}))
""".replace("REPEAT", str(REPEAT))


def chapter_widgets(path: str, timeout: int) -> list[dict]:
    nb = jupytext.read(path)
    nb.cells.insert(0, nbformat.v4.new_code_cell(RECORD))
    nb.cells.append(nbformat.v4.new_code_cell(TIME))
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    out = []
    for cell in nb.cells[-1:]:
        for o in cell.get("outputs", []):
            for line in o.get("text", "").splitlines():
                if line.startswith("WIDGET "):
                    out.append(json.loads(line[len("WIDGET "):]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter files (default: every chapter with a widget)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")       # as the book build runs the chapters
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    paths = args.chapters or sorted(p for p in glob.glob(os.path.join(ROOT, "chapters", "*.md"))
                                    if "ng.widgets.explore(" in open(p, encoding="utf-8").read())
    table = []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        print(f"# {name}: executing", flush=True)
        for w in chapter_widgets(path, args.timeout):
            for setting, (s, full) in w["rows"]:
                how = "drawn in full" if full else "animated artists only"
                print(f"{name}.{w['function']}[{setting}]: {s:.3f} ({how})", flush=True)
            slow_setting, (slow, _) = max(w["rows"], key=lambda r: r[1][0])
            base = w["rows"][0][1][0]
            table.append((f"{name}: {w['function']}", base, slow, slow_setting))
    w0 = max(len(r[0]) for r in table)
    w3 = max(10, max(len(r[3]) for r in table))
    print()
    print(f"| {'widget'.ljust(w0)} | defaults (s) | slowest (s) | {'slowest at'.ljust(w3)} | under {AIM_S:g} s |")
    print(f"|{'-' * (w0 + 2)}|--------------|-------------|{'-' * (w3 + 2)}|--------------|")
    for name, base, slow, where in table:
        print(f"| {name.ljust(w0)} | {base:12.3f} | {slow:11.3f} | {where.ljust(w3)} "
              f"| {'yes' if slow < AIM_S else 'NO':>12} |")
    print(f"\n(best of {REPEAT} moves from the defaults each: the update and its PNG, as a live widget "
          "draws it; one thread)")


if __name__ == "__main__":
    sys.exit(main())
