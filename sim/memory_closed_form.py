"""Attention memory in closed form: the cross-check of the lowered counts (docs/design.md §6.2).

:func:`analytic` counts, per row of the table (:data:`ROWS`), what the lowering builds, in
the same three kinds as :mod:`lrfdyn.sim.memory_measured`: for LRF-Dyn it equals the
lowered network's state and buffers exactly, and its weights up to the few quantized
weights that round to 0 and drop out of sparse layers (conv kernels are stored whole);
for SSA it is the lower bound it always was (only the d_h² accumulators per head), and
the report shows by how much the real construction exceeds it. :func:`graph_scale`
reads the model's parameters off an exported LRF-Dyn graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import OFFSETS, PROD, RELAY_STEPS
from lrfdyn.sim.bits import GRADED_BUFFER_BITS as _GRADED_BUFFER_BITS
from lrfdyn.sim.bits import Memory

#: Variants and modes of the table, in its order.
ROWS = ("ssa", "lrf_ssa", "statten", "a2os2a", "lrf_dyn_parallel", "lrf_dyn_dendritic")
#: Rows counted off the given LRF-Dyn graph's own lowering.
LOWERED_ROWS = ("lrf_dyn_parallel", "lrf_dyn_dendritic")
#: Rows counted off a same-shape model with that attention, exported and lowered.
VARIANT_ROWS = ("ssa", "lrf_ssa", "statten", "a2os2a")
#: Its scale, as :func:`graph_scale` reads it off the lowered network (the five-stage
#: stem puts the tokens at latency 9).
PAPER_SCALE = dict(d=512, grid=(14, 14), heads=8, blocks=8, k=8, dilations=(3, 5),
                   timesteps=4, token="v", gate="none", token_latency=9)


# ---------------------------------------------------------------- the closed-form model


def _lif(n: int) -> int:
    return n * 2 * fixed.UV_BITS


def _relay(n: int) -> int:
    return n * fixed.UV_BITS


def _layer(n_dst: int, weights: int, delay: int = 0, graded: bool = False) -> Memory:
    bits = _GRADED_BUFFER_BITS if graded else fixed.BUFFER_BITS
    return Memory(weights=weights * fixed.WEIGHT_BITS, buffers=n_dst * (delay + 1) * bits)


def _bias(n: int) -> Memory:
    """A bias column (n weights) from the bias source that starts at its group's latency:
    undelayed, it adds into the accumulator the group's data synapses hold."""
    return Memory(weights=n * fixed.WEIGHT_BITS)


def lrf_offsets(grid: tuple[int, int], dilations: tuple[int, ...]) -> set[tuple[int, int]]:
    """The LRF's taps as (column shift, token offset) in raster order, centre included."""
    w = grid[1]
    return {(dil * b, dil * (a * w + b)) for dil in dilations for a in (-1, 0, 1)
            for b in (-1, 0, 1)}


