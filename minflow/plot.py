"""Figures for 2-D flows: what the model learned, and how it bends space to learn it.

Every function builds one matplotlib ``Figure`` and returns it; with ``path=...`` it also
writes the figure as a PNG (:func:`save`). What each figure teaches:

    density          the learned density p(x) = p_Z(f(x)) |det df/dx| as a heat map, beside
                     a histogram of the data on the same axes and colour scale
    samples          x = f^{-1}(z) for z drawn from the base, beside the data
    warped_grid      a straight grid in latent space and its image in data space: the map itself
    morph            base samples carried through the inverse one layer at a time, base -> data
    energy           an unnormalised target exp(log p~(x)) (reverse-KL training), with model samples
    training_curves  the NLL against the training step, train and validation

All of these are for models of 2-D points (event shape (2,)); anything else raises a
``ValueError``. Images have two figures of their own:

    image_grid       a batch of images (N, C, H, W) tiled into one picture (samples, data)
    interpolations   x_a and x_b mapped to z, the straight line between the z's, mapped back:
                     what the model puts between two images

Host and device. This is host-side code: the model computes on its own backend (NumPy or
CuPy). Grid points go to the device with ``backend.to_device`` in the dtype of the model's
parameters, ``CHUNK`` points at a time (so memory stays bounded at any resolution), under
``no_grad`` (no graph is recorded), and come back with ``backend.to_numpy``; only then does
matplotlib see them.

No pyplot. Figures are built as ``matplotlib.figure.Figure`` objects with an Agg canvas
attached, and saved through that canvas. pyplot is a state machine: it keeps a global
registry of open figures (each one stays alive until someone calls ``plt.close``, so a loop
that draws leaks memory), it has a global "current figure" that one function can change
under another, and with an interactive backend it opens windows. A ``Figure`` made directly
is an ordinary Python object: nothing global changes, no window can ever open (Agg only
rasterises), and it is freed like any other object when the last reference goes. This is
the way matplotlib recommends for libraries and for servers.

Importing minflow does not import this module, nor matplotlib: ask for it with
``from minflow import plot`` (matplotlib comes with ``pip install 'minflow[plot]'``).
"""

import os
import warnings

import numpy

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as error:  # the core of minflow needs NumPy only
    raise ImportError("minflow.plot needs matplotlib: pip install 'minflow[plot]'") from error

from . import backend, train
from .autodiff import Tensor, no_grad
from .checkpoint import written_whole
from .flows.base import Sequential

CHUNK = 10_000  # points per evaluation on the device: bounds memory for any grid resolution
DPI = 150  # of saved PNGs: a 4-inch panel becomes 600 pixels
PANEL = 4.0  # inches per panel
DEFAULT_BOUNDS = ((-4.0, 4.0), (-4.0, 4.0))
LATENT_BOUNDS = ((-3.0, 3.0), (-3.0, 3.0))  # each coordinate of N(0, I) lies here with probability 0.997


