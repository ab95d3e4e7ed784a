"""Checks of the PDF editions written by `make pdf` (scripts/make_pdf.py).

`make pdf` prints the built book site into _build/pdf/book.pdf and the student site
into _build/pdf/student.pdf, and copies them into the sites (<site>/pdf/), which link to
them (_ext/pdf_links.py). These tests read those files; they never build anything.

* page counts plausible for the number of chapters, and the student edition shorter;
* one outline entry per file of _toc.yml (that the edition's site has), titled as the
  page on the website;
* every theorem, proposition, lemma and corollary of the chapters' sources, under its
  website number ("Theorem 2.1 (Covariance of minibatch noise)"), and every exercise
  number, is in both PDFs;
* the book has every solution, the student edition none;
* every interactive figure printed with its caption; no raw TeX left in the prose;
* links inside the PDF jump to its pages (none to the server that printed it);
* the website's links to the PDFs resolve.

Text comes from pypdf's extract_text; "prose" is the text not set in a monospace font,
so that code (where `$` is legitimate, e.g. matplotlib labels) is not mistaken for
untypeset math.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from conftest import BUILD, ROOT

from make_pdf import EDITIONS, edition_docnames, toc_docnames   # scripts/ (pyproject.toml: pythonpath)

pytestmark = pytest.mark.book

PDF_DIR = BUILD / "pdf"
TOC = toc_docnames()
CHAPTERS = [d for d in TOC if re.fullmatch(r"chapters/\d\d_\w+", d)]
PROOF_KINDS = ("theorem", "proposition", "lemma", "corollary")


def norm(text: str) -> str:
    """Text as compared: NFKC (ligatures, math letters), quotes, line-end hyphens, spaces."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    text = text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}))
    text = re.sub(r"(?<=\w)-\s*\n\s*(?=\w)", "-", text)
    return re.sub(r"\s+", " ", text).strip()


@lru_cache(maxsize=None)
def pdf(edition: str) -> dict:
    """The PDF of an edition: its reader, its whole text and its prose (non-monospace) text."""
    from pypdf import PdfReader

    path = PDF_DIR / EDITIONS[edition][1]
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make pdf` (after `make book` and "
                    "`make student`) before these tests", pytrace=False)
    reader = PdfReader(path)
    whole, prose = [], []

    def keep(text, cm, tm, font, size):
        if font is None or "mono" not in str(font.get("/BaseFont", "")).lower():
            prose.append(text)

    for page in reader.pages:
        whole.append(page.extract_text(visitor_text=keep))
        prose.append("\n")
    return {"reader": reader, "path": path, "text": norm("\n".join(whole)), "prose": norm("".join(prose)),
            "pages": len(reader.pages)}


@lru_cache(maxsize=None)
def site_page(edition: str, docname: str) -> BeautifulSoup:
    path = EDITIONS[edition][0] / f"{docname}.html"
    if not path.is_file():
        pytest.fail(f"{path} is missing: build the site (`make book` / `make student`)", pytrace=False)
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def page_title(soup: BeautifulSoup) -> str:
    h1 = soup.select_one("article section > h1") or soup.find("h1")
    for link in h1.select("a.headerlink"):
        link.decompose()
    return norm(h1.get_text())


def plain_runs(title: str) -> list[str]:
    """The pieces of a MyST title between its inline math, without Markdown marks."""
    runs = re.split(r"\$[^$]*\$", title)
    return [r for r in (norm(re.sub(r"[*`]", "", run)).strip(" ,;:") for run in runs) if len(r) >= 3]


def source_titles(docname: str) -> list[tuple[str, str]]:
    """(kind, title) of every theorem-like directive in a chapter's source."""
    text = (ROOT / f"{docname}.md").read_text(encoding="utf-8")
    kinds = "|".join(PROOF_KINDS)
    return re.findall(rf"^\s*(?::{{3,}}|`{{3,}})\{{prf:({kinds})\}}[ \t]*(.*?)\s*$", text, re.M)


# -------------------------------------------------------------------- size

@pytest.mark.parametrize("edition", list(EDITIONS))
def test_page_count_is_plausible(edition):
    """At least 5 pages per chapter (each has text, a figure, exercises), at most 40 per file."""
    n = pdf(edition)["pages"]
    low, high = 5 * len(CHAPTERS) + 2, 40 * len(TOC)
    print(f"{edition}.pdf: {n} pages, {pdf(edition)['path'].stat().st_size / 2**20:.1f} MiB")
    assert low <= n <= high, f"{edition}.pdf has {n} pages, expected {low}..{high} for {len(TOC)} files"


def test_student_edition_is_shorter():
    """The solutions take pages: the student edition has fewer."""
    assert pdf("student")["pages"] < pdf("book")["pages"], (
        f"student.pdf has {pdf('student')['pages']} pages, book.pdf {pdf('book')['pages']}")


