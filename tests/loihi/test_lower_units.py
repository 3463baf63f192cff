"""Unit tests of the lowering (loihi/ir.py, wiring.py, quantize.py, schedule.py, lower.py):
its data types, helpers, wiring, quantization and delays.

Expected integers are worked out by hand from the rules in those modules' docstrings (the
working is in the comments): never by calling the function under test for the answer.
No Lava.
"""

from __future__ import annotations


import nir
import numpy as np
import pytest
import scipy.sparse as sp

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.layers import ConvMap
from lrfdyn.loihi.linear import Tap
from lrfdyn.loihi import ir, quantize, schedule, wiring
from lrfdyn.loihi import lower as L
from lrfdyn.loihi.ir import (
    BIAS_SOURCE,
    PHASE_SOURCE,
    ClockSource,
    InputSpec,
    LoweredNetwork,
    NeuronGroup,
    RelayParams,
    SynapseSpec,
    Units,
    GroupKind,
    bias_offset,
    clock_offset,
    phase_offset,
)
from lrfdyn.loihi.lower import lower
from lrfdyn.loihi.wiring import wire


def _lif(n, tau=2e-3, v_th=1.0, r=1.0):
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.zeros(n),
                   v_threshold=np.full(n, v_th), v_reset=np.zeros(n))


def _graph(nodes, edges, **meta):
    md = {"dt": 1e-3, "timesteps": 4, "input_levels": 255}
    md.update(meta)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=md)


def _mlp(w1, w2=None, levels=255, b1=None, tau=2e-3):
    n_in, n1 = w1.shape[1], w1.shape[0]
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "a": nir.Affine(weight=w1, bias=b1) if b1 is not None else nir.Linear(weight=w1),
             "l1": _lif(n1, tau=tau)}
    edges = [("input", "a"), ("a", "l1")]
    last = "l1"
    if w2 is not None:
        nodes["b"] = nir.Linear(weight=w2)
        nodes["l2"] = _lif(w2.shape[0])
        edges += [("l1", "b"), ("b", "l2")]
        last = "l2"
    nodes["output"] = nir.Output(output_type={"output": np.array([nodes[last].tau.size])})
    edges.append((last, "output"))
    return _graph(nodes, edges, input_levels=levels)


# ---------------------------------------------------------------- small helpers


def test_clock_sources_are_typed_and_no_name_is_one():
    assert bias_offset(BIAS_SOURCE) == 0 and phase_offset(PHASE_SOURCE) == 0
    assert bias_offset(ClockSource("bias", 64)) == 64 and phase_offset(ClockSource("bias", 3)) is None
    assert clock_offset(ClockSource("phase", 5)) == 5 and bias_offset(ClockSource("phase", 5)) is None
    # identity is the type: a node called "bias" (or "bias@64") is a group, not a source
    for name in ("bias", "bias@64", "phase", "l1", "input"):
        assert bias_offset(name) is None and clock_offset(name) is None, name
    assert ClockSource("bias", 2).later(3) == ClockSource("bias", 5)
    assert str(BIAS_SOURCE) == "bias" and str(ClockSource("phase", 7)) == "phase@7"
    assert sorted([ClockSource("bias", 9), BIAS_SOURCE, ClockSource("bias", 1)]) == \
        [BIAS_SOURCE, ClockSource("bias", 1), ClockSource("bias", 9)]
    for kind, start in (("clock", 0), ("bias", -1), ("bias", 1.5), ("bias", True)):
        with pytest.raises(ValidationError, match="clock source"):
            ClockSource(kind, start)


@pytest.mark.parametrize("levels,bits", [(1, 0), (2, 2), (3, 2), (4, 3), (255, 8), (256, 9),
                                         (0, 1)])
def test_message_bits(levels, bits):
    # ceil(log2(levels + 1)): 255 levels + zero need 8 bits; binary spikes need none
    assert ir.message_bits(levels) == bits
    assert InputSpec("i", 3, levels, 2).num_message_bits == bits


def test_constants():
    assert ir.GRADED_MAX == (1 << 23) - 1 and ir.CURRENT_MAX == (1 << 17) - 1
    assert ir.DELAY_RELAY_STEPS == 64 and ir.SPARSE_BELOW == 0.25
    assert ir.BIAS_SOURCE == ClockSource("bias", 0)
    # recorded in reports and netx files: a change of the lowering must bump it on purpose
    assert ir.LOWERING_VERSION == 3


def test_current_decay12():
    # du decays u by (4096 − (du + 1))/4096: a fraction f maps to round(4096·f) − 1
    assert quantize._current_decay12(1.0) == 4095
    assert quantize._current_decay12(0.5) == 2047
    assert quantize._current_decay12(0.25) == 1023
    assert quantize._current_decay12(0.0) == 0  # −1 clipped
    assert quantize._current_decay12(1.5) == 4095  # clipped to 12 bits


def test_synapse_name_and_sparsity_threshold():
    assert quantize.synapse_name(Tap("a"), "b") == "a->b"
    assert quantize.synapse_name(Tap("a", 3), "b") == "a->b@3"
    four = sp.csr_matrix(np.eye(4))  # 4 of 16 = 0.25: not below
    assert not quantize.is_sparse_enough(four)
    three = sp.csr_matrix(np.diag([1.0, 1.0, 1.0, 0.0]))
    assert quantize.is_sparse_enough(three)


def test_quantize_bias():
    q = quantize.quantize_bias(np.array([254.0, -3.0]))
    assert q.exp == 0 and q.mant.ravel().tolist() == [254, -4]  # even mantissas
    q = quantize.quantize_bias(np.array([255.0]))  # 255/254 > 1: one shift
    assert q.exp == 1 and q.mant.ravel().tolist() == [128]
    q = quantize.quantize_bias(np.array([1000.0, 10.0]))  # 1000/254 = 3.9: exp 2, 250 and 2.5 -> 2
    assert q.exp == 2 and q.mant.shape == (2, 1) and q.mant.ravel().tolist() == [250, 2]
    q = quantize.quantize_bias(np.zeros(3))
    assert q.exp == 0 and not q.mant.any()
    q = quantize.quantize_bias(np.array([-2000.0]))
    assert q.exp == 3 and q.mant.ravel().tolist() == [-250]


def test_bias_synapse_is_in_input_units():
    # voltage 64·100 per step = an input current of 100 (u holds a_in << 6)
    s = quantize._bias_synapse("g", np.array([6400.0, -640.0]))
    assert (s.name, s.src, s.dst, s.weight_exp, s.scale) == ("g.bias", BIAS_SOURCE, "g", 0, 1.0)
    assert s.weights.ravel().tolist() == [100, -10]


# ---------------------------------------------------------------- data types


def test_synapse_spec_checks():
    SynapseSpec("ok", "a", "b", np.array([[-256, 254]]), 0, delay=63)
    SynapseSpec("ok0", "a", "b", np.array([[1]]), 0, delay=0)
    for w in (np.array([[-257]]), np.array([[255]])):
        with pytest.raises(ValidationError, match="8-bit range"):
            SynapseSpec("w", "a", "b", w, 0)
    with pytest.raises(ValidationError, match="must be 2-D"):
        SynapseSpec("w", "a", "b", np.ones(3, np.int64), 0)
    for d in (-1, 64):
        with pytest.raises(ValidationError, match=f"delay {d} exceeds"):
            SynapseSpec("w", "a", "b", np.array([[1]]), 0, delay=d)
    k = np.ones((1, 1, 1, 1), np.int64)
    with pytest.raises(ValidationError, match="no weight exponent"):
        SynapseSpec("c", "a", "b", k, 1, conv=ConvMap(k.astype(float), (1, 2, 2)))
    SynapseSpec("e", "a", "b", np.zeros((0, 2), np.int64), 0)  # empty: no range check
    SynapseSpec("s", "a", "b", sp.csr_matrix(np.array([[254, 0], [0, -256]])), 0)
    with pytest.raises(ValidationError):
        SynapseSpec("s", "a", "b", sp.csr_matrix(np.array([[255, 0]])), 0)


