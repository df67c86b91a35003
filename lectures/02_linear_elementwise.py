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
# # Lecture 2 — Linear and elementwise flows
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 6 s; full about 8 s.*
#
# A normalizing flow is an invertible map $f$ from data $x$ to a latent $z = f(x)$ whose
# density we know, usually $p_Z = \mathcal{N}(0, I)$. The change of variables gives the
# density of the data:
#
# $$p_X(x) = p_Z(f(x))\,\lvert\det J_f(x)\rvert, \qquad J_f(x) = \frac{\partial f}{\partial x}.$$
#
# Throughout the course $f: x \mapsto z$ is the **normalizing** direction (minflow's
# `forward`) and $f^{-1}: z \mapsto x$ the **generative** one (minflow's `inverse`, used to
# sample). *Understanding Deep Learning* (UDL, Prince 2023, ch. 16) writes its flows in
# the generative direction, $x = f[z, \phi]$; when we quote UDL we say so.
#
# A flow layer must do two things cheaply: be inverted, and give $\log\lvert\det J\rvert$.
# This lecture studies the two simplest families, which between them contain the two
# ingredients of every flow in the course:
#
# * **linear flows** $z = Wx + b$ *mix* the coordinates; their Jacobian is the constant
#   matrix $W$, and the whole question is what $\det W$ costs;
# * **elementwise flows** $z_i = g(x_i)$ *bend* each coordinate on its own; their Jacobian
#   is diagonal, so the log-determinant is a sum of scalar log-derivatives.
#
# Keep `minflow/flows/linear.py`, `minflow/flows/transformers.py`, `minflow/flows/splines.py`
# and `minflow/flows/elementwise.py` open beside this notebook: their docstrings are the
# written half of this lecture.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, budget, check, show

from minflow import NormalizingFlow, Sequential
from minflow.autodiff import Tensor, no_grad, ops
from minflow.backend import to_device, to_numpy
from minflow.flows import (
    DenseLinear,
    ElementwiseAffine,
    LULinear,
    PiecewiseLinear,
    RationalQuadraticSpline,
    Reverse,
)
from minflow.flows.splines import (
    piecewise_linear,
    piecewise_linear_inverse,
    rational_quadratic_spline,
    rational_quadratic_spline_inverse,
)
from minflow.testing import check_flow

rng = np.random.default_rng(0)
print("quick mode: small samples and sizes" if QUICK else "full mode")

# %% [markdown]
# ## 1. Linear flows: a Gaussian stays Gaussian
#
# Open `minflow/flows/linear.py` and read `DenseLinear.forward`: per sample,
#
# $$z = W x + b, \qquad J_f(x) = W \text{ at every } x, \qquad
#   \log\lvert\det J_f\rvert = \log\lvert\det W\rvert .$$
#
# **Claim.** If $x \sim \mathcal{N}(m, S)$ then $z = Wx + b \sim \mathcal{N}(Wm + b,\; W S W^\top)$.
#
# *Mean and covariance* follow from linearity of expectation:
# $\mathbb{E}[z] = W\mathbb{E}[x] + b = Wm + b$, and
# $\operatorname{Cov}[z] = \mathbb{E}[(W(x-m))(W(x-m))^\top] = W\,\mathbb{E}[(x-m)(x-m)^\top]\,W^\top = WSW^\top$.
#
# *Gaussianity* follows from the change of variables itself, run the other way:
# $x = W^{-1}(z-b)$, so
# $p_Z(z) = \mathcal{N}(W^{-1}(z-b);\, m, S)\,/\,\lvert\det W\rvert$. In the exponent,
# $(W^{-1}(z-b) - m)^\top S^{-1} (W^{-1}(z-b) - m) = (z - \mu)^\top (W S W^\top)^{-1} (z - \mu)$
# with $\mu = Wm + b$, and in the normaliser
# $\lvert\det W\rvert\sqrt{\det S} = \sqrt{\det(W S W^\top)}$: this is exactly the density of
# $\mathcal{N}(\mu, WSW^\top)$.
#
# Let us check it with minflow's own `DenseLinear` flow (the dense linear flow; `minflow.nn.Linear`
# is the network layer, which has no inverse): sample $x$, push it through
# `forward`, and compare the sample covariance of $z$ with $WSW^\top$. The samples are a
# NumPy array; `to_device` copies one to wherever minflow computes (NumPy by default, a GPU
# under `MINFLOW_BACKEND=cupy`: lecture 9) and `to_numpy` brings results back.

# %%
n_samples = budget(200_000, 20_000)
m = np.array([1.0, -0.5])
S = np.array([[1.0, 0.6], [0.6, 0.5]])
x = rng.multivariate_normal(m, S, size=n_samples)

layer = DenseLinear(2, seed=0)
W = np.array([[1.5, -0.8], [0.4, 0.9]])  # any invertible W
b = np.array([0.5, 1.0])
layer.weight.data, layer.bias.data = to_device(W), to_device(b)

with no_grad():
    z, log_det = layer.forward(to_device(x))
z, log_det = to_numpy(z), to_numpy(log_det)

predicted_mean, predicted_cov = W @ m + b, W @ S @ W.T
print("sample mean of z      ", z.mean(axis=0), "  predicted W m + b   ", predicted_mean)
print("sample covariance of z\n", np.cov(z.T), "\npredicted W S W^T\n", predicted_cov)
print("log-det of the layer", log_det[0], " log|det W| =", np.log(abs(np.linalg.det(W))))

