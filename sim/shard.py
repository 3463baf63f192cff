"""Validation sharded over worker processes or a Ray cluster, merged into one report.

``lrfdyn simulate --workers N`` cuts the samples into N contiguous ranges. Each range
runs in its own process with its own Lava runtime (Lava then forks one process per
process model inside it) and returns an ordinary report of its samples;
:func:`merge_reports` / :func:`merge_dendritic` turn those into exactly the report one
run over all samples gives: counts add, accuracies come from the summed correct
counts, and the first mismatch is the first one in sample order. Samples are
independent (docs/design.md §3.5), so where a sample runs cannot change its spikes.

Workers start with the ``forkserver`` method (``spawn`` where that is missing): a worker
never inherits the parent's threads or torch state, and, being an ordinary
non-daemonic process, may start Lava's own processes.

``--cluster`` runs the same shards as Ray tasks (``ray://HOST:PORT`` through Ray Client,
``auto`` for the cluster this machine belongs to, ``local`` for a cluster started here
for the run). Ray schedules them; lrfdyn builds no scheduler of its own. Every node needs
the same lrfdyn installed.

Progress: each worker puts one tick per finished sample on a queue (a multiprocessing
queue, or a Ray queue actor); the parent drains it into one bar with samples/s and an
ETA. A failed shard is reported with its sample range, and no report is returned, so
nothing partial can be written as if complete.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue as queue_mod
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrfdyn.errors import LavaRunError, ValidationError

#: Modes a shard can run.
MODES = ("parallel", "dendritic")


@dataclass
class ShardTask:
    """What one worker needs: the network (a LoweredNetwork in parallel mode, the NIR graph
    in dendritic mode) and its samples ``start:stop``."""

    mode: str
    network: Any
    x: np.ndarray
    y: np.ndarray
    float_predictions: np.ndarray | None
    start: int
    stop: int
    copies: int | None = 1
    device: str = "cpu"
    use_lava: bool = True
    #: Further keyword arguments of the mode's simulate function (e.g. dendritic ``network``).
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValidationError(f"unknown shard mode {self.mode!r}; choose one of {MODES}")

    @property
    def label(self) -> str:
        return f"samples {self.start}–{self.stop - 1}"


def shard_ranges(samples: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous, balanced ``(start, stop)`` ranges covering ``range(samples)``
    (fewer when there are fewer samples)."""
    if shards < 1:
        raise ValidationError(f"--workers must be at least 1, got {shards}")
    shards = min(shards, samples)
    bounds = np.linspace(0, samples, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:]) if b > a]


# ---------------------------------------------------------------- one shard


def _allow_lava_fork() -> None:
    """Lava calls ``multiprocessing.set_start_method('fork')`` when imported, which fails
    in a spawned worker (its start method is already set); clear it before that import."""
    if _LAVA_MP not in sys.modules:
        mp.set_start_method(None, force=True)


_LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"


def run_shard(task: ShardTask, tick: Callable[[int], None] | None = None) -> Any:
    """Run one shard in this process: its SimReport (parallel) or DendriticReport."""
    _allow_lava_fork()
    if task.mode == "parallel":
        from lrfdyn.sim.simulate import simulate

        return simulate(task.network, task.x, task.y, use_lava=task.use_lava,
                        float_predictions=task.float_predictions, on_sample=tick,
                        device=task.device, copies=task.copies)
    from lrfdyn.sim.dendritic import simulate_dendritic

    return simulate_dendritic(task.network, task.x, task.y, use_lava=task.use_lava,
                              float_predictions=task.float_predictions, on_sample=tick,
                              copies=task.copies, **task.options)


_TICKS: Any = None  # the worker's progress queue (set by _init_worker)


def _init_worker(ticks: Any) -> None:
    global _TICKS
    _TICKS = ticks


def _worker(task: ShardTask) -> Any:
    """Entry point of a worker process: one shard, one tick per finished sample."""
    put = None if _TICKS is None else (lambda _i: _TICKS.put(1))
    return run_shard(task, put)


def _context() -> mp.context.BaseContext:
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


# ---------------------------------------------------------------- running all shards


@dataclass
class ShardFailure:
    start: int
    stop: int
    error: str

    def __str__(self) -> str:
        return f"samples {self.start}–{self.stop - 1}: {self.error}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "(no message)"
    return f"{type(exc).__name__}: {text}"


def _raise_failures(failures: list[ShardFailure], total: int) -> None:
    if failures:
        failures.sort(key=lambda f: f.start)
        lost = sum(f.stop - f.start for f in failures)
        raise LavaRunError(
            f"{len(failures)} shard(s) failed ({lost} of {total} samples), no report "
            "written: " + "; ".join(str(f) for f in failures)
            + "; rerun those samples alone with --debug for the traceback")


