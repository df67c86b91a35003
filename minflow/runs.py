"""Run folders: written whole or not at all, and read back with one clear error each.

A run folder (see ``minflow.cli``) is what the command line leaves behind. Two promises:

- **Written whole or not at all.** :class:`RunFolder` writes into a temporary sibling folder
  (``.NAME.tmp-XXXX``) and renames it into place once complete; an old run is moved aside
  first and deleted only after the new one is in. A rename is atomic on one file system, so
  at every moment the path holds the old run or the new one, never half of either. Signals
  are held back (``signals_blocked``) around the few renames that must happen together.
- **Read back with one clear error.** :func:`load_run` rebuilds a run's model and checks
  every file on the way; each way a folder can be damaged (missing, not JSON, a checkpoint
  from another run, another format version) is one :class:`UsageError` naming the file and
  the fix, never a traceback and never a suggestion to unpickle.
"""

import json
import math
import os
import secrets
import shutil
import signal
import tempfile

from . import backend, data, models
from .checkpoint import load_arrays

IMAGE_DATASETS = ("digits",)


class UsageError(Exception):
    """Bad input found after parsing (a missing run folder, a damaged checkpoint): one line, exit code 2."""


class RunFailed(Exception):
    """A failure at run time (training diverged, the model gives NaN): one line, exit code 1."""


# --- writing a folder or a file whole, or not at all ----------------------------------------------
committed = []  # paths written completely by this command (for an honest message after a late signal)


def signals_blocked():
    """Block SIGINT and SIGTERM (they stay pending) around a few renames that must all happen."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        return lambda: None
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    return lambda: mask(signal.SIG_SETMASK, old)


def usual_permissions(path, mode):
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def is_run_folder(path):
    return os.path.isfile(os.path.join(path, "config.json"))


def _written_by(path):
    try:
        with open(os.path.join(path, "config.json")) as file:
            return json.load(file).get("written_by")
    except (OSError, ValueError, AttributeError):
        return None


class RunFolder:
    """``with RunFolder(out, ...) as folder:`` write into ``folder.tmp``, then ``folder.commit()``.

    Entering checks ``out`` and makes the temporary sibling folder (so a location that cannot
    be written fails *before* training); leaving without a commit removes it (and any parent
    folders it made). ``commit`` renames the old folder aside, the new one in, then deletes
    the old one: at every moment ``out`` is either the old run or the new one, whole.
    """

    def __init__(self, out, option="--out", force=False, demo=False, replaces_itself=False):
        if not out or not out.strip():
            raise UsageError(f"{option} is empty; name the run folder to write")
        self.given, self.path = out, os.path.abspath(os.path.normpath(out))
        self.option, self.force, self.demo, self.replaces_itself = option, force, demo, replaces_itself
        self.tmp, self.made = None, []

    def _check(self):
        path, shown = self.path, f"{self.option} {self.given!r}"
        cwd = os.path.abspath(os.getcwd())
        if path == cwd or cwd.startswith(path.rstrip(os.sep) + os.sep) or os.path.dirname(path) == path:
            raise UsageError(f"{shown} is the current folder or contains it; name a new folder for the run")
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UsageError(f"{shown} is a file, not a folder; choose another {self.option}")
        if os.path.isdir(path) and not self.replaces_itself and os.listdir(path):
            if not is_run_folder(path):
                raise UsageError(
                    f"{shown} exists and is not a run folder (no config.json); minflow replaces only run "
                    f"folders, even with --force: choose another {self.option}"
                )
            if not self.force and not (self.demo and _written_by(path) == "demo"):
                mine = " and was not written by the demo" if self.demo else ""
                raise UsageError(
                    f"{shown} already exists{mine}; pass --force to replace it (the old run is kept until "
                    f"the new one is complete) or choose another {self.option}"
                )
        ancestor = os.path.dirname(path)
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            raise UsageError(f"cannot create {shown}: {ancestor!r} is a file; choose another {self.option}")

    def __enter__(self):
        self._check()
        parent = os.path.dirname(self.path)
        missing = []
        while not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        try:
            for folder in reversed(missing):
                os.mkdir(folder)
                self.made.append(folder)
            self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.tmp-", dir=os.path.dirname(self.path))
        except OSError as error:
            self._clean()
            raise UsageError(
                f"cannot write {self.option} {self.given!r}: {error.strerror or error}; "
                f"choose a folder you can write to"
            ) from error
        return self

    def commit(self):
        usual_permissions(self.tmp, 0o777)
        parent, name = os.path.dirname(self.path), os.path.basename(self.path)
        aside = None
        unblock = signals_blocked()
        try:
            if os.path.lexists(self.path):
                aside = os.path.join(parent, f".{name}.old-{secrets.token_hex(4)}")
                os.rename(self.path, aside)
            try:
                os.rename(self.tmp, self.path)
            except OSError:
                if aside is not None:
                    os.rename(aside, self.path)
                raise
            self.tmp = None
            committed.append(self.path)
        finally:
            unblock()
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def _clean(self):
        unblock = signals_blocked()  # a Ctrl-C now must not leave half a temporary folder
        try:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
            for folder in reversed(self.made):
                try:
                    os.rmdir(folder)
                except OSError:
                    break
        finally:
            unblock()

    def __exit__(self, *exc):
        if self.tmp is not None:  # not committed: leave nothing behind
            self._clean()
        return False


def write_json(path, content):
    with open(path, "w") as file:
        file.write(json.dumps(content, indent=2, allow_nan=False) + "\n")


def finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


# --- runs ---------------------------------------------------------------------------------------
def _toy_arguments(config):
    return {key: config[key] for key in ("n_train", "n_val", "n_test", "seed", "noise")}


def toy_splits(config):
    return data.toy_data(config["data"], **_toy_arguments(config))


def toy_contexts(config):
    """The (train, val, test) labels, one-hot, of a class-conditional toy run's splits (the rows
    ``toy_splits`` returns); None for a run that is not conditional."""
    if not config.get("conditional"):
        return None
    return data.toy_labels(config["data"], **_toy_arguments(config))


def build_model(config):
    dim = tuple(config["shape"]) if "shape" in config else config["dim"]
    return models.build(config["model"], dim, seed=config["seed"], **config["model_options"])


def read_config(folder):
    """The run's config.json as a dict; UsageError naming the file if it is missing or not JSON."""
    if not os.path.exists(folder):
        raise UsageError(f"{folder!r} is not a run folder: it does not exist; give a folder written by 'train'")
    if not os.path.isdir(folder):
        raise UsageError(f"{folder!r} is not a run folder: it is a file; give a folder written by 'train'")
    path = os.path.join(folder, "config.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(folder, "model.npz"))):
        raise UsageError(f"{folder!r} is not a run folder (it needs config.json and model.npz; write one with 'train')")
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}); restore it or train the run again") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if not isinstance(config, dict):
        raise UsageError(
            f"{path} holds a {type(config).__name__}, not a run's settings; restore it or train the run again"
        )
    return config


