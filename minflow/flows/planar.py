"""Planar and radial flows: a closed-form log-det, paid for with a numerical inverse.

Rezende & Mohamed (2015) introduced these two maps for variational inference. They write
them in the *generative* direction, latent z -> data x, because that is the direction a
variational posterior samples in::

    planar   x = g(z) = z + u h(w^T z + b)                 h = tanh
    radial   x = g(z) = z + beta h(alpha, r) (z - z0)      h = 1 / (alpha + r),  r = |z - z0|

Direction. minflow's ``forward`` is the normalizing direction, data -> latent (see
base.py), the opposite of the paper's. So here::

    inverse(z) -> (g(z),      log|det dg/dz|)                  the paper's map: closed form
    forward(x) -> (g^{-1}(x), -log|det dg/dz| at z = g^{-1}(x)) no closed form in general:
                                                                 a 1-D root (planar), a
                                                                 quadratic (radial)

Each map moves a point along one line only (along u for planar, along the ray from z0
for radial), so its Jacobian is the identity plus a rank-one matrix, and the *matrix
determinant lemma*, det(I + a b^T) = 1 + b^T a, makes the determinant O(D) instead of
O(D^3). The price: a rank-one update is a weak layer (it bends space along one direction),
so these flows need many layers, and their data -> latent direction has to be solved.
That is why they suit reverse-KL fitting (``train.fit_to_density``, sampling only needs
``inverse``) far better than maximum likelihood on data (every ``forward`` solves).

Reference: Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows",
section 4.1 and appendix A (invertibility); Papamakarios et al. (2021), "Normalizing
Flows for Probabilistic Modeling and Inference", section 3.3 (residual flows).
"""

from .. import backend
from ..autodiff import no_grad, ops
from ..nn import Parameter
from .base import Flow, check_dim, check_int, check_positive


def _normal(rng, shape, scale):
    return scale * rng.standard_normal(shape, dtype=backend.get_default_dtype())


def _dot(x, w):
    """w^T x for every row of x (B, D): (B,). O(D) per sample."""
    return ops.sum(x * w, axis=1)


def _norm(offset):
    """|offset| for every row of offset (B, D): (B,), with gradient 0 where offset = 0.

    |y| has no derivative at y = 0 (a cone), and the chain rule through sqrt would give
    0 * inf = NaN there. The map itself is smooth at the centre, so the code takes the
    subgradient 0 (the "double where": the sqrt only ever sees positive numbers).
    """
    squared = ops.sum(offset * offset, axis=1)
    positive = squared.data > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squared, 1.0)), 0.0)


def _column(v):
    """(B,) -> (B, 1), to scale every row of a (B, D) batch."""
    return ops.reshape(v, (v.shape[0], 1))


