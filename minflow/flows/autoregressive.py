"""Autoregressive flows: transform each coordinate with parameters computed from the ones before it.

The idea. Fix an order of the coordinates. Coordinate i is transformed by an elementwise
transformer g whose parameters depend on the coordinates *before* it, x_{<i}::

    z_i = g(x_i; theta_i(x_{<i}))              (MAF: the normalizing direction)

A coupling layer is the special case in which the first half of the coordinates is kept
and the second half conditioned on all of it; here every coordinate is conditioned on
all of its predecessors, which is more expressive per layer.

Jacobian. dz_i/dx_j = 0 for j after i (theta_i does not see x_j, and g acts on x_i
alone), so in the chosen order the Jacobian is lower triangular::

    [ g_1'    0      0    ]
    [  *     g_2'    0    ]      log|det dz/dx| = sum_i log|g'(x_i; theta_i(x_{<i}))|
    [  *      *     g_3'  ]

The determinant of a triangular matrix is the product of its diagonal (expand along the
first row: only the corner survives, and its minor is triangular again), so the starred
entries - the whole network - never need to be computed.

MADE makes all theta_i in one network pass: an MLP whose weights are masked so that
output i only sees inputs before i (Germain et al. 2015). Hence the asymmetry:

    MAF  density  z = f(x):  theta = MADE(x), one pass                       O(1) passes
    MAF  sampling x = f^-1(z): x_i needs x_{<i}: D passes, one coordinate each  O(D) passes
    IAF  = the inverse of MAF: sampling in one pass, density in D passes.

In the key/encrypt picture of coupling layers: coordinate i is encrypted with a key made
from everything before it, so decrypting (inverting) must go one coordinate at a time.

References: Germain, Gregor, Murray, Larochelle (2015), "MADE"; Papamakarios, Pavlakou,
Murray (2017), "Masked Autoregressive Flow"; Kingma et al. (2016), "Improved variational
inference with inverse autoregressive flow"; Durkan et al. (2019), "Neural Spline Flows".

Context. A conditional MAF (Papamakarios et al. 2017, section 3.4) feeds a context c to
MADE as extra inputs of degree 0: they connect to every hidden unit (0 <= any hidden
degree), while the masks among the x's stay as they were; hidden units of degree 0, which
see c alone, carry it to theta_1 (``made_degrees``). So theta_i is a function of
(x_{<i}, c), the Jacobian in x is still triangular, and the log-det the same sum.
"""

from .. import backend
from ..autodiff import ops
from ..nn import ACTIVATIONS, Buffer, Linear, Module
from .base import Flow, Inverse, call_with_context, check_dim, check_int
from .splines import PiecewiseLinearTransformer, SplineTransformer
from .transformers import AffineTransformer, Transformer


def made_degrees(dim, hidden, order=None, conditional=False):
    """The degrees of MADE's units: inputs, each hidden layer, and outputs.

    An input's degree is its position in the autoregressive order (1..D). A hidden unit of
    degree m may see the inputs of degree <= m; an output of degree i must only see inputs
    of degree < i. Hidden degrees cycle through 1..D-1 (every value used, none wasted: a
    hidden unit of degree D could feed no output).

    ``conditional``: the context units have degree 0, and hidden degrees cycle through
    0..D-1 instead. A hidden unit of degree 0 sees the context alone, and it is the only
    kind that can feed the first coordinate's output (degree 1 needs a unit of degree < 1):
    without it, theta_1 would be a constant and x_1's density would ignore the context.
    """
    order = list(range(dim)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(dim)):
        raise ValueError(f"order must be a permutation of 0..{dim - 1}, got {order}")
    inputs = [0] * dim
    for position, coordinate in enumerate(order):
        inputs[coordinate] = position + 1
    if conditional:
        layers = [[k % dim for k in range(width)] for width in hidden]
    else:
        top = max(dim - 1, 1)
        layers = [[k % top + 1 for k in range(width)] for width in hidden]
    return inputs, layers


