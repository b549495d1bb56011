# The README's two commands are `make demo` and `make test`; each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rislib-installed
PYTEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: setup test test-slow test-browser demo lab bench lint lock clean

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
# fast setting. Notebooks stay whole on one worker (--dist loadfile).
test: setup lint
	OMP_NUM_THREADS=1 RISLIB_FAST=1 $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --nbval-lax -m "not slow and not browser" tests notebooks

test-slow: setup
	$(BIN)/python -m pytest -m slow tests

# JupyterLab in headless Chromium (Debian's chromium package, driven by Playwright).
test-browser: setup
	$(BIN)/python -m pip install -q -c requirements/constraints.txt ".[browser]" || $(BIN)/python -m pip install -q "playwright>=1.40"
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	RISLIB_BROWSER_SCREENSHOT=figures/08_explorer_browser.png $(BIN)/python -m pytest -m browser tests

demo: setup
	$(BIN)/python -m rislib demo

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python -m rislib bench

# Refresh the pins from what is installed now.
lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^rislib' > requirements/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
