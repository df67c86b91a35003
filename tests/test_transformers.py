"""Transformers (minflow/flows/transformers.py, splines.py) and the elementwise flows built on them.

Every transformer is checked the same three ways, with random non-identity parameters:
its inverse undoes it (both ways), its log-derivative is the log of a finite-difference
derivative, and the inverse's log-derivative is minus the forward one at the matching
point. Then the piecewise-linear map is checked against the worked example of
Understanding Deep Learning, and the two bin-based maps at the places where peer libraries
break: exactly at knots, at the edges of the domain, in the tails.

Tolerances used throughout (float64, unit roundoff u = 1.1e-16):

- ROUND_TRIP = 1e-10: a round trip costs a few tens of operations, each off by ~u
  relative, amplified at most by 1/g' (>= 1e-2 here) -- far below 1e-10, while a wrong
  formula is off by O(1).
- FD_LOG = 1e-6: a central difference with step EPS = 1e-6 has truncation error
  ~EPS^2 |g'''| / 6 and rounding error ~u |g| / EPS ~ 1e-10 relative to g'; for our
  parameter ranges both are below 1e-8, and log turns a relative error into an absolute one.
"""

import math

import numpy as np
import pytest
from helpers import device, host
from hypothesis import given
from hypothesis import strategies as st

from minflow import backend, testing
from minflow.autodiff import Tensor, ops
from minflow.flows import Coupling, MaskedAutoregressive, SinhArcsinh, SinhArcsinhTransformer
from minflow.flows import splines as S
from minflow.flows import transformers as T
from minflow.flows.coupling import half_mask
from minflow.flows.elementwise import (
    Elementwise,
    ElementwiseAffine,
    LeakyReLU,
    Logit,
    PiecewiseLinear,
    RationalQuadraticSpline,
    Sigmoid,
)

BATCH, DIM, BINS, BOUND = 5, 3, 6, 3.0
EPS = 1e-6
ROUND_TRIP = 1e-10
FD_LOG = 1e-6
seeds = st.integers(0, 2**32 - 1)


# --- random parameters and inputs, one entry per transformer ---------------------------------
def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _spline_parameters(rng, shape=(DIM,), bins=BINS, requires_grad=False):
    """Unnormalized N(0, 1) parameters and the (widths, heights, derivatives) they give."""
    free = [Tensor(device(rng.normal(size=shape + (n,))), requires_grad=requires_grad) for n in (bins, bins, bins - 1)]
    return free, S.rational_quadratic_parameters(*free, BOUND)


def _away_from_knots(rng, size, bins):
    """Uniform points of [0, 1] kept 1% of a bin away from every knot (f is not smooth there)."""
    return (rng.integers(0, bins, size=size) + rng.uniform(0.01, 0.99, size=size)) / bins


def _away_from_zero(rng, size):
    return rng.choice([-1.0, 1.0], size=size) * rng.uniform(0.01, 3.0, size=size)


class Case:
    """A transformer with samplers for its parameters, its inputs x and its outputs y."""

    def __init__(self, forward, inverse, parameters, x, y):
        self.forward, self.inverse = forward, inverse
        self.parameters, self.sample_x, self.sample_y = parameters, x, y


SHAPE = (BATCH, DIM)
CASES = {
    "affine": Case(
        T.affine,
        T.affine_inverse,
        lambda rng: (Tensor(device(rng.normal(size=DIM))), Tensor(device(0.7 * rng.normal(size=DIM)))),
        lambda rng: 2 * rng.normal(size=SHAPE),
        lambda rng: 2 * rng.normal(size=SHAPE),
    ),
    "leaky_relu": Case(
        T.leaky_relu,
        T.leaky_relu_inverse,
        lambda rng: (float(rng.uniform(0.05, 3.0)),),
        lambda rng: _away_from_zero(rng, SHAPE),
        lambda rng: _away_from_zero(rng, SHAPE),
    ),
    "sigmoid": Case(
        T.sigmoid,
        T.logit,
        lambda rng: (),
        # |x| <= 6: a central difference of sigmoid errs by u / (EPS sigmoid'(x)) in the log-derivative,
        # 4e-8 at |x| = 6 (25 times below FD_LOG) but 4e-5 at |x| = 12.7, where 3 N(0, 1) can reach.
        lambda rng: np.clip(3 * rng.normal(size=SHAPE), -6.0, 6.0),
        lambda rng: rng.uniform(0.01, 0.99, size=SHAPE),
    ),
    "logit": Case(
        T.logit,
        T.sigmoid,
        lambda rng: (),
        lambda rng: rng.uniform(0.01, 0.99, size=SHAPE),
        lambda rng: 3 * rng.normal(size=SHAPE),
    ),
    "piecewise_linear": Case(
        S.piecewise_linear,
        S.piecewise_linear_inverse,
        lambda rng: (Tensor(device(_softmax(rng.normal(size=(DIM, BINS))))),),
        lambda rng: _away_from_knots(rng, SHAPE, BINS),
        lambda rng: rng.uniform(0.0, 1.0, size=SHAPE),
    ),
    "rational_quadratic_spline": Case(
        lambda x, *p: S.rational_quadratic_spline(x, *p, BOUND),
        lambda y, *p: S.rational_quadratic_spline_inverse(y, *p, BOUND),
        lambda rng: _spline_parameters(rng)[1],
        lambda rng: rng.uniform(-1.3 * BOUND, 1.3 * BOUND, size=SHAPE),  # tails included
        lambda rng: rng.uniform(-1.3 * BOUND, 1.3 * BOUND, size=SHAPE),
    ),
}


