"""Adam, the per-parameter method, and FlatAdam, its fast path (one flat array, in-place
updates, denormals flushed), against the formula and against each other.

The reference is the textbook update written out per parameter, with nothing shared and
nothing in place, on the host (NumPy). Adam and FlatAdam compute the same float64 numbers
in a slightly different order (FlatAdam: sqrt(v) / sqrt(c2) instead of sqrt(v / c2), lr / c1
folded into one factor), so they agree to a few ulps per step; over 25 steps of a
well-scaled problem, 1e-12 relative.
"""

import re

import numpy as np
import pytest
from helpers import assert_close, device, host, on_cupy

from minflow import backend, models, nn, optim

RTOL = 1e-12
ADAMS = [optim.Adam, optim.FlatAdam]


def reference_adam(params, grads_per_step, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """Textbook Adam on a list of arrays, one parameter at a time; None means 'no gradient'."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = g + weight_decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            params[i] = params[i] - lr * (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
    return params


def random_parameters(seed, shapes=((3, 4), (4,), (2, 2, 3), (1,))):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(device(rng.normal(size=shape))) for shape in shapes]


def random_grads(seed, params, steps, missing=()):
    """Random host gradients per step; parameter i has none at the steps listed in ``missing``."""
    rng = np.random.default_rng(seed)
    return [
        [None if (t, i) in missing else rng.normal(size=p.shape) for i, p in enumerate(params)] for t in range(steps)
    ]


def _continue(params, opt, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else device(g)
        opt.step()
    return opt


def run_adam(params, grads_per_step, adam=optim.FlatAdam, **options):
    return _continue(params, adam(params, lr=options.pop("lr", 1e-2), **options), grads_per_step)


# --- both against the formula --------------------------------------------------------------
@pytest.mark.parametrize("adam", ADAMS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_the_per_parameter_formula(adam, weight_decay):
    params = random_parameters(0)
    start = [host(p) for p in params]
    grads = random_grads(1, params, steps=25)
    run_adam(params, grads, adam, weight_decay=weight_decay)
    expected = reference_adam(start, grads, weight_decay=weight_decay)
    for p, want in zip(params, expected):
        assert_close(p, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("adam", ADAMS)
def test_parameters_without_a_gradient_are_skipped_entirely(adam):
    # Parameter 1 has no gradient at steps 3..9: it must not move then, and its m and v must
    # not decay (the reference skips it), so that it rejoins exactly where it was.
    params = random_parameters(2)
    start = [host(p) for p in params]
    grads = random_grads(3, params, steps=15, missing={(t, 1) for t in range(3, 10)} | {(0, 3)})
    run_adam(params, grads, adam)
    expected = reference_adam(start, grads)
    for p, want in zip(params, expected):
        assert_close(p, want, rtol=RTOL, atol=0)


# --- Adam and FlatAdam: the same steps, one state format ----------------------------------
# Over 300 float64 steps each optimizer drifts from the other by a few ulps per step of an
# update of size ~lr = 1e-2 (parameters of size ~1): 300 * 1e-2 * 1e-15 ~ 1e-15 at most in
# theory; 1e-12 relative (1e-13 absolute, for entries near 0) leaves a margin of 100, and an
# error of 1e-9 in one hyperparameter (below) moves them by ~1e-10, 100 times too much.
SAME_RTOL, SAME_ATOL = 1e-12, 1e-13


def _the_long_run(adam, lr=1e-2):
    params = random_parameters(20)
    missing = {(t, 1) for t in range(40, 90)} | {(t, 3) for t in range(0, 300, 7)}  # no gradient at those steps
    grads = random_grads(21, params, steps=300, missing=missing)
    run_adam(params, grads, adam, lr=lr, betas=(0.8, 0.99), weight_decay=0.05)
    return [host(p) for p in params]


def _agree(a, b):
    return all(np.allclose(x, y, rtol=SAME_RTOL, atol=SAME_ATOL) for x, y in zip(a, b))


def test_adam_and_flat_adam_take_the_same_steps():
    flat, textbook = _the_long_run(optim.FlatAdam), _the_long_run(optim.Adam)
    assert _agree(flat, textbook)
    # The check can fail: a learning rate wrong by one part in 1e9 is caught.
    assert not _agree(flat, _the_long_run(optim.Adam, lr=1e-2 * (1 + 1e-9)))


@pytest.mark.parametrize("saver, loader", [(a, b) for a in ADAMS for b in ADAMS])
@pytest.mark.parametrize("first_steps", [0, 4])
def test_state_dict_continues_in_a_new_optimizer_of_either_kind(saver, loader, first_steps):
    # Stop after some steps, carry the state (and the parameters) into new objects, and go on:
    # the same numbers as one optimizer that never stopped (exactly, for the same class; to
    # rounding across classes). Parameter 1 has no gradient at steps 2..5, so the skipped
    # moments are carried over too.
    params = random_parameters(8)
    grads = random_grads(9, params, steps=10, missing={(t, 1) for t in range(2, 6)})
    opt = saver(params, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.01)
    _continue(params, opt, grads[:first_steps])
    state = opt.state_dict()
    assert state["type"] == "Adam" and ("m" in state) == (first_steps > 0)
    saved_m = None if "m" not in state else host(state["m"])
    copies = [nn.Parameter(device(host(p).copy())) for p in params]  # nothing shared with params
    resumed = loader(copies, lr=0.5)  # other hyperparameters: the state's win
    resumed.load_state_dict(state)
    assert (resumed.beta1, resumed.beta2, resumed.weight_decay, resumed.t) == (0.8, 0.99, 0.01, first_steps)
    _continue(params, opt, grads[first_steps:])
    _continue(copies, resumed, grads[first_steps:])
    tolerance = {"rtol": 0, "atol": 0} if saver is loader else {"rtol": RTOL, "atol": 1e-15}
    for p, q in zip(params, copies):
        assert_close(q, p, **tolerance)
    if saved_m is not None:
        assert np.array_equal(host(state["m"]), saved_m), "a state_dict is a copy: later steps do not change it"


@pytest.mark.parametrize("adam", ADAMS)
def test_load_state_dict_refuses_another_optimizer_or_layout(adam):
    params = random_parameters(10)
    opt = run_adam(params, random_grads(11, params, steps=2), adam)
    with pytest.raises(ValueError, match="optimizer state is for 'SGD', this optimizer is 'Adam'"):
        adam(params).load_state_dict(optim.SGD(params).state_dict())
    with pytest.raises(ValueError, match="state 'm' has 29 entries, the parameters have 12"):
        adam(random_parameters(12, shapes=((3, 4),))).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("adam", ADAMS)
def test_model_load_state_dict_after_training_steps(adam):
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    opt = adam(model.parameters(), lr=1e-2)
    x = device(np.random.default_rng(0).normal(size=(32, 2)))
    for _ in range(3):
        opt.zero_grad()
        model.nll(x).backward()
        opt.step()
    saved = model.state_dict()
    model.load_state_dict(saved)
    opt.zero_grad()
    model.nll(x).backward()
    opt.step()
    changed = [name for name, value in model.state_dict().items() if not np.array_equal(host(value), host(saved[name]))]
    assert changed, "a step after load_state_dict must move the loaded parameters"


def test_textbook_adam_gives_each_parameter_a_new_array_of_its_own():
    # No shared buffer, no views, nothing changed behind a reader's back: an array taken from
    # p.data before a step (host(p) on NumPy is that very array) keeps its values.
    params = random_parameters(13)
    before = [p.data for p in params]
    copies = [host(p).copy() for p in params]
    opt = run_adam(params, random_grads(14, params, steps=3), optim.Adam)
    assert all(np.array_equal(host(a), c) for a, c in zip(before, copies))
    assert not any(np.array_equal(host(p), c) for p, c in zip(params, copies)), "every parameter moved"
    xp = backend.array_module(params[0].data)
    assert not any(xp.shares_memory(p.data, q.data) for i, p in enumerate(params) for q in params[i + 1 :])
    assert [m.shape for m in opt.m] == [p.shape for p in params]


# --- FlatAdam's fast path -------------------------------------------------------------------
def test_flat_adam_makes_the_parameters_views_of_one_flat_array():
    params = random_parameters(4)
    opt = run_adam(params, random_grads(5, params, steps=1), optim.FlatAdam)
    xp = backend.array_module(opt.theta)
    assert all(xp.shares_memory(p.data, opt.theta) for p in params)
    assert opt.theta.size == sum(p.size for p in params)


def test_replacing_parameter_data_is_noticed_and_the_state_kept():
    # load_state_dict assigns new arrays: the next step must update *them*, with m and v intact.
    params = random_parameters(6)
    start = [host(p) for p in params]
    grads = random_grads(7, params, steps=10)
    opt = optim.FlatAdam(params, lr=1e-2)
    for t, step_grads in enumerate(grads):
        if t == 5:  # swap every array for an equal copy, as a checkpoint load would
            for p in params:
                p.data = p.data.copy()
        for p, g in zip(params, step_grads):
            p.grad = device(g)
        opt.step()
        assert all(p.data is view for p, view in zip(params, opt.views))
    for p, want in zip(params, reference_adam(start, grads)):
        assert_close(p, want, rtol=RTOL, atol=0)


def test_float32_first_moment_is_flushed_instead_of_going_denormal():
    # One nonzero gradient, then zeros: m decays by 0.9 a step, and 0.9^t * 0.1 drops below
    # float32's smallest normal (1.2e-38) after about 820 steps. It must become exactly 0,
    # never a denormal (0 < |m| < tiny); v decays far slower and stays normal here.
    w = nn.Parameter(device(np.ones(4), np.float32))
    opt = optim.FlatAdam([w], lr=1e-3)
    tiny = np.finfo(np.float32).tiny
    w.grad = device(np.ones(4), np.float32)
    opt.step()
    w.grad = device(np.zeros(4), np.float32)
    for _ in range(1000):
        opt.step()
        m, v = host(opt.m), host(opt.v)
        assert not np.any((m != 0) & (np.abs(m) < tiny))
        assert not np.any((v != 0) & (v < tiny))
    assert np.all(host(opt.m) == 0)
    assert w.dtype == np.float32 and opt.theta.dtype == np.float32


def test_flat_adam_refuses_mixed_dtypes_with_a_clear_error():
    a = nn.Parameter(device(np.zeros(2)))
    b = nn.Parameter(device(np.zeros(2), np.float32))
    a.grad, b.grad = device(np.ones(2)), device(np.ones(2), np.float32)
    with pytest.raises(ValueError, match="one dtype"):
        optim.FlatAdam([a, b]).step()


def test_astype_after_steps_casts_the_state():
    w = nn.Parameter(device(np.ones(3)))
    module = nn.Module()
    module.w = w
    opt = optim.FlatAdam([w], lr=0.1)
    w.grad = device(np.ones(3))
    opt.step()
    module.astype(np.float32)
    w.grad = device(np.ones(3), np.float32)
    opt.step()
    assert w.dtype == np.float32 and opt.m.dtype == np.float32
    assert backend.array_module(opt.theta).shares_memory(w.data, opt.theta)


# --- defaults, steps without gradients, the flush boundary, messages, dtypes and backends -----------------
@pytest.mark.parametrize("adam", ADAMS)
def test_the_defaults_are_the_papers_hyperparameters(adam):
    # Kingma & Ba's lr 1e-3, betas (0.9, 0.999), eps 1e-8 and no weight decay, as the signature promises.
    params = random_parameters(30)
    start = [host(p) for p in params]
    grads = random_grads(31, params, steps=5)
    _continue(params, adam(params), grads)
    for p, want in zip(params, reference_adam(start, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8)):
        assert_close(p, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("adam", ADAMS)
def test_a_step_without_any_gradient_changes_nothing_but_the_step_count(adam):
    # A step after zero_grad with no backward (the loss used no parameter) skips every parameter:
    # the parameters, m and v stay exactly as they were.
    params = random_parameters(32)
    opt = run_adam(params, random_grads(33, params, steps=3), adam)
    before, state = [host(p).copy() for p in params], opt.state_dict()
    opt.zero_grad()
    opt.step()
    assert all(np.array_equal(host(p), b) for p, b in zip(params, before))
    after = opt.state_dict()
    assert np.array_equal(host(after["m"]), host(state["m"])) and np.array_equal(host(after["v"]), host(state["v"]))
    assert after["t"] == 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_moments_equal_to_the_smallest_normal_float_are_kept_and_only_smaller_ones_flushed(dtype):
    # The flush zeroes denormals (0 < |x| < tiny); tiny itself is a normal float and stays. With
    # betas (0, 0) one step sets m = g and v = g * g exactly, so g = [-tiny, -tiny / 2, sqrt(tiny),
    # sqrt(tiny) / 2] (powers of two: each square exact or below every denormal, so 0) plants m and v
    # on both sides of tiny.
    tiny = np.finfo(dtype).tiny
    root = np.sqrt(tiny)  # tiny = 2**-1022 (float64) or 2**-126 (float32): its root is exact
    w = nn.Parameter(device(np.ones(4), dtype))
    opt = optim.FlatAdam([w], lr=1e-3, betas=(0.0, 0.0))
    w.grad = device(np.array([-tiny, -tiny / 2, root, root / 2], dtype), dtype)
    opt.step()
    assert host(opt.m).tolist() == [-tiny, 0.0, root, root / 2]
    assert host(opt.v).tolist() == [0.0, 0.0, tiny, 0.0]


@pytest.mark.parametrize("optimizer", [optim.SGD, *ADAMS])
def test_an_empty_parameter_list_is_refused_with_the_whole_message(optimizer):
    # A model without parameters (or a generator already used up) would otherwise train nothing silently.
    with pytest.raises(ValueError, match=r"^optimizer got an empty parameter list$"):
        optimizer([])


def test_flat_adam_names_the_mixed_dtypes_it_refuses():
    # The message lists the dtypes it found, sorted, so the one parameter left in float64 is easy to spot.
    a = nn.Parameter(device(np.zeros(2)))
    b = nn.Parameter(device(np.zeros(2), np.float32))
    a.grad, b.grad = device(np.ones(2)), device(np.ones(2), np.float32)
    message = "FlatAdam needs parameters of one dtype, got ['float32', 'float64']"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optim.FlatAdam([a, b]).step()


def _continue_in(dtype, params, opt, grads):
    """``_continue`` with gradients of ``dtype``, as backward gives float32 parameters."""
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else device(g, dtype)
        opt.step()
    return opt


def test_a_float32_flat_adam_keeps_a_loaded_state_in_float32():
    # A float64 state loaded for float32 parameters (resuming a float32 run): m, v and the flat
    # parameters must all be float32 after the next steps; a float64 moment doubles the memory of
    # the state and turns every update into float64 arithmetic.
    params64 = random_parameters(40)
    saved = run_adam(params64, random_grads(41, params64, steps=2)).state_dict()
    params = [nn.Parameter(device(host(p), np.float32)) for p in params64]
    opt = optim.FlatAdam(params, lr=1e-2)
    opt.load_state_dict(saved)
    _continue_in(np.float32, params, opt, random_grads(42, params, steps=2, missing={(1, 1)}))
    assert {str(a.dtype) for a in (opt.m, opt.v, opt.theta, *(p.data for p in params))} == {"float32"}


def test_a_float32_step_with_a_gradient_less_parameter_computes_in_float32():
    # The flat gradient of float32 parameters is float32 also where a parameter has no gradient (its
    # block of zeros): a float64 block would promote the whole model-sized gradient to float64. With
    # betas (0, 0) one step sets m = g and v = g * g, g = grad + weight_decay * theta, so float32
    # arithmetic shows bit for bit (float64 squares round differently from float32 ones).
    rng = np.random.default_rng(43)
    w = nn.Parameter(device(rng.normal(size=64), np.float32))
    unused = nn.Parameter(device(np.ones(3), np.float32))
    opt = optim.FlatAdam([w, unused], lr=1e-2, betas=(0.0, 0.0), weight_decay=0.1)
    grad, theta = rng.normal(size=64).astype(np.float32), host(w).copy()
    w.grad = device(grad, np.float32)
    opt.step()
    g = grad + 0.1 * theta  # float32 arithmetic, as the optimizer's (a Python float does not promote)
    assert g.dtype == np.float32
    assert np.array_equal(host(opt.m), np.concatenate([g, np.zeros(3, np.float32)]))
    assert np.array_equal(host(opt.v), np.concatenate([g * g, np.zeros(3, np.float32)]))
    assert np.array_equal(host(unused), np.ones(3))


@pytest.mark.skipif(not on_cupy(), reason="needs CuPy as the default backend, to have parameters off it (NumPy)")
def test_flat_adam_refuses_parameters_moved_between_numpy_and_cupy_with_the_whole_message():
    # Its m and v stay where its first step made them; parameters moved since cannot share an array with them.
    w = nn.Parameter(np.ones(3))
    opt = optim.FlatAdam([w], lr=1e-2)
    w.grad = np.ones(3)
    opt.step()
    w.data, w.grad = device(host(w)), device(np.ones(3))
    message = "the parameters moved between NumPy and CuPy after FlatAdam was made; make a new optimizer"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        opt.step()


@pytest.mark.skipif(not on_cupy(), reason="needs CuPy as the default backend, to have parameters off it (NumPy)")
@pytest.mark.parametrize("loader", ADAMS)
def test_a_state_loads_onto_the_parameters_backend_not_the_default_one(loader):
    # A NumPy model while CuPy is the default: the loaded m and v go to NumPy, with the parameters
    # (on the default backend the next step would mix NumPy and CuPy), and it continues exactly.
    rng = np.random.default_rng(44)
    params = [nn.Parameter(rng.normal(size=shape)) for shape in ((3, 2), (4,))]
    grads = [[rng.normal(size=p.shape) for p in params] for _ in range(4)]
    opt = loader(params, lr=1e-2)
    for step_grads in grads[:2]:
        for p, g in zip(params, step_grads):
            p.grad = g
        opt.step()
    copies = [nn.Parameter(p.data.copy()) for p in params]
    resumed = loader(copies, lr=1e-2)
    resumed.load_state_dict(opt.state_dict())
    for step_grads in grads[2:]:
        for p, q, g in zip(params, copies, step_grads):
            p.grad, q.grad = g, g.copy()
        opt.step()
        resumed.step()
    assert all(type(q.data) is np.ndarray and np.array_equal(q.data, p.data) for p, q in zip(params, copies))
    assert type(resumed.state_dict()["m"]) is np.ndarray
