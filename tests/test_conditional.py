"""Conditional flows: the context in the flow contract, proven the way every flow is.

check_flow checks a conditional flow at fixed contexts (round trip, log-det against a
finite-difference Jacobian in x, batch independence), its gradient with respect to the
context against finite differences, and that the context changes z at all. It runs here
under hypothesis on every example that can read a context; the checks it adds are shown to
fail on flows with a planted error of the kind each one claims to catch. Then the model
level: log_prob, sample, fit and their errors for a missing or mis-shaped context.
"""

import inspect

import numpy as np
import pytest
from helpers import assert_close, device, host
from hypothesis import given, settings

from minflow import backend, models, testing, train
from minflow.autodiff import Tensor, ops
from minflow.flows import (
    AffineCoupling,
    MaskedAutoregressive,
    MultiScale,
    Sequential,
    autoregressive,
)
from minflow.flows.base import Flow
from minflow.flows.coupling import half_mask

CONDITIONAL = testing.example_flow_names(conditional=True)
# Under hypothesis, all but the piecewise-linear MAF: its bin masses are differences of cumulative
# sums (splines.py: forward and inverse share the knots bit for bit), so a bin near the top with a
# mass of 1e-7 carries a relative rounding error of 1e-16 / 1e-7 = 1e-9 in its log-det, and a
# central difference of step 2e-6 turns that into noise of ~5e-4 in a gradient: about one
# conditioned draw in a hundred lands there (one unconditioned in four hundred; measured over 3,600
# and 1,200 seeded examples). It is checked at fixed seeds below, where that does not happen.
HYPOTHESIS_NAMES = [name for name in CONDITIONAL if name != "PiecewiseLinearAutoregressive"]


# --- every conditional example passes check_flow at fixed contexts -------------------------------
@given(testing.conditional_flows(HYPOTHESIS_NAMES))
@settings(max_examples=25)
def test_conditional_flows_pass_check_flow(named_flow):
    name, flow = named_flow
    testing.check_flow(flow)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_every_conditional_example_reads_a_context_of_the_width_asked(name):
    for width in (1, 3):
        flow = testing.example_flows(3, seed=4, context_dim=width)[name]
        assert flow.context_dim == width
        testing.check_flow(flow, n=4)  # at D = 3 and C = 3 too, not only where hypothesis went


@pytest.mark.parametrize("name", sorted(testing.flow_classes()))
def test_a_class_that_takes_a_context_has_a_conditional_example(name):
    # A flow class whose constructor takes context_dim can be conditional, and so can the two
    # that wrap other flows; the suite above must check each conditioned, and the table marks
    # exactly those.
    takes_context = "context_dim" in inspect.signature(testing.flow_classes()[name]).parameters
    assert testing.FLOW_EXAMPLES[name].conditional == (takes_context or name in ("Sequential", "Inverse")), name


@pytest.mark.parametrize("name", CONDITIONAL)
def test_float32_conditional_examples_stay_close_to_float64(name):
    wide = testing.example_flows(3, seed=2, context_dim=2)[name]
    narrow = testing.example_flows(3, seed=2, context_dim=2, dtype="float32")[name]
    x = testing.sample_inputs(wide, 5, seed=3)
    c = testing.sample_contexts(wide, 5, seed=4)
    z64, log_det64 = wide.forward(x, c)
    z32, log_det32 = narrow.forward(x.astype("float32"), c.astype("float32"))
    # float32 rounding (6e-8 relative) through a few small layers stays well under 1e-4
    assert_close(z32, z64, rtol=1e-4, atol=1e-4)
    assert_close(log_det32, log_det64, rtol=1e-4, atol=1e-4)


# --- the checks check_flow adds for a context can fail --------------------------------------------
class _DetachedContext(AffineCoupling):
    """Planted error: the conditioner reads a copy of the context cut from the graph (plus 0 c, so
    that the context still gets a gradient: 0), while z does depend on the context."""

    def forward(self, x, context=None):
        cut = Tensor(context.data) if isinstance(context, Tensor) else Tensor(context)
        return super().forward(x, cut + 0.0 * context if isinstance(context, Tensor) else cut)


