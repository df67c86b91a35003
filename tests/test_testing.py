"""The checker can fail: minflow.testing rejects flows that are deliberately wrong.

A check that cannot fail proves nothing, so each property of check_flow is shown here
catching a flow that breaks exactly that property and nothing before it.
"""

import math
import zlib

import numpy as np
import pytest
from helpers import device, host
from hypothesis import given, settings

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


# --- the example tables, discovery and strategies, called inside tests -------------------------
# (the suites call these at import, to parametrize; here each is called, and checked, in a test)
def test_example_flows_draw_from_the_documented_stream():
    """Each class's noise comes from its own stream, rng(seed * 1000 + crc32(name) % 1000), added to
    the class's own initialisation; the default seed is 0. ElementwiseAffine's build draws nothing,
    so its parameters are exactly init + scale * N(0, 1) from that stream."""
    name, dim = "ElementwiseAffine", 3
    for seed in (None, 0, 3):
        flows = testing.example_flows(dim) if seed is None else testing.example_flows(dim, seed=seed)
        rng = backend.rng((seed or 0) * 1000 + zlib.crc32(name.encode()) % 1000)
        fresh = testing.FLOW_EXAMPLES[name].build(dim, rng)
        for got, initial in zip(flows[name].parameters(), fresh.parameters()):
            noise = host(rng.standard_normal(initial.shape))
            # the same stream, the same operations: equal up to rounding of one addition
            np.testing.assert_allclose(host(got), host(initial) + 0.5 * noise, rtol=1e-15, atol=1e-15)


def test_example_flows_keep_the_default_dtype_when_perturbing():
    previous = backend.get_default_dtype()
    backend.set_default_dtype("float32")
    try:
        flows = testing.example_flows(2, seed=1)
    finally:
        backend.set_default_dtype(previous)
    assert {str(p.dtype) for flow in flows.values() for p in flow.parameters()} == {"float32"}


def test_example_flows_names_itself_when_dim_is_wrong():
    with pytest.raises(ValueError, match=r"^example_flows: dim must be a positive integer, got 0$"):
        testing.example_flows(0)


def test_example_actnorms_are_initialised():
    """An example ActNorm starts from its random parameters, not from a data-dependent init."""
    flows = testing.example_flows(2, seed=0)
    found = 0
    for name in ("ActNorm", "ActNormImage", "MultiScale"):
        for module in flows[name].modules():
            if hasattr(module, "initialized"):
                found += 1
                assert bool(host(module.initialized.data)), f"{name}: an ActNorm is not marked initialised"
    assert found >= 3


def test_example_orders_and_permutations_are_random_reproducible_and_moving():
    """Permutation examples are never the identity (for D > 1); autoregressive orders are random
    permutations, drawn from the example's stream (so the same seed gives the same one)."""
    orders = set()
    for seed in range(8):
        flows, again = testing.example_flows(2, seed=seed), testing.example_flows(5, seed=seed)
        assert host(flows["Permutation"].permutation.data).tolist() == [1, 0]
        permutation = host(again["Permutation"].permutation.data).tolist()
        assert permutation == host(testing.example_flows(5, seed=seed)["Permutation"].permutation.data).tolist()
        degrees = host(again["MaskedAutoregressive"].made.degrees.data).tolist()
        assert sorted(degrees) == [1, 2, 3, 4, 5]
        assert degrees == host(testing.example_flows(5, seed=seed)["MaskedAutoregressive"].made.degrees.data).tolist()
        orders.add(tuple(degrees))
    assert len(orders) > 1, "every seed gave the same autoregressive order"


def test_example_names_are_the_sorted_tables():
    assert testing.example_flow_names() == sorted(testing.FLOW_EXAMPLES) == list(testing.example_flows(5))
    assert testing.example_transformer_names() == sorted(testing.TRANSFORMER_EXAMPLES)
    assert testing.example_transformer_names() == list(testing.example_transformers())


def test_discovery_finds_the_classes_themselves():
    from minflow.flows import planar, splines, transformers
    from minflow.flows.base import Flow

    flows, found = testing.flow_classes(), testing.transformer_classes()
    assert flows["Planar"] is planar.Planar and found["SplineTransformer"] is splines.SplineTransformer
    assert all(isinstance(cls, type) and issubclass(cls, Flow) for cls in flows.values())
    assert all(issubclass(cls, transformers.Transformer) for cls in found.values())
    assert "Flow" not in flows and "Transformer" not in found  # the base itself is left out
    assert set(flows) == set(testing.FLOW_EXAMPLES) and set(found) == set(testing.TRANSFORMER_EXAMPLES)


