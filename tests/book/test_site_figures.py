"""The website's interactive figures, as a reader uses them (issue: figures respond offline).

In the book build ``noisegeom.widgets.explore`` renders every interactive figure over a grid
of its controls' values; the page shows plain HTML controls and swaps in the precomputed
frame for the setting they show. These checks read the built site (`make test` builds it):

* static: every ``explore`` call in a chapter's source became one explorer on its page, with
  its default figure inline (visible without JavaScript), every frame it names shipped in
  ``_static/frames``, and a note saying that the website shows precomputed settings;
* in headless Chromium, offline: before the reader touches a control no frame is fetched and
  the page loads at most 6 MB; then every control of every figure is moved as a reader
  would (keyboard on sliders, every option of a select, a click on a checkbox) and after
  each move the figure on screen must be the frame computed at exactly the values the
  controls show, swapped in under 50 ms, with no console error. Screenshots of the first
  figure of each page after the moves go to ``_build/screenshots/figure-*.png``.
"""

from __future__ import annotations

import json
import statistics

import pytest
from bs4 import BeautifulSoup

from conftest import HTML, html_pages, offline_tab, source_of

PAGE_LOAD_BUDGET = 6 * 2**20
SWAP_BUDGET_MS = 50


def _explore_calls(page) -> int:
    src = source_of(page)
    return src.read_text(encoding="utf-8").count("ng.widgets.explore(") if src else 0


def _figure_pages() -> list:
    return [p for p in html_pages() if _explore_calls(p)]


FIGURE_PAGES = _figure_pages()
FIGURE_IDS = [str(p.relative_to(HTML)) for p in FIGURE_PAGES]


def _configs(page) -> list[dict]:
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    return [json.loads(div["data-ng-explorer"]) for div in soup.select("div.ng-explorer")]


def test_every_interactive_figure_is_precomputed_for_the_website(built_html):
    """One explorer per explore() call, its default figure inline, all its frames shipped."""
    assert FIGURE_PAGES, "no chapter calls ng.widgets.explore: the check would be empty"
    problems = []
    for page in FIGURE_PAGES:
        rel = page.relative_to(built_html)
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        boxes = soup.select("div.ng-explorer")
        if len(boxes) != _explore_calls(page):
            problems.append(f"{rel}: {len(boxes)} precomputed figures for {_explore_calls(page)} explore() calls "
                            "(a cached live-kernel output? run `make clean`)")
        for box in boxes:
            cfg = json.loads(box["data-ng-explorer"])
            img = box.find("img", class_="ng-explorer-figure")
            if img is None or not img["src"].startswith("data:image/"):
                problems.append(f"{rel}: explorer without an inline default figure")
            default = ",".join(str(c["default"]) for c in cfg["controls"])
            if cfg["frames"].get(default) != (img or {}).get("data-frame"):
                problems.append(f"{rel}: the inline figure is not the frame at the defaults")
            missing = [n for n in set(cfg["frames"].values()) if not (built_html / "_static" / "frames" / n).is_file()]
            if missing:
                problems.append(f"{rel}: {len(missing)} frames missing from _static/frames, e.g. {missing[0]}")
            inputs = box.select("[data-control]")
            if len(inputs) != len(cfg["controls"]):
                problems.append(f"{rel}: {len(inputs)} controls on the page, {len(cfg['controls'])} in the grid")
            for c in cfg["controls"]:
                if c["kind"] == "slider" and len(c["labels"]) < 5:
                    problems.append(f"{rel}: slider {c['name']} has {len(c['labels'])} values (< 5)")
            note = box.find("p", class_="ng-explorer-note")
            if note is None or "computed in advance" not in note.text or "Binder" not in note.text:
                problems.append(f"{rel}: the note on precomputed settings is missing")
    assert not problems, "\n".join(problems)


def test_site_ships_only_the_frames_its_pages_use(built_html):
    used = {n for page in html_pages() for cfg in _configs(page) for n in cfg["frames"].values()}
    shipped = {p.name for p in (built_html / "_static" / "frames").iterdir()}
    assert shipped == used, f"{len(shipped - used)} unused frames shipped, {len(used - shipped)} missing"
    size = sum((built_html / "_static" / "frames" / n).stat().st_size for n in shipped)
    print(f"{len(shipped)} frames, {size / 2**20:.1f} MiB")


# ----------------------------------------------------------------------------- browser

READ_STATE = """box => {
  const cfg = JSON.parse(box.dataset.ngExplorer);
  const shown = cfg.controls.map((c, i) => {
    const el = box.querySelector('[data-control="' + i + '"]');
    if (c.kind === 'checkbox') return {index: el.checked ? 1 : 0, text: null};
    if (c.kind === 'select') return {index: Number(el.value), text: el.options[el.selectedIndex].text};
    const out = el.parentElement.querySelector('output');
    return {index: Number(el.value), text: out ? out.textContent : null};
  });
  const img = box.querySelector('img.ng-explorer-figure');
  return {shown, frame: img.dataset.frame, src: img.getAttribute('src'),
          loaded: img.complete && img.naturalWidth > 0, swapMs: box.dataset.swapMs || null};
}"""