def test_dense_sparse_conv_accounting():
    d = SynapseSpec("d", "a", "b", np.array([[1, 0, 2], [0, 0, 3]]), 0, delay=2)
    assert (d.kind, d.is_sparse, d.n_src, d.n_dst) == ("dense", False, 3, 2)
    assert d.fan_out.tolist() == [1, 0, 2] and d.nnz == 3 and d.stored_weights == 6
    assert d.buffer_bits == 2 * 3 * 16 and d.memory_bits == 6 * 8 + 96
    s = SynapseSpec("s", "a", "b", sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 3]])), 0,
                    num_message_bits=8)
    assert (s.kind, s.is_sparse, s.n_src, s.n_dst) == ("sparse", True, 3, 2)
    assert s.fan_out.tolist() == [1, 0, 2] and s.stored_weights == 3
    assert s.buffer_bits == 2 * 1 * 24 and s.memory_bits == 3 * 8 + 48
    k = np.array([[[[1, 0], [2, 3]]]])
    c = SynapseSpec("c", "a", "b", k, 0, conv=ConvMap(k.astype(float), (1, 3, 3)))
    assert (c.kind, c.n_src, c.n_dst, c.stored_weights) == ("conv", 9, 4, 4)
    # 3x3 input, 2x2 kernel with taps (0,0),(1,0),(1,1): each input's outputs whose window
    # holds it at a non-zero tap
    assert c.fan_out.reshape(3, 3).tolist() == [[1, 1, 0], [2, 3, 1], [1, 2, 1]]
    assert c.nnz == 12 and c.effective().tolist() == k.tolist()
    # Dense/Sparse: Lava drops the LSB of mixed-sign matrices
    mixed = SynapseSpec("m", "a", "b", np.array([[3, -5]]), 0)
    assert np.asarray(mixed.effective()).tolist() == [[2, -6]]


def test_groups_and_relay_params():
    assert not RelayParams().prod and RelayParams(1).prod and RelayParams(0, True).prod
    lif = NeuronGroup("l", 5, fixed.LifParams(0, 0, 1))
    relay = NeuronGroup("r", 5, RelayParams(), kind="relay")
    delay = NeuronGroup("d", 5, RelayParams(), kind="delay")
    assert not lif.graded and relay.graded and delay.graded
    assert lif.state_bits == 5 * 2 * 24 and relay.state_bits == 5 * 24
    assert delay.state_bits == 120
    shifter = NeuronGroup("s", 5, RelayParams(2, rectify=True), kind="relay")
    assert shifter.relay == RelayParams(2, rectify=True) and lif.relay == RelayParams()


def _hand_net():
    groups = {"a": NeuronGroup("a", 2, fixed.LifParams(4095, 2048, 10), latency=1),
              "b": NeuronGroup("b", 1, RelayParams(3), latency=2, kind="relay")}
    syn = [SynapseSpec("i->a", "i", "a", np.array([[2, 0], [4, 6]]), -1, clipped=1,
                       scale=0.5),
           SynapseSpec("a.bias", ClockSource("bias", 128), "a", np.array([[2], [0]]), 0),
           SynapseSpec("x.bias", ClockSource("bias", 64), "b", np.array([[2]]), 0),
           SynapseSpec("b.bias", BIAS_SOURCE, "b", np.array([[2]]), 0),
           SynapseSpec("a->b", "a", "b", sp.csr_matrix(np.array([[0, -4]])), 0, delay=1)]
    return LoweredNetwork(InputSpec("i", 2, 3, 5), groups, syn, "b", 1e-3)


def test_lowered_network_views():
    net = _hand_net()
    assert net.latency == 2 and net.steps_per_sample() == 7 and net.has_bias
    assert [s.name for s in net.incoming("b")] == ["x.bias", "b.bias", "a->b"]
    assert net.bias_sources == [BIAS_SOURCE, ClockSource("bias", 64), ClockSource("bias", 128)]
    net.synapses = [s for s in net.synapses if bias_offset(s.src) is None]
    assert not net.has_bias and net.bias_sources == []


def test_quantization_report_rows():
    rows = _hand_net().quantization_report()
    assert rows[0] == {"synapse": "i->a", "src": "i", "dst": "a", "kind": "dense",
                       "shape": [2, 2], "weight_exp": -1, "synapses": 3, "stored_weights": 4,
                       "weight_min": 0, "weight_max": 6, "clipped": 1, "delay": 0,
                       "scale": 0.5, "vth": 10, "du": 4095, "dv": 2048}
    last = rows[-1]
    assert last["kind"] == "sparse" and last["relay_exp"] == 3 and "vth" not in last
    # min/max start from 0 (initial=0): an all-negative layer reports max 0
    assert (last["weight_min"], last["weight_max"], last["synapses"]) == (-4, 0, 1)


# ---------------------------------------------------------------- wiring


def test_roles_and_supported_types():
    assert wiring._role(nir.Input(input_type={"input": np.array([2])})) == "input"
    assert wiring._role(nir.Output(output_type={"output": np.array([2])})) == "output"
    assert wiring._role(nir.Delay(delay=np.ones(2))) == "delay"
    assert wiring._role(_lif(2)) == "neuron"
    assert wiring._role(nir.Linear(weight=np.eye(2))) == "linear"
    kinds = wiring.supported_types()
    assert kinds == sorted(kinds) and {"LIF", "Input", "Output", "Delay", "Linear"} <= set(kinds)


def test_unsupported_and_malformed_graphs():
    class Odd(nir.Linear):  # a node type lrfdyn does not know (exact type lookup)
        pass

    g = _mlp(np.eye(2))
    g.nodes["weird"] = Odd(weight=np.eye(2))
    assert wiring._role(g.nodes["weird"]) is None
    with pytest.raises(UnsupportedNodeError, match=r"unsupported NIR node\(s\): Odd \(weird\)"):
        wire(g)
    g = _mlp(np.eye(2))
    g.edges.append(("a", "ghost"))
    with pytest.raises(ValidationError, match="unknown node 'ghost'"):
        wire(g)
    with pytest.raises(ValidationError, match="exactly one Input node, found 0"):
        wiring._sole([], "Input node")
    assert wiring._sole(["x"], "y") == "x"
    with pytest.raises(ValidationError, match="found 2"):
        wiring._sole(["x", "z"], "y")


