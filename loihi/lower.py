"""Lower a NIR graph to a Loihi-integer network description (:class:`LoweredNetwork`).

The result is plain data: integer weights, exponents, decays and thresholds,
plus the wiring and the latency of every neuron group. :mod:`lrfdyn.loihi.build`
turns it into Lava processes and :mod:`lrfdyn.sim.reference` runs it in numpy;
both read the same object, so they cannot disagree about a parameter.

Lowering runs in two stages. :func:`wire` flattens subgraphs, discretizes every
neuron node into :class:`~lrfdyn.loihi.neurons.Dynamics` (under an explicit
producer convention) and composes every chain or sum of linear nodes between
neurons (:data:`lrfdyn.loihi.linear.MATRIX_BUILDERS`, plus NIR ``Delay``) into one
matrix per (source, lag, target). It is shared with the float lowering
(:mod:`lrfdyn.loihi.float_lower`). :func:`lower` then quantizes each group.
Every unsupported node in a graph is named in one error, not one at a time.

Time: group g's step t runs at Lava step ``t + latency(g)``. A synapse carries
its source ``lag`` logical steps late: 0 on a feed-forward edge, the NIR Delay
in steps behind one, and 1 on a group's edge into itself (the previous step's
spikes, as snnTorch's RLeaky). Its Lava delay makes up the rest
(:func:`assign_latencies`).

Fixed-point mapping of a neuron group (forward Euler with step dt, input gain
``g``; ``g = dt·r/tau`` for a LIF): the float voltage v becomes the integer
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
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.linear import MATRIX_BUILDERS, Expression, Tap, linear_map
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, NIR, Convention, Dynamics

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
    #: Logical steps between the source's output and the target seeing it (NIR Delay).
    lag: int = 0
    #: Carries the previous step's spikes of a group back into itself.
    recurrent: bool = False

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
    #: ``subtract_next`` (snnTorch) in float networks only.
    reset: str = "zero"
    #: False for a voltage readout (LI, I, CubaLI), which never spikes.
    spiking: bool = True

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
                "scale": s.scale, "vth": g.params.vth, "du": g.params.du, "dv": g.params.dv,
            })
        return rows


# ---------------------------------------------------------------- graph walking

_FIXED_ROLES = {nir.Input: "input", nir.Output: "output", nir.Delay: "delay"}


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


def _sole(items: list[str], what: str) -> str:
    if len(items) != 1:
        raise ValidationError(f"expected exactly one {what}, found {len(items)}: {items}")
    return items[0]


def _input_shape(node: nir.Input) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(next(iter(node.input_type.values()))))


def _declared_shape(node: nir.NIRNode) -> tuple[int, ...] | None:
    """The shape a neuron node's own parameters give it (None for scalar parameters)."""
    shape = np.atleast_1d(next(iter(node.input_type.values()), np.array([])))
    return tuple(int(v) for v in shape) if shape.size and shape.min() > 0 else None


def delay_steps(node: nir.Delay, dt: float, name: str) -> np.ndarray:
    steps = np.asarray(node.delay, np.float64) / dt
    lags = np.rint(steps).astype(np.int64)
    if not np.allclose(steps, lags, atol=1e-6) or lags.min(initial=0) < 0:
        raise ValidationError(
            f"{name}: delays {node.delay} are not whole multiples of dt={dt:g} s; pick --dt"
        )
    return lags


@dataclass(eq=False)
class GroupPlan:
    """One neuron group before quantization: its dynamics and the taps that drive it."""

    name: str
    dynamics: Dynamics
    inputs: Expression


@dataclass(eq=False)
class Wiring:
    """A NIR graph as neuron groups (in an order where forward sources come first)."""

    input: InputSpec
    input_shape: tuple[int, ...]
    groups: list[GroupPlan]
    output: str
    dt: float
    convention: Convention
    metadata: dict[str, Any]
    recurrent: set[tuple[str, str]]


