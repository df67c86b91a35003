"""The stand-in's array type and the wrappers that turn NumPy functions into strict CuPy ones."""

import functools as _functools
import warnings as _warnings

import numpy as _np

from cupy import _strict

_ND = _np.ndarray
_GEN = _np.generic
_PYSCALARS = frozenset((int, float, bool, complex))
_BAD_DTYPE_KINDS = frozenset("OUSVMm")
_FLOAT_KINDS = frozenset("fc")


def _host_error(obj):
    return TypeError(
        f"Unsupported type {type(obj)} (strict CuPy stand-in: a NumPy array cannot enter a "
        "CuPy operation; copy it to the device with cupy.asarray first)"
    )


def _wrap(r):
    """A NumPy result as the stand-in's: arrays and NumPy scalars become ndarrays (0-d included)."""
    t = type(r)
    if t is _ND:
        o = _new(ndarray)
        o._a = r
        return o
    if isinstance(r, _GEN):
        o = _new(ndarray)
        o._a = _np.asarray(r)
        return o
    if t is list:
        return [_wrap(x) for x in r]
    if isinstance(r, tuple):  # namedtuples (SlogdetResult, QRResult...) become plain tuples, as in CuPy
        return tuple([_wrap(x) for x in r])
    return r


def _un(x):
    """Unwrap a function argument: stand-in arrays to NumPy; a NumPy array is refused."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t is _ND:
        raise _host_error(x)
    if t is list:
        return [_un(e) for e in x]
    if t is tuple:
        return tuple([_un(e) for e in x])
    return x


def _un_host_ok(x):
    """Unwrap data given to a creation function (host data allowed)."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t is list:
        return [_un_host_ok(e) for e in x]
    if t is tuple:
        return tuple([_un_host_ok(e) for e in x])
    return x


def _un_index(key):
    """Unwrap an index: stand-in arrays to NumPy. NumPy arrays and lists are allowed (CuPy copies
    them to the device). Returns (key, advanced, mask)."""
    t = type(key)
    if t is ndarray:
        key = key._a
        return key, True, key.dtype.kind == "b"
    if t is tuple:
        advanced = mask = False
        parts = []
        for k in key:
            tk = type(k)
            if tk is ndarray:
                k = k._a
                advanced = True
                mask = mask or k.dtype.kind == "b"
            elif tk is _ND or tk is list:
                advanced = True
                mask = mask or _np.asarray(k).dtype.kind == "b"
            parts.append(k)
        return tuple(parts), advanced, mask
    if t is _ND or t is list:
        return key, True, _np.asarray(key).dtype.kind == "b"
    return key, False, False


def _check_dtype(a):
    if a.dtype.kind in _BAD_DTYPE_KINDS:
        raise ValueError(f"Unsupported dtype {a.dtype}")
    return a


def _should_use_rop(x, y):
    y_ufunc = getattr(y, "__array_ufunc__", _should_use_rop)
    if y_ufunc is not _should_use_rop:
        return y_ufunc is None
    return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)


def _binop(npfunc, compare=False):
    def op(self, y):
        t = type(y)
        if t is ndarray:
            return _wrap(npfunc(self._a, y._a))
        if t in _PYSCALARS or isinstance(y, _GEN):
            return _wrap(npfunc(self._a, y))
        if _should_use_rop(self, y):
            return NotImplemented
        if compare and t is _ND and y.ndim == 0:
            return _wrap(npfunc(self._a, y.item()))
        raise _host_error(y)

    def rop(self, y):
        t = type(y)
        if t in _PYSCALARS or isinstance(y, _GEN):
            return _wrap(npfunc(y, self._a))
        if _should_use_rop(self, y):
            return NotImplemented
        raise _host_error(y)

    def iop(self, y):
        t = type(y)
        if t is ndarray:
            npfunc(self._a, y._a, out=self._a)
        elif t in _PYSCALARS or isinstance(y, _GEN):
            npfunc(self._a, y, out=self._a)
        elif _should_use_rop(self, y):
            return NotImplemented
        else:
            raise _host_error(y)
        return self

    return op, rop, iop


def _unary(npfunc):
    def op(self):
        return _wrap(npfunc(self._a))

    return op


