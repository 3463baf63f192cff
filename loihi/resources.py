"""Loihi 2 resource model: how many neuro-cores (and chips) a lowered network needs.

The model is stated, not measured: :class:`Loihi2Limits` holds the per-core and
per-chip limits with their sources, and :func:`map_to_cores` is a pure function
from a :class:`~lrfdyn.loihi.lower.LoweredNetwork` to a :class:`ResourceMap`.

Mapping rules (a simplification of what Lava's Loihi 2 compiler does):

* every neuron group gets its own cores (two groups never share a core);
* a core holds neurons together with *all* their incoming synapses (Loihi
  stores synapses at the destination core);
* one neuron costs ``b = 2·24`` state bits (u, v) plus its share of the group's
  synaptic memory: 8 bits per stored weight and ``16·(delay+1)`` buffer bits per
  incoming layer (the same accounting as :func:`lrfdyn.sim.report.memory_bits`);
* a group of ``n`` neurons then needs
  ``cores = max(⌈n / neurons_per_core⌉, ⌈n / ⌊memory_per_core / b⌋⌉)``;
* the input and the bias source are sent from the host / embedded x86 cores
  and use no neuro-core.

The network fits one chip when the cores, neurons and synapses are all within
the chip's limits.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lrfdyn.errors import ResourceError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.lower import LoweredNetwork

_BRIEF = ("Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', "
          "Technology Brief, 2021")

#: Where each limit comes from; ``estimate`` marks figures not verified against a datasheet.
LIMIT_SOURCES: dict[str, dict[str, Any]] = {
    "neurons_per_core": {"source": _BRIEF + " (up to 8,192 neurons per neuro-core)",
                         "estimate": False},
    "memory_bits_per_core": {
        "source": _BRIEF + " (~192 KB of SRAM per neuro-core, shared by synapses, neuron "
                  "state and routing; other secondary sources say 128 KB)",
        "estimate": True},
    "cores_per_chip": {"source": _BRIEF + " (128 neuro-cores per chip)", "estimate": False},
    "neurons_per_chip": {"source": _BRIEF + " (up to 1 million neurons per chip)",
                         "estimate": False},
    "synapses_per_chip": {"source": _BRIEF + " (up to 120 million synapses per chip)",
                          "estimate": False},
}


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


@dataclass
class LayerMapping:
    """The cores one neuron group needs, and which limit sets that number."""

    name: str
    neurons: int
    synapses: int
    bits_per_neuron: int
    state_bits: int
    synaptic_bits: int
    cores_for_neurons: int
    cores_for_memory: int
    cores: int
    limited_by: str

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "model (stated limits; cores are computed, not compiled)",
            "cores": self.cores, "chips": self.chips, "neurons": self.neurons,
            "synapses": self.synapses, "fits_one_chip": self.fits_one_chip,
            "problems": list(self.problems),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "limits": self.limits.to_dict(),
        }

    def summary(self) -> str:
        """A per-layer table and a verdict, as ``lrfdyn deploy --dry-run`` prints it."""
        lim = self.limits
        lines = [
            f"Loihi 2 mapping (model: {lim.neurons_per_core:,} neurons and "
            f"{lim.memory_bits_per_core // 8192:,} KB per core [memory: estimate], "
            f"{lim.cores_per_chip} cores per chip)",
            f"{'layer':<16} {'neurons':>9} {'synapses':>11} {'bits/neuron':>12} "
            f"{'cores':>6}  limited by",
        ]
        for m in self.layers:
            lines.append(f"{m.name:<16} {m.neurons:>9,} {m.synapses:>11,} "
                         f"{m.bits_per_neuron:>12,} {m.cores:>6}  {m.limited_by}")
        lines.append(f"{'total':<16} {self.neurons:>9,} {self.synapses:>11,} {'':>12} "
                     f"{self.cores:>6}")
        verdict = ("fits one Loihi 2 chip" if self.fits_one_chip
                   else f"does NOT fit one chip (needs {self.chips} chips)")
        lines.append(f"cores {self.cores} of {lim.cores_per_chip}: {verdict}")
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


def layer_bits(net: LoweredNetwork, group: str) -> tuple[int, int, int]:
    """(bits per neuron, state bits, synaptic bits) of one group, incoming synapses included.

    Synaptic bits are every *stored* weight (a dense matrix stores all of them, a
    sparse one its non-zeros) at 8 bits, plus ``16·(delay+1)`` buffer bits per
    target neuron; bits per neuron is the state plus the group's average share.
    """
    g = net.groups[group]
    syn = sum(s.memory_bits for s in net.incoming(group))
    per_neuron = 2 * fixed.UV_BITS + (math.ceil(syn / g.size) if g.size else 0)
    return per_neuron, g.state_bits, syn


def map_to_cores(net: LoweredNetwork, limits: Loihi2Limits = LOIHI2) -> ResourceMap:
    """Map every neuron group of ``net`` onto Loihi 2 cores under ``limits`` (pure)."""
    layers: list[LayerMapping] = []
    problems: list[str] = []
    for name, group in net.groups.items():
        bits, state, syn = layer_bits(net, name)
        synapses = sum(s.stored_weights for s in net.incoming(name))
        by_neurons = math.ceil(group.size / limits.neurons_per_core)
        per_core = limits.memory_bits_per_core // bits
        if per_core == 0:
            problems.append(
                f"{name}: one neuron needs {bits:,} bits of fan-in, more than a core's "
                f"{limits.memory_bits_per_core:,}; split its input"
            )
            by_memory = group.size  # at least one core per neuron, and still too little
        else:
            by_memory = math.ceil(group.size / per_core)
        cores = max(by_neurons, by_memory)
        layers.append(LayerMapping(
            name=name, neurons=group.size, synapses=synapses, bits_per_neuron=bits,
            state_bits=state, synaptic_bits=syn, cores_for_neurons=by_neurons,
            cores_for_memory=by_memory, cores=cores,
            limited_by="memory" if by_memory > by_neurons else "neurons",
        ))
    cores = sum(m.cores for m in layers)
    neurons = sum(m.neurons for m in layers)
    synapses = sum(m.synapses for m in layers)
    if cores > limits.cores_per_chip:
        problems.append(f"needs {cores} cores; one chip has {limits.cores_per_chip}")
    if neurons > limits.neurons_per_chip:
        problems.append(f"{neurons:,} neurons; one chip holds {limits.neurons_per_chip:,}")
    if synapses > limits.synapses_per_chip:
        problems.append(f"{synapses:,} synapses; one chip holds {limits.synapses_per_chip:,}")
    chips = max(1, math.ceil(cores / limits.cores_per_chip),
                math.ceil(neurons / limits.neurons_per_chip),
                math.ceil(synapses / limits.synapses_per_chip))
    return ResourceMap(layers=layers, limits=limits, cores=cores, chips=chips, neurons=neurons,
                       synapses=synapses, fits_one_chip=not problems, problems=problems)


def require_fit(mapping: ResourceMap) -> None:
    """Raise :class:`ResourceError` (one line) unless the network fits one Loihi 2 chip."""
    if not mapping.fits_one_chip:
        raise ResourceError(
            f"the network does not fit one Loihi 2 chip: {'; '.join(mapping.problems)}; "
            "see `lrfdyn deploy --dry-run`"
        )
