"""cupyx.scipy.linalg of the strict stand-in: ``solve_triangular`` (with CuPy's batch support
and checks, from cupyx/scipy/linalg/_solve_triangular.py); other names raise NotImplementedError."""

import numpy as _numpy
from cupy import _NAMES, _populate
from cupy._core import _wrap
from cupy.linalg import _assert_cupy_array


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False, check_finite=False):
    _assert_cupy_array(a, b)
    if a.ndim == 2:
        if a.shape[0] != a.shape[1]:
            raise ValueError("expected square matrix")
        if len(a) != len(b):
            raise ValueError("incompatible dimensions")
    elif a.ndim > 2:
        if a.shape[-1] != a.shape[-2]:
            raise ValueError("expected a batch of square matrices")
        if a.shape[:-2] != b.shape[: a.ndim - 2]:
            raise ValueError("incompatible batch count")
        if b.ndim < a.ndim - 1 or a.shape[-2] != b.shape[a.ndim - 2]:
            raise ValueError("incompatible dimensions")
    else:
        raise ValueError("expected one square matrix or a batch of square matrices")
    if trans not in (0, 1, 2, "N", "T", "C"):
        raise ValueError(f"unknown trans: {trans}")
    dtype = _numpy.result_type(a.dtype, b.dtype, _numpy.float32)
    m = a.shape[-1]
    t = _numpy.tril(a._a) if lower else _numpy.triu(a._a)
    if unit_diagonal:
        t = t.copy()
        t[..., range(m), range(m)] = 1
    if trans in (1, "T"):
        t = _numpy.swapaxes(t, -1, -2)
    elif trans in (2, "C"):
        t = _numpy.swapaxes(t, -1, -2).conj()
    bb = b._a
    vector = bb.ndim == a.ndim - 1
    if vector:
        bb = bb[..., None]
    with _numpy.errstate(all="ignore"):
        try:
            x = _numpy.linalg.solve(t.astype(dtype), bb.astype(dtype))
        except _numpy.linalg.LinAlgError:  # cuBLAS trsm does not check: a zero pivot gives inf/nan
            x = _numpy.full(bb.shape, _numpy.nan, dtype)
    return _wrap(x[..., 0] if vector else x)


_populate(globals(), _NAMES["cupyx.scipy.linalg"], None, "cupyx.scipy.linalg")
