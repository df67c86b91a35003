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
# # Lecture 6 — Multi-scale flows and images
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 11 s; full about 45 s.*
#
# So far every flow worked on vectors $x \in \mathbb{R}^D$. An image is also a vector — the
# $8 \times 8$ digits of this lecture have $D = 64$ numbers — but it has a *layout*: pixels
# have neighbours, and channels sit on top of each other. This lecture builds the pieces that
# respect that layout and the architecture that makes deep image flows affordable:
#
# 1. images as tensors of shape $(B, C, H, W)$;
# 2. **squeeze** (space to depth) and **factor-out** — the multi-scale architecture of RealNVP
#    (Dinh, Sohl-Dickstein & Bengio 2017, §3.6);
# 3. Glow's **invertible $1 \times 1$ convolution** and **actnorm** (Kingma & Dhariwal 2018, §3);
# 4. **dequantization** and **bits per dimension**: how to fit a *continuous* density to
#    *discrete* pixels, and the unit image models are compared in;
# 5. a multi-scale model trained on the digits: its test bits/dim, its samples at two
#    temperatures, what each scale's latents decide, and straight lines in its latent space.
#
# Notation, as in every lecture: $x$ is data, $z$ latent, and $f: x \mapsto z$ is the
# *normalizing* direction (minflow's `forward`), so
#
# $$p_X(x) = p_Z(f(x))\,\lvert\det J_f(x)\rvert, \qquad \log p_X(x) = \log p_Z(z) + \log\lvert\det J_f(x)\rvert .$$
#
# Understanding Deep Learning (UDL, Prince 2023, ch. 16, the section on multi-scale flows)
# writes flows in the *generative* direction $x = f(z)$; its $f$ is our $f^{-1}$.
#
# The source for this lecture is `minflow/flows/multiscale.py` — open it now and read its
# module docstring; every class below is defined there.

# %%
import math

import matplotlib.pyplot as plt
import numpy
from _common import QUICK, budget, check, show

from minflow import backend, data, models, plot, testing, train
from minflow.autodiff import Tensor, no_grad
from minflow.flows.multiscale import ActNormImage, InvertibleConv1x1, MultiScale, Squeeze

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. Images as $(B, C, H, W)$
#
# minflow stores a batch of images batch first: $B$ images, each with $C$ channels of
# $H$ rows and $W$ columns. A grey image has $C = 1$. A flow on images is still a bijection of
# $\mathbb{R}^D$ with $D = CHW$, and `log_det` is still one number per image, shape $(B,)$.
#
# Our data set is scikit-learn's 1,797 handwritten digits, $8 \times 8$ pixels with 17 grey levels
# $0, 1, \dots, 16$. They ship inside scikit-learn, so nothing is downloaded.

# %%
pixels = data.digit_pixels()
print("digits:", pixels.shape, pixels.dtype, "grey levels", pixels.min(), "..", pixels.max())
assert pixels.shape == (1797, 1, 8, 8) and pixels.min() == 0 and pixels.max() == data.LEVELS - 1 == 16

fig = plot.image_grid(pixels[:32], columns=8, value_range=(0, 16), title="32 real digits (grey levels 0..16)")
show(fig, "06_real_digits.png")

# %% [markdown]
# ## 2. Squeeze: trading resolution for channels
#
# Coupling layers on images need a *mask*: which coordinates are kept ($h_1$) and which are
# transformed ($h_2$). minflow's image couplings split the **channels** (`coupling.channel_mask`).
# With $C = 1$ there is nothing to split — so we first **squeeze**: every $2 \times 2$ block of
# pixels becomes one pixel with 4 channels,
#
# $$z[b,\; 4c + 2d_i + d_j,\; i,\; j] = x[b,\; c,\; 2i + d_i,\; 2j + d_j], \qquad d_i, d_j \in \{0, 1\},$$
#
# so $(C, H, W) \to (4C, H/2, W/2)$. Read `Squeeze.forward`: two reshapes around one transpose.
# Watch it on a $1 \times 4 \times 4$ image holding the numbers $0..15$:

# %%
squeeze = Squeeze((1, 4, 4))
x_small = numpy.arange(16, dtype=float).reshape(1, 1, 4, 4)
z_small, squeeze_log_det = squeeze.forward(x_small)
print("before, shape", x_small.shape)
print(x_small[0, 0])
print("after, shape", z_small.shape, "- channel k holds position (d_i, d_j) = divmod(k, 2) of every 2x2 block")
for k in range(4):
    print(f"channel {k}:", z_small.data[0, k].tolist())

# %% [markdown]
# Channel 0 holds the top-left pixel of every block (0, 2, 8, 10), channel 1 the top-right, and
# so on. Squeeze is a **pure rearrangement**: every output is exactly one input, so its
# Jacobian is a permutation matrix and $\log\lvert\det\rvert = 0$. We check all of that:

# %%
z_values = z_small.data
assert sorted(z_values.ravel().tolist()) == sorted(x_small.ravel().tolist())  # same numbers, moved
for c, di, dj, i, j in numpy.ndindex(1, 2, 2, 2, 2):
    assert z_values[0, 4 * c + 2 * di + dj, i, j] == x_small[0, c, 2 * i + di, 2 * j + dj]
assert numpy.all(squeeze_log_det.data == 0)
x_back, _ = squeeze.inverse(z_small)
assert numpy.array_equal(x_back.data, x_small)  # depth to space undoes it exactly
jacobian = testing.numerical_jacobian(lambda a: squeeze.forward(a)[0].data, x_small)[0]
assert numpy.allclose(numpy.sort(jacobian, axis=1)[:, -1], 1) and numpy.allclose(jacobian.sum(axis=0), 1)
print("squeeze: a permutation of the 16 numbers, log-det 0, inverted exactly")

