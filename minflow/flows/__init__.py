"""The flows: each file teaches one family (see its module docstring).

base.py            the contract: Flow, Sequential, Inverse
linear.py          Linear, LULinear, Permutation, Reverse, ActNorm
transformers.py    elementwise maps as plain functions (affine, leaky ReLU, sigmoid/logit,
                   piecewise-linear, rational-quadratic spline) and as objects for conditioners
elementwise.py     those maps as flows with trainable parameters
coupling.py        NICE, RealNVP, spline and piecewise-linear couplings
autoregressive.py  MADE, MAF, IAF
residual.py        RevNet-style additive residual coupling, contractive i-ResNet block
planar.py          planar and radial flows
multiscale.py      squeeze, 1x1 convolutions, per-channel ActNorm, the multi-scale model
"""

from .autoregressive import MADE, InverseAutoregressive, MaskedAutoregressive
from .base import Flow, Inverse, Sequential
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, PiecewiseLinearCoupling, SplineCoupling
from .elementwise import ElementwiseAffine, LeakyReLU, Logit, PiecewiseLinear, RationalQuadraticSpline, Sigmoid
from .linear import ActNorm, Linear, LULinear, Permutation, Reverse
from .multiscale import ActNormImage, InvertibleConv1x1, MultiScale, Squeeze
from .planar import Planar, Radial
from .residual import AdditiveResidualCoupling, ContractiveResidual

__all__ = [
    "Flow",
    "Inverse",
    "Sequential",
    "ActNorm",
    "Linear",
    "LULinear",
    "Permutation",
    "Reverse",
    "ElementwiseAffine",
    "LeakyReLU",
    "Logit",
    "PiecewiseLinear",
    "RationalQuadraticSpline",
    "Sigmoid",
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "PiecewiseLinearCoupling",
    "SplineCoupling",
    "MADE",
    "InverseAutoregressive",
    "MaskedAutoregressive",
    "AdditiveResidualCoupling",
    "ContractiveResidual",
    "Planar",
    "Radial",
    "ActNormImage",
    "InvertibleConv1x1",
    "MultiScale",
    "Squeeze",
]
