"""What the flows say when they refuse an input or an argument, and the defaults their docstrings promise.

A message is all a user sees of a refused call, so each one here is pinned whole (``^...$``): the class
that refuses, the argument it names and the value it got. Mutation testing (tests/MUTATION.md, "flows")
found these unpinned in every flow file at once: ``self._check_input(z, "z")`` with the name dropped or
changed, ``check_dim(dim, "ActNorm")`` with another owner, a default like ``LeakyReLU(slope=0.1)`` moved
by one, an argument like ``hidden=hidden`` dropped on the way to the parent class. The tables below
cover every flow file; no test trains anything.
"""

import inspect
import math
import re

import numpy as np
import pytest
from helpers import device, host, on_cupy

from minflow import testing
from minflow.flows import (
    autoregressive,
    coupling,
    elementwise,
    linear,
    multiscale,
    planar,
    residual,
    sinh_arcsinh,
    splines,
    transformers,
)
from minflow.flows.base import Inverse, Sequential
from minflow.nn import ACTIVATIONS

DIM = 3


def _exactly(message):
    """A ``match`` pattern for the whole of ``message``, taken literally."""
    return f"^{re.escape(message)}$"


@pytest.fixture(scope="module")
def flows():
    return testing.example_flows(DIM, seed=0)


# --- 1. inputs of the wrong shape -------------------------------------------------------------------
# Who names itself, and which argument, when forward (x) or inverse (z) gets a wrong shape. An Inverse
# runs its inner flow's other direction, so that flow speaks, about the other argument.
SPEAKERS = {
    "Inverse": (("RationalQuadraticSpline", "z"), ("RationalQuadraticSpline", "x")),
    "InverseAutoregressive": (("MaskedAutoregressive", "z"), ("MaskedAutoregressive", "x")),
    "SplineInverseAutoregressive": (("MaskedAutoregressive", "z"), ("MaskedAutoregressive", "x")),
}
# The expected shapes of x and z (B, ...), for the image flows (every other example is (B, DIM)).
IMAGE_SHAPES = {
    "Squeeze": ((3, 4, 2), (12, 2, 1)),  # Squeeze((d, 4, 2)): z is (4d, 2, 1)
    "ActNormImage": ((3, 2, 3), (3, 2, 3)),
    "InvertibleConv1x1": ((3, 2, 2), (3, 2, 2)),
    "MultiScale": ((1, 4, 4), (1, 4, 4)),  # MultiScale((1, 4, 4), ...) whatever DIM is
}
IMAGE_MESSAGES = {  # the image flows' expected shapes, written out once
    (3, 4, 2): "(B, 3, 4, 2)",
    (12, 2, 1): "(B, 12, 2, 1)",
    (3, 2, 3): "(B, 3, 2, 3)",
    (3, 2, 2): "(B, 3, 2, 2)",
    (1, 4, 4): "(B, 1, 4, 4)",
}


def _shape_errors(name, direction):
    """(event shape of the argument, the owner, the argument's name, its expected shape in words)."""
    index = 0 if direction == "forward" else 1
    owner, argument = SPEAKERS.get(name, ((name, "x"), (name, "z")))[index]
    if name in IMAGE_SHAPES:
        shape = IMAGE_SHAPES[name][index]
        return shape, owner, argument, IMAGE_MESSAGES[shape]
    return (DIM,), owner, argument, "(B, 3)"


def test_the_shape_tables_cover_every_example_flow(flows):
    """A new flow must say here who refuses its wrong shapes (the defaults fit a plain vector flow only)."""
    assert set(flows) == set(testing.example_flow_names())
    assert {name for name, flow in flows.items() if tuple(flow.event_shape) != (DIM,)} == set(IMAGE_SHAPES)
    assert {name for name, flow in flows.items() if isinstance(flow, Inverse)} == set(SPEAKERS)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", testing.example_flow_names())
def test_a_wrongly_shaped_batch_is_refused_naming_the_flow_and_the_argument(flows, name, direction):
    """forward(x) and inverse(z) refuse a batch whose sample shape is wrong, naming themselves and x or z."""
    event, owner, argument, expected = _shape_errors(name, direction)
    bad = (2, 5) if len(event) == 3 else (2, DIM + 1)
    message = f"{owner}: {argument} must have shape {expected}, got {bad}"
    with pytest.raises(ValueError, match=_exactly(message)):
        getattr(flows[name], direction)(device(np.zeros(bad)))


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", testing.example_flow_names())
def test_a_single_unbatched_sample_is_refused_naming_the_flow_and_the_argument(flows, name, direction):
    """One sample without its batch axis is the commonest shape mistake: refused, not broadcast."""
    event, owner, argument, expected = _shape_errors(name, direction)
    message = f"{owner}: {argument} must have shape {expected}, got {event}"
    with pytest.raises(ValueError, match=_exactly(message)):
        getattr(flows[name], direction)(device(np.zeros(event)))


