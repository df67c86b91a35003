"""Modules and parameters: the containers that training updates.

A :class:`Module` is an object whose attributes may be :class:`Parameter`\\ s (tensors the
optimizer trains), :class:`Buffer`\\ s (state that is saved but not trained, such as a
permutation) and other Modules (also inside lists and tuples). From that one rule it
finds all of its parameters by name, recursively: ``"layers.0.weight"``.

Checkpoints are plain ``.npz`` files of the :meth:`Module.state_dict`, plus one entry
``__minflow_format__`` (a 0-d integer array, now ``1``) that says which layout the file has;
loading checks the version, then every name, shape and dtype, and says what did not match.
A file without the entry (written before it existed) is read as version 1; a file of
another version, or one that is not a minflow checkpoint, is refused with one line. The
file format itself (atomic writes, no pickles) is in ``minflow/checkpoint.py``.
"""

import math
import os

from . import backend
from .autodiff import Tensor, ops
from .checkpoint import FORMAT_KEY, FORMAT_VERSION, TRAINING_STATE_KEY, check_format, load_arrays, save_arrays


class Parameter(Tensor):
    """A Tensor that an optimizer trains (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Buffer(Tensor):
    """A Tensor that belongs to a module's state (saved, loaded) but is not trained."""

    __slots__ = ("_flag",)

    def __init__(self, data):
        super().__init__(0.0)
        # Unlike a Tensor, a buffer keeps an integer or boolean dtype (a permutation, a flag).
        data = data.data if isinstance(data, Tensor) else data
        if not backend.is_array(data):
            data = backend.xp().asarray(data)
        self.data = backend.asarray(data, dtype=data.dtype if data.dtype.kind in "biu" else None)

    def __repr__(self):
        return f"Buffer(shape={self.shape}, dtype={self.dtype})"

    def flag(self):
        """The value of a one-element buffer as a Python bool (an ActNorm's "initialised").

        Reading a device array on the host synchronises a GPU, and a layer that asks on
        every call would stall every step. So the answer is remembered together with the
        array it was read from, and read again only after ``data`` is replaced (by
        ``load_state_dict``, say). Replace ``data``; do not change it in place.
        """
        cached = getattr(self, "_flag", None)
        if cached is None or cached[0] is not self.data:
            cached = self._flag = (self.data, bool(self.data))
        return cached[1]

    def set_flag(self, value):
        """Set a one-element boolean buffer to ``value``, on its own device, without reading it back."""
        self.data = backend.array_module(self.data).asarray(bool(value))
        self._flag = (self.data, bool(value))


