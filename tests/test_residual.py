"""Residual flows: the properties that only they have, and check_flow on random instances.

AdditiveResidualCoupling: volume preserving, Jacobian = product of two unit-triangular
blocks. ContractiveResidual: Lip(g) < 1 after spectral normalisation, the fixed-point
inverse converges geometrically, the hand-derived Jacobian of g, the three log-dets
(exact, series, Hutchinson), and where the inverse log-det is evaluated.
"""

import itertools
import math

import numpy as np
import pytest
from helpers import assert_close, assert_equal, device, host

from minflow import backend, testing
from minflow.autodiff import Tensor
from minflow.flows.residual import AdditiveResidualCoupling, ContractiveResidual

# The same small random instances as minflow.testing.example_flows builds (perturbed from
# the class's own initialisation, so none is the identity).
BUILDERS = {
    "AdditiveResidualCoupling": (
        lambda d, rng: AdditiveResidualCoupling(d, hidden=(8,), activation="tanh", seed=rng),
        0.5,
    ),
    "ContractiveResidual": (lambda d, rng: ContractiveResidual(d, hidden=(8,), activation="tanh", seed=rng), 0.5),
}


def build(name, dim, seed=0, **options):
    """A random, non-identity instance; ``options`` go to the constructor."""
    rng = backend.rng(seed)
    if options:
        cls = {"AdditiveResidualCoupling": AdditiveResidualCoupling, "ContractiveResidual": ContractiveResidual}[name]
        flow = cls(dim, seed=rng, **options)
        scale = BUILDERS[name][1]
    else:
        build_, scale = BUILDERS[name]
        flow = build_(dim, rng)
    return testing._perturb(flow, rng, scale)


def standard_normal(shape, seed):
    """Host (NumPy) data; tests move it to the default backend with ``device`` where it enters minflow."""
    return np.random.default_rng(seed).standard_normal(shape)


# --- the flow contract ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("dim", [2, 3, 5])
def test_check_flow_float64(name, dim):
    flow = build(name, dim, seed=dim)
    x = testing.sample_inputs(flow, 6, seed=1)
    assert np.abs(host(flow.forward(x)[0]) - host(x)).max() > 1e-2, "the example must not be the identity"
    # inverse_tolerance 1e-10 stops the iteration with an error <= Lip/(1-Lip) * 1e-10 < 5e-10.
    testing.check_flow(flow, x=x, inverse_tolerance=1e-8)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_check_flow_float32(name):
    # float32 tolerances of minflow.testing; the inverse stops at 64 ulps * (1 + |z|) there.
    flow = build(name, 3, seed=4).astype("float32")
    testing.check_flow(flow, n=6, seed=4)


def test_contractive_float32_stays_close_to_float64():
    flow64, flow32 = build("ContractiveResidual", 3, seed=5), build("ContractiveResidual", 3, seed=5).astype("float32")
    x = standard_normal((16, 3), 6)
    z64, log_det64 = flow64.forward(device(x))
    z32, log_det32 = flow32.forward(device(x, dtype="float32"))
    assert z32.dtype == "float32" and log_det32.dtype == "float32"
    z32, log_det32, z64, log_det64 = host(z32), host(log_det32), host(z64), host(log_det64)
    # ~7 significant digits, a few lost in the SVD and slogdet of well-conditioned matrices
    assert np.abs(z32 - z64).max() <= 1e-4 * (1 + np.abs(z64).max())
    assert np.abs(log_det32 - log_det64).max() <= 1e-4 * (1 + np.abs(log_det64).max())


@pytest.mark.parametrize(
    "options",
    [
        {"log_det_method": "series", "coefficient": 0.5, "series_terms": 40},  # cut-off bias <= D 0.25^41 / 41: nothing
        {"activation": "softplus", "hidden": (8, 8)},
        {"hidden": ()},  # g(x) = x W_hat + b: a linear contraction
    ],
)
def test_contractive_variants_pass_check_flow(options):
    testing.check_flow(build("ContractiveResidual", 3, seed=2, **options), n=6, inverse_tolerance=1e-8)


def test_power_iteration_converges_and_a_frozen_map_passes_check_flow():
    flow = build("ContractiveResidual", 3, seed=3, spectral_norm="power", power_iterations=5, hidden=(8,))
    x = device(standard_normal((6, 3), 0))
    for _ in range(100):  # "training steps": each forward refines the stored vectors
        flow.forward(x)
    for layer in flow.layers:
        exact = np.linalg.norm(host(layer.weight), 2)
        # power iteration converges like (sigma_2 / sigma_1)^(2k): after 500 steps, to roundoff
        assert abs(host(layer.singular_vectors()[2]) - exact) <= 1e-10 * exact
    flow.update_spectral_norm = False  # evaluation: the map must stay fixed between calls
    testing.check_flow(flow, x=x, inverse_tolerance=1e-8)


