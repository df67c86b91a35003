"""Ctrl-C and resuming: ``fit`` stops after a complete step on the first SIGINT, aborts on the
second, and a run interrupted at any step and resumed ends where an uninterrupted run ends.

The interrupts are real: a hook in the model's loss sends SIGINT to this very process
(``os.kill(os.getpid(), SIGINT)``), and Python runs fit's handler a few bytecodes later, in
the middle of the step, as it would for a Ctrl-C at the keyboard.
"""

import os
import signal
import threading

import numpy as np
import pytest
from helpers import host

from minflow import data, models, optim, train

STEPS = 40  # 500 points in batches of 64: 7 batches an epoch, so 40 steps cross 5 epoch boundaries


@pytest.fixture(scope="module")
def moons():
    return data.toy_data("moons", n_train=500, n_val=100, n_test=10, seed=0)


def _model():
    return models.realnvp(2, layers=2, hidden=8, seed=0)


def _interrupt_at(model, calls_to_signal, signals=1):
    """Make the model's loss send ``signals`` SIGINTs to this process during call number ``calls_to_signal``."""
    nll, calls = model.nll, {"n": 0}

    def hooked(batch):
        calls["n"] += 1
        if calls["n"] == calls_to_signal:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
        return nll(batch)

    model.nll = hooked


def _options(moons, optimizer):
    options = {
        "batch_size": 64,
        "lr": 1e-2,
        "schedule": "cosine",
        "val_data": moons.val,
        "val_every": 6,
        "seed": 3,
        "progress": False,
    }
    return options, (lambda model: optimizer(model.parameters())) if optimizer else (lambda model: None)


def _run(moons, steps, optimizer=None, resume=None, interrupt_at=None):
    model = _model()
    if interrupt_at is not None:
        _interrupt_at(model, interrupt_at)
    options, make_optimizer = _options(moons, optimizer)
    try:
        history = train.fit(model, moons.train, steps=steps, optimizer=make_optimizer(model), resume=resume, **options)
    except train.TrainingInterrupted as error:
        return model, error.history, error.state
    return model, history, history["state"]


def _max_difference(a, b):
    return max(float(np.abs(host(p.data) - host(q.data)).max()) for p, q in zip(a.parameters(), b.parameters()))


def test_the_first_ctrl_c_finishes_the_step_then_stops(moons):
    before = signal.getsignal(signal.SIGINT)
    model = _model()
    _interrupt_at(model, 5)
    with pytest.raises(train.TrainingInterrupted, match="interrupted at step 5 of 40") as error:
        train.fit(model, moons.train, steps=STEPS, batch_size=64, progress=False)
    history, state = error.value.history, error.value.state
    assert history["interrupted"] is True and history["stopped"] == "interrupted at step 5"
    assert history["step"] == [1, 2, 3, 4, 5] and state.step == 5 and history["state"] is state
    # Step 5's update was made: the model holds the state's last parameters (no validation data).
    for name, p in model.named_parameters():
        assert np.array_equal(host(p.data), host(state.parameters[name])), name
    assert signal.getsignal(signal.SIGINT) is before, "fit restores the previous SIGINT handler"


def test_the_second_ctrl_c_aborts_at_once(moons):
    before = signal.getsignal(signal.SIGINT)
    model = _model()
    _interrupt_at(model, 5, signals=2)
    with pytest.raises(KeyboardInterrupt) as error:
        train.fit(model, moons.train, steps=STEPS, batch_size=64, progress=False)
    assert type(error.value) is KeyboardInterrupt, "an abort, not a clean stop"
    assert signal.getsignal(signal.SIGINT) is before


def test_an_interrupted_fit_restores_the_best_parameters_and_keeps_the_last_in_its_state(moons):
    model, history, state = _run(moons, STEPS, interrupt_at=32)
    assert history["interrupted"] and state.step == 32 and history["best_step"] in history["val_step"]
    assert state.best_parameters is not None
    for name, p in model.named_parameters():
        assert np.array_equal(host(p.data), host(state.best_parameters[name])), name
    assert any(
        not np.array_equal(host(state.parameters[n]), host(state.best_parameters[n]))
        for n, _ in model.named_parameters()
    )


