"""The gap, measured: the mass three models put between the modes of lecture 8's two data sets.

Lecture 8 shows that a flow with a standard-normal base cannot tear space: trained on data in
two separate pieces, it keeps a bridge of mass in the gap between them. This script puts two
remedies beside it, at equal parameter count and training budget:

    standard   RealNVP, base N(0, I)                    models.realnvp(2, layers, hidden)
    mixture    the same RealNVP, base a 2-component     NormalizingFlow(flow, base=
               Gaussian mixture with learnable weights,   distributions.GaussianMixture(2, 2))
               means and scales (Izmailov et al. 2020)
    cif        a continuously indexed flow over the     cif.cif_realnvp(2, layers, hidden',
               same couplings (Cornish et al. 2020)       index_hidden), trained on the ELBO

The two settings and their gaps are lecture 8's (sections 1 and 2), replicated here, since
they live in the lecture and not in minflow:

    two Gaussians  0.5 N((-2, 0), 0.35^2 I) + 0.5 N((2, 0), 0.35^2 I), trained on raw points;
                   gap: the band |x1| < 0.6. The data's gap mass is exact (erf): 3.17e-5.
    two moons      minflow.data.toy_data("moons", 10,000 / 500 / 500, seed 0), trained
                   standardised; gap: points more than 0.25 (5 noise sds) from both arcs, in
                   the original units. The data's mass there, from 2,000,000 points (seed 1),
                   is below the bound exp(-12.5) = 3.7e-6.

For each model, setting and seed: train with ``train.fit`` exactly as the lecture's
``train_flow`` does (Adam, cosine schedule, batch 256, lr 3e-3, the same steps and seed for
all three); the gap mass is the fraction of ``--samples`` model samples that land in the gap,
with its binomial standard error sqrt(m (1 - m) / N) (floored at 1/N, as the lecture does);
the test NLL is on 2,000 fresh points (seed 2), in nats of the original units. For the flows it
is exact (its +- is the test set's standard error, shared by all three models: the test points
are the same). For the CIF it is minus the importance-weighted estimate L_K (``log_prob_estimate``,
K draws, ``--repeats`` repeats); its +- is the Monte-Carlo error of that estimate, not its bias
(L_K <= log p in expectation, so the CIF's NLL is if anything overstated). Across seeds the table
gives mean +- sd.

Parameter counts (L = 8 couplings, conditioner 1 -> H -> H -> 2):
    standard  RealNVP, H = 32                                                      9,488
    mixture   the same flow, + 10 for the base (2 logits, 2x2 means, 2x2 log-scales)  9,498
    cif       couplings H = 22; index networks (s, t; p(u | z); q(u | x)) of 11 units,
              u of size 1                                                          9,408
(cif_realnvp's hidden and index_hidden are chosen to bring its count within 1% of RealNVP's.)
For a mixture the script also prints how far apart its latent means ended, in units of the
mean scale: the quantity that decides whether the base is bimodal at all.

Run: python benchmarks/gap.py [--layers 8] [--steps 1500] [--seeds 0 1 2] [--samples 400000]
     [--models standard mixture cif] [--components 2] [--spread 1.0] [--k 50] [--repeats 4]
     [--figure /tmp/gap/gap.png]
Not run by the test suite. Prints a markdown table and writes the figure (log-histograms of
the first seed's samples, one panel per model and setting, the gap's edge dotted) to ``--figure``.

Measured on 2026-12-02 at 5c4ee70 (2-core CPU shared with other work, NumPy float64): the
defaults take 2-4 minutes (113 s and 222 s in two runs); ``--seeds 0 1 2 3 4`` 375 s, which
gave (gap mass mean +- sd over the 5 seeds; every seed's +- binomial s.e. is <= 3e-4; the
data's gap mass is 3.2e-5 for the two Gaussians, below 3.7e-6 for the moons):

    setting        model                        gap mass               test NLL (nats)
    two Gaussians  RealNVP, N(0, I) base        7.1e-3 +- 3.6e-3       1.449 +- 0.011
                   RealNVP, mixture base        4.9e-3 +- 5.8e-3       1.447 +- 0.015
                   CIF                          6.9e-3 +- 2.3e-3       1.450 +- 0.008
    two moons      RealNVP, N(0, I) base        7.3e-3 +- 1.8e-3       0.339 +- 0.016
                   RealNVP, mixture base        1.0e-2 +- 9.0e-3       0.348 +- 0.038
                   CIF                          1.6e-2 +- 9.7e-3       0.359 +- 0.041

At the defaults no model closes the gap (each leaves 40 to 480 times the data's mass in the
two Gaussians' gap); the spread between seeds is as large as the differences between models;
a mixture base leaks least when its latent means end far apart, which training seldom brings
about (``--models mixture --spread 3``, 57 s, starts them apart: 3.4e-3 +- 2.5e-3 on the two
Gaussians, down to 6.8e-5 for a run whose means ended 9.7 scales apart). Every seed's numbers
are in benchmarks/RESULTS.md, section "The gap between modes".
"""

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from minflow import backend, cif, data, models, no_grad, train  # noqa: E402
from minflow.distributions import GaussianMixture  # noqa: E402

