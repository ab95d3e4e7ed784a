"""Ship the precomputed frames of the book's interactive figures with the website.

In the book build ``noisegeom.widgets.explore`` renders each figure over a grid of its
controls' values and writes the frames into the folder named by ``NOISEGEOM_WIDGET_FRAMES``
(``scripts/build_book.sh`` sets it to ``_build/widget_frames``), each named by its content
hash; the cell's HTML output names the frames it uses in its ``data-ng-explorer`` attribute.
Frames live outside the HTML tree because execution is cached: a chapter that is not
re-executed still needs the frames of its cached output.

When the HTML build finishes, this extension copies into ``_static/frames`` exactly the
frames the written pages name (so stale frames from earlier executions never reach the
site) and fails the build if one is missing. It also adds the page script and stylesheet
(``static/explorer/``) that make the controls swap the frames.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

STATIC = Path(__file__).parent / "static" / "explorer"
CONFIG_ATTR = re.compile(r'data-ng-explorer="([^"]*)"')


def frames_folder(app: Sphinx) -> Path:
    folder = app.config.noisegeom_frames_dir or os.environ.get("NOISEGEOM_WIDGET_FRAMES")
    return Path(folder or Path(app.srcdir) / "_build" / "widget_frames")


def frames_named(page_html: str) -> set[str]:
    """The frame files an HTML page's interactive figures use."""
    names = set()
    for raw in CONFIG_ATTR.findall(page_html):
        names.update(json.loads(html.unescape(raw))["frames"].values())
    return names


def _builder_inited(app: Sphinx) -> None:
    if app.builder.format == "html":
        app.config.html_static_path.append(str(STATIC))
        app.add_js_file("explorer.js", defer="defer")
        app.add_css_file("explorer.css")


def _copy_frames(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    needed = set()
    for page in out.rglob("*.html"):
        needed |= frames_named(page.read_text(encoding="utf-8", errors="replace"))
    if not needed:
        return
    src = frames_folder(app)
    missing = sorted(n for n in needed if not (src / n).is_file())
    if missing:
        raise ExtensionError(
            f"widget_frames: {len(missing)} frame(s) of interactive figures are missing from "
            f"{src} (e.g. {missing[0]}): the executed notebooks come from the cache but their "
            "frames are gone. Run `make clean` (or delete _build/.jupyter_cache) and build again.")
    dest = out / "_static" / "frames"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in sorted(needed):
        shutil.copy2(src / name, dest / name)


def setup(app: Sphinx) -> dict:
    app.add_config_value("noisegeom_frames_dir", "", "env")
    app.connect("builder-inited", _builder_inited)
    app.connect("build-finished", _copy_frames)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
