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
  (:func:`split_per_neuron`): thresholds and gains fold into a Scale in front, and
  each distinct integer (du, dv) is its own sub-population. The report gives each
  layer's spike agreement with the float semantics, and separately, where the
  producer resets in a way Loihi cannot (snnTorch's delayed subtraction, Sinabs'
  subtraction and multi-spikes), the agreement with a float model that resets as
  Loihi does, so that quantization and reset costs are told apart. A voltage readout
  comes back as ``v_int / Λ``; it agrees where it is within :data:`FIXED_VOLTAGE_TOL`
  of the layer's largest float voltage. Spike-driven weights are split into two
  synapses, 14 bits (:mod:`lrfdyn.loihi.fine`), with each layer's scale as large as
  its weights, threshold and 24-bit registers allow: for any input by default, for
  the given one with ``calibrate`` (:func:`state_peaks`).
* The output is the Output node's spikes, (T, *shape) or (T, B, *shape). Lava's
  pipeline latency (one step per synapse) is removed, so output step t answers
  input step t, as the producer computes it.
* No silent wrong runs: the report and stderr say which dt was assumed when neither
  the graph nor ``--dt`` gives one, flag a layer that never spikes while its input
  does, and warn where a time constant is absurd for dt (τ/dt > 10⁴ or < 1).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import nir
import numpy as np

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.fine import CALIBRATION_MARGIN, FineQuantizer
from lrfdyn.loihi.float_lower import lower_float
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.lower import LoweredNetwork, NeuronGroup, lower, wire
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, Convention, Dynamics
from lrfdyn.sim.nir_sim import _Neuron, simulate_nir
from lrfdyn.sim.report import Mismatch, first_mismatches

MODES = ("float", "fixed")
#: Voltages (never spikes) agree when within this relative difference.
VOLTAGE_RTOL = 1e-9
#: An integer voltage readout agrees within this share of the layer's peak |v|.
FIXED_VOLTAGE_TOL = 0.01
#: τ/dt outside these bounds is flagged: a wrong --dt or --convention, most likely.
TAU_STEPS_RANGE = (1.0, 1e4)


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


def _fmt_shape(shape: tuple[Any, ...]) -> str:
    """``(T, B, 1, 28, 28)``: a shape as a person writes it (no nested tuples)."""
    return "(" + ", ".join(str(v) for v in shape) + ("," if len(shape) == 1 else "") + ")"


