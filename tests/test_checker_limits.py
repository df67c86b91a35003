"""The checker tested at its limits: every property fails just over its tolerance and passes just under.

``tests/test_testing.py`` shows each check catching a flow that is badly wrong (off by 0.1,
1e-3). Here every planted error has a size in the checker's own metric that the test sets
exactly, |got - expected| / (1 + |expected|) = factor * tolerance, so that a tolerance made
looser (or a check that looks at less than it should) turns a test red:

- a flow (or transformer) wrong by just over a tolerance fails, naming the property;
- the same one wrong by just under passes every check;
- each planted error is seen by its own property only: the checks before it, in check_flow's
  order, stay below their tolerance, so the message names the property under test.

Two pairs of factors: (1.5, 0.5), and a tight one, 1 +- 1% in float64 and 1 +- 5% in float32.
The tight pair is possible because the base maps are linear: the only other errors are
rounding (~1e-15 in float64, ~1e-7 in float32) and, in the finite-difference checks,
~1e-10 / ~1e-4 (measured below), far under 1% / 5% of the tolerance.

The last part tests the tolerances' justifications: the finite-difference error of smooth
maps with known derivatives is below the tolerance by the margin the docstrings state.
"""

import math
import re

import numpy as np
import pytest
from helpers import device, host

from minflow import backend, nn, testing
from minflow.autodiff import Tensor, no_grad, ops
from minflow.flows.base import Flow
from minflow.flows.splines import PiecewiseLinearTransformer
from minflow.flows.transformers import Transformer
from minflow.testing import flow_checks

DTYPES = ["float64", "float32"]
TIGHT = {"float64": 0.01, "float32": 0.05}  # see the module docstring
FACTORS = ["wide", "tight"]


def step(dtype):
    return testing._TOLERANCES[dtype][0]


def tolerance(dtype, kind):
    """The documented tolerance of a kind of check: finite differences or round trips."""
    fd, round_trip = testing._TOLERANCES[dtype][1:]
    return {"finite differences": fd, "round trip": round_trip}[kind]


def over_and_under(dtype, factors):
    margin = 0.5 if factors == "wide" else TIGHT[dtype]
    return 1 + margin, 1 - margin


def off_by(message):
    """The error a failure message reports ('... off by 1.5e-08 ...')."""
    return float(re.search(r"off by ([-+.e0-9a-z]+)", message).group(1))


def as_array(x):
    return x.data if isinstance(x, Tensor) else x


# --- check_flow ----------------------------------------------------------------------------
# Inputs whose coordinates have the same magnitude in every sample, x[b, j] = +-V[j], so that
# |z[b, j]| is the same for every b and a per-position error can be sized exactly.
V = np.array([0.5, -0.8, 0.3])
SIGNS = np.where(np.random.default_rng(0).random((8, 3)) < 0.5, -1.0, 1.0)


def planted_inputs(dtype):
    return device(SIGNS * V, dtype)


class Scale(Flow):
    """z = x * exp(a), a correct flow: log-det sum(a). Each planted flow below changes one thing,
    by ``size`` in the metric of the property it breaks."""

    log_scales = (-0.3, 0.0, 0.3)

    def __init__(self, dtype, size=0.0):
        self.log_scale = nn.Parameter(device(self.log_scales, dtype))
        self.event_shape = (3,)
        self.size = size
        self.scale = np.exp(np.array(self.log_scales))
        self.total = float(np.sum(self.log_scales))  # the log-det L

    def forward(self, x):
        x = self._check_input(x)
        return x * ops.exp(self.log_scale), ops.sum(self.log_scale) + 0 * x[:, 0]

    def inverse(self, z):
        z = self._check_input(z, "z")
        return z * ops.exp(-self.log_scale), -ops.sum(self.log_scale) + 0 * z[:, 0]

    def per_position(self, batch, weights):
        """``size * w_b * (1 + |z_j|)`` for sample position b and coordinate j, as a (B, 3) array:
        an error that depends on where a sample sits in the batch."""
        magnitude = 1 + self.scale * np.abs(V)  # 1 + |z[b, j]|, the same for every b
        return device(self.size * np.outer(weights(batch), magnitude), self.log_scale.dtype)