class ndarray:
    """Strict CuPy stand-in array: a NumPy array kept on the "device"."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict stand-in: ndarray(memptr=/strides=) is not implemented")
        self._a = _empty(shape, dtype, order)

    # -- refused conversions -------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    # -- NumPy protocols -----------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        import cupy

        inout = inputs
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inout += out
            kwargs["out"] = out[0]
        if method not in ("__call__", "outer", "at", "reduce", "accumulate", "reduceat"):
            return NotImplemented
        name = ufunc.__name__
        try:
            func = getattr(cupy, name)
            if method != "__call__":
                func = getattr(func, method)
        except AttributeError:
            return NotImplemented
        for x in inout:
            if not (type(x) in _PYSCALARS or isinstance(x, (_GEN, ndarray, _ND))):
                return NotImplemented
        if name in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
            inputs = tuple(x.item() if type(x) is _ND and x.ndim == 0 else x for x in inputs)
        return func(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        import cupy

        try:
            module = _functools.reduce(getattr, func.__module__.split(".")[1:], cupy)
            cupy_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if cupy_func is func:
            return NotImplemented
        for t in types:
            if not issubclass(t, (ndarray, _ND)):
                return NotImplemented
        return cupy_func(*args, **kwargs)

    # -- metadata (no sync) ---------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def T(self):
        return _wrap(self._a.T)

    @property
    def mT(self):
        return _wrap(self._a.mT)

    @property
    def device(self):
        from cupy import cuda

        return cuda.Device(0)

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    # -- device -> host (counted) ---------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        _strict.record("get")
        if out is not None:
            if type(out) is not _ND:
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = self._a
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if type(arr) is not _ND:
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray (got {type(arr)})")
        if arr.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._a.shape}, new shape: {arr.shape}")
        self._a[...] = arr

    def item(self, *args):
        _strict.record("item")
        return self._a.item(*args)

    def tolist(self):
        _strict.record("tolist")
        return self._a.tolist()

    def __float__(self):
        _strict.record("float")
        return float(self._a)

    def __int__(self):
        _strict.record("int")
        return int(self._a)

    def __complex__(self):
        _strict.record("complex")
        return complex(self._a)

    def __bool__(self):
        _strict.record("bool")
        if self._a.size == 0:
            _warnings.warn(
                "The truth value of an empty array is ambiguous. Returning False, but in future "
                "this will result in an error. Use `array.size > 0` to check that an array is "
                "not empty.",
                DeprecationWarning,
                stacklevel=2,
            )
            return False
        return bool(self._a)

    def __repr__(self):
        _strict.record("repr")
        return repr(self._a)

    def __str__(self):
        _strict.record("str")
        return str(self._a)

    def __format__(self, spec):
        _strict.record("format")
        return format(self._a, spec)

    def __reduce__(self):
        _strict.record("pickle")
        import cupy

        return cupy.array, (_np.array(self._a),)

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    # -- indexing ----------------------------------------------------------------------
    def __getitem__(self, key):
        key, advanced, mask = _un_index(key)
        if mask:
            _strict.record("boolean-mask")
        r = self._a[key]
        if type(r) is not _ND:  # an integer index: keep a 0-d *view*, as CuPy does
            r = self._a[(key if type(key) is tuple else (key,)) + (Ellipsis,)]
        return _wrap(r)

    def __setitem__(self, key, value):
        key, advanced, mask = _un_index(key)
        if mask:
            _strict.record("boolean-mask")
        t = type(value)
        if t is ndarray:
            value = value._a
        elif t is _ND or t is list or t is tuple:
            # Basic indexing: CuPy fills with a scalar and refuses a host array; advanced
            # indexing copies the host value to the device first.
            if not advanced and _np.ndim(value) != 0:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = _un_host_ok(value)
        elif not (t in _PYSCALARS or isinstance(value, _GEN)):
            value = _un_host_ok(value)
        self._a[key] = value

    # -- cupy-only methods -------------------------------------------------------------
    def ptp(self, axis=None, out=None, keepdims=False):
        return _wrap(_np.ptp(self._a, axis=axis, keepdims=keepdims))

    def scatter_add(self, slices, value):
        _scatter(_np.add, self, slices, value)

    def scatter_max(self, slices, value):
        _scatter(_np.maximum, self, slices, value)

    def scatter_min(self, slices, value):
        _scatter(_np.minimum, self, slices, value)

    def nonzero(self):
        _strict.record("nonzero")
        return _wrap(self._a.nonzero())

    def dot(self, b, out=None):
        if type(b) is not ndarray:
            raise TypeError(f"Argument 'b' has incorrect type (expected cupy.ndarray, got {type(b).__name__})")
        return _wrap(self._a.dot(b._a))


ndarray.__module__ = "cupy"
_new = object.__new__

for _name, _f in (
    ("add", _np.add),
    ("sub", _np.subtract),
    ("mul", _np.multiply),
    ("matmul", _np.matmul),
    ("truediv", _np.true_divide),
    ("floordiv", _np.floor_divide),
    ("mod", _np.remainder),
    ("pow", _np.power),
    ("and", _np.bitwise_and),
    ("or", _np.bitwise_or),
    ("xor", _np.bitwise_xor),
    ("lshift", _np.left_shift),
    ("rshift", _np.right_shift),
    ("divmod", _np.divmod),
):
    _op, _rop, _iop = _binop(_f)
    setattr(ndarray, f"__{_name}__", _op)
    setattr(ndarray, f"__r{_name}__", _rop)
    if _name not in ("matmul", "divmod"):
        setattr(ndarray, f"__i{_name}__", _iop)

for _name, _f in (("lt", _np.less), ("le", _np.less_equal), ("gt", _np.greater), ("ge", _np.greater_equal)):
    setattr(ndarray, f"__{_name}__", _binop(_f, compare=True)[0])

_eq = _binop(_np.equal, compare=True)[0]
_ne = _binop(_np.not_equal, compare=True)[0]


def __eq__(self, other):  # noqa: N807
    if other is None or (type(other).__eq__ is object.__eq__ and not isinstance(other, (ndarray, _ND))):
        return _wrap(_np.zeros(self._a.shape, dtype=bool))
    return _eq(self, other)


def __ne__(self, other):  # noqa: N807
    if other is None or (
        type(other).__eq__ is object.__eq__
        and type(other).__ne__ is object.__ne__
        and not isinstance(other, (ndarray, _ND))
    ):
        return _wrap(_np.ones(self._a.shape, dtype=bool))
    return _ne(self, other)


ndarray.__eq__ = __eq__
ndarray.__ne__ = __ne__
ndarray.__hash__ = None
for _name, _f in (("neg", _np.negative), ("pos", _np.positive), ("abs", _np.absolute), ("invert", _np.invert)):
    setattr(ndarray, f"__{_name}__", _unary(_f))


def _scatter(ufunc, a, slices, value):
    if type(a) is not ndarray:
        raise TypeError(f"scatter target must be a cupy.ndarray, got {type(a)}")
    key, _, _ = _un_index(slices)
    ufunc.at(a._a, key, _un(value))


def _empty(shape, dtype=float, order="C"):
    """``numpy.empty`` that fills floats with NaN, so reading uninitialised memory shows."""
    a = _np.empty(shape, dtype, order)
    _check_dtype(a)
    if a.dtype.kind in _FLOAT_KINDS:
        a.fill(_np.nan)
    return a


# -- generic methods: every NumPy ndarray method CuPy also has -----------------------------


class _Unimplemented:
    """A CuPy name the stand-in does not implement: calling or using it raises."""

    def __init__(self, qualname):
        self._qualname = qualname

    def _raise(self, *args, **kwargs):
        raise NotImplementedError(f"strict stand-in: {self._qualname} is not implemented")

    __call__ = __getitem__ = __enter__ = __iter__ = _raise

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unimplemented(f"{self._qualname}.{name}")

    def __repr__(self):
        return f"<strict stand-in: unimplemented {self._qualname}>"


def _unimplemented_property(qualname):
    def getter(self):
        raise NotImplementedError(f"strict stand-in: {qualname} is not implemented")

    return property(getter)


def _method(name):
    npmeth = getattr(_ND, name)

    def method(self, *args, **kwargs):
        if args:
            args = _un(args)
        if kwargs:
            out = kwargs.get("out")
            kwargs = {k: _un(v) for k, v in kwargs.items()}
            if type(out) is ndarray:
                npmeth(self._a, *args, **kwargs)
                return out
        return _wrap(npmeth(self._a, *args, **kwargs))

    method.__name__ = name
    method.__qualname__ = f"ndarray.{name}"
    return method


def _wrapped_property(name):
    getset = getattr(_ND, name)

    def getter(self):
        return _wrap(getset.__get__(self._a))

    return property(getter)


def install_ndarray_names(names):
    """Give ``ndarray`` exactly CuPy's public attributes (``names``: name -> "numpy"/"cupy-only")."""
    import inspect

    for name, origin in names.items():
        if name in ndarray.__dict__:
            continue
        if origin != "numpy" or name in ("flat", "data", "cstruct", "ctypes"):
            if name in ("data", "cstruct", "flat", "mdspan"):
                setattr(ndarray, name, _unimplemented_property(f"cupy.ndarray.{name}"))
            else:
                setattr(ndarray, name, _Unimplemented(f"cupy.ndarray.{name}"))
            continue
        static = inspect.getattr_static(_ND, name)
        if callable(static) and not isinstance(static, (property, type(_ND.shape))):
            setattr(ndarray, name, _method(name))
        else:
            setattr(ndarray, name, _wrapped_property(name))