# The sample mean and covariance have standard errors of order 1/sqrt(n); 6/sqrt(n) is a safe band.
tolerance = 6.0 * np.abs(predicted_cov).max() / np.sqrt(n_samples)
assert np.allclose(z.mean(axis=0), predicted_mean, atol=tolerance)
assert np.allclose(np.cov(z.T), predicted_cov, atol=2 * tolerance)
assert np.allclose(log_det, np.log(abs(np.linalg.det(W))))

# %% [markdown]
# The picture: the ellipse that holds a Gaussian's mass is carried by $W$ onto the ellipse of
# the new covariance (dashed: drawn from the formulas, not from the samples).


# %%
def ellipse(mean, cov, radius=2.0, points=200):
    """The curve {mean + radius * C u : |u| = 1} with C C^T = cov: a 2-sigma contour."""
    angle = np.linspace(0, 2 * np.pi, points)
    return mean + radius * np.stack([np.cos(angle), np.sin(angle)], 1) @ np.linalg.cholesky(cov).T


fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
shown = slice(0, 3000)
for ax, points, mean, cov, title in (
    (axes[0], x, m, S, r"data $x \sim \mathcal{N}(m, S)$"),
    (axes[1], z, predicted_mean, predicted_cov, r"$z = Wx + b \sim \mathcal{N}(Wm+b,\ WSW^\top)$"),
):
    ax.scatter(points[shown, 0], points[shown, 1], s=2, alpha=0.4)
    curve = ellipse(mean, cov)
    ax.plot(curve[:, 0], curve[:, 1], "k--", lw=1.5, label="2-sigma ellipse from the formula")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
axes[0].legend(loc="lower right", fontsize=8)
fig.tight_layout()
show(fig, "02_linear_gaussian.png")

# %% [markdown]
# **What a linear flow can model.** Put the base $\mathcal{N}(0, I)$ at the latent end. By
# the claim with $x \leftrightarrow z$ swapped, $x = W^{-1}(z - b)$ is Gaussian with mean
# $-W^{-1}b$ and covariance $W^{-1}W^{-\top} = (W^\top W)^{-1}$. So the model density
# `NormalizingFlow(DenseLinear).log_prob` must equal that Gaussian's log-density everywhere:

# %%
model = NormalizingFlow(layer)
points = rng.normal(size=(5, 2)) * 2
gaussian_mean = -np.linalg.solve(W, b)
gaussian_cov = np.linalg.inv(W.T @ W)
centred = points - gaussian_mean
by_hand = -0.5 * np.einsum("bi,ij,bj->b", centred, np.linalg.inv(gaussian_cov), centred) - 0.5 * np.log(
    np.linalg.det(2 * np.pi * gaussian_cov)
)
with no_grad():
    by_model = to_numpy(model.log_prob(to_device(points)))
print("model log p(x)   ", by_model)
print("Gaussian log p(x)", by_hand)
assert np.allclose(by_model, by_hand, atol=1e-12)

# %% [markdown]
# And stacking does not help: two linear layers are one linear layer with matrix
# $W_2W_1$, so a flow made of linear layers only, however deep, still models a single
# full-covariance Gaussian. To model two moons we need *nonlinear* layers between them
# (section 3, and the coupling layers of lecture 3).

# %%
first, second = DenseLinear(3, seed=1), DenseLinear(3, seed=2)
for lin in (first, second):
    lin.bias.data = to_device(rng.normal(size=3))
merged = DenseLinear(3, seed=3)
merged.weight.data = second.weight.data @ first.weight.data
merged.bias.data = second.weight.data @ first.bias.data + second.bias.data
probe = to_device(rng.normal(size=(4, 3)))
with no_grad():
    z_stack, log_det_stack = Sequential([first, second]).forward(probe)
    z_merged, log_det_merged = merged.forward(probe)
assert np.allclose(to_numpy(z_stack), to_numpy(z_merged))
assert np.allclose(to_numpy(log_det_stack), to_numpy(log_det_merged))
print("two linear layers == one linear layer with W = W2 W1: True")

# %% [markdown]
# **The composition rule in $D$ dimensions: log-dets add.** For $f = f_3 \circ f_2 \circ f_1$
# the chain rule gives $J_f(x) = J_{f_3}(h_2)\,J_{f_2}(h_1)\,J_{f_1}(x)$, each layer's Jacobian
# taken at *its own input* ($h_1 = f_1(x)$, $h_2 = f_2(h_1)$), and the determinant of a product
# is the product of the determinants, so
#
# $$\log\lvert\det J_f(x)\rvert = \sum_{k=1}^{3} \log\lvert\det J_{f_k}(h_{k-1})\rvert,\qquad h_0 = x .$$
#
# That sum is all `Sequential` computes. We check it by brute force on three
# random, non-identity layers in $D = 3$: a finite-difference Jacobian of each layer at the
# intermediate points (`minflow.testing.numerical_jacobian`), the product of the three
# $3 \times 3$ matrices, and `slogdet` of that product.

# %%
from minflow.testing import numerical_jacobian

