"""Attention memory counted off lowered networks and read off Lava processes (docs/design.md §6.2).

Three kinds of memory, each in bits:

* **neuron state**: the registers each neuron keeps, 24 bits per u and v of a LIF
  or a dendritic compartment (plus the compartment's own 12-bit decay), 24 bits for
  the v of a graded relay (``GradedVec``, ``ProdNeuron``);
* **synaptic weights**: 8 bits per stored weight: a conv's kernel once (weight
  sharing, docs/design.md §7), all of a dense matrix, the non-zeros of a sparse one;
* **delay buffers**: each synapse layer's output buffer, one entry per target
  neuron and delay slot, 16 bits for spikes and 24 for graded payloads.

The *attention* of block b is its neuron groups ``blocks.b.attn.*`` and every synapse
into them, except the projection ``blocks.b.attn.proj`` (and its delay relays), which
is the same for every variant. In dendritic mode the stream network
(:mod:`lrfdyn.loihi.dendritic`) replaces the relays between the token spikes and the
attention LIF (the dendrite's output y and the shifter that sums BN·(y + LRF(y)))
and every synapse into them and into the attention LIF; the spike generators, the
AND/gate neurons and the attention LIF's own state stay.

:func:`measured` counts this off the lowered network itself (:class:`NeuronGroup`
``state_bits``, :class:`SynapseSpec` stored weights and ``buffer_bits``, the stream
blocks' layers and sizes), so it scales to Spikformer-8-512. :func:`lava_measured` reads
the same numbers off the Lava processes the build makes (Var shapes and the weights they
hold); ``tests/sim/test_memory.py`` proves the two equal at small scale.
:func:`attention_totals` counts any lowered Spikformer's attention the same way (SSA,
LRF-SSA, STAtten, A²OS²A: the same-shape networks of :mod:`lrfdyn.memory_models`).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import COMPARTMENTS
from lrfdyn.sim.bits import GRADED_BUFFER_BITS as _GRADED_BUFFER_BITS
from lrfdyn.sim.bits import Memory, process_memory


# ---------------------------------------------------------------- counted on the lowered network


def attention_prefixes(net: Any) -> list[str]:
    """``blocks.b.attn`` of every block of a lowered Spikformer (those with an attention LIF)."""
    return [n.removesuffix(".attn_lif") for n in net.groups if n.endswith(".attn.attn_lif")]


def in_attention(group: str, prefix: str) -> bool:
    """Whether ``group`` belongs to the attention ``prefix``: named ``<prefix>.*``, but not
    the projection ``<prefix>.proj`` or one of its delay relays."""
    proj = f"{prefix}.proj"
    return group.startswith(prefix + ".") and group != proj and not group.startswith(proj + ".")


def _synapse(s: Any) -> Memory:
    from lrfdyn.loihi.ir import clock_offset

    bias = clock_offset(s.src) is not None
    return Memory(weights=s.stored_weights * fixed.WEIGHT_BITS, buffers=s.buffer_bits,
                  bias_buffers=s.buffer_bits if bias else 0)


def streamed_groups(net: Any, out_group: str) -> set[str]:
    """The relays that dendritic mode's stream replaces: the graded groups of the same
    attention reached walking back from the attention LIF ``out_group`` through graded
    groups (the shifter, the dendrite's y, any delay relay between them)."""
    prefix = out_group.rsplit(".", 1)[0]
    found: set[str] = set()
    todo = [out_group]
    while todo:
        for s in net.incoming(todo.pop()):
            g = net.groups.get(s.src)
            if g is not None and g.graded and s.src not in found and \
                    in_attention(s.src, prefix):
                found.add(s.src)
                todo.append(s.src)
    return found


def attention_memory(net: Any, prefix: str, *, streamed: set[str] = frozenset(),
                     out_group: str | None = None) -> Memory:
    """Memory of one block's attention in ``net``: its groups' state, and the weights and
    buffers of every synapse into them. Groups in ``streamed`` and every synapse into
    them or into ``out_group`` are left out (what a stream block replaces)."""
    total = Memory()
    replaced = set(streamed) | ({out_group} if out_group else set())
    for name, g in net.groups.items():
        if in_attention(name, prefix) and name not in streamed:
            total = total + Memory(state=g.state_bits)
    for s in net.synapses:
        if in_attention(s.dst, prefix) and s.dst not in replaced:
            total = total + _synapse(s)
    return total


def stream_memory(block: Any) -> Memory:
    """Memory of one stream block (:class:`~lrfdyn.loihi.dendritic.DendriticBlock`):
    compartments (u, v and their 12-bit decay), graded neurons (soma, products, relays,
    z), and every layer's stored weights (sparse: its non-zeros) and buffers. Its
    sources (tokens, masks, bias) are host-side I/O, like the parallel network's."""
    from lrfdyn.loihi.ir import clock_offset

    total = Memory()
    sizes = block.sizes()
    for name, size in sizes.items():
        bits = 2 * fixed.UV_BITS + fixed.DECAY_BITS if name == COMPARTMENTS else fixed.UV_BITS
        total = total + Memory(state=size * bits)
    for la in block.layers:
        bits = _GRADED_BUFFER_BITS if la.graded else fixed.BUFFER_BITS
        clock = clock_offset(la.src) is not None
        buffers = 0 if clock and la.delay == 0 else sizes[la.dst] * (la.delay + 1) * bits
        total = total + Memory(weights=int(la.weights.nnz) * fixed.WEIGHT_BITS, buffers=buffers,
                               bias_buffers=buffers if clock else 0)
    return total


def measured_lowered(net: Any, blocks: list[Any] | None) -> dict[str, Memory]:
    """Attention memory of a lowered LRF-Dyn network, parallel and (given its stream
    ``blocks``) dendritic, counted off the lowered network; no Lava process is built."""
    prefixes = attention_prefixes(net)
    parallel = Memory()
    for p in prefixes:
        parallel = parallel + attention_memory(net, p)
    out = {"lrf_dyn_parallel": parallel}
    if blocks is not None:
        dendritic = Memory()
        for b in blocks:
            dendritic = dendritic + attention_memory(
                net, b.name, streamed=streamed_groups(net, b.out_group),
                out_group=b.out_group) + stream_memory(b)
        out["lrf_dyn_dendritic"] = dendritic
    return out


def measured(graph: Any) -> dict[str, Memory]:
    """Attention memory of an exported LRF-Dyn graph, parallel and dendritic, counted off
    its lowered network (:func:`measured_lowered`)."""
    net, blocks, _ = lower_for_memory(graph)
    return measured_lowered(net, blocks)


def lower_for_memory(graph: Any) -> tuple[Any, list[Any] | None, str]:
    """The parallel lowering of ``graph`` and its stream blocks, with a note on how the
    streams were lowered (None blocks when they cannot be)."""
    from lrfdyn.loihi.lower import lower

    net = lower(graph)
    blocks, note = stream_blocks(graph, net)
    return net, blocks, note


def stream_blocks(graph: Any, net: Any) -> tuple[list[Any] | None, str]:
    """:func:`~lrfdyn.loihi.dendritic.lower_dendritic`, or None and the reason."""
    from lrfdyn.errors import LrfdynError
    from lrfdyn.loihi.dendritic import lower_dendritic

    try:
        return lower_dendritic(graph, net), "lowered"
    except LrfdynError as err:
        return None, f"not lowered: {err}"



def lower_with_stats(graph: Any, *, streams: bool = True,
                     progress: Callable[[str], None] | None = None
                     ) -> tuple[Any, list[Any] | None, str, dict[str, Any]]:
    """:func:`lower_for_memory`, timed: the parallel lowering, its stream blocks (skipped
    with ``streams=False``) and how they lowered, and ``stats`` (seconds per stage, the
    process's peak resident memory, group, neuron and stored-weight counts)."""
    from lrfdyn.loihi.lower import lower

    say = progress or (lambda msg: None)
    stats: dict[str, Any] = {}
    t1 = time.perf_counter()
    net = lower(graph)
    stats["lower_s"] = round(time.perf_counter() - t1, 2)
    say(f"memory: lowered in {stats['lower_s']:.1f} s; lowering the dendritic streams ...")
    t2 = time.perf_counter()
    blocks, note = stream_blocks(graph, net) if streams else (None, "none")
    stats["streams_s"] = round(time.perf_counter() - t2, 2)
    stats["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    stats["groups"] = len(net.groups)
    stats["neurons"] = int(sum(g.size for g in net.groups.values()))
    stats["synapse_layers"] = len(net.synapses)
    stats["stored_weights"] = int(sum(s.stored_weights for s in net.synapses))
    return net, blocks, note, stats


def attention_totals(net: Any) -> tuple[Memory, dict[str, int]]:
    """Attention memory of every block of a lowered Spikformer (any attention), and its
    ``attention_neurons`` and ``attention_groups``."""
    prefixes = attention_prefixes(net)
    inside = [g for n, g in net.groups.items() if any(in_attention(n, p) for p in prefixes)]
    return (sum((attention_memory(net, p) for p in prefixes), Memory()),
            {"attention_neurons": int(sum(g.size for g in inside)),
             "attention_groups": len(inside)})


# ---------------------------------------------------------------- read off Lava processes


def _feeding(proc: Any) -> list[Any]:
    """The synapse processes connected into ``proc``'s input ports (through virtual
    ports), found on the processes themselves."""
    found = []
    for port in ("a_in", "a_in1", "a_in2"):
        if hasattr(proc, port):
            found += [p.process for p in getattr(proc, port).get_src_ports()]
    return [p for p in found if hasattr(p, "a_buff") or hasattr(p, "a_buf")]


def _synapse_process_memory(syn: Any, bias_sources: list[Any]) -> Memory:
    """:func:`process_memory` of a synapse process, its buffers marked as bias buffers
    when it reads one of the bias sources."""
    mem = process_memory(syn)
    if any(p.process is b for p in syn.s_in.get_src_ports() for b in bias_sources):
        # Lava's Dense keeps an input buffer of its own; on the chip an undelayed bias
        # adds into its target's accumulator, which the data synapses already hold.
        if not hasattr(syn, "delays"):
            mem.buffers = 0
        mem.bias_buffers = mem.buffers
    return mem


def lava_measured(graph: Any) -> dict[str, Memory]:
    """The same counts as :func:`measured`, read off the Lava processes that
    :func:`~lrfdyn.loihi.build.build_lava` and :func:`~lrfdyn.loihi.build.build_streams`
    create (never run) for ``graph``. Small graphs only: Lava processes do not scale."""
    from lrfdyn.loihi.build import build_lava, build_streams
    from lrfdyn.loihi.dendritic import source_data
    from lrfdyn.loihi.ir import BIAS_SOURCE

    net, blocks, _ = lower_for_memory(graph)
    lava = build_lava(net, np.zeros((1, net.input.size), np.int64))
    try:
        def count(prefix: str, streamed: set[str], out_group: str | None) -> Memory:
            total, seen = Memory(), set()
            replaced = streamed | ({out_group} if out_group else set())
            for name, proc in lava.lifs.items():
                if not in_attention(name, prefix) or name in streamed:
                    continue
                total = total + process_memory(proc)
                if name in replaced:
                    continue
                for syn in _feeding(proc):
                    if id(syn) not in seen:
                        seen.add(id(syn))
                        total = total + _synapse_process_memory(syn, lava.bias)
            return total

        parallel = sum((count(p, set(), None) for p in attention_prefixes(net)), Memory())
        dendritic = sum((count(b.name, streamed_groups(net, b.out_group), b.out_group)
                         for b in blocks or []), Memory())
    finally:
        lava.close()
    out = {"lrf_dyn_parallel": parallel}
    if blocks is None:
        return out
    for block in blocks:
        u = np.zeros((1, block.tokens, block.d), np.int64)
        streams = build_streams(block, source_data(block, u))
        try:
            synapses = {id(p): p for n in streams.neurons.values() for p in _feeding(n)}
            bias = [streams.sources[BIAS_SOURCE]]
            for proc in streams.neurons.values():
                dendritic = dendritic + process_memory(proc)
            for proc in synapses.values():
                dendritic = dendritic + _synapse_process_memory(proc, bias)
        finally:
            streams.close()
    out["lrf_dyn_dendritic"] = dendritic
    return out
