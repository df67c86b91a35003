"""Optimizers: turn gradients into parameter updates.

Each ``step()`` reads ``p.grad`` of every parameter and updates ``p.data`` in place;
``zero_grad()`` clears the gradients, which otherwise accumulate across ``backward`` calls.
"""

import math

from . import backend


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class SGD(Optimizer):
    """theta <- theta - lr * v, with v = momentum * v + grad (plain gradient descent for momentum 0)."""

    def __init__(self, params, lr=1e-2, momentum=0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity = [None] * len(self.params)

    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            v = p.grad if self.velocity[i] is None else self.momentum * self.velocity[i] + p.grad
            self.velocity[i] = v
            p.data -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): a step along the gradient's running mean m, divided by the
    root of its running uncentred variance v, both corrected for their zero start:

        m <- b1 m + (1 - b1) g        v <- b2 v + (1 - b2) g^2
        theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)
        self.t = 0

    def step(self):
        self.t += 1
        correction1 = 1 - self.beta1 ** self.t
        correction2 = 1 - self.beta2 ** self.t
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.m[i] is None:
                self.m[i] = backend.array_module(g).zeros_like(g)
                self.v[i] = backend.array_module(g).zeros_like(g)
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * g
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            step = (self.m[i] / correction1) / (backend.array_module(g).sqrt(self.v[i] / correction2) + self.eps)
            p.data -= self.lr * step.astype(p.dtype, copy=False)


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping (a Python float: this synchronises a GPU once).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * scale
    return total
