"""Flows for images: squeeze, invertible 1x1 convolution, and the multi-scale architecture.

Images are batches of shape (B, C, H, W): channels, then rows, then columns. A flow on
images is a flow on vectors of D = C H W numbers, so every layer of minflow could be
used after a reshape; what this file adds are the layers that respect the *layout* of an
image, and the architecture that makes deep image flows affordable.

Why multi-scale (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP",
section 3.6). A flow keeps the dimension: every layer of a plain stack works on all D
numbers, so cost grows with depth times D. But not every number needs the whole depth.
After a few layers, half of the coordinates are *factored out*: they are declared part of
the latent z and leave the computation, and the remaining half goes on through more
layers. With a factor-out after every scale of K layers, the total work is
K D (1 + 1/2 + 1/4 + ...) < 2 K D however many scales there are. With convolutional
conditioners (RealNVP's, Glow's) the coordinates that went deepest also model the coarse,
global structure and the early ones the local detail, because each squeeze widens what a
small kernel sees; minflow's MLP conditioners see the whole image at every scale.

The pieces::

    Squeeze            (C, H, W) -> (4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels
                       of one pixel (space to depth). A permutation: log-det 0. It trades
                       resolution for channels, so convolutional layers after it see a wider
                       neighbourhood in each pixel, and channel-wise layers (coupling on a
                       channel mask, 1x1 convolution) can mix neighbouring pixels.
    ActNormImage       per-channel affine map, initialised from the first batch (Glow's actnorm).
    InvertibleConv1x1  the same C x C matrix applied at every pixel: a learned channel
                       permutation (Glow's invertible 1x1 convolution).
    MultiScale         scales of [squeeze, K x (actnorm, 1x1 conv, affine coupling), factor out
                       half the channels], as one flow from (C, H, W) to a latent of the same shape.

The step actnorm -> 1x1 conv -> affine coupling is Glow's (Kingma & Dhariwal 2018, "Glow:
Generative Flow with Invertible 1x1 Convolutions", section 3); the squeeze and factor-out
are RealNVP's. Here the coupling's conditioner is an MLP on the flattened kept half (not a
convolutional network): that is enough for 8x8 digits and keeps one idea per file.

Reference: Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and
Inference", section 3.1 (multi-scale architectures) and 3.2 (1x1 convolutions).
"""

from .. import backend
from ..autodiff import Tensor, ops
from ..nn import Buffer, Parameter
from .base import Flow, Sequential, check_dim, per_sample_log_det, zero_log_det
from .coupling import AffineCoupling, channel_mask
from .linear import initialize_from_batch, unit_lower, upper_with_diagonal


def _check_image_shape(shape, owner):
    """``shape`` as a tuple (C, H, W) of positive ints; raises ValueError naming ``owner``."""
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(f"{owner}: an image event shape is (C, H, W), got {shape!r}")
    return tuple(check_dim(n, owner) for n in shape)


