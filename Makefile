# The two entry points: `make demo` and `make test`. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

install:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
		$(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --all-extras

# the demo workflow (workflows/demo.yaml): CSV -> store -> tiny stage 1 / stage 2 /
# fine-tune -> evaluate -> report; a second run finds every step done and says so
demo: install
	$(UV) run --frozen python -m workflows run workflows/demo.yaml --set workdir=$(DEMO_DIR)

test: install
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check pipeline store train eval tests workflows

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
