# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lecture 3 — Coupling flows
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 20 s; full about 2 min.*
#
# Lecture 2 left us with two half-tools: linear layers mix coordinates but cannot bend,
# elementwise layers bend but cannot let one coordinate depend on another. A **coupling
# layer** (Dinh et al. 2014, NICE; Dinh et al. 2017, RealNVP) does both, and keeps the two
# things a flow layer must have: an exact inverse and a cheap log-determinant.
#
# Notation as before: $f: x \mapsto z$ is the normalizing direction (minflow's `forward`),
# $f^{-1}$ the generative one (`inverse`, used to sample), and
# $p_X(x) = p_Z(f(x))\,\lvert\det J_f(x)\rvert$. UDL (Prince 2023, section 16.3.3) writes
# coupling flows in the generative direction, $x = f[z]$; the algebra is the same with the
# roles of $x$ and $z$ swapped.
#
# Open `minflow/flows/coupling.py` now: its module docstring is the written half of this
# lecture, and `Coupling._couple` is the whole layer in seven lines.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, arrow, box, budget, check, passes_check_flow, show

from minflow import Sequential, data, models, plot, train
from minflow.autodiff import no_grad, ops
from minflow.backend import to_device, to_numpy
from minflow.flows import AffineCoupling, Coupling, Flow, SplineCoupling
from minflow.flows.base import zero_log_det
from minflow.flows.coupling import alternating_mask, channel_mask, checkerboard_mask, half_mask
from minflow.flows.transformers import AffineTransformer
from minflow.nn import MLP, Module
from minflow.testing import check_flow, numerical_jacobian

rng = np.random.default_rng(0)
print("quick mode: short training" if QUICK else "full mode")

# %% [markdown]
# ## 1. The layer: split, condition, transform
#
# Split $x$ into two parts, $h_1$ (kept) and $h_2$ (changed). Leave $h_1$ alone and transform
# $h_2$ elementwise with an invertible *transformer* $g$ whose parameters $\theta$ are
# computed from $h_1$ by any function at all, the *conditioner* (a neural network):
#
# $$z_1 = h_1, \qquad z_2 = g\big(h_2;\ \theta(h_1)\big).$$
#
# * **NICE** (additive): $z_2 = h_2 + t(h_1)$.
# * **RealNVP** (affine): $z_2 = h_2 \odot e^{s(h_1)} + t(h_1)$, with $\theta = (t, s)$.
# * **Spline coupling** (Durkan et al. 2019): $g$ is the rational-quadratic spline of
#   lecture 2, with its widths, heights and knot derivatives predicted by the network.
#
# **Inverse.** $z_1 = h_1$, so from $z$ we can recompute $\theta(z_1) = \theta(h_1)$ and undo
# the transformer: $h_2 = g^{-1}(z_2; \theta(z_1))$. The conditioner is only ever *evaluated*,
# never inverted — so it can be as large and as non-invertible as we like.
#
# **The key and the lock.** Think of $h_1$ as a key that encrypts $h_2$: the key travels
# in the clear ($z_1 = h_1$), and whoever holds $z_1$ can decrypt $z_2$. Decrypt with the
# wrong key and you get the wrong $h_2$. Below, the conditioner is a deliberately strange,
# many-to-one function (keys $h_1$ and $h_1 + 2\pi$ give the same $\theta$), and the layer
# is still exactly invertible. `Coupling` accepts any `Module` as its conditioner.


# %%
class WildConditioner(Module):
    """theta(h1) = (shift, log-scale) = (sin 5 h1, 0.5 cos 3 h1): periodic, so many-to-one."""

    def forward(self, h1):
        return ops.concatenate([ops.sin(5.0 * h1), 0.5 * ops.cos(3.0 * h1)], axis=1)


wild = Coupling(half_mask(2), AffineTransformer(), conditioner=WildConditioner())
keys = np.array([[0.3], [0.3 + 2 * np.pi]])
theta_a, theta_b = to_numpy(WildConditioner()(keys))
print("theta(0.3) =", theta_a, "  theta(0.3 + 2 pi) =", theta_b)
assert np.allclose(theta_a, theta_b)  # the conditioner cannot be inverted ...

x = rng.normal(size=(5, 2))
with no_grad():
    z, _ = wild.forward(to_device(x))  # to_device: the data go where minflow computes (lecture 2)
    x_back, _ = wild.inverse(z)
    wrong_key = z.data + to_device(np.array([0.1, 0.0]))  # tamper with z1 only
    x_wrong, _ = wild.inverse(wrong_key)
x_back, x_wrong = to_numpy(x_back), to_numpy(x_wrong)
print("round trip error with the right key:", np.abs(x_back - x).max())
print("h2 recovered with a wrong key is off by:", np.abs(x_wrong[:, 1] - x[:, 1]))
assert np.allclose(x_back, x, atol=1e-12)  # ... yet the layer is
assert np.all(np.abs(x_wrong[:, 1] - x[:, 1]) > 1e-3)
check_flow(wild)  # round trips, log-det, batch independence: all hold
print("check_flow(coupling with a many-to-one conditioner): all properties hold")

# %% [markdown]
# **The data flow, drawn.** One affine coupling (RealNVP) in both directions. Blue is the key
# $h_1$, which crosses the layer untouched; orange is the lock $h_2$; green is the conditioner.
# In the inverse the conditioner receives $z_1$, which *is* $h_1$, so it computes the same
# $(s, t)$ as in the forward pass and runs forward again: no arrow ever goes backwards
# through it. The log-determinant is read off $s$, in both directions. (The boxes and arrows
# are drawn by `box` and `arrow`, two short helpers in `lectures/_common.py`.)


