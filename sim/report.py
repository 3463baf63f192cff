"""Reports are data: spike comparison, accuracy, operation counts and memory of one run.

Counts are computed from recorded spikes (Lava's CPU backend has no hardware
counters). The counting window is the T input steps of each sample, in logical
time, which is the same window on Lava (shifted by each group's latency) and
on the integer reference, so both give identical counts when the spikes match.

* SynOps: Σ over synapse layers and steps of (incoming events × fan-out), where
  an event is a spike or a non-zero graded payload, and fan-out counts the
  non-zero weights leaving that source neuron.
* Neuron updates: neurons × steps.
* State memory: u and v of every LIF neuron at 24 bits each, one 24-bit value per
  relay neuron.
* Synaptic memory: every stored weight at 8 bits (a Conv layer stores its kernel
  once, a Dense layer its full matrix, a Sparse one its non-zeros), plus the synapse
  output buffers (16 bits per target neuron and delay slot).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrfdyn.loihi.ir import LOWERING_VERSION, LoweredNetwork, SynapseSpec, bias_offset, phase_offset


@dataclass
class Mismatch:
    """The first disagreement found in one layer."""

    layer: str
    sample: int
    step: int
    neuron: int
    #: What each side sent there: a spike (bool), or a graded neuron's value (int).
    lava: bool | int
    reference: bool | int
    count: int


@dataclass
class LayerStats:
    name: str
    neurons: int
    spikes: int
    firing_rate: float
    synops_in: int
    mismatches: int


@dataclass
class SimReport:
    """The result of ``lrfdyn simulate``; ``to_dict`` is what ``--json`` prints."""

    samples: int
    timesteps: int
    latency: int
    mismatches: int
    lava_accuracy: float | None
    reference_accuracy: float
    float_accuracy: float | None
    predictions_equal: bool | None
    synops: int
    synops_per_sample: float
    neurons: int
    neuron_updates: int
    state_memory_bits: int
    synaptic_memory_bits: int
    layers: list[LayerStats]
    first_mismatch: Mismatch | None = None
    timings: dict[str, float] = field(default_factory=dict)
    quantization: list[dict[str, Any]] = field(default_factory=list)
    lowering_version: int = LOWERING_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """A short human summary, one fact per line."""
        lines = [
            f"samples            {self.samples} (T = {self.timesteps}, latency {self.latency})",
            f"spike mismatches   {self.mismatches} (every neuron, every step, every layer)"
            if self.predictions_equal is not None else
            "spike mismatches   n/a (no Lava run to compare with)",
            f"accuracy  float    {percent(self.float_accuracy)}",
            f"          integer  {percent(self.reference_accuracy)} (reference executor)",
            f"          Lava     {percent(self.lava_accuracy)} (fixed_pt)",
            f"SynOps / sample    {self.synops_per_sample:,.0f}",
            f"neurons            {self.neurons:,}",
            f"state memory       {self.state_memory_bits:,} bits",
            f"synaptic memory    {self.synaptic_memory_bits:,} bits",
        ]
        if self.first_mismatch is not None:
            m = self.first_mismatch
            lines.append(
                f"FIRST MISMATCH     layer {m.layer} sample {m.sample} step {m.step} "
                f"neuron {m.neuron}: lava={m.lava} reference={m.reference}"
            )
        if "samples_per_s" in self.timings:
            lines.append(f"Lava speed         {self.timings['samples_per_s']:.2f} samples/s")
        return "\n".join(lines)


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with two decimals, or n/a."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f} %"


def memory_bits(net: LoweredNetwork) -> tuple[int, int]:
    """(state bits, synaptic bits) of the lowered network, as Lava stores it."""
    return (sum(g.state_bits for g in net.groups.values()),
            sum(s.memory_bits for s in net.synapses))


def source_events(net: LoweredNetwork, s: SynapseSpec, spikes: dict[str, np.ndarray],
                  x: np.ndarray, timesteps: int) -> np.ndarray:
    """Events each source neuron of synapse ``s`` sent over the first ``timesteps`` steps
    of every sample: spikes, or non-zero payloads of a relay or the graded input."""
    if bias_offset(s.src) is not None:
        return np.full((1,), len(x) * timesteps, np.int64)
    if phase_offset(s.src) is not None:
        return net.phases[:timesteps].sum(axis=0).astype(np.int64) * len(x)
    if s.src == net.input.name:
        x = np.asarray(x)
        if x.ndim == 3:  # (N, T, size): a different input at each step
            return np.count_nonzero(x[:, :timesteps], axis=(0, 1)).astype(np.int64)
        return np.count_nonzero(x, axis=0).astype(np.int64) * timesteps
    return np.count_nonzero(spikes[s.src][:, :timesteps], axis=(0, 1)).astype(np.int64)


def count_synops(
    net: LoweredNetwork, spikes: dict[str, np.ndarray], x: np.ndarray, timesteps: int
) -> dict[str, int]:
    """SynOps into each group over the first ``timesteps`` logical steps of every sample.

    Args:
        spikes: reference-aligned spikes per group, (N, ≥timesteps, size).
        x: the integer input payloads, (N, input_size) present at every input step, or
            (N, T, input_size) one per step.
    """
    per_group = {g: 0 for g in net.groups}
    for s in net.synapses:
        events = source_events(net, s, spikes, x, timesteps)
        per_group[s.dst] += int(events @ s.fan_out.astype(np.int64))
    return per_group


def first_mismatches(
    lava: dict[str, np.ndarray], reference: dict[str, np.ndarray], net: LoweredNetwork
) -> tuple[dict[str, int], Mismatch | None]:
    """Compare every group at every step it ran: Lava step t + latency == reference step t."""
    counts: dict[str, int] = {}
    first: Mismatch | None = None
    for name, group in net.groups.items():
        lat = group.latency
        got = lava[name][:, lat:]
        want = reference[name][:, : got.shape[1]]
        diff = got != want
        counts[name] = int(diff.sum())
        if counts[name] and first is None:
            sample, step, neuron = (int(v) for v in np.argwhere(diff)[0])
            first = Mismatch(name, sample, step, neuron, got[sample, step, neuron].item(),
                             want[sample, step, neuron].item(), counts[name])
    return counts, first
