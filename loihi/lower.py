"""Lower a NIR graph to a Loihi-integer network description (:class:`LoweredNetwork`).

The result is plain data: typed synapse layers with integer weights and
exponents, neuron groups with their decays and thresholds, the wiring and the
latency of every group. :mod:`lrfdyn.loihi.build` turns it into Lava processes
and :mod:`lrfdyn.sim.reference` runs it in torch; both read the same object, so
they cannot disagree about a parameter.

**Never materialize what hardware shares** (DESIGN.md §7). Lowering runs in two
stages. :func:`wire` flattens subgraphs, discretizes every neuron node into
:class:`~lrfdyn.loihi.neurons.Dynamics` (under an explicit producer convention)
and composes the linear nodes between neurons into typed terms
(:mod:`lrfdyn.loihi.layers`): a conv stays a conv with its kernel stored once,
an explicit matrix appears only where nothing is shared. Where composing would
break sharing, the intermediate linear node becomes a **relay**, a group of
graded neurons that passes its summed input on:

* when a conv reads the zero padding of another conv's output (the dendritic token
  kernel followed by the LRF convs), no single conv equals the chain;
* when a weighted node feeds several groups (the membrane shortcut's branch
  outputs), composing would store its kernel once per target.

:func:`lower` then quantizes. Lava's fixed-point ``Conv`` has no weight exponent,
so a group that reads graded values (the 8-bit input, or a relay) through a
weighted conv gets a **shifter** relay in front: the conv sums at full 8-bit
resolution into it, it shifts right by its exponent (stock ``ProdNeuron`` with a
constant second input) and the group reads it one-to-one.

Scales. A LIF group's integer input is ``T·x`` for a float current x, where
``T = gain·vth/v_threshold``, so the threshold is exact. A relay's output is
``S·x``, computed as ``(Σ W_int·src) >> exp`` with ``W_int = W·S·2^exp / S_src``. A LIF
that reads relays one-to-one (weight 1) needs ``T = S`` for each of them, so such
relays and groups form a *component* that shares one scale; each relay still picks
its own exponent for full weight resolution. Graded values are kept below the
24-bit registers by worst-case bounds (a LIF's current below 2^17, since u holds
``a_in << 6``); spike-driven sums follow the rule of the first lowering (the largest
weight maps to 254).

Time: group g's step t runs at Lava step ``t + latency(g)``. A synapse carries
its source ``lag`` logical steps late: 0 on a feed-forward edge, the NIR Delay
in steps behind one, and 1 on a group's edge into itself (the previous step's
spikes, as snnTorch's RLeaky). Its Lava delay makes up the rest
(:func:`assign_latencies`, :func:`realize_delays`).

A block-sum node (:func:`lrfdyn.nir_types.block_sum_node`, STAtten) reads the later
steps of its time block, a negative lag (a *lead*) that puts it deeper in the pipeline;
each phase of the block is a ProdNeuron row gated by the phase source
(:data:`PHASE_SOURCE`, :func:`block_sum_plans`), whose spikes, like the bias, are
lagged to each group's latency.

Graded extension nodes (:func:`lrfdyn.nir_types.graded_node`, SSA's count and gate)
are relays at scale 1 whose every weight and bias must stay the same integer: they
compute in whole units, and a rectifier gates exactly only then. What cannot is refused.

Biases travel as synapses, not as the LIF's ``bias_mant``. A Loihi bias acts
from the first step, while the input reaches a group only after its latency,
so a neuron bias would integrate alone during the pipeline's fill. Instead a
constant source :data:`BIAS_SOURCE` (a spike every step) feeds each biased group
through a synapse delayed to that group's latency.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp
import torch

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.layers import (
    MAP_BUILDERS,
    ConvMap,
    LinearMap,
    MatrixMap,
    identity,
    is_identity,
    node_map,
)
from lrfdyn.loihi.linear import Expression, Tap, Term, merged_terms
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, NIR, Convention, Dynamics
from lrfdyn.nir_types import block_sum_extension, graded_extension

#: Lowering format version, recorded in simulate reports and netx files (3: graded
#: extension nodes, and a relay's one-unit rounding offset kept).
LOWERING_VERSION = 3
#: Name of the always-on source that carries biases (a spike every step).
BIAS_SOURCE = "bias"


#: Name of the phase source: one neuron per phase of a block-sum node's time blocks,
#: spiking at the steps of its phase (:attr:`LoweredNetwork.phases`).
PHASE_SOURCE = "phase"


def _copy_lag(name: str, head: str) -> int | None:
    if name == head:
        return 0
    first, sep, lag = name.partition("@")
    return int(lag) if first == head and sep and lag.isdigit() else None


def bias_offset(name: str) -> int | None:
    """Steps by which a bias source lags :data:`BIAS_SOURCE` (``bias@64`` → 64), or None
    for a source that is not a bias. Groups deeper than Loihi's longest delay take their
    bias from such a later copy instead of a relay."""
    return _copy_lag(name, BIAS_SOURCE)


def phase_offset(name: str) -> int | None:
    """As :func:`bias_offset`, for copies of :data:`PHASE_SOURCE`."""
    return _copy_lag(name, PHASE_SOURCE)


def clock_offset(name: str) -> int | None:
    """The lag of a source that runs on the clock alone (a bias or a phase source), or
    None for the input and for groups. Clock sources send the same to every copy of a
    network and never set a group's latency."""
    lag = bias_offset(name)
    return phase_offset(name) if lag is None else lag
