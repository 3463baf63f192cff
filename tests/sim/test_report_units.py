"""Unit tests of sim/report.py with hand-built lowered networks and hand-counted answers.

Every expected number below is worked out by hand in the comments (no call of the
function under test on the right-hand side); no Lava, no training.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import (BIAS_SOURCE, ClockSource, InputSpec, LoweredNetwork, NeuronGroup,
                             RelayParams, SynapseSpec)
from lrfdyn.sim.report import (
    LayerStats,
    Mismatch,
    SimReport,
    count_synops,
    first_mismatches,
    memory_bits,
    percent,
    source_events,
)


def _net() -> LoweredNetwork:
    """input (3 values, graded) -> a (2 LIF) -> b (2 LIF), a bias into a, and a relay r.

    Weights (dst x src):
      in->a  [[2, 0, 4], [0, 0, 6]]     fan-out per input neuron [1, 0, 2]
      a->b   [[1, 1], [0, 1]]           fan-out per a neuron     [1, 2]
      bias->a [[10], [0]]               fan-out [1]
      a->r   sparse [[3, 0], [0, 0], [0, 5]]  fan-out [1, 1]
    """
    lif = fixed.LifParams(du=0, dv=0, vth=10)
    groups = {
        "a": NeuronGroup("a", 2, lif, latency=1),
        "b": NeuronGroup("b", 2, lif, latency=2),
        "r": NeuronGroup("r", 3, RelayParams(0), latency=2, spiking=False, kind="relay"),
    }
    syn = [
        SynapseSpec("in->a", "input", "a", np.array([[2, 0, 4], [0, 0, 6]]), 0,
                    num_message_bits=8),
        SynapseSpec("a->b", "a", "b", np.array([[1, 1], [0, 1]]), 0, delay=2),
        SynapseSpec("a.bias", BIAS_SOURCE, "a", np.array([[10], [0]]), 0),
        SynapseSpec("a->r", "a", "r", sp.csr_matrix(np.array([[3, 0], [0, 0], [0, 5]])), 0),
    ]
    return LoweredNetwork(InputSpec("input", 3, 255, 4), groups, syn, "b", 1e-3)


def test_percent_has_two_decimals_and_none_is_na():
    assert percent(None) == "n/a"
    assert percent(0.25) == "25.00 %"
    assert percent(0.0) == "0.00 %"
    assert percent(1.0) == "100.00 %"
    assert percent(0.123456) == "12.35 %"


def test_memory_bits_by_hand():
    net = _net()
    # state: a, b: 2 neurons x (u, v) x 24 = 96 each; relay r: 3 x 24 = 72.
    # synapses: in->a 6 weights x 8 + 2 dst x 1 slot x 24 (graded) = 96
    #           a->b  4 x 8 + 2 x 3 slots x 16 = 128
    #           bias  2 x 8, undelayed from a clock source: no buffer of its own = 16
    #           a->r  2 nnz x 8 + 3 x 1 x 16 = 64
    assert memory_bits(net) == (96 + 96 + 72, 96 + 128 + 16 + 64)


def test_source_events_of_bias_input_and_group():
    net = _net()
    x = np.array([[5, 0, 1], [0, 0, 2]])  # 2 samples: input 0 non-zero once, input 1 never
    spikes = {"a": np.zeros((2, 6, 2), bool)}
    spikes["a"][0, 0, 0] = spikes["a"][1, 3, 0] = spikes["a"][1, 2, 1] = True
    spikes["a"][0, 4, 1] = spikes["a"][1, 5, 1] = True  # after T = 4: not counted
    bias, inp, a = (source_events(net, s, spikes, x, 4) for s in
                    (net.synapses[2], net.synapses[0], net.synapses[1]))
    assert bias.shape == (1,) and bias.tolist() == [2 * 4]
    assert inp.tolist() == [1 * 4, 0, 2 * 4]
    assert a.tolist() == [2, 1]
    for arr in (bias, inp, a):
        assert arr.dtype == np.int64


def test_source_events_of_a_later_bias_copy():
    net = _net()
    s = SynapseSpec("a.late_bias", ClockSource("bias", 64), "a", np.array([[1], [1]]), 0)
    got = source_events(net, s, {}, np.zeros((3, 3), np.int64), 5)
    assert got.shape == (1,) and got.tolist() == [15]


def test_source_events_of_a_phase_source_and_of_a_per_step_input():
    net = _net()
    net.phases = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 1]])  # 5 phase rows
    s = SynapseSpec("r.gate", ClockSource("phase", 2), "r", np.ones((3, 2), np.int64), 0)
    # the first T = 4 rows: phase 0 twice, phase 1 twice; 3 samples
    assert source_events(net, s, {}, np.zeros((3, 3), np.int64), 4).tolist() == [6, 6]
    assert source_events(net, s, {}, np.zeros((3, 3), np.int64), 3).tolist() == [6, 3]
    # (N, T, size): the events of each step, not the first step's times T
    x = np.zeros((2, 4, 3), np.int64)
    x[0, 0, 0] = x[0, 3, 0] = x[1, 1, 2] = 7
    x[1, 3, 1] = 1
    got = source_events(net, net.synapses[0], {}, x, 4)
    assert got.tolist() == [2, 1, 1] and got.dtype == np.int64
    assert source_events(net, net.synapses[0], {}, x, 3).tolist() == [1, 0, 1]


def test_count_synops_by_hand():
    net = _net()
    x = np.array([[5, 0, 1], [0, 0, 2]])
    spikes = {"a": np.zeros((2, 6, 2), bool)}
    spikes["a"][0, 0, 0] = spikes["a"][1, 3, 0] = spikes["a"][1, 2, 1] = True
    spikes["a"][0, 4, 1] = True  # outside the window
    # into a: input events [4, 0, 8] . fan-out [1, 0, 2] = 20; bias 8 x fan-out 1 = 8 -> 28
    # into b: a events [2, 1] . [1, 2] = 4;  into r: [2, 1] . [1, 1] = 3
    assert count_synops(net, spikes, x, 4) == {"a": 28, "b": 4, "r": 3}


def test_first_mismatch_is_the_earliest_of_the_first_group_in_order():
    net = _net()
    ref = {g: np.zeros((2, 5, net.groups[g].size), bool) for g in net.groups}
    ref["r"] = np.zeros((2, 5, 3), np.int64)
    # Lava records latency extra steps in front (group a: 1, b and r: 2).
    lava = {g: np.zeros((2, 5 + net.groups[g].latency, ref[g].shape[2]), ref[g].dtype)
            for g in net.groups}
    lava["a"][:, :1] = True  # pipeline fill: never compared
    lava["b"][1, 2 + 3, 0] = True  # reference step 3 of sample 1
    lava["b"][0, 2 + 4, 1] = True  # the last step of sample 0: earlier sample, later step
    ref["b"][0, 1, 0] = True  # sample 0 step 1: the first in (sample, step, neuron) order
    lava["r"][1, 2 + 0, 2] = 7
    counts, first = first_mismatches(lava, ref, net)
    assert counts == {"a": 0, "b": 3, "r": 1}
    assert first == Mismatch("b", 0, 1, 0, False, True, 3)


def test_no_mismatch_gives_none():
    net = _net()
    ref = {g: np.zeros((1, 3, net.groups[g].size), bool) for g in net.groups}
    lava = {g: np.zeros((1, 3 + net.groups[g].latency, net.groups[g].size), bool)
            for g in net.groups}
    assert first_mismatches(lava, ref, net) == ({"a": 0, "b": 0, "r": 0}, None)


def test_a_longer_reference_is_compared_on_lavas_window_only():
    net = _net()
    ref = {g: np.zeros((1, 6, net.groups[g].size), bool) for g in net.groups}
    lava = {g: np.zeros((1, 4, net.groups[g].size), bool) for g in net.groups}
    ref["a"][0, 3, 0] = True  # Lava's a covers reference steps 0..2 only (4 - latency 1)
    ref["b"][0, 1, 1] = True  # b covers 0..1: counted
    counts, first = first_mismatches(lava, ref, net)
    assert counts == {"a": 0, "b": 1, "r": 0}
    assert (first.layer, first.step, first.neuron) == ("b", 1, 1)


def _report(**kw) -> SimReport:
    base = dict(samples=3, timesteps=4, latency=2, mismatches=0, lava_accuracy=0.5,
                reference_accuracy=0.75, float_accuracy=None, predictions_equal=True,
                synops=1234567, synops_per_sample=411522.3, neurons=12345,
                neuron_updates=99, state_memory_bits=1000000, synaptic_memory_bits=2048,
                layers=[LayerStats("a", 2, 3, 0.5, 7, 0)])
    base.update(kw)
    return SimReport(**base)


def test_summary_lines_exactly():
    lines = _report().summary().split("\n")
    assert lines == [
        "samples            3 (T = 4, latency 2)",
        "spike mismatches   0 (every neuron, every step, every layer)",
        "accuracy  float    n/a",
        "          integer  75.00 % (reference executor)",
        "          Lava     50.00 % (fixed_pt)",
        "SynOps / sample    411,522",
        "neurons            12,345",
        "state memory       1,000,000 bits",
        "synaptic memory    2,048 bits",
    ]


def test_summary_names_the_first_mismatch_and_the_speed():
    r = _report(mismatches=2, first_mismatch=Mismatch("b", 1, 3, 0, True, False, 2),
                timings={"samples_per_s": 12.345, "lava_s": 3.0})
    lines = r.summary().split("\n")
    assert len(lines) == 11
    assert lines[9] == ("FIRST MISMATCH     layer b sample 1 step 3 neuron 0: "
                        "lava=True reference=False")
    assert lines[10] == "Lava speed         12.35 samples/s"
    only_time = _report(timings={"lava_s": 3.0}).summary()
    assert "Lava speed" not in only_time and "FIRST MISMATCH" not in only_time


def test_to_dict_is_plain_data():
    d = _report(first_mismatch=Mismatch("b", 1, 3, 0, True, False, 2)).to_dict()
    assert d["first_mismatch"] == {"layer": "b", "sample": 1, "step": 3, "neuron": 0,
                                   "lava": True, "reference": False, "count": 2}
    assert d["layers"][0]["synops_in"] == 7
    assert d["lowering_version"] == 3 and d["timings"] == {} and d["quantization"] == []


def test_count_synops_of_a_group_without_synapses_is_zero():
    net = _net()
    net.synapses = [s for s in net.synapses if s.dst != "r"]
    spikes = {"a": np.zeros((1, 4, 2), bool)}
    # silent input and a: only the bias, 1 sample x 4 steps x fan-out 1, reaches a
    assert count_synops(net, spikes, np.zeros((1, 3), np.int64), 4) == {"a": 4, "b": 0,
                                                                         "r": 0}


def test_a_graded_mismatch_reports_both_values():
    net = _net()
    ref = {g: np.zeros((2, 3, net.groups[g].size), bool) for g in ("a", "b")}
    ref["r"] = np.zeros((2, 3, 3), np.int64)
    lava = {g: np.zeros((2, 3 + net.groups[g].latency, ref[g].shape[2]), ref[g].dtype)
            for g in net.groups}
    ref["r"][1, 0, 2] = -5
    lava["r"][1, 2 + 0, 2] = 7
    counts, first = first_mismatches(lava, ref, net)
    assert counts == {"a": 0, "b": 0, "r": 1}
    assert first == Mismatch("r", 1, 0, 2, 7, -5, 1)


def test_summary_without_lava_does_not_claim_a_comparison():
    lines = _report(lava_accuracy=None, predictions_equal=None).summary().split("\n")
    assert lines[1] == "spike mismatches   n/a (no Lava run to compare with)"
    assert lines[4] == "          Lava     n/a (fixed_pt)"
