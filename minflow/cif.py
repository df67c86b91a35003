"""Continuously indexed flows (CIFs): a flow whose every layer is a family of bijections.

Why. A bijection cannot change topology: a flow from N(0, I) to two separated clusters must
keep a thin bridge of mass between them, because a continuous invertible map cannot tear one
connected blob in two. A CIF relaxes the bijectivity of the model, not of its layers: layer
l is a *family* of bijections indexed by a continuous variable u_l, and the index is random.

The model, generative direction (z_L is the latent, z_0 = x the data)::

    z_L ~ p_Z                                       the base, N(0, I) by default
    for l = L, ..., 1:
        u_l ~ p_l(u | z_l)                          Gaussian, mean and log-scale from an MLP of z_l
        z_{l-1} = F_l^{-1}(z_l; u_l)
    x = z_0

with, for each fixed u, the bijection of x (an affine map of f(x) whose scale and shift depend
on u, the choice of Cornish et al. 2020; their code writes it (f(x) + t'(u)) exp(s'(u)), the
same family with s' = -s and t' = -t exp(s))::

    F(x; u) = exp(-s(u)) * f(x) - t(u),        F^{-1}(z; u) = f^{-1}(exp(s(u)) * (z + t(u)))

f is any minflow Flow, s and t are an MLP of u. Its Jacobian in x is diag(exp(-s(u))) df/dx:

    log|det dF/dx| = log|det df/dx| - sum_i s_i(u).

The joint density, by change of variables. For fixed u the map (z_{l-1}, u) -> (z_l, u) =
(F_l(z_{l-1}; u), u) is a bijection of the pair, with a block-triangular Jacobian::

    d(z_l, u)            [ dF/dz_{l-1}   dF/du ]
    ---------------  =   [                     ],      det = det dF/dz_{l-1}
    d(z_{l-1}, u)        [      0          I   ]

so the density of (z_{l-1}, u_l) is that of (z_l, u_l), p(z_l) p_l(u_l | z_l), times
|det dF_l/dz_{l-1}|. Layer by layer, with z_0 = x and z_l = F_l(z_{l-1}; u_l)::

    log p(x, u_1..u_L) = log p_Z(z_L) + sum_l [ log|det dF_l/dz_{l-1}| + log p_l(u_l | z_l) ].

The likelihood p(x) = integral of p(x, u) du has no closed form. An *inference* distribution
q(u | x) = prod_l q_l(u_l | z_{l-1}) (Gaussians, mean and log-scale from an MLP of the
layer's input) samples the indices layer by layer, in the normalizing direction.

The bound (the ELBO). For any q that is positive where p(x, .) is, and since log is concave
(Jensen's inequality)::

    log p(x) = log E_q[ p(x, u) / q(u | x) ]  >=  E_q[ log p(x, u) - log q(u | x) ] = ELBO(x),

with gap KL(q(u | x) || p(u | x)). One draw u ~ q gives an unbiased estimate of the ELBO,
and writing u = mean + exp(log_scale) * eps with eps ~ N(0, I) (the reparametrisation) makes
it a differentiable function of every parameter: ``nll`` is minus its batch mean.

The importance-weighted bound (Burda, Grosse, Salakhutdinov 2016, "Importance weighted
autoencoders", theorem 1). With K independent draws u^(k) ~ q and weights
w_k = p(x, u^(k)) / q(u^(k) | x), each with E_q[w_k] = p(x)::

    L_K(x) = E[ log (1/K) sum_k w_k ]  <=  log E[ (1/K) sum_k w_k ] = log p(x)     (Jensen again)

L_1 is the ELBO; L_K <= L_{K+1} (the mean of K+1 weights is an average of means of K of
them); and L_K -> log p(x) as K -> infinity when the weights are bounded (the average
converges to p(x) by the law of large numbers). The gap falls roughly like Var[w/p(x)] / 2K.
``log_prob`` returns one sample of the bracket, log sum_k w_k - log K, computed from the
log-weights with logsumexp (max_k log w_k + log sum_k exp(log w_k - max)), which cannot overflow.

Randomness: every random method takes ``seed`` (an int or a Generator); ``seed=None`` draws
from the model's own Generator, ``model.rng``, seeded once at construction, so a training
run (``nll`` at every step, ``log_prob`` at every validation) is reproducible from the seed
given to the constructor, with no global random state. (A resumed ``train.fit`` continues
with the Generator as it is, not as it was at the checkpoint.)

Cost per draw: one pass through each f_l plus three small MLPs per layer; ``log_prob`` with
K draws costs K ELBO passes. Reference: Cornish, Caterini, Deligiannidis, Doucet (2020),
"Relaxing bijectivity constraints with continuously indexed normalising flows", ICML.
"""

