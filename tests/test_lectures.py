"""Every lecture runs as a notebook, in quick mode, and shows every figure it saves (the course never rots).

Each lecture is executed as ``make lectures`` executes it (jupytext turns the script into a
notebook, a Jupyter kernel runs it with nbclient), so the test sees what a student sees: the
printed checks and the images in the notebook, which a plain script run cannot.
"""

import os
import pathlib

import jupytext
import nbclient
import nbformat
import pytest

LECTURE_DIR = pathlib.Path(__file__).resolve().parents[1] / "lectures"
LECTURES = sorted(LECTURE_DIR.glob("[0-9][0-9]_*.py"))


@pytest.fixture
def quick_kernel_env(monkeypatch, tmp_path):
    """The environment the kernel inherits: quick mode, figures saved to ``tmp_path``, inline plots."""
    monkeypatch.setenv("MINFLOW_QUICK", "1")
    monkeypatch.setenv("MINFLOW_LECTURE_OUT", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel then uses matplotlib's inline backend
    # The kernel runs in lectures/: a relative PYTHONPATH (the strict CuPy stand-in's,
    # PYTHONPATH=tests/support/strict_cupy) must name the same folders there. MINFLOW_BACKEND passes as it is.
    if os.environ.get("PYTHONPATH"):
        paths = os.environ["PYTHONPATH"].split(os.pathsep)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(os.path.abspath(p) if p else p for p in paths))
    return tmp_path


def execute(notebook):
    """Run ``notebook`` in a fresh kernel in lectures/ and return it with its outputs."""
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(LECTURE_DIR)}}
    )
    return client.execute()


def outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def printed(notebook):
    """Everything the notebook printed, and the text of its results."""
    texts = [output.get("text", "") for output in outputs(notebook) if output.output_type == "stream"]
    texts += [output.data.get("text/plain", "") for output in outputs(notebook) if "data" in output]
    return "\n".join(texts)


def assert_every_saved_figure_is_shown(name, notebook, figure_dir):
    """As many images in the notebook as PNG files saved; no figure shown as text ``<Figure ...>``."""
    images = sum("image/png" in output.get("data", {}) for output in outputs(notebook))
    saved = sorted(path.name for path in figure_dir.glob("*.png"))
    assert images == len(saved), f"{name}: saved {len(saved)} figures {saved} but its notebook shows {images}"
    assert "<Figure size" not in printed(notebook), f"{name}: a figure is shown as text, not as an image"


def test_there_are_lectures():
    assert LECTURES, "lectures/ holds no NN_name.py lecture"


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_runs_as_a_notebook_and_shows_every_figure(lecture, quick_kernel_env):
    notebook = execute(jupytext.read(lecture))  # a failing cell raises, with its code and traceback
    assert ": correct" in printed(notebook), f"{lecture.name} checks no exercise"
    assert list(quick_kernel_env.glob("*.png")), f"{lecture.name} saved no figure"
    assert_every_saved_figure_is_shown(lecture.name, notebook, quick_kernel_env)


def test_a_figure_saved_but_not_shown_is_caught(quick_kernel_env):
    # One figure goes through _common.show (saved and displayed); the other is only saved.
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from _common import figure_path, show\n"
            "shown, _ = plt.subplots()\n"
            "show(shown, 'shown.png')\n"
            "hidden, _ = plt.subplots()\n"
            "hidden.savefig(figure_path('hidden.png'))\n"
            "plt.close(hidden)"
        )
    ]
    notebook = execute(notebook)
    with pytest.raises(AssertionError, match=r"saved 2 figures .* shows 1"):
        assert_every_saved_figure_is_shown("synthetic", notebook, quick_kernel_env)