def test_timesteps_and_levels_from_metadata_or_arguments():
    g = _mlp(np.eye(2))
    w = wire(g)
    assert (w.input.timesteps, w.input.levels, w.input.size, w.dt) == (4, 255, 2, 1e-3)
    w = wire(g, timesteps=9, levels=1)
    assert (w.input.timesteps, w.input.levels) == (9, 1)
    del g.metadata["input_levels"]
    assert wire(g).input.levels == 1
    g.metadata["timesteps"] = 1
    assert wire(g).input.timesteps == 1
    for bad in (0, -1):
        g.metadata["timesteps"] = bad
        with pytest.raises(ValidationError, match="no 'timesteps'"):
            wire(g)
    del g.metadata["timesteps"]
    with pytest.raises(ValidationError, match="no 'timesteps'"):
        wire(g)
    assert wire(g, timesteps=2).input.timesteps == 2
    del g.metadata["dt"]
    assert wire(g, timesteps=2).dt == 1e-3  # the convention's dt


def test_output_must_be_fed_by_neurons():
    g = _mlp(np.eye(2))
    g.edges = [e for e in g.edges if e != ("l1", "output")] + [("a", "output")]
    g.edges.remove(("a", "l1"))
    del g.nodes["l1"]
    with pytest.raises(UnsupportedNodeError, match="not by neurons"):
        wire(g)


def test_delay_steps():
    assert wiring.delay_steps(nir.Delay(delay=np.array([2e-3, 0.0])), 1e-3, "d").tolist() == [2, 0]
    with pytest.raises(ValidationError, match="not whole multiples"):
        wiring.delay_steps(nir.Delay(delay=np.array([1.5e-3])), 1e-3, "d")
    with pytest.raises(ValidationError, match="not whole multiples"):
        wiring.delay_steps(nir.Delay(delay=np.array([-1e-3])), 1e-3, "d")


def test_declared_and_input_shapes():
    assert wiring._input_shape(nir.Input(input_type={"input": np.array([2, 3, 4])})) == (2, 3, 4)
    assert wiring._declared_shape(_lif(3)) == (3,)
    node = _lif(3)
    node.input_type = {"input": np.array([0])}
    assert wiring._declared_shape(node) is None


def _recurrent(w_rec):
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "l": _lif(2),
             "rec": nir.Linear(weight=w_rec),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l"), ("l", "rec"), ("rec", "l"), ("l", "output")]
    return _graph(nodes, edges)


def test_a_group_feeding_itself_is_recurrent_with_one_step_delay():
    net = lower(_recurrent(np.array([[0.0, 0.5], [-0.5, 0.0]])))
    rec = [s for s in net.synapses if s.src == "l" and s.dst == "l"]
    assert len(rec) == 1 and rec[0].recurrent and rec[0].delay == 0
    fwd = [s for s in net.synapses if s.src == "input"]
    assert not fwd[0].recurrent and net.groups["l"].latency == 1


def test_a_loop_through_two_groups_is_refused():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "l": _lif(2), "b": nir.Linear(weight=np.eye(2)),
             "m": _lif(2), "c": nir.Linear(weight=np.eye(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l"), ("l", "b"), ("b", "m"), ("m", "c"), ("c", "l"),
             ("m", "output")]
    with pytest.raises(UnsupportedNodeError, match="passes through several"):
        wire(_graph(nodes, edges))


def test_a_loop_of_linear_nodes_is_refused():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "b": nir.Linear(weight=np.eye(2)),
             "l": _lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "b"), ("b", "a"), ("b", "l"), ("l", "output")]
    with pytest.raises(UnsupportedNodeError, match="contains no neuron"):
        wire(_graph(nodes, edges))


def test_a_readout_cannot_feed_a_group():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)),
             "li": nir.LI(tau=np.full(2, 2e-3), r=np.ones(2), v_leak=np.zeros(2)),
             "b": nir.Linear(weight=np.eye(2)), "l": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "li"), ("li", "b"), ("b", "l"), ("l", "output")]
    with pytest.raises(UnsupportedNodeError, match="li emits no spikes"):
        wire(_graph(nodes, edges))


def test_a_linear_node_without_input_is_refused():
    g = _mlp(np.eye(2))
    g.edges.remove(("input", "a"))
    with pytest.raises(ValidationError, match="no incoming edge"):
        wire(g)


# ---------------------------------------------------------------- quantization by hand


def test_graded_input_layer_by_hand():
    # Input levels 255, W peak 1, LIF gain dt/τ·r = 0.5, θ = 1.
    # target limit: exp = −ceil(log2(255 + 1)) = −8, limit = 254·255·2^−8 / 1 = 253.008;
    # vth = floor(253.008·θ/gain) = 506; T = vth·gain/θ = 253.
    # weights: factor T/255, peak 0.99216 -> exp = ceil(log2(0.99216/254)) = −8;
    # mantissas 2·round(W·(253/255)·256 / 2): 1 -> 254, −0.5 -> −126, 0.25 -> 64, 0.5 -> 126
    w1 = np.array([[1.0, -0.5], [0.25, 0.5]])
    net = lower(_mlp(w1))
    (s,) = net.synapses
    assert (s.src, s.dst, s.weight_exp, s.num_message_bits, s.lag, s.delay) == (
        "input", "l1", -8, 24, 0, 0)
    assert np.asarray(s.weights).tolist() == [[254, -126], [64, 126]]
    assert s.scale == pytest.approx(253 / 255) and s.clipped == 0
    p = net.groups["l1"].params
    assert (p.vth, p.du, p.dv) == (506, 4095, 2048)
    fp = net.groups["l1"].units
    assert fp.units == pytest.approx(64 * 506) and fp.gain == pytest.approx(0.5)
    assert fp.v_th == 1.0 and fp.tau_steps == pytest.approx(2.0) and fp.pre_units is None
    assert net.groups["l1"].latency == 1 and net.output == "l1" and net.latency == 1
    assert net.input.levels == 255 and net.dt == 1e-3


def test_spike_driven_layer_by_hand():
    # Second layer reads spikes (scale 1, no exponent): limit = 254/peak = 254/2 = 127,
    # vth = floor(127·1/0.5) = 254, T = 127, weights 2·round(W·127/2): 2 -> 254,
    # −1 -> −128 (−63.5 rounds to even −64), 0.3 -> 38
    w1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    w2 = np.array([[2.0, -1.0], [0.3, 0.0]])
    net = lower(_mlp(w1, w2))
    s = [x for x in net.synapses if x.src == "l1"][0]
    assert s.weight_exp == 0 and s.num_message_bits == 0 and s.scale == pytest.approx(127)
    assert np.asarray(s.weights.toarray() if sp.issparse(s.weights) else s.weights).tolist() \
        == [[254, -128], [38, 0]]
    assert net.groups["l2"].params.vth == 254 and net.groups["l2"].latency == 2
    assert list(net.groups) == ["l1", "l2"]


def test_binary_input_layer_by_hand():
    # levels 1: the input is spikes; limit 254/0.5 = 508, vth = floor(508/0.5) = 1016,
    # T = 508: weights 0.5 -> 254, 0.25 -> 127 -> 2·round(63.5) = 128
    net = lower(_mlp(np.array([[0.5, 0.25]]), levels=1))
    (s,) = net.synapses
    assert s.weight_exp == 0 and s.num_message_bits == 0
    assert np.asarray(s.weights).tolist() == [[254, 128]]
    assert net.groups["l1"].params.vth == 1016


