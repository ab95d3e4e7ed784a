"""The solution-free source tree of the student edition, and the git branch `student`.

    python scripts/student_branch.py tree [DEST]     # write the tree (default _build/student/tree)
    python scripts/student_branch.py commit          # write it, then commit it onto branch `student`
    git push origin student                          # publish (the maintainer; needs the network)

The student edition's Binder buttons open the chapters from branch `student`
(scripts/build_book.sh sets `repository.branch: student`), so that what a
student runs is this tree, not the default branch with every solution in it.
`make student` writes the tree; it never commits or pushes.

The tree holds what Binder needs to run the chapters (the chapters with their
solutions and instructor notes removed by _ext/student_edition.py, noisegeom/,
pyproject.toml, requirements.txt, .binder/, jupytext.toml, references.bib),
each chapter's student assignment from `make assignments` when it has been
built (_build/assignments/NN_name/student/ -> assignments/NN_name/), and a short
README for students. Not the tests, not assignments/ (its hidden checks would
give the answers away), not the scripts or the book's build configuration.

`commit` uses git plumbing with a temporary index (add, write-tree,
commit-tree, update-ref): the current checkout's working tree, index and HEAD
are not touched, and each commit has the previous `student` commit as its
parent, so a student's clone can always fast-forward.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))
from student_edition import strip_solutions  # noqa: E402

DEFAULT_TREE = ROOT / "_build" / "student" / "tree"
BRANCH = "student"
# What the student tree takes from the repository: folders (every file in them
# that git tracks or would track) and single files.
FOLDERS = ("chapters", "noisegeom", ".binder")
FILES = ("pyproject.toml", "requirements.txt", "jupytext.toml", "references.bib")
# Never in the tree, even if present and not ignored (build leftovers).
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "_build"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
# The first line of the generated README: marks a folder this script may replace.
MARKER = "<!-- student edition tree: written by scripts/student_branch.py -->"


def _repository_files(root: Path) -> list[Path]:
    """Paths (relative to root) of the files the tree takes from the repository."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
             "--", *FOLDERS, *FILES],
            check=True, capture_output=True, text=True).stdout.split("\0")
        paths = sorted({Path(p) for p in listed if p})
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (e.g. an unpacked archive): everything there.
        paths = sorted(p.relative_to(root) for folder in FOLDERS for p in (root / folder).rglob("*")
                       if p.is_file())
        paths += [Path(f) for f in FILES]
    return [p for p in paths
            if (root / p).is_file() and not SKIP_PARTS & set(p.parts) and p.suffix not in SKIP_SUFFIXES
            and not (p.parts[0] == "chapters" and p.suffix == ".ipynb")]  # jupytext copies, ignored


def _binder_url(root: Path) -> str:
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = cfg["repository"]["url"].rstrip("/").removesuffix(".git")
    org, name = repo.split("/")[-2:]
    hub = cfg.get("launch_buttons", {}).get("binderhub_url", "https://mybinder.org").rstrip("/")
    return f"{hub}/v2/gh/{org}/{name}/{BRANCH}?urlpath=lab/tree/chapters"


def _readme(root: Path, assignments: list[str]) -> str:
    url = _binder_url(root)
    lines = [
        MARKER,
        "# Noise Geometry: student edition",
        "",
        "The chapters of *Noise Geometry* as notebooks, without the solutions of the exercises.",
        "This branch is generated from the book's sources by `scripts/student_branch.py`;",
        "do not edit it (changes are overwritten by the next version).",
        "",
        f"**Run it on Binder:** [{url}]({url}) (the launch button of every chapter of the",
        "student website opens the same). The first start builds the environment and takes a",
        "few minutes. Open a chapter in `chapters/` (a `.md` file opens as a notebook) and use",
        "**Run → Run All Cells**.",
        "",
        "**Run it on your machine** (Python 3.11):",
        "",
        "```bash",
        "python -m venv .venv && . .venv/bin/activate",
        "pip install -r .binder/requirements.txt",
        "pip install --no-deps -e .",
        "jupyter lab chapters",
        "```",
        "",
        "Contents: `chapters/` (the book), `noisegeom/` (the package the chapters use),",
        "`.binder/` (the Binder environment).",
    ]
    if assignments:
        lines += [
            "",
            "**Assignments:** `assignments/<chapter>/<chapter>.ipynb`, one notebook per chapter",
            "with the coding exercises and the checks you may run yourself (`grader.check(...)`);",
            "your instructor grades them with further checks. Assignments here: "
            + ", ".join(f"`{a}`" for a in assignments) + ".",
        ]
    return "\n".join(lines) + "\n"


