"""Build the course as executed notebooks, with their figures: ``make lectures``.

Each lectures/NN_name.py (a jupytext "percent" script) is converted to a notebook, run
top to bottom by a Jupyter kernel (nbclient), and written to build/lectures/NN_name.ipynb.
Options: ``--quick`` sets MINFLOW_QUICK=1 (small budgets); names select lectures (``03 05``).
"""

import argparse
import os
import pathlib
import time

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
    for path in lectures:
        start = time.perf_counter()
        notebook = jupytext.read(path)
        nbclient.NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
        nbformat.write(notebook, out / f"{path.stem}.ipynb")
        print(f"{path.stem}: {time.perf_counter() - start:.1f} s -> {out / (path.stem + '.ipynb')}")


if __name__ == "__main__":
    main()