# ----------------------------------------------------------------- outline

@pytest.mark.parametrize("edition", list(EDITIONS))
def test_outline_has_one_entry_per_toc_file(edition):
    """Bookmarks: one per file of _toc.yml, in order, titled as on the website, at increasing pages."""
    reader = pdf(edition)["reader"]
    top = [item for item in reader.outline if not isinstance(item, list)]
    titles = [norm(item.title) for item in top]
    expected = [page_title(site_page(edition, d)) for d in edition_docnames(edition)]
    assert titles == expected, f"outline of {edition}.pdf: {titles}, expected (the pages' titles) {expected}"
    pages = [reader.get_destination_page_number(item) for item in top]
    assert pages == sorted(set(pages)), f"outline entries not at increasing pages: {pages}"
    # and the sections below each entry
    nested = [item for item in reader.outline if isinstance(item, list)]
    assert len(nested) >= len(CHAPTERS), "the chapters' sections are missing from the outline"


# ---------------------------------------------------------------- contents

@pytest.mark.parametrize("edition", list(EDITIONS))
@pytest.mark.parametrize("docname", CHAPTERS)
def test_theorem_titles_in_pdf(edition, docname):
    """Each theorem/proposition/lemma/corollary title of the source is in the PDF (its words
    outside math), and under its website number: "Theorem 2.1 (Covariance of ...)"."""
    titles = source_titles(docname)
    soup = site_page(edition, docname)
    captions = [norm(el.get_text()) for el in soup.select("div.proof p.admonition-title span.caption-number")]
    assert len(captions) >= len(titles), f"{docname}: {len(captions)} numbered blocks on the website"
    text = pdf(edition)["text"]
    missing = []
    for kind, title in titles:
        for run in plain_runs(title):
            if run not in text:
                missing.append(f"{kind}: {run!r}")
    for block in soup.select("div.proof"):
        head = block.select_one("p.admonition-title")
        number = head.select_one("span.caption-number") if head else None
        if number is None:
            continue
        # the number and the title up to its first math, as the website prints it
        parts = []
        for child in head.children:
            if getattr(child, "name", None) == "span" and "math" in (child.get("class") or []):
                break
            parts.append(child.get_text() if hasattr(child, "get_text") else str(child))
        label = norm("".join(parts))
        if label not in text:
            missing.append(f"numbered title {label!r}")
    assert not missing, f"{edition}.pdf lacks, from {docname}:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize("edition", list(EDITIONS))
def test_numbering_as_on_the_website(edition):
    """Every "Theorem 2.1", "Exercise 3.4", ... label of the website is in the PDF."""
    text = pdf(edition)["text"]
    missing = []
    for docname in edition_docnames(edition):
        for el in site_page(edition, docname).select("div.proof span.caption-number, "
                                                      "div.exercise span.caption-number"):
            label = norm(el.get_text())
            if not re.fullmatch(r"[A-Z][a-z]+ \d+\.\d+", label):
                missing.append(f"{docname}: unexpected label {label!r} on the website")
            elif not re.search(re.escape(label) + r"(?!\d)", text):
                missing.append(f"{docname}: {label}")
    assert not missing, f"{edition}.pdf lacks:\n  " + "\n  ".join(missing)


def _solution_samples() -> list[str]:
    """From each solution of the book's site: its longest run of prose free of math and code."""
    samples = []
    for docname in TOC:
        for box in site_page("book", docname).select("div.solution"):
            for para in box.select("section#solution-content p, div.solution > p:not(.admonition-title)"):
                pieces = []
                for child in para.descendants:
                    if isinstance(child, str) and not child.find_parent(["code", "span"]) \
                            and not child.find_parent(class_="math"):
                        pieces.append(child)
                    elif getattr(child, "name", None) in ("code", "span"):
                        pieces.append("\x00")
                # a run cut by math or code may end in half a compound ("high-" before
                # "$\eta$"), which the PDF's text joins differently: drop that word
                runs = [re.sub(r"\S*-$", "", norm(r)).strip() for r in "".join(pieces).split("\x00")]
                best = max(runs, key=len, default="")
                # a paragraph can be split by a page break, and the PDF's text may put
                # the page's other content in between: compare its first 100 characters
                if len(best) > 100:
                    best = best[:100].rsplit(" ", 1)[0]
                if len(best) >= 30:
                    samples.append(best)
                    break
    return samples