def wire(graph: nir.NIRGraph, conv: Convention = NIR, *, timesteps: int | None = None,
         levels: int | None = None) -> Wiring:
    """Discretize every neuron node and compose the linear nodes between them.

    Subgraphs are flattened first. A group may feed itself (through linear nodes): that
    edge carries the previous step's spikes, as snnTorch's RLeaky does. Loops through
    several groups are refused, since each synapse in them would cost Lava a step.
    """
    graph = flatten(graph)
    _check_supported(graph)
    role = {n: _role(node) for n, node in graph.nodes.items()}
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise ValidationError(f"edge ({src}, {dst}) names unknown node {end!r}")
        preds[dst].append(src)
    meta = dict(graph.metadata)
    dt = float(meta.get("dt", conv.dt))
    timesteps = int(meta.get("timesteps", 0)) if timesteps is None else timesteps
    if timesteps < 1:
        raise ValidationError(
            "graph metadata has no 'timesteps'; export with `lrfdyn export` or set it"
        )
    levels = int(meta.get("input_levels", 1)) if levels is None else levels
    in_name = _sole([n for n in graph.nodes if role[n] == "input"], "Input node")
    in_shape = _input_shape(graph.nodes[in_name])
    out_name = _sole([n for n in graph.nodes if role[n] == "output"], "Output node")
    out_src = _sole(preds[out_name], "source of the Output node")
    if role[out_src] != "neuron":
        raise UnsupportedNodeError(
            f"Output is fed by {out_src!r}, not by neurons; the readout counts spikes"
        )

    shapes: dict[str, tuple[int, ...]] = {in_name: in_shape}
    exprs: dict[str, Expression] = {}
    inputs: dict[str, Expression] = {}
    busy: set[str] = set()

    def sent_by(n: str) -> Expression:
        """What node ``n`` passes downstream, as taps of neuron outputs and the input."""
        if role[n] in ("input", "neuron"):
            return Expression.source(n, shape_of(n))
        if n not in exprs:
            if n in busy:
                raise UnsupportedNodeError(
                    f"a loop of linear nodes through {n!r} contains no neuron; it has no "
                    "discrete-time meaning"
                )
            busy.add(n)
            e, node = summed_into(n), graph.nodes[n]
            exprs[n] = (e.delayed(delay_steps(node, dt, n)) if role[n] == "delay"
                        else e.then(linear_map(node, e.shape, n)))
        return exprs[n]

    def summed_into(n: str) -> Expression:
        if not preds[n]:
            raise ValidationError(f"node {n!r} has no incoming edge")
        total = sent_by(preds[n][0])
        for p in preds[n][1:]:
            total = total.plus(sent_by(p))
        return total

    def shape_of(n: str) -> tuple[int, ...]:
        if n not in shapes:
            if n in busy:  # reached again through its own recurrent loop
                declared = _declared_shape(graph.nodes[n])
                if declared is None:
                    raise ValidationError(
                        f"{n}: its size cannot be inferred through its recurrent loop; give "
                        "its parameters one value per neuron"
                    )
                shapes[n] = declared
                return declared
            busy.add(n)
            inputs[n] = summed_into(n)
            if n in shapes and np.prod(shapes[n]) != inputs[n].bias.size:
                raise ValidationError(
                    f"{n}: its parameters declare {shapes[n]} neurons, its inputs carry "
                    f"{inputs[n].bias.size} values"
                )
            shapes[n] = inputs[n].shape
        return shapes[n]

    neurons = [n for n in graph.nodes if role[n] == "neuron"]
    for n in neurons:
        shape_of(n)
    order, recurrent = _group_order(neurons, inputs)
    plans = [GroupPlan(n, NEURON_LOWERINGS[type(graph.nodes[n])](graph.nodes[n], dt, n, conv),
                       inputs[n]) for n in order]
    silent = {p.name for p in plans if not p.dynamics.spiking}
    for p in plans:
        fed = silent & {tap.source for tap in p.inputs.terms}
        if fed:
            raise UnsupportedNodeError(
                f"{', '.join(sorted(fed))} emits no spikes (LI, I, CubaLI), so it can only be "
                f"read out as the graph's output, not feed {p.name!r}"
            )
    spec_in = InputSpec(name=in_name, size=int(np.prod(in_shape)), levels=levels,
                        timesteps=timesteps)
    return Wiring(spec_in, in_shape, plans, out_src, dt, conv, meta, recurrent)


