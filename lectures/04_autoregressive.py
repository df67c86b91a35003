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
# # Lecture 4 — Autoregressive flows
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 5 s; full about 6 s.*
#
# A coupling layer (lecture 3) splits the coordinates in two: the first half is left alone and
# becomes the *key* with which the second half is transformed. An **autoregressive flow** pushes
# that idea to its end. Fix an order of the coordinates; coordinate $i$ is transformed by an
# invertible elementwise map $g$ (the *transformer*) whose parameters are computed from **all the
# coordinates before it**:
#
# $$z_i = g\big(x_i;\ \theta_i(x_{<i})\big), \qquad i = 1, \dots, D .$$
#
# This is minflow's `MaskedAutoregressive` (MAF) in the normalizing direction $f: x \mapsto z$;
# the density is $p_X(x) = p_Z(f(x))\,|\det J_f(x)|$ as always.
#
# In this lecture:
#
# 1. why the Jacobian is triangular and the log-determinant costs $O(D)$;
# 2. **MADE**, the masked network that computes all $\theta_i(x_{<i})$ in *one* pass — its
#    degrees, its masks, and a perturbation experiment that shows the autoregressive property;
# 3. **MAF** and **IAF**, and the "key / encrypt" picture of why one direction is sequential;
# 4. the forward and backward mapping of notebook 16.2 of *Understanding Deep Learning*
#    (UDL, Prince 2023) on UDL's own $h = (0.22, 0.41, 0.83, 0.53)$;
# 5. the **measured** cost asymmetry: density vs sampling for MAF, IAF and a coupling layer;
# 6. a coupling layer *is* an autoregressive flow with a two-block order — seen in its Jacobian.
#
# Open `minflow/flows/autoregressive.py` next to this notebook: its module docstring is the
# summary of this lecture, and `MADE.__init__` is twenty lines you should read in full.
#
# **A word on direction.** UDL (section 16.3.4) writes its flows in the *generative* direction,
# from the latent variable to the data, and calls the autoregressive map
# $h'_d = g[h_d, \phi[h_{1:d-1}]]$ its "forward mapping". minflow's `forward` is the
# *normalizing* direction. The structure is what matters and it is the same in both: one
# direction is computed for all coordinates at once, the other one coordinate at a time.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, budget, check, show

from minflow import backend, no_grad, to_numpy
from minflow.flows import (
    MADE,
    AffineCoupling,
    InverseAutoregressive,
    MaskedAutoregressive,
)
from minflow.flows.autoregressive import made_degrees
from minflow.flows.coupling import half_mask
from minflow.flows.splines import PiecewiseLinearTransformer
from minflow.testing import check_flow, numerical_jacobian

print("quick mode" if QUICK else "full mode", "| backend:", backend.backend_name())


def randomise(module, seed, scale=0.5):
    """Add N(0, scale^2) noise to every parameter (not to the masks, which are Buffers).

    minflow zero-initialises the last layer of every conditioner, so a new flow is the identity
    map: fine for training, useless for a demonstration. This moves it somewhere random.
    """
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = p.data + backend.to_device(scale * rng.standard_normal(p.shape), dtype=p.dtype)
    return module


# %% [markdown]
# ## 1. The Jacobian is triangular
#
# Differentiate $z_i = g(x_i; \theta_i(x_{<i}))$ with respect to $x_j$:
#
# * $j > i$: $\theta_i$ does not see $x_j$ and $g$ acts on $x_i$ alone, so $\partial z_i/\partial x_j = 0$;
# * $j = i$: only the transformer depends on $x_i$: $\partial z_i/\partial x_i = g'(x_i; \theta_i)$;
# * $j < i$: something complicated (the whole network), marked $*$.
#
# $$J_f = \begin{pmatrix} g'_1 & 0 & 0 \\ * & g'_2 & 0 \\ * & * & g'_3 \end{pmatrix},
# \qquad \log|\det J_f| = \sum_{i=1}^D \log|g'(x_i;\theta_i(x_{<i}))| .$$
#
# The determinant of a triangular matrix is the product of its diagonal, so the starred entries —
# the network — never need to be computed. That is the whole trick; everything else is about
# computing the $\theta_i$ efficiently.

