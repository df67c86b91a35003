"""Iterative inverses: what the solvers report, spectral normalisation's two branches, and
gradients *through* the solvers.

1. ContractiveResidual.inverse runs x_{k+1} = z - g(x_k) from x_0 = z. Its reports are
   pinned against an independent run of that map: ``last_inverse_iterations`` is the first
   n with |x_n - x_{n-1}| below the tolerance, ``last_inverse_residual`` is that residual,
   and the returned x is one Newton step from x_n. MaskedAutoregressive.inverse(passes=k)
   is the pass map applied k times, and pass k makes the coordinates of degree k exact.
2. Spectral normalisation leaves a weight with ||W||_2 < c untouched (both estimators),
   and scales one above c to norm c (SVD) or to c sigma / sigma_estimate (power iteration).
3. The gradient of a loss through every iterative (or root-solving) direction matches
   central finite differences in float64: ContractiveResidual.inverse, Planar.forward,
   Radial.forward and MaskedAutoregressive.inverse (sampling), affine and spline.

Every flow is built with random, non-identity parameters. Each property is also run on a
planted bug of the kind it is meant to catch, and must fail there.
"""

import math

import numpy as np
import pytest
from helpers import assert_equal, device, host
from hypothesis import assume, example, given
from hypothesis import strategies as st

from minflow import backend, testing
from minflow.autodiff import Tensor, no_grad, ops
from minflow.flows.autoregressive import MaskedAutoregressive, SplineAutoregressive
from minflow.flows.planar import Planar, Radial
from minflow.flows.residual import ContractiveResidual, SpectralNormLinear
from minflow.flows.transformers import AffineTransformer


def standard_normal(shape, seed, scale=1.0):
    return device(scale * np.random.default_rng(seed).standard_normal(shape))


def contractive(seed, dim, hidden=(8,), coefficient=0.9, activation="tanh", scale=0.5, **options):
    """A random ContractiveResidual: its own initialisation perturbed by N(0, scale^2).

    The error of the fixed-point iteration shrinks by Lip(g) <= c a step, so reaching the
    1e-10 tolerance from an error of order 1 may take log(1e-10) / log(c) steps: 756 at
    c = 0.97, more than the default 500. ``max_iterations`` is set from c with room to spare.
    """
    options.setdefault("max_iterations", math.ceil(math.log(1e-12) / math.log(coefficient)) + 100)
    rng = backend.rng(seed)
    flow = ContractiveResidual(dim, hidden=hidden, coefficient=coefficient, activation=activation, seed=rng, **options)
    return testing._perturb(flow, rng, scale)


contractive_settings = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "dim": st.integers(1, 4),
        "hidden": st.sampled_from([(), (4,), (8,), (4, 4)]),
        "coefficient": st.floats(0.1, 0.97),
        "activation": st.sampled_from(["tanh", "softplus"]),
        "scale": st.floats(0.1, 2.0),
    }
)


# --- 1. the fixed-point iteration reports the iterate it stops at --------------------------------
def fixed_point_run(flow, z, steps=None):
    """The map x_{k+1} = z - g(x_k) from x_0 = z, run here with the flow's g only, until the
    residual max_b |x_{k+1} - x_k|_2 drops below the documented tolerance
    max(inverse_tolerance, 64 eps (1 + max|z|)), or for exactly ``steps`` steps.
    Returns (iterates [x_0, ..., x_n], residuals [r_1, ..., r_n], tolerance)."""
    tolerance = max(flow.inverse_tolerance, 64 * np.finfo(host(z).dtype).eps * (1 + np.abs(host(z)).max()))
    iterates, residuals = [z], []
    with no_grad():
        while len(residuals) < (steps or 2000):
            iterates.append(z - flow.residual(iterates[-1]).data)
            residuals.append(np.linalg.norm(host(iterates[-1]) - host(iterates[-2]), axis=1).max())
            if steps is None and residuals[-1] < tolerance:
                break
    return iterates, residuals, tolerance


