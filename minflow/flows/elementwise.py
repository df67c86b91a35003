"""Elementwise flows: one scalar map per coordinate, with free trainable parameters.

Each class here is a thin wrapper over a transformer of ``transformers.py``: the
parameters are plain trainable arrays, one set per dimension, shared by every sample of
the batch. Because coordinate i of z depends on coordinate i of x only, the Jacobian of
every flow in this file is diagonal::

            [ g_1'(x_1)     0      ...      0     ]
    dz/dx = [     0     g_2'(x_2)  ...      0     ]
            [    ...       ...     ...     ...    ]
            [     0         0      ...  g_D'(x_D) ]

and the determinant of a diagonal matrix is the product of its diagonal, so

    log|det dz/dx| = sum_i log|g_i'(x_i)|,

a sum of the transformer's log-derivatives over all non-batch axes: O(D) per sample,
each way. These flows cannot mix coordinates on their own (that is what linear, coupling
and autoregressive layers are for), but they are the last ingredient of all of them.
"""

import math
import numbers

from .. import backend
from ..autodiff import ops
from ..nn import Parameter
from . import transformers
from .base import Flow, check_dim


def _sum_over_event(log_derivative):
    """(B, ...) log-derivatives -> (B,) log-determinant: the diagonal Jacobian's log|det|."""
    return ops.sum(log_derivative, axis=tuple(range(1, log_derivative.ndim)))


def _zeros(*shape):
    return backend.xp().zeros(shape, dtype=backend.get_default_dtype())


class ElementwiseAffine(Flow):
    """z = x * exp(log_scale) + shift, one scale and shift per dimension.

    Inverse: x = (z - shift) * exp(-log_scale).

    Jacobian: diagonal, diag(exp(log_scale_1), ..., exp(log_scale_D)), the same for every
    sample, so

        log|det dz/dx| = sum_i log_scale_i      (independent of x).

    Parameters ``shift`` and ``log_scale``, shape (dim,), start at zero: the identity.
    Parameterising the scale by its log keeps it positive (the map invertible) with no
    constraint on the optimizer.
    Cost: O(D) per sample each way.
    Reference: the affine transformer of Dinh, Sohl-Dickstein, Bengio 2017 ("Real NVP")
    without its conditioner; Kingma, Dhariwal 2018 ("Glow") use it per channel as ActNorm.
    """

    def __init__(self, dim):
        self.dim = check_dim(dim, "ElementwiseAffine")
        self.event_shape = (self.dim,)
        self.shift = Parameter(_zeros(self.dim))
        self.log_scale = Parameter(_zeros(self.dim))

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.affine(x, self.shift, self.log_scale)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.affine_inverse(z, self.shift, self.log_scale)
        return x, _sum_over_event(log_derivative)


class LeakyReLU(Flow):
    """z = x for x > 0 and z = slope * x for x <= 0, elementwise, with a fixed slope > 0.

    Inverse: x = z for z > 0 and z / slope for z <= 0.

    Jacobian: diagonal with entries 1 (x_i > 0) or slope (x_i <= 0), so

        log|det dz/dx| = log(slope) * #{i : x_i <= 0}.

    Any positive slope gives a bijection of R (slope > 1 too; slope = 1 is the identity).
    No parameters; works on any event shape.
    Cost: O(D) per sample each way.
    Reference: the activation of Maas, Hannun, Ng 2013, used as an invertible layer in
    e.g. Oliva et al. 2018 ("Transformation autoregressive networks").
    """

    def __init__(self, slope=0.1):
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not 0 < slope < math.inf:
            raise ValueError(f"LeakyReLU: slope must be a positive finite number, got {slope!r}")
        self.slope = float(slope)

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.leaky_relu(x, self.slope)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.leaky_relu_inverse(z, self.slope)
        return x, _sum_over_event(log_derivative)

    def extra_repr(self):
        return f"slope={self.slope}"


class Sigmoid(Flow):
    """z = sigmoid(x) = 1 / (1 + e^-x), elementwise: R -> (0, 1).

    Inverse: x = logit(z) = log z - log(1 - z), defined on the open interval (0, 1) only;
    ``inverse`` raises ``ValueError`` for anything else.

    Jacobian: diagonal with entries sigmoid'(x_i) = sigmoid(x_i) sigmoid(-x_i), so

        log|det dz/dx| = sum_i [-softplus(-x_i) - softplus(x_i)],

    written with softplus so that it stays finite where sigmoid(x) rounds to 1.
    No parameters; works on any event shape. ``output_domain`` is (0, 1).
    Cost: O(D) per sample each way.
    Reference: e.g. Papamakarios, Pavlakou, Murray 2017 ("Masked autoregressive flow"),
    where the logit maps bounded data (pixels) to R.
    """

    output_domain = (0.0, 1.0)

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.sigmoid(x)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.logit(z)
        return x, _sum_over_event(log_derivative)


class Logit(Flow):
    """z = logit(x) = log x - log(1 - x), elementwise: (0, 1) -> R; the inverse of Sigmoid.

    Inverse: x = sigmoid(z).

    Jacobian: diagonal with entries 1 / (x_i (1 - x_i)), so

        log|det dz/dx| = -sum_i [log x_i + log(1 - x_i)].

    ``forward`` checks that x lies in the open interval (0, 1) and raises ``ValueError``
    with the offending range otherwise (instead of returning inf or NaN).
    No parameters; works on any event shape. ``input_domain`` is (0, 1).
    Cost: O(D) per sample each way.
    Reference: the logit preprocessing of Dinh et al. 2017 ("Real NVP") and Papamakarios
    et al. 2017 ("Masked autoregressive flow") for data in a bounded interval.
    """

    input_domain = (0.0, 1.0)

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.logit(x)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.sigmoid(z)
        return x, _sum_over_event(log_derivative)


