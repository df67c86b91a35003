"""Every exercise is an nbgrader answer cell and check cell; each check fails on the stub and passes on the solution.

The lectures carry nbgrader's conventions (lectures/editions.py describes them): an exercise's
answer cell holds its solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, and the
graded check cell after it calls ``_common.check``. These tests read the lectures as jupytext
reads them, so the cell metadata they check is the metadata a notebook (and nbgrader) sees.

One quick-mode run per lecture proves every check both ways: the student edition runs from top
to bottom, and at each exercise the solution is run and checked too, then the stub put back
(``rehearsal``). Checked by hand once with nbgrader 0.9 itself (not a dependency): ``nbgrader
generate_assignment`` on the lectures gives cell sources identical to ``student_edition``, and
``nbgrader autograde`` scores untouched stubs 0 and the solutions full marks (lectures 00 and 05).
"""

import os
import pathlib
import re
import subprocess
import sys

import jsonschema
import jupytext
import nbformat
import pytest

LECTURE_DIR = pathlib.Path(__file__).resolve().parents[1] / "lectures"
LECTURES = sorted(LECTURE_DIR.glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(LECTURE_DIR))
import editions  # noqa: E402 - lectures/editions.py, importable once lectures/ is on the path

# nbgrader's cell metadata schema, version 3 (nbgrader/nbgraderformat/v3.json), without the two
# keys only nbgrader itself writes into a student's copy (checksum, cell_type).
NBGRADER_V3 = {
    "type": "object",
    "properties": {
        "schema_version": {"type": "integer", "minimum": 3, "maximum": 3},
        "grade": {"type": "boolean"},
        "locked": {"type": "boolean"},
        "solution": {"type": "boolean"},
        "task": {"type": "boolean"},
        "grade_id": {"type": "string", "pattern": "^[a-zA-Z0-9_\\-]*$"},
        "points": {"type": "number", "minimum": 0},
    },
    "required": ["schema_version", "grade", "locked", "solution"],
    "additionalProperties": False,
}
ANSWER = {"grade": False, "locked": False, "schema_version": 3, "solution": True, "task": False}
CHECK = {"grade": True, "locked": True, "points": 1, "schema_version": 3, "solution": False, "task": False}
HEADING = re.compile(r"^#+ Exercise (\d+)\.(\d+)\b", re.MULTILINE)
CHECK_CALL = re.compile(r'check\(\s*"(Exercise \d+\.\d+)"')


def read(lecture):
    return jupytext.read(lecture)


def solution_lines(notebook):
    """The distinctive lines of every solution region: not blank, not a bare keyword, not found outside a region."""
    inside, outside = set(), set()
    for cell in notebook.cells:
        in_region = False
        for line in cell.source.split("\n"):
            if editions.BEGIN_SOLUTION in line:
                in_region = True
            elif editions.END_SOLUTION in line:
                in_region = False
            else:
                (inside if in_region else outside).add(line.strip())
    return {line for line in inside - outside if len(line) > 12}


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_every_exercise_is_an_answer_cell_and_a_check_cell(lecture):
    notebook = read(lecture)
    headings = {
        f"ex{n}_{m}" for cell in notebook.cells if cell.cell_type == "markdown" for n, m in HEADING.findall(cell.source)
    }
    found = editions.exercises(notebook)  # raises ValueError if the cells do not pair up
    assert {grade_id for grade_id, _, _ in found} == headings, (
        f"{lecture.name}: exercise headings {sorted(headings)}, answer and check cells {[g for g, _, _ in found]}"
    )
    for grade_id, answer, check in found:
        answer_meta = editions.nbgrader_metadata(notebook.cells[answer])
        check_meta = editions.nbgrader_metadata(notebook.cells[check])
        assert answer_meta == {**ANSWER, "grade_id": grade_id + "_answer"}, f"{lecture.name} {grade_id}: {answer_meta}"
        assert check_meta == {**CHECK, "grade_id": grade_id}, f"{lecture.name} {grade_id}: {check_meta}"
        number = grade_id[2:].replace("_", ".")
        assert CHECK_CALL.findall(notebook.cells[check].source) == [f"Exercise {number}"], (
            f"{lecture.name}: check cell {grade_id} does not call check('Exercise {number}', ...) once"
        )
        for line in notebook.cells[answer].source.split("\n"):
            if editions.BEGIN_SOLUTION in line:
                # inside a function, the stub raises only when the check calls it: Run All goes on
                assert line.startswith(" "), f"{lecture.name} {grade_id}: a solution region outside a function body"


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_nbgrader_metadata_is_valid_and_survives_the_notebook_format(lecture):
    notebook = read(lecture)
    again = nbformat.reads(nbformat.writes(notebook), as_version=4)  # what the .ipynb holds
    grade_ids = []
    for cell, cell_again in zip(notebook.cells, again.cells):
        meta = editions.nbgrader_metadata(cell)
        if meta is None:
            continue
        assert editions.nbgrader_metadata(cell_again) == meta
        jsonschema.validate(meta, NBGRADER_V3)
        # nbgrader's own rules beyond the schema (nbgrader/nbgraderformat/v3.py): every marked cell has
        # a grade_id, unique in the notebook; a graded cell has points; a markdown answer is also graded.
        assert meta.get("grade_id"), f"{lecture.name}: an nbgrader cell without a grade_id"
        assert "points" in meta or not meta["grade"], f"{lecture.name}: graded cell {meta['grade_id']} without points"
        assert cell.cell_type == "code", f"{lecture.name}: {meta['grade_id']} is a markdown cell"
        grade_ids.append(meta["grade_id"])
    assert len(grade_ids) == len(set(grade_ids)), f"{lecture.name}: duplicate grade ids in {grade_ids}"


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_the_student_edition_holds_no_solution(lecture):
    notebook = read(lecture)
    student = editions.student_edition(notebook)
    text = "\n".join(cell.source for cell in student.cells)
    assert editions.BEGIN_SOLUTION not in text and editions.END_SOLUTION not in text
    left = sorted(line for line in solution_lines(notebook) if line in {s.strip() for s in text.split("\n")})
    assert not left, f"{lecture.name}: the student edition still holds solution lines {left}"
    for _, answer, _ in editions.exercises(notebook):
        assert "raise NotImplementedError()" in student.cells[answer].source
    assert all(not cell.get("outputs") for cell in student.cells if cell.cell_type == "code")


