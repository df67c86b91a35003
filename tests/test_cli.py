"""The command line, end to end, in a temporary folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minflow import cli, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = ["--steps", "30", "--n-train", "400", "--n-test", "300", "--hidden", "16", "--layers", "2", "--no-progress"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "moons"
    cli.main(["train", "--data", "moons", "--model", "realnvp", "--out", str(folder), *SMALL])
    return folder


def test_train_writes_checkpoint_metrics_and_figures(run_folder):
    names = set(os.listdir(run_folder))
    assert {"model.npz", "config.json", "metrics.json", "history.json"} <= names
    metrics = json.loads((run_folder / "metrics.json").read_text())
    for key in ("train_nll", "val_nll", "test_nll", "test_nll_original_units", "steps", "wall_time_seconds"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert metrics["steps"] == 30
    for figure in ("density", "samples", "warped_grid", "morph", "training"):
        content = (run_folder / f"{figure}.png").read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5_000, f"{figure}.png is not a real figure"


def test_evaluate_reproduces_the_test_nll_of_train(run_folder, capsys):
    result = cli.main(["evaluate", str(run_folder)])
    assert result == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert printed["test_nll"] == pytest.approx(metrics["test_nll"], rel=1e-12)


def test_sample_writes_csv_in_data_units(run_folder, tmp_path):
    out = tmp_path / "samples.csv"
    cli.main(["sample", str(run_folder), "--n", "200", "--seed", "1", "--out", str(out)])
    samples = np.loadtxt(out, delimiter=",", skiprows=1)
    assert samples.shape == (200, 2) and np.all(np.isfinite(samples))
    # Moons live in about [-1, 2] x [-0.5, 1] in their own units, not in standardised ones.
    assert -3 < samples[:, 0].mean() < 3


def _run(*args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    # The subprocess runs in another folder: a relative PYTHONPATH (the strict CuPy stand-in's,
    # PYTHONPATH=tests/support/strict_cupy) must name the same folders there.
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p for p in env["PYTHONPATH"].split(os.pathsep))
    return subprocess.run([sys.executable, "-m", "minflow", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_demo_runs_with_defaults_into_its_folder(tmp_path):
    # The real demo trains for longer; --steps keeps the test quick, everything else is the default.
    done = _run("demo", "--steps", "20", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "demo" / "density.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "test NLL" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "nope", "--out", "x"], "invalid choice: 'nope'"),
        (["train", "--steps", "-3", "--out", "x"], "expected a positive integer"),
        (["train"], "the following arguments are required: --out"),
        (["evaluate", "no/such/run"], "is not a run folder"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(args, message, tmp_path):
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["evaluate"], ["sample"]])
def test_help_everywhere(command):
    done = _run(*command, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout


def test_a_diverging_run_fails_with_one_line_and_exit_code_1(tmp_path, capsys, monkeypatch):
    # Stand in for a diverging run (tests/test_train.py shows fit raising on a real NaN).
    def diverge(*args, **kwargs):
        raise train.NonFiniteLossError("training stopped at step 7: the loss was nan", history={})

    monkeypatch.setattr(train, "fit", diverge)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", str(tmp_path / "run"), *SMALL])
    assert exit_.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "step 7" in message[0] and "nothing was written" in message[0]
    assert not (tmp_path / "run").exists()