def test_bias_becomes_a_synapse_from_the_bias_source():
    # layer as test_graded_input_layer_by_hand: vth 506, λ = 64·506 per unit of v.
    # v bias = gain·b = 0.5·b; input-current units: 0.5·b·λ/64 = 253·b
    # b = [0.5, −1]: 126.5, −253 -> exp 0 (253 <= 254); even mantissas 2·round(x/2):
    # 2·round(63.25) = 126, 2·round(−126.5) = 2·(−126) = −252 (numpy rounds half to even)
    w1 = np.array([[1.0, -0.5], [0.25, 0.5]])
    net = lower(_mlp(w1, b1=np.array([0.5, -1.0])))
    b = [s for s in net.synapses if s.src == BIAS_SOURCE]
    assert len(b) == 1 and b[0].name == "l1.bias" and b[0].dst == "l1"
    assert b[0].weight_exp == 0 and np.asarray(b[0].weights).ravel().tolist() == [126, -252]
    assert b[0].delay == 0 and net.has_bias


def test_bias_on_a_deeper_group_comes_from_a_source_that_starts_later():
    w1 = np.eye(2)
    g = _mlp(w1, np.eye(2))
    g.nodes["b"] = nir.Affine(weight=np.eye(2), bias=np.array([0.1, 0.0]))
    net = lower(g)
    (b,) = [s for s in net.synapses if bias_offset(s.src) is not None]
    # latency 2: the source starts 1 step late, and no neuron holds a delay buffer
    assert b.dst == "l2" and b.src == ClockSource("bias", 1) and b.delay == 0
    assert b.buffer_bits == 0 and b.memory_bits == b.stored_weights * 8


def test_groups_of_one_latency_share_one_bias_source_and_no_bias_is_delayed():
    # l1 and l3 at latency 1 read the bias from one source; l2 (latency 2) from the next
    aff = lambda b: nir.Affine(weight=np.eye(2), bias=np.array(b))  # noqa: E731
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": aff([0.1, 0.2]), "l1": _lif(2), "c": aff([0.0, 0.4]), "l3": _lif(2),
             "b": aff([0.3, 0.0]), "d": nir.Linear(weight=np.eye(2)), "l2": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l1"), ("input", "c"), ("c", "l3"), ("l1", "b"),
             ("l3", "d"), ("b", "l2"), ("d", "l2"), ("l2", "output")]
    net = lower(nir.NIRGraph(nodes=nodes, edges=edges), timesteps=3)
    srcs = {s.dst: s.src for s in net.synapses if bias_offset(s.src) is not None}
    assert srcs == {"l1": BIAS_SOURCE, "l3": BIAS_SOURCE, "l2": ClockSource("bias", 1)}
    assert net.bias_sources == [BIAS_SOURCE, ClockSource("bias", 1)]
    assert all(s.delay == 0 and s.buffer_bits == 0 for s in net.synapses
               if bias_offset(s.src) is not None)


def test_shortcut_is_delayed_to_the_slower_path():
    # input -> l1 -> l2 and input -> l2: l2 at latency 2, so the shortcut waits 1 step
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "l1": _lif(2),
             "b": nir.Linear(weight=np.eye(2)), "c": nir.Linear(weight=np.eye(2) * 0.5),
             "l2": _lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l1"), ("l1", "b"), ("b", "l2"), ("input", "c"),
             ("c", "l2"), ("l2", "output")]
    net = lower(_graph(nodes, edges))
    delays = {(s.src, s.dst): s.delay for s in net.synapses}
    assert delays == {("input", "l1"): 0, ("l1", "l2"): 0, ("input", "l2"): 1}
    assert (net.groups["l1"].latency, net.groups["l2"].latency) == (1, 2)


def test_nir_delay_becomes_a_lag_and_a_synapse_delay():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "l1": _lif(2),
             "d": nir.Delay(delay=np.full(2, 3e-3)), "b": nir.Linear(weight=np.eye(2)),
             "l2": _lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l1"), ("l1", "d"), ("d", "b"), ("b", "l2"),
             ("l2", "output")]
    net = lower(_graph(nodes, edges))
    (s,) = [x for x in net.synapses if x.dst == "l2"]
    assert s.lag == 3 and s.delay == 3 and s.name == "l1->l2@3"


def test_threshold_is_memoryless_with_a_bounded_vth():
    # Threshold θ = 0.5 after input (levels 1, spikes) through W = [[0.25, 0.25]]:
    # reach = gain·max bound = 1·0.5; memoryless vth = floor(0.75·4095·0.5/(64·0.5)) = 47;
    # the weight limit alone allows floor(254/0.25·0.5) = 508
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.array([[0.25, 0.25]])),
             "t": nir.Threshold(threshold=np.array([0.5])),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "t"), ("t", "output")]
    net = lower(_graph(nodes, edges, input_levels=1))
    p = net.groups["t"].params
    assert p.vth == 47 and p.dv == 4095 and p.du == 4095
    # T = 47·1/0.5 = 94: weight 0.25·94 = 23.5 -> 2·round(11.75) = 24
    assert np.asarray(net.synapses[0].weights).tolist() == [[24, 24]]


def test_memoryless_check_refuses_a_reachable_4096():
    g = NeuronGroup("t", 1, fixed.LifParams(4095, 4095, 1))
    w = wiring.wire(_mlp(np.eye(2), levels=1))
    q = quantize.Quantizer(w, w.groups)
    ok = SynapseSpec("s", "input", "t", np.array([[63, 0]]), 0)
    quantize._check_memoryless(g, [ok], q)  # 63 << 6 = 4032 < 4096
    bad = SynapseSpec("s", "input", "t", np.array([[32, 32]]), 0)
    with pytest.raises(LoihiRangeError, match="4096 >= 4096"):
        quantize._check_memoryless(g, [bad], q)
    shifted = SynapseSpec("s", "input", "t", np.array([[254, 0]]), -2)  # 63.5 -> 4064
    quantize._check_memoryless(g, [shifted], q)
    sparse = SynapseSpec("s", "input", "t", sp.csr_matrix(np.array([[-40, 30]])), 0)
    with pytest.raises(LoihiRangeError):  # |−40| + 30 = 70
        quantize._check_memoryless(g, [sparse], q)


def test_too_small_threshold_for_8_bits_is_refused():
    # weights so large relative to the threshold that vth < 1
    with pytest.raises(LoihiRangeError, match="too large relative to the threshold"):
        lower(_mlp(np.array([[1e6, 1.0]]), levels=1))


# ---------------------------------------------------------------- delays


def _chain_groups():
    return {"g": NeuronGroup("g", 2, fixed.LifParams(4095, 2048, 1), latency=1),
            "h": NeuronGroup("h", 2, fixed.LifParams(4095, 2048, 1), latency=200)}


def test_long_delays_go_through_shared_64_step_relays():
    groups = _chain_groups()
    syn = [SynapseSpec("g->h", "g", "h", np.array([[1, 0], [0, 1]]), 0)]
    syn[0].delay = 130  # set after the check, as assign_latencies does
    schedule.realize_delays(groups, syn)
    # 130 = 2·64 + 2: relays g.delay64 and g.delay128 (hops of 63-step synapses)
    assert list(groups) == ["g", "g.delay64", "g.delay128", "h"]
    assert groups["g.delay64"].latency == 1 + 64 and groups["g.delay128"].latency == 1 + 128
    assert groups["g.delay64"].kind == "delay" and not groups["g.delay64"].spiking
    by = {s.name: s for s in syn}
    assert by["g->g.delay64"].delay == 63 and by["g->g.delay64"].num_message_bits == 0
    assert by["g.delay64->g.delay128"].delay == 63
    assert by["g.delay64->g.delay128"].num_message_bits == 24
    assert by["g->h"].src == "g.delay128" and by["g->h"].delay == 2
    assert by["g->h"].num_message_bits == 24


