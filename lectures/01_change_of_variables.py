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
# # Lecture 1 — Change of variables and 1-D flows
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 7 s; full about 11 s.*
#
# A normalizing flow is an invertible, differentiable map $f$ from data $x$ to a latent
# variable $z = f(x)$ whose density $p_Z$ is simple (a standard normal). Everything a flow
# does rests on one formula, the **change of variables**:
#
# $$p_X(x) = p_Z\big(f(x)\big)\,\big|f'(x)\big| \qquad\text{(1-D)},\qquad
#   p_X(x) = p_Z\big(f(x)\big)\,\big|\det J_f(x)\big| \qquad\text{(D-D)}.$$
#
# This lecture derives it in one dimension, reproduces the 1-D example of *Understanding
# Deep Learning* (UDL, Prince 2023, chapter 16 and its notebook 16.1), and then trains a
# 1-D flow with minflow that learns the same density from samples.
#
# **Notation (the whole course):** $x$ data, $z$ latent, $f: x \mapsto z$ the *normalizing*
# direction — what minflow calls `forward` — and $f^{-1}: z \mapsto x$ the *generative*
# direction (`inverse`). UDL writes the generative direction as its function: $x = f(z)$.
# Here we call UDL's map $g$, so $g = f^{-1}$ and $f = g^{-1}$.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, budget, check, show

import minflow
from minflow import train
from minflow.autodiff import Tensor, ops
from minflow.backend import to_device
from minflow.flows import ElementwiseAffine, RationalQuadraticSpline
from minflow.nn import Parameter
from minflow.testing import check_flow

print("quick mode" if QUICK else "full mode")


def normal_pdf(z):
    """The standard normal density p_Z(z)."""
    return np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


# %% [markdown]
# ## 1. Where $|f'(x)|$ comes from
#
# Take an increasing $f$. The event "$X$ lies in $[x, x + dx]$" is the same event as
# "$Z = f(X)$ lies in $[f(x), f(x) + f'(x)\,dx]$", so both have the same probability:
#
# $$p_X(x)\,dx = p_Z\big(f(x)\big)\,f'(x)\,dx .$$
#
# For a decreasing $f$ the interval flips and $f'(x) < 0$, hence the absolute value. The
# factor $|f'(x)|$ is how much $f$ stretches a little interval around $x$: where $f$
# stretches, the same probability mass is spread over more $z$, so $x$ must be *denser*
# there. Without it, $p_Z(f(x))$ is not even a density (exercise 1.2 checks that it does
# not integrate to one).
#
# In the generative direction, $x = g(z)$ with $g = f^{-1}$, the same statement reads
# $p_X(g(z)) = p_Z(z) / |g'(z)|$, because $f'(x) = 1 / g'(z)$ at $x = g(z)$ (the
# inverse function theorem). Both forms appear below.

# %% [markdown]
# ## 2. UDL's 1-D map
#
# UDL's notebook 16.1 uses this **generative** map from latent $z$ to data $x$:
#
# $$x = g(z) = (1 - p)\,x_1 + p\,z,\qquad x_1 = \frac{6}{1 + e^{-1.5 (z - 0.25)}} - 3,\qquad p = \frac{z^2}{9}.$$
#
# Near $z = 0$ it is mostly the squashing sigmoid $x_1$; towards $|z| = 3$ it blends into
# the identity. In minflow's convention the flow is the inverse, $f = g^{-1}$.
#
# We need $g'(z)$. Rather than differentiating by hand we ask minflow's autodiff engine
# (lecture 0): $g$ acts elementwise, so its Jacobian is diagonal, and the vector-Jacobian
# product with a cotangent of all ones is exactly the vector of derivatives $g'(z_i)$.
# UDL's notebook uses a finite difference with step $10^{-4}$; we check the two agree.


# %%
def g(z):
    """UDL's generative map (works on NumPy arrays and on minflow Tensors)."""
    sig = ops.sigmoid(1.5 * (z - 0.25)) if isinstance(z, Tensor) else 1 / (1 + np.exp(-1.5 * (z - 0.25)))
    x1 = 6 * sig - 3
    p = z * z / 9
    return (1 - p) * x1 + p * z


