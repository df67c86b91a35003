"""Numerically delicate branches, across the parameter range hypothesis can reach (float64).

A round trip can only be as accurate as the map is well conditioned: if a map contracts a
neighbourhood by a factor k, the rounding of its output (u |y|, u = 2.2e-16) comes back
multiplied by 1/k. So each bound below is C u times the map's own condition, with C
measured (the worst seen over thousands of random draws, then a margin of 4 or more); where the
condition is O(1) that is far below 1e-12, which is the claim the issue asks for, and where it is
not, the test says what the map itself allows, so that a formula that cancels (losing digits
the map does not lose) fails.
"""

import math

import numpy as np
import pytest
from helpers import device, host
from hypothesis import example, given
from hypothesis import strategies as st

from minflow.flows.planar import Planar, Radial, _column, _norm
from minflow.flows.sinh_arcsinh import SinhArcsinhTransformer
from minflow.flows.splines import PiecewiseLinearTransformer, SplineTransformer, _knots
from minflow.flows.transformers import AffineTransformer

EPS = float(np.finfo(np.float64).eps)


def inverse_softplus(y):
    """The raw parameter whose softplus is y > 0 (stable for tiny and huge y)."""
    return y + math.log(-math.expm1(-y))


def unit_rows(rng, n, dim):
    d = rng.standard_normal((n, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


# --- radial: the stable root formula at extreme alpha, beta --------------------------------------
def radial(dim, log_alpha, log_gap, z0_scale, seed):
    flow = Radial(dim, seed=seed)
    flow.alpha_raw.data = device([inverse_softplus(10.0**log_alpha)])
    flow.beta_raw.data = device([inverse_softplus(10.0**log_gap)])
    flow.z0.data = device(z0_scale * np.random.default_rng(seed).standard_normal(dim))
    return flow


def check_radial_round_trip(flow, z):
    """z -> x = g(z) (inverse) -> forward(x) recovers z and minus the log-det, within the map's conditioning.

    With r = |z - z0| and R = rho(r) = |x - z0|, the relative condition number of r <- R is
    kappa = R / (r rho'(r)) = (gap + r)(alpha + r) / (r^2 + 2 alpha r + alpha gap) (up to
    sqrt(gap / alpha) / 2), and R itself is known to u (|x| + |z0|) / R relative. So
    delta = u (1 + (|x| + |z0|) / R)(1 + kappa) is the relative accuracy of r that any formula
    can reach; the log-det moves by at most ~D |dr / r|. Measured worst: 0.5 and 8 times that.
    """
    x, log_det_inverse = flow.inverse(z)
    z_back, log_det_forward = flow.forward(x.data)
    alpha, _, gap = (float(host(t).item()) for t in flow.constrained())
    z0, z_host, x_host = host(flow.z0), host(z), host(x)
    r = np.linalg.norm(z_host - z0, axis=1)
    big_r = r * (gap + r) / (alpha + r)
    kappa = (gap + r) * (alpha + r) / (r * r + 2 * alpha * r + alpha * gap)
    delta = EPS * (1 + (np.abs(z0).max() + np.abs(x_host).max(axis=1)) / big_r) * (1 + kappa)
    error = np.abs(host(z_back) - z_host).max(axis=1)
    assert np.all(error <= 32 * (EPS * np.abs(z_host).max(axis=1) + delta * r)), (error, delta * r)
    log_det_error = np.abs(host(log_det_forward) + host(log_det_inverse))
    dim = z.shape[1]
    assert np.all(log_det_error <= 64 * delta * (dim + np.abs(host(log_det_inverse)))), (log_det_error, delta)
    return delta


@given(
    st.integers(1, 4),
    st.floats(-12, 8),
    st.floats(-12, 8),
    st.sampled_from([0.0, 1e-3, 1.0, 1e3]),
    st.floats(-12, 10),
    st.integers(0, 2**16),
)
def test_radial_round_trip_at_extreme_alpha_and_beta(dim, log_alpha, log_gap, z0_scale, log_r, seed):
    flow = radial(dim, log_alpha, log_gap, z0_scale, seed)
    rng = np.random.default_rng(seed)
    r = 10.0 ** (log_r + rng.uniform(-1, 1, (4, 1)))
    z = device(host(flow.z0) + unit_rows(rng, 4, dim) * r)
    delta = check_radial_round_trip(flow, z)
    if z0_scale == 0.0 and np.all(delta <= 3e-14):  # well conditioned (kappa <~ 100): the 1e-12
        np.testing.assert_allclose(host(flow.forward(flow.inverse(z)[0].data)[0]), host(z), rtol=1e-12)


def test_the_radial_check_catches_the_cancelling_forms(monkeypatch):
    """x = z + beta h (z - z0) cancels when gap << alpha (1 + beta h ~ gap / alpha), and the plain
    root (q + sqrt(q^2 + 4 alpha R)) / 2 cancels when q < 0: each breaks the bound somewhere."""
    contracting = radial(2, 6.0, -8.0, 0.0, 0)  # 1 + beta h ~ 1e-14 near z0
    z = device(unit_rows(np.random.default_rng(0), 4, 2) * 1e-3)
    check_radial_round_trip(contracting, z)

    def cancelling_inverse(self, z):
        alpha, beta, gap = self.constrained()
        offset = z - self.z0
        r = _norm(offset)
        return z + _column(beta / (alpha + r)) * offset, self._log_det(r, alpha, gap)

    with monkeypatch.context() as patch:
        patch.setattr(Radial, "inverse", cancelling_inverse)
        with pytest.raises(AssertionError):
            check_radial_round_trip(contracting, z)


# --- planar at extreme w^T u ------------------------------------------------------------------------
def planar(dim, w_dot_u, w_norm, b, seed):
    rng = np.random.default_rng(seed)
    flow = Planar(dim, seed=seed)
    w = unit_rows(rng, 1, dim)[0] * w_norm
    u = rng.standard_normal(dim)
    u = u - (u @ w) / (w @ w) * w + w_dot_u / (w @ w) * w  # any component across w, then w^T u exactly
    flow.w.data, flow.u.data, flow.b.data = device(w), device(u), device([b])
    return flow


@given(
    st.integers(1, 4), st.floats(-40, 40), st.floats(-1, 1), st.floats(-10, 10), st.floats(-3, 3), st.integers(0, 99)
)
# Found by the CI profile: plain safeguarded Newton bounced between p = -1.49 and p = 3.59 on either
# side of the root, shrinking the bracket by ~0.01 a step, and did not converge in 100 iterations.
@example(dim=1, w_dot_u=6.296875, log_w_norm=0.0, b=0.0, log_scale=0.0, seed=1)
def test_planar_round_trips_at_extreme_w_dot_u(dim, w_dot_u, log_w_norm, b, log_scale, seed):
    """s = softplus(w^T u) runs from 4e-18 (g crushes the hyperplane: slope s) to 40.

    x -> z -> x: the solve leaves |F(p)| ~ u (1 + |v| + |c|) after the polishing Newton step,
    which comes back times |u_hat|: bound C u (|x| + |u_hat| (1 + |v| + |c|)), measured C ~ 4.
    z -> x -> z: the same, divided by the slope t^2 + s (1 - t^2) of the scalar map at p (the
    map's own conditioning), measured C ~ 3. Where the slope is 1 and everything O(1), both are 1e-14.
    """
    flow = planar(dim, w_dot_u, 10.0**log_w_norm, b, seed)
    rng = np.random.default_rng(seed)
    u_hat, s = host(flow.constrained()[0]), float(host(flow.constrained()[1]).item())
    w, c = host(flow.w), s - 1
    x = rng.standard_normal((5, dim)) * 10.0 ** (log_scale + rng.uniform(-1, 1, (5, 1)))
    z, log_det = flow.forward(device(x))
    x_back, log_det_back = flow.inverse(z.data)
    v = x @ w + b
    solve_scale = np.linalg.norm(u_hat) * (1 + np.abs(v) + abs(c))
    assert np.all(np.abs(host(x_back) - x).max(axis=1) <= 16 * EPS * (np.abs(x).max(axis=1) + solve_scale))
    assert np.all(
        np.abs(host(log_det) + host(log_det_back)) <= 64 * EPS * (1 + np.abs(host(log_det))) * (1 + np.abs(v) + abs(c))
    )
    z_host = host(z)
    x_new, _ = flow.inverse(z.data)
    z_back, _ = flow.forward(x_new.data)
    t = np.tanh(z_host @ w + b)
    slope = t * t + s * (1 - t * t)
    assert np.all(
        np.abs(host(z_back) - z_host).max(axis=1) <= 16 * EPS * (np.abs(z_host).max(axis=1) + solve_scale / slope)
    )


# --- affine transformers near their bounds ------------------------------------------------------------
@given(
    st.one_of(st.none(), st.floats(0.1, 30.0)),
    st.lists(st.floats(-1e4, 1e4), min_size=6, max_size=6),
    st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=6, max_size=6),
    st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=6, max_size=6),
)
def test_affine_round_trip_at_large_log_scales(scale_bound, raw_scales, shifts, h):
    """y = h e^ls + t and back: (y - t) e^-ls loses u |t| e^-ls to the subtraction (t dominates y
    when the scale is tiny), so |h' - h| <= C u (|h| + |t| e^-ls), measured C ~ 1.6. Where y is
    subnormal (h e^ls below 2.2e-308) its rounding error is absolute, up to half the subnormal
    spacing 2^-1074, which the inverse multiplies by e^-ls: that term is added. The log-scale
    never passes the bound, and the two log-derivatives are exact negatives (the same number)."""
    raw = np.array(raw_scales) if scale_bound is not None else np.clip(raw_scales, -300, 300)
    theta = device(np.stack([shifts, raw], axis=-1))
    transformer = AffineTransformer(scale_bound)
    y, log_derivative = transformer.forward(device(np.array(h)), theta)
    h_back, log_derivative_back = transformer.inverse(y.data, theta)
    log_scale = host(log_derivative)
    if scale_bound is not None:
        assert np.all(np.abs(log_scale) <= scale_bound)
    subnormal_spacing = float(np.nextafter(0.0, 1.0))  # 2^-1074, the absolute step of floats near 0
    bound = 8 * EPS * (np.abs(h) + np.abs(shifts) * np.exp(-log_scale)) + subnormal_spacing * np.exp(-log_scale)
    assert np.all(np.abs(host(h_back) - np.array(h)) <= bound)
    np.testing.assert_array_equal(host(log_derivative_back), -log_scale)


