"""The primitive ops, each forward next to its vector-Jacobian product (VJP).

Reading guide. For y = f(x) and a cotangent g = dL/dy, each VJP returns dL/dx, the
contraction of g with the Jacobian dy/dx, written without ever forming that Jacobian:

    y = a * b        ->  dL/da = g * b,         dL/db = g * a
    y = exp(x)       ->  dL/dx = g * y
    y = a @ b        ->  dL/da = g @ b^T,       dL/db = a^T @ g
    y = sum(x, ax)   ->  dL/dx = g copied back along ax

A VJP may return a cotangent with a broadcast shape; the engine (``unbroadcast`` in
tensor.py) sums it back to the input's shape.

Fused ops. ``linear`` (x W + b), ``linear_relu``, ``affine`` (x e^s + t) and ``soft_clamp``
(b tanh(x / b)) are compositions of the ops here, given a primitive of their own because a
flow's train step runs them hundreds of times: one node instead of two or three, and a VJP
that reuses what the forward pass computed. Each VJP is derived next to its op, and
tests/test_ops.py checks it like any other. Everything here works on plain arrays of
whichever namespace the inputs live in (``_xp``), so the same code runs on NumPy and CuPy.
"""

from .. import backend
from .tensor import Tensor, primitive

_xp = backend.array_module


def _unwrap(x):
    """The array inside a Tensor; anything else unchanged (careful: ndarray.data is a buffer)."""
    return x.data if isinstance(x, Tensor) else x


def _same(g):
    return (g,)


# --- arithmetic --------------------------------------------------------------------------
@primitive("add", lambda g: (g, g))
def add(a, b):
    return a + b, ()


@primitive("sub", lambda g: (g, -g))
def sub(a, b):
    return a - b, ()


@primitive("mul", lambda g, a, b: (g * b, g * a))
def mul(a, b):
    return a * b, (a, b)


@primitive("div", lambda g, a, b: (g / b, -g * a / (b * b)))
def div(a, b):
    return a / b, (a, b)


@primitive("neg", lambda g: (-g,))
def neg(x):
    return -x, ()


def _pow_vjp(g, x, exponent):
    return (g * (exponent * x ** (exponent - 1)),)


@primitive("pow", _pow_vjp)
def _power(x, exponent):
    return x**exponent, (x, exponent)


def power(x, exponent):
    """x ** exponent for a constant (Python number) exponent; for a tensor exponent use exp(b * log(a))."""
    return _power(x, exponent=exponent)


def _matmul_vjp(g, a, b):
    swap = lambda m: _xp(m).swapaxes(m, -1, -2)
    return g @ swap(b), swap(a) @ g


