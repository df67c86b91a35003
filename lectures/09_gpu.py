# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lecture 9 — The same code on a GPU
#
# *Optional: the same code on a GPU. No later lecture needs it.*
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 5 s; full about 30 s (most of it timing loops).*
#
# Every lecture so far ran on NumPy. minflow runs the *same* code on a GPU through CuPy, a
# library that copies NumPy's interface for CUDA arrays. This lecture shows how that works
# (it is two rules in one file), how to move data between host and device, and what a GPU
# does to the time of one training step — and why it does not always help.
#
# This lecture runs everywhere. If CuPy and a CUDA device are present it times both
# backends; otherwise (a laptop, the CI machine) it says so, times NumPy only and explains
# what a GPU would change. CuPy is never imported at the top: `import minflow` needs NumPy
# only, and so does this lecture. Run it as it is (NumPy is the default backend) or with
# `MINFLOW_BACKEND=cupy`: then everything it builds outside the timing loop lives on CuPy.
#
# Notation as before: $x$ data, $z = f(x)$ latent, $f$ the normalizing direction (minflow's
# `forward`), and the loss is the mean negative log-likelihood
# $-\frac1B\sum_b \big[\log p_Z(f(x_b)) + \log\lvert\det J_f(x_b)\rvert\big]$ of a batch of $B$ points.

# %% [markdown]
# One line comes before any import. NumPy's matrix products run on a BLAS library that starts
# one thread per core; on a small machine shared with other programs those threads fight for
# the cores and the timings become erratic. We pin BLAS to one thread (before NumPy is
# imported; `setdefault`, so your own setting wins): the timings then measure minflow, not
# the operating system's scheduler. Try the lecture without it on a busy machine.

# %%
import os

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import importlib.util
import inspect
import subprocess
import sys
import time
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, budget, check, show

import minflow
from minflow import backend, data, models, train
from minflow.autodiff import reverse_topological_order
from minflow.optim import FlatAdam


