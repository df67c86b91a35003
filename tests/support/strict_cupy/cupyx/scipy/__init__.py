"""cupyx.scipy of the strict stand-in: only ``linalg`` (see its docstring)."""

from cupyx.scipy import linalg  # noqa: F401