class MaskedLinear(Linear):
    """A Linear layer whose weight is multiplied by a fixed 0/1 mask (a Buffer): y = x (W * M) + b."""

    def __init__(self, in_features, out_features, mask, zero=False, seed=None):
        super().__init__(in_features, out_features, zero=zero, seed=seed)
        self.mask = Buffer(backend.xp().asarray(mask, dtype=self.weight.dtype))

    def forward(self, x):
        return ops.matmul(x, self.weight * self.mask) + self.bias


class MADE(Module):
    """Masked autoencoder for distribution estimation: theta(x) with theta_i a function of x_{<i}.

    (B, D) -> (B, D, params_per_dim). Masks from the degrees (``made_degrees``): a weight
    from a unit of degree a to a hidden unit of degree b is kept when b >= a; to an output
    of degree i when i > a (strictly, so no output sees its own input). Every path from
    input j to output i then passes degrees deg(j) <= ... < deg(i), which proves the
    autoregressive property. The last layer starts at zero, so theta starts at 0.
    Defaults: ``hidden`` (64, 64), ``activation`` "relu", ``order`` the natural one.
    Cost: one MLP pass, O(D H + H^2) per sample.

    ``context_dim`` C > 0: ``forward(x, context)`` reads a (B, C) context as C more inputs of
    degree 0, connected to every unit of the first hidden layer (and, through it, to every
    output): theta_i is a function of x_{<i} and c.
    """

    def __init__(self, dim, params_per_dim, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0):
        dim = check_dim(dim, "MADE")
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        context_dim = check_int(context_dim, "context_dim", "MADE", minimum=0)
        inputs, layers = made_degrees(dim, hidden, order, conditional=context_dim > 0)
        rng = backend.rng(seed)
        self.degrees = Buffer(backend.xp().asarray(inputs, dtype=backend.xp().int64))
        self.layers = []
        previous = inputs + [0] * context_dim  # context units: degree 0, below every hidden degree
        for degrees in layers:
            mask = [[float(b >= a) for b in degrees] for a in previous]
            self.layers.append(MaskedLinear(len(previous), len(degrees), mask, seed=rng))
            previous = degrees
        # output unit (i, p): parameter p of coordinate i, laid out coordinate-major
        outputs = [d for d in inputs for _ in range(params_per_dim)]
        mask = [[float(i > a) for i in outputs] for a in previous]
        self.layers.append(MaskedLinear(len(previous), len(outputs), mask, zero=True, seed=rng))
        self.dim, self.params_per_dim, self.activation = dim, params_per_dim, activation
        self.context_dim = context_dim

    def forward(self, x, context=None):
        act = ACTIVATIONS[self.activation]
        h = x if not self.context_dim else ops.concatenate([x, context], axis=1)
        for layer in self.layers[:-1]:
            h = act(layer(h))
        theta = self.layers[-1](h)
        return ops.reshape(theta, (x.shape[0], self.dim, self.params_per_dim))


class MaskedAutoregressive(Flow):
    """MAF: z_i = g(x_i; theta_i(x_{<i})), theta = MADE(x) (see the module docstring).

    forward (density): one MADE pass, then the transformer: O(1) passes.
    inverse (sampling): D passes. Pass k computes theta from the current guess of x and
    inverts the transformer; coordinates of degree <= k are then exact, because theta of
    degree k only reads coordinates of degree < k. So after D passes (``passes``) every
    coordinate is exact - not approximately, but to rounding - and the log-det of the last
    pass is the log-det at the matching point.

    ``transformer``: any :class:`~minflow.flows.transformers.Transformer`;
    ``AffineTransformer()`` (MAF, Papamakarios et al. 2017) by default. Named variants:
    ``SplineAutoregressive`` and ``PiecewiseLinearAutoregressive``. ``order``: the
    autoregressive order (a permutation of 0..D-1; default 0, 1, ..., D-1); stacks
    alternate it, or put a Permutation between layers. ``hidden`` (default (64, 64)) and
    ``activation`` (default "relu"): MADE's. ``context_dim`` C > 0: a conditional MAF, whose
    MADE also reads a (B, C) context (see the module docstring).
    """

    def __init__(self, dim, transformer=None, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0):
        dim = check_dim(dim, type(self).__name__)
        transformer = AffineTransformer() if transformer is None else transformer
        if not isinstance(transformer, Transformer):
            raise ValueError(
                f"{type(self).__name__}: transformer must be a Transformer, got {type(transformer).__name__}"
            )
        self.transformer = transformer
        self.made = MADE(dim, self.transformer.params_per_dim, hidden, order, activation, seed, context_dim)
        self.context_dim = self.made.context_dim
        self.event_shape = (dim,)
        self.input_domain = self.output_domain = tuple(self.transformer.domain)

    def forward(self, x, context=None):
        x = self._check_input(x)
        context = self._check_context(context, x.shape[0])
        z, log_derivative = self.transformer.forward(x, call_with_context(self.made, x, context))
        return z, ops.sum(log_derivative, axis=1)

    def inverse(self, z, context=None, passes=None):
        z = self._check_input(z, "z")
        context = self._check_context(context, z.shape[0])
        passes = self.event_shape[0] if passes is None else passes
        x = z * 0.0  # any start will do: pass k fixes the coordinates of degree k
        for _ in range(passes):
            x, log_derivative = self.transformer.inverse(z, call_with_context(self.made, x, context))
        return x, ops.sum(log_derivative, axis=1)


