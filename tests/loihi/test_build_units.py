"""Unit tests of loihi/build.py: drain, input layout and the Lava processes it creates.

The processes are only created, never compiled or run (no Lava runtime): each test reads
the Vars and parameters Lava's processes were given and compares them with values
worked out by hand for a hand-built lowered network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lrfdyn.loihi import build, fixed
from lrfdyn.loihi.ir import (BIAS_SOURCE, ClockSource, InputSpec, LoweredNetwork, NeuronGroup,
                             RelayParams, SynapseSpec)


def _by_hand(d: int) -> int | None:
    """Python-integer decay of 2^23 by (4096 − d)/4096 until 0 (None beyond 4097 steps)."""
    x, n = 1 << 23, 0
    while x > 0:
        x = (x * (4096 - d)) >> 12
        n += 1
        if n > 4097 and x > 0:
            return None
    return n


@pytest.mark.parametrize("d,steps", [(2048, 24), (3072, 12), (4095, 2), (11, 3942),
                                     (10, None), (0, None), (1, None)])
def test_steps_to_zero(d, steps):
    # 2048 halves: 2^23 .. 2^0 is 24 values; 3072 quarters: 2^23, 2^21 .. 2^1, 12 steps
    assert _by_hand(d) == steps
    assert build.steps_to_zero(d) == steps


def _lif(du=4095, dv=2048, vth=10, bias_mant=0, bias_exp=0):
    return fixed.LifParams(du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp)


def _net(T=4, delay=3, o_params=None, bias_src=BIAS_SOURCE) -> LoweredNetwork:
    """input (3, graded) -> a (LIF) -> r (shifter relay, >> 2) -> o (LI readout)."""
    groups = {
        "a": NeuronGroup("a", 2, _lif(bias_mant=np.array([5, -7]), bias_exp=1), latency=1),
        "r": NeuronGroup("r", 2, RelayParams(2), latency=2, spiking=False, kind="relay"),
        "o": NeuronGroup("o", 2, o_params or _lif(dv=3072), latency=3, spiking=False),
    }
    syn = [
        SynapseSpec("in->a", "input", "a", np.array([[2, 0, 4], [0, 0, 6]]), -1,
                    num_message_bits=24),
        SynapseSpec("a->r", "a", "r", sp.csr_matrix(np.array([[2, 0], [0, 4]])), 0,
                    delay=delay),
        SynapseSpec("r.unit", BIAS_SOURCE, "r", sp.csr_matrix(np.ones((2, 1), np.int64)), 0,
                    port="a_in2"),
        SynapseSpec("r->o", "r", "o", np.array([[2, 0], [0, 4]]), 1, delay=2,
                    num_message_bits=24),
        SynapseSpec("o.bias", bias_src, "o", np.array([[2], [4]]), 0),
    ]
    return LoweredNetwork(InputSpec("input", 3, 255, T), groups, syn, "o", 1e-3)


def test_drain_is_latency_plus_longest_delay_plus_slowest_decay_plus_one():
    # latency 3, longest delay 3, slowest decay: a (dv 2048) 24 steps, o (3072) 12 -> 31
    assert build.drain_steps(_net()) == 3 + 3 + 24 + 1
    assert build.drain_steps(_net(delay=0)) == 3 + 2 + 24 + 1
    net = _net()
    net.synapses = [s for s in net.synapses if s.dst == "a"]  # no delays left
    assert build.drain_steps(net) == 3 + 0 + 24 + 1


def test_no_drain_where_a_state_never_empties():
    assert build.drain_steps(_net(o_params=_lif(dv=0))) == 0  # v never decays
    assert build.drain_steps(_net(o_params=_lif(du=4094))) == 0  # u remembers
    net = _net()
    net.groups["o"].params = RelayParams(0)  # float/other params on a neuron: reset instead
    net.groups["o"].kind = "lif"
    assert build.drain_steps(net) == 0


def test_relays_alone_drain_after_the_pipeline():
    g = {"r": NeuronGroup("r", 2, RelayParams(0), latency=1, spiking=False, kind="relay")}
    net = LoweredNetwork(InputSpec("i", 2, 255, 3), g,
                         [SynapseSpec("i->r", "i", "r", np.eye(2, dtype=np.int64), 0)],
                         "r", 1e-3)
    assert build.drain_steps(net) == 1 + 0 + 0 + 1


def test_input_schedule_held_and_per_step():
    net = _net(T=2)  # steps per sample: 2 + latency 3 = 5
    x = np.array([[1, 2, 3], [4, 5, 6]])
    got = build.input_schedule(net, x, drain=1)
    assert got.dtype == np.int32 and got.shape == (3, 2 * 6)
    want = np.zeros((3, 12), np.int32)
    want[:, 0] = want[:, 1] = [1, 2, 3]
    want[:, 6] = want[:, 7] = [4, 5, 6]
    np.testing.assert_array_equal(got, want)
    steps = np.arange(12).reshape(2, 2, 3)
    per = build.input_schedule(net, steps)
    assert per.shape == (3, 10)
    np.testing.assert_array_equal(per[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(per[:, 1], [3, 4, 5])
    np.testing.assert_array_equal(per[:, 5], [6, 7, 8])
    np.testing.assert_array_equal(per[:, 6], [9, 10, 11])
    assert not per[:, 2:5].any() and not per[:, 7:].any()
    fl = build.input_schedule(net, x.astype(np.float64) / 2)
    assert fl.dtype == np.float64 and fl[0, 0] == 0.5


@pytest.fixture()
def lava_net():
    net = _net(T=4)
    ln = build.build_lava(net, np.array([[1, 2, 3], [4, 5, 6]]))
    yield net, ln
    ln.close()


def test_block_and_recordings(lava_net):
    net, ln = lava_net
    # block: 4 + latency 3 = 7 steps, drain 31 -> 38; 2 samples -> 76 Lava steps
    assert (ln.steps_per_sample, ln.drain, ln.block_steps) == (7, 31, 38)
    assert ln.folder.is_dir() and str(ln.folder).startswith(("/dev/shm", "/tmp"))
    assert sorted(ln.recorders) == ["a", "r"]  # o (voltage) records itself
    assert ln.recordings["a"].shape == (76, 2) and ln.recordings["a"].dtype == np.bool_
    assert ln.recordings["r"].shape == (76, 2) and ln.recordings["r"].dtype == np.int32
    assert ln.recordings["o"].shape == (76, 2)
    rec = ln.recorders["a"].proc_params
    assert (rec["shape"], rec["steps"], rec["graded"]) == ((2,), 76, False)
    assert rec["path"].endswith("group0.bool")
    assert ln.recorders["r"].proc_params["path"].endswith("group1.int32")
    ln.recordings["a"][38 + 2, 1] = True
    ln.recordings["a"][38 + 7, 0] = True  # past the sample's 7 steps: not returned
    got = ln.sample_spikes("a", 1)
    assert got.shape == (7, 2) and got[2, 1] and got.sum() == 1
    assert len(ln.processes) == 1 + 1 + 3 + 5 + 2
    folder = ln.folder
    ln.close()
    assert not folder.exists() and ln.recordings == {}
    ln.close()  # twice: harmless


def test_sources_hold_the_input_and_the_bias_during_each_sample(lava_net):
    net, ln = lava_net
    data = ln.source.data.init
    np.testing.assert_array_equal(data, build.input_schedule(net, np.array([[1, 2, 3],
                                                                           [4, 5, 6]]), 31))
    assert data[:, 0].tolist() == [1, 2, 3] and data[:, 3].tolist() == [1, 2, 3]
    assert not data[:, 4:38].any() and data[:, 38].tolist() == [4, 5, 6]
    (bias,) = ln.bias
    on = bias.data.init
    want = np.zeros((1, 76), np.int32)
    want[0, 0:7] = want[0, 38:45] = 1
    np.testing.assert_array_equal(on, want)


def test_a_later_bias_copy_starts_late():
    net = _net(T=4, bias_src=ClockSource("bias", 5))
    ln = build.build_lava(net, np.zeros((1, 3), np.int64))
    try:
        assert len(ln.bias) == 2
        later = ln.bias[1].data.init
        assert later.shape == (1, 38)
        assert np.flatnonzero(later[0]).tolist() == list(range(5, 12))
        assert np.flatnonzero(ln.bias[0].data.init[0]).tolist() == list(range(0, 7))
    finally:
        ln.close()


def test_a_phase_source_repeats_the_t_phases_in_every_sample_from_its_lag():
    net = _net(T=3)
    net.phases = np.array([[1, 0], [0, 1], [1, 0]])  # T = 3 steps, P = 2 phases
    net.synapses.append(SynapseSpec("r.gate", ClockSource("phase", 2), "r",
                                    np.eye(2, dtype=np.int64), 0))
    ln = build.build_lava(net, np.zeros((2, 3), np.int64))
    try:
        phase = ln.bias[-1].data.init  # (P, Lava steps): the sources after the bias ones
        assert phase.shape == (2, 2 * ln.block_steps)
        for k in range(2):  # sample k's phases at its block steps 2, 3 and 4
            at = k * ln.block_steps + 2
            assert np.flatnonzero(phase[0]).tolist()[2 * k:2 * k + 2] == [at, at + 2]
            assert np.flatnonzero(phase[1]).tolist()[k] == at + 1
        assert phase.sum() == 2 * 3
    finally:
        ln.close()


@pytest.mark.parametrize("kind", ["network", "streams"])
def test_collected_networks_leave_no_folder_and_no_error(monkeypatch, kind):
    import gc
    import sys

    def make():
        if kind == "network":
            return build.build_lava(_net(T=2), np.zeros((1, 3), np.int64))
        return build.build_streams(_block(), {"tokens": np.zeros((2, 3, 1), np.int64),
                                              "masks": np.ones((2, 3, 1), np.int64)})

    errors = []  # what a failing finalizer reports (Python prints and drops it)
    monkeypatch.setattr(sys, "unraisablehook", errors.append)
    closed = make()
    closed_folder = closed.folder
    closed.close()  # the folder is gone before the finalizer removes it again
    forgotten = make()
    forgotten_folder = forgotten.folder  # never closed: the finalizer removes it
    del closed, forgotten
    gc.collect()
    assert not closed_folder.exists() and not forgotten_folder.exists()
    assert errors == []


def test_recordings_live_in_shared_memory_where_there_is_some():
    folder = build.recording_folder()
    try:
        assert folder.is_dir() and folder.name.startswith("lrfdyn-")
        assert folder.parent == (Path("/dev/shm") if Path("/dev/shm").is_dir()
                                 else Path(build.tempfile.gettempdir()))
    finally:
        folder.rmdir()


def test_neuron_processes(lava_net):
    from lava.proc.lif.process import LIF
    from lava.proc.prodneuron.process import ProdNeuron

    from lrfdyn.loihi.processes.nir_neuron import NirLIF

    net, ln = lava_net
    a, r, o = ln.lifs["a"], ln.lifs["r"], ln.lifs["o"]
    assert type(a) is LIF and isinstance(r, ProdNeuron) and isinstance(o, NirLIF)
    assert (a.du.init, a.dv.init, a.vth.init) == (4095, 2048, 10)
    assert a.bias_mant.init.tolist() == [5, -7] and a.bias_exp.init.tolist() == [1, 1]
    assert a.name == "a"
    assert (r.vth.init, r.exp.init) == (0, 2)
    p = o.proc_params
    assert (p["dv"], p["reset"], p["steps"]) == (3072, "zero", 76)
    assert p["record"] == str(ln.folder / "o.v")


def test_relays_without_shift_are_graded_vectors():
    from lava.proc.graded.process import GradedVec
    from lava.proc.prodneuron.process import ProdNeuron

    g = NeuronGroup("g", 3, RelayParams(0), spiking=False, kind="relay")
    proc = build._neuron_process("g", g, Path("/nonexistent"), 10)
    assert isinstance(proc, GradedVec) and proc.vth.init == 0 and proc.exp.init == 0
    sh = NeuronGroup("s", 3, RelayParams(0, shifter=True), spiking=False, kind="relay")
    p2 = build._neuron_process("s", sh, Path("/nonexistent"), 10)
    assert isinstance(p2, ProdNeuron) and p2.exp.init == 0
    d = NeuronGroup("d", 3, RelayParams(), spiking=False, kind="delay")  # a delay relay: exp 0
    assert isinstance(build._neuron_process("d", d, Path("/nonexistent"), 10), GradedVec)
    assert build.input_port(p2, "a_in") is p2.a_in1
    assert build.input_port(p2, "a_in2") is p2.a_in2
    assert build.input_port(proc, "a_in") is proc.a_in


def test_a_late_resetting_spiking_group_is_nir_lif():
    from lrfdyn.loihi.processes.nir_neuron import NirLIF

    g = NeuronGroup("n", 2, _lif(), reset="subtract_next")
    proc = build._neuron_process("n", g, Path("/x"), 9)
    assert isinstance(proc, NirLIF)
    assert proc.proc_params["reset"] == "subtract_next" and proc.proc_params["record"] == ""


def test_synapse_processes(lava_net):
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.sparse.process import DelaySparse, Sparse

    net, ln = lava_net
    s = ln.synapses
    assert type(s["in->a"]) is Dense and type(s["o.bias"]) is Dense
    assert isinstance(s["a->r"], DelaySparse) and type(s["r.unit"]) is Sparse
    assert isinstance(s["r->o"], DelayDense)
    d = s["in->a"]
    assert d.weights.init.dtype == np.int32
    assert d.weights.init.tolist() == [[2, 0, 4], [0, 0, 6]]
    assert (d.proc_params["weight_exp"], d.proc_params["num_message_bits"]) == (-1, 24)
    assert d.proc_params["name"] == "in->a"
    ds = s["a->r"]
    assert ds.weights.init.toarray().tolist() == [[2, 0], [0, 4]]
    assert ds.delays.init.toarray().tolist() == [[3, 0], [0, 3]]
    assert ds.proc_params["max_delay"] == 3 and ds.proc_params["num_message_bits"] == 0
    dd = s["r->o"]
    assert dd.delays.init.tolist() == [[2, 2], [2, 2]]
    assert (dd.proc_params["weight_exp"], dd.proc_params["num_message_bits"]) == (1, 24)
    assert s["r.unit"].weights.init.toarray().tolist() == [[1], [1]]


def test_float_weights_stay_float_and_a_conv_is_refused_here():
    from lrfdyn.loihi.layers import ConvMap

    s = SynapseSpec("f", "x", "y", np.array([[0.5, -0.25]]), 0)
    proc = build._synapse_process(s)
    assert proc.weights.init.dtype == np.float64 and proc.weights.init.tolist() == [[0.5, -0.25]]
    assert build._lava_dtype(sp.csr_matrix(np.array([[1.5]]))) is np.float64
    assert build._lava_dtype(np.array([[1]])) is np.int32
    k = np.ones((1, 1, 1, 1), np.int64)
    conv = SynapseSpec("c", "x", "y", k, 0, conv=ConvMap(k.astype(float), (1, 2, 2)))
    with pytest.raises(Exception, match="built by connect_synapse"):
        build._synapse_process(conv)


def test_a_rectifying_relay_is_graded_relu():
    from lava.proc.graded.process import GradedReluVec

    g = NeuronGroup("g", 3, RelayParams(rectify=True), spiking=False, kind="relay")
    proc = build._neuron_process("g", g, Path("/nonexistent"), 10)
    # max(v, 0) is v·(v > vth) at vth = 0
    assert isinstance(proc, GradedReluVec) and proc.vth.init == 0 and proc.exp.init == 0


def _block():
    from lrfdyn.loihi.dendritic import DendriticBlock, StreamLayer

    def one(v):
        return sp.csr_matrix(np.array([[v]], np.int64))

    layers = [StreamLayer("t->c", "tokens", "compartments", one(4), 0, graded=False),
              StreamLayer("c->s", "compartments", "soma", one(6), -1, delay=2),
              StreamLayer("s->p", "soma", "prod.c0", one(2), 0, port="a_in1"),
              StreamLayer("m->p", "masks", "prod.c0", one(1), 0, port="a_in2"),
              StreamLayer("p->z", "prod.c0", "z", one(8), 1)]
    return DendriticBlock("blk", "u", "att", d=1, k=1, grid=(1, 2), dv=np.array([2048]),
                          masks={"c0": np.array([True, True])}, relays={}, layers=layers,
                          offsets={"z": 6}, stream_steps=3)


def test_stream_processes():
    from lava.proc.graded.process import GradedVec
    from lava.proc.prodneuron.process import ProdNeuron
    from lava.proc.sparse.process import DelaySparse, Sparse

    from lrfdyn.loihi.processes.compartment import DendriteCompartments

    data = {"tokens": np.arange(6).reshape(2, 3, 1), "masks": np.ones((2, 3, 1), np.int64)}
    st = build.build_streams(_block(), data)
    try:
        n = st.neurons
        assert sorted(n) == ["compartments", "prod.c0", "soma", "z"]
        c = n["compartments"]
        assert isinstance(c, DendriteCompartments)
        # each stream (3 steps) restarts the compartments at its first step
        assert (c.proc_params["reset_interval"], c.proc_params["reset_phase"]) == (3, 1)
        assert c.proc_params["name"] == "blk.compartments"
        assert isinstance(n["prod.c0"], ProdNeuron) and n["prod.c0"].exp.init == 0
        assert n["prod.c0"].vth.init == 0
        for g in ("soma", "z"):
            assert type(n[g]) is GradedVec and n[g].vth.init == 0 and n[g].exp.init == 0
        s = st.synapses
        assert isinstance(s["c->s"], DelaySparse) and type(s["t->c"]) is Sparse
        assert s["c->s"].proc_params["max_delay"] == 2
        assert s["c->s"].proc_params["weight_exp"] == -1
        assert s["c->s"].proc_params["name"] == "blk.c->s"
        assert s["t->c"].proc_params["num_message_bits"] == 0
        assert s["p->z"].proc_params["num_message_bits"] == 24
        assert s["s->p"].a_out.out_connections[0] is n["prod.c0"].a_in1
        assert s["m->p"].a_out.out_connections[0] is n["prod.c0"].a_in2
        assert s["m->p"].s_in.in_connections[0] is st.sources["masks"].s_out
        assert s["c->s"].s_in.in_connections[0] is n["compartments"].s_out
        # sources: 2 streams x 3 steps, laid out (size, steps) as int32
        assert st.sources["tokens"].data.init.tolist() == [[0, 1, 2, 3, 4, 5]]
        assert st.sources["tokens"].data.init.dtype == np.int32
        assert st.runner is st.sources["tokens"]
        for g in n:
            assert st.recordings[g].shape == (6, 1) and st.recordings[g].dtype == np.int32
        folder = st.folder
        assert folder.is_dir()
    finally:
        st.close()
    assert not folder.exists() and st.recordings == {}
    st.close()  # closing twice (or after the finalizer ran) is harmless


def test_groups_after_a_voltage_readout_still_get_recorders():
    groups = {"v": NeuronGroup("v", 2, _lif(), latency=1, spiking=False),
              "a": NeuronGroup("a", 2, _lif(), latency=1)}
    syn = [SynapseSpec("in->v", "input", "v", np.eye(2, dtype=np.int64), 0),
           SynapseSpec("in->a", "input", "a", np.eye(2, dtype=np.int64), 0)]
    net = LoweredNetwork(InputSpec("input", 2, 1, 2), groups, syn, "a", 1e-3)
    ln = build.build_lava(net, np.ones((1, 2), np.int64))
    try:
        assert sorted(ln.recorders) == ["a"] and sorted(ln.recordings) == ["a", "v"]
        assert ln.recorders["a"].proc_params["path"].endswith("group1.bool")
    finally:
        ln.close()


def test_reset_state_zeroes_neurons_and_synapse_buffers_on_a_running_network():
    """The one Lava run here (3 steps of a 2-neuron network): reset_state needs a runtime."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from lrfdyn.loihi.processes import cpu_models
    from lrfdyn.loihi.processes.nir_neuron import NirLIF
    from lrfdyn.sim.lava_run import run_steps, stop

    groups = {"r": NeuronGroup("r", 2, RelayParams(0), latency=1, spiking=False,
                               kind="relay"),  # first: a relay has no state to reset
              "a": NeuronGroup("a", 2, _lif(du=100, dv=0, vth=100000), latency=1),
              "b": NeuronGroup("b", 2, _lif(du=100, dv=0, vth=100000), latency=1,
                               spiking=False)}
    syn = [SynapseSpec("in->r", "input", "r", np.eye(2, dtype=np.int64), 0),
           SynapseSpec("in->a", "input", "a", np.array([[3, 0], [0, 5]]), 0, delay=2),
           SynapseSpec("in->b", "input", "b", np.array([[2, 0], [0, 2]]), 0)]
    net = LoweredNetwork(InputSpec("input", 2, 1, 6), groups, syn, "a", 1e-3)
    ln = build.build_lava(net, np.ones((1, 2), np.int64))
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=cpu_models())
    a, b = ln.lifs["a"], ln.lifs["b"]
    try:
        run_steps(ln.source, 4, cfg, "reset test")
        assert isinstance(b, NirLIF)
        assert np.abs(a.u.get()).sum() > 0 and np.abs(a.v.get()).sum() > 0
        assert np.abs(b.v.get()).sum() > 0
        assert np.abs(ln.synapses["in->a"].a_buff.get()).sum() > 0  # delayed inputs pending
        build.reset_state(ln)
        for lif in (a, b):
            assert not lif.u.get().any() and not lif.v.get().any()
        assert not b.pending.get().any()
        for s in ln.synapses.values():
            assert not s.a_buff.get().any()
    finally:
        stop(ln.source)
        ln.close()


def test_drain_of_a_network_without_synapses():
    # no delays at all: latency 0 + 0 + 24 (dv 2048) + 1
    net = LoweredNetwork(InputSpec("i", 1, 1, 2), {"a": NeuronGroup("a", 1, _lif())}, [],
                         "a", 1e-3)
    assert build.drain_steps(net) == 25
