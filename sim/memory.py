"""Attention memory, counted: SSA, LRF-SSA, LRF-Dyn parallel and LRF-Dyn dendritic (DESIGN.md §4).

Three kinds of memory, each in bits:

* **neuron state**: the registers each neuron keeps, 24 bits per u and v of a LIF
  or a dendritic compartment (plus the compartment's own 12-bit decay), 24 bits for
  the v of a graded relay (``GradedVec``, ``ProdNeuron``);
* **synaptic weights**: 8 bits per stored weight (all of a dense matrix, the
  non-zeros of a sparse one);
* **delay buffers**: each synapse layer's output buffer, one entry per target
  neuron and delay slot, 16 bits for spikes and 24 for graded payloads.

The *attention* of block b is its neurons ``blocks.b.attn.*`` and every synapse
into them (in dendritic mode the stream network replaces the synapses into the
attention LIF). The projection and everything after it are the same for every
variant and are left out.

:func:`measured` reads these numbers off the Lava processes lowering builds
(Var shapes and the weights they hold). SSA and LRF-SSA multiply activations and
have no lowering (NIR 1.0 has no product node), so they exist only in
:func:`analytic`, the closed-form model, which also gives the paper's scale. The
analytic model counts every structurally present synapse; quantization can round
a few weights to 0 and drop them, so measured weights are at most the model's,
while neuron state and buffers agree exactly (``tests/sim/test_memory.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import OFFSETS, PROD, RELAY_STEPS

#: Variants and modes of the table, in its order.
ROWS = ("ssa", "lrf_ssa", "lrf_dyn_parallel", "lrf_dyn_dendritic")
#: Spikformer-8-512 on ImageNet, as the paper reports its memory (DESIGN.md §1).
PAPER_SCALE = dict(d=512, grid=(14, 14), heads=8, blocks=8, k=8, dilations=(3, 5),
                   timesteps=4, token="v", gate="none", token_latency=4)
#: The paper's figure: LRF-Dyn needs this much less inference memory than SSA.
PAPER_CLAIM = -0.494
_GRADED_BUFFER_BITS = fixed.UV_BITS


@dataclass
class Memory:
    state: int = 0
    weights: int = 0
    buffers: int = 0

    @property
    def total(self) -> int:
        return self.state + self.weights + self.buffers

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.state + other.state, self.weights + other.weights,
                      self.buffers + other.buffers)

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total": self.total}


# ---------------------------------------------------------------- measured on Lava processes


def process_memory(proc: Any) -> Memory:
    """Memory of one Lava process, from its Vars."""
    kind = type(proc).__name__
    size = lambda var: int(np.prod(var.shape))  # noqa: E731
    if kind == "DendriteCompartments":  # its decay is per compartment
        return Memory(state=(size(proc.u) + size(proc.v)) * fixed.UV_BITS
                      + size(proc.dv) * fixed.DECAY_BITS)
    if hasattr(proc, "u") and hasattr(proc, "v"):  # LIF and its subclasses
        return Memory(state=(size(proc.u) + size(proc.v)) * fixed.UV_BITS)
    if kind in ("GradedVec", "ProdNeuron"):
        return Memory(state=size(proc.v) * fixed.UV_BITS)
    if hasattr(proc, "weights") and hasattr(proc, "a_buff"):
        w = proc.weights.init
        stored = int(w.nnz) if sp.issparse(w) else int(np.asarray(w).size)
        graded = int(np.asarray(proc.num_message_bits.init).ravel()[0]) > 0
        bits = _GRADED_BUFFER_BITS if graded else fixed.BUFFER_BITS
        return Memory(weights=stored * fixed.WEIGHT_BITS, buffers=size(proc.a_buff) * bits)
    return Memory()  # sources and recorders are host-side I/O


def measured(graph: Any) -> dict[str, Memory]:
    """Attention memory of an exported LRF-Dyn graph, parallel and dendritic, read off Lava.

    Builds (never runs) the processes of both lowerings and sums the attention's part.
    """
    from lrfdyn.loihi.build import build_lava, build_streams
    from lrfdyn.loihi.dendritic import source_data
    from lrfdyn.sim.dendritic import lower_both

    net, blocks = lower_both(graph)
    lava = build_lava(net, np.zeros((1, net.input.size), np.int64))
    try:
        procs = {**lava.lifs, **lava.synapses}
        parallel = _attention_sum(procs, [b.name for b in blocks], replaced=())
        dendritic = _attention_sum(procs, [b.name for b in blocks],
                                   replaced=tuple(b.out_group for b in blocks))
    finally:
        lava.close()
    for block in blocks:
        u = np.zeros((1, block.tokens, block.d), np.int64)
        streams = build_streams(block, source_data(block, u))
        try:
            for proc in [*streams.neurons.values(), *streams.synapses.values()]:
                dendritic = dendritic + process_memory(proc)
        finally:
            streams.close()
    return {"lrf_dyn_parallel": parallel, "lrf_dyn_dendritic": dendritic}


def _attention_sum(procs: dict[str, Any], prefixes: list[str], replaced: tuple[str, ...]
                   ) -> Memory:
    """Neurons named ``<prefix>.*`` and synapses into them, minus synapses into ``replaced``."""
    total = Memory()
    for name, proc in procs.items():
        dst = name.split("->", 1)[1] if "->" in name else name.removesuffix(".bias")
        if not any(dst.startswith(p + ".") for p in prefixes):
            continue
        if dst in replaced and dst != name:  # a synapse the stream network replaces
            continue
        total = total + process_memory(proc)
    return total


# ---------------------------------------------------------------- the closed-form model


def _lif(n: int) -> int:
    return n * 2 * fixed.UV_BITS


def _layer(n_dst: int, weights: int, delay: int = 0, graded: bool = False) -> Memory:
    bits = _GRADED_BUFFER_BITS if graded else fixed.BUFFER_BITS
    return Memory(weights=weights * fixed.WEIGHT_BITS, buffers=n_dst * (delay + 1) * bits)


def _sparse_or_dense(nnz: int, n_dst: int, n_src: int) -> int:
    """Stored weights under the lowering's rule: sparse below 25 % density."""
    return nnz if nnz < 0.25 * n_dst * n_src else n_dst * n_src


