"""Shared helpers of the benchmark scripts: timing, machine info, result rows, child runs.

Every figure is a :func:`measure` summary (median, min, max over ``repeats`` runs after
``warmup`` untimed runs). Timings on a shared 2-core machine are noisy, so each row is
compared with a *baseline measured in the same run* and reported as a ratio; absolute
seconds are kept for the record only.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, min and max of ``samples`` (the raw values are kept too)."""
    if not samples:
        raise ValueError("no samples")
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": [float(s) for s in samples]}


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Wall time of ``fn()`` in seconds: :func:`summary` of ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summary(times)


@dataclass
class Row:
    """One figure of the results table.

    ``ratio`` is ``value / baseline`` unless ``ratio_of`` says otherwise
    (``"baseline/value"`` for speed-ups, where the baseline is the slow path).
    ``target`` is a human-readable condition on the ratio (or value), ``met`` its outcome
    (``None`` when the row is informational), ``reason`` why it was missed or skipped.
    """

    group: str
    name: str
    value: dict[str, Any] | None
    unit: str
    baseline_name: str | None = None
    baseline: dict[str, Any] | None = None
    ratio: float | None = None
    ratio_label: str = ""
    target: str = ""
    met: bool | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and the versions every figure depends on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": None if mem_kib is None
        else round(mem_kib / 2**20, 1), "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    from importlib import metadata

    versions = {}
    for pkg in ("torch", "numpy", "lava-nc", "lava-dl", "nir", "nirtorch", "scipy",
                "snntorch", "norse", "lrfdyn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` = 5); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_child(script: str, args: list[str], timeout: float = 300) -> dict[str, Any]:
    """Run ``benchmarks/<script> args`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run([PYTHON, str(BENCH_DIR / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{script} {' '.join(args)} exited {proc.returncode}: "
                           + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_value(v: dict[str, Any] | None, unit: str) -> str:
    """``median (min–max) unit`` with a scale that suits seconds or MiB."""
    if v is None:
        return "—"
    med, lo, hi = v["median"], v["min"], v["max"]
    if unit == "s":
        scale, u = (1e3, "ms") if med < 1 else (1.0, "s")
        if med < 1e-3:
            scale, u = 1e6, "µs"
        return f"{med * scale:.3g} ({lo * scale:.3g}–{hi * scale:.3g}) {u}"
    return f"{med:.4g} ({lo:.4g}–{hi:.4g}) {unit}"


def measure_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5,
                        warmup: int = 1) -> dict[str, dict[str, Any]]:
    """Like :func:`measure` for several functions, alternating them every repetition.

    On a shared machine the load changes over seconds; alternating makes a burst of
    foreign load hit every contender alike, which keeps their ratio meaningful.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: summary(v) for k, v in times.items()}


def set_threads() -> int:
    """Pin torch to ``LRFDYN_BENCH_THREADS`` threads (default 1) and return the count.

    On 2 cores shared with other jobs, torch's default of one thread per core makes its
    OpenMP workers wait on each other whenever a foreign process holds a core, which
    inflates small kernels by 10× or more at random; one thread is far steadier.
    """
    import torch

    n = int(os.environ.get("LRFDYN_BENCH_THREADS", "1"))
    torch.set_num_threads(n)
    return n


#: The demo transformer of the Lava benchmarks: a small LRF-Dyn Spikformer on 8×8 digits
#: (4×4 = 16 tokens after the stride-2 stem), untrained unless a benchmark trains it.
SMALL_TRANSFORMER: dict[str, Any] = dict(
    img_size=8, in_channels=1, num_classes=10, dim=32, depth=1, heads=2, timesteps=4,
    attention="lrf_dyn", stem_strides=[1, 2])


def build_small_transformer(seed: int = 0, **overrides: Any):
    """The untrained demo transformer in eval mode (BN uses its running statistics)."""
    import torch

    from lrfdyn.train.models import build_model

    torch.manual_seed(seed)
    model = build_model("spikformer", {**SMALL_TRANSFORMER, **overrides})
    return model.eval()


def digits_test(n: int):
    """The first ``n`` 8×8 digits test images (uint8, (n, 1, 8, 8)) and labels."""
    from lrfdyn.train.data import load_dataset

    ds = load_dataset("digits")
    return ds.x_test[:n], ds.y_test[:n]


def train_small_transformer(out: str | os.PathLike[str], epochs: int = 3):
    """Train the demo transformer briefly on digits (~20 s) so that every layer spikes.

    Returns the model in eval mode and its float test accuracy.
    """
    from lrfdyn.train.checkpoint import load_checkpoint
    from lrfdyn.train.trainer import TrainConfig, train

    model_cfg = {k: v for k, v in SMALL_TRANSFORMER.items()
                 if k not in ("img_size", "in_channels", "num_classes")}
    result = train(TrainConfig(data="digits", arch="spikformer", epochs=epochs, out=str(out),
                               model=model_cfg), progress=False)
    return load_checkpoint(result.checkpoint).build().eval(), result.float_accuracy
