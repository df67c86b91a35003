"""The sinh-arcsinh transformer: two parameters that bend a distribution's skew and tails.

    z = g(h; eps, delta) = sinh(delta * asinh(h) - eps),     delta = e^s > 0,  theta = (eps, s).

Read it inside out: asinh takes h to a scale on which the tails are compressed
(asinh h ~ sign(h) log 2|h|), the affine step delta u - eps stretches (delta > 1) or
shrinks that scale and shifts it, and sinh goes back. Applied to a standard normal, the
inverse map gives the sinh-arcsinh family of Jones and Pewsey: eps sets the skew (its sign
the direction), delta the weight of the tails (delta < 1 in the normalizing direction
means heavier tails in the data), and theta = 0 is the identity (sinh(asinh h) = h).

Inverse: h = sinh((asinh(z) + eps) / delta). Both maps are strictly increasing bijections of
R, because sinh, asinh and u -> delta u - eps with delta > 0 are.

Derivative, by the chain rule with asinh'(h) = 1 / sqrt(1 + h^2) and sinh' = cosh:

    g'(h) = cosh(delta asinh(h) - eps) * delta / sqrt(1 + h^2),
    log g'(h) = log cosh(u) + s - log1p(h^2) / 2,        u = delta asinh(h) - eps,

with log cosh(u) = u + softplus(-2u) - log 2, which neither overflows nor cancels, and
asinh(h) = sign(h) log1p(|h| + h^2 / (1 + sqrt(1 + h^2))), accurate on both sides of 0.
The inverse's log-derivative is the same formula the other way round (w = (asinh(z) + eps)
/ delta): log cosh(w) - s - log1p(z^2) / 2, which is minus the forward one at z = g(h).

Cost: O(N) each way, no bin search and no iteration. Valid for |h| below ~1e150 (h^2 must
not overflow).

Reference: Jones, Pewsey 2009, "Sinh-arcsinh distributions", Biometrika 96(4). In minflow it
is also the worked example of the README's "Adding a flow": a smooth transformer with a
closed-form inverse, which gives an elementwise flow here and, passed as the transformer
of ``Coupling`` or ``MaskedAutoregressive``, a coupling and an autoregressive flow.
"""

import math

from .. import backend
from ..autodiff import Tensor, as_tensor, ops
from .elementwise import Elementwise
from .transformers import Transformer


def _asinh(h):
    """asinh(h) = sign(h) f(|h|), f(x) = log1p(x + x^2 / (1 + sqrt(1 + x^2))) for x >= 0.

    f(x) = log(x + sqrt(1 + x^2)) rewritten so that no two nearly equal numbers are
    subtracted. The sign is a constant array (+1 at h = 0), so the chain rule through it
    gives asinh'(h) = f'(|h|) = 1 / sqrt(1 + h^2) everywhere, h = 0 included.
    """
    xp = backend.array_module(h.data)
    sign = Tensor(xp.where(h.data >= 0, 1.0, -1.0).astype(h.dtype))
    x = sign * h
    x2 = x * x
    return sign * ops.log1p(x + x2 / (1.0 + ops.sqrt(1.0 + x2)))


def _sinh(u):
    """sinh(u), accurate relative to |u| on both sides of 0.

    (e^u - e^-u) / 2 subtracts two numbers near 1 when |u| is small: its error is ~1e-16
    absolute, 1e-6 relative at u = 1e-10. For |u| < 1 the code uses sinh u = 2t / (1 - t^2)
    with t = tanh(u / 2), which subtracts nothing; the tanh sees 0 where it is not used, so
    that branch stays finite (1 - t^2 would reach 0 for large u).
    """
    small = backend.array_module(u.data).abs(u.data) < 1
    t = ops.tanh(ops.where(small, u, 0.0) / 2)
    return ops.where(small, 2 * t / (1 - t * t), 0.5 * (ops.exp(u) - ops.exp(-u)))


def _log_cosh(u):
    """log cosh(u) = u + log(1 + e^{-2u}) - log 2 = u + softplus(-2u) - log 2."""
    return u + ops.softplus(-2.0 * u) - math.log(2.0)


class SinhArcsinhTransformer(Transformer):
    """g(h; eps, s) = sinh(e^s asinh(h) - eps), theta = (eps, s) (see the module docstring).

    log g'(h) = log cosh(e^s asinh(h) - eps) + s - log1p(h^2) / 2. theta = 0 is the
    identity. Domain: R, onto R. Reference: Jones, Pewsey 2009.
    """

    params_per_dim = 2

    def forward(self, h, theta):
        h, theta = as_tensor(h), self.check_theta(theta)
        eps, s = theta[..., 0], theta[..., 1]
        u = ops.exp(s) * _asinh(h) - eps
        return _sinh(u), _log_cosh(u) + s - 0.5 * ops.log1p(h * h)

    def inverse(self, z, theta):
        z, theta = as_tensor(z), self.check_theta(theta)
        eps, s = theta[..., 0], theta[..., 1]
        w = (_asinh(z) + eps) * ops.exp(-s)
        return _sinh(w), _log_cosh(w) - s - 0.5 * ops.log1p(z * z)


class SinhArcsinh(Elementwise):
    """z_i = sinh(delta_i asinh(x_i) - eps_i), one skew eps_i and tail weight delta_i = e^{s_i} per dimension.

    Inverse: x_i = sinh((asinh(z_i) + eps_i) / delta_i).

    Jacobian: diagonal, so log|det dz/dx| = sum_i [log cosh(u_i) + s_i - log1p(x_i^2) / 2],
    u_i = delta_i asinh(x_i) - eps_i.

    ``Elementwise(SinhArcsinhTransformer(), dim)``: theta (dim, 2) holds (eps, s) and starts
    at 0, the identity. Put it last in a stack (next to the base distribution) to let a
    Gaussian base grow skew and heavy or light tails at the cost of 2 D parameters.
    Cost: O(D) per sample each way.
    Reference: Jones, Pewsey 2009, "Sinh-arcsinh distributions".
    """

    def __init__(self, dim):
        super().__init__(SinhArcsinhTransformer(), dim)

    def extra_repr(self):
        return f"dim={self.dim}"
