"""Serve MathJax and the ipywidgets embed manager from the built site itself.

The book must render with no network: no ``<script>`` or stylesheet may come
from a CDN. This Sphinx extension ships only the files a reader's browser
actually loads:

* MathJax 3 (``tex-chtml-full.js``, all TeX extensions built in, plus its
  CHTML woff2 fonts), taken from the PyPI package ``sphinx-mathjax-offline``
  (which carries MathJax 3.2.2; we do not load that package as an extension
  because it copies all 24 MB of MathJax into every build);
* the ipywidgets embed manager ``@jupyter-widgets/html-manager`` (its
  self-contained ``dist/embed.js`` bundle plus the woff2 icon fonts it
  references), installed from npm into ``scripts/web/node_modules`` by
  ``make assets`` (``npm ci`` against ``scripts/web/package-lock.json``),
  preceded by ``static/mathjax3-compat.js``, a ten-line shim that lets the
  manager's MathJax 2 call typeset widget labels with MathJax 3.

``_config.yml`` points ``mathjax_path`` and myst-nb's ``nb_ipywidgets_js`` at
``_static/mathjax/...`` and ``_static/widgets/...``; this extension copies the
files there when the HTML build finishes.

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
WIDGETS_PACKAGE = "scripts/web/node_modules/@jupyter-widgets/html-manager"
WIDGETS_FILES = ("embed.js", "embed.js.LICENSE.txt")
# Our own shim, loaded before embed.js: see the file's comment.
WIDGETS_SHIM = Path(__file__).parent / "static" / "mathjax3-compat.js"


def mathjax_source() -> Path:
    """Folder holding MathJax 3 inside the installed sphinx-mathjax-offline."""
    dist = metadata.distribution("sphinx-mathjax-offline")
    return Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))


def widgets_source(srcdir: str | Path) -> Path:
    """Folder holding the html-manager build (``dist``) installed by npm."""
    return Path(srcdir) / WIDGETS_PACKAGE / "dist"


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
    wd = widgets_source(app.srcdir)
    if not (wd / "embed.js").is_file():
        raise ExtensionError(
            f"offline_assets: {wd / 'embed.js'} is missing; run `make assets` "
            "(npm ci in scripts/web) before building the book."
        )


def _copy_assets(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder is None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"

    mj_src, mj_dst = mathjax_source(), static / "mathjax"
    (mj_dst / MATHJAX_FONTS).mkdir(parents=True, exist_ok=True)
    shutil.copy2(mj_src / MATHJAX_ENTRY, mj_dst / MATHJAX_ENTRY)
    for font in sorted((mj_src / MATHJAX_FONTS).glob("*.woff")):
        shutil.copy2(font, mj_dst / MATHJAX_FONTS / font.name)

    wd_src, wd_dst = widgets_source(app.srcdir), static / "widgets"
    wd_dst.mkdir(parents=True, exist_ok=True)
    for name in WIDGETS_FILES:
        shutil.copy2(wd_src / name, wd_dst / name)
    shutil.copy2(WIDGETS_SHIM, wd_dst / WIDGETS_SHIM.name)
    # embed.js bundles Font Awesome's CSS; browsers fetch only the woff2 fonts.
    for font in sorted(wd_src.glob("*.woff2")):
        shutil.copy2(font, wd_dst / font.name)
    logger.info("offline_assets: MathJax and the widget manager copied to _static")

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
