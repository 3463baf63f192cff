"""Export the Spikformer backbone with LRF-Dyn attention to NIR (parallel mode).

Every tensor between neurons keeps the (C, H, W) layout of the token grid, so
each operation is a standard NIR node:

* per-token Linear + BN → ``Conv2d`` 1×1 (BN folded into weight and bias);
* the dendritic recurrence → its exact causal token convolution. Over tokens
  in raster order, ``y_n = Σ_m K_m u_{n−m}`` with ``K_m = C A^m Γ``; on the
  (H, W) grid this is a depthwise ``Conv2d`` with a (2H−1)×(2W−1) kernel and
  padding (H−1, W−1), whose tap at offset (a, b) is ``K_{a·W+b}`` (0 when
  ``a·W+b < 0``, i.e. acausal). For any output exactly one offset per lag m
  lands inside the grid, so the 2-D form equals the raster recurrence. The node
  carries ``metadata = {lrfdyn: "dendrite", A, Gamma, C, k, tau, beta}``;
* the LRF → depthwise dilated ``Conv2d`` 3×3 nodes, summed with y into a 1×1
  depthwise ``Conv2d`` that holds the folded BN;
* AND of two spike trains (``token=kv``, ``gate=q``) → a ``Scale`` of ones fed
  by both, then a memoryless ``Threshold`` at 1.5;
* membrane shortcuts → edges from every earlier branch's output node into the
  same LIF node (NIR sums the edges entering a node);
* the head's mean over tokens → ``AvgPool2d`` over the grid, ``Flatten``, ``Affine``.

SSA and LRF-SSA multiply activations, which NIR 1.0 cannot express; they use
lrfdyn's ``graded`` extension node (:func:`lrfdyn.nir_types.graded_node`). Per head,
``Q·(Kᵀ·V)`` becomes exact integer operations (:func:`ssa_attention`):

* ``KV[i, j] = K[i] AND V[j]`` per token: a memoryless ``Threshold`` at 1.5 fed by two
  1×1 convs that pick channel i of K and j of V;
* ``M = Σ_tokens KV``: a conv over the whole grid into a graded node (the count);
* ``P[n, i, j] = Q[n, i]·M[i, j] = max(M[i, j] + N·Q[n, i] − N, 0)``, exact because
  ``0 ≤ M ≤ N`` and Q is binary: a rectifying graded node fed by M (broadcast to every
  token) and by ``N·Q − N``;
* ``Σ_i P[n, i, j]·s``: a 1×1 conv into the attention LIF.

STAtten is SSA over blocks of b time steps: the count of each step goes into a
``block_sum`` extension node (:func:`lrfdyn.nir_types.block_sum_node`) whose value at
step t is the sum over t's block, so the gate's offset is ``b·N``. A²OS²A's ternary
scores are built in :mod:`lrfdyn.export.a2os2a`. A variant in :data:`PRODUCT_BLOCKS`
(none today; tests withdraw one to check the path) is refused with an error naming the
block and what is missing.
"""

from __future__ import annotations

import numpy as np
import torch

from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.export.a2os2a import a2os2a_attention
from lrfdyn.export.builder import (
    GraphBuilder,
    bn_scale_shift,
    conv_node,
    lif_node,
    linear_bn,
    qkv_spikes,
    register,
)
from lrfdyn.nir_types import BLOCK_SUM, GRADED, block_sum_extension, block_sum_node, graded_node, \
    mark_extension
from lrfdyn.train.functional import dendrite as dfn
from lrfdyn.train.models.attention import AND_THRESHOLD, SSA, LRFDyn, LRFSSA, STAtten
from lrfdyn.train.models.spikformer import ConvBN, Spikformer

import nir

#: Why each attention variant that does not export yet cannot (what its lowering lacks).
PRODUCT_BLOCKS: dict[str, str] = {}


def _out_shape(g: GraphBuilder, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in next(iter(g.nodes[name].output_type.values())))


def conv_bn(g: GraphBuilder, name: str, m: ConvBN, src: str, shape: tuple[int, int, int]) -> str:
    scale, shift = bn_scale_shift(m.bn)
    w = m.conv.weight.detach().double().numpy() * scale[:, None, None, None]
    pad = m.conv.padding if isinstance(m.conv.padding, tuple) else (m.conv.padding,) * 2
    return g.add(name, conv_node(w, shift, shape, stride=m.conv.stride[0], padding=pad), src)


