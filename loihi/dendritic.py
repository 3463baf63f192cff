"""Dendritic (token-streaming) lowering of LRF-Dyn attention (docs/design.md §4.2).

The parallel lowering turns the dendritic recurrence into synapses and keeps a
neuron for every token. This one keeps what the paper promises: per block, the
k·d dendritic compartments and nothing else as attention state. One token of one
time step enters per Lava step, in raster order; a *stream* is the N tokens of
one time step of one sample, followed by silent steps until the block is empty.

Per block, with x scaled to the integer v = S·x (S chosen so |v| < 2^18 for k = 8)::

    tokens ─Γ─▶ compartments ─C─▶ soma ─▶ prod[class] ─(taps, delays)─▶ z
                 ▲      │                    ▲ mask[class]                ▲ bias
                 └─β────┘

* **compartments** (:class:`~lrfdyn.loihi.processes.compartment.DendriteCompartments`, k·d):
  dendrite i of channel c leaks with ``dv = round(4096/τ_i)`` (A's diagonal,
  12 bits), receives Γ from the binary token spikes and the couplings β from its
  neighbours' previous values through a recurrent graded synapse, whose one-step
  delay is the recurrence's own ``x_{n−1}``. They reset at the first step of every
  stream.
* **soma** (``GradedVec``, d): ``y = C·x`` as a 24-bit graded spike.
* **prod[class]** (``ProdNeuron``, d each): ``y·mask``. A 3×3 dilated convolution
  on the token grid reads a neighbour at token offset ``δ(aW + b)``; in a raster
  stream a horizontal offset (b ≠ 0) would wrap into the next row, and every
  offset would read past the grid's last row. So y passes through one product
  neuron per horizontal offset, gated by a periodic 0/1 mask of the *source*
  token (column ``j`` with ``0 ≤ j − δb < W``, row inside the grid). Masks come
  from a source, like the bias; nothing here depends on time.
* **taps**: one diagonal synapse per (class, token offset) with delay
  ``E_z − offset − latency(class) − 1``, so the neighbour ``n + offset`` and the
  token n meet in **z** (``GradedVec``, d) at step ``n + E_z``: the LRF's
  non-causal neighbours cost ``E_z`` steps of latency. A delay above 63 (Loihi's
  limit) goes through relays (``GradedVec``, d) that each add 64 steps.
* **z** holds ``gain·Λ/64 · BN(y + LRF(y))``: the same integer input current the
  parallel lowering feeds the block's attention LIF.

The tokens' per-token neurons around the block (V, the attention LIF, the MLP)
keep their membrane across time steps for every token, so they cannot share
neurons across tokens and stay in the parallel lowering;
:mod:`lrfdyn.sim.dendritic` runs the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import BIAS_SOURCE, LoweredNetwork, bias_offset
from lrfdyn.loihi.quantize import quantize_bias

def value_bits(fan_in: int) -> int:
    """Magnitude bits left to graded values (x, y) so that an int32 sum of ``fan_in``
    9-bit weights times values cannot overflow (Lava's CPU synapses sum in int32);
    18 for k = 8, never more than the 24-bit payload allows."""
    fan_in_bits = math.ceil(math.log2(max(fan_in, 2)))
    return min(fixed.UV_BITS - 2, 30 - (fixed.WEIGHT_BITS + 1) - fan_in_bits)
#: A relay adds this many steps: an identity synapse of the largest delay, plus its step.
RELAY_STEPS = fixed.MAX_DELAY + 1
#: Emission offsets: a value about token n leaves the process at stream step n + offset
#: (stream steps count from 1; the tokens source sends token n at step n + 1).
TOKENS, COMPARTMENTS, SOMA, PROD = "tokens", "compartments", "soma", "prod"
Z, MASKS = "z", "masks"
OFFSETS = {TOKENS: 1, COMPARTMENTS: 2, SOMA: 3, PROD: 4}


@dataclass(eq=False)
class StreamLayer:
    """A synapse layer of the stream network: ``shift(W·src, weight_exp)`` into ``dst``."""

    name: str
    src: str
    dst: str
    weights: sp.csr_matrix  # int64 even mantissas, (n_dst, n_src)
    weight_exp: int
    delay: int = 0
    graded: bool = True
    port: str = "a_in"
    offset: int = 0  # token offset a tap reads (z_n ← src_{n+offset})
    clipped: int = 0

    @property
    def num_message_bits(self) -> int:
        return fixed.UV_BITS if self.graded else 0


@dataclass(eq=False)
class DendriticBlock:
    """One LRF-Dyn attention block lowered for token streaming (plain data)."""

    name: str
    u_group: str  # parallel-mode group whose spikes are the token input u
    out_group: str  # parallel-mode attention LIF that z feeds
    d: int
    k: int
    grid: tuple[int, int]
    dv: np.ndarray  # (k·d,) decay of each compartment, channel-major (c·k + i)
    masks: dict[str, np.ndarray]  # class -> (N,) bool, source tokens that pass
    relays: dict[str, str]  # relay -> the process it repeats RELAY_STEPS later
    layers: list[StreamLayer]
    offsets: dict[str, int]  # process -> emission offset (see module constants)
    stream_steps: int
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def compartments(self) -> int:
        return self.k * self.d

    @property
    def latency(self) -> int:
        """Steps from token n entering (step n + 1) to its z leaving (step n + offset)."""
        return self.offsets[Z] - OFFSETS[TOKENS]

    def sizes(self) -> dict[str, int]:
        """Neurons of every process that computes (sources excluded)."""
        out = {COMPARTMENTS: self.compartments, SOMA: self.d, Z: self.d}
        out.update({f"{PROD}.{c}": self.d for c in self.masks})
        out.update({r: self.d for r in self.relays})
        return out

    def quantization_report(self) -> list[dict[str, Any]]:
        return [{"layer": la.name, "src": la.src, "dst": la.dst, "synapses": int(la.weights.nnz),
                 "weight_exp": la.weight_exp, "delay": la.delay, "clipped": la.clipped,
                 "weight_min": int(la.weights.data.min(initial=0)),
                 "weight_max": int(la.weights.data.max(initial=0))} for la in self.layers]


# ---------------------------------------------------------------- finding the blocks


def dendrite_nodes(graph: nir.NIRGraph) -> list[str]:
    """Names of the nodes that carry an exported dendrite (``metadata.lrfdyn == "dendrite"``).

    Raises:
        UnsupportedNodeError: if there is none.
    """
    names = [n for n, node in graph.nodes.items()
             if str((getattr(node, "metadata", None) or {}).get("lrfdyn", "")) == "dendrite"]
    if not names:
        raise UnsupportedNodeError(
            "the graph has no LRF-Dyn dendrite (a node with metadata lrfdyn='dendrite'); "
            "dendritic mode needs an LRF-Dyn model exported by `lrfdyn export`"
        )
    return names


def _edges(graph: nir.NIRGraph) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
        succs[a].append(b)
    return preds, succs


def _diag(node: nir.Conv2d) -> np.ndarray:
    """Per-channel kernels ``(d, kh, kw)`` of a depthwise conv, written grouped or not."""
    from lrfdyn.loihi.layers import conv_groups

    w, groups = conv_groups(np.asarray(node.weight, np.float64), int(np.asarray(node.groups)))
    if groups != w.shape[0] or w.shape[1] != 1:
        raise UnsupportedNodeError("an LRF/BN conv mixes channels; the dendritic lowering "
                                   "needs depthwise convolutions")
    return w[:, 0]


def lower_dendritic(graph: nir.NIRGraph, net: LoweredNetwork) -> list[DendriticBlock]:
    """Lower every LRF-Dyn attention of ``graph`` for streaming, next to its parallel ``net``.

    Raises:
        UnsupportedNodeError: when the graph has no dendrite, or a block around one does
            not have the exported LRF-Dyn shape (dendrite → LRF convs → BN → LIF).
        LoihiRangeError: when a value cannot be held in the stream's bit widths.
    """
    names = dendrite_nodes(graph)
    preds, succs = _edges(graph)
    return [_lower_block(graph, net, name, preds, succs) for name in names]


def _lower_block(graph: nir.NIRGraph, net: LoweredNetwork, dend: str,
                 preds: dict[str, list[str]], succs: dict[str, list[str]]) -> DendriticBlock:
    prefix = dend.rsplit(".", 1)[0]
    node = graph.nodes[dend]
    meta = node.metadata
    (u_group,) = preds[dend] if len(preds[dend]) == 1 else (None,)
    lrfs = [s for s in succs[dend] if s != f"{prefix}.bn"]
    bn_name = f"{prefix}.bn"
    if u_group not in net.groups or bn_name not in graph.nodes or \
            sorted(preds[bn_name]) != sorted([dend, *lrfs]) or len(succs[bn_name]) != 1:
        raise UnsupportedNodeError(
            f"{prefix}: expected token spikes → dendrite → LRF convs → BN → LIF as "
            "`lrfdyn export` writes it; this block has another shape"
        )
    out_group = succs[bn_name][0]
    incoming = _sources_through_relays(net, out_group)
    incoming = {BIAS_SOURCE if bias_offset(src) is not None else src for src in incoming}
    if out_group not in net.groups or not incoming <= {u_group, BIAS_SOURCE}:
        raise UnsupportedNodeError(f"{out_group}: inputs besides the dendrite "
                                   f"({sorted(incoming - {u_group, BIAS_SOURCE})}) are not "
                                   "supported in dendritic mode")
    A = np.asarray(meta["A"], np.float64)
    gamma = np.asarray(meta["Gamma"], np.float64)
    c_out = np.asarray(meta["C"], np.float64)
    d, k = gamma.shape
    h, w = (int(v) for v in net.groups[u_group].shape[1:])
    n_tok = h * w

    # --- x scale S, from a bound on |x| over a whole stream (binary input, |A|^m |Γ| summed).
    steps = n_tok + 2 * RELAY_STEPS  # longer than any stream; the bound only grows with it
    x_bound = _abs_response_bound(A, gamma, steps)  # (d, k)
    bits = value_bits(k)
    s_x = (1 << bits) / (1.05 * float(x_bound.max()))
    dv = np.rint(fixed.DECAY_UNITY * (1.0 - np.diagonal(A, axis1=1, axis2=2))).astype(np.int64)
    if dv.min() < 0 or dv.max() >= fixed.DECAY_UNITY:
        raise LoihiRangeError(f"{prefix}: a dendrite decay maps outside Loihi's 12-bit range")
    layers: list[StreamLayer] = []

    # Γ: binary token spikes; a_in << 6 adds Γ·S to v.
    idx = np.arange(d * k)
    layers.append(_layer("gamma", TOKENS, COMPARTMENTS, sp.csr_matrix(
        (gamma.ravel() * s_x / (1 << fixed.ACT_SHIFT), (idx, idx // k)), shape=(d * k, d)),
        graded=False))
    # β: off-diagonals of A, from the neighbours' graded v = S·x.
    coup = sp.block_diag([sp.csr_matrix(a - np.diag(np.diagonal(a))) for a in A]).tocsr()
    coup.eliminate_zeros()
    if coup.nnz:
        layers.append(_layer("coupling", COMPARTMENTS, COMPARTMENTS,
                             coup / (1 << fixed.ACT_SHIFT)))
    # C: y = C·x into the soma, scaled like x so |y| < 2^bits.
    y_bound = float(np.max(np.sum(np.abs(c_out) * x_bound, axis=1)))
    s_y = (1 << bits) / (1.05 * y_bound)
    layers.append(_layer("readout", COMPARTMENTS, SOMA, sp.csr_matrix(
        (c_out.ravel() * s_y / s_x, (idx // k, idx)), shape=(d, d * k))))

    # --- z = gain·Λ/64 · (scale·(y + Σ LRF(y) + Σ lrf bias) + shift), in parallel-mode units.
    units = net.groups[out_group].units
    s_z = units.gain * units.units / (1 << fixed.ACT_SHIFT)
    bn = graph.nodes[bn_name]
    bn_scale = _diag(bn)[:, 0, 0]
    bias = np.asarray(bn.bias, np.float64).copy()
    taps: dict[tuple[int, int], np.ndarray] = {(0, 0): bn_scale.copy()}  # (δ·b, offset) -> w
    for name in lrfs:
        conv = graph.nodes[name]
        dil = int(np.atleast_1d(conv.dilation)[0])
        kern = _diag(conv)
        if kern.shape[1:] != (3, 3) or tuple(np.atleast_1d(conv.padding)) != (dil, dil) \
                or tuple(np.atleast_1d(conv.stride)) != (1, 1):
            raise UnsupportedNodeError(f"{name}: the dendritic lowering takes 3×3 'same' "
                                       "depthwise convolutions with stride 1")
        bias += bn_scale * np.asarray(conv.bias, np.float64)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                key = (dil * b, dil * (a * w + b))
                taps[key] = taps.get(key, 0.0) + bn_scale * kern[:, a + 1, b + 1]
    masks = {_class(hb): _mask(h, w, hb) for hb in sorted({hb for hb, _ in taps})}

    offsets = {TOKENS: OFFSETS[TOKENS], COMPARTMENTS: OFFSETS[COMPARTMENTS],
               SOMA: OFFSETS[SOMA]}
    offsets.update({f"{PROD}.{c}": OFFSETS[PROD] for c in masks})
    # z_n leaves at n + E_z: late enough for the furthest neighbour on the shortest path.
    e_z = max(off + OFFSETS[PROD] + 1 for _, off in taps)
    offsets[Z] = e_z
    relays: dict[str, str] = {}
    for c in masks:
        layers.append(StreamLayer(f"feed.{c}", SOMA, f"{PROD}.{c}", _identity(d), 0,
                                  port="a_in1"))
        col = list(masks).index(c)
        layers.append(StreamLayer(f"mask.{c}", MASKS, f"{PROD}.{c}", sp.csr_matrix(
            (np.ones(d, np.int64), (np.arange(d), np.full(d, col))), shape=(d, len(masks))),
            0, graded=False, port="a_in2"))
    for (hb, off), wt in sorted(taps.items()):
        src = f"{PROD}.{_class(hb)}"
        delay = e_z - off - offsets[src] - 1
        while delay > fixed.MAX_DELAY:  # route through (and create) relays
            relay = f"relay.{src}"
            if relay not in relays:
                relays[relay] = src
                offsets[relay] = offsets[src] + RELAY_STEPS
                layers.append(StreamLayer(relay, src, relay, _identity(d), 0,
                                          delay=fixed.MAX_DELAY))
            src = relay
            delay -= RELAY_STEPS
        la = _layer(f"tap.{_class(hb)}.{off:+d}", src, Z,
                    sp.diags(wt * s_z / s_y, format="csr"))
        la.delay, la.offset = delay, off
        layers.append(la)
    bias_layer = _bias_layer(bias * s_z)
    if bias_layer is not None:
        layers.append(bias_layer)
    # A stream lasts until its last token's z has left, and long enough that no token's
    # value reaches a real token of the stream before or after it (n' − offset ∉ [0, N)).
    reach = max(abs(off) for _, off in taps)
    stream_steps = max(n_tok - 1 + e_z, n_tok + reach)
    return DendriticBlock(
        name=prefix, u_group=u_group, out_group=out_group, d=d, k=k, grid=(h, w), dv=dv.ravel(),
        masks=masks, relays=relays, layers=layers, offsets=offsets, stream_steps=stream_steps,
        scales={"x": s_x, "y": s_y, "z": s_z},
    )


def _sources_through_relays(net: LoweredNetwork, group: str) -> set[str]:
    """The spiking groups and sources that feed ``group``, looking through relays (the
    parallel lowering keeps the dendrite's output and the LRF sum as relays)."""
    found: set[str] = set()
    todo = [group]
    while todo:
        for s in net.incoming(todo.pop()):
            g = net.groups.get(s.src)
            if g is not None and g.graded:
                todo.append(s.src)
            else:
                found.add(s.src)
    return found


def _class(hb: int) -> str:
    """Mask class of a horizontal token offset: ``c`` (centre), ``l3``, ``r5``, …"""
    return "c" if hb == 0 else f"{'l' if hb < 0 else 'r'}{abs(hb)}"


def _mask(h: int, w: int, hb: int) -> np.ndarray:
    """Source tokens whose value may reach a target ``hb`` columns to their left.

    The target of source column j is column ``j − hb``; it must lie inside the row.
    """
    j = np.arange(h * w) % w
    return (j - hb >= 0) & (j - hb < w)


def _abs_response_bound(A: np.ndarray, gamma: np.ndarray, steps: int) -> np.ndarray:
    """``Σ_{m<steps} |A|^m |Γ|`` per channel and dendrite: a bound on |x| for 0/1 input."""
    x = np.abs(gamma)[..., None]
    total = np.zeros_like(x)
    a_abs = np.abs(A)
    for _ in range(steps):
        total += x
        x = a_abs @ x
    return total[..., 0]


def _layer(name: str, src: str, dst: str, values: sp.spmatrix,
           graded: bool = True) -> StreamLayer:
    """Quantize ``values`` (weights in output units per input unit) with the smallest
    exponent that fits the largest weight into an even 8-bit mantissa."""
    vals = sp.csr_matrix(values, dtype=np.float64)
    peak = float(np.max(np.abs(vals.data))) if vals.nnz else 0.0
    exp = math.ceil(math.log2(peak / fixed.WEIGHT_MAX)) if peak > 0 else 0
    q = fixed.quantize_to_mantissa(vals, 1.0, exp)
    return StreamLayer(name, src, dst, sp.csr_matrix(q.mant), exp, graded=graded,
                       clipped=q.clipped)


def _identity(d: int) -> sp.csr_matrix:
    return sp.identity(d, np.int64, format="csr")


def _bias_layer(bias: np.ndarray) -> StreamLayer | None:
    """The bias as a binary synapse from the on-source, quantized as lowering does."""
    if not np.any(bias):
        return None
    q = quantize_bias(bias)
    return StreamLayer("bias", BIAS_SOURCE, Z, sp.csr_matrix(q.mant), q.exp, graded=False,
                       clipped=q.clipped)


def source_data(block: DendriticBlock, u: np.ndarray,
                period: int | None = None) -> dict[str, np.ndarray]:
    """What each source sends, for token streams ``u (S, N, d)`` (0/1).

    Returns ``name -> (S, L, size)`` int64: row ``g`` of stream s is sent at its
    step g + 1. Tokens, masks and the bias are sent one step before the process that
    needs them computes with them. ``period`` (≥ the stream length) pads each stream
    with silent steps, as in the one dendritic network.
    """
    s, n, d = u.shape
    steps = block.stream_steps if period is None else period
    if steps < block.stream_steps:
        raise ValueError(f"period {steps} is shorter than the stream ({block.stream_steps})")
    tokens = np.zeros((s, steps, d), np.int64)
    lead = block.offsets[TOKENS] - 1
    tokens[:, lead:lead + n] = u
    masks = np.zeros((s, steps, len(block.masks)), np.int64)
    for ci, (c, m) in enumerate(block.masks.items()):
        lead = block.offsets[f"{PROD}.{c}"] - 2
        masks[:, lead:lead + n, ci] = m
    bias = np.zeros((s, steps, 1), np.int64)
    lead = block.offsets[Z] - 2
    bias[:, lead:lead + n] = 1
    return {TOKENS: tokens, MASKS: masks, BIAS_SOURCE: bias}
