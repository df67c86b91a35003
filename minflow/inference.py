"""Posterior inference with a conditional flow, on problems whose answer is known exactly.

Simulation-based inference. A simulator draws parameters from a prior, theta ~ p(theta), and
data from them, x ~ p(x | theta); its likelihood may be a program we cannot evaluate. Neural
posterior estimation (Papamakarios & Murray 2016; Greenberg et al. 2019) fits a conditional
flow q(theta | x) to pairs (theta_n, x_n) from the simulator by maximum likelihood,

    max_q  1/N sum_n log q(theta_n | x_n)  ->  min_q  E_x[ KL(p(theta | x) || q(theta | x)) ],

since the pairs are draws of the joint p(theta) p(x | theta) = p(x) p(theta | x): the same
``train.fit(model, theta, context=x)`` as any conditional density. After training, q(. | x_obs)
is a posterior for any observation, with no more simulation ("amortised").

To *measure* how good q is we need problems with an exact posterior:

- ``LinearGaussianSimulator``: a Gaussian prior and linear-Gaussian data, whose posterior is
  Gaussian in closed form (derived in the class docstring).
- ``TwoMoonsSimulator``: the "two moons" benchmark of Greenberg et al. (2019), whose posterior
  is a pair of thin crescents; sampled here exactly, by rejection on the simulator's noise.

and a score, ``posterior_kl``. ``rejection_abc`` is the baseline that needs only a simulator.
Arrays come from ``minflow.backend`` (the default backend); results that are reported, not
computed on (``posterior_kl``), come back as host NumPy arrays and floats.
"""

import math
import numbers
from collections import namedtuple

from . import backend
from .autodiff import Tensor, no_grad


def _check_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_rows(array, width, name, xp):
    """``array`` as an (n, width) array of namespace ``xp``; a single row (width,) becomes (1, width)."""
    array = backend.asarray(array.data if isinstance(array, Tensor) else array, xp=xp)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (n, {width}) or ({width},), got {tuple(array.shape)}")
    return array


class LinearGaussianSimulator:
    """theta ~ N(0, I_d),  x | theta ~ N(A theta, sigma^2 I_m), with A (m, d) fixed: entries
    N(0, 1/d) drawn with ``seed``, so each x_i has variance |A_i|^2 + sigma^2, about 1 + sigma^2.

    The posterior, by completing the square. Up to terms free of theta,

        log p(theta | x) = log p(theta) + log p(x | theta) + const
                         = -1/2 theta^T theta - 1/(2 sigma^2) |x - A theta|^2 + const
                         = -1/2 theta^T (I + A^T A / sigma^2) theta + theta^T A^T x / sigma^2 + const
                         = -1/2 (theta - mu)^T Lambda (theta - mu) + const,

    with the precision Lambda = I + A^T A / sigma^2 and Lambda mu = A^T x / sigma^2. So

        p(theta | x) = N(mu(x), Sigma),   Sigma = (I + A^T A / sigma^2)^{-1},   mu(x) = Sigma A^T x / sigma^2:

    a covariance that is the same for every x, and a mean linear in x (``gain`` K = Sigma A^T /
    sigma^2, mu = K x). Cost: O(d^3) once, then O(n d m) for n observations.

    The baseline: a q that ignores x and returns the prior N(0, I) has E_x KL(p(theta | x) || p(theta))
    = 1/2 E_x[tr Sigma + mu^T mu - d - log det Sigma] = 1/2 log det Lambda = I(theta; x), the mutual
    information, since E_x[mu^T mu] = tr(I - Sigma) (total variance: I = Sigma + Cov[mu(x)]).
    Attributes ``A``, ``precision``, ``covariance``, ``gain``: arrays of the default backend at
    construction; every method computes where they live.
    """

    def __init__(self, d, m, sigma=0.1, seed=0):
        self.d, self.m = _check_int(d, "d"), _check_int(m, "m")
        valid = isinstance(sigma, numbers.Real) and not isinstance(sigma, bool) and math.isfinite(sigma)
        if not valid or sigma <= 0:
            raise ValueError(f"sigma must be a finite number > 0 (the noise's standard deviation), got {sigma!r}")
        self.sigma, xp, dtype = float(sigma), backend.xp(), backend.get_default_dtype()
        self.A = backend.rng(seed, xp).standard_normal((self.m, self.d), dtype=dtype) / math.sqrt(self.d)
        self.precision = xp.eye(self.d, dtype=dtype) + self.A.T @ self.A / self.sigma**2
        self.covariance = xp.linalg.inv(self.precision)
        self.gain = self.covariance @ self.A.T / self.sigma**2
        self._cholesky = xp.linalg.cholesky(self.covariance)  # Sigma = L L^T: theta = mu + L eps
        self._log_det_precision = xp.linalg.slogdet(self.precision)[1]

    def simulate(self, n, seed=None):
        """(theta (n, d), x (n, m)): n draws of the joint p(theta) p(x | theta)."""
        rng, dtype = backend.rng(seed, backend.array_module(self.A)), self.A.dtype
        theta = rng.standard_normal((_check_int(n, "n"), self.d), dtype=dtype)
        return theta, theta @ self.A.T + self.sigma * rng.standard_normal((n, self.m), dtype=dtype)

    def posterior(self, x):
        """(mean (n, d), covariance (d, d)) of p(theta | x) for each row of x (n, m)."""
        return _check_rows(x, self.m, "x", backend.array_module(self.A)) @ self.gain.T, self.covariance

    def posterior_log_prob(self, theta, x):
        """log N(theta; mu(x), Sigma) = -1/2 (theta - mu)^T Lambda (theta - mu) - d/2 log 2 pi + 1/2 log det Lambda,
        for theta (n, d) and x (n, m) (or one row of x for all), shape (n,)."""
        xp = backend.array_module(self.A)
        offset = _check_rows(theta, self.d, "theta", xp) - self.posterior(x)[0]
        quadratic = ((offset @ self.precision) * offset).sum(axis=1)
        return -0.5 * quadratic - 0.5 * self.d * math.log(2 * math.pi) + 0.5 * self._log_det_precision

    def posterior_sample(self, x, n_per_x, seed=None):
        """(n, n_per_x, d): theta = mu(x) + L eps, eps ~ N(0, I), Sigma = L L^T, for each row of x."""
        mean = self.posterior(x)[0]
        rng = backend.rng(seed, backend.array_module(mean))
        eps = rng.standard_normal((mean.shape[0], _check_int(n_per_x, "n_per_x"), self.d), dtype=mean.dtype)
        return mean[:, None, :] + eps @ self._cholesky.T


