"""Export A²OS²A attention to NIR as exact integer operations (no product node).

Per head h (dh = d/h channels, N = H·W tokens on the grid), the float model computes
``S[n, m] = Σ_i Q[n, i]·K[m, i]`` with ternary Q, K ∈ {−1, 0, 1}, then
``R = min(⌊relu(S)/θ⌋, L)`` and ``out[n, j] = s·Σ_m R[n, m]·V[m, j]`` with binary V.
Every tensor keeps the token grid as its spatial axes (the query token n), so every
synapse layer is a weight-shared conv and lowering never builds per-position matrices:

* **Q, K**: ternary LIFs, lrfdyn's ``ternary/1`` extension
  (:func:`lrfdyn.nir_types.ternary_node`; Lava's stock ``TernaryLIF``).
* **K to channels**: ``K_flat[(c, m)] = K[c, m]``, a graded node of d·N neurons (1×1)
  fed by an H×W one-hot conv (groups = d); an all-ones H×W conv, padded to the grid,
  sends it back to every query token, as SSA's ``qm.m`` does.
* **The product of two ternary values** is two rectifiers and a linear term:
  ``q·k = relu(q + k) − relu(k − q) − q``, exact on {−1, 0, 1}² (all nine cases are
  checked at import). ``A = relu(q + k)`` and ``B = relu(k − q)`` are rectifying graded
  nodes of d·N² neurons each, channel (c, m), position n; the four-Threshold form
  (``H(q+k−1.5) + H(−q−k−1.5) − H(q−k−1.5) − H(k−q−1.5)``) would need twice as many.
* **Scores**: ``S[(h, m), n] = Σ_i (A − B) − Σ_i Q[n, h·dh+i]``, a graded count node
  (h·N² neurons).
* **Levels**: R is a non-decreasing step function of the integer S, read off the float
  model's own ``relu_spike`` (float32, exactly as it trains) for every S in [−dh, dh].
  Each run of unit steps s₀, s₀+1, …, s₀+r−1 is ``relu(S − s₀ + 1) − relu(S − s₀ − r + 1)``
  (two rectifying graded nodes; for θ = 1 the one run is ``relu(S) − relu(S − L)``), and
  a graded node R sums them. Any θ > 0 works.
* **Gate**: ``G[(j, m), n] = R[n, m]·V[m, j] = relu(R + L·V − L)``, exact because V is
  binary and 0 ≤ R ≤ L (L the largest level S can reach); V reaches it flattened as K
  does. d·N² neurons.
* **Sum**: ``s·Σ_m G`` is a grouped 1×1 conv into the attention LIF.

Every weight and bias of the graded nodes is a small integer, so the lowering keeps them
exactly (``graded/1``, role "graded") or refuses.
"""

from __future__ import annotations

import numpy as np
import torch

from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.export.builder import GraphBuilder, conv_node, lif_node, linear_bn, qkv_spikes
from lrfdyn.nir_types import GRADED, TERNARY, graded_node, mark_extension, ternary_node
from lrfdyn.train.models.attention import A2OS2A, relu_spike
from lrfdyn.train.units import DT, tau_to_seconds

_T = (-1, 0, 1)
# The identity the products rest on, checked once for every pair of ternary values.
assert all(q * k == max(q + k, 0) - max(k - q, 0) - q for q in _T for k in _T)


def level_runs(theta: float, levels: int, dh: int) -> list[tuple[int, int]]:
    """``(s₀, r)`` for each run of unit steps of ``R(S) = relu_spike(S, θ, L)`` over the
    integer scores ``−dh ≤ S ≤ dh``: R rises by one at s₀, s₀+1, …, s₀+r−1."""
    scores = torch.arange(-dh, dh + 1, dtype=torch.float32)
    r = relu_spike(scores, theta, levels).to(torch.int64).tolist()
    steps: list[int] = []
    for i in range(1, len(r)):
        rise = r[i] - r[i - 1]
        if rise < 0:  # pragma: no cover (relu_spike is non-decreasing)
            raise UnsupportedNodeError("A²OS²A levels are not monotone in the score")
        steps.extend([int(scores[i])] * rise)
    if r[0] > 0:  # pragma: no cover (relu_spike(−dh) is 0)
        raise UnsupportedNodeError("A²OS²A levels are positive at the lowest score")
    runs: list[tuple[int, int]] = []
    for s in steps:
        if runs and runs[-1][0] + runs[-1][1] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