class InverseOffInX(Scale):
    """x = f^{-1}(z) + size (1 + |x|): inverse(forward(x)) is off by exactly ``size``. The scales
    are below 1, so forward(inverse(z)) is off by less: size s (1 + |x|) / (1 + s |x|) < size."""

    log_scales = (-0.3, -0.2, -0.1)

    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x + self.size * (1 + ops.absolute(x)), log_det


class InverseLogDetOff(Scale):
    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x, log_det + self.size * (1 + abs(self.total))


class InverseOffInZ(Scale):
    """A stretch by 1000 whose inverse adds its error in z: x = (z + size (1 + |z|)) / 1000.

    forward(inverse(z)) is off by exactly ``size``; inverse(forward(x)) by
    size (1/1000 + |x|) / (1 + |x|) <= 0.45 size for |x| <= 0.8 (the inputs V): only the
    round trip measured in z sees it, which is why check_flow makes both."""

    log_scales = (math.log(1000.0),) * 3

    def inverse(self, z):
        z = self._check_input(z, "z")
        return super().inverse(z + self.size * (1 + ops.absolute(z)))


class LogDetOff(Scale):
    """Both log-dets off by size (1 + |L|), consistently: only the finite differences see it."""

    def forward(self, x):
        z, log_det = super().forward(x)
        return z, log_det + self.size * (1 + abs(self.total))

    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x, log_det - self.size * (1 + abs(self.total))


def _ramp(batch):
    return np.arange(batch) / max(batch - 1, 1)  # 0 for the first position, 1 for the last


def _only_alone(batch):
    return np.full(batch, 1.0 if batch == 1 else 0.0)


class ForwardDependsOnPosition(Scale):
    """z_b shifted by size w_b (1 + |z_b|), w from 0 (first position) to 1 (last), undone by the
    inverse at the same position: invertible, right log-det, but reversing the batch moves the
    first sample by exactly ``size``."""

    weights = staticmethod(_ramp)

    def forward(self, x):
        z, log_det = super().forward(x)
        return z + self.per_position(z.shape[0], self.weights), log_det

    def inverse(self, z):
        return super().inverse(z - self.per_position(z.shape[0], self.weights))


class ForwardDiffersForABatchOfOne(ForwardDependsOnPosition):
    weights = staticmethod(_only_alone)


class LogDetDependsOnPosition(Scale):
    """log-det_b shifted by size w_b (1 + |L|): the finite-difference check (whose tolerance is a
    hundred times wider) cannot see it, reversing the batch can."""

    def shift(self, batch):
        return device(self.size * _ramp(batch) * (1 + abs(self.total)), self.log_scale.dtype)

    def forward(self, x):
        z, log_det = super().forward(x)
        return z, log_det + self.shift(z.shape[0])

    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x, log_det - self.shift(z.shape[0])


class GradientOff(Scale):
    """Right values everywhere, but the engine's gradient of check_flow's loss
    0.5 |z|^2 - log-det is off by exactly ``size`` at every coordinate of a: the log-det gains
    G . (a - detach(a)), which is 0 (so finite differences see nothing) with gradient G."""

    def forward(self, x):
        z, log_det = super().forward(x)
        batch = z.shape[0]
        # d loss / d a_j = sum_b x_bj^2 exp(2 a_j) - B = B (V_j^2 s_j^2 - 1) for the planted inputs
        true_gradient = batch * (V**2 * self.scale**2 - 1)
        g = device(self.size * (1 + np.abs(true_gradient)) / batch, self.log_scale.dtype)
        zero_with_gradient_g = ops.sum(g * (self.log_scale - self.log_scale.detach()))
        return z, log_det + zero_with_gradient_g


FLOW_CASES = [
    ("round trip inverse(forward(x)) == x", InverseOffInX, "round trip"),
    ("inverse log-det == -forward log-det", InverseLogDetOff, "round trip"),
    ("round trip forward(inverse(z)) == z", InverseOffInZ, "round trip"),
    ("log-det == log|det J| of finite differences", LogDetOff, "finite differences"),
    ("batch independence (forward of the reversed batch)", ForwardDependsOnPosition, "round trip"),
    ("batch independence (log-det of the reversed batch)", LogDetDependsOnPosition, "round trip"),
    ("batch independence (a batch of one)", ForwardDiffersForABatchOfOne, "round trip"),
    ("gradient of tensor 0 'log_scale' (shape (3,))", GradientOff, "finite differences"),
]
FLOW_IDS = [case[1].__name__ for case in FLOW_CASES]


