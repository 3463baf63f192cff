"""Loihi 2 resource model: how many neuro-cores and chips a lowered network needs.

The model is stated, not measured: :class:`Loihi2Limits` holds the per-core and
per-chip limits with their sources (:data:`LIMIT_SOURCES`), :data:`SYSTEMS` the
multi-chip systems, and :func:`map_to_cores` is a pure function from a
:class:`~lrfdyn.loihi.ir.LoweredNetwork` to a :class:`ResourceMap`. No Lava
compiler is run: lava-loihi, which maps processes onto Loihi 2 cores, is not public.

**What is known** (sources in :data:`LIMIT_SOURCES` and :data:`SHARING_SOURCES`):

* a Loihi / Loihi 2 neuro-core holds a group of neurons together with *all* the
  synapses into them: synapses are stored at the destination core;
* Loihi's "hierarchical connectivity" lets one synapse list serve many axons, and
  compilers use it for convolutions: NxTF compresses models "by exploiting Loihi's
  weight sharing features"; nengo-loihi stores a conv as *population* synapses, the
  kernel slice shared by every input position whose window the image border does not
  clip (one more list per clipping pattern), and splits a conv layer over cores by
  output channels, each core getting only its channels' slice of the kernel;
* how lava-loihi encodes Lava's ``Conv`` process on Loihi 2 is not published.

**Mapping rules** (a simplification of what a Loihi 2 compiler does):

1. every neuron group (``lif``, ``relay`` or ``delay``) gets its own cores; two groups
   never share a core. A group's flat neurons (C-order, channel-major for conv outputs)
   are split contiguously into cores of ``m`` neurons each, ``m`` as large as the
   neurons-per-core and memory-per-core limits allow (found by bisection);
2. a core's memory is its neurons' state (``state_bits``: u and v at 24 bits for a
   LIF, one 24-bit value for a relay), plus for every incoming synapse layer 8 bits
   per weight *stored on that core* and ``16·(delay+1)`` buffer bits per neuron on it;
3. weights stored on a core:

   * ``dense``: the rows of its neurons, zeros included (``rows · n_src``);
   * ``sparse``: the non-zeros of its rows;
   * ``conv`` (**estimate**), rule ``channels`` (default): the filter
     (``c_in/groups · kh · kw`` weights) of every output channel with at least one
     neuron on the core, once, shared by all of that channel's positions on the core.
     A conv into a group on ``c`` cores thus stores about its kernel plus one filter per
     channel cut by a core boundary; a depthwise kernel only the channels on each core.
     Rule ``kernel`` (conservative, as if neurons were laid out channels-last): every
     core the layer serves stores the whole kernel, ``c`` copies on ``c`` cores.
     Neither counts extra copies for border positions, which nengo-loihi's Loihi 1
     population encoding needed (one list per distinct clipping of the kernel at the
     image border and per 256-compartment offset), nor axon-routing tables;

4. the input and the bias source are sent from the host / embedded x86 cores and use
   no neuro-core;
5. chips: groups in topological order (the order of ``net.groups``) fill chips of
   ``cores_per_chip`` cores, ``neurons_per_chip`` neurons and ``synapses_per_chip``
   stored weights. A group that fits in the current chip's free room goes there; one
   that does not but fits an empty chip starts a new chip; one larger than a chip fills
   the current chip's free cores, then further chips, core by core.

The network fits one chip when it is partitioned onto one chip and no single neuron's
fan-in exceeds a core. ``synapses`` counts weights as stored on the hardware (copies
included); ``weights`` counts them as the lowering stores them (each kernel once).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import ResourceError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import LoweredNetwork, NeuronGroup, SynapseSpec

_BRIEF = ("Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', "
          "Technology Brief, 2021")
_HALA = ("Intel newsroom, 17 April 2024, 'Intel Builds World's Largest Neuromorphic System' "
         "(Hala Point: 1,152 Loihi 2 processors, 1.15 billion neurons, 128 billion "
         "synapses, 140,544 neuromorphic cores), as reported by eeNews Europe and Guru3D")
_KAPOHO = ("Intel Loihi 2 announcement, September 2021: Oheo Gulch single-chip board, "
           "Kapoho Point with eight Loihi 2 chips (as reported, e.g., fbhtechinfo.com "
           "'Intel's new Loihi-2 chip uses 1 million neurons')")

#: Where each limit comes from; ``estimate`` marks figures not verified against a datasheet.
LIMIT_SOURCES: dict[str, dict[str, Any]] = {
    "neurons_per_core": {"source": _BRIEF + " (up to 8,192 neurons per neuro-core)",
                         "estimate": False},
    "memory_bits_per_core": {
        "source": _BRIEF + " (~192 KB of SRAM per neuro-core, shared by synapses, neuron "
                  "state and routing; other secondary sources on Loihi 2 say 128 KB, "
                  "flexibly partitioned)",
        "estimate": True},
    "cores_per_chip": {"source": _BRIEF + " (128 neuro-cores per chip; Hala Point's published "
                                          "140,544 cores over 1,152 chips are 122 per chip)",
                       "estimate": False},
    "neurons_per_chip": {"source": _BRIEF + " (up to 1 million neurons per chip)",
                         "estimate": False},
    "synapses_per_chip": {"source": _BRIEF + " (up to 120 million synapses per chip)",
                          "estimate": False},
}

#: What is publicly known about synapse storage and weight sharing, and what is estimated.
SHARING_SOURCES: list[dict[str, Any]] = [
    {"claim": "a neuro-core holds a group of neurons and all synapses into them "
              "(synapses are stored at the destination core)",
     "source": "M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip "
               "Learning', IEEE Micro 38(1), 2018; open-neuromorphic.org, 'Loihi 2 - Intel'",
     "estimate": False},
    {"claim": "Loihi's hierarchical (population) connectivity lets compilers share one "
              "synapse list between many axons and compress convolutions",
     "source": "Davies et al. 2018 (hierarchical connectivity); B. Rueckauer et al., 'NxTF: "
               "An API and Compiler for Deep Spiking Neural Networks on Intel Loihi', "
               "arXiv:2101.04261, 2021 (compression by Loihi's weight sharing; a 4 M-parameter "
               "MobileNet on 16 Loihi chips)",
     "estimate": False},
    {"claim": "a conv layer is split over cores by output channels; each core stores its "
              "channels' kernel slice once for all positions (population synapses), plus one "
              "list per border clipping pattern and per 256-compartment offset (Loihi 1)",
     "source": "nengo-loihi, nengo_loihi/conv.py (split_channels, split_transform, "
               "conv2d_loihi_weights) and block.py (Synapse.set_population_weights)",
     "estimate": False},
    {"claim": "Loihi 2 / lava-loihi stores a Lava Conv per destination core as the filters "
              "of the output channels on that core (rule 'channels'), or at worst the whole "
              "kernel per core (rule 'kernel'); border variants and routing not counted",
     "source": "this model; lava-loihi's Conv encoding is not public",
     "estimate": True},
]


@dataclass(frozen=True)
class Loihi2Limits:
    """Per-core and per-chip limits of Loihi 2 (see :data:`LIMIT_SOURCES`)."""

    neurons_per_core: int = 8192
    memory_bits_per_core: int = 192 * 1024 * 8
    cores_per_chip: int = 128
    neurons_per_chip: int = 1_000_000
    synapses_per_chip: int = 120_000_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValidationError(
                    f"Loihi2Limits.{f.name} must be a positive integer, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: {"value": getattr(self, f.name), **LIMIT_SOURCES[f.name]}
                for f in dataclasses.fields(self)}


#: The default model.
LOIHI2 = Loihi2Limits()


@dataclass(frozen=True)
class System:
    """A Loihi 2 system and its chip count."""

    name: str
    chips: int
    source: str


#: Loihi 2 systems, smallest first (docs/design.md §6.4).
SYSTEMS: tuple[System, ...] = (
    System("Oheo Gulch", 1, _KAPOHO),
    System("Kapoho Point", 8, _KAPOHO),
    System("Hala Point", 1152, _HALA),
)

#: How a conv layer's kernel is stored on the cores it serves (see the module docstring).
CONV_STORAGE = ("channels", "kernel")


@dataclass
class InputMapping:
    """One incoming synapse layer of a group: its weights once, and as stored on the cores."""

    name: str
    src: str
    kind: str
    weights: int
    synapses: int
    copies: float


@dataclass
class LayerMapping:
    """The cores one neuron group needs, which limit sets that number, and its chips."""

    name: str
    kind: str
    neurons: int
    #: Weights into the group as the lowering stores them (each kernel once).
    weights: int
    #: Weights into the group as stored on its cores (a kernel once per core using it).
    synapses: int
    #: State plus the average share of the cores' synaptic memory, per neuron.
    bits_per_neuron: int
    state_bits: int
    #: Synaptic memory as the lowering counts it (:func:`lrfdyn.sim.report.memory_bits`).
    synaptic_bits: int
    #: State and synaptic memory over all of the group's cores, copies included.
    core_bits: int
    #: The fullest core's memory.
    max_core_bits: int
    neurons_per_core: int
    cores_for_neurons: int
    cores_for_memory: int
    cores: int
    limited_by: str
    chips: list[int] = field(default_factory=list)
    #: ``[{"chip": i, "cores": n}, ...]``: how the group's cores lie on the chips.
    placement: list[dict[str, int]] = field(default_factory=list)
    inputs: list[InputMapping] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.neurons < 0 or self.cores < 0:
            raise ValidationError(f"layer {self.name}: negative neurons or cores")


@dataclass
class ResourceMap:
    """The whole network on Loihi 2: cores per layer, chips, and whether one chip holds it."""

    layers: list[LayerMapping]
    limits: Loihi2Limits
    cores: int
    chips: int
    neurons: int
    synapses: int
    fits_one_chip: bool
    problems: list[str] = field(default_factory=list)
    weights: int = 0
    conv_storage: str = "channels"
    #: ``[{"chip": i, "cores", "neurons", "synapses", "layers"}, ...]``.
    chip_usage: list[dict[str, int]] = field(default_factory=list)

    @property
    def systems(self) -> list[dict[str, Any]]:
        """Every system of :data:`SYSTEMS`, and whether the partition fits its chips."""
        ok = not any(": one neuron needs" in p for p in self.problems)
        return [{"name": s.name, "chips": s.chips, "fits": ok and self.chips <= s.chips,
                 "source": s.source} for s in SYSTEMS]

    @property
    def smallest_system(self) -> str | None:
        return next((s["name"] for s in self.systems if s["fits"]), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "model (stated limits; cores are computed, not compiled)",
            "cores": self.cores, "chips": self.chips, "neurons": self.neurons,
            "synapses": self.synapses, "weights": self.weights,
            "fits_one_chip": self.fits_one_chip, "problems": list(self.problems),
            "systems": self.systems, "smallest_system": self.smallest_system,
            "conv_storage": self.conv_storage,
            "chip_usage": [dict(c) for c in self.chip_usage],
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "limits": self.limits.to_dict(),
            "sharing_sources": [dict(s) for s in SHARING_SOURCES],
        }

    def summary(self, max_layers: int | None = 20) -> str:
        """The mapping as ``lrfdyn deploy --dry-run`` prints it.

        With more than ``max_layers`` groups, only the ``max_layers`` with the most cores are
        listed (in network order), then one line for the rest, a line per group kind and a
        line per chip; ``None`` lists every group.
        """
        lim = self.limits
        lines = [
            f"Loihi 2 mapping (model: {lim.neurons_per_core:,} neurons and "
            f"{lim.memory_bits_per_core // 8192:,} KB per core [memory: estimate], "
            f"{lim.cores_per_chip} cores per chip; conv kernels stored per core: "
            f"{self.conv_storage} [estimate])",
            f"{'layer':<28} {'kind':<5} {'neurons':>10} {'weights':>11} {'synapses':>12} "
            f"{'cores':>6} {'chips':>7}  limited by",
        ]
        shown = self.layers
        if max_layers is not None and len(self.layers) > max_layers:
            top = sorted(range(len(self.layers)),
                         key=lambda i: (-self.layers[i].cores, -self.layers[i].synapses))
            keep = set(top[:max_layers])
            shown = [la for i, la in enumerate(self.layers) if i in keep]
        for m in shown:
            lines.append(f"{_clip(m.name, 28):<28} {m.kind:<5} {m.neurons:>10,} {m.weights:>11,} "
                         f"{m.synapses:>12,} {m.cores:>6} {_chip_span(m.chips):>7}  "
                         f"{m.limited_by}")
        rest = [m for m in self.layers if m not in shown]
        if rest:
            lines.append(f"{f'... {len(rest)} more layers':<28} {'':<5} "
                         f"{sum(m.neurons for m in rest):>10,} "
                         f"{sum(m.weights for m in rest):>11,} "
                         f"{sum(m.synapses for m in rest):>12,} "
                         f"{sum(m.cores for m in rest):>6}  (--all-layers lists them)")
        lines.append(f"{'total':<28} {'':<5} {self.neurons:>10,} {self.weights:>11,} "
                     f"{self.synapses:>12,} {self.cores:>6} {self.chips:>7}")
        if rest:
            for kind in sorted({m.kind for m in self.layers}):
                ms = [m for m in self.layers if m.kind == kind]
                lines.append(f"  {kind}: {len(ms)} groups, {sum(m.neurons for m in ms):,} "
                             f"neurons, {sum(m.cores for m in ms):,} cores")
        if self.chips > 1:
            usage = self.chip_usage if len(self.chip_usage) <= 16 else (
                self.chip_usage[:8] + self.chip_usage[-2:])
            for c in usage:
                lines.append(f"  chip {c['chip']}: {c['cores']} cores, {c['neurons']:,} "
                             f"neurons, {c['synapses']:,} synapses, {c['layers']} "
                             f"layer{'s' if c['layers'] != 1 else ''}")
            if len(usage) < len(self.chip_usage):
                lines.append(f"  ... ({len(self.chip_usage)} chips in all)")
        verdict = ("fits one Loihi 2 chip" if self.fits_one_chip
                   else f"does NOT fit one chip (needs {self.chips} chips)")
        lines.append(f"cores {self.cores} of {lim.cores_per_chip}: {verdict}")
        if not self.fits_one_chip:
            system = self.smallest_system
            lines.append("  smallest system: " + (
                f"{system} ({next(s.chips for s in SYSTEMS if s.name == system):,} chips)"
                if system else "none of " + ", ".join(
                    f"{s.name} ({s.chips:,})" for s in SYSTEMS)))
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _chip_span(chips: list[int]) -> str:
    if not chips:
        return "-"
    return str(chips[0]) if len(chips) == 1 else f"{chips[0]}-{chips[-1]}"


# ---------------------------------------------------------------- per-core loads


def layer_bits(net: LoweredNetwork, group: str) -> tuple[int, int, int]:
    """(bits per neuron, state bits, synaptic bits) of one group as the lowering counts it.

    Synaptic bits are every weight the lowering stores (a conv's kernel once) at 8 bits,
    plus ``16·(delay+1)`` buffer bits per target neuron
    (:attr:`~lrfdyn.loihi.ir.SynapseSpec.memory_bits`); bits per neuron is the state
    plus the group's average share. The per-core count, with kernel copies, is
    :func:`map_to_cores`'s.
    """
    g = net.groups[group]
    syn = sum(s.memory_bits for s in net.incoming(group))
    per_neuron = _state_per_neuron(g) + (math.ceil(syn / g.size) if g.size else 0)
    return per_neuron, g.state_bits, syn


def _state_per_neuron(g: NeuronGroup) -> int:
    return g.state_bits // g.size if g.size else 0


def _weights_per_core(s: SynapseSpec, starts: np.ndarray, ends: np.ndarray,
                      conv_storage: str) -> np.ndarray:
    """Weights of ``s`` stored on each core holding target neurons ``[starts, ends)``."""
    rows = ends - starts
    if s.conv is not None:
        kernel = np.asarray(s.weights)
        if conv_storage == "kernel":
            return np.full(len(starts), kernel.size, np.int64)
        positions = s.conv.out_shape[1] * s.conv.out_shape[2]
        per_filter = int(np.prod(kernel.shape[1:]))
        channels = (ends - 1) // positions - starts // positions + 1
        return channels.astype(np.int64) * per_filter
    if sp.issparse(s.weights):
        indptr = sp.csr_matrix(s.weights).indptr.astype(np.int64)
        return indptr[ends] - indptr[starts]
    return rows.astype(np.int64) * s.n_src


@dataclass
class _Split:
    """A group cut into cores of ``m`` neurons: the load of every core."""

    m: int
    neurons: np.ndarray
    weights: np.ndarray  # all incoming layers together
    per_input: list[np.ndarray]
    bits: np.ndarray


def _split(g: NeuronGroup, incoming: list[SynapseSpec], m: int, conv_storage: str) -> _Split:
    starts = np.arange(0, g.size, m, dtype=np.int64)
    ends = np.minimum(starts + m, g.size)
    neurons = ends - starts
    per_input = [_weights_per_core(s, starts, ends, conv_storage) for s in incoming]
    weights = sum(per_input, np.zeros(len(starts), np.int64))
    slots = sum(s.delay + 1 for s in incoming)
    bits = (neurons * (_state_per_neuron(g) + slots * fixed.BUFFER_BITS)
            + weights * fixed.WEIGHT_BITS)
    return _Split(m=m, neurons=neurons, weights=weights, per_input=per_input, bits=bits)


def _largest_core(g: NeuronGroup, incoming: list[SynapseSpec], limit: int, memory: int,
                  conv_storage: str) -> tuple[int, bool]:
    """The most neurons per core (≤ ``limit``) whose fullest core fits ``memory`` bits, by
    bisection; ``(1, False)`` when not even one neuron per core fits."""
    def fits(m: int) -> bool:
        return int(_split(g, incoming, m, conv_storage).bits.max()) <= memory

    if fits(limit):
        return limit, True
    if not fits(1):
        return 1, False
    lo, hi = 1, limit  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, True


def _validate(net: LoweredNetwork, conv_storage: str) -> None:
    if conv_storage not in CONV_STORAGE:
        raise ValidationError(f"conv_storage must be one of {CONV_STORAGE}, got {conv_storage!r}")
    for s in net.synapses:
        if s.dst in net.groups and s.n_dst != net.groups[s.dst].size:
            raise ValidationError(
                f"synapse {s.name}: {s.n_dst} targets, but group {s.dst} has "
                f"{net.groups[s.dst].size} neurons"
            )


# ---------------------------------------------------------------- mapping


def map_to_cores(net: LoweredNetwork, limits: Loihi2Limits = LOIHI2,
                 conv_storage: str = "channels") -> ResourceMap:
    """Map every neuron group of ``net`` onto Loihi 2 cores and chips under ``limits`` (pure).

    ``conv_storage`` is ``channels`` (a core stores the filters of the output channels on
    it) or ``kernel`` (a whole kernel per core); see the module docstring.
    """
    _validate(net, conv_storage)
    incoming: dict[str, list[SynapseSpec]] = {name: [] for name in net.groups}
    for s in net.synapses:
        incoming.setdefault(s.dst, []).append(s)
    layers: list[LayerMapping] = []
    splits: list[_Split] = []
    problems: list[str] = []
    for name, group in net.groups.items():
        ins = incoming[name]
        _, state, syn = layer_bits(net, name)
        if group.size == 0:
            split = _split(group, ins, 1, conv_storage)
            by_neurons = by_memory = 0
        else:
            by_neurons = math.ceil(group.size / limits.neurons_per_core)
            m_mem, ok = _largest_core(group, ins, group.size, limits.memory_bits_per_core,
                                      conv_storage)
            if not ok:
                worst = int(_split(group, ins, 1, conv_storage).bits.max())
                problems.append(
                    f"{name}: one neuron needs {worst:,} bits of fan-in, more than a core's "
                    f"{limits.memory_bits_per_core:,}; split its input"
                )
            by_memory = math.ceil(group.size / m_mem)
            m = min(m_mem, limits.neurons_per_core)
            split = _split(group, ins, m, conv_storage)
            if ok and int(split.bits.max()) > limits.memory_bits_per_core:
                m, _ = _largest_core(group, ins, m, limits.memory_bits_per_core, conv_storage)
                split = _split(group, ins, m, conv_storage)
        weights = sum(s.stored_weights for s in ins)
        stored = int(split.weights.sum())
        core_bits = int(split.bits.sum())
        layers.append(LayerMapping(
            name=name, kind=group.kind, neurons=group.size, weights=weights, synapses=stored,
            bits_per_neuron=math.ceil(core_bits / group.size) if group.size else 0,
            state_bits=state, synaptic_bits=syn, core_bits=core_bits,
            max_core_bits=int(split.bits.max(initial=0)), neurons_per_core=split.m,
            cores_for_neurons=by_neurons, cores_for_memory=by_memory,
            cores=len(split.neurons) if group.size else 0,
            limited_by="memory" if by_memory > by_neurons else "neurons",
            inputs=[InputMapping(
                name=s.name, src=str(s.src), kind=s.kind, weights=s.stored_weights,
                synapses=int(w.sum()),
                copies=round(int(w.sum()) / s.stored_weights, 3) if s.stored_weights else 0.0)
                for s, w in zip(ins, split.per_input)],
        ))
        splits.append(split)
    chip_usage = _partition(layers, splits, limits)
    cores = sum(m.cores for m in layers)
    neurons = sum(m.neurons for m in layers)
    synapses = sum(m.synapses for m in layers)
    if cores > limits.cores_per_chip:
        problems.append(f"needs {cores} cores; one chip has {limits.cores_per_chip}")
    if neurons > limits.neurons_per_chip:
        problems.append(f"{neurons:,} neurons; one chip holds {limits.neurons_per_chip:,}")
    if synapses > limits.synapses_per_chip:
        problems.append(f"{synapses:,} synapses; one chip holds {limits.synapses_per_chip:,}")
    chips = max(1, len(chip_usage))
    if chips > 1:
        problems.append(f"partitioned onto {chips} chips")
    return ResourceMap(layers=layers, limits=limits, cores=cores, chips=chips, neurons=neurons,
                       synapses=synapses, fits_one_chip=not problems, problems=problems,
                       weights=sum(m.weights for m in layers), conv_storage=conv_storage,
                       chip_usage=chip_usage)


def _partition(layers: list[LayerMapping], splits: list[_Split],
               limits: Loihi2Limits) -> list[dict[str, int]]:
    """Place the groups' cores on chips in network order (rule 5); fills each layer's
    ``chips`` and ``placement`` and returns the use of every chip."""
    capacity = np.array([limits.cores_per_chip, limits.neurons_per_chip,
                         limits.synapses_per_chip], np.int64)
    chips: list[dict[str, int]] = []
    used = capacity.copy()  # no chip open yet: the first core opens one

    def open_chip() -> None:
        nonlocal used
        chips.append({"chip": len(chips), "cores": 0, "neurons": 0, "synapses": 0,
                      "layers": 0})
        used = np.zeros(3, np.int64)

    for layer, split in zip(layers, splits):
        if layer.cores == 0:
            continue
        loads = np.stack([np.ones(layer.cores, np.int64), split.neurons, split.weights], 1)
        total = loads.sum(axis=0)
        if np.any(used + total > capacity) and np.all(total <= capacity):
            open_chip()  # fits a chip of its own, not the rest of this one
        placement: dict[int, int] = {}
        for load in loads:
            if np.any(used + load > capacity):
                open_chip()
            used = used + load
            chip = chips[-1]
            chip["cores"] += 1
            chip["neurons"] += int(load[1])
            chip["synapses"] += int(load[2])
            placement[chip["chip"]] = placement.get(chip["chip"], 0) + 1
        for c in placement:
            chips[c]["layers"] += 1
        layer.chips = sorted(placement)
        layer.placement = [{"chip": c, "cores": n} for c, n in sorted(placement.items())]
    return chips


def require_fit(mapping: ResourceMap) -> None:
    """Raise :class:`ResourceError` (one line) unless the network fits one Loihi 2 chip."""
    if not mapping.fits_one_chip:
        raise ResourceError(
            f"the network does not fit one Loihi 2 chip: {'; '.join(mapping.problems)}; "
            "see `lrfdyn deploy --dry-run`"
        )
