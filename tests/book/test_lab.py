"""Chapter 1 in JupyterLab, as a reader opens it from the Binder launch button.

JupyterLab (tests/book/lab_server.py) is started from the book's environment (``.venv``, which `make setup`
gives the Binder lab pins of .binder/requirements-lab.txt; set NOISEGEOM_LAB_VENV
to use another one), through ``.binder/start`` (as Binder does: one BLAS/torch
thread), with the settings ``.binder/postBuild`` installs (.binder/overrides.json
as the app-level overrides, here in a temporary ``--LabApp.app_settings_dir``
instead of inside the environment), in a throwaway copy of the working tree (git's
tracked and untracked-not-ignored files). Headless Chromium (Debian's, from the
``browser`` fixture) then opens ``/lab/tree/chapters/01_sgd_in_one_picture.md``,
the path of the launch link, with every non-localhost request blocked, and checks:

* no console error, no failed or version-mismatched lab extension (tolerated:
  jupyterlab-myst's transient "Cross reference target was not found" for labels the
  chapter itself defines, which it then resolves);
* the chapter opens as a notebook (not in the text editor), every Markdown cell
  rendered by jupyterlab-myst, no raw ``:::{`` / ``{prf:ref}`` markup, its
  exercises, solutions and proofs drawn as MyST blocks;
* solutions collapsed: dropdown solutions closed, the cells of a gated solution
  (``solution-start`` ... ``solution-end``) and ``hide-input`` cells collapsed (not yet
  the ``ng.widgets.explore(`` cells);
* Run -> Run All Cells executes every cell with no error or stderr output;
* saving the notebook (what autosave does) leaves the file byte-identical;
* the kernel runs with one torch thread (OMP_NUM_THREADS=1 from .binder/start);
* moving the widget's slider with the keyboard redraws the figure above it.

Screenshots go to _build/screenshots/lab-*.png (NOISEGEOM_SCREENSHOTS moves them);
the server log, if the test fails, to lab-server.log next to them. About 35 s on the
book's 2-core machine.

test_saving_in_lab_keeps_the_chapter[...] (no browser, instant) checks the same
"saving changes nothing" for every chapter, by doing what JupyterLab does on save.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import ROOT, offline_tab
from lab_server import LAB_VENV, TOKEN, LabError, running_lab

CHAPTER = "chapters/01_sgd_in_one_picture.md"
# Lab extension trouble that shows up as console warnings, not errors.
BAD_WARNINGS = re.compile(r"Unsatisfied version|does not satisfy|Failed to (create|load|set)|not found"
                          r"|Failed to fetch|shared module", re.I)


def _screenshots() -> Path:
    return Path(os.environ.get("NOISEGEOM_SCREENSHOTS", ROOT / "_build" / "screenshots"))


@pytest.fixture(scope="module")
def lab():
    """JupyterLab as Binder starts it (tests/book/lab_server.py), stopped after the module."""
    stack = contextlib.ExitStack()
    try:
        info = dict(stack.enter_context(running_lab()))
    except LabError as exc:
        pytest.fail(str(exc), pytrace=False)
    with stack:
        info["original"] = (info["work"] / CHAPTER).read_bytes()
        yield info
        if info.get("failed"):      # keep the server's log (the copy is removed with the server)
            _screenshots().mkdir(parents=True, exist_ok=True)
            shutil.copy(info["log"], _screenshots() / "lab-server.log")


def _source_cells(path: Path):
    """The chapter's cells as JupyterLab gets them from jupytext (same order as the DOM).

    ``gated``: the cell lies inside a gated solution (after the cell with ``solution-start``,
    before the one with ``solution-end``); ``text_before_end``: solution text that precedes
    ``solution-end`` in the same Markdown cell (shown openly in Lab).
    """
    import jupytext

    nb = jupytext.read(path, fmt="md:myst")
    cells, inside = [], False
    for i, c in enumerate(nb.cells):
        src = c.source
        starts, ends = "{solution-start}" in src, "{solution-end}" in src
        before_end = src[:src.find("{solution-end}")].rpartition("\n")[0] if ends else ""
        cells.append({
            "index": i, "type": c.cell_type, "source": src,
            "gated": inside and not ends,
            "text_before_end": before_end.strip() if ends and inside and not starts else "",
            "hide_input": "hide-input" in c.metadata.get("tags", []),
            "explore": "ng.widgets.explore(" in src,
        })
        if starts and not ends:
            inside = True
        if ends:
            inside = False
    return cells


CELLS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]
  .map(c => ({
    index: Number(c.dataset.windowedListIndex),
    markdown: c.classList.contains('jp-MarkdownCell'),
    collapsed: !!c.querySelector('.jp-InputPlaceholder'),
    myst: !!c.querySelector('.myst'),
    prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
    text: c.querySelector('.myst') ? c.querySelector('.myst').textContent : '',
    // rendered text outside collapsed <details> (dropdown solutions and admonitions)
    openText: (() => { const m = c.querySelector('.myst'); if (!m) return '';
                       const k = m.cloneNode(true); k.querySelectorAll('details').forEach(d => d.remove());
                       return k.textContent.trim(); })(),
    errors: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
              .map(e => e.textContent.slice(0, 800)),
  }))"""