def flow_verdict(planted, dtype, size):
    """None if check_flow passes the planted flow, else its message."""
    try:
        testing.check_flow(planted(dtype, size), x=planted_inputs(dtype))
    except AssertionError as error:
        return str(error)
    return None


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_unplanted_flow_passes(dtype):
    assert flow_verdict(Scale, dtype, 0.0) is None
    assert flow_verdict(InverseOffInZ, dtype, 0.0) is None


@pytest.mark.parametrize("factors", FACTORS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prop, planted, kind", FLOW_CASES, ids=FLOW_IDS)
def test_check_flow_fails_just_over_and_passes_just_under_each_tolerance(prop, planted, kind, dtype, factors):
    over, under = over_and_under(dtype, factors)
    limit = tolerance(dtype, kind)
    message = flow_verdict(planted, dtype, over * limit)
    assert message is not None, f"{prop}: an error of {over} x the tolerance {limit} was not caught"
    assert message.startswith(f"{planted.__name__}: {prop} fails"), message
    # the planted size is what the checker measured: the metric is controlled, not merely exceeded
    assert off_by(message) == pytest.approx(over * limit, rel=0.01), message
    assert flow_verdict(planted, dtype, under * limit) is None, f"{prop}: {under} x the tolerance was rejected"


@pytest.mark.parametrize(
    "log_det, z_rows",
    [(lambda ld: ld[:, None], 8), (lambda ld: ops.sum(ld), 8), (lambda ld: ld, 7)],
    ids=["log-det (B, 1)", "log-det ()", "z of another batch size"],
)
def test_check_flow_rejects_wrong_shapes(log_det, z_rows):
    class WrongShapes(Scale):
        def forward(self, x):
            z, ld = super().forward(x)
            return z[:z_rows], log_det(ld)

    with pytest.raises(AssertionError, match=r"^WrongShapes: shapes: got z"):
        testing.check_flow(WrongShapes("float64"), x=planted_inputs("float64"))


# --- check_transformer ---------------------------------------------------------------------
class Stretch(Transformer):
    """g(h; theta) = factor * h where theta != 0, h where theta = 0: a correct transformer (any real
    theta is valid, theta = 0 is the identity) with a derivative we choose. One parameter."""

    params_per_dim = 1

    def __init__(self, factor=2.0, size=0.0):
        self.log_factor, self.size = math.log(factor), size

    def log_scale(self, theta, like):
        theta = self.check_theta(theta).data
        return (theta[..., 0] != 0).astype(like.dtype) * self.log_factor

    def forward(self, h, theta):
        h = as_array(h)
        log_scale = self.log_scale(theta, h)
        z = h * backend.array_module(h).exp(log_scale)
        return Tensor(z), Tensor(backend.array_module(h).broadcast_to(log_scale, z.shape).copy())

    def inverse(self, z, theta):
        z = as_array(z)
        log_scale = self.log_scale(theta, z)
        h = z * backend.array_module(z).exp(-log_scale)
        return Tensor(h), Tensor(backend.array_module(z).broadcast_to(-log_scale, h.shape).copy())


class SharedThetaDiffers(Stretch):
    """A theta shared by the batch, (D, P), gives values off by exactly ``size``."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        if self.check_theta(theta).ndim == 2:
            z = z + self.size * (1 + ops.absolute(z))
        return z, log_derivative


class InverseOffInH(Stretch):
    """h = g^{-1}(z) + size (1 + |h|), on a contraction (factor 1/2): inverse(forward(h)) is off by
    exactly ``size``, forward(inverse(z)) by size (1/2 + |z|) / (1 + |z|), less."""

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h + self.size * (1 + ops.absolute(h)), log_derivative


class InverseLogDerivativeOff(Stretch):
    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, log_derivative + self.size * (1 + ops.absolute(log_derivative))


class InverseOffInZNearZero(Stretch):
    """A stretch by 1e4 whose inverse is off by size (1 + |z|) for |z| < 50: forward(inverse(z)) on
    the latent samples (N(0, 2^2)) is off by exactly ``size``, while the images of the sampled h
    lie mostly beyond 50, and those within are off by at most size * 51 / 1e4 after inverting."""

    def inverse(self, z, theta):
        z = as_array(z)
        near_zero = (backend.array_module(z).abs(z) < 50).astype(z.dtype)
        return super().inverse(z + self.size * (1 + backend.array_module(z).abs(z)) * near_zero, theta)


class LogDerivativeOff(Stretch):
    """log g' off by ``size`` where theta != 0, consistently both ways (theta = 0 stays the
    identity): only the finite differences see it."""

    def offset(self, theta, like):
        return self.size * (self.log_scale(theta, like) != 0).astype(like.dtype)

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, log_derivative + self.offset(theta, z.data)

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, log_derivative - self.offset(theta, h.data)


class MovesAtThetaZero(Stretch):
    """g(m(h); theta) with m(h) = (1 + size) h + size, a correct transformer except that
    theta = 0 gives m: off by size |1 + h| / (1 + |h|), exactly ``size`` for h >= 0."""

    def forward(self, h, theta):
        z, log_derivative = super().forward((1 + self.size) * as_array(h) + self.size, theta)
        return z, log_derivative + math.log1p(self.size)

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return (h - self.size) / (1 + self.size), log_derivative - math.log1p(self.size)


class LogDerivativeAtThetaZero(Stretch):
    """log g' off by ``size`` everywhere, consistently both ways: theta = 0 has log-derivative
    ``size``, not 0 (the finite differences, a hundred times more tolerant, cannot tell)."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, log_derivative + self.size

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, log_derivative - self.size


