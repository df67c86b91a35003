"""Image flows (minflow/flows/multiscale.py), the glow builder, the image figures and the digits CLI.

Every formula in multiscale.py is checked here: the squeeze is an exact rearrangement, the
1x1 convolution's log-det is H W log|det W| (against slogdet of W and of a finite-difference
Jacobian), actnorm standardises each channel of its first batch, the multi-scale flow passes
the universal check_flow suite, and its log_prob is the sum of the base log-densities of the
factored-out parts plus the log-dets, recomputed here layer by layer.
"""

import json
import math

import numpy as np
import pytest
from helpers import device, host

import minflow
from minflow import backend, cli, data, models, testing
from minflow.autodiff import no_grad
from minflow.flows.multiscale import (
    ActNormImage,
    InvertibleConv1x1,
    MultiScale,
    Squeeze,
    _plu,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def perturbed(flow, seed=0, scale=0.3):
    """Every parameter moved by scale * N(0, 1), so that no check passes by being the identity."""
    rng = backend.rng(seed)
    for p in flow.parameters():
        p.data = p.data + scale * rng.standard_normal(p.shape).astype(p.dtype)
    return flow


def small_multiscale(shape, seed=0, steps_per_scale=1):
    # tanh, not ReLU: finite differences need a smooth map (see minflow.testing)
    return perturbed(
        MultiScale(shape, scales=2, steps_per_scale=steps_per_scale, hidden=(8,), activation="tanh", seed=seed),
        seed=seed + 10,
    )


# --- Squeeze --------------------------------------------------------------------------------------
def test_squeeze_is_an_exact_rearrangement_with_the_documented_layout():
    squeeze = Squeeze((2, 4, 6))
    x = np.arange(3 * 2 * 4 * 6, dtype=float).reshape(3, 2, 4, 6)  # every entry distinct
    z, log_det = squeeze.forward(device(x))
    z = host(z.data)
    assert z.shape == (3, 8, 2, 3) and np.all(host(log_det.data) == 0)
    # each output is exactly one input, and every input appears once: a permutation
    assert sorted(z.ravel().tolist()) == sorted(x.ravel().tolist())
    for c in range(2):
        for di in range(2):
            for dj in range(2):
                np.testing.assert_array_equal(z[:, 4 * c + 2 * di + dj], x[:, c, di::2, dj::2])
    x_back, inverse_log_det = squeeze.inverse(device(z))
    np.testing.assert_array_equal(host(x_back.data), x)  # exact, not approximate
    assert np.all(host(inverse_log_det.data) == 0)


def test_squeeze_validates_shapes():
    with pytest.raises(ValueError, match="even"):
        Squeeze((1, 3, 4))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Squeeze((4, 4))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, 2, 2\), got \(2, 1, 4, 4\)"):
        Squeeze((1, 4, 4)).inverse(device(np.zeros((2, 1, 4, 4))))


# --- InvertibleConv1x1 ------------------------------------------------------------------------------
def test_plu_factorises_a_matrix():
    a = np.random.default_rng(0).standard_normal((6, 6))
    p, lower, upper = _plu(backend.to_device(a))
    np.testing.assert_allclose(host(p @ lower @ upper), a, atol=1e-12)
    assert np.allclose(host(p) @ host(p).T, np.eye(6)) and set(np.unique(host(p))) <= {0.0, 1.0}
    assert np.allclose(np.diag(host(lower)), 1) and np.allclose(np.triu(host(lower), 1), 0)
    assert np.allclose(np.tril(host(upper), -1), 0)


def test_conv1x1_starts_as_a_rotation():
    conv = InvertibleConv1x1(5, 2, 2, seed=0)
    weight = host(conv.weight.data)
    np.testing.assert_allclose(weight @ weight.T, np.eye(5), atol=1e-12)  # orthogonal
    x = np.random.default_rng(1).standard_normal((3, 5, 2, 2))
    assert np.allclose(host(conv.forward(device(x))[1].data), 0, atol=1e-12)


