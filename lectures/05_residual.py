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
# # Lecture 5 — Residual flows
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 7 s; full about 7 s.*
#
# The residual block $z = x + g(x)$ is the workhorse of deep networks. Can it be a flow? Not in
# general: with $g(x) = -x$ every $x$ goes to $0$. This lecture studies the two kinds of structure
# that make a residual block invertible, both in `minflow/flows/residual.py` (read its module
# docstring first):
#
# 1. **partition the coordinates** — the RevNet-style additive residual coupling: invertible
#    for *any* networks, log-determinant exactly 0;
# 2. **make $g$ a contraction** — the invertible ResNet (i-ResNet): $\mathrm{Lip}(g) < 1$ by spectral
#    normalisation, the inverse by a fixed-point iteration, the log-determinant of a dense
#    Jacobian $I + J_g$ exactly, by a power series, or by Hutchinson's trace estimator.
#
# On the way we do notebook 16.3 of *Understanding Deep Learning* (UDL, Prince 2023): the
# fixed-point iteration on UDL's own scalar maps, including one that converges although it is
# not a contraction everywhere.
#
# **Direction.** minflow's `forward` is the normalizing direction $f: x \mapsto z$ and
# $p_X(x) = p_Z(f(x))\,|\det J_f(x)|$. UDL (sections 16.3.6, the partition, and 16.3.7, the
# contraction) writes residual flows in the generative direction, $h' = h + f[h]$, and notebook
# 16.3 names its variable $z$ and its maps `f`, `f2`, `f3`, `f4`; below they are renamed
# $F_a, F_b, F_c$ and $g$, in that order, so that the letters $f$ and $z$ keep their meaning here.
# Being a residual block, $z = x + g(x)$ is the same kind of map in either direction.

# %%
import itertools

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, arrow, box, budget, check, show

from minflow import backend, no_grad, to_numpy
from minflow.flows import AdditiveResidualCoupling, ContractiveResidual
from minflow.testing import check_flow, numerical_jacobian

print("quick mode" if QUICK else "full mode", "| backend:", backend.backend_name())


