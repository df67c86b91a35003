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

Both loops: Adam by default (``optim.FlatAdam``, Adam computed on one flat array of all
parameters: the same numbers, faster), an optional learning-rate schedule and gradient
clipping, a tqdm progress bar, and a returned ``history``. ``fit`` validates every
``val_every`` steps, stops early after ``patience`` validations without improvement and
restores the best parameters.

Both loops also make the one process-wide setting minflow has: they ask glibc's malloc to
keep freed memory for the next step (``backend.keep_freed_memory``: a step's large
temporaries are then reused instead of mapped and page-faulted afresh, up to a third of a
large step's time). It holds for the rest of the process; set the environment variable
``MINFLOW_KEEP_FREED_MEMORY=0`` to keep glibc's defaults.

What can go wrong, and what happens then:

- **Non-finite numbers.** ``fit`` checks its data once, before the first step (one
  synchronisation): NaN or infinite rows in ``data`` or ``val_data`` raise a
  ``NonFiniteLossError`` with ``cause`` "data" or "val_data", naming how many rows. A
  non-finite loss or gradient during training (the run diverged) raises it with ``cause``
  "step" and keeps the parameters of the last good step (a step is checked before it
  updates anything: the loss, the finiteness of every gradient and the layers' value
  checks, which wait in ``backend.deferred_checks``, come to the host in one copy, so a
  step synchronises a GPU once).
- **Ctrl-C.** While a loop runs in the main thread it owns SIGINT. The *first* Ctrl-C
  only raises a flag: the step under way finishes (its optimizer update and, when one is
  due, its validation), training stops, the best validated parameters are restored, the
  history is marked (``interrupted`` True, ``stopped`` "interrupted at step k") and a
  ``TrainingInterrupted`` is raised. It is a ``KeyboardInterrupt``, so a script that calls
  ``fit`` several times stops at the first Ctrl-C; catch it to keep going (it carries
  ``history`` and ``state``). The *second* Ctrl-C raises a plain ``KeyboardInterrupt`` at
  once: an abort, with the parameters wherever they were. Outside the main thread (no
  signal handler can be installed there) a ``KeyboardInterrupt`` raised inside a step
  stops training after the last complete step, and the same ``TrainingInterrupted`` follows.
- **Resuming.** Every run ends with a ``TrainingState`` (``history["state"]``, and
  ``TrainingInterrupted.state``): the last parameters (not the best), the optimizer's
  moments and step count, the step reached and the validation bookkeeping. It saves to one
  ``.npz`` file (``state.save(path)``, ``TrainingState.load(path)``), and
  ``fit(..., steps=S, resume=state)`` continues to S steps *in total*. The minibatch order
  of epoch e is a function of (seed, e) alone, so the data order needs no random-generator
  state: a run interrupted at step k and resumed to S ends with the same parameters as an
  uninterrupted run of S steps, to rounding.
"""

import contextlib
import json
import math
import operator
import secrets
import signal
import threading
import time

from . import backend
from .autodiff import Tensor, no_grad, ops
from .checkpoint import FORMAT_KEY, TRAINING_STATE_KEY, check_format, load_arrays, save_arrays
from .data import DigitsSplits, bits_per_dim
from .flows.base import call_with_context
from .optim import FlatAdam, clip_grad_norm


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or an infinity. ``cause`` says where: "data" or "val_data" (the
    input has non-finite rows: nothing was trained), or "step" (a loss or gradient became
    non-finite: the run diverged; the parameters of the last good step are kept).
    ``history`` holds what was done and ``state`` (for "step") the ``TrainingState`` of
    the last good step."""

    def __init__(self, message, history, cause="step", state=None):
        super().__init__(message)
        self.history, self.cause, self.state = history, cause, state


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a complete step. A ``KeyboardInterrupt``, so that a
    script stops; ``history`` (marked ``interrupted``) and ``state`` (a ``TrainingState``
    to resume from) say where it stopped. The model holds the best validated parameters
    (or the last ones, without validation data)."""

    def __init__(self, message, history, state):
        super().__init__(message)
        self.history, self.state = history, state


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


def _on_device(model, data, name):
    """Data as an array of the model's backend and dtype (copied there once, not every step)."""
    if data is None:
        return None
    array = data.data if isinstance(data, Tensor) else data
    if not backend.is_array(array) or array.ndim < 2 or array.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty array of shape (N, ...), got {getattr(array, 'shape', type(array))}"
        )
    return backend.to_device(array, dtype=model.float_dtype(), xp=model.array_module())