def g_prime(z):
    """g'(z) by reverse-mode autodiff: the VJP of an elementwise map with cotangent 1."""
    zt = Tensor(np.asarray(z, dtype=float), requires_grad=True)
    x = g(zt)
    x.backward(np.ones_like(x.data))
    return zt.grad


z_grid = np.linspace(-3, 3, 601)  # UDL plots z in [-3, 3]
dg = g_prime(z_grid)
dg_udl = (g(z_grid + 1e-4) - g(z_grid - 1e-4)) / 2e-4  # UDL's finite difference
assert np.allclose(dg, dg_udl, atol=1e-7), np.abs(dg - dg_udl).max()

# g must be increasing to be invertible. It is, on [-3, 3] (the range UDL plots) and well
# beyond: on [-8, 8], far past where a standard normal puts any noticeable mass.
wide = np.linspace(-8, 8, 16001)
assert (g_prime(wide) > 0).all() and (np.diff(g(wide)) > 0).all()
print(
    f"g'(z) on [-3, 3]: min {dg.min():.3f} at z = {z_grid[dg.argmin()]:.2f}, max {dg.max():.3f} at z = {z_grid[dg.argmax()]:.2f}"
)
print(f"g(-3) = {g(-3.0):.3f}, g(3) = {g(3.0):.3f}")
assert abs(g(-3.0) + 3) < 1e-12 and abs(g(3.0) - 3) < 1e-12  # p = 1 at |z| = 3: g(z) = z there

# %% [markdown]
# ## 3. The density of $x$, on a grid
#
# Push the grid of $z$ values through $g$: the points $x_i = g(z_i)$ form a (non-uniform)
# grid in $x$, and the density there is $p_X(x_i) = p_Z(z_i) / g'(z_i)$. A density must
# integrate to one; the trapezoid rule on that grid checks it (over $z \in [-8, 8]$, the
# normal mass outside is about $10^{-15}$).

# %%
assert 2 * 0.5 * math.erfc(8 / math.sqrt(2)) < 2e-15  # the normal mass outside [-8, 8]
x_wide, p_wide = g(wide), normal_pdf(wide) / g_prime(wide)
mass = np.trapezoid(p_wide, x_wide)
print(f"integral of p_X over x: {mass:.8f}")
assert abs(mass - 1) < 1e-6

x_grid, p_x_grid = g(z_grid), normal_pdf(z_grid) / dg

# %% [markdown]
# Now sample: draw $z \sim \mathcal N(0, 1)$ and set $x = g(z)$. The histogram of those
# samples must match the density. We measure the match by the **total variation**
# distance between the histogram's bin frequencies $\hat q_k$ and the exact bin masses
# $q_k = \Phi(g^{-1}(b_{k+1})) - \Phi(g^{-1}(b_k))$ (computed in section 4), and compare
# it with what sampling noise alone gives: $\mathbb E\,|\hat q_k - q_k| \approx \sqrt{2 q_k / (\pi N)}$,
# so $\mathrm{TV} = \tfrac12 \sum_k |\hat q_k - q_k| \approx \tfrac12 \sum_k \sqrt{2 q_k / (\pi N)}$.

# %%
n_samples = budget(50_000, 10_000)
rng = np.random.default_rng(0)
x_samples = g(rng.standard_normal(n_samples))
print(f"{n_samples} samples, range [{x_samples.min():.2f}, {x_samples.max():.2f}]")

# %% [markdown]
# ## 4. Evaluating $p_X$ at a given $x$: invert $g$
#
# To evaluate the density at a data point we need $z = f(x) = g^{-1}(x)$. UDL's map has
# no closed-form inverse, but it is increasing, so **bisection** finds it: keep an
# interval $[a, b]$ with $g(a) \le x \le g(b)$ and halve it. Sixty halvings of $[-8, 8]$
# leave an interval of width $16 / 2^{60} \approx 10^{-17}$: machine precision. (minflow's
# spline flows invert in closed form; its residual flows use a fixed-point iteration.)
#
# Then the normalizing form of the change of variables gives the density:
# $p_X(x) = p_Z(f(x))\,|f'(x)|$, with $f'(x) = 1 / g'(f(x))$.


