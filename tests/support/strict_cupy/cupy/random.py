"""cupy.random of the strict stand-in.

``default_rng(seed)`` gives a ``Generator`` with exactly CuPy 14.2.0's methods (no ``normal``,
``permutation``, ``choice``, ``shuffle``...), drawing from a NumPy Generator, honouring
``dtype=`` where CuPy's signature has it, and always returning device arrays (0-d for
``size=None``). The legacy module functions wrap NumPy's global RandomState.
"""

import numpy as _numpy

from cupy import _NAMES, _populate
from cupy._core import _un, _wrap
from cupy._core import ndarray as _ndarray

_F64 = _numpy.float64


def _float_dtype(dtype):
    dtype = _numpy.dtype(dtype)
    if dtype.char not in "fd":
        raise TypeError(f"cupy.random only supports float32 and float64 (actual: {dtype})")
    return dtype


def _draw(result, dtype=None):
    """A draw as a device array: NumPy gives a Python float for ``size=None``, CuPy a 0-d array."""
    if type(result) is not _numpy.ndarray:
        result = _numpy.asarray(result, dtype=dtype)
    return _wrap(result)


def _out(result, out, dtype):
    if out is None:
        return _draw(result, dtype)
    if type(out) is not _ndarray:
        raise TypeError("out must be a cupy.ndarray")
    if out.dtype.char != _numpy.dtype(dtype).char:
        raise TypeError(
            f"Supplied output array has the wrong type. Expected {_numpy.dtype(dtype).name}, got {out.dtype.name}"
        )
    out._a[...] = result
    return out


class Generator:
    """CuPy's Generator API computed by a NumPy ``Generator``."""

    def __init__(self, bit_generator):
        if isinstance(bit_generator, _numpy.random.Generator):
            self._g = bit_generator
        else:
            raise NotImplementedError("strict stand-in: build a Generator with cupy.random.default_rng(seed)")
        self.bit_generator = _Unimplemented("cupy.random.Generator.bit_generator")

    def random(self, size=None, dtype=_F64, out=None):
        dtype = _float_dtype(dtype)
        shape = out.shape if out is not None and size is None else size
        return _out(self._g.random(shape, dtype=dtype), out, dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_F64):
        dtype = _float_dtype(dtype)
        return _draw(_numpy.asarray(self._g.uniform(_un(low), _un(high), size)).astype(dtype, copy=False))

    def integers(self, low, high=None, size=None, dtype=_numpy.int64, endpoint=False):
        return _draw(self._g.integers(_un(low), _un(high), size, dtype=dtype, endpoint=endpoint))

    def beta(self, a, b, size=None, dtype=_F64):
        dtype = _float_dtype(dtype)
        return _draw(_numpy.asarray(self._g.beta(_un(a), _un(b), size)).astype(dtype, copy=False))

    def chisquare(self, df, size=None):
        return _draw(self._g.chisquare(_un(df), size))

    def dirichlet(self, alpha, size=None):
        return _draw(self._g.dirichlet(_un(alpha), size))

    def exponential(self, scale=1.0, size=None):
        return _draw(self._g.exponential(_un(scale), size))

    def f(self, dfnum, dfden, size=None):
        return _draw(self._g.f(_un(dfnum), _un(dfden), size))

    def geometric(self, p, size=None):
        return _draw(self._g.geometric(_un(p), size))

    def hypergeometric(self, ngood, nbad, nsample, size=None):
        return _draw(self._g.hypergeometric(_un(ngood), _un(nbad), _un(nsample), size))

    def logseries(self, p, size=None):
        return _draw(self._g.logseries(_un(p), size))

    def standard_exponential(self, size=None, dtype=_F64, method="inv", out=None):
        dtype = _float_dtype(dtype)
        shape = out.shape if out is not None and size is None else size
        return _out(self._g.standard_exponential(shape, dtype=dtype), out, dtype)

    def poisson(self, lam=1.0, size=None):
        return _draw(self._g.poisson(_un(lam), size))

    def power(self, a, size=None):
        return _draw(self._g.power(_un(a), size))

    def standard_normal(self, size=None, dtype=_F64, out=None):
        dtype = _float_dtype(dtype)
        shape = out.shape if out is not None and size is None else size
        return _out(self._g.standard_normal(shape, dtype=dtype), out, dtype)

    def gamma(self, shape, scale=1.0, size=None):
        return _draw(self._g.gamma(_un(shape), _un(scale), size))

    def standard_gamma(self, shape, size=None, dtype=_F64, out=None):
        dtype = _float_dtype(dtype)
        size = out.shape if out is not None and size is None else size
        return _out(self._g.standard_gamma(_un(shape), size, dtype=dtype), out, dtype)

    def binomial(self, n, p, size=None):
        return _draw(self._g.binomial(_un(n), _un(p), size))


Generator.__module__ = "cupy.random._generator_api"


def default_rng(seed=None):
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, (_ndarray, _numpy.ndarray)):
        seed = _un(seed)
    return Generator(_numpy.random.default_rng(seed))


from cupy._core import _Unimplemented  # noqa: E402

_LEGACY_DTYPE = {  # legacy functions whose CuPy signature takes dtype=
    "beta",
    "chisquare",
    "dirichlet",
    "exponential",
    "f",
    "gamma",
    "gumbel",
    "laplace",
    "logistic",
    "lognormal",
    "multivariate_normal",
    "noncentral_chisquare",
    "noncentral_f",
    "normal",
    "pareto",
    "power",
    "rand",
    "randn",
    "random",
    "random_sample",
    "ranf",
    "rayleigh",
    "sample",
    "standard_cauchy",
    "standard_exponential",
    "standard_gamma",
    "standard_normal",
    "standard_t",
    "triangular",
    "uniform",
    "vonmises",
    "wald",
    "weibull",
    "randint",
    "random_integers",
    "binomial",
    "geometric",
    "hypergeometric",
    "logseries",
    "negative_binomial",
    "poisson",
    "zipf",
}


def _legacy(name):
    npfunc = getattr(_numpy.random, name)

    def func(*args, dtype=None, **kwargs):
        r = npfunc(*_un(args), **{k: _un(v) for k, v in kwargs.items()})
        if dtype is not None:
            r = _numpy.asarray(r).astype(dtype, copy=False)
        return _draw(r)

    func.__name__ = func.__qualname__ = name
    func.__module__ = "cupy.random"
    return func


for _name in _NAMES["cupy.random"]:
    if _name in _LEGACY_DTYPE or _name in ("seed", "bytes", "choice", "permutation", "shuffle", "multinomial"):
        globals()[_name] = _legacy(_name)

_populate(globals(), _NAMES["cupy.random"], None, "cupy.random")