#: Graded payloads (relay outputs) are 24-bit signed values.
GRADED_BITS = fixed.UV_BITS
#: Largest magnitude of a graded payload or a conv's summed output (24-bit signed).
GRADED_MAX = (1 << (fixed.UV_BITS - 1)) - 1
#: Largest LIF input: u holds ``a_in << 6`` in 24 bits.
CURRENT_MAX = (1 << (fixed.UV_BITS - 1 - fixed.ACT_SHIFT)) - 1
#: A delay relay repeats its input this many steps later (Loihi's longest delay + 1).
DELAY_RELAY_STEPS = fixed.MAX_DELAY + 1


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
    """A synapse layer from ``src`` (input, bias or group) to group ``dst``.

    ``weights`` is the integer ``(n_dst, n_src)`` matrix of a Dense/Sparse layer, or the
    integer kernel ``(c_out, c_in/groups, kh, kw)`` of a Conv layer, whose geometry is
    ``conv``. ``port`` is the target's input port (a shifter's constant is ``a_in2``).
    """

    name: str
    src: str
    dst: str
    weights: np.ndarray | sp.csr_matrix
    weight_exp: int
    delay: int = 0
    num_message_bits: int = 0
    clipped: int = 0
    scale: float = 1.0
    #: Logical steps between the source's output and the target seeing it (NIR Delay).
    lag: int = 0
    #: Carries the previous step's spikes of a group back into itself.
    recurrent: bool = False
    conv: ConvMap | None = None
    port: str = "a_in"

    def __post_init__(self) -> None:
        w = self.weights
        if self.conv is None and w.ndim != 2:
            raise ValidationError(f"synapse {self.name}: weights must be 2-D, got {w.shape}")
        vals = w.data if sp.issparse(w) else w
        if vals.size and (vals.min() < fixed.WEIGHT_MIN or vals.max() > fixed.WEIGHT_MAX):
            raise ValidationError(
                f"synapse {self.name}: integer weights {vals.min()}..{vals.max()} exceed "
                f"Loihi's 8-bit range {fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}"
            )
        if self.conv is not None and self.weight_exp != 0:
            raise ValidationError(f"synapse {self.name}: Lava's Conv has no weight exponent")
        if not 0 <= self.delay <= fixed.MAX_DELAY:
            raise ValidationError(
                f"synapse {self.name}: delay {self.delay} exceeds Loihi's maximum "
                f"{fixed.MAX_DELAY}; shorten the shortcut path"
            )

    @property
    def kind(self) -> str:
        """``conv`` (a shared kernel), ``sparse`` or ``dense``."""
        if self.conv is not None:
            return "conv"
        return "sparse" if sp.issparse(self.weights) else "dense"

    @property
    def is_sparse(self) -> bool:
        return self.kind == "sparse"

    @property
    def n_src(self) -> int:
        return self.conv.n_in if self.conv is not None else int(self.weights.shape[1])

    @property
    def n_dst(self) -> int:
        return self.conv.n_out if self.conv is not None else int(self.weights.shape[0])

    @property
    def fan_out(self) -> np.ndarray:
        """Non-zero synapses leaving each source neuron (what one spike costs)."""
        if self.conv is not None:
            return self.conv.fan_out()
        if sp.issparse(self.weights):
            return np.asarray((self.weights != 0).sum(axis=0)).ravel()
        return np.count_nonzero(self.weights, axis=0)

    @property
    def nnz(self) -> int:
        """Connections the layer makes (for a conv, every position's non-zero taps)."""
        return int(self.fan_out.sum())

    @property
    def stored_weights(self) -> int:
        """Weights the layer stores: a conv's kernel once, a dense matrix whole, a sparse
        one's non-zeros."""
        if self.conv is not None or not sp.issparse(self.weights):
            return int(self.weights.size)
        return int(self.weights.nnz)

    @property
    def buffer_bits(self) -> int:
        """One output buffer entry per target neuron and delay slot: 16 bits for spikes,
        24 for graded payloads."""
        bits = GRADED_BITS if self.num_message_bits else fixed.BUFFER_BITS
        return self.n_dst * (self.delay + 1) * bits

    @property
    def memory_bits(self) -> int:
        """8 bits per stored weight plus the output buffers."""
        return self.stored_weights * fixed.WEIGHT_BITS + self.buffer_bits

    def effective(self) -> np.ndarray | sp.csr_matrix:
        """The weights Lava's model computes with (Dense/Sparse clip and truncate;
        Conv uses its integers as given)."""
        if self.conv is not None:
            return np.asarray(self.weights, np.int64)
        return fixed.dense_effective_weights(self.weights)


@dataclass(frozen=True)
class RelayParams:
    """A relay's output is ``(Σ a_in) >> exp``: ``ProdNeuron`` (a shifter, whose constant
    ``a_in2`` is 1) where ``shifter`` or exp > 0, else ``GradedVec``; with ``rectify``,
    ``max(Σ a_in, 0)`` (stock ``GradedReluVec``)."""

    exp: int = 0
    shifter: bool = False
    rectify: bool = False

    @property
    def prod(self) -> bool:
        return self.shifter or self.exp > 0