def _group_order(
    neurons: list[str], inputs: dict[str, Expression]
) -> tuple[list[str], set[tuple[str, str]]]:
    """Groups with their forward sources first; the edges that close a loop are recurrent."""
    state: dict[str, int] = {}
    order: list[str] = []
    recurrent: set[tuple[str, str]] = set()

    def visit(n: str) -> None:
        state[n] = 1
        for src in {tap.source for tap in inputs[n].terms}:
            if src not in inputs:
                continue  # the network input
            if state.get(src) == 1:
                if src != n:
                    raise UnsupportedNodeError(
                        f"recurrent loop from {src!r} back into {n!r} passes through several "
                        "neuron groups; each synapse costs Lava one step, so only a group "
                        "feeding itself is exact"
                    )
                recurrent.add((src, n))
            elif src not in state:
                visit(src)
        state[n] = 2
        order.append(n)

    for n in neurons:
        if n not in state:
            visit(n)
    return order, recurrent


def lower(graph: nir.NIRGraph, conv: Convention = NIR, *, timesteps: int | None = None,
          levels: int | None = None) -> LoweredNetwork:
    """Lower a NIR graph to Loihi integers (CUBA LIF groups and 8-bit synapses).

    Raises:
        UnsupportedNodeError: for node types, parameters or topologies Loihi cannot run,
            naming every offending node.
        LoihiRangeError: for values that do not fit Loihi's bit widths.
        ValidationError: for malformed graphs (dangling edges, shapes, missing metadata).
    """
    w = wire(graph, conv, timesteps=timesteps, levels=levels)
    groups: dict[str, NeuronGroup] = {}
    synapses: list[SynapseSpec] = []
    for plan in w.groups:
        src_levels = {tap.source: (w.input.levels if tap.source == w.input.name else 1)
                      for tap in plan.inputs.terms}
        groups[plan.name], new = _quantize_group(plan.name, plan.dynamics, plan.inputs,
                                                 src_levels)
        synapses.extend(new)
    assign_latencies(w, groups, synapses)
    meta = dict(w.metadata)
    substituted = [p.name for p in w.groups if p.dynamics.reset != "zero"]
    if substituted:
        # Loihi's LIF always resets to 0 in the step that spikes; what that costs is
        # measured as spike agreement against the float model, never hidden.
        meta["reset_substituted"] = {g: "zero (Loihi) for subtract_next" for g in substituted}
    return LoweredNetwork(input=w.input, groups=groups, synapses=synapses, output=w.output,
                          dt=w.dt, metadata=meta)


def _max_abs(m: sp.spmatrix) -> float:
    return float(np.max(np.abs(m.data))) if m.nnz else 0.0