def lrf_offsets(grid: tuple[int, int], dilations: tuple[int, ...]) -> set[tuple[int, int]]:
    """The LRF's taps as (column shift, token offset) in raster order, centre included."""
    w = grid[1]
    return {(dil * b, dil * (a * w + b)) for dil in dilations for a in (-1, 0, 1)
            for b in (-1, 0, 1)}


def _pairs(grid: tuple[int, int], dilations: tuple[int, ...], causal: bool) -> int:
    """(target, source) token pairs one channel's synapses connect.

    Without ``causal``: the LRF's neighbours (3×3 dilated taps inside the grid). With
    it: the LRF applied to the causal dendrite output, ``z_n = Σ_off w·y_{n+off}`` with
    ``y_m = Σ_{n' ≤ m} K·u_{n'}``, so target n reaches every source up to its furthest
    in-grid neighbour.
    """
    h, w = grid
    n = h * w
    i, j = np.divmod(np.arange(n), w)
    mask = np.zeros((n, n), bool)
    reach = np.arange(n)
    for dil in dilations:
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                si, sj = i + dil * a, j + dil * b
                ok = (si >= 0) & (si < h) & (sj >= 0) & (sj < w)
                mask[np.arange(n)[ok], (si * w + sj)[ok]] = True
                reach = np.where(ok, np.maximum(reach, si * w + sj), reach)
    if causal:
        return int((reach + 1).sum())
    return int(mask.sum())