# %%
def f(x, low=-8.0, high=8.0, iterations=60):
    """f = g^{-1} by bisection (vectorised over x); valid for g(low) < x < g(high)."""
    x = np.asarray(x, dtype=float)
    if not ((g(low) < x) & (x < g(high))).all():
        raise ValueError(f"f: x must lie in ({g(low):.1f}, {g(high):.1f}), got [{x.min()}, {x.max()}]")
    a, b = np.full_like(x, low), np.full_like(x, high)
    for _ in range(iterations):
        middle = 0.5 * (a + b)
        below = g(middle) < x
        a, b = np.where(below, middle, a), np.where(below, b, middle)
    return 0.5 * (a + b)


def p_x(x):
    """p_X(x) = p_Z(f(x)) |f'(x)|, with f'(x) = 1 / g'(f(x))."""
    z = f(x)
    return normal_pdf(z) / g_prime(z)


assert 1e-18 < 16 / 2**60 < 2e-17
x_test = np.array([-2.5, -1.0, 0.0, 0.7, 2.0])
assert np.allclose(g(f(x_test)), x_test, atol=1e-12)  # the round trip
assert np.allclose(p_x(x_grid[::50]), p_x_grid[::50], rtol=1e-9)  # same density as the grid of section 3
print("p_X at", x_test, "=", np.round(p_x(x_test), 4))

# The histogram test of section 3.
Phi = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))  # the normal CDF
edges = np.linspace(-4, 4, 61)
q_exact = np.diff(Phi(f(edges)))
q_hat = np.histogram(x_samples, bins=edges)[0] / n_samples
tv = 0.5 * np.abs(q_hat - q_exact).sum() + 0.5 * (1 - q_exact.sum())  # + mass outside [-4, 4]
tv_noise = 0.5 * np.sqrt(2 * q_exact / (math.pi * n_samples)).sum()
print(f"total variation histogram vs density: {tv:.4f} (sampling noise alone: about {tv_noise:.4f})")
assert tv < 2 * tv_noise

# %% [markdown]
# **Predict before you run.** The next cell draws $p_X$. Before you run it, sketch it: the base
# density $p_Z$ is a single bell, and section 2 printed where $g'$ is smallest and largest. Is
# $p_X$ one bump or several? Where are its peaks, and is it symmetric? (Recall
# $p_X(g(z)) = p_Z(z)/g'(z)$: small $g'$ piles density up.) Then run the cell and compare.

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
axes[0].plot(z_grid, x_grid, "C0")
axes[0].set(title="UDL's generative map $x = g(z)$", xlabel="$z$", ylabel="$x$")
axes[1].plot(z_grid, dg, "C0", label="autodiff")
axes[1].plot(z_grid[::30], dg_udl[::30], "k.", ms=4, label="finite difference")
axes[1].set(title="$g'(z)$ (> 0: $g$ is invertible)", xlabel="$z$")
axes[1].legend()
axes[2].plot(z_grid, normal_pdf(z_grid), "C1")
axes[2].set(title="base density $p_Z(z) = \\mathcal{N}(0, 1)$", xlabel="$z$")
axes[3].hist(x_samples, bins=edges, density=True, color="0.8", label=f"{n_samples} samples $g(z)$")
axes[3].plot(x_grid, p_x_grid, "C3", label="$p_Z(z)/g'(z)$ at $x=g(z)$")
axes[3].set(title="data density $p_X(x)$", xlabel="$x$", xlim=(-4, 4))
axes[3].legend(fontsize=8)
fig.tight_layout()
show(fig, "01_udl_map.png")

