"""A normalizing flow model: a flow plus a base distribution.

Change of variables. If z = f(x) with f invertible and differentiable, then

    p_X(x) = p_Z(f(x)) |det df/dx|,   so   log p_X(x) = log p_Z(z) + log|det df/dx|.

Training maximises this over data (minimises the negative log-likelihood); sampling draws
z from the base and maps it back through f^{-1}.

A conditional model is the same with a context c (a label, an observation) given to the flow:
p(x | c) = p_Z(f(x; c)) |det df/dx (x; c)|, a density of x for every c, trained on (x, c)
pairs by the same maximum likelihood, and sampled for a chosen c.
"""

from . import backend
from .autodiff import Tensor, no_grad, ops
from .distributions import StandardNormal
from .flows.base import REAL_LINE, Flow, call_with_context
from .nn import Module


def _check_base(base, flow):
    """A base must have log_prob and sample, on the flow's latent shape; ValueError otherwise."""
    missing = [name for name in ("log_prob", "sample") if not callable(getattr(base, name, None))]
    if missing:
        raise ValueError(
            f"NormalizingFlow: base must have log_prob and sample methods, {type(base).__name__} lacks {missing}"
        )
    latent = getattr(flow, "latent_shape", flow.event_shape)
    shape = getattr(base, "event_shape", None)
    if latent is not None and shape is not None and tuple(shape) != tuple(latent):
        raise ValueError(
            f"NormalizingFlow: the base's event_shape {tuple(shape)} is not the flow's latent shape {tuple(latent)}"
        )


def _batch_size(x):
    """The number of rows of a batch (an array or a Tensor); 1 for something without a shape,
    so that the flow, which checks its input, is the one to raise."""
    shape = getattr(x, "shape", ())
    return shape[0] if len(shape) else 1


class NormalizingFlow(Module):
    """``NormalizingFlow(flow, base=None)``; the base defaults to N(0, I) on the flow's event shape
    (on its ``latent_shape`` for a flow whose z has another shape than x, such as ``Squeeze``).

    A model, not a flow: it has ``log_prob`` (through ``flow.forward``, the normalizing direction),
    ``nll`` and ``sample`` (through ``flow.inverse``), and no ``forward`` of its own, so that in
    minflow ``forward`` always means the map data -> latent.

    ``base``: any distribution with ``log_prob(z)`` and ``sample(n, seed, dtype, xp)`` on the
    latent shape (``distributions.StandardNormal``, ``DiagonalGaussian``, ``GaussianMixture``);
    a base with parameters is trained and saved with the flow.

    Conditional models (a flow with ``context_dim`` C > 0): every method takes ``context``, a
    (B, C) array or Tensor with one row per sample, or a single row (C,) or (1, C) for all of
    them (a list such as ``[0.0, 1.0]`` is put on the model's device). Giving a context to a
    model that is not conditional is an error, not ignored."""

    def __init__(self, flow, base=None):
        if not isinstance(flow, Flow):
            raise ValueError(f"NormalizingFlow needs a Flow, got {type(flow).__name__}")
        if base is None:
            if flow.event_shape is None:
                raise ValueError("this flow has no event_shape; pass a base distribution explicitly")
            if tuple(flow.output_domain) != REAL_LINE:
                raise ValueError(
                    f"the flow maps data into {flow.output_domain}, but the default base N(0, I) lives "
                    "on the whole real line; end the flow with a map onto it (a Logit after a "
                    "Sigmoid, say) or pass a base distribution on that domain"
                )
            base = StandardNormal(getattr(flow, "latent_shape", flow.event_shape))
        _check_base(base, flow)
        self.flow, self.base = flow, base

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "a NormalizingFlow is not called like a layer: use model.log_prob(x) for log p(x), "
            "model.nll(x) for the training loss, model.sample(n) for samples, model.flow(x) for (z, log_det)"
        )

    @property
    def context_dim(self):
        """C, the width of the context the model is conditioned on (0: not conditional)."""
        return self.flow.context_dim

    def log_prob(self, x, context=None):
        """log p(x) (or log p(x | context)) for a batch, shape (B,): base log-density at
        z = f(x) plus the log-det."""
        z, log_det = call_with_context(self.flow.forward, x, self._context_rows(context, _batch_size(x)))
        return self.base.log_prob(z) + log_det

    def nll(self, x, context=None):
        """The training loss: mean negative log-likelihood (in nats) of the batch."""
        return -ops.mean(call_with_context(self.log_prob, x, context))

    def sample(self, n, seed=None, context=None):
        """``n`` samples x = f^{-1}(z), z ~ base (given ``context``: n rows, or one row for all),
        as an array of the model's backend."""
        context = self._context_rows(context, n)
        z = self.base.sample(n, seed=seed, dtype=self.float_dtype(), xp=self.array_module())
        with no_grad():
            x, _ = call_with_context(self.flow.inverse, Tensor(z), context)
        return x.data

    def _context_rows(self, context, batch):
        """``context`` with one row per sample: a single row (C,) or (1, C) is repeated ``batch``
        times (a broadcast, no copy). Raises ValueError for a context given to a model that is
        not conditional; the flow checks the rest (a missing context, a wrong width)."""
        if context is None:
            return None
        if not self.context_dim:
            raise ValueError(
                "this model is not conditional (its flow reads no context), but a context was given; "
                "build the flow with context_dim=C to condition it"
            )
        if isinstance(context, (list, tuple)):  # a row written out, [0.0, 1.0]: on the model's device
            context = backend.to_device(context, dtype=self.float_dtype(), xp=self.array_module())
        context = context if isinstance(context, Tensor) else Tensor(context)
        if context.ndim == 1:
            context = ops.reshape(context, (1, -1))
        if context.ndim == 2 and context.shape[0] == 1 and batch != 1:
            context = ops.broadcast_to(context, (batch, context.shape[1]))
        return context

    def __repr__(self):
        return f"NormalizingFlow(\n  flow={self.flow!r},\n  base={self.base!r}\n)"


