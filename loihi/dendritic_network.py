"""Dendritic mode as ONE Lava network: per-token layers and token streams on one clock.

:mod:`lrfdyn.loihi.dendritic` lowers each LRF-Dyn attention to a token stream with
its k·d compartments. This module joins those streams with the per-token layers of
the parallel lowering (stem, V, attention LIF, MLP, head) into a single network:

* **One clock.** A model time step spans one *period* of ``P ≥`` every block's stream
  length Lava steps; a sample is ``T·P`` steps and samples follow back to back. Group
  g computes model step t of sample i at Lava step ``(i·T + t)·P + 1 + L_g``. Its
  latency ``L_g`` is the parallel lowering's (one step per synapse) except after an
  attention, where the stream sets it. Per-token LIFs are
  :class:`~lrfdyn.loihi.processes.clocked.ClockedLIF`: they sum their input over the
  period, update once, hold in between and reset at the end of every sample.
  Memoryless relays (stock ``GradedVec``/``ProdNeuron``) need no clock: their input
  only ever arrives at their step. Biases come from on-sources that spike once per
  period.
* **Serializer.** The block's V spikes (a neuron per token) reach the stream's
  ``tokens`` process (``GradedVec``, d) one token per step in raster order: token n
  through a ``DelaySparse`` synapse of delay n, and beyond 63 through ``GradedVec``
  relays of d neurons that each add 64 steps (``ser1``, ``ser2``, …).
* **Stream.** Exactly the stream of :mod:`lrfdyn.loihi.dendritic`, starting at
  ``σ = L_V + 1`` within the period; its compartments reset at the start of each.
* **Deserializer.** z (d values per step) fans out to a stock ``ProdNeuron`` per
  token and channel (d·N), gated by a periodic one-hot mask source: neuron (c, n)
  passes z_c only at token n's step. The attention LIF reads it one-to-one and
  accumulates it until its update after the last token, ``L_attn = σ + N + E_z``.
* **Delays.** A synapse into a relay must arrive at the relay's step (delay
  ``L_dst − L_src − 1``); one into a clocked LIF anywhere in its window, so it takes the
  smallest delay ``max(0, L_dst − L_src − P)``. Beyond 63 steps, delays go through
  the lowering's delay relays and later bias copies.

The result is plain data (:class:`DendriticNetwork`); :func:`build_dendritic_network`
makes the Lava processes, and :mod:`lrfdyn.sim.dendritic` runs and checks them.
"""

from __future__ import annotations

import dataclasses
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import (COMPARTMENTS, MASKS, PROD, RELAY_STEPS, TOKENS, Z,
                                    DendriticBlock, source_data)
from lrfdyn.loihi.ir import (
    BIAS_SOURCE,
    ClockSource,
    GRADED_BITS,
    LoweredNetwork,
    NeuronGroup,
    RelayParams,
    SynapseSpec,
    bias_offset,
)
from lrfdyn.loihi.schedule import realize_delays, start_clock_late

#: Stream processes of a block, named ``<block>.stream.<process>`` in the network.
SER, DESER, DESER_MASK = "ser", "deser", "deser_mask"




@dataclass(eq=False)
class StreamPlan:
    """One block's stream inside the network: where it starts and its extra processes."""

    block: DendriticBlock
    sigma: int  # stream step s of model step r runs at Lava step r·P + sigma + s
    ser_levels: int  # serializer relays ser1 … ser<levels> (tokens ≥ 64, ≥ 128, …)

    @property
    def name(self) -> str:
        return self.block.name

    def proc(self, local: str) -> str:
        return f"{self.block.name}.stream.{local}"

    def deser_start(self) -> np.ndarray:
        """Lava step (model step 0) at which each deserializer neuron (c·N + n) sends."""
        b = self.block
        n = np.tile(np.arange(b.tokens), b.d)
        return self.sigma + n + b.offsets[Z] + 1


