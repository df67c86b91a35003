"""Optimizers: turn gradients into parameter updates.

Each ``step()`` reads ``p.grad`` of every parameter and updates ``p.data``;
``zero_grad()`` clears the gradients, which otherwise accumulate across ``backward`` calls.

``state_dict()`` and ``load_state_dict()`` save and restore what an optimizer remembers
between steps (Adam's moments and step count, SGD's velocities) together with its
hyperparameters, so that training can stop and later continue exactly where it was
(``train.fit(..., resume=state)``). The state is a flat dict: names to arrays (copies, on
the parameters' device) and to plain Python values (``type``, ``lr``, ...).

``Adam`` is the method as the paper writes it, one parameter at a time; ``FlatAdam``
computes the same numbers on one flat array of all parameters, which is what training
uses (its docstring says why and by how much). The two save and load one state format.
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

    def _check_state(self, state, hyperparameters, kind=None):
        """Refuse a state of another kind of optimizer (``kind``: this class's name unless
        given) or one that lacks a hyperparameter."""
        kind = kind or type(self).__name__
        if state.get("type") != kind:
            raise ValueError(f"optimizer state is for {state.get('type')!r}, this optimizer is {kind!r}")
        missing = [name for name in hyperparameters if name not in state]
        if missing:
            raise ValueError(f"{kind} state is missing {missing}")

    def _state_array(self, state, name, size, like):
        """``state[name]`` as a flat array of ``size`` entries on ``like``'s device and dtype."""
        value = state[name]
        if not backend.is_array(value) or value.size != size:
            raise ValueError(
                f"{type(self).__name__} state {name!r} has {getattr(value, 'size', '?')} entries, "
                f"the parameters have {size}"
            )
        return backend.to_device(value, dtype=like.dtype, xp=backend.array_module(like)).reshape(-1).copy()


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

    def state_dict(self):
        """``{"type": "SGD", "lr", "momentum", "velocity.<i>": array}`` (a velocity only for
        the parameters that have one: those that got a gradient since the start)."""
        state = {"type": "SGD", "lr": self.lr, "momentum": self.momentum}
        for i, v in enumerate(self.velocity):
            if v is not None:
                state[f"velocity.{i}"] = v.copy()
        return state

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (hyperparameters and velocities; checks the sizes)."""
        self._check_state(state, ("lr", "momentum"))
        velocity = [None] * len(self.params)
        for i, p in enumerate(self.params):
            if f"velocity.{i}" in state:
                velocity[i] = self._state_array(state, f"velocity.{i}", p.size, p.data).reshape(p.shape)
        known = {f"velocity.{i}" for i in range(len(self.params))}
        unexpected = sorted(k for k in state if k.startswith("velocity.") and k not in known)
        if unexpected:
            raise ValueError(f"SGD state has {unexpected}, but the optimizer has {len(self.params)} parameters")
        self.lr, self.momentum, self.velocity = float(state["lr"]), float(state["momentum"]), velocity


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): a step along the gradient's running mean m, divided by the
    root of its running uncentred variance v, both corrected for their zero start:

        g <- grad + weight_decay * theta            (an L2 penalty; weight_decay is 0 by default)
        m <- b1 m + (1 - b1) g                      v <- b2 v + (1 - b2) g^2
        theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    with t the number of steps taken. m and v start at 0, which biases them towards 0 in
    the first steps; dividing by 1 - b^t removes that bias. A parameter without a gradient
    at some step (the loss did not use it) is skipped: its value, m and v stay as they were.

    This class is the method as written above, one parameter at a time; each step gives a
    parameter a new array (an array read from ``p.data`` before the step keeps its values).
    ``train.fit`` uses :class:`FlatAdam`, which computes the same numbers faster.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.t = 0
        self.m = self.v = None  # one array per parameter, made at the first step

    def step(self):
        if self.m is None:
            self.m = [backend.array_module(p.data).zeros_like(p.data) for p in self.params]
            self.v = [backend.array_module(p.data).zeros_like(p.data) for p in self.params]
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            xp = backend.array_module(p.data)
            g = p.grad + self.weight_decay * p.data
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * g
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            m_hat = self.m[i] / (1 - self.beta1**self.t)
            v_hat = self.v[i] / (1 - self.beta2**self.t)
            p.data = p.data - self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)

    def state_dict(self):
        """What the next step needs: ``{"type": "Adam", "t": steps taken, "lr", "betas",
        "eps", "weight_decay", "m", "v"}``, with m and v flat arrays (copies: every
        parameter's moment flattened, in the order of the parameters; absent before the
        first step). :class:`FlatAdam` writes the same format: either loads the other's state.
        """
        state = {
            "type": "Adam",
            "t": self.t,
            "lr": self.lr,
            "betas": [self.beta1, self.beta2],
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }
        if self.m is not None:
            state["m"], state["v"] = self._flat_moments()
        return state

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (of an Adam or a FlatAdam): hyperparameters, step
        count and moments, copied to the parameters' device and dtype."""
        self._check_state(state, ("t", "lr", "betas", "eps", "weight_decay"), kind="Adam")
        size = sum(p.size for p in self.params)
        like = self.params[0].data
        if ("m" in state) != ("v" in state):
            raise ValueError("Adam state has only one of its moments m and v")
        m = v = None
        if "m" in state:
            m, v = self._state_array(state, "m", size, like), self._state_array(state, "v", size, like)
        t = int(state["t"])
        if t < 0 or (t > 0 and m is None):
            raise ValueError(f"Adam state has step count {t} but {'no' if m is None else 'its'} moments")
        self.lr, (self.beta1, self.beta2) = float(state["lr"]), (float(b) for b in state["betas"])
        self.eps, self.weight_decay = float(state["eps"]), float(state["weight_decay"])
        self.t = t
        self._set_moments(m, v)

    def _flat_moments(self):
        """Copies of m and v as flat arrays, in the order of the parameters (the saved format)."""
        xp = backend.array_module(self.m[0])
        return tuple(xp.concatenate([a.reshape(-1) for a in moments]) for moments in (self.m, self.v))

    def _set_moments(self, m, v):
        """Take flat m and v (or None: not started) as one array per parameter."""
        if m is None:
            self.m = self.v = None
            return
        self.m, self.v, offset = [], [], 0
        for p in self.params:
            self.m.append(m[offset : offset + p.size].reshape(p.shape))
            self.v.append(v[offset : offset + p.size].reshape(p.shape))
            offset += p.size


