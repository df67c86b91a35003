"""The command line: ``python -m minflow {demo, train, evaluate, sample}``.

A run is a folder::

    config.json          what was trained on what (enough to rebuild the model and the data)
    model.npz            the parameters (minflow.nn.Module.save): the best validated ones
    training_state.npz   where training stood (parameters, optimizer, step, batch order): --resume
    metrics.json         train / validation / test NLL, steps, wall time, ``interrupted``
    history.json         the loss of every step and the validation NLLs
    *.png                the figures (density, samples, warped grid, morph, training curve)

NLLs are in nats per sample of the *standardised* data (the space the model sees);
``test_nll_original_units`` adds back the standardisation's log-determinant.

Images: ``--data digits`` trains an image model (``--model glow``) on the 8x8 digits in
the logit space of ``minflow.data.digits``. Its metrics are in bits per dimension of the
dequantized pixels (``train_bpd``, ``val_bpd``, ``test_bpd``; see ``data.bits_per_dim``),
and its figures are ``samples.png`` (a grid of sampled digits), ``interpolations.png``
(straight lines in latent space between pairs of test digits, decoded) and ``training.png``.

**The command line never loses work** (DESIGN.md, section 7):

- A run folder is written whole or not at all: everything goes into a temporary sibling
  folder (``.NAME.tmp-XXXX``), which is renamed into place once complete. An existing folder
  is replaced only with ``--force`` (or, for ``demo``, when the demo itself wrote it), and only
  after the new one is complete. The output location is checked before training starts.
- The first Ctrl-C stops training at the end of the step and saves the run as interrupted
  (``"interrupted": true`` in metrics.json; continue it with ``train --resume``). A second
  Ctrl-C, or SIGTERM, aborts at once and writes nothing.
- Every error a user can cause is one line on stderr naming the argument or file and the
  fix: exit code 2 for bad input (arguments, run folders and their files), 1 for failures
  at run time, 130 after Ctrl-C, 143 after SIGTERM. ``--debug`` (or ``MINFLOW_DEBUG=1``)
  prints the traceback instead.
"""

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import traceback

import numpy

from . import backend, data, models, train
from .checkpoint import written_whole
from .runs import (
    IMAGE_DATASETS,
    RunFailed,
    RunFolder,
    UsageError,
    build_from,
    build_model,
    committed,
    finite_or_none,
    first_line,
    is_run_folder,
    load_run,
    read_config,
    signals_blocked,
    toy_contexts,
    toy_splits,
    use_run_settings,
    write_json,
)

DEMO = {"data": "moons", "model": "realnvp", "steps": 1500, "out": os.path.join("runs", "demo")}
DEFAULT_STEPS = 3000
RUN_FILES = ("config.json", "model.npz", "training_state.npz", "metrics.json", "history.json")
SAMPLE_CHUNK = 65_536  # samples drawn and written at a time: memory stays flat in --n
MAX_SEED = 2**32 - 1  # seeds every backend's generator takes


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line on stderr (and exit code 2), not the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class Terminated(BaseException):
    """Raised by the SIGTERM handler: abort at once, like a second Ctrl-C (but not a KeyboardInterrupt,
    so that nothing mistakes it for a first Ctrl-C to be saved)."""


