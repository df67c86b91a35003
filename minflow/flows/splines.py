"""Splines: monotonic maps built bin by bin, with closed-form inverses.

Both maps here cut an interval into K bins joined at K + 1 knots and are strictly
increasing within each bin, so they are bijections of the interval onto itself; a flow
bends a density by moving the knots. Their parameters carry one extra trailing axis, of
length K for bin sizes (K + 1 for knot derivatives); the other axes broadcast against the
input the NumPy way. Each function returns ``(y, log|dy/dx|)`` like those of
``transformers.py``.

    piecewise_linear / ..._inverse             [0, 1] -> [0, 1], K linear pieces
    rational_quadratic_spline / ..._inverse    [-B, B] -> [-B, B], identity outside

*Piecewise linear* (Prince 2023, Understanding Deep Learning, section 16.3.2, eq. 16.12;
Mueller et al. 2019, "Neural importance sampling"): K bins of equal width 1/K are stretched
to widths phi_1..phi_K (positive, summing to 1), so within bin b the map is a line of slope
K phi_b; the log-derivative is log K + log phi_b, constant on a bin, and the inverse finds
the bin by comparing with the cumulative masses. Its derivative jumps at the knots.

*Rational-quadratic spline* (Durkan, Bekasov, Murray, Papamakarios 2019, "Neural Spline
Flows"): each bin holds a ratio of two quadratics through its two knots with a given slope
d_k at every knot, so the map and its derivative are continuous; the inverse solves one
quadratic per point. Outside [-B, B] it is the identity ("linear tails"), which lets it act
on the whole real line.

How a point finds its bin: the knots are normalized cumulative sums of the bin sizes
(``_knots``), the bin index is the count of interior knots at or below the point
(``_search_bins``, an integer computation on the raw arrays that needs no gradient), and
every per-bin value is gathered with ``ops.take_along_axis`` (``_gather``), so gradients
reach the parameters. The two classes at the end, ``SplineTransformer`` and
``PiecewiseLinearTransformer``, put these maps in the form of the ``Transformer`` protocol
(``transformers.py``): all parameters of one coordinate in the last axis of theta, theta = 0
the identity.
"""

import math

from .. import backend
from ..autodiff import Tensor, as_tensor, ops
from .base import check_int, check_positive
from .transformers import Transformer, _check_interval, _value_range


# --- piecewise linear (UDL eq. 16.12) ----------------------------------------------------
def piecewise_linear(x, bin_masses):
    """The monotonic piecewise-linear map of [0, 1] onto [0, 1] with K equal-width bins.

    Understanding Deep Learning (Prince 2023), section 16.3.2, eq. 16.12. The bin masses
    phi_1..phi_K are positive and sum to 1 (softmax of free parameters, for example). A
    point h in [0, 1] lies in bin b = floor(hK) + 1 (h = 1 belongs to the last bin) and

        f(h) = sum_{k<b} phi_k + (hK - b + 1) phi_b

    so f sends the knot k/K to the cumulative mass phi_1 + ... + phi_k: the bins of equal
    width 1/K are stretched to widths phi_b. (UDL's notebook 16.2 warns that the book's first
    printing has a mistake in eq. 16.12; the copy in one of the course's founding documents
    reads (hK - b) phi_b, without the + 1, which is this map minus phi_b: negative at 0 and not
    monotonic. Lecture 2 checks it.) Within a bin f is linear, with

        f'(h) = K phi_b,        log f'(h) = log K + log phi_b.

    Inverse (analytic): y lies in bin b when sum_{k<b} phi_k <= y < sum_{k<=b} phi_k,
    found by comparing y with the K - 1 interior cumulative masses; then
    h = (b - 1 + (y - sum_{k<b} phi_k) / phi_b) / K. No bisection is needed.

    In code. The knots are computed once, as normalized cumulative sums

        C_0 = 0,   C_k = (phi_1 + ... + phi_k) / (phi_1 + ... + phi_K),   so C_K = 1 exactly,

    and bin b's mass is taken as phi_b = C_b - C_{b-1}. For masses summing to 1 these are
    the same numbers up to rounding; what the division buys is that forward and inverse
    share the knots bit for bit: f(1) = 1 exactly (a sum of rounded masses may end at
    1 + 1e-16, outside the inverse's domain), and a knot goes to a knot and back to the
    same bin. Gradients reach every mass: they are those of the map of the normalized
    masses, which agrees with eq. 16.12 on the simplex (and is what a softmax upstream sees).

    Arguments: ``x`` (...) in [0, 1]; ``bin_masses`` (..., K), broadcasting against x
    without its last axis. Values of x outside [0, 1] raise ``ValueError`` with their
    range; masses that are not positive or do not sum to 1 raise too.
    Cost: O(N + K) forward (the bin is a floor), O(N K) inverse (the comparisons).
    """
    x, bin_masses = as_tensor(x), as_tensor(bin_masses)
    xp = backend.array_module(x.data, bin_masses.data)
    _check_interval(x, 0.0, 1.0, closed=True, function="piecewise_linear", name="x")
    _check_sizes(bin_masses, 1.0, function="piecewise_linear", name="bin_masses")
    bins = bin_masses.shape[-1]
    ndim = max(x.ndim, bin_masses.ndim - 1)
    knots = _align(_knots(bin_masses, 0.0, 1.0), ndim + 1)  # C_0 = 0, C_1, ..., C_K = 1

    bin_index = xp.clip(xp.floor(x.data * bins), 0, bins - 1).astype(xp.int64)  # b - 1
    index = _align_index(bin_index, ndim)
    below, above = _gather(knots, index), _gather(knots, index + 1)  # C_{b-1}, C_b
    phi_b = above - below
    t = x * bins - Tensor(bin_index.astype(x.dtype))  # hK - b + 1, in [0, 1]
    return below + t * phi_b, ops.log(phi_b) + math.log(bins)