# --- AdditiveResidualCoupling -------------------------------------------------------------------
def test_additive_residual_coupling_preserves_volume_exactly():
    flow = build("AdditiveResidualCoupling", 5, seed=1)
    z, log_det = flow.forward(device(standard_normal((7, 5), 0)))
    assert np.all(host(log_det) == 0) and np.all(host(flow.inverse(z)[1]) == 0)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_additive_residual_jacobian_is_a_product_of_unit_triangular_blocks(dim):
    flow = build("AdditiveResidualCoupling", dim, seed=dim)
    x = standard_normal((4, dim), 1)
    d1 = flow.split
    assert d1 == dim // 2
    h2 = x[:, d1:]
    z1 = flow.forward(device(x))[0].data[:, :d1]
    j_f1 = host(testing.numerical_jacobian(lambda a: flow.f1(a).data, device(h2)))  # (B, D1, D2) at h2
    j_f2 = host(testing.numerical_jacobian(lambda a: flow.f2(a).data, z1))  # (B, D2, D1) at z1
    eye1, eye2 = np.broadcast_to(np.eye(d1), (4, d1, d1)), np.broadcast_to(np.eye(dim - d1), (4, dim - d1, dim - d1))
    zeros12, zeros21 = np.zeros((4, d1, dim - d1)), np.zeros((4, dim - d1, d1))
    lower = np.block([[eye1, zeros12], [j_f2, eye2]])  # [[I, 0], [J_f2, I]]: the second step
    upper = np.block([[eye1, j_f1], [zeros21, eye2]])  # [[I, J_f1], [0, I]]: the first step
    numeric = host(testing.numerical_jacobian(lambda a: flow.forward(a)[0].data, device(x)))
    # both sides are central differences of smooth maps: error ~1e-10 (see minflow.testing)
    np.testing.assert_allclose(numeric, lower @ upper, atol=1e-8)
    np.testing.assert_allclose(np.linalg.det(lower @ upper), 1, atol=1e-10)
    assert np.abs(j_f1).max() > 1e-2 and np.abs(j_f2).max() > 1e-2, "both couplings must do something"


def test_additive_residual_coupling_starts_as_the_identity_and_rejects_dim_1():
    x = standard_normal((5, 3), 0)
    assert_equal(AdditiveResidualCoupling(3, seed=0).forward(device(x))[0], x)
    with pytest.raises(ValueError, match="dim must be >= 2"):
        AdditiveResidualCoupling(1)


# --- ContractiveResidual: contraction -----------------------------------------------------------
@pytest.mark.parametrize("hidden", [(8,), (16, 16)])
@pytest.mark.parametrize("coefficient", [0.9, 0.5])
def test_spectral_normalisation_makes_g_a_contraction(hidden, coefficient):
    flow = build("ContractiveResidual", 3, seed=7, hidden=hidden, coefficient=coefficient)
    for layer in flow.layers:  # the raw weights are not contractions: normalising does something
        assert np.linalg.norm(host(layer.weight), 2) > coefficient
    norms = [np.linalg.norm(host(w), 2) for w in flow.normalized_weights()]
    # exact mode: ||W_hat|| = c up to the SVD's roundoff (~1e-15 relative)
    assert max(norms) <= coefficient * (1 + 1e-6)
    assert math.prod(norms) <= coefficient * (1 + 1e-6)
    assert abs(flow.lipschitz_bound() - math.prod(norms)) < 1e-12
    x, y = standard_normal((2000, 3), 0), standard_normal((2000, 3), 1) * 0.1 + standard_normal((2000, 3), 0)
    ratio = np.linalg.norm(host(flow.residual(device(x))) - host(flow.residual(device(y))), axis=1) / np.linalg.norm(
        x - y, axis=1
    )
    assert ratio.max() < flow.lipschitz_bound() <= coefficient


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="coefficient"):
        ContractiveResidual(2, coefficient=1.0)
    with pytest.raises(ValueError, match="log_det_method"):
        ContractiveResidual(2, log_det_method="brute")
    with pytest.raises(ValueError, match="activation"):
        ContractiveResidual(2, activation="relu")  # kinks: phi' jumps, the log-det is not smooth
    with pytest.raises(ValueError, match="max_iterations"):
        ContractiveResidual(2, max_iterations=0)


