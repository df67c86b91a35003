"""What minflow.train says: its error messages, the keys of its histories, and its progress bar.

A message is the only thing a user sees of a refused call, so each is pinned whole (``^...$``): a test
that matched a fragment would let the rest of the message drift. Mutation testing (tests/MUTATION.md,
"train": the text of a message, how the progress bar looks) found these unpinned; the mutants each
test kills are named in its comment.
"""

import errno
import math
import os
import re

import numpy as np
import pytest
from helpers import device

from minflow import NormalizingFlow, backend, data, models, train
from minflow.flows.linear import Reverse

QUICK = {"steps": 2, "batch_size": 8, "progress": False}
SHAPE = " must be a non-empty array of shape (N, ...), got "
NON_FINITE = (
    "{name} has {bad} of {n} rows with NaN or infinite values; "
    "remove or repair them {when} (e.g. keep x[numpy.isfinite(x).all(axis=1)])"
)
# Every key of a history, from the first step on (the returned one adds "state").
HISTORY_KEYS = {
    "step",
    "loss",
    "lr",
    "val_step",
    "val_nll",
    "best_step",
    "best_val_nll",
    "stopped",
    "interrupted",
    "wall_time",
}


def _exactly(message):
    """A ``match`` pattern for the whole of ``message``, taken literally."""
    return f"^{re.escape(message)}$"


def _model():
    return models.realnvp(2, layers=1, hidden=4, seed=0)


def _rows(n=16, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 2))


def _with_nan_rows(rows, indices):
    bad = rows.copy()
    bad[indices, 0] = np.nan
    return bad


# --- refused options and inputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("steps", 0, "steps must be a positive int, got 0"),
        ("batch_size", 2.0, "batch_size must be a positive int, got 2.0"),
        ("val_every", -1, "val_every must be a positive int, got -1"),
        ("lr", 0, "lr must be positive, got 0"),
        ("patience", 0, "patience must be a positive int or None, got 0"),
    ],
)
def test_fit_names_the_option_it_refuses(option, value, message):
    # _check_options mutants 1, 3, 5, 6: the message names the option given, not another one.
    with pytest.raises(ValueError, match=_exactly(message)):
        train.fit(_model(), _rows(), **{**QUICK, option: value})


@pytest.mark.parametrize(
    "call, message",
    [
        pytest.param(lambda m: train.fit(m, device(np.zeros(3)), **QUICK), "data" + SHAPE + "(3,)", id="fit-1d"),
        pytest.param(lambda m: train.fit(m, [[0.0, 1.0]], **QUICK), "data" + SHAPE + "<class 'list'>", id="fit-list"),
        pytest.param(
            lambda m: train.fit(m, _rows(), val_data=device(np.zeros(3)), **QUICK),
            "val_data" + SHAPE + "(3,)",
            id="fit-val-1d",
        ),
        pytest.param(
            lambda m: train.fit(m, _rows(), val_data=device(np.zeros((0, 2))), **QUICK),
            "val_data" + SHAPE + "(0, 2)",
            id="fit-val-empty",
        ),
        pytest.param(lambda m: train.log_probs(m, device(np.zeros(3))), "data" + SHAPE + "(3,)", id="log_probs-1d"),
        pytest.param(lambda m: train.evaluate_nll(m, (1.0, 2.0)), "data" + SHAPE + "<class 'tuple'>", id="nll-tuple"),
    ],
)
def test_data_of_the_wrong_shape_is_refused_naming_the_argument_and_what_it_got(call, message):
    # _on_device mutants 15, 17, 20-23 (the shape, or the type of a non-array), _chunked_log_probs mutants 4, 8, 9
    # and fit mutants 34, 38, 39 (the argument's name: "data" or "val_data").
    with pytest.raises(ValueError, match=_exactly(message)):
        call(_model())


