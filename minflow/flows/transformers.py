"""Transformers: elementwise invertible maps y = g(x; theta), written once.

A *transformer* (the name is from Papamakarios et al. 2021, "Normalizing flows for
probabilistic modeling and inference", section 3.1) is a strictly monotonic scalar map
applied to every coordinate of its input. Its Jacobian is diagonal, so the log-determinant
of the whole map is a sum of scalar log-derivatives::

    log|det dy/dx| = sum_i log|g'(x_i; theta_i)|

Every function here takes the input Tensor and the parameter Tensors explicitly and
returns ``(y, log_abs_derivative)``, both of the broadcast shape of the input and the
parameters, with log|dy/dx| computed elementwise. Parameters broadcast against the input
the NumPy way. Elementwise flows (``elementwise.py``) give these parameters freely;
coupling and autoregressive flows compute them with a network.

    affine / affine_inverse                         y = x e^s + t
    leaky_relu / leaky_relu_inverse                 x, or slope * x below zero
    sigmoid / logit                                 R <-> (0, 1)

The maps built from K bins, piecewise-linear and rational-quadratic spline, have a file of
their own: ``splines.py``.

The second half of the file names the protocol that flows use: a ``Transformer`` reads all
the parameters of one coordinate from the last axis of one tensor theta
(..., params_per_dim), and theta = 0 is the identity. ``AffineTransformer`` and
``AdditiveTransformer`` are the simplest in that form (``SplineTransformer`` and
``PiecewiseLinearTransformer`` are in ``splines.py``, ``SinhArcsinhTransformer`` in
``sinh_arcsinh.py``); one transformer gives an elementwise flow (``Elementwise``), a
coupling (``Coupling``) and an autoregressive flow (``MaskedAutoregressive``).

Everything runs in the namespace of the data (NumPy or CuPy); every value that depends on
a parameter goes through ``ops``, so gradients reach the parameters.
"""

import math

from .. import backend
from ..autodiff import Tensor, as_tensor, ops
from .base import REAL_LINE, check_positive


# --- affine ------------------------------------------------------------------------------
def affine(x, shift, log_scale):
    """y = x * exp(log_scale) + shift.

    Inverse: x = (y - shift) * exp(-log_scale).
    Derivative: dy/dx = exp(log_scale) > 0, so log|dy/dx| = log_scale (broadcast to y's
    shape). Domain: all of R. Cost: O(N) for N elements.
    Reference: Dinh, Sohl-Dickstein, Bengio 2017, "Density estimation using Real NVP".
    """
    x, shift, log_scale = as_tensor(x), as_tensor(shift), as_tensor(log_scale)
    y = ops.affine(x, shift, log_scale)  # one fused op; see ops.affine for its VJP
    return y, log_scale if log_scale.shape == y.shape else ops.broadcast_to(log_scale, y.shape)


def affine_inverse(y, shift, log_scale):
    """x = (y - shift) * exp(-log_scale); log|dx/dy| = -log_scale. See :func:`affine`."""
    y, shift, log_scale = as_tensor(y), as_tensor(shift), as_tensor(log_scale)
    x = (y - shift) * ops.exp(-log_scale)
    return x, ops.broadcast_to(-log_scale, x.shape)


# --- leaky ReLU --------------------------------------------------------------------------
def leaky_relu(x, slope):
    """y = x for x > 0, y = slope * x for x <= 0 (slope > 0, a Python number).

    Inverse: x = y for y > 0, y / slope for y <= 0 (a leaky ReLU with slope 1 / slope).
    Derivative: 1 or slope, so log|dy/dx| = 0 for x > 0 and log(slope) for x <= 0 (at
    the kink x = 0 we take the left side, as the inverse does at y = 0). It does not
    depend on x away from the kink, so no gradient flows through it.
    Domain: all of R. Cost: O(N).
    Reference: Maas, Hannun, Ng 2013 (the activation); as a flow, e.g. Oliva et al. 2018
    "Transformation autoregressive networks".
    """
    check_positive(slope, "slope", "leaky_relu")
    x = as_tensor(x)
    y = ops.leaky_relu(x, slope)
    return y, _log_slope_where_nonpositive(x, slope)


