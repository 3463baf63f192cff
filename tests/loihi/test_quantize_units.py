"""Unit tests of loihi/quantize.py beyond test_lower_units': layers whose every weight is
zero (nothing bounds their scale, and they must still lower), and a relay's bias column
of one sign, whose odd integers Lava keeps. Integers by hand; no Lava."""

from __future__ import annotations

import nir
import numpy as np

from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import run_reference


def test_a_relay_whose_inputs_are_all_zero_lowers_and_sends_nothing(conv_chain_graph):
    net = lower(conv_chain_graph(np.zeros((1, 1, 3, 3))))
    c1, sh = net.groups["c1"], net.groups["l.in"]
    assert c1.kind == "relay" and sh.kind == "relay"
    # nothing bounds c1's scale: one unit per float unit, no shift
    assert (c1.units.units, c1.units.pre_units, c1.params.exp) == (1.0, 1.0, 0)
    by = {s.name: s for s in net.synapses}
    assert not np.asarray(by["input->c1"].weights).any()
    x = np.ones((2, 9), np.int64)  # every input neuron spikes at every step
    out = run_reference(net, x, net.steps_per_sample())
    assert not out["c1"].any() and not out["l.in"].any() and not out["l"].any()


def test_the_same_chain_with_weights_carries_values(conv_chain_graph):
    """The control: the zero chain is silent because of its weights, not its structure:
    with weights, c1 and the shifter in front of l carry values."""
    k1 = np.full((1, 1, 3, 3), 0.1)
    k1[0, 0, 1, 1] = 0.5
    net = lower(conv_chain_graph(k1))
    out = run_reference(net, np.ones((2, 9), np.int64), net.steps_per_sample())
    assert out["c1"].any() and out["l.in"].any()


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n), v_reset=np.zeros(n))


def test_a_graded_input_read_through_zero_weights_lowers_to_zero_weights():
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "z": nir.Linear(weight=np.zeros((2, 3))), "l": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "z"), ("z", "l"), ("l", "output")],
                     type_check=False, metadata={"dt": 1e-3, "timesteps": 3,
                                                 "input_levels": 255})
    net = lower(g)
    (s,) = net.synapses
    w = s.weights.toarray() if hasattr(s.weights, "toarray") else np.asarray(s.weights)
    assert s.src == "input" and not w.any() and s.weight_exp == 0
    out = run_reference(net, np.full((1, 3), 255, np.int64), net.steps_per_sample())
    assert not out["l"].any()


def test_a_relay_bias_of_one_sign_keeps_its_odd_integers():
    # A (4 outputs, read by l1 and l2, 12 weights) is a relay. Spikes in: its scale is
    # 254 / peak 2 = 127, exponent 0 (no rounding offset). Its bias [1, 0, 0, 0]·127 =
    # [127, 0, 0, 0] has one sign (zeros are no sign), so Lava keeps the odd 127: rounding
    # it to even (128) is only for columns that mix signs, which Lava truncates.
    a = np.array([[1, 0.5, 0, 0], [0, -1, 0, 0.25], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 2]])
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "A": nir.Affine(weight=a, bias=np.array([1.0, 0.0, 0.0, 0.0])),
             "l1": _lif(4), "B": nir.Linear(weight=np.eye(4)), "l2": _lif(4),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "A"), ("A", "l1"), ("A", "l2"), ("l1", "B"), ("B", "l2"),
             ("l2", "output")]
    net = lower(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                             metadata={"dt": 1e-3, "timesteps": 3, "input_levels": 1}))
    assert net.groups["A"].kind == "relay" and net.groups["A"].units.units == 127.0
    by = {s.name: s for s in net.synapses}
    bias = by["A.bias"]
    assert bias.weight_exp == 0 and np.asarray(bias.weights).ravel().tolist() == [127, 0, 0, 0]
    # what Lava computes with: the same integers
    assert np.asarray(bias.effective()).ravel().tolist() == [127, 0, 0, 0]