def _context_on_device(model, context, n, caller, name="context"):
    """The context rows of a conditional model's data, on its device: None for a model that is
    not conditional; ValueError for a missing context, a context given to a model that reads
    none, or a number of rows other than the data's ``n`` (the flow checks the width C)."""
    conditional = getattr(model, "context_dim", 0)
    if context is None:
        if conditional:
            raise ValueError(
                f"{caller}: the model is conditional (context_dim {conditional}): pass {name}=..., "
                f"an array of shape (N, {conditional}) with one row per data row"
            )
        return None
    if not conditional:
        raise ValueError(f"{caller}: {name} was given, but the model is not conditional (its flow reads no context)")
    context = _on_device(model, context, name)
    if context.shape[0] != n:
        raise ValueError(f"{caller}: {name} must have one row per data row, {n}, got shape {tuple(context.shape)}")
    return context


def _rows(array, start, size):
    """Rows start .. start + size of ``array`` (None stays None)."""
    return None if array is None else array[start : start + size]


def _non_finite_rows(x):
    """How many rows of ``x`` hold a NaN or an infinity (a 0-d device array: no synchronisation)."""
    xp = backend.array_module(x)
    return xp.sum(~xp.all(xp.isfinite(x.reshape(x.shape[0], -1)), axis=1))


def _non_finite_message(name, bad, n, when="before training"):
    return (
        f"{name} has {bad} of {n} rows with NaN or infinite values; "
        f"remove or repair them {when} (e.g. keep x[numpy.isfinite(x).all(axis=1)])"
    )


# --- evaluation ---------------------------------------------------------------------------------
def _chunked_log_probs(model, data, batch_size, caller, context=None):
    """log p(x) (or log p(x | c)) of every row of ``data`` (an (N,) array on the model's device)
    and the value checks that wait for the caller's one read: the data's own finiteness first
    (so that it is the error reported; a layer would complain too), then the layers' deferred
    checks."""
    data = _on_device(model, data, "data")
    n = data.shape[0]
    context = _context_on_device(model, context, n, caller)
    with no_grad(), backend.deferred_checks() as checks:
        checks.append(
            (
                _non_finite_rows(data) == 0,
                lambda: f"{caller}: {_non_finite_message('data', int(_non_finite_rows(data)), n, 'first')}",
            )
        )
        chunks = [
            call_with_context(model.log_prob, data[start : start + batch_size], _rows(context, start, batch_size)).data
            for start in range(0, n, batch_size)
        ]
    return (chunks[0] if len(chunks) == 1 else backend.array_module(chunks[0]).concatenate(chunks)), checks


def log_probs(model, data, batch_size=4096, context=None):
    """log p(x) of every row of ``data`` (N, ...): an (N,) array on the model's device
    (log p(x | c) with ``context`` (N, C) for a conditional model).

    Computed ``batch_size`` rows at a time without recording a graph, so memory stays flat
    in N. Data with NaN or infinite values raises ``ValueError`` naming how many rows (one
    synchronisation, for that check and the layers' value checks together)."""
    values, checks = _chunked_log_probs(model, data, batch_size, "log_probs", context)
    backend.read_scalars([values.sum()], checks)
    return values


def evaluate_nll(model, data, batch_size=4096, context=None):
    """Mean negative log-likelihood (nats per sample) of ``data``: -mean of :func:`log_probs`,
    read from the device in one synchronisation (``context`` (N, C): of a conditional model).
    Data with NaN or infinite values raises ``ValueError`` naming how many rows."""
    values, checks = _chunked_log_probs(model, data, batch_size, "evaluate_nll", context)
    return -backend.read_scalars([values.sum()], checks)[0] / values.shape[0]


