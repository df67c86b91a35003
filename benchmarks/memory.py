"""Memory of a RealNVP train step over 1,000 steps: its peak, against the size of its graph.

A train step builds the graph of one forward pass, walks it backwards (freeing each node
once used) and updates the parameters. So the step's peak memory should be about the
graph's size, and nothing should remain from one step to the next. This script measures
both, for the model of ``train_step.py`` (8 affine couplings, hidden H, 2-D data):

- NumPy: ``tracemalloc`` sees every NumPy allocation. Per step: the peak above the memory
  in use before the step (``reset_peak``), and the memory in use after it.
- CuPy (``--backend cupy``, on a machine with a GPU): the memory pool's bytes in use after
  each step and the bytes it holds (freed blocks are kept for reuse), synchronised.

"graph" is the bytes of every array in one step's graph: the data of each recorded tensor
plus what each node saved for its VJP (views counted at full size, so it overestimates).
NumPy keeps a small cache of freed buffers of < 1 KiB, so "in use after the step" creeps up
by a few tens of KiB over the first ~1,000 steps and then stays flat; that is NumPy's
cache, bounded by design, not the graph.

Run: python benchmarks/memory.py [--batch 512] [--hidden 64] [--steps 1000] [--backend numpy|cupy]
Not run by the test suite (tests/test_memory.py checks the same properties, smaller).
"""

import argparse
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from minflow import backend, models, optim, testing, train  # noqa: E402

KIB = 1024


def make_training(batch, hidden, dtype):
    backend.set_default_dtype(dtype)
    model = models.realnvp(2, layers=8, hidden=hidden, seed=0)
    optimizer = optim.FlatAdam(model.parameters(), lr=1e-3)  # the Adam that fit uses
    data = backend.to_device(np.random.default_rng(0).normal(size=(32 * batch, 2)), dtype=dtype)

    def step(i):
        start = (i * batch) % (len(data) - batch)
        train.step(model, optimizer, data[start : start + batch])

    def one_graph():
        return testing.graph_nbytes(model.nll(data[:batch]))

    return step, one_graph


def measure_numpy(step, steps):
    peaks, in_use = [], []
    tracemalloc.start()
    for i in range(steps):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        step(i)
        current, peak = tracemalloc.get_traced_memory()
        peaks.append(peak - before)
        in_use.append(current)
    tracemalloc.stop()
    return peaks, in_use


def measure_cupy(step, steps):
    import cupy

    pool, used, held = cupy.get_default_memory_pool(), [], []
    for i in range(steps):
        step(i)
        cupy.cuda.Device().synchronize()
        used.append(pool.used_bytes())
        held.append(pool.total_bytes())
    return used, held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    args = parser.parse_args()
    if args.steps < 200:
        parser.error("--steps must be at least 200 (the first and the last 100 steps are compared)")
    backend.set_backend(args.backend)
    backend.keep_freed_memory()  # as fit does: glibc keeps freed memory (MINFLOW_KEEP_FREED_MEMORY=0 opts out)
    step, one_graph = make_training(args.batch, args.hidden, args.dtype)
    graph = one_graph()
    print(f"RealNVP, 8 couplings, B={args.batch}, H={args.hidden}, {args.dtype}, {args.backend}, {args.steps} steps")
    print(f"one step's graph: {graph / KIB:.0f} KiB")
    if args.backend == "numpy":
        peaks, in_use = measure_numpy(step, args.steps)
        print(
            f"step peak (above the memory in use before it): first 100 steps max {max(peaks[:100]) / KIB:.0f} KiB, "
            f"last 100 max {max(peaks[-100:]) / KIB:.0f} KiB  ({max(peaks) / graph:.2f} x the graph)"
        )
        print(
            f"in use after step 10: {in_use[10] / KIB:.0f} KiB, after step 100: {in_use[100] / KIB:.0f} KiB, "
            f"after step {args.steps}: {in_use[-1] / KIB:.0f} KiB"
        )
    else:
        used, held = measure_cupy(step, args.steps)
        print(
            f"pool bytes in use after step 10 / 100 / {args.steps}: "
            f"{used[10] / KIB:.0f} / {used[100] / KIB:.0f} / {used[-1] / KIB:.0f} KiB"
        )
        print(
            f"pool bytes held after step 10 / 100 / {args.steps}: "
            f"{held[10] / KIB:.0f} / {held[100] / KIB:.0f} / {held[-1] / KIB:.0f} KiB"
        )


if __name__ == "__main__":
    main()