# %% [markdown]
# The same on a real digit: one squeeze turns the $8 \times 8$ image into four $4 \times 4$
# channel images, each a subsampled copy of the digit, shifted by one pixel: channel
# $2 d_i + d_j$ holds the pixels $x[2i + d_i, 2j + d_j]$. Every channel still shows the digit,
# so whichever channels a coupling keeps, it sees a coarse version of the whole image.

# %%
digit = pixels[:1].astype(float)  # the first digit, (1, 1, 8, 8)
channels, _ = Squeeze((1, 8, 8)).forward(digit)
channels = channels.data[0]  # (4, 4, 4)
fig, axes = plt.subplots(1, 5, figsize=(11, 2.6))
axes[0].imshow(digit[0, 0], cmap="gray", vmin=0, vmax=16)
axes[0].set_title("the digit, 8 x 8")
for k, ax in enumerate(axes[1:]):
    d_i, d_j = divmod(k, 2)
    ax.imshow(channels[k], cmap="gray", vmin=0, vmax=16)
    ax.set_title(f"channel {k}: x[2i+{d_i}, 2j+{d_j}]", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("squeeze: one 8 x 8 grey image -> four 4 x 4 channels", y=1.02)
show(fig, "06_squeeze_digit.png")
for k in range(4):
    d_i, d_j = divmod(k, 2)
    assert numpy.array_equal(channels[k], digit[0, 0, d_i::2, d_j::2])  # a subsampled copy of the digit
print("each channel is the digit subsampled by 2 in each direction, shifted by (d_i, d_j)")

# %% [markdown]
# After a squeeze, the 4 channels of a pixel are 4 neighbouring pixels of the original image, so
# a layer that mixes channels (the $1 \times 1$ convolution of §4) mixes a $2 \times 2$
# neighbourhood, and a channel-wise coupling transforms some pixels of each neighbourhood.
#
# What a coupling *conditions on* depends on its conditioner, not on the squeeze. RealNVP and
# Glow compute $s, t$ with convolutional networks of small ($3 \times 3$) kernels: an output
# sees only a patch of the kept channels, and each squeeze doubles that patch in original
# pixels. That is the locality argument of the papers, and it holds for such conditioners.
# minflow's conditioner is an MLP on the flattened kept half (see the module docstring of
# `multiscale.py`), so every transformed number depends on every kept number of the whole
# image, at every scale, squeezed or not. Checked on one coupling after one squeeze, moved away
# from the identity it starts as: every entry of its Jacobian from a kept to a transformed
# number is nonzero, the corner-to-corner one included.

# %%
from minflow.flows import AffineCoupling
from minflow.flows.coupling import channel_mask

squeezed_shape = (4, 4, 4)  # an 8 x 8 digit after one squeeze
coupling = AffineCoupling(channel_mask(*squeezed_shape), hidden=(16,), seed=0)  # keeps channels 0, 1
rng_local = numpy.random.default_rng(5)
for parameter in coupling.parameters():  # the last layer starts at zero (the identity): move it
    noise = 0.3 * rng_local.standard_normal(parameter.shape)
    parameter.data = parameter.data + backend.to_device(noise, parameter.dtype)
x_local = backend.to_device(rng_local.standard_normal((1, *squeezed_shape)))
with no_grad():
    jacobian_local = backend.to_numpy(testing.numerical_jacobian(lambda a: coupling.forward(a)[0].data, x_local))[0]
kept_to_transformed = jacobian_local[32:, :32]  # rows: channels 2, 3 (transformed); columns: channels 0, 1 (kept)
top_left, bottom_right = (numpy.ravel_multi_index(index, squeezed_shape) for index in [(2, 0, 0), (0, 3, 3)])
corner = jacobian_local[top_left, bottom_right]  # d z[2, 0, 0] / d x[0, 3, 3]
print(
    f"nonzero kept -> transformed entries: {numpy.mean(numpy.abs(kept_to_transformed) > 1e-8):.0%}; "
    f"d z[2, 0, 0] / d x[0, 3, 3] (opposite corners) = {corner:.4f}"
)
assert numpy.all(numpy.abs(kept_to_transformed) > 1e-8)  # an MLP conditioner: no locality at all

# %% [markdown]
# ## 3. Factor-out: not every number needs the whole depth
#
# A flow keeps the dimension: a plain stack of $L$ layers on $D$ numbers costs $\propto L D$.
# RealNVP's multi-scale architecture (Dinh et al. 2017, §3.6) **factors out** half the
# channels after each scale of $K$ steps: they are declared part of the latent $z$ and leave the
# computation, and only the other half goes through the next scale. Two reasons:
#
# * **compute and memory**: scale $s$ works on $D / 2^{s-1}$ numbers, so the whole pass costs
#   $K D (1 + \tfrac12 + \tfrac14 + \dots) < 2 K D$ however many scales there are;
# * **a hierarchy**, with convolutional conditioners: the coordinates factored out early were
#   transformed only by layers that see small patches and model local detail; those that went
#   through every scale (after repeated squeezing, each of their pixels sees the whole image)
#   model the coarse, global structure. With minflow's MLP conditioners every layer sees the
#   whole image, so here the difference is one of depth only: the early coordinates went
#   through fewer layers.
#
# Because a factored-out $z_s$ never meets another layer, the map $x \mapsto (z_1, \dots, z_S)$ is
# still a bijection with a block-triangular Jacobian, and with $p_Z = N(0, I)$
#
# $$\log p(x) = \sum_s \log N(z_s; 0, I) + \sum_{\text{layers}} \log\lvert\det J_\text{layer}\rvert .$$
#
# `MultiScale` (read `MultiScale.forward`) packs $z_1, \dots, z_S$ back into one $(C, H, W)$
# array so that the base $N(0, I)$ computes that sum in one call. For the digits, with 2 scales:

# %%
steps_per_scale = 8
model = models.glow((1, 8, 8), scales=2, steps_per_scale=steps_per_scale, hidden=64, seed=0)
flow = model.flow
print("factored-out parts:", flow.part_shapes)
print("numbers each scale's steps work on:", [step.event_shape for step in (s[0] for s in flow.steps)])

per_scale = [math.prod(steps[0].event_shape) for steps in flow.steps]  # each step's event size
work_multiscale = sum(steps_per_scale * d for d in per_scale)
work_plain = steps_per_scale * len(per_scale) * 64  # the same steps, all on D = 64 numbers
print(
    f"coordinates pushed through steps: multi-scale {work_multiscale}, without factor-out {work_plain}, "
    f"ratio {work_multiscale / work_plain:.2f}"
)
assert flow.part_shapes == [(2, 4, 4), (8, 2, 2)] and sum(map(math.prod, flow.part_shapes)) == 64
assert per_scale == [64, 32] and work_multiscale / work_plain == 0.75  # (64 + 32) / (64 + 64)
assert work_multiscale < 2 * steps_per_scale * 64  # the bound K D (1 + 1/2 + ...) < 2 K D

# %% [markdown]
# Where the 64 numbers of a digit go, drawn with the squeezes and the split alone (the steps
# between them would mix the values, not move them): scale 1 squeezes the digit into four
# channels, and factors out channels 2 and 3, which become $z_1$, shape $(2, 4, 4)$; channels
# 0 and 1 go on, are squeezed again into eight $2 \times 2$ channels, and the last scale keeps
# them all: $z_2$, shape $(8, 2, 2)$. In the trained model each box holds the output of the
# scale's steps, not raw pixels, but the shapes and the routing are exactly these.

# %%
scale_1 = Squeeze((1, 8, 8)).forward(digit)[0].data  # (1, 4, 4, 4)
kept, factored_out = scale_1[:, :2], scale_1[:, 2:]  # MultiScale keeps the first half of the channels
scale_2 = Squeeze((2, 4, 4)).forward(kept)[0].data  # (1, 8, 2, 2): the last scale keeps everything
rows = [
    ("z_1: channels 2, 3 of scale 1", factored_out[0], 2),
    ("kept: channels 0, 1", kept[0], 2),
    ("z_2: the kept half, squeezed", scale_2[0], 8),
]
fig, axes = plt.subplots(3, 8, figsize=(11, 4.6))
for row, (label, images, count) in zip(axes, rows):
    for k, ax in enumerate(row):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < count:
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=16)
        else:
            ax.axis("off")
    row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