def evaluate_bits_per_dim(model, images, log_det, batch_size=4096):
    """Bits per dimension of dequantized images under ``model``: ``data.bits_per_dim`` of
    :func:`log_probs`, with ``log_det`` (N,) the preprocessing's log|dh/dy| (a
    ``data.DigitsSplits``' ``*_log_det``)."""
    return bits_per_dim(log_probs(model, images, batch_size), log_det, dim=math.prod(tuple(images.shape[1:])))


def evaluate_splits(model, splits, names=("train", "val", "test"), contexts=None):
    """The metrics of ``model`` on the parts ``names`` of a dataset's splits, as a dict.

    For 2-D toy data (a ``data.Splits``): ``<name>_nll`` in nats per sample of the
    standardised data, and with "test", ``test_nll_original_units``, which adds back the
    standardisation's log-determinant (the NLL in the data's own units). For the digits (a
    ``data.DigitsSplits``): ``<name>_bpd`` in bits per dimension of the dequantized pixels,
    and with "test", ``test_nll`` (nats per image in model space). ``contexts``: for a
    conditional model, the (train, val, test) contexts of the splits' rows (``data.toy_labels``).
    """
    if isinstance(splits, DigitsSplits):
        metrics = {
            f"{name}_bpd": evaluate_bits_per_dim(model, getattr(splits, name), getattr(splits, f"{name}_log_det"))
            for name in names
        }
        if "test" in names:
            metrics["test_nll"] = evaluate_nll(model, splits.test)
        return metrics
    position = {"train": 0, "val": 1, "test": 2}
    metrics = {
        f"{name}_nll": evaluate_nll(
            model, getattr(splits, name), context=None if contexts is None else contexts[position[name]]
        )
        for name in names
    }
    if "test" in names and splits.standardizer is not None:
        metrics["test_nll_original_units"] = metrics["test_nll"] - splits.standardizer.log_det
    return metrics


def non_finite_parameters(model):
    """Names of the parameters of ``model`` that hold a NaN or an infinity: the first question
    when a model gives a non-finite density (one synchronisation per parameter: not for a hot path)."""
    return [
        name
        for name, param in model.named_parameters()
        if not bool(backend.array_module(param.data).isfinite(param.data).all())
    ]


# --- one step -------------------------------------------------------------------------------------
def step(model, optimizer, batch, clip=None, check=None, loss_fn=None):
    """One step of maximum likelihood on ``batch``: the four lines every training loop is made of,

        optimizer.zero_grad()       # forget the last step's gradients (backward adds to .grad)
        loss = model.nll(batch)     # -1/B sum_b log p(x_b)
        loss.backward()             # d loss / d theta, into every parameter's .grad
        optimizer.step()            # move every parameter against its gradient

    Returns ``loss``, a Tensor (``float(loss.data)`` reads it: a synchronisation on a GPU, so a
    loop that need not look at every step's loss should not). :func:`fit` runs this step in
    its loop; call it in a loop of your own for anything ``fit`` does not do.

    ``clip``: scale the gradients down to a global norm of at most ``clip`` before the update
    (``optim.clip_grad_norm``). ``loss_fn(model, batch)``: a loss to minimise instead of the NLL
    (:func:`fit_to_density` passes the reverse KL, with the number of samples as ``batch``).
    ``check(loss, checks)``: called after ``backward`` and before anything changes, with the
    value checks the layers deferred during the forward and backward passes
    (``backend.deferred_checks``); it must read them (``fit`` reads them in the step's one
    synchronisation, together with the loss) and may raise to keep the parameters as they
    were. Without ``check`` nothing is deferred: each layer checks its values at once.
    """
    optimizer.zero_grad()
    with backend.deferred_checks() if check is not None else contextlib.nullcontext() as checks:
        loss = model.nll(batch) if loss_fn is None else loss_fn(model, batch)
        loss.backward()
    if check is not None:
        check(loss, checks)  # the parameters change only below: a step refused here changes nothing
    if clip is not None:
        clip_grad_norm(optimizer.params, clip)
    optimizer.step()
    return loss


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