# %% [markdown]
# ## 2. MADE: all the conditioners in one masked network
#
# We need $D$ functions $\theta_1(), \theta_2(x_1), \theta_3(x_1, x_2), \dots$. Training $D$ separate
# networks would be wasteful. MADE (Germain et al. 2015) uses **one** MLP and zeroes some of its
# weights with fixed 0/1 masks, so that output $i$ has no path from inputs $j \geq i$.
#
# The recipe gives each unit a **degree**:
#
# * input $x_j$ has degree $m(x_j)$ = its position in the order (1..D);
# * a hidden unit gets a degree $m \in \{1, \dots, D-1\}$ and may see the units of the layer
#   below whose degree is $\leq m$;
# * an output for coordinate $i$ has degree $i$ and may see the units of degree $< i$ (strictly).
#
# Along any path from input $j$ to output $i$ the degrees never decrease and increase strictly
# at the last step, so $m(x_j) < i$: output $i$ only depends on earlier inputs. (A hidden unit of
# degree $D$ would be useless: no output may see it. That is why hidden degrees stop at $D-1$.)
# Read `made_degrees` and `MADE.__init__` in `minflow/flows/autoregressive.py`.

# %%
D, hidden = 4, (8, 8)
input_degrees, hidden_degrees = made_degrees(D, hidden)
print("input degrees  :", input_degrees)
for k, degrees in enumerate(hidden_degrees, 1):
    print(f"hidden layer {k} :", degrees)
assert input_degrees == [1, 2, 3, 4]
assert all(set(layer) == {1, 2, 3} for layer in hidden_degrees)  # 1..D-1, every value used

# %% [markdown]
# ### The autoregressive property, by experiment
#
# Build a MADE for $D = 4$ coordinates with one parameter per coordinate, move it away from its
# zero initialisation, and **perturb one input at a time**: which outputs move? If the masks are
# right, perturbing $x_j$ may move $\theta_i$ only for $i > j$ — a strictly lower-triangular pattern.

# %%
made = randomise(MADE(D, params_per_dim=1, hidden=(16, 16), seed=0), seed=1)
x = np.random.default_rng(2).standard_normal((64, D))  # on the host; to_device copies it to the network's backend

with no_grad():
    theta = to_numpy(made(backend.to_device(x)).data)[..., 0]  # (64, D): theta_i for each point
    moved = np.zeros((D, D))  # moved[i, j]: largest change of theta_i when x_j moves by 1
    for j in range(D):
        x_pert = x.copy()
        x_pert[:, j] += 1.0
        moved[:, j] = np.abs(to_numpy(made(backend.to_device(x_pert)).data)[..., 0] - theta).max(axis=0)

print("max |change of theta_i| when x_j is perturbed (rows i, columns j):")
print(np.array2string(moved, precision=3, suppress_small=True))
strictly_lower = np.tril(np.ones((D, D), dtype=bool), k=-1)
assert np.all(moved[~strictly_lower] == 0.0)  # exactly zero: theta_i never sees x_j for j >= i
assert np.all(moved[strictly_lower] > 1e-3)  # and it does see every earlier coordinate

# %% [markdown]
# The zeros above are *exact* zeros, not small numbers: no path exists in the network. In
# particular $\theta_1$ depends on nothing at all (only on biases) — coordinate 1 is transformed
# by a fixed, learned $g$.
#
# ### The masks
#
# Below: each masked layer's mask (rows: units of the layer below, columns: units of the layer
# above; white = connection kept), and, last, the product of the masks — the number of paths
# from each input to each output. Its zero pattern is exactly the strictly lower triangle.

# %%
masks = [to_numpy(layer.mask.data) for layer in made.layers]
paths = masks[0] @ masks[1] @ masks[2]  # (D inputs, D outputs): number of paths j -> i
assert np.array_equal(paths.T > 0, strictly_lower)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [2, 4, 4, 1.3]})
titles = [
    "mask 1: inputs -> hidden 1",
    "mask 2: hidden 1 -> hidden 2",
    "mask 3: hidden 2 -> outputs",
    "paths input j -> output i",
]
hidden_16 = made_degrees(D, (16, 16))[1]
for ax, mask, title in zip(axes, masks + [paths.T], titles):
    ax.imshow(mask, cmap="gray", aspect="auto")
    ax.set_title(title, fontsize=9)
axes[0].set_yticks(range(D), input_degrees)
axes[0].set_ylabel("input degree")
for ax, degrees in [(axes[0], hidden_16[0]), (axes[1], hidden_16[1])]:
    ax.set_xticks(range(16), degrees, fontsize=7)
    ax.set_xlabel("hidden degree")