SOLUTIONS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel .myst details')]
  .map(d => {
    // in the cell of a gated solution's start, what follows it is solution text: it must be collapsed too
    let after = '';
    if (/^Start of Solution/.test((d.querySelector('summary') || d).textContent.trim()))
      for (let e = d.nextElementSibling; e; e = e.nextElementSibling)
        if (e.tagName !== 'DETAILS') after += e.textContent;
    return {title: (d.querySelector('summary') || d).textContent.trim().slice(0, 80), open: d.open,
            after: after.trim()};
  })"""

# The first figure (PNG) in the outputs of the code cell with this index: its src, re-read each time
# (the widget's update replaces the output, and with it the img element).
FIGURE_SRC_JS = """i => { const c = document.querySelector(`.jp-Notebook .jp-Cell[data-windowed-list-index="${i}"]`);
  const img = c && c.querySelector('.jp-OutputArea-output img'); return img ? img.getAttribute('src') : null; }"""


@pytest.mark.browser
def test_chapter_in_jupyterlab(lab, browser):
    screenshot_dir = _screenshots()
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    base, work = lab["base"], lab["work"]
    lab["failed"] = True
    cells_src = _source_cells(work / CHAPTER)
    source_text = (work / CHAPTER).read_text()
    context, page, blocked, console = offline_tab(
        browser, base, viewport=(1400, 1000), also_allow=("ws://127.0.0.1",), http_errors=False,
        keep_console=lambda m: m.type == "error" or (m.type == "warning" and BAD_WARNINGS.search(m.text)))
    failures: list[str] = []

    def check(cond, message):
        if not cond:
            failures.append(message)
        return cond

    def shot(name):
        page.screenshot(path=str(screenshot_dir / f"lab-{name}.png"))

    def scroll_to_cell(index):
        page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{index}"]').scroll_into_view_if_needed()

    try:
        # 1. the launch link's path --------------------------------------------------------
        page.goto(f"{base}/lab/tree/{CHAPTER}?token={TOKEN}", wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell, .jp-FileEditor", timeout=90_000)
        editor = page.locator(".jp-FileEditor:visible").count()
        if not check(editor == 0 and page.locator(".jp-NotebookPanel:visible").count() == 1,
                     f"{CHAPTER} opened in the text editor, not as a notebook (is the jupytext lab extension "
                     f"loaded? is .binder/overrides.json applied?); console:\n  " + "\n  ".join(console)):
            shot("open")
            pytest.fail("\n".join(failures), pytrace=False)
        n_cells = len(cells_src)
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length >= n",
            arg=n_cells, timeout=30_000)
        # every Markdown cell rendered by jupyterlab-myst (collapsed ones have no view)
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-Notebook .jp-MarkdownCell')]
                 .every(c => c.querySelector('.myst, .jp-InputPlaceholder'))""", timeout=30_000)
        page.wait_for_timeout(1500)
        shot("open")

        # 2. MyST rendered, nothing raw ------------------------------------------------------
        dom = {c["index"]: c for c in page.evaluate(CELLS_JS)}
        check(len(dom) == n_cells, f"{len(dom)} cells in the notebook, jupytext reads {n_cells} from {CHAPTER}")
        source = source_text
        for c in cells_src:
            d = dom.get(c["index"])
            if d is None or c["type"] != "markdown" or d["collapsed"]:
                continue
            check(d["myst"], f"markdown cell {c['index']} is not rendered by jupyterlab-myst: "
                             f"{c['source'][:80]!r}")
            # ("for instructors:" is the comment line of every exercise: never shown to students)
            for raw in (":::{", "```{", "{prf:ref}", "{cite}", "{solution", "{exercise", "for instructors:"):
                check(raw not in d["text"], f"markdown cell {c['index']}: raw MyST markup {raw!r} in the "
                                            f"rendered text: ...{d['text'][max(0, d['text'].find(raw) - 60):][:160]!r}")
        counts = page.evaluate("""() => ({
            exercise: [...document.querySelectorAll('.jp-Notebook aside.myst-exercise')]
                        .filter(e => /^Exercise/.test(e.textContent.trim())).length,
            solution: document.querySelectorAll('.jp-Notebook details.myst-exercise').length,
            proof: document.querySelectorAll('.jp-Notebook aside.myst-proof').length})""")
        n_ex = len(re.findall(r"^:::\{exercise\}", source, re.M))
        n_sol = len(re.findall(r"^:::\{solution(-start)?\}", source, re.M))
        n_prf = len(re.findall(r"^:::\{prf:", source, re.M))
        check(counts["exercise"] == n_ex, f"{counts['exercise']} exercise blocks rendered, {n_ex} in the source")
        check(counts["solution"] == n_sol,
              f"{counts['solution']} solution blocks rendered as collapsible <details>, {n_sol} in the source")
        check(counts["proof"] == n_prf, f"{counts['proof']} prf: blocks rendered, {n_prf} in the source")

        # 3. solutions collapsed -----------------------------------------------------------
        for s in page.evaluate(SOLUTIONS_JS):
            check(not s["open"], f"solution {s['title']!r} is open")
            check(not s["after"], f"{s['title']!r}: the solution text after solution-start is shown openly "
                                  f"in Lab: {s['after'][:60]!r}")
        for c in cells_src:
            d = dom.get(c["index"], {})
            if c["gated"] and c["type"] == "code":
                check(d.get("collapsed"), f"code cell {c['index']} of a gated solution (solution-start ... "
                                          f"solution-end) shows its code in Lab: {c['source'][:60]!r} (give it "
                                          "`jupyter: {source_hidden: true}` metadata)")
            elif c["gated"]:
                check(not d.get("openText"), f"markdown cell {c['index']} inside a gated solution is shown "
                                             f"openly in Lab: {d.get('openText', '')[:60]!r} (move it "
                                             "into the cell of solution-start, after the directive: "
                                             "jupyterlab-myst folds it into the collapsed solution)")
            elif c["text_before_end"]:
                failures.append(f"solution text before solution-end in markdown cell {c['index']} is shown "
                                f"openly in Lab: {c['text_before_end'][:60]!r} (move it into "
                                "the cell of solution-start, after the directive: jupyterlab-myst folds "
                                "it into the collapsed solution)")
            elif c["hide_input"] and not c["explore"]:
                check(d.get("collapsed"), f"hide-input cell {c['index']} shows its code in Lab: "
                                          f"{c['source'][:60]!r} (give it `jupyter: {{source_hidden: true}}`)")
        page.locator(".jp-Notebook h2", has_text="Exercises").first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        shot("solutions")

        # 4. Run -> Run All Cells ------------------------------------------------------------
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells")).first.click()
        code_idx = [c["index"] for c in cells_src if c["type"] == "code"]
        shown_idx = [i for i in code_idx if not dom.get(i, {}).get("collapsed")]
        try:
            page.wait_for_function(
                """idx => {
                    const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
                    const prompt = i => { const c = cells.find(c => Number(c.dataset.windowedListIndex) === i);
                        return c ? (c.querySelector('.jp-InputPrompt') || {}).textContent || '' : ''; };
                    const err = document.querySelector('.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]');
                    const busy = idx.some(i => prompt(i).includes('*'));
                    return (err && !busy) || idx.every(i => /\\[\\d+\\]/.test(prompt(i)));
                }""", arg=shown_idx, timeout=150_000, polling=500)
        except Exception:
            failures.append("Run All Cells did not finish within 150 s")
        dom = {c["index"]: c for c in page.evaluate(CELLS_JS)}
        for i in shown_idx:
            d = dom.get(i, {})
            check(re.search(r"\[\d+\]", d.get("prompt", "")), f"code cell {i} was not executed "
                                                              f"(prompt {d.get('prompt')!r})")
            for err in d.get("errors", []):
                failures.append(f"code cell {i}: error / stderr output:\n    {err}")

        # 5. saving (autosave) leaves the file as it is ---------------------------------------
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        try:
            page.wait_for_function(
                "() => !document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty')",
                timeout=15_000)
        except Exception:
            failures.append("the notebook still shows unsaved changes 15 s after Ctrl+S")
        page.wait_for_timeout(500)
        now = (work / CHAPTER).read_bytes()
        if now != lab["original"]:
            diff = "".join(difflib.unified_diff(lab["original"].decode().splitlines(True),
                                                now.decode().splitlines(True), "before", "after saving", n=1))
            failures.append(f"opening, running and saving {CHAPTER} in Lab changed the file on disk "
                            f"(jupytext.toml's filters, or cell metadata Lab rewrites?):\n{diff[:3000]}")

        # 6. the widget: move the slider, the figure above it changes -------------------------
        explore = [c["index"] for c in cells_src if c["explore"]]
        if check(explore, f"no ng.widgets.explore( cell in {CHAPTER}"):
            cell = page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{explore[0]}"]')
            cell.scroll_into_view_if_needed()
            slider = cell.locator(".widget-slider").first
            try:
                slider.wait_for(timeout=30_000)
                before = page.evaluate(FIGURE_SRC_JS, explore[0])
                check(before, f"no figure (img) in the outputs of the widget cell {explore[0]}")
                readout = slider.locator(".widget-readout")
                value_before = readout.text_content() if readout.count() else readout.input_value()
                handle = slider.locator(".noUi-handle").first
                handle.focus()
                page.keyboard.press("ArrowRight")
                page.wait_for_function(f"src => ({FIGURE_SRC_JS})({explore[0]}) !== src", arg=before,
                                       timeout=30_000)
                cell.scroll_into_view_if_needed()
                value_after = readout.text_content()
                check(value_after != value_before,
                      f"the slider's readout did not change ({value_before!r} -> {value_after!r})")
            except Exception as exc:  # noqa: BLE001 - reported as a test failure below
                failures.append(f"widget in cell {explore[0]}: moving the slider with the keyboard did not "
                                f"redraw the figure above it: {str(exc).splitlines()[0]}")
            page.wait_for_timeout(300)
            shot("widget")

        # 7. every code cell ran once without an exception (collapsed cells too); one thread ------
        scroll_to_cell(n_cells - 1)
        page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{n_cells - 1}"]').click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.press("Enter")
        page.keyboard.type("import os, sys, torch; print('threads', torch.get_num_threads(), "
                           "os.environ.get('OMP_NUM_THREADS'), 'executed', len(In) - 2, "
                           "'error', repr(getattr(sys, 'last_value', None)))")
        page.keyboard.press("Shift+Enter")
        probe = page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{n_cells}"] .jp-OutputArea-output')
        try:
            probe.first.wait_for(timeout=60_000)
            out = probe.first.text_content().strip()
            m = re.fullmatch(r"threads (\S+) (\S+) executed (\d+) error (.*)", out)
            if check(m, f"unexpected output of the probe cell: {out!r}"):
                check(m[1] == "1" and m[2] == "1",
                      f"the kernel does not run single-threaded: torch.get_num_threads() = {m[1]}, "
                      f"OMP_NUM_THREADS = {m[2]} (.binder/start should export OMP_NUM_THREADS=1)")
                check(int(m[3]) == len(code_idx), f"{m[3]} code cells executed by Run All Cells, the chapter "
                                                  f"has {len(code_idx)}")
                check(m[4] == "None", f"a cell raised an exception during Run All Cells: {m[4]}")
        except Exception as exc:  # noqa: BLE001
            failures.append(f"the probe cell after the last cell gave no output: {str(exc).splitlines()[0]}")
    finally:
        try:
            shot("last")
        finally:
            context.close()

    if blocked:
        failures.append("requests to other hosts (blocked):\n  " + "\n  ".join(sorted(set(blocked))))
    # jupyterlab-myst 2.7.0 logs "Cross reference target was not found: <label>" (console.error)
    # while it re-renders the notebook cell by cell (on Run All, or the first Shift+Enter), also
    # for targets in the same notebook, which it then resolves: the rendered link is right.
    # Those are tolerated for labels this chapter defines; any other label (e.g. one in another
    # chapter, which Lab cannot resolve) and every other console error fails the test.
    own_labels = set(re.findall(r"^:label:\s*(\S+)", source_text, re.M)) | set(
        re.findall(r"^\(([\w-]+)\)=", source_text, re.M))

    def tolerated(msg: str) -> bool:
        if not msg.startswith("console.error: Cross reference target was not found:"):
            return False
        labels = re.findall(r"Cross reference target was not found: (\S+)", msg)
        return bool(labels) and set(labels) <= own_labels

    console = [m for m in console if not tolerated(m)]
    if console:
        failures.append("console errors / lab extension warnings:\n  " + "\n  ".join(console))
    elapsed = time.monotonic() - t_start
    check(elapsed < 180, f"the Lab test took {elapsed:.0f} s (budget: 3 minutes)")
    assert not failures, (f"{CHAPTER} in JupyterLab ({LAB_VENV}; screenshots: {screenshot_dir}/lab-*.png):\n"
                          + "\n".join(failures))
    lab["failed"] = False


