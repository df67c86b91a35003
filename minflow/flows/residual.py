"""Residual flows: z = x + g(x), and the structure that makes such a map invertible.

A residual block ``z = x + g(x)`` is the workhorse of deep networks, but it is not
invertible in general: with g(x) = -x every x goes to 0. Two kinds of structure fix that.

1. **Partition the coordinates** (RevNet, Gomez et al. 2017): split x = (h1, h2) and let
   each half's residual depend on the other half only. Each step is an additive coupling
   (NICE), so the block is invertible for *any* networks f1, f2 and preserves volume:
   :class:`AdditiveResidualCoupling`.

2. **Make g a contraction** (i-ResNet, Behrmann et al. 2019): if Lip(g) < 1, then
   f(x) = f(y) gives |x - y| = |g(y) - g(x)| <= Lip(g) |x - y|, so x = y; and for every z
   the map x -> z - g(x) is a contraction, whose unique fixed point (Banach) is
   f^{-1}(z). The log-det is that of a dense Jacobian I + J_g, computed exactly or by the
   power series of the matrix logarithm (Chen et al. 2019): :class:`ContractiveResidual`.

References: Gomez, Ren, Urtasun, Grosse (2017), "The Reversible Residual Network";
Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen (2019), "Invertible Residual Networks";
Chen, Behrmann, Duvenaud, Jacobsen (2019), "Residual Flows for Invertible Generative
Modeling"; Miyato et al. (2018), "Spectral Normalization for GANs"; Prince (2023),
"Understanding Deep Learning", sections 16.3.6 (residual flows: iRevNet, the partition) and
16.3.7 (residual flows and contraction mappings: iResNet).
"""

import itertools
import math

from .. import backend
from ..autodiff import Tensor, no_grad, ops
from ..nn import MLP, Buffer, Linear
from .base import Flow, check_dim, check_int, check_positive, zero_log_det


class AdditiveResidualCoupling(Flow):
    """A reversible residual block (RevNet): two additive couplings in a row.

    Split x into h1 = x[:, :D1] and h2 = x[:, D1:] with D1 = D // 2 (so for odd D the
    second half is the larger one)::

        z1 = h1 + f1(h2)              h2 = z2 - f2(z1)
        z2 = h2 + f2(z1)              h1 = z1 - f1(h2)

    The inverse (right) undoes the two steps in reverse order; f1 and f2 are any networks
    and are never inverted.

    Jacobian, with the coordinates ordered (h1, h2), is the product of the two steps'::

        dz     [ I     0 ] [ I  J_f1 ]   [ I     J_f1             ]
        --  =  [         ] [         ] = [                        ]
        dx     [ J_f2  I ] [ 0  I    ]   [ J_f2  I + J_f2 J_f1    ]

    with J_f1 = df1/dh2 at h2 and J_f2 = df2/dz1 at z1. Each factor is unit triangular
    (determinant 1), so det dz/dx = 1 and log|det dz/dx| = 0 exactly: the block preserves
    volume, like NICE, however complicated f1 and f2 are. (UDL section 16.3.6 says that for
    general f1, f2 "there is no efficient way to compute the Jacobian": true of the dense
    matrix above, but a flow needs only its determinant, and that is 1.)

    The last layers of f1 and f2 start at zero (as in coupling.py), so a new block is the
    identity map and a deep stack starts well conditioned; training moves it away. f1 and f2
    are MLPs with ``hidden`` units (default (64,)) and ``activation`` (default "tanh").

    Cost: one pass through f1 and one through f2 in each direction; O(1) log-det.
    """

    def __init__(self, dim, hidden=(64,), activation="tanh", seed=None):
        dim = check_dim(dim, "AdditiveResidualCoupling")
        if dim < 2:
            raise ValueError(f"AdditiveResidualCoupling: dim must be >= 2 (one coordinate per half), got {dim}")
        rng = backend.rng(seed)
        self.split = dim // 2
        self.f1 = MLP([dim - self.split, *hidden, self.split], activation=activation, zero_last=True, seed=rng)
        self.f2 = MLP([self.split, *hidden, dim - self.split], activation=activation, zero_last=True, seed=rng)
        self.event_shape = (dim,)

    def forward(self, x, context=None):
        x = self._check_input(x)
        h1, h2 = x[:, : self.split], x[:, self.split :]
        z1 = h1 + self.f1(h2)
        z2 = h2 + self.f2(z1)
        return ops.concatenate([z1, z2], axis=1), zero_log_det(x)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        z1, z2 = z[:, : self.split], z[:, self.split :]
        h2 = z2 - self.f2(z1)
        h1 = z1 - self.f1(h2)
        return ops.concatenate([h1, h2], axis=1), zero_log_det(z)


