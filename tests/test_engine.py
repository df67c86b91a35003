"""Properties of the autodiff engine itself, beyond any one op (the ops are in test_ops.py).

What is checked, one property per test: a node used twice gets the sum of its gradients;
backward walks a 10,000-deep graph without recursion; the graph is freed by plain reference
counting once backward is done; retain_graph and accumulation; dtypes never mix or drift;
results are arrays; no_grad and detach record nothing; broadcasting is undone by unbroadcast.

Leaves are made on the default backend (``device``), so the engine runs on NumPy or on the
strict CuPy stand-in; gradients are compared on the host (``host``).
"""

import gc
import re
import sys
import weakref

import numpy as np
import pytest
from helpers import MIXING_MESSAGE, device, host, on_cupy

from minflow import backend
from minflow.autodiff import OPS, Tensor, is_recording, no_grad, ops, reverse_topological_order, unbroadcast


def leaf(values, dtype=np.float64):
    return Tensor(device(np.asarray(values, dtype=dtype), dtype), requires_grad=True)


def assert_gradient(tensor, expected, rtol=1e-12):
    # 1e-12: a handful of float64 operations per entry, each off by at most half an ulp.
    data, grad, expected = host(tensor), host(tensor.grad), host(expected)
    message = f"input {data!r}: expected gradient {expected!r}, got {grad!r}"
    np.testing.assert_allclose(grad, expected, rtol=rtol, err_msg=message)


# --- the chain rule over a graph ----------------------------------------------------------------
def test_reused_node_gets_the_sum_of_its_gradients():
    a = leaf([-1.5, 0.0, 2.0, 3.25])
    (a * a + a).sum().backward()  # d/da (a^2 + a) = 2a + 1: three uses of a, three terms
    assert_gradient(a, 2 * host(a) + 1)


def test_node_reused_at_different_depths_is_visited_after_all_its_consumers():
    # In a * (1 - a), one use of a is direct and one goes through another op: a must come
    # after *both* consumers in the reverse topological order, or one gradient is lost.
    a = leaf([0.3, 0.6, -1.0])
    (a * (1.0 - a)).sum().backward()
    assert_gradient(a, 1 - 2 * host(a))


def test_diamond_and_long_detour_graphs_sum_every_path():
    # y = exp(a) * tanh(exp(a)) + a: the shared e = exp(a) feeds a short and a long path.
    a = leaf([-0.7, 0.1, 1.3])
    e = ops.exp(a)
    (e * ops.tanh(e) + a).sum().backward()
    ev = np.exp(host(a))
    expected = ev * np.tanh(ev) + ev * ev * (1 - np.tanh(ev) ** 2) + 1
    assert_gradient(a, expected)


def test_ten_thousand_deep_chain_backward_needs_no_recursion():
    depth, factor = 10_000, 1.0001
    assert depth > sys.getrecursionlimit(), "the chain must be deeper than a recursive walk could go"
    x = leaf([1.0, -2.0])
    y = x
    for _ in range(depth):
        y = y * factor
    y.sum().backward()
    # dy/dx = factor^depth (= e^0.99995...). Each of the 10,000 products rounds once, so the
    # relative error is at most depth * ulp/2 ~ 1e-12.
    assert_gradient(x, np.full(2, factor**depth), rtol=1e-11)


# --- memory: no graph survives backward ------------------------------------------------------------
def test_intermediate_is_freed_after_backward_without_the_garbage_collector():
    x = leaf([0.5, 1.0, 2.0])
    hidden = ops.exp(x)
    loss = (hidden * 2.0).sum()
    alive = weakref.ref(hidden)
    del hidden
    gc.disable()  # reference counting alone must free the graph: it may hold no cycle
    try:
        loss.backward()
        assert alive() is None, "an intermediate Tensor is still referenced after backward()"
        assert loss.node.inputs is None and loss.node.saved is None, "backward() kept inputs/saved arrays"
    finally:
        gc.enable()
    assert_gradient(x, 2 * np.exp(host(x)))