# --- sinh-arcsinh at extreme skew and tail weight -------------------------------------------------------
@given(
    st.lists(st.floats(-20, 20), min_size=6, max_size=6),
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.lists(st.floats(-10, 10), min_size=6, max_size=6),
    st.integers(0, 99),
)
def test_sinh_arcsinh_round_trip_at_extreme_skew_and_tails(skews, log_deltas, log_h, seed):
    """h -> z -> h. The inverse's w = (asinh z + eps) / delta is a difference of numbers of size
    |eps| and |asinh z| (cancelling when the skew undoes the input), known to u (|eps| + |asinh z|) / delta,
    and sinh multiplies that by cosh w: bound C u (|h| + (|eps| + |asinh z|) cosh(w) / delta), measured C ~ 42."""
    skews, log_deltas = np.array(skews), np.array(log_deltas)
    signs = np.where(np.random.default_rng(seed).random(6) < 0.5, -1.0, 1.0)
    h = signs * 10.0 ** (np.array(log_h) / np.maximum(1.0, np.exp(log_deltas)))  # |z| stays below 1e150
    theta = device(np.stack([skews, log_deltas], axis=-1))
    transformer = SinhArcsinhTransformer()
    z, log_derivative = transformer.forward(device(h), theta)
    h_back, log_derivative_back = transformer.inverse(z.data, theta)
    asinh_z = np.arcsinh(host(z))
    w = (asinh_z + skews) * np.exp(-log_deltas)
    spread = (np.abs(skews) + np.abs(asinh_z)) * np.exp(-log_deltas)
    assert np.all(np.abs(host(h_back) - h) <= 256 * EPS * (np.abs(h) + spread * np.cosh(w)))
    # log cosh(w) moves by |tanh w| |dw|: the same u spread, measured C ~ 3.
    assert np.all(
        np.abs(host(log_derivative) + host(log_derivative_back))
        <= 32 * EPS * (1 + np.abs(host(log_derivative)) + spread * np.abs(np.tanh(w)))
    )


