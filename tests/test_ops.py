"""Every registered op's VJP, checked two independent ways on hypothesis-generated inputs.

For an op y = f(x_1, ..., x_n) and a cotangent g (an array shaped like y), reverse mode needs
the vector-Jacobian product of each input,

    vjp_i(g) = g^T (dy/dx_i)        (an array shaped like x_i).

This file checks minflow's VJPs

1. against HIPS autograd: ``make_vjp`` of the same computation written in ``autograd.numpy``;
2. against central differences, using no autodiff at all. For a random direction v,

       <g, J_i v>  ~=  ( <g, f(x_i + eps v)> - <g, f(x_i - eps v)> ) / (2 eps)

   must equal <vjp_i(g), v>: that equation *is* the definition of the transpose J_i^T g.

and checks the forward values against NumPy. Inputs are drawn on the host (NumPy); minflow gets
device copies of them (the default backend: NumPy, or CuPy in the second CI pass) and its results
come back to the host for every comparison, while autograd always computes on the host. Every op
in ``minflow.autodiff.OPS`` needs an entry in ``SPECS`` (a test enforces it), so a new op cannot land untested.

How inputs are drawn. Hypothesis draws the *structure* of a call: shapes (mutually
broadcastable ones for binary ops), axes, keepdims, indices, exponents, and a seed. The *values*
come from a NumPy generator with that seed, inside the op's domain: positive for log and sqrt,
away from the kink for abs and relu, distinct for max (a tie makes max non-differentiable; ties
have a test of their own). Hypothesis' float strategies shrink towards 0.0 and towards equal
values -- exactly the kinks and ties we must stay away from -- so we leave values to the seed.
"""

from collections.abc import Callable
from typing import NamedTuple

import autograd.numpy as anp
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from autograd import make_vjp
from helpers import device, device_ints, host
from hypothesis import given

from minflow import backend
from minflow.autodiff import OPS, Tensor, ops

# --- tolerances ----------------------------------------------------------------------------
# An ulp of float64 is 2.2e-16. minflow and autograd evaluate the same formulas with a handful
# of float64 operations each (sometimes in a different but equivalent form: sigmoid through
# tanh, logsumexp shifted by its max), so they agree to a few hundred ulps at most: 1e-10.
# (Measured over the ci profile: 4 ulps at worst.) Errors are measured against the largest
# entry of the expected array (see assert_close): an entry of a VJP can be a cancelling sum
# (softmax, logsumexp) whose own relative error means nothing.
RTOL = 1e-10
# Forward values: one or two formulas of a few float64 operations each, a few dozen ulps.
FORWARD_RTOL = 1e-12
# Linear algebra goes through LU factorisations, whose rounding grows like n * cond(A) * ulp.
# Our matrices U(-1, 1) + (n + 1) I have singular values in [1, 2n + 1], so cond(A) <= 9 for
# n <= 4: about 1e-14. Both sides call the same LAPACK routines and in practice agree to a few
# ulps; the looser 1e-9 leaves room for a LAPACK build that pivots or blocks differently.
LINALG_RTOL = 1e-9
# Central differences in float64: the truncation error is eps^2 |f'''| / 6 and the rounding
# error about ulp * sum|g * f| / eps. With eps = 1e-6 both stay below ~1e-9 of sum|g * f|
# for our domains (|f'''/f| < 1e4: x^-2 at x >= 0.2 is the worst); measured: 3e-10 at worst.
# We compare at 1e-7 of the magnitudes involved, which still flags any real error (a missing
# or doubled term is O(1/size) > 1e-2 of them).
EPS = 1e-6
FD_RTOL = 1e-7


class Case(NamedTuple):
    """One call of an op: its differentiable inputs (float64 arrays) and its constant options."""

    args: tuple
    options: dict


class Spec(NamedTuple):
    """How to test one op."""

    minflow: Callable  # minflow(*tensors, **options) -> Tensor, through the public wrapper
    reference: Callable  # reference(*arrays, **options) -> array, written with autograd.numpy
    cases: st.SearchStrategy  # draws a Case whose values lie in the op's domain
    rtol: float = RTOL


