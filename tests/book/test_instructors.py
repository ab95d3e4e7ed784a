"""Appendix B, "For instructors" (chapters/B_instructors.md), and the exercise metadata it is built from.

Checked here:

* every exercise of the book carries a valid metadata line (``% for instructors: 15 min; goal:
  ...``), and ``scripts/exercise_table.py`` refuses bad ones with a message naming the chapter
  and the label;
* the generated table of the appendix is current, lists every exercise exactly once, and its
  kind, difficulty and auto-checked columns follow the sources (on small books of our own);
* the numbers it gives ("Exercise 2.3") are those sphinx-exercise gives on the built site;
* the appendix has its course shapes and misconceptions, and every link of it into a chapter
  names an exercise, statement or heading that exists there, under its current number.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conftest import HTML, ROOT

APPENDIX = ROOT / "chapters" / "B_instructors.md"


def _load_script():
    spec = importlib.util.spec_from_file_location("exercise_table", ROOT / "scripts" / "exercise_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


et = _load_script()


def _chapter_sources() -> list[Path]:
    """The numbered chapters, in the order of _toc.yml."""
    return [path for number, path in et.toc_chapters(ROOT) if number is not None]


def _labels_in_sources() -> list[tuple[str, str]]:
    """(document, label) of every exercise, found independently of the script: the ``:label:``
    line that follows an ``{exercise}`` opening."""
    out = []
    for path in _chapter_sources():
        text = path.read_text(encoding="utf-8")
        for label in re.findall(r"(?m)^[:`]{3,}\{exercise(?:-start)?\}.*\n(?::[^\n]*\n)*?:label:\s*(\S+)", text):
            out.append((path.stem, label))
    return out


def _section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section of ``text``, up to the next ``## ``."""
    m = re.search(rf"(?ms)^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text)
    assert m, f"no section '## {heading}' in {APPENDIX.name}"
    return m.group(1)


# ------------------------------------------------------------------ the book's exercises

def test_table_is_current():
    assert et.is_current(ROOT), (
        f"the exercise table of {APPENDIX.name} is stale: run .venv/bin/python scripts/exercise_table.py")


def test_every_exercise_has_valid_metadata():
    exercises = et.collect(ROOT)         # raises ExerciseError naming chapter and label otherwise
    found = _labels_in_sources()
    assert len(found) >= 40
    assert sorted((ex.doc, ex.label) for ex in exercises) == sorted(found)
    for ex in exercises:
        assert et.MIN_MINUTES <= ex.minutes <= et.MAX_MINUTES, ex
        assert ex.goal[0].islower() and not ex.goal.endswith("."), ex
    # the line itself, exactly where the brief puts it: right after the options
    for path in _chapter_sources():
        lines = path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if re.match(r"^[:`]{3,}\{exercise\}", line):          # (gated ones: collect() above)
                j = i + 1
                while lines[j].startswith(":") and not lines[j].startswith(":::"):
                    j += 1
                assert et.META.match(lines[j]), f"{path.name}:{j + 1}: {lines[j]!r}"


def test_numbering_is_per_chapter_in_document_order():
    exercises = et.collect(ROOT)
    chapters = [ex.chapter for ex in exercises]
    assert chapters == sorted(chapters)
    for c in set(chapters):
        numbers = [ex.number for ex in exercises if ex.chapter == c]
        assert numbers == list(range(1, len(numbers) + 1))
    assert all(ex.chapter == int(ex.doc[:2]) for ex in exercises)      # 02_... is chapter 2


def test_every_label_appears_once_in_the_table():
    text = APPENDIX.read_text(encoding="utf-8")
    block = et.BLOCK.search(text)
    assert block, "no generated table in the appendix"
    rows = [line for line in block.group(0).splitlines() if line.startswith("| [Exercise ")]
    linked = Counter(re.match(r"\| \[Exercise \d+\.\d+\]\((\w+)\.md#([\w-]+)\)", row).groups() for row in rows)
    expected = Counter(_labels_in_sources())
    assert linked == expected, (f"missing: {sorted(set(expected) - set(linked))}, "
                                f"extra or repeated: {sorted((linked - expected).elements())}")


@pytest.mark.book
def test_numbers_match_the_website():
    """The n-th exercise of chapter c is "Exercise c.n" on the built site (sphinx-exercise)."""
    assert HTML.is_dir(), "no built book in _build/html: make test builds it first"
    pages = {}
    for ex in et.collect(ROOT):
        page = pages.setdefault(ex.doc, (HTML / "chapters" / f"{ex.doc}.html").read_text(encoding="utf-8"))
        m = re.search(rf'id="{re.escape(ex.label)}">\s*<p class="admonition-title">'
                      r'<span class="caption-number">(Exercise [\d.]+) ', page)
        assert m, f"{ex.label}: no numbered exercise with this id in {ex.doc}.html"
        assert m.group(1) == ex.name, f"{ex.label}: the site says {m.group(1)!r}, the table {ex.name!r}"
    appendix = (HTML / "chapters" / "B_instructors.html").read_text(encoding="utf-8")
    assert appendix.count('<table') >= 3


# ------------------------------------------------------------------ the script, on small books

CHAPTER = """\
# A chapter

::::{{exercise}} First (warm-up)
:label: ex-a-first
{meta}

(a) Show that one plus one is two.
::::

::::{{solution}} ex-a-first
:class: dropdown

By counting.
::::

::::{{exercise}} Second (coding, challenging)
:label: ex-a-second
% for instructors: 40 min; goal: write a function

Write `f`.
::::

::::{{solution-start}} ex-a-second
:class: dropdown
::::

```{{code-cell}} ipython3
def f():
    return 2
```

::::{{solution-end}}
::::

::::{{exercise}} Third
:label: ex-a-third
% for instructors: 25 min; goal: derive a bound and check it

(Pen and paper, then code.) Prove it, then compute it.
::::

::::{{exercise}}
:label: ex-a-fourth
% for instructors: 30 min; goal: show a fact and check it numerically

Show that it holds.
::::

::::{{solution}} ex-a-fourth
```python
print(1)
```
::::
"""

APPENDIX_STUB = f"""\
# For instructors

{et.BEGIN}
{et.END}
"""


def _book(tmp_path: Path, meta: str = "% for instructors: 10 min; goal: add two numbers",
          assignments: str | None = None) -> Path:
    root = tmp_path / "book"
    (root / "chapters").mkdir(parents=True)
    (root / "_toc.yml").write_text(textwrap.dedent("""\
        format: jb-book
        root: chapters/00_preface
        parts:
          - caption: Chapters
            numbered: true
            chapters:
              - file: chapters/01_empty
              - file: chapters/02_a
          - caption: Back matter
            chapters:
              - file: chapters/B_instructors
        """))
    (root / "chapters" / "00_preface.md").write_text("# Preface\n")
    (root / "chapters" / "01_empty.md").write_text("# Empty\n")
    (root / "chapters" / "02_a.md").write_text(CHAPTER.format(meta=meta))
    (root / "chapters" / "B_instructors.md").write_text(APPENDIX_STUB)
    if assignments is not None:
        (root / "assignments").mkdir()
        (root / "assignments" / "02_a.py").write_text(assignments)
    return root


def test_columns_follow_the_sources(tmp_path):
    root = _book(tmp_path)
    exercises = {ex.label: ex for ex in et.collect(root)}
    first, second, third, fourth = (exercises[f"ex-a-{k}"] for k in ("first", "second", "third", "fourth"))
    assert [ex.name for ex in (first, second, third, fourth)] == [f"Exercise 2.{k}" for k in (1, 2, 3, 4)]
    assert first.link == "[Exercise 2.1](02_a.md#ex-a-first)"
    assert (first.title, first.kind, first.difficulty, first.minutes) == ("First", "pen and paper", "warm-up", 10)
    assert (second.title, second.kind, second.difficulty) == ("Second", "code", "challenging")
    assert (third.title, third.kind, third.difficulty) == ("Third", "pen and paper + code", "standard")
    assert (fourth.title, fourth.kind) == ("", "pen and paper + code")       # a proof and a code block
    assert not any(ex.auto_checked for ex in exercises.values())


def test_auto_checked_follows_the_assignment_module(tmp_path):
    checks = 'from otter_checks import check\n\n@check("ex-a-second", hidden=True)\ndef t(f):\n    assert f() == 2\n'
    root = _book(tmp_path, assignments=checks)
    flags = {ex.label: ex.auto_checked for ex in et.collect(root)}
    assert flags == {"ex-a-first": False, "ex-a-second": True, "ex-a-third": False, "ex-a-fourth": False}
    # a label that only starts like another one is not checked
    root2 = _book(tmp_path / "2", assignments='@check("ex-a-second-part")\ndef t(): pass\n')
    assert not any(ex.auto_checked for ex in et.collect(root2))


def test_rewrite_and_check(tmp_path, monkeypatch):
    root = _book(tmp_path, assignments='@check("ex-a-first")\ndef t(): pass\n')
    monkeypatch.setattr(et, "ROOT", root)
    assert not et.is_current(root)
    assert et.main(["--check"]) == 1
    assert et.main([]) == 0
    assert et.is_current(root) and et.main(["--check"]) == 0
    text = (root / "chapters" / "B_instructors.md").read_text()
    assert "| [Exercise 2.1](02_a.md#ex-a-first): First | pen and paper; warm-up | 10 min | add two numbers | yes |" in text
    assert "| [Exercise 2.4](02_a.md#ex-a-fourth) | pen and paper + code; standard | 30 min |" in text
    assert "| **All** | 4 | 1 | 3 | 1 | 105 min (1 h 45) |" in text
    # an edit to the metadata makes the table stale again
    chapter = root / "chapters" / "02_a.md"
    chapter.write_text(chapter.read_text().replace("40 min", "45 min"))
    assert et.main(["--check"]) == 1


@pytest.mark.parametrize("meta, message", [
    ("", "the first line after the options must be the metadata line"),
    ("% for instructors: about 10 min; goal: add", "malformed metadata line"),
    ("% for instructors: 10 min, goal: add two numbers", "malformed metadata line"),
    ("% for instructors: 120 min; goal: add two numbers", "outside 5-90 min"),
    ("% for instructors: 3 min; goal: add two numbers", "outside 5-90 min"),
    ("% for instructors: 10 min; goal: Add two numbers", "must start in lower case"),
    ("% for instructors: 10 min; goal: add two numbers.", "without a final period"),
    ("% for instructors: 10 min; goal: add two numbers. Then subtract them", "must be one sentence"),
    ("% for instructors: 10 min; goal: add |x| and |y|", "must not contain '|'"),
])
def test_bad_metadata_names_chapter_and_label(tmp_path, meta, message, capsys, monkeypatch):
    root = _book(tmp_path, meta=meta)
    with pytest.raises(et.ExerciseError) as err:
        et.collect(root)
    assert message in str(err.value)
    assert "chapters/02_a.md" in str(err.value) and "'ex-a-first'" in str(err.value)
    monkeypatch.setattr(et, "ROOT", root)
    assert et.main(["--check"]) == 1
    assert "ex-a-first" in capsys.readouterr().err


def test_a_gated_exercise_has_its_metadata_after_the_directive(tmp_path):
    root = _book(tmp_path)
    chapter = root / "chapters" / "02_a.md"
    gated = ("\n::::{exercise-start} Fifth (coding)\n:label: ex-a-fifth\n::::\n\n"
             "% for instructors: 35 min; goal: fill in a function\n\nComplete\n\n"
             "```{code-cell} ipython3\ndef g():\n    ...\n```\n\n::::{exercise-end}\n::::\n")
    chapter.write_text(chapter.read_text() + gated)
    fifth = et.collect(root)[-1]
    assert (fifth.name, fifth.label, fifth.title, fifth.kind, fifth.minutes) == (
        "Exercise 2.5", "ex-a-fifth", "Fifth", "code", 35)
    chapter.write_text(chapter.read_text().replace("% for instructors: 35 min; goal: fill in a function\n", ""))
    with pytest.raises(et.ExerciseError, match="'ex-a-fifth': the first line after the options"):
        et.collect(root)


def test_an_exercise_without_label_is_refused(tmp_path):
    root = _book(tmp_path)
    chapter = root / "chapters" / "02_a.md"
    chapter.write_text(chapter.read_text().replace(":label: ex-a-third\n", ""))
    with pytest.raises(et.ExerciseError, match=r"chapters/02_a.md, line \d+: an exercise without a :label:"):
        et.collect(root)


# ------------------------------------------------------------------ the appendix's text

def _statement_names() -> dict[tuple[str, str], str]:
    """(document, label) -> "Theorem 2.1" for every sphinx-proof statement, numbered per chapter
    and per kind in document order, as the site numbers them."""
    names = {}
    for chapter, path in enumerate(_chapter_sources(), start=1):
        counts = Counter()
        text = path.read_text(encoding="utf-8")
        for kind, label in re.findall(
                r"(?m)^[:`]{3,}\{prf:(theorem|proposition|lemma|corollary|definition)\}.*\n(?::[^\n]*\n)*?:label:\s*(\S+)",
                text):
            counts[kind] += 1
            names[(path.stem, label)] = f"{kind.title()} {chapter}.{counts[kind]}"
    return names


def _heading_slugs(path: Path) -> set[str]:
    from myst_parser.mdit_to_docutils.base import default_slugify

    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text(encoding="utf-8"))   # not comments in code
    return {default_slugify(re.sub(r"\$[^$]*\$", "", h)) for h in re.findall(r"(?m)^#{1,3} (.+)$", text)}


