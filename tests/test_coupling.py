"""Coupling layers: the properties that only they have (the universal suite covers the rest)."""

import numpy as np
import pytest
from helpers import assert_close, assert_equal, device, host

from minflow import testing
from minflow.flows import coupling

COUPLINGS = ["Coupling", "AdditiveCoupling", "AffineCoupling", "SplineCoupling", "PiecewiseLinearCoupling"]


@pytest.mark.parametrize("name", COUPLINGS)
def test_jacobian_is_block_triangular_with_a_diagonal_block(name):
    flow = testing.example_flows(5, seed=3)[name]
    x = testing.sample_inputs(flow, 4, seed=1)
    jacobian = host(testing.numerical_jacobian(lambda a: flow.forward(a)[0].data, x))
    kept = host(flow.kept).tolist()
    changed = host(flow.changed).tolist()
    # z1 = h1: identity on the kept block, nothing from the changed coordinates.
    np.testing.assert_allclose(
        jacobian[:, kept][:, :, kept], np.broadcast_to(np.eye(len(kept)), (4, len(kept), len(kept))), atol=1e-8
    )
    assert np.abs(jacobian[:, kept][:, :, changed]).max() < 1e-8, "z1 must not depend on h2"
    # z2 = g(h2; theta(h1)) elementwise: the changed block is diagonal ...
    block = jacobian[:, changed][:, :, changed]
    off_diagonal = block * (1 - np.eye(len(changed)))
    assert np.abs(off_diagonal).max() < 1e-8, "dz2/dh2 must be diagonal"
    # ... while dz2/dh1 (the conditioner's doing) is in general not zero.
    assert np.abs(jacobian[:, changed][:, :, kept]).max() > 1e-3


@pytest.mark.parametrize("name", COUPLINGS)
def test_additive_coupling_preserves_volume(name):
    flow = testing.example_flows(4, seed=2)[name]
    _, log_det = flow.forward(testing.sample_inputs(flow, 6, seed=0))
    if name == "AdditiveCoupling":
        assert np.all(host(log_det) == 0)
    else:
        assert np.abs(host(log_det)).max() > 1e-3


@pytest.mark.parametrize(
    "layer",
    [
        lambda: coupling.AdditiveCoupling([True, False, True], seed=0),
        lambda: coupling.AffineCoupling([True, False, True], seed=0),
        lambda: coupling.SplineCoupling([True, False, True], seed=0),
    ],
)
def test_new_layers_start_as_the_identity(layer):
    x = np.random.default_rng(0).standard_normal((7, 3)) * 2
    z, log_det = layer().forward(device(x))
    # the spline's identity is exact up to its normalised knots: a few ulps of 2B
    assert_close(z, x, atol=1e-12)
    assert_close(log_det, np.zeros(7), atol=1e-12)


def test_masks():
    assert coupling.half_mask(5) == [True, True, False, False, False]
    assert coupling.half_mask(5, first=False) == [False, False, True, True, True]
    assert coupling.alternating_mask(4) == [True, False, True, False]
    assert coupling.alternating_mask(4, even=False) == [False, True, False, True]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="keep at least one coordinate and change one"):
        coupling.AffineCoupling([True, True])
    with pytest.raises(ValueError, match="bins"):
        coupling.SplineCoupling([True, False], bins=1)
    with pytest.raises(ValueError, match="scale_bound"):
        coupling.AffineCoupling([True, False], scale_bound=0)


def test_image_masks_and_a_coupling_on_images():
    channels = coupling.channel_mask(4, 2, 3)
    assert [c[0][0] for c in channels] == [True, True, False, False]
    board = coupling.checkerboard_mask(1, 2, 3)
    assert board == [[[True, False, True], [False, True, False]]]
    # A coupling on (B, C, H, W) flattens the event, so every flow property carries over.
    layer = coupling.AffineCoupling(coupling.checkerboard_mask(2, 2, 2), hidden=(8,), activation="tanh", seed=0)
    for p in layer.parameters():
        p.data = p.data + device(0.3 * np.random.default_rng(1).standard_normal(p.shape))
    assert layer.event_shape == (2, 2, 2)
    x = np.random.default_rng(2).standard_normal((5, 2, 2, 2))
    z, _ = layer.forward(device(x))
    assert z.shape == (5, 2, 2, 2)
    assert_equal(host(z)[:, :, 0, 0], x[:, :, 0, 0])  # a kept (white) square
    testing.check_flow(layer, x=device(x))


def test_piecewise_linear_coupling_lives_on_the_unit_cube():
    layer = coupling.PiecewiseLinearCoupling([True, False], bins=4, seed=0)
    assert layer.input_domain == layer.output_domain == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
        layer.forward(device([[0.5, 1.5]]))


@pytest.mark.parametrize("first", [True, False])
def test_the_block_fast_path_equals_the_general_gather(first):
    # Half masks take the slicing fast path; with it switched off, the same layer gathers with
    # index arrays and restores the order by a permutation. Values, log-dets and parameter
    # gradients must be identical (the same float operations, only the copies differ).
    layer = coupling.AffineCoupling(coupling.half_mask(5, first=first), hidden=(8,), seed=0)
    for p in layer.parameters():  # non-zero last layer, so the transform is not the identity
        p.data = p.data + device(np.random.default_rng(1).normal(0, 0.3, p.shape))
    assert layer._blocks is not None
    x = np.random.default_rng(2).normal(size=(6, 5))

    def run(fast):
        layer._blocks = blocks if fast else None
        layer.zero_grad()
        z, log_det = layer.forward(device(x))
        ((z * z).sum() + log_det.sum()).backward()
        x_back, _ = layer.inverse(z.data)
        return host(z), host(log_det), host(x_back), [host(p.grad) for p in layer.parameters()]

    blocks = layer._blocks
    fast, general = run(True), run(False)
    for a, b in zip(fast[:3], general[:3]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast[3], general[3]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(fast[2], x, atol=1e-12)


def test_a_coupling_on_a_matrix_event_is_the_coupling_of_its_flattened_event():
    # Any event shape is flattened, including a 2-D one ((B, H, W) batches: neither a vector nor an image):
    # the same layer on x and on x flattened, with the mask flattened, gives the same numbers.
    mask = [[True, False, True], [False, True, False]]
    layers = [coupling.AffineCoupling(m, hidden=(8,), seed=0) for m in (mask, sum(mask, []))]
    for p, q in zip(layers[0].parameters(), layers[1].parameters()):
        p.data = p.data + device(0.3 * np.random.default_rng(1).standard_normal(p.shape))
        q.data = p.data
    x = np.random.default_rng(2).standard_normal((4, 2, 3))
    z, log_det = layers[0].forward(device(x))
    z_flat, log_det_flat = layers[1].forward(device(x.reshape(4, 6)))
    assert z.shape == (4, 2, 3)
    assert_equal(host(z).reshape(4, 6), host(z_flat))  # the same float operations on the same numbers
    assert_equal(host(log_det), host(log_det_flat))
    x_back, _ = layers[0].inverse(z.data)
    assert x_back.shape == (4, 2, 3)
    assert_close(host(x_back), x, rtol=0, atol=1e-12)  # float64 round trip through exp(s) and exp(-s): ~1e-15
    testing.check_flow(layers[0], x=device(x))