@pytest.mark.parametrize("cls", [elementwise.LeakyReLU, elementwise.Sigmoid, elementwise.Logit])
def test_a_flow_of_any_event_shape_still_refuses_an_unbatched_input(cls):
    """The parameter-free elementwise flows take any event shape, but still need the batch axis."""
    flow = cls()
    for direction, argument in [("forward", "x"), ("inverse", "z")]:
        message = f"{cls.__name__}: {argument} must be batched, shape (B, ...), got (3,)"
        with pytest.raises(ValueError, match=_exactly(message)):
            getattr(flow, direction)(device([0.5, 0.5, 0.5]))


def test_sequential_inverse_steps_checks_z_and_returns_every_intermediate(flows):
    """inverse_steps (the morph figure) checks z like inverse does, and walks from z to inverse(z)."""
    sequential = flows["Sequential"]
    with pytest.raises(ValueError, match=_exactly("Sequential: z must have shape (B, 3), got (2, 4)")):
        sequential.inverse_steps(device(np.zeros((2, 4))))
    z = device(np.linspace(-1.0, 1.0, 6).reshape(2, 3))
    steps = sequential.inverse_steps(z)
    assert len(steps) == len(sequential) + 1
    np.testing.assert_array_equal(host(steps[0]), host(z))
    np.testing.assert_array_equal(host(steps[1]), host(sequential[-1].inverse(z)[0]))
    # the same operations in the same order as inverse: equal to rounding (one ulp of values near 1)
    np.testing.assert_allclose(host(steps[-1]), host(sequential.inverse(z)[0]), rtol=1e-12, atol=1e-12)


PARAMETER_FREE = {"LeakyReLU", "Logit", "Sigmoid", "Squeeze"}  # nothing to tell the flow's namespace by


@pytest.mark.skipif(not on_cupy(), reason="a NumPy array is the flow's own kind of array on the NumPy backend")
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", sorted(set(testing.example_flow_names()) - PARAMETER_FREE))
def test_a_host_array_given_to_a_device_flow_is_refused_naming_the_flow_and_the_argument(flows, name, direction):
    """On CuPy a NumPy input is refused with the way out, not with a failure deep inside an op."""
    assert {n for n, f in flows.items() if not f.parameters() and not f.named_buffers()} == PARAMETER_FREE
    event, owner, argument, _ = _shape_errors(name, direction)
    message = (
        f"{owner}: {argument} is a numpy array but the flow's parameters are cupy arrays; move one of them "
        "(minflow.backend.to_device / to_numpy)"
    )
    with pytest.raises(ValueError, match=_exactly(message)):
        getattr(flows[name], direction)(np.zeros((2, *event)))


# --- 2. arguments refused by constructors and functions -----------------------------------------------
def _affine():
    return transformers.AffineTransformer()


def _masses(*values):
    return device(np.array(values))


def _spline(function, x=0.0, widths=(1.0, 1.0), heights=(1.0, 1.0), derivatives=(1.0, 1.0, 1.0), bound=1.0):
    """Call a rational-quadratic spline function with one point and bins on [-1, 1] (valid by default)."""
    return function(device([x]), device(widths), device(heights), device(derivatives), bound)


def _rq_parameters(widths=(0.0, 0.0), heights=(0.0, 0.0), derivatives=(0.0,), bound=1.0, **minimums):
    free = (device(widths), device(heights), device(derivatives))
    return splines.rational_quadratic_parameters(*free, bound, **minimums)


def _first_batch(flow, shape, dtype=None):
    """The first forward of an ActNorm: the call that initialises it from the batch."""
    return flow.forward(device(np.linspace(0.0, 1.0, math.prod(shape)).reshape(shape), dtype=dtype))


POSITIVE = "must be a positive finite number, got"
DIM_0 = "dim must be a positive integer, got 0"
CR = residual.ContractiveResidual