LOADED_BYTES = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  return {total: (nav ? nav.encodedBodySize : 0) + res.reduce((s, r) => s + (r.encodedBodySize || 0), 0),
          frames: res.filter(r => r.name.includes('/_static/frames/')).map(r => r.name)};
}"""


def _check_state(state, cfg, what) -> list[str]:
    """The figure on screen is the frame computed at exactly the values the controls show."""
    bad = []
    key = ",".join(str(s["index"]) for s in state["shown"])
    for c, s in zip(cfg["controls"], state["shown"]):
        if s["text"] is not None and s["text"] != c["labels"][s["index"]]:
            bad.append(f"{what}: {c['name']} shows {s['text']!r} but its value is {c['labels'][s['index']]!r}")
    expected = cfg["frames"].get(key)
    default = cfg["frames"][",".join(str(c["default"]) for c in cfg["controls"])]
    inline = state["src"].startswith("data:") and expected == default
    if expected is None:
        bad.append(f"{what}: the controls show a setting ({key}) that was not computed")
    elif state["frame"] != expected or not (state["src"].endswith("/" + expected) or inline):
        bad.append(f"{what}: figure {state['frame']} on screen, the frame for the shown setting is {expected}")
    elif not state["loaded"]:
        bad.append(f"{what}: the frame {expected} did not load")
    return bad


@pytest.mark.browser
@pytest.mark.parametrize("page", FIGURE_PAGES or [None], ids=FIGURE_IDS or ["no-figure-pages"])
def test_controls_change_the_figure(page, built_html, site_url, browser, screenshot_dir):
    """Move every control of every figure on the page, as a reader would."""
    if page is None:
        pytest.fail("no page with an interactive figure was built")
    rel = page.relative_to(built_html).as_posix()
    context, tab, blocked, problems = offline_tab(browser, site_url)
    failures, swaps, moves, changed = [], [], 0, 0
    try:
        tab.goto(f"{site_url}/{rel}", wait_until="load", timeout=60_000)
        # Loaded as a reader sees it: math typeset, every image (the inline figures) decoded.
        tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        tab.evaluate("() => MathJax.startup.promise")
        tab.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        tab.wait_for_timeout(500)
        before = tab.evaluate(LOADED_BYTES)
        if before["frames"]:
            failures.append(f"{len(before['frames'])} frames fetched before any control was touched")
        if before["total"] > PAGE_LOAD_BUDGET:
            failures.append(f"the page loads {before['total'] / 2**20:.1f} MiB before a control is touched "
                            f"(budget {PAGE_LOAD_BUDGET / 2**20:.0f} MiB)")
        boxes = tab.locator("div.ng-explorer.ng-ready")
        n_boxes = tab.locator("div.ng-explorer").count()
        if boxes.count() != n_boxes or n_boxes == 0:
            failures.append(f"{boxes.count()} of {n_boxes} figures initialised by explorer.js")
        for b in range(boxes.count()):
            box = boxes.nth(b)
            cfg = json.loads(box.get_attribute("data-ng-explorer"))
            box.scroll_into_view_if_needed()
            failures += _check_state(box.evaluate(READ_STATE), cfg, f"figure {b} at load")
            # Reaching for the controls fetches this figure's frames; let them arrive.
            box.locator(".ng-explorer-controls").hover()
            box.locator("xpath=.").and_(tab.locator("[data-preloaded=true]")).wait_for(timeout=30_000)
            for i, c in enumerate(cfg["controls"]):
                control = box.locator(f'[data-control="{i}"]')
                if c["kind"] == "slider":
                    control.focus()
                    n = len(c["labels"])
                    steps = [("Home", None)] + [("ArrowRight", None)] * (n - 1) + [("ArrowLeft", None)]
                    actions = [lambda k=k: control.press(k) for k, _ in steps]
                elif c["kind"] == "select":
                    order = list(range(len(c["labels"]))) + [c["default"]]
                    actions = [lambda j=j: control.select_option(str(j)) for j in order]
                else:
                    actions = [lambda: control.click(), lambda: control.click()]
                for act in actions:
                    prev = box.evaluate(READ_STATE)["frame"]
                    box.evaluate("b => { delete b.dataset.swapMs; }")
                    act()
                    moves += 1
                    tab.wait_for_function(
                        "([b, prev]) => { const i = b.querySelector('img.ng-explorer-figure');"
                        " return (i.dataset.frame === prev || b.dataset.swapMs) && i.complete; }",
                        arg=[box.element_handle(), prev], timeout=5_000)
                    state = box.evaluate(READ_STATE)
                    failures += _check_state(state, cfg, f"figure {b}, after moving {c['name']}")
                    if state["frame"] != prev:
                        changed += 1
                        if state["swapMs"] is not None:
                            swaps.append(float(state["swapMs"]))
            if b == 0:
                box.screenshot(path=str(screenshot_dir / ("figure-" + rel.replace("/", "__").removesuffix(".html")
                                                           + ".png")))
    finally:
        context.close()
    if blocked:
        failures.append("requests to other hosts: " + ", ".join(sorted(set(blocked))))
    if problems:
        failures.append("console errors / failed loads:\n  " + "\n  ".join(problems))
    if moves and not changed:
        failures.append(f"{moves} moves of the controls and the figure never changed")
    if swaps and max(swaps) > SWAP_BUDGET_MS:
        failures.append(f"figure swaps took up to {max(swaps):.0f} ms (median {statistics.median(swaps):.0f} ms; "
                        f"budget {SWAP_BUDGET_MS} ms)")
    print("swaps (ms):", [round(x) for x in swaps])
    print(f"{rel}: {moves} moves, {changed} figure changes, swap median "
          f"{statistics.median(swaps) if swaps else float('nan'):.1f} ms, max {max(swaps) if swaps else float('nan'):.1f} ms")
    assert not failures, f"{rel}:\n" + "\n".join(failures[:40])
