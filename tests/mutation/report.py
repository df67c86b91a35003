"""Summarise a mutmut run (`make mutation` calls this at the end): per module, how many of the planted bugs
the suite killed, and every survivor as one line (its mutmut name, then the original line -> the mutated one),
under the reason tests/mutation/explained.py gives for it, or under "Not explained" when it gives none.

    .venv/bin/python tests/mutation/report.py [--survivors | --names | --check] [MODULE ...]

MODULE is a module or package under minflow (`optim`, `flows`, `flows.planar`); none means every mutated module.
`--names` prints the survivors' names only (for the next pass; `--backend-only`: those the strict CuPy pass
can kill, whose changed line names a backend, dtype or device); `--check` exits with status 1 if a survivor is
not explained, or if explained.py names a mutant that no longer survives (a stale entry). Read
`mutmut show NAME` for a survivor's full diff.

Verdicts come from mutmut's files (mutants/minflow/**/*.meta: the NumPy pass, then the strict CuPy pass over
its survivors) and from mutants/fresh-process.json (tests/mutation/fresh.py: the survivors whose code runs
while minflow is imported, rerun in a new interpreter with the mutant on from the start).
"""

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from explained import EQUIVALENT, NOT_KILLED
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

# The columns of the table, in the order tests/MUTATION.md uses; mutmut's rarer verdicts go into one of them.
COLUMNS = ["killed", "survived", "no tests", "timeout", "suspicious", "skipped", "not checked"]
MERGED = {"segfault": "killed", "caught by type check": "killed", "check was interrupted by user": "not checked"}
LOST = ("survived", "no tests", "suspicious")  # what counts against the score
FRESH_KILLS = {1, 2, 3}  # pytest: tests failed, collection (the import) failed, internal error
FRESH = Path("mutants/fresh-process.json")


def verdict_of(exit_code):
    verdict = status_by_exit_code[exit_code]
    return MERGED.get(verdict, verdict)


def module_name(meta_path):
    """mutants/minflow/flows/planar.py.meta -> flows.planar"""
    relative = meta_path.relative_to("mutants/minflow").with_suffix("").with_suffix("")
    return ".".join(relative.parts)


def selected(module, modules):
    return not modules or any(module == name or module.startswith(name + ".") for name in modules)


def verdicts(modules):
    """{module: {mutant name: verdict}} for every module run, a fresh-process kill counted as killed."""
    fresh = json.loads(FRESH.read_text()) if FRESH.exists() else {}
    result = {}
    for meta_path in sorted(Path("mutants/minflow").rglob("*.py.meta")):
        module = module_name(meta_path)
        exit_codes = json.loads(meta_path.read_text())["exit_code_by_key"]
        if not selected(module, modules) or not exit_codes:
            continue  # not asked for, or an __init__.py with nothing to mutate
        by_name = {name: verdict_of(code) for name, code in exit_codes.items()}
        if all(verdict == "not checked" for verdict in by_name.values()):
            continue  # not run yet
        for name, verdict in by_name.items():
            # (a check mutmut reports as interrupted: the mutant let a SIGINT through to mutmut's own child)
            if verdict in ("survived", "no tests", "not checked") and fresh.get(name) in FRESH_KILLS:
                by_name[name] = "killed"
        result[module] = {"meta": meta_path, "verdicts": by_name}
    return result


# Words of a line of code that decides on which backend, in which dtype or on which device an array is made or
# read: the survivors whose mutated line holds one are the ones the strict CuPy pass can kill. (The stand-in
# runs the same NumPy arithmetic, so a mutant anywhere else gives the same numbers there.)
BACKEND_WORDS = ("xp", "array_module", "backend", "dtype", "device", "host", "numpy", "cupy", "asarray", "rng")
# Words of a line that decides when the host waits for the device (a synchronisation: reading a number out of an
# array, or the cadence of the solvers' convergence checks). The stand-in counts synchronisations and
# tests/test_syncs.py pins them, so any change to such a line is worth the strict pass.
SYNC_WORDS = ("bool(", "float(", "int(", "CHECK_EVERY")


def survivor_names(modules, backend_only=False):
    """The names of the surviving mutants of ``modules``, and of those no test reached (what the next pass reruns:
    a test added since may reach them); with ``backend_only``,
    only those whose changed line names a backend, dtype or device (BACKEND_WORDS), and every survivor of the
    engine (minflow.autodiff, where NumPy and CuPy arrays are told apart)."""
    names = [
        (name, entry["meta"])
        for entry in verdicts(modules).values()
        for name, verdict in sorted(entry["verdicts"].items())
        if verdict in ("survived", "no tests")
    ]
    if backend_only:  # the engine enforces the backend rules, so any change to it may show only on CuPy
        names = [
            (name, meta)
            for name, meta in names
            if module_name(meta).startswith("autodiff.") or changes_backend(*changed_lines(name, source_of(meta)))
        ]
    return [name for name, _ in names]


