"""The contract of ``minflow.train`` that the mutation run (tests/MUTATION.md, "### train") found unpinned:
what a history and a TrainingState hold, which failures raise what, the documented defaults, the data
order, the dtype and the backend of everything a run makes, and where the data order's seed comes from.

Tiny models keep every test fast: ``NormalizingFlow(ElementwiseAffine(2))`` has a single parameter
array, theta (2, 2), so a step is a handful of array operations.
"""

import inspect
import math
import re
import signal
import types

import numpy as np
import pytest
from helpers import assert_close, device, host

from minflow import backend, data, models, optim, train
from minflow.autodiff import Tensor, ops
from minflow.distributions import StandardNormal
from minflow.flows.base import Sequential
from minflow.flows.elementwise import ElementwiseAffine, Logit


def _affine_model(theta=None):
    """N(0, I) behind one elementwise affine map: a one-parameter model (theta holds shift and log-scale)."""
    model = models.NormalizingFlow(ElementwiseAffine(2))
    if theta is not None:
        model.flow.theta.data = device(theta)
    return model


THETA = [[0.3, -0.2], [-0.1, 0.4]]  # away from the identity, so that different inputs give different numbers


def _rows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2))


def _parameters(model):
    # copies: on NumPy host() returns the array itself, which later steps change in place
    return [host(p.data).copy() for p in model.parameters()]


def _hook_nll(model, on_call):
    """Replace ``model.nll`` by one that calls ``on_call(n, batch, loss)`` on call n and returns what it returns."""
    nll, calls = model.nll, [0]

    def hooked(batch):
        calls[0] += 1
        return on_call(calls[0], batch, nll(batch))

    model.nll = hooked


def _fail_at(call, make):
    """An ``on_call`` for :func:`_hook_nll` that returns ``make(loss)`` (or raises) at call ``call``."""
    return lambda n, batch, loss: make(loss) if n == call else loss


def _interrupt(loss):
    raise KeyboardInterrupt  # as one raised in another thread would arrive: inside a step


def _gaussian_at_three(x):
    """An unnormalised log-density, N((3, 3), I): reverse KL pulls an identity flow hard towards it."""
    shifted = x - 3.0
    return -0.5 * ops.sum(shifted * shifted, axis=1)


# --- the history and the TrainingState ------------------------------------------------------------------
def test_a_returned_history_does_not_grow_when_its_run_is_resumed():
    # A history is a record of what was done: resuming from its state must not append to it.
    model, rows = _affine_model(), _rows(16)
    first = train.fit(model, rows, steps=3, batch_size=8, progress=False)
    state = first["state"]
    train.fit(model, rows, steps=6, batch_size=8, progress=False, resume=state)
    assert first["step"] == [1, 2, 3] and len(first["loss"]) == 3
    assert state.history["step"] == [1, 2, 3], "the state's own history is a copy too"


def test_a_non_finite_step_says_where_it_stopped_and_that_it_was_not_interrupted():
    # The error's history is the record of the failed run: not interrupted, stopped at the step that failed.
    model = _affine_model()
    _hook_nll(model, _fail_at(3, lambda loss: loss * math.nan))
    with pytest.raises(train.NonFiniteLossError) as error:
        train.fit(model, _rows(16), steps=5, batch_size=8, progress=False)
    history = error.value.history
    assert history["interrupted"] is False
    assert history["stopped"] == "non-finite loss or gradient at step 3"
    assert history["step"] == [1, 2] and error.value.state.step == 2


def test_non_finite_data_is_refused_with_a_history_that_was_not_interrupted():
    # Nothing was trained; the history says so, and nothing in it claims an interruption.
    bad = _rows(8)
    bad[2, 1] = np.nan
    with pytest.raises(train.NonFiniteLossError) as error:
        train.fit(_affine_model(), bad, steps=3, batch_size=4, progress=False)
    assert error.value.cause == "data"
    assert error.value.history["interrupted"] is False and error.value.history["step"] == []