def test_a_delay_of_exactly_64_uses_one_relay():
    groups = _chain_groups()
    syn = [SynapseSpec("g->h", "g", "h", np.eye(2, dtype=np.int64), 0)]
    syn[0].delay = 64
    schedule.realize_delays(groups, syn)
    assert list(groups) == ["g", "g.delay64", "h"]
    assert syn[0].src == "g.delay64" and syn[0].delay == 0
    groups = _chain_groups()
    syn = [SynapseSpec("g->h", "g", "h", np.eye(2, dtype=np.int64), 0, delay=63)]
    schedule.realize_delays(groups, syn)
    assert list(groups) == ["g", "h"] and syn[0].delay == 63 and syn[0].src == "g"


def test_delayed_clock_streams_read_a_later_source_and_input_ones_are_refused():
    groups = _chain_groups()
    b = SynapseSpec("h.bias", BIAS_SOURCE, "h", np.array([[1], [1]]), 0)
    b.delay = 150
    schedule.realize_delays(groups, [b])
    assert b.src == ClockSource("bias", 150) and b.delay == 0 and list(groups) == ["g", "h"]
    b2 = SynapseSpec("h.bias", ClockSource("bias", 64), "h", np.array([[1], [1]]), 0)
    b2.delay = 3
    schedule.realize_delays(groups, [b2])
    assert b2.src == ClockSource("bias", 67) and b2.delay == 0
    p = SynapseSpec("h.phase", ClockSource("phase", 2), "h", np.array([[1], [1]]), 0)
    p.delay = 1
    schedule.realize_delays(groups, [p])
    assert p.src == ClockSource("phase", 3) and p.delay == 0 and list(groups) == ["g", "h"]
    i = SynapseSpec("i->h", "input", "h", np.eye(2, dtype=np.int64), 0)
    i.delay = 70
    with pytest.raises(ValidationError, match="from the input cannot be relayed"):
        schedule.realize_delays(groups, [i])


def test_delayed_convs():
    groups = {"r": NeuronGroup("r", 8, RelayParams(), latency=1, shape=(2, 2, 2),
                               kind="relay"),
              "h": NeuronGroup("h", 8, fixed.LifParams(4095, 2048, 1), latency=5)}
    k = np.array([3, -2]).reshape(2, 1, 1, 1)
    # 2 channels of 1x3 positions (channels != width, so a repeat by the wrong axis shows)
    diag = SynapseSpec("r->h", "r", "h", k, 0,
                       conv=ConvMap(k.astype(float), (2, 1, 3), groups=2))
    diag.delay = 3
    schedule.realize_delays(groups, [diag])
    # one weight per channel repeated over its 3 positions: a diagonal DelaySparse
    assert diag.conv is None and diag.delay == 3 and diag.is_sparse
    assert diag.weights.toarray().diagonal().tolist() == [3, 3, 3, -2, -2, -2]
    k2 = np.ones((2, 2, 1, 1), np.int64)
    full = SynapseSpec("r->h", "r", "h", k2, 0, conv=ConvMap(k2.astype(float), (2, 2, 2)))
    full.delay = 3
    schedule.realize_delays(groups, [full])
    assert full.conv is not None and full.delay == 0 and full.src == "r.delay3"
    assert full.num_message_bits == 24
    assert groups["r.delay3"].latency == 4 and list(groups) == ["r", "r.delay3", "h"]


def test_delay_relays_are_shared_by_a_source():
    groups = _chain_groups()
    s1 = SynapseSpec("a", "g", "h", np.eye(2, dtype=np.int64), 0)
    s2 = SynapseSpec("b", "g", "h", np.eye(2, dtype=np.int64) * 2, 0)
    s1.delay, s2.delay = 70, 100
    syn = [s1, s2]
    schedule.realize_delays(groups, syn)
    assert s1.src == s2.src == "g.delay64" and (s1.delay, s2.delay) == (6, 36)
    assert len(syn) == 3 and list(groups) == ["g", "g.delay64", "h"]


def test_steps_per_sample_and_latency_of_a_lowered_mlp():
    net = lower(_mlp(np.eye(2), np.eye(2)), timesteps=7)
    assert net.steps_per_sample() == 7 + 2 and net.input.timesteps == 7


def test_worth_relaying():
    from lrfdyn.loihi.linear import Expression
    from lrfdyn.loihi.layers import MatrixMap

    m = MatrixMap(sp.csr_matrix(np.ones((4, 4))), (4,), (4,))
    e = Expression([(Tap("x"), m)], np.zeros(4), (4,))
    # 16 weights; as a relay 16 once + 4 one-to-one per consumer
    assert not wiring._worth_relaying(e, 1)  # 0 > 4: no
    assert wiring._worth_relaying(e, 2)  # 16 > 8
    assert wiring._worth_relaying(e, 3)  # 32 > 12


def test_abs_apply_and_max_abs():
    from lrfdyn.loihi.layers import MatrixMap

    m = MatrixMap(sp.csr_matrix(np.array([[1.0, -2.0], [0.0, 3.0]])), (2,), (2,))
    assert quantize.abs_apply(m, np.array([1.0, 2.0])).tolist() == [5.0, 6.0]
    assert quantize.max_abs(m) == 3.0
    c = ConvMap(np.array([[[[-1.0, 2.0]]]]), (1, 1, 3))
    assert quantize.abs_apply(c, np.array([1.0, 1.0, 2.0])).tolist() == [3.0, 5.0]
    assert quantize.max_abs(c) == 2.0
    empty = MatrixMap(sp.csr_matrix((2, 2)), (2,), (2,))
    assert quantize.max_abs(empty) == 0.0


def _conv_graph(kernel, levels=255):
    k = np.asarray(kernel, np.float64)[None, None]
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
             "c": nir.Conv2d(input_shape=(3, 3), weight=k, stride=1, padding=0, dilation=1,
                             groups=1, bias=np.zeros(1)),
             "output": nir.Output(output_type={"output": np.array([1, 2, 2])})}
    nodes["l1"] = nir.LIF(tau=np.full((1, 2, 2), 2e-3), r=np.ones((1, 2, 2)),
                          v_leak=np.zeros((1, 2, 2)), v_threshold=np.ones((1, 2, 2)),
                          v_reset=np.zeros((1, 2, 2)))
    return _graph(nodes, [("input", "c"), ("c", "l1"), ("l1", "output")],
                  input_levels=levels)