# --- the contractive residual block ----------------------------------------------------------
# phi and its hand-derived derivative phi', both with |phi'| <= 1 (Lip(phi) = 1) and smooth,
# so that the log-det (which contains phi') is differentiable.
_ACTIVATIONS = {
    "tanh": (ops.tanh, lambda a: 1 - ops.tanh(a) ** 2),
    "softplus": (ops.softplus, ops.sigmoid),
}
LOG_DET_METHODS = ("exact", "series", "hutchinson")


def _normalize(vector):
    return vector / backend.array_module(vector).linalg.norm(vector)


class SpectralNormLinear(Linear):
    """y = x W_hat + b with W_hat = W min(1, c / sigma(W)): a layer with ||W_hat||_2 <= c.

    sigma(W), the largest singular value, is written sigma = u^T W v with u, v its left and
    right singular vectors. Those are computed without a graph (constants), so the engine
    differentiates sigma as u^T W v: d sigma / dW = u v^T, which is the exact gradient of
    sigma when u, v are exact. Two ways to get u and v:

    - ``"exact"``: an SVD of W on every call, O(in out min(in, out)). W_hat is then a pure
      function of W: the same map on every call, which an exact inverse and
      finite-difference checks need. For the small widths of a teaching flow it is cheap.
    - ``"power"`` (Miyato et al. 2018, used by Behrmann et al.): a stored vector u (a
      Buffer), refined on every call by ``power_iterations`` steps v = W^T u / |W^T u|,
      u = W v / |W v| (and stored again only when ``update=True``); sigma = u^T W v. It costs
      O(in out) per step, but u^T W v <= sigma(W): until u has converged the estimate is
      too small and ||W_hat|| exceeds c. Over many training steps it converges because W
      changes slowly. While u is updated the map changes a little from call to call.
    """

    def __init__(self, in_features, out_features, coefficient=0.9, spectral_norm="exact", seed=None):
        rng = backend.rng(seed)
        super().__init__(in_features, out_features, seed=rng)
        self.coefficient, self.spectral_norm = coefficient, spectral_norm
        if spectral_norm == "power":
            u = rng.standard_normal(in_features, dtype=backend.get_default_dtype())
            self.u = Buffer(_normalize(u))

    def singular_vectors(self, power_iterations=5, update=False):
        """(u, v, sigma estimate) as arrays, without a graph."""
        weight = self.weight.data
        if self.spectral_norm == "exact":
            left, values, right = backend.array_module(weight).linalg.svd(weight, full_matrices=False)
            return left[:, 0], right[0], values[0]
        u = self.u.data
        for _ in range(power_iterations):
            u = _normalize(weight @ _normalize(u @ weight))
        if update:
            self.u.data = u
        v = _normalize(u @ weight)
        return u, v, u @ weight @ v

    def normalized_weight(self, power_iterations=5, update=False):
        """W_hat = W min(1, c / sigma), differentiable in W (u, v constants)."""
        with no_grad():
            u, v, _ = self.singular_vectors(power_iterations, update)
        sigma = ops.sum(ops.matmul(Tensor(u.reshape(1, -1)), self.weight) * Tensor(v))
        scale = ops.where(sigma.data > self.coefficient, self.coefficient / sigma, 1.0)
        return self.weight * scale

    def forward(self, x):
        return ops.matmul(x, self.normalized_weight()) + self.bias


