"""Backend-agnostic test helpers: arrays go in through ``minflow.backend``, results come out
through ``to_numpy``, so the same test runs on NumPy and on the strict CuPy stand-in
(``make test-cupy``), where a NumPy array mixed into a device op raises.

    from helpers import device, host, assert_close

    x = device(np.linspace(-1, 1, 5))          # host data -> the default backend (float)
    z, log_det = flow.forward(x)
    assert_close(log_det, expected, atol=1e-12)  # both sides compared on the host
"""

import numpy as np

from minflow import backend

# What the engine says, word for word, when one operation is given NumPy and CuPy arrays together.
MIXING_MESSAGE = (
    "cannot mix NumPy and CuPy arrays in one operation; move the data with "
    "minflow.backend.to_device(...) or minflow.backend.to_numpy(...)"
)


def device(array, dtype=None):
    """Host data (a NumPy array, list or number) as a floating array of the default backend."""
    return backend.to_device(np.asarray(array), dtype=dtype)


def device_ints(array):
    """Host integers (indices, a permutation) as an integer array of the default backend."""
    return backend.xp().asarray(np.asarray(array))


def host(x):
    """A NumPy copy of an array of either backend, a Tensor, or a number."""
    return backend.to_numpy(x)


def assert_close(actual, desired, rtol=1e-7, atol=0.0, err_msg=""):
    """``np.testing.assert_allclose`` on host copies of both sides."""
    np.testing.assert_allclose(host(actual), host(desired), rtol=rtol, atol=atol, err_msg=err_msg)


def assert_equal(actual, desired, err_msg=""):
    """``np.testing.assert_array_equal`` on host copies of both sides."""
    np.testing.assert_array_equal(host(actual), host(desired), err_msg=err_msg)


def on_cupy():
    """True when the default backend is CuPy (real or the strict stand-in)."""
    return backend.backend_name() == "cupy"