def check_reports_its_iterate(flow, z):
    """The properties of item 1, as one check that raises AssertionError."""
    x, _ = flow.inverse(z)
    iterates, residuals, tolerance = fixed_point_run(flow, z)
    n = len(residuals)
    assert flow.last_inverse_iterations == n, f"reported {flow.last_inverse_iterations} iterations, the map needs {n}"
    # The residual reported is r_n = |x_n - x_{n-1}| (recomputed here on the host: a few ulps apart);
    # r_{n+1} <= Lip r_n and r_{n-1} >= r_n / Lip differ from it by a factor 1 / c >= 1.03 at least.
    assert flow.last_inverse_residual == pytest.approx(residuals[-1], rel=1e-9), (flow.last_inverse_residual, residuals)
    assert residuals[-1] < tolerance and (n == 1 or residuals[-2] >= tolerance)
    # The value: one Newton step from x_n, x_n - (I + J_g(x_n))^{-1} (x_n + g(x_n) - z), done here in NumPy.
    x_n = iterates[-1]
    with no_grad():
        step = host(x_n) + host(flow.residual(x_n)) - host(z)
        jacobian = host(flow.jacobian(x_n)) + np.eye(z.shape[1])
    expected = host(x_n) - np.linalg.solve(jacobian, step[..., None])[..., 0]
    # The same arithmetic in two orders: rounding only, ~1e-16 relative to |x| (which is O(10) here).
    np.testing.assert_allclose(host(x), expected, rtol=0, atol=1e-13 * (1 + np.abs(expected).max()))


@given(contractive_settings, st.integers(1, 5), st.floats(0.01, 10.0))
def test_contractive_inverse_reports_the_iterate_it_stops_at(settings, batch, z_scale):
    flow = contractive(**settings)
    z = standard_normal((batch, settings["dim"]), settings["seed"] + 1, z_scale)
    check_reports_its_iterate(flow, z)


@given(contractive_settings)
def test_contractive_inverse_stops_exactly_at_max_iterations(settings):
    """n steps suffice exactly when max_iterations >= n; with n - 1 it raises, having reported n - 1."""
    flow = contractive(**settings)
    z = standard_normal((3, settings["dim"]), settings["seed"] + 2)
    n = len(fixed_point_run(flow, z)[1])
    flow.max_iterations = n
    flow.inverse(z)
    assert flow.last_inverse_iterations == n
    if n > 1:
        flow.max_iterations = n - 1
        with pytest.raises(RuntimeError, match="did not converge"):
            flow.inverse(z)
        assert flow.last_inverse_iterations == n - 1


@pytest.mark.parametrize("plant", ["one iteration too many", "one iteration too few", "the next residual"])
def test_the_iterate_check_catches_a_solver_that_misreports(monkeypatch, plant):
    flow = contractive(seed=3, dim=3)
    z = standard_normal((4, 3), 0)
    check_reports_its_iterate(flow, z)  # the real solver passes
    honest = ContractiveResidual.inverse

    def misreporting(self, z):
        result = honest(self, z)
        if plant == "the next residual":  # r_{n+1}: what reporting x_{n+1}'s residual would give
            _, residuals, _ = fixed_point_run(self, z, steps=self.last_inverse_iterations + 1)
            self.last_inverse_residual = residuals[-1]
        else:
            self.last_inverse_iterations += 1 if plant == "one iteration too many" else -1
        return result

    monkeypatch.setattr(ContractiveResidual, "inverse", misreporting)
    with pytest.raises(AssertionError):
        check_reports_its_iterate(flow, z)