# %%
KEY, LOCK, NETWORK, WHOLE = "#d6e6f7", "#fde2c4", "#dcefd0", "#eeeeee"
directions = (  # title, input, its two parts, output's two parts, output, transformer, log-det
    ("forward $f$ (normalizing): $x \\to z$", "x", "h", "z", "z", "$z_2 = h_2 \\odot e^{s} + t$", "{\\sum}_i\\, s_i"),
    (
        "inverse $f^{-1}$ (sampling): $z \\to x$",
        "z",
        "z",
        "h",
        "x",
        "$h_2 = (z_2 - t) \\odot e^{-s}$",
        "-{\\sum}_i\\, s_i",
    ),
)
fig, axes = plt.subplots(2, 1, figsize=(11, 7))
for ax, (title, source, part, result, target, transform, log_det_sign) in zip(axes, directions):
    ax.set(xlim=(0, 10), ylim=(0, 4))
    ax.set_title(title, fontsize=11)
    ax.axis("off")
    whole_in = box(ax, 0.4, 2.0, f"${source}$", WHOLE)
    kept_in = box(ax, 2.0, 3.4, f"${part}_1$ (kept)", KEY)
    changed_in = box(ax, 2.0, 0.6, f"${part}_2$", LOCK)
    net = box(ax, 4.4, 2.0, f"conditioner on ${part}_1$\n(evaluated,\nnever inverted)", NETWORK)
    kept_out = box(ax, 7.0, 3.4, f"${result}_1 = {part}_1$", KEY)
    log_det = box(ax, 7.0, 2.0, f"log-det $= {log_det_sign}$", WHOLE)
    changed_out = box(ax, 7.0, 0.6, transform, LOCK)
    whole_out = box(ax, 9.6, 2.0, f"${target}$", WHOLE)
    arrow(ax, whole_in, kept_in, "split by mask")
    arrow(ax, whole_in, changed_in)
    arrow(ax, kept_in, net)
    arrow(ax, kept_in, kept_out, "passes unchanged")
    arrow(ax, changed_in, changed_out)
    arrow(ax, net, changed_out, "$s, t$")
    arrow(ax, net, log_det, "$s$")
    arrow(ax, kept_out, whole_out, "concatenate")
    arrow(ax, changed_out, whole_out)
fig.tight_layout()
show(fig, "03_coupling_dataflow.png")

# %% [markdown]
# The picture is a claim about the code, so we check it on a real RealNVP layer with random,
# non-identity weights (`random_coupling` adds noise to every parameter: a new layer starts as
# the identity, where every diagram is trivially right). We redo the diagram's arithmetic by
# hand from the layer's public parts: the index lists `kept` and `changed`, the
# `conditioner`, and `transformer.shift_and_log_scale`, which turns the network's output
# $\theta$ into the shift $t$ and the (bounded) log-scale $s$. The inverse by hand feeds the
# conditioner $z_1$ and nothing else.


# %%
def random_coupling(mask, seed):
    """An AffineCoupling with its weights (zero-initialised last layer included) made random."""
    layer = AffineCoupling(mask, hidden=(16, 16), activation="tanh", seed=seed)
    generator = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data = p.data + to_device(0.4 * generator.normal(size=p.shape), dtype=p.dtype)
    return layer


def shift_and_log_scale(layer, kept_part):
    """(t, s) as NumPy arrays: the conditioner run forward on ``kept_part`` (B, D1)."""
    theta = layer.conditioner(to_device(kept_part))
    theta = ops.reshape(theta, (kept_part.shape[0], layer.changed.shape[0], layer.transformer.params_per_dim))
    shift, log_scale = layer.transformer.shift_and_log_scale(theta)
    return to_numpy(shift), to_numpy(log_scale)


drawn = random_coupling(alternating_mask(6), seed=4)
kept, changed = to_numpy(drawn.kept), to_numpy(drawn.changed)
x6 = np.random.default_rng(5).normal(size=(64, 6))
with no_grad():
    z6, forward_log_det = drawn.forward(to_device(x6))
    x6_back, inverse_log_det = drawn.inverse(z6)
    z6, x6_back = to_numpy(z6), to_numpy(x6_back)
    t, s = shift_and_log_scale(drawn, x6[:, kept])  # forward: theta(h1)
    t_inv, s_inv = shift_and_log_scale(drawn, z6[:, kept])  # inverse: theta(z1), z1 only
z2_by_hand = x6[:, changed] * np.exp(s) + t
h2_by_hand = (z6[:, changed] - t_inv) * np.exp(-s_inv)
print(f"largest |s| {np.abs(s).max():.3f}, largest |t| {np.abs(t).max():.3f}: not the identity")
print("kept coordinates bit-identical:", np.array_equal(z6[:, kept], x6[:, kept]))
print(f"forward by hand vs the layer: {np.abs(z2_by_hand - z6[:, changed]).max():.1e}")
print(f"inverse by hand (conditioner fed z1 only) vs x: {np.abs(h2_by_hand - x6[:, changed]).max():.1e}")
assert np.abs(s).max() > 0.1 and np.abs(z6 - x6).max() > 0.1  # a real, non-identity layer
assert np.array_equal(z6[:, kept], x6[:, kept])  # z1 = h1, bit for bit
assert np.array_equal(s_inv, s) and np.array_equal(t_inv, t)  # theta(z1) is theta(h1), exactly
assert np.allclose(z2_by_hand, z6[:, changed], atol=1e-12)  # z2 = h2 e^s + t
assert np.allclose(h2_by_hand, x6[:, changed], atol=1e-12)  # h2 = (z2 - t) e^(-s) ...
assert np.allclose(h2_by_hand, x6_back[:, changed], atol=1e-12)  # ... which is what inverse computes
assert np.allclose(to_numpy(forward_log_det), s.sum(axis=1), atol=1e-12)  # log-det = sum s
assert np.allclose(to_numpy(inverse_log_det), -s.sum(axis=1), atol=1e-12)  # and minus it back

