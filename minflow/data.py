"""Data: 2-D toy densities, the 8x8 digits, and target energies; all generated or shipped, never downloaded.

What is here, in the order a course meets it:

1. **Toy densities in 2-D** (``TOY_DATASETS``): ``moons``, ``circles``, ``eight_gaussians``,
   ``checkerboard``, ``pinwheel``, ``two_spirals``, ``rings``. Each is a function
   ``name(n, seed=None, noise=...)`` that returns a NumPy float64 array (n, 2) of
   i.i.d. points. Every one follows the same two-step recipe:

       a point on a noise-free shape (curves, points or squares; its recipe is in the docstring)
       + noise * N(0, I)          (isotropic Gaussian noise of standard deviation ``noise``)

   so ``noise=0`` shows the shape itself. Each point picks its component (moon, circle,
   mode, square, arm, spiral, ring) at random, so every sample, and every slice of one, is
   i.i.d. from the same density.
2. **Splits and standardisation** (``toy_data``, ``Standardizer``, ``split``). ``toy_data``
   draws train, validation and test points with one seed (independent held-out points),
   fits the per-dimension mean and standard deviation on the *training* split only (the
   held-out splits must not leak into the model) and applies that one affine map to all
   three. The map's log-determinant converts a log-likelihood back to the data's
   original units.
3. **The 8x8 digits** (``digits``): scikit-learn's 1,797 images with 17 grey levels, which
   ship inside its package (so they load offline), turned into a continuous density problem
   with uniform dequantization and RealNVP's logit preprocessing, plus ``bits_per_dim``, the
   unit in which image models are compared.
4. **Energies** (``ENERGIES``, ``log_density``): the four unnormalised 2-D densities of
   Rezende & Mohamed (2015), written with minflow ops so that reverse-KL training
   (``minflow.train.fit_to_density``) can differentiate through them.

This module is host-side: parts 1-3 compute with NumPy directly and return NumPy arrays
(training copies them to the device once). Part 4 works on Tensors of either backend.
"""

import math
import numbers
from collections import namedtuple

import numpy

from . import backend
from .autodiff import ops
from .autodiff.tensor import as_tensor


# --- 1. toy densities in 2-D -----------------------------------------------------------------------------
def moons(n, seed=None, noise=0.05, labels=False):
    """Two interleaving half circles of radius 1 (scikit-learn's ``make_moons`` shape).

    Recipe: each point picks a moon with probability 1/2 and an angle t ~ U[0, pi]:

        upper moon:  (cos t, sin t)               centre (0, 0),   the half with y >= 0
        lower moon:  (1 - cos t, 1/2 - sin t)     centre (1, 1/2), the half with y <= 1/2

    then adds ``noise`` * N(0, I) (default 0.05).
    Statistics (tested): noise-free points lie on the two arcs, half on each; the mean is
    (1/2, 1/4), since an arc's mean is its centre plus (2/pi) times its outward direction.
    ``labels=True`` also returns each point's moon, an int array (n,): 0 upper, 1 lower (the
    same points: the labels are drawn as part of them).
    """
    rng, n, noise = _start(n, seed, noise)
    upper = rng.random(n) < 0.5
    t = rng.uniform(0.0, math.pi, n)
    x = numpy.where(upper, numpy.cos(t), 1.0 - numpy.cos(t))
    y = numpy.where(upper, numpy.sin(t), 0.5 - numpy.sin(t))
    points = _add_noise(rng, numpy.stack([x, y], axis=1), noise)
    return (points, (~upper).astype(numpy.int64)) if labels else points


