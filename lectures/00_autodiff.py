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
# # Lecture 0 — Autodiff from scratch
#
# *Optional: how minflow computes gradients. No later lecture needs it: a reader of UDL ch. 16
# starts at lecture 1.*
#
# *Run time on 2 CPU cores, as a notebook (`make lectures`, kernel start included): quick mode
# (`MINFLOW_QUICK=1`, what the tests run) about 5 s; full about 5 s.*
#
# A normalizing flow is trained by gradient descent on its negative log-likelihood, a
# scalar that depends on thousands of parameters through hundreds of array operations.
# minflow computes those gradients with a small **reverse-mode automatic differentiation**
# engine, `minflow/autodiff/`: two files, `tensor.py` (the graph and `backward`) and
# `ops.py` (each primitive next to its derivative), small enough to read in one sitting. This lecture
# builds the idea by hand, then reads it in minflow, then proves minflow right twice:
# against HIPS `autograd` and against finite differences.
#
# Plan: (1) a computation graph and its backward pass by hand; (2) vector-Jacobian
# products; (3) broadcasting and `unbroadcast`; (4) the reverse topological order without
# recursion; (5) checking against `autograd`; (6) checking against finite differences,
# and the step size trade-off.

# %%
import math
import sys

import autograd
import autograd.numpy as anp
import matplotlib.pyplot as plt
import numpy as np
from _common import QUICK, budget, check, show

import minflow.testing
from minflow.autodiff import OPS, Tensor, ops, reverse_topological_order, unbroadcast

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. A computation graph, differentiated by hand
#
# Take two scalars and a few primitive operations:
#
# $$v_1 = x y,\quad v_2 = e^{x},\quad v_3 = v_1 + v_2,\quad v_4 = \tanh v_3,\quad L = v_4\, y .$$
#
# This is a **computation graph**: nodes are values, edges say which value fed which
# operation. Note that $x$ and $y$ are each used *twice*.
#
# Reverse mode computes the **adjoint** $\bar v = \partial L / \partial v$ of every node,
# from $L$ backwards. Start with $\bar L = 1$. A node's adjoint is the sum, over the
# operations that consumed it, of (the consumer's adjoint) times (the local derivative):
#
# $$\bar v_4 = \bar L\, y,\quad \bar v_3 = \bar v_4 (1 - v_4^2),\quad \bar v_1 = \bar v_2 = \bar v_3,\quad
#   \bar x = \bar v_1\, y + \bar v_2\, e^{x},\quad \bar y = \bar v_1\, x + \bar L\, v_4 .$$
#
# The two terms in $\bar x$ and in $\bar y$ are the two uses: **fan-out in the forward
# pass means a sum in the backward pass.** Here it is, line by line, in plain Python.

# %%
x, y = 0.5, -1.2

# forward pass: compute and remember every intermediate value
v1 = x * y
v2 = math.exp(x)
v3 = v1 + v2
v4 = math.tanh(v3)
L = v4 * y

# backward pass: adjoints, in reverse order
L_bar = 1.0
v4_bar = L_bar * y
y_bar = L_bar * v4  # first use of y (in L = v4 * y)
v3_bar = v4_bar * (1 - v4**2)
v1_bar = v3_bar  # d(v1 + v2)/dv1 = 1
v2_bar = v3_bar  # d(v1 + v2)/dv2 = 1
x_bar = v2_bar * v2  # d exp(x)/dx = exp(x) = v2
x_bar += v1_bar * y  # second use of x (in v1 = x * y)
y_bar += v1_bar * x  # second use of y
print(f"L = {L:.6f},  dL/dx = {x_bar:.6f},  dL/dy = {y_bar:.6f}")

# %% [markdown]
# The same computation with minflow `Tensor`s. Every operation on a tensor that
# `requires_grad` records a node (the primitive, its inputs, and the arrays its derivative
# needs); `backward()` then does exactly what we did by hand.