layer_rng = np.random.default_rng(7)
layers = [DenseLinear(3, seed=4), RationalQuadraticSpline(3, bins=6, bound=3.0), ElementwiseAffine(3)]
for layer_k in layers:  # random, non-identity parameters (a fresh spline or affine layer is the identity)
    for p in layer_k.parameters():
        p.data = p.data + to_device(0.5 * layer_rng.normal(size=p.shape), dtype=p.dtype)
chain = Sequential(layers)
x_points = to_device(1.5 * layer_rng.normal(size=(8, 3)))
with no_grad():
    _, chain_log_det = chain.forward(x_points)
    product, h = np.eye(3), x_points
    for layer_k in layers:  # J_f = J_3(h_2) J_2(h_1) J_1(x)
        J_k = to_numpy(numerical_jacobian(lambda u, layer=layer_k: layer.forward(u)[0].data, h))
        product = J_k @ product
        h = layer_k.forward(h)[0]
sign, brute_force = np.linalg.slogdet(product)
composition_error = np.abs(to_numpy(chain_log_det) - brute_force).max()
print("Sequential log-det       ", np.round(to_numpy(chain_log_det), 6))
print("slogdet(J3 J2 J1), f.d.  ", np.round(brute_force, 6))
print(f"max difference {composition_error:.1e}")
assert (sign != 0).all() and composition_error < 1e-6
assert np.abs(to_numpy(chain_log_det)).min() > 0.1  # not volume-preserving: the check has something to check

# %% [markdown]
# ## 2. The price of a determinant: dense $O(D^3)$ versus LU $O(D)$
#
# `DenseLinear.forward` computes $\log\lvert\det W\rvert$ with `ops.slogdet`, which factorises
# $W = PLU$ (Gaussian elimination) and sums $\log\lvert U_{ii}\rvert$: $O(D^3)$ work, and
# the gradient $\partial \log\lvert\det W\rvert / \partial W = W^{-\top}$ costs $O(D^3)$ too.
#
# Glow's trick (Kingma & Dhariwal 2018) is to *store* the factors instead. Open
# `minflow/flows/linear.py` and read `LULinear`: $W = LU$ with $L$ unit lower triangular
# and $U$ upper triangular with diagonal $e^{s_i}$. The determinant of a triangular matrix
# is the product of its diagonal, and $\det(LU) = \det L \det U$, so
#
# $$\log\lvert\det W\rvert = \underbrace{\log 1}_{L} + \sum_i s_i \quad\text{— } O(D).$$
#
# First the formula, checked against a brute-force `slogdet` of the matrix $W = LU$ for
# random (non-identity) parameters:

# %%
D = 8
lu = LULinear(D)
for p in lu.parameters():
    p.data = p.data + to_device(0.5 * rng.normal(size=p.shape))
with no_grad():
    _, lu_log_det = lu.forward(to_device(rng.normal(size=(3, D))))
    W_lu = to_numpy(lu.weight)
lu_log_det = to_numpy(lu_log_det)
sign, brute_force = np.linalg.slogdet(W_lu)
print("LULinear log-det", lu_log_det[0], "   slogdet(L U)", brute_force, "   sign", sign)
assert np.allclose(lu_log_det, brute_force, atol=1e-12)
assert np.isclose(lu_log_det[0], to_numpy(lu.log_diag).sum())
assert sign > 0  # det W = exp(sum s) > 0: LU reaches only matrices with positive determinant

# %% [markdown]
# Now the cost. We time the log-determinant each layer computes in its `forward`: the
# dense `ops.slogdet(W)` against the LU layer's `ops.sum(log_diag)`, for growing $D$
# (best of several repeats, so a busy machine adds little noise).
#
# *A note on the inverse.* In exact arithmetic $W^{-1}z$ costs two triangular solves,
# $O(D^2)$ per sample for LU. NumPy has no triangular solver, so on this backend
# `ops.solve_triangular` calls the general $O(D^3)$ solver (see the comment in
# `minflow/autodiff/ops.py`): the inverse is not where the CPU speed-up shows, so we time
# only the log-determinant.
#
# We time on the CPU whatever backend the lecture runs on: the matrices are copied to the
# host first. This section is about arithmetic; a GPU runs small ops asynchronously, so its
# timings would need a synchronisation per call and would mostly measure launch overhead
# (lecture 9).


# %%
def best_time(fn, repeats=5, min_seconds=0.01):
    """Seconds per call: the best of ``repeats`` runs of as many calls as fit in min_seconds."""
    fn()
    best = np.inf
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


dims = budget([16, 32, 64, 128, 256, 512], [16, 32, 64, 128, 256])
dense_times, lu_times = [], []
with no_grad():
    for dim in dims:
        weight = Tensor(to_numpy(DenseLinear(dim, seed=0).weight))  # host copies of the layers' parameters
        log_diag = Tensor(to_numpy(LULinear(dim).log_diag))
        dense_times.append(best_time(lambda weight=weight: ops.slogdet(weight)))
        lu_times.append(best_time(lambda log_diag=log_diag: ops.sum(log_diag)))