axes[1].set_yticks(range(16), hidden_16[0], fontsize=7)
axes[2].set_yticks(range(16), hidden_16[1], fontsize=7)
axes[2].set_xticks(range(D), input_degrees)
axes[2].set_xlabel("output degree")
axes[3].set_xlabel("input j")
axes[3].set_ylabel("output i")
axes[3].set_xticks(range(D), range(1, D + 1))
axes[3].set_yticks(range(D), range(1, D + 1))
fig.tight_layout()
show(fig, "04_made_masks.png")

# %% [markdown]
# ## 3. MAF and IAF
#
# **MAF** (Papamakarios et al. 2017) is $z_i = g(x_i; \theta_i(x_{<i}))$ with $\theta = \text{MADE}(x)$
# and an affine transformer $g(x_i) = x_i e^{s_i} + t_i$ by default:
#
# * **density** (`forward`, $x \to z$): all of $x$ is known, so one MADE pass gives every
#   $\theta_i$, then $g$ is applied elementwise. One pass.
# * **sampling** (`inverse`, $z \to x$): to undo coordinate $i$ we need $\theta_i(x_{<i})$, i.e.
#   $x_1, \dots, x_{i-1}$ must be recovered first. minflow runs MADE $D$ times: pass $k$
#   computes $\theta$ from the current guess of $x$ and inverts $g$; after pass $k$ the coordinates
#   of degree $\leq k$ are exact (read `MaskedAutoregressive.inverse`). $D$ passes.
#
# **IAF** (Kingma et al. 2016) is the same layer used the other way round
# (`InverseAutoregressive` is literally `Inverse(MaskedAutoregressive(...))`): its parameters are
# computed from the *latent* coordinates, $x_i = g^{-1}(z_i; \theta_i(z_{<i}))$, so sampling takes one
# pass and evaluating a density of a given $x$ takes $D$. IAF suits variational inference and
# reverse-KL training, which only ever evaluate the density of their own samples.
#
# **The key / encrypt view.** In a coupling layer the kept half $x_1$ is the key that encrypts $x_2$;
# whoever holds the output holds the key, so decryption is one step. In MAF, coordinate $i$ is
# encrypted with a key made of all the *plaintext* before it, $x_{<i}$. Holding $z$ you hold only
# ciphertext: decrypt $x_1$ (its key is empty), which gives the key for $x_2$, and so on — $D$ steps.
#
# Both pass minflow's full battery of checks (round trips, log-det against finite differences,
# inverse log-det, batch independence, gradients):

# %%
maf = randomise(MaskedAutoregressive(3, hidden=(8, 8), activation="tanh", seed=0), seed=3)
iaf = randomise(InverseAutoregressive(3, hidden=(8, 8), activation="tanh", seed=0), seed=4)
check_flow(maf)
check_flow(iaf)
print("check_flow passed for MaskedAutoregressive and InverseAutoregressive")

# %% [markdown]
# ## 4. UDL notebook 16.2: forward and backward mapping of an autoregressive flow
#
# Notebook 16.2 builds a 4-D autoregressive flow out of UDL's piecewise-linear map of $[0, 1]$
# (eq. 16.12) with five bins, whose bin masses $\phi$ are the softmax of a shallow network's
# outputs: $\phi$ is constant for $h_1$, a function of $h_1$ for $h_2$, of $h_1, h_2$ for $h_3$, and so
# on. The **forward mapping** computes all four $h'_d = g[h_d, \phi(h_{<d})]$ at once; the
# **backward mapping** must recover $h_1$, then $h_2$ from $h_1$, etc. It then checks on
# $h = (0.22, 0.41, 0.83, 0.53)$ that backward undoes forward.
#
# minflow has exactly these pieces: `PiecewiseLinearTransformer(bins=5)` is eq. 16.12 with the
# softmax inside, and `MaskedAutoregressive` supplies the conditioner (minflow names the pair
# `PiecewiseLinearAutoregressive`; one MADE instead of UDL's
# three separate shallow networks; UDL's networks are random, so ours are too, with a fixed
# seed, and with 10 hidden units like UDL's). We use tanh rather than UDL's ReLU: a ReLU unit that
# is switched off at this particular $h$ cuts its paths, and a dependence we want to watch could
# vanish by accident. The all-at-once direction is minflow's `forward`; the one-at-a-time direction is
# `inverse(z, passes=k)`, and we stop it after each pass to watch the coordinates settle.

