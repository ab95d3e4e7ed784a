#!/usr/bin/env python
"""Otter-grader assignments from the chapters' exercises (``make assignments``).

For every chapter, the exercises of ``chapters/NN_name.md`` become one assignment:
pen-and-paper exercises as their statement, coding exercises as a statement and a
code cell, and the auto-checked ones (those with checks in ``assignments/NN_name.py``,
see ``assignments/otter_checks.py``) as otter questions. The question's solution is the
first code cell of the exercise's gated solution in the chapter, the very code the
website shows and the book build executes, so the book and the assignment cannot
disagree. The student's copy keeps each function's signature and docstring and replaces
its body by ``...``.

The script writes an otter "master notebook" and runs ``otter assign`` on it::

    _build/assignments/NN_name/master/NN_name.ipynb       the master notebook (input of otter)
    _build/assignments/NN_name/student/NN_name.ipynb      no solutions, public checks (tests/)
    _build/assignments/NN_name/autograder/NN_name-autograder_*.zip   every check, for grading
    _build/assignments/NN_name/solution/NN_name.ipynb     the solutions

Grade one submission, locally and without Docker::

    otter run -a _build/assignments/NN_name/autograder/NN_name-autograder_*.zip sub.ipynb

The autograder zip carries ``noisegeom`` and the numerical pins, so it also runs on
Gradescope or under ``otter grade`` (Docker).

Statements refer to the chapter's theorems with ``{prf:ref}``; a notebook on its own
cannot resolve them, so they become their names ("Theorem 2.1"), numbered as
sphinx-proof numbers them (per kind, in document order).

    python scripts/make_assignments.py                    # every chapter
    python scripts/make_assignments.py 02_minibatch_noise # some chapters
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import exercise_table  # noqa: E402  (beside this script: the one parser of the exercises)
from assignments.otter_checks import Check, checks_of, question_name  # noqa: E402

OUT = ROOT / "_build" / "assignments"
# What the autograder needs besides the notebook: the book's package, and the pins of
# the numerical stack it imports (exact, from requirements.txt).
AUTOGRADER_PACKAGES = ("numpy", "scipy", "torch", "matplotlib", "ipywidgets")

OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>[^\n]*)\n")
CODE_CELL = re.compile(
    r"^(?P<fence>`{3,})\{code-cell\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M
)
PRF_REF = re.compile(r"\{prf:ref\}`(?:(?P<text>[^`<]*?)\s*<)?(?P<label>[\w-]+)>?`")


@dataclass
class Exercise:
    """One exercise of a chapter, as the assignment needs it."""

    label: str
    number: str                  # "2.3", as sphinx-exercise numbers it
    title: str                   # without its tags ("(coding, warm-up)"); may be empty
    kind: str                    # "pen and paper", "code" or "pen and paper + code"
    difficulty: str              # "warm-up", "standard" or "challenging"
    statement: str               # MyST Markdown, references resolved
    code: str | None             # the first code cell of its gated solution


def toc_chapters() -> list[str]:
    """The numbered chapters (``NN_name``), in ``_toc.yml`` order."""
    return [path.stem for number, path in exercise_table.toc_chapters(ROOT) if number is not None]


def proof_names(text: str, chapter: int) -> dict[str, str]:
    """``{label: "Theorem 2.1"}`` for the chapter's sphinx-proof statements and exercises."""
    counters: dict[str, int] = {}
    names = {}
    for kind, _arg, options, _body, _line in exercise_table._blocks(text.split("\n")):
        labels = [o.split(":label:", 1)[1].strip() for o in options if o.startswith(":label:")]
        if not (kind.startswith("prf:") or kind == "exercise") or not labels:
            continue
        name = kind.removeprefix("prf:")
        counters[name] = counters.get(name, 0) + 1
        names[labels[0]] = f"{name.capitalize()} {chapter}.{counters[name]}"
    return names


def _resolve_refs(markdown: str, names: dict[str, str], chapter_file: str) -> str:
    def name(m: re.Match) -> str:
        label = m.group("label")
        if label not in names:
            raise ValueError(f"{chapter_file}: an exercise refers to {label!r}, "
                             "which is not a statement of this chapter")
        return m.group("text") or names[label]
    return PRF_REF.sub(name, markdown)


def exercises(chapter_file: str) -> list[Exercise]:
    """The exercises of ``chapters/<chapter_file>.md``, in order (parsed by exercise_table)."""
    path = ROOT / "chapters" / f"{chapter_file}.md"
    chapter = int(chapter_file[:2])
    names = proof_names(path.read_text(), chapter)
    found = []
    for e in exercise_table.chapter_exercises(path, chapter, ROOT):
        # only a gated solution has code cells ({solution} bodies hold plain code blocks)
        cell = CODE_CELL.search(e.solution)
        found.append(Exercise(
            label=e.label, number=f"{chapter}.{e.number}", title=e.title, kind=e.kind,
            difficulty=e.difficulty, statement=_resolve_refs(e.statement, names, chapter_file),
            code=_strip_cell_metadata(cell.group("body")) if cell else None))
    return found