for dim, t_dense, t_lu in zip(dims, dense_times, lu_times):
    print(
        f"D = {dim:4d}   dense slogdet {t_dense * 1e6:9.1f} us   LU sum {t_lu * 1e6:6.1f} us   ratio {t_dense / t_lu:7.1f}"
    )

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.loglog(dims, np.array(dense_times) * 1e6, "o-", label=r"DenseLinear: slogdet(W), $O(D^3)$")
ax.loglog(dims, np.array(lu_times) * 1e6, "s-", label=r"LULinear: $\sum_i s_i$, $O(D)$")
reference = np.array(dims, dtype=float)
ax.loglog(
    reference,
    dense_times[-1] * 1e6 * (reference / reference[-1]) ** 3,
    "k:",
    lw=1,
    label=r"slope 3 (through the last point)",
)
ax.set_xticks(dims, [str(dim) for dim in dims])
ax.xaxis.set_minor_locator(plt.NullLocator())  # no crowded minor labels on the log axis
ax.set_xlabel("dimension D")
ax.set_ylabel("time per log-det (microseconds)")
ax.set_title("cost of log|det W| per forward pass")
ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "02_logdet_cost.png")

# %% [markdown]
# What the measurements say, and what the cell below checks: at the largest $D$ the dense
# log-determinant is more than ten times slower than the LU one; over the range of $D$ the
# dense cost grows by more than 30x, while the LU cost (a sum of $D$ numbers, dominated by
# Python's fixed overhead at these sizes) grows by less than 4x. At small $D$ both are
# overhead; the dense curve bends towards the slope-3 line as $D$ grows.

# %%
ratio_at_largest = dense_times[-1] / lu_times[-1]
dense_growth, lu_growth = dense_times[-1] / dense_times[0], lu_times[-1] / lu_times[0]
print(f"ratio at D = {dims[-1]}: {ratio_at_largest:.0f}; dense grew {dense_growth:.0f}x, LU grew {lu_growth:.1f}x")
assert ratio_at_largest > 10 and dense_growth > 30 and lu_growth < 4

# %% [markdown]
# Which matrices can `LULinear` reach? $U_{ii} = e^{s_i} > 0$, so exactly those with
# positive leading principal minors (the docstring explains why). Every invertible matrix
# is $PLUS$ with a permutation $P$ and a diagonal of signs $S$; a `Permutation` between
# layers supplies $P$, and for density modelling the sign never matters.
#
# ## 3. Elementwise flows and the piecewise-linear map (UDL eq. 16.12)
#
# An elementwise flow applies a strictly monotonic scalar map — a *transformer* — to each
# coordinate: $z_i = g(x_i; \theta_i)$. Coordinate $i$ of $z$ depends on $x_i$ only, so
#
# $$J_f = \operatorname{diag}\big(g'(x_1), \dots, g'(x_D)\big), \qquad
#   \log\lvert\det J_f\rvert = \sum_i \log\lvert g'(x_i)\rvert \quad\text{— } O(D).$$
#
# Every transformer in `minflow/flows/transformers.py` and `minflow/flows/splines.py` returns
# the pair `(g(x), log|g'(x)|)`, so the log-determinant is one `sum` away.
#
# UDL (section 16.3.2) builds one from $K$ bins of equal width $1/K$ on $[0, 1]$ and
# positive masses $\phi_1, \dots, \phi_K$ summing to 1. UDL applies it as a layer of its
# generative map; as a monotone bijection of $[0,1]$ it serves either direction, and
# minflow's `PiecewiseLinear` flow uses it as $z = f(x)$. A point $h$ lies in bin
# $b = \lfloor hK \rfloor + 1$ and (UDL eq. 16.12)
#
# $$f(h) = \sum_{k=1}^{b-1} \phi_k + (hK - b + 1)\,\phi_b .$$
#
# So $f$ sends the knot $k/K$ to the cumulative mass $\phi_1 + \dots + \phi_k$; in particular
# $f(0) = 0$ and $f(1) = \sum_k\phi_k = 1$. Inside bin $b$ it is a straight line of slope
# $f'(h) = K\phi_b > 0$, hence increasing and invertible. The inverse is analytic: find the
# bin $b$ whose cumulative masses bracket $y$, then solve the line for $h$.
#
# Read `piecewise_linear` and `piecewise_linear_inverse` in `minflow/flows/splines.py`,
# then evaluate them with the masses $\phi = (0.2, 0.1, 0.4, 0.05, 0.25)$:

# %%
phi = np.array([0.2, 0.1, 0.4, 0.05, 0.25])
K = len(phi)
h = np.linspace(0.0, 1.0, 1001)
y, log_derivative = piecewise_linear(h, phi)
y, log_derivative = y.data, log_derivative.data

knots = np.arange(K + 1) / K
cumulative = np.concatenate([[0.0], np.cumsum(phi)])
y_at_knots = piecewise_linear(knots, phi)[0].data
print("f at the knots k/5:", y_at_knots, "\ncumulative masses: ", cumulative)
middles = (np.arange(K) + 0.5) / K
slopes = np.exp(piecewise_linear(middles, phi)[1].data)
print("f' in each bin:", slopes, "  5 phi_b:", K * phi)
h_back = piecewise_linear_inverse(y, phi)[0].data

assert y[0] == 0.0 and y[-1] == 1.0  # exactly: minflow normalises the knots so that C_K = 1
assert np.allclose(y_at_knots, cumulative, atol=1e-15)
assert np.allclose(slopes, K * phi)
assert np.all(np.diff(y) > 0)  # strictly increasing
assert np.allclose(h_back, h, atol=1e-14)  # the analytic inverse undoes f