# --- rational-quadratic spline with bins at their floors -------------------------------------------------
def spline_points(knots, bound, rng):
    """The knots, their floating-point neighbours, +-bound and beyond, and random points inside."""
    return np.concatenate(
        [
            knots,
            np.nextafter(knots, np.inf),
            np.nextafter(knots, -np.inf),
            [1.5 * bound, -1.5 * bound],
            rng.uniform(-bound, bound, 8),
        ]
    )


spline_settings = st.tuples(st.integers(2, 8), st.floats(0.5, 10.0), st.integers(0, 2**16), st.floats(1.0, 60.0))


def spline_at_floors(bins, bound, seed, spread):
    """theta in [-spread, spread]: softmax spreads of up to e^120 put bins at min_bin_width
    (2B 1e-3) and softplus(-60) puts knot derivatives at min_derivative 1e-3 (up to 60)."""
    transformer = SplineTransformer(bins, bound)
    theta = device(np.random.default_rng(seed).uniform(-spread, spread, (1, 3 * bins - 1)))
    return transformer, theta


def check_spline_y_round_trip(transformer, theta, bound, rng):
    """y -> x -> y within 1e-12 B: the inverse's root carries u |b| / |a xi + ...| relative error,
    which the forward maps back scaled by the bin's slope; measured worst 967 u B = 2.2e-13 B."""
    _, heights, _ = transformer.spline_parameters(theta)
    y = spline_points(host(_knots(heights, -bound, bound))[0], bound, rng)
    x, _ = transformer.inverse(device(y), theta)
    y_back, _ = transformer.forward(x.data, theta)
    assert np.all(np.abs(host(y_back) - y) <= 1e-12 * bound), np.abs(host(y_back) - y).max() / bound