class EdgeMovesIn(PiecewiseLinearTransformer):
    """On [0, 1]: g(h) (1 - 2 size) where theta != 0, so the edge 1 maps to 1 - 2 size, off by
    exactly ``size`` in the metric (|1 - 2 size - 1| / (1 + 1)); the inverse undoes it."""

    def __init__(self, size=0.0):
        super().__init__(bins=4)
        self.size = size

    def _shrink(self, theta, like):
        moved = (self.check_theta(theta).data != 0).any(axis=-1).astype(like.dtype)
        return 1 - 2 * self.size * moved

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        shrink = self._shrink(theta, z.data)
        return Tensor(z.data * shrink), Tensor(log_derivative.data + backend.array_module(z.data).log(shrink))

    def inverse(self, z, theta):
        z = as_array(z)
        xp = backend.array_module(z)
        shrink = self._shrink(theta, z)
        y = z / shrink
        y = xp.where(z <= 1, xp.minimum(y, 1), y)  # the edge back onto the edge; beyond it still raises
        h, log_derivative = super().inverse(Tensor(y), theta)
        return h, Tensor(log_derivative.data - xp.log(shrink))


# (property, planted transformer, its stretch, kind of tolerance)
TRANSFORMER_CASES = [
    ("shapes (shared theta == theta repeated per sample)", SharedThetaDiffers, 2.0, "round trip"),
    ("round trip inverse(forward(h)) == h", InverseOffInH, 0.5, "round trip"),
    ("inverse log-derivative == -forward log-derivative", InverseLogDerivativeOff, 2.0, "round trip"),
    ("round trip forward(inverse(z)) == z", InverseOffInZNearZero, 1e4, "round trip"),
    ("log-derivative == log|finite differences|", LogDerivativeOff, 2.0, "finite differences"),
    ("theta = 0 is the identity (forward values)", MovesAtThetaZero, 2.0, "round trip"),
    ("theta = 0 is the identity (forward log-derivative)", LogDerivativeAtThetaZero, 2.0, "round trip"),
    ("domain (forward maps the edge 1.0 to itself)", EdgeMovesIn, None, "round trip"),
]
TRANSFORMER_IDS = [case[1].__name__ for case in TRANSFORMER_CASES]


def make_transformer(planted, factor, size):
    return planted(size=size) if factor is None else planted(factor, size)


def transformer_verdict(planted, factor, dtype, size):
    try:
        testing.check_transformer(make_transformer(planted, factor, size), dtype=dtype)
    except AssertionError as error:
        return str(error)
    return None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [0.5, 2.0, 1e4])
def test_the_unplanted_transformers_pass(factor, dtype):
    assert transformer_verdict(Stretch, factor, dtype, 0.0) is None
    assert transformer_verdict(EdgeMovesIn, None, dtype, 0.0) is None


