"""HIPS autograd on NumPy: the loss as a plain function of the flat parameter list, its gradient
by ``autograd.value_and_grad``, and the shared NumPy Adam. The reference for the hand-written
gradient of the floor."""

import autograd
import autograd.numpy as anp

from .shared import LAYERS, LOG_TWO_PI, SCALE_BOUND, NumpyPeer, kept_and_changed


def nll(params, x):
    """-mean log p(x) of the RealNVP with parameters ``params`` (the shared flat list)."""
    columns = [x[:, 0], x[:, 1]]
    log_det = 0.0
    for layer in range(LAYERS):
        W0, b0, W1, b1, W2, b2 = params[6 * layer : 6 * layer + 6]
        k, c = kept_and_changed(layer)
        a1 = anp.maximum(anp.dot(columns[k][:, None], W0) + b0, 0.0)
        a2 = anp.maximum(anp.dot(a1, W1) + b1, 0.0)
        theta = anp.dot(a2, W2) + b2
        shift, log_scale = theta[:, 0], SCALE_BOUND * anp.tanh(theta[:, 1] / SCALE_BOUND)
        columns[c] = columns[c] * anp.exp(log_scale) + shift
        log_det = log_det + log_scale
    log_prob = -0.5 * (columns[0] ** 2 + columns[1] ** 2) - LOG_TWO_PI + log_det
    return -anp.mean(log_prob)


nll_and_grads = autograd.value_and_grad(nll)


class Peer(NumpyPeer):
    nll_and_grads = staticmethod(nll_and_grads)

    def __init__(self, params, dtype, device="cpu"):
        if device != "cpu":
            raise ValueError("autograd runs on the CPU only")
        super().__init__(params, dtype)

    def versions(self):
        from importlib.metadata import version

        return {"autograd": version("autograd")}