class Planar(Flow):
    """The planar flow: an invertible tanh "ridge" added along one direction u.

    Generative map (the paper's, computed by ``inverse``), per sample::

        x = g(z) = z + u_hat tanh(w^T z + b)           w, u_hat in R^D, b in R

    Jacobian. With psi(z) = h'(w^T z + b) w and h' = 1 - tanh^2::

        dg/dz = I + u_hat psi(z)^T                      (identity plus rank one)

    Log-determinant, by the matrix determinant lemma det(I + a b^T) = 1 + b^T a::

        log|det dg/dz| = log|1 + u_hat^T psi(z)| = log|1 + (w^T u_hat) h'(w^T z + b)|

    Invertibility (paper, appendix A). Project x = g(z) on w and write p = w^T z + b::

        w^T x + b = p + (w^T u_hat) tanh(p)

    a scalar map of p whose slope is 1 + (w^T u_hat) h'(p) with h' in (0, 1]. When
    w^T u_hat >= -1 it is increasing, so p is determined by w^T x, then z by x (below):
    g is invertible (the paper's sufficient condition; with w^T u_hat < -1 the slope is
    negative near p = 0 and g folds space). The trained parameter u is free; the layer
    uses the projection

        u_hat = u + (m(w^T u) - w^T u) w / |w|^2,      m(a) = -1 + softplus(a)

    which changes u along w only, so that w^T u_hat = m(w^T u) > -1 for every u. Writing
    s = softplus(w^T u) > 0 (so w^T u_hat = s - 1), the slope and the determinant are

        1 + (w^T u_hat) h'(p) = tanh(p)^2 + s (1 - tanh(p)^2) > 0

    a sum of non-negative terms, which the code uses as is: it stays positive in floating
    point even when w^T u is so negative that s - 1 rounds to -1.

    Normalizing map (``forward``). Given x, solve the scalar equation for p,

        F(p) = p + (s - 1) tanh(p) - (w^T x + b) = 0,

    then z = x - u_hat tanh(p). F is increasing and |tanh| < 1, so the root lies in the
    bracket [v - |c|, v + |c|] (v = w^T x + b, c = s - 1). A safeguarded Newton iteration
    (a Newton step where it stays inside the bracket, a bisection step where it does not,
    the bracket shrinking at every step) finds it, for the whole batch at once; it stops
    when |F(p)| <= tolerance (1 + |v| + |c|) for every sample and raises ``RuntimeError``
    if some sample is not there after ``max_iterations`` steps (defaults: ``tolerance`` 1e-12,
    ``max_iterations`` 100). The tolerance is floored
    at 16 machine epsilons of the input's dtype, the residual a float32 F can resolve.

    Gradients of the solved direction. The root is found without recording a graph (the
    iterations are not differentiated). Then one more Newton step is taken *with* the
    graph, from the converged root p* (a constant) with the slope F'(p*) held constant::

        p = p* - F(p*; theta, x) / F'(p*)

    Its value is p* (F(p*) = 0; the step also polishes p* to machine precision, Newton's
    quadratic convergence). Its derivative is -(dF/dtheta) / F'(p*): exactly the
    implicit-function theorem's dp/dtheta for the root of F(p; theta) = 0. So the
    gradients of ``forward`` with respect to the parameters *and* to x are exact, not a
    first-order approximation, at the cost of one extra step.

    Parameters: ``w`` (D,), ``u`` (D,), ``b`` (1,). Initialisation (random, never
    zero, so that |w| > 0 and the projection is defined): w ~ N(0, 1/D), so that
    |w| ~ 1 and tanh bends over data of unit scale; u, b ~ N(0, 0.1^2). Note that at
    w^T u = 0 the constraint gives w^T u_hat = m(0) = log 2 - 1 ~ -0.31, not 0: a fresh
    layer contracts by about 30% along w near its hyperplane w^T z + b = 0.

    Cost: inverse O(D) per sample. Forward O(D) per sample plus O(1) per iteration
    (the iteration is scalar, on the projection). Testing for convergence reads a flag
    on the host, a device synchronisation on a GPU, so it is tested every
    ``CHECK_EVERY`` iterations rather than after each: a sample that has converged stays
    where it is, so the extra iterations change nothing but cost a few scalar updates.

    Reference: Rezende & Mohamed (2015), section 4.1 (map, log-det) and appendix A.1
    (the constraint on u).
    """

    def __init__(self, dim, seed=None, tolerance=1e-12, max_iterations=100):
        dim = check_dim(dim, "Planar")
        tolerance = check_positive(tolerance, "tolerance", "Planar")
        max_iterations = check_int(max_iterations, "max_iterations", "Planar", minimum=1)
        rng = backend.rng(seed)
        self.w = Parameter(_normal(rng, (dim,), dim**-0.5))
        self.u = Parameter(_normal(rng, (dim,), 0.1))
        self.b = Parameter(_normal(rng, (1,), 0.1))
        self.tolerance, self.max_iterations = float(tolerance), int(max_iterations)
        self.event_shape = (dim,)

    def constrained(self):
        """(u_hat, s): the projected u, and s = softplus(w^T u) = 1 + w^T u_hat > 0."""
        w_dot_u = ops.sum(self.w * self.u)
        s = ops.softplus(w_dot_u)
        u_hat = self.u + (s - 1 - w_dot_u) * self.w / ops.sum(self.w * self.w)
        return u_hat, s

    @property
    def u_hat(self):
        """The vector the map actually uses, with w^T u_hat > -1 (a Tensor in the graph)."""
        return self.constrained()[0]

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        u_hat, s = self.constrained()
        t = ops.tanh(_dot(z, self.w) + self.b)  # h(w^T z + b), (B,)
        x = z + _column(t) * u_hat
        log_det = ops.log(t * t + s * (1 - t * t))  # 1 + (w^T u_hat) h'(p)
        return x, log_det

    def forward(self, x, context=None):
        x = self._check_input(x)
        u_hat, s = self.constrained()
        c = s - 1  # w^T u_hat
        v = _dot(x, self.w) + self.b  # w^T x + b = p + c tanh(p)
        with no_grad():
            root = _solve_planar(v.data, c.data, s.data, self.tolerance, self.max_iterations)
            t = backend.array_module(root).tanh(root)
            slope = t * t + s.data * (1 - t * t)  # F'(p*), held constant
        p = root - (root + c * t - v) / slope  # one Newton step in the graph: exact gradients
        t = ops.tanh(p)
        z = x - _column(t) * u_hat
        log_det = -ops.log(t * t + s * (1 - t * t))
        return z, log_det

    def extra_repr(self):
        return f"dim={self.event_shape[0]}, tolerance={self.tolerance:g}, max_iterations={self.max_iterations}"