@primitive("matmul", _matmul_vjp)
def matmul(a, b):
    """Batched matrix product of arrays with ndim >= 2; leading axes broadcast."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs arrays with at least 2 axes, got shapes {a.shape} and {b.shape}")
    return a @ b, (a, b)


def _linear_vjp(g, x, w):
    # y = x W + b. Row i of y is x_i W + b, so dL/dx = g W^T, dL/dW = sum_i x_i^T g_i = x^T g,
    # and b is added to every row: dL/db = the column sums of g.
    return g @ w.T, x.T @ g, g.sum(axis=0)


@primitive("linear", _linear_vjp)
def linear(x, w, b):
    """x W + b for x (B, n), W (n, m), b (m,): a dense layer as one op.

    It equals ``matmul(x, w) + b``, but as one primitive it records one node instead of
    two and sums the bias gradient directly instead of through unbroadcast, which matters
    when a train step is a few hundred small ops.
    """
    if x.ndim != 2 or w.ndim != 2 or b.shape != (w.shape[1],) or x.shape[1] != w.shape[0]:
        raise ValueError(f"linear needs x (B, n), W (n, m), b (m,), got {x.shape}, {w.shape}, {b.shape}")
    # With n = 1, x W is an outer product; BLAS's matrix product is slow at that shape
    # (a (4096, 1) @ (1, 256) product costs as much as a fifth of a (4096, 256) @ (256, 256)
    # one), while broadcasting x * W computes the same numbers in one pass.
    y = x * w if w.shape[0] == 1 else x @ w
    y += b  # y is a fresh array: adding in place saves a second (B, m) temporary
    return y, (x, w)


def _linear_relu_vjp(g, x, w, y):
    # y = relu(u), u = x W + b: the relu passes g where u > 0 (exactly where y > 0), then
    # the linear map's VJP as above.
    return _linear_vjp(g * (y > 0), x, w)


@primitive("linear_relu", _linear_relu_vjp)
def linear_relu(x, w, b):
    """relu(x W + b): a dense layer and its activation as one op (see ``linear``).

    An MLP's hidden layer is the most frequent pair of ops in a flow; fused, it records one
    node instead of two, and clips in place the fresh array x W + b instead of making another.
    """
    y, _ = linear.forward(x, w, b)
    _xp(y).maximum(y, 0, out=y)
    return y, (x, w, y)


def _affine_vjp(g, x, scale):
    # y = x e^s + t:  dy/dx = e^s,  dy/dt = 1,  dy/ds = x e^s  (in the order of the inputs x, t, s).
    return g * scale, g, g * x * scale


@primitive("affine", _affine_vjp)
def affine(x, shift, log_scale):
    """y = x * exp(log_scale) + shift, elementwise (broadcasting): the affine coupling's map as one op.

    The arguments come in the order of ``flows.transformers.affine(x, shift, log_scale)``.
    Composed of mul, exp and add it would record three nodes; fused, it records one, and its
    VJP (above) reuses exp(log_scale) from the forward pass.
    """
    scale = _xp(x).exp(log_scale)
    return x * scale + shift, (x, scale)


def _soft_clamp_vjp(g, y, bound):
    # y = b tanh(x / b):  dy/dx = 1 - tanh(x / b)^2 = 1 - (y / b)^2.
    return (g * (1 - (y / bound) ** 2),)


@primitive("soft_clamp", _soft_clamp_vjp)
def _soft_clamp(x, bound):
    y = bound * _xp(x).tanh(x / bound)
    return y, (y, bound)


def soft_clamp(x, bound):
    """bound * tanh(x / bound): about x near 0, never beyond +-bound (``bound`` a positive constant).

    RealNVP and Glow bound their log-scales this way, so that exp(log_scale) cannot overflow.
    """
    return _soft_clamp(x, bound=bound)


# --- elementwise functions -----------------------------------------------------------------
@primitive("exp", lambda g, y: (g * y,))
def exp(x):
    y = _xp(x).exp(x)
    return y, (y,)


@primitive("log", lambda g, x: (g / x,))
def log(x):
    return _xp(x).log(x), (x,)


@primitive("log1p", lambda g, x: (g / (1 + x),))
def log1p(x):
    return _xp(x).log1p(x), (x,)


@primitive("sqrt", lambda g, y: (g / (2 * y),))
def sqrt(x):
    y = _xp(x).sqrt(x)
    return y, (y,)


@primitive("tanh", lambda g, y: (g * (1 - y * y),))
def tanh(x):
    y = _xp(x).tanh(x)
    return y, (y,)


@primitive("sin", lambda g, x: (g * _xp(x).cos(x),))
def sin(x):
    return _xp(x).sin(x), (x,)


@primitive("cos", lambda g, x: (-g * _xp(x).sin(x),))
def cos(x):
    return _xp(x).cos(x), (x,)


@primitive("sigmoid", lambda g, y: (g * y * (1 - y),))
def sigmoid(x):
    # sigmoid(x) = (1 + tanh(x / 2)) / 2 is the same function, and tanh never overflows,
    # unlike 1 / (1 + exp(-x)) at x = -1000.
    y = 0.5 * (1 + _xp(x).tanh(0.5 * x))
    return y, (y,)


def _softplus_vjp(g, x):
    return (g * sigmoid.forward(x)[0],)


@primitive("softplus", _softplus_vjp)
def softplus(x):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it never overflows."""
    xp = _xp(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x))), (x,)


@primitive("relu", lambda g, positive: (g * positive,))
def relu(x):
    positive = x > 0  # saved for the VJP (1 byte an entry), so backward need not compare again
    return x * positive, (positive,)


@primitive("leaky_relu", lambda g, x, slope: (_xp(g).where(x > 0, g, slope * g),))
def _leaky_relu(x, slope):
    return _xp(x).where(x > 0, x, slope * x), (x, slope)


def leaky_relu(x, slope=0.01):
    """x for x > 0, slope * x otherwise."""
    return _leaky_relu(x, slope=slope)


@primitive("abs", lambda g, x: (g * _xp(x).sign(x),))
def absolute(x):
    return _xp(x).abs(x), (x,)


@primitive("clip", lambda g, x, low, high: (g * ((x >= low) & (x <= high)),))
def _clip(x, low, high):
    return _xp(x).clip(x, low, high), (x, low, high)


