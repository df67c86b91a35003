"""The numerics of minflow/flows/planar.py that test_planar.py leaves open: the planar root-finder's
stopping rule, iteration count, synchronisations and error report, and the radial flow at its centre.

The solver ``_solve_planar(v, c, s, tolerance, max_iterations)`` finds the root p of
F(p) = p + c tanh(p) - v (s = 1 + c > 0) and stops once |F(p)| <= tolerance (1 + |v| + |c|) for every
sample, the tolerance floored at 16 machine epsilons. Several tests use a *saturated* sample,
v = 30.5: tanh(p) is exactly 1 in float64 for p > 19.1, so F(v) = (v + c) - v = c with no rounding
when v and c are dyadic, and every quantity of the stopping rule is exact. That puts a residual exactly
on, or just beside, the tolerance.
"""

import re

import numpy as np
import pytest
from helpers import device, host, on_cupy

from minflow import backend
from minflow.flows.planar import CHECK_EVERY, Planar, Radial, _solve_planar

EPS = float(np.finfo(np.float64).eps)
SATURATED = 30.5  # tanh(30.5) == 1.0 in float64 (1 - tanh is ~3e-27, below half an ulp of 1)


def arguments(v, c):
    """(v, c, s = 1 + c) as float64 arrays of the default backend."""
    return tuple(device(np.asarray(a, dtype=np.float64), dtype=np.float64) for a in (v, c, 1.0 + c))


def solve(v, c, tolerance=1e-12, max_iterations=100):
    """The solver's root, on the host."""
    return host(_solve_planar(*arguments(v, c), tolerance, max_iterations))


def residual(p, v, c):
    """F(p), in the solver's own order of operations (so that both see the same rounding)."""
    return p + c * np.tanh(p) - v


def scale(v, c):
    return 1 + np.abs(v) + abs(c)


# --- the stopping rule ---------------------------------------------------------------------------
def test_a_start_exactly_on_the_tolerance_is_accepted_and_left_unchanged():
    """|F(p)| <= tolerance * scale is inclusive, and a converged sample stays where it is.

    |F(30.5)| = 0.5 and tolerance * scale = (1/64) * 32 = 0.5, both exact: the start p = v has converged."""
    v, c = np.array([SATURATED, -SATURATED]), 0.5
    assert np.all(np.abs(residual(v, v, c)) == (1 / 64) * scale(v, c))  # the premise: exactly on the boundary
    root = solve(v, c, tolerance=1 / 64, max_iterations=4)
    np.testing.assert_array_equal(root, v)


@pytest.mark.parametrize(
    "tolerance, c",
    [
        (1 / 65, 0.5),  # |F(v)| = 0.5 is above (1/65) * 32 = 0.492 but below (1/65) * 33 = 0.508
        (1e-300, 528 * EPS),  # the floor: |F(v)| = 528 eps is above 16 eps * 31.5 = 504 eps, below 17 eps * 31.5
    ],
    ids=["scale-is-1-plus", "floor-is-16-eps"],
)
def test_the_returned_root_meets_the_documented_tolerance(tolerance, c):
    """The root has |F(p)| <= max(tolerance, 16 eps) (1 + |v| + |c|): a start just outside that bound is not
    accepted. Both cases sit between the documented rule and a looser one (scale 2 + ..., floor 17 eps)."""
    v = np.array([SATURATED, -SATURATED])
    bound = max(tolerance, 16 * EPS) * scale(v, c)
    assert np.all(np.abs(residual(v, v, c)) > bound)  # the premise: the start is just outside
    root = solve(v, c, tolerance=tolerance, max_iterations=4)
    assert np.all(np.abs(residual(root, v, c)) <= bound), (root, residual(root, v, c), bound)


