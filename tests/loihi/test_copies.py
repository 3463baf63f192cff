"""Copies of a network side by side (loihi/copies.py): independent, and equal to single runs."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from lrfdyn.loihi.copies import (choose_copies, copy_network, split_copies, split_streams,
                                 stack_samples, stack_streams)
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.lava_run import run_lava
from lrfdyn.sim.reference import run_reference

DT = 1e-3


def _lif(shape, tau: float = 2.0) -> nir.LIF:
    full = lambda v: np.full(shape, float(v))  # noqa: E731
    return nir.LIF(tau=full(tau * DT), r=full(1.0), v_leak=full(0.0), v_threshold=full(1.0),
                   v_reset=full(0.0))


def conv_graph(seed: int = 0) -> nir.NIRGraph:
    """Grouped conv with a bias (→ a shifter relay fed by the bias source), a strided
    depthwise conv, then Flatten → Affine: every synapse kind, delayed biases."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0.4, 0.5, (4, 1, 3, 3)),
                           bias=np.full(4, 0.1), stride=1, padding=1, dilation=1, groups=2),
        "l1": _lif((4, 6, 6)),
        "dw": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0.5, 0.5, (4, 1, 3, 3)),
                         bias=np.zeros(4), stride=2, padding=1, dilation=1, groups=4),
        "l2": _lif((4, 3, 3)),
        "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}),
        "aff": nir.Affine(weight=rng.normal(0.3, 0.6, (5, 36)), bias=np.full(5, 0.05)),
        "l3": _lif(5),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    seq = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(seq, seq[1:])), type_check=False,
                        metadata={"dt": DT, "timesteps": 4, "input_levels": 255})


def test_stacking_and_splitting_are_inverse() -> None:
    x = np.arange(5 * 3).reshape(5, 3)
    blocks = stack_samples(x, 2)
    assert blocks.shape == (3, 6)
    assert np.array_equal(blocks[1], [6, 7, 8, 9, 10, 11]) and not blocks[2, 3:].any()
    rec = blocks[:, None, :].repeat(4, axis=1)  # (B, steps, k·n)
    assert np.array_equal(split_copies(rec, 2, 5), x[:, None, :].repeat(4, axis=1))
    data = {"t": np.arange(6 * 2 * 3).reshape(6, 2, 3), "m": np.ones((6, 2, 1))}
    st = stack_streams(data, 2, streams_per_sample=2, shared_sources=("m",))
    assert st["t"].shape == (4, 2, 6) and st["m"].shape == (4, 2, 1)
    assert np.array_equal(split_streams(st["t"], 2, 2, 3), data["t"])


@pytest.mark.parametrize("copies", [2, 3])
def test_copies_equal_single_samples_in_the_integer_reference(copies: int) -> None:
    net = lower(conv_graph())
    x = np.random.default_rng(4).integers(0, 256, (5, net.input.size))
    steps = net.steps_per_sample()
    alone = run_reference(net, x, steps)
    wide = copy_network(net, copies)
    assert {s.kind for s in wide.synapses} == {s.kind for s in net.synapses}
    together = run_reference(wide, stack_samples(x, copies), steps)
    for g in net.groups:
        assert np.array_equal(split_copies(together[g], copies, len(x)), alone[g]), g
    assert all(alone[g].any() for g in net.groups if net.groups[g].spiking)


def test_a_silent_copy_stays_silent_on_lava_while_its_neighbours_spike(hand_graph) -> None:
    net = lower(hand_graph)  # no biases: silence in is silence out
    x = np.random.default_rng(0).integers(100, 256, (3, net.input.size))
    x[1] = 0
    single = run_lava(net, x).spikes
    run = run_lava(net, x, copies=3)
    for g in net.groups:
        assert not run.spikes[g][1].any(), g
        assert run.spikes[g][0].any() and run.spikes[g][2].any(), g
        assert np.array_equal(run.spikes[g], single[g]), g


def test_copies_on_lava_equal_single_runs_with_convs_biases_and_delays() -> None:
    net = lower(conv_graph(seed=1))
    x = np.random.default_rng(3).integers(0, 256, (5, net.input.size))
    single = run_lava(net, x).spikes
    ticks: list[int] = []
    run = run_lava(net, x, copies=2, on_sample=ticks.append)  # 3 blocks, the last half empty
    assert ticks == list(range(5)) and run.timed_samples == 3
    for g in net.groups:
        assert np.array_equal(run.spikes[g], single[g]), g


def test_copy_count_follows_the_network_size(hand_graph) -> None:
    small = lower(hand_graph)
    assert choose_copies(small) == 32  # the cap
    assert choose_copies(small, samples=5) == 5
    assert choose_copies(small, budget=20) == 20 // (sum(g.size for g in small.groups.values())
                                                     + small.input.size)
    assert choose_copies(small, budget=1) == 1


def test_stream_copies_equal_one_stream_network_per_sample(tiny_lrf_dyn) -> None:
    """Dendritic mode: 3 samples × 2 streams through 2 copies on Lava (the last block's
    second copy empty) equal the reference of each copy's timeline."""
    from lrfdyn.sim.streams import lower_both, run_stream_timelines
    from lrfdyn.sim.lava_run import run_streams_lava

    _, graph = tiny_lrf_dyn
    _, blocks = lower_both(graph)
    block = blocks[0]
    u = (np.random.default_rng(5).random((6, block.tokens, block.d)) < 0.3).astype(np.int64)
    # Copy 0 chains samples 0 and 2, copy 1 sample 1: a stream's first steps hold the tail
    # of the stream before it in its own timeline.
    want = run_stream_timelines(block, u, 2, copies=2).values
    run = run_streams_lava(block, u, streams_per_sample=2, copies=2)
    for name, values in want.items():
        diff = np.argwhere(run.spikes[name] != values)
        assert len(diff) == 0, f"{name}: first mismatch (stream, step, neuron) {diff[0]}"
    assert [n for k, n in run.processes.values() if k == "DendriteCompartments"] == \
        [block.k * block.d]
