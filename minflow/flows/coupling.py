"""Coupling flows: transform half of the coordinates with parameters computed from the other half.

The idea (Dinh et al. 2014, NICE). Split x into two parts, h1 and h2. Leave h1 as it is,
and transform h2 elementwise with an invertible *transformer* g whose parameters theta
are computed from h1 by any function at all, the *conditioner* (a neural network)::

    z1 = h1
    z2 = g(h2; theta(h1))

Inverse: h1 = z1 is known, so theta(z1) can be recomputed, and h2 = g^{-1}(z2; theta(z1)).
The conditioner itself is never inverted; it can be as large as we like. In the words of
cryptography: h1 is the *key* that encrypts h2; whoever holds z1 holds the key.

Jacobian. Order the coordinates as (h1, h2)::

    d(z1, z2)       [ I              0         ]
    ---------   =   [                          ]      (block lower triangular)
    d(h1, h2)       [ dz2/dh1   diag(g'(h2))   ]

The top-right block is 0 because z1 does not depend on h2; the bottom-right block is
diagonal because g acts elementwise. The determinant of a block-triangular matrix is the
product of the determinants of its diagonal blocks, so the complicated block dz2/dh1 (the
network!) never has to be looked at::

    log|det dz/dx| = sum_i log|g'(h2_i; theta(h1))|

Cost: one conditioner pass each way, plus O(D) (affine) or O(D K) (spline) for the
transformer; forward and inverse are equally fast. A coupling layer leaves h1 untouched,
so layers alternate which half is transformed (or a permutation goes between them).

References: Dinh, Krueger, Bengio (2014), "NICE"; Dinh, Sohl-Dickstein, Bengio (2017),
"Density estimation using Real NVP"; Durkan et al. (2019), "Neural Spline Flows".
"""

import math

from .. import backend
from ..autodiff import Tensor, ops
from ..nn import MLP, Buffer
from . import transformers
from .base import Flow, check_dim


# --- transformers with a fixed number of parameters per coordinate --------------------------
class AffineTransformer:
    """g(h; shift, s) = h * exp(log_scale) + shift, log_scale = scale_bound * tanh(s / scale_bound).

    Bounding the log-scale with a tanh (RealNVP does the same) keeps one unlucky step of
    training from producing exp(50): the scale stays within exp(+-scale_bound). Near 0 the
    tanh is the identity, so a zero-initialised conditioner still starts at the identity.
    """

    params_per_dim = 2

    def __init__(self, scale_bound=2.0):
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        self.scale_bound = float(scale_bound)

    def _shift_and_log_scale(self, theta):
        bound = self.scale_bound
        return theta[..., 0], bound * ops.tanh(theta[..., 1] / bound)

    def forward(self, h, theta):
        return transformers.affine(h, *self._shift_and_log_scale(theta))

    def inverse(self, z, theta):
        return transformers.affine_inverse(z, *self._shift_and_log_scale(theta))


class AdditiveTransformer:
    """g(h; shift) = h + shift: volume preserving, log|g'| = 0 (NICE)."""

    params_per_dim = 1

    def forward(self, h, theta):
        return h + theta[..., 0], _zeros_like(h)

    def inverse(self, z, theta):
        return z - theta[..., 0], _zeros_like(z)


def _zeros_like(h):
    return Tensor(backend.array_module(h.data).zeros(h.shape, dtype=h.dtype))


class SplineTransformer:
    """The rational-quadratic spline on [-bound, bound] with ``bins`` bins, identity tails.

    3K - 1 parameters per coordinate: K widths, K heights, K - 1 interior derivatives
    (mapped to valid ones by ``transformers.rational_quadratic_parameters``). All zeros
    would give equal bins with derivative ~0.69; the identity offset below makes a
    zero-initialised conditioner start at the identity map.
    """

    min_derivative = 1e-3

    def __init__(self, bins=8, bound=4.0):
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound!r}")
        self.bins, self.bound = bins, float(bound)
        self.params_per_dim = 3 * bins - 1
        # softplus(u) + min_derivative = 1  <=>  u = log(e^{1 - min_derivative} - 1)
        self.identity_derivative = math.log(math.expm1(1.0 - self.min_derivative))

    def _spline(self, theta):
        k = self.bins
        return transformers.rational_quadratic_parameters(
            theta[..., :k], theta[..., k : 2 * k], theta[..., 2 * k :] + self.identity_derivative,
            self.bound, min_derivative=self.min_derivative,
        )

    def forward(self, h, theta):
        return transformers.rational_quadratic_spline(h, *self._spline(theta), self.bound)

    def inverse(self, z, theta):
        return transformers.rational_quadratic_spline_inverse(z, *self._spline(theta), self.bound)


