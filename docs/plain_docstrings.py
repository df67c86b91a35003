"""A Sphinx extension: minflow's plain-text docstrings, rendered as their author laid them out.

minflow's docstrings are written for ``help()`` first: reStructuredText inline markup
(``code``, :class:`links`, ``::`` literal blocks), but formulas, tables and derivations are
plain text laid out with spaces. reStructuredText reads some of that differently:

- an indented block after an ordinary paragraph is a *block quote*: its lines are joined into
  one paragraph, so a derivation written on aligned lines becomes a single line of symbols;
- a bare ``|`` (``|det J|``) or ``*`` (``(n, *event_shape)``) starts a substitution or
  emphasis, and a table written at the left margin becomes a broken definition list.

So before autodoc renders a docstring, three things happen, in this order:

1. every indented block that follows an ordinary paragraph becomes a literal block (as if the
   paragraph had ended with ``::``): in minflow an indented block is a formula, a table or
   code, never a quotation, and a literal block keeps its lines and its spaces;
2. in running text, every ``|`` is escaped (minflow's bars are absolute values and
   determinants, never substitutions, which minflow does not use), and so is a ``*`` that
   opens emphasis nothing closes on its line (``*event_shape``, ``*_log_det``);
3. a docstring that docutils still cannot parse cleanly (a warning, such as an unmatched
   ``*``) is shown whole as a literal block: exactly what ``help()`` shows. The build lists
   the names of those docstrings at its end.

Nothing in minflow's sources changes; a docstring that parses cleanly renders as written.
"""

import io
import re

import docutils.core
import docutils.nodes

LIST_ITEM = re.compile(r"^([-*+]|\d+[.)]|#\.)\s")
# Roles and directives that only Sphinx knows: stripped or ignored when docutils checks a docstring.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|ref|doc|math):(?=`)")
PREFORMATTED = set()  # the docstrings of this build shown whole as literal blocks
SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type", "No role entry", "No directive entry")


def indentation(line):
    return len(line) - len(line.lstrip())


def literal_indented_blocks(lines):
    """Turn each indented block that follows an ordinary paragraph into a literal block."""
    out = []
    for line in lines:
        if line.strip() and indentation(line) > 0 and out and not out[-1].strip():
            previous = next((p for p in reversed(out) if p.strip()), None)
            opens_block = previous is not None and indentation(previous) == 0
            stripped = (previous or "").strip()
            if (
                opens_block
                and not stripped.endswith("::")
                and not stripped.startswith(("..", ":", ">>>"))
                and not LIST_ITEM.match(stripped)
            ):
                out.extend(["::", ""])
        out.append(line)
    return out


def escape_plain_text(lines):
    """Escape ``|`` and lone ``*`` in running text (outside literal blocks and ``inline literals``)."""
    out, literal_above = [], None  # the indentation of the paragraph that opened a literal block
    for line in lines:
        if line.strip() and literal_above is not None and indentation(line) <= literal_above:
            literal_above = None
        if line.strip() and literal_above is None:
            parts = re.split(r"(``.*?``|`[^`]*`)", line)  # even parts are text, odd ones literals or roles
            line = "".join(part if i % 2 else escape_text(part) for i, part in enumerate(parts))
            if line.rstrip().endswith("::"):
                literal_above = indentation(line)
        out.append(line)
    return out


# A "*" or "**" that could open emphasis or strong (after a space or an opening bracket, before
# a non-space), and one that could close it (after a non-space, before a space, punctuation or the end).
START = re.compile(r"(?<![\w*\\])(\*\*?)(?=[^\s*])")
END = {marker: re.compile(rf"(?<=[^\s*\\]){re.escape(marker)}(?=[\s.,;:!?)\]'\"-]|$)") for marker in ("*", "**")}


def escape_text(text):
    """``|`` escaped everywhere; ``*`` or ``**`` escaped where it opens emphasis that nothing
    closes on the line, as in ``(n, *event_shape)``: a ``*word*`` pair is left to mean emphasis."""
    text = text.replace("|", "\\|")
    for start in reversed(list(START.finditer(text))):
        if not END[start.group(1)].search(text, start.end()):
            text = text[: start.start()] + "\\" + text[start.start() :]
    return text


def docutils_warnings(lines):
    """The warnings docutils gives for these lines, Sphinx's own roles and directives aside."""
    text = SPHINX_ROLE.sub("", "\n".join(lines))
    settings = {"report_level": 2, "halt_level": 5, "warning_stream": io.StringIO(), "file_insertion_enabled": False}
    document = docutils.core.publish_doctree(text, settings_overrides=settings)
    # Messages from parsing sit in the tree; those from transforms (an undefined |substitution|) beside it.
    messages = [*document.findall(docutils.nodes.system_message), *document.transform_messages]
    return [m.astext() for m in messages if m["level"] >= 2 and not any(s in m.astext() for s in SPHINX_ONLY)]


def render_plain_text(app, what, name, obj, options, lines):
    """autodoc-process-docstring: the three steps of the module docstring, in place."""
    if not lines:
        return
    written = list(lines)
    lines[:] = escape_plain_text(literal_indented_blocks(written))
    if docutils_warnings(lines):
        PREFORMATTED.add(name)
        lines[:] = ["::", ""] + ["    " + line if line.strip() else "" for line in written] + [""]


def report(app, exception):
    if exception is None and PREFORMATTED:
        print(f"plain_docstrings: {len(PREFORMATTED)} docstrings shown preformatted (docutils could not parse them):")
        for name in sorted(PREFORMATTED):
            print(f"  {name}")


def setup(app):
    app.connect("autodoc-process-docstring", render_plain_text)
    app.connect("build-finished", report)
    # PREFORMATTED is one process's record: a parallel read (sphinx -j) would split it.
    return {"parallel_read_safe": False, "parallel_write_safe": True}
