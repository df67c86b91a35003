"""check_transformer: the Transformer contract (``minflow/flows/transformers.py``), checked numerically.

    from minflow.testing import check_transformer
    check_transformer(MyTransformer())      # raises AssertionError naming what is wrong

With random theta (N(0, theta_scale^2), any real theta must be valid) and random inputs in
the domain, in this order (the first property that fails is the one reported):

1. **shapes**: theta's last axis is checked (a wrong length raises ValueError); results have
   the broadcast shape of h and theta without its last axis; a shared theta (D, P) gives
   what the same theta repeated per sample (B, D, P) gives;
2. **round trip** both ways, g^{-1}(g(h)) = h and g(g^{-1}(z)) = z;
3. **inverse log-derivative** is minus the forward one at the matching point;
4. **log-derivative vs finite differences** (see below);
5. **strictly increasing**: along a sweep of the domain, g(.; theta) increases at every step;
6. **theta = 0 is the identity**: g(h; 0) = h, log g'(h; 0) = 0, and the same for the inverse;
7. **domain**: the map stays inside its domain, a finite edge maps to itself, and input
   outside a bounded domain raises ValueError (both directions); far out on an unbounded
   side, values and log-derivatives stay finite.

Finite differences, elementwise. A transformer acts on each coordinate alone (its Jacobian
is diagonal), so shifting *every* coordinate by e at once and taking
(g(h + e) - g(h - e)) / 2e gives every coordinate's derivative in two calls, exactly as if
each were shifted alone. By the mean value theorem this secant is g'(xi) for some xi in
[h - e, h + e]. Where g is smooth it is g'(h) up to e^2 |g'''| / 6 (truncation) plus
u |g| / e (rounding, u the unit roundoff); at a knot of a spline or a piecewise-linear map,
where g' or g'' jumps, it lies between the derivatives on either side. So the check is:
log |secant| lies between the smallest and the largest of log g' at h - e, h, h + e, widened
by the tolerance. That leaves rounding: h + e and g(h + e) are rounded, so log|secant| is
off by about u (|h| + |g(h)| / g'(h)) / e. With the step and tolerance of ``check_flow``
(float64: e = 2e-6, 1e-6; float32: 3e-3, 2e-2) this stays fifty times below the tolerance
while |h| + |g| / g' <= 300 in float64 and <= 15 in float32 (|h|, |g| <= 6 with g' >= 0.04,
resp. g' >= 1; measured in ``tests/test_checker_limits.py``), whatever the size of g'
itself; a flat map far from 0 (g' = 1e-3 at |g| = 5) in float32 can fail although
correct: check it in float64. A log-derivative off by more than the tolerance (beyond its
own change across the stencil) fails.

Tolerances, all from ``check_flow``'s table (their reasons are given there): the
finite-difference one for property 4, the round-trip one for every other comparison (each
compares two exact computations, or a computation with its inverse).
"""

import math

from .. import backend
from ..autodiff import Tensor, no_grad
from .flow_checks import _tolerances


def _fail(transformer, prop, message):
    raise AssertionError(f"{type(transformer).__name__}: {prop} fails; {message}")


def _worst(got, expected, tolerance):
    """(index of the worst entry, its error) of |got - expected| / (1 + |expected|), or None if all pass."""
    xp = backend.array_module(got)
    error = xp.abs(got - expected) / (1 + xp.abs(expected))
    error = xp.where(xp.isnan(error), xp.inf, error).reshape(-1)
    worst = int(xp.argmax(error))
    return None if float(error[worst]) <= tolerance else (worst, float(error[worst]))


def _expect_close(transformer, prop, got, expected, tolerance, where):
    if got.shape != expected.shape:
        _fail(transformer, prop, f"shape {tuple(got.shape)} != expected {tuple(expected.shape)}")
    bad = _worst(got, expected, tolerance)
    if bad is not None:
        index, error = bad
        at = float(where.reshape(-1)[index % where.size])
        _fail(transformer, prop, f"off by {error:.3g} (tolerance {tolerance:.3g}) at input {at!r}")