def distance_to_moons(x):
    """The distance from each point of x (N, 2), in the moons' own units, to the nearer of the two
    noise-free arcs of :func:`moons` (a host array (N,)): how far a point is off the data's support.

    For the half circle of radius 1 around centre c (the half above c for the upper moon, below
    for the lower): a point d = x - c on the arc's side is |(|d| - 1)| from it (the nearest
    point of the full circle lies on the half); a point on the other side is nearest to one of
    the arc's two ends, c +- (1, 0).
    """
    x = numpy.asarray(backend.to_numpy(x), dtype=numpy.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be 2-D points, shape (N, 2), got {x.shape}")

    def to_arc(centre, upper):
        d = x - numpy.asarray(centre)
        on_side = d[:, 1] >= 0 if upper else d[:, 1] <= 0
        to_circle = numpy.abs(numpy.linalg.norm(d, axis=1) - 1.0)
        to_ends = numpy.minimum(numpy.linalg.norm(d - [1.0, 0.0], axis=1), numpy.linalg.norm(d + [1.0, 0.0], axis=1))
        return numpy.where(on_side, to_circle, to_ends)

    return numpy.minimum(to_arc((0.0, 0.0), True), to_arc((1.0, 0.5), False))


CIRCLE_RADII = (1.0, 0.5)
RING_RADII = (0.5, 1.0, 1.5, 2.0)


def circles(n, seed=None, noise=0.05):
    """Two concentric circles centred at the origin, radii 1 and 0.5.

    Recipe: each point picks a circle with probability 1/2 and an angle t ~ U[0, 2 pi),
    sits at r (cos t, sin t), then gets ``noise`` * N(0, I) (default 0.05).
    Statistics (tested): noise-free radii are 1 or 0.5, half each; the mean is (0, 0); for
    noise much smaller than the radii, the distance to the nearest circle has standard
    deviation about ``noise`` (the radial part of the isotropic noise).
    """
    return _on_circles(n, seed, noise, CIRCLE_RADII)


def rings(n, seed=None, noise=0.05):
    """Four concentric rings centred at the origin, radii 0.5, 1, 1.5 and 2.

    Recipe: each point picks a ring with probability 1/4 and an angle t ~ U[0, 2 pi),
    sits at r (cos t, sin t), then gets ``noise`` * N(0, I) (default 0.05).
    Statistics (tested): noise-free radii are 0.5, 1, 1.5 or 2, a quarter each; mean (0, 0).
    """
    return _on_circles(n, seed, noise, RING_RADII)


def _on_circles(n, seed, noise, radii):
    rng, n, noise = _start(n, seed, noise)
    r = numpy.asarray(radii)[rng.integers(0, len(radii), n)]
    t = rng.uniform(0.0, 2 * math.pi, n)
    return _add_noise(rng, r[:, None] * numpy.stack([numpy.cos(t), numpy.sin(t)], axis=1), noise)


def eight_gaussians(n, seed=None, noise=0.1):
    """A mixture of 8 equally weighted Gaussians with modes on the circle of radius 2.

    Recipe: each point picks a mode k ~ U{0, ..., 7} at 2 (cos(k pi / 4), sin(k pi / 4)),
    then gets ``noise`` * N(0, I): ``noise`` (default 0.1) is each component's standard
    deviation.
    Statistics (tested): every point lies within 5 ``noise`` of its nearest mode (a 2-D
    Gaussian leaves that disc with probability exp(-25/2) = 4e-6); each mode holds about
    n/8 points, and the mean is (0, 0).
    """
    rng, n, noise = _start(n, seed, noise)
    angle = rng.integers(0, 8, n) * (math.pi / 4)
    return _add_noise(rng, 2.0 * numpy.stack([numpy.cos(angle), numpy.sin(angle)], axis=1), noise)


def checkerboard(n, seed=None, noise=0.0):
    """Uniform on the 8 black squares of a 4 x 4 board covering [-2, 2]^2.

    The unit square [i, i + 1) x [j, j + 1) (i, j in {-2, -1, 0, 1}) is black when i + j
    is even, so the corner square [-2, -1) x [-2, -1) is black.
    Recipe: each point picks a black square with probability 1/8, a uniform position in
    it, then gets ``noise`` * N(0, I) (default 0: the density has sharp edges, which is
    the lesson; a small noise smooths them).
    Statistics (tested): with no noise, every point has floor(x) + floor(y) even and
    lies in [-2, 2)^2; each black square holds about n/8 points; the mean is (0, 0).
    """
    rng, n, noise = _start(n, seed, noise)
    cell = rng.integers(0, 8, n)
    i = cell % 4 - 2  # the column, -2..1
    j = 2 * (cell // 4) - 2 + i % 2  # the row: -2 or 0 for an even column, -1 or 1 for an odd one
    corner = numpy.stack([i, j], axis=1).astype(numpy.float64)
    return _add_noise(rng, corner + rng.random((n, 2)), noise)


PINWHEEL_ARMS, PINWHEEL_RADIAL_STD, PINWHEEL_RATE = 5, 0.3, 0.25


def pinwheel(n, seed=None, noise=0.2):
    """Five curved arms (after the pinwheel of Johnson et al. 2016, "Composing graphical
    models with neural networks", with their radial_std 0.3 and rate 0.25, scaled by 2).

    Recipe: each point picks an arm k ~ U{0, ..., 4} and a position s = 1 + 0.3 e,
    e ~ N(0, 1), along it; the arm twists more the further out it goes:

        angle = 2 pi k / 5 + 0.25 exp(s),     point = 2 s (cos(angle), sin(angle)),

    then gets ``noise`` * N(0, I) (default 0.2: the arms' width).
    Statistics (tested): with no noise and s > 0 (all but about 4 points in 10,000), a
    point at radius rho and polar angle phi satisfies phi = 2 pi k / 5 + 0.25 exp(rho / 2)
    (mod 2 pi) for its arm k; each arm holds about n/5 points; the median radius is 2.
    """
    rng, n, noise = _start(n, seed, noise)
    arm = rng.integers(0, PINWHEEL_ARMS, n)
    s = 1.0 + PINWHEEL_RADIAL_STD * rng.standard_normal(n)
    angle = 2 * math.pi * arm / PINWHEEL_ARMS + PINWHEEL_RATE * numpy.exp(s)
    return _add_noise(rng, 2.0 * s[:, None] * numpy.stack([numpy.cos(angle), numpy.sin(angle)], axis=1), noise)


def two_spirals(n, seed=None, noise=0.1):
    """Two interleaved spirals, each the other turned by 180 degrees, 1.5 turns each.

    Recipe: each point picks a spiral (sign +1 or -1, probability 1/2) and a turning angle
    t = 3 pi sqrt(u), u ~ U[0, 1), and sits at

        sign * (t / 3) (cos t, sin t)          (radius t / 3, from 0 out to pi),

    then gets ``noise`` * N(0, I) (default 0.1). The sqrt spreads points more evenly along
    the curve, whose length grows like t^2 (FFJORD's "2spirals" uses the same trick).
    Statistics (tested): with no noise, a point at radius rho equals
    +-rho (cos 3 rho, sin 3 rho); the mean radius is (2/3) pi (since E sqrt(u) = 2/3); the
    mean is (0, 0).
    """
    rng, n, noise = _start(n, seed, noise)
    sign = numpy.where(rng.random(n) < 0.5, 1.0, -1.0)
    t = 3 * math.pi * numpy.sqrt(rng.random(n))
    points = (sign * t / 3)[:, None] * numpy.stack([numpy.cos(t), numpy.sin(t)], axis=1)
    return _add_noise(rng, points, noise)


TOY_DATASETS = {
    "moons": moons,
    "circles": circles,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "two_spirals": two_spirals,
    "rings": rings,
}


def _start(n, seed, noise):
    """(Generator, n, noise) after checking n (positive int) and noise (finite, >= 0)."""
    _check_count(n, "n", positive=True)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (a standard deviation), got {noise!r}")
    return numpy.random.default_rng(seed), int(n), float(noise)


def _add_noise(rng, points, noise):
    return points + noise * rng.standard_normal(points.shape) if noise > 0 else points


def _check_count(n, name, positive):
    smallest = 1 if positive else 0
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < smallest:
        kind = "a positive int" if positive else "an int >= 0"
        raise ValueError(f"{name} must be {kind}, got {n!r}")


# --- 2. standardisation and splits ----------------------------------------------------------------------
class Standardizer:
    """The per-dimension affine map y = (x - mean) / std, fitted on training data.

    Jacobian: diagonal with entries 1 / std_i, so

        log|det dy/dx| = -sum_i log std_i                 (``log_det``, the same for every x)

    and by the change of variables p_x(x) = p_y(y) |det dy/dx|,

        log p_x(x) = log p_y(transform(x)) + log_det.

    A model trained on standardised data reports log p_y; adding ``log_det`` gives the
    log-likelihood in the data's original units (a negative log-likelihood: subtract it),
    the number to compare across preprocessing choices.

    ``Standardizer.fit(x)`` takes x of shape (N, ...) and computes mean and std over the
    batch axis (so they have shape x.shape[1:]). ``transform`` / ``inverse_transform``
    work on host or device arrays (the result lives where the input does).
    ``state_dict()`` / ``Standardizer.from_state(state)`` save and restore it as plain
    arrays, for a checkpoint.
    """

    def __init__(self, mean, std):
        mean = numpy.asarray(backend.to_numpy(mean), dtype=numpy.float64)
        std = numpy.asarray(backend.to_numpy(std), dtype=numpy.float64)
        if mean.shape != std.shape:
            raise ValueError(f"Standardizer: mean and std must have the same shape, got {mean.shape} and {std.shape}")
        if not (numpy.all(numpy.isfinite(mean)) and numpy.all(numpy.isfinite(std)) and numpy.all(std > 0)):
            raise ValueError(f"Standardizer: std must be finite and > 0 and mean finite, got mean={mean}, std={std}")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x):
        """Mean and standard deviation of each dimension of x (N, ...), over the N samples."""
        x = numpy.asarray(backend.to_numpy(x), dtype=numpy.float64)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"Standardizer.fit: x must have shape (N, ...) with N >= 2, got {x.shape}")
        std = x.std(axis=0)
        if numpy.any(std == 0):
            raise ValueError(f"Standardizer.fit: a dimension of x is constant (std {std}); it cannot be standardised")
        return cls(x.mean(axis=0), std)

    def transform(self, x):
        """y = (x - mean) / std."""
        module = self._check(x, "x")
        return (x - module.asarray(self.mean, dtype=x.dtype)) / module.asarray(self.std, dtype=x.dtype)

    def inverse_transform(self, y):
        """x = y * std + mean: back to the data's original units (for samples, say)."""
        module = self._check(y, "y")
        return y * module.asarray(self.std, dtype=y.dtype) + module.asarray(self.mean, dtype=y.dtype)

    @property
    def log_det(self):
        """log|det d(transform)/dx| = -sum log std, a float."""
        return float(-numpy.sum(numpy.log(self.std)))

    def state_dict(self):
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def from_state(cls, state):
        """The Standardizer saved by ``state_dict`` (arrays or nested lists, as from JSON)."""
        missing = {"mean", "std"} - set(state)
        if missing:
            raise ValueError(f"Standardizer.from_state: the state needs 'mean' and 'std', missing {sorted(missing)}")
        return cls(state["mean"], state["std"])

    def _check(self, x, name):
        if not backend.is_array(x) or x.ndim < 1 or tuple(x.shape[1:]) != self.mean.shape or x.dtype.kind != "f":
            raise ValueError(
                f"Standardizer: {name} must be a floating array of shape (N, {', '.join(map(str, self.mean.shape))}), "
                f"got {type(x).__name__} of shape {getattr(x, 'shape', None)}"
            )
        return backend.array_module(x)

    def __repr__(self):
        return f"Standardizer(mean={self.mean}, std={self.std})"