def test_a_model_without_parameters_is_refused_naming_its_class():
    # _check_trainable mutant 3: the message names the model's class, the first clue to what was passed.
    model = NormalizingFlow(Reverse(2))
    message = "the model (NormalizingFlow) has no parameters: nothing to train"
    with pytest.raises(ValueError, match=_exactly(message)):
        train.fit(model, _rows(), **QUICK)
    with pytest.raises(ValueError, match=_exactly(message)):
        train.fit_to_density(model, data.log_density("u1"), **QUICK)


def test_non_finite_data_is_refused_naming_the_argument_the_rows_and_the_caller():
    # _non_finite_message mutants 1, 2 ("before training"), _chunked_log_probs mutants 20, 24, 29, 30 ("first"),
    # log_probs mutants 6, 11, 12 and evaluate_nll mutants 6, 11, 12 (the caller's name leads the message).
    rows = _rows()
    bad = _with_nan_rows(rows, [2, 5])
    with pytest.raises(
        train.NonFiniteLossError, match=_exactly(NON_FINITE.format(name="data", bad=2, n=16, when="before training"))
    ) as error:
        train.fit(_model(), bad, **QUICK)
    # The refusal happens before the first step: its history is a new one, with every key.
    assert set(error.value.history) == HISTORY_KEYS and error.value.history["interrupted"] is False
    with pytest.raises(
        train.NonFiniteLossError, match=_exactly(NON_FINITE.format(name="val_data", bad=1, n=8, when="before training"))
    ):
        train.fit(_model(), rows, val_data=_with_nan_rows(rows[:8], [0]), **QUICK)
    for caller, function in (("log_probs", train.log_probs), ("evaluate_nll", train.evaluate_nll)):
        message = f"{caller}: " + NON_FINITE.format(name="data", bad=2, n=16, when="first")
        with pytest.raises(ValueError, match=_exactly(message)):
            function(_model(), bad)


def _nan_at_call(poison_at):
    """U1's log-density, except that call number ``poison_at`` returns NaN everywhere."""
    calls = {"n": 0}
    target = data.log_density("u1")

    def log_density(x):
        calls["n"] += 1
        value = target(x)
        return value * math.nan if calls["n"] == poison_at else value

    return log_density


def test_a_diverging_step_says_where_it_stopped_and_what_to_try():
    # _train_loop mutants 76, 77 (history["stopped"]) and 91, 92, 93 (the advice at the end of the message).
    with pytest.raises(
        train.NonFiniteLossError,
        match=_exactly(
            "training stopped at step 3: the loss was nan or a gradient was not finite; the parameters of the "
            "previous step are kept (try a smaller lr, or clip the gradients with clip=...)"
        ),
    ) as error:
        train.fit_to_density(_model(), _nan_at_call(3), steps=5, batch_size=8, progress=False)
    history = error.value.history
    assert set(history) == HISTORY_KEYS and history["stopped"] == "non-finite loss or gradient at step 3"


def test_resume_refusals_say_what_does_not_match():
    # _check_resume mutants 2-6: a resume that is not a TrainingState is named by its type, with where to get one.
    options = {"batch_size": 8, "progress": False}
    state = train.fit(_model(), _rows(), steps=2, **options)["state"]
    density_state = train.fit_to_density(_model(), data.log_density("u1"), steps=1, batch_size=8, progress=False)[
        "state"
    ]
    cases = [
        (
            {"steps": 4, "resume": "runs/moons/training_state.npz"},
            "resume must be a TrainingState (history['state'] or TrainingState.load(path)), got str",
        ),
        ({"steps": 4, "resume": density_state}, "resume: the state is of a fit_to_density run, not of fit"),
        (
            {"steps": 2, "resume": state},
            "resume: steps=2 is the total number of steps and must be more than the 2 the state has done already",
        ),
        (
            {"steps": 4, "resume": state, "batch_size": 4},
            "resume: batch_size=4, but the state was trained with batch_size=8; the same data order needs the same "
            "batch_size",
        ),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=_exactly(message)):
            train.fit(_model(), _rows(), **{**options, **change})


# --- TrainingState.load ---------------------------------------------------------------------------


