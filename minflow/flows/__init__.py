"""The flows: each file teaches one family (see its module docstring).

    base.py          the contract: Flow, Sequential, Inverse
    linear.py        Linear, LULinear, Permutation, Reverse, ActNorm
    transformers.py  elementwise maps as plain functions (affine, leaky ReLU, sigmoid/logit,
                     piecewise-linear, rational-quadratic spline)
    elementwise.py   those maps as flows with trainable parameters
"""

from .base import Flow, Inverse, Sequential
from .elementwise import ElementwiseAffine, LeakyReLU, Logit, PiecewiseLinear, RationalQuadraticSpline, Sigmoid
from .linear import ActNorm, Linear, LULinear, Permutation, Reverse

__all__ = [
    "Flow", "Inverse", "Sequential",
    "ElementwiseAffine", "LeakyReLU", "Logit", "PiecewiseLinear", "RationalQuadraticSpline", "Sigmoid",
    "ActNorm", "Linear", "LULinear", "Permutation", "Reverse",
]
