"""minflow's other models, timed: MAF density and sampling, and a train step on the 8x8 digits.

Rows (minflow only; no peer implements these):

    MAF density    log p(x) of a batch under no_grad: one MADE pass per layer
    MAF sampling   x = f^{-1}(z) for a batch: D MADE passes per layer (the autoregressive
                   inverse), so its cost grows with D where the density's does not
    digits step    one train step (forward, NLL, backward, Adam) of the multi-scale image
                   model ``python -m minflow train --data digits`` builds (glow, hidden 64,
                   2 scales of 4 steps) on a batch of 64 dequantized digits in model space
    digits density / sampling   the same model, no_grad, a batch of 64

MAFs are ``models.maf(D, layers=5, hidden=64)``; their zero-initialised last layers are
moved off the identity with small random numbers so that every pass computes something
representative. The digits come with scikit-learn; without it the digits rows are skipped.
Each row: warm-up, then each call timed with time.perf_counter until ``--budget`` seconds
(between 10 and 200 calls); median, 10th and 90th percentile in ms.

Run: python benchmarks/minflow_models.py [--dtype float64] [--budget 2] [--batch 1024]
     [--dims 2 8] [--quick]
Not run by the test suite.
"""

import argparse
import functools
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402  (benchmarks are host-side scripts)

import minflow  # noqa: E402
from minflow import backend, data, models, no_grad, optim, train  # noqa: E402


def timed_ms(call, budget, min_calls=10, max_calls=200, warmup=3):
    """(median, p10, p90) in ms of ``call()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    started = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - started < budget):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    p10, median, p90 = np.percentile(1000 * np.asarray(times), [10, 50, 90])
    return median, p10, p90, len(times)


def off_identity(model, seed=1, scale=0.1):
    """The model with every parameter nudged by scale * N(0, 1), through the public state API."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for name, parameter in model.named_parameters():
        noise = scale * rng.standard_normal(parameter.shape)
        state[name] = state[name] + backend.to_device(noise, dtype=parameter.dtype)
    model.load_state_dict(state)
    return model


def maf_rows(dims, batch, budget):
    rows = []
    for dim in dims:
        model = off_identity(models.maf(dim, layers=5, hidden=64, depth=2, seed=0))
        x = backend.to_device(np.random.default_rng(0).standard_normal((batch, dim)), dtype=backend.get_default_dtype())
        name = f"MAF D={dim} (5 layers, H=64)"
        rows.append((name, "density", batch, *timed_ms(without_grad(model.log_prob, x), budget)))
        rows.append((name, "sampling", batch, *timed_ms(functools.partial(model.sample, batch, seed=0), budget)))
    return rows


def without_grad(function, *args):
    """A call of ``function(*args)`` under no_grad (no graph is recorded: inference)."""

    def call():
        with no_grad():
            return function(*args)

    return call


def digits_rows(batch, budget):
    try:
        splits = data.digits(seed=0)
    except ImportError as error:
        print(f"digits rows skipped: {error}")
        return []
    model = models.build("glow", tuple(splits.train.shape[1:]), seed=0, hidden=64)  # as the CLI builds it
    dtype = backend.get_default_dtype()
    images = [
        backend.to_device(splits.train[i : i + batch], dtype=dtype)
        for i in range(0, len(splits.train) - batch + 1, batch)
    ]
    optimizer = optim.FlatAdam(model.parameters(), lr=1e-3)  # the Adam that fit uses
    position = [0]

    def next_batch():
        position[0] += 1
        return images[position[0] % len(images)]

    def train_step():
        train.step(model, optimizer, next_batch())

    def density():
        with no_grad():
            return model.log_prob(next_batch())

    name = "digits glow (2 scales x 4 steps, H=64)"
    return [
        (name, "train step", batch, *timed_ms(train_step, budget)),  # its first call initialises ActNorm
        (name, "density", batch, *timed_ms(density, budget)),
        (name, "sampling", batch, *timed_ms(functools.partial(model.sample, batch, seed=0), budget)),
    ]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds of timed calls per row (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=1024, help="MAF batch size (default: %(default)s)")
    parser.add_argument("--digits-batch", type=int, default=64, help="digits batch size (default: %(default)s)")
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 8], help="MAF dimensions (default: 2 8)")
    parser.add_argument("--quick", action="store_true", help="a fraction of a second per row")
    args = parser.parse_args()
    budget = 0.2 if args.quick else args.budget
    backend.set_default_dtype(args.dtype)
    backend.keep_freed_memory()  # as fit does: glibc keeps freed memory (MINFLOW_KEEP_FREED_MEMORY=0 opts out)
    print(
        f"# minflow {minflow.__version__} models; {cpu_model()}, numpy {np.__version__}, "
        f"backend {backend.backend_name()}, {args.dtype}; median over calls after 3 warm-up calls"
    )
    rows = maf_rows(args.dims, args.batch, budget) + digits_rows(args.digits_batch, budget)
    print("| model | operation | batch | median ms | p10 ms | p90 ms | calls |")
    print("|---|---|---|---|---|---|---|")
    for model, operation, batch, median, p10, p90, calls in rows:
        print(f"| {model} | {operation} | {batch} | {median:.2f} | {p10:.2f} | {p90:.2f} | {calls} |")


if __name__ == "__main__":
    main()