# %%
h = np.array([[0.22, 0.41, 0.83, 0.53]])
udl_flow = randomise(
    MaskedAutoregressive(4, PiecewiseLinearTransformer(bins=5), hidden=(10,), activation="tanh", seed=16),
    seed=1,
    scale=1.0,
)
with no_grad():
    h_prime_device, _ = udl_flow.forward(backend.to_device(h))  # forward mapping: one MADE pass
    h_prime = to_numpy(h_prime_device.data)
    print("Original h values      " + ",".join(f"{v:3.3f}" for v in h[0]))
    print("h_prime values         " + ",".join(f"{v:3.3f}" for v in h_prime[0]))
    recovered = {}
    for passes in range(1, 5):  # backward mapping: stop after 1, 2, 3, 4 passes
        h_back, _ = udl_flow.inverse(h_prime_device, passes=passes)
        recovered[passes] = to_numpy(h_back.data)[0]
        error = np.abs(recovered[passes] - h[0])
        print(
            f"after {passes} pass(es):       "
            + ",".join(f"{v:.3f}" for v in recovered[passes])
            + "   |error| per coordinate: "
            + " ".join(f"{e:.1e}" for e in error)
        )
print("Reconstructed h values " + ",".join(f"{v:3.3f}" for v in recovered[4]))

assert np.abs(h_prime - h).max() > 0.05  # the flow really moves h (non-identity parameters)
assert np.allclose(recovered[4], h[0], rtol=0, atol=1e-12)  # exact after D = 4 passes
assert np.abs(recovered[3] - h[0]).max() > 1e-2  # ... and not after 3 (visibly, at 3 decimals)
for passes in range(1, 5):  # pass k makes coordinate k exact (and keeps the ones before)
    assert np.allclose(recovered[passes][:passes], h[0, :passes], rtol=0, atol=1e-12)

# %% [markdown]
# The printout is the notebook's: forward, then reconstructed values equal to the originals. The
# extra rows show *why* the backward mapping is sequential: after pass $k$, coordinates
# $1, \dots, k$ are exact — to rounding, not approximately — and the later ones are still wrong,
# because their parameters were computed from wrong predecessors. Three passes are not enough;
# four are.
#
# ## 5. The cost asymmetry, measured
#
# Time one layer in each direction, for MAF, IAF and an affine coupling layer (conditioners with
# two hidden layers of 64 units), on a batch of 1,024, for growing $D$. We take the minimum over
# repeats (the least disturbed run), and each repeat times every $D$ and every column in turn,
# so that a busy moment of the machine cannot favour one of them. `benchmarks/autoregressive_cost.py` times the same six
# columns (as medians, one column at a time).

# %%
dims = budget([2, 8, 32], [2, 8, 16])
batch, repeats = 1024, budget(10, 5)


columns = ["MAF density", "MAF sampling", "IAF density", "IAF sampling", "coupling fwd", "coupling inv"]
inputs, functions = {}, {}  # per D: a batch, and the six functions in the order of the columns
for dim in dims:
    inputs[dim] = backend.to_device(np.random.default_rng(0).standard_normal((batch, dim)))
    maf_b = randomise(MaskedAutoregressive(dim, hidden=(64, 64), seed=0), 1, scale=0.1)
    iaf_b = randomise(InverseAutoregressive(dim, hidden=(64, 64), seed=0), 1, scale=0.1)
    coupling_b = randomise(AffineCoupling(half_mask(dim), hidden=(64, 64), seed=0), 1, scale=0.1)
    functions[dim] = [maf_b.forward, maf_b.inverse, iaf_b.forward, iaf_b.inverse]
    functions[dim] += [coupling_b.forward, coupling_b.inverse]
best = {(dim, name): float("inf") for dim in dims for name in columns}
with no_grad():
    for dim in dims:
        for function in functions[dim]:
            function(inputs[dim])  # warm-up
    # Each repeat times every configuration (every D, every column) once, in turn, so a busy
    # stretch of the machine, however long, is shared by all of them instead of slowing one row
    # or one column of the table. Each keeps its minimum, not its mean: whatever else the machine
    # does (other programs, the garbage collector, a cold cache) only ever adds time to a run, so
    # the fastest of several repeats is the closest to the cost of the computation itself.
    for _ in range(repeats):
        for dim in dims:
            for name, function in zip(columns, functions[dim]):
                start = time.perf_counter()
                function(inputs[dim])
                best[dim, name] = min(best[dim, name], 1000 * (time.perf_counter() - start))
timings = {name: [best[dim, name] for dim in dims] for name in columns}  # ms, one entry per D

