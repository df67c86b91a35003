"""What every peer shares: the model's constants, its starting parameters, the data, and Adam.

The model (the same in all four peers)::

    8 affine coupling layers on x in R^2. Layer i keeps coordinate k = i % 2 and changes c = 1 - k:
        a1 = relu(x_k W0 + b0)          W0 (1, H),  b0 (H,)
        a2 = relu(a1 W1 + b1)           W1 (H, H),  b1 (H,)
        theta = a2 W2 + b2              W2 (H, 2),  b2 (2,)
        shift = theta_0,  log_scale = 2 tanh(theta_1 / 2)
        x_c <- x_c exp(log_scale) + shift,   log_det += log_scale
    z = x after the 8 layers;  log p(x) = -|z|^2 / 2 - log(2 pi) + log_det;  loss = -mean log p(x)

Parameters travel between peers as one flat list of NumPy arrays in the order
``[W0, b0, W1, b1, W2, b2]`` for layer 0, then layer 1, ... (``parameter_layout``).
"""

import math

import numpy as np

LAYERS = 8
SCALE_BOUND = 2.0  # log_scale = SCALE_BOUND * tanh(theta_1 / SCALE_BOUND), minflow's default
LOG_TWO_PI = math.log(2 * math.pi)  # -log N(z; 0, I) = |z|^2 / 2 + log(2 pi) in two dimensions
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
DATA_ROWS = 32_768  # a multiple of every CPU batch size, so that batches tile the data exactly
PER_LAYER = ("W0", "b0", "W1", "b1", "W2", "b2")


def kept_and_changed(layer):
    """(k, c): the coordinate layer ``layer`` keeps and the one it changes."""
    k = layer % 2
    return k, 1 - k


def parameter_layout(hidden):
    """[(layer, name, shape)] in the order of the flat parameter list."""
    shapes = {
        "W0": (1, hidden),
        "b0": (hidden,),
        "W1": (hidden, hidden),
        "b1": (hidden,),
        "W2": (hidden, 2),
        "b2": (2,),
    }
    return [(layer, name, shapes[name]) for layer in range(LAYERS) for name in PER_LAYER]


def initial_parameters(hidden, seed=0):
    """The starting point of every peer: float64 arrays, each entry ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Unlike minflow's own initialisation, the last layer is *not* zero: with a zero last
    layer every coupling starts as the identity and the first gradients of W0, W1 vanish,
    which would make the correctness check weak and the first timed steps unrepresentative.
    """
    rng = np.random.default_rng(seed)
    params = []
    for _, name, shape in parameter_layout(hidden):
        fan_in = {"W0": 1, "b0": 1, "W1": hidden, "b1": hidden, "W2": hidden, "b2": hidden}[name]
        bound = 1 / math.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, size=shape))
    return params


def two_moons(rows=DATA_ROWS, seed=0, noise=0.1):
    """``rows`` points (rows, 2), float64, of two interleaved half circles plus Gaussian noise,
    roughly standardised. A fixed array: every peer sees the same numbers."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, math.pi, rows)
    upper = rng.random(rows) < 0.5
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((rows, 2))
    return (points - points.mean(axis=0)) / points.std(axis=0)


def batches(batch_size, rows=DATA_ROWS, seed=0):
    """The data cut into consecutive batches of ``batch_size`` rows; step j uses batch j mod len."""
    rows = max(rows, batch_size)
    data = two_moons(rows - rows % batch_size, seed)
    return list(data.reshape(-1, batch_size, 2))


class NumpyAdam:
    """Adam on a list of NumPy arrays, in place, with torch.optim.Adam's formula (shared by the
    autograd peer and the hand-written floor):

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        theta <- theta - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params, lr=LR, betas=BETAS, eps=EPS):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.t)
        root_correction2 = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            denominator = np.sqrt(v)
            denominator /= root_correction2
            denominator += self.eps
            p -= step_size * (m / denominator)


class NumpyPeer:
    """A peer made of a NumPy function ``nll_and_grads(params, x) -> (loss, grads)`` and
    :class:`NumpyAdam`: the autograd peer and the floor differ only in that function."""

    nll_and_grads = None  # set by each subclass, as a staticmethod

    def __init__(self, params, dtype):
        self.dtype = dtype
        self.params = [p.astype(dtype) for p in params]
        self.optimizer = NumpyAdam(self.params)

    def prepare(self, batch):
        return batch.astype(self.dtype)

    def step(self, x):
        loss, grads = self.nll_and_grads(self.params, x)
        self.optimizer.step(grads)
        return loss

    def loss_and_grads(self, x):
        loss, grads = self.nll_and_grads(self.params, x)
        return float(loss), list(grads)

    def parameters(self):
        return [p.copy() for p in self.params]

    def synchronize(self):
        pass