# --- the figures ---------------------------------------------------------------------------------
def density(model, data=None, bounds=None, resolution=200, title=None, path=None, bins=None):
    """Heat map of the learned density p(x), beside a histogram of ``data`` when given.

    What it teaches: what the model believes. The left panel is p(x) = p_Z(f(x)) |det df/dx|,
    computed exactly by ``model.log_prob`` at the centres of a resolution x resolution grid
    of cells over ``bounds``. The right panel is the data's own estimate of the same
    quantity, (points in a cell) / (N * cell area), with ``bins`` cells per axis. Both share
    the axes and the colour scale, so they compare directly: mass that the model puts where
    the data has none (a bridge between two moons, say) is the model's mistake.

    ``bounds`` is ((xmin, xmax), (ymin, ymax)); by default the data's range padded by 10% on
    every side, or (-4, 4)^2 without data. ``bins`` defaults to about sqrt(N) / 1.5 per axis
    (between 10 and ``resolution``), so that a cell where the data lives holds a few points.
    Returns the Figure: one or two panels and a colorbar.
    """
    where = "density"
    _check_model(model, where)
    _check_initialised(model, where)
    data = None if data is None else _host_points(data, "data", where)
    bounds = _check_bounds(bounds, where) if bounds is not None else _bounds_around(data, DEFAULT_BOUNDS)
    resolution = _check_count(resolution, "resolution", where, minimum=2)
    grid, _ = _grid(bounds, resolution)
    log_p = backend.to_numpy(train.log_probs(model, grid, batch_size=CHUNK)).reshape(resolution, resolution)
    _warn_not_finite(log_p, where, "log_prob")
    p = numpy.exp(log_p)

    panels = 1 if data is None else 2
    figure, (axes,) = _figure(panels, extra_width=1.0, sharex=True, sharey=True)
    heat_maps = [(p, axes[0], "model density p(x)")]
    if data is not None:
        bins = (
            _check_count(bins, "bins", where, minimum=1)
            if bins is not None
            else int(numpy.clip(numpy.sqrt(len(data)) / 1.5, 10, resolution))
        )
        counts, _, _ = numpy.histogram2d(data[:, 0], data[:, 1], bins=bins, range=bounds)
        cell = (bounds[0][1] - bounds[0][0]) * (bounds[1][1] - bounds[1][0]) / bins**2
        # histogram2d indexes [x bin, y bin]; an image is [row = y, column = x]: transpose.
        histogram = counts.T / (len(data) * cell)
        label = f"data: histogram of {len(data)} points" + _outside_note(data, bounds)
        heat_maps.append((histogram, axes[1], label))
    top = max(_finite_max(values) for values, _, _ in heat_maps)
    for values, ax, label in heat_maps:
        image = _heat_map(ax, values, bounds, vmax=top)
        ax.set_title(label)
        _label(ax, "x")
    figure.colorbar(image, ax=list(axes), label="density", shrink=0.9)
    if title:
        figure.suptitle(title)
    return _finish(figure, path)


def samples(model, data=None, n=2000, seed=0, bounds=None, path=None):
    """Scatter of ``n`` model samples beside (at most ``n`` points of) the data, same axes.

    What it teaches: sampling is the other direction of the same map. x = f^{-1}(z) with
    z ~ base; a model whose density (``density``) looks right but whose samples do not has a
    bad inverse, and where the samples spill outside the data the model has mass to spare.
    When the data has more than ``n`` points, a seeded random subset of ``n`` is shown, so
    both panels hold the same number of points. ``bounds`` defaults to the data's range
    padded by 10% (or the samples' range without data); points outside are counted in the title.
    """
    where = "samples"
    _check_model(model, where)
    n = _check_count(n, "n", where, minimum=1)
    x = backend.to_numpy(model.sample(n, seed=seed))
    if data is not None:
        data = _host_points(data, "data", where)
        if len(data) > n:  # a random subset: a data set may be stored in order (one moon, then the other)
            data = data[numpy.sort(numpy.random.default_rng(seed).choice(len(data), n, replace=False))]
    finite = x[numpy.isfinite(x).all(axis=1)]  # a broken inverse may give inf or NaN: count them, do not scale to them
    bounds = (
        _check_bounds(bounds, where)
        if bounds is not None
        else _bounds_around(data if data is not None else (finite if len(finite) else None), DEFAULT_BOUNDS)
    )

    panels = [(x, f"model: {n} samples (seed {seed})", "C0")]
    if data is not None:
        panels.append((data, f"data: {len(data)} points", "C1"))
    figure, (axes,) = _figure(len(panels), sharex=True, sharey=True)
    for (points, label, colour), ax in zip(panels, axes):
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, color=colour, linewidths=0)
        ax.set_title(label + _outside_note(points, bounds))
        _limits(ax, bounds)
        _label(ax, "x")
    return _finish(figure, path)


def samples_by_label(model, data, labels, n=1000, seed=0, bounds=None, path=None):
    """One panel per label k of a class-conditional model: ``n`` samples of p(x | k) beside
    the data points of label k.

    What it teaches: one model, K densities. The context selects which one is sampled, and
    each should sit on its own class's points only. ``labels`` (N, K) are the data's one-hot
    contexts; the model's ``context_dim`` must be K.
    """
    where = "samples_by_label"
    _check_model(model, where)
    n = _check_count(n, "n", where, minimum=1)
    data = _host_points(data, "data", where)
    labels = numpy.asarray(backend.to_numpy(labels))
    classes = getattr(model, "context_dim", 0)
    if labels.ndim != 2 or labels.shape != (len(data), classes):
        raise ValueError(
            f"{where}: labels must be one-hot, shape (N, K) = ({len(data)}, {classes}) for this model, "
            f"got {labels.shape}"
        )
    bounds = _check_bounds(bounds, where) if bounds is not None else _bounds_around(data, DEFAULT_BOUNDS)
    figure, (axes,) = _figure(classes, sharex=True, sharey=True)
    xp, dtype = model.array_module(), model.float_dtype()
    for k, ax in enumerate(axes):
        context = backend.to_device(numpy.eye(classes)[k], dtype=dtype, xp=xp)
        x = backend.to_numpy(model.sample(n, seed=seed + k, context=context))
        own = data[labels[:, k] == 1]
        ax.scatter(own[:, 0], own[:, 1], s=3, alpha=0.3, color="C1", linewidths=0, label=f"data, label {k}")
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, color="C0", linewidths=0, label="model samples")
        ax.set_title(f"p(x | label {k}): {n} samples" + _outside_note(x, bounds))
        ax.legend(loc="upper right", markerscale=3, fontsize="small")
        _limits(ax, bounds)
        _label(ax, "x")
    return _finish(figure, path)