# --- argument types -----------------------------------------------------------------------------
def _number(convert, acceptable, expected):
    """An argparse type: ``convert(text)`` (int or float), kept if ``acceptable(value)``, else a
    one-line error saying what was ``expected``."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not acceptable(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda value: value >= 1, "a positive integer")
_positive_float = _number(float, lambda value: value > 0 and math.isfinite(value), "a positive finite number")
_noise = _number(
    float, lambda value: value >= 0 and math.isfinite(value), "a finite number >= 0 (a standard deviation)"
)
_seed = _number(int, lambda value: 0 <= value <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")
_label = _number(int, lambda value: value >= 0, "an integer >= 0")


def _add_debug(parser):
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of one line (or set MINFLOW_DEBUG=1)",
    )


def _add_training_arguments(parser, defaults):
    parser.add_argument(
        "--data",
        choices=sorted(data.TOY_DATASETS) + list(IMAGE_DATASETS),
        default=defaults.get("data", "moons"),
        help="2-D toy dataset, or digits (8x8 images, with --model glow) (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        choices=sorted(models.MODELS) + sorted(models.IMAGE_MODELS) + list(models.INDEXED_MODELS),
        default=defaults.get("model"),
        help="model family; cif: a continuously indexed RealNVP (default: realnvp for 2-D data, glow for digits)",
    )
    parser.add_argument(
        "--base",
        choices=models.BASES,
        default="normal",
        help="base distribution: N(0, I), a learnable diagonal Gaussian, or a learnable Gaussian mixture "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--components",
        type=_positive_int,
        default=None,
        help="components of the mixture base (with --base mixture; default: 8)",
    )
    parser.add_argument(
        "--conditional",
        action="store_true",
        help=f"learn p(x | label), conditioned on each point's label (datasets: {', '.join(data.LABELED_DATASETS)})",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=defaults.get("steps"),
        help=f"Adam steps, in all (default: {defaults.get('steps', DEFAULT_STEPS)}"
        + ("" if "steps" in defaults else "; with --resume, the run's own total")
        + ")",
    )
    parser.add_argument(
        "--out",
        default=defaults.get("out"),
        help="run folder to write"
        + (
            " (default: %(default)s)"
            if "out" in defaults
            else " (needed unless --resume; default then: the resumed run)"
        ),
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing run folder (only once the new run is complete)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="minibatch size (default: 512 for 2-D data, 64 for digits)",
    )
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument(
        "--schedule", choices=train.SCHEDULES, default="cosine", help="learning-rate schedule (default: %(default)s)"
    )
    parser.add_argument(
        "--clip",
        type=_positive_float,
        default=None,
        help="clip the gradient's global norm to this (default: no clipping)",
    )
    parser.add_argument(
        "--layers",
        type=_positive_int,
        default=None,
        help="number of coupling layers; steps per scale for glow (model default)",
    )
    parser.add_argument(
        "--scales", type=_positive_int, default=None, help="glow only: number of scales (model default)"
    )
    parser.add_argument(
        "--hidden", type=_positive_int, default=64, help="hidden units per conditioner layer (default: %(default)s)"
    )
    parser.add_argument("--noise", type=_noise, default=None, help="dataset noise (dataset default)")
    parser.add_argument("--n-train", type=_positive_int, default=10_000, help="training points (default: %(default)s)")
    parser.add_argument(
        "--n-test", type=_positive_int, default=10_000, help="held-out test points (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, help="seed for data, initialisation and batches (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default=None,
        help="floating dtype of the model and data (default: minflow's default, float64)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    _add_debug(parser)


def make_parser():
    parser = _Parser(
        prog="python -m minflow",
        description="Train normalizing flows on 2-D toy data (or 8x8 digits) and look at them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help=f"train {DEMO['model']} on {DEMO['data']} and write its figures to {DEMO['out']}",
        description="The main job, with no arguments: a trained two-moons model and its figures. "
        "Run again, it replaces the folder it wrote before (and no other without --force).",
    )
    _add_training_arguments(demo, DEMO)

    fit = commands.add_parser(
        "train",
        help="train a model on a toy dataset",
        description="Train a flow by maximum likelihood and write checkpoint, metrics and figures. "
        "Ctrl-C once stops and saves the run as interrupted; twice aborts and writes nothing.",
    )
    _add_training_arguments(fit, {})
    fit.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue the run in folder RUN (its own settings; --steps sets the new total) and write it back",
    )
    parser.train_parser = fit  # main() asks it which options were given with --resume

    evaluate = commands.add_parser(
        "evaluate",
        help="test NLL of a saved run",
        description="Rebuild a run's model and test data and print its metrics as JSON. "
        "A non-finite result is an error (exit code 1), never NaN in the JSON.",
    )
    evaluate.add_argument("run", help="run folder written by train")
    _add_debug(evaluate)

    sample = commands.add_parser(
        "sample",
        help="draw samples from a saved run",
        description=f"Draw samples (in the data's original units) and write them as CSV, {SAMPLE_CHUNK} at a time.",
    )
    sample.add_argument("run", help="run folder written by train")
    sample.add_argument("--n", type=_positive_int, default=1000, help="number of samples (default: %(default)s)")
    sample.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: %(default)s)")
    sample.add_argument("--out", default=None, help="CSV file to write (default: RUN/samples.csv)")
    sample.add_argument(
        "--force", action="store_true", help="replace an existing --out file (never one of the run's own)"
    )
    sample.add_argument(
        "--label",
        type=_label,
        default=None,
        help="the label to sample, for a run trained with --conditional (0..K-1)",
    )
    _add_debug(sample)
    return parser


# --- training ------------------------------------------------------------------------------------
def _new_config(args):
    """The settings of a new run from the command's arguments (checked before anything is built)."""
    images = args.data in IMAGE_DATASETS
    args.model = args.model or ("glow" if images else "realnvp")
    if images != (args.model in models.IMAGE_MODELS):
        raise UsageError(
            f"--data {args.data} needs "
            + (
                f"an image model ({', '.join(sorted(models.IMAGE_MODELS))})"
                if images
                else f"a 2-D model, not the image model {args.model!r}; use --data digits"
            )
        )
    if args.scales is not None and not images:
        raise UsageError("--scales is for image models (--model glow)")
    _check_model_choices(args, images)
    if not images and args.n_train < 2:
        raise UsageError(
            f"--n-train {args.n_train} is too few: the data are standardised by the training split's "
            "mean and spread, which needs at least 2 points"
        )
    if args.dtype is not None:
        backend.set_default_dtype(args.dtype)  # main() puts the old default back
    config = {
        "data": args.data,
        "seed": args.seed,
        "model": args.model,
        "steps": args.steps or DEFAULT_STEPS,
        "batch_size": args.batch_size or (64 if images else 512),
        "lr": args.lr,
        "schedule": args.schedule,
        "clip": args.clip,
        "dtype": str(backend.get_default_dtype()),
        "backend": backend.backend_name(),
        "written_by": args.command,
    }
    options = {"hidden": args.hidden}
    if args.layers is not None:
        options["steps_per_scale" if images else "layers"] = args.layers
    if args.scales is not None:
        options["scales"] = args.scales
    if args.base != "normal":
        options["base"] = args.base
    if args.components is not None:
        options["components"] = args.components
    if args.conditional:
        config["conditional"] = True
        options["context_dim"] = data.LABELED_DATASETS[args.data]
    if not images:
        config.update(
            {
                "noise": args.noise,
                "n_train": args.n_train,
                "n_val": max(args.n_train // 5, 1),
                "n_test": args.n_test,
                "dim": 2,
            }
        )
    config["model_options"] = options
    return config


def _check_model_choices(args, images):
    """--base, --components and --conditional against the data and model; UsageError naming the fix."""
    if args.base == "mixture" and images:
        raise UsageError("--base mixture is for 2-D data; for digits use --base normal or --base diagonal")
    if args.components is not None and args.base != "mixture":
        raise UsageError("--components sets the mixture base's components; add --base mixture")
    if args.model in models.INDEXED_MODELS and (args.base != "normal" or args.conditional):
        raise UsageError(f"--model {args.model} has the normal base and no context; drop --base and --conditional")
    if args.conditional and args.data not in data.LABELED_DATASETS:
        raise UsageError(
            f"--conditional needs data with labels ({', '.join(sorted(data.LABELED_DATASETS))}); "
            f"--data {args.data} has none"
        )


def _resume_config(args):
    """(config, state) of the run ``--resume RUN``, with ``--steps`` as the new total."""
    folder = args.resume
    config = read_config(folder)
    use_run_settings(config, folder)
    path = os.path.join(folder, "training_state.npz")
    if not os.path.isfile(path):
        raise UsageError(
            f"{folder!r} has no training_state.npz, so it cannot be resumed; train it again "
            "(runs written by this version of minflow can be resumed)"
        )
    try:
        state = train.TrainingState.load(path)
    except Exception as error:  # ValueError for a damaged or foreign file, OSError for an unreadable one
        message = first_line(error)
        message = message if path in message else f"{path}: {message}"
        raise UsageError(f"{message}; it cannot be resumed: train the run again") from None
    done = int(state.step)
    steps = args.steps or config.get("steps")
    if not isinstance(steps, int) or steps <= done:
        given = f"--steps {args.steps}" if args.steps else f"its total of {steps} steps"
        raise UsageError(
            f"{folder!r} has already run {done} steps, so {given} leaves nothing to do; "
            f"give a larger total with --steps"
        )
    config["steps"] = steps
    args.out = args.out or folder
    return config, state


def _check_resume_options(parser, argv):
    """With --resume, the run's own settings are used: any other training option is a mistake."""
    sub = parser.train_parser
    unset = object()
    given = argparse.Namespace(**{a.dest: unset for a in sub._actions if a.dest != "help"})
    sub.parse_args(argv[argv.index("train") + 1 :], given)
    allowed = {"resume", "steps", "out", "force", "no_progress", "no_figures", "debug"}
    extra = [
        a.option_strings[0]
        for a in sub._actions
        if a.dest not in allowed and a.option_strings and getattr(given, a.dest, unset) is not unset
    ]
    if extra:
        raise UsageError(
            f"--resume continues a run with its own settings (RUN/config.json); drop {', '.join(extra)} "
            "(only --steps, --out, --force, --no-progress, --no-figures go with it)"
        )


def _figures_possible(args):
    if not args.no_figures:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("the figures need matplotlib: pip install 'minflow[plot]', or pass --no-figures")


def _fit(args, config, model, train_data, val_data, state=None, contexts=(None, None)):
    """``train.fit`` with the run's settings: (history, state, interrupted).

    A first Ctrl-C ends in ``train.TrainingInterrupted`` (the best parameters restored): say so
    in one line and return, so the run is saved as interrupted. A diverging run becomes a
    one-line error naming an option that helps.
    """
    options = {} if state is None else {"resume": state}
    steps = config["steps"]
    try:
        history = train.fit(
            model,
            train_data,
            steps=steps,
            batch_size=config["batch_size"],
            lr=config["lr"],
            schedule=config["schedule"],
            clip=config.get("clip"),
            val_data=val_data,
            val_every=max(steps // 20, 1),
            seed=config["seed"],
            progress=not args.no_progress,
            context=contexts[0],
            val_context=contexts[1],
            **options,
        )
        interrupted = bool(history.get("interrupted"))
    except train.TrainingInterrupted as stop:
        history, interrupted = stop.history, True
        history.setdefault("state", stop.state)
        print(
            f"interrupted at step {stop.state.step}; saving the run as interrupted (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )
    except train.NonFiniteLossError as error:
        raise RunFailed(_divergence(error, args, config)) from error
    except ValueError as error:
        if state is None or not str(error).startswith("resume"):
            raise
        raise UsageError(
            f"{os.path.join(args.resume, 'training_state.npz')} does not continue the run its "
            f"config.json describes ({first_line(error)}); train the run again"
        ) from None
    return history, history.pop("state", None), interrupted


def _divergence(error, args, config):
    cause = getattr(error, "cause", "step")
    nothing = f"nothing was written to {args.out!r}"
    if cause == "data":
        return f"the training data hold NaN or infinite values (check --noise); {nothing}"
    if cause == "val_data":
        return f"the validation data hold NaN or infinite values (check --noise); {nothing}"
    found = re.search(r"step (\d+)", str(error))
    where = f" at step {found.group(1)}" if found else ""
    clip = "a smaller --clip" if config.get("clip") else "--clip 1.0"
    return (
        f"training diverged{where}: the loss or a gradient became NaN or infinite; try a smaller --lr "
        f"(now {config['lr']:g}) or {clip}; {nothing}"
    )


def run_training(args):
    """``train`` and ``demo``: a new run, or ``--resume RUN``; returns the exit code (0, or 130 if interrupted)."""
    resuming = getattr(args, "resume", None)
    config, state = _resume_config(args) if resuming else (_new_config(args), None)
    _figures_possible(args)
    same = bool(resuming) and os.path.abspath(args.out) == os.path.abspath(resuming)
    with RunFolder(args.out, force=args.force, demo=args.command == "demo", replaces_itself=same) as folder:
        if config["data"] in IMAGE_DATASETS:
            task = run_image_training(config)
        else:
            task = _toy_task(config)
        model = build_from(config, resuming) if resuming else _build_usage(config)
        if state is not None:
            print(f"resuming {resuming} at step {state.step} of {config['steps']} (Ctrl-C stops and saves)", flush=True)
        else:
            print(
                f"training {config['model']} on {config['data']} for {config['steps']} steps into {args.out} "
                "(Ctrl-C stops and saves)",
                flush=True,
            )
        contexts = task.get("contexts", (None, None, None))[:2]
        history, state, interrupted = _fit(args, config, model, task["train"], task["val"], state, contexts)
        metrics = task["metrics"](model)
        bad = [key for key, value in metrics.items() if not math.isfinite(value)]
        if bad:
            raise RunFailed(
                f"the trained model gives a non-finite {bad[0]} ({metrics[bad[0]]}); nothing was written to "
                f"{args.out!r}; try a smaller --lr or --clip 1.0"
            )
        steps_run = int(state.step) if state is not None else len(history["step"])
        metrics.update(
            {
                "steps": config["steps"],
                "steps_run": steps_run,
                "best_step": history.get("best_step"),
                "stopped": history.get("stopped"),
                "interrupted": interrupted,
                "wall_time_seconds": history.get("wall_time", 0.0),
            }
        )
        model.save(os.path.join(folder.tmp, "model.npz"))
        if state is not None:
            state.save(os.path.join(folder.tmp, "training_state.npz"))
        write_json(os.path.join(folder.tmp, "config.json"), config)
        write_json(os.path.join(folder.tmp, "metrics.json"), metrics)
        write_json(os.path.join(folder.tmp, "history.json"), {k: finite_or_none(v) for k, v in history.items()})
        figures = [] if args.no_figures else task["figures"](model, history, folder.tmp)
        folder.commit()
    state_text = f"interrupted at step {steps_run} of {config['steps']}" if interrupted else f"{steps_run} steps"
    print(
        f"{config['model']} on {config['data']}: {task['summary'](metrics)}, {metrics['wall_time_seconds']:.1f} s, "
        f"{state_text}"
    )
    written = ["model.npz", "metrics.json"] + (["training_state.npz"] if state is not None else [])
    print(f"wrote {args.out}: " + ", ".join(written + [os.path.basename(f) for f in figures]))
    if interrupted:
        print(f"continue it with: python -m minflow train --resume {args.out}")
        return 130
    return 0


def _build_usage(config):
    try:
        return build_model(config)
    except ValueError as error:  # e.g. more --scales than the images allow
        raise UsageError(first_line(error)) from None


def _toy_task(config):
    """Data, metrics, figures and summary of a 2-D toy run (completing ``config`` with the standardizer)."""
    splits = toy_splits(config)
    config["standardizer"] = {k: v.tolist() for k, v in splits.standardizer.state_dict().items()}
    contexts = toy_contexts(config)  # the labels, one-hot, of a class-conditional run

    def figures(model, history, folder):
        if contexts is None:
            return write_figures(model, splits, history, folder, config["seed"])
        return write_conditional_figures(model, splits, contexts, history, folder, config["seed"])

    return {
        "train": splits.train,
        "val": splits.val,
        "contexts": contexts or (None, None, None),
        "metrics": lambda model: train.evaluate_splits(model, splits, contexts=contexts),
        "figures": figures,
        "summary": lambda m: (
            f"test NLL {m['test_nll']:.4f} nats (standardised data"
            + (", given the label)" if contexts is not None else ")")
        ),
    }


def write_figures(model, splits, history, folder, seed=0):
    """The run's figures; returns their paths. (matplotlib is needed here, and only here.)"""
    from . import plot

    # a model without one flow from data to latent (the continuously indexed flow) has no grid to warp
    names = (
        ("density", "samples", "warped_grid", "morph", "training")
        if hasattr(model, "flow")
        else ("density", "samples", "training")
    )
    paths = {name: os.path.join(folder, f"{name}.png") for name in names}
    shown = splits.test[:5000]
    plot.density(model, shown, path=paths["density"])
    plot.samples(model, shown, seed=seed, path=paths["samples"])
    if "warped_grid" in paths:
        plot.warped_grid(model, path=paths["warped_grid"])
        plot.morph(model, seed=seed, path=paths["morph"])
    _training_curve(history, paths["training"])
    return list(paths.values())


def write_conditional_figures(model, splits, contexts, history, folder, seed=0):
    """samples_by_label.png (each label's samples beside its test points) and training.png of a
    class-conditional run; returns their paths."""
    from . import plot

    paths = {name: os.path.join(folder, f"{name}.png") for name in ("samples_by_label", "training")}
    plot.samples_by_label(model, splits.test[:5000], contexts[2][:5000], seed=seed, path=paths["samples_by_label"])
    _training_curve(history, paths["training"])
    return list(paths.values())


def _training_curve(history, path):
    """training.png: the loss of every step and the validation NLLs of ``fit``'s history."""
    from . import plot

    curves = {"step": history["step"], "train_nll": history["loss"]}
    curves.update(val_step=history["val_step"], val_nll=history["val_nll"])
    plot.training_curves(curves, path=path)


# --- digits ------------------------------------------------------------------------------------
def run_image_training(config):
    """``train --data digits --model glow``: fit in model space, report bits/dim, draw digits.

    Completes ``config`` (alpha, image shape, and how many freshly dequantized copies of the
    training digits ``fit`` walks through) and returns the run's data, metrics and figures.
    """
    options = {"alpha": config["alpha"]} if "alpha" in config else {}
    splits = data.digits(seed=config["seed"], **options)
    config.setdefault("alpha", splits.alpha)
    config.setdefault("shape", list(splits.train.shape[1:]))
    # enough copies that (nearly) every training example drawn has noise of its own, at most 64
    config.setdefault("train_copies", min(64, -(-config["steps"] * config["batch_size"] // len(splits.train))))
    train_images = data.fresh_dequantizations(config["train_copies"], seed=config["seed"], alpha=splits.alpha)
    return {
        "train": train_images,
        "val": splits.val,
        # train_bpd: on splits.train, the training digits with data.digits' own noise
        "metrics": lambda model: train.evaluate_splits(model, splits),
        "figures": lambda model, history, folder: write_image_figures(model, splits, history, folder, config["seed"]),
        "summary": lambda m: f"test {m['test_bpd']:.3f} bits/dim",
    }


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
    plot.interpolations(
        model, x_pairs, steps=steps, path=paths["interpolations"], to_image=to_image, value_range=grey_levels
    )
    _training_curve(history, paths["training"])
    return list(paths.values())


# --- evaluate and sample -----------------------------------------------------------------------
def _non_finite_cause(model, folder):
    """Why a model gives NaN: its parameters, if any is not finite, else its outputs."""
    bad = train.non_finite_parameters(model)
    if bad:
        return f"{os.path.join(folder, 'model.npz')} holds non-finite parameters ({bad[0]!r}); train the run again"
    return "the model gives a non-finite log-density on this data"


def run_evaluate(args):
    """Print the run's test (and validation) metrics as strict JSON; a non-finite one is an error."""
    config, model, _ = load_run(args.run)
    if config["data"] in IMAGE_DATASETS:
        splits = data.digits(seed=config["seed"], alpha=config["alpha"])
    else:
        splits = toy_splits(config)
    contexts = None if config["data"] in IMAGE_DATASETS else toy_contexts(config)
    result = train.evaluate_splits(model, splits, names=("test", "val"), contexts=contexts)
    result.pop("test_nll_original_units", None)  # evaluate prints the NLLs of the space the model sees
    bad = [key for key, value in result.items() if not math.isfinite(value)]
    if bad:
        raise RunFailed(
            f"{bad[0]} is {result[bad[0]]}, not a number JSON can hold: {_non_finite_cause(model, args.run)}"
        )
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _sample_out(args):
    """The CSV path to write, checked: never a run's own file, an existing file only with --force."""
    out = args.out or os.path.join(args.run, "samples.csv")
    path = os.path.abspath(out)
    name, folder = os.path.basename(path), os.path.dirname(path)
    if not name or os.path.isdir(path):
        raise UsageError(f"--out {out!r} is a folder; name a CSV file")
    if is_run_folder(folder) and (name in RUN_FILES or name.endswith(".png")):
        raise UsageError(
            f"--out {out!r} is one of the run's own files, never overwritten (even with --force); name another file"
        )
    if os.path.lexists(path) and not args.force:
        raise UsageError(f"--out {out!r} already exists; pass --force to replace it or choose another --out")
    if not os.path.isdir(folder):
        raise UsageError(f"the folder of --out {out!r} does not exist; create it or choose another --out")
    return out


def _sample_context(args, config, model):
    """The one-hot row of ``--label`` for a conditional run (None otherwise), checked."""
    classes = getattr(model, "context_dim", 0)
    if not classes:
        if args.label is not None:
            raise UsageError(f"--label is for runs trained with --conditional; {args.run!r} was not")
        return None
    if args.label is None or args.label >= classes:
        given = "none was given" if args.label is None else f"got {args.label}"
        raise UsageError(
            f"{args.run!r} was trained with --conditional: pass --label 0..{classes - 1} "
            f"to choose what to sample ({given})"
        )
    row = numpy.zeros(classes)
    row[args.label] = 1.0
    return backend.to_device(row, dtype=model.float_dtype(), xp=model.array_module())


def _csv_rows(values):
    return "".join(",".join(map(repr, row)) + "\n" for row in values.tolist())


def run_sample(args):
    """Write ``--n`` samples as CSV, drawn and written ``SAMPLE_CHUNK`` at a time, into a temporary
    file renamed into place at the end (``checkpoint.written_whole``): an interrupted or failed
    command leaves no file."""
    config, model, standardizer = load_run(args.run)
    context = _sample_context(args, config, model)
    out = _sample_out(args)
    images = standardizer is None
    width = math.prod(config["shape"]) if images else 2
    header = ",".join(f"p{i}" for i in range(width)) if images else "x1,x2"
    rng = backend.rng(args.seed, model.array_module())  # one stream through all chunks
    opened, unblock = False, None
    try:
        with written_whole(out, "w") as file:
            opened = True
            file.write(header + "\n")
            for start in range(0, args.n, SAMPLE_CHUNK):
                count = min(SAMPLE_CHUNK, args.n - start)
                drawn = (
                    model.sample(count, seed=rng) if context is None else model.sample(count, seed=rng, context=context)
                )
                if images:  # one row of grey levels (0..17, row by row) per sample
                    values = data.from_model_space(drawn, config["alpha"]).reshape(count, -1)
                else:
                    values = standardizer.inverse_transform(backend.to_numpy(drawn))
                values = numpy.asarray(backend.to_numpy(values))
                if not numpy.isfinite(values).all():
                    raise RunFailed(
                        f"the samples are not finite (NaN or infinity among samples {start}..{start + count - 1}): "
                        f"{_non_finite_cause(model, args.run)}; nothing was written"
                    )
                file.write(_csv_rows(values))
            unblock = signals_blocked()  # a signal now waits until the file is in place and recorded
        committed.append(out)
    except OSError as error:
        if opened:
            raise
        raise UsageError(
            f"cannot write --out {out!r}: {error.strerror or error}; choose a folder you can write to"
        ) from None
    finally:
        if unblock is not None:
            unblock()
    print(f"wrote {args.n} samples to {out}")
    return 0


# --- main --------------------------------------------------------------------------------------
def _on_sigterm(signum, frame):
    raise Terminated()


def _one_line(error, command):
    """(exit code, one-line message) for an error that ended a command."""
    writes = command != "evaluate"
    late = f"; {committed[-1]} had been written completely" if committed else ""
    nothing = ("; nothing was written, existing files are unchanged" if writes else "") if not committed else late
    if isinstance(error, UsageError):
        return 2, str(error)
    if isinstance(error, RunFailed):
        return 1, str(error)
    if isinstance(error, Terminated):
        return 143, f"terminated (SIGTERM){nothing}"
    if isinstance(error, KeyboardInterrupt):
        return 130, f"aborted (Ctrl-C){nothing}"
    if isinstance(error, MemoryError):
        return 1, f"out of memory{nothing}; try a smaller model, --batch-size, --n-train or --n"
    return 1, f"{type(error).__name__}: {first_line(error)} (run again with --debug for the traceback)"


def main(argv=None):
    """Run one command; returns its exit code (0, or 130 for a run saved after Ctrl-C), or raises
    SystemExit with code 2 (bad input), 1 (failure), 130 (aborted by Ctrl-C), 143 (SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("MINFLOW_DEBUG", "").strip() not in ("", "0")
    command = {"demo": run_training, "train": run_training, "evaluate": run_evaluate, "sample": run_sample}
    defaults = (backend.backend_name(), backend.get_default_dtype())
    # A command is a whole process of train steps or of large batches: glibc's malloc keeps
    # freed memory for reuse (backend.keep_freed_memory; MINFLOW_KEEP_FREED_MEMORY=0 opts out).
    backend.keep_freed_memory()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    del committed[:]
    try:
        if args.command == "train":
            if args.resume:
                _check_resume_options(parser, argv)
            elif args.out is None:
                raise UsageError("the following arguments are required: --out (or --resume RUN)")
        # NumPy's overflow / invalid-value warnings would bury the one line: every NaN that
        # matters is found and reported (fit, evaluate and sample check), so they stay quiet
        # unless --debug asks for everything.
        with numpy.errstate(all="warn" if debug else "ignore"):
            return command[args.command](args)
    except (Exception, KeyboardInterrupt, Terminated) as error:
        code, message = _one_line(error, args.command)
        if debug:
            traceback.print_exc()
        message = " ".join(message.split("\n"))
        parser.exit(code, f"{parser.prog} {args.command}: error: {message}\n")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        backend.set_backend(defaults[0])
        backend.set_default_dtype(defaults[1])