# --- masks -----------------------------------------------------------------------------------
def half_mask(dim, first=True):
    """True for the coordinates that are kept (h1): the first half, or (first=False) the
    rest, so that the two masks are complements and alternate cleanly."""
    dim = check_dim(dim, "half_mask")
    first_half = [i < max(dim // 2, 1) for i in range(dim)]
    return first_half if first else [not kept for kept in first_half]


def alternating_mask(dim, even=True):
    """True for the even (or the odd) coordinates: the checkerboard mask of a vector."""
    dim = check_dim(dim, "alternating_mask")
    return [(i % 2 == 0) == even for i in range(dim)]


# --- the coupling layer -----------------------------------------------------------------------
class Coupling(Flow):
    """z1 = h1, z2 = g(h2; theta(h1)) with h1 = x[:, mask], h2 = x[:, ~mask] (see the module docstring).

    ``mask``: a boolean sequence of length D, True where a coordinate is kept (h1); at
    least one coordinate on each side. ``transformer``: an object with ``params_per_dim``
    and ``forward(h, theta)`` / ``inverse(z, theta)`` returning (values, log-derivatives),
    theta of shape (B, D2, params_per_dim). ``conditioner``: a Module mapping (B, D1) to
    (B, D2 * params_per_dim); by default an MLP with ``hidden`` units per hidden layer
    whose last layer starts at zero, so the layer starts as the identity map.
    """

    def __init__(self, mask, transformer, conditioner=None, hidden=(64, 64), activation="relu", seed=None):
        mask = [bool(m) for m in mask]
        dim = check_dim(len(mask), type(self).__name__)
        kept = [i for i, m in enumerate(mask) if m]
        changed = [i for i, m in enumerate(mask) if not m]
        if not kept or not changed:
            raise ValueError(f"{type(self).__name__}: mask must keep at least one coordinate and change one, got {mask}")
        xp = backend.xp()
        self.kept = Buffer(xp.asarray(kept, dtype=xp.int64))
        self.changed = Buffer(xp.asarray(changed, dtype=xp.int64))
        # z = concatenate([z1, z2]) puts the coordinates in the order kept + changed;
        # indexing with the inverse of that order puts them back where they came from.
        order = kept + changed
        self.restore = Buffer(xp.asarray(sorted(range(dim), key=order.__getitem__), dtype=xp.int64))
        self.transformer = transformer
        if conditioner is None:
            sizes = [len(kept), *hidden, len(changed) * transformer.params_per_dim]
            conditioner = MLP(sizes, activation=activation, zero_last=True, seed=seed)
        self.conditioner = conditioner
        self.event_shape = (dim,)

    def _theta(self, h1):
        theta = self.conditioner(h1)
        return ops.reshape(theta, (h1.shape[0], self.changed.shape[0], self.transformer.params_per_dim))

    def forward(self, x):
        x = self._check_input(x)
        h1, h2 = x[:, self.kept.data], x[:, self.changed.data]
        z2, log_derivative = self.transformer.forward(h2, self._theta(h1))
        z = ops.concatenate([h1, z2], axis=1)[:, self.restore.data]
        return z, ops.sum(log_derivative, axis=1)

    def inverse(self, z):
        z = self._check_input(z, "z")
        z1, z2 = z[:, self.kept.data], z[:, self.changed.data]
        h2, log_derivative = self.transformer.inverse(z2, self._theta(z1))
        x = ops.concatenate([z1, h2], axis=1)[:, self.restore.data]
        return x, ops.sum(log_derivative, axis=1)

    def extra_repr(self):
        return f"kept={backend.to_numpy(self.kept.data).tolist()}, {type(self.transformer).__name__}"


class AdditiveCoupling(Coupling):
    """NICE: z2 = h2 + t(h1). Volume preserving: the Jacobian's diagonal blocks are I and I,
    so log|det| = 0 exactly, whatever t is (Dinh et al. 2014)."""

    def __init__(self, mask, hidden=(64, 64), activation="relu", seed=None):
        super().__init__(mask, AdditiveTransformer(), hidden=hidden, activation=activation, seed=seed)


class AffineCoupling(Coupling):
    """RealNVP: z2 = h2 * exp(s(h1)) + t(h1), log|det| = sum_i s_i(h1) (Dinh et al. 2017).

    The log-scale s is bounded by ``scale_bound * tanh`` and the conditioner's last layer
    starts at zero, so every layer starts as the identity.
    """

    def __init__(self, mask, hidden=(64, 64), activation="relu", scale_bound=2.0, seed=None):
        super().__init__(mask, AffineTransformer(scale_bound), hidden=hidden, activation=activation, seed=seed)


class SplineCoupling(Coupling):
    """Neural spline coupling: z2 = RQ-spline(h2; theta(h1)), identity outside [-bound, bound]
    (Durkan et al. 2019). log|det| = sum_i log g'(h2_i), O(D K) per sample each way."""

    def __init__(self, mask, bins=8, bound=4.0, hidden=(64, 64), activation="relu", seed=None):
        super().__init__(mask, SplineTransformer(bins, bound), hidden=hidden, activation=activation, seed=seed)
