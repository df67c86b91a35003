"""One RealNVP train step in minflow, PyTorch, HIPS autograd and hand-written NumPy, timed.

What is measured. One step of maximum-likelihood training of the same RealNVP: 8 affine
couplings on 2-D data, each conditioner an MLP 1 -> H -> H -> 2 with ReLUs, log-scale
2 tanh(theta / 2) (see ``realnvp_peers/shared.py``). A step is forward, the NLL, backward
and one Adam update (lr 1e-3), on the next B rows of a fixed two-moons array. All four
peers start from the same non-trivial parameters and see the same batches:

    minflow    models.realnvp + optim.FlatAdam (the Adam fit uses), through minflow's public API only
    torch      the same model in plain PyTorch (nn.Linear, torch.optim.Adam), CPU
    autograd   the loss as a NumPy function, differentiated by HIPS autograd, NumPy Adam
    floor      the forward *and backward* pass written by hand in NumPy, NumPy Adam

Why the floor matters. minflow and autograd both run NumPy underneath, so neither can be
faster than the NumPy operations the gradient needs, done once each, with no graph: that is
the floor. ``minflow / floor`` is then the engine's own overhead (recording the graph,
dispatching primitives, unbroadcasting, checks) and nothing else; ``minflow / torch`` mixes
that overhead with the gap between NumPy and PyTorch's fused C++ kernels. At small B the
step is all overhead (a few hundred tiny ops); at large B the matrix products dominate and
every peer approaches its BLAS.

How. Each configuration (peer, B, H, dtype) runs in a process of its own (this script
calls itself with ``--worker``), so that no peer inherits another's thread pools, caches
or allocator state. A worker warms up (20 steps), then times each of N steps with
``time.perf_counter``, N = budget / step time clamped to [30, 300]; it reports the median
and the 10th and 90th percentiles. BLAS and torch threads are left at their defaults. The
speed of a shared machine drifts over minutes, so the whole grid is swept ``--rounds``
times (3) and each time in the table is the median of that configuration's rounds.

Late in training. In float32, Adam's first moment m of a parameter whose gradient has
become 0 (a ReLU unit that died during training) decays as 0.9^t from its last value and is
a denormal float ~700 steps later (by step 1000 about a third of m's entries at H = 256);
arithmetic on denormals can be many times slower (on Intel CPUs in particular), so a NumPy
step late in training can be slower than an early one. For float32 and B <= 512 each worker
therefore trains on to step ``--late-steps`` (1000) and times ``--late-window`` (100) more
steps: the "late" columns, each with its ratio to the same peer's early median. (float64's
smallest normal is 2.2e-308, which m reaches only after ~6,700 steps: not measured.)

Same process conditions for all. Every worker, whatever its peer, calls
``minflow.backend.keep_freed_memory()`` before it builds the peer, as ``fit`` does before
training: glibc's malloc then keeps freed memory for reuse. Without it, each (B, H)
temporary of a step is a fresh mmap whose pages fault on first touch, which slows any
NumPy step, the floor's included, by up to a third at B*H >= 512*64. (Importing minflow
sets nothing process-wide: the call is explicit.) ``--default-malloc`` runs every worker
with MINFLOW_KEEP_FREED_MEMORY=0, which makes that call do nothing (glibc's defaults).

Environment. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE force an older, slower OpenBLAS
kernel; if either is set, the workers run without both (and the header says so). The
header reports the BLAS that NumPy actually loaded (threadpoolctl) and the thread counts.

Correctness first. ``--check`` (run automatically before timing) compares, in float64 at
the shared start: the four losses, the hand-written gradient against autograd's, torch's
and minflow's gradients, and the parameters after 5 Adam steps. It exits non-zero if any
of them disagree.

Run: python benchmarks/train_step.py [--quick] [--check] [--impl minflow torch ...]
     [--batch 64 512] [--hidden 64] [--dtype float32] [--late-steps 1000] [--json out.json]
     [--device cuda]
GPU (``--device cuda``): minflow on CuPy (MINFLOW_BACKEND=cupy), torch on CUDA and the floor
on the CPU, float32, B in {4096, 16384, 65536}; untested on this project's CPU machines.
Not run by the test suite.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402  (benchmarks are host-side scripts)
import realnvp_peers  # noqa: E402
from realnvp_peers import shared  # noqa: E402

CPU_GRID = {"batch": (64, 512, 4096), "hidden": (64, 256), "dtype": ("float32", "float64")}
GPU_GRID = {"batch": (4096, 16384, 65536), "hidden": (64, 256), "dtype": ("float32",)}
QUICK_GRID = {"batch": (64, 512), "hidden": (64,), "dtype": ("float32",)}
FULL_TIMING = {"warmup": 20, "budget": 1.5, "min_steps": 30, "max_steps": 300, "late_window": 100}
QUICK_TIMING = {"warmup": 5, "budget": 0.25, "min_steps": 10, "max_steps": 50, "late_window": 20}
LATE_MAX_BATCH = 512
NOISY_SHARE = 0.1  # a worker is marked noisy when other processes took more than this share of one core
FORCED_KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CHECK = {"batch": 64, "hidden": 16, "adam_steps": 5, "loss_rtol": 1e-10, "grad_atol": 1e-9, "param_atol": 1e-8}


# --- the worker: one configuration in one process -------------------------------------------
def percentiles_ms(seconds):
    p10, median, p90 = np.percentile(1000 * np.asarray(seconds), [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90)}


def train(peer, data, first, count, timed=True):
    """Run ``count`` steps from step ``first``; the time of each one (synchronised) if ``timed``."""
    times = []
    for j in range(first, first + count):
        x = data[j % len(data)]
        start = time.perf_counter()
        peer.step(x)
        if timed:
            peer.synchronize()
            times.append(time.perf_counter() - start)
    peer.synchronize()
    return times


def run_worker(impl, batch, hidden, dtype, device, timing):
    """Build one peer, warm it up, time it; a dict for the JSON line."""
    result = {"impl": impl, "batch": batch, "hidden": hidden, "dtype": dtype, "device": device}
    peer_device = "cpu" if impl == "floor" else device
    os.environ["MINFLOW_BACKEND"] = "cupy" if peer_device == "cuda" else "numpy"  # read at minflow's import
    try:
        from minflow import backend

        backend.keep_freed_memory()  # in every worker, as fit does, so that it holds for all peers alike
        peer = realnvp_peers.load(impl)(shared.initial_parameters(hidden), dtype, peer_device)
    except (ImportError, ValueError) as error:
        return {**result, "skipped": f"{impl}: {error}"}
    data = [peer.prepare(x) for x in shared.batches(batch, rows=max(shared.DATA_ROWS, 4 * batch))]

    warmup = train(peer, data, 0, timing["warmup"])
    step_time = float(np.median(warmup[len(warmup) // 2 :]))
    count = int(np.clip(timing["budget"] / step_time, timing["min_steps"], timing["max_steps"]))
    done = timing["warmup"]
    result.update(percentiles_ms(train(peer, data, done, count)), steps=count)
    done += count

    late = timing["late_steps"]
    if late and batch <= LATE_MAX_BATCH and device == "cpu" and dtype == "float32":
        train(peer, data, done, max(late - done, 0), timed=False)
        done = max(late, done)
        late_times = train(peer, data, done, timing["late_window"])
        result["late"] = {**percentiles_ms(late_times), "from_step": done, "steps": len(late_times)}
        done += len(late_times)
    result["loss_after"] = {"step": done, "loss": peer.loss_and_grads(data[done % len(data)])[0]}
    result["versions"] = peer.versions()
    return result


# --- the environment: what ran, on what ---------------------------------------------------
def probe(device):
    """Versions, BLAS kernel and thread counts as the workers see them (run in a child process)."""
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "minflow_git": git_state(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["numpy_blas"] = [
            {key: entry.get(key) for key in ("internal_api", "architecture", "num_threads", "version", "prefix")}
            for entry in threadpool_info()
            if entry.get("user_api") == "blas"
        ]
    except ImportError:
        info["numpy_blas"] = "threadpoolctl is not installed"
    try:
        import torch

        config = torch.__config__.show()
        blas = config.split("BLAS_INFO=")[1].split(",")[0] if "BLAS_INFO=" in config else "?"
        info["torch"] = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "blas": blas,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        if device == "cuda" and torch.cuda.is_available():
            info["torch"]["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    try:
        from importlib.metadata import version

        import autograd  # noqa: F401  (installed is not enough: it must import)

        info["autograd"] = version("autograd")
    except ImportError:
        info["autograd"] = None
    if device == "cuda":
        info["cupy"] = cupy_info()
    return info


def cupy_info():
    try:
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(0)
        name = properties["name"]
        return {
            "version": cupy.__version__,
            "device": name.decode() if isinstance(name, bytes) else name,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        }
    except (ImportError, RuntimeError) as error:  # no CuPy, or no device: the minflow worker will say so too
        return {"error": str(error)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state():
    """The commit minflow was measured at, '+dirty' when minflow/ has uncommitted changes."""
    root = os.path.join(HERE, "..")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "minflow"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(info, device, removed, default_malloc):
    lines = [
        f"# RealNVP train step (8 affine couplings, MLP 1-H-H-2, NLL, backward, Adam); device {device}",
        (
            f"# CPU: {info['cpu']} ({info['cores']} cores); Python {info['python']}; numpy {info['numpy']}; "
            f"minflow at git {info['minflow_git']}"
        ),
    ]
    blas = info["numpy_blas"]
    if isinstance(blas, str):
        lines.append(f"# NumPy BLAS: unknown ({blas})")
    for entry in blas if isinstance(blas, list) else []:
        lines.append(
            f"# NumPy BLAS: internal_api {entry['internal_api']}, architecture {entry['architecture']}, "
            f"num_threads {entry['num_threads']}, version {entry['version']} ({entry['prefix']})"
        )
    torch_info = info["torch"]
    lines.append(
        "# torch: not installed"
        if torch_info is None
        else f"# torch {torch_info['version']}: {torch_info['threads']} threads, BLAS {torch_info['blas']}, "
        f"CPU capability {torch_info['cpu_capability']}"
        + (f", GPU {torch_info['cuda_device']}" if "cuda_device" in torch_info else "")
    )
    lines.append(f"# autograd: {info['autograd'] or 'not installed'}")
    cupy = info.get("cupy")
    if cupy:
        lines.append(
            f"# CuPy: unavailable ({cupy['error']})"
            if "error" in cupy
            else f"# CuPy {cupy['version']}, CUDA runtime {cupy['cuda_runtime']}, GPU {cupy['device']}"
        )
    lines.append(
        "# malloc: glibc defaults in every worker (--default-malloc: MINFLOW_KEEP_FREED_MEMORY=0)"
        if default_malloc
        else "# malloc: every worker calls minflow.backend.keep_freed_memory() first, so it holds for all peers"
    )
    if removed:
        lines.append(
            f"# removed from the workers' environment: {', '.join(removed)} (they force an older, slower kernel)"
        )
    return "\n".join(lines)


def cpu_seconds():
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its children);
    their growth over a run, subtracted, is what other processes took. Linux only; else (None, ...)."""
    own = sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )
    try:
        with open("/proc/stat") as file:
            jiffies = [int(v) for v in file.readline().split()[1:]]
    except OSError:
        return None, own
    idle = jiffies[3] + jiffies[4]  # idle and iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own


