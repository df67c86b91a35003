# minflow's everyday commands. On a fresh machine `make demo` and `make test` each set up
# what they need (a .venv with minflow and its extras) and then do their job.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.installed

.PHONY: install demo test test-cupy test-all lint format lectures book bench gpu-check mutation clean

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

# The same suite on the strict CuPy stand-in (tests/support/strict_cupy): a NumPy-backed `cupy`
# that refuses what a GPU refuses (implicit host copies, NumPy arrays in device ops, NumPy-only
# names) and counts device synchronisations. Proves the CuPy code path without a GPU; CI runs both.
test-cupy: install
	PYTHONPATH=$(CURDIR)/tests/support/strict_cupy MINFLOW_BACKEND=cupy $(BIN)/python -m pytest -q

# ruff: the lint rules and the formatting of pyproject.toml's [tool.ruff] (CI runs this too).
# `make format` rewrites the files into that format; `make lint` only checks.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The thorough hypothesis profile (more examples per property).
test-all: install
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q

# The course as notebooks in build/lectures (not committed): instructor/, executed, with the solutions and
# figures; student/, every exercise's solution replaced by nbgrader's stub (lectures/editions.py).
lectures: install
	$(BIN)/python lectures/build.py

# The course as a website, build/book/html/index.html (it needs no network): the lectures executed (instructor
# edition) and an API reference from minflow's docstrings, by Sphinx and MyST-NB (docs/build.py). It runs every
# lecture first; BOOK_ARGS=--quick with their small budgets (about 2 minutes), BOOK_ARGS="--notebooks build/lectures"
# renders what `make lectures` ran (under a minute).
BOOK_ARGS ?=
book: install
	$(BIN)/python docs/build.py $(BOOK_ARGS)

# Timings (after a correctness check): a RealNVP train step in minflow, PyTorch, autograd and hand-written NumPy,
# then minflow's MAF and digits models, then a train step's memory over 1,000 steps. About 20 minutes.
bench: install
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' threadpoolctl || echo "bench: could not install torch and threadpoolctl; the benchmark skips what is missing"
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/minflow_models.py
	$(BIN)/python benchmarks/memory.py

# The day a GPU is there: on a machine with CuPy and a CUDA device (pip install 'minflow[gpu]' first), the gpu
# tests, the whole suite on CuPy, the GPU train-step benchmark, the CuPy memory pool and lecture 9, into one
# results file in benchmarks/gpu_results/ (see benchmarks/gpu_check.py). It installs torch (a CUDA build) only
# once it has found a device. Elsewhere it prints one line and does nothing. GPU_CHECK_ARGS=--full: lecture 9 in full.
GPU_CHECK_ARGS ?=
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# Mutation testing (not in CI; tests/MUTATION.md has the scores, every survivor and the run times): mutmut plants
# one bug at a time in minflow's autodiff, flows, testing, optim and train modules and runs the tests that execute
# the changed function, on 2 workers. Then three more passes over the survivors: those the strict CuPy stand-in can
# tell apart (a backend, dtype or device, a synchronisation, the engine), on the stand-in; those of code that runs
# while minflow is imported, in a fresh interpreter (tests/mutation/fresh.py); and, in a fresh interpreter on the
# stand-in, the tests that only run on CuPy (fresh.py --stand-in). The report fails if a survivor has no reason in
# tests/mutation/explained.py (equivalent, or not killed yet). The whole run takes about two hours on 2 cores;
# MUTATION_MODULES runs a subset, by module name under minflow: `make mutation MUTATION_MODULES="optim flows.planar"`.
# Each run tries every mutant of its modules again; the results stay in mutants/ (`rm -rf mutants` also redoes the
# setup). Run it in the foreground: a background job of a non-interactive shell ignores Ctrl-C, and so would the
# interruption tests of tests/test_resume.py.
MUTATION_MODULES ?= optim train testing autodiff flows
MUTATION_RUN = HYPOTHESIS_PROFILE=mutation $(BIN)/mutmut run --max-children 2
STRICT_CUPY = PYTHONPATH=$(CURDIR)/tests/support/strict_cupy MINFLOW_BACKEND=cupy
mutation: install
	$(BIN)/python -m pip install --quiet -e '.[dev,mutation]'
	$(MUTATION_RUN) $(foreach module,$(MUTATION_MODULES),'minflow.$(module).*')
	survivors=$$($(BIN)/python tests/mutation/report.py --names --backend-only $(MUTATION_MODULES)); \
	if [ -n "$$survivors" ]; then $(STRICT_CUPY) $(MUTATION_RUN) $$survivors; fi
	$(BIN)/python tests/mutation/fresh.py $(MUTATION_MODULES)
	$(BIN)/python tests/mutation/fresh.py --stand-in $(MUTATION_MODULES)
	$(BIN)/python tests/mutation/report.py --survivors $(MUTATION_MODULES)
	$(BIN)/python tests/mutation/report.py --check $(MUTATION_MODULES)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis runs mutants