REFUSALS = [
    # base.py
    (lambda: Sequential([]), "Sequential needs a non-empty list of Flow objects"),
    (lambda: Sequential([linear.Reverse(2), "flow"]), "Sequential needs a non-empty list of Flow objects"),
    (lambda: Inverse(3), "Inverse needs a Flow, got int"),
    # linear.py
    (lambda: linear.DenseLinear(0), f"DenseLinear: {DIM_0}"),
    (lambda: linear.LULinear(True), "LULinear: dim must be a positive integer, got True"),
    (lambda: linear.ActNorm(2.0), "ActNorm: dim must be a positive integer, got 2.0"),
    (lambda: linear.Reverse(0), f"Reverse: {DIM_0}"),
    (lambda: linear.Permutation.random(-1), "Permutation: dim must be a positive integer, got -1"),
    (
        lambda: linear.Permutation(np.zeros((2, 2), dtype=np.int64)),
        "permutation must be a non-empty 1-D sequence, got shape (2, 2)",
    ),
    (
        lambda: linear.Permutation(np.zeros(0, dtype=np.int64)),
        "permutation must be a non-empty 1-D sequence, got shape (0,)",
    ),
    (lambda: linear.Permutation([0.0, 1.0]), "permutation must hold integers, got dtype float64"),
    (
        lambda: linear.Permutation([0, 0, 5]),
        "permutation must hold each of 0..2 exactly once; got [0, 0, 5]: "
        "out of range [5], repeated [0], missing [1, 2]",
    ),
    (
        lambda: _first_batch(linear.ActNorm(3), (1, 3)),
        "ActNorm initialises from the mean and std of its first "
        "batch, which needs at least 2 samples; got x of shape (1, 3)",
    ),
    (
        lambda: _first_batch(multiscale.ActNormImage(1, 1, 1), (1, 1, 1, 1)),
        "ActNormImage initialises from the "
        "mean and std of its first batch, which needs at least 2 values per channel (samples times pixels); got x "
        "of shape (1, 1, 1, 1)",
    ),
    # elementwise.py and sinh_arcsinh.py
    (lambda: elementwise.Elementwise("affine", 2), "Elementwise: transformer must be a Transformer, got str"),
    (lambda: elementwise.Elementwise(_affine(), 0), f"Elementwise: {DIM_0}"),
    (lambda: elementwise.ElementwiseAffine(0), f"ElementwiseAffine: {DIM_0}"),
    (lambda: sinh_arcsinh.SinhArcsinh(-2), "SinhArcsinh: dim must be a positive integer, got -2"),
    (lambda: elementwise.LeakyReLU(slope=0), f"LeakyReLU: slope {POSITIVE} 0"),
    (lambda: elementwise.LeakyReLU(slope=math.inf), f"LeakyReLU: slope {POSITIVE} inf"),
    (
        lambda: elementwise.PiecewiseLinear(2, bins=0),
        "PiecewiseLinearTransformer: bins must be a positive integer, got 0",
    ),
    (lambda: elementwise.RationalQuadraticSpline(2, bins=1), "SplineTransformer: bins must be an integer >= 2, got 1"),
    (lambda: elementwise.RationalQuadraticSpline(2, bound=-1.0), f"SplineTransformer: bound {POSITIVE} -1.0"),
    # transformers.py
    (lambda: transformers.leaky_relu(device([1.0]), 0.0), f"leaky_relu: slope {POSITIVE} 0.0"),
    (lambda: transformers.leaky_relu_inverse(device([1.0]), -1), f"leaky_relu_inverse: slope {POSITIVE} -1"),
    (lambda: transformers.AffineTransformer(scale_bound=-1), f"AffineTransformer: scale_bound {POSITIVE} -1"),
    (
        lambda: _affine().forward(device([1.0]), device([0.0, 0.0, 0.0])),
        "AffineTransformer: theta must have shape (..., 2) (params_per_dim on the last axis), got (3,)",
    ),
    (
        lambda: sinh_arcsinh.SinhArcsinhTransformer().inverse(device([1.0]), device(0.0)),
        "SinhArcsinhTransformer: theta must have shape (..., 2) (params_per_dim on the last axis), got ()",
    ),
    (lambda: transformers.logit(device([0.5, 2.0])), "logit: y must lie in (0.0, 1.0), got values in [0.5, 2.0]"),
    (
        lambda: transformers.logit(device([0.25, np.nan])),
        "logit: y must lie in (0.0, 1.0), got values in [0.25, 0.25] and NaN",
    ),
    (lambda: transformers.logit(device([0.5, 1.0])), "logit: y must lie in (0.0, 1.0), got values in [0.5, 1.0]"),
    (lambda: transformers.logit(device([np.nan])), "logit: y must lie in (0.0, 1.0), got values in [nan] (all NaN)"),
    # splines.py
    (lambda: splines.SplineTransformer(bins=1), "SplineTransformer: bins must be an integer >= 2, got 1"),
    (lambda: splines.SplineTransformer(bound=0.0), f"SplineTransformer: bound {POSITIVE} 0.0"),
    (
        lambda: splines.PiecewiseLinearTransformer(bins=0),
        "PiecewiseLinearTransformer: bins must be a positive integer, got 0",
    ),
    (
        lambda: splines.piecewise_linear(device([1.5]), _masses(0.5, 0.5)),
        "piecewise_linear: x must lie in [0.0, 1.0], got values in [1.5, 1.5]",
    ),
    (
        lambda: splines.piecewise_linear(device([0.5]), _masses(0.5, 0.75)),
        "piecewise_linear: bin_masses must sum to 1.0 along the last axis, got sums in [1.25, 1.25]",
    ),
    (
        lambda: splines.piecewise_linear(device([0.5]), device(1.0)),
        "piecewise_linear: bin_masses must have shape (..., K) with K >= 1, got ()",
    ),
    (
        lambda: splines.piecewise_linear_inverse(device([-0.5]), _masses(0.5, 0.5)),
        "piecewise_linear_inverse: y must lie in [0.0, 1.0], got values in [-0.5, -0.5]",
    ),
    (
        lambda: splines.piecewise_linear_inverse(device([0.5]), _masses(-0.5, 1.5)),
        "piecewise_linear_inverse: bin_masses must be positive, got values in [-0.5, 1.5]",
    ),
    (
        lambda: splines.piecewise_linear_inverse(device([0.5]), _masses(0.25, 0.5)),
        "piecewise_linear_inverse: bin_masses must sum to 1.0 along the last axis, got sums in [0.75, 0.75]",
    ),
    (lambda: _spline(splines.rational_quadratic_spline, bound=0), f"rational_quadratic_spline: bound {POSITIVE} 0"),
    (
        lambda: _spline(splines.rational_quadratic_spline, widths=(1.0, 2.0)),
        "rational_quadratic_spline: widths must sum to 2.0 along the last axis, got sums in [3.0, 3.0]",
    ),
    (
        lambda: _spline(splines.rational_quadratic_spline_inverse, derivatives=(1.0, 1.0)),
        "rational_quadratic_spline_inverse: widths and heights must have shape (..., K) and derivatives (..., K + 1), "
        "got (2,), (2,) and (2,)",
    ),
    (
        lambda: _spline(splines.rational_quadratic_spline_inverse, heights=(3.0, -1.0)),
        "rational_quadratic_spline_inverse: heights must be positive, got values in [-1.0, 3.0]",
    ),
    (
        lambda: _spline(splines.rational_quadratic_spline_inverse, derivatives=(1.0, 0.0, 1.0)),
        "rational_quadratic_spline_inverse: derivatives must be positive, got values in [0.0, 1.0]",
    ),
    (lambda: _rq_parameters(bound=-2.0), f"rational_quadratic_parameters: bound {POSITIVE} -2.0"),
    (
        lambda: _rq_parameters(heights=(0.0,)),
        "rational_quadratic_parameters: unnormalized_widths and "
        "unnormalized_heights must have shape (..., K) with the same K, got (2,) and (1,)",
    ),
    (
        lambda: _rq_parameters(derivatives=(0.0, 0.0)),
        "rational_quadratic_parameters: unnormalized_derivatives must have shape (..., K - 1) = (..., 1), got (2,)",
    ),
    (
        lambda: _rq_parameters(min_bin_height=0.5),
        "rational_quadratic_parameters: min_bin_height * K must lie in [0, 1), got 0.5 * 2",
    ),
    (
        lambda: _rq_parameters(min_bin_width=0.5),
        "rational_quadratic_parameters: min_bin_width * K must lie in [0, 1), got 0.5 * 2",
    ),
    (
        lambda: _rq_parameters(widths=0.0, heights=()),  # a 0-d widths has no K, not even the 0 of heights
        "rational_quadratic_parameters: unnormalized_widths and "
        "unnormalized_heights must have shape (..., K) with the same K, got () and (0,)",
    ),
    (
        lambda: _rq_parameters(min_derivative=-1.0),
        "rational_quadratic_parameters: min_derivative must be >= 0, got -1.0",
    ),
    # coupling.py
    (lambda: coupling.half_mask(0), f"half_mask: {DIM_0}"),
    (lambda: coupling.alternating_mask(0), f"alternating_mask: {DIM_0}"),
    (lambda: coupling.Coupling([True, False], "affine"), "Coupling: transformer must be a Transformer, got str"),
    (lambda: coupling.Coupling([], _affine()), f"Coupling: {DIM_0}"),
    (
        lambda: coupling.Coupling([True, True], _affine()),
        "Coupling: mask must keep at least one coordinate and change one, got [True, True]",
    ),
    (
        lambda: coupling.AffineCoupling([False, False]),
        "AffineCoupling: mask must keep at least one coordinate and change one, got [False, False]",
    ),
    (lambda: coupling.AffineCoupling([True, False], scale_bound=0), f"AffineTransformer: scale_bound {POSITIVE} 0"),
    # a bool is a number to Python (True == 1), never a positive number to minflow
    (
        lambda: coupling.AffineCoupling([True, False], scale_bound=True),
        f"AffineTransformer: scale_bound {POSITIVE} True",
    ),
    (lambda: coupling.SplineCoupling([True, False], bins=1), "SplineTransformer: bins must be an integer >= 2, got 1"),
    (
        lambda: coupling.PiecewiseLinearCoupling([True, False], bins=0),
        "PiecewiseLinearTransformer: bins must be a positive integer, got 0",
    ),
    # autoregressive.py
    (
        lambda: autoregressive.made_degrees(3, (4,), order=[0, 0, 1]),
        "order must be a permutation of 0..2, got [0, 0, 1]",
    ),
    (lambda: autoregressive.MADE(0, 2), f"MADE: {DIM_0}"),
    (lambda: autoregressive.MADE(2, 2, hidden=()), "MADE needs at least one hidden layer"),
    (
        lambda: autoregressive.MADE(2, 2, activation="gelu"),
        f"activation must be one of {sorted(ACTIVATIONS)}, got 'gelu'",
    ),
    (lambda: autoregressive.MaskedAutoregressive(0), f"MaskedAutoregressive: {DIM_0}"),
    (
        lambda: autoregressive.MaskedAutoregressive(2, "affine"),
        "MaskedAutoregressive: transformer must be a Transformer, got str",
    ),
    (lambda: autoregressive.SplineAutoregressive(0), f"SplineAutoregressive: {DIM_0}"),
    (
        lambda: autoregressive.PiecewiseLinearAutoregressive(2, bins=0),
        "PiecewiseLinearTransformer: bins must be a positive integer, got 0",
    ),
    # an IAF is the Inverse of a MAF it builds: that MAF checks the arguments, under its own name
    (lambda: autoregressive.InverseAutoregressive(0), f"MaskedAutoregressive: {DIM_0}"),
    (
        lambda: autoregressive.InverseAutoregressive(2, 3),
        "MaskedAutoregressive: transformer must be a Transformer, got int",
    ),
    (lambda: autoregressive.SplineInverseAutoregressive(2, bound=0), f"SplineTransformer: bound {POSITIVE} 0"),
    # residual.py
    (lambda: residual.AdditiveResidualCoupling(0), f"AdditiveResidualCoupling: {DIM_0}"),
    (
        lambda: residual.AdditiveResidualCoupling(1),
        "AdditiveResidualCoupling: dim must be >= 2 (one coordinate per half), got 1",
    ),
    (lambda: CR(0), f"ContractiveResidual: {DIM_0}"),
    (
        lambda: CR(2, activation="relu"),
        "ContractiveResidual: activation must be one of ['softplus', 'tanh'] (smooth, |phi'| <= 1), got 'relu'",
    ),
    (lambda: CR(2, coefficient=1.0), "ContractiveResidual: coefficient must lie in (0, 1) for a contraction, got 1.0"),
    (lambda: CR(2, coefficient=0.0), "ContractiveResidual: coefficient must lie in (0, 1) for a contraction, got 0.0"),
    (
        lambda: CR(2, log_det_method="slq"),
        "ContractiveResidual: log_det_method must be one of ('exact', 'series', 'hutchinson'), got 'slq'",
    ),
    (lambda: CR(2, spectral_norm="svd"), "ContractiveResidual: spectral_norm must be 'exact' or 'power', got 'svd'"),
    (lambda: CR(2, series_terms=0), "ContractiveResidual: series_terms must be a positive integer, got 0"),
    (lambda: CR(2, hutchinson_samples=0), "ContractiveResidual: hutchinson_samples must be a positive integer, got 0"),
    (lambda: CR(2, power_iterations=-1), "ContractiveResidual: power_iterations must be an integer >= 0, got -1"),
    (lambda: CR(2, max_iterations=0), "ContractiveResidual: max_iterations must be a positive integer, got 0"),
    (lambda: CR(2, inverse_tolerance=0.0), f"ContractiveResidual: inverse_tolerance {POSITIVE} 0.0"),
    # planar.py
    (lambda: planar.Planar(0), f"Planar: {DIM_0}"),
    (lambda: planar.Planar(2, tolerance=0), f"Planar: tolerance {POSITIVE} 0"),
    (lambda: planar.Planar(2, max_iterations=0), "Planar: max_iterations must be a positive integer, got 0"),
    (lambda: planar.Radial(0), f"Radial: {DIM_0}"),
    # multiscale.py
    (lambda: multiscale.Squeeze((1, 2)), "Squeeze: an image event shape is (C, H, W), got (1, 2)"),
    (lambda: multiscale.Squeeze(4), "Squeeze: an image event shape is (C, H, W), got None"),
    (lambda: multiscale.Squeeze((0, 2, 2)), f"Squeeze: {DIM_0}"),
    (lambda: multiscale.Squeeze((1, 3, 2)), "Squeeze: height and width must be even, got shape (1, 3, 2)"),
    (lambda: multiscale.ActNormImage(1, 0, 2), f"ActNormImage: {DIM_0}"),
    (lambda: multiscale.InvertibleConv1x1(1, 2, 2.5), "InvertibleConv1x1: dim must be a positive integer, got 2.5"),
    (lambda: multiscale.MultiScale((1, 4)), "MultiScale: an image event shape is (C, H, W), got (1, 4)"),
    (lambda: multiscale.MultiScale((1, 4, 4), scales=0), "MultiScale (scales): dim must be a positive integer, got 0"),
    (
        lambda: multiscale.MultiScale((1, 4, 4), steps_per_scale=0),
        "MultiScale (steps_per_scale): dim must be a positive integer, got 0",
    ),
    (
        lambda: multiscale.MultiScale((1, 4, 4), scales=3),
        "MultiScale: height and width must be divisible by 2^scales = 8 (one squeeze per scale), got shape (1, 4, 4)",
    ),
]


