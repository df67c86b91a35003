"""cupyx of the strict stand-in: ``scatter_add``/``scatter_max``/``scatter_min``,
``allow_synchronize`` (syncs inside ``allow_synchronize(False)`` raise ``DeviceSynchronized``),
``rsqrt`` and ``cupyx.scipy.linalg.solve_triangular``; other CuPy names raise
NotImplementedError when used."""

import numpy as _numpy

import cupy as _cupy
from cupy import _NAMES, _populate
from cupy._core import _scatter, _wrap, ufunc as _ufunc
from cupy._strict import DeviceSynchronized, allow_synchronize


def scatter_add(a, slices, value):
    _scatter(_numpy.add, a, slices, value)


def scatter_max(a, slices, value):
    _scatter(_numpy.maximum, a, slices, value)


def scatter_min(a, slices, value):
    _scatter(_numpy.minimum, a, slices, value)


def rsqrt(x, out=None):
    return _cupy.reciprocal(_cupy.sqrt(x), out=out)


from cupyx import scipy  # noqa: E402

_populate(globals(), _NAMES["cupyx"], None, "cupyx", submodules=("scipy",))