def other_cpu_seconds(start):
    """CPU seconds that processes other than ours took since ``start = cpu_seconds()`` (None if unknown)."""
    (machine_before, own_before), (machine_after, own_after) = start, cpu_seconds()
    if machine_before is None:
        return None
    return max((machine_after - machine_before) - (own_after - own_before), 0.0)


def other_processes_note(start, wall):
    """One line on how much CPU other processes took while we measured (they make timings noisy)."""
    other = other_cpu_seconds(start)
    if other is None:
        return "(CPU use of other processes unknown on this system)"
    note = f"other processes used {other:.0f} CPU seconds during the run ({100 * other / wall:.0f}% of one core)"
    return note + (
        "; rows marked * were measured while they ran: run those again on a quiet machine"
        if other > NOISY_SHARE * wall
        else ""
    )


def worker_environment():
    """os.environ without both forced-kernel variables if either is set; (env, what was removed)."""
    env = dict(os.environ)
    removed = [f"{name}={env[name]}" for name in FORCED_KERNEL_VARIABLES if name in env]
    if removed:
        for name in FORCED_KERNEL_VARIABLES:
            env.pop(name, None)
        print(
            f"removed {', '.join(removed)} from the workers' environment: they force an older, slower "
            "OpenBLAS kernel than the one this CPU would get",
            flush=True,
        )
    return env, removed


