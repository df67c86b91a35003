"""cupyx of the strict stand-in: ``scatter_add``/``scatter_max``/``scatter_min``,
``allow_synchronize`` (syncs inside ``allow_synchronize(False)`` raise ``DeviceSynchronized``),
``rsqrt`` and ``cupyx.scipy.linalg.solve_triangular``; other CuPy names raise
NotImplementedError when used."""

import cupy as _cupy
from cupy import _NAMES, _populate
from cupy._strict import DeviceSynchronized, allow_synchronize


def scatter_add(a, slices, value):
    a.scatter_add(slices, value)  # the same operation as CuPy's ndarray method


def scatter_max(a, slices, value):
    a.scatter_max(slices, value)


def scatter_min(a, slices, value):
    a.scatter_min(slices, value)


def rsqrt(x, out=None):
    return _cupy.reciprocal(_cupy.sqrt(x), out=out)


from cupyx import scipy  # noqa: E402

_populate(globals(), _NAMES["cupyx"], None, "cupyx", submodules=("scipy",))
