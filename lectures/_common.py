"""Shared set-up for the lectures: quick mode, where figures go, and the exercise checker.

MINFLOW_QUICK=1 (what the test suite sets) shrinks every training budget so that a lecture
runs in seconds; the full mode is what a student runs. Every figure goes through ``show``:
it is saved under MINFLOW_LECTURE_OUT (default build/lectures/figures) and, in a notebook,
displayed where it is shown.
"""

import os
import pathlib
import sys

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
    """Save ``figure`` to ``figure_path(name)``, display that file in a notebook, and close the figure.

    One call does all three, so it may stand anywhere in a cell: mid-cell, in a loop, several
    times in one cell. In a Jupyter kernel the saved PNG is displayed at once with
    ``IPython.display``, so a notebook holds exactly one image per call, the image that was
    saved, whatever the matplotlib backend (a figure returned as a cell's value shows only if it
    is the cell's last value, and as text ``<Figure ...>`` unless the inline backend has been
    set up); run as a script, nothing is displayed. The figure is then closed: pyplot keeps every
    figure it made alive until it is closed, and its inline backend would draw it a second time
    at the end of the cell. Returns None, so a cell that ends with ``show(...)`` does not display
    anything twice.
    """
    path = figure_path(name)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")  # not imported: then it made no figure
    if pyplot is not None:
        pyplot.close(figure)
    if _in_notebook():
        from IPython.display import Image, display

        display(Image(filename=path))


def _in_notebook():
    """True in a Jupyter kernel (which can display images), False in a script or a terminal IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


# Two helpers for the lectures' block diagrams (the data flow of a coupling, of a RevNet block).
def box(ax, x, y, text, color):
    """Write ``text`` in a rounded box centred at (x, y); return it, for ``arrow`` to join boxes."""
    bbox = {"boxstyle": "round,pad=0.45", "facecolor": color, "edgecolor": "0.3"}
    return ax.text(x, y, text, ha="center", va="center", fontsize=10, bbox=bbox)


def arrow(ax, start, end, label=""):
    """Draw an arrow from box ``start`` to box ``end`` (cut at the boxes' edges), labelled mid-way."""
    (x0, y0), (x1, y1) = start.get_position(), end.get_position()
    style = {"arrowstyle": "-|>", "color": "0.25", "lw": 1.2, "shrinkA": 2, "shrinkB": 2}
    style.update(patchA=start.get_bbox_patch(), patchB=end.get_bbox_patch())
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=style)
    if label:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", va="bottom", fontsize=9, color="C3")


def check(exercise, condition, hint):
    """Tell the student whether an exercise is right: print "correct", or "not yet" with ``hint``.

    ``condition`` is a bool, or a function of no arguments that returns one; a function is
    called here, so the student's code runs inside the check. An exercise's answer cell holds
    nbgrader's stub until the student replaces it, ``raise NotImplementedError()``: then the
    check prints "not yet" with the hint and returns, so that Run All goes on to the rest of
    the lecture. A wrong answer raises AssertionError with the hint. Under nbgrader's
    autograder or validator (it sets NBGRADER_EXECUTION), an untouched stub raises too, so
    that it earns no points. Returns None: a check cell that ends with ``check(...)`` then has
    no value to display, which nbgrader would try to read as a partial grade.
    """
    try:
        passed = condition() if callable(condition) else condition
    except NotImplementedError as error:
        if not _raised_by_the_notebook(error):
            raise  # a library's NotImplementedError is an error of the answer, not an untouched stub
        message = f"{exercise}: not yet - replace the stub's `raise NotImplementedError()` with your code. Hint: {hint}"
        if os.environ.get("NBGRADER_EXECUTION"):
            raise AssertionError(message) from None
        print(message)
        return
    if not passed:
        raise AssertionError(f"{exercise}: not yet - {hint}")
    print(f"{exercise}: correct")


def _raised_by_the_notebook(error):
    """True if ``error`` was raised by the notebook's (or script's) own code, where the stubs are."""
    traceback = error.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_globals.get("__name__") == "__main__"


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
