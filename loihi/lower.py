"""Lower a NIR graph to a Loihi-integer network description (:class:`LoweredNetwork`).

The result is plain data: integer weights, exponents, decays and thresholds,
plus the wiring and the latency of every neuron group. :mod:`lrfdyn.loihi.build`
turns it into Lava processes and :mod:`lrfdyn.sim.reference` runs it in numpy;
both read the same object, so they cannot disagree about a parameter.

Dispatch is by table. :data:`ROLES` maps each supported NIR node type to its
role (input, synapse, neuron, output); :data:`SYNAPSE_LOWERINGS` and
:data:`NEURON_LOWERINGS` map types to the functions that lower them. Every
unsupported node in a graph is named in one error, not one at a time.

Fixed-point mapping of a neuron group (one NIR ``LIF`` node, forward Euler with
step dt, gain ``g = dt·r/tau``): the float voltage v becomes the integer
``v·Λ`` with ``Λ = 64·vth/v_threshold``, so the threshold is exact. An incoming
synapse with float weights W, whose source sends integers ``L`` times its float
value (L = 255 for 8-bit pixels, 1 for spikes), gets integer weights
``W_int = g·W·Λ / (64·L·2^weight_exp)``; vth is the largest value that keeps
every incoming |W_int| ≤ 254. Graded 8-bit inputs use ``weight_exp = −8`` so the
accumulated sum stays inside the 24-bit current register.

Biases travel as synapses, not as the LIF's ``bias_mant``. A Loihi bias acts
from the first step, while the input reaches a group only after its latency
(one step per synapse), so a neuron bias would integrate alone during the
pipeline's fill and break the equivalence with the float model. Instead a
constant source :data:`BIAS_SOURCE` (a spike every step) feeds each biased group
through a synapse delayed to that group's latency: the bias arrives together
with the first input, exactly as in the float model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed

#: Lowering format version, recorded in reports.
LOWERING_VERSION = 1
#: Name of the always-on source that carries biases (a spike every step).
BIAS_SOURCE = "bias"


# ---------------------------------------------------------------- lowered network


@dataclass(eq=False)
class InputSpec:
    """The network input: integer payloads sent every step (graded when levels > 1)."""

    name: str
    size: int
    levels: int
    timesteps: int

    @property
    def num_message_bits(self) -> int:
        return _message_bits(self.levels)


def _message_bits(levels: int) -> int:
    """Payload bits of a source with ``levels`` (1 = binary spikes, which carry none)."""
    return 0 if levels == 1 else max(1, math.ceil(math.log2(levels + 1)))


@dataclass(eq=False)
class SynapseSpec:
    """A Dense synapse layer from ``src`` (input or group) to group ``dst``."""

    name: str
    src: str
    dst: str
    weights: np.ndarray  # (n_dst, n_src) int64, even, in [-256, 254]
    weight_exp: int
    delay: int = 0
    num_message_bits: int = 0
    clipped: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        w = self.weights
        if w.ndim != 2:
            raise ValidationError(f"synapse {self.name}: weights must be 2-D, got {w.shape}")
        if w.size and (w.min() < fixed.WEIGHT_MIN or w.max() > fixed.WEIGHT_MAX):
            raise ValidationError(
                f"synapse {self.name}: integer weights {w.min()}..{w.max()} exceed Loihi's "
                f"8-bit range {fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}"
            )
        if not 0 <= self.delay <= fixed.MAX_DELAY:
            raise ValidationError(
                f"synapse {self.name}: delay {self.delay} exceeds Loihi's maximum "
                f"{fixed.MAX_DELAY}; shorten the shortcut path"
            )

    @property
    def fan_out(self) -> np.ndarray:
        """Non-zero synapses leaving each source neuron (what one spike costs)."""
        return np.count_nonzero(self.weights, axis=0)


@dataclass(eq=False)
class NeuronGroup:
    """A group of Loihi CUBA LIF neurons lowered from one NIR neuron node."""

    name: str
    size: int
    params: fixed.LifParams
    latency: int = 0
    float_params: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False)
class LoweredNetwork:
    """Everything needed to run a network on Lava or on the integer reference."""

    input: InputSpec
    groups: dict[str, NeuronGroup]  # in topological order
    synapses: list[SynapseSpec]
    output: str
    dt: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def latency(self) -> int:
        """Steps from an input to the output group's response to it."""
        return self.groups[self.output].latency

    def incoming(self, group: str) -> list[SynapseSpec]:
        return [s for s in self.synapses if s.dst == group]

    def source_size(self, name: str) -> int:
        if name == BIAS_SOURCE:
            return 1
        return self.input.size if name == self.input.name else self.groups[name].size

    @property
    def has_bias(self) -> bool:
        return any(s.src == BIAS_SOURCE for s in self.synapses)

    def steps_per_sample(self) -> int:
        """Lava steps per sample: T input steps plus the pipeline's fill."""
        return self.input.timesteps + self.latency

    def quantization_report(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.synapses:
            g = self.groups[s.dst]
            rows.append({
                "synapse": s.name, "src": s.src, "dst": s.dst, "shape": list(s.weights.shape),
                "weight_exp": s.weight_exp, "weight_min": int(s.weights.min()),
                "weight_max": int(s.weights.max()), "clipped": s.clipped, "delay": s.delay,
                "scale": s.scale, "vth": g.params.vth, "dv": g.params.dv,
            })
        return rows


# ---------------------------------------------------------------- dispatch tables

#: Role of each supported NIR node type.
ROLES: dict[type, str] = {
    nir.Input: "input",
    nir.Output: "output",
    nir.Affine: "synapse",
    nir.Linear: "synapse",
    nir.LIF: "neuron",
}

#: float (weight, bias) of a synapse node; bias is None when the node has none.
SynapseLowering = Callable[[Any], tuple[np.ndarray, np.ndarray | None]]
SYNAPSE_LOWERINGS: dict[type, SynapseLowering] = {}

#: (gain g, keep factor, threshold, per-step float bias) of a neuron node.
NeuronLowering = Callable[[Any, float, str], dict[str, Any]]
NEURON_LOWERINGS: dict[type, NeuronLowering] = {}


def register_synapse(node_type: type) -> Callable[[SynapseLowering], SynapseLowering]:
    def deco(fn: SynapseLowering) -> SynapseLowering:
        SYNAPSE_LOWERINGS[node_type] = fn
        return fn

    return deco


def register_neuron(node_type: type) -> Callable[[NeuronLowering], NeuronLowering]:
    def deco(fn: NeuronLowering) -> NeuronLowering:
        NEURON_LOWERINGS[node_type] = fn
        return fn

    return deco


@register_synapse(nir.Affine)
def _affine(node: nir.Affine) -> tuple[np.ndarray, np.ndarray | None]:
    return np.asarray(node.weight, np.float64), np.asarray(node.bias, np.float64)


@register_synapse(nir.Linear)
def _linear(node: nir.Linear) -> tuple[np.ndarray, np.ndarray | None]:
    return np.asarray(node.weight, np.float64), None


def _uniform(name: str, field_name: str, values: Any) -> float:
    arr = np.asarray(values, np.float64).ravel()
    if arr.size and not np.allclose(arr, arr[0]):
        raise UnsupportedNodeError(
            f"{name}: per-neuron {field_name} is not supported by the Loihi LIF lowering "
            "(Loihi shares du/dv/vth across a process); use one value per layer"
        )
    return float(arr[0])


@register_neuron(nir.LIF)
def _lif(node: nir.LIF, dt: float, name: str) -> dict[str, Any]:
    tau = _uniform(name, "tau", node.tau)
    r = _uniform(name, "r", node.r)
    if _uniform(name, "v_reset", node.v_reset) != 0.0:
        raise UnsupportedNodeError(
            f"{name}: v_reset != 0; Loihi's LIF resets the voltage to 0"
        )
    if tau < dt:
        raise ValidationError(
            f"{name}: tau={tau} s is shorter than one step dt={dt} s; forward Euler is unstable"
        )
    gain = dt / tau
    v_leak = np.asarray(node.v_leak, np.float64).ravel()
    return {
        "gain": gain * r,
        "keep": 1.0 - gain,
        "v_th": _uniform(name, "v_threshold", node.v_threshold),
        "bias": gain * v_leak,
        "tau_steps": tau / dt,
    }


# ---------------------------------------------------------------- graph walking


def _check_supported(graph: nir.NIRGraph) -> None:
    bad = sorted({
        f"{type(node).__name__} ({name})"
        for name, node in graph.nodes.items()
        if type(node) not in ROLES
    })
    if bad:
        raise UnsupportedNodeError(
            f"unsupported NIR node(s): {', '.join(bad)}; lrfdyn lowers "
            f"{', '.join(sorted(t.__name__ for t in ROLES))}"
        )


def _topological(graph: nir.NIRGraph) -> list[str]:
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise ValidationError(f"edge ({src}, {dst}) names unknown node {end!r}")
        preds[dst].append(src)
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise UnsupportedNodeError(
                f"recurrent edge into {n!r}: this lowering handles feed-forward graphs only"
            )
        state[n] = 1
        for p in preds[n]:
            visit(p)
        state[n] = 2
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order


def _sole(items: list[str], what: str) -> str:
    if len(items) != 1:
        raise ValidationError(f"expected exactly one {what}, found {len(items)}: {items}")
    return items[0]


def lower(graph: nir.NIRGraph) -> LoweredNetwork:
    """Lower a feed-forward NIR graph of Affine/Linear synapses and LIF neurons.

    Raises:
        UnsupportedNodeError: for node types, parameters or topologies Loihi cannot run,
            naming every offending node.
        ValidationError: for malformed graphs (dangling edges, missing metadata).
    """
    _check_supported(graph)
    order = _topological(graph)
    role = {n: ROLES[type(graph.nodes[n])] for n in graph.nodes}
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    meta = dict(graph.metadata)
    dt = float(meta.get("dt", 1.0))
    timesteps = int(meta.get("timesteps", 0))
    if timesteps < 1:
        raise ValidationError(
            "graph metadata has no 'timesteps'; export with `lrfdyn export` or set it"
        )
    levels = int(meta.get("input_levels", 1))

    in_name = _sole([n for n in order if role[n] == "input"], "Input node")
    in_node = graph.nodes[in_name]
    in_size = int(np.prod(next(iter(in_node.input_type.values()))))
    spec_in = InputSpec(name=in_name, size=in_size, levels=levels, timesteps=timesteps)
    out_name = _sole([n for n in order if role[n] == "output"], "Output node")
    out_src = _sole(preds[out_name], "source of the Output node")
    if role[out_src] != "neuron":
        raise UnsupportedNodeError(
            f"Output is fed by {out_src!r}, not by neurons; the readout counts spikes"
        )

    groups: dict[str, NeuronGroup] = {}
    synapses: list[SynapseSpec] = []
    for name in order:
        if role[name] != "neuron":
            continue
        node = graph.nodes[name]
        neuron = NEURON_LOWERINGS[type(node)](node, dt, name)
        incoming = []
        for syn_name in preds[name]:
            if role[syn_name] != "synapse":
                raise UnsupportedNodeError(
                    f"{name} is fed directly by {syn_name!r}; put a synapse between neurons"
                )
            src = _sole(preds[syn_name], f"source of {syn_name}")
            if role[src] not in ("input", "neuron"):
                raise UnsupportedNodeError(
                    f"{syn_name} is fed by {src!r} ({type(graph.nodes[src]).__name__}); "
                    "chains of linear nodes are not fused yet"
                )
            w, b = SYNAPSE_LOWERINGS[type(graph.nodes[syn_name])](graph.nodes[syn_name])
            src_levels = levels if src == in_name else 1
            incoming.append((syn_name, src, w, b, src_levels))
        groups[name], new = _quantize_group(name, neuron, incoming)
        synapses.extend(new)

    _assign_latencies(spec_in, groups, synapses)
    return LoweredNetwork(
        input=spec_in, groups=groups, synapses=synapses, output=out_src, dt=dt, metadata=meta
    )


def _quantize_group(
    name: str, neuron: dict[str, Any], incoming: list[tuple[str, str, np.ndarray, Any, int]]
) -> tuple[NeuronGroup, list[SynapseSpec]]:
    """Choose vth (hence Λ) for one group and quantize its incoming synapses and bias."""
    gain, theta = neuron["gain"], neuron["v_th"]
    if theta <= 0:
        raise UnsupportedNodeError(f"{name}: v_threshold must be positive, got {theta}")
    size = incoming[0][2].shape[0] if incoming else 0
    exps = {}
    vth = fixed.VTH_MAX
    for syn_name, _, w, _, levels in incoming:
        if w.shape[0] != size:
            raise ValidationError(
                f"{syn_name}: {w.shape[0]} outputs but {name} has {size} neurons"
            )
        exp = 0 if levels == 1 else -math.ceil(math.log2(levels + 1))
        exps[syn_name] = exp
        peak = gain * float(np.max(np.abs(w))) if w.size else 0.0
        if peak > 0:
            vth = min(vth, math.floor(fixed.WEIGHT_MAX * theta * levels * 2.0**exp / peak))
    if vth < 1:
        raise LoihiRangeError(
            f"{name}: weights are too large relative to the threshold for 8-bit Loihi "
            "weights; retrain with weight decay or a larger threshold"
        )
    lam = 64.0 * vth / theta
    synapses = []
    bias = np.broadcast_to(np.asarray(neuron["bias"], np.float64), (size,)).copy()
    for syn_name, src, w, b, levels in incoming:
        scale = gain * lam / (64.0 * levels)
        q = fixed.quantize_to_mantissa(w, scale, exps[syn_name])
        synapses.append(SynapseSpec(
            name=syn_name, src=src, dst=name, weights=q.mant, weight_exp=q.exp,
            num_message_bits=_message_bits(levels), clipped=q.clipped, scale=scale,
        ))
        if b is not None:
            bias += gain * b
    if np.any(bias != 0):
        synapses.append(_bias_synapse(name, bias * lam))
    params = fixed.LifParams(
        du=fixed.DECAY_UNITY - 1, dv=fixed.decay_from_factor(neuron["keep"]), vth=vth
    )
    group = NeuronGroup(name=name, size=size, params=params, float_params={
        "tau_steps": neuron["tau_steps"], "v_th": theta, "lambda": lam,
    })
    return group, synapses


def _bias_synapse(group: str, bias_v: np.ndarray) -> SynapseSpec:
    """A synapse from :data:`BIAS_SOURCE` adding ``bias_v`` (voltage units) every step.

    Its input current ``(w·2^exp) << 6`` must equal ``bias_v``; the exponent is the
    smallest that fits the largest bias into 8-bit weights.
    """
    per_step = bias_v / (1 << fixed.ACT_SHIFT)
    peak = float(np.max(np.abs(per_step)))
    exp = max(0, math.ceil(math.log2(peak / fixed.WEIGHT_MAX))) if peak > 0 else 0
    q = fixed.quantize_to_mantissa(per_step[:, None], 1.0, exp)
    return SynapseSpec(
        name=f"{group}.bias", src=BIAS_SOURCE, dst=group, weights=q.mant, weight_exp=exp,
        clipped=q.clipped, scale=1.0,
    )


def _assign_latencies(
    spec_in: InputSpec, groups: dict[str, NeuronGroup], synapses: list[SynapseSpec]
) -> None:
    """Each synapse costs one step; pad shorter paths with delays so all arrive together."""
    latency = {spec_in.name: 0, BIAS_SOURCE: 0}
    for name, group in groups.items():
        inc = [s for s in synapses if s.dst == name]
        # The bias follows the data; it never sets the pace.
        group.latency = max(latency[s.src] + 1 for s in inc if s.src != BIAS_SOURCE)
        latency[name] = group.latency
        for s in inc:
            s.delay = group.latency - latency[s.src] - 1
            s.__post_init__()
