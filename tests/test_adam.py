"""Adam, the per-parameter method, and FlatAdam, its fast path (one flat array, in-place
updates, denormals flushed), against the formula and against each other.

The reference is the textbook update written out per parameter, with nothing shared and
nothing in place, on the host (NumPy). Adam and FlatAdam compute the same float64 numbers
in a slightly different order (FlatAdam: sqrt(v) / sqrt(c2) instead of sqrt(v / c2), lr / c1
folded into one factor), so they agree to a few ulps per step; over 25 steps of a
well-scaled problem, 1e-12 relative.
"""

import numpy as np
import pytest
from helpers import assert_close, device, host

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
