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

    How it is made fast (the formulas above are all there is to the method):

    - **One flat array for all parameters.** A model has dozens of small weight and bias
      arrays, and a dozen array operations each would cost more than the arithmetic. So at
      its first step Adam copies every parameter into one flat array and makes each
      ``p.data`` a *view* into it: updating the flat array updates every parameter, in a
      handful of whole-array operations. m and v are flat arrays of the same layout. If a
      parameter's ``data`` is replaced later (``load_state_dict``, ``astype``), the view is
      gone; the next step notices (``p.data is not view``) and flattens again.
    - **In place.** m, v and theta are updated with ``*=``, ``+=``, ``-=``: no temporaries
      the size of the model beyond the one step.
    - **No denormal floats.** For a parameter whose gradient is 0 (a dead ReLU unit) m
      decays by b1 every step and after several hundred float32 steps falls below the
      smallest normal float (1.2e-38). Many CPUs handle such *denormal* numbers on a slow
      path (a NumPy step full of them has been measured 2.8 times slower; the AMD CPU of
      benchmarks/RESULTS.md shows no penalty). m and v entries that small are 0 for every
      practical purpose, so each step sets them to exactly 0.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.t = 0
        self.theta = self.m = self.v = None  # flat arrays, made at the first step
        self.views = []  # params[i].data is views[i] while the layout holds

    def step(self):
        self.t += 1
        if any(p.data is not view for p, view in zip(self.params, self.views)) or not self.views:
            self._flatten()
        xp = backend.array_module(self.theta)
        # Every gradient, in the flat layout. A parameter without one (unused by the loss)
        # gets 0 and, below, keeps its value, m and v: it is skipped, as in PyTorch.
        grads = [p.grad.reshape(-1) if p.grad is not None else xp.zeros(p.size, self.theta.dtype) for p in self.params]
        g = xp.concatenate(grads)
        if self.weight_decay:
            g += self.weight_decay * self.theta
        beta1, beta2, skipping = self.beta1, self.beta2, any(p.grad is None for p in self.params)
        if skipping:  # decay factors of 1 leave m and v of the gradient-less entries as they were
            has_grad = self._has_grad_mask(xp)
            beta1, beta2 = xp.where(has_grad, beta1, 1), xp.where(has_grad, beta2, 1)
        m, v = self.m, self.v
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        tiny = xp.finfo(m.dtype).tiny  # the smallest normal float: below it, flush to 0
        m *= xp.abs(m) >= tiny
        v *= v >= tiny
        # sqrt(v / c2) + eps  =  sqrt(v) / sqrt(c2) + eps, and lr * (m / c1) folds lr / c1
        # into one number: the same update, two fewer passes over the model.
        denominator = xp.sqrt(v)
        denominator *= 1 / math.sqrt(1 - self.beta2 ** self.t)
        denominator += self.eps
        update = m / denominator
        update *= self.lr / (1 - self.beta1 ** self.t)
        if skipping:
            update *= has_grad
        self.theta -= update

    def _flatten(self):
        """Copy the parameters into one flat array and point each ``p.data`` at its slice."""
        arrays = [p.data for p in self.params]
        xp = backend.array_module(*arrays)
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise ValueError(f"Adam needs parameters of one dtype, got {sorted(str(d) for d in dtypes)}")
        self.theta = xp.concatenate([a.reshape(-1) for a in arrays])
        if self.m is None:
            self.m, self.v = xp.zeros_like(self.theta), xp.zeros_like(self.theta)
        elif backend.array_module(self.m) is not xp:
            raise ValueError("the parameters moved between NumPy and CuPy after Adam was made; make a new optimizer")
        else:
            self.m, self.v = self.m.astype(self.theta.dtype), self.v.astype(self.theta.dtype)
        self.views, offset = [], 0
        for p in self.params:
            p.data = self.theta[offset:offset + p.size].reshape(p.shape)
            self.views.append(p.data)
            offset += p.size

    def _has_grad_mask(self, xp):
        """1 on the entries of parameters that have a gradient this step, 0 on the others."""
        return xp.concatenate([xp.full(p.size, p.grad is not None, dtype=self.theta.dtype) for p in self.params])


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    g <- g * min(1, max_norm / |g|), with |g| the norm of all gradients concatenated.
    Returns |g| before clipping as a 0-d array of the gradients' backend. Everything stays
    on the device: reading the norm on the host (``float(norm)``) would synchronise a GPU,
    so the scale is computed there too and applied whether or not it is below 1 (a factor
    of exactly 1 changes nothing).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = backend.array_module(grads[0])
    flat = xp.concatenate([g.reshape(-1) for g in grads])
    total = xp.sqrt(xp.dot(flat, flat))
    scale = xp.minimum(1.0, max_norm / (total + 1e-12))
    for p in params:
        if p.grad is not None:
            p.grad = p.grad * scale
    return total