def warped_grid(model, bounds=None, lines=15, points_per_line=200, data_grid=False, path=None):
    """How the flow bends space: a straight grid in latent space, and its image in data space.

    What it teaches: the map itself, not just its result. Left, ``lines`` horizontal and
    ``lines`` vertical lines over ``bounds`` in latent space (default (-3, 3)^2, where most of
    N(0, I) lives); right, the same lines carried to data space by the generative direction
    x = f^{-1}(z), with the same colours, so each line can be followed. Where lines crowd
    together the map compresses space and the density there is high (|det df/dx| is large);
    where they spread apart it is low. With ``data_grid=True`` a second row does the
    opposite: a straight grid over the region the first row reached in data space, and its
    image z = f(x) in latent space.

    A flow whose inverse has a restricted domain (one ending in a Sigmoid, say) may reject
    the grid: that raises a ``ValueError`` that names the bounds and the flow's domain.
    Returns the Figure: two panels (four with ``data_grid``).
    """
    where = "warped_grid"
    _check_model(model, where)
    bounds = _check_bounds(bounds, where) if bounds is not None else LATENT_BOUNDS
    lines = _check_count(lines, "lines", where, minimum=2)
    points_per_line = _check_count(points_per_line, "points_per_line", where, minimum=2)
    dtype, xp = model.float_dtype(), model.array_module()

    latent_lines, colours = _grid_lines(bounds, lines, points_per_line)
    data_lines = _map_lines(
        lambda z: model.flow.inverse(z)[0],
        latent_lines,
        model.flow.output_domain,
        bounds,
        where,
        "inverse, x = f^{-1}(z), rejected the latent grid",
        dtype,
        xp,
    )
    rows = [
        (
            latent_lines,
            data_lines,
            "latent space: a straight grid in z",
            "data space: the same lines, x = f\u207b\u00b9(z)",
            "z",
            "x",
        )
    ]
    if data_grid:
        _check_initialised(model, where)
        reached = data_lines.reshape(-1, 2)
        data_bounds = tuple((float(low), float(high)) for low, high in zip(reached.min(axis=0), reached.max(axis=0)))
        straight, _ = _grid_lines(data_bounds, lines, points_per_line)
        bent = _map_lines(
            lambda x: model.flow.forward(x)[0],
            straight,
            model.flow.input_domain,
            data_bounds,
            where,
            "forward, z = f(x), rejected the data grid",
            dtype,
            xp,
        )
        rows.append(
            (straight, bent, "data space: a straight grid in x", "latent space: the same lines, z = f(x)", "x", "z")
        )

    figure, axes = _figure(2, rows=len(rows))
    for row, (left, right, left_title, right_title, left_name, right_name) in enumerate(rows):
        for ax, drawn, label, name in (
            (axes[row, 0], left, left_title, left_name),
            (axes[row, 1], right, right_title, right_name),
        ):
            for line, colour in zip(drawn, colours):
                ax.plot(line[:, 0], line[:, 1], color=colour, linewidth=0.9)
            ax.set_title(label)
            ax.set_aspect("equal", adjustable="datalim")
            _label(ax, name)
    return _finish(figure, path)


