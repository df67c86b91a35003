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
# # Lecture 10 — Conditional flows and posterior inference
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 20 s; full about 2 to 3 min.*
#
# Every flow so far modelled one density $p(x)$. Often we want a *family* of densities, one for
# each value of something we know: the digits of class 7, the moons' lower half, the parameters
# $\theta$ of a simulator given what it produced. A **conditional flow** models $p(x \mid c)$,
# where the **context** $c$ is any vector we condition on (a one-hot label, an observation).
#
# 1. What a context is, why $p(x \mid c)$ is normalised for every $c$, and how the conditioners of
#    couplings and of MADE read it.
# 2. Class-conditional two moons: one model, two densities, and a classifier for free.
# 3. **Neural posterior estimation** on a problem with an exact answer: a linear-Gaussian
#    simulator, scored by the KL divergence to its exact posterior.
# 4. The two-moons posterior of simulation-based inference, beside rejection ABC.
# 5. Class-conditional $8 \times 8$ digits.
#
# Notation as in every lecture: $f: x \mapsto z$ is the normalizing direction (minflow's
# `forward`), now with the context as a second argument, $z = f(x; c)$. The sources:
# `minflow/flows/coupling.py`, `minflow/flows/autoregressive.py` (module docstrings, "Context")
# and `minflow/inference.py`.

# %%
import math

import matplotlib.pyplot as plt
import numpy
from _common import QUICK, budget, check, show

from minflow import backend, data, inference, models, plot, train
from minflow.flows.autoregressive import made_degrees

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. A context, and why every $p(x \mid c)$ is a density
#
# A conditional flow is a bijection of $x$ **for each fixed $c$**: $z = f(x; c)$, with an inverse
# $x = f^{-1}(z; c)$. The context is an input, never an output: it is not transformed, and it has
# no density of its own. For each $c$ the change of variables holds as before,
#
# $$p(x \mid c) = p_Z(f(x; c))\,\Bigl\lvert\det \frac{\partial f}{\partial x}(x; c)\Bigr\rvert,$$
#
# with the Jacobian taken in $x$ only. So $\int p(x \mid c)\,dx = \int p_Z(z)\,dz = 1$ for **every**
# $c$ — also for contexts never seen in training. No $\partial f / \partial c$ ever appears.
#
# **How a coupling reads $c$.** The conditioner gets it concatenated to the kept half:
# $z_2 = g(h_2; \theta(h_1, c))$, $z_1 = h_1$. The Jacobian in $x$ is still block triangular with
# $g'$ on the diagonal — $c$ only changes the *values* of the parameters, not the structure.
#
# **How MADE reads $c$.** MADE gives every unit a degree (lecture 4): output $i$ may only see units
# of degree $< i$. The context units get degree **0**: every output may see them. But the first
# coordinate's output has degree 1, so it may only see hidden units of degree 0, and in an
# unconditional MADE there are none (hidden degrees run over $1..D-1$): $\theta_1$ is a constant.
# A conditional MADE lets the hidden degrees run over $0..D-1$; a hidden unit of degree 0 sees the
# context alone, and it is what lets $x_1$'s density depend on $c$.

# %%
inputs, hidden_layers = made_degrees(3, (7,), conditional=True)
print("input degrees", inputs, "(context units: 0)   hidden degrees", hidden_layers[0])
unconditional_inputs, unconditional_hidden = made_degrees(3, (7,))
print("unconditional hidden degrees", unconditional_hidden[0])
assert 0 in hidden_layers[0] and 0 not in unconditional_hidden[0]

# %% [markdown]
# ## 2. Class-conditional two moons
#
# The moons data set draws each point from one of two half circles; `data.toy_labels` gives the
# label of every point of `data.toy_data` (one-hot: $c = (1, 0)$ upper moon, $(0, 1)$ lower moon).
# We train a conditional RealNVP (`context_dim=2`) on the pairs $(x, c)$ by maximum likelihood —
# the same `train.fit`, with `context=`.

