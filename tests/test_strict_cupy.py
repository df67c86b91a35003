"""Tests of the strict CuPy stand-in (tests/support/strict_cupy), the test double that lets the
suite run minflow's CuPy code path without a GPU.

The name ``cupy`` is process-global (and a GPU machine may have the real one), so the stand-in
runs in subprocesses with ``tests/support/strict_cupy`` first on ``PYTHONPATH``. Each planted GPU
bug is a small backend-agnostic snippet that must fail under the stand-in and pass on NumPy.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAND_IN = os.path.join(ROOT, "tests", "support", "strict_cupy")

# Code that works on NumPy but breaks on a real GPU; each runs with numpy, minflow, backend and
# xp = backend.xp() in scope.
PLANTED_BUGS = {
    "implicit numpy.asarray": "a = xp.ones((3, 2)); numpy.asarray(a)",
    "Generator.normal": "backend.rng(0).normal(size=3)",
    "numpy.linalg function CuPy lacks": "numpy.linalg.vector_norm(xp.ones((3, 2)))",
    "numpy.linalg.solve broadcasting b": "numpy.linalg.solve(xp.ones((4, 3, 3)) + 3 * xp.eye(3), xp.ones((3, 1)))",
    "xp.linalg.solve broadcasting b": "xp.linalg.solve(xp.ones((4, 3, 3)) + 3 * xp.eye(3), xp.ones((3, 1)))",
    "NumPy array in an operator": "xp.ones(3) + numpy.ones(3)",
    "NumPy array on the left": "numpy.ones(3) * xp.ones(3)",
    "NumPy array in a function": "xp.concatenate([xp.ones(3), numpy.ones(3)])",
    "x[i] = numpy array": "a = xp.zeros((3, 2)); a[0] = numpy.ones(2)",
    "Python-float method on a reduction": "xp.ones(3).sum().is_integer()",
}

# Checks of the stand-in's own contract, run under it; each must evaluate to True.
# ``line()`` is the current line number, to check the call sites the sync counter records.
CONTRACT = {
    "separate type": "type(xp.ones(2)).__module__ == 'cupy' and not isinstance(xp.ones(2), numpy.ndarray)"
    " and not issubclass(cupy.ndarray, numpy.ndarray)",
    "stand-in marker": "cupy._strict_stand_in is True",
    "reductions are 0-d arrays": "all(type(r) is cupy.ndarray and r.shape == () for r in ("
    "xp.ones(3).sum(), xp.sum(xp.ones(3)), numpy.sum(xp.ones(3)), xp.ones((2, 2)).max(),"
    " xp.arange(3.0)[1], xp.ones((2, 2))[0, 1], xp.linalg.norm(xp.ones(3)),"
    " xp.ones(3) @ xp.ones(3), backend.rng(0).standard_normal()))",
    "integer index is a view": "(lambda a: (a[1].__setitem__((), 5.0), a[1] == 5.0)[1])(xp.zeros(3)).all().item()",
    "numpy functions dispatch": "type(numpy.exp(xp.ones(2))) is cupy.ndarray and type(numpy.where(xp.ones(2) > 0, 1.0, 0.0))"
    " is cupy.ndarray and type(numpy.add.reduce(xp.ones(3))) is cupy.ndarray",
    "dtypes are numpy's": "cupy.float32 is numpy.float32 and cupy.dtype is numpy.dtype"
    " and xp.ones(2, dtype=xp.float32).dtype == numpy.dtype('float32')",
    "NEP 50 promotion": "(xp.ones(2, dtype=xp.float32) * 2.0).dtype == xp.float32"
    " and (xp.ones(2, dtype=xp.float32) * xp.ones(2)).dtype == xp.float64",
    "Generator lacks normal": "raises(AttributeError, lambda: cupy.random.default_rng(0).normal)",
    "Generator lacks permutation/choice/shuffle": "all(not hasattr(cupy.random.default_rng(0), n)"
    " for n in ('permutation', 'choice', 'shuffle'))",
    "Generator honours dtype": "cupy.random.default_rng(0).standard_normal((2,), dtype=xp.float32).dtype == xp.float32"
    " and cupy.random.default_rng(0).uniform(size=2, dtype=xp.float32).dtype == xp.float32",
    "numpy-only names are absent": "raises(AttributeError, lambda: cupy.unstack) and not hasattr(xp.ones(2), 'resize')",
    "cupy-only names raise NotImplementedError": "raises(NotImplementedError, lambda: cupy.fuse(lambda x: x))",
    "public names are CuPy's": "set(n for n in dir(cupy) if not n.startswith('_')) == set(cupy._NAMES['cupy'])"
    " and set(n for n in dir(cupy.linalg) if not n.startswith('_')) == set(cupy._NAMES['cupy.linalg'])"
    " and set(n for n in dir(cupy.random) if not n.startswith('_')) == set(cupy._NAMES['cupy.random'])",
    "names pinned from CuPy 14": "cupy.__version__.startswith('14.')",
    "solve with matching batch works": "xp.linalg.solve(xp.ones((4, 3, 3)) + 3 * xp.eye(3), xp.ones((4, 3, 1))).shape == (4, 3, 1)",
    "solve of a singular matrix gives nan": "bool(xp.isnan(xp.linalg.solve(xp.zeros((2, 2)), xp.ones(2))).all())",
    "unknown operand gets NotImplemented": "type(xp.ones(2) + minflow.Tensor(xp.ones(2))).__name__ == 'Tensor'"
    " and type(xp.ones(2) * minflow.Tensor(xp.ones(2))).__name__ == 'Tensor'",
    "python and numpy scalars mix": "type(xp.ones(2) * numpy.float64(2.0)) is cupy.ndarray"
    " and type(numpy.float32(2.0) + xp.ones(2)) is cupy.ndarray and type(3 - xp.ones(2)) is cupy.ndarray",
    "host to device": "type(xp.asarray(numpy.ones(2))) is cupy.ndarray and not _strict.syncs()",
    "asarray copies host data": "(lambda h: (lambda d: (h.__setitem__(0, 7.0), float(d[0]) == 1.0)[1])(xp.asarray(h)))(numpy.ones(2))",
    "get copies": "(lambda d: (d.get().__setitem__(0, 7.0), float(d[0]) == 1.0)[1])(xp.ones(2))",
    "is_cupy_array": "backend.is_cupy_array(xp.ones(2)) and not backend.is_cupy_array(numpy.ones(2))",
    "getDeviceCount raises": "raises(cupy.cuda.runtime.CUDARuntimeError, cupy.cuda.runtime.getDeviceCount)"
    " and issubclass(cupy.cuda.runtime.CUDARuntimeError, RuntimeError)"
    " and cupy.cuda.is_available() is False",
    "memory pool raises": "raises(cupy.cuda.runtime.CUDARuntimeError, cupy.get_default_memory_pool)",
    "synchronize works": "cupy.cuda.Device().synchronize() is None",
    "scatter_add accumulates": "(lambda t: (cupyx.scatter_add(t, xp.asarray([0, 0, 1]), xp.ones(3)), t.get().tolist())[1])"
    "(xp.zeros(2)) == [2.0, 1.0]",
    "solve_triangular": "bool(xp.allclose(cupyx.scipy.linalg.solve_triangular(xp.eye(3) * 2, xp.ones(3), lower=True), 0.5))",
    "allow_synchronize(False) raises": "raises(cupyx.DeviceSynchronized, sync_while_disallowed) and _strict._allow == [True]",
}

DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy
    import minflow
    from minflow import backend

    xp = backend.xp()
    results = {}

    def raises(error, func):
        try:
            func()
        except error:
            return True
        return False

    def sync_while_disallowed():
        import cupyx

        with cupyx.allow_synchronize(False):
            float(xp.ones(()))

    def line():
        return sys._getframe(1).f_lineno

    for name, code in json.loads(sys.argv[1]).items():
        try:
            exec(code, {"numpy": numpy, "minflow": minflow, "backend": backend, "xp": xp})
            results[name] = "passed"
        except Exception as error:
            results[name] = f"{type(error).__name__}: {error}"

    if backend.backend_name() == "cupy":
        import cupy, cupyx, cupyx.scipy.linalg
        from cupy import _strict

        env = {"numpy": numpy, "minflow": minflow, "backend": backend, "xp": xp, "cupy": cupy,
               "cupyx": cupyx, "_strict": _strict, "raises": raises,
               "sync_while_disallowed": sync_while_disallowed}
        for name, code in json.loads(sys.argv[2]).items():
            _strict.reset()
            try:
                results[name] = eval(code, env) is True or "evaluated to a false value"
            except Exception as error:
                results[name] = f"{type(error).__name__}: {error}"

        # the sync counter, with call sites
        x = xp.arange(3.0)
        s = x.sum()
        expected = []
        _strict.reset()
        with _strict.counting() as counted:
            x.shape, x.dtype, x.size, x.ndim, len(x)
            y = (x + 1) * 2 - x / 3
            float(s); expected.append(("float", line()))
            s.item(); expected.append(("item", line()))
            x.get(); expected.append(("get", line()))
            bool(s > 0); expected.append(("bool", line()))
            int(s); expected.append(("int", line()))
            cupy.asnumpy(y); expected.append(("asnumpy", line()))
            repr(s); expected.append(("repr", line()))
        here = __file__
        results["sync counter"] = {
            "counted": [[kind, site] for kind, site in counted.records],
            "expected": [[kind, f"{here}:{n}"] for kind, n in expected],
            "count": counted.count,
            "sites": counted.sites,
            "repr": repr(counted),
            "global": len(_strict.syncs()),
        }
    print("RESULTS" + json.dumps(results))
    """
)