def test_appendix_has_course_shapes_and_misconceptions():
    text = APPENDIX.read_text(encoding="utf-8")
    shapes = _section(text, "Three course shapes")
    titles = re.findall(r"(?m)^### (.+)$", shapes)
    assert len(titles) == 3 and "90-minute" in titles[0] and "two-week" in titles[1] and "six-week" in titles[2]
    for part in re.split(r"(?m)^### .+$", shapes)[1:]:
        assert "Exercise " in part and "prove" in part.lower(), "each course shape names exercises and proofs"
    misconceptions = _section(text, "Misconceptions students bring")
    items = re.findall(r"(?m)^\*\*\"(.+?)\"", misconceptions)
    assert len(items) >= 6, items
    for needle in ("in every direction", "mean of $w^2$", "$G$ and $H$", "replacement", "$\\Sigma = H$", "$\\eta/B$"):
        assert any(needle in item for item in items), (needle, items)
    for paragraph in misconceptions.strip().split("\n\n")[1:]:
        assert re.search(r"\]\(0\d_\w+\.md#", paragraph), f"a misconception without a link into the book: {paragraph[:60]}"
    prerequisites = _section(text, "Who the book is for")
    for needle in ("eigendecomposition", "trace", "semi-definite", "covariance", "without* replacement",
                   "Hessians", "Taylor", "PyTorch"):
        assert needle.lower() in prerequisites.lower(), needle
    building = _section(text, "Building and handing out the course materials")
    for needle in ("make student", "_build/student/html", "make assignments", "grader.check(", "otter run",
                   "otter grade", "results.json", "Gradescope", "make pdf", "_build/pdf/student.pdf"):
        assert needle in building, needle