def leaky_relu_inverse(y, slope):
    """x = leaky_relu(y, 1 / slope); log|dx/dy| = 0 for y > 0, -log(slope) otherwise."""
    check_positive(slope, "slope", "leaky_relu_inverse")
    y = as_tensor(y)
    x = ops.leaky_relu(y, 1.0 / slope)
    return x, _log_slope_where_nonpositive(y, 1.0 / slope)


def _log_slope_where_nonpositive(x, slope):
    xp = backend.array_module(x.data)
    log_slope = xp.asarray(math.log(slope), dtype=x.dtype)
    return Tensor(xp.where(x.data > 0, xp.zeros((), dtype=x.dtype), log_slope))


# --- sigmoid and logit -------------------------------------------------------------------
def sigmoid(x):
    """y = sigmoid(x) = 1 / (1 + e^-x), mapping R onto (0, 1).

    Inverse: x = logit(y) = log y - log(1 - y).
    Derivative: sigmoid'(x) = sigmoid(x) sigmoid(-x), so, since log sigmoid(x) =
    -softplus(-x),

        log sigmoid'(x) = -softplus(-x) - softplus(x),

    which never overflows nor takes log(0), even where sigmoid(x) rounds to 1.
    Domain: all of R (but for |x| > ~37 in float64, y rounds to 0 or 1 and the map can
    no longer be inverted). Cost: O(N).
    Reference: e.g. Papamakarios, Pavlakou, Murray 2017 "Masked autoregressive flow",
    where logit(alpha + (1 - 2 alpha) x) preprocesses images.
    """
    x = as_tensor(x)
    return ops.sigmoid(x), -ops.softplus(-x) - ops.softplus(x)


def logit(y):
    """x = logit(y) = log y - log(1 - y), mapping (0, 1) onto R; the inverse of :func:`sigmoid`.

    Derivative: dx/dy = 1 / (y (1 - y)), so log|dx/dy| = -log y - log(1 - y), with
    log(1 - y) computed as log1p(-y). Domain: the open interval (0, 1); values outside
    (or exactly 0 or 1) raise ``ValueError`` naming the offending range. Cost: O(N).
    """
    y = as_tensor(y)
    _check_interval(y, 0.0, 1.0, closed=False, function="logit", name="y")
    log_y, log_one_minus_y = ops.log(y), ops.log1p(-y)
    return log_y - log_one_minus_y, -log_y - log_one_minus_y


# --- value checks (splines.py uses them too) ----------------------------------------------
def _value_range(array):
    """'[min, max]' of an array for an error message, saying so if it holds NaN."""
    xp = backend.array_module(array)
    is_nan = xp.isnan(array)
    if bool(xp.all(is_nan)):
        return "[nan] (all NaN)"
    values = array[~is_nan]
    text = f"[{float(xp.min(values))!r}, {float(xp.max(values))!r}]"
    return text + " and NaN" if bool(xp.any(is_nan)) else text


def _check_interval(tensor, low, high, closed, function, name):
    """Raise ValueError, with the range received, unless low <= tensor <= high (< if open).

    A check of values: deferred to the step's one synchronisation inside a train step
    (see ``backend.require``).
    """
    data = tensor.data
    if data.size == 0:
        return
    ok = (data >= low) & (data <= high) if closed else (data > low) & (data < high)
    interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
    backend.require(ok, lambda: f"{function}: {name} must lie in {interval}, got values in {_value_range(data)}")