def test_a_conv_of_the_graded_input_gets_a_shifter_relay_by_hand():
    # W = [[0.5, −0.25], [0.25, 0.125]] on a 3x3 graded input (255 levels), LIF gain 0.5.
    # The shifter l1.in and l1 share one scale T. Limits: the relay's conv 254·255/0.5 =
    # 129540; l1's current from the relay, worst case Σ|W| = 1.125:
    # CURRENT_MAX/(1.05·1.125) = 131071/1.18125 = 110959.6 -> vth = min(131071,
    # floor(110959.6/0.5)) = 131071, T = 65535.5. Relay: head = 129540/65535.5 = 1.98
    # -> exp 0, pre-scale 65535.5; conv weights round(W·65535.5/255) = round(W·257.002):
    # 128.501 -> 129, −64.25 -> −64, 64.25 -> 64, 32.13 -> 32.
    net = lower(_conv_graph([[0.5, -0.25], [0.25, 0.125]]))
    assert list(net.groups) == ["l1.in", "l1"]
    sh = net.groups["l1.in"]
    assert sh.kind == "relay" and sh.params == RelayParams(0, True) and sh.params.prod
    assert sh.shape == (1, 2, 2) and sh.size == 4 and not sh.spiking
    assert sh.units.units == pytest.approx(65535.5)
    assert sh.units.pre_units == pytest.approx(65535.5)
    by = {s.name: s for s in net.synapses}
    assert sorted(by) == ["input->l1.in", "l1.in->l1", "l1.in.unit"]
    c = by["input->l1.in"]
    assert c.kind == "conv" and c.weight_exp == 0 and c.num_message_bits == 24
    assert np.asarray(c.weights).ravel().tolist() == [129, -64, 64, 32]
    unit = by["l1.in.unit"]
    assert (unit.src, unit.port, unit.weight_exp) == (BIAS_SOURCE, "a_in2", 0)
    assert unit.weights.toarray().ravel().tolist() == [1, 1, 1, 1]
    one = by["l1.in->l1"]
    assert one.num_message_bits == 24 and one.scale == 1.0
    assert np.asarray(one.weights).ravel().tolist() == [1]
    p = net.groups["l1"].params
    assert p.vth == 131071 and (net.groups["l1.in"].latency, net.groups["l1"].latency) == (1, 2)
    assert {(s.name, s.delay) for s in net.synapses} == {
        ("input->l1.in", 0), ("l1.in->l1", 0), ("l1.in.unit", 0)}


def test_a_conv_of_spikes_needs_no_shifter():
    # levels 1: spikes; the LIF's own limit 254/0.5 = 508, vth = floor(508/0.5) = 1016,
    # T = 508, conv weights round(W·508): 0.5 -> 254, −0.25 -> −127, 0.125 -> 63.5 -> 64
    net = lower(_conv_graph([[0.5, -0.25], [0.25, 0.125]], levels=1))
    assert list(net.groups) == ["l1"]
    (s,) = net.synapses
    assert s.kind == "conv" and s.num_message_bits == 0
    assert np.asarray(s.weights).ravel().tolist() == [254, -127, 127, 64]
    assert net.groups["l1"].params.vth == 1016


def test_a_node_feeding_two_groups_becomes_a_relay_by_hand():
    # A (4x4, 16 weights) feeds l1 and l2: as a relay it stores 16 + 2·4 < 2·16.
    # Spikes in (levels 1): A's own scale = 254/peak 2 = 127 (no component: read through
    # matrices); weights 2·round(W·127/2): 1 -> 128, 0.5 -> 64, −1 -> −128, 0.25 -> 32,
    # 2 -> 254.
    a = np.array([[1, 0.5, 0, 0], [0, -1, 0, 0.25], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 2]])
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "A": nir.Linear(weight=a), "l1": _lif(4), "B": nir.Linear(weight=np.eye(4)),
             "l2": _lif(4), "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "A"), ("A", "l1"), ("A", "l2"), ("l1", "B"), ("B", "l2"),
             ("l2", "output")]
    net = lower(_graph(nodes, edges, input_levels=1))
    assert list(net.groups)[0] == "A" and set(net.groups) == {"A", "l1", "l2"}
    r = net.groups["A"]
    assert r.kind == "relay" and r.params == RelayParams(0) and not r.params.prod
    assert (r.units.units, r.units.pre_units) == (pytest.approx(127.0), pytest.approx(127.0))
    # l2 waits for l1 (latency 3), so A's direct synapse into it is delayed 3 − 1 − 1 = 1
    assert (r.latency, net.groups["l1"].latency, net.groups["l2"].latency) == (1, 2, 3)
    by = {s.name: s for s in net.synapses}
    assert sorted(by) == ["A->l1", "A->l2", "input->A", "l1->l2"]
    assert (by["A->l2"].delay, by["A->l1"].delay, by["l1->l2"].delay) == (1, 0, 0)
    w = by["input->A"]
    assert w.kind == "dense" and w.weight_exp == 0 and w.num_message_bits == 0
    assert np.asarray(w.weights).tolist() == [[128, 64, 0, 0], [0, -128, 0, 32],
                                              [64, 64, 64, 64], [0, 0, 0, 254]]
    for name in ("A->l1", "A->l2"):
        assert by[name].num_message_bits == 24 and by[name].src == "A"
    # not shared: every chain composed per target, no relay
    flat = lower(_graph(nodes, edges, input_levels=1), shared=False)
    assert set(flat.groups) == {"l1", "l2"}


def _graded_graph(w, bias=None, levels=1, v_th=1.0):
    from lrfdyn.nir_types import graded_node

    n_out, n_in = np.asarray(w).shape
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "a": nir.Affine(weight=np.asarray(w, float), bias=np.asarray(bias, float))
             if bias is not None else nir.Linear(weight=np.asarray(w, float)),
             "g": graded_node((n_out,), rectify=True),
             "b": nir.Linear(weight=np.eye(n_out)), "l": _lif(n_out, v_th=v_th),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "a"), ("a", "g"), ("g", "b"), ("b", "l"), ("l", "output")]
    return _graph(nodes, edges, input_levels=levels)


def test_a_graded_node_keeps_integer_weights_exactly():
    # all >= 0: Lava's Dense keeps every bit (a mixed-sign matrix loses its LSB)
    net = lower(_graded_graph([[3, 1], [1, 0]], bias=[5.0, 1.0]))
    g = net.groups["g"]
    assert g.kind == "relay" and g.params.rectify and g.params.exp == 0
    assert g.units == Units(1.0, pre_units=1.0)
    by = {s.name: s for s in net.synapses}
    w = by["input->g"]
    # odd weights kept (no even rounding), no exponent: one integer unit per float unit
    assert np.asarray(w.weights.toarray() if sp.issparse(w.weights) else w.weights).tolist() \
        == [[3, 1], [1, 0]]
    assert w.weight_exp == 0 and w.scale == 1.0
    b = by["g.bias"]
    assert b.src == BIAS_SOURCE and np.asarray(b.weights).ravel().tolist() == [5, 1]
    assert b.weight_exp == 0


def test_a_graded_node_refuses_what_it_cannot_hold_exactly():
    with pytest.raises(LoihiRangeError):
        lower(_graded_graph([[0.5, 1.0]]))  # not a whole unit
    with pytest.raises(LoihiRangeError, match="not integers Loihi holds exactly"):
        lower(_graded_graph([[3.0, -3.0]]))  # mixed signs: Lava drops the odd LSB
    with pytest.raises(LoihiRangeError):
        lower(_graded_graph([[300.0, 1.0]]))  # beyond 8 bits
    with pytest.raises(UnsupportedNodeError, match="a graded node reads spikes"):
        lower(_graded_graph([[1.0, 1.0]], levels=255))  # the 255-level input: scale 255


def test_a_voltage_readout_by_hand():
    # l1 spikes -> W = 0.5 -> LI (τ = 4 ms, gain 0.25, θ taken as 1): limit 254/0.5 = 508,
    # vth = floor(508·1/0.25) = 2032, T = 508; weight 0.5·508 = 254
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "a": nir.Linear(weight=np.array([[1.0]])), "l1": _lif(1),
             "b": nir.Linear(weight=np.array([[0.5]])),
             "li": nir.LI(tau=np.full(1, 4e-3), r=np.ones(1), v_leak=np.zeros(1)),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "l1"), ("l1", "b"), ("b", "li"), ("li", "output")]
    net = lower(_graph(nodes, edges, input_levels=1))
    li = net.groups["li"]
    assert not li.spiking and li.kind == "lif" and li.params.vth == 2032
    assert li.params.dv == 1024 and li.units.v_th == 1.0
    (s,) = [x for x in net.synapses if x.dst == "li"]
    assert np.asarray(s.weights).tolist() == [[254]]


