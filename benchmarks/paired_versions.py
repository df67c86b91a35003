"""This checkout's minflow against an older revision of it, timed in pairs inside one process.

Why. A refactoring must not make minflow slower, and "slower by more than 5%" cannot be seen
by running two versions a minute apart on a machine whose speed drifts by tens of percent
(see RESULTS.md). Here both versions live in one process and take turns, call by call, on the
same inputs, as ``paired_floor.py`` does for minflow and the floor: the ratio of the two is
steady even when the absolute times are not.

How two versions share a process. ``git archive REV minflow`` extracts the old package into a
temporary folder under another name (``minflow_REV``). minflow imports itself only with
relative imports (``from . import backend``), so the copy is a complete, independent package:
its own backend state, its own ops. Both see the same allocator settings and BLAS threads.

Rows (each: both versions built from the same parameters, checked to agree, then timed):

    step      one RealNVP train step as ``fit`` takes it (forward, NLL, backward, the Adam that
              ``fit`` uses), the model of ``train_step.py``, over its grid of dtype, B and H
    maf       MAF (``models.maf(8)``) log-density of a batch of 1,024, no_grad
    sample    MAF sampling of 1,024 points (the autoregressive inverse), no_grad
    digits    one train step of the digits model (``models.glow``, hidden 64), batch 64

Output: a table of median ms per version and the median over pairs of new / old (below 1.05
means "within 5%").

Run: python benchmarks/paired_versions.py --against REV [--rows step maf sample digits]
     [--batch 64 512 4096] [--hidden 64 256] [--dtype float32 float64] [--pairs 300]
Not run by the test suite.
"""

import argparse
import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from realnvp_peers import shared  # noqa: E402

import minflow  # noqa: E402

WARMUP = 20


def import_revision(revision):
    """The package ``minflow`` as it was at git ``revision``, imported as ``minflow_<revision>``."""
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", revision, "minflow"], check=True, capture_output=True
    ).stdout
    folder = tempfile.mkdtemp(prefix="minflow-paired-")
    name = "minflow_" + "".join(c if c.isalnum() else "_" for c in revision)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    os.rename(os.path.join(folder, "minflow"), os.path.join(folder, name))
    sys.path.insert(0, folder)
    return importlib.import_module(name)


def submodule(package, name):
    return importlib.import_module(f"{package.__name__}.{name}")


def fit_optimizer(package, parameters):
    """The Adam that ``fit`` uses: ``FlatAdam`` where it exists, else ``Adam`` (flat until then)."""
    optim = submodule(package, "optim")
    return getattr(optim, "FlatAdam", optim.Adam)(parameters, lr=shared.LR, betas=shared.BETAS, eps=shared.EPS)


def keep_freed_memory(package):
    """Ask for the allocator setting explicitly (older versions did it at import; it is process-wide)."""
    submodule(package, "backend").keep_freed_memory()


def train_step(package, model, optimizer, x):
    """One step as ``fit`` takes it: ``train.step`` where it exists, else its four lines."""
    train = submodule(package, "train")
    if hasattr(train, "step"):
        return train.step(model, optimizer, x)
    optimizer.zero_grad()
    loss = model.nll(x)
    loss.backward()
    optimizer.step()
    return loss


def same_parameters(model, reference):
    """Copy ``reference``'s parameters into ``model`` in order (names may differ between versions)."""
    mine, theirs = model.parameters(), reference.parameters()
    if [p.shape for p in mine] != [p.shape for p in theirs]:
        raise SystemExit("the two versions build models with different parameter shapes: not comparable")
    for p, q in zip(mine, theirs):
        p.data = q.data.copy()


def step_pair(package, batch, hidden, dtype):
    """A callable doing one RealNVP train step on the next batch, and the model it trains."""
    backend, models = submodule(package, "backend"), submodule(package, "models")
    backend.set_default_dtype(dtype)
    model = models.realnvp(2, layers=shared.LAYERS, hidden=hidden, depth=2, scale_bound=shared.SCALE_BOUND, seed=0)
    optimizer = fit_optimizer(package, model.parameters())
    batches = [backend.to_device(x, dtype=dtype) for x in shared.batches(batch)]
    count = [0]

    def one_step():
        x = batches[count[0] % len(batches)]
        count[0] += 1
        return train_step(package, model, optimizer, x)

    return one_step, model