def rehearsal(notebook):
    """The student edition's code, with each exercise also run once with its solution.

    At each exercise: the stub and its check ("not yet"), then the solution and its check
    ("correct"), then the stub again, so that the rest of the lecture runs as in the student
    edition: a later cell that needs a solution fails here as it would fail a student.
    """
    student = editions.student_edition(notebook)
    checks = {check: answer for _, answer, check in editions.exercises(notebook)}
    parts = []
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        if index in checks:
            answer = checks[index]
            parts += [notebook.cells[answer].source, cell.source, student.cells[answer].source]
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_each_check_says_not_yet_on_its_stub_and_correct_on_its_solution(lecture, tmp_path):
    notebook = read(lecture)
    names = [f"Exercise {grade_id[2:].replace('_', '.')}" for grade_id, _, _ in editions.exercises(notebook)]
    script = tmp_path / lecture.name
    script.write_text(rehearsal(notebook))
    env = dict(os.environ, MINFLOW_QUICK="1", MPLBACKEND="Agg", MINFLOW_LECTURE_OUT=str(tmp_path))
    env.pop("NBGRADER_EXECUTION", None)
    # The script runs in lectures/ and imports _common from there; a relative PYTHONPATH (the strict
    # CuPy stand-in's, PYTHONPATH=tests/support/strict_cupy) must name the same folders there.
    paths = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(LECTURE_DIR), *paths])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=LECTURE_DIR, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{lecture.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    reported = [line.split(" - ")[0] for line in done.stdout.splitlines() if re.match(r"Exercise \d+\.\d+: ", line)]
    expected = [verdict for name in names for verdict in (f"{name}: not yet", f"{name}: correct")]
    assert reported == expected, f"{lecture.name}: the checks reported {reported}, expected {expected}"


def test_clear_solutions_replaces_each_region_by_nbgrader_stub_at_its_indent():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION\n\n\nz = 1"
    cleared, regions = editions.clear_solutions(source)
    assert regions == 1
    assert cleared == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\nz = 1"
    for broken in ("### BEGIN SOLUTION\nx = 1", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(ValueError):
            editions.clear_solutions(broken)


def test_check_says_not_yet_on_a_stub_raises_on_a_wrong_answer_and_says_correct_on_a_right_one(capsys, monkeypatch):
    from _common import check

    notebook = {"__name__": "__main__"}  # a notebook's (and a script's) code runs in __main__
    exec("def stub():\n    # YOUR CODE HERE\n    raise NotImplementedError()", notebook)
    stub = notebook["stub"]

    def library():  # not the notebook's: a NotImplementedError from a library is the answer's error
        raise NotImplementedError("strict stand-in: cupy.ndarray.data is not implemented")

    with pytest.raises(NotImplementedError, match="strict stand-in"):
        check("Exercise 9.9", library, "a hint")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert check("Exercise 9.9", stub, "a hint") is None  # no value: nbgrader would read one as a partial grade
    assert capsys.readouterr().out.startswith("Exercise 9.9: not yet - ")
    with pytest.raises(AssertionError, match="Exercise 9.9: not yet - a hint"):
        check("Exercise 9.9", lambda: False, "a hint")
    check("Exercise 9.9", lambda: True, "a hint")
    check("Exercise 9.9", True, "a hint")
    assert capsys.readouterr().out == "Exercise 9.9: correct\nExercise 9.9: correct\n"
    # under nbgrader's autograder an untouched stub must fail its check cell, or it would earn the points
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="Exercise 9.9: not yet"):
        check("Exercise 9.9", stub, "a hint")
