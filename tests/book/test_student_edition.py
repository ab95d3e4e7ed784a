"""The student edition: no solution reachable from what students get.

What a student gets from `make student` (scripts/build_book.sh student): the
website `_build/student/html` (pages, search index, the `.md` and `.ipynb`
downloads under `_sources`, every script and text file) and the source tree
`_build/student/tree` that scripts/student_branch.py commits as branch
`student`, which the website's Binder buttons open.

* Unit tests (no build needed): the stripping of _ext/student_edition.py on
  small MyST snippets (both kinds of solution, nested fences, `:::`/`::::`,
  dropdowns, quoted solution syntax), its notebook counterpart, the tree
  writer, and the commit onto a branch, which must leave the checkout's work
  tree, index and HEAD alone.
* Built-edition tests (`book`): every text artifact is scanned for solution
  directives and for the distinctive lines of every solution of the full book
  (read from chapters/*.md with the same parser the build uses), and positive
  controls check that the stripping was not over-eager (every exercise
  statement is still there, every code cell outside a solution keeps its
  outputs in the notebook download) and that every launch button opens branch
  `student` at a path that exists in the tree.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import stat
import subprocess
import zlib
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from bs4 import BeautifulSoup

from conftest import BUILD, ROOT

import student_branch   # scripts/ and _ext/ (pyproject.toml: pythonpath)
from student_edition import (
    BOOK_EXTENSIONS, _block_parser, _directive_name, solution_ranges, strip_notebook, strip_solutions,
)

STUDENT = BUILD / "student"
STUDENT_HTML = STUDENT / "html"
TREE = STUDENT / "tree"
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
DIRECTIVE_MARKERS = ("{solution", "solution-start", "solution-end")
MIN_LINE = 25       # a solution line shorter than this (stripped) is not distinctive
MIN_FRAGMENT = 16   # letters and digits a searched fragment must have


# ---------------------------------------------------------------- unit tests

SNIPPET = """\
# A chapter

:::{exercise}
:label: ex-one

Show that the first statement holds for every n.
:::

:::{solution} ex-one
:class: dropdown

SECRET-ONE: by induction.
:::

Text between the two.

::::{exercise}
:label: ex-two

Compute the second quantity with code.
::::

::::{solution} ex-two
:class: dropdown

SECRET-TWO with a nested note:

:::{note}
SECRET-NOTE inside.
:::

```python
print("SECRET-CODE")
```
::::

````{solution} ex-two
:class: dropdown

```python
x = "SECRET-BACKTICK"
```
````

:::::{solution-start} ex-two
:class: dropdown
:::::

SECRET-GATED text.

```{code-cell} ipython3
print("SECRET-GATED-CELL")
```

::::{tip}
SECRET-GATED-TIP
::::

:::::{solution-end}
:::::

```{code-cell} ipython3
print("kept cell")
```

::::{admonition} Quoted syntax
```markdown
:::{solution} ex-two
an example of the syntax, not a solution
:::
```
::::

::::{dropdown} A dropdown holding a solution
:::{solution} ex-one
SECRET-IN-DROPDOWN
:::
Visible dropdown text.
::::