# %%
xt = Tensor(x, requires_grad=True)
yt = Tensor(y, requires_grad=True)
Lt = ops.tanh(xt * yt + ops.exp(xt)) * yt
Lt.backward()
print(f"minflow: L = {Lt.item():.6f},  dL/dx = {xt.grad.item():.6f},  dL/dy = {yt.grad.item():.6f}")
assert abs(Lt.item() - L) < 1e-15
assert abs(xt.grad.item() - x_bar) < 1e-14 and abs(yt.grad.item() - y_bar) < 1e-14


# %%
def draw_graph():
    """The graph of section 1: forward values in black, adjoints (dL/dv) in red."""
    nodes = {  # name: (position, label, value, adjoint)
        "x": ((0, 1.0), "$x$", x, x_bar),
        "y": ((0, -1.0), "$y$", y, y_bar),
        "v2": ((1.6, 1.7), "$v_2 = e^x$", v2, v2_bar),
        "v1": ((1.6, 0.0), "$v_1 = x y$", v1, v1_bar),
        "v3": ((3.2, 0.85), "$v_3 = v_1 + v_2$", v3, v3_bar),
        "v4": ((4.8, 0.85), "$v_4 = \\tanh v_3$", v4, v4_bar),
        "L": ((6.4, -0.2), "$L = v_4 y$", L, L_bar),
    }
    edges = [("x", "v1"), ("y", "v1"), ("x", "v2"), ("v1", "v3"), ("v2", "v3"), ("v3", "v4"), ("v4", "L"), ("y", "L")]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for start, end in edges:
        ax.annotate(
            "",
            xy=nodes[end][0],
            xytext=nodes[start][0],
            arrowprops={"arrowstyle": "-|>", "color": "0.5", "lw": 1.2, "shrinkA": 32, "shrinkB": 32},
        )
    for (px, py), label, value, adjoint in nodes.values():
        ax.text(
            px,
            py,
            f"{label}\n= {value:.4f}",
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "0.3"},
        )
        ax.text(px, py - 0.42, f"$\\bar{{v}}$ = {adjoint:.4f}", ha="center", va="top", color="C3", fontsize=9)
    ax.set(xlim=(-0.8, 7.2), ylim=(-1.7, 2.3), title="forward values (black) and adjoints dL/dv (red)")
    ax.axis("off")
    return fig


fig = draw_graph()
show(fig, "00_graph.png")

# %% [markdown]
# ## 2. Vector-Jacobian products
#
# With arrays, a primitive $y = F(x)$ maps $\mathbb R^n \to \mathbb R^m$ and its local
# derivative is an $m \times n$ Jacobian $J$. The chain rule for a scalar loss reads
#
# $$\bar x = J^\top \bar y \qquad (\bar x_j = \textstyle\sum_i \bar y_i\, \partial y_i / \partial x_j),$$
#
# a **vector-Jacobian product** (VJP): the cotangent $\bar y$ (same shape as $y$) times the
# Jacobian. Reverse mode never forms $J$. For `exp`, $J$ is diagonal and the VJP is
# $\bar y \odot e^x$, cost $O(n)$ instead of $O(n^2)$; for `y = a @ b` the VJPs are
# $\bar y\, b^\top$ and $a^\top \bar y$. Open `minflow/autodiff/ops.py`: each primitive is
# registered with `@primitive(name, vjp)`, its VJP one line above its forward. The
# registry `OPS` is the complete list of what the engine can differentiate:

# %%
print(f"{len(OPS)} primitives:", ", ".join(sorted(OPS)))
assert {"add", "mul", "exp", "tanh", "matmul", "sum", "logsumexp", "slogdet"} <= set(OPS)

# %% [markdown]
# One backward pass with cotangent $\bar y = e_i$ (a one-hot vector) returns row $i$ of
# the Jacobian. So reverse mode gets a full Jacobian in $m$ passes, and the gradient of a
# scalar ($m = 1$) in **one** pass, whatever $n$ is: that is why it is the mode for
# training. Here is the Jacobian of $y = \tanh(W x)$ built row by row, checked against the
# formula $J = \mathrm{diag}(1 - y^2)\, W$.

# %%
rng = np.random.default_rng(0)
W = rng.standard_normal((3, 4))
x_vec = rng.standard_normal((4, 1))
rows = []
for i in range(3):
    xv = Tensor(x_vec, requires_grad=True)
    yv = ops.tanh(Tensor(W) @ xv)  # (3, 1)
    cotangent = np.zeros((3, 1))
    cotangent[i] = 1.0
    yv.backward(cotangent)
    rows.append(xv.grad[:, 0])