# %%
# the claims below: g' has its minima near z = -1.8 and z = 2.1, its maximum near z = 0.25
local_minima = z_grid[1:-1][(dg[1:-1] < dg[:-2]) & (dg[1:-1] < dg[2:])]
assert np.allclose(local_minima, [-1.8, 2.1], atol=0.1), local_minima
assert abs(z_grid[dg.argmax()] - 0.25) < 0.05

# %% [markdown]
# Where $g$ is flat ($g'$ small, around $z \approx -1.8$ and $z \approx 2.1$) many $z$ values land on a short
# stretch of $x$: the density of $x$ piles up there. Where $g$ is steep (around
# $z \approx 0.25$, the middle of the sigmoid) it thins out. That is the whole story of
# the change of variables.
#
# ## 5. The entropy of $p_X$: the best NLL any model can reach
#
# A model $q$ trained by maximum likelihood minimises the expected negative
# log-likelihood $\mathbb E_{p_X}[-\log q(x)] = H(p_X) + \mathrm{KL}(p_X \,\|\, q) \ge H(p_X)$.
# The entropy is therefore the target. Changing variables inside the expectation,
#
# $$H(p_X) = \mathbb E_z\big[-\log p_Z(z) + \log g'(z)\big] = H(p_Z) + \mathbb E_z[\log g'(z)],
# \qquad H(p_Z) = \tfrac12 \log(2\pi e) .$$

# %%
entropy_z = 0.5 * math.log(2 * math.pi * math.e)
entropy_x = entropy_z + np.trapezoid(normal_pdf(wide) * np.log(g_prime(wide)), wide)
print(f"H(p_Z) = {entropy_z:.4f} nats, H(p_X) = {entropy_x:.4f} nats")
assert abs(entropy_z - 1.4189) < 1e-4

# %% [markdown]
# ## 6. Learning $f$ from samples with minflow
#
# Now forget $g$ and keep only samples of $x$. A 1-D flow is any increasing map with a
# trainable shape. We compose two of minflow's elementwise flows (open
# `minflow/flows/elementwise.py`, whose docstrings derive each log-derivative):
#
# - `ElementwiseAffine(1)`: $h = e^{s} x + t$, with $\log|f'| = s$;
# - `RationalQuadraticSpline(1, bins=8, bound=3)`: a monotone spline on $[-3, 3]$
#   (identity outside), with $\log|f'|$ from the spline's derivative formula
#   (`minflow/flows/splines.py`).
#
# `minflow.Sequential` chains them and **adds** their log-derivatives (the chain rule:
# $(f_2 \circ f_1)' = f_2'(f_1(x))\, f_1'(x)$). `NormalizingFlow` adds the base density,
# $\log p(x) = \log p_Z(f(x)) + \log|f'(x)|$, and `train.fit` minimises the mean NLL with
# Adam (read `NormalizingFlow.log_prob` in `minflow/models.py`: it is that one line).
#
# The samples are a NumPy array; `train.fit` copies them once to wherever the model lives
# (NumPy by default, a GPU under `MINFLOW_BACKEND=cupy`: lecture 9). When we call the model
# ourselves, `to_device` makes that copy, and a Tensor's `.numpy()` brings a result back.

# %%
n_train = budget(20_000, 10_000)
data = g(np.random.default_rng(1).standard_normal((n_train + 10_000, 1)))
data_train, data_test = data[:n_train], data[n_train:]

flow = minflow.Sequential([ElementwiseAffine(1), RationalQuadraticSpline(1, bins=8, bound=3.0)])
model = minflow.NormalizingFlow(flow)
history = train.fit(
    model, data_train, steps=budget(1500, 800), batch_size=512, lr=1e-2, schedule="cosine", seed=0, progress=False
)

learned_nll = train.evaluate_nll(model, data_test)
true_nll = -np.mean(np.log(p_x(data_test[:, 0])))  # the same test points under the true density
print(f"test NLL: learned flow {learned_nll:.4f}, true density {true_nll:.4f}, entropy {entropy_x:.4f}")
# The true NLL on 10,000 test points is a Monte-Carlo estimate of the entropy.
standard_error = np.std(np.log(p_x(data_test[:, 0]))) / math.sqrt(len(data_test))
assert abs(true_nll - entropy_x) < 4 * standard_error
# The learned NLL exceeds the true one by (an estimate of) KL(p_X || q): small.
gap = learned_nll - true_nll
print(f"learned - true = {gap:.4f} nats (an estimate of the KL divergence)")
assert -0.01 < gap < budget(0.02, 0.05)

