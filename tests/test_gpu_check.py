"""benchmarks/gpu_check.py (`make gpu-check`): one line and exit 0 without a device, and the
B = 65,536 speed-up pulled out of train_step.py's JSON correctly. No GPU, no network."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def _real_device():
    env, _ = gpu_check.base_environment()
    return gpu_check.detect_device(env)["device"]


HAS_DEVICE = _real_device()


def run_script(env_changes, *args):
    env = dict(os.environ, **env_changes)
    env.pop(gpu_check.ACTIVE_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done, (done.stdout + done.stderr).splitlines()


def fake_cupy(folder, body):
    package = folder / "cupy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(body))
    return str(folder)


STAND_IN = """
    _strict_stand_in = True
    __version__ = "0.0-stand-in"
    class CUDARuntimeError(RuntimeError):
        pass
    class _Runtime:
        @staticmethod
        def getDeviceCount():
            raise CUDARuntimeError("the strict stand-in has no device")
    class cuda:
        runtime = _Runtime
"""

NO_DRIVER = """
    class CUDARuntimeError(RuntimeError):
        pass
    class _Runtime:
        @staticmethod
        def getDeviceCount():
            raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient\\nsecond line")
    class cuda:
        runtime = _Runtime
"""

ZERO_DEVICES = """
    class _Runtime:
        @staticmethod
        def getDeviceCount():
            return 0
    class cuda:
        runtime = _Runtime
"""

BROKEN_IMPORT = """
    raise OSError("libcuda.so.1: cannot open shared object file")
"""

A_DEVICE = """
    __version__ = "0.0-fake"
    class _Runtime:
        getDeviceCount = staticmethod(lambda: 1)
        getDeviceProperties = staticmethod(
            lambda i: {"name": b"Fake GPU", "totalGlobalMem": 2**34, "major": 9, "minor": 0}
        )
        runtimeGetVersion = staticmethod(lambda: 12080)
        driverGetVersion = staticmethod(lambda: 13000)
    class cuda:
        runtime = _Runtime
"""


def assert_one_no_device_line(done, lines):
    assert done.returncode == 0, done.stderr
    assert len(lines) == 1, lines
    assert "no CUDA device" in lines[0] and "nothing to run" in lines[0] and "make gpu-check" in lines[0]
    return lines[0]


@pytest.mark.skipif(HAS_DEVICE, reason="CuPy sees a device here: the script would run the whole check")
def test_without_a_device_one_line_and_exit_0():
    # As the environment is: plain NumPy, or the CI pass with PYTHONPATH=tests/support/strict_cupy.
    assert_one_no_device_line(*run_script({}))


@pytest.mark.skipif(HAS_DEVICE, reason="CuPy sees a device here: the script would run the whole check")
def test_the_stand_in_folder_is_taken_off_pythonpath(tmp_path):
    stand_in = fake_cupy(tmp_path / "support" / "strict_cupy", STAND_IN)
    line = assert_one_no_device_line(*run_script({"PYTHONPATH": stand_in, "MINFLOW_BACKEND": "cupy"}))
    assert "stand-in" not in line  # removed before the probe, so the probe never saw it


@pytest.mark.parametrize(
    "body, reason",
    [
        (STAND_IN, "strict test stand-in"),
        (NO_DRIVER, "CuPy cannot reach a device: CUDARuntimeError: cudaErrorInsufficientDriver"),
        (ZERO_DEVICES, "CuPy sees 0 CUDA devices"),
        (BROKEN_IMPORT, "CuPy does not import: OSError"),
    ],
    ids=["stand-in", "no-driver", "zero-devices", "broken-import"],
)
def test_a_cupy_without_a_device_gives_one_line(tmp_path, body, reason):
    fake = fake_cupy(tmp_path / "fake", body)
    line = assert_one_no_device_line(*run_script({"PYTHONPATH": fake, "MINFLOW_BACKEND": "cupy"}))
    assert reason in line


def test_with_a_device_the_dry_run_plans_every_step_and_runs_nothing(tmp_path):
    fake = fake_cupy(tmp_path / "fake", A_DEVICE)
    stand_in = str(tmp_path / "support" / "strict_cupy")
    done, lines = run_script({"PYTHONPATH": os.pathsep.join([stand_in, fake])}, "--dry-run", "--no-install")
    assert done.returncode == 0, done.stderr
    text = "\n".join(lines)
    assert "Fake GPU, CUDA runtime 12.8, driver 13.0" in text
    assert f"removed the strict CuPy stand-in from PYTHONPATH for every step: {stand_in}" in text
    planned = [line.split()[3] for line in lines if line.startswith("gpu-check: would run")]
    assert planned == ["gpu-tests", "suite-cupy", "train-step", "train-step-cpu", "memory", "lecture-09"]
    assert "MINFLOW_BACKEND=cupy python -m pytest -q" in text
    assert "memory.py --backend cupy" in text and "MINFLOW_QUICK=1" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_the_make_target_runs_the_script():
    done = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    # "in stdout", not its last line: run from `make test`, make -n also prints "Leaving directory".
    assert done.returncode == 0 and "benchmarks/gpu_check.py" in done.stdout
    assert "torch" not in done.stdout  # installing torch is the script's business, on a device machine only


def test_strip_stand_in():
    sep = os.pathsep
    assert gpu_check.strip_stand_in(None) == (None, [])
    assert gpu_check.strip_stand_in("tests/support/strict_cupy") == (None, ["tests/support/strict_cupy"])
    assert gpu_check.strip_stand_in(f"/a{sep}/x/strict_cupy/{sep}/b") == (f"/a{sep}/b", ["/x/strict_cupy/"])
    assert gpu_check.strip_stand_in(f"/a{sep}/strict_cupy_not") == (f"/a{sep}/strict_cupy_not", [])


# --- the speed-up at B = 65,536 from train_step.py's --json --------------------------------
def row(impl, batch, hidden, ms, device="cuda", dtype="float32", backend=None):
    """A result row as train_step.py's workers write it (after combine_rounds)."""
    result = {
        "impl": impl,
        "batch": batch,
        "hidden": hidden,
        "dtype": dtype,
        "device": device,
        "median_ms": ms,
        "p10_ms": 0.9 * ms,
        "p90_ms": 1.3 * ms,
        "steps": 90,
        "loss_after": {"step": 110, "loss": 2.5},
        "round_medians_ms": [0.5 * ms, ms, 3.0 * ms],
        "versions": {},
    }
    if impl == "minflow":
        result["versions"] = {
            "minflow": "0.1.0",
            "minflow backend": backend or ("cupy" if device == "cuda" else "numpy"),
        }
    return result