def _inside(domain, shape, rng, dtype):
    """Points of the domain: N(0, 2^2) on the real line, uniform on the inner 90% of (a, b)
    (so a finite-difference step never leaves it), 0.05 + Exp(1) away from the edge of a half line."""
    low, high = domain
    if math.isinf(low) and math.isinf(high):
        return (2.0 * rng.standard_normal(shape)).astype(dtype)
    if math.isinf(low) or math.isinf(high):
        distance = 0.05 + rng.standard_exponential(shape)
        return (low + distance if math.isinf(high) else high - distance).astype(dtype)
    return (low + (high - low) * (0.05 + 0.9 * rng.random(shape))).astype(dtype)


def _sweep(domain, n, dim, xp, dtype):
    """n increasing points of the domain, the same for each of ``dim`` coordinates: (n, dim)."""
    low, high = domain
    low = -6.0 if math.isinf(low) else low
    high = 6.0 if math.isinf(high) else high
    return xp.repeat(xp.linspace(low, high, n, dtype=dtype)[:, None], dim, axis=1)


def check_transformer(transformer, n=16, dim=3, seed=0, theta_scale=1.0, dtype=None, tolerance=None):
    """Check the Transformer contract (see the module docstring); raises AssertionError naming the property.

    ``n`` samples of ``dim`` coordinates; theta ~ N(0, theta_scale^2), per sample (n, dim, P).
    Tolerances default by dtype like :func:`check_flow`'s (``tolerance`` overrides the
    finite-difference one; round trips use the round-trip tolerance of that dtype).
    """
    dtype = backend.xp().dtype(dtype or backend.get_default_dtype())
    eps, default_tolerance, round_trip = _tolerances(dtype)
    tolerance = tolerance or default_tolerance
    rng = backend.rng(seed)
    xp = backend.xp()
    params = transformer.params_per_dim
    theta = (theta_scale * rng.standard_normal((n, dim, params))).astype(dtype)
    h = _inside(transformer.domain, (n, dim), rng, dtype)
    z_other = _inside(transformer.domain, (n, dim), rng, dtype)  # the range is the domain

    def forward(x, t=theta):
        values, log_derivative = transformer.forward(Tensor(x), Tensor(t))
        return values.data, log_derivative.data

    def inverse(y, t=theta):
        values, log_derivative = transformer.inverse(Tensor(y), Tensor(t))
        return values.data, log_derivative.data

    with no_grad():
        # 1. shapes and broadcasting
        try:
            transformer.forward(Tensor(h), Tensor(xp.zeros((n, dim, params + 1), dtype=dtype)))
        except ValueError:
            pass
        else:
            _fail(transformer, "shapes", f"theta with {params + 1} values per coordinate (not {params}) did not raise")
        z, log_derivative = forward(h)
        for name, array in (("values", z), ("log-derivative", log_derivative)):
            if array.shape != (n, dim) or array.dtype != dtype:
                _fail(
                    transformer, "shapes", f"{name} {array.shape} {array.dtype} for h ({n}, {dim}), theta {theta.shape}"
                )
        for name, array in zip(("values", "log-derivative"), forward(h[0], theta)):
            if array.shape != (n, dim):
                _fail(transformer, "shapes", f"{name} {array.shape} for h ({dim},) and theta {theta.shape}")
        shared = forward(h, theta[0])
        repeated = forward(h, xp.ascontiguousarray(xp.broadcast_to(theta[0], theta.shape)))
        _expect_close(
            transformer, "shapes (shared theta == theta repeated per sample)", shared[0], repeated[0], round_trip, h
        )
        _expect_close(
            transformer, "shapes (shared theta == theta repeated per sample)", shared[1], repeated[1], round_trip, h
        )

        # 2. and 3. round trips and the inverse's log-derivative
        h_back, inverse_log_derivative = inverse(z)
        _expect_close(transformer, "round trip inverse(forward(h)) == h", h_back, h, round_trip, h)
        _expect_close(
            transformer,
            "inverse log-derivative == -forward log-derivative",
            inverse_log_derivative,
            -log_derivative,
            round_trip,
            h,
        )
        _expect_close(
            transformer,
            "round trip forward(inverse(z)) == z",
            forward(inverse(z_other)[0])[0],
            z_other,
            round_trip,
            z_other,
        )

        # 4. log-derivative vs central differences, every coordinate at once
        secant = (forward(h + eps)[0] - forward(h - eps)[0]) / (2 * eps)
        log_secant = xp.log(xp.abs(secant))
        ends = xp.stack([forward(h - eps)[1], log_derivative, forward(h + eps)[1]])
        low, high = ends.min(axis=0) - tolerance, ends.max(axis=0) + tolerance
        outside = ~((log_secant >= low) & (log_secant <= high))  # NaN counts as outside
        if bool(outside.any()):
            i = int(xp.argmax(outside.reshape(-1)))
            _fail(
                transformer,
                "log-derivative == log|finite differences|",
                f"at input {float(h.reshape(-1)[i])!r}: log-derivative {float(log_derivative.reshape(-1)[i])!r}, "
                f"log|secant| {float(log_secant.reshape(-1)[i])!r} (step {eps}, tolerance {tolerance})",
            )

        # 5. strictly increasing along a sweep of the domain, for each sample's theta
        sweep = _sweep(transformer.domain, 64, dim, xp, dtype)
        for b in range(min(n, 4)):
            values = forward(sweep, theta[b])[0]
            steps = values[1:] - values[:-1]
            if not bool((steps > 0).all()):
                i = int(xp.argmin(steps.reshape(-1))) // dim
                _fail(
                    transformer,
                    "strictly increasing",
                    f"g({float(sweep[i + 1, 0])!r}) - g({float(sweep[i, 0])!r}) = {float(steps.min())!r} <= 0",
                )

        # 6. theta = 0 is the identity, both ways
        zero = xp.zeros((dim, params), dtype=dtype)
        for direction, run in (("forward", forward), ("inverse", inverse)):
            values, log_derivative0 = run(h, zero)
            _expect_close(transformer, f"theta = 0 is the identity ({direction} values)", values, h, round_trip, h)
            _expect_close(
                transformer,
                f"theta = 0 is the identity ({direction} log-derivative)",
                log_derivative0,
                0 * h,
                round_trip,
                h,
            )

        # 7. the domain
        _check_domain(transformer, forward, inverse, theta, z, dtype, xp, round_trip)


