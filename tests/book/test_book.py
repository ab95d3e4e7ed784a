"""Checks of the built book: the strict build, the offline site in a real browser, Binder pins.

`make test` builds the book once with `jupyter-book build . -W -n --keep-going`
(scripts/build_book.sh) and then runs pytest; these tests read that build.

* test_build_succeeded: the strict build exited 0 (else: the warnings/errors).
* test_page_in_browser[...]: every page opened in headless Chromium with all
  non-localhost requests blocked: math typeset, proof/exercise/solution
  blocks rendered, every image loaded, no console errors; a screenshot per
  page in _build/screenshots/.
* static checks of the HTML (no remote script/CSS, no ipywidgets left on the
  site, size budget) and of the Binder requirements.

The interactive figures are checked in tests/book/test_site_figures.py.
"""

from __future__ import annotations

import json

import re
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import HTML, ROOT, html_pages, offline_tab, source_of

PAGES = html_pages()
PAGE_IDS = [str(p.relative_to(HTML)) for p in PAGES]
SITE_BUDGET_MB = 40

WIDGET_MIME = re.compile(r"application/vnd\.jupyter\.widget-(view|state)\+json")


# --------------------------------------------------------------------- build

def _log_digest(log: str, limit: int = 80) -> str:
    """The lines of a build log that explain a failure."""
    keys = ("WARNING", "ERROR", "CRITICAL", "Executing notebook failed", "Traceback",
            "Error", "Exception", "---->")
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)          # drop terminal colours
    lines = [line for line in log.splitlines() if any(k in line for k in keys)]
    lines = [line for line in lines if "Kernel is running over TCP" not in line]
    return "\n".join(lines[-limit:]) or "\n".join(log.splitlines()[-limit:])


def test_build_succeeded(build_status):
    """The strict build (-W -n --keep-going, cells executed) exited 0."""
    if build_status["rc"] != 0:
        pytest.fail(
            f"the strict book build failed (exit {build_status['rc']}). Every warning "
            "(broken reference, stderr output, ...) and every failing cell fails it. "
            "From _build/build.log:\n" + _log_digest(build_status["log"]),
            pytrace=False,
        )


# ----------------------------------------------------------- static HTML

def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


REMOTE = re.compile(r"^(https?:)?//", re.I)