J_reverse = np.stack(rows)
y_vec = np.tanh(W @ x_vec)
J_formula = (1 - y_vec**2) * W
assert np.allclose(J_reverse, J_formula, atol=1e-14)
print("Jacobian of tanh(W x) from 3 backward passes:\n", np.round(J_reverse, 4))

# %% [markdown]
# ## 3. Broadcasting, and why gradients must be un-broadcast
#
# NumPy broadcasting lets `x + b` add a bias `b` of shape `(D,)` to a batch `x` of shape
# `(B, D)`: `b` is implicitly **copied** along a new leading axis. The VJP of `add` hands
# back a cotangent of the *output's* shape `(B, D)` for both inputs — but `b.grad` must
# have `b`'s shape. What is the right reduction? Each copy of $b_d$ contributed to $B$
# outputs, and (fan-out again) adjoints of uses add up:
#
# $$\bar b_d = \textstyle\sum_{n=1}^{B} \bar y_{n d}.$$
#
# The rule in general: sum over the leading axes broadcasting added, and (with
# `keepdims`) over the axes where the input had size 1 and the output did not. minflow
# does this **once**, in `unbroadcast` (`minflow/autodiff/tensor.py`), called by the
# engine on every gradient, so no op re-derives it; then the engine asserts that every
# gradient has its input's shape and dtype.

# %%
B, D = 5, 3
xb = Tensor(rng.standard_normal((B, D)))
b = Tensor(np.zeros(D), requires_grad=True)
scale = Tensor(np.ones((1, D)), requires_grad=True)  # broadcast along the batch axis (size 1)
out = (xb * scale + b) * (xb * scale + b)  # (B, D)
out.backward(np.ones((B, D)))
y_out = xb.data + 0.0  # scale = 1, b = 0 at this point
assert b.grad.shape == (D,) and np.allclose(b.grad, (2 * y_out).sum(axis=0))
assert scale.grad.shape == (1, D) and np.allclose(scale.grad, (2 * y_out * xb.data).sum(axis=0, keepdims=True))
print("b.grad", b.grad.shape, "scale.grad", scale.grad.shape)
print("unbroadcast (4, 3, 5) -> (3, 1):", unbroadcast(np.ones((4, 3, 5)), (3, 1)).ravel())
assert np.all(unbroadcast(np.ones((4, 3, 5)), (3, 1)) == 20)  # 4 copies x 5 copies

# %% [markdown]
# ## 4. Reverse topological order, without recursion
#
# `backward` must visit every node **after all of its consumers**: a node's adjoint is
# complete only once every use has sent its contribution (in section 1, $\bar x$ needed
# both $v_1$ and $v_2$ first). An order where every node comes before its inputs is a
# *reverse topological order*. The textbook way is a recursive depth-first search (this
# is micrograd's):


# %%
def recursive_topo(root):
    order, visited = [], set()

    def build(t):
        if id(t) not in visited:
            visited.add(id(t))
            if t.node is not None:
                for parent in t.node.inputs:
                    build(parent)
            order.append(t)  # post-order: after all inputs

    build(root)
    return order[::-1]


def chain(depth, factor=1.0001):
    """h_0 = x, h_k = factor * h_{k-1}: a graph `depth` operations deep."""
    start = Tensor(1.0, requires_grad=True)
    h = start
    for _ in range(depth):
        h = h * factor
    return start, h


depth = 10_000  # deep flows and long autoregressive inversions (one pass per dimension) get here
start, h = chain(depth)
try:
    recursive_topo(h)
    recursion_failed = False
except RecursionError:
    recursion_failed = True
print(
    f"recursive DFS on a {depth}-deep chain: {'RecursionError' if recursion_failed else 'ok'} "
    f"(Python's recursion limit is {sys.getrecursionlimit()})"
)
assert recursion_failed

