"""Residual flows against independent references: the numbers, not just their consistency.

check_flow only sees that forward, inverse and log-det agree with each other, so a block with the
wrong sign of a bias or the wrong activation is still a perfect flow. Here every result is compared
with a NumPy reference written from the documented formulas (spectral normalisation by a dense
matrix norm, g(x) layer by layer, J_g by the chain rule, the cut power series, the probe average),
the fixed-point iteration's stopping rule is tested on its boundary, and the power-iteration vectors
are checked to move only when the documentation says they do.
"""

import numpy as np
import pytest
from helpers import assert_close, assert_equal, device, host
from hypothesis import given
from hypothesis import strategies as st

from minflow import backend, testing
from minflow.autodiff import Tensor
from minflow.flows.residual import AdditiveResidualCoupling, ContractiveResidual, SpectralNormLinear

HOST_ACTIVATIONS = {  # phi and phi' on the host, written out independently of minflow.autodiff.ops
    "tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2),
    "softplus": (lambda a: np.logaddexp(0, a), lambda a: 1 / (1 + np.exp(-a))),
}


def contractive(dim, seed, **options):
    """A random ContractiveResidual: its initialisation perturbed by N(0, 0.5^2), so every bias is non-zero
    and every weight is larger than the coefficient (the normalisation does something)."""
    rng = backend.rng(seed)
    return testing._perturb(ContractiveResidual(dim, seed=rng, **options), rng, 0.5)


def standard_normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# --- NumPy references -----------------------------------------------------------------------------
def reference_weights(flow):
    """W_hat_l = W_l min(1, c / ||W_l||_2), the spectral norm from NumPy's dense 2-norm."""
    weights = [host(layer.weight) for layer in flow.layers]
    return [w * min(1.0, flow.coefficient / np.linalg.norm(w, 2)) for w in weights]


def reference_network(flow, x):
    """g(x) and the pre-activations [a_1, ..., a_{L-1}]: a_1 = x W_1 + b_1, a_l = phi(a_{l-1}) W_l + b_l."""
    phi = HOST_ACTIVATIONS[flow.activation][0]
    weights, biases = reference_weights(flow), [host(layer.bias) for layer in flow.layers]
    pre, h = [], x
    for weight, bias in zip(weights[:-1], biases[:-1]):
        pre.append(h @ weight + bias)
        h = phi(pre[-1])
    return h @ weights[-1] + biases[-1], pre


def reference_jacobian(flow, x):
    """J_g (B, D, D) by the chain rule: J^T = W_1 diag(phi'(a_1)) W_2 ... diag(phi'(a_{L-1})) W_L."""
    derivative = HOST_ACTIVATIONS[flow.activation][1]
    weights = reference_weights(flow)
    _, pre = reference_network(flow, x)
    jacobian_t = np.broadcast_to(weights[0], (len(x), *weights[0].shape))
    for a, weight in zip(pre, weights[1:]):
        jacobian_t = (jacobian_t * derivative(a)[:, None, :]) @ weight
    return np.transpose(np.broadcast_to(jacobian_t, (len(x), x.shape[1], x.shape[1])), (0, 2, 1))


def reference_series(jacobian, terms):
    """sum_{k=1}^{terms} (-1)^(k+1) tr(J^k) / k, per sample."""
    power, total = np.eye(jacobian.shape[-1]), 0.0
    for k in range(1, terms + 1):
        power = power @ jacobian
        total = total + (-1) ** (k + 1) / k * np.trace(power, axis1=-2, axis2=-1)
    return total


def reference_mlp(mlp, x, phi):
    """An MLP of minflow.nn on the host: phi(x W + b) for the hidden layers, x W + b at the end."""
    for layer in mlp.layers[:-1]:
        x = phi(x @ host(layer.weight) + host(layer.bias))
    return x @ host(mlp.layers[-1].weight) + host(mlp.layers[-1].bias)


