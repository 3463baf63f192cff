"""Unit tests of sim/per_neuron.py: how a node with per-neuron parameters becomes uniform
sub-populations, with the split graph's nodes worked out by hand and its float semantics
checked equal to the original's (numpy NIR simulation, no Lava).

Under NIR's Euler convention a LIF with τ = k·dt has dv = gain = r/k, du = 1 (Loihi's
du 4095) and dv_int = 4096/k; the sub-populations' shared threshold is the mean θ, and the
``Scale`` in front multiplies neuron j by gain_j·(θ/θ_j)/gain_part.
"""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import pytest

from lrfdyn.loihi.neurons import NIR
from lrfdyn.sim.nir_sim import simulate_nir
from lrfdyn.sim.per_neuron import split_per_neuron

DT = 1e-3
PER_NEURON = dataclasses.replace(NIR, per_neuron=True)
W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
B = np.array([0.1, 0.2, 0.3])


def _lif(tau_steps, v_th, r=1.0) -> nir.LIF:
    n = len(tau_steps)
    return nir.LIF(tau=np.asarray(tau_steps, float) * DT, r=np.full(n, r),
                   v_leak=np.zeros(n), v_threshold=np.asarray(v_th, float),
                   v_reset=np.zeros(n))


def _graph(lif: nir.LIF, *, recurrent: bool = False, self_edge: bool = False) -> nir.NIRGraph:
    """input(2) → aff (W, B) → lif → lin → out → output (+ lif → rec → lif)."""
    n = lif.tau.size
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "aff": nir.Affine(weight=W[:n], bias=B[:n]), "lif": lif,
             "lin": nir.Linear(weight=np.ones((2, n))), "out": _lif([2, 2], [1.0, 1.0]),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "aff"), ("aff", "lif"), ("lif", "lin"), ("lin", "out"),
             ("out", "output")]
    if recurrent:
        nodes["rec"] = nir.Linear(weight=np.array([[0.0, -1.0, 0.5], [0.5, 0.0, 0.0],
                                                   [0.0, 0.7, 0.0]])[:n, :n])
        edges += [("lif", "rec"), ("rec", "lif")]
    if self_edge:
        edges.append(("lif", "lif"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                        metadata={"dt": DT, "timesteps": 8})


def _same_semantics(original: nir.NIRGraph, split: nir.NIRGraph, node: str = "out") -> None:
    x = np.random.default_rng(1).uniform(0.0, 1.5, (3, 8, 2))
    want = simulate_nir(original, x, PER_NEURON)[node]
    got = simulate_nir(split, x, NIR)[node]
    assert want.sum() > 0 and np.array_equal(want, got)


def test_one_weighted_feeder_is_split_into_scaled_rows_per_subpopulation_by_hand():
    g = _graph(_lif([2, 2, 4], [1.0, 2.0, 1.0]))
    out, splits, refused = split_per_neuron(g, NIR, DT)
    assert refused == []
    (s,) = splits
    # dv_int: 2048, 2048, 1024; np.unique orders (4095, 1024) first
    assert s.node == "lif" and s.size == 3 and s.folded
    assert [(name, idx.tolist()) for name, idx in s.parts] == [("lif.p0", [2]),
                                                               ("lif.p1", [0, 1])]
    # θ = mean(1, 2, 1) = 4/3; each part's gain equals its neurons' gains, so the scale is
    # θ/θ_j: [4/3, 2/3, 4/3]. aff feeds lif alone: each part gets its own scaled rows.
    assert not {"lif.fold", "aff", "lif.p0.gather", "lif.p1.gather"} & set(out.nodes)
    p0, p1 = out.nodes["aff.lif.p0"], out.nodes["aff.lif.p1"]
    assert np.allclose(p0.weight, [[20 / 3, 8.0]]) and np.allclose(p0.bias, [0.4])
    assert np.allclose(p1.weight, [[4 / 3, 8 / 3], [2.0, 8 / 3]])
    assert np.allclose(p1.bias, [4 / 3 * 0.1, 2 / 3 * 0.2])
    assert out.nodes["lif.p0"].v_threshold.tolist() == [pytest.approx(4 / 3)]
    assert ("input", "aff.lif.p0") in out.edges and ("aff.lif.p0", "lif.p0") in out.edges
    # and back to lif's neuron order through one scatter per part
    assert np.array_equal(out.nodes["lif.p0.scatter"].weight, np.eye(3)[:, [2]])
    assert ("lif.p1", "lif.p1.scatter") in out.edges and ("lif.p1.scatter", "lin") in out.edges
    _same_semantics(g, out)
    assert s.to_dict() == {"node": "lif", "neurons": 3, "subpopulations": 2,
                           "sizes": [1, 2], "folded_scale": True}


def test_per_neuron_decays_with_one_threshold_need_no_scale():
    g = _graph(_lif([2, 4, 2], [1.0, 1.0, 1.0]))
    out, (s,), refused = split_per_neuron(g, NIR, DT)
    assert refused == [] and not s.folded
    assert [idx.tolist() for _, idx in s.parts] == [[1], [0, 2]]
    # the feeder's rows are split but not scaled
    assert np.array_equal(out.nodes["aff.lif.p1"].weight, W[[0, 2]])
    _same_semantics(g, out)


def test_a_recurrent_layer_with_one_decay_and_per_neuron_thresholds_is_folded_not_refused():
    g = _graph(_lif([3, 3, 3], [0.5, 1.0, 2.0]), recurrent=True)
    out, (s,), refused = split_per_neuron(g, NIR, DT)
    assert refused == [] and s.folded and len(s.parts) == 1
    # one part keeps the node's name; its recurrent input goes through the fold as well
    assert s.parts[0][0] == "lif" and ("rec", "lif.fold") in out.edges
    _same_semantics(g, out)


def test_a_recurrent_layer_with_per_neuron_decays_is_refused_by_name():
    g = _graph(_lif([2, 3, 3], [1.0, 1.0, 1.0]), recurrent=True)
    _, splits, refused = split_per_neuron(g, NIR, DT)
    assert splits == []
    assert refused == ["lif (per-neuron time constants in a recurrent layer: its 2 "
                       "sub-populations would feed each other)"]


def test_a_node_that_feeds_itself_directly_keeps_its_edge_through_the_fold():
    g = _graph(_lif([2, 2, 2], [1.0, 2.0, 1.5]), self_edge=True)
    out, (s,), refused = split_per_neuron(g, NIR, DT)
    assert refused == [] and [p for p, _ in s.parts] == ["lif"]
    assert ("lif", "lif.fold") in out.edges and ("lif.fold", "lif") in out.edges
    _same_semantics(g, out, node="lif")


def test_a_node_whose_feeder_also_feeds_another_node_is_gathered_behind_one_fold():
    """aff feeds lif and, through skip, out: its rows cannot be taken apart."""
    g = _graph(_lif([2, 2, 4], [1.0, 2.0, 1.0]))
    g.nodes["skip"] = nir.Linear(weight=np.full((2, 3), 0.2))
    g.edges += [("aff", "skip"), ("skip", "out")]
    out, (s,), _ = split_per_neuron(g, NIR, DT)
    assert s.folded and "aff" in out.nodes and "aff.lif.p0" not in out.nodes
    assert np.allclose(out.nodes["lif.fold"].scale, [4 / 3, 2 / 3, 4 / 3])
    assert np.array_equal(out.nodes["lif.p0.gather"].weight, np.eye(3)[[2]])
    assert ("aff", "lif.fold") in out.edges and ("lif.fold", "lif.p0.gather") in out.edges
    _same_semantics(g, out)


def test_uniform_nodes_are_left_alone():
    g = _graph(_lif([2, 2, 2], [1.0, 1.0, 1.0]))
    out, splits, refused = split_per_neuron(g, NIR, DT)
    assert splits == [] and refused == [] and set(out.nodes) == set(g.nodes)