def test_a_resumed_interrupted_run_that_then_diverges_is_not_marked_interrupted():
    # Resuming clears the interruption of the state it continues: a later failure is reported as what it is.
    rows = _rows(16)
    model = _affine_model()
    _hook_nll(model, _fail_at(3, _interrupt))
    with pytest.raises(train.TrainingInterrupted) as stopped:
        train.fit(model, rows, steps=6, batch_size=8, progress=False)
    state = stopped.value.state
    assert state.step == 2 and state.history["interrupted"] is True
    resumed = _affine_model()
    _hook_nll(resumed, _fail_at(2, lambda loss: loss * math.nan))  # its second step: step 4 of the run
    with pytest.raises(train.NonFiniteLossError) as error:
        train.fit(resumed, rows, steps=6, batch_size=8, progress=False, resume=state)
    history = error.value.history
    assert history["interrupted"] is False
    assert history["stopped"] == "non-finite loss or gradient at step 4"
    assert history["step"] == [1, 2, 3] and error.value.state.step == 3


def test_a_finite_loss_with_a_non_finite_gradient_stops_the_run():
    # sqrt(0 * theta) is 0, a finite addition to the loss, but its gradient is inf * 0 = NaN: the step must
    # be refused (NonFiniteLossError, cause "step") before it writes NaN into the parameters.
    reference = _affine_model()
    train.fit(reference, _rows(16), steps=2, batch_size=8, progress=False)
    model = _affine_model()
    _hook_nll(model, _fail_at(3, lambda loss: loss + ops.sum(ops.sqrt(model.flow.theta * 0.0))))
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(train.NonFiniteLossError) as error:
            train.fit(model, _rows(16), steps=5, batch_size=8, progress=False)
    assert error.value.cause == "step" and error.value.history["step"] == [1, 2]
    read = re.match(r"^training stopped at step 3: the loss was (\S+) or a gradient was not finite", str(error.value))
    assert read and math.isfinite(float(read.group(1))), "the loss itself was finite: the gradient stopped the run"
    for a, b in zip(_parameters(model), _parameters(reference)):
        np.testing.assert_array_equal(a, b)  # the parameters of the last good step, exactly


def test_fit_trains_a_model_with_a_single_parameter_array():
    # The step's one finiteness read concatenates the gradients: one gradient is a valid list of them.
    model = _affine_model()
    assert len(model.parameters()) == 1
    before = _parameters(model)
    history = train.fit(model, _rows(16) + 2.0, steps=3, batch_size=8, lr=0.1, progress=False)
    assert history["step"] == [1, 2, 3] and all(math.isfinite(v) for v in history["loss"])
    assert not np.array_equal(_parameters(model)[0], before[0])


def test_the_training_state_records_the_validation_bookkeeping():
    # The state carries the best step and NLL itself (not only inside its history); without validation, None.
    rows = _rows(32)
    history = train.fit(
        _affine_model(), rows[:16], steps=4, batch_size=8, val_data=rows[16:], val_every=2, progress=False
    )
    state = history["state"]
    assert history["best_step"] in (2, 4)
    assert state.best_step == history["best_step"] and state.best_val_nll == history["best_val_nll"]
    state = train.fit(_affine_model(), rows, steps=2, batch_size=8, progress=False)["state"]
    assert state.best_step is None and state.best_val_nll is None and state.best_parameters is None


# --- value checks of the layers, inside fit, log_probs and train.step ---------------------------------------
def _logit_model():
    """A model for data in (0, 1): Logit checks that its input lies there (a deferred check in a train step)."""
    return models.NormalizingFlow(Sequential([Logit(), ElementwiseAffine(2)]), base=StandardNormal(2))


def _outside_the_unit_square():
    rows = np.full((8, 2), 0.5)
    rows[3, 0] = 1.5
    return rows


LOGIT_MESSAGE = "^" + re.escape("logit: y must lie in (0.0, 1.0), got values in [0.5, 1.5]") + "$"


