"""Everything minflow has never run on a GPU, in one command: ``make gpu-check``.

Why. minflow's CuPy backend is written and tested against a strict CuPy *stand-in*
(tests/support/strict_cupy), never against CUDA itself: no GPU has been lent to the tasks
that wrote it, and ``benchmarks/RESULTS.md`` section 6 says "unmeasured" everywhere. This
script is what to run the first time a machine with a CUDA device is there, so that one
command produces every GPU number the project is waiting for, and a record of what broke.

Where there is no device (no CuPy; CuPy that sees no device or cannot reach its driver; or
the strict stand-in, a module ``cupy`` with ``cupy._strict_stand_in = True``) it prints one
line saying so and exits 0. The device is probed in a child process, so a CUDA
initialisation that raises, hangs (120 s limit) or crashes cannot take this script with it.
Any ``.../strict_cupy`` entry of PYTHONPATH is removed for the probe and for every step:
on a GPU machine the stand-in must never shadow the real CuPy.

What it runs, in order, each step in a process of its own with a time limit. A step that
fails or times out is recorded and the next one runs.

1. ``gpu-tests``: ``python -m pytest -q -m gpu`` (the tests marked gpu, on real CuPy;
   default backend NumPy, as they expect).
2. ``suite-cupy``: ``python -m pytest -q`` with ``MINFLOW_BACKEND=cupy``: the whole suite
   with CuPy as the default backend.
3. ``train-step``: ``benchmarks/train_step.py --device cuda --json ...``: minflow on CuPy
   against PyTorch CUDA and the hand-written NumPy floor on the CPU, float32,
   B in {4096, 16384, 65536}, H in {64, 256}, 3 rounds.
4. ``train-step-cpu``: ``benchmarks/train_step.py --device cpu --impl minflow --batch 65536
   --dtype float32 --late-steps 0 --json ...``: minflow on NumPy on this machine's CPU at
   the target size. Step 3 times the *floor* on the CPU, not minflow, and the target below
   is minflow against minflow; this step supplies the CPU side.
5. ``memory``: ``benchmarks/memory.py --backend cupy``: the CuPy memory pool's bytes in use
   and held after each of 1,000 steps (B=512, H=64, float32).
6. ``lecture-09``: ``lectures/09_gpu.py`` as a script with ``MINFLOW_BACKEND=cupy``, in
   quick mode (``MINFLOW_QUICK=1``) unless ``--full``.

Before step 1, on a device machine only, it installs what the steps need if it is missing:
PyTorch (the version pyproject's ``bench`` extra pins; its Linux wheel from PyPI is a CUDA
build, a download of a few GB) and threadpoolctl. ``--no-install`` skips that; the torch
column then stays empty. CuPy itself is never installed here: ``pip install 'minflow[gpu]'``
(CUDA 13) or ``'minflow[gpu-cuda12]'`` (CUDA 12 drivers) first.

What it writes. ONE file, ``benchmarks/gpu_results/gpu-check-<date>.md`` (``-2``, ``-3``...
if that exists; or ``--out PATH``, which must not exist unless ``--force``). That folder is
not gitignored, on purpose: the file is the evidence behind the numbers in RESULTS.md and
can be committed. It holds the device, CUDA runtime and driver, CuPy, NumPy and PyTorch
versions; each step's result, wall time and last output lines; train_step's GPU table; the
B = 65,536 float32 speed-up of minflow on CuPy over minflow on NumPy on the CPU (target
>= 10x) with met or not; and memory.py's numbers. Full logs, train_step's JSON and the
lecture's figures go to ``build/gpu-check/<stamp>/`` (gitignored). The last line printed
says where the file went. Exit status: 0 when every step passed, 1 otherwise (the file is
written either way); a Ctrl-C ends the running step, skips the rest and still writes it.

How long. Not measured yet: no GPU has run it. Guesses from the CPU timings in RESULTS.md:
steps 1, 5 and 6 a few minutes each; step 2 longer than the NumPy suite's ten minutes (every
small op is a kernel launch, and CuPy compiles each new kernel once, cached in
~/.cupy/kernel_cache); steps 3 and 4 are dominated by the CPU peers at B = 65,536 (seconds
per step, 50+ steps, 3 rounds): tens of minutes. Allow one to two hours, plus the torch
download. The results file records each step's wall time: replace these guesses with them.

Afterwards, in ``benchmarks/RESULTS.md`` (copy numbers from the results file only; nothing
there may be estimated, and a step that failed is reported as failed, not left out):
- "The machine": a GPU row (device, CUDA runtime / driver, CuPy, torch CUDA build).
- Section 6: the table's rows (minflow CuPy ms, torch CUDA ms, NumPy floor CPU ms) from the
  train-step table; its last column is the *floor* CPU ms / minflow CuPy ms, so head it so.
  Then the B = 65,536 target line (minflow NumPy CPU ms / minflow CuPy ms per H, met or
  not); the pass/fail of the gpu tests, the suite on CuPy and lecture 9, and what failed.
- Section 5, "On CuPy": memory.py's pool bytes in use and held after steps 10, 100, 1000.
- The date, the git commit (in the results file) and a link to the results file.

Run: python benchmarks/gpu_check.py [--out PATH] [--force] [--full] [--no-install]
     [--only STEP ...] [--dry-run]
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import train_step  # noqa: E402  (its cpu_model for the header; it imports numpy, nothing heavier)

RESULTS_DIR = os.path.join(HERE, "gpu_results")
RAW_DIR = os.path.join(ROOT, "build", "gpu-check")

TARGET_BATCH = 65536
TARGET_DTYPE = "float32"
TARGET_SPEEDUP = 10.0
PROBE_TIMEOUT = 120
TAIL_LINES = 15
STAND_IN_DIR = "strict_cupy"
ACTIVE_VARIABLE = "MINFLOW_GPU_CHECK_ACTIVE"  # set in every step's environment: no gpu-check inside a gpu-check
INSTALL_HINT = (
    "On a GPU machine: pip install 'minflow[gpu]' (CUDA 13; 'minflow[gpu-cuda12]' for CUDA 12) then make gpu-check."
)

# Runs in a child process (``python -c``): prints one JSON line. Every failure is a reason, never a traceback.
PROBE = r"""
import json, sys