def test_graph_is_freed_when_the_loss_goes_away_even_without_backward():
    x = leaf([0.5, 1.0, 2.0])
    hidden = ops.tanh(x)
    loss = ops.sum(hidden * hidden)
    alive = weakref.ref(hidden)
    del hidden
    gc.disable()
    try:
        assert alive() is not None, "the graph of a live loss must keep its intermediates"
        del loss
        assert alive() is None, "the graph formed a reference cycle: only the garbage collector could free it"
    finally:
        gc.enable()


def test_retain_graph_keeps_inputs_and_saved_arrays():
    x = leaf([0.5, 1.0, 2.0])
    hidden = ops.exp(x)
    loss = (hidden * 2.0).sum()
    alive = weakref.ref(hidden)
    del hidden
    loss.backward(retain_graph=True)
    gc.collect()
    assert alive() is not None, "retain_graph=True must keep the intermediate alive"
    assert loss.node.inputs is not None and loss.node.saved is not None


def test_backward_twice_with_retain_graph_accumulates():
    x = leaf([0.5, -1.0, 2.0])
    loss = ops.tanh(x).sum()
    loss.backward(retain_graph=True)
    once = host(x.grad)
    loss.backward(retain_graph=True)
    assert_gradient(x, 2 * once)  # gradients accumulate, as documented: the second call adds


def test_second_backward_through_a_freed_graph_raises():
    x = leaf([0.5, -1.0, 2.0])
    loss = ops.exp(x).sum()
    loss.backward()
    message = "this graph was freed by an earlier backward(); pass retain_graph=True to keep it"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        loss.backward()


# --- dtypes and shapes -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (4,)), ((2, 3, 4), (3, 1)), ((), (2, 3))],
)
def test_gradient_has_the_dtype_and_shape_of_its_input(dtype, shape_a, shape_b):
    rng = np.random.default_rng(0)
    a = leaf(rng.normal(size=shape_a), dtype)
    b = leaf(rng.normal(size=shape_b), dtype)
    loss = ops.logsumexp(ops.tanh(a * b + a) - b / 3.0)  # mixes broadcasting, scalars, reduction
    loss.backward()
    for name, x in (("a", a), ("b", b)):
        assert isinstance(x.grad, backend.xp().ndarray), f"{name}.grad is a {type(x.grad).__name__}, not an array"
        assert x.grad.dtype == dtype and x.grad.shape == x.shape, (
            f"{name}: expected gradient {np.dtype(dtype)} {x.shape}, got {x.grad.dtype} {x.grad.shape}"
        )


def test_broadcast_inputs_receive_summed_gradients():
    a = leaf(np.zeros((3, 1)))
    b = leaf(np.zeros(4))
    (a + b).sum().backward()  # a is copied 4 times along axis 1, b 3 times along a new axis 0
    assert_gradient(a, np.full((3, 1), 4.0))
    assert_gradient(b, np.full(4, 3.0))


def test_mixing_float32_and_float64_raises_type_error():
    a = leaf([1.0, 2.0], np.float32)
    b = leaf([1.0, 2.0], np.float64)
    with pytest.raises(TypeError, match="float32"):
        a * b


@pytest.mark.parametrize(
    "expression",
    [
        lambda t: t * 2.0,
        lambda t: 2.0 * t,
        lambda t: t + 1,
        lambda t: 1.0 - t,
        lambda t: t / 3.0,
        lambda t: 3.0 / t,
        lambda t: t**2,
    ],
    ids=["t*2.0", "2.0*t", "t+1", "1.0-t", "t/3.0", "3.0/t", "t**2"],
)
def test_python_scalars_take_the_tensor_dtype(expression):
    t = leaf([1.0, 2.0], np.float32)
    y = expression(t)
    assert y.dtype == np.float32, f"expected float32, got {y.dtype}"
    y.sum().backward()
    assert t.grad.dtype == np.float32, f"expected a float32 gradient, got {t.grad.dtype}"