def _chapters() -> list[Path]:
    return sorted(p for p in (ROOT / "chapters").glob("*.md") if "{code-cell}" in p.read_text())


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_saving_in_lab_keeps_the_chapter(path):
    """What JupyterLab writes back through jupytext when it saves a chapter is the file itself.

    JupyterLab sets the notebook's kernelspec from the running kernel (ipykernel's
    ``python3``: display name "Python 3 (ipykernel)") and adds ``language_info``; jupytext
    then writes the header with jupytext.toml's filter. Cell metadata that Lab does not keep
    as it is would be rewritten too: ``jupyter.outputs_hidden`` (Lab turns it into
    ``collapsed``, which jupytext drops, and shows outputs again when the cell runs) and
    ``jupyter.source_hidden`` on Markdown cells (running a Markdown cell shows it again).
    The browser test checks chapter 1 in a real JupyterLab; this checks every chapter.
    """
    import jupytext
    from jupytext.config import load_jupytext_configuration_file

    text = path.read_text(encoding="utf-8")
    config = load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))
    nb = jupytext.reads(text, fmt="md:myst")
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11", "mimetype": "text/x-python"}
    saved = jupytext.writes(nb, fmt="md:myst", config=config)
    if saved != text:
        diff = "".join(difflib.unified_diff(text.splitlines(True), saved.splitlines(True),
                                            "in git", "saved by JupyterLab", n=1))
        pytest.fail(f"JupyterLab would rewrite {path.name} when it saves it:\n{diff[:3000]}", pytrace=False)
    bad = []
    for i, cell in enumerate(nb.cells):
        jup = cell.metadata.get("jupyter", {})
        if cell.cell_type == "code" and set(jup) - {"source_hidden"}:
            bad.append(f"code cell {i}: jupyter metadata {sorted(jup)} (only source_hidden survives Lab)")
        if cell.cell_type == "markdown" and jup:
            bad.append(f"markdown cell {i}: jupyter metadata {sorted(jup)} (Lab drops it when the cell runs)")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