def test_outside_the_main_thread_a_keyboard_interrupt_stops_cleanly(moons):
    model, caught = _model(), {}
    nll, calls = model.nll, {"n": 0}

    def hooked(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return nll(batch)

    model.nll = hooked

    def target():
        try:
            train.fit(model, moons.train, steps=STEPS, batch_size=64, progress=False)
        except train.TrainingInterrupted as error:
            caught["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert caught["error"].history["stopped"] == "interrupted at step 3" and caught["error"].state.step == 3


@pytest.mark.parametrize("optimizer", [None, lambda p: optim.SGD(p, lr=1e-2, momentum=0.9)], ids=["adam", "sgd"])
@pytest.mark.parametrize("k", [1, 6, 7, 13, 14, 39])  # mid-epoch, on a validation, at epoch ends, the last step
def test_interrupted_and_resumed_equals_uninterrupted(moons, tmp_path, optimizer, k):
    reference, reference_history, _ = _run(moons, STEPS, optimizer)
    _, interrupted_history, state = _run(moons, STEPS, optimizer, interrupt_at=k)
    assert state.step == k and interrupted_history["interrupted"]
    state.save(tmp_path / "state.npz")  # through the file, as the command line does
    resumed, history, _ = _run(moons, STEPS, optimizer, resume=train.TrainingState.load(tmp_path / "state.npz"))
    difference = _max_difference(reference, resumed)
    assert difference <= 1e-12, f"resumed at step {k}: parameters differ by {difference}"
    for key in ("loss", "lr", "val_nll", "best_val_nll"):
        assert history[key] == pytest.approx(reference_history[key], rel=1e-12, abs=0), key
    for key in ("step", "val_step", "best_step", "stopped", "interrupted"):
        assert history[key] == reference_history[key], key


@pytest.mark.parametrize(
    "first, then", [(None, optim.Adam), (optim.Adam, None)], ids=["flat-then-adam", "adam-then-flat"]
)
def test_a_state_saved_by_one_adam_resumes_in_the_other(moons, tmp_path, first, then):
    # fit's default is FlatAdam; optim.Adam is the same method per parameter, and both save
    # {"type": "Adam", flat m and v}. Interrupted with one and resumed with the other, a run
    # ends where the uninterrupted run ends, to rounding: the two differ by a few ulps a
    # step (tests/test_adam.py), and 40 steps of a small model keep that far below 1e-10.
    reference, _, _ = _run(moons, STEPS, first)
    _, _, state = _run(moons, STEPS, first, interrupt_at=13)
    state.save(tmp_path / "state.npz")
    resumed, history, _ = _run(moons, STEPS, then, resume=train.TrainingState.load(tmp_path / "state.npz"))
    assert history["step"] == list(range(1, STEPS + 1))
    assert _max_difference(reference, resumed) <= 1e-10
    # The check can fail: the same state with its first moment reversed ends far away.
    state.optimizer["m"] = state.optimizer["m"][::-1].copy()
    wrong, _, _ = _run(moons, STEPS, then, resume=state)
    assert _max_difference(reference, wrong) > 1e-6


def test_a_finished_run_can_be_continued_to_more_steps(moons):
    # Resuming a finished run of 20 steps to 40 is 40 steps whose schedule was over 20 first:
    # it differs from a run of 40; continuing to 40 with a constant schedule does not.
    options, _ = _options(moons, None)
    options["schedule"] = "constant"
    first, whole = _model(), _model()
    state = train.fit(first, moons.train, steps=20, **options)["state"]
    history = train.fit(first, moons.train, steps=40, resume=state, **options)
    reference = train.fit(whole, moons.train, steps=40, **options)
    assert history["step"] == list(range(1, 41)) and _max_difference(first, whole) <= 1e-12
    assert history["loss"] == pytest.approx(reference["loss"], rel=1e-12)


def test_resume_refuses_what_cannot_continue_the_run(moons):
    options, _ = _options(moons, None)
    state = train.fit(_model(), moons.train, steps=10, **options)["state"]
    with pytest.raises(ValueError, match="steps=10 is the total number of steps and must be more than the 10"):
        train.fit(_model(), moons.train, steps=10, resume=state, **options)
    for change, message in [
        ({"batch_size": 32}, "batch_size=32, but the state was trained with batch_size=64"),
        ({"seed": 4}, "seed=4, but the state was trained with seed=3"),
    ]:
        with pytest.raises(ValueError, match=message):
            train.fit(_model(), moons.train, steps=20, resume=state, **{**options, **change})
    with pytest.raises(ValueError, match="n_data=400"):
        train.fit(_model(), moons.train[:400], steps=20, resume=state, **options)
    with pytest.raises(ValueError, match="the state does not fit the model"):
        train.fit(models.realnvp(2, layers=3, hidden=8, seed=0), moons.train, steps=20, resume=state, **options)
    density_state = train.fit_to_density(_model(), data.log_density("u1"), steps=2, batch_size=8, progress=False)[
        "state"
    ]
    with pytest.raises(ValueError, match="fit_to_density run, not of fit"):
        train.fit(_model(), moons.train, steps=20, resume=density_state, **options)
    # seed=None takes the state's seed.
    assert train.fit(_model(), moons.train, steps=12, resume=state, **{**options, "seed": None})["step"][-1] == 12


def test_training_state_file_round_trip_and_refusals(moons, tmp_path):
    state = train.fit(_model(), moons.train, steps=10, **_options(moons, None)[0])["state"]
    path = tmp_path / "state.npz"
    state.save(path)
    assert os.listdir(tmp_path) == ["state.npz"]
    loaded = train.TrainingState.load(path)
    assert (loaded.step, loaded.steps, loaded.seed, loaded.batch_size, loaded.n_data) == (10, 10, 3, 64, 500)
    assert (loaded.epoch, loaded.position) == (1, 3 * 64)  # 7 batches an epoch: step 11 is the 4th of epoch 1
    assert loaded.history["loss"] == state.history["loss"] and loaded.optimizer["t"] == 10
    with np.load(path) as archive:
        assert int(archive["__minflow_training_state__"]) == 1 and not any(a.dtype == object for a in archive.values())

    model_path = tmp_path / "model.npz"
    _model().save(model_path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:1000])
    newer = tmp_path / "newer.npz"
    arrays = dict(np.load(path))
    np.savez(newer, **{**arrays, "__minflow_training_state__": np.asarray(2)})
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __minflow_training_state__=np.asarray(1), meta=np.array([{"a": 1}], dtype=object))
    cases = [
        (tmp_path / "missing.npz", "No such file"),
        (garbage, "not an .npz archive"),
        (truncated, "truncated or corrupt"),
        (model_path, "it is a model checkpoint .*, not a training state"),
        (newer, "format version 2, and this minflow reads version 1 only"),
        (pickled, "holds Python objects, which minflow does not load"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            train.TrainingState.load(bad)
        text = str(error.value)
        assert "\n" not in text and "allow_pickle" not in text and str(bad.name) in text, text


@pytest.mark.parametrize("k", [3, 12, 22])  # before the best validation, after it, after the last bad one but one
def test_resume_keeps_the_validation_bookkeeping(moons, k):
    # Validating on another dataset makes the best validation an early one (step 5) and
    # stops early at step 25: the resumed run must restore the same best parameters and stop
    # at the same step, so it needs the best value, best parameters and bad-validation count.
    other = data.toy_data("circles", n_train=200, n_val=10, n_test=10, seed=0).train
    options = {
        "batch_size": 64,
        "lr": 1e-2,
        "val_data": other,
        "val_every": 5,
        "patience": 4,
        "seed": 3,
        "progress": False,
    }
    reference = _model()
    reference_history = train.fit(reference, moons.train, steps=120, **options)
    assert reference_history["best_step"] == 5 and reference_history["stopped"].startswith("early stopping at step 25")
    model = _model()
    _interrupt_at(model, k)
    with pytest.raises(train.TrainingInterrupted) as error:
        train.fit(model, moons.train, steps=120, **options)
    resumed = _model()
    history = train.fit(resumed, moons.train, steps=120, resume=error.value.state, **options)
    assert _max_difference(reference, resumed) <= 1e-12
    assert (history["best_step"], history["stopped"]) == (5, reference_history["stopped"])
