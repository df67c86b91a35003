"""The example tables: one small random instance of every flow and transformer class.

The universal suites (``tests/test_flows.py``, ``tests/test_transformers.py``) run on every
entry, and ``discovery.py`` makes sure every class has one: a class without an entry fails
a test that names it. Adding a class means adding one line to a table here.

A flow entry says how to build the class for a dimension D (``build(dim, rng)``, at the
class's own initialisation), how much Gaussian noise to add to its parameters so that the
example is not the identity (``scale``; 0 for a flow without parameters), and the smallest
D it can be built for (``min_dim``: a coupling needs a coordinate on each side of its mask).
A class that can read a context (a ``context_dim`` argument) is marked ``conditional``: its
``build(dim, rng, context_dim)`` makes it conditional, and ``example_flows(dim,
context_dim=C)`` returns those instances, for the same checks at fixed contexts.
A transformer entry says how to build it and how spread out the random theta that
``check_transformer`` draws should be (``theta_scale``).
"""

import zlib
from collections.abc import Callable
from typing import NamedTuple

from .. import backend
from ..flows import autoregressive, coupling, elementwise, linear, multiscale, planar, residual, sinh_arcsinh
from ..flows.base import Inverse, Sequential, check_dim, check_int
from ..flows.splines import PiecewiseLinearTransformer, SplineTransformer
from ..flows.transformers import AdditiveTransformer, AffineTransformer


class Example(NamedTuple):
    build: Callable  # build(dim, rng) -> the flow, at its own initialisation
    scale: float  # standard deviation of the noise added to every parameter
    min_dim: int = 1  # the smallest dim the class can be built for
    conditional: bool = False  # build(dim, rng, context_dim) also builds it conditioned on a context


class TransformerExample(NamedTuple):
    build: Callable  # build() -> the transformer
    theta_scale: float = 1.0  # standard deviation of the random theta check_transformer draws


def _order(dim, rng):
    """A random autoregressive order (argsort of uniforms is a uniform permutation)."""
    return backend.to_numpy(backend.xp().argsort(rng.random(dim))).tolist()


def _moving_permutation(dim, rng):
    """A random permutation that is not the identity (when dim > 1), so the example moves."""
    flow = linear.Permutation.random(dim, seed=rng)
    order = backend.to_numpy(flow.permutation.data).tolist()
    if dim > 1 and order == sorted(order):
        flow = linear.Permutation(order[1:] + order[:1])
    return flow


def _with_shape(flow, dim):
    """Parameter-free elementwise flows accept any shape; examples fix (dim,) for sampling inputs."""
    flow.event_shape = (dim,)
    return flow


def _initialized(flow):
    """Mark every ActNorm below ``flow`` initialised: random parameters, no data-dependent init."""
    for module in flow.modules():
        if isinstance(module, (linear.ActNorm, multiscale.ActNormImage)):
            module.initialized.data[...] = True
    return flow


def _sequential(dim, rng, context_dim):
    """A stack of three kinds of layer; conditioned, its middle one reads the context."""
    middle = (
        autoregressive.MaskedAutoregressive(dim, hidden=(8,), activation="tanh", seed=rng, context_dim=context_dim)
        if context_dim
        else elementwise.RationalQuadraticSpline(dim, bins=4)
    )
    return Sequential([linear.LULinear(dim, seed=rng), middle, linear.Reverse(dim)])


def _inverse(dim, rng, context_dim):
    """The inverse of a spline; conditioned, of a conditional affine MAF (a conditional IAF)."""
    if context_dim:
        return Inverse(
            autoregressive.MaskedAutoregressive(dim, hidden=(8,), activation="tanh", seed=rng, context_dim=context_dim)
        )
    return Inverse(elementwise.RationalQuadraticSpline(dim, bins=4))


# Small conditioners keep the suite fast; tanh, not ReLU, keeps finite differences honest
# (a ReLU kink inside a difference stencil breaks them, see flow_checks.py).
SMALL = {"hidden": (8,), "activation": "tanh"}