# ------------------------------------------------------ references and citations in JupyterLab

LINK = re.compile(r"\[([^\[\]]+)\]\(([^)\s]+)\)")
NAMED = re.compile(r"^(Theorem|Proposition|Lemma|Corollary|Definition|Exercise) \d+\.\d+$")

# The rendered Markdown cells now in the DOM: index -> (text, links)
RENDERED_JS = """() => Object.fromEntries([...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-MarkdownCell')]
  .filter(c => c.querySelector('.myst'))
  .map(c => [c.dataset.windowedListIndex, {
      text: c.querySelector('.myst').textContent,
      links: [...c.querySelectorAll('.myst a')].map(a => ({text: a.textContent.trim(), href: a.getAttribute('href') || ''}))}]))"""


def _open_rendered(page, base: str, rel: str) -> None:
    """Open a chapter through its launch-link path and wait until jupyterlab-myst has rendered
    the Markdown cells on screen."""
    page.goto(f"{base}/lab/tree/{rel}?reset&token={TOKEN}", wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    page.wait_for_function(
        """() => { const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell')];
                   return cells.length > 0 && cells.every(c => c.querySelector('.myst, .jp-InputPlaceholder')); }""",
        timeout=60_000)
    page.wait_for_timeout(500)


def _read_whole_notebook(page, n_markdown: int) -> dict:
    """Scroll through the notebook as a reader does (JupyterLab draws only the cells near the
    screen) and collect every rendered Markdown cell: index -> {text, links}."""
    seen, quiet = {}, 0
    for _ in range(600):
        before = len(seen)
        seen.update(page.evaluate(RENDERED_JS))
        if len(seen) >= n_markdown:
            break
        at_end = page.evaluate("""() => { const o = document.querySelector(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
            const end = o.scrollTop + o.clientHeight >= o.scrollHeight - 2;
            o.scrollTop += o.clientHeight * 0.5; return end; }""")
        quiet = quiet + 1 if at_end and len(seen) == before else 0
        if quiet >= 8:              # at the end, and nothing new drawn for a while
            break
        page.wait_for_timeout(300)
    return seen


def _plain_text(text: str) -> str:
    """Link text as rendered text compares: one space for any white space, straight quotes
    (jupyterlab-myst typesets ' as ’)."""
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())