def write_tree(dest: Path = DEFAULT_TREE, root: Path = ROOT) -> dict:
    """Write the solution-free source tree of the `student` branch into ``dest``.

    Parameters
    ----------
    dest : Path
        The folder to write; replaced if it holds an earlier tree (or is
        empty), else refused.
    root : Path
        The book's repository.

    Returns
    -------
    dict
        ``chapters`` (the stripped chapter files), ``files`` (all files written)
        and ``assignments`` (the chapters whose student assignment was copied).

    Raises
    ------
    FileExistsError
        If ``dest`` exists, is not empty and was not written by this function.
    ValueError
        If a chapter's solutions cannot be located (see
        ``student_edition.solution_ranges``).
    """
    dest = Path(dest)
    if dest.exists():
        readme = dest / "README.md"
        if any(dest.iterdir()) and not (readme.is_file() and readme.read_text(errors="replace").startswith(MARKER)):
            raise FileExistsError(f"{dest} exists and is not a student tree; not replacing it")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    chapters, written = [], []
    for rel in _repository_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "chapters" and rel.suffix == ".md":
            target.write_text(strip_solutions((root / rel).read_text(encoding="utf-8")), encoding="utf-8")
            chapters.append(str(rel))
        else:
            shutil.copy2(root / rel, target)  # keeps .binder/postBuild and start executable
        written.append(str(rel))
    assignments = []
    for student in sorted((root / "_build" / "assignments").glob("*/student")):
        if student.is_dir():
            name = student.parent.name
            shutil.copytree(student, dest / "assignments" / name,
                            ignore=shutil.ignore_patterns(*SKIP_PARTS, "*.pyc"))
            assignments.append(name)
            written += [str(p.relative_to(dest)) for p in (dest / "assignments" / name).rglob("*") if p.is_file()]
    (dest / "README.md").write_text(_readme(root, assignments), encoding="utf-8")
    written.append("README.md")
    return {"chapters": chapters, "files": sorted(written), "assignments": assignments}


def _git(repo: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd or repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def commit_tree(tree: Path = DEFAULT_TREE, repo: Path = ROOT, branch: str = BRANCH,
                message: str | None = None) -> tuple[str, bool]:
    """Commit ``tree`` as the next commit of ``branch`` without touching the checkout.

    Parameters
    ----------
    tree : Path
        The folder whose files become the commit's whole content.
    repo : Path
        A git work tree of the repository (its HEAD names the source commit).
    branch : str
        The branch to create or advance.
    message : str, optional
        The commit message (default: names the source commit).

    Returns
    -------
    (str, bool)
        The branch's commit and whether it is new (False when the tree is the
        same as the branch's last commit, which is then kept).

    Raises
    ------
    ValueError
        If ``tree`` is not a non-empty folder, or ``branch`` is checked out in
        some work tree (moving it would leave that checkout out of step).
    RuntimeError
        If a git command fails.
    """
    tree, repo = Path(tree).resolve(), Path(repo).resolve()
    if not tree.is_dir() or not any(tree.iterdir()):
        raise ValueError(f"{tree} is not a non-empty folder: run `make student` first")
    ref = f"refs/heads/{branch}"
    worktrees = _git(repo, "worktree", "list", "--porcelain").splitlines()
    if f"branch {ref}" in worktrees:
        raise ValueError(f"branch {branch} is checked out in a work tree; not moving it")
    git_dir = _git(repo, "rev-parse", "--absolute-git-dir")
    with tempfile.TemporaryDirectory(prefix="student-index-") as tmp:
        # A private index: the checkout's own index and files stay as they are.
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
               "GIT_DIR": git_dir, "GIT_WORK_TREE": str(tree)}
        _git(repo, "add", "--all", "--force", "--", ".", env=env, cwd=tree)
        tree_id = _git(repo, "write-tree", env=env, cwd=tree)
    parent = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref + "^{commit}"],
                            cwd=repo, capture_output=True, text=True).stdout.strip()
    if parent and _git(repo, "rev-parse", parent + "^{tree}") == tree_id:
        return parent, False
    source = _git(repo, "rev-parse", "--short", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if message is None:
        message = (f"Student edition of {source}{' (with uncommitted changes)' if dirty else ''}\n\n"
                   "The chapters without solutions, for Binder. Written by scripts/student_branch.py.")
    env = dict(os.environ)
    if subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=repo, capture_output=True).returncode:
        # No identity configured (a fresh machine): sign as the book.
        for who in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{who}_NAME", "Noise Geometry student edition")
            env.setdefault(f"GIT_{who}_EMAIL", "student-edition@noise-geometry.invalid")
    commit = _git(repo, "commit-tree", tree_id, *(["-p", parent] if parent else []), "-m", message, env=env)
    # The expected old value makes the update fail if the branch moved meanwhile.
    _git(repo, "update-ref", "-m", "student_branch.py", ref, commit, parent or "0" * 40)
    return commit, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tree_cmd = sub.add_parser("tree", help="write the solution-free tree")
    tree_cmd.add_argument("dest", nargs="?", type=Path, default=DEFAULT_TREE)
    commit_cmd = sub.add_parser("commit", help="write the tree and commit it onto the branch")
    commit_cmd.add_argument("--branch", default=BRANCH)
    args = parser.parse_args(argv)

    dest = args.dest if args.command == "tree" else DEFAULT_TREE
    info = write_tree(dest)
    extra = f", assignments {', '.join(info['assignments'])}" if info["assignments"] else ", no assignments built"
    print(f"student tree: {dest} ({len(info['files'])} files, {len(info['chapters'])} chapters "
          f"without solutions{extra})")
    if args.command == "commit":
        commit, new = commit_tree(dest, branch=args.branch)
        state = "new commit" if new else "unchanged"
        print(f"branch {args.branch}: {commit[:12]} ({state}). Publish it with: git push origin {args.branch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
