"""Print the built website as two PDF books: ``book.pdf`` and ``student.pdf``.

``make pdf`` runs this after ``make book`` and ``make student``. For each edition it
serves the built site (``_build/html``, ``_build/student/html``) on localhost, opens
every page of ``_toc.yml`` in order (preface, chapters, back matter) in Debian's
headless Chromium (driven by Playwright, as the browser tests do), prepares the page
for print, prints it to PDF, and merges the pages with ``pypdf`` into one book:

* a title page (title, authors, edition, date and version) and a contents page;
* every chapter starting on a new page, its pages numbered continuously in the footer;
* an outline: one bookmark per file of ``_toc.yml``, with that page's sections below;
* links between pages of the site become links inside the PDF (to the page where the
  target sits); links to other sites stay web links.

Before a page is printed: MathJax has finished typesetting (``MathJax.startup.promise``;
the script fails if any ``span.math``/``div.math`` is left untypeset), every image is
decoded and the fonts are loaded; every dropdown is expanded (the solutions of the
exercises in the book; the student site has none), and a print stylesheet hides what
only makes sense on screen: the navigation bar, sidebars, header buttons, search, the
previous/next footer, the interactive figures' controls (each figure keeps the frame it
shows by default, captioned with the values it was drawn at).

Why this route and not Jupyter Book's LaTeX builder: the website is the reference
rendering of the book, so printing it gives the same numbering of theorems and
exercises (sphinx-proof, sphinx-exercise), the same MathJax, the same figures and the
same widget frames; it needs no TeX installation (gigabytes) and no network, and both
PDFs print in about a minute, within the test budget.

The PDFs are written to ``_build/pdf/`` and copied into the sites (``<site>/pdf/``),
where ``_ext/pdf_links.py`` links to them: the book's site offers both PDFs, the
student site only ``student.pdf``.

Usage::

    python scripts/make_pdf.py                   # both editions
    python scripts/make_pdf.py --edition book    # one of them
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import html
import http.server
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
OUT = BUILD / "pdf"
CHROMIUM = Path(os.environ.get("NOISEGEOM_CHROMIUM", "/usr/bin/chromium"))

EDITIONS = {
    # edition: (site folder, PDF name, subtitle on the title page)
    "book": (BUILD / "html", "book.pdf", "Complete edition, with the solutions of the exercises"),
    "student": (BUILD / "student" / "html", "student.pdf", "Student edition, without solutions"),
}
# The sites that link to each PDF (see _ext/pdf_links.py): never the book, which holds the
# solutions, from the student site.
COPIES = {"book": ["book"], "student": ["book", "student"]}

# Offline, headless Chromium (the same flags as tests/book/conftest.py).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

# A4 with book margins; the footer band holds the page number (stamped by number_pages).
PAGE = {"format": "A4", "margin": {"top": "18mm", "bottom": "20mm", "left": "17mm", "right": "17mm"}}
A4_MM = (210, 297)
COLUMN_PX = round((A4_MM[0] - 2 * 17) / 25.4 * 96)   # the printed column in CSS pixels

PRINT_CSS = """
@media print {
  /* screen-only parts of the site */
  .bd-header, .bd-header-announcement, .bd-sidebar-primary, .bd-sidebar-secondary,
  .header-article, .header-article-items, .prev-next-area, .prev-next-footer,
  footer, .bd-footer, .bd-footer-article, .bd-footer-content, #pst-back-to-top,
  .search-button, .search-button-field, .skip-link, a.headerlink, button.toggle-button,
  button.copybtn, .ng-explorer-controls, .ng-explorer-note, details.hide.above-input,
  details.hide.below-input > summary, .toggle-details__summary { display: none !important; }
  html { font-size: 10pt; }
  /* MathJax's hidden MathML copy (for screen readers) of a wide formula widens the page, and
     Chromium then prints the page shifted and cut: drop it in print */
  mjx-assistive-mml { display: none !important; }
  /* Skia prints a blurred shadow as a full-resolution image mask: megabytes per book */
  /* (the theme sets them with !important on classes: :not(#id) outranks a class) */
  :root { --pst-color-shadow: transparent !important; }
  *:not(#ng-print), *:not(#ng-print)::before, *:not(#ng-print)::after {
    box-shadow: none !important; text-shadow: none !important; }
  .bd-page-width, .bd-container, .bd-container__inner, .bd-main, .bd-content,
  .bd-article-container, .bd-article { max-width: none !important; width: auto !important;
    padding: 0 !important; margin: 0 !important; overflow: visible !important;
    min-width: 0 !important; }   /* flex items: a wide formula must not widen the page */
  /* the theme hides a page's own title in print (it prints a copy above the contents list,
     which PREPARE_JS removes) */
  article section > h1 { display: block !important; }
  /* Chromium clips what reaches left of the body's box: the overhang of some glyphs */
  html body { padding: 0 1mm !important; }
  /* every dropdown open (the solutions in the book) */
  .admonition.toggle-hidden { padding-bottom: 0.4rem !important; }
  .admonition.toggle-hidden .admonition-title ~ * { height: auto !important; opacity: 1 !important;
    visibility: visible !important; margin: revert !important; }
  h1, h2, h3, h4, .admonition-title, p.rubric { break-after: avoid; }
  .cell_input, div.highlight, figure, img, .ng-explorer, mjx-container[display="true"], .math.notranslate { break-inside: avoid; }
  .cell_output img, .ng-explorer img { max-height: 230mm; object-fit: contain; }
  pre { white-space: pre-wrap !important; overflow-wrap: anywhere; }
  div.highlight, .cell_output .output { overflow: visible !important; }
  a { text-decoration: none; }
  .ng-print-caption { font-size: 0.85rem; color: #555; margin: 0.2rem 0 0.8rem; }
}
"""

# Run in each page before it is printed; returns what the page's own checks found.
PREPARE_JS = r"""async () => {
  // the images: eager, and wait until each is decoded
  for (const img of document.images) img.loading = 'eager';
  for (let y = 0; y < document.body.scrollHeight; y += 1000) {
    window.scrollTo(0, y); await new Promise(r => setTimeout(r, 10));
  }
  window.scrollTo(0, 0);
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  // every dropdown open: sphinx-togglebutton's admonitions and <details> blocks
  // (except the code cells the chapters hide: hidden in print, as on the website)
  for (const el of document.querySelectorAll('.toggle-hidden')) el.classList.remove('toggle-hidden');
  for (const d of document.querySelectorAll('details')) {
    if (!d.matches('details.hide.above-input')) d.open = true;
  }
  // the theme's print header repeats the title without its number: keep its list of
  // contents, below the page's own title
  const h1 = document.querySelector('article h1') || document.querySelector('h1');
  const printToc = document.querySelector('#jb-print-toc');
  const printHead = document.querySelector('#jb-print-docs-body');
  if (h1 && printToc) h1.after(printToc);
  if (printHead) printHead.remove();
  // each interactive figure prints the frame it shows, captioned with its settings
  for (const box of document.querySelectorAll('.ng-explorer')) {
    const img = box.querySelector('img.ng-explorer-figure');
    const alt = (img && img.getAttribute('alt')) || '';
    const at = alt.indexOf(' at ');
    const cap = document.createElement('p');
    cap.className = 'ng-print-caption';
    cap.textContent = 'Interactive figure on the website and in Jupyter, shown here at '
      + (at >= 0 ? alt.slice(at + 4) : 'its default settings') + '.';
    box.appendChild(cap);
  }
  await document.fonts.ready;
  // a display formula wider than the column is scaled down to fit it (the page is laid out
  // at the printed column's width, in print media)
  for (const box of document.querySelectorAll('mjx-container[display="true"]')) {
    const math = box.querySelector('mjx-math');
    const avail = box.getBoundingClientRect().width, need = math ? math.getBoundingClientRect().width : 0;
    if (avail > 0 && need > avail) box.style.fontSize = Math.floor(100 * avail / need - 1) + '%';
  }
  const untypeset = [...document.querySelectorAll('span.math, div.math')]
    .filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 60));
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => (i.getAttribute('src') || '').slice(0, 80));
  // plain text of a heading: no "#" link; math as MathJax shows it
  const text = (el) => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('a.headerlink, mjx-assistive-mml').forEach(e => e.remove());
    copy.querySelectorAll('mjx-container').forEach(e => e.replaceWith(e.textContent));
    return copy.textContent.replace(/\s+/g, ' ').trim();
  };
  const title = h1 ? text(h1) : '';
  // the sections, for the outline: Chromium writes a named destination for each section
  // the page's own contents list links to
  const headings = [...document.querySelectorAll('article section > h2, article section > h3')]
    .map(h => ({level: Number(h.tagName[1]), id: h.parentElement.id, text: text(h)}))
    .filter(h => h.id && h.text);
  // Every element a link may point to, with a text that finds its page in the PDF (its
  // heading or block title) and its section: used where Chromium wrote no destination.
  const targets = [];
  for (const el of document.querySelectorAll('article [id]')) {
    let probe = '';
    if (el.matches('section') && el.querySelector(':scope > h1, :scope > h2, :scope > h3, :scope > h4')) {
      probe = text(el.querySelector(':scope > h1, :scope > h2, :scope > h3, :scope > h4'));
    } else if (el.matches('div.admonition') && el.querySelector(':scope > .admonition-title')) {
      probe = text(el.querySelector(':scope > .admonition-title'));
    }
    const sec = el.parentElement && el.parentElement.closest('section[id]');
    // the contents list under the title names the sections once more, before them
    const listed = !!(printToc && printToc.querySelector('a[href="#' + CSS.escape(el.id) + '"]'));
    targets.push({id: el.id, probe, section: sec ? sec.id : '', listed});
  }
  return {untypeset, broken, title, headings, targets};
}"""


@dataclass
class Part:
    """One printed page of the site (a file of _toc.yml)."""
    docname: str
    title: str = ""
    pdf: bytes = b""
    pages: int = 0
    headings: list = field(default_factory=list)  # {level, id, text} of its h2/h3 sections
    targets: list = field(default_factory=list)   # {id, probe, section} of its elements with an id
    first_page: int = 0            # index of its first page among the numbered pages
    dests: dict = field(default_factory=dict)   # element id -> (page index in the book, left, top)


def toc_docnames(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """The book's files in reading order: the root, then every part's chapters and sections."""
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_file}: not a jb-book table of contents (no 'root')")
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts") or [{"chapters": toc.get("chapters")}]:
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", n) for n in names]


def edition_docnames(edition: str) -> list[str]:
    """The files of _toc.yml that an edition prints, in order.

    The book prints every one and fails if one is not built. The student edition may leave
    out pages on purpose (instructors' material): it prints those its site has, and fails
    only if it has none of the chapters.
    """
    site = EDITIONS[edition][0]
    docnames = toc_docnames()
    built = [d for d in docnames if (site / f"{d}.html").is_file()]
    missing = [d for d in docnames if d not in built]
    if (edition == "book" and missing) or not built:
        raise FileNotFoundError(
            f"{site}: pages of _toc.yml are not built ({', '.join(missing)}); run "
            f"`make {edition}` first.")
    for d in missing:
        print(f"  {edition}: {d} is not in the {edition} site: left out", flush=True)
    return built


def book_metadata(edition: str) -> dict:
    """Title page data: title and authors from _config.yml, the date, the git version."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    try:
        version = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version = "unknown"
    return {"title": config.get("title", "Book"), "author": config.get("author", ""),
            "edition": EDITIONS[edition][2], "date": dt.datetime.now(dt.timezone.utc).strftime("%d %B %Y"),
            "version": version}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    """Serve a folder on a free localhost port; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def print_page(tab, url: str) -> tuple[bytes, str, list[dict]]:
    """Open one page of the site, prepare it for print, and print it.

    Returns the PDF, the page's title, its section headings (level, id, text) and the
    elements links may point to (id, a text to find it by, its section).
    """
    tab.goto(url, wait_until="load", timeout=120_000)
    if tab.evaluate("() => !!document.querySelector('span.math, div.math')"):
        tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                              timeout=60_000)
        tab.evaluate("() => MathJax.startup.promise.then(() => true)")
    tab.add_style_tag(content=PRINT_CSS)
    tab.emulate_media(media="print")
    found = tab.evaluate(PREPARE_JS)
    if found["untypeset"] or found["broken"]:
        raise RuntimeError(f"{url}: not ready to print: untypeset math {found['untypeset'][:5]}, "
                           f"images that did not load {found['broken'][:5]}")
    pdf = tab.pdf(print_background=True, **PAGE)
    return pdf, found["title"], found["headings"], found["targets"]


def front_matter_html(meta: dict, parts: list[Part]) -> str:
    """Title page and contents (page numbers as in the footers: the first chapter page is 1)."""
    esc = html.escape
    rows = "\n".join(
        f'<tr><td>{esc(p.title)}</td><td class="n">{p.first_page + 1}</td></tr>' for p in parts)
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
  @page {{ size: A4; margin: 25mm 25mm; }}
  body {{ font-family: "DejaVu Sans", "Liberation Sans", sans-serif; color: #222; }}
  .title {{ height: 230mm; display: flex; flex-direction: column; justify-content: center; break-after: page; }}
  h1 {{ font-size: 34pt; margin: 0 0 6mm; }}
  .author {{ font-size: 15pt; margin-bottom: 14mm; }}
  .edition {{ font-size: 13pt; font-style: italic; margin-bottom: 4mm; }}
  .meta {{ font-size: 10pt; color: #555; }}
  h2 {{ font-size: 18pt; margin: 0 0 8mm; }}
  table {{ width: 100%; border-collapse: collapse; font-size: 11pt; }}
  td {{ padding: 1.6mm 0; border-bottom: 0.2mm dotted #aaa; }}
  td.n {{ text-align: right; width: 15mm; }}
</style></head><body>
<section class="title">
  <h1>{esc(meta['title'])}</h1>
  <div class="author">{esc(meta['author'])}</div>
  <div class="edition">{esc(meta['edition'])}</div>
  <div class="meta">{esc(meta['date'])} &middot; version {esc(meta['version'])}<br>
  Printed from the website; its interactive figures are shown at their default settings.</div>
</section>
<section><h2>Contents</h2><table>{rows}</table></section>
</body></html>"""


def footers_html(parts: list[Part], total: int) -> str:
    """One blank A4 page per book page with only its footer: the part's title and the page number."""
    owner = []
    for part in parts:
        owner += [part.title] * part.pages
    pages = "\n".join(
        f'<div class="p"><span class="t">{html.escape(owner[i])}</span><span class="n">{i + 1}</span></div>'
        for i in range(total))
    w, h = A4_MM
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
  @page {{ size: A4; margin: 0; }}
  body {{ margin: 0; font-family: "DejaVu Sans", "Liberation Sans", sans-serif; font-size: 8pt; color: #666; }}
  .p {{ position: relative; width: {w}mm; height: {h}mm; break-after: page; overflow: hidden; }}
  .t, .n {{ position: absolute; bottom: 9mm; }}
  .t {{ left: 18mm; max-width: 150mm; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
  .n {{ right: 18mm; }}
</style></head><body>{pages}</body></html>"""


def print_html(browser, content: str) -> bytes:
    tab = browser.new_page()
    try:
        tab.set_content(content, wait_until="load")
        return tab.pdf(prefer_css_page_size=True, print_background=True)
    finally:
        tab.close()


def _named_dest_positions(reader) -> dict[str, tuple[int, float, float]]:
    """Element id -> (page index, left, top) from a printed page's named destinations.

    Chromium writes one for every element that a link of the page points to (the page's
    contents list links to each section).
    """
    found = {}
    for name, dest in reader.named_destinations.items():
        try:
            page = reader.get_destination_page_number(dest)
        except Exception:   # a destination on no page: nothing to jump to
            continue
        left = float(dest.left) if dest.get("/Left") is not None else 0.0
        top = float(dest.top) if dest.get("/Top") is not None else float(reader.pages[page].mediabox.top)
        found[str(name).lstrip("/")] = (page, left, top)
    return found


def _page_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def _add_found_targets(part: Part, reader, start: int) -> None:
    """Pages for the link targets Chromium wrote no destination for.

    Chromium does not always write them (for some pages none at all). A section or a
    theorem/exercise block is then found by its heading or title in the page's text,
    searching forward in document order; any other element goes to its section's page.
    """
    texts = None   # extracted only if needed
    page = 0
    for target in part.targets:
        if target["id"] in part.dests:
            page = part.dests[target["id"]][0] - start
            continue
        probe = _page_text(target["probe"])
        if probe:
            if texts is None:
                texts = [_page_text(p.extract_text()) for p in reader.pages]
            # a section named in the contents list under the title: its second occurrence
            # (which precedes everything): search from the start, past that first one
            listed = bool(target.get("listed"))
            skip, found = int(listed), None
            for i in range(0 if listed else page, len(texts)):
                n = texts[i].count(probe)
                if n > skip:
                    found = i
                    break
                skip -= n
            if found is not None:
                page = found
                part.dests[target["id"]] = (start + found, 0.0, None)
                continue
        if target["section"] in part.dests:
            part.dests[target["id"]] = part.dests[target["section"]]


def merge(parts: list[Part], front: bytes, footers: bytes, base: str, meta: dict):
    """The book: front matter, then every part, numbered, with outline and internal links."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ArrayObject, Fit, FloatObject, NameObject, NullObject

    writer = PdfWriter()
    front_reader = PdfReader(io.BytesIO(front))
    writer.append(front_reader, import_outline=False)
    n_front = len(front_reader.pages)

    footer_pages = PdfReader(io.BytesIO(footers)).pages
    for part in parts:
        reader = PdfReader(io.BytesIO(part.pdf))
        start = len(writer.pages)
        writer.append(reader, import_outline=False)
        for i in range(len(reader.pages)):
            page = writer.pages[start + i]
            page.merge_page(footer_pages[part.first_page + i])
            page.compress_content_streams()   # merge_page leaves the page's stream uncompressed
        part.dests = {k: (p + start, left, top) for k, (p, left, top) in _named_dest_positions(reader).items()}
        _add_found_targets(part, reader, start)

        # Outline: the part, then its sections (h2) and subsections (h3).
        item = writer.add_outline_item(title=part.title, page_number=start)
        parents = {1: item}
        for h in part.headings:
            if h["id"] not in part.dests:
                continue
            index, left, top = part.dests[h["id"]]
            parent = parents.get(h["level"] - 1) or item
            parents[h["level"]] = writer.add_outline_item(
                title=h["text"], page_number=index, parent=parent,
                fit=Fit.xyz(left, top, 0) if top is not None else Fit.fit())
            for deeper in [lv for lv in parents if lv > h["level"]]:
                del parents[deeper]

    # Links. Inside a page Chromium links by destination name, and names repeat between
    # pages ("exercises"): make each an explicit destination in its own part. Links to other
    # pages of the site (http://127.0.0.1:.../x.html#id) become jumps inside the book: to the
    # target element when Chromium wrote it as a destination, else to the start of its part.
    by_path = {f"/{p.docname}.html": p for p in parts}
    start = n_front
    for part in parts:
        for page in writer.pages[start:start + part.pages]:
            for annot in page.get("/Annots") or []:
                annot = annot.get_object()
                target = None
                if isinstance(annot.get("/Dest"), (str, NameObject)):
                    target = part.dests.get(str(annot["/Dest"]).lstrip("/"))
                    if target is None:
                        del annot["/Dest"]
                        continue
                else:
                    action = annot.get("/A")
                    uri = str(action.get_object().get("/URI") or "") if action is not None else ""
                    if not uri.startswith(base + "/"):
                        continue    # a link to another website stays a web link
                    url = urlsplit(uri)
                    other = by_path.get(unquote(url.path))
                    del annot["/A"]
                    if other is None:
                        continue    # a page outside the book (index, search): no link in print
                    target = other.dests.get(unquote(url.fragment)) or (other.first_page + n_front, 0.0, None)
                index, left, top = target
                annot[NameObject("/Dest")] = ArrayObject([
                    writer.pages[index].indirect_reference, NameObject("/XYZ"), FloatObject(left),
                    FloatObject(top) if top is not None else NullObject(), FloatObject(0)])
        start += part.pages

    writer.add_metadata({"/Title": f"{meta['title']} ({meta['edition']})", "/Author": meta["author"],
                         "/Subject": f"version {meta['version']}, {meta['date']}",
                         "/Creator": "scripts/make_pdf.py (Chromium + pypdf)"})
    writer.page_mode = "/UseOutlines"
    writer.compress_identical_objects(remove_duplicates=True, remove_unreferenced=True)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue(), len(writer.pages)


def make_pdf(edition: str, browser, out_dir: Path = OUT) -> Path:
    """Print one edition's site into out_dir/<book|student>.pdf; returns the path."""
    site, name, _ = EDITIONS[edition]
    docnames = edition_docnames(edition)
    meta = book_metadata(edition)
    server, base = serve(site)
    parts = [Part(d) for d in docnames]
    try:
        # the viewport as wide as the printed column, so that the page is measured as printed
        context = browser.new_context(viewport={"width": COLUMN_PX, "height": 1000}, service_workers="block")
        # offline: the site only
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(
            (base + "/", "data:", "blob:", "about:")) else r.abort())
        tab = context.new_page()
        first = 0
        for part in parts:
            t0 = time.perf_counter()
            part.pdf, part.title, part.headings, part.targets = print_page(tab, f"{base}/{part.docname}.html")
            from pypdf import PdfReader
            part.pages = len(PdfReader(io.BytesIO(part.pdf)).pages)
            part.first_page, first = first, first + part.pages
            part.title = part.title or part.docname
            print(f"  {edition}: {part.docname}: {part.pages} pages ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
        context.close()
        front = print_html(browser, front_matter_html(meta, parts))
        footers = print_html(browser, footers_html(parts, first))
        t0 = time.perf_counter()
        data, n_pages = merge(parts, front, footers, base, meta)
        print(f"  {edition}: merged ({time.perf_counter() - t0:.1f} s)", flush=True)
    finally:
        server.shutdown()
        server.server_close()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_bytes(data)
    print(f"==> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
          f"{n_pages} pages, {len(data) / 2**20:.1f} MiB", flush=True)
    return path


def copy_into_sites(edition: str, pdf: Path) -> None:
    """Put the PDF where the websites link to it (<site>/pdf/<name>)."""
    for site_edition in COPIES[edition]:
        site = EDITIONS[site_edition][0]
        if site.is_dir():
            (site / "pdf").mkdir(exist_ok=True)
            shutil.copy2(pdf, site / "pdf" / pdf.name)


def launch_browser(pw):
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's chromium (`make chromium`) "
                                "or set NOISEGEOM_CHROMIUM to a Chromium binary")
    home = tempfile.mkdtemp(prefix="noisegeom-pdf-")
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                 env={**os.environ, "HOME": home})
    return browser, home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edition", choices=[*EDITIONS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PDFs (default _build/pdf)")
    args = parser.parse_args(argv)
    editions = list(EDITIONS) if args.edition == "all" else [args.edition]

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser, home = launch_browser(pw)
        try:
            for edition in editions:
                pdf = make_pdf(edition, browser, args.out)
                copy_into_sites(edition, pdf)
        finally:
            browser.close()
            shutil.rmtree(home, ignore_errors=True)
    print(f"==> make pdf: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
