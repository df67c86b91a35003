"""check_flow: the properties every flow must have, checked numerically.

A student who writes a new flow verifies it with one call::

    from minflow.testing import check_flow
    check_flow(MyFlow(dim=3))          # raises AssertionError naming what is wrong

``check_flow`` tests the properties every flow must have:

1. **round trip** both ways: f^{-1}(f(x)) = x and f(f^{-1}(z)) = z;
2. **log-det**: the forward log-det equals log|det J| of a central-difference Jacobian;
3. **inverse log-det** is minus the forward one at the matching point;
4. **batch independence**: a sample's output does not depend on the other samples;
5. **gradients**: the engine's gradient of a flow loss matches finite differences on a
   few parameters.

A conditional flow (``context_dim`` C > 0) is checked at fixed contexts: 1-4 hold for
f(.; c) with c held fixed (the Jacobian and its log-det are in x only), each sample with its
own context row; then 5 adds the gradient with respect to the context itself, and a check
that the context changes z at all (a conditioner that never reads it passes everything else).

Finite differences, and why the tolerances are what they are: the central difference
(f(x + e) - f(x - e)) / 2e has truncation error O(e^2 f''') and rounding error
O(u |f| / e), with u the unit roundoff (1.1e-16 in float64, 6e-8 in float32). The sum is
smallest near e = u^(1/3): about 5e-6 in float64 (error ~1e-10 relative) and 4e-3 in
float32 (error ~1e-5). float64 uses e = 2e-6, a little below that optimum, because splines
are only once continuously differentiable at their knots, and there the error grows like
e |f''|. Every comparison is |got - expected| / (1 + |expected|) <= tolerance: absolute
near zero, relative for large values. Measured at these steps (``tests/test_checker_limits.py``
tests each margin), the tolerances sit above the checks' own errors by

- log-det: smooth maps (example flows without spline knots, D = 3) err by at most ~1e-9
  in float64 and ~2e-4 in float32: margins of a thousand and of a hundred. A stencil that
  straddles a spline knot errs more (up to ~5e-8 in float64, a margin of 20), and in float32
  a piecewise-linear map, whose derivative jumps, can fail: check those in float64;
- gradients: at most ~1e-8 in float64 and ~2e-3 in float32 on smooth flows (a hundred and
  ten), which is why float32 gradients are better compared with float64 ones;
- round trips: exact inverses come back within ~1e-14 (float64) and ~3e-6 (float32).

Finite differences assume smoothness: example conditioners use tanh, not ReLU, whose kinks
would make a step of 2e-6 straddle a corner.
"""

import math

from .. import backend
from ..autodiff import Tensor, no_grad, ops, reverse_topological_order
from ..flows.base import call_with_context

# (finite-difference step, tolerance for the log-det and gradient checks, round-trip tolerance)
# Why each number (measured margins in the module docstring):
#   step:       near the optimum u^(1/3) of a central difference (5e-6 / 4e-3); float64's a little
#               below it, so a stencil that straddles a spline knot stays short.
#   tolerance:  finite differences of smooth maps err by ~1e-9 / ~2e-4 in log-det (a thousand /
#               a hundred times less) and ~1e-8 / ~2e-3 in gradients (a hundred / ten times less).
#   round trip: exact inverses come back within ~1e-14 / ~3e-6 (10^6 / 300 times less); the
#               iterative inverses stop at 1e-10 (ContractiveResidual; 100 times less) and 1e-12
#               (Planar) in float64, at 64 u (1 + max|z|) ~ 4e-5 in float32 (25 times less). Also
#               used for the inverse log-det and batch independence, exact computations too.
_TOLERANCES = {"float64": (2e-6, 1e-6, 1e-8), "float32": (3e-3, 2e-2, 1e-3)}


def _tolerances(dtype):
    return _TOLERANCES[backend.xp().dtype(dtype).name]