def _strip_cell_metadata(body: str) -> str:
    """A code cell's code without its ``---`` YAML header or ``:key:`` options."""
    if body.startswith("---\n"):
        body = body.split("\n---\n", 1)[1]
    while (o := OPTION.match(body)) is not None:
        body = body[o.end():]
    return body.strip("\n") + "\n"


def mark_solution(code: str, names: set[str]) -> str:
    """The solution cell with otter's ``# BEGIN/END SOLUTION`` around every hidden part.

    Imports stay (the student needs them), as do the signature and docstring of every
    function the checks name; the function bodies, and every other statement, are
    the solution.
    """
    tree = ast.parse(code)
    lines = code.rstrip("\n").split("\n")
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = names - defined
    if missing:
        raise ValueError(f"the solution's first code cell does not define {sorted(missing)} "
                         f"(it defines {sorted(defined)})")
    spans = []                                   # (first, last, indent) lines to hide, 0-based
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.FunctionDef):
            body = node.body
            if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                body = body[1:]
            if not body:
                raise ValueError(f"function {node.name} has only a docstring")
            indent = " " * body[0].col_offset
            spans.append((body[0].lineno - 1, node.end_lineno - 1, indent))
        else:
            first = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None)
                     else node.lineno)
            spans.append((first - 1, node.end_lineno - 1, ""))
    out = list(lines)
    for first, last, indent in sorted(spans, reverse=True):
        out[last + 1:last + 1] = [f"{indent}# END SOLUTION"]
        out[first:first] = [f"{indent}# BEGIN SOLUTION"]
    return "\n".join(out) + "\n"


def load_checks(chapter_file: str) -> types.ModuleType | None:
    path = ROOT / "assignments" / f"{chapter_file}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"assignments_{chapter_file}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _test_cell(c: Check) -> nbformat.NotebookNode:
    config = {"hidden": c.hidden, "points": c.points}
    header = '""" # BEGIN TEST CONFIG\n' + yaml.safe_dump(config, sort_keys=False) + '""" # END TEST CONFIG\n'
    return nbformat.v4.new_code_cell(header + c.source)