Last line.
"""


def test_strip_solutions_removes_both_kinds():
    out = strip_solutions(SNIPPET)
    assert "SECRET" not in out, [line for line in out.splitlines() if "SECRET" in line]
    assert "solution-start" not in out and "solution-end" not in out
    for kept in ("Show that the first statement holds for every n.", "Text between the two.",
                 "Compute the second quantity with code.", 'print("kept cell")',
                 "an example of the syntax, not a solution", "Visible dropdown text.", "Last line."):
        assert kept in out, kept
    # The quoted example inside a code block is kept verbatim, and nothing else.
    assert out.count("{solution}") == 1 and ":::{solution} ex-two\nan example" in out
    # Removals leave no runs of blank lines behind.
    assert "\n\n\n" not in out


def test_solution_ranges_are_the_blocks():
    lines = SNIPPET.splitlines()
    ranges = solution_ranges(SNIPPET)
    starts = [lines[a] for a, _ in ranges]
    ends = [lines[b - 1] for _, b in ranges]
    assert starts == [":::{solution} ex-one", "::::{solution} ex-two", "````{solution} ex-two",
                      ":::::{solution-start} ex-two", ":::{solution} ex-one"]
    assert ends == [":::", "::::", "````", ":::::", ":::"]
    # The gated solution's range holds its code cell.
    a, b = ranges[3]
    assert any("SECRET-GATED-CELL" in line for line in lines[a:b])


def test_strip_keeps_text_without_solutions_and_is_idempotent():
    text = "# Title\n\n:::{exercise}\n:label: ex\n% for instructors: 5 min; goal: x\nDo it.\n:::\n"
    assert strip_solutions(text, instructor_notes=False) == text
    out = strip_solutions(text)
    assert "for instructors" not in out and "Do it." in out
    assert strip_solutions(out) == out
    assert strip_solutions(strip_solutions(SNIPPET)) == strip_solutions(SNIPPET)


@pytest.mark.parametrize("text, message", [
    (":::{solution-start} ex\n:::\n\ntext\n", "without {solution-end}"),
    ("text\n\n:::{solution-end}\n:::\n", "without {solution-start}"),
    (":::{solution-start} a\n:::\n:::{solution-start} b\n:::\n:::{solution-end}\n:::\n", "before the previous"),
])
def test_unbalanced_gated_solutions_are_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        solution_ranges(text)


def test_bad_input_type():
    with pytest.raises(TypeError, match="must be a str"):
        solution_ranges(b":::{solution} x\n:::\n")


NOTEBOOK_TEXT = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# Chapter

```{code-cell} ipython3
a = 1
```

:::{exercise}
:label: ex-code

Print a.
:::

:::{solution-start} ex-code
:::

Explanation of the answer SECRET.

```{code-cell} ipython3
print("SECRET", a)
```

:::{solution-end}
:::

Text after.

```{code-cell} ipython3
print(a + 1)
```
"""


def _executed(text: str) -> dict:
    """What myst-nb writes after running ``text``: every cell, outputs on code cells."""
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    nb = read_myst_markdown_notebook(text, MdParserConfig(enable_extensions=set(BOOK_EXTENSIONS)))
    nb = json.loads(json.dumps(nb))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": f"out {i}\n"}]
            cell["execution_count"] = i
    return nb


def test_strip_notebook_keeps_outputs_of_the_other_cells():
    executed = _executed(NOTEBOOK_TEXT)
    out = strip_notebook(executed, NOTEBOOK_TEXT)
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in out["cells"]]
    assert not any("SECRET" in s or "solution" in s for s in sources), sources
    code = [c for c in out["cells"] if c["cell_type"] == "code"]
    assert [c["source"] for c in code] == ["a = 1", "print(a + 1)"]
    run = {c["source"]: c["outputs"] for c in executed["cells"] if c["cell_type"] == "code"}
    assert all(c["outputs"] == run[c["source"]] and c["outputs"] for c in code)
    assert any("Print a." in s for s in sources) and any("Text after." in s for s in sources)
    assert out["metadata"] == executed["metadata"]


def test_strip_notebook_refuses_a_stale_notebook():
    executed = _executed(NOTEBOOK_TEXT)
    stale = NOTEBOOK_TEXT.replace("print(a + 1)", "print(a + 2)")
    with pytest.raises(ValueError, match="stale"):
        strip_notebook(executed, stale)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


