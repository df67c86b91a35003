"""cupy.linalg of the strict stand-in: NumPy's linalg with CuPy's restrictions.

Modelled from cupy/linalg/_solve.py, _decomposition.py, _norms.py (14.2.0):
- inputs must be device arrays (``LinAlgError: cupy.linalg only supports cupy.ndarray``);
- ``solve`` does not broadcast batch axes: ``a.shape[:-1] == b.shape[:-1]`` for b of ndim > 1;
- singular / non-positive-definite input does not raise (cuSOLVER's default is to ignore the
  error info): ``solve``, ``inv`` and ``cholesky`` return NaN instead of raising LinAlgError.
"""

import numpy as _numpy

from cupy import _NAMES, _populate
from cupy._core import _un, _wrap
from cupy._core import ndarray as _ndarray

LinAlgError = _numpy.linalg.LinAlgError


def _assert_cupy_array(*arrays):
    for a in arrays:
        if not isinstance(a, _ndarray):
            raise LinAlgError("cupy.linalg only supports cupy.ndarray")


def _assert_stacked_2d(*arrays):
    for a in arrays:
        if a.ndim < 2:
            raise LinAlgError(f"{a.ndim}-dimensional array given. Array must be at least two-dimensional")


def _assert_stacked_square(*arrays):
    for a in arrays:
        m, n = a.shape[-2:]
        if m != n:
            raise LinAlgError("Last 2 dimensions of the array must be square")


def _nan_on_error(compute, shape, dtype):
    try:
        return compute()
    except LinAlgError:  # cuSOLVER reports through dev_info, which CuPy ignores by default
        return _numpy.full(shape, _numpy.nan, dtype=_numpy.result_type(dtype, _numpy.float32))


def solve(a, b):
    _assert_cupy_array(a, b)
    _assert_stacked_2d(a)
    _assert_stacked_square(a)
    if b.ndim == 0:
        raise ValueError("b must have at least one dimension")
    if b.ndim == 1:
        if a.shape[-1] != b.size:
            raise ValueError("a must have (..., M, M) shape and b must have (M,) for one-dimensional b")
        shape = a.shape[:-1]
    elif a.shape[:-1] != b.shape[:-1]:
        raise ValueError("a must have (..., M, M) shape and b must have (..., M, K) for multidimensional b")
    else:
        shape = b.shape
    dtype = _numpy.result_type(a.dtype, b.dtype)
    return _wrap(_nan_on_error(lambda: _numpy.linalg.solve(a._a, b._a), shape, dtype))


def inv(a):
    _assert_cupy_array(a)
    _assert_stacked_2d(a)
    _assert_stacked_square(a)
    return _wrap(_nan_on_error(lambda: _numpy.linalg.inv(a._a), a.shape, a.dtype))


def cholesky(a, upper=False):
    _assert_cupy_array(a)
    _assert_stacked_2d(a)
    _assert_stacked_square(a)
    if upper:
        raise TypeError("cholesky() got an unexpected keyword argument 'upper'")
    return _wrap(_nan_on_error(lambda: _numpy.linalg.cholesky(a._a), a.shape, a.dtype))


def qr(a, mode="reduced"):
    _assert_cupy_array(a)
    if mode not in ("reduced", "complete", "r", "raw"):
        if mode in ("f", "full", "e", "economic"):
            raise ValueError(f"The deprecated mode '{mode}' is not supported")
        raise ValueError(f"Unrecognized mode '{mode}'")
    if a.ndim < 2:
        raise ValueError(f"not enough values to unpack (expected 2, got {a.ndim})")
    return _wrap(_numpy.linalg.qr(a._a, mode=mode))


def slogdet(a):
    _assert_stacked_2d(a)
    _assert_stacked_square(a)
    _assert_cupy_array(a)
    return _wrap(_numpy.linalg.slogdet(a._a))


def det(a):
    _assert_cupy_array(a)
    _assert_stacked_2d(a)
    _assert_stacked_square(a)
    return _wrap(_numpy.linalg.det(a._a))


def lstsq(a, b, rcond=None):
    _assert_cupy_array(a, b)
    if a.ndim != 2:
        raise LinAlgError(f"{a.ndim}-dimensional array given. Array must be two-dimensional")
    if b.ndim > 2:
        raise LinAlgError(f"{b.ndim}-dimensional array given. Array must be at most two-dimensional")
    if a.shape[0] != b.shape[0]:
        raise LinAlgError("Incompatible dimensions")
    return _wrap(_numpy.linalg.lstsq(a._a, b._a, rcond=rcond))


def _checked(name, square=True, cupy_only=True):
    npfunc = getattr(_numpy.linalg, name)

    def func(a, *args, **kwargs):
        if cupy_only:
            _assert_cupy_array(a)
        if square:
            _assert_stacked_2d(a)
            _assert_stacked_square(a)
        return _wrap(npfunc(_un(a), *_un(args), **{k: _un(v) for k, v in kwargs.items()}))

    func.__name__ = func.__qualname__ = name
    func.__module__ = "cupy.linalg"
    return func


eigh = _checked("eigh", cupy_only=False)
eigvalsh = _checked("eigvalsh", cupy_only=False)
eig = _checked("eig", cupy_only=False)
eigvals = _checked("eigvals", cupy_only=False)
matrix_power = _checked("matrix_power")
svd = _checked("svd", square=False)
pinv = _checked("pinv", square=False)

_populate(globals(), _NAMES["cupy.linalg"], _numpy.linalg, "cupy.linalg")