@dataclass(eq=False)
class DendriticNetwork:
    """The whole LRF-Dyn network in dendritic mode, as plain data."""

    net: LoweredNetwork  # the parallel lowering it came from (its groups keep their names)
    groups: dict[str, NeuronGroup]  # per-token side, with this network's latencies
    synapses: list[SynapseSpec]
    streams: list[StreamPlan]
    period: int
    #: Delay relay -> the group whose values it repeats (in model time: the same values).
    repeats: dict[str, str] = field(default_factory=dict)

    @property
    def timesteps(self) -> int:
        return self.net.input.timesteps

    @property
    def sample_steps(self) -> int:
        """Lava steps per sample once the pipeline is full (the throughput)."""
        return self.timesteps * self.period

    @property
    def latency(self) -> int:
        return max(g.latency for g in self.groups.values())

    @property
    def fill_steps(self) -> int:
        """Steps after the last sample until every group has made its last update."""
        return self.latency + 1

    def sample_latency(self) -> int:
        """Lava steps from a sample's first input to the head's last update for it."""
        return (self.timesteps - 1) * self.period + self.groups[self.net.output].latency + 1

    def bias_sources(self) -> list[ClockSource]:
        """The bias sources the synapses read, by start step."""
        return sorted({s.src for s in self.synapses if bias_offset(s.src) is not None})


def _fed_only_by_the_dendrite(net: LoweredNetwork, block: DendriticBlock) -> set[str]:
    """The parallel path into the attention LIF that the stream replaces: graded groups
    upstream of it whose every consumer is on that path."""
    consumers: dict[str, set[str]] = {}
    for s in net.synapses:
        consumers.setdefault(s.src, set()).add(s.dst)
    removed: set[str] = set()
    todo = [block.out_group]
    while todo:
        for s in net.incoming(todo.pop()):
            g = net.groups.get(s.src)
            if g is None or not g.graded or s.src in removed:
                continue
            if consumers.get(s.src, set()) <= removed | {block.out_group}:
                removed.add(s.src)
                todo.append(s.src)
    return removed


