"""Run any NIR graph on Lava, on an input array, and check it against the NIR semantics.

``lrfdyn simulate graph.nir --float|--fixed --input in.npy --output out.npy``.

* The input is (T, *shape) or (T, B, *shape), in the shape of the graph's Input node;
  an Input type with leading axes of size 1 (a batch or time axis the producer wrote
  into it, or one channel) also accepts the shape without them.
* ``--float`` lowers to Lava ``floating_pt`` and requires every spike of every layer
  to equal the numpy simulation of the graph (:mod:`lrfdyn.sim.nir_sim`). Parameters
  may differ per neuron (trained τ, thresholds, v_leak). Voltage readouts (LI, I,
  CubaLI) are compared to a relative 1e-9, since Lava sums in its own order.
* ``--fixed`` lowers to Loihi integers and requires every spike to equal the integer
  reference. A node whose parameters differ per neuron becomes uniform Loihi LIFs
  (:func:`~lrfdyn.sim.per_neuron.split_per_neuron`): thresholds and gains fold into a
  Scale in front, and each distinct integer (du, dv) is its own sub-population. The
  report gives each layer's spike agreement with the float semantics, and separately,
  where the producer resets in a way Loihi cannot (snnTorch's delayed subtraction,
  Sinabs' subtraction and multi-spikes), the agreement with a float model that resets
  as Loihi does, so that quantization and reset costs are told apart. A voltage readout
  comes back as ``v_int / Λ``; it agrees where it is within :data:`FIXED_VOLTAGE_TOL`
  of the layer's largest float voltage. Spike-driven weights are split into two
  synapses, 14 bits (:mod:`lrfdyn.loihi.fine`), with each layer's scale as large as
  its weights, threshold and 24-bit registers allow: for any input by default, for
  the given one with ``calibrate`` (:func:`~lrfdyn.sim.agreement.state_peaks`).
* The output is the Output node's spikes, (T, *shape) or (T, B, *shape). Lava's
  pipeline latency (one step per synapse) is removed, so output step t answers
  input step t, as the producer computes it.
* No silent wrong runs: the report and stderr say which dt was assumed when neither
  the graph nor ``--dt`` gives one, flag a layer that never spikes while its input
  does, and warn where a time constant is absurd for dt (τ/dt > 10⁴ or < 1).

This module runs and reports; the graph and input are readied in
:mod:`lrfdyn.sim.nir_input`, per-neuron nodes split in :mod:`lrfdyn.sim.per_neuron`,
and layers compared in :mod:`lrfdyn.sim.agreement`. The public names callers have
imported from here (``__all__``) stay importable from here.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.fine import CALIBRATION_MARGIN, FineQuantizer
from lrfdyn.loihi.float_lower import lower_float
from lrfdyn.loihi.lower import lower
from lrfdyn.loihi.neurons import Convention
from lrfdyn.sim.agreement import (
    FIXED_VOLTAGE_TOL,
    VOLTAGE_RTOL,
    Layer,
    agreement,
    by_node,
    local_agreement,
    original_node,
    silent_layers,
    state_peaks,
    voltages_within_tolerance,
)
from lrfdyn.sim.nir_input import (
    TAU_STEPS_RANGE,
    accepted_input_shapes,
    check_graph,
    input_batch,
    integer_input,
    io_types_fixed,
    time_constant_warnings,
    with_dt,
)
from lrfdyn.sim.nir_sim import simulate_nir
from lrfdyn.sim.per_neuron import Split, split_per_neuron
from lrfdyn.sim.report import Mismatch, first_mismatches

__all__ = [
    "FIXED_VOLTAGE_TOL", "MODES", "TAU_STEPS_RANGE", "VOLTAGE_RTOL", "InteropReport", "Layer",
    "Split", "accepted_input_shapes", "check_graph", "input_batch", "io_types_fixed",
    "run_graph", "split_per_neuron", "state_peaks",
]

MODES = ("float", "fixed")


@dataclass
class InteropReport:
    """What one run of a NIR graph on Lava showed; ``to_dict`` is what ``--json`` prints."""

    mode: str
    convention: str
    dt: float
    timesteps: int
    batch: int
    output_node: str
    latency_removed: int
    mismatches: int
    compared_with: str
    first_mismatch: Mismatch | None
    layers: list[dict[str, Any]]
    quantization: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: ``graph``, ``--dt`` or ``assumed (convention …)``.
    dt_source: str = "graph"
    #: Problems that do not stop the run but may make it wrong (also on stderr).
    warnings: list[str] = field(default_factory=list)
    #: Nodes with per-neuron parameters and the uniform sub-populations made of them.
    subpopulations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _layer(self, name: str) -> dict[str, Any]:
        return next(layer for layer in self.layers if layer["name"] == name)

    @property
    def output_agreement(self) -> float:
        return self._layer(self.output_node)["agreement"]

    @property
    def output_agreement_loihi_reset(self) -> float:
        """Output agreement with the float model that resets as Loihi does (the cost of
        quantization alone); equal to :attr:`output_agreement` where nothing is substituted."""
        row = self._layer(self.output_node)
        return row.get("agreement_loihi_reset", row["agreement"])

    def summary(self) -> str:
        lines = [
            f"mode               {self.mode} (convention {self.convention}, dt {self.dt:g} s: "
            f"{self.dt_source})",
            f"input              T = {self.timesteps}, batch {self.batch}",
            f"spike mismatches   {self.mismatches} vs {self.compared_with} "
            "(every neuron, every step, every layer)",
            f"latency removed    {self.latency_removed} steps (output step t = input step t)",
        ]
        if self.first_mismatch is not None:
            m = self.first_mismatch
            lines.append(f"FIRST MISMATCH     layer {m.layer} sample {m.sample} step {m.step} "
                         f"neuron {m.neuron}: lava={m.lava} expected={m.reference}")
        for s in self.subpopulations:
            lines.append(f"per-neuron         {s['node']}: {s['neurons']} neurons as "
                         f"{s['subpopulations']} uniform sub-population(s)"
                         + (", thresholds/gains folded into a Scale" if s["folded_scale"]
                            else ""))
        if self.mode == "fixed":
            reset = any("agreement_loihi_reset" in layer for layer in self.layers)
            lines.append(f"{'layer':18s} {'agreement':>9s} "
                         + (f"{'w/o reset':>9s} " if reset else "")
                         + f"{'local':>8s} {'spikes float':>12s} {'spikes int':>10s}")
            for layer in self.layers:
                extra = f"{100 * layer['agreement_loihi_reset']:8.2f}% " if reset else ""
                lines.append(f"{layer['name']:18s} {100 * layer['agreement']:8.2f}% {extra}"
                             f"{100 * layer.get('agreement_local', 1.0):7.2f}% "
                             f"{layer['spikes_float']:12d} {layer['spikes_lava']:10d}")
            if reset:
                lines.append("(w/o reset: against a float model that resets as Loihi does, "
                             "i.e. the cost of quantization alone)")
            lines.append("(local: the layer's float model fed what Lava sent it, i.e. its own "
                         "quantization apart from inherited flips)")
            lines.append(f"{'synapse':24s} {'exp':>4s} {'clipped':>7s} {'scale':>9s} "
                         f"{'vth':>7s}")
            for q in self.quantization:
                lines.append(f"{q['synapse']:24s} {q['weight_exp']:4d} {q['clipped']:7d} "
                             f"{q['scale']:9.3g} {q.get('vth', 0):7d}")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)

def _warn(warnings: list[str], text: str, echo: bool) -> None:
    warnings.append(text)
    if echo:
        print(f"lrfdyn: warning: {text}", file=sys.stderr)

def run_graph(graph: nir.NIRGraph, x: np.ndarray, *, mode: str, conv: Convention,
              dt: float | None = None, echo_warnings: bool = True, fine: bool = True,
              calibrate: bool = False) -> tuple[np.ndarray, InteropReport]:
    """Run input ``x`` (T, …) or (T, B, …) through ``graph`` on Lava; see the module doc.

    ``echo_warnings`` also prints each warning to stderr (``lrfdyn: warning: …``).
    ``--fixed`` only: ``fine`` lowers with :class:`~lrfdyn.loihi.fine.FineQuantizer`
    (split spike-driven weights, up to 15 bits; False: the default 8-bit lowering), and
    ``calibrate`` bounds its registers by the float model's peaks on ``x``
    (:func:`~lrfdyn.sim.agreement.state_peaks`) rather than the worst case.

    Returns:
        The Output node's spikes in the input's layout, and the report.
    """
    from lrfdyn.sim.lava_run import run_lava
    from lrfdyn.sim.reference import run_reference

    if mode not in MODES:
        raise ValidationError(f"mode {mode!r} is not one of {MODES}")
    warnings: list[str] = []
    graph, io_notes = io_types_fixed(graph)
    graph, dt, dt_source = with_dt(graph, dt, conv)
    if dt_source.startswith("assumed"):
        _warn(warnings, f"neither the graph nor --dt gives a time step; assumed dt = {dt:g} s "
              f"(convention {conv.name}); if the producer stepped otherwise, pass --dt or "
              "its --convention", echo_warnings)
    in_node = next((n for n in graph.nodes.values() if isinstance(n, nir.Input)), None)
    if in_node is None:
        raise ValidationError("the graph has no Input node")
    in_shape = tuple(int(v) for v in np.atleast_1d(next(iter(in_node.input_type.values()))))
    xs, batched = input_batch(in_shape, x)
    t_in = xs.shape[1]
    per_neuron = dataclasses.replace(conv, per_neuron=True)
    lowered_graph, splits = check_graph(graph, conv, dt, mode)
    for w in time_constant_warnings(graph, conv, dt):
        _warn(warnings, w, echo_warnings)
    t0 = time.perf_counter()
    notes: list[str] = list(io_notes)
    if not dt_source.startswith("assumed") and dt_source not in ("graph", "--dt"):
        notes.append(f"dt = {dt:g} s, {dt_source}")
    if mode == "float":
        net = lower_float(graph, per_neuron, timesteps=t_in)
        xs = xs.astype(np.float64)
    else:
        xs, levels = integer_input(xs)
        peaks = None
        if calibrate:
            peaks = state_peaks(lowered_graph, conv, xs)
            notes.append("calibrated: each layer's scale fits the float model's largest "
                         f"|i| and |v| on this input (x{CALIBRATION_MARGIN:g})")
        net = lower(lowered_graph, conv, timesteps=t_in, levels=levels, shared=not fine,
                    quantizer=partial(FineQuantizer, peaks=peaks) if fine else None)
        substituted = list(net.metadata.get("reset_substituted", {}))
        if substituted:
            notes.append(f"Loihi's LIF resets to 0 in the step that spikes, not as the "
                         f"producer does ({conv.reset}), in {', '.join(substituted)}; the "
                         "agreement includes its cost, 'w/o reset' leaves it out")
        if conv.multi_spike:
            notes.append("Loihi's LIF sends one spike per step; the producer's multi-spikes "
                         "(and their subtraction) are part of the reset cost")
    steps = net.steps_per_sample()
    from lrfdyn.sim.budget import check as check_budget

    check_budget(net, len(xs), float_pass=True)  # refused before any run, with the estimate
    timings = {"lower_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    semantics = simulate_nir(graph, xs, per_neuron, steps=steps)
    timings["nir_sim_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = run_lava(net, xs, select_tag="floating_pt" if mode == "float" else "fixed_pt")
    timings["lava_s"] = time.perf_counter() - t0
    if mode == "float":
        expected, against = semantics, "the NIR semantics (numpy, float)"
        lava = voltages_within_tolerance(run.spikes, expected, net)
    else:
        expected = run_reference(net, xs, steps)
        against, lava = "the integer reference", run.spikes
    as_spikes = {k: v.astype(bool) if net.groups[k].spiking else v for k, v in expected.items()}
    counts, first = first_mismatches(lava, as_spikes, net)
    got = by_node(net, run.spikes, splits, semantics, t_in)
    loihi_reset = None
    if mode == "fixed" and (conv.reset != "zero" or conv.multi_spike):
        loihi_reset = simulate_nir(graph, xs, dataclasses.replace(
            per_neuron, reset="zero", multi_spike=False), steps=t_in)
    layers = agreement(got, semantics, loihi_reset, t_in)
    if mode == "fixed":
        local = local_agreement(graph, dataclasses.replace(
            per_neuron, reset="zero", multi_spike=False), got, xs, t_in)
        for row in layers:
            row["agreement_local"] = local.get(row["name"], row["agreement"])
    for w in silent_layers(graph, per_neuron, got, xs, t_in):
        _warn(warnings, w, echo_warnings)
    if conv.multi_spike and mode == "float":
        many = {n: int((semantics[n][:, :t_in] > 1).sum()) for n in got if got[n].spiking}
        if any(many.values()):
            notes.append("multi-spikes (2+ in one step) " + ", ".join(
                f"{n}: {k}" for n, k in many.items() if k) + "; Lava sends each count as one "
                "payload, and the output array says whether a neuron spiked")
    out = original_node(net.output, splits)
    lat = net.groups[net.output].latency
    y, shape = got[out].values, got[out].shape
    y = y.transpose(1, 0, 2).reshape((t_in, len(xs)) + tuple(shape))
    report = InteropReport(
        mode=mode, convention=conv.name, dt=net.dt, timesteps=t_in, batch=len(xs),
        output_node=out, latency_removed=lat, mismatches=sum(counts.values()),
        compared_with=against, first_mismatch=first, layers=layers,
        quantization=net.quantization_report() if mode == "fixed" else [], notes=notes,
        timings=timings, dt_source=dt_source, warnings=warnings,
        subpopulations=[s.to_dict() for s in splits],
    )
    return (y if batched else y[:, 0]), report