def _check_domain(transformer, forward, inverse, theta, z, dtype, xp, round_trip):
    low, high = transformer.domain
    n, dim = theta.shape[:2]
    if not bool(((z >= low) & (z <= high)).all()):
        _fail(
            transformer,
            "domain",
            f"forward left the domain {transformer.domain}: values in [{float(z.min())}, {float(z.max())}]",
        )
    width = high - low
    for edge, outward in ((low, -1.0), (high, 1.0)):
        if math.isinf(edge):
            far = xp.full((n, dim), outward * 100.0, dtype=dtype)
            for direction, run in (("forward", forward), ("inverse", inverse)):
                values, log_derivative = run(far)
                if not bool(xp.isfinite(values).all() and xp.isfinite(log_derivative).all()):
                    _fail(transformer, "domain", f"{direction} at {outward * 100.0} is not finite")
            continue
        at_edge = xp.full((n, dim), edge, dtype=dtype)
        for direction, run in (("forward", forward), ("inverse", inverse)):
            _expect_close(
                transformer,
                f"domain ({direction} maps the edge {edge} to itself)",
                run(at_edge)[0],
                at_edge,
                round_trip,
                at_edge,
            )
            if math.isfinite(width):
                beyond = at_edge + outward * 0.1 * width
                try:
                    run(beyond)
                except ValueError:
                    continue
                _fail(
                    transformer,
                    "domain",
                    f"{direction} at {edge + outward * 0.1 * width}, outside {transformer.domain}, "
                    "did not raise ValueError",
                )
