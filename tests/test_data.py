"""minflow.data: every documented recipe and statistic of the toy densities, the splits and the
standardisation, the digits' preprocessing and bits/dim, and the energies (values and gradients).

Statistical tolerances are 5 standard errors of the estimate for the sample size used (the
chance that a correct generator fails one is below 1e-6); the seeds are fixed, so the tests
are deterministic anyway.
"""

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import minflow
from minflow import Tensor, data, testing
from minflow.autodiff import ops


def _cupy_has_device():
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: CuPy raises its own CUDA errors
        return False


needs_gpu = pytest.mark.skipif(not _cupy_has_device(), reason="needs CuPy and a CUDA device")
NAMES = sorted(data.TOY_DATASETS)
N = 20_000  # points per statistical check: a mean of unit-variance numbers is known to +-0.035 (5 SE)


def _five_se(std, n):
    return 5 * std / math.sqrt(n)


def _check_share(labels, k, n):
    """Each of the k labels holds n/k points, within 5 binomial standard errors."""
    counts = np.bincount(labels, minlength=k)
    assert len(counts) == k
    p = 1 / k
    assert np.all(np.abs(counts - n * p) < 5 * math.sqrt(n * p * (1 - p))), f"counts {counts}, expected {n * p} each"


# --- toy densities: the contract ------------------------------------------------------------------------
def test_registry_names():
    assert NAMES == sorted(["moons", "circles", "eight_gaussians", "checkerboard", "pinwheel", "two_spirals", "rings"])


