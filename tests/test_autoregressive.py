"""Autoregressive flows: the properties that only they have (the universal suite covers the rest)."""

import numpy as np
import pytest
from helpers import assert_close, device, host

from minflow import testing
from minflow.flows import autoregressive
from minflow.flows.base import Inverse
from minflow.flows.splines import PiecewiseLinearTransformer, SplineTransformer


def _random_made(dim, order, seed=0):
    made = autoregressive.MADE(dim, params_per_dim=2, hidden=(16, 16), order=order, activation="tanh", seed=seed)
    rng = np.random.default_rng(seed)
    for p in made.parameters():
        p.data = p.data + device(0.5 * rng.standard_normal(p.shape))  # the last layer starts at zero
    return made


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [3, 0, 4, 1, 2]])
def test_made_output_never_sees_its_own_or_later_inputs(order):
    made = _random_made(5, order)
    degree = {coordinate: position + 1 for position, coordinate in enumerate(order)}
    x = np.random.default_rng(1).standard_normal((3, 5))
    base = host(made(device(x)))
    for d in range(5):
        moved = x.copy()
        moved[:, d] += 1.7
        change = np.abs(host(made(device(moved))) - base).max(axis=(0, 2))  # per output coordinate
        for i in range(5):
            if degree[i] <= degree[d]:
                assert change[i] == 0, f"output {i} (degree {degree[i]}) moved when input {d} (degree {degree[d]}) did"
            else:
                assert change[i] > 1e-6, f"output {i} should depend on input {d}: the test would prove nothing"


def test_made_degrees_cycle_through_the_usable_values():
    inputs, layers = autoregressive.made_degrees(4, (5,), order=[2, 0, 3, 1])
    assert inputs == [2, 4, 1, 3] and layers == [[1, 2, 3, 1, 2]]
    with pytest.raises(ValueError, match="permutation"):
        autoregressive.made_degrees(3, (4,), order=[0, 0, 1])


@pytest.mark.parametrize("name", ["MaskedAutoregressive", "InverseAutoregressive"])
def test_jacobian_is_triangular_in_the_autoregressive_order(name):
    flow = testing.example_flows(5, seed=2)[name]
    maf = flow.flow if isinstance(flow, Inverse) else flow
    degree = host(maf.made.degrees)
    x = testing.sample_inputs(flow, 4, seed=3)
    jacobian = host(testing.numerical_jacobian(lambda a: flow.forward(a)[0].data, x))
    later_or_same = degree[None, :] >= degree[:, None]  # [i, j]: x_j comes at or after x_i
    np.fill_diagonal(later_or_same, False)
    assert np.abs(jacobian[:, later_or_same]).max() < 1e-8, "z_i must not depend on x_j for j at or after i"
    earlier = degree[None, :] < degree[:, None]
    assert np.abs(jacobian[:, earlier]).max() > 1e-3, "and does depend on earlier coordinates"


def test_maf_inverse_is_exact_after_D_passes_and_not_before():
    flow = testing.example_flows(4, seed=5)["MaskedAutoregressive"]
    x = testing.sample_inputs(flow, 6, seed=0)
    z, log_det = flow.forward(x)
    x_back, inverse_log_det = flow.inverse(z)  # D = 4 passes
    # exact up to rounding: a few float64 ulps per pass, amplified by the transformer
    assert_close(x_back, x, atol=1e-12)
    assert_close(inverse_log_det, -host(log_det), atol=1e-12)
    short, _ = flow.inverse(z, passes=3)
    assert np.abs(host(short) - host(x)).max() > 1e-6, "D - 1 passes leave the last coordinate wrong"


def test_iaf_is_the_inverse_of_the_same_machinery():
    iaf = autoregressive.InverseAutoregressive(3, SplineTransformer(bins=4), hidden=(8,), seed=0)
    assert isinstance(iaf, Inverse) and isinstance(iaf.flow, autoregressive.MaskedAutoregressive)
    assert iaf.parameters() == iaf.flow.parameters()