# %% [markdown]
# Python stops a recursion around 1,000 frames deep. minflow's
# `reverse_topological_order` (exported by `minflow.autodiff`; read it in `tensor.py`) runs the same depth-first search
# with an **explicit stack** of `(tensor, inputs_done)` pairs: a tensor is pushed once to
# expand it (push its inputs) and once more, marked done, to emit it after its inputs.
# Then the list is reversed. The 10,000-deep chain is no problem:

# %%
h.backward()
expected = 1.0001**depth
print(f"d h / d x = {start.grad.item():.10f}, expected 1.0001^{depth} = {expected:.10f}")
assert abs(start.grad.item() - expected) < 1e-10 * expected

a = Tensor(0.3, requires_grad=True)
s = ops.sigmoid(a)
out = s * (1 - s)  # s is used twice
order = reverse_topological_order(out)
print("order (consumers first):", [t.node.primitive.name if t.node else "leaf" for t in order])
assert order[0] is out and order[-1] is a and sum(t is s for t in order) == 1

# %% [markdown]
# Two more design choices in `tensor.py`, worth reading: a node keeps only its *inputs*,
# never its output, so graphs have no reference cycles and are freed as soon as the loss
# is; and `backward` frees each node's saved arrays as it passes (unless
# `retain_graph=True`), so memory falls during the backward pass.
#
# ## 5. Checking minflow against HIPS autograd
#
# `autograd` (Maclaurin, Duvenaud, Adams) differentiates ordinary NumPy code written
# with `autograd.numpy`. We write the same function twice — a one-hidden-layer network
# with a broadcast bias and a log-sum-exp, reduced to a scalar — and compare gradients
# with respect to every argument, and a VJP of a matrix-valued intermediate with
# `autograd.make_vjp`. minflow's own test suite does this for every registered op over
# random shapes (`tests/test_ops.py`).


# %%
def loss_autograd(W1, b1, W2, X):
    h = anp.tanh(X @ W1 + b1)
    logits = h @ W2
    log_norm = anp.log(anp.sum(anp.exp(logits), axis=1))
    return anp.mean(log_norm - logits[:, 0]) + 0.1 * anp.sum(W1**2)


def loss_minflow(W1, b1, W2, X):
    h = ops.tanh(X @ W1 + b1)
    logits = h @ W2
    log_norm = ops.logsumexp(logits, axis=1)
    return ops.mean(log_norm - logits[:, 0]) + 0.1 * ops.sum(W1**2)


X_data = rng.standard_normal((8, 3))
params = [rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal((5, 4))]
tensors = [Tensor(p, requires_grad=True) for p in params]
loss = loss_minflow(*tensors, Tensor(X_data))
loss.backward()
assert abs(loss.item() - loss_autograd(*params, X_data)) < 1e-13
for argnum, tensor in enumerate(tensors):
    reference = autograd.grad(loss_autograd, argnum)(*params, X_data)
    error = np.abs(tensor.grad - reference).max()
    print(f"argument {argnum}, shape {tensor.shape}: max |minflow - autograd| = {error:.1e}")
    assert error < 1e-12

# A VJP of a matrix-valued function, with a random cotangent.
vjp, value = autograd.make_vjp(lambda W1: anp.tanh(X_data @ W1 + params[1]), 0)(params[0])
cotangent = rng.standard_normal(value.shape)
W1 = Tensor(params[0], requires_grad=True)
ops.tanh(Tensor(X_data) @ W1 + params[1]).backward(cotangent)
assert np.allclose(W1.grad, vjp(cotangent), atol=1e-13, rtol=0)
print("make_vjp agrees too")

# %% [markdown]
# ## 6. Checking against finite differences, and choosing the step
#
# A check that trusts no other library: the **central difference**
#
# $$\frac{\partial L}{\partial \theta} \approx \frac{L(\theta + \varepsilon) - L(\theta - \varepsilon)}{2 \varepsilon}.$$
#
# For a gradient in many dimensions, one direction at a time is enough: along a random
# direction $V$, $\frac{d}{dt} L(\theta + t V)\big|_{t=0} = \langle \nabla L, V \rangle$.


# %%
def loss_numpy(flat):
    W1 = flat[:15].reshape(3, 5)
    b1 = flat[15:20]
    W2 = flat[20:].reshape(5, 4)
    return loss_autograd(W1, b1, W2, X_data)  # autograd.numpy runs as plain NumPy here