def say(**fields):
    print(json.dumps(fields))
    sys.exit(0)

def short(error):
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]

try:
    import importlib.util
    if importlib.util.find_spec("cupy") is None:
        say(device=False, reason="CuPy not installed")
    import cupy
except Exception as error:
    say(device=False, reason="CuPy does not import: " + short(error))
try:
    stand_in = getattr(cupy, "_strict_stand_in", False) is True
except Exception:  # a strict module may refuse unknown attributes in its own way
    stand_in = False
if stand_in:
    say(device=False, reason="cupy is the strict test stand-in, " + str(getattr(cupy, "__file__", "?")))
try:
    count = int(cupy.cuda.runtime.getDeviceCount())
except Exception as error:
    say(device=False, reason="CuPy cannot reach a device: " + short(error))
if count < 1:
    say(device=False, reason=f"CuPy sees {count} CUDA devices")
info = {"device": True, "count": count, "cupy": str(getattr(cupy, "__version__", "?")), "cupy_path": cupy.__file__}
try:
    properties = cupy.cuda.runtime.getDeviceProperties(0)
    name = properties.get("name", b"?")
    info["name"] = name.decode() if isinstance(name, bytes) else str(name)
    info["memory_gib"] = round(properties.get("totalGlobalMem", 0) / 2**30, 1)
    info["capability"] = f"{properties.get('major', '?')}.{properties.get('minor', '?')}"
except Exception as error:
    info["name"] = "unknown (" + short(error) + ")"
for key, call in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver", "driverGetVersion")):
    try:
        info[key] = int(getattr(cupy.cuda.runtime, call)())
    except Exception as error:
        info[key] = short(error)
try:
    import numpy
    info["numpy"] = numpy.__version__
except Exception as error:
    info["numpy"] = short(error)
say(**info)
"""

TORCH_PROBE = r"""
import json
try:
    import torch
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
    info["device"] = torch.cuda.get_device_name(0) if info["available"] else None
except Exception as error:
    info = {"error": " ".join(f"{type(error).__name__}: {error}".split())[:300]}
