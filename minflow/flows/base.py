"""The flow contract: every flow is an invertible map with a known log-determinant.

Direction (one convention for all of minflow): ``forward`` is the *normalizing*
direction, data to latent, and ``inverse`` the *generative* one::

    forward(x, context=None) -> (z, log_det)   z = f(x; c),       log_det = log|det df/dx|       (B,)
    inverse(z, context=None) -> (x, log_det)   x = f^{-1}(z; c),  log_det = log|det df^{-1}/dz|  (B,)

At matching points (z = f(x)) the two log-dets are negatives of each other, because the
Jacobian of the inverse is the inverse of the Jacobian.

Context. A *conditional* flow is a family of flows, one for each context c (a label, an
observation, a latent code): f(.; c) is invertible in x for every fixed c, and its
log-det is taken in x only, so p(x | c) = p_Z(f(x; c)) |det df/dx (x; c)| is a normalized
density of x for every c (c is given, never transformed, so it has no Jacobian of its own).
A flow that reads a context of C numbers per sample has ``context_dim`` C and needs a
(B, C) context; every other flow has ``context_dim`` 0 and accepts and ignores one, so a
Sequential can hand the same context to all its layers.

Composition. For f = f_K o ... o f_1 the chain rule multiplies Jacobians, and the
determinant of a product is the product of determinants, so log-dets *add*::

    log|det df/dx| = sum_k log|det df_k/dh_{k-1}|

That one identity is why a flow can be deep yet cheap to evaluate: each layer only has to
know its own log-determinant.
"""

import math
import numbers

from .. import backend
from ..autodiff import Tensor, ops
from ..nn import Module

REAL_LINE = (-math.inf, math.inf)


class Flow(Module):
    """Base class. Subclasses implement ``forward`` and ``inverse`` as in the module docstring.

    Attributes a subclass may set:

    - ``event_shape``: the shape of one sample, e.g. ``(dim,)``; ``None`` accepts any.
    - ``input_domain`` / ``output_domain``: the interval each coordinate of x (resp. z)
      must lie in; real line by default, (0, 1) for Logit's input, for example.
    - ``context_dim``: C, the width of the (B, C) context a conditional flow reads; 0 (the
      default) for a flow that ignores its context.
    """

    event_shape = None
    input_domain = REAL_LINE
    output_domain = REAL_LINE
    context_dim = 0

    def forward(self, x, context=None):
        raise NotImplementedError

    def inverse(self, z, context=None):
        raise NotImplementedError

    def _check_context(self, context, batch):
        """The context as a (B, C) Tensor for a conditional flow (None for one that ignores it).

        Raises ValueError for a conditional flow given no context, a context of another shape
        than (``batch``, ``context_dim``), or an array of another backend than the flow's.
        """
        if not self.context_dim:
            return None
        name, expected = type(self).__name__, f"({batch}, {self.context_dim})"
        if context is None:
            raise ValueError(
                f"{name} is conditional: it needs a context of shape (B, C) = {expected}, got None "
                "(pass context=... to forward / inverse, log_prob, sample or fit)"
            )
        context = self._as_tensor(context, "context")
        if tuple(context.shape) != (batch, self.context_dim):
            raise ValueError(f"{name}: context must have shape (B, C) = {expected}, got {tuple(context.shape)}")
        return context

    def _check_input(self, x, name="x"):
        """``x`` as a Tensor after checking its rank, size and backend; raises ValueError."""
        x = self._as_tensor(x, name)
        if self.event_shape is not None:
            if x.ndim != 1 + len(self.event_shape) or tuple(x.shape[1:]) != tuple(self.event_shape):
                expected = "(B, " + ", ".join(str(n) for n in self.event_shape) + ")"
                raise ValueError(f"{type(self).__name__}: {name} must have shape {expected}, got {tuple(x.shape)}")
        elif x.ndim < 2:
            raise ValueError(f"{type(self).__name__}: {name} must be batched, shape (B, ...), got {tuple(x.shape)}")
        return x

    def _as_tensor(self, x, name):
        """``x`` as a Tensor, after checking its arrays are of the flow's backend; raises ValueError."""
        array = x.data if isinstance(x, Tensor) else x
        module = _flow_array_module(self)
        if backend.is_array(array) and module is not None and backend.array_module(array) is not module:
            raise ValueError(
                f"{type(self).__name__}: {name} is a {type(array).__module__.split('.')[0]} array but the "
                f"flow's parameters are {module.__name__} arrays; move one of them "
                "(minflow.backend.to_device / to_numpy)"
            )
        return x if isinstance(x, Tensor) else Tensor(x)

    def extra_repr(self):
        return "" if self.event_shape is None else f"event_shape={tuple(self.event_shape)}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _flow_array_module(flow):
    """The namespace of the flow's first parameter or buffer (None for a flow with neither)."""
    tensor = flow._first_tensor()
    return None if tensor is None else backend.array_module(tensor.data)