def piecewise_linear_inverse(y, bin_masses):
    """h = f^{-1}(y) for the map of :func:`piecewise_linear` (see there for the formulas).

    log|dh/dy| = -log K - log phi_b. Domain: [0, 1], checked. Cost: O(N K).
    """
    y, bin_masses = as_tensor(y), as_tensor(bin_masses)
    _check_interval(y, 0.0, 1.0, closed=True, function="piecewise_linear_inverse", name="y")
    _check_sizes(bin_masses, 1.0, function="piecewise_linear_inverse", name="bin_masses")
    bins = bin_masses.shape[-1]
    ndim = max(y.ndim, bin_masses.ndim - 1)
    knots = _align(_knots(bin_masses, 0.0, 1.0), ndim + 1)

    bin_index = _search_bins(y.data, knots.data[..., 1:-1], ndim)  # b - 1
    index = _align_index(bin_index, ndim)
    below, above = _gather(knots, index), _gather(knots, index + 1)
    phi_b = above - below
    t = (y - below) / phi_b
    x = (Tensor(bin_index.astype(y.dtype)) + t) / bins
    return x, -ops.log(phi_b) - math.log(bins)


# --- rational-quadratic spline (Durkan et al. 2019) ---------------------------------------
def rational_quadratic_spline(x, widths, heights, derivatives, bound):
    """The monotonic rational-quadratic spline of Neural Spline Flows, identity outside [-B, B].

    Durkan, Bekasov, Murray, Papamakarios 2019, "Neural Spline Flows", section 3.1 (after
    Gregory and Delbourgo 1982). K bins of widths w_k and heights h_k (positive, each set
    summing to 2B) place K + 1 knots (x_k, y_k) from (-B, -B) to (B, B):

        x_0 = -B,   x_k = -B + w_0 + ... + w_{k-1},   x_K = B      (y_k likewise with h)

    for bins k = 0, ..., K - 1. In code the sums are normalized, x_k = -B + 2B (w_0 + ...
    + w_{k-1}) / (w_0 + ... + w_{K-1}), so that x_K = B exactly (the spline's range is
    exactly [-B, B] despite rounding), and w_k is taken as x_{k+1} - x_k; for widths
    summing to 2B these are the same numbers up to rounding. At every knot the
    derivative d_k > 0 is given; d_0 = d_K = 1 makes the spline join the identity tails
    with a continuous derivative (``rational_quadratic_parameters`` does that).

    Forward, for x in bin k (x_k <= x < x_{k+1}; x = B is in the last bin), with
    xi = (x - x_k) / w_k in [0, 1] and the bin's slope s_k = h_k / w_k:

        y = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / D(xi),
        D(xi) = s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi),

        dy/dx = s_k^2 [d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2] / D(xi)^2,

    so log(dy/dx) = 2 log s_k + log[...] - 2 log D(xi). The bracket and D are positive on
    [0, 1], so the map is strictly increasing, and at the knots dy/dx = d_k.

    Inverse. Multiply the forward formula out by D(xi), with Delta = y - y_k and
    delta = d_{k+1} + d_k - 2 s_k: it is the quadratic a xi^2 + b xi + c = 0 with

        a = h_k (s_k - d_k) + Delta delta,
        b = h_k d_k - Delta delta,
        c = -s_k Delta.

    The root in [0, 1] is xi = (-b + sqrt(b^2 - 4ac)) / (2a); multiplying through by
    (-b - sqrt(b^2 - 4ac)) gives the form used here,

        xi = 2c / (-b - sqrt(b^2 - 4ac)),

    which does not cancel catastrophically and stays finite as a -> 0 (a linear bin). Then
    x = x_k + xi w_k, and log|dx/dy| = -log(dy/dx) at that xi.

    Outside [-B, B] ("linear tails") y = x and log|dy/dx| = 0 exactly. The spline branch
    is evaluated on x clipped into [-B, B] and the two branches are selected with
    ``where``: the discarded branch then holds finite numbers, so no NaN or inf leaks into
    the values or the gradients of tail points.

    Arguments: ``x`` (...); ``widths`` and ``heights`` (..., K) positive, summing to 2B;
    ``derivatives`` (..., K + 1) positive; parameters broadcast against x without their
    last axis; ``bound`` B > 0, a Python number.
    Cost: O(N K) each way (the bin search compares with K - 1 knots); the rest is O(N).
    """
    x, widths, heights, derivatives = (as_tensor(t) for t in (x, widths, heights, derivatives))
    spline = _Spline(x, widths, heights, derivatives, bound, "rational_quadratic_spline")
    inside = (x.data >= -bound) & (x.data <= bound)
    x_inside = ops.clip(x, -bound, bound)
    k = spline.bins_of(x_inside.data, spline.knots_x)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = spline.gather(k)
    width, height = x_k1 - x_k, y_k1 - y_k
    slope = height / width
    xi = (x_inside - x_k) / width
    y_inside = y_k + height * (slope * xi**2 + d_k * xi * (1.0 - xi)) / _denominator(xi, slope, d_k, d_k1)
    y = ops.where(inside, y_inside, x)
    return y, ops.where(inside, _log_derivative(xi, slope, d_k, d_k1), 0.0)


