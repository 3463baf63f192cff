"""Run a lowered network on Lava's CPU simulator (``fixed_pt``), sample by sample.

One compiled network serves every sample. Between samples the network drains:
a few silent steps after which every neuron and synapse buffer is exactly 0
again (:func:`lrfdyn.loihi.build.drain_steps`), so each sample sees a fresh
network without a single ``Var.set``, which Lava 0.10 performs one element at a
time. Networks that cannot drain (a group with dv = 0) are reset with
``Var.set`` instead (DESIGN.md §6). The network is stopped on every path,
including errors and Ctrl-C, and its recording files are removed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
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
from lrfdyn.loihi.lower import LoweredNetwork


@dataclass
class LavaRun:
    """Raw spikes of every group, (N, steps_per_sample, size), plus timings in seconds."""

    spikes: dict[str, np.ndarray]
    compile_s: float
    run_s: float
    #: process name -> (Lava process type, neurons), read off the built process graph.
    processes: dict[str, tuple[str, int]] = field(default_factory=dict)


def run_lava(
    net: LoweredNetwork,
    x: np.ndarray,
    *,
    on_sample: Callable[[int], None] | None = None,
    select_tag: str = "fixed_pt",
    run_cfg: RunConfig | None = None,
    backend: str = "Lava",
    stock_models: bool = False,
) -> LavaRun:
    """Run samples ``x`` (N, input_size) through ``net`` on Lava and record every spike.

    A float network (:func:`lrfdyn.loihi.float_lower.lower_float`) runs with
    ``select_tag="floating_pt"`` on float samples. Groups that never spike come back
    as their voltage (float; integer-valued in ``fixed_pt``) instead of spikes.

    By default Lava's Sparse and Conv synapses use the models of :mod:`lrfdyn.loihi.processes`,
    bit-identical to Lava's own and much faster; ``stock_models=True`` runs Lava's
    models only. ``run_cfg`` replaces the whole run configuration, e.g. with
    ``Loihi2HwCfg()`` for the chip; ``backend`` names it in error messages.
    """
    x = np.asarray(x)
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
            _run_steps(runner, steps, cfg, f"{backend} failed on sample {i}")
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
        _stop(lava_net.source)
        lava_net.close()
    return LavaRun(spikes=spikes, compile_s=compile_s, run_s=run_s)


def _run_steps(runner: AbstractProcess, steps: int, cfg: RunConfig, what: str) -> None:
    try:
        with warnings.catch_warnings():
            # Lava's model search imports every module beside a process's own by file
            # name and warns for each; the models are named in cfg.
            warnings.filterwarnings("ignore", "Cannot import module", category=UserWarning)
            runner.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
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
) -> LavaRun:
    """Run token streams ``u (S, N, d)`` through ``block``'s stream network on Lava.

    Every process's graded output is recorded: ``spikes[name]`` is ``(S, L, size)``
    int32 (L = ``block.stream_steps``). One run call per sample, i.e. per
    ``streams_per_sample`` consecutive streams, so progress can be shown.
    """
    from lrfdyn.loihi.dendritic import source_data

    u = np.asarray(u, np.int64)
    streams = build_streams(block, source_data(block, u))
    processes = {name: (type(p).__name__, int(np.prod(p.s_out.shape)))
                 for name, p in streams.neurons.items()}
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=cpu_models())
    chunk = streams_per_sample * block.stream_steps
    compile_s = run_s = 0.0
    try:
        for i in range(len(u) // streams_per_sample):
            t0 = time.perf_counter()
            _run_steps(streams.runner, chunk, cfg, f"Lava failed on {block.name}, sample {i}")
            elapsed = time.perf_counter() - t0
            if i == 0:
                compile_s = elapsed
            else:
                run_s += elapsed
            if on_sample is not None:
                on_sample(i)
        values = {name: np.array(rec).reshape(len(u), block.stream_steps, -1)
                  for name, rec in streams.recordings.items()}
    finally:
        _stop(streams.runner)
        streams.close()
    return LavaRun(spikes=values, compile_s=compile_s, run_s=run_s, processes=processes)


def _collect(lava_net: LavaNetwork, spikes: dict[str, np.ndarray], i: int) -> None:
    for name in lava_net.recordings:
        spikes[name][i] = lava_net.sample_spikes(name, i)


def _stop(runner: AbstractProcess) -> None:
    """Stop the runtime ``runner`` started, if any."""
    if getattr(runner, "runtime", None) is not None:
        try:
            runner.stop()
        except Exception:  # noqa: BLE001  (a failed run may leave a half-started runtime)
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "(no message)"
