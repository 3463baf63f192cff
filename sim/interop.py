"""Run any NIR graph on Lava, on an input array, and check it against the NIR semantics.

``lrfdyn simulate graph.nir --float|--fixed --input in.npy --output out.npy``.

* The input is (T, *shape) or (T, B, *shape), in the shape of the graph's Input node.
* ``--float`` lowers to Lava ``floating_pt`` and requires every spike of every layer
  to equal the numpy simulation of the graph (:mod:`lrfdyn.sim.nir_sim`).
  Voltage readouts (LI, I, CubaLI) are compared to a relative 1e-9, since Lava sums
  in its own order.
* ``--fixed`` lowers to Loihi integers and requires every spike to equal the integer
  reference. It then reports what quantization costs: each layer's spike agreement
  with the float semantics, beside the quantization of every synapse layer. A
  voltage readout comes back as ``v_int / Λ``; it agrees where it is within
  :data:`FIXED_VOLTAGE_TOL` of the layer's largest float voltage.
* The output is the Output node's spikes, (T, *shape) or (T, B, *shape). Lava's
  pipeline latency (one step per synapse) is removed, so output step t answers
  input step t, as the producer computes it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.float_lower import lower_float
from lrfdyn.loihi.lower import LoweredNetwork, NeuronGroup, lower
from lrfdyn.loihi.neurons import Convention
from lrfdyn.sim.nir_sim import simulate_nir
from lrfdyn.sim.report import Mismatch, first_mismatches

MODES = ("float", "fixed")
#: Voltages (never spikes) agree when within this relative difference.
VOLTAGE_RTOL = 1e-9
#: An integer voltage readout agrees within this share of the layer's peak |v|.
FIXED_VOLTAGE_TOL = 0.01


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def output_agreement(self) -> float:
        return next(layer["agreement"] for layer in self.layers
                    if layer["name"] == self.output_node)

    def summary(self) -> str:
        lines = [
            f"mode               {self.mode} (convention {self.convention}, dt {self.dt:g} s)",
            f"input              T = {self.timesteps}, batch {self.batch}",
            f"spike mismatches   {self.mismatches} vs {self.compared_with} "
            "(every neuron, every step, every layer)",
            f"latency removed    {self.latency_removed} steps (output step t = input step t)",
        ]
        if self.first_mismatch is not None:
            m = self.first_mismatch
            lines.append(f"FIRST MISMATCH     layer {m.layer} sample {m.sample} step {m.step} "
                         f"neuron {m.neuron}: lava={m.lava} expected={m.reference}")
        if self.mode == "fixed":
            lines.append(f"{'layer':18s} {'agreement':>9s} {'spikes float':>12s} "
                         f"{'spikes int':>10s}")
            for layer in self.layers:
                lines.append(f"{layer['name']:18s} {100 * layer['agreement']:8.2f}% "
                             f"{layer['spikes_float']:12d} {layer['spikes_lava']:10d}")
            lines.append(f"{'synapse':24s} {'exp':>4s} {'clipped':>7s} {'scale':>9s} "
                         f"{'vth':>7s}")
            for q in self.quantization:
                lines.append(f"{q['synapse']:24s} {q['weight_exp']:4d} {q['clipped']:7d} "
                             f"{q['scale']:9.3g} {q['vth']:7d}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def input_batch(graph_input_shape: tuple[int, ...], x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``x`` as (B, T, size), and whether it had a batch axis; one clear error otherwise."""
    x = np.asarray(x)
    shape = tuple(graph_input_shape)
    if len(shape) > 1 and shape[0] == 1 and x.shape[1:] != shape:
        shape = shape[1:]  # Norse's to_nir writes its sample's batch axis into the Input type
    if x.shape[1:] == shape:
        return x.reshape(x.shape[0], 1, -1).transpose(1, 0, 2), False
    if x.ndim == len(shape) + 2 and x.shape[2:] == shape:
        return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2), True
    raise ValidationError(
        f"input has shape {x.shape}, but the graph's input is {shape}; give (T, {shape}) "
        f"or (T, B, {shape})"
    )