def run_shards(tasks: Sequence[ShardTask], *, workers: int, cluster: str | None = None,
               on_tick: Callable[[float], None] | None = None,
               ticks_per_sample: int = 1) -> list[Any]:
    """Run every task (one per shard) and return their reports in task order.

    Raises:
        LavaRunError: naming every failed shard's sample range (after all have ended).
    """
    if cluster:
        return _run_ray(tasks, cluster, workers, on_tick, ticks_per_sample)
    ctx = _context()
    ticks = ctx.Queue()
    results: list[Any] = [None] * len(tasks)
    failures: list[ShardFailure] = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(ticks,))
    try:
        futures: dict[Future, int] = {pool.submit(_worker, t): i for i, t in enumerate(tasks)}
        pending = set(futures)
        while pending:
            _drain(ticks, on_tick, ticks_per_sample, timeout=0.2)
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                i = futures[f]
                exc = f.exception()
                if exc is None:
                    results[i] = f.result()
                else:
                    failures.append(ShardFailure(tasks[i].start, tasks[i].stop, _describe(exc)))
        _drain(ticks, on_tick, ticks_per_sample, timeout=0)
    finally:
        # A worker is stopped only by its own finally blocks (they stop Lava); on Ctrl-C
        # the pending shards are cancelled and the running ones end with their runtimes.
        pool.shutdown(wait=True, cancel_futures=True)
        ticks.close()
    _raise_failures(failures, sum(t.stop - t.start for t in tasks))
    return results


def _drain(ticks: Any, on_tick: Callable[[float], None] | None, per_sample: int,
           timeout: float) -> None:
    """Move every tick waiting on ``ticks`` to ``on_tick`` (waiting up to ``timeout`` for
    the first)."""
    n = 0
    try:
        ticks.get(timeout=timeout) if timeout else ticks.get_nowait()
        n += 1
        while True:
            ticks.get_nowait()
            n += 1
    except queue_mod.Empty:
        pass
    except (OSError, ValueError, EOFError):  # the queue closed under us (shutdown)
        pass
    if n and on_tick is not None:
        on_tick(n / per_sample)


def _ray_init(cluster: str, workers: int) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ValidationError("--cluster needs Ray: pip install -r requirements/runtime.txt "
                              "(or `pip install ray`)") from exc
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "logging_level": "ERROR",
                              "log_to_driver": False}
    if cluster == "local":
        # A cluster of this machine only, sized to the workers asked for; the dashboard
        # and a big object store would take memory a shared machine does not have.
        kwargs.update(num_cpus=workers, include_dashboard=False,
                      object_store_memory=256 * 1024 * 1024)
    elif cluster == "auto" or cluster.startswith("ray://"):
        kwargs["address"] = cluster
    else:
        raise ValidationError(f"--cluster {cluster!r}: give ray://HOST:PORT, auto (the Ray "
                              "cluster this machine belongs to) or local (one started here)")
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, …)
        raise LavaRunError(f"--cluster {cluster}: cannot connect to Ray "
                           f"({_describe(exc)}); check the address and that the cluster "
                           "runs the same Ray version") from exc


