"""Elementwise flows: one scalar map per coordinate, with free trainable parameters.

``Elementwise(transformer, dim)`` turns any transformer (``transformers.py``,
``splines.py``) into a flow: the parameters theta (dim, params_per_dim) are plain
trainable arrays, one set per dimension, shared by every sample of the batch, and start
at 0, the identity.
``ElementwiseAffine``, ``PiecewiseLinear``, ``RationalQuadraticSpline`` and ``SinhArcsinh``
(its own file) are named instances. Because coordinate i of z depends on coordinate i of x
only, the Jacobian of every flow in this file is diagonal::

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

from .. import backend
from ..autodiff import ops
from ..nn import Parameter
from . import transformers
from .base import Flow, check_dim, check_positive
from .splines import PiecewiseLinearTransformer, SplineTransformer
from .transformers import AffineTransformer, Transformer


def _sum_over_event(log_derivative):
    """(B, ...) log-derivatives -> (B,) log-determinant: the diagonal Jacobian's log|det|."""
    return ops.sum(log_derivative, axis=tuple(range(1, log_derivative.ndim)))


def _zeros(*shape):
    return backend.xp().zeros(shape, dtype=backend.get_default_dtype())


class Elementwise(Flow):
    """z_i = g(x_i; theta_i): one transformer g applied to every coordinate, theta free.

    Inverse: x_i = g^{-1}(z_i; theta_i).

    Jacobian: diagonal, with entries g'(x_i; theta_i) > 0 (see the module docstring), so

        log|det dz/dx| = sum_i log g'(x_i; theta_i).

    ``transformer``: a :class:`~minflow.flows.transformers.Transformer`; ``dim``: D. The
    parameter ``theta`` (D, params_per_dim) starts at 0, which every transformer maps to the
    identity, and broadcasts against x (B, D): one set of parameters per dimension, shared by
    the batch. The domains are the transformer's.
    Cost: that of the transformer on B D numbers, each way; D params_per_dim parameters.
    The same transformer with theta from a network gives ``Coupling(mask, transformer)`` and
    ``MaskedAutoregressive(dim, transformer)``.
    """

    def __init__(self, transformer, dim):
        if not isinstance(transformer, Transformer):
            raise ValueError(
                f"{type(self).__name__}: transformer must be a Transformer, got {type(transformer).__name__}"
            )
        self.dim = check_dim(dim, type(self).__name__)
        self.transformer = transformer
        self.event_shape = (self.dim,)
        self.input_domain = self.output_domain = tuple(transformer.domain)
        self.theta = Parameter(_zeros(self.dim, transformer.params_per_dim))

    def forward(self, x, context=None):
        x = self._check_input(x)
        z, log_derivative = self.transformer.forward(x, self.theta)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        x, log_derivative = self.transformer.inverse(z, self.theta)
        return x, _sum_over_event(log_derivative)

    def extra_repr(self):
        return f"{self.transformer!r}, dim={self.dim}"


class ElementwiseAffine(Elementwise):
    """z = x * exp(log_scale) + shift, one scale and shift per dimension.

    Inverse: x = (z - shift) * exp(-log_scale).

    Jacobian: diagonal, diag(exp(log_scale_1), ..., exp(log_scale_D)), the same for every
    sample, so

        log|det dz/dx| = sum_i log_scale_i      (independent of x).

    ``Elementwise(AffineTransformer(scale_bound=None), dim)``: theta (dim, 2) holds
    (shift, log_scale) per dimension and starts at zero, the identity. Parameterising the
    scale by its log keeps it positive (the map invertible) with no constraint on the
    optimizer; it is not bounded, so one layer can reach any data scale.
    Cost: O(D) per sample each way.
    Reference: the affine transformer of Dinh, Sohl-Dickstein, Bengio 2017 ("Real NVP")
    without its conditioner; Kingma, Dhariwal 2018 ("Glow") use it per channel as ActNorm.
    """

    def __init__(self, dim):
        super().__init__(AffineTransformer(scale_bound=None), dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LeakyReLU(Flow):
    """z = x for x > 0 and z = slope * x for x <= 0, elementwise, with a fixed slope > 0.

    Inverse: x = z for z > 0 and z / slope for z <= 0.

    Jacobian: diagonal with entries 1 (x_i > 0) or slope (x_i <= 0), so

        log|det dz/dx| = log(slope) * #{i : x_i <= 0}.

    Any positive slope gives a bijection of R (slope > 1 too; slope = 1 is the identity);
    ``slope`` defaults to 0.1. No parameters; works on any event shape.
    Cost: O(D) per sample each way.
    Reference: the activation of Maas, Hannun, Ng 2013, used as an invertible layer in
    e.g. Oliva et al. 2018 ("Transformation autoregressive networks").
    """

    def __init__(self, slope=0.1):
        self.slope = check_positive(slope, "slope", "LeakyReLU")

    def forward(self, x, context=None):
        x = self._check_input(x)
        z, log_derivative = transformers.leaky_relu(x, self.slope)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z, context=None):
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

    def forward(self, x, context=None):
        x = self._check_input(x)
        z, log_derivative = transformers.sigmoid(x)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z, context=None):
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

    def forward(self, x, context=None):
        x = self._check_input(x)
        z, log_derivative = transformers.logit(x)
        return z, _sum_over_event(log_derivative)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        x, log_derivative = transformers.sigmoid(z)
        return x, _sum_over_event(log_derivative)