@pytest.mark.parametrize(
    "reduce",
    [ops.sum, ops.mean, ops.max, ops.logsumexp, lambda x: x[0, 1], lambda x: ops.slogdet(x + device(np.eye(2)))],
    ids=["sum", "mean", "max", "logsumexp", "getitem", "slogdet"],
)
def test_full_reductions_return_0d_arrays_not_python_floats(reduce):
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = reduce(x)
    ndarray = backend.xp().ndarray
    assert type(y.data) is ndarray and y.shape == (), f"expected a 0-d ndarray, got {type(y.data).__name__}"
    y.backward()
    assert type(x.grad) is ndarray and x.grad.shape == (2, 2), f"got the gradient {host(x.grad)!r}"


def test_gradient_of_a_0d_leaf_is_a_0d_array():
    x = leaf(2.0)
    (x * 3.0).backward()
    assert type(x.grad) is backend.xp().ndarray and x.grad.shape == (), f"got {type(x.grad).__name__} {host(x.grad)!r}"
    assert_gradient(x, 3.0)


def test_leaf_gradients_are_independent_writable_arrays():
    a = leaf([1.0, 2.0, 3.0])
    b = leaf([4.0, 5.0, 6.0])
    (a + b).sum().backward()  # add's VJP hands the same array to a and b; sum's is a broadcast view
    assert a.grad is not b.grad
    if not on_cupy():  # CuPy arrays have no read-only flag (every device array is writable)
        assert a.grad.flags.writeable
    a.grad *= 10.0  # an optimizer may update a gradient in place...
    assert_gradient(b, np.ones(3))  # ...without touching another parameter's


def test_leaf_gradients_never_alias_each_other_or_the_callers_cotangent():
    # The engine stores a fresh cotangent as a leaf's .grad without copying it; these are the
    # cases where that would be wrong, and each must still give every leaf its own array.
    a, b, c = leaf([1.0, 2.0]), leaf([3.0, 4.0]), leaf([5.0, 6.0])
    g = device([1.0, -1.0])
    (a + b).backward(g)  # the caller's g, handed to a and to b by add's VJP
    assert a.grad is not g and b.grad is not g and a.grad is not b.grad
    g[:] = 99.0  # the caller reuses its array...
    assert_gradient(a, [1.0, -1.0])  # ...and the gradients stay what they were
    assert_gradient(b, [1.0, -1.0])
    y = (a * 2.0).reshape((2, 1)) + c.reshape((2, 1))  # two reshape views of one cotangent
    a.grad = b.grad = c.grad = None
    y.sum().backward()
    assert not backend.array_module(a.grad).shares_memory(a.grad, c.grad)
    a.grad *= 0.0
    assert_gradient(c, [1.0, 1.0])


def test_a_fresh_cotangent_becomes_the_leaf_gradient_without_a_copy():
    # mul's VJP makes g * b, a new array no one else holds: a.grad can be that very array.
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    seen = []
    original = OPS["mul"].vjp
    OPS["mul"].vjp = lambda g, x, y: seen.extend(original(g, x, y)) or tuple(seen)
    try:
        (a * b).backward(device([1.0, 1.0]))
    finally:
        OPS["mul"].vjp = original
    assert a.grad is seen[0] and b.grad is seen[1]
    assert_gradient(a, [3.0, 4.0])


# --- recording ------------------------------------------------------------------------------------
def test_no_grad_records_no_graph():
    x = leaf([1.0, 2.0])
    with no_grad():
        assert not is_recording()
        y = ops.exp(x) * 2.0
    assert is_recording(), "recording must resume after the block"
    assert not y.requires_grad and y.node is None, "an op under no_grad() recorded a node"


def test_no_grad_restores_recording_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0  # noqa: B018 (the expression is there to raise)
    assert is_recording()


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0])
    y = ops.exp(x)
    cut = y.detach()
    assert not cut.requires_grad and cut.node is None
    np.testing.assert_array_equal(host(cut), host(y))
    (cut * x).sum().backward()  # the gradient flows through the explicit x only, not through cut
    assert_gradient(x, np.exp([1.0, 2.0]))


# --- errors and unbroadcast ------------------------------------------------------------------------
def test_backward_without_cotangent_on_a_non_scalar_raises():
    y = ops.exp(leaf([1.0, 2.0]))
    with pytest.raises(ValueError, match="one-element"):
        y.backward()