# %% [markdown]
# ## 2. The Jacobian is block-triangular
#
# Order the coordinates as $(h_1, h_2)$ and differentiate each output block by each input
# block:
#
# $$J_f = \begin{pmatrix} \dfrac{\partial z_1}{\partial h_1} & \dfrac{\partial z_1}{\partial h_2} \\[2mm]
#   \dfrac{\partial z_2}{\partial h_1} & \dfrac{\partial z_2}{\partial h_2}\end{pmatrix}
#  = \begin{pmatrix} I & 0 \\ \dfrac{\partial z_2}{\partial h_1} & \operatorname{diag}\big(g'(h_{2,i}; \theta(h_1))\big)\end{pmatrix}.$$
#
# * top left: $z_1 = h_1$, so the identity;
# * top right: $z_1$ does not depend on $h_2$ at all — a block of **zeros**;
# * bottom right: $g$ acts elementwise on $h_2$ (for fixed $\theta$), so a **diagonal**;
# * bottom left: the derivative through the network — dense and complicated, and we will
#   never need it.
#
# The determinant of a block-triangular matrix is the product of the determinants of its
# diagonal blocks (factor
# $\begin{pmatrix} A & 0 \\ C & D\end{pmatrix} = \begin{pmatrix} A & 0 \\ C & I\end{pmatrix}\begin{pmatrix} I & 0 \\ 0 & D\end{pmatrix}$
# and expand each factor along its identity rows). So
#
# $$\log\lvert\det J_f\rvert = \log\det I + \sum_i \log g'(h_{2,i}) = \sum_i s_i(h_1) \quad\text{(RealNVP)},
#   \qquad = 0 \quad\text{(NICE)}.$$
#
# **Why this is cheap.** One network pass gives $\theta$, and the log-det is a sum over
# $D_2$ numbers: $O(D)$ on top of the network. The brute-force route — build the $D\times D$
# Jacobian ($D$ extra network passes) and factorise it ($O(D^3)$) — gives the same number,
# as we now check. We take a RealNVP layer (`AffineCoupling`) in $D = 6$ with random
# (non-identity) weights (`random_coupling` of section 1) and compute its Jacobian by
# central finite differences with `minflow.testing.numerical_jacobian`. (As in lecture 2, `to_device` copies NumPy data to
# wherever the layers live, and `to_numpy` brings results back for NumPy's `slogdet`.)

# %%
D = 6
half_layer = random_coupling(half_mask(D), seed=1)
alternating_layer = random_coupling(alternating_mask(D), seed=2)
point = to_device(rng.normal(size=(1, D)))

jacobians = {}
for name, layer in (("half", half_layer), ("alternating", alternating_layer)):
    with no_grad():
        _, log_det = layer.forward(point)
        J = to_numpy(numerical_jacobian(lambda a, layer=layer: layer.forward(a)[0].data, point))[0]
    log_det = to_numpy(log_det)
    kept, changed = to_numpy(layer.kept), to_numpy(layer.changed)
    top_left, top_right = J[np.ix_(kept, kept)], J[np.ix_(kept, changed)]
    bottom_right = J[np.ix_(changed, changed)]
    assert np.all(top_right == 0.0)  # exactly: perturbing h2 does not move z1 at all
    assert np.allclose(top_left, np.eye(len(kept)), atol=1e-9)
    assert np.all(bottom_right[~np.eye(len(changed), dtype=bool)] == 0.0)  # exactly diagonal
    brute_force = np.linalg.slogdet(J)[1]
    print(f"{name:11s} mask: layer log-det {log_det[0]: .10f}   log|det J| by slogdet {brute_force: .10f}")
    assert abs(log_det[0] - brute_force) < 1e-8
    jacobians[name] = (J, kept, changed)

# %% [markdown]
# The picture makes the zero block visible. With the half mask, the natural order of the
# coordinates is already $(h_1, h_2)$. With the alternating mask the zeros are scattered in
# the natural order; listing the kept coordinates first (rows and columns permuted alike,
# which does not change $\lvert\det\rvert$) reveals the same block-triangular shape.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
panels = (
    (jacobians["half"][0], list(range(D)), "half mask: (h1, h2) = (x1..x3, x4..x6)"),
    (jacobians["alternating"][0], list(range(D)), "alternating mask, natural order"),
    (
        jacobians["alternating"][0],
        list(jacobians["alternating"][1]) + list(jacobians["alternating"][2]),
        "alternating mask, kept coordinates first",
    ),
)
for ax, (J, order, title) in zip(axes, panels):
    shown = J[np.ix_(order, order)]
    limit = np.abs(shown).max()
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(D):
        for j in range(D):
            if shown[i, j] == 0.0:
                ax.text(j, i, "0", ha="center", va="center", fontsize=8, color="0.5")
    labels = [f"x{k + 1}" for k in order]
    ax.set_xticks(range(D), labels)
    ax.set_yticks(range(D), [f"z{k + 1}" for k in order])
    ax.set_title(title, fontsize=10)
axes[0].set_xlabel(r"input coordinate (column $j$): $\partial z_i / \partial x_j$")
fig.colorbar(image, ax=list(axes), shrink=0.8, label="Jacobian entry")
show(fig, "03_coupling_jacobian.png")