FLOW_EXAMPLES = {
    # linear.py
    "DenseLinear": Example(lambda d, rng: linear.DenseLinear(d, seed=rng), 0.3),
    "LULinear": Example(lambda d, rng: linear.LULinear(d, seed=rng), 0.5),
    "Permutation": Example(lambda d, rng: _moving_permutation(d, rng), 0.0),
    "Reverse": Example(lambda d, rng: linear.Reverse(d), 0.0),
    "ActNorm": Example(lambda d, rng: _initialized(linear.ActNorm(d)), 0.5),
    # elementwise.py
    "Elementwise": Example(lambda d, rng: elementwise.Elementwise(AffineTransformer(scale_bound=1.5), d), 0.5),
    "ElementwiseAffine": Example(lambda d, rng: elementwise.ElementwiseAffine(d), 0.5),
    "LeakyReLU": Example(lambda d, rng: _with_shape(elementwise.LeakyReLU(slope=0.3), d), 0.0),
    "Sigmoid": Example(lambda d, rng: _with_shape(elementwise.Sigmoid(), d), 0.0),
    "Logit": Example(lambda d, rng: _with_shape(elementwise.Logit(), d), 0.0),
    "PiecewiseLinear": Example(lambda d, rng: elementwise.PiecewiseLinear(d, bins=5), 1.0),
    "RationalQuadraticSpline": Example(lambda d, rng: elementwise.RationalQuadraticSpline(d, bins=6, bound=3.0), 1.0),
    "SinhArcsinh": Example(lambda d, rng: sinh_arcsinh.SinhArcsinh(d), 0.5),
    # base.py
    "Sequential": Example(lambda d, rng, c=0: _sequential(d, rng, c), 0.5, conditional=True),
    "Inverse": Example(lambda d, rng, c=0: _inverse(d, rng, c), 1.0, conditional=True),
    # coupling.py: a coordinate on each side of the mask, so dim >= 2
    "Coupling": Example(
        lambda d, rng, c=0: coupling.Coupling(
            coupling.half_mask(d), AffineTransformer(), seed=rng, context_dim=c, **SMALL
        ),
        0.5,
        2,
        conditional=True,
    ),
    "AdditiveCoupling": Example(
        lambda d, rng, c=0: coupling.AdditiveCoupling(
            coupling.alternating_mask(d), hidden=(8, 8), activation="tanh", seed=rng, context_dim=c
        ),
        0.5,
        2,
        conditional=True,
    ),
    "AffineCoupling": Example(
        lambda d, rng, c=0: coupling.AffineCoupling(
            coupling.alternating_mask(d, even=False), hidden=(8, 8), activation="tanh", seed=rng, context_dim=c
        ),
        0.5,
        2,
        conditional=True,
    ),
    "SplineCoupling": Example(
        lambda d, rng, c=0: coupling.SplineCoupling(
            coupling.half_mask(d, first=False), bins=4, bound=3.0, seed=rng, context_dim=c, **SMALL
        ),
        0.25,
        2,
        conditional=True,
    ),
    "PiecewiseLinearCoupling": Example(
        lambda d, rng, c=0: coupling.PiecewiseLinearCoupling(
            coupling.alternating_mask(d), bins=4, seed=rng, context_dim=c, **SMALL
        ),
        1.0,
        2,
        conditional=True,
    ),
    # autoregressive.py
    "MaskedAutoregressive": Example(
        lambda d, rng, c=0: autoregressive.MaskedAutoregressive(
            d, hidden=(8, 8), order=_order(d, rng), activation="tanh", seed=rng, context_dim=c
        ),
        0.5,
        conditional=True,
    ),
    "InverseAutoregressive": Example(
        lambda d, rng, c=0: autoregressive.InverseAutoregressive(d, seed=rng, context_dim=c, **SMALL),
        0.5,
        conditional=True,
    ),
    "SplineAutoregressive": Example(
        lambda d, rng, c=0: autoregressive.SplineAutoregressive(
            d, bins=4, bound=3.0, order=_order(d, rng), seed=rng, context_dim=c, **SMALL
        ),
        0.25,
        conditional=True,
    ),
    "SplineInverseAutoregressive": Example(
        lambda d, rng, c=0: autoregressive.SplineInverseAutoregressive(
            d, bins=4, bound=3.0, seed=rng, context_dim=c, **SMALL
        ),
        0.25,
        conditional=True,
    ),
    "PiecewiseLinearAutoregressive": Example(
        lambda d, rng, c=0: autoregressive.PiecewiseLinearAutoregressive(d, bins=4, seed=rng, context_dim=c, **SMALL),
        1.0,
        conditional=True,
    ),
    # residual.py
    "AdditiveResidualCoupling": Example(lambda d, rng: residual.AdditiveResidualCoupling(d, seed=rng, **SMALL), 0.5, 2),
    "ContractiveResidual": Example(lambda d, rng: residual.ContractiveResidual(d, seed=rng, **SMALL), 0.5),
    # planar.py
    "Planar": Example(lambda d, rng: planar.Planar(d, seed=rng), 0.5),
    "Radial": Example(lambda d, rng: planar.Radial(d, seed=rng), 0.5),
    # multiscale.py: d channels of a small image (the finite-difference Jacobian stays small)
    "Squeeze": Example(lambda d, rng: multiscale.Squeeze((d, 4, 2)), 0.0),
    "ActNormImage": Example(lambda d, rng: _initialized(multiscale.ActNormImage(d, 2, 3)), 0.5),
    "InvertibleConv1x1": Example(lambda d, rng: multiscale.InvertibleConv1x1(d, 2, 2, seed=rng), 0.5),
    "MultiScale": Example(
        lambda d, rng, c=0: _initialized(
            multiscale.MultiScale((1, 4, 4), scales=2, steps_per_scale=1, seed=rng, context_dim=c, **SMALL)
        ),
        0.3,
        conditional=True,
    ),
}