# %% [markdown]
# In one dimension there is exactly **one** increasing map that sends $p_X$ to
# $\mathcal N(0,1)$: $f = \Phi^{-1} \circ F_X$ (match the cumulative distributions). Since
# $F_X = \Phi \circ g^{-1}$, that map is $g^{-1}$ itself, so the trained flow's `forward`
# should have recovered UDL's $f = g^{-1}$, at least where there is data to learn from.

# %%
x_plot = np.linspace(-4, 4, 401)
with minflow.no_grad():
    learned_log_p = model.log_prob(to_device(x_plot[:, None])).numpy()
    learned_f = flow.forward(to_device(x_plot[:, None]))[0].numpy()[:, 0]
true_f = f(x_plot)
central = (x_plot > np.quantile(data_test, 0.01)) & (x_plot < np.quantile(data_test, 0.99))
f_error = np.abs(learned_f - true_f)[central].max()
print(f"max |learned f - g^-1| between the 1% and 99% quantiles: {f_error:.3f}")
assert f_error < budget(0.1, 0.2)

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
axes[0].hist(data_train[:, 0], bins=edges, density=True, color="0.85", label="training samples")
axes[0].plot(x_plot, p_x(x_plot), "k", lw=2, label="true $p_X$")
axes[0].plot(x_plot, np.exp(learned_log_p), "C3--", lw=2, label="learned flow")
axes[0].set(title="density", xlabel="$x$", xlim=(-4, 4))
axes[0].legend(fontsize=8)
axes[1].plot(x_plot, true_f, "k", lw=2, label="$f = g^{-1}$ (UDL, inverted)")
axes[1].plot(x_plot, learned_f, "C3--", lw=2, label="learned flow.forward")
axes[1].set(title="normalizing map $z = f(x)$", xlabel="$x$", ylabel="$z$")
axes[1].legend(fontsize=8)
axes[2].plot(history["step"], history["loss"], "C0", lw=0.8, label="train NLL (minibatch)")
axes[2].axhline(entropy_x, color="k", ls=":", label=f"entropy {entropy_x:.3f}")
axes[2].set(title="training", xlabel="step", ylabel="nats", ylim=(entropy_x - 0.2, entropy_x + 0.8))
axes[2].legend(fontsize=8)
fig.tight_layout()
show(fig, "01_learned_flow.png")

# %% [markdown]
# ## 7. Why flows: the likelihood is exact
#
# Flows are one of three families of deep generative models (UDL 16.5.1 compares them; so do
# the course's founding documents: the internship call `002_…` sets flows beside GANs, the
# blog `003_…` walks from GANs through VAEs to flows, and the lecture `004_…` asks "why GANs
# and VAEs can't" model densities).
#
# | | normalizing flow | VAE | GAN |
# |---|---|---|---|
# | likelihood $p(x)$ | **exact**: $p_Z(f(x))\,\lvert\det J_f(x)\rvert$ | a lower bound only (the ELBO) | none: the model has no density to evaluate |
# | training | maximum likelihood, directly | maximise the ELBO | adversarial game against a discriminator |
# | sampling | exact, one pass $x = f^{-1}(z)$ | exact (decoder), one pass | exact (generator), one pass |
# | latent $z$ of a given $x$ | exact, $z = f(x)$ (invertible) | approximate (encoder) | none (no encoder) |
# | price | $f$ invertible, $\dim z = \dim x$, cheap $\det J_f$ | blurry samples, a bound | unstable training, mode collapse |
#
# "Exact" is a checkable claim: the trained flow's density integrates to one, to the
# accuracy of the quadrature — there is no gap as there is for a bound. A VAE's ELBO,
# integrated the same way, would give less than one.