@given(spline_settings)
def test_spline_round_trips_with_bins_and_derivatives_at_their_floors(settings):
    bins, bound, seed, spread = settings
    rng = np.random.default_rng(seed)
    transformer, theta = spline_at_floors(bins, bound, seed, spread)
    check_spline_y_round_trip(transformer, theta, bound, rng)
    # x -> y -> x: the forward's rounding u B comes back divided by g'(x) (>= ~1e-6 here): measured C ~ 70.
    widths, _, _ = transformer.spline_parameters(theta)
    x = spline_points(host(_knots(widths, -bound, bound))[0], bound, rng)
    y, log_derivative = transformer.forward(device(x), theta)
    x_back, _ = transformer.inverse(y.data, theta)
    slope = np.exp(host(log_derivative))
    assert np.all(np.abs(host(x_back) - x) <= 512 * EPS * (np.abs(x) + bound / slope))
    outside = np.abs(x) > bound  # identity tails, exactly
    np.testing.assert_array_equal(host(y)[outside], x[outside])
    assert np.all(host(log_derivative)[outside] == 0)


def test_the_spline_check_catches_the_cancelling_root():
    """The root 2c / (-b - sqrt(b^2 - 4ac)) alone (minflow's form before this test) cancels where b < 0:
    near the top of a bin whose upper knot derivative is large. Here it is off by ~1e-9 B."""
    bins, bound, seed, spread = 6, 2.163694259157191, 0, 60.0
    for seed in range(200):  # the first random spline with a bin where the old form loses digits
        transformer, theta = spline_at_floors(bins, bound, seed, spread)
        widths, heights, derivatives = transformer.spline_parameters(theta)
        knots_x, knots_y = host(_knots(widths, -bound, bound))[0], host(_knots(heights, -bound, bound))[0]
        widths, heights, derivatives = (host(t)[0] for t in (widths, heights, derivatives))
        k = np.argmax(derivatives[1:] / (heights / widths))  # the bin whose upper derivative dwarfs its slope
        width, height = knots_x[k + 1] - knots_x[k], knots_y[k + 1] - knots_y[k]
        s, d_k, d_k1 = height / width, derivatives[k], derivatives[k + 1]
        delta_y = height * (1 - 1e-9)  # just below the upper knot
        slope_sum = d_k1 + d_k - 2 * s
        a, b, c = height * (s - d_k) + delta_y * slope_sum, height * d_k - delta_y * slope_sum, -s * delta_y
        if b < 0:
            old = 2 * c / (-b - math.sqrt(b * b - 4 * a * c))
            stable = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
            if abs(old - stable) * width > 1e-12 * bound:
                break
    else:
        pytest.fail("no spline with a cancelling bin found")
    # The library takes the stable form there: y -> x -> y holds at 1e-12 B on this spline.
    check_spline_y_round_trip(transformer, theta, bound, np.random.default_rng(0))