def run_file(results):
    return {
        "environment": {"numpy": "2.4.6"},
        "timing": {"warmup": 20},
        "rounds": 3,
        "default_malloc": False,
        "removed_variables": [],
        "results": results,
        "wall_seconds": 1000.0,
        "other_processes": "none",
    }


# GPU run: minflow and torch on CUDA, the floor on the CPU (its row says device "cuda" too).
GPU_MS = {
    (4096, 64): (1.0, 0.5, 20.0),
    (4096, 256): (1.5, 0.8, 60.0),
    (16384, 64): (2.0, 1.0, 80.0),
    (16384, 256): (3.0, 2.0, 240.0),
    (65536, 64): (4.0, 2.0, 300.0),
    (65536, 256): (10.0, 5.0, 900.0),
}


def gpu_run():
    results = []
    for (batch, hidden), (minflow, torch, floor) in GPU_MS.items():
        results += [
            row("minflow", batch, hidden, minflow),
            row("torch", batch, hidden, torch),
            row("floor", batch, hidden, floor),
        ]
    results.append({"impl": "torch", "batch": 65536, "hidden": 512, "dtype": "float32", "error": "CUDA out of memory"})
    return run_file(results)


def cpu_run(h64=60.0, h256=80.0):
    return run_file(
        [
            row("minflow", 65536, 64, h64, device="cpu"),
            row("minflow", 65536, 256, h256, device="cpu"),
            row("minflow", 16384, 64, 7.0, device="cpu"),  # decoys: another B, another dtype
            row("minflow", 65536, 64, 999.0, device="cpu", dtype="float64"),
        ]
    )


def speedups(rows):
    return {r["hidden"]: r["speedup"] for r in rows if r["speedup"] is not None}


def assert_speedups(gpu, cpu, expected):
    assert speedups(gpu_check.target_rows(gpu, cpu)) == pytest.approx(expected)


def test_the_speedup_is_minflow_cpu_over_minflow_gpu_at_65536_float32():
    rows = {r["hidden"]: r for r in gpu_check.target_rows(gpu_run(), cpu_run())}
    assert set(rows) == {64, 256, 512}
    assert rows[64]["speedup"] == pytest.approx(60.0 / 4.0) and rows[256]["speedup"] == pytest.approx(80.0 / 10.0)
    assert rows[64]["speedup_vs_floor"] == pytest.approx(300.0 / 4.0)
    assert (rows[256]["minflow_gpu_ms"], rows[256]["torch_gpu_ms"], rows[256]["floor_cpu_ms"]) == (10.0, 5.0, 900.0)
    assert rows[512]["speedup"] is None and any("CUDA out of memory" in why for why in rows[512]["missing"])
    met, sentence = gpu_check.target_verdict([rows[64], rows[256]])
    assert met is False and sentence.startswith("not met") and "H=256: 8.0x" in sentence