def _integer_input(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Loihi sends integers: spikes (levels 1) or graded payloads up to 255."""
    xi = np.rint(x)
    if not np.array_equal(xi, x) or xi.min(initial=0) < 0 or xi.max(initial=0) > 255:
        raise ValidationError(
            "--fixed needs integer input in 0..255 (spikes or graded counts); this input "
            f"has values {x.min():g}..{x.max():g}; use --float for real-valued input"
        )
    return xi.astype(np.int64), max(1, int(xi.max(initial=1)))


def run_graph(graph: nir.NIRGraph, x: np.ndarray, *, mode: str, conv: Convention,
              dt: float | None = None) -> tuple[np.ndarray, InteropReport]:
    """Run input ``x`` (T, …) or (T, B, …) through ``graph`` on Lava; see the module doc.

    Returns:
        The Output node's spikes in the input's layout, and the report.
    """
    from lrfdyn.sim.lava_run import run_lava
    from lrfdyn.sim.reference import run_reference

    if mode not in MODES:
        raise ValidationError(f"mode {mode!r} is not one of {MODES}")
    if dt is not None:
        graph = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, type_check=False,
                             metadata={**graph.metadata, "dt": dt})
    in_node = next((n for n in graph.nodes.values() if isinstance(n, nir.Input)), None)
    if in_node is None:
        raise ValidationError("the graph has no Input node")
    in_shape = tuple(int(v) for v in np.atleast_1d(next(iter(in_node.input_type.values()))))
    xs, batched = input_batch(in_shape, x)
    t_in = xs.shape[1]
    t0 = time.perf_counter()
    notes: list[str] = []
    if mode == "float":
        net = lower_float(graph, conv, timesteps=t_in)
        xs = xs.astype(np.float64)
    else:
        xs, levels = _integer_input(xs)
        net = lower(graph, conv, timesteps=t_in, levels=levels)
        for g, what in net.metadata.get("reset_substituted", {}).items():
            notes.append(f"{g}: reset is {what}; its cost is in the agreement")
    steps = net.steps_per_sample()
    timings = {"lower_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    semantics = simulate_nir(graph, xs, conv, steps=steps)
    timings["nir_sim_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = run_lava(net, xs, select_tag="floating_pt" if mode == "float" else "fixed_pt")
    timings["lava_s"] = time.perf_counter() - t0
    if mode == "float":
        expected, against = semantics, "the NIR semantics (numpy, float)"
        lava = _voltages_within_tolerance(run.spikes, expected, net)
    else:
        expected = run_reference(net, xs, steps)
        against, lava = "the integer reference", run.spikes
    as_spikes = {k: v.astype(bool) if net.groups[k].spiking else v for k, v in expected.items()}
    counts, first = first_mismatches(lava, as_spikes, net)
    layers = _agreement(net, run.spikes, semantics, t_in)
    out = net.output
    lat = net.groups[out].latency
    y = _readout(net.groups[out], run.spikes[out][:, lat : lat + t_in])  # (B, T, size)
    y = y.transpose(1, 0, 2).reshape((t_in, len(xs)) + tuple(net.groups[out].shape))
    report = InteropReport(
        mode=mode, convention=conv.name, dt=net.dt, timesteps=t_in, batch=len(xs),
        output_node=out, latency_removed=lat, mismatches=sum(counts.values()),
        compared_with=against, first_mismatch=first, layers=layers,
        quantization=net.quantization_report() if mode == "fixed" else [], notes=notes,
        timings=timings,
    )
    return (y if batched else y[:, 0]), report


def _voltages_within_tolerance(lava: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                               net: LoweredNetwork) -> dict[str, np.ndarray]:
    """Voltage readouts with every value inside :data:`VOLTAGE_RTOL` set to the expected."""
    out = dict(lava)
    for name, g in net.groups.items():
        if g.spiking:
            continue
        got = lava[name][:, g.latency :]
        want = expected[name][:, : got.shape[1]]
        close = np.isclose(got, want, rtol=VOLTAGE_RTOL, atol=VOLTAGE_RTOL)
        out[name] = lava[name].copy()
        out[name][:, g.latency :] = np.where(close, want, got)
    return out


def _readout(g: NeuronGroup, recorded: np.ndarray) -> np.ndarray:
    """Spikes as recorded; an integer voltage readout back in float units (v_int / Λ)."""
    if g.spiking or "lambda" not in g.float_params:
        return recorded
    return recorded / g.float_params["lambda"]


def _agreement(net: LoweredNetwork, lava: dict[str, np.ndarray],
               semantics: dict[str, np.ndarray], t_in: int) -> list[dict[str, Any]]:
    """Per layer over the T input steps: the share of (neuron, step) equal to the semantics."""
    rows = []
    for name, g in net.groups.items():
        got = _readout(g, lava[name][:, g.latency : g.latency + t_in])
        want = semantics[name][:, :t_in]
        row: dict[str, Any] = {"name": name, "neurons": g.size}
        if g.spiking:
            same = got == want.astype(bool)
            row.update(spikes_float=int(want.sum()), spikes_lava=int(got.sum()))
        else:
            integer = "lambda" in g.float_params
            tol = FIXED_VOLTAGE_TOL * float(np.abs(want).max(initial=0)) if integer else 0.0
            same = np.isclose(got, want, rtol=0 if integer else VOLTAGE_RTOL,
                              atol=tol if integer else VOLTAGE_RTOL)
            row.update(spikes_float=0, spikes_lava=0,
                       max_abs_error=float(np.abs(got - want).max(initial=0)))
        rows.append({**row, "agreement": float(same.mean())})
    return rows