# --- piecewise linear with tiny bin masses -------------------------------------------------------------
@given(st.integers(1, 8), st.floats(0.0, 15.0), st.integers(0, 2**16))
def test_piecewise_linear_round_trips_with_tiny_bin_masses(bins, spread, seed):
    """Masses down to e^-30 ~ 1e-13 (logits in [-15, 15]). y -> x -> y: the inverse's t = (y - C)/phi
    and the forward's C + t phi undo each other to a few u (measured 3 u). x -> y -> x: the forward's
    rounding u comes back divided by the slope K phi_b: C u (1 + 1 / (K phi_b)), measured C ~ 0.5.
    A knot k / K goes to its knot and back to itself exactly (forward and inverse share the knots)."""
    rng = np.random.default_rng(seed)
    transformer = PiecewiseLinearTransformer(bins)
    theta = device(rng.uniform(-spread, spread, (1, bins)))
    knots = np.arange(bins + 1) / bins
    x = np.clip(np.concatenate([knots, np.nextafter(knots, 2.0), rng.uniform(0, 1, 8)]), 0, 1)
    y, log_derivative = transformer.forward(device(x), theta)
    x_back, log_derivative_back = transformer.inverse(y.data, theta)
    slope = np.exp(host(log_derivative))
    assert np.all(np.abs(host(x_back) - x) <= 4 * EPS * (1 + 1 / slope))
    np.testing.assert_array_equal(host(x_back)[: bins + 1], knots)
    assert np.all(
        np.abs(host(log_derivative_back) + host(log_derivative)) <= 4 * EPS * (1 + np.abs(host(log_derivative)))
    )
    masses = host(transformer.bin_masses(theta))[0]
    y = np.clip(np.concatenate([np.cumsum(masses), rng.uniform(0, 1, 8), [0.0, 1.0]]), 0, 1)
    x, _ = transformer.inverse(device(y), theta)
    y_back, _ = transformer.forward(x.data, theta)
    assert np.all(np.abs(host(y_back) - y) <= 16 * EPS)


@pytest.mark.xfail(
    strict=True,
    reason="known: masses below roundoff of the cumulative sums (logit spread > ~37) "
    "give a zero-width bin, log-det -inf and NaN in the inverse; see the issue-14 report",
)
def test_piecewise_linear_with_masses_below_roundoff_stays_finite():
    transformer = PiecewiseLinearTransformer(3)
    theta = device([[30.0, -30.0, 30.0]])  # the middle mass e^-60 ~ 1e-26 vanishes next to 0.5
    y, log_derivative = transformer.forward(device([0.5, 0.0, 1.0]), theta)
    x, _ = transformer.inverse(device([0.5]), theta)
    assert np.all(np.isfinite(host(log_derivative))) and np.all(np.isfinite(host(x)))
