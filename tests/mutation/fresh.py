"""The fresh-process pass of `make mutation`: survivors whose function runs while minflow is imported.

mutmut imports minflow once, in a parent process, and forks one child per mutant; the child switches the
mutant on after the import. A function that runs *during* the import (the decorator that registers every
autodiff op, the wrapper that makes `a * b` call `mul`) has already run by then, unmutated, so its mutants
survive every test: not because the tests miss them, but because the mutant never ran.

This pass runs each such survivor the way a user would meet the bug: a new interpreter with the mutant
switched on before `import minflow` (mutmut reads MUTANT_UNDER_TEST from the environment), then the tests
that cover the code in question, stopping at the first failure. The verdicts go to mutants/fresh-process.json
(name -> pytest's exit code), which report.py reads: 1 (a test failed), 2 (the import or collection failed)
or 3 (pytest's internal error) is a kill; 0 is a survivor, and 4 or 5 (bad usage, no tests) says nothing.

With ``--stand-in`` it does the same for the tests that run only on CuPy (STAND_IN_ONLY below): every survivor
of those modules once more, on the strict stand-in, in a new interpreter, with those test files.

    .venv/bin/python tests/mutation/fresh.py [--stand-in] [MODULE ...]
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from explained import EQUIVALENT
from report import FRESH_KILLS, survivor_names

# The modules whose code runs at import, and the tests that exercise what that code builds.
IMPORT_TIME = {
    "autodiff": ["tests/test_engine.py", "tests/test_ops.py"],
}
# Tests that run only when CuPy is the default backend or importable (skipped on NumPy): the NumPy-made map of
# tests to functions never names them, so the strict CuPy pass cannot use them. `--stand-in` reruns every
# survivor of these modules on the strict stand-in with these files: the refusal to mix NumPy and CuPy arrays,
# the synchronisation counts, and what only the stand-in can tell apart.
STAND_IN_ONLY = {
    "autodiff": ["tests/test_engine.py", "tests/test_backend.py", "tests/test_syncs.py"],
    "flows": [
        "tests/test_backend.py",
        "tests/test_syncs.py",
        "tests/test_spline_details.py",
        "tests/test_flow_messages.py",
        "tests/test_planar_numerics.py",
    ],
    "optim": ["tests/test_adam.py"],
    "train": ["tests/test_follow_data.py", "tests/test_syncs.py"],
}
EQUIVALENT_NAMES = {name for names in EQUIVALENT.values() for name in names}  # --stand-in skips these (slow pass)
STAND_IN = {"PYTHONPATH": str(Path("tests/support/strict_cupy").resolve()), "MINFLOW_BACKEND": "cupy"}
RESULTS = Path("mutants/fresh-process.json")


def run_fresh(name, tests, extra_environment=None):
    """pytest's exit code with the mutant ``name`` on from the start of a new interpreter."""
    environment = dict(os.environ, MUTANT_UNDER_TEST=name, HYPOTHESIS_PROFILE="mutation", **(extra_environment or {}))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd="mutants", env=environment, capture_output=True).returncode


def main():
    stand_in = "--stand-in" in sys.argv[1:]
    table, environment = (STAND_IN_ONLY, STAND_IN) if stand_in else (IMPORT_TIME, None)
    modules = [argument for argument in sys.argv[1:] if argument != "--stand-in"] or list(table)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for module in modules:
        tests = next((files for prefix, files in table.items() if module.split(".")[0] == prefix), None)
        if tests is None:
            continue  # nothing of this module runs at import (or has stand-in-only tests)
        for name in survivor_names([module]):
            if results.get(name) in FRESH_KILLS or (stand_in and name in EQUIVALENT_NAMES):
                continue  # already killed by the other fresh pass, or shown unable to change a result
            results[name] = run_fresh(name, tests, environment)
            print(f"{name}: exit code {results[name]} in a fresh process", flush=True)
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