def analytic(row: str, *, d: int, grid: tuple[int, int], heads: int, k: int = 8,
             dilations: tuple[int, ...] = (3, 5), blocks: int = 1, token: str = "v",
             gate: str = "none", token_latency: int = 4, shared_linear: bool = False,
             **_: Any) -> Memory:
    """Attention memory of ``blocks`` blocks, in closed form (see the module docstring).

    ``token_latency`` is the latency of the tokens group (the stem's depth); the
    lowering delays each bias to its group's latency, so bias buffers grow with it.
    The lowering stores a per-token Linear (a 1×1 conv) once per token, N·d² weights;
    ``shared_linear`` counts d² instead, as hardware that shares convolution weights
    across positions would.
    """
    n = grid[0] * grid[1]
    nd = n * d
    per_block = 5 + (token == "kv") + (gate == "q")  # latency steps one block adds
    total = Memory()
    for b in range(blocks):
        lat = token_latency + b * per_block  # latency of the block's input group
        mem = Memory()
        # q/k/v spike generators: 1×1 conv per token (block-diagonal) plus a bias.
        kinds = {"ssa": ("q", "k", "v"), "lrf_ssa": ("q", "k", "v")}.get(
            row, ("v",) + (("k",) if token == "kv" else ()) + (("q",) if gate == "q" else ()))
        linear = d * d if shared_linear else _sparse_or_dense(n * d * d, nd, nd)
        for _ in kinds:
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, linear)
            mem = mem + _layer(nd, nd, delay=lat)  # bias, delayed to the group's latency
        att_lat = lat + 2 + (row.startswith("lrf_dyn") and token == "kv")
        mem = mem + Memory(state=_lif(nd))  # the attention LIF
        if row in ("ssa", "lrf_ssa"):
            # Q·(Kᵀ·V): the (d/h)² accumulators of each head; a lower bound, as Loihi has
            # no product process to hold them.
            mem = mem + Memory(state=heads * (d // heads) ** 2 * fixed.UV_BITS)
            mem = mem + _layer(nd, nd, delay=att_lat - 1)  # the BN bias of the product
            if row == "lrf_ssa":
                mem = mem + _layer(nd, d * _pairs(grid, dilations, causal=False))
        elif row == "lrf_dyn_parallel":
            mem = mem + _layer(nd, _sparse_or_dense(d * _pairs(grid, dilations, True), nd, nd))
            mem = mem + _layer(nd, nd, delay=att_lat - 1)
        elif row == "lrf_dyn_dendritic":
            mem = mem + _stream(d, grid, k, dilations)
        else:
            raise ValueError(f"unknown memory row {row!r}; choose one of {ROWS}")
        if token == "kv" and row.startswith("lrf_dyn"):  # AND neuron u = K ∧ V, one synapse each
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, nd) + _layer(nd, nd)
        if gate == "q" and row.startswith("lrf_dyn"):  # AND neuron s ∧ Q; Q waits for s
            mem = mem + Memory(state=_lif(nd)) + _layer(nd, nd) + _layer(
                nd, nd, delay=att_lat - lat - 1)
        total = total + mem
    return total


def _stream(d: int, grid: tuple[int, int], k: int, dilations: tuple[int, ...]) -> Memory:
    """One block's stream network (:mod:`lrfdyn.loihi.dendritic`), in closed form."""
    taps = lrf_offsets(grid, dilations) | {(0, 0)}
    classes = sorted({hb for hb, _ in taps})
    e_z = max(off for _, off in taps) + OFFSETS[PROD] + 1
    relays: set[int] = set()
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
    mem = mem + _layer(d, d)  # bias into z
    relay_count = len(relays)
    mem.state += (1 + len(classes) + relay_count + 1) * d * fixed.UV_BITS  # soma, prods, relays, z
    return mem


def mechanism_state(row: str, *, d: int, heads: int, k: int = 8, **_: Any) -> int:
    """State the attention mechanism itself keeps per block, in bits: SSA's Kᵀ·V
    accumulators (O(d²/h)), LRF-Dyn dendritic's k·d compartments (O(k·d)), nothing
    for the parallel mode (its kernel is in synapses)."""
    if row in ("ssa", "lrf_ssa"):
        return heads * (d // heads) ** 2 * fixed.UV_BITS
    if row == "lrf_dyn_dendritic":
        return k * d * (2 * fixed.UV_BITS + fixed.DECAY_BITS)
    return 0


def table(scale: dict[str, Any], **options: Any) -> dict[str, dict[str, Any]]:
    """Every row at ``scale``, with each kind also as a percentage of SSA's."""
    scale = {**scale, **options}
    rows = {r: analytic(r, **scale) for r in ROWS}
    ssa = rows["ssa"]
    pct = lambda a, b: None if b == 0 else 100.0 * a / b  # noqa: E731
    return {r: {**m.to_dict(), "state_pct_of_ssa": pct(m.state, ssa.state),
                "weights_pct_of_ssa": pct(m.weights, ssa.weights),
                "buffers_pct_of_ssa": pct(m.buffers, ssa.buffers),
                "total_pct_of_ssa": pct(m.total, ssa.total),
                "mechanism_state_per_block": mechanism_state(r, **scale)}
            for r, m in rows.items()}


def graph_scale(graph: Any) -> dict[str, Any]:
    """The analytic model's parameters for an exported LRF-Dyn graph."""
    from lrfdyn.errors import ValidationError
    from lrfdyn.sim.dendritic import lower_both

    net, blocks = lower_both(graph)
    first = blocks[0]
    meta = graph.nodes[f"{first.name}.dendrite"].metadata
    if "heads" not in meta:
        raise ValidationError("the graph does not record its attention heads; re-export it "
                              "with `lrfdyn export` (SSA's Kᵀ·V memory depends on them)")
    dil = tuple(sorted({int(np.atleast_1d(graph.nodes[n].dilation)[0]) for n in graph.nodes
                        if n.startswith(f"{first.name}.lrf.")}))
    return dict(d=first.d, grid=first.grid, heads=int(meta["heads"]), k=first.k,
                dilations=dil, blocks=len(blocks),
                token="kv" if f"{first.name}.u" in graph.nodes else "v",
                gate="q" if f"{first.name}.gate" in graph.nodes else "none",
                token_latency=net.groups[first.u_group].latency - 1)


def memory_report(graph: Any, paper: dict[str, Any] = PAPER_SCALE) -> dict[str, Any]:
    """The whole comparison: measured vs model at the graph's scale, and the paper's scale."""
    small = graph_scale(graph)
    meas = measured(graph)
    model = table(small)
    agreement = {r: {kind: (getattr(m, kind) / model[r][kind] if model[r][kind] else None)
                     for kind in ("state", "weights", "buffers")} for r, m in meas.items()}
    big = table(paper)
    shared = table(paper, shared_linear=True)
    claim = {r: {"per_token_weights_pct": big[r]["total_pct_of_ssa"] - 100.0,
                 "shared_weights_pct": shared[r]["total_pct_of_ssa"] - 100.0}
             for r in ROWS if r != "ssa"}
    return {"small": {"scale": _jsonable(small), "measured": {r: m.to_dict()
                                                              for r, m in meas.items()},
                      "model": model, "measured_over_model": agreement},
            "paper": {"scale": _jsonable(paper), "per_token_weights": big,
                      "shared_weights": shared},
            "claim": {"paper_pct": 100.0 * PAPER_CLAIM, "ours": claim}}


def _jsonable(scale: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in scale.items()}


def markdown(report: dict[str, Any]) -> str:
    """The memory table as Markdown, in Mbit, with totals as a percentage of SSA."""
    mb = lambda bits: f"{bits / 1e6:,.2f}"  # noqa: E731
    small, paper = report["small"], report["paper"]
    lines = [f"### At this model's scale {small['scale']}", "",
             "| row | state | weights | buffers | total (Mbit) | % of SSA | source |",
             "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        m = small["measured"].get(r) or small["model"][r]
        src = "measured on Lava processes" if r in small["measured"] else "model (no lowering)"
        lines.append(f"| {r} | {mb(m['state'])} | {mb(m['weights'])} | {mb(m['buffers'])} | "
                     f"{mb(m['total'])} | {100 * m['total'] / small['model']['ssa']['total']:.1f} |"
                     f" {src} |")
    for name, key in (("per-token Linear weights, as lowered", "per_token_weights"),
                      ("Linear weights shared across tokens", "shared_weights")):
        lines += ["", f"### Paper scale {paper['scale']}: {name}", "",
                  "| row | state | weights | buffers | total (Mbit) | % of SSA | "
                  "mechanism state / block (bits) |", "|---|---|---|---|---|---|---|"]
        for r, m in paper[key].items():
            lines.append(f"| {r} | {mb(m['state'])} | {mb(m['weights'])} | {mb(m['buffers'])} |"
                         f" {mb(m['total'])} | {m['total_pct_of_ssa']:.1f} | "
                         f"{m['mechanism_state_per_block']:,} |")
    return "\n".join(lines) + "\n"


def write_memory(report: dict[str, Any], out: Any) -> dict[str, Any]:
    """``memory.json``, ``memory.md`` and two bar charts (this scale, the paper's) in ``out``."""
    from pathlib import Path

    from lrfdyn.io import write_json, write_text
    from lrfdyn.sim import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small = report["small"]
    rows_small = {r: small["measured"].get(r) or small["model"][r] for r in ROWS}
    kinds = ("state", "weights", "buffers")
    files = {"json": write_json(out / "memory.json", report),
             "markdown": write_text(out / "memory.md", markdown(report))}
    files["small_png"] = plots.memory_comparison(
        list(ROWS), {k: [rows_small[r][k] for r in ROWS] for k in kinds},
        out / "memory_small.png", xlabel="attention",
        title="attention memory at this model's scale (LRF-Dyn measured on Lava)")
    paper = report["paper"]["per_token_weights"]
    files["paper_png"] = plots.memory_comparison(
        list(ROWS), {k: [paper[r][k] for r in ROWS] for k in kinds},
        out / "memory_paper.png", unit="MiB", scale=8 * 1024 * 1024, xlabel="attention",
        title="attention memory, Spikformer-8-512 scale (analytic model)")
    return files
