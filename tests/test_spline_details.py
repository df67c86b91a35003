"""Details of minflow/flows/splines.py that the property tests leave open (found by mutation testing).

The shape checks of the rational-quadratic spline (a single bin is a valid spline; a 0-d or mismatched
parameter is refused with the documented message), parameters with more leading axes than the input, the
closed interval [-B, B] (at x = +-B exactly the log-det is the boundary knot's log-derivative), and the
finite fallback of the discarded root formula, which keeps gradients finite where a knot derivative is so
large that the other formula's denominator rounds to exactly zero.
"""

import math
import re

import numpy as np
import pytest
from helpers import MIXING_MESSAGE, device, host, on_cupy

from minflow.autodiff import Tensor
from minflow.flows.splines import (
    piecewise_linear,
    piecewise_linear_inverse,
    rational_quadratic_spline,
    rational_quadratic_spline_inverse,
)

SHAPE_MESSAGE = (
    "rational_quadratic_spline: widths and heights must have shape (..., K) and derivatives (..., K + 1), got {} and {}"
)


@pytest.mark.parametrize(
    ("widths", "heights", "derivatives", "shapes"),
    [
        (2.0, [2.0], [1.0, 1.0], "(), (1,)"),  # a 0-d widths has no K, even if the others fit K = 1
        ([1.0, 1.0], [0.5, 0.5, 1.0], [1.0, 1.0, 1.0], "(2,), (3,)"),  # heights of another K
    ],
)
def test_spline_parameters_of_the_wrong_shape_are_refused(widths, heights, derivatives, shapes):
    message = SHAPE_MESSAGE.format(shapes, f"({len(derivatives)},)")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        rational_quadratic_spline(device([0.1]), device(widths), device(heights), device(derivatives), 1.0)


