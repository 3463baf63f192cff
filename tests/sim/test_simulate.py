"""Spike-exactness of lowered networks on real Lava, layer by layer, and what the report counts."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from lrfdyn.errors import LavaRunError
from lrfdyn.loihi.ir import BIAS_SOURCE
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.lava_run import run_lava
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import count_synops, first_mismatches
from lrfdyn.sim.simulate import read_graph, simulate



@pytest.fixture()
def shortcut_graph(make_shortcut_graph):
    return make_shortcut_graph



def test_mlp_is_spike_exact_on_lava(digits_run) -> None:
    from lrfdyn.train.data import load_dataset

    net = lower(read_graph(digits_run / "model.nir"))
    ds = load_dataset("digits")
    x = ds.x_test[:6].reshape(6, -1)
    report = simulate(net, x, ds.y_test[:6])
    assert report.mismatches == 0, report.first_mismatch
    assert report.predictions_equal and report.lava_accuracy == report.reference_accuracy
    # Non-vacuous: every layer spiked.
    assert all(layer.spikes > 0 for layer in report.layers), report.layers


def test_shortcut_delay_and_bias_are_spike_exact(shortcut_graph) -> None:
    net = lower(shortcut_graph())
    delays = {s.name: s.delay for s in net.synapses}
    assert delays["input->l2"] == 1 and delays["input->l1"] == 0 and delays["l1->l2"] == 0
    # the bias starts late instead of being delayed per neuron
    (bias,) = [s for s in net.synapses if s.name == "l2.bias"]
    assert bias.delay == 0 and bias.src == BIAS_SOURCE.later(net.groups["l2"].latency - 1)
    assert net.groups["l2"].latency == 2
    assert any(s.src == BIAS_SOURCE for s in net.synapses)
    x = np.random.default_rng(1).integers(0, 256, (5, 12))
    run = run_lava(net, x)
    ref = run_reference(net, x, net.steps_per_sample())
    counts, first = first_mismatches(run.spikes, ref, net)
    assert first is None, first
    assert all(ref[g].sum() > 0 for g in net.groups), "a layer never spiked"


def test_reset_between_samples_equals_a_fresh_network(shortcut_graph) -> None:
    net = lower(shortcut_graph(seed=3))
    x = np.random.default_rng(2).integers(0, 256, (3, 12))
    together = run_lava(net, x).spikes
    alone = run_lava(net, x[2:]).spikes
    for g in net.groups:
        assert np.array_equal(together[g][2], alone[g][0]), g


def test_a_real_disagreement_is_named_by_layer_sample_step_neuron(shortcut_graph) -> None:
    graph = shortcut_graph(seed=4)
    net = lower(graph)
    x = np.random.default_rng(5).integers(0, 256, (2, 12))
    run = run_lava(net, x)
    # A reference of a slightly different network (one weight of l1's input changed).
    other = lower(graph)
    other.synapses[0].weights[0] = -other.synapses[0].weights[0]
    ref = run_reference(other, x, net.steps_per_sample())
    counts, first = first_mismatches(run.spikes, ref, net)
    assert first is not None and first.layer == "l1" and first.neuron == 0
    assert counts["l1"] > 0 and first.lava != first.reference


def test_lava_failure_is_one_error_and_leaves_no_process(shortcut_graph) -> None:
    net = lower(shortcut_graph())
    # A real Lava compile failure: no ProcessModel carries this tag.
    with pytest.raises(LavaRunError, match="Lava failed on sample 0: AssertionError.*no_such_tag"):
        run_lava(net, np.zeros((1, 12), np.int64), select_tag="no_such_tag")
    assert multiprocessing.active_children() == []


def test_lowering_refuses_what_lava_would_fail_on_at_run_time() -> None:
    # Lava 0.10's runtime hangs when a ProcessModel raises mid-run (DelayDense with a
    # delay > 63 does), so lowering must catch such values before Lava sees them.
    from lrfdyn.errors import ValidationError
    from lrfdyn.loihi.ir import SynapseSpec

    with pytest.raises(ValidationError, match="delay 64 exceeds Loihi's maximum 63"):
        SynapseSpec(name="s", src="a", dst="b", weights=np.zeros((2, 2), np.int64),
                    weight_exp=0, delay=64)


def test_synops_equal_a_hand_count(hand_graph) -> None:
    """2 graded inputs → 3 neurons → 2 neurons, counted by hand."""
    graph = hand_graph
    net = lower(graph)
    x = np.array([[200, 0], [0, 0]])
    spikes = run_reference(net, x)
    per_group = count_synops(net, spikes, x, 4)
    # Input 0 is non-zero in sample 0 only, at 4 steps, fan-out 2 (neurons 0 and 1).
    assert per_group["l"] == 4 * 2
    # Each spike of l's neuron j costs the non-zero weights in column j of b: [1, 2, 1].
    l_counts = spikes["l"][:, :4].sum(axis=(0, 1))
    assert l_counts[0] > 0 and l_counts[1] > 0 and l_counts[2] == 0
    assert per_group["m"] == int(l_counts @ np.array([1, 2, 1]))


def test_drain_returns_every_state_to_zero_and_is_sized_by_the_slowest_decay() -> None:
    from lrfdyn.loihi.build import steps_to_zero

    assert steps_to_zero(2048) == 24  # halving 2^23 reaches 0 after 24 steps
    assert steps_to_zero(4095) == 2 and steps_to_zero(0) is None


def test_networks_that_cannot_drain_are_reset_and_stay_exact(make_shortcut_graph) -> None:
    from lrfdyn.loihi.build import build_lava, drain_steps

    graph = make_shortcut_graph(seed=5)
    # tau of 10,000 steps rounds to dv = 0: v never decays, so no drain can clear it.
    graph.nodes["l1"].tau[:] = 10.0
    net = lower(graph)
    assert net.groups["l1"].params.dv == 0 and drain_steps(net) == 0
    x = np.random.default_rng(8).integers(0, 256, (3, 12))
    run = run_lava(net, x)
    ref = run_reference(net, x, net.steps_per_sample())
    _, first = first_mismatches(run.spikes, ref, net)
    assert first is None, first
    alone = run_lava(net, x[2:]).spikes
    assert all(np.array_equal(run.spikes[g][2], alone[g][0]) for g in net.groups)
    assert build_lava(net, x[:1]).drain == 0


def test_nodes_named_like_sources_are_groups_and_run_spike_exact() -> None:
    """Identity is typed, not named (issue 26): LIF nodes called ``bias`` and ``bias@1``
    are groups like any other, and the clock sources that feed their biases are not
    confused with them (this once failed in ``assign_latencies``)."""
    import nir

    from lrfdyn.loihi.ir import BIAS_SOURCE, ClockSource

    def lif(n):
        return nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n))

    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Affine(weight=rng.uniform(0.3, 0.8, (3, 4)),
                              bias=np.array([0.3, 0.0, -0.1])),
             "bias": lif(3),
             "fc2": nir.Affine(weight=rng.normal(1.0, 0.5, (2, 3)), bias=np.array([0.2, 0.1])),
             "bias@1": lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "fc"), ("fc", "bias"), ("bias", "fc2"), ("fc2", "bias@1"),
             ("bias@1", "output")]
    net = lower(nir.NIRGraph(nodes=nodes, edges=edges,
                             metadata={"dt": 1e-3, "timesteps": 6, "input_levels": 255}))
    assert list(net.groups) == ["bias", "bias@1"]
    src = {s.name: s.src for s in net.synapses}
    assert src["bias->bias@1"] == "bias" and src["bias.bias"] == BIAS_SOURCE
    assert src["bias@1.bias"] == ClockSource("bias", 1) and net.bias_sources == \
        [BIAS_SOURCE, ClockSource("bias", 1)]
    x = rng.integers(0, 256, (4, 4))
    ref = run_reference(net, x, net.steps_per_sample(), lava_window=True)
    assert all(ref[g].any() for g in net.groups)
    counts, first = first_mismatches(run_lava(net, x).spikes, ref, net)
    assert first is None and sum(counts.values()) == 0, first
