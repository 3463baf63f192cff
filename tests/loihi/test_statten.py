"""STAtten: SSA over time blocks, through NIR's block-sum extension, spike-exact on Lava.

A step's attention needs the later steps of its time block, so the lowering reads the
count ahead (a lead) and gates each phase of the block with the phase source. T = 3 with
blocks of 2 covers a full block and the shorter last one.
"""

from __future__ import annotations

import multiprocessing

import nir
import numpy as np
import pytest

from lrfdyn.export.to_nir import write_nir
from lrfdyn.export.transformer import spikformer_config
from lrfdyn.loihi.ir import phase_offset
from lrfdyn.loihi.lower import lower
from lrfdyn.nir_types import BLOCK_SUM, EXTENSION_KEY, EXTENSIONS_USED
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import first_mismatches

T, B = 3, 2
TINY = dict(img_size=14, in_channels=1, num_classes=4, dim=4, depth=1, heads=2, timesteps=T,
            stem_strides=[1, 2], lrf_dilations=[3, 5], attention="statten", statten_block=B)
BLOCK = "blocks.0.attn"
#: A seed whose tiny model's block counts take many values (checked below).
SEED = 3


@pytest.fixture(scope="module")
def exported(loud_tiny_spikformer):
    return loud_tiny_spikformer(TINY, SEED, ("q", "k", "v"))  # Q, K, V and the gate fire


def test_the_block_sum_is_a_marked_extension_that_nir_reads(exported, tmp_path) -> None:
    _, graph, _ = exported
    assert BLOCK_SUM + "/1" in graph.metadata[EXTENSIONS_USED].split(",")
    node = graph.nodes[f"{BLOCK}.kv_block"]
    assert node.metadata[EXTENSION_KEY] == BLOCK_SUM and int(node.metadata["block"]) == B
    assert isinstance(node, nir.Scale) and np.isnan(node.scale).all()
    path = tmp_path / "again.nir"
    write_nir(graph, path)
    assert f"{BLOCK}.kv_block" in nir.read(str(path), type_check=False).nodes
    assert spikformer_config(graph)["attention"] == "statten"
    assert spikformer_config(graph)["statten_block"] == B


def test_the_float_reimport_equals_the_trained_model(exported, float_reimport_equal) -> None:
    """The block sum needs later steps; the re-import runs the sequence until it settles."""
    assert float_reimport_equal(*exported)


def _block_gate(ref: dict[str, np.ndarray], n: int) -> np.ndarray:
    """``Q[t, n, i] · Σ_{s ∈ block(t)} Σ_m K[s, m, i]·V[s, m, j]``, from the reference's own
    Q, K and V spikes."""
    heads, d = TINY["heads"], TINY["dim"]
    dh = d // heads
    q, k, v = (ref[f"{BLOCK}.{kind}_lif"][:, :T].reshape(n, T, d, 49) for kind in "qkv")
    want = np.zeros((n, T, heads, dh, dh, 49), np.int64)
    for h in range(heads):
        for i in range(dh):
            for j in range(dh):
                count = (k[:, :, h * dh + i] & v[:, :, h * dh + j]).sum(axis=-1)
                block = np.zeros_like(count)
                for t0 in range(0, T, B):
                    block[:, t0:t0 + B] = count[:, t0:t0 + B].sum(axis=1, keepdims=True)
                want[:, :, h, i, j] = q[:, :, h * dh + i] * block[..., None]
    return want


def test_the_gate_is_q_times_the_count_of_the_whole_block(exported) -> None:
    _, graph, x = exported
    net = lower(graph)
    ref = run_reference(net, x)
    want = _block_gate(ref, len(x))
    assert len(np.unique(want)) > 5, "the fixture's gate barely opens: a weak check"
    assert np.array_equal(ref[f"{BLOCK}.qm"].reshape(want.shape), want)
    # The last block is one step long: its sum is that step's count alone.
    assert net.phases.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_the_block_sum_reads_ahead_by_the_block_length(exported) -> None:
    net = lower(exported[1])
    count, phase = net.groups[f"{BLOCK}.kv_count"], net.groups[f"{BLOCK}.kv_block.phase"]
    lags = sorted(s.lag for s in net.incoming(phase.name) if s.src == count.name)
    assert lags == [-1, 0, 1]  # x(t − j + m): m = 1 of phase 0 is a lead of one step
    assert phase.latency == count.latency + B
    (gate,) = [s for s in net.incoming(phase.name) if phase_offset(s.src) is not None]
    assert gate.port == "a_in2" and gate.delay == 0
    assert phase_offset(gate.src) == phase.latency - 1  # it starts late, undelayed


def test_lava_equals_the_reference_and_a_late_phase_is_caught_at_the_block_sum(
        exported) -> None:
    """Every neuron at every step; then the phase reaches the block sum one step late on
    Lava only, and the check names the block sum first and nothing upstream of it."""
    from lrfdyn.sim.lava_run import run_lava

    _, graph, x = exported
    net = lower(graph)
    ref = run_reference(net, x, net.steps_per_sample(), lava_window=True)
    counts, first = first_mismatches(run_lava(net, x).spikes, ref, net)
    assert sum(counts.values()) == 0, first
    for g in (f"{BLOCK}.kv_count", f"{BLOCK}.kv_block", f"{BLOCK}.qm", f"{BLOCK}.attn_lif"):
        assert np.count_nonzero(ref[g]), f"{g} is silent: the check would compare zeros"

    phase = f"{BLOCK}.kv_block.phase"
    (gate,) = [s for s in net.synapses if s.dst == phase and phase_offset(s.src) is not None]
    gate.delay += 1
    late = run_lava(net, x[:2]).spikes
    counts, first = first_mismatches(late, {g: v[:2] for g, v in ref.items()}, net)
    assert first is not None and first.layer == phase, first
    upstream = [g for g in net.groups if net.groups[g].latency < net.groups[phase].latency]
    assert f"{BLOCK}.kv_count" in upstream and not any(counts[g] for g in upstream)
    assert multiprocessing.active_children() == []