class ContractiveResidual(Flow):
    """An invertible residual block (i-ResNet): z = x + g(x) with Lip(g) < 1.

    The residual network, in minflow's row convention (Linear: y = x W + b)::

        a_1 = x W_1 + b_1,   a_l = phi(a_{l-1}) W_l + b_l,   g(x) = a_L

    Contraction. Every W_l is spectrally normalised (:class:`SpectralNormLinear`) to
    W_hat_l = W_l min(1, c / ||W_l||_2), so ||W_hat_l||_2 <= c = ``coefficient`` < 1, and
    phi (tanh or softplus) has |phi'| <= 1. Lipschitz constants multiply along a chain::

        Lip(g) <= prod_l ||W_hat_l||_2 * Lip(phi)^(L-1) <= c^L <= c < 1

    Jacobian, per sample, J_g[i, j] = dg_i/dx_j (the chain rule, read right to left)::

        J_g = W_L^T diag(phi'(a_{L-1})) W_{L-1}^T ... diag(phi'(a_1)) W_1^T

        log|det dz/dx| = log det(I + J_g(x))

    (det(I + J_g) > 0: every eigenvalue lam of J_g has |lam| <= ||J_g|| < 1.) Three ways
    to compute it, ``log_det_method=``:

    - ``"exact"`` (default): form J_g (B, D, D) and take ``slogdet``: O(B D^3).
    - ``"series"``: log det(I + J) = tr log(I + J) = sum_k (-1)^(k+1) tr(J^k) / k, cut
      after ``series_terms`` terms, with exact traces of matrix powers. It converges
      because ||J|| < 1; the cut-off bias is at most D Lip^(n+1) / ((n+1)(1 - Lip)).
    - ``"hutchinson"``: the same series with tr(J^k) ~ mean_s v_s^T J^k v_s over
      ``hutchinson_samples`` Rademacher vectors v (E[v v^T] = I makes it unbiased for
      the cut series). J^k v is computed without J: a Jacobian-vector product is the
      linear part of the network, J v = (v^T W_1 diag(phi'(a_1)) W_2 ... W_L)^T, so the
      cost is O(n S B cost(g)), with no D^3. (Residual flows of Chen et al. 2019 also
      randomise n, "Russian roulette", to remove the cut-off bias; not done here.)

    Inverse: the Banach fixed-point iteration x_{k+1} = z - g(x_k), x_0 = z. The error
    shrinks by a factor Lip(g) per step, so reaching ``inverse_tolerance`` from an initial
    error e_0 takes at most about log(tol / e_0) / log(Lip(g)) steps: ~110 for the bound
    Lip <= 0.81 (c = 0.9, one hidden layer) and tol = 1e-10. In practice it is far fewer
    (10 to 20 for random weights), because the bound prod ||W_hat_l|| is attained only
    when the layers' singular vectors line up and phi' = 1. The residual is the max over
    the batch of |x_{k+1} - x_k|_2 (the norm Lip(g) is measured in; 0 for an empty batch,
    which passes through in one step); the iteration stops below ``inverse_tolerance``
    (floored at 64 units of roundoff of the dtype times (1 + max|z|), which float32
    cannot go below) and raises ``RuntimeError`` after ``max_iterations``. After
    a call, ``last_inverse_iterations`` is n, the number of steps taken, and
    ``last_inverse_residual`` is |x_n - x_{n-1}|, the first residual below the tolerance
    (both None before the first call).

    Gradients through the inverse. The iteration runs without a graph (differentiating
    n unrolled steps would cost n times the memory and still be approximate). Then one
    Newton step on F(x) = x + g(x) - z is taken *with* the graph, from the last iterate
    x* = x_n (a constant) with the Jacobian I + J_g(x*) held constant::

        x = x* - (I + J_g(x*))^{-1} (x* + g(x*) - z)

    Its value is x* polished (Newton converges quadratically: |F(x*)| <= Lip(g) times the
    last residual). Its derivative is -(I + J_g)^{-1} dg/dtheta with respect to the
    parameters and (I + J_g)^{-1} with respect to z: exactly the implicit-function
    theorem's, so gradients through the inverse (reverse KL) are exact, as for the planar
    flow. The step costs one solve with a (B, D, D) matrix, O(B D^3), whatever
    ``log_det_method``. The inverse log-det is -log det(I + J_g(x)) at that x = f^{-1}(z),
    *not* at z, and is differentiated through x too.

    Spectral norms: ``spectral_norm="exact"`` (default) or ``"power"`` (see
    :class:`SpectralNormLinear`). With ``"power"``, forward refines the stored vectors
    while ``update_spectral_norm`` is True; set it to False for evaluation and sampling so
    that the map stays fixed. The inverse never updates them.

    Cost: forward O(B cost(g)) + the log-det above; inverse O(iterations B cost(g)) + the
    Newton step's O(B D^3) + the log-det; the iteration is sequential.

    Defaults: ``hidden`` (32,), ``activation`` "tanh" (or "softplus"), ``coefficient`` 0.9,
    ``log_det_method`` "exact", ``series_terms`` 10, ``hutchinson_samples`` 1,
    ``spectral_norm`` "exact", ``power_iterations`` 5, ``inverse_tolerance`` 1e-10,
    ``max_iterations`` 500.
    """

    def __init__(
        self,
        dim,
        hidden=(32,),
        activation="tanh",
        coefficient=0.9,
        log_det_method="exact",
        series_terms=10,
        hutchinson_samples=1,
        spectral_norm="exact",
        power_iterations=5,
        inverse_tolerance=1e-10,
        max_iterations=500,
        seed=None,
    ):
        dim = check_dim(dim, "ContractiveResidual")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ContractiveResidual: activation must be one of {sorted(_ACTIVATIONS)} (smooth, |phi'| <= 1), "
                f"got {activation!r}"
            )
        if not 0 < coefficient < 1:
            raise ValueError(
                f"ContractiveResidual: coefficient must lie in (0, 1) for a contraction, got {coefficient!r}"
            )
        if log_det_method not in LOG_DET_METHODS:
            raise ValueError(
                f"ContractiveResidual: log_det_method must be one of {LOG_DET_METHODS}, got {log_det_method!r}"
            )
        if spectral_norm not in ("exact", "power"):
            raise ValueError(f"ContractiveResidual: spectral_norm must be 'exact' or 'power', got {spectral_norm!r}")
        for name, value, low in [
            ("series_terms", series_terms, 1),
            ("hutchinson_samples", hutchinson_samples, 1),
            ("power_iterations", power_iterations, 0),
            ("max_iterations", max_iterations, 1),
        ]:
            check_int(value, name, "ContractiveResidual", minimum=low)
        check_positive(inverse_tolerance, "inverse_tolerance", "ContractiveResidual")
        rng = backend.rng(seed)
        sizes = [dim, *hidden, dim]
        self.layers = [
            SpectralNormLinear(n_in, n_out, coefficient, spectral_norm, seed=rng)
            for n_in, n_out in itertools.pairwise(sizes)
        ]
        self.activation, self.coefficient, self.log_det_method = activation, coefficient, log_det_method
        self.series_terms, self.hutchinson_samples = series_terms, hutchinson_samples
        self.power_iterations, self.update_spectral_norm = power_iterations, True
        self.inverse_tolerance, self.max_iterations = inverse_tolerance, max_iterations
        self.event_shape = (dim,)
        self.last_inverse_iterations = self.last_inverse_residual = None
        self._noise = backend.rng(int(rng.integers(0, 2**62)))  # Hutchinson's probe vectors

    # --- the residual network and its Jacobian -----------------------------------------------
    def normalized_weights(self, update=False):
        """[W_hat_1, ..., W_hat_L], each with ||W_hat_l||_2 <= coefficient."""
        update = update and self.update_spectral_norm
        return [layer.normalized_weight(self.power_iterations, update) for layer in self.layers]

    def _network(self, x, weights):
        """g(x) and the pre-activations [a_1, ..., a_{L-1}] that its Jacobian needs."""
        phi = _ACTIVATIONS[self.activation][0]
        pre, h = [], x
        for layer, weight in zip(self.layers[:-1], weights[:-1]):
            pre.append(ops.matmul(h, weight) + layer.bias)
            h = phi(pre[-1])
        return ops.matmul(h, weights[-1]) + self.layers[-1].bias, pre

    def residual(self, x):
        """g(x) (B, D)."""
        x = self._check_input(x)
        return self._network(x, self.normalized_weights())[0]

    def _jacobian(self, pre, weights, batch):
        # Build the transpose, J^T = W_1 diag(phi'(a_1)) W_2 ... diag(phi'(a_{L-1})) W_L,
        # left to right, then transpose: (B, D, D), J[b, i, j] = dg_i/dx_j.
        derivative = _ACTIVATIONS[self.activation][1]
        jacobian_t = weights[0]
        for a, weight in zip(pre, weights[1:]):
            jacobian_t = ops.matmul(jacobian_t * ops.reshape(derivative(a), (batch, 1, a.shape[1])), weight)
        dim = self.event_shape[0]
        return ops.transpose(ops.broadcast_to(jacobian_t, (batch, dim, dim)), (0, 2, 1))

    def jacobian(self, x):
        """J_g(x), (B, D, D), from the hand-derived formula."""
        x = self._check_input(x)
        weights = self.normalized_weights()
        return self._jacobian(self._network(x, weights)[1], weights, x.shape[0])

    def _jacobian_vector(self, pre, weights, v):
        """J_g v for probes v (B, S, D), without forming J: run the linear part of the network."""
        derivative = _ACTIVATIONS[self.activation][1]
        for a, weight in zip(pre, weights[:-1]):
            v = ops.matmul(v, weight) * ops.reshape(derivative(a), (a.shape[0], 1, a.shape[1]))
        return ops.matmul(v, weights[-1])

    def _log_det(self, x, pre, weights, method):
        batch, dim = x.shape
        xp = backend.array_module(x.data)
        if method == "exact":
            return ops.slogdet(self._jacobian(pre, weights, batch) + xp.eye(dim, dtype=x.dtype))
        if method == "series":
            jacobian = self._jacobian(pre, weights, batch)
            power, log_det = jacobian, 0.0
            for k in range(1, self.series_terms + 1):
                log_det = log_det + (-1) ** (k + 1) / k * ops.sum(ops.diagonal(power), axis=-1)
                power = ops.matmul(power, jacobian)
            return log_det
        # Hutchinson: Rademacher probes, one set per call, shared by all powers k.
        shape = (batch, self.hutchinson_samples, dim)
        probes = xp.where(self._noise.random(shape) < 0.5, -1.0, 1.0).astype(x.dtype)
        return self._hutchinson(pre, weights, probes)

    def _hutchinson(self, pre, weights, probes):
        """sum_k (-1)^(k+1)/k mean_s v_s^T J^k v_s for given probes v (B, S, D)."""
        product, log_det = Tensor(probes), 0.0
        for k in range(1, self.series_terms + 1):
            product = self._jacobian_vector(pre, weights, product)
            trace = ops.mean(ops.sum(product * probes, axis=-1), axis=-1)  # v^T J^k v, averaged
            log_det = log_det + (-1) ** (k + 1) / k * trace
        return log_det

    def log_det_at(self, x, method=None):
        """log det(I + J_g(x)) by ``method`` (default: the flow's ``log_det_method``), (B,)."""
        x = self._check_input(x)
        weights = self.normalized_weights()
        return self._log_det(x, self._network(x, weights)[1], weights, method or self.log_det_method)

    # --- the flow ---------------------------------------------------------------------------
    def forward(self, x, context=None):
        x = self._check_input(x)
        weights = self.normalized_weights(update=True)
        g, pre = self._network(x, weights)
        return x + g, self._log_det(x, pre, weights, self.log_det_method)

    def _fixed_point(self, z, weights):
        """Yield (x_{k+1}, residual_k) of x_{k+1} = z - g(x_k), x_0 = z, without a graph."""
        with no_grad():
            x = z
            for _ in range(self.max_iterations):
                x_next = z - self._network(x, weights)[0]
                step = x_next.data - x.data
                residual = float(backend.array_module(step).sqrt((step * step).sum(axis=1)).max()) if step.size else 0.0
                yield x_next, residual
                x = x_next

    def _stopping_tolerance(self, z):
        roundoff = float(backend.array_module(z.data).finfo(z.dtype).eps)
        largest = float(backend.array_module(z.data).abs(z.data).max()) if z.size else 0.0
        return max(self.inverse_tolerance, 64 * roundoff * (1 + largest))

    def fixed_point_trace(self, z):
        """[residual_0, residual_1, ...] of the inverse's iteration, until it converges or
        ``max_iterations`` (no error): the geometric decay, for a lecture's plot."""
        z = self._check_input(z, "z")
        tolerance, trace = self._stopping_tolerance(z), []
        with no_grad():
            weights = self.normalized_weights()
        for _, residual in self._fixed_point(z, weights):
            trace.append(residual)
            if residual < tolerance:
                break
        return trace

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        tolerance = self._stopping_tolerance(z)
        weights = self.normalized_weights()
        x_star, residual, iterations = None, math.inf, 0
        for x_star, residual in self._fixed_point(z, weights):  # noqa: B007 (x_star is read after the loop)
            iterations += 1
            if not math.isfinite(residual) or residual < tolerance:
                break
        self.last_inverse_iterations, self.last_inverse_residual = iterations, residual
        if not residual < tolerance:
            raise RuntimeError(
                f"ContractiveResidual.inverse: the fixed-point iteration did not converge in {iterations} "
                f"iterations (max_iterations={self.max_iterations}): "
                f"residual {residual:.3g} > tolerance {tolerance:.3g}"
            )
        # One Newton step in the graph, from the last iterate x* (a constant) with the Jacobian
        # held constant: the value is x* polished, the derivative the implicit-function theorem's.
        x_star = Tensor(x_star.data)
        g, pre = self._network(x_star, weights)
        batch, dim = x_star.shape
        with no_grad():
            jacobian = self._jacobian(pre, weights, batch).data + backend.array_module(z.data).eye(dim, dtype=z.dtype)
        newton_step = ops.solve(Tensor(jacobian), ops.reshape(x_star + g - z, (batch, dim, 1)))
        x = x_star - ops.reshape(newton_step, (batch, dim))
        _, pre = self._network(x, weights)
        return x, -self._log_det(x, pre, weights, self.log_det_method)

    # --- diagnostics ------------------------------------------------------------------------
    def lipschitz_bound(self):
        """prod_l ||W_hat_l||_2 (exact norms, by SVD): an upper bound on Lip(g)."""
        bound = 1.0
        with no_grad():
            for weight in self.normalized_weights():
                bound *= float(backend.array_module(weight.data).linalg.svd(weight.data, compute_uv=False)[0])
        return bound

    def log_det_series_bias(self, x, terms=(1, 2, 3, 5, 10, 20)):
        """{n: batch mean of exact - series(n)}: the cut-off bias of the power series."""
        x = self._check_input(x)
        saved, bias = self.series_terms, {}
        with no_grad():
            exact = self.log_det_at(x, "exact").data
            try:
                for n in terms:
                    self.series_terms = n
                    bias[n] = float((exact - self.log_det_at(x, "series").data).mean())
            finally:
                self.series_terms = saved
        return bias

    def extra_repr(self):
        return f"event_shape={self.event_shape}, coefficient={self.coefficient}, log_det_method={self.log_det_method!r}"