def _close(actual, expected, tolerance, what):
    actual, expected = host(actual), host(expected)
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance, err_msg=what)


# --- the three properties, for every transformer ----------------------------------------------
@pytest.mark.parametrize("name", CASES)
@given(seed=seeds)
def test_inverse_undoes_forward(name, seed):
    case, rng = CASES[name], np.random.default_rng(seed)
    params, x = case.parameters(rng), case.sample_x(rng)
    y, _ = case.forward(Tensor(device(x)), *params)
    x_again, _ = case.inverse(y, *params)
    _close(x_again.data, x, ROUND_TRIP, f"{name}: inverse(forward(x)) != x for x = {x}")


@pytest.mark.parametrize("name", CASES)
@given(seed=seeds)
def test_forward_undoes_inverse(name, seed):
    case, rng = CASES[name], np.random.default_rng(seed)
    params, y = case.parameters(rng), case.sample_y(rng)
    x, _ = case.inverse(Tensor(device(y)), *params)
    y_again, _ = case.forward(x, *params)
    _close(y_again.data, y, ROUND_TRIP, f"{name}: forward(inverse(y)) != y for y = {y}")


@pytest.mark.parametrize("name", CASES)
@given(seed=seeds)
def test_log_derivative_matches_finite_differences(name, seed):
    case, rng = CASES[name], np.random.default_rng(seed)
    params, x = case.parameters(rng), case.sample_x(rng)
    _, log_derivative = case.forward(Tensor(device(x)), *params)
    # elementwise maps: one pair of shifted evaluations gives every coordinate's derivative
    derivative = (
        host(case.forward(Tensor(device(x + EPS)), *params)[0])
        - host(case.forward(Tensor(device(x - EPS)), *params)[0])
    ) / (2 * EPS)
    _close(log_derivative.data, np.log(derivative), FD_LOG, f"{name}: log-derivative vs finite differences at {x}")


@pytest.mark.parametrize("name", CASES)
@given(seed=seeds)
def test_inverse_log_derivative_is_minus_forward(name, seed):
    case, rng = CASES[name], np.random.default_rng(seed)
    params, x = case.parameters(rng), case.sample_x(rng)
    y, forward_log_derivative = case.forward(Tensor(device(x)), *params)
    _, inverse_log_derivative = case.inverse(y, *params)
    assert inverse_log_derivative.shape == y.shape == forward_log_derivative.shape
    _close(inverse_log_derivative.data, -forward_log_derivative.data, ROUND_TRIP, f"{name} at x = {x}")


# --- the Transformer contract, for every Transformer class -------------------------------------
TRANSFORMERS = testing.example_transformer_names()


@pytest.mark.parametrize("name", sorted(testing.transformer_classes()))
def test_every_transformer_class_has_an_example(name):
    assert name in testing.TRANSFORMER_EXAMPLES, (
        f"transformer class {name} has no example: add an entry to TRANSFORMER_EXAMPLES in minflow/testing/examples.py"
    )


@given(testing.transformers(), seeds, st.sampled_from([1, 4]))
def test_every_transformer_keeps_the_contract(name_and_transformer, seed, dim):
    name, transformer = name_and_transformer
    theta_scale = testing.TRANSFORMER_EXAMPLES[name].theta_scale
    testing.check_transformer(transformer, n=8, dim=dim, seed=seed % 2**16, theta_scale=theta_scale)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_every_transformer_keeps_the_contract_in_float32(name):
    transformer = testing.example_transformers()[name]
    theta_scale = testing.TRANSFORMER_EXAMPLES[name].theta_scale
    testing.check_transformer(transformer, seed=3, theta_scale=theta_scale, dtype="float32")


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_one_transformer_gives_an_elementwise_a_coupling_and_an_autoregressive_flow(name):
    transformer = testing.example_transformers()[name]
    for flow in (
        Elementwise(transformer, 3),
        Coupling(half_mask(3), transformer, hidden=(8,), activation="tanh", seed=0),
        MaskedAutoregressive(3, transformer, hidden=(8,), activation="tanh", seed=0),
    ):
        assert flow.input_domain == flow.output_domain == tuple(transformer.domain)
        testing.check_flow(testing._perturb(flow, backend.rng(1), 0.3), n=4, seed=2)