def _id(message):
    """A short test id from a message: its first words, letters and digits only."""
    return re.sub(r"\W+", "_", message)[:60]


@pytest.mark.parametrize(("call", "message"), REFUSALS, ids=[_id(message) for _, message in REFUSALS])
def test_a_bad_argument_is_refused_naming_the_owner_the_argument_and_the_value(call, message):
    """Every check of every flow file: the whole message, so the owner and argument names cannot drift."""
    with pytest.raises(ValueError, match=_exactly(message)):
        call()


def test_actnorm_refuses_a_first_batch_of_another_dtype_naming_both():
    """A float32 batch would silently become float64 parameters (or lose precision): refused, both named."""
    message = "ActNorm: x is float32 but the parameters are float64; cast one explicitly"
    with pytest.raises(TypeError, match=_exactly(message)):
        _first_batch(linear.ActNorm(3).astype(np.float64), (4, 3), dtype=np.float32)


def test_actnorm_initialises_from_two_samples_the_fewest_with_a_spread():
    """Two samples are enough for a mean and a standard deviation: accepted (the bound is < 2, not <= 2)."""
    flow = linear.ActNorm(3)
    z, _ = _first_batch(flow, (2, 3))
    assert bool(host(flow.initialized)) and np.allclose(host(z), [[-1.0] * 3, [1.0] * 3], atol=1e-5)