def no_grad_pair(package, kind, dtype):
    """A callable computing a MAF density or MAF samples (``kind``), and the model."""
    backend, models = submodule(package, "backend"), submodule(package, "models")
    backend.set_default_dtype(dtype)
    model = models.maf(8, layers=5, hidden=64, seed=0)
    rng = np.random.default_rng(1)
    for _, parameter in model.named_parameters():  # off the identity: every pass computes something
        parameter.data = parameter.data + backend.to_device(0.1 * rng.standard_normal(parameter.shape), dtype=dtype)
    x = backend.to_device(rng.standard_normal((1024, 8)), dtype=dtype)

    def call():
        with package.no_grad():
            return model.log_prob(x) if kind == "maf" else model.sample(1024, seed=0)

    return call, model


def digits_pair(package, dtype):
    backend, models, data = (submodule(package, name) for name in ("backend", "models", "data"))
    backend.set_default_dtype(dtype)
    model = models.glow((1, 8, 8), scales=2, steps_per_scale=4, hidden=64, seed=0)
    optimizer = fit_optimizer(package, model.parameters())
    splits = data.digits(seed=0)
    x = backend.to_device(np.asarray(backend.to_numpy(splits.train))[:64], dtype=dtype)
    return lambda: train_step(package, model, optimizer, x), model


def paired(new_call, old_call, pairs):
    """Per-pair times (seconds) of the two callables, alternating which goes first."""
    new_times, old_times = [], []
    for j in range(WARMUP + pairs):
        order = ((new_call, new_times), (old_call, old_times))
        for call, times in order if j % 2 else order[::-1]:
            start = time.perf_counter()
            call()
            if j >= WARMUP:
                times.append(time.perf_counter() - start)
    return np.asarray(new_times), np.asarray(old_times)


def check_agree(new_value, old_value, label):
    """Both versions computed the same numbers (so the timing compares like with like)."""
    a, b = (np.asarray(minflow.to_numpy(getattr(value, "data", value))) for value in (new_value, old_value))
    scale = 1 + np.abs(b).max()
    if not np.abs(a - b).max() <= 1e-5 * scale:
        raise SystemExit(f"{label}: the two versions disagree (max difference {np.abs(a - b).max():.3g})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare with (e.g. a commit)")
    parser.add_argument("--rows", nargs="+", default=["step", "maf", "sample", "digits"])
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 512, 4096])
    parser.add_argument("--hidden", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()

    old = import_revision(args.against)
    keep_freed_memory(minflow)
    keep_freed_memory(old)
    print(f"new: this checkout; old: {args.against}; {args.pairs} pairs after {WARMUP} warm-up pairs, one process")
    print("| row | dtype | B | H | new ms | old ms | new / old (median of per-pair ratios) |")
    print("|---|---|---|---|---|---|---|")
    cases = []
    for dtype in args.dtype:
        if "step" in args.rows:
            for batch in args.batch:
                for hidden in args.hidden:
                    cases.append(
                        ("step", dtype, batch, hidden, lambda p, b=batch, h=hidden, d=dtype: step_pair(p, b, h, d))
                    )
        for kind in ("maf", "sample"):
            if kind in args.rows:
                cases.append((kind, dtype, 1024, 64, lambda p, k=kind, d=dtype: no_grad_pair(p, k, d)))
        if "digits" in args.rows:
            cases.append(("digits", dtype, 64, 64, lambda p, d=dtype: digits_pair(p, d)))
    for row, dtype, batch, hidden, make in cases:
        (new_call, new_model), (old_call, old_model) = make(minflow), make(old)
        same_parameters(new_model, old_model)
        first_new, first_old = new_call(), old_call()
        check_agree(first_new, first_old, f"{row} {dtype} B={batch} H={hidden}")
        new_times, old_times = paired(new_call, old_call, args.pairs)
        ratio = np.median(new_times / old_times)
        print(
            f"| {row} | {dtype} | {batch} | {hidden} | {1e3 * np.median(new_times):.2f} | "
            f"{1e3 * np.median(old_times):.2f} | {ratio:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