def analytic(row: str, *, d: int, grid: tuple[int, int], heads: int, k: int = 8,
             dilations: tuple[int, ...] = (3, 5), blocks: int = 1, token: str = "v",
             gate: str = "none", token_latency: int = 4, **_: Any) -> Memory:
    """Attention memory of ``blocks`` blocks, in closed form (see the module docstring).

    The structure is the lowering's (``loihi/lower.py``), per block of input latency L:

    * every spike generator (q/k/v): LIF, a 1×1 conv (d² weights) and a bias delayed
      by L;
    * LRF-Dyn parallel: the dendrite relay y (a depthwise (2H−1)×(2W−1) conv), the
      shifter relay (three depthwise convs from y: BN 1×1 and one 3×3 per dilation,
      graded; a bias and the constant ``a_in2`` column, delayed by L + 2), the attention
      LIF (a one-to-one graded conv and a bias delayed by L + 3); token kv adds the AND
      neuron u (two one-to-one convs, every later group one step later); gate q adds
      the gate neuron (one-to-one from the attention LIF, and a diagonal synapse from
      Q delayed to meet it);
    * LRF-Dyn dendritic: the same minus y, the shifter and every synapse into them and
      into the attention LIF, plus the stream network (:func:`_stream`);
    * SSA / LRF-SSA / STAtten: the attention LIF, the heads' (d/h)² Kᵀ·V accumulators (a
      lower bound: Loihi has no product process to hold them), the product's BN bias, and
      for LRF-SSA one depthwise 3×3 conv of V per dilation (STAtten's block sum keeps the
      same accumulators over more steps);
    * A²OS²A: the attention LIF and the heads' N×N score accumulators (a lower bound: the
      lowering holds every ternary product Q·K and every R·V as a graded neuron, d·N²
      of each, see :func:`a2os2a_neurons`).

    ``token_latency`` (the stem's depth) is accepted for the table's scale but no longer
    enters: biases start at their group's latency from shared sources and hold no delay
    buffer (:func:`_bias`). Every bias is counted as present, as in a trained network.
    """
    if row not in ROWS:
        raise ValueError(f"unknown memory row {row!r}; choose one of {ROWS}")
    h, w = grid
    n = h * w
    nd = n * d
    dyn = row.startswith("lrf_dyn")
    kv = int(dyn and token == "kv")
    q_gate = dyn and gate == "q"
    kinds = ("q", "k", "v") if not dyn else ("v",) + (("k",) if kv else ()) + \
        (("q",) if q_gate else ())
    total = Memory()
    for _ in range(blocks):
        mem = Memory()
        for _ in kinds:  # spike generators: LIF, 1×1 conv, bias
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, d * d) + _bias(nd)
        mem = mem + Memory(state=_lif(nd))  # the attention LIF
        if not dyn:  # the mechanism's accumulators: Kᵀ·V, or A²OS²A's scores
            mem = mem + Memory(state=mechanism_state(row, d=d, heads=heads, grid=grid))
            if row == "a2os2a":
                total = total + mem
                continue
            mem = mem + _bias(nd)  # the BN bias of the product
            if row == "lrf_ssa":
                for _ in dilations:
                    mem = mem + _layer(nd, 9 * d)
            total = total + mem
            continue
        if kv:  # AND neuron u = K ∧ V: one one-to-one conv from each
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, d) + _layer(nd, d)
        if row == "lrf_dyn_parallel":
            mem = mem + Memory(state=_relay(nd)) + _layer(nd, d * (2 * h - 1) * (2 * w - 1))
            mem = mem + Memory(state=_relay(nd))  # the shifter
            mem = mem + _layer(nd, d * (1 + 9 * len(dilations)), graded=True)
            mem = mem + Memory(buffers=len(dilations) * nd * _GRADED_BUFFER_BITS)
            mem = mem + _bias(nd) + _bias(nd)  # bias, unit
            mem = mem + _layer(nd, d, graded=True) + _bias(nd)
        else:
            mem = mem + _stream(d, grid, k, dilations)
        if q_gate:  # gate s ∧ Q: one-to-one from s; Q waits for s
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, d) + _layer(nd, nd, delay=3 + kv)
        total = total + mem
    return total


def _stream(d: int, grid: tuple[int, int], k: int, dilations: tuple[int, ...]) -> Memory:
    """One block's stream network (:mod:`lrfdyn.loihi.dendritic`), in closed form."""
    taps = lrf_offsets(grid, dilations) | {(0, 0)}
    classes = sorted({hb for hb, _ in taps})
    e_z = max(off for _, off in taps) + OFFSETS[PROD] + 1
    relays: set[tuple[int, int]] = set()
    mem = Memory(state=k * d * (2 * fixed.UV_BITS + fixed.DECAY_BITS))  # compartments
    mem = mem + _layer(k * d, k * d)  # Γ, binary tokens
    mem = mem + _layer(k * d, 2 * (k - 1) * d, graded=True)  # β couplings
    mem = mem + _layer(d, k * d, graded=True)  # C readout into the soma
    for _ in classes:  # feed and mask of each product neuron
        mem = mem + _layer(d, d, graded=True) + _layer(d, d)
    for hb, off in taps:
        delay = e_z - off - OFFSETS[PROD] - 1
        level = 0
        while delay > fixed.MAX_DELAY:
            level += 1
            delay -= RELAY_STEPS
        relays |= {(hb, lv) for lv in range(1, level + 1)}
        mem = mem + _layer(d, d, delay=delay, graded=True)
    for _ in relays:
        mem = mem + _layer(d, d, delay=fixed.MAX_DELAY, graded=True)
    mem = mem + _bias(d)  # bias into z
    mem.state += (1 + len(classes) + len(relays) + 1) * d * fixed.UV_BITS  # soma, prods, relays, z
    return mem


