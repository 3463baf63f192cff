"""The workflow steps the CLI runs, each one library call: export, simulate, demo.

This is the only module that sees both sides of the NIR contract: it calls the
PyTorch side (train, export) and the Lava side (loihi, sim), and passes only a
NIR graph between them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import ValidationError
from lrfdyn.export.from_nir import run_float
from lrfdyn.export.to_nir import model_to_nir, write_nir
from lrfdyn.io import read_array, write_array, write_json
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import readout, run_reference
from lrfdyn.sim.interop import InteropReport, run_graph
from lrfdyn.sim.report import SimReport
from lrfdyn.sim.simulate import read_graph, simulate
from lrfdyn.train.checkpoint import load_checkpoint
from lrfdyn.train.data import load_dataset

EXPORT_FORMATS = ("nir", "netx")


def checkpoint_to_nir(checkpoint: str | os.PathLike[str]) -> nir.NIRGraph:
    """Load a checkpoint and build its NIR graph (in memory)."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    data_name = str(ckpt.extra.get("data", "digits"))
    # Checkpoints record their input shape; older ones get it from their (bundled) data set.
    recorded = ckpt.extra.get("image_shape")
    shape = tuple(int(v) for v in (recorded or load_dataset(data_name).image_shape))
    graph = model_to_nir(model, shape, int(ckpt.config["timesteps"]))
    graph.metadata["dataset"] = data_name
    # The split seed picks the held-out set; checkpoints before it existed split by ``seed``.
    graph.metadata["split_seed"] = int(ckpt.extra.get("split_seed", ckpt.extra.get("seed", 0)))
    return graph


def export(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
           fmt: str = "nir") -> dict[str, Any]:
    """``lrfdyn export``: write the checkpoint's network as NIR (or lava-dl netx HDF5)."""
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    t0 = time.perf_counter()
    graph = checkpoint_to_nir(checkpoint)
    if fmt == "nir":
        path = write_nir(graph, out)
    else:
        from lrfdyn.loihi.netx import write_netx

        path = write_netx(lower(graph), out)
    return {"path": str(path), "format": fmt, "nodes": len(graph.nodes),
            "edges": len(graph.edges), "seconds": time.perf_counter() - t0}