class TwoMoonsSimulator:
    """The "two moons" benchmark (Greenberg et al. 2019; sbibm's ``two_moons``, Lueckmann et al. 2021):

        theta ~ U([-1, 1]^2),   a ~ U(-pi/2, pi/2),   r ~ N(0.1, 0.01^2),
        p = (r cos a + 0.25, r sin a)                                  (a half ring: the noise)
        x = p + (-|theta1 + theta2| / sqrt 2, (-theta1 + theta2) / sqrt 2).

    The exact posterior. Rotate theta by 45 degrees, u = (theta1 + theta2)/sqrt 2, v = (-theta1 +
    theta2)/sqrt 2 (Jacobian 1; the box becomes the diamond |u| + |v| <= sqrt 2). Then x = p +
    (-|u|, v), so given x the noise is p = (x1 + |u|, x2 - v), and

        p(theta | x)  proportional to  1[theta in box] p_noise(x1 + |u|, x2 - v),

    symmetric in u -> -u: that is why there are two moons. Reading it backwards gives a sampler:
    draw p from its own distribution, set |u| = p1 - x1, v = x2 - p2 and a random sign for u,
    and keep the draw if |u| >= 0 and |u| + |v| <= sqrt 2. The map p -> (|u|, v) has Jacobian 1,
    so the kept draws have exactly the density above. The acceptance rate a(x) is the normaliser:
    the integral of the right-hand side is Z(x) = 2 a(x) (the two signs of u).

    p_noise in polar coordinates around (0.25, 0), (rho, phi): N(rho; 0.1, 0.01^2) / (pi rho) for
    |phi| < pi/2 (a uniform angle, a Gaussian radius, 1/rho the polar area element); the chance
    r < 0 (10 standard deviations away, about 1e-23) is neglected.
    """

    d, m = 2, 2

    def simulate(self, n, seed=None):
        """(theta (n, 2), x (n, 2)) from the joint, on the default backend."""
        n, rng, dtype = _check_int(n, "n"), backend.rng(seed, backend.xp()), backend.get_default_dtype()
        theta = 2 * rng.random((n, 2), dtype=dtype) - 1
        return theta, self._noise(n, rng, dtype) + self._shift(theta)

    def _noise(self, n, rng, dtype):
        angle = math.pi * (rng.random(n, dtype=dtype) - 0.5)
        radius = 0.1 + 0.01 * rng.standard_normal(n, dtype=dtype)
        xp = backend.array_module(angle)
        return xp.stack([radius * xp.cos(angle) + 0.25, radius * xp.sin(angle)], axis=-1)

    @staticmethod
    def _shift(theta):
        return backend.array_module(theta).stack(
            [-abs(theta[..., 0] + theta[..., 1]), theta[..., 1] - theta[..., 0]], axis=-1
        ) / math.sqrt(2)

    def posterior_sample(self, x, n_per_x, seed=None, max_tries=100):
        """(n, n_per_x, 2): exact posterior samples for each row of x (n, 2), by the rejection above.

        Draws rounds of candidates for all rows at once until every row has ``n_per_x``; raises
        ValueError if a row has not after ``max_tries`` rounds (an x the simulator hardly makes)."""
        xp, dtype = backend.xp(), backend.get_default_dtype()
        x, n_per_x = _check_rows(x, 2, "x", xp), _check_int(n_per_x, "n_per_x")
        rng, kept = backend.rng(seed, xp), []
        for _ in range(_check_int(max_tries, "max_tries")):
            theta, accepted = self._candidates(x, n_per_x, rng, dtype)
            kept.append((theta, accepted))
            counts = sum(a.sum(axis=1) for _, a in kept)
            if int(counts.min()) >= n_per_x:  # one synchronisation per round
                theta = xp.concatenate([t for t, _ in kept], axis=1)
                accepted = xp.concatenate([a for _, a in kept], axis=1)
                position = xp.arange(accepted.shape[1])
                first = xp.argsort(xp.where(accepted, position, position + accepted.shape[1]), axis=1)[:, :n_per_x]
                return xp.take_along_axis(theta, first[:, :, None], axis=1)
        raise ValueError(
            f"TwoMoonsSimulator.posterior_sample: x row {int(counts.argmin())}, "
            f"{backend.to_numpy(x[counts.argmin()])}, kept only {int(counts.min())} of {max_tries * n_per_x} "
            "candidates; it lies where the simulator almost never puts x (raise max_tries, or check x)"
        )

    def _candidates(self, x, count, rng, dtype):
        """``count`` candidate thetas per row of x and whether each is kept: (n, count, 2), (n, count)."""
        xp = backend.array_module(x)
        noise = self._noise(x.shape[0] * count, rng, dtype).reshape(x.shape[0], count, 2)
        u = noise[..., 0] - x[:, None, 0]  # |u|, if >= 0
        v = x[:, None, 1] - noise[..., 1]
        accepted = (u >= 0) & (abs(u) + abs(v) <= math.sqrt(2))
        u = xp.where(rng.random(u.shape, dtype=dtype) < 0.5, u, -u)
        return xp.stack([u - v, u + v], axis=-1) / math.sqrt(2), accepted

    def posterior_log_prob(self, theta, x, n_normaliser=200_000, seed=0):
        """log p(theta | x) for theta (n, 2), x (n, 2) (or one row for all): log p_noise(x - shift(theta))
        - log Z(x) inside the box, -inf outside. Z(x) = 2 a(x), with the acceptance rate a(x) estimated
        from ``n_normaliser`` noise draws (the same for every row): relative error sqrt((1 - a) / (a N)),
        0 where every draw is kept (x near the moons' centre), 0.0022 at a = 1/2 and N = 200,000."""
        xp, dtype = backend.xp(), backend.get_default_dtype()
        theta, x = _check_rows(theta, 2, "theta", xp), _check_rows(x, 2, "x", xp)
        noise = x - self._shift(theta)
        rho = xp.sqrt((noise[:, 0] - 0.25) ** 2 + noise[:, 1] ** 2)
        log_noise = -0.5 * ((rho - 0.1) / 0.01) ** 2 - math.log(0.01 * math.sqrt(2 * math.pi)) - xp.log(math.pi * rho)
        inside = (noise[:, 0] > 0.25) & (abs(theta) <= 1).all(axis=1)
        draws = self._noise(_check_int(n_normaliser, "n_normaliser"), backend.rng(seed, xp), dtype)
        rows = max(1, 2_000_000 // n_normaliser)  # rows of x per (rows, N) block: memory stays flat in n
        acceptance = xp.concatenate([self._acceptance(x[i : i + rows], draws) for i in range(0, x.shape[0], rows)])
        return xp.where(inside, log_noise - xp.log(2 * acceptance), -math.inf)

    @staticmethod
    def _acceptance(x, draws):
        """The fraction of noise ``draws`` (N, 2) that the sampler would keep, for each row of x: (n,)."""
        u, v = draws[None, :, 0] - x[:, None, 0], x[:, None, 1] - draws[None, :, 1]
        return ((u >= 0) & (u + abs(v) <= math.sqrt(2))).mean(axis=1)


def rejection_abc(simulator, x_obs, n_sims, keep, seed=None):
    """Rejection ABC (Pritchard et al. 1999), the posterior with nothing but a simulator:
    simulate ``n_sims`` pairs (theta, x), keep the thetas of the ``keep`` x closest to ``x_obs``
    (Euclidean distance). The kept thetas are draws of p(theta | |x - x_obs| <= eps), eps the
    largest kept distance; as eps -> 0 that tends to p(theta | x_obs), at a cost that grows like
    eps^-m (the volume of an m-ball) - the reason for learning q(theta | x) instead.
    Returns (theta (keep, d), eps)."""
    n_sims, keep = _check_int(n_sims, "n_sims"), _check_int(keep, "keep")
    if keep > n_sims:
        raise ValueError(f"keep ({keep}) must be at most n_sims ({n_sims})")
    theta, x = simulator.simulate(n_sims, seed=seed)
    xp = backend.array_module(x)
    distance = xp.sqrt(((x - _check_rows(x_obs, x.shape[1], "x_obs", xp)) ** 2).sum(axis=1))
    closest = xp.argsort(distance)[:keep]
    return theta[closest], float(distance[closest[-1]])


PosteriorKL = namedtuple("PosteriorKL", ["kl", "standard_error", "mean", "mean_standard_error"])
PosteriorKL.__doc__ = (
    "kl, standard_error: (n_x,) host arrays, the estimate for each x and its Monte Carlo standard error; "
    "mean: the mean over x; mean_standard_error: std over x of kl / sqrt(n_x) (the error of mean as an "
    "estimate of E_x KL: it includes the Monte Carlo error; the Monte Carlo one alone for n_x = 1)."
)


def posterior_kl(model, simulator, x, n_samples=1000, seed=None, batch_size=8192):
    """KL(p(theta | x) || q(theta | x)) for each row of x (n_x, m), by Monte Carlo:

        KL = E_{theta ~ p(theta | x)} [log p(theta | x) - log q(theta | x)]
           ~ 1/S sum_s (log p(theta_s | x) - log q(theta_s | x)),   theta_s ~ p(theta | x), S = n_samples,

    with standard error std_s(log p - log q) / sqrt(S). ``model`` is anything with
    ``log_prob(theta, context)`` (a conditional ``NormalizingFlow``); ``simulator`` needs
    ``posterior_sample`` and ``posterior_log_prob``. Returns a ``PosteriorKL``.

    Why this direction: it is the one maximum likelihood minimises (see the module docstring), it
    needs samples of the *exact* posterior (which our simulators give) and only q's *density* at
    them - one forward pass of a coupling flow or a MAF. The other direction, KL(q || p), would
    need q's samples (D sequential passes for a MAF). It is 0 only when q = p, and it punishes
    q for missing posterior mass. A flow trained on standardised theta' = (theta - c) / s must be
    wrapped so that its log_prob is in theta's units: log q(theta) = log q'(theta') - sum log s.
    Cost: S n_x samples and one pass of the model over them, ``batch_size`` rows at a time.
    """
    theta = simulator.posterior_sample(x, n_samples, seed=seed)  # (n_x, S, d)
    xp, (n_x, _, d) = backend.array_module(theta), theta.shape
    theta = theta.reshape(n_x * n_samples, d)
    x = _check_rows(x, simulator.m, "x", xp)
    context = xp.repeat(x, n_samples, axis=0)  # row i: the x of theta row i
    with no_grad():
        chunks = [
            model.log_prob(theta[i : i + batch_size], context[i : i + batch_size])
            for i in range(0, theta.shape[0], batch_size)
        ]
    log_q = xp.concatenate([c.data if isinstance(c, Tensor) else c for c in chunks])
    # log p one x at a time: a simulator may compute something per x (TwoMoonsSimulator's normaliser)
    log_p = xp.stack(
        [simulator.posterior_log_prob(theta[i * n_samples : (i + 1) * n_samples], x[i]) for i in range(n_x)]
    )
    difference = log_p - log_q.reshape(n_x, n_samples)
    kl = backend.to_numpy(difference.mean(axis=1))  # the one synchronisation, with the line below
    standard_error = backend.to_numpy(difference.std(axis=1, ddof=1)) / math.sqrt(n_samples)
    spread = kl.std(ddof=1) / math.sqrt(n_x) if n_x > 1 else float(standard_error[0])
    return PosteriorKL(kl, standard_error, float(kl.mean()), float(spread))
