"""Link every page of the website to the PDF editions of the book.

``make pdf`` (``scripts/make_pdf.py``) prints the built sites into ``_build/pdf/book.pdf``
and ``student.pdf`` and copies them into the sites, at ``pdf/<name>`` below the site's
root. This extension adds the links on every page, in two places:

* the header's download menu (sphinx-book-theme's "Download this page" group) gets one
  entry per PDF, next to the page's .ipynb/.md/print entries;
* the footer gets a line "PDF: ...".

The book's site links to both PDFs; the student edition (``hide_solutions: true``, see
``scripts/build_book.sh student``) links only to ``student.pdf``, since ``book.pdf``
holds the solutions. Links are relative (``pathto``), so they work at any page depth and
from a copy of the site on disk. They are plain hrefs, written whether or not the PDFs
exist yet (they are made after the HTML), so they never trip the strict build;
tests/book/test_pdf.py checks that they resolve after ``make pdf``.
"""

from __future__ import annotations

import html

from sphinx.application import Sphinx

# (file below <site>/pdf/, menu text, footer text, tooltip)
BOOK = ("book.pdf", "book (PDF)", "the whole book, with solutions",
        "The whole book as one PDF, with the solutions of the exercises")
STUDENT = ("student.pdf", "student edition (PDF)", "the student edition, without solutions",
           "The whole book as one PDF, without the solutions")


def pdfs_for(app: Sphinx) -> list[tuple[str, str, str, str]]:
    """The PDFs this edition of the site links to."""
    # _ext/student_edition.py takes `hide_solutions` over (and resets it) and leaves
    # `student_edition` set instead.
    student = app.config.hide_solutions or getattr(app.config, "student_edition", False)
    return [STUDENT] if student else [BOOK, STUDENT]


def _add_links(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    pathto = context.get("pathto")
    if pathto is None:
        return
    pdfs = pdfs_for(app)
    for group in context.get("header_buttons") or []:
        if group.get("label") == "download-buttons":
            group["buttons"].extend({
                "type": "link",
                "url": pathto(f"pdf/{name}", 1),
                "text": text,
                "tooltip": tooltip,
                "icon": "fas fa-book",
                "label": f"download-{name.replace('.', '-')}-button",
            } for name, text, _, tooltip in pdfs)
    links = ", ".join(f'<a class="pdf-edition-link" href="{html.escape(pathto(f"pdf/{name}", 1))}">'
                      f"{html.escape(text)}</a>" for name, _, text, _ in pdfs)
    line = f'<p class="pdf-editions">PDF: {links}.</p>'
    context["theme_extra_footer"] = (context.get("theme_extra_footer") or "") + line


def setup(app: Sphinx) -> dict:
    # After sphinx-book-theme has built the header buttons (priority 501).
    app.connect("html-page-context", _add_links, priority=600)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