def test_commit_tree_leaves_the_checkout_alone(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "book.md").write_text("with solutions\n")
    _git(repo, "add", "book.md")
    _git(repo, "commit", "-q", "-m", "first")
    # A checkout in the middle of work: a staged change, an unstaged one, an untracked file.
    (repo / "book.md").write_text("staged\n")
    _git(repo, "add", "book.md")
    (repo / "book.md").write_text("unstaged\n")
    (repo / "new.txt").write_text("untracked\n")
    before = (_git(repo, "status", "--porcelain"), (repo / ".git" / "index").read_bytes(),
              _git(repo, "rev-parse", "HEAD"), _git(repo, "symbolic-ref", "HEAD"))

    tree = tmp_path / "tree"
    (tree / "chapters").mkdir(parents=True)
    (tree / "chapters" / "01.md").write_text("no solutions\n")
    (tree / "start").write_text("#!/bin/sh\n")
    (tree / "start").chmod(0o755)
    commit, new = student_branch.commit_tree(tree, repo=repo, branch="student")
    assert new
    after = (_git(repo, "status", "--porcelain"), (repo / ".git" / "index").read_bytes(),
             _git(repo, "rev-parse", "HEAD"), _git(repo, "symbolic-ref", "HEAD"))
    assert after == before
    assert (repo / "book.md").read_text() == "unstaged\n"
    assert _git(repo, "rev-parse", "student").strip() == commit
    listing = _git(repo, "ls-tree", "-r", "student").splitlines()
    assert sorted(line.split("\t")[1] for line in listing) == ["chapters/01.md", "start"]
    assert any(line.startswith("100755") and line.endswith("\tstart") for line in listing)
    assert _git(repo, "show", "student:chapters/01.md") == "no solutions\n"
    assert _git(repo, "rev-list", "--count", "student").strip() == "1"  # its own history, not main's

    # The same tree again: no new commit. A changed tree: a child of the last one.
    assert student_branch.commit_tree(tree, repo=repo, branch="student") == (commit, False)
    (tree / "chapters" / "02.md").write_text("more\n")
    second, new = student_branch.commit_tree(tree, repo=repo, branch="student")
    assert new and _git(repo, "rev-parse", f"{second}^").strip() == commit
    assert _git(repo, "status", "--porcelain") == before[0]

    # A branch that is checked out is not moved under its checkout's feet.
    with pytest.raises(ValueError, match="checked out"):
        student_branch.commit_tree(tree, repo=repo, branch="main")
    with pytest.raises(ValueError, match="non-empty folder"):
        student_branch.commit_tree(tmp_path / "missing", repo=repo)


def test_write_tree(tmp_path):
    dest = tmp_path / "tree"
    info = student_branch.write_tree(dest)
    files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert set(info["files"]) == files
    for need in ("README.md", "pyproject.toml", "requirements.txt", "jupytext.toml", "references.bib",
                 "noisegeom/__init__.py", ".binder/postBuild", ".binder/requirements.txt"):
        assert need in files, need
    _check_tree_contents(dest)
    # It replaces its own earlier tree, never another folder.
    student_branch.write_tree(dest)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        student_branch.write_tree(other)
    assert (other / "keep.txt").exists()


def _check_tree_contents(tree: Path) -> None:
    files = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    for forbidden in ("tests/", "scripts/", "_ext/", ".git/"):
        assert not any(f.startswith(forbidden) for f in files), forbidden
    # assignments/ of the repository holds the hidden checks; only the student
    # notebooks of `make assignments` may be there, one folder per chapter.
    built = sorted(p.parent.name for p in (ROOT / "_build" / "assignments").glob("*/student") if p.is_dir())
    present = sorted({f.split("/")[1] for f in files if f.startswith("assignments/")})
    assert present == built
    assert not any(f.startswith("assignments/") and f.count("/") == 1 for f in files)
    for hidden in (ROOT / "assignments").glob("*.py"):
        assert not any(Path(f).name == hidden.name for f in files), hidden.name
    for script in (".binder/postBuild", ".binder/start"):
        assert (tree / script).stat().st_mode & stat.S_IXUSR, script
    for chapter in CHAPTERS:
        rel = f"chapters/{chapter.name}"
        assert rel in files, rel
        assert (tree / rel).read_text(encoding="utf-8") == strip_solutions(chapter.read_text(encoding="utf-8"))


# ------------------------------------------------ the full book's solutions

