"""Small facts that mutation testing (`make mutation`, tests/MUTATION.md) found no test pinning down:
each test here kills mutants that survived the rest of the suite. The mutants are named in the comments
(mutmut's names, module.function__mutmut_N), so a later run can check that they stay dead.
"""

import signal
import time

import numpy as np
import pytest
from helpers import assert_close, device, host

from minflow import backend, data, models, nn, optim, train

# --- optim: SGD -----------------------------------------------------------------------------


def _parameter(values):
    return nn.Parameter(device(np.asarray(values, dtype=float)))


def test_sgd_defaults_are_plain_gradient_descent_at_lr_one_hundredth():
    # SGD.__init__ mutants 1, 2 (lr=1e-2, momentum=0.0). With momentum 0 two equal gradients move w by
    # 2 lr g; a momentum of 1 would make the second step twice as long.
    w, g = _parameter([0.0, 0.0, 0.0]), np.array([1.0, -2.0, 3.0])
    opt = optim.SGD([w])
    for _ in range(2):
        w.grad = device(g)
        opt.step()
    assert_close(w, -2 * 1e-2 * g, rtol=1e-15)  # two float64 products and a sum: exact to an ulp


def test_sgd_momentum_carries_the_previous_velocity():
    # SGD.step mutant 6 (velocity ignored): v2 = momentum v1 + g2, w = -lr (v1 + v2).
    w = _parameter([0.0, 0.0])
    g1, g2 = np.array([1.0, 2.0]), np.array([-3.0, 0.5])
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    for g in (g1, g2):
        w.grad = device(g)
        opt.step()
    assert_close(w, -0.1 * g1 - 0.1 * (0.9 * g1 + g2), rtol=1e-14)  # a few float64 roundings


def test_sgd_steps_the_parameters_after_one_without_a_gradient():
    # SGD.step mutant 3 (`continue` -> `break`): a gradient-less parameter must not end the step.
    unused, used = _parameter([1.0]), _parameter([1.0])
    used.grad = device([1.0])
    optim.SGD([unused, used], lr=0.5).step()
    assert host(unused).tolist() == [1.0] and host(used).tolist() == [0.5]


# --- optim: Adam's state --------------------------------------------------------------------


def _adam_after_one_step():
    w = _parameter([1.0, 2.0, 3.0])
    opt = optim.Adam([w], lr=0.1)
    w.grad = device([1.0, 1.0, 1.0])
    opt.step()
    return w, opt


def test_adam_refuses_a_state_with_steps_but_no_moments():
    # Adam.load_state_dict mutants 64, 69, 71-78: after one step (t = 1) the moments are required.
    w, opt = _adam_after_one_step()
    state = {k: v for k, v in opt.state_dict().items() if k not in ("m", "v")}
    with pytest.raises(ValueError, match="^Adam state has step count 1 but no moments$"):
        optim.Adam([w]).load_state_dict(state)


def test_adam_refuses_a_negative_step_count():
    # Adam.load_state_dict mutants 73, 77, 78: the message says the state has its moments.
    w, opt = _adam_after_one_step()
    with pytest.raises(ValueError, match="^Adam state has step count -1 but its moments$"):
        optim.Adam([w]).load_state_dict({**opt.state_dict(), "t": -1})


def test_adam_refuses_a_state_with_only_one_moment():
    # Adam.load_state_dict mutants 31-34 (the message).
    w, opt = _adam_after_one_step()
    state = {k: v for k, v in opt.state_dict().items() if k != "v"}
    with pytest.raises(ValueError, match="^Adam state has only one of its moments m and v$"):
        optim.Adam([w]).load_state_dict(state)


def test_adam_refuses_a_state_without_a_hyperparameter():
    # Optimizer._check_state mutants 12, 14: the list of what is missing.
    w, opt = _adam_after_one_step()
    state = {k: v for k, v in opt.state_dict().items() if k != "eps"}
    with pytest.raises(ValueError, match=r"^Adam state is missing \['eps'\]$"):
        optim.Adam([w]).load_state_dict(state)


