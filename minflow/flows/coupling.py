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

from .. import backend
from ..autodiff import ops
from ..nn import MLP, Buffer
from .base import Flow, check_dim, check_int
from .splines import PiecewiseLinearTransformer, SplineTransformer
from .transformers import AdditiveTransformer, AffineTransformer, Transformer


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


def channel_mask(channels, height, width, first=True):
    """For images (C, H, W): keep the first half of the channels (or the rest) at every pixel."""
    kept = half_mask(channels, first)
    return [[[kept[c]] * width for _ in range(height)] for c in range(channels)]


def checkerboard_mask(channels, height, width, even=True):
    """For images (C, H, W): keep the pixels where row + column is even (or odd), in every channel."""
    return [[[((i + j) % 2 == 0) == even for j in range(width)] for i in range(height)] for _ in range(channels)]


def _is_block(positions):
    """True if the sorted ``positions`` are consecutive: 3, 4, 5 but not 0, 2, 4."""
    return positions[-1] - positions[0] == len(positions) - 1


# --- the coupling layer -----------------------------------------------------------------------
class Coupling(Flow):
    """z1 = h1, z2 = g(h2; theta(h1)) with h1 = x[mask], h2 = x[~mask] (see the module docstring).

    ``mask``: booleans of the event's shape, True where a coordinate is kept (h1): a list of
    D for vectors (``half_mask``, ``alternating_mask``), nested (C, H, W) lists for images
    (``channel_mask``, ``checkerboard_mask``); at least one coordinate on each side. The
    event is flattened, so h1 and h2 are (B, D1) and (B, D2) whatever its shape.
    ``transformer``: a :class:`~minflow.flows.transformers.Transformer` (``params_per_dim``,
    ``domain``, ``forward(h, theta)`` / ``inverse(z, theta)`` returning (values,
    log-derivatives)), here with theta (B, D2, params_per_dim). ``conditioner``: a Module mapping
    (B, D1) to (B, D2 * params_per_dim); by default an MLP with ``hidden`` units per hidden
    layer (default (64, 64)) and ``activation`` (default "relu") whose last layer starts at
    zero, so the layer starts as the identity map.

    ``context_dim`` C > 0 makes the layer conditional: theta = conditioner([h1, c]) reads the
    (B, C) context concatenated to h1, so z2 = g(h2; theta(h1, c)). The Jacobian in x keeps
    its triangular form (c is not transformed), so the log-det is the same formula.
    """

    def __init__(
        self, mask, transformer, conditioner=None, hidden=(64, 64), activation="relu", seed=None, context_dim=0
    ):
        if not isinstance(transformer, Transformer):
            raise ValueError(
                f"{type(self).__name__}: transformer must be a Transformer, got {type(transformer).__name__}"
            )
        mask = backend.to_numpy(mask).astype(bool)
        flat = mask.reshape(-1).tolist()
        check_dim(len(flat), type(self).__name__)
        kept = [i for i, m in enumerate(flat) if m]
        changed = [i for i, m in enumerate(flat) if not m]
        if not kept or not changed:
            raise ValueError(
                f"{type(self).__name__}: mask must keep at least one coordinate and change one, got {mask.tolist()}"
            )
        xp = backend.xp()
        self.kept = Buffer(xp.asarray(kept, dtype=xp.int64))
        self.changed = Buffer(xp.asarray(changed, dtype=xp.int64))
        # z = concatenate([z1, z2]) puts the coordinates in the order kept + changed;
        # indexing with the inverse of that order puts them back where they came from.
        order = kept + changed
        self.restore = Buffer(xp.asarray(sorted(range(len(flat)), key=order.__getitem__), dtype=xp.int64))
        # Fast path for masks whose two parts are each one contiguous block (the half masks):
        # slices make views instead of gathered copies, and concatenating the blocks in
        # their order puts every coordinate back where it was, with no gather at all.
        self._blocks = None
        if _is_block(kept) and _is_block(changed):
            self._blocks = (slice(kept[0], kept[-1] + 1), slice(changed[0], changed[-1] + 1), kept[0] == 0)
        self.transformer = transformer
        self.context_dim = check_int(context_dim, "context_dim", type(self).__name__, minimum=0)
        if conditioner is None:
            sizes = [len(kept) + self.context_dim, *hidden, len(changed) * transformer.params_per_dim]
            conditioner = MLP(sizes, activation=activation, zero_last=True, seed=seed)
        self.conditioner = conditioner
        self.event_shape = tuple(mask.shape)
        # kept coordinates pass through unchanged, so the transformer's domain is the layer's
        self.input_domain = self.output_domain = tuple(transformer.domain)

    def _theta(self, h1, context):
        theta = self.conditioner(h1 if context is None else ops.concatenate([h1, context], axis=1))
        return ops.reshape(theta, (h1.shape[0], self.changed.shape[0], self.transformer.params_per_dim))

    def _couple(self, x, context, transform):
        """Split the flattened event, transform h2 with parameters from h1 (and c), reassemble."""
        flat = x if x.ndim == 2 else ops.reshape(x, (x.shape[0], -1))
        if self._blocks is not None:
            kept, changed, kept_first = self._blocks
            h1, h2 = flat[:, kept], flat[:, changed]
            out2, log_derivative = transform(h2, self._theta(h1, context))
            out = ops.concatenate([h1, out2] if kept_first else [out2, h1], axis=1)
        else:
            h1, h2 = flat[:, self.kept.data], flat[:, self.changed.data]
            out2, log_derivative = transform(h2, self._theta(h1, context))
            out = ops.concatenate([h1, out2], axis=1)[:, self.restore.data]
        out = out if x.ndim == 2 else ops.reshape(out, x.shape)
        return out, ops.sum(log_derivative, axis=1)

    def forward(self, x, context=None):
        x = self._check_input(x)
        return self._couple(x, self._check_context(context, x.shape[0]), self.transformer.forward)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        return self._couple(z, self._check_context(context, z.shape[0]), self.transformer.inverse)

    def extra_repr(self):
        conditional = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"event_shape={self.event_shape}, {type(self.transformer).__name__}{conditional}"