def clip(x, low, high):
    """Clamp to [low, high] (constants); the gradient is zero where the clamp is active."""
    return _clip(x, low=low, high=high)


def _where_vjp(g, condition):
    zero = _xp(g).zeros((), dtype=g.dtype)
    return _xp(g).where(condition, g, zero), _xp(g).where(condition, zero, g)


@primitive("where", _where_vjp)
def _where(a, b, condition):
    return _xp(a).where(condition, a, b), (condition,)


def where(condition, a, b):
    """Pick ``a`` where the boolean array ``condition`` holds, else ``b`` (broadcasting)."""
    return _where(a, b, condition=_unwrap(condition))


# --- reductions ----------------------------------------------------------------------------
def _expand_reduced(g, shape, axis, keepdims):
    """Give a reduced cotangent back the axes the reduction removed (as size 1), ready to broadcast."""
    if keepdims:
        return g
    if axis is None:
        return g.reshape((1,) * len(shape))
    axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))


def _sum_vjp(g, shape, axis, keepdims):
    return (_xp(g).broadcast_to(_expand_reduced(g, shape, axis, keepdims), shape),)


@primitive("sum", _sum_vjp)
def _sum(x, axis=None, keepdims=False):
    return _xp(x).sum(x, axis=axis, keepdims=keepdims), (x.shape, axis, keepdims)


def _mean_vjp(g, shape, axis, keepdims, count):
    return _sum_vjp(g / count, shape, axis, keepdims)  # divide the small array, then broadcast


@primitive("mean", _mean_vjp)
def _mean(x, axis=None, keepdims=False):
    # The sum, then one division: what numpy.mean does, without its Python layers.
    total = _xp(x).sum(x, axis=axis, keepdims=keepdims)
    count = x.size // total.size if total.size else 1
    return total / count, (x.shape, axis, keepdims, count)


def _max_vjp(g, x, y, axis, keepdims):
    # The gradient goes to the maximal entries; ties share it equally (as HIPS autograd does).
    y = _expand_reduced(y, x.shape, axis, keepdims)
    g = _expand_reduced(g, x.shape, axis, keepdims)
    is_max = x == y
    count = is_max.sum(axis=axis, keepdims=True, dtype=g.dtype)  # an int count would promote float32
    return (g * is_max / count,)


@primitive("max", _max_vjp)
def _max(x, axis=None, keepdims=False):
    y = _xp(x).max(x, axis=axis, keepdims=keepdims)
    return y, (x, y, axis, keepdims)


def _logsumexp_vjp(g, x, y, axis, keepdims):
    y = _expand_reduced(y, x.shape, axis, keepdims)
    g = _expand_reduced(g, x.shape, axis, keepdims)
    return (g * _xp(x).exp(x - y),)  # d/dx log sum e^x = softmax(x)


@primitive("logsumexp", _logsumexp_vjp)
def _logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))), shifted by the max so that no exp overflows."""
    xp = _xp(x)
    shift = xp.max(x, axis=axis, keepdims=True)
    shift = xp.where(xp.isfinite(shift), shift, 0)  # all -inf: any finite shift will do
    y = xp.log(xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)) + shift
    if not keepdims:
        y = y.reshape(()) if axis is None else xp.squeeze(y, axis=axis)
    return y, (x, y, axis, keepdims)


def _softmax_vjp(g, s, axis):
    return (s * (g - (g * s).sum(axis=axis, keepdims=True)),)


@primitive("softmax", _softmax_vjp)
def _softmax(x, axis=-1):
    xp = _xp(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    s = e / e.sum(axis=axis, keepdims=True)
    return s, (s, axis)


def _cumsum_vjp(g, axis):
    # Input i feeds outputs i, i+1, ...: its gradient is a cumulative sum from the end.
    xp = _xp(g)
    return (xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis),)


@primitive("cumsum", _cumsum_vjp)
def _cumsum(x, axis=-1):
    return _xp(x).cumsum(x, axis=axis), (axis,)


# --- shapes and indexing ---------------------------------------------------------------------
@primitive("reshape", lambda g, shape: (g.reshape(shape),))
def _reshape(x, shape):
    return x.reshape(shape), (x.shape,)


def _transpose_vjp(g, axes):
    inverse = None if axes is None else tuple(_argsort(axes))
    return (_xp(g).transpose(g, inverse),)


def _argsort(seq):
    return sorted(range(len(seq)), key=seq.__getitem__)


@primitive("transpose", _transpose_vjp)
def _transpose(x, axes=None):
    return _xp(x).transpose(x, axes), (axes,)


@primitive("broadcast_to", _same)
def _broadcast_to(x, shape):
    """Copy ``x`` to ``shape``; the engine's unbroadcast is its whole VJP."""
    return _xp(x).broadcast_to(x, shape), ()


