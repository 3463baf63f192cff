"""Lower a NIR graph to a Loihi-integer network description (:class:`LoweredNetwork`).

The result is plain data: integer weights, exponents, decays and thresholds,
plus the wiring and the latency of every neuron group. :mod:`lrfdyn.loihi.build`
turns it into Lava processes and :mod:`lrfdyn.sim.reference` runs it in numpy;
both read the same object, so they cannot disagree about a parameter.

Dispatch is by table. Linear node types are those of
:data:`lrfdyn.loihi.linear.MATRIX_BUILDERS`; every chain or sum of linear nodes
between neurons is composed into one synapse matrix per (source, target) pair.
:data:`NEURON_LOWERINGS` maps neuron node types (LIF, Threshold) to their
lowering. Every unsupported node in a graph is named in one error, not one at a
time.

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
import scipy.sparse as sp

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.linear import MATRIX_BUILDERS, Expression, linear_map
from lrfdyn.registry import registrar

#: Lowering format version, recorded in simulate reports and netx files.
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
    weights: np.ndarray | sp.csr_matrix  # (n_dst, n_src) int64, even, in [-256, 254]
    weight_exp: int
    delay: int = 0
    num_message_bits: int = 0
    clipped: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        w = self.weights
        if w.ndim != 2:
            raise ValidationError(f"synapse {self.name}: weights must be 2-D, got {w.shape}")
        vals = w.data if sp.issparse(w) else w
        if vals.size and (vals.min() < fixed.WEIGHT_MIN or vals.max() > fixed.WEIGHT_MAX):
            raise ValidationError(
                f"synapse {self.name}: integer weights {vals.min()}..{vals.max()} exceed "
                f"Loihi's 8-bit range {fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}"
            )
        if not 0 <= self.delay <= fixed.MAX_DELAY:
            raise ValidationError(
                f"synapse {self.name}: delay {self.delay} exceeds Loihi's maximum "
                f"{fixed.MAX_DELAY}; shorten the shortcut path"
            )

    @property
    def fan_out(self) -> np.ndarray:
        """Non-zero synapses leaving each source neuron (what one spike costs)."""
        if sp.issparse(self.weights):
            return np.asarray((self.weights != 0).sum(axis=0)).ravel()
        return np.count_nonzero(self.weights, axis=0)

    @property
    def nnz(self) -> int:
        """Stored non-zero weights."""
        return int(self.fan_out.sum())

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weights)

    @property
    def stored_weights(self) -> int:
        """Weights the layer stores: all of a dense matrix, the non-zeros of a sparse one."""
        return int(self.weights.nnz) if self.is_sparse else int(self.weights.size)

    @property
    def memory_bits(self) -> int:
        """8 bits per stored weight plus a 16-bit buffer per target neuron and delay slot."""
        return (self.stored_weights * fixed.WEIGHT_BITS
                + self.weights.shape[0] * (self.delay + 1) * fixed.BUFFER_BITS)


@dataclass(eq=False)
class NeuronGroup:
    """A group of Loihi CUBA LIF neurons lowered from one NIR neuron node."""

    name: str
    size: int
    params: fixed.LifParams
    latency: int = 0
    shape: tuple[int, ...] = ()
    float_params: dict[str, float] = field(default_factory=dict)

    @property
    def state_bits(self) -> int:
        """u and v of every neuron at 24 bits each."""
        return self.size * 2 * fixed.UV_BITS


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
                "weight_exp": s.weight_exp, "synapses": s.nnz,
                "weight_min": int(s.weights.min()), "weight_max": int(s.weights.max()),
                "clipped": s.clipped, "delay": s.delay,
                "scale": s.scale, "vth": g.params.vth, "dv": g.params.dv,
            })
        return rows


# ---------------------------------------------------------------- neuron lowerings

#: Gain, leak and threshold of a neuron node (forward Euler at the graph's dt).
NeuronLowering = Callable[[Any, float, str], dict[str, Any]]
NEURON_LOWERINGS: dict[type, NeuronLowering] = {}


register_neuron = registrar(NEURON_LOWERINGS)


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
        raise UnsupportedNodeError(f"{name}: v_reset != 0; Loihi's LIF resets the voltage to 0")
    if tau < dt:
        raise ValidationError(
            f"{name}: tau={tau} s is shorter than one step dt={dt} s; forward Euler is unstable"
        )
    gain = dt / tau
    return {
        "gain": gain * r,
        "dv": fixed.decay_from_factor(1.0 - gain),
        "v_th": _uniform(name, "v_threshold", node.v_threshold),
        "bias": gain * np.asarray(node.v_leak, np.float64).ravel(),
        "tau_steps": tau / dt,
        "memoryless": False,
    }


@register_neuron(nir.Threshold)
def _threshold(node: nir.Threshold, dt: float, name: str) -> dict[str, Any]:
    """A memoryless ``z = H(I − θ)``: a LIF whose v decays to 0 within one step.

    With dv = 4095, v keeps ``|v| >> 12`` of its value, which is 0 while |v| < 4096;
    quantization keeps every input below that bound (checked, not assumed).
    """
    return {
        "gain": 1.0,
        "dv": fixed.DECAY_UNITY - 1,
        "v_th": _uniform(name, "threshold", node.threshold),
        "bias": np.zeros(1),
        "tau_steps": 0.0,
        "memoryless": True,
    }


# ---------------------------------------------------------------- graph walking

_FIXED_ROLES = {nir.Input: "input", nir.Output: "output"}


def _role(node: nir.NIRNode) -> str | None:
    t = type(node)
    if t in _FIXED_ROLES:
        return _FIXED_ROLES[t]
    if t in NEURON_LOWERINGS:
        return "neuron"
    if t in MATRIX_BUILDERS:
        return "linear"
    return None


def supported_types() -> list[str]:
    return sorted(t.__name__ for t in (*_FIXED_ROLES, *NEURON_LOWERINGS, *MATRIX_BUILDERS))


def _check_supported(graph: nir.NIRGraph) -> None:
    bad = sorted({
        f"{type(node).__name__} ({name})"
        for name, node in graph.nodes.items()
        if _role(node) is None
    })
    if bad:
        raise UnsupportedNodeError(
            f"unsupported NIR node(s): {', '.join(bad)}; lrfdyn lowers {', '.join(supported_types())}"
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


def _input_shape(node: nir.Input) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(next(iter(node.input_type.values()))))


def lower(graph: nir.NIRGraph) -> LoweredNetwork:
    """Lower a feed-forward NIR graph of linear nodes and LIF/Threshold neurons.

    Raises:
        UnsupportedNodeError: for node types, parameters or topologies Loihi cannot run,
            naming every offending node.
        LoihiRangeError: for values that do not fit Loihi's bit widths.
        ValidationError: for malformed graphs (dangling edges, shapes, missing metadata).
    """
    _check_supported(graph)
    order = _topological(graph)
    role = {n: _role(graph.nodes[n]) for n in graph.nodes}
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
    in_shape = _input_shape(graph.nodes[in_name])
    spec_in = InputSpec(name=in_name, size=int(np.prod(in_shape)), levels=levels,
                        timesteps=timesteps)
    out_name = _sole([n for n in order if role[n] == "output"], "Output node")
    out_src = _sole(preds[out_name], "source of the Output node")
    if role[out_src] != "neuron":
        raise UnsupportedNodeError(
            f"Output is fed by {out_src!r}, not by neurons; the readout counts spikes"
        )

    shapes: dict[str, tuple[int, ...]] = {in_name: in_shape}
    exprs: dict[str, Expression] = {}
    groups: dict[str, NeuronGroup] = {}
    synapses: list[SynapseSpec] = []

    def incoming(name: str) -> Expression:
        if not preds[name]:
            raise ValidationError(f"node {name!r} has no incoming edge")
        total: Expression | None = None
        for p in preds[name]:
            e = exprs[p] if role[p] == "linear" else Expression.source(p, shapes[p])
            total = e if total is None else total.plus(e)
        assert total is not None
        return total

    for name in order:
        if role[name] == "linear":
            e = incoming(name)
            exprs[name] = e.then(linear_map(graph.nodes[name], e.shape, name))
        elif role[name] == "neuron":
            node = graph.nodes[name]
            neuron = NEURON_LOWERINGS[type(node)](node, dt, name)
            e = incoming(name)
            shapes[name] = e.shape
            src_levels = {src: (levels if src == in_name else 1) for src in e.terms}
            groups[name], new = _quantize_group(name, neuron, e, src_levels)
            synapses.extend(new)

    _assign_latencies(spec_in, groups, synapses)
    return LoweredNetwork(
        input=spec_in, groups=groups, synapses=synapses, output=out_src, dt=dt, metadata=meta
    )


def _max_abs(m: sp.spmatrix) -> float:
    return float(np.max(np.abs(m.data))) if m.nnz else 0.0


def _quantize_group(
    name: str, neuron: dict[str, Any], e: Expression, src_levels: dict[str, int]
) -> tuple[NeuronGroup, list[SynapseSpec]]:
    """Choose vth (hence Λ) for one group and quantize its incoming synapses and bias."""
    gain, theta = neuron["gain"], neuron["v_th"]
    if theta <= 0:
        raise UnsupportedNodeError(f"{name}: threshold must be positive, got {theta}")
    size = e.bias.size
    bias = e.bias * gain + np.broadcast_to(neuron["bias"], (size,))
    exps = {src: (0 if lv == 1 else -math.ceil(math.log2(lv + 1)))
            for src, lv in src_levels.items()}
    vth = fixed.VTH_MAX
    for src, mat in e.terms.items():
        peak = gain * _max_abs(mat)
        if peak > 0:
            lv = src_levels[src]
            vth = min(vth, math.floor(fixed.WEIGHT_MAX * theta * lv * 2.0**exps[src] / peak))
    if neuron["memoryless"]:
        # Keep every input current below 4096 so that v carries nothing to the next step:
        # |u| <= gain·Λ·(Σ|W| + |b|) with Λ = 64·vth/θ, and every input is at most 1.
        rows = sum(np.asarray(abs(m).sum(axis=1)).ravel() for m in e.terms.values())
        reach = gain * float(np.max(rows + np.abs(bias)))
        if reach > 0:
            # 3/4 of the bound leaves room for rounding the weights to even mantissas.
            vth = min(vth, math.floor(0.75 * (fixed.DECAY_UNITY - 1) * theta / (64.0 * reach)))
    if vth < 1:
        raise LoihiRangeError(
            f"{name}: weights are too large relative to the threshold for 8-bit Loihi "
            "weights; retrain with weight decay or a larger threshold"
        )
    lam = 64.0 * vth / theta
    synapses = []
    for src, mat in e.terms.items():
        lv = src_levels[src]
        scale = gain * lam / (64.0 * lv)
        q = fixed.quantize_to_mantissa(mat, scale, exps[src])
        weights = q.mant if _is_sparse_enough(q.mant) else q.mant.toarray()
        synapses.append(SynapseSpec(
            name=f"{src}->{name}", src=src, dst=name, weights=weights, weight_exp=q.exp,
            num_message_bits=_message_bits(lv), clipped=q.clipped, scale=scale,
        ))
    if np.any(bias != 0):
        synapses.append(_bias_synapse(name, bias * lam))
    params = fixed.LifParams(du=fixed.DECAY_UNITY - 1, dv=neuron["dv"], vth=vth)
    group = NeuronGroup(name=name, size=size, params=params, shape=e.shape, float_params={
        "tau_steps": neuron["tau_steps"], "v_th": theta, "lambda": lam,
    })
    if neuron["memoryless"]:
        _check_memoryless(group, synapses)
    return group, synapses


#: Below this density a synapse layer is stored and simulated as a Lava Sparse process.
SPARSE_BELOW = 0.25


def _is_sparse_enough(m: sp.spmatrix) -> bool:
    return m.nnz < SPARSE_BELOW * m.shape[0] * m.shape[1]


def _check_memoryless(group: NeuronGroup, synapses: list[SynapseSpec]) -> None:
    """Prove |u| < 4096 for every input, so dv = 4095 forgets v completely each step."""
    worst = np.zeros(group.size)
    for s in synapses:
        w = abs(s.weights) if s.is_sparse else np.abs(s.weights)
        payload = 1 if s.num_message_bits == 0 else (1 << s.num_message_bits) - 1
        worst = worst + np.asarray(w.sum(axis=1)).ravel() * payload * 2.0**s.weight_exp
    if worst.max(initial=0) * (1 << fixed.ACT_SHIFT) >= fixed.DECAY_UNITY:
        raise LoihiRangeError(
            f"{group.name}: a memoryless neuron's input can reach "
            f"{int(worst.max()) << fixed.ACT_SHIFT} >= 4096, so its voltage would leak into "
            "the next step; lower its fan-in or use a LIF"
        )


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