def test_conv1x1_log_det_is_hw_log_det_w_and_matches_finite_differences():
    channels, height, width = 3, 2, 3
    conv = perturbed(InvertibleConv1x1(channels, height, width, seed=2), seed=3, scale=0.5)
    x = np.random.default_rng(4).standard_normal((4, channels, height, width))
    z, log_det = conv.forward(device(x))
    weight = host(conv.weight.data)
    expected = height * width * np.linalg.slogdet(weight)[1]
    np.testing.assert_allclose(host(log_det.data), expected, rtol=1e-12)
    jacobian = testing.numerical_jacobian(lambda a: conv.forward(a)[0].data, device(x))  # (B, 18, 18)
    np.testing.assert_allclose(np.linalg.slogdet(host(jacobian))[1], expected, atol=1e-7)  # FD error ~1e-10
    # z at each pixel is W times x at that pixel
    np.testing.assert_allclose(host(z.data), np.einsum("ij,bjhw->bihw", weight, x), atol=1e-12)


# --- ActNormImage -----------------------------------------------------------------------------------
def test_actnorm_image_standardises_each_channel_of_its_first_batch():
    rng = np.random.default_rng(5)
    x = (
        rng.standard_normal((16, 3, 4, 4)) * np.array([0.5, 2.0, 7.0])[:, None, None]
        + np.array([1.0, -3.0, 0.0])[:, None, None]
    )
    actnorm = ActNormImage(3, 4, 4)
    z, log_det = actnorm.forward(device(x))
    z = host(z.data)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-5)  # eps = 1e-6 in std + eps
    assert bool(host(actnorm.initialized.data))
    np.testing.assert_allclose(host(log_det.data), 16 * host(actnorm.log_scale.data).sum(), rtol=1e-12)
    # frozen after the first batch: a second batch goes through the same map
    loc = host(actnorm.loc.data).copy()
    actnorm.forward(device(x[:4] + 100))
    np.testing.assert_array_equal(host(actnorm.loc.data), loc)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Squeeze((2, 4, 4)),
        lambda: perturbed(ActNormImage(2, 3, 2), seed=1, scale=0.5),
        lambda: perturbed(InvertibleConv1x1(3, 2, 2, seed=0), seed=1, scale=0.5),
    ],
    ids=["Squeeze", "ActNormImage", "InvertibleConv1x1"],
)
def test_layers_pass_check_flow(make):
    testing.check_flow(make(), n=5, seed=0)


# --- MultiScale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 4, 4)])
def test_multiscale_passes_check_flow(shape):
    testing.check_flow(small_multiscale(shape), n=4, seed=1)


def test_multiscale_float32_passes_check_flow():
    testing.check_flow(small_multiscale((1, 4, 4)).astype("float32"), n=4, seed=2)


def test_multiscale_layout_and_part_shapes():
    flow = MultiScale((1, 8, 8), scales=3, steps_per_scale=1, hidden=(4,))
    assert flow.part_shapes == [(2, 4, 4), (4, 2, 2), (16, 1, 1)]
    assert sum(math.prod(s) for s in flow.part_shapes) == 64
    with pytest.raises(ValueError, match="divisible by 2\\^scales = 4"):
        MultiScale((1, 6, 6), scales=2)