def lower_network(net: LoweredNetwork, blocks: list[DendriticBlock], *,
                  period: int | None = None) -> DendriticNetwork:
    """Join ``net``'s per-token layers and ``blocks``' streams into one network.

    Raises:
        UnsupportedNodeError: for features the clocked network does not express yet
            (a NIR Delay, a recurrent edge, an existing delay relay).
    """
    for s in net.synapses:
        if s.lag or s.recurrent:
            raise UnsupportedNodeError(f"synapse {s.name}: NIR delays and recurrent edges are "
                                       "not supported in dendritic mode")
    if any(g.kind == "delay" for g in net.groups.values()):
        raise UnsupportedNodeError("the parallel lowering already needed delay relays; the "
                                   "one dendritic network rebuilds its delays and refuses them")
    p = max(b.stream_steps for b in blocks)
    period = p if period is None else period
    if period < p:
        raise ValidationError(f"period {period} is shorter than a stream ({p} steps)")
    by_out = {b.out_group: b for b in blocks}
    removed: set[str] = set()
    for b in blocks:
        removed |= _fed_only_by_the_dendrite(net, b)
    groups = {n: dataclasses.replace(g) for n, g in net.groups.items() if n not in removed}
    synapses = [dataclasses.replace(s) for s in net.synapses
                if s.src not in removed and s.dst not in removed and s.dst not in by_out]
    for s in synapses:  # every bias from the on-source; delays are recomputed below
        if bias_offset(s.src) is not None:
            s.src = BIAS_SOURCE
    incoming: dict[str, list[SynapseSpec]] = {}
    for s in synapses:
        incoming.setdefault(s.dst, []).append(s)
    lat: dict[str, int] = {net.input.name: 0, BIAS_SOURCE: 0}
    streams: list[StreamPlan] = []
    for name, g in groups.items():
        if name in by_out:
            b = by_out[name]
            sigma = lat[b.u_group] + 1
            streams.append(StreamPlan(b, sigma, (b.tokens - 1) // RELAY_STEPS))
            g.latency = sigma + b.tokens + b.offsets[Z]
        else:
            g.latency = max(lat[s.src] + 1 for s in incoming[name] if s.src != BIAS_SOURCE)
        lat[name] = g.latency
    for s in synapses:
        gap = lat[s.dst] - lat[s.src]
        s.delay = gap - 1 if groups[s.dst].graded else max(0, gap - period)
        start_clock_late(s)
    for s in synapses:  # Lava's Conv has no delay; these become DelaySparse or relays
        if s.delay <= fixed.MAX_DELAY and not (s.conv is not None and s.delay):
            s.validate()
    before = set(groups)
    realize_delays(groups, synapses)
    repeats = {}
    for s in synapses:
        if s.dst in groups and s.dst not in before:
            repeats[s.dst] = repeats.get(s.src, s.src)
    # chains: follow to the root
    for r in list(repeats):
        root = repeats[r]
        while root in repeats:
            root = repeats[root]
        repeats[r] = root
    return DendriticNetwork(net=net, groups=groups, synapses=synapses, streams=streams,
                            period=period, repeats=repeats)


# ---------------------------------------------------------------- sources


def source_schedules(dn: DendriticNetwork, x: np.ndarray, *, deser_shift: int = 0,
                     extra: int | None = None) -> dict[str, np.ndarray]:
    """What every source sends, ``name -> (size, steps)`` int32 (column j = Lava step j + 1).

    ``deser_shift`` moves the deserializer's masks by that many steps (a test that the
    check catches a phase error).
    """
    n_samples = len(x)
    T, P = dn.timesteps, dn.period
    streams = n_samples * T
    total = n_samples * dn.sample_steps + (dn.fill_steps if extra is None else extra)
    cols = np.arange(streams) * P  # model step r's input goes out at column r·P
    out: dict[str, np.ndarray] = {}
    inp = np.zeros((dn.net.input.size, total), np.int32)
    xs = np.asarray(x, np.int64)
    per_step = xs if xs.ndim == 3 else np.repeat(xs[:, None], T, axis=1)
    inp[:, cols] = per_step.reshape(streams, -1).T
    out[dn.net.input.name] = inp
    for name in dn.bias_sources():
        on = np.zeros((1, total), np.int32)
        on[0, cols + bias_offset(name)] = 1
        out[name] = on
    for plan in dn.streams:
        b = plan.block
        data = source_data(b, np.zeros((1, b.tokens, b.d), np.int64), period=P)
        for src in (MASKS, BIAS_SOURCE):
            one = data[src][0].T.astype(np.int32)  # (size, P), identical for every stream
            sched = np.zeros((one.shape[0], total), np.int32)
            for r in range(streams):
                start = r * P + plan.sigma
                sched[:, start:start + P] = one
            out[plan.proc(src)] = sched
        mask = np.zeros((b.tokens, total), np.int32)
        n = np.arange(b.tokens)
        for r in range(streams):
            # Sent one step before the deserializer computes with it, with z_n.
            mask[n, r * P + plan.sigma + n + b.offsets[Z] - 1 + deser_shift] = 1
        out[plan.proc(DESER_MASK)] = mask
    return out


# ---------------------------------------------------------------- stream and glue layers


def stream_synapses(plan: StreamPlan, u_size: int) -> list[tuple[str, str, SynapseSpec]]:
    """``(src, dst, spec)`` of the serializer, the stream and the deserializer, with
    network-wide process names (ports in ``spec.port``)."""
    b = plan.block
    d, n_tok = b.d, b.tokens
    out: list[tuple[str, str, SynapseSpec]] = []

    def add(src: str, dst: str, name: str, w, exp: int = 0, delay: int = 0, bits: int = 0,
            port: str = "a_in", delays=None) -> None:
        spec = SynapseSpec(name=f"{b.name}.{name}", src=src, dst=dst, weights=sp.csr_matrix(w),
                           weight_exp=exp, delay=delay, num_message_bits=bits, port=port)
        spec.delays = delays  # per-synapse delays of a serializer layer (or None)
        out.append((src, dst, spec))

    # Serializer: V neuron c·N + n -> tokens (or relay ser<j>) channel c, delay n − 64j.
    ch = np.repeat(np.arange(d), n_tok)
    tok = np.tile(np.arange(n_tok), d)
    for j in range(plan.ser_levels + 1):
        sel = (tok // RELAY_STEPS) == j
        if not sel.any():
            continue
        dst = plan.proc(TOKENS if j == 0 else f"{SER}{j}")
        w = sp.csr_matrix((np.ones(sel.sum(), np.int64), (ch[sel], np.flatnonzero(sel))),
                          shape=(d, d * n_tok))
        dl = sp.csr_matrix((tok[sel] - RELAY_STEPS * j, (ch[sel], np.flatnonzero(sel))),
                           shape=(d, d * n_tok))
        add(b.u_group, dst, f"serialize{j}", w, delay=int(dl.data.max(initial=0)), delays=dl)
        if j:
            prev = plan.proc(TOKENS if j == 1 else f"{SER}{j - 1}")
            add(dst, prev, f"ser{j}->{'tokens' if j == 1 else f'ser{j - 1}'}",
                sp.identity(d, np.int64), delay=fixed.MAX_DELAY, bits=GRADED_BITS)
    # The stream itself; tokens now come from a graded relay.
    for la in b.layers:
        src_name = plan.proc(la.src)  # masks and bias are the block's own sources
        bits = GRADED_BITS if (la.graded or la.src == TOKENS) else 0
        add(src_name, plan.proc(la.dst), f"stream.syn.{la.name}", la.weights, la.weight_exp,
            la.delay, bits, la.port)
    # Deserializer: z_c -> (c, n) on a_in1, the mask of token n on a_in2, then one-to-one.
    rows = np.arange(d * n_tok)
    add(plan.proc(Z), plan.proc(DESER), "deser.z",
        sp.csr_matrix((np.ones(d * n_tok, np.int64), (rows, ch)), shape=(d * n_tok, d)),
        bits=GRADED_BITS, port="a_in1")
    add(plan.proc(DESER_MASK), plan.proc(DESER), "deser.mask",
        sp.csr_matrix((np.ones(d * n_tok, np.int64), (rows, tok)), shape=(d * n_tok, n_tok)),
        port="a_in2")
    add(plan.proc(DESER), b.out_group, "deser->attn", sp.identity(d * n_tok, np.int64),
        bits=GRADED_BITS)
    assert u_size == d * n_tok
    return out


def stream_sizes(plan: StreamPlan) -> dict[str, tuple[str, int]]:
    """Network name -> (Lava process type, neurons) of a block's stream processes."""
    b = plan.block
    out = {plan.proc(TOKENS): ("GradedVec", b.d)}
    for j in range(1, plan.ser_levels + 1):
        out[plan.proc(f"{SER}{j}")] = ("GradedVec", b.d)
    for name, size in b.sizes().items():
        kind = ("DendriteCompartments" if name == COMPARTMENTS else
                "ProdNeuron" if name.startswith(PROD + ".") else "GradedVec")
        out[plan.proc(name)] = (kind, size)
    out[plan.proc(DESER)] = ("ProdNeuron", b.d * b.tokens)
    return out


# ---------------------------------------------------------------- Lava processes


@dataclass(eq=False)
class LavaDendriticNetwork:
    """The built processes of a :class:`DendriticNetwork`, with recordings.

    ``phase[name]`` (per-token groups and deserializers): ``(rows + 1, size)``; row r is
    what the process sent at its update of model step r, the last row counts non-zero
    values at every other step. ``full[name]`` (stream processes): ``(steps, size)``.
    """

    sources: dict[str, Any]
    neurons: dict[str, Any]
    synapses: dict[str, Any]
    phase: dict[str, np.memmap]
    full: dict[str, np.memmap]
    kinds: dict[str, str]
    steps: int
    folder: Path

    @property
    def runner(self) -> Any:
        return next(iter(self.sources.values()))

    def close(self) -> None:
        self.phase.clear()
        self.full.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def build_dendritic_network(dn: DendriticNetwork, x: np.ndarray, *,
                            deser_shift: int = 0) -> LavaDendriticNetwork:
    """Create (not compile) every process of ``dn`` for samples ``x``."""
    from lava.proc.graded.process import GradedVec
    from lava.proc.io.source import RingBuffer
    from lava.proc.prodneuron.process import ProdNeuron
    from lava.proc.sparse.process import DelaySparse

    from lrfdyn.loihi.build import connect_synapse, input_port, recording_folder, relay_process
    from lrfdyn.loihi.processes.clocked import ClockedLIF, PhaseRecorder, open_phase_recording
    from lrfdyn.loihi.processes.compartment import DendriteCompartments
    from lrfdyn.loihi.processes.recorder import SpikeRecorder, open_recording

    sched = source_schedules(dn, x, deser_shift=deser_shift)
    steps = next(iter(sched.values())).shape[1]
    rows = len(x) * dn.timesteps
    P = dn.period
    sources = {name: RingBuffer(data=data) for name, data in sched.items()}
    folder = recording_folder()
    neurons: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for name, g in dn.groups.items():
        if g.graded:  # the same stock graded neurons as the parallel network's
            neurons[name] = relay_process(name, g, folder, steps)
        else:
            prm = g.params
            if np.any(prm.bias_mant):
                raise ValidationError(f"{name}: a neuron bias would act at every update; "
                                      "the lowering sends biases as synapses")
            neurons[name] = ClockedLIF(shape=(g.size,), du=prm.du, dv=prm.dv, vth=prm.vth,
                                       period=P, start=1 + g.latency,
                                       reset_every=dn.timesteps, name=name)
        kinds[name] = type(neurons[name]).__name__
    for plan in dn.streams:
        b = plan.block
        for name, (kind, size) in stream_sizes(plan).items():
            if kind == "DendriteCompartments":
                proc = DendriteCompartments(shape=(size,), dv=b.dv, reset_interval=P,
                                            reset_phase=plan.sigma + 1, name=name)
            elif kind == "ProdNeuron":
                proc = ProdNeuron(shape=(size,), vth=0, exp=0)
            else:
                proc = GradedVec(shape=(size,), vth=0, exp=0)
            neurons[name] = proc
            kinds[name] = kind

    def port_of(src: str):
        return sources[src].s_out if src in sources else neurons[src].s_out

    synapses: dict[str, Any] = {}
    for s in dn.synapses:
        synapses[s.name] = connect_synapse(s, port_of(s.src),
                                           input_port(neurons[s.dst], s.port))
    for plan in dn.streams:
        for src, dst, s in stream_synapses(plan, dn.groups[plan.block.u_group].size):
            if getattr(s, "delays", None) is not None:  # the serializer: a delay per token
                w = s.weights.astype(np.int32).tocsr()
                proc = DelaySparse(weights=w, delays=s.delays.astype(int).tocsr(),
                                   weight_exp=0, num_message_bits=s.num_message_bits,
                                   name=s.name)
                port_of(src).connect(proc.s_in)
                proc.a_out.connect(input_port(neurons[dst], s.port))
                synapses[s.name] = proc
            else:
                synapses[s.name] = connect_synapse(s, port_of(src),
                                                   input_port(neurons[dst], s.port))
    phase: dict[str, np.memmap] = {}
    full: dict[str, np.memmap] = {}
    recorders = []
    stream_names = {n for plan in dn.streams for n in stream_sizes(plan)}
    deser_starts = {plan.proc(DESER): plan.deser_start() for plan in dn.streams}
    for i, (name, proc) in enumerate(neurons.items()):
        size = int(np.prod(proc.s_out.shape))
        if name in stream_names and name not in deser_starts:
            path = str(folder / f"full{i}.int32")
            full[name] = open_recording(path, steps, size, graded=True)
            rec = SpikeRecorder(shape=(size,), steps=steps, path=path, graded=True)
        else:
            start = deser_starts.get(name, 1 + dn.groups[name].latency
                                     if name in dn.groups else 0)
            path = str(folder / f"phase{i}.int32")
            phase[name] = open_phase_recording(path, rows, size)
            rec = PhaseRecorder(shape=(size,), rows=rows, period=P, start=start, path=path)
        proc.s_out.connect(rec.a_in)
        recorders.append(rec)
    lava_net = LavaDendriticNetwork(sources, neurons, synapses, phase, full, kinds, steps,
                                    folder)
    weakref.finalize(lava_net, shutil.rmtree, folder, True)
    return lava_net


def dendritic_models() -> dict[type, Any]:
    """``exception_proc_model_map`` for the one network on Lava's CPU backend."""
    from lrfdyn.loihi.processes import cpu_models
    from lrfdyn.loihi.processes.clocked import CLOCKED_MODELS

    return {**cpu_models(), **CLOCKED_MODELS}


# ---------------------------------------------------------------- one graph, for mapping


@dataclass(eq=False)
class CountedGroup(NeuronGroup):
    """A process of the one network as a group for :func:`~lrfdyn.loihi.resources.map_to_cores`,
    with its own count of 24-bit state words (a clocked LIF keeps u, v and its window's
    sum; a compartment u and v; graded neurons one)."""

    words: int = 1

    @property
    def state_bits(self) -> int:
        return self.size * self.words * fixed.UV_BITS


def as_lowered(dn: DendriticNetwork) -> LoweredNetwork:
    """The whole dendritic network (per-token side, serializers, streams, deserializers)
    as one :class:`LoweredNetwork`: what ``deploy --dry-run --mode dendritic`` maps."""
    groups: dict[str, NeuronGroup] = {}
    for name, g in dn.groups.items():
        groups[name] = CountedGroup(name=name, size=g.size, params=g.params, latency=g.latency,
                                    shape=g.shape, kind=g.kind, words=1 if g.graded else 3)
    synapses = list(dn.synapses)
    for plan in dn.streams:
        for name, (kind, size) in stream_sizes(plan).items():
            local = name[len(plan.proc("")):]
            role = ("compartment" if kind == "DendriteCompartments" else
                    "deserializer" if local == DESER else
                    "serializer" if local == TOKENS or local.startswith(SER) else "stream")
            groups[name] = CountedGroup(name=name, size=size, params=RelayParams(), kind=role,
                                        words=2 if role == "compartment" else 1)
        synapses += [s for _, _, s in stream_synapses(plan, dn.groups[plan.block.u_group].size)]
    return LoweredNetwork(input=dn.net.input, groups=groups, synapses=synapses,
                          output=dn.net.output, dt=dn.net.dt,
                          metadata={**dn.net.metadata, "mode": "dendritic",
                                    "period": dn.period})


# ---------------------------------------------------------------- copies


def network_neurons(dn: DendriticNetwork) -> int:
    """Neurons of the one network (per-token groups, stream processes, the input)."""
    return (dn.net.input.size + sum(g.size for g in dn.groups.values())
            + sum(size for plan in dn.streams for _, size in stream_sizes(plan).values()))


def choose_network_copies(dn: DendriticNetwork, samples: int | None = None) -> int:
    """Copies of the one network per Lava run, sized like the parallel network's
    (:data:`lrfdyn.loihi.copies.NEURON_BUDGET` neurons, at most ``MAX_COPIES``, at most
    ``samples``); 1 where a layer cannot be copied."""
    from lrfdyn.loihi.copies import copies_for, fits_copies

    return copies_for(network_neurons(dn), samples) if fits_copies(dn.net) else 1


def copy_dendritic_network(dn: DendriticNetwork, copies: int) -> DendriticNetwork:
    """``dn`` with ``copies`` independent copies side by side in every process.

    The per-token side is :func:`~lrfdyn.loihi.copies.copy_network` of the parallel
    lowering, each stream :func:`~lrfdyn.loihi.copies.copy_block` (channels
    ``d → copies·d``; the masks and the stream bias, the same for every copy, shared);
    then the same joining. Copy-major everywhere: V neuron ``j·d·N + c·N + n`` of copy j is
    channel ``j·d + c`` of the copied stream, so serializer, deserializer and attention
    LIF keep every copy's neurons apart. The clock (period, latencies, delays) is the
    original's, so a block of ``copies`` samples takes the Lava steps of one.
    """
    from lrfdyn.loihi.copies import copy_block, copy_network

    if copies < 1:
        raise ValidationError(f"copies must be at least 1, got {copies}")
    if copies == 1:
        return dn
    shared = (MASKS, BIAS_SOURCE)
    out = lower_network(copy_network(dn.net, copies),
                        [copy_block(p.block, copies, shared) for p in dn.streams],
                        period=dn.period)
    # Same clock: any difference would break the per-sample equality.
    assert {n: g.latency for n, g in out.groups.items()} == \
        {n: g.latency for n, g in dn.groups.items()}
    assert [p.sigma for p in out.streams] == [p.sigma for p in dn.streams]
    return out