def test_a_spline_with_a_single_bin_is_valid():
    # One bin of width and height 2B: the slope is 1; with knot derivatives 2 and 1/2 the map bends but still
    # fixes -B and B. The round trip is float64 arithmetic of a few operations: 1e-12.
    parameters = (device([2.0]), device([2.0]), device([2.0, 0.5]))
    x = device([-0.9, -0.2, 0.4, 0.95])
    y, log_det = rational_quadratic_spline(x, *parameters, 1.0)
    assert np.max(np.abs(host(y) - host(x))) > 0.01, "the single bin's map is the identity: a weak test"
    x_back, log_det_back = rational_quadratic_spline_inverse(y, *parameters, 1.0)
    np.testing.assert_allclose(host(x_back), host(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(host(log_det) + host(log_det_back), 0.0, atol=1e-12)


def random_spline(rng, leading, bins, bound):
    widths = rng.dirichlet(np.ones(bins), size=leading) * 2 * bound
    heights = rng.dirichlet(np.ones(bins), size=leading) * 2 * bound
    derivatives = rng.uniform(0.3, 3.0, size=(*leading, bins + 1))
    return widths, heights, derivatives


@pytest.mark.parametrize("batched", ["widths", "heights", "derivatives"])
def test_spline_parameters_with_more_leading_axes_than_x_broadcast(batched):
    # x (4,) and one of the three parameters (3, 4, K): three splines per coordinate, the result (3, 4), row
    # r computed with that parameter's row r. The same float operations either way: equal to the bit.
    rng = np.random.default_rng(0)
    parameters = list(random_spline(rng, (4,), 5, 2.0))
    index = ["widths", "heights", "derivatives"].index(batched)
    parameters[index] = np.stack([random_spline(rng, (4,), 5, 2.0)[index] for _ in range(3)])
    x = rng.uniform(-2.0, 2.0, size=4)
    y, log_det = rational_quadratic_spline(device(x), *map(device, parameters), 2.0)
    assert y.shape == log_det.shape == (3, 4)
    for row in range(3):
        one = [p[row] if i == index else p for i, p in enumerate(parameters)]
        y_row, log_det_row = rational_quadratic_spline(device(x), *map(device, one), 2.0)
        np.testing.assert_array_equal(host(y)[row], host(y_row))
        np.testing.assert_array_equal(host(log_det)[row], host(log_det_row))


def test_piecewise_linear_bin_masses_with_more_leading_axes_than_the_input_broadcast():
    rng = np.random.default_rng(1)
    masses = rng.dirichlet(np.ones(4), size=(3, 5))  # (3, 5, K): three maps per coordinate
    y = rng.uniform(0.0, 1.0, size=5)
    x, log_det = piecewise_linear_inverse(device(y), device(masses))
    assert x.shape == log_det.shape == (3, 5)
    for row in range(3):
        x_row, _ = piecewise_linear_inverse(device(y), device(masses[row]))
        np.testing.assert_array_equal(host(x)[row], host(x_row))
    y_back, _ = piecewise_linear(x, device(masses))
    np.testing.assert_allclose(host(y_back), np.broadcast_to(y, (3, 5)), rtol=0, atol=1e-14)


def test_the_interval_is_closed_at_both_ends():
    """At x = -B and x = B exactly the spline applies (the docstring's [-B, B]): the log-det is the boundary
    knot's log-derivative, log d_0 and log d_K, not the tails' 0; the value is B either way. With boundary
    derivatives 2 and 1/2 (not the 1 that joins the tails smoothly) the two readings differ."""
    parameters = (device([1.0, 1.0]), device([1.0, 1.0]), device([2.0, 1.0, 0.5]))
    ends = device([-1.0, 1.0])
    y, log_det = rational_quadratic_spline(ends, *parameters, 1.0)
    np.testing.assert_array_equal(host(y), [-1.0, 1.0])
    np.testing.assert_allclose(host(log_det), [math.log(2.0), math.log(0.5)], rtol=1e-15)
    x, log_det_inverse = rational_quadratic_spline_inverse(ends, *parameters, 1.0)
    np.testing.assert_array_equal(host(x), [-1.0, 1.0])
    np.testing.assert_allclose(host(log_det_inverse), [-math.log(2.0), -math.log(0.5)], rtol=1e-15)


def test_inverse_gradients_stay_finite_where_a_knot_derivative_is_huge():
    """Near the top of a bin whose upper knot derivative d is huge, b < 0 and the inverse uses
    (root - b) / (2a). The other formula, 2c / (-b - root), is discarded there, but its denominator rounds to
    exactly 0 once 4ac / b^2 (about 4 s / d) is below the roundoff 2^-53: at d = 1e20. Unguarded, the
    discarded inf would turn the zero cotangent of where() into NaN gradients; the guard puts -1 there."""
    y = Tensor(device([-0.01, -1e-6, -0.3, -0.5]), requires_grad=True)
    derivatives = Tensor(device([1.0, 1e20, 1.0]), requires_grad=True)
    x, log_det = rational_quadratic_spline_inverse(y, device([1.0, 1.0]), device([1.0, 1.0]), derivatives, 1.0)
    (x.sum() + log_det.sum()).backward()
    assert np.all(np.isfinite(host(y.grad))) and np.all(np.isfinite(host(derivatives.grad)))


def test_spline_transformer_honours_its_min_derivative_attribute():
    # min_derivative is a class attribute (1e-3): a subclass that raises it must get that floor in every
    # knot derivative it builds, not rational_quadratic_parameters' own default of 1e-3.
    from minflow.flows.splines import SplineTransformer

    class Steeper(SplineTransformer):
        min_derivative = 0.25

    transformer = Steeper(bins=3, bound=1.0)
    theta = np.concatenate([np.zeros(6), np.full(2, -50.0)])  # the derivatives' parameters far below 0
    _, _, derivatives = transformer.spline_parameters(device(theta))
    # softplus(-50 + u_0) is about e^-50: the interior derivatives are the floor to 1e-15.
    np.testing.assert_allclose(host(derivatives), [1.0, 0.25, 0.25, 1.0], rtol=0, atol=1e-15)


# --- the bin-size check at its limits, and rational_quadratic_parameters' edges -------------------------------
def spline_with_widths(widths, dtype):
    bins = len(widths)
    parameters = (widths, [2.0 / bins] * bins, [1.0] * (bins + 1))
    return rational_quadratic_spline(device([0.0], dtype), *(device(p, dtype) for p in parameters), 1.0)


def test_bin_sizes_may_miss_their_total_by_exactly_the_float32_tolerance():
    """In float32 the tolerance is 10 K eps relative (above the 1e-6 floor): for K = 8 that is 80 * 2^-23, so
    the sum 2 may be off by 80 * 2^-22. Widths of 1/4 with the last one 2^-22 * 80 larger sum to exactly
    2 + 80 * 2^-22 (every partial sum is a multiple of 2^-22 below 2^1: exact in float32), which is accepted;
    81 * 2^-22 is refused. A tolerance of 11 K eps, 10 K / K eps, float64's eps or a strict < would each
    move one of the two verdicts."""
    for excess, accepted in ((80, True), (81, False)):
        widths = [0.25] * 7 + [0.25 + excess * 2.0**-22]
        assert np.float32(widths[-1]) == widths[-1], "the planted excess must be exact in float32"
        if accepted:
            spline_with_widths(widths, np.float32)
        else:
            with pytest.raises(ValueError, match=r"^rational_quadratic_spline: widths must sum to 2\.0 along"):
                spline_with_widths(widths, np.float32)


def test_bin_sizes_in_float64_may_miss_their_total_by_one_millionth():
    # 10 K eps is 1.8e-14 for K = 8 in float64, so the 1e-6 floor rules: |sum - 2| <= 2e-6.
    spline_with_widths([0.25] * 7 + [0.25 + 1.9e-6], np.float64)
    with pytest.raises(ValueError, match=r"^rational_quadratic_spline: widths must sum to 2\.0 along"):
        spline_with_widths([0.25] * 7 + [0.25 + 2.1e-6], np.float64)


def test_rational_quadratic_parameters_floors_and_their_defaults():
    from minflow.flows.splines import rational_quadratic_parameters

    free = (device([0.3, -0.2]), device([0.1, 0.4]), device([-60.0]))
    # Zero floors are allowed (bins may shrink to nothing, derivatives to softplus's e^-60).
    widths, heights, derivatives = rational_quadratic_parameters(
        *free, 1.0, min_bin_width=0.0, min_bin_height=0.0, min_derivative=0.0
    )
    assert float(host(derivatives)[1]) < 1e-20
    # The default min_derivative is 1e-3: softplus(-60) ~ 1e-26 leaves the floor alone.
    _, _, derivatives = rational_quadratic_parameters(*free, 1.0)
    np.testing.assert_allclose(host(derivatives), [1.0, 1e-3, 1.0], rtol=1e-12)


@pytest.mark.skipif(not on_cupy(), reason="needs CuPy as the default backend (the strict stand-in or a GPU)")
@pytest.mark.parametrize("function", ["piecewise_linear", "piecewise_linear_inverse", "rq", "rq_inverse"])
def test_splines_refuse_numpy_and_cupy_together(function):
    if function.startswith("piecewise"):
        call = piecewise_linear if function == "piecewise_linear" else piecewise_linear_inverse
        host_args = (np.array([0.3, 0.6]), np.array([0.5, 0.5]))
    else:
        call = rational_quadratic_spline if function == "rq" else rational_quadratic_spline_inverse
        host_args = (np.array([0.3, -0.6]), np.array([1.0, 1.0]), np.array([0.5, 1.5]), np.array([1.0, 2.0, 1.0]))
    device_args = tuple(device(a) for a in host_args)
    for position in range(len(host_args)):  # each argument alone on the host, the others on the device
        args = [host_args[i] if i == position else device_args[i] for i in range(len(host_args))]
        if function.startswith("rq"):
            args.append(1.0)
        with pytest.raises(ValueError, match=f"^{re.escape(MIXING_MESSAGE)}$"):
            call(*args)
