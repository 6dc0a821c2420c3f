# The two commands a new user needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROMPT  ?= a red circle moving to the right on a black background

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

# Installing torch first, pinned, takes the CPU build from the local file; any
# later unpinned request would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/reelgen generate "$(PROMPT)" -o demo.mp4
	@echo "wrote demo.mp4"

test: setup
	$(BIN)/python -m pytest -q

# Everything but the tests that start servers or train for a while.
test-fast: setup
	$(BIN)/python -m pytest -q -m 'not slow'

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