class FlatAdam(Adam):
    """:class:`Adam`, the same numbers computed in a handful of whole-model array operations.

    Why. A flow's model has dozens of small weight and bias arrays (a RealNVP of 8
    couplings with 3-layer conditioners: 48), and Adam makes about ten array operations per
    parameter. On small arrays each NumPy call costs more than its arithmetic (a few µs of
    Python and dispatch), and on a GPU each is a kernel launch. Measured on the RealNVP of
    ``benchmarks/train_step.py`` (H = 64, float32, batch 64, a 2-core CPU): Adam's update
    takes 0.50 ms, FlatAdam's 0.11 ms, and the whole train step 1.8 ms against 1.4 ms
    (benchmarks/RESULTS.md, section 2, has the same picture against the NumPy floor's
    per-parameter Adam: 0.4–0.7 ms against 0.12–0.2 ms). On a GPU: a dozen kernels per
    step instead of a dozen per parameter. ``train.fit``, ``train.fit_to_density``, the
    command line and the benchmarks use it; read :class:`Adam` for the method.

    How:

    - **One flat array for all parameters.** At its first step FlatAdam copies every
      parameter into one flat array and makes each ``p.data`` a *view* into it: updating
      the flat array updates every parameter. m and v are flat arrays of the same layout.
      If a parameter's ``data`` is replaced later (``load_state_dict``, ``astype``, a
      restored snapshot), the view is gone; the next step notices (``p.data is not view``)
      and flattens again. Nothing outside this class relies on the views.
    - **In place.** m, v and theta are updated with ``*=``, ``+=``, ``-=``: no temporaries
      the size of the model beyond the one step. lr / (1 - b1^t) is folded into one number
      and sqrt(v / c2) computed as sqrt(v) / sqrt(c2): the same update as Adam's up to
      rounding (a few ulps a step), two fewer passes over the model.
    - **No denormal floats.** For a parameter whose gradient is 0 (a dead ReLU unit) m
      decays by b1 every step and after several hundred float32 steps falls below the
      smallest normal float (1.2e-38). Many CPUs handle such *denormal* numbers on a slow
      path (a NumPy step full of them has been measured 2.8 times slower; the AMD CPU of
      benchmarks/RESULTS.md shows no penalty). m and v entries that small are 0 for every
      practical purpose, so each step sets them to exactly 0.

    Its ``state_dict`` is Adam's (``"type": "Adam"``, flat m and v in parameter order), so
    a state saved by either optimizer resumes in the other. All parameters must share one
    dtype (they share one array).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, betas, eps, weight_decay)
        self.theta = None  # the flat array of all parameters; m and v are flat too (made at the first step)
        self.views = []  # params[i].data is views[i] while the layout holds

    def step(self):
        self.t += 1
        if any(p.data is not view for p, view in zip(self.params, self.views)) or not self.views:
            self._flatten()
        xp = backend.array_module(self.theta)
        # Every gradient, in the flat layout. A parameter without one (unused by the loss)
        # gets 0 and, below, keeps its value, m and v: it is skipped, as in Adam.
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
        denominator *= 1 / math.sqrt(1 - self.beta2**self.t)
        denominator += self.eps
        update = m / denominator
        update *= self.lr / (1 - self.beta1**self.t)
        if skipping:
            update *= has_grad
        self.theta -= update

    def _flat_moments(self):
        return self.m.copy(), self.v.copy()

    def _set_moments(self, m, v):
        # The flat parameter array is rebuilt at the next step (the parameters keep their own
        # arrays, which a checkpoint load may just have replaced).
        self.m, self.v = m, v
        self.theta, self.views = None, []

    def _flatten(self):
        """Copy the parameters into one flat array and point each ``p.data`` at its slice."""
        arrays = [p.data for p in self.params]
        xp = backend.array_module(*arrays)
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise ValueError(f"FlatAdam needs parameters of one dtype, got {sorted(str(d) for d in dtypes)}")
        self.theta = xp.concatenate([a.reshape(-1) for a in arrays])
        if self.m is None:
            self.m, self.v = xp.zeros_like(self.theta), xp.zeros_like(self.theta)
        elif backend.array_module(self.m) is not xp:
            raise ValueError(
                "the parameters moved between NumPy and CuPy after FlatAdam was made; make a new optimizer"
            )
        else:
            self.m, self.v = self.m.astype(self.theta.dtype), self.v.astype(self.theta.dtype)
        self.views, offset = [], 0
        for p in self.params:
            p.data = self.theta[offset : offset + p.size].reshape(p.shape)
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
