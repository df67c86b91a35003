"""Modules, checkpoints, optimizers and the base distribution."""

import math
import os

import numpy as np
import pytest
from helpers import assert_close, device, device_ints, host

import minflow
from minflow import backend, nn, optim
from minflow.autodiff import Tensor, ops, reverse_topological_order


def _mlp(seed=0):
    return nn.MLP([3, 8, 8, 2], activation="tanh", seed=seed)


def test_parameters_are_found_recursively_by_name():
    names = [name for name, _ in _mlp().named_parameters()]
    assert names == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]


def test_same_seed_same_parameters_and_different_seed_differs():
    a, b, c = _mlp(1), _mlp(1), _mlp(2)
    assert all(np.array_equal(host(p), host(q)) for p, q in zip(a.parameters(), b.parameters()))
    assert not np.array_equal(host(a.parameters()[0]), host(c.parameters()[0]))


def test_zero_last_layer_outputs_zero():
    mlp = nn.MLP([3, 5, 4], zero_last=True, seed=0)
    out = mlp(Tensor(device(np.random.default_rng(0).standard_normal((6, 3)))))
    assert out.shape == (6, 4) and np.all(host(out) == 0)
    assert np.any(host(mlp.layers[0].weight) != 0), "only the last layer starts at zero"


@pytest.mark.parametrize("activation", sorted(nn.ACTIVATIONS))
def test_mlp_is_its_layers_and_activation_composed(activation):
    # MLP.forward = hidden layers activation(layer(x)), then the output layer; where FUSED has
    # the activation's fused op (relu), that op computes x W + b and the clip in the same
    # order as linear then relu, so the numbers are the same bits (rtol 0).
    mlp = nn.MLP([3, 8, 8, 2], activation=activation, seed=0)
    for p in mlp.parameters():  # random biases too: a fused op that dropped one would show
        p.data = p.data + device(np.random.default_rng(1).normal(0, 0.5, p.shape))
    x = Tensor(device(np.random.default_rng(0).standard_normal((6, 3))), requires_grad=True)
    expected = x
    for layer in mlp.layers[:-1]:
        expected = nn.ACTIVATIONS[activation](layer(expected))
    expected = mlp.layers[-1](expected)
    out = mlp(x)
    assert_close(out, host(expected), rtol=0, atol=0)
    # The graph: one node per hidden layer where the op is fused, two where it is not.
    names = [t.node.primitive.name for t in reversed(reverse_topological_order(out)) if t.node is not None]
    fused = activation in nn.FUSED
    assert names.count("linear_relu") == (2 if fused else 0)
    assert len(names) == (3 if fused else 5)


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        nn.MLP([2, 3], activation="swish")
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP([2])


def test_zero_grad_clears_gradients():
    mlp = _mlp()
    ops.sum(mlp(Tensor(device(np.ones((2, 3)))))).backward()
    assert all(p.grad is not None for p in mlp.parameters())
    mlp.zero_grad()
    assert all(p.grad is None for p in mlp.parameters())


def test_save_and_load_round_trip(tmp_path):
    a, b = _mlp(1), _mlp(2)
    path = tmp_path / "model.npz"
    a.save(path)
    b.load(path)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert np.array_equal(host(p), host(q)), name
    assert [f.name for f in tmp_path.iterdir()] == ["model.npz"], "no temporary file is left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, "a checkpoint gets the usual file permissions"


def test_load_rejects_a_corrupted_checkpoint(tmp_path):
    path = tmp_path / "broken.npz"
    _mlp().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read checkpoint"):
        _mlp().load(path)


def test_load_rejects_mismatched_names_shapes_and_dtypes(tmp_path):
    path = tmp_path / "other.npz"
    nn.MLP([3, 8, 2], seed=0).save(path)
    with pytest.raises(ValueError, match=r"missing \['layers.2.bias', 'layers.2.weight'\]"):
        _mlp().load(path)
    nn.MLP([3, 7, 7, 2], seed=0).save(path)
    with pytest.raises(ValueError, match=r"layers.0.weight: checkpoint has shape \(3, 7\), model has \(3, 8\)"):
        _mlp().load(path)
    _mlp().astype("float32").save(path)
    with pytest.raises(ValueError, match="checkpoint has dtype float32, model has float64"):
        _mlp().load(path)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    _mlp(1).save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        _mlp(2).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.npz"]