@pytest.mark.browser
def test_links_between_chapters_in_jupyterlab(lab, browser):
    """Every chapter, opened in JupyterLab as from the launch link: its references to other
    chapters' statements and exercises are links with the statement's name that open that
    chapter as a notebook, its citations are links to the works, its reference list is shown,
    nothing is a raw label, and jupyterlab-myst reports no unresolved reference."""
    from pybtex.database import parse_file

    titles = {k: e.fields["title"] for k, e in parse_file(str(ROOT / "references.bib")).entries.items()}
    from portable_links import _normalize, work_addresses   # _ext/ (pyproject.toml: pythonpath)

    addresses = work_addresses([ROOT / "references.bib"])
    context, page, blocked, console = offline_tab(browser, lab["base"], viewport=(1400, 1000),
                                                  also_allow=("ws://127.0.0.1",), http_errors=False)
    failures, opened = [], 0
    try:
        numbered = [p for p in _chapters() if p.name[0].isdigit()]
        for path in numbered:
            rel = f"chapters/{path.name}"
            text = path.read_text(encoding="utf-8")
            own = set(re.findall(r"^\s*:label:\s*(\S+)", text, re.M)) | set(re.findall(r"^\(([\w-]+)\)=", text, re.M))
            console.clear()
            _open_rendered(page, lab["base"], rel)
            n_markdown = sum(c["type"] == "markdown" for c in _source_cells(path))
            cells = _read_whole_notebook(page, n_markdown)
            if len(cells) < n_markdown:
                failures.append(f"{path.name}: {len(cells)} of {n_markdown} Markdown cells rendered")
            anchors = [a for c in cells.values() for a in c["links"]]
            rendered = " ".join(c["text"] for c in cells.values())
            for raw in ("{cite", "{prf:ref}", "{numref}", "{ref}"):
                if raw in rendered:
                    failures.append(f"{path.name}: raw {raw!r} in the rendered text")
            unresolved = {label for m in console for label in re.findall(r"target was not found: (\S+)", m)} - own
            if unresolved:
                failures.append(f"{path.name}: jupyterlab-myst cannot resolve {sorted(unresolved)}")
            body = text.split("% references: generated")[0]
            nb_links = [(t, u) for t, u in LINK.findall(body)]
            for t, u in nb_links:
                t = _plain_text(t)
                target = u.split("#")[0]
                if re.fullmatch(r"\d\d_\w+\.md", target):           # another chapter
                    ok = any(_plain_text(a["text"]) == t and f"/chapters/{target}" in a["href"]
                             for a in anchors)
                    if not ok:
                        failures.append(f"{path.name}: no link {t!r} to {target} in Lab")
                elif _normalize(u) in addresses:                        # a citation
                    if not any(_plain_text(a["text"]) == t and a["href"] == u for a in anchors):
                        failures.append(f"{path.name}: no citation link {t!r} -> {u} in Lab")
            cited = {addresses[_normalize(u)] for _, u in nb_links if _normalize(u) in addresses}
            cited |= {u.split("#")[1] for _, u in nb_links if u.startswith("references.md#")}
            listed = " ".join(rendered.lower().split())
            missing = [k for k in cited
                       if " ".join(re.sub(r"[{}]", "", titles[k]).lower().split())[:40] not in listed]
            if missing:
                failures.append(f"{path.name}: the reference list in Lab lacks {missing}")
            opened += 1
        # a reader follows a link to another chapter's statement
        _open_rendered(page, lab["base"], "chapters/03_measuring_noise_geometry.md")
        name = None
        # jupyterlab-myst may re-render the cell under the pointer, and a click on the old
        # element is lost: click again until chapter 2's tab is the current one
        for _ in range(5):
            try:
                link = page.locator(".jp-Notebook .myst a", has_text=NAMED).first
                name = link.text_content(timeout=10_000)
                link.click(timeout=10_000)
                page.wait_for_function(
                    """() => [...document.querySelectorAll('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current')]
                             .some(t => /^02_minibatch_noise\\.md/.test(t.textContent))""", timeout=15_000)
                break
            except Exception:  # noqa: BLE001
                page.wait_for_timeout(1000)
        if page.locator(".jp-FileEditor:visible").count() or page.locator(".jp-NotebookPanel:visible").count() != 1:
            failures.append(f"following {name!r} in chapter 3 did not open chapter 2 as a notebook")
        page.wait_for_function("""() => document.querySelector(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell .myst h1')""", timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(_screenshots() / "lab-followed-link.png"))
    finally:
        context.close()
    assert opened == len(numbered) >= 9 and not failures, "\n".join(failures)
