"""The backend: NumPy by default, CuPy on request, and no silent mixing of the two."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minflow
from minflow import backend, testing
from minflow.autodiff import Tensor, ops

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _cupy_has_device():
    if not HAS_CUPY:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: CuPy raises its own CUDA errors
        return False


needs_gpu = pytest.mark.skipif(not _cupy_has_device(), reason="needs CuPy and a CUDA device")


def test_numpy_is_the_default_backend():
    assert backend.backend_name() == "numpy" and backend.xp() is np
    assert isinstance(Tensor([1.0, 2.0]).data, np.ndarray)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        minflow.set_backend("torch")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_cupy_backend_without_cupy_says_how_to_install():
    with pytest.raises(ImportError, match=r"minflow\[gpu\]"):
        minflow.set_backend("cupy")
    assert backend.backend_name() == "numpy", "a failed switch leaves the backend as it was"


def test_importing_minflow_needs_only_numpy():
    code = (
        "import sys, minflow, minflow.testing, minflow.flows.linear, minflow.flows.elementwise\n"
        "heavy = {'cupy', 'autograd', 'hypothesis', 'matplotlib', 'scipy', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_environment_variable_selects_the_backend():
    env = dict(os.environ, MINFLOW_BACKEND="numpy")
    out = subprocess.run(
        [sys.executable, "-c", "import minflow; print(minflow.backend.backend_name())"],
        env=env, check=True, capture_output=True, text=True,
    )
    assert out.stdout.strip() == "numpy"
    env["MINFLOW_BACKEND"] = "tensorflow"
    bad = subprocess.run([sys.executable, "-c", "import minflow"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


def test_same_seed_same_numbers():
    a = backend.rng(5).standard_normal(4)
    b = backend.rng(5).standard_normal(4)
    assert np.array_equal(a, b) and not np.array_equal(a, backend.rng(6).standard_normal(4))
    generator = backend.rng(1)
    assert backend.rng(generator) is generator, "a Generator is passed through"


def test_to_numpy_accepts_arrays_tensors_and_numbers():
    assert np.array_equal(backend.to_numpy(Tensor([1.0, 2.0])), [1.0, 2.0])
    assert backend.to_numpy(np.arange(3)).tolist() == [0, 1, 2]
    assert backend.to_numpy(2.5) == 2.5


def test_integer_data_becomes_the_default_float_dtype():
    assert Tensor(np.arange(3)).dtype == np.float64
    assert Tensor(np.arange(3, dtype=np.float32)).dtype == np.float32, "float arrays keep their dtype"


@needs_gpu
@pytest.mark.gpu
def test_mixing_numpy_and_cupy_raises_a_clear_error():
    import cupy

    with pytest.raises(ValueError, match="cannot mix NumPy and CuPy"):
        ops.add(Tensor(np.ones(2)), cupy.ones(2))
    flow = testing.example_flows(2, seed=0)["LULinear"]  # NumPy parameters
    with pytest.raises(ValueError, match="cupy array but the flow's parameters are numpy"):
        flow.forward(cupy.ones((3, 2)))
    minflow.set_backend("cupy")
    try:
        gpu_flow = testing.example_flows(2, seed=0)["LULinear"]
        with pytest.raises(ValueError, match="numpy array but the flow's parameters are cupy"):
            gpu_flow.forward(np.ones((3, 2)))
    finally:
        minflow.set_backend("numpy")


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name", testing.example_flow_names())
def test_every_flow_passes_check_flow_on_the_gpu(name):
    minflow.set_backend("cupy")
    try:
        flow = testing.example_flows(2, seed=0)[name]
        assert backend.is_cupy_array(flow.forward(testing.sample_inputs(flow, 4))[0].data)
        testing.check_flow(flow, n=4)
    finally:
        minflow.set_backend("numpy")


# --- the C allocator ---------------------------------------------------------------------
_RECORD_MALLOPT = """
import ctypes, json
calls = []
real_cdll = ctypes.CDLL
class Recorder:
    def __init__(self, name):
        self.real = real_cdll(name)
    def mallopt(self, option, value):
        calls.append([option, value])
        return self.real.mallopt(option, value)
ctypes.CDLL = Recorder
import minflow
print(json.dumps(calls))
"""


@pytest.mark.parametrize("opt_out", [False, True])
def test_import_asks_malloc_to_keep_freed_memory_unless_told_not_to(opt_out):
    # Without this, every large temporary of a train step is mapped afresh from the OS and
    # page-faulted in (benchmarks/RESULTS.md, section 4a); M_MMAP_THRESHOLD is -3 and
    # M_TRIM_THRESHOLD -1 in glibc's malloc.h.
    if not _is_glibc():
        pytest.skip("mallopt is glibc's")
    env = dict(os.environ, MINFLOW_KEEP_FREED_MEMORY="0" if opt_out else "1")
    out = subprocess.run([sys.executable, "-c", _RECORD_MALLOPT], env=env, capture_output=True, text=True, check=True)
    calls = [tuple(call) for call in json.loads(out.stdout.strip().splitlines()[-1])]
    if opt_out:
        assert calls == []
    else:
        assert calls == [(-3, 32 << 20), (-1, 256 << 20)]


def _is_glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _is_glibc(), reason="mallopt is glibc's")
def test_keep_freed_memory_succeeds_on_glibc():
    assert backend.keep_freed_memory() is True