# %%
x_mass = np.linspace(-12, 12, 24001)
with minflow.no_grad():
    learned_density = np.exp(model.log_prob(to_device(x_mass[:, None])).numpy())
learned_mass = np.trapezoid(learned_density, x_mass)
print(f"integral of the trained flow's p(x) over [-12, 12]: {learned_mass:.8f}")
assert abs(learned_mass - 1) < 1e-6

# %% [markdown]
# ## Exercises
#
# ### Exercise 1.1 — the density of a linear map, by hand
#
# Let $x = a z + b$ with $z \sim \mathcal N(0, 1)$ and $a \ne 0$ (generative direction).
# Write `linear_density(x, a, b)` that returns $p_X(x)$ using the change of variables with
# the normalizing map $f(x) = (x - b)/a$. (You should recognise the answer.)


# %% nbgrader={"grade": false, "grade_id": "ex1_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def linear_density(x, a, b):
    ### BEGIN SOLUTION
    # f'(x) = 1/a, so p_X(x) = p_Z((x - b)/a) / |a|: the normal density with mean b and standard
    # deviation |a|. The absolute value matters for a < 0.
    return normal_pdf((x - b) / a) / abs(a)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def linear_density_is_right():
    xs = np.linspace(-20, 20, 4001)
    for a, b in [(2.0, 1.0), (-0.5, 3.0)]:
        answer = linear_density(xs, a, b)
        gaussian = np.exp(-0.5 * ((xs - b) / a) ** 2) / (abs(a) * math.sqrt(2 * math.pi))
        if answer is None or not np.allclose(answer, gaussian) or abs(np.trapezoid(answer, xs) - 1) >= 1e-6:
            return False
    return True


check("Exercise 1.1", linear_density_is_right, "use p_Z((x - b) / a) times |f'(x)| = 1 / |a| (mind a < 0)")

# %% [markdown]
# ### Exercise 1.2 — the $|f'|$ factor is what normalizes
#
# For UDL's map, compute numerically (trapezoid rule on a grid of $x$ covering
# $[g(-8), g(8)]$) the two integrals
# `mass_without` $= \int p_Z(f(x))\,dx$ and `mass_with` $= \int p_Z(f(x))\,|f'(x)|\,dx$,
# returned by `masses()` as the pair `(mass_without, mass_with)`.
# Use `f` (bisection) from section 4 and $f'(x) = 1/g'(f(x))$.


# %% nbgrader={"grade": false, "grade_id": "ex1_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def masses():
    ### BEGIN SOLUTION
    x_fine = np.linspace(g(-8.0) + 1e-9, g(8.0) - 1e-9, 20001)
    z_fine = f(x_fine)
    mass_without = np.trapezoid(normal_pdf(z_fine), x_fine)
    mass_with = np.trapezoid(normal_pdf(z_fine) / g_prime(z_fine), x_fine)
    return mass_without, mass_with
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def masses_are_right():
    mass_without, mass_with = masses()
    print(f"without |f'|: {mass_without:.4f}    with |f'|: {mass_with:.6f}")
    # and the claim below: without |f'| the integral is E_z[g'(z)]
    expected_without = np.trapezoid(normal_pdf(wide) * g_prime(wide), wide)
    return abs(mass_with - 1) < 1e-4 and abs(mass_without - 1) > 0.05 and abs(mass_without - expected_without) < 1e-4


check(
    "Exercise 1.2",
    masses_are_right,
    "integrate normal_pdf(f(x)) and normal_pdf(f(x)) / g_prime(f(x)) over x with np.trapezoid",
)