theta = np.concatenate([p.ravel() for p in params])
gradient = np.concatenate([t.grad.ravel() for t in tensors])  # minflow's, from section 5
for trial in range(3):
    V = rng.standard_normal(theta.shape)
    eps = 1e-5
    directional = (loss_numpy(theta + eps * V) - loss_numpy(theta - eps * V)) / (2 * eps)
    # relative to |grad| |V|, the size <grad, V> has for a typical direction (it can be ~0 by chance)
    relative = abs(directional - gradient @ V) / (np.linalg.norm(gradient) * np.linalg.norm(V))
    print(
        f"direction {trial}: finite difference {directional:.10f}, minflow {gradient @ V:.10f}, relative error {relative:.1e}"
    )
    assert relative < 1e-8

# %% [markdown]
# Why $\varepsilon = 10^{-5}$? Two errors pull in opposite directions. Taylor expansion
# gives a **truncation** error of $\tfrac{\varepsilon^2}{6} |L'''|$ for the central
# difference ($\tfrac{\varepsilon}{2}|L''|$ for the one-sided $[L(\theta + \varepsilon) - L(\theta)]/\varepsilon$).
# But $L$ is computed in floating point with relative error about the unit roundoff $u$,
# and dividing by $\varepsilon$ amplifies it: a **rounding** error of about $u |L| / \varepsilon$.
# The total is smallest where the two balance: $\varepsilon \sim u^{1/3}$ for central
# differences (error $\sim u^{2/3}$) and $\varepsilon \sim u^{1/2}$ for one-sided ones
# (error $\sim u^{1/2}$). In float64, $u = 2^{-53} \approx 1.1 \times 10^{-16}$, so the best
# central step is near $5 \times 10^{-6}$. Let us measure it on the function of section 1,
# $L(x) = \tanh(x y + e^x)\, y$, whose exact derivative minflow gives us.

# %%
u = np.finfo(np.float64).eps / 2
assert abs(u - 1.1e-16) < 0.02e-16 and 4e-6 < u ** (1 / 3) < 6e-6


def L_of_x(x):
    return np.tanh(x * y + np.exp(x)) * y


def dL_dx(x):
    xt = Tensor(x, requires_grad=True)
    (ops.tanh(xt * y + ops.exp(xt)) * y).backward(np.ones_like(x))
    return xt.grad


points = np.random.default_rng(1).uniform(-1, 1, budget(200, 50))
exact = dL_dx(points)
steps = np.logspace(-13, -1, budget(97, 49))
central_error = np.array(
    [np.median(np.abs((L_of_x(points + e) - L_of_x(points - e)) / (2 * e) - exact)) for e in steps]
)
forward_error = np.array([np.median(np.abs((L_of_x(points + e) - L_of_x(points)) / e - exact)) for e in steps])
best_central, best_forward = steps[central_error.argmin()], steps[forward_error.argmin()]
print(f"central: best step {best_central:.1e}, median error there {central_error.min():.1e}")
print(f"one-sided: best step {best_forward:.1e}, median error there {forward_error.min():.1e}")
# the predictions, within the factor of ten that the constants |L'''|, |L| leave open
assert 0.1 < best_central / u ** (1 / 3) < 10 and 0.1 < best_forward / u ** (1 / 2) < 10
assert central_error.min() < 10 * u ** (2 / 3) and forward_error.min() < 10 * u ** (1 / 2)
assert central_error.min() < forward_error.min() / 100
assert 1e-11 < u ** (2 / 3) < 3e-11

fig, ax = plt.subplots(figsize=(6.5, 4.5))
ax.loglog(steps, central_error, "C0.-", label="central difference")
ax.loglog(steps, forward_error, "C1.-", label="one-sided difference")
ax.loglog(steps, u / steps, "k:", lw=1, label="rounding $\\sim u/\\varepsilon$")
ax.loglog(steps, steps**2 / 6, "C0--", lw=1, label="truncation $\\sim\\varepsilon^2$")
ax.loglog(steps, steps / 2, "C1--", lw=1, label="truncation $\\sim\\varepsilon$")
ax.axvline(u ** (1 / 3), color="C0", alpha=0.3)
ax.axvline(u ** (1 / 2), color="C1", alpha=0.3)
ax.set(
    xlabel="step $\\varepsilon$",
    ylabel="median |finite difference - autodiff|",
    title="the step size trade-off (float64)",
    ylim=(1e-13, 1),
)
ax.legend(fontsize=8)
show(fig, "00_finite_difference_error.png")

