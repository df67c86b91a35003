"""Training: maximum likelihood on data, and reverse KL to an unnormalised density.

Maximum likelihood (``fit``). Given samples x_1..x_N of an unknown density, minimise the
negative log-likelihood of the model, estimated on minibatches:

    L(theta) = -1/B sum_b log p_theta(x_b),   log p_theta(x) = log p_Z(f(x)) + log|det df/dx|.

This is the forward KL, KL(p_data || p_theta), up to a constant: it needs samples of the
data and the model's *density*, so it uses the flow's forward direction only.

Reverse KL (``fit_to_density``). Given an unnormalised log-density log p~(x) (an energy,
no samples), minimise

    KL(q_theta || p) = E_{z ~ N(0, I)} [ log q_theta(x) - log p~(x) ] + log Z,    x = f^{-1}(z),
    log q_theta(x) = log p_Z(z) - log|det df^{-1}/dz|,

which needs the model's *samples* (and their log-density), so it uses the inverse
direction, differentiated through (the reparametrisation trick). Reverse KL is
mode-seeking: it would rather miss a mode than put mass where p has none.

Both loops: Adam by default, an optional learning-rate schedule and gradient clipping, a
tqdm progress bar, and a returned ``history``. ``fit`` validates every ``val_every`` steps,
stops early after ``patience`` validations without improvement and restores the best
parameters. A non-finite loss or gradient stops training with a ``NonFiniteLossError``
and restores the parameters of the last good step (a step is checked before it updates
anything: the loss, the finiteness of every gradient and the layers' value checks, which
wait in ``backend.deferred_checks``, come to the host in one copy, so a step synchronises
a GPU once); Ctrl-C stops cleanly and keeps the
model (the best one, when there is validation data).
"""

import math
import time

from . import backend
from .autodiff import Tensor, no_grad, ops
from .optim import Adam, clip_grad_norm


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient. ``history`` holds what was done."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


SCHEDULES = ("constant", "cosine")


def learning_rate(schedule, base_lr, step, steps):
    """The learning rate at ``step`` of ``steps``.

    "constant": base_lr. "cosine": base_lr * (1 + cos(pi step / steps)) / 2, from base_lr
    down to 0 (Loshchilov & Hutter 2017): big steps first, fine ones at the end.
    A callable is called as schedule(step) and multiplies base_lr.
    """
    if callable(schedule):
        return base_lr * schedule(step)
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
    raise ValueError(f"schedule must be one of {SCHEDULES} or a callable, got {schedule!r}")


def _model_dtype(model):
    return model.parameters()[0].dtype


def _on_device(model, data, name):
    """Data as an array of the model's backend and dtype (copied there once, not every step)."""
    if data is None:
        return None
    array = data.data if isinstance(data, Tensor) else data
    if not backend.is_array(array) or array.ndim < 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (N, ...), got {getattr(array, 'shape', type(array))}")
    return backend.to_device(array, dtype=_model_dtype(model), xp=model.array_module())


def evaluate_nll(model, data, batch_size=4096):
    """Mean negative log-likelihood (nats per sample) of ``data``, in chunks, without a graph."""
    data = _on_device(model, data, "data")
    total = 0.0
    with no_grad(), backend.deferred_checks() as checks:  # read once at the end: one synchronisation
        for start in range(0, data.shape[0], batch_size):
            chunk = data[start : start + batch_size]
            total = total + ops.sum(model.log_prob(chunk)).data
    return -backend.read_scalars([total], checks)[0] / data.shape[0]


