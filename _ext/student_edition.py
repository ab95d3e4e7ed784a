"""Student edition (`make student`): no solution reachable from the student materials.

A student meets the book through four doors: the HTML pages, the search index,
the page's download buttons (``_sources/<page>.md`` and ``.ipynb``), and the
Binder launch button. sphinx-exercise's ``hide_solutions`` closes only part of
the first: it drops ``{solution}`` blocks, but a *gated* solution
(``{solution-start}`` ... ``{solution-end}``, the form for solutions with code
cells) loses only its start directive, and its code cells stay. Sphinx also
copies the unmodified source file into ``_sources`` and the theme copies the
executed notebook next to it, every solution included.

So, when ``hide_solutions`` is set, this extension

* lets sphinx-exercise build and merge every solution as in the full book
  (it turns ``hide_solutions`` off for sphinx-exercise at ``config-inited``)
  and then removes the finished solution nodes from the doctree
  (:class:`RemoveSolutions`, after sphinx-exercise's merge of gated
  solutions). The chapters are read unchanged, so their code cells, and
  therefore jupyter-cache's key, are those of the full book: the student
  build reuses the full book's executed notebooks instead of executing
  chapters of its own. A gated solution's cells are still executed, once,
  for the full book; only their rendering is dropped.
* at ``build-finished`` rewrites the downloads from the stripped text: the
  ``.md`` is the MyST source without solutions (:func:`strip_solutions`),
  the ``.ipynb`` the executed notebook without the solutions' cells, the
  outputs of every other cell kept (:func:`strip_notebook`).

The Binder button points to the solution-free ``student`` branch that
``scripts/student_branch.py`` writes and commits, with the same stripping.

Solutions are found with the Markdown parser the chapters are read with
(myst-parser's markdown-it, with colon fences), not with a regular expression,
so that a fence of any length, fences nested in a solution, and solution
syntax quoted inside a code block are all seen as the book's build sees them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from notebook_downloads import executed_notebook  # beside this file, in _ext/

# The book's `parse.myst_enable_extensions`; only colon_fence changes where a
# block starts or ends, the others are listed so that the parse is the book's.
BOOK_EXTENSIONS = ("amsmath", "colon_fence", "dollarmath", "html_image", "substitution", "deflist")

SOLUTION = "solution"
GATE_START, GATE_END = "solution-start", "solution-end"
_DIRECTIVE = re.compile(r"^\{([A-Za-z][\w:.-]*)\}")
# Directives whose body is code or raw text, not Markdown: solution syntax
# quoted inside one of them is an example, not a solution.
_LITERAL_DIRECTIVES = {
    "code-cell", "raw-cell", "code", "code-block", "sourcecode", "literalinclude",
    "math", "raw", "eval-rst", "mermaid", "csv-table",
}
# Instructor metadata (first line of each exercise): not for students either.
_INSTRUCTOR_NOTE = re.compile(r"^\s*%\s*for instructors:", re.I)


def _block_parser(extensions: Iterable[str]):
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    config = MdParserConfig(enable_extensions=set(extensions))
    # Only the block structure matters (as in myst-nb's notebook reader).
    config = dataclasses.replace(config, disable_syntax=["inline"])
    return create_md_parser(config, RendererHTML)


def _directive_name(info: str) -> str | None:
    match = _DIRECTIVE.match(info.strip())
    return match.group(1) if match else None


def solution_ranges(text: str, extensions: Iterable[str] = BOOK_EXTENSIONS) -> list[tuple[int, int]]:
    """Line ranges of every solution in a MyST document.

    Parameters
    ----------
    text : str
        The MyST Markdown text (a chapter).
    extensions : iterable of str
        myst-parser extensions to parse with (the book's by default).

    Returns
    -------
    list of (int, int)
        Sorted, disjoint, half-open ranges of 0-based line numbers: each
        ``{solution}`` block from its opening to its closing fence, and each
        gated solution from its ``{solution-start}`` fence to the closing fence
        of its ``{solution-end}``, the code cells between them included.

    Raises
    ------
    TypeError
        If ``text`` is not a string.
    ValueError
        If a ``{solution-start}`` has no ``{solution-end}`` after it, or a
        ``{solution-end}`` has no start (sphinx-exercise refuses those too; a
        guess here could leave a solution in place).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    parser = _block_parser(extensions)
    ranges: list[tuple[int, int]] = []
    _collect(parser, text, 0, ranges)
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _collect(parser, text: str, offset: int, ranges: list[tuple[int, int]]) -> None:
    open_gate: tuple[int, int] | None = None  # (line, line in text) of a pending solution-start
    n_lines = len(text.splitlines())
    for token in parser.parse(text + "\n"):
        if token.type not in ("fence", "colon_fence") or not token.map:
            continue
        name = _directive_name(token.info)
        start, end = token.map
        if name == SOLUTION:
            ranges.append((offset + start, offset + end))
        elif name == GATE_START:
            if open_gate is not None:
                raise ValueError(f"line {offset + open_gate[0] + 1}: {{solution-start}} before the "
                                 f"previous one ended (line {offset + start + 1})")
            open_gate = (start, end)
        elif name == GATE_END:
            if open_gate is None:
                raise ValueError(f"line {offset + start + 1}: {{solution-end}} without {{solution-start}}")
            ranges.append((offset + open_gate[0], offset + end))
            open_gate = None
        elif name is not None and name not in _LITERAL_DIRECTIVES and open_gate is None:
            # A directive's body is Markdown that may hold a solution of its own;
            # it starts on the line after the opening fence.
            _collect(parser, token.content, offset + start + 1, ranges)
    if open_gate is not None:
        raise ValueError(f"line {offset + open_gate[0] + 1}: {{solution-start}} without {{solution-end}} "
                         f"(the text has {n_lines} lines)")


def _removed_lines(text: str, extensions: Iterable[str], instructor_notes: bool) -> set[int]:
    removed = {i for start, end in solution_ranges(text, extensions) for i in range(start, end)}
    if instructor_notes:
        removed |= {i for i, line in enumerate(text.splitlines()) if _INSTRUCTOR_NOTE.match(line)}
    return removed


def strip_solutions(text: str, extensions: Iterable[str] = BOOK_EXTENSIONS, *,
                    instructor_notes: bool = True) -> str:
    """The MyST text without its solutions.

    Parameters
    ----------
    text : str
        A MyST Markdown chapter.
    extensions : iterable of str
        myst-parser extensions to parse with (the book's by default).
    instructor_notes : bool
        Also drop the ``% for instructors: ...`` comment lines.

    Returns
    -------
    str
        ``text`` without the lines of :func:`solution_ranges`; where a removal
        leaves two blank lines in a row, one of them goes too.
    """
    lines = text.splitlines(keepends=True)
    removed = _removed_lines(text, extensions, instructor_notes)
    out: list[str] = []
    previous_removed = False
    for i, line in enumerate(lines):
        if i in removed:
            previous_removed = True
            continue
        if previous_removed and not line.strip() and (not out or not out[-1].strip()):
            continue
        previous_removed = False
        out.append(line)
    return "".join(out)


def strip_notebook(executed: dict, text: str, extensions: Iterable[str] = BOOK_EXTENSIONS, *,
                   instructor_notes: bool = True) -> dict:
    """The executed notebook of a MyST chapter without its solutions.

    Parameters
    ----------
    executed : dict
        The notebook myst-nb executed from ``text`` (nbformat 4 JSON as a dict):
        every cell of the chapter, with outputs.
    text : str
        The chapter's MyST text.
    extensions : iterable of str
        myst-parser extensions to parse with (the book's by default).
    instructor_notes : bool
        Also drop the ``% for instructors: ...`` comment lines.

    Returns
    -------
    dict
        A new notebook: the markdown of :func:`strip_solutions` split into cells
        as myst-nb splits it, and the code cells that are not part of a
        solution, each taken from ``executed`` with its outputs.

    Raises
    ------
    ValueError
        If ``executed`` does not have the code cells that ``text`` has (a stale
        notebook), so that outputs are never attached to the wrong cell.
    """
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    config = MdParserConfig(enable_extensions=set(extensions))
    full = read_myst_markdown_notebook(text, config, add_source_map=True)
    cells = executed.get("cells")
    if not isinstance(cells, list):
        raise ValueError("the executed notebook has no list of cells")
    full_code = [(c, line) for c, line in zip(full.cells, full.metadata["source_map"]) if c.cell_type == "code"]
    run_code = [c for c in cells if c.get("cell_type") == "code"]
    if [c.source for c, _ in full_code] != [_source(c) for c in run_code]:
        raise ValueError(f"the executed notebook's {len(run_code)} code cells are not the "
                         f"{len(full_code)} code cells of the text (stale notebook?)")
    removed = _removed_lines(text, extensions, instructor_notes)
    # source_map holds the 1-based line of a code cell's opening fence.
    kept_code = [run for (cell, line), run in zip(full_code, run_code) if line - 1 not in removed]

    stripped = read_myst_markdown_notebook(strip_solutions(text, extensions, instructor_notes=instructor_notes),
                                           config)
    run_markdown: dict[str, list[dict]] = {}
    for cell in cells:
        if cell.get("cell_type") != "code":
            run_markdown.setdefault(_source(cell), []).append(cell)
    new_cells, code_iter = [], iter(kept_code)
    for cell in stripped.cells:
        if cell.cell_type == "code":
            run = next(code_iter, None)
            if run is None or _source(run) != cell.source:
                raise ValueError("a code cell of the stripped text is not among the executed cells")
            new_cells.append(copy.deepcopy(run))
            continue
        same = run_markdown.get(cell.source)
        if same:
            new_cells.append(copy.deepcopy(same.pop(0)))
            continue
        new = {"cell_type": cell.cell_type, "metadata": dict(cell.metadata), "source": cell.source}
        if "id" in (cells[0] if cells else {}):
            new["id"] = hashlib.sha1(cell.source.encode()).hexdigest()[:12]
        new_cells.append(new)
    if next(code_iter, None) is not None:
        raise ValueError("an executed code cell outside the solutions is missing from the stripped text")
    notebook = {key: copy.deepcopy(value) for key, value in executed.items() if key != "cells"}
    notebook["cells"] = new_cells
    return notebook


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


# ------------------------------------------------------------------ Sphinx


def _student(app) -> bool:
    return bool(getattr(app.config, "student_edition", False))


def _config_inited(app, config) -> None:
    # One switch for the student edition: `hide_solutions: true`. sphinx-exercise
    # must still build the solutions (else gated ones fall apart, see the module
    # docstring); they are removed here once they are whole.
    if config.hide_solutions:
        config.student_edition = True
        config.hide_solutions = False


def _remove_solutions_transform():
    from docutils import nodes
    from sphinx.transforms import SphinxTransform
    from sphinx_exercise.nodes import solution_end_node, solution_node, solution_start_node

    class RemoveSolutions(SphinxTransform):
        """Remove every solution node, gated ones after sphinx-exercise merged them."""

        default_priority = 11  # sphinx-exercise's MergeGatedSolutions is 10

        def apply(self) -> None:
            if not _student(self.app):
                return
            document = self.document
            kinds = (solution_node, solution_start_node, solution_end_node)
            for node in list(document.findall(lambda n: isinstance(n, kinds))):
                if node.parent is None:
                    continue
                # No label may point to an anchor that is not on the page.
                for inner in node.findall(nodes.Element):
                    for node_id in inner.get("ids", []):
                        document.ids.pop(node_id, None)
                    for name in inner.get("names", []):
                        document.nameids.pop(name, None)
                        document.nametypes.pop(name, None)
                node.parent.remove(node)

    return RemoveSolutions


def _rewrite_downloads(app, exception) -> None:
    if exception is not None or not _student(app) or app.builder.format != "html":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    outdir = Path(app.outdir)
    sources = outdir / "_sources"
    executed_dir = outdir.parent / "jupyter_execute"
    extensions = tuple(app.config.myst_enable_extensions or BOOK_EXTENSIONS)
    suffix = app.config.html_sourcelink_suffix or ""
    for docname in sorted(app.env.found_docs):
        path = Path(app.env.doc2path(docname))
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".md":
            if "{solution" in text:
                logger.warning(f"student edition: {path.name} has solutions, but only .md "
                               "sources are stripped", location=docname)
            continue
        downloads = [sources / name for name in {docname + path.suffix, docname + path.suffix + suffix}]
        notebook = sources / (docname + ".ipynb")
        try:
            stripped = strip_solutions(text, extensions)
            for target in downloads:
                if target.is_file():
                    target.write_text(stripped, encoding="utf-8")
            if notebook.is_file():
                nb = strip_notebook(executed_notebook(app, executed_dir / (docname + ".ipynb")),
                                    text, extensions)
                notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        except ValueError as err:
            # Better no download (and a warning, which fails the strict build) than
            # one that holds the solutions.
            for target in [*downloads, notebook]:
                target.unlink(missing_ok=True)
            logger.warning(f"student edition: cannot strip the solutions of {path.name}: {err}",
                           location=docname)


def setup(app) -> dict:
    app.setup_extension("sphinx_exercise")
    app.add_config_value("student_edition", False, "env")
    app.connect("config-inited", _config_inited)
    app.add_transform(_remove_solutions_transform())
    # After the theme has copied the executed notebook into _sources (html-page-context)
    # and Sphinx the source file (on writing each page).
    app.connect("build-finished", _rewrite_downloads)
    return {"version": "2.0", "parallel_read_safe": True, "parallel_write_safe": True}
