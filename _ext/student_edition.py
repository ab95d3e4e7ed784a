"""Student edition (`make student`): no solutions in the built book.

sphinx-exercise's ``hide_solutions`` removes ``{solution}`` blocks, but not
*gated* solutions (``{solution-start}`` ... ``{solution-end}``, used when a
solution contains executable code cells): in sphinx-exercise 1.2.1 the start
directive disappears while the code cells and an unknown end node stay. So
this extension, loaded only by the student build (scripts/build_book.sh
student), cuts every gated solution out of the source text before it is
parsed, keeping the line count so that warnings point at the right lines.
The code in a removed solution is therefore not executed in the student
edition either.
"""

from __future__ import annotations

import re

from sphinx.application import Sphinx

GATED_SOLUTION = re.compile(
    r"^(?P<fence>:{3,}|`{3,})\{solution-start\}.*?"
    r"^(?P=fence)\{solution-end\}[^\n]*\n(?P=fence)[ \t]*(?:\n|\Z)",
    re.S | re.M,
)


def strip_gated_solutions(text: str) -> str:
    """Replace every gated solution by as many empty lines as it had."""
    return GATED_SOLUTION.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if app.config.hide_solutions:
        source[0] = strip_gated_solutions(source[0])


def setup(app: Sphinx) -> dict:
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
