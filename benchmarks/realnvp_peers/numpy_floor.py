"""The floor: the RealNVP's forward pass and its backward pass written out by hand in NumPy.

No graph, no tape, no per-op bookkeeping: just the array operations the gradient needs, so
its step time is what NumPy itself costs for this model. An autodiff engine on NumPy (minflow,
HIPS autograd) can approach this floor but not beat it; the gap is the engine's overhead.

Forward, layer i with kept coordinate k and changed coordinate c (x_k, x_c are (B,) columns)::

    u1 = x_k W0 + b0,      a1 = relu(u1)                      (B, H)
    u2 = a1 W1 + b1,       a2 = relu(u2)                      (B, H)
    theta = a2 W2 + b2                                        (B, 2)
    t = theta_0,  r = tanh(theta_1 / 2),  s = 2 r,  e = exp(s)
    y_c = x_c e + t,       y_k = x_k,       log_det += s

    L = (1/B) sum_b [ |z_b|^2 / 2 + log(2 pi) - sum_i s_i,b ]      (z = x after the last layer)

Backward. Write g(v) for dL/dv, an array of v's shape. Two rules cover the MLP:

* matrix product Y = X W + b:  g(X) = g(Y) W^T,  g(W) = X^T g(Y),  g(b) = sum over rows of g(Y)
  (Y_bj = sum_m X_bm W_mj, so dY_bj/dW_mj = X_bm and dY_bj/dX_bm = W_mj; b is broadcast
  over the batch, so its gradient sums the batch);
* relu: a = max(u, 0) has derivative 1 where u > 0 and 0 elsewhere, and u > 0 exactly
  where a > 0, so  g(u) = g(a) * [a > 0]  (only a is kept, not u).

From the loss: g(z) = z / B, and every s_i gets -1/B directly from the log-det term.
Then, layer by layer from the last, given g(y_k), g(y_c):

    g(x_c) = g(y_c) e                         dy_c/dx_c = e
    g(t)   = g(y_c)                           dy_c/dt = 1
    g(s)   = g(y_c) x_c e - 1/B               dy_c/ds = x_c e (exp' = exp), plus the log-det
    g(theta_1) = g(s) (1 - r^2)               s = 2 tanh(theta_1 / 2): ds/dtheta_1 = 2 (1 - r^2) / 2
    g(theta) = [g(t), g(theta_1)]
    g(W2) = a2^T g(theta),   g(b2) = sum_b g(theta),   g(a2) = g(theta) W2^T
    g(u2) = g(a2) [a2 > 0]
    g(W1) = a1^T g(u2),      g(b1) = sum_b g(u2),      g(a1) = g(u2) W1^T
    g(u1) = g(a1) [a1 > 0]
    g(W0) = x_k^T g(u1),     g(b0) = sum_b g(u1)
    g(x_k) = g(y_k) + g(u1) W0^T              x_k passes through unchanged *and* feeds the MLP

Per layer this is one (B, H) x (H, H) product forward and two backward, as for any MLP.
"""

import numpy as np

from .shared import LAYERS, LOG_TWO_PI, SCALE_BOUND, NumpyPeer, kept_and_changed


def relu_in_place(u):
    return np.maximum(u, 0, out=u)


def add_in_place(u, bias):
    """u + bias without a second (B, H) array: a floor allocates no more than it must."""
    u += bias
    return u


def forward(params, x):
    """(loss, z, cache): the loss and what the backward pass needs from each layer."""
    columns = [np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1])]
    log_det = np.zeros_like(columns[0])
    cache = []
    for layer in range(LAYERS):
        W0, b0, W1, b1, W2, b2 = params[6 * layer : 6 * layer + 6]
        k, c = kept_and_changed(layer)
        x_k, x_c = columns[k], columns[c]
        a1 = relu_in_place(add_in_place(x_k[:, None] * W0, b0))  # (B, 1) x (1, H): an outer product
        a2 = relu_in_place(add_in_place(a1 @ W1, b1))
        theta = add_in_place(a2 @ W2, b2)
        r = np.tanh(theta[:, 1] / SCALE_BOUND)
        log_scale = SCALE_BOUND * r
        e = np.exp(log_scale)
        cache.append((x_k, x_c, a1, a2, r, e))
        columns[c] = x_c * e + theta[:, 0]
        log_det += log_scale
    z0, z1 = columns
    log_prob = -0.5 * (z0 * z0 + z1 * z1) - LOG_TWO_PI + log_det
    return -np.mean(log_prob), columns, cache


def backward(params, z, cache):
    """Gradients of the loss, in the order of ``params`` (see the module docstring)."""
    batch = len(z[0])
    grad_columns = [z[0] / batch, z[1] / batch]
    grads = [None] * len(params)
    for layer in reversed(range(LAYERS)):
        W0, _, W1, _, W2, _ = params[6 * layer : 6 * layer + 6]
        k, c = kept_and_changed(layer)
        x_k, x_c, a1, a2, r, e = cache[layer]
        grad_y_c = grad_columns[c]
        grad_s = grad_y_c * x_c * e - 1 / batch
        grad_theta = np.stack([grad_y_c, grad_s * (1 - r * r)], axis=1)
        grad_columns[c] = grad_y_c * e
        grad_u2 = grad_theta @ W2.T  # g(a2), then times relu' in place: g(u2)
        grad_u2 *= a2 > 0
        grad_u1 = grad_u2 @ W1.T  # g(a1), then g(u1)
        grad_u1 *= a1 > 0
        grads[6 * layer : 6 * layer + 6] = [
            (x_k @ grad_u1)[None, :],
            grad_u1.sum(axis=0),
            a1.T @ grad_u2,
            grad_u2.sum(axis=0),
            a2.T @ grad_theta,
            grad_theta.sum(axis=0),
        ]
        grad_columns[k] = grad_columns[k] + grad_u1 @ W0[0]
    return grads


def nll_and_grads(params, x):
    loss, z, cache = forward(params, x)
    return loss, backward(params, z, cache)


class Peer(NumpyPeer):
    nll_and_grads = staticmethod(nll_and_grads)

    def __init__(self, params, dtype, device="cpu"):
        super().__init__(params, dtype)  # the floor runs on the CPU, on a GPU run too: it is the baseline

    def versions(self):
        return {"numpy": np.__version__}