def test_flows_take_transformers_only():
    for make in (
        lambda: Elementwise(T.affine, 2),
        lambda: Coupling([True, False], T.affine),
        lambda: MaskedAutoregressive(2, "spline"),
    ):
        with pytest.raises(ValueError, match="transformer must be a Transformer"):
            make()


def test_sinh_arcsinh_matches_its_closed_form_and_is_the_identity_at_zero():
    h = np.linspace(-5, 5, 11)
    eps, s = 0.4, -0.3
    theta = Tensor(device(np.array([eps, s])))
    z, log_derivative = SinhArcsinhTransformer().forward(Tensor(device(h)), theta)
    u = np.exp(s) * np.arcsinh(h) - eps
    # the same formula through NumPy's own sinh/arcsinh/cosh: a few ulps apart
    _close(z.data, np.sinh(u), 1e-13, "sinh(delta asinh(h) - eps)")
    _close(log_derivative.data, np.log(np.cosh(u) * np.exp(s) / np.sqrt(1 + h * h)), 1e-13, "log g'")
    flow = SinhArcsinh(2)
    x = device(np.random.default_rng(0).normal(size=(4, 2)))
    z, log_det = flow.forward(x)
    _close(z.data, x, 1e-14, "identity at initialisation")
    _close(log_det.data, np.zeros(4), 1e-14, "zero log-det at initialisation")


# --- UDL's worked example (Prince 2023, eq. 16.12 and figure 16.5) -----------------------------
UDL_MASSES = np.array([0.2, 0.1, 0.4, 0.05, 0.25])
UDL_KNOTS = np.array([0.0, 0.2, 0.3, 0.7, 0.75, 1.0])  # cumulative masses, written out by hand


def _udl(h):
    return S.piecewise_linear(Tensor(device(np.asarray(h, dtype=float))), Tensor(device(UDL_MASSES)))


def test_udl_example_values_at_ends_middle_and_knots():
    y, _ = _udl([0.0, 1.0, 0.5])
    # 0.5 lies in bin 3: f = 0.2 + 0.1 + (2.5 - 2) * 0.4 = 0.5; a few roundings, hence 1e-15
    _close(y.data, [0.0, 1.0, 0.5], 1e-15, "f(0), f(1), f(0.5)")
    assert host(y)[0] == 0.0 and host(y)[1] == 1.0, "the end points are pinned exactly"
    knots, _ = _udl(np.arange(6) / 5)
    _close(knots.data, UDL_KNOTS, 1e-15, "f(k/5) must be the cumulative mass")


def test_udl_example_derivative_is_K_times_the_bin_mass():
    midpoints = (np.arange(5) + 0.5) / 5
    _, log_derivative = _udl(midpoints)
    _close(np.exp(host(log_derivative)), 5 * UDL_MASSES, 1e-14, "f' = K phi_b")
    # a knot k/5 belongs to the bin on its right; h = 1 to the last bin
    _, log_derivative = _udl(np.arange(6) / 5)
    _close(np.exp(host(log_derivative)), 5 * UDL_MASSES[[0, 1, 2, 3, 4, 4]], 1e-14, "f' at the knots")


def test_udl_example_analytic_inverse_is_exact_at_and_between_knots():
    between = (UDL_KNOTS[:-1] + UDL_KNOTS[1:]) / 2  # mid-heights: h = (b - 1/2) / 5
    y = np.concatenate([UDL_KNOTS, between])
    expected = np.concatenate([np.arange(6) / 5, (np.arange(5) + 0.5) / 5])
    h, log_derivative = S.piecewise_linear_inverse(Tensor(device(y)), Tensor(device(UDL_MASSES)))
    _close(h.data, expected, 1e-12, "f^-1 at the knots and half-way between them")
    _close(np.exp(-host(log_derivative)[6:]), 5 * UDL_MASSES, 1e-12, "1 / (f^-1)' = K phi_b")


# --- knots, edges and tails ---------------------------------------------------------------------
def _assert_gradients_finite(loss, tensors, what):
    loss.backward()
    for tensor in tensors:
        assert tensor.grad is not None and np.all(np.isfinite(host(tensor.grad))), f"{what}: non-finite gradient"