def test_backward_without_cotangent_works_on_one_element_tensors():
    x = leaf([[2.0]])
    (x * x).backward()  # shape (1, 1): one element, so the cotangent 1 is implied
    assert_gradient(x, [[4.0]])


def test_backward_rejects_a_cotangent_of_the_wrong_shape():
    y = ops.exp(leaf([1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        y.backward(device(np.ones(3)))


@pytest.mark.parametrize(
    "grad_shape, shape",
    [
        ((2, 3, 4), (2, 3, 4)),
        ((2, 3, 4), (3, 4)),
        ((2, 3, 4), (4,)),
        ((2, 3, 4), (3, 1)),
        ((2, 3, 4), (1, 1, 4)),
        ((2, 3, 4), (2, 1, 1)),
        ((2, 3, 4), ()),
        ((5, 1), (1, 1)),
    ],
)
def test_unbroadcast_sums_leading_axes_and_size_one_axes(grad_shape, shape):
    grad = np.random.default_rng(0).normal(size=grad_shape)
    got = unbroadcast(device(grad), shape)
    # The definition: sum over the new leading axes, then over the axes where shape has a 1.
    extra = len(grad_shape) - len(shape)
    expected = grad.sum(axis=tuple(range(extra)))
    expected = expected.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
    assert got.shape == shape, f"unbroadcast {grad_shape} -> {shape} gave shape {got.shape}"
    np.testing.assert_allclose(host(got), expected, rtol=1e-12)  # the same sums, maybe in another order


# --- extending the engine, repr and documented defaults (mutation testing found these unpinned) ---------------


def test_a_primitive_defined_outside_minflow_is_registered_and_differentiated():
    """A user adds an op the way minflow defines its own: ``@primitive(name, vjp)`` on a forward."""
    from minflow.autodiff.tensor import primitive

    name = "test_engine_cube"

    @primitive(name, lambda g, x: (3 * g * x * x,))
    def cube(x):
        return x * x * x, (x,)

    try:
        assert OPS[name] is cube and cube.name == name and repr(cube) == f"<primitive {name}>"
        x = leaf([1.5, -2.0])
        cube(x).sum().backward()
        np.testing.assert_array_equal(host(cube(x).data), [3.375, -8.0])  # exact in binary floating point
        np.testing.assert_array_equal(host(x.grad), [6.75, 12.0])  # 3 x^2, exact too
        with pytest.raises(ValueError, match=rf"^op '{name}' is registered twice$"):
            primitive(name, lambda g, x: (g,))(lambda x: (x, (x,)))
        assert OPS[name] is cube, "a refused registration must leave the first one in place"
    finally:
        OPS.pop(name, None)


def test_a_tensor_shows_its_array_and_whether_it_records_gradients():
    array = device([1.0, 2.0])
    assert repr(Tensor(array)) == f"Tensor({array!r})"
    assert repr(Tensor(array, requires_grad=True)) == f"Tensor({array!r}, requires_grad=True)"


def test_leaky_relu_has_the_documented_default_slope_of_one_hundredth():
    np.testing.assert_array_equal(host(ops.leaky_relu(Tensor(device([-2.0, 3.0]))).data), [-0.02, 3.0])


def test_solve_triangular_reads_the_lower_triangle_by_default():
    # The upper triangle holds numbers that would change the answer if they were read.
    a = device([[2.0, 7.0], [1.0, 4.0]])
    x = ops.solve_triangular(Tensor(a), Tensor(device([[2.0], [5.0]])))
    np.testing.assert_allclose(host(x.data), [[1.0], [1.0]], rtol=1e-15)  # 2*1 = 2, 1*1 + 4*1 = 5


# --- constants, cotangents and the walk over the graph (the second mutation pass found these unpinned) ---------
def test_numbers_lists_and_constants_enter_an_op_without_recording_anything():
    x = Tensor(device([1.0, 2.0]))
    assert (x * 2.0).requires_grad is False, "a number became a tensor that records gradients"
    np.testing.assert_array_equal(host(ops.mul(x, [2.0, 3.0]).data), [2.0, 6.0])  # a list is made a tensor
    both_numbers = ops.add(2.0, 3.0)  # no tensor to take a dtype from: the default one
    assert both_numbers.dtype == backend.get_default_dtype() and float(host(both_numbers)) == 5.0


def test_an_op_refuses_an_integer_array_instead_of_casting_it():
    # Arrays enter an op as they are (no dtype conversion, as for two tensors): an integer array is refused
    # with the same message as float32 next to float64, never silently turned into floats.
    x = Tensor(device([1.0, 2.0]))
    integers = backend.xp().arange(2)
    with pytest.raises(TypeError, match=rf"^mul: cannot mix float64 and {integers.dtype}; cast one explicitly$"):
        ops.mul(x, integers)


def test_reverse_topological_order_lists_each_tensor_that_records_gradients_once():
    x, constant = leaf([1.0, 2.0]), Tensor(device([3.0, 4.0]))
    y = x * constant
    loss = (y * y + x).sum()
    order = reverse_topological_order(loss)
    assert [id(t) for t in order][:1] == [id(loss)] and len({id(t) for t in order}) == len(order)
    assert all(t.requires_grad for t in order), "a constant (requires_grad=False) was listed"
    assert {id(t) for t in (x, y, loss)} <= {id(t) for t in order}
    position = {id(t): i for i, t in enumerate(order)}
    assert position[id(loss)] < position[id(y)] < position[id(x)], "a tensor came after one of its inputs"


def test_an_input_whose_vjp_gives_no_cotangent_gets_no_gradient_and_stops_nothing():
    """A VJP may return None for an input (Primitive's contract); the walk must go on to the other inputs.

    ``second(w, x)`` returns x and says nothing about w. In the graph walk w comes before x (it is pushed
    first, so popped last and listed first), so an engine that stopped at the first tensor without a
    cotangent, or that expected every listed tensor to have one, would leave x without its gradient.
    """
    from minflow.autodiff.tensor import primitive

    name = "test_engine_second"
    second = primitive(name, lambda g: (None, g))(lambda a, b: (b.copy(), ()))
    try:
        w, x = leaf([1.0, 2.0]), leaf([3.0, 4.0])
        (second(w, x) * 2.0).sum().backward()
        assert w.grad is None, f"w got a gradient {w.grad!r} although the VJP gave it none"
        assert_gradient(x, [2.0, 2.0])
    finally:
        OPS.pop(name, None)


def test_one_fresh_cotangent_given_to_two_leaves_becomes_two_arrays():
    # mul's VJP makes a new array; add's hands that one array to a and to b. a may keep it (no copy), but
    # b must then get its own, or an optimizer scaling a.grad in place would scale b's gradient too.
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    ((a + b) * 2.0).sum().backward()
    assert a.grad is not b.grad
    a.grad *= 0.0
    assert_gradient(b, [2.0, 2.0])


def test_a_tensor_given_as_the_cotangent_is_read_as_its_array():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a * b).backward(Tensor(device([1.0, -1.0])))
    assert type(a.grad) is backend.xp().ndarray, f"a.grad is a {type(a.grad).__name__}, not an array"
    assert_gradient(a, [3.0, -4.0])


@pytest.mark.skipif(not on_cupy(), reason="needs CuPy as the default backend (the strict stand-in or a GPU)")
def test_an_op_refuses_numpy_and_cupy_inputs_with_the_backends_message():
    on_host, on_device = Tensor(np.ones(2)), Tensor(device([1.0, 2.0]))
    for inputs in ((on_host, on_device), (on_device, on_host)):
        with pytest.raises(ValueError, match=f"^{re.escape(MIXING_MESSAGE)}$"):
            ops.add(*inputs)


def test_a_tensor_of_a_tensor_holds_the_same_array_and_integers_become_the_default_float():
    x = Tensor(device([1.0, 2.0]))
    assert Tensor(x).data is x.data
    previous = backend.get_default_dtype()
    backend.set_default_dtype("float32")
    try:
        integers = Tensor(backend.xp().arange(3))
        assert integers.dtype == np.float32, f"an integer array became {integers.dtype}, not the default float32"
        np.testing.assert_array_equal(host(integers), [0.0, 1.0, 2.0])
    finally:
        backend.set_default_dtype(previous)
