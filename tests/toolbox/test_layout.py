"""The architecture of noisegeom: two floors, and tests that mirror them.

* The toolbox, ``noisegeom/*.py``, never imports the chapter floor, ``noisegeom/chapters/``
  (read from the source with ``ast``, and at run time: ``import noisegeom`` and every toolbox
  module in a fresh interpreter load no ``noisegeom.chapters`` module).
* A chapter module imports the toolbox only, never another chapter module (``ast``, and at run
  time: importing one chapter module loads no other).
* Text → numerics → tests by one name: every executed chapter ``chapters/NN_name.md`` but
  chapter 1 has ``noisegeom/chapters/chNN_name.py`` and ``tests/chapters/test_chNN_name.py``,
  and every file there belongs to a chapter.
* Every test file in ``tests/toolbox/`` is named after a toolbox module (but test_errors.py and
  this file), and none of them imports the chapter floor.
* Every name in ``noisegeom.__all__`` and in each chapter module's ``__all__`` exists.

Each rule is a function that lists what breaks it; each is run on the real tree (nothing may
be listed) and on a small synthetic bad example (it must list the fault), so that no rule
passes because it cannot fail.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "noisegeom"
CHAPTER_PACKAGE = PACKAGE / "chapters"
CHAPTER_TEXTS = ROOT / "chapters"
TOOLBOX_TESTS = ROOT / "tests" / "toolbox"
CHAPTER_TESTS = ROOT / "tests" / "chapters"

# Chapter 1 needs no module of its own (noisegeom/chapters/__init__.py).
CHAPTERS_WITHOUT_MODULE = {"01_sgd_in_one_picture"}
# Test files of tests/toolbox/ that are not about one toolbox module.
TOOLBOX_TESTS_NOT_OF_A_MODULE = {"test_errors.py", "test_layout.py", "test_install.py", "test_fuzz.py", "test_device.py"}
# Files that may sit in a test folder besides test files (pytest's own).
TEST_FOLDER_EXTRAS = {"__init__.py", "conftest.py"}


# ---------------------------------------------------------------- reading the tree

def toolbox_modules() -> list[str]:
    """Stems of the toolbox's modules, noisegeom/*.py (without __init__)."""
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def toolbox_sources() -> dict[str, str]:
    """{module name: source} of noisegeom/*.py, noisegeom/__init__.py included."""
    out = {}
    for p in sorted(PACKAGE.glob("*.py")):
        name = "noisegeom" if p.name == "__init__.py" else f"noisegeom.{p.stem}"
        out[name] = p.read_text(encoding="utf-8")
    return out


def chapter_sources() -> dict[str, str]:
    """{module name: source} of the chapter modules (noisegeom/chapters/*.py but __init__)."""
    return {f"noisegeom.chapters.{p.stem}": p.read_text(encoding="utf-8")
            for p in sorted(CHAPTER_PACKAGE.glob("*.py")) if p.name != "__init__.py"}


def chapter_texts() -> set[str]:
    """Stems of the numbered chapter files, chapters/NN_name.md."""
    return {p.stem for p in CHAPTER_TEXTS.glob("*.md") if re.fullmatch(r"\d\d_\w+", p.stem)}


def executed_chapters() -> set[str]:
    """The numbered chapters with code cells."""
    return {s for s in chapter_texts() if "{code-cell}" in (CHAPTER_TEXTS / f"{s}.md").read_text(encoding="utf-8")}


def folder_files(folder: Path) -> set[str]:
    """Names of the entries of a folder, but Python's caches and hidden files (an editor's)."""
    return {p.name for p in folder.iterdir()
            if p.name != "__pycache__" and not p.name.endswith(".pyc") and not p.name.startswith(".")}


# ---------------------------------------------------------------- the rules