def _numpy_knots(sizes, low=-BOUND, high=BOUND):
    """The knots exactly as splines.py computes them (normalized cumsum); shape (K + 1, DIM)."""
    cumulative = np.cumsum(sizes, axis=-1)
    fractions = np.concatenate([np.zeros(sizes.shape[:-1] + (1,)), cumulative / cumulative[..., -1:]], axis=-1)
    return (low + (high - low) * fractions).T


def test_piecewise_linear_is_exact_and_finite_at_every_knot_and_edge():
    rng = np.random.default_rng(0)
    logits = Tensor(device(rng.normal(size=(DIM, BINS))), requires_grad=True)
    knots_x = np.repeat((np.arange(BINS + 1) / BINS)[:, None], DIM, axis=1)  # 0, 1/K, ..., 1 per dim
    x = Tensor(device(knots_x), requires_grad=True)
    masses = ops.softmax(logits, axis=-1)
    y, log_derivative = S.piecewise_linear(x, masses)
    x_again, inverse_log_derivative = S.piecewise_linear_inverse(y, masses)

    knots_y = _numpy_knots(host(masses), 0.0, 1.0)
    # a knot goes to the cumulative mass; 1e-15 is a few ulps of numbers <= 1
    _close(y.data, knots_y, 1e-15, "knots go to cumulative masses")
    assert np.all(host(y)[0] == 0.0) and np.all(host(y)[-1] == 1.0), "f(0) = 0 and f(1) = 1 exactly"
    _close(x_again.data, knots_x, 1e-15, "the inverse brings knots back")
    _close(inverse_log_derivative.data, -log_derivative.data, 1e-15, "same bin both ways at a knot")
    loss = ops.sum(y) + ops.sum(log_derivative) + ops.sum(x_again) + ops.sum(inverse_log_derivative)
    _assert_gradients_finite(loss, [x, logits], "piecewise-linear at knots")


def _special_points(knots_x):
    """Per dimension: every knot, +-B, 1e-12 inside and outside +-B, and far tails."""
    edges = np.array([-BOUND, BOUND, -BOUND + 1e-12, BOUND - 1e-12, -BOUND - 1e-12, BOUND + 1e-12, -1e3, 1e3])
    return np.concatenate([knots_x, np.repeat(edges[:, None], knots_x.shape[1], axis=1)])


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_spline_is_exact_and_finite_at_knots_edges_and_tails(direction):
    rng = np.random.default_rng(1)
    free, (widths, heights, derivatives) = _spline_parameters(rng, requires_grad=True)
    knots_in = _numpy_knots(host(widths if direction == "forward" else heights))
    knots_out = _numpy_knots(host(heights if direction == "forward" else widths))
    there, back = S.rational_quadratic_spline, S.rational_quadratic_spline_inverse
    if direction == "inverse":
        there, back = back, there

    points = _special_points(knots_in)
    x = Tensor(device(points), requires_grad=True)
    y, log_derivative = there(x, widths, heights, derivatives, BOUND)
    x_again, back_log_derivative = back(y, widths, heights, derivatives, BOUND)

    assert np.all(np.isfinite(host(y))) and np.all(np.isfinite(host(log_derivative)))
    # knots go to knots; 1e-14 is a few ulps of B = 3
    _close(host(y)[: BINS + 1], knots_out, 1e-14, "knots go to knots")
    _close(x_again.data, points, 1e-12, "round trip at knots and edges")
    _close(back_log_derivative.data, -log_derivative.data, 1e-12, "same bin both ways")
    tails = np.abs(points) > BOUND
    assert np.all(host(y)[tails] == points[tails]), "the tails are the identity, exactly"
    assert np.all(host(log_derivative)[tails] == 0.0), "the tails' log-derivative is exactly 0"
    loss = ops.sum(y * y) + ops.sum(log_derivative) + ops.sum(x_again) + ops.sum(back_log_derivative)
    _assert_gradients_finite(loss, [x] + free, f"spline {direction} at knots and edges")


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_spline_on_an_all_tail_batch_is_the_identity_with_clean_gradients(direction):
    rng = np.random.default_rng(2)
    free, parameters = _spline_parameters(rng, requires_grad=True)
    transform = S.rational_quadratic_spline if direction == "forward" else S.rational_quadratic_spline_inverse
    points = np.array([[-1e3, BOUND + 1e-12, 50.0], [1e3, -BOUND - 1e-12, -7.0]])
    x = Tensor(device(points), requires_grad=True)
    y, log_derivative = transform(x, *parameters, BOUND)
    assert np.all(host(y) == points) and np.all(host(log_derivative) == 0.0)
    (ops.sum(y) + ops.sum(log_derivative)).backward()
    assert np.all(host(x.grad) == 1.0), "dy/dx = 1 in the tails, exactly"
    for tensor in free:  # the parameters do not touch tail points: gradient exactly zero, not NaN
        assert np.all(host(tensor.grad) == 0.0)


