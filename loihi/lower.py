"""Lower a NIR graph to Loihi integers: :func:`lower` returns a
:class:`~lrfdyn.loihi.ir.LoweredNetwork` (:mod:`lrfdyn.loihi.ir`).

:func:`lower` runs the stages in order, each in its own module:

1. :func:`~lrfdyn.loihi.wiring.wire` flattens the graph, discretizes its neurons and
   composes the linear nodes between them into typed terms, kept shared where hardware
   shares them (:mod:`lrfdyn.loihi.wiring`);
2. a **shifter** relay goes in front of each LIF that reads graded values (the 8-bit
   input, or a relay) through a weighted conv: Lava's fixed-point ``Conv`` has no weight
   exponent, so the conv sums at full 8-bit resolution into the shifter, which shifts
   right by its exponent (stock ``ProdNeuron`` with a constant second input), and the
   group reads it one-to-one;
3. a quantizer picks every scale and integer (:mod:`lrfdyn.loihi.quantize`);
4. latencies and delays are scheduled (:mod:`lrfdyn.loihi.schedule`).
"""

from __future__ import annotations

from contextlib import contextmanager

import nir
import numpy as np
import torch

from lrfdyn.loihi.ir import TERNARY_BITS, LoweredNetwork, NeuronGroup, SynapseSpec
from lrfdyn.loihi.layers import ConvMap, identity, is_identity
from lrfdyn.loihi.linear import Expression, Tap
from lrfdyn.loihi.neurons import NIR, Convention
from lrfdyn.loihi.quantize import Quantizer, QuantizerFactory
from lrfdyn.loihi.schedule import assign_latencies, realize_delays
from lrfdyn.loihi.wiring import GroupPlan, Wiring, is_graded, phase_pattern, wire


def lower(graph: nir.NIRGraph, conv: Convention = NIR, *, timesteps: int | None = None,
          levels: int | None = None, shared: bool = True,
          quantizer: QuantizerFactory | None = None) -> LoweredNetwork:
    """Lower a NIR graph to Loihi integers (typed synapse layers, LIF groups, relays).

    ``shared=False`` is the first lowering: every chain fused into one explicit matrix
    per (source, target), no relays; kept as the baseline that benchmarks measure against.
    ``quantizer`` replaces :class:`~lrfdyn.loihi.quantize.Quantizer` (any
    :class:`~lrfdyn.loihi.quantize.QuantizerFactory`, called as ``quantizer(wiring, plans)``):
    :class:`lrfdyn.loihi.fine.FineQuantizer` for NIR interop graphs.

    Raises:
        UnsupportedNodeError: for node types, parameters or topologies Loihi cannot run,
            naming every offending node.
        LoihiRangeError: for values that do not fit Loihi's bit widths.
        ValidationError: for malformed graphs (dangling edges, shapes, missing metadata).
    """
    with _one_thread():
        w = wire(graph, conv, timesteps=timesteps, levels=levels, shared=shared)
        plans = _with_shifters(w)
        groups, synapses = (quantizer or Quantizer)(w, plans).run()
    assign_latencies(w, groups, synapses)
    realize_delays(groups, synapses)
    _ternary_payloads(groups, synapses)
    meta = dict(w.metadata)
    substituted = [p.name for p in plans if p.dynamics is not None and p.dynamics.reset != "zero"]
    if substituted:
        # Loihi's LIF always resets to 0 in the step that spikes; what that costs is
        # measured as spike agreement against the float model, never hidden.
        meta["reset_substituted"] = {g: "zero (Loihi) for subtract_next" for g in substituted}
    return LoweredNetwork(input=w.input, groups=groups, synapses=synapses, output=w.output,
                          dt=w.dt, metadata=meta,
                          phases=phase_pattern(w.phases, w.input.timesteps) if w.phases
                          else None)


def _ternary_payloads(groups: dict[str, NeuronGroup], synapses: list[SynapseSpec]) -> None:
    """Every synapse that reads a ternary group, or a delay relay of one, reads a value:
    without message bits Lava's synapses take any non-zero payload as a +1 spike."""
    for s in synapses:
        g = groups.get(s.src)
        if g is not None and g.ternary and not s.num_message_bits:
            s.num_message_bits = TERNARY_BITS
    # A delay relay of a ternary group is graded, and realize_delays gives its readers
    # graded bits; only its own input synapse (from the ternary group) is covered above.


@contextmanager
def _one_thread():
    """Lowering's small convs run one torch thread: on a loaded machine torch's thread
    pool made one depthwise conv take 0.9 s instead of 1 ms (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_shifters(w: Wiring) -> list[GroupPlan]:
    """Plans with a shifter relay in front of each LIF that reads graded values through a
    weighted conv (Lava's Conv cannot scale its sum; the shifter can)."""
    by_name = {p.name: p for p in w.groups}
    out: list[GroupPlan] = []
    for p in w.groups:
        if p.dynamics is None:
            out.append(p)
            continue
        move = [isinstance(m, ConvMap) and not is_identity(m)
                and is_graded(w, by_name, tap.source) for tap, m in p.inputs.terms]
        if not any(move):
            out.append(p)
            continue
        name = f"{p.name}.in"
        moved = [t for t, mv in zip(p.inputs.terms, move) if mv]
        shifter = GroupPlan(name, None, Expression(moved, np.zeros(p.inputs.size),
                                                   p.inputs.shape), shifter=True)
        kept = [t for t, mv in zip(p.inputs.terms, move) if not mv]
        kept.append((Tap(name), identity(p.inputs.shape)))
        out.extend([shifter, GroupPlan(p.name, p.dynamics,
                                       Expression(kept, p.inputs.bias, p.inputs.shape))])
    return out
