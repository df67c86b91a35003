"""The engine: ``Tensor``, primitive ops, and reverse-mode ``backward``.

Reverse mode in one paragraph. A computation is a graph whose nodes are primitive ops.
For a scalar loss L and an op y = f(x_1, ..., x_n), the chain rule says

    dL/dx_i = (dL/dy) (dy/dx_i)

and the right-hand side is a *vector-Jacobian product* (VJP): the incoming gradient
``g = dL/dy`` (the cotangent, same shape as y) times the Jacobian of f. Every primitive
knows its own VJP, so ``backward`` only has to visit the nodes from the loss back to the
inputs, in reverse topological order, handing each node the sum of the cotangents of its
outputs.

Design choices, each for a reason:

- **Edges point to inputs only.** A node keeps its inputs and the arrays its VJP needs,
  never its own output, so a graph forms no reference cycle and is freed by plain
  reference counting as soon as the loss goes away (this matters for GPU memory).
- **No recursion.** The topological sort is an explicit stack, so a 10,000-deep chain
  (a long autoregressive inversion) works where a recursive walk hits Python's limit.
- **Broadcasting is undone once, here.** An op like ``a + b`` with shapes (B, D) and
  (D,) returns a (B, D) cotangent for ``b``; :func:`unbroadcast` sums it back to (D,).
  Ops never re-derive this, and the engine asserts every gradient has its input's shape
  and dtype.
- **The graph is freed as it is walked** (unless ``retain_graph=True``), so peak memory
  falls during ``backward`` instead of rising.
- **Written for speed where it runs per op.** A train step is a few hundred ops, so
  ``Primitive.__call__`` and the loop in ``backward`` do as little as they can per node,
  and a fresh cotangent that nothing else holds becomes a leaf's ``.grad`` without a copy
  (``_is_private``). benchmarks/RESULTS.md measures what this overhead still costs.
"""

import contextlib
import numbers

from .. import backend

OPS = {}  # name -> Primitive: the list of everything the engine can differentiate
_recording = [True]  # mutable flag; no_grad() switches it off


