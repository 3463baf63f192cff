"""The arguments of each ``lrfdyn`` command, and the argparse types that check them.

Each ``<command>_args`` adds one command's arguments to its subparser; the types refuse
a bad value with its range, as argparse usage errors (one line, exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lrfdyn.errors import MAX_SEED


def _int_type(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], refused with the range otherwise."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low or (high is not None and v > high):
            rng = f"at least {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{v} must be {rng}")
        return v

    parse.__name__ = "integer"
    return parse


def _positive_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return v


_positive_float.__name__ = "number"
#: Seeds fit numpy's and torch's generators.
_SEED = _int_type(0, MAX_SEED)


def _copies(text: str) -> int | None:
    """``--copies``: a count >= 1, or ``auto`` (None: chosen from the network's size)."""
    return None if text == "auto" else _int_type(1)(text)


# ---------------------------------------------------------------- train


def train_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn train``: a config and the flags that override it."""
    p.add_argument("--config", help="YAML or JSON training config; flags override it")
    p.add_argument("--data", choices=["digits", "mnist5k", "mnist", "cifar10", "cifar100",
                                      "imagenet"],
                   help="data set (imagenet: sizing with --epochs 0 only)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")
    p.add_argument("--arch", choices=["mlp", "spikformer"],
                   help="architecture (default: mlp; spikformer with --attention)")
    p.add_argument("--attention", choices=["ssa", "lrf_ssa", "lrf_dyn", "statten", "a2os2a"],
                   help="train a Spikformer with this attention block (implies --arch "
                        "spikformer; all five export to NIR)")
    p.add_argument("--token", choices=["v", "kv"],
                   help="LRF-Dyn token input: v (u = V, default) or kv (u = K AND V)")
    p.add_argument("--gate", choices=["none", "q"],
                   help="LRF-Dyn output gate: none (default) or q (AND with Q)")
    p.add_argument("--epochs", type=_int_type(0, 10**6),
                   help="epochs to train; 0 writes an initialized, untrained OUT/checkpoint.pt "
                        "without reading any data (to size a model for Loihi 2 first)")
    p.add_argument("--qat-epochs", type=_int_type(0, 10**6),
                   help="how many of the last epochs train through 8-bit fake-quantized weights")
    p.add_argument("--seed", type=_SEED)
    p.add_argument("--out", help="output folder (checkpoint.pt, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


# ---------------------------------------------------------------- analyze


def analyze_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn analyze``: a Spikformer checkpoint and the samples to measure on."""
    p.add_argument("checkpoint", help="spikformer checkpoint.pt written by `lrfdyn train`")
    p.add_argument("--out", help="output folder (default: <checkpoint folder>/analysis)")
    p.add_argument("--samples", type=_int_type(1), default=64,
                   help="test samples to run (default 64)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")


# ---------------------------------------------------------------- export


def export_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn export``: a checkpoint, the output file and its format."""
    p.add_argument("checkpoint", help="checkpoint.pt written by `lrfdyn train`")
    p.add_argument("-o", "--output", required=True, help="output file (.nir or .h5)")
    p.add_argument("--format", default="nir", choices=["nir", "netx"],
                   help="nir (default) or lava-dl netx HDF5")


# ---------------------------------------------------------------- simulate


def _graph_and_data_args(p: argparse.ArgumentParser, samples: int) -> None:
    """The NIR file and the test samples to run it on (simulate, profile, deploy)."""
    p.add_argument("nir_file", help="NIR graph written by `lrfdyn export`")
    p.add_argument("--data", help="data set (default: the one the model was trained on)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")
    p.add_argument("--samples", type=_int_type(1), default=samples,
                   help=f"test samples to run (default {samples})")


def simulate_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn simulate``: the graph, the samples, the run's mode and sharding, and any graph
    on an input array."""
    _graph_and_data_args(p, samples=100)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="torch device of the integer reference (default cpu, the contract)")
    p.add_argument("--no-lava", action="store_true",
                   help="run only the integer reference (counts without Lava)")
    p.add_argument("--mode", choices=("parallel", "dendritic"), default="parallel",
                   help="parallel: a neuron per token (default); dendritic: LRF-Dyn blocks "
                        "stream one token per step through k·d compartments")
    p.add_argument("--report", help="also write the JSON report to this file")
    _max_memory_arg(p)
    p.add_argument("--workers", type=_int_type(1), default=1,
                   help="worker processes that share the samples, each with its own Lava "
                        "runtime (default 1); the merged report equals one run's")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="shard over Ray instead: ray://HOST:PORT, auto (this machine's Ray "
                        "cluster) or local (one started here, --workers CPUs)")
    p.add_argument("--copies", type=_copies, default=None, metavar="N|auto",
                   help="samples side by side in each Lava network (default auto: sized by "
                        "the network); 1 runs one sample at a time")
    g = p.add_argument_group("any NIR graph on an input array (snnTorch, Norse, ...)")
    # dest "precision", not "mode": --mode names the lowering of lrfdyn's own transformers.
    precision = g.add_mutually_exclusive_group()
    precision.add_argument("--float", dest="precision", action="store_const", const="float",
                           help="Lava floating_pt; must equal the NIR semantics spike for spike")
    precision.add_argument("--fixed", dest="precision", action="store_const", const="fixed",
                           help="Loihi integers; reports quantization and its spike agreement")
    g.add_argument("--input", help="input array .npy, (T, ...) or (T, B, ...)")
    g.add_argument("--output", help="write the Output node's spikes here (.npy)")
    g.add_argument("--convention", default="nir",
                   help="how the producer discretizes NIR: nir (default), snntorch, norse, "
                        "spikingjelly, sinabs, rockpool (README: Discretization)")
    g.add_argument("--dt", type=_positive_float, help="time step in s (default: graph metadata, "
                   "else the convention's)")
    g.add_argument("--calibrate", action="store_true",
                   help="--fixed only: size each layer's registers from the float model's "
                        "peaks on this input (x1.5) instead of the worst case")


