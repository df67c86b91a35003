"""Base distributions: the simple density a flow maps data onto.

The standard normal in n dimensions has

    log p(z) = -1/2 sum_i z_i^2 - n/2 log(2 pi)

which is cheap to evaluate and to sample, and so makes a good latent space.
"""

import math

from . import backend
from .autodiff import Tensor, ops


class StandardNormal:
    """N(0, I) over events of shape ``event_shape`` (an int or a tuple, e.g. 2 or (1, 8, 8))."""

    def __init__(self, event_shape):
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"event_shape must be positive ints, got {event_shape!r}")
        self.event_shape = shape
        self.size = math.prod(shape)

    def log_prob(self, z):
        """log N(z; 0, I), summed over each event: (B, *event_shape) -> (B,)."""
        z = z if isinstance(z, Tensor) else Tensor(z)
        if tuple(z.shape[1:]) != self.event_shape:
            raise ValueError(f"StandardNormal: z must have shape (B, *{self.event_shape}), got {tuple(z.shape)}")
        squares = ops.sum(z * z, axis=tuple(range(1, z.ndim)))  # |z|^2 of each event, any event shape
        return -0.5 * squares - 0.5 * self.size * math.log(2 * math.pi)

    def sample(self, n, seed=None, dtype=None, xp=None):
        """``n`` samples, an array (n, *event_shape) of namespace ``xp`` (default: the default backend)."""
        dtype = dtype or backend.get_default_dtype()
        return backend.rng(seed, xp).standard_normal((n,) + self.event_shape, dtype=dtype)

    def __repr__(self):
        return f"StandardNormal(event_shape={self.event_shape})"