def accepted_input_shapes(graph_input_shape: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """The input array shapes a graph with this Input type accepts, as written in errors."""
    shape = tuple(int(v) for v in graph_input_shape)
    forms = [shape]
    core = shape
    while len(core) > 1 and core[0] == 1:  # a batch, time or channel axis of size 1
        core = core[1:]
        forms.append(core)
    out = []
    for f in forms:
        out += [("T", *f), ("T", "B", *f)]
    return out


def input_batch(graph_input_shape: tuple[int, ...], x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``x`` as (B, T, size), and whether it had a batch axis; one clear error otherwise.

    Accepts (T, *shape) and (T, B, *shape); where the Input type starts with axes of size
    1 (Norse's and Rockpool's batch axis, or a single channel (1, H, W)), also the shape
    without them, so (T, H, W) and (T, B, H, W) run a (1, H, W) graph.
    """
    x = np.asarray(x)
    shape = tuple(int(v) for v in graph_input_shape)
    forms = [f[1:] for f in accepted_input_shapes(shape)[::2]]
    for f in forms:  # unbatched first: (T, 1, H, W) for (1, H, W) is one sample
        if x.shape[1:] == f:
            return x.reshape(x.shape[0], 1, -1).transpose(1, 0, 2), False
    for f in forms:
        if x.ndim == len(f) + 2 and x.shape[2:] == f:
            return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2), True
    accepted = " or ".join(_fmt_shape(f) for f in accepted_input_shapes(shape))
    raise ValidationError(
        f"input has shape {_fmt_shape(x.shape)}, but the graph's Input is "
        f"{_fmt_shape(shape)}; give {accepted} (T steps, B samples)"
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


def _warn(warnings: list[str], text: str, echo: bool) -> None:
    warnings.append(text)
    if echo:
        print(f"lrfdyn: warning: {text}", file=sys.stderr)


def _with_dt(graph: nir.NIRGraph, dt: float | None, conv: Convention
             ) -> tuple[nir.NIRGraph, float, str]:
    """The graph with its dt in the metadata, the dt and where it came from."""
    if dt is not None:
        from lrfdyn.validate import check_real

        check_real("dt", dt, positive=True)  # a library caller's dt, refused as --dt is
        source = "--dt"
    elif "dt" in graph.metadata:
        return graph, float(graph.metadata["dt"]), "graph"
    elif conv.ignore_r and (found := _dt_from_r(graph)) is not None:
        dt, source = found, "recovered from Rockpool's r = tau·exp(-dt/tau)/dt"
    else:
        dt, source = conv.dt, f"assumed (convention {conv.name}'s default)"
    graph = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, type_check=False,
                         metadata={**graph.metadata, "dt": dt})
    return graph, float(dt), source


def _dt_from_r(graph: nir.NIRGraph) -> float | None:
    """Rockpool writes r = τ·e^{−dt/τ}/dt (τ = τ_mem): solve it for dt (it falls with dt)."""
    for node in flatten(graph).nodes.values():
        tau = getattr(node, "tau_mem", getattr(node, "tau", None))
        r = getattr(node, "r", None)
        if tau is None or r is None or not isinstance(node, (nir.CubaLIF, nir.LIF)):
            continue
        tau, r = float(np.ravel(tau)[0]), float(np.ravel(r)[0])
        if not (tau > 0 and r > 0):
            return None
        lo, hi = tau * 1e-9, tau * 50.0
        if not (tau * np.exp(-hi / tau) / hi < r < tau * np.exp(-lo / tau) / lo):
            return None
        for _ in range(200):  # bisection on a log scale
            mid = float(np.sqrt(lo * hi))
            lo, hi = (mid, hi) if tau * np.exp(-mid / tau) / mid > r else (lo, mid)
        return float(f"{np.sqrt(lo * hi):.6g}")  # the float32 r holds ~6 digits
    return None


def io_types_fixed(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
    """Input/Output types that carry a batch axis (Norse: (1, n)) or a batch and a time
    axis (Rockpool: (1, T, n)) read as the n their neighbour holds; nir.read rejects such
    graphs with type checking."""
    notes = []
    nodes = dict(graph.nodes)
    for name, node in graph.nodes.items():
        if not isinstance(node, (nir.Input, nir.Output)):
            continue
        types = node.input_type if isinstance(node, nir.Input) else node.output_type
        shape = tuple(int(v) for v in np.atleast_1d(next(iter(types.values()))))
        nbrs = [d for s, d in graph.edges if s == name] if isinstance(node, nir.Input) else \
            [s for s, d in graph.edges if d == name]
        want = None
        for nb in nbrs:
            other = graph.nodes.get(nb)
            if isinstance(node, nir.Input) and isinstance(other, (nir.Linear, nir.Affine)):
                want = (int(np.shape(other.weight)[1]),)
            elif isinstance(node, nir.Output) and other is not None and \
                    type(other) in NEURON_LOWERINGS:
                declared = np.atleast_1d(next(iter(other.output_type.values()), []))
                want = tuple(int(v) for v in declared) if declared.size else None
        # (1, n) (Norse) or (1, T, n) (Rockpool): leading batch (and time) axes.
        if (want is None or len(shape) < len(want) + 1 or shape[-len(want):] != want
                or shape[0] != 1):
            continue
        fixed_shape = np.array(want)
        nodes[name] = nir.Input(input_type={"input": fixed_shape}) \
            if isinstance(node, nir.Input) else nir.Output(output_type={"output": fixed_shape})
        notes.append(f"{name}: its type {_fmt_shape(shape)} holds a batch (and time) axis; "
                     f"read as {_fmt_shape(want)}")
    if not notes:
        return graph, notes
    return nir.NIRGraph(nodes=nodes, edges=graph.edges, type_check=False,
                        metadata=dict(graph.metadata)), notes


def check_graph(graph: nir.NIRGraph, conv: Convention, dt: float, mode: str
                ) -> tuple[nir.NIRGraph, list[Split]]:
    """Every node's parameters checked at once; one error names every offending node.

    For ``fixed`` it returns the graph with per-neuron nodes split
    (:func:`split_per_neuron`); for ``float`` the flattened graph.
    """
    flat = flatten(graph)
    per_neuron = dataclasses.replace(conv, per_neuron=True)
    problems = []
    for n, node in flat.nodes.items():
        lowering = NEURON_LOWERINGS.get(type(node))
        if lowering is None:
            continue
        try:
            lowering(node, dt, n, per_neuron)
        except (UnsupportedNodeError, ValidationError) as exc:
            msg = str(exc)
            problems.append(msg if msg.startswith(n) else f"{n}: {msg}")
    splits: list[Split] = []
    if not problems and mode == "fixed":
        flat, splits, refused = split_per_neuron(flat, conv, dt)
        problems += refused
    if problems:
        raise UnsupportedNodeError(
            f"{len(problems)} node(s) cannot be lowered: " + "; ".join(problems))
    return flat, splits


def run_graph(graph: nir.NIRGraph, x: np.ndarray, *, mode: str, conv: Convention,
              dt: float | None = None, echo_warnings: bool = True, fine: bool = True,
              calibrate: bool = False) -> tuple[np.ndarray, InteropReport]:
    """Run input ``x`` (T, …) or (T, B, …) through ``graph`` on Lava; see the module doc.

    ``echo_warnings`` also prints each warning to stderr (``lrfdyn: warning: …``).
    ``--fixed`` only: ``fine`` lowers with :class:`~lrfdyn.loihi.fine.FineQuantizer`
    (split spike-driven weights, up to 15 bits; False: the default 8-bit lowering), and
    ``calibrate`` bounds its registers by the float model's peaks on ``x``
    (:func:`state_peaks`) rather than the worst case.

    Returns:
        The Output node's spikes in the input's layout, and the report.
    """
    from lrfdyn.sim.lava_run import run_lava
    from lrfdyn.sim.reference import run_reference

    if mode not in MODES:
        raise ValidationError(f"mode {mode!r} is not one of {MODES}")
    warnings: list[str] = []
    graph, io_notes = io_types_fixed(graph)
    graph, dt, dt_source = _with_dt(graph, dt, conv)
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
    for w in _time_constant_warnings(graph, conv, dt):
        _warn(warnings, w, echo_warnings)
    t0 = time.perf_counter()
    notes: list[str] = list(io_notes)
    if not dt_source.startswith("assumed") and dt_source not in ("graph", "--dt"):
        notes.append(f"dt = {dt:g} s, {dt_source}")
    if mode == "float":
        net = lower_float(graph, per_neuron, timesteps=t_in)
        xs = xs.astype(np.float64)
    else:
        xs, levels = _integer_input(xs)
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
        lava = _voltages_within_tolerance(run.spikes, expected, net)
    else:
        expected = run_reference(net, xs, steps)
        against, lava = "the integer reference", run.spikes
    as_spikes = {k: v.astype(bool) if net.groups[k].spiking else v for k, v in expected.items()}
    counts, first = first_mismatches(lava, as_spikes, net)
    got = _by_node(net, run.spikes, splits, semantics, t_in)
    loihi_reset = None
    if mode == "fixed" and (conv.reset != "zero" or conv.multi_spike):
        loihi_reset = simulate_nir(graph, xs, dataclasses.replace(
            per_neuron, reset="zero", multi_spike=False), steps=t_in)
    layers = _agreement(got, semantics, loihi_reset, t_in)
    if mode == "fixed":
        local = _local_agreement(graph, dataclasses.replace(
            per_neuron, reset="zero", multi_spike=False), got, xs, t_in)
        for row in layers:
            row["agreement_local"] = local.get(row["name"], row["agreement"])
    for w in _silent_layers(graph, per_neuron, got, xs, t_in):
        _warn(warnings, w, echo_warnings)
    if conv.multi_spike and mode == "float":
        many = {n: int((semantics[n][:, :t_in] > 1).sum()) for n in got if got[n].spiking}
        if any(many.values()):
            notes.append("multi-spikes (2+ in one step) " + ", ".join(
                f"{n}: {k}" for n, k in many.items() if k) + "; Lava sends each count as one "
                "payload, and the output array says whether a neuron spiked")
    out = _original(net.output, splits)
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


class Layer(NamedTuple):
    """One NIR neuron node's Lava output: values (B, T, size) in float units."""

    values: np.ndarray
    spiking: bool
    shape: tuple[int, ...]
    integer: bool


def _original(group: str, splits: list[Split]) -> str:
    for s in splits:
        if any(group == p for p, _ in s.parts):
            return s.node
    return group


def _by_node(net: LoweredNetwork, lava: dict[str, np.ndarray], splits: list[Split],
             semantics: dict[str, np.ndarray], t_in: int
             ) -> dict[str, Layer]:
    """Each NIR neuron node's Lava output over the T input steps, in float units;
    sub-populations put back together."""
    def window(name: str) -> np.ndarray:
        g = net.groups[name]
        return _readout(g, lava[name][:, g.latency : g.latency + t_in])

    out: dict[str, Layer] = {}
    parts = {p for s in splits for p, _ in s.parts}
    for name, g in net.groups.items():
        if name in semantics and name not in parts:
            out[name] = Layer(window(name), g.spiking, tuple(g.shape),
                              "lambda" in g.float_params)
    for s in splits:
        first = net.groups[s.parts[0][0]]
        whole = np.zeros((len(lava[first.name]), t_in, s.size),
                         bool if first.spiking else np.float64)
        for p, idx in s.parts:
            whole[:, :, idx] = window(p)
        out[s.node] = Layer(whole, first.spiking, (s.size,), "lambda" in first.float_params)
    return out


def _local_agreement(graph: nir.NIRGraph, conv: Convention, got: dict[str, Layer],
                     xs: np.ndarray, t_in: int) -> dict[str, float]:
    """Each layer's agreement with its float model driven by what Lava actually sent it:
    the cost of quantizing that layer alone, apart from the flips it inherits."""
    w = wire(graph, conv, timesteps=t_in, shared=False)
    batch = len(xs)
    out = {}
    for p in w.groups:
        if p.name not in got:
            continue
        size = p.inputs.bias.size
        total = np.zeros((batch, t_in, size)) + p.inputs.bias
        for tap, m in p.inputs.terms:
            src = xs[:, :t_in] if tap.source == w.input.name else \
                got[tap.source].values.astype(np.float64)
            lag = tap.lag + int((tap.source, p.name) in w.recurrent)
            flat = src.reshape(batch * t_in, -1)
            part = np.asarray(m.matrix() @ flat.T).T.reshape(batch, t_in, size)
            if lag:
                part = np.concatenate([np.zeros((batch, lag, size)), part[:, :-lag]], axis=1)
            total += part
        neuron = _Neuron(p.dynamics, batch, size)
        want = np.stack([neuron.step(total[:, t]) for t in range(t_in)], axis=1)
        layer = got[p.name]
        if layer.spiking:
            same = layer.values == want.astype(bool)
        else:
            tol = FIXED_VOLTAGE_TOL * float(np.abs(want).max(initial=0))
            same = np.isclose(layer.values, want, rtol=0, atol=tol)
        out[p.name] = float(same.mean())
    return out


def state_peaks(graph: nir.NIRGraph, conv: Convention, xs: np.ndarray
                ) -> dict[str, tuple[float, float]]:
    """Each neuron group's largest |i| and the |v| its register must hold (float units,
    v before its reset) when the float model that resets as Loihi does runs ``xs``
    (B, T, size): the calibration of :class:`~lrfdyn.loihi.fine.FineQuantizer`. A spiking
    group's v needs room only as far down as a clip could still change a later spike.
    ``graph`` is the one being lowered."""
    loihi = dataclasses.replace(conv, reset="zero", multi_spike=False)
    xs = np.asarray(xs, np.float64)
    batch, t_in = xs.shape[:2]
    sem = simulate_nir(graph, xs, loihi)
    w = wire(graph, loihi, timesteps=t_in, shared=False)
    out = {}
    for p in w.groups:
        size = p.inputs.bias.size
        total = np.zeros((batch, t_in, size)) + p.inputs.bias
        for tap, m in p.inputs.terms:
            src = xs if tap.source == w.input.name else sem[tap.source][:, :t_in]
            lag = tap.lag + int((tap.source, p.name) in w.recurrent)
            part = np.asarray(m.matrix() @ src.reshape(batch * t_in, -1).T).T
            part = part.reshape(batch, t_in, size)
            if lag:
                part = np.concatenate([np.zeros((batch, lag, size)), part[:, :-lag]], axis=1)
            total += part
        d = p.dynamics
        neuron = _Neuron(d, batch, size)
        i_peak, vs = 0.0, []
        for t in range(t_in):
            v_before = neuron.v
            neuron.step(total[:, t])
            vs.append((1.0 - d.dv) * v_before + neuron.i + d.bias)  # before the reset
            i_peak = max(i_peak, float(np.abs(neuron.i).max(initial=0)))
        v = np.stack(vs, axis=1)
        if not d.spiking:
            v_peak = float(np.abs(v).max(initial=0))
        else:
            # Above threshold v resets (a clip there still spikes). Below, clipping v at
            # −C raises it by at most −C − v(t), which can only cause a spike if v later
            # rises by more than C + θ: C need not exceed min(−v(t), rise(t) − θ).
            later = np.maximum.accumulate(v[:, ::-1], axis=1)[:, ::-1]
            rise = np.concatenate([later[:, 1:], np.full_like(v[:, :1], -np.inf)], axis=1) - v
            need = np.minimum(-v, rise - np.asarray(d.v_th, np.float64))
            v_peak = float(np.maximum(need, 0.0).max(initial=0))
        out[p.name] = (i_peak, v_peak)
    return out


def _time_constant_warnings(graph: nir.NIRGraph, conv: Convention, dt: float) -> list[str]:
    """τ/dt outside :data:`TAU_STEPS_RANGE`, per node and time constant."""
    lo, hi = TAU_STEPS_RANGE
    out = []
    for n, node in flatten(graph).nodes.items():
        for f in ("tau", "tau_syn", "tau_mem"):
            if type(node) not in NEURON_LOWERINGS or not hasattr(node, f):
                continue
            tau = np.asarray(conv.tau(np.asarray(getattr(node, f), np.float64), dt))
            ratio = tau / dt
            if ratio.size and (ratio.max() > hi or ratio.min() < lo):
                bad = float(ratio.max() if ratio.max() > hi else ratio.min())
                what = "barely leaks in a run" if bad > hi else "forgets within one step"
                out.append(f"{n}: {f}/dt = {bad:.3g} (dt {dt:g} s under convention "
                           f"{conv.name}), so the neuron {what}; check --convention and --dt")
    return out


def _silent_layers(graph: nir.NIRGraph, conv: Convention,
                   got: dict[str, Layer],
                   xs: np.ndarray, t_in: int) -> list[str]:
    """Spiking layers that never spiked on Lava although something fed them."""
    w = wire(graph, conv, timesteps=t_in, shared=False)
    active = {w.input.name: int(np.count_nonzero(xs))}
    active.update({n: int(np.count_nonzero(layer.values)) for n, layer in got.items()})
    out = []
    for p in w.groups:
        if p.name not in got or not got[p.name].spiking or active[p.name]:
            continue
        fed = sum(active.get(s, 0) for s in p.inputs.sources if s != p.name)
        if fed:
            out.append(f"{p.name} never spiked in {t_in} steps although its input carried "
                       f"{fed} non-zero values; the run may be wrong (check --convention and "
                       "--dt)")
    return out


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


def _agreement(got: dict[str, Layer],
               semantics: dict[str, np.ndarray], loihi_reset: dict[str, np.ndarray] | None,
               t_in: int) -> list[dict[str, Any]]:
    """Per layer over the T input steps: the share of (neuron, step) equal to the semantics
    (and, where given, to the float model that resets as Loihi does)."""
    rows = []
    for name, (values, spiking, _, integer) in got.items():
        row: dict[str, Any] = {"name": name, "neurons": int(values.shape[-1])}
        refs = [("agreement", semantics[name][:, :t_in])]
        if loihi_reset is not None:
            refs.append(("agreement_loihi_reset", loihi_reset[name][:, :t_in]))
        for key, want in refs:
            if spiking:
                same = values == want.astype(bool)
                if key == "agreement":
                    row.update(spikes_float=int(np.count_nonzero(want)),
                               spikes_lava=int(np.count_nonzero(values)))
            else:
                tol = FIXED_VOLTAGE_TOL * float(np.abs(want).max(initial=0)) if integer else 0.0
                same = np.isclose(values, want, rtol=0 if integer else VOLTAGE_RTOL,
                                  atol=tol if integer else VOLTAGE_RTOL)
                if key == "agreement":
                    row.update(spikes_float=0, spikes_lava=0,
                               max_abs_error=float(np.abs(values - want).max(initial=0)))
            row[key] = float(same.mean())
        rows.append(row)
    return rows


# ---------------------------------------------------------------- per-neuron parameters, --fixed

_DECAY_FIELDS = ("tau", "tau_syn", "tau_mem")
_FIELDS = {
    nir.LIF: ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    nir.IF: ("r", "v_threshold", "v_reset"),
    nir.LI: ("tau", "r", "v_leak"),
    nir.I: ("r",),
    nir.CubaLIF: ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    nir.CubaLI: ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    nir.Threshold: ("threshold",),
}


@dataclass
class Split:
    """How one per-neuron NIR node became uniform Loihi sub-populations.

    ``parts`` are the sub-population node names and the original neuron indices each
    holds; every part shares one integer (du, dv); thresholds and gains that differ per
    neuron are folded exactly into a ``Scale`` in front (``folded``).
    """

    node: str
    size: int
    parts: list[tuple[str, np.ndarray]]
    folded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "neurons": self.size, "subpopulations": len(self.parts),
                "sizes": [int(len(i)) for _, i in self.parts], "folded_scale": self.folded}


def _decay_keys(dyn: Dynamics, size: int) -> np.ndarray:
    """Each neuron's integer (du, dv), as Loihi would hold them: (size, 2)."""
    dv = np.broadcast_to(np.asarray(dyn.dv, np.float64), (size,))
    du = np.broadcast_to(np.asarray(dyn.du, np.float64), (size,))
    if dyn.memoryless:
        return np.zeros((size, 2), np.int64)
    dv_int = np.rint((1.0 - (1.0 - dv)) * fixed.DECAY_UNITY)
    du_int = np.clip(np.rint(du * fixed.DECAY_UNITY) - 1, 0, fixed.DECAY_UNITY - 1)
    return np.stack([du_int, dv_int], axis=1).astype(np.int64)


def _flat(values: Any, size: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, np.float64).ravel(), (size,)) \
        if np.size(values) in (1, size) else np.asarray(values, np.float64).ravel()


