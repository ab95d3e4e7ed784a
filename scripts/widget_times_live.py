#!/usr/bin/env python
"""Time live widget updates in JupyterLab, as a student sees them (`make widget-times-live`).

Not a test. JupyterLab is started as Binder starts it (the book's ``.venv`` with the Binder lab
pins, ``.binder/start``, the settings of ``.binder/postBuild``, a throwaway copy of the working
tree; see ``tests/book/lab_server.py``) and driven by headless Chromium (Debian's, through
Playwright). For every chapter with an ``ng.widgets.explore`` call: open it through the launch
link's path, Run All Cells, then move each control of the widget ``--moves`` times as a reader
would (a slider one step right and back with the arrow keys; a dropdown to the next option and
back), so that each control is timed with the others at their defaults. One update is timed in the page, from the key press (or the option's input event) to
the new figure decoded and painted (the frame after ``img.decode()``): the kernel round trip,
the plotting function, the PNG and the browser together. Prints one ``name: value`` line per
chapter, then a table of the median and the 95th percentile against the aims (median at most
150 ms, p95 at most 300 ms). Run it on a quiet machine; about 8 minutes for the book.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "book"))

from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from lab_server import TOKEN, running_lab  # noqa: E402

AIM_MEDIAN, AIM_P95 = 0.150, 0.300
NB = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"     # the notebook on screen

# Record the start of an update (capture phase: before any widget handler runs) and its end:
# the widget cell's figure replaced by a new, decoded image, one animation frame later.
INSTRUMENT = """cellIndex => {
  const cellSel = `NB .jp-Cell[data-windowed-list-index="${cellIndex}"]`;
  const figure = () => { const c = document.querySelector(cellSel);
                         return c && c.querySelector('.jp-OutputArea-output img'); };
  window.__ng = {t0: null, t1: null};
  const start = () => { window.__ng.t0 = performance.now(); window.__ng.t1 = null; };
  if (!window.__ngListening) {
    document.addEventListener('keydown', start, true);
    document.addEventListener('input', e => { if (e.target.tagName === 'SELECT') start(); }, true);
    window.__ngListening = true;
  }
  // Watch the whole notebook, not the cell's element: JupyterLab's windowed notebook may
  // replace a cell's element when it scrolls, and an observer on the old one sees nothing.
  let last = (figure() || {}).src;
  new MutationObserver(() => {
    const img = figure();
    if (!img || img.src === last) return;
    last = img.src;
    img.decode().then(() => requestAnimationFrame(() => { window.__ng.t1 = performance.now(); }));
  }).observe(document.querySelector('NB'), {subtree: true, childList: true, attributes: true,
                                            attributeFilter: ['src']});
}""".replace("NB", NB)


def explore_cells(path: str) -> list[int]:
    import jupytext

    nb = jupytext.read(path, fmt="md:myst")
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "ng.widgets.explore(" in c.source]


def time_chapter(page, base: str, rel: str, moves: int, timeout_s: int) -> list[float]:
    # ?reset: a fresh workspace, with only this chapter open
    page.goto(f"{base}/lab/tree/{rel}?reset&token={TOKEN}", wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_selector(f"{NB} .jp-Cell", timeout=90_000)
    page.wait_for_timeout(1500)
    page.locator(f"{NB} .jp-Cell").first.click()
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells")).first.click()
    seconds = []
    for index in explore_cells(os.path.join(ROOT, rel)):
        cell = page.locator(f'{NB} .jp-Cell[data-windowed-list-index="{index}"]')
        cell.scroll_into_view_if_needed()
        controls = cell.locator(".widget-slider .noUi-handle, .widget-dropdown select")
        controls.first.wait_for(timeout=timeout_s * 1000)
        page.wait_for_function(
            f"() => ![...document.querySelectorAll('{NB} .jp-InputPrompt')].some(p => p.textContent.includes('*'))",
            timeout=timeout_s * 1000, polling=500)
        page.evaluate(INSTRUMENT, index)
        for c in range(controls.count()):
            control = controls.nth(c)
            is_select = control.evaluate("el => el.tagName === 'SELECT'")
            n_options = control.evaluate("el => el.options.length") if is_select else 0
            for m in range(moves):
                cell.scroll_into_view_if_needed()
                if is_select:
                    # to the next option and back, as the slider goes right and back: the other
                    # controls are then timed at this one's default (a "constant" schedule, say,
                    # would make chapter 8's period do nothing)
                    if m % 2 == 0:
                        home = control.evaluate("el => el.selectedIndex")
                        target = home + 1 if home + 1 < n_options else home - 1
                    else:
                        target = home
                    control.select_option(index=target)
                else:
                    control.focus()
                    page.keyboard.press("ArrowRight" if m % 2 == 0 else "ArrowLeft")
                try:
                    page.wait_for_function("() => window.__ng.t1 !== null && window.__ng.t0 !== null",
                                           timeout=30_000, polling="raf")
                except Exception:
                    print(f"# {rel}: control {c}, move {m}: no new figure within 30 s (at the end of its range?)")
                    continue
                t0, t1 = page.evaluate("() => [window.__ng.t0, window.__ng.t1]")
                seconds.append((t1 - t0) / 1000)
                page.wait_for_timeout(150)      # a reader's pause between moves
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter files (default: every chapter with a widget)")
    parser.add_argument("--moves", type=int, default=6, help="moves of each control (default 6)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds to wait for Run All Cells")
    args = parser.parse_args()
    paths = args.chapters or sorted(p for p in glob.glob(os.path.join(ROOT, "chapters", "*.md"))
                                    if "ng.widgets.explore(" in open(p, encoding="utf-8").read())
    from playwright.sync_api import sync_playwright

    table = []
    with running_lab() as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        for path in paths:
            rel = os.path.relpath(os.path.abspath(path), ROOT)
            name = os.path.splitext(os.path.basename(rel))[0]
            page = context.new_page()
            t = time.monotonic()
            s = sorted(time_chapter(page, lab["base"], rel, args.moves, args.timeout))
            page.close()
            if not s:
                print(f"{name}: no update measured")
                continue
            med, p95 = statistics.median(s), s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
            print(f"{name}: {len(s)} updates, median {med:.3f} s, p95 {p95:.3f} s, max {s[-1]:.3f} s "
                  f"({time.monotonic() - t:.0f} s)", flush=True)
            table.append((name, len(s), med, p95))
        browser.close()
    w = max(len(r[0]) for r in table)
    print(f"\n| {'chapter'.ljust(w)} | updates | median (s) | p95 (s) | median <= {AIM_MEDIAN:g} s | p95 <= {AIM_P95:g} s |")
    print(f"|{'-' * (w + 2)}|---------|------------|---------|------------------|---------------|")
    for name, n, med, p95 in table:
        print(f"| {name.ljust(w)} | {n:7d} | {med:10.3f} | {p95:7.3f} | {'yes' if med <= AIM_MEDIAN else 'NO':>16} "
              f"| {'yes' if p95 <= AIM_P95 else 'NO':>13} |")
    print("\n(from the key press to the new figure painted, in JupyterLab with a live kernel, one thread)")


if __name__ == "__main__":
    sys.exit(main())