print(json.dumps(info))
"""


# --- the environment of every child ---------------------------------------------------------
def strip_stand_in(pythonpath):
    """(PYTHONPATH without its ``.../strict_cupy`` entries, the entries removed); None if nothing is left."""
    if not pythonpath:
        return pythonpath, []
    kept, removed = [], []
    for entry in pythonpath.split(os.pathsep):
        is_stand_in = entry and os.path.basename(os.path.normpath(entry)) == STAND_IN_DIR
        (removed if is_stand_in else kept).append(entry)
    return (os.pathsep.join(kept) or None), removed


def base_environment(environ=None):
    """os.environ without the stand-in on PYTHONPATH; (env, removed entries)."""
    env = dict(os.environ if environ is None else environ)
    pythonpath, removed = strip_stand_in(env.get("PYTHONPATH"))
    if pythonpath is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = pythonpath
    return env, removed


def one_line(text, limit=300):
    return " ".join(str(text).split())[:limit]


def detect_device(env, timeout=PROBE_TIMEOUT):
    """The probe's answer, a dict with ``device`` True or False (and ``reason``); never raises."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"device": False, "reason": f"the device probe did not answer within {timeout} s"}
    except Exception as error:  # could not even start a Python: still not a traceback for the user
        return {"device": False, "reason": "could not run the device probe: " + one_line(error)}
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        if isinstance(answer, dict) and isinstance(answer.get("device"), bool):
            return answer
    except (IndexError, ValueError):
        pass
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"device": False, "reason": f"the device probe failed (exit {done.returncode}: {one_line(last, 200)})"}


def no_device_line(reason):
    return f"gpu-check: no CUDA device ({one_line(reason)}); nothing to run. {INSTALL_HINT}"


def cuda_version(value):
    """12080 -> '12.8' (CUDA's encoding: 1000 major + 10 minor); anything else as it is."""
    if isinstance(value, int) and value > 0:
        return f"{value // 1000}.{(value % 1000) // 10}"
    return str(value)


# --- the speed-up at the target size, from train_step.py's --json files ---------------------
def _results(run):
    """The result rows of a train_step --json file (already parsed), or [] for None."""
    if run is None:
        return []
    rows = run["results"] if isinstance(run, dict) else run
    if not isinstance(rows, list):
        raise ValueError("not a train_step.py --json file: 'results' is not a list")
    return rows


def _pick(rows, impl, hidden, batch, dtype, device=None):
    """The one row of ``impl`` at (hidden, batch, dtype) (and ``device`` if given); None if absent."""
    found = [
        r
        for r in rows
        if r.get("impl") == impl
        and r.get("batch") == batch
        and r.get("hidden") == hidden
        and r.get("dtype") == dtype
        and (device is None or r.get("device", device) == device)
    ]
    if len(found) > 1:
        raise ValueError(f"{len(found)} rows for {impl} at B={batch}, H={hidden}, {dtype}; expected one")
    return found[0] if found else None


def _median(row):
    return row.get("median_ms") if row and isinstance(row.get("median_ms"), (int, float)) else None


def _why_missing(row, what):
    if row is None:
        return f"{what}: not in the JSON"
    for key in ("error", "skipped"):
        if key in row:
            return f"{what}: {key} ({one_line(row[key], 160)})"
    return f"{what}: no median"


def _check_backend(row, expected):
    backend = (row or {}).get("versions", {}).get("minflow backend")
    if backend is not None and backend != expected:
        raise ValueError(f"minflow's row at B={row['batch']}, H={row['hidden']} ran on {backend}, not {expected}")


