"""What ``lrfdyn simulate --mode dendritic`` reports: :class:`DendriticReport`, and the
first disagreement it names (:class:`StreamMismatch` for stream networks checked block by
block, :class:`NetworkMismatch` for the one dendritic network)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lrfdyn.sim.report import percent


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
class NetworkMismatch:
    """The first disagreement between the one Lava network and its reference."""

    process: str
    sample: int
    timestep: int
    neuron: int
    lava: int
    reference: int
    where: str = ""  # "update" (its model-step row), "off-phase", or a stream step
    #: Which part of the check found it, in the check's order within a process: a
    #: per-token or deserializer process's "update" rows, then its "off_phase" values; a
    #: stream process's "lead" (before the first stream), then its "stream" steps.
    part: str = "update"

    def __str__(self) -> str:
        return (f"{self.process} neuron {self.neuron}, sample {self.sample}, time step "
                f"{self.timestep} ({self.where}): Lava {self.lava}, reference {self.reference}")


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
    first_mismatch: StreamMismatch | NetworkMismatch | None
    timings: dict[str, float]
    #: Accuracy read from the one dendritic Lava network (None: streams checked alone).
    lava_accuracy: float | None = None
    #: The one network: counts per process type, steps per sample, mismatches per process.
    network: dict[str, Any] | None = None

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
        if self.network is not None:
            c = self.network["counts"]
            lines.append(f"one Lava network        {c['total']['processes']} processes, "
                         f"{c['total']['neurons']:,} neurons, period {c['period']} steps, "
                         f"{c['steps_per_sample']} steps/sample (latency "
                         f"{c['sample_latency_steps']}), {self.timings.get('samples_per_s', 0):.3g} "
                         "samples/s")
            lines.append(f"Lava accuracy           {percent(self.lava_accuracy)} "
                         f"(predictions equal to the reference: "
                         f"{self.network['predictions_equal']})")
        if self.mismatches is not None:
            what = "network" if self.network is not None else "stream"
            lines.append(f"{what} mismatches{' ' * (14 - len(what))}{self.mismatches}"
                         + (f" (first: {self.first_mismatch})" if self.first_mismatch else ""))
        return "\n".join(lines)