print(f"one layer, batch {batch}, best of {repeats} (ms)")
print("| D | " + " | ".join(columns) + " |")
print("|---" * (len(columns) + 1) + "|")
for k, dim in enumerate(dims):
    print(f"| {dim} | " + " | ".join(f"{timings[name][k]:.2f}" for name in columns) + " |")

ratio_maf = timings["MAF sampling"][-1] / timings["MAF density"][-1]
ratio_iaf = timings["IAF density"][-1] / timings["IAF sampling"][-1]
print(f"D = {dims[-1]}: MAF sampling / MAF density = {ratio_maf:.1f}, IAF density / IAF sampling = {ratio_iaf:.1f}")
assert ratio_maf > dims[-1] / 4, ratio_maf  # D passes against one: "much slower" (ideal ratio: about D)
assert ratio_iaf > dims[-1] / 4, ratio_iaf  # the mirror image

# %%
fig, ax = plt.subplots(figsize=(6, 4))
styles = {
    "MAF density": "C0-o",
    "MAF sampling": "C0--o",
    "IAF density": "C1--s",
    "IAF sampling": "C1-s",
    "coupling fwd": "C2-^",
    "coupling inv": "C2:^",
}
for name in columns:
    ax.plot(dims, timings[name], styles[name], label=name)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("dimension D")
ax.set_ylabel(f"ms per layer (batch {batch})")
ax.set_title("one pass vs D passes")
ax.legend(fontsize=8)
show(fig, "04_cost_asymmetry.png")
one_pass = max(timings[name][-1] for name in ["MAF density", "IAF sampling", "coupling fwd", "coupling inv"])
d_passes = min(timings[name][-1] for name in ["MAF sampling", "IAF density"])
print(f"D = {dims[-1]}: slowest one-pass column {one_pass:.2f} ms, fastest D-pass column {d_passes:.2f} ms")
assert d_passes > 3 * one_pass

# %% [markdown]
# MAF's density, IAF's sampling and both directions of the coupling layer are one network pass,
# whose cost changes little with $D$ (the hidden layers dominate). MAF's sampling and IAF's
# density are $D$ passes and grow linearly with $D$ — at the largest $D$ the ratios are asserted
# above, and below: every one-pass column is several times faster than either $D$-pass column.
# (Timings on a shared machine are noisy, which is why only such wide margins are asserted.) This
# is the price of the extra expressiveness, and why Glow-style image models use couplings.
#
# ### Two of the course's founding documents state this wrongly
#
# * **The blog `003_…`** runs its autoregressive flow from the normalized sample (its "input")
#   to the data sample (its "output"). It says that when the key is the previous *inputs* the
#   flow is MAF, generates in parallel and maps data back sequentially, and that IAF, whose key
#   is the previous *outputs*, is the reverse. The two behaviours are right; the names are
#   swapped. MAF's key is the previous *data* coordinates, $z_i = g(x_i; \theta_i(x_{<i}))$
#   (Papamakarios et al. 2017): density in one pass, sampling in $D$. IAF's key is the previous
#   *noise* coordinates, $x_i = g^{-1}(z_i; \theta_i(z_{<i}))$ (Kingma et al. 2016): sampling in
#   one pass, density in $D$. The table above measures exactly this; with the blog's labels, MAF
#   sampling would be the fast column (checked below).
# * **The course lecture `004_…`** writes $h'_d = g[h_d, \phi[h_{1:d-1}]]$ and says that since it
#   depends on $h_{1:d-1}$, "it cannot proceed in parallel", and that "for similar reasons, the
#   inversion has to be done sequentially". Only the second half is right. In the map as written
#   every $h_{1:d-1}$ is an *input*, known before the layer runs, so all $D$ outputs come from one
#   masked pass (UDL's figure 16.7: "None of the outputs depend on one another, so they can be
#   computed in parallel"). The inversion is sequential because there the conditioner needs the
#   very coordinates being recovered. In minflow's terms: MAF density is the one-pass column,
#   MAF sampling the $D$-pass one, and section 4 showed it pass by pass (one pass forward, exact
#   only after $D = 4$ passes back).

# %%
one_pass_direction = {
    flow: min(("density", "sampling"), key=lambda direction: timings[f"{flow} {direction}"][-1])
    for flow in ("MAF", "IAF")
}
print(f"D = {dims[-1]}: the one-pass direction, measured: {one_pass_direction}")
assert one_pass_direction == {"MAF": "density", "IAF": "sampling"}  # the blog's labels would give the reverse

