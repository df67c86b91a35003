"""The checker can fail: minflow.testing rejects flows that are deliberately wrong.

A check that cannot fail proves nothing, so each property of check_flow is shown here
catching a flow that breaks exactly that property and nothing before it.
"""

import math

import numpy as np
import pytest
from helpers import device, host

from minflow import backend, nn, testing
from minflow.autodiff import Tensor, ops
from minflow.flows import splines as S
from minflow.flows import transformers as T
from minflow.flows.base import Flow


class Scale(Flow):
    """z = x * exp(s): a correct flow, which the broken ones below change in one place."""

    def __init__(self, dim):
        self.log_scale = nn.Parameter(device(np.linspace(-0.3, 0.6, dim)))
        self.event_shape = (dim,)

    def forward(self, x):
        x = self._check_input(x)
        return x * ops.exp(self.log_scale), ops.sum(self.log_scale) + 0 * x[:, 0]

    def inverse(self, z):
        z = self._check_input(z, "z")
        return z * ops.exp(-self.log_scale), -ops.sum(self.log_scale) + 0 * z[:, 0]


class LogDetOffByAConstant(Scale):
    def forward(self, x):
        z, log_det = super().forward(x)
        return z, log_det + 0.1

    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x, log_det - 0.1


class InverseIsNotAnInverse(Scale):
    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x + 1e-3, log_det


class InverseLogDetWrongSign(Scale):
    def inverse(self, z):
        x, log_det = super().inverse(z)
        return x, -log_det


class MixesTheBatch(Flow):
    """z = x + 0.1 mean_batch(x): invertible, with a log-det that fools a Jacobian taken by
    perturbing all samples at once (each z_b moves by 1.1 eps), but not batch independent."""

    def __init__(self, dim):
        self.event_shape = (dim,)

    def forward(self, x):
        x = self._check_input(x)
        log_det = self.event_shape[0] * math.log(1.1) + 0 * x[:, 0]
        return x + 0.1 * ops.mean(x, axis=0, keepdims=True), log_det

    def inverse(self, z):
        z = self._check_input(z, "z")
        log_det = -self.event_shape[0] * math.log(1.1) + 0 * z[:, 0]
        return z - (0.1 / 1.1) * ops.mean(z, axis=0, keepdims=True), log_det


class LogDetWithoutGradient(Scale):
    """Right values, but the log-det is cut from the graph, so training would ignore it."""

    def forward(self, x):
        z, log_det = super().forward(x)
        return z, log_det.detach()


def test_a_correct_flow_passes():
    testing.check_flow(Scale(3))


@pytest.mark.parametrize(
    "flow, property_name",
    [
        (InverseIsNotAnInverse(3), "round trip inverse"),
        (InverseLogDetWrongSign(3), "inverse log-det"),
        (LogDetOffByAConstant(3), "log-det == log|det J|"),
        (MixesTheBatch(3), "batch independence"),
        (LogDetWithoutGradient(3), "gradient of tensor 0"),
    ],
)
def test_check_flow_rejects_a_broken_flow(flow, property_name):
    with pytest.raises(AssertionError, match="worst sample|gradient") as error:
        testing.check_flow(flow)
    assert property_name in str(error.value), f"expected the {property_name!r} check to fail, got: {error.value}"


def test_numerical_jacobian_of_a_linear_map_is_its_matrix():
    matrix = np.array([[2.0, 1.0], [-1.0, 3.0]])
    x = np.random.default_rng(0).standard_normal((4, 2))
    jacobian = testing.numerical_jacobian(lambda a: a @ device(matrix.T), device(x))
    # A linear map has no truncation error; what is left is rounding, ~1e-16 / eps.
    np.testing.assert_allclose(host(jacobian), np.broadcast_to(matrix, (4, 2, 2)), atol=1e-9)


def test_check_gradients_accepts_right_and_rejects_wrong_gradients():
    w = nn.Parameter(device([0.3, -1.2, 2.0]))
    testing.check_gradients(lambda: ops.sum(ops.tanh(w) * w), w)
    with pytest.raises(AssertionError, match="autodiff .* vs finite differences"):
        # the detached factor hides half of the product rule from the engine
        testing.check_gradients(lambda: ops.sum(ops.tanh(w) * w.detach()), w, n_coords=3)


def test_sample_inputs_respect_the_domain():
    class UnitInterval(Scale):
        input_domain = (0.0, 1.0)

    x = host(testing.sample_inputs(UnitInterval(4), 100, seed=0))
    assert x.shape == (100, 4) and x.min() > 0 and x.max() < 1


def test_example_flows_are_reproducible_and_validated():
    a = testing.example_flows(2, seed=7)["LULinear"]
    b = testing.example_flows(2, seed=7)["LULinear"]
    assert all(np.array_equal(host(p), host(q)) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="dim"):
        testing.example_flows(0)