# --- lecture 8's two settings (lectures/08_expressivity.py, sections 1 and 2, replicated) -------
CENTRE, SIGMA, GAP = 2.0, 0.35, 0.6  # centres (+-CENTRE, 0), std SIGMA, gap band |x1| < GAP
MOON_NOISE, MOON_GAP = 0.05, 0.25


def two_gaussians(n, seed):
    """n points of 0.5 N((-2, 0), s^2 I) + 0.5 N((2, 0), s^2 I), s = SIGMA."""
    rng = np.random.default_rng(seed)
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return np.stack([CENTRE * side, np.zeros(n)], axis=1) + SIGMA * rng.standard_normal((n, 2))


def in_gap(x):
    return np.abs(x[:, 0]) < GAP


def off_moons(x):
    """True where x (original units) is more than MOON_GAP from both moons' arcs."""
    return data.distance_to_moons(x) > MOON_GAP


def gauss_gap_exact():
    """P(|x1| < GAP) under the two Gaussians (lecture 8, exercise 8.1): one component's band mass."""
    Phi = statistics.NormalDist().cdf
    return Phi((GAP - CENTRE) / SIGMA) - Phi((-GAP - CENTRE) / SIGMA)


def settings(n_test):
    """The two settings: training points (model units), test points and gap (original units),
    the maps between the units and the data's own gap mass."""
    identity = lambda x: x  # noqa: E731
    moons = data.toy_data("moons", n_train=10_000, n_val=500, n_test=500, seed=0)  # the lecture's call
    reference = data.moons(2_000_000, seed=1, noise=MOON_NOISE)
    moon_gap = off_moons(reference).mean()
    bound = math.exp(-((MOON_GAP / MOON_NOISE) ** 2) / 2)  # lecture 8: a 5-sigma tail of a 2-D Gaussian
    return [
        {
            "name": "two Gaussians",
            "train": two_gaussians(10_000, seed=0),
            "test": two_gaussians(n_test, seed=2),
            "to_model": identity,
            "to_data": identity,
            "log_det": 0.0,  # log p(original units) = log p(model units) + log_det
            "region": in_gap,
            "data_gap": (gauss_gap_exact(), 0.0),
            "data_how": "exact",
            "ratio_to": (gauss_gap_exact(), ""),  # model / data: against the exact mass
            "entropy": math.log(2) + 1 + math.log(2 * math.pi * SIGMA**2),  # the NLL floor (lecture 8)
            "bounds": ((-3.5, 3.5), (-2.0, 2.0)),
        },
        {
            "name": "two moons",
            "train": moons.train,
            "test": data.moons(n_test, seed=2, noise=MOON_NOISE),
            "to_model": moons.standardizer.transform,
            "to_data": moons.standardizer.inverse_transform,
            "log_det": moons.standardizer.log_det,
            "region": off_moons,
            "data_gap": (moon_gap, math.sqrt(max(moon_gap * (1 - moon_gap), 1 / len(reference)) / len(reference))),
            "data_how": f"{len(reference):,} points; below {bound:.1e}",
            "ratio_to": (bound, ">= "),  # the data's mass is below the bound: the ratio is at least this
            "entropy": None,
            "bounds": ((-1.6, 2.6), (-1.0, 1.5)),
        },
    ]


# --- the three models ---------------------------------------------------------------------------
MODELS = ("standard", "mixture", "cif")
LABELS = {
    "standard": "RealNVP, N(0, I) base",
    "mixture": "RealNVP, mixture base",
    "cif": "CIF (RealNVP couplings)",
}


def build(kind, args, seed):
    if kind == "standard":
        return models.realnvp(2, layers=args.layers, hidden=args.hidden, seed=seed)
    if kind == "mixture":
        flow = models.realnvp(2, layers=args.layers, hidden=args.hidden, seed=seed).flow
        base = GaussianMixture(2, components=args.components, seed=seed, spread=args.spread)
        return models.NormalizingFlow(flow, base=base)
    return cif.cif_realnvp(2, layers=args.layers, hidden=args.cif_hidden, index_hidden=args.cif_index_hidden, seed=seed)