class _IgnoredContext(AffineCoupling):
    """Planted error: the conditioner is handed zeros instead of the context."""

    def _theta(self, h1, context):
        return super()._theta(h1, context * 0.0)


class _ContextOfAnotherSample(AffineCoupling):
    """Planted error: each sample gets the next sample's context (a roll of the rows)."""

    def forward(self, x, context=None):
        return super().forward(x, _rolled(context))

    def inverse(self, z, context=None):
        return super().inverse(z, _rolled(context))


def _rolled(context):
    data = context.data if isinstance(context, Tensor) else context
    return backend.array_module(data).roll(data, 1, axis=0)


def _perturbed(cls):
    flow = cls(half_mask(3), hidden=(8,), activation="tanh", seed=0, context_dim=2)
    return testing._perturb(flow, backend.rng(1), 0.5)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (AffineCoupling, None),
        (_DetachedContext, "gradient of tensor .* 'context'"),
        (_IgnoredContext, "the context changes nothing"),
        (_ContextOfAnotherSample, "batch independence"),
    ],
)
def test_check_flow_catches_each_planted_context_error(cls, message):
    flow = _perturbed(cls)
    if message is None:
        testing.check_flow(flow)  # the same layer without the planted error passes
    else:
        with pytest.raises(AssertionError, match=message):
            testing.check_flow(flow)


def test_a_freshly_built_conditional_layer_is_told_to_perturb_first():
    flow = AffineCoupling(half_mask(3), hidden=(8,), seed=0, context_dim=2)  # starts as the identity
    with pytest.raises(AssertionError, match="perturb its parameters"):
        testing.check_flow(flow)


# --- MADE: every coordinate's parameters read the context -------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 4])
def test_every_coordinate_of_a_conditional_maf_depends_on_the_context(dim):
    # theta_1 sees no x at all, so only hidden units of degree 0 (context alone) can reach it;
    # with MADE's unconditional degrees (1..D-1) z_1 would not move when c does.
    flow = _perturbed_maf(dim)
    x, c = device(np.random.default_rng(0).normal(size=(6, dim))), device(np.ones((6, 2)))
    moved = np.abs(host(flow.forward(x, c + 0.5)[0].data) - host(flow.forward(x, c)[0].data)).min(axis=0)
    assert (moved > 1e-6).all(), moved  # each coordinate moves, in every sample


def test_without_degree_zero_hidden_units_the_first_coordinate_ignores_the_context(monkeypatch):
    # The check above, on the planted error it exists for: MADE built with the unconditional degrees.
    unconditional = autoregressive.made_degrees
    monkeypatch.setattr(autoregressive, "made_degrees", lambda d, h, o, conditional: unconditional(d, h, o))
    flow = _perturbed_maf(3)
    x, c = device(np.random.default_rng(0).normal(size=(6, 3))), device(np.ones((6, 2)))
    moved = np.abs(host(flow.forward(x, c + 0.5)[0].data) - host(flow.forward(x, c)[0].data))
    assert moved[:, 0].max() == 0.0 and moved[:, 1:].min() > 1e-6


def _perturbed_maf(dim):
    flow = MaskedAutoregressive(dim, hidden=(16,), activation="tanh", seed=0, context_dim=2)
    return testing._perturb(flow, backend.rng(2), 0.5)


def test_made_degrees_of_a_conditional_made_use_every_value_from_zero():
    inputs, layers = autoregressive.made_degrees(3, (7,), conditional=True)
    assert inputs == [1, 2, 3] and layers == [[0, 1, 2, 0, 1, 2, 0]]