def _run(backend, tmp_path_factory):
    path = tmp_path_factory.mktemp("strict_cupy") / f"driver_{backend}.py"
    path.write_text(DRIVER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([STAND_IN, ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env["MINFLOW_BACKEND"] = backend
    proc = subprocess.run(
        [sys.executable, str(path), json.dumps(PLANTED_BUGS), json.dumps(CONTRACT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    assert proc.returncode == 0 and lines, f"driver failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULTS") :]), str(path)


@pytest.fixture(scope="module")
def on_stand_in(tmp_path_factory):
    return _run("cupy", tmp_path_factory)


@pytest.fixture(scope="module")
def on_numpy(tmp_path_factory):
    return _run("numpy", tmp_path_factory)


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_gpu_bug_fails_on_stand_in_and_passes_on_numpy(bug, on_stand_in, on_numpy):
    assert on_numpy[0][bug] == "passed", f"the snippet should run on NumPy: {on_numpy[0][bug]}"
    outcome = on_stand_in[0][bug]
    assert outcome != "passed", f"the stand-in let a GPU bug through: {PLANTED_BUGS[bug]}"
    assert not outcome.startswith("NotImplementedError"), f"a stand-in gap, not a CuPy refusal: {outcome}"


def test_planted_bugs_fail_the_way_cupy_does(on_stand_in):
    results = on_stand_in[0]
    assert results["implicit numpy.asarray"].startswith("TypeError: Implicit conversion to a NumPy array")
    assert results["Generator.normal"].startswith("AttributeError")
    assert results["numpy.linalg function CuPy lacks"].startswith("TypeError")
    assert results["numpy.linalg.solve broadcasting b"].startswith("ValueError: a must have (..., M, M) shape")
    assert results["xp.linalg.solve broadcasting b"].startswith("ValueError: a must have (..., M, M) shape")
    assert results["NumPy array in an operator"].startswith("TypeError: Unsupported type")
    assert results["NumPy array on the left"].startswith("TypeError: Unsupported type")
    assert results["x[i] = numpy array"].startswith("ValueError: non-scalar numpy.ndarray cannot be used for fill")


@pytest.mark.parametrize("check", sorted(CONTRACT))
def test_contract(check, on_stand_in):
    assert on_stand_in[0][check] is True, f"{CONTRACT[check]}\n-> {on_stand_in[0][check]}"


def test_sync_counter_counts_transfers_with_call_sites(on_stand_in):
    record = on_stand_in[0]["sync counter"]
    assert record["counted"] == record["expected"]  # metadata and arithmetic are not counted
    assert record["count"] == 7
    assert record["sites"] == [site for _, site in record["expected"]]
    assert "float" in record["repr"] and record["expected"][0][1] in record["repr"]
    assert record["global"] == 7  # the global record (reset before) saw the same


def test_names_file_is_pinned_to_a_cupy_version():
    names = [n for n in os.listdir(STAND_IN) if n.startswith("NAMES_cupy_")]
    assert len(names) == 1
    with open(os.path.join(STAND_IN, names[0])) as file:
        first = file.readline()
    version = names[0][len("NAMES_cupy_") : -len(".txt")]
    assert first.startswith(f"# CuPy {version} ")
