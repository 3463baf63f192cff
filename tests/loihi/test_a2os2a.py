"""A²OS²A: ternary Q and K (NIR's ternary extension, Lava's stock ``TernaryLIF``), the
N×N scores as exact integer operations on graded nodes, spike-exact on Lava.

Each product of two ternary values is ``relu(q + k) − relu(k − q) − q``; the multi-level
ReLU neuron is a sum of rectified runs of the score; ``R·V`` is ``relu(R + L·V − L)``.
"""

from __future__ import annotations

import multiprocessing

import nir
import numpy as np
import pytest
import torch

from lrfdyn.export.a2os2a import level_runs
from lrfdyn.export.to_nir import write_nir
from lrfdyn.export.transformer import spikformer_config
from lrfdyn.loihi.lower import lower
from lrfdyn.nir_types import EXTENSION_KEY, EXTENSIONS_USED, TERNARY
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import first_mismatches
from lrfdyn.train.models.attention import relu_spike

T = 3
TINY = dict(img_size=14, in_channels=1, num_classes=4, dim=4, depth=1, heads=2, timesteps=T,
            stem_strides=[1, 2], lrf_dilations=[3, 5], attention="a2os2a")
BLOCK = "blocks.0.attn"
N_TOK = 49
SEED = 3


@pytest.fixture(scope="module")
def exported(loud_tiny_spikformer):
    return loud_tiny_spikformer(TINY, SEED, ("v",))  # Q and K stay centred: both signs


@pytest.mark.parametrize("theta, levels", [(1.0, 4), (1.5, 3), (2.0, 2), (0.7, 5), (3.0, 8)])
def test_the_level_runs_rebuild_the_multi_level_relu_at_every_score(theta, levels) -> None:
    dh = 8
    runs = level_runs(theta, levels, dh)
    relu = lambda z: max(z, 0)  # noqa: E731
    for s in range(-dh, dh + 1):
        got = sum(relu(s - s0 + 1) - relu(s - s0 - r + 1) for s0, r in runs)
        want = int(relu_spike(torch.tensor(float(s)), theta, levels))
        assert got == want, (theta, levels, s)


def test_q_and_k_are_marked_ternary_nodes_that_nir_reads(exported, tmp_path) -> None:
    _, graph, _ = exported
    assert TERNARY + "/1" in graph.metadata[EXTENSIONS_USED].split(",")
    for kind in "qk":
        node = graph.nodes[f"{BLOCK}.{kind}_lif"]
        assert isinstance(node, nir.LIF) and node.metadata[EXTENSION_KEY] == TERNARY
        assert np.isnan(node.v_leak).all()  # a reader that ignores the mark computes NaN
    assert EXTENSION_KEY not in (graph.nodes[f"{BLOCK}.v_lif"].metadata or {})
    path = tmp_path / "again.nir"
    write_nir(graph, path)
    assert f"{BLOCK}.scores" in nir.read(str(path), type_check=False).nodes
    cfg = spikformer_config(graph)
    # d_h = 2 caps the levels R reaches at 2 (the model's L is 4): the same network
    assert (cfg["attention"], cfg["heads"], cfg["a2os2a_levels"]) == ("a2os2a", 2, 2)


def test_the_float_reimport_equals_the_trained_model(exported, float_reimport_equal) -> None:
    assert float_reimport_equal(*exported)