def test_adam_refuses_moments_that_are_not_arrays():
    # Optimizer._state_array mutants 7, 10, 13, 16 (the message names the optimizer and says '?' entries).
    w, opt = _adam_after_one_step()
    state = {**opt.state_dict(), "m": [0.0, 0.0, 0.0]}
    with pytest.raises(ValueError, match=r"^Adam state 'm' has \? entries, the parameters have 3$"):
        optim.Adam([w]).load_state_dict(state)


def test_adam_state_is_loaded_in_the_parameters_dtype():
    # Optimizer._state_array mutants 19, 22: a float64 state resumes float32 parameters in float32.
    _, opt = _adam_after_one_step()
    w32 = nn.Parameter(device([1.0, 2.0, 3.0], dtype="float32"))
    resumed = optim.Adam([w32])
    resumed.load_state_dict(opt.state_dict())
    assert resumed.m[0].dtype == np.float32 and resumed.v[0].dtype == np.float32


# --- optim: clip_grad_norm ------------------------------------------------------------------


def test_clip_grad_norm_without_gradients_returns_zero():
    # clip_grad_norm mutant 4 (`return 0.0` -> `return 1.0`).
    assert optim.clip_grad_norm([_parameter([1.0])], 1.0) == 0.0


def test_clip_grad_norm_leaves_a_small_gradient_alone():
    # clip_grad_norm mutant 24 (min(1, ...) -> min(2, ...)): a norm below max_norm is never scaled up.
    w = _parameter([0.0, 0.0])
    w.grad = device([0.3, 0.4])
    optim.clip_grad_norm([w], 1.0)
    assert_close(w.grad, [0.3, 0.4], rtol=1e-12)  # 0.5 / (0.5 + 1e-12) is 1 - 2e-12


def test_clip_grad_norm_bounds_even_a_tiny_gradient():
    # clip_grad_norm mutant 26 (|g| + 1e-12 -> |g| - 1e-12): the guard against 0 / 0 must only shrink the scale.
    # |g| = 3e-12, max_norm = 1e-12: the scale is 1e-12 / 4e-12 and the clipped norm 0.75e-12 <= max_norm.
    w = _parameter([3e-12])
    w.grad = device([3e-12])
    optim.clip_grad_norm([w], 1e-12)
    assert float(np.abs(host(w.grad)).max()) <= 1e-12


# --- train ----------------------------------------------------------------------------------


def test_evaluate_bits_per_dim_divides_by_the_dimension_of_a_row():
    # evaluate_bits_per_dim mutants 7, 16: dim is the size of one row (4 here), not the digits' default 64.
    model = models.realnvp(4, layers=1, hidden=8, seed=0)
    rows = np.random.default_rng(0).normal(size=(50, 4))
    log_det = device(np.full(50, 0.25))
    expected = data.bits_per_dim(train.log_probs(model, rows), log_det, dim=4)
    assert train.evaluate_bits_per_dim(model, rows, log_det) == pytest.approx(expected, rel=1e-12)


def test_training_state_round_trip_keeps_the_best_parameters(tmp_path):
    # TrainingState.save mutants 12, 20, 22 and TrainingState.load mutants 54, 63: the best parameters (and a
    # NumPy float in the JSON part, written through json.dumps(default=float)) survive save and load.
    state = train.TrainingState(
        objective="fit",
        step=3,
        steps=10,
        parameters={"w": np.array([1.0, 2.0])},
        optimizer={"type": "SGD", "lr": 0.1, "momentum": 0.0},
        seed=0,
        batch_size=2,
        n_data=8,
        best_val_nll=np.float32(1.5),
        best_step=2,
        bad_validations=1,
        best_parameters={"w": np.array([0.5, 0.25])},
        history={"loss": [3.0, 2.0, 1.0]},
    )
    state.save(tmp_path / "state.npz")
    loaded = train.TrainingState.load(tmp_path / "state.npz")
    assert loaded.best_val_nll == 1.5 and loaded.step == 3
    assert set(loaded.best_parameters) == {"w"} and host(loaded.best_parameters["w"]).tolist() == [0.5, 0.25]
    state.best_parameters = None
    state.save(tmp_path / "no_best.npz")
    assert train.TrainingState.load(tmp_path / "no_best.npz").best_parameters is None


