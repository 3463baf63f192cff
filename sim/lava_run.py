"""Run a lowered network on Lava's CPU simulator (``fixed_pt``), sample by sample.

One compiled network serves every sample. Between samples the network drains:
a few silent steps after which every neuron and synapse buffer is exactly 0
again (:func:`lrfdyn.loihi.build.drain_steps`), so each sample sees a fresh
network without a single ``Var.set``, which Lava 0.10 performs one element at a
time. Networks that cannot drain (a group with dv = 0) are reset with
``Var.set`` instead (docs/design.md §3.5). The network is stopped on every path,
including errors and Ctrl-C, and its recording files are removed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.run_configs import Loihi2SimCfg, RunConfig

from lrfdyn.errors import LavaRunError
from lrfdyn.loihi.build import LavaNetwork, build_lava, build_streams, reset_state
from lrfdyn.loihi.dendritic import DendriticBlock
from lrfdyn.loihi.processes import cpu_models
from lrfdyn.loihi.ir import BIAS_SOURCE, LoweredNetwork


@dataclass
class LavaRun:
    """Raw spikes of every group, (N, steps_per_sample, size), plus timings in seconds."""

    spikes: dict[str, np.ndarray]
    compile_s: float
    run_s: float
    #: process name -> (Lava process type, neurons), read off the built process graph.
    processes: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Samples that ``run_s`` covers (None: all but the first); copies run several at once.
    timed_samples: int | None = None


def run_lava(
    net: LoweredNetwork,
    x: np.ndarray,
    *,
    on_sample: Callable[[int], None] | None = None,
    select_tag: str = "fixed_pt",
    run_cfg: RunConfig | None = None,
    backend: str = "Lava",
    stock_models: bool = False,
    copies: int | None = 1,
) -> LavaRun:
    """Run samples ``x`` (N, input_size) through ``net`` on Lava and record every spike.

    A float network (:func:`lrfdyn.loihi.float_lower.lower_float`) runs with
    ``select_tag="floating_pt"`` on float samples. Groups that never spike come back
    as their voltage (float; integer-valued in ``fixed_pt``) instead of spikes.

    By default Lava's Sparse and Conv synapses use the models of :mod:`lrfdyn.loihi.processes`,
    bit-identical to Lava's own and much faster; ``stock_models=True`` runs Lava's
    models only. ``run_cfg`` replaces the whole run configuration, e.g. with
    ``Loihi2HwCfg()`` for the chip; ``backend`` names it in error messages.
    ``copies`` samples run side by side through one network (:mod:`lrfdyn.loihi.copies`;
    None: as many as the network's size allows); the spikes are the same.
    """
    x = np.asarray(x)
    if copies is None:
        from lrfdyn.loihi.copies import choose_copies, fits_copies

        copies = choose_copies(net, len(x)) if fits_copies(net) else 1
    if copies > 1:
        return _run_copies(net, x, copies, on_sample, select_tag=select_tag, run_cfg=run_cfg,
                           backend=backend, stock_models=stock_models)
    lava_net = build_lava(net, x if x.dtype.kind == "f" else x.astype(np.int64))
    steps = lava_net.block_steps
    # A float group that never spikes is read out by its voltage.
    spikes = {g: np.zeros((len(x), lava_net.steps_per_sample, grp.size),
                          bool if grp.spiking else np.float64)
              for g, grp in net.groups.items()}
    runner = lava_net.source
    if run_cfg is None:
        run_cfg = Loihi2SimCfg(select_tag=select_tag,
                               exception_proc_model_map=cpu_models(select_tag,
                                                                   stock=stock_models))
    cfg = run_cfg
    compile_s = run_s = 0.0
    try:
        for i in range(len(x)):
            t0 = time.perf_counter()
            run_steps(runner, steps, cfg, f"{backend} failed on sample {i}",
                      copies=net.copies)
            elapsed = time.perf_counter() - t0
            if i == 0:
                compile_s = elapsed
            else:
                run_s += elapsed
            _collect(lava_net, spikes, i)
            if not lava_net.drain:
                reset_state(lava_net)
            if on_sample is not None:
                on_sample(i)
    finally:
        stop(lava_net.source)
        lava_net.close()
    return LavaRun(spikes=spikes, compile_s=compile_s, run_s=run_s)


def _run_copies(net: LoweredNetwork, x: np.ndarray, copies: int,
                on_sample: Callable[[int], None] | None, **kw) -> LavaRun:
    """:func:`run_lava` with ``copies`` samples per network block, split back per sample."""
    from lrfdyn.loihi.copies import copy_network, split_copies, stack_samples

    n = len(x)

    def tick(b: int) -> None:
        for i in range(b * copies, min(n, (b + 1) * copies)):
            on_sample(i)

    run = run_lava(copy_network(net, copies), stack_samples(x, copies),
                   on_sample=None if on_sample is None else tick, copies=1, **kw)
    run.spikes = {g: split_copies(v, copies, n) for g, v in run.spikes.items()}
    run.timed_samples = max(0, n - copies)  # the first block includes the compilation
    return run


def run_steps(runner: AbstractProcess, steps: int, cfg: RunConfig, what: str,
              copies: int = 1) -> None:
    """Run ``steps`` Lava steps; the first call compiles and starts the workers.

    ``copies``: samples side by side in the network; the watchdog's minimum scales with
    them (a run call of k copies may take up to k times a single one's).

    Under a watchdog (:func:`_watchdog`): a worker that dies or a run that makes no
    progress ends in :class:`LavaRunError` instead of a hang. A run that does not
    return normally leaves the runtime unhealthy, and :func:`stop` then kills it.
    """
    guard = _GUARDS.get(id(runner))
    try:
        with warnings.catch_warnings():
            # Lava's model search imports every module beside a process's own by file
            # name and warns for each; the models are named in cfg.
            warnings.filterwarnings("ignore", "Cannot import module", category=UserWarning)
            if guard is None:
                guard = _GUARDS[id(runner)] = _Guard(healthy=False,
                                                     min_s=_MIN_TIMEOUT_S * max(1, copies))
                _create_runtime(runner, cfg, guard)
            guard.healthy = False
            t0 = time.monotonic()
            with _watchdog(guard, guard.run_timeout()):
                runner.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
            guard.ran(time.monotonic() - t0)
    except _Stalled as exc:
        raise LavaRunError(f"{what}: {exc}") from None
    except Exception as exc:  # Lava raises bare Exceptions from its runtime
        raise LavaRunError(
            f"{what}: {type(exc).__name__}: {_first_line(exc)}; "
            "rerun with --debug for the traceback"
        ) from exc


def run_streams_lava(
    block: DendriticBlock,
    u: np.ndarray,
    *,
    on_sample: Callable[[int], None] | None = None,
    streams_per_sample: int = 1,
    copies: int = 1,
) -> LavaRun:
    """Run token streams ``u (S, N, d)`` through ``block``'s stream network on Lava.

    Every process's graded output is recorded: ``spikes[name]`` is ``(S, L, size)``
    int32 (L = ``block.stream_steps``). One run call per sample, i.e. per
    ``streams_per_sample`` consecutive streams, so progress can be shown.
    ``copies`` samples' streams run side by side (:func:`lrfdyn.loihi.copies.copy_block`).
    """
    from lrfdyn.loihi.dendritic import MASKS, source_data

    u = np.asarray(u, np.int64)
    data = source_data(block, u)
    samples = len(u) // streams_per_sample
    if copies > 1:
        from lrfdyn.loihi.copies import copy_block, stack_streams

        shared = (MASKS, BIAS_SOURCE)  # the same for every stream
        data = stack_streams(data, copies, streams_per_sample, shared)
        streams = build_streams(copy_block(block, copies, shared), data)
    else:
        streams = build_streams(block, data)
    # Neurons per stream network of one sample, whatever the copies.
    processes = {name: (type(p).__name__, int(np.prod(p.s_out.shape)) // copies)
                 for name, p in streams.neurons.items()}
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=cpu_models())
    chunk = streams_per_sample * block.stream_steps
    compile_s = run_s = 0.0
    blocks = -(-samples // copies)
    try:
        for b in range(blocks):
            t0 = time.perf_counter()
            run_steps(streams.runner, chunk, cfg,
                      f"Lava failed on {block.name}, sample {b * copies}", copies=copies)
            elapsed = time.perf_counter() - t0
            if b == 0:
                compile_s = elapsed
            else:
                run_s += elapsed
            if on_sample is not None:
                for i in range(b * copies, min(samples, (b + 1) * copies)):
                    on_sample(i)
        values = {name: np.array(rec).reshape(blocks * streams_per_sample,
                                              block.stream_steps, -1)
                  for name, rec in streams.recordings.items()}
        if copies > 1:
            from lrfdyn.loihi.copies import split_streams

            values = {name: split_streams(v, copies, streams_per_sample, samples)
                      for name, v in values.items()}
    finally:
        stop(streams.runner)
        streams.close()
    return LavaRun(spikes=values, compile_s=compile_s, run_s=run_s, processes=processes,
                   timed_samples=max(0, samples - copies))


def _collect(lava_net: LavaNetwork, spikes: dict[str, np.ndarray], i: int) -> None:
    for name in lava_net.recordings:
        spikes[name][i] = lava_net.sample_spikes(name, i)


def stop(runner: AbstractProcess) -> None:
    """Stop the runtime ``runner`` started, if any, on every path.

    After a run that returned normally Lava stops its workers itself. After anything
    else (Ctrl-C, SIGTERM, a failed or stalled run) Lava's own stop would wait for
    answers from workers that are dead or busy, so the workers are killed instead.
    """
    guard = _GUARDS.pop(id(runner), None)
    rt = getattr(runner, "runtime", None) or (guard.runtime if guard else None)
    if rt is None:
        return
    if guard is None or guard.healthy:
        try:
            with _watchdog(guard or _Guard(), STOP_TIMEOUT_S, workers=False):
                runner.stop()  # the workers exit here: only the time is watched
            return
        except Exception:  # noqa: BLE001  (a stalled or failed stop: kill the workers)
            pass
        except BaseException:
            _kill_runtime(rt)
            raise
    _kill_runtime(rt)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


# ---------------------------------------------------------------- signals and the watchdog
#
# Lava forks one worker per ProcessModel, plus its runtime service and a shared-memory
# manager, into the terminal's process group. Ctrl-C there sends SIGINT to every one of
# them: the workers died with a traceback each, and the main process then waited
# forever in Lava's stop for answers from them. So the workers ignore SIGINT and
# SIGTERM (and die with the main process); the main process alone handles them, and
# :func:`stop` kills the workers.

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds a graceful stop may take before the workers are killed.
STOP_TIMEOUT_S = 30.0
#: Environment variable: seconds a sample may run without finishing before the run is
#: declared hung (default: 600 s for the first, which starts the workers, then 60 s per
#: copy or 20 times the slowest run call so far, the first included, whichever is longer).
TIMEOUT_ENV = "LRFDYN_LAVA_TIMEOUT"
_FIRST_TIMEOUT_S = 600.0
_MIN_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1

_GUARDS: dict[int, _Guard] = {}
_fork_guard: dict = {"on": False, "deferred": []}


class _Stalled(Exception):
    """Raised in the main thread by the watchdog: a worker died or a run hung."""


@dataclass
class _Guard:
    """What the watchdog and :func:`stop` know about one runner's runtime."""

    runtime: object = None
    healthy: bool = True
    slowest: float = 0.0
    started: bool = False
    min_s: float = _MIN_TIMEOUT_S  # the floor after the first call (scaled by copies)

    def run_timeout(self) -> float:
        env = os.environ.get(TIMEOUT_ENV)
        if env:
            try:
                return max(float(env), 0.1)
            except ValueError:
                raise LavaRunError(f"{TIMEOUT_ENV}={env!r} is not a number of seconds; "
                                   "unset it or give e.g. 600") from None
        if not self.started:
            return _FIRST_TIMEOUT_S
        return max(self.min_s, 20.0 * self.slowest)

    def ran(self, seconds: float) -> None:
        # The first call (compilation and worker start included) counts too: it bounds a
        # sample from above, and without it a network whose samples take longer than the
        # minimum (Spikformer-4-384: ~80 s each) would be declared hung at its second.
        self.slowest = max(self.slowest, seconds)
        self.started = True
        self.healthy = True

    def dead_worker(self) -> int | None:
        """The exit code of a worker that has exited, if any (None: all alive)."""
        mi = getattr(self.runtime, "_messaging_infrastructure", None)
        for actor in list(getattr(mi, "actors", None) or []):
            try:
                code = actor.exitcode
            except ValueError:  # closed: joined by Lava itself
                continue
            if code is not None:
                return code
        return None


def _after_fork_in_child() -> None:
    if not _fork_guard["on"]:
        return
    _fork_guard["on"] = False
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:  # a worker must not outlive lrfdyn, however lrfdyn ends (Linux)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _defer(signum: int, frame: object) -> None:
    _fork_guard["deferred"].append(signum)


def _create_runtime(runner: AbstractProcess, cfg: RunConfig, guard: _Guard) -> None:
    """``runner.create_runtime(cfg)``, with the workers forked under the fork guard.

    While Lava forks, SIGINT and SIGTERM are only noted (a forked worker must never
    take one, and an exception raised inside Python's fork hooks would be lost); one
    that came is delivered again once the workers run.
    """
    from lava.magma.core.process.message_interface_enum import ActorType
    from lava.magma.runtime.runtime import Runtime

    exe = runner.compile(cfg)
    rt = Runtime(exe, ActorType.MultiProcessing, loglevel=runner._log_config.level)
    exe.assign_runtime_to_all_processes(rt)
    guard.runtime = rt
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        for sig in _SIGNALS:
            signal.signal(sig, _defer)
    _fork_guard.update(on=True, deferred=[])
    try:
        with _watchdog(guard, guard.run_timeout()):
            rt.initialize()
    finally:
        _fork_guard["on"] = False
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if _fork_guard["deferred"] and previous:
            signal.raise_signal(_fork_guard["deferred"][0])


@contextmanager
def _watchdog(guard: _Guard, timeout: float, *, workers: bool = True) -> Iterator[None]:
    """Raise :class:`_Stalled` in the main thread if a worker exits (with ``workers``) or
    ``timeout`` passes.

    A thread polls the workers; to wake the main thread out of Lava's blocking receive
    it sends it SIGUSR1, whose handler raises. Off the main thread: no watchdog.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    why: list[str] = []
    lock = threading.Lock()

    def on_usr1(signum, frame) -> None:
        with lock:
            reason = why.pop() if why else None
        if reason is not None:
            raise _Stalled(reason)

    previous = signal.signal(signal.SIGUSR1, on_usr1)
    done = threading.Event()
    main = threading.main_thread().ident

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, (*_SIGNALS, signal.SIGUSR1))
        end = time.monotonic() + timeout
        while not done.wait(0.2):
            code = guard.dead_worker() if workers else None
            if code is not None:
                reason = (f"a Lava worker process exited (exit code {code}) during the run; "
                          "rerun, or use --no-lava for the integer reference alone")
            elif time.monotonic() > end:
                reason = (f"Lava made no progress for {timeout:.0f} s (a worker hung); "
                          f"set {TIMEOUT_ENV}=SECONDS to wait longer")
            else:
                continue
            with lock:
                if done.is_set():
                    return
                why.append(reason)
            signal.pthread_kill(main, signal.SIGUSR1)
            return

    thread = threading.Thread(target=watch, name="lrfdyn-lava-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with lock:
            done.set()
        thread.join()
        with lock:
            why.clear()  # a signal still on its way finds nothing to raise
        signal.signal(signal.SIGUSR1, previous)


def _kill_runtime(rt) -> None:
    """Kill a runtime's workers, free its shared memory and detach it from its processes,
    so that nothing (Lava's own ``__del__`` included) waits for them again."""
    mi = getattr(rt, "_messaging_infrastructure", None)
    actors = list(getattr(mi, "actors", None) or [])
    for actor in actors:
        try:
            if actor.exitcode is None and actor.pid:
                os.kill(actor.pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):  # closed or already gone
            pass
    rt._is_running = rt._is_started = False
    try:
        if mi is not None:
            mi.stop()  # joins the (dead) workers, shuts the shared-memory manager down
    except Exception:  # noqa: BLE001  (a half-built runtime: nothing more to free)
        pass
    try:
        rt._watchdog_manager.stop()
    except Exception:  # noqa: BLE001
        pass
    for proc in getattr(getattr(rt, "_executable", None), "process_list", None) or []:
        proc._runtime = None