def test_training_state_load_says_what_the_file_is_instead(tmp_path):
    # TrainingState.load mutants 5 (the OS's reason, not the exception's repr), 9, 11, 14, 15 (what the file is),
    # 19, 24, 25 (the format check names a training state) and 68, 69, 71 (an incomplete file names the error).
    model_checkpoint, foreign, newer, incomplete = (
        tmp_path / name for name in ("model.npz", "foreign.npz", "newer.npz", "incomplete.npz")
    )
    _model().save(model_checkpoint)
    np.savez(foreign, weights=np.zeros(3))
    np.savez(newer, __minflow_training_state__=np.asarray(2))
    np.savez(incomplete, __minflow_training_state__=np.asarray(1))  # no "meta"
    missing = tmp_path / "missing.npz"
    cases = [
        (missing, f"could not read training state {str(missing)!r}: {os.strerror(errno.ENOENT)}"),
        (model_checkpoint, "it is a model checkpoint (Module.save), not a training state"),
        (foreign, "it is not a minflow file, not a training state"),
        (
            newer,
            "it is a minflow training state of format version 2, and this minflow reads version 1 only "
            "(it was written by a newer minflow)",
        ),
        (incomplete, "it is incomplete or corrupt (KeyError: 'meta')"),
    ]
    for path, reason in cases:
        message = reason if path is missing else f"training state {str(path)!r}: {reason}"
        with pytest.raises(ValueError, match=_exactly(message)):
            train.TrainingState.load(path)


# --- histories ------------------------------------------------------------------------------------


def test_the_returned_history_has_exactly_the_documented_keys():
    # _new_history mutants 13, 14, 17, 18 and _train_loop mutants 210, 211: a misspelt key would leave the
    # documented one missing (a KeyError in the user's script) and add another. Without validation data
    # best_val_nll stays None: only the new history puts it there.
    history = train.fit(_model(), _rows(), **QUICK)
    assert set(history) == HISTORY_KEYS | {"state"}
    assert set(history["state"].history) == HISTORY_KEYS
    assert history["best_val_nll"] is None and history["interrupted"] is False
    density_history = train.fit_to_density(_model(), data.log_density("u1"), **QUICK)
    assert set(density_history) == HISTORY_KEYS | {"state"}


def test_a_state_never_carries_a_state_in_its_history(tmp_path):
    # _copy_history mutants 5, 6: the history fit returns holds its "state"; a TrainingState given that history
    # by hand must not pass the old state on into the next run's state (a state inside a state's history could
    # not be saved: it is no JSON).
    first = train.fit(_model(), _rows(), **QUICK)
    state = first["state"]
    state.history = first  # the returned history, "state" and all
    resumed = train.fit(_model(), _rows(), **{**QUICK, "steps": 3}, resume=state)
    assert "state" not in resumed["state"].history
    resumed["state"].save(tmp_path / "state.npz")


def test_fit_takes_its_data_seed_from_a_generator():
    # _data_seed mutants 8, 9: a Generator is recognised by its standard_normal method and gives one number;
    # without that check it would be refused as "not a non-negative int".
    history = train.fit(_model(), _rows(), **QUICK, seed=backend.rng(5))
    assert history["state"].seed == int(backend.rng(5).integers(0, 2**63 - 1))


def test_evaluate_splits_of_digits_reports_bits_per_dim_and_the_test_nll():
    # evaluate_splits mutants 16, 17, 20, 21: with "test" among the names, digits splits also get "test_nll"
    # (nats per image in model space). A reversal has log-det 0, so the model is N(0, I) and the NLL is known.
    rows = _rows(8)
    zeros = np.zeros(8)
    splits = data.DigitsSplits(rows, rows[:4], rows[4:], zeros, zeros[:4], zeros[4:], 0.05)
    model = NormalizingFlow(Reverse(2))
    metrics = train.evaluate_splits(model, splits)
    assert set(metrics) == {"train_bpd", "val_bpd", "test_bpd", "test_nll"}
    expected = np.mean(0.5 * (rows[4:] ** 2).sum(1) + math.log(2 * math.pi))
    assert metrics["test_nll"] == pytest.approx(expected, rel=1e-12)  # float64 sums of 4 rows: rounding only
    # Zero preprocessing log-dets: bits per dimension is the NLL over (2 dimensions x ln 2).
    assert metrics["test_bpd"] == pytest.approx(expected / (2 * math.log(2)), rel=1e-12)
    assert set(train.evaluate_splits(model, splits, names=("train",))) == {"train_bpd"}