def test_the_iterate_check_catches_a_value_from_the_wrong_iterate(monkeypatch):
    """Returning x_{n-1} + (Newton step of x_n), i.e. the wrong base point, is caught by the value check."""
    flow = contractive(seed=4, dim=2, coefficient=0.95, scale=1.5, inverse_tolerance=1e-4)  # few steps, big ones
    z = standard_normal((3, 2), 1, 3.0)
    honest = ContractiveResidual.inverse

    def stale(self, z):
        x, log_det = honest(self, z)
        iterates, _, _ = fixed_point_run(self, z)
        return x + (iterates[-2] - iterates[-1]), log_det

    monkeypatch.setattr(ContractiveResidual, "inverse", stale)
    with pytest.raises(AssertionError):
        check_reports_its_iterate(flow, z)


@given(st.integers(0, 2**16), st.integers(2, 5), st.sampled_from(["affine", "spline"]))
def test_maf_inverse_pass_k_makes_the_coordinates_of_degree_k_exact(seed, dim, kind):
    """inverse(z, passes=k) = the pass map x -> g^{-1}(z; MADE(x)) applied k times from 0, and the
    coordinates in the first k places of the order are then those of the full inverse, exactly."""
    rng = backend.rng(seed)
    order = np.random.default_rng(seed).permutation(dim)
    made_options = {"hidden": (8,), "order": order.tolist(), "activation": "tanh", "seed": rng}
    flow = (
        MaskedAutoregressive(dim, **made_options)
        if kind == "affine"
        else SplineAutoregressive(dim, bins=4, **made_options)
    )
    flow = testing._perturb(flow, rng, 0.5)
    z = standard_normal((3, dim), seed)
    full, _ = flow.inverse(z)
    x = Tensor(z * 0.0)
    for k in range(1, dim + 2):
        x, _ = flow.transformer.inverse(z, flow.made(x))
        assert_equal(flow.inverse(z, passes=k)[0], x)
        exact = order[:k]  # degree d (1-based) is the coordinate at position d - 1 of the order
        assert_equal(host(x)[:, exact], host(full)[:, exact])
    assert_equal(x, full)  # pass D + 1 changes nothing: the full inverse is a fixed point


# --- 2. spectral normalisation: identity below c, scaled to c above ---------------------------------
def weight_with_norm(n_in, n_out, norm, seed, gap=0.5):
    """A random (n_in, n_out) matrix with ||W||_2 = norm and every other singular value <= gap * norm."""
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.standard_normal((n_in, n_in)))
    right, _ = np.linalg.qr(rng.standard_normal((n_out, n_out)))
    values = np.zeros((n_in, n_out))
    k = min(n_in, n_out)
    values[range(k), range(k)] = norm * np.concatenate([[1.0], gap * rng.uniform(0, 1, k - 1)])
    return left @ values @ right.T


def spectral_norm(matrix):
    return np.linalg.norm(host(matrix), 2)


layer_settings = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "n_in": st.integers(1, 6),
        "n_out": st.integers(1, 6),
        "coefficient": st.floats(0.05, 0.99),
        "method": st.sampled_from(["exact", "power"]),
    }
)


def normalised(settings, ratio):
    """W_hat for a weight of norm ratio * c, with the layer's own (random) power-iteration vector."""
    layer = SpectralNormLinear(
        settings["n_in"], settings["n_out"], settings["coefficient"], settings["method"], seed=settings["seed"]
    )
    weight = weight_with_norm(settings["n_in"], settings["n_out"], ratio * settings["coefficient"], settings["seed"])
    layer.weight.data = device(weight)
    return layer, layer.normalized_weight(power_iterations=30)


def check_leaves_weights_below_c_alone(settings, ratio):
    layer, w_hat = normalised(settings, ratio)
    # Exact equality: the branch multiplies by 1.0. (The power estimate u^T W v <= sigma < c,
    # however far from converged, so the power branch must leave W alone too.)
    assert_equal(w_hat, layer.weight)


@given(layer_settings, st.floats(1e-6, 0.999))
def test_spectral_normalisation_is_the_identity_below_c(settings, ratio):
    check_leaves_weights_below_c_alone(settings, ratio)


