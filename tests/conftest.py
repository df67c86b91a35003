"""Shared test settings: hypothesis profiles, and which backend the suite runs on.

HYPOTHESIS_PROFILE=default (fast, for development), ci (thorough, what `make test-all` runs) or
mutation (what `make mutation` runs).
MINFLOW_BACKEND=cupy with PYTHONPATH=tests/support/strict_cupy (`make test-cupy`) runs the
whole suite on the strict CuPy stand-in; with real CuPy on a GPU machine, on the GPU.
"""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=15, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None)
# `make mutation` runs the tests once per planted bug: the default profile's examples, but the same ones
# every run (a score that does not drift between runs), and no example database (a failure saved for one
# mutant must not be replayed against the next one).
settings.register_profile("mutation", max_examples=15, deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

if os.environ.get("HYPOTHESIS_PROFILE") == "mutation":
    # mutmut forks one child per mutant, two at a time, from one process. tqdm guards its output with a lock
    # that includes a multiprocessing semaphore, shared by every forked child: a child that stops while
    # holding it (a failing test, a kill) leaves every later child's first progress bar waiting forever,
    # without using CPU time, so mutmut's CPU-time limit never ends it. Each child gets a lock of its own
    # (a thread lock is copied, not shared, by fork), and no monitor thread takes it in the parent.
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    tqdm.monitor_interval = 0


def pytest_report_header(config):
    from minflow import backend

    name = backend.backend_name()
    if name == "cupy":
        import cupy

        kind = "the strict CuPy stand-in" if getattr(cupy, "_strict_stand_in", False) else f"CuPy {cupy.__version__}"
        return f"minflow backend: cupy ({kind})"
    return f"minflow backend: {name}"