def changes_backend(removed, added):
    """Whether the change from line ``removed`` to ``added`` is one the strict stand-in can see: a BACKEND_WORDS
    word in the part that changed, a SYNC_WORDS word anywhere in the line, or an argument of
    xp/array_module/dtype/rng/astype(...) (or xp=, dtype=, device=) replaced by None or dropped."""
    start = 0
    while start < min(len(removed), len(added)) and removed[start] == added[start]:
        start += 1
    end = 0
    while end < min(len(removed), len(added)) - start and removed[-1 - end] == added[-1 - end]:
        end += 1
    old, new = removed[start : len(removed) - end], added[start : len(added) - end]
    if any(word in old or word in new for word in BACKEND_WORDS) or any(word in removed for word in SYNC_WORDS):
        return True
    before = removed[:start]
    call = re.search(r"(xp|array_module|dtype|rng|astype|to_device)\([^()]*$|(xp|dtype|device)=\s*$", before)
    return new.strip(" ,") in ("None", "") and call is not None


def source_of(meta_path):
    """mutants/minflow/flows/planar.py.meta -> minflow/flows/planar.py"""
    return Path("minflow", *module_name(meta_path).split(".")).with_suffix(".py")


def explanations():
    """{mutant name: (kind, reason)} from explained.py; kind is "equivalent" or "not killed"."""
    explained = {}
    for kind, groups in (("equivalent", EQUIVALENT), ("not killed", NOT_KILLED)):
        for reason, names in groups.items():
            for name in names:
                if name in explained:
                    raise ValueError(f"explained.py gives {name} two reasons")
                explained[name] = (kind, reason)
    return explained


def changed_lines(name, source_path):
    """The first removed and the first added line of the mutant's diff: what the planted bug changed."""
    diff = get_diff_for_mutant(name, path=source_path).splitlines()
    removed = next((line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---")), "")
    added = next((line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++")), "")
    return removed, added


def one_line_change(name, source_path):
    removed, added = changed_lines(name, source_path)
    return f"`{removed}` -> `{added}`"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules or packages, e.g. optim flows.planar (default: all)")
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant, by reason")
    parser.add_argument("--names", action="store_true", help="only print the survivors' names, one a line")
    parser.add_argument("--backend-only", action="store_true", help="with --names: only backend/dtype/device lines")
    parser.add_argument("--check", action="store_true", help="fail if a survivor is not explained")
    args = parser.parse_args()

    if args.names:
        print("\n".join(survivor_names(args.modules, backend_only=args.backend_only)))
        return
    explained = explanations()
    rows, survivors = [], []
    for module, entry in verdicts(args.modules).items():
        counts = Counter(entry["verdicts"].values())
        checked = len(entry["verdicts"]) - counts["not checked"]
        # The score counts a mutant as caught when a test failed or hung (a timeout is a planted infinite loop
        # that the suite does notice); a mutant no selected test executes counts against the score. The score
        # over the rest leaves out the survivors explained.py shows to be equivalent.
        caught = counts["killed"] + counts["timeout"]
        lost = [name for name, verdict in entry["verdicts"].items() if verdict in LOST]
        equivalent = sum(explained.get(name, ("",))[0] == "equivalent" for name in lost)
        meta = json.loads(entry["meta"].read_text())
        minutes = sum(meta["durations_by_key"].get(name, 0) for name in entry["verdicts"]) / 2 / 60
        row = [module, str(len(entry["verdicts"]))] + [str(counts[column]) for column in COLUMNS]
        row += [f"{caught / checked:.1%}", str(equivalent), f"{caught / max(checked - equivalent, 1):.1%}"]
        rows.append("| " + " | ".join(row + [f"{minutes:.0f}"]) + " |")
        source_path = source_of(entry["meta"])
        survivors += [(name, entry["verdicts"][name], source_path) for name in sorted(lost)]
    print("| module | mutants | " + " | ".join(COLUMNS) + " | score | equivalent | score over the rest | minutes |")
    print("|---" * (len(COLUMNS) + 6) + "|")
    print("\n".join(rows))

    unexplained = [name for name, _, _ in survivors if name not in explained]
    if args.survivors:
        groups = {}
        for name, status, source_path in survivors:
            groups.setdefault(explained.get(name, ("not explained", "")), []).append((name, status, source_path))
        for (kind, reason), members in sorted(groups.items(), key=lambda item: item[0][0] != "not explained"):
            print(f"\n**{kind.capitalize()}** ({len(members)}){': ' + reason if reason else ''}\n")
            for name, status, source_path in members:
                tag = "" if status == "survived" else f" ({status})"
                print(f"- `{name}`{tag}: {one_line_change(name, source_path)}")
    if args.check:
        alive = {name for name, _, _ in survivors}
        modules_run = verdicts(args.modules)
        stale = [
            name
            for name in explained
            if name not in alive and any(name in entry["verdicts"] for entry in modules_run.values())
        ]
        for name in unexplained:
            print(f"not explained: {name}", file=sys.stderr)
        for name in stale:
            print(f"explained.py names a mutant that no longer survives: {name}", file=sys.stderr)
        sys.exit(1 if unexplained or stale else 0)


if __name__ == "__main__":
    main()