def test_fit_raises_the_value_error_of_a_layer_whose_check_fails():
    # The layers' checks wait for the step's one read; they must still be read, and the step refused.
    model = _logit_model()
    before = _parameters(model)
    with pytest.raises(ValueError, match=LOGIT_MESSAGE), np.errstate(invalid="ignore"):  # log1p(-1.5) is NaN
        train.fit(model, _outside_the_unit_square(), steps=2, batch_size=8, progress=False)
    for a, b in zip(_parameters(model), before):
        np.testing.assert_array_equal(a, b)


def test_log_probs_raises_the_value_error_of_a_layer_whose_check_fails():
    # log_probs defers the checks to its one read; a value outside a layer's domain is an error, not a NaN.
    with pytest.raises(ValueError, match=LOGIT_MESSAGE), np.errstate(invalid="ignore"):
        train.log_probs(_logit_model(), _outside_the_unit_square())


def test_train_step_without_check_raises_a_layer_value_error_at_once():
    # Without check= nothing is deferred (who would read it?): the layer raises before any update.
    model = _logit_model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _parameters(model)
    with pytest.raises(ValueError, match=LOGIT_MESSAGE):
        train.step(model, optimizer, device(_outside_the_unit_square()))
    for a, b in zip(_parameters(model), before):
        np.testing.assert_array_equal(a, b)


# --- early stopping -----------------------------------------------------------------------------------------
def test_a_validation_nll_that_stays_infinite_uses_up_patience_one_validation_at_a_time():
    # A point at 1e200 has z^2 = inf: the validation NLL is +inf at every validation, never an improvement.
    # Patience 2 means two validations without improvement: the run stops at the second, not the first.
    val = np.array([[1e200, 0.0]])
    with np.errstate(over="ignore"):
        history = train.fit(
            _affine_model(), _rows(16), steps=5, batch_size=8, val_data=val, val_every=1, patience=2, progress=False
        )
    assert history["val_nll"] == [math.inf, math.inf]
    assert history["stopped"] == "early stopping at step 2: no improvement in 2 validations"
    assert history["best_step"] is None and history["state"].best_val_nll is None


def test_an_exact_tie_in_validation_keeps_the_first_best_step():
    # "Improvement" is strict: an equal validation NLL does not move the best step (nor the snapshot).
    # A schedule of 0 keeps the parameters (and so the validation NLL) exactly as they are.
    rows = _rows(24)
    history = train.fit(
        _affine_model(THETA),
        rows[:16],
        steps=3,
        batch_size=8,
        schedule=lambda step: 0.0,
        val_data=rows[16:],
        val_every=1,
        progress=False,
    )
    assert len(history["val_nll"]) == 3 and len(set(history["val_nll"])) == 1
    assert history["best_step"] == 1 and history["state"].best_step == 1


# --- evaluate_splits ----------------------------------------------------------------------------------------
def test_evaluate_splits_of_toy_data_for_the_train_part_only():
    # Only the parts asked for; the original-units NLL only comes with "test".
    splits = data.toy_data("moons", n_train=64, n_val=16, n_test=16, seed=0)
    model = _affine_model(THETA)
    metrics = train.evaluate_splits(model, splits, names=("train",))
    assert metrics == {"train_nll": pytest.approx(train.evaluate_nll(model, splits.train), rel=1e-12)}
    assert set(metrics) == {"train_nll"}


def _tiny_digits_splits():
    """A DigitsSplits of 2-pixel "images": the metrics only need arrays (N, ...) and log-dets (N,)."""
    rng = np.random.default_rng(4)
    parts = [rng.uniform(-1, 1, size=(n, 2)) for n in (12, 6, 8)]
    log_dets = [rng.uniform(-3, -1, size=len(part)) for part in parts]
    return data.DigitsSplits(*parts, *log_dets, alpha=0.05)


