"""Memory of training: a step holds at most its own graph, and nothing survives into the next.

What is measured, and why these bounds:

- **Nothing survives a step.** Between steps the only tensors alive are the parameters and
  buffers: every Tensor and Node made during a step is gone once the loss is. We count
  them with the garbage collector (both are GC-tracked objects) and compare.
- **The peak of a step is bounded by its graph.** While the forward pass runs, the graph
  holds every array the VJPs need; backward then frees each node once it is used and
  adds cotangents, at most one per tensor still alive. So the peak stays below twice the
  bytes of the graph (arrays of every recorded tensor plus what each node saved, views
  counted at full size, so the bound is loose by design). ``tracemalloc`` sees NumPy's
  allocations, so it measures this directly.
- **No growth across steps.** The per-step peak late in training equals the one early on.
  (Retained bytes are not compared: NumPy keeps a bounded cache of freed small buffers,
  which fills slowly over the first ~1,000 steps; ``benchmarks/memory.py`` reports it.)
- **On a GPU**, the arrays live in CuPy's memory pool, which ``tracemalloc`` cannot see:
  there the pool's own counters say that nothing grows across steps (the ``gpu`` test).
  The strict CuPy stand-in computes with NumPy, so ``tracemalloc`` still sees every array
  of the CuPy code path, and the host bounds hold there too.
"""

import gc
import importlib.util
import tracemalloc

import numpy as np
import pytest
from helpers import device, on_cupy

from minflow import backend, models, optim, testing, train
from minflow.autodiff.tensor import Node, Tensor


def _real_cupy():
    """True when the default backend is CuPy itself (arrays on a device), not the strict stand-in."""
    if not on_cupy():
        return False
    import cupy

    return not getattr(cupy, "_strict_stand_in", False)


def _cupy_has_device():
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy without a driver or a device raises its CUDA runtime error (a RuntimeError)
        return False


def make_training(seed=0, batch=128):
    model = models.realnvp(2, layers=4, hidden=16, seed=seed)
    for p in model.parameters():  # non-zero last layers: every path of the graph is exercised
        p.data = p.data + backend.to_device(np.random.default_rng(seed).normal(0, 0.1, p.shape))
    optimizer = optim.FlatAdam(model.parameters(), lr=1e-3)  # the Adam that fit uses
    data = backend.to_device(np.random.default_rng(1).normal(size=(4096, 2)))

    def step(i):
        start = (i * batch) % (len(data) - batch)
        train.step(model, optimizer, data[start : start + batch])

    return model, optimizer, step


def live_graph_objects():
    gc.collect()
    tensors = sum(isinstance(o, Tensor) for o in gc.get_objects())
    nodes = sum(isinstance(o, Node) for o in gc.get_objects())
    return tensors, nodes


def test_nothing_made_during_a_step_survives_it():
    model, _, step = make_training()
    for i in range(5):
        step(i)
    before = live_graph_objects()
    for i in range(200):
        step(i)
    after = live_graph_objects()
    assert after == before, f"live (Tensors, Nodes) went from {before} to {after} over 200 steps"
    own = len(model.parameters()) + len(model.named_buffers())
    assert after[1] == 0, "no Node may outlive its step"
    assert after[0] >= own


@pytest.mark.skipif(
    _real_cupy(),
    reason="tracemalloc sees host memory only, not CuPy's device pool; "
    "test_cupy_memory_does_not_grow_across_steps measures the GPU",
)
def test_the_peak_of_a_step_is_bounded_by_its_graph_and_does_not_grow():
    model, optimizer, step = make_training()
    for i in range(5):
        step(i)
    x = device(np.random.default_rng(2).normal(size=(128, 2)))
    bound = 2 * testing.graph_nbytes(model.nll(x))
    peaks = []
    tracemalloc.start()
    try:
        for i in range(300):
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            step(i)
            peaks.append(tracemalloc.get_traced_memory()[1] - baseline)
    finally:
        tracemalloc.stop()
    early, late = max(peaks[:50]), max(peaks[-50:])
    assert early <= bound, f"a step peaked at {early} bytes, more than twice its graph ({bound // 2})"
    # Same batch size, same graph: the late peak may differ only by allocator noise, a few
    # small arrays (4 KiB), never by a step's worth of arrays (~100 KiB here).
    assert late <= early + 4096, f"the step's peak grew from {early} to {late} bytes"


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_has_device(), reason="needs CuPy and a CUDA device (the memory pool is on the device)")
def test_cupy_memory_does_not_grow_across_steps():
    import cupy

    previous = backend.backend_name()
    backend.set_backend("cupy")
    try:
        _, _, step = make_training()
        pool = cupy.get_default_memory_pool()
        for i in range(20):
            step(i)
        cupy.cuda.Device().synchronize()
        used_early, held_early = pool.used_bytes(), pool.total_bytes()
        for i in range(1000):
            step(i)
        cupy.cuda.Device().synchronize()
        # Between steps only the parameters, their gradients and Adam's state are in use;
        # the pool keeps freed blocks for reuse, and with the same shapes every step it
        # needs no new ones.
        assert pool.used_bytes() == used_early
        assert pool.total_bytes() == held_early
    finally:
        backend.set_backend(previous)
