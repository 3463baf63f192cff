"""Dendritic mode: ``lrfdyn simulate --mode dendritic``.

:func:`simulate_dendritic` runs samples with every LRF-Dyn block streamed through its
dendrites: by default the whole model as one Lava network
(:func:`lrfdyn.sim.dendritic_network.simulate_network`), or, with ``network=False``, each
block's stream network on Lava by itself, checked against the stream reference of
:mod:`lrfdyn.sim.streams`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import nir
import numpy as np

from lrfdyn.sim.dendritic_network import simulate_network
from lrfdyn.sim.dendritic_report import DendriticReport, StreamMismatch
from lrfdyn.sim.reference import readout, run_reference
from lrfdyn.sim.streams import lower_both, run_hybrid_reference, run_stream_timelines


def simulate_dendritic(graph: nir.NIRGraph, x: np.ndarray, y: np.ndarray, *,
                       use_lava: bool = True, float_predictions: np.ndarray | None = None,
                       on_sample: Callable[[int], None] | None = None,
                       copies: int | None = 1, network: bool = True) -> DendriticReport:
    """Run samples in dendritic mode; check every stream on Lava against its reference.

    The per-token layers are the parallel lowering's, which ``lrfdyn simulate`` checks
    on Lava; here each LRF-Dyn block's streams (its u from the run) go through Lava,
    and every process's graded output at every step must equal the reference's.
    """
    net, blocks = lower_both(graph)
    x = np.asarray(x, np.int64)
    t_in = net.input.timesteps
    if use_lava and network:  # the whole model as one Lava network
        return simulate_network(net, blocks, x, y, float_predictions=float_predictions,
                                on_sample=on_sample, copies=copies)
    if copies is None:  # samples side by side in each stream network, sized by the blocks
        from lrfdyn.loihi.copies import choose_stream_copies

        copies = choose_stream_copies(blocks, len(x))
    t0 = time.perf_counter()
    parallel = run_reference(net, x)
    hybrid = run_hybrid_reference(net, blocks, x)
    timings = {"reference_s": time.perf_counter() - t0}
    rows, total, first = [], 0, None
    for block in blocks:
        u = hybrid.streams[block.name]
        row: dict[str, Any] = {
            "name": block.name, "d": block.d, "k": block.k, "tokens": block.tokens,
            "stream_steps": block.stream_steps, "latency": block.latency,
            "neurons": block.sizes(), "quantization": block.quantization_report(),
            "scales": block.scales, "mismatches": None, "compartments_counted": None,
        }
        if use_lava:
            from lrfdyn.sim.lava_run import run_streams_lava

            want = run_stream_timelines(block, u, t_in, copies)
            run = run_streams_lava(block, u, streams_per_sample=t_in, on_sample=on_sample,
                                   copies=copies)
            counts = {}
            for name, ref_values in want.values.items():
                diff = run.spikes[name] != ref_values
                counts[name] = int(diff.sum())
                if counts[name] and first is None:
                    s, step, neuron = (int(v) for v in np.argwhere(diff)[0])
                    first = StreamMismatch(block.name, name, s // t_in, s % t_in, step + 1,
                                           neuron, int(run.spikes[name][s, step, neuron]),
                                           int(ref_values[s, step, neuron]))
            row["mismatches"] = sum(counts.values())
            row["mismatches_by_process"] = counts
            row["processes"] = run.processes
            row["compartments_counted"] = sum(
                size for kind, size in run.processes.values()
                if kind == "DendriteCompartments")
            timings[f"{block.name}.lava_s"] = run.compile_s + run.run_s
            total += row["mismatches"]
        rows.append(row)
    pred = lambda s: readout(s[net.output], t_in)  # noqa: E731
    return DendriticReport(
        samples=len(x), timesteps=t_in,
        float_accuracy=(None if float_predictions is None
                        else float((np.asarray(float_predictions) == y).mean())),
        parallel_accuracy=float((pred(parallel) == y).mean()),
        dendritic_accuracy=float((pred(hybrid.spikes) == y).mean()),
        blocks=rows, mismatches=total if use_lava else None, first_mismatch=first,
        timings=timings,
    )