# %% [markdown]
# ## 3. Masks, and permutations between layers
#
# A coupling layer leaves $h_1$ untouched, so a single layer can never model a density in
# which the kept coordinates are anything but Gaussian. The fix is to alternate: the next
# layer keeps the other half, or a permutation (or an `LULinear` layer, a learned
# "soft permutation") reshuffles the coordinates in between. minflow's masks (read the top
# of `minflow/flows/coupling.py`) are boolean arrays, `True` where a coordinate is kept:
#
# * vectors: `half_mask(D)` (first half kept; `first=False` gives the complement) and
#   `alternating_mask(D)` (even coordinates; `even=False` the odd ones);
# * images $(C, H, W)$: `channel_mask` (the first half of the channels at every pixel)
#   and `checkerboard_mask` (pixels with even row + column, in every channel) — the two
#   masks of RealNVP.

# %%
vector_masks = {
    "half_mask(8)": half_mask(8),
    "half_mask(8, first=False)": half_mask(8, first=False),
    "alternating_mask(8)": alternating_mask(8),
    "alternating_mask(8, even=False)": alternating_mask(8, even=False),
}
image_masks = {
    "channel_mask(2, 4, 4)": np.array(channel_mask(2, 4, 4)),
    "checkerboard_mask(2, 4, 4)": np.array(checkerboard_mask(2, 4, 4)),
}
assert np.array_equal(np.logical_not(half_mask(8)), half_mask(8, first=False))  # complements
assert image_masks["channel_mask(2, 4, 4)"][0].all() and not image_masks["channel_mask(2, 4, 4)"][1].any()
assert image_masks["checkerboard_mask(2, 4, 4)"].sum() == 2 * 4 * 4 // 2

fig = plt.figure(figsize=(13, 3.6))
grid = fig.add_gridspec(1, 3, width_ratios=[1.6, 1.2, 1.2])
ax = fig.add_subplot(grid[0])
ax.imshow(np.array(list(vector_masks.values())), cmap="Greys", vmin=-0.3, vmax=1.3)
ax.set_yticks(range(len(vector_masks)), list(vector_masks))
ax.set_xticks(range(8), [f"x{k + 1}" for k in range(8)])
ax.set_title("vector masks (dark = kept, h1)", fontsize=10)
for k, (name, mask) in enumerate(image_masks.items()):
    ax = fig.add_subplot(grid[1 + k])
    gap = np.full((4, 1), np.nan)
    ax.imshow(np.hstack([mask[0], gap, mask[1]]).astype(float), cmap="Greys", vmin=-0.3, vmax=1.3)
    ax.set_xticks([1.5, 6.5], ["channel 0", "channel 1"])
    ax.set_yticks([])
    ax.set_title(name, fontsize=10)
fig.tight_layout()
show(fig, "03_masks.png")

# %% [markdown]
# `models.realnvp` alternates `half_mask(D, first=True)` and `first=False`;
# `models.spline_coupling_flow` puts an `LULinear` layer after each coupling. Read both
# builders in `minflow/models.py`.
#
# ## 4. Spline couplings
#
# An affine transformer can only shift and scale $h_2$ given the key; the density of
# $z_2 \mid h_1$ keeps its shape. A spline transformer can bend it. `SplineCoupling` is
# `Coupling` with a `SplineTransformer` (end of `minflow/flows/splines.py`): the
# conditioner outputs $3K - 1$ numbers per changed coordinate — $K$ widths, $K$ heights and
# the $K - 1$ interior knot derivatives (the outer two are fixed at 1 to meet the identity
# tails outside $[-B, B]$).

# %%
bins = 8
spline_layer = SplineCoupling(half_mask(2), bins=bins, bound=4.0, hidden=(32, 32))
last = spline_layer.conditioner.layers[-1]
print("conditioner output size:", last.weight.shape, "-> 3K - 1 =", 3 * bins - 1, "per changed coordinate")
assert spline_layer.transformer.params_per_dim == 3 * bins - 1
assert spline_layer.num_parameters() == (1 * 32 + 32) + (32 * 32 + 32) + (32 * (3 * bins - 1) + 3 * bins - 1)

# %% [markdown]
# ## 5. Training on two moons
#
# Now the experiment. `data.toy_data("moons")` draws train, validation and test points and
# standardises them with the training mean and standard deviation. Every builder
# zero-initialises the last layer of each conditioner, so an untrained model is the
# identity and its density is the base $\mathcal{N}(0, I)$. On 2-D data with unit variance
# per coordinate its expected NLL is
#
# $$\mathbb{E}[-\log\mathcal{N}(x; 0, I)] = \tfrac{D}{2}\log 2\pi + \tfrac12\mathbb{E}\lvert x\rvert^2
#   = \log 2\pi + 1 \approx 2.84 \text{ nats} \quad (D = 2),$$
#
# which the first cell checks on the test split. Then we train, by maximum likelihood with
# `train.fit`, three models: NICE (additive couplings, plus one diagonal scaling layer —
# the only part that can change volume), RealNVP (affine couplings) and a neural spline
# flow (spline couplings with `LULinear` layers).

# %%
moons = data.toy_data("moons", n_train=budget(10_000, 4000), n_val=1000, n_test=2000, seed=0)
steps = budget(3000, 300)
gaussian_nll = math.log(2 * math.pi) + 1

