# minflow's everyday commands. `make install test` is what the README and CI run.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install test test-all clean

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The fast hypothesis profile: the whole suite in a few minutes on 2 cores.
test:
	$(BIN)/python -m pytest -q

# The thorough hypothesis profile (more examples per property).
test-all:
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