# %% [markdown]
# **A note on the printed equation.** UDL's own notebook 16.2 warns that the book's first
# printing has a mistake in eq. 16.12 (its comment: check the errata "or figure it out
# yourself!"). The slide of the course lecture `004_…` copies UDL's formula with the second
# term as $(hK - b)\,\phi_b$, without the $+1$, and that version is wrong. Figure it out: with
# $b = \lfloor hK \rfloor + 1$, the number $hK - b$ lies in $[-1, 0)$, so the printed map is the
# correct one minus $\phi_b$. It starts at $f(0) = -\phi_1 < 0$, climbs through each bin only to
# the cumulative mass *before* that bin, jumps by $\phi_b - \phi_{b+1}$ at the knot after bin $b$
# (down wherever the next bin is heavier) and ends at $1 - \phi_K$: not continuous, not
# increasing, not onto $[0, 1]$, so not a flow. The $+1$ makes $hK - b + 1 \in [0, 1)$, the
# fraction of the way through bin $b$, which is what the sentence after the equation says the
# second term is. Use the form above; the cell checks the printed one against it.

# %%
bins = np.minimum(np.floor(h * K).astype(int) + 1, K)  # b for each h (h = 1 in the last bin)
printed = cumulative[bins - 1] + (h * K - bins) * phi[bins - 1]  # eq. 16.12 without the + 1
print(
    f"printed form: f(0) = {printed[0]:.2f}, range [{printed.min():.2f}, {printed.max():.2f}], "
    f"largest drop {-np.diff(printed).min():.2f}"
)
assert np.allclose(printed, y - phi[bins - 1], atol=1e-15)  # the correct map minus phi_b
assert printed[0] == -phi[0] and np.any(np.diff(printed) < 0)  # negative at 0, and not increasing
assert abs(printed[-1] - (1 - phi[-1])) < 1e-15  # and it ends short of 1

# %% [markdown]
# A flow's density view makes this map memorable. Take a **uniform** base on $[0,1]$ in
# the normalizing direction, $z = f(x)$: then $p_X(x) = p_Z(f(x))\,f'(x) = K\phi_b$ in bin
# $b$ — the piecewise-linear flow is a histogram with bar heights $K\phi_b$. Sampling is the
# generative direction $x = f^{-1}(z)$, $z \sim U(0,1)$; the cell checks the histogram of
# the samples against $K\phi_b$.

# %%
n_uniform = budget(200_000, 20_000)
x_samples = piecewise_linear_inverse(rng.random(n_uniform), phi)[0].data
histogram, _ = np.histogram(x_samples, bins=K, range=(0, 1), density=True)
print("histogram of f^{-1}(U(0,1)):", np.round(histogram, 3), "  K phi_b:", K * phi)
assert np.allclose(histogram, K * phi, atol=8 * np.sqrt(K * phi.max() * K / n_uniform))

# %% [markdown]
# The figure below reproduces UDL's figure of this map: (a) the slope $K\phi_b$ of each
# bin, (b) the map $f$ itself, with each equal-width bin stretched to height $\phi_b$,
# (c) its inverse, the same curve reflected in the diagonal, and (d) the density of
# $x = f^{-1}(z)$ for uniform $z$.

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.7))
colors = plt.cm.viridis(np.linspace(0.1, 0.9, K))
for k in range(K):
    axes[0].bar(middles[k], K * phi[k], width=1 / K, color=colors[k], edgecolor="k")
    inside = (h >= knots[k]) & (h <= knots[k + 1])
    axes[1].plot(h[inside], y[inside], color=colors[k], lw=2.5)
    axes[2].plot(y[inside], h[inside], color=colors[k], lw=2.5)
    axes[3].bar(middles[k], histogram[k], width=1 / K, color=colors[k], alpha=0.7, edgecolor="k")
axes[0].set(title=r"(a) slope in each bin, $K\phi_b$", xlabel="h", ylabel=r"$f'(h)$", xlim=(0, 1))
axes[1].plot(knots, cumulative, "ko", ms=4)
for k in range(1, K):
    axes[1].axhline(cumulative[k], color="0.8", lw=0.8, zorder=0)
    axes[1].axvline(knots[k], color="0.8", lw=0.8, zorder=0)
axes[1].set(title=r"(b) $f(h)$: knots $k/K \mapsto \phi_1+\dots+\phi_k$", xlabel="h", ylabel="f(h)")
axes[2].plot([0, 1], [0, 1], "k:", lw=0.8)
axes[2].set(title=r"(c) the inverse $f^{-1}(y)$", xlabel="y", ylabel=r"$f^{-1}(y)$")
axes[3].step(knots, np.append(K * phi, K * phi[-1]), where="post", color="k", lw=1.2, label=r"$K\phi_b$")
axes[3].set(title=r"(d) histogram of $f^{-1}(U(0,1))$", xlabel="x", ylabel="density")
axes[3].legend(fontsize=8)
for ax in axes[1:3]:
    ax.set_aspect("equal")
fig.tight_layout()
show(fig, "02_piecewise_linear.png")

