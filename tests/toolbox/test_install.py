"""Installing the package alone: its dependencies, what works without the book's extras, and the
README's "Measure your own model" block.

* The wheel that ``pip`` builds requires numpy, scipy and torch and nothing else; matplotlib,
  ipywidgets, IPython, Pillow, scikit-learn and tqdm come with the extra ``book``.
* In an interpreter where the extras cannot be imported, ``import noisegeom``, the metrics of a
  plain module, ``simulate`` and every chapter module work; ``ng.plotting``, ``ng.widgets`` and
  ``ng.load_digits`` say which extra to install.
* The README's code block runs as written, and its μ equals a direct computation.
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("matplotlib", "ipywidgets", "IPython", "PIL", "sklearn", "tqdm")


def test_the_wheel_requires_numpy_scipy_torch_and_puts_the_rest_in_the_book_extra(tmp_path):
    # built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info
    # beside the sources, and the checkout must stay clean
    import shutil
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "noisegeom", src / "noisegeom", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("noisegeom-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    requires = meta.get_all("Requires-Dist")
    plain = {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requires if "extra ==" not in r}
    book = {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requires if 'extra == "book"' in r}
    assert plain == {"numpy", "scipy", "torch"}
    assert book == {"matplotlib", "ipywidgets", "ipython", "pillow", "scikit-learn", "tqdm"}
    # the chapter floor ships with the package
    assert "noisegeom/chapters/ch07_stability_and_escape.py" in names


SLIM = textwrap.dedent(f"""
    import importlib, importlib.abc, importlib.machinery, sys

    class _Missing(importlib.abc.Loader):
        # importing the module fails as it would where it is not installed
        def create_module(self, spec):
            raise ImportError(f"No module named {{spec.name!r}}", name=spec.name)

        def exec_module(self, module):
            pass

    class _NotInstalled:
        # the extras, as an environment without them meets them: found by torch's probes of
        # what is installed (find_spec), failing when imported
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRAS!r}:
                return importlib.machinery.ModuleSpec(name, _Missing())

    sys.meta_path.insert(0, _NotInstalled())
    import torch
    import noisegeom as ng

    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    X, y = torch.randn(30, 3), torch.randn(30)
    print("mu", ng.NoiseGeometry.from_module(net, X, y).mu())
    model = ng.two_layer_net(3, 4)
    tr = ng.simulate(model, X, y, model.theta0, eta=0.1, steps=5, batch_size=4)
    print("simulate", tr.loss.shape)
    for name in ("ch02_minibatch_noise", "ch03_measuring_noise_geometry", "ch04_linear_models",
                 "ch05_two_layer_networks", "ch06_directional_alignment", "ch07_stability_and_escape",
                 "ch08_cyclical_learning_rates"):
        importlib.import_module("noisegeom.chapters." + name)
    print("chapters ok")
    for what in ("ng.plotting", "ng.widgets", "ng.load_digits()"):
        try:
            eval(what)
        except ImportError as exc:
            print(what, "->", exc)
    print("extras loaded:", sorted(m for m in sys.modules if m.split(".")[0] in {EXTRAS!r}))
""")


def test_without_the_book_extras_the_toolbox_works_and_the_extras_are_named():
    done = subprocess.run([sys.executable, "-c", SLIM], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "chapters ok" in out and "simulate (6, 1)" in out
    mu = float(re.search(r"^mu (\S+)", out, re.M).group(1))
    assert mu > 0
    for what in ("ng.plotting", "ng.widgets", "ng.load_digits()"):
        line = next(line for line in out.splitlines() if line.startswith(what + " ->"))
        assert 'pip install "noisegeom[book]"' in line
    assert "extras loaded: []" in out


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Measure your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one Python block"
    return blocks[0]


def test_readme_measure_your_own_model_runs_and_agrees_with_a_direct_computation():
    block = _readme_block()
    assert len(block.strip().splitlines()) <= 10
    namespace: dict = {}
    import torch
    torch.manual_seed(0)
    exec(compile(block, "README.md", "exec"), namespace)
    geo, net, X, y = namespace["geo"], namespace["net"], namespace["X"], namespace["y"]
    import noisegeom as ng
    import copy

    # the same point through the book's own route: a float64 FlatModel and J from vmap
    model = ng.FlatModel(copy.deepcopy(net))
    ref = ng.NoiseGeometry.from_model(model, model.theta0, X.double(), y[:, 0].double(), route="jacobian")
    assert geo.mu() == pytest.approx(ref.mu(), rel=1e-10)
    assert geo.p == sum(q.numel() for q in net.parameters()) == 385
    assert next(net.parameters()).dtype == torch.float32