@pytest.mark.parametrize("transformer", [None, SplineTransformer(bins=4)])
def test_new_layers_start_as_the_identity(transformer):
    flow = autoregressive.MaskedAutoregressive(3, transformer, hidden=(8,), seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    z, log_det = flow.forward(device(x))
    assert_close(z, x, atol=1e-12)
    assert_close(log_det, np.zeros(5), atol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="hidden layer"):
        autoregressive.MADE(3, 2, hidden=())
    with pytest.raises(ValueError, match="dim"):
        autoregressive.MaskedAutoregressive(0)


@pytest.mark.parametrize(
    "named, general",
    [
        (
            lambda: autoregressive.SplineAutoregressive(3, bins=4, bound=3.0, hidden=(8,), seed=0),
            lambda: autoregressive.MaskedAutoregressive(3, SplineTransformer(4, 3.0), hidden=(8,), seed=0),
        ),
        (
            lambda: autoregressive.SplineInverseAutoregressive(3, bins=4, bound=3.0, hidden=(8,), seed=0),
            lambda: autoregressive.InverseAutoregressive(3, SplineTransformer(4, 3.0), hidden=(8,), seed=0),
        ),
        (
            lambda: autoregressive.PiecewiseLinearAutoregressive(3, bins=4, hidden=(8,), seed=0),
            lambda: autoregressive.MaskedAutoregressive(3, PiecewiseLinearTransformer(4), hidden=(8,), seed=0),
        ),
    ],
)
def test_named_variants_are_the_general_flow_with_their_transformer(named, general):
    a, b = named(), general()
    for p, q in zip(a.parameters(), b.parameters()):
        p.data = q.data = p.data + device(0.3 * np.random.default_rng(1).standard_normal(p.shape))
    x = np.random.default_rng(2).uniform(0.05, 0.95, size=(4, 3))  # inside [0, 1] for the piecewise-linear one
    (z1, log_det1), (z2, log_det2) = a.forward(device(x)), b.forward(device(x))
    assert_close(z1, z2, rtol=0, atol=0)  # the same operations on the same numbers: equal bit for bit
    assert_close(log_det1, log_det2, rtol=0, atol=0)


def test_made_degrees_with_two_or_one_coordinates_use_degree_one_only():
    # With D = 2 the only usable hidden degree is 1 (a unit of degree 2 could feed no output): no unit wasted.
    assert autoregressive.made_degrees(2, (3, 2)) == ([1, 2], [[1, 1, 1], [1, 1]])
    assert autoregressive.made_degrees(1, (3,)) == ([1], [[1, 1, 1]])


def test_masked_linear_is_x_times_masked_weight_plus_bias_and_starts_like_linear():
    from minflow.autodiff import Tensor
    from minflow.nn import Linear

    mask = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    layer = autoregressive.MaskedLinear(2, 3, mask, seed=4)
    plain = Linear(2, 3, seed=4)
    assert_close(host(layer.weight), host(plain.weight), rtol=0)  # the default zero=False: Linear's draw
    assert_close(host(layer.bias), host(plain.bias), rtol=0)
    assert np.all(host(layer.bias) != 0) and layer.mask.dtype == layer.weight.dtype
    x = np.random.default_rng(5).standard_normal((4, 2))
    expected = x @ (host(layer.weight) * np.array(mask)) + host(layer.bias)
    assert_close(host(layer(Tensor(device(x)))), expected, rtol=1e-14)  # a 2-term dot product per entry


def test_made_builds_and_runs_in_float32():
    from minflow import backend

    previous = backend.get_default_dtype()
    backend.set_default_dtype("float32")
    try:
        made = autoregressive.MADE(3, 2, hidden=(8,), seed=0)
        assert {layer.mask.dtype for layer in made.layers} == {np.dtype(np.float32)}
        out = made(device(np.ones((2, 3)), np.float32))
        assert out.dtype == np.float32 and out.shape == (2, 3, 2)
    finally:
        backend.set_default_dtype(previous)
