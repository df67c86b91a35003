"""Training: maximum likelihood and reverse KL, validation, early stopping, failures."""

import math

import numpy as np
import pytest
from helpers import assert_close, device, host

from minflow import backend, data, models, optim, train
from minflow.autodiff import ops


@pytest.fixture(scope="module")
def moons():
    return data.toy_data("moons", n_train=2000, n_val=500, n_test=2000, seed=0)


def _parameters(model):
    # copies: on NumPy host() returns the array itself, which the next steps change in place
    return [host(p.data).copy() for p in model.parameters()]


def test_fit_learns_two_moons(moons):
    model = models.realnvp(2, layers=4, hidden=32, seed=0)
    before = train.evaluate_nll(model, moons.test)
    history = train.fit(model, moons.train, steps=400, batch_size=256, lr=3e-3, seed=0, progress=False)
    after = train.evaluate_nll(model, moons.test)
    # The untrained model is N(0, I) on standardised data: NLL = log(2 pi) + 1 = 2.84 nats.
    assert before == pytest.approx(math.log(2 * math.pi) + 1, abs=0.05)
    # 400 steps take a 4-layer RealNVP well below any Gaussian fit of moons (the best
    # Gaussian of standardised data has the same 2.84 minus its correlation term, ~2.7);
    # measured: ~1.6 nats for this seed, so 2.0 leaves room for BLAS differences.
    assert after < 2.0, f"test NLL after training: {after}"
    assert len(history["loss"]) == 400 and history["stopped"] is None


def test_fit_is_deterministic_for_a_seed(moons):
    runs = []
    for _ in range(2):
        model = models.realnvp(2, layers=2, hidden=8, seed=1)
        train.fit(model, moons.train, steps=20, batch_size=64, seed=3, progress=False)
        runs.append(_parameters(model))
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_early_stopping_restores_the_best_parameters(moons):
    # Validating on a different dataset makes the validation NLL turn upwards while the
    # training NLL still falls: the textbook picture of overfitting, made deterministic.
    other = data.toy_data("circles", n_train=500, n_val=10, n_test=10, seed=0).train
    model = models.realnvp(2, layers=4, hidden=32, seed=0)
    history = train.fit(
        model,
        moons.train,
        steps=600,
        batch_size=256,
        lr=5e-3,
        val_data=other,
        val_every=20,
        patience=5,
        seed=0,
        progress=False,
    )
    assert history["stopped"] is not None and history["stopped"].startswith("early stopping")
    assert history["val_nll"][-1] > history["best_val_nll"], "validation got worse before the stop"
    assert history["best_val_nll"] == min(history["val_nll"])
    assert train.evaluate_nll(model, other) == pytest.approx(history["best_val_nll"], rel=1e-12)


def _poisoned_density(poison_at, error=None):
    """U1's log-density, except that call number ``poison_at`` returns NaN (or raises ``error``)."""
    calls = {"n": 0}
    target = data.log_density("u1")

    def log_density(x):
        calls["n"] += 1
        value = target(x)
        if calls["n"] == poison_at:
            if error is not None:
                raise error
            return value * math.nan
        return value

    return log_density


def test_non_finite_loss_stops_and_keeps_the_last_good_parameters():
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    reference = models.realnvp(2, layers=2, hidden=8, seed=0)
    train.fit_to_density(reference, data.log_density("u1"), steps=4, batch_size=32, seed=0, progress=False)
    with pytest.raises(train.NonFiniteLossError, match=r"step 5: .* clip=") as error:
        train.fit_to_density(model, _poisoned_density(5), steps=10, batch_size=32, seed=0, progress=False)
    assert len(error.value.history["loss"]) == 4 and error.value.cause == "step"
    assert error.value.state.step == 4, "the state of the last good step, to resume from with other options"
    for p, q in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(host(p.data), host(q.data)), "parameters are those after the 4 good steps"


def test_a_keyboard_interrupt_inside_a_step_stops_after_the_last_complete_step():
    # A KeyboardInterrupt raised by user code in step 3 (as one raised in another thread
    # would be): steps 1 and 2 stand, and TrainingInterrupted (a KeyboardInterrupt, so a
    # script stops) carries the marked history and a state. Real SIGINTs: test_resume.py.
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    with pytest.raises(train.TrainingInterrupted, match="interrupted at step 2 of 10") as error:
        train.fit_to_density(
            model, _poisoned_density(3, KeyboardInterrupt()), steps=10, batch_size=32, seed=0, progress=False
        )
    assert isinstance(error.value, KeyboardInterrupt)
    history = error.value.history
    assert history["stopped"] == "interrupted at step 2" and history["interrupted"] is True
    assert len(history["loss"]) == 2 and error.value.state.step == 2 and history["state"] is error.value.state
    assert all(np.all(np.isfinite(host(p.data))) for p in model.parameters())