def test_evaluate_splits_of_digits_gives_bits_per_dimension_and_the_test_nll():
    # Digits are reported in bits per dimension of the pixels (with each part's log-det), plus the test NLL.
    splits, model = _tiny_digits_splits(), _affine_model(THETA)
    metrics = train.evaluate_splits(model, splits)
    assert set(metrics) == {"train_bpd", "val_bpd", "test_bpd", "test_nll"}
    for name in ("train", "val", "test"):
        part, log_det = getattr(splits, name), getattr(splits, f"{name}_log_det")
        expected = data.bits_per_dim(train.log_probs(model, part), log_det, dim=2)
        assert metrics[f"{name}_bpd"] == pytest.approx(expected, rel=1e-12), name
    assert metrics["test_nll"] == pytest.approx(train.evaluate_nll(model, splits.test), rel=1e-12)
    assert set(train.evaluate_splits(model, splits, names=("train",))) == {"train_bpd"}
    assert set(train.evaluate_splits(model, splits, names=("test",))) == {"test_bpd", "test_nll"}


# --- what fit accepts as data ---------------------------------------------------------------------------------
def test_fit_accepts_a_tensor_as_data():
    # A Tensor is unwrapped: the same run as with its array.
    rows = _rows(16)
    by_array, by_tensor = _affine_model(), _affine_model()
    train.fit(by_array, device(rows), steps=3, batch_size=8, lr=0.1, progress=False)
    train.fit(by_tensor, Tensor(device(rows)), steps=3, batch_size=8, lr=0.1, progress=False)
    for a, b in zip(_parameters(by_array), _parameters(by_tensor)):
        np.testing.assert_array_equal(a, b)
    assert train.evaluate_nll(by_array, Tensor(device(rows))) == train.evaluate_nll(by_array, device(rows))


@pytest.mark.parametrize(
    "bad, got",
    [(np.zeros(8), "(8,)"), (np.zeros((0, 2)), "(0, 2)"), ([[0.0, 1.0], [1.0, 0.0]], "<class 'list'>")],
    ids=["1-D", "no rows", "a list"],
)
def test_fit_refuses_data_that_is_not_a_non_empty_array_of_rows(bad, got):
    # A 1-D array is not N samples (is it one sample of dimension N, or N of dimension 1?): refused, named.
    message = f"data must be a non-empty array of shape (N, ...), got {got}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        train.fit(_affine_model(), bad, steps=1, batch_size=1, progress=False)


# --- the documented defaults ------------------------------------------------------------------------------
# The docstrings do not repeat the numbers; the signature is where a user reads them (help(train.fit)), and
# the examples and lectures that call fit with few arguments rely on them.
FIT_DEFAULTS = {
    "steps": 1000,
    "batch_size": 512,
    "lr": 1e-3,
    "schedule": "constant",
    "clip": None,
    "val_data": None,
    "val_every": 100,
    "patience": None,
    "optimizer": None,
    "seed": 0,
    "progress": True,
    "resume": None,
    "context": None,
    "val_context": None,
}
FIT_TO_DENSITY_DEFAULTS = {
    "steps": 2000,
    "batch_size": 256,
    "lr": 1e-3,
    "schedule": "constant",
    "clip": None,
    "optimizer": None,
    "seed": 0,
    "progress": True,
}


@pytest.mark.parametrize(
    "function, defaults", [(train.fit, FIT_DEFAULTS), (train.fit_to_density, FIT_TO_DENSITY_DEFAULTS)]
)
def test_the_defaults_in_the_signatures(function, defaults):
    # The signature is the documentation of the defaults: pin every one.
    parameters = inspect.signature(function).parameters
    found = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    assert found == defaults


def test_a_fit_that_relies_on_the_defaults_uses_them():
    # One call with only the data: 512 rows a batch, lr 1e-3, seed 0, 1000 steps (stopped after the first).
    model, seen = _affine_model(), []

    def record(n, batch, loss):
        seen.append(batch.shape[0])
        return _interrupt(loss) if n == 2 else loss

    _hook_nll(model, record)
    with pytest.raises(train.TrainingInterrupted, match=r"^training interrupted at step 1 of 1000$") as stopped:
        train.fit(model, _rows(600))
    state = stopped.value.state
    assert seen == [512, 512] and state.batch_size == 512
    assert stopped.value.history["lr"] == [1e-3]
    assert state.seed == 0 and state.steps == 1000