def test_scores_levels_and_gate_are_the_attention_of_the_references_own_spikes(
        exported) -> None:
    """``S = Q·Kᵀ`` per head, ``R = min(⌊relu(S)/θ⌋, L)`` and ``G = R·V``, recomputed from
    the reference's ternary Q, K and binary V."""
    model, graph, x = exported
    cfg = model.blocks[0].attn.cfg
    ref = run_reference(lower(graph), x)
    n, heads, d = len(x), TINY["heads"], TINY["dim"]
    dh = d // heads
    q, k, v = (ref[f"{BLOCK}.{kind}_lif"][:, :T].astype(np.int64).reshape(n, T, d, N_TOK)
               for kind in "qkv")
    assert {-1, 1} <= set(np.unique(q)) and {-1, 1} <= set(np.unique(k))
    # scores channel (h, m), position n_q: S[h, n_q, m] = Σ_i q[h·dh+i, n_q]·k[h·dh+i, m]
    qh, kh = (a.reshape(n, T, heads, dh, N_TOK) for a in (q, k))
    want_s = np.einsum("athiq,athim->athmq", qh, kh)
    got_s = ref[f"{BLOCK}.scores"][:, :T].reshape(want_s.shape)
    assert np.array_equal(got_s, want_s)
    assert len(np.unique(want_s)) >= 4, "the fixture's scores barely vary: a weak check"
    want_r = relu_spike(torch.as_tensor(want_s, dtype=torch.float32), cfg.a2os2a_theta,
                        cfg.a2os2a_levels).numpy().astype(np.int64)
    assert np.array_equal(ref[f"{BLOCK}.levels"][:, :T].reshape(want_r.shape), want_r)
    # gate channel (c, m), position n_q: R[h(c), n_q, m]·V[c, m]
    vh = v.reshape(n, T, heads, dh, N_TOK)
    want_g = want_r[:, :, :, None] * vh[..., None]  # (n, T, h, i, m, n_q)
    got_g = ref[f"{BLOCK}.gate"][:, :T].reshape(want_g.shape)
    assert np.array_equal(got_g, want_g) and np.count_nonzero(want_g)


def test_lava_equals_the_reference_and_a_late_product_is_caught_where_it_lands(
        exported) -> None:
    """Every neuron at every step; then Q reaches the products one step late on Lava
    only, and the check names where it went late first, then the products and scores,
    and nothing upstream of it."""
    from lrfdyn.sim.lava_run import run_lava

    _, graph, x = exported
    net = lower(graph)
    ref = run_reference(net, x, net.steps_per_sample(), lava_window=True)
    counts, first = first_mismatches(run_lava(net, x).spikes, ref, net)
    assert sum(counts.values()) == 0, first
    for g in (f"{BLOCK}.q_lif", f"{BLOCK}.a", f"{BLOCK}.b", f"{BLOCK}.scores",
              f"{BLOCK}.levels", f"{BLOCK}.gate", f"{BLOCK}.attn_lif"):
        assert np.count_nonzero(ref[g]), f"{g} is silent: the check would compare zeros"

    # Q reaches the products through a relay that aligns it with K; that relay's input
    # (a delayed Sparse synapse: Lava's Conv has no delays) is one step late on Lava only.
    relay = f"{BLOCK}.q_lif.delay1"
    (late,) = [s for s in net.synapses if s.dst == relay]
    feeds = {s.dst for s in net.synapses if s.src == relay}
    assert late.conv is None and feeds == {f"{BLOCK}.a", f"{BLOCK}.b"}
    late.delay += 1
    counts, first = first_mismatches(run_lava(net, x[:2]).spikes,
                                     {g: v[:2] for g, v in ref.items()}, net)
    assert first is not None and first.layer == relay, first
    assert counts[f"{BLOCK}.a"] and counts[f"{BLOCK}.b"] and counts[f"{BLOCK}.scores"]
    upstream = [g for g in net.groups if net.groups[g].latency < net.groups[relay].latency]
    assert f"{BLOCK}.q_lif" in upstream and not any(counts[g] for g in upstream)
    assert multiprocessing.active_children() == []


def test_the_profile_counts_a_ternary_or_graded_value_as_one_event(exported) -> None:
    """A −1 spike or a payload of 3 is one event (a sum of values would miscount both)."""
    from lrfdyn.sim.profile import count_profile

    _, graph, x = exported
    net = lower(graph)
    spikes = {g: s[:, :T] for g, s in run_reference(net, x, T).items()}
    report = count_profile(net, x, np.zeros(len(x), np.int64), spikes, "reference")
    got = {la.name: la.spikes for la in report.layers}
    assert got == {g: int(np.count_nonzero(s)) for g, s in spikes.items()}
    assert (spikes[f"{BLOCK}.q_lif"] < 0).any() and (spikes[f"{BLOCK}.levels"] > 1).any()
    assert all(0.0 <= la.firing_rate <= 1.0 for la in report.layers)
