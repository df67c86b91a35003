"""Base distributions: the simple density a flow maps data onto.

The standard normal in n dimensions has

    log p(z) = -1/2 sum_i z_i^2 - n/2 log(2 pi)

which is cheap to evaluate and to sample, and so makes a good latent space. A base may also
learn: a diagonal Gaussian (a learnable mean and scale per coordinate) or a mixture of K of
them, which gives the latent space K modes, so the flow need not tear one mode into many.

Every base is a :class:`~minflow.nn.Module`, so a model trains and checkpoints its base's
parameters with the flow's (``"base.mean"``, ...); ``StandardNormal`` has none. Each has
``event_shape``, ``size`` (the number of coordinates n), ``log_prob(z)`` (a Tensor (B,)) and
``sample(n, seed=None, dtype=None, xp=None)`` (an array (n, *event_shape)). A learnable base
samples where its parameters live, in their dtype; an ``xp`` or ``dtype`` that differs raises.
"""

import math

from . import backend
from .autodiff import Tensor, no_grad, ops
from .nn import Module, Parameter

LOG_2PI = math.log(2 * math.pi)


def _event_shape(event_shape, where):
    """``event_shape`` (an int or a tuple of ints, all >= 1) as a tuple, or a ValueError."""
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if not shape or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in shape):
        raise ValueError(f"{where}: event_shape must be positive ints, got {event_shape!r}")
    return shape


def _check_z(z, event_shape, where):
    """``z`` as a Tensor of shape (B, *event_shape), or a ValueError naming both shapes."""
    z = z if isinstance(z, Tensor) else Tensor(z)
    if tuple(z.shape[1:]) != tuple(event_shape):
        expected = "(B, " + ", ".join(str(n) for n in event_shape) + ")"
        raise ValueError(f"{where}: z must have shape {expected}, got {tuple(z.shape)}")
    return z


def _gaussian_log_density(z, mean, log_scale, axis):
    """log N(z; mean, diag exp(log_scale)^2), summed over ``axis``: one term per coordinate,
    -u^2 / 2 - log sigma - log(2 pi) / 2 with u = (z - mean) / sigma."""
    u = (z - mean) * ops.exp(-log_scale)
    return ops.sum(-0.5 * u * u - log_scale - 0.5 * LOG_2PI, axis=axis)


def _sampling_namespace(base, dtype, xp, where):
    """(xp, dtype) for a learnable base's samples: its parameters' own, checked against the request."""
    own_xp, own_dtype = base.array_module(), base.float_dtype()
    if xp is not None and xp is not own_xp:
        raise ValueError(
            f"{where}: xp must be {own_xp.__name__}, where the parameters live, got {xp.__name__}; "
            "move the model there, or leave xp out"
        )
    if dtype is not None and own_xp.dtype(dtype) != own_dtype:
        raise ValueError(f"{where}: dtype must be {own_dtype}, the parameters' dtype, got {own_xp.dtype(dtype)}")
    return own_xp, own_dtype


class _Distribution(Module):
    """What the bases share: the repr, in the form minflow's flows use."""

    def extra_repr(self):
        return f"event_shape={self.event_shape}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class StandardNormal(_Distribution):
    """N(0, I) over events of shape ``event_shape`` (an int or a tuple, e.g. 2 or (1, 8, 8)).

    A Module without parameters, so a model treats it like any base."""

    def __init__(self, event_shape):
        self.event_shape = _event_shape(event_shape, "StandardNormal")
        self.size = math.prod(self.event_shape)

    def log_prob(self, z):
        """log N(z; 0, I), summed over each event: (B, *event_shape) -> (B,)."""
        z = _check_z(z, self.event_shape, "StandardNormal")
        squares = ops.sum(z * z, axis=tuple(range(1, z.ndim)))  # |z|^2 of each event, any event shape
        return -0.5 * squares - 0.5 * self.size * LOG_2PI

    def sample(self, n, seed=None, dtype=None, xp=None):
        """``n`` samples, an array (n, *event_shape) of namespace ``xp`` (default: the default backend)."""
        dtype = dtype or backend.get_default_dtype()
        return backend.rng(seed, xp).standard_normal((n,) + self.event_shape, dtype=dtype)