class PiecewiseLinear(Flow):
    """z_i = f(x_i; phi_i): the monotonic piecewise-linear map of [0, 1], one per dimension.

    With K equal-width bins and bin masses phi_i = softmax(logits_i) (positive, summing
    to 1), a point h in bin b = floor(hK) + 1 goes to

        f(h) = sum_{k<b} phi_k + (hK - b + 1) phi_b,

    so the bin [(b-1)/K, b/K] is stretched onto a piece of height phi_b.
    Inverse: find the bin of z among the cumulative masses, then invert the linear piece
    (analytic, no bisection).

    Jacobian: diagonal with entries f'(x_i) = K phi_{i, b(x_i)}, so

        log|det dz/dx| = sum_i [log K + log phi_{i, b(x_i)}].

    Parameter ``logits``, shape (dim, bins), starts at zero: equal masses 1/K, the
    identity. Both domains are [0, 1], checked (values outside raise ``ValueError``); put
    a Sigmoid in front to use it on R.
    Cost: O(D) per sample forward, O(D K) inverse (the bin search).
    Reference: Understanding Deep Learning (Prince 2023), section 16.3.2, eq. 16.12;
    Mueller et al. 2019, "Neural importance sampling" (piecewise-linear coupling).
    """

    input_domain = (0.0, 1.0)
    output_domain = (0.0, 1.0)

    def __init__(self, dim, bins=5):
        self.dim = check_dim(dim, "PiecewiseLinear")
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ValueError(f"PiecewiseLinear: bins must be a positive int, got {bins!r}")
        self.bins = int(bins)
        self.event_shape = (self.dim,)
        self.logits = Parameter(_zeros(self.dim, self.bins))

    def bin_masses(self):
        """phi = softmax(logits) along the bins: (dim, bins), positive, rows summing to 1."""
        return ops.softmax(self.logits, axis=-1)

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.piecewise_linear(x, self.bin_masses())
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.piecewise_linear_inverse(z, self.bin_masses())
        return x, _sum_over_event(log_derivative)

    def extra_repr(self):
        return f"dim={self.dim}, bins={self.bins}"


class RationalQuadraticSpline(Flow):
    """z_i = g(x_i; theta_i): a monotonic rational-quadratic spline per dimension, identity tails.

    Inside [-B, B], K bins with knots (x_k, y_k) and knot derivatives d_k; for x in bin k,
    with xi = (x - x_k) / w_k and s_k = h_k / w_k,

        g(x) = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)],

    and g(x) = x outside [-B, B]. Inverse: in the bin of z, solve a quadratic in xi with
    the stable root (see ``transformers.rational_quadratic_spline`` for the derivation).

    Jacobian: diagonal with entries g'(x_i) (the formula in ``transformers``; 1 in the
    tails), so

        log|det dz/dx| = sum_i log g'(x_i),   and the tail terms are exactly 0.

    Parameters ``unnormalized_widths``, ``unnormalized_heights`` (dim, bins) and
    ``unnormalized_derivatives`` (dim, bins - 1) are mapped to valid widths, heights and
    derivatives by ``transformers.rational_quadratic_parameters`` (softmax with a minimum
    bin size, softplus plus a minimum slope, boundary derivatives 1). They start as the
    identity: equal bins and all derivatives 1.
    Cost: O(D K) per sample each way (the bin search); parameters O(D K).
    Reference: Durkan, Bekasov, Murray, Papamakarios 2019, "Neural Spline Flows".
    """

    min_derivative = 1e-3  # smallest slope at a knot, so the map stays strictly increasing

    def __init__(self, dim, bins=8, bound=3.0):
        self.dim = check_dim(dim, "RationalQuadraticSpline")
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 2:
            raise ValueError(f"RationalQuadraticSpline: bins must be an int >= 2, got {bins!r}")
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not 0 < bound < math.inf:
            raise ValueError(f"RationalQuadraticSpline: bound must be a positive finite number, got {bound!r}")
        self.bins, self.bound = int(bins), float(bound)
        self.event_shape = (self.dim,)
        self.unnormalized_widths = Parameter(_zeros(self.dim, self.bins))
        self.unnormalized_heights = Parameter(_zeros(self.dim, self.bins))
        # softplus(u) + min_derivative = 1  <=>  u = log(e^{1 - min_derivative} - 1)
        identity_derivative = math.log(math.expm1(1.0 - self.min_derivative))
        self.unnormalized_derivatives = Parameter(_zeros(self.dim, self.bins - 1) + identity_derivative)

    def spline_parameters(self):
        """(widths, heights, derivatives): (dim, bins), (dim, bins), (dim, bins + 1)."""
        return transformers.rational_quadratic_parameters(
            self.unnormalized_widths,
            self.unnormalized_heights,
            self.unnormalized_derivatives,
            self.bound,
            min_derivative=self.min_derivative,
        )

    def forward(self, x):
        x = self._check_input(x)
        z, log_derivative = transformers.rational_quadratic_spline(x, *self.spline_parameters(), self.bound)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.rational_quadratic_spline_inverse(z, *self.spline_parameters(), self.bound)
        return x, _sum_over_event(log_derivative)

    def extra_repr(self):
        return f"dim={self.dim}, bins={self.bins}, bound={self.bound}"