class Module:
    """Base class of layers, flows and models."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- walking the tree -------------------------------------------------------------
    def named_children(self):
        """(name, module) for each direct sub-module, lists and tuples included."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def _named_tensors(self, kind, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, kind):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_tensors(kind, prefix + name + ".")

    def named_parameters(self):
        return list(self._named_tensors(Parameter))

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        return list(self._named_tensors(Buffer))

    def modules(self):
        """This module and every module below it, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def array_module(self):
        """The namespace (numpy or cupy) this module lives in: that of its parameters.

        A model lives where its parameters live: samples, data and temporaries it makes
        are made there, whatever the default backend is now. A module without parameters
        or buffers uses the default backend.
        """
        tensor = self._first_tensor()
        return backend.xp() if tensor is None else backend.array_module(tensor.data)

    def float_dtype(self):
        """The floating dtype of the module's first floating parameter or buffer: the dtype
        its inputs, samples and data must have (the default dtype for a module with none,
        such as a fixed permutation)."""
        for _, tensor in self.named_parameters() + self.named_buffers():
            if tensor.dtype.kind == "f":
                return tensor.dtype
        return backend.get_default_dtype()

    def _first_tensor(self):
        """The module's first parameter or buffer (None if it has none), found once.

        Walking the module tree on every call would cost more than a small layer's
        arithmetic, so the first call remembers *which* tensor to ask (in a tuple, so the
        tree walk does not count it as a parameter); its ``data`` is read afresh each time.
        """
        probe = vars(self).get("_backend_probe")
        if probe is None:
            tensors = self.named_parameters() + self.named_buffers()
            probe = self._backend_probe = (tensors[0][1] if tensors else None,)
        return probe[0]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def astype(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` in place; returns self."""
        for _, tensor in self.named_parameters() + self.named_buffers():
            if tensor.dtype.kind == "f":
                tensor.data = tensor.data.astype(dtype)
                tensor.grad = None
        return self

    # --- state ------------------------------------------------------------------------
    def state_dict(self):
        """{name: array} of every parameter and buffer: copies, so that training after this call
        does not change them (a "best parameters so far" snapshot stays what it was)."""
        return {name: t.data.copy() for name, t in self.named_parameters() + self.named_buffers()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters and buffers, after checking names, shapes and dtypes.

        A ``__minflow_format__`` entry (as :meth:`save` writes) is checked and ignored.
        """
        state = dict(state)
        check_format(state.pop(FORMAT_KEY, None), FORMAT_VERSION, "model checkpoint")
        if TRAINING_STATE_KEY in state:
            raise ValueError(
                "this is a training state (minflow.train.TrainingState), not a model checkpoint; "
                "load it with TrainingState.load"
            )
        own = dict(self.named_parameters() + self.named_buffers())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if own and state and not set(own) & set(state):
            raise ValueError(
                f"state does not match the model: none of its {len(state)} names is one of the "
                f"model's {len(own)} (the model has {_some(sorted(own))}; the state has {_some(sorted(state))})"
            )
        if missing or unexpected:
            raise ValueError(
                f"state does not match the model: missing {_some(missing)}, unexpected {_some(unexpected)}"
            )
        for name, tensor in own.items():
            value = state[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(f"{name}: checkpoint has shape {tuple(value.shape)}, model has {tensor.shape}")
            if value.dtype != tensor.dtype:
                raise ValueError(f"{name}: checkpoint has dtype {value.dtype}, model has {tensor.dtype}")
        for name, tensor in own.items():
            tensor.data = backend.to_device(
                state[name], dtype=tensor.dtype, xp=backend.array_module(tensor.data)
            ).copy()

    def save(self, path):
        """Write the state to an .npz file, atomically (a crash never leaves half a file),
        with the format version under ``__minflow_format__``."""
        arrays = self.state_dict()
        arrays[FORMAT_KEY] = FORMAT_VERSION  # a 0-d integer array in the file
        save_arrays(path, arrays)

    def load(self, path):
        """Read a checkpoint written by :meth:`save`; raises a one-line ``ValueError`` naming
        the file if it cannot be read, has another format version or does not fit the model."""
        arrays = load_arrays(path)
        try:
            self.load_state_dict(arrays)
        except ValueError as error:
            raise ValueError(f"checkpoint {os.fspath(path)!r}: {error}") from None
        return self


def _some(names, limit=5):
    """A list of names for a message, shortened to ``limit`` and a count of the rest."""
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit]} and {len(names) - limit} more"


def _uniform(shape, bound, seed):
    """U(-bound, bound) in the default dtype and backend."""
    rng = backend.rng(seed)
    u = rng.random(shape, dtype=backend.get_default_dtype())
    return (2 * u - 1) * bound


class Linear(Module):
    """y = x W + b, with x (B, in_features), W (in_features, out_features).

    Initialisation: W, b ~ U(-1/sqrt(in), 1/sqrt(in)), which keeps the output's scale
    independent of the width. ``zero=True`` starts both at zero, so that the layer
    outputs 0: the last layer of a coupling layer's conditioner, which makes the
    coupling start as the identity map.
    """

    def __init__(self, in_features, out_features, bias=True, zero=False, seed=None):
        bound = 1 / math.sqrt(in_features)
        rng = backend.rng(seed)
        if zero:
            self.weight = Parameter(backend.xp().zeros((in_features, out_features), dtype=backend.get_default_dtype()))
        else:
            self.weight = Parameter(_uniform((in_features, out_features), bound, rng))
        self.bias = None
        if bias:
            self.bias = Parameter(_uniform((out_features,), bound, rng) * (not zero))
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        if self.bias is None:
            return ops.matmul(x, self.weight)
        return ops.linear(x, self.weight, self.bias)


ACTIVATIONS = {
    "relu": ops.relu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "softplus": ops.softplus,
    "leaky_relu": ops.leaky_relu,
}

# Activations with a fused op: linear_relu(x, W, b) computes relu(x W + b) as one op instead
# of two. One graph node instead of two, and the ReLU clips the fresh array x W + b in place
# instead of making another (B, out) array: one pass over the activations saved per hidden
# layer, in the ops a train step repeats most. (An activation without an entry runs unfused.)
FUSED = {"relu": ops.linear_relu}


def dense_then_activation(layer, x, activation):
    """``ACTIVATIONS[activation](layer(x))``, as one fused op where :data:`FUSED` has one."""
    fused = FUSED.get(activation)
    if fused is not None and layer.bias is not None:
        return fused(x, layer.weight, layer.bias)
    return ACTIVATIONS[activation](layer(x))


class MLP(Module):
    """A multilayer perceptron: Linear, activation, ..., Linear (no activation at the end).

    ``sizes = [in, hidden, ..., out]``. ``zero_last=True`` zero-initialises the last layer.
    """

    def __init__(self, sizes, activation="relu", zero_last=False, seed=None):
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least [in, out] sizes, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        rng = backend.rng(seed)
        last = len(sizes) - 2
        self.layers = [
            Linear(n_in, n_out, zero=zero_last and i == last, seed=rng)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]
        self.activation = activation

    def forward(self, x):
        for layer in self.layers[:-1]:  # the hidden layers: activation(layer(x))
            x = dense_then_activation(layer, x, self.activation)
        return self.layers[-1](x)  # the output layer: no activation