# %% [markdown]
# The price of straight pieces: $f'$ jumps at every knot, so the density of a
# piecewise-linear flow is a staircase, and $f$ only works on $[0, 1]$ (a real-valued
# input needs a sigmoid in front). The next transformer fixes both.
#
# ## 4. The rational-quadratic spline, with identity tails
#
# Neural Spline Flows (Durkan et al. 2019) replace each straight piece by a ratio of two
# quadratics. The spline lives on $[-B, B]$ with $K$ bins of widths $w_k$ and heights $h_k$
# (each summing to $2B$) and a positive derivative $d_k$ at every knot $(x_k, y_k)$. For
# $x$ in bin $k$, with $\xi = (x - x_k)/w_k$ and the bin's slope $s_k = h_k / w_k$,
#
# $$g(x) = y_k + \frac{h_k\,[\,s_k\xi^2 + d_k\,\xi(1-\xi)\,]}{s_k + (d_{k+1} + d_k - 2s_k)\,\xi(1-\xi)} ,$$
#
# which passes through the knots with slope exactly $d_k$ there, so $g'$ is continuous.
# Outside $[-B, B]$ it is the identity ("linear tails"), and with $d_0 = d_K = 1$ the
# slope is continuous at $\pm B$ as well. Its inverse solves a quadratic in $\xi$
# analytically. The derivation (and the numerically stable root) is in the docstring of
# `rational_quadratic_spline` in `minflow/flows/splines.py`; read it now.
#
# We set the parameters by hand ($B = 3$, $K = 4$):

# %%
B = 3.0
widths = np.array([1.0, 2.0, 2.0, 1.0])  # sum 2B
heights = np.array([2.0, 0.5, 1.5, 2.0])  # sum 2B
derivatives = np.array([1.0, 0.4, 2.5, 0.7, 1.0])  # d_0 = d_K = 1: matches the identity tails
x_grid = np.linspace(-5, 5, 2001)
g, log_g_prime = rational_quadratic_spline(x_grid, widths, heights, derivatives, B)
g, g_prime = g.data, np.exp(log_g_prime.data)

knot_x = -B + np.concatenate([[0.0], np.cumsum(widths)])
knot_y = -B + np.concatenate([[0.0], np.cumsum(heights)])
g_knots, log_d_knots = rational_quadratic_spline(knot_x, widths, heights, derivatives, B)
tails = np.abs(x_grid) > B
eps = 1e-6
finite_difference = (
    rational_quadratic_spline(x_grid + eps, widths, heights, derivatives, B)[0].data
    - rational_quadratic_spline(x_grid - eps, widths, heights, derivatives, B)[0].data
) / (2 * eps)
near_knots = np.abs(x_grid[:, None] - knot_x[None, :]).min(axis=1) < 2 * eps  # g'' jumps at a knot: skip those points
x_back = rational_quadratic_spline_inverse(g, widths, heights, derivatives, B)[0].data

print("g at the knots:", g_knots.data, "  knot heights y_k:", knot_y)
print("g' at the knots:", np.exp(log_d_knots.data), "  d_k:", derivatives)
assert np.allclose(g_knots.data, knot_y, atol=1e-12)
assert np.allclose(np.exp(log_d_knots.data), derivatives)
assert np.all(g[tails] == x_grid[tails]) and np.all(log_g_prime.data[tails] == 0.0)  # exactly the identity
assert np.allclose(g_prime[~near_knots], finite_difference[~near_knots], atol=1e-6)  # the log-derivative formula
assert np.all(np.diff(g) > 0)
assert np.allclose(x_back, x_grid, atol=1e-12)  # the analytic inverse

# %% [markdown]
# And the slope has no jump at any knot: just left and just right of each knot (and of
# $\pm B$, where the spline meets the tails) it is $d_k$ to within $10^{-6}$.

# %%
for side in (-1e-7, 1e-7):
    slope_beside = np.exp(rational_quadratic_spline(knot_x + side, widths, heights, derivatives, B)[1].data)
    assert np.allclose(slope_beside, derivatives, atol=1e-6)
print("g' is continuous at every knot: True")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
axes[0].plot(x_grid, x_grid, color="0.75", lw=1, ls="--", label="identity")
axes[0].plot(x_grid, g, lw=2, label="spline g(x)")
axes[0].plot(knot_x, knot_y, "ko", ms=4, label="knots $(x_k, y_k)$")
for edge in (-B, B):
    axes[0].axvline(edge, color="0.6", lw=0.8, ls=":")
    axes[1].axvline(edge, color="0.6", lw=0.8, ls=":")
axes[0].set(title=rf"rational-quadratic spline, $K={len(widths)}$, $B={B:g}$", xlabel="x", ylabel="g(x)")
axes[0].legend(fontsize=8)
axes[0].set_aspect("equal")
axes[1].plot(x_grid, g_prime, lw=2, label="g'(x) (formula)")
axes[1].plot(knot_x, derivatives, "ko", ms=4, label="$d_k$ at the knots")
axes[1].set(title="its derivative: positive, continuous, 1 in the tails", xlabel="x", ylabel="g'(x)")
axes[1].legend(fontsize=8)
fig.tight_layout()
show(fig, "02_rq_spline.png")

