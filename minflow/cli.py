"""The command line: ``python -m minflow {demo, train, evaluate, sample}``.

A run is a folder::

    config.json    what was trained on what (enough to rebuild the model and the data)
    model.npz      the parameters (minflow.nn.Module.save)
    metrics.json   train / validation / test NLL, steps, wall time
    *.png          the figures (density, samples, warped grid, morph, training curve)

NLLs are in nats per sample of the *standardised* data (the space the model sees);
``test_nll_original_units`` adds back the standardisation's log-determinant.

Images: ``--data digits`` trains an image model (``--model glow``) on the 8x8 digits in
the logit space of ``minflow.data.digits``. Its metrics are in bits per dimension of the
dequantized pixels (``train_bpd``, ``val_bpd``, ``test_bpd``; see ``data.bits_per_dim``),
and its figures are ``samples.png`` (a grid of sampled digits), ``interpolations.png``
(straight lines in latent space between pairs of test digits, decoded) and ``training.png``.
"""

import argparse
import json
import math
import os

import numpy

from . import backend, data, models, train
from .autodiff import no_grad

DEMO = {"data": "moons", "model": "realnvp", "steps": 1500, "out": os.path.join("runs", "demo")}
IMAGE_DATASETS = ("digits",)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line on stderr (and exit code 2), not the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A bad argument found after parsing (a missing run folder, say): one line, exit code 2."""


class TrainingFailed(Exception):
    """Training diverged (a non-finite loss): one line, exit code 1."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_training_arguments(parser, defaults):
    parser.add_argument("--data", choices=sorted(data.TOY_DATASETS) + list(IMAGE_DATASETS),
                        default=defaults.get("data", "moons"),
                        help="2-D toy dataset, or digits (8x8 images, with --model glow) (default: %(default)s)")
    parser.add_argument("--model", choices=sorted(models.MODELS) + sorted(models.IMAGE_MODELS),
                        default=defaults.get("model"), help="model family (default: realnvp for 2-D data, glow for digits)")
    parser.add_argument("--steps", type=_positive_int, default=defaults.get("steps", 3000),
                        help="Adam steps (default: %(default)s)")
    parser.add_argument("--out", default=defaults.get("out"), required="out" not in defaults,
                        help="run folder to write" + (" (default: %(default)s)" if "out" in defaults else ""))
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="minibatch size (default: 512 for 2-D data, 64 for digits)")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--schedule", choices=train.SCHEDULES, default="cosine",
                        help="learning-rate schedule (default: %(default)s)")
    parser.add_argument("--layers", type=_positive_int, default=None,
                        help="number of coupling layers; steps per scale for glow (model default)")
    parser.add_argument("--scales", type=_positive_int, default=None, help="glow only: number of scales (model default)")
    parser.add_argument("--hidden", type=_positive_int, default=64, help="hidden units per conditioner layer (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=None, help="dataset noise (dataset default)")
    parser.add_argument("--n-train", type=_positive_int, default=10_000, help="training points (default: %(default)s)")
    parser.add_argument("--n-test", type=_positive_int, default=10_000, help="held-out test points (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batches (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")


def make_parser():
    parser = _Parser(prog="python -m minflow",
                     description="Train normalizing flows on 2-D toy data (or 8x8 digits) and look at them.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    demo = commands.add_parser("demo", help=f"train {DEMO['model']} on {DEMO['data']} and write its figures to {DEMO['out']}",
                               description="The main job, with no arguments: a trained two-moons model and its figures.")
    _add_training_arguments(demo, DEMO)

    fit = commands.add_parser("train", help="train a model on a toy dataset",
                              description="Train a flow by maximum likelihood and write checkpoint, metrics and figures.")
    _add_training_arguments(fit, {})

    evaluate = commands.add_parser("evaluate", help="test NLL of a saved run",
                                   description="Rebuild a run's model and test data and print its metrics as JSON.")
    evaluate.add_argument("run", help="run folder written by train")

    sample = commands.add_parser("sample", help="draw samples from a saved run",
                                 description="Draw samples (in the data's original units) and write them as CSV.")
    sample.add_argument("run", help="run folder written by train")
    sample.add_argument("--n", type=_positive_int, default=1000, help="number of samples (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    sample.add_argument("--out", default=None, help="CSV file to write (default: RUN/samples.csv)")
    return parser


# --- runs ---------------------------------------------------------------------------------------
def _splits(config):
    return data.toy_data(config["data"], n_train=config["n_train"], n_val=config["n_val"], n_test=config["n_test"],
                         seed=config["seed"], noise=config["noise"])


def _build(config):
    dim = tuple(config["shape"]) if "shape" in config else config["dim"]
    return models.build(config["model"], dim, seed=config["seed"], **config["model_options"])


def load_run(folder):
    """(config, model, standardizer) of a run folder (standardizer None for digits); UsageError if it is not one."""
    config_path, model_path = os.path.join(folder, "config.json"), os.path.join(folder, "model.npz")
    if not (os.path.isfile(config_path) and os.path.isfile(model_path)):
        raise UsageError(f"{folder!r} is not a run folder (it needs config.json and model.npz; write one with 'train')")
    with open(config_path) as file:
        config = json.load(file)
    model = _build(config)
    model.load(model_path)
    standardizer = data.Standardizer.from_state(config["standardizer"]) if "standardizer" in config else None
    return config, model, standardizer


def _write_json(path, content):
    with open(path, "w") as file:
        json.dump(content, file, indent=2)
        file.write("\n")


def run_training(args):
    images = args.data in IMAGE_DATASETS
    args.model = args.model or ("glow" if images else "realnvp")
    if images != (args.model in models.IMAGE_MODELS):
        raise UsageError(f"--data {args.data} needs " + (f"an image model ({', '.join(sorted(models.IMAGE_MODELS))})" if images
                         else f"a 2-D model, not the image model {args.model!r}; use --data digits"))
    if args.scales is not None and not images:
        raise UsageError("--scales is for image models (--model glow)")
    if args.batch_size is None:
        args.batch_size = 64 if images else 512
    if images:
        return run_image_training(args)
    options = {"hidden": args.hidden}
    if args.layers is not None:
        options["layers"] = args.layers
    config = {"data": args.data, "noise": args.noise, "n_train": args.n_train, "n_val": max(args.n_train // 5, 1),
              "n_test": args.n_test, "seed": args.seed, "model": args.model, "model_options": options, "dim": 2,
              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
              "dtype": str(backend.get_default_dtype()), "backend": backend.backend_name()}
    splits = _splits(config)
    config["standardizer"] = {k: v.tolist() for k, v in splits.standardizer.state_dict().items()}
    model = _build(config)
    history = _fit(args, model, splits.train, splits.val)
    test_nll = train.evaluate_nll(model, splits.test)
    metrics = {
        "train_nll": train.evaluate_nll(model, splits.train),
        "val_nll": train.evaluate_nll(model, splits.val),
        "test_nll": test_nll,
        "test_nll_original_units": test_nll - splits.standardizer.log_det,
    }
    return _write_run(args, model, config, metrics, history, lambda: write_figures(model, splits, history, args.out, args.seed),
                      f"test NLL {test_nll:.4f} nats (standardised data)")


def _fit(args, model, train_data, val_data):
    """``train.fit`` with the command's options; a diverging run becomes a one-line error."""
    try:
        return train.fit(model, train_data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         schedule=args.schedule, val_data=val_data, val_every=max(args.steps // 20, 1),
                         seed=args.seed, progress=not args.no_progress)
    except train.NonFiniteLossError as error:
        raise TrainingFailed(f"{error}; nothing was written to {args.out!r}") from error


def _write_run(args, model, config, metrics, history, draw_figures, summary):
    """Write the run folder: checkpoint, config, metrics (plus steps and wall time), history, figures."""
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.npz"))
    _write_json(os.path.join(args.out, "config.json"), config)
    metrics.update({"steps": args.steps, "steps_run": len(history["step"]), "best_step": history["best_step"],
                    "stopped": history["stopped"], "wall_time_seconds": history["wall_time"]})
    _write_json(os.path.join(args.out, "metrics.json"), metrics)
    _write_json(os.path.join(args.out, "history.json"), history)
    figures = [] if args.no_figures else draw_figures()
    print(f"{args.model} on {args.data}: {summary}, {metrics['wall_time_seconds']:.1f} s for {metrics['steps_run']} steps")
    print(f"wrote {os.path.join(args.out, 'model.npz')}, metrics.json" + "".join(f", {os.path.basename(f)}" for f in figures))
    return metrics


def write_figures(model, splits, history, folder, seed=0):
    """The run's figures; returns their paths. (matplotlib is needed here, and only here.)"""
    from . import plot

    paths = {name: os.path.join(folder, f"{name}.png") for name in ("density", "samples", "warped_grid", "morph", "training")}
    shown = splits.test[:5000]
    plot.density(model, shown, path=paths["density"])
    plot.samples(model, shown, seed=seed, path=paths["samples"])
    plot.warped_grid(model, path=paths["warped_grid"])
    plot.morph(model, seed=seed, path=paths["morph"])
    plot.training_curves({"step": history["step"], "train_nll": history["loss"], "val_step": history["val_step"],
                          "val_nll": history["val_nll"]}, path=paths["training"])
    return list(paths.values())


# --- digits ------------------------------------------------------------------------------------
def _log_probs(model, images, batch_size=1024):
    """log p(h) of every image, (N,), in chunks and without a graph."""
    dtype = model.parameters()[0].dtype
    with no_grad():
        chunks = [model.log_prob(backend.to_device(images[start : start + batch_size], dtype, model.array_module())).data
                  for start in range(0, len(images), batch_size)]
    return backend.array_module(chunks[0]).concatenate(chunks)


def _bits_per_dim(model, images, log_det):
    """Bits per dimension of dequantized pixels (data.bits_per_dim with the split's log-det)."""
    return data.bits_per_dim(_log_probs(model, images), log_det, dim=math.prod(images.shape[1:]))


def fresh_dequantizations(seed, alpha, copies):
    """The training digits of ``data.digits(seed)``, dequantized ``copies`` times with independent
    noise, in model space, stacked: (copies * N, 1, 8, 8).

    Why: with one fixed noise draw (``splits.train``), a flow soon models that draw rather than
    the digits, and its validation NLL climbs after a few hundred steps. Training on fresh
    noise (the advice in ``data.digits``) removes that: ``fit`` walks through this array in
    shuffled epochs, so each digit comes back with new noise up to ``copies`` times.
    """
    rng = numpy.random.default_rng([seed, 1])  # a stream apart from the one digits(seed) uses
    pixels = data.split(data.digit_pixels(), seed=seed)[0]  # the same images as data.digits(seed).train
    return numpy.concatenate([data.to_model_space(data.dequantize(pixels, seed=rng), alpha)[0] for _ in range(copies)])


def run_image_training(args):
    """``train --data digits --model glow``: fit in model space, report bits/dim, draw digits."""
    options = {"hidden": args.hidden}
    if args.layers is not None:
        options["steps_per_scale"] = args.layers
    if args.scales is not None:
        options["scales"] = args.scales
    splits = data.digits(seed=args.seed)
    config = {"data": args.data, "seed": args.seed, "alpha": splits.alpha, "model": args.model, "model_options": options,
              "shape": list(splits.train.shape[1:]), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
              "schedule": args.schedule, "dtype": str(backend.get_default_dtype()), "backend": backend.backend_name()}
    # enough copies that (nearly) every training example drawn has noise of its own, at most 64
    config["train_copies"] = min(64, -(-args.steps * args.batch_size // len(splits.train)))
    try:
        model = _build(config)
    except ValueError as error:
        raise UsageError(str(error)) from error
    train_images = fresh_dequantizations(args.seed, splits.alpha, config["train_copies"])
    history = _fit(args, model, train_images, splits.val)
    metrics = {  # train_bpd: on splits.train, the training digits with data.digits' own noise
        "train_bpd": _bits_per_dim(model, splits.train, splits.train_log_det),
        "val_bpd": _bits_per_dim(model, splits.val, splits.val_log_det),
        "test_bpd": _bits_per_dim(model, splits.test, splits.test_log_det),
        "test_nll": train.evaluate_nll(model, splits.test),
    }
    return _write_run(args, model, config, metrics, history,
                      lambda: write_image_figures(model, splits, history, args.out, args.seed),
                      f"test {metrics['test_bpd']:.3f} bits/dim")


def write_image_figures(model, splits, history, folder, seed=0, pairs=4, steps=8):
    """samples.png, interpolations.png and training.png of an image run; returns their paths."""
    from . import plot

    paths = {name: os.path.join(folder, f"{name}.png") for name in ("samples", "interpolations", "training")}

    def to_image(h):  # model space -> grey levels 0..17
        return data.from_model_space(h, splits.alpha)

    grey_levels = (0.0, float(data.LEVELS))
    plot.image_grid(to_image(model.sample(64, seed=seed)), path=paths["samples"], columns=8, value_range=grey_levels)
    test = splits.test
    x_pairs = test[: 2 * pairs].reshape((pairs, 2) + test.shape[1:])
    plot.interpolations(model, x_pairs, steps=steps, path=paths["interpolations"], to_image=to_image,
                        value_range=grey_levels)
    plot.training_curves({"step": history["step"], "train_nll": history["loss"], "val_step": history["val_step"],
                          "val_nll": history["val_nll"]}, path=paths["training"])
    return list(paths.values())


def run_evaluate(args):
    config, model, _ = load_run(args.run)
    if config["data"] in IMAGE_DATASETS:
        splits = data.digits(seed=config["seed"], alpha=config["alpha"])
        result = {"test_bpd": _bits_per_dim(model, splits.test, splits.test_log_det),
                  "val_bpd": _bits_per_dim(model, splits.val, splits.val_log_det),
                  "test_nll": train.evaluate_nll(model, splits.test)}
        print(json.dumps(result, indent=2))
        return result
    splits = _splits(config)
    result = {"test_nll": train.evaluate_nll(model, splits.test), "val_nll": train.evaluate_nll(model, splits.val)}
    print(json.dumps(result, indent=2))
    return result


def run_sample(args):
    config, model, standardizer = load_run(args.run)
    out = args.out or os.path.join(args.run, "samples.csv")
    if standardizer is None:  # images: one row of grey levels (0..17, row by row) per sample
        samples = data.from_model_space(model.sample(args.n, seed=args.seed), config["alpha"]).reshape(args.n, -1)
        header = ",".join(f"p{i}" for i in range(samples.shape[1]))
    else:
        samples = standardizer.inverse_transform(backend.to_numpy(model.sample(args.n, seed=args.seed)))
        header = "x1,x2"
    with open(out, "w") as file:
        file.write(header + "\n")
        for row in samples.tolist():
            file.write(",".join(repr(v) for v in row) + "\n")
    print(f"wrote {args.n} samples to {out}")
    return out


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    command = {"demo": run_training, "train": run_training, "evaluate": run_evaluate, "sample": run_sample}
    try:
        command[args.command](args)
    except UsageError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except TrainingFailed as error:
        parser.exit(1, f"{parser.prog} {args.command}: error: {error}\n")
    return 0