# --- values ----------------------------------------------------------------------------------
SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def values(rng, shape, domain="real"):
    """A float64 array of ``shape`` with entries in ``domain``."""
    size = int(np.prod(shape))
    if domain == "real":
        x = rng.normal(0.0, 1.5, shape)
    elif domain == "positive":  # log, sqrt, fractional powers
        x = rng.uniform(0.5, 3.0, shape)
    elif domain == "above_minus_one":  # log1p
        x = rng.uniform(-0.5, 3.0, shape)
    elif domain == "away_from_zero":  # |x| >= 0.2: far from the kink of abs/relu and the pole of 1/x
        x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 3.0, shape)
    elif domain == "distinct":  # a shuffled grid: neighbours at least 0.29 apart, so no ties
        x = ((rng.permutation(size) - size / 2) * 0.3 + rng.uniform(0.0, 0.01, size)).reshape(shape)
    else:
        raise ValueError(f"unknown domain {domain!r}")
    return np.asarray(x, dtype=np.float64)


def well_conditioned(rng, shape):
    """Square matrices U(-1, 1) + (n + 1) I: strictly diagonally dominant, so invertible and
    well conditioned, with the other entries random (not zero) so every path is exercised."""
    n = shape[-1]
    return rng.uniform(-1.0, 1.0, shape) + (n + 1) * np.eye(n)


# --- strategies: one per family of ops ----------------------------------------------------------
@st.composite
def elementwise(draw, domain="real", **option_strategies):
    """One array of any shape (0-d included) with entries in ``domain``."""
    rng = np.random.default_rng(draw(SEEDS))
    options = {name: draw(strategy) for name, strategy in option_strategies.items()}
    return Case((values(rng, draw(SHAPES), domain),), options)


@st.composite
def broadcasting(draw, *domains):
    """One array per domain, of mutually broadcastable shapes: (3, 1) with (4,), () with (2, 2)..."""
    shapes = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=len(domains), min_dims=0, max_dims=3, max_side=4)
    ).input_shapes
    rng = np.random.default_rng(draw(SEEDS))
    return Case(tuple(values(rng, s, d) for s, d in zip(shapes, domains)), {})


@st.composite
def where_case(draw):
    """A boolean condition and two branches, all three mutually broadcastable."""
    condition_shape, *shapes = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4)
    ).input_shapes
    rng = np.random.default_rng(draw(SEEDS))
    condition = rng.random(condition_shape) < 0.5
    return Case(tuple(values(rng, s) for s in shapes), {"condition": condition})


@st.composite
def power_case(draw):
    """x ** p: integer p on either sign (away from 0), fractional p on positive x only."""
    exponent = draw(st.sampled_from([-2, -1, 1, 2, 3, -0.5, 0.5, 1.5, 2.5]))
    domain = "away_from_zero" if float(exponent).is_integer() else "positive"
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, draw(SHAPES), domain),), {"exponent": exponent})


@st.composite
def clip_case(draw):
    """x clamped to [low, high], with no entry within 0.1 of either bound (the kinks)."""
    low = draw(st.sampled_from([-1.0, -0.5, 0.0]))
    high = draw(st.sampled_from([0.3, 1.0, 2.0]))
    rng = np.random.default_rng(draw(SEEDS))
    x = values(rng, draw(SHAPES))
    x = np.where(np.abs(x - low) < 0.1, x - 0.2, x)  # pushed below low
    x = np.where(np.abs(x - high) < 0.1, x + 0.2, x)  # pushed above high
    return Case((x,), {"low": low, "high": high})


def any_axes(ndim):
    """axis=None, one axis (negative ones too), or a tuple of distinct axes (the empty tuple too)."""
    one_axis = st.integers(-ndim, ndim - 1) if ndim else st.nothing()
    return st.none() | one_axis | hnp.valid_tuple_axes(ndim)


@st.composite
def reduction(draw, domain="real"):
    """One array, axis (None, int or tuple) and keepdims."""
    shape = draw(SHAPES)
    rng = np.random.default_rng(draw(SEEDS))
    options = {"axis": draw(any_axes(len(shape))), "keepdims": draw(st.booleans())}
    return Case((values(rng, shape, domain),), options)