builders = {
    "NICE": lambda: models.nice(2, layers=4, hidden=64, seed=0),
    "RealNVP": lambda: models.realnvp(2, layers=8, hidden=64, seed=0),
    "spline": lambda: models.spline_coupling_flow(2, layers=4, bins=8, hidden=64, seed=0),
}
trained, results = {}, {}
for name, build in builders.items():
    model = build()
    untrained = train.evaluate_nll(model, moons.test)
    assert abs(untrained - gaussian_nll) < 0.1, untrained  # the identity map: the N(0, I) value
    history = train.fit(
        model,
        moons.train,
        steps=steps,
        batch_size=256,
        lr=2e-3,
        schedule="cosine",
        val_data=moons.val,
        val_every=max(steps // 10, 50),
        progress=False,
    )
    trained[name] = model
    results[name] = (untrained, train.evaluate_nll(model, moons.test), model.num_parameters(), history["wall_time"])

print(f"{'model':8s} {'untrained':>10s} {'test NLL':>9s} {'parameters':>11s} {'seconds':>8s}")
for name, (untrained, nll, count, seconds) in results.items():
    print(f"{name:8s} {untrained:10.3f} {nll:9.3f} {count:11d} {seconds:8.1f}")
print(f"N(0, I) on standardised data: log(2 pi) + 1 = {gaussian_nll:.3f}")

# %% [markdown]
# What the table shows, and the cell below checks: every model ends below the untrained
# value; RealNVP and the spline flow end well below it (by more than half a nat). The spline
# flow reaches a test NLL at least as low as RealNVP's (within 0.05 nats) with fewer
# parameters: a spline per coordinate bends where an affine map can only stretch.

# %%
nll = {name: result[1] for name, result in results.items()}
count = {name: result[2] for name, result in results.items()}
assert all(value < gaussian_nll for value in nll.values())
assert nll["RealNVP"] < gaussian_nll - 0.5 and nll["spline"] < gaussian_nll - 0.5
assert nll["spline"] <= nll["RealNVP"] + 0.05 and count["spline"] < count["RealNVP"]

# %% [markdown]
# **Where the data land.** Training by maximum likelihood asks $f$ to send the data to the
# base, so the latents $z = f(x)$ of held-out points should look like a sample of
# $\mathcal{N}(0, I)$. Below, left: the 2000 test points pushed through the trained RealNVP;
# right: 2000 draws from $\mathcal{N}(0, I)$, on the same axes, with the circles of radius 1,
# 2 and 3 in both. Two numbers make "look like" precise, and the cell computes each for the
# latents, for the Gaussian sample, and for the raw test data:
#
# * **moments**: the largest entry of $\lvert\bar z\rvert$ and of $\lvert\widehat{\mathrm{Cov}}(z) - I\rvert$.
#   Standardisation already gave the raw data mean 0 and variance 1 per coordinate, so here
#   only their correlation (about $-0.45$: the moons run diagonally) sets them apart;
# * **shape**: in two dimensions $\tfrac12\lvert z\rvert^2$ is exponentially distributed with
#   mean 1 when $z \sim \mathcal{N}(0, I)$, so $u = e^{-\lvert z\rvert^2/2}$ is uniform on $[0, 1]$.
#   The largest gap between the empirical distribution function of $u$ and that of the
#   uniform (the Kolmogorov–Smirnov distance) measures how far the radii are from Gaussian.

# %%
realnvp = trained["RealNVP"]
test_points = to_device(moons.test, dtype=realnvp.float_dtype(), xp=realnvp.array_module())
with no_grad():
    latents = to_numpy(realnvp.flow.forward(test_points)[0])
raw = to_numpy(moons.test)
gaussian = np.random.default_rng(6).standard_normal(latents.shape)


def moment_gap(points):
    """The largest |mean| and |covariance - I| entry of a (n, 2) sample."""
    return max(np.abs(points.mean(axis=0)).max(), np.abs(np.cov(points.T) - np.eye(2)).max())


def radial_gap(points):
    """Kolmogorov-Smirnov distance of u = exp(-|p|^2 / 2) from Uniform(0, 1)."""
    u = np.sort(np.exp(-0.5 * (points**2).sum(axis=1)))
    n = len(u)
    return max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max())


# n = 2000: sampling alone moves a mean by about 1/sqrt(2000) = 0.022 and a (co)variance by
# about sqrt(2/2000) = 0.032 (one standard error), so 0.1 allows three standard errors plus
# room for the model's own error, in both modes. Measured: latents 0.049 (quick) and 0.052
# (full), the Gaussian sample 0.026, the raw data 0.47 (quick) and 0.45 (full): their correlation.
moment_tolerance = 0.1
# The 1% critical KS distance for n = 2000 is 1.63 / sqrt(2000) = 0.036. Measured: latents
# 0.020 after the full 3000 steps (the Gaussian sample: 0.013), but 0.096 after the 300 steps
# of quick mode, too few to make the radii Gaussian, so quick mode gets a looser bound; the raw
# data 0.25 (quick) and 0.22 (full).
radial_tolerance = budget(0.05, 0.15)
print("                 moments   shape (KS)")
for name, points in (("latents z = f(x)", latents), ("N(0, I) sample", gaussian), ("raw data x", raw)):
    print(f"{name:16s} {moment_gap(points):8.3f} {radial_gap(points):10.3f}")
print(f"tolerances       {moment_tolerance:8.3f} {radial_tolerance:10.3f}")
assert moment_gap(gaussian) < moment_tolerance and radial_gap(gaussian) < radial_tolerance  # fair bounds
assert moment_gap(latents) < moment_tolerance < moment_gap(raw)  # the flow removed the correlation
assert radial_gap(latents) < radial_tolerance < radial_gap(raw)  # ... and made the radii Gaussian

fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
panels = (
    (latents, "C0", "latents $z = f(x)$ of the test data, trained RealNVP"),
    (gaussian, "C1", "$\\mathcal{N}(0, I)$"),
)
for ax, (points, color, title) in zip(axes, panels):
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.4, color=color)
    for radius in (1, 2, 3):
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="0.5", ls="--", lw=0.8))
    ax.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xlabel="$z_1$")
    ax.set_title(f"{title}\nmoments {moment_gap(points):.3f}, shape {radial_gap(points):.3f}", fontsize=10)