fig.suptitle("factor-out on the digit above: 32 numbers leave after scale 1, 32 go through scale 2")
show(fig, "06_factor_out_digit.png")
assert [factored_out.shape[1:], scale_2.shape[1:]] == flow.part_shapes  # the model's z_1 and z_2 have these shapes
assert sorted(numpy.concatenate([factored_out.ravel(), scale_2.ravel()])) == sorted(digit.ravel())  # all 64, once

# %% [markdown]
# With only two scales the saving is $1 - 96/128 = 25\%$; with $S$ scales the work is
# $K D (2 - 2^{1-S})$ against $K D S$. Everything above is still one flow: `check_flow` runs
# minflow's whole property suite (round trips, log-det against finite differences, batch
# independence, gradients) on a small multi-scale flow with 2 scales.

# %%
testing.check_flow(MultiScale((1, 4, 4), scales=2, steps_per_scale=1, hidden=(8,), seed=0))
print("MultiScale((1, 4, 4), scales=2) passes check_flow")

# %% [markdown]
# ## 4. The invertible $1 \times 1$ convolution
#
# Between couplings we used fixed permutations. Glow (Kingma & Dhariwal 2018, §3.2) *learns* the
# mixing instead: the same $C \times C$ matrix $W$ is applied to the channel vector of every pixel,
# $z[:, i, j] = W x[:, i, j]$ — a convolution with a $1 \times 1$ kernel. Ordering the $D = CHW$
# coordinates pixel by pixel, its Jacobian is block diagonal with $HW$ copies of $W$, hence
#
# $$\log\lvert\det J\rvert = H W \log\lvert\det W\rvert .$$
#
# minflow stores $W = P L U$ (a fixed permutation, a unit lower and an upper triangular factor),
# so $\log\lvert\det W\rvert = \sum_i s_i$ costs $O(C)$ instead of $O(C^3)$ (read
# `InvertibleConv1x1`). We check the formula against a finite-difference Jacobian of the whole
# $D \times D$ map, for $C = 4$ channels on a $3 \times 2$ image, after training-like random
# changes to the parameters (at initialisation $W$ is a rotation and every log-det is 0).

# %%
conv = InvertibleConv1x1(4, 3, 2, seed=1)
rng = numpy.random.default_rng(0)
for parameter in (conv.lower, conv.upper, conv.log_diag):
    parameter.data = parameter.data + backend.to_device(0.3 * rng.standard_normal(parameter.shape), parameter.dtype)
weight = backend.to_numpy(conv.weight)  # W on the host, for NumPy's slogdet
x_conv = backend.to_device(rng.standard_normal((5, 4, 3, 2)))  # where the layer lives
with no_grad():
    z_conv, conv_log_det = conv.forward(x_conv)
    conv_log_det = backend.to_numpy(conv_log_det)
