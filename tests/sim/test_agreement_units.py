"""Unit tests of sim/agreement.py: the layer-by-layer agreement of a run with its float
semantics, computed on hand-made arrays and checked against values worked out by hand.

The networks use LIFs whose τ is one step (dt/τ = 1, r = 1, so v(t) = x(t) + v_leak: no
memory), which keeps every expected voltage and spike a one-line computation. No Lava.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from lrfdyn.loihi.fixed import LifParams
from lrfdyn.loihi.ir import InputSpec, LoweredNetwork, NeuronGroup, Units
from lrfdyn.loihi.neurons import NIR
from lrfdyn.sim import agreement as A
from lrfdyn.sim.agreement import Layer
from lrfdyn.sim.per_neuron import Split

DT = 1e-3


def _lif(n: int, v_th: float = 1.0, v_leak: float = 0.0) -> nir.LIF:
    """τ = dt: v(t) = x(t) + v_leak, a spike where v > v_th."""
    return nir.LIF(tau=np.full(n, DT), r=np.ones(n), v_leak=np.full(n, v_leak),
                   v_threshold=np.full(n, v_th), v_reset=np.zeros(n))


def _graph(nodes: dict, edges: list, n_in: int, t: int = 4) -> nir.NIRGraph:
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), **nodes}
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": DT, "timesteps": t, "input_levels": 255})


# ---------------------------------------------------------------- agreement()


def test_spiking_rows_count_equal_steps_and_spikes_over_the_input_steps_only():
    # t_in = 2 of the 3 recorded steps: the third is outside the window.
    got = {"a": Layer(np.array([[[1, 0], [0, 0]]], bool), True, (2,), False)}
    semantics = {"a": np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])}
    loihi = {"a": np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])}
    (row,) = A.agreement(got, semantics, loihi, t_in=2)
    # 3 of the 4 (neuron, step) equal the semantics; all 4 equal the Loihi-reset model.
    assert row == {"name": "a", "neurons": 2, "spikes_float": 2, "spikes_lava": 1,
                   "agreement": 0.75, "agreement_loihi_reset": 1.0}
    (only,) = A.agreement(got, semantics, None, t_in=2)
    assert "agreement_loihi_reset" not in only and only["agreement"] == 0.75


def test_float_voltages_agree_within_the_relative_tolerance_and_report_the_largest_error():
    values = np.array([[[1.0, 2.0, 3.0]]])
    want = np.array([[[1.0, 2.0 + 1e-12, 3.5]]])  # 1e-12 is inside VOLTAGE_RTOL, 0.5 is not
    loihi = np.array([[[1.0, 2.0, 2.0]]])  # off by 1.0 at the last neuron
    got = {"v": Layer(values, False, (3,), False)}
    (row,) = A.agreement(got, {"v": want}, {"v": loihi}, t_in=1)
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["agreement_loihi_reset"] == pytest.approx(2 / 3)
    # the error against the semantics (not against the Loihi-reset model, 1.0)
    assert row["max_abs_error"] == pytest.approx(0.5)
    assert row["spikes_float"] == 0 and row["spikes_lava"] == 0


def test_integer_voltages_agree_within_one_percent_of_the_layers_peak():
    want = np.array([[[100.0, 50.0, -20.0]]])  # peak |v| 100: tolerance 1.0
    values = np.array([[[100.5, 52.0, -19.2]]])  # errors 0.5, 2.0, 0.8
    (row,) = A.agreement({"v": Layer(values, False, (3,), True)}, {"v": want}, None, 1)
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["max_abs_error"] == pytest.approx(2.0)
    # a layer whose peak is below 1: the tolerance is 1 % of that peak, 0.005
    small = np.array([[[0.5, 0.2, 0.1]]])
    (row,) = A.agreement({"v": Layer(small + [0.0, 0.004, 0.006], False, (3,), True)},
                         {"v": small}, None, 1)
    assert row["agreement"] == pytest.approx(2 / 3)
    # the same numbers as float voltages: none is within 1e-9
    (row,) = A.agreement({"v": Layer(values, False, (3,), False)}, {"v": want}, None, 1)
    assert row["agreement"] == 0.0


# ---------------------------------------------------------------- the float model, driven


def _driven_graph() -> nir.NIRGraph:
    """input(2) → a (W, b) → l, input → d (1 step) → c (V) → l, and l → r (R) → l."""
    W, b = np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([0.5, -0.5])
    V, R = np.array([[0.0, 10.0], [1.0, 0.0]]), np.array([[0.0, 100.0], [0.0, 0.0]])
    nodes = {"a": nir.Affine(weight=W, bias=b), "d": nir.Delay(delay=np.full(2, DT)),
             "c": nir.Linear(weight=V), "r": nir.Linear(weight=R), "l": _lif(2, v_th=2.0),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "l"), ("input", "d"), ("d", "c"), ("c", "l"),
             ("l", "r"), ("r", "l"), ("l", "output")]
    return _graph(nodes, edges, 2)


XS = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])  # (B=1, T=4, 2)
SENT = np.array([[[0, 1], [1, 1], [0, 0], [1, 0]]], bool)  # what "Lava" sent for l


def _by_hand() -> np.ndarray:
    """Σ W·x(t) + b + V·x(t−1) + R·s(t−1) at t = 0..3, worked out term by term."""
    wx = [[1, 0], [2, 1], [3, 1], [0, 0]]  # W·x(t)
    vx = [[0, 0], [0, 1], [10, 0], [10, 1]]  # V·x(t−1), zero at t = 0
    rs = [[0, 0], [100, 0], [100, 0], [0, 0]]  # R·s(t−1): s(0) = [0, 1], s(1) = [1, 1]
    return np.array([[[wx[t][j] + vx[t][j] + rs[t][j] + (0.5, -0.5)[j] for j in (0, 1)]
                      for t in range(4)]])


def test_the_driven_input_sums_every_tap_at_its_lag_and_a_recurrent_edge_a_step_late():
    from lrfdyn.loihi.wiring import wire

    w = wire(_driven_graph(), NIR, timesteps=4, shared=False)
    (plan,) = w.groups
    total = A._driven_input(plan, w, XS, {"l": SENT.astype(float)}, 4)
    assert np.allclose(total, _by_hand())
    # fewer steps: the same sums, cut
    assert np.allclose(A._driven_input(plan, w, XS, {"l": SENT.astype(float)}, 2),
                       _by_hand()[:, :2])


def test_local_agreement_compares_each_layer_with_its_float_model_driven_by_lava():
    # v = the driven input (τ = dt); a spike where v > 2:
    # t0 [1.5, -0.5] → [0, 0]; t1 [102.5, 1.5] → [1, 0]; t2 [113.5, 0.5] → [1, 0];
    # t3 [10.5, 0.5] → [1, 0]
    want = _by_hand() > 2.0
    assert want.astype(int).tolist() == [[[0, 0], [1, 0], [1, 0], [1, 0]]]
    got = {"l": Layer(SENT, True, (2,), False)}
    # SENT = [0 1], [1 1], [0 0], [1 0]: equal at t0 n0, t1 n0, t2 n1, t3 n0, t3 n1: 5 of 8
    assert A.local_agreement(_driven_graph(), NIR, got, XS, 4) == {"l": 0.625}


def test_local_agreement_reads_voltages_and_drives_each_layer_by_the_recorded_spikes():
    nodes = {"a": nir.Linear(weight=np.array([[1.0]])), "l1": _lif(1, v_th=0.5),
             "b": nir.Linear(weight=np.array([[3.0]])),
             "l2": nir.LI(tau=np.full(1, DT), r=np.ones(1), v_leak=np.zeros(1)),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "l1"), ("l1", "b"), ("b", "l2"), ("l2", "output")]
    g = _graph(nodes, edges, 1, t=3)
    xs = np.array([[[1.0], [0.0], [1.0]]])
    s1 = np.array([[[1.0], [1.0], [0.0]]])  # what Lava sent for l1
    # l2 (an LI with τ = dt) reads 3·s1(t), the recorded spikes: its v is [3, 3, 0];
    # 2.0 is off by 1, more than 1 % of the peak 3
    v2 = np.array([[[3.0], [2.0], [0.0]]])
    out = A.local_agreement(g, NIR, {"l1": Layer(s1, True, (1,), False),
                                     "l2": Layer(v2, False, (1,), True)}, xs, 3)
    # l1 driven by x: v = [1, 0, 1] > 0.5 → [1, 0, 1]; Lava's [1, 1, 0] agrees at t0 only
    assert out == {"l1": pytest.approx(1 / 3), "l2": pytest.approx(2 / 3)}


def test_local_agreement_scores_only_the_layers_it_is_given_in_any_order():
    """l1 (first in the lowering's order) and l2 read the input, l3 reads both; only l2
    is given, so l1 and l3 (which would need l1's spikes) are skipped."""
    nodes = {"a": nir.Linear(weight=np.array([[1.0]])), "l1": _lif(1, v_th=0.5),
             "b": nir.Linear(weight=np.array([[3.0]])), "l2": _lif(1, v_th=2.0),
             "c": nir.Linear(weight=np.array([[1.0]])), "e": nir.Linear(weight=np.array([[1.0]])),
             "l3": _lif(1), "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "l1"), ("input", "b"), ("b", "l2"), ("l1", "c"),
             ("c", "l3"), ("l2", "e"), ("e", "l3"), ("l3", "output")]
    g = _graph(nodes, edges, 1, t=2)
    xs = np.array([[[1.0], [0.0]]])
    # l2 driven by 3·x = [3, 0] > 2 → [1, 0]: Lava's [1, 1] agrees at t0 only
    got = {"l2": Layer(np.array([[[True], [True]]]), True, (1,), False)}
    assert A.local_agreement(g, NIR, got, xs, 2) == {"l2": 0.5}


# ---------------------------------------------------------------- state_peaks


def test_state_peaks_of_a_spiking_layer_need_room_only_where_a_clip_could_matter():
    nodes = {"a": nir.Linear(weight=np.array([[1.0]])), "l": _lif(1, v_th=1.0),
             "output": nir.Output(output_type={"output": np.array([1])})}
    g = _graph(nodes, [("input", "a"), ("a", "l"), ("l", "output")], 1)
    xs = np.array([[[-3.0], [0.5], [-1.0], [0.8]]])  # v = x: no spike, v ≤ 1
    # later max of v from t on: [0.8]*4; rise(t) = max(v[t+1:]) − v(t) = [3.8, 0.3, 1.8, −∞];
    # need = min(−v, rise − θ) = [2.8, −0.7, 0.8, −∞] → 2.8; |i| peaks at 3
    (i_peak, v_peak), = A.state_peaks(g, NIR, xs).values()
    assert i_peak == pytest.approx(3.0) and v_peak == pytest.approx(2.8)


def test_state_peaks_of_a_voltage_readout_are_its_largest_voltage():
    nodes = {"a": nir.Linear(weight=np.array([[2.0], [-1.0]])),
             "l": nir.LI(tau=np.full(2, DT), r=np.ones(2), v_leak=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    g = _graph(nodes, [("input", "a"), ("a", "l"), ("l", "output")], 1, t=3)
    xs = np.array([[[1.0], [-4.0], [0.5]]])  # v = [2x, −x]: |v| peaks at 8 (t1, neuron 0)
    assert A.state_peaks(g, NIR, xs) == {"l": (pytest.approx(8.0), pytest.approx(8.0))}


def test_state_peaks_run_the_loihi_reset_model_of_a_subtracting_producer():
    """Under a subtracting convention the peaks come from the model that resets to zero
    (as Loihi does): the second spike of a held input is at v = x, not at x − θ."""
    import dataclasses

    nodes = {"a": nir.Linear(weight=np.array([[1.0]])),
             "l": nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1)),
             "output": nir.Output(output_type={"output": np.array([1])})}
    g = _graph(nodes, [("input", "a"), ("a", "l"), ("l", "output")], 1, t=3)
    sub = dataclasses.replace(NIR, reset="subtract", if_ignores_dt=True)
    xs = np.array([[[-2.0], [0.9], [0.0]]])  # IF: v = Σ x = [−2, −1.1, −1.1], no spike
    # rise = [−1.1 + 2, −1.1 + 1.1, −∞] = [0.9, 0, −∞];
    # need = [min(2, −0.1), min(1.1, −1), −∞] → 0
    assert A.state_peaks(g, sub, xs) == {"l": (pytest.approx(2.0), 0.0)}


# ---------------------------------------------------------------- putting Lava's groups back


def _net(groups: dict[str, NeuronGroup]) -> LoweredNetwork:
    return LoweredNetwork(input=InputSpec("input", 1, 1, 2), groups=groups, synapses=[],
                          output=list(groups)[-1], dt=DT)


def test_by_node_cuts_the_input_window_after_each_latency_and_gathers_subpopulations():
    p = LifParams(du=4095, dv=4095, vth=10)
    groups = {"x.p0": NeuronGroup("x.p0", 2, p, latency=1),
              "x.p1": NeuronGroup("x.p1", 1, p, latency=1),
              "v": NeuronGroup("v", 1, p, latency=2, spiking=False, units=Units(4.0))}
    lava = {"x.p0": np.array([[[0, 0], [1, 0], [0, 1], [1, 1]]]),
            "x.p1": np.array([[[0], [1], [1], [0]]]),
            "v": np.array([[[0], [0], [8], [-2]]])}
    split = Split("x", 3, [("x.p0", np.array([0, 2])), ("x.p1", np.array([1]))], False)
    semantics = {"x": None, "v": None}
    out = A.by_node(_net(groups), lava, [split], semantics, t_in=2)
    assert set(out) == {"x", "v"}
    # x: steps 1..2 of each part, neurons put back at 0, 2 (p0) and 1 (p1)
    assert out["x"].values.tolist() == [[[True, True, False], [False, True, True]]]
    assert out["x"].spiking and out["x"].shape == (3,)
    # v: steps 2..3, an integer voltage back in float units (÷ Λ = 4)
    assert out["v"].values.tolist() == [[[2.0], [-0.5]]] and out["v"].integer
    assert A.original_node("x.p1", [split]) == "x" and A.original_node("v", [split]) == "v"


def test_voltages_within_the_tolerance_are_snapped_to_the_expected_after_the_latency():
    p = LifParams(du=4095, dv=4095, vth=10)
    groups = {"s": NeuronGroup("s", 1, p), "v": NeuronGroup("v", 2, p, latency=1,
                                                           spiking=False)}
    lava = {"s": np.array([[[1], [0], [1]]]),
            "v": np.array([[[5.0, 5.0], [1.0 + 1e-12, 2.0], [3.0, 4.0 + 1e-3]]])}
    expected = {"v": np.array([[[1.0, 9.0], [3.0, 4.0], [7.0, 7.0]]])}
    out = A.voltages_within_tolerance(lava, expected, _net(groups))
    assert out["s"] is lava["s"]  # spikes untouched
    # before the latency untouched; then 1 + 1e-12 → 1 and 3 → 3 (equal); 2 and 4.001 stay
    assert out["v"].tolist() == [[[5.0, 5.0], [1.0, 2.0], [3.0, 4.0 + 1e-3]]]
    assert lava["v"][0, 1, 0] == 1.0 + 1e-12  # the input is not changed in place


def test_a_fed_spiking_layer_that_never_spiked_is_named_and_a_quiet_one_is_not():
    nodes = {"a": nir.Linear(weight=np.array([[1.0]])), "l": _lif(1, v_th=5.0),
             "b": nir.Linear(weight=np.array([[1.0]])), "m": _lif(1, v_th=0.5),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a"), ("a", "l"), ("l", "b"), ("b", "m"), ("m", "output")]
    g = _graph(nodes, edges, 1, t=2)
    silent = Layer(np.zeros((1, 2, 1), bool), True, (1,), False)
    xs = np.array([[[1.0], [0.0]]])
    msgs = A.silent_layers(g, NIR, {"l": silent, "m": silent}, xs, 2)
    # l is fed by one non-zero input value; m is fed by l, which sent nothing
    assert msgs == ["l never spiked in 2 steps although its input carried 1 non-zero "
                    "values; the run may be wrong (check --convention and --dt)"]
    assert A.silent_layers(g, NIR, {"l": silent, "m": silent}, np.zeros((1, 2, 1)), 2) == []


def test_state_peaks_below_one_are_the_peaks_themselves():
    nodes = {"a": nir.Linear(weight=np.array([[1.0]])), "l": _lif(1, v_th=1.0),
             "output": nir.Output(output_type={"output": np.array([1])})}
    g = _graph(nodes, [("input", "a"), ("a", "l"), ("l", "output")], 1, t=2)
    # i = x: its peak is 0.25; v = x stays below θ and never falls: no room needed below
    (i_peak, v_peak), = A.state_peaks(g, NIR, np.array([[[0.25], [0.1]]])).values()
    assert i_peak == pytest.approx(0.25) and v_peak == 0.0