def test_the_last_iteration_is_checked_whatever_max_iterations():
    """Convergence is tested at step max_iterations even when it is not a multiple of CHECK_EVERY.

    One Newton step from p = v takes |F| from 0.12-0.19 (above 0.01 * scale = 0.018-0.023) to at most
    0.0025 (computed below): max_iterations=1 must return, not raise."""
    v, c, tolerance = np.array([0.5, -0.5, 1.0]), 0.25, 1e-2
    assert np.all(np.abs(residual(v, v, c)) > tolerance * scale(v, c))  # the start has not converged
    root = solve(v, c, tolerance=tolerance, max_iterations=1)
    t = np.tanh(v)
    newton = v - residual(v, v, c) / (t * t + (1 + c) * (1 - t * t))  # one Newton step, computed here
    np.testing.assert_allclose(root, newton, rtol=1e-15, atol=0)  # same formula: at most an ulp apart
    assert np.all(np.abs(residual(root, v, c)) <= tolerance * scale(v, c))


# --- the number of iterations --------------------------------------------------------------------
@pytest.mark.parametrize("c", [-0.5, -0.25, 0.25, 0.5])
def test_newton_converges_in_five_iterations_on_well_conditioned_problems(c):
    """For |c| <= 0.5 the slope F' = 1 + c (1 - tanh^2) lies in [0.5, 1.5] and |F''| = |c| |tanh''| <=
    0.5 * 4 / (3 sqrt 3) = 0.385, so Newton's error obeys e_{k+1} <= (max|F''| / (2 min F')) e_k^2 <= 0.385 e_k^2.
    From the start p = v the error is |c tanh(p*)| <= 0.5: e_1 <= 0.096, e_2 <= 3.6e-3, e_3 <= 5e-6,
    e_4 <= 1e-11, e_5 <= 4e-23, and |F| <= 1.5 e_5 is far below the tolerance 1e-12 * scale.
    So five iterations suffice (measured: 3 or 4); bisection would need about 40."""
    v = np.linspace(-8, 8, 161)
    root = solve(v, c, max_iterations=5)  # raises RuntimeError if not converged
    assert np.all(np.abs(residual(root, v, c)) <= 1e-12 * scale(v, c))


@pytest.mark.parametrize("c, low", [(20.0, -1.0), (50.0, 0.05)])
def test_newton_converges_in_eight_iterations_where_the_slope_varies_widely(c, low):
    """F' runs from 1 far from 0 to s = 1 + c (21, 51) near it: Newton overshoots, and the safeguard
    (bisect when a step is not at most half the one before) has to reach the quadratic region. The
    docstring's design figure is "Newton usually needs 4 to 8" (two convergence checks); measured: 5."""
    v = np.linspace(low, 1.0, 41)
    root = solve(v, c, max_iterations=2 * CHECK_EVERY)
    assert np.all(np.abs(residual(root, v, c)) <= 1e-12 * scale(v, c))


# --- synchronisations ----------------------------------------------------------------------------
@pytest.mark.parametrize("c, expected_syncs", [(0.5, 1), (2.0, 2)])
def test_convergence_is_read_on_the_host_once_every_check_every_iterations(c, expected_syncs):
    """Reading the convergence flag synchronises a GPU, so the solver reads it only every CHECK_EVERY
    (4) iterations, never at step 0: a solve that needs 4 iterations (c = 0.5) syncs once, one that
    needs 5 (c = 2.0, measured with max_iterations) syncs twice, at steps 4 and 8."""
    if not on_cupy():
        pytest.skip("counts device synchronisations: runs on the strict CuPy stand-in")
    import cupy

    if not getattr(cupy, "_strict_stand_in", False):
        pytest.skip("real CuPy does not count synchronisations; the strict stand-in does")
    from cupy import _strict

    v = np.linspace(-8, 8, 161)
    with _strict.counting() as syncs:
        root = _solve_planar(*arguments(v, c), 1e-12, 100)
    assert syncs.count == expected_syncs, syncs
    assert np.all(np.abs(residual(host(root), v, c)) <= 1e-12 * scale(v, c))