jacobian = backend.to_numpy(testing.numerical_jacobian(lambda a: conv.forward(a)[0].data, x_conv))  # (5, 24, 24)
numeric = numpy.linalg.slogdet(jacobian)[1]
formula = 3 * 2 * numpy.linalg.slogdet(weight)[1]
print(f"H W log|det W| = {formula:.6f}; finite differences: {numeric.round(6)}; forward: {conv_log_det[0]:.6f}")
assert numpy.allclose(numeric, formula, atol=1e-6) and numpy.allclose(conv_log_det, formula, atol=1e-10)
assert abs(formula) > 0.1  # not the trivial log-det 0 of a rotation
testing.check_flow(conv)

# %% [markdown]
# ## 5. ActNorm for images
#
# `ActNormImage` is a per-channel affine map $z[c] = (x[c] - \mu_c)\, e^{a_c}$. Its Jacobian is
# diagonal; channel $c$'s entry $e^{a_c}$ appears once per pixel, so
# $\log\lvert\det\rvert = HW \sum_c a_c$. Its first `forward` sets $\mu_c, a_c$ from the batch so
# that this batch comes out standardised per channel (data-dependent initialisation), after which
# they are ordinary trained parameters.

# %%
actnorm = ActNormImage(4, 3, 2)
x_act = backend.to_device(3.0 + 2.0 * rng.standard_normal((64, 4, 3, 2)))
with no_grad():
    z_act, act_log_det = actnorm.forward(x_act)
z_act, act_log_det = backend.to_numpy(z_act), backend.to_numpy(act_log_det)
print("per-channel mean after init:", z_act.mean(axis=(0, 2, 3)).round(12))
print("per-channel std after init: ", z_act.std(axis=(0, 2, 3)).round(6))
assert numpy.allclose(z_act.mean(axis=(0, 2, 3)), 0, atol=1e-12)
assert numpy.allclose(z_act.std(axis=(0, 2, 3)), 1, atol=1e-5)
assert numpy.allclose(act_log_det, 3 * 2 * backend.to_numpy(actnorm.log_scale).sum())
testing.check_flow(actnorm)

# %% [markdown]
# One Glow step is `[ActNormImage, InvertibleConv1x1, AffineCoupling on a channel mask]`
# (`multiscale.glow_step`); `MultiScale` puts $K$ of them in each scale.
#
# ## 6. Dequantization: a continuous density for discrete pixels
#
# Pixels are integers. A *continuous* density fitted to integer data has a degenerate optimum:
# it can pile its mass into ever narrower spikes on the integers, and its likelihood grows without
# bound. Watch it happen with a mixture of 17 Gaussians of width $\sigma$ centred on the grey
# levels (weights: how often each level occurs) — the average log-likelihood of the integer
# pixels climbs forever as $\sigma \to 0$:

# %%
train_pixels = data.split(pixels, seed=0)[0]
values = train_pixels.ravel().astype(float)
weights = numpy.bincount(train_pixels.ravel(), minlength=data.LEVELS) / values.size
dequantized_values = data.dequantize(values[None], seed=0)[0]


def spike_mixture_loglik(points, sigma):
    """Average log density of a mixture of N(k, sigma^2), k = 0..16, weighted by `weights`."""
    exponents = (
        numpy.log(weights + 1e-300)
        - 0.5 * ((points[:, None] - numpy.arange(data.LEVELS)) / sigma) ** 2
        - math.log(sigma * math.sqrt(2 * math.pi))
    )
    peak = exponents.max(axis=1, keepdims=True)
    return float(numpy.mean(peak[:, 0] + numpy.log(numpy.exp(exponents - peak).sum(axis=1))))


sigmas = [0.3, 0.1, 0.03, 0.01]
on_integers = [spike_mixture_loglik(values, s) for s in sigmas]
on_dequantized = [spike_mixture_loglik(dequantized_values, s) for s in sigmas]
for s, a, b in zip(sigmas, on_integers, on_dequantized):
    print(f"sigma {s:5.2f}: log-lik per pixel on integers {a:7.3f}   on dequantized pixels {b:9.3f}")
assert all(a < b for a, b in zip(on_integers, on_integers[1:]))  # grows without bound
assert all(a > b for a, b in zip(on_dequantized, on_dequantized[1:]))  # the spikes are punished

# %% [markdown]
# **Dequantization** (Uria et al. 2013; Theis et al. 2016) removes that optimum: replace each
# pixel $k$ by $y = k + u$, $u \sim U[0, 1)$, so the data fill the unit cells $[k, k+1)$ instead
# of sitting on their corners (`data.dequantize`). Now spikes are punished (right column above),
# and for any density $p$ on $[0, 17)^D$ the discrete model $P(k) = \int_{[0,1)^D} p(k + u)\,du$
# satisfies, by Jensen's inequality,
#
# $$\log P(k) \ge \mathbb{E}_u[\log p(k + u)],$$
#
# so the continuous log-likelihood of dequantized data is a *lower bound* on an honest discrete
# log-likelihood. Models are then trained in **model space**: RealNVP's logit preprocessing
# (`data.to_model_space`, read its docstring) maps $y \in [0, 17]$ to
# $h = \operatorname{logit}(\alpha + (1 - 2\alpha) y / 17)$ on the real line, and returns the
# log-determinant $\log\lvert dh/dy\rvert$ that converts a model-space density back:
# $\log p_y(y) = \log p_h(h) + \log\lvert dh/dy\rvert$.
#
# Whose formula is that? The RealNVP paper (Dinh et al. 2017, §4.1) prints
# $\operatorname{logit}(\alpha + (1 - \alpha) x)$, which moves only the dark end away from the
# logit's infinity; the symmetric form above is what RealNVP's released code computes
# ($0.05 + 0.9x$) and how the MAF paper (Papamakarios et al. 2017) writes "the same
# preprocessing as by Dinh et al.". Symmetric means the two ends of the grey scale land at
# $\pm\operatorname{logit}(1 - \alpha)$:

