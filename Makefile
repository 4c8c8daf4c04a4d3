# Set-up and entry points. `make run` and `make test` each create the virtual
# environment on first use, so each is the single command a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch. Elsewhere, override, e.g. `make test TORCH_SPEC=torch`
# (pip then picks the build for your platform).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test venv datasets clean

$(BIN)/alws: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/alws

venv: $(BIN)/alws

# The main job: Experiment I's quick preset (about two minutes on 2 CPU cores, progress lines
# every few seconds); the full run is `$(BIN)/alws run gradient-estimation`.
run: $(BIN)/alws
	$(BIN)/alws run gradient-estimation --preset quick

# Debian's dataset-fashion-mnist (60,000 + 10,000 images under /usr/share/datasets) for the
# image tests and `alws run images --set dataset=fashion-mnist`; needs root and apt-get,
# otherwise the tests that need it are skipped with a message.
datasets:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) \
	      || echo "could not install dataset-fashion-mnist: its tests will be skipped"; \
	  else echo "dataset-fashion-mnist not installed (needs root and apt-get): its tests will be skipped"; fi; \
	fi

test: $(BIN)/alws datasets
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info