def randomise(module, seed, scale=0.5):
    """Add N(0, scale^2) noise to every parameter: minflow's blocks start as the identity map."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = p.data + backend.to_device(scale * rng.standard_normal(p.shape), dtype=p.dtype)
    return module


# %% [markdown]
# ## 1. Partition the coordinates: the reversible residual block (RevNet)
#
# Split $x = (h_1, h_2)$ and let each half's residual depend on the *other* half only:
#
# $$z_1 = h_1 + f_1(h_2), \qquad z_2 = h_2 + f_2(z_1).$$
#
# Undo the steps in reverse order: $h_2 = z_2 - f_2(z_1)$, then $h_1 = z_1 - f_1(h_2)$. The networks
# $f_1, f_2$ are evaluated, never inverted, so they can be anything. Each step is an additive
# coupling (NICE) with a unit-triangular Jacobian, so
#
# $$J_f = \begin{pmatrix} I & 0 \\ J_{f_2} & I \end{pmatrix}\begin{pmatrix} I & J_{f_1} \\ 0 & I \end{pmatrix},
# \qquad \log|\det J_f| = 0 .$$
#
# The block preserves volume however complicated $f_1, f_2$ are. Read
# `AdditiveResidualCoupling.forward` and `.inverse`: four lines each.

# %%
revnet = randomise(AdditiveResidualCoupling(4, hidden=(16,), seed=0), seed=1)
x4 = np.random.default_rng(2).standard_normal((8, 4))
x4_device = backend.to_device(x4)  # the same points, where the block lives (a GPU under MINFLOW_BACKEND=cupy)
with no_grad():
    z4, log_det4 = revnet.forward(x4_device)
    jacobian4 = to_numpy(numerical_jacobian(lambda a: revnet.forward(a)[0].data, x4_device))
moved = np.abs(to_numpy(z4.data) - x4).max()
det4 = np.linalg.det(jacobian4)
print(
    f"largest move |z - x|: {moved:.3f}; log-det returned: {np.abs(to_numpy(log_det4.data)).max()}; "
    f"det of the finite-difference Jacobian: {det4.min():.8f} .. {det4.max():.8f}"
)
assert moved > 0.1  # a real, non-identity map
assert np.all(to_numpy(log_det4.data) == 0.0)  # exactly 0, by construction
assert np.allclose(det4, 1.0, atol=1e-7)  # and it is right: volume is preserved
check_flow(revnet)  # round trips, log-det vs finite differences, batch independence, gradients
print("check_flow passed for AdditiveResidualCoupling")

# %% [markdown]
# **The data flow, drawn.** Two lanes, $h_1$ on top and $h_2$ below (the block splits after the
# first $\lfloor D/2 \rfloor$ coordinates). Forward, step 1 adds $f_1(h_2)$ to the top lane, and
# step 2 adds $f_2(z_1)$, computed from the *new* top lane, to the bottom one. The inverse runs
# the same networks forward and subtracts in the reverse order: first $f_2(z_1)$, which needs
# only $z_1$, from the bottom lane, then $f_1(h_2)$, which needs the $h_2$ just recovered, from
# the top.


# %%
TOP, BOTTOM, NETWORK, WHOLE = "#d6e6f7", "#fde2c4", "#dcefd0", "#eeeeee"
fig, (ax_forward, ax_inverse) = plt.subplots(2, 1, figsize=(11, 7))
for ax, title in (
    (ax_forward, "forward (normalizing): $x \\to z$, log-det = 0"),
    (ax_inverse, "inverse (sampling): $z \\to x$, the same networks, steps in reverse order"),
):
    ax.set(xlim=(0, 10), ylim=(0, 4))
    ax.set_title(title, fontsize=11)
    ax.axis("off")

ax = ax_forward
x_in, h1, h2 = box(ax, 0.4, 2.0, "$x$", WHOLE), box(ax, 1.8, 3.4, "$h_1$", TOP), box(ax, 1.8, 0.6, "$h_2$", BOTTOM)
f1, z1 = box(ax, 3.7, 2.0, "$f_1$", NETWORK), box(ax, 5.3, 3.4, "step 1: $z_1 = h_1 + f_1(h_2)$", TOP)
f2, z2 = box(ax, 6.6, 2.0, "$f_2$", NETWORK), box(ax, 8.0, 0.6, "step 2: $z_2 = h_2 + f_2(z_1)$", BOTTOM)
z_out = box(ax, 9.6, 2.0, "$z$", WHOLE)
for start, end, label in (
    (x_in, h1, "split"),
    (x_in, h2, ""),
    (h2, f1, ""),
    (f1, z1, "$+$"),
    (h1, z1, ""),
    (z1, f2, ""),
    (f2, z2, "$+$"),
    (h2, z2, ""),
    (z1, z_out, ""),
    (z2, z_out, ""),
):
    arrow(ax, start, end, label)

ax = ax_inverse
z_in, z1, z2 = box(ax, 0.4, 2.0, "$z$", WHOLE), box(ax, 1.8, 3.4, "$z_1$", TOP), box(ax, 1.8, 0.6, "$z_2$", BOTTOM)
f2, h2 = box(ax, 3.7, 2.0, "$f_2$", NETWORK), box(ax, 5.3, 0.6, "step 1: $h_2 = z_2 - f_2(z_1)$", BOTTOM)
f1, h1 = box(ax, 6.6, 2.0, "$f_1$", NETWORK), box(ax, 8.0, 3.4, "step 2: $h_1 = z_1 - f_1(h_2)$", TOP)
x_out = box(ax, 9.6, 2.0, "$x$", WHOLE)
for start, end, label in (
    (z_in, z1, "split"),
    (z_in, z2, ""),
    (z1, f2, ""),
    (f2, h2, "$-$"),
    (z2, h2, ""),
    (h2, f1, ""),
    (f1, h1, "$-$"),
    (z1, h1, ""),
    (h1, x_out, ""),
    (h2, x_out, ""),
):
    arrow(ax, start, end, label)
fig.tight_layout()
show(fig, "05_revnet_dataflow.png")

# %% [markdown]
# The block's two networks are public attributes, `revnet.f1` and `revnet.f2`, and its split
# point is `revnet.split`; so the diagram can be run by hand and compared with the block's own
# `forward` and `inverse`, on the points and random weights above. Running the inverse's two
# steps in the *forward* order (first $h_1 = z_1 - f_1(z_2)$, with $z_2$ standing in for the
# not-yet-known $h_2$) must fail: the order of the diagram is not a detail.

# %%
split = revnet.split
with no_grad():
    h1_in, h2_in = x4_device[:, :split], x4_device[:, split:]
    z1_hand = h1_in + revnet.f1(h2_in)  # step 1
    z2_hand = h2_in + revnet.f2(z1_hand)  # step 2
    z_hand = np.concatenate([to_numpy(z1_hand), to_numpy(z2_hand)], axis=1)
    z1_in, z2_in = z4.data[:, :split], z4.data[:, split:]
    h2_back = z2_in - revnet.f2(z1_in)  # inverse step 1: needs z1 only
    h1_back = z1_in - revnet.f1(h2_back)  # inverse step 2: needs the h2 just recovered
    x_hand = np.concatenate([to_numpy(h1_back), to_numpy(h2_back)], axis=1)
    h1_wrong = z1_in - revnet.f1(z2_in)  # the wrong order: subtract f1 first, fed z2 for h2
    h2_wrong = z2_in - revnet.f2(h1_wrong)
    x_wrong_order = np.concatenate([to_numpy(h1_wrong), to_numpy(h2_wrong)], axis=1)
    x_layer, inverse_log_det4 = revnet.inverse(z4)
print(f"forward by hand vs revnet.forward: {np.abs(z_hand - to_numpy(z4.data)).max():.1e}")
print(
    f"inverse by hand vs x: {np.abs(x_hand - x4).max():.1e}; in the wrong order: {np.abs(x_wrong_order - x4).max():.3f}"
)
assert np.array_equal(z_hand, to_numpy(z4.data))  # the diagram is what forward computes, bit for bit
assert np.allclose(x_hand, x4, atol=1e-12)  # subtracting in reverse order recovers x ...
assert np.allclose(x_hand, to_numpy(x_layer.data), atol=1e-12)  # ... as revnet.inverse does
assert np.all(to_numpy(inverse_log_det4.data) == 0.0)  # and the inverse log-det is 0 too
assert np.abs(x_wrong_order - x4).max() > 0.1  # the forward order does not undo the block

# %% [markdown]
# **A note on UDL.** Section 16.3.6 says of this block that "for general functions
# $f_1[\bullet, \phi_1]$ and $f_2[\bullet, \phi_2]$, there is no efficient way to compute the
# Jacobian". Of the Jacobian *matrix* that is true: outside the identity block
# $\partial z_1/\partial h_1 = I$ every entry involves the networks' derivatives and none is zero
# (checked below), and a finite-difference Jacobian costs $D$ extra passes. But a flow never
# needs the matrix, only its log-determinant, and the factorisation above gives that for free:
# $\log|\det J_f| = 0$, with no computation at all. Read "no efficient Jacobian" as "no cheap
# matrix", not as "no usable density": the additive block's log-det costs nothing. What it
# gives up is the ability to change volume, which is why NICE ends its stack with a diagonal
# scaling layer.

# %%
outside = np.ones((4, 4), dtype=bool)
outside[:2, :2] = False  # the top-left block dz1/dh1 is the identity; every other entry involves f1 or f2
nonzero = np.abs(jacobian4[:, outside]) > 1e-8  # (8 points, 12 entries) of the finite-difference Jacobians
print(f"nonzero Jacobian entries outside the identity block: {nonzero.sum(axis=1).min()} of {outside.sum()}")
assert nonzero.all()  # a full matrix there, at every point; yet its determinant is 1 (asserted above)

# %% [markdown]
# ## 2. Make $g$ a contraction: the fixed-point view
#
# Now keep all coordinates together and ask $g$ to be a **contraction**: $|g(a) - g(b)| \leq L|a - b|$
# with Lipschitz constant $L = \mathrm{Lip}(g) < 1$.
#
# * **Injective:** if $a + g(a) = b + g(b)$ then $|a - b| = |g(b) - g(a)| \leq L|a - b|$, so $a = b$.
# * **Inverse:** given $z$, the $x$ with $x + g(x) = z$ is a fixed point of $F(x) = z - g(x)$, and
#   $F$ is a contraction with the same $L$. Banach's fixed-point theorem: the iteration
#   $x_{k+1} = F(x_k)$ converges to the unique fixed point from **any** start, and the error shrinks
#   at least by the factor $L$ per step: $|x_k - x^*| \leq L^k |x_0 - x^*|$.
#
# This is notebook 16.3's fixed-point iteration. Solving $y = x + g(x)$ for $x$ is iterating
# $F(x) = y - g(x)$. UDL's notebook first iterates three maps $F$ directly; each is our problem with
# $y = 0$ and $g = -F$ (then $y - g(x) = F(x)$, and $|g'| = |F'|$):
#
# | case | UDL's map (notebook name) | $F'(x)$ on $[0,1]$ | start |
# |---|---|---|---|
# | (a) | $F_a(x) = 0.3 + 0.5x + 0.02\sin 15x$ (`f`) | $0.5 + 0.3\cos 15x \in [0.2, 0.8]$: a contraction | $0.2$ |
# | (b) | $F_b(x) = 0.7 - 0.6x + 0.03\sin 15x$ (`f2`) | $-0.6 + 0.45\cos 15x \in [-1.05, -0.15]$ | $0.9$ |
# | (c) | $F_c(x) = -0.2 + 1.5x + 0.1\sin 15x$ (`f3`) | $1.5 + 1.5\cos 15x \in [0, 3]$: not a contraction | $0.7$ |
#
# Then it solves a genuine residual problem, $y = x + g(x)$ with $g(x) = -0.3 + 0.5x + 0.02\sin 15x$
# and $y = 0.8$, from $x_0 = 0.2$.
#
# **Predict before you run.** Look only at the $F'$ column of the table. For each of (a), (b)
# and (c): will the iteration converge, diverge, or oscillate? If it converges, does it approach
# the fixed point from one side or alternately from both? Banach's theorem decides (a); what, if
# anything, does it say about (b), whose $|F_b'|$ exceeds one in places? Write your three answers
# down, then run the next cell and compare with the printed iterates.


# %%
def solve_residual(g, y, x0, max_iterations=100, tolerance=1e-12, blow_up=1e6):
    """Banach iteration for y = x + g(x): x_{k+1} = y - g(x_k). Returns the iterates x_0, x_1, ...

    Stops when two iterates agree to ``tolerance``, when |x| exceeds ``blow_up`` (diverged), or
    after ``max_iterations``.
    """
    iterates = [x0]
    for _ in range(max_iterations):
        iterates.append(y - g(iterates[-1]))
        if abs(iterates[-1] - iterates[-2]) < tolerance or abs(iterates[-1]) > blow_up:
            break
    return np.array(iterates)


def F_a(x):
    return 0.3 + 0.5 * x + 0.02 * np.sin(15 * x)


def F_b(x):
    return 0.7 - 0.6 * x + 0.03 * np.sin(15 * x)


def F_c(x):
    return -0.2 + 1.5 * x + 0.1 * np.sin(15 * x)


def g_udl(x):  # UDL's f4, the residual of the last part of the notebook
    return -0.3 + 0.5 * x + 0.02 * np.sin(15 * x)


def dF_b(x):
    return -0.6 + 0.45 * np.cos(15 * x)


runs = {
    "(a) contraction": (F_a, solve_residual(lambda x: -F_a(x), 0.0, 0.2)),
    "(b) |F'| > 1 in places": (F_b, solve_residual(lambda x: -F_b(x), 0.0, 0.9)),
    "(c) not a contraction": (F_c, solve_residual(lambda x: -F_c(x), 0.0, 0.7)),
}
residual_run = solve_residual(g_udl, 0.8, 0.2)
for name, (_F, iterates) in runs.items():
    print(f"{name:24s} {len(iterates) - 1:3d} iterations, first: {np.round(iterates[:6], 4)}, last: {iterates[-1]:.6g}")
print(
    f"(d) y = x + g(x), y = 0.8 {len(residual_run) - 1:3d} iterations, x = {residual_run[-1]:.6f}, "
    f"x + g(x) = {residual_run[-1] + g_udl(residual_run[-1]):.12f}"
)

x_a, x_b = runs["(a) contraction"][1][-1], runs["(b) |F'| > 1 in places"][1][-1]
assert abs(F_a(x_a) - x_a) < 1e-11 and abs(x_a - 0.6105) < 1e-4  # (a) converges to 0.6105
assert abs(F_b(x_b) - x_b) < 1e-11 and abs(x_b - 0.4445) < 1e-4  # (b) converges too, to 0.4445
assert abs(runs["(c) not a contraction"][1][-1]) > 1e6  # (c) runs away to infinity
assert abs(residual_run[-1] + g_udl(residual_run[-1]) - 0.8) < 1e-11  # (d) solves y = x + g(x)

# %% [markdown]
# Case (c) is no surprise: where $F_c' > 1$ the iteration pushes away from the fixed points
# (the slope $1.5$ wins in the long run and the iterates grow without bound). Case (b) is the
# interesting one. $|F_b'|$ reaches $1.05$, so $F_b$ is **not** a contraction, and the iterates do not
# even avoid the bad places — check: the first two iterates land where $|F_b'| > 1$. Why does it
# converge anyway? Banach's bound only needs the contraction *towards the fixed point*:
#
# $$|F(x) - x^*| = |F(x) - F(x^*)| \leq q\,|x - x^*| \quad\text{for all } x \text{ in a set that } F \text{ maps into itself.}$$
#
# The best $q$ is the largest **secant** slope $|F(x) - F(x^*)|/|x - x^*|$, not the largest
# derivative: a short stretch with slope $1.05$ is averaged with the gentle slopes around it.
# We compute it on $[0, 1]$, which $F_b$ maps into itself, and find $q \approx 0.75 < 1$: convergence
# from *every* start in $[0, 1]$, at least as fast as $0.75^k$. Near the fixed point it is faster
# still, $|F_b'(x^*)| \approx 0.18$.

# %%
b_iterates = runs["(b) |F'| > 1 in places"][1]
steep_visits = np.abs(dF_b(b_iterates[1:3])) > 1
grid = np.linspace(0, 1, 200001)
grid = grid[np.abs(grid - x_b) > 1e-6]
secant = np.abs(F_b(grid) - x_b) / np.abs(grid - x_b)
print(
    f"|F_b'| at x_1, x_2: {np.abs(dF_b(b_iterates[1:3])).round(3)}; max |F_b'| on [0,1]: {np.abs(dF_b(grid)).max():.3f}"
)
print(
    f"F_b([0,1]) = [{F_b(grid).min():.3f}, {F_b(grid).max():.3f}]; largest secant slope q = {secant.max():.3f}; "
    f"|F_b'(x*)| = {abs(dF_b(x_b)):.3f}"
)
assert steep_visits.all()  # the iterates DO visit the region where |F_b'| > 1
assert np.abs(dF_b(grid)).max() > 1.04  # F_b is not a contraction on [0, 1]
assert 0 < F_b(grid).min() and F_b(grid).max() < 1  # F_b maps [0, 1] into itself
assert 0.7 < secant.max() < 0.76  # ... and contracts towards x* with q ~ 0.75
assert abs(abs(dF_b(x_b)) - 0.18) < 0.01
errors = np.abs(b_iterates[:-1] - x_b)  # |x_k - x*|, step by step: each at most q times the one before
before, after = errors[:-1], errors[1:]
assert np.all(after[before > 1e-12] <= (secant.max() + 1e-9) * before[before > 1e-12])

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 4))
line = np.linspace(0, 1, 500)
for ax, (name, (F, iterates)) in zip(axes, runs.items()):
    ax.plot(line, F(line), "c-", label="$F(x)$")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="$F(x) = x$")
    path = iterates[:12]
    web_x, web_y = [path[0]], [path[0]]
    for a, b in itertools.pairwise(path):  # the cobweb: up to the curve, across to the diagonal
        web_x += [a, b]
        web_y += [b, b]
    ax.plot(web_x, web_y, "r-", lw=0.9, alpha=0.8, label="iterates")
    ax.plot(path[0], path[0], "ko", ms=4)
    if name.startswith("(b)"):
        steep = np.abs(dF_b(line)) > 1
        ax.fill_between(line, 0, 1, where=steep, color="orange", alpha=0.3, label="$|F'| > 1$")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("$x$")
    ax.legend(fontsize=7, loc="upper left")
ax = axes[3]
ax.plot(line, line + g_udl(line), "c-", label="$x + g(x)$")
ax.plot(line, 0.8 - g_udl(line), "r-", label="$F(x) = y - g(x)$")
ax.plot([0, 1], [0, 1], "k--", lw=0.8)
ax.axhline(0.8, color="gray", lw=0.6)
ax.plot(residual_run[-1], 0.8, "ro", label="solution")
ax.set_xlim(0, 1)
ax.set_ylim(0, 1)
ax.set_title("(d) solve $y = x + g(x)$, $y = 0.8$", fontsize=10)
ax.set_xlabel("$x$")
ax.legend(fontsize=7, loc="upper left")
fig.tight_layout()
show(fig, "05_fixed_point_udl.png")

# %% [markdown]
# In panel (c) the cobweb leaves the picture; in (b) it crosses the shaded steep stretches and
# still spirals in. For a flow we cannot rely on luck like (b): we need a contraction everywhere,
# for every $z$. That is what spectral normalisation buys.
#
# ## 3. The i-ResNet block: spectral normalisation
#
# `ContractiveResidual` uses $g(x) = \phi(x W_1 + b_1) W_2 + b_2$ (minflow's row convention) with
# $\phi = \tanh$, $|\phi'| \leq 1$. Lipschitz constants multiply along a chain, so
# $\mathrm{Lip}(g) \leq \|W_1\|_2\,\|W_2\|_2$, the product of the largest singular values. Spectral
# normalisation rescales each weight, $\hat W = W \min(1, c/\|W\|_2)$ with $c = 0.9$, so the bound is
# $c^2 = 0.81 < 1$ (read `SpectralNormLinear.normalized_weight`).
#
# **Before and after.** Training an unconstrained residual block lets its weights grow; to stand in
# for that we multiply the initial weights by 3. We measure two numbers for the raw weights and for
# the normalised ones: the **upper bound** $\prod_l \|W_l\|_2$ and an empirical **lower bound**, the
# largest $\|J_g(x)\|_2$ over a batch of points (the Lipschitz constant is the supremum of the
# Jacobian's norm). For the raw network we write $g$ and its Jacobian
# $J_g = W_2^\top \mathrm{diag}(\phi'(a_1)) W_1^\top$ by hand — the same formula as
# `ContractiveResidual._jacobian`.

# %%
dim = 2
n_points = budget(1000, 300)
iresnet = ContractiveResidual(dim, hidden=(32,), coefficient=0.9, seed=0)
rng = np.random.default_rng(1)
for layer in iresnet.layers:
    layer.weight.data = 3.0 * layer.weight.data  # weights that "training has grown"
    layer.bias.data = backend.to_device(0.5 * rng.standard_normal(layer.bias.shape))
raw_weights = [to_numpy(layer.weight.data) for layer in iresnet.layers]
biases = [to_numpy(layer.bias.data) for layer in iresnet.layers]
x = 1.5 * rng.standard_normal((n_points, dim))
x_device = backend.to_device(x)  # for the block; x stays on the host for the NumPy computations


def raw_g(x):
    return np.tanh(x @ raw_weights[0] + biases[0]) @ raw_weights[1] + biases[1]


def raw_jacobian(x):  # J[b, i, j] = dg_i / dx_j
    slope = 1 - np.tanh(x @ raw_weights[0] + biases[0]) ** 2
    return np.einsum("ih,bh,hj->bji", raw_weights[0], slope, raw_weights[1])


with no_grad():
    normalised_jacobian = to_numpy(iresnet.jacobian(x_device).data)
    assert np.allclose(
        to_numpy(numerical_jacobian(lambda a: iresnet.residual(a).data, x_device[:5])),
        normalised_jacobian[:5],
        atol=1e-8,
    )  # the hand-derived J_g is right
assert np.allclose(numerical_jacobian(raw_g, x[:5]), raw_jacobian(x[:5]), atol=1e-8)
raw_bound = np.prod([np.linalg.norm(w, 2) for w in raw_weights])
raw_empirical = np.linalg.norm(raw_jacobian(x), 2, axis=(1, 2)).max()
bound = iresnet.lipschitz_bound()
empirical = np.linalg.norm(normalised_jacobian, 2, axis=(1, 2)).max()
print("                       upper bound prod||W||   lower bound max||J_g(x)||")
print(f"raw weights            {raw_bound:10.3f}              {raw_empirical:10.3f}")
print(f"spectrally normalised  {bound:10.3f}              {empirical:10.3f}")
assert raw_empirical > 1  # the raw block is certainly not a contraction
assert abs(bound - 0.81) < 1e-12 and empirical <= bound  # the normalised one certainly is

# %% [markdown]
# The raw residual block has $\mathrm{Lip}(g) > 1$ (its Jacobian has norm above 1 somewhere), so it
# need not be invertible and the fixed-point iteration need not converge. After normalisation,
# $\mathrm{Lip}(g) \leq 0.81$, and the measured Jacobian norms are well below that bound (it is only
# attained if the layers' singular vectors line up and $\phi' = 1$).
#
# ## 4. The inverse: fixed-point iteration, measured
#
# `ContractiveResidual.inverse` iterates $x_{k+1} = z - g(x_k)$ from $x_0 = z$ and stops when the
# residual $\max_b |x_{k+1} - x_k|_2$ drops below `inverse_tolerance` (default $10^{-10}$).
# `fixed_point_trace` returns those residuals. Each is at most $L$ times the one before,
# because $|x_{k+2} - x_{k+1}| = |g(x_{k+1}) - g(x_k)| \leq L |x_{k+1} - x_k|$. So reaching the
# tolerance from a first residual $r_0$ takes at most $1 + \log(\mathrm{tol}/r_0)/\log L$ steps.
# The same iteration with the raw weights is run for comparison.

# %%
with no_grad():
    z, forward_log_det = iresnet.forward(x_device)
    trace = np.array(iresnet.fixed_point_trace(z))
    x_back, inverse_log_det = iresnet.inverse(z)
iterations = iresnet.last_inverse_iterations
raw_z = x + raw_g(x)
raw_trace, guess = [], raw_z.copy()
for _ in range(100):
    new = raw_z - raw_g(guess)
    raw_trace.append(np.sqrt(((new - guess) ** 2).sum(axis=1)).max())
    guess = new

worst_case = 1 + np.log(iresnet.inverse_tolerance / trace[0]) / np.log(bound)
ratios = trace[1:] / trace[:-1]
print(f"iterations at the default tolerance 1e-10: {iterations} (Banach worst case {worst_case:.0f})")
print(f"largest ratio of successive residuals: {ratios.max():.3f} (<= Lip bound {bound})")
print(f"round-trip error: {np.abs(to_numpy(x_back.data) - x).max():.2e}")
print(f"raw weights: residual after 100 iterations {raw_trace[-1]:.3f}")
assert iterations == len(trace) and trace[-1] < 1e-10
assert iterations <= worst_case  # Banach's guarantee
assert ratios.max() <= bound + 1e-9  # geometric decay at least as fast as Lip(g)
assert np.abs(to_numpy(x_back.data) - x).max() < 1e-9
assert raw_trace[-1] > 1e-2  # without the constraint, the iteration does not settle

fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogy(range(len(trace)), trace, "C0o-", ms=3, label="spectrally normalised, $L \\leq 0.81$")
ax.semilogy(range(len(trace)), trace[0] * bound ** np.arange(len(trace)), "C0:", label="Banach bound $r_0 L^k$")
ax.semilogy(range(len(raw_trace)), raw_trace, "C3-", lw=0.8, label="raw weights (Lip > 1)")
ax.axhline(iresnet.inverse_tolerance, color="gray", ls="--", lw=0.8, label="tolerance $10^{-10}$")
ax.set_xlabel("iteration $k$")
ax.set_ylabel("residual $\\max_b |x_{k+1} - x_k|$")
ax.set_title(f"inverting the i-ResNet block ({iterations} iterations)")
ax.set_xlim(0, 60)
ax.legend(fontsize=8)
show(fig, "05_fixed_point_trace.png")

# %% [markdown]
# Far fewer iterations than the worst case: the decay rate is the *actual* contraction of $g$ on
# these points (see the largest ratio printed above), not the bound.
#
# ## 5. The log-determinant: exact, power series, Hutchinson
#
# $\log|\det J_f(x)| = \log\det(I + J_g(x))$ with a dense $D \times D$ matrix $J_g$. Three ways
# (`ContractiveResidual(..., log_det_method="exact" | "series" | "hutchinson")`; the code is `_log_det`):
#
# * **exact**: form $J_g$ and take `slogdet`, $O(D^3)$ per sample;
# * **power series**: $\log\det(I + J) = \mathrm{tr}\log(I + J) = \sum_{k \geq 1} (-1)^{k+1}\mathrm{tr}(J^k)/k$,
#   which converges because $\|J\| < 1$. Cut after $n$ terms, the bias is at most
#   $\sum_{k > n} D\|J\|^k/k \leq D\,\|J\|^{n+1}/((n+1)(1 - \|J\|))$ per sample;
# * **Hutchinson**: $\mathrm{tr}(J^k) \approx v^\top J^k v$ with random signs $v$ ($E[v v^\top] = I$,
#   unbiased), computed with Jacobian-vector products only — no $J$, no $D^3$.
#
# `log_det_series_bias` gives the batch mean of exact minus series for several $n$. We compare it with
# the bound, evaluated per sample with the sample's own $\|J_g(x)\|_2$ (and also with the global
# $L \leq 0.81$). First, `check_flow` confirms the exact log-det against finite differences.

# %%
check_flow(iresnet)
print("check_flow passed for ContractiveResidual (exact log-det)")
terms = (1, 2, 3, 5, 10, 15, 20)
bias = iresnet.log_det_series_bias(x_device, terms=terms)
norms = np.linalg.norm(normalised_jacobian, 2, axis=(1, 2))
print(" n   mean(exact - series)   bound with ||J(x)||   bound with L = 0.81")
for n in terms:
    local = np.mean(dim * norms ** (n + 1) / ((n + 1) * (1 - norms)))
    global_ = dim * bound ** (n + 1) / ((n + 1) * (1 - bound))
    print(f"{n:2d}   {bias[n]:+.3e}            {local:.3e}             {global_:.3e}")
    assert abs(bias[n]) <= local <= global_
assert abs(bias[10]) < 1e-5  # ten terms: accurate enough for training
assert abs(bias[20]) < abs(bias[10]) < abs(bias[5]) < abs(bias[1])

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogy(terms, [abs(bias[n]) for n in terms], "C0o-", label="|mean(exact - series)|, measured")
ax.semilogy(
    terms,
    [np.mean(dim * norms ** (n + 1) / ((n + 1) * (1 - norms))) for n in terms],
    "C1--",
    label="bound with each $\\|J_g(x)\\|_2$",
)
ax.semilogy(
    terms, [dim * bound ** (n + 1) / ((n + 1) * (1 - bound)) for n in terms], "C2:", label="bound with $L = 0.81$"
)
ax.set_xlabel("number of series terms $n$")
ax.set_ylabel("bias of the log-det (nats)")
ax.set_title("power series of $\\log\\det(I + J_g)$")
ax.legend(fontsize=8)
show(fig, "05_series_bias.png")

# %% [markdown]
# ### Hutchinson's estimator: unbiased, but noisy
#
# Evaluate the Hutchinson log-det of one point many times (fresh probes each call) with $S = 1$ and
# $S = 16$ probe vectors. It is unbiased for the *cut* series (10 terms here), and its standard
# deviation falls like $1/\sqrt{S}$, so $S = 16$ should be about 4 times less noisy.

# %%
repeats = budget(400, 150)
point = x_device[:1]
with no_grad():
    exact_point = float(to_numpy(iresnet.log_det_at(point, "exact").data)[0])
    series_point = float(to_numpy(iresnet.log_det_at(point, "series").data)[0])
    estimates = {}
    for samples in (1, 16):
        iresnet.hutchinson_samples = samples
        estimates[samples] = np.array(
            [float(to_numpy(iresnet.log_det_at(point, "hutchinson").data)[0]) for _ in range(repeats)]
        )
    iresnet.hutchinson_samples = 1
print(f"exact {exact_point:.6f}, series (10 terms) {series_point:.6f}")
for samples, values in estimates.items():
    standard_error = values.std() / np.sqrt(repeats)
    print(f"Hutchinson S = {samples:2d}: mean {values.mean():.4f} +- {standard_error:.4f}, std {values.std():.4f}")
    assert abs(values.mean() - series_point) < 4 * standard_error  # unbiased
two_values = np.unique(estimates[1].round(12))
print("the values a single-probe estimate takes:", two_values, "- their average:", two_values.mean())
assert len(two_values) == 2 and abs(two_values.mean() - series_point) < 1e-12
spread_ratio = estimates[16].std() / estimates[1].std()
print(f"std(S = 16) / std(S = 1) = {spread_ratio:.3f} (1/sqrt(16) = 0.25)")
assert 0.18 < spread_ratio < 0.33

fig, ax = plt.subplots(figsize=(6, 4))
edges = np.linspace(min(estimates[1].min(), estimates[16].min()), max(estimates[1].max(), estimates[16].max()), 50)
for samples, values in estimates.items():
    ax.hist(values, bins=edges, alpha=0.6, label=f"Hutchinson, S = {samples}")
ax.axvline(exact_point, color="k", lw=1.2, label="exact")
ax.set_xlabel("log det(I + J_g) of one point")
ax.set_ylabel("count")
ax.set_title(f"{repeats} Hutchinson estimates per S")
ax.legend(fontsize=8, loc="upper center")
show(fig, "05_hutchinson.png")

# %% [markdown]
# A curiosity of $D = 2$: a Rademacher probe is one of $\pm(1, 1)$, $\pm(1, -1)$, and $v$ and $-v$ give
# the same $v^\top J^k v$, so a single-probe estimate takes exactly two values, equally likely;
# their average is the cut series itself (checked above). In higher dimensions there are
# $2^{D-1}$ such values and the histogram fills in.
#
# In a training loop the noise averages out over steps and batches, and the cost no longer grows
# like $D^3$; Chen et al. (2019) also randomise the number of terms to remove the cut-off bias
# ("Russian roulette", not in minflow).
#
# ## Exercises
#
# ### Exercise 5.1 — a fixed-point inverse, by hand
#
# Write `invert_residual(g, y, tolerance=1e-12, max_iterations=200)` that solves $y = x + g(x)$
# for a **batch** of scalars $y$ (a NumPy array) by the Banach iteration from $x_0 = y$, stopping
# when the largest change is below `tolerance`. Use it on $g(x) = 0.6\tanh(x) + 0.1$
# ($\mathrm{Lip}(g) = 0.6$). How many iterations should it take, at most, from a first step of size
# $r_0$?


# %% nbgrader={"grade": false, "grade_id": "ex5_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def invert_residual(g, y, tolerance=1e-12, max_iterations=200):
    ### BEGIN SOLUTION
    # At most about 1 + log(tolerance / r0) / log(0.6) iterations: about 55 for r0 = 1.
    assert 54 < 1 + np.log(1e-12 / 1.0) / np.log(0.6) < 56
    x = y.copy()
    for _ in range(max_iterations):
        x_next = y - g(x)
        if np.abs(x_next - x).max() < tolerance:
            return x_next
        x = x_next
    raise RuntimeError("no convergence: is g a contraction?")
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex5_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def g_exercise(x):
    return 0.6 * np.tanh(x) + 0.1


y_batch = np.linspace(-3, 3, 13)


def invert_residual_is_right():
    x_solved = invert_residual(g_exercise, y_batch)
    return x_solved is not None and np.abs(x_solved + g_exercise(x_solved) - y_batch).max() < 1e-10


check(
    "Exercise 5.1",
    invert_residual_is_right,
    "iterate x <- y - g(x) from x = y until the change is below the tolerance",
)

# %% [markdown]
# ### Exercise 5.2 — a spectral norm by power iteration
#
# Write `power_iteration_norm(W, steps)` that estimates $\|W\|_2$, the largest singular value, by
# the power iteration of `SpectralNormLinear` ($v \leftarrow W^\top u/|W^\top u|$,
# $u \leftarrow W v/|W v|$, and finally $\sigma = u^\top W v$), starting from a random $u$. Compare it
# with `numpy.linalg.norm(W, 2)`.


# %% nbgrader={"grade": false, "grade_id": "ex5_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def power_iteration_norm(W, steps=100, seed=0):
    ### BEGIN SOLUTION
    # Each step multiplies the error by (sigma_2 / sigma_1)^2: fast when the top singular value
    # stands apart, slow when the two largest are close.
    u = np.random.default_rng(seed).standard_normal(W.shape[0])
    u /= np.linalg.norm(u)
    for _ in range(steps):
        v = W.T @ u
        v /= np.linalg.norm(v)
        u = W @ v
        u /= np.linalg.norm(u)
    return float(u @ W @ v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex5_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
W_exercise = np.random.default_rng(3).standard_normal((6, 4))
reference = np.linalg.norm(W_exercise, 2)


def power_iteration_norm_is_right():
    estimate = power_iteration_norm(W_exercise)
    print(f"power iteration {estimate}, numpy.linalg.norm(W, 2) {reference}")
    return estimate is not None and abs(estimate - reference) < 1e-8 * reference


check(
    "Exercise 5.2",
    power_iteration_norm_is_right,
    "alternate v = W^T u / |W^T u| and u = W v / |W v|; sigma = u^T W v",
)

# %% [markdown]
# ### Exercise 5.3 — where is the inverse log-det evaluated?
#
# `iresnet.inverse(z)` returns $\log|\det J_{f^{-1}}(z)|$. Since $J_{f^{-1}}(z) = J_f(x)^{-1}$ at the
# matching point $x = f^{-1}(z)$, it must equal $-\log\det(I + J_g(x))$ — at $x$, **not** at $z$. Write
# `inverse_log_det_candidates(flow, z)` returning the pair
# `(-flow.log_det_at(x), -flow.log_det_at(z))` as NumPy arrays, with $x$ from `flow.inverse(z)`,
# and confirm which one the flow returns.


# %% nbgrader={"grade": false, "grade_id": "ex5_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def inverse_log_det_candidates(flow, z):
    ### BEGIN SOLUTION
    with no_grad():
        x_inverse, _ = flow.inverse(z)
        at_x = -to_numpy(flow.log_det_at(x_inverse).data)
        at_z = -to_numpy(flow.log_det_at(z).data)
    return at_x, at_z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex5_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
returned = to_numpy(inverse_log_det.data)[:20]


def inverse_log_det_candidates_is_right():
    candidates = inverse_log_det_candidates(iresnet, z.data[:20])
    if candidates is None:
        return False
    print("largest |returned - (-log det at x)|:", np.abs(returned - candidates[0]).max())
    print("largest |returned - (-log det at z)|:", np.abs(returned - candidates[1]).max())
    return np.abs(returned - candidates[0]).max() < 1e-10 and np.abs(returned - candidates[1]).max() > 1e-3


check(
    "Exercise 5.3",
    inverse_log_det_candidates_is_right,
    "x = flow.inverse(z)[0]; the inverse log-det is minus the forward log-det at x",
)

# %% [markdown]
# ## Summary
#
# * A residual block $z = x + g(x)$ is invertible if its coordinates are partitioned (RevNet: any
#   networks, log-det exactly 0; the inverse subtracts $f_2(z_1)$, then $f_1(h_2)$) or if $g$ is a
#   contraction (i-ResNet).
# * Banach: for $\mathrm{Lip}(g) < 1$ the iteration $x \leftarrow z - g(x)$ converges from anywhere,
#   geometrically. UDL's maps: (a) converges to 0.6105; (b) converges to 0.4445 although $|F'|$
#   reaches 1.05 and the iterates visit those places — its secant slopes towards the fixed point
#   stay below 0.75; (c) diverges.
# * Spectral normalisation makes $\prod_l\|W_l\|_2 \leq c^L$: measured above, from a raw block with
#   Jacobian norms above 1 to a certified $\mathrm{Lip}(g) \leq 0.81$.
# * The log-det of $I + J_g$: exact ($D^3$), power series (bias shrinks geometrically with the
#   number of terms, inside its bound), Hutchinson (unbiased, spread $\propto 1/\sqrt{S}$).