@st.composite
def along_one_axis(draw):
    """One array with at least one axis, and one axis of it (softmax, cumsum)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, shape),), {"axis": draw(st.integers(-len(shape), len(shape) - 1))})


@st.composite
def reshape_case(draw):
    """A target shape of the same size: the axes shuffled, 1s inserted, maybe one -1."""
    shape = draw(SHAPES)
    target = list(draw(st.permutations(shape)))
    for _ in range(draw(st.integers(0, 2))):
        target.insert(draw(st.integers(0, len(target))), 1)
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, shape),), {"shape": tuple(target)})


@st.composite
def transpose_case(draw):
    shape = draw(SHAPES)
    axes = draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, shape),), {"axes": axes})


@st.composite
def broadcast_to_case(draw):
    """x has the trailing axes of the target shape, some of them of size 1."""
    target = draw(SHAPES)
    kept = target[len(target) - draw(st.integers(0, len(target))) :]
    shape = tuple(n if draw(st.booleans()) else 1 for n in kept)
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, shape),), {"shape": target})


@st.composite
def getitem_case(draw):
    """x[index] for every kind of index: basic (slices with steps, integers, ..., None), integer
    arrays with repeated entries (their gradients must add up), boolean masks, and a mix."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    rng = np.random.default_rng(draw(SEEDS))
    kinds = ["basic", "repeated_integers", "boolean_mask"]
    if len(shape) >= 2:
        kinds += ["two_integer_arrays", "slice_then_integers"]
    kind = draw(st.sampled_from(kinds))
    n = shape[0]
    if kind == "basic":
        index = draw(hnp.basic_indices(shape, allow_newaxis=True))
    elif kind == "repeated_integers":  # more indices than rows (negative ones alias too): repeats
        index = rng.integers(-n, n, size=n + draw(st.integers(1, 4)))
    elif kind == "boolean_mask":  # a mask over the leading k axes
        index = rng.random(shape[: draw(st.integers(1, len(shape)))]) < 0.5
    elif kind == "two_integer_arrays":  # (k, 1) and (1, m) broadcast to a (k, m) grid of pairs
        index = (rng.integers(-n, n, size=(n + 1, 1)), rng.integers(0, shape[1], size=(1, 3)))
    else:
        index = (slice(None), rng.integers(0, shape[1], size=shape[1] + 2))
    return Case((values(rng, shape),), {"index": index})


@st.composite
def take_along_axis_case(draw):
    """Indices with repeats (more of them than x has entries along the axis), negative ones
    too, and every other axis either equal, or of size 1 in x, or of size 1 in the indices."""
    ndim = draw(st.integers(1, 3))
    axis = draw(st.integers(-ndim, ndim - 1))
    x_shape, index_shape = [], []
    for d in range(ndim):
        n = draw(st.integers(1, 4))
        if d == axis % ndim:
            x_shape.append(n)
            index_shape.append(n + draw(st.integers(0, 3)))
        else:
            pair = draw(st.sampled_from(["equal", "x_is_1", "indices_are_1"]))
            x_shape.append(1 if pair == "x_is_1" else n)
            index_shape.append(1 if pair == "indices_are_1" else n)
    rng = np.random.default_rng(draw(SEEDS))
    n = x_shape[axis]
    indices = rng.integers(-n, n, size=index_shape)
    return Case((values(rng, tuple(x_shape)),), {"indices": indices, "axis": axis})


def take_along_axis_reference(x, indices, axis):
    """numpy's definition, by fancy indexing (autograd has no take_along_axis):
    out[i, j, k] = x[i, indices[i, j, k], k] for axis=1, with an arange on every other axis."""
    axis = axis % x.ndim
    index = tuple(
        indices if d == axis else np.arange(n).reshape([-1 if e == d else 1 for e in range(x.ndim)])
        for d, n in enumerate(x.shape)
    )
    return x[index]


