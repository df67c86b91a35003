"""Build the course as a website: ``make book``, then open build/book/html/index.html.

The site has two halves: the lectures, as notebooks executed by lectures/build.py (the
instructor edition: outputs, figures, solutions), and an API reference generated from
minflow's docstrings. Sphinx with MyST-NB renders both; nothing is fetched from the network
(MathJax is served from the site itself; see docs/conf.py).

Steps: (1) execute the lectures with lectures/build.py into OUT/lectures, or take notebooks
already executed (``--notebooks build/lectures``, what ``make lectures`` wrote); (2) stage
docs/ and the notebooks in OUT/src; (3) run Sphinx into OUT/html.

Options: ``--quick`` executes the lectures with their small budgets (MINFLOW_QUICK=1); names
select lectures (``01 05``); ``--strict`` turns Sphinx warnings into errors (the test uses it).
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def executed_notebooks(folder, names):
    """The executed lecture notebooks in ``folder`` (its instructor/ edition when it has one)."""
    folder = pathlib.Path(folder)
    if (folder / "instructor").is_dir():
        folder = folder / "instructor"
    notebooks = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if names:
        notebooks = [p for p in notebooks if any(p.stem.startswith(n) or p.stem == n for n in names)]
    return notebooks


def execute_lectures(out, names, quick):
    """Run lectures/build.py (the same command as ``make lectures``) with its output in ``out``."""
    command = [sys.executable, str(ROOT / "lectures" / "build.py"), "--out", str(out), *names]
    if quick:
        command.insert(2, "--quick")
    if subprocess.run(command).returncode != 0:
        sys.exit("docs/build.py: lectures/build.py failed (its output is above)")


def stage(src, notebooks):
    """Copy docs/ (less this script) and the notebooks into the Sphinx source folder ``src``.

    The notebooks lose their nbgrader markers on the way (``editions.without_markers``): a
    reader of the book sees each exercise's solution as plain code.
    """
    sys.path.insert(0, str(ROOT / "lectures"))
    import editions  # lectures/editions.py, importable once lectures/ is on the path

    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(HERE, src, ignore=shutil.ignore_patterns("build.py", "__pycache__"))
    (src / "lectures").mkdir()
    for notebook in notebooks:
        nbformat.write(
            editions.without_markers(nbformat.read(notebook, as_version=4)), src / "lectures" / notebook.name
        )


def main():
    parser = argparse.ArgumentParser(description="Build the course and the API reference as a website.")
    parser.add_argument("names", nargs="*", help="lecture numbers or names to include (default: all)")
    parser.add_argument("--quick", action="store_true", help="execute the lectures with small budgets")
    parser.add_argument("--notebooks", help="take executed notebooks from this folder instead of running them")
    parser.add_argument("--out", default=str(ROOT / "build" / "book"), help="output folder (html/ is the site)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    args = parser.parse_args()
    out = pathlib.Path(args.out).resolve()
    start = time.perf_counter()

    if args.notebooks is None:
        execute_lectures(out / "lectures", args.names, args.quick)
        notebooks = executed_notebooks(out / "lectures", args.names)
    else:
        notebooks = executed_notebooks(args.notebooks, args.names)
    if not notebooks:
        sys.exit(f"docs/build.py: no executed lecture notebook found for {args.names or 'the course'}")
    executed = time.perf_counter()

    stage(out / "src", notebooks)
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)  # no page of a lecture left out this time stays behind
    strict = ["-W", "--keep-going"] if args.strict else []
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", *strict, "-d", str(out / "doctrees")]
    command += [str(out / "src"), str(html)]
    # Sphinx imports minflow to read its docstrings: the plain NumPy backend, whatever the caller's.
    env = {key: value for key, value in os.environ.items() if key != "MINFLOW_BACKEND"}
    if subprocess.run(command, env=env).returncode != 0:
        sys.exit("docs/build.py: Sphinx failed (its messages are above)")
    size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file())
    lectures = f"{len(notebooks)} lecture{'s' * (len(notebooks) != 1)}"
    print(
        f"book: {lectures}, executed in {executed - start:.0f} s, rendered in "
        f"{time.perf_counter() - executed:.0f} s; {size / 2**20:.1f} MiB -> {html / 'index.html'}"
    )


if __name__ == "__main__":
    main()