Splits = namedtuple("Splits", ["train", "val", "test", "standardizer"])
Splits.__doc__ = "train, val, test arrays and the Standardizer fitted on train (None if not standardised)."


def toy_data(name, n_train=10_000, n_val=2_000, n_test=10_000, seed=0, noise=None, standardize=True):
    """Train, validation and test points of the toy dataset ``name``, as a ``Splits``.

    One draw of n_train + n_val + n_test i.i.d. points with ``seed``, cut into three in
    order, so the splits are independent samples of the same density. With
    ``standardize``, the Standardizer is fitted on the training split only and applied to
    all three. ``noise=None`` keeps the dataset's default noise.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    _check_count(n_train, "n_train", positive=True)
    _check_count(n_val, "n_val", positive=False)
    _check_count(n_test, "n_test", positive=False)
    options = {} if noise is None else {"noise": noise}
    x = TOY_DATASETS[name](n_train + n_val + n_test, seed=seed, **options)
    train, val, test = x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]
    if not standardize:
        return Splits(train, val, test, None)
    standardizer = Standardizer.fit(train)
    return Splits(*(standardizer.transform(part) for part in (train, val, test)), standardizer)


LABELED_DATASETS = {"moons": 2}  # toy datasets whose points carry a label, and how many classes


def toy_labels(name, n_train=10_000, n_val=2_000, n_test=10_000, seed=0, noise=None):
    """The labels of the points ``toy_data`` returns with the same arguments, one-hot: (train,
    val, test) float arrays (N, K), K the number of classes (``LABELED_DATASETS``); the
    context of a class-conditional model p(x | label). Only for datasets with labels."""
    if name not in LABELED_DATASETS:
        raise ValueError(f"dataset {name!r} has no labels; labelled datasets: {sorted(LABELED_DATASETS)}")
    options = {} if noise is None else {"noise": noise}
    _, labels = TOY_DATASETS[name](n_train + n_val + n_test, seed=seed, labels=True, **options)
    one_hot = numpy.eye(LABELED_DATASETS[name])[labels]
    return one_hot[:n_train], one_hot[n_train : n_train + n_val], one_hot[n_train + n_val :]


def split(x, fractions=(0.8, 0.1, 0.1), seed=0):
    """(train, val, test): the rows of x shuffled with ``seed``, then cut by ``fractions``.

    Train and validation sizes are floor(fraction * N); the test split takes the rest.
    """
    fractions = tuple(fractions)
    valid = len(fractions) == 3 and all(isinstance(f, numbers.Real) and f >= 0 for f in fractions)
    if not valid or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1, got {fractions!r}")
    n = len(x)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    shuffled = x[numpy.random.default_rng(seed).permutation(n)]
    return shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]


# --- 3. the 8x8 digits -----------------------------------------------------------------------------------
LEVELS = 17  # grey levels of the digits: integers 0..16
DIGIT_SHAPE = (1, 8, 8)  # (C, H, W)
DIGIT_DIM = 64

DigitsSplits = namedtuple(
    "DigitsSplits", ["train", "val", "test", "train_log_det", "val_log_det", "test_log_det", "alpha"]
)
DigitsSplits.__doc__ = (
    "train, val, test: images h in model space, (N, 1, 8, 8); *_log_det: log|dh/dy| per image, (N,), "
    "for bits_per_dim; alpha: the logit squeeze."
)


def digit_pixels():
    """The 1,797 8x8 digits of scikit-learn (a copy of the UCI set, shipped in its package),
    as an int64 array (1797, 1, 8, 8) with values 0..16. Needs scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            f"the digits come with scikit-learn: pip install 'minflow[digits]' (import failed: {error})"
        ) from error
    images = load_digits().images
    return numpy.rint(images).astype(numpy.int64).reshape((-1,) + DIGIT_SHAPE)


