"""Details of minflow/flows/multiscale.py that tests/test_multiscale.py leaves open.

Each test pins a behaviour a plausible bug would break: the latent packing for one and for three
scales on non-square images, gradients through the inverse (sampling), the dtype of everything a
1x1 convolution builds, the parameters being exactly the documented free entries of P L U, the
up-front shape check of MultiScale, which half each Glow step's coupling keeps, and that the
conditioner settings reach every coupling (the scale bound by its effect on the log-det).
"""

import re

import numpy as np
import pytest
from helpers import device, host

from minflow import backend
from minflow.autodiff import Tensor, ops
from minflow.flows.coupling import AffineCoupling
from minflow.flows.multiscale import InvertibleConv1x1, MultiScale, Squeeze, _plu, glow_step


def perturbed(flow, seed, scale=0.3):
    """Every parameter moved by scale * N(0, 1): minflow tests flows with random, non-identity parameters."""
    rng = backend.rng(seed)
    for p in flow.parameters():
        p.data = p.data + scale * rng.standard_normal(p.shape).astype(p.dtype)
    return flow


def random_images(shape, batch, seed):
    return device(np.random.default_rng(seed).standard_normal((batch, *shape)))


def couplings(flow):
    return [layer for steps in flow.steps for layer in steps.flows if isinstance(layer, AffineCoupling)]