def _norm(text: str) -> str:
    """Letters and digits only, lower case: the same on a source line and its rendering
    (markup, math delimiters, smart quotes, line breaks and HTML escapes all drop out)."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_ROLE = re.compile(r"\{[\w:.-]+\}`[^`]*`")


def _fragments(line: str) -> list[str]:
    """Normalised pieces of a source line that survive rendering verbatim: a link
    becomes its text, and a role (rendered as something else) splits the line."""
    line = _LINK.sub(r"\1", line)
    return [n for n in (_norm(p) for p in _ROLE.split(line)) if len(n) >= MIN_FRAGMENT]


def _directive_blocks(text: str, names: set[str]) -> list[tuple[int, int]]:
    """Line ranges of the top-level (or nested) directives called ``names``."""
    parser = _block_parser(BOOK_EXTENSIONS)
    found: list[tuple[int, int]] = []

    def walk(chunk: str, offset: int) -> None:
        for token in parser.parse(chunk + "\n"):
            if token.type in ("fence", "colon_fence") and token.map:
                name = _directive_name(token.info)
                if name in names:
                    found.append((offset + token.map[0], offset + token.map[1]))
                elif name and name not in {"code-cell", "code", "code-block", "math"}:
                    walk(token.content, offset + token.map[0] + 1)

    walk(text, 0)
    return found


def _given_to_students() -> list[str]:
    """What the student materials hold on purpose although a solution has it too.

    An auto-checked exercise's assignment gives the student the imports, signatures
    and docstrings of its solution's first cell (scripts/make_assignments.py hides only
    the bodies) and its public checks, which may build test inputs as a solution
    does; and the API appendix renders the package's docstrings, whose
    numpydoc lines can read like a solution's docstring.
    """
    import make_assignments

    given = []
    for chapter in make_assignments.toc_chapters():
        module = make_assignments.load_checks(chapter)
        checks = make_assignments.checks_of(module) if module else []
        checked = {c.label for c in checks}
        # the public checks ship with the student's notebook (tests/), by design
        given += [c.source for c in checks if not c.hidden]
        for exercise in make_assignments.exercises(chapter):
            if exercise.label not in checked:
                continue
            inside = False
            for line in make_assignments.mark_solution(exercise.code, set()).splitlines():
                if line.strip() in ("# BEGIN SOLUTION", "# END SOLUTION"):
                    inside = line.strip() == "# BEGIN SOLUTION"
                elif not inside:
                    given.append(line)
    api = ROOT / "_build" / "html" / "chapters" / "A_api.html"
    if api.exists():
        given.append(re.sub(r"<[^>]+>", " ", api.read_text(encoding="utf-8")))
    return given


@lru_cache(maxsize=None)
def solution_needles() -> tuple[dict[str, tuple[str, int, str]], int]:
    """Fragments of the full book's solution lines that occur nowhere else in it.

    Returns ({fragment: (chapter, line number, line)}, number of solutions).
    """
    inside, outside, n_solutions = [], [], 0
    for chapter in CHAPTERS:
        text = chapter.read_text(encoding="utf-8")
        lines = text.splitlines()
        ranges = solution_ranges(text)
        n_solutions += len(ranges)
        in_solution = {i for a, b in ranges for i in range(a, b)}
        for i, line in enumerate(lines):
            (inside if i in in_solution else outside).append((chapter.name, i + 1, line))
    # Text that is not from the chapters at all (the package, shipped in the tree and
    # rendered on the API page) is not a solution either, even where a line agrees.
    own = [p for folder in ("noisegeom", ".binder") for p in sorted((ROOT / folder).rglob("*"))
           if p.is_file() and p.suffix not in {".pyc"}]
    own += [ROOT / name for name in student_branch.FILES]
    elsewhere = _norm("\n".join([line for *_, line in outside] + _given_to_students()
                                 + [p.read_text(encoding="utf-8", errors="replace") for p in own]))
    needles = {}
    for name, number, line in inside:
        if len(line.strip()) < MIN_LINE:
            continue
        for fragment in _fragments(line):
            if fragment not in elsewhere:
                needles.setdefault(fragment, (name, number, line.strip()))
    return needles, n_solutions


def test_solution_needles_are_enough():
    """The scan below searches for something: every solution of the book has
    distinctive lines (a solution without any would pass unseen)."""
    needles, n_solutions = solution_needles()
    # Counted another way: the opening lines of the two kinds.
    opening = re.compile(r"^(:{3,}|`{3,})\{solution(-start)?\}", re.M)
    assert n_solutions == sum(len(opening.findall(p.read_text(encoding="utf-8"))) for p in CHAPTERS)
    assert n_solutions >= 40, n_solutions
    per_solution = {}
    for chapter in CHAPTERS:
        text = chapter.read_text(encoding="utf-8")
        for a, b in solution_ranges(text):
            per_solution[(chapter.name, a + 1)] = sum(
                1 for _, (name, number, _) in needles.items() if name == chapter.name and a < number <= b)
    empty = [key for key, count in per_solution.items() if count == 0]
    assert not empty, f"solutions with no distinctive line to search for: {empty}"


# ------------------------------------------------ the built student edition

@pytest.fixture(scope="session")
def student_build() -> Path:
    """_build/student (site and tree) from `make student`; fails clearly without it."""
    missing = [p for p in (STUDENT_HTML / "index.html", TREE / "README.md", STUDENT / "build.rc")
               if not p.exists()]
    if missing:
        pytest.fail(f"the student edition has not been built ({', '.join(map(str, missing))} missing): "
                    "run `make student` (scripts/build_book.sh student) before pytest", pytrace=False)
    rc = (STUDENT / "build.rc").read_text().strip()
    if rc != "0":
        pytest.fail(f"the student edition's build failed (exit {rc}); see {STUDENT / 'build.log'}",
                    pytrace=False)
    return STUDENT


class Artifact:
    """One text file a student can reach, as raw text and as the text a reader sees."""

    def __init__(self, path: Path, raw: str):
        self.path, self.raw = path, raw
        self.soup = None
        if path.suffix == ".html":
            self.soup = BeautifulSoup(raw, "html.parser")
            self.views = [("text", self.soup.get_text("\n"))]
        elif path.suffix == ".ipynb":
            self.views = [("cells", _notebook_text(json.loads(raw)))]
        else:
            self.views = []
        self.views.append(("raw", raw))
        self._norm = {}

    def normalised(self, view: str):
        if view not in self._norm:
            text = dict(self.views)[view]
            starts, parts, pos = [], [], 0
            for line in text.splitlines():
                starts.append(pos)
                part = _norm(line)
                parts.append(part)
                pos += len(part)
            self._norm[view] = ("".join(parts), starts)
        return self._norm[view]

    def find(self, fragment: str) -> tuple[str, int] | None:
        for view, _ in self.views:
            text, starts = self.normalised(view)
            at = text.find(fragment)
            if at >= 0:
                return view, bisect.bisect_right(starts, at)
        return None


def _notebook_text(nb: dict) -> str:
    out = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        out.append("".join(source) if isinstance(source, list) else source)
        for output in cell.get("outputs", []):
            for value in [output.get("text", ""), *output.get("data", {}).values()]:
                if isinstance(value, list):
                    value = "".join(value)
                if isinstance(value, str) and len(value) < 200_000:  # not an image
                    out.append(value)
    return "\n".join(out)


@lru_cache(maxsize=None)
def student_artifacts() -> tuple[list[Artifact], list[Path]]:
    """Every text file under the student site and tree (and the binary ones skipped)."""
    texts, binary = [], []
    for base in (STUDENT_HTML, TREE):
        for path in sorted(base.resolve().rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if path.name == "objects.inv":  # Sphinx's inventory: 4 header lines, then zlib
                header = data.split(b"\n", 4)
                data = b"\n".join(header[:4]) + b"\n" + zlib.decompress(header[4])
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError:
                binary.append(path)
                continue
            if "\0" in raw:
                binary.append(path)
                continue
            texts.append(Artifact(path, raw))
    return texts, binary


def _where(path: Path) -> str:
    for base in (STUDENT_HTML.resolve(), TREE.resolve()):
        if path.is_relative_to(base):
            return f"{'html' if base == STUDENT_HTML.resolve() else 'tree'}/{path.relative_to(base)}"
    return str(path)


@pytest.mark.book
def test_student_artifacts_cover_the_site_and_tree(student_build):
    texts, binary = student_artifacts()
    where = [_where(a.path) for a in texts]
    for need in ("html/searchindex.js", "html/objects.inv", "html/chapters/01_sgd_in_one_picture.html",
                 "html/_sources/chapters/01_sgd_in_one_picture.md",
                 "html/_sources/chapters/01_sgd_in_one_picture.ipynb",
                 "tree/chapters/01_sgd_in_one_picture.md", "tree/README.md"):
        assert need in where, need
    # Only images, fonts and compressed data may go unread.
    unread = {p.suffix for p in binary} - {".png", ".webp", ".woff", ".woff2", ".ttf", ".eot", ".jpg",
                                          ".gif", ".ico", ".pickle", ".zip", ".pdf"}
    assert not unread, sorted(str(p) for p in binary if p.suffix in unread)
    print(f"student artifacts: {len(texts)} text files scanned, {len(binary)} binary files skipped")


@pytest.mark.book
def test_no_solution_directive_in_student_artifacts(student_build):
    hits = []
    for artifact in student_artifacts()[0]:
        for view, text in artifact.views:
            for number, line in enumerate(text.splitlines(), 1):
                if any(marker in line for marker in DIRECTIVE_MARKERS):
                    hits.append(f"{_where(artifact.path)} ({view}) line {number}: {line.strip()[:120]}")
    assert not hits, "solution directives in the student edition:\n" + "\n".join(hits[:40])
    # No label of a removed solution is left in the inventory (a link to nowhere).
    inventory = next(a for a in student_artifacts()[0] if a.path.name == "objects.inv")
    labels = [line for line in inventory.raw.splitlines() if re.search(r"-solution-\d+ std:label", line)]
    assert not labels, labels[:5]


@pytest.mark.book
def test_no_solution_text_in_student_artifacts(student_build):
    needles, n_solutions = solution_needles()
    texts, _ = student_artifacts()
    hits = []
    for artifact in texts:
        for fragment, (chapter, number, line) in needles.items():
            found = artifact.find(fragment)
            if found:
                view, at = found
                hits.append(f"{_where(artifact.path)} ({view}) line {at}: solution line "
                            f"{chapter}:{number}: {line[:100]}")
    print(f"scanned {len(texts)} text files for {len(needles)} fragments of the {n_solutions} "
          "solutions of the full book")
    assert not hits, f"{len(hits)} solution lines in the student edition:\n" + "\n".join(hits[:40])


@pytest.mark.book
def test_every_exercise_statement_is_in_the_student_edition(student_build):
    """Positive control: the stripping removed solutions, not exercises."""
    missing, checked = [], 0
    by_path = {a.path: a for a in student_artifacts()[0]}
    for chapter in CHAPTERS:
        text = chapter.read_text(encoding="utf-8")
        blocks = _directive_blocks(text, {"exercise", "exercise-start"})
        if not blocks:
            continue
        lines = text.splitlines()
        rel = f"chapters/{chapter.stem}"
        targets = [by_path[p.resolve()] for p in (
            STUDENT_HTML / f"{rel}.html", STUDENT_HTML / "_sources" / f"{rel}.md", TREE / f"{rel}.md",
            STUDENT_HTML / "_sources" / f"{rel}.ipynb") if p.exists()]
        page = targets[0].soup
        assert len(page.select("div.exercise")) == len(blocks), (
            f"{rel}.html shows {len(page.select('div.exercise'))} exercises, the source has {len(blocks)}")
        for a, b in blocks:
            for number in range(a + 1, b - 1):
                line = lines[number].strip()
                if len(line) < MIN_LINE or line.startswith(("%", ":")):
                    continue
                for fragment in _fragments(line):
                    checked += 1
                    for target in targets:
                        if target.find(fragment) is None:
                            missing.append(f"{_where(target.path)}: {chapter.name}:{number + 1}: {line[:80]}")
    assert checked > 100, checked
    assert not missing, "exercise text missing from the student edition:\n" + "\n".join(missing[:40])


@pytest.mark.book
def test_notebook_downloads_keep_the_other_cells_and_outputs(student_build):
    """The .ipynb download is the executed chapter minus the solutions' cells."""
    import nbformat
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    cache = get_cache(BUILD / ".jupyter_cache")
    config = MdParserConfig(enable_extensions=set(BOOK_EXTENSIONS))
    checked = 0
    for notebook in sorted((STUDENT_HTML / "_sources" / "chapters").glob("*.ipynb")):
        text = (ROOT / "chapters" / f"{notebook.stem}.md").read_text(encoding="utf-8")
        full = read_myst_markdown_notebook(text, config)
        _, executed = cache.merge_match_into_notebook(full)
        # Both through nbformat's writer, which spells multi-line strings one way.
        expected = json.loads(nbformat.writes(nbformat.from_dict(
            strip_notebook(json.loads(nbformat.writes(executed)), text))))
        got = json.loads(nbformat.writes(nbformat.read(notebook, as_version=4)))
        got_code = [(_joined(c["source"]), c["outputs"]) for c in got["cells"] if c["cell_type"] == "code"]
        want_code = [(_joined(c["source"]), c["outputs"]) for c in expected["cells"]
                     if c["cell_type"] == "code"]
        assert [s for s, _ in got_code] == [s for s, _ in want_code], notebook.name
        assert [o for _, o in got_code] == [o for _, o in want_code], f"{notebook.name}: outputs differ"
        assert any(o for _, o in got_code), f"{notebook.name} has no outputs"
        n_full = sum(c.cell_type == "code" for c in full.cells)
        checked += 1
        print(f"{notebook.name}: {len(got_code)} of {n_full} code cells, "
              f"{sum(bool(o) for _, o in got_code)} with outputs")
    assert checked >= 8, checked