@st.composite
def concatenate_case(draw):
    """1 to 3 arrays, equal except along the joined axis."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(draw(SEEDS))
    args = []
    for _ in range(draw(st.integers(1, 3))):
        shape_i = list(shape)
        shape_i[axis] = draw(st.integers(1, 4))
        args.append(values(rng, tuple(shape_i)))
    return Case(tuple(args), {"axis": axis})


@st.composite
def stack_case(draw):
    """1 to 3 arrays of one shape, stacked along a new axis (anywhere, negative too)."""
    shape = draw(SHAPES)
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    rng = np.random.default_rng(draw(SEEDS))
    return Case(tuple(values(rng, shape) for _ in range(draw(st.integers(1, 3)))), {"axis": axis})


@st.composite
def diagonal_case(draw):
    """(..., n, m) with n and m independent (rectangular matrices too)."""
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    shape = batch + (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    rng = np.random.default_rng(draw(SEEDS))
    return Case((values(rng, shape),), {})


def gufunc_shapes(signature):
    """Shapes for a batched matrix op: core dims from the signature, batch dims broadcasting."""
    return hnp.mutually_broadcastable_shapes(signature=signature, min_dims=0, max_dims=2, max_side=4)


@st.composite
def matmul_case(draw):
    shapes = draw(gufunc_shapes("(n,k),(k,m)->(n,m)")).input_shapes
    rng = np.random.default_rng(draw(SEEDS))
    return Case(tuple(values(rng, s) for s in shapes), {})


@st.composite
def linear_case(draw, away_from_kink=False):
    """x (B, n), W (n, m), b (m,); n = 1 included, since linear takes another path there.

    ``away_from_kink``: b is then chosen so that every entry of x W + b is at least 0.2 away
    from 0, where relu has its kink (finite differences across it mean nothing).
    """
    batch, n, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(SEEDS))
    x, w, b = values(rng, (batch, n)), values(rng, (n, m)), values(rng, (m,))
    if away_from_kink:
        u = x @ w  # shift each column so that its entries are at least 0.2 from 0
        low, high = u.min(axis=0), u.max(axis=0)
        b = np.where(rng.random(m) < 0.5, 0.2 - low, -0.2 - high)
    return Case((x, w, b), {})


@st.composite
def solve_case(draw, triangular=False):
    """A (..., n, n) well conditioned, B (..., n, k); for a triangular solve, which triangle."""
    a_shape, b_shape = draw(gufunc_shapes("(n,n),(n,k)->(n,k)")).input_shapes
    rng = np.random.default_rng(draw(SEEDS))
    options = {"lower": draw(st.booleans())} if triangular else {}
    return Case((well_conditioned(rng, a_shape), values(rng, b_shape)), options)


@st.composite
def slogdet_case(draw):
    """Well conditioned (..., n, n) matrices, rows flipped at random so that det < 0 occurs."""
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    n = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(SEEDS))
    a = well_conditioned(rng, batch + (n, n)) * rng.choice([-1.0, 1.0], batch + (n, 1))
    return Case((a,), {})


# --- the table: every op, its minflow call, its autograd reference, its inputs ------------------
def logsumexp_reference(x, axis, keepdims):
    # Unshifted: our test values are small, so exp cannot overflow.
    return anp.log(anp.sum(anp.exp(x), axis=axis, keepdims=keepdims))


def softmax_reference(x, axis):
    return anp.exp(x) / anp.sum(anp.exp(x), axis=axis, keepdims=True)


def diagonal_reference(x):
    # x[..., i, i]; autograd's own diagonal VJP only supports axis1=-1, axis2=-2.
    i = np.arange(min(x.shape[-2:]))
    return x[..., i, i]


def broadcast_reference(x, shape):
    # autograd's broadcast_to VJP cannot remove new leading axes: add them first, as 1s.
    x = anp.reshape(x, (1,) * (len(shape) - len(x.shape)) + x.shape)
    return anp.broadcast_to(x, shape)


# autograd's VJPs of where and solve return the *broadcast* shape for an input that was
# broadcast (they have no unbroadcast), so these references broadcast their inputs first
# and let broadcast_to's VJP sum the gradient back.
def where_reference(a, b, condition):
    shape = np.broadcast_shapes(condition.shape, a.shape, b.shape)
    return anp.where(condition, broadcast_reference(a, shape), broadcast_reference(b, shape))


def solve_reference(a, b):
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = broadcast_reference(a, batch + a.shape[-2:])
    return anp.linalg.solve(a, broadcast_reference(b, batch + b.shape[-2:]))


SPECS = {
    # arithmetic, with broadcasting
    "add": Spec(ops.add, anp.add, broadcasting("real", "real")),
    "sub": Spec(ops.sub, anp.subtract, broadcasting("real", "real")),
    "mul": Spec(ops.mul, anp.multiply, broadcasting("real", "real")),
    "div": Spec(ops.div, anp.divide, broadcasting("real", "away_from_zero")),
    "neg": Spec(ops.neg, anp.negative, elementwise()),
    "pow": Spec(ops.power, lambda x, exponent: anp.power(x, exponent), power_case()),
    "matmul": Spec(ops.matmul, anp.matmul, matmul_case()),
    "linear": Spec(ops.linear, lambda x, w, b: anp.dot(x, w) + b, linear_case()),
    "linear_relu": Spec(
        ops.linear_relu, lambda x, w, b: anp.maximum(anp.dot(x, w) + b, 0.0), linear_case(away_from_kink=True)
    ),
    "affine": Spec(ops.affine, lambda x, t, s: x * anp.exp(s) + t, broadcasting("real", "real", "real")),
    "soft_clamp": Spec(
        ops.soft_clamp, lambda x, bound: bound * anp.tanh(x / bound), elementwise(bound=st.sampled_from([0.5, 2.0]))
    ),
    # elementwise functions
    "exp": Spec(ops.exp, anp.exp, elementwise()),
    "log": Spec(ops.log, anp.log, elementwise("positive")),
    "log1p": Spec(ops.log1p, anp.log1p, elementwise("above_minus_one")),
    "sqrt": Spec(ops.sqrt, anp.sqrt, elementwise("positive")),
    "tanh": Spec(ops.tanh, anp.tanh, elementwise()),
    "sin": Spec(ops.sin, anp.sin, elementwise()),
    "cos": Spec(ops.cos, anp.cos, elementwise()),
    "sigmoid": Spec(ops.sigmoid, lambda x: 1 / (1 + anp.exp(-x)), elementwise()),
    "softplus": Spec(ops.softplus, lambda x: anp.logaddexp(0.0, x), elementwise()),
    "relu": Spec(ops.relu, lambda x: anp.maximum(x, 0.0), elementwise("away_from_zero")),
    "leaky_relu": Spec(
        ops.leaky_relu,
        lambda x, slope: anp.where(x > 0, x, slope * x),
        elementwise("away_from_zero", slope=st.sampled_from([0.01, 0.1, 0.5])),
    ),
    "abs": Spec(ops.absolute, anp.abs, elementwise("away_from_zero")),
    "clip": Spec(ops.clip, lambda x, low, high: anp.clip(x, low, high), clip_case()),
    "where": Spec(
        lambda a, b, condition: ops.where(condition, a, b),
        where_reference,
        where_case(),
    ),
    # reductions
    "sum": Spec(ops.sum, anp.sum, reduction()),
    "mean": Spec(ops.mean, anp.mean, reduction()),
    "max": Spec(ops.max, anp.max, reduction("distinct")),
    "logsumexp": Spec(ops.logsumexp, logsumexp_reference, reduction()),
    "softmax": Spec(ops.softmax, softmax_reference, along_one_axis()),
    "cumsum": Spec(ops.cumsum, anp.cumsum, along_one_axis()),
    # shapes and indexing
    "reshape": Spec(ops.reshape, anp.reshape, reshape_case()),
    "transpose": Spec(ops.transpose, anp.transpose, transpose_case()),
    "broadcast_to": Spec(ops.broadcast_to, broadcast_reference, broadcast_to_case()),
    "getitem": Spec(lambda x, index: x[index], lambda x, index: x[index], getitem_case()),
    "take_along_axis": Spec(ops.take_along_axis, take_along_axis_reference, take_along_axis_case()),
    "concatenate": Spec(
        lambda *xs, axis: ops.concatenate(xs, axis=axis),
        lambda *xs, axis: anp.concatenate(xs, axis=axis),
        concatenate_case(),
    ),
    "stack": Spec(
        lambda *xs, axis: ops.stack(xs, axis=axis),
        lambda *xs, axis: anp.stack(xs, axis=axis),
        stack_case(),
    ),
    "diagonal": Spec(ops.diagonal, diagonal_reference, diagonal_case()),
    # linear algebra
    "solve": Spec(ops.solve, solve_reference, solve_case(), LINALG_RTOL),
    "solve_triangular": Spec(
        ops.solve_triangular,
        lambda a, b, lower: solve_reference(anp.tril(a) if lower else anp.triu(a), b),
        solve_case(triangular=True),
        LINALG_RTOL,
    ),
    "slogdet": Spec(ops.slogdet, lambda a: anp.linalg.slogdet(a)[1], slogdet_case(), LINALG_RTOL),
}

OP_NAMES = sorted(SPECS)


# --- helpers -------------------------------------------------------------------------------------
def assert_close(got, expected, rtol, what, case):
    """|got - expected| <= rtol * max(1, max|expected|), entrywise, with a readable failure.

    ``got`` may be a device array: both sides are compared as host copies."""
    got, expected = host(got), host(expected)
    assert got.shape == expected.shape, f"{what}: expected shape {expected.shape}, got {got.shape}\ninput: {case}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    error = float(np.max(np.abs(got - expected), initial=0.0))
    assert error <= rtol * scale, (
        f"{what}: max |got - expected| = {error:.3g} > {rtol:g} * {scale:.3g}\n"
        f"expected:\n{expected}\ngot:\n{got}\ninput: {case}"
    )


def device_options(options):
    """A case's options for minflow: host arrays in them (where's condition, getitem's index,
    take_along_axis' indices) moved to the default backend, keeping their integer or boolean
    dtype; numbers, slices, None and Ellipsis unchanged."""

    def move(value):
        if isinstance(value, np.ndarray):
            return device_ints(value)
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        return value

    return {name: move(value) for name, value in options.items()}


def minflow_value(spec, case, args=None):
    """The op's output as an array of the default backend, computed by minflow on constant
    tensors made from device copies of the (host) inputs."""
    args = case.args if args is None else args
    return spec.minflow(*[Tensor(device(x)) for x in args], **device_options(case.options)).data


def minflow_gradients(spec, case, g):
    """Backpropagate the (host) cotangent ``g`` through the op; host copies of the gradients."""
    inputs = [Tensor(device(x), requires_grad=True) for x in case.args]
    spec.minflow(*inputs, **device_options(case.options)).backward(device(g))
    return [host(x.grad) for x in inputs]


def autograd_gradient(spec, case, argnum, g):
    """HIPS autograd's VJP of the reference computation with respect to input ``argnum``."""
    vjp, _ = make_vjp(lambda *args: spec.reference(*args, **case.options), argnum)(*case.args)
    return vjp(g)