# --- ContractiveResidual: the fixed-point inverse -------------------------------------------------
@pytest.mark.parametrize("hidden", [(), (32,)])
def test_fixed_point_converges_at_the_documented_rate(hidden):
    flow = build("ContractiveResidual", 2, seed=0, hidden=hidden, coefficient=0.9)
    z = device(standard_normal((256, 2), 1))
    trace = flow.fixed_point_trace(z)
    bound = flow.lipschitz_bound()
    # |x_{k+2} - x_{k+1}| = |g(x_{k+1}) - g(x_k)| <= Lip |x_{k+1} - x_k| per sample, and so for
    # the max over the batch; 1e-14 absorbs the roundoff of z - g(x) once the steps are tiny.
    for before, after in itertools.pairwise(trace):
        assert after <= bound * before + 1e-14, (before, after, bound)
    assert trace[-1] < 1e-10
    assert len(trace) <= math.ceil(math.log(1e-10 / trace[0]) / math.log(bound)) + 1
    x, _ = flow.inverse(z)
    assert flow.last_inverse_iterations == len(trace) and flow.last_inverse_residual == trace[-1]
    # error to the true fixed point <= Lip / (1 - Lip) * last step
    assert_close(flow.forward(x)[0], z, atol=bound / (1 - bound) * 1e-10 + 1e-14)


def test_a_linear_residual_converges_at_exactly_its_lipschitz_rate():
    # g(x) = x W_hat + b with ||W_hat|| = 0.9: the step shrinks by at most 0.9 and, along the top
    # singular vector, by nearly that; the trace ratio approaches the spectral radius of W_hat.
    flow = build("ContractiveResidual", 2, seed=0, hidden=(), coefficient=0.9)
    ratios = np.array(flow.fixed_point_trace(device(standard_normal((64, 2), 1))))
    ratios = ratios[1:] / ratios[:-1]
    radius = np.abs(np.linalg.eigvals(host(flow.normalized_weights()[0]))).max()
    assert ratios.max() <= 0.9 + 1e-9 and abs(ratios[-1] - radius) < 0.02


def test_inverse_raises_when_max_iterations_is_too_small():
    flow = build("ContractiveResidual", 2, seed=0, max_iterations=3)
    with pytest.raises(RuntimeError, match=r"did not converge in 3 iterations.*residual"):
        flow.inverse(device(standard_normal((8, 2), 1)))
    assert flow.last_inverse_iterations == 3 and flow.last_inverse_residual > 1e-10


# --- ContractiveResidual: Jacobian and log-determinants -------------------------------------------
@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("hidden,activation", [((8,), "tanh"), ((8, 8), "tanh"), ((8,), "softplus"), ((), "tanh")])
def test_hand_derived_jacobian_matches_finite_differences(dim, hidden, activation):
    flow = build("ContractiveResidual", dim, seed=dim, hidden=hidden, activation=activation)
    x = device(standard_normal((5, dim), 2) * 1.5)
    numeric = testing.numerical_jacobian(lambda a: flow.residual(a).data, x)
    # central differences with e = 2e-6: error ~1e-10 on an O(1) smooth map (minflow.testing)
    assert_close(flow.jacobian(x), numeric, atol=1e-8)


@pytest.mark.parametrize("method", ["exact", "series"])
def test_log_det_is_differentiable_in_x(method):
    # a stacked flow back-propagates through this layer's log-det into x: phi'' must be right
    flow = build("ContractiveResidual", 3, seed=1, log_det_method=method, series_terms=30)
    x = Tensor(device(standard_normal((4, 3), 0)), requires_grad=True)
    testing.check_gradients(lambda: flow.forward(x)[1].sum(), x, n_coords=6)


@pytest.mark.parametrize("coefficient", [0.9, 0.5])
def test_series_bias_shrinks_with_terms(coefficient):
    # the linear residual has ||J|| = c exactly: the slowest series this flow can have
    flow = build("ContractiveResidual", 2, seed=0, hidden=(), coefficient=coefficient)
    x = device(standard_normal((64, 2), 1))
    terms = (1, 2, 3, 5, 10, 20, 30)
    bias = flow.log_det_series_bias(x, terms)
    lip, dim = flow.lipschitz_bound(), 2
    for n in terms:
        # |sum_{k>n} (-1)^(k+1) tr(J^k)/k| <= sum_{k>n} D Lip^k / k <= D Lip^(n+1) / ((n+1)(1-Lip))
        assert abs(bias[n]) <= dim * lip ** (n + 1) / ((n + 1) * (1 - lip)) + 1e-15, (n, bias[n])
    magnitudes = [abs(bias[n]) for n in terms]
    assert all(later <= earlier + 1e-15 for earlier, later in itertools.pairwise(magnitudes)), bias
    if coefficient == 0.5:
        assert abs(bias[30]) < 1e-6


