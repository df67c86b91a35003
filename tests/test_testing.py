"""The checker can fail: minflow.testing rejects flows that are deliberately wrong.

A check that cannot fail proves nothing, so each property of check_flow is shown here
catching a flow that breaks exactly that property and nothing before it.
"""

import math

import numpy as np
import pytest
from helpers import device, host

from minflow import nn, testing
from minflow.autodiff import Tensor, ops
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