# %%
n_moons = budget(10_000, 3_000)
splits = data.toy_data("moons", n_train=n_moons, n_val=0, n_test=2_000, seed=0)
labels_train, _, labels_test = data.toy_labels("moons", n_train=n_moons, n_val=0, n_test=2_000, seed=0)
moons_model = models.realnvp(2, layers=6, hidden=32, seed=0, context_dim=2)
history = train.fit(
    moons_model,
    splits.train,
    context=labels_train,
    steps=budget(2000, 300),
    batch_size=256,
    lr=2e-3,
    schedule="cosine",
    seed=0,
    progress=False,
)
print(
    f"trained in {history['wall_time']:.1f} s; NLL of the last batch, given its labels: {history['loss'][-1]:.3f} nats"
)

# %%
fig = plot.samples_by_label(moons_model, splits.train, labels_train, n=1000, seed=1)
show(fig, "10_moons_by_label.png")

# %% [markdown]
# **Normalised for every $c$, measured.** We sum $p(x \mid c)$ over a grid for the two labels and
# for $c = (0.5, 0.5)$, a context that is no label and was never seen in training. Each sum is 1.

# %%
axis = numpy.linspace(-6, 6, 481)
cell = (axis[1] - axis[0]) ** 2
grid = numpy.stack([g.ravel() for g in numpy.meshgrid(axis, axis)], axis=1)
contexts = {"upper (1, 0)": [1.0, 0.0], "lower (0, 1)": [0.0, 1.0], "neither (0.5, 0.5)": [0.5, 0.5]}
densities = {}
for name, c in contexts.items():
    log_p = train.log_probs(moons_model, grid, context=numpy.tile(c, (len(grid), 1)))
    densities[name] = numpy.exp(backend.to_numpy(log_p)).reshape(len(axis), len(axis))
    mass = densities[name].sum() * cell
    print(f"c = {name:20s} integral of p(x | c) over [-6, 6]^2: {mass:.5f}")
    # a smooth density on a grid of step 0.025, with tails beyond 6 standard units negligible: 0.5%
    assert abs(mass - 1) < 0.005

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
for ax, (name, density) in zip(axes, densities.items()):
    ax.imshow(density, origin="lower", extent=(-6, 6, -6, 6), cmap="viridis")
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
    ax.set_title(f"p(x | c), c = {name}")
fig.tight_layout()
show(fig, "10_moons_densities.png")

# %% [markdown]
# **A classifier for free.** With equal class frequencies, Bayes' rule turns the class-conditional
# densities into class probabilities, $p(c \mid x) \propto p(x \mid c)$: label each test point
# with the $c$ of the larger $\log p(x \mid c)$. The moons barely overlap, so this generative
# classifier should be nearly perfect.

# %%
scores = numpy.stack(
    [
        backend.to_numpy(train.log_probs(moons_model, splits.test, context=numpy.tile(c, (len(splits.test), 1))))
        for c in numpy.eye(2)
    ],
    axis=1,
)
accuracy = float(numpy.mean(scores.argmax(axis=1) == labels_test.argmax(axis=1)))
print(f"Bayes-rule classifier on {len(splits.test)} test points: accuracy {accuracy:.1%}")
assert accuracy > 0.95

# %% [markdown]
# ## 3. Neural posterior estimation, with an exact answer
#
# A **simulator** draws parameters from a prior and data from them: $\theta \sim p(\theta)$,
# $x \sim p(x \mid \theta)$. Inference asks the reverse: given an observation $x$, which $\theta$
# could have made it — the posterior $p(\theta \mid x)$. Often the simulator is a program whose
# likelihood we cannot evaluate; we can only run it.
#
# **Neural posterior estimation** (Papamakarios & Murray 2016; Greenberg et al. 2019) fits a
# conditional flow $q(\theta \mid x)$ — a density over $\theta$, with $x$ as the context — to simulated
# pairs, by maximum likelihood. Why that gives the posterior: the pairs are draws of the joint
# $p(\theta)\,p(x \mid \theta) = p(x)\,p(\theta \mid x)$, so
#
# $$-\mathbb{E}_{(\theta, x)}[\log q(\theta \mid x)] = \mathbb{E}_{x}\bigl[\mathrm{KL}(p(\theta \mid x)
# \,\|\, q(\theta \mid x))\bigr] + \mathbb{E}_x[H(p(\theta \mid x))],$$
#
# and the last term does not depend on $q$: minimising the NLL minimises the expected KL. After
# training, $q(\cdot \mid x_\text{obs})$ is a posterior for **any** observation, with no more simulation.
#
# To know how good $q$ is we need a simulator whose posterior we know. The linear-Gaussian one
# (`inference.LinearGaussianSimulator`): $\theta \sim N(0, I_d)$, $x \mid \theta \sim N(A\theta, \sigma^2 I_m)$.
# Completing the square in $\log p(\theta) + \log p(x \mid \theta)$ (the class docstring has every line):
#
# $$p(\theta \mid x) = N(\mu(x), \Sigma), \qquad \Sigma = (I + A^T A / \sigma^2)^{-1}, \qquad
# \mu(x) = \Sigma A^T x / \sigma^2 .$$
#
# ### Exercise 10.1 — the exact posterior by hand
#
# Write `exact_posterior(A, sigma, x)` in NumPy: the mean (n, d) for the rows of `x` (n, m) and
# the covariance (d, d). The check compares it with `simulator.posterior`.

