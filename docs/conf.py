"""Sphinx configuration of the minflow book (``make book``; docs/build.py runs it).

docs/build.py copies this folder and the executed lecture notebooks into build/book/src and
runs Sphinx there, so paths below are relative to that staged copy.

- The lectures are notebooks executed beforehand (lectures/build.py): MyST-NB renders them as
  they are, with their outputs and figures, and never runs them again.
- The API reference is minflow's docstrings, one page per module (autosummary + autodoc). The
  docstrings are reStructuredText: ``code``, ``::`` literal blocks and :class: links. Their
  math is plain text (``log|det dz/dx| = sum_i log|g'(h2_i)|``), mostly in literal blocks, so
  it stays monospaced, as in ``help()``; LaTeX is rendered where it is written as LaTeX: the
  lectures' ``$...$`` and ``$$...$$``.
- The docstrings are written for ``help()``; plain_docstrings.py (beside this file) keeps their
  plain-text formulas and tables laid out as written.
- Math is typeset by MathJax 3 from a copy inside the site (_static/mathjax), taken from the
  sphinx-mathjax-offline wheel: the book works offline and never asks a CDN. The alternatives
  need more than pip: sphinx.ext.imgmath needs LaTeX and dvipng installed on the system, and
  sphinxcontrib-katex loads KaTeX from a CDN unless it prerenders with Node.js.
"""

import importlib.metadata
import pathlib
import shutil
import sys

import minflow

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # plain_docstrings.py, beside this file

project = "minflow"
author = "the minflow authors"
release = version = minflow.__version__
copyright = "the minflow authors, MIT licence"

extensions = [
    "myst_nb",  # the notebooks, and Markdown pages (it loads myst_parser itself)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",  # each API page links to its highlighted source: the source is the textbook
    "plain_docstrings",  # formulas and tables laid out with spaces stay laid out (see its docstring)
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# --- the lectures: executed notebooks, rendered as they are ----------------------------------
nb_execution_mode = "off"  # lectures/build.py executed them; the book only renders
myst_enable_extensions = ["dollarmath", "amsmath"]  # $x$, $$...$$ and \begin{align} in markdown cells
nb_merge_streams = True  # consecutive prints of a cell show as one block
suppress_warnings = ["mystnb.unknown_mime_type"]

# --- the API reference: autosummary writes one page per module, autodoc fills it --------------
autosummary_generate = True
autosummary_imported_members = False  # a class is documented once, in the module that defines it
autodoc_member_order = "bysource"  # the order of the file: the order the docstrings teach in
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_preserve_defaults = True  # a default shows as written (dtype=None, not a repr)
add_module_names = False
# A docstring's literal blocks are mostly formulas (log|det J| = sum_i log|g'(h_i)|), which a Python
# lexer would colour as broken code: they stay plain. Notebook cells keep their own (ipython3) lexer.
highlight_language = "none"

# --- math: MathJax 3, served from the site itself -------------------------------------------
MATHJAX_PARTS = ["tex-chtml.js", "input/tex", "output/chtml", "ui", "a11y"]  # what tex-chtml.js loads


def mathjax_source():
    """The MathJax 3.2.2 distribution shipped in the sphinx-mathjax-offline wheel."""
    dist = importlib.metadata.distribution("sphinx-mathjax-offline")
    return pathlib.Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))


mathjax_path = "mathjax/tex-chtml.js"  # relative: served from _static/, so the page works offline

# --- the pages -------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "minflow: normalizing flows from scratch"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,  # each lecture page offers its .ipynb
    "home_page_in_toc": True,
}
html_copy_source = True  # the download button offers each lecture's executed .ipynb


def copy_mathjax(app, exception):
    """Copy the parts of MathJax that tex-chtml.js loads into the site's _static/mathjax."""
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = pathlib.Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        (target / part).parent.mkdir(parents=True, exist_ok=True)
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            shutil.copy2(source / part, target / part)


def setup(app):
    app.connect("build-finished", copy_mathjax)