# %% [markdown]
# Without the factor, the "density" integrates to $\mathbb E_z[g'(z)]$ (substitute
# $x = g(z)$), which is not one. Only with $|f'|$ is probability conserved.
#
# ### Exercise 1.3 — write your own 1-D flow
#
# Write a flow class `ScaledAsinh(minflow.Flow)` for the map (normalizing direction)
#
# $$z = f(x) = \frac{\operatorname{asinh}(a x)}{a},\qquad a = e^{\ell} > 0,$$
#
# with one trainable parameter $\ell$ = `log_a` (a `minflow.nn.Parameter` of shape (1,), made
# with `to_device` so that it lives where minflow's own flows do).
# It squashes heavy tails logarithmically and is nearly the identity near 0. You need:
#
# - `forward(x) -> (z, log_det)` with $\log|f'(x)| = -\tfrac12 \log(1 + a^2 x^2)$, summed
#   over the event axis to shape (B,);
# - `inverse(z) -> (x, log_det)` with $x = \sinh(a z)/a$ and $\log|df^{-1}/dz| = \log\cosh(a z)$.
#
# Use minflow ops (`ops.exp`, `ops.log`, `ops.log1p`, `ops.sqrt`, `ops.absolute`, ...), so
# gradients flow to `log_a`. Hints: $\operatorname{asinh}(u) = \mathrm{sign}(u)\log(|u| + \sqrt{u^2+1})$
# (this form avoids cancellation for $u \ll 0$); $\log\cosh v = |v| + \log(1 + e^{-2|v|}) - \log 2$.
# Set `self.event_shape = (1,)` and call `self._check_input(x)` first, as minflow's flows
# do (read `Elementwise` in `minflow/flows/elementwise.py`). Then
# `minflow.testing.check_flow` verifies the round trips, the log-det against finite
# differences, batch independence and the gradient.


# %% nbgrader={"grade": false, "grade_id": "ex1_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
class ScaledAsinh(minflow.Flow):
    """z = asinh(a x) / a with a = exp(log_a); log|f'(x)| = -1/2 log(1 + a^2 x^2)."""

    def __init__(self):
        self.event_shape = (1,)
        self.log_a = Parameter(to_device(np.zeros(1)))

    def forward(self, x):
        ### BEGIN SOLUTION
        x = self._check_input(x)
        a = ops.exp(self.log_a)
        u = a * x
        # a constant: its derivative is 0 almost everywhere (given a CuPy array, np.sign runs CuPy's sign)
        sign = np.sign(u.data)
        z = sign * ops.log(ops.absolute(u) + ops.sqrt(u * u + 1)) / a
        log_det = ops.sum(-0.5 * ops.log1p(u * u), axis=1)
        return z, log_det
        ### END SOLUTION

    def inverse(self, z):
        ### BEGIN SOLUTION
        z = self._check_input(z, "z")
        a = ops.exp(self.log_a)
        v = a * z
        x = (ops.exp(v) - ops.exp(-v)) / (2 * a)
        size = ops.absolute(v)
        log_det = ops.sum(size + ops.log1p(ops.exp(-2 * size)) - math.log(2), axis=1)
        return x, log_det
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def scaled_asinh_passes_check_flow():
    my_flow = ScaledAsinh()
    my_flow.log_a.data[...] = 0.4  # not the default value, so nothing is checked only at a = 1
    try:
        check_flow(my_flow)
    except AssertionError as error:
        print(f"check_flow says: {error}")
        return False
    return True


check(
    "Exercise 1.3",
    scaled_asinh_passes_check_flow,
    "check_flow (printed above) names the property that fails: round trip, log-det, batch or gradient",
)

# %% [markdown]
# ## Summary
#
# - $p_X(x) = p_Z(f(x))\,|f'(x)|$: probability is conserved, and $|f'|$ accounts for how
#   $f$ stretches space. In the generative form, $p_X(g(z)) = p_Z(z)/|g'(z)|$.
# - UDL's example is written generatively ($x = g(z)$); minflow's `forward` is $f = g^{-1}$.
#   Evaluating a density needs $f$; sampling needs $g$. A flow must offer both.
# - A trained 1-D flow reaches the entropy of the data within a few hundredths of a nat,
#   and in 1-D it recovers the one increasing normalizing map.
#
# Next: in $D$ dimensions $|f'|$ becomes $|\det J_f|$, which costs $O(D^3)$ in general;
# the flows of the following lectures are built so that it is cheap.