# %%
ends, _ = data.to_model_space(numpy.array([[0.0, data.LEVELS]]))  # the darkest and the brightest value
print(f"alpha = 0.05: h(0) = {ends[0, 0]:.3f}, h(17) = {ends[0, 1]:.3f}")
assert numpy.isclose(ends[0, 0], -ends[0, 1])  # with the printed (1 - alpha), h(17) = logit(1) = +infinity

# %% [markdown]
# ## 7. Bits per dimension
#
# An NLL in nats per image depends on the number of pixels and on the preprocessing. Image models
# are compared in **bits per dimension** of the dequantized pixels on the original $0..17$ scale,
#
# $$\text{bits/dim} = \frac{-\frac1N \sum_n \log p_y(y_n)}{D \ln 2},$$
#
# (`data.bits_per_dim`): per pixel, so images of any size compare; in bits, so it reads as a code
# length — by the bound above, an upper bound on the bits per pixel a lossless compressor built
# from the model would need. It has a reference point: the uniform density on $[0, 17)^D$ has
# $p_y = 17^{-D}$, i.e. $\log_2 17 \approx 4.09$ bits/dim; in model space that density is
# $\log p_h(h) = \log p_y(y) - \log\lvert dh/dy\rvert$, and `bits_per_dim`, which adds the
# log-determinant back, must return $\log_2 17$ for it. A second baseline is a per-pixel Gaussian
# in model space (independent pixels, no structure at all):

# %%
splits = data.digits(seed=0)
print("model-space splits:", splits.train.shape, splits.val.shape, splits.test.shape, "alpha", splits.alpha)
uniform_bpd = math.log2(data.LEVELS)
mean, std = splits.train.mean(axis=0), splits.train.std(axis=0)
gaussian_log_prob = (
    (-0.5 * ((splits.test - mean) / std) ** 2 - numpy.log(std) - 0.5 * math.log(2 * math.pi))
    .reshape(len(splits.test), -1)
    .sum(axis=1)
)
gaussian_bpd = data.bits_per_dim(gaussian_log_prob, splits.test_log_det)
print(f"uniform over the 17 levels: {uniform_bpd:.3f} bits/dim; per-pixel Gaussian: {gaussian_bpd:.3f} bits/dim")
assert abs(uniform_bpd - 4.09) < 0.005 and abs(gaussian_bpd - 2.90) < 0.01
uniform_log_prob_h = -data.DIGIT_DIM * math.log(data.LEVELS) - splits.test_log_det  # log p_y - log|dh/dy|
assert abs(data.bits_per_dim(uniform_log_prob_h, splits.test_log_det) - uniform_bpd) < 1e-12

# %% [markdown]
# ## 8. Training a multi-scale model on the digits
#
# We train the Glow-style model of §3 (2 scales, 8 steps per scale, MLP conditioners of 64 units;
# `models.glow`) by maximum likelihood in model space with `train.fit`, exactly as the command
# line does (read `run_image_training` in `minflow/cli.py`; the data come from `minflow/data.py`):
# batch 64, Adam with learning rate $10^{-3}$ and a cosine schedule, validation on the validation digits.
#
# One detail matters. With a single dequantization of the training set, the flow soon models
# *that noise draw* rather than the digits and its validation NLL climbs. So we train on **fresh
# noise**: `data.fresh_dequantizations` stacks several independently dequantized copies of the
# training digits, and `fit` walks through them in shuffled epochs.