def imports_of(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of module ``module``.

    Relative imports are resolved; ``from X import a`` lists X and X.a (a may be a submodule);
    ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    raise ValueError(f"{module}, line {node.lineno}: relative import beyond the top package")
                base = parts[:len(parts) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            name = node.args[0].value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                parts = package.split(".")
                name = ".".join(parts[:len(parts) - (level - 1)] + [name.lstrip(".")]).rstrip(".")
            out.append((node.lineno, name))
    return out


def _is_chapter_floor(name: str, package: str = "noisegeom") -> bool:
    return name == f"{package}.chapters" or name.startswith(f"{package}.chapters.")


def toolbox_violations(sources: dict[str, str]) -> list[str]:
    """Imports of the chapter floor in toolbox modules ({module name: source})."""
    bad = []
    for module, source in sources.items():
        is_package = module.count(".") == 0
        for line, name in imports_of(source, module, is_package=is_package):
            if _is_chapter_floor(name):
                bad.append(f"{module}, line {line}: imports {name}")
    return bad


def chapter_violations(sources: dict[str, str], toolbox: set[str]) -> list[str]:
    """Imports by chapter modules ({module name: source}) of anything of noisegeom but the toolbox."""
    bad = []
    for module, source in sources.items():
        for line, name in imports_of(source, module):
            parts = name.split(".")
            if parts[0] != "noisegeom" or name == "noisegeom":
                continue
            if parts[1] not in toolbox:
                bad.append(f"{module}, line {line}: imports {name}, not a toolbox module")
    return bad


def layout_problems(chapters: set[str], executed: set[str], modules: set[str], tests: set[str]) -> list[str]:
    """Text → numerics → tests by one name.

    ``chapters``: stems of the numbered chapter files; ``executed``: those that need a module
    (executed, but chapter 1); ``modules``: entries of noisegeom/chapters/; ``tests``: entries
    of tests/chapters/.
    """
    bad = []
    for stem in sorted(executed):
        if f"ch{stem}.py" not in modules:
            bad.append(f"chapters/{stem}.md has no noisegeom/chapters/ch{stem}.py")
        if f"test_ch{stem}.py" not in tests:
            bad.append(f"chapters/{stem}.md has no tests/chapters/test_ch{stem}.py")
    for folder, prefix, names, extras in [("noisegeom/chapters", "ch", modules, {"__init__.py"}),
                                          ("tests/chapters", "test_ch", tests, TEST_FOLDER_EXTRAS)]:
        for name in sorted(names - extras):
            m = re.fullmatch(re.escape(prefix) + r"(\d\d_\w+)\.py", name)
            if not m:
                bad.append(f"{folder}/{name} is not named {prefix}NN_name.py after a chapter")
            elif m.group(1) not in chapters:
                bad.append(f"{folder}/{name} belongs to no chapter: chapters/{m.group(1)}.md does not exist")
    return bad


def toolbox_test_problems(tests: set[str], toolbox: set[str]) -> list[str]:
    """Files of tests/toolbox/ not named test_<toolbox module>.py (or an allowed exception)."""
    bad = []
    for name in sorted(tests - TEST_FOLDER_EXTRAS - TOOLBOX_TESTS_NOT_OF_A_MODULE):
        m = re.fullmatch(r"test_(\w+)\.py", name)
        if not m:
            bad.append(f"tests/toolbox/{name} is not a test file test_<module>.py (pytest would not collect it)")
        elif m.group(1) not in toolbox:
            bad.append(f"tests/toolbox/{name}: noisegeom/{m.group(1)}.py is not a toolbox module")
    return bad


def missing_exports(module) -> list[str]:
    """Names in ``module.__all__`` that the module lacks, and names listed twice."""
    names = getattr(module, "__all__", None)
    if names is None:
        return [f"{module.__name__} has no __all__"]
    bad = [f"{module.__name__}.__all__ lists {n!r}, which does not exist" for n in names if not hasattr(module, n)]
    bad += [f"{module.__name__}.__all__ lists {n!r} twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return bad


# Run in a fresh interpreter: import the modules of each step and list the modules of the
# chapter floor then loaded. Before each step the chapter floor is dropped from sys.modules,
# so that each step starts without it (the toolbox stays loaded).
_PROBE = r"""
import importlib, json, sys
spec = json.loads(sys.argv[1])
sys.path[:0] = spec["path"]
prefix = spec["prefix"]
out = []
for step in spec["steps"]:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]
    for name in step:
        importlib.import_module(name)
    out.append(sorted(m for m in sys.modules if m == prefix or m.startswith(prefix + ".")))
print(json.dumps(out))
"""


def loaded_chapter_floor(steps: list[list[str]], *, prefix: str = "noisegeom.chapters",
                         path: tuple[str, ...] = ()) -> list[list[str]]:
    """For each step (modules to import), the modules under ``prefix`` loaded after it, in a fresh interpreter."""
    spec = json.dumps({"steps": steps, "prefix": prefix, "path": [str(p) for p in path] + [str(ROOT)]})
    run = subprocess.run([sys.executable, "-c", _PROBE, spec], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def runtime_problems(toolbox: list[str], chapters: list[str], *, package: str = "noisegeom",
                     path: tuple[str, ...] = ()) -> list[str]:
    """What importing the package, its toolbox modules and each chapter module loads of the chapter floor."""
    prefix = f"{package}.chapters"
    steps = [[package] + [f"{package}.{m}" for m in toolbox]] + [[f"{prefix}.{c}"] for c in chapters]
    loaded = loaded_chapter_floor(steps, prefix=prefix, path=path)
    bad = [f"import {package} (and its toolbox modules) loads {m}" for m in loaded[0]]
    for c, got in zip(chapters, loaded[1:]):
        bad += [f"import {prefix}.{c} loads {m}" for m in got if m not in (prefix, f"{prefix}.{c}")]
    return bad


# ---------------------------------------------------------------- the rules on the real tree

def test_the_tree_has_both_floors():
    """The rules below read what these find: guard against globbing the wrong folder."""
    assert {"models", "autodiff", "curvature", "simulate", "tasks"} <= set(toolbox_modules())
    assert "noisegeom" in toolbox_sources() and len(chapter_sources()) >= 7
    assert {f"{n:02d}" for n in range(2, 9)} <= {s[:2] for s in executed_chapters() - CHAPTERS_WITHOUT_MODULE}
    assert CHAPTERS_WITHOUT_MODULE <= executed_chapters()


def test_toolbox_never_imports_the_chapter_floor():
    assert toolbox_violations(toolbox_sources()) == []


def test_chapter_modules_import_the_toolbox_only():
    sources = chapter_sources()
    assert chapter_violations(sources, set(toolbox_modules())) == []
    # each imports the toolbox somewhere (the rule reads relative imports at all)
    for module, source in sources.items():
        assert any(n.startswith("noisegeom.") for _, n in imports_of(source, module)), module


def test_at_run_time_no_floor_loads_what_it_must_not():
    """``import noisegeom`` and every toolbox module load no chapter module; a chapter module no other."""
    chapters = [m.rpartition(".")[2] for m in chapter_sources()]
    assert runtime_problems(toolbox_modules(), chapters) == []


def test_chapters_modules_and_tests_share_one_name():
    executed = executed_chapters() - CHAPTERS_WITHOUT_MODULE
    assert layout_problems(chapter_texts(), executed, folder_files(CHAPTER_PACKAGE), folder_files(CHAPTER_TESTS)) == []


def test_toolbox_tests_are_named_after_toolbox_modules_and_import_no_chapter():
    assert toolbox_test_problems(folder_files(TOOLBOX_TESTS), set(toolbox_modules())) == []
    for p in sorted(TOOLBOX_TESTS.glob("*.py")):
        assert not [n for _, n in imports_of(p.read_text(encoding="utf-8"), p.stem) if _is_chapter_floor(n)], (
            f"{p.name} imports the chapter floor: the toolbox is tested on its own")


def test_every_exported_name_exists():
    import noisegeom

    assert missing_exports(noisegeom) == []
    for module in chapter_sources():
        assert missing_exports(importlib.import_module(module)) == []


# ---------------------------------------------------------------- each rule can fail

def test_imports_of_resolves_relative_and_dynamic_imports():
    src = ("import numpy as np\nfrom .models import FlatModel\nfrom . import plotting\n"
           "from ..autodiff import jacobian\nimport importlib\nm = importlib.import_module('noisegeom.tasks')\n")
    names = [n for _, n in imports_of(src, "noisegeom.chapters.ch09_x")]
    assert names == ["numpy", "noisegeom.chapters.models", "noisegeom.chapters.models.FlatModel",
                     "noisegeom.chapters", "noisegeom.chapters.plotting", "noisegeom.autodiff",
                     "noisegeom.autodiff.jacobian", "importlib", "noisegeom.tasks"]
    assert [n for _, n in imports_of("from .chapters import ch02_a\n", "noisegeom", is_package=True)] == [
        "noisegeom.chapters", "noisegeom.chapters.ch02_a"]
    with pytest.raises(ValueError, match="beyond the top package"):
        imports_of("from ... import x\n", "noisegeom.models")


@pytest.mark.parametrize("source", [
    "from .chapters import ch02_minibatch_noise\n",
    "from .chapters.ch07_stability_and_escape import DoubleBasin\n",
    "from . import chapters\n",
    "import noisegeom.chapters.ch04_linear_models as lt\n",
    "from noisegeom import chapters\n",
    "def f():\n    from noisegeom.chapters import ch05_two_layer_networks\n",
    "import importlib\nch = importlib.import_module('noisegeom.chapters.ch06_directional_alignment')\n",
])
def test_toolbox_rule_catches_an_import_of_the_chapter_floor(source):
    ok = "from ._checks import as_tensor\nfrom .models import FlatModel\nfrom . import plotting\n"
    assert toolbox_violations({"noisegeom.stray": ok, "noisegeom": ok}) == []
    assert len(toolbox_violations({"noisegeom.stray": ok + source})) >= 1
    assert len(toolbox_violations({"noisegeom": source})) >= 1              # the package's __init__ too


@pytest.mark.parametrize("source", [
    "from .ch03_measuring_noise_geometry import alignment_at\n",
    "from . import ch04_linear_models\n",
    "from ..chapters import ch04_linear_models\n",
    "from .. import chapters\n",
    "import noisegeom.chapters.ch04_linear_models as lt\n",
    "from noisegeom.chapters.ch02_minibatch_noise import covariance_error\n",
    "from ..not_a_module import x\n",
])
def test_chapter_rule_catches_an_import_of_anything_but_the_toolbox(source):
    toolbox = set(toolbox_modules())
    ok = ("import numpy as np\nimport noisegeom\nfrom .. import models\nfrom ..models import FlatModel\n"
          "from noisegeom.simulate import simulate\nfrom .._checks import as_tensor\n")
    assert chapter_violations({"noisegeom.chapters.ch09_x": ok}, toolbox) == []
    assert len(chapter_violations({"noisegeom.chapters.ch09_x": ok + source}, toolbox)) >= 1


def _fake_package(root: Path, init: str, chapters: dict[str, str]) -> None:
    pkg = root / "fakegeom"
    (pkg / "chapters").mkdir(parents=True)
    (pkg / "__init__.py").write_text(init)
    (pkg / "tools.py").write_text("X = 1\n")
    (pkg / "chapters" / "__init__.py").write_text("")
    for name, src in chapters.items():
        (pkg / "chapters" / f"{name}.py").write_text(src)


def test_runtime_rule_catches_a_floor_that_loads_the_other(tmp_path):
    good = tmp_path / "good"
    _fake_package(good, "from .tools import X\n", {"ch02_a": "from ..tools import X\n", "ch03_b": "from .. import tools\n"})
    assert runtime_problems(["tools"], ["ch02_a", "ch03_b"], package="fakegeom", path=(good,)) == []
    bad = tmp_path / "bad"
    _fake_package(bad, "from .tools import X\nfrom .chapters import ch03_b\n",
                  {"ch02_a": "from . import ch03_b\n", "ch03_b": "from .. import tools\n"})
    problems = runtime_problems(["tools"], ["ch02_a", "ch03_b"], package="fakegeom", path=(bad,))
    assert "import fakegeom (and its toolbox modules) loads fakegeom.chapters.ch03_b" in problems
    assert "import fakegeom.chapters.ch02_a loads fakegeom.chapters.ch03_b" in problems
    assert not any(p.startswith("import fakegeom.chapters.ch03_b") for p in problems)


def test_layout_rule_catches_missing_stray_and_misnamed_files():
    chapters = {"01_intro", "02_a", "03_b", "09_appendix_like"}
    executed = {"02_a", "03_b"}
    good_modules = {"__init__.py", "ch02_a.py", "ch03_b.py"}
    good_tests = {"test_ch02_a.py", "test_ch03_b.py", "conftest.py"}
    assert layout_problems(chapters, executed, good_modules, good_tests) == []
    bad = layout_problems(chapters, executed, {"__init__.py", "ch02_a.py", "ch03_c.py", "helpers.py", "ch2_a.py"},
                          {"test_ch02_a.py", "test_ch02_b.py", "test_ch03.py"})
    assert bad == [
        "chapters/03_b.md has no noisegeom/chapters/ch03_b.py",
        "chapters/03_b.md has no tests/chapters/test_ch03_b.py",
        "noisegeom/chapters/ch03_c.py belongs to no chapter: chapters/03_c.md does not exist",
        "noisegeom/chapters/ch2_a.py is not named chNN_name.py after a chapter",
        "noisegeom/chapters/helpers.py is not named chNN_name.py after a chapter",
        "tests/chapters/test_ch02_b.py belongs to no chapter: chapters/02_b.md does not exist",
        "tests/chapters/test_ch03.py is not named test_chNN_name.py after a chapter",
    ]


def test_toolbox_test_rule_catches_misnamed_files():
    toolbox = {"models", "data", "_checks"}
    assert toolbox_test_problems({"test_models.py", "test_data.py", "test_errors.py", "test_layout.py",
                                  "conftest.py"}, toolbox) == []
    assert toolbox_test_problems({"test_models.py", "test_model.py", "tests_data.py", "helpers.py"}, toolbox) == [
        "tests/toolbox/helpers.py is not a test file test_<module>.py (pytest would not collect it)",
        "tests/toolbox/test_model.py: noisegeom/model.py is not a toolbox module",
        "tests/toolbox/tests_data.py is not a test file test_<module>.py (pytest would not collect it)",
    ]


def test_export_rule_catches_a_missing_or_repeated_name():
    mod = types.ModuleType("fake")
    mod.a = 1
    mod.__all__ = ["a"]
    assert missing_exports(mod) == []
    mod.__all__ = ["a", "b", "a"]
    assert missing_exports(mod) == ["fake.__all__ lists 'b', which does not exist", "fake.__all__ lists 'a' twice"]
    assert missing_exports(types.ModuleType("bare")) == ["bare has no __all__"]
