"""The array namespace: NumPy by default, CuPy on request.

Every compute module in minflow gets its arrays from here and never imports numpy or
cupy itself. Two rules make the same code run on a CPU and on a GPU:

1. **Creation uses the default backend.** Parameters, random numbers and data moved to
   the device are made with ``xp()``, the namespace chosen by :func:`set_backend` or by
   the environment variable ``MINFLOW_BACKEND`` (``numpy`` or ``cupy``).
2. **Ops follow their data.** An op asks its input arrays which namespace owns them
   (:func:`array_module`) and computes there; NumPy and CuPy arrays never mix silently,
   they raise a ``ValueError``.

CuPy is imported lazily, the first time it is asked for, so minflow imports and runs
on a machine without it.

The default floating dtype is float64 (exact checks, teaching); float32 is one call
away (:func:`set_default_dtype`).

Importing minflow changes nothing outside minflow. The one process-wide setting it has,
:func:`keep_freed_memory` (glibc's malloc keeps freed memory for the next train step: a
third faster at large batches), is an explicit call that training makes, not an import
side effect.
"""

import contextlib
import os

import numpy

_BACKENDS = ("numpy", "cupy")
_state = {"name": "numpy", "xp": numpy, "dtype": numpy.dtype(numpy.float64)}
_cupy = None  # the cupy module once imported, else None


def _import_cupy():
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as error:
            raise ImportError(
                f"the cupy backend needs CuPy: pip install 'minflow[gpu]' (import failed: {error})"
            ) from error
        _cupy = cupy
    return _cupy


def set_backend(name):
    """Make ``name`` ("numpy" or "cupy") the namespace that creates new arrays."""
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    _state["xp"] = numpy if name == "numpy" else _import_cupy()
    _state["name"] = name


def backend_name():
    """The name of the default backend: "numpy" or "cupy"."""
    return _state["name"]


def xp():
    """The default namespace (the numpy or the cupy module)."""
    return _state["xp"]


def set_default_dtype(dtype):
    """Set the floating dtype of new parameters and data: float64 (default) or float32."""
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _state["dtype"] = dtype


def get_default_dtype():
    """The floating dtype of new parameters and data."""
    return _state["dtype"]


def is_cupy_array(array):
    if _cupy is None:  # a CuPy array can exist before the backend is switched: look at its type
        if not type(array).__module__.startswith("cupy"):
            return False
        _import_cupy()
    return isinstance(array, _cupy.ndarray)


def is_array(array):
    return isinstance(array, numpy.ndarray) or is_cupy_array(array)


def array_module(*arrays):
    """The namespace that owns ``arrays``; raises ``ValueError`` if NumPy and CuPy mix.

    Non-array arguments (Python numbers) are ignored.
    """
    if len(arrays) == 1 and type(arrays[0]) is numpy.ndarray:  # the common case, called for every op
        return numpy
    found = None
    for array in arrays:
        if isinstance(array, numpy.ndarray):
            module = numpy
        elif is_cupy_array(array):
            module = _cupy
        else:
            continue
        if found is None:
            found = module
        elif module is not found:
            raise ValueError(
                "cannot mix NumPy and CuPy arrays in one operation; move the data with "
                "minflow.backend.to_device(...) or minflow.backend.to_numpy(...)"
            )
    return found if found is not None else numpy


def asarray(data, dtype=None, xp=None):
    """``data`` as an array of namespace ``xp`` (default: the default backend).

    Floating arrays keep their dtype unless ``dtype`` is given; Python numbers, lists and
    integer arrays become the default dtype. An array of the *other* backend raises.
    """
    module = xp or _state["xp"]
    if is_array(data):
        if array_module(data) is not module:
            raise ValueError(
                f"got a {type(data).__module__.split('.')[0]} array where a {module.__name__} array is needed; "
                "convert it with minflow.backend.to_device(...) or minflow.backend.to_numpy(...)"
            )
        if dtype is None and data.dtype.kind != "f":
            dtype = get_default_dtype()
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    return module.asarray(data, dtype=dtype or get_default_dtype())


def to_device(array, dtype=None, xp=None):
    """A copy of a host (NumPy) or device array on namespace ``xp`` (default: the default backend).

    To put data where a model lives, pass the model's namespace: ``xp=model.array_module()``.
    """
    module = xp or _state["xp"]
    if module is not numpy and isinstance(array, numpy.ndarray):
        array = module.asarray(array)  # host -> device
    elif module is numpy and is_cupy_array(array):
        array = array.get()  # device -> host
    return asarray(array, dtype, xp=module)


def to_numpy(array):
    """A host NumPy copy of an array, a Tensor or a number (synchronises a GPU)."""
    if not is_array(array) and hasattr(array, "requires_grad"):  # a Tensor: take its array
        array = array.data
    if is_cupy_array(array):
        return array.get()
    return numpy.asarray(array)


def rng(seed=None, xp=None):
    """A random ``Generator`` of namespace ``xp`` (default: the default backend).

    ``seed`` is an int (same seed, same numbers on a given backend), ``None`` (fresh
    entropy) or an existing Generator, which is passed through unchanged so that a caller
    can thread one stream through many calls. That Generator must belong to ``xp``: a
    NumPy Generator makes host arrays, so on CuPy it would silently put every sample it
    draws on the CPU; it raises ``ValueError`` instead.
    """
    module = xp or _state["xp"]
    if hasattr(seed, "standard_normal"):
        owner = type(seed).__module__.split(".")[0]
        if owner != module.__name__:
            raise ValueError(
                f"got a {owner} random Generator where a {module.__name__} one is needed; "
                f"pass an int seed or a Generator made by minflow.backend.rng(seed)"
            )
        return seed
    return module.random.default_rng(seed)