def _fit_twice(seed_for_run):
    """The parameters after two steps of fit, for two runs whose seeds come from ``seed_for_run()``."""
    rows = np.random.default_rng(1).normal(size=(32, 2))
    results = []
    for _ in range(2):
        model = models.realnvp(2, layers=1, hidden=4, seed=0)
        history = train.fit(model, rows, steps=2, batch_size=8, seed=seed_for_run(), progress=False)
        results.append((np.concatenate([host(p).ravel() for p in model.parameters()]), history["state"].seed))
    return results


def test_fit_takes_a_generator_as_its_seed_and_is_reproducible_with_it():
    # _data_seed mutants 4, 10-12, 14, 15, 17, 20, 22, 23 (the Generator branch, which no other test reaches).
    (first, seed_1), (second, seed_2) = _fit_twice(lambda: backend.rng(7))  # a Generator of the default backend
    assert seed_1 == seed_2 and 0 <= seed_1 < 2**63
    np.testing.assert_array_equal(first, second)


def test_fit_draws_a_fresh_seed_for_seed_none():
    # _data_seed mutant 2 (randbits(None)): seed=None draws a non-negative int.
    (_, seed_1), (_, seed_2) = _fit_twice(lambda: None)
    assert isinstance(seed_1, int) and seed_1 >= 0 and seed_1 != seed_2  # equal with probability 2**-63


def test_fit_refuses_a_seed_that_is_not_an_int():
    # _data_seed mutants 28, 29, 33: a float seed is refused with a ValueError that says what a seed may be.
    model = models.realnvp(2, layers=1, hidden=4, seed=0)
    # The message names the value received (it once said "got -1" for every refused seed).
    for seed, shown in ((1.5, "1.5"), (-3, "-3"), ("7", "'7'")):
        with pytest.raises(
            ValueError, match=f"^seed must be a non-negative int, None or a random Generator, got {shown}$"
        ):
            train.fit(model, np.zeros((8, 2)), steps=1, batch_size=4, seed=seed, progress=False)


def _tiny_fit(**options):
    model = models.realnvp(2, layers=1, hidden=4, seed=0)
    rows = np.random.default_rng(1).normal(size=(16, 2))
    return train.fit(model, rows, steps=2, batch_size=8, **options)


def test_fit_restores_the_sigint_handler_it_found():
    # _CtrlC.__exit__ mutants 6, 7 and __enter__ mutant 4: after fit, Ctrl-C does what it did before. The test
    # installs Python's handler first: a runner may have left SIGINT ignored, and fit leaves an ignored one alone.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _tiny_fit(progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_fit_shows_its_progress_bar_only_when_asked(capsys):
    # _progress mutants 2, 5, 10 and fit mutants 8, 159, 160: the bar (tqdm, on stderr) is named "fit" and
    # shown by default.
    _tiny_fit(progress=False)
    assert capsys.readouterr().err == ""
    _tiny_fit()
    assert "fit" in capsys.readouterr().err


def test_fit_wall_time_is_the_time_it_took():
    # _new_history mutant 22 and _train_loop mutants 212, 213: 0 <= wall_time <= the time around the call.
    started = time.perf_counter()
    history = _tiny_fit(progress=False)
    assert 0 <= history["wall_time"] <= time.perf_counter() - started


def test_fit_accepts_patience_one_and_refuses_clip_zero():
    # _check_options mutants 19, 26, 27: patience 1 is the smallest valid patience, clip 0 is not a norm bound.
    rows = np.random.default_rng(1).normal(size=(16, 2))
    history = _tiny_fit(progress=False, val_data=rows[:8], val_every=1, patience=1)
    assert history["val_step"][0] == 1
    with pytest.raises(ValueError, match="^clip must be positive or None, got 0$"):
        _tiny_fit(progress=False, clip=0)