# --- the Transformer protocol: a map and the parameters it reads -------------------------------
class Transformer:
    """z = g(h; theta), elementwise and strictly increasing, with its log-derivative: the protocol.

    An elementwise flow, a coupling layer and an autoregressive layer differ only in where the
    parameters theta come from (free parameters, a network of the kept half, a masked network
    of the preceding coordinates); the map they apply is a Transformer::

        forward(h, theta) -> (z, log g'(h; theta))                z = g(h; theta)
        inverse(z, theta) -> (h, log (g^{-1})'(z; theta))         h = g^{-1}(z; theta)

    ``h`` has any shape (...) and ``theta`` (..., P), P = ``params_per_dim``: the last axis
    holds the P parameters of one coordinate, the other axes broadcast against h the NumPy way
    (shared (D, P) for an elementwise flow, per sample (B, D, P) for a conditioner). Both
    results have the broadcast shape. The contract, which ``minflow.testing.check_transformer``
    checks for every transformer:

    1. for every theta in R^P, g(.; theta) is a strictly increasing bijection of ``domain``
       = (a, b) onto itself, so g' > 0 and log g' is defined; a finite edge stays put,
       g(a) = a and g(b) = b, and input outside a bounded domain raises ``ValueError``;
    2. ``inverse`` undoes ``forward``, and its log-derivative is minus forward's at the
       matching point: (g^{-1})'(z) = 1 / g'(h) for z = g(h) (inverse function theorem);
    3. theta = 0 is the identity: g(h; 0) = h and log g'(h; 0) = 0. A conditioner whose last
       layer starts at zero then makes a new layer the identity, and ``Elementwise`` starts
       its free theta at 0;
    4. every real theta is valid: positivity and sums are built in (exp, softmax, softplus),
       so an optimizer can move theta freely.

    Subclasses set ``params_per_dim`` (and ``domain`` if it is not the real line) and write
    ``forward`` and ``inverse``, reading theta through :meth:`check_theta`.
    """

    params_per_dim = None
    domain = REAL_LINE

    def forward(self, h, theta):
        raise NotImplementedError

    def inverse(self, z, theta):
        raise NotImplementedError

    def check_theta(self, theta):
        """``theta`` as a Tensor, after checking its last axis holds ``params_per_dim`` values."""
        theta = as_tensor(theta)
        if theta.ndim == 0 or theta.shape[-1] != self.params_per_dim:
            raise ValueError(
                f"{type(self).__name__}: theta must have shape (..., {self.params_per_dim}) "
                f"(params_per_dim on the last axis), got {tuple(theta.shape)}"
            )
        return theta

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class AffineTransformer(Transformer):
    """g(h; shift, s) = h * exp(log_scale) + shift, theta = (shift, s); log g' = log_scale.

    With ``scale_bound`` B (RealNVP's choice, the default B = 2), log_scale = B tanh(s / B):
    one unlucky step of training cannot produce exp(50), the scale stays within exp(+-B),
    and near 0 the tanh is the identity, so theta = 0 is still the identity map. With
    ``scale_bound=None``, log_scale = s, unbounded (``ElementwiseAffine``, whose one scale
    per dimension must reach any data scale).
    """

    params_per_dim = 2

    def __init__(self, scale_bound=2.0):
        self.scale_bound = (
            None if scale_bound is None else check_positive(scale_bound, "scale_bound", "AffineTransformer")
        )

    def shift_and_log_scale(self, theta):
        theta = self.check_theta(theta)
        s = theta[..., 1]
        return theta[..., 0], s if self.scale_bound is None else ops.soft_clamp(s, self.scale_bound)

    def forward(self, h, theta):
        shift, log_scale = self.shift_and_log_scale(theta)
        return affine(h, shift=shift, log_scale=log_scale)

    def inverse(self, z, theta):
        shift, log_scale = self.shift_and_log_scale(theta)
        return affine_inverse(z, shift=shift, log_scale=log_scale)

    def extra_repr(self):
        return f"scale_bound={self.scale_bound}"


class AdditiveTransformer(Transformer):
    """g(h; shift) = h + shift: volume preserving, log g' = 0 exactly (NICE, Dinh et al. 2014)."""

    params_per_dim = 1

    def forward(self, h, theta):
        z = as_tensor(h) + self.check_theta(theta)[..., 0]
        return z, _zeros_like(z)

    def inverse(self, z, theta):
        h = as_tensor(z) - self.check_theta(theta)[..., 0]
        return h, _zeros_like(h)


def _zeros_like(h):
    return Tensor(backend.array_module(h.data).zeros(h.shape, dtype=h.dtype))