# --- gradients with respect to the parameters ---------------------------------------------------
def _check_parameter_gradients(loss_of, free, rng, what, entries=4):
    """Autodiff gradient of loss_of() vs finite differences on a few entries of each tensor.

    Where the spline is steep or flat, the loss's higher derivatives in the parameters are
    large (seen: |f'''| ~ 1e6), too large for the 2-point stencil's EPS^2 f''' / 6 error.
    The 5-point stencil with step 1e-5 has truncation error ~step^4 f^(5) / 30 and rounding
    error ~u |loss| / step ~ 1e-9, both well below the tolerance 1e-6 relative (+1e-8
    absolute), while a wrong VJP is off by O(1).
    """
    step = 1e-5
    loss_of().backward()
    for tensor in free:
        gradient = host(tensor.grad)
        for flat in rng.choice(tensor.size, size=min(entries, tensor.size), replace=False):
            index = np.unravel_index(flat, tensor.shape)
            # A host copy of the entry: on CuPy, tensor.data[index] is a 0-d *view*, which the
            # writes below would change.
            saved = float(host(tensor.data)[index])
            values = []
            for offset in (-2, -1, 1, 2):
                tensor.data[index] = saved + offset * step
                values.append(loss_of().item())
            tensor.data[index] = saved
            numeric = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * step)
            assert math.isclose(gradient[index], numeric, rel_tol=1e-6, abs_tol=1e-8), (
                f"{what}: d loss / d param{index}: autodiff {gradient[index]}, finite differences {numeric}"
            )


def _away_from_knots_of(points, knots, margin=1e-3):
    """Move points (B, D) that lie within ``margin`` of an interior knot (D, K - 1) to 2 margins away.

    The log-derivative is continuous at a knot but its slope jumps, so a knot that moves
    across a point while a parameter is nudged would put a kink inside the
    difference stencil. A nudge of 2e-5 moves a knot by less than 2B x 2e-5 ~ 1e-4; bins
    are >= 2B 1e-3 = 6e-3 wide, so a point 2e-3 from a knot stays inside its bin.
    """
    distance = points[:, :, None] - knots[None]
    nearest = np.argmin(np.abs(distance), axis=-1)[..., None]
    gap = np.take_along_axis(distance, nearest, axis=-1)[..., 0]
    knot = np.take_along_axis(np.broadcast_to(knots, distance.shape), nearest, axis=-1)[..., 0]
    return np.where(np.abs(gap) < margin, knot + np.where(gap < 0, -2, 2) * margin, points)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@given(seed=seeds)
def test_spline_parameter_gradients_match_finite_differences(direction, seed):
    rng = np.random.default_rng(seed)
    free, (widths, heights, _) = _spline_parameters(rng, requires_grad=True)
    knots = _numpy_knots(host(widths if direction == "forward" else heights))[1:-1].T  # interior, (DIM, K - 1)
    points = Tensor(device(_away_from_knots_of(rng.uniform(-1.2 * BOUND, 1.2 * BOUND, size=SHAPE), knots)))
    weights = Tensor(device(rng.normal(size=SHAPE)))
    transform = S.rational_quadratic_spline if direction == "forward" else S.rational_quadratic_spline_inverse

    def loss():
        out, log_derivative = transform(points, *S.rational_quadratic_parameters(*free, BOUND), BOUND)
        return ops.sum(weights * out) + ops.sum(log_derivative)

    _check_parameter_gradients(loss, free, rng, f"spline {direction}")


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@given(seed=seeds)
def test_piecewise_linear_parameter_gradients_match_finite_differences(direction, seed):
    rng = np.random.default_rng(seed)
    logits = Tensor(device(rng.normal(size=(DIM, BINS))), requires_grad=True)
    weights = Tensor(device(rng.normal(size=SHAPE)))
    if direction == "forward":
        transform, points = S.piecewise_linear, Tensor(device(_away_from_knots(rng, SHAPE, BINS)))
    else:  # keep y away from the knots, which move with the logits: use the images of such points
        transform = S.piecewise_linear_inverse
        points = S.piecewise_linear(
            Tensor(device(_away_from_knots(rng, SHAPE, BINS))), ops.softmax(logits.detach(), -1)
        )[0]

    def loss():
        out, log_derivative = transform(points, ops.softmax(logits, axis=-1))
        return ops.sum(weights * out) + ops.sum(log_derivative)

    _check_parameter_gradients(loss, [logits], rng, f"piecewise-linear {direction}")