def rational_quadratic_spline_inverse(y, widths, heights, derivatives, bound):
    """x = f^{-1}(y) for :func:`rational_quadratic_spline` (the formulas are there).

    Solves the bin's quadratic with the stable root xi = 2c / (-b - sqrt(b^2 - 4ac)).
    log|dx/dy| = -log(dy/dx) at the solution; identity with log-derivative 0 outside
    [-B, B]. Cost: O(N K).
    """
    y, widths, heights, derivatives = (as_tensor(t) for t in (y, widths, heights, derivatives))
    spline = _Spline(y, widths, heights, derivatives, bound, "rational_quadratic_spline_inverse")
    inside = (y.data >= -bound) & (y.data <= bound)
    y_inside = ops.clip(y, -bound, bound)
    k = spline.bins_of(y_inside.data, spline.knots_y)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = spline.gather(k)
    width, height = x_k1 - x_k, y_k1 - y_k
    slope = height / width
    delta_y = y_inside - y_k
    slope_sum = d_k1 + d_k - 2.0 * slope  # delta in the docstring
    a = height * (slope - d_k) + delta_y * slope_sum
    b = height * d_k - delta_y * slope_sum
    c = -slope * delta_y
    # For b >= 0 the form 2c / (-b - sqrt(.)) adds two numbers of one sign. For b < 0 (near the
    # top of a bin whose upper knot derivative is large) it would cancel, and the textbook
    # (-b + sqrt(.)) / (2a) is the one without cancellation; there a > h_k s_k > 0.
    root = ops.sqrt(b * b - 4.0 * a * c)
    negative = b.data < 0
    xi = ops.where(
        negative,
        (root - b) / (2.0 * ops.where(negative, a, 1.0)),
        2.0 * c / ops.where(negative, -1.0, -b - root),
    )
    x_inside = x_k + xi * width
    x = ops.where(inside, x_inside, y)
    return x, ops.where(inside, -_log_derivative(xi, slope, d_k, d_k1), 0.0)