def gpu_available():
    """True when CuPy is installed *and* sees at least one CUDA device; never raises."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy  # imported here, lazily: the lecture must run where CuPy is absent

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy installed without a driver or a device raises CUDA errors
        return False


HAS_CUPY = importlib.util.find_spec("cupy") is not None
HAS_GPU = gpu_available()
DEFAULT_BACKEND = backend.backend_name()  # numpy, unless MINFLOW_BACKEND=cupy asked for CuPy
print(f"quick mode: {QUICK}; CuPy installed: {HAS_CUPY}; GPU present: {HAS_GPU}; default backend: {DEFAULT_BACKEND}")
if not HAS_GPU:
    print("No GPU here: this lecture times NumPy only and explains what a GPU would change.")

# %% [markdown]
# ## 1. Two rules: creation uses the default backend, ops follow their data
#
# Open `minflow/backend.py` and read its docstring. No compute module of minflow imports
# `numpy` or `cupy`; they ask `backend` for an array namespace `xp`:
#
# 1. **Creation uses the default backend.** New parameters, random numbers and data moved to
#    the device come from `backend.xp()`, chosen by `minflow.set_backend("cupy")` or by the
#    environment variable `MINFLOW_BACKEND=cupy` (read once, at import).
# 2. **Ops follow their data.** An op asks its inputs which namespace owns them,
#    `backend.array_module(*arrays)`, and computes there. So a model built on the GPU computes
#    on the GPU without any `if gpu:` in the flow's code.
#
# This is CuPy's and Chainer's idiom (`cupy.get_array_module`). Here is rule 2 on NumPy
# arrays, and rule 1 through the environment variable, in a fresh Python process:

# %%
x_host = np.linspace(-1.0, 1.0, 6).reshape(3, 2)
print("array_module(numpy array) is numpy:", backend.array_module(x_host) is np)
print("array_module(a number) is numpy:", backend.array_module(2.0) is np)  # numbers carry no namespace
print("default backend:", backend.backend_name())
assert backend.array_module(x_host) is np  # whatever the default backend: ops follow their data
# the default is NumPy, unless the environment variable asked for CuPy when minflow was imported
assert backend.backend_name() == (os.environ.get("MINFLOW_BACKEND", "").strip().lower() or "numpy")

probe = "import minflow; print(minflow.backend.backend_name())"
for value in ("numpy", "cupy"):
    env = dict(os.environ, MINFLOW_BACKEND=value)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    said = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
    print(f"MINFLOW_BACKEND={value}: {said}")
    if value == "numpy" or HAS_CUPY:  # choosing CuPy needs CuPy installed, not yet a device
        assert done.returncode == 0 and said == value
    else:  # without CuPy the import fails loudly, with the install hint: never a silent fallback to NumPy
        assert done.returncode != 0

# %% [markdown]
# Without CuPy, asking for it fails loudly and says what to install — it never quietly falls
# back to NumPy (you would think you were timing a GPU):

# %%
if not HAS_CUPY:
    try:
        minflow.set_backend("cupy")
    except ImportError as error:
        print("ImportError:", error)
        assert "minflow[gpu]" in str(error)
    assert backend.backend_name() == "numpy"  # the failed switch changed nothing

# %% [markdown]
# ## 2. Moving data: `to_device`, `to_numpy`, and what mixing does
#
# `backend.to_device(array)` copies a host array onto the default backend (a plain copy on
# NumPy); `backend.to_numpy(array_or_tensor)` copies anything back to the host. Both are
# **host ↔ device copies** over the PCIe bus, slow compared with GPU arithmetic: a training
# loop should copy the data set once (minflow's `train.fit` does, before its first step) and
# never per step.
#
# Mixing a NumPy and a CuPy array in one op is an error, not a silent copy:
# `array_module(numpy_array, cupy_array)` raises a `ValueError` that names the fix. (NumPy
# itself would raise a less helpful `TypeError`, and a silent copy would hide a slow
# transfer inside your training loop.)

# %%
moved = backend.to_device(x_host)
back = backend.to_numpy(minflow.Tensor(moved))
assert isinstance(back, np.ndarray) and np.array_equal(back, x_host)
mixing_message = "cannot mix NumPy and CuPy arrays in one operation"
assert mixing_message in inspect.getsource(backend.array_module)  # the error the text quotes
if HAS_GPU or DEFAULT_BACKEND == "cupy":  # CuPy arrays can be made here
    import cupy

    try:
        backend.array_module(x_host, cupy.asarray(x_host))
    except ValueError as error:
        print("ValueError:", error)
        assert mixing_message in str(error)
    else:
        raise AssertionError("mixing NumPy and CuPy should raise")
else:
    print(
        f"(no GPU: the mixing error, from minflow/backend.py, reads: {mixing_message!r}; "
        "move data with minflow.backend.to_device(...) or minflow.backend.to_numpy(...))"
    )

# %% [markdown]
# ## 3. One training step, timed
#
# A step is: forward through the flow, NLL, backward through the graph, Adam update: the four
# lines of `train.step(model, optimizer, batch)`, which `train.fit` runs in its loop. We time
# it for RealNVP (8 couplings, conditioners with two hidden layers of 64 units) at batch sizes
# from tiny to large. Three details matter for honest timings:
#
# - **Warm up** first: the first call allocates memory (and on a GPU compiles kernels).
# - **Keep freed memory**, as `train.fit` does: `backend.keep_freed_memory()` asks the C
#   allocator to reuse a step's freed arrays instead of handing them back to the OS, which
#   would make the next step page-fault them in again (a third of a large CPU step). It is a
#   process-wide setting, so minflow makes it only when asked, never at import.
# - **Synchronise** before stopping the clock. A GPU runs *asynchronously*: Python queues
#   kernels and moves on, so a loop can "finish" long before the GPU does. `float(x)`,
#   `x.item()` and `to_numpy(x)` wait for the device (they need the value), so we end every
#   measurement with one `to_numpy(loss)`. On NumPy this costs nothing.

# %%
LAYERS, HIDDEN = 8, 64
BATCHES = budget([16, 64, 256, 1024, 4096, 16384, 65536], [16, 128, 1024])
MIN_TIME = budget(0.5, 0.1)  # seconds of timed steps per batch size
backend.keep_freed_memory()  # we step by hand here, so we ask for what fit would


def make_step(seed=0):
    """A fresh RealNVP on the default backend and a function doing one Adam step on a batch."""
    model = models.realnvp(2, layers=LAYERS, hidden=HIDDEN, seed=seed)
    optimizer = FlatAdam(model.parameters(), lr=1e-3)  # the Adam that train.fit uses

    def step(batch):
        return train.step(model, optimizer, batch)  # zero_grad, NLL, backward, Adam update

    return model, step


def time_per_step(step, batch, min_time=MIN_TIME, min_repeats=3, windows=3):
    """Seconds per step: the best of ``windows`` averages, each over at least ``min_repeats``
    steps and ``min_time`` seconds (the best window is the one least disturbed by other programs)."""
    backend.to_numpy(step(batch).data)  # warm-up, then wait for it
    averages = []
    for _ in range(windows):
        repeats, started = 0, time.perf_counter()
        while repeats < min_repeats or time.perf_counter() - started < min_time / windows:
            loss = step(batch)
            repeats += 1
        backend.to_numpy(loss.data)  # synchronise: the device must finish before the clock stops
        averages.append((time.perf_counter() - started) / repeats)
    return min(averages)


host_points = data.moons(max(BATCHES), seed=0)
timings = {}
for name in ["numpy"] + (["cupy"] if HAS_GPU else []):  # CuPy is timed only on a real device
    minflow.set_backend(name)
    try:
        model, step = make_step()
        device_points = backend.to_device(host_points)  # copied once, not per step
        timings[name] = [time_per_step(step, device_points[:b]) for b in BATCHES]
    finally:
        minflow.set_backend(DEFAULT_BACKEND)  # back to the backend the lecture started with
    for b, t in zip(BATCHES, timings[name]):
        print(f"{name:5s}  batch {b:6d}: {1e3 * t:8.2f} ms/step  {b / t:12,.0f} samples/s")

# %%
# train.fit synchronises once per step: the loss and all its checks come back in one
# backend.read_scalars. Count the reads of a short fit (mock's wrapper counts, then calls the real one).
with mock.patch.object(backend, "read_scalars", wraps=backend.read_scalars) as read_scalars:
    train.fit(make_step()[0], host_points[:1024], steps=5, batch_size=256, progress=False)
assert read_scalars.call_count == 5 + 1, read_scalars.call_count  # one per step, and one for the data's finiteness

# %% [markdown]
# ## 4. What the numbers say
#
# Count the primitive ops in one step's graph: each is one NumPy call on the CPU, and one
# (or a few) **kernel launches** on a GPU. We walk the graph from the loss through each
# node's inputs with `minflow.autodiff.reverse_topological_order`, the walk that
# `backward` itself makes (read it in `minflow/autodiff/tensor.py`).


# %%
def count_ops(loss):
    """Number of distinct op nodes in the graph that produced ``loss`` (the leaves have none)."""
    return sum(tensor.node is not None for tensor in reverse_topological_order(loss))


model, _ = make_step()  # on the default backend
ops_per_forward = count_ops(model.nll(backend.to_device(host_points[:16])))
print(
    f"one forward + NLL builds {ops_per_forward} op nodes; backward runs about as many VJPs, "
    f"and FlatAdam updates all {len(model.parameters())} parameters at once, as one flat array "
    "(read `FlatAdam` in minflow/optim.py: a dozen array operations per step instead of a dozen per parameter)"
)
assert ops_per_forward > 100

numpy_times = np.array(timings["numpy"])
batches = np.array(BATCHES)
growth = numpy_times[-1] / numpy_times[0]
print(f"NumPy: {batches[-1] // batches[0]}x more samples cost {growth:.1f}x the time per step")
assert growth < batches[-1] / batches[0]  # sub-linear: part of a step's cost does not depend on B
throughput = batches / numpy_times
assert throughput[-1] > 2 * throughput[0]  # large batches use the machine far better
# a two-point model of the cost, t(B) = fixed + per_sample * B, from the two smallest batches
per_sample = (numpy_times[1] - numpy_times[0]) / (batches[1] - batches[0])
fixed = numpy_times[0] - per_sample * batches[0]
print(
    f"at batch {batches[0]} a step takes {1e3 * numpy_times[0]:.2f} ms, of which about "
    f"{100 * fixed / numpy_times[0]:.0f}% does not depend on B: "
    f"{1e6 * fixed / (2 * ops_per_forward):.1f} us per op (forward and backward) of pure overhead"
)
assert fixed / numpy_times[0] > 0.5  # at the smallest batch, overhead dominates

# %% [markdown]
# **On NumPy**, the time per step grows far more slowly than $B$ at small batches: a step
# costs a fixed amount per op (the Python of the autodiff engine, NumPy's dispatch) whatever
# $B$ is — more than half of the step at the smallest batch, as checked above — and only at
# large batches does the arithmetic, proportional to $B$, dominate: there the curve bends up
# towards slope 1 on the log-log plot.
#
# **On a GPU**, expect the same shape, more so:
#
# - *Small batches:* each op is a kernel launch costing a few microseconds of overhead before
#   any arithmetic happens, and the GPU's thousands of cores sit mostly idle on a batch of 16.
#   The step time is (number of ops) × (launch overhead + Python), so at small $B$ a GPU is
#   usually *no faster*, often slower, than NumPy. The floor is computed below for an
#   assumed launch cost.
# - *Large batches:* the arithmetic is spread over the cores, so the GPU's curve stays flat
#   far longer and its throughput (samples per second) ends up many times NumPy's. A 2-D flow
#   is about the smallest model there is; wider conditioners and images move the crossover
#   to smaller batches.
# - *Synchronisation and copies:* every `float(loss)` or `.item()` stalls Python until the GPU
#   has drained its queue, so the next kernels cannot be queued while the current ones run.
#   Once per step is tolerable; once per op is not. A copy of the data set to the device per
#   step can cost more than the step.

# %%
ASSUMED_LAUNCH_US = 5.0  # an assumption, typical of CUDA kernel launches; not measured here
floor_ms = 2 * ops_per_forward * ASSUMED_LAUNCH_US / 1e3
print(
    f"GPU floor per step if every op is one launch of {ASSUMED_LAUNCH_US:.0f} us: about {floor_ms:.1f} ms "
    f"(NumPy at batch {batches[0]}: {1e3 * numpy_times[0]:.1f} ms)"
)
if HAS_GPU:
    cupy_times = np.array(timings["cupy"])
    faster = batches[cupy_times < numpy_times]
    print("batch sizes where CuPy beats NumPy:", faster.tolist() if len(faster) else "none")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for name, times in timings.items():
    left.loglog(batches, 1e3 * np.array(times), "o-", label=name)
    right.loglog(batches, batches / np.array(times), "o-", label=name)
reference = 1e3 * numpy_times[-1] * batches / batches[-1]
left.loglog(batches, reference, "k:", label="slope 1 (cost proportional to B)")
left.set_xlabel("batch size B")
left.set_ylabel("ms per training step")
left.set_title("time per step (forward + NLL + backward + Adam)")
right.set_xlabel("batch size B")
right.set_ylabel("samples per second")
right.set_title("throughput")
for ax in (left, right):
    ax.legend(fontsize=8)
if not HAS_GPU:
    fig.suptitle("no GPU on this machine: NumPy only", fontsize=10)
show(fig, "09_time_per_step.png")

# %% [markdown]
# ## Exercises
#
# ### Exercise 9.1 — a backend-agnostic function
#
# Write `log_standard_normal(x)`: the log-density of $\mathcal N(0, I)$ at each row of a plain
# array `x` of shape $(B, D)$,
# $\log p(x) = -\tfrac12 \lvert x\rvert^2 - \tfrac D2 \log 2\pi$, returning an array of
# shape $(B,)$ **in the same namespace as `x`**. Do not use `np.` inside: get the namespace
# with `backend.array_module(x)`. It is checked against minflow's `StandardNormal` on NumPy
# arrays, and on arrays of the default backend (CuPy under `MINFLOW_BACKEND=cupy`): the same
# function runs on both unchanged.


# %% nbgrader={"grade": false, "grade_id": "ex9_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def log_standard_normal(x):
    ### BEGIN SOLUTION
    xp = backend.array_module(x)
    dim = x.shape[1]
    return -0.5 * xp.sum(x * x, axis=1) - 0.5 * dim * xp.log(2 * xp.pi)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex9_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
x_check = np.random.default_rng(0).standard_normal((5, 3))
reference = backend.to_numpy(minflow.StandardNormal((3,)).log_prob(x_check))
x_default = backend.to_device(x_check)  # the same points on the default backend


def log_standard_normal_is_right():
    mine = log_standard_normal(x_check)
    mine_default = log_standard_normal(x_default)
    source = inspect.getsource(log_standard_normal)
    same_namespace = mine_default is not None and backend.array_module(mine_default) is backend.array_module(x_default)
    return (
        isinstance(mine, np.ndarray)
        and mine.shape == (5,)
        and np.allclose(mine, reference)
        and same_namespace
        and np.allclose(backend.to_numpy(mine_default), reference)
        and "np." not in source
        and "numpy." not in source
    )


check(
    "Exercise 9.1",
    log_standard_normal_is_right,
    "xp = backend.array_module(x), then -0.5 * xp.sum(x * x, axis=1) - 0.5 * D * xp.log(2 * xp.pi)",
)

# %% [markdown]
# ### Exercise 9.2 — a loop that waits for the GPU once every $k$ steps
#
# This loop waits for the device on every step, at line 5: `float()` needs the loss on the
# host, so Python stops queueing kernels until the GPU has computed it.
#
# ```
# 1  for batch in batches:
# 2      optimizer.zero_grad()
# 3      loss = model.nll(batch)
# 4      loss.backward()
# 5      optimizer.step(); history.append(float(loss.data))
# ```
#
# Write `train_with_deferred_reads(model, optimizer, batches, every)`: one `train.step(model,
# optimizer, batch)` per batch (lines 2 to 5 without the `float`), the losses kept **on the
# device** (`loss.data`, a 0-d array), and brought to the host `every` steps at a time: stack
# the waiting ones with `xp.stack` (`xp = backend.array_module(loss.data)`) and copy them in one
# `backend.to_numpy`, so that 10 steps with `every=4` make 3 copies (4, 4 and the last 2). Return
# all the losses as one NumPy array. The check trains two identical models, one with the loop
# above, and counts your calls to `backend.to_numpy`. The price of the pattern: a NaN is noticed
# up to `every` steps late. (minflow's `train.fit` synchronises on every step, but only once,
# reading the loss and all its checks together, because it stops at the first NaN with the
# parameters of the last good step: the docstring of `minflow/train.py` explains it.)


# %% nbgrader={"grade": false, "grade_id": "ex9_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def train_with_deferred_reads(model, optimizer, batches, every):
    ### BEGIN SOLUTION
    losses, waiting = [], []
    for batch in batches:
        waiting.append(train.step(model, optimizer, batch).data)  # stays on the device
        if len(waiting) == every:
            xp = backend.array_module(waiting[0])
            losses.extend(backend.to_numpy(xp.stack(waiting)))  # one copy, one wait, for `every` steps
            waiting = []
    if waiting:
        xp = backend.array_module(waiting[0])
        losses.extend(backend.to_numpy(xp.stack(waiting)))
    return np.array(losses)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex9_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def deferred_reads_are_right():
    batches = [backend.to_device(host_points[i : i + 64]) for i in range(0, 640, 64)]  # 10 steps
    _, reference_step = make_step(seed=3)
    reference = np.array([float(reference_step(batch).data) for batch in batches])  # a wait per step
    model, _ = make_step(seed=3)  # the same initial parameters
    optimizer = FlatAdam(model.parameters(), lr=1e-3)
    with mock.patch.object(backend, "to_numpy", wraps=backend.to_numpy) as copies:
        losses = train_with_deferred_reads(model, optimizer, batches, every=4)
    source = inspect.getsource(train_with_deferred_reads)
    print(f"{copies.call_count} copies to the host for {len(batches)} steps")
    return (
        isinstance(losses, np.ndarray)
        and losses.shape == (10,)
        and np.allclose(losses, reference, rtol=1e-12)  # the same training, step for step
        and copies.call_count == 3
        and "float(" not in source
        and ".item(" not in source
    )


check(
    "Exercise 9.2",
    deferred_reads_are_right,
    "append train.step(...).data to a list; when it holds `every` losses, "
    "backend.to_numpy(xp.stack(list)) once and start a new list; after the loop, copy what is left",
)

# %% [markdown]
# ### Exercise 9.3 — a cost model for a step
#
# Section 4 modelled a step's time as $t(B) = t_0 + cB$ from the two smallest batches. Fit it to
# **all** the NumPy timings by least squares instead (the line minimising
# $\sum_k (t_0 + cB_k - t_k)^2$; `np.polyfit(B, t, 1)` returns $(c, t_0)$), and find the batch
# size $B^* = t_0 / c$ at which the fixed cost and the per-sample cost are equal: below it, a
# step is mostly overhead. `cost_model(batch_sizes, seconds_per_step)` returns
# `(fixed, per_sample, balanced_batch)`.


# %% nbgrader={"grade": false, "grade_id": "ex9_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cost_model(batch_sizes, seconds_per_step):
    ### BEGIN SOLUTION
    per_sample, fixed = np.polyfit(np.asarray(batch_sizes, float), np.asarray(seconds_per_step), 1)
    return fixed, per_sample, fixed / per_sample
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex9_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def cost_model_is_right():
    answer = cost_model(BATCHES, timings["numpy"])
    if answer is None:
        return False
    fixed_fit, per_sample_fit, balanced = answer
    design = np.stack([np.ones(len(batches)), batches], axis=1)  # the normal equations, solved another way
    expected = np.linalg.lstsq(design, numpy_times, rcond=None)[0]
    print(
        f"least squares: t(B) = {1e3 * fixed_fit:.3f} ms + {1e6 * per_sample_fit:.3f} us * B; "
        f"fixed and per-sample costs balance at B* = {balanced:,.0f}"
    )
    return np.allclose([fixed_fit, per_sample_fit], expected, rtol=1e-6) and np.isclose(
        fixed_fit + per_sample_fit * balanced, 2 * fixed_fit, rtol=1e-9
    )


check(
    "Exercise 9.3",
    cost_model_is_right,
    "np.polyfit(B, t, 1) returns the slope first, then the intercept: per_sample, fixed; B* = fixed / per_sample",
)

# %% [markdown]
# NumPy's throughput stops growing once the arithmetic dominates the step (look at the
# right panel); on a GPU, expect it to keep rising to much larger batches. The best batch for
# *throughput* is not the best batch for *training*, which is another question: more,
# noisier steps often beat fewer, exact ones at equal compute.

# %% [markdown]
# ## Summary
#
# * One code base runs on NumPy and CuPy by two rules: new arrays come from the default
#   backend (`set_backend`, or `MINFLOW_BACKEND` read at import), and every op computes where
#   its inputs live (`backend.array_module`). Asking for CuPy where it is not installed raises
#   an `ImportError` with the install hint; minflow never falls back to NumPy in silence.
# * Data crosses between host and device only through `to_device` and `to_numpy`, and mixing a
#   NumPy and a CuPy array in one op raises a `ValueError` that says so. Copy the data set to
#   the device once, not once per step.
# * An honest timing warms up, keeps freed memory as `train.fit` does, synchronises before it
#   stops the clock, and keeps the least disturbed of several windows.
# * Measured on NumPy above: a step's time grows more slowly than the batch, because at the
#   smallest batch more than half of it is a fixed cost per op (one forward pass alone builds
#   over a hundred), so the largest batch gets more than twice the smallest's throughput. On
#   a GPU that fixed cost becomes a kernel launch per op: expect it to lose at small batches
#   and win at large ones. This lecture measures that only where CuPy finds a device.