# --- broadcasting and dtype -----------------------------------------------------------------
def test_per_sample_parameters_broadcast_like_a_loop_over_samples():
    # coupling layers hand every sample its own parameters: (B, D, K) against x (B, D)
    rng = np.random.default_rng(3)
    _, (widths, heights, derivatives) = _spline_parameters(rng, shape=SHAPE)
    masses = Tensor(device(_softmax(rng.normal(size=SHAPE + (BINS,)))))
    x = rng.uniform(-BOUND, BOUND, size=SHAPE)
    h = rng.uniform(0, 1, size=SHAPE)
    y, log_derivative = S.rational_quadratic_spline(Tensor(device(x)), widths, heights, derivatives, BOUND)
    g, log_g = S.piecewise_linear(Tensor(device(h)), masses)
    for i in range(BATCH):
        row = S.rational_quadratic_spline(Tensor(device(x[i])), widths[i], heights[i], derivatives[i], BOUND)
        assert np.array_equal(host(row[0]), host(y)[i]) and np.array_equal(host(row[1]), host(log_derivative)[i])
        row = S.piecewise_linear(Tensor(device(h[i])), masses[i])
        assert np.array_equal(host(row[0]), host(g)[i]) and np.array_equal(host(row[1]), host(log_g)[i])


def test_float32_stays_float32_and_close_to_float64():
    rng = np.random.default_rng(4)
    _, spline64 = _spline_parameters(rng)
    masses64 = _softmax(rng.normal(size=(DIM, BINS)))
    x64, h64 = rng.uniform(-4, 4, size=SHAPE), rng.uniform(0, 1, size=SHAPE)
    as32 = lambda a: Tensor(device(host(a), np.float32))
    for (y32, ld32), (y64, ld64) in [
        (
            S.rational_quadratic_spline(as32(x64), *map(as32, spline64), BOUND),
            S.rational_quadratic_spline(Tensor(device(x64)), *spline64, BOUND),
        ),
        (
            S.piecewise_linear(as32(h64), as32(masses64)),
            S.piecewise_linear(Tensor(device(h64)), Tensor(device(masses64))),
        ),
        (T.logit(as32(h64 * 0.9 + 0.05)), T.logit(Tensor(device(h64 * 0.9 + 0.05)))),
    ]:
        assert y32.dtype == ld32.dtype == np.float32
        # float32 unit roundoff is 6e-8; a few dozen operations stay below 1e-5
        _close(y32.data, y64.data, 1e-5, "float32 vs float64 output")
        _close(ld32.data, ld64.data, 1e-5, "float32 vs float64 log-derivative")


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("values, shown", [([0.5, 1.5], "1.5"), ([-0.25, 0.5], "-0.25"), ([0.0, 0.5], "0.0")])
def test_logit_outside_the_open_unit_interval_raises_with_the_range(values, shown):
    for call in (
        lambda: T.logit(Tensor(values)),
        lambda: Logit().forward([values]),
        lambda: Sigmoid().inverse([values]),
    ):
        with pytest.raises(ValueError, match=r"\(0\.0, 1\.0\)") as error:
            call()
        assert shown in str(error.value) and "0.5" in str(error.value)