def held_out_samples(graph: nir.NIRGraph, data: str | None, data_dir: str | None,
                     samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``samples`` test images (8-bit) and labels of the graph's data set."""
    name = data or str(graph.metadata.get("dataset", "digits"))
    split = graph.metadata.get("split_seed", graph.metadata.get("seed", 0))
    ds = load_dataset(name, data_dir, seed=int(split))
    n = min(samples, len(ds.x_test))
    if n < 1:
        raise ValidationError(f"--samples must be at least 1, got {samples}")
    return ds.x_test[:n], ds.y_test[:n], name


@contextmanager
def progress_bar(label: str, total: int, enabled: bool) -> Iterator[Any]:
    """A bar over ``total`` ticks with rate and ETA; yields ``tick(i)`` (one per call)."""
    from lrfdyn.sim.shard import progress_bar as bar

    with bar(label, total, enabled) as advance:
        yield lambda _i: advance(1)


def run_simulation(nir_path: str | os.PathLike[str], *, data: str | None = None,
                   data_dir: str | None = None, samples: int = 100, use_lava: bool = True,
                   progress: bool = True, device: str = "cpu", workers: int = 1,
                   cluster: str | None = None, copies: int | None = None) -> SimReport:
    """``lrfdyn simulate``: lower, run on Lava and the reference, compare every spike.

    ``workers`` processes (or a Ray ``cluster``) share the samples (:mod:`lrfdyn.sim.shard`);
    ``copies`` samples run side by side in each Lava network (None: sized by the network).
    """
    t0 = time.perf_counter()
    graph = read_graph(nir_path)
    net = lower(graph)
    lower_s = time.perf_counter() - t0
    images, labels, _ = held_out_samples(graph, data, data_dir, samples)
    from lrfdyn.sim.budget import check as check_budget, fitting_shards

    # Before any of it runs; a run too big for the budget is cut into shards that fit.
    if cluster:  # memory is the cluster nodes'; one range per worker, as asked
        check_budget(net, len(images), lava=use_lava, float_pass=True)
        shards = 1
    else:
        shards = fitting_shards(net, len(images), workers=workers, lava=use_lava,
                                float_pass=True)
    float_pred = run_float(graph, images).sum(axis=1).argmax(axis=1)
    x = images.reshape(len(images), -1).astype(np.int64)
    if workers > 1 or cluster or shards > 1:
        from lrfdyn.sim.shard import progress_bar as bar, simulate_sharded

        if shards > workers and progress:
            print(f"lrfdyn: {len(x)} samples run as {shards} shards, {workers} at a time, "
                  "to stay within the memory budget (--max-memory)", file=sys.stderr)
        with bar("Lava fixed_pt", len(x), progress and use_lava) as advance:
            report = simulate_sharded("parallel", net, x, labels, float_predictions=float_pred,
                                      workers=workers, cluster=cluster, copies=copies,
                                      device=device, use_lava=use_lava, on_tick=advance,
                                      shards=None if cluster else shards)
        report.timings["read_and_lower_s"] = lower_s  # "shards": one entry per shard
        return report
    with progress_bar("Lava fixed_pt", len(x), progress and use_lava) as tick:
        report = simulate(net, x, labels, use_lava=use_lava, float_predictions=float_pred,
                          on_sample=tick, device=device, copies=copies)
    report.timings["read_and_lower_s"] = lower_s
    return report


def run_dendritic(nir_path: str | os.PathLike[str], *, data: str | None = None,
                  data_dir: str | None = None, samples: int = 100, use_lava: bool = True,
                  progress: bool = True, workers: int = 1, cluster: str | None = None,
                  copies: int | None = None) -> Any:
    """``lrfdyn simulate --mode dendritic``: stream every LRF-Dyn block through its dendrites.

    ``workers``, ``cluster`` and ``copies`` as for :func:`run_simulation`.
    """
    from lrfdyn.loihi.dendritic import dendrite_nodes
    from lrfdyn.sim.dendritic import simulate_dendritic

    graph = read_graph(nir_path)
    blocks = len(dendrite_nodes(graph))  # refuses a graph without LRF-Dyn blocks first
    images, labels, _ = held_out_samples(graph, data, data_dir, samples)
    float_pred = run_float(graph, images).sum(axis=1).argmax(axis=1)
    x = images.reshape(len(images), -1).astype(np.int64)
    from lrfdyn.sim.shard import progress_bar as bar

    with bar("Lava streams", len(x), progress and use_lava) as advance:
        if workers > 1 or cluster:
            from lrfdyn.sim.shard import simulate_sharded

            return simulate_sharded("dendritic", graph, x, labels, float_predictions=float_pred,
                                    workers=workers, cluster=cluster, copies=copies,
                                    use_lava=use_lava, on_tick=advance)
        # One tick per sample: the whole model runs as one Lava network.
        return simulate_dendritic(graph, x, labels, use_lava=use_lava,
                                  float_predictions=float_pred, copies=copies,
                                  on_sample=lambda _i: advance(1))


def run_nir_on_array(nir_path: str | os.PathLike[str], input_path: str | os.PathLike[str],
                     output_path: str | os.PathLike[str] | None, *, mode: str,
                     convention: str = "nir", dt: float | None = None,
                     calibrate: bool = False) -> InteropReport:
    """``lrfdyn simulate graph.nir --float|--fixed --input x.npy [--output y.npy]
    [--calibrate]``."""
    from lrfdyn.loihi.neurons import convention as named_convention

    conv = named_convention(convention)
    graph = read_graph(nir_path)
    x = read_array(input_path)
    y, report = run_graph(graph, x, mode=mode, conv=conv, dt=dt, calibrate=calibrate)
    if output_path is not None:
        write_array(output_path, y)
    return report


def quantized_accuracy(graph: nir.NIRGraph, data: str, data_dir: str | None,
                       seed: int) -> float:
    """Test accuracy of the Loihi-integer network (integer reference, all test samples)."""
    ds = load_dataset(data, data_dir, seed=seed)
    net = lower(graph)
    x = ds.x_test.reshape(len(ds.x_test), -1).astype(np.int64)
    spikes = run_reference(net, x, record=[net.output])
    return float((readout(spikes[net.output], net.input.timesteps) == ds.y_test).mean())


@dataclass
class DemoResult:
    checkpoint: Path
    nir_path: Path
    train_seconds: float
    float_accuracy: float
    quantized_accuracy: float
    report: SimReport


def demo(out: str | os.PathLike[str], *, samples: int = 100, epochs: int = 15,
         progress: bool = True) -> DemoResult:
    """Train the spiking MLP on digits, export to NIR, run 100 test samples on Lava."""
    from lrfdyn.train.trainer import TrainConfig, train

    out = Path(out)
    t0 = time.perf_counter()
    result = train(TrainConfig(data="digits", arch="mlp", epochs=epochs, out=str(out)),
                   progress=progress)
    train_s = time.perf_counter() - t0
    graph = checkpoint_to_nir(result.checkpoint)
    nir_path = write_nir(graph, out / "model.nir")
    q_acc = quantized_accuracy(graph, "digits", None, 0)
    report = run_simulation(nir_path, samples=samples, progress=progress)
    write_json(out / "report.json", report.to_dict())
    return DemoResult(result.checkpoint, nir_path, train_s, result.float_accuracy, q_acc, report)