def _check_trainable(model):
    if not model.parameters():
        raise ValueError(f"the model ({type(model).__name__}) has no parameters: nothing to train")


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


def _progress(steps, progress, description, done=0):
    if not progress:
        return None
    from tqdm.auto import tqdm  # imported here: `import minflow` needs numpy only

    return tqdm(total=steps, initial=done, desc=description, dynamic_ncols=True, leave=False)


def _new_history():
    return {
        "step": [],
        "loss": [],
        "lr": [],
        "val_step": [],
        "val_nll": [],
        "best_step": None,
        "best_val_nll": None,
        "stopped": None,
        "interrupted": False,
        "wall_time": 0.0,
    }


def _copy_history(history):
    """A copy of ``history`` without its ``state`` (lists copied: the copy does not grow with it)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in history.items() if k != "state"}


class _CtrlC:
    """SIGINT while training runs: the first one raises a flag, the second aborts.

    Installed only in the main thread (the only one Python lets set a signal handler) and
    only where SIGINT is not ignored; the previous handler is restored on the way out.
    """

    def __init__(self):
        self.requested = self.aborted = self.installed = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                    self.previous = signal.signal(signal.SIGINT, self._handle)
                    self.installed = True
            except ValueError:  # not the main interpreter: no handler, fall back to KeyboardInterrupt
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        if self.installed:  # None: the previous handler was not set from Python; SIG_DFL is the nearest
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.previous is None else self.previous)
        return False


def _train_loop(
    model,
    batch_for,
    loss_fn,
    steps,
    lr,
    schedule,
    clip,
    optimizer,
    progress,
    description,
    validate=None,
    val_every=None,
    patience=None,
    resume=None,
    order=None,
):
    """The loop both objectives share: :func:`step` on ``batch_for(k)`` at step k, with the loss
    ``loss_fn`` (None: the NLL); ``order`` describes the data order for the TrainingState
    (objective, seed, batch size, N)."""
    named = model.named_parameters()
    params = [p for _, p in named]
    optimizer = optimizer or FlatAdam(params, lr=lr)
    backend.keep_freed_memory()  # glibc keeps freed memory for the next step (see its docstring)
    best, best_snapshot, bad_validations, done = math.inf, None, 0, 0
    if resume is None:
        history = _new_history()
    else:
        optimizer.load_state_dict(resume.optimizer)
        history = _copy_history(resume.history)
        history.update(stopped=None, interrupted=False)
        done, bad_validations = resume.step, resume.bad_validations
        if resume.best_val_nll is not None:
            best = resume.best_val_nll
        if resume.best_parameters is not None:
            best_snapshot = [
                backend.to_device(resume.best_parameters[name], dtype=p.dtype, xp=backend.array_module(p.data))
                for name, p in named
            ]

    def state():
        return TrainingState(
            step=done,
            steps=steps,
            parameters=model.state_dict(),
            optimizer=optimizer.state_dict(),
            best_val_nll=None if best == math.inf else best,
            best_step=history["best_step"],
            bad_validations=bad_validations,
            best_parameters=None if best_snapshot is None else {name: a for (name, _), a in zip(named, best_snapshot)},
            history=_copy_history(history),
            **order,
        )

    read = [None]  # the loss of the last step, as check() read it

    def check(loss, checks):
        """Between a step's backward and its update: the loss, whether every gradient is
        finite, and the layers' deferred value checks, read in the step's one synchronisation.
        A non-finite step raises here, before the update: the parameters stay the last good ones."""
        read[0], finite = _read_step(loss, params, checks)
        if not finite:
            history["stopped"] = f"non-finite loss or gradient at step {done + 1}"
            raise NonFiniteLossError(
                f"training stopped at step {done + 1}: the loss was {read[0]} or a gradient was not finite; "
                "the parameters of the previous step are kept (try a smaller lr, or clip the gradients "
                "with clip=...)",
                history,
                cause="step",
                state=state(),
            )

    bar = _progress(steps, progress, description, done)
    wall_time, started = history["wall_time"], time.perf_counter()
    interrupts, interrupted = _CtrlC(), False
    try:
        with interrupts:
            for k in range(done + 1, steps + 1):
                optimizer.lr = learning_rate(schedule, lr, k - 1, steps)
                step(model, optimizer, batch_for(k), clip=clip, check=check, loss_fn=loss_fn)
                done = k
                value = read[0]
                history["step"].append(k)
                history["loss"].append(value)
                history["lr"].append(optimizer.lr)
                if bar is not None:
                    bar.update(1)
                    if k % 10 == 0 or k == steps:
                        bar.set_postfix(loss=f"{sum(history['loss'][-50:]) / len(history['loss'][-50:]):.4f}")
                if validate is not None and (k % val_every == 0 or k == steps):
                    val_nll = validate()
                    history["val_step"].append(k)
                    history["val_nll"].append(val_nll)
                    if val_nll < best:
                        best, best_snapshot, bad_validations = val_nll, _snapshot(params), 0
                        history["best_step"], history["best_val_nll"] = k, val_nll
                    else:
                        bad_validations += 1
                        if patience is not None and bad_validations >= patience:
                            history["stopped"] = f"early stopping at step {k}: no improvement in {patience} validations"
                            break
                if interrupts.requested:  # the first Ctrl-C: this step is complete, stop here
                    break
        interrupted = interrupts.requested  # a Ctrl-C after the last step counts too
    except KeyboardInterrupt:
        if interrupts.aborted:  # the second Ctrl-C: abort at once
            raise
        interrupted = True  # raised inside a step (another thread, or the loss): the last complete step stands
    finally:
        if bar is not None:
            bar.close()
        history["wall_time"] = wall_time + time.perf_counter() - started
    history["interrupted"] = interrupted
    if interrupted:
        history["stopped"] = f"interrupted at step {done}"
    history["state"] = final = state()  # the last parameters, before the best are restored
    if best_snapshot is not None:
        _restore(params, best_snapshot)  # the best validated parameters, not the last ones
    if interrupted:
        raise TrainingInterrupted(f"training interrupted at step {done} of {steps}", history, final)
    return history


def _data_seed(seed, xp):
    """The int that, with the epoch, seeds each epoch's data order."""
    if seed is None:
        return secrets.randbits(63)
    if hasattr(seed, "standard_normal"):  # a Generator: one number from it (on a GPU, one synchronisation)
        return int(backend.rng(seed, xp).integers(0, 2**63 - 1))
    try:
        index = operator.index(seed)
    except TypeError:
        index = -1
    if index < 0:
        raise ValueError(f"seed must be a non-negative int, None or a random Generator, got {seed!r}")
    return index