def morph(model, n=2000, seed=0, max_panels=8, path=None):
    """The layer-by-layer morph from the base distribution to the data.

    What it teaches: a deep flow is a composition, and each layer does a small, visible
    thing. Draws z ~ base (``model.base.sample(n, seed)``) and carries it through the
    generative direction one layer at a time (``Sequential.inverse_steps``): h_0 = z, then
    h_i = flows[K - i].inverse(h_{i-1}), up to h_K = x. Shows at most ``max_panels`` of the
    K + 1 stages, evenly spaced, always the first ("base") and the last ("data"); each
    middle panel is titled "after layer i" and names the flow that made it. Points keep the
    colour of their angle in the base, so the reader can follow where each part of the
    Gaussian goes. The last panel is exactly ``model.sample(n, seed)``.
    A flow that is not a Sequential has two stages: base and data.
    """
    where = "morph"
    _check_model(model, where)
    n = _check_count(n, "n", where, minimum=1)
    max_panels = _check_count(max_panels, "max_panels", where, minimum=2)
    flow = model.flow
    z = Tensor(model.base.sample(n, seed=seed, dtype=model.float_dtype(), xp=model.array_module()))
    with no_grad():
        if isinstance(flow, Sequential):
            steps = flow.inverse_steps(z)
            layers = [f"flows[{k}].inverse\n({type(f).__name__})" for k, f in reversed(list(enumerate(flow.flows)))]
        else:
            steps = [z, flow.inverse(z)[0]]
            layers = [f"flow.inverse\n({type(flow).__name__})"]
    last = len(steps) - 1
    shown = numpy.unique(numpy.round(numpy.linspace(0, last, min(max_panels, last + 1))).astype(int))
    base = backend.to_numpy(steps[0])
    angle = numpy.arctan2(base[:, 1], base[:, 0])

    figure, (axes,) = _figure(len(shown), width=2.8, height=3.1)
    for ax, i in zip(axes, shown):
        points = backend.to_numpy(steps[i])
        # hsv is cyclic (angle -pi and pi get the same colour) and has no white that would vanish on the page.
        ax.scatter(points[:, 0], points[:, 1], c=angle, cmap="hsv", vmin=-numpy.pi, vmax=numpy.pi, s=2, linewidths=0)
        if i == 0:
            ax.set_title("base", fontsize=10)
        elif i == last:
            ax.set_title(f"data\nafter {layers[i - 1]}", fontsize=10)
        else:
            ax.set_title(f"after layer {i}\n{layers[i - 1]}", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
    figure.suptitle(
        f"base \u2192 data, one layer at a time ({last} layers; colour: angle of the point in the base)", fontsize=10
    )
    return _finish(figure, path)


def energy(log_density, bounds=DEFAULT_BOUNDS, resolution=200, samples=None, path=None):
    """Heat map of an unnormalised target density exp(log p~(x)), with optional model samples.

    What it teaches: reverse-KL training (``train.fit_to_density``) fits a flow to a density
    known only up to its normalising constant Z, from the formula alone, with no data.
    ``log_density`` takes a Tensor (B, 2) and returns a Tensor (B,) (the U1-U4 targets, say).
    The picture shows p~(x) / Z with Z estimated on the grid, Z ~ sum over cells of
    p~(x_cell) * cell area (computed as a log-sum-exp, so a large log p~ cannot overflow): a
    proper density on the box, on the same scale as ``density``'s picture of a model, and
    the estimate of log Z in the title is the value that the reverse-KL loss approaches
    from above (loss = KL + (-log Z) >= -log Z). Model ``samples`` (N, 2), when given, are
    drawn over it: mode-seeking reverse KL shows up as samples that cover some modes and
    miss others. Returns the Figure: one panel and a colorbar.
    """
    where = "energy"
    bounds = _check_bounds(bounds, where)
    resolution = _check_count(resolution, "resolution", where, minimum=2)
    samples = None if samples is None else _host_points(samples, "samples", where)

    def checked(x):
        out = log_density(x)
        if not (isinstance(out, Tensor) or backend.is_array(out)) or tuple(out.shape) != (x.shape[0],):
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"{where}: log_density must map a Tensor (B, 2) to a Tensor (B,); "
                f"for B = {x.shape[0]} it returned {got}"
            )
        return out

    grid, area = _grid(bounds, resolution)
    log_p = _evaluate(checked, grid, backend.get_default_dtype()).reshape(resolution, resolution)
    _warn_not_finite(log_p, where, "log_density")
    if numpy.isposinf(log_p).any() or not numpy.isfinite(log_p).any():
        raise ValueError(f"{where}: log_density is +inf somewhere or nowhere finite on the grid over {bounds}")
    finite = numpy.where(numpy.isnan(log_p), -numpy.inf, log_p)
    peak = finite.max()
    log_z = peak + numpy.log(numpy.sum(numpy.exp(finite - peak)) * area)  # log-sum-exp: no overflow
    p = numpy.exp(log_p - log_z)

    figure, ((ax,),) = _figure(1, extra_width=1.0)
    image = _heat_map(ax, p, bounds, vmax=_finite_max(p))
    figure.colorbar(image, ax=ax, label="p~(x) / Z", shrink=0.9)
    label = f"target density, log Z \u2248 {log_z:.3f} (grid estimate)"
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=2, color="white", alpha=0.6, linewidths=0)
        label += f"\nwith {len(samples)} model samples" + _outside_note(samples, bounds).replace("\n", " ")
        _limits(ax, bounds)
    ax.set_title(label, fontsize=10)
    _label(ax, "x")
    return _finish(figure, path)