# %% [markdown]
# ## 5. Elementwise flows as layers
#
# `minflow/flows/elementwise.py` wraps each transformer into a flow with trainable
# parameters (one set per dimension): `Elementwise(transformer, dim)`, with the named
# instances `ElementwiseAffine`, `PiecewiseLinear`, `RationalQuadraticSpline`, .... Their
# parameters (one array `theta` of shape `(dim, params_per_dim)`) are *unconstrained*, mapped to
# valid ones (softmax for masses and bin sizes, softplus for derivatives), so an optimizer
# can move them freely. Each starts as the identity map; we perturb them and let
# `minflow.testing.check_flow` verify every property: round trips, the log-determinant
# against a finite-difference Jacobian, batch independence, and gradients.
#
# A useful pattern is already the skeleton of a neural spline flow: a linear layer that
# mixes, an elementwise spline that bends, a permutation.


# %%
def perturbed(flow, scale=0.5, seed=0):
    generator = np.random.default_rng(seed)
    for p in flow.parameters():
        p.data = p.data + to_device(scale * generator.normal(size=p.shape), dtype=p.dtype)
    return flow


for name, flow in {
    "ElementwiseAffine": perturbed(ElementwiseAffine(3)),
    "PiecewiseLinear": perturbed(PiecewiseLinear(3, bins=5)),
    "RationalQuadraticSpline": perturbed(RationalQuadraticSpline(3, bins=6, bound=3.0)),
    "LULinear + spline + Reverse": perturbed(Sequential([LULinear(3), RationalQuadraticSpline(3), Reverse(3)])),
}.items():
    check_flow(flow)  # raises AssertionError, naming the property, if anything is wrong
    print(f"check_flow({name}): all properties hold")

# %% [markdown]
# ## Exercises
#
# ### Exercise 2.1 — LULinear's inverse: forward and back substitution
#
# `LULinear` maps $z = LUx + b$. Inverting it never needs $W^{-1}$: subtract $b$, solve
# $Lw = z - b$ top row first (**forward substitution**: $L$ is unit lower triangular, so
# $w_i = (z - b)_i - \sum_{j<i} L_{ij} w_j$), then $Ux = w$ bottom row first (**back
# substitution**: $x_i = (w_i - \sum_{j>i} U_{ij} x_j) / U_{ii}$). That is $O(D^2)$ per sample
# against $O(D^3)$ for a general solve. Write `lu_inverse(z, L, U, b)` for a batch `z` of shape
# $(B, D)$ with NumPy, one Python loop over the $D$ coordinates per solve (vectorised over the
# batch) and no `np.linalg`. The check compares it with `lu.inverse` of the randomised `lu` above
# ($D = 8$) on 5 random points.


# %% nbgrader={"grade": false, "grade_id": "ex2_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def lu_inverse(z, L, U, b):
    ### BEGIN SOLUTION
    dim = z.shape[1]
    w = np.zeros_like(z)
    for i in range(dim):  # L w = z - b, top row first; L_ii = 1
        w[:, i] = z[:, i] - b[i] - w[:, :i] @ L[i, :i]
    x = np.zeros_like(z)
    for i in reversed(range(dim)):  # U x = w, bottom row first
        x[:, i] = (w[:, i] - x[:, i + 1 :] @ U[i, i + 1 :]) / U[i, i]
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
z_lu = rng.normal(size=(5, D))
with no_grad():
    L_lu, U_lu = to_numpy(lu.L), to_numpy(lu.U)
    x_lu_reference = to_numpy(lu.inverse(to_device(z_lu))[0])


def lu_inverse_is_right():
    answer = lu_inverse(z_lu, L_lu, U_lu, to_numpy(lu.bias))
    # Two float64 solves of this well-conditioned 8 x 8 system agree to about 1e-13; a wrong
    # formula (a missing bias, the solves swapped, a wrong diagonal) is off by order 1.
    return (
        answer is not None
        and np.shape(answer) == z_lu.shape
        and np.allclose(answer, x_lu_reference, atol=1e-9)
        and "linalg" not in inspect.getsource(lu_inverse)
    )


check(
    "Exercise 2.1",
    lu_inverse_is_right,
    "subtract b; w_i = (z - b)_i - w[:, :i] @ L[i, :i] for i = 0..D-1; then "
    "x_i = (w_i - x[:, i+1:] @ U[i, i+1:]) / U[i, i] for i = D-1..0",
)

# %% [markdown]
# ### Exercise 2.2 — invert one bin
#
# Write `inverse_in_bin(y, b, phi)`: for values $y$ known to lie in bin $b$ (1-based, as in
# UDL), return $h = f^{-1}(y)$ by solving the straight line of eq. 16.12 for $h$. Use NumPy
# only (not minflow).


# %% nbgrader={"grade": false, "grade_id": "ex2_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def inverse_in_bin(y, b, phi):
    ### BEGIN SOLUTION
    # In bin b, y = C_(b-1) + (hK - b + 1) phi_b with C_(b-1) = phi_1 + ... + phi_(b-1).
    # Solve for h: h = (b - 1 + (y - C_(b-1)) / phi_b) / K.
    below = np.sum(phi[: b - 1])  # C_(b-1)
    return (b - 1 + (y - below) / phi[b - 1]) / len(phi)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
y_in_bin_3 = np.linspace(0.3, 0.7, 9, endpoint=False)  # C_2 = 0.3 <= y < C_3 = 0.7


