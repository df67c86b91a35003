"""The student and instructor editions of a lecture, in nbgrader's conventions, without nbgrader.

An exercise is two cells, marked with nbgrader's cell metadata (schema version 3), which
jupytext carries on the cell's ``# %%`` line of the lecture script:

- its **answer cell** (nbgrader's "autograded answer"), with the solution between the lines
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``, always inside a function body::

    # %% nbgrader={"grade": false, "grade_id": "ex0_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
    def swish_vjp(g, x):
        ### BEGIN SOLUTION
        s = 1 / (1 + np.exp(-x))
        return g * (s + x * s * (1 - s))
        ### END SOLUTION

- its **check cell** (nbgrader's "autograded tests"), read-only and worth one point, which
  calls ``_common.check``::

    # %% nbgrader={"grade": true, "grade_id": "ex0_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}

The **instructor edition** is the lecture as written: it runs the solutions. The **student
edition** replaces each solution region by nbgrader's default stub, indented like the
``BEGIN SOLUTION`` line — ``# YOUR CODE HERE`` then ``raise NotImplementedError()`` — which
is what ``nbgrader generate_assignment`` does with its default settings (its ClearSolutions
step), and clears the outputs. Since every region is inside a function, the stub raises only
when the check calls the function; the check then prints "not yet" with its hint and the
notebook runs on. A teacher who uses nbgrader runs it on the instructor notebooks as they are.
"""

import copy
import re

BEGIN_SOLUTION = "BEGIN SOLUTION"  # nbgrader matches these anywhere in a line (ClearSolutions)
END_SOLUTION = "END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")  # nbgrader's default code_stub for Python
EXERCISE_ID = re.compile(r"^ex\d+_\d+$")  # a check cell's grade_id; its answer cell's is the same + "_answer"


def nbgrader_metadata(cell):
    """The cell's nbgrader metadata (a dict), or None if it has none."""
    return cell.get("metadata", {}).get("nbgrader")


def is_answer_cell(cell):
    meta = nbgrader_metadata(cell)
    return bool(meta and meta.get("solution"))


def is_check_cell(cell):
    meta = nbgrader_metadata(cell)
    return bool(meta and meta.get("grade") and not meta.get("solution"))


def clear_solutions(source):
    """``source`` with every solution region replaced by nbgrader's stub, indented like its BEGIN line.

    Returns ``(new_source, regions)``, the number of regions replaced. A nested or unclosed
    region raises ValueError, as it makes nbgrader raise.
    """
    lines, inside, regions = [], False, 0
    for line in source.split("\n"):
        if BEGIN_SOLUTION in line:
            if inside:
                raise ValueError(f"a solution region inside another:\n{source}")
            inside, regions = True, regions + 1
            indent = re.match(r"\s*", line).group(0)
            lines.extend(indent + stub_line for stub_line in STUB)
        elif END_SOLUTION in line:
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise ValueError(f"a solution region without its END SOLUTION line:\n{source}")
    return "\n".join(lines), regions


def without_markers(notebook):
    """A copy of ``notebook`` with the solutions kept and their BEGIN/END SOLUTION lines removed.

    For reading, not for nbgrader: the book shows each solution as plain code, without the
    marker comments that only the grading tool needs.
    """
    reader = copy.deepcopy(notebook)
    for cell in reader.cells:
        if cell.cell_type == "code":
            lines = cell.source.split("\n")
            cell.source = "\n".join(line for line in lines if BEGIN_SOLUTION not in line and END_SOLUTION not in line)
    return reader


def student_edition(notebook):
    """A copy of ``notebook`` with every solution replaced by its stub and no outputs.

    As nbgrader (with its default ``enforce_metadata``) does, a solution region outside an
    answer cell is an error; so, here, is an answer cell without one (nbgrader would replace
    the whole cell by the stub, and the notebook would lose the function the stub belongs to).
    """
    student = copy.deepcopy(notebook)
    for cell in student.cells:
        source, regions = clear_solutions(cell.source)
        if regions and not is_answer_cell(cell):
            raise ValueError(f"a solution region outside an answer cell:\n{cell.source}")
        if is_answer_cell(cell) and not regions:
            raise ValueError(f"an answer cell without a solution region:\n{cell.source}")
        cell.source = source
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return student


def exercises(notebook):
    """``[(grade_id, answer_index, check_index)]``: each exercise's two cells, in order.

    Raises ValueError unless the cells pair up: each answer cell ``exN_M_answer`` is followed,
    before the next answer cell, by its check cell ``exN_M``.
    """
    found, answer = [], None
    for index, cell in enumerate(notebook.cells):
        if is_answer_cell(cell):
            if answer is not None:
                raise ValueError(f"answer cell {nbgrader_metadata(notebook.cells[answer])['grade_id']} has no check")
            answer = index
        elif is_check_cell(cell):
            grade_id = nbgrader_metadata(cell)["grade_id"]
            if answer is None or nbgrader_metadata(notebook.cells[answer])["grade_id"] != grade_id + "_answer":
                raise ValueError(f"check cell {grade_id} does not follow its answer cell {grade_id}_answer")
            found.append((grade_id, answer, index))
            answer = None
    if answer is not None:
        raise ValueError(f"answer cell {nbgrader_metadata(notebook.cells[answer])['grade_id']} has no check")
    return found