def rational_quadratic_parameters(
    unnormalized_widths,
    unnormalized_heights,
    unnormalized_derivatives,
    bound,
    min_bin_width=1e-3,
    min_bin_height=1e-3,
    min_derivative=1e-3,
):
    """Map free parameters to valid spline parameters (the recipe of Durkan et al. 2019).

    ``unnormalized_widths`` and ``unnormalized_heights`` (..., K) and
    ``unnormalized_derivatives`` (..., K - 1), any real numbers, become

        widths      = 2B [m_w + (1 - K m_w) softmax(unnormalized_widths)]     (..., K)
        heights     = 2B [m_h + (1 - K m_h) softmax(unnormalized_heights)]    (..., K)
        derivatives = [1, m_d + softplus(unnormalized_derivatives), 1]        (..., K + 1)

    so every bin is at least 2B m_w wide and 2B m_h tall, each set sums to 2B, and every
    derivative is at least m_d (with the boundary ones equal to 1, matching the identity
    tails). All zeros give bins of equal size; an unnormalized derivative of
    log(e^{1 - m_d} - 1) gives derivative 1: together, the identity map.
    Cost: O(K) per element of the leading axes.
    """
    widths, heights, derivatives = (
        as_tensor(t) for t in (unnormalized_widths, unnormalized_heights, unnormalized_derivatives)
    )
    check_positive(bound, "bound", "rational_quadratic_parameters")
    bins = widths.shape[-1] if widths.ndim else 0
    if widths.ndim == 0 or heights.ndim == 0 or tuple(heights.shape[-1:]) != (bins,):
        raise ValueError(
            "rational_quadratic_parameters: unnormalized_widths and unnormalized_heights must have "
            f"shape (..., K) with the same K, got {tuple(widths.shape)} and {tuple(heights.shape)}"
        )
    if derivatives.ndim == 0 or derivatives.shape[-1] != bins - 1:
        raise ValueError(
            "rational_quadratic_parameters: unnormalized_derivatives must have shape (..., K - 1) = "
            f"(..., {bins - 1}), got {tuple(derivatives.shape)}"
        )
    for name, minimum in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not 0 <= minimum * bins < 1:
            raise ValueError(f"rational_quadratic_parameters: {name} * K must lie in [0, 1), got {minimum} * {bins}")
    if not min_derivative >= 0:
        raise ValueError(f"rational_quadratic_parameters: min_derivative must be >= 0, got {min_derivative}")

    def sizes(free, minimum):
        return 2.0 * bound * (minimum + (1.0 - bins * minimum) * ops.softmax(free, axis=-1))

    xp = backend.array_module(derivatives.data)
    ones = Tensor(xp.ones(derivatives.shape[:-1] + (1,), dtype=derivatives.dtype))
    inner = min_derivative + ops.softplus(derivatives)
    return (
        sizes(widths, min_bin_width),
        sizes(heights, min_bin_height),
        ops.concatenate([ones, inner, ones], axis=-1),
    )


