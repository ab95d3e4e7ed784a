#!/usr/bin/env bash
# Strict, executed build of the book.
#
#   scripts/build_book.sh                 # the book        -> _build/html
#   scripts/build_book.sh student         # student edition -> _build/student/html
#                                         #   + its source tree  -> _build/student/tree
#
# Runs `jupyter-book build . -W -n --keep-going`: any cell error, broken
# reference or warning fails the build, and --keep-going makes the build report
# every failure, not only the first. Chapters whose code did not change are not
# re-executed (jupyter-cache in _build/.jupyter_cache, shared by both editions).
# The log goes to <out>/build.log and the exit status to <out>/build.rc, which
# tests/book/test_book.py reads.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JB=${JB:-$ROOT/.venv/bin/jupyter-book}
PY=${PY:-$ROOT/.venv/bin/python}
edition=${1:-book}

case "$edition" in
  book)
    out=_build
    args=(.)
    ;;
  student)
    # Same book, solutions removed, built from a generated copy of _config.yml:
    # hide_solutions switches _ext/student_edition.py on, which removes every
    # solution from the pages and the downloads. The chapters are read unchanged,
    # so the execution cache of the full book serves this build too. The launch
    # buttons open the solution-free branch `student` (written below into
    # _build/student/tree; scripts/student_branch.py commit puts it on the branch).
    out=_build/student
    mkdir -p "$out"
    "$PY" - "$ROOT" "$out/_config.yml" <<'EOF' || exit 1
import sys
from pathlib import Path
import yaml
root, dest = Path(sys.argv[1]), Path(sys.argv[2])
cfg = yaml.safe_load((root / "_config.yml").read_text())
cfg["title"] = cfg["title"] + " (student edition)"
cfg.setdefault("execute", {})["cache"] = str(root / "_build" / ".jupyter_cache")
sphinx = cfg.setdefault("sphinx", {})
sphinx["local_extensions"] = {
    name: str((root / path).resolve())
    for name, path in (sphinx.get("local_extensions") or {}).items()
}
sphinx["local_extensions"]["student_edition"] = str(root / "_ext")
sphinx.setdefault("config", {})["hide_solutions"] = True
# Binder opens the chapters from the solution-free branch; the repository
# button would lead to the default branch, solutions and all.
cfg.setdefault("repository", {})["branch"] = "student"
cfg.setdefault("html", {})["use_repository_button"] = False
dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
EOF
    args=(. --config "$out/_config.yml" --path-output "$out/tmp")
    ;;
  *)
    echo "usage: $0 [book|student]" >&2
    exit 2
    ;;
esac

# The chapters work with small tensors, where BLAS and torch threads cost more in
# synchronisation than they gain (and oversubscribe a shared machine): execute
# them single-threaded unless the caller says otherwise.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} \
       OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

# The website's interactive figures: noisegeom.widgets.explore renders each over a grid of
# its controls' values into this folder (kept beside the execution cache, which its
# outputs belong to); _ext/widget_frames.py copies the frames the pages use into the site.
export NOISEGEOM_WIDGET_FRAMES=${NOISEGEOM_WIDGET_FRAMES:-$ROOT/_build/widget_frames}

mkdir -p "$out"
rm -f "$out/build.rc"
start=$(date +%s)
echo "==> jupyter-book build ${args[*]} -W -n --keep-going  (log: $out/build.log)"
"$JB" build "${args[@]}" -W -n --keep-going 2>&1 | tee "$out/build.log"
rc=${PIPESTATUS[0]}
echo "$rc" > "$out/build.rc"
echo "$(( $(date +%s) - start ))" > "$out/build.seconds"

if [ "$edition" = student ]; then
  # jupyter-book writes to <path-output>/_build/html; expose it as _build/student/html.
  ln -sfn tmp/_build/html "$out/html"
  # The source tree of the `student` branch, whatever the build's outcome (it
  # does not depend on it), so that the tests can check both.
  if ! "$PY" scripts/student_branch.py tree "$out/tree"; then
    echo "writing the student tree $out/tree failed" >&2
    [ "$rc" -ne 0 ] || rc=1
    echo "$rc" > "$out/build.rc"
  fi
fi

if [ "$rc" -ne 0 ]; then
  echo
  echo "==================== BOOK BUILD FAILED (exit $rc) ===================="
  echo "Warnings and errors (each one fails the strict build):"
  sed 's/\x1b\[[0-9;]*m//g' "$out/build.log" \
    | grep -E "WARNING|ERROR|CRITICAL|Executing notebook failed|Error|Exception|^-+>" \
    | grep -v -E "Kernel is running over TCP|^\s*$" | tail -n 60
  echo "Full log: $out/build.log"
  echo "======================================================================"
  exit "$rc"
fi
echo
if [ "$edition" = student ]; then
  echo "Student edition built. Open: file://$ROOT/$out/html/index.html"
else
  echo "Book built. Open: file://$ROOT/_build/html/index.html"
fi
