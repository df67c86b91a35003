"""Training-loop semantics, pinned against independent formulas.

1. The learning rate. ``train.learning_rate`` documents step s = 0, 1, ..., steps - 1 (the
   0-based index of the update): "constant" is lr; "cosine" is lr (1 + cos(pi s / steps)) / 2,
   from lr at the first update down towards 0, which it never reaches (the last update,
   s = steps - 1, still has lr (1 - cos(pi / steps)) / 2 > 0); a callable c gives lr c(s).
   ``fit`` makes update k = 1..steps with s = k - 1, records it in ``history["lr"]``, and the
   optimizer uses that very number. Checked at every step, also for a run stopped and
   resumed (``fit(..., resume=state)``), whose schedule is that of the uninterrupted run.
2. Reverse KL. ``train.reverse_kl`` estimates E_q[log q(x) - log p~(x)] with p~ = Z p, which
   is KL(q || p) - log Z >= -log Z, with equality exactly when q = p. For a Gaussian target
   with a known normaliser, a random flow stays above -log Z (within Monte Carlo error), and
   a linear flow that maps the base exactly onto the target reaches -log Z.

Each check also runs on a planted bug (a schedule one step late, a sign-flipped log-det) and
must fail there.
"""

import math

import numpy as np
import pytest
from helpers import device, host
from hypothesis import given
from hypothesis import strategies as st

from minflow import models, optim, testing, train
from minflow.autodiff import Tensor, ops
from minflow.flows.base import REAL_LINE
from minflow.flows.linear import DenseLinear


# --- 1. the learning rate at every step ---------------------------------------------------------
def expected_lr(schedule, lr, k, steps):
    """The documented rate of update k (1-based), written independently of train.learning_rate."""
    s = k - 1
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * s / steps)) / 2
    return lr * schedule(s)