# ---------------------------------------------------------------- deploy


def deploy_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn deploy``: Loihi 2, or with ``--dry-run`` its core and chip mapping."""
    p.add_argument("--dry-run", action="store_true",
                   help="only map the network onto Loihi 2 cores and chips and print it (no "
                        "hardware needed); exit 1 if it does not fit one chip")
    p.add_argument("--conv-storage", choices=("channels", "kernel"), default="channels",
                   help="--dry-run's estimate of a conv kernel on each core it serves: the "
                        "filters of the output channels on that core (default), or the "
                        "whole kernel (conservative)")
    p.add_argument("--all-layers", action="store_true",
                   help="--dry-run lists every layer (default: the 20 with the most cores "
                        "and a total)")
    p.add_argument("--mode", choices=("parallel", "dendritic"), default="parallel",
                   help="--dry-run maps the parallel lowering (default) or the one dendritic "
                        "network (per-token layers, serializers, k·d compartments, "
                        "deserializers)")
    _graph_and_data_args(p, samples=100)


# ---------------------------------------------------------------- profile


def _max_memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory the run may use, e.g. 16G (default 8G); simulate cuts a "
                        "run estimated above it into sample shards that fit, and a run "
                        "that cannot fit is refused before it starts, with the estimate")


def profile_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn profile``: the graph, the samples, and the output folder."""
    _graph_and_data_args(p, samples=20)
    p.add_argument("--fast", action="store_true",
                   help="count on the integer reference instead of Lava (identical counts)")
    p.add_argument("--sample", type=_int_type(0), default=0,
                   help="sample drawn in the raster (default 0)")
    p.add_argument("--out", help="output folder (default: <nir stem>_profile/ beside the file)")
    _max_memory_arg(p)
    p.add_argument("--memory", action="store_true",
                   help="only compare attention memory: SSA, LRF-SSA, LRF-Dyn parallel and "
                        "dendritic, at this graph's scale and at Spikformer-8-512 scale, "
                        "every row counted on a lowered network (SSA and LRF-SSA at the "
                        "paper's scale: minutes and about 7 GB each)")


# ---------------------------------------------------------------- demo


def demo_args(p: argparse.ArgumentParser) -> None:
    """``lrfdyn demo``: the output folder, samples and epochs."""
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--samples", type=_int_type(1), default=100,
                   help="test samples run on Lava (default 100)")
    p.add_argument("--epochs", type=_int_type(1, 10**6), default=15,
                   help="training epochs (default 15)")
