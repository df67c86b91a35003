"""The backend: NumPy by default, CuPy on request, and no silent mixing of the two."""

import contextlib
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import host

import minflow
from minflow import backend, data, models, testing, train
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


def _cupy_usable():
    """CuPy can make arrays here: a CUDA device, or the strict stand-in (which computes on the CPU)."""
    if not HAS_CUPY:
        return False
    import cupy

    return getattr(cupy, "_strict_stand_in", False) or _cupy_has_device()


needs_gpu = pytest.mark.skipif(not _cupy_has_device(), reason="needs CuPy and a CUDA device")
needs_cupy = pytest.mark.skipif(
    not _cupy_usable(), reason="needs CuPy with a device, or the strict stand-in (PYTHONPATH=tests/support/strict_cupy)"
)


@contextlib.contextmanager
def default_backend(name):
    """Make ``name`` the default backend inside the block, and restore the suite's afterwards."""
    previous = backend.backend_name()
    minflow.set_backend(name)
    try:
        yield
    finally:
        minflow.set_backend(previous)


def _env_without_backend():
    """This process's environment, minus MINFLOW_BACKEND: what a user who sets nothing gets."""
    env = dict(os.environ)
    env.pop("MINFLOW_BACKEND", None)
    return env


def test_numpy_is_the_default_backend():
    # In a fresh process that sets nothing (this suite may run with MINFLOW_BACKEND=cupy).
    code = (
        "import numpy as np, minflow\n"
        "from minflow.autodiff import Tensor\n"
        "assert minflow.backend.backend_name() == 'numpy' and minflow.backend.xp() is np\n"
        "assert isinstance(Tensor([1.0, 2.0]).data, np.ndarray)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env_without_backend(), check=True)


def test_the_default_backend_is_the_one_minflow_backend_names():
    expected = os.environ.get("MINFLOW_BACKEND", "").strip().lower() or "numpy"
    assert backend.backend_name() == expected
    assert backend.xp().__name__ == expected
    assert isinstance(Tensor([1.0, 2.0]).data, backend.xp().ndarray)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        minflow.set_backend("torch")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_cupy_backend_without_cupy_says_how_to_install():
    with pytest.raises(ImportError, match=r"minflow\[gpu\]"):
        minflow.set_backend("cupy")
    assert backend.backend_name() == "numpy", "a failed switch leaves the backend as it was"


def test_importing_minflow_needs_only_numpy():
    # Without MINFLOW_BACKEND, which would ask for CuPy at import (this suite may run with it).
    code = (
        "import sys, minflow, minflow.testing, minflow.flows.linear, minflow.flows.elementwise\n"
        "heavy = {'cupy', 'autograd', 'hypothesis', 'matplotlib', 'scipy', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env_without_backend(), check=True)


def test_environment_variable_selects_the_backend():
    env = dict(os.environ, MINFLOW_BACKEND="numpy")
    out = subprocess.run(
        [sys.executable, "-c", "import minflow; print(minflow.backend.backend_name())"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "numpy"
    env["MINFLOW_BACKEND"] = "tensorflow"
    bad = subprocess.run([sys.executable, "-c", "import minflow"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


def test_same_seed_same_numbers():
    a = host(backend.rng(5).standard_normal(4))
    b = host(backend.rng(5).standard_normal(4))
    assert np.array_equal(a, b) and not np.array_equal(a, host(backend.rng(6).standard_normal(4)))
    generator = backend.rng(1)
    assert backend.rng(generator) is generator, "a Generator is passed through"


def test_to_numpy_accepts_arrays_tensors_and_numbers():
    assert np.array_equal(backend.to_numpy(Tensor([1.0, 2.0])), [1.0, 2.0])
    assert backend.to_numpy(np.arange(3)).tolist() == [0, 1, 2]
    assert backend.to_numpy(2.5) == 2.5


def test_integer_data_becomes_the_default_float_dtype():
    assert Tensor(np.arange(3)).dtype == np.float64
    assert Tensor(np.arange(3, dtype=np.float32)).dtype == np.float32, "float arrays keep their dtype"


@needs_cupy
@pytest.mark.gpu
def test_mixing_numpy_and_cupy_raises_a_clear_error():
    import cupy

    with pytest.raises(ValueError, match="cannot mix NumPy and CuPy"):
        ops.add(Tensor(np.ones(2)), cupy.ones(2))
    with default_backend("numpy"):
        flow = testing.example_flows(2, seed=0)["LULinear"]  # NumPy parameters
    with default_backend("cupy"):
        gpu_flow = testing.example_flows(2, seed=0)["LULinear"]
    # The whole message, for a bare array and for one inside a Tensor, in both directions and both methods.
    for module, parameters, x in (("cupy", "numpy", cupy.ones((3, 2))), ("numpy", "cupy", np.ones((3, 2)))):
        wrong_flow = flow if parameters == "numpy" else gpu_flow
        for method, name in ((wrong_flow.forward, "x"), (wrong_flow.inverse, "z")):
            message = (
                f"LULinear: {name} is a {module} array but the flow's parameters are {parameters} arrays; "
                "move one of them (minflow.backend.to_device / to_numpy)"
            )
            for given in (x, Tensor(x)):
                with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                    method(given)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name", testing.example_flow_names())
def test_every_flow_passes_check_flow_on_the_gpu(name):
    with default_backend("cupy"):
        flow = testing.example_flows(2, seed=0)[name]
        assert backend.is_cupy_array(flow.forward(testing.sample_inputs(flow, 4))[0].data)
        testing.check_flow(flow, n=4)


# --- CuPy where it imports: on a device, or on the strict stand-in -------------------------
@needs_cupy
def test_the_environment_variable_selects_cupy():
    env = dict(os.environ, MINFLOW_BACKEND="cupy")  # PYTHONPATH (the stand-in's, if any) is inherited
    out = subprocess.run(
        [sys.executable, "-c", "import minflow; print(minflow.backend.backend_name(), minflow.backend.xp().__name__)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["cupy", "cupy"]


@needs_cupy
def test_rng_refuses_a_numpy_generator_on_cupy():
    import cupy

    numpy_generator = np.random.default_rng(0)
    with default_backend("cupy"):
        with pytest.raises(ValueError, match="numpy random Generator where a cupy one is needed"):
            backend.rng(numpy_generator)
        generator = backend.rng(0)
        assert backend.rng(generator) is generator, "a CuPy Generator is passed through"
        assert isinstance(generator.standard_normal(3), cupy.ndarray)
    with pytest.raises(ValueError, match="numpy random Generator where a cupy one is needed"):
        backend.rng(numpy_generator, xp=cupy)
    with pytest.raises(ValueError, match="cupy random Generator where a numpy one is needed"):
        backend.rng(generator, xp=np)


@needs_cupy
def test_a_tensor_keeps_its_arrays_backend_whatever_the_default():
    import cupy

    with default_backend("numpy"):
        on_device = Tensor(cupy.asarray([1.0, 2.0]))
        on_host = Tensor(np.array([1.0, 2.0]))
        assert isinstance(on_device.data, cupy.ndarray) and isinstance(on_host.data, np.ndarray)
        assert isinstance((on_device * 2.0).data, cupy.ndarray), "ops follow their data"
    with default_backend("cupy"):
        assert isinstance(Tensor(np.array([1.0, 2.0])).data, np.ndarray)
        assert isinstance(Tensor([1.0, 2.0]).data, cupy.ndarray), "new data goes to the default backend"


@needs_cupy
def test_a_model_lives_where_its_parameters_live():
    # Built on CuPy, then the default switched to NumPy: sampling, the reverse KL and
    # check_flow all stay on CuPy, and the model's data go there too.
    import cupy

    with default_backend("cupy"):
        model = models.realnvp(2, layers=2, hidden=8, seed=0)
    with default_backend("numpy"):
        assert model.array_module() is cupy
        samples = model.sample(16, seed=0)
        assert isinstance(samples, cupy.ndarray) and samples.shape == (16, 2)
        assert isinstance(model.sample(4, seed=backend.rng(1, cupy)), cupy.ndarray)
        loss = train.reverse_kl(model, data.log_density("u1"), 16, seed=0)
        assert isinstance(loss.data, cupy.ndarray) and np.isfinite(host(loss))
        loss.backward()
        assert all(isinstance(p.grad, cupy.ndarray) for p in model.parameters())
        history = train.fit_to_density(model, data.log_density("u1"), steps=2, batch_size=16, progress=False)
        assert len(history["loss"]) == 2
        host_data = np.random.default_rng(0).standard_normal((32, 2))
        assert np.isfinite(train.evaluate_nll(model, host_data)), "host data are moved to the model's device"
        testing.check_flow(model.flow, n=4)
        assert isinstance(testing.sample_inputs(model.flow, 4), cupy.ndarray)


def _is_glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False


# --- the C allocator ---------------------------------------------------------------------
# Importing minflow does not touch the allocator (tests/test_import.py checks that, and
# everything else a module could change at import). keep_freed_memory is an explicit call:
# these tests check what it does and who makes it.
@pytest.fixture
def recorded_mallopt(monkeypatch):
    """The list of mallopt calls made from here on (each still reaches the real one)."""
    import ctypes

    calls, real_cdll = [], ctypes.CDLL

    class Recorder:  # stands in for ctypes.CDLL, which keep_freed_memory looks up at each call
        def __init__(self, name):
            self.real = real_cdll(name)

        def mallopt(self, option, value):
            calls.append((option, value))
            return self.real.mallopt(option, value)

    monkeypatch.setattr(ctypes, "CDLL", Recorder)
    return calls


@pytest.mark.skipif(not _is_glibc(), reason="mallopt is glibc's")
@pytest.mark.parametrize("opt_out", [None, "1", "0", " 0 "])
def test_keep_freed_memory_asks_malloc_unless_opted_out(monkeypatch, recorded_mallopt, opt_out):
    # Without it, every large temporary of a train step is mapped afresh from the OS and
    # page-faulted in (benchmarks/RESULTS.md, section 4a); M_MMAP_THRESHOLD is -3 and
    # M_TRIM_THRESHOLD -1 in glibc's malloc.h.
    if opt_out is None:
        monkeypatch.delenv("MINFLOW_KEEP_FREED_MEMORY", raising=False)
    else:
        monkeypatch.setenv("MINFLOW_KEEP_FREED_MEMORY", opt_out)
    opted_out = opt_out is not None and opt_out.strip() == "0"
    assert backend.keep_freed_memory() is (not opted_out)
    assert recorded_mallopt == ([] if opted_out else [(-3, 32 << 20), (-1, 256 << 20)])


@pytest.fixture
def counted_keep_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(backend, "keep_freed_memory", lambda: calls.append(1) or True)
    return calls


def test_fit_and_fit_to_density_ask_to_keep_freed_memory(counted_keep_freed_memory):
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    train.fit(model, np.random.default_rng(0).normal(size=(32, 2)), steps=1, batch_size=16, progress=False)
    assert len(counted_keep_freed_memory) == 1
    train.fit_to_density(model, data.log_density("u1"), steps=1, batch_size=16, progress=False)
    assert len(counted_keep_freed_memory) == 2


def test_the_command_line_asks_to_keep_freed_memory(counted_keep_freed_memory, tmp_path, capsys):
    from minflow import cli

    with pytest.raises(SystemExit):  # a run folder that does not exist: one line, exit code 2
        cli.main(["evaluate", str(tmp_path / "no_run")])
    assert len(counted_keep_freed_memory) == 1
    assert "no_run" in capsys.readouterr().err