def _check_resume(resume, objective, steps, **same):
    """Refuse a state that cannot continue this run; ``same``: what must match (None: anything)."""
    if not isinstance(resume, TrainingState):
        raise ValueError(
            "resume must be a TrainingState (history['state'] or TrainingState.load(path)), "
            f"got {type(resume).__name__}"
        )
    if resume.objective != objective:
        raise ValueError(f"resume: the state is of a {resume.objective} run, not of {objective}")
    if steps <= resume.step:
        raise ValueError(
            f"resume: steps={steps} is the total number of steps and must be more than the "
            f"{resume.step} the state has done already"
        )
    for name, value in same.items():
        if value is not None and value != getattr(resume, name):
            raise ValueError(
                f"resume: {name}={value!r}, but the state was trained with {name}={getattr(resume, name)!r}; "
                f"the same data order needs the same {name}"
            )


def fit(
    model,
    data,
    steps=1000,
    batch_size=512,
    lr=1e-3,
    schedule="constant",
    clip=None,
    val_data=None,
    val_every=100,
    patience=None,
    optimizer=None,
    seed=0,
    progress=True,
    resume=None,
    context=None,
    val_context=None,
):
    """Train ``model`` (a NormalizingFlow) by maximum likelihood on ``data`` (N, ...).

    A conditional model (``model.context_dim`` C > 0) learns p(x | c) from pairs: ``context``
    (N, C) gives row n's context, and ``val_context`` that of ``val_data``; each minibatch takes
    the same rows of both.

    Minibatches are drawn without replacement, in a fresh random order every epoch (the
    order of epoch e is seeded by (seed, e); ``seed`` None draws a fresh seed, a Generator
    gives one number for it). With ``val_data``, the validation NLL is computed every
    ``val_every`` steps (and at the end); training stops after ``patience`` validations
    without improvement, and the parameters with the best validation NLL are restored
    before returning.

    Returns the history: per step ``step``, ``loss`` (train NLL of the batch), ``lr``; per
    validation ``val_step``, ``val_nll``; and ``best_step``, ``best_val_nll``, ``stopped``
    (why training ended early, else None), ``interrupted`` (False), ``wall_time``
    (seconds), and ``state``: the :class:`TrainingState` at the end (pop it before writing
    the history as JSON; ``state.save(path)`` writes it).

    ``optimizer`` defaults to ``optim.FlatAdam(model.parameters(), lr=lr)``: Adam, computed
    on one flat array of all parameters (the same numbers as ``optim.Adam``, the
    per-parameter textbook version; its update is about four times faster on a model of
    many small arrays).

    Before the first step, ``fit`` asks glibc's malloc to keep freed memory for reuse
    (``backend.keep_freed_memory``, whose docstring has the measured reason: up to a third
    of a large step's time). The setting is process-wide and stays after ``fit`` returns;
    set the environment variable ``MINFLOW_KEEP_FREED_MEMORY=0`` to keep glibc's defaults.

    ``resume=state`` continues a run from a TrainingState: it loads the state's last
    parameters into ``model`` and its optimizer state into the optimizer (a new FlatAdam,
    or ``optimizer``: Adam and FlatAdam read each other's states), and runs steps
    ``state.step + 1`` to ``steps`` — the *total*, so the learning-rate schedule is the
    uninterrupted run's — in the same data order. The data,
    ``batch_size`` and ``seed`` must be the run's (``seed=None`` takes the state's); the
    returned history continues the state's. A run interrupted at step k and resumed to S
    ends where an uninterrupted run of S steps does, to rounding.

    Raises ``NonFiniteLossError`` (``cause`` "data", "val_data", "context", "val_context" or "step") for NaN or
    infinite data or a diverging step, and ``TrainingInterrupted`` (a KeyboardInterrupt)
    after a first Ctrl-C: the step under way completes, the best parameters are restored,
    and the exception's ``history`` (``interrupted`` True, ``stopped`` "interrupted at step
    k") and ``state`` say where it stopped. A second Ctrl-C aborts at once with a plain
    ``KeyboardInterrupt``.
    """
    _check_options(steps, batch_size, lr, clip, val_every, patience)
    _check_trainable(model)
    data = _on_device(model, data, "data")
    val_data = _on_device(model, val_data, "val_data")
    xp = backend.array_module(data)
    n = data.shape[0]
    context = _context_on_device(model, context, n, "fit")
    if val_data is not None:
        val_context = _context_on_device(model, val_context, val_data.shape[0], "fit", "val_context")
    elif val_context is not None:
        raise ValueError("fit: val_context was given without val_data")
    batch_size = min(batch_size, n)
    if resume is not None:
        _check_resume(
            resume, "fit", steps, n_data=n, batch_size=batch_size, seed=None if seed is None else _data_seed(seed, xp)
        )
        seed = resume.seed
        try:
            model.load_state_dict(resume.parameters)
        except ValueError as error:
            raise ValueError(f"resume: the state does not fit the model: {error}") from None
    else:
        seed = _data_seed(seed, xp)
    # Non-finite data or contexts, found before the first step (one synchronisation for all).
    arrays = [
        (name, a)
        for name, a in zip(("data", "val_data", "context", "val_context"), (data, val_data, context, val_context))
        if a is not None
    ]
    counts = [_non_finite_rows(array) for _, array in arrays]
    for (name, array), bad in zip(arrays, backend.read_scalars(counts)):
        if bad:
            raise NonFiniteLossError(_non_finite_message(name, int(bad), array.shape[0]), _new_history(), cause=name)

    batches_per_epoch = n // batch_size
    epoch_order = {}

    def batch_for(k):
        epoch, index = divmod(k - 1, batches_per_epoch)
        if epoch not in epoch_order:  # a new epoch: its order depends on (seed, epoch) only
            epoch_order.clear()
            epoch_order[epoch] = xp.argsort(backend.rng([seed, epoch], xp).random(n))
        start = index * batch_size
        rows = epoch_order[epoch][start : start + batch_size]
        return data[rows] if context is None else (data[rows], context[rows])

    validate = None if val_data is None else (lambda: evaluate_nll(model, val_data, context=val_context))
    order = {"objective": "fit", "seed": seed, "batch_size": batch_size, "n_data": n}
    return _train_loop(
        model,
        batch_for,
        None if context is None else _conditional_nll,
        steps,
        lr,
        schedule,
        clip,
        optimizer,
        progress,
        "fit",
        validate=validate,
        val_every=val_every,
        patience=patience,
        resume=resume,
        order=order,
    )