# %% [markdown]
# ## 6. A coupling layer is an autoregressive flow with two blocks
#
# Give the first half of the coordinates degree 1 and the second half degree 2. The
# autoregressive rule "coordinate $i$ may depend on coordinates of smaller degree" then says: the
# first half depends on nothing (keep it, or transform it with fixed parameters) and the second
# half depends on the whole first half — a coupling layer. Its Jacobian is the MAF Jacobian
# with more zeros: block lower triangular, with diagonal blocks that are themselves diagonal.

# %%
dim = 6
maf6 = randomise(MaskedAutoregressive(dim, hidden=(32, 32), activation="tanh", seed=0), seed=5)
coupling6 = randomise(AffineCoupling(half_mask(dim), hidden=(32, 32), activation="tanh", seed=0), seed=6)
x6 = backend.to_device(np.random.default_rng(7).standard_normal((1, dim)))
with no_grad():
    jac_maf = to_numpy(numerical_jacobian(lambda a: maf6.forward(a)[0].data, x6))[0]
    jac_coupling = to_numpy(numerical_jacobian(lambda a: coupling6.forward(a)[0].data, x6))[0]
nonzero_maf, nonzero_coupling = np.abs(jac_maf) > 1e-8, np.abs(jac_coupling) > 1e-8
print("MAF nonzeros:\n", nonzero_maf.astype(int))
print("coupling nonzeros:\n", nonzero_coupling.astype(int))