# --- squeeze ------------------------------------------------------------------------------------
class Squeeze(Flow):
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2). Inverse: depth to space.

    Map. Cut each channel into 2x2 blocks; the block at (i, j) becomes one pixel with
    4 channels, in the order (top-left, top-right, bottom-left, bottom-right)::

        z[b, 4c + 2 di + dj, i, j] = x[b, c, 2i + di, 2j + dj]        di, dj in {0, 1}

    Written as two reshapes around one transpose: (B, C, H, W) -> (B, C, H/2, 2, W/2, 2)
    -> move the two block axes next to C -> (B, 4C, H/2, W/2).

    Jacobian. Every output is exactly one input: a permutation matrix, so
    log|det| = 0. Cost: a copy, O(D) both ways.

    The output has a different shape from the input: ``event_shape`` is (C, H, W), and
    ``latent_shape`` is (4C, H/2, W/2). (``Sequential`` checks z against its first flow's
    event shape, so it cannot hold a Squeeze; :class:`MultiScale` handles the shapes.)

    Reference: Dinh et al. (2017), Real NVP, section 3.6 and figure 3.
    """

    def __init__(self, shape):
        channels, height, width = _check_image_shape(shape, "Squeeze")
        if height % 2 or width % 2:
            raise ValueError(f"Squeeze: height and width must be even, got shape {(channels, height, width)}")
        self.event_shape = (channels, height, width)
        self.latent_shape = (4 * channels, height // 2, width // 2)

    def forward(self, x, context=None):
        x = self._check_input(x)
        c, h, w = self.event_shape
        blocks = ops.reshape(x, (x.shape[0], c, h // 2, 2, w // 2, 2))  # (B, c, i, di, j, dj)
        z = ops.reshape(ops.transpose(blocks, (0, 1, 3, 5, 2, 4)), (x.shape[0],) + self.latent_shape)
        return z, zero_log_det(x)

    def inverse(self, z, context=None):
        z = _check_latent(self, z)
        c, h, w = self.event_shape
        blocks = ops.reshape(z, (z.shape[0], c, 2, 2, h // 2, w // 2))  # (B, c, di, dj, i, j)
        x = ops.reshape(ops.transpose(blocks, (0, 1, 4, 2, 5, 3)), (z.shape[0],) + self.event_shape)
        return x, zero_log_det(z)

    def extra_repr(self):
        return f"{self.event_shape} -> {self.latent_shape}"


def _check_latent(flow, z):
    """z as a Tensor after checking it has the shape (B, *flow.latent_shape)."""
    z = z if isinstance(z, Tensor) else Tensor(z)
    if tuple(z.shape[1:]) != flow.latent_shape or z.ndim != 1 + len(flow.latent_shape):
        expected = "(B, " + ", ".join(str(n) for n in flow.latent_shape) + ")"
        raise ValueError(f"{type(flow).__name__}: z must have shape {expected}, got {tuple(z.shape)}")
    return z


# --- actnorm for images -----------------------------------------------------------------------
class ActNormImage(Flow):
    """Activation normalisation per channel: the same affine map at every pixel of a channel.

    Map and inverse (for each channel c and pixel (i, j))::

        z[c, i, j] = (x[c, i, j] - loc_c) * exp(log_scale_c)      x = z * exp(-log_scale_c) + loc_c

    Jacobian. Diagonal: the entry for (c, i, j) is e^{log_scale_c}, and each channel's
    entry appears once per pixel, H W times, so::

        log|det dz/dx| = H W sum_c log_scale_c

    Cost: O(D) per sample both ways; the log-det O(C), the same for every sample.

    Data-dependent initialisation, as :class:`minflow.flows.linear.ActNorm` (read its
    docstring for why): the first ``forward`` sets loc_c and log_scale_c from the mean and
    standard deviation of channel c over the batch *and* the pixels, so that this first
    batch comes out with zero mean and unit variance per channel; the ``initialized`` flag
    (a saved buffer) then freezes them into ordinary trained parameters.

    Reference: Kingma & Dhariwal (2018), Glow, section 3.1.
    """

    eps = 1e-6  # keeps log_scale finite for a channel that is constant in the first batch

    def __init__(self, channels, height, width):
        self.event_shape = _check_image_shape((channels, height, width), "ActNormImage")
        xp, dtype = backend.xp(), backend.get_default_dtype()
        self.loc = Parameter(xp.zeros(channels, dtype=dtype))
        self.log_scale = Parameter(xp.zeros(channels, dtype=dtype))
        self.initialized = Buffer(xp.asarray(False))

    def _per_channel(self, parameter):
        """(C,) -> (C, 1, 1), which broadcasts over the pixels of a (B, C, H, W) batch."""
        return ops.reshape(parameter, (self.event_shape[0], 1, 1))

    def forward(self, x, context=None):
        x = self._check_input(x)
        if not self.initialized.flag():
            initialize_from_batch(self, x, axes=(0, 2, 3), unit="values per channel (samples times pixels)")
        z = (x - self._per_channel(self.loc)) * ops.exp(self._per_channel(self.log_scale))
        pixels = self.event_shape[1] * self.event_shape[2]
        return z, per_sample_log_det(pixels * ops.sum(self.log_scale), x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        x = z * ops.exp(-self._per_channel(self.log_scale)) + self._per_channel(self.loc)
        pixels = self.event_shape[1] * self.event_shape[2]
        return x, per_sample_log_det(-pixels * ops.sum(self.log_scale), z)


# --- invertible 1x1 convolution ---------------------------------------------------------------
def _channels_last(x):
    """(B, C, H, W) -> (B H W, C): one row per pixel, holding that pixel's channel vector."""
    batch, channels, height, width = x.shape
    return ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (batch * height * width, channels))


def _channels_first(rows, shape):
    """The inverse of :func:`_channels_last`: (B H W, C) -> (B, C, H, W)."""
    batch, channels, height, width = shape
    return ops.transpose(ops.reshape(rows, (batch, height, width, channels)), (0, 3, 1, 2))