def _check_options(steps, batch_size, lr, clip, val_every, patience):
    for name, value in (("steps", steps), ("batch_size", batch_size), ("val_every", val_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")


def _snapshot(params):
    return [p.data.copy() for p in params]


def _restore(params, snapshot):
    for p, data in zip(params, snapshot):
        p.data = data.copy()


def _read_step(loss, params, checks):
    """The loss as a float and whether it and every gradient are finite, read from the device
    together with the deferred value checks in **one** transfer: the step's one synchronisation.

    A NaN or an infinity anywhere makes the sum of all gradient entries NaN or infinite, so
    one sum over all of them (concatenated: one op, not one per parameter) tells.
    """
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    scalars = [loss.data]
    if grads:
        scalars.append(backend.array_module(grads[0]).concatenate(grads).sum())
    values = backend.read_scalars(scalars, checks)
    return values[0], math.isfinite(sum(values))


def _progress(steps, progress, description):
    if not progress:
        return None
    from tqdm.auto import tqdm  # imported here: `import minflow` needs numpy only

    return tqdm(total=steps, desc=description, dynamic_ncols=True, leave=False)


def _new_history():
    return {"step": [], "loss": [], "lr": [], "val_step": [], "val_nll": [], "best_step": None,
            "best_val_nll": None, "stopped": None, "wall_time": 0.0}


def _train_loop(model, loss_fn, steps, lr, schedule, clip, optimizer, progress, description,
                validate=None, val_every=None, patience=None):
    """The loop both objectives share. ``loss_fn(step)`` returns the scalar loss Tensor of one step."""
    params = model.parameters()
    optimizer = optimizer or Adam(params, lr=lr)
    history = _new_history()
    bar = _progress(steps, progress, description)
    best, best_snapshot, bad_validations = math.inf, None, 0
    started = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            optimizer.lr = learning_rate(schedule, lr, step - 1, steps)
            optimizer.zero_grad()
            with backend.deferred_checks() as checks:  # value checks wait for the step's one sync
                loss = loss_fn(step)
                loss.backward()
            # The parameters change only in optimizer.step(), below: a bad step is caught
            # before it, so the parameters are still those of the previous step.
            value, finite = _read_step(loss, params, checks)
            if not finite:
                history["stopped"] = f"non-finite loss or gradient at step {step}"
                raise NonFiniteLossError(
                    f"training stopped at step {step}: the loss was {value} or a gradient was not finite; "
                    "the parameters of the previous step are kept (try a smaller lr or clip=...)",
                    history,
                )
            if clip is not None:
                clip_grad_norm(params, clip)
            optimizer.step()
            history["step"].append(step)
            history["loss"].append(value)
            history["lr"].append(optimizer.lr)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{sum(history['loss'][-50:]) / len(history['loss'][-50:]):.4f}")
            if validate is not None and (step % val_every == 0 or step == steps):
                val_nll = validate()
                history["val_step"].append(step)
                history["val_nll"].append(val_nll)
                if val_nll < best:
                    best, best_snapshot, bad_validations = val_nll, _snapshot(params), 0
                    history["best_step"], history["best_val_nll"] = step, val_nll
                else:
                    bad_validations += 1
                    if patience is not None and bad_validations >= patience:
                        history["stopped"] = f"early stopping at step {step}: no improvement in {patience} validations"
                        break
    except KeyboardInterrupt:
        history["stopped"] = f"interrupted at step {len(history['step'])}"
    finally:
        if bar is not None:
            bar.close()
        history["wall_time"] = time.perf_counter() - started
    if best_snapshot is not None:
        _restore(params, best_snapshot)  # the best validated parameters, not the last ones
    return history


def fit(model, data, steps=1000, batch_size=512, lr=1e-3, schedule="constant", clip=None,
        val_data=None, val_every=100, patience=None, optimizer=None, seed=0, progress=True):
    """Train ``model`` (a NormalizingFlow) by maximum likelihood on ``data`` (N, ...).

    Minibatches are drawn without replacement, reshuffled every epoch (seeded by ``seed``).
    With ``val_data``, the validation NLL is computed every ``val_every`` steps (and at
    the end); training stops after ``patience`` validations without improvement, and the
    parameters with the best validation NLL are restored before returning.

    Returns the history: per step ``step``, ``loss`` (train NLL of the batch), ``lr``; per
    validation ``val_step``, ``val_nll``; and ``best_step``, ``best_val_nll``,
    ``stopped`` (why training ended early, else None), ``wall_time`` (seconds).
    """
    _check_options(steps, batch_size, lr, clip, val_every, patience)
    data = _on_device(model, data, "data")
    val_data = _on_device(model, val_data, "val_data")
    xp = backend.array_module(data)
    rng = backend.rng(seed, xp)
    n = data.shape[0]
    batch_size = min(batch_size, n)
    order, position = None, n

    def loss_fn(step):
        nonlocal order, position
        if position + batch_size > n:  # a new epoch: a fresh random order
            order, position = xp.argsort(rng.random(n)), 0
        batch = data[order[position : position + batch_size]]
        position += batch_size
        return model.nll(batch)

    validate = None if val_data is None else (lambda: evaluate_nll(model, val_data))
    return _train_loop(model, loss_fn, steps, lr, schedule, clip, optimizer, progress, "fit",
                       validate=validate, val_every=val_every, patience=patience)


def reverse_kl(model, log_density, n, seed=None):
    """Monte-Carlo estimate of KL(q || p) + log Z from ``n`` model samples (a Tensor, differentiable).

    x = f^{-1}(z) with z ~ base; log q(x) = log p_Z(z) - log|det df^{-1}/dz| (the inverse's
    log-det is that of the generative direction, hence the minus).
    """
    z = Tensor(model.base.sample(n, seed=seed, dtype=_model_dtype(model), xp=model.array_module()))
    x, inverse_log_det = model.flow.inverse(z)
    log_q = model.base.log_prob(z) - inverse_log_det
    return ops.mean(log_q - log_density(x))


def fit_to_density(model, log_density, steps=2000, batch_size=256, lr=1e-3, schedule="constant",
                   clip=None, optimizer=None, seed=0, progress=True):
    """Train ``model`` to approximate exp(log_density) by minimising the reverse KL.

    ``log_density(x)`` takes a Tensor (B, D) and returns a Tensor (B,), differentiable
    (e.g. ``minflow.data.log_density("u1")``). Returns the history as :func:`fit` does,
    with ``loss`` the KL estimate plus log Z (it goes down to -log Z).
    """
    _check_options(steps, batch_size, lr, clip, 1, None)
    rng = backend.rng(seed, model.array_module())
    return _train_loop(model, lambda step: reverse_kl(model, log_density, batch_size, seed=rng),
                       steps, lr, schedule, clip, optimizer, progress, "fit_to_density")