# %% nbgrader={"grade": false, "grade_id": "ex10_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
simulator = inference.LinearGaussianSimulator(d=2, m=2, sigma=0.1, seed=0)


def exact_posterior(A, sigma, x):
    ### BEGIN SOLUTION
    covariance = numpy.linalg.inv(numpy.eye(A.shape[1]) + A.T @ A / sigma**2)
    return x @ (covariance @ A.T / sigma**2).T, covariance
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex10_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
x_check = numpy.random.default_rng(0).normal(size=(4, 2))
reference = [backend.to_numpy(v) for v in simulator.posterior(backend.to_device(x_check))]


def exact_posterior_is_right():
    mine = exact_posterior(backend.to_numpy(simulator.A), 0.1, x_check)
    return mine is not None and all(numpy.allclose(a, b, atol=1e-12) for a, b in zip(mine, reference))


check(
    "Exercise 10.1",
    exact_posterior_is_right,
    "Sigma = inv(I + A^T A / sigma^2); the mean of row x is Sigma A^T x / sigma^2, so for all rows x @ (Sigma A^T)^T / sigma^2",
)

# %% [markdown]
# ### The score: KL from the exact posterior
#
# `inference.posterior_kl` estimates, for each held-out $x$,
#
# $$\mathrm{KL}(p(\theta \mid x) \,\|\, q(\theta \mid x)) = \mathbb{E}_{\theta \sim p(\theta \mid x)}
# [\log p(\theta \mid x) - \log q(\theta \mid x)]$$
#
# by Monte Carlo with samples of the exact posterior and $q$'s density at them (one forward pass),
# with its standard error. This is the direction maximum likelihood minimises, and it punishes $q$
# for missing posterior mass.
#
# **A baseline.** The untrained flow is the identity: $q(\theta \mid x) = N(0, I)$, the prior, whatever
# $x$ is. Its expected KL is the information $x$ carries about $\theta$, the mutual information
# $I(\theta; x) = \mathbb{E}_x\,\mathrm{KL}(p(\theta \mid x) \,\|\, p(\theta))$.
#
# ### Exercise 10.2 — the prior's KL in closed form
#
# Show that for this simulator $I(\theta; x) = \tfrac12 \log\det(I + A^T A/\sigma^2)$. (Hint: the KL
# between Gaussians is $\tfrac12[\mathrm{tr}\,\Sigma + \mu^T\mu - d - \log\det\Sigma]$ here; average
# $\mu^T \mu$ over $x$ with the law of total variance, $I = \mathrm{Cov}[\theta] = \Sigma + \mathrm{Cov}[\mu(x)]$.)
# Then write `mutual_information(A, sigma)`; the check compares it with `posterior_kl` of an
# untrained conditional flow over 400 simulated $x$, within 4 standard errors.


# %% nbgrader={"grade": false, "grade_id": "ex10_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mutual_information(A, sigma):
    ### BEGIN SOLUTION
    # E_x KL = 1/2 [tr Sigma + tr(I - Sigma) - d - log det Sigma] = -1/2 log det Sigma
    return 0.5 * numpy.linalg.slogdet(numpy.eye(A.shape[1]) + A.T @ A / sigma**2)[1]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex10_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
