"""The course builds as a website (``make book``), offline, with its math, figures and API pages.

The test builds the quick book of one lecture, 05 (residual flows: math, figures and
exercises), and the whole API reference, with Sphinx's warnings as errors: 15 s on 2 cores
(35-50 s while the machine is busy). The whole quick book takes about 2 minutes (99 s
executing the eleven lectures as notebooks, 13 s rendering; 4-5 minutes on a busy machine):
most of it would execute again what tests/test_lectures.py has just executed, to prove what
one lecture proves here (a notebook becomes a page). To check the whole course the same way:
``make book BOOK_ARGS="--quick --strict"``. On the strict CuPy stand-in (``make test-cupy``)
the build is skipped: the book is rendered from NumPy runs.
"""

import html.parser
import importlib.util
import json
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import minflow

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LECTURE = "05_residual"


def load_plain_docstrings():
    pytest.importorskip("docutils", reason="make book's tools are the book extra: pip install -e '.[book]'")
    spec = importlib.util.spec_from_file_location("plain_docstrings", DOCS / "plain_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_has_an_api_page():
    listed = set(re.findall(r"^\s+(minflow[\w.]*)\s*$", (DOCS / "api.rst").read_text(), flags=re.M))
    modules = {"minflow"} | {m.name for m in pkgutil.walk_packages(minflow.__path__, "minflow.")}
    missing = sorted(modules - listed - {"minflow.__main__"})
    assert not missing, f"docs/api.rst lists no page for {missing}: add each where a reader should meet it"


# --- how plain-text docstrings are rendered (docs/plain_docstrings.py) -------------------------
def test_an_indented_formula_after_a_paragraph_becomes_a_literal_block():
    plain = load_plain_docstrings()
    lines = ["The density:", "", "    log p(z) = -1/2 |z|^2", "             - n/2 log(2 pi)", "", "Then text."]
    got = plain.literal_indented_blocks(lines)
    assert got == ["The density:", "", "::", "", *lines[2:]], got


def test_directives_lists_and_existing_literal_blocks_are_left_alone():
    plain = load_plain_docstrings()
    for lines in (
        ["Example::", "", "    check_flow(flow)"],
        [".. math::", "", "    x = 1"],
        ["- a list item", "", "  its second paragraph"],
    ):
        assert plain.literal_indented_blocks(lines) == lines, lines


def test_bars_and_unclosed_stars_are_escaped_but_emphasis_is_kept():
    plain = load_plain_docstrings()
    cases = {
        "log|det J| of (n, *event_shape)": "log\\|det J\\| of (n, \\*event_shape)",
        "the *transformer* g and **round trip**": "the *transformer* g and **round trip**",
        "x * y": "x * y",
    }
    for text, expected in cases.items():
        assert plain.escape_text(text) == expected, f"{text!r}: expected {expected!r}, got {plain.escape_text(text)!r}"
    lines = ["Literal::", "", "    |x| stays", "``|x|`` stays, |x| does not"]
    assert plain.escape_plain_text(lines)[2:] == ["    |x| stays", "``|x|`` stays, \\|x\\| does not"]


def test_a_docstring_docutils_cannot_parse_is_shown_whole_as_written():
    plain = load_plain_docstrings()
    lines = ["A table at the margin:", "base.py      the contract", "linear.py    linear flows", "   and more"]
    assert plain.docutils_warnings(lines), "this table should not parse as reStructuredText"
    rendered = list(lines)
    plain.render_plain_text(None, "module", "example", None, {}, rendered)
    assert rendered[:2] == ["::", ""] and rendered[2:6] == ["    " + line for line in lines], rendered


# --- the quick book ----------------------------------------------------------------------------
class Page(html.parser.HTMLParser):
    """The tags of one page that a reader's browser loads or shows."""

    def __init__(self, path):
        super().__init__()
        self.images, self.scripts, self.links, self.ids = [], [], [], set()
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.links.append(attrs["href"])


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    if os.environ.get("MINFLOW_BACKEND", "numpy") != "numpy":
        pytest.skip("the book is built on NumPy; the lectures' CuPy path is tests/test_lectures.py's")
    pytest.importorskip("sphinx", reason="make book's tools are the book extra: pip install -e '.[book]'")
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(DOCS / "build.py"), "--quick", "--strict", "--out", str(out), LECTURE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"docs/build.py failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out


def test_the_book_has_the_lecture_and_the_api_reference(book):
    index = (book / "html" / "index.html").read_text(encoding="utf-8")
    assert f"lectures/{LECTURE}.html" in index and "api.html" in index, "index.html links to neither"
    api = Page(book / "html" / "generated" / "minflow.flows.coupling.html")
    assert "minflow.flows.coupling.Coupling" in api.ids, "the Coupling class has no entry on its module's page"


def test_every_figure_of_the_lecture_is_on_its_page(book):
    notebook = json.loads((book / "src" / "lectures" / f"{LECTURE}.ipynb").read_text())
    figures = sum("image/png" in out.get("data", {}) for cell in notebook["cells"] for out in cell.get("outputs", []))
    page = Page(book / "html" / "lectures" / f"{LECTURE}.html")
    shown = [src for src in page.images if src.endswith(".png")]
    assert figures > 0, f"{LECTURE} drew no figure in its quick run"
    assert len(shown) >= figures, f"the notebook has {figures} figures, its page shows {len(shown)}"
    for src in shown:
        assert (book / "html" / "lectures" / src).resolve().is_file(), f"{src} is not in the site"


def test_solutions_are_shown_without_their_grading_markers(book):
    page = (book / "html" / "lectures" / f"{LECTURE}.html").read_text(encoding="utf-8")
    source = (ROOT / "lectures" / f"{LECTURE}.py").read_text()
    assert "### BEGIN SOLUTION" in source, f"{LECTURE} has no exercise to show"
    assert "is g a contraction?" in page, "exercise 5.1's solution is not on the page"
    assert "BEGIN SOLUTION" not in page and "END SOLUTION" not in page, "nbgrader's markers are on the page"


def test_math_is_rendered_by_a_mathjax_inside_the_site(book):
    html_dir = book / "html"
    lecture = (html_dir / "lectures" / f"{LECTURE}.html").read_text(encoding="utf-8")
    assert lecture.count('class="math') > 10, "the lecture's $...$ math did not become math nodes"
    page = Page(html_dir / "lectures" / f"{LECTURE}.html")
    mathjax = [src for src in page.scripts if "mathjax" in src.lower()]
    assert mathjax and all(src.startswith("../_static/mathjax/") for src in mathjax), mathjax
    for part in ("tex-chtml.js", "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff", "input/tex/extensions"):
        assert (html_dir / "_static" / "mathjax" / part).exists(), f"MathJax's {part} is not in the site"


def test_no_page_loads_anything_from_the_network(book):
    pages = sorted((book / "html").rglob("*.html"))
    assert len(pages) > 30, f"only {len(pages)} pages"
    for path in pages:
        page = Page(path)
        remote = [url for url in page.scripts + page.links if re.match(r"(https?:)?//", url)]
        assert not remote, f"{path.relative_to(book)} loads {remote}: the book must work offline"