def draw_case_and_cotangent(spec, data):
    case = data.draw(spec.cases, label="case")
    rng = np.random.default_rng(data.draw(SEEDS, label="cotangent seed"))
    g = rng.normal(size=np.shape(spec.reference(*case.args, **case.options)))
    return case, g, rng


# --- the properties ----------------------------------------------------------------------------
def test_every_registered_op_has_a_spec():
    missing, stale = set(OPS) - set(SPECS), set(SPECS) - set(OPS)
    assert set(SPECS) == set(OPS), (
        f"ops without a spec here: {sorted(missing)}; specs of ops that do not exist: {sorted(stale)}"
    )


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data())
def test_forward_matches_numpy(name, data):
    spec = SPECS[name]
    case = data.draw(spec.cases, label="case")
    expected = np.asarray(spec.reference(*case.args, **case.options))  # autograd.numpy on arrays is NumPy
    got = minflow_value(spec, case)
    assert isinstance(got, backend.xp().ndarray) and got.dtype == np.float64, (
        f"{name}: expected a float64 ndarray, got {type(got).__name__} of {getattr(got, 'dtype', None)}"
    )
    assert_close(got, expected, FORWARD_RTOL, f"{name} forward", case)


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data())
def test_vjp_matches_autograd(name, data):
    spec = SPECS[name]
    case, g, _ = draw_case_and_cotangent(spec, data)
    for argnum, got in enumerate(minflow_gradients(spec, case, g)):
        expected = autograd_gradient(spec, case, argnum, g)
        assert_close(got, expected, spec.rtol, f"{name}: gradient of input {argnum}", case)


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data())
def test_vjp_matches_central_differences(name, data):
    spec = SPECS[name]
    case, g, rng = draw_case_and_cotangent(spec, data)
    gradients = minflow_gradients(spec, case, g)
    for argnum, x in enumerate(case.args):
        v = rng.normal(size=x.shape)

        def inner_product_with_g(step, argnum=argnum, x=x, v=v):  # <g, f(..., x + step * v, ...)>
            args = list(case.args)
            args[argnum] = x + step * v
            return float(np.sum(g * host(minflow_value(spec, case, args))))

        finite_difference = (inner_product_with_g(EPS) - inner_product_with_g(-EPS)) / (2 * EPS)
        autodiff = float(np.sum(gradients[argnum] * v))
        # The scale is the size of the terms being summed on each side, so that a sum which
        # cancels to nearly 0 does not make the tolerance vanish.
        scale = float(np.sum(np.abs(g * host(minflow_value(spec, case)))) + np.sum(np.abs(gradients[argnum] * v)))
        assert abs(finite_difference - autodiff) <= FD_RTOL * scale, (
            f"{name}, input {argnum}: <g, J v> by central differences = {finite_difference!r}, "
            f"<vjp(g), v> = {autodiff!r} (tolerance {FD_RTOL * scale:.3g})\ninput: {case}"
        )


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data())
def test_float32_gradients_keep_dtype_and_shape(name, data):
    """A float32 computation stays float32 all the way back: no op promotes a gradient."""
    spec = SPECS[name]
    case, g, _ = draw_case_and_cotangent(spec, data)
    inputs = [Tensor(device(x, np.float32), requires_grad=True) for x in case.args]
    y = spec.minflow(*inputs, **device_options(case.options))
    assert y.dtype == np.float32, f"{name}: float32 inputs gave a {y.dtype} output\ninput: {case}"
    y.backward(device(g, np.float32))
    for argnum, x in enumerate(inputs):
        assert x.grad.dtype == np.float32 and x.grad.shape == x.shape, (
            f"{name}, input {argnum}: expected a float32 gradient of shape {x.shape}, "
            f"got {x.grad.dtype} of shape {x.grad.shape}\ninput: {case}"
        )