# %%
steps = budget(1000, 50)
batch_size = 64
copies = min(64, -(-steps * batch_size // len(splits.train)))  # enough that nearly every batch has new noise
train_images = data.fresh_dequantizations(copies, seed=0, alpha=splits.alpha)
print(f"{steps} steps on {copies} dequantized copies of the training digits: {train_images.shape}")
history = train.fit(
    model,
    train_images,
    steps=steps,
    batch_size=batch_size,
    lr=1e-3,
    schedule="cosine",
    val_data=splits.val,
    val_every=max(steps // 20, 1),
    seed=0,
    progress=False,
)


test_bpd = train.evaluate_bits_per_dim(model, splits.test, splits.test_log_det)
print(
    f"trained in {history['wall_time']:.1f} s: test {test_bpd:.3f} bits/dim "
    f"(uniform {uniform_bpd:.2f}, per-pixel Gaussian {gaussian_bpd:.2f})"
)
assert test_bpd < uniform_bpd
if not QUICK:
    assert test_bpd < gaussian_bpd  # the flow has learned how pixels depend on each other

fig = plot.training_curves(
    {
        "step": history["step"],
        "train_nll": history["loss"],
        "val_step": history["val_step"],
        "val_nll": history["val_nll"],
    }
)
show(fig, "06_training.png")

# %% [markdown]
# Samples are $x = f^{-1}(z)$ with $z \sim N(0, I)$, mapped from model space back to grey levels
# with `data.from_model_space`:

# %%
grey = (0.0, float(data.LEVELS))
samples = data.from_model_space(model.sample(64, seed=1), splits.alpha)
fig = plot.image_grid(samples, columns=8, value_range=grey, title=f"64 samples after {steps} steps")
show(fig, "06_samples.png")
assert samples.shape == (64, 1, 8, 8) and numpy.all(numpy.isfinite(samples))

# %% [markdown]
# **Temperature** (UDL 16.5.2; Glow shows its samples this way). Draw $z \sim N(0, T^2 I)$ with
# $T < 1$ instead of $N(0, I)$ and map it back with $f^{-1}$: the samples come from closer to the
# model's densest region, cleaner and less varied. Below, the same base draw $\varepsilon$ at
# $T = 1$ and $T = 0.7$ ($z = T\varepsilon$), so each tile on the right is its twin on the left
# pulled toward the mode. The check: the model gives the $T = 0.7$ samples a higher mean
# log-likelihood (in model space) than the $T = 1$ samples.

# %%
epsilon = model.base.sample(32, seed=2, dtype=model.float_dtype(), xp=model.array_module())
tempered, tempered_log_lik = {}, {}
with no_grad():
    for T in (1.0, 0.7):
        h_T = model.flow.inverse(Tensor(T * epsilon))[0].data
        tempered[T] = data.from_model_space(h_T, splits.alpha)
        tempered_log_lik[T] = float(backend.to_numpy(model.log_prob(h_T).data).mean())
fig, axes = plt.subplots(1, 2, figsize=(9, 5))
for ax, T in zip(axes, (1.0, 0.7)):
    padded = numpy.pad(backend.to_numpy(tempered[T])[:, 0], ((0, 0), (1, 1), (1, 1)), constant_values=numpy.nan)
    tiles = padded.reshape(4, 8, 10, 10).transpose(0, 2, 1, 3).reshape(40, 80)  # 4 rows of 8 digits, 1-pixel gaps
    ax.imshow(tiles, cmap=plt.get_cmap("gray").with_extremes(bad="white"), vmin=grey[0], vmax=grey[1])
    ax.set_title(f"T = {T}: mean log p = {tempered_log_lik[T]:.1f} nats")
    ax.axis("off")
show(fig, "06_temperature.png")
print(
    f"mean model-space log-likelihood of 32 samples: "
    f"T = 1 {tempered_log_lik[1.0]:.1f}, T = 0.7 {tempered_log_lik[0.7]:.1f}"
)
assert tempered_log_lik[0.7] > tempered_log_lik[1.0]

# %% [markdown]
# **The mode is not a typical digit.** Turned all the way down, $T = 0$ decodes $z = 0$, the
# latent's densest point. It is also where the model's density is high: its log-likelihood beats
# the average test digit's by far. Yet no test digit maps anywhere near it: their latents have
# norms around $\sqrt{64} = 8$, a thin shell, as samples of $N(0, I)$ in 64 dimensions do
# (Lecture 7 works that out). High likelihood and "looks like the data" are different things.

# %%
with no_grad():
    test_on_device = backend.to_device(splits.test, dtype=model.float_dtype(), xp=model.array_module())
    z_digits = backend.to_numpy(model.flow.forward(Tensor(test_on_device))[0].data).reshape(len(splits.test), -1)
    test_log_lik = backend.to_numpy(model.log_prob(test_on_device).data)
    h_mode = model.flow.inverse(Tensor(0 * epsilon[:1]))[0].data
    mode_log_lik = float(backend.to_numpy(model.log_prob(h_mode).data)[0])
digit_norms = numpy.linalg.norm(z_digits, axis=1)
print(
    f"|z| of the {len(digit_norms)} test digits: {digit_norms.min():.2f} .. {digit_norms.max():.2f}; "
    f"log-likelihood of the decoded z = 0: {mode_log_lik:.1f}, of test digits: mean {test_log_lik.mean():.1f}, "
    f"best {test_log_lik.max():.1f}"
)
assert digit_norms.min() > 5  # no test digit anywhere near the latent's mode
assert mode_log_lik > test_log_lik.mean() + 10  # though the mode is far more likely than a typical digit

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2.5, 1]})
left.hist(digit_norms, bins=30, color="C0")
left.axvline(0, color="C3", linewidth=2, label="z = 0, the mode")
left.axvline(8, color="k", linestyle="--", label="sqrt(64) = 8")
left.set_xlabel("|f(x)| of the test digits")
left.legend(fontsize=8)
right.imshow(
    backend.to_numpy(data.from_model_space(h_mode, splits.alpha))[0, 0], cmap="gray", vmin=grey[0], vmax=grey[1]
)
right.set_title(f"z = 0 decoded\nlog p = {mode_log_lik:.1f}", fontsize=10)
right.axis("off")
show(fig, "06_mode_not_typical.png")

# %% [markdown]
# **What lives at each scale.** The latent is $z = (z_1, z_2)$: $z_1$ (32 numbers) left after the
# first scale's 8 steps, $z_2$ (32 numbers) went through all 16. Fix one part and resample the
# other: in each row of the left grid below, $z_2$ is the same and $z_1$ is drawn afresh for
# every tile; on the right, $z_1$ is fixed along a row and $z_2$ resampled. How much a row
# varies shows how much of the digit the resampled part decides. Predict before you run: which
# grid has rows of near-twins?
#
# After the full training, the left rows are variations of one digit: the 32 numbers that went
# through all 16 steps fix which digit it is and its shape, and the 32 factored out early change
# its strokes. On the right, rows change digit. The hierarchy is weaker than in RealNVP's and
# Glow's figures, whose convolutional conditioners make early scales local by construction; here
# it comes from depth alone (§3). Under the quick run's 50 steps the two grids look alike.

# %%
size_1, size_2 = (math.prod(shape) for shape in flow.part_shapes)  # z is packed z_1 first, then z_2
rows, columns = 4, 8
rng_scales = numpy.random.default_rng(6)
fixed = rng_scales.standard_normal((rows, 1, size_1 + size_2)).repeat(columns, axis=1)  # one draw per row
fresh = rng_scales.standard_normal((rows, columns, size_1 + size_2))  # one draw per tile
first, last = slice(0, size_1), slice(size_1, None)
resample_first, resample_last = fixed.copy(), fixed.copy()
resample_first[..., first] = fresh[..., first]  # z_2 fixed along a row, z_1 new in every tile
resample_last[..., last] = fresh[..., last]  # z_1 fixed along a row, z_2 new in every tile