import math

from . import backend
from .autodiff import Tensor, no_grad, ops
from .distributions import StandardNormal
from .flows.base import REAL_LINE, Flow, check_int, check_positive
from .flows.coupling import AffineCoupling, half_mask
from .nn import MLP, Module

DEFAULT_K = 100  # importance samples per point in log_prob: validation costs 100 ELBO passes
ROWS_PER_PASS = 2**16  # log_weights evaluates at most this many (draw, point) rows at once


def gaussian_log_prob(u, mean, log_scale):
    """log N(u; mean, diag(exp(log_scale))^2), summed over the last axis: (B, d) -> (B,)."""
    standardized = (u - mean) * ops.exp(-log_scale)
    return ops.sum(-0.5 * standardized * standardized - log_scale, axis=1) - 0.5 * u.shape[1] * math.log(2 * math.pi)


def _draw(mean, log_scale, rng):
    """u = mean + exp(log_scale) * eps, eps ~ N(0, I): a Gaussian draw, differentiable in both."""
    eps = rng.standard_normal(tuple(mean.shape), dtype=mean.dtype)
    return mean + ops.exp(log_scale) * Tensor(eps)


def _split(output, size):
    """The two halves (B, size) of an MLP's output (B, 2 size): (mean, log_scale) or (s, t)."""
    return output[:, :size], output[:, size:]