def _plu(matrix):
    """matrix = P L U by Gaussian elimination with partial pivoting, O(C^3), once at construction.

    Returns P (a permutation matrix), L (unit lower triangular) and U (upper triangular).
    """
    xp = backend.array_module(matrix)
    n = matrix.shape[0]
    upper, lower = matrix.copy(), xp.eye(n, dtype=matrix.dtype)
    rows = list(range(n))  # rows[i]: the row of `matrix` that elimination moved to position i
    for k in range(n):
        pivot = k + int(xp.argmax(xp.abs(upper[k:, k])))  # the largest pivot: numerically stable
        if pivot != k:
            upper[[k, pivot]] = upper[[pivot, k]]
            lower[[k, pivot], :k] = lower[[pivot, k], :k]
            rows[k], rows[pivot] = rows[pivot], rows[k]
        factors = upper[k + 1 :, k] / upper[k, k]
        lower[k + 1 :, k] = factors
        upper[k + 1 :] -= factors[:, None] * upper[k]
    # Elimination factorised the reordered matrix: matrix[rows] = L U, i.e. Q matrix = L U with
    # Q[i, rows[i]] = 1. Hence matrix = Q^T L U, and P = Q^T has P[rows[i], i] = 1.
    permutation = xp.zeros((n, n), dtype=matrix.dtype)
    permutation[xp.asarray(rows), xp.arange(n)] = 1
    return permutation, lower, xp.triu(upper)


