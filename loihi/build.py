"""Build Lava processes from a :class:`~lrfdyn.loihi.lower.LoweredNetwork`.

One process per neuron group (``LIF``) and per synapse layer (``Dense``, or
``DelayDense`` where lowering padded a shortcut), a ``RingBuffer`` source that
holds the integer input of every sample back to back, and a sink ``RingBuffer``
on every group that records one sample's spikes. Processes declare structure
only; the ``fixed_pt`` models that run them are Lava's bit-accurate ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.process.process import AbstractProcess
from lava.proc.dense.process import DelayDense, Dense
from lava.proc.sparse.process import DelaySparse, Sparse
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.process import LIF

from lrfdyn.loihi.lower import BIAS_SOURCE, LoweredNetwork, SynapseSpec


@dataclass(eq=False)
class LavaNetwork:
    """The Lava processes of one lowered network, with the handles a runner needs."""

    source: Source
    bias: Source | None
    lifs: dict[str, LIF]
    synapses: dict[str, AbstractProcess]
    sinks: dict[str, Sink]
    steps_per_sample: int

    @property
    def processes(self) -> list[AbstractProcess]:
        extra = [self.bias] if self.bias is not None else []
        return [self.source, *extra, *self.lifs.values(), *self.synapses.values(),
                *self.sinks.values()]


def input_schedule(net: LoweredNetwork, x: np.ndarray) -> np.ndarray:
    """Source data for samples ``x`` (N, size): each sample for T steps, then zeros to drain.

    Returns:
        int32 array (size, N·steps_per_sample), the layout Lava's RingBuffer expects.
    """
    steps = net.steps_per_sample()
    block = np.zeros((x.shape[0], steps, net.input.size), np.int32)
    block[:, : net.input.timesteps] = x[:, None, :]
    return block.reshape(-1, net.input.size).T.copy()


def build_lava(net: LoweredNetwork, x: np.ndarray) -> LavaNetwork:
    """Create (but do not compile) the processes that run samples ``x`` on ``net``."""
    steps = net.steps_per_sample()
    source = Source(data=input_schedule(net, x))
    # The bias source spikes at every step of every sample (lowering delays it per group).
    bias = Source(data=np.ones((1, len(x) * steps), np.int32)) if net.has_bias else None
    sources = {net.input.name: source}
    if bias is not None:
        sources[BIAS_SOURCE] = bias
    lifs = {
        name: LIF(
            shape=(g.size,), du=g.params.du, dv=g.params.dv, vth=g.params.vth,
            bias_mant=np.broadcast_to(g.params.bias_mant, (g.size,)).astype(np.int32),
            bias_exp=np.broadcast_to(g.params.bias_exp, (g.size,)).astype(np.int32),
            name=name,
        )
        for name, g in net.groups.items()
    }
    synapses: dict[str, AbstractProcess] = {}
    for s in net.synapses:
        conn = _synapse_process(s)
        src_port = sources[s.src].s_out if s.src in sources else lifs[s.src].s_out
        src_port.connect(conn.s_in)
        conn.a_out.connect(lifs[s.dst].a_in)
        synapses[s.name] = conn
    sinks = {}
    for name, lif in lifs.items():
        sinks[name] = Sink(shape=(net.groups[name].size,), buffer=steps)
        lif.s_out.connect(sinks[name].a_in)
    return LavaNetwork(source, bias, lifs, synapses, sinks, steps)


def _synapse_process(s: SynapseSpec) -> AbstractProcess:
    """Dense or Sparse, with a delay variant where lowering padded the path."""
    common = dict(weight_exp=s.weight_exp, num_message_bits=s.num_message_bits, name=s.name)
    if s.is_sparse:
        weights = s.weights.astype(np.int32).tocsr()
        if s.delay:
            delays = weights.astype(int)  # Lava insists on the platform int dtype here
            delays.data[:] = s.delay
            return DelaySparse(weights=weights, delays=delays, **common)
        return Sparse(weights=weights, **common)
    weights = np.asarray(s.weights, np.int32)
    if s.delay:
        return DelayDense(weights=weights, delays=np.full(weights.shape, s.delay, dtype=int),
                          **common)
    return Dense(weights=weights, **common)


def reset_state(lava_net: LavaNetwork) -> None:
    """Zero every neuron's u and v and every synapse's pending input between samples."""
    for lif in lava_net.lifs.values():
        lif.u.set(np.zeros(lif.u.shape, np.int32))
        lif.v.set(np.zeros(lif.v.shape, np.int32))
    for conn in lava_net.synapses.values():
        conn.a_buff.set(np.zeros(conn.a_buff.shape, np.int32))
