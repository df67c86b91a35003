"""The command line never loses work (DESIGN.md section 7, issue 12).

Every case runs ``python -m minflow`` in a subprocess inside a workspace holding a trained run
and a few files of the user's, and checks three things: the exit code, exactly one non-empty
line on stderr saying what went wrong, and that every file present before the command is
byte-identical after it (no temporary file or folder left either), except where the command
succeeded and was told to replace them.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SMALL = [
    "--steps",
    "30",
    "--n-train",
    "400",
    "--n-test",
    "300",
    "--hidden",
    "16",
    "--layers",
    "2",
    "--no-progress",
    "--no-figures",
]
RUN_FILES = {"config.json", "model.npz", "training_state.npz", "metrics.json", "history.json"}


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("MINFLOW_DEBUG", None)
    if env.get("PYTHONPATH"):  # relative entries (the strict CuPy stand-in's) must work from another cwd
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p for p in env["PYTHONPATH"].split(os.pathsep))
    return env


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "minflow", *args], capture_output=True, text=True, cwd=cwd, env=_env())


def start(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "minflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(),
    )


def tree(folder):
    """Every file and folder under ``folder`` (hidden ones included): path -> sha256 of its bytes, or "dir"."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            with open(os.path.join(root, name), "rb") as file:
                found[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(file.read()).hexdigest()
    return found


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: "run" (2 layers) and "other" (3 layers: the same names, more of them)."""
    folder = tmp_path_factory.mktemp("trained")
    for name, layers in (("run", "2"), ("other", "3")):
        args = [a if a != "2" else layers for a in SMALL]
        done = run("train", "--out", name, *args, cwd=folder)
        assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def ws(tmp_path, runs):
    """A workspace: a copy of the trained run, another run's checkpoint, a file and a folder of the user's."""
    shutil.copytree(runs / "run", tmp_path / "run")
    shutil.copy(runs / "other" / "model.npz", tmp_path / "other_model.npz")
    shutil.copy(runs / "other" / "training_state.npz", tmp_path / "other_state.npz")
    (tmp_path / "notes.txt").write_text("a file of the user's\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("\\documentclass{article}\n")
    return tmp_path


# --- damaging a run's files -----------------------------------------------------------------------
def _edit_config(**changes):
    def edit(ws):
        path = ws / "run" / "config.json"
        config = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                del config[key]
            else:
                config[key] = value
        path.write_text(json.dumps(config))

    return edit


def _edit_model(change):
    def edit(ws):
        path = ws / "run" / "model.npz"
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
        change(arrays)
        with open(path, "wb") as file:
            np.savez(file, **arrays)

    return edit


def _nan_weights(arrays):
    name = next(n for n in arrays if not n.startswith("_") and arrays[n].size)
    arrays[name] = arrays[name] * np.nan


def _write(relative, content):
    def edit(ws):
        (ws / relative).write_bytes(content)

    return edit


def _truncate(relative):
    def edit(ws):
        content = (ws / relative).read_bytes()
        (ws / relative).write_bytes(content[: len(content) // 2])

    return edit


def _pickled(ws):
    with open(ws / "run" / "model.npz", "wb") as file:
        np.savez(file, weights=np.array([{"not": "an array"}], dtype=object))


def _other_checkpoint(ws):
    shutil.copy(ws / "other_model.npz", ws / "run" / "model.npz")


def _remove(relative):
    def edit(ws):
        os.remove(ws / relative)

    return edit


def _nothing(ws):
    pass


CASES = [
    # (id, setup, arguments, exit code, words of the one line)
    ("out-exists", _nothing, ["train", "--out", "run", *SMALL], 2, "--force"),
    ("out-is-a-file", _nothing, ["train", "--out", "notes.txt", *SMALL], 2, "is a file"),
    ("out-under-a-file", _nothing, ["train", "--out", "notes.txt/run", *SMALL], 2, "is a file"),
    (
        "out-not-a-run-folder-even-with-force",
        _nothing,
        ["train", "--out", "mine", "--force", *SMALL],
        2,
        "not a run folder",
    ),
    ("out-empty", _nothing, ["train", "--out", "", *SMALL], 2, "--out is empty"),
    ("out-current-folder", _nothing, ["train", "--out", ".", "--force", *SMALL], 2, "current folder"),
    ("out-missing", _nothing, ["train", *SMALL], 2, "required: --out"),
    ("demo-over-a-train-run", _nothing, ["demo", "--out", "run", *SMALL], 2, "not written by the demo"),
    ("seed-negative", _nothing, ["train", "--out", "new", "--seed", "-1", *SMALL], 2, "--seed"),
    ("seed-huge", _nothing, ["train", "--out", "new", "--seed", str(2**70), *SMALL], 2, "--seed"),
    ("noise-nan", _nothing, ["train", "--out", "new", "--noise", "nan", *SMALL], 2, "--noise"),
    ("noise-inf", _nothing, ["train", "--out", "new", "--noise", "inf", *SMALL], 2, "--noise"),
    ("noise-negative", _nothing, ["train", "--out", "new", "--noise", "-0.1", *SMALL], 2, "--noise"),
    ("lr-inf", _nothing, ["train", "--out", "new", "--lr", "inf", *SMALL], 2, "--lr"),
    ("clip-zero", _nothing, ["train", "--out", "new", "--clip", "0", *SMALL], 2, "--clip"),
    ("n-train-1", _nothing, ["train", "--out", "new", *SMALL, "--n-train", "1"], 2, "--n-train"),
    (
        "image-data-2d-model",
        _nothing,
        ["train", "--out", "new", "--data", "digits", "--model", "realnvp"],
        2,
        "image model",
    ),
    (
        "diverging",
        _nothing,
        ["train", "--out", "new", "--model", "nice", "--lr", "1e8", "--schedule", "constant", *SMALL],
        1,
        "--clip",
    ),
    ("evaluate-missing-run", _nothing, ["evaluate", "nowhere"], 2, "does not exist"),
    ("evaluate-a-file", _nothing, ["evaluate", "notes.txt"], 2, "is a file"),
    ("evaluate-not-a-run", _nothing, ["evaluate", "mine"], 2, "not a run folder"),
    (
        "checkpoint-garbage",
        _write("run/model.npz", b"#!/bin/sh\nrm -rf /\n"),
        ["evaluate", "run"],
        2,
        "not a readable checkpoint",
    ),
    ("checkpoint-empty", _write("run/model.npz", b""), ["evaluate", "run"], 2, "not a readable checkpoint"),
    ("checkpoint-truncated", _truncate("run/model.npz"), ["evaluate", "run"], 2, "not a readable checkpoint"),
    ("checkpoint-pickled", _pickled, ["evaluate", "run"], 2, "not a readable checkpoint"),
    ("checkpoint-of-another-run", _other_checkpoint, ["evaluate", "run"], 2, "disagree"),
    (
        "checkpoint-newer-format",
        _edit_model(lambda a: a.update(__minflow_format__=np.array(99))),
        ["evaluate", "run"],
        2,
        "format version 99",
    ),
    ("config-not-json", _write("run/config.json", b"{'data': moons"), ["evaluate", "run"], 2, "not valid JSON"),
    ("config-a-list", _write("run/config.json", b"[1, 2]"), ["evaluate", "run"], 2, "config.json"),
    ("config-no-model", _edit_config(model=None), ["evaluate", "run"], 2, "lacks the setting 'model'"),
    ("config-other-width", _edit_config(model_options={"hidden": 32, "layers": 2}), ["evaluate", "run"], 2, "disagree"),
    ("config-other-dtype", _edit_config(dtype="float32"), ["evaluate", "run"], 2, "disagree"),
    ("config-bad-dtype", _edit_config(dtype="float16"), ["evaluate", "run"], 2, "dtype"),
    ("config-unknown-model", _edit_config(model="nope"), ["sample", "run"], 2, "config.json"),
    ("nan-weights-evaluate", _edit_model(_nan_weights), ["evaluate", "run"], 1, "non-finite parameters"),
    ("nan-weights-sample", _edit_model(_nan_weights), ["sample", "run", "--out", "s.csv"], 1, "not finite"),
    ("sample-over-a-file", _nothing, ["sample", "run", "--out", "notes.txt"], 2, "--force"),
    (
        "sample-over-the-checkpoint",
        _nothing,
        ["sample", "run", "--out", "run/model.npz", "--force"],
        2,
        "run's own files",
    ),
    (
        "sample-over-the-config",
        _nothing,
        ["sample", "run", "--out", "run/config.json", "--force"],
        2,
        "run's own files",
    ),
    ("sample-into-a-folder", _nothing, ["sample", "run", "--out", "mine"], 2, "is a folder"),
    ("sample-into-nowhere", _nothing, ["sample", "run", "--out", "no/such/folder/s.csv"], 2, "does not exist"),
    (
        "resume-without-state",
        _remove("run/training_state.npz"),
        ["train", "--resume", "run", "--no-progress"],
        2,
        "cannot be resumed",
    ),
    (
        "resume-garbage-state",
        _write("run/training_state.npz", b"PK\x03\x04 not really"),
        ["train", "--resume", "run"],
        2,
        "cannot be resumed",
    ),
    (
        "resume-model-checkpoint-as-state",
        lambda ws: shutil.copy(ws / "run" / "model.npz", ws / "run" / "training_state.npz"),
        ["train", "--resume", "run"],
        2,
        "cannot be resumed",
    ),
    (
        "resume-another-runs-state",
        lambda ws: shutil.copy(ws / "other_state.npz", ws / "run" / "training_state.npz"),
        ["train", "--resume", "run", "--steps", "60"],
        2,
        "does not continue",
    ),
    ("resume-nothing-to-do", _nothing, ["train", "--resume", "run", "--steps", "30"], 2, "--steps"),
    ("resume-other-settings", _nothing, ["train", "--resume", "run", "--steps", "60", "--lr", "0.1"], 2, "drop --lr"),
    ("resume-missing-run", _nothing, ["train", "--resume", "nowhere", "--steps", "60"], 2, "does not exist"),
]
if os.path.isdir("/proc/self"):  # a folder nobody can write to, not even root
    CASES.append(("out-unwritable", _nothing, ["train", "--out", "/proc/minflow-run", *SMALL], 2, "cannot write"))


@pytest.mark.parametrize("setup, args, code, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_and_changes_no_file(ws, setup, args, code, words):
    setup(ws)
    before = tree(ws)
    done = run(*args, cwd=ws)
    line = one_line(done.stderr)
    assert done.returncode == code, done.stderr
    assert words in line and line.startswith("python -m minflow"), line
    assert "Traceback" not in done.stderr and "allow_pickle" not in line
    assert tree(ws) == before


def test_a_bad_minflow_backend_is_one_line_naming_the_variable(ws):
    # Python imports the package before minflow/__main__.py runs, so this error is caught in
    # minflow/__init__.py; a plain `import minflow` still raises (tests/test_backend.py).
    before = tree(ws)
    done = subprocess.run(
        [sys.executable, "-m", "minflow", "demo", "--no-figures"],
        capture_output=True,
        text=True,
        cwd=ws,
        env=dict(_env(), MINFLOW_BACKEND="tensorflow"),
    )
    line = one_line(done.stderr)
    assert done.returncode == 2 and "MINFLOW_BACKEND='tensorflow'" in line and "Traceback" not in done.stderr, line
    assert tree(ws) == before


def test_debug_shows_the_traceback(ws):
    done = run("evaluate", "run", "--debug", cwd=ws / "mine")
    assert done.returncode == 2 and "Traceback" in done.stderr and "not a run folder" in done.stderr
    env_done = subprocess.run(
        [sys.executable, "-m", "minflow", "evaluate", "nowhere"],
        capture_output=True,
        text=True,
        cwd=ws,
        env=dict(_env(), MINFLOW_DEBUG="1"),
    )
    assert env_done.returncode == 2 and "Traceback" in env_done.stderr


# --- replacing, when told to ------------------------------------------------------------------------
def test_force_replaces_a_run_whole_only_when_complete(ws):
    (ws / "run" / "density.png").write_bytes(b"a stale figure of the old run")
    others = {k: v for k, v in tree(ws).items() if not k.startswith("run")}
    done = run("train", "--out", "run", "--force", "--seed", "3", *SMALL, cwd=ws)
    assert done.returncode == 0, done.stderr
    assert set(os.listdir(ws / "run")) == RUN_FILES  # the stale figure went with the old run
    assert json.loads((ws / "run" / "config.json").read_text())["seed"] == 3
    assert {k: v for k, v in tree(ws).items() if not k.startswith("run")} == others  # nothing else, no temporaries


def test_demo_replaces_its_own_folder_and_nothing_else(ws):
    for _ in range(2):  # `make demo` twice
        done = run("demo", *SMALL, cwd=ws)
        assert done.returncode == 0, done.stderr
        assert json.loads((ws / "runs" / "demo" / "config.json").read_text())["written_by"] == "demo"
    assert sorted(os.listdir(ws / "runs")) == ["demo"]


def test_sample_force_replaces_the_csv(ws):
    (ws / "s.csv").write_text("old\n")
    done = run("sample", "run", "--n", "10", "--out", "s.csv", "--force", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert np.loadtxt(ws / "s.csv", delimiter=",", skiprows=1).shape == (10, 2)
    assert not [name for name in os.listdir(ws) if name.startswith(".")]


def test_sample_streams_chunks_of_one_random_stream(ws, monkeypatch):
    """Memory stays flat in --n: samples are drawn SAMPLE_CHUNK at a time (and a small chunk
    size gives the same samples as one chunk: one random stream runs through them all)."""
    from minflow import cli, models

    drawn, sample = [], models.NormalizingFlow.sample
    monkeypatch.setattr(
        models.NormalizingFlow, "sample", lambda self, n, seed=None: drawn.append(n) or sample(self, n, seed)
    )
    monkeypatch.chdir(ws)
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 7)
    assert cli.main(["sample", "run", "--n", "20", "--out", "a.csv"]) == 0
    assert drawn == [7, 7, 6]
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 65_536)
    assert cli.main(["sample", "run", "--n", "20", "--out", "b.csv"]) == 0
    a, b = (np.loadtxt(ws / name, delimiter=",", skiprows=1) for name in ("a.csv", "b.csv"))
    assert a.shape == (20, 2) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_float32_run_is_evaluated_and_sampled_in_float32(ws):
    done = run("train", "--out", "f32", "--dtype", "float32", *SMALL, cwd=ws)
    assert done.returncode == 0, done.stderr
    assert json.loads((ws / "f32" / "config.json").read_text())["dtype"] == "float32"
    evaluated = run("evaluate", "f32", cwd=ws)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((ws / "f32" / "metrics.json").read_text())
    assert json.loads(evaluated.stdout)["test_nll"] == pytest.approx(metrics["test_nll"], rel=1e-6)
    sampled = run("sample", "f32", "--n", "5", "--out", "f32.csv", cwd=ws)
    assert sampled.returncode == 0, sampled.stderr


@pytest.mark.skipif(bool(os.environ.get("MINFLOW_BACKEND")), reason="MINFLOW_BACKEND chooses the backend")
def test_a_gpu_run_without_cupy_says_how_to_use_the_cpu(ws):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    _edit_config(backend="cupy")(ws)
    before = tree(ws)
    done = run("evaluate", "run", cwd=ws)
    assert done.returncode == 2 and "MINFLOW_BACKEND=numpy" in one_line(done.stderr)
    assert tree(ws) == before


# --- signals ----------------------------------------------------------------------------------------
LONG = ["--steps", "1000000", "--n-train", "400", "--n-test", "300", "--hidden", "16", "--layers", "2", "--no-progress"]


def _wait_for_training(process):
    line = process.stdout.readline()  # "training ... (Ctrl-C stops and saves)", printed just before fit
    assert "training" in line or "resuming" in line, line
    time.sleep(0.3)  # fit has installed its Ctrl-C handler and is training


def _leftovers(ws):
    return [
        os.path.join(root, name)
        for root, dirs, files in os.walk(ws)
        for name in dirs + files
        if ".tmp-" in name or ".old-" in name or name.endswith(".tmp")
    ]


def test_first_ctrl_c_saves_an_interrupted_run(ws):
    before = tree(ws)
    process = start("train", "--out", "new", *LONG, "--no-figures", cwd=ws)
    _wait_for_training(process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted at step" in one_line(err) and "Ctrl-C again to abort" in err
    metrics = json.loads((ws / "new" / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 0 < metrics["steps_run"] < 1_000_000
    assert set(os.listdir(ws / "new")) == RUN_FILES
    assert "--resume new" in out
    assert {k: v for k, v in tree(ws).items() if not k.startswith("new")} == before


def test_second_ctrl_c_aborts_and_keeps_the_old_run(ws):
    before = tree(ws)
    process = start("train", "--out", "run", "--force", *LONG, cwd=ws)  # figures on: the save takes a while
    _wait_for_training(process)
    process.send_signal(signal.SIGINT)
    first = process.stderr.readline()
    assert "interrupted at step" in first and "saving" in first
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, first + err
    assert "aborted" in one_line(err) and "nothing was written" in err  # one line for each Ctrl-C
    assert tree(ws) == before


def test_sigterm_aborts_and_leaves_no_temporary_files(ws):
    before = tree(ws)
    process = start("train", "--out", "run", "--force", *LONG, "--no-figures", cwd=ws)
    _wait_for_training(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated" in one_line(err)
    assert tree(ws) == before


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_sample_leaves_no_file(ws, sig, code):
    before = tree(ws)
    process = start("sample", "run", "--n", "100000000", "--out", "s.csv", cwd=ws)
    deadline = time.monotonic() + 30
    while not [n for n in os.listdir(ws) if n.startswith(".s.csv.tmp-")] and time.monotonic() < deadline:
        time.sleep(0.02)  # until the temporary CSV exists: sampling has started
    time.sleep(0.2)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "nothing was written" in one_line(err)
    assert tree(ws) == before


# --- resume ----------------------------------------------------------------------------------------
def _arrays(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files if not name.startswith("_")}


def test_interrupted_and_resumed_equals_uninterrupted(ws):
    steps = [
        "--steps",
        "1000",
        "--n-train",
        "400",
        "--n-test",
        "300",
        "--hidden",
        "16",
        "--layers",
        "2",
        "--no-progress",
        "--no-figures",
    ]
    whole = run("train", "--out", "whole", *steps, cwd=ws)
    assert whole.returncode == 0, whole.stderr
    process = start("train", "--out", "parts", *steps, cwd=ws)
    _wait_for_training(process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, f"the run was not interrupted (finished before the signal?): {err}"
    interrupted = json.loads((ws / "parts" / "metrics.json").read_text())
    assert interrupted["interrupted"] and interrupted["steps_run"] < 1000

    resumed = run("train", "--resume", "parts", "--no-progress", "--no-figures", cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((ws / name / "metrics.json").read_text()) for name in ("whole", "parts"))
    assert b["interrupted"] is False and b["steps_run"] == a["steps_run"] == 1000
    for key in ("train_nll", "val_nll", "test_nll", "best_step"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    for name in ("model.npz", "training_state.npz"):
        whole_arrays, resumed_arrays = _arrays(ws / "whole" / name), _arrays(ws / "parts" / name)
        assert whole_arrays.keys() == resumed_arrays.keys()
        for key in whole_arrays:
            if whole_arrays[key].dtype.kind == "f":
                np.testing.assert_allclose(resumed_arrays[key], whole_arrays[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert len(json.loads((ws / "parts" / "history.json").read_text())["step"]) == 1000
    assert not _leftovers(ws)


def test_resume_into_another_folder_keeps_the_interrupted_run(ws):
    before = tree(ws / "run")
    done = run("train", "--resume", "run", "--steps", "40", "--out", "longer", "--no-progress", "--no-figures", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert tree(ws / "run") == before
    assert json.loads((ws / "longer" / "metrics.json").read_text())["steps_run"] == 40