def test_a_planted_wrong_number_fails_the_assertion():
    assert_speedups(gpu_run(), cpu_run(), {64: 15.0, 256: 8.0})
    planted = gpu_run()
    target = next(r for r in planted["results"] if (r["impl"], r["batch"], r["hidden"]) == ("minflow", 65536, 64))
    target["median_ms"] = 6.0  # 60 / 6 = 10x, not 15x
    with pytest.raises(AssertionError):
        assert_speedups(planted, cpu_run(), {64: 15.0, 256: 8.0})
    with pytest.raises(AssertionError):
        assert_speedups(gpu_run(), cpu_run(h256=81.0), {64: 15.0, 256: 8.0})


def test_the_verdict():
    assert gpu_check.target_verdict(gpu_check.target_rows(gpu_run(), cpu_run(h256=120.0)))[0] is None  # H=512 missing
    rows = [r for r in gpu_check.target_rows(gpu_run(), cpu_run(h256=120.0)) if r["hidden"] != 512]
    met, sentence = gpu_check.target_verdict(rows)
    assert met is True and sentence == "met (H=64: 15.0x, H=256: 12.0x; target >= 10x)"
    met, sentence = gpu_check.target_verdict(gpu_check.target_rows(gpu_run(), None))
    assert met is None and sentence.startswith("not measured")


def test_a_gpu_time_measured_on_numpy_is_refused():
    wrong = gpu_run()
    for r in wrong["results"]:
        if r["impl"] == "minflow":
            r["versions"]["minflow backend"] = "numpy"
    with pytest.raises(ValueError, match="ran on numpy, not cupy"):
        gpu_check.target_rows(wrong, cpu_run())


def test_it_reads_what_train_step_really_writes(tmp_path):
    # A real (tiny, CPU) train_step.py run: the JSON's structure is the one the extractor expects.
    out = tmp_path / "run.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_step.py"),
            "--quick",
            "--no-check",
            "--impl",
            "minflow",
            "floor",
            "--batch",
            "64",
            "--hidden",
            "8",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    written = json.loads(out.read_text())
    minflow = next(r for r in written["results"] if r["impl"] == "minflow")
    (only,) = gpu_check.target_rows(None, written, batch=64)
    assert only["hidden"] == 8 and only["minflow_cpu_ms"] == minflow["median_ms"] > 0


def test_the_results_file(tmp_path):
    logs = {}
    for name, lines in {
        "train-step": [
            "# RealNVP train step ...; device cuda",
            "round 1/3: ...",
            "",
            "| B | H | minflow GPU ms |",
            "|---|---|---|",
            "| 65536 | 64 | 4.00 |",
            "",
            "medians in ms",
        ],
        "memory": [
            "RealNVP, 8 couplings, B=512",
            "one step's graph: 6724 KiB",
            "pool bytes in use after step 10 / 100 / 1000: 1 / 1 / 1 KiB",
            "other",
        ],
    }.items():
        logs[name] = tmp_path / f"{name}.log"
        logs[name].write_text("\n".join(lines) + "\n")
    (tmp_path / "cuda.json").write_text(json.dumps(gpu_run()))
    (tmp_path / "cpu.json").write_text(json.dumps(cpu_run()))
    records = [
        {
            "name": name,
            "command": name,
            "status": "passed",
            "passed": True,
            "wall": 12.0,
            "tail": ["ok"],
            "log": str(path),
        }
        for name, path in logs.items()
    ]
    records.append(
        {
            "name": "lecture-09",
            "command": "x",
            "status": "failed (exit 1)",
            "passed": False,
            "wall": 3.0,
            "tail": ["AssertionError"],
            "log": str(tmp_path / "missing.log"),
        }
    )
    context = {
        "started": "2026-12-01 10:00",
        "command": "gpu_check.py",
        "git": "abc1234",
        "raw": str(tmp_path),
        "device": {
            "name": "Fake GPU",
            "cuda_runtime": 12080,
            "cuda_driver": 13000,
            "cupy": "14.0.0",
            "numpy": "2.4.6",
            "capability": "9.0",
            "memory_gib": 16.0,
            "count": 1,
        },
        "torch": {"version": "2.13.0", "cuda": "12.8", "available": True, "device": "Fake GPU"},
        "nvidia_smi": None,
        "cpu": "Some CPU",
        "notes": [],
        "records": records,
        "skipped": [],
        "skip_reason": "",
        "gpu_json": str(tmp_path / "cuda.json"),
        "cpu_json": str(tmp_path / "cpu.json"),
    }
    text = gpu_check.render(context)
    assert "| CUDA runtime / driver (CuPy) | 12.8 / 13.0 |" in text
    assert "**Target not met (H=64: 15.0x, H=256: 8.0x; target >= 10x)" in text
    assert "| 65536 | 64 | 4.00 |" in text and "pool bytes in use after step 10" in text
    assert "| lecture-09 | `x` | **failed (exit 1)** | 3 s |" in text
