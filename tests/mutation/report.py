"""Summarise a mutmut run (`make mutation` calls this at the end): per module, how many of the planted bugs
the suite killed, and every survivor as one line (its mutmut name, then the original line -> the mutated one).

    .venv/bin/python tests/mutation/report.py [--survivors | --names] [MODULE ...]

MODULE is a module or package under minflow (`optim`, `flows`, `flows.planar`); none means every mutated module.
Read `mutmut show NAME` for a survivor's full diff, and tests/MUTATION.md for what each survivor means.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

# The columns of the table, in the order tests/MUTATION.md uses; mutmut's rarer verdicts go into one of them.
COLUMNS = ["killed", "survived", "no tests", "timeout", "suspicious", "skipped", "not checked"]
MERGED = {"segfault": "killed", "caught by type check": "killed", "check was interrupted by user": "not checked"}


def verdict_of(exit_code):
    verdict = status_by_exit_code[exit_code]
    return MERGED.get(verdict, verdict)


def module_name(meta_path):
    """mutants/minflow/flows/planar.py.meta -> flows.planar"""
    relative = meta_path.relative_to("mutants/minflow").with_suffix("").with_suffix("")
    return ".".join(relative.parts)


def one_line_change(name, source_path):
    """The first removed and the first added line of the mutant's diff: what the planted bug changed."""
    diff = get_diff_for_mutant(name, path=source_path).splitlines()
    removed = next((line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---")), "")
    added = next((line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++")), "")
    return f"`{removed}` -> `{added}`"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules or packages, e.g. optim flows.planar (default: all)")
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    parser.add_argument("--names", action="store_true", help="only print the survivors' names, one a line")
    args = parser.parse_args()

    rows, survivors = [], []
    for meta_path in sorted(Path("mutants/minflow").rglob("*.py.meta")):
        module = module_name(meta_path)
        if args.modules and not any(module == name or module.startswith(name + ".") for name in args.modules):
            continue
        meta = json.loads(meta_path.read_text())
        exit_codes = meta["exit_code_by_key"]
        if not exit_codes:
            continue  # an __init__.py with nothing to mutate
        counts = Counter(verdict_of(code) for code in exit_codes.values())
        if counts["not checked"] == len(exit_codes):
            continue  # not run yet
        # The score counts a mutant as caught when a test failed or hung (a timeout is a planted infinite loop
        # that the suite does notice); a mutant no selected test executes counts against the score.
        checked = len(exit_codes) - counts["not checked"]
        score = (counts["killed"] + counts["timeout"]) / checked
        # Each mutant's run time, summed and shared by mutmut's 2 workers: about the module's wall time.
        minutes = sum(meta["durations_by_key"].get(name, 0) for name in exit_codes) / 2 / 60
        row = [module, str(len(exit_codes))] + [str(counts[column]) for column in COLUMNS]
        row += [f"{score:.1%}", f"{minutes:.0f}"]
        rows.append("| " + " | ".join(row) + " |")
        source_path = Path("minflow", *module.split(".")).with_suffix(".py")
        for name, code in sorted(exit_codes.items()):
            if verdict_of(code) in ("survived", "no tests", "suspicious"):
                survivors.append((name, verdict_of(code), source_path))
    if args.names:
        print("\n".join(name for name, status, source_path in survivors if status == "survived"))
        return
    print("| module | mutants | " + " | ".join(COLUMNS) + " | score | minutes |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    print("\n".join(rows))
    if args.survivors:
        print()
        for name, status, source_path in survivors:
            tag = "" if status == "survived" else f" ({status})"
            print(f"- `{name}`{tag}: {one_line_change(name, source_path)}")


if __name__ == "__main__":
    main()
