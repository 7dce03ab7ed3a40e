# Everything the project needs is installed from here: `make train`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build pinned for this project's machines; override for CUDA, e.g.
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cu124" test
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: setup train test bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH) -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

train: setup
	$(BIN)/hyperfree train

test: setup
	$(BIN)/python -m pytest -n 2

bench: setup
	$(BIN)/python benchmarks/step.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
