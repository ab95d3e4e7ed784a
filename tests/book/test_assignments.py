"""The otter-grader assignments, as an instructor grades them and a student meets them.

`make test` runs `make assignments` (scripts/make_assignments.py) before pytest. For
every chapter these tests grade, with `otter run` (local, no Docker), the solution
notebook (full marks) and the untouched student notebook (zero, without crashing);
they execute the student notebook with a plausible wrong answer and read what its
public `grader.check` prints (it must fail, with the check's message); and they check
that the student's copy holds no solution and no hidden check.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "_build" / "assignments"
OTTER = Path(sys.executable).with_name("otter")

import make_assignments  # scripts/ (pyproject.toml: pythonpath)
from assignments.otter_checks import checks_of, question_name, run_checks

CHAPTERS = make_assignments.toc_chapters()


def _built(chapter: str) -> Path:
    dest = OUT / chapter
    if not (dest / "student" / f"{chapter}.ipynb").exists():
        pytest.fail(f"{dest.relative_to(ROOT)} is missing: run `make assignments` "
                    "(`make test` does) before pytest", pytrace=False)
    return dest


def _autograder(chapter: str) -> Path:
    zips = sorted((_built(chapter) / "autograder").glob("*.zip"))
    assert len(zips) == 1, f"expected one autograder zip for {chapter}, found {zips}"
    return zips[0]


def _grade(chapter: str, notebook: Path, workdir: Path) -> dict:
    """`otter run` on one submission; {question: (score, max_score, output)}."""
    workdir.mkdir(parents=True, exist_ok=True)
    submission = workdir / f"{chapter}.ipynb"
    shutil.copy(notebook, submission)
    proc = subprocess.run([str(OTTER), "run", "-a", str(_autograder(chapter)), "-o", str(workdir),
                           "--no-logo", str(submission)],
                          cwd=workdir, capture_output=True, text=True, timeout=600)
    results = workdir / "results.json"
    assert proc.returncode == 0 and results.exists(), (
        f"otter run failed on {notebook.name} ({chapter}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    tests = json.loads(results.read_text())["tests"]
    return {t["name"]: (t["score"], t["max_score"], t.get("output", ""))
            for t in tests if "max_score" in t}


@pytest.fixture(scope="session")
def grades(tmp_path_factory):
    """Every chapter's solution and untouched student notebook, graded two at a time.

    Yields futures, so that a chapter whose grading fails fails only its own tests.
    """
    base = tmp_path_factory.mktemp("grading")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    jobs = {}
    for ch in CHAPTERS:
        for who, folder in (("solution", "solution"), ("student", "student")):
            notebook = OUT / ch / folder / f"{ch}.ipynb"
            jobs[ch, who] = pool.submit(_grade, ch, notebook, base / ch / who)
    yield jobs
    pool.shutdown(cancel_futures=True)


def _checks(chapter: str):
    module = make_assignments.load_checks(chapter)
    assert module is not None, f"assignments/{chapter}.py is missing: no auto-checked exercise"
    return module, checks_of(module)


# -- what the chapters must offer ------------------------------------------------------------

@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_two_auto_checked_questions(chapter):
    _, checks = _checks(chapter)
    labels = {c.label for c in checks}
    assert len(labels) >= 2, f"{chapter}: {len(labels)} auto-checked exercise(s), at least 2 wanted"
    for label in labels:
        kinds = {c.hidden for c in checks if c.label == label}
        assert kinds == {False, True}, f"{chapter} {label}: needs public and hidden checks"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_student_notebook_has_no_solution_and_no_hidden_check(chapter):
    dest = _built(chapter)
    module, checks = _checks(chapter)
    student = nbformat.read(dest / "student" / f"{chapter}.ipynb", as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    public_tests = "\n".join(p.read_text() for p in (dest / "student" / "tests").glob("*.py"))
    exercises = {e.label: e for e in make_assignments.exercises(chapter)}
    for c in checks:
        assert (c.func.__name__ in public_tests) == (not c.hidden), (
            f"{chapter}: check {c.func.__name__} (hidden={c.hidden}) in the student's tests/")
        # no line of a solution body reaches the student (imports, defs, docstrings may)
        marked = make_assignments.mark_solution(exercises[c.label].code, set())
        hidden, inside = [], False
        for line in marked.splitlines():
            if line.strip() == "# BEGIN SOLUTION":
                inside = True
            elif line.strip() == "# END SOLUTION":
                inside = False
            elif inside and len(line.strip()) > 12:
                hidden.append(line.strip())
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{chapter} {c.label}: solution lines in the student notebook: {leaked[:3]}"
    n_checks = sum('grader.check("' in c.source for c in student.cells)
    assert n_checks == len({c.label for c in checks})


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_autograder_has_every_check(chapter):
    import zipfile
    _, checks = _checks(chapter)
    with zipfile.ZipFile(_autograder(chapter)) as z:
        names = z.namelist()
        tests = "\n".join(z.read(n).decode() for n in names if n.startswith("tests/"))
    assert "files/noisegeom/__init__.py" in names, "the autograder must carry noisegeom"
    for c in checks:
        assert f"def {c.func.__name__}(" in tests, f"{chapter}: {c.func.__name__} not in the autograder"


# -- grading --------------------------------------------------------------------------------

@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solution_gets_full_marks(chapter, grades):
    _, checks = _checks(chapter)
    result = grades[chapter, "solution"].result()
    assert set(result) == {question_name(c.label) for c in checks}
    for q, (score, max_score, output) in result.items():
        expected = sum(c.points for c in checks if question_name(c.label) == q)
        assert max_score == pytest.approx(expected)
        assert score == pytest.approx(max_score), f"{chapter} {q}: {score}/{max_score}\n{output}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_untouched_student_notebook_gets_zero(chapter, grades):
    _, checks = _checks(chapter)
    result = grades[chapter, "student"].result()
    assert set(result) == {question_name(c.label) for c in checks}, "otter lost a question"
    for q, (score, max_score, output) in result.items():
        assert max_score > 0
        assert score == 0, f"{chapter} {q}: the unanswered question scored {score}\n{output}"
        assert "Test case failed" in output


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_wrong_answer_fails_its_public_check(chapter, tmp_path):
    """A plausible mistake, put where the student writes, fails `grader.check` with a message."""
    dest = _built(chapter)
    module, checks = _checks(chapter)
    wrong = getattr(module, "WRONG_ANSWERS", {})
    assert wrong, f"assignments/{chapter}.py has no WRONG_ANSWERS"
    # Independently of otter, each wrong answer fails one of its public checks ...
    messages = {}
    for label, source in wrong.items():
        ns: dict = {}
        exec(module.SETUP, ns)
        exec(source, ns)
        failed = [r for r in run_checks(module, ns, {label}) if not r["passed"] and not r["hidden"]]
        assert failed, f"{chapter}: the wrong answer to {label} passes every public check"
        messages[label] = [r["message"].split(": ", 1)[-1] for r in failed]
    # ... and in the student's notebook, the first one is reported by grader.check, with
    # the check's message.
    label, source = next(iter(wrong.items()))
    shutil.copytree(dest / "student", tmp_path / "student")
    path = tmp_path / "student" / f"{chapter}.ipynb"
    nb = nbformat.read(path, as_version=4)
    q = question_name(label)
    at = next(i for i, c in enumerate(nb.cells) if c.source.strip() == f'grader.check("{q}")')
    answer = next(i for i in range(at - 1, -1, -1)
                  if "otter_answer_cell" in nb.cells[i].metadata.get("tags", []))
    nb.cells[answer].source = source
    nb = _execute(nb, path.parent)
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not [e for i, e in errors if i <= at], (
        f"{chapter}: a cell raised before or in the check: {errors[0][1]['ename']}: "
        f"{errors[0][1]['evalue']}")
    shown = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                    for o in nb.cells[at].get("outputs", []))
    assert "failed" in shown.lower(), f"{chapter}: grader.check({q!r}) did not fail:\n{shown}"
    assert any(m.splitlines()[0][:60] in shown for m in messages[label] if m), (
        f"{chapter}: grader.check({q!r}) does not show the check's message "
        f"{messages[label][:1]}:\n{shown}")


# -- the generator itself --------------------------------------------------------------------

def test_mark_solution_hides_bodies_and_keeps_signatures():
    code = ('import itertools\n\n'
            'def f(x, y=1):\n    """Doc."""\n    z = x + y\n    return z\n\n'
            'def g():\n    return 2\n\nresult = f(1)\n')
    marked = make_assignments.mark_solution(code, {"f", "g"})
    assert marked.splitlines() == [
        "import itertools", "",
        "def f(x, y=1):", '    """Doc."""', "    # BEGIN SOLUTION", "    z = x + y",
        "    return z", "    # END SOLUTION", "",
        "def g():", "    # BEGIN SOLUTION", "    return 2", "    # END SOLUTION", "",
        "# BEGIN SOLUTION", "result = f(1)", "# END SOLUTION"]
    with pytest.raises(ValueError, match="does not define"):
        make_assignments.mark_solution(code, {"h"})


def test_statements_name_theorems_as_the_website_numbers_them():
    text = ("# T\n\n:::{prf:theorem} A\n:label: thm-a\n:::\n\n:::{prf:lemma} B\n:label: lem-b\n:::\n\n"
            ":::{prf:theorem} C\n:label: thm-c\n:::\n\n::::{exercise} E\n:label: ex-e\n::::\n")
    assert make_assignments.proof_names(text, 3) == {
        "thm-a": "Theorem 3.1", "lem-b": "Lemma 3.1", "thm-c": "Theorem 3.2", "ex-e": "Exercise 3.1"}


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_numbers_agree_with_the_built_site(chapter):
    """The names the assignments use are the website's (sphinx-proof's numbering)."""
    import re
    page = ROOT / "_build" / "html" / "chapters" / f"{chapter}.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: build the book first", pytrace=False)
    html = page.read_text()
    names = make_assignments.proof_names((ROOT / "chapters" / f"{chapter}.md").read_text(),
                                         int(chapter[:2]))
    for label, name in names.items():
        m = re.search(rf'id="{re.escape(label)}".{{0,600}}?<span class="caption-number">([^<]*)</span>',
                      html, re.S)
        assert m, f"{chapter}: {label} not found on the built page"
        assert m.group(1).strip() == name, f"{chapter}: {label} is {m.group(1)!r} on the site, {name!r} here"
    for e in make_assignments.exercises(chapter):
        assert "{prf:ref}" not in e.statement and "% for instructors" not in e.statement