def digit_labels():
    """The class (0..9) of each of the 1,797 digits of :func:`digit_pixels`, in the same order,
    as an int64 array (1797,). Needs scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            f"the digits come with scikit-learn: pip install 'minflow[digits]' (import failed: {error})"
        ) from error
    return load_digits().target.astype(numpy.int64)


def dequantize(pixels, seed=None):
    """y = pixel + u, u ~ U[0, 1) independently per pixel: integers 0..16 -> y in [0, 17).

    Why: a continuous density on integer data can grow without bound by piling its mass onto
    the integers (the likelihood is unbounded). Spreading each integer over its unit cell
    removes that degenerate optimum, and for any density p on the cells

        log P(pixel) = log integral_{[0,1)^D} p(pixel + u) du  >=  E_u[log p(pixel + u)]

    (Jensen; the cell has volume 1), so the continuous log-likelihood of dequantized data is
    a lower bound on a discrete model's log-likelihood (Theis et al. 2016, "A note on the
    evaluation of generative models"; Uria et al. 2013).
    """
    pixels = numpy.asarray(backend.to_numpy(pixels))
    if pixels.size and (numpy.any(pixels != numpy.rint(pixels)) or pixels.min() < 0 or pixels.max() > LEVELS - 1):
        raise ValueError(f"pixels must be integers in 0..{LEVELS - 1}, got values in [{pixels.min()}, {pixels.max()}]")
    return pixels.astype(numpy.float64) + numpy.random.default_rng(seed).random(pixels.shape)


def to_model_space(y, alpha=0.05):
    """RealNVP's logit preprocessing, in its symmetric form, elementwise on y in [0, 17]:

        p = y / 17                   in [0, 1]
        q = alpha + (1 - 2 alpha) p  in [alpha, 1 - alpha]   (away from 0 and 1, where logit is infinite)
        h = logit(q) = log q - log(1 - q)

    Whose formula. The RealNVP paper (Dinh, Sohl-Dickstein & Bengio 2017, section 4.1) prints
    logit(alpha + (1 - alpha) x), which keeps only the bottom of the range away from 0; its
    released code (tensorflow/models, research/real_nvp, ``data_constraint`` = 0.9 = 1 - 2 alpha)
    computes the symmetric 0.05 + 0.9 x used here, and Papamakarios, Pavlakou & Murray 2017
    ("Masked autoregressive flow") write it as logit(lambda + (1 - 2 lambda) x), calling it
    Dinh et al.'s preprocessing. So: RealNVP's preprocessing as run, MAF's as written.

    Returns (h, log_det) with log_det (N,) = log|det dh/dy| summed over each image's pixels.
    Each pixel's derivative is a product of the three steps',

        dh/dy = (1 / 17) (1 - 2 alpha) / (q (1 - q)),

    so   log_det = sum_pixels [-log 17 + log(1 - 2 alpha) - log q - log(1 - q)].
    A model's density of y is then log p_y(y) = log p_h(h) + log_det (see ``bits_per_dim``).
    """
    _check_alpha(alpha)
    y = numpy.asarray(backend.to_numpy(y), dtype=numpy.float64)
    if y.ndim < 2:
        raise ValueError(f"y must be batched, shape (N, ...), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() > LEVELS):
        raise ValueError(f"y must lie in [0, {LEVELS}] (dequantized pixels), got values in [{y.min()}, {y.max()}]")
    q = alpha + (1 - 2 * alpha) * (y / LEVELS)
    h = numpy.log(q) - numpy.log1p(-q)
    log_derivative = -math.log(LEVELS) + math.log(1 - 2 * alpha) - numpy.log(q) - numpy.log1p(-q)
    return h, log_derivative.reshape(len(y), -1).sum(axis=1)


def from_model_space(h, alpha=0.05):
    """The inverse map, h -> y = 17 (sigmoid(h) - alpha) / (1 - 2 alpha), to show samples as
    images (host array; a model's sample may land slightly outside [0, 17])."""
    _check_alpha(alpha)
    h = numpy.asarray(backend.to_numpy(h), dtype=numpy.float64)
    q = 0.5 * (1 + numpy.tanh(0.5 * h))  # sigmoid, without overflow for large |h|
    return LEVELS * (q - alpha) / (1 - 2 * alpha)


def bits_per_dim(log_prob_h, log_det, dim=DIGIT_DIM):
    """The negative log-likelihood of dequantized data in bits per dimension:

        bits/dim = -mean_n (log p_h(h_n) + log_det_n) / (dim ln 2).

    ``log_prob_h`` (N,) is the model's density in model space and ``log_det`` (N,) the
    preprocessing's log|dh/dy| from ``to_model_space``, so their sum is log p_y(y), the
    density of the dequantized pixels on the original 0..17 scale, where every grey level
    is a cell of width 1. By the bound in ``dequantize`` the result is an upper bound on the
    bits a discrete model would need per pixel: comparable across models and preprocessings
    (unlike an NLL in model space, which changes with alpha), and on a scale with a
    reference point, log2(17) = 4.09 bits for the uniform distribution over the 17 levels.
    """
    log_prob_h = numpy.asarray(backend.to_numpy(log_prob_h), dtype=numpy.float64)
    log_det = numpy.asarray(backend.to_numpy(log_det), dtype=numpy.float64)
    if log_prob_h.ndim != 1 or log_prob_h.shape != log_det.shape or log_det.size == 0:
        raise ValueError(
            f"log_prob_h and log_det must both have shape (N,), got {log_prob_h.shape} and {log_det.shape}"
        )
    _check_count(dim, "dim", positive=True)
    return float(-numpy.mean(log_prob_h + log_det) / (dim * math.log(2)))


def digits(seed=0, alpha=0.05, fractions=(0.8, 0.1, 0.1)):
    """The 8x8 digits, split, dequantized and in model space: a ``DigitsSplits``.

    Recipe: ``split(digit_pixels(), fractions, seed)`` (the same images as that call gives),
    then each split is dequantized once with noise from the same seeded stream, then
    mapped by ``to_model_space``. The noise is fixed per split, so a validation or test
    number is reproducible; for fresh noise in training, see ``fresh_dequantizations``.
    Images are (N, 1, 8, 8) float64; 1,437 / 179 / 181 images with the default fractions.
    """
    rng = numpy.random.default_rng(seed)
    parts = split(digit_pixels(), fractions, seed=rng)
    (train, train_log_det), (val, val_log_det), (test, test_log_det) = (
        to_model_space(dequantize(pixels, seed=rng), alpha) for pixels in parts
    )
    return DigitsSplits(train, val, test, train_log_det, val_log_det, test_log_det, alpha)


def fresh_dequantizations(copies, seed=0, alpha=0.05):
    """The training digits of ``digits(seed)``, dequantized ``copies`` times with independent
    noise, in model space, stacked: (copies * N, 1, 8, 8).

    Why: with one fixed noise draw (``digits(seed).train``), a flow soon models that draw
    rather than the digits, and its validation NLL climbs after a few hundred steps. Training
    on fresh noise removes that: ``train.fit`` walks through this array in shuffled epochs, so
    each digit comes back with new noise up to ``copies`` times.
    """
    _check_count(copies, "copies", positive=True)
    rng = numpy.random.default_rng([seed, 1])  # a stream apart from the one digits(seed) uses
    pixels = split(digit_pixels(), seed=seed)[0]  # the same images as digits(seed).train
    return numpy.concatenate([to_model_space(dequantize(pixels, seed=rng), alpha)[0] for _ in range(copies)])


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be a number in (0, 0.5), got {alpha!r}")


# --- 4. energies for reverse-KL training -----------------------------------------------------------------
def _w1(z1):
    return ops.sin(2 * math.pi * z1 / 4)


def _gauss_exponent(x, scale):
    """-1/2 (x / scale)^2: the log of an unnormalised Gaussian bump."""
    return -0.5 * ops.square(x / scale)


def _log_add_exp(a, b):
    """log(exp(a) + exp(b)) without overflow or underflow: logsumexp over a stacked axis."""
    return ops.logsumexp(ops.stack([a, b], axis=-1), axis=-1)


def energy_u1(z):
    """U1(z) = 1/2 ((|z| - 2) / 0.4)^2 - log(exp(-1/2 ((z1 - 2) / 0.6)^2) + exp(-1/2 ((z1 + 2) / 0.6)^2)):
    a ring of radius 2, heavier at its two ends on the z1 axis.

    |z| = sqrt(z1^2 + z2^2), whose gradient z / |z| is undefined at z = 0 (NaN there);
    nothing of the density lives there. The only one of the four that is normalisable.
    """
    z1, z2 = _coordinates(z)
    radius = ops.sqrt(z1 * z1 + z2 * z2)
    ring = 0.5 * ops.square((radius - 2) / 0.4)
    return ring - _log_add_exp(_gauss_exponent(z1 - 2, 0.6), _gauss_exponent(z1 + 2, 0.6))


def energy_u2(z):
    """U2(z) = 1/2 ((z2 - w1(z1)) / 0.4)^2, with w1(z1) = sin(2 pi z1 / 4): a sine wave."""
    z1, z2 = _coordinates(z)
    return 0.5 * ops.square((z2 - _w1(z1)) / 0.4)


def energy_u3(z):
    """U3(z) = -log(exp(-1/2 ((z2 - w1) / 0.35)^2) + exp(-1/2 ((z2 - w1 + w2) / 0.35)^2)),
    w2(z1) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2): the sine wave and a copy split off near z1 = 1."""
    z1, z2 = _coordinates(z)
    w1, w2 = _w1(z1), 3 * ops.exp(_gauss_exponent(z1 - 1, 0.6))
    return -_log_add_exp(_gauss_exponent(z2 - w1, 0.35), _gauss_exponent(z2 - w1 + w2, 0.35))


def energy_u4(z):
    """U4(z) = -log(exp(-1/2 ((z2 - w1) / 0.4)^2) + exp(-1/2 ((z2 - w1 + w3) / 0.35)^2)),
    w3(z1) = 3 sigmoid((z1 - 1) / 0.3): the sine wave and a copy shifted down for z1 > 1."""
    z1, z2 = _coordinates(z)
    w1, w3 = _w1(z1), 3 * ops.sigmoid((z1 - 1) / 0.3)
    return -_log_add_exp(_gauss_exponent(z2 - w1, 0.4), _gauss_exponent(z2 - w1 + w3, 0.35))


ENERGIES = {"u1": energy_u1, "u2": energy_u2, "u3": energy_u3, "u4": energy_u4}


def log_density(name):
    """The unnormalised log-density z -> -U(z) of energy ``name`` (u1..u4), the target of
    reverse-KL training (``minflow.train.fit_to_density``).

    The energies are those of Rezende & Mohamed 2015 ("Variational inference with normalizing
    flows", Table 1). Each takes z, a Tensor or array (B, 2), and returns a Tensor (B,) built
    from minflow ops, so gradients flow back to whatever produced z. Caution: exp(-U2),
    exp(-U3) and exp(-U4) do not decay along z1 (the paper draws them on [-4, 4]^2), so they
    have no normaliser; a flow trained on them long enough keeps spreading along z1.
    """
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; choose one of {sorted(ENERGIES)}")
    energy = ENERGIES[name]

    def negative_energy(z):
        return -energy(z)

    negative_energy.__name__ = negative_energy.__qualname__ = f"log_density_{name}"
    negative_energy.__doc__ = f"-U(z) for {name}: an unnormalised log-density, Tensor (B, 2) -> Tensor (B,)."
    return negative_energy


def _coordinates(z):
    """(z1, z2), each (B,), of z (B, 2); raises ValueError for another shape."""
    z = as_tensor(z)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"an energy needs z of shape (B, 2), got {tuple(z.shape)}")
    return z[:, 0], z[:, 1]