class CIFLayer(Module):
    """One CIF layer: z = F(x; u) = exp(-s(u)) * f(x) - t(u), with p(u | z) and q(u | x).

    ``flow``: a Flow on vectors (event shape (D,)) whose outputs are on the whole real line.
    ``index_dim``: d_u, the size of u. Three MLPs with ``hidden`` units per hidden layer and
    ``activation``: (s, t) from u, (mean, log_scale) of p(u | z) from z, and (mean, log_scale)
    of q(u | x) from x. Their last layers start at zero, so an untrained layer is f itself
    (s = t = 0) and p = q = N(0, I): the ELBO is then exactly the flow's log-likelihood.
    ``scale_bound``: s is bounded by scale_bound * tanh (as in RealNVP; None: unbounded).
    """

    def __init__(self, flow, index_dim=1, hidden=(32, 32), activation="relu", scale_bound=2.0, seed=None):
        if not isinstance(flow, Flow):
            raise ValueError(f"CIFLayer: flow must be a Flow, got {type(flow).__name__}")
        if flow.event_shape is None or len(flow.event_shape) != 1:
            raise ValueError(f"CIFLayer: flow must act on vectors, event_shape (D,), got {flow.event_shape}")
        if tuple(flow.output_domain) != REAL_LINE:
            raise ValueError(f"CIFLayer: flow must map onto the real line, got output domain {flow.output_domain}")
        self.flow = flow
        self.dim = flow.event_shape[0]
        self.index_dim = check_int(index_dim, "index_dim", "CIFLayer", minimum=1)
        self.scale_bound = None if scale_bound is None else check_positive(scale_bound, "scale_bound", "CIFLayer")
        rng = backend.rng(seed)
        hidden = list(hidden)
        self.scale_shift_net = MLP([self.index_dim, *hidden, 2 * self.dim], activation, zero_last=True, seed=rng)
        self.prior_net = MLP([self.dim, *hidden, 2 * self.index_dim], activation, zero_last=True, seed=rng)
        self.posterior_net = MLP([self.dim, *hidden, 2 * self.index_dim], activation, zero_last=True, seed=rng)

    def scale_and_shift(self, u):
        """s(u), t(u), each (B, D)."""
        s, t = _split(self.scale_shift_net(u), self.dim)
        return (s if self.scale_bound is None else ops.soft_clamp(s, self.scale_bound)), t

    def forward(self, x, u):
        """z = exp(-s(u)) * f(x) - t(u) and log|det dz/dx| = log|det df/dx| - sum_i s_i(u), (B,)."""
        s, t = self.scale_and_shift(u)
        y, log_det = self.flow.forward(x)
        z = ops.affine(y, -t, -s)  # ops.affine(y, shift, log_scale) = y * exp(log_scale) + shift, fused
        return z, log_det - ops.sum(s, axis=1)

    def inverse(self, z, u):
        """x = f^{-1}(exp(s(u)) * (z + t(u))) and log|det dx/dz| = log|det df^{-1}/dy| + sum_i s_i(u)."""
        s, t = self.scale_and_shift(u)
        x, log_det = self.flow.inverse((z + t) * ops.exp(s))
        return x, log_det + ops.sum(s, axis=1)

    def prior(self, z):
        """Mean and log-scale (each (B, d_u)) of p(u | z), the generative index distribution."""
        return _split(self.prior_net(z), self.index_dim)

    def posterior(self, x):
        """Mean and log-scale (each (B, d_u)) of q(u | x), the inference distribution."""
        return _split(self.posterior_net(x), self.index_dim)

    def index_log_prob(self, u, z):
        """log p(u | z), (B,)."""
        return gaussian_log_prob(u, *self.prior(z))

    def infer_index(self, x, rng):
        """u ~ q(. | x), reparametrised, and log q(u | x), (B,)."""
        mean, log_scale = self.posterior(x)
        u = _draw(mean, log_scale, rng)
        return u, gaussian_log_prob(u, mean, log_scale)

    def sample_index(self, z, rng):
        """u ~ p(. | z)."""
        return _draw(*self.prior(z), rng)

    def __repr__(self):
        return f"CIFLayer(flow={self.flow!r}, index_dim={self.index_dim})"


