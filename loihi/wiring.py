"""Walk a NIR graph and wire it as groups: :func:`wire` returns a :class:`Wiring`.

**Never materialize what hardware shares** (docs/design.md §7). :func:`wire` flattens
subgraphs, discretizes every neuron node into :class:`~lrfdyn.loihi.neurons.Dynamics`
(under an explicit producer convention) and composes the linear nodes between neurons into
typed terms (:mod:`lrfdyn.loihi.layers`): a conv stays a conv with its kernel stored once,
an explicit matrix appears only where nothing is shared. Where composing would break
sharing, the intermediate linear node becomes a **relay**, a group of graded neurons that
passes its summed input on:

* when a conv reads the zero padding of another conv's output (the dendritic token
  kernel followed by the LRF convs), no single conv equals the chain;
* when a weighted node feeds several groups (the membrane shortcut's branch
  outputs), composing would store its kernel once per target.

A block-sum node (:func:`lrfdyn.nir_types.block_sum_node`, STAtten) reads the later
steps of its time block, a negative lag (a *lead*) that puts it deeper in the pipeline;
each phase of the block is a ProdNeuron row gated by the phase source
(:data:`~lrfdyn.loihi.ir.PHASE_SOURCE`, :func:`block_sum_plans`), whose spikes, like the
bias, are lagged to each group's latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.ir import InputSpec
from lrfdyn.loihi.layers import MAP_BUILDERS, MatrixMap, identity, is_identity, node_map
from lrfdyn.loihi.linear import Expression, Tap, Term, merged_terms
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, NIR, Convention, Dynamics
from lrfdyn.nir_types import block_sum_extension, graded_extension


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


def is_graded(w: Wiring, plans_by_name: dict[str, GroupPlan], src: str) -> bool:
    """Whether ``src`` sends graded payloads (the multi-level input, or a relay)
    rather than spikes."""
    if src == w.input.name:
        return w.input.levels > 1
    return src in plans_by_name and plans_by_name[src].kind == "relay"