axes[0].set_ylabel("$z_2$")
fig.tight_layout()
show(fig, "03_latent_scatter.png")

# %% [markdown]
# After the full 3000 steps the two panels are hard to tell apart, and so are the numbers. In
# quick mode (300 steps) the moments already match, but the latents keep a hole around the
# origin: too few points at small radius, which the shape number catches (several times the
# Gaussian sample's) and the moments cannot.

# %% [markdown]
# The learned densities next to a histogram of the test data (`minflow.plot.density`),
# and the generative direction one layer at a time (`minflow.plot.morph`): colour marks
# where each point started in the Gaussian, so you can follow each coupling bend one half
# of the plane given the other. Look also for density where the data has none, such as a thin
# thread joining the two moons: a flow is a continuous bijection of the plane, so it cannot tear
# the one-piece Gaussian into two separate pieces, only stretch the part between them very thin.

# %%
show(
    plot.density(
        trained["RealNVP"],
        data=moons.test,
        resolution=budget(200, 100),
        title=f"RealNVP: test NLL {nll['RealNVP']:.3f} nats",
    ),
    "03_density_realnvp.png",
)

# %%
show(
    plot.density(
        trained["spline"],
        data=moons.test,
        resolution=budget(200, 100),
        title=f"spline flow: test NLL {nll['spline']:.3f} nats",
    ),
    "03_density_spline.png",
)

# %%
show(plot.morph(trained["RealNVP"], n=2000, seed=0, max_panels=6), "03_morph_realnvp.png")

# %%
show(plot.morph(trained["spline"], n=2000, seed=0, max_panels=6), "03_morph_spline.png")

# %% [markdown]
# Finally, the key at work inside the trained spline flow. Its first layer keeps $x_1$
# ($h_1$) and transforms $x_2$ ($h_2$). For a few values of the key $h_1$ we draw the 1-D map
# $h_2 \mapsto z_2 = g(h_2; \theta(h_1))$: each key selects a different monotonic spline,
# and outside $[-4, 4]$ every one of them is the identity.

# %%
first_layer = trained["spline"].flow[0]
assert isinstance(first_layer, SplineCoupling)
h2 = np.linspace(-5.0, 5.0, 801)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
for key in (-1.5, -0.5, 0.5, 1.5):
    inputs = np.stack([np.full_like(h2, key), h2], axis=1)
    with no_grad():
        outputs = to_numpy(first_layer.forward(to_device(inputs))[0])
    assert np.all(outputs[:, 0] == key)  # the key passes through
    assert np.all(np.diff(outputs[:, 1]) > 0)  # each conditional map is increasing
    tails = np.abs(h2) > 4.0
    assert np.all(outputs[tails, 1] == h2[tails])  # identity tails
    ax.plot(h2, outputs[:, 1], lw=2, label=f"key $h_1 = {key}$")
ax.plot(h2, h2, color="0.7", ls="--", lw=1, label="identity")
for edge in (-4.0, 4.0):
    ax.axvline(edge, color="0.6", ls=":", lw=0.8)
ax.set(
    xlabel="$h_2$ (= $x_2$)",
    ylabel="$z_2 = g(h_2;\\ \\theta(h_1))$",
    title="trained spline coupling, layer 0: one spline per key",
)
ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "03_spline_per_key.png")

# %% [markdown]
# ## Exercises
#
# ### Exercise 3.1 — an additive coupling by hand
#
# Write `MyAdditiveCoupling(dim, hidden, seed)`, a subclass of `minflow.flows.Flow`, that keeps
# the first $d_1 = \lfloor D/2 \rfloor$ coordinates and adds a shift $t(h_1)$ to the rest, with
# $t$ a `minflow.nn.MLP([d1, hidden, dim - d1], activation="tanh", seed=seed)` (smooth, so
# finite differences are accurate; not zero-initialised, so the layer is not the identity).
# Return the right log-determinant from both directions (what is it for NICE?). The class's
# `__init__` is written (the split $d_1$ and the MLP `self.shift`): write `forward` and `inverse`.
# `check_flow` tests it. Slicing (`x[:, :d1]`) and `ops.concatenate` work on minflow Tensors.


# %% nbgrader={"grade": false, "grade_id": "ex3_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MyAdditiveCoupling(Flow):
    """z1 = h1, z2 = h2 + t(h1)."""

    def __init__(self, dim, hidden=16, seed=None):
        self.event_shape = (dim,)
        self.split = dim // 2
        self.shift = MLP([self.split, hidden, dim - self.split], activation="tanh", seed=seed)

    def forward(self, x):
        ### BEGIN SOLUTION
        # The Jacobian is [[I, 0], [dt/dh1, I]], whose determinant is 1: log-det = 0 in both
        # directions (zero_log_det from minflow/flows/base.py makes the (B,) zeros).
        x = self._check_input(x)
        h1, h2 = x[:, : self.split], x[:, self.split :]
        return ops.concatenate([h1, h2 + self.shift(h1)], axis=1), zero_log_det(x)
        ### END SOLUTION

    def inverse(self, z):
        ### BEGIN SOLUTION
        # The inverse subtracts the same shift, recomputed from z1 = h1.
        z = self._check_input(z, "z")
        z1, z2 = z[:, : self.split], z[:, self.split :]
        return ops.concatenate([z1, z2 - self.shift(z1)], axis=1), zero_log_det(z)
        ### END SOLUTION


def make_additive(dim):
    return MyAdditiveCoupling(dim, hidden=16, seed=0)


# %% nbgrader={"grade": true, "grade_id": "ex3_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def additive_coupling_is_right():
    additive = make_additive(5)
    moved = not np.allclose(to_numpy(additive.forward(to_device(rng.normal(size=(4, 5))))[0])[:, 2:], 0)
    return passes_check_flow(additive) and moved