def decode(z_grid):
    """Map a (rows, columns, 64) grid of latents to grey-level images (rows, columns, 8, 8)."""
    z_device = backend.to_device(z_grid.reshape(-1, 1, 8, 8), dtype=model.float_dtype(), xp=model.array_module())
    with no_grad():
        h = model.flow.inverse(Tensor(z_device))[0].data
    return backend.to_numpy(data.from_model_space(h, splits.alpha)).reshape(rows, columns, 8, 8)


grids = {
    "resample z_1 (z_2 fixed per row)": decode(resample_first),
    "resample z_2 (z_1 fixed per row)": decode(resample_last),
}
row_spread = {name: float(grid.std(axis=1).mean()) for name, grid in grids.items()}  # grey levels, within a row
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for ax, (name, grid) in zip(axes, grids.items()):
    padded = numpy.pad(grid, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=numpy.nan)
    ax.imshow(
        padded.transpose(0, 2, 1, 3).reshape(rows * 10, columns * 10),
        cmap=plt.get_cmap("gray").with_extremes(bad="white"),
        vmin=grey[0],
        vmax=grey[1],
    )
    ax.set_title(f"{name}\nspread within a row {row_spread[name]:.2f} grey levels", fontsize=9)
    ax.axis("off")
show(fig, "06_scales.png")
print(", ".join(f"{name}: {spread:.2f}" for name, spread in row_spread.items()))
with no_grad():  # the slices above are the model's parts: what latent_parts calls z_2 is fixed along each row
    z_1_and_2 = model.flow.latent_parts(Tensor(backend.to_device(resample_first.reshape(-1, 1, 8, 8))))
assert numpy.array_equal(backend.to_numpy(z_1_and_2[1].data).reshape(rows, columns, -1), fixed[..., last])
spread_first, spread_last = row_spread.values()
if not QUICK:  # after 1,000 steps: about 1.2 against 2.6 grey levels; after the quick run's 50, 1.85 against 1.91
    assert spread_first < 0.7 * spread_last

# %% [markdown]
# **Latent interpolations.** Map two test digits to $z_a = f(x_a)$, $z_b = f(x_b)$, walk the straight
# line $z_t = (1 - t) z_a + t z_b$, and decode each point with $f^{-1}$ (`plot.interpolations`).
# The first and last tile of each row are the digits themselves (the round trip); in between is
# what the model puts between them.

# %%
pairs = splits.test[:8].reshape((4, 2) + splits.test.shape[1:])
fig = plot.interpolations(
    model, pairs, steps=8, to_image=lambda h: data.from_model_space(h, splits.alpha), value_range=grey
)
show(fig, "06_interpolations.png")

# %% [markdown]
# ## Exercises
#
# ### Exercise 6.1 — squeeze by hand
#
# Write `my_squeeze(x)` for a NumPy array $(B, C, H, W)$ using only `reshape` and `transpose`,
# returning $(B, 4C, H/2, W/2)$ with the channel order of `Squeeze`
# ($4c + 2 d_i + d_j$). Compare it with `Squeeze` on random images with 3 channels.


# %% nbgrader={"grade": false, "grade_id": "ex6_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_squeeze(x):
    ### BEGIN SOLUTION
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)  # axes (b, c, i, d_i, j, d_j)
    return blocks.transpose(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)  # (b, c, d_i, d_j, i, j)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex6_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
x_test = numpy.random.default_rng(3).standard_normal((2, 3, 6, 4))
check(
    "Exercise 6.1",
    lambda: numpy.array_equal(my_squeeze(x_test), Squeeze((3, 6, 4)).forward(x_test)[0].data),
    "reshape to (B, C, H/2, 2, W/2, 2), move the two block axes next to C, reshape to (B, 4C, H/2, W/2)",
)

# %% [markdown]
# ### Exercise 6.2 — factor-out, written by hand
#
# Write the forward pass of a `MultiScale` flow from its parts: `flow.squeezes[s]` and
# `flow.steps[s]` are the squeeze and the $K$ steps of scale $s$, each a flow whose
# `forward(h)` returns `(h, log_det)`. After every scale but the last, factor out the **second**
# half of the channels ($z_s$ = `h[:, C//2:]`) and send the first half on; the last scale keeps
# everything. `my_multiscale_forward(flow, x)` returns `(parts, log_det)`: the list
# $[z_1, \dots, z_S]$, unpacked, each of shape $(B, *\text{part shape})$, and the log-det
# $(B,)$ summed over the steps. A Tensor `h` can be sliced like an array, `h[:, :half]`, and
# fed back to the next squeeze; its array is `h.data`. The check runs a randomised 3-scale flow on
# $1 \times 8 \times 8$ images and compares with `flow.latent_parts(flow.forward(x)[0])`.