def target_rows(gpu_run, cpu_run=None, batch=TARGET_BATCH, dtype=TARGET_DTYPE):
    """For each hidden width at (batch, dtype), the times and speed-ups of the target.

    ``gpu_run`` is ``train_step.py --device cuda --json``'s file, parsed: ``{"results": [row,
    ...]}``, one row per (impl, batch, hidden, dtype) with ``median_ms`` (the median over the
    rounds), or ``error`` / ``skipped`` instead. In it, minflow and torch ran on CUDA and the
    floor on the CPU (its row still says ``"device": "cuda"``, the run's device). ``cpu_run`` is
    ``train_step.py --device cpu --impl minflow ...``'s file: minflow on NumPy. Rows of other
    batch sizes, dtypes or impls are ignored.

    ``speedup`` = minflow NumPy CPU ms / minflow CuPy ms (the target, None if either is
    missing); ``speedup_vs_floor`` = floor CPU ms / minflow CuPy ms (what train_step's own
    table prints). A minflow row whose ``versions`` say it ran on the wrong backend raises
    ``ValueError``: a "GPU" time measured on NumPy must never reach RESULTS.md.
    """
    gpu_rows, cpu_rows = _results(gpu_run), _results(cpu_run)
    hiddens = sorted(
        {
            r.get("hidden")
            for r in gpu_rows + cpu_rows
            if r.get("batch") == batch and r.get("dtype") == dtype and isinstance(r.get("hidden"), int)
        }
    )
    table = []
    for hidden in hiddens:
        minflow_gpu = _pick(gpu_rows, "minflow", hidden, batch, dtype, device="cuda")
        minflow_cpu = _pick(cpu_rows, "minflow", hidden, batch, dtype, device="cpu")
        floor = _pick(gpu_rows, "floor", hidden, batch, dtype)
        torch = _pick(gpu_rows, "torch", hidden, batch, dtype, device="cuda")
        _check_backend(minflow_gpu, "cupy")
        _check_backend(minflow_cpu, "numpy")
        row = {
            "hidden": hidden,
            "minflow_gpu_ms": _median(minflow_gpu),
            "minflow_cpu_ms": _median(minflow_cpu),
            "floor_cpu_ms": _median(floor),
            "torch_gpu_ms": _median(torch),
            "missing": [],
        }
        for value, source, what in (
            (row["minflow_gpu_ms"], minflow_gpu, "minflow CuPy"),
            (row["minflow_cpu_ms"], minflow_cpu, "minflow NumPy CPU"),
            (row["floor_cpu_ms"], floor, "floor CPU"),
            (row["torch_gpu_ms"], torch, "torch CUDA"),
        ):
            if value is None:
                row["missing"].append(_why_missing(source, what))
        gpu_ms = row["minflow_gpu_ms"]
        row["speedup"] = row["minflow_cpu_ms"] / gpu_ms if gpu_ms and row["minflow_cpu_ms"] is not None else None
        row["speedup_vs_floor"] = row["floor_cpu_ms"] / gpu_ms if gpu_ms and row["floor_cpu_ms"] is not None else None
        table.append(row)
    return table


def target_verdict(rows, target=TARGET_SPEEDUP):
    """(True / False / None, one sentence): met at every H, missed at some H, or not fully measured."""
    measured = [r for r in rows if r["speedup"] is not None]
    unmeasured = [r for r in rows if r["speedup"] is None]
    detail = ", ".join(f"H={r['hidden']}: {r['speedup']:.1f}x" for r in measured)
    if any(r["speedup"] < target for r in measured):
        return False, f"not met ({detail}; target >= {target:g}x)"
    if not measured:
        return None, "not measured (no minflow time on both CuPy and the CPU at this size)"
    if unmeasured:
        return None, f"met where measured ({detail}) but not measured at " + ", ".join(
            f"H={r['hidden']}" for r in unmeasured
        )
    return True, f"met ({detail}; target >= {target:g}x)"


def _ms(value):
    return "—" if value is None else f"{value:.2f}"


def _x(value):
    return "—" if value is None else f"{value:.1f}x"