def test_links_into_the_chapters_exist_under_their_current_names():
    """Every ``[text](NN_name.md#target)`` of the appendix (outside the generated table, which
    the tests above cover) points to an exercise under its current number, a statement under
    its current name, or a heading; the exercises of the course shapes exist."""
    text = et.BLOCK.sub("", APPENDIX.read_text(encoding="utf-8"))
    exercises = {(ex.doc, ex.label): ex.name for ex in et.collect(ROOT)}
    statements = _statement_names()
    slugs = {p.stem: _heading_slugs(p) for p in _chapter_sources()}
    links = re.findall(r"\[([^\]]+)\]\((0\d_\w+)\.md#([\w-]+)\)", text)
    assert len(links) > 100
    bad = []
    for shown, doc, target in links:
        if (doc, target) in exercises:
            if shown != exercises[(doc, target)]:
                bad.append(f"{shown} -> {doc}#{target} is {exercises[(doc, target)]}")
        elif (doc, target) in statements:
            if shown != statements[(doc, target)]:
                bad.append(f"{shown} -> {doc}#{target} is {statements[(doc, target)]}")
        elif target not in slugs[doc]:
            bad.append(f"{shown} -> {doc}#{target}: no such exercise, statement or heading")
    assert not bad, "\n".join(bad)
    shapes = _section(text, "Three course shapes")
    named = set(re.findall(r"\[Exercise [\d.]+\]\((0\d_\w+)\.md#([\w-]+)\)", shapes))
    assert len(named) >= 30 and named <= set(exercises)
    # every chapter contributes to the six-week course
    six_weeks = shapes.split("### A six-week reading course", 1)[1]
    assert {doc for doc, _ in re.findall(r"\[Exercise [\d.]+\]\((0\d_\w+)\.md#([\w-]+)\)", six_weeks)} >= {
        p.stem for p in _chapter_sources()} - {"01_sgd_in_one_picture"}