class AdditiveCoupling(Coupling):
    """NICE: z2 = h2 + t(h1). Volume preserving: the Jacobian's diagonal blocks are I and I,
    so log|det| = 0 exactly, whatever t is (Dinh et al. 2014). ``hidden`` (default (64, 64)) and
    ``activation`` (default "relu") are the conditioner's, as in ``Coupling``."""

    def __init__(self, mask, hidden=(64, 64), activation="relu", seed=None, context_dim=0):
        super().__init__(
            mask, AdditiveTransformer(), hidden=hidden, activation=activation, seed=seed, context_dim=context_dim
        )


class AffineCoupling(Coupling):
    """RealNVP: z2 = h2 * exp(s(h1)) + t(h1), log|det| = sum_i s_i(h1) (Dinh et al. 2017).

    The log-scale s is bounded by ``scale_bound * tanh`` and the conditioner's last layer
    starts at zero, so every layer starts as the identity. Defaults: ``scale_bound`` 2.0,
    ``hidden`` (64, 64), ``activation`` "relu".
    """

    def __init__(self, mask, hidden=(64, 64), activation="relu", scale_bound=2.0, seed=None, context_dim=0):
        transformer = AffineTransformer(scale_bound)
        super().__init__(mask, transformer, hidden=hidden, activation=activation, seed=seed, context_dim=context_dim)


class SplineCoupling(Coupling):
    """Neural spline coupling: z2 = RQ-spline(h2; theta(h1)), identity outside [-bound, bound]
    (Durkan et al. 2019). log|det| = sum_i log g'(h2_i), O(D K) per sample each way.
    Defaults: ``bins`` 8, ``bound`` 4.0, ``hidden`` (64, 64), ``activation`` "relu"."""

    def __init__(self, mask, bins=8, bound=4.0, hidden=(64, 64), activation="relu", seed=None, context_dim=0):
        transformer = SplineTransformer(bins, bound)
        super().__init__(mask, transformer, hidden=hidden, activation=activation, seed=seed, context_dim=context_dim)


class PiecewiseLinearCoupling(Coupling):
    """Piecewise-linear coupling on [0, 1]^D: z2 = f(h2; phi(h1)) with the map of UDL eq. 16.12
    (Mueller et al. 2019, "Neural importance sampling"). Inputs must lie in [0, 1].
    Defaults: ``bins`` 5, ``hidden`` (64, 64), ``activation`` "relu"."""

    def __init__(self, mask, bins=5, hidden=(64, 64), activation="relu", seed=None, context_dim=0):
        transformer = PiecewiseLinearTransformer(bins)
        super().__init__(mask, transformer, hidden=hidden, activation=activation, seed=seed, context_dim=context_dim)