def test_every_finished_history_says_it_was_not_interrupted(moons):
    model = models.realnvp(2, layers=1, hidden=4, seed=0)
    history = train.fit(model, moons.train, steps=3, batch_size=64, progress=False)
    assert history["interrupted"] is False and history["stopped"] is None
    state = history["state"]
    assert isinstance(state, train.TrainingState) and state.step == 3 and "state" not in state.history
    history = train.fit_to_density(model, data.log_density("u1"), steps=2, batch_size=8, progress=False)
    assert history["interrupted"] is False and history["state"].objective == "fit_to_density"


def test_non_finite_training_data_is_refused_before_the_first_step(moons):
    bad = moons.train.copy()
    bad[[3, 7, 7], [0, 0, 1]] = [np.nan, np.inf, np.nan]  # two bad rows
    model = models.realnvp(2, layers=1, hidden=4, seed=0)
    start = _parameters(model)
    with pytest.raises(train.NonFiniteLossError, match=f"^data has 2 of {len(bad)} rows with NaN or infinite") as error:
        train.fit(model, bad, steps=5, progress=False)
    assert error.value.cause == "data" and error.value.history["step"] == []
    assert all(np.array_equal(a, b) for a, b in zip(start, _parameters(model))), "nothing was trained"


def test_non_finite_validation_data_is_named_not_reported_as_early_stopping(moons):
    bad = moons.val.copy()
    bad[0, 0] = np.nan
    with pytest.raises(train.NonFiniteLossError, match=f"^val_data has 1 of {len(bad)} rows") as error:
        train.fit(
            models.realnvp(2, layers=1, hidden=4, seed=0),
            moons.train,
            steps=50,
            val_data=bad,
            val_every=5,
            patience=2,
            progress=False,
        )
    assert error.value.cause == "val_data"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the model still runs on the bad rows (one read for all)
def test_evaluate_nll_names_non_finite_data(moons):
    bad = moons.test.copy()
    bad[5, 1] = -np.inf
    with pytest.raises(ValueError, match=f"data has 1 of {len(bad)} rows with NaN or infinite values"):
        train.evaluate_nll(models.spline_coupling_flow(2, layers=1, hidden=8, seed=0), bad)


def test_a_model_without_parameters_cannot_be_fit_but_can_be_evaluated(moons):
    from minflow import NormalizingFlow
    from minflow.flows.linear import Reverse

    model = NormalizingFlow(Reverse(2))
    with pytest.raises(ValueError, match="has no parameters: nothing to train"):
        train.fit(model, moons.train, steps=2, progress=False)
    with pytest.raises(ValueError, match="nothing to train"):
        train.fit_to_density(model, data.log_density("u1"), steps=2, progress=False)
    # A reversal has log-det 0: the NLL is the standard normal's.
    expected = np.mean(0.5 * (moons.test**2).sum(1) + math.log(2 * math.pi))
    assert train.evaluate_nll(model, moons.test) == pytest.approx(expected, rel=1e-12)


def test_reverse_kl_fits_an_energy():
    model = models.realnvp(2, layers=4, hidden=32, seed=0)
    history = train.fit_to_density(
        model, data.log_density("u1"), steps=300, batch_size=256, lr=3e-3, seed=0, progress=False
    )
    first, last = np.mean(history["loss"][:20]), np.mean(history["loss"][-20:])
    # The loss is KL(q || p) - log Z >= -log Z; it must fall clearly as q moves onto the ring.
    assert last < first - 1.0, f"reverse KL went from {first} to {last}"
    samples = host(model.sample(2000, seed=1))
    radius = np.sqrt((samples**2).sum(1))
    assert abs(np.median(radius) - 2) < 0.5, "U1's mass lies on the ring of radius 2"


def test_learning_rate_schedules():
    assert train.learning_rate("constant", 0.1, 50, 100) == 0.1
    assert train.learning_rate("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert train.learning_rate("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert train.learning_rate(lambda step: 0.5, 0.1, 3, 100) == 0.05
    with pytest.raises(ValueError, match="schedule"):
        train.learning_rate("linear", 0.1, 0, 10)


def test_gradient_clipping_bounds_each_update(moons):
    # With Adam replaced by plain SGD, one clipped step moves the parameters by at most
    # lr * max_norm in total L2 norm; the same step unclipped moves them further (so the
    # bound is not met by accident).
    from minflow.optim import SGD

    def distance_moved(clip):
        model = models.realnvp(2, layers=2, hidden=8, seed=0)
        start = _parameters(model)
        optimizer = SGD(model.parameters(), lr=0.1)
        train.fit(model, moons.train, steps=1, batch_size=256, lr=0.1, clip=clip, optimizer=optimizer, progress=False)
        return math.sqrt(sum(((host(p.data) - s) ** 2).sum() for p, s in zip(model.parameters(), start)))

    assert 0 < distance_moved(clip=0.01) <= 0.1 * 0.01 * (1 + 1e-9)
    assert distance_moved(clip=None) > 0.1 * 0.01 * 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"clip": -1.0}, "clip"),
        ({"patience": 0}, "patience"),
    ],
)
def test_fit_rejects_bad_options(moons, options, message):
    with pytest.raises(ValueError, match=message):
        train.fit(models.realnvp(2, layers=1, hidden=4), moons.train, progress=False, **options)