def mechanism_state(row: str, *, d: int, heads: int, k: int = 8,
                    grid: tuple[int, int] = (0, 0), **_: Any) -> int:
    """State the attention mechanism itself keeps per block, in bits: SSA's Kᵀ·V
    accumulators (O(d²/h)), A²OS²A's N×N scores per head (O(h·N²)), LRF-Dyn dendritic's
    k·d compartments (O(k·d)), nothing for the parallel mode (its kernel is in
    synapses)."""
    if row in ("ssa", "lrf_ssa", "statten"):
        return heads * (d // heads) ** 2 * fixed.UV_BITS
    if row == "a2os2a":
        n = grid[0] * grid[1]
        return heads * n * n * fixed.UV_BITS
    if row == "lrf_dyn_dendritic":
        return k * d * (2 * fixed.UV_BITS + fixed.DECAY_BITS)
    return 0


def _pct(a: float, b: float) -> float | None:
    return None if b == 0 else 100.0 * a / b


def with_pct(m: Memory, ssa: Memory) -> dict[str, Any]:
    return {**m.to_dict(), "state_pct_of_ssa": _pct(m.state, ssa.state),
            "weights_pct_of_ssa": _pct(m.weights, ssa.weights),
            "buffers_pct_of_ssa": _pct(m.buffers, ssa.buffers),
            "total_pct_of_ssa": _pct(m.total, ssa.total)}


def table(scale: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every row at ``scale`` in closed form, each kind also as a percentage of SSA's."""
    rows = {r: analytic(r, **scale) for r in ROWS}
    return {r: {**with_pct(m, rows["ssa"]),
                "mechanism_state_per_block": mechanism_state(r, **scale)}
            for r, m in rows.items()}


def graph_scale(graph: Any, net: Any = None) -> dict[str, Any]:
    """The analytic model's parameters for an exported LRF-Dyn graph (lowered here unless
    its lowered ``net`` is given)."""
    from lrfdyn.errors import ValidationError
    from lrfdyn.loihi.dendritic import dendrite_nodes

    if net is None:
        from lrfdyn.loihi.lower import lower

        net = lower(graph)
    dends = dendrite_nodes(graph)
    first = dends[0].rsplit(".", 1)[0]
    meta = graph.nodes[dends[0]].metadata
    if "heads" not in meta:
        raise ValidationError("the graph does not record its attention heads; re-export it "
                              "with `lrfdyn export` (SSA's Kᵀ·V memory depends on them)")
    d, k = np.asarray(meta["Gamma"]).shape
    v = net.groups[f"{first}.v_lif"]
    dil = tuple(sorted({int(np.atleast_1d(graph.nodes[n].dilation)[0]) for n in graph.nodes
                        if n.startswith(f"{first}.lrf.")}))
    return dict(d=int(d), grid=tuple(int(s) for s in v.shape[1:]), heads=int(meta["heads"]),
                blocks=len(dends), k=int(k), dilations=dil,
                timesteps=int(graph.metadata.get("timesteps", net.input.timesteps)),
                token="kv" if f"{first}.u" in graph.nodes else "v",
                gate="q" if f"{first}.gate" in graph.nodes else "none",
                token_latency=v.latency - 1)



def a2os2a_neurons(d: int, tokens: int, heads: int, blocks: int, runs: int = 1) -> int:
    """Neurons of ``blocks`` A²OS²A attentions as :mod:`lrfdyn.export.a2os2a` builds them:
    Q, K, V, the attention LIF and K, V flattened (d·N each); the products A, B and the
    gate (d·N² each); the scores, R and two rectified parts per level run (h·N² each)."""
    n2 = tokens * tokens
    return blocks * (6 * d * tokens + 3 * d * n2 + (2 + 2 * runs) * heads * n2)