# --- builders: ready-made models with sensible defaults ----------------------------------------
def realnvp(dim, layers=8, hidden=64, depth=2, scale_bound=2.0, seed=None, context_dim=0):
    """RealNVP (Dinh et al. 2017): ``layers`` affine couplings that alternate which half is kept.

    Each conditioner is an MLP with ``depth`` hidden layers of ``hidden`` ReLU units and a
    zero-initialised last layer, so the untrained model is the identity and its density
    is the base N(0, I). ``context_dim`` C > 0: a conditional RealNVP, every conditioner also
    reading the (B, C) context.
    """
    from .flows.base import Sequential
    from .flows.coupling import AffineCoupling, half_mask

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    couplings = [
        AffineCoupling(
            half_mask(dim, first=i % 2 == 0),
            hidden=(hidden,) * depth,
            scale_bound=scale_bound,
            seed=rng,
            context_dim=context_dim,
        )
        for i in range(layers)
    ]
    return NormalizingFlow(Sequential(couplings))


def spline_coupling_flow(dim, layers=4, bins=8, bound=4.0, hidden=64, depth=2, seed=None, context_dim=0):
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline couplings with an
    LU-parametrised linear layer after each, so that every coordinate mixes with every other.
    Splines act on [-bound, bound] (standardised data lives there) and are the identity outside.
    """
    from .flows.base import Sequential
    from .flows.coupling import SplineCoupling, half_mask
    from .flows.linear import LULinear

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    flows = []
    for i in range(layers):
        flows.append(
            SplineCoupling(
                half_mask(dim, first=i % 2 == 0),
                bins=bins,
                bound=bound,
                hidden=(hidden,) * depth,
                seed=rng,
                context_dim=context_dim,
            )
        )
        flows.append(LULinear(dim))
    return NormalizingFlow(Sequential(flows))


def nice(dim, layers=4, hidden=64, depth=2, seed=None, context_dim=0):
    """NICE (Dinh et al. 2014): additive couplings alternating halves, then one diagonal
    scaling layer - the only part that can change volume, since every coupling has log-det 0."""
    from .flows.base import Sequential
    from .flows.coupling import AdditiveCoupling, half_mask
    from .flows.elementwise import ElementwiseAffine

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    flows = [
        AdditiveCoupling(half_mask(dim, first=i % 2 == 0), hidden=(hidden,) * depth, seed=rng, context_dim=context_dim)
        for i in range(layers)
    ]
    return NormalizingFlow(Sequential(flows + [ElementwiseAffine(dim)]))


def _autoregressive_stack(dim, layers, make_layer):
    """Autoregressive layers with the order reversed between them (MAF's choice), so each
    coordinate is conditioned on the others somewhere in the stack."""
    from .flows.base import Sequential
    from .flows.linear import Reverse

    flows = []
    for i in range(layers):
        flows.append(make_layer())
        if i < layers - 1:
            flows.append(Reverse(dim))
    return NormalizingFlow(Sequential(flows))


def maf(dim, layers=5, hidden=64, depth=2, seed=None, context_dim=0):
    """Masked autoregressive flow (Papamakarios et al. 2017): affine MAF layers, order reversed
    between them. Density in one pass per layer; sampling in D passes per layer.
    ``context_dim`` C > 0: a conditional MAF (every MADE also reads the (B, C) context)."""
    from .flows.autoregressive import MaskedAutoregressive

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    return _autoregressive_stack(
        dim, layers, lambda: MaskedAutoregressive(dim, hidden=(hidden,) * depth, seed=rng, context_dim=context_dim)
    )


def iaf(dim, layers=5, hidden=64, depth=2, seed=None, context_dim=0):
    """Inverse autoregressive flow (Kingma et al. 2016): MAF's mirror. Sampling in one pass
    per layer; density in D passes per layer (cheap for 2-D data, slow in high dimension)."""
    from .flows.autoregressive import InverseAutoregressive

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    return _autoregressive_stack(
        dim, layers, lambda: InverseAutoregressive(dim, hidden=(hidden,) * depth, seed=rng, context_dim=context_dim)
    )


def spline_autoregressive_flow(dim, layers=3, bins=8, bound=4.0, hidden=64, depth=2, seed=None, context_dim=0):
    """Autoregressive neural spline flow (Durkan et al. 2019): MAF layers whose transformer is
    a rational-quadratic spline, order reversed between them."""
    from .flows.autoregressive import SplineAutoregressive

    _check_builder(dim, layers)
    rng = backend.rng(seed)
    return _autoregressive_stack(
        dim,
        layers,
        lambda: SplineAutoregressive(dim, bins, bound, hidden=(hidden,) * depth, seed=rng, context_dim=context_dim),
    )


def glow(shape=(1, 8, 8), scales=2, steps_per_scale=4, hidden=128, depth=2, scale_bound=2.0, seed=None, context_dim=0):
    """Glow-style multi-scale flow for images of ``shape`` (C, H, W) (Kingma & Dhariwal 2018).

    ``scales`` times: squeeze, ``steps_per_scale`` steps of [ActNormImage, InvertibleConv1x1,
    AffineCoupling on a channel mask], factor out half the channels (not after the last).
    Conditioners are MLPs with ``depth`` hidden layers of ``hidden`` units on the flattened
    kept half (minflow has no convolutions). See ``minflow/flows/multiscale.py``.

    Start: every ActNormImage waits for its first batch (data-dependent initialisation),
    every 1x1 convolution is a random rotation and every coupling is the identity, so
    before any data the model is an orthogonal map of N(0, I): ``sample`` returns base
    samples rotated, with the same norms.
    """
    from .flows.multiscale import MultiScale

    flow = MultiScale(
        shape,
        scales=scales,
        steps_per_scale=steps_per_scale,
        hidden=(hidden,) * depth,
        scale_bound=scale_bound,
        seed=seed,
        context_dim=context_dim,
    )
    return NormalizingFlow(flow)


def planar_flow(dim, layers=16, seed=None):
    """Planar flows (Rezende & Mohamed 2015): ``layers`` Planar layers. Sampling (inverse) is
    closed form, O(D) per layer; density (forward) solves a 1-D root per layer, so these suit
    reverse-KL fitting (``train.fit_to_density``) better than maximum likelihood."""
    from .flows.base import Sequential
    from .flows.planar import Planar

    _check_layers(dim, layers)
    rng = backend.rng(seed)
    return NormalizingFlow(Sequential([Planar(dim, seed=rng) for _ in range(layers)]))


def radial_flow(dim, layers=16, seed=None):
    """Radial flows (Rezende & Mohamed 2015): ``layers`` Radial layers, closed form both ways."""
    from .flows.base import Sequential
    from .flows.planar import Radial

    _check_layers(dim, layers)
    rng = backend.rng(seed)
    return NormalizingFlow(Sequential([Radial(dim, seed=rng) for _ in range(layers)]))


def _check_layers(dim, layers):
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")


def _check_builder(dim, layers):
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2 (a coupling needs a coordinate on each side), got {dim!r}")
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")


MODELS = {
    "nice": nice,
    "realnvp": realnvp,
    "maf": maf,
    "iaf": iaf,
    "spline": spline_coupling_flow,
    "spline_maf": spline_autoregressive_flow,
}

# Builders whose first argument is an image shape (C, H, W), not a dimension. They are kept
# apart from MODELS, whose every entry is called as MODELS[name](dim, layers=..., hidden=...).
IMAGE_MODELS = {
    "glow": glow,
}


# Models that are not a NormalizingFlow: the continuously indexed flow (minflow/cif.py) has a
# latent index as well as a latent z, and a log-likelihood it estimates rather than computes.
INDEXED_MODELS = ("cif",)

BASES = ("normal", "diagonal", "mixture")


def make_base(name, shape, components=8, seed=None):
    """The base distribution ``name`` on events of ``shape``: "normal" N(0, I), "diagonal" a
    Gaussian with learnable mean and scale, "mixture" a mixture of ``components`` learnable
    diagonal Gaussians (vectors only; its means start apart, drawn with ``seed``)."""
    from .distributions import DiagonalGaussian, GaussianMixture

    if name not in BASES:
        raise ValueError(f"unknown base {name!r}; choose one of {list(BASES)}")
    shape = tuple(shape)
    if name == "normal":
        return StandardNormal(shape)
    if name == "diagonal":
        return DiagonalGaussian(shape)
    if len(shape) != 1:
        raise ValueError(f"the mixture base is for vectors, event shape (D,), not {shape}; use 'normal' or 'diagonal'")
    return GaussianMixture(shape[0], components=components, seed=seed)


def build(name, dim, base="normal", components=8, **options):
    """``MODELS[name](dim, **options)`` with the base ``base`` (see :func:`make_base`), with a
    clear error for an unknown name.

    ``dim`` is the dimension of a vector model (``MODELS``, and "cif": ``cif.cif_realnvp``), or
    the image shape (C, H, W) of an image model (``IMAGE_MODELS``). The base is seeded with
    ``options["seed"]``.
    """
    builders = {**MODELS, **IMAGE_MODELS, **dict.fromkeys(INDEXED_MODELS)}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(builders)}")
    if (name in IMAGE_MODELS) != isinstance(dim, (tuple, list)):
        kind = "an image shape (C, H, W)" if name in IMAGE_MODELS else "an int dimension"
        raise ValueError(f"model {name!r} is built for {kind}, got {dim!r}")
    dim = tuple(dim) if isinstance(dim, list) else dim
    if name == "cif":
        from .cif import cif_realnvp

        if base != "normal" or options.get("context_dim"):
            raise ValueError("the continuously indexed flow is built with the normal base and no context")
        options.pop("context_dim", None)
        return cif_realnvp(dim, **options)
    model = builders[name](dim, **options)
    if base == "normal":
        return model
    shape = getattr(model.flow, "latent_shape", model.flow.event_shape)
    return NormalizingFlow(model.flow, make_base(base, shape, components, options.get("seed")))