# --- MultiScale: packing and unpacking the latent ------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "scales", "part_shapes"),
    [
        ((1, 4, 8), 1, [(4, 2, 4)]),  # one scale: no factor-out, a single part
        ((1, 8, 16), 3, [(2, 4, 8), (4, 2, 4), (16, 1, 2)]),  # three parts, none of them square
    ],
    ids=["one_scale", "three_scales"],
)
def test_multiscale_packs_and_unpacks_every_part_for_any_number_of_scales(shape, scales, part_shapes):
    """latent_parts(z) are the parts the forward pass factored out, and inverse(forward(x)) = x.

    Two scales (the only case tested elsewhere) hide an off-by-one in the offsets or in which
    part is the last one, and square parts hide a height/width mix-up in the part sizes.
    """
    flow = MultiScale(shape, scales=scales, steps_per_scale=1, hidden=(4,), activation="tanh", seed=1)
    assert flow.part_shapes == part_shapes
    x = random_images(shape, 3, seed=2)
    flow.forward(x)  # initialises the actnorms
    perturbed(flow, seed=3)
    z, log_det = flow.forward(x)
    # the parts recomputed layer by layer, as the MultiScale docstring defines them
    h, expected = Tensor(x), []
    for scale in range(scales):
        h = flow.steps[scale].forward(flow.squeezes[scale].forward(h)[0])[0]
        if scale < scales - 1:
            expected.append(h[:, h.shape[1] // 2 :])
            h = h[:, : h.shape[1] // 2]
    expected.append(h)
    parts = flow.latent_parts(z)
    assert [tuple(p.shape[1:]) for p in parts] == part_shapes
    for got, want in zip(parts, expected):
        np.testing.assert_array_equal(host(got.data), host(want.data))  # the same ops on the same data
    x_back, inverse_log_det = flow.inverse(z)
    # round trip through tanh MLPs and triangular solves in float64: errors ~1e-15, 1e-10 is generous
    np.testing.assert_allclose(host(x_back.data), host(x), atol=1e-10)
    np.testing.assert_allclose(host(inverse_log_det.data), -host(log_det.data), atol=1e-10)


def test_squeeze_inverse_passes_the_gradient_back_to_z():
    """z -> x is a permutation, so d sum(w * x) / dz = squeeze(w): the graph must reach z (sampling trains on it)."""
    squeeze = Squeeze((2, 4, 2))
    w = random_images((2, 4, 2), 3, seed=4)
    z = Tensor(random_images((8, 2, 1), 3, seed=5), requires_grad=True)
    x, _ = squeeze.inverse(z)
    ops.sum(x * Tensor(w)).backward()
    assert z.grad is not None
    np.testing.assert_array_equal(host(z.grad), host(squeeze.forward(w)[0].data))  # a permutation: exact


def test_squeeze_inverse_of_a_plain_device_array_returns_tensors_on_that_backend():
    """A latent given as an array (not a Tensor) is wrapped: x and the zero log-det live on the default backend."""
    squeeze = Squeeze((1, 2, 2))
    z = device(np.arange(8.0).reshape(2, 4, 1, 1))
    x, log_det = squeeze.inverse(z)
    assert isinstance(x, Tensor) and isinstance(log_det, Tensor)
    assert backend.array_module(x.data) is backend.xp() and backend.array_module(log_det.data) is backend.xp()
    np.testing.assert_array_equal(host(x.data), np.arange(8.0).reshape(2, 4, 1, 1).reshape(2, 1, 2, 2))
    np.testing.assert_array_equal(host(log_det.data), [0.0, 0.0])


def test_multiscale_inverse_gradient_matches_finite_differences():
    """The gradient of a function of generated images with respect to the latent: the path reverse-KL training uses."""
    shape = (1, 4, 4)
    flow = MultiScale(shape, scales=2, steps_per_scale=1, hidden=(4,), activation="tanh", seed=6)
    flow.forward(random_images(shape, 4, seed=7))  # initialises the actnorms
    perturbed(flow, seed=8)
    z0, w, v = (random_images(shape, 2, seed=s) for s in (9, 10, 11))

    def objective(z):
        return float(host(ops.sum(flow.inverse(z)[0] * Tensor(w)).data))

    z = Tensor(z0, requires_grad=True)
    ops.sum(flow.inverse(z)[0] * Tensor(w)).backward()
    assert z.grad is not None
    directional = float(np.sum(host(z.grad) * host(v)))
    eps = 1e-5  # central difference of a smooth map: error ~eps^2 = 1e-10 against a derivative of order 1
    numerical = (objective(z0 + eps * v) - objective(z0 - eps * v)) / (2 * eps)
    assert abs(directional) > 1e-3  # not a vacuous 0 = 0
    assert directional == pytest.approx(numerical, rel=1e-6, abs=1e-8)


# --- MultiScale: the shape check ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "scales"),
    [((1, 6, 8), 2), ((1, 8, 6), 2), ((1, 8, 12), 3)],
    ids=["height_not_divisible", "width_not_divisible", "three_scales"],
)
def test_multiscale_rejects_a_shape_up_front_when_height_or_width_is_not_divisible(shape, scales):
    """Either side alone failing is enough, and the message names 2^scales (6 and 12 are even: a
    squeeze would only fail deep inside the constructor, with a message about a Squeeze the user never made)."""
    message = (
        f"MultiScale: height and width must be divisible by 2^scales = {2**scales} "
        f"(one squeeze per scale), got shape {shape}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MultiScale(shape, scales=scales, steps_per_scale=1, hidden=(2,))


def test_multiscale_repr_counts_the_steps_per_scale():
    """Each step is three layers (actnorm, 1x1 conv, coupling): the repr divides back to K, an integer."""
    flow = MultiScale((1, 4, 4), scales=1, steps_per_scale=2, hidden=(2,))
    assert repr(flow) == "MultiScale(event_shape=(1, 4, 4), scales=1, steps_per_scale=2, parts=[(4, 2, 2)])"


# --- glow steps and the conditioner settings -------------------------------------------------------
@pytest.mark.parametrize("index", range(4))
def test_glow_step_couplings_alternate_the_half_they_leave_unchanged(index):
    """Even steps pass the first half of the channels through unchanged and transform the rest; odd steps swap."""
    shape = (4, 2, 2)
    coupling = perturbed(glow_step(shape, index, hidden=(4,), activation="tanh", seed=12)[2], seed=13)
    x = random_images(shape, 3, seed=14)
    z = host(coupling.forward(x)[0].data)
    kept, changed = (slice(0, 2), slice(2, 4)) if index % 2 == 0 else (slice(2, 4), slice(0, 2))
    np.testing.assert_array_equal(z[:, kept], host(x)[:, kept])
    assert np.all(np.abs(z[:, changed] - host(x)[:, changed]) > 1e-9)  # random parameters move every entry


def test_glow_step_hands_hidden_and_activation_to_the_coupling():
    """The conditioner is built with the widths and activation asked for (not the defaults (64, 64), relu)."""
    conditioner = glow_step((2, 2, 2), 0, hidden=(3, 5), activation="tanh", seed=0)[2].conditioner
    assert [layer.weight.shape[1] for layer in conditioner.layers[:-1]] == [3, 5]
    assert conditioner.activation == "tanh"


@pytest.mark.parametrize(
    "build",
    [
        lambda bound: glow_step((2, 2, 2), 1, hidden=(4,), activation="tanh", scale_bound=bound, seed=15),
        lambda bound: MultiScale((1, 4, 4), scales=2, steps_per_scale=1, hidden=(4,), scale_bound=bound, seed=15),
    ],
    ids=["glow_step", "MultiScale"],
)
def test_scale_bound_bounds_every_coupling_log_det(build):
    """With scale_bound B each log-scale is B tanh(s / B), so a coupling's |log-det| <= B times the coordinates it
    transforms, however large the conditioner's output; an unbounded (None) or default (2.0) bound breaks this."""
    bound = 0.05
    built = build(bound)
    layers = couplings(built) if isinstance(built, MultiScale) else [built[2]]
    for k, layer in enumerate(layers):
        perturbed(layer, seed=16 + k, scale=3.0)  # raw log-scales of order 10: tanh saturates at the bound
        x = random_images(layer.event_shape, 8, seed=20 + k)
        log_det = host(layer.forward(x)[1].data)
        transformed = len(host(layer.changed))
        assert np.all(np.abs(log_det) <= bound * transformed)  # tanh may round to exactly 1
        assert np.max(np.abs(log_det)) > 0.5 * bound * transformed  # saturated: the bound is what limits it


# --- InvertibleConv1x1 -------------------------------------------------------------------------------
def test_conv1x1_parameters_are_the_documented_free_entries_of_p_l_u():
    """W = P (I + lower) (upper + diag(sign e^log_diag)) with the raw parameter arrays: ``lower`` holds only
    the strictly lower part of L and ``upper`` only the strictly upper part of U (no diagonal to double count)."""
    conv = InvertibleConv1x1(4, 2, 2, seed=17)  # a random rotation: L, U and P are not the identity
    p, lower, upper = (host(t.data) for t in (conv.permutation, conv.lower, conv.upper))
    sign, log_diag = host(conv.sign.data), host(conv.log_diag.data)
    assert np.all(np.triu(lower) == 0) and np.all(np.tril(upper) == 0)
    assert np.any(lower != 0) and np.any(upper != 0) and not np.allclose(p, np.eye(4))
    expected = p @ (np.eye(4) + lower) @ (upper + np.diag(sign * np.exp(log_diag)))
    np.testing.assert_allclose(host(conv.weight.data), expected, rtol=1e-12, atol=1e-12)


def test_conv1x1_built_under_float32_holds_float32_and_boolean_masks():
    """Under a float32 default, every floating array the layer builds (P and the signs included) is float32, so
    z stays float32; the masks are boolean, which ``astype`` leaves alone."""
    previous = backend.get_default_dtype()
    backend.set_default_dtype("float32")
    try:
        conv = InvertibleConv1x1(3, 2, 2, seed=19)
    finally:
        backend.set_default_dtype(previous)
    for name, tensor in conv.named_parameters() + conv.named_buffers():
        expected = bool if name.endswith("mask") else np.float32
        assert tensor.dtype == expected, name
    x = device(np.random.default_rng(20).standard_normal((2, 3, 2, 2)), dtype="float32")
    z, log_det = conv.forward(x)
    assert z.dtype == np.float32 and log_det.dtype == np.float32
    assert conv.inverse(z)[0].dtype == np.float32


def test_plu_works_on_the_default_backend_and_pivots():
    """P L U of a device matrix that needs row exchanges (a zero first pivot) stays on the device and reproduces it."""
    a = np.array([[0.0, 2.0, 1.0], [3.0, 1.0, -1.0], [1.0, -2.0, 4.0]])
    p, lower, upper = _plu(device(a))
    for factor in (p, lower, upper):
        assert backend.array_module(factor) is backend.xp()
    np.testing.assert_allclose(host(p) @ host(lower) @ host(upper), a, atol=1e-14)
    assert not np.allclose(host(p), np.eye(3))  # the zero pivot forced an exchange


def test_squeeze_inverse_takes_a_nested_list_like_every_flow():
    # Flow inputs may be arrays, Tensors or nested lists (Flow._check_input wraps them); Squeeze's inverse
    # checks z itself and must wrap it too.
    squeeze = Squeeze((1, 2, 2))
    z = np.arange(8.0).reshape(2, 4, 1, 1)
    x_from_list, log_det = squeeze.inverse(z.tolist())
    x_from_array, _ = squeeze.inverse(device(z))
    np.testing.assert_array_equal(host(x_from_list), host(x_from_array))  # a reshuffle: exact
    np.testing.assert_array_equal(host(log_det), [0.0, 0.0])