@given(layer_settings, st.floats(1.001, 1e6))
def test_spectral_normalisation_scales_weights_above_c_to_c(settings, ratio):
    layer, w_hat = normalised(settings, ratio)
    c, sigma = settings["coefficient"], ratio * settings["coefficient"]
    _, _, estimate = layer.singular_vectors(power_iterations=30)
    estimate = float(host(estimate))
    # W_hat = W c / estimate, in the direction of W, whatever the estimator.
    np.testing.assert_allclose(host(w_hat), host(layer.weight) * (c / estimate), rtol=1e-12)
    # The estimate never exceeds sigma (u^T W v <= ||W|| for unit u, v), so ||W_hat|| >= c.
    assert estimate <= sigma * (1 + 1e-12)
    # SVD: sigma to rounding. Power iteration: the error of the Rayleigh-type estimate falls like
    # (sigma_2 / sigma_1)^(2k) <= 0.5^60 ~ 1e-18 after k = 30 steps (times the start's angle), so 1e-9 is roomy.
    assert spectral_norm(w_hat) == pytest.approx(c, rel=1e-12 if settings["method"] == "exact" else 1e-9)


def test_the_below_c_check_catches_a_normalisation_that_always_rescales(monkeypatch):
    settings = {"seed": 1, "n_in": 3, "n_out": 4, "coefficient": 0.9, "method": "exact"}
    check_leaves_weights_below_c_alone(settings, 0.5)

    def always_rescale(self, power_iterations=5, update=False):
        with no_grad():
            _, _, sigma = self.singular_vectors(power_iterations, update)
        return self.weight * (self.coefficient / float(host(sigma)))

    monkeypatch.setattr(SpectralNormLinear, "normalized_weight", always_rescale)
    with pytest.raises(AssertionError):
        check_leaves_weights_below_c_alone(settings, 0.5)


# --- 3. gradients through the iterative directions match finite differences --------------------------
def weighted_loss(direction, inputs, seed):
    """A scalar of both outputs with random weights (so no term cancels another): sum(a x) + sum(b log_det)."""
    rng = np.random.default_rng(seed)
    a, b = device(rng.standard_normal(inputs.shape)), device(rng.standard_normal(inputs.shape[0]))

    def loss():
        x, log_det = direction(inputs)
        return ops.sum(x * a) + ops.sum(log_det * b)

    return loss


@given(contractive_settings, st.sampled_from(["exact", "series"]))
def test_gradient_through_the_contractive_inverse_matches_finite_differences(settings, log_det_method):
    flow = contractive(**settings, log_det_method=log_det_method, series_terms=5)
    z = Tensor(standard_normal((3, settings["dim"]), settings["seed"]), requires_grad=True)
    loss = weighted_loss(flow.inverse, z, settings["seed"])
    testing.check_gradients(loss, *flow.parameters(), z, seed=settings["seed"])


def test_the_gradient_check_catches_the_one_step_gradient_of_the_contractive_inverse(monkeypatch):
    """The inverse's old gradient, that of the last step x = z - g(x*) alone (-dg/dtheta instead of
    -(I + J_g)^{-1} dg/dtheta), is off by a factor (I + J_g)^{-1}: caught."""
    flow = contractive(seed=0, dim=3)
    z = standard_normal((5, 3), 1)
    honest = ContractiveResidual.inverse

    def one_step_inverse(self, z):
        with no_grad():
            x_star = honest(self, z)[0]  # the converged value
        weights = self.normalized_weights()
        g, pre = self._network(Tensor(x_star.data), weights)
        return z - g, -self._log_det(Tensor(x_star.data), pre, weights, self.log_det_method)

    monkeypatch.setattr(ContractiveResidual, "inverse", one_step_inverse)
    with pytest.raises(AssertionError, match="gradient"):
        testing.check_gradients(weighted_loss(flow.inverse, z, 0), *flow.parameters(), n_coords=6)


