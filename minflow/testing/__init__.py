"""The verification toolkit: the checks minflow's own tests run, for your flows too.

A student who writes a new flow or transformer verifies it with one call::

    from minflow.testing import check_flow, check_transformer
    check_flow(MyFlow(dim=3))                 # raises AssertionError naming what is wrong
    check_transformer(MyTransformer())

flow_checks.py          check_flow (with a context for conditional flows), check_gradients, numerical_jacobian,
                        sample_inputs, sample_contexts, graph_nbytes
transformer_checks.py   check_transformer: the Transformer contract
examples.py             the example tables: a small random instance of every flow and transformer
discovery.py            every Flow and Transformer class under minflow.flows, found by walking the package
strategies.py           hypothesis strategies over the examples: flows(), conditional_flows(), transformers(),
                        inputs()
"""

from .discovery import classes_defined_under, flow_classes, transformer_classes
from .examples import (
    FLOW_EXAMPLES,
    TRANSFORMER_EXAMPLES,
    Example,
    TransformerExample,
    _perturb,
    example_flow_names,
    example_flows,
    example_transformer_names,
    example_transformers,
)
from .flow_checks import (
    _TOLERANCES,
    check_flow,
    check_gradients,
    graph_nbytes,
    numerical_jacobian,
    sample_contexts,
    sample_inputs,
)
from .strategies import conditional_flows, flows, inputs, transformers
from .transformer_checks import check_transformer

__all__ = [
    "FLOW_EXAMPLES",
    "TRANSFORMER_EXAMPLES",
    "Example",
    "TransformerExample",
    "check_flow",
    "check_gradients",
    "check_transformer",
    "classes_defined_under",
    "conditional_flows",
    "example_flow_names",
    "example_flows",
    "example_transformer_names",
    "example_transformers",
    "flow_classes",
    "flows",
    "graph_nbytes",
    "inputs",
    "numerical_jacobian",
    "sample_contexts",
    "sample_inputs",
    "transformer_classes",
    "transformers",
]