def _run_ray(tasks: Sequence[ShardTask], cluster: str, workers: int,
             on_tick: Callable[[float], None] | None, per_sample: int) -> list[Any]:
    import ray
    from ray.util.queue import Empty, Queue

    _ray_init(cluster, workers)
    try:
        ticks = Queue()
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_worker)
        refs = [remote.remote(t, ticks) for t in tasks]
        index = {r: i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(tasks)
        failures: list[ShardFailure] = []
        pending = list(refs)

        def drain() -> None:
            try:
                n = len(ticks.get_nowait_batch(ticks.qsize()))
            except Empty:
                n = 0
            if n and on_tick is not None:
                on_tick(n / per_sample)

        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for r in done:
                i = index[r]
                try:
                    results[i] = ray.get(r)
                except Exception as exc:  # noqa: BLE001  (a RayTaskError wraps the cause)
                    cause = getattr(exc, "cause", None) or exc
                    failures.append(ShardFailure(tasks[i].start, tasks[i].stop,
                                                 _describe(cause)))
        drain()
    finally:
        ray.shutdown()
    _raise_failures(failures, sum(t.stop - t.start for t in tasks))
    return results


def _ray_worker(task: ShardTask, ticks: Any) -> Any:
    return run_shard(task, lambda _i: ticks.put(1))


# ---------------------------------------------------------------- merging


def _count(fraction: float | None, n: int) -> int | None:
    """The integer count behind an accuracy of ``n`` samples (exact: it was count / n)."""
    return None if fraction is None else int(round(fraction * n))


def _merged_accuracy(values: list[float | None], sizes: list[int]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(_count(v, n) for v, n in zip(values, sizes)) / sum(sizes)


def merge_reports(reports: Sequence[Any], starts: Sequence[int]) -> Any:
    """One SimReport from the reports of consecutive shards starting at ``starts``: equal,
    field by field (timings aside), to the report of one run over all their samples."""
    from lrfdyn.sim.report import LayerStats

    first, n = reports[0], sum(r.samples for r in reports)
    sizes = [r.samples for r in reports]
    t = first.timesteps
    layers = []
    for i, layer in enumerate(first.layers):
        spikes = sum(r.layers[i].spikes for r in reports)
        layers.append(LayerStats(
            name=layer.name, neurons=layer.neurons, spikes=spikes,
            firing_rate=float(spikes / max(layer.neurons * t * n, 1)),
            synops_in=sum(r.layers[i].synops_in for r in reports),
            mismatches=sum(r.layers[i].mismatches for r in reports)))
    # The single run reports the first mismatch of the first layer that has any, at its
    # lowest sample; each shard's own first lies in its first such layer.
    mismatch = None
    order = {layer.name: i for i, layer in enumerate(first.layers)}
    found = [(order[r.first_mismatch.layer], s, r.first_mismatch)
             for r, s in zip(reports, starts) if r.first_mismatch is not None]
    if found:
        _, start, m = min(found, key=lambda f: (f[0], f[1]))
        mismatch = dataclasses.replace(m, sample=m.sample + start,
                                       count=layers[order[m.layer]].mismatches)
    synops = sum(r.synops for r in reports)
    equal = [r.predictions_equal for r in reports]
    return dataclasses.replace(
        first, samples=n, mismatches=sum(r.mismatches for r in reports),
        lava_accuracy=_merged_accuracy([r.lava_accuracy for r in reports], sizes),
        reference_accuracy=_merged_accuracy([r.reference_accuracy for r in reports], sizes),
        float_accuracy=_merged_accuracy([r.float_accuracy for r in reports], sizes),
        predictions_equal=None if any(e is None for e in equal) else all(equal),
        synops=synops, synops_per_sample=synops / max(n, 1),
        neuron_updates=sum(r.neuron_updates for r in reports), layers=layers,
        first_mismatch=mismatch, timings=_merged_timings(reports, starts))


#: The parts of the one dendritic network's check of a process, in its order
#: (:class:`~lrfdyn.sim.dendritic_report.NetworkMismatch` ``part``).
_NETWORK_PARTS = ("update", "off_phase", "lead", "stream")


def merge_dendritic(reports: Sequence[Any], starts: Sequence[int]) -> Any:
    """One DendriticReport from consecutive shards' reports (see :func:`merge_reports`).

    Exact wherever each sample's values depend on that sample alone, which the check
    tests: with every value where it belongs this is the single run's report; with a
    timing error that carries a value into the next sample's window (or a non-zero
    stream lead, which a shard has where one run has the previous sample's tail) the
    runs themselves differ, and both report mismatches.
    """
    first, sizes = reports[0], [r.samples for r in reports]
    blocks = []
    for b, row in enumerate(first.blocks):
        merged = dict(row)
        rows = [r.blocks[b] for r in reports]
        if row.get("mismatches") is not None:
            merged["mismatches"] = sum(x["mismatches"] for x in rows)
        if "mismatches_by_process" in row:
            merged["mismatches_by_process"] = {
                p: sum(x["mismatches_by_process"][p] for x in rows)
                for p in row["mismatches_by_process"]}
        blocks.append(merged)
    # First mismatch, where one run's check finds it first. Stream networks: the first
    # block, then the first process in the check's order, then the lowest sample. The one
    # network: the first process in the check's order, then the part of its check
    # (update rows before off-phase values, the lead before the stream steps), then the
    # lowest sample, or for off-phase values (counted per neuron over the whole run) the
    # lowest neuron, its count summed over the shards.
    mismatch = None
    names = [row["name"] for row in first.blocks]
    net_procs = list(((first.network or {}).get("mismatches_by_process") or {}))
    found = []
    for r, s in zip(reports, starts):
        m = r.first_mismatch
        if m is None:
            continue
        if getattr(m, "block", None) in names:  # a stream network's mismatch
            procs = list(r.blocks[names.index(m.block)].get("mismatches_by_process", {}))
            key = (names.index(m.block), procs.index(m.process) if m.process in procs else 0)
        else:  # the one dendritic network's
            key = (0, net_procs.index(m.process) if m.process in net_procs else 0,
                   _NETWORK_PARTS.index(m.part), m.neuron if m.part == "off_phase" else 0)
        found.append((key + (s,), s, m))
    if found:
        key, start, m = min(found, key=lambda f: f[0])
        if getattr(m, "part", None) == "off_phase":  # no sample: the run's count, summed
            same = [f[2] for f in found if f[0][:-1] == key[:-1]]
            mismatch = dataclasses.replace(m, lava=sum(f.lava for f in same))
        else:
            mismatch = dataclasses.replace(m, sample=m.sample + start)
    total = None if first.mismatches is None else sum(r.mismatches for r in reports)
    network = first.network
    if network is not None:
        nets = [r.network for r in reports]
        network = dict(network)
        network["mismatches_by_process"] = {
            p: sum(n["mismatches_by_process"][p] for n in nets)
            for p in first.network.get("mismatches_by_process", {})}
        for key in ("lava_predictions", "reference_predictions"):
            if key in network:
                network[key] = [v for n in nets for v in n[key]]
        if "predictions_equal" in network:
            network["predictions_equal"] = all(n["predictions_equal"] for n in nets)
    return dataclasses.replace(
        first, samples=sum(sizes),
        float_accuracy=_merged_accuracy([r.float_accuracy for r in reports], sizes),
        parallel_accuracy=_merged_accuracy([r.parallel_accuracy for r in reports], sizes),
        dendritic_accuracy=_merged_accuracy([r.dendritic_accuracy for r in reports], sizes),
        blocks=blocks, mismatches=total, first_mismatch=mismatch,
        timings=_merged_timings(reports, starts),
        **({"lava_accuracy": _merged_accuracy([r.lava_accuracy for r in reports], sizes)}
           if hasattr(first, "lava_accuracy") else {}),
        **({"network": network} if network is not None else {}))


def _merged_timings(reports: Sequence[Any], starts: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"shards": [
        {"start": s, "samples": r.samples, **r.timings} for r, s in zip(reports, starts)]}
    for key in ("reference_s", "run_s", "first_sample_incl_compile_s"):
        vals = [r.timings[key] for r in reports if key in r.timings]
        if vals:
            out[f"max_shard_{key}"] = max(vals)
    if all("samples_per_s" in r.timings and r.timings.get("run_s") for r in reports):
        # Shards run at once: every sample timed after compilation, over the longest stretch.
        timed = sum(r.timings["samples_per_s"] * r.timings["run_s"] for r in reports)
        out["samples_per_s"] = timed / max(r.timings["run_s"] for r in reports)
    return out


# ---------------------------------------------------------------- the whole run


def simulate_sharded(mode: str, network: Any, x: np.ndarray, y: np.ndarray, *,
                     float_predictions: np.ndarray | None = None, workers: int = 2,
                     cluster: str | None = None, copies: int | None = 1,
                     device: str = "cpu", use_lava: bool = True,
                     on_tick: Callable[[float], None] | None = None,
                     ticks_per_sample: int = 1, shards: int | None = None,
                     options: dict[str, Any] | None = None) -> Any:
    """Shard samples ``x`` over ``workers`` processes (or ``cluster``) and merge the reports.

    ``shards`` defaults to ``workers``: one contiguous range per worker, each compiled
    once. The merged report's ``timings`` carry ``wall_s`` and ``samples_per_s`` of the
    whole sharded run (start-up and compilation included) and every shard's own.
    """
    ranges = shard_ranges(len(x), shards or workers)
    fp = None if float_predictions is None else np.asarray(float_predictions)
    tasks = [ShardTask(mode, network, x[a:b], y[a:b], None if fp is None else fp[a:b], a, b,
                       copies=copies, device=device, use_lava=use_lava,
                       options=dict(options or {})) for a, b in ranges]
    t0 = time.perf_counter()
    reports = run_shards(tasks, workers=workers, cluster=cluster, on_tick=on_tick,
                         ticks_per_sample=ticks_per_sample)
    wall = time.perf_counter() - t0
    merge = merge_reports if mode == "parallel" else merge_dendritic
    report = merge(reports, [a for a, _ in ranges])
    report.timings.update({"wall_s": wall, "workers": workers, "cluster": cluster or "",
                           "samples_per_s_wall": len(x) / wall if wall else 0.0})
    return report


# ---------------------------------------------------------------- progress


@contextmanager
def progress_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[float], None]]:
    """One bar over ``total`` samples with samples/s and an ETA; yields ``advance(n=1)``."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        # Samples over the whole elapsed time: copies finish samples in bursts of k, and
        # rich's windowed speed of one burst reads as 10^5 samples/s.
        def render(self, task) -> Text:  # noqa: ANN001  (rich's Task)
            elapsed = task.finished_time if task.finished else task.elapsed
            if not task.completed or not elapsed:
                return Text("… samples/s")
            return Text(f"{task.completed / elapsed:.2f} samples/s")

    bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), Rate(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   disable=not enabled, speed_estimate_period=300)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)
