"""Planar, radial and RealNVP flows fitted to the energies U1-U4 by reverse KL.

The experiment of Rezende & Mohamed (2015), figure 3: fit q_theta to p(x) ~ exp(-U(x)) by
minimising KL(q || p) (``minflow.train.fit_to_density``), for three models:

    planar   16 Planar layers            (minflow/flows/planar.py)
    radial   16 Radial layers
    realnvp  minflow.models.realnvp(2, layers=8, hidden=64)

Prints, for each energy and model, the final loss (mean of the last 200 steps of
history["loss"], an estimate of KL(q || p) - log Z, so lower is better and -log Z is the
floor) and the wall time, and saves the target density with 2,000 model samples drawn
over it to <out>/<energy>_<model>.png.

Run: python benchmarks/planar_energies.py [--steps 3000] [--batch 256] [--lr 1e-3]
     [--energies u1 u2 u3 u4] [--models planar radial realnvp] [--out /tmp/energies]
Not run by the test suite.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minflow  # noqa: E402
from minflow import backend, data, models, plot, train  # noqa: E402
from minflow.flows.planar import Planar, Radial  # noqa: E402


def stack(cls, layers, seed):
    rng = backend.rng(seed)
    return minflow.NormalizingFlow(minflow.Sequential([cls(2, seed=rng) for _ in range(layers)]))


BUILDERS = {
    "planar": lambda seed: stack(Planar, 16, seed),
    "radial": lambda seed: stack(Radial, 16, seed),
    "realnvp": lambda seed: models.realnvp(2, layers=8, hidden=64, seed=seed),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--energies", nargs="+", default=["u1", "u2", "u3", "u4"])
    parser.add_argument("--models", nargs="+", default=list(BUILDERS))
    parser.add_argument("--out", default="/tmp/energies")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backend.keep_freed_memory()  # fit_to_density asks for it too; MINFLOW_KEEP_FREED_MEMORY=0 opts out
    os.makedirs(args.out, exist_ok=True)
    print(f"steps {args.steps}, batch {args.batch}, lr {args.lr}, backend {backend.backend_name()}")
    print(f"{'energy':8s}{'model':10s}{'final loss':>12s}{'wall (s)':>10s}")
    for energy in args.energies:
        log_density = data.log_density(energy)
        for name in args.models:
            model = BUILDERS[name](args.seed)
            started = time.perf_counter()
            history = train.fit_to_density(
                model,
                log_density,
                steps=args.steps,
                batch_size=args.batch,
                lr=args.lr,
                seed=args.seed + 100,
                progress=False,
            )
            wall = time.perf_counter() - started
            tail = history["loss"][-200:]
            final = sum(tail) / len(tail)
            samples = backend.to_numpy(model.sample(2000, seed=0))
            plot.energy(log_density, samples=samples, path=os.path.join(args.out, f"{energy}_{name}.png"))
            print(f"{energy:8s}{name:10s}{final:12.4f}{wall:10.1f}", flush=True)


if __name__ == "__main__":
    main()
