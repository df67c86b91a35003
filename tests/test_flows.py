"""The universal flow suite: every flow class in minflow, through minflow.testing.check_flow.

check_flow proves, for one flow and one batch: the round trip both ways, the log-det
against a central-difference Jacobian, the inverse log-det against minus the forward one,
batch independence, and the NLL gradient against finite differences. Here it runs over
every entry of example_flows (random, non-identity parameters), for several dimensions
and seeds, in float64 and float32.
"""

import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minflow
import minflow.flows
from minflow import backend, testing
from minflow.flows import base

NAMES = testing.example_flow_names()
DISCOVERED = sorted(testing.flow_classes())


# --- registration: classes are found, not listed ------------------------------------------------
@pytest.mark.parametrize("name", DISCOVERED)
def test_every_flow_class_has_an_example(name):
    assert name in testing.FLOW_EXAMPLES, (
        f"flow class {name} (in {testing.flow_classes()[name].__module__}) has no example: "
        "add an entry to FLOW_EXAMPLES in minflow/testing/examples.py"
    )


@pytest.mark.parametrize("name", DISCOVERED + sorted(testing.transformer_classes()))
def test_every_flow_and_transformer_class_is_exported(name):
    assert name in minflow.flows.__all__ and hasattr(minflow.flows, name), (
        f"{name} is defined under minflow.flows but not exported: add it to minflow/flows/__init__.py"
    )


def test_every_example_names_a_discovered_class():
    stale = sorted(set(NAMES) - set(DISCOVERED))
    assert not stale, f"FLOW_EXAMPLES entries without a flow class of that name: {stale}"


def test_discovery_finds_a_class_in_a_module_nobody_imports(tmp_path, monkeypatch):
    # A package with one module that no code imports, holding a new flow: walking the package
    # must find it (and the example check above would then fail, naming it).
    package = tmp_path / "newflows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "shear.py").write_text(
        textwrap.dedent(
            """
            from minflow.flows.base import Flow
            from minflow.flows.transformers import Transformer

            class Shear(Flow):
                pass

            class _Helper(Flow):
                pass

            class Cubic(Transformer):
                params_per_dim = 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import newflows

    try:
        assert set(testing.classes_defined_under(newflows, base.Flow)) == {"Shear"}
        assert set(testing.transformer_classes(newflows)) == {"Cubic"}
        assert "Shear" not in testing.FLOW_EXAMPLES  # so a test like the one above names it
    finally:
        for name in ("newflows", "newflows.shear"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_not_the_identity(name):
    flow = testing.example_flows(3, seed=1)[name]
    x = testing.sample_inputs(flow, 8, seed=2)
    z, log_det = flow.forward(x)
    moved = float(abs(z.data.reshape(x.shape[0], -1) - x.reshape(x.shape[0], -1)).max())  # Squeeze reshapes
    if name in ("Permutation", "Reverse", "Squeeze"):  # rearrangements: they move values, keep volume
        assert moved > 0 and float(abs(log_det.data).max()) == 0
    else:
        assert moved > 1e-2, f"{name} example barely moves its input (max change {moved})"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_flow_properties_float64(name, dim, seed):
    flows = testing.example_flows(dim, seed)
    if name not in flows:
        pytest.skip(f"{name} needs more than {dim} dimension(s)")
    flow = flows[name]
    testing.check_flow(flow, n=6, seed=seed)


@pytest.mark.parametrize("name", NAMES)
def test_flow_properties_float32(name):
    # float32 flows pass the same checks with float32 tolerances (see minflow.testing),
    # except the gradient one: a float32 finite difference needs a step (3e-3) so wide that
    # it straddles a spline's moving knots, where the loss is only once differentiable.
    # float32 gradients are compared with float64 ones instead (next test).
    flow = testing.example_flows(3, seed=4, dtype="float32")[name]
    testing.check_flow(flow, n=6, seed=4, gradients=False)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_close_to_float64(name):
    flow64 = testing.example_flows(3, seed=5)[name]
    flow32 = testing.example_flows(3, seed=5, dtype="float32")[name]
    x = testing.sample_inputs(flow64, 16, seed=6)
    z64, log_det64 = flow64.forward(x)
    z32, log_det32 = flow32.forward(x.astype("float32"))
    assert z32.dtype == "float32" and log_det32.dtype == "float32", "float32 in, float32 out"
    # float32 carries ~7 significant digits; a few layers of exp/log and a solve lose at
    # most two of them on these well-conditioned examples.
    assert abs(z32.data - z64.data).max() <= 1e-4 * (1 + abs(z64.data).max())
    assert abs(log_det32.data - log_det64.data).max() <= 1e-4 * (1 + abs(log_det64.data).max())
    for flow, x_ in ((flow64, x), (flow32, x.astype("float32"))):
        z, log_det = flow.forward(x_)
        (0.5 * (z * z).sum() - log_det.sum()).backward()
    for p64, p32 in zip(flow64.parameters(), flow32.parameters()):
        assert p32.grad.dtype == "float32"
        scale = 1 + abs(p64.grad).max()
        assert abs(p32.grad - p64.grad).max() <= 1e-3 * scale, f"{name}: float32 gradient drifts from float64"


@given(testing.flows(), st.integers(0, 2**16))
def test_flow_properties_hypothesis(name_and_flow, seed):
    _, flow = name_and_flow
    testing.check_flow(flow, n=3, seed=seed)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_shape_raises_naming_both_shapes(name):
    flow = testing.example_flows(3, seed=0)[name]
    xp = backend.xp()
    for bad in (xp.zeros((4, 2)), xp.zeros(3), xp.zeros((2, 3, 1))):
        with pytest.raises(ValueError, match=r"must have shape \(B, |batched") as error:
            flow.forward(bad)
        assert str(tuple(bad.shape)) in str(error.value) or "batched" in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_model_log_prob_integrates_change_of_variables(name):
    """log_prob(x) = log N(f(x)) + log|det df/dx|, and sample() returns points of the data space."""
    flow = testing.example_flows(2, seed=3)[name]
    if flow.output_domain != base.REAL_LINE:
        with pytest.raises(ValueError, match="default base N\\(0, I\\) lives on the whole real line"):
            minflow.NormalizingFlow(flow)
        return
    model = minflow.NormalizingFlow(flow)
    x = testing.sample_inputs(flow, 5, seed=1)
    z, log_det = flow.forward(x)
    latent_shape = getattr(flow, "latent_shape", flow.event_shape)  # a Squeeze changes the shape
    expected = minflow.StandardNormal(latent_shape).log_prob(z).data + log_det.data
    assert abs(model.log_prob(x).data - expected).max() < 1e-12
    samples = model.sample(7, seed=0)
    assert samples.shape == (7, *flow.event_shape)
    low, high = flow.input_domain
    assert (samples >= low).all() and (samples <= high).all()