def _raw(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_raw_cell(text)


def _title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise ValueError("the chapter has no '# ' title")


def master_notebook(chapter_file: str) -> nbformat.NotebookNode:
    """The otter master notebook of a chapter (assignment config, questions, checks)."""
    text = (ROOT / "chapters" / f"{chapter_file}.md").read_text()
    chapter = int(chapter_file[:2])
    module = load_checks(chapter_file)
    checks = checks_of(module) if module else []
    by_label: dict[str, list[Check]] = {}
    for c in checks:
        by_label.setdefault(c.label, []).append(c)
    found = exercises(chapter_file)
    unknown = set(by_label) - {e.label for e in found}
    if unknown:
        raise ValueError(f"assignments/{chapter_file}.py checks exercises that "
                         f"{chapter_file}.md does not have: {sorted(unknown)}")

    config = {
        "name": chapter_file,
        "requirements": "requirements.txt",
        "overwrite_requirements": True,
        "autograder_files": ["noisegeom"],
        "init_cell": True,
        "check_all_cell": True,
        "export_cell": False,
        "run_tests": False,          # tests/book/test_assignments.py grades the solutions
        "solutions_pdf": False,
        "generate": {"pdf": False, "filtering": False},
        "tests": {"files": True, "ok_format": False},
    }
    cells = [_raw("# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config, sort_keys=False))]
    title = _title(text)
    auto = [e for e in found if e.label in by_label]
    cells.append(nbformat.v4.new_markdown_cell(
        f"# Exercises of chapter {chapter}: {title}\n\n"
        f"The {len(found)} exercises of chapter {chapter} of *Noise Geometry*, "
        f"{len(auto)} of them checked automatically. Run the cell below first. "
        "In an auto-checked question, replace each `...` by your code, run the cell, then "
        "run the `grader.check(...)` cell under it: it runs the public checks and says what "
        "is wrong, if anything. Your instructor grades with more (hidden) checks, so a "
        "passing public check is necessary, not sufficient. Pen-and-paper exercises are "
        "not checked; answer them in the Markdown cell under each, or on paper."))
    setup = getattr(module, "SETUP", "import numpy as np\nimport torch\n\nimport noisegeom as ng\n")
    cells.append(nbformat.v4.new_code_cell(setup.strip("\n")))
    for e in found:
        heading = f"## Exercise {e.number}" + (f": {e.title}" if e.title else "")
        kind = f"{e.kind.capitalize()}, {e.difficulty}"
        if e.label in by_label:
            qchecks = by_label[e.label]
            if not any(not c.hidden for c in qchecks) or not any(c.hidden for c in qchecks):
                raise ValueError(f"{e.label}: a question needs public and hidden checks")
            if e.code is None:
                raise ValueError(f"{e.label} is checked, but its solution is not gated "
                                 "({solution-start} ... {solution-end}) or has no code cell")
            names = {p for c in qchecks for p in _params(c)} - {"env"}
            points = sum(c.points for c in qchecks)
            cells.append(_raw("# BEGIN QUESTION\n" + yaml.safe_dump(
                {"name": question_name(e.label), "points": [c.points for c in qchecks]},
                sort_keys=False)))
            public = sum(1 for c in qchecks if not c.hidden)
            cells.append(nbformat.v4.new_markdown_cell(
                f"{heading}\n\n*{kind}. Auto-checked, {points:g} points: {public} public "
                f"check{'s' * (public > 1)} (`grader.check`) and "
                f"{len(qchecks) - public} hidden.*\n\n{e.statement}"))
            cells += [_raw("# BEGIN SOLUTION"),
                      nbformat.v4.new_code_cell(mark_solution(e.code, names).rstrip("\n")),
                      _raw("# END SOLUTION"), _raw("# BEGIN TESTS")]
            cells += [_test_cell(c) for c in qchecks]
            cells += [_raw("# END TESTS"), _raw("# END QUESTION")]
        else:
            coding = "code" in e.kind
            checked = ", not auto-checked" if coding else ""
            cells.append(nbformat.v4.new_markdown_cell(f"{heading}\n\n*{kind}{checked}.*\n\n{e.statement}"))
            if "pen and paper" in e.kind:
                cells.append(nbformat.v4.new_markdown_cell("*Your answer.*"))
            if coding:
                cells.append(nbformat.v4.new_code_cell("# your code"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _params(c: Check) -> list[str]:
    return list(inspect.signature(c.func).parameters)


def _requirements() -> str:
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("==")[0].strip().lower() in AUTOGRADER_PACKAGES]
    return "\n".join(pins) + "\n"


def build(chapter_file: str, out: Path = OUT, otter: str | None = None) -> Path:
    """Write the chapter's assignment under ``out/chapter_file``; returns that folder."""
    dest = out / chapter_file
    shutil.rmtree(dest, ignore_errors=True)
    master_dir = dest / "master"
    master_dir.mkdir(parents=True)
    master = master_dir / f"{chapter_file}.ipynb"
    nbformat.write(master_notebook(chapter_file), master)
    (master_dir / "requirements.txt").write_text(_requirements())
    shutil.copytree(ROOT / "noisegeom", master_dir / "noisegeom",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = dest / "dist"
    otter = otter or str(Path(sys.executable).with_name("otter"))
    proc = subprocess.run([otter, "assign", "--no-pdfs", master.name, str(dist.resolve())],
                          cwd=master_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"otter assign failed for {chapter_file}:\n{proc.stdout}\n{proc.stderr}")
    shutil.move(dist / "student", dest / "student")
    (dest / "solution").mkdir()
    shutil.copy(dist / "autograder" / f"{chapter_file}.ipynb", dest / "solution")
    (dest / "autograder").mkdir()
    for z in (dist / "autograder").glob("*.zip"):
        shutil.move(z, dest / "autograder" / z.name)
    shutil.rmtree(dist)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="NN_name of chapters (default: all)")
    args = parser.parse_args(argv)
    chapters = args.chapters or toc_chapters()
    unknown = set(chapters) - set(toc_chapters())
    if unknown:
        parser.error(f"not chapters of _toc.yml: {sorted(unknown)}")
    summary = []
    for ch in chapters:
        t0 = time.perf_counter()
        dest = build(ch)
        nb = nbformat.read(dest / "student" / f"{ch}.ipynb", as_version=4)
        n_q = sum(1 for c in nb.cells if c.cell_type == "code" and "grader.check(" in c.source
                  and "check_all" not in c.source)
        summary.append((ch, n_q, time.perf_counter() - t0))
        print(f"{ch}: {n_q} auto-checked question(s) -> {dest.relative_to(ROOT)} "
              f"({summary[-1][2]:.1f} s)", flush=True)
    (OUT / "summary.json").write_text(json.dumps(
        [dict(chapter=c, questions=q, seconds=round(s, 1)) for c, q, s in summary], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