class _Spline:
    """The knots of one rational-quadratic spline, aligned for gathering (internal)."""

    def __init__(self, x, widths, heights, derivatives, bound, function):
        check_positive(bound, "bound", function)
        bins = widths.shape[-1] if widths.ndim else 0
        if bins < 1 or tuple(heights.shape[-1:]) != (bins,) or tuple(derivatives.shape[-1:]) != (bins + 1,):
            raise ValueError(
                f"{function}: widths and heights must have shape (..., K) and derivatives (..., K + 1), "
                f"got {tuple(widths.shape)}, {tuple(heights.shape)} and {tuple(derivatives.shape)}"
            )
        _check_sizes(widths, 2.0 * bound, function=function, name="widths")
        _check_sizes(heights, 2.0 * bound, function=function, name="heights")
        _check_positive(derivatives, function=function, name="derivatives")
        backend.array_module(x.data, widths.data, heights.data, derivatives.data)  # raises if they mix
        self.ndim = max(x.ndim, widths.ndim - 1, heights.ndim - 1, derivatives.ndim - 1)
        self.knots_x = _align(_knots(widths, -bound, bound), self.ndim + 1)
        self.knots_y = _align(_knots(heights, -bound, bound), self.ndim + 1)
        self.derivatives = _align(derivatives, self.ndim + 1)

    def bins_of(self, values, knots):
        """0-based bin of each value: how many interior knots lie at or below it."""
        return _search_bins(values, knots.data[..., 1:-1], self.ndim)

    def gather(self, bin_index):
        """x_k, x_{k+1}, y_k, y_{k+1}, d_k, d_{k+1} at each point's bin k."""
        k = _align_index(bin_index, self.ndim)
        k1 = k + 1
        return (
            _gather(self.knots_x, k),
            _gather(self.knots_x, k1),
            _gather(self.knots_y, k),
            _gather(self.knots_y, k1),
            _gather(self.derivatives, k),
            _gather(self.derivatives, k1),
        )


def _denominator(xi, slope, d_k, d_k1):
    """D(xi) = s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)."""
    return slope + (d_k1 + d_k - 2.0 * slope) * xi * (1.0 - xi)


def _log_derivative(xi, slope, d_k, d_k1):
    """log dy/dx = 2 log s_k + log[d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2] - 2 log D(xi)."""
    bracket = d_k1 * xi**2 + 2.0 * slope * xi * (1.0 - xi) + d_k * (1.0 - xi) ** 2
    return 2.0 * ops.log(slope) + ops.log(bracket) - 2.0 * ops.log(_denominator(xi, slope, d_k, d_k1))


def _knots(sizes, low, high):
    """Knot positions (..., K + 1) from bin sizes (..., K): low + (high - low) * normalized cumsum.

    The first knot is ``low`` and the last one is ``high`` exactly (s / s = 1 in floating
    point), whatever the rounding of the sum.
    """
    xp = backend.array_module(sizes.data)
    cumulative = ops.cumsum(sizes, axis=-1)
    fractions = cumulative / cumulative[..., -1:]
    zero = Tensor(xp.zeros(sizes.shape[:-1] + (1,), dtype=sizes.dtype))
    return low + (high - low) * ops.concatenate([zero, fractions], axis=-1)


# --- helpers: alignment, gathering, bin search, bin-size checks -----------------------------
def _align(tensor, ndim):
    """Prepend axes of length 1 so that ``tensor`` has ``ndim`` axes (no copy)."""
    missing = ndim - tensor.ndim
    return tensor if missing == 0 else ops.reshape(tensor, (1,) * missing + tuple(tensor.shape))


def _align_index(index, ndim):
    """An integer array of bin indices, shaped (1, ..., *shape, 1) for a gather on the last axis."""
    return index.reshape((1,) * (ndim - index.ndim) + tuple(index.shape) + (1,))


def _gather(table, index):
    """table[..., index] along the last axis, with that axis dropped: the parameter of each point's bin."""
    picked = ops.take_along_axis(table, index, axis=-1)
    return ops.reshape(picked, picked.shape[:-1])


def _search_bins(values, interior_knots, ndim):
    """For each value, how many interior knots (..., K - 1) are <= it: a 0-based bin index."""
    xp = backend.array_module(values, interior_knots)
    values = values.reshape((1,) * (ndim - values.ndim) + tuple(values.shape) + (1,))
    return xp.sum(values >= interior_knots, axis=-1)


def _check_positive(tensor, function, name):
    """Raise ValueError, with the range received, unless every value is > 0 (deferred like ``_check_interval``)."""
    data = tensor.data
    if data.size:
        backend.require(data > 0, lambda: f"{function}: {name} must be positive, got values in {_value_range(data)}")


