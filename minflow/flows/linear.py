"""Linear flows: mixing the coordinates with a matrix.

A flow needs layers that *mix* dimensions (an elementwise or coupling layer alone only
moves some coordinates as a function of others). The simplest mixer is a matrix,

    z = x W^T + b          (row vectors: x, z are (B, D), W is (D, D), b is (D,))

whose Jacobian dz/dx = W is the same at every point. The whole lesson of this file is
what that determinant costs, and how structure makes it cheap:

    class         Jacobian                log-det           forward / sample   inverse / sample
    DenseLinear   dense W                 O(D^3) (LU)       O(D^2)             O(D^3) once + O(D^2)
    LULinear      W = L U (triangular)    O(D)              O(D^2)             O(D^2) (two solves)
    Permutation   permutation matrix      0                 O(D)               O(D)
    ActNorm       diagonal                O(D)              O(D)               O(D)

Reference: Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1
Convolutions" (ActNorm, the LU parametrisation); Papamakarios et al. (2021),
"Normalizing Flows for Probabilistic Modeling and Inference", section 3.2 (linear flows).
"""

import collections
import math

from .. import backend
from ..autodiff import no_grad, ops
from ..nn import Buffer, Parameter
from .base import Flow, check_dim, per_sample_log_det, zero_log_det


def unit_lower(lower, lower_mask):
    """L: the strictly lower entries of ``lower`` (where ``lower_mask``), ones on the diagonal."""
    identity = backend.array_module(lower.data).eye(lower.shape[0], dtype=lower.dtype)
    return ops.where(lower_mask, lower, identity)


def upper_with_diagonal(upper, upper_mask, diagonal):
    """U: the strictly upper entries of ``upper`` (where ``upper_mask``), ``diagonal`` on the diagonal."""
    identity = backend.array_module(upper.data).eye(upper.shape[0], dtype=upper.dtype)
    return ops.where(upper_mask, upper, 0) + diagonal * identity


