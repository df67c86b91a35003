"""The flows: each file teaches one family (see its module docstring).

base.py            the contract: Flow, Sequential, Inverse
linear.py          DenseLinear, LULinear, Permutation, Reverse, ActNorm
transformers.py    the Transformer protocol; simple elementwise maps (affine, leaky ReLU,
                   sigmoid/logit) as plain functions and as Transformers
splines.py         maps built from K bins: piecewise-linear (UDL eq. 16.12), rational-quadratic
                   spline (Neural Spline Flows), and their Transformers
elementwise.py     Elementwise(transformer, dim): a transformer with free parameters; fixed maps
coupling.py        Coupling(mask, transformer): NICE, RealNVP, spline and piecewise-linear couplings
autoregressive.py  MADE; MaskedAutoregressive(dim, transformer) (MAF, spline MAF), IAF
residual.py        RevNet-style additive residual coupling, contractive i-ResNet block
sinh_arcsinh.py    the sinh-arcsinh transformer (skew and tails) and its elementwise flow
planar.py          planar and radial flows
multiscale.py      squeeze, 1x1 convolutions, per-channel ActNorm, the multi-scale model
"""

from .autoregressive import (
    MADE,
    InverseAutoregressive,
    MaskedAutoregressive,
    PiecewiseLinearAutoregressive,
    SplineAutoregressive,
    SplineInverseAutoregressive,
)
from .base import Flow, Inverse, Sequential
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, PiecewiseLinearCoupling, SplineCoupling
from .elementwise import (
    Elementwise,
    ElementwiseAffine,
    LeakyReLU,
    Logit,
    PiecewiseLinear,
    RationalQuadraticSpline,
    Sigmoid,
)
from .linear import ActNorm, DenseLinear, LULinear, Permutation, Reverse
from .multiscale import ActNormImage, InvertibleConv1x1, MultiScale, Squeeze
from .planar import Planar, Radial
from .residual import AdditiveResidualCoupling, ContractiveResidual
from .sinh_arcsinh import SinhArcsinh, SinhArcsinhTransformer
from .splines import PiecewiseLinearTransformer, SplineTransformer
from .transformers import AdditiveTransformer, AffineTransformer, Transformer

__all__ = [
    "Flow",
    "Inverse",
    "Sequential",
    "ActNorm",
    "DenseLinear",
    "LULinear",
    "Permutation",
    "Reverse",
    "Elementwise",
    "ElementwiseAffine",
    "LeakyReLU",
    "Logit",
    "PiecewiseLinear",
    "RationalQuadraticSpline",
    "Sigmoid",
    "SinhArcsinh",
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "PiecewiseLinearCoupling",
    "SplineCoupling",
    "MADE",
    "InverseAutoregressive",
    "MaskedAutoregressive",
    "PiecewiseLinearAutoregressive",
    "SplineAutoregressive",
    "SplineInverseAutoregressive",
    "AdditiveResidualCoupling",
    "ContractiveResidual",
    "Planar",
    "Radial",
    "ActNormImage",
    "InvertibleConv1x1",
    "MultiScale",
    "Squeeze",
    "Transformer",
    "AdditiveTransformer",
    "AffineTransformer",
    "PiecewiseLinearTransformer",
    "SplineTransformer",
    "SinhArcsinhTransformer",
]