class RecordingAdam(optim.FlatAdam):
    """FlatAdam that remembers the learning rate of every update it makes."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.used = []

    def step(self):
        self.used.append(self.lr)
        return super().step()


def check_schedule(history, used, schedule, lr, steps):
    """history["lr"] is the documented schedule at every step, and it is what the optimizer used."""
    assert history["step"] == list(range(1, steps + 1))
    expected = [expected_lr(schedule, lr, k, steps) for k in history["step"]]
    # The same formula, perhaps in another order of operations: a few ulps.
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-14, atol=0)
    assert used == history["lr"]
    assert history["lr"][0] == lr  # s = 0: the full rate, for every schedule here (c(0) = 1)
    assert history["lr"][-1] > 0  # the cosine's last update is not wasted at lr = 0


def tiny_model(seed):
    return models.realnvp(2, layers=1, hidden=4, seed=seed)


def tiny_data(seed):
    return device(np.random.default_rng(seed).standard_normal((32, 2)))


def run_fit(schedule, lr, steps, seed, stop_at=None, resume=None, optimizer_lr=None):
    """fit() on a tiny model; with ``stop_at``, a KeyboardInterrupt inside update ``stop_at`` stops it
    (the last complete update is stop_at - 1) and (state, used rates) come back instead of the history."""
    model = tiny_model(seed)
    if stop_at is not None:
        nll, calls = model.nll, [0]

        def interrupting(batch):
            calls[0] += 1
            if calls[0] == stop_at:
                raise KeyboardInterrupt
            return nll(batch)

        model.nll = interrupting
    optimizer = RecordingAdam(model.parameters(), lr)
    options = {"steps": steps, "batch_size": 8, "lr": lr, "schedule": schedule, "seed": seed, "progress": False}
    try:
        history = train.fit(model, tiny_data(seed), optimizer=optimizer, resume=resume, **options)
    except train.TrainingInterrupted as error:
        return error.state, optimizer.used
    return history, optimizer.used


schedules = st.sampled_from(["constant", "cosine", "callable"])


def as_schedule(name):
    return (lambda s: 1 / (1 + s)) if name == "callable" else name


@given(schedules, st.floats(1e-5, 1.0), st.integers(1, 12), st.integers(0, 100))
def test_recorded_learning_rate_is_the_schedule_at_every_step(name, lr, steps, seed):
    schedule = as_schedule(name)
    history, used = run_fit(schedule, lr, steps, seed)
    check_schedule(history, used, schedule, lr, steps)


@given(schedules, st.floats(1e-5, 1.0), st.integers(2, 12), st.data())
def test_recorded_learning_rate_is_the_schedule_after_a_resume(name, lr, steps, data):
    schedule = as_schedule(name)
    stop_at = data.draw(st.integers(2, steps), label="interrupted during update")
    state, used_before = run_fit(schedule, lr, steps, 0, stop_at=stop_at)
    assert state.step == stop_at - 1
    history, used_after = run_fit(schedule, lr, steps, 0, resume=state)
    check_schedule(history, used_before + used_after, schedule, lr, steps)


def test_cosine_first_and_last_rates_by_hand():
    """steps = 4: s = 0, 1, 2, 3 give lr (1 + cos(0, pi/4, pi/2, 3 pi/4)) / 2 = lr (1, .854, .5, .146)."""
    history, _ = run_fit("cosine", 0.2, 4, 0)
    assert history["lr"] == pytest.approx([0.2, 0.1 * (1 + 0.5**0.5), 0.1, 0.1 * (1 - 0.5**0.5)], rel=1e-15)


@pytest.mark.parametrize("resumed", [False, True])
def test_the_schedule_check_catches_a_schedule_one_step_late(monkeypatch, resumed):
    honest = train.learning_rate
    monkeypatch.setattr(train, "learning_rate", lambda schedule, lr, s, steps: honest(schedule, lr, s + 1, steps))
    if resumed:
        state, used = run_fit("cosine", 0.1, 6, 0, stop_at=4)
        history, used_after = run_fit("cosine", 0.1, 6, 0, resume=state)
        used = used + used_after
    else:
        history, used = run_fit("cosine", 0.1, 6, 0)
    assert history["lr"][-1] == pytest.approx(0.0, abs=1e-17)  # the planted bug: the last update at lr = 0
    with pytest.raises(AssertionError):
        check_schedule(history, used, "cosine", 0.1, 6)


def test_the_schedule_check_catches_an_optimizer_given_another_rate_than_recorded(monkeypatch):
    history, used = run_fit("cosine", 0.1, 5, 0)
    check_schedule(history, used, "cosine", 0.1, 5)
    with pytest.raises(AssertionError):
        check_schedule(history, used[1:] + used[-1:], "cosine", 0.1, 5)


# --- 2. reverse KL is bounded below by -log Z ------------------------------------------------------
class GaussianTarget:
    """log p~(x) = log N(x; mu, L L^T) + log_z: an unnormalised density with normaliser Z = e^log_z."""

    def __init__(self, seed, log_z, dim=2):
        rng = np.random.default_rng(seed)
        self.mu = rng.standard_normal(dim)
        lower = np.tril(rng.standard_normal((dim, dim)) * 0.5)
        lower[range(dim), range(dim)] = rng.uniform(0.3, 0.9, dim)  # det L < 1: a contraction of the base
        self.lower, self.log_z, self.dim = lower, log_z, dim

    def __call__(self, x):
        mu, inverse = device(self.mu), device(np.linalg.inv(self.lower).T)
        white = ops.matmul(x - mu, inverse)  # L^{-1} (x - mu), per row
        log_normal = -0.5 * ops.sum(white * white, axis=1) - np.log(np.diag(self.lower)).sum()
        return log_normal - 0.5 * self.dim * math.log(2 * math.pi) + self.log_z

    def exact_flow(self):
        """DenseLinear with z = L^{-1}(x - mu): its inverse maps N(0, I) exactly onto the target."""
        flow = DenseLinear(self.dim, seed=0)
        inverse = np.linalg.inv(self.lower)
        flow.weight.data, flow.bias.data = device(inverse), device(-inverse @ self.mu)
        return flow


def reverse_kl_estimate(model, target, batches=20, n=200, loss=None):
    """(mean, standard error) of the reverse-KL loss over independent batches."""
    loss = loss or train.reverse_kl
    values = np.array([float(host(loss(model, target, n, seed=j).data)) for j in range(batches)])
    return values.mean(), values.std(ddof=1) / math.sqrt(batches)


def check_bound(model, target, loss=None):
    """The loss is >= -log Z - 4 SE (a 4-sigma Monte Carlo margin: one false alarm in ~30,000)."""
    mean, error = reverse_kl_estimate(model, target, loss=loss)
    assert mean >= -target.log_z - 4 * error - 1e-12, f"loss {mean} (SE {error}) < -log Z = {-target.log_z}"
    return mean, error


def flipped_reverse_kl(model, log_density, n, seed=None):
    """The planted bug: log q = log p_Z(z) + log|det df^{-1}/dz| (the sign of the log-det flipped)."""
    z = Tensor(model.base.sample(n, seed=seed, dtype=model.float_dtype(), xp=model.array_module()))
    x, inverse_log_det = model.flow.inverse(z)
    return ops.mean(model.base.log_prob(z) + inverse_log_det - log_density(x))


REAL_FLOWS = sorted(
    name
    for name, flow in testing.example_flows(2).items()
    if flow.event_shape == (2,) and tuple(flow.output_domain) == REAL_LINE
)


@given(st.sampled_from(REAL_FLOWS), st.integers(0, 2**16), st.floats(-50.0, 50.0))
def test_reverse_kl_is_bounded_below_by_minus_log_z(name, seed, log_z):
    model = models.NormalizingFlow(testing.example_flows(2, seed=seed)[name])
    check_bound(model, GaussianTarget(seed, log_z))


@given(st.integers(0, 2**16), st.floats(-50.0, 50.0))
def test_reverse_kl_of_the_exact_flow_is_minus_log_z(seed, log_z):
    target = GaussianTarget(seed, log_z)
    mean, error = check_bound(models.NormalizingFlow(target.exact_flow()), target)
    # q = p: log q - log p~ = -log Z for every sample, so the spread is rounding only (~1e-15 |log Z|).
    assert abs(mean + log_z) <= 4 * error + 1e-12 * (1 + abs(log_z))


def test_the_bound_catches_a_sign_flipped_log_det():
    """With the sign flipped, the exact flow's loss is -log Z + 2 log|det L| < -log Z (det L < 1 here)."""
    target = GaussianTarget(0, 3.0)
    model = models.NormalizingFlow(target.exact_flow())
    check_bound(model, target)
    with pytest.raises(AssertionError, match="< -log Z"):
        check_bound(model, target, loss=flipped_reverse_kl)
    mean, _ = reverse_kl_estimate(model, target, loss=flipped_reverse_kl)
    assert mean == pytest.approx(-3.0 + 2 * np.log(np.diag(target.lower)).sum(), abs=1e-10)