def test_fit_validates_every_hundred_steps_by_default():
    # val_every's default: at step 100, and at the end.
    history = train.fit(_affine_model(), _rows(16), steps=101, batch_size=8, val_data=_rows(8, seed=1), progress=False)
    assert history["val_step"] == [100, 101]


def test_a_fit_to_density_that_relies_on_the_defaults_uses_them():
    # One call with only the model and the density: 256 samples a step, lr 1e-3, seed 0, 2000 steps.
    sizes = []

    def log_density(x):
        sizes.append(x.shape[0])
        if len(sizes) == 2:
            raise KeyboardInterrupt
        return _gaussian_at_three(x)

    with pytest.raises(train.TrainingInterrupted, match=r"^training interrupted at step 1 of 2000$") as stopped:
        train.fit_to_density(_affine_model(), log_density)
    history = stopped.value.history
    assert sizes == [256, 256] and history["lr"] == [1e-3]
    # seed 0: the same base samples, hence the same first loss, as seed=0 given; seed=1 gives others.
    with_seed = [
        train.fit_to_density(_affine_model(), _gaussian_at_three, steps=1, seed=seed, progress=False)["loss"][0]
        for seed in (0, 1)
    ]
    assert history["loss"][0] == with_seed[0] != with_seed[1]


def test_fit_to_density_shows_its_progress_bar_by_default(capsys):
    # The bar (tqdm, on stderr) is named after the objective and shown unless progress=False.
    train.fit_to_density(_affine_model(), _gaussian_at_three, steps=1, batch_size=8, progress=False)
    assert capsys.readouterr().err == ""
    train.fit_to_density(_affine_model(), _gaussian_at_three, steps=1, batch_size=8)
    assert "fit_to_density" in capsys.readouterr().err


# --- fit_to_density's options ---------------------------------------------------------------------------------
def test_fit_to_density_refuses_a_clip_that_is_not_positive():
    with pytest.raises(ValueError, match=r"^clip must be positive or None, got 0$"):
        train.fit_to_density(_affine_model(), _gaussian_at_three, steps=1, clip=0, progress=False)


class CountingSGD(optim.SGD):
    """SGD that counts its updates: proof that fit_to_density used the optimizer it was given."""

    updates = 0

    def step(self):
        self.updates += 1
        return super().step()


def _moved(model, before):
    return math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(_parameters(model), before)))


def test_fit_to_density_uses_the_given_optimizer_and_clips_its_gradient():
    # SGD with lr 1 moves the parameters by the (clipped) gradient itself: by exactly `clip` when the raw
    # gradient is longer. Adam's first step would move each of the 4 entries by about lr: a norm near 2.
    unclipped = _affine_model()
    before = _parameters(unclipped)
    train.fit_to_density(
        unclipped, _gaussian_at_three, steps=1, batch_size=32, lr=1.0, optimizer=optim.SGD(unclipped.parameters())
    )
    assert _moved(unclipped, before) > 0.1, "the raw gradient is far longer than the clip below"
    model = _affine_model()
    optimizer = CountingSGD(model.parameters())
    train.fit_to_density(
        model, _gaussian_at_three, steps=1, batch_size=32, lr=1.0, clip=0.01, optimizer=optimizer, progress=False
    )
    assert optimizer.updates == 1
    assert _moved(model, before) == pytest.approx(0.01, rel=1e-9)  # a rescaling and a subtraction: rounding only