@pytest.mark.parametrize("factors", FACTORS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prop, planted, factor, kind", TRANSFORMER_CASES, ids=TRANSFORMER_IDS)
def test_check_transformer_fails_just_over_and_passes_just_under_each_tolerance(
    prop, planted, factor, kind, dtype, factors
):
    over, under = over_and_under(dtype, factors)
    limit = tolerance(dtype, kind)
    message = transformer_verdict(planted, factor, dtype, over * limit)
    assert message is not None, f"{prop}: an error of {over} x the tolerance {limit} was not caught"
    assert message.startswith(f"{planted.__name__}: {prop} fails"), message
    if kind == "round trip":  # the finite-difference check reports values, not an error size
        assert off_by(message) == pytest.approx(over * limit, rel=0.01), message
    assert transformer_verdict(planted, factor, dtype, under * limit) is None, (
        f"{prop}: {under} x the tolerance was rejected"
    )


# --- check_gradients with several tensors ----------------------------------------------------
SHAPES = [(2,), (3, 2), (4,)]


def three_tensors(dtype):
    rng = np.random.default_rng(1)
    return [nn.Parameter(device(0.5 * rng.standard_normal(shape), dtype)) for shape in SHAPES]


def loss_with_planted_gradient(tensors, planted):
    """f = sum tanh(A) + 0.5 sum B^2 + sum sin(C), plus G_i . (T_i - detach(T_i)) for the planted
    {index: G}: a zero whose gradient G_i the finite differences cannot see."""
    a, b, c = tensors

    def fn():
        value = ops.sum(ops.tanh(a)) + 0.5 * ops.sum(b * b) + ops.sum(ops.sin(c))
        for index, g in planted.items():
            value = value + ops.sum(g * (tensors[index] - tensors[index].detach()))
        return value

    return fn


def true_gradients(tensors):
    a, b, c = (host(t) for t in tensors)
    return [1 - np.tanh(a) ** 2, b, np.cos(c)]


def planted_error(tensors, index, coordinate, size, dtype):
    """G with G[coordinate] = size (1 + |true gradient|) there and 0 elsewhere: the engine's
    gradient is then off by exactly ``size`` in the checker's metric at that one coordinate."""
    true = true_gradients(tensors)[index]
    g = np.zeros(SHAPES[index])
    g[coordinate] = size * (1 + abs(true[coordinate]))
    return device(g, dtype)


def gradient_verdict(tensors, planted, dtype):
    try:
        # n_coords covers every coordinate of the largest tensor, so the planted one is checked
        testing.check_gradients(loss_with_planted_gradient(tensors, planted), *tensors, n_coords=6)
    except AssertionError as error:
        return str(error)
    return None


@pytest.mark.parametrize("factors", FACTORS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index, coordinate", [(0, (1,)), (1, (2, 0)), (2, (3,))], ids=["first", "middle", "last"])
def test_check_gradients_catches_an_error_just_over_the_tolerance_in_any_tensor(index, coordinate, dtype, factors):
    over, under = over_and_under(dtype, factors)
    limit = tolerance(dtype, "finite differences")
    tensors = three_tensors(dtype)
    message = gradient_verdict(tensors, {index: planted_error(tensors, index, coordinate, over * limit, dtype)}, dtype)
    assert message is not None, f"tensor {index}: an error of {over} x the tolerance was not caught"
    assert message.startswith(f"gradient of tensor {index} (shape {SHAPES[index]}) fails"), message
    assert f"worst coordinate {coordinate}:" in message, message
    assert off_by(message) == pytest.approx(over * limit, rel=0.01), message
    assert "\n" not in message
    under_error = {index: planted_error(tensors, index, coordinate, under * limit, dtype)}
    assert gradient_verdict(tensors, under_error, dtype) is None


def test_check_gradients_names_the_worst_of_several_failures():
    limit = tolerance("float64", "finite differences")
    tensors = three_tensors("float64")
    planted = {
        0: planted_error(tensors, 0, (0,), 1.5 * limit, "float64"),
        2: planted_error(tensors, 2, (1,), 3.0 * limit, "float64"),
    }
    message = gradient_verdict(tensors, planted, "float64")
    assert message.startswith("gradient of tensor 2 (shape (4,)) fails (2 of 12 checked coordinates)"), message
    assert "worst coordinate (1,):" in message and off_by(message) == pytest.approx(3 * limit, rel=0.01)


def test_check_gradients_names_its_tensors_when_given_names():
    tensors = three_tensors("float64")
    planted = {1: planted_error(tensors, 1, (0, 1), 0.1, "float64")}
    with pytest.raises(AssertionError, match=r"^gradient of tensor 1 'weight' \(shape \(3, 2\)\) fails"):
        testing.check_gradients(
            loss_with_planted_gradient(tensors, planted), *tensors, n_coords=6, names=["bias", "weight", "scale"]
        )


def test_check_gradients_checks_distinct_coordinates():
    # three coordinates of a three-coordinate tensor are all three of them (not a draw with repeats)
    w = nn.Parameter(device([0.3, -1.2, 2.0]))
    for seed in range(20):
        g = device([0.0, 0.0, 1.0])  # the engine's gradient is off at coordinate 2 only
        with pytest.raises(AssertionError, match=r"worst coordinate \(2,\)"):
            testing.check_gradients(lambda g=g: ops.sum(w * w) + ops.sum(g * (w - w.detach())), w, seed=seed)


# --- the checks can fail: the mutants the issue names are caught by the tests above ----------
def test_tolerances_a_thousand_times_looser_would_fail_every_threshold_test(monkeypatch):
    for dtype in DTYPES:
        over, _ = over_and_under(dtype, "wide")
        sizes = {kind: over * tolerance(dtype, kind) for kind in ("round trip", "finite differences")}
        step_, fd, round_trip = testing._TOLERANCES[dtype]
        with monkeypatch.context() as patch:
            patch.setitem(flow_checks._TOLERANCES, dtype, (step_, 1000 * fd, 1000 * round_trip))
            caught = [prop for prop, planted, kind in FLOW_CASES if flow_verdict(planted, dtype, sizes[kind])]
            caught += [
                prop
                for prop, planted, factor, kind in TRANSFORMER_CASES
                if transformer_verdict(planted, factor, dtype, sizes[kind])
            ]
        # every "just over" case now passes, so every threshold test above turns red
        assert caught == [], f"{dtype}: still caught with 1000x looser tolerances: {caught}"


def test_a_gradient_check_of_the_first_tensor_only_would_fail_the_threshold_tests(monkeypatch):
    original = flow_checks.check_gradients

    def first_tensor_only(fn, *tensors, **options):
        return original(fn, tensors[0], **options)

    monkeypatch.setattr(testing, "check_gradients", first_tensor_only)
    limit = tolerance("float64", "finite differences")
    tensors = three_tensors("float64")
    for index, coordinate in [(1, (2, 0)), (2, (3,))]:
        planted = {index: planted_error(tensors, index, coordinate, 1.5 * limit, "float64")}
        assert gradient_verdict(tensors, planted, "float64") is None  # the mutant misses it


# --- the tolerances' justifications ------------------------------------------------------------
def analytic_log_det_error(dtype, forward_and_log_det, x):
    """max over samples of |log|det J_fd| - log-det| / (1 + |log-det|), J_fd at the chosen step."""
    with no_grad():
        jacobian = testing.numerical_jacobian(lambda a: forward_and_log_det(a)[0], x)
        log_det = forward_and_log_det(x)[1]
    numeric = np.linalg.slogdet(host(jacobian).astype(np.float64))[1]
    exact = host(log_det).astype(np.float64)
    return float(np.max(np.abs(numeric - exact) / (1 + np.abs(exact))))


def _tanh_map(x):
    """f(x) = x + 0.5 tanh(W x): smooth, dense Jacobian I + 0.5 diag(1 - tanh^2(W x)) W."""
    w = np.array([[1.0, 0.5, -0.3], [-0.4, 0.8, 0.2], [0.3, -0.6, 0.9]])
    xp = backend.array_module(x)
    u = x @ xp.asarray(w.T, dtype=x.dtype)
    jacobian = xp.eye(3, dtype=x.dtype) + 0.5 * (1 - xp.tanh(u) ** 2)[:, :, None] * xp.asarray(w, dtype=x.dtype)
    return x + 0.5 * xp.tanh(u), xp.linalg.slogdet(jacobian)[1]


def _flow_map(flow):
    return lambda x: tuple(t.data for t in flow.forward(x))


def smooth_maps(dtype):
    """Smooth maps whose log-det is known in closed form, with the flows' own inputs."""
    flows = testing.example_flows(3, seed=0, dtype=dtype)
    return {
        "x + 0.5 tanh(Wx)": _tanh_map,
        "DenseLinear": _flow_map(flows["DenseLinear"]),
        "ElementwiseAffine": _flow_map(flows["ElementwiseAffine"]),
        "SinhArcsinh": _flow_map(flows["SinhArcsinh"]),
    }


# The margins the module docstring of flow_checks.py states for smooth maps (measured: the
# largest errors are ~1e-9 in float64 and ~2e-4 in float32, for the example flows at D = 3).
LOG_DET_MARGIN = {"float64": 1000, "float32": 50}


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_det_finite_difference_error_of_smooth_maps_is_far_below_the_tolerance(dtype):
    x = device(1.5 * np.random.default_rng(2).standard_normal((16, 3)), dtype)
    limit = tolerance(dtype, "finite differences")
    for name, forward_and_log_det in smooth_maps(dtype).items():
        error = analytic_log_det_error(dtype, forward_and_log_det, x)
        assert error <= limit / LOG_DET_MARGIN[dtype], f"{name}: error {error:.3g} vs tolerance {limit}"


# Measured on these flows: ~1e-8 in float64 (LULinear), ~2e-3 in float32 (AffineCoupling).
GRADIENT_MARGIN = {"float64": 50, "float32": 5}


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_finite_difference_error_of_a_smooth_loss_is_far_below_the_tolerance(dtype):
    # check_flow's loss on smooth flows (no spline knots): the gradient check's own error,
    # measured with a tolerance of 0 so every coordinate reports.
    limit = tolerance(dtype, "finite differences")
    for name in ("DenseLinear", "ElementwiseAffine", "SinhArcsinh", "AffineCoupling", "LULinear"):
        flow = testing.example_flows(3, seed=0, dtype=dtype)[name]
        x = testing.sample_inputs(flow, 8, 0)

        def loss(flow=flow, x=x):
            z, log_det = flow.forward(x)
            return ops.sum(0.5 * z * z) - ops.sum(log_det)

        with pytest.raises(AssertionError) as error:  # tolerance ~0: it reports its worst error
            testing.check_gradients(loss, *flow.parameters(), n_coords=4, tolerance=1e-300)
        assert off_by(str(error.value)) <= limit / GRADIENT_MARGIN[dtype], f"{name}: {error.value}"


ROUND_TRIP_MARGIN = {"float64": 1000, "float32": 100}


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_inverses_come_back_far_inside_the_round_trip_tolerance(dtype):
    limit = tolerance(dtype, "round trip")
    flows = testing.example_flows(3, seed=0, dtype=dtype)
    for name in ("LULinear", "AffineCoupling", "MaskedAutoregressive", "RationalQuadraticSpline", "Planar"):
        x = testing.sample_inputs(flows[name], 16, 0)
        with no_grad():
            x_back = flows[name].inverse(flows[name].forward(x)[0])[0]
        error = np.max(np.abs(host(x_back) - host(x)) / (1 + np.abs(host(x))))
        assert error <= limit / ROUND_TRIP_MARGIN[dtype], f"{name}: round trip off by {error:.3g}"


# transformer_checks.py: the secant's rounding error in log space is ~ u (|h| + |g| / g') / e, a
# fiftieth of the tolerance or less while |h| + |g| / g' <= 300 (float64) or <= 15 (float32).
SECANT_RANGE = {"float64": 300, "float32": 15}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope, shift", [(1e-2, 0.0), (1.0, 0.0), (1e2, 0.0), (1.0, 5.0), (1e-2, 5.0), (1e-3, 5.0)])
def test_transformer_log_secant_error_is_the_stated_rounding_error(slope, shift, dtype):
    eps, limit = step(dtype), tolerance(dtype, "finite differences")
    unit_roundoff = float(np.finfo(dtype).eps) / 2
    h = device(np.linspace(-6, 6, 1001), dtype)
    g = lambda a: a * slope + shift  # noqa: E731 - g(h) = slope h + shift, log g' = log(slope)
    secant = (g(h + eps) - g(h - eps)) / (2 * eps)
    error = float(np.abs(np.log(np.abs(host(secant)).astype(np.float64)) - math.log(slope)).max())
    ratio = float(np.max(np.abs(host(h)) + np.abs(host(g(h))) / slope))  # max |h| + |g| / g'
    assert error <= 2 * unit_roundoff * ratio / eps, f"error {error:.3g} is not the rounding error"
    if ratio <= SECANT_RANGE[dtype]:
        assert error <= limit / 50, f"slope {slope}, shift {shift}: {error:.3g} vs tolerance {limit}"