def test_the_chain_rule_reference_is_the_derivative_of_the_reference_network():
    # the references check minflow below, so they are checked first: central differences of the host
    # g with step 1e-6 have error ~1e-11 on this O(1) smooth map
    flow = contractive(3, seed=0, hidden=(5, 4), activation="softplus")
    x = standard_normal((4, 3), 1)
    step, numeric = 1e-6, np.empty((4, 3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = step
        numeric[:, :, j] = (reference_network(flow, x + e)[0] - reference_network(flow, x - e)[0]) / (2 * step)
    np.testing.assert_allclose(reference_jacobian(flow, x), numeric, atol=1e-8)


# --- ContractiveResidual: the map and its log-det -----------------------------------------------------
@given(
    seed=st.integers(0, 2**16),
    dim=st.integers(1, 4),
    hidden=st.sampled_from([(), (5,), (4, 3)]),
    activation=st.sampled_from(["tanh", "softplus"]),
)
def test_contractive_forward_is_x_plus_g_and_the_exact_log_det(seed, dim, hidden, activation):
    """z = x + g(x) with every bias added (not subtracted) and log|det| = log det(I + J_g), against NumPy."""
    flow = contractive(dim, seed, hidden=hidden, activation=activation)
    x = standard_normal((6, dim), seed + 1) * 1.5
    z, log_det = flow.forward(device(x))
    g = reference_network(flow, x)[0]
    # O(1) values through a few float64 matmuls and one SVD per layer: agreement to ~1e-15, asked 1e-12
    assert_close(z, x + g, atol=1e-12)
    assert_close(log_det, np.linalg.slogdet(np.eye(dim) + reference_jacobian(flow, x))[1], atol=1e-12)


@pytest.mark.parametrize("terms", [1, 2, 5, 8])
@pytest.mark.parametrize("hidden", [(), (6,)])
def test_series_log_det_sums_exactly_series_terms_terms(terms, hidden):
    """log_det_at(x, "series") is the power series cut after series_terms terms, even when the flow's own
    method is "exact" (the method argument is honoured)."""
    flow = contractive(3, seed=terms, hidden=hidden, series_terms=terms)
    x = standard_normal((8, 3), 2)
    jacobian = reference_jacobian(flow, x)
    expected = reference_series(jacobian, terms)
    # one term more or fewer must be visible (1000 times the tolerance below) for the test to see a wrong cut-off
    for other in [terms - 1, terms + 1]:
        assert np.abs(reference_series(jacobian, other) - expected).max() > 1e-9
    assert_close(flow.log_det_at(device(x), "series"), expected, atol=1e-12)  # a few float64 matmuls
    series_flow = contractive(3, seed=terms, hidden=hidden, series_terms=terms, log_det_method="series")
    assert_close(series_flow.forward(device(x))[1], expected, atol=1e-12)


@pytest.mark.parametrize("terms", [1, 3, 6])
def test_hutchinson_in_one_dimension_is_the_cut_series_exactly(terms):
    """For D = 1 a Rademacher probe v = +-1 gives v J^k v = J^k: the estimate is the cut series, no noise.
    This checks the number of terms and the signs through the public forward, in the flow's own dtype."""
    for dtype in ["float64", "float32"]:
        options = {"log_det_method": "hutchinson", "series_terms": terms, "hutchinson_samples": 3}
        flow = contractive(1, seed=terms, hidden=(4,), **options).astype(dtype)
        x = standard_normal((7, 1), 3)
        log_det = flow.forward(device(x, dtype=dtype))[1]
        assert log_det.dtype == dtype  # the probes are cast to the input's dtype
        expected = reference_series(reference_jacobian(flow, x), terms)
        # float32: ~10 roundings of O(1) numbers, 1e-5 is a few hundred ulps of margin
        assert_close(log_det, expected, atol=1e-12 if dtype == "float64" else 1e-5)


def test_hutchinson_with_given_probes_averages_the_quadratic_forms():
    """_hutchinson(probes) = sum_k (-1)^(k+1)/k mean_s v_s^T J^k v_s for any probes (here Gaussian ones, also
    an unbiased choice: E[v v^T] = I), so it multiplies by the probes, never divides."""
    flow = contractive(3, seed=5, hidden=(6,), series_terms=4)
    x, probes = standard_normal((5, 3), 0), standard_normal((5, 7, 3), 1)
    jacobian = reference_jacobian(flow, x)
    expected, power = 0.0, np.eye(3)
    for k in range(1, 5):
        power = power @ jacobian  # (B, D, D)
        quadratic = np.einsum("bsi,bij,bsj->bs", probes, power, probes)
        expected = expected + (-1) ** (k + 1) / k * quadratic.mean(axis=1)
    weights = flow.normalized_weights()
    pre = flow._network(Tensor(device(x)), weights)[1]
    assert_close(flow._hutchinson(pre, weights, device(probes)), expected, atol=1e-12)


def test_log_det_series_bias_is_exact_minus_the_cut_series_whatever_the_flows_method():
    """log_det_series_bias compares the exact log-det with the series, not with the flow's own method
    (Hutchinson here), and leaves series_terms as it was."""
    flow = contractive(3, seed=6, hidden=(6,), log_det_method="hutchinson", series_terms=7)
    x = standard_normal((8, 3), 4)
    jacobian = reference_jacobian(flow, x)
    exact = np.linalg.slogdet(np.eye(3) + jacobian)[1]
    terms = (1, 2, 4)
    bias = flow.log_det_series_bias(device(x), terms)
    for n in terms:
        assert bias[n] == pytest.approx((exact - reference_series(jacobian, n)).mean(), abs=1e-12)
    assert flow.series_terms == 7


# --- ContractiveResidual: the fixed-point inverse -------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scale", [0.5, 300.0])
def test_stopping_tolerance_is_64_ulps_of_the_dtype_times_one_plus_max_abs_z(dtype, scale):
    """The documented floor: max(inverse_tolerance, 64 eps (1 + max|z|)), eps of z's own dtype."""
    flow = contractive(3, seed=7, inverse_tolerance=1e-300).astype(dtype)
    z = device(standard_normal((5, 3), 5) * scale, dtype=dtype)
    largest = float(np.abs(host(z)).max())
    floor = 64 * float(np.finfo(dtype).eps) * (1 + largest)
    assert flow._stopping_tolerance(Tensor(z)) == floor
    # and the iteration stops exactly there: at the first residual below the floor
    trace = flow.fixed_point_trace(z)
    assert trace[-1] < floor <= trace[-2]
    flow.inverse_tolerance = 10 * floor  # a requested tolerance above the floor wins
    assert flow._stopping_tolerance(Tensor(z)) == 10 * floor


def test_float32_inverse_of_large_inputs_stops_at_roundoff_instead_of_failing():
    # float32 cannot resolve |x_{k+1} - x_k| below ~eps |x| ~ 1e-4 at |z| ~ 1000: the floor must scale with |z|
    flow = contractive(3, seed=8).astype("float32")
    z = device(standard_normal((6, 3), 6) * 1000, dtype="float32")
    x, _ = flow.inverse(z)
    # the floor is 64 eps (1 + max|z|) ~ 2e-2; the error to the fixed point is at most Lip/(1-Lip) times it
    assert np.abs(host(flow.forward(x)[0]) - host(z)).max() < 1.0


def test_iteration_stops_only_strictly_below_the_tolerance():
    """A residual exactly equal to the tolerance is not convergence: the trace and the inverse take one
    more step, and an inverse whose last allowed residual equals the tolerance raises."""
    flow = contractive(3, seed=9, hidden=(6,))
    z = device(standard_normal((16, 3), 7) * 2)
    trace = flow.fixed_point_trace(z)
    k = len(trace) // 2
    assert trace[k] > 1e-6 and trace[k + 1] < trace[k]  # well above the floor, and a strict decrease
    flow.inverse_tolerance = trace[k]  # the same float: the iteration is deterministic
    assert flow.fixed_point_trace(z) == trace[: k + 2]
    flow.inverse(z)
    assert flow.last_inverse_iterations == k + 2 and flow.last_inverse_residual == trace[k + 1]
    flow.max_iterations = k + 1  # the last residual allowed is trace[k] == tolerance: not converged
    with pytest.raises(RuntimeError):
        flow.inverse(z)
    assert flow.last_inverse_iterations == k + 1 and flow.last_inverse_residual == trace[k]


@pytest.mark.parametrize("method", ["exact", "series", "hutchinson"])
def test_an_empty_batch_passes_through_both_directions(method):
    # as for every other flow: (0, D) in, (0, D) and (0,) out, in one step of the iteration
    flow = contractive(3, seed=10, log_det_method=method)
    empty = device(np.zeros((0, 3)))
    for direction in [flow.forward, flow.inverse]:
        out, log_det = direction(empty)
        assert out.shape == (0, 3) and log_det.shape == (0,)
    assert flow.last_inverse_iterations == 1 and flow.last_inverse_residual == 0.0
    assert flow.fixed_point_trace(empty) == [0.0]


# --- spectral normalisation -----------------------------------------------------------------------
def power_layer(seed):
    """A 4 x 3 SpectralNormLinear in power mode whose singular values 2, 1.8, 0.5 make the power iteration slow
    (error ~0.9^(2k)), so 5 and 6 steps give visibly different estimates; the bias is random."""
    layer = SpectralNormLinear(4, 3, coefficient=0.7, spectral_norm="power", seed=seed)
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.standard_normal((4, 3)))
    right, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    layer.weight.data = device(left @ np.diag([2.0, 1.8, 0.5]) @ right.T)
    layer.bias.data = device(rng.standard_normal(3))
    return layer


def reference_power_sigma(weight, u, steps):
    """sigma ~ u^T W v after ``steps`` rounds v = W^T u / |W^T u|, u = W v / |W v|."""
    for _ in range(steps):
        v = u @ weight
        u = weight @ (v / np.linalg.norm(v))
        u = u / np.linalg.norm(u)
    v = u @ weight
    return u @ weight @ (v / np.linalg.norm(v))


def test_spectral_norm_layer_is_x_w_hat_plus_b_with_five_power_steps_by_default():
    """SpectralNormLinear used on its own: y = x W min(1, c / sigma_5) + b, sigma_5 the estimate after the
    default 5 power steps from the stored vector, which a call without update leaves alone."""
    layer = power_layer(11)
    weight, u = host(layer.weight), host(layer.u)
    sigma = reference_power_sigma(weight, u, 5)
    assert abs(sigma - reference_power_sigma(weight, u, 6)) > 1e-6  # one step more is visible
    assert sigma > layer.coefficient  # the scale is active
    x = standard_normal((5, 4), 8)
    # float64 matmuls and norms of O(1) numbers: ~1e-15, asked 1e-12
    assert_close(layer.singular_vectors()[2], sigma, rtol=1e-12)
    assert_close(layer.forward(device(x)), x @ weight * (layer.coefficient / sigma) + host(layer.bias), atol=1e-12)
    layer.normalized_weight()
    assert_equal(layer.u, u)  # no call above asked for an update


def test_a_spectral_norm_exactly_at_the_coefficient_leaves_the_weight_and_its_gradient_alone():
    """At sigma = c the scale is the constant 1 (the layer is not normalised), so dL/dW is the plain
    gradient; taking c / sigma there would add the term -(sum(G W) / sigma) u v^T."""
    layer = SpectralNormLinear(3, 2, coefficient=0.5, seed=0)
    layer.weight.data = device([[0.5, 0.0], [0.0, 0.25], [0.0, 0.0]])  # exact SVD: sigma = 0.5
    assert float(host(layer.singular_vectors()[2])) == 0.5
    upstream = device([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    weight_hat = layer.normalized_weight()
    assert_equal(weight_hat, layer.weight)
    (weight_hat * Tensor(upstream)).sum().backward()
    assert_equal(layer.weight.grad, upstream)


def test_only_forward_refines_the_power_iteration_vectors():
    """The stored vectors move on forward while update_spectral_norm is True, never on inverse or the
    diagnostics, and not at all once update_spectral_norm is False (the map stays fixed)."""
    flow = contractive(3, seed=12, hidden=(5,), spectral_norm="power")
    x = device(standard_normal((6, 3), 9))

    def stored():
        return [host(layer.u).copy() for layer in flow.layers]

    before = stored()
    flow.inverse(x)
    flow.residual(x)
    flow.jacobian(x)
    flow.log_det_at(x)
    flow.fixed_point_trace(x)
    flow.lipschitz_bound()
    for old, new in zip(before, stored()):
        assert_equal(new, old)
    flow.forward(x)
    assert any(np.abs(new - old).max() > 0 for old, new in zip(before, stored()))
    flow.update_spectral_norm = False
    before = stored()
    flow.forward(x)
    for old, new in zip(before, stored()):
        assert_equal(new, old)


# --- AdditiveResidualCoupling -------------------------------------------------------------------------
@given(seed=st.integers(0, 2**16), dim=st.integers(2, 5), activation=st.sampled_from(["tanh", "sigmoid"]))
def test_additive_residual_coupling_uses_its_activation_in_both_networks(seed, dim, activation):
    """z1 = h1 + f1(h2), z2 = h2 + f2(z1) with f1, f2 MLPs of the chosen activation (NumPy reference)."""
    rng = backend.rng(seed)
    flow = testing._perturb(AdditiveResidualCoupling(dim, hidden=(5,), activation=activation, seed=rng), rng, 0.5)
    phi = {"tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a))}[activation]
    x = standard_normal((6, dim), seed) * 2
    h1, h2 = x[:, : flow.split], x[:, flow.split :]
    z1 = h1 + reference_mlp(flow.f1, h2, phi)
    z2 = h2 + reference_mlp(flow.f2, z1, phi)
    # a few float64 matmuls of O(1) numbers
    assert_close(flow.forward(device(x))[0], np.concatenate([z1, z2], axis=1), atol=1e-12)
    assert_close(flow.inverse(device(np.concatenate([z1, z2], axis=1)))[0], x, atol=1e-12)


def test_a_fresh_block_reports_no_inverse_yet_and_spectral_norm_linear_has_its_defaults():
    flow = ContractiveResidual(3, seed=0)
    assert flow.last_inverse_iterations is None and flow.last_inverse_residual is None  # before any inverse
    layer = SpectralNormLinear(3, 2, seed=0)
    assert (layer.coefficient, layer.spectral_norm) == (0.9, "exact")


def test_power_iteration_vector_takes_the_default_dtype():
    previous = backend.get_default_dtype()
    backend.set_default_dtype("float32")
    try:
        layer = SpectralNormLinear(3, 2, spectral_norm="power", seed=0)
        assert layer.u.dtype == np.float32, f"u is {layer.u.dtype}: power iteration would run in float64"
        assert layer.normalized_weight().dtype == np.float32
    finally:
        backend.set_default_dtype(previous)