# --- the data order -------------------------------------------------------------------------------------------
def test_each_epoch_visits_every_row_exactly_once():
    # Minibatches are drawn without replacement: the first n / batch_size steps see every row once, as do
    # the next ones (a new order), whatever the seed.
    n, batch_size = 24, 8
    rows = np.stack([np.arange(n, dtype=float), np.zeros(n)], axis=1)  # row i is recognisable by its x
    model, seen = _affine_model(), []

    def record(call, batch, loss):
        seen.append(host(batch)[:, 0].astype(int).tolist())
        return loss

    _hook_nll(model, record)
    train.fit(model, rows, steps=6, batch_size=batch_size, seed=11, progress=False)
    first, second = sum(seen[:3], []), sum(seen[3:], [])
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))
    assert first != list(range(n)) and first != second, "a shuffled order, a new one every epoch"


# --- dtypes: a float32 model stays float32 ----------------------------------------------------------------------
def _float32_model():
    return _affine_model(THETA).astype("float32")


def _dtypes(model):
    return {str(p.dtype) for p in model.parameters()}


def test_a_float32_model_evaluates_and_trains_in_float32():
    # float64 data is cast to the model's dtype once; results and parameters stay float32.
    model, rows = _float32_model(), _rows(16)
    assert str(train.log_probs(model, rows).dtype) == "float32"
    history = train.fit(model, rows, steps=3, batch_size=8, progress=False)
    assert _dtypes(model) == {"float32"} and all(math.isfinite(v) for v in history["loss"])
    assert str(train.log_probs(model, rows).dtype) == "float32"


def test_reverse_kl_of_a_float32_model_is_computed_in_float32():
    # The base samples are drawn in the model's dtype: no silent float64 forward pass.
    model = _float32_model()
    assert str(train.reverse_kl(model, _gaussian_at_three, 8, seed=0).data.dtype) == "float32"
    train.fit_to_density(model, _gaussian_at_three, steps=2, batch_size=8, progress=False)
    assert _dtypes(model) == {"float32"}


def _cannot_improve(step):
    """A schedule of 0: the resumed run keeps the state's last parameters, so it cannot beat the state's best
    validation, and the best parameters restored at its end are the state's own."""
    return 0.0


def test_the_best_parameters_of_a_state_are_restored_in_the_model_dtype():
    # Resuming casts a state's best parameters to the model's dtype (its last parameters must match the
    # model's dtype exactly; the best ones are not checked): here a float32 run's best widened to float64.
    rows = _rows(24)
    options = {"batch_size": 8, "val_data": rows[16:], "val_every": 2, "progress": False}
    model = _float32_model()
    state = train.fit(model, rows[:16], steps=4, **options)["state"]
    best = {name: host(array).astype(np.float64) for name, array in state.best_parameters.items()}
    state.best_parameters = best
    train.fit(model, rows[:16], steps=6, schedule=_cannot_improve, resume=state, **options)
    assert _dtypes(model) == {"float32"}
    for name, p in model.named_parameters():
        assert_close(p.data, best[name].astype(np.float32), rtol=0)


# --- backends: a model off the default backend keeps its own -------------------------------------------------
@pytest.fixture(
    params=[("numpy", "cupy"), ("cupy", "numpy")], ids=["numpy model, cupy default", "cupy model, numpy default"]
)
def off_default(request):
    """(where the model is built, the default backend while it trains); restores the default (cupy)."""
    if backend.backend_name() != "cupy":
        pytest.skip("needs a cupy module: runs in the CuPy stand-in pass (make test-cupy) or with real CuPy")
    yield request.param
    backend.set_backend("cupy")


def test_training_a_model_off_the_default_backend_makes_everything_on_its_backend(off_default):
    # A model lives where its parameters live: its data, data order, samples, seeds and restored best
    # parameters are made there, whatever the default backend is (a notebook comparing backends).
    built, used = off_default
    backend.set_backend(built)
    model, module = _affine_model(THETA), backend.xp()
    backend.set_backend(used)
    rows = _rows(24)
    assert backend.array_module(train.reverse_kl(model, _gaussian_at_three, 8, seed=2).data) is module
    assert backend.array_module(train.log_probs(model, rows)) is module
    options = {"batch_size": 8, "val_data": rows[16:], "val_every": 2, "progress": False}
    state = train.fit(model, rows[:16], steps=4, seed=backend.rng(5, xp=module), **options)["state"]
    assert state.best_parameters is not None
    # Resumed with a Generator equal to the first one (the same data seed), unable to improve on the best:
    # the state's best parameters are what the model holds at the end.
    seed = backend.rng(5, xp=module)
    train.fit(model, rows[:16], steps=6, seed=seed, schedule=_cannot_improve, resume=state, **options)
    assert {backend.array_module(p.data) for p in model.parameters()} == {module}
    train.fit_to_density(model, _gaussian_at_three, steps=2, batch_size=8, progress=False)
    assert {backend.array_module(p.data) for p in model.parameters()} == {module}