def test_book_has_solutions_student_edition_none():
    """book.pdf prints every solution (its dropdowns expanded), student.pdf none of them."""
    n_solutions = sum(len(site_page("book", d).select("div.solution")) for d in TOC)
    assert n_solutions > 0, "the book's site has no solutions to compare with"
    book, student = pdf("book")["text"], pdf("student")["text"]
    assert book.count("Solution to") == n_solutions, (
        f"book.pdf has {book.count('Solution to')} 'Solution to' headings, the site {n_solutions}")
    assert "Solution to" not in student, "student.pdf has a 'Solution to' heading"
    samples = _solution_samples()
    assert len(samples) >= n_solutions // 2, f"only {len(samples)} sample lines from {n_solutions} solutions"
    not_in_book = [s for s in samples if s not in book]
    in_student = [s for s in samples if s in student]
    assert not not_in_book, "solution text missing from book.pdf:\n  " + "\n  ".join(not_in_book[:10])
    assert not in_student, "solution text in student.pdf:\n  " + "\n  ".join(in_student[:10])


@pytest.mark.parametrize("edition", list(EDITIONS))
def test_interactive_figures_printed(edition):
    """Each interactive figure is printed as its default frame, with the caption saying so."""
    n_figures = sum(len(site_page(edition, d).select("div.ng-explorer img.ng-explorer-figure"))
                    for d in edition_docnames(edition))
    got = pdf(edition)["text"].count("Interactive figure on the website and in Jupyter, shown here at")
    assert got == n_figures, f"{edition}.pdf: {got} captioned interactive figures, the site has {n_figures}"
    # the website's note about the controls (hidden with them) is not printed
    assert "On the website this figure was computed" not in pdf(edition)["text"], (
        f"{edition}.pdf prints the website's note on the figures' controls")


@pytest.mark.parametrize("edition", list(EDITIONS))
def test_no_raw_tex(edition):
    """Every formula typeset: no $, \\( or \\[ left in the prose (code may hold `$`)."""
    prose = pdf(edition)["prose"]
    bad = [prose[max(0, m.start() - 50):m.end() + 50]
           for m in re.finditer(r"\$|\\\(|\\\)|\\\[|\\\]", prose)]
    assert not bad, f"{edition}.pdf: raw TeX in the text:\n  " + "\n  ".join(bad[:10])


# ------------------------------------------------------------------ links

@pytest.mark.parametrize("edition", list(EDITIONS))
def test_links_inside_the_pdf(edition):
    """Links between pages of the site became jumps to pages of the PDF: none points at the
    local server that printed it, and every jump lands on a page of the book."""
    reader = pdf(edition)["reader"]
    pages = {page.indirect_reference.idnum for page in reader.pages}
    local, dangling, jumps = [], [], 0
    for number, page in enumerate(reader.pages, 1):
        for annot in page.get("/Annots") or []:
            annot = annot.get_object()
            uri = str((annot.get("/A") or {}).get("/URI", ""))
            if re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", uri):
                local.append(f"page {number}: {uri}")
            dest = annot.get("/Dest")
            if dest is not None:
                jumps += 1
                if isinstance(dest, str) or dest[0].idnum not in pages:
                    dangling.append(f"page {number}: {dest}")
    assert not local, "links to the printing server:\n  " + "\n  ".join(local[:10])
    assert not dangling, "jumps to no page of the book:\n  " + "\n  ".join(dangling[:10])
    assert jumps >= 10 * len(CHAPTERS), f"only {jumps} internal links in {edition}.pdf"


LINK_SELECTOR = "a.pdf-edition-link, a[class*='btn-download-'][class*='-pdf-button']"


@pytest.mark.parametrize("edition", list(EDITIONS))
def test_website_links_to_the_pdfs(edition):
    """Every page of a site links to its PDFs (the student site only to student.pdf), and the
    links resolve to copies of _build/pdf/*.pdf."""
    site = EDITIONS[edition][0]
    wanted = {"book.pdf", "student.pdf"} if edition == "book" else {"student.pdf"}
    problems = []
    for docname in edition_docnames(edition):
        page = site / f"{docname}.html"
        hrefs = [a["href"] for a in site_page(edition, docname).select(LINK_SELECTOR)]
        named = {Path(h).name for h in hrefs}
        if named != wanted:
            problems.append(f"{docname}: links to {sorted(named)}, expected {sorted(wanted)}")
        for href in hrefs:
            target = (page.parent / href).resolve()
            if not target.is_file():
                problems.append(f"{docname}: {href} does not resolve ({target})")
            elif target.read_bytes() != (PDF_DIR / target.name).read_bytes():
                problems.append(f"{docname}: {href} is not the current _build/pdf/{target.name}")
    assert not problems, "\n".join(problems[:20])
    if edition == "student":
        # book.pdf holds the solutions: no student page links to it and the student site
        # has no copy. (Appendix B may name the file: it tells instructors where it is.)
        leaks = [d for d in edition_docnames("student")
                 if any(Path(a.get("href", "").split("#")[0]).name == "book.pdf"
                        for a in site_page("student", d).select("a[href]"))]
        assert not leaks, f"student pages link to book.pdf (it holds the solutions): {leaks}"
        copies = sorted(str(p.relative_to(site)) for p in site.rglob("book.pdf"))
        assert not copies, f"the student site holds book.pdf: {copies}"
