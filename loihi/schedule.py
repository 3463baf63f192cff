"""Latency and delay scheduling: when each group runs and how each delay is held.

Time: group g's step t runs at Lava step ``t + latency(g)``. A synapse carries
its source ``lag`` logical steps late: 0 on a feed-forward edge, the NIR Delay
in steps behind one, and 1 on a group's edge into itself (the previous step's
spikes, as snnTorch's RLeaky). Its Lava delay makes up the rest
(:func:`assign_latencies`, :func:`realize_delays`).

Clock sources are never delayed per neuron. A Loihi bias acts from the first step, while
the input reaches a group only after its latency, so a bias synapse instead reads an
always-on source that *starts* one step before the group's latency, through an undelayed
synapse (:func:`start_clock_late`); every group of that latency shares the source. So a
bias stores its weights and no buffer, and the same holds for the phases of a block sum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import (
    DELAY_RELAY_STEPS,
    GRADED_BITS,
    ClockSource,
    NeuronGroup,
    RelayParams,
    SynapseSpec,
    clock_offset,
)

if TYPE_CHECKING:
    from lrfdyn.loihi.wiring import Wiring


def start_clock_late(s: SynapseSpec) -> None:
    """Replace a delayed synapse from a clock source (bias or phase) by an undelayed one
    from the copy of that source that starts ``delay`` steps later: one source per start
    step, shared by every group that reads it, instead of a delay buffer per neuron."""
    if isinstance(s.src, ClockSource) and s.delay > 0:
        s.src, s.delay = s.src.later(s.delay), 0


def assign_latencies(w: Wiring, groups: dict[str, Any], synapses: list[Any]) -> None:
    """Set each group's Lava latency and each synapse's delay.

    Each synapse costs Lava one step, so group g's step t runs at Lava step
    ``t + latency(g)``, with latency one more than its slowest forward source. A synapse
    whose target must see its source ``lag`` steps late (a NIR Delay, or the previous
    step's spikes on a recurrent edge) gets ``latency(dst) − latency(src) − 1 + lag``.
    Delays that Lava cannot hold as they are are given a form by :func:`realize_delays`.
    """
    latency = {w.input.name: 0}
    by_dst: dict[str, list[Any]] = {}
    for s in synapses:
        by_dst.setdefault(s.dst, []).append(s)
    for name, group in groups.items():
        inc = by_dst.get(name, [])
        for s in inc:
            s.recurrent = (s.src, name) in w.recurrent
        # The bias and the phases follow the data; they never set the pace. A lead (a
        # negative lag: a block sum reading its block's later steps) needs that many
        # steps more.
        group.latency = max(latency[s.src] + 1 + max(0, -s.lag) for s in inc
                            if clock_offset(s.src) is None and not s.recurrent)
        latency[name] = group.latency
        for s in inc:
            clock = clock_offset(s.src)
            src_latency = 0 if clock is not None else latency[s.src]
            s.delay = group.latency - src_latency - 1 + s.lag + int(s.recurrent)
            start_clock_late(s)
            if s.delay <= fixed.MAX_DELAY:
                s.validate()


def realize_delays(groups: dict[str, NeuronGroup], synapses: list[SynapseSpec]) -> None:
    """Give every delay a Lava form: Lava's ``Conv`` has no delay, and no synapse more
    than 63 steps.

    * A one-weight-per-channel conv (a one-to-one read of a relay) becomes a diagonal
      ``DelaySparse``: one weight per neuron, which is all a one-to-one synapse stores.
    * Any other delayed conv reads a *delay relay* of its source instead, a ``GradedVec``
      that repeats the source's value ``delay`` steps later; the conv itself is undelayed.
    * Delays beyond 63 steps go through chains of 64-step delay relays, shared by all
      long synapses of a source.
    * A clock source is never delayed: the synapse reads the copy that starts later
      (:func:`start_clock_late`).

    In logical time a delay relay passes the same step's value, so the integer reference
    runs it as an identity group.
    """
    relays: dict[tuple[str, int], str] = {}
    order: dict[str, list[str]] = {}

    def delay_relay(src: str, steps: int) -> str:
        """A relay that repeats ``src`` ``steps`` ≥ 1 Lava steps after src sends."""
        key = (src, steps)
        if key in relays:
            return relays[key]
        prev, left = src, steps
        if steps > DELAY_RELAY_STEPS:  # a chain of 64-step relays, then the rest
            hops = (steps - 1) // DELAY_RELAY_STEPS
            prev, left = delay_relay(src, hops * DELAY_RELAY_STEPS), steps - hops * DELAY_RELAY_STEPS
        base = groups[src]
        name = f"{src}.delay{steps}"
        groups[name] = NeuronGroup(name=name, size=base.size, params=RelayParams(0),
                                   shape=base.shape, latency=groups[prev].latency + left,
                                   spiking=False, kind="delay")
        synapses.append(SynapseSpec(
            name=f"{prev}->{name}", src=prev, dst=name,
            weights=sp.identity(base.size, format="csr", dtype=np.int64), weight_exp=0,
            delay=left - 1, num_message_bits=GRADED_BITS if groups[prev].graded else 0))
        relays[key] = name
        order.setdefault(src, []).append(name)
        return name

    for s in list(synapses):
        start_clock_late(s)
        if s.conv is not None and s.delay:
            c = s.conv
            if c.pointwise and c.depthwise:
                per_neuron = np.repeat(np.asarray(s.weights).ravel(), c.n_out // c.out_shape[0])
                s.weights = sp.diags(per_neuron, format="csr", dtype=np.int64)
                s.conv = None
            else:
                s.src = delay_relay(s.src, s.delay)
                s.num_message_bits = GRADED_BITS
                s.delay = 0
        if s.delay > fixed.MAX_DELAY:
            if s.src not in groups:
                raise ValidationError(f"synapse {s.name}: a delay of {s.delay} steps from the "
                                      "input cannot be relayed; shorten the path")
            hops = s.delay // DELAY_RELAY_STEPS
            s.src = delay_relay(s.src, hops * DELAY_RELAY_STEPS)
            s.delay -= hops * DELAY_RELAY_STEPS
            s.num_message_bits = GRADED_BITS
        s.validate()
    if order:  # keep topological order: each relay right after the group it repeats
        made = {r for rs in order.values() for r in rs}
        merged: dict[str, NeuronGroup] = {}

        def put(name: str) -> None:
            merged[name] = groups[name]
            for r in sorted(order.get(name, []), key=lambda r: groups[r].latency):
                put(r)

        for name in list(groups):
            if name not in made:
                put(name)
        groups.clear()
        groups.update(merged)