class InverseAutoregressive(Inverse):
    """IAF: the inverse of a MAF layer, built from the same machinery (Kingma et al. 2016).

    forward (density) = MAF's inverse: D passes. inverse (sampling) = MAF's forward: one
    pass, theta computed from the *latent* coordinates z_{<i}. Fast to sample from, slow
    to evaluate: the right trade for a variational posterior, which is sampled, or for
    reverse-KL training (``train.fit_to_density``), which only needs samples and their
    densities. Arguments and defaults: those of ``MaskedAutoregressive``.
    """

    def __init__(self, dim, transformer=None, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0):
        super().__init__(MaskedAutoregressive(dim, transformer, hidden, order, activation, seed, context_dim))


class SplineAutoregressive(MaskedAutoregressive):
    """Autoregressive neural spline flow: z_i = RQ-spline(x_i; theta_i(x_{<i})), identity outside
    [-bound, bound] (Durkan et al. 2019, section 3.2). ``MaskedAutoregressive`` with a
    ``SplineTransformer(bins, bound)``: MADE predicts 3 bins - 1 parameters per coordinate.
    log|det| = sum_i log g'(x_i); density O(D K) after one MADE pass, sampling D passes.
    Defaults: ``bins`` 8, ``bound`` 4.0, ``hidden`` (64, 64), ``activation`` "relu"."""

    def __init__(
        self, dim, bins=8, bound=4.0, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0
    ):
        super().__init__(dim, SplineTransformer(bins, bound), hidden, order, activation, seed, context_dim)


class PiecewiseLinearAutoregressive(MaskedAutoregressive):
    """z_i = f(x_i; phi_i(x_{<i})) on [0, 1]^D with the piecewise-linear map of UDL eq. 16.12:
    ``MaskedAutoregressive`` with a ``PiecewiseLinearTransformer(bins)``: the flow of UDL's
    notebook 16.2 (Prince 2023) with one MADE as its conditioner. Inputs must lie in [0, 1].
    Defaults: ``bins`` 5, ``hidden`` (64, 64), ``activation`` "relu"."""

    def __init__(self, dim, bins=5, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0):
        super().__init__(dim, PiecewiseLinearTransformer(bins), hidden, order, activation, seed, context_dim)


class SplineInverseAutoregressive(InverseAutoregressive):
    """The inverse of ``SplineAutoregressive``: spline IAF, sampling in one pass, density in D
    (Durkan et al. 2019 use it for variational inference). Defaults: ``bins`` 8, ``bound`` 4.0,
    ``hidden`` (64, 64), ``activation`` "relu"."""

    def __init__(
        self, dim, bins=8, bound=4.0, hidden=(64, 64), order=None, activation="relu", seed=None, context_dim=0
    ):
        super().__init__(dim, SplineTransformer(bins, bound), hidden, order, activation, seed, context_dim)