def _quantize_group(
    name: str, dyn: Dynamics, e: Expression, src_levels: dict[str, int]
) -> tuple[NeuronGroup, list[SynapseSpec]]:
    """Choose vth (hence Λ) for one group and quantize its incoming synapses and bias.

    A group that never spikes is scaled as if its threshold were 1: its integer
    voltage is read out, and ``v = v_int / Λ``.
    """
    gain, theta = dyn.gain, (dyn.v_th if dyn.spiking else 1.0)
    if theta <= 0:
        raise UnsupportedNodeError(f"{name}: threshold must be positive, got {theta}")
    size = e.bias.size
    bias = e.bias * gain + np.broadcast_to(dyn.bias, (size,))
    exps = {src: (0 if lv == 1 else -math.ceil(math.log2(lv + 1)))
            for src, lv in src_levels.items()}
    vth = fixed.VTH_MAX
    for tap, mat in e.terms.items():
        peak = gain * _max_abs(mat)
        if peak > 0:
            lv = src_levels[tap.source]
            vth = min(vth, math.floor(fixed.WEIGHT_MAX * theta * lv * 2.0**exps[tap.source]
                                      / peak))
    if dyn.memoryless:
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
    for tap, mat in e.terms.items():
        lv = src_levels[tap.source]
        scale = gain * lam / (64.0 * lv)
        q = fixed.quantize_to_mantissa(mat, scale, exps[tap.source])
        weights = q.mant if _is_sparse_enough(q.mant) else q.mant.toarray()
        synapses.append(SynapseSpec(
            name=synapse_name(tap, name), src=tap.source, dst=name, weights=weights,
            weight_exp=q.exp, num_message_bits=_message_bits(lv), clipped=q.clipped,
            scale=scale, lag=tap.lag,
        ))
    if np.any(bias != 0):
        synapses.append(_bias_synapse(name, bias * lam))
    # A memoryless group's dv = 4095 forgets v within the step, proven below; any other
    # group with dt/τ = 1 needs dv = 4096, one more than Loihi holds, and is refused.
    dv = fixed.DECAY_UNITY - 1 if dyn.memoryless else fixed.decay_from_factor(1.0 - dyn.dv)
    params = fixed.LifParams(du=_current_decay12(dyn.du), dv=dv, vth=vth)
    group = NeuronGroup(name=name, size=size, params=params, shape=e.shape, float_params={
        "tau_steps": dyn.tau_steps, "v_th": theta, "lambda": lam, "gain": dyn.gain,
    }, spiking=dyn.spiking)
    if dyn.memoryless:
        _check_memoryless(group, synapses)
    return group, synapses


def _current_decay12(fraction: float) -> int:
    """A current decay fraction as Loihi's du, which decays u by (4096 − (du + 1))/4096."""
    return int(np.clip(round(fraction * fixed.DECAY_UNITY) - 1, 0, fixed.DECAY_UNITY - 1))


def synapse_name(tap: Tap, dst: str) -> str:
    return f"{tap.source}->{dst}" + (f"@{tap.lag}" if tap.lag else "")


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
    q = quantize_bias(bias_v / (1 << fixed.ACT_SHIFT))
    return SynapseSpec(
        name=f"{group}.bias", src=BIAS_SOURCE, dst=group, weights=q.mant, weight_exp=q.exp,
        clipped=q.clipped, scale=1.0,
    )


def quantize_bias(per_step: np.ndarray) -> fixed.QuantizedWeights:
    """A bias column ``(n, 1)`` for a binary always-on source, adding ``per_step`` input
    units each step; the exponent is the smallest (≥ 0, so whole units) that fits the
    largest bias into 8-bit weights."""
    peak = float(np.max(np.abs(per_step)))
    exp = max(0, math.ceil(math.log2(peak / fixed.WEIGHT_MAX))) if peak > 0 else 0
    return fixed.quantize_to_mantissa(np.asarray(per_step)[:, None], 1.0, exp)


def assign_latencies(w: Wiring, groups: dict[str, Any], synapses: list[Any]) -> None:
    """Set each group's Lava latency and each synapse's delay.

    Each synapse costs Lava one step, so group g's step t runs at Lava step
    ``t + latency(g)``, with latency one more than its slowest forward source. A synapse
    whose target must see its source ``lag`` steps late (a NIR Delay, or the previous
    step's spikes on a recurrent edge) gets ``latency(dst) − latency(src) − 1 + lag``.
    """
    latency = {w.input.name: 0, BIAS_SOURCE: 0}
    for name, group in groups.items():
        inc = [s for s in synapses if s.dst == name]
        for s in inc:
            s.recurrent = (s.src, name) in w.recurrent
        # The bias follows the data; it never sets the pace.
        group.latency = max(latency[s.src] + 1 for s in inc
                            if s.src != BIAS_SOURCE and not s.recurrent)
        latency[name] = group.latency
        for s in inc:
            s.delay = group.latency - latency[s.src] - 1 + s.lag + int(s.recurrent)
            s.__post_init__()