def _part_node(node: nir.NIRNode, idx: np.ndarray, theta: float | None) -> nir.NIRNode:
    """The uniform node of one sub-population: its decays, unit gains, one threshold."""
    kw = {}
    for f in _FIELDS[type(node)]:
        vals = np.asarray(getattr(node, f), np.float64).ravel()
        if f in _DECAY_FIELDS:
            kw[f] = np.full(len(idx), vals[idx[0]] if vals.size > 1 else vals[0])
        elif f in ("v_threshold", "threshold"):
            kw[f] = np.full(len(idx), theta)
        elif f in ("v_leak", "v_reset"):
            kw[f] = np.zeros(len(idx))
        else:  # r, w_in: their per-neuron part is folded into the Scale in front
            kw[f] = np.ones(len(idx))
    return type(node)(**kw)


def split_per_neuron(graph: nir.NIRGraph, conv: Convention, dt: float
                     ) -> tuple[nir.NIRGraph, list[Split], list[str]]:
    """The graph with every per-neuron node made of uniform nodes Loihi can hold.

    * Thresholds, r and w_in that differ per neuron are folded exactly into a ``Scale``
      in front (v is linear in the input, so ``v > θ_j`` is ``v·θ/θ_j > θ``).
    * Decays that differ per neuron: one sub-population per distinct integer (du, dv),
      each reading its neurons through a 0/1 ``Linear`` and sending through another.

    Returns the new graph, what was split, and the refusals (every node at once).
    """
    graph = flatten(graph)
    per_neuron = dataclasses.replace(conv, per_neuron=True)
    nodes = dict(graph.nodes)
    edges = list(graph.edges)
    splits: list[Split] = []
    refused: list[str] = []
    for n, node in graph.nodes.items():
        if type(node) not in _FIELDS:
            continue
        dyn = NEURON_LOWERINGS[type(node)](node, dt, n, per_neuron)
        if not dyn.per_neuron:
            continue
        size = max(np.size(v) for v in (dyn.gain, dyn.dv, dyn.du, dyn.v_th, dyn.bias)
                   if v is not None)
        keys = _decay_keys(dyn, size)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        groups = [np.flatnonzero(inverse.ravel() == k) for k in range(len(uniq))]
        loop = _in_loop(edges, n)
        shape = _declared(node)
        if len(groups) > 1 and loop:
            refused.append(f"{n} (per-neuron time constants in a recurrent layer: its "
                           f"{len(groups)} sub-populations would feed each other)")
            continue
        if len(groups) > 1 and len(shape) > 1:
            refused.append(f"{n} (per-neuron time constants in a {shape} layer: NIR has no "
                           "reshape to gather its sub-populations)")
            continue
        theta_all = None if dyn.v_th is None else _flat(dyn.v_th, size)
        theta = None if theta_all is None else float(np.mean(theta_all))
        gain_all, bias_all = _flat(dyn.gain, size), _flat(dyn.bias, size)
        scale = np.ones(size)
        parts: list[tuple[str, np.ndarray]] = []
        new_nodes: dict[str, nir.NIRNode] = {}
        for k, idx in enumerate(groups):
            pname = n if len(groups) == 1 else f"{n}.p{k}"
            part = _part_node(node, idx, theta)
            pd = NEURON_LOWERINGS[type(node)](part, dt, pname, conv)
            ratio = np.ones(len(idx)) if theta_all is None else theta / theta_all[idx]
            scale[idx] = gain_all[idx] * ratio / pd.gain
            if "v_leak" in _FIELDS[type(node)] and np.any(bias_all[idx] != 0):
                part = dataclasses.replace(part, v_leak=bias_all[idx] * ratio / pd.dv) \
                    if pd.dv else part
            new_nodes[pname] = part
            parts.append((pname, idx))
        folded = not np.allclose(scale, 1.0, rtol=0, atol=0)
        splits.append(Split(n, size, parts, folded))
        # Rewire: preds -> [fold] -> [gather_k] -> part_k -> [scatter_k] -> succs.
        preds = [parts[0][0] if s == n else s for s, d in edges if d == n]
        succs = [d for s, d in edges if s == n and d != n]
        edges = [(s, d) for s, d in edges if n not in (s, d)]
        del nodes[n]
        nodes.update(new_nodes)
        own = _own_weights(nodes, edges, preds)
        if own is not None:
            # One weighted node feeds n alone: each part gets its own rows of it, scaled,
            # so no shared intermediate (which lowering would relay) appears.
            w, b = own
            (p,) = preds
            upstream = [s for s, d in edges if d == p]
            edges = [(s, d) for s, d in edges if p not in (s, d)]
            del nodes[p]
            for pname, idx in parts:
                q = f"{p}.{pname}" if len(parts) > 1 else p
                nodes[q] = nir.Affine(weight=scale[idx, None] * w[idx],
                                      bias=scale[idx] * b[idx])
                edges += [(u, q) for u in upstream] + [(q, pname)]
            preds, folded, parts_fed = [], False, True
        else:
            parts_fed = False
        feeders = preds
        if folded:
            nodes[f"{n}.fold"] = nir.Scale(scale=scale)
            edges += [(s, f"{n}.fold") for s in preds]
            feeders = [f"{n}.fold"]
        for pname, idx in parts:
            if parts_fed:
                continue
            if len(parts) == 1:
                edges += [(f, pname) for f in feeders]
            else:
                nodes[f"{pname}.gather"] = nir.Linear(weight=np.eye(size)[idx])
                edges += [(f, f"{pname}.gather") for f in feeders]
                edges.append((f"{pname}.gather", pname))
        for d in succs:
            if len(parts) == 1 or isinstance(graph.nodes[d], nir.Output):
                edges.append((parts[0][0], d))
                continue
            for pname, idx in parts:
                if f"{pname}.scatter" not in nodes:
                    nodes[f"{pname}.scatter"] = nir.Linear(weight=np.eye(size)[:, idx])
                    edges.append((pname, f"{pname}.scatter"))
                edges.append((f"{pname}.scatter", d))
    out = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                       metadata=dict(graph.metadata))
    return out, splits, refused


def _own_weights(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]],
                 preds: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of the single Affine/Linear feeding a node and nothing else, else None."""
    if len(preds) != 1 or not isinstance(nodes.get(preds[0]), (nir.Affine, nir.Linear)):
        return None
    p = preds[0]
    if [d for s, d in edges if s == p] or not [s for s, d in edges if d == p]:
        return None  # the node's edge to n is already removed: any left is another consumer
    w = np.asarray(nodes[p].weight, np.float64)
    if w.ndim != 2:
        return None
    b = np.asarray(getattr(nodes[p], "bias", np.zeros(w.shape[0])), np.float64).ravel()
    return w, np.broadcast_to(b, (w.shape[0],)).copy()


def _in_loop(edges: list[tuple[str, str]], start: str) -> bool:
    """Whether ``start`` reaches itself again along the edges."""
    seen, todo = set(), [d for s, d in edges if s == start]
    while todo:
        a = todo.pop()
        if a == start:
            return True
        if a not in seen:
            seen.add(a)
            todo += [d for s, d in edges if s == a]
    return False


def _declared(node: nir.NIRNode) -> tuple[int, ...]:
    shape = np.atleast_1d(next(iter(node.input_type.values()), np.array([])))
    return tuple(int(v) for v in shape)
