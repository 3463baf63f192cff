"""``lrfdyn simulate``: lower a NIR file, run it on Lava and on the reference, compare, count."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import nir
import numpy as np

from lrfdyn.errors import NIRFileError
from lrfdyn.io import input_file
from lrfdyn.nir_types import check_endpoints, check_graph, with_group_types
from lrfdyn.loihi.ir import LoweredNetwork
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import check_samples, readout, run_reference
from lrfdyn.sim.report import (
    LayerStats,
    SimReport,
    count_synops,
    first_mismatches,
    memory_bits,
)


def read_graph(path: str | os.PathLike[str]) -> nir.NIRGraph:
    """Read a NIR file, turning every way it can be unreadable into one clear error."""
    path = input_file(path, "NIR file", "write one with `lrfdyn export`", NIRFileError)
    try:
        raw = nir.read(path, type_check=False)
        # nir's type inference adds Input nodes to dangling graphs: check the file's own.
        if isinstance(raw, nir.NIRGraph):
            check_endpoints(raw, path)
            from lrfdyn.sim.interop import io_types_fixed

            # Peers write batch/time axes into Input/Output types ((1, n), (1, T, n)).
            raw, _ = io_types_fixed(raw)
        graph = with_group_types(raw)
    except NIRFileError:
        raise
    except Exception as exc:  # h5py and nir raise many types for a bad file
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "no detail"
        raise NIRFileError(
            f"{path}: not a readable NIR file ({type(exc).__name__}: {detail!r}); "
            "re-export it with `lrfdyn export`"
        ) from exc
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(f"{path}: holds a single {type(graph).__name__}, not a NIR graph")
    check_graph(graph, path)  # names, Input/Output, finite real parameters, metadata
    return graph



def simulate(
    net: LoweredNetwork,
    x: np.ndarray,
    y: np.ndarray,
    *,
    use_lava: bool = True,
    float_predictions: np.ndarray | None = None,
    on_sample: Callable[[int], None] | None = None,
    device: str = "cpu",
    copies: int | None = 1,
) -> SimReport:
    """Run integer samples ``x`` (N, input_size) with labels ``y``; compare layer by layer.

    With ``use_lava=False`` only the reference runs (for counting without Lava); it runs
    on torch ``device`` (``cuda`` where present; the CPU result is the contract).
    """
    x = check_samples(net, x)
    steps = net.steps_per_sample()
    t_in = net.input.timesteps
    t0 = time.perf_counter()
    ref = run_reference(net, x, steps, device=device, lava_window=True)
    ref_s = time.perf_counter() - t0
    ref_pred = readout(ref[net.output], t_in)
    timings = {"reference_s": ref_s}
    lava_pred = None
    counts = {g: 0 for g in net.groups}
    first = None
    if use_lava:
        from lrfdyn.sim.lava_run import run_lava

        run = run_lava(net, x, on_sample=on_sample, copies=copies)  # None: sized by net
        counts, first = first_mismatches(run.spikes, ref, net)
        lat = net.latency
        lava_pred = run.spikes[net.output][:, lat : lat + t_in].sum(axis=1).argmax(axis=1)
        timed = len(x) - 1 if run.timed_samples is None else run.timed_samples
        timings.update({
            "first_sample_incl_compile_s": run.compile_s,
            "run_s": run.run_s,
            # One block of copies only: nothing ran after compilation, so count it in.
            "samples_per_s": timed / run.run_s if timed and run.run_s else
            len(x) / max(run.compile_s + run.run_s, 1e-9),
        })
    synops = count_synops(net, ref, x, t_in)
    state_bits, syn_bits = memory_bits(net)
    layers = [
        LayerStats(
            name=g, neurons=grp.size, spikes=int(np.count_nonzero(ref[g][:, :t_in])),
            firing_rate=float(np.count_nonzero(ref[g][:, :t_in]) / max(ref[g][:, :t_in].size, 1)),
            synops_in=synops[g],
            mismatches=counts[g],
        )
        for g, grp in net.groups.items()
    ]
    n_neurons = sum(grp.size for grp in net.groups.values())
    total_synops = sum(synops.values())
    return SimReport(
        samples=len(x),
        timesteps=t_in,
        latency=net.latency,
        mismatches=sum(counts.values()),
        lava_accuracy=None if lava_pred is None else float((lava_pred == y).mean()),
        reference_accuracy=float((ref_pred == y).mean()),
        float_accuracy=(None if float_predictions is None
                        else float((np.asarray(float_predictions) == y).mean())),
        predictions_equal=None if lava_pred is None else bool((lava_pred == ref_pred).all()),
        synops=total_synops,
        synops_per_sample=total_synops / max(len(x), 1),
        neurons=n_neurons,
        neuron_updates=n_neurons * t_in * len(x),
        state_memory_bits=state_bits,
        synaptic_memory_bits=syn_bits,
        layers=layers,
        first_mismatch=first,
        timings=timings,
        quantization=net.quantization_report(),
    )


def load_and_lower(path: str | os.PathLike[str]) -> tuple[nir.NIRGraph, LoweredNetwork]:
    graph = read_graph(path)
    return graph, lower(graph)