def numerical_jacobian(f, x, eps=None):
    """Per-sample central-difference Jacobian of a batched map.

    ``f`` maps an array (B, *event_in) to an array (B, *event_out); ``x`` is (B, *event_in).
    Returns (B, m, n) with m, n the event sizes: J[b, i, j] = d f(x)[b, i] / d x[b, j].
    Coordinate j of *every* sample is perturbed at once, which is exact only for a map
    whose samples do not interact (the batch-independence property), and costs 2n calls.
    """
    x = x.data if isinstance(x, Tensor) else x
    eps = eps or _tolerances(x.dtype)[0]
    batch, n = x.shape[0], math.prod(x.shape[1:])
    flat = x.reshape(batch, n)
    columns = []
    for j in range(n):
        step = backend.array_module(x).zeros_like(flat)
        step[:, j] = eps
        plus = f((flat + step).reshape(x.shape)).reshape(batch, -1)
        minus = f((flat - step).reshape(x.shape)).reshape(batch, -1)
        columns.append((plus - minus) / (2 * eps))
    return backend.array_module(x).stack(columns, axis=-1)


def sample_inputs(flow, n=16, seed=0):
    """``n`` inputs inside the flow's domain, (n, *event_shape), in the flow's dtype.

    Real line: N(0, 1.5^2), wide enough to reach spline tails. Interval (a, b): uniform on
    its inner 90%, so that a finite-difference step never leaves the domain.
    """
    if flow.event_shape is None:
        raise ValueError(f"{type(flow).__name__} has no event_shape; pass inputs explicitly")
    rng = backend.rng(seed, flow.array_module())
    shape = (n,) + tuple(flow.event_shape)
    low, high = flow.input_domain
    dtype = flow.float_dtype()
    if math.isinf(low) and math.isinf(high):
        return (1.5 * rng.standard_normal(shape)).astype(dtype)
    width = high - low
    return (low + width * (0.05 + 0.9 * rng.random(shape))).astype(dtype)


def _fail(prop, flow, error, worst, tolerance):
    raise AssertionError(
        f"{type(flow).__name__}: {prop} fails; worst sample {worst} is off by {error:.3g} (tolerance {tolerance:.3g})"
    )


def _check_close(prop, flow, got, expected, tolerance):
    """Per-sample max |got - expected| / (1 + |expected|) <= tolerance, else AssertionError."""
    xp = backend.array_module(got)
    got, expected = xp.asarray(got), xp.asarray(expected)
    if got.shape != expected.shape:
        raise AssertionError(f"{type(flow).__name__}: {prop}: shape {got.shape} != expected {expected.shape}")
    batch = got.shape[0] if got.ndim else 1
    error = (xp.abs(got - expected) / (1 + xp.abs(expected))).reshape(batch, -1).max(axis=1)
    error = xp.where(xp.isnan(error), xp.inf, error)
    worst = int(xp.argmax(error))
    if not float(error[worst]) <= tolerance:
        _fail(prop, flow, float(error[worst]), worst, tolerance)


def sample_contexts(flow, n=16, seed=0):
    """``n`` contexts (n, C) for a conditional flow: N(0, 1) draws, in the flow's dtype."""
    rng = backend.rng(seed, flow.array_module())
    return rng.standard_normal((n, flow.context_dim)).astype(flow.float_dtype())