CHECK_EVERY = 4  # Newton iterations between two convergence tests (Newton usually needs 4 to 8)


def _solve_planar(v, c, s, tolerance, max_iterations):
    """The root p of F(p) = p + c tanh(p) - v, for every entry of v at once (plain arrays).

    Safeguarded Newton: the root stays inside [lo, hi] (F(lo) <= 0 <= F(hi)); a Newton
    step that would leave it, or that is not at most half the step before it, is replaced
    by bisection. The second rule (that of Numerical Recipes' ``rtsafe``) matters: where the
    slope F' swings from s near p = 0 to 1 far from it (large s), Newton can bounce between
    two points on either side of the root, each step shrinking the bracket by almost
    nothing; halving whenever a step fails to halve bounds the work by that of bisection.
    F' = tanh^2 + s (1 - tanh^2) is computed from s > 0, never from c + 1, so that it stays
    positive in floating point.
    """
    xp = backend.array_module(v)
    tolerance = max(tolerance, 16 * float(xp.finfo(v.dtype).eps))
    scale = 1 + xp.abs(v) + xp.abs(c)
    lo, hi = v - xp.abs(c), v + xp.abs(c)
    p = v.copy()  # the root when c = 0
    last_step = hi - lo  # the size of the step before the current one (no step yet: the bracket)
    for step in range(max_iterations + 1):
        t = xp.tanh(p)
        residual = p + c * t - v
        done = xp.abs(residual) <= tolerance * scale
        # A synchronisation on a GPU. Not at step 0: the start p = v is the root only when
        # c = 0, so that test would cost one sync per call and almost never stop the loop.
        if (step > 0 and step % CHECK_EVERY == 0) or step == max_iterations:
            if bool(xp.all(done)):
                return p
            if step == max_iterations:
                break
        lo = xp.where(residual < 0, p, lo)
        hi = xp.where(residual > 0, p, hi)
        newton_step = residual / (t * t + s * (1 - t * t))
        newton = p - newton_step
        use_newton = (newton > lo) & (newton < hi) & (2 * xp.abs(newton_step) <= last_step)
        p_next = xp.where(done, p, xp.where(use_newton, newton, 0.5 * (lo + hi)))
        last_step = xp.abs(p_next - p)
        p = p_next
    error = xp.where(done, 0, xp.abs(residual) / scale)
    worst = float(xp.max(error))  # nan if a sample is NaN
    failed = int(xp.sum(~done))
    note = "; the input holds NaN or inf" if not bool(xp.all(xp.isfinite(v))) else ""
    raise RuntimeError(
        f"Planar.forward: the root-finding did not converge for {failed} of {v.size} samples in "
        f"{max_iterations} iterations (worst relative residual {worst:.3g}, "
        f"tolerance {tolerance:.3g}){note}; raise max_iterations or tolerance"
    )


