"""The command line: ``python -m minflow {demo, train, evaluate, sample}``.

A run is a folder::

    config.json    what was trained on what (enough to rebuild the model and the data)
    model.npz      the parameters (minflow.nn.Module.save)
    metrics.json   train / validation / test NLL, steps, wall time
    *.png          the figures (density, samples, warped grid, morph, training curve)

NLLs are in nats per sample of the *standardised* data (the space the model sees);
``test_nll_original_units`` adds back the standardisation's log-determinant.
"""

import argparse
import json
import os

from . import backend, data, models, train

DEMO = {"data": "moons", "model": "realnvp", "steps": 1500, "out": os.path.join("runs", "demo")}


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
    parser.add_argument("--data", choices=sorted(data.TOY_DATASETS), default=defaults.get("data", "moons"),
                        help="2-D toy dataset (default: %(default)s)")
    parser.add_argument("--model", choices=sorted(models.MODELS), default=defaults.get("model", "realnvp"),
                        help="model family (default: %(default)s)")
    parser.add_argument("--steps", type=_positive_int, default=defaults.get("steps", 3000),
                        help="Adam steps (default: %(default)s)")
    parser.add_argument("--out", default=defaults.get("out"), required="out" not in defaults,
                        help="run folder to write" + (" (default: %(default)s)" if "out" in defaults else ""))
    parser.add_argument("--batch-size", type=_positive_int, default=512, help="minibatch size (default: %(default)s)")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--schedule", choices=train.SCHEDULES, default="cosine",
                        help="learning-rate schedule (default: %(default)s)")
    parser.add_argument("--layers", type=_positive_int, default=None, help="number of coupling layers (model default)")
    parser.add_argument("--hidden", type=_positive_int, default=64, help="hidden units per conditioner layer (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=None, help="dataset noise (dataset default)")
    parser.add_argument("--n-train", type=_positive_int, default=10_000, help="training points (default: %(default)s)")
    parser.add_argument("--n-test", type=_positive_int, default=10_000, help="held-out test points (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batches (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")


def make_parser():
    parser = _Parser(prog="python -m minflow", description="Train normalizing flows on 2-D toy data and look at them.")
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
    return models.build(config["model"], config["dim"], seed=config["seed"], **config["model_options"])


def load_run(folder):
    """(config, model, standardizer) of a run folder; UsageError if it is not one."""
    config_path, model_path = os.path.join(folder, "config.json"), os.path.join(folder, "model.npz")
    if not (os.path.isfile(config_path) and os.path.isfile(model_path)):
        raise UsageError(f"{folder!r} is not a run folder (it needs config.json and model.npz; write one with 'train')")
    with open(config_path) as file:
        config = json.load(file)
    model = _build(config)
    model.load(model_path)
    return config, model, data.Standardizer.from_state(config["standardizer"])


def _write_json(path, content):
    with open(path, "w") as file:
        json.dump(content, file, indent=2)
        file.write("\n")


def run_training(args):
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
    try:
        history = train.fit(model, splits.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            schedule=args.schedule, val_data=splits.val, val_every=max(args.steps // 20, 1),
                            seed=args.seed, progress=not args.no_progress)
    except train.NonFiniteLossError as error:
        raise TrainingFailed(f"{error}; nothing was written to {args.out!r}") from error
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.npz"))
    _write_json(os.path.join(args.out, "config.json"), config)
    test_nll = train.evaluate_nll(model, splits.test)
    metrics = {
        "train_nll": train.evaluate_nll(model, splits.train),
        "val_nll": train.evaluate_nll(model, splits.val),
        "test_nll": test_nll,
        "test_nll_original_units": test_nll - splits.standardizer.log_det,
        "steps": args.steps,
        "steps_run": len(history["step"]),
        "best_step": history["best_step"],
        "stopped": history["stopped"],
        "wall_time_seconds": history["wall_time"],
    }
    _write_json(os.path.join(args.out, "metrics.json"), metrics)
    _write_json(os.path.join(args.out, "history.json"), history)
    figures = [] if args.no_figures else write_figures(model, splits, history, args.out, args.seed)
    print(f"{args.model} on {args.data}: test NLL {test_nll:.4f} nats (standardised data), "
          f"{metrics['wall_time_seconds']:.1f} s for {metrics['steps_run']} steps")
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


def run_evaluate(args):
    config, model, _ = load_run(args.run)
    splits = _splits(config)
    result = {"test_nll": train.evaluate_nll(model, splits.test), "val_nll": train.evaluate_nll(model, splits.val)}
    print(json.dumps(result, indent=2))
    return result


def run_sample(args):
    _, model, standardizer = load_run(args.run)
    samples = standardizer.inverse_transform(backend.to_numpy(model.sample(args.n, seed=args.seed)))
    out = args.out or os.path.join(args.run, "samples.csv")
    with open(out, "w") as file:
        file.write("x1,x2\n")
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
