"""Dendritic mode: the integer reference of the token streams, and the whole network with it.

:func:`run_streams` is the stream network's integer reference. It steps the
processes of a :class:`~lrfdyn.loihi.dendritic.DendriticBlock` the way Lava
does, message by message (a value sent at step g along a synapse of delay D
arrives at g + 1 + D), with the arithmetic of :mod:`lrfdyn.loihi.fixed`. Run
with ``chained=True`` it follows one Lava timeline, streams back to back, so
every neuron's value at every step can be compared with Lava's; with
``chained=False`` streams run side by side as a batch, which gives the same z
for every real token (masks and the stream length keep streams apart) and is
what :func:`run_hybrid_reference` uses.

:func:`run_hybrid_reference` runs a whole LRF-Dyn network in dendritic mode:
the per-token layers as in :func:`lrfdyn.sim.reference.run_reference`, and the
attention LIF of every LRF-Dyn block fed by its stream's z instead of the
parallel-mode synapses.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import LoihiRangeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import (COMPARTMENTS, MASKS, PROD, TOKENS, Z, DendriticBlock,
                                    lower_dendritic, source_data)
from lrfdyn.loihi.lower import BIAS_SOURCE, LoweredNetwork, lower
from lrfdyn.sim.reference import readout, run_reference
from lrfdyn.sim.report import percent

#: Graded payloads are 24-bit signed values.
_PAYLOAD_MAX = (1 << (fixed.UV_BITS - 1)) - 1


@dataclass
class StreamRun:
    """Values every process sent, ``name -> (S, L, size)`` (only the names recorded)."""

    values: dict[str, np.ndarray]

    def z_tokens(self, block: DendriticBlock) -> np.ndarray:
        """z of every real token, ``(S, N, d)``."""
        lead = block.offsets[Z] - 1
        return self.values[Z][:, lead:lead + block.tokens]


def run_streams(block: DendriticBlock, u: np.ndarray, *, chained: bool = True,
                record: Callable[[str], bool] = lambda name: True) -> StreamRun:
    """The integer reference of the stream network for token streams ``u (S, N, d)``.

    Raises:
        LoihiRangeError: if a graded value leaves the 24-bit payload range (which the
            lowering's scaling is meant to exclude; checked, not assumed).
    """
    u = np.asarray(u, np.int64)
    n_streams, steps = u.shape[0], block.stream_steps
    data = source_data(block, u)
    if chained:  # one timeline: a batch of one, S·L steps
        data = {k: v.reshape(1, n_streams * steps, -1) for k, v in data.items()}
    batch, total = next(iter(data.values())).shape[:2]
    sizes = block.sizes()
    depth = max(la.delay for la in block.layers) + 2
    # Ring buffer of what each process sent in the last `depth` steps.
    sent = {name: np.zeros((depth, batch, size), np.int64)
            for name, size in {**sizes, **{k: v.shape[2] for k, v in data.items()}}.items()}
    weights = [(la, fixed.dense_effective_weights(la.weights)) for la in block.layers]
    state = fixed.LifState.zeros((batch, block.compartments))
    out = {name: np.zeros((batch, total, size), np.int32)  # < 2^23, checked below
           for name, size in sizes.items() if record(name)}
    for g in range(total):  # step g + 1 of the timeline
        inputs: dict[tuple[str, str], np.ndarray] = {}
        for la, eff in weights:
            arrived = sent[la.src][(g - 1 - la.delay) % depth]
            key = (la.dst, la.port)
            inputs[key] = inputs.get(key, 0) + fixed.accumulate(eff, arrived, la.weight_exp)
        now: dict[str, np.ndarray] = {k: v[:, g] for k, v in data.items()}
        reset = (g % steps) == 0  # the first step of every stream
        now[COMPARTMENTS], state = fixed.compartment_step(
            state, _port(inputs, COMPARTMENTS, batch, block.compartments), block.dv,
            reset=reset)
        for name, size in sizes.items():
            if name == COMPARTMENTS:
                continue
            if name.startswith(PROD + "."):
                now[name] = _port(inputs, name, batch, size, "a_in1") * \
                    _port(inputs, name, batch, size, "a_in2")
            else:  # soma, relays, z: GradedVec with vth = 0 passes its input on
                now[name] = _port(inputs, name, batch, size)
            if np.abs(now[name]).max(initial=0) > _PAYLOAD_MAX:
                raise LoihiRangeError(
                    f"{block.name}.{name}: a graded value exceeds 24 bits at stream step "
                    f"{g % steps + 1}; the stream scaling is too large for this input"
                )
        for name, value in now.items():
            sent[name][g % depth] = value
            if name in out:
                out[name][:, g] = value
    if chained:
        out = {k: v.reshape(n_streams, steps, -1) for k, v in out.items()}
    return StreamRun(out)


def _port(inputs: dict[tuple[str, str], np.ndarray], name: str, batch: int, size: int,
          port: str = "a_in") -> np.ndarray:
    value = inputs.get((name, port))
    return np.zeros((batch, size), np.int64) if value is None else value


# ---------------------------------------------------------------- the whole network


def tokens_of(spikes: np.ndarray, block: DendriticBlock) -> np.ndarray:
    """Group values in (C, H, W) order, ``(B, d·N)`` → token streams ``(B, N, d)``."""
    return spikes.reshape(len(spikes), block.d, block.tokens).transpose(0, 2, 1)


@dataclass
class HybridRun:
    """A dendritic-mode run: every group's spikes and every block's token streams.

    ``streams[block]`` is ``(B·T, N, d)``, sample-major (stream ``i·T + t``).
    """

    spikes: dict[str, np.ndarray]
    streams: dict[str, np.ndarray]


def run_hybrid_reference(net: LoweredNetwork, blocks: list[DendriticBlock],
                         x: np.ndarray) -> HybridRun:
    """Run ``x (B, input_size)`` with every LRF-Dyn block streamed through its dendrites."""
    seen: dict[str, list[np.ndarray]] = {b.name: [] for b in blocks}

    def feed(block: DendriticBlock) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        def a_in(current: dict[str, np.ndarray]) -> np.ndarray:
            u = tokens_of(current[block.u_group], block).astype(np.int64)
            seen[block.name].append(u)
            z = run_streams(block, u, chained=False, record=lambda n: n == Z).z_tokens(block)
            return z.transpose(0, 2, 1).reshape(len(u), -1)  # back to (C, H, W) order
        return a_in

    spikes = run_reference(net, x, inputs={b.out_group: feed(b) for b in blocks})
    streams = {name: np.stack(us, axis=1).reshape(-1, *us[0].shape[1:])
               for name, us in seen.items()}
    return HybridRun(spikes, streams)


def lower_both(graph: nir.NIRGraph) -> tuple[LoweredNetwork, list[DendriticBlock]]:
    """The parallel lowering of ``graph`` and the stream lowering of its LRF-Dyn blocks."""
    net = lower(graph)
    return net, lower_dendritic(graph, net)


# ---------------------------------------------------------------- the check


@dataclass
class StreamMismatch:
    """The first disagreement between Lava and the stream reference."""

    block: str
    process: str
    sample: int
    timestep: int
    stream_step: int
    neuron: int
    lava: int
    reference: int

    def __str__(self) -> str:
        return (f"{self.block}.{self.process} neuron {self.neuron}, sample {self.sample}, "
                f"time step {self.timestep}, stream step {self.stream_step}: "
                f"Lava {self.lava}, reference {self.reference}")


@dataclass
class DendriticReport:
    """``lrfdyn simulate --mode dendritic``: accuracy of both modes, and the stream check."""

    samples: int
    timesteps: int
    float_accuracy: float | None
    parallel_accuracy: float
    dendritic_accuracy: float
    blocks: list[dict[str, Any]]
    mismatches: int | None
    first_mismatch: StreamMismatch | None
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["first_mismatch"] = None if self.first_mismatch is None else str(self.first_mismatch)
        return out

    def summary(self) -> str:
        lines = [
            f"samples                 {self.samples} (T = {self.timesteps})",
            f"float accuracy          {percent(self.float_accuracy)}",
            f"parallel (integer)      {percent(self.parallel_accuracy)}",
            f"dendritic (integer)     {percent(self.dendritic_accuracy)}",
        ]
        for b in self.blocks:
            head = (f"{b['name']}: k·d = {b['k'] * b['d']} compartments, stream "
                    f"{b['stream_steps']} steps, latency {b['latency']} steps")
            if b["mismatches"] is None:
                lines.append(head + " (Lava not run)")
            else:
                lines.append(head + f"; Lava graph holds {b['compartments_counted']} "
                             f"compartments; mismatches {b['mismatches']}")
        if self.mismatches is not None:
            lines.append(f"stream mismatches       {self.mismatches}"
                         + (f" (first: {self.first_mismatch})" if self.first_mismatch else ""))
        return "\n".join(lines)


def simulate_dendritic(graph: nir.NIRGraph, x: np.ndarray, y: np.ndarray, *,
                       use_lava: bool = True, float_predictions: np.ndarray | None = None,
                       on_sample: Callable[[int], None] | None = None) -> DendriticReport:
    """Run samples in dendritic mode; check every stream on Lava against its reference.

    The per-token layers are the parallel lowering's, which ``lrfdyn simulate`` checks
    on Lava; here each LRF-Dyn block's streams (its u from the run) go through Lava,
    and every process's graded output at every step must equal the reference's.
    """
    net, blocks = lower_both(graph)
    x = np.asarray(x, np.int64)
    t_in = net.input.timesteps
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

            want = run_streams(block, u, chained=True)
            run = run_streams_lava(block, u, streams_per_sample=t_in, on_sample=on_sample)
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