class InvertibleConv1x1(Flow):
    """An invertible 1x1 convolution: the same C x C matrix W applied to the channels of every pixel.

    Map and inverse (at every pixel (i, j), on its channel vector)::

        z[:, i, j] = W x[:, i, j]               x[:, i, j] = W^{-1} z[:, i, j]

    A 1x1 convolution with C input and C output channels is exactly this: its kernel is
    one C x C matrix, and it never looks at a neighbouring pixel. It generalises the fixed
    channel permutations (or reversals) between coupling layers to a learned mixing.

    Jacobian. Order the D = C H W coordinates pixel by pixel (all channels of pixel 1,
    then of pixel 2, ...). A pixel's output depends on that pixel's input only, through W,
    so the Jacobian is block diagonal, H W copies of W::

        [ W         ]
        [   W       ]         det = (det W)^{H W}   =>   log|det dz/dx| = H W log|det W|
        [     ...   ]
        [         W ]

    (Reordering coordinates permutes rows and columns together, which leaves the
    determinant unchanged, so the channel-first layout has the same determinant.)

    LU parametrisation (Glow, section 3.2). A dense log|det W| costs O(C^3); instead::

        W = P L U,    L unit lower triangular,   U upper triangular with U_ii = sign_i e^{s_i}

    with P a fixed permutation matrix and sign a fixed vector of +-1 (both buffers,
    never trained), and the free parameters ``lower`` (strictly lower part of L),
    ``upper`` (strictly upper part of U) and ``log_diag`` (s). Then
    det W = det P * 1 * prod_i sign_i e^{s_i} = +-prod_i e^{s_i}, so::

        log|det dz/dx| = H W sum_i s_i             O(C)

    Initialisation: a random rotation (QR of a Gaussian matrix, as in ``linear.DenseLinear``),
    factorised once as P L U with partial pivoting; P and the signs of U's diagonal are
    kept, L, U off the diagonal and s = log|U_ii| become the parameters. The layer starts
    as an orthogonal map (log-det 0) that already mixes the channels.

    Cost: forward O(C^2) per pixel (three matrix products, channels moved last so that
    all B H W pixels are one matmul); inverse P^T, then two triangular solves, O(C^2) per
    pixel (plus a one-off O(C^3) per call on NumPy, see ``ops.solve_triangular``).

    Reference: Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1
    Convolutions", section 3.2.
    """

    def __init__(self, channels, height, width, seed=None):
        self.event_shape = _check_image_shape((channels, height, width), "InvertibleConv1x1")
        xp, dtype = backend.xp(), backend.get_default_dtype()
        gaussian = backend.rng(seed).standard_normal((channels, channels), dtype=dtype)
        rotation, _ = xp.linalg.qr(gaussian)
        permutation, lower, upper = _plu(rotation)
        diagonal = xp.diagonal(upper)
        self.permutation = Buffer(permutation)
        self.sign = Buffer(xp.where(diagonal < 0, -1.0, 1.0).astype(dtype))
        self.lower = Parameter(xp.tril(lower, k=-1))
        self.upper = Parameter(xp.triu(upper, k=1))
        self.log_diag = Parameter(xp.log(xp.abs(diagonal)))
        # Where the free entries live; boolean buffers (astype leaves them alone).
        self.lower_mask = Buffer(xp.tril(xp.ones((channels, channels), dtype=bool), k=-1))
        self.upper_mask = Buffer(xp.triu(xp.ones((channels, channels), dtype=bool), k=1))

    @property
    def L(self):
        """The unit lower triangular factor (a Tensor in the graph), as in LULinear."""
        return unit_lower(self.lower, self.lower_mask)

    @property
    def U(self):
        """The upper triangular factor, diagonal sign * e^{log_diag} (a Tensor in the graph)."""
        return upper_with_diagonal(self.upper, self.upper_mask, self.sign * ops.exp(self.log_diag))

    @property
    def weight(self):
        """W = P L U (formed only for inspection; forward and inverse never need it)."""
        return ops.matmul(self.permutation, ops.matmul(self.L, self.U))

    def _log_det(self):
        height, width = self.event_shape[1:]
        return height * width * ops.sum(self.log_diag)

    def forward(self, x, context=None):
        x = self._check_input(x)
        pixels = _channels_last(x)
        # Row vectors: (W x)^T = x^T U^T L^T P^T, applied right to left as in W = P L U.
        rows = ops.matmul(
            ops.matmul(ops.matmul(pixels, ops.transpose(self.U)), ops.transpose(self.L)),
            ops.transpose(self.permutation),
        )
        return _channels_first(rows, x.shape), per_sample_log_det(self._log_det(), x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        unpermuted = ops.matmul(_channels_last(z), self.permutation)  # rows of P^T z (P^{-1} = P^T)
        y = ops.solve_triangular(self.L, ops.transpose(unpermuted), lower=True)  # L y = P^T z
        columns = ops.solve_triangular(self.U, y, lower=False)  # U x = y
        return _channels_first(ops.transpose(columns), z.shape), per_sample_log_det(-self._log_det(), z)


# --- the multi-scale architecture -----------------------------------------------------------------
def glow_step(shape, index, hidden=(64, 64), activation="relu", scale_bound=2.0, seed=None, context_dim=0):
    """One step of Glow on images of ``shape``: [ActNormImage, InvertibleConv1x1, AffineCoupling].

    The coupling keeps the first half of the channels when ``index`` is even and the
    second half when it is odd (the 1x1 convolution mixes channels anyway; alternating
    makes sure that even a convolution near a permutation changes every channel).
    Defaults: ``hidden`` (64, 64), ``activation`` "relu", ``scale_bound`` 2.0; ``context_dim``
    C > 0 makes the coupling conditional on a (B, C) context.
    """
    rng = backend.rng(seed)
    channels, height, width = shape
    return [
        ActNormImage(channels, height, width),
        InvertibleConv1x1(channels, height, width, seed=rng),
        AffineCoupling(
            channel_mask(channels, height, width, first=index % 2 == 0),
            hidden=hidden,
            activation=activation,
            scale_bound=scale_bound,
            seed=rng,
            context_dim=context_dim,
        ),
    ]


class MultiScale(Flow):
    """The multi-scale architecture of Real NVP with Glow's steps, as one flow (C, H, W) -> (C, H, W).

    Forward (normalizing)::

        h = x
        for s = 1 .. S:
            h = squeeze(h)                             (c, h, w) -> (4c, h/2, w/2)
            h = step_K o ... o step_1 (h)              step = actnorm, 1x1 conv, affine coupling
            if s < S:
                z_s, h = h[:, c'/2:], h[:, :c'/2]      factor out half the channels (c' = 4c)
        z_S = h                                        the last scale keeps all its channels

    Latent layout. The factored-out parts z_1, ..., z_S have shapes (2C, H/2, W/2),
    (4C, H/4, W/4), ..., and (2^(S+1) C, H/2^S, W/2^S) for the last; their sizes add up
    to C H W. ``forward`` returns them flattened (each in C order), concatenated in that
    order (z_1 first) and reshaped to (C, H, W); :meth:`latent_parts` undoes that. The
    reshape to the input's shape is only packaging: what matters is that z is one vector
    of D numbers, so that ``NormalizingFlow(MultiScale(...))`` with N(0, I) on (C, H, W)
    is a model of images.

    "log_prob collects the factored-out parts". A factored-out z_s never meets another
    layer, so the map is still a bijection from x to (z_1, ..., z_S), and its Jacobian
    is triangular in blocks: each scale's layers have their log-dets, and passing z_s
    through unchanged adds nothing. With a standard normal on all of z, its log-density
    is the sum over the parts, so::

        log p(x) = sum_s log N(z_s; 0, I) + sum_layers log|det J_layer|

    which is exactly what Real NVP means by each scale contributing its factored-out
    half to the likelihood; with z packed into one (C, H, W) array, the base's
    ``log_prob(z)`` computes that sum in one go.

    Inverse (generative): unpack z, start from z_S and go back through the scales:
    re-attach z_s as the second half of the channels, undo the steps, unsqueeze.

    Jacobian and cost. The log-det is the sum of the steps' (squeeze, factor-out and
    concatenation are permutations: 0). Scale s works on D / 2^(s-1) numbers, so a pass
    costs under 2 K D conditioner-sized units of work, whatever S is.

    Arguments: ``shape`` (C, H, W) with H and W divisible by 2^scales; ``scales`` S >= 1
    (default 2); ``steps_per_scale`` K >= 1 (default 4); ``hidden`` (default (64, 64)),
    ``activation`` (default "relu"), ``scale_bound`` (default 2.0): of every coupling's MLP
    conditioner (see coupling.AffineCoupling); ``seed``; ``context_dim`` C > 0: every coupling
    also reads a (B, C) context (a class label, one-hot, for class-conditional images).

    References: Dinh et al. (2017), Real NVP, section 3.6; Kingma & Dhariwal (2018), Glow,
    section 3 and figure 2.
    """

    def __init__(
        self,
        shape,
        scales=2,
        steps_per_scale=4,
        hidden=(64, 64),
        activation="relu",
        scale_bound=2.0,
        seed=None,
        context_dim=0,
    ):
        self.event_shape = _check_image_shape(shape, "MultiScale")
        scales = check_dim(scales, "MultiScale (scales)")
        steps_per_scale = check_dim(steps_per_scale, "MultiScale (steps_per_scale)")
        channels, height, width = self.event_shape
        if height % 2**scales or width % 2**scales:
            raise ValueError(
                f"MultiScale: height and width must be divisible by 2^scales = {2**scales} "
                f"(one squeeze per scale), got shape {self.event_shape}"
            )
        rng = backend.rng(seed)
        self.squeezes, self.steps, self.part_shapes = [], [], []
        shape = self.event_shape
        for scale in range(scales):
            self.squeezes.append(Squeeze(shape))
            shape = self.squeezes[-1].latent_shape
            layers = [
                layer
                for k in range(steps_per_scale)
                for layer in glow_step(shape, k, hidden, activation, scale_bound, seed=rng, context_dim=context_dim)
            ]
            self.steps.append(Sequential(layers))
            if scale < scales - 1:  # factor out the second half of the channels
                channels, height, width = shape
                self.part_shapes.append((channels - channels // 2, height, width))
                shape = (channels // 2, height, width)
        self.part_shapes.append(shape)  # the last scale keeps everything
        self.context_dim = self.steps[0].context_dim

    def forward(self, x, context=None):
        x = self._check_input(x)
        context = self._check_context(context, x.shape[0])
        log_det = zero_log_det(x)
        h, parts = x, []
        for scale, (squeeze, steps) in enumerate(zip(self.squeezes, self.steps)):
            h, _ = squeeze.forward(h)  # a permutation: log-det 0
            h, step_log_det = steps.forward(h, context)
            log_det = log_det + step_log_det
            if scale < len(self.steps) - 1:
                kept = h.shape[1] // 2
                parts.append(h[:, kept:])  # z_s: straight to the latent
                h = h[:, :kept]
        parts.append(h)
        flat = ops.concatenate([ops.reshape(part, (x.shape[0], -1)) for part in parts], axis=1)
        return ops.reshape(flat, x.shape), log_det

    def latent_parts(self, z):
        """Unpack z (B, C, H, W) into the factored-out parts [z_1, ..., z_S], each (B, *part_shape)."""
        z = self._check_input(z, "z")
        flat = ops.reshape(z, (z.shape[0], -1))
        parts, start = [], 0
        for shape in self.part_shapes:
            size = shape[0] * shape[1] * shape[2]
            parts.append(ops.reshape(flat[:, start : start + size], (z.shape[0],) + shape))
            start += size
        return parts

    def inverse(self, z, context=None):
        parts = self.latent_parts(z)
        context = self._check_context(context, z.shape[0])
        log_det = zero_log_det(parts[0])
        h = parts[-1]
        for scale in reversed(range(len(self.steps))):
            if scale < len(self.steps) - 1:
                h = ops.concatenate([h, parts[scale]], axis=1)  # re-attach z_s as the second half
            h, step_log_det = self.steps[scale].inverse(h, context)
            log_det = log_det + step_log_det
            h, _ = self.squeezes[scale].inverse(h)
        return h, log_det

    def extra_repr(self):
        return (
            f"event_shape={self.event_shape}, scales={len(self.steps)}, "
            f"steps_per_scale={len(self.steps[0]) // 3}, parts={self.part_shapes}"
        )