def _joined(source) -> str:
    return "".join(source) if isinstance(source, list) else source


@pytest.mark.book
def test_downloads_and_tree_are_the_stripped_text(student_build):
    for chapter in CHAPTERS:
        stripped = strip_solutions(chapter.read_text(encoding="utf-8"))
        for copy in (STUDENT_HTML / "_sources" / "chapters" / chapter.name, TREE / "chapters" / chapter.name):
            assert copy.read_text(encoding="utf-8") == stripped, copy


@pytest.mark.book
def test_student_tree(student_build):
    _check_tree_contents(TREE)


@pytest.mark.book
def test_launch_buttons_open_branch_student_at_paths_in_the_tree(student_build):
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    org, repo = cfg["repository"]["url"].rstrip("/").split("/")[-2:]
    launches, problems = 0, []
    for artifact in student_artifacts()[0]:
        if artifact.soup is None:
            continue
        page = artifact.path
        for a in artifact.soup.find_all("a", href=True):
            url = urlparse(a["href"])
            if re.search(r"/(blob|tree|edit)/main\b", url.path) and repo in url.path:
                problems.append(f"{_where(page)}: link to the default branch {a['href']}")
            if not url.path.startswith("/v2/"):  # a launch button (not a mention of Binder)
                continue
            launches += 1
            match = re.fullmatch(rf"/v2/gh/{org}/{repo}/([^/]+)", url.path)
            path = parse_qs(url.query).get("urlpath", [""])[0]
            if not match or match.group(1) != "student":
                problems.append(f"{_where(page)}: launch button not on branch student: {a['href']}")
            rel = path.removeprefix("lab/tree/").removeprefix("tree/")
            if not rel or not (TREE / rel).is_file():
                problems.append(f"{_where(page)}: launch path {path!r} is not a file of the tree")
    n_chapters = sum(1 for p in CHAPTERS if p.stem[:2].isdigit() and "```{code-cell}" in p.read_text())
    assert launches >= n_chapters, f"{launches} launch buttons for {n_chapters} chapters with code"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_student_notebook_needs_nothing_from_a_solution(chapter):
    """A student runs the chapter without its solutions' cells: no later cell may use a
    name that only a solution's cell defines (it would raise NameError on Binder)."""
    import ast
    import builtins

    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    text = chapter.read_text(encoding="utf-8")
    nb = read_myst_markdown_notebook(text, MdParserConfig(enable_extensions=set(BOOK_EXTENSIONS)),
                                     add_source_map=True)
    in_solution = {i for a, b in solution_ranges(text) for i in range(a, b)}
    from_solutions, available, problems = set(), set(dir(builtins)), []
    for cell, line in zip(nb.cells, nb.metadata["source_map"]):
        if cell.cell_type != "code":
            continue
        # IPython magics and shell lines are not Python.
        source = "\n".join(s for s in cell.source.splitlines() if not s.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        if line - 1 in in_solution:
            from_solutions |= bound - available
            continue
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        missing = (used & from_solutions) - available
        if missing:
            problems.append(f"{chapter.name}:{line}: uses {sorted(missing)}, defined only in a solution")
        available |= bound
    assert not problems, "\n".join(problems)