# %% nbgrader={"grade": false, "grade_id": "ex6_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_multiscale_forward(flow, x):
    ### BEGIN SOLUTION
    h, log_det, parts = x, 0.0, []
    for scale, (squeeze, steps) in enumerate(zip(flow.squeezes, flow.steps)):
        h, _ = squeeze.forward(h)  # a permutation: log-det 0
        h, step_log_det = steps.forward(h)
        log_det = log_det + step_log_det.data
        if scale < len(flow.steps) - 1:
            half = h.shape[1] // 2
            parts.append(h.data[:, half:])  # z_s leaves the computation
            h = h[:, :half]
    parts.append(h.data)  # the last scale keeps all its channels
    return parts, log_det
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex6_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
three_scales = MultiScale((1, 8, 8), scales=3, steps_per_scale=1, hidden=(8,), seed=1)
rng_exercise = numpy.random.default_rng(11)
for parameter in three_scales.parameters():  # move every coupling away from the identity it starts as
    parameter.data = parameter.data + backend.to_device(
        0.2 * rng_exercise.standard_normal(parameter.shape), parameter.dtype
    )
x_scales = backend.to_device(rng_exercise.standard_normal((3, 1, 8, 8)))
with no_grad():
    z_scales, log_det_scales = three_scales.forward(Tensor(x_scales))
    parts_expected = [backend.to_numpy(part.data) for part in three_scales.latent_parts(z_scales)]
log_det_expected = backend.to_numpy(log_det_scales.data)


def factor_out_is_right():
    with no_grad():
        parts, log_det = my_multiscale_forward(three_scales, Tensor(x_scales))
    parts = [backend.to_numpy(part) for part in parts]  # Tensors or arrays, on any backend
    return (
        len(parts) == len(parts_expected)
        and all(a.shape == b.shape and numpy.allclose(a, b, atol=1e-12) for a, b in zip(parts, parts_expected))
        and numpy.allclose(backend.to_numpy(log_det), log_det_expected, atol=1e-12)
    )


check(
    "Exercise 6.2",
    factor_out_is_right,
    "squeeze, run the scale's steps and add their log-det; then keep h[:, :C//2] and send h[:, C//2:] to the "
    "latent; after the loop the last h is z_S",
)

# %% [markdown]
# ### Exercise 6.3 — the Jacobian of a $1 \times 1$ convolution
#
# In minflow's channel-first layout, coordinate $(c, p)$ of an image ($p$ = pixel index, $HW$ of
# them) is number $c \cdot HW + p$ of the flattened vector. Write the $D \times D$ Jacobian of
# `conv` (from §4: $C = 4$, $H W = 6$) explicitly with `numpy.kron`, check it equals the
# finite-difference `jacobian` from §4, and that its log-determinant is $HW \log\lvert\det W\rvert$:
# `conv_jacobian()` returns it, a $(24, 24)$ array.


# %% nbgrader={"grade": false, "grade_id": "ex6_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def conv_jacobian():
    ### BEGIN SOLUTION
    # z[c, p] = sum_c' W[c, c'] x[c', p]: the block (c, c') of the Jacobian is W[c, c'] times I_HW.
    return numpy.kron(weight, numpy.eye(3 * 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex6_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def conv_jacobian_is_right():
    my_jacobian = conv_jacobian()
    return (
        my_jacobian is not None
        and numpy.allclose(my_jacobian, jacobian[0], atol=1e-6)
        and abs(numpy.linalg.slogdet(my_jacobian)[1] - 3 * 2 * numpy.linalg.slogdet(weight)[1]) < 1e-9
    )


check(
    "Exercise 6.3",
    conv_jacobian_is_right,
    "the block for output channel c and input channel c' is W[c, c'] times the identity on pixels",
)

# %% [markdown]
# ### Exercise 6.4 — temperature sampling
#
# Write `sample_with_temperature(model, n, T, seed)`: draw $\varepsilon$ with
# `model.base.sample(n, seed=seed, dtype=model.float_dtype(), xp=model.array_module())`, and
# return the array $f^{-1}(T\varepsilon)$ (use `model.flow.inverse`, under `no_grad`). At
# $T = 1$ it must equal `model.sample(n, seed=seed)` exactly.


# %% nbgrader={"grade": false, "grade_id": "ex6_4_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sample_with_temperature(model, n, T, seed):
    ### BEGIN SOLUTION
    epsilon = model.base.sample(n, seed=seed, dtype=model.float_dtype(), xp=model.array_module())
    with no_grad():
        x, _ = model.flow.inverse(Tensor(T * epsilon))
    return x.data
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex6_4", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def temperature_is_right():
    at_one = backend.to_numpy(sample_with_temperature(model, 8, 1.0, seed=4))
    at_07 = backend.to_numpy(sample_with_temperature(model, 8, 0.7, seed=4))
    epsilon = model.base.sample(8, seed=4, dtype=model.float_dtype(), xp=model.array_module())
    with no_grad():
        expected = backend.to_numpy(model.flow.inverse(Tensor(0.7 * epsilon))[0].data)
    return numpy.array_equal(at_one, backend.to_numpy(model.sample(8, seed=4))) and numpy.array_equal(at_07, expected)


check(
    "Exercise 6.4",
    temperature_is_right,
    "scale the base draw by T (not T^2: T is a standard deviation), then map it back with model.flow.inverse",
)

# %% [markdown]
# ## Summary
#
# * Squeeze is a free permutation that turns neighbouring pixels into channels; factor-out sends
#   half the channels to the latent after each scale, so a pass costs $< 2KD$ for any depth.
#   The latents that go through every scale decide which digit is drawn; those factored out
#   early, its details.
# * The $1 \times 1$ convolution is a learned channel mixing with $\log\lvert\det\rvert = HW\log\lvert\det W\rvert$,
#   $O(C)$ with an LU parametrisation; actnorm is its per-channel affine partner.
# * Dequantize discrete data, or the likelihood is unbounded; report bits/dim of the dequantized
#   pixels, a bound on a discrete code length, with $\log_2 17 \approx 4.09$ for a uniform model.
#
# Next: applications — anomaly detection by likelihood, and fitting a flow to a density known only
# up to a constant.