def check_dim(dim, owner):
    """``dim`` as an int, after checking it is a positive integer; raises ValueError naming ``owner``."""
    return check_int(dim, "dim", owner, minimum=1)


def check_int(value, name, owner, minimum):
    """``value`` as an int, after checking it is an integer >= ``minimum`` (a bool is not an integer here).

    Raises ``ValueError`` naming ``owner``, ``name``, what was expected ("a positive integer" for
    ``minimum`` 1, "an integer >= k" otherwise) and the value received.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return int(value)


def check_positive(value, name, owner):
    """``value`` as a float, after checking it is a finite number > 0 (not a bool, not NaN, not inf).

    Raises ``ValueError("{owner}: {name} must be a positive finite number, got {value!r}")``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{owner}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def zero_log_det(x):
    """A (B,) tensor of zeros in x's dtype and namespace: the log-det of a volume-preserving map."""
    return Tensor(backend.array_module(x.data).zeros(x.shape[0], dtype=x.dtype))


def per_sample_log_det(log_det, x):
    """A log-det that is the same for every sample (a 0-d Tensor: a linear map's, say), as the
    (B,) tensor a flow returns for the batch ``x`` (a broadcast: no copy, and its gradient sums)."""
    return ops.broadcast_to(log_det, (x.shape[0],))


def common_context_dim(flows, owner):
    """The context width C that the conditional ones among ``flows`` share (0 if none is).

    Every layer of a stack sees the same context, so two layers that read contexts of
    different widths cannot be stacked: ValueError naming ``owner`` and the widths.
    """
    widths = sorted({flow.context_dim for flow in flows} - {0})
    if len(widths) > 1:
        raise ValueError(f"{owner}: its flows read contexts of different widths {widths}; all must read the same C")
    return widths[0] if widths else 0


def call_with_context(method, h, context):
    """``method(h, context)``, or ``method(h)`` when there is no context, so that a flow written
    before the contract had a context (``def forward(self, x)``) still runs wherever none is given."""
    return method(h) if context is None else method(h, context)


def _add_all(log_dets):
    """The sum of K (B,) log-dets as two ops (stack, sum) instead of K - 1 additions."""
    return log_dets[0] if len(log_dets) == 1 else ops.sum(ops.stack(log_dets, axis=0), axis=0)


class Sequential(Flow):
    """f = f_K o ... o f_1: forward runs the flows in order and adds their log-dets;
    inverse runs them backwards. Cost: the sum of the parts."""

    def __init__(self, flows):
        flows = list(flows)
        if not flows or not all(isinstance(f, Flow) for f in flows):
            raise ValueError("Sequential needs a non-empty list of Flow objects")
        self.flows = flows
        self.event_shape = flows[0].event_shape
        self.input_domain = flows[0].input_domain
        self.output_domain = flows[-1].output_domain
        self.context_dim = common_context_dim(flows, "Sequential")

    def forward(self, x, context=None):
        x = self._check_input(x)
        context = self._check_context(context, x.shape[0])
        log_dets = []
        for flow in self.flows:
            x, log_det = call_with_context(flow.forward, x, context)
            log_dets.append(log_det)
        return x, _add_all(log_dets)

    def inverse(self, z, context=None):
        z = self._check_input(z, "z")
        context = self._check_context(context, z.shape[0])
        log_dets = []
        for flow in reversed(self.flows):
            z, log_det = call_with_context(flow.inverse, z, context)
            log_dets.append(log_det)
        return z, _add_all(log_dets)

    def inverse_steps(self, z, context=None):
        """Every intermediate from z = h_K back to x = h_0, in generative order (base -> data)."""
        steps = [self._check_input(z, "z")]
        context = self._check_context(context, steps[0].shape[0])
        for flow in reversed(self.flows):
            steps.append(call_with_context(flow.inverse, steps[-1], context)[0])
        return steps

    def __len__(self):
        return len(self.flows)

    def __getitem__(self, i):
        return self.flows[i]

    def __repr__(self):
        inner = "".join(f"\n  {flow!r}" for flow in self.flows)
        return f"Sequential({inner}\n)"


class Inverse(Flow):
    """The flow with its two directions swapped: forward is ``flow.inverse`` and back.

    The cheap direction of a flow becomes the other direction: the inverse of a masked
    autoregressive flow (fast density, slow sampling) is an inverse autoregressive flow
    (fast sampling, slow density).
    """

    def __init__(self, flow):
        if not isinstance(flow, Flow):
            raise ValueError(f"Inverse needs a Flow, got {type(flow).__name__}")
        self.flow = flow
        self.event_shape = flow.event_shape
        self.input_domain, self.output_domain = flow.output_domain, flow.input_domain
        self.context_dim = flow.context_dim

    def forward(self, x, context=None):
        return call_with_context(self.flow.inverse, x, context)

    def inverse(self, z, context=None):
        return call_with_context(self.flow.forward, z, context)

    def __repr__(self):
        return f"Inverse({self.flow!r})"