def _conditional_nll(model, batch):
    """The loss of a conditional model on a minibatch of (x, context) rows."""
    x, context = batch
    return model.nll(x, context)


def reverse_kl(model, log_density, n, seed=None):
    """Monte-Carlo estimate of KL(q || p) + log Z from ``n`` model samples (a Tensor, differentiable).

    x = f^{-1}(z) with z ~ base; log q(x) = log p_Z(z) - log|det df^{-1}/dz| (the inverse's
    log-det is that of the generative direction, hence the minus).
    """
    z = Tensor(model.base.sample(n, seed=seed, dtype=model.float_dtype(), xp=model.array_module()))
    x, inverse_log_det = model.flow.inverse(z)
    log_q = model.base.log_prob(z) - inverse_log_det
    return ops.mean(log_q - log_density(x))


def fit_to_density(
    model,
    log_density,
    steps=2000,
    batch_size=256,
    lr=1e-3,
    schedule="constant",
    clip=None,
    optimizer=None,
    seed=0,
    progress=True,
):
    """Train ``model`` to approximate exp(log_density) by minimising the reverse KL.

    ``log_density(x)`` takes a Tensor (B, D) and returns a Tensor (B,), differentiable
    (e.g. ``minflow.data.log_density("u1")``). Returns the history as :func:`fit` does,
    with ``loss`` the KL estimate plus log Z (it goes down to -log Z), and stops on Ctrl-C
    and on a non-finite step as ``fit`` does. Its ``state`` records the parameters and the
    optimizer, but cannot be resumed: the base samples come from one random stream, whose
    state a CuPy Generator cannot export. Like ``fit``, it uses ``optim.FlatAdam`` unless
    given an ``optimizer`` and calls ``backend.keep_freed_memory()`` (opt out with
    ``MINFLOW_KEEP_FREED_MEMORY=0``).
    """
    _check_options(steps, batch_size, lr, clip, 1, None)
    _check_trainable(model)
    rng = backend.rng(seed, model.array_module())
    order = {"objective": "fit_to_density", "seed": None, "batch_size": batch_size, "n_data": None}
    return _train_loop(
        model,
        lambda k: batch_size,  # the "batch" of the reverse KL: how many base samples to draw
        lambda model, n: reverse_kl(model, log_density, n, seed=rng),
        steps,
        lr,
        schedule,
        clip,
        optimizer,
        progress,
        "fit_to_density",
        order=order,
    )