# --- errors name a missing or mis-shaped context ------------------------------------------------------
def test_a_conditional_flow_without_a_context_says_so():
    flow = _perturbed(AffineCoupling)
    x = device(np.zeros((4, 3)))
    with pytest.raises(
        ValueError, match=r"AffineCoupling is conditional: it needs a context of shape \(B, C\) = \(4, 2\), got None"
    ):
        flow.forward(x)
    with pytest.raises(ValueError, match=r"context must have shape \(B, C\) = \(4, 2\), got \(4, 3\)"):
        flow.inverse(x, device(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"context must have shape \(B, C\) = \(4, 2\), got \(3, 2\)"):
        flow.forward(x, device(np.zeros((3, 2))))


def test_layers_that_read_contexts_of_different_widths_cannot_be_stacked():
    with pytest.raises(ValueError, match=r"Sequential: its flows read contexts of different widths \[1, 2\]"):
        Sequential(
            [
                AffineCoupling(half_mask(2), hidden=(4,), context_dim=1),
                AffineCoupling(half_mask(2), hidden=(4,), context_dim=2),
            ]
        )


def test_an_unconditional_layer_accepts_and_ignores_a_context():
    # Every flow has the contract's signature; a Sequential hands its context to all its layers.
    for name, flow in testing.example_flows(2, seed=0).items():
        assert list(inspect.signature(flow.forward).parameters)[:2] == ["x", "context"], name
        assert list(inspect.signature(flow.inverse).parameters)[:2] == ["z", "context"], name
        x = testing.sample_inputs(flow, 3)
        ignored = backend.array_module(x).full((3, 5), np.nan)  # NaN: any use of it would show
        assert_close(flow.forward(x, ignored)[0], flow.forward(x)[0])


# --- the model: log_prob, sample, nll, fit -------------------------------------------------------------
def _conditional_model(dim=2, context_dim=2, seed=0):
    model = models.realnvp(dim, layers=4, hidden=16, seed=seed, context_dim=context_dim)
    testing._perturb(model.flow, backend.rng(seed + 1), 0.3)
    return model


def test_one_context_row_is_broadcast_to_every_sample():
    model = _conditional_model()
    x = device(np.random.default_rng(0).normal(size=(5, 2)))
    row = device(np.array([0.3, -1.2]))
    repeated = device(np.tile([0.3, -1.2], (5, 1)))
    expected = host(model.log_prob(x, repeated).data)
    assert_close(model.log_prob(x, row).data, expected)  # (C,)
    assert_close(model.log_prob(x, row[None]).data, expected)  # (1, C)
    assert_close(model.sample(5, seed=1, context=row), model.sample(5, seed=1, context=repeated))


def test_sampling_inverts_the_density_at_each_context():
    # z from the base through f^{-1}(.; c), then f(.; c) gives z back: samples are where
    # log_prob says they are, context by context.
    model = _conditional_model()
    contexts = device(np.random.default_rng(1).normal(size=(6, 2)))
    x = model.sample(6, seed=3, context=contexts)
    z = backend.rng(3, model.array_module()).standard_normal((6, 2))
    assert_close(model.flow.forward(x, contexts)[0].data, z, atol=1e-10)  # exact inverses: rounding only
    other = model.sample(6, seed=3, context=contexts + 1.0)
    assert np.abs(host(other) - host(x)).min() > 1e-6  # another context, other samples


def test_a_conditional_density_integrates_to_one_at_every_context():
    # A 1-D conditional MAF: p(x | c) for three contexts, on a grid wide enough to hold its mass
    # (the density at the ends of [-40, 40] is below 1e-40: at c = -2 the scale is wide, and
    # [-12, 12] would miss 4e-4 of it); the trapezoid rule on 20001 points errs by < 1e-9.
    flow = testing._perturb(
        MaskedAutoregressive(1, hidden=(16,), activation="tanh", seed=0, context_dim=1), backend.rng(5), 0.5
    )
    model = models.NormalizingFlow(flow)
    grid = np.linspace(-40, 40, 20001)
    masses = []
    for c in (-2.0, 0.0, 2.0):
        density = np.exp(host(model.log_prob(device(grid[:, None]), device(np.array([c]))).data))
        masses.append(np.trapezoid(density, grid))
    assert_close(np.array(masses), np.ones(3), atol=1e-4)
    assert np.ptp(masses) < 1e-4 and not np.allclose(
        host(model.log_prob(device(grid[:1, None]), device(np.array([-2.0]))).data),
        host(model.log_prob(device(grid[:1, None]), device(np.array([2.0]))).data),
    )  # the densities differ between contexts, each still normalized


def test_model_errors_name_the_context():
    model, plain = _conditional_model(), models.realnvp(2, layers=2, hidden=4)
    x = device(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="is conditional: it needs a context"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="is conditional: it needs a context"):
        model.sample(3)
    with pytest.raises(ValueError, match=r"context must have shape \(B, C\) = \(3, 2\), got \(2, 2\)"):
        model.sample(3, context=device(np.zeros((2, 2))))
    with pytest.raises(ValueError, match="this model is not conditional"):
        plain.log_prob(x, device(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="this model is not conditional"):
        plain.sample(2, context=device(np.zeros(1)))


def _two_class_data(n=1024, seed=0):
    """x | c ~ N((3, -3) c, 0.5^2 I) with c in {0, 1}, one-hot as (1 - c, c)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = 0.5 * rng.normal(size=(n, 2)) + 3.0 * labels[:, None] * np.array([1.0, -1.0])
    return x, np.stack([1 - labels, labels], axis=1).astype(float)


def test_fit_learns_a_conditional_density():
    x, c = _two_class_data()
    model = models.maf(2, layers=2, hidden=16, seed=0, context_dim=2)
    history = train.fit(model, device(x), steps=300, batch_size=256, lr=3e-3, context=device(c), progress=False, seed=0)
    # The data's own conditional NLL is that of N(., 0.25 I): 2 (1/2 log(2 pi 0.25) + 1/2) = 1.45 nats.
    # Unconditionally (a mixture of the two classes) the best model sits near 1.45 + log 2 = 2.14.
    nll = train.evaluate_nll(model, device(x), context=device(c))
    assert nll < 1.7, nll  # well below the 2.14 no model without the label can reach
    for label, mean in ((0, [0.0, 0.0]), (1, [3.0, -3.0])):
        samples = host(model.sample(2000, seed=label, context=device(np.eye(2)[label])))
        # the class mean within 0.25: ~10 standard errors of a mean of 2000 draws of sd 0.5
        assert_close(samples.mean(axis=0), np.array(mean), atol=0.25)
    assert history["loss"][-1] < history["loss"][0]


def test_fit_validates_with_the_validation_contexts():
    x, c = _two_class_data(n=512)
    model = _conditional_model()
    history = train.fit(
        model,
        device(x[:384]),
        steps=20,
        val_data=device(x[384:]),
        val_context=device(c[384:]),
        val_every=10,
        context=device(c[:384]),
        progress=False,
    )
    # fit restores the best validated parameters: their validation NLL is the one it recorded
    assert history["val_step"] == [10, 20]
    assert history["best_val_nll"] == pytest.approx(
        train.evaluate_nll(model, device(x[384:]), context=device(c[384:])), rel=1e-12
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"fit: the model is conditional \(context_dim 2\): pass context="),
        ({"context": np.zeros((7, 2))}, r"fit: context must have one row per data row, 16, got shape \(7, 2\)"),
        ({"context": np.zeros((16, 2)), "val_data": np.zeros((4, 2))}, "pass val_context="),
        ({"context": np.zeros((16, 2)), "val_context": np.zeros((4, 2))}, "val_context was given without val_data"),
        ({"context": np.full((16, 2), np.nan)}, "context has 16 of 16 rows with NaN"),
    ],
)
def test_fit_errors_name_the_context(options, message):
    model = _conditional_model()
    options = {key: device(value) for key, value in options.items()}
    with pytest.raises((ValueError, train.NonFiniteLossError), match=message):
        train.fit(model, device(np.zeros((16, 2))), steps=1, progress=False, **options)


def test_fit_refuses_a_context_for_a_model_that_reads_none():
    with pytest.raises(ValueError, match="context was given, but the model is not conditional"):
        train.fit(
            models.realnvp(2, layers=1, hidden=4),
            device(np.zeros((8, 2))),
            steps=1,
            context=device(np.zeros((8, 1))),
            progress=False,
        )


def test_conditional_multiscale_reads_a_label():
    flow = testing._perturb(
        MultiScale((1, 4, 4), scales=2, steps_per_scale=1, hidden=(8,), activation="tanh", seed=0, context_dim=10),
        backend.rng(0),
        0.3,
    )
    for module in flow.modules():  # ActNorm parameters as they are: no data-dependent init
        if hasattr(module, "initialized"):
            module.initialized.data[...] = True
    labels = device(np.eye(10)[[0, 3, 7]])
    testing.check_flow(flow, n=3, context=labels)
    assert flow.context_dim == 10 and isinstance(flow, Flow)


def test_conditional_layers_concatenate_the_context_to_the_conditioner_input():
    # The coupling's MLP reads [h1, c]: its first layer has D1 + C inputs.
    flow = AffineCoupling(half_mask(5), hidden=(8,), context_dim=3)
    assert flow.conditioner.layers[0].weight.shape[0] == 2 + 3


# --- a flow written before the contract had a context still works where none is given ---------------
class _OldStyleShift(Flow):
    """A flow as students wrote them before contexts: forward(self, x), inverse(self, z)."""

    def __init__(self, dim):
        self.event_shape = (dim,)

    def forward(self, x):
        x = self._check_input(x)
        return x + 1.5, ops.sum(x * 0.0, axis=1)

    def inverse(self, z):
        z = self._check_input(z, "z")
        return z - 1.5, ops.sum(z * 0.0, axis=1)


def test_a_flow_without_a_context_argument_runs_unconditioned_everywhere():
    old = _OldStyleShift(2)
    testing.check_flow(old)
    model = models.NormalizingFlow(Sequential([old, AffineCoupling(half_mask(2), hidden=(4,))]))
    x = device(np.zeros((3, 2)))
    assert_close(model.log_prob(x).data, host(model.base.log_prob(x + 1.5).data))  # log-dets 0: a pure shift
    assert model.sample(4, seed=0).shape == (4, 2)
    assert np.isfinite(train.evaluate_nll(model, x))


def test_a_conditional_run_resumed_ends_where_an_uninterrupted_one_does():
    x, c = _two_class_data(n=256)
    whole = _conditional_model(seed=3)
    train.fit(whole, device(x), steps=12, batch_size=64, context=device(c), progress=False, seed=1)
    part = _conditional_model(seed=3)
    state = train.fit(part, device(x), steps=5, batch_size=64, context=device(c), progress=False, seed=1)["state"]
    resumed = _conditional_model(seed=3)
    train.fit(resumed, device(x), steps=12, batch_size=64, context=device(c), progress=False, seed=None, resume=state)
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert_close(b.data, host(a.data), atol=1e-12, err_msg=name)  # the same batches, with their contexts


def test_a_base_of_another_shape_or_without_its_methods_is_refused():
    flow = models.realnvp(2, layers=1, hidden=4).flow
    with pytest.raises(ValueError, match=r"the base's event_shape \(3,\) is not the flow's latent shape \(2,\)"):
        models.NormalizingFlow(flow, base=models.make_base("mixture", (3,), components=2, seed=0))
    with pytest.raises(
        ValueError, match=r"base must have log_prob and sample methods, object lacks \['log_prob', 'sample'\]"
    ):
        models.NormalizingFlow(flow, base=object())
    with pytest.raises(ValueError, match="unknown base 'laplace'"):
        models.build("realnvp", 2, base="laplace")
    with pytest.raises(ValueError, match=r"the mixture base is for vectors, event shape \(D,\), not \(1, 8, 8\)"):
        models.build("glow", (1, 8, 8), base="mixture")
    model = models.build("realnvp", 2, base="mixture", components=3, layers=1, hidden=4, seed=0)
    assert model.base.components == 3 and any(name == "base.means" for name, _ in model.named_parameters())