def check_flow(flow, x=None, n=8, seed=0, tolerance=None, inverse_tolerance=None, gradients=True, context=None):
    """Check every flow property (see the module docstring); raises AssertionError.

    ``x`` defaults to ``n`` inputs from :func:`sample_inputs`. Tolerances default by dtype;
    a flow with an iterative inverse passes its own ``inverse_tolerance``. A conditional flow
    is checked at ``context`` (B, C), one row per input; by default at
    :func:`sample_contexts`.
    """
    x = sample_inputs(flow, n, seed) if x is None else (x.data if isinstance(x, Tensor) else x)
    _, default_tol, default_inverse_tol = _tolerances(x.dtype)
    tolerance = tolerance or default_tol
    inverse_tolerance = inverse_tolerance or default_inverse_tol
    batch = x.shape[0]
    c = None
    if flow.context_dim:
        c = sample_contexts(flow, batch, seed + 2) if context is None else context
        c = c.data if isinstance(c, Tensor) else c

    with no_grad():
        z, log_det = call_with_context(flow.forward, x, c)  # the first call also runs any data-dependent init
        if tuple(z.shape[:1]) != (batch,) or tuple(log_det.shape) != (batch,):
            raise AssertionError(
                f"{type(flow).__name__}: shapes: got z {z.shape} and log_det {log_det.shape} for x {x.shape}"
            )
        x_back, inverse_log_det = call_with_context(flow.inverse, z, c)
        _check_close("round trip inverse(forward(x)) == x", flow, x_back.data, x, inverse_tolerance)
        _check_close(
            "inverse log-det == -forward log-det", flow, inverse_log_det.data, -log_det.data, inverse_tolerance
        )

        # The other way round, on latent points that are not the images of x themselves.
        other = sample_inputs(flow, batch, seed + 1) if flow.event_shape is not None else x[::-1]
        z_other = call_with_context(flow.forward, other, c)[0]
        x_other = call_with_context(flow.inverse, z_other, c)[0]
        _check_close(
            "round trip forward(inverse(z)) == z",
            flow,
            call_with_context(flow.forward, x_other, c)[0].data,
            z_other.data,
            inverse_tolerance,
        )

        jacobian = numerical_jacobian(lambda a: call_with_context(flow.forward, a, c)[0].data, x)
        numeric = backend.array_module(jacobian).linalg.slogdet(jacobian)[1]
        _check_close("log-det == log|det J| of finite differences", flow, log_det.data, numeric, tolerance)

        reversed_z, reversed_log_det = call_with_context(flow.forward, x[::-1], None if c is None else c[::-1])
        _check_close(
            "batch independence (forward of the reversed batch)", flow, reversed_z.data[::-1], z.data, inverse_tolerance
        )
        _check_close(
            "batch independence (log-det of the reversed batch)",
            flow,
            reversed_log_det.data[::-1],
            log_det.data,
            inverse_tolerance,
        )
        single_z, _ = call_with_context(flow.forward, x[:1], None if c is None else c[:1])
        _check_close("batch independence (a batch of one)", flow, single_z.data, z.data[:1], inverse_tolerance)

    if gradients and flow.parameters():
        # 5. gradients of a flow loss: 0.5 |z|^2 - log-det, the NLL up to a constant

        def loss():
            z, log_det = call_with_context(flow.forward, x, c_tensor)
            flat = ops.reshape(z, (batch, -1))
            return ops.sum(0.5 * flat * flat) - ops.sum(log_det)

        names, tensors = zip(*flow.named_parameters())
        c_tensor = None
        if c is not None:  # the context too: d loss / d c, through every conditioner that reads it
            c_tensor = Tensor(c.copy(), requires_grad=True)
            names, tensors = names + ("context",), tensors + (c_tensor,)
        try:
            check_gradients(loss, *tensors, seed=seed, tolerance=tolerance, names=names)
        except AssertionError as error:
            raise AssertionError(f"{type(flow).__name__}: {error}") from None
    if c is not None:
        _check_context_matters(flow, x, c, z.data, inverse_tolerance)


def _check_context_matters(flow, x, c, z, tolerance):
    """A conditional flow whose z does not change when its context does ignores the context."""
    with no_grad():
        moved = flow.forward(x, c + 1.0)[0].data
    xp = backend.array_module(z)
    change = float(xp.max(xp.abs(moved - z)))
    if not change > tolerance:
        raise AssertionError(
            f"{type(flow).__name__}: the context changes nothing: z moved by {change:.3g} when every context "
            "entry moved by 1 (a conditioner that never reads its context? a freshly built layer starts as "
            "the identity and ignores it too: perturb its parameters before checking)"
        )