@pytest.mark.parametrize("name", NAMES)
def test_toy_dataset_shape_dtype_and_seed(name):
    sample = data.TOY_DATASETS[name]
    x = sample(300, seed=0)
    assert isinstance(x, np.ndarray) and x.shape == (300, 2) and x.dtype == np.float64
    assert np.all(np.isfinite(x))
    assert np.array_equal(x, sample(300, seed=0)), "same seed, same points"
    assert not np.allclose(x, sample(300, seed=1)), "different seeds, different points"
    assert np.array_equal(x, sample(300, seed=np.random.default_rng(0))), "a Generator is used as it is"
    assert sample(1, seed=0).shape == (1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_noise_is_isotropic_gaussian_with_std_noise(name):
    # The recipe is "noise-free point + noise * N(0, I)", the noise drawn last: with one seed,
    # the difference of a noisy and a noise-free draw is exactly that noise.
    sample, sigma = data.TOY_DATASETS[name], 0.3
    difference = sample(N, seed=3, noise=sigma) - sample(N, seed=3, noise=0.0)
    assert np.all(np.abs(difference.mean(axis=0)) < _five_se(sigma, N))
    # the sample std of n Gaussians has standard error std / sqrt(2 n)
    assert np.all(np.abs(difference.std(axis=0) - sigma) < _five_se(sigma, 2 * N)), difference.std(axis=0)
    assert abs(np.corrcoef(difference.T)[0, 1]) < _five_se(1.0, N)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_count_is_rejected(name, n):
    with pytest.raises(ValueError, match="n must be a positive int"):
        data.TOY_DATASETS[name](n, seed=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("noise", [-0.1, math.nan, math.inf, "0.1"])
def test_bad_noise_is_rejected(name, noise):
    with pytest.raises(ValueError, match="noise must be"):
        data.TOY_DATASETS[name](10, seed=0, noise=noise)


# --- toy densities: the documented statistics ----------------------------------------------------------
def test_moons_lie_on_two_half_circles():
    x = data.moons(N, seed=0, noise=0.0)
    on_upper = np.isclose(np.hypot(x[:, 0], x[:, 1]), 1.0) & (x[:, 1] >= -1e-12)
    on_lower = np.isclose(np.hypot(x[:, 0] - 1, x[:, 1] - 0.5), 1.0) & (x[:, 1] <= 0.5 + 1e-12)
    assert np.all(on_upper | on_lower), x[~(on_upper | on_lower)][:5]
    _check_share(on_upper.astype(int), 2, N)
    # an arc's mean is its centre plus (2/pi) times its outward direction: (0, 2/pi) and (1, 1/2 - 2/pi)
    noisy = data.moons(N, seed=0)
    assert np.all(np.abs(noisy.mean(axis=0) - [0.5, 0.25]) < _five_se(noisy.std(axis=0), N))


@pytest.mark.parametrize("name, radii", [("circles", data.CIRCLE_RADII), ("rings", data.RING_RADII)])
def test_circles_and_rings_have_the_documented_radii(name, radii):
    assert sorted(radii) == ([0.5, 1.0] if name == "circles" else [0.5, 1.0, 1.5, 2.0])
    sample = data.TOY_DATASETS[name]
    radius = np.hypot(*sample(N, seed=0, noise=0.0).T)
    which = np.argmin(np.abs(radius[:, None] - np.array(radii)), axis=1)
    assert np.allclose(radius, np.array(radii)[which]), "every noise-free point is on one of the circles"
    _check_share(which, len(radii), N)
    noisy = sample(N, seed=0)
    assert np.all(np.abs(noisy.mean(axis=0)) < _five_se(noisy.std(axis=0), N))
    # the distance to the nearest circle is about the radial component of N(0, 0.05^2 I); the
    # curvature adds a bias of order noise^2 / r <= 0.005, hence the 10% tolerance
    residual = np.hypot(*noisy.T) - np.array(radii)[which]
    assert abs(residual.std() - 0.05) < 0.005, residual.std()


def test_eight_gaussians_modes():
    sigma = 0.1
    x = data.eight_gaussians(N, seed=0)
    modes = 2 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)
    distance = np.linalg.norm(x[:, None, :] - modes[None], axis=2)
    nearest = distance.argmin(axis=1)
    # a 2-D Gaussian leaves the 5-sigma disc with probability exp(-12.5) = 4e-6: ~0.07 of 20,000 points
    assert np.all(distance.min(axis=1) < 5 * sigma), distance.min(axis=1).max()
    _check_share(nearest, 8, N)
    clean = data.eight_gaussians(100, seed=0, noise=0.0)
    assert np.allclose(np.linalg.norm(clean[:, None, :] - modes[None], axis=2).min(axis=1), 0, atol=1e-12)
    offsets = x - modes[nearest]
    assert np.all(np.abs(offsets.std(axis=0) - sigma) < _five_se(sigma, 2 * N))
    assert np.all(np.abs(x.mean(axis=0)) < _five_se(x.std(axis=0), N))


def test_checkerboard_points_lie_on_black_squares():
    x = data.checkerboard(N, seed=0)
    assert np.all((x >= -2) & (x < 2)), "noise 0 by default: the board [-2, 2)^2"
    column, row = np.floor(x).astype(int).T
    assert np.all((column + row) % 2 == 0), "floor(x) + floor(y) is even on a black square"
    square = (column + 2) * 4 + (row + 2)
    black = [c * 4 + r for c in range(4) for r in range(4) if (c + r) % 2 == 0]
    counts = np.bincount(square, minlength=16)
    _check_share(np.searchsorted(black, square), 8, N)
    assert counts[black].sum() == N
    # uniform on each square: the position inside the unit cell is U[0, 1)^2, mean 1/2, std 1/sqrt(12)
    inside = x - np.floor(x)
    assert np.all(np.abs(inside.mean(axis=0) - 0.5) < _five_se(1 / math.sqrt(12), N))
    assert np.all(np.abs(x.mean(axis=0)) < _five_se(x.std(axis=0), N))


def test_pinwheel_points_follow_their_arm():
    x = data.pinwheel(N, seed=0, noise=0.0)
    radius, angle = np.hypot(*x.T), np.arctan2(x[:, 1], x[:, 0])
    step = 2 * np.pi / data.PINWHEEL_ARMS
    unwound = (angle - data.PINWHEEL_RATE * np.exp(radius / 2)) / step  # an integer k (mod 5) on arm k
    on_arm = np.abs(unwound - np.round(unwound)) < 1e-9
    # points with s < 0 (probability P(N(0,1) < -1/0.3) = 4.3e-4) are reflected through the origin
    assert on_arm.mean() > 1 - 4.3e-4 - _five_se(math.sqrt(4.3e-4), N), on_arm.mean()
    _check_share(np.round(unwound[on_arm]).astype(int) % data.PINWHEEL_ARMS, data.PINWHEEL_ARMS, on_arm.sum())
    # the radius 2 s, s ~ N(1, 0.3^2), has median 2 (the median's standard error is 1.25 std / sqrt(n))
    assert abs(np.median(radius) - 2) < 5 * 1.25 * 0.6 / math.sqrt(N)


def test_two_spirals_follow_their_curve():
    x = data.two_spirals(N, seed=0, noise=0.0)
    radius = np.hypot(*x.T)
    curve = radius[:, None] * np.stack([np.cos(3 * radius), np.sin(3 * radius)], axis=1)
    first, second = np.all(np.isclose(x, curve), axis=1), np.all(np.isclose(x, -curve), axis=1)
    assert np.all(first | second)
    _check_share(first.astype(int), 2, N)
    # radius = pi sqrt(u): mean 2 pi / 3, variance pi^2 (1/2 - 4/9)
    assert abs(radius.mean() - 2 * np.pi / 3) < _five_se(np.pi * math.sqrt(1 / 2 - 4 / 9), N)
    assert radius.max() <= np.pi
    noisy = data.two_spirals(N, seed=0)
    assert np.all(np.abs(noisy.mean(axis=0)) < _five_se(noisy.std(axis=0), N))


# --- splits and standardisation ---------------------------------------------------------------------------
def test_toy_data_splits_one_draw_into_independent_parts():
    splits = data.toy_data("moons", n_train=500, n_val=100, n_test=300, seed=4, standardize=False)
    assert [len(part) for part in splits[:3]] == [500, 100, 300] and splits.standardizer is None
    assert np.array_equal(np.concatenate(splits[:3]), data.moons(900, seed=4)), "one draw, cut in order"
    rows = {tuple(row) for part in splits[:3] for row in part}
    assert len(rows) == 900, "no point is shared between splits"
    other = data.toy_data("moons", n_train=500, n_val=100, n_test=300, seed=4, noise=0.0, standardize=False)
    assert np.array_equal(np.concatenate(other[:3]), data.moons(900, seed=4, noise=0.0)), "noise passes through"


def test_toy_data_standardizes_with_training_statistics_only():
    raw = data.toy_data("pinwheel", n_train=2000, n_val=500, n_test=1000, seed=0, standardize=False)
    splits = data.toy_data("pinwheel", n_train=2000, n_val=500, n_test=1000, seed=0)
    assert np.allclose(splits.standardizer.mean, raw.train.mean(axis=0), rtol=0, atol=1e-14)
    assert np.allclose(splits.standardizer.std, raw.train.std(axis=0), rtol=0, atol=1e-14)
    assert np.allclose(splits.train.mean(axis=0), 0, atol=1e-12) and np.allclose(splits.train.std(axis=0), 1)
    for name in ("val", "test"):
        part = getattr(splits, name)
        assert np.allclose(part, (getattr(raw, name) - raw.train.mean(axis=0)) / raw.train.std(axis=0))
        assert not np.allclose(part.mean(axis=0), 0, atol=1e-6), f"{name} is not standardised by its own stats"


def test_toy_data_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown dataset 'moon'.*checkerboard.*two_spirals"):
        data.toy_data("moon")
    with pytest.raises(ValueError, match="n_train must be a positive int"):
        data.toy_data("moons", n_train=0)
    with pytest.raises(ValueError, match="n_val must be an int >= 0"):
        data.toy_data("moons", n_val=-1)
    with pytest.raises(ValueError, match="noise must be"):
        data.toy_data("moons", n_train=10, noise=-1.0)
    assert len(data.toy_data("rings", n_train=10, n_val=0, n_test=0).val) == 0


def test_standardizer_inverse_undoes_transform():
    x = data.eight_gaussians(200, seed=1) * [3.0, 0.5] + [1.0, -2.0]
    standardizer = data.Standardizer.fit(x)
    assert np.allclose(standardizer.inverse_transform(standardizer.transform(x)), x, rtol=0, atol=1e-12)
    y = np.random.default_rng(0).standard_normal((7, 2))
    assert np.allclose(standardizer.transform(standardizer.inverse_transform(y)), y, rtol=0, atol=1e-12)


def test_standardizer_log_det_matches_finite_differences():
    standardizer = data.Standardizer.fit(data.pinwheel(500, seed=2) * [4.0, 0.25])
    x = data.pinwheel(5, seed=3)
    jacobian = testing.numerical_jacobian(standardizer.transform, x, eps=1e-6)  # (5, 2, 2)
    log_abs_det = np.linalg.slogdet(jacobian)[1]
    # an affine map: central differences are exact up to rounding, ~1e-16 / 1e-6
    assert np.allclose(log_abs_det, standardizer.log_det, rtol=0, atol=1e-8), (log_abs_det, standardizer.log_det)
    assert standardizer.log_det == pytest.approx(-np.log(standardizer.std).sum(), rel=1e-15)


def test_standardizer_log_det_converts_a_density_to_original_units():
    # x ~ N(m, diag s^2) standardised with exactly m and s gives y ~ N(0, I), and
    # log N(x; m, s^2) = log N(y; 0, I) + log_det.
    mean, std = np.array([1.0, -3.0]), np.array([0.2, 5.0])
    standardizer = data.Standardizer(mean, std)
    x = mean + std * np.random.default_rng(0).standard_normal((10, 2))
    log_normal = lambda v: (-0.5 * v**2 - 0.5 * math.log(2 * math.pi)).sum(axis=1)
    expected = log_normal((x - mean) / std) - np.log(std).sum()
    assert np.allclose(log_normal(standardizer.transform(x)) + standardizer.log_det, expected, rtol=0, atol=1e-12)


def test_standardizer_state_round_trip():
    standardizer = data.Standardizer.fit(data.moons(100, seed=0))
    state = standardizer.state_dict()
    assert set(state) == {"mean", "std"} and all(isinstance(v, np.ndarray) for v in state.values())
    state["mean"][0] = 99.0  # a copy: editing it does not change the standardizer
    assert standardizer.mean[0] != 99.0
    as_json = json.loads(json.dumps({k: v.tolist() for k, v in standardizer.state_dict().items()}))
    for saved in (standardizer.state_dict(), as_json):
        restored = data.Standardizer.from_state(saved)
        assert np.array_equal(restored.mean, standardizer.mean) and np.array_equal(restored.std, standardizer.std)
        assert restored.log_det == standardizer.log_det


def test_standardizer_rejects_bad_input():
    with pytest.raises(ValueError, match="constant"):
        data.Standardizer.fit(np.stack([np.arange(5.0), np.ones(5)], axis=1))
    with pytest.raises(ValueError, match="N >= 2"):
        data.Standardizer.fit(np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        data.Standardizer.fit(data.moons(10, seed=0)).transform(np.ones((4, 3)))
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        data.Standardizer([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="missing"):
        data.Standardizer.from_state({"mean": [0.0]})


def test_split_shuffles_and_cuts_by_fractions():
    x = np.arange(101)[:, None] * [1.0, 1.0]
    train, val, test = data.split(x, (0.5, 0.25, 0.25), seed=3)
    assert (len(train), len(val), len(test)) == (50, 25, 26), "floor for train and val, the rest for test"
    assert sorted(np.concatenate([train, val, test])[:, 0]) == list(range(101)), "a permutation of the rows"
    assert not np.array_equal(train[:, 0], np.arange(50)), "shuffled"
    assert all(np.array_equal(a, b) for a, b in zip(data.split(x, (0.5, 0.25, 0.25), seed=3), (train, val, test)))
    for bad in [(0.5, 0.5), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="fractions"):
            data.split(x, bad)


# --- the 8x8 digits ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return data.digits(seed=0)


def _elementwise_h(y, alpha):
    """logit(alpha + (1 - 2 alpha) y / 17), written out again here, independently of minflow."""
    q = alpha + (1 - 2 * alpha) * y / 17
    return np.log(q / (1 - q))


def _log_derivative_by_finite_differences(y, alpha, eps=1e-5):
    return np.log((_elementwise_h(y + eps, alpha) - _elementwise_h(y - eps, alpha)) / (2 * eps))


def test_digits_shapes_and_sizes(digits):
    assert [part.shape for part in digits[:3]] == [(1437, 1, 8, 8), (179, 1, 8, 8), (181, 1, 8, 8)]
    assert sum(len(part) for part in digits[:3]) == 1797
    assert [d.shape for d in digits[3:6]] == [(1437,), (179,), (181,)] and digits.alpha == 0.05
    assert all(part.dtype == np.float64 and np.all(np.isfinite(part)) for part in digits[:6])


def test_digits_are_the_split_images_dequantized(digits):
    pixels = data.digit_pixels()
    assert pixels.shape == (1797, 1, 8, 8) and pixels.dtype == np.int64 and pixels.min() == 0 and pixels.max() == 16
    for images, raw in zip(digits[:3], data.split(pixels, seed=0)):
        offset = data.from_model_space(images, digits.alpha) - raw
        # each pixel was raised by u ~ U[0, 1): offsets in [0, 1) up to the round trip's rounding
        assert offset.min() > -1e-9 and offset.max() < 1, (offset.min(), offset.max())
    again = data.digits(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again[:6], digits[:6])), "same seed, same data"
    assert not np.array_equal(data.digits(seed=1).train, digits.train)


def test_dequantize_spreads_each_pixel_over_its_unit_cell():
    pixels = np.random.default_rng(0).integers(0, 17, size=(500, 1, 8, 8))
    y = data.dequantize(pixels, seed=1)
    assert y.dtype == np.float64 and y.shape == pixels.shape
    assert np.all((y >= pixels) & (y < pixels + 1))
    offsets = (y - pixels).ravel()  # U[0, 1): mean 1/2, std 1/sqrt(12)
    assert abs(offsets.mean() - 0.5) < _five_se(1 / math.sqrt(12), offsets.size)
    assert np.array_equal(y, data.dequantize(pixels, seed=1))
    for bad in (np.array([[17]]), np.array([[-1]]), np.array([[2.5]])):
        with pytest.raises(ValueError, match="pixels must be integers in 0..16"):
            data.dequantize(bad)


def test_model_space_round_trip():
    y = np.random.default_rng(0).uniform(0, 17, size=(20, 1, 8, 8))
    for alpha in (0.05, 1e-3, 0.4):
        h, log_det = data.to_model_space(y, alpha)
        assert h.shape == y.shape and log_det.shape == (20,)
        assert np.allclose(h, _elementwise_h(y, alpha), rtol=0, atol=1e-12)
        assert np.allclose(data.from_model_space(h, alpha), y, rtol=0, atol=1e-10)
    edges = np.array([[0.0, 17.0]])
    assert np.all(np.isfinite(data.to_model_space(edges)[0])), "alpha keeps 0 and 17 off logit's poles"


def test_model_space_log_det_matches_finite_differences():
    y = np.random.default_rng(1).uniform(0, 17, size=(6, 1, 8, 8))
    for alpha in (0.05, 0.3):
        _, log_det = data.to_model_space(y, alpha)
        expected = _log_derivative_by_finite_differences(y, alpha).reshape(6, -1).sum(axis=1)
        # central differences have error ~eps^2 h''' / 6 relative, ~1e-9 here; summed over 64 pixels
        assert np.allclose(log_det, expected, rtol=0, atol=1e-6), np.abs(log_det - expected).max()


def test_model_space_rejects_bad_input():
    with pytest.raises(ValueError, match=r"y must lie in \[0, 17\]"):
        data.to_model_space(np.full((1, 4), 17.5))
    with pytest.raises(ValueError, match="batched"):
        data.to_model_space(np.ones(4))
    for alpha in (0.0, 0.5, -1, True):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 0.5\)"):
            data.to_model_space(np.ones((1, 4)), alpha)


def test_bits_per_dim_of_the_uniform_density_is_log2_17():
    # The uniform density on [0, 17)^64, pushed into model space, has
    # log p_h(h) = -64 log 17 - log|dh/dy|; its bits/dim must be log2 17, the cost of a uniform
    # choice among 17 levels. log|dh/dy| comes from finite differences, independently of minflow.
    y = np.random.default_rng(2).uniform(0, 17, size=(50, 1, 8, 8))
    _, log_det = data.to_model_space(y)
    log_prob_h = -64 * math.log(17) - _log_derivative_by_finite_differences(y, 0.05).reshape(50, -1).sum(axis=1)
    assert data.bits_per_dim(log_prob_h, log_det) == pytest.approx(math.log2(17), abs=1e-8)


def test_bits_per_dim_of_a_standard_normal_model(digits):
    # Independently: the model's density of each dequantized pixel y is N(h(y); 0, 1) |dh/dy|.
    h = digits.test.reshape(len(digits.test), -1)
    log_prob_h = (-0.5 * h**2 - 0.5 * math.log(2 * math.pi)).sum(axis=1)
    y = data.from_model_space(digits.test).reshape(len(h), -1)
    log_normal = -0.5 * _elementwise_h(y, 0.05) ** 2 - 0.5 * math.log(2 * math.pi)
    log_p_y = (log_normal + _log_derivative_by_finite_differences(y, 0.05)).sum(axis=1)
    expected = -log_p_y.mean() / (64 * math.log(2))
    got = data.bits_per_dim(log_prob_h, digits.test_log_det)
    assert got == pytest.approx(expected, rel=1e-8)
    # N(0, 1) is a poor fit (the pixels' h has mean about -1 and std about 1.8): worse than
    # uniform. A Gaussian per pixel, fitted on train, must beat uniform.
    assert math.log2(17) < got < 7, got
    train = digits.train.reshape(len(digits.train), -1)
    mean, std = train.mean(axis=0), train.std(axis=0)
    fitted = (-0.5 * ((h - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)).sum(axis=1)
    assert 1 < data.bits_per_dim(fitted, digits.test_log_det) < math.log2(17)


def test_bits_per_dim_accepts_tensors_and_rejects_bad_shapes():
    assert data.bits_per_dim(Tensor([-1.0, -3.0]), np.zeros(2), dim=1) == pytest.approx(2 / math.log(2))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        data.bits_per_dim(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="dim must be a positive int"):
        data.bits_per_dim(np.zeros(2), np.zeros(2), dim=0)


def test_importing_data_does_not_import_scikit_learn():
    code = "import sys, minflow.data\nassert 'sklearn' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"pip install 'minflow\[digits\]'"):
        data.digits()


# --- energies ---------------------------------------------------------------------------------------------
def _reference_energy(name, z):
    """Table 1 of Rezende & Mohamed (2015), written with plain NumPy (log(exp(a) + exp(b)) = logaddexp(a, b))."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    bump = lambda x, s: -0.5 * (x / s) ** 2  # the log of exp(-1/2 (x / s)^2)
    if name == "u1":
        return 0.5 * ((np.hypot(z1, z2) - 2) / 0.4) ** 2 - np.logaddexp(bump(z1 - 2, 0.6), bump(z1 + 2, 0.6))
    if name == "u2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "u3":
        return -np.logaddexp(bump(z2 - w1, 0.35), bump(z2 - w1 + w2, 0.35))
    return -np.logaddexp(bump(z2 - w1, 0.4), bump(z2 - w1 + w3, 0.35))


POINTS = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.5, 0.7], [0.3, -2.2], [1.2, -0.4]])


def test_energies_at_hand_computed_points():
    # on the ring at a mode: U1(2, 0) = -log(1 + exp(-0.5 (4 / 0.6)^2)); on top of the ring,
    # away from both bumps: U1(0, 2) = -log(2 exp(-0.5 (2 / 0.6)^2)); on the sine wave: U2(1, 1) = 0
    u1 = data.energy_u1(POINTS).numpy()
    assert u1[0] == pytest.approx(-math.log1p(math.exp(-0.5 * (4 / 0.6) ** 2)), abs=1e-15)
    assert u1[1] == pytest.approx(0.5 * (2 / 0.6) ** 2 - math.log(2), rel=1e-14)
    assert data.energy_u2(POINTS).numpy()[2] == pytest.approx(0, abs=1e-15)
    for name, energy in data.ENERGIES.items():
        got = energy(Tensor(POINTS))
        assert isinstance(got, Tensor) and got.shape == (len(POINTS),)
        assert np.allclose(got.numpy(), _reference_energy(name, POINTS), rtol=1e-13, atol=1e-13), name


@pytest.mark.parametrize("name", sorted(data.ENERGIES))
def test_energy_gradients_match_finite_differences(name):
    energy = data.ENERGIES[name]
    z = Tensor(POINTS, requires_grad=True)
    ops.sum(energy(z)).backward()
    # each sample's energy depends on that sample only, so a per-sample Jacobian is its gradient
    numeric = testing.numerical_jacobian(lambda v: energy(v).numpy()[:, None], POINTS, eps=1e-6)[:, 0, :]
    assert np.allclose(z.grad, numeric, rtol=1e-6, atol=1e-6), (z.grad, numeric)


def test_energies_stay_finite_far_out():
    # there every exp(-1/2 (./0.35)^2) underflows to 0, and log(0 + 0) would give an infinite
    # energy; logsumexp over the stacked terms keeps it finite and exact
    far = np.array([[40.0, -30.0], [-50.0, 25.0]])
    for name, energy in data.ENERGIES.items():
        got = energy(far).numpy()
        assert np.all(np.isfinite(got)), name
        assert np.allclose(got, _reference_energy(name, far), rtol=1e-13), name


def test_log_density_is_minus_the_energy():
    for name, energy in data.ENERGIES.items():
        log_p = data.log_density(name)
        assert np.array_equal(log_p(Tensor(POINTS)).numpy(), -energy(POINTS).numpy())
    z = Tensor(POINTS, requires_grad=True)
    ops.sum(data.log_density("u4")(z)).backward()
    assert z.grad.shape == POINTS.shape
    with pytest.raises(ValueError, match=r"unknown energy 'u5'.*'u1', 'u2', 'u3', 'u4'"):
        data.log_density("u5")
    with pytest.raises(ValueError, match=r"shape \(B, 2\), got \(4, 3\)"):
        data.energy_u1(np.ones((4, 3)))


def test_energies_in_float32():
    z = Tensor(POINTS.astype(np.float32), requires_grad=True)
    for name, energy in data.ENERGIES.items():
        value = energy(z)
        assert value.dtype == np.float32, name
        assert np.allclose(value.numpy(), _reference_energy(name, POINTS), rtol=1e-4, atol=1e-4), name


@needs_gpu
@pytest.mark.gpu
def test_energies_and_standardizer_on_cupy():
    import cupy

    z_host = Tensor(POINTS, requires_grad=True)
    ops.sum(data.energy_u3(z_host)).backward()
    standardizer = data.Standardizer.fit(data.moons(100, seed=0))
    minflow.set_backend("cupy")
    try:
        z = Tensor(cupy.asarray(POINTS), requires_grad=True)
        value = data.energy_u3(z)
        ops.sum(value).backward()
        assert isinstance(value.data, cupy.ndarray) and isinstance(z.grad, cupy.ndarray)
        assert np.allclose(cupy.asnumpy(value.data), _reference_energy("u3", POINTS), rtol=1e-12)
        assert np.allclose(cupy.asnumpy(z.grad), z_host.grad, rtol=1e-12, atol=1e-12)
        y = standardizer.transform(cupy.asarray(POINTS))
        assert isinstance(y, cupy.ndarray)
        assert np.allclose(cupy.asnumpy(standardizer.inverse_transform(y)), POINTS)
    finally:
        minflow.set_backend("numpy")


# --- labels: the context of class-conditional models ---------------------------------------------
def test_moon_labels_name_the_moon_each_point_is_on():
    points, labels = data.moons(2000, seed=3, noise=0.0, labels=True)
    assert np.array_equal(points, data.moons(2000, seed=3, noise=0.0))  # the same points as without labels
    upper, lower = points[labels == 0], points[labels == 1]
    # noise-free: the upper moon is the unit half circle about (0, 0), the lower about (1, 1/2)
    assert np.allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0) and (upper[:, 1] >= 0).all()
    assert np.allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0) and (lower[:, 1] <= 0.5).all()
    # half on each, within 5 binomial standard errors (sd of the fraction: 0.5 / sqrt(2000) = 0.011)
    assert abs(labels.mean() - 0.5) < 5 * 0.5 / np.sqrt(2000)


def test_toy_labels_follow_the_rows_of_toy_data():
    splits = data.toy_data("moons", n_train=300, n_val=50, n_test=100, seed=5, standardize=False)
    labels = data.toy_labels("moons", n_train=300, n_val=50, n_test=100, seed=5)
    for part, one_hot in zip(splits[:3], labels):
        assert one_hot.shape == (len(part), 2) and (one_hot.sum(axis=1) == 1).all()
        upper = one_hot[:, 0] == 1
        # with the default noise 0.05, the upper moon's points sit above y = -0.3 and the lower's below 0.8
        assert (part[upper, 1] > -0.3).all() and (part[~upper, 1] < 0.8).all()
    with pytest.raises(ValueError, match="dataset 'circles' has no labels"):
        data.toy_labels("circles")


def test_digit_labels_are_the_classes_of_the_digits():
    pytest.importorskip("sklearn")
    labels = data.digit_labels()
    assert labels.shape == (len(data.digit_pixels()),) and sorted(set(labels.tolist())) == list(range(10))
    # the class means differ: a 0 has a hole in the middle where a 1 has its stroke
    pixels = data.digit_pixels().reshape(-1, 64)
    assert pixels[labels == 0][:, 27:29].mean() < pixels[labels == 1][:, 27:29].mean()


def test_distance_to_moons_is_zero_on_the_arcs_and_the_offset_off_them():
    on_arcs = data.moons(500, seed=1, noise=0.0)
    assert np.abs(data.distance_to_moons(on_arcs)).max() < 1e-12
    # straight up from the top of the upper moon (0, 1): the distance is the height above it
    above = np.array([[0.0, 1.0 + r] for r in (0.1, 0.3, 2.0)])
    assert np.allclose(data.distance_to_moons(above), [0.1, 0.3, 2.0])
    # left of the upper moon's left end (-1, 0), below the arc's side: the distance to that end
    assert np.allclose(data.distance_to_moons(np.array([[-1.5, -0.2]])), [np.hypot(0.5, 0.2)])
    # (0, 0), the upper moon's centre, is 1 from its arc but |(1, 0.5)| - 1 from the lower one
    assert np.allclose(data.distance_to_moons(np.zeros((1, 2))), [np.hypot(1.0, 0.5) - 1.0])
    with pytest.raises(ValueError, match=r"x must be 2-D points, shape \(N, 2\), got \(3,\)"):
        data.distance_to_moons(np.zeros(3))
