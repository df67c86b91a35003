"""Hypothesis strategies over the example tables.

hypothesis is a test dependency (``minflow[test]``), not a dependency of minflow, and
``import minflow`` imports ``minflow.testing``; so it is imported inside the functions, when
a strategy is actually made.
"""

from .examples import FLOW_EXAMPLES, example_flow_names, example_flows, example_transformer_names, example_transformers
from .flow_checks import sample_inputs


def flows(names=None, dims=(1, 2, 3, 5)):
    """A hypothesis strategy of (name, flow) pairs drawn from :func:`example_flows`.

    The name is drawn from ``names`` (default: every example), the dimension from those of
    ``dims`` the example allows, and the seed of :func:`example_flows` from 0..2**16
    inclusive: enough distinct examples, and a small non-negative int that every backend's
    random generator accepts.
    """
    from hypothesis import strategies as st

    names = list(names or example_flow_names())

    @st.composite
    def draw(draw_):
        name = draw_(st.sampled_from(names))
        dim = draw_(st.sampled_from([d for d in dims if d >= FLOW_EXAMPLES[name].min_dim]))
        seed = draw_(st.integers(0, 2**16))
        return name, example_flows(dim, seed)[name]

    return draw()


def conditional_flows(names=None, dims=(1, 2, 3, 5), context_dims=(1, 2, 4)):
    """A hypothesis strategy of (name, flow) pairs: the examples that read a context, built
    conditioned on one of width drawn from ``context_dims`` (``example_flows(dim, seed,
    context_dim=C)``); names, dimensions and seeds are drawn as in :func:`flows`."""
    from hypothesis import strategies as st

    names = list(names or example_flow_names(conditional=True))

    @st.composite
    def draw(draw_):
        name = draw_(st.sampled_from(names))
        dim = draw_(st.sampled_from([d for d in dims if d >= FLOW_EXAMPLES[name].min_dim]))
        context_dim = draw_(st.sampled_from(list(context_dims)))
        seed = draw_(st.integers(0, 2**16))
        return name, example_flows(dim, seed, context_dim=context_dim)[name]

    return draw()


def transformers(names=None):
    """A hypothesis strategy of (name, transformer) pairs drawn from :func:`example_transformers`."""
    from hypothesis import strategies as st

    names = list(names or example_transformer_names())
    return st.sampled_from(names).map(lambda name: (name, example_transformers()[name]))


def inputs(flow, batch_sizes=(1, 2, 7)):
    """A hypothesis strategy of input batches inside ``flow``'s domain (via :func:`sample_inputs`).

    The batch size is drawn from ``batch_sizes`` and the seed of :func:`sample_inputs` from
    0..2**16 inclusive: enough distinct batches, and a small non-negative int that every
    backend's random generator accepts.
    """
    from hypothesis import strategies as st

    return st.builds(
        lambda n, seed: sample_inputs(flow, n, seed),
        st.sampled_from(list(batch_sizes)),
        st.integers(0, 2**16),
    )