@pytest.mark.parametrize("values, shown", [([-0.25, 0.5], "-0.25"), ([0.5, 1.125], "1.125")])
def test_piecewise_linear_outside_the_unit_interval_raises_with_the_range(values, shown):
    flow = PiecewiseLinear(2)
    masses = Tensor(device(np.full(4, 0.25)))
    calls = (
        lambda: flow.forward([values]),
        lambda: flow.inverse([values]),
        lambda: S.piecewise_linear(Tensor(values), masses),
        lambda: S.piecewise_linear_inverse(Tensor(values), masses),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"\[0\.0, 1\.0\]") as error:
            call()
        assert shown in str(error.value)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: S.piecewise_linear(Tensor([0.5]), Tensor([0.5, 0.6])), "bin_masses"),  # sums to 1.1
        (lambda: S.piecewise_linear(Tensor([0.5]), Tensor([1.5, -0.5])), "bin_masses"),  # not positive
        (lambda: T.leaky_relu(Tensor([1.0]), 0.0), "slope"),
        (lambda: T.leaky_relu_inverse(Tensor([1.0]), -2.0), "slope"),
        (
            lambda: S.rational_quadratic_spline(
                Tensor([0.0]), Tensor([1.0, 1.0]), Tensor([3.0, 3.0]), Tensor([1.0, 1.0, 1.0]), BOUND
            ),
            "widths",
        ),  # sums to 2, not 2B
        (
            lambda: S.rational_quadratic_spline(
                Tensor([0.0]), Tensor([3.0, 3.0]), Tensor([3.0, 3.0]), Tensor([1.0, 1.0]), BOUND
            ),
            "derivatives",
        ),  # K, not K + 1
        (
            lambda: S.rational_quadratic_spline(
                Tensor([0.0]), Tensor([3.0, 3.0]), Tensor([3.0, 3.0]), Tensor([1.0, 0.0, 1.0]), BOUND
            ),
            "derivatives",
        ),  # a zero slope
        (
            lambda: S.rational_quadratic_parameters(
                Tensor([0.0] * 4), Tensor([0.0] * 4), Tensor([0.0] * 3), 1.0, min_bin_width=0.3
            ),
            "min_bin_width",
        ),  # 4 * 0.3 > 1
    ],
)
def test_invalid_transformer_parameters_raise_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: ElementwiseAffine(0), "dim"),
        (lambda: ElementwiseAffine(2.5), "dim"),
        (lambda: ElementwiseAffine(True), "dim"),
        (lambda: LeakyReLU(0.0), "slope"),
        (lambda: LeakyReLU(-0.1), "slope"),
        (lambda: LeakyReLU(math.inf), "slope"),
        (lambda: PiecewiseLinear(-1), "dim"),
        (lambda: PiecewiseLinear(2, bins=0), "bins"),
        (lambda: RationalQuadraticSpline(2, bins=1), "bins"),
        (lambda: RationalQuadraticSpline(2, bound=0.0), "bound"),
        (lambda: RationalQuadraticSpline(2, bound=-3.0), "bound"),
        (lambda: RationalQuadraticSpline(2, bins=2.0), "bins"),
        (lambda: S.SplineTransformer(bins=True), "bins"),
        (lambda: S.PiecewiseLinearTransformer(bins=0), "bins"),
        (lambda: T.AffineTransformer(scale_bound=math.nan), "scale_bound"),
        (lambda: Elementwise(T.AffineTransformer(), 0), "dim"),
        (lambda: SinhArcsinh(-2), "dim"),
    ],
)
def test_invalid_constructor_arguments_raise_naming_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


# --- the elementwise flows --------------------------------------------------------------------
def _randomized(flow, rng):
    """The flow with N(0, 0.5) parameters instead of its identity initialisation."""
    for parameter in flow.parameters():
        parameter.data = parameter.data + device(0.5 * rng.normal(size=parameter.shape))
    return flow


FLOWS = {
    "ElementwiseAffine": (lambda: ElementwiseAffine(DIM), lambda rng: rng.normal(size=SHAPE)),
    "LeakyReLU": (lambda: LeakyReLU(0.3), lambda rng: _away_from_zero(rng, SHAPE)),
    "Sigmoid": (Sigmoid, lambda rng: 2 * rng.normal(size=SHAPE)),
    "Logit": (Logit, lambda rng: rng.uniform(0.05, 0.95, size=SHAPE)),
    "PiecewiseLinear": (lambda: PiecewiseLinear(DIM, bins=4), lambda rng: _away_from_knots(rng, SHAPE, 4)),
    "RationalQuadraticSpline": (
        lambda: RationalQuadraticSpline(DIM, bins=4),
        lambda rng: rng.uniform(-4, 4, size=SHAPE),
    ),
    "SinhArcsinh": (lambda: SinhArcsinh(DIM), lambda rng: 2 * rng.normal(size=SHAPE)),
}


@pytest.mark.parametrize("name", FLOWS)
def test_flow_log_det_matches_the_finite_difference_jacobian(name):
    make, sample = FLOWS[name]
    rng = np.random.default_rng(5)
    flow, x = _randomized(make(), rng), sample(rng)
    z, log_det = flow.forward(device(x))
    assert log_det.shape == (BATCH,)
    for b in range(BATCH):  # the full D x D Jacobian of sample b, column by column
        jacobian = np.empty((DIM, DIM))
        for j in range(DIM):
            step = np.zeros(SHAPE)
            step[b, j] = EPS
            plus, minus = flow.forward(device(x + step))[0], flow.forward(device(x - step))[0]
            jacobian[:, j] = (host(plus)[b] - host(minus)[b]) / (2 * EPS)
        assert np.all(jacobian[~np.eye(DIM, dtype=bool)] == 0.0), f"{name}: the Jacobian must be diagonal"
        _close(host(log_det)[b], np.linalg.slogdet(jacobian)[1], FD_LOG, f"{name}: log-det of sample {b}")
    x_again, inverse_log_det = flow.inverse(z)
    _close(x_again.data, x, ROUND_TRIP, f"{name}: inverse(forward(x))")
    _close(inverse_log_det.data, -log_det.data, ROUND_TRIP, f"{name}: inverse log-det")


