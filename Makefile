# Set-up and entry points. `make run` and `make test` each create the virtual
# environment on first use, so each is the single command a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch. Elsewhere, override, e.g. `make test TORCH_SPEC=torch`
# (pip then picks the build for your platform).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test venv clean

$(BIN)/alws: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/alws

venv: $(BIN)/alws

run: $(BIN)/alws
	$(BIN)/alws run gradient-estimation

test: $(BIN)/alws
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info