# --- the error report ----------------------------------------------------------------------------
def test_the_error_counts_the_unsolved_samples_and_reports_their_worst_residual():
    """After one iteration, v = 0 has converged (F(0) = 0 at the start) and v = +-1 have not: the error
    counts 2 of 3, reports max |F(p_1)| / (1 + |v| + |c|) over those two (p_1: one Newton step from v,
    computed here), and does not blame the (finite) input."""
    v, c = np.array([0.0, 1.0, -1.0]), 0.5
    t = np.tanh(v)
    newton = v - residual(v, v, c) / (t * t + (1 + c) * (1 - t * t))
    worst = float(np.max(np.abs(residual(newton, v, c)) / scale(v, c)))  # 0.00705 (the converged one: 0)
    message = (
        "Planar.forward: the root-finding did not converge for 2 of 3 samples in 1 iterations "
        f"(worst relative residual {worst:.3g}, tolerance 1e-12); raise max_iterations or tolerance"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        solve(v, c, max_iterations=1)


# --- the radial flow at its centre ---------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 3])
def test_radial_flow_fixes_its_centre_with_the_closed_form_log_det(dim):
    """At r = |z - z0| = 0 the map fixes z0, and both factors of the Jacobian are gap / alpha:
    (gap + r) / (alpha + r) tangentially, (r^2 + 2 alpha r + alpha gap) / (alpha + r)^2 radially.
    So log|det| = dim * log(gap / alpha), in both directions (forward with the opposite sign)."""
    rng = backend.rng(dim)
    flow = Radial(dim, seed=rng)
    for p in flow.parameters():  # random, non-identity parameters (gap != alpha)
        p.data = p.data + 0.5 * rng.standard_normal(p.shape)
    alpha, _, gap = (float(host(t)[0]) for t in flow.constrained())
    expected = dim * np.log(gap / alpha)
    assert abs(expected) > 0.01  # the premise: not the identity at the centre
    centre = host(flow.z0)[None, :]
    x, log_det = flow.inverse(device(centre))
    z, minus_log_det = flow.forward(device(centre))
    # exact: offset 0 times anything is 0, and z0 + 0 is z0
    np.testing.assert_array_equal(host(x), centre)
    np.testing.assert_array_equal(host(z), centre)
    # a few logs and a division in float64: 1e-12 relative leaves a thousand ulps of room
    np.testing.assert_allclose(host(log_det), [expected], rtol=1e-12)
    np.testing.assert_allclose(host(minus_log_det), [-expected], rtol=1e-12)


# --- initialisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planar_initial_w_has_unit_length_in_high_dimension(seed):
    """w ~ N(0, 1/D), "so that |w| ~ 1": D |w|^2 / D is a chi-square(D) / D, mean 1 and standard deviation
    sqrt(2 / D) = 0.07 at D = 400, so |w| in [0.8, 1.2] (|w|^2 in [0.64, 1.44]) is more than 5 deviations wide.
    A scale of D^-1.5 would give |w| ~ 0.0025, one of D / 2 would give |w| ~ 4000."""
    dim = 400
    norm = float(np.linalg.norm(host(Planar(dim, seed=seed).w)))
    assert 0.8 <= norm <= 1.2, norm


def test_radial_starts_from_the_documented_laws():
    """z0 ~ N(0, 1); alpha_raw, beta_raw ~ N(0, 0.1^2). A sample standard deviation of n normal draws is off by
    about sigma / sqrt(2 n) (its standard error): 0.011 for the 4,000 entries of z0 and 0.0035 for 400 layers'
    alpha_raw and beta_raw, so the bands below are 4 to 5 standard errors wide, and a scale of 2 for z0 or 1.1
    for beta_raw (planted errors) falls far outside them."""
    z0 = host(Radial(4000, seed=0).z0)
    assert 0.95 <= float(np.std(z0)) <= 1.05
    layers = [Radial(1, seed=seed) for seed in range(400)]
    for name in ("alpha_raw", "beta_raw"):
        draws = np.concatenate([host(getattr(layer, name)) for layer in layers])
        assert 0.085 <= float(np.std(draws)) <= 0.115, (name, float(np.std(draws)))
