# Noise Geometry: set-up, build and test. See README.md.
#
#   make book      set up .venv (only when needed), strict executed build -> _build/html
#   make test      the same set-up and build, the assignments, student edition and PDFs, then every test
#   make student   student edition without solutions -> _build/student/html (+ tree/ for branch student)
#   make assignments  otter-grader assignments of every chapter -> _build/assignments/<chapter>/
#   make pdf       both editions as PDFs -> _build/pdf/book.pdf, student.pdf (linked from the sites)
#   make bench     benchmarks of the numerical core (scripts/bench.py)
#   make widget-times  the time of every chapter's widget update in the kernel (scripts/widget_times.py)
#   make widget-times-live  the same, key press to new figure, in JupyterLab (scripts/widget_times_live.py)
#   make lab       JupyterLab as on Binder (.venv, its settings, one thread): chapters open as notebooks
#   make clean     remove build outputs (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# The environment is (re)installed only when requirements.txt,
# .binder/requirements-lab.txt (the JupyterLab pins, for `make lab` and
# tests/book/test_lab.py) or pyproject.toml change: the stamp's name carries a hash
# of the three files.
ENV_HASH  := $(shell cat requirements.txt .binder/requirements-lab.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
ENV_STAMP := $(VENV)/.noisegeom-env-$(ENV_HASH)
CHROMIUM  := /usr/bin/chromium

.PHONY: help setup chromium book test student assignments pdf bench widget-times widget-times-live lab clean distclean

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

## set-up ---------------------------------------------------------------------

setup: $(ENV_STAMP)

$(ENV_STAMP):
	@echo "==> setting up $(VENV) (requirements.txt + .binder/requirements-lab.txt + noisegeom)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -r requirements.txt -r .binder/requirements-lab.txt
	$(PIP) install --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.noisegeom-env-*
	@touch $@

# Debian's Chromium for the browser test (never Playwright's own download).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "==> installing Debian's chromium with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    chromium fonts-liberation fonts-dejavu-core; \
	fi

## build and test -------------------------------------------------------------

book: setup
	@scripts/build_book.sh book

# Builds everything the tests read, then runs pytest on tests/: the book (strict,
# cached execution), the otter assignments, the student edition (from the book's
# execution cache; its tree carries the students' assignment notebooks) and both
# PDFs. A failed step does not stop the others or the tests (so every failure is
# listed) but always makes `make test` fail.
test: setup chromium
	@build_rc=0; assign_rc=0; student_rc=0; pdf_rc=0; test_rc=0; \
	scripts/build_book.sh book || build_rc=$$?; \
	echo "==> scripts/make_assignments.py"; \
	$(PY) scripts/make_assignments.py || assign_rc=$$?; \
	scripts/build_book.sh student || student_rc=$$?; \
	echo "==> scripts/make_pdf.py"; \
	$(PY) scripts/make_pdf.py || pdf_rc=$$?; \
	echo "==> pytest tests/"; \
	$(PY) -m pytest -ra tests || test_rc=$$?; \
	echo; \
	if [ $$build_rc -ne 0 ]; then \
	  echo "make test: FAILED - the strict book build failed (exit $$build_rc): see the build summary and test_build_succeeded above, full log in _build/build.log"; fi; \
	if [ $$assign_rc -ne 0 ]; then \
	  echo "make test: FAILED - make assignments (scripts/make_assignments.py) exit $$assign_rc"; fi; \
	if [ $$student_rc -ne 0 ]; then \
	  echo "make test: FAILED - the student edition's build failed (exit $$student_rc), log in _build/student/build.log"; fi; \
	if [ $$pdf_rc -ne 0 ]; then \
	  echo "make test: FAILED - make pdf (scripts/make_pdf.py) exit $$pdf_rc"; fi; \
	if [ $$test_rc -ne 0 ]; then \
	  echo "make test: FAILED - pytest exit $$test_rc: the 'short test summary info' above names each failing test and why"; fi; \
	if [ $$build_rc$$assign_rc$$student_rc$$pdf_rc$$test_rc != 00000 ]; then exit 1; fi; \
	echo "make test: all passed (screenshots in _build/screenshots/, PDFs in _build/pdf/)"

# The student edition: the website without solutions (pages, search index, .md and
# .ipynb downloads; _ext/student_edition.py), built from the full book's execution
# cache, and _build/student/tree, the solution-free sources that its Binder buttons
# open from branch `student`. Nothing is committed or pushed: publish the tree with
# `.venv/bin/python scripts/student_branch.py commit && git push origin student`.
student: setup assignments
	@scripts/build_book.sh student

# Otter-grader assignments from the chapters' exercises and assignments/<chapter>.py
# (scripts/make_assignments.py): student notebook, autograder zip, solutions.
assignments: setup
	$(PY) scripts/make_assignments.py

# Prints the built sites with Debian's headless Chromium and merges the pages with pypdf
# (scripts/make_pdf.py); the PDFs are also copied into the sites, at <site>/pdf/.
pdf: book student chromium
	$(PY) scripts/make_pdf.py

bench: setup
	$(PY) scripts/bench.py

widget-times: setup
	$(PY) scripts/widget_times.py

widget-times-live: setup chromium
	$(PY) scripts/widget_times_live.py

# JupyterLab as Binder starts it: the Binder lab pins (installed by `setup`),
# the settings .binder/postBuild installs (.md opens as a Jupytext notebook), and
# through .binder/start (OMP/MKL/OPENBLAS_NUM_THREADS=1 for the kernels). Rooted
# at the repository, like Binder, so that jupytext.toml applies; opens chapters/.
lab: setup
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp .binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	.binder/start $(VENV)/bin/jupyter lab --LabApp.default_url=/lab/tree/chapters \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf _build chapters/_build .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
