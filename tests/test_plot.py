"""Figures (minflow/plot.py): each figure shows what it claims to show.

The models are small but not the identity: every parameter of a freshly built flow is
perturbed with seeded Gaussian noise, so a figure that drew the base instead of the model,
or the forward map instead of the inverse, would fail. The pictures are checked through
the numbers matplotlib holds (the image array of a heat map, the points of a scatter, the
vertices of a line), recomputed independently from the model.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # belt and braces: plot.py never touches pyplot, so no backend should matter

from matplotlib.figure import Figure

import minflow
from minflow import backend, plot
from minflow.autodiff import Tensor, no_grad, ops
from minflow.flows import ActNorm, LULinear, RationalQuadraticSpline, Reverse, Sigmoid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def perturbed(flows, seed=0, scale=0.5, base=None):
    """NormalizingFlow(Sequential(flows)) with every parameter moved by scale * N(0, 1) noise."""
    model = minflow.NormalizingFlow(minflow.Sequential(flows), base=base)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + backend.to_device(scale * rng.standard_normal(p.shape), dtype=p.dtype)
    return model


def spline_model(seed=0):
    return perturbed([LULinear(2), RationalQuadraticSpline(2, bins=4), Reverse(2)], seed=seed)


def gaussian_model(seed=1):
    """A single perturbed LULinear: x = W^{-1}(z - b), so p(x) is exactly N(-W^{-1} b, W^{-1} W^{-T})."""
    return perturbed([LULinear(2)], seed=seed)


def host(t):
    return backend.to_numpy(t)


def log_prob(model, points):
    with no_grad():
        return host(model.log_prob(Tensor(backend.to_device(points))))


def cell_centres(bounds, resolution):
    (x0, x1), (y0, y1) = bounds
    xs = np.linspace(x0, x1, resolution + 1)
    ys = np.linspace(y0, y1, resolution + 1)
    xs, ys = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    return np.array([[x, y] for y in ys for x in xs])  # row by row, bottom row first, as imshow(origin="lower")


def ring(z):
    """An unnormalised log-density: a ring of radius 2 and width 0.4 (a U-style energy)."""
    radius = ops.sqrt(ops.sum(z * z, axis=1))
    return -0.5 * ((radius - 2.0) / 0.4) ** 2


DATA = np.random.default_rng(3).standard_normal((3000, 2)) * np.array([1.5, 0.7]) + np.array([0.5, -0.3])


@pytest.fixture(autouse=True)
def no_pyplot_figure_left_open():
    yield
    if "matplotlib.pyplot" in sys.modules:  # some other test may have imported it; plot.py must add nothing
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def heat_map(ax):
    (image,) = ax.get_images()
    return np.asarray(image.get_array())


# --- imports ---------------------------------------------------------------------------------
def test_import_minflow_loads_no_matplotlib_and_plot_never_loads_pyplot():
    script = (
        "import sys, minflow\n"
        "assert 'matplotlib' not in sys.modules, 'import minflow imported matplotlib'\n"
        "from minflow import plot\n"
        "from minflow.flows import LULinear\n"
        "model = minflow.NormalizingFlow(minflow.Sequential([LULinear(2)]))\n"
        "plot.density(model, resolution=8); plot.warped_grid(model, lines=3, points_per_line=5)\n"
        "plot.morph(model, n=10); plot.samples(model, n=10)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'minflow.plot imported pyplot'\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(minflow.__file__)))  # the minflow under test
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# --- density -----------------------------------------------------------------------------------
def test_density_has_a_model_panel_a_data_panel_and_one_colorbar():
    model = spline_model()
    alone = plot.density(model, resolution=20)
    assert isinstance(alone, Figure) and len(alone.axes) == 2  # heat map + colorbar
    figure = plot.density(model, DATA, resolution=20, title="t")
    assert len(figure.axes) == 3  # model, data, colorbar
    left, right = figure.axes[:2]
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    assert left.get_images()[0].get_clim() == right.get_images()[0].get_clim()  # one colour scale


def test_density_heat_map_is_exp_log_prob_at_the_cell_centres():
    model, bounds, resolution = spline_model(), ((-3.0, 2.0), (-1.5, 4.0)), 37
    figure = plot.density(model, bounds=bounds, resolution=resolution)
    expected = np.exp(log_prob(model, cell_centres(bounds, resolution))).reshape(resolution, resolution)
    image = figure.axes[0].get_images()[0]
    # Same formula on the same points, only batched differently: agreement to rounding.
    np.testing.assert_allclose(heat_map(figure.axes[0]), expected, rtol=1e-12, atol=0)
    assert image.get_extent() == [-3.0, 2.0, -1.5, 4.0] and image.origin == "lower"


def test_density_evaluates_large_grids_in_chunks(monkeypatch):
    model, calls = spline_model(), []
    real = model.log_prob
    monkeypatch.setattr(model, "log_prob", lambda x: calls.append(x.shape[0]) or real(x))
    plot.density(model, resolution=150)  # 22,500 points
    assert calls == [plot.CHUNK, plot.CHUNK, 150**2 - 2 * plot.CHUNK]


def test_density_default_bounds_pad_the_data_range_by_ten_percent():
    figure = plot.density(spline_model(), DATA, resolution=10)
    low, high = DATA.min(axis=0), DATA.max(axis=0)
    pad = 0.1 * (high - low)
    np.testing.assert_allclose(figure.axes[0].get_xlim(), (low[0] - pad[0], high[0] + pad[0]))
    np.testing.assert_allclose(figure.axes[0].get_ylim(), (low[1] - pad[1], high[1] + pad[1]))
    assert plot.density(spline_model(), resolution=10).axes[0].get_xlim() == (-4.0, 4.0)


def test_density_histogram_panel_estimates_the_density_of_the_data():
    bounds = ((-6.0, 6.0), (-4.0, 4.0))
    figure = plot.density(spline_model(), DATA, bounds=bounds, resolution=20, bins=12)
    histogram = heat_map(figure.axes[1])
    cell = 12 * 8 / 12**2
    inside = np.all((DATA >= [-6, -4]) & (DATA <= [6, 4]), axis=1).mean()
    # counts / (N * cell area): integrates to the fraction of the data inside the view.
    assert histogram.shape == (12, 12)
    np.testing.assert_allclose(histogram.sum() * cell, inside, rtol=1e-12)
    counts, _, _ = np.histogram2d(DATA[:, 0], DATA[:, 1], bins=12, range=bounds)
    np.testing.assert_allclose(histogram, counts.T / (len(DATA) * cell))


def test_density_of_a_gaussian_model_integrates_to_one():
    model = gaussian_model()
    layer = model.flow.flows[0]
    with no_grad():
        inverse_weight = np.linalg.inv(host(layer.weight))
    mean, covariance = -inverse_weight @ host(layer.bias), inverse_weight @ inverse_weight.T
    sd = np.sqrt(np.diag(covariance))
    bounds = tuple((m - 8 * s, m + 8 * s) for m, s in zip(mean, sd))
    # Tolerance. Mass outside mean +- 8 sd per axis: <= 2 * 2 * P(N(0,1) > 8) ~ 2.5e-15. The midpoint
    # rule on a Gaussian is spectrally accurate (Poisson summation): its error is about
    # 4 exp(-2 pi^2 lambda_min / h^2), ~1e-34 once the cell width h <= sqrt(lambda_min) / 2, with
    # lambda_min the smallest eigenvalue of the covariance. What remains is the rounding of a
    # sum of ~10^5 float64 terms, ~1e-13; 1e-9 leaves a wide margin.
    width = max(high - low for low, high in bounds)
    resolution = int(np.ceil(width / (np.sqrt(np.linalg.eigvalsh(covariance).min()) / 2)))
    assert resolution <= 600, "this seed makes too thin a Gaussian for a fast test"
    figure = plot.density(model, bounds=bounds, resolution=resolution)
    cell = (bounds[0][1] - bounds[0][0]) * (bounds[1][1] - bounds[1][0]) / resolution**2
    assert abs(heat_map(figure.axes[0]).sum() * cell - 1.0) < 1e-9


def test_density_of_a_spline_model_integrates_to_one():
    model = spline_model()
    linear_layer = model.flow.flows[0]
    with no_grad():
        weight, bias = host(linear_layer.weight), host(linear_layer.bias)
    # The spline is the identity outside [-3, 3], so beyond u = W x + b in [-9, 9]^2 the density is
    # Gaussian with P(|z_i| > 9) ~ 2e-19: the box that holds that square in x loses nothing visible.
    corners = np.array([[-9, -9], [-9, 9], [9, -9], [9, 9]]) - bias
    x = np.linalg.solve(weight, corners.T).T
    bounds = tuple(zip(x.min(axis=0), x.max(axis=0)))
    figure = plot.density(model, bounds=bounds, resolution=400)
    cell = (bounds[0][1] - bounds[0][0]) * (bounds[1][1] - bounds[1][0]) / 400**2
    # Tolerance. A rational-quadratic spline is only C^1 at its knots (its second derivative
    # jumps), so there the midpoint rule's error is O(h^2) instead of spectrally small; measured
    # ~1e-6 at this resolution, 1e-4 leaves a margin of 100.
    assert abs(heat_map(figure.axes[0]).sum() * cell - 1.0) < 1e-4


# --- samples -------------------------------------------------------------------------------------
def test_samples_shows_model_samples_beside_a_subset_of_the_data():
    model = spline_model()
    figure = plot.samples(model, DATA, n=500, seed=4)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    shown_model = figure.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(shown_model, host(model.sample(500, seed=4)))
    shown_data = np.asarray(figure.axes[1].collections[0].get_offsets())
    assert shown_data.shape == (500, 2)
    assert {tuple(p) for p in shown_data} <= {tuple(p) for p in DATA}  # a subset of the data, same n
    assert figure.axes[0].get_xlim() == figure.axes[1].get_xlim()
    assert len(plot.samples(model, n=100).axes) == 1


# --- warped grid ---------------------------------------------------------------------------------
def test_warped_grid_right_panel_is_the_inverse_of_the_left():
    model = spline_model()
    figure = plot.warped_grid(model, lines=5, points_per_line=30)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    latent, data = figure.axes
    assert len(latent.lines) == len(data.lines) == 10
    for straight, bent in zip(latent.lines, data.lines):
        z = straight.get_xydata()
        assert np.ptp(z[:, 0]) == 0 or np.ptp(z[:, 1]) == 0  # a straight, axis-aligned line
        with no_grad():
            x, _ = model.flow.inverse(Tensor(backend.to_device(z)))
        np.testing.assert_allclose(bent.get_xydata(), host(x), rtol=1e-12, atol=1e-12)
    corners = np.concatenate([line.get_xydata() for line in latent.lines])
    np.testing.assert_array_equal(corners.min(axis=0), [-3, -3])
    np.testing.assert_array_equal(corners.max(axis=0), [3, 3])


def test_warped_grid_data_grid_row_maps_a_straight_data_grid_forward():
    model = spline_model()
    figure = plot.warped_grid(model, lines=4, points_per_line=20, data_grid=True)
    assert len(figure.axes) == 4
    straight, bent = figure.axes[2], figure.axes[3]
    for line, image in zip(straight.lines, bent.lines):
        with no_grad():
            z, _ = model.flow.forward(Tensor(backend.to_device(line.get_xydata())))
        np.testing.assert_allclose(image.get_xydata(), host(z), rtol=1e-12, atol=1e-12)


class UnitSquare:
    """Uniform on (0, 1)^2: a base for a flow that ends in a Sigmoid."""

    event_shape = (2,)

    def log_prob(self, z):
        return ops.sum(z * 0.0, axis=1)

    def sample(self, n, seed=None, dtype=None):
        return backend.rng(seed).random((n, 2), dtype=dtype or backend.get_default_dtype())


def test_warped_grid_names_the_domain_when_the_inverse_rejects_the_grid():
    model = perturbed([LULinear(2), Sigmoid()], base=UnitSquare())
    with pytest.raises(ValueError, match=r"inverse.*\(-3\.0, 3\.0\).*\(0\.0, 1\.0\)"):
        plot.warped_grid(model)
    figure = plot.warped_grid(model, bounds=((0.05, 0.95), (0.05, 0.95)), lines=3, points_per_line=10)
    assert len(figure.axes) == 2


# --- morph ---------------------------------------------------------------------------------------
def test_morph_starts_at_base_samples_and_ends_at_model_samples():
    model = spline_model()
    figure = plot.morph(model, n=300, seed=7)
    assert isinstance(figure, Figure) and len(figure.axes) == 4  # base, after 2 layers, data
    first = figure.axes[0].collections[0].get_offsets()
    last = figure.axes[-1].collections[0].get_offsets()
    np.testing.assert_array_equal(first, host(model.base.sample(300, seed=7)))
    np.testing.assert_allclose(last, host(model.sample(300, seed=7)), rtol=1e-12, atol=1e-12)
    titles = [ax.get_title().split("\n")[0] for ax in figure.axes]
    assert titles == ["base", "after layer 1", "after layer 2", "data"]
    assert "Reverse" in figure.axes[1].get_title()  # flows[2], the last layer, is inverted first


def test_morph_middle_panels_are_the_inverse_steps():
    model = spline_model()
    figure = plot.morph(model, n=50, seed=1)
    with no_grad():
        steps = model.flow.inverse_steps(Tensor(model.base.sample(50, seed=1)))
    for ax, step in zip(figure.axes, steps):
        np.testing.assert_array_equal(ax.collections[0].get_offsets(), host(step))


def test_morph_shows_at_most_max_panels_always_base_and_data():
    model = perturbed([LULinear(2), RationalQuadraticSpline(2, bins=4), Reverse(2)] * 4)  # 12 layers
    figure = plot.morph(model, n=50, max_panels=5)
    titles = [ax.get_title().split("\n")[0] for ax in figure.axes]
    assert titles == ["base", "after layer 3", "after layer 6", "after layer 9", "data"]
    assert len(plot.morph(model, n=50, max_panels=2).axes) == 2


def test_morph_of_a_flow_that_is_not_sequential_has_two_panels():
    model = minflow.NormalizingFlow(RationalQuadraticSpline(2, bins=4))
    figure = plot.morph(model, n=40, seed=2)
    assert [ax.get_title().split("\n")[0] for ax in figure.axes] == ["base", "data"]
    np.testing.assert_allclose(figure.axes[1].collections[0].get_offsets(), host(model.sample(40, seed=2)))


# --- energy --------------------------------------------------------------------------------------
def test_energy_heat_map_is_the_target_normalised_on_the_grid():
    bounds, resolution = ((-4.0, 4.0), (-3.0, 3.0)), 60
    figure = plot.energy(ring, bounds=bounds, resolution=resolution)
    assert isinstance(figure, Figure) and len(figure.axes) == 2  # heat map + colorbar
    with no_grad():
        log_p = host(ring(Tensor(cell_centres(bounds, resolution)))).reshape(resolution, resolution)
    cell = 8 * 6 / resolution**2
    expected = np.exp(log_p) / (np.exp(log_p).sum() * cell)  # p~ / Z with Z by the midpoint rule
    np.testing.assert_allclose(heat_map(figure.axes[0]), expected, rtol=1e-10)


def test_energy_title_reports_log_z_of_the_target():
    figure = plot.energy(ring, bounds=((-5.0, 5.0), (-5.0, 5.0)), resolution=200)
    reported = float(re.search(r"log Z \u2248 (-?[0-9.]+)", figure.axes[0].get_title()).group(1))
    # Z = int exp(-(r - 2)^2 / (2 * 0.4^2)) r dr dtheta = 2 pi * 2 * sqrt(2 pi) * 0.4, up to the
    # mass at r < 0 (5 sd away, ~1e-7) and beyond the box (7.5 sd, less). The title rounds to 3
    # decimals (error <= 5e-4); the midpoint rule on this smooth integrand adds far less.
    assert abs(reported - np.log(2 * np.pi * 2 * np.sqrt(2 * np.pi) * 0.4)) < 1e-3


def test_energy_draws_samples_over_the_heat_map():
    model = spline_model()
    points = host(model.sample(200, seed=0))
    figure = plot.energy(ring, resolution=20, samples=points)
    np.testing.assert_array_equal(figure.axes[0].collections[0].get_offsets(), points)
    assert figure.axes[0].get_xlim() == (-4.0, 4.0)


def test_energy_rejects_a_log_density_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"log_density must map a Tensor \(B, 2\) to a Tensor \(B,\)"):
        plot.energy(lambda z: ops.sum(z, axis=1, keepdims=True), resolution=5)


# --- training curves -------------------------------------------------------------------------------
def test_training_curves_plot_train_and_validation_nll():
    steps = list(range(1, 201))
    train = [2.0 + 3.0 / s for s in steps]
    history = {"step": steps, "train_nll": train, "val_step": [50, 100, 150, 200], "val_nll": [2.2, 2.1, 2.05, 2.04]}
    figure = plot.training_curves(history)
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    lines = figure.axes[0].lines
    np.testing.assert_array_equal(lines[0].get_xydata(), np.column_stack([steps, train]))
    np.testing.assert_array_equal(lines[-1].get_xydata(), [[50, 2.2], [100, 2.1], [150, 2.05], [200, 2.04]])
    with_lr = plot.training_curves(dict(history, lr=[1e-3] * 200))
    assert len(with_lr.axes) == 2
    assert len(plot.training_curves({"step": [1, 2], "loss": [1.0, 0.5], "val_step": [], "val_nll": []}).axes) == 1


def test_training_curves_reject_mismatched_history():
    with pytest.raises(ValueError, match="equal length"):
        plot.training_curves({"step": [1, 2, 3], "train_nll": [1.0, 2.0]})
    with pytest.raises(ValueError, match="needs 'step'"):
        plot.training_curves({"steps": [1]})


# --- saving and bad input --------------------------------------------------------------------------
FIGURES = {
    "density": lambda model, path: plot.density(model, DATA, resolution=30, path=path),
    "samples": lambda model, path: plot.samples(model, DATA, n=200, path=path),
    "warped_grid": lambda model, path: plot.warped_grid(model, lines=5, points_per_line=20, path=path),
    "morph": lambda model, path: plot.morph(model, n=200, path=path),
    "energy": lambda model, path: plot.energy(ring, resolution=30, path=path),
    "training_curves": lambda model, path: plot.training_curves(
        {"step": [1, 2, 3], "train_nll": [3.0, 2.0, 1.5]}, path=path
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_saves_a_png_creating_parent_folders(name, tmp_path):
    path = tmp_path / "new" / "folder" / f"{name}.png"
    figure = FIGURES[name](spline_model(), path)
    assert isinstance(figure, Figure)
    content = path.read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 1024
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_save_returns_the_path(tmp_path):
    figure = plot.training_curves({"step": [1, 2], "train_nll": [1.0, 0.5]})
    assert plot.save(figure, tmp_path / "a" / "curves.png") == str(tmp_path / "a" / "curves.png")


MODEL_FIGURES = {
    "density": lambda model: plot.density(model, resolution=5),
    "samples": lambda model: plot.samples(model, n=10),
    "warped_grid": lambda model: plot.warped_grid(model, lines=2, points_per_line=2),
    "morph": lambda model: plot.morph(model, n=10),
}


@pytest.mark.parametrize("name", sorted(MODEL_FIGURES))
def test_models_that_are_not_2d_raise_value_error(name):
    model = perturbed([LULinear(3)])
    with pytest.raises(ValueError, match=r"event shape \(2,\).*\(3,\)"):
        MODEL_FIGURES[name](model)


@pytest.mark.parametrize("bad", [np.zeros((10, 3)), np.zeros(10), np.zeros((0, 2)), [[0.0, np.nan]]])
def test_data_that_is_not_2d_points_raises_value_error(bad):
    with pytest.raises(ValueError, match=r"shape \(N, 2\)|non-finite"):
        plot.density(spline_model(), bad, resolution=5)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)|non-finite"):
        plot.energy(ring, resolution=5, samples=bad)


@pytest.mark.parametrize("bounds", [((1, 0), (0, 1)), ((0, 1),), ((0, np.inf), (0, 1)), "wide"])
def test_bad_bounds_raise_value_error(bounds):
    with pytest.raises(ValueError, match="bounds must be"):
        plot.density(spline_model(), bounds=bounds, resolution=5)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: plot.density(m, resolution=1),
        lambda m: plot.morph(m, max_panels=1),
        lambda m: plot.warped_grid(m, lines=1),
        lambda m: plot.samples(m, n=0),
    ],
)
def test_bad_counts_raise_value_error(call):
    with pytest.raises(ValueError, match="must be an int"):
        call(spline_model())


def test_an_uninitialised_actnorm_is_refused_not_initialised_from_the_grid():
    model = minflow.NormalizingFlow(minflow.Sequential([ActNorm(2), LULinear(2)]))
    before = {name: host(array).copy() for name, array in model.state_dict().items()}
    with pytest.raises(ValueError, match="ActNorm.*not initialised"):
        plot.density(model, resolution=5)
    after = model.state_dict()
    assert all(np.array_equal(before[name], host(after[name])) for name in before)
    model.log_prob(Tensor(backend.to_device(DATA)))  # initialised from the data: now it can be drawn
    assert len(plot.density(model, resolution=5).axes) == 2