def test_forward_returns_tensors_of_the_right_shape():
    z, log_det = Scale(2).forward(device(np.zeros((5, 2))))
    assert isinstance(z, Tensor) and z.shape == (5, 2) and log_det.shape == (5,)


# --- check_transformer: each property, shown failing on a transformer broken in that one place ---
class _Affine(T.AffineTransformer):
    """The correct affine transformer (theta = (shift, s)), which the broken ones change in one place."""


TOLERANCE = testing._TOLERANCES["float64"][1]  # the finite-difference tolerance of float64


class LogDerivativeOff(_Affine):
    """log g' off by ``offset`` wherever theta != 0, both ways (so the inverse still matches minus
    the forward one, and theta = 0 is still the identity): only the finite differences see it."""

    offset = 2 * TOLERANCE

    def _offset(self, theta):
        data = as_array(theta)
        return Tensor(backend.array_module(data).where(data[..., 0] != 0, self.offset, 0.0))

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return z, log_derivative + self._offset(theta)

    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, log_derivative - self._offset(theta)


class LogDerivativeOffWithinTolerance(LogDerivativeOff):
    offset = 0.5 * TOLERANCE


class Decreasing(_Affine):
    """z = -(affine h): invertible, |g'| right, but decreasing."""

    def forward(self, h, theta):
        z, log_derivative = super().forward(h, theta)
        return -z, log_derivative

    def inverse(self, z, theta):
        return super().inverse(-z, theta)


class BrokenInverse(_Affine):
    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h + 1e-3, log_derivative


class InverseLogDerivativeWrongSign(_Affine):
    def inverse(self, z, theta):
        h, log_derivative = super().inverse(z, theta)
        return h, -log_derivative


class ShiftedAtZero(_Affine):
    """theta = 0 shifts by 0.5: a correct transformer in every way except the identity."""

    def shift_and_log_scale(self, theta):
        shift, log_scale = super().shift_and_log_scale(theta)
        return shift + 0.5, log_scale


class LogDerivativeOfTheInputShape(T.AdditiveTransformer):
    """Zeros of h's shape, not of the broadcast shape of h and theta."""

    def forward(self, h, theta):
        z, _ = super().forward(h, theta)
        return z, Tensor(0 * as_array(h))

    def inverse(self, z, theta):
        h, _ = super().inverse(z, theta)
        return h, Tensor(0 * as_array(z))


def as_array(x):
    return x.data if isinstance(x, Tensor) else x


class UncheckedTheta(_Affine):
    """Reads theta[..., 0] and theta[..., 1] without checking that there are exactly two."""

    def shift_and_log_scale(self, theta):
        theta = Tensor(as_array(theta))
        return theta[..., 0], ops.soft_clamp(theta[..., 1], self.scale_bound)


class LeavesItsDomain(_Affine):
    """Claims [0, 1] but shifts and scales out of it."""

    domain = (0.0, 1.0)


class ClampsInsteadOfRaising(S.PiecewiseLinearTransformer):
    """Silently clamps input outside [0, 1] into it, instead of raising."""

    def forward(self, h, theta):
        return super().forward(ops.clip(h, 0.0, 1.0), theta)

    def inverse(self, z, theta):
        return super().inverse(ops.clip(z, 0.0, 1.0), theta)


@pytest.mark.parametrize("name", testing.example_transformer_names())
def test_check_transformer_passes_every_correct_transformer(name):
    testing.check_transformer(testing.example_transformers()[name])


def test_check_transformer_passes_a_log_derivative_off_by_less_than_the_tolerance():
    testing.check_transformer(LogDerivativeOffWithinTolerance())


@pytest.mark.parametrize(
    "transformer, property_name",
    [
        (UncheckedTheta(), "shapes"),
        (LogDerivativeOfTheInputShape(), "shapes"),
        (BrokenInverse(), "round trip inverse(forward(h)) == h"),
        (InverseLogDerivativeWrongSign(), "inverse log-derivative"),
        (LogDerivativeOff(), "log-derivative == log|finite differences|"),
        (Decreasing(), "strictly increasing"),
        (ShiftedAtZero(), "theta = 0 is the identity"),
        (LeavesItsDomain(), "domain"),
        (ClampsInsteadOfRaising(), "did not raise ValueError"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else "",
)
def test_check_transformer_rejects_a_broken_transformer(transformer, property_name):
    with pytest.raises(AssertionError) as error:
        testing.check_transformer(transformer)
    message = str(error.value)
    assert message.startswith(type(transformer).__name__ + ":"), f"the message must name the transformer: {message}"
    assert property_name in message, f"expected the {property_name!r} check to fail, got: {message}"