theta_train, x_train = simulator.simulate(budget(20_000, 5_000), seed=1)
_, x_held_out = simulator.simulate(400, seed=2)
posterior_model = models.realnvp(2, layers=4, hidden=32, seed=0, context_dim=2)
untrained = inference.posterior_kl(posterior_model, simulator, x_held_out, n_samples=200, seed=3)
print(f"untrained flow (the prior): KL {untrained.mean:.3f} ± {untrained.mean_standard_error:.3f} nats")


def mutual_information_is_right():
    information = mutual_information(backend.to_numpy(simulator.A), 0.1)
    return information is not None and abs(untrained.mean - information) < 4 * untrained.mean_standard_error


check(
    "Exercise 10.2",
    mutual_information_is_right,
    "-1/2 log det Sigma = 1/2 log det(I + A^T A / sigma^2): numpy.linalg.slogdet(...)[1] / 2",
)

# %% [markdown]
# Now train $q(\theta \mid x)$ on the simulations and score it on the held-out observations. The
# issue that asked for this lecture set the target at 0.05 nats; the full run trains 2,000 steps and
# must reach 0.02, the quick run 150 steps and the looser 0.05 (measured over ten training seeds:
# 0.015–0.022 nats; `benchmarks/posterior.py` has the full 5,000-step numbers for d = 2..5).

# %%
history = train.fit(
    posterior_model,
    theta_train,
    context=x_train,
    steps=budget(2000, 150),
    batch_size=256,
    lr=3e-3 if QUICK else 1e-3,
    schedule="cosine",
    seed=0,
    progress=False,
)
trained = inference.posterior_kl(posterior_model, simulator, x_held_out[:100], n_samples=500, seed=4)
print(
    f"trained in {history['wall_time']:.1f} s: KL {trained.mean:.4f} ± {trained.mean_standard_error:.4f} nats "
    f"(the prior: {untrained.mean:.3f})"
)
assert trained.mean + 3 * trained.mean_standard_error < budget(0.02, 0.05)

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
means, covariance = (backend.to_numpy(v) for v in simulator.posterior(x_held_out[:3]))
angles = numpy.linspace(0, 2 * math.pi, 200)
circle = numpy.stack([numpy.cos(angles), numpy.sin(angles)])
for i, ax in enumerate(axes):
    drawn = backend.to_numpy(posterior_model.sample(2000, seed=5, context=x_held_out[i]))
    ax.scatter(*drawn.T, s=2, alpha=0.3, color="C0", label="q(theta | x) samples")
    for radius in (1, 2, 3):  # the exact posterior's 1, 2, 3 standard-deviation ellipses
        ellipse = means[i][:, None] + radius * numpy.linalg.cholesky(covariance) @ circle
        ax.plot(*ellipse, color="C3", linewidth=1, label="exact posterior" if radius == 1 else None)
    ax.set_title(f"x = {backend.to_numpy(x_held_out[i]).round(2)}, KL {trained.kl[i]:.3f}")
    ax.set_xlabel("theta_1")
axes[0].set_ylabel("theta_2")
axes[0].legend(loc="lower left", fontsize=8, markerscale=4)
fig.tight_layout()
show(fig, "10_linear_gaussian_posterior.png")

# %% [markdown]
# ## 4. The two-moons posterior: simulation-based inference beside rejection ABC
#
# The standard test problem of simulation-based inference (Greenberg et al. 2019; the `two_moons`
# task of Lueckmann et al. 2021): $\theta \sim U([-1, 1]^2)$, and $x$ is a point of a noisy half
# ring shifted by $(-|\theta_1 + \theta_2|/\sqrt2,\ (\theta_2 - \theta_1)/\sqrt2)$. The absolute value
# makes $\theta$ and its mirror image explain $x$ equally well, so every posterior has **two** thin
# crescents. Read `inference.TwoMoonsSimulator`: rotating $\theta$ by 45° turns the posterior into the
# noise's own distribution, and that gives an exact sampler.
#
# **Rejection ABC** (approximate Bayesian computation) needs nothing but the simulator: simulate many
# pairs, keep the $\theta$ of the $x$ closest to $x_\text{obs}$ (`inference.rejection_abc`). It pays
# for every observation anew, and its cost grows like $\varepsilon^{-m}$ as the tolerance
# $\varepsilon$ shrinks. The flow pays once, in training, then answers for every $x$.