class Tensor:
    """An array with an optional gradient and, if it came out of an op, the node that made it.

    ``Tensor(data, requires_grad=False)``: ``data`` is an array (NumPy or CuPy: it stays
    where it is, since ops follow their data) or anything ``backend.asarray`` accepts
    (numbers and lists become arrays of the default backend and dtype). Integer and
    boolean arrays become the default floating dtype.
    """

    __slots__ = ("data", "grad", "requires_grad", "node", "__weakref__")
    __array_priority__ = 1000  # make ``array * tensor`` call Tensor.__rmul__

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if backend.is_array(data):  # an array stays on its own backend, whatever the default
            self.data = data if data.dtype.kind == "f" else data.astype(backend.get_default_dtype())
        else:
            self.data = backend.asarray(data)
        self.grad = None
        self.requires_grad = requires_grad
        self.node = None

    # --- array-like conveniences -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self):
        """A host NumPy copy of the data."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph (no gradient flows through the result)."""
        return Tensor(self.data)

    # --- backward --------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the cotangent of ``self`` (default 1 for a one-element tensor).
        Gradients *accumulate*: call ``zero_grad`` between steps. With
        ``retain_graph=False`` (the default) each node's saved arrays are released once
        used, and calling ``backward`` again through the same graph raises; pass
        ``retain_graph=True`` to keep it, and a second call then adds the same gradients
        again.
        """
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward() without a cotangent needs a one-element tensor, got shape {self.shape}")
            grad = backend.array_module(self.data).ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if grad.shape != self.shape:
                raise ValueError(f"cotangent shape {grad.shape} does not match tensor shape {self.shape}")

        cotangents = {id(self): grad}  # id(tensor) -> the sum of its consumers' cotangents so far
        handed_out = {id(grad)}  # arrays stored as some leaf's .grad (the caller's own grad included)
        for tensor in reverse_topological_order(self):
            g = cotangents.pop(id(tensor), None)
            if g is None:
                continue
            node = tensor.node
            if node is None:  # a leaf: this is where gradients land
                if tensor.grad is not None:
                    tensor.grad = tensor.grad + g
                elif _is_private(g, tensor.data, handed_out):
                    tensor.grad = g
                else:
                    tensor.grad = backend.array_module(g).array(g)
                handed_out.add(id(tensor.grad))
                continue
            if node.inputs is None:
                raise RuntimeError("this graph was freed by an earlier backward(); pass retain_graph=True to keep it")
            input_grads = node.primitive.vjp(g, *node.saved)
            for parent, parent_grad in zip(node.inputs, input_grads):
                if parent_grad is None or not parent.requires_grad:
                    continue
                shape = parent.data.shape
                if parent_grad.shape != shape:
                    parent_grad = unbroadcast(parent_grad, shape)
                assert parent_grad.dtype == parent.data.dtype, (
                    f"{node.primitive.name}: gradient dtype {parent_grad.dtype} != input dtype {parent.dtype}"
                )
                key = id(parent)
                cotangents[key] = parent_grad if key not in cotangents else cotangents[key] + parent_grad
            if not retain_graph:
                node.inputs = node.saved = None

    # Operators and methods are attached below, after the ops exist (see the end of ops.py).


def _is_private(g, like, handed_out):
    """May cotangent ``g`` become a leaf's ``.grad`` as it is, without a copy?

    Only if nothing else can see it: it owns its memory (not a view, such as a read-only
    broadcast of another array, or a reshape of a cotangent that another leaf holds), it is
    an array like the leaf's data (not a NumPy scalar from 0-d arithmetic), and it was not
    already given to another leaf (add's VJP hands the same g to both of its inputs) or
    passed in by the caller. The engine itself never changes a cotangent in place, so once
    those three hold, ``g`` belongs to this leaf alone. Skipping the copy saves one array
    copy per parameter per step (a kernel launch each, on a GPU).
    """
    return type(g) is type(like) and g.base is None and id(g) not in handed_out


class Node:
    """How a tensor was made: the primitive, its inputs and what its VJP needs."""

    __slots__ = ("primitive", "inputs", "saved")

    def __init__(self, primitive, inputs, saved):
        self.primitive = primitive
        self.inputs = inputs
        self.saved = saved


def reverse_topological_order(root):
    """Tensors that require grad, from ``root`` back to the leaves, each before everything it consumes.

    This is the order in which :meth:`Tensor.backward` visits the graph (a node's cotangent
    is complete once every consumer has handed it its share), and a tool to walk a graph
    yourself: ``for t in reverse_topological_order(loss): ...`` sees every recorded tensor once.

    Iterative depth-first search. A tensor is *expanded* (its inputs pushed) the first time
    it is popped, and *emitted* when it is popped again after all of its inputs, so the
    list is in post-order: inputs before consumers. Reversed, every consumer comes first.
    A tensor is marked visited when it is expanded, not when it is pushed: in
    ``a * (1 - a)`` it is pushed twice, and only the copy popped first may expand it.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        node = tensor.node
        if node is not None and node.inputs is not None:
            for parent in node.inputs:
                if parent is not None and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()
    return order


def unbroadcast(grad, shape):
    """Sum a broadcast cotangent back to ``shape``.

    Broadcasting copies an input along new leading axes and along axes of size 1; the
    VJP of a copy is a sum, so we sum over exactly those axes.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    assert grad.shape == shape, f"cannot unbroadcast gradient {grad.shape} to {shape}"
    return grad


class Primitive:
    """An op the engine can differentiate: ``forward`` and its ``vjp``, side by side.

    ``forward(*arrays, **options) -> (out, saved)`` computes on plain arrays and returns
    the tuple of whatever the VJP needs. ``vjp(g, *saved) -> tuple`` returns one
    cotangent per positional input (``None`` for an input that has no gradient). Options
    (axes, shapes, indices) are keyword arguments and never differentiated. A VJP must not
    change ``g`` or the saved arrays in place: the engine hands arrays on without copying.
    """

    def __init__(self, name, forward, vjp):
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        self.name, self.forward, self.vjp = name, forward, vjp
        OPS[name] = self

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *inputs, **options):
        # This runs for every op of every step, so it is written for speed: a few hundred
        # calls per train step make its overhead visible next to small matmuls.
        tensors = [x if isinstance(x, Tensor) else _as_tensor(x, inputs) for x in inputs]
        arrays = [t.data for t in tensors]
        array_type, dtype = type(arrays[0]), arrays[0].dtype
        for array in arrays[1:]:
            if type(array) is not array_type:
                backend.array_module(*arrays)  # raises if NumPy and CuPy arrays mix
            if array.dtype != dtype:
                raise TypeError(f"{self.name}: cannot mix {dtype} and {array.dtype}; cast one explicitly")
        out, saved = self.forward(*arrays, **options)
        if type(out) is not array_type:  # NumPy reductions return NumPy scalars, not 0-d arrays
            out = backend.array_module(*arrays).asarray(out)
        result = Tensor.__new__(Tensor)
        result.data, result.grad, result.node = out, None, None
        result.requires_grad = False
        if _recording[0]:
            for tensor in tensors:
                if tensor.requires_grad:
                    result.requires_grad = True
                    result.node = Node(self, tensors, saved)
                    break
        return result


def primitive(name, vjp):
    """Decorator: register ``forward`` as the primitive ``name`` with the given VJP."""
    return lambda forward: Primitive(name, forward, vjp)


def _as_tensor(x, inputs):
    """Wrap an op input. A number (Python or NumPy scalar) takes the dtype of the first tensor among ``inputs``."""
    if isinstance(x, Tensor):
        return x
    if backend.is_array(x):  # ops follow their data, whichever backend is the default
        return _constant(x)
    if isinstance(x, numbers.Number):
        like = next((t for t in inputs if isinstance(t, Tensor)), None)
        if like is not None:
            return _constant(backend.array_module(like.data).asarray(x, dtype=like.dtype))
    return Tensor(x)


def _constant(array):
    """A Tensor around ``array`` as it is (no dtype or backend conversion)."""
    tensor = Tensor.__new__(Tensor)
    tensor.data, tensor.grad, tensor.requires_grad, tensor.node = array, None, False, None
    return tensor


def as_tensor(x):
    """``x`` itself if it is a Tensor, else a constant Tensor of the active backend."""
    return x if isinstance(x, Tensor) else Tensor(x)


@contextlib.contextmanager
def no_grad():
    """Inside this block, ops record no graph (faster, no memory kept for backward)."""
    previous, _recording[0] = _recording[0], False
    try:
        yield
    finally:
        _recording[0] = previous


def is_recording():
    return _recording[0]