def test_fit_rejects_bad_data():
    with pytest.raises(ValueError, match="data must be a non-empty array"):
        train.fit(models.realnvp(2, layers=1, hidden=4), np.zeros((0, 2)), progress=False)


def test_models_start_as_the_base_and_builders_validate():
    x = np.random.default_rng(0).standard_normal((10, 2))
    for name in models.MODELS:
        model = models.build(name, 2, seed=0)
        assert_close(model.log_prob(device(x)), -0.5 * (x**2).sum(1) - math.log(2 * math.pi), atol=1e-10)
    with pytest.raises(ValueError, match="unknown model"):
        models.build("glow9000", 2)
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        models.realnvp(1)


def test_evaluate_nll_matches_the_mean_log_prob(moons):
    model = models.spline_coupling_flow(2, layers=1, hidden=8, seed=0)
    for p in model.parameters():
        p.data = p.data + 0.1
    expected = -float(host(ops.mean(model.log_prob(device(moons.test)))))
    assert train.evaluate_nll(model, moons.test, batch_size=300) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_builder_makes_a_valid_flow(name):
    model = models.build(name, 3, layers=2, hidden=8, seed=0)
    rng = backend.rng(1)
    for p in model.parameters():  # away from the identity start, so the check proves something
        p.data = p.data + 0.2 * rng.standard_normal(p.shape)
    from minflow import testing

    testing.check_flow(model.flow, n=5, seed=2)


# --- train.step and the evaluation helpers ---------------------------------------------------------------
def test_step_is_the_four_lines_of_a_training_loop(moons):
    by_step, by_hand = (models.realnvp(2, layers=2, hidden=8, seed=0) for _ in range(2))
    opt_step, opt_hand = optim.Adam(by_step.parameters(), lr=1e-2), optim.Adam(by_hand.parameters(), lr=1e-2)
    for start in range(0, 300, 100):  # several steps: a missing zero_grad would accumulate gradients
        batch = device(moons.train[start : start + 100])
        before = host(by_step.nll(batch))
        loss = train.step(by_step, opt_step, batch)
        opt_hand.zero_grad()
        hand_loss = by_hand.nll(batch)
        hand_loss.backward()
        opt_hand.step()
        assert_close(loss, before, rtol=1e-12)  # the loss of the parameters before the update
        assert_close(loss, hand_loss, rtol=1e-12)
    for a, b in zip(_parameters(by_step), _parameters(by_hand)):
        assert_close(a, b, rtol=1e-12)  # the same arithmetic: equal to rounding


def test_step_clips_and_checks_before_the_update(moons):
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    before = [a.copy() for a in _parameters(model)]  # copies: SGD updates the arrays in place
    seen = []

    def refuse(loss, checks):
        seen.append((host(loss), isinstance(checks, list)))
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        train.step(model, optimizer, device(moons.train[:64]), check=refuse)
    assert seen and seen[0][1], "check gets the loss and the list of deferred checks"
    for a, b in zip(_parameters(model), before):
        np.testing.assert_array_equal(a, b)  # a refused step changes nothing
    # With clip, SGD (lr 1) moves the parameters by exactly the clipped gradient: norm <= clip.
    train.step(model, optimizer, device(moons.train[:64]), clip=0.01)
    moved = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(_parameters(model), before)))
    assert moved == pytest.approx(0.01, rel=1e-9)  # the raw gradient is far larger than 0.01 at this start


def test_log_probs_is_log_prob_in_chunks_and_evaluate_nll_its_mean(moons):
    model = models.spline_coupling_flow(2, layers=1, hidden=8, seed=0)
    for p in model.parameters():
        p.data = p.data + 0.1
    points = moons.test[:700]
    values = train.log_probs(model, points, batch_size=300)  # chunks of 300, 300, 100
    assert_close(values, model.log_prob(device(points)), rtol=1e-12)
    assert train.evaluate_nll(model, points, batch_size=300) == pytest.approx(-float(np.mean(host(values))), rel=1e-12)


def test_evaluate_splits_reports_every_part_and_the_original_units(moons):
    model = models.realnvp(2, layers=1, hidden=8, seed=0)
    metrics = train.evaluate_splits(model, moons)
    assert set(metrics) == {"train_nll", "val_nll", "test_nll", "test_nll_original_units"}
    assert metrics["val_nll"] == pytest.approx(train.evaluate_nll(model, moons.val), rel=1e-12)
    assert metrics["test_nll_original_units"] == pytest.approx(
        metrics["test_nll"] - moons.standardizer.log_det, rel=1e-12
    )
    assert set(train.evaluate_splits(model, moons, names=("test",))) == {"test_nll", "test_nll_original_units"}


def test_non_finite_parameters_names_them():
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    assert train.non_finite_parameters(model) == []
    name, param = model.named_parameters()[3]
    param.data = param.data * float("nan")
    assert train.non_finite_parameters(model) == [name]