# %% [markdown]
# The V shapes are the lesson: to the right of the minimum, truncation (slope 2 for
# central, 1 for one-sided); to the left, rounding (slope $-1$, noisy). Below the optimum a
# *smaller* step gives a *worse* derivative. The best central difference is good to
# about $u^{2/3} \approx 2 \times 10^{-11}$ here (the check above allows a factor of ten) —
# plenty to catch a wrong formula, never as exact as autodiff, whose
# only error is the rounding of the forward computation itself. `minflow.testing` uses
# $\varepsilon = 2 \times 10^{-6}$ in float64 for the same reason (read its docstring).

# %%
# The step check_flow uses is numerical_jacobian's default: in float64 it gives exactly what the
# step 2e-6 gives (the truncation error eps^2 f'''/6 of a cube tells steps apart), not what 3e-6 gives.
cube, x_cube = (lambda x: x**3), np.array([[0.7]])
default_step = minflow.testing.numerical_jacobian(cube, x_cube)
assert np.array_equal(default_step, minflow.testing.numerical_jacobian(cube, x_cube, eps=2e-6))
assert not np.array_equal(default_step, minflow.testing.numerical_jacobian(cube, x_cube, eps=3e-6))

# %% [markdown]
# ## Exercises
#
# ### Exercise 0.1 — the VJP of a new op
#
# The *swish* (or SiLU) activation is $f(x) = x\,\sigma(x)$ with $\sigma$ the sigmoid.
# Derive $f'(x)$ by hand and write its elementwise VJP `swish_vjp(g, x)`, returning
# $\bar x$ for the cotangent $g$. (Hint: $\sigma' = \sigma (1 - \sigma)$.) We check it
# against minflow's gradient of the *composition* `x * ops.sigmoid(x)` and against
# central differences.


# %% nbgrader={"grade": false, "grade_id": "ex0_1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def swish_vjp(g, x):
    ### BEGIN SOLUTION
    # Product rule: f'(x) = s(x) + x s(x) (1 - s(x)), with s the sigmoid; the VJP of an
    # elementwise map multiplies the cotangent by the derivative.
    s = 1 / (1 + np.exp(-x))
    return g * (s + x * s * (1 - s))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex0_1", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
xs = np.linspace(-6, 6, 25)
g_bar = np.random.default_rng(2).standard_normal(xs.shape)
xt = Tensor(xs, requires_grad=True)
(xt * ops.sigmoid(xt)).backward(g_bar)  # the engine, through mul and sigmoid


def swish(x):
    return x / (1 + np.exp(-x))


def swish_vjp_is_right():
    answer = swish_vjp(g_bar, xs)
    numeric = g_bar * (swish(xs + 1e-6) - swish(xs - 1e-6)) / 2e-6
    return answer is not None and np.allclose(answer, xt.grad, atol=1e-12) and np.allclose(answer, numeric, atol=1e-8)


check("Exercise 0.1", swish_vjp_is_right, "differentiate x * sigmoid(x) with the product rule, then multiply by g")

# %% [markdown]
# In minflow, making swish a primitive would be one registration in `ops.py`:
# `@primitive("swish", lambda g, x: (swish_vjp(g, x),))` above a forward that returns
# `x * sigmoid(x), (x,)`. One fused op instead of two saves the intermediate array.
#
# ### Exercise 0.2 — un-broadcast a gradient
#
# Write `my_unbroadcast(grad, shape)`: given a cotangent `grad` of a broadcast result and
# the `shape` of the input that was broadcast, return the input's gradient (of shape
# `shape`). Example: `(4, 3, 5) -> (3, 1)` sums over axis 0 (a new leading axis) and over
# the last axis (size 1 in the input). Don't call minflow's `unbroadcast` — we compare
# against it.


