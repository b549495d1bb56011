# The README's two commands are `make demo` and `make test`; each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rislib-installed
PYTEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
# `git status` before a test run, and the check after it that the run changed nothing.
TREE_BEFORE := $(VENV)/.git-status-before-test
CHECK_TREE   = git status --porcelain 2>/dev/null | diff -u $(TREE_BEFORE) - >/dev/null \
	|| { echo "the tests changed the working tree (git status before -> after):"; \
	     git status --porcelain | diff -u $(TREE_BEFORE) -; exit 1; }

.PHONY: setup test test-slow test-browser demo course lab bench lint lock clean

setup: $(STAMP)

# Reinstall only when the package metadata or the pins change.
$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev,offline-weights]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check rislib tests benchmarks

# The whole suite: lint, unit and integration tests, and every notebook (nbval) in the
# fast setting. Notebooks stay whole on one worker (--dist loadfile). Tests leave the tree as
# they found it: figures go to a temporary folder (conftest.py sets RISLIB_FIGURES_DIR), and
# the last step fails if `git status` changed during the run.
test: setup lint
	@git status --porcelain > $(TREE_BEFORE) 2>/dev/null || true
	OMP_NUM_THREADS=1 RISLIB_FAST=1 $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --nbval-lax -m "not slow and not browser" tests notebooks
	@$(CHECK_TREE)

test-slow: setup
	$(BIN)/python -m pytest -m slow tests

# JupyterLab in headless Chromium: Debian's chromium package (installed with apt-get when
# missing), driven by Playwright's Python package with that chromium as its executable
# (Playwright's own browser download is never used). CI runs it after `make test` with the
# screenshot in a temporary folder; by default it refreshes figures/08_explorer_browser.png.
RISLIB_BROWSER_SCREENSHOT ?= figures/08_explorer_browser.png
test-browser: setup
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q -c requirements/constraints.txt "playwright>=1.40"
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }
	@git status --porcelain > $(TREE_BEFORE) 2>/dev/null || true
	RISLIB_BROWSER_SCREENSHOT=$(RISLIB_BROWSER_SCREENSHOT) RISLIB_CHROMIUM=$$(command -v chromium) $(BIN)/python -m pytest -m browser tests
	@case "$(RISLIB_BROWSER_SCREENSHOT)" in figures/*) ;; *) $(CHECK_TREE) ;; esac

demo: setup
	$(BIN)/python -m rislib demo

# Every notebook in its full setting, outputs written back, cell times in docs/course_times.md.
course: setup
	$(BIN)/python benchmarks/run_course.py

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python -m rislib bench

# Refresh the pins from what is installed now.
lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^rislib' > requirements/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
