"""The cost asymmetry of autoregressive flows, measured.

For D in {2, 8, 32, 64} and a batch of 1,024, one layer each (conditioner: two hidden
layers of 64 units), time under no_grad:

    MAF density  (forward: one MADE pass)        MAF sampling (inverse: D MADE passes)
    IAF density  (forward: D passes)             IAF sampling (inverse: one pass)
    affine coupling, both ways (one conditioner pass each)

Run: python benchmarks/autoregressive_cost.py [--repeats 20]. Prints a table in ms
(median over repeats, after a warm-up call). Not run by the test suite.
"""

import argparse
import os
import platform
import sys
import time
from functools import partial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402  (benchmarks are host-side scripts)

from minflow import backend, no_grad  # noqa: E402
from minflow.flows.autoregressive import InverseAutoregressive, MaskedAutoregressive  # noqa: E402
from minflow.flows.coupling import AffineCoupling, half_mask  # noqa: E402


def randomised(flow, seed):
    rng = np.random.default_rng(seed)
    for p in flow.parameters():  # away from the identity start: every pass does real work
        p.data = p.data + backend.to_device(0.1 * rng.standard_normal(p.shape))
    return flow


def median_ms(function, repeats):
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    backend.keep_freed_memory()  # as training does: glibc keeps freed memory (MINFLOW_KEEP_FREED_MEMORY=0 opts out)
    print(
        f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, backend {backend.backend_name()}, "
        f"batch {args.batch}, median of {args.repeats} (ms)"
    )
    columns = ["D", "MAF density", "MAF sampling", "IAF density", "IAF sampling", "coupling fwd", "coupling inv"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for dim in (2, 8, 32, 64):
        x = backend.to_device(np.random.default_rng(0).standard_normal((args.batch, dim)))
        maf = randomised(MaskedAutoregressive(dim, hidden=(64, 64), seed=0), 1)
        iaf = randomised(InverseAutoregressive(dim, hidden=(64, 64), seed=0), 1)
        coupling = randomised(AffineCoupling(half_mask(dim), hidden=(64, 64), seed=0), 1)
        with no_grad():
            row = [
                median_ms(partial(maf.forward, x), args.repeats),
                median_ms(partial(maf.inverse, x), args.repeats),
                median_ms(partial(iaf.forward, x), args.repeats),
                median_ms(partial(iaf.inverse, x), args.repeats),
                median_ms(partial(coupling.forward, x), args.repeats),
                median_ms(partial(coupling.inverse, x), args.repeats),
            ]
        print(f"| {dim} | " + " | ".join(f"{t:.2f}" for t in row) + " |")


if __name__ == "__main__":
    main()