def fit(model, points, args, seed):
    """Lecture 8's ``train_flow``: Adam, cosine schedule, batch 256, lr 3e-3, no validation."""
    train.fit(
        model,
        points,
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        schedule="cosine",
        seed=seed,
        progress=False,
    )


def separation(base):
    """The smallest distance between two mixture components' means, in units of the mean scale:
    how far apart the latent modes are (about 8 is needed for a 4-sigma gap between two of them)."""
    means, scale = base.means.data, float(np.exp(base.log_scales.data).mean())
    k = means.shape[0]
    return min(float(np.linalg.norm(means[i] - means[j])) for i in range(k) for j in range(i + 1, k)) / scale


def model_samples(model, n, seed, chunk=250_000):
    """n samples on the host, drawn ``chunk`` at a time (bounded memory), from one Generator."""
    rng = backend.rng(seed, model.array_module())
    parts = [backend.to_numpy(model.sample(min(chunk, n - start), seed=rng)) for start in range(0, n, chunk)]
    return np.concatenate(parts)


def gap_mass(inside):
    """The fraction of True in ``inside`` and its binomial standard error (floored at 1/N, as lecture 8)."""
    n, fraction = len(inside), float(np.mean(inside))
    return fraction, math.sqrt(max(fraction * (1 - fraction), 1.0 / n) / n)


def test_nll(kind, model, setting, args):
    """(NLL in nats of the original units, its +-): see the module docstring for what the +- is."""
    points = backend.to_device(setting["to_model"](setting["test"]), dtype=model.float_dtype())
    n = points.shape[0]
    if kind == "cif":
        estimate, error = (
            backend.to_numpy(a) for a in model.log_prob_estimate(points, k=args.k, repeats=args.repeats, seed=7)
        )
        return -float(estimate.mean()) - setting["log_det"], float(np.sqrt(np.sum(error**2)) / n)
    with no_grad():
        log_p = backend.to_numpy(train.log_probs(model, points))
    return -float(log_p.mean()) - setting["log_det"], float(log_p.std(ddof=1) / math.sqrt(n))