# %%
moons_simulator = inference.TwoMoonsSimulator()
theta_moons, x_moons = moons_simulator.simulate(budget(50_000, 10_000), seed=1)
moons_posterior = models.spline_coupling_flow(2, layers=6, hidden=64, seed=0, context_dim=2)
history = train.fit(
    moons_posterior,
    theta_moons,
    context=x_moons,
    steps=budget(3000, 200),
    batch_size=256,
    lr=1e-3,
    schedule="cosine",
    seed=0,
    progress=False,
)
observations = backend.to_device(numpy.array([[0.0, 0.0], [-0.6, 0.4], [-0.3, -0.5]]))
moons_kl = inference.posterior_kl(moons_posterior, moons_simulator, observations, n_samples=500, seed=2)
untrained_kl = inference.posterior_kl(
    models.spline_coupling_flow(2, layers=6, hidden=64, seed=0, context_dim=2),
    moons_simulator,
    observations,
    n_samples=500,
    seed=2,
)
print(f"trained in {history['wall_time']:.1f} s; KL at the three x: {numpy.round(moons_kl.kl, 2)} nats")
print(f"untrained (N(0, I) for every x): {numpy.round(untrained_kl.kl, 2)} nats")
assert numpy.all(moons_kl.kl < untrained_kl.kl - budget(4.0, 2.0))  # measured: 5.4 and 4.3 nats lower
if not QUICK:
    assert numpy.all(moons_kl.kl < 0.5)  # measured after 3,000 steps: 0.20-0.27 nats

# %%
columns = {"exact posterior": [], "rejection ABC": [], "flow q(theta | x)": []}
exact = backend.to_numpy(moons_simulator.posterior_sample(observations, 1000, seed=3))
for i in range(3):
    abc, eps = inference.rejection_abc(moons_simulator, observations[i], budget(200_000, 50_000), 500, seed=4 + i)
    columns["exact posterior"].append(exact[i])
    columns["rejection ABC"].append(backend.to_numpy(abc))
    columns["flow q(theta | x)"].append(backend.to_numpy(moons_posterior.sample(1000, seed=5, context=observations[i])))
    print(f"x = {backend.to_numpy(observations[i])}: ABC kept 500 simulations within eps = {eps:.3f}")

fig, axes = plt.subplots(3, 3, figsize=(10.5, 10.5), sharex=True, sharey=True)
for j, (name, samples) in enumerate(columns.items()):
    for i in range(3):
        axes[i, j].scatter(*samples[i].T, s=2, alpha=0.4, color=f"C{j}")
        axes[i, j].set_title(f"{name}\nx = {backend.to_numpy(observations[i]).round(2)}", fontsize=9)
        axes[i, j].set_xlim(-1, 1)
        axes[i, j].set_ylim(-1, 1)
fig.tight_layout()
show(fig, "10_two_moons_posterior.png")

# %% [markdown]
# The posterior is symmetric under the mirror $u = (\theta_1 + \theta_2)/\sqrt2 \mapsto -u$, so each
# moon holds half its mass. All three methods must find both moons:

# %%
for name, samples in columns.items():
    shares = [float(numpy.mean(s.sum(axis=1) > 0)) for s in samples]
    print(f"{name:18s} share on the moon with theta_1 + theta_2 > 0: {numpy.round(shares, 2)}")
    # half each; 500-1000 samples put a binomial share within 0.1 of 1/2 (3 sd is < 0.07), and a
    # flow trained briefly is allowed a bit more: 0.2 (quick) or 0.15
    assert all(abs(share - 0.5) < (0.1 if name != "flow q(theta | x)" else budget(0.15, 0.2)) for share in shares)