class Radial(Flow):
    """The radial flow: push points away from (or pull them towards) a centre z0.

    Generative map (the paper's, computed by ``inverse``), per sample::

        x = g(z) = z + beta h(r) (z - z0),     r = |z - z0|,   h(r) = 1 / (alpha + r)

    It moves z along the ray from z0, scaling its distance r to
    rho(r) = r (1 + beta h(r)).

    Jacobian. With h'(r) = -1 / (alpha + r)^2 and dr/dz = (z - z0)^T / r::

        dg/dz = (1 + beta h) I + beta h'(r) (z - z0)(z - z0)^T / r

    a multiple of I plus rank one. The D - 1 directions orthogonal to z - z0 are scaled by
    1 + beta h, the radial one by 1 + beta h + beta h'(r) r = rho'(r), so

        log|det dg/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r).

    Invertibility (paper, appendix A.2). g is invertible when rho is increasing, which
    holds for every r exactly when beta >= -alpha (rho'(0) = 1 + beta / alpha). The
    parameters are free; the layer uses

        alpha = softplus(alpha_raw) > 0,     beta = -alpha + softplus(beta_raw) > -alpha.

    With gap = alpha + beta = softplus(beta_raw) > 0 both factors are sums of positive
    terms, the form the code uses (no cancellation, no log of a negative number)::

        1 + beta h               = (gap + r) / (alpha + r)
        1 + beta h + beta h' r   = (r^2 + 2 alpha r + alpha gap) / (alpha + r)^2

    Normalizing map (``forward``), in closed form. Given x, R = |x - z0| = rho(r), i.e.
    R (alpha + r) = r (gap + r), a quadratic r^2 + (gap - R) r - alpha R = 0 whose roots
    have product -alpha R <= 0: exactly one is >= 0,

        r = (q + sqrt(q^2 + 4 alpha R)) / 2 = 2 alpha R / (sqrt(q^2 + 4 alpha R) - q),   q = R - gap

    (the first form for q >= 0, the second for q < 0: neither subtracts nearly equal
    numbers). Then z = z0 + (x - z0) (alpha + r) / (gap + r). Being closed form, it is
    differentiated like any other expression: exact gradients, no iteration, no tolerance.
    At the centre itself (r = 0) the norm |z - z0| has no derivative; the code uses the
    subgradient 0 there, so that one sample landing on z0 cannot make a gradient NaN.

    Parameters: ``z0`` (D,), ``alpha_raw``, ``beta_raw`` ((1,) each). Initialisation:
    z0 ~ N(0, 1) (centres spread over data of unit scale), alpha_raw, beta_raw ~
    N(0, 0.1^2), so that beta ~ 0: a fresh layer is close to, but not, the identity.

    Cost: O(D) per sample each way.

    Reference: Rezende & Mohamed (2015), section 4.1 and appendix A.2; Tabak & Turner
    (2013) for radial maps in density estimation.
    """

    def __init__(self, dim, seed=None):
        dim = check_dim(dim, "Radial")
        rng = backend.rng(seed)
        self.z0 = Parameter(_normal(rng, (dim,), 1.0))
        self.alpha_raw = Parameter(_normal(rng, (1,), 0.1))
        self.beta_raw = Parameter(_normal(rng, (1,), 0.1))
        self.event_shape = (dim,)

    def constrained(self):
        """(alpha, beta, gap): alpha > 0, beta > -alpha and gap = alpha + beta > 0."""
        alpha, gap = ops.softplus(self.alpha_raw), ops.softplus(self.beta_raw)
        return alpha, gap - alpha, gap

    def _log_det(self, r, alpha, gap):
        """log|det dg/dz| at distance r from z0 (the generative map's), (B,)."""
        log_alpha_r = ops.log(alpha + r)
        tangential = ops.log(gap + r) - log_alpha_r  # log(1 + beta h)
        radial = ops.log(r * r + 2 * alpha * r + alpha * gap) - 2 * log_alpha_r  # log rho'(r)
        return (self.event_shape[0] - 1) * tangential + radial

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        alpha, _, gap = self.constrained()
        offset = z - self.z0
        r = _norm(offset)
        # x = z + beta h(r) (z - z0), written with 1 + beta h = (gap + r) / (alpha + r): as
        # 1 + beta h it would cancel to rounding noise for a strong contraction (gap << alpha).
        x = self.z0 + offset * _column((gap + r) / (alpha + r))
        return x, self._log_det(r, alpha, gap)

    def forward(self, x, context=None):
        x = self._check_input(x)
        alpha, _, gap = self.constrained()
        offset = x - self.z0
        distance = _norm(offset)  # R = rho(r)
        q = distance - gap
        root = ops.sqrt(q * q + 4 * alpha * distance)
        negative = q.data < 0
        # Both branches are computed; the unused one gets a harmless denominator so that
        # neither its value nor its gradient is NaN.
        r = ops.where(negative, 2 * alpha * distance / ops.where(negative, root - q, 1.0), 0.5 * (q + root))
        z = self.z0 + offset * _column((alpha + r) / (gap + r))
        return z, -self._log_det(r, alpha, gap)

    def extra_repr(self):
        return f"dim={self.event_shape[0]}"