def target_table(rows, target=TARGET_SPEEDUP):
    lines = [
        "| H | minflow CuPy ms | minflow NumPy CPU ms | **speed-up** | floor NumPy CPU ms | minflow CuPy vs floor "
        "| torch CUDA ms | minflow / torch | ≥ " + f"{target:g}x? |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        ratio = r["minflow_gpu_ms"] / r["torch_gpu_ms"] if r["minflow_gpu_ms"] and r["torch_gpu_ms"] else None
        met = "—" if r["speedup"] is None else ("yes" if r["speedup"] >= target else "no")
        lines.append(
            f"| {r['hidden']} | {_ms(r['minflow_gpu_ms'])} | {_ms(r['minflow_cpu_ms'])} | **{_x(r['speedup'])}** "
            f"| {_ms(r['floor_cpu_ms'])} | {_x(r['speedup_vs_floor'])} | {_ms(r['torch_gpu_ms'])} "
            f"| {'—' if ratio is None else f'{ratio:.2f}'} | {met} |"
        )
    return "\n".join(lines)


# --- the steps ------------------------------------------------------------------------------
Step = collections.namedtuple("Step", "name title argv env_changes cwd timeout")


def plan(args, raw):
    py = sys.executable
    quick = {} if args.full else {"MINFLOW_QUICK": "1"}
    no_backend = {"MINFLOW_BACKEND": None}
    steps = [
        Step(
            "gpu-tests",
            "the gpu-marked tests, on real CuPy",
            [py, "-m", "pytest", "-q", "-m", "gpu"],
            no_backend,
            ROOT,
            1800,
        ),
        Step(
            "suite-cupy",
            "the whole test suite with MINFLOW_BACKEND=cupy",
            [py, "-m", "pytest", "-q"],
            {"MINFLOW_BACKEND": "cupy"},
            ROOT,
            5400,
        ),
        Step(
            "train-step",
            "train_step.py --device cuda (minflow CuPy, torch CUDA, NumPy floor on the CPU)",
            [
                py,
                os.path.join(HERE, "train_step.py"),
                "--device",
                "cuda",
                "--json",
                os.path.join(raw, "train_step_cuda.json"),
            ],
            no_backend,
            ROOT,
            5400,
        ),
        Step(
            "train-step-cpu",
            f"train_step.py: minflow on NumPy on the CPU at B={TARGET_BATCH} (the target's CPU side)",
            [
                py,
                os.path.join(HERE, "train_step.py"),
                "--device",
                "cpu",
                "--impl",
                "minflow",
                "--batch",
                str(TARGET_BATCH),
                "--dtype",
                TARGET_DTYPE,
                "--late-steps",
                "0",
                "--json",
                os.path.join(raw, "train_step_cpu.json"),
            ],
            no_backend,
            ROOT,
            3600,
        ),
        Step(
            "memory",
            "memory.py --backend cupy (the memory pool over 1,000 steps)",
            [py, os.path.join(HERE, "memory.py"), "--backend", "cupy"],
            no_backend,
            ROOT,
            1200,
        ),
        Step(
            "lecture-09",
            "lectures/09_gpu.py under MINFLOW_BACKEND=cupy" + ("" if args.full else " (quick mode)"),
            [py, "09_gpu.py"],
            {
                "MINFLOW_BACKEND": "cupy",
                "MPLBACKEND": "Agg",
                "MINFLOW_LECTURE_OUT": os.path.join(raw, "lecture_figures"),
                **quick,
            },
            os.path.join(ROOT, "lectures"),
            1800 if args.full else 900,
        ),
    ]
    return [s for s in steps if not args.only or s.name in args.only]


def step_environment(base, changes):
    env = dict(base, PYTHONUNBUFFERED="1", **{ACTIVE_VARIABLE: "1"})
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def describe_command(step):
    changes = " ".join(f"{k}={v}" if v is not None else f"(no {k})" for k, v in step.env_changes.items())
    command = " ".join(
        shlex.quote(
            os.path.relpath(a, ROOT)
            if os.path.isabs(a) and a != sys.executable
            else ("python" if a == sys.executable else a)
        )
        for a in step.argv
    )
    where = "" if step.cwd == ROOT else f"cd {os.path.relpath(step.cwd, ROOT)} && "
    return f"{where}{changes + ' ' if changes else ''}{command}"


def _kill_group(process):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step, env, log_path):
    """Run one step, its output shown and logged; a record dict (never raises, but re-raises Ctrl-C after
    recording it)."""
    record = {
        "name": step.name,
        "title": step.title,
        "command": describe_command(step),
        "log": log_path,
        "timeout": step.timeout,
    }
    tail = collections.deque(maxlen=TAIL_LINES)
    print(f"\n=== gpu-check: {step.name}: {step.title}\n    {record['command']}", flush=True)
    started = time.perf_counter()
    log = None
    try:
        log = open(log_path, "w")
        # A session of its own: a time-out or Ctrl-C ends the step's whole process group (pytest's and
        # train_step's children included), and the terminal's Ctrl-C reaches only this script.
        process = subprocess.Popen(
            step.argv,
            cwd=step.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as error:
        if log is not None:
            log.close()
        record.update(status="could not start", passed=False, wall=0.0, tail=[one_line(error)])
        return record

    def pump():
        for line in process.stdout:
            log.write(line)
            sys.stdout.write("    " + line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    interrupted = False
    try:
        process.wait(timeout=step.timeout)
        status = "passed" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        _kill_group(process)
        status = f"timed out after {step.timeout} s"
    except KeyboardInterrupt:
        _kill_group(process)
        status, interrupted = "interrupted (Ctrl-C)", True
    reader.join(timeout=10)
    log.close()
    record.update(status=status, passed=status == "passed", wall=time.perf_counter() - started, tail=list(tail))
    print(f"=== gpu-check: {step.name}: {status} in {record['wall']:.0f} s", flush=True)
    if interrupted:
        record["interrupted"] = True
    return record


# --- set-up on a device machine ---------------------------------------------------------------
def pinned_torch():
    """The torch requirement of pyproject's bench extra (so GPU and CPU tables use one torch), else 'torch'."""
    try:
        import tomllib

        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
            extras = tomllib.load(file)["project"]["optional-dependencies"]
        return next(r for r in extras.get("bench", []) if re.match(r"torch\b", r))
    except Exception:  # no tomllib (Python 3.10), no bench extra: the newest torch
        return "torch"


def missing(module, env):
    done = subprocess.run(
        [sys.executable, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() != "False"


def install_missing(env, dry_run, no_install):
    """pip-install torch (a CUDA build) and threadpoolctl if missing; notes for the results file."""
    notes = []
    for module, requirement, why in (
        (
            "torch",
            pinned_torch(),
            "the PyTorch CUDA peer of train_step.py; its Linux wheel from PyPI is a CUDA build, a download of a few GB",
        ),
        ("threadpoolctl", "threadpoolctl", "train_step.py's BLAS report"),
    ):
        if not missing(module, env):
            continue
        if dry_run or no_install:
            notes.append(
                f"{module} is missing; {'would install' if dry_run else 'not installed (--no-install)'}: "
                f"{requirement} ({why})"
            )
            print(f"gpu-check: {notes[-1]}", flush=True)
            continue
        print(f"gpu-check: {module} is missing: pip install {requirement} ({why})", flush=True)
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", requirement], env=env, timeout=3600, check=False
            )
            result = "installed" if done.returncode == 0 else f"pip failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            result = "pip timed out after 3600 s"
        notes.append(
            f"{module} was missing: pip install {requirement}: {result} in {time.perf_counter() - started:.0f} s"
        )
        print(f"gpu-check: {notes[-1]}", flush=True)
    return notes


def torch_info(env):
    try:
        done = subprocess.run(
            [sys.executable, "-c", TORCH_PROBE], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as error:
        return {"error": one_line(error)}


def nvidia_smi():
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except Exception:
        return None


def git_commit():
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "minflow"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


# --- the results file ---------------------------------------------------------------------------
def results_path(out, force, today):
    """Where the results file goes, checked before anything runs; exits 2 with one line if unusable."""
    if out:
        path = os.path.abspath(out)
        if os.path.exists(path) and not force:
            sys.exit(f"gpu-check: --out {out} exists; choose another path or pass --force")
    else:
        base = os.path.join(RESULTS_DIR, f"gpu-check-{today}")
        path, n = base + ".md", 2
        while os.path.exists(path):
            path, n = f"{base}-{n}.md", n + 1
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        sys.exit(f"gpu-check: cannot create {folder} for the results file: {error.strerror}")
    if not os.access(folder, os.W_OK):
        sys.exit(f"gpu-check: cannot write the results file in {folder}; pass --out PATH")
    return path


def read_json(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def output_lines(record):
    try:
        with open(record["log"], errors="replace") as file:
            return [line.rstrip("\n") for line in file]
    except (OSError, KeyError):
        return []


def last_table(lines):
    """The last block of markdown table lines ("| ...") in a step's output."""
    blocks, current = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks[-1] if blocks else []


def render(context):
    """The results file's markdown, from what ran (``context``: machine, records, notes, paths)."""
    device, torch_ = context["device"], context["torch"]
    records = {r["name"]: r for r in context["records"]}
    out = [
        f"# minflow gpu-check, {context['started']}",
        "",
        f"Written by `benchmarks/gpu_check.py` ({context['command']}), minflow at git {context['git']}. "
        "Every number below was measured on this machine by the command named; none is estimated. "
        f"Full logs and train_step's JSON: `{os.path.relpath(context['raw'], ROOT)}/` (not committed).",
        "",
        "## The machine",
        "",
        "| | |",
        "|---|---|",
        f"| GPU | {device.get('name', '?')} (compute capability {device.get('capability', '?')}, "
        f"{device.get('memory_gib', '?')} GiB; {device.get('count', '?')} device(s)) |",
        f"| CUDA runtime / driver (CuPy) | {cuda_version(device.get('cuda_runtime'))} / "
        f"{cuda_version(device.get('cuda_driver'))} |",
    ]
    if context.get("nvidia_smi"):
        out.append(f"| nvidia-smi (name, driver, memory) | {context['nvidia_smi']} |")
    torch_text = (
        f"not usable ({torch_['error']})"
        if "error" in torch_
        else f"{torch_['version']}, built for CUDA {torch_['cuda'] or 'none (a CPU build)'}, "
        f"sees the GPU: {'yes, ' + torch_['device'] if torch_['available'] else 'no'}"
    )
    out += [
        f"| CuPy | {device.get('cupy', '?')} |",
        f"| NumPy | {device.get('numpy', '?')} |",
        f"| PyTorch | {torch_text} |",
        f"| CPU | {context['cpu']} ({os.cpu_count()} logical cores) |",
        f"| Python | {platform.python_version()} |",
        "",
    ]
    for note in context["notes"]:
        out.append(f"- {note}")
    if context["notes"]:
        out.append("")

    out += ["## The steps", "", "| step | command | result | wall |", "|---|---|---|---|"]
    for r in context["records"]:
        out.append(
            f"| {r['name']} | `{r['command']}` | {'**' + r['status'] + '**' if not r['passed'] else r['status']} "
            f"| {r['wall']:.0f} s |"
        )
    for r in context["skipped"]:
        out.append(f"| {r} | | not run ({context['skip_reason']}) | |")
    out.append("")

    out += [
        f"## The target: minflow on CuPy ≥ {TARGET_SPEEDUP:g}× minflow on NumPy (CPU), B = {TARGET_BATCH:,}, "
        f"{TARGET_DTYPE}",
        "",
    ]
    gpu_run, cpu_run = read_json(context["gpu_json"]), read_json(context["cpu_json"])
    if not (gpu_run or cpu_run):
        out.append("**Target not measured**: no train_step JSON was written (see the train-step steps).")
    else:
        try:
            rows = target_rows(gpu_run, cpu_run)
            _, sentence = target_verdict(rows)
            out += [
                f"**Target {sentence}.** speed-up = minflow NumPy CPU ms / minflow CuPy ms, medians over "
                "train_step.py's rounds (steps train-step and train-step-cpu); the floor columns are train_step's "
                "own GPU-table ratio (hand-written NumPy on the CPU).",
                "",
                target_table(rows),
            ]
            for r in rows:
                for why in r["missing"]:
                    out.append(f"- H={r['hidden']}: {why}")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            out.append(f"**Target not measured**: train_step's JSON could not be used ({one_line(error)}).")
    out.append("")

    lines = output_lines(records["train-step"]) if "train-step" in records else []
    table = last_table(lines) if lines else []
    header = [line for line in lines if line.startswith("# ")]
    out += ["## The train-step table (`train_step.py --device cuda`, as it printed it)", ""]
    out += (["```"] + header + ["```", ""] if header else []) + (table or ["(no table: see the step's output)"]) + [""]

    out += ["## Memory (`memory.py --backend cupy`)", ""]
    memory_lines = (
        [line for line in output_lines(records["memory"]) if line.startswith(("RealNVP", "one step", "pool bytes"))]
        if "memory" in records
        else []
    )
    out += (["```"] + memory_lines + ["```"]) if memory_lines else ["(no numbers: see the step's output)"]
    out.append("")

    out += ["## The last lines of each step", ""]
    for r in context["records"]:
        out += [f"### {r['name']}: {r['status']} ({r['wall']:.0f} s)", "", "```"] + r["tail"] + ["```", ""]
    return "\n".join(out)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as file:
        file.write(text)
    os.replace(tmp, path)


# --- the driver -------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the results file (default benchmarks/gpu_results/gpu-check-<date>.md)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--full", action="store_true", help="lecture 9 in full mode (default: MINFLOW_QUICK=1)")
    parser.add_argument("--no-install", action="store_true", help="do not pip-install torch or threadpoolctl")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="STEP",
        choices=("gpu-tests", "suite-cupy", "train-step", "train-step-cpu", "memory", "lecture-09"),
        help="run only these steps",
    )
    parser.add_argument("--dry-run", action="store_true", help="probe the device, print the plan, run nothing")
    args = parser.parse_args(argv)

    env, removed = base_environment()
    device = detect_device(env)
    if not device["device"]:
        print(no_device_line(device.get("reason", "unknown")), flush=True)
        return 0
    if os.environ.get(ACTIVE_VARIABLE):
        print("gpu-check: not started: this process runs inside a gpu-check step (the test suite?)", flush=True)
        return 0

    now = datetime.datetime.now()
    stamp = now.strftime("%Y-%m-%d-%H%M%S")
    raw = os.path.join(RAW_DIR, stamp)
    steps = plan(args, raw)
    print(
        f"gpu-check: {device.get('name', '?')}, CUDA runtime {cuda_version(device.get('cuda_runtime'))}, "
        f"driver {cuda_version(device.get('cuda_driver'))}, CuPy {device.get('cupy', '?')}, "
        f"NumPy {device.get('numpy', '?')}",
        flush=True,
    )
    notes = []
    if removed:
        notes.append(f"removed the strict CuPy stand-in from PYTHONPATH for every step: {', '.join(removed)}")
        print(f"gpu-check: {notes[-1]}", flush=True)
    if args.dry_run:
        install_missing(env, dry_run=True, no_install=args.no_install)
        for step in steps:
            print(f"gpu-check: would run {step.name} (limit {step.timeout} s): {describe_command(step)}")
        print(f"gpu-check: dry run: nothing ran, nothing written (the results would go to {RESULTS_DIR})")
        return 0
    path = results_path(args.out, args.force, now.strftime("%Y-%m-%d"))
    os.makedirs(raw, exist_ok=True)
    notes += install_missing(env, dry_run=False, no_install=args.no_install)
    torch_ = torch_info(env)
    if "error" not in torch_ and not torch_.get("available"):
        notes.append(
            f"torch {torch_['version']} cannot see the GPU (built for CUDA {torch_['cuda']}): the torch "
            "CUDA column stays empty; pip install --force-reinstall a CUDA build of torch to fill it"
        )

    records, skipped = [], []
    for position, step in enumerate(steps):
        record = run_step(
            step, step_environment(env, step.env_changes), os.path.join(raw, f"{position + 1}-{step.name}.log")
        )
        records.append(record)
        if record.get("interrupted"):
            skipped = [s.name for s in steps[position + 1 :]]
            break
    context = {
        "started": now.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["gpu_check.py"] + sys.argv[1:]),
        "git": git_commit(),
        "raw": raw,
        "device": device,
        "torch": torch_,
        "nvidia_smi": nvidia_smi(),
        "cpu": train_step.cpu_model(),
        "notes": notes,
        "records": records,
        "skipped": skipped,
        "skip_reason": "interrupted",
        "gpu_json": os.path.join(raw, "train_step_cuda.json"),
        "cpu_json": os.path.join(raw, "train_step_cpu.json"),
    }
    write_atomically(path, render(context))
    failed = [r["name"] for r in records if not r["passed"]]
    print(
        f"\ngpu-check: {len(records) - len(failed)} of {len(records)} steps passed"
        + (f" (failed: {', '.join(failed)})" if failed else "")
    )
    shown = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    print(f"gpu-check: results written to {shown}")
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
