"""Device-to-host transfer ("sync") counter of the strict CuPy stand-in.

Every transfer that a real GPU would make (``float``, ``int``, ``bool``, ``complex``,
``.item()``, ``.tolist()``, ``.get()``, ``cupy.asnumpy``, printing, pickling, and the
implicit syncs of boolean-mask indexing and ``nonzero``-like functions) is recorded as
``(kind, "file:line")`` where the site is the first frame outside the stand-in.

    from cupy import _strict
    with _strict.counting() as syncs:
        train_step()
    assert syncs.count <= 2, syncs      # repr lists the sites

``reset()`` clears the global record, ``syncs()`` returns it (a list of tuples).
``cupyx.allow_synchronize(False)`` makes any sync raise ``cupyx.DeviceSynchronized``.
"""

import contextlib as _contextlib
import os as _os
import sys as _sys

_HERE = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))  # .../strict_cupy
_PREFIXES = (_os.path.join(_HERE, "cupy") + _os.sep, _os.path.join(_HERE, "cupyx") + _os.sep)
_MAX_RECORDS = 1_000_000

_records = []
_counters = []
_allow = [True]  # cupyx.allow_synchronize state


class DeviceSynchronized(RuntimeError):
    """Raised by a sync inside ``cupyx.allow_synchronize(False)``."""

    def __init__(self, message=None):
        super().__init__(message or "Device synchronization was detected while disallowed.")


DeviceSynchronized.__module__ = "cupyx"


def _site():
    frame = _sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PREFIXES):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def record(kind):
    """Record one device-to-host transfer of ``kind`` (called by the stand-in)."""
    site = _site()
    if not _allow[-1]:
        raise DeviceSynchronized(f"Device synchronization ({kind}) was detected at {site} while disallowed.")
    entry = (kind, site)
    if len(_records) < _MAX_RECORDS:
        _records.append(entry)
    for counter in _counters:
        counter.records.append(entry)


def reset():
    """Forget every recorded sync."""
    del _records[:]


def syncs():
    """The recorded syncs since the last ``reset()``: a list of ``(kind, "file:line")``."""
    return list(_records)


class Count:
    """The syncs made inside one ``counting()`` block."""

    def __init__(self):
        self.records = []

    @property
    def count(self):
        return len(self.records)

    @property
    def sites(self):
        return [site for _, site in self.records]

    @property
    def kinds(self):
        return [kind for kind, _ in self.records]

    def __repr__(self):
        lines = [f"<{self.count} device->host sync(s)"]
        lines += [f"  {kind:>12} at {site}" for kind, site in self.records]
        return "\n".join(lines) + ">"


@_contextlib.contextmanager
def counting():
    """Count the syncs made inside the block; yields a ``Count`` (``.count``, ``.sites``)."""
    counter = Count()
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)


@_contextlib.contextmanager
def allow_synchronize(allow):
    _allow.append(bool(allow))
    try:
        yield
    finally:
        _allow.pop()
