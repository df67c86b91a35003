"""A train step synchronises the device at most twice, for every built-in model.

A device -> host transfer (``float(x)``, ``bool(x)``, ``.item()``, ``.tolist()``, ...) makes the
host wait for every kernel queued so far: on a GPU, a layer that asks such a question on every
call turns a train step into a string of stalls. The strict CuPy stand-in
(tests/support/strict_cupy) counts every transfer with its call site, so these tests run in the
stand-in pass (``make test-cupy``) and are skipped on NumPy, where nothing synchronises.

The budget is DESIGN.md's: at most 2 per step, none inside a layer. ``fit`` spends one: the
loss, a finiteness check of the gradients and the layers' deferred value checks travel together
(``backend.read_scalars``).
"""

import pytest

from minflow import backend, data, models, train
from minflow.autodiff import ops

MAX_SYNCS_PER_STEP = 2
STEPS = 4


def _stand_in():
    if backend.backend_name() != "cupy":
        pytest.skip("counts device synchronisations: runs on the strict CuPy stand-in (make test-cupy)")
    import cupy

    if not getattr(cupy, "_strict_stand_in", False):
        pytest.skip("real CuPy does not count synchronisations; the strict stand-in does")
    from cupy import _strict

    return _strict


def _density_models():
    small = {"layers": 2, "hidden": 8}
    built = {name: builder(2, seed=0, **small) for name, builder in models.MODELS.items()}
    built["glow"] = models.glow((1, 4, 4), scales=2, steps_per_scale=1, hidden=8, seed=0)
    return built


def _training_data(model, n=64):
    shape = (n,) + tuple(model.flow.event_shape)
    return backend.rng(1).standard_normal(shape, dtype=backend.get_default_dtype())


def _syncs_per_step(strict, run):
    """Syncs of ``run(steps)`` for STEPS steps, after one warm-up step (ActNorm's first batch
    initialises it, and reads its flag once, by design)."""
    run(1)
    with strict.counting() as syncs:
        run(STEPS)
    return syncs.count / STEPS, syncs


@pytest.mark.parametrize("name", sorted(_density_models()))
@pytest.mark.parametrize("clip", [None, 1.0], ids=["no-clip", "clip"])
def test_a_fit_step_synchronises_at_most_twice(name, clip):
    strict = _stand_in()
    model = _density_models()[name]
    x = _training_data(model)
    per_step, syncs = _syncs_per_step(
        strict, lambda steps: train.fit(model, x, steps=steps, batch_size=16, clip=clip, progress=False)
    )
    assert per_step <= MAX_SYNCS_PER_STEP, f"{name}: {per_step} synchronisations per step: {syncs}"


@pytest.mark.parametrize("name", ["planar_flow", "radial_flow"])
def test_a_reverse_kl_step_synchronises_at_most_twice(name):
    # Planar and radial flows train by reverse KL (their docstrings say why): sampling only.
    strict = _stand_in()
    model = getattr(models, name)(2, layers=4, seed=0)
    target = data.log_density("u1")
    per_step, syncs = _syncs_per_step(
        strict, lambda steps: train.fit_to_density(model, target, steps=steps, batch_size=16, clip=1.0, progress=False)
    )
    assert per_step <= MAX_SYNCS_PER_STEP, f"{name}: {per_step} synchronisations per step: {syncs}"


def test_the_counter_catches_a_layer_that_synchronises():
    # The bound can fail: a model whose log-density reads one value on the host per call
    # (a float() inside the loss, as a per-layer check would) goes over it.
    strict = _stand_in()
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    x = _training_data(model)
    log_prob = model.log_prob

    def chatty_log_prob(batch):
        out = log_prob(batch)
        for _ in range(2):
            float(ops.sum(out).data)  # two host reads per call: one step is now three syncs
        return out

    model.log_prob = chatty_log_prob
    per_step, syncs = _syncs_per_step(
        strict, lambda steps: train.fit(model, x, steps=steps, batch_size=16, progress=False)
    )
    assert per_step > MAX_SYNCS_PER_STEP, syncs


def test_a_deferred_value_check_still_raises_with_its_message():
    # Deferring a spline's checks (its bin widths must be positive and sum to 2 B) to the
    # step's one read must not lose the error: NaN parameters make NaN widths, and fit says
    # so. (NaN *data* is refused before the first step, with its own message.)
    _stand_in()
    model = models.spline_coupling_flow(2, layers=1, hidden=8, seed=0)
    for p in model.parameters():
        p.data = p.data * float("nan")
    x = _training_data(model)
    with pytest.raises(ValueError, match="widths must"):
        train.fit(model, x, steps=2, batch_size=16, progress=False)
