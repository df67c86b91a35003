"""Files written whole or not at all, and the checkpoints of modules and training runs.

**Atomic writes.** :func:`written_whole` is the one way minflow writes a file (a checkpoint,
a PNG, a CSV of samples): into a hidden temporary sibling (``.NAME.tmp-XXXX``), renamed over
the target only once it is complete. A rename is atomic within one file system, so a
reader of the path sees the old file or the new one, never half of one, and a crash or a
Ctrl-C while writing leaves the old file and no temporary one.

**Checkpoints** are plain ``.npz`` files of named arrays (:func:`save_arrays`,
:func:`load_arrays`), never pickles: loading a pickle can run any code. A model checkpoint
(:meth:`minflow.nn.Module.save`) holds the module's ``state_dict`` plus one entry
``__minflow_format__`` (a 0-d integer array, now ``1``) that says which layout the file has;
a training state (:class:`minflow.train.TrainingState`) is marked by
``__minflow_training_state__`` instead, so neither is mistaken for the other.
"""

import contextlib
import os
import secrets
import zipfile

import numpy

from . import backend

FORMAT_KEY = "__minflow_format__"
FORMAT_VERSION = 1
TRAINING_STATE_KEY = "__minflow_training_state__"


@contextlib.contextmanager
def written_whole(path, mode="wb"):
    """``with written_whole(path) as file:`` write ``file``; on leaving the block it replaces ``path``.

    The file is a fresh temporary one beside ``path`` (a rename is atomic only within one file
    system), opened with ``mode`` ("wb" or "w") and mode "x" (never an existing file); it gets
    the permissions of any file the user creates (``open`` honours the umask). If the block
    raises anything, ``KeyboardInterrupt`` and ``SystemExit`` included (a SIGTERM handler that
    raises), the temporary file is removed and ``path`` is left as it was. (A signal whose
    default action kills the process, like an unhandled SIGTERM, runs no Python code: a
    program that wants no temporary file then must install a handler that raises.)

    An ``OSError`` from creating the temporary file (a folder that does not exist or cannot be
    written) comes before the block runs, so a caller can tell it from an error while writing.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{secrets.token_hex(4)}")
    file = open(tmp, mode.replace("w", "x"))
    try:
        with file:
            yield file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_arrays(path, arrays):
    """Write a dict of arrays (host or device, or numbers) to ``path`` (.npz), atomically."""
    host = {key: backend.to_numpy(array) for key, array in arrays.items()}  # device -> host before any file exists
    with written_whole(path) as file:
        numpy.savez(file, **host)


def load_arrays(path):
    """Read a dict of host arrays from an .npz file.

    A file that is not an .npz archive, is truncated or corrupt, or holds Python objects
    (which would need unpickling, and unpickling a file can run any code: minflow never
    does it) raises a one-line ``ValueError`` naming the file. A missing or unreadable
    file raises the usual ``OSError`` (``FileNotFoundError``, ``PermissionError``...).
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        magic = file.read(4)
    if not magic:
        raise ValueError(f"could not read checkpoint {path!r}: the file is empty")
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise ValueError(f"could not read checkpoint {path!r}: it is not an .npz archive")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile, zlib and format errors all mean "not a checkpoint"
        if isinstance(error, zipfile.BadZipFile):
            reason = "the archive is truncated or corrupt"
        elif "pickle" in str(error):
            reason = "it holds Python objects, which minflow does not load (unpickling a file can run any code)"
        else:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"could not read checkpoint {path!r}: {reason}") from error


def check_format(value, supported, what):
    """Check a file's format-version entry (``None``: absent, read as version 1: files written
    before the entry existed); a file of another version is refused with one line."""
    if value is None:
        version = 1
    else:
        try:
            version = int(backend.to_numpy(value))
        except (TypeError, ValueError):
            raise ValueError(f"its format version {value!r} is not a number: not a minflow {what}") from None
    if version != supported:
        raise ValueError(
            f"it is a minflow {what} of format version {version}, and this minflow reads version "
            f"{supported} only (it was written by {'a newer' if version > supported else 'an older'} minflow)"
        )