def _getitem_vjp(g, shape, index):
    grad = _xp(g).zeros(shape, dtype=g.dtype)
    if _is_basic(index):  # slices and integers pick each entry at most once: plain assignment
        grad[index] = g
    else:
        backend.scatter_add(grad, index, g)  # an index array may repeat entries: they must add up
    return (grad,)


def _is_basic(index):
    """True for NumPy's *basic* indexing (integers, slices, ``...``, ``None``), which makes a view."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(part is None or part is Ellipsis or isinstance(part, (int, slice)) for part in parts)


@primitive("getitem", _getitem_vjp)
def _getitem(x, index):
    return x[index], (x.shape, index)


def _take_along_axis_vjp(g, shape, indices, axis):
    xp = _xp(g)
    grad = xp.zeros(shape, dtype=g.dtype)
    # An open mesh of coordinates over the output, with the gathered axis replaced by
    # `indices`, says where each output element came from; scatter the cotangent there.
    ndim = g.ndim
    mesh = []
    for d, n in enumerate(g.shape):
        # axis d's coordinates, shaped to broadcast along the other axes; an axis of size 1
        # in x (broadcast against indices) is always coordinate 0
        coordinates = xp.arange(n) if shape[d] != 1 else xp.zeros(n, dtype=xp.int64)
        mesh.append(coordinates.reshape((1,) * d + (n,) + (1,) * (ndim - d - 1)))
    mesh[axis] = indices
    backend.scatter_add(grad, tuple(mesh), g)
    return (grad,)


@primitive("take_along_axis", _take_along_axis_vjp)
def _take_along_axis(x, indices, axis):
    axis = axis % x.ndim
    return _xp(x).take_along_axis(x, indices, axis=axis), (x.shape, indices, axis)


def _concatenate_vjp(g, sizes, axis):
    # Each input gets back its own block of the output (a view): basic slicing along `axis`.
    axis = axis % g.ndim
    before, ends = (slice(None),) * axis, _cumulative(sizes)
    return tuple(g[before + (slice(end - n, end),)] for n, end in zip(sizes, ends))


def _cumulative(sizes):
    total, out = 0, []
    for n in sizes:
        total += n
        out.append(total)
    return out


@primitive("concatenate", _concatenate_vjp)
def _concatenate(*arrays, axis=0):
    return _xp(*arrays).concatenate(arrays, axis=axis), (tuple(a.shape[axis] for a in arrays), axis)


def _stack_vjp(g, count, axis):
    # Input i became the slice i of the new axis; its cotangent is that slice (a view).
    return tuple(_xp(g).moveaxis(g, axis, 0))


@primitive("stack", _stack_vjp)
def _stack(*arrays, axis=0):
    return _xp(*arrays).stack(arrays, axis=axis), (len(arrays), axis)


def _diagonal_vjp(g, shape):
    xp = _xp(g)
    grad = xp.zeros(shape, dtype=g.dtype)
    i = xp.arange(g.shape[-1])
    grad[..., i, i] = g
    return (grad,)


@primitive("diagonal", _diagonal_vjp)
def diagonal(x):
    """The diagonal of the last two axes: (..., n, m) -> (..., min(n, m))."""
    return _xp(x).diagonal(x, axis1=-2, axis2=-1).copy(), (x.shape,)


# --- linear algebra --------------------------------------------------------------------------
def _solve_broadcast(xp, a, b):
    """``xp.linalg.solve(a, b)`` with the batch axes of A (..., n, n) and B (..., n, k) broadcast first.

    NumPy broadcasts them itself; CuPy requires them equal and raises otherwise, so we
    broadcast explicitly (views, no copies) and the same call works on both.
    """
    batch = xp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return xp.linalg.solve(xp.broadcast_to(a, batch + a.shape[-2:]), xp.broadcast_to(b, batch + b.shape[-2:]))


def _solve_vjp(g, a, x):
    # X = A^-1 B.  dL/dB = A^-T g  and  dL/dA = -(dL/dB) X^T.
    xp = _xp(g)
    grad_b = _solve_broadcast(xp, xp.swapaxes(a, -1, -2), g)
    return -grad_b @ xp.swapaxes(x, -1, -2), grad_b


@primitive("solve", _solve_vjp)
def solve(a, b):
    """X with A X = B, batched: A (..., n, n), B (..., n, k); the batch axes broadcast."""
    if b.ndim < 2:
        raise ValueError(f"solve needs B of shape (..., n, k), got {b.shape}")
    x = _solve_broadcast(_xp(a), a, b)
    return x, (a, x)


def _solve_triangular_vjp(g, a, x, lower):
    # As for solve, with dL/dA kept to the triangle that A actually has.
    xp = _xp(g)
    grad_b = _solve_broadcast(xp, xp.swapaxes(a, -1, -2), g)
    grad_a = -grad_b @ xp.swapaxes(x, -1, -2)
    return (xp.tril(grad_a) if lower else xp.triu(grad_a)), grad_b


@primitive("solve_triangular", _solve_triangular_vjp)
def _solve_triangular(a, b, lower=True):
    # NumPy has no triangular solver of its own, so we call the general one: the answer is
    # the same, and for the small D of a flow the O(D^3) factorisation it repeats is cheap.
    # Only the triangle named by `lower` is read, as in a real triangular solve.
    xp = _xp(a)
    a = xp.tril(a) if lower else xp.triu(a)
    if b.ndim < 2:
        raise ValueError(f"solve_triangular needs B of shape (..., n, k), got {b.shape}")
    x = _solve_broadcast(xp, a, b)
    return x, (a, x, lower)


def solve_triangular(a, b, lower=True):
    """X with T X = B, where T is the lower (or upper) triangle of ``a``."""
    return _solve_triangular(a, b, lower=lower)


def _slogdet_vjp(g, a):
    # d log|det A| / dA = A^-T.
    xp = _xp(a)
    return (g[..., None, None] * xp.swapaxes(xp.linalg.inv(a), -1, -2),)


@primitive("slogdet", _slogdet_vjp)
def slogdet(a):
    """log|det A| of (..., n, n) matrices, by LU factorisation: O(n^3). (The sign is not differentiable.)"""
    _, logabsdet = _xp(a).linalg.slogdet(a)
    return logabsdet, (a,)


# --- friendly wrappers (keyword options, Tensor methods) ------------------------------------
def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy.sum
    return _sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return _mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy.max
    return _max(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return _logsumexp(x, axis=axis, keepdims=keepdims)


def softmax(x, axis=-1):
    return _softmax(x, axis=axis)


def cumsum(x, axis=-1):
    return _cumsum(x, axis=axis)


def reshape(x, shape):
    return _reshape(x, shape=tuple(shape))


def transpose(x, axes=None):
    return _transpose(x, axes=None if axes is None else tuple(axes))


def broadcast_to(x, shape):
    return _broadcast_to(x, shape=tuple(shape))


def take_along_axis(x, indices, axis):
    """Gather ``x`` along ``axis`` at the integer array ``indices`` (numpy semantics)."""
    return _take_along_axis(x, indices=_unwrap(indices), axis=axis)


def concatenate(tensors, axis=0):
    return _concatenate(*tensors, axis=axis)


def stack(tensors, axis=0):
    return _stack(*tensors, axis=axis)


def square(x):
    return power(x, 2)


def _index(index):
    """Tensors inside an index are unwrapped to their (integer or boolean) arrays."""
    if isinstance(index, tuple):
        return tuple(_unwrap(i) for i in index)
    return _unwrap(index)


def _method(function):
    """A Primitive object is not a function, so Python would not bind ``self`` to it as
    a method; wrapping it in a real function makes ``a * b`` call ``mul(a, b)``."""
    return lambda self, *args, **options: function(self, *args, **options)


Tensor.__add__ = Tensor.__radd__ = _method(add)
Tensor.__sub__ = _method(sub)
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = Tensor.__rmul__ = _method(mul)
Tensor.__truediv__ = _method(div)
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__neg__ = _method(neg)
Tensor.__pow__ = power
Tensor.__matmul__ = _method(matmul)
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__getitem__ = lambda self, index: _getitem(self, index=_index(index))
Tensor.T = property(lambda self: transpose(self))
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.exp = _method(exp)
Tensor.log = _method(log)
Tensor.reshape = lambda self, *shape: reshape(
    self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
)
Tensor.transpose = lambda self, *axes: transpose(self, axes or None)