class PiecewiseLinear(Elementwise):
    """z_i = f(x_i; phi_i): the monotonic piecewise-linear map of [0, 1], one per dimension.

    With K equal-width bins and bin masses phi_i = softmax(theta_i) (positive, summing
    to 1), a point h in bin b = floor(hK) + 1 goes to

        f(h) = sum_{k<b} phi_k + (hK - b + 1) phi_b,

    so the bin [(b-1)/K, b/K] is stretched onto a piece of height phi_b.
    Inverse: find the bin of z among the cumulative masses, then invert the linear piece
    (analytic, no bisection).

    Jacobian: diagonal with entries f'(x_i) = K phi_{i, b(x_i)}, so

        log|det dz/dx| = sum_i [log K + log phi_{i, b(x_i)}].

    ``Elementwise(PiecewiseLinearTransformer(bins), dim)``: theta (dim, bins), the masses'
    logits, starts at zero: equal masses 1/K, the identity; ``bins`` K defaults to 5. Both
    domains are [0, 1], checked (values outside raise ``ValueError``); put a Sigmoid in
    front to use it on R.
    Cost: O(D) per sample forward, O(D K) inverse (the bin search).
    Reference: Understanding Deep Learning (Prince 2023), section 16.3.2, eq. 16.12;
    Mueller et al. 2019, "Neural importance sampling" (piecewise-linear coupling).
    """

    def __init__(self, dim, bins=5):
        super().__init__(PiecewiseLinearTransformer(bins), dim)
        self.bins = self.transformer.bins

    def bin_masses(self):
        """phi = softmax(theta) along the bins: (dim, bins), positive, rows summing to 1."""
        return self.transformer.bin_masses(self.theta)

    def extra_repr(self):
        return f"dim={self.dim}, bins={self.bins}"


class RationalQuadraticSpline(Elementwise):
    """z_i = g(x_i; theta_i): a monotonic rational-quadratic spline per dimension, identity tails.

    Inside [-B, B], K bins with knots (x_k, y_k) and knot derivatives d_k; for x in bin k,
    with xi = (x - x_k) / w_k and s_k = h_k / w_k,

        g(x) = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)],

    and g(x) = x outside [-B, B]. Inverse: in the bin of z, solve a quadratic in xi with
    the stable root (see ``splines.rational_quadratic_spline`` for the derivation).

    Jacobian: diagonal with entries g'(x_i) (the formula in ``splines``; 1 in the
    tails), so

        log|det dz/dx| = sum_i log g'(x_i),   and the tail terms are exactly 0.

    ``Elementwise(SplineTransformer(bins, bound), dim)``: theta (dim, 3 bins - 1) holds the
    free widths, heights and interior derivatives, mapped to valid ones by
    ``SplineTransformer.spline_parameters`` (softmax with a minimum bin size, softplus plus a
    minimum slope, boundary derivatives 1). theta = 0 is the identity: equal bins and all
    derivatives 1. ``bins`` K defaults to 8 and ``bound`` B to 3.0.
    Cost: O(D K) per sample each way (the bin search); parameters O(D K).
    Reference: Durkan, Bekasov, Murray, Papamakarios 2019, "Neural Spline Flows".
    """

    def __init__(self, dim, bins=8, bound=3.0):
        super().__init__(SplineTransformer(bins, bound), dim)
        self.bins, self.bound = self.transformer.bins, self.transformer.bound

    def spline_parameters(self):
        """(widths, heights, derivatives): (dim, bins), (dim, bins), (dim, bins + 1)."""
        return self.transformer.spline_parameters(self.theta)

    def extra_repr(self):
        return f"dim={self.dim}, bins={self.bins}, bound={self.bound}"