@dataclass(eq=False)
class NeuronGroup:
    """A group of Loihi neurons: CUBA LIF from a NIR neuron node, or a graded relay."""

    name: str
    size: int
    params: fixed.LifParams | RelayParams | Any
    latency: int = 0
    shape: tuple[int, ...] = ()
    float_params: dict[str, float] = field(default_factory=dict)
    #: ``subtract_next`` (snnTorch) in float networks only.
    reset: str = "zero"
    #: False for a voltage readout (LI, I, CubaLI) and for relays: their value is read.
    spiking: bool = True
    #: ``lif``, ``relay`` (a linear node kept as graded neurons) or ``delay`` (a delay relay).
    kind: str = "lif"
    #: A ternary LIF (lrfdyn's ternary/1, Lava's ``TernaryLIF``): it sends −1, 0 or +1
    #: as a signed payload, so ``spiking`` is False (its value is read).
    ternary: bool = False

    @property
    def graded(self) -> bool:
        """Sends integer payloads rather than spikes."""
        return self.kind != "lif"

    @property
    def relay(self) -> RelayParams:
        """A graded group's shift and rectifier (none where its params are not a relay's)."""
        return self.params if isinstance(self.params, RelayParams) else RelayParams()

    @property
    def state_bits(self) -> int:
        """u and v of every LIF at 24 bits each; one 24-bit value per relay neuron."""
        words = 2 if self.kind == "lif" else 1
        return self.size * words * fixed.UV_BITS


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
        return any(bias_offset(s.src) is not None for s in self.synapses)

    #: ``(T, P)`` 0/1: which neuron of :data:`PHASE_SOURCE` spikes at each of a sample's T
    #: logical steps (None without block-sum nodes). It is silent from step T on.
    phases: np.ndarray | None = None

    @property
    def bias_sources(self) -> list[str]:
        return sorted({s.src for s in self.synapses if bias_offset(s.src) is not None},
                      key=bias_offset)

    @property
    def phase_sources(self) -> list[str]:
        return sorted({s.src for s in self.synapses if phase_offset(s.src) is not None},
                      key=phase_offset)

    def phase_at(self, t: int) -> np.ndarray:
        """The phase source's spikes (P,) at logical step ``t`` of a sample."""
        if self.phases is None or not 0 <= t < len(self.phases):
            return np.zeros(0 if self.phases is None else self.phases.shape[1], np.int64)
        return self.phases[t]

    def steps_per_sample(self) -> int:
        """Lava steps per sample: T input steps plus the pipeline's fill."""
        return self.input.timesteps + self.latency

    def quantization_report(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.synapses:
            g = self.groups[s.dst]
            vals = s.weights.data if sp.issparse(s.weights) else np.asarray(s.weights)
            row = {
                "synapse": s.name, "src": s.src, "dst": s.dst, "kind": s.kind,
                "shape": list(np.shape(s.weights)), "weight_exp": s.weight_exp,
                "synapses": s.nnz, "stored_weights": s.stored_weights,
                "weight_min": int(vals.min(initial=0)), "weight_max": int(vals.max(initial=0)),
                "clipped": s.clipped, "delay": s.delay, "scale": s.scale,
            }
            if isinstance(g.params, fixed.LifParams):
                row.update({"vth": g.params.vth, "du": g.params.du, "dv": g.params.dv})
            elif isinstance(g.params, RelayParams):
                row["relay_exp"] = g.params.exp
            rows.append(row)
        return rows


# ---------------------------------------------------------------- graph walking

_FIXED_ROLES = {nir.Input: "input", nir.Output: "output", nir.Delay: "delay"}


def _role(node: nir.NIRNode) -> str | None:
    if block_sum_extension(node) is not None:
        return "block_sum"
    if graded_extension(node) is not None:
        return "graded"  # lrfdyn's extension; its carrier type means nothing here
    t = type(node)
    if t in _FIXED_ROLES:
        return _FIXED_ROLES[t]
    if t in NEURON_LOWERINGS:
        return "neuron"
    if t in MAP_BUILDERS:
        return "linear"
    return None


def supported_types() -> list[str]:
    return sorted(t.__name__ for t in (*_FIXED_ROLES, *NEURON_LOWERINGS, *MAP_BUILDERS))


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
    """One group before quantization: its dynamics (None for a relay) and its input."""

    name: str
    dynamics: Dynamics | None
    inputs: Expression
    #: A relay that scales a LIF's conv input (always a ProdNeuron, so its form is fixed).
    shifter: bool = False
    #: A graded extension node (lrfdyn.nir_types.graded_node): exact integers, scale 1.
    exact: bool = False
    rectify: bool = False
    #: Columns of :data:`PHASE_SOURCE` that gate this exact node's rows, one per block of
    #: rows (a ProdNeuron whose ``a_in2`` is the phase): a block-sum node's phases.
    gate: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return "lif" if self.dynamics is not None else "relay"


def phase_keys(block: int, timesteps: int) -> list[tuple[int, int, int]]:
    """``(block, j, L)`` for each kind of step of T: step j of a time block of L steps
    (L = block, or the shorter last block when T is not a multiple of it)."""
    keys: list[tuple[int, int, int]] = []
    for t in range(timesteps):
        t0 = block * (t // block)
        key = (block, t - t0, min(block, timesteps - t0))
        if key not in keys:
            keys.append(key)
    return keys


def phase_pattern(keys: list[tuple[int, int, int]], timesteps: int) -> np.ndarray:
    """``(T, P)`` 0/1: phase p spikes at the steps of kind ``keys[p]``."""
    out = np.zeros((timesteps, len(keys)), np.int64)
    for p, (block, j, length) in enumerate(keys):
        for t in range(timesteps):
            t0 = block * (t // block)
            out[t, p] = t - t0 == j and min(block, timesteps - t0) == length
    return out


def block_sum_plans(name: str, e: Expression, block: int, timesteps: int,
                    keys: list[tuple[int, int, int]]) -> list[GroupPlan]:
    """A block-sum node as two exact groups (``keys`` gains the phases it uses).

    ``name.phase`` holds one copy of the node per phase (j, L): copy p reads the input
    at the L steps of its block, ``x(t − j + m)`` for m < L, so at lags j − m down to
    −(L − 1 − j) (a *lead*: lowering puts the group that much deeper in the pipeline),
    and multiplies by its phase spike, a ProdNeuron's ``a_in2``. At each step exactly
    one copy is on, and ``name`` sums the copies.
    """
    own = phase_keys(block, timesteps)
    cols = []
    for k in own:
        if k not in keys:
            keys.append(k)
        cols.append(keys.index(k))
    n, p_count = e.size, len(own)
    terms: list[Term] = []
    for p, (_, j, length) in enumerate(own):
        put = sp.kron(sp.csr_matrix(([1.0], ([p], [0])), shape=(p_count, 1)),
                      sp.identity(n, format="csr"), format="csr")
        for m in range(length):
            for tap, mm in e.terms:
                terms.append((Tap(tap.source, tap.lag + j - m),
                              MatrixMap((put @ mm.matrix()).tocsr(), tuple(mm.in_shape),
                                        (p_count, *e.shape))))
    bias = np.concatenate([length * e.bias for _, _, length in own])
    phase = GroupPlan(f"{name}.phase", None, Expression(merged_terms(terms), bias,
                                                        (p_count, *e.shape)),
                      exact=True, gate=tuple(cols))
    total = MatrixMap(sp.kron(np.ones((1, p_count)), sp.identity(n), format="csr"),
                      (p_count, *e.shape), tuple(e.shape))
    summed = GroupPlan(name, None, Expression([(Tap(phase.name), total)], np.zeros(n),
                                              tuple(e.shape)), exact=True)
    return [phase, summed]


@dataclass(eq=False)
class Wiring:
    """A NIR graph as groups (in an order where forward sources come first)."""

    input: InputSpec
    input_shape: tuple[int, ...]
    groups: list[GroupPlan]
    output: str
    dt: float
    convention: Convention
    metadata: dict[str, Any]
    recurrent: set[tuple[str, str]]
    #: The phases that block-sum nodes use (:func:`phase_keys`), one column each.
    phases: list[tuple[int, int, int]] = field(default_factory=list)


def _worth_relaying(e: Expression, consumers: int) -> bool:
    """Whether a node feeding several consumers stores less as a relay.

    Composed into each consumer its weights are stored once per consumer; as a relay,
    once, plus a one-to-one synapse into each consumer.
    """
    stored = sum(m.stored for _, m in e.terms if not is_identity(m))
    one_to_one = identity(e.shape).stored
    return (consumers - 1) * stored > consumers * one_to_one


def wire(graph: nir.NIRGraph, conv: Convention = NIR, *, timesteps: int | None = None,
         levels: int | None = None, shared: bool = True) -> Wiring:
    """Discretize every neuron node and compose the linear nodes between them.

    Subgraphs are flattened first. A group may feed itself (through linear nodes): that
    edge carries the previous step's spikes, as snnTorch's RLeaky does. Loops through
    several groups are refused, since each synapse in them would cost Lava a step.

    With ``shared=False`` every chain is composed into explicit matrices and no relay is
    made (the float lowering of small peer graphs, exactly as their producers ran them).
    """
    graph = flatten(graph)
    _check_supported(graph)
    role = {n: _role(node) for n, node in graph.nodes.items()}
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise ValidationError(f"edge ({src}, {dst}) names unknown node {end!r}")
        preds[dst].append(src)
        succs[src].append(dst)
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
    relays: dict[str, Expression] = {}
    busy: set[str] = set()

    def relay(n: str, e: Expression) -> Expression:
        relays[n] = e
        shapes[n] = e.shape
        return Expression.source(n, e.shape)

    def sent_by(n: str) -> Expression:
        """What node ``n`` passes downstream, as terms of group outputs and the input."""
        if role[n] in ("input", "neuron", "graded", "block_sum"):
            return Expression.source(n, shape_of(n))
        if n in relays:
            return Expression.source(n, relays[n].shape)
        if n not in exprs:
            if n in busy:
                raise UnsupportedNodeError(
                    f"a loop of linear nodes through {n!r} contains no neuron; it has no "
                    "discrete-time meaning"
                )
            busy.add(n)
            e = (summed_into(n).delayed(delay_steps(graph.nodes[n], dt, n))
                 if role[n] == "delay" else through(n))
            if shared and len(succs[n]) > 1 and _worth_relaying(e, len(succs[n])):
                return relay(n, e)
            exprs[n] = e
        return exprs[n]

    def through(n: str) -> Expression:
        """The sum of n's inputs seen through linear node n; a predecessor whose terms
        cannot stay shared through n becomes a relay."""
        parts = [sent_by(p) for p in preds[n]]
        if not parts:
            raise ValidationError(f"node {n!r} has no incoming edge")
        nm = node_map(graph.nodes[n], parts[0].shape, n)
        total: Expression | None = None
        for p, ep in zip(preds[n], parts):
            seen = ep.then(nm, with_bias=False, explicit=not shared)
            if seen is None:
                seen = relay(p, ep).then(nm, with_bias=False)
                if seen is None:  # pragma: no cover (an identity always composes)
                    raise UnsupportedNodeError(f"{n}: cannot compose its input {p!r}")
            total = seen if total is None else total.plus(seen)
        return total.plus_bias(nm.bias)

    def summed_into(n: str) -> Expression:
        if not preds[n]:
            raise ValidationError(f"node {n!r} has no incoming edge")
        total = sent_by(preds[n][0])
        for p in preds[n][1:]:
            total = total.plus(sent_by(p))
        return total.explicit() if not shared else total

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
            if n in shapes and math.prod(shapes[n]) != inputs[n].size:
                raise ValidationError(
                    f"{n}: its parameters declare {shapes[n]} neurons, its inputs carry "
                    f"{inputs[n].size} values"
                )
            shapes[n] = inputs[n].shape
        return shapes[n]

    neurons = [n for n in graph.nodes if role[n] in ("neuron", "graded", "block_sum")]
    for n in neurons:
        shape_of(n)
    all_inputs = {**inputs, **relays}
    order, recurrent = _group_order([*neurons, *relays], all_inputs)
    plans = []
    phases: list[tuple[int, int, int]] = []
    for n in order:
        if n in relays:
            plans.append(GroupPlan(n, None, relays[n]))
        elif role[n] == "block_sum":
            plans.extend(block_sum_plans(n, inputs[n], block_sum_extension(graph.nodes[n]),
                                         timesteps, phases))
        elif role[n] == "graded":
            plans.append(GroupPlan(n, None, inputs[n], exact=True,
                                   rectify=bool(graded_extension(graph.nodes[n]))))
        else:
            node = graph.nodes[n]
            plans.append(GroupPlan(n, NEURON_LOWERINGS[type(node)](node, dt, n, conv),
                                   inputs[n]))
    silent = {p.name for p in plans if p.dynamics is not None and not p.dynamics.spiking}
    for p in plans:
        fed = silent & p.inputs.sources
        if fed:
            raise UnsupportedNodeError(
                f"{', '.join(sorted(fed))} emits no spikes (LI, I, CubaLI), so it can only be "
                f"read out as the graph's output, not feed {p.name!r}"
            )
    spec_in = InputSpec(name=in_name, size=math.prod(in_shape), levels=levels,
                        timesteps=timesteps)
    return Wiring(spec_in, in_shape, plans, out_src, dt, conv, meta, recurrent, phases)


def _group_order(
    groups: list[str], inputs: dict[str, Expression]
) -> tuple[list[str], set[tuple[str, str]]]:
    """Groups with their forward sources first; the edges that close a loop are recurrent."""
    state: dict[str, int] = {}
    order: list[str] = []
    recurrent: set[tuple[str, str]] = set()

    def visit(n: str) -> None:
        state[n] = 1
        for src in sorted(inputs[n].sources):
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

    for n in groups:
        if n not in state:
            visit(n)
    return order, recurrent


# ---------------------------------------------------------------- quantization


def lower(graph: nir.NIRGraph, conv: Convention = NIR, *, timesteps: int | None = None,
          levels: int | None = None, shared: bool = True,
          quantizer: Any = None) -> LoweredNetwork:
    """Lower a NIR graph to Loihi integers (typed synapse layers, LIF groups, relays).

    ``shared=False`` is the first lowering: every chain fused into one explicit matrix
    per (source, target), no relays; kept as the baseline that benchmarks measure against.
    ``quantizer`` replaces :class:`_Quantizer` (called as ``quantizer(wiring, plans)``):
    :class:`lrfdyn.loihi.fine.FineQuantizer` for NIR interop graphs.

    Raises:
        UnsupportedNodeError: for node types, parameters or topologies Loihi cannot run,
            naming every offending node.
        LoihiRangeError: for values that do not fit Loihi's bit widths.
        ValidationError: for malformed graphs (dangling edges, shapes, missing metadata).
    """
    with _one_thread():
        w = wire(graph, conv, timesteps=timesteps, levels=levels, shared=shared)
        plans = _with_shifters(w)
        groups, synapses = (quantizer or _Quantizer)(w, plans).run()
    assign_latencies(w, groups, synapses)
    realize_delays(groups, synapses)
    _ternary_payloads(groups, synapses)
    meta = dict(w.metadata)
    substituted = [p.name for p in plans if p.dynamics is not None and p.dynamics.reset != "zero"]
    if substituted:
        # Loihi's LIF always resets to 0 in the step that spikes; what that costs is
        # measured as spike agreement against the float model, never hidden.
        meta["reset_substituted"] = {g: "zero (Loihi) for subtract_next" for g in substituted}
    return LoweredNetwork(input=w.input, groups=groups, synapses=synapses, output=w.output,
                          dt=w.dt, metadata=meta,
                          phases=phase_pattern(w.phases, w.input.timesteps) if w.phases
                          else None)


#: Payload bits of a ternary group's spikes (Lava's ``TernaryLIF`` sends 2-bit signed values).
TERNARY_BITS = 2


def _ternary_payloads(groups: dict[str, NeuronGroup], synapses: list[SynapseSpec]) -> None:
    """Every synapse that reads a ternary group, or a delay relay of one, reads a value:
    without message bits Lava's synapses take any non-zero payload as a +1 spike."""
    for s in synapses:
        g = groups.get(s.src)
        if g is not None and g.ternary and not s.num_message_bits:
            s.num_message_bits = TERNARY_BITS
    # A delay relay of a ternary group is graded, and realize_delays gives its readers
    # graded bits; only its own input synapse (from the ternary group) is covered above.


@contextmanager
def _one_thread():
    """Lowering's small convs run one torch thread: on a loaded machine torch's thread
    pool made one depthwise conv take 0.9 s instead of 1 ms (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_graded(w: Wiring, plans_by_name: dict[str, GroupPlan], src: str) -> bool:
    if src == w.input.name:
        return w.input.levels > 1
    return src in plans_by_name and plans_by_name[src].kind == "relay"


def _with_shifters(w: Wiring) -> list[GroupPlan]:
    """Plans with a shifter relay in front of each LIF that reads graded values through a
    weighted conv (Lava's Conv cannot scale its sum; the shifter can)."""
    by_name = {p.name: p for p in w.groups}
    out: list[GroupPlan] = []
    for p in w.groups:
        if p.dynamics is None:
            out.append(p)
            continue
        move = [isinstance(m, ConvMap) and not is_identity(m)
                and _is_graded(w, by_name, tap.source) for tap, m in p.inputs.terms]
        if not any(move):
            out.append(p)
            continue
        name = f"{p.name}.in"
        moved = [t for t, mv in zip(p.inputs.terms, move) if mv]
        shifter = GroupPlan(name, None, Expression(moved, np.zeros(p.inputs.size),
                                                   p.inputs.shape), shifter=True)
        kept = [t for t, mv in zip(p.inputs.terms, move) if not mv]
        kept.append((Tap(name), identity(p.inputs.shape)))
        out.extend([shifter, GroupPlan(p.name, p.dynamics,
                                       Expression(kept, p.inputs.bias, p.inputs.shape))])
    return out


def _abs_apply(m: LinearMap, v: np.ndarray) -> np.ndarray:
    """``|m|`` applied to a non-negative vector: a per-output bound."""
    x = torch.as_tensor(v, dtype=torch.float64)[None]
    if isinstance(m, ConvMap):
        return m.with_weight(np.abs(m.weight)).apply(x)[0].numpy()
    return np.asarray(abs(m.matrix_) @ v).ravel()


def _max_abs(m: LinearMap) -> float:
    vals = m.weight if isinstance(m, ConvMap) else m.matrix_.data
    return float(np.max(np.abs(vals))) if np.size(vals) else 0.0


class _Quantizer:
    """Chooses every group's scale and quantizes its incoming synapses (module docstring)."""

    def __init__(self, w: Wiring, plans: list[GroupPlan]) -> None:
        self.w = w
        self.plans = {p.name: p for p in plans}
        self.order = [p.name for p in plans]
        # Float bound of every graded value (per neuron), for the register limits.
        self.bound: dict[str, np.ndarray] = {w.input.name: np.ones(w.input.size)}
        # Integer units per float unit of every graded source; 1 for spikes.
        self.scale: dict[str, float] = {w.input.name: float(w.input.levels)}
        self.component = self._components()
        self.comp_scale: dict[int, float] = {}
        self.groups: dict[str, NeuronGroup] = {}
        self.synapses: list[SynapseSpec] = []

    # -- structure

    def _components(self) -> dict[str, int]:
        """LIF groups and the relays they read one-to-one through a conv share a scale."""
        parent = {n: n for n in self.order}

        def find(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for n, p in self.plans.items():
            if p.kind != "lif":
                continue
            for tap, m in p.inputs.terms:
                src = tap.source
                if (src in self.plans and self.plans[src].kind == "relay"
                        and not self.plans[src].exact and isinstance(m, ConvMap)):
                    parent[find(src)] = find(n)
        roots: dict[str, int] = {}
        comp = {}
        for n in self.order:
            r = find(n)
            if any(find(m) == r and m != n for m in self.order) or self.plans[n].kind == "lif":
                comp[n] = roots.setdefault(r, len(roots))
        return comp

    def members(self, cid: int) -> list[str]:
        return [n for n in self.order if self.component.get(n) == cid]

    def graded(self, src: str) -> bool:
        return _is_graded(self.w, self.plans, src)

    def src_scale(self, src: str) -> float:
        return self.scale[src] if self.graded(src) else 1.0

    def src_bound_int(self, src: str) -> np.ndarray:
        """Largest integer payload of each source neuron."""
        if not self.graded(src):
            return np.ones(1)
        if src == self.w.input.name:
            return np.full(1, float(self.w.input.levels))
        return np.ceil(self.bound[src] * self.scale[src]) + 1.0

    def float_bound(self, e: Expression) -> np.ndarray:
        total = np.abs(e.bias).copy()
        for tap, m in e.terms:
            src_b = self.bound.get(tap.source) if self.graded(tap.source) else None
            total += _abs_apply(m, src_b if src_b is not None else np.ones(m.n_in))
        return total

    # -- scales

    def _target_limit(self, n: str) -> float:
        """The largest target scale group n's own terms allow (8-bit weights, registers).

        For a LIF the target scale is T = gain·vth/threshold (its integer input per unit
        of float current); for a relay it is its pre-shift scale at exponent 0.
        """
        p = self.plans[n]
        limit = math.inf
        for tap, m in p.inputs.terms:
            peak = _max_abs(m)
            if peak == 0 or (p.kind == "lif" and tap.source in self.component
                             and self.component.get(tap.source) == self.component.get(n)
                             and isinstance(m, ConvMap)):
                continue  # a one-to-one read of its own component: weight 1 by construction
            exp = 0
            if not isinstance(m, ConvMap) and self.graded(tap.source):
                # Dense/Sparse take an exponent: as many bits as the payload has.
                exp = -math.ceil(math.log2(float(np.max(self.src_bound_int(tap.source))) + 1))
            limit = min(limit, fixed.WEIGHT_MAX * self.src_scale(tap.source) * 2.0**exp / peak)
        return limit

    def _relay_range_limit(self, n: str) -> float:
        """Largest pre-shift scale keeping a relay's summed input inside 24 bits."""
        b = float(np.max(self.float_bound(self.plans[n].inputs), initial=0.0))
        return GRADED_MAX / (1.05 * b) if b > 0 else math.inf

    def component_scale(self, cid: int) -> float:
        """T of a component: the first LIF's vth sets it, so its threshold is exact."""
        if cid in self.comp_scale:
            return self.comp_scale[cid]
        members = self.members(cid)
        limit = min((self._target_limit(m) for m in members), default=math.inf)
        # A LIF's current from graded relays (worst case) must stay below 2^17.
        for m in members:
            p = self.plans[m]
            if p.kind != "lif":
                continue
            graded_in = [tap.source for tap, mm in p.inputs.terms
                         if self.component.get(tap.source) == cid and tap.source != m
                         and any(self.graded(t.source) for t, _ in
                                 self.plans[tap.source].inputs.terms)]
            if graded_in:
                reach = sum(float(np.max(self.float_bound(self.plans[r].inputs)))
                            for r in graded_in)
                if reach > 0:
                    limit = min(limit, CURRENT_MAX / (1.05 * reach))
        lifs = [m for m in members if self.plans[m].kind == "lif"]
        ref = self.plans[lifs[0]].dynamics
        theta = ref.v_th if ref.spiking else 1.0
        if theta <= 0:
            raise UnsupportedNodeError(f"{lifs[0]}: threshold must be positive, got {theta}")
        vth = min(fixed.VTH_MAX, math.floor(limit * theta / ref.gain)) if math.isfinite(limit) \
            else fixed.VTH_MAX
        for m in lifs:
            dyn = self.plans[m].dynamics
            if dyn.memoryless:
                vth = min(vth, self._memoryless_vth(m, dyn))
        if vth < 1:
            raise LoihiRangeError(
                f"{lifs[0]}: weights are too large relative to the threshold for 8-bit Loihi "
                "weights; retrain with weight decay or a larger threshold"
            )
        self.comp_scale[cid] = vth * ref.gain / theta
        return self.comp_scale[cid]

    def _memoryless_vth(self, n: str, dyn: Dynamics) -> int:
        """Keep a memoryless group's input below 4096 so v carries nothing to the next step."""
        e = self.plans[n].inputs
        theta = dyn.v_th if dyn.spiking else 1.0
        reach = dyn.gain * float(np.max(self.float_bound(e) + np.abs(dyn.bias)))
        if reach <= 0:
            return fixed.VTH_MAX
        # 3/4 of the bound leaves room for rounding the weights to even mantissas.
        return math.floor(0.75 * (fixed.DECAY_UNITY - 1) * theta / (64.0 * reach))

    # -- groups

    def run(self) -> tuple[dict[str, NeuronGroup], list[SynapseSpec]]:
        for n in self.order:
            p = self.plans[n]
            if p.kind == "lif":
                self._lif(n, p)
            elif p.exact:
                self._exact(n, p)
            else:
                self._relay(n, p)
        return self.groups, self.synapses

    def _relay(self, n: str, p: GroupPlan) -> None:
        cid = self.component.get(n)
        range_limit = self._relay_range_limit(n)
        if cid is None:  # read by no LIF one-to-one: its own full-resolution scale
            s_out = min(self._target_limit(n), range_limit)
            if not math.isfinite(s_out):
                s_out = 1.0
            exp = 0
        else:
            s_out = self.component_scale(cid)
            head = min(self._target_limit(n), range_limit) / s_out
            exp = max(0, math.floor(math.log2(head))) if head > 0 else 0
        pre = s_out * 2.0**exp
        self.scale[n] = s_out
        self.bound[n] = self.float_bound(p.inputs)
        # Half a unit before the flooring shift makes it round to nearest: unbiased.
        rounding = np.full(p.inputs.size, 2.0 ** (exp - 1) / pre) if exp else 0.0
        inputs = Expression(p.inputs.terms, p.inputs.bias + rounding, p.inputs.shape)
        self._synapses(n, inputs, lambda src: pre / self.src_scale(src), bias_units=pre)
        self.groups[n] = NeuronGroup(
            name=n, size=p.inputs.size, params=RelayParams(exp, p.shifter),
            shape=p.inputs.shape, float_params={"scale": s_out, "pre_scale": pre},
            spiking=False, kind="relay")
        if self.groups[n].params.prod:
            # ProdNeuron shifts a_in1·a_in2; a constant 1 on a_in2 makes it a shifter.
            self.synapses.append(SynapseSpec(
                name=f"{n}.unit", src=BIAS_SOURCE, dst=n,
                weights=sp.csr_matrix(np.ones((p.inputs.size, 1), np.int64)), weight_exp=0,
                port="a_in2"))

    def _exact(self, n: str, p: GroupPlan) -> None:
        """A graded extension node: one integer unit per float unit, every weight and bias
        kept exactly, so a rectifier gates exactly as the float graph does."""
        for tap, _ in p.inputs.terms:
            if self.graded(tap.source) and self.src_scale(tap.source) != 1.0:
                raise UnsupportedNodeError(
                    f"{n}: a graded node reads spikes or other graded nodes, not "
                    f"{tap.source!r} (scale {self.src_scale(tap.source):g}); re-export the model")
        self.scale[n] = 1.0
        self.bound[n] = self.float_bound(p.inputs)
        peak = float(np.max(self.bound[n], initial=0.0))
        if peak > GRADED_MAX:
            raise LoihiRangeError(f"{n}: its value can reach {peak:.0f}, beyond the 24-bit "
                                  f"payload ({GRADED_MAX}); use fewer tokens per count")
        self._synapses(n, p.inputs, lambda src: 1.0, bias_units=1.0, exact=True)
        self.groups[n] = NeuronGroup(
            name=n, size=p.inputs.size, params=RelayParams(rectify=p.rectify,
                                                           shifter=p.gate is not None),
            shape=p.inputs.shape, float_params={"scale": 1.0, "pre_scale": 1.0},
            spiking=False, kind="relay")
        if p.gate is not None:
            # Rows of block b are on only while phase gate[b] spikes: a_in1 · a_in2.
            rows = p.inputs.size // len(p.gate)
            cols = np.repeat(np.asarray(p.gate), rows)
            self.synapses.append(SynapseSpec(
                name=f"{n}.gate", src=PHASE_SOURCE, dst=n,
                weights=sp.csr_matrix((np.ones(p.inputs.size, np.int64),
                                       (np.arange(p.inputs.size), cols)),
                                      shape=(p.inputs.size, len(self.w.phases))),
                weight_exp=0, port="a_in2"))

    def _lif(self, n: str, p: GroupPlan) -> None:
        dyn = p.dynamics
        t = self.component_scale(self.component[n])
        theta = dyn.v_th if dyn.spiking else 1.0
        vth = round(t * theta / dyn.gain)
        if vth < 1 or vth > fixed.VTH_MAX:
            raise LoihiRangeError(f"{n}: threshold {vth} is outside Loihi's range 1..{fixed.VTH_MAX}")
        lam = 64.0 * vth / theta
        size = p.inputs.size
        bias = p.inputs.bias * dyn.gain + np.broadcast_to(dyn.bias, (size,))
        own = self.component[n]

        def factor(src: str) -> float:
            if self.component.get(src) == own and src in self.groups and \
                    self.groups[src].kind == "relay":
                return 1.0  # one-to-one: the relay already sends T·x
            return t / self.src_scale(src)

        self._synapses(n, p.inputs, factor, bias_units=None)
        if np.any(bias != 0):
            self.synapses.append(_bias_synapse(n, bias * lam))
        # A memoryless group's dv = 4095 forgets v within the step, proven below; any other
        # group with dt/τ = 1 needs dv = 4096, one more than Loihi holds, and is refused.
        dv = fixed.DECAY_UNITY - 1 if dyn.memoryless else fixed.decay_from_factor(1.0 - dyn.dv)
        params = fixed.LifParams(du=_current_decay12(dyn.du), dv=dv, vth=vth)
        group = NeuronGroup(name=n, size=size, params=params, shape=p.inputs.shape,
                            float_params={"tau_steps": dyn.tau_steps, "v_th": theta,
                                          "lambda": lam, "gain": dyn.gain},
                            spiking=dyn.spiking and not dyn.ternary, ternary=dyn.ternary)
        self.groups[n] = group
        if dyn.memoryless:
            _check_memoryless(group, self.incoming(n), self)

    def incoming(self, n: str) -> list[SynapseSpec]:
        return [s for s in self.synapses if s.dst == n]

    def _synapses(self, n: str, e: Expression, factor, *, bias_units: float | None,
                  exact: bool = False) -> None:
        """Quantize every term of group n's input: integer = float · factor(src).

        ``exact``: every integer must equal its float value (odd mantissas kept, no
        exponent), or the group is refused.
        """
        taken = {s.name for s in self.synapses}
        for tap, m in e.terms:
            scale = factor(tap.source)
            bits = _message_bits(int(np.max(self.src_bound_int(tap.source)))) \
                if self.graded(tap.source) else 0
            name = synapse_name(tap, n)
            k = 1
            while name in taken:  # several structures from one source (the LRF's convs)
                k += 1
                name = f"{synapse_name(tap, n)}#{k}"
            taken.add(name)
            if isinstance(m, ConvMap):
                q = fixed.quantize_to_mantissa(m.weight, scale, 0, even=False)
                spec = SynapseSpec(name=name, src=tap.source, dst=n, weights=q.mant,
                                   weight_exp=0, num_message_bits=bits and GRADED_BITS,
                                   clipped=q.clipped, scale=scale, lag=tap.lag,
                                   conv=m.with_weight(q.mant))
            else:
                exp = 0
                peak = _max_abs(m) * scale
                if self.graded(tap.source) and peak > 0 and not exact:
                    # The smallest exponent that fits the largest weight into 8 bits.
                    exp = math.ceil(math.log2(peak / fixed.WEIGHT_MAX) - 1e-9)
                q = fixed.quantize_to_mantissa(m.matrix_, scale, exp, even=not exact)
                weights = q.mant if _is_sparse_enough(q.mant) else q.mant.toarray()
                spec = SynapseSpec(name=name, src=tap.source, dst=n, weights=weights,
                                   weight_exp=q.exp, num_message_bits=bits and GRADED_BITS,
                                   clipped=q.clipped, scale=scale, lag=tap.lag)
            if exact:
                _require_exact(spec, m, scale)
            self.synapses.append(spec)
        if bias_units is not None and np.any(e.bias != 0):
            # A single-sign column keeps its LSB in Lava: rounding it to even would turn a
            # relay's one-unit rounding offset (exp = 1) into 0.
            mixed = bool((e.bias > 0).any() and (e.bias < 0).any())
            q = quantize_bias(e.bias * bias_units, even=mixed and not exact)
            spec = SynapseSpec(name=f"{n}.bias", src=BIAS_SOURCE, dst=n, weights=q.mant,
                               weight_exp=q.exp, clipped=q.clipped)
            if exact and not np.array_equal(
                    np.asarray(spec.effective()).ravel() * 2.0**q.exp, e.bias * bias_units):
                raise LoihiRangeError(f"{n}: its bias is not an integer Loihi holds exactly; "
                                      "a graded node's biases must be whole numbers that "
                                      "8-bit mantissas with one shared exponent hold (any "
                                      "below 255 do)")
            self.synapses.append(spec)


def _require_exact(spec: SynapseSpec, m: LinearMap, scale: float) -> None:
    """Refuse a synapse into a graded extension node whose integers differ from its floats."""
    if spec.clipped:
        raise LoihiRangeError(
            f"{spec.dst}: synapse {spec.name} needs weights beyond Loihi's 8 bits "
            f"({fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}) to stay exact; use fewer tokens per "
            "block (the gate's weight is the token count)")
    if isinstance(m, ConvMap):
        want, got = m.weight * scale, np.asarray(spec.weights, np.float64)
    else:
        want = np.asarray(sp.csr_matrix(m.matrix_).toarray()) * scale
        eff = spec.effective()
        got = (eff.toarray() if sp.issparse(eff) else np.asarray(eff)) * 2.0**spec.weight_exp
    if not np.array_equal(want, got):
        raise LoihiRangeError(
            f"{spec.dst}: synapse {spec.name} has weights that are not integers Loihi holds "
            "exactly (a graded node computes in whole units); re-export the model")


def _current_decay12(fraction: float) -> int:
    """A current decay fraction as Loihi's du, which decays u by (4096 − (du + 1))/4096."""
    return int(np.clip(round(fraction * fixed.DECAY_UNITY) - 1, 0, fixed.DECAY_UNITY - 1))


def synapse_name(tap: Tap, dst: str) -> str:
    return f"{tap.source}->{dst}" + (f"@{tap.lag}" if tap.lag else "")


#: Below this density a synapse layer is stored and simulated as a Lava Sparse process.
SPARSE_BELOW = 0.25


def _is_sparse_enough(m: sp.spmatrix) -> bool:
    return m.nnz < SPARSE_BELOW * m.shape[0] * m.shape[1]


def _check_memoryless(group: NeuronGroup, synapses: list[SynapseSpec], q: _Quantizer) -> None:
    """Prove |u| < 4096 for every input, so dv = 4095 forgets v completely each step."""
    worst = np.zeros(group.size)
    for s in synapses:
        payload = q.src_bound_int(s.src) if s.num_message_bits else np.ones(s.n_src)
        payload = np.broadcast_to(payload, (s.n_src,)).astype(np.float64)
        if s.conv is not None:
            worst += _abs_apply(s.conv, payload)
        else:
            w = abs(s.weights) if s.is_sparse else np.abs(s.weights)
            worst += np.asarray(w @ payload).ravel() * 2.0**s.weight_exp
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


def quantize_bias(per_step: np.ndarray, *, even: bool = True) -> fixed.QuantizedWeights:
    """A bias column ``(n, 1)`` for a binary always-on source, adding ``per_step`` input
    units each step; the exponent is the smallest (≥ 0, so whole units) that fits the
    largest bias into 8-bit weights. ``even=False`` keeps odd mantissas (exact for a
    single-sign column, which Lava does not truncate)."""
    peak = float(np.max(np.abs(per_step)))
    exp = max(0, math.ceil(math.log2(peak / fixed.WEIGHT_MAX))) if peak > 0 else 0
    return fixed.quantize_to_mantissa(np.asarray(per_step)[:, None], 1.0, exp, even=even)


def assign_latencies(w: Wiring, groups: dict[str, Any], synapses: list[Any]) -> None:
    """Set each group's Lava latency and each synapse's delay.

    Each synapse costs Lava one step, so group g's step t runs at Lava step
    ``t + latency(g)``, with latency one more than its slowest forward source. A synapse
    whose target must see its source ``lag`` steps late (a NIR Delay, or the previous
    step's spikes on a recurrent edge) gets ``latency(dst) − latency(src) − 1 + lag``.
    Delays that Lava cannot hold as they are are given a form by :func:`realize_delays`.
    """
    latency = {w.input.name: 0}
    by_dst: dict[str, list[Any]] = {}
    for s in synapses:
        by_dst.setdefault(s.dst, []).append(s)
    for name, group in groups.items():
        inc = by_dst.get(name, [])
        for s in inc:
            s.recurrent = (s.src, name) in w.recurrent
        # The bias and the phases follow the data; they never set the pace. A lead (a
        # negative lag: a block sum reading its block's later steps) needs that many
        # steps more.
        group.latency = max(latency[s.src] + 1 + max(0, -s.lag) for s in inc
                            if clock_offset(s.src) is None and not s.recurrent)
        latency[name] = group.latency
        for s in inc:
            src_latency = 0 if clock_offset(s.src) is not None else latency[s.src]
            s.delay = group.latency - src_latency - 1 + s.lag + int(s.recurrent)
            if s.delay <= fixed.MAX_DELAY:
                s.__post_init__()


def realize_delays(groups: dict[str, NeuronGroup], synapses: list[SynapseSpec]) -> None:
    """Give every delay a Lava form: Lava's ``Conv`` has no delay, and no synapse more
    than 63 steps.

    * A one-weight-per-channel conv (a one-to-one read of a relay) becomes a diagonal
      ``DelaySparse``: one weight per neuron, which is all a one-to-one synapse stores.
    * Any other delayed conv reads a *delay relay* of its source instead, a ``GradedVec``
      that repeats the source's value ``delay`` steps later; the conv itself is undelayed.
    * Delays beyond 63 steps go through chains of 64-step delay relays, shared by all
      long synapses of a source.

    In logical time a delay relay passes the same step's value, so the integer reference
    runs it as an identity group.
    """
    relays: dict[tuple[str, int], str] = {}
    order: dict[str, list[str]] = {}

    def delay_relay(src: str, steps: int) -> str:
        """A relay that repeats ``src`` ``steps`` ≥ 1 Lava steps after src sends."""
        key = (src, steps)
        if key in relays:
            return relays[key]
        prev, left = src, steps
        if steps > DELAY_RELAY_STEPS:  # a chain of 64-step relays, then the rest
            hops = (steps - 1) // DELAY_RELAY_STEPS
            prev, left = delay_relay(src, hops * DELAY_RELAY_STEPS), steps - hops * DELAY_RELAY_STEPS
        base = groups[src]
        name = f"{src}.delay{steps}"
        groups[name] = NeuronGroup(name=name, size=base.size, params=RelayParams(0),
                                   shape=base.shape, latency=groups[prev].latency + left,
                                   spiking=False, kind="delay")
        synapses.append(SynapseSpec(
            name=f"{prev}->{name}", src=prev, dst=name,
            weights=sp.identity(base.size, format="csr", dtype=np.int64), weight_exp=0,
            delay=left - 1, num_message_bits=GRADED_BITS if groups[prev].graded else 0))
        relays[key] = name
        order.setdefault(src, []).append(name)
        return name

    for s in list(synapses):
        if s.conv is not None and s.delay:
            c = s.conv
            if c.pointwise and c.depthwise:
                per_neuron = np.repeat(np.asarray(s.weights).ravel(), c.n_out // c.out_shape[0])
                s.weights = sp.diags(per_neuron, format="csr", dtype=np.int64)
                s.conv = None
            else:
                s.src = delay_relay(s.src, s.delay)
                s.num_message_bits = GRADED_BITS
                s.delay = 0
        if s.delay > fixed.MAX_DELAY and clock_offset(s.src) is not None:
            hops = s.delay // DELAY_RELAY_STEPS
            head = BIAS_SOURCE if bias_offset(s.src) is not None else PHASE_SOURCE
            s.src = f"{head}@{clock_offset(s.src) + hops * DELAY_RELAY_STEPS}"
            s.delay -= hops * DELAY_RELAY_STEPS
        if s.delay > fixed.MAX_DELAY:
            if s.src not in groups:
                raise ValidationError(f"synapse {s.name}: a delay of {s.delay} steps from the "
                                      "input cannot be relayed; shorten the path")
            hops = s.delay // DELAY_RELAY_STEPS
            s.src = delay_relay(s.src, hops * DELAY_RELAY_STEPS)
            s.delay -= hops * DELAY_RELAY_STEPS
            s.num_message_bits = GRADED_BITS
        s.__post_init__()
    if order:  # keep topological order: each relay right after the group it repeats
        made = {r for rs in order.values() for r in rs}
        merged: dict[str, NeuronGroup] = {}

        def put(name: str) -> None:
            merged[name] = groups[name]
            for r in sorted(order.get(name, []), key=lambda r: groups[r].latency):
                put(r)

        for name in list(groups):
            if name not in made:
                put(name)
        groups.clear()
        groups.update(merged)