class DenseLinear(Flow):
    """The dense linear flow: z = x W^T + b, any invertible W.

    Map and inverse (per sample, column vectors)::

        z = W x + b                 x = W^{-1} (z - b)

    Jacobian. dz/dx = W, a dense D x D matrix, the same at every x::

        [ w11 w12 w13 ]
        [ w21 w22 w23 ]     log|det dz/dx| = log|det W|
        [ w31 w32 w33 ]

    Why this is the lesson. Nothing in a dense matrix makes its determinant cheap: the
    standard way is an LU factorisation, W = P L U, after which log|det W| = sum log|U_ii|,
    and the factorisation costs O(D^3). So does the inverse (here: one LU factorisation
    shared by all B right-hand sides, via ``ops.solve``; never an explicit W^{-1}), and so
    does the gradient of log|det W|, which is W^{-T}. For D = 3 that is nothing; for the
    3072 dimensions of a 32x32 colour image it is ~10^10 operations per step. This is why
    practical flows restrict the structure of the Jacobian: triangular (autoregressive
    flows, :class:`LULinear`), block-triangular (coupling layers), diagonal
    (:class:`ActNorm`), or a permutation (free).

    Why a linear flow alone is not enough. If x ~ N(m, S) then z = W x + b ~
    N(W m + b, W S W^T): a Gaussian stays Gaussian, and a composition of linear maps is
    again linear. With a standard normal base, a stack of linear flows can only model
    x ~ N(-W^{-1} b, (W^T W)^{-1}), a full-covariance Gaussian, however deep it is;
    anything else needs a nonlinear layer between them.

    Initialisation: W is a random orthogonal matrix (QR of a Gaussian matrix, with the
    signs of R's diagonal moved into Q, so that it is uniform over rotations and
    reflections; Mezzadri 2007). Then |det W| = 1, log_det starts at 0, and every singular
    value is 1: the best-conditioned start for the solve. ``b`` starts at 0.

    Cost: forward O(D^2) per sample plus O(D^3) per call for the log-det; inverse
    O(D^3) per call plus O(D^2) per sample.

    Named DenseLinear, not Linear, so that ``minflow.nn.Linear`` (y = x W + b, a network
    layer with no inverse and no log-det) is the only ``Linear`` in minflow.

    Reference: Kingma & Dhariwal (2018), Glow (the invertible 1x1 convolution is this map
    applied to the channels of every pixel).
    """

    def __init__(self, dim, seed=None):
        dim = check_dim(dim, "DenseLinear")
        xp = backend.xp()
        gaussian = backend.rng(seed).standard_normal((dim, dim), dtype=backend.get_default_dtype())
        q, r = xp.linalg.qr(gaussian)
        signs = xp.where(xp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)
        self.weight = Parameter(q * signs)  # column j times sign(r_jj)
        self.bias = Parameter(xp.zeros(dim, dtype=backend.get_default_dtype()))
        self.event_shape = (dim,)

    def forward(self, x, context=None):
        x = self._check_input(x)
        z = ops.matmul(x, ops.transpose(self.weight)) + self.bias
        log_det = ops.slogdet(self.weight)  # O(D^3): the price of a dense matrix
        return z, per_sample_log_det(log_det, x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        # Column-vector form W x^T = (z - b)^T: one solve with B right-hand sides.
        x = ops.transpose(ops.solve(self.weight, ops.transpose(z - self.bias)))
        log_det = -ops.slogdet(self.weight)
        return x, per_sample_log_det(log_det, z)


class LULinear(Flow):
    """A linear flow W = L U whose log-det costs O(D) (Glow's LU parametrisation).

    Map and inverse (per sample, column vectors)::

        z = L U x + b               x = U^{-1} L^{-1} (z - b)

    with L unit lower triangular and U upper triangular with a positive diagonal::

        L = [ 1   0   0 ]           U = [ e^s1  u12   u13  ]
            [ l21 1   0 ]               [ 0     e^s2  u23  ]
            [ l31 l32 1 ]               [ 0     0     e^s3 ]

    The parameters are the free entries only: ``lower`` (its strictly lower part is l),
    ``upper`` (its strictly upper part is u), ``log_diag`` (s) and ``bias`` (b). The other
    entries of ``lower`` and ``upper`` are masked out and get zero gradient.

    Log-determinant. The determinant of a triangular matrix is the product of its
    diagonal (expand along the first column: only the corner entry survives, and the
    minor is triangular again). The determinant of a product is the product of the
    determinants. So::

        det W = det L * det U = 1 * prod_i e^{s_i}      =>      log|det W| = sum_i s_i

    which is O(D) instead of the O(D^3) of a :class:`DenseLinear`.

    Cost: forward applies U, then L: two triangular matrix products, O(D^2) per sample
    (W is never formed). Inverse undoes them in the reverse order with two triangular
    solves, L first (forward substitution) then U (back substitution), O(D^2) per sample.
    (NumPy has no triangular solver, so on this backend ``ops.solve_triangular`` adds a
    one-off O(D^3) per call; see ops.py.)

    Which matrices are reachable. A matrix W has an LU factorisation without pivoting
    exactly when its leading principal minors are nonzero, and then U_kk is the ratio of
    two consecutive minors; with U's diagonal e^s > 0, this layer reaches exactly the
    matrices whose leading principal minors are all *positive* (det W > 0 in particular).
    Every invertible matrix is W = P L U S, with P a permutation and S a diagonal of
    signs, so a permutation between layers (and, if orientation matters, a sign flip)
    covers the rest; for density modelling the sign never matters.

    Initialisation: the identity (l = u = s = b = 0), so a deep stack starts as the
    identity map; ``seed`` is accepted so that every linear flow is built the same way,
    and no random number is drawn. Glow instead starts from the LU factors of a random
    rotation; here a :class:`Permutation` between layers does the initial mixing.

    Reference: Kingma & Dhariwal (2018), Glow, section 3.2 ("LU decomposition").
    """

    def __init__(self, dim, seed=None):
        dim = check_dim(dim, "LULinear")
        xp, dtype = backend.xp(), backend.get_default_dtype()
        self.lower = Parameter(xp.zeros((dim, dim), dtype=dtype))
        self.upper = Parameter(xp.zeros((dim, dim), dtype=dtype))
        self.log_diag = Parameter(xp.zeros(dim, dtype=dtype))
        self.bias = Parameter(xp.zeros(dim, dtype=dtype))
        # Where the free entries live; made once (boolean buffers: astype leaves them alone).
        self.lower_mask = Buffer(xp.tril(xp.ones((dim, dim), dtype=bool), k=-1))
        self.upper_mask = Buffer(xp.triu(xp.ones((dim, dim), dtype=bool), k=1))
        self.event_shape = (dim,)

    @property
    def L(self):
        """The unit lower triangular factor (a Tensor in the graph)."""
        return unit_lower(self.lower, self.lower_mask)

    @property
    def U(self):
        """The upper triangular factor, diagonal e^{log_diag} (a Tensor in the graph)."""
        return upper_with_diagonal(self.upper, self.upper_mask, ops.exp(self.log_diag))

    @property
    def weight(self):
        """W = L U (formed only for inspection; forward and inverse never need it)."""
        return ops.matmul(self.L, self.U)

    def forward(self, x, context=None):
        x = self._check_input(x)
        # Row vectors: (W x^T)^T = x U^T L^T.
        z = ops.matmul(ops.matmul(x, ops.transpose(self.U)), ops.transpose(self.L)) + self.bias
        log_det = ops.sum(self.log_diag)
        return z, per_sample_log_det(log_det, x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        y = ops.solve_triangular(self.L, ops.transpose(z - self.bias), lower=True)  # L y = z - b
        x = ops.transpose(ops.solve_triangular(self.U, y, lower=False))  # U x = y
        log_det = -ops.sum(self.log_diag)
        return x, per_sample_log_det(log_det, z)


class Permutation(Flow):
    """Reorder the coordinates: z_i = x_{perm[i]}. Volume preserving, free to invert.

    Map and inverse::

        z = x[:, perm]              x = z[:, perm^{-1}]       (perm^{-1}[perm[i]] = i)

    Jacobian. dz_i/dx_j = 1 if j = perm[i] else 0: a permutation matrix, one 1 in every
    row and column. For perm = (2, 0, 1)::

        [ 0 0 1 ]
        [ 1 0 0 ]       det = +-1  (the sign of the permutation)   =>   log|det| = 0
        [ 0 1 0 ]

    Why it is needed. A coupling layer leaves half the coordinates unchanged and an
    autoregressive layer transforms x_i given x_{<i} only; permuting between layers makes
    every coordinate be transformed, and be conditioned on every other, somewhere in the
    stack (NICE and RealNVP alternate halves; MAF reverses the order between layers).

    Cost: a gather, O(D) per sample both ways; log-det O(1).

    The permutation is a fixed integer buffer (saved with the model, never trained).
    ``Permutation.random(dim, seed)`` draws one uniformly; :class:`Reverse` reverses.

    References: Dinh et al. (2015, 2017), NICE and RealNVP; Papamakarios et al. (2017), MAF.
    """

    def __init__(self, permutation):
        values = _check_permutation(permutation)
        dim = len(values)
        inverse = [0] * dim
        for i, j in enumerate(values):
            inverse[j] = i
        xp = backend.xp()
        self.permutation = Buffer(xp.asarray(values, dtype=xp.int64))
        self.inverse_permutation = Buffer(xp.asarray(inverse, dtype=xp.int64))
        self.event_shape = (dim,)

    @classmethod
    def random(cls, dim, seed=None):
        """A uniformly random permutation of ``dim`` coordinates (same seed, same order)."""
        dim = check_dim(dim, "Permutation")
        # argsort of uniform numbers is a uniform permutation (CuPy generators lack .permutation).
        order = backend.xp().argsort(backend.rng(seed).random(dim))
        return Permutation(order)

    def forward(self, x, context=None):
        x = self._check_input(x)
        return x[:, self.permutation.data], zero_log_det(x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        return z[:, self.inverse_permutation.data], zero_log_det(z)

    def extra_repr(self):
        return f"permutation={backend.to_numpy(self.permutation.data).tolist()}"


def _check_permutation(permutation):
    """The permutation as a list of Python ints, after checking it; raises ValueError."""
    host = backend.to_numpy(permutation)  # validation happens once, on the host
    if host.ndim != 1 or host.size == 0:
        raise ValueError(f"permutation must be a non-empty 1-D sequence, got shape {tuple(host.shape)}")
    if host.dtype.kind not in "iu":
        raise ValueError(f"permutation must hold integers, got dtype {host.dtype}")
    values = host.tolist()
    dim = len(values)
    counts = collections.Counter(values)
    problems = []
    out_of_range = sorted(v for v in counts if not 0 <= v < dim)
    repeated = sorted(v for v, n in counts.items() if n > 1)
    missing = sorted(set(range(dim)) - set(counts))
    if out_of_range:
        problems.append(f"out of range {out_of_range}")
    if repeated:
        problems.append(f"repeated {repeated}")
    if missing:
        problems.append(f"missing {missing}")
    if problems:
        raise ValueError(
            f"permutation must hold each of 0..{dim - 1} exactly once; got {values}: " + ", ".join(problems)
        )
    return values


class Reverse(Permutation):
    """The permutation that reverses the order: z = (x_D, ..., x_1) (MAF's choice between layers)."""

    def __init__(self, dim):
        dim = check_dim(dim, "Reverse")
        super().__init__(list(range(dim - 1, -1, -1)))

    def extra_repr(self):
        return f"dim={self.event_shape[0]}"


def initialize_from_batch(actnorm, x, axes, unit):
    """The data-dependent initialisation of :class:`ActNorm` and of ``multiscale.ActNormImage``.

    Sets ``actnorm.loc`` to the mean of the batch ``x`` over ``axes`` and ``actnorm.log_scale``
    to -log(std + eps) over the same axes, so that this batch comes out of the layer with zero
    mean and unit variance (per dimension for vectors: axes (0,); per channel for images:
    axes (0, 2, 3), the batch and the pixels), then sets the ``initialized`` flag. ``unit``
    names what is counted over ``axes`` in the error for too few of them.
    """
    name = type(actnorm).__name__
    count = math.prod(x.shape[axis] for axis in axes)
    if count < 2:
        raise ValueError(
            f"{name} initialises from the mean and std of its first batch, which needs at least "
            f"2 {unit}; got x of shape {tuple(x.shape)}"
        )
    if x.dtype != actnorm.loc.dtype:
        raise TypeError(f"{name}: x is {x.dtype} but the parameters are {actnorm.loc.dtype}; cast one explicitly")
    with no_grad():
        mean = ops.mean(x, axis=axes, keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=axes))
        log_scale = -ops.log(std + actnorm.eps)
    actnorm.loc.data = mean.data.reshape(actnorm.loc.shape)
    actnorm.log_scale.data = log_scale.data
    actnorm.initialized.set_flag(True)


class ActNorm(Flow):
    """Activation normalisation: a per-dimension affine map, initialised from the data.

    Map and inverse (elementwise, for each dimension i)::

        z_i = (x_i - loc_i) * exp(log_scale_i)          x_i = z_i * exp(-log_scale_i) + loc_i

    Jacobian. Each z_i depends on x_i alone, so dz/dx is diagonal::

        [ e^a1  0     0    ]
        [ 0     e^a2  0    ]      log|det| = sum_i log_scale_i    (a = log_scale)
        [ 0     0     e^a3 ]

    Cost: O(D) per sample both ways; the log-det O(D), the same for every sample.

    Data-dependent initialisation. The first call to ``forward`` sets ``loc`` to the
    batch mean and ``log_scale`` to -log(std + eps), so that this first batch comes out
    with zero mean and unit variance in every dimension, then sets the ``initialized``
    flag. Why it helps: the layers after it start by seeing activations of unit scale
    (the range their initialisation is designed for), and the model starts already
    matching the mean and scale of the data, so the first steps of training go into
    shape rather than into undoing a bad scale. Unlike batch normalisation, the statistics
    are frozen after that one batch: afterwards it is an ordinary affine layer with
    trained parameters, samples in a batch never influence each other, and training and
    evaluation compute the same function. The flag is a buffer, so it is saved in the
    checkpoint and a reloaded model is not re-initialised. ``inverse`` never initialises:
    before the first forward it uses the current parameters (the identity). The flag is
    read on the host once (``Buffer.flag``), not on every call: on a GPU each read would
    be a device synchronisation.

    References: Kingma & Dhariwal (2018), Glow, section 3.1; Salimans & Kingma (2016),
    "Weight Normalization" (data-dependent initialisation).
    """

    eps = 1e-6  # keeps log_scale finite for a dimension that is constant in the first batch

    def __init__(self, dim):
        dim = check_dim(dim, "ActNorm")
        xp, dtype = backend.xp(), backend.get_default_dtype()
        self.loc = Parameter(xp.zeros(dim, dtype=dtype))
        self.log_scale = Parameter(xp.zeros(dim, dtype=dtype))
        self.initialized = Buffer(xp.asarray(False))
        self.event_shape = (dim,)

    def forward(self, x, context=None):
        x = self._check_input(x)
        if not self.initialized.flag():
            initialize_from_batch(self, x, axes=(0,), unit="samples")
        z = (x - self.loc) * ops.exp(self.log_scale)
        return z, per_sample_log_det(ops.sum(self.log_scale), x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        x = z * ops.exp(-self.log_scale) + self.loc
        return x, per_sample_log_det(-ops.sum(self.log_scale), z)
