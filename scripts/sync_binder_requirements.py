"""Write .binder/requirements.txt from requirements.txt (+ .binder/requirements-lab.txt).

Binder (repo2docker) installs .binder/requirements.txt. It must carry the same
pins as requirements.txt, with one difference: torch comes as the CPU wheel
from the PyTorch index (``torch==2.13.0+cpu``), not the multi-GB CUDA build
that PyPI serves. Then the JupyterLab pins (jupyterlab-myst; jupytext is
already in requirements.txt) so the MyST chapters open as notebooks.

    .venv/bin/python scripts/sync_binder_requirements.py          # rewrite
    .venv/bin/python scripts/sync_binder_requirements.py --check  # exit 1 if stale

tests/book/test_book.py checks that the file is current and that the pins agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
LOCAL_LABEL = {"torch": "cpu"}  # packages taken from the PyTorch CPU index


def _pins(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def render(root: Path = ROOT) -> str:
    out = [
        "# GENERATED from requirements.txt and .binder/requirements-lab.txt by",
        "# scripts/sync_binder_requirements.py; do not edit by hand.",
        "# Binder installs this file: the book's exact pins, with torch as the CPU",
        "# wheel from the PyTorch index, then JupyterLab + jupyterlab-myst.",
        f"--extra-index-url {TORCH_INDEX}",
    ]
    for pin in _pins(root / "requirements.txt"):
        name, _, version = pin.partition("==")
        label = LOCAL_LABEL.get(name.strip().lower())
        if label and "+" not in version:
            pin = f"{name}=={version}+{label}"
        out.append(pin)
    out.append("# --- lab: JupyterLab, MyST rendering (chapters open as notebooks)")
    out.extend(_pins(root / ".binder" / "requirements-lab.txt"))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args(argv)
    target = ROOT / ".binder" / "requirements.txt"
    text = render()
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run scripts/sync_binder_requirements.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