# --- where the data order's seed comes from ----------------------------------------------------------------------
# The data seed seeds NumPy's and CuPy's default_rng([seed, epoch]); it must be a non-negative int64, so it is
# drawn from [0, 2**63 - 1) (or as 63 random bits). The whole range, so that different Generators give
# different data orders (a narrow range would give two runs the same order by chance).
class _RecordingGenerator:
    """Stands for a random Generator (minflow recognises one by its standard_normal) and records the draw."""

    standard_normal = None

    def __init__(self, value):
        self.value, self.draws = value, []

    def integers(self, low, high):
        self.draws.append((low, high))
        return self.value


def test_a_generator_seed_draws_the_data_seed_from_the_whole_non_negative_int64_range(monkeypatch):
    real_rng = backend.rng

    def rng(seed=None, xp=None):  # backend.rng passes a Generator through; the others are made as usual
        return seed if isinstance(seed, _RecordingGenerator) else real_rng(seed, xp)

    monkeypatch.setattr(backend, "rng", rng)
    generator = _RecordingGenerator(2**62 + 7)
    history = train.fit(_affine_model(), _rows(16), steps=1, batch_size=8, seed=generator, progress=False)
    assert generator.draws == [(0, 2**63 - 1)]
    assert history["state"].seed == 2**62 + 7


def test_seed_none_draws_63_random_bits(monkeypatch):
    asked = []

    def randbits(k):
        asked.append(k)
        return 2**63 - 2  # the largest 63-bit value but one: still a valid int64 seed

    monkeypatch.setattr(train, "secrets", types.SimpleNamespace(randbits=randbits))
    history = train.fit(_affine_model(), _rows(16), steps=2, batch_size=8, seed=None, progress=False)
    assert asked == [63] and history["state"].seed == 2**63 - 2


# --- Ctrl-C: a previous handler not set from Python ---------------------------------------------------------------
class _SignalSeenFromTrain:
    """minflow.train's view of the signal module, in a process whose SIGINT handler was installed outside
    Python (an application embedding Python, initialised without Python's own handlers, that set one in C):
    there ``signal.getsignal`` and ``signal.signal`` report the previous handler as None. A Python test process
    cannot get into that state (Python reads the C handlers only at start-up), hence this stand-in. Like the
    real ``signal.signal``, it refuses a handler that is neither callable nor SIG_DFL / SIG_IGN."""

    SIGINT, SIG_DFL, SIG_IGN = signal.SIGINT, signal.SIG_DFL, signal.SIG_IGN

    def __init__(self):
        self.installed = []

    def getsignal(self, signum):
        return None

    def signal(self, signum, handler):
        if not (callable(handler) or handler in (signal.SIG_DFL, signal.SIG_IGN)):
            raise TypeError("signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object")
        self.installed.append(handler)
        return None


def test_a_previous_sigint_handler_not_set_from_python_is_replaced_by_the_default_on_exit(monkeypatch):
    # None cannot be re-installed; SIG_DFL (Ctrl-C ends the process) is the nearest to a handler Python cannot see.
    fake = _SignalSeenFromTrain()
    monkeypatch.setattr(train, "signal", fake)
    train.fit(_affine_model(), _rows(16), steps=1, batch_size=8, progress=False)
    assert len(fake.installed) == 2 and callable(fake.installed[0])
    assert fake.installed[1] is signal.SIG_DFL