def test_planar_forward_names_its_unsolved_samples_and_a_nan_input():
    """The root-finding error counts the failed samples and says when the input itself is not finite."""
    flow = planar.Planar(2, seed=0, max_iterations=4)
    x = device([[0.5, -0.5], [np.nan, 0.0], [1.0, 2.0]])
    message = (
        "Planar.forward: the root-finding did not converge for 1 of 3 samples in 4 iterations (worst relative "
        "residual nan, tolerance 1e-12); the input holds NaN or inf; raise max_iterations or tolerance"
    )
    with pytest.raises(RuntimeError, match=_exactly(message)):
        flow.forward(x)
    # finite samples one Newton step cannot solve: no note about NaN (the residual's digits are the solver's)
    flow = planar.Planar(2, seed=0, max_iterations=1)
    message = (
        "Planar.forward: the root-finding did not converge for 3 of 3 samples in 1 iterations (worst relative "
        "residual RESIDUAL, tolerance 1e-12); raise max_iterations or tolerance"
    )
    pattern = _exactly(message).replace("RESIDUAL", r"[0-9.e+-]+")
    with pytest.raises(RuntimeError, match=pattern):
        flow.forward(device([[0.5, -0.5], [3.0, 0.0], [1.0, 2.0]]))


def test_the_contractive_inverse_s_trace_checks_z_like_the_inverse():
    """fixed_point_trace (the lecture's plot) refuses a wrong z with the inverse's own words."""
    flow = residual.ContractiveResidual(3, seed=0)
    message = "ContractiveResidual: z must have shape (B, 3), got (2, 4)"
    with pytest.raises(ValueError, match=_exactly(message)):
        flow.fixed_point_trace(device(np.zeros((2, 4))))


