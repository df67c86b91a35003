"""minflow's step against the hand-written NumPy floor, timed in pairs inside one process.

Why a second measurement. ``train_step.py`` runs every peer in a process of its own, one
after the other. On a shared machine whose speed drifts by tens of percent over minutes,
two processes measured a minute apart can differ by more than the 1.3x we want to resolve.
Here minflow and the floor take turns, step by step, in the same process: each pair of
steps sees the same machine, the same allocator settings and the same BLAS threads, so the
ratio of their medians is steady even when the absolute times are not. (Both peers are the
ones of ``train_step.py``, with the same parameters and batches; ``train_step.py --check``
verifies that they compute the same loss, gradients and Adam steps.)

Run: python benchmarks/paired_floor.py [--batch 64 512] [--hidden 64] [--dtype float32 float64] [--steps 600]
Not run by the test suite.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from realnvp_peers import minflow_peer, numpy_floor, shared  # noqa: E402

from minflow import backend  # noqa: E402

WARMUP = 50


def paired_times(batch, hidden, dtype, steps):
    """(floor seconds, minflow seconds) per step, the two taking turns on the same batches."""
    params = shared.initial_parameters(hidden)
    floor, engine = numpy_floor.Peer(params, dtype), minflow_peer.Peer(params, dtype)
    batches = shared.batches(batch)
    floor_data = [floor.prepare(x) for x in batches]
    engine_data = [engine.prepare(x) for x in batches]
    floor_times, engine_times = [], []
    for j in range(WARMUP + steps):
        i = j % len(batches)
        start = time.perf_counter()
        floor.step(floor_data[i])
        middle = time.perf_counter()
        engine.step(engine_data[i])
        end = time.perf_counter()
        if j >= WARMUP:
            floor_times.append(middle - start)
            engine_times.append(end - middle)
    return np.asarray(floor_times), np.asarray(engine_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 512])
    parser.add_argument("--hidden", nargs="+", type=int, default=[64])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    backend.keep_freed_memory()  # one process, so the floor shares it (MINFLOW_KEEP_FREED_MEMORY=0 opts out)
    print("| dtype | B | H | floor ms | minflow ms | minflow / floor (median of per-pair ratios) |")
    print("|---|---|---|---|---|---|")
    for dtype in args.dtype:
        for batch in args.batch:
            for hidden in args.hidden:
                floor, engine = paired_times(batch, hidden, dtype, args.steps)
                ratio = np.median(engine / floor)
                print(
                    f"| {dtype} | {batch} | {hidden} | {1e3 * np.median(floor):.2f} | "
                    f"{1e3 * np.median(engine):.2f} | {ratio:.2f} |",
                    flush=True,
                )
    print(f"\n{args.steps} pairs of steps after {WARMUP} warm-up pairs, in one process")


if __name__ == "__main__":
    main()