class TrainingState:
    """Everything needed to continue a :func:`fit` exactly where it stopped.

    ``step`` (steps done) of ``steps`` (the total that run aimed for); ``parameters`` (the
    model's :meth:`~minflow.nn.Module.state_dict` after the last step: the *last*
    parameters, not the best); ``optimizer`` (its ``state_dict()``); the data order
    (``seed``, ``batch_size``, ``n_data``: the next batch is at ``position`` of ``epoch``);
    the validation bookkeeping (``best_val_nll``, ``best_step``, ``bad_validations``,
    ``best_parameters``: names to arrays, or None); and the ``history`` so far.
    ``objective`` is "fit" (resumable) or "fit_to_density" (not).

    ``save(path)`` writes one ``.npz`` (atomically, no pickle): the arrays under
    ``parameters/NAME``, ``optimizer/KEY`` and ``best/NAME``, everything else as JSON in the
    0-d string array ``meta``, and the format version under ``__minflow_training_state__``.
    """

    VERSION = 1

    def __init__(
        self,
        *,
        objective,
        step,
        steps,
        parameters,
        optimizer,
        seed,
        batch_size,
        n_data,
        best_val_nll,
        best_step,
        bad_validations,
        best_parameters,
        history,
    ):
        self.objective, self.step, self.steps = objective, step, steps
        self.parameters, self.optimizer = parameters, optimizer
        self.seed, self.batch_size, self.n_data = seed, batch_size, n_data
        self.best_val_nll, self.best_step, self.bad_validations = best_val_nll, best_step, bad_validations
        self.best_parameters, self.history = best_parameters, history

    @property
    def epoch(self):
        """The epoch of the next step's minibatch (None for fit_to_density)."""
        return None if not self.n_data else self.step // (self.n_data // self.batch_size)

    @property
    def position(self):
        """Where the next minibatch starts in its epoch's order (None for fit_to_density)."""
        return None if not self.n_data else self.step % (self.n_data // self.batch_size) * self.batch_size

    def __repr__(self):
        return f"TrainingState({self.objective}, step {self.step} of {self.steps})"

    _META = (
        "objective",
        "step",
        "steps",
        "seed",
        "batch_size",
        "n_data",
        "best_val_nll",
        "best_step",
        "bad_validations",
        "history",
    )

    def save(self, path):
        """Write the state to one ``.npz`` file, atomically."""
        arrays = {TRAINING_STATE_KEY: self.VERSION}
        meta = {name: getattr(self, name) for name in self._META}
        meta["optimizer"] = {k: v for k, v in self.optimizer.items() if not backend.is_array(v)}
        meta["has_best"] = self.best_parameters is not None
        arrays["meta"] = json.dumps(meta, default=float)
        arrays.update({f"parameters/{k}": v for k, v in self.parameters.items()})
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.items() if backend.is_array(v)})
        arrays.update({f"best/{k}": v for k, v in (self.best_parameters or {}).items()})
        save_arrays(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a state written by :meth:`save` (host arrays); a missing, unreadable, corrupt
        or incompatible file raises a one-line ``ValueError`` naming it."""
        try:
            arrays = load_arrays(path)
        except OSError as error:
            raise ValueError(f"could not read training state {str(path)!r}: {error.strerror or error}") from None
        try:
            if TRAINING_STATE_KEY not in arrays:
                kind = "a model checkpoint (Module.save)" if FORMAT_KEY in arrays else "not a minflow file"
                raise ValueError(f"it is {kind}, not a training state")
            check_format(arrays.pop(TRAINING_STATE_KEY), cls.VERSION, "training state")
            meta = json.loads(str(arrays.pop("meta")))
            parts = {"parameters": {}, "optimizer": dict(meta.pop("optimizer")), "best": {}}
            for key, value in arrays.items():
                part, _, name = key.partition("/")
                parts[part][name] = value
            has_best = meta.pop("has_best")
            return cls(
                **meta,
                parameters=parts["parameters"],
                optimizer=parts["optimizer"],
                best_parameters=parts["best"] if has_best else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            reason = (
                str(error)
                if isinstance(error, ValueError)
                else f"it is incomplete or corrupt ({type(error).__name__}: {error})"
            )
            raise ValueError(f"training state {str(path)!r}: {reason}") from None