# --- 3. documented defaults, and where each argument ends up --------------------------------------------
def _widths(layers):
    """The hidden widths of a stack of linear layers (weights are (in, out)): what ``hidden`` asked for."""
    return tuple(layer.weight.shape[1] for layer in layers[:-1])


def _couplings(flow):
    return [layer for steps in flow.steps for layer in steps.flows if isinstance(layer, coupling.AffineCoupling)]


def _conditioner(flow):
    """{hidden, activation} of a coupling's conditioner MLP."""
    return {"hidden": [_widths(flow.conditioner.layers)], "activation": [flow.conditioner.activation]}


def _made(flow):
    """{hidden, activation} of a MAF's MADE."""
    return {"hidden": [_widths(flow.made.layers)], "activation": [flow.made.activation]}


def _spline_transformer(transformer):
    return {"bins": [transformer.bins], "bound": [transformer.bound]}


# callable: (the arguments it needs, {argument: (documented default, another value)}, where each one lands).
# The reader returns {argument: [every place the argument ends up]}: each must hold the value passed.
HIDDEN, ACTIVATION = ((64, 64), (5,)), ("relu", "tanh")
DEFAULTS = {
    elementwise.LeakyReLU: ({}, {"slope": (0.1, 0.5)}, lambda f: {"slope": [f.slope]}),
    elementwise.PiecewiseLinear: (
        {"dim": 2},
        {"bins": (5, 3)},
        lambda f: {"bins": [f.bins, f.transformer.bins, f.theta.shape[1]]},
    ),
    elementwise.RationalQuadraticSpline: (
        {"dim": 2},
        {"bins": (8, 4), "bound": (3.0, 2.0)},
        lambda f: {"bins": [f.bins, f.transformer.bins], "bound": [f.bound, f.transformer.bound]},
    ),
    transformers.AffineTransformer: ({}, {"scale_bound": (2.0, 1.0)}, lambda t: {"scale_bound": [t.scale_bound]}),
    splines.SplineTransformer: ({}, {"bins": (8, 3), "bound": (4.0, 2.5)}, _spline_transformer),
    splines.PiecewiseLinearTransformer: ({}, {"bins": (5, 2)}, lambda t: {"bins": [t.bins, t.params_per_dim]}),
    coupling.Coupling: (
        {"mask": [True, False], "transformer": transformers.AffineTransformer()},
        {"hidden": HIDDEN, "activation": ACTIVATION},
        _conditioner,
    ),
    coupling.AdditiveCoupling: ({"mask": [True, False]}, {"hidden": HIDDEN, "activation": ACTIVATION}, _conditioner),
    coupling.AffineCoupling: (
        {"mask": [True, False]},
        {"hidden": HIDDEN, "activation": ACTIVATION, "scale_bound": (2.0, 1.0)},
        lambda f: {**_conditioner(f), "scale_bound": [f.transformer.scale_bound]},
    ),
    coupling.SplineCoupling: (
        {"mask": [True, False]},
        {"bins": (8, 3), "bound": (4.0, 2.5), "hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {**_conditioner(f), **_spline_transformer(f.transformer)},
    ),
    coupling.PiecewiseLinearCoupling: (
        {"mask": [True, False]},
        {"bins": (5, 2), "hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {**_conditioner(f), "bins": [f.transformer.bins]},
    ),
    autoregressive.MADE: (
        {"dim": 2, "params_per_dim": 2},
        {"hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {"hidden": [_widths(f.layers)], "activation": [f.activation]},
    ),
    autoregressive.MaskedAutoregressive: ({"dim": 2}, {"hidden": HIDDEN, "activation": ACTIVATION}, _made),
    autoregressive.InverseAutoregressive: (
        {"dim": 2},
        {"hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: _made(f.flow),
    ),
    autoregressive.SplineAutoregressive: (
        {"dim": 2},
        {"bins": (8, 3), "bound": (4.0, 2.5), "hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {**_made(f), **_spline_transformer(f.transformer)},
    ),
    autoregressive.PiecewiseLinearAutoregressive: (
        {"dim": 2},
        {"bins": (5, 2), "hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {**_made(f), "bins": [f.transformer.bins]},
    ),
    autoregressive.SplineInverseAutoregressive: (
        {"dim": 2},
        {"bins": (8, 3), "bound": (4.0, 2.5), "hidden": HIDDEN, "activation": ACTIVATION},
        lambda f: {**_made(f.flow), **_spline_transformer(f.flow.transformer)},
    ),
    residual.AdditiveResidualCoupling: (
        {"dim": 2},
        {"hidden": ((64,), (5,)), "activation": ("tanh", "relu")},
        lambda f: {
            "hidden": [_widths(f.f1.layers), _widths(f.f2.layers)],
            "activation": [f.f1.activation, f.f2.activation],
        },
    ),
    residual.ContractiveResidual: (
        {"dim": 2},
        {
            "hidden": ((32,), (5,)),
            "activation": ("tanh", "softplus"),
            "coefficient": (0.9, 0.5),
            "log_det_method": ("exact", "series"),
            "series_terms": (10, 3),
            "hutchinson_samples": (1, 2),
            "spectral_norm": ("exact", "power"),
            "power_iterations": (5, 2),
            "inverse_tolerance": (1e-10, 1e-8),
            "max_iterations": (500, 50),
        },
        lambda f: {
            "hidden": [_widths(f.layers)],
            "activation": [f.activation],
            "coefficient": [f.coefficient] + [layer.coefficient for layer in f.layers],
            "log_det_method": [f.log_det_method],
            "series_terms": [f.series_terms],
            "hutchinson_samples": [f.hutchinson_samples],
            "spectral_norm": [layer.spectral_norm for layer in f.layers],
            "power_iterations": [f.power_iterations],
            "inverse_tolerance": [f.inverse_tolerance],
            "max_iterations": [f.max_iterations],
        },
    ),
    planar.Planar: (
        {"dim": 2},
        {"tolerance": (1e-12, 1e-9), "max_iterations": (100, 10)},
        lambda f: {"tolerance": [f.tolerance], "max_iterations": [f.max_iterations]},
    ),
    multiscale.MultiScale: (
        {"shape": (1, 4, 4)},
        {
            "scales": (2, 1),
            "steps_per_scale": (4, 1),
            "hidden": HIDDEN,
            "activation": ACTIVATION,
            "scale_bound": (2.0, 1.0),
        },
        lambda f: {
            "scales": [len(f.steps), len(f.squeezes), len(f.part_shapes)],
            "steps_per_scale": [len(steps) // 3 for steps in f.steps],
            "hidden": [_widths(c.conditioner.layers) for c in _couplings(f)],
            "activation": [c.conditioner.activation for c in _couplings(f)],
            "scale_bound": [c.transformer.scale_bound for c in _couplings(f)],
        },
    ),
    multiscale.glow_step: (
        {"shape": (4, 2, 2), "index": 0},
        {"hidden": HIDDEN, "activation": ACTIVATION, "scale_bound": (2.0, 1.0)},
        lambda step: {**_conditioner(step[2]), "scale_bound": [step[2].transformer.scale_bound]},
    ),
}


def _name(callable_):
    return callable_.__qualname__


@pytest.mark.parametrize("callable_", DEFAULTS, ids=_name)
def test_the_signature_holds_the_documented_defaults(callable_):
    """The defaults the docstrings promise are the ones in the signature (each is written in the docstring)."""
    _, arguments, _ = DEFAULTS[callable_]
    parameters = inspect.signature(callable_).parameters
    assert {name: parameters[name].default for name in arguments} == {n: v[0] for n, v in arguments.items()}


@pytest.mark.parametrize("callable_", DEFAULTS, ids=_name)
def test_an_object_built_with_the_defaults_uses_them_everywhere(callable_):
    """Built without the arguments, every place each one lands holds the documented default."""
    required, arguments, read = DEFAULTS[callable_]
    landed = read(callable_(**required))
    assert landed == {name: [default] * len(landed[name]) for name, (default, _) in arguments.items()}


@pytest.mark.parametrize("callable_", DEFAULTS, ids=_name)
def test_every_argument_reaches_every_place_it_should(callable_):
    """Passed a non-default value, each argument lands everywhere (not dropped on the way to a parent class)."""
    required, arguments, read = DEFAULTS[callable_]
    for name, (_, other) in arguments.items():
        landed = read(callable_(**required, **{name: other}))[name]
        assert landed == [other] * len(landed) and landed, name


def test_a_masked_autoregressive_flow_is_affine_by_default_with_realnvp_s_scale_bound():
    """``transformer=None`` means AffineTransformer() (documented), for MAF and IAF alike."""
    for flow in [autoregressive.MaskedAutoregressive(2), autoregressive.InverseAutoregressive(2).flow]:
        assert type(flow.transformer) is transformers.AffineTransformer and flow.transformer.scale_bound == 2.0
    assert inspect.signature(autoregressive.MaskedAutoregressive).parameters["transformer"].default is None


def test_the_autoregressive_flows_pass_their_transformer_and_order_to_made():
    """IAF and the named variants hand ``transformer`` and ``order`` on; the order sets MADE's input degrees."""
    spline = splines.SplineTransformer(bins=3)
    assert autoregressive.InverseAutoregressive(2, spline).flow.transformer is spline
    builders = [
        lambda order: autoregressive.MaskedAutoregressive(3, order=order),
        lambda order: autoregressive.InverseAutoregressive(3, order=order).flow,
        lambda order: autoregressive.SplineAutoregressive(3, order=order),
        lambda order: autoregressive.PiecewiseLinearAutoregressive(3, order=order),
        lambda order: autoregressive.SplineInverseAutoregressive(3, order=order).flow,
    ]
    for build in builders:
        # order [2, 0, 1]: coordinate 2 comes first (degree 1), then 0 (degree 2), then 1 (degree 3)
        assert host(build([2, 0, 1]).made.degrees).tolist() == [2, 3, 1]
        assert host(build(None).made.degrees).tolist() == [1, 2, 3], "no order: the natural one"


def test_glow_steps_alternate_which_half_of_the_channels_the_coupling_keeps():
    """Even steps keep the first half of the channels, odd steps the second (every channel gets transformed)."""
    first, second = list(range(8)), list(range(8, 16))  # channels 0-1 and 2-3 of (4, 2, 2), flattened
    kept = [host(multiscale.glow_step((4, 2, 2), index)[2].kept).tolist() for index in range(4)]
    assert kept == [first, second, first, second]


def test_the_named_masks_keep_the_documented_side_by_default():
    """half_mask keeps the first half, alternating and checkerboard masks the even positions, by default."""
    assert coupling.half_mask(3) == [True, False, False] and coupling.half_mask(3, first=False) == [False, True, True]
    assert coupling.alternating_mask(3) == [True, False, True]
    assert coupling.alternating_mask(3, even=False) == [False, True, False]
    assert coupling.channel_mask(2, 1, 1) == [[[True]], [[False]]]
    assert coupling.checkerboard_mask(1, 2, 2) == [[[True, False], [False, True]]]
    assert coupling.checkerboard_mask(1, 2, 2, even=False) == [[[False, True], [True, False]]]


# --- 4. what a flow prints ------------------------------------------------------------------------------
REPRS = [
    (lambda: elementwise.Sigmoid(), "Sigmoid()"),  # no event shape: nothing between the brackets
    (lambda: transformers.AdditiveTransformer(), "AdditiveTransformer()"),
    (lambda: transformers.AffineTransformer(scale_bound=1.5), "AffineTransformer(scale_bound=1.5)"),
    (lambda: linear.LULinear(3), "LULinear(event_shape=(3,))"),
    (lambda: linear.Reverse(3), "Reverse(dim=3)"),
    (lambda: linear.Permutation([2, 0, 1]), "Permutation(permutation=[2, 0, 1])"),
    (lambda: planar.Planar(3, tolerance=1e-9, max_iterations=7), "Planar(dim=3, tolerance=1e-09, max_iterations=7)"),
    (lambda: planar.Radial(2), "Radial(dim=2)"),
    (
        lambda: coupling.Coupling([True, False], transformers.AdditiveTransformer()),
        "Coupling(event_shape=(2,), AdditiveTransformer)",
    ),
    (
        lambda: multiscale.MultiScale((1, 4, 4), scales=2, steps_per_scale=1, hidden=(4,)),
        "MultiScale(event_shape=(1, 4, 4), scales=2, steps_per_scale=1, parts=[(2, 2, 2), (8, 1, 1)])",
    ),
    (
        lambda: Sequential([linear.Reverse(2), elementwise.LeakyReLU()]),
        "Sequential(\n  Reverse(dim=2)\n  LeakyReLU(slope=0.1)\n)",
    ),
]


@pytest.mark.parametrize(("build", "text"), REPRS, ids=[_id(text) for _, text in REPRS])
def test_a_flow_prints_its_class_and_its_settings(build, text):
    """``print(model)`` is how a user inspects a stack: one line per flow, with the settings that matter."""
    assert repr(build()) == text