def and_gate(g: GraphBuilder, name: str, a: str, b: str, shape: tuple[int, ...]) -> str:
    """``H(a + b − 1.5)``: both spike trains into one memoryless threshold neuron."""
    g.add(f"{name}.in", nir.Scale(scale=np.ones(shape, np.float32)), a, b)
    return g.add(name, nir.Threshold(threshold=np.full(shape, AND_THRESHOLD, np.float32)),
                 f"{name}.in")


def token_kernel_2d(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Depthwise 2-D weights ``(d, 1, 2H−1, 2W−1)`` of the raster-order causal kernel ``K (N, d)``."""
    h, w = grid
    n, d = kernel.shape
    out = np.zeros((d, 1, 2 * h - 1, 2 * w - 1))
    for a in range(-(h - 1), h):
        for b in range(-(w - 1), w):
            m = a * w + b
            if 0 <= m < n:
                out[:, 0, (h - 1) - a, (w - 1) - b] = kernel[m]
    return out


def pair_convs(d: int, heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grouped 1×1 kernels of the per-head pair layout, row (head, i, j) = h·dh² + i·dh + j.

    Returns ``first`` (groups = d: each channel h·dh+i copied to its dh pairs),
    ``second`` (groups = heads: pair (h, i, j) picks channel h·dh+j of its head) and
    ``total`` (groups = heads: channel h·dh+j sums its head's pairs (·, j)). Kept grouped,
    the kernels store d·dh, d·dh² and d·dh² weights instead of d²·dh each.
    """
    dh = d // heads
    pairs = heads * dh * dh
    first = np.ones((pairs, 1, 1, 1))
    second = np.zeros((pairs, dh, 1, 1))
    rows = np.arange(pairs)
    second[rows, rows % dh, 0, 0] = 1.0
    total = np.zeros((d, dh * dh, 1, 1))
    for c in range(d):
        total[c, (c % dh) + dh * np.arange(dh), 0, 0] = 1.0
    return first, second, total


def ssa_attention(g: GraphBuilder, name: str, m: SSA | LRFSSA | STAtten, src: str,
                  shape: tuple[int, int, int]) -> str:
    """Nodes of one SSA, LRF-SSA or STAtten attention (module docstring); returns the
    attention LIF, whose input is ``(1−λ)·s·Q(KᵀV) + λ·Σ_δ DWConv_δ(V)`` (λ = 0 but for
    LRF-SSA). STAtten's M sums the counts of its block's steps (a block-sum node), so M
    reaches ``b·N`` and the gate's offset grows with it."""
    cfg = m.cfg
    d, hgt, wid = shape
    block = cfg.statten_block if isinstance(m, STAtten) else 1
    n_tok = hgt * wid
    cap = block * n_tok  # the largest M: every token's pair fires at every step of the block
    pairs = cfg.heads * (d // cfg.heads) ** 2
    q, k, v = (qkv_spikes(g, name, m, kind, src, shape) for kind in ("q", "k", "v"))
    first, second, total = pair_convs(d, cfg.heads)
    pair_shape = (pairs, hgt, wid)
    zeros = np.zeros(pairs)
    g.add(f"{name}.kv.k", conv_node(first, zeros, shape, groups=d), k)
    g.add(f"{name}.kv.v", conv_node(second, zeros, shape, groups=cfg.heads), v)
    kv = g.add(f"{name}.kv", nir.Threshold(threshold=np.full(pair_shape, AND_THRESHOLD,
                                                             np.float32)),
               f"{name}.kv.k", f"{name}.kv.v")
    ones = np.ones((pairs, 1, hgt, wid))
    g.add(f"{name}.kv.sum", conv_node(ones, zeros, pair_shape, groups=pairs), kv)
    count = g.add(f"{name}.kv_count", graded_node((pairs, 1, 1), rectify=False),
                  f"{name}.kv.sum")
    if isinstance(m, STAtten):
        count = g.add(f"{name}.kv_block", block_sum_node((pairs, 1, 1), block=block), count)
        mark_extension(g.metadata, BLOCK_SUM)
    # M back to every token: an H×W kernel over the 1×1 count, padded to the grid.
    g.add(f"{name}.qm.m", conv_node(ones, zeros, (pairs, 1, 1), padding=(hgt - 1, wid - 1),
                                    groups=pairs), count)
    g.add(f"{name}.qm.q", conv_node(cap * first, np.full(pairs, -cap), shape, groups=d), q)
    qm = g.add(f"{name}.qm", graded_node(pair_shape, rectify=True),
               f"{name}.qm.m", f"{name}.qm.q")
    lam = float(m.lam.detach()) if isinstance(m, LRFSSA) else 0.0
    currents = [g.add(f"{name}.qkv", conv_node((1.0 - lam) * cfg.scale * total, np.zeros(d),
                                               pair_shape, groups=cfg.heads), qm)]
    if isinstance(m, LRFSSA):
        for i, lrf in enumerate(m.lrf.convs):
            dl = lrf.dilation[0]
            bias = lrf.bias.detach().double().numpy() if lrf.bias is not None else np.zeros(d)
            currents.append(g.add(f"{name}.lrf.{i}", conv_node(
                lam * lrf.weight.detach().double().numpy(), lam * bias, shape,
                padding=(dl, dl), dilation=dl, groups=d), v))
    mark_extension(g.metadata, GRADED)
    return g.add(f"{name}.attn_lif", lif_node(m.attn_lif, shape), *currents)


def lrf_dyn_attention(g: GraphBuilder, name: str, m: LRFDyn, src: str,
                      shape: tuple[int, int, int]) -> str:
    """Nodes of one LRF-Dyn attention; returns the node whose spikes feed the projection."""
    cfg = m.cfg
    grid = (shape[1], shape[2])
    d = shape[0]

    def spikes(kind: str) -> str:
        return qkv_spikes(g, name, m, kind, src, shape)

    u = spikes("v")
    if cfg.token == "kv":
        u = and_gate(g, f"{name}.u", spikes("k"), u, shape)
    p = m.dendrite_parameters()
    with torch.no_grad():
        kernel = dfn.dendrite_kernel(
            dfn.DendriteParameters(p.A.double(), p.gamma.double(), p.c.double()),
            grid[0] * grid[1],
        ).numpy()
    tau = dfn.tau_from_raw(m.tau_raw.detach().double())
    conv = conv_node(token_kernel_2d(kernel, grid), np.zeros(d), shape,
                     padding=(grid[0] - 1, grid[1] - 1), groups=d)
    conv.metadata = {
        "lrfdyn": "dendrite", "heads": cfg.heads, "A": p.A.detach().double().numpy(),
        "Gamma": p.gamma.detach().double().numpy(), "C": p.c.detach().double().numpy(),
        "k": cfg.k_dendrites, "tau": tau.numpy(),
        "beta": dfn.beta_from_raw(m.beta_raw.detach().double(), tau).numpy(),
    }
    y = g.add(f"{name}.dendrite", conv, u)
    branches = [y]
    for i, lrf in enumerate(m.lrf.convs):
        dl = lrf.dilation[0]
        bias = lrf.bias.detach().double().numpy() if lrf.bias is not None else np.zeros(d)
        branches.append(g.add(f"{name}.lrf.{i}", conv_node(
            lrf.weight.detach().double().numpy(), bias, shape, padding=(dl, dl), dilation=dl,
            groups=d), y))
    scale, shift = bn_scale_shift(m.bn)
    z = g.add(f"{name}.bn", conv_node(scale[:, None, None, None], shift, shape, groups=d),
              *branches)
    s = g.add(f"{name}.attn_lif", lif_node(m.attn_lif, shape), z)
    if cfg.gate == "q":
        s = and_gate(g, f"{name}.gate", s, spikes("q"), shape)
    return s


#: The exporter of each attention variant that exports (the others are in PRODUCT_BLOCKS).
ATTENTION_EXPORTS = {
    "lrf_dyn": lrf_dyn_attention,
    "ssa": ssa_attention,
    "lrf_ssa": ssa_attention,
    "statten": ssa_attention,
    "a2os2a": a2os2a_attention,
}


@register(Spikformer)
def spikformer(g: GraphBuilder, m: Spikformer, name: str, src: str) -> str:
    cfg = m.cfg
    if cfg.attention in PRODUCT_BLOCKS:
        raise UnsupportedNodeError(
            f"blocks.0.attn ({cfg.attention}): {PRODUCT_BLOCKS[cfg.attention]}; lrfdyn "
            f"exports {', '.join(sorted(ATTENTION_EXPORTS))} attention"
        )
    attention = ATTENTION_EXPORTS[cfg.attention]
    shape = _out_shape(g, src)
    cur = src
    for i, stage in enumerate(m.stem):
        cur = conv_bn(g, f"stem.{i}", stage, cur, shape)
        shape = _out_shape(g, cur)
        if i < len(m.stem) - 1:
            cur = g.add(f"stem_lif.{i}", lif_node(m.stem_lif[i], shape), cur)
    currents = [cur]  # the synaptic layers whose currents the residual stream sums
    if cfg.rpe:
        s = g.add("rpe_lif", lif_node(m.rpe_lif, shape), cur)
        currents.append(conv_bn(g, "rpe", m.rpe, s, shape))
    s = g.add("tokens", lif_node(m.token_lif, shape), *currents)
    for b, block in enumerate(m.blocks):
        pre = f"blocks.{b}"
        attn = attention(g, f"{pre}.attn", block.attn, s, shape)
        currents.append(linear_bn(g, f"{pre}.attn.proj", block.attn.proj, attn, shape))
        s = g.add(f"{pre}.attn_out", lif_node(block.attn_out, shape), *currents)
        hidden = block.fc1.linear.out_features
        h_shape = (hidden, shape[1], shape[2])
        h = linear_bn(g, f"{pre}.fc1", block.fc1, s, shape)
        h = g.add(f"{pre}.mlp_hidden", lif_node(block.fc1_lif, h_shape), h)
        currents.append(linear_bn(g, f"{pre}.fc2", block.fc2, h, h_shape))
        s = g.add(f"{pre}.out", lif_node(block.out, shape), *currents)
    pool = g.add("head.pool", nir.AvgPool2d(kernel_size=np.array(shape[1:]),
                                            stride=np.array(shape[1:]), padding=np.array([0, 0])),
                 s)
    flat = g.add("head.flatten", nir.Flatten(input_type={"input": np.array([shape[0], 1, 1])},
                                             start_dim=0), pool)
    head = g.add("head.fc", nir.Affine(weight=m.head.weight.detach().numpy().astype(np.float32),
                                       bias=m.head.bias.detach().numpy().astype(np.float32)),
                 flat)
    return g.add("head", lif_node(m.head_lif, (cfg.num_classes,)), head)


def spikformer_config(graph: nir.NIRGraph) -> dict[str, object]:
    """The Spikformer config that :func:`spikformer` exported ``graph`` from, read back off
    its node names and shapes (the fields that shape the network; τ and thresholds stay
    at their defaults). Any attention variant: the memory table rebuilds the others at
    the same shape from it."""
    from lrfdyn.errors import ValidationError

    nodes = graph.nodes
    meta = graph.metadata
    if "blocks.0.attn.attn_lif" not in nodes or "image_shape" not in meta:
        raise ValidationError("not a Spikformer exported by `lrfdyn export`; re-export it")
    c, h, _ = (int(v) for v in np.asarray(meta["image_shape"]).ravel())
    d = int(np.asarray(nodes["tokens"].tau).shape[0])
    depth = len({n.split(".")[1] for n in nodes if n.startswith("blocks.")})
    strides = [int(np.atleast_1d(nodes[f"stem.{i}"].stride)[0])
               for i in range(sum(1 for n in nodes if n.startswith("stem.")
                                  and n.count(".") == 1 and n.split(".")[1].isdigit()))]
    dend = nodes.get("blocks.0.attn.dendrite")
    cfg: dict[str, object] = dict(
        img_size=h, in_channels=c, num_classes=int(np.asarray(nodes["head.fc"].weight).shape[0]),
        dim=d, depth=depth, timesteps=int(meta["timesteps"]), stem_strides=strides,
        mlp_ratio=np.asarray(nodes["blocks.0.fc1"].weight).shape[0] / d,
        rpe="rpe_lif" in nodes,
        lrf_dilations=sorted({int(np.atleast_1d(nodes[n].dilation)[0]) for n in nodes
                              if n.startswith("blocks.0.attn.lrf.")}) or [3, 5])
    if dend is not None:
        cfg.update(attention="lrf_dyn", heads=int(np.asarray(dend.metadata["heads"])),
                   k_dendrites=int(np.asarray(dend.metadata["k"])),
                   token="kv" if "blocks.0.attn.u" in nodes else "v",
                   gate="q" if "blocks.0.attn.gate" in nodes else "none")
    elif "blocks.0.attn.scores" in nodes:  # A²OS²A: score channels (h, m) per position
        n_tok = int(np.prod(np.asarray(nodes["tokens"].tau).shape[1:]))
        # The gate's offset is the largest level R reaches: min(L, ⌊d_h/θ⌋).
        cfg.update(attention="a2os2a",
                   heads=int(np.asarray(nodes["blocks.0.attn.scores"].scale).shape[0]) // n_tok,
                   a2os2a_levels=-int(np.asarray(nodes["blocks.0.attn.gate.v"].bias)[0]))
    else:
        pairs = int(np.asarray(nodes["blocks.0.attn.kv_count"].scale).shape[0])
        dh = pairs // d  # pairs = heads·dh² = d·dh
        kind = "lrf_ssa" if "blocks.0.attn.lrf.0" in nodes else "ssa"
        cfg.update(attention=kind, heads=d // dh)
        blk = nodes.get("blocks.0.attn.kv_block")
        if blk is not None:
            cfg.update(attention="statten", statten_block=block_sum_extension(blk))
    return cfg

