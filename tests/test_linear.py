"""Linear flows (minflow/flows/linear.py): every formula in the docstrings, checked.

Each property test runs on random, non-identity parameters: every parameter of a freshly
built flow is perturbed with seeded Gaussian noise (and ActNorm is marked initialised, so
that its data-dependent initialisation does not overwrite the noise).

Tolerances. All five flows are affine in x, so a central difference of z has no
truncation error at all: only rounding remains, about u |z| / h with u = 1.1e-16, and a
solve or a determinant amplifies it by the condition number of W. The noise on a D x D
matrix is scaled by 1/sqrt(D), which keeps its spectral norm near 0.6 and the condition
numbers of these matrices below ~10^2; the tolerances leave a margin of 10^2 or more
over (rounding x condition number).
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minflow import backend
from minflow.autodiff import Tensor, ops
from minflow.flows import linear

NAMES = ["DenseLinear", "LULinear", "Permutation", "Reverse", "ActNorm"]
BUILD = {
    "DenseLinear": lambda dim, seed: linear.DenseLinear(dim, seed=seed),
    "LULinear": lambda dim, seed: linear.LULinear(dim, seed=seed),
    "Permutation": lambda dim, seed: linear.Permutation.random(dim, seed=seed),
    "Reverse": lambda dim, seed: linear.Reverse(dim),
    "ActNorm": lambda dim, seed: linear.ActNorm(dim),
}

dims = st.integers(1, 5)
batches = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)


def host(t):
    """A NumPy copy of a Tensor or array (works on either backend)."""
    return backend.to_numpy(t)


def make_flow(name, dim, seed):
    """A flow with every parameter moved off its initial value by seeded Gaussian noise."""
    flow = BUILD[name](dim, seed)
    rng = np.random.default_rng(seed)
    for p in flow.parameters():
        scale = 0.3 / math.sqrt(dim) if p.ndim == 2 else 0.3
        p.data = p.data + backend.to_device(scale * rng.standard_normal(p.shape))
    if name == "ActNorm":
        flow.initialized.data[...] = True  # keep the random parameters
    return flow


def make_inputs(batch, dim, seed):
    return backend.to_device(1.5 * np.random.default_rng(seed + 1).standard_normal((batch, dim)))


def numerical_jacobian(f, x, h=1e-3):
    """Per-sample central-difference Jacobian, (B, D, D), J[b, i, j] = dz_i/dx_j at x[b].

    Coordinate j of every sample is moved at once (the samples do not interact).
    """
    x = host(x)
    columns = []
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = h
        plus = host(f(backend.to_device(x + step)))
        minus = host(f(backend.to_device(x - step)))
        columns.append((plus - minus) / (2 * h))
    return np.stack(columns, axis=-1)


def assert_close(got, expected, tol, what):
    got, expected = host(got), host(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    error = np.max(np.abs(got - expected) / (1 + np.abs(expected)), initial=0.0)
    assert error <= tol, f"{what}: off by {error:.3g} (tolerance {tol})\ngot {got}\nexpected {expected}"


# --- the flow properties, for every class ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, batch=batches, seed=seeds)
def test_inverse_undoes_forward(name, dim, batch, seed):
    flow, x = make_flow(name, dim, seed), make_inputs(batch, dim, seed)
    x_back, _ = flow.inverse(flow.forward(x)[0])
    # rounding (~1e-16) times the condition number (< 1e2), with a wide margin
    assert_close(x_back, x, 1e-10, f"{name} inverse(forward(x)), dim={dim} seed={seed}")


@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, batch=batches, seed=seeds)
def test_forward_undoes_inverse(name, dim, batch, seed):
    flow, z = make_flow(name, dim, seed), make_inputs(batch, dim, seed)
    z_back, _ = flow.forward(flow.inverse(z)[0])
    assert_close(z_back, z, 1e-10, f"{name} forward(inverse(z)), dim={dim} seed={seed}")


@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, batch=batches, seed=seeds)
def test_log_det_matches_finite_difference_jacobian(name, dim, batch, seed):
    flow, x = make_flow(name, dim, seed), make_inputs(batch, dim, seed)
    _, log_det = flow.forward(x)
    assert log_det.shape == (batch,), f"log_det must be (B,) = ({batch},), got {log_det.shape}"
    jacobian = numerical_jacobian(lambda a: flow.forward(a)[0], x)
    # Affine maps: no truncation error; rounding u|z|/h ~ 1e-13 per entry, times the
    # condition number, moves log|det| by well under 1e-9.
    assert_close(log_det, np.linalg.slogdet(jacobian)[1], 1e-9, f"{name} log-det vs finite differences")


@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, batch=batches, seed=seeds)
def test_inverse_log_det_is_minus_forward_log_det(name, dim, batch, seed):
    flow, x = make_flow(name, dim, seed), make_inputs(batch, dim, seed)
    z, forward_log_det = flow.forward(x)
    _, inverse_log_det = flow.inverse(z)
    assert_close(inverse_log_det, -host(forward_log_det), 1e-12, f"{name} inverse log-det")


@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, batch=st.integers(2, 5), seed=seeds)
def test_samples_in_a_batch_do_not_influence_each_other(name, dim, batch, seed):
    flow, x = make_flow(name, dim, seed), make_inputs(batch, dim, seed)
    z, log_det = flow.forward(x)
    for b in range(batch):
        z_b, log_det_b = flow.forward(x[b : b + 1])
        assert_close(z_b, host(z)[b : b + 1], 1e-12, f"{name} sample {b} alone vs in the batch")
        assert_close(log_det_b, host(log_det)[b : b + 1], 1e-12, f"{name} log-det of sample {b}")


def nll(flow, x, direction):
    """The NLL-like scalar sum(z^2)/2 - sum(log_det) of one direction of the flow."""
    z, log_det = flow.forward(x) if direction == "forward" else flow.inverse(x)
    return ops.sum(z * z) / 2 - ops.sum(log_det)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", NAMES)
@given(dim=st.integers(1, 4), batch=st.integers(1, 3), seed=seeds)
def test_nll_gradient_matches_finite_differences(name, direction, dim, batch, seed):
    flow = make_flow(name, dim, seed)
    x = Tensor(make_inputs(batch, dim, seed), requires_grad=True)
    tensors = {f"parameter {n}": p for n, p in flow.named_parameters()}
    tensors["input"] = x
    nll(flow, x, direction).backward()
    # Every entry (there are at most 40): masked entries of LULinear must get exactly 0.
    # h = 1e-5 balances truncation h^2 f''' ~ 1e-10 and rounding u|f|/h ~ 1e-11 |f|.
    h = 1e-5
    for label, tensor in tensors.items():
        for where in np.ndindex(*tensor.shape):
            saved = tensor.data[where].copy()
            tensor.data[where] = saved + h
            plus = float(host(nll(flow, x, direction)))
            tensor.data[where] = saved - h
            minus = float(host(nll(flow, x, direction)))
            tensor.data[where] = saved
            numeric, analytic = (plus - minus) / (2 * h), float(host(tensor.grad)[where])
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (
                f"{name} {direction}: d nll / d {label}{list(where)}: autodiff {analytic!r}, "
                f"finite differences {numeric!r} (dim={dim}, batch={batch}, seed={seed})"
            )


@pytest.mark.parametrize("name", NAMES)
@given(dim=dims, seed=seeds)
def test_float32_runs_and_stays_close_to_float64(name, dim, seed):
    flow64 = make_flow(name, dim, seed)
    flow32 = make_flow(name, dim, seed).astype("float32")
    x = make_inputs(8, dim, seed)
    z64, log_det64 = flow64.forward(x)
    z32, log_det32 = flow32.forward(x.astype("float32"))
    x32, _ = flow32.inverse(z32)
    assert z32.dtype == log_det32.dtype == x32.dtype == np.float32, "float32 in, float32 out"
    # float32 carries ~7 digits (u = 6e-8); a solve loses about log10(condition number) more.
    assert_close(z32, z64, 1e-4, f"{name} float32 z")
    assert_close(log_det32, log_det64, 1e-4, f"{name} float32 log-det")
    assert_close(x32, x, 1e-4, f"{name} float32 round trip")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_wrong_input_shape_raises_naming_both_shapes(name, direction):
    flow = make_flow(name, 3, seed=0)
    for bad in [(4, 2), (4, 3, 1), (3,)]:
        with pytest.raises(ValueError) as error:
            getattr(flow, direction)(backend.to_device(np.zeros(bad)))
        message = str(error.value)
        assert "(B, 3)" in message.replace("'", "") and str(bad) in message, message


@pytest.mark.parametrize(
    "build", [linear.DenseLinear, linear.LULinear, linear.Reverse, linear.ActNorm, linear.Permutation.random]
)
@pytest.mark.parametrize("dim", [0, -2, 2.5, True, "3", None])
def test_constructors_reject_a_dim_that_is_not_a_positive_integer(build, dim):
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        build(dim)


# --- DenseLinear -------------------------------------------------------------------------------
def test_dense_linear_starts_orthogonal_with_zero_log_det_and_is_seeded():
    flow = linear.DenseLinear(5, seed=3)
    weight = host(flow.weight)
    assert np.allclose(weight @ weight.T, np.eye(5), atol=1e-12), "W W^T = I"
    assert np.allclose(host(flow.forward(make_inputs(4, 5, 0))[1]), 0.0, atol=1e-12), "log|det W| = 0"
    assert np.array_equal(host(linear.DenseLinear(5, seed=3).weight), weight), "same seed, same W"
    assert not np.allclose(host(linear.DenseLinear(5, seed=4).weight), weight), "another seed, another W"
    assert np.array_equal(host(flow.bias), np.zeros(5))


# --- LULinear ----------------------------------------------------------------------------------
def test_lu_linear_starts_as_the_identity():
    flow, x = linear.LULinear(4, seed=0), make_inputs(6, 4, 0)
    z, log_det = flow.forward(x)
    assert np.array_equal(host(z), host(x)) and np.array_equal(host(log_det), np.zeros(6))


@given(dim=dims, seed=seeds)
def test_lu_linear_weight_is_unit_lower_times_upper_and_log_det_is_slogdet(dim, seed):
    flow = make_flow("LULinear", dim, seed)
    L, U, W = host(flow.L), host(flow.U), host(flow.weight)
    assert np.array_equal(np.triu(L, 1), np.zeros((dim, dim))) and np.array_equal(np.diag(L), np.ones(dim))
    assert np.array_equal(np.tril(U, -1), np.zeros((dim, dim)))
    assert np.allclose(np.diag(U), np.exp(host(flow.log_diag)), rtol=1e-15)
    assert np.allclose(W, L @ U, atol=1e-14)
    _, log_det = flow.forward(make_inputs(3, dim, seed))
    # sum(log_diag) against an LU factorisation of W: rounding only
    assert_close(log_det, np.full(3, np.linalg.slogdet(W)[1]), 1e-12, "LULinear log-det vs slogdet(W)")


def doolittle(a):
    """a = L U without pivoting (L unit lower triangular), as in any numerical analysis text."""
    n = a.shape[0]
    lower, upper = np.eye(n), np.zeros((n, n))
    for k in range(n):
        upper[k, k:] = a[k, k:] - lower[k, :k] @ upper[:k, k:]
        lower[k + 1 :, k] = (a[k + 1 :, k] - lower[k + 1 :, :k] @ upper[:k, k]) / upper[k, k]
    return lower, upper


@given(dim=dims, seed=seeds)
def test_linear_and_lu_linear_agree_when_given_the_same_matrix(dim, seed):
    # A strictly diagonally dominant matrix with a positive diagonal has positive leading
    # minors (Gershgorin), so it has an LU factorisation with diag(U) > 0: LULinear reaches it.
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((dim, dim))
    matrix += np.diag(np.abs(matrix).sum(axis=1) + 0.5)
    bias = rng.standard_normal(dim)
    lower, upper = doolittle(matrix)
    dense, lu = linear.DenseLinear(dim), linear.LULinear(dim)
    dense.weight.data, dense.bias.data = backend.to_device(matrix), backend.to_device(bias)
    lu.lower.data, lu.upper.data = backend.to_device(lower), backend.to_device(upper)
    lu.log_diag.data, lu.bias.data = backend.to_device(np.log(np.diag(upper))), backend.to_device(bias)
    assert_close(lu.weight, matrix, 1e-12, "LULinear reaches the matrix")
    x = make_inputs(4, dim, seed)
    for direction in ("forward", "inverse"):
        (out_dense, ld_dense), (out_lu, ld_lu) = getattr(dense, direction)(x), getattr(lu, direction)(x)
        assert_close(out_lu, out_dense, 1e-12, f"{direction}: LULinear vs Linear")
        assert_close(ld_lu, ld_dense, 1e-12, f"{direction} log-det: LULinear vs Linear")


# --- Permutation and Reverse -------------------------------------------------------------------
@pytest.mark.parametrize(
    "permutation, complaint",
    [
        ([0, 0, 2], "repeated [0], missing [1]"),
        ([0, 3, 1], "out of range [3], missing [2]"),
        ([1, -1], "out of range [-1], missing [0]"),
        ([], "non-empty 1-D"),
        ([[0, 1], [1, 0]], "non-empty 1-D"),
        ([0.0, 1.0], "integers"),
        ([True, False], "integers"),
    ],
)
def test_permutation_rejects_what_is_not_a_permutation(permutation, complaint):
    with pytest.raises(ValueError) as error:
        linear.Permutation(permutation)
    assert complaint in str(error.value), str(error.value)


def test_permutation_is_stored_as_integer_buffers_with_its_inverse():
    flow = linear.Permutation(np.array([2, 0, 3, 1]))
    state = flow.state_dict()
    assert set(state) == {"permutation", "inverse_permutation"} and not flow.parameters()
    assert state["permutation"].dtype.kind == "i" and state["inverse_permutation"].dtype.kind == "i"
    perm, inverse = host(state["permutation"]), host(state["inverse_permutation"])
    assert np.array_equal(perm[inverse], np.arange(4)) and np.array_equal(inverse[perm], np.arange(4))


@given(dim=dims, seed=seeds)
def test_permutation_moves_coordinate_perm_i_to_position_i_with_zero_log_det(dim, seed):
    flow, x = make_flow("Permutation", dim, seed), make_inputs(3, dim, seed)
    z, log_det = flow.forward(x)
    perm = host(flow.permutation)
    for i in range(dim):
        assert np.array_equal(host(z)[:, i], host(x)[:, perm[i]])
    assert np.array_equal(host(log_det), np.zeros(3))


def test_random_permutation_is_a_seeded_permutation():
    orders = [host(linear.Permutation.random(20, seed=s).permutation) for s in (7, 7, 8)]
    assert np.array_equal(np.sort(orders[0]), np.arange(20))
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])


def test_reverse_reverses_the_order():
    x = make_inputs(2, 4, 0)
    assert np.array_equal(host(linear.Reverse(4).forward(x)[0]), host(x)[:, ::-1])


# --- ActNorm -----------------------------------------------------------------------------------
def shifted_batch(seed, dim=3, batch=256):
    """Data far from standardised: means in [-5, 5], standard deviations in [1.5, 4]."""
    rng = np.random.default_rng(seed)
    mean, std = rng.uniform(-5, 5, dim), rng.uniform(1.5, 4, dim)
    return backend.to_device(mean + std * rng.standard_normal((batch, dim)))


def test_actnorm_first_batch_comes_out_standardised():
    flow, x = linear.ActNorm(3), shifted_batch(0)
    assert not bool(flow.initialized.data)
    z, log_det = flow.forward(x)
    z = host(z)
    # mean: rounding only. std: std / (std + eps) is within eps = 1e-6 of 1 when std >= 1.
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-12), z.mean(axis=0)
    assert np.allclose(z.std(axis=0), 1.0, atol=1e-6), z.std(axis=0)
    assert bool(flow.initialized.data)
    assert_close(log_det, np.full(256, host(flow.log_scale).sum()), 1e-12, "ActNorm log-det")


def test_actnorm_second_call_does_not_reinitialise():
    flow = linear.ActNorm(3)
    flow.forward(shifted_batch(0))
    loc, log_scale = host(flow.loc).copy(), host(flow.log_scale).copy()
    z, _ = flow.forward(shifted_batch(1))
    assert np.array_equal(host(flow.loc), loc) and np.array_equal(host(flow.log_scale), log_scale)
    assert not np.allclose(host(z).mean(axis=0), 0.0, atol=1e-2), "a second batch is not re-standardised"


def test_actnorm_initialisation_is_a_constant_for_autodiff():
    # loc and log_scale are set under no_grad: dz/dx is exp(log_scale), with no path
    # through the batch mean and std.
    flow = linear.ActNorm(3)
    x = Tensor(shifted_batch(2, batch=16), requires_grad=True)
    z, log_det = flow.forward(x)
    ops.sum(z).backward()
    assert_close(x.grad, np.broadcast_to(np.exp(host(flow.log_scale)), (16, 3)), 1e-12, "dz/dx")
    assert flow.loc.grad is not None and flow.log_scale.grad is not None


def test_actnorm_flag_survives_state_dict_and_checkpoint(tmp_path):
    flow = linear.ActNorm(3)
    flow.forward(shifted_batch(0))
    later = shifted_batch(1)
    expected = host(flow.forward(later)[0])
    copy = linear.ActNorm(3)
    copy.load_state_dict(flow.state_dict())
    flow.save(tmp_path / "actnorm.npz")
    from_file = linear.ActNorm(3).load(tmp_path / "actnorm.npz")
    for reloaded in (copy, from_file):
        assert bool(reloaded.initialized.data) and reloaded.initialized.dtype == bool
        assert np.array_equal(host(reloaded.forward(later)[0]), expected), "reloaded model re-initialised"


def test_actnorm_inverse_before_initialisation_uses_current_parameters():
    flow, z = linear.ActNorm(3), shifted_batch(0, batch=8)
    x, log_det = flow.inverse(z)
    assert np.array_equal(host(x), host(z)) and np.array_equal(host(log_det), np.zeros(8))
    assert not bool(flow.initialized.data), "inverse must not initialise"


def test_actnorm_first_batch_of_one_raises():
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear.ActNorm(3).forward(make_inputs(1, 3, 0))