# %% nbgrader={"grade": false, "grade_id": "ex0_2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_unbroadcast(grad, shape):
    ### BEGIN SOLUTION
    extra = grad.ndim - len(shape)  # broadcasting prepends axes: sum them away
    grad = grad.sum(axis=tuple(range(extra)))
    size_one = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=size_one, keepdims=True)  # axes stretched from size 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex0_2", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
cases = [((4, 3, 5), (3, 1)), ((2, 3), ()), ((5, 1, 4), (1, 4)), ((6, 2), (6, 1)), ((3, 3), (3, 3))]
# and the engine must agree: the gradient of sum(x * w) with w broadcast from (3, 1)
w = Tensor(np.ones((3, 1)), requires_grad=True)
x_big = np.random.default_rng(4).standard_normal((4, 3, 5))
ops.sum(Tensor(x_big) * w).backward()


def my_unbroadcast_is_right():
    for grad_shape, shape in cases:
        grad = np.random.default_rng(3).standard_normal(grad_shape)
        answer = my_unbroadcast(grad, shape)
        if answer is None or np.shape(answer) != shape or not np.allclose(answer, unbroadcast(grad, shape)):
            return False
    return np.allclose(my_unbroadcast(x_big, (3, 1)), w.grad)


check(
    "Exercise 0.2",
    my_unbroadcast_is_right,
    "sum over the leading axes broadcasting added, then over axes where shape has 1 (keepdims)",
)

# %% [markdown]
# ### Exercise 0.3 — a topological order without recursion
#
# Write `topo_order(root)` returning every tensor of `root`'s graph that requires grad,
# each exactly once, **consumers before their inputs** (so `root` first), using an
# explicit stack instead of recursion. A tensor `t` came out of an op if `t.node` is not
# None; its inputs are `t.node.inputs` (some may be constants with
# `requires_grad == False`: skip those). It must work on the 10,000-deep chain.


# %% nbgrader={"grade": false, "grade_id": "ex0_3_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def topo_order(root):
    ### BEGIN SOLUTION
    # One way (minflow's): push (tensor, False) to expand a tensor and (tensor, True) to emit it
    # once its inputs are done; the emitted list has inputs first, so reverse it. Another
    # (Kahn's algorithm): count each tensor's consumers, and emit a tensor when its count drops to zero.
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor.node is not None:
            for parent in tensor.node.inputs:
                if parent is not None and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order[::-1]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex0_3", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
def is_reverse_topological(order, root):
    """Every tensor once, root first, each before all of its inputs."""
    if order is None or order[0] is not root:
        return False
    position = {id(t): i for i, t in enumerate(order)}
    if len(position) != len(order) or len(order) != len(reverse_topological_order(root)):
        return False
    return all(
        position[id(parent)] > position[id(t)]
        for t in order
        if t.node is not None
        for parent in t.node.inputs
        if parent is not None and parent.requires_grad
    )


a = Tensor(0.3, requires_grad=True)
b = Tensor(-1.1, requires_grad=True)
s = ops.sigmoid(a * b)
diamond = s * (1 - s) + ops.exp(a) * s  # shared nodes, several paths from a to the root
_, deep = chain(depth)
check(
    "Exercise 0.3",
    lambda: is_reverse_topological(topo_order(diamond), diamond) and is_reverse_topological(topo_order(deep), deep),
    "use a list as a stack; emit a tensor only after all its inputs, then reverse the list",
)

# %% [markdown]
# ## Summary
#
# - Reverse mode = forward pass that records a graph, then one backward sweep in reverse
#   topological order that hands each node the **sum** of its consumers' contributions.
# - Each primitive only needs its **VJP**, $\bar x = J^\top \bar y$, never the Jacobian itself.
# - Broadcasting copies, so its VJP sums: one shared `unbroadcast` does it for every op.
# - An explicit stack instead of recursion lets a graph be 10,000 operations deep.
# - minflow agrees with HIPS autograd to rounding, and with central differences to their
#   own accuracy, about $u^{2/3} \approx 2 \times 10^{-11}$ at the best step $\varepsilon \approx u^{1/3}$.
#
# Next lecture: the change of variables, where this engine first earns its keep.