def test_no_remote_scripts_or_styles(built_html):
    """No page loads a script, stylesheet, font, image or frame from another host."""
    bad = []
    for page in html_pages():
        soup = _soup(page)
        refs = [("script", t.get("src")) for t in soup.find_all("script", src=True)]
        refs += [("link", t.get("href")) for t in soup.find_all("link", href=True)
                 if set(t.get("rel") or []) & {"stylesheet", "preload", "modulepreload", "icon"}]
        refs += [(t.name, t.get("src")) for t in soup.find_all(["img", "iframe", "source", "video", "audio", "embed"])
                 if t.get("src")]
        for style in soup.find_all("style"):
            refs += [("style", u) for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", style.text)]
        bad += [f"{page.relative_to(built_html)}: <{tag}> {url}" for tag, url in refs if REMOTE.match(url or "")]
    for css in (built_html / "_static").rglob("*.css"):
        for url in re.findall(r"(?:url\(|@import\s+)\s*['\"]?((?:https?:)?//[^'\")\s]+)", css.read_text(errors="replace")):
            bad.append(f"{css.relative_to(built_html)}: {url}")
    assert not bad, "remote assets referenced (the site must work offline):\n" + "\n".join(bad)


def test_offline_assets_are_served(built_html):
    """MathJax and the figures' script are in _static, and pages point at them."""
    static = built_html / "_static"
    assert (static / "mathjax" / "tex-chtml-full.js").is_file()
    assert list((static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (static / "explorer.js").is_file() and (static / "explorer.css").is_file()
    for page in html_pages():
        html = page.read_text(encoding="utf-8")
        srcs = [t.get("src").split("?")[0] for t in _soup(page).find_all("script", src=True)]
        if 'class="math' in html:
            assert any(s.endswith("_static/mathjax/tex-chtml-full.js") for s in srcs), page
        if "ng-explorer" in html:
            assert any(s.endswith("_static/explorer.js") for s in srcs), page


def test_no_ipywidgets_on_the_website(built_html):
    """A static site has no kernel: an ipywidgets control there would move and change nothing.
    The interactive figures are precomputed instead (tests/book/test_site_figures.py)."""
    dead = [str(p.relative_to(built_html)) for p in html_pages() if WIDGET_MIME.search(p.read_text(encoding="utf-8"))]
    assert not dead, "pages with ipywidgets (dead controls without a kernel): " + ", ".join(dead)


def test_notebook_downloads_have_outputs(built_html):
    """A chapter downloaded as .ipynb from the website opens with its outputs, also when the
    build took it from the execution cache (_ext/notebook_downloads.py)."""
    import jupytext

    problems = []
    for source in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md")):
        expected = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
        if not expected:
            continue                     # a page without code (the preface) is not a notebook
        download = built_html / "_sources" / "chapters" / f"{source.stem}.ipynb"
        if not download.is_file():
            problems.append(f"{download.name}: no download")
            continue
        cells = json.loads(download.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        with_outputs = sum(1 for c in code if c.get("outputs"))
        if len(code) != len(expected):
            problems.append(f"{download.name}: {len(code)} code cells, the chapter has {len(expected)}")
        # every chapter prints or plots in most of its code cells; a cached chapter
        # written without its outputs has none
        if with_outputs < len(code) // 3:
            problems.append(f"{download.name}: outputs in only {with_outputs} of {len(code)} code cells")
    assert not problems, "\n".join(problems)


def test_site_size_budget(built_html):
    """Ship only what is used: the whole site stays small."""
    size = sum(p.stat().st_size for p in built_html.rglob("*") if p.is_file())
    print(f"_build/html: {size / 2**20:.1f} MiB")
    assert size < SITE_BUDGET_MB * 2**20, f"_build/html is {size / 2**20:.1f} MiB > {SITE_BUDGET_MB} MiB"


# ----------------------------------------------------------- the browser

def _expected_blocks(page: Path) -> dict[str, int]:
    """How many proof / exercise / solution blocks the page's source declares."""
    src = source_of(page)
    if src is None:
        return {}
    text = src.read_text(encoding="utf-8")
    directive = r"^\s*(?:`{3,}|:{3,})\s*\{%s\}"
    return {
        "proof": len(re.findall(directive % r"prf:\w+", text, re.M)),
        "exercise": len(re.findall(directive % r"exercise(?:-start)?", text, re.M)),
        "solution": len(re.findall(directive % r"solution(?:-start)?", text, re.M)),
    }


CHECK_MATH = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('span.math, div.math')) {
    if (!el.querySelector('mjx-container')) bad.push('not typeset: ' + el.textContent.slice(0, 60));
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    if (node.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight')) continue;
    const t = node.textContent;
    if (t.includes('$$') || t.includes('\\\\(') || t.includes('\\\\[') || /\\$\\\\[a-zA-Z]/.test(t)) {
      bad.push('raw TeX left: ' + t.trim().slice(0, 60));
    }
  }
  return bad;
}"""

CHECK_IMAGES = """() => Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute('src'))"""

CHECK_BLOCKS = """() => {
  const info = {};
  for (const kind of ['proof', 'exercise', 'solution']) {
    const blocks = Array.from(document.querySelectorAll('div.' + kind + '.admonition'));
    info[kind] = {
      count: blocks.length,
      untitled: blocks.filter(b => !((b.querySelector('.admonition-title') || {}).textContent
                                     || /^\\s*Proof\\b/.test(b.textContent))).length,
      invisible: blocks.filter(b => b.getBoundingClientRect().height === 0).length,
    };
  }
  return info;
}"""

CHECK_RAW_DIRECTIVES = """() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const bad = [];
  let node;
  while ((node = walker.nextNode())) {
    if (node.parentElement.closest('pre, code, script, style, .highlight')) continue;
    const m = node.textContent.match(/(:::\\{|```\\{|\\{prf:|\\{cite\\}|\\{exercise|\\{solution|\\{numref\\}|\\{ref\\})/);
    if (m) bad.push(node.textContent.trim().slice(0, 80));
  }
  return bad;
}"""

OPEN_DROPDOWNS = """() => {
  // Dropdown solutions start closed; clicking the title must open them.
  const bad = [];
  for (const box of document.querySelectorAll('div.dropdown.admonition')) {
    if (!box.classList.contains('toggle-hidden')) { bad.push(box.id + ': not closed initially'); continue; }
    box.querySelector('.admonition-title').click();
    if (box.classList.contains('toggle-hidden')) bad.push(box.id + ': did not open on click');
  }
  return bad;
}"""

@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES or [None], ids=PAGE_IDS or ["no-pages-built"])
def test_page_in_browser(page, built_html, site_url, browser, screenshot_dir):
    """Open the page offline in Chromium and check what a reader sees."""
    if page is None:
        pytest.fail("no HTML pages in _build/html")
    rel = page.relative_to(built_html).as_posix()
    context, tab, blocked, problems = offline_tab(browser, site_url)
    try:
        tab.goto(f"{site_url}/{rel}", wait_until="load", timeout=60_000)
        if tab.evaluate("() => !!document.querySelector('span.math, div.math')"):
            tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                  timeout=30_000)
            tab.evaluate("() => MathJax.startup.promise")
        # Scroll through the page so that nothing waits for visibility, then settle: every image
        # decoded and every font loaded. (Not Playwright's "networkidle", which on this machine
        # now and then never came for a page whose requests had all finished.)
        tab.evaluate("async () => { for (let y = 0; y < document.body.scrollHeight; y += 800) {"
                     " window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20)); } window.scrollTo(0, 0); }")
        tab.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
        tab.evaluate("() => document.fonts.ready.then(() => true)")
        tab.wait_for_timeout(300)

        math_bad = tab.evaluate(CHECK_MATH)
        images_bad = tab.evaluate(CHECK_IMAGES)
        raw_bad = tab.evaluate(CHECK_RAW_DIRECTIVES)
        blocks = tab.evaluate(CHECK_BLOCKS)
        dropdowns_bad = tab.evaluate(OPEN_DROPDOWNS)   # the screenshot shows them open
        tab.wait_for_timeout(300)
        shot = screenshot_dir / (rel.replace("/", "__").removesuffix(".html") + ".png")
        tab.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()

    failures = []
    if blocked:
        failures.append("requests to other hosts (blocked; the site must be self-contained):\n  "
                        + "\n  ".join(sorted(set(blocked))))
    if problems:
        failures.append("console errors / failed loads:\n  " + "\n  ".join(problems))
    if math_bad:
        failures.append("math not typeset by MathJax:\n  " + "\n  ".join(math_bad[:10]))
    if images_bad:
        failures.append("images that did not load:\n  " + "\n  ".join(map(str, images_bad)))
    if raw_bad:
        failures.append("unrendered MyST markup in the page text:\n  " + "\n  ".join(raw_bad[:10]))
    if dropdowns_bad:
        failures.append("dropdowns (solutions):\n  " + "\n  ".join(dropdowns_bad))
    for kind, expected in _expected_blocks(page).items():
        got = blocks[kind]
        if got["count"] != expected:
            failures.append(f"{kind} blocks: {got['count']} rendered, {expected} in the source")
        if got["untitled"] or got["invisible"]:
            failures.append(f"{kind} blocks: {got['untitled']} without title, {got['invisible']} invisible")
    assert not failures, f"{rel} (screenshot: {shot.relative_to(ROOT)}):\n" + "\n".join(failures)


# ---------------------------------------------------------------- binder

def _pins(path: Path) -> dict[str, Requirement]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = req
    return pins


def _exact(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not an exact pin"
    return Version(specs[0].version)


def test_requirements_are_exact_pins():
    pins = _pins(ROOT / "requirements.txt")
    for req in pins.values():
        _exact(req)
    assert str(pins["torch"].specifier) == "==2.13.0"
    assert str(pins["jupyter-book"].specifier) == "==1.0.4.post1"
    for name in ("sphinx-proof", "sphinx-exercise", "jupytext", "ipywidgets", "matplotlib", "numpy",
                 "pytest", "playwright", "sphinx-mathjax-offline", "sphinxcontrib-bibtex"):
        assert name in pins, f"{name} missing from requirements.txt"


def test_binder_requirements_agree_with_requirements_txt():
    """Binder installs the same pins (torch as +cpu from the PyTorch index), plus jupyterlab-myst."""
    book = _pins(ROOT / "requirements.txt")
    binder = _pins(ROOT / ".binder" / "requirements.txt")
    mismatched = []
    for name, req in book.items():
        if name not in binder:
            mismatched.append(f"{name}: in requirements.txt, missing on Binder")
            continue
        v_book, v_binder = _exact(req), _exact(binder[name])
        # Compare public versions: a local label such as +cpu names the build, not the release.
        if v_book.public != v_binder.public or (v_book.local and v_book.local != v_binder.local):
            mismatched.append(f"{name}: requirements.txt {v_book}, Binder {v_binder}")
    assert not mismatched, "\n".join(mismatched)
    assert str(binder["torch"].specifier) == "==2.13.0+cpu"
    assert "https://download.pytorch.org/whl/cpu" in (ROOT / ".binder" / "requirements.txt").read_text()
    for name in ("jupytext", "jupyterlab-myst", "jupyterlab"):
        assert name in binder, f"{name} missing from .binder/requirements.txt"
    from sync_binder_requirements import render   # scripts/ (pyproject.toml: pythonpath)

    assert (ROOT / ".binder" / "requirements.txt").read_text() == render(ROOT), (
        ".binder/requirements.txt is stale: run .venv/bin/python scripts/sync_binder_requirements.py")


def test_binder_opens_markdown_as_notebooks():
    import json

    overrides = json.loads((ROOT / ".binder" / "overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == "Jupytext Notebook"
    post = (ROOT / ".binder" / "postBuild").read_text()
    assert "overrides.json" in post and "pip install" in post


# ------------------------------------------------------------- sources

def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def test_config_is_strict():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    ex = cfg["execute"]
    assert ex["execute_notebooks"] == "cache" and ex["allow_errors"] is False
    assert ex["timeout"] > 0
    assert {"dollarmath", "amsmath", "colon_fence"} <= set(cfg["parse"]["myst_enable_extensions"])
    assert {"sphinx_proof", "sphinx_exercise"} <= set(cfg["sphinx"]["extra_extensions"])
    assert not cfg["sphinx"]["config"].get("suppress_warnings")


def test_executable_chapters_are_myst_notebooks():
    """Every chapter with code cells has a jupytext MyST header and the python3 kernel."""
    bad = []
    for name in _toc_files():
        path = ROOT / f"{name}.md"
        assert path.is_file(), f"_toc.yml lists {name}, but {path} does not exist"
        text = path.read_text(encoding="utf-8")
        if "{code-cell}" not in text:
            continue
        header = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
        fmt = ((header.get("jupytext") or {}).get("text_representation") or {}).get("format_name")
        kernel = (header.get("kernelspec") or {}).get("name")
        if fmt != "myst" or kernel != "python3":
            bad.append(f"{name}: format_name={fmt!r}, kernelspec={kernel!r}")
    assert not bad, "chapters without a MyST notebook header:\n" + "\n".join(bad)
