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

    .venv/bin/python tests/mutation/fresh.py [MODULE ...]
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from report import survivor_names

# The modules whose code runs at import, and the tests that exercise what that code builds.
IMPORT_TIME = {
    "autodiff": ["tests/test_engine.py", "tests/test_ops.py"],
}
RESULTS = Path("mutants/fresh-process.json")


def run_fresh(name, tests):
    """pytest's exit code with the mutant ``name`` on from the start of a new interpreter."""
    environment = dict(os.environ, MUTANT_UNDER_TEST=name, HYPOTHESIS_PROFILE="mutation")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd="mutants", env=environment, capture_output=True).returncode


def main():
    modules = sys.argv[1:] or list(IMPORT_TIME)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for module in modules:
        tests = next((files for prefix, files in IMPORT_TIME.items() if module.split(".")[0] == prefix), None)
        if tests is None:
            continue  # nothing of this module runs at import
        for name in survivor_names([module]):
            results[name] = run_fresh(name, tests)
            print(f"{name}: exit code {results[name]} in a fresh process", flush=True)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
