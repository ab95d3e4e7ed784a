"""Serve MathJax from the built site itself, and ship only what a browser loads.

The book must render with no network: no ``<script>`` or stylesheet may come
from a CDN. This Sphinx extension copies MathJax 3 (``tex-chtml-full.js``, all
TeX extensions built in, plus its CHTML woff fonts) from the PyPI package
``sphinx-mathjax-offline`` (which carries MathJax 3.2.2; we do not load that
package as an extension because it copies all 24 MB of MathJax into every
build). ``_config.yml`` points ``mathjax_path`` at ``_static/mathjax/...``;
this extension copies the files there when the HTML build finishes.

The website has no ipywidgets: its interactive figures are precomputed frames
(``noisegeom.widgets.explore`` and ``widget_frames.py``), so no widget manager
is shipped, and ``nb_ipywidgets_js`` is empty so that myst-nb never points a
page at one on a CDN.

It also keeps the site small and free of remote references: it removes the
themes' source maps (``*.map``, loaded only by browser developer tools), the
theme's message catalogues (``_static/locales``, used at build time only), the
TrueType copies of the icon fonts (browsers load the woff2 ones), and, when
Thebe is off (``launch_buttons.thebe: false``), sphinx-thebe's script, whose
only content is the unpkg.com address of Thebe.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_ENTRY = "tex-chtml-full.js"
MATHJAX_FONTS = "output/chtml/fonts/woff-v2"


def mathjax_source() -> Path:
    """Folder holding MathJax 3 inside the installed sphinx-mathjax-offline."""
    dist = metadata.distribution("sphinx-mathjax-offline")
    return Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))


def _check_sources(app: Sphinx) -> None:
    if app.builder is None or app.builder.format != "html":
        return
    try:
        mj = mathjax_source()
    except metadata.PackageNotFoundError as err:
        raise ExtensionError(
            "offline_assets: the PyPI package sphinx-mathjax-offline is not "
            "installed; run `make book` (it installs requirements.txt)."
        ) from err
    if not (mj / MATHJAX_ENTRY).is_file():
        raise ExtensionError(f"offline_assets: {mj / MATHJAX_ENTRY} is missing")


def _copy_assets(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder is None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"

    mj_src, mj_dst = mathjax_source(), static / "mathjax"
    (mj_dst / MATHJAX_FONTS).mkdir(parents=True, exist_ok=True)
    shutil.copy2(mj_src / MATHJAX_ENTRY, mj_dst / MATHJAX_ENTRY)
    for font in sorted((mj_src / MATHJAX_FONTS).glob("*.woff")):
        shutil.copy2(font, mj_dst / MATHJAX_FONTS / font.name)

    logger.info("offline_assets: MathJax copied to _static")

    # Ship only what a browser loads.
    for path in sorted(static.rglob("*.map")):
        path.unlink()
    shutil.rmtree(static / "locales", ignore_errors=True)
    for path in sorted((static / "vendor").rglob("*.ttf")):
        path.unlink()
    if not _thebe_enabled(app):
        for name in ("sphinx-thebe.js", "sphinx-thebe.css"):
            (static / name).unlink(missing_ok=True)


def _thebe_enabled(app: Sphinx) -> bool:
    options = app.config.html_theme_options or {}
    return bool((options.get("launch_buttons") or {}).get("thebe"))


def _drop_thebe(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Remove sphinx-thebe's script and stylesheet from pages when Thebe is off."""
    if _thebe_enabled(app):
        return

    def keep(asset) -> bool:
        text = str(getattr(asset, "filename", asset) or "") + str(
            (getattr(asset, "attributes", None) or {}).get("body", "")
        )
        return "thebe" not in text.lower()

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if keep(asset)]


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _check_sources)
    app.connect("build-finished", _copy_assets)
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