check(
    "Exercise 3.1",
    additive_coupling_is_right,
    "keep h1, add t(h1) to h2 in forward and subtract it in inverse; the log-det is zeros of shape (B,)",
)

# %% [markdown]
# ### Exercise 3.2 — half the coordinates never change
#
# For the layer `alternating_layer` of section 2 (an `AffineCoupling` on $D = 6$ with
# `alternating_mask(6)`), write `unchanged_coordinates(flow, probe)`: a boolean array of length 6,
# `True` for each coordinate $i$ with $z_i = x_i$ *exactly* for every sample of the batch `probe`
# (100 random points, a NumPy array). The check applies it to that layer, and to `two_layers`, the
# layer followed by a second coupling with the complementary mask.


# %% nbgrader={"grade": false, "grade_id": "ex3_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def unchanged_coordinates(flow, probe):
    ### BEGIN SOLUTION
    with no_grad():
        z = to_numpy(flow.forward(to_device(probe))[0])
    return np.all(z == probe, axis=0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
probe = rng.normal(size=(100, D))  # on the host; to_device(probe) is the same points where the layers live
two_layers = Sequential([alternating_layer, random_coupling(alternating_mask(D, even=False), seed=3)])


def unchanged_coordinates_is_right():
    unchanged = unchanged_coordinates(alternating_layer, probe)
    unchanged_after_two = unchanged_coordinates(two_layers, probe)
    print("unchanged by one layer: ", unchanged)
    print("unchanged by two layers:", unchanged_after_two)
    return np.array_equal(unchanged, alternating_mask(D)) and not np.any(unchanged_after_two)


check(
    "Exercise 3.2",
    unchanged_coordinates_is_right,
    "compare forward(probe) with probe coordinate by coordinate (==, then all over the batch axis)",
)

# %% [markdown]
# ### Exercise 3.3 — count the parameters
#
# `models.realnvp(D, layers=L, hidden=H)` stacks $L$ `AffineCoupling` layers whose masks
# alternate `half_mask(D, first=True)` and `first=False`, starting with `True`. Each
# conditioner is an MLP $[D_1, H, H, 2D_2]$ (with biases) where $D_1$ is the number of kept
# coordinates and $D_2 = D - D_1$ (an affine transformer needs a shift and a log-scale per
# changed coordinate). Write `realnvp_parameters(D, H, L)` that returns the count, without
# building a model. Careful with odd $D$: `half_mask(D)` keeps $\max(\lfloor D/2\rfloor, 1)$.


# %% nbgrader={"grade": false, "grade_id": "ex3_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def realnvp_parameters(D, H, L):
    ### BEGIN SOLUTION
    # A linear layer n_in -> n_out has (n_in + 1) n_out parameters, so one coupling has
    # (D1 + 1) H + (H + 1) H + (H + 1) 2 D2. For odd D the layers with first=False swap D1 and D2.
    total = 0
    for layer_index in range(L):
        kept = max(D // 2, 1) if layer_index % 2 == 0 else D - max(D // 2, 1)
        changed = D - kept
        total += (kept + 1) * H + (H + 1) * H + (H + 1) * 2 * changed
    return total
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def realnvp_parameters_is_right():
    cases = [(2, 64, 8), (5, 16, 3), (7, 32, 4), (10, 8, 1)]
    right = all(
        realnvp_parameters(D_, H_, L_) == models.realnvp(D_, layers=L_, hidden=H_).num_parameters()
        for D_, H_, L_ in cases
    )
    print("the RealNVP trained above has", realnvp_parameters(2, 64, 8), "parameters")
    return right and realnvp_parameters(2, 64, 8) == count["RealNVP"]


check(
    "Exercise 3.3",
    realnvp_parameters_is_right,
    "count (n_in + 1) * n_out for each of the three linear layers of every conditioner, with D1 and D2 swapping",
)

# %% [markdown]
# ### Exercise 3.4 — an affine coupling in mask form
#
# RealNVP (Dinh et al. 2017, eq. 9) writes a coupling without splitting the vector: with a binary
# mask $b$ (1 on the kept coordinates),
#
# $$z = b \odot h + (1 - b) \odot \big(h \odot e^{s(b \odot h)} + t(b \odot h)\big),$$
#
# where $s$ and $t$ map $\mathbb{R}^D \to \mathbb{R}^D$ and only see the kept coordinates. Write
# `forward(x) -> (z, log_det)` and `inverse(z) -> (x, log_det)` of `MaskedAffineCoupling` below (its
# `__init__` makes the mask and the two MLPs): derive the inverse (what does $b \odot z$ equal?) and
# the log-determinant (which entries of $s$ count?). `check_flow` tests it; the check also asserts
# that the kept coordinates pass unchanged, bit for bit.


# %% nbgrader={"grade": false, "grade_id": "ex3_4_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MaskedAffineCoupling(Flow):
    """z = b * h + (1 - b) * (h * exp(s(b * h)) + t(b * h)): RealNVP's coupling in mask form."""

    def __init__(self, mask, hidden=16, seed=0):
        dim = len(mask)
        self.event_shape = (dim,)
        self.mask = to_device(np.asarray(mask, dtype=float))  # b
        self.scale = MLP([dim, hidden, dim], activation="tanh", seed=seed)  # s
        self.shift = MLP([dim, hidden, dim], activation="tanh", seed=seed + 1)  # t

    def forward(self, x):
        ### BEGIN SOLUTION
        # dz/dh is triangular once the kept coordinates come first: 1 on the kept ones, e^(s_i) on the
        # others, so log|det| = sum_i (1 - b_i) s_i (the entries of s on kept coordinates do not count).
        x = self._check_input(x)
        kept = self.mask * x
        s, t = self.scale(kept), self.shift(kept)
        z = kept + (1 - self.mask) * (x * ops.exp(s) + t)
        return z, ops.sum((1 - self.mask) * s, axis=1)
        ### END SOLUTION

    def inverse(self, z):
        ### BEGIN SOLUTION
        # b * z = b * h: the conditioner's input is known from z, so s and t are recomputed exactly.
        z = self._check_input(z, "z")
        kept = self.mask * z
        s, t = self.scale(kept), self.shift(kept)
        x = kept + (1 - self.mask) * (z - t) * ops.exp(-s)
        return x, -ops.sum((1 - self.mask) * s, axis=1)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_4", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def masked_coupling_is_right():
    layer = MaskedAffineCoupling(alternating_mask(5), hidden=16, seed=0)
    x = rng.normal(size=(8, 5))
    with no_grad():
        z, log_det = layer.forward(to_device(x))
    kept = np.asarray(alternating_mask(5), dtype=bool)
    unchanged = np.array_equal(to_numpy(z.data)[:, kept], x[:, kept])
    moved = not np.allclose(to_numpy(z.data)[:, ~kept], x[:, ~kept])
    return passes_check_flow(layer) and unchanged and moved and not np.allclose(to_numpy(log_det.data), 0)


check(
    "Exercise 3.4",
    masked_coupling_is_right,
    "z = b x + (1 - b)(x e^s + t) with s, t of b x; inverse x = b z + (1 - b)(z - t) e^(-s); "
    "log-det = sum of (1 - b) s over each row",
)

# %% [markdown]
# ### Exercise 3.5 — a training step with Adam, by hand
#
# `train.fit` hides one loop: the NLL of a batch, its gradient, an Adam step. Write it. `adam_by_hand(model,
# batch, steps, lr)` takes `steps` steps on the same whole `batch` and returns the list of losses: each step
# zeroes the gradients (`model.zero_grad()`), computes `loss = model.nll(batch)`, calls `loss.backward()`, and
# updates every parameter `p` of `model.parameters()` from its gradient `g = p.grad` by Adam
# (Kingma and Ba 2015), with $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\varepsilon = 10^{-8}$ and $m, v$ starting at 0:
#
# $$m \leftarrow \beta_1 m + (1 - \beta_1) g,\quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2,\quad
#   p \leftarrow p - \mathrm{lr}\,\frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \varepsilon}$$
#
# at step $t = 1, 2, \dots$ (assign a new array to `p.data`). The check trains a twin of the model with
# `train.fit` on the same batch (`batch_size` = the whole batch, so each of its steps sees the same points)
# and compares the losses and the parameters.


# %% nbgrader={"grade": false, "grade_id": "ex3_5_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def adam_by_hand(model, batch, steps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
    ### BEGIN SOLUTION
    beta1, beta2 = betas
    parameters = model.parameters()
    m = [0.0 * p.data for p in parameters]
    v = [0.0 * p.data for p in parameters]
    losses = []
    for t in range(1, steps + 1):
        model.zero_grad()
        loss = model.nll(batch)
        loss.backward()
        for i, p in enumerate(parameters):
            g = p.grad
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            p.data = p.data - lr * m_hat / (v_hat**0.5 + eps)
        losses.append(float(loss.data))
    return losses
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_5", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def adam_by_hand_is_right():
    batch = to_device(moons.train[:256])  # where the models' parameters live
    mine, theirs = (models.realnvp(2, layers=2, hidden=8, seed=0) for _ in range(2))
    losses = adam_by_hand(mine, batch, steps=5, lr=1e-2)
    history = train.fit(theirs, batch, steps=5, batch_size=256, lr=1e-2, seed=0, progress=False)
    print("by hand:", np.round(losses, 6), "\ntrain.fit:", np.round(history["loss"], 6))
    same_parameters = all(
        np.allclose(to_numpy(a.data), to_numpy(b.data), atol=1e-9)
        for a, b in zip(mine.parameters(), theirs.parameters())
    )
    # the two sum the same numbers in other orders (fit's batch is shuffled, its Adam works on one flat array)
    return len(losses) == 5 and np.allclose(losses, history["loss"], atol=1e-9) and same_parameters


check(
    "Exercise 3.5",
    adam_by_hand_is_right,
    "zero_grad, nll, backward, then per parameter m and v updated from p.grad, bias-corrected by 1 - beta^t, "
    "and p.data = p.data - lr * m_hat / (sqrt(v_hat) + eps)",
)

# %% [markdown]
# ## Summary
#
# * A coupling layer keeps $h_1$ and transforms $h_2$ elementwise with parameters
#   $\theta(h_1)$: $h_1$ is the key, and the inverse recomputes $\theta$ from $z_1 = h_1$.
#   The conditioner is never inverted, so it can be any network.
# * Its Jacobian is block-triangular with an identity and a diagonal on the diagonal: the
#   log-det is $\sum_i \log g'(h_{2,i})$ ($\sum_i s_i$ for RealNVP, 0 for NICE), checked here
#   against the brute-force $\log\lvert\det J\rvert$ of a finite-difference Jacobian.
# * One layer leaves half the coordinates alone; alternate the masks (half, alternating;
#   channel and checkerboard for images) or put permutations / `LULinear` in between.
# * On two moons every coupling flow trained here ends far below the $\mathcal{N}(0, I)$
#   value $\log 2\pi + 1 \approx 2.84$; the spline flow matches RealNVP with fewer parameters.
# * The trained RealNVP sends held-out data to latents with the mean, covariance and (after
#   the full training) the radii of $\mathcal{N}(0, I)$; the raw data fail both tests.