# --- the correctness check ----------------------------------------------------------------
def max_abs_difference(arrays, reference):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(arrays, reference))


def run_check(batch=CHECK["batch"], hidden=CHECK["hidden"], steps=CHECK["adam_steps"]):
    """Compare the peers in float64 at the shared start; a list of failures (empty if all agree).

    Bounds. The losses are the same sums computed in different orders, so they agree to a
    few float64 roundings (~1e-16 relative): 1e-10 leaves room and still catches any
    difference in the model. The gradients (entries of order 0.1-1) go through ~8 layers
    of products and sums of B * H terms, so rounding alone moves them by ~1e-13 at most;
    1e-9 is four orders above that, while a genuine mistake in a derivative (a dropped
    relu mask, a missing 1 - tanh^2 or -1/B) changes some entry by about the size of the
    gradient itself, 1e-3 or more. An Adam step moves a parameter by lr m / (sqrt(v) + eps),
    which changes by at most lr dg / eps = 1e-5 dg for a gradient difference dg: rounding-size
    gradients (1e-16) leave the parameters within ~1e-11 after 5 steps, so 1e-8 has room.
    """
    params = shared.initial_parameters(hidden)
    data = shared.batches(batch)
    peers = {}
    for name in realnvp_peers.NAMES:
        try:
            peers[name] = realnvp_peers.load(name)(params, "float64")
        except ImportError as error:
            print(f"check: {name} skipped ({error})")
    reference = next((name for name in ("autograd", "torch", "minflow") if name in peers), None)
    if reference is None or "floor" not in peers:
        return ["need the floor and at least one autodiff peer (autograd, torch or minflow) to check"]
    results = {name: peer.loss_and_grads(peer.prepare(data[0])) for name, peer in peers.items()}
    ref_loss, ref_grads = results[reference]
    scale = max(float(np.max(np.abs(g))) for g in ref_grads)
    print(f"check: float64, B={batch}, H={hidden}; reference {reference}: loss {ref_loss:.12f}, max |grad| {scale:.3g}")
    failures = []
    for name, (loss, grads) in results.items():
        if name == reference:
            continue
        loss_error = abs(loss - ref_loss) / abs(ref_loss)
        grad_error = max_abs_difference(grads, ref_grads)
        print(
            f"check: {name:8s} loss rel. diff {loss_error:.2e} (<= {CHECK['loss_rtol']:g}), "
            f"grad max abs diff {grad_error:.2e} (<= {CHECK['grad_atol']:g})"
        )
        if not loss_error <= CHECK["loss_rtol"]:
            failures.append(f"{name}'s loss {loss!r} differs from {reference}'s {ref_loss!r}")
        if not grad_error <= CHECK["grad_atol"]:
            failures.append(f"{name}'s gradient differs from {reference}'s by {grad_error:.3g}")
    for peer in peers.values():
        for j in range(steps):
            peer.step(peer.prepare(data[j % len(data)]))
    ref_params = peers[reference].parameters()
    for name, peer in peers.items():
        if name == reference:
            continue
        error = max_abs_difference(peer.parameters(), ref_params)
        print(
            f"check: {name:8s} parameters after {steps} Adam steps: "
            f"max abs diff {error:.2e} (<= {CHECK['param_atol']:g})"
        )
        if not error <= CHECK["param_atol"]:
            failures.append(f"{name}'s parameters after {steps} Adam steps differ from {reference}'s by {error:.3g}")
    return failures


