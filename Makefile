# minflow's everyday commands. On a fresh machine `make demo` and `make test` each set up
# what they need (a .venv with minflow and its extras) and then do their job.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.installed

.PHONY: install demo test test-all lectures clean

install: $(INSTALLED)

# Reinstall when the dependencies change; the stamp file records the last install.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

# The main job: train RealNVP on two moons and write its figures to runs/demo.
demo: install
	$(BIN)/python -m minflow demo

# The fast hypothesis profile: the whole suite in well under ten minutes on 2 cores.
test: install
	$(BIN)/python -m pytest -q

# The thorough hypothesis profile (more examples per property).
test-all: install
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q

# The course as executed notebooks (with their figures) in build/lectures; not committed.
lectures: install
	$(BIN)/python lectures/build.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis runs