@pytest.mark.parametrize(
    "make",
    [
        lambda: ElementwiseAffine(DIM),
        lambda: PiecewiseLinear(DIM),
        lambda: RationalQuadraticSpline(DIM),
        lambda: SinhArcsinh(DIM),
    ],
)
def test_parametrized_flows_start_as_the_identity(make):
    x = np.random.default_rng(6).uniform(0, 1, size=SHAPE)
    z, log_det = make().forward(device(x))
    _close(z.data, x, 1e-12, "identity at initialisation")  # softmax / softplus round to ~1e-16
    _close(log_det.data, np.zeros(BATCH), 1e-12, "zero log-det at initialisation")


def test_parameter_free_flows_take_any_event_shape_and_report_their_domains():
    images = np.random.default_rng(7).uniform(0.1, 0.9, size=(2, 3, 4, 4))
    for flow in (LeakyReLU(), Sigmoid(), Logit()):
        z, log_det = flow.forward(device(images))
        assert z.shape == images.shape and log_det.shape == (2,)
    assert Sigmoid().output_domain == (0.0, 1.0) and Logit().input_domain == (0.0, 1.0)
    assert PiecewiseLinear(2).input_domain == PiecewiseLinear(2).output_domain == (0.0, 1.0)


def test_leaky_relu_takes_the_left_slope_at_the_kink():
    # The documented convention: at x = 0 (and -0.0) the log-det is the left side's log(slope), as the
    # inverse's is at y = 0; just right of the kink it is 0. Both are exact (one log of the same number).
    x = Tensor(device([0.0, -0.0, 1e-300, -1e-300]))
    _, log_det = T.leaky_relu(x, 0.5)
    np.testing.assert_array_equal(host(log_det), [math.log(0.5), math.log(0.5), 0.0, math.log(0.5)])
    _, log_det_inverse = T.leaky_relu_inverse(x, 0.5)
    np.testing.assert_array_equal(host(log_det_inverse), [math.log(2.0), math.log(2.0), 0.0, math.log(2.0)])


def test_elementwise_splines_show_the_parameters_of_their_own_theta():
    rng = np.random.default_rng(7)
    flow = PiecewiseLinear(DIM, bins=4)
    flow.theta.data = device(rng.standard_normal(flow.theta.shape))  # random, not the uniform start
    theta = host(flow.theta)
    expected = np.exp(theta) / np.exp(theta).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(host(flow.bin_masses()), expected, rtol=1e-14)  # softmax: a few roundings
    spline = RationalQuadraticSpline(DIM, bins=4, bound=BOUND)
    spline.theta.data = device(rng.standard_normal(spline.theta.shape))
    got = spline.spline_parameters()
    want = spline.transformer.spline_parameters(spline.theta)
    assert [tuple(part.shape) for part in got] == [(DIM, 4), (DIM, 4), (DIM, 5)]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(host(a), host(b))  # the same ops on the same theta
    assert np.ptp(host(got[0]), axis=1).max() > 0.01, "equal widths: the test would not see another theta"


def test_the_stable_asinh_is_exactly_odd():
    # asinh(h) = sign(h) f(|h|): f only ever sees |h|, so asinh(-h) is -asinh(h) to the last bit. A branch
    # point moved off 0 would evaluate f's formula at negative arguments for some h, which agrees with
    # -f(|h|) only up to rounding: a few of these 600 points would then differ in their last bits.
    from minflow.flows.sinh_arcsinh import _asinh

    h = np.concatenate([np.linspace(1e-6, 1.0, 300), np.linspace(1.0, 50.0, 300)])
    positive, negative = _asinh(Tensor(device(h))), _asinh(Tensor(device(-h)))
    np.testing.assert_array_equal(host(negative), -host(positive))


def test_the_stable_sinh_uses_each_documented_formula_on_its_side_of_one():
    # _sinh's docstring: 2t / (1 - t^2) with t = tanh(u / 2) for |u| < 1, (e^u - e^-u) / 2 from |u| = 1 on.
    # Both are sinh to a few ulps near 1, so only the bits tell which one ran; the reference repeats each
    # formula's operations in the same order on the same backend, so the match is exact.
    from minflow.flows.sinh_arcsinh import _sinh

    u_host = np.concatenate([np.linspace(-1.9, -1.0, 40), np.linspace(-0.99, 0.99, 40), np.linspace(1.0, 1.9, 40)])
    u = device(u_host)
    xp = backend.array_module(u)
    t = xp.tanh(u / 2)
    expected = xp.where(xp.abs(u) < 1, 2 * t / (1 - t * t), 0.5 * (xp.exp(u) - xp.exp(-u)))
    got = host(_sinh(Tensor(u)))
    np.testing.assert_array_equal(got, host(expected))
    small_formula = host(2 * t / (1 - t * t))
    assert np.any(got[np.abs(u_host) >= 1] != small_formula[np.abs(u_host) >= 1]), "the formulas agree: no test"