# --- the driver -------------------------------------------------------------------------
def configurations(args):
    grid = GPU_GRID if args.device == "cuda" else QUICK_GRID if args.quick else CPU_GRID
    impls = args.impl or (("minflow", "torch", "floor") if args.device == "cuda" else realnvp_peers.NAMES)
    return [
        (dtype, batch, hidden, impl)
        for dtype in args.dtype or grid["dtype"]
        for batch in args.batch or grid["batch"]
        for hidden in args.hidden or grid["hidden"]
        for impl in impls
    ]


def call_worker(impl, batch, hidden, dtype, args, timing, env):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        impl,
        str(batch),
        str(hidden),
        dtype,
        "--device",
        args.device,
        "--timing",
        json.dumps(timing),
    ]
    started, usage = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return {
            "impl": impl,
            "batch": batch,
            "hidden": hidden,
            "dtype": dtype,
            "error": tail or f"exit {done.returncode}",
        }
    result = json.loads(lines[-1])
    other = other_cpu_seconds(usage)
    if other is not None and other > NOISY_SHARE * (time.perf_counter() - started):
        result["noisy"] = other / (time.perf_counter() - started)  # the share of one core other processes took
    return result


def describe(result):
    config = f"{result['dtype']} B={result['batch']} H={result['hidden']} {result['impl']:8s}"
    if "skipped" in result:
        return f"{config} skipped: {result['skipped']}"
    if "error" in result:
        return f"{config} FAILED: {result['error']}"
    text = (
        f"{config} {result['median_ms']:8.2f} ms (p10 {result['p10_ms']:.2f}, p90 {result['p90_ms']:.2f}, "
        f"{result['steps']} steps)"
    )
    if "late" in result:
        late = result["late"]
        text += f"; late {late['median_ms']:.2f} ms (steps {late['from_step']}..{late['from_step'] + late['steps']})"
    if "noisy" in result:
        text += f"  * other processes took {100 * result['noisy']:.0f}% of a core meanwhile"
    return text