# --- the progress bar -----------------------------------------------------------------------------
# The bar is part of the contract because a person reads it: it counts every step out of the total (from
# where a resumed run starts, so the remaining time is right), names the loop, shows the mean of the last
# 50 losses (a smoothed loss, updated every 10 steps and at the end, with 4 decimals), follows the
# terminal's width, and with leave=False disappears when the loop ends, so that logs keep one line per run
# rather than a finished bar each.


@pytest.fixture
def bars(monkeypatch):
    """Replace tqdm (train imports ``tqdm.auto.tqdm`` when a bar is needed) with a recorder; returns the bars made."""
    import tqdm.auto

    made = []

    class RecordingBar:
        def __init__(self, **options):
            self.options, self.updates, self.postfixes, self.closed = options, [], [], False
            made.append(self)

        def update(self, n):
            self.updates.append(n)

        def set_postfix(self, **values):
            self.postfixes.append((len(self.updates), values))  # how many steps this bar had counted then

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    return made


def _shown_loss(losses):
    """The loss the bar shows after ``losses``: the mean of the last 50, with 4 decimals."""
    window = losses[-50:]
    return f"{sum(window) / len(window):.4f}"


def test_fit_progress_bar_counts_every_step_and_shows_the_recent_mean_loss(bars):
    # _progress mutants 3, 4, 6-9, 11-14 (the bar's options), _train_loop mutants 97-100, 104 (the bar is made,
    # with the total and the name), 156, 157 (one update per step), 158-163 (a postfix every 10 steps and at the
    # last), 164-169 (the mean loss it shows) and fit mutants 181, 182 (the name "fit").
    history = train.fit(_model(), _rows(), steps=25, batch_size=8)
    (bar,) = bars
    assert bar.options == {"total": 25, "initial": 0, "desc": "fit", "dynamic_ncols": True, "leave": False}
    assert bar.updates == [1] * 25 and bar.closed
    losses = history["loss"]
    assert bar.postfixes == [(k, {"loss": _shown_loss(losses[:k])}) for k in (10, 20, 25)]


def test_resumed_fit_progress_bar_starts_at_the_steps_already_done(bars):
    # _train_loop mutants 101, 105 (initial: the steps done) and 170 (the window is the last 50 losses, which
    # only shows once there are more than 50: the resumed history continues the first run's 45).
    state = train.fit(_model(), _rows(), steps=45, batch_size=8, progress=False)["state"]
    history = train.fit(_model(), _rows(), steps=57, batch_size=8, resume=state)
    (bar,) = bars
    assert bar.options == {"total": 57, "initial": 45, "desc": "fit", "dynamic_ncols": True, "leave": False}
    assert bar.updates == [1] * 12 and bar.closed
    losses = history["loss"]
    assert len(losses) == 57
    assert bar.postfixes == [(k - 45, {"loss": _shown_loss(losses[:k])}) for k in (50, 57)]


def test_fit_to_density_progress_bar_is_named_after_it(bars):
    # fit_to_density mutants 69, 70: the bar says which loop runs.
    history = train.fit_to_density(_model(), data.log_density("u1"), steps=3, batch_size=8)
    (bar,) = bars
    assert bar.options == {"total": 3, "initial": 0, "desc": "fit_to_density", "dynamic_ncols": True, "leave": False}
    assert bar.updates == [1] * 3 and bar.postfixes == [(3, {"loss": _shown_loss(history["loss"])})]
