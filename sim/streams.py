"""The integer reference of dendritic mode: token streams, and the whole network with them.

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

from collections.abc import Callable
from dataclasses import dataclass

import nir
import numpy as np

from lrfdyn.errors import LoihiRangeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import (COMPARTMENTS, PROD, Z, DendriticBlock, lower_dendritic,
                                    source_data)
from lrfdyn.loihi.ir import LoweredNetwork
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import run_reference

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
                record: Callable[[str], bool] = lambda name: True,
                period: int | None = None) -> StreamRun:
    """The integer reference of the stream network for token streams ``u (S, N, d)``.

    ``period`` (≥ the stream length) spaces the streams that far apart, as the one
    dendritic network does; each stream then has ``period`` recorded steps.

    Raises:
        LoihiRangeError: if a graded value leaves the 24-bit payload range (which the
            lowering's scaling is meant to exclude; checked, not assumed).
    """
    u = np.asarray(u, np.int64)
    n_streams = u.shape[0]
    steps = block.stream_steps if period is None else period
    data = source_data(block, u, period=steps)
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


def run_stream_timelines(block: DendriticBlock, u: np.ndarray, streams_per_sample: int,
                         copies: int = 1, period: int | None = None) -> StreamRun:
    """The chained reference of the timelines Lava runs with ``copies`` side by side.

    Copy ``c`` chains the streams of samples ``c, c + copies, …``; a stream's first steps
    still hold the tail of the stream before it in its own timeline, so each copy's
    timeline is chained on its own. Values come back sample-major, as for one timeline.
    """
    if copies == 1:
        return run_streams(block, u, chained=True, period=period)
    per = np.asarray(u).reshape(-1, streams_per_sample, *u.shape[1:])
    out: dict[str, np.ndarray] = {}
    for c in range(min(copies, len(per))):
        idx = np.arange(c, len(per), copies)
        part = run_streams(block, per[idx].reshape(-1, *u.shape[1:]), chained=True,
                           period=period).values
        for name, v in part.items():
            if name not in out:
                out[name] = np.zeros((len(per), streams_per_sample, *v.shape[1:]), v.dtype)
            out[name][idx] = v.reshape(len(idx), streams_per_sample, *v.shape[1:])
    return StreamRun({k: v.reshape(-1, *v.shape[2:]) for k, v in out.items()})


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