def test_buffers_are_saved_but_not_trained():
    class WithBuffer(nn.Module):
        def __init__(self):
            self.order = nn.Buffer(device_ints(np.array([2, 0, 1])))
            self.weight = nn.Parameter(device(np.ones(3)))

    module = WithBuffer()
    assert [n for n, _ in module.named_parameters()] == ["weight"]
    assert module.state_dict()["order"].dtype.kind == "i", "integer buffers keep their dtype"


def _quadratic_problem():
    """f(w) = |w - target|^2 / 2, minimised at target (returned on the host)."""
    target = np.array([1.0, -2.0, 0.5])
    w = nn.Parameter(device(np.zeros(3)))
    target_on_device = device(target)
    return w, target, lambda: 0.5 * ops.sum((w - target_on_device) ** 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: optim.Adam(p, lr=0.05),
        lambda p: optim.FlatAdam(p, lr=0.05),
    ],
    ids=["sgd", "adam", "flat-adam"],
)
def test_optimizers_minimise_a_quadratic(make):
    w, target, loss = _quadratic_problem()
    opt = make([w])
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert np.abs(host(w) - target).max() < 1e-3


def test_adam_first_step_matches_its_formula():
    # After one step, m/(1-b1) = g and v/(1-b2) = g^2, so the update is lr * g / (|g| + eps).
    w, target, loss = _quadratic_problem()
    opt = optim.Adam([w], lr=0.1)
    loss().backward()
    g = host(w.grad)
    opt.step()
    assert_close(w, -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)


def test_clip_grad_norm_scales_to_max_norm():
    a, b = nn.Parameter(device(np.zeros(2))), nn.Parameter(device(np.zeros(1)))
    a.grad, b.grad = device([3.0, 0.0]), device([4.0])
    assert float(host(optim.clip_grad_norm([a, b], 1.0))) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([host(a.grad), host(b.grad)]), [0.6, 0.0, 0.8])


def test_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam([nn.Parameter(device(np.zeros(1)))], lr=0)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([])


def test_standard_normal_log_prob_and_sampling():
    base = minflow.StandardNormal(2)
    z = np.array([[0.0, 0.0], [1.0, -2.0]])
    expected = -0.5 * (z**2).sum(1) - math.log(2 * math.pi)
    assert_close(base.log_prob(device(z)), expected, rtol=1e-14)
    a, b = host(base.sample(1000, seed=3)), host(base.sample(1000, seed=3))
    assert a.shape == (1000, 2) and np.array_equal(a, b)
    # mean of 1000 standard normals: standard error 0.032, so 0.15 is a ~5-sigma bound.
    assert np.abs(a.mean(0)).max() < 0.15 and np.abs(a.std(0) - 1).max() < 0.15
    with pytest.raises(ValueError, match="shape"):
        base.log_prob(device(np.zeros((3, 3))))


def test_normalizing_flow_rejects_non_flows():
    with pytest.raises(ValueError, match="needs a Flow"):
        minflow.NormalizingFlow(_mlp())


def test_a_model_is_not_called_like_a_layer_and_says_what_to_call():
    # forward means the map data -> latent (a flow's); a model has log_prob, nll and sample instead.
    model = minflow.models.realnvp(2, layers=2, hidden=8, seed=0)
    x = device(np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"model\.log_prob\(x\).*model\.flow\(x\)"):
        model(x)
    z, log_det = model.flow(x)  # what a call would have meant, one attribute away
    assert z.shape == (3, 2) and log_det.shape == (3,)


def test_default_dtype_controls_new_parameters():
    backend.set_default_dtype("float32")
    try:
        assert _mlp().parameters()[0].dtype == np.float32
    finally:
        backend.set_default_dtype("float64")
    with pytest.raises(ValueError, match="float32 or float64"):
        backend.set_default_dtype("int32")