@given(st.integers(0, 2**16), st.integers(1, 4), st.sampled_from([Planar, Radial]), st.floats(0.1, 3.0))
@example(seed=568, dim=1, cls=Planar, scale=1.0)  # near-singular: must be left out, not fail
def test_gradient_through_the_solved_planar_and_radial_direction_matches_finite_differences(seed, dim, cls, scale):
    rng = backend.rng(seed)
    flow = testing._perturb(cls(dim, seed=rng), rng, scale)
    x = Tensor(standard_normal((4, dim), seed, 2.0), requires_grad=True)
    for direction in (flow.forward, flow.inverse):  # forward solves (planar) or takes the root formula (radial)
        loss = weighted_loss(direction, x, seed)
        # Large perturbations can make a layer nearly singular (planar slope ~ 0): gradients of 1e5
        # come with third derivatives for which a central difference at step 2e-6 errs by more than
        # the 1e-6 tolerance (seed=568, dim=1, scale=1: off by 1.3e-5). Such draws test the finite
        # differences, not the gradient, so they are left out.
        assume(largest_gradient(loss, [*flow.parameters(), x]) < 1e3)
        testing.check_gradients(loss, *flow.parameters(), x, seed=seed)


def largest_gradient(loss, tensors):
    """max |d loss / d t| over the entries of ``tensors`` (their .grad is cleared again)."""
    for t in tensors:
        t.grad = None
    loss().backward()
    largest = max(float(np.abs(host(t.grad)).max()) for t in tensors)
    for t in tensors:
        t.grad = None
    return largest


@given(st.integers(0, 2**16), st.integers(2, 4), st.sampled_from(["affine", "spline"]))
def test_gradient_through_maf_sampling_matches_finite_differences(seed, dim, kind):
    rng = backend.rng(seed)
    options = {"hidden": (8,), "activation": "tanh", "seed": rng}  # tanh: smooth, for finite differences
    if kind == "affine":
        flow = MaskedAutoregressive(dim, AffineTransformer(), **options)
    else:
        flow = SplineAutoregressive(dim, bins=4, bound=3.0, **options)
    flow = testing._perturb(flow, rng, 0.5)
    z = Tensor(standard_normal((3, dim), seed), requires_grad=True)
    testing.check_gradients(weighted_loss(flow.inverse, z, seed), *flow.parameters(), z, seed=seed)


def test_the_gradient_check_catches_maf_sampling_without_the_earlier_passes(monkeypatch):
    """Cutting the graph between passes (only the last pass differentiated) is caught."""
    rng = backend.rng(5)
    flow = testing._perturb(MaskedAutoregressive(3, hidden=(8,), activation="tanh", seed=rng), rng, 0.5)
    z = standard_normal((4, 3), 2)

    def cut_inverse(self, z, passes=None):
        x = Tensor(z * 0.0)
        for _ in range(self.event_shape[0]):
            x, log_derivative = self.transformer.inverse(z, self.made(Tensor(x.data)))  # the graph cut here
        return x, ops.sum(log_derivative, axis=1)

    monkeypatch.setattr(MaskedAutoregressive, "inverse", cut_inverse)
    with pytest.raises(AssertionError, match="gradient"):
        testing.check_gradients(weighted_loss(flow.inverse, z, 1), *flow.parameters(), n_coords=8)


def test_contractive_inverse_gradient_with_respect_to_z_is_the_inverse_jacobian():
    """d x / d z = (I + J_g(x))^{-1}: the gradient of x_i is row i of it, compared with a NumPy inverse."""
    flow = contractive(seed=6, dim=3, coefficient=0.95, scale=1.0)
    z = Tensor(standard_normal((2, 3), 3), requires_grad=True)
    x = flow.inverse(z)[0].data
    expected = np.linalg.inv(host(flow.jacobian(x)) + np.eye(3))
    for i in range(3):
        z.grad = None
        ops.sum(flow.inverse(z)[0][:, i]).backward()
        np.testing.assert_allclose(host(z.grad), expected[:, i, :], atol=1e-12)  # two solves' rounding
