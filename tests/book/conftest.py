"""Fixtures for the checks of the built book (tests/book/: test_book.py and the others).

`make test` builds the book once (scripts/build_book.sh writes the HTML to
_build/html, the log to _build/build.log and the exit status to
_build/build.rc) and then runs pytest; these fixtures only read that build.
They never build the book themselves, and they live in tests/book/, so the
package tests (tests/toolbox/, tests/chapters/) run without them.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
CHROMIUM = Path(os.environ.get("NOISEGEOM_CHROMIUM", "/usr/bin/chromium"))

# Flags that keep Debian's Chromium off the network (the machine has none) and
# headless; Playwright adds a fresh temporary --user-data-dir itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def html_pages() -> list[Path]:
    """Every HTML page of the built book except redirect stubs (index.html)."""
    if not HTML.is_dir():
        return []
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML)
        if rel.parts[0] in {"_static", "_sources", "_images"}:
            continue
        if 'http-equiv="Refresh"' in path.read_text(errors="replace")[:2000]:
            continue
        pages.append(path)
    return pages


def source_of(page: Path) -> Path | None:
    """The Markdown source a built page came from, if any."""
    rel = page.relative_to(HTML).with_suffix(".md")
    src = ROOT / rel
    return src if src.is_file() else None


@pytest.fixture(scope="session")
def build_status() -> dict:
    """Exit status and log of the last strict build (from `make test` / `make book`)."""
    rc_file, log_file = BUILD / "build.rc", BUILD / "build.log"
    if not rc_file.exists():
        pytest.fail(
            "the book has not been built: _build/build.rc is missing. Run `make test` "
            "(it builds the book, then runs pytest), or `make book` before pytest.",
            pytrace=False,
        )
    return {
        "rc": int(rc_file.read_text().strip() or "1"),
        "log": log_file.read_text(errors="replace") if log_file.exists() else "",
    }


@pytest.fixture(scope="session")
def built_html(build_status) -> Path:
    """_build/html, only if the strict build succeeded (else every check of the site fails)."""
    if build_status["rc"] != 0:
        pytest.fail("the strict book build failed, so the site cannot be checked; see test_build_succeeded",
                    pytrace=False)
    if not (HTML / "index.html").exists():
        pytest.fail("_build/html/index.html is missing although the build reported success")
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="session")
def site_url(built_html) -> str:
    """Serve _build/html on a free localhost port for the browser."""
    handler = functools.partial(_QuietHandler, directory=str(built_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (never Playwright's own browser)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: `make test` installs it (apt-get install chromium); "
            "or set NOISEGEOM_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    home = tempfile.mkdtemp(prefix="noisegeom-chromium-")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": home},
        )
        yield browser
        browser.close()
    shutil.rmtree(home, ignore_errors=True)


def offline_tab(browser, base: str, *, viewport=(1280, 900), also_allow=(), keep_console=None,
                http_errors: bool = True):
    """A tab in a fresh browser context that may load only from ``base`` (and data:, blob:,
    about:, and the prefixes in ``also_allow``): every other request is aborted and listed.

    Returns (context, tab, blocked, problems): ``blocked`` lists the aborted URLs;
    ``problems`` the console messages ``keep_console(message)`` keeps (by default errors),
    uncaught exceptions and, with ``http_errors``, responses with a status of 400 or more.
    The caller closes the context.
    """
    keep_console = keep_console or (lambda m: m.type == "error")
    allowed = (base + "/", "data:", "blob:", "about:", *also_allow)
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                  service_workers="block")
    blocked, problems = [], []

    def route(r):
        if r.request.url.startswith(allowed):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if keep_console(m) else None)
    tab.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    if http_errors:
        tab.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return context, tab, blocked, problems


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
