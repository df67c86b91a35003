"""Build the course as executed notebooks, with their figures: ``make lectures``.

Each lectures/NN_name.py (a jupytext "percent" script) is converted to a notebook and written
twice (lectures/editions.py says how): the instructor edition, run top to bottom by a Jupyter
kernel (nbclient), to build/lectures/instructor/NN_name.ipynb, and the student edition (every
exercise's solution replaced by its stub, not run) to build/lectures/student/NN_name.ipynb.
Options: ``--quick`` sets MINFLOW_QUICK=1 (small budgets); names select lectures (``03 05``).
"""

import argparse
import os
import pathlib
import shutil
import time

import editions  # lectures/editions.py, beside this file (python puts its folder on sys.path)
import jupytext
import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description="Build the lectures as executed notebooks.")
    parser.add_argument("names", nargs="*", help="lecture numbers or names to build (default: all)")
    parser.add_argument("--quick", action="store_true", help="small budgets (MINFLOW_QUICK=1)")
    parser.add_argument("--out", default=str(HERE.parent / "build" / "lectures"), help="output folder")
    args = parser.parse_args()
    if args.quick:
        os.environ["MINFLOW_QUICK"] = "1"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MINFLOW_LECTURE_OUT", str(out / "figures"))
    lectures = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if args.names:
        lectures = [p for p in lectures if any(p.stem.startswith(n) or p.stem == n for n in args.names)]
    for edition in ("student", "instructor"):  # each notebook imports _common from its own folder
        (out / edition).mkdir(exist_ok=True)
        shutil.copy(HERE / "_common.py", out / edition / "_common.py")
    for path in lectures:
        start = time.perf_counter()
        notebook = jupytext.read(path)
        student = out / "student" / f"{path.stem}.ipynb"
        nbformat.write(editions.student_edition(notebook), student)
        nbclient.NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
        instructor = out / "instructor" / f"{path.stem}.ipynb"
        nbformat.write(notebook, instructor)
        print(f"{path.stem}: {time.perf_counter() - start:.1f} s -> {instructor}, {student}")


if __name__ == "__main__":
    main()