def test_the_flow_strategy_draws_named_examples_of_allowed_dims():
    chosen = testing.flows(names=["Coupling", "Planar"], dims=(1, 2))

    @settings(max_examples=12, database=None, derandomize=True)
    @given(chosen, testing.flows())
    def draws(pair, any_pair):
        name, flow = pair
        assert name in ("Coupling", "Planar") and type(flow).__name__ == name
        dim = flow.event_shape[0]
        assert dim in (1, 2) and (name == "Planar" or dim == 2)  # a coupling needs dim >= 2
        name, flow = any_pair
        assert type(flow).__name__ == name and name in testing.FLOW_EXAMPLES

    draws()


def test_the_transformer_and_input_strategies_draw_what_they_say():
    flow = testing.example_flows(3, seed=0)["Sigmoid"]  # inputs on the whole line
    interval = testing.example_flows(3, seed=0)["Logit"]  # inputs in (0, 1)

    @settings(max_examples=12, database=None, derandomize=True)
    @given(
        testing.transformers(),
        testing.transformers(["SplineTransformer"]),
        testing.inputs(flow, (2, 5)),
        testing.inputs(interval),
    )
    def draws(pair, spline, x, u):
        name, transformer = pair
        assert name in testing.TRANSFORMER_EXAMPLES and type(transformer).__name__ == name
        assert spline[0] == "SplineTransformer" and type(spline[1]).__name__ == "SplineTransformer"
        assert x.shape in ((2, 3), (5, 3)) and u.shape in ((1, 3), (2, 3), (7, 3))
        u = host(u)
        assert u.min() > 0 and u.max() < 1

    draws()


def test_the_input_strategy_passes_the_drawn_seed_to_sample_inputs(monkeypatch):
    from minflow.testing import strategies

    flow, calls = testing.example_flows(2, seed=0)["Sigmoid"], []

    def recording(flow_, n, *seed):
        calls.append((n, seed))
        return testing.sample_inputs(flow_, n, *seed)

    monkeypatch.setattr(strategies, "sample_inputs", recording)

    @settings(max_examples=12, database=None, derandomize=True)
    @given(testing.inputs(flow, (3,)))
    def draws(x):
        n, seed = calls[-1]
        assert len(seed) == 1 and isinstance(seed[0], int), f"no seed passed: {seed}"
        assert np.array_equal(host(x), host(testing.sample_inputs(flow, n, seed[0])))

    draws()
    assert len({seed for _, seed in calls}) > 1, "every draw used the same seed"


# The seed range of flows() and inputs() is part of their contract (their docstrings): 0..2**16 inclusive.
SEED_MAX = 2**16


def _seed_strategies(monkeypatch):
    """flows() and inputs() drawing the seed they pass on, instead of a flow or a batch (nothing is built)."""
    from minflow.testing import strategies

    monkeypatch.setattr(strategies, "example_flows", lambda dim, seed: dict.fromkeys(testing.FLOW_EXAMPLES, seed))
    monkeypatch.setattr(strategies, "sample_inputs", lambda flow, n, seed: seed)
    flow = testing.example_flows(2, seed=0)["Sigmoid"]
    return {"flows": testing.flows().map(lambda pair: pair[1]), "inputs": testing.inputs(flow)}


@pytest.mark.parametrize("strategy", ["flows", "inputs"])
def test_the_strategies_draw_every_seed_from_0_to_2_to_the_16_and_no_other(monkeypatch, strategy):
    """Both ends of the documented range are drawn (a range cut short loses examples), and in 1000
    draws no seed outside it (a negative or large seed is not a small non-negative int every backend
    accepts)."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    seeds = _seed_strategies(monkeypatch)[strategy]
    search = settings(max_examples=1000, database=None, derandomize=True)
    assert find(seeds, lambda seed: seed == 0, settings=search) == 0
    assert find(seeds, lambda seed: seed >= SEED_MAX, settings=search) == SEED_MAX
    with pytest.raises(NoSuchExample):
        find(seeds, lambda seed: not (isinstance(seed, int) and 0 <= seed <= SEED_MAX), settings=search)