# --- the figure -----------------------------------------------------------------------------------
def draw(figure_path, shown, all_settings, kinds):
    """Log-histograms of model samples: rows the settings, columns the models; the gap outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(2, len(kinds), figsize=(4.0 * len(kinds), 6.2), squeeze=False, layout="constrained")
    for row, setting in enumerate(all_settings):
        (x0, x1), (y0, y1) = setting["bounds"]
        for column, kind in enumerate(kinds):
            ax = axes[row, column]
            samples, mass = shown[setting["name"], kind]
            image = ax.hist2d(
                samples[:, 0],
                samples[:, 1],
                bins=(160, int(160 * (y1 - y0) / (x1 - x0))),
                range=setting["bounds"],
                density=True,
                norm=LogNorm(vmin=1e-4, vmax=3.0),
                cmap="magma",
            )[3]
            ax.set_facecolor("black")  # bins with no sample
            outline_gap(ax, setting)
            ax.set_aspect("equal")
            ax.set_title(f"{setting['name']}: {LABELS[kind]}\ngap mass {mass:.1e}", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="density of model samples (log scale; black: none)")
    fig.suptitle("where the models put their samples (white dotted: the gap's edge)")
    os.makedirs(os.path.dirname(os.path.abspath(figure_path)), exist_ok=True)
    fig.savefig(figure_path, dpi=110)
    plt.close(fig)


def outline_gap(ax, setting):
    (x0, x1), (y0, y1) = setting["bounds"]
    if setting["name"] == "two Gaussians":
        for edge in (-GAP, GAP):
            ax.axvline(edge, color="w", lw=0.8, ls=":")
    else:
        xs, ys = np.linspace(x0, x1, 300), np.linspace(y0, y1, 200)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1)
        distance = data.distance_to_moons(grid.reshape(-1, 2)).reshape(grid.shape[:2])
        ax.contour(xs, ys, distance, levels=[MOON_GAP], colors="w", linewidths=0.8, linestyles=":")


# --- the run ------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="couplings per model (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=32, help="RealNVP conditioner width (default: %(default)s)")
    parser.add_argument("--cif-hidden", type=int, default=22, help="CIF coupling width (default: %(default)s)")
    parser.add_argument("--cif-index-hidden", type=int, default=11, help="CIF index-net width (default: %(default)s)")
    parser.add_argument("--components", type=int, default=2, help="mixture-base components (default: %(default)s)")
    parser.add_argument("--spread", type=float, default=1.0, help="sd of the mixture's initial means (default: 1)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=400_000, help="model samples per gap-mass estimate")
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--k", type=int, default=50, help="importance samples for the CIF's test NLL")
    parser.add_argument("--repeats", type=int, default=4, help="repeats of the CIF's K-sample estimate")
    parser.add_argument("--figure", default="/tmp/gap/gap.png", help="where to write the figure")
    args = parser.parse_args()
    backend.keep_freed_memory()  # fit asks for it too; MINFLOW_KEEP_FREED_MEMORY=0 opts out
    started = time.perf_counter()
    all_settings = settings(args.n_test)

    counts = {kind: build(kind, args, seed=0).num_parameters() for kind in args.models}
    print(
        f"{args.layers} couplings; steps {args.steps}, batch {args.batch}, lr {args.lr} (cosine), seeds {args.seeds}; "
        f"{args.samples:,} samples per gap mass; backend {backend.backend_name()}"
    )
    print("parameters: " + ", ".join(f"{LABELS[kind]} {counts[kind]:,}" for kind in args.models))
    for setting in all_settings:
        mass, error = setting["data_gap"]
        print(f"data gap mass, {setting['name']}: {mass:.2e} +- {error:.0e} ({setting['data_how']})")

    results, shown = {}, {}
    for setting in all_settings:
        for kind in args.models:
            for seed in args.seeds:
                model = build(kind, args, seed)
                tick = time.perf_counter()
                fit(model, setting["train"], args, seed)
                trained = time.perf_counter() - tick
                samples = setting["to_data"](model_samples(model, args.samples, seed=1000 + seed))
                mass = gap_mass(setting["region"](samples))
                nll = test_nll(kind, model, setting, args)
                results[setting["name"], kind, seed] = (mass, nll)
                if seed == args.seeds[0]:
                    shown[setting["name"], kind] = (samples, mass[0])
                latent = f", latent modes {separation(model.base):.1f} scales apart" if kind == "mixture" else ""
                print(
                    f"  {setting['name']:13s} {kind:8s} seed {seed}: gap mass {mass[0]:.2e} +- {mass[1]:.0e}, "
                    f"test NLL {nll[0]:.3f} +- {plus_minus(nll[1])}{latent}  (trained in {trained:.0f} s)",
                    flush=True,
                )

    print()
    print(table(results, counts, all_settings, args.seeds))
    draw(args.figure, shown, all_settings, args.models)
    print(f"\nfigure: {args.figure}; total {time.perf_counter() - started:.0f} s")


def table(results, counts, all_settings, seeds):
    """The markdown table: per setting and model, the gap mass (mean ± sd over seeds, then each
    seed's with its binomial standard error), its ratio to the data's, and the test NLL."""
    lines = [
        "| setting | model | parameters | gap mass, mean ± sd | per seed (± s.e.) | model / data | "
        "test NLL (nats), mean ± sd | per seed (± s.e.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in all_settings:
        entropy = "" if setting["entropy"] is None else f"{setting['entropy']:.3f} (entropy)"
        lines.append(
            f"| {setting['name']} | data | | {setting['data_gap'][0]:.2e} ({setting['data_how']}) | | 1 | {entropy} | |"
        )
        reference, prefix = setting["ratio_to"]
        for kind in MODELS:
            if (setting["name"], kind, seeds[0]) not in results:
                continue
            rows = [results[setting["name"], kind, seed] for seed in seeds]
            masses = [mass for (mass, _), _ in rows]
            nlls = [nll for _, (nll, _) in rows]
            lines.append(
                f"| {setting['name']} | {LABELS[kind]} | {counts[kind]:,} | {spread(masses, '.2e')} | "
                + ", ".join(f"{m:.2e} ± {e:.0e}" for (m, e), _ in rows)
                + f" | {prefix}{statistics.mean(masses) / reference:,.0f}x | {spread(nlls, '.3f')} | "
                + ", ".join(f"{v:.3f} ± {plus_minus(e)}" for _, (v, e) in rows)
                + " |"
            )
    return "\n".join(lines)


def plus_minus(error):
    """An NLL's standard error: to 3 decimals, or in scientific notation when smaller."""
    return f"{error:.3f}" if error >= 5e-4 else f"{error:.0e}"


def spread(values, fmt):
    """'mean ± sd' of ``values`` (just the value for one seed)."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


if __name__ == "__main__":
    main()