# --- checks of values, and the device synchronisations they cost ---------------------------------
# Asking whether *values* are right (all inside a spline's interval? all bin widths
# positive?) means computing a yes/no on the device and reading it on the host:
# ``bool(xp.all(ok))``. On NumPy that is a pass over the data. On a GPU it is a
# *synchronisation*: the host waits until every kernel queued so far has finished, then
# copies the answer back, and the GPU idles while Python decides what to launch next. One
# check per layer per call would make a train step a string of stalls. So a train step
# *defers* its checks: inside ``deferred_checks()`` each check is recorded (the boolean
# array and how to describe a failure), and the training loop reads all of them together
# with the loss, in the step's one synchronisation, then raises the first that failed.
# Outside a train step, checks run at once, as a user calling a flow expects.
_deferred = [None]  # a list while a train step collects checks, else None


@contextlib.contextmanager
def deferred_checks():
    """Inside this block, :func:`require` records its checks instead of running them.

    Yields the list of ``(ok, message)`` pairs recorded; the caller must check them
    (the training loop does, with :func:`read_scalars`, in the step's one transfer).
    """
    previous, _deferred[0] = _deferred[0], []
    try:
        yield _deferred[0]
    finally:
        _deferred[0] = previous


def require(ok, message):
    """Raise ``ValueError(message())`` unless the boolean array ``ok`` is true everywhere.

    ``message`` is a function, called only on failure (describing the bad values costs
    more synchronisations, worth paying only when there is an error to report). Inside
    :func:`deferred_checks` the check is recorded and costs nothing here.
    """
    if _deferred[0] is not None:
        _deferred[0].append((ok, message))
    elif not bool(array_module(ok).all(ok)):
        raise ValueError(message())


def read_scalars(scalars, checks=()):
    """Python floats of the one-element arrays ``scalars``, read in one transfer together
    with the results of the deferred ``checks``; raises the first failed check's ValueError.

    One ``float()`` per number would synchronise a GPU once per number; one small array
    copied with ``tolist()`` synchronises once for all of them.
    """
    xp, dtype = array_module(scalars[0]), scalars[0].dtype
    parts = [s.reshape(1).astype(dtype) for s in scalars] + [xp.all(ok).reshape(1).astype(dtype) for ok, _ in checks]
    values = xp.concatenate(parts).tolist()  # the one device -> host transfer
    for (_, message), passed in zip(checks, values[len(scalars) :]):
        if not passed:
            raise ValueError(message())
    return values[: len(scalars)]


def scatter_add(target, index, values):
    """``target[index] += values`` with repeated indices accumulated (not overwritten).

    NumPy spells it ``numpy.add.at``; CuPy needs ``cupyx.scatter_add``.
    """
    if is_cupy_array(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    else:
        numpy.add.at(target, index, values)


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=256 << 20):
    """Ask the C allocator (glibc's malloc) to keep freed blocks for reuse; returns True if it could.

    Why a training step needs this. By default glibc serves every allocation of 128 KiB or
    more with a fresh ``mmap`` and hands it back to the OS on ``free``. A train step makes
    dozens of such temporaries (one (512, 64) float32 activation is already 128 KiB), so
    every step maps them again, and the kernel zero-fills each new 4 KiB page on its first
    touch: a page fault per page. Measured on a 2-core machine, that costs a (4096, 256)
    RealNVP step a third of its time. glibc's heuristic raises the threshold after a few
    frees, but then gives the top of its heap back to the OS whenever more than twice the
    threshold is free, which a step's burst of frees keeps triggering.

    ``mallopt(M_MMAP_THRESHOLD)`` makes allocations below ``mmap_threshold`` (at most
    32 MiB, glibc's limit) come from the heap, and ``mallopt(M_TRIM_THRESHOLD)`` keeps up
    to ``trim_threshold`` bytes of free heap instead of returning it: the memory freed by
    one step is the memory the next step reuses, already mapped. Peak memory is
    unchanged; the process just does not shrink between steps. (PyTorch's GPU caching
    allocator does the same on the device.)

    Measured (benchmarks/RESULTS.md, section 4a): a float32 (4096, 256) RealNVP step takes
    150 ms with this setting and 209 ms without (-28%); the hand-written NumPy floor and
    PyTorch in the same process gain about as much.

    Nothing calls it at import: a library that retunes the C allocator of whoever imports it
    would change programs that never train. The places that run many train steps ask for it
    explicitly: ``train.fit`` and ``train.fit_to_density`` (at the start of each run), the
    command line (``python -m minflow``) and the benchmarks. It is process-wide and stays
    (minflow never undoes it), so an application that embeds minflow may prefer glibc's
    defaults: with the environment variable ``MINFLOW_KEEP_FREED_MEMORY=0`` this call does
    nothing (and returns False), wherever it comes from. On a C library without ``mallopt``
    (macOS, musl, Windows) it does nothing either.
    """
    if os.environ.get("MINFLOW_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to ask, or one without mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # the constants of glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


_env_backend = os.environ.get("MINFLOW_BACKEND")
if _env_backend:
    try:
        set_backend(_env_backend.strip().lower())
    except (ValueError, ImportError) as _error:  # name the variable: the user may not know it is set
        raise type(_error)(
            f"the environment variable MINFLOW_BACKEND={_env_backend!r}: {_error}; set it to numpy or cupy, or unset it"
        ) from None
