"""Auto-checks of the chapters' coding exercises, written once for otter-grader.

Each chapter whose coding exercises are auto-checked has a module beside this one
with the chapter's name (``assignments/02_minibatch_noise.py`` for
``chapters/02_minibatch_noise.md``). It holds

``SETUP``
    The code of the assignment's first cell (imports, seeds): what a student has
    before the first question. Every check must work with only this.
check functions
    Self-contained functions decorated with :func:`check`. Otter copies a check's
    source into its test file, so it imports what it uses inside its body; its
    parameters name the objects the student defines (otter passes the student's
    global of that name, or ``None``). A check fails by raising, normally an
    ``AssertionError`` whose message tells the student what is wrong and what was
    expected. Checks test properties with stated tolerances on fresh random
    inputs (agreement with ``noisegeom``, invariances, shapes), never one number.
``WRONG_ANSWERS``
    ``{label: source}``: for at least one question, a plausible wrong answer (the
    solution's first cell with one typical mistake) that must fail a *public*
    check. ``tests/book/test_assignments.py`` makes sure it does.

The solution of an auto-checked exercise is a gated solution in the chapter
(``{solution-start}`` ... ``{solution-end}``) whose first code cell defines the
objects the checks name. ``scripts/make_assignments.py`` turns the chapter's
exercises into an otter-grader master notebook: the statement, that first cell
(each function's body replaced by ``...`` in the student's copy, its signature
and docstring kept) and the checks.
"""

from __future__ import annotations

import inspect
import re
import types
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Check:
    """One otter test case of one question."""

    label: str          # the exercise's label in the chapter, e.g. "ex-ch2-enumerate"
    func: Callable
    hidden: bool
    points: float

    @property
    def question(self) -> str:
        """Otter's name of the question (``grader.check(name)``)."""
        return question_name(self.label)

    @property
    def source(self) -> str:
        """The check's source without its decorator (what otter's test file holds)."""
        lines = inspect.getsource(self.func).splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("def "))
        return "\n".join(lines[start:]) + "\n"


def question_name(label: str) -> str:
    """``ex-ch2-enumerate`` -> ``ch2_enumerate`` (a Python identifier)."""
    name = re.sub(r"^ex-", "", label).replace("-", "_")
    if not name.isidentifier():
        raise ValueError(f"label {label!r} does not give a valid question name ({name!r})")
    return name


def check(label: str, *, hidden: bool = False, points: float = 1) -> Callable:
    """Mark a function as an otter check of the exercise ``label``.

    Parameters
    ----------
    label : str
        The exercise's ``:label:`` in the chapter.
    hidden : bool
        Hidden checks run only when the instructor grades; public ones also run
        when the student calls ``grader.check(...)``.
    points : float
        Points of this check.
    """
    if not isinstance(label, str) or not label.startswith("ex-"):
        raise ValueError(f"label must be an exercise label starting with 'ex-', got {label!r}")
    if points <= 0:
        raise ValueError(f"points must be positive, got {points!r}")

    def mark(func: Callable) -> Callable:
        func.__otter_check__ = dict(label=label, hidden=bool(hidden), points=float(points))
        return func

    return mark


def checks_of(module: types.ModuleType) -> list[Check]:
    """The checks a chapter's module defines, in source order."""
    found = [
        (inspect.getsourcelines(f)[1], Check(func=f, **f.__otter_check__))
        for f in vars(module).values()
        if callable(f) and hasattr(f, "__otter_check__")
    ]
    return [c for _, c in sorted(found, key=lambda item: item[0])]


def run_checks(module: types.ModuleType, namespace: dict, labels=None) -> list[dict]:
    """Run a chapter's checks on ``namespace`` (a student's globals) without otter.

    For authors: exec ``SETUP`` and a solution (or a wrong answer) into a dict and
    see which checks pass. Returns one dict per check: label, check name, hidden,
    passed and the error message.
    """
    results = []
    for c in checks_of(module):
        if labels is not None and c.label not in labels:
            continue
        params = inspect.signature(c.func).parameters
        kwargs = {p: (namespace if p == "env" else namespace.get(p)) for p in params}
        try:
            c.func(**kwargs)
            passed, message = True, ""
        except Exception as exc:  # a check fails by raising anything
            passed, message = False, f"{type(exc).__name__}: {exc}"
        results.append(dict(label=c.label, check=c.func.__name__, hidden=c.hidden,
                            passed=passed, message=message))
    return results