def training_curves(history, path=None):
    """The negative log-likelihood against the training step, train and validation.

    What it teaches: whether training worked, and when to stop. ``history`` is a dict of
    lists: ``step`` and ``train_nll`` (or ``loss``, the key ``train.fit`` writes), and
    optionally ``val_step`` with ``val_nll``, and ``lr``. The per-batch train NLL is noisy,
    so it is drawn faintly with its running mean over it; the validation NLL is computed on
    held-out data, and the gap between the two is overfitting. When ``lr`` is given, a
    second panel shows the learning-rate schedule. The first 10% of steps may sit far above
    the rest; the y-axis is fitted to the remaining 90%, and the title says when it is.
    Returns the Figure: one panel (two with ``lr``).
    """
    where = "training_curves"
    if not isinstance(history, dict):
        raise ValueError(f"{where}: history must be a dict of lists, got {type(history).__name__}")
    key = "train_nll" if "train_nll" in history else "loss"
    if "step" not in history or key not in history:
        raise ValueError(f"{where}: history needs 'step' and 'train_nll' (or 'loss'), got keys {sorted(history)}")
    step, train = _series(history, "step", key, where)
    val = None
    if len(history.get("val_step", ())) or len(history.get("val_nll", ())):
        val = _series(history, "val_step", "val_nll", where)
    lr = history.get("lr")
    show_lr = lr is not None and len(lr) > 0
    if show_lr and len(lr) != len(step):
        raise ValueError(f"{where}: history['lr'] has {len(lr)} entries but 'step' has {len(step)}")

    figure = Figure(figsize=(6.5, 5.5 if show_lr else 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(
        2 if show_lr else 1, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1]} if show_lr else None
    )[:, 0]
    ax = axes[0]
    name = "NLL (nats)" if key == "train_nll" else "loss"
    ax.plot(step, train, color="C0", alpha=0.35, linewidth=0.8, label="train (per batch)")
    window = max(1, len(train) // 50)
    if window > 1:
        kernel = numpy.ones(window) / window
        ax.plot(
            step[window - 1 :],
            numpy.convolve(train, kernel, mode="valid"),
            color="C0",
            linewidth=1.6,
            label=f"train, running mean of {window}",
        )
    if val is not None:
        ax.plot(val[0], val[1], "o-", color="C1", markersize=3, linewidth=1.4, label="validation")
    ax.set_ylabel(name)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    title = "training curves"
    # An untrained model's first NLLs can be orders of magnitude above the rest; fitting the
    # axis to them would flatten everything that follows into one line.
    later = numpy.concatenate([train[len(train) // 10 :]] + ([val[1][len(val[1]) // 10 :]] if val is not None else []))
    later = later[numpy.isfinite(later)]
    everything = numpy.concatenate([train] + ([val[1]] if val is not None else []))
    everything = everything[numpy.isfinite(everything)]
    if len(later) and len(everything) and everything.max() > later.max():
        low, high = everything.min(), later.max()
        margin = 0.05 * (high - low) or 1.0
        ax.set_ylim(low - margin, high + margin)
        title += " (the first steps go above the top of the axis)"
    ax.set_title(title, fontsize=10)
    if show_lr:
        axes[1].plot(step, numpy.asarray(lr, dtype=float), color="C2")
        axes[1].set_ylabel("learning rate")
        axes[1].grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _finish(figure, path)


def image_grid(images, path=None, columns=None, value_range=None, title=None):
    """Images (N, C, H, W) with C = 1 (grey) or 3 (RGB), or (N, H, W), tiled row by row.

    ``columns`` defaults to about sqrt(N). ``value_range`` (low, high) maps to black and
    white (default: the images' own min and max); values outside are clipped. Tiles are
    separated by one blank pixel. Returns the Figure: one panel whose image array is the
    mosaic (tile k at rows r (H + 1) .., columns c (W + 1) .., r, c = divmod(k, columns)).
    """
    where = "image_grid"
    array = numpy.asarray(backend.to_numpy(images), dtype=float)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3) or len(array) == 0:
        raise ValueError(
            f"{where}: images must have shape (N, C, H, W) with C = 1 or 3 (or (N, H, W)), N >= 1; "
            f"got shape {numpy.shape(backend.to_numpy(images))}"
        )
    count, channels, height, width = array.shape
    columns = _check_count(columns, "columns", where, 1) if columns is not None else int(numpy.ceil(numpy.sqrt(count)))
    rows = -(-count // columns)
    low, high = value_range if value_range is not None else (numpy.nanmin(array), numpy.nanmax(array))
    if not (numpy.isfinite(low) and numpy.isfinite(high)) or high <= low:
        low, high = (low, low + 1.0) if numpy.isfinite(low) else (0.0, 1.0)  # a constant batch still shows
    scaled = numpy.clip((array - low) / (high - low), 0.0, 1.0).transpose(0, 2, 3, 1)  # channels last
    mosaic = numpy.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels))  # blank = white
    for k in range(count):
        r, c = divmod(k, columns)
        mosaic[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = scaled[k]
    figure, axes = _figure(1, width=min(0.6 * columns, 10.0), height=min(0.6 * rows, 10.0) + (0.3 if title else 0))
    ax = axes[0, 0]
    ax.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _finish(figure, path)


def interpolations(model, x_pairs, steps=8, path=None, to_image=None, value_range=None):
    """Latent interpolation: for each pair (x_a, x_b), decode z_t = (1 - t) f(x_a) + t f(x_b).

    ``x_pairs`` (P, 2, *event_shape): P pairs of inputs in the model's space. Row p of the
    figure shows x_t = f^{-1}(z_t) for t = 0, 1/(steps - 1), ..., 1, so its first and last
    tiles are x_a and x_b themselves (the round trip). ``to_image`` maps decoded inputs to
    the pictures shown (e.g. ``minflow.data.from_model_space`` for digits); ``value_range``
    as in :func:`image_grid`. A straight line in z passes nearer the origin than its ends,
    where N(0, I) has its mode, so middle tiles tend to look smoother than the ends.
    Returns the Figure.
    """
    where = "interpolations"
    if not hasattr(model, "flow") or not hasattr(model, "base"):
        raise ValueError(f"{where}: expected a NormalizingFlow (with .flow and .base), got {type(model).__name__}")
    _check_initialised(model, where)
    steps = _check_count(steps, "steps", where, 2)
    shape = tuple(model.flow.event_shape or ())
    pairs = numpy.asarray(backend.to_numpy(x_pairs), dtype=float)
    if pairs.ndim < 3 or pairs.shape[1] != 2 or (shape and pairs.shape[2:] != shape) or len(pairs) == 0:
        raise ValueError(
            f"{where}: x_pairs must have shape (P, 2, *event_shape) = (P, 2, {', '.join(map(str, shape))}), "
            f"P >= 1; got {pairs.shape}"
        )
    dtype, xp = model.float_dtype(), model.array_module()
    with no_grad():
        z = backend.to_numpy(
            model.flow.forward(backend.to_device(pairs.reshape((-1,) + pairs.shape[2:]), dtype, xp))[0].data
        )
        z = z.reshape(pairs.shape)
        t = numpy.linspace(0.0, 1.0, steps).reshape((1, steps) + (1,) * (z.ndim - 2))
        path_z = (1 - t) * z[:, :1] + t * z[:, 1:]  # (P, steps, *event_shape)
        decoded = model.flow.inverse(backend.to_device(path_z.reshape((-1,) + pairs.shape[2:]), dtype, xp))[0].data
    decoded = backend.to_numpy(decoded)
    shown = to_image(decoded) if to_image is not None else decoded
    return image_grid(shown, path=path, columns=steps, value_range=value_range)


def save(figure, path, dpi=DPI):
    """Write ``figure`` to ``path`` as a PNG and return ``path``; parent folders are created.

    The PNG is written whole or not at all (``checkpoint.written_whole``): anyone reading
    ``path`` sees the old file or the new one, never half of one.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with written_whole(path) as file:
        figure.savefig(file, format="png", dpi=dpi)
    return path


# --- checks ------------------------------------------------------------------------------------
def _check_model(model, where):
    """Raise unless ``model`` is a model of 2-D points (a NormalizingFlow, or another model with
    ``log_prob``, ``sample`` and a ``base``, such as a ContinuouslyIndexedFlow)."""
    if not all(hasattr(model, name) for name in ("log_prob", "sample", "base")):
        raise ValueError(
            f"{where}: expected a NormalizingFlow (with log_prob, sample and .base), got {type(model).__name__}"
        )
    shape = getattr(model.base, "event_shape", None) or getattr(getattr(model, "flow", None), "event_shape", None)
    if shape is None or tuple(shape) != (2,):
        raise ValueError(
            f"{where}: these figures are for models of 2-D points, event shape (2,); "
            f"this model's event shape is {None if shape is None else tuple(shape)}"
        )


def _check_initialised(model, where):
    """Refuse a model with a layer that initialises itself from its first batch (ActNorm).

    Evaluating it on a plotting grid would set its statistics from the grid, silently
    changing the model; it must see data (or training) first.
    """
    for module in model.modules():
        flag = getattr(module, "initialized", None)
        if flag is not None and not bool(backend.to_numpy(flag)):
            raise ValueError(
                f"{where}: the model's {type(module).__name__} layer is not initialised yet (it "
                "initialises from the first batch it sees, which would be this figure's grid); "
                "call model.log_prob(data) once, or train, before plotting"
            )


def _check_count(value, name, where, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_bounds(bounds, where):
    """((xmin, xmax), (ymin, ymax)) as floats, finite and increasing; raises ValueError."""
    try:
        array = numpy.asarray(bounds, dtype=float)
    except (TypeError, ValueError):
        array = None
    if (
        array is None
        or array.shape != (2, 2)
        or not numpy.isfinite(array).all()
        or not (array[:, 0] < array[:, 1]).all()
    ):
        raise ValueError(f"{where}: bounds must be ((xmin, xmax), (ymin, ymax)), finite with min < max; got {bounds!r}")
    return tuple((float(low), float(high)) for low, high in array)


def _host_points(points, name, where):
    """A NumPy array (N, 2) from an array of either backend, a Tensor or a list."""
    array = numpy.asarray(backend.to_numpy(points), dtype=float)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(f"{where}: {name} must be 2-D points, shape (N, 2) with N >= 1; got shape {array.shape}")
    if not numpy.isfinite(array).all():
        raise ValueError(f"{where}: {name} has {int((~numpy.isfinite(array)).any(axis=1).sum())} non-finite rows")
    return array


# --- grids and evaluation ----------------------------------------------------------------------
def _bounds_around(points, default, pad=0.1):
    """The range of ``points`` padded by ``pad`` of its width on every side (``default`` if None)."""
    if points is None:
        return default
    low, high = points.min(axis=0), points.max(axis=0)
    margin = pad * numpy.where(high > low, high - low, 1.0)  # a constant coordinate still gets a width
    return tuple((float(a), float(b)) for a, b in zip(low - margin, high + margin))


def _grid(bounds, resolution):
    """Cell centres of a resolution x resolution grid over ``bounds``, (resolution^2, 2), and a cell's area.

    Row-major with y outermost, so ``values.reshape(resolution, resolution)`` is an image
    whose row i is y = y_i: exactly what ``imshow(origin="lower", extent=bounds)`` draws, with
    each pixel centred on its point. Centres make the midpoint rule: sum(p) * area ~ integral of p.
    """
    (x0, x1), (y0, y1) = bounds
    xs = x0 + (numpy.arange(resolution) + 0.5) * (x1 - x0) / resolution
    ys = y0 + (numpy.arange(resolution) + 0.5) * (y1 - y0) / resolution
    gx, gy = numpy.meshgrid(xs, ys)
    area = (x1 - x0) * (y1 - y0) / resolution**2
    return numpy.stack([gx.ravel(), gy.ravel()], axis=1), area


def _evaluate(fn, points, dtype, xp=None):
    """``fn`` (Tensor -> Tensor) on host ``points``, ``CHUNK`` rows at a time on namespace ``xp``
    (the model's; default: the default backend); a host array."""
    results = []
    with no_grad():
        for start in range(0, len(points), CHUNK):
            chunk = Tensor(backend.to_device(points[start : start + CHUNK], dtype=dtype, xp=xp))
            results.append(backend.to_numpy(fn(chunk)))
    return numpy.concatenate(results)


def _grid_lines(bounds, lines, points_per_line):
    """``lines`` horizontal then ``lines`` vertical lines over bounds, (2 * lines, points_per_line, 2), and colours.

    Horizontal lines go from blue (bottom) to pale blue, vertical ones from orange (left) to
    pale orange, so each line can be told apart after the map has bent it.
    """
    from matplotlib import colormaps

    (x0, x1), (y0, y1) = bounds
    along_x, along_y = numpy.linspace(x0, x1, points_per_line), numpy.linspace(y0, y1, points_per_line)
    shade = numpy.linspace(0.95, 0.4, lines)
    horizontal = [numpy.stack([along_x, numpy.full(points_per_line, y)], axis=1) for y in numpy.linspace(y0, y1, lines)]
    vertical = [numpy.stack([numpy.full(points_per_line, x), along_y], axis=1) for x in numpy.linspace(x0, x1, lines)]
    colours = [colormaps["Blues"](s) for s in shade] + [colormaps["Oranges"](s) for s in shade]
    return numpy.stack(horizontal + vertical), colours


def _map_lines(fn, lines, domain, bounds, where, what, dtype, xp):
    """Apply one direction of the flow to every point of ``lines``; a clear error if it cannot."""
    try:
        mapped = _evaluate(fn, lines.reshape(-1, 2), dtype, xp)
    except ValueError as error:
        raise ValueError(
            f"{where}: the flow's {what} over bounds {bounds}: {error}. The flow's domain "
            f"there is {domain} per coordinate; pass bounds inside it"
        ) from error
    bad = ~numpy.isfinite(mapped).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{where}: the flow's {what} over bounds {bounds}: {int(bad.sum())} of {len(mapped)} "
            "points came out non-finite; pass smaller bounds"
        )
    return mapped.reshape(lines.shape)


def _warn_not_finite(log_p, where, name):
    nan = int(numpy.isnan(log_p).sum())
    if nan:
        warnings.warn(f"{where}: {name} is NaN at {nan} of {log_p.size} grid points (drawn blank)", stacklevel=3)


# --- drawing -----------------------------------------------------------------------------------
def _figure(columns, rows=1, width=PANEL, height=PANEL, extra_width=0.0, **subplot_kw):
    """A Figure with an Agg canvas and a (rows, columns) array of axes."""
    figure = Figure(figsize=(columns * width + extra_width, rows * height), layout="constrained")
    FigureCanvasAgg(figure)  # draws with Agg, whatever matplotlib's default backend is: never a window
    axes = figure.subplots(rows, columns, squeeze=False, **subplot_kw)
    return figure, axes


def _heat_map(ax, values, bounds, vmax):
    (x0, x1), (y0, y1) = bounds
    return ax.imshow(
        values,
        origin="lower",
        extent=(x0, x1, y0, y1),
        cmap="viridis",
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )


def _finite_max(values):
    """The largest finite value, for the top of a colour scale (1 when there is nothing above 0)."""
    finite = values[numpy.isfinite(values)]
    return float(finite.max()) if len(finite) and finite.max() > 0 else 1.0


def _limits(ax, bounds):
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")


def _label(ax, name):
    ax.set_xlabel(f"${name}_1$")
    ax.set_ylabel(f"${name}_2$")


def _outside_note(points, bounds):
    """A second title line counting the points outside ``bounds`` (empty when there are none)."""
    (x0, x1), (y0, y1) = bounds
    outside = int((~((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1))).sum())
    return f"\n({outside} outside the view)" if outside else ""


def _series(history, x_key, y_key, where):
    x, y = history.get(x_key, []), history.get(y_key, [])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{where}: history[{x_key!r}] and history[{y_key!r}] must be non-empty and of equal "
            f"length, got {len(x)} and {len(y)}"
        )
    return numpy.asarray(x, dtype=float), numpy.asarray(y, dtype=float)


def _finish(figure, path):
    if path is not None:
        save(figure, path)
    return figure