def _quadratic_steps(w, opt, loss, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


def test_sgd_state_dict_continues_exactly():
    w, _, loss = _quadratic_problem()
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    _quadratic_steps(w, opt, loss, 3)
    state = opt.state_dict()
    assert state["type"] == "SGD" and state["momentum"] == 0.9 and "velocity.0" in state
    v, _, loss_v = _quadratic_problem()
    v.data = w.data.copy()
    resumed = optim.SGD([v], lr=1.0)
    resumed.load_state_dict(state)
    _quadratic_steps(w, opt, loss, 5)
    _quadratic_steps(v, resumed, loss_v, 5)
    assert np.array_equal(host(v), host(w))
    with pytest.raises(ValueError, match="velocity.3"):
        optim.SGD([v]).load_state_dict({**state, "velocity.3": state["velocity.0"]})


def test_checkpoints_carry_a_format_version(tmp_path):
    path = tmp_path / "model.npz"
    _mlp(1).save(path)
    with np.load(path) as archive:
        assert int(archive["__minflow_format__"]) == 1
        arrays = dict(archive)
    # An old file, without the entry, still loads (as version 1).
    old = tmp_path / "old.npz"
    np.savez(old, **{k: v for k, v in arrays.items() if k != "__minflow_format__"})
    b = _mlp(2).load(old)
    assert all(np.array_equal(host(p), host(arrays[n])) for n, p in b.named_parameters())
    # A newer file is refused, naming the file and both versions, in one line.
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**arrays, "__minflow_format__": np.asarray(2)})
    with pytest.raises(
        ValueError, match=r"newer.npz.*format version 2, and this minflow reads version 1 only"
    ) as error:
        _mlp().load(newer)
    assert "\n" not in str(error.value)
    # load_state_dict strips the entry too.
    _mlp().load_state_dict(arrays)


def test_files_that_are_not_checkpoints_get_one_line(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, **{f"x{i}": np.zeros(2) for i in range(40)})
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, weights=np.array([{"a": 1}], dtype=object))
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    cases = [
        (foreign, r"none of its 40 names is one of the model's 6 .* and 35 more"),
        (pickled, "holds Python objects, which minflow does not load"),
        (text, "not an .npz archive"),
        (empty, "the file is empty"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            _mlp().load(path)
        assert "\n" not in str(error.value) and "allow_pickle" not in str(error.value)
        assert path.name in str(error.value)


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, OSError])
def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch, error):
    path = tmp_path / "model.npz"
    _mlp(1).save(path)
    before = path.read_bytes()
    seen = {}

    def interrupted(file, **arrays):
        file.write(b"half a checkpoint")
        seen["during"] = sorted(os.listdir(tmp_path))  # the temporary file sits beside its destination
        raise error()

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(error):
        _mlp(2).save(path)
    assert len(seen["during"]) == 2 and seen["during"][0].startswith(".model.npz.")
    assert os.listdir(tmp_path) == ["model.npz"] and path.read_bytes() == before


def test_sigterm_during_a_save_leaves_no_temporary_file(tmp_path):
    # A real SIGTERM in the middle of writing, in a process whose handler raises (as the
    # command line's does): the temporary file goes, the old checkpoint stays.
    import subprocess
    import sys

    path = tmp_path / "model.npz"
    path.write_bytes(b"the previous checkpoint")
    script = (
        "import os, signal, sys, numpy as np\n"
        "from minflow import checkpoint\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
        "real = np.savez\n"
        "def slow(file, **arrays):\n"
        "    file.write(b'x' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    real(file, **arrays)\n"
        "np.savez = slow\n"
        "checkpoint.save_arrays(sys.argv[1], {'a': np.ones(1000)})\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=60)
    assert done.returncode == 143, done.stderr.decode()
    assert os.listdir(tmp_path) == ["model.npz"] and path.read_bytes() == b"the previous checkpoint"
