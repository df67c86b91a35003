"""Details of minflow/flows/linear.py that tests/test_linear.py leaves open (found by mutation testing).

Each test pins a documented behaviour by a property or an independent reference: the sign convention
of DenseLinear's random orthogonal start, ActNorm's initialisation at the edge of its batch-size check
and on a constant dimension, the boolean masks of LULinear, and the repr of the permutations.
"""

import numpy as np
import pytest
from helpers import assert_close, device, host

from minflow import backend
from minflow.flows import linear


# --- DenseLinear: W is the Q of a QR factorisation with a positive diagonal in R ------------------------
@pytest.mark.parametrize("dim", [1, 2, 3, 4, 6])
def test_dense_linear_start_is_the_q_factor_whose_r_has_a_positive_diagonal(dim):
    """The docstring: W = Q with the signs of R's diagonal moved into Q (Mezzadri 2007).

    G = Q R with diag(R) > 0 is unique, so W is pinned by: W^T G is upper triangular with a positive
    diagonal, where G is the Gaussian matrix the seed draws. LAPACK's own QR leaves negative r_jj.
    """
    for seed in range(10):
        flow = linear.DenseLinear(dim, seed=seed)
        gaussian = host(backend.rng(seed).standard_normal((dim, dim), dtype=backend.get_default_dtype()))
        r = host(flow.weight).T @ gaussian
        # W is orthogonal to rounding, so the strictly lower part of W^T G is rounding: ~1e-16 * |G|
        # (|G| < 10); 1e-12 leaves a margin of 10^3.
        assert np.max(np.abs(np.tril(r, -1)), initial=0.0) <= 1e-12, f"seed {seed}: W^T G not triangular\n{r}"
        assert np.all(np.diag(r) > 0), f"seed {seed}: diag(R) = {np.diag(r)} must be positive"


# --- ActNorm's data-dependent initialisation -------------------------------------------------------
def test_actnorm_initialises_from_a_batch_of_exactly_two_samples():
    """Two samples is the smallest batch with a standard deviation: it must be accepted (the edge of `< 2`)."""
    rows = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.5]])
    flow = linear.ActNorm(3)
    z, log_det = flow.forward(device(rows))
    std = np.abs(rows[0] - rows[1]) / 2  # population std of two numbers
    expected = (rows - rows.mean(axis=0)) / (std + linear.ActNorm.eps)
    # affine map of exact small numbers: rounding only (~1e-16), 1e-13 leaves a wide margin
    assert_close(z, expected, rtol=1e-13)
    assert_close(log_det, np.full(2, -np.log(std + linear.ActNorm.eps).sum()), rtol=1e-13)
    assert bool(flow.initialized.data)


def test_actnorm_log_scale_is_minus_log_of_std_plus_eps_and_finite_on_a_constant_dimension():
    """log_scale = -log(std + eps): eps keeps it finite where the first batch is constant (std = 0)."""
    rng = np.random.default_rng(5)
    batch = rng.normal(1.0, 2.0, (8, 3))
    batch[:, 1] = 2.5  # constant; 8 * 2.5 = 20 and 20 / 8 are exact, so mean = 2.5 and std = 0 exactly
    flow = linear.ActNorm(3)
    z, _ = flow.forward(device(batch))
    expected = -np.log(batch.std(axis=0) + linear.ActNorm.eps)
    # std by the same formula (population) on the host: rounding ~1e-16 relative; the sign of eps
    # moves log_scale by ~2e-6 / std, far above the 1e-12 allowed here.
    assert_close(flow.log_scale, expected, rtol=0, atol=1e-12)
    assert host(flow.log_scale)[1] == -np.log(linear.ActNorm.eps), "a constant dimension: -log(eps)"
    assert np.all(host(z)[:, 1] == 0.0) and np.all(np.isfinite(host(z)))


# --- LULinear: the masks ------------------------------------------------------------------------
def test_lu_linear_masks_are_boolean_triangles_that_casting_leaves_alone():
    """The masks are bool buffers (the checkpoint format: a saved LULinear holds bool masks, and
    load_state_dict rejects a dtype change); ``astype`` casts floating tensors only."""
    flow = linear.LULinear(4).astype(np.float32)
    state = flow.state_dict()
    assert state["lower_mask"].dtype == bool and state["upper_mask"].dtype == bool
    ones = np.ones((4, 4), dtype=bool)
    assert np.array_equal(host(state["lower_mask"]), np.tril(ones, -1))
    assert np.array_equal(host(state["upper_mask"]), np.triu(ones, 1))
    assert flow.lower.dtype == np.float32 and flow.log_diag.dtype == np.float32


def test_lu_factors_are_made_on_the_backend_of_the_parameters():
    """L and U (identity included) are arrays of the parameters' backend; on the strict CuPy stand-in a
    NumPy identity mixed in would raise. Values: the free entries, ones / e^s on the diagonal."""
    rng = np.random.default_rng(2)
    flow = linear.LULinear(3)
    flow.lower.data, flow.upper.data = device(rng.standard_normal((3, 3))), device(rng.standard_normal((3, 3)))
    flow.log_diag.data = device(rng.standard_normal(3))
    lower, upper, log_diag = host(flow.lower), host(flow.upper), host(flow.log_diag)
    module = backend.array_module(flow.lower.data)
    assert backend.array_module(flow.L.data) is module and backend.array_module(flow.U.data) is module
    assert np.array_equal(host(flow.L), np.tril(lower, -1) + np.eye(3))
    assert np.array_equal(host(flow.U), np.triu(upper, 1) + np.diag(np.exp(log_diag)))


# --- the permutations' repr ---------------------------------------------------------------------
def test_permutation_and_reverse_repr_show_what_defines_them():
    """A printed model shows each permutation's order (Permutation) or size (Reverse)."""
    assert repr(linear.Permutation([2, 0, 1])) == "Permutation(permutation=[2, 0, 1])"
    assert repr(linear.Reverse(3)) == "Reverse(dim=3)"