def test_a_positive_threshold_is_required():
    g = _mlp(np.eye(2), levels=1)
    g.nodes["l1"] = _lif(2, v_th=0.0)
    with pytest.raises(UnsupportedNodeError, match="threshold must be positive"):
        lower(g)


def test_a_substituted_reset_is_recorded_in_the_metadata():
    from lrfdyn.loihi.neurons import CONVENTIONS

    net = lower(_mlp(np.eye(2), np.eye(2), levels=1), CONVENTIONS["snntorch"])
    assert net.metadata["reset_substituted"] == {"l1": "zero (Loihi) for subtract_next",
                                                 "l2": "zero (Loihi) for subtract_next"}
    assert "reset_substituted" not in lower(_mlp(np.eye(2), levels=1)).metadata
    assert lower(_mlp(np.eye(2), levels=1)).metadata["timesteps"] == 4


def test_the_smallest_threshold_one_is_accepted():
    # spikes, peak 300, gain 0.5: vth = floor(254/300·1/0.5) = floor(1.69) = 1, T = 0.5,
    # weight 300·0.5 = 150; peak 1e6 gives vth 0: refused (the test above)
    net = lower(_mlp(np.array([[300.0, 100.0]]), levels=1))
    assert net.groups["l1"].params.vth == 1
    assert np.asarray(net.synapses[0].weights).tolist() == [[150, 50]]


def test_a_graded_node_may_read_another_graded_node():
    from lrfdyn.nir_types import graded_node

    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.array([[1.0, 2.0], [0.0, 1.0]])),
             "g1": graded_node((2,), rectify=True),
             "b": nir.Linear(weight=np.array([[1.0, 1.0]])),
             "g2": graded_node((1,), rectify=False),
             "c": nir.Linear(weight=np.eye(1)), "l": _lif(1),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "g1"), ("g1", "b"), ("b", "g2"), ("g2", "c"), ("c", "l"),
             ("l", "output")]
    net = lower(_graph(nodes, edges, input_levels=1))  # g1 has scale 1: g2 reads it
    assert net.groups["g2"].params == RelayParams(rectify=False)
    assert net.groups["g1"].params.rectify
    (s,) = [x for x in net.synapses if x.dst == "g2"]
    assert np.asarray(s.weights.toarray() if sp.issparse(s.weights) else s.weights).tolist() \
        == [[1, 1]] and s.num_message_bits == 24


def test_a_conv_reading_another_convs_padding_makes_it_a_relay_by_hand(conv_chain_graph):
    # c2 reads c1's zero padding, so no single conv equals c2∘c1: c1 becomes a relay; l
    # reads the graded c1 through a weighted conv, so a shifter l.in sits in front of l.
    # c1 (read by no LIF one-to-one): own scale, spikes through a conv: 254/0.5 = 508;
    #   weights round(k1·508): 0.1 -> 51, 0.5 -> 254.
    # l.in + l share T. l.in's conv limit 254·508/1.0 = 129032; l's current bound: c1's
    #   float bound is Σ|k1| over the taps inside the grid (1.3 in the centre, 1.0 at an
    #   edge), so l.in's is at most 0.5·1.0 + 1.0·1.3 = 1.8 (output (1,1));
    #   CURRENT_MAX/(1.05·1.8) = 69349.7 -> vth = min(131071, floor(69349.7/0.5)) = 131071,
    #   T = 65535.5; head 129032/65535.5 = 1.97 -> exp 0.
    #   l.in weights round(k2·65535.5/508 = k2·129.0069): −0.5 -> −65, 1 -> 129.
    net = lower(conv_chain_graph())
    assert list(net.groups) == ["c1", "l.in", "l"]
    c1, sh, l = net.groups["c1"], net.groups["l.in"], net.groups["l"]
    assert c1.kind == "relay" and c1.params == RelayParams(0) and c1.shape == (1, 3, 3)
    assert c1.units == Units(508.0, pre_units=508.0)
    assert sh.params == RelayParams(0, True)
    assert sh.units.units == pytest.approx(65535.5)
    assert l.params.vth == 131071
    assert (c1.latency, sh.latency, l.latency) == (1, 2, 3)
    by = {s.name: s for s in net.synapses}
    assert sorted(by) == ["c1->l.in", "input->c1", "l.in->l", "l.in.unit"]
    assert np.asarray(by["input->c1"].weights).ravel().tolist() == [51] * 4 + [254] + [51] * 4
    assert by["input->c1"].num_message_bits == 0
    assert np.asarray(by["c1->l.in"].weights).ravel().tolist() == [0, -65, 0, 0, 129, 0, 0,
                                                                   0, 0]
    assert by["c1->l.in"].scale == pytest.approx(65535.5 / 508)
    assert by["c1->l.in"].num_message_bits == 24
    assert np.asarray(by["l.in->l"].weights).ravel().tolist() == [1]
    assert by["l.in.unit"].port == "a_in2"


def test_groups_are_validated_where_they_are_made():
    for kw, match in ((dict(kind="neuron"), "kind 'neuron'"), (dict(params={"vth": 1}), "params of type dict"),
                      (dict(size=-1), "size -1"), (dict(size=2.5), "size 2.5"),
                      (dict(reset="later"), "reset 'later'")):
        args = dict(name="g", size=2, params=RelayParams()) | kw
        with pytest.raises(ValidationError, match=match):
            NeuronGroup(**args)
    for bad in (dict(units=0.0), dict(units=float("nan")), dict(units=1.0, gain=float("inf"))):
        with pytest.raises(ValidationError, match="group units"):
            Units(**bad)


def test_defaults_of_the_data_types():
    s = SynapseSpec("s", "a", "b", np.array([[1]]), 0)
    assert (s.delay, s.num_message_bits, s.clipped, s.scale, s.lag, s.recurrent, s.conv,
            s.port) == (0, 0, 0, 1.0, 0, False, None, "a_in")
    g = NeuronGroup("g", 3, RelayParams())
    assert (g.latency, g.shape, g.units, g.reset, g.spiking, g.kind) == (
        0, (), None, "zero", True, GroupKind.LIF)
    assert g.kind == "lif" and NeuronGroup("r", 1, RelayParams(), kind="relay").kind is \
        GroupKind.RELAY
    assert RelayParams() == RelayParams(0, False, False)
    net = LoweredNetwork(InputSpec("i", 1, 1, 1), {"g": g}, [], "g", 1e-3)
    assert net.metadata == {} and net.bias_sources == [] and not net.has_bias
    assert net.copies == 1
    plan = wiring.GroupPlan("p", None, None)
    assert (plan.shifter, plan.exact, plan.rectify, plan.kind) == (False, False, False, "relay")


