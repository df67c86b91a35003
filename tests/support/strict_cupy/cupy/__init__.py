"""Strict CuPy stand-in: CuPy's contract, computed with NumPy on the CPU.

A test double for running a CuPy code path without a GPU. It is *stricter* than "NumPy under
another name": its ``ndarray`` is a separate type that refuses implicit conversion to NumPy,
refuses NumPy arrays mixed into device operations, returns 0-d arrays (never NumPy scalars),
exposes only the names CuPy exposes (pinned from a real install in ``NAMES_cupy_*.txt``), and
counts every device-to-host transfer with its call site (see ``cupy._strict``).

It models "CuPy installed, no usable GPU device" for device queries:
``cupy.cuda.runtime.getDeviceCount()`` and ``cupy.get_default_memory_pool()`` raise
``cupy.cuda.runtime.CUDARuntimeError``; ``cupy.cuda.is_available()`` is False.

Put it on ``sys.path`` only on purpose (``PYTHONPATH=tests/support/strict_cupy``).
"""

import __future__ as _future

import glob as _glob
import os as _os

import numpy as _numpy

_strict_stand_in = True


def _read_names():
    here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    (path,) = _glob.glob(_os.path.join(here, "NAMES_cupy_*.txt"))
    sections, current = {}, None
    with open(path) as file:
        header = file.readline().split()
        for line in file:
            line = line.rstrip("\n")
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            elif line:
                name, kind = line.split("\t")
                current[name] = kind
    return header[2], sections


__version__, _NAMES = _read_names()

from cupy import _strict  # noqa: E402
from cupy._core import (  # noqa: E402
    _check_dtype,
    _empty,
    _un,
    _un_host_ok,
    _Unimplemented,
    _wrap,
    ndarray,
    ufunc,
)
from cupy._core import (
    install_ndarray_names as _install_ndarray_names,
)
from cupy._core import (
    make_function as _make_function,
)

_install_ndarray_names(_NAMES["cupy.ndarray"])

# -- creation: host data allowed (the host-to-device copy) -------------------------------------


def asarray(a, dtype=None, order=None, *, blocking=False):
    if type(a) is ndarray:
        if dtype is None or _numpy.dtype(dtype) == a._a.dtype:
            if (
                order in (None, "K", "A")
                or (order == "C" and a._a.flags.c_contiguous)
                or (order == "F" and a._a.flags.f_contiguous)
            ):
                return a
        return _wrap(_numpy.asarray(a._a, dtype=dtype, order=order))
    return _wrap(_check_dtype(_numpy.array(_un_host_ok(a), dtype=dtype, order=order or "K", copy=True)))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if type(obj) is ndarray:
        return _wrap(_numpy.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    return _wrap(_check_dtype(_numpy.array(_un_host_ok(obj), dtype=dtype, copy=True, order=order, ndmin=ndmin)))


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    if type(a) is ndarray:
        return _wrap(_numpy.ascontiguousarray(a._a, dtype=dtype))
    return _wrap(_check_dtype(_numpy.array(_un_host_ok(a), dtype=dtype, order="C", copy=True)))


def asfortranarray(a, dtype=None):
    if type(a) is ndarray:
        return _wrap(_numpy.asfortranarray(a._a, dtype=dtype))
    return _wrap(_check_dtype(_numpy.array(_un_host_ok(a), dtype=dtype, order="F", copy=True)))


def empty(shape, dtype=float, order="C"):
    return _wrap(_empty(shape, dtype, order))


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    a = _numpy.empty_like(_un(prototype), dtype=dtype, order=order, shape=shape)
    if a.dtype.kind in "fc":
        a.fill(_numpy.nan)
    return _wrap(a)


# -- device -> host ------------------------------------------------------------------------


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if type(a) is ndarray:
        _strict.record("asnumpy")
        if out is not None:
            out[...] = a._a
            return out
        return _numpy.array(a._a, order=order, copy=True)
    if out is not None:
        out[...] = a
        return out
    return _numpy.asarray(a, order=order)


def get_array_module(*args):
    for arg in args:
        if isinstance(arg, ndarray):
            import cupy

            return cupy
    return _numpy


def where(condition, x=None, y=None):
    if x is None and y is None:
        _strict.record("nonzero")
        return _wrap(_numpy.where(_un(condition)))
    if x is None or y is None:
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    return _wrap(_numpy.where(_un(condition), _un(x), _un(y)))


def is_available():
    return False


def get_default_memory_pool():
    from cupy.cuda import runtime

    raise runtime.CUDARuntimeError(runtime._NO_DEVICE)


get_default_pinned_memory_pool = get_default_memory_pool

# -- the namespace: exactly CuPy 14.2.0's public names --------------------------------------

_HOST_OK = {"fromfunction", "fromiter", "frombuffer", "fromfile", "fromstring", "loadtxt", "genfromtxt", "load"}
_SYNCS = {
    "nonzero": "nonzero",
    "argwhere": "nonzero",
    "flatnonzero": "nonzero",
    "unique": "nonzero",
    "compress": "nonzero",
    "extract": "nonzero",
    "trim_zeros": "nonzero",
    "save": "get",
    "savez": "get",
    "savez_compressed": "get",
    "savetxt": "get",
    "array_repr": "repr",
    "array_str": "str",
    "array2string": "str",
}
_ALIASES = {  # CuPy names NumPy 2 dropped: computed by their NumPy 2 spelling
    "alltrue": "all",
    "sometrue": "any",
    "cumproduct": "cumprod",
    "product": "prod",
    "round_": "round",
    "in1d": "isin",
    "trapz": "trapezoid",
}
_CONSTANTS = {
    "Inf": _numpy.inf,
    "Infinity": _numpy.inf,
    "infty": _numpy.inf,
    "PINF": _numpy.inf,
    "NINF": -_numpy.inf,
    "NAN": _numpy.nan,
    "NaN": _numpy.nan,
    "NZERO": -0.0,
    "PZERO": 0.0,
    "annotations": _future.annotations,
    "float_": _numpy.float64,
    "complex_": _numpy.complex128,
    "cfloat": _numpy.complex128,
    "singlecomplex": _numpy.complex64,
    "disable_experimental_feature_warning": False,
}


def _populate(namespace, names, twin, qualname, submodules=()):
    for name, kind in names.items():
        if name in namespace or name in submodules:
            continue
        if kind == "same":
            namespace[name] = getattr(twin, name)
            continue
        if name in _CONSTANTS and (twin is _numpy or name == "annotations"):
            namespace[name] = _CONSTANTS[name]
            continue
        if kind == "class" and hasattr(_numpy.exceptions, name):
            namespace[name] = getattr(_numpy.exceptions, name)
            continue
        if kind in ("func", "ufunc"):
            source = _ALIASES.get(name, name) if twin is _numpy else name
            npobj = getattr(twin, source, None) if twin is not None else None
            if isinstance(npobj, _numpy.ufunc):
                namespace[name] = ufunc(npobj)
                continue
            if callable(npobj) and not isinstance(npobj, type):
                namespace[name] = _make_function(
                    f"{qualname}.{name}", npobj, host_ok=name in _HOST_OK, sync=_SYNCS.get(name)
                )
                continue
        if kind == "module" and name == "exceptions":
            namespace[name] = _numpy.exceptions
            continue
        namespace[name] = _Unimplemented(f"{qualname}.{name}")


_populate(globals(), _NAMES["cupy"], _numpy, "cupy", submodules=("linalg", "random", "cuda"))

from cupy import cuda, linalg, random  # noqa: E402