def test_multiscale_log_prob_is_the_sum_over_factored_parts_plus_log_dets():
    """Recompute log p(x) layer by layer, with a separate N(0, I) for every factored-out part."""
    flow = small_multiscale((2, 4, 4), seed=3, steps_per_scale=2)
    model = minflow.NormalizingFlow(flow)
    x = device(np.random.default_rng(6).standard_normal((5, 2, 4, 4)))
    model.log_prob(x)  # the first forward initialises the actnorms; from now on the map is fixed
    with no_grad():
        h, log_p, parts = minflow.Tensor(x), np.zeros(5), []
        for scale in range(2):
            h, log_det = flow.squeezes[scale].forward(h)
            log_p += host(log_det.data)
            for layer in flow.steps[scale].flows:  # actnorm, 1x1 conv, coupling, ...
                h, log_det = layer.forward(h)
                log_p += host(log_det.data)
            if scale == 0:
                channels = h.shape[1]
                parts.append(h[:, channels // 2 :])
                h = h[:, : channels // 2]
        parts.append(h)
        for part in parts:
            log_p += host(minflow.StandardNormal(tuple(part.shape[1:])).log_prob(part).data)
        np.testing.assert_allclose(host(model.log_prob(x).data), log_p, rtol=1e-12)
        z, _ = flow.forward(x)
        for got, expected in zip(flow.latent_parts(z), parts):
            np.testing.assert_array_equal(host(got.data), host(expected.data))


# --- the glow builder --------------------------------------------------------------------------------
def test_glow_starts_as_a_rotation_of_the_base():
    """Before any data: identity actnorms and couplings, rotation 1x1 convs, so sampling preserves norms."""
    model = models.glow((1, 8, 8), scales=2, steps_per_scale=2, hidden=8, seed=0)
    assert isinstance(model.base, minflow.StandardNormal) and model.base.event_shape == (1, 8, 8)
    z = model.base.sample(6, seed=1)
    x = model.sample(6, seed=1)
    assert x.shape == (6, 1, 8, 8) and not np.allclose(host(x), host(z))
    np.testing.assert_allclose(
        np.linalg.norm(host(x).reshape(6, -1), axis=1), np.linalg.norm(host(z).reshape(6, -1), axis=1), rtol=1e-12
    )
    assert np.allclose(host(model.flow.inverse(z)[1].data), 0, atol=1e-12)


def test_build_dispatches_image_models_on_a_shape():
    assert isinstance(models.build("glow", (1, 4, 4), scales=1, steps_per_scale=1, hidden=4).flow, MultiScale)
    with pytest.raises(ValueError, match="image shape"):
        models.build("glow", 2)
    with pytest.raises(ValueError, match="int dimension"):
        models.build("realnvp", (1, 4, 4))


# --- figures ------------------------------------------------------------------------------------
def test_image_grid_tiles_the_images_in_order(tmp_path):
    plot = pytest.importorskip("minflow.plot")
    images = np.random.default_rng(0).random((5, 1, 3, 4))
    figure = plot.image_grid(images, path=tmp_path / "grid.png", columns=2, value_range=(0.0, 1.0))
    mosaic = figure.axes[0].images[0].get_array()
    assert mosaic.shape == (3 * 4 - 1, 2 * 5 - 1)
    for k in range(5):
        r, c = divmod(k, 2)
        np.testing.assert_allclose(mosaic[r * 4 : r * 4 + 3, c * 5 : c * 5 + 4], images[k, 0])
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plot.image_grid(np.zeros((2, 2, 3, 3)))


def test_interpolations_start_and_end_at_the_pair(tmp_path):
    plot = pytest.importorskip("minflow.plot")
    model = minflow.NormalizingFlow(small_multiscale((1, 4, 4), seed=4))
    rng = np.random.default_rng(7)
    model.log_prob(device(rng.standard_normal((8, 1, 4, 4))))  # initialise the actnorms on data
    pairs = rng.standard_normal((2, 2, 1, 4, 4))
    figure = plot.interpolations(model, pairs, steps=5, path=tmp_path / "interp.png", value_range=(-4.0, 4.0))
    mosaic = figure.axes[0].images[0].get_array()

    def tile(r, c):  # row r, column c of the mosaic (4x4 tiles, 1-pixel gaps)
        return mosaic[r * 5 : r * 5 + 4, c * 5 : c * 5 + 4]

    for p in range(2):
        np.testing.assert_allclose(tile(p, 0), np.clip((pairs[p, 0, 0] + 4) / 8, 0, 1), atol=1e-9)
        np.testing.assert_allclose(tile(p, 4), np.clip((pairs[p, 1, 0] + 4) / 8, 0, 1), atol=1e-9)
    # the middle tile is the decoded midpoint of the two latents
    z = host(model.flow.forward(device(pairs[0]))[0].data)
    middle = host(model.flow.inverse(device(z.mean(axis=0, keepdims=True)))[0].data)[0, 0]
    np.testing.assert_allclose(tile(0, 2), np.clip((middle + 4) / 8, 0, 1), atol=1e-9)
    assert (tmp_path / "interp.png").read_bytes().startswith(PNG_SIGNATURE)


# --- the command line on digits -------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("runs") / "digits"
    cli.main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "glow",
            "--steps",
            "5",
            "--hidden",
            "8",
            "--layers",
            "1",
            "--no-progress",
            "--out",
            str(folder),
        ]
    )
    return folder


def test_digits_training_writes_bits_per_dim_and_figures(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    for key in ("train_bpd", "val_bpd", "test_bpd"):
        # between a perfect model (0) and far worse than uniform (4.09 bits): finite and sane
        assert np.isfinite(metrics[key]) and 0 < metrics[key] < 10, (key, metrics[key])
    for figure in ("samples", "interpolations", "training"):
        assert (digits_run / f"{figure}.png").read_bytes().startswith(PNG_SIGNATURE)
    config = json.loads((digits_run / "config.json").read_text())
    assert config["shape"] == [1, 8, 8] and config["model"] == "glow"


def test_digits_evaluate_reproduces_test_bpd(digits_run, capsys):
    assert cli.main(["evaluate", str(digits_run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert printed["test_bpd"] == pytest.approx(metrics["test_bpd"], rel=1e-12)


def test_digits_bits_per_dim_is_data_bits_per_dim(digits_run):
    _, model, _ = cli.load_run(str(digits_run))
    splits = data.digits(seed=0)
    # the splits are host arrays (data.py); the loaded model lives on the default backend
    expected = data.bits_per_dim(model.log_prob(device(splits.test)).data, splits.test_log_det)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["test_bpd"] == pytest.approx(expected, rel=1e-12)


def test_digits_needs_an_image_model(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--data", "digits", "--model", "realnvp", "--steps", "1", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "moons", "--model", "glow", "--steps", "1", "--out", str(tmp_path / "y")])


def test_fresh_dequantizations_are_the_training_digits_with_new_noise():
    pytest.importorskip("sklearn")
    splits = data.digits(seed=3)
    copies = data.fresh_dequantizations(2, seed=3, alpha=splits.alpha)
    n = len(splits.train)
    assert copies.shape == (2 * n, 1, 8, 8)
    pixels = np.floor(data.from_model_space(splits.train, splits.alpha))  # y = pixel + u, u in [0, 1)
    for k in range(2):
        copy = copies[k * n : (k + 1) * n]
        np.testing.assert_array_equal(np.floor(data.from_model_space(copy, splits.alpha)), pixels)
        assert not np.allclose(copy, splits.train)  # same digits, other noise
    assert not np.allclose(copies[:n], copies[n:])


def test_default_base_lives_on_the_latent_shape():
    model = minflow.NormalizingFlow(Squeeze((1, 4, 4)))
    assert model.base.event_shape == (4, 2, 2)
    x = np.random.default_rng(8).standard_normal((3, 1, 4, 4))
    expected = -0.5 * (x**2).reshape(3, -1).sum(1) - 8 * math.log(2 * math.pi)  # a permutation keeps N(0, I)
    np.testing.assert_allclose(host(model.log_prob(device(x)).data), expected, rtol=1e-12)
    assert model.sample(2, seed=0).shape == (2, 1, 4, 4)