class DiagonalGaussian(_Distribution):
    """N(mu, diag sigma^2) over events of shape ``event_shape``, with mu and sigma learned.

    Parameters ``mean`` (mu) and ``log_scale`` (log sigma), each of shape ``event_shape``;
    sigma = exp(log_scale) is positive whatever value the optimizer gives log_scale. Both
    start at 0, so the base starts as N(0, I), the usual base, and the flow trains from the
    same start as with StandardNormal. (``seed`` is accepted, so that every base is built
    alike, and unused: this start is not random.)

    Density. z = mu + sigma * e with e ~ N(0, I) is an affine map, so with u = (z - mu) / sigma
    (the e that gives z) and |det du/dz| = prod_i 1/sigma_i, change of variables gives

        log p(z) = log N(u; 0, I) - sum_i log sigma_i
                 = -1/2 sum_i ((z_i - mu_i) / sigma_i)^2 - sum_i log sigma_i - n/2 log(2 pi).

    Sampling is that map: z = mu + sigma * e. Cost O(n) per event, both ways.
    """

    def __init__(self, event_shape, seed=None):
        self.event_shape = _event_shape(event_shape, "DiagonalGaussian")
        self.size = math.prod(self.event_shape)
        zeros = backend.xp().zeros(self.event_shape, dtype=backend.get_default_dtype())
        self.mean = Parameter(zeros)
        self.log_scale = Parameter(zeros.copy())

    def log_prob(self, z):
        """log N(z; mu, diag sigma^2), summed over each event: (B, *event_shape) -> (B,)."""
        z = _check_z(z, self.event_shape, "DiagonalGaussian")
        return _gaussian_log_density(z, self.mean, self.log_scale, axis=tuple(range(1, z.ndim)))

    def sample(self, n, seed=None, dtype=None, xp=None):
        """``n`` samples mu + sigma * e, an array (n, *event_shape) where the parameters live."""
        xp, dtype = _sampling_namespace(self, dtype, xp, "DiagonalGaussian.sample")
        e = backend.rng(seed, xp).standard_normal((n,) + self.event_shape, dtype=dtype)
        return self.mean.data + xp.exp(self.log_scale.data) * e


class GaussianMixture(_Distribution):
    """A mixture of K diagonal Gaussians on vectors of ``dim`` coordinates (z of shape (B, dim)).

        p(z) = sum_k w_k N(z; mu_k, diag sigma_k^2),    w = softmax(logits),  sigma_k = exp(log_scale_k)

    Parameters ``logits`` (K,), ``means`` (K, dim) and ``log_scales`` (K, dim); the softmax
    keeps the weights positive and summing to 1, the exp keeps the scales positive, whatever
    values the optimizer gives them.

    Density, stably. A sum of exponentials overflows or underflows if taken literally, so
    take logs and let logsumexp (which shifts by the largest term) do the sum:

        log p(z) = log sum_k exp(log w_k + log N(z; mu_k, sigma_k^2))
                 = logsumexp_k [ log softmax(logits)_k + log N(z; mu_k, sigma_k^2) ],
        log softmax(logits)_k = logits_k - logsumexp(logits),

    with each log N the diagonal Gaussian's (see DiagonalGaussian). Cost O(K dim) per sample.

    Initialisation: equal weights, unit scales, and means drawn from N(0, spread^2 I) with
    ``seed``. The means must differ: K identical components are one Gaussian, and, being
    identical, they get identical gradients, so training could never pull them apart.

    Sampling. Pick a component k with probability w_k, then z = mu_k + sigma_k * e. The pick
    is the inverse of the weights' CDF: with c_j = w_1 + ... + w_j and u ~ U(0, 1),
    k = #{j < K : c_j <= u} (0-based), so k = j exactly when u falls in an interval of length w_j.
    """

    def __init__(self, dim, components=8, seed=None, spread=1.0):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"GaussianMixture: dim must be a positive int, got {dim!r}")
        if not isinstance(components, int) or isinstance(components, bool) or components < 1:
            raise ValueError(f"GaussianMixture: components must be a positive int, got {components!r}")
        if not isinstance(spread, (int, float)) or not 0 < spread < math.inf:
            raise ValueError(f"GaussianMixture: spread must be a positive finite number, got {spread!r}")
        self.event_shape, self.size, self.components = (dim,), dim, components
        xp, dtype = backend.xp(), backend.get_default_dtype()
        self.logits = Parameter(xp.zeros((components,), dtype=dtype))
        self.means = Parameter(spread * backend.rng(seed).standard_normal((components, dim), dtype=dtype))
        self.log_scales = Parameter(xp.zeros((components, dim), dtype=dtype))

    def component_log_probs(self, z):
        """log N(z; mu_k, sigma_k^2) of every sample and component: (B, dim) -> (B, K)."""
        z = _check_z(z, self.event_shape, "GaussianMixture")
        z = ops.reshape(z, (z.shape[0], 1, self.size))  # (B, 1, dim) against the (K, dim) parameters
        return _gaussian_log_density(z, self.means, self.log_scales, axis=2)

    def log_weights(self):
        """log w_k = logits_k - logsumexp(logits), shape (K,)."""
        return self.logits - ops.logsumexp(self.logits, axis=0)

    def log_prob(self, z):
        """log p(z) = logsumexp_k [log w_k + log N(z; mu_k, sigma_k^2)]: (B, dim) -> (B,)."""
        return ops.logsumexp(self.log_weights() + self.component_log_probs(z), axis=1)

    def sample(self, n, seed=None, dtype=None, xp=None):
        """``n`` samples, an array (n, dim) where the parameters live (components drawn, then Gaussians)."""
        xp, dtype = _sampling_namespace(self, dtype, xp, "GaussianMixture.sample")
        rng = backend.rng(seed, xp)
        with no_grad():
            weights = ops.softmax(self.logits).data
        boundaries = xp.cumsum(weights)[:-1]  # c_1, ..., c_{K-1}; c_K = 1 is not needed
        k = xp.searchsorted(boundaries, rng.random(n, dtype=dtype), side="right")  # #{j: c_j <= u}
        e = rng.standard_normal((n, self.size), dtype=dtype)
        return self.means.data[k] + xp.exp(self.log_scales.data[k]) * e

    def extra_repr(self):
        return f"dim={self.size}, components={self.components}"