def milliseconds(result):
    return result.get("median_ms") if result else None


def cell(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def ratio(numerator, denominator):
    return None if numerator is None or denominator is None else numerator / denominator


def late_cell(result):
    if not result or "late" not in result:
        return "—"
    late = result["late"]["median_ms"]
    return f"{late:.2f} ({late / result['median_ms']:.2f}x)"


def cpu_table(results):
    peers = realnvp_peers.NAMES
    columns = (
        ["dtype", "B", "H"]
        + [f"{p} ms" for p in peers]
        + ["minflow/torch", "minflow/floor"]
        + [f"{p} late ms (x early)" for p in peers]
    )
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (dtype, batch, hidden), by_impl in grouped(results).items():
        times = {p: milliseconds(by_impl.get(p)) for p in peers}
        noisy = any("noisy" in result for result in by_impl.values())
        cells = (
            [dtype, str(batch) + ("*" if noisy else ""), str(hidden)]
            + [cell(times[p]) for p in peers]
            + [cell(ratio(times["minflow"], times["torch"])), cell(ratio(times["minflow"], times["floor"]))]
            + [late_cell(by_impl.get(p)) for p in peers]
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def gpu_table(results):
    columns = [
        "B",
        "H",
        "minflow GPU ms",
        "torch GPU ms",
        "floor CPU ms",
        "minflow/torch",
        "minflow GPU / numpy CPU speed-up",
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (_dtype, batch, hidden), by_impl in grouped(results).items():
        times = {p: milliseconds(by_impl.get(p)) for p in ("minflow", "torch", "floor")}
        speedup = ratio(times["floor"], times["minflow"])
        noisy = any("noisy" in result for result in by_impl.values())
        rows.append(
            "| "
            + " | ".join(
                [
                    str(batch) + ("*" if noisy else ""),
                    str(hidden),
                    cell(times["minflow"]),
                    cell(times["torch"]),
                    cell(times["floor"]),
                    cell(ratio(times["minflow"], times["torch"])),
                    cell(speedup, 1) + ("x" if speedup else ""),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def combine_rounds(rounds):
    """One result per configuration: the median of its rounds' medians (and the rounds' spread).

    The speed of a shared machine drifts over minutes (other tenants, clock changes), and a
    sequential sweep would charge that drift to whichever configuration ran at the time.
    Running the whole sweep several times and taking each configuration's median over the
    rounds spreads the drift over all of them.
    """
    combined = []
    for position, first in enumerate(rounds[0]):
        runs = [r[position] for r in rounds if "median_ms" in r[position]]
        if not runs:
            combined.append(first)
            continue
        medians = [run["median_ms"] for run in runs]
        result = {
            **first,
            "median_ms": float(np.median(medians)),
            "round_medians_ms": medians,
            "steps": sum(run["steps"] for run in runs),
        }
        if any("noisy" in run for run in runs):
            result["noisy"] = max(run.get("noisy", 0.0) for run in runs)
        combined.append(result)
    return combined


def grouped(results):
    """{(dtype, B, H): {impl: result}} for the results that have a time, in run order."""
    groups = {}
    for result in results:
        group = groups.setdefault((result["dtype"], result["batch"], result["hidden"]), {})
        if "median_ms" in result:
            group[result["impl"]] = result
    return groups


def run_driver(args):
    started, usage = time.perf_counter(), cpu_seconds()
    env, removed = worker_environment()
    if args.default_malloc:
        env["MINFLOW_KEEP_FREED_MEMORY"] = "0"
    if not args.no_check:
        check = subprocess.run([sys.executable, os.path.abspath(__file__), "--check"], env=env, check=False)
        if check.returncode != 0:
            sys.exit("the correctness check failed: not timing peers that disagree")
    info = json.loads(
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--probe", args.device],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    timing = dict(QUICK_TIMING if args.quick else FULL_TIMING)
    timing["late_steps"] = args.late_steps if args.late_steps is not None else (0 if args.quick else 1000)
    print(header(info, args.device, removed, args.default_malloc), flush=True)
    rounds = []
    for round_number in range(args.rounds):
        # Later rounds skip the late-training steps (measured once, in the first round).
        round_timing = timing if round_number == 0 else {**timing, "late_steps": 0}
        rounds.append([])
        for dtype, batch, hidden, impl in configurations(args):
            rounds[-1].append(call_worker(impl, batch, hidden, dtype, args, round_timing, env))
            print(f"round {round_number + 1}/{args.rounds}: " + describe(rounds[-1][-1]), flush=True)
    results = combine_rounds(rounds)
    print()
    print(gpu_table(results) if args.device == "cuda" else cpu_table(results))
    wall = time.perf_counter() - started
    late_note = (
        f"late: steps {timing['late_steps']}..{timing['late_steps'] + timing['late_window']} for B <= "
        f"{LATE_MAX_BATCH}, float32"
        if timing["late_steps"] and args.device == "cpu"
        else "late: off"
    )
    print(
        f"\nmedians in ms per step after {timing['warmup']} warm-up steps; {late_note}; "
        f"median over {args.rounds} rounds of the grid; one process per configuration; total {wall:.0f} s"
    )
    noise_note = other_processes_note(usage, wall)
    print(noise_note)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "environment": info,
                    "timing": timing,
                    "rounds": args.rounds,
                    "default_malloc": args.default_malloc,
                    "removed_variables": removed,
                    "results": results,
                    "wall_seconds": wall,
                    "other_processes": noise_note,
                },
                file,
                indent=2,
            )
            file.write("\n")
        print(f"wrote {args.json}")
    if any("error" in result for result in results):
        sys.exit("some workers failed (see FAILED above)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only the float64 correctness check")
    parser.add_argument("--no-check", action="store_true", help="time without running the check first")
    parser.add_argument("--quick", action="store_true", help="two small configurations, few steps (development)")
    parser.add_argument("--impl", nargs="+", choices=realnvp_peers.NAMES, help="peers to time (default: all)")
    parser.add_argument("--batch", nargs="+", type=int, help="batch sizes (default: the grid's)")
    parser.add_argument("--hidden", nargs="+", type=int, help="hidden widths (default: the grid's)")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "float64"), help="dtypes (default: the grid's)")
    parser.add_argument(
        "--late-steps",
        type=int,
        default=None,
        help="time steps from this one on for B <= 512 (default 1000, 0 under --quick; 0 disables)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="workers keep glibc's malloc defaults (MINFLOW_KEEP_FREED_MEMORY=0)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="sweep the grid this many times; each time is the median over rounds (default 3, 1 under --quick)",
    )
    parser.add_argument("--json", help="save the raw results to this file")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "B", "H", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.worker:
        impl, batch, hidden, dtype = args.worker
        print(json.dumps(run_worker(impl, int(batch), int(hidden), dtype, args.device, json.loads(args.timing))))
    elif args.probe:
        print(json.dumps(probe(args.probe)))
    elif args.check:
        os.environ["MINFLOW_BACKEND"] = "numpy"  # the check runs on the CPU, before minflow is imported
        failures = run_check()
        if failures:
            sys.exit("CHECK FAILED:\n  " + "\n  ".join(failures))
        print("check: all peers agree")
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