def test_hutchinson_estimate_is_unbiased():
    # E[v^T J^k v] = tr(J^k) for Rademacher v, so the estimator's mean is the *cut* series
    # (same number of terms). 4000 one-probe estimates: the mean is within 4 standard errors
    # (a false alarm once in ~16,000 runs per sample; the seed makes it deterministic anyway).
    flow = build("ContractiveResidual", 3, seed=2, log_det_method="hutchinson", series_terms=6, hutchinson_samples=4000)
    x = device(standard_normal((3, 3), 0))
    exact = host(flow.log_det_at(x, "series"))
    batch, samples = 3, flow.hutchinson_samples
    weights = flow.normalized_weights()
    pre = flow._network(Tensor(x), weights)[1]
    single = []
    flow.hutchinson_samples = 1
    for _ in range(samples):
        single.append(host(flow._log_det(Tensor(x), pre, weights, "hutchinson")))
    single = np.array(single)  # (samples, batch)
    standard_error = single.std(axis=0) / math.sqrt(samples)
    assert np.all(standard_error > 0), "a random estimator must vary"
    assert np.all(np.abs(single.mean(axis=0) - exact) < 4 * standard_error), (
        single.mean(axis=0),
        exact,
        standard_error,
    )
    # and the estimator with many probes per call is the same thing, averaged in one pass
    flow.hutchinson_samples = samples
    many = host(flow.log_det_at(x))
    assert np.all(np.abs(many - exact) < 4 * standard_error * math.sqrt(batch))
    # with 30 terms at c = 0.5 the cut series is the exact log-det to 1e-10: no bias left
    flow30 = build("ContractiveResidual", 3, seed=2, coefficient=0.5, series_terms=30)
    assert_close(flow30.log_det_at(x, "series"), flow30.log_det_at(x, "exact"), atol=1e-10)


def test_hutchinson_averaged_over_every_sign_pattern_is_the_series_exactly():
    # E[v v^T] = I for v uniform on {-1, 1}^D: averaging v^T A v over all 2^D sign patterns
    # gives tr(A) exactly (the cross terms v_i v_j A_ij, i != j, cancel in pairs). So the
    # estimator is unbiased for the cut series, checked here to roundoff, not statistically.
    dim = 4
    flow = build("ContractiveResidual", dim, seed=3, series_terms=8, hidden=(8, 8))
    x = device(standard_normal((5, dim), 0))
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * dim, indexing="ij")).reshape(dim, -1).T  # (16, D)
    probes = device(np.broadcast_to(signs, (5, 2**dim, dim)))
    weights = flow.normalized_weights()
    pre = flow._network(Tensor(x), weights)[1]
    assert_close(flow._hutchinson(pre, weights, probes), flow.log_det_at(x, "series"), atol=1e-13)
    # one sign pattern alone is not the trace: the average is doing the work
    assert np.abs(host(flow._hutchinson(pre, weights, probes[:, :1])) - host(flow.log_det_at(x, "series"))).max() > 1e-4


def test_hutchinson_is_reproducible_from_the_seed():
    a = build("ContractiveResidual", 3, seed=9, log_det_method="hutchinson")
    b = build("ContractiveResidual", 3, seed=9, log_det_method="hutchinson")
    x = device(standard_normal((4, 3), 0))
    assert_equal(a.forward(x)[1], b.forward(x)[1])


def test_inverse_log_det_is_evaluated_at_the_inverse_point():
    flow = build("ContractiveResidual", 3, seed=4)
    z = device(standard_normal((8, 3), 0) * 2)
    x, inverse_log_det = flow.inverse(z)
    forward_log_det = host(flow.forward(x.data)[1])
    # at the matching point the two are negatives (to the iteration's tolerance, 1e-10)
    assert_close(inverse_log_det, -forward_log_det, atol=1e-8)
    # the tempting bug, -log det(I + J_g(z)), is a different number: a check would catch it
    wrong = -host(flow.log_det_at(z))
    assert np.abs(wrong - host(inverse_log_det)).max() > 1e-3