def _check_sizes(tensor, total, function, name):
    """Bin sizes must be positive and sum to ``total`` along the last axis.

    Tolerance: 1e-6 relative, or 10 K machine epsilons where that is larger (a float32
    softmax of K = 64 bins is off by a few 1e-6).
    """
    if tensor.ndim == 0 or tensor.shape[-1] < 1:
        raise ValueError(f"{function}: {name} must have shape (..., K) with K >= 1, got {tuple(tensor.shape)}")
    _check_positive(tensor, function, name)
    xp = backend.array_module(tensor.data)
    sums = xp.sum(tensor.data, axis=-1)
    tolerance = max(1e-6, 10 * tensor.shape[-1] * float(xp.finfo(tensor.dtype).eps))
    if sums.size:
        backend.require(
            xp.abs(sums - total) <= tolerance * total,
            lambda: f"{function}: {name} must sum to {total} along the last axis, got sums in {_value_range(sums)}",
        )


# --- the maps as Transformers (the protocol is in transformers.py) ----------------------------
class SplineTransformer(Transformer):
    """The rational-quadratic spline on [-bound, bound] with ``bins`` bins, identity tails.

    3K - 1 parameters per coordinate: K widths, K heights, K - 1 interior derivatives, mapped
    to valid ones by ``rational_quadratic_parameters`` (softmax with a minimum bin size,
    softplus plus ``min_derivative``). The derivatives' parameters are offset by
    u_0 = log(e^{1 - min_derivative} - 1), the value where softplus(u_0) + min_derivative = 1,
    so theta = 0 gives equal bins and unit derivatives: the identity map. ``bins`` K >= 2
    defaults to 8 and ``bound`` B > 0 to 4.0.
    """

    min_derivative = 1e-3  # smallest slope at a knot, so the map stays strictly increasing

    def __init__(self, bins=8, bound=4.0):
        self.bins = check_int(bins, "bins", "SplineTransformer", minimum=2)
        self.bound = check_positive(bound, "bound", "SplineTransformer")
        self.params_per_dim = 3 * self.bins - 1
        # softplus(u) + min_derivative = 1  <=>  u = log(e^{1 - min_derivative} - 1)
        self.identity_derivative = math.log(math.expm1(1.0 - self.min_derivative))

    def spline_parameters(self, theta):
        """(widths, heights, derivatives), (..., K), (..., K) and (..., K + 1), from theta (..., 3K - 1)."""
        theta, k = self.check_theta(theta), self.bins
        return rational_quadratic_parameters(
            theta[..., :k],
            theta[..., k : 2 * k],
            theta[..., 2 * k :] + self.identity_derivative,
            self.bound,
            min_derivative=self.min_derivative,
        )

    def forward(self, h, theta):
        return rational_quadratic_spline(h, *self.spline_parameters(theta), self.bound)

    def inverse(self, z, theta):
        return rational_quadratic_spline_inverse(z, *self.spline_parameters(theta), self.bound)

    def extra_repr(self):
        return f"bins={self.bins}, bound={self.bound}"


class PiecewiseLinearTransformer(Transformer):
    """The piecewise-linear map of [0, 1] (UDL eq. 16.12) with ``bins`` bins.

    K parameters per coordinate, the bin masses' logits: phi = softmax(theta). theta = 0
    gives equal masses, the identity. Domain [0, 1], mapped onto itself (f(0) = 0 and
    f(1) = 1 exactly); put a Sigmoid in front of it to use it on real data. ``bins`` K >= 1
    defaults to 5.
    """

    domain = (0.0, 1.0)

    def __init__(self, bins=5):
        self.bins = self.params_per_dim = check_int(bins, "bins", "PiecewiseLinearTransformer", minimum=1)

    def bin_masses(self, theta):
        """phi = softmax(theta) along the last axis: positive, summing to 1."""
        return ops.softmax(self.check_theta(theta), axis=-1)

    def forward(self, h, theta):
        return piecewise_linear(h, self.bin_masses(theta))

    def inverse(self, z, theta):
        return piecewise_linear_inverse(z, self.bin_masses(theta))

    def extra_repr(self):
        return f"bins={self.bins}"