def test_a_relay_that_shifts_rounds_to_nearest_by_hand():
    # 8 channels x 2x2 of weight 1 into one LIF (gain 0.5), 255-level input. l1's current
    # bound Σ|W| = 32: CURRENT_MAX/(1.05·32) = 3900.9 -> vth = floor(3900.9/0.5) = 7801,
    # T = 3900.5. The shifter's own limit 254·255/1 = 64770: head 16.6 -> exp 4,
    # pre-scale 16·3900.5 = 62408, conv weights round(62408/255 = 244.7) = 245.
    # Half a unit before the flooring shift: a bias of 2^(4−1) = 8 pre-scale units.
    k = np.ones((1, 8, 2, 2))
    nodes = {"input": nir.Input(input_type={"input": np.array([8, 2, 2])}),
             "c": nir.Conv2d(input_shape=(2, 2), weight=k, stride=1, padding=0, dilation=1,
                             groups=1, bias=np.zeros(1)),
             "l1": nir.LIF(tau=np.full((1, 1, 1), 2e-3), r=np.ones((1, 1, 1)),
                           v_leak=np.zeros((1, 1, 1)), v_threshold=np.ones((1, 1, 1)),
                           v_reset=np.zeros((1, 1, 1))),
             "output": nir.Output(output_type={"output": np.array([1, 1, 1])})}
    net = lower(_graph(nodes, [("input", "c"), ("c", "l1"), ("l1", "output")]))
    sh = net.groups["l1.in"]
    assert sh.params == RelayParams(4, True)
    assert (sh.units.units, sh.units.pre_units) == (pytest.approx(3900.5), pytest.approx(62408))
    assert net.groups["l1"].params.vth == 7801
    by = {s.name: s for s in net.synapses}
    assert np.asarray(by["input->l1.in"].weights).ravel().tolist() == [245] * 32
    b = by["l1.in.bias"]
    assert b.src == BIAS_SOURCE and b.weight_exp == 0 and np.asarray(b.weights).ravel().tolist() == [8]


def test_a_graded_bias_past_8_bits_is_kept_when_it_is_exact():
    # [512, 4] = [128, 1] · 2^2: 8-bit mantissas with one shared exponent, exact. In
    # [513, 4] the odd 513 past 255 needs exponent 2 too, which drops its low bits.
    # (l's threshold of 100 leaves its weights from g's 513 inside 8 bits)
    net = lower(_graded_graph([[1, 0], [0, 1]], bias=[512.0, 4.0], v_th=100.0))
    (b,) = [x for x in net.synapses if x.name == "g.bias"]
    assert (np.asarray(b.effective()).ravel() * 2 ** b.weight_exp).tolist() == [512, 4]
    assert b.weight_exp > 0
    with pytest.raises(LoihiRangeError, match="its bias is not an integer Loihi holds"):
        lower(_graded_graph([[1, 0], [0, 1]], bias=[513.0, 4.0], v_th=100.0))


def test_require_exact_compares_integers_with_the_scaled_floats():
    from lrfdyn.loihi.layers import MatrixMap

    m = MatrixMap(sp.csr_matrix(np.array([[1.0, 3.0]])), (2,), (1,))
    twice = SynapseSpec("s", "x", "g", np.array([[2, 6]]), 0)
    quantize._require_exact(twice, m, 2.0)  # 2·[1, 3] held exactly
    with pytest.raises(LoihiRangeError, match="not integers Loihi holds exactly"):
        quantize._require_exact(twice, m, 1.0)
    halved = SynapseSpec("s", "x", "g", np.array([[1, 3]]), 1)  # [1, 3] << 1 = [2, 6]
    quantize._require_exact(halved, m, 2.0)


def test_phase_at_is_empty_without_phases_and_silent_outside_the_sample():
    net = _hand_net()
    assert net.phases is None and net.phase_at(0).shape == (0,)
    net.phases = np.array([[1, 0], [0, 1]])
    assert net.phase_at(1).tolist() == [0, 1]
    assert net.phase_at(2).tolist() == net.phase_at(-1).tolist() == [0, 0]


def _block_sum_graph(timesteps=3, block=2):
    from lrfdyn.nir_types import block_sum_node

    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)),
             "bs": block_sum_node((2,), block=block),
             "b": nir.Linear(weight=np.eye(2)), "l": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "bs"), ("bs", "b"), ("b", "l"), ("l", "output")]
    return _graph(nodes, edges, input_levels=1, timesteps=timesteps)


def test_a_block_sum_is_two_exact_groups_that_sum_the_whole_block():
    from lrfdyn.sim.reference import run_reference

    net = lower(_block_sum_graph(timesteps=3, block=2))
    phase, total = net.groups["bs.phase"], net.groups["bs"]
    # phases (j, L) of T = 3 in blocks of 2: (0, 2), (1, 2) and the short last block (0, 1)
    assert phase.size == 3 * 2 and total.size == 2
    for g in (phase, total):  # exact: one integer unit per input spike, no shift
        assert g.kind == "relay" and g.params.exp == 0
        assert g.units == Units(1.0, pre_units=1.0)
    x = np.array([[[1, 0], [1, 1], [0, 1]], [[0, 1], [0, 0], [1, 1]]])  # (N, T, 2) spikes
    got = run_reference(net, x, 3)["bs"]
    # each step sees the count over its whole block: steps 0-1 of block [0, 2), step 2 alone
    want = np.stack([x[:, :2].sum(1), x[:, :2].sum(1), x[:, 2]], axis=1)
    np.testing.assert_array_equal(got, want)


def _ternary_graph():
    from lrfdyn.nir_types import ternary_node

    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.array([[1.0, -1.0], [-1.0, 1.0]])),
             "t": ternary_node(np.full(2, 2e-3), np.full(2, 0.5)),
             "b": nir.Linear(weight=np.eye(2)), "l": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "t"), ("t", "b"), ("b", "l"), ("l", "output")]
    return _graph(nodes, edges, input_levels=1)


def test_readers_of_a_ternary_group_take_signed_two_bit_payloads():
    net = lower(_ternary_graph())
    assert net.groups["t"].ternary
    (s,) = [x for x in net.synapses if x.src == "t"]
    # −1 on a 1-bit (or spike) synapse would arrive as +1: Lava's TernaryLIF sends 2 bits
    assert s.num_message_bits == 2
    wide = SynapseSpec("t->l", "t", "l", np.eye(2, dtype=np.int64), 0, num_message_bits=24)
    L._ternary_payloads(net.groups, [wide])
    assert wide.num_message_bits == 24  # a reader that already takes more keeps it


def test_a_zero_term_does_not_end_the_search_for_the_limiting_weight():
    # l1 reads the input through all-zero weights (peak 0: skipped) and l0's spikes through
    # weights of peak 300, which alone limit the target scale: every weight fits 8 bits
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "a": nir.Linear(weight=np.eye(2)), "l0": _lif(2),
             "z": nir.Linear(weight=np.zeros((2, 2))),
             "w": nir.Linear(weight=np.array([[300.0, 0.0], [0.0, 150.0]])),
             "l1": _lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l0"), ("input", "z"), ("z", "l1"), ("l0", "w"),
             ("w", "l1"), ("l1", "output")]
    net = lower(_graph(nodes, edges, input_levels=1))
    (w,) = [s for s in net.synapses if s.dst == "l1" and s.src == "l0"]
    # peak 300 at gain 0.5 and θ 1: vth = floor(254/300 / 0.5) = 1, so T = 0.5 and the
    # weights are 300·0.5 = 150 and 75, which rounds to the even 76
    assert not w.clipped and np.asarray(w.weights).tolist() == [[150, 0], [0, 76]]