@given(data=st.data())
def test_max_splits_the_gradient_equally_between_ties(data):
    """Where several entries share the maximum, each gets g / (number of ties), as in autograd."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), label="shape")
    axis = data.draw(any_axes(len(shape)), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # three distinct values: many ties
    g = rng.normal(size=np.shape(np.max(x, axis=axis, keepdims=keepdims)))
    case = Case((x,), {"axis": axis, "keepdims": keepdims})
    (got,) = minflow_gradients(SPECS["max"], case, g)
    expected = autograd_gradient(SPECS["max"], case, 0, g)
    assert_close(got, expected, RTOL, "max with ties", case)


def test_max_tie_example():
    x = Tensor(device([1.0, 3.0, 3.0]), requires_grad=True)
    ops.max(x).backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 0.5, 0.5])


# --- the getitem VJP's two paths and the joining ops' default axis (found by the mutation pass) ---------------
@pytest.mark.parametrize(
    ("index", "basic"),
    [
        (1, True),
        (slice(1, None), True),
        (Ellipsis, True),
        (None, True),
        ((None, 0), True),
        ((Ellipsis, slice(None, None, 2)), True),
        (np.array([0, 0, 2]), False),
        ((slice(None), np.array([1, 1])), False),
        (np.array([True, False, True]), False),
    ],
)
def test_getitem_vjp_scatters_only_for_index_arrays(monkeypatch, index, basic):
    """Basic indexing (ints, slices, ..., None) picks each entry at most once, so its VJP is a plain
    assignment; only index arrays, which may repeat entries, need the slower scatter-add (on a GPU a separate
    atomic kernel). Both give the same numbers, so only the path taken tells them apart."""
    scattered = []
    real = backend.scatter_add
    monkeypatch.setattr(backend, "scatter_add", lambda *args: scattered.append(1) or real(*args))
    x = Tensor(device(np.arange(12.0).reshape(3, 4)), requires_grad=True)
    parts = index if isinstance(index, tuple) else (index,)
    on_device = tuple(device_ints(part) if isinstance(part, np.ndarray) else part for part in parts)
    x[on_device if isinstance(index, tuple) else on_device[0]].sum().backward()
    assert bool(scattered) is not basic, f"index {index!r}: scatter_add {'not ' * basic}expected"
    expected = np.zeros((3, 4))
    np.add.at(expected, index, 1.0)
    np.testing.assert_array_equal(host(x.grad), expected)  # counts of 0, 1 or 2: exact


def test_concatenate_and_stack_join_along_the_first_axis_by_default():
    a, b = Tensor(device([[1.0, 2.0]])), Tensor(device([[3.0, 4.0]]))
    np.testing.assert_array_equal(host(ops.concatenate([a, b]).data), [[1.0, 2.0], [3.0, 4.0]])
    assert ops.stack([a, b]).shape == (2, 1, 2)
