"""The website's ``.ipynb`` downloads carry the outputs of the executed chapters.

With ``execute_notebooks: cache``, myst-nb writes (and the theme offers for download,
as ``_sources/<doc>.ipynb``) the notebook it read, not the one it merged with the cached
outputs: a chapter taken from the execution cache, which is every chapter of a rebuild,
downloads without a single output. At ``build-finished`` this extension writes each
download again from the executed notebook merged with its cached outputs.

The student edition writes its own downloads, without the solutions
(``_ext/student_edition.py``); there this extension does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path


def executed_notebook(app, path: Path) -> dict:
    """The notebook myst-nb wrote for a page, with the outputs of its execution.

    Parameters
    ----------
    app : sphinx.application.Sphinx
    path : Path
        The notebook in ``<build>/jupyter_execute``.

    Returns
    -------
    dict
        nbformat 4 JSON, the cached outputs merged in (when the chapter is in the
        cache; else the notebook as myst-nb wrote it).
    """
    import nbformat

    if not path.is_file():
        raise ValueError(f"{path} is missing")
    notebook = nbformat.read(path, as_version=4)
    config = getattr(app.env, "mystnb_config", None)
    if config is not None and config.execution_mode == "cache" and config.execution_cache_path:
        from jupyter_cache import get_cache

        try:
            _, notebook = get_cache(config.execution_cache_path).merge_match_into_notebook(notebook)
        except KeyError:
            pass  # not in the cache: what myst-nb wrote is all there is
    return json.loads(nbformat.writes(notebook))


def _rewrite(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    if getattr(app.config, "student_edition", False) or app.config.hide_solutions:
        return
    outdir = Path(app.outdir)
    executed = outdir.parent / "jupyter_execute"
    for docname in sorted(app.env.found_docs):
        download = outdir / "_sources" / f"{docname}.ipynb"
        if download.is_file():
            notebook = executed_notebook(app, executed / f"{docname}.ipynb")
            download.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                                 encoding="utf-8")


def setup(app) -> dict:
    app.connect("build-finished", _rewrite)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