def inverse_in_bin_is_right():
    answer = inverse_in_bin(y_in_bin_3, 3, phi)
    return (
        answer is not None
        and np.allclose(answer, piecewise_linear_inverse(y_in_bin_3, phi)[0].data, atol=1e-12)
        and np.allclose(piecewise_linear(np.asarray(answer), phi)[0].data, y_in_bin_3, atol=1e-12)
    )


check(
    "Exercise 2.2",
    inverse_in_bin_is_right,
    "h = (b - 1 + (y - C_{b-1}) / phi_b) / K, with C_{b-1} the mass of the bins before b",
)

# %% [markdown]
# ### Exercise 2.3 — eq. 16.12, its log-derivative and its inverse, for a whole array
#
# Write UDL's piecewise-linear map for an array `h` of any shape with values in $[0, 1]$, in NumPy
# and without a Python loop over the points (a loop over the $K$ bins is fine, none is needed):
#
# - `my_piecewise_linear(h, phi)` returns `(y, log_derivative)`: $y = f(h)$ from eq. 16.12 and
#   $\log f'(h) = \log(K\phi_b)$, both of the shape of `h` (a point $h = 1$ lies in the last bin);
# - `my_piecewise_linear_inverse(y, phi)` returns `(h, log_derivative)`: $h = f^{-1}(y)$ and
#   $\log\lvert dh/dy\rvert = -\log(K\phi_b)$, where $b$ is the bin whose cumulative masses bracket
#   $y$, $C_{b-1} \le y < C_b$.
#
# The check compares both with minflow's `piecewise_linear` and `piecewise_linear_inverse` on
# random masses and 1,000 random points, and runs the round trip. Hints: `np.floor`, `np.cumsum`,
# fancy indexing `phi[b - 1]`; for the inverse, `np.searchsorted` on the cumulative masses.


# %% nbgrader={"grade": false, "grade_id": "ex2_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_piecewise_linear(h, phi):
    ### BEGIN SOLUTION
    bins = len(phi)
    b = np.minimum(np.floor(h * bins).astype(int) + 1, bins)  # the bin of each h; h = 1 is in the last one
    below = np.concatenate([[0.0], np.cumsum(phi)])[b - 1]  # C_(b-1): the mass of the bins before b
    return below + (h * bins - b + 1) * phi[b - 1], np.log(bins * phi[b - 1])
    ### END SOLUTION


def my_piecewise_linear_inverse(y, phi):
    ### BEGIN SOLUTION
    bins = len(phi)
    cumulative = np.concatenate([[0.0], np.cumsum(phi)])  # C_0, ..., C_K
    b = np.clip(np.searchsorted(cumulative, y, side="right"), 1, bins)  # C_(b-1) <= y < C_b
    return (b - 1 + (y - cumulative[b - 1]) / phi[b - 1]) / bins, -np.log(bins * phi[b - 1])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
masses = np.random.default_rng(7).dirichlet(np.ones(6))  # K = 6 random bin masses summing to 1
h_points = np.concatenate([[0.0, 1.0], np.random.default_rng(8).random(1000)])
y_points = np.random.default_rng(9).random(1000)
y_reference, forward_log_reference = (to_numpy(v.data) for v in piecewise_linear(h_points, masses))
h_reference, inverse_log_reference = (to_numpy(v.data) for v in piecewise_linear_inverse(y_points, masses))


def piecewise_linear_is_right():
    y_mine, forward_log_mine = my_piecewise_linear(h_points, masses)
    h_mine, inverse_log_mine = my_piecewise_linear_inverse(y_points, masses)
    return (
        np.shape(y_mine) == h_points.shape
        and np.allclose(y_mine, y_reference, atol=1e-12)
        and np.allclose(forward_log_mine, forward_log_reference, atol=1e-12)
        and np.shape(h_mine) == y_points.shape
        and np.allclose(h_mine, h_reference, atol=1e-12)
        and np.allclose(inverse_log_mine, inverse_log_reference, atol=1e-12)
        and np.allclose(my_piecewise_linear(h_mine, masses)[0], y_points, atol=1e-12)  # the round trip
    )


check(
    "Exercise 2.3",
    piecewise_linear_is_right,
    "b = min(floor(hK) + 1, K), then C_(b-1) + (hK - b + 1) phi_b; the inverse finds b with np.searchsorted "
    "(side='right') on C_0..C_K and solves the line, as in Exercise 2.2",
)

# %% [markdown]
# ## Summary
#
# * A linear flow keeps Gaussians Gaussian ($\mathcal{N}(m,S) \mapsto \mathcal{N}(Wm+b, WSW^\top)$);
#   stacked linear layers collapse to one. Linear layers mix coordinates; they cannot bend.
# * A dense $\log\lvert\det W\rvert$ costs $O(D^3)$; storing $W = LU$ makes it
#   $\sum_i s_i$, $O(D)$ — structure in the Jacobian is what makes flows affordable.
# * Elementwise flows bend each coordinate; their Jacobian is diagonal and the log-det a sum.
#   UDL's piecewise-linear map is a learnable histogram; the rational-quadratic spline is
#   smooth, analytically invertible, and the identity outside $[-B, B]$.
# * Neither family alone can model two moons: linear layers cannot bend, elementwise layers
#   cannot let one coordinate depend on another. Lecture 3 combines them: a *coupling layer*
#   transforms half of the coordinates elementwise, with parameters computed from the other half.