def use_run_settings(config, folder):
    """Make the run's recorded dtype (and backend, unless MINFLOW_BACKEND chooses one) the defaults,
    so that the model is rebuilt as it was trained. main() puts the old defaults back."""
    path = os.path.join(folder, "config.json")
    dtype = config.get("dtype", "float64")
    if dtype not in ("float32", "float64"):
        raise UsageError(
            f"{path}: dtype must be 'float32' or 'float64', got {dtype!r}; restore it or train the run again"
        )
    backend.set_default_dtype(dtype)
    name = config.get("backend", "numpy")
    if os.environ.get("MINFLOW_BACKEND") or name == backend.backend_name():
        return
    if name not in ("numpy", "cupy"):
        raise UsageError(f"{path}: backend must be 'numpy' or 'cupy', got {name!r}; restore it or train the run again")
    try:
        backend.set_backend(name)
    except ImportError as error:
        raise UsageError(
            f"{folder!r} was trained on the {name} backend, which is not available here "
            f"({str(error).splitlines()[0]}); set MINFLOW_BACKEND=numpy to use it on the CPU"
        ) from None


def build_from(config, folder):
    try:
        return build_model(config)
    except KeyError as error:
        raise UsageError(
            f"{os.path.join(folder, 'config.json')} lacks the setting {error}; restore it or train the run again"
        ) from None
    except (ValueError, TypeError) as error:
        raise UsageError(
            f"{os.path.join(folder, 'config.json')} does not describe a model minflow can build "
            f"({first_line(error)}); restore it or train the run again"
        ) from None


def load_checkpoint(model, folder):
    """Load RUN/model.npz into ``model``; every way it can fail is one UsageError naming the file."""
    path = os.path.join(folder, "model.npz")
    try:
        model.load(path)
        return
    except Exception as error:  # diagnose below, never by unpickling
        problem = error
    try:
        arrays = load_arrays(path)
    except Exception:
        raise UsageError(
            f"{path} is not a readable checkpoint (damaged, truncated or not written by minflow); train the run again"
        ) from None
    own = {name: tensor for name, tensor in model.named_parameters() + model.named_buffers()}
    missing = [name for name in own if name not in arrays]
    extra = [name for name in arrays if name not in own and not name.startswith("_")]
    disagree = f"{os.path.join(folder, 'config.json')} and {path} disagree (they come from different runs)"
    fix = "put back the matching pair of files or train the run again"
    if missing or extra:
        example = f"{missing[0]!r} is missing from model.npz" if missing else f"model.npz has {extra[0]!r} too"
        raise UsageError(
            f"{disagree}: the model config.json describes has {len(own)} arrays, model.npz has "
            f"{len(own) - len(missing) + len(extra)} ({example}); {fix}"
        ) from None
    for name, tensor in own.items():
        stored = arrays[name]
        if tuple(stored.shape) != tuple(tensor.shape):
            raise UsageError(
                f"{disagree}: {name!r} has shape {tuple(tensor.shape)} in the model config.json describes "
                f"and {tuple(stored.shape)} in model.npz; {fix}"
            ) from None
        if stored.dtype != tensor.dtype:
            raise UsageError(
                f"{disagree}: config.json says {tensor.dtype}, model.npz holds {stored.dtype}; {fix}"
            ) from None
    message = first_line(problem)  # e.g. another format version; it names the file already
    raise UsageError(message if path in message else f"{path}: {message}") from None


def load_run(folder):
    """(config, model, standardizer) of a run folder (standardizer None for digits); UsageError if it is not one.

    Sets the run's dtype (and backend, unless ``MINFLOW_BACKEND`` is set) as the defaults first.
    """
    config = read_config(folder)
    use_run_settings(config, folder)
    model = build_from(config, folder)
    load_checkpoint(model, folder)
    standardizer = None
    if "standardizer" in config:
        try:
            standardizer = data.Standardizer.from_state(config["standardizer"])
        except Exception as error:
            raise UsageError(
                f"{os.path.join(folder, 'config.json')}: its standardizer is not usable "
                f"({first_line(error)}); restore it or train the run again"
            ) from None
    elif config.get("data") not in IMAGE_DATASETS:
        raise UsageError(
            f"{os.path.join(folder, 'config.json')} lacks the setting 'standardizer'; restore it or train the run again"
        )
    return config, model, standardizer


def first_line(error):
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."
