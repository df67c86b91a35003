"""Importing minflow changes nothing outside minflow.

A library that retunes the process on import (the C allocator, NumPy's error handling,
warnings filters, signal handlers...) changes programs that only wanted one of its
functions. minflow's one process-wide setting, ``backend.keep_freed_memory``, is an explicit
call that training makes (tests/test_backend.py checks who makes it).

The probe runs in a fresh interpreter: it records what a Python program can observe of
the process (the list in ``_WORLD``), runs a snippet, records again and prints the names of
the aspects that changed. glibc's ``mallopt`` has no getter, so the probe wraps it before
anything else is imported: every ``mallopt`` looked up on any ``ctypes.CDLL`` is counted.
The planted snippets show that each aspect the probe claims to watch does make it fail.
"""

import json
import os
import subprocess
import sys

import pytest

_PROBE = r"""
import ctypes, json, sys

mallopt_calls = []
_real_getattr = ctypes.CDLL.__getattr__


def _counting_getattr(self, name):  # every CDLL's function lookup passes here once
    function = _real_getattr(self, name)
    if name != "mallopt":
        return function

    def mallopt(*args):
        mallopt_calls.append(list(args))
        return function(*args)

    setattr(self, name, mallopt)
    return mallopt


ctypes.CDLL.__getattr__ = _counting_getattr

import faulthandler, gc, hashlib, logging, os, pickle, signal, threading, warnings
import numpy, matplotlib


def world():
    return {
        "mallopt calls": list(mallopt_calls),
        "numpy seterr": numpy.geterr(),
        "numpy printoptions": repr(numpy.get_printoptions()),
        "numpy global random state": hashlib.sha256(pickle.dumps(numpy.random.get_state())).hexdigest(),
        "warnings filters": repr(warnings.filters),
        "signal handlers": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals()},
        "recursion limit": sys.getrecursionlimit(),
        "switch interval": sys.getswitchinterval(),
        "os.environ": dict(os.environ),
        "working directory": os.getcwd(),
        "sys.path": list(sys.path),
        "garbage collector": [gc.isenabled(), list(gc.get_threshold())],
        "exception hooks": [repr(sys.excepthook), repr(threading.excepthook)],
        "faulthandler": faulthandler.is_enabled(),
        "logging root": [logging.root.level, repr(logging.root.handlers)],
        # the raw values: reading rcParams["backend"] through its getter would resolve it
        "matplotlib rcParams (the backend included)": {k: repr(v) for k, v in dict.items(matplotlib.rcParams)},
    }


before = world()
exec(sys.argv[1])
after = world()
print(json.dumps([name for name in before if before[name] != after[name]]))
"""

_IMPORT_EVERY_MODULE = """
import pkgutil, importlib, minflow
for module in pkgutil.walk_packages(minflow.__path__, "minflow."):
    if module.name != "minflow.__main__":  # that one runs the command line
        importlib.import_module(module.name)
import minflow.flows, minflow.train, minflow.testing, minflow.plot
"""


def changed_by(snippet):
    """The names of the aspects of the process that running ``snippet`` changed."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, snippet], env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _is_glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False


def test_importing_minflow_changes_nothing_outside_minflow():
    assert changed_by(_IMPORT_EVERY_MODULE) == []


PLANTED = {
    "mallopt calls": "import minflow; minflow.backend.keep_freed_memory()",
    "numpy seterr": "import numpy; numpy.seterr(all='raise')",
    "numpy printoptions": "import numpy; numpy.set_printoptions(precision=3)",
    "numpy global random state": "import numpy; numpy.random.seed(0)",
    "warnings filters": "import warnings; warnings.simplefilter('ignore')",
    "signal handlers": "import signal; signal.signal(signal.SIGUSR1, lambda *args: None)",
    "recursion limit": "import sys; sys.setrecursionlimit(sys.getrecursionlimit() + 7)",
    "os.environ": "import os; os.environ['MINFLOW_PLANTED'] = '1'",
    "matplotlib rcParams (the backend included)": "import matplotlib; matplotlib.use('svg')",
}


@pytest.mark.parametrize("aspect", sorted(PLANTED))
def test_the_probe_catches_a_planted_change(aspect):
    # The same probe on a snippet that changes one aspect names exactly that aspect: the
    # test above can fail, for each thing it claims to watch.
    if aspect == "mallopt calls" and not _is_glibc():
        pytest.skip("mallopt is glibc's")
    env_keep = os.environ.get("MINFLOW_KEEP_FREED_MEMORY")
    if aspect == "mallopt calls" and env_keep is not None and env_keep.strip() == "0":
        pytest.skip("MINFLOW_KEEP_FREED_MEMORY=0 is set: keep_freed_memory does nothing")
    assert changed_by(PLANTED[aspect]) == [aspect]