TRANSFORMER_EXAMPLES = {
    "AdditiveTransformer": TransformerExample(AdditiveTransformer),
    "AffineTransformer": TransformerExample(AffineTransformer),
    "PiecewiseLinearTransformer": TransformerExample(lambda: PiecewiseLinearTransformer(bins=4)),
    "SplineTransformer": TransformerExample(lambda: SplineTransformer(bins=5, bound=3.0)),
    "SinhArcsinhTransformer": TransformerExample(sinh_arcsinh.SinhArcsinhTransformer, 0.5),
}


def _perturb(flow, rng, scale):
    """Add N(0, scale^2) to every floating parameter, so no example is the identity."""
    for p in flow.parameters():
        p.data = p.data + scale * rng.standard_normal(p.shape).astype(p.dtype)
    return flow


def example_flows(dim, seed=0, dtype=None, context_dim=0):
    """{class name: a small random instance} for every flow class in minflow.

    Every entry is built with random, non-identity parameters (perturbed from the class's
    own initialisation), so a test on it proves something. ``dtype`` casts the result.
    Classes that need more dimensions than ``dim`` (a coupling needs 2) are left out. Each
    class draws from its own stream (seeded by ``seed`` and its name), so adding a class
    changes no other example. ``context_dim`` C > 0: only the classes that can read a
    context, each built conditioned on a (B, C) one.
    """
    dim = check_dim(dim, "example_flows")
    context_dim = check_int(context_dim, "context_dim", "example_flows", minimum=0)
    flows = {}
    for name in sorted(FLOW_EXAMPLES):
        example = FLOW_EXAMPLES[name]
        if dim < example.min_dim or (context_dim and not example.conditional):
            continue
        rng = backend.rng(seed * 1000 + zlib.crc32(name.encode()) % 1000)
        flow = example.build(dim, rng, context_dim) if context_dim else example.build(dim, rng)
        flows[name] = _perturb(flow, rng, example.scale)
        if dtype is not None:
            flows[name].astype(dtype)
    return flows


def example_flow_names(conditional=False):
    """The class names of the example table (``conditional``: of those that can read a context)."""
    return sorted(name for name, example in FLOW_EXAMPLES.items() if example.conditional or not conditional)


def example_transformers():
    """{class name: an instance} for every transformer class in minflow."""
    return {name: TRANSFORMER_EXAMPLES[name].build() for name in sorted(TRANSFORMER_EXAMPLES)}


def example_transformer_names():
    return sorted(TRANSFORMER_EXAMPLES)
