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


class ThetaStretch(Stretch):
    """g(h; theta) = h exp(theta / 2): a slope that differs from sample to sample (Stretch's is one
    number), so that a finite-difference bracket taken across samples instead of per sample is seen."""

    def log_scale(self, theta, like):
        return 0.5 * self.check_theta(theta).data[..., 0].astype(like.dtype)


class LogDerivativeAboveVarying(ThetaStretch, LogDerivativeOff):
    """log g' off by +size where theta > 0 only (the steeper samples), on a slope that varies: the
    smallest log g' of the batch is right, so a bracket's lower end taken over the whole batch
    would let the planted samples through."""

    def offset(self, theta, like):
        return self.size * (self.log_scale(theta, like) > 0).astype(like.dtype)


class LogDerivativeBelowVarying(ThetaStretch, LogDerivativeOff):
    """log g' off by -size where theta < 0 only: the largest log g' of the batch is right."""

    def offset(self, theta, like):
        return -self.size * (self.log_scale(theta, like) < 0).astype(like.dtype)


# (property, planted transformer, its stretch, kind of tolerance)
TRANSFORMER_CASES = [
    ("shapes (shared theta == theta repeated per sample)", SharedThetaDiffers, 2.0, "round trip"),
    ("round trip inverse(forward(h)) == h", InverseOffInH, 0.5, "round trip"),
    ("inverse log-derivative == -forward log-derivative", InverseLogDerivativeOff, 2.0, "round trip"),
    ("round trip forward(inverse(z)) == z", InverseOffInZNearZero, 1e4, "round trip"),
    ("log-derivative == log|finite differences|", LogDerivativeOff, 2.0, "finite differences"),
    ("log-derivative == log|finite differences|", LogDerivativeAboveVarying, 2.0, "finite differences"),
    ("log-derivative == log|finite differences|", LogDerivativeBelowVarying, 2.0, "finite differences"),
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


# --- the checker's defaults, options and messages, as documented ------------------------------
class InverseOffAtOneSample(Scale):
    """inverse(forward(x)) off by ``size`` at sample 5 only."""

    def inverse(self, z):
        x, log_det = super().inverse(z)
        where = np.zeros((z.shape[0], 1))
        where[5 % z.shape[0]] = 1.0
        return x + device(where, self.log_scale.dtype) * self.size * (1 + ops.absolute(x)), log_det


def test_check_flow_message_names_the_property_the_worst_sample_and_the_tolerance():
    with pytest.raises(AssertionError) as error:
        testing.check_flow(InverseOffAtOneSample("float64", 3e-3), x=planted_inputs("float64"))
    assert str(error.value) == (
        "InverseOffAtOneSample: round trip inverse(forward(x)) == x fails; worst sample 5 is off by 0.003 "
        "(tolerance 1e-08)"
    )


def test_check_flow_reports_a_nan_as_an_infinite_error():
    class NanLogDet(Scale):
        def forward(self, x):
            z, log_det = super().forward(x)
            return z, log_det * (x[:, 0] * np.nan)

    with pytest.raises(
        AssertionError, match=r"^NanLogDet: inverse log-det == -forward log-det fails; worst sample 0 is off by inf"
    ):
        testing.check_flow(NanLogDet("float64"), x=planted_inputs("float64"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_flow_uses_the_tolerances_it_is_given(dtype):
    fd, round_trip = tolerance(dtype, "finite differences"), tolerance(dtype, "round trip")
    x = planted_inputs(dtype)
    # ten times the default is caught by default and passes a tolerance twenty times wider
    for planted, limit, option in [(LogDetOff, fd, "tolerance"), (InverseOffInX, round_trip, "inverse_tolerance")]:
        with pytest.raises(AssertionError):
            testing.check_flow(planted(dtype, 10 * limit), x=x)
        testing.check_flow(planted(dtype, 10 * limit), x=x, **{option: 20 * limit})
        with pytest.raises(AssertionError):  # and a narrower one is narrower
            testing.check_flow(planted(dtype, 0.5 * limit), x=x, **{option: 0.25 * limit})


def test_check_flow_without_gradients_skips_only_the_gradient_check():
    limit = tolerance("float64", "finite differences")
    testing.check_flow(GradientOff("float64", 10 * limit), x=planted_inputs("float64"), gradients=False)
    with pytest.raises(AssertionError, match="gradient of tensor 0"):
        testing.check_flow(GradientOff("float64", 10 * limit), x=planted_inputs("float64"))


def test_check_flow_draws_its_own_inputs_by_default():
    # n = 8 inputs from sample_inputs(flow, 8, seed); sample 5 exists only if n > 5
    message = flow_verdict_default(InverseOffAtOneSample("float64", 3e-3))
    assert "worst sample 5 is off by 0.003" in message, message
    assert flow_verdict_default(InverseOffAtOneSample("float64", 3e-3), n=4) is not None  # 5 % 4 = 1


def flow_verdict_default(flow, **options):
    try:
        testing.check_flow(flow, **options)
    except AssertionError as error:
        return str(error)
    return None


def test_sample_inputs_defaults_and_spread():
    flow = Scale("float64")
    x = testing.sample_inputs(flow)
    assert x.shape == (16, 3) and str(x.dtype) == "float64"
    assert np.array_equal(host(x), host(testing.sample_inputs(flow, 16, 0)))
    # the real line: N(0, 1.5^2); 30,000 draws give the standard deviation within ~1% (3 sigma)
    assert np.std(host(testing.sample_inputs(flow, 10_000, seed=1))) == pytest.approx(1.5, rel=0.01)

    class Interval(Scale):
        input_domain = (-1.0, 3.0)

    u = host(testing.sample_inputs(Interval("float64"), 10_000, seed=1))
    # uniform on the inner 90%, [-0.8, 2.8]: 30,000 draws come within 1e-3 of both ends
    assert -0.8 <= u.min() < -0.799 and 2.799 < u.max() <= 2.8

    class Unshaped(Scale):
        event_shape = None

        def __init__(self):
            pass

    with pytest.raises(ValueError, match=r"^Unshaped has no event_shape; pass inputs explicitly$"):
        testing.sample_inputs(Unshaped())


def test_check_gradients_options_and_messages():
    w = nn.Parameter(device(np.linspace(-1.0, 1.0, 10)))
    wrong_everywhere = device(np.ones(10))

    def fn():
        return ops.sum(w * w) + ops.sum(wrong_everywhere * (w - w.detach()))

    with pytest.raises(AssertionError, match=r"fails \(3 of 3 checked coordinates\)"):  # n_coords = 3 by default
        testing.check_gradients(fn, w)
    with pytest.raises(AssertionError, match=r"fails \(5 of 5 checked coordinates\)"):
        testing.check_gradients(fn, w, n_coords=5)
    assert w.grad is None  # the gradients it made are cleared, even when it fails
    # eps: a cubic's central difference errs by eps^2 (f''' / 6 = 1): 1e-2 at eps 0.1, far over 1e-6
    testing.check_gradients(lambda: ops.sum(w * w * w), w)
    with pytest.raises(AssertionError) as error:  # 0.01 / (1 + |3 w^2 + 0.01|), |w| <= 1
        testing.check_gradients(lambda: ops.sum(w * w * w), w, eps=0.1, n_coords=10)
    assert 0.0024 < off_by(str(error.value)) <= 0.01, error.value
    with pytest.raises(ValueError, match=r"^check_gradients needs at least one tensor$"):
        testing.check_gradients(fn)
    unused = nn.Parameter(device([1.0, 2.0]))
    with pytest.raises(AssertionError, match=r"^tensor 1 'b' \(shape \(2,\)\) got no gradient from backward\(\)$"):
        testing.check_gradients(lambda: ops.sum(w * w), w, unused, names=["a", "b"])


# --- check_transformer's messages, word for word ---------------------------------------------
class UncheckedLength(Stretch):
    """Reads theta[..., 0] without checking that there is exactly one value per coordinate."""

    def log_scale(self, theta, like):
        theta = as_array(theta)
        return (theta[..., 0] != 0).astype(like.dtype) * self.log_factor


class ValuesInFloat32(Stretch):
    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return Tensor(z.data.astype("float32")), log_derivative


class LogDerivativeOfOneSample(Stretch):
    """The log-derivative has h's shape, not the broadcast shape of h and theta."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, Tensor(backend.array_module(z.data).zeros(as_array(h).shape, z.data.dtype))


class Falls(Stretch):
    """g(h) = -(h + max(h, 0)): slope -1 below 0, -2 above; the inverse and |g'| are right."""

    def forward(self, h, theta):
        self.check_theta(theta)
        h = as_array(h)
        xp = backend.array_module(h)
        shape = xp.broadcast_shapes(h.shape, as_array(theta).shape[:-1])
        z = xp.broadcast_to(-(h + xp.maximum(h, 0)), shape)
        return Tensor(z.copy()), Tensor(xp.broadcast_to(xp.log1p((h > 0).astype(h.dtype)), shape).copy())

    def inverse(self, z, theta):
        self.check_theta(theta)
        z = as_array(z)
        xp = backend.array_module(z)
        shape = xp.broadcast_shapes(z.shape, as_array(theta).shape[:-1])
        h = xp.where(z > 0, -z, -z / 2)
        return Tensor(xp.broadcast_to(h, shape).copy()), Tensor(
            xp.broadcast_to(-xp.log1p((z < 0).astype(z.dtype)), shape).copy()
        )


def test_check_transformer_names_each_shape_failure():
    def message(planted):
        with pytest.raises(AssertionError) as error:
            testing.check_transformer(planted())
        return str(error.value)

    assert message(UncheckedLength) == (
        "UncheckedLength: shapes fails; theta with 2 values per coordinate (not 1) did not raise"
    )
    assert message(ValuesInFloat32) == (
        "ValuesInFloat32: shapes fails; values (16, 3) float32 for h (16, 3), theta (16, 3, 1)"
    )
    assert message(LogDerivativeOfOneSample) == (
        "LogDerivativeOfOneSample: shapes fails; log-derivative (3,) for h (3,) and theta (16, 3, 1)"
    )


def test_check_transformer_names_the_step_that_falls():
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(Falls())
    found = re.fullmatch(r"Falls: strictly increasing fails; g\((\S+)\) - g\((\S+)\) = (\S+) <= 0", str(error.value))
    assert found, error.value
    upper, lower, step_ = (float(value) for value in found.groups())
    spacing = 12 / 63  # the sweep: 64 points from -6 to 6
    # the steepest fall (slope -2, above 0) between two neighbouring points of the sweep
    assert upper == pytest.approx(lower + spacing) and lower > 0, error.value
    assert step_ == pytest.approx(-2 * spacing), error.value


class NotFiniteFarOut(Stretch):
    """Values (or log-derivatives) that are NaN for 99 < |h| <= 100 in one direction, on one side:
    exactly where check_transformer probes, far out on an unbounded side."""

    def __init__(self, direction, side, output):
        super().__init__()
        self.direction, self.side, self.output = direction, side, output

    def spoil(self, result, h):
        h = as_array(h)
        xp = backend.array_module(h)
        bad = (self.side * h > 99) & (self.side * h <= 100)
        outputs = [result[0].data, result[1].data]
        outputs[self.output] = xp.where(bad, xp.nan, outputs[self.output])
        return Tensor(outputs[0]), Tensor(outputs[1])

    def forward(self, h, theta):
        result = super().forward(h, theta)
        return self.spoil(result, h) if self.direction == "forward" else result

    def inverse(self, z, theta):
        result = super().inverse(z, theta)
        return self.spoil(result, z) if self.direction == "inverse" else result


@pytest.mark.parametrize(
    "direction, side, output", [("forward", -1, 0), ("inverse", 1, 0), ("forward", 1, 1), ("inverse", -1, 1)]
)
def test_check_transformer_names_where_it_is_not_finite_far_out(direction, side, output):
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(NotFiniteFarOut(direction, side, output))
    assert str(error.value) == f"NotFiniteFarOut: domain fails; {direction} at {side * 100.0} is not finite"


class OnUnitInterval(Stretch):
    domain = (0.0, 1.0)


def test_check_transformer_names_a_transformer_that_leaves_its_domain():
    with pytest.raises(AssertionError) as error:  # a stretch by 2 on [0, 1]: values up to 2
        testing.check_transformer(OnUnitInterval())
    found = re.fullmatch(
        r"OnUnitInterval: domain fails; forward left the domain \(0\.0, 1\.0\): values in \[(\S+), (\S+)\]",
        str(error.value),
    )
    assert found, error.value
    low, high = (float(value) for value in found.groups())
    assert 0 < low < 0.2 and 1 < high < 2, error.value  # 2 h for h in the inner 90%: [0.1, 1.9]


class AcceptsOutside(Stretch):
    """The identity (factor 1) on [1, 3] that raises for input outside it, except in ``lax``:
    'forward' (every input) or 'inverse above' (inverse, above 3)."""

    domain = (1.0, 3.0)

    def __init__(self, lax):
        super().__init__(factor=1.0)
        self.lax = lax

    def guard(self, x, direction):
        x = as_array(x)
        below, above = bool((x < 1.0).any()), bool((x > 3.0).any())
        if self.lax == "forward" and direction == "forward":
            return
        if self.lax == "band" and direction == "forward":
            # refuses input outside, except between 0.09 and 0.11 of the width (2) below the domain:
            # only a probe at a tenth of the width beyond the edge sees that it does not raise
            if bool(((x < 1.0 - 0.22) | (x > 1.0 - 0.18)).any() and (x < 1.0).any()) or above:
                raise ValueError("outside [1, 3]")
            return
        if below or (above and not (self.lax == "inverse above" and direction == "inverse")):
            raise ValueError("outside [1, 3]")

    def forward(self, h, theta):
        self.guard(h, "forward")
        return super().forward(h, theta)

    def inverse(self, z, theta):
        self.guard(z, "inverse")
        return super().inverse(z, theta)


@pytest.mark.parametrize(
    "lax, where",
    [("forward", "forward at 0.8"), ("inverse above", "inverse at 3.2"), ("band", "forward at 0.8")],
    ids=["forward", "inverse", "only at the probe"],
)
def test_check_transformer_names_input_outside_its_domain_that_did_not_raise(lax, where):
    # the probe: a tenth of the width (2) beyond each edge
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(AcceptsOutside(lax))
    assert str(error.value) == (f"AcceptsOutside: domain fails; {where}, outside (1.0, 3.0), did not raise ValueError")


class ShiftedByTheta(Stretch):
    """g(h) = h + |theta| on [0, 1]: leaves the domain by an amount that shows the theta drawn."""

    domain = (0.0, 1.0)

    def forward(self, h, theta):
        theta = as_array(self.check_theta(theta))
        h = as_array(h)
        shift = backend.array_module(h).abs(theta[..., 0])
        return Tensor(h + shift), Tensor(0 * (h + shift))

    def inverse(self, z, theta):
        theta = as_array(self.check_theta(theta))
        z = as_array(z)
        shift = backend.array_module(z).abs(theta[..., 0])
        return Tensor(z - shift), Tensor(0 * (z - shift))


def test_check_transformer_defaults_are_the_documented_ones():
    def message(**options):
        with pytest.raises(AssertionError, match="^ShiftedByTheta: domain fails; forward left the domain") as error:
            testing.check_transformer(ShiftedByTheta(), **options)
        return str(error.value)

    documented = message(n=16, dim=3, seed=0, theta_scale=1.0)
    assert message() == documented
    for other in ({"n": 17}, {"dim": 4}, {"seed": 1}, {"theta_scale": 2.0}):
        assert message(**other) != documented, other


class LogDerivativeOfThetaShapeWhenShared(Stretch):
    """A theta shared by the batch, (D, P), gives a log-derivative of shape (D,), not (B, D)."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        if self.check_theta(theta).ndim == 2:
            log_derivative = Tensor(log_derivative.data[0])
        return z, log_derivative


def test_check_transformer_names_a_shared_theta_of_the_wrong_shape():
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(LogDerivativeOfThetaShapeWhenShared())
    assert str(error.value) == (
        "LogDerivativeOfThetaShapeWhenShared: shapes (shared theta == theta repeated per sample) fails; "
        "shape (3,) != expected (16, 3)"
    )


class Recording(Stretch):
    """The identity (a stretch by 1: correct on any domain) that records every input its forward
    is given, and refuses input outside its domain."""

    def __init__(self, domain):
        super().__init__(factor=1.0)
        self.domain, self.seen = domain, []

    def refuse_outside(self, x):
        x = host(as_array(x))
        if (x < self.domain[0]).any() or (x > self.domain[1]).any():
            raise ValueError(f"outside {self.domain}")

    def forward(self, h, theta):
        self.seen.append((host(as_array(h)).copy(), tuple(as_array(theta).shape)))
        self.refuse_outside(h)
        return super().forward(h, theta)

    def inverse(self, z, theta):
        self.refuse_outside(z)
        return super().inverse(z, theta)


def test_check_transformer_samples_and_sweeps_the_domain_as_documented():
    # the sampled h: N(0, 2^2) on the line, 0.05 + Exp(1) from a finite edge of a half line,
    # uniform on the inner 90% of an interval (a large n makes the statistics sharp)
    n, dim = 3000, 3
    cases = {
        "line": (-math.inf, math.inf),
        "above": (1.0, math.inf),
        "below": (-math.inf, -1.0),
        "interval": (1.0, 3.0),
    }
    for case, domain in cases.items():
        recording = Recording(domain)
        testing.check_transformer(recording, n=n, dim=dim)
        h = recording.seen[0][0]
        assert h.shape == (n, dim), case
        if case == "line":
            assert np.std(h) == pytest.approx(2.0, rel=0.03) and abs(np.mean(h)) < 0.1, case
        elif case == "interval":
            assert 1.1 <= h.min() < 1.101 and 2.899 < h.max() <= 2.9, case
        else:
            distance = h - 1.0 if case == "above" else -1.0 - h
            assert 0.05 <= distance.min() < 0.051 and np.mean(distance) == pytest.approx(1.05, rel=0.03), case
        # the sweep of property 5: 64 points of [-6, 6] (or of the finite edges), once for each of the
        # first four samples' theta, shared (dim, P)
        low, high = (-6.0 if math.isinf(domain[0]) else domain[0]), (6.0 if math.isinf(domain[1]) else domain[1])
        sweeps = [x for x, theta in recording.seen if x.shape == (64, dim) and theta == (dim, 1)]
        assert len(sweeps) == 4, case
        for x in sweeps:
            np.testing.assert_array_equal(x, np.repeat(np.linspace(low, high, 64)[:, None], dim, axis=1))


def test_graph_nbytes_counts_each_tensor_and_what_each_node_saved():
    x, w = nn.Parameter(device(np.ones(10))), nn.Parameter(device(np.ones(10)))  # 80 bytes each
    assert testing.graph_nbytes(x) == 80  # a leaf: its data only
    # x * w: three tensors of 80 bytes, and the product saved both factors for its VJP
    assert testing.graph_nbytes(x * w) == 3 * 80 + 2 * 80


def test_check_flow_passes_an_error_equal_to_the_tolerance():
    # "error <= tolerance": the identity with an inverse log-det of exactly +tolerance instead of 0,
    # so the error is |tolerance - 0| / (1 + 0) = tolerance with no rounding at all
    class Planted(Scale):
        log_scales = (0.0, 0.0, 0.0)

        def inverse(self, z):
            x, log_det = super().inverse(z)
            return x, log_det + self.size

    limit = tolerance("float64", "round trip")
    testing.check_flow(Planted("float64", limit), x=planted_inputs("float64"), gradients=False)
    with pytest.raises(AssertionError, match="inverse log-det"):
        testing.check_flow(Planted("float64", 2 * limit), x=planted_inputs("float64"), gradients=False)


def test_check_flow_names_a_round_trip_of_the_wrong_shape():
    class DropsACoordinate(Scale):
        def inverse(self, z):
            x, log_det = super().inverse(z)
            return x[:, :2], log_det

    with pytest.raises(AssertionError) as error:
        testing.check_flow(DropsACoordinate("float64"), x=planted_inputs("float64"))
    assert str(error.value) == "DropsACoordinate: round trip inverse(forward(x)) == x: shape (8, 2) != expected (8, 3)"


def test_check_flow_defaults_are_the_documented_ones():
    class DropsASample(Scale):
        def forward(self, x):
            z, log_det = super().forward(x)
            return z[1:], log_det

    with pytest.raises(AssertionError) as error:  # n = 8 inputs by default
        testing.check_flow(DropsASample("float64"))
    assert str(error.value) == "DropsASample: shapes: got z (7, 3) and log_det (8,) for x (8, 3)"

    class InverseOffByAConstant(Scale):
        """Off by 1e-3 in x: the error 1e-3 / (1 + |x|) names the input nearest 0, so the message shows the inputs."""

        def inverse(self, z):
            x, log_det = super().inverse(z)
            return x + 1e-3, log_det

    messages = {seed: flow_verdict_default(InverseOffByAConstant("float64"), seed=seed) for seed in (0, 1)}
    assert flow_verdict_default(InverseOffByAConstant("float64")) == messages[0] != messages[1]


class UnusedWideParameter(Scale):
    """Scale plus a parameter ``extra`` of 10 coordinates that the values ignore but the log-det's
    gradient does not: its engine gradient is off by 1e-4 * (k + 1) at coordinate k (finite
    differences see 0), so which coordinate is worst depends on the three drawn."""

    def __init__(self, dtype):
        super().__init__(dtype)
        self.extra = nn.Parameter(device(np.zeros(10), dtype))

    def forward(self, x):
        z, log_det = super().forward(x)
        g = device(1e-4 * np.arange(1, 11) / x.shape[0], self.log_scale.dtype)
        return z, log_det + ops.sum(g * (self.extra - self.extra.detach()))


def test_check_flow_passes_its_seed_and_tolerance_to_the_gradient_check():
    flow, x = UnusedWideParameter("float64"), planted_inputs("float64")
    messages = {seed: flow_verdict_default(flow, x=x, seed=seed) for seed in (0, 1, 2)}
    assert len(set(messages.values())) > 1, "three seeds drew the same coordinates"
    for seed, message in messages.items():
        # the same coordinates as check_gradients draws with that seed
        names, parameters = zip(*flow.named_parameters())

        def loss():
            z, log_det = flow.forward(x)
            return ops.sum(0.5 * z * z) - ops.sum(log_det)

        with pytest.raises(AssertionError) as error:
            testing.check_gradients(loss, *parameters, seed=seed, names=names)
        assert message == f"UnusedWideParameter: {error.value}"
    testing.check_flow(flow, x=x, tolerance=2e-3)  # the worst error, 1e-3, is within a tolerance given


def test_check_gradients_draws_its_coordinates_with_seed_0_by_default():
    w = nn.Parameter(device(np.zeros(10)))
    g = device(1e-4 * np.arange(1, 11))

    def message(**options):
        with pytest.raises(AssertionError) as error:
            testing.check_gradients(lambda: ops.sum(w * w) + ops.sum(g * (w - w.detach())), w, **options)
        return str(error.value)

    assert message() == message(seed=0) != message(seed=1)


def test_numerical_jacobian_takes_a_tensor_too():
    matrix = device(np.array([[2.0, 1.0], [-1.0, 3.0]]))
    x = device(np.random.default_rng(0).standard_normal((4, 2)))
    from_array = testing.numerical_jacobian(lambda a: a @ matrix.T, x)
    from_tensor = testing.numerical_jacobian(lambda a: a @ matrix.T, Tensor(x))
    np.testing.assert_array_equal(host(from_tensor), host(from_array))


class LogDerivativeInFloat32(Stretch):
    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, Tensor(log_derivative.data.astype("float32"))


class ValuesOfOneSample(Stretch):
    """Values of h's shape, not of the broadcast shape of h and theta."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return Tensor(z.data[0] if as_array(h).ndim == 1 else z.data), log_derivative


def test_check_transformer_names_the_output_of_the_wrong_shape():
    for planted, expected in [
        (LogDerivativeInFloat32, "log-derivative (16, 3) float32 for h (16, 3), theta (16, 3, 1)"),
        (ValuesOfOneSample, "values (3,) for h (3,) and theta (16, 3, 1)"),
    ]:
        with pytest.raises(AssertionError) as error:
            testing.check_transformer(planted())
        assert str(error.value) == f"{planted.__name__}: shapes fails; {expected}"


class InverseMovesAtThetaZero(Stretch):
    """A correct stretch, except that its inverse at theta = 0 adds 0.01 to the largest input
    (or makes it NaN): only the theta = 0 check of the inverse sees it."""

    def __init__(self, nan=False):
        super().__init__()
        self.nan = nan

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        xp = backend.array_module(h.data)
        if not bool((as_array(theta) != 0).any()):
            largest = h.data == h.data.max()
            h = Tensor(xp.where(largest, xp.nan if self.nan else h.data + 0.01, h.data))
        return h, log_derivative


def test_check_transformer_names_the_inverse_at_theta_zero_and_the_worst_input():
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(InverseMovesAtThetaZero())
    found = re.fullmatch(
        r"InverseMovesAtThetaZero: theta = 0 is the identity \(inverse values\) fails; "
        r"off by (\S+) \(tolerance 1e-08\) at input (\S+)",
        str(error.value),
    )
    assert found, error.value
    error_, at = (float(value) for value in found.groups())
    # the input named is the largest one, where 0.01 was added: off by 0.01 / (1 + |h|) there
    assert at > 1 and error_ == pytest.approx(0.01 / (1 + at), rel=1e-3), error.value
    with pytest.raises(AssertionError, match=r"\(inverse values\) fails; off by inf "):
        testing.check_transformer(InverseMovesAtThetaZero(nan=True))


def test_check_transformer_passes_an_error_equal_to_the_tolerance():
    # "error <= tolerance": at theta = 0 the log-derivative is exactly +tolerance (not 0), so the
    # error is |tolerance - 0| / (1 + 0) = tolerance with no rounding
    limit = tolerance("float64", "round trip")
    testing.check_transformer(LogDerivativeAtThetaZero(2.0, limit))
    with pytest.raises(AssertionError, match="theta = 0 is the identity"):
        testing.check_transformer(LogDerivativeAtThetaZero(2.0, 2 * limit))


def test_check_flow_takes_inputs_as_a_tensor_too():
    x = planted_inputs("float64")
    messages = [flow_verdict_default(InverseOffAtOneSample("float64", 3e-3), x=given) for given in (x, Tensor(x))]
    assert messages[0] == messages[1] and "worst sample 5" in messages[0]


class InverseOffAwayFromTheImages(Scale):
    """An inverse that is exact at the images of the planted inputs (|z_j| = s_j V_j) and off by
    1e-3 in z everywhere else: only latent points that are not images of x can see it."""

    def inverse(self, z):
        z = self._check_input(z, "z")
        xp = backend.array_module(z.data)
        images = device(self.scale * np.abs(V), self.log_scale.dtype)
        away = (xp.abs(xp.abs(z.data) - images) > 1e-9).astype(z.data.dtype)
        return super().inverse(z + 1e-3 * away)


def test_check_flow_round_trips_latent_points_that_are_not_images_of_x():
    with pytest.raises(AssertionError, match=r"^InverseOffAwayFromTheImages: round trip forward\(inverse\(z\)\) == z"):
        testing.check_flow(InverseOffAwayFromTheImages("float64"), x=planted_inputs("float64"))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_check_gradients_edge_cases_of_its_comparison():
    # numeric gradients of w * w at w = 0 are exactly 0, so each planted error is exact
    w = nn.Parameter(device(np.zeros(3)))
    limit = tolerance("float64", "finite differences")

    def planted(g):
        g = device(g)
        return lambda: ops.sum(w * w) + ops.sum(g * (w - w.detach()))

    testing.check_gradients(planted([limit, 0.0, limit]), w)  # an error equal to the tolerance passes
    # two equally bad coordinates: the first checked one (the order is 0, 1, 2 for three of three) is named
    with pytest.raises(AssertionError, match=r"worst coordinate \(0,\): .* off by 0.001 "):
        testing.check_gradients(planted([1e-3, 0.0, 1e-3]), w)
    # a NaN gradient is the worst error there is: sqrt(w^2) = |w| has gradient 0 * inf at 0
    v = nn.Parameter(device([0.5, 0.0, -0.3]))
    with pytest.raises(
        AssertionError, match=r"\(1 of 3 checked coordinates\); worst coordinate \(1,\): .* off by inf "
    ):
        testing.check_gradients(lambda: ops.sum(ops.sqrt(v * v)), v)


class SharedThetaLogDerivativeDiffers(Stretch):
    """A theta shared by the batch gives log-derivatives off by 0.01 (the values are right)."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        if self.check_theta(theta).ndim == 2:
            log_derivative = log_derivative + 0.01
        return z, log_derivative


class LogDerivativeOffAtLargestTheta(Stretch):
    """log g' off by 0.01 (both ways) for the coordinate with the largest theta only."""

    def offset(self, theta):
        theta = as_array(self.check_theta(theta))[..., 0]
        return 0.01 * (theta == theta.max()).astype(theta.dtype)

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, log_derivative + self.offset(theta)

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, log_derivative - self.offset(theta)


class FlatAtTheEnd(Stretch):
    """The identity up to 5.6, flat (g = 5.6) beyond: no sample reaches it, the sweep to 6 does."""

    def forward(self, h, theta):
        self.check_theta(theta)
        h = as_array(h)
        xp = backend.array_module(h)
        shape = xp.broadcast_shapes(h.shape, as_array(theta).shape[:-1])
        z = xp.broadcast_to(xp.minimum(h, 5.6), shape).copy()
        return Tensor(z), Tensor(xp.zeros(shape, h.dtype))

    def inverse(self, z, theta):
        self.check_theta(theta)
        z = as_array(z)
        xp = backend.array_module(z)
        shape = xp.broadcast_shapes(z.shape, as_array(theta).shape[:-1])
        return Tensor(xp.broadcast_to(z, shape).copy()), Tensor(xp.zeros(shape, z.dtype))


def test_check_transformer_messages_name_the_failing_input():
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(SharedThetaLogDerivativeDiffers())
    assert re.fullmatch(
        r"SharedThetaLogDerivativeDiffers: shapes \(shared theta == theta repeated per sample\) fails; "
        r"off by \S+ \(tolerance 1e-08\) at input \S+",
        str(error.value),
    ), error.value

    with pytest.raises(AssertionError) as error:
        testing.check_transformer(LogDerivativeOffAtLargestTheta())
    found = re.fullmatch(
        r"LogDerivativeOffAtLargestTheta: log-derivative == log\|finite differences\| fails; at input (\S+): "
        r"log-derivative (\S+), log\|secant\| (\S+) \(step 2e-06, tolerance 1e-06\)",
        str(error.value),
    )
    assert found, error.value
    _, log_derivative, log_secant = (float(value) for value in found.groups())
    assert log_derivative - log_secant == pytest.approx(0.01, rel=1e-3)  # the planted coordinate is named

    with pytest.raises(AssertionError) as error:  # a flat step is not an increase
        testing.check_transformer(FlatAtTheEnd())
    sweep = np.linspace(-6.0, 6.0, 64)  # flat from 5.6: the first step that does not increase is 61 -> 62
    expected = f"FlatAtTheEnd: strictly increasing fails; g({float(sweep[62])!r}) - g({float(sweep[61])!r}) = 0.0 <= 0"
    assert str(error.value) == expected


def test_check_transformer_samples_a_half_line_in_the_dtype_asked_for():
    recording = Recording((1.0, math.inf))
    testing.check_transformer(recording, dtype="float32")
    assert str(recording.seen[0][0].dtype) == "float32"


class UnshapedInverseOffAtOneImage(InverseOffInZ):
    """No event_shape, and the error of InverseOffInZ planted at one latent point only (``target``):
    check_flow then round-trips x reversed as its other latent points, and names where that point sits."""

    def __init__(self, dtype, size, target=None):
        super().__init__(dtype, size)
        self.event_shape, self.target = None, target

    def inverse(self, z):
        z = self._check_input(z, "z")
        xp = backend.array_module(z.data)
        hit = (xp.abs(z.data - self.target).max(axis=1) < 1e-6).astype(z.data.dtype)[:, None]
        return Scale.inverse(self, z + self.size * (1 + ops.absolute(z)) * hit)


def test_check_flow_of_a_flow_without_event_shape_round_trips_x_reversed():
    x = device(0.5 * np.random.default_rng(3).standard_normal((8, 3)))
    flow = UnshapedInverseOffAtOneImage("float64", 1.5 * tolerance("float64", "round trip"))
    with no_grad():
        flow.target = flow.forward(x)[0].data[5]  # the image of sample 5: sample 2 of x reversed
    with pytest.raises(AssertionError, match=r"^\w+: round trip forward\(inverse\(z\)\) == z fails; worst sample 2 is"):
        testing.check_flow(flow, x=x)