# %% [markdown]
# The thin crescents are hard for a flow: a smooth bijection of a Gaussian must squeeze almost all of
# its mass into two bands 0.014 wide and keep little in between — and it cannot cut its Gaussian in
# two (lecture 8), so a thin bridge between the moons stays. The KL says how far it is, where a
# picture only hints; the benchmark trains longer (`benchmarks/posterior.py`).
#
# ## 5. Class-conditional digits
#
# The same recipe on images: a multi-scale flow (`models.glow`, lecture 6) with `context_dim=10`,
# every coupling reading the one-hot digit class. The digits come with their labels
# (`data.digit_labels`, in the order of `data.digit_pixels`); we dequantize several fresh copies of
# the training images (lecture 6) and train on (image, label) pairs.

# %%
pixels, digit_classes = data.digit_pixels(), data.digit_labels()
train_index, _, test_index = data.split(numpy.arange(len(pixels)), seed=0)
one_hot = numpy.eye(10)
noise = numpy.random.default_rng(0)
copies = budget(8, 2)
images = numpy.concatenate(
    [data.to_model_space(data.dequantize(pixels[train_index], seed=noise))[0] for _ in range(copies)]
)
image_labels = numpy.concatenate([one_hot[digit_classes[train_index]]] * copies)
test_images, test_log_det = data.to_model_space(data.dequantize(pixels[test_index], seed=noise))

digits_model = models.glow(
    (1, 8, 8), scales=2, steps_per_scale=budget(4, 2), hidden=budget(64, 32), seed=0, context_dim=10
)
history = train.fit(
    digits_model,
    images,
    context=image_labels,
    steps=budget(1000, 150),
    batch_size=64,
    lr=1e-3,
    schedule="cosine",
    seed=0,
    progress=False,
)
print(f"trained {budget(1000, 150)} steps in {history['wall_time']:.1f} s")

# %%
rows = [data.from_model_space(digits_model.sample(8, seed=k, context=backend.to_device(one_hot[k]))) for k in range(10)]
grid_images = numpy.concatenate(rows)
assert grid_images.shape == (80, 1, 8, 8) and numpy.all(numpy.isfinite(grid_images))
fig = plot.image_grid(
    grid_images, columns=8, value_range=(0.0, float(data.LEVELS)), title="p(x | class): row k = class k"
)
show(fig, "10_digits_by_class.png")

# %% [markdown]
# The class-conditional model is also a classifier by Bayes' rule (the classes are about equally
# frequent): $\hat c(x) = \arg\max_c \log p(x \mid c)$ over the ten classes. Chance is 10%.

# %%
log_p = numpy.stack(
    [
        backend.to_numpy(
            train.log_probs(digits_model, test_images, context=numpy.tile(one_hot[k], (len(test_index), 1)))
        )
        for k in range(10)
    ],
    axis=1,
)
digit_accuracy = float(numpy.mean(log_p.argmax(axis=1) == digit_classes[test_index]))
bits = data.bits_per_dim(log_p[numpy.arange(len(test_index)), digit_classes[test_index]], test_log_det)
print(f"test digits: {bits:.3f} bits/dim given the class; Bayes-rule accuracy {digit_accuracy:.1%}")
# measured: 95% after 1,000 steps, 35% after the quick run's 150 (both well above chance)
assert digit_accuracy > budget(0.8, 0.2)
assert bits < math.log2(data.LEVELS)  # better than uniform over the 17 grey levels

# %% [markdown]
# ## Summary
#
# * A conditional flow is a bijection of $x$ for every context $c$; the log-det is taken in $x$ only,
#   so $p(x \mid c)$ is a normalised density for every $c$, seen in training or not.
# * Couplings read $c$ concatenated to the kept half; MADE gives the context degree 0, and hidden
#   units of degree 0 carry it to the first coordinate.
# * Maximum likelihood on simulated pairs $(\theta, x)$ minimises $\mathbb{E}_x\,\mathrm{KL}(p(\theta \mid x)
#   \,\|\, q(\theta \mid x))$: neural posterior estimation. On a linear-Gaussian simulator the KL to the
#   exact posterior falls from $I(\theta; x)$ (the prior) to a few thousandths of a nat.
# * A class-conditional flow is a generative classifier by Bayes' rule, on moons and digits alike.
