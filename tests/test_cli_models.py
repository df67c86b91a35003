"""The command line's model choices: a class-conditional run (--conditional), a learnable base
(--base diagonal | mixture) and the continuously indexed flow (--model cif), end to end: each
trains, is saved with everything it learned, is evaluated and sampled again from its folder,
and refuses the combinations it cannot honour with one line naming the fix."""

import json
import re

import numpy as np
import pytest
from test_cli import _run

from minflow import cli, data, runs

SMALL = ["--steps", "40", "--n-train", "600", "--n-test", "400", "--hidden", "16", "--layers", "2", "--no-progress"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "moons_by_label"
    steps = ["--steps", "150", "--lr", "5e-3"]  # after the SMALL settings, so these count
    cli.main(["train", "--data", "moons", "--conditional", "--out", str(folder), *SMALL, *steps])
    return folder


def test_a_conditional_run_records_its_labels_and_draws_them(conditional_run):
    config = json.loads((conditional_run / "config.json").read_text())
    assert config["conditional"] is True and config["model_options"]["context_dim"] == 2
    metrics = json.loads((conditional_run / "metrics.json").read_text())
    assert all(np.isfinite(metrics[key]) for key in ("train_nll", "val_nll", "test_nll"))
    assert (conditional_run / "samples_by_label.png").read_bytes().startswith(b"\x89PNG")


def test_evaluate_gives_a_conditional_run_its_labels(conditional_run, capsys):
    assert cli.main(["evaluate", str(conditional_run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((conditional_run / "metrics.json").read_text())
    assert printed["test_nll"] == pytest.approx(metrics["test_nll"], rel=1e-12)  # the same labels as in train


def test_sample_draws_the_label_asked_for(conditional_run, tmp_path):
    # After 150 steps the two labels' samples sit apart as the moons do: the upper moon (label 0)
    # has its mean at (0, 2/pi) = (0, 0.64), the lower one at (1, 1/2 - 2/pi) = (1, -0.14), in the
    # data's units; half of each gap is far outside the sampling error of a mean of 500 (~0.03).
    means = []
    for label in (0, 1):
        out = tmp_path / f"label{label}.csv"
        assert cli.main(["sample", str(conditional_run), "--label", str(label), "--n", "500", "--out", str(out)]) == 0
        means.append(np.loadtxt(out, delimiter=",", skiprows=1).mean(axis=0))
    assert means[1][0] - means[0][0] > 0.5 and means[0][1] - means[1][1] > 0.39, means


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "was trained with --conditional: pass --label 0..1"),
        (["--label", "2"], r"pass --label 0..1 to choose what to sample \(got 2\)"),
    ],
)
def test_sampling_a_conditional_run_needs_a_label_it_knows(conditional_run, tmp_path, args, message):
    out = tmp_path / "s.csv"
    done = _run("sample", str(conditional_run), "--out", str(out), *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and re.search(message, done.stderr), done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("base", "names"),
    [("diagonal", {"base.mean", "base.log_scale"}), ("mixture", {"base.logits", "base.means", "base.log_scales"})],
)
def test_a_learnable_base_is_trained_saved_and_loaded(tmp_path, base, names, capsys):
    folder = tmp_path / base
    extra = ["--components", "3"] if base == "mixture" else []
    assert cli.main(["train", "--data", "moons", "--base", base, *extra, "--out", str(folder), *SMALL]) == 0
    config, model, _ = runs.load_run(str(folder))
    assert {name for name, _ in model.named_parameters() if name.startswith("base.")} == names
    untrained = runs.build_model(config)
    moved = [
        name
        for (name, p), (_, q) in zip(model.named_parameters(), untrained.named_parameters())
        if name.startswith("base.") and not np.array_equal(p.data, q.data)
    ]
    assert moved, "the base's parameters were saved as they were trained, not as built"
    capsys.readouterr()
    assert cli.main(["evaluate", str(folder)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_nll"] == pytest.approx(
        json.loads((folder / "metrics.json").read_text())["test_nll"], rel=1e-12
    )


def test_the_continuously_indexed_flow_trains_from_the_command_line(tmp_path, capsys):
    folder = tmp_path / "cif"
    assert cli.main(["train", "--data", "moons", "--model", "cif", "--out", str(folder), *SMALL]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll"])
    # no single map from data to latent, so no warped grid or morph; density and samples it has
    assert (folder / "density.png").exists() and not (folder / "warped_grid.png").exists()
    out = tmp_path / "cif.csv"
    assert cli.main(["sample", str(folder), "--n", "50", "--out", str(out)]) == 0
    assert np.isfinite(np.loadtxt(out, delimiter=",", skiprows=1)).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--data", "circles", "--conditional"],
            "--conditional needs data with labels (moons); --data circles has none",
        ),
        (["--data", "digits", "--base", "mixture"], "--base mixture is for 2-D data"),
        (["--components", "3"], "--components sets the mixture base's components; add --base mixture"),
        (["--model", "cif", "--base", "mixture"], "--model cif has the normal base and no context"),
        (["--model", "cif", "--conditional"], "--model cif has the normal base and no context"),
    ],
)
def test_impossible_model_choices_are_one_line_and_exit_code_2(tmp_path, args, message):
    folder = tmp_path / "never"
    done = _run("train", "--out", str(folder), *args, "--steps", "1", "--no-progress")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not folder.exists()


def test_the_labels_of_a_run_are_those_of_its_points():
    config = {"data": "moons", "conditional": True, "n_train": 50, "n_val": 10, "n_test": 20, "seed": 4, "noise": None}
    labels = runs.toy_contexts(config)
    assert [len(part) for part in labels] == [50, 10, 20]
    expected = data.toy_labels("moons", n_train=50, n_val=10, n_test=20, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(labels, expected))
    assert runs.toy_contexts(dict(config, conditional=False)) is None