lower = np.tril(np.ones((dim, dim), dtype=bool))
two_block = np.eye(dim, dtype=bool)
two_block[dim // 2 :, : dim // 2] = True  # second half sees the whole first half
assert np.array_equal(nonzero_maf, lower)  # MAF: the full lower triangle
assert np.array_equal(nonzero_coupling, two_block)  # coupling: block triangular, diagonal blocks
assert np.all(nonzero_coupling <= nonzero_maf)  # every coupling nonzero is allowed in MAF

fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for ax, jac, title in zip(axes, [jac_maf, jac_coupling], ["MAF: lower triangular", "affine coupling: two blocks"]):
    ax.imshow(np.abs(jac) > 1e-8, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(dim), range(1, dim + 1))
    ax.set_yticks(range(dim), range(1, dim + 1))
    ax.set_xlabel("input $x_j$")
    ax.set_ylabel("output $z_i$")
fig.suptitle("nonzero entries of the Jacobian $\\partial z_i / \\partial x_j$ (black)", fontsize=10)
fig.tight_layout()
show(fig, "04_jacobian_patterns.png")

# %% [markdown]
# The coupling pays for its two-way speed with zeros: within each half the coordinates do not
# talk to each other in one layer, which is why couplings are stacked with permutations. MAF's
# every coordinate sees every earlier one, and it pays with $D$ sequential passes one way.
#
# ## Exercises
#
# ### Exercise 4.1 — MADE degrees by hand
#
# For $D = 3$ inputs in the natural order and **one** hidden layer of **4** units, write down
# (a) the input degrees, (b) the hidden degrees (minflow cycles through $1, \dots, D-1$), and
# (c) the first mask as a $3 \times 4$ 0/1 matrix (row = input, column = hidden unit; 1 where the
# hidden degree $\geq$ the input degree) and the output mask as a $4 \times 3$ matrix for one
# parameter per coordinate (row = hidden unit, column = output; 1 where output degree $>$ hidden
# degree). Do it on paper first, then return the four from `made_by_hand()`: two lists of ints
# and two 0/1 arrays.


# %% nbgrader={"grade": false, "grade_id": "ex4_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def made_by_hand():
    ### BEGIN SOLUTION
    input_degrees = [1, 2, 3]
    hidden_degrees = [1, 2, 1, 2]  # cycle 1..D-1 = 1, 2
    first_mask = np.array([[b >= a for b in hidden_degrees] for a in input_degrees], dtype=float)
    output_mask = np.array([[i > a for i in input_degrees] for a in hidden_degrees], dtype=float)
    # Output 1 sees no hidden unit (its column is all zero), output 3 sees all of them.
    return input_degrees, hidden_degrees, first_mask, output_mask
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex4_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
made3 = MADE(3, params_per_dim=1, hidden=(4,), seed=0)


def made_by_hand_is_right():
    input_degrees_3, hidden_degrees_3, first_mask_3, output_mask_3 = made_by_hand()
    print(first_mask_3)
    print(output_mask_3)
    return (
        (list(input_degrees_3), [list(hidden_degrees_3)]) == tuple(made_degrees(3, (4,)))
        and np.array_equal(first_mask_3, to_numpy(made3.layers[0].mask.data))
        and np.array_equal(output_mask_3, to_numpy(made3.layers[1].mask.data))
    )


check(
    "Exercise 4.1",
    made_by_hand_is_right,
    "inputs have degrees 1..D; hidden degrees cycle 1..D-1; hidden may see degree <= its own, "
    "outputs only strictly smaller degrees",
)

# %% [markdown]
# ### Exercise 4.2 — the triangular Jacobian, numerically, in any order
#
# A MAF with `order=[2, 0, 1]` transforms coordinate 2 first, then 0, then 1. Its Jacobian is
# *not* lower triangular in the usual coordinate order, but it is once rows and columns are
# permuted into the autoregressive order. Write `triangular_log_det(jac, order)` that (a) checks
# that `jac[order][:, order]` is lower triangular (entries above the diagonal below `1e-8`) and
# raises `AssertionError` otherwise, and (b) returns the sum of the log of the absolute diagonal.
# It must equal the flow's own log-det.


# %% nbgrader={"grade": false, "grade_id": "ex4_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def triangular_log_det(jac, order):
    ### BEGIN SOLUTION
    permuted = jac[np.ix_(order, order)]  # rows and columns in the autoregressive order
    assert np.abs(np.triu(permuted, k=1)).max() < 1e-8, "not triangular in this order"
    return float(np.log(np.abs(np.diag(permuted))).sum())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex4_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
order = [2, 0, 1]
maf_ordered = randomise(MaskedAutoregressive(3, hidden=(16, 16), order=order, activation="tanh", seed=0), seed=8)
x3 = backend.to_device(np.random.default_rng(9).standard_normal((1, 3)))
with no_grad():
    jac3 = to_numpy(numerical_jacobian(lambda a: maf_ordered.forward(a)[0].data, x3))[0]
    flow_log_det = float(to_numpy(maf_ordered.forward(x3)[1].data)[0])
print("Jacobian in coordinate order:\n", np.round(jac3, 3))
print("the same, rows and columns in the order", order, ":\n", np.round(jac3[np.ix_(order, order)], 3))


def triangular_log_det_is_right():
    try:
        triangular_log_det(jac3, [0, 1, 2])  # in the wrong order it is not triangular: must raise
        wrong_order_raises = False
    except AssertionError:
        wrong_order_raises = True
    answer = triangular_log_det(jac3, order)
    return answer is not None and abs(answer - flow_log_det) < 1e-7 and wrong_order_raises


check(
    "Exercise 4.2",
    triangular_log_det_is_right,
    "permute rows AND columns with np.ix_(order, order); the log-det is sum(log|diag|)",
)

# %% [markdown]
# ### Exercise 4.3 — IAF density needs D passes
#
# Count how many times an IAF's MADE is called when it evaluates a density (`iaf.forward`) and
# when it samples (`iaf.inverse`), for $D = 5$. Write `count_made_calls(flow, direction, batch)`
# returning that count. (Hint: `Module.__call__` calls `self.forward`, so assigning a counting
# wrapper to the instance attribute `made.forward` intercepts every call; IAF's MADE is
# `iaf.flow.made`.) Then explain with the key/encrypt picture why the density cannot be done in
# fewer passes — and verify it: with `passes=D-1` the MAF inside gives a wrong answer.


# %% nbgrader={"grade": false, "grade_id": "ex4_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def count_made_calls(flow, direction, batch):
    ### BEGIN SOLUTION
    # IAF's density of x: x_i = g^{-1}(z_i; theta_i(z_{<i})) must be solved for z, and theta_i
    # needs z_{<i}, which is only known once z_1, ..., z_{i-1} have been decrypted: D passes.
    made = flow.flow.made
    calls = [0]
    original = made.forward

    def counting(x):
        calls[0] += 1
        return original(x)

    made.forward = counting
    try:
        with no_grad():
            getattr(flow, direction)(batch)
    finally:
        del made.forward  # back to the class's method
    return calls[0]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex4_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
iaf5 = randomise(InverseAutoregressive(5, hidden=(16,), activation="tanh", seed=0), seed=10)
x5 = backend.to_device(np.random.default_rng(11).standard_normal((4, 5)))
with no_grad():
    z_full = iaf5.forward(x5)[0].data
    z_short = iaf5.flow.inverse(x5, passes=4)[0].data  # IAF density with D-1 passes
    x_again = iaf5.inverse(z_full)[0].data
z_full, z_short, x_again = to_numpy(z_full), to_numpy(z_short), to_numpy(x_again)
print("max error with D-1 passes:", np.abs(z_short - z_full).max())


def count_made_calls_is_right():
    density_calls = count_made_calls(iaf5, "forward", x5)
    sampling_calls = count_made_calls(iaf5, "inverse", x5)
    print("MADE calls: density", density_calls, "| sampling", sampling_calls)
    return (
        density_calls == 5
        and sampling_calls == 1
        and np.abs(z_short - z_full).max() > 1e-6
        and np.allclose(x_again, to_numpy(x5), atol=1e-10)
    )


check(
    "Exercise 4.3",
    count_made_calls_is_right,
    "wrap made.forward on the instance, run the direction under no_grad, count; IAF density is the MAF's inverse",
)

# %% [markdown]
# ### Exercise 4.4 — MAF's sampling loop
#
# Sample from a MAF by hand. Given the MADE (`maf.made(x)` returns $\theta$ for every coordinate at
# once, shape $(B, D, 2)$, where $\theta_i$ depends on $x_{<i}$ only) and the elementwise transformer
# (`maf.transformer.inverse(z, theta)` solves $z_i = g(x_i; \theta_i)$ for every $i$ and returns
# `(x, log_derivative)`, Tensors, the latter of shape $(B, D)$), write `maf_sample(maf, z)` returning
# `(x, log_det)`: the arrays (`.data`) of $x = f^{-1}(z)$ and of $\log\lvert\det \partial x / \partial z\rvert$,
# shape $(B,)$.
# How many passes of the MADE does it take, and why is the answer after the last pass exact? (Do
# not call `maf.inverse`: the check compares with it.)


# %% nbgrader={"grade": false, "grade_id": "ex4_4_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def maf_sample(maf, z):
    ### BEGIN SOLUTION
    # theta_1 depends on nothing, so one pass gets x_1 right; pass k gets x_k right, because theta_k
    # then reads x_1..x_(k-1), which the earlier passes fixed. D passes in all; after the last one
    # every theta was computed from the final x, so x and the log-derivatives are exact.
    x = z * 0.0  # any start will do
    for _ in range(maf.event_shape[0]):
        x, log_derivative = maf.transformer.inverse(z, maf.made(x))
    return x.data, log_derivative.data.sum(axis=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex4_4", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
maf4 = randomise(MaskedAutoregressive(4, hidden=(16,), activation="tanh", seed=0), seed=12)
z4 = backend.to_device(np.random.default_rng(13).standard_normal((6, 4)))


def maf_sample_is_right():
    with no_grad():
        x_mine, log_det_mine = maf_sample(maf4, z4)
        x_reference, log_det_reference = maf4.inverse(z4)
        z_again = maf4.forward(x_mine)[0]
    return (
        np.allclose(to_numpy(x_mine), to_numpy(x_reference.data), atol=1e-12)
        and np.allclose(to_numpy(log_det_mine), to_numpy(log_det_reference.data), atol=1e-12)
        and np.allclose(to_numpy(z_again.data), to_numpy(z4), atol=1e-10)
    )


check(
    "Exercise 4.4",
    maf_sample_is_right,
    "start from any x (zeros), then D times: x, log_derivative = transformer.inverse(z, made(x)); "
    "the log-det is the last pass's log_derivative summed over the coordinates",
)

# %% [markdown]
# ## Summary
#
# * An autoregressive flow transforms coordinate $i$ with parameters from $x_{<i}$; its Jacobian is
#   triangular and its log-det is the sum of $D$ log-derivatives.
# * MADE computes every $\theta_i$ in one pass by masking an MLP according to unit degrees; the
#   perturbation experiment and the mask product both show the strict lower triangle.
# * MAF: density in one pass, sampling in $D$; IAF is its inverse (`Inverse(MAF)`), the other way
#   round. Measured above: the slow direction grows linearly in $D$.
# * UDL's notebook 16.2 mapping on $h = (0.22, 0.41, 0.83, 0.53)$: recovered exactly after 4 passes,
#   not after 3.
# * A coupling layer is the two-block special case: fast both ways, fewer dependencies per layer.
#
# Next: residual flows (lecture 5), which give up triangular structure altogether.