def a2os2a_attention(g: GraphBuilder, name: str, m: A2OS2A, src: str,
                     shape: tuple[int, int, int]) -> str:
    """Nodes of one A²OS²A attention (module docstring); returns the attention LIF."""
    cfg = m.cfg
    d, hgt, wid = shape
    heads, n_tok = cfg.heads, hgt * wid
    dh = d // heads
    dn = d * n_tok  # channels (c, m) of the product and gate nodes, c-major
    hn = heads * n_tok  # channels (h, m) of the score nodes
    grid = (dn, hgt, wid)
    zeros = np.zeros

    def ternary(kind: str) -> str:
        cur = linear_bn(g, f"{name}.{kind}", getattr(m, kind), src, shape)
        lif = getattr(m, f"{kind}_lif")
        return g.add(f"{name}.{kind}_lif", ternary_node(
            np.full(shape, tau_to_seconds(lif.tau, DT), np.float64),
            np.full(shape, lif.v_th, np.float32)), cur)

    q, k = ternary("q"), ternary("k")
    v = qkv_spikes(g, name, m, "v", src, shape)

    # Token m of channel c to channel (c, m) of one neuron: an H×W one-hot per channel.
    onehot = np.zeros((dn, 1, hgt, wid))
    onehot[np.arange(dn), 0, (np.arange(dn) % n_tok) // wid, np.arange(dn) % wid] = 1.0
    # ... and back to every query token: all ones, padded to the grid.
    spread = np.ones((dn, 1, hgt, wid))
    pad = (hgt - 1, wid - 1)

    def flat(kind: str, s: str) -> str:
        g.add(f"{name}.{kind}_flat.in", conv_node(onehot, zeros(dn), shape, groups=d), s)
        return g.add(f"{name}.{kind}_flat", graded_node((dn, 1, 1), rectify=False),
                     f"{name}.{kind}_flat.in")

    k_flat = flat("k", k)
    q_copy = np.ones((dn, 1, 1, 1))  # channel c to its N channels (c, ·)
    for part, sign_q in (("a", 1.0), ("b", -1.0)):  # A = relu(q + k), B = relu(k − q)
        g.add(f"{name}.{part}.q", conv_node(sign_q * q_copy, zeros(dn), shape, groups=d), q)
        g.add(f"{name}.{part}.k", conv_node(spread, zeros(dn), (dn, 1, 1), padding=pad,
                                            groups=dn), k_flat)
        g.add(f"{name}.{part}", graded_node(grid, rectify=True), f"{name}.{part}.q",
              f"{name}.{part}.k")
    # S[(h, m)] = Σ_i (A − B)[(h·dh+i, m)] − Σ_i q[h·dh+i]: per head, one weight per pair.
    per_head = np.zeros((hn, dh * n_tok, 1, 1))
    rows = np.arange(hn)
    for i in range(dh):
        per_head[rows, i * n_tok + rows % n_tok, 0, 0] = 1.0
    g.add(f"{name}.s.a", conv_node(per_head, zeros(hn), grid, groups=heads), f"{name}.a")
    g.add(f"{name}.s.b", conv_node(-per_head, zeros(hn), grid, groups=heads), f"{name}.b")
    g.add(f"{name}.s.q", conv_node(-np.ones((hn, dh, 1, 1)), zeros(hn), shape, groups=heads), q)
    scores = g.add(f"{name}.scores", graded_node((hn, hgt, wid), rectify=False),
                   f"{name}.s.a", f"{name}.s.b", f"{name}.s.q")

    runs = level_runs(cfg.a2os2a_theta, cfg.a2os2a_levels, dh)
    if not runs:
        raise UnsupportedNodeError(
            f"{name}: with θ = {cfg.a2os2a_theta} no score up to {dh} reaches a level, so "
            "the attention is always 0; lower a2os2a_theta")
    top = sum(r for _, r in runs)  # the largest R
    ident = np.ones((hn, 1, 1, 1))
    parts = []
    for i, (s0, r) in enumerate(runs):
        for end, offset, sign in (("up", 1 - s0, 1.0), ("down", 1 - s0 - r, -1.0)):
            p = f"{name}.level.{i}.{end}"
            g.add(f"{p}.in", conv_node(ident, np.full(hn, float(offset)), (hn, hgt, wid),
                                       groups=hn), scores)
            g.add(p, graded_node((hn, hgt, wid), rectify=True), f"{p}.in")
            parts.append(g.add(f"{name}.r.{i}.{end}", conv_node(sign * ident, zeros(hn),
                                                           (hn, hgt, wid), groups=hn), p))
    levels = g.add(f"{name}.levels", graded_node((hn, hgt, wid), rectify=False), *parts)

    # G[(c, m)] = relu(R[(h(c), m)] + L·V[c, m] − L).
    to_channels = np.zeros((dn, n_tok, 1, 1))  # group h: R's (m) to its (i, m)
    rows = np.arange(dn)
    to_channels[rows, rows % n_tok, 0, 0] = 1.0
    g.add(f"{name}.gate.r", conv_node(to_channels, zeros(dn), (hn, hgt, wid), groups=heads),
          levels)
    v_flat = flat("v", v)
    g.add(f"{name}.gate.v", conv_node(top * spread, np.full(dn, -float(top)), (dn, 1, 1),
                                      padding=pad, groups=dn), v_flat)
    gate = g.add(f"{name}.gate", graded_node(grid, rectify=True), f"{name}.gate.r",
                 f"{name}.gate.v")
    g.add(f"{name}.rv", conv_node(cfg.scale * np.ones((d, n_tok, 1, 1)), zeros(d), grid,
                                  groups=d), gate)
    mark_extension(g.metadata, GRADED)
    mark_extension(g.metadata, TERNARY)
    return g.add(f"{name}.attn_lif", lif_node(m.attn_lif, shape), f"{name}.rv")

