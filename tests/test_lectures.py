"""Every lecture runs, as a plain script, in quick mode (the course never rots)."""

import os
import pathlib
import subprocess
import sys

import pytest

LECTURES = sorted((pathlib.Path(__file__).resolve().parents[1] / "lectures").glob("[0-9][0-9]_*.py"))


def test_there_are_lectures():
    assert LECTURES, "lectures/ holds no NN_name.py lecture"


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_runs_in_quick_mode(lecture, tmp_path):
    env = dict(os.environ, MINFLOW_QUICK="1", MPLBACKEND="Agg", MINFLOW_LECTURE_OUT=str(tmp_path))
    # The lecture runs in lectures/: a relative PYTHONPATH (the strict CuPy stand-in's,
    # PYTHONPATH=tests/support/strict_cupy) must name the same folders there.
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p for p in env["PYTHONPATH"].split(os.pathsep))
    done = subprocess.run(
        [sys.executable, str(lecture)], cwd=lecture.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{lecture.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert ": correct" in done.stdout, f"{lecture.name} checks no exercise"
    assert list(tmp_path.glob("*.png")), f"{lecture.name} saved no figure"