def check_gradients(fn, *tensors, n_coords=3, seed=0, eps=None, tolerance=None, names=None):
    """The engine's gradient of the scalar ``fn()`` w.r.t. each tensor, against central differences.

    ``fn`` takes no arguments and computes a one-element Tensor from ``tensors`` (which
    must require grad). ``n_coords`` coordinates of each tensor, drawn without repetition
    (all of them for a tensor that has no more), are perturbed in place and restored. The
    comparison is the one :func:`check_flow` makes, |autodiff - numeric| / (1 + |numeric|)
    <= tolerance, for every checked coordinate of every tensor; the AssertionError names
    the worst one: the tensor (its index, ``names[index]`` if given, and shape) and the
    coordinate.
    """
    if not tensors:
        raise ValueError("check_gradients needs at least one tensor")
    for t in tensors:
        t.grad = None
    fn().backward()
    xp = backend.array_module(tensors[0].data)
    rng = backend.rng(seed, xp)
    default_eps, default_tol, _ = _tolerances(tensors[0].dtype)
    eps, tolerance = eps or default_eps, tolerance or default_tol
    worst, failures, checked = None, 0, 0  # worst: (error, index, coordinate, autodiff, numeric)
    with no_grad():
        for index, tensor in enumerate(tensors):
            if tensor.grad is None:
                raise AssertionError(f"{_tensor_name(index, tensor, names)} got no gradient from backward()")
            for k in _coordinates(tensor.size, n_coords, rng, xp):
                where = _unravel(k, tensor.shape)
                saved = tensor.data[where].copy()
                tensor.data[where] = saved + eps
                plus = float(fn().data)
                tensor.data[where] = saved - eps
                minus = float(fn().data)
                tensor.data[where] = saved
                numeric = (plus - minus) / (2 * eps)
                analytic = float(tensor.grad[where])
                error = abs(analytic - numeric) / (1 + abs(numeric))
                error = math.inf if math.isnan(error) else error
                checked += 1
                failures += not error <= tolerance
                if worst is None or error > worst[0]:
                    worst = (error, index, where, analytic, numeric)
    for t in tensors:
        t.grad = None
    error, index, where, analytic, numeric = worst
    if failures:
        raise AssertionError(
            f"gradient of {_tensor_name(index, tensors[index], names)} fails ({failures} of {checked} checked "
            f"coordinates); worst coordinate {where}: autodiff {analytic:.10g} vs finite differences {numeric:.10g}, "
            f"off by {error:.3g} (tolerance {tolerance:.3g})"
        )


def _tensor_name(index, tensor, names):
    name = f" {names[index]!r}" if names is not None else ""
    return f"tensor {index}{name} (shape {tuple(tensor.shape)})"


def _coordinates(size, n_coords, rng, xp):
    """Flat positions of ``n_coords`` distinct coordinates (all of them if the tensor has no more).

    Distinct, so that a tensor of three coordinates checked at three is checked everywhere; the
    argsort of uniform draws is a uniform random order (the CuPy Generator has no ``choice``).
    """
    if size <= n_coords:
        return list(range(size))
    return backend.to_numpy(xp.argsort(rng.random(size)))[:n_coords].tolist()


def graph_nbytes(tensor):
    """Bytes of every array in the graph that made ``tensor``: each recorded tensor's data plus
    what each node saved for its VJP (views counted at full size, so it overestimates).

    A yardstick for memory: a train step's peak should be of this order, whatever the step.
    """
    total = 0
    for t in reverse_topological_order(tensor):
        total += t.data.nbytes
        if t.node is not None:
            total += sum(a.nbytes for a in t.node.saved if hasattr(a, "nbytes"))
    return total


def _unravel(k, shape):
    """The multi-index of flat position k in a C-ordered array of ``shape``."""
    where = []
    for n in reversed(shape):
        k, r = divmod(k, n)
        where.append(r)
    return tuple(reversed(where))
