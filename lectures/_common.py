"""Shared set-up for the lectures: quick mode, where figures go, and the exercise checker.

MINFLOW_QUICK=1 (what the test suite sets) shrinks every training budget so that a lecture
runs in seconds; the full mode is what a student runs. Figures are shown inline in a
notebook and, when run as a script, saved under MINFLOW_LECTURE_OUT (default
build/lectures/figures).
"""

import os
import pathlib

QUICK = os.environ.get("MINFLOW_QUICK") == "1"
OUT = pathlib.Path(os.environ.get("MINFLOW_LECTURE_OUT", pathlib.Path("build") / "lectures" / "figures"))


def budget(full, quick):
    """``full`` in a normal run, ``quick`` under MINFLOW_QUICK=1."""
    return quick if QUICK else full


def figure_path(name):
    """Where to save a lecture figure (the folder is created)."""
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT / name


def show(figure, name):
    """Save ``figure`` to ``figure_path(name)`` and return it (a notebook then displays it)."""
    figure.savefig(figure_path(name), dpi=110, bbox_inches="tight")
    return figure


def check(exercise, condition, hint):
    """Tell the student whether an exercise is right; raises AssertionError with a hint if not."""
    if not condition:
        raise AssertionError(f"{exercise}: not yet - {hint}")
    print(f"{exercise}: correct")


def passes_check_flow(flow):
    """True if ``flow`` is a minflow Flow that passes minflow.testing.check_flow; prints why not."""
    from minflow import Flow
    from minflow.testing import check_flow

    if not isinstance(flow, Flow):
        return False
    try:
        check_flow(flow)
    except AssertionError as error:
        print(error)
        return False
    return True