# -- functions and ufuncs --------------------------------------------------------------


def make_function(qualname, npfunc, host_ok=False, sync=None):
    """A CuPy function computed by ``npfunc``; NumPy arrays in its arguments raise TypeError
    unless ``host_ok`` (creation functions). ``sync`` names the sync it implies, if any."""
    unwrap = _un_host_ok if host_ok else _un

    def func(*args, **kwargs):
        if sync is not None:
            _strict.record(sync)
        args = unwrap(args)
        out = None
        if kwargs:
            out = kwargs.get("out")
            kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        r = npfunc(*args, **kwargs)
        if type(out) is ndarray:
            return out
        return _wrap(r)

    func.__name__ = qualname.rsplit(".", 1)[-1]
    func.__qualname__ = func.__name__
    func.__module__ = qualname.rsplit(".", 1)[0]
    func.__doc__ = f"Strict CuPy stand-in for {qualname} (computed by NumPy)."
    return func


def _ufunc_arg(x):
    t = type(x)
    if t is ndarray:
        return x._a
    if t in _PYSCALARS or isinstance(x, _GEN):
        return x
    raise TypeError(f"Unsupported type {t}")


class ufunc:
    """A CuPy ufunc computed by a NumPy ufunc: inputs must be device arrays or scalars."""

    __slots__ = ("_f", "__name__")

    def __init__(self, npufunc):
        self._f = npufunc
        self.__name__ = npufunc.__name__

    def _call(self, method, args, kwargs):
        args = [_ufunc_arg(x) for x in args]
        out = kwargs.get("out")
        if out is not None:
            if type(out) is tuple:
                if len(out) != 1:
                    raise ValueError("The 'out' parameter must have exactly one array value")
                out = out[0]
            if type(out) is not ndarray:
                raise TypeError("Output arguments must be cupy.ndarray")
            kwargs = dict(kwargs, out=out._a)
        if "where" in kwargs:
            kwargs["where"] = _ufunc_arg(kwargs["where"])
        r = method(*args, **kwargs)
        return out if out is not None else _wrap(r)

    def __call__(self, *args, **kwargs):
        return self._call(self._f, args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._call(self._f.reduce, args[:1], dict(kwargs, **dict(zip(("axis", "dtype", "out"), args[1:]))))

    def accumulate(self, *args, **kwargs):
        return self._call(self._f.accumulate, args[:1], dict(kwargs, **dict(zip(("axis", "dtype", "out"), args[1:]))))

    def outer(self, a, b, **kwargs):
        return self._call(self._f.outer, (a, b), kwargs)

    def reduceat(self, a, indices, *args, **kwargs):
        if type(a) is not ndarray:
            raise TypeError(f"Unsupported type {type(a)}")
        return _wrap(self._f.reduceat(a._a, _un_index(indices)[0], *_un(args), **kwargs))

    def at(self, a, indices, b=None):
        if type(a) is not ndarray:
            raise TypeError(f"Unsupported type {type(a)}")
        key = _un_index(indices)[0]
        if b is None:
            self._f.at(a._a, key)
        else:
            self._f.at(a._a, key, _ufunc_arg(b))

    @property
    def name(self):
        return self._f.__name__

    @property
    def nin(self):
        return self._f.nin

    @property
    def nout(self):
        return self._f.nout

    @property
    def nargs(self):
        return self._f.nargs

    @property
    def types(self):
        return self._f.types

    def __repr__(self):
        return f"<ufunc '{self._f.__name__}'>"


ufunc.__module__ = "cupy"