class ContinuouslyIndexedFlow(Module):
    """``ContinuouslyIndexedFlow(layers, base=None, seed=None)``: a CIF (see the module docstring).

    ``layers``: CIFLayers on the same dimension D, in the normalizing order (layer 1 sees x).
    ``base``: N(0, I) by default, or any object with ``log_prob(z) -> (B,)`` and
    ``sample(n, seed=None, dtype=None, xp=None) -> array``. ``seed``: seeds ``self.rng``, the
    Generator behind every random method called with ``seed=None``.

    A model, like ``NormalizingFlow`` (not a Flow: x -> z is random, not a bijection):
    ``elbo``, ``nll`` (what ``train.fit`` minimises), ``log_prob`` (the importance-weighted
    estimate ``train.fit`` validates with), ``log_prob_estimate`` and ``sample``. It is not
    conditional: ``log_prob``, ``nll``, ``elbo`` and ``sample`` take ``context`` where a
    ``NormalizingFlow``'s do, and refuse anything but None.
    """

    context_dim = 0  # not conditional

    def __init__(self, layers, base=None, seed=None):
        layers = list(layers)
        if not layers or not all(isinstance(layer, CIFLayer) for layer in layers):
            raise ValueError("ContinuouslyIndexedFlow: layers must be a non-empty list of CIFLayer objects")
        dims = [layer.dim for layer in layers]
        if len(set(dims)) != 1:
            raise ValueError(f"ContinuouslyIndexedFlow: every layer must have the same dimension, got {dims}")
        for i, layer in enumerate(layers[1:], start=2):
            if tuple(layer.flow.input_domain) != REAL_LINE:
                raise ValueError(
                    f"ContinuouslyIndexedFlow: layer {i} gets inputs on the real line, but its flow needs "
                    f"{layer.flow.input_domain}"
                )
        self.layers, self.dim = layers, dims[0]
        self.base = StandardNormal(self.dim) if base is None else base
        self.rng = backend.rng(seed, self.array_module())

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "a ContinuouslyIndexedFlow is not called like a layer: use model.elbo(x), model.nll(x), "
            "model.log_prob(x, k=...) or model.sample(n)"
        )

    def _check_context(self, context):
        if context is not None:
            raise ValueError(
                "ContinuouslyIndexedFlow is not conditional: context must be None, got a "
                f"{type(context).__name__} (pass k and seed by name: log_prob(x, k=..., seed=...))"
            )

    def _generator(self, seed):
        return self.rng if seed is None else backend.rng(seed, self.array_module())

    def _check_x(self, x):
        array = x.data if isinstance(x, Tensor) else x
        module = self.array_module()
        if backend.is_array(array) and backend.array_module(array) is not module:
            raise ValueError(
                f"ContinuouslyIndexedFlow: x is a {type(array).__module__.split('.')[0]} array but the model's "
                f"parameters are {module.__name__} arrays; move one of them (minflow.backend.to_device / to_numpy)"
            )
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ContinuouslyIndexedFlow: x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return x

    def _log_weight(self, x, rng):
        """log w = log p(x, u) - log q(u | x) for one draw u ~ q(. | x) per row: (B,)."""
        terms, z = [], x
        for layer in self.layers:
            u, log_q = layer.infer_index(z, rng)  # u_l ~ q_l(. | z_{l-1})
            z, log_det = layer(z, u)  # z_l = F_l(z_{l-1}; u_l)
            log_p = layer.index_log_prob(u, z)  # p_l(u_l | z_l)
            terms.append(log_det + log_p - log_q)
        return self.base.log_prob(z) + ops.sum(ops.stack(terms, axis=0), axis=0)

    def elbo(self, x, context=None, seed=None):
        """One-draw estimate of the ELBO of each row of ``x`` (B, D): a (B,) Tensor, differentiable."""
        self._check_context(context)
        return self._log_weight(self._check_x(x), self._generator(seed))

    def nll(self, x, context=None):
        """The training loss: minus the batch mean of the ELBO, an upper bound on the NLL (nats)."""
        return -ops.mean(self.elbo(x, context))

    def log_weights(self, x, k, seed=None, rows_per_pass=ROWS_PER_PASS):
        """log w_k for k independent draws per row of ``x`` (B, D): a (k, B) Tensor.

        The k draws run as (draws * B) rows at a time, at most ``rows_per_pass`` rows (and
        at least one draw) per pass, so that without a graph (under ``no_grad``, as
        ``log_prob`` runs it) memory stays bounded whatever k is. Differentiable otherwise:
        ``-mean(logsumexp(log_weights) - log k)`` is the importance-weighted training loss."""
        x = self._check_x(x)
        k = check_int(k, "k", "ContinuouslyIndexedFlow.log_weights", minimum=1)
        rows_per_pass = check_int(rows_per_pass, "rows_per_pass", "ContinuouslyIndexedFlow.log_weights", minimum=1)
        rng, (batch, dim) = self._generator(seed), x.shape
        per_pass = max(1, min(k, rows_per_pass // batch))
        chunks, done = [], 0
        while done < k:
            m = min(per_pass, k - done)
            copies = ops.reshape(ops.broadcast_to(ops.reshape(x, (1, batch, dim)), (m, batch, dim)), (m * batch, dim))
            chunks.append(ops.reshape(self._log_weight(copies, rng), (m, batch)))  # row j * B + b: draw j of x_b
            done += m
        return chunks[0] if len(chunks) == 1 else ops.concatenate(chunks, axis=0)

    def log_prob(self, x, context=None, k=DEFAULT_K, seed=None):
        """The importance-weighted estimate log (1/k) sum_k w_k of log p(x), one per row: (B,).

        A lower bound in expectation (L_k), tighter as ``k`` grows; k = 1 is the ELBO. An
        evaluation, not a loss: it records no graph, so its memory stays bounded (train on
        ``nll``, or on ``log_weights`` for the importance-weighted objective)."""
        self._check_context(context)
        k = check_int(k, "k", "ContinuouslyIndexedFlow.log_prob", minimum=1)
        with no_grad():
            return ops.logsumexp(self.log_weights(x, k, seed), axis=0) - math.log(k)

    def log_prob_estimate(self, x, k=DEFAULT_K, repeats=10, seed=None):
        """(estimate, standard_error): two (B,) arrays on the model's device, without a graph.

        ``repeats`` independent k-draw estimates of each row; the estimate is their mean (its
        expectation is L_k <= log p(x)) and the standard error their sample standard deviation
        (ddof = 1) over sqrt(repeats): the Monte Carlo error of the estimate, not its bias."""
        repeats = check_int(repeats, "repeats", "ContinuouslyIndexedFlow.log_prob_estimate", minimum=2)
        k = check_int(k, "k", "ContinuouslyIndexedFlow.log_prob_estimate", minimum=1)
        with no_grad():
            log_w = self.log_weights(x, k * repeats, seed).data
            log_w = log_w.reshape(repeats, k, log_w.shape[1])
            estimates = ops.logsumexp(Tensor(log_w), axis=1).data - math.log(k)  # (repeats, B)
        return estimates.mean(axis=0), estimates.std(axis=0, ddof=1) / math.sqrt(repeats)

    def sample(self, n, seed=None, context=None):
        """``n`` samples of x as an array of the model's backend: z_L ~ base, then for each layer
        from the top, u_l ~ p_l(. | z_l) and z_{l-1} = F_l^{-1}(z_l; u_l)."""
        self._check_context(context)
        n = check_int(n, "n", "ContinuouslyIndexedFlow.sample", minimum=1)
        rng = self._generator(seed)
        with no_grad():
            z = Tensor(self.base.sample(n, seed=rng, dtype=self.float_dtype(), xp=self.array_module()))
            for layer in reversed(self.layers):
                z, _ = layer.inverse(z, layer.sample_index(z, rng))
        return z.data

    def __repr__(self):
        inner = "".join(f"\n  {layer!r}" for layer in self.layers)
        return f"ContinuouslyIndexedFlow({inner}\n  base={self.base!r}\n)"


def cif_realnvp(dim, layers=8, hidden=64, depth=2, index_dim=1, index_hidden=32, scale_bound=2.0, seed=None):
    """A CIF whose bijections f_l are RealNVP affine couplings alternating halves (Dinh et al. 2017).

    Coupling conditioners: ``depth`` hidden layers of ``hidden`` units (as ``models.realnvp``);
    index networks (s, t; p(u | z); q(u | x)): ``depth`` hidden layers of ``index_hidden``
    units, u of size ``index_dim``. Untrained, it is the untrained RealNVP: the identity.
    Compare with ``models.realnvp`` at equal ``num_parameters()``, not equal ``hidden``.
    """
    dim = check_int(dim, "dim", "cif_realnvp", minimum=2)  # a coupling needs a coordinate on each side
    layers = check_int(layers, "layers", "cif_realnvp", minimum=1)
    rng = backend.rng(seed)
    cif_layers = [
        CIFLayer(
            AffineCoupling(
                half_mask(dim, first=i % 2 == 0), hidden=(hidden,) * depth, scale_bound=scale_bound, seed=rng
            ),
            index_dim=index_dim,
            hidden=(index_hidden,) * depth,
            scale_bound=scale_bound,
            seed=rng,
        )
        for i in range(layers)
    ]
    return ContinuouslyIndexedFlow(cif_layers, seed=rng)
