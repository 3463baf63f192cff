"""Hand-built NIR graphs through every primitive, on real Lava, in both modes.

Three small graphs together hold every NIR primitive lrfdyn lowers, a recurrent
edge and a subgraph. ``--float`` must equal the numpy NIR simulation at every
neuron and step of every layer; ``--fixed`` must equal the integer reference
exactly and report its agreement with the float semantics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import nir
import numpy as np
import pytest

from lrfdyn.cli import main
from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi.lower import lower
from lrfdyn.loihi.wiring import supported_types
from lrfdyn.loihi.neurons import NIR
from lrfdyn.sim.interop import run_graph

DT = 1e-3
T = 12


def _full(shape, value: float) -> np.ndarray:
    return np.full(shape, value, np.float64)


def _lif(shape, tau_steps: float = 2.0, theta: float = 1.0) -> nir.LIF:
    return nir.LIF(tau=_full(shape, tau_steps * DT), r=_full(shape, 1.0),
                   v_leak=_full(shape, 0.0), v_threshold=_full(shape, theta),
                   v_reset=_full(shape, 0.0))


def _graph(nodes: dict, edges: list, in_shape, out_shape) -> nir.NIRGraph:
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), **nodes,
             "output": nir.Output(output_type={"output": np.array(out_shape)})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


def conv_graph(rng: np.random.Generator) -> nir.NIRGraph:
    """Conv2d (groups 2, padding) → LIF → SumPool2d → IF → AvgPool2d → Flatten → Scale →
    Linear → Threshold."""
    nodes = {
        "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0.4, 0.5, (4, 1, 3, 3)),
                           bias=_full(4, 0.1), stride=1, padding=1, dilation=1, groups=2),
        "lif": _lif((4, 6, 6)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])),
        "if": nir.IF(r=_full((4, 3, 3), 300.0), v_threshold=_full((4, 3, 3), 1.0),
                     v_reset=_full((4, 3, 3), 0.0)),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                             padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}),
        "scale": nir.Scale(scale=rng.uniform(0.5, 1.5, 16)),
        "lin": nir.Linear(weight=rng.normal(0.3, 0.6, (10, 16))),
        "thr": nir.Threshold(threshold=_full(10, 0.4)),
    }
    seq = ["input", *nodes, "output"]
    return _graph(nodes, list(zip(seq, seq[1:])), (2, 6, 6), (10,))


def time_graph(rng: np.random.Generator, readout: str) -> nir.NIRGraph:
    """Conv1d → CubaLIF → Delay (1 and 3 steps) → Affine → a LI or CubaLI readout."""
    n = 18
    last = {
        "li": lambda: nir.LI(tau=_full(4, 3 * DT), r=_full(4, 1.0), v_leak=_full(4, 0.0)),
        "cubali": lambda: nir.CubaLI(tau_syn=_full(4, 2 * DT), tau_mem=_full(4, 4 * DT),
                                     r=_full(4, 1.0), v_leak=_full(4, 0.0), w_in=_full(4, 2.0)),
    }[readout]()
    nodes = {
        "conv": nir.Conv1d(input_shape=8, weight=rng.normal(0.5, 0.5, (3, 2, 3)),
                           bias=_full(3, 0.0), stride=1, padding=1, dilation=2, groups=1),
        "cuba": nir.CubaLIF(tau_syn=_full((3, 6), 2 * DT), tau_mem=_full((3, 6), 3 * DT),
                            r=_full((3, 6), 1.5), v_leak=_full((3, 6), 0.0),
                            v_threshold=_full((3, 6), 0.3), v_reset=_full((3, 6), 0.0),
                            w_in=_full((3, 6), 1.0)),
        "delay": nir.Delay(delay=np.where(np.arange(n) % 2, 3 * DT, DT)),
        "aff": nir.Affine(weight=rng.normal(0.4, 0.5, (4, n)), bias=_full(4, 0.05)),
        "out": last,
    }
    seq = ["input", *nodes, "output"]
    return _graph(nodes, list(zip(seq, seq[1:])), (2, 8), (4,))


def sub_graph(rng: np.random.Generator, readout: str) -> nir.NIRGraph:
    """A subgraph holding a LIF that feeds itself, then Linear → Integrator (or LIF)."""
    inner = _graph({"aff": nir.Affine(weight=rng.normal(0.5, 0.8, (5, 3)), bias=_full(5, 0.1)),
                    "lif": _lif(5, theta=0.6),
                    "rec": nir.Linear(weight=rng.normal(0.0, 0.8, (5, 5)))},
                   [("input", "aff"), ("aff", "lif"), ("lif", "rec"), ("rec", "lif"),
                    ("lif", "output")], (3,), (5,))
    last = nir.I(r=_full(3, 200.0)) if readout == "i" else _lif(3, theta=0.5)
    return _graph({"block": inner, "lin": nir.Linear(weight=rng.normal(0.5, 0.5, (3, 5))),
                   "out": last},
                  [("input", "block"), ("block", "lin"), ("lin", "out"), ("out", "output")],
                  (3,), (3,))


def cnn_pool_graph(rng: np.random.Generator) -> nir.NIRGraph:
    """Conv2d → LIF → AvgPool2d → Conv2d (padded) → IF → SumPool2d → Flatten → Affine →
    CubaLIF: snnTorch's and Sinabs' exported CNNs. The padded conv cannot compose with
    the pooling before it, so both lowerings keep that pooling as a relay group."""
    nodes = {
        "conv1": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.0, 0.4, (4, 2, 3, 3)),
                            bias=_full(4, 0.1), stride=1, padding=1, dilation=1, groups=1),
        "lif": _lif((4, 8, 8), tau_steps=3.0, theta=0.5),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0.0, 0.5, (4, 4, 3, 3)),
                            bias=_full(4, 0.0), stride=1, padding=1, dilation=1, groups=1),
        "if": nir.IF(r=_full((4, 4, 4), 400.0), v_threshold=_full((4, 4, 4), 1.0),
                     v_reset=_full((4, 4, 4), 0.0)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}),
        "aff": nir.Affine(weight=rng.normal(0.0, 0.5, (5, 16)), bias=_full(5, 0.05)),
        "cuba": nir.CubaLIF(tau_syn=_full(5, 2 * DT), tau_mem=_full(5, 4 * DT),
                            r=_full(5, 2.0), v_leak=_full(5, 0.0), v_threshold=_full(5, 0.3),
                            v_reset=_full(5, 0.0), w_in=_full(5, 1.5)),
    }
    seq = ["input", *nodes, "output"]
    return _graph(nodes, list(zip(seq, seq[1:])), (2, 8, 8), (5,))


@dataclass
class Case:
    graph: nir.NIRGraph
    x: np.ndarray  # (T, B, …)


def _spikes(rng: np.random.Generator, shape) -> np.ndarray:
    return (rng.random((T, 2) + tuple(shape)) < 0.5).astype(np.float64)


def _cases() -> dict[str, Case]:
    rng = np.random.default_rng(7)
    return {
        "conv": Case(conv_graph(rng), _spikes(rng, (2, 6, 6))),
        "time-li": Case(time_graph(rng, "li"), _spikes(rng, (2, 8))),
        "time-cubali": Case(time_graph(rng, "cubali"), _spikes(rng, (2, 8))),
        "sub-i": Case(sub_graph(rng, "i"), _spikes(rng, (3,))),
        "sub-lif": Case(sub_graph(rng, "lif"), _spikes(rng, (3,))),
        "cnn-pool": Case(cnn_pool_graph(rng), _spikes(rng, (2, 8, 8))),
    }


CASES = _cases()
FLOAT_CASES = ["conv", "time-li", "time-cubali", "sub-i", "cnn-pool"]
FIXED_CASES = ["conv", "time-li", "sub-i", "cnn-pool"]


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], tuple]:
    """Each case run once per mode on Lava (the slow part), shared by the tests below."""
    out = {}
    for mode, names in (("float", FLOAT_CASES), ("fixed", FIXED_CASES)):
        for name in names:
            out[(mode, name)] = run_graph(CASES[name].graph, CASES[name].x, mode=mode,
                                          conv=NIR)
    return out


def test_the_graphs_hold_every_primitive_a_loop_and_a_subgraph() -> None:
    seen = set()
    for case in CASES.values():
        for node in case.graph.nodes.values():
            seen.add(type(node).__name__)
            if isinstance(node, nir.NIRGraph):
                seen |= {type(n).__name__ for n in node.nodes.values()}
    assert set(supported_types()) <= seen and "NIRGraph" in seen
    assert ("lif", "rec") in CASES["sub-lif"].graph.nodes["block"].edges


@pytest.mark.parametrize("name", FLOAT_CASES)
def test_float_lava_equals_the_nir_semantics_everywhere(runs, name: str) -> None:
    y, report = runs[("float", name)]
    assert report.mismatches == 0, report.first_mismatch
    assert y.shape[:2] == (T, 2)
    # Not vacuous: every spiking layer spiked, and the voltage readout moved.
    assert all(layer["spikes_lava"] > 0 for layer in report.layers
               if layer["name"] != report.output_node), report.layers
    assert np.abs(y).sum() > 0


@pytest.mark.parametrize("name", FIXED_CASES)
def test_fixed_lava_equals_the_integer_reference_and_reports_agreement(runs, name) -> None:
    y, report = runs[("fixed", name)]
    assert report.mismatches == 0, report.first_mismatch
    assert y.shape[:2] == (T, 2) and np.abs(y).sum() > 0
    assert 0.8 <= report.output_agreement <= 1.0, report.layers
    rows = {q["synapse"] for q in report.quantization}
    assert all({"weight_exp", "clipped", "scale", "vth"} <= set(q) for q in report.quantization)
    if name == "time-li":  # the two lags of the Delay are two synapses with their own delays
        assert {"cuba->out@1", "cuba->out@3"} <= rows
    if name == "sub-i":
        assert "block.lif->block.lif" in rows


def test_a_cnn_whose_pooling_is_a_relay_runs_in_both_modes(runs) -> None:
    """Issue 26: a relay group (a pooling kept as graded neurons) was stepped as a neuron
    by the float semantics, and both modes crashed. Lava float = the NIR semantics and
    Lava fixed_pt = the integer reference at every neuron and step; the relay is only
    the lowering's, so the report lists the graph's neuron nodes alone."""
    from lrfdyn.loihi.wiring import wire

    graph = CASES["cnn-pool"].graph
    assert [p.name for p in wire(graph, NIR, timesteps=T).groups if p.dynamics is None] == \
        ["avg"]
    assert "avg" in {name for name, g in lower(graph, timesteps=T).groups.items()
                     if g.kind == "relay"}
    for mode in ("float", "fixed"):
        _, report = runs[(mode, "cnn-pool")]
        assert report.mismatches == 0, report.first_mismatch
        assert [row["name"] for row in report.layers] == ["lif", "if", "cuba"]
        assert all(row["spikes_float"] > 0 for row in report.layers), report.layers
    assert runs[("float", "cnn-pool")][1].output_agreement == 1.0


def test_output_step_t_answers_input_step_t(runs) -> None:
    """The output is the Output node's spikes with Lava's pipeline latency removed."""
    from lrfdyn.sim.nir_sim import simulate_nir

    case = CASES["conv"]
    y, report = runs[("float", "conv")]
    x = case.x.reshape(T, 2, -1).transpose(1, 0, 2)
    want = simulate_nir(case.graph, x)["thr"].transpose(1, 0, 2)
    assert report.latency_removed == 3  # three neuron groups, one synapse each
    np.testing.assert_array_equal(y, want.astype(bool))


def test_unsupported_nodes_are_listed_all_at_once() -> None:
    @dataclass(eq=False)
    class Product(nir.NIRNode):
        pass

    @dataclass(eq=False)
    class Softmax(nir.NIRNode):
        pass

    g = sub_graph(np.random.default_rng(0), "lif")
    g.nodes["p1"], g.nodes["p2"], g.nodes["s"] = Product(), Product(), Softmax()
    g.edges += [("lin", "p1"), ("p1", "p2"), ("p2", "s")]
    with pytest.raises(UnsupportedNodeError,
                       match=r"Product \(p1\), Product \(p2\), Softmax \(s\); lrfdyn lowers"):
        lower(g, timesteps=T)


def test_a_loop_through_two_groups_is_refused() -> None:
    g = sub_graph(np.random.default_rng(0), "lif")
    g.nodes["back"] = nir.Linear(weight=np.ones((3, 3)))
    g.edges += [("out", "back"), ("back", "block")]
    with pytest.raises(UnsupportedNodeError, match="several neuron groups"):
        lower(g, timesteps=T)


def test_fixed_input_must_be_integers_and_shapes_must_fit() -> None:
    case = CASES["sub-lif"]
    with pytest.raises(ValidationError, match="--fixed needs integer input"):
        run_graph(case.graph, case.x * 0.5, mode="fixed", conv=NIR)
    with pytest.raises(ValidationError, match=r"input has shape \(12, 4\), but the graph's "
                       r"Input is \(3,\); give \(T, 3\) or \(T, B, 3\)"):
        run_graph(case.graph, np.zeros((T, 4)), mode="float", conv=NIR)


def test_cli_runs_a_graph_on_an_array_and_writes_the_output(tmp_path, capsys) -> None:
    case = CASES["sub-lif"]
    nir.write(tmp_path / "g.nir", case.graph)
    np.save(tmp_path / "x.npy", case.x[:, 0])  # unbatched (T, 3)
    code = main(["simulate", str(tmp_path / "g.nir"), "--float", "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["mismatches"] == 0 and report["latency_removed"] == 2
    assert np.load(tmp_path / "y.npy").shape == (T, 3)
    assert main(["simulate", str(tmp_path / "g.nir"), "--fixed"]) == 2
    assert "needs both --float or --fixed and --input" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 16: breadth


def test_input_shapes_as_users_hold_them_for_a_single_channel_image() -> None:
    from lrfdyn.sim.interop import input_batch

    t, b = 3, 2
    for x, batched in [(np.zeros((t, 1, 4, 5)), False), (np.zeros((t, b, 1, 4, 5)), True),
                       (np.zeros((t, 4, 5)), False), (np.zeros((t, b, 4, 5)), True)]:
        xs, got = input_batch((1, 4, 5), x)
        assert got == batched and xs.shape == ((b if batched else 1), t, 20), x.shape
    xs, got = input_batch((1, 6), np.zeros((t, b, 6)))  # Norse's (1, n) Input type
    assert got and xs.shape == (b, t, 6)
    with pytest.raises(ValidationError) as err:
        input_batch((1, 4, 5), np.zeros((t, b, 3, 4, 5)))
    assert str(err.value) == (
        "input has shape (3, 2, 3, 4, 5), but the graph's Input is (1, 4, 5); give "
        "(T, 1, 4, 5) or (T, B, 1, 4, 5) or (T, 4, 5) or (T, B, 4, 5) (T steps, B samples)")


def _one_layer(node: nir.NIRNode, n_in: int, n: int, dt: float | None = DT) -> nir.NIRGraph:
    rng = np.random.default_rng(3)
    g = _graph({"lin": nir.Linear(weight=rng.uniform(0.2, 1.0, (n, n_in))), "out": node},
               [("input", "lin"), ("lin", "out"), ("out", "output")], (n_in,), (n,))
    if dt is None:
        del g.metadata["dt"]
    return g


def test_a_run_that_never_spikes_is_flagged_with_the_assumed_dt(capsys) -> None:
    """A Sinabs-style IF (v += x, dt = 1) read with NIR's default 1 ms step: no spike."""
    n = 3
    graph = _one_layer(nir.IF(r=np.ones(n), v_threshold=np.ones(n)), 4, n, dt=None)
    x = (np.random.default_rng(0).random((T, 4)) < 0.6).astype(float)
    _, report = run_graph(graph, x, mode="float", conv=NIR)
    assert report.mismatches == 0 and report.dt_source.startswith("assumed")
    assert any("assumed dt = 0.001 s" in w for w in report.warnings), report.warnings
    assert any(w.startswith("out never spiked") and "--convention" in w
               for w in report.warnings), report.warnings
    err = capsys.readouterr().err
    assert err.count("lrfdyn: warning:") == 2 and "never spiked" in err
    assert "WARNING: out never spiked" in report.summary()
    # With the producer's step the same graph spikes and nothing is flagged.
    _, ok = run_graph(graph, x, mode="float", conv=NIR, dt=1.0)
    assert ok.warnings == [] and ok.dt_source == "--dt" and ok.layers[0]["spikes_lava"] > 0


def test_time_constants_absurd_for_dt_are_named_with_the_options() -> None:
    from lrfdyn.sim.nir_input import time_constant_warnings

    n = 2
    slow = nir.LIF(tau=np.full(n, 20.0), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n), v_reset=np.zeros(n))
    (w,) = time_constant_warnings(_one_layer(slow, 3, n), NIR, DT)
    assert w.startswith("out: tau/dt = 2e+04") and "--convention and --dt" in w
    assert time_constant_warnings(_one_layer(_lif(n), 3, n), NIR, DT) == []


def test_every_offending_node_is_named_in_one_refusal() -> None:
    from lrfdyn.sim.interop import check_graph

    n = 3
    bad_reset = nir.LIF(tau=np.full(n, 2 * DT), r=np.ones(n), v_leak=np.zeros(n),
                        v_threshold=np.ones(n), v_reset=np.full(n, 0.5))
    bad_leak = nir.CubaLIF(tau_syn=np.full(n, 2 * DT), tau_mem=np.full(n, 3 * DT),
                           r=np.ones(n), v_leak=np.full(n, 0.1), v_threshold=np.ones(n),
                           v_reset=np.zeros(n), w_in=np.ones(n))
    bad_if = nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.ones(n))
    nodes = {"a": nir.Linear(weight=np.ones((n, 2))), "l1": bad_reset,
             "b": nir.Linear(weight=np.ones((n, n))), "l2": bad_leak,
             "c": nir.Linear(weight=np.ones((n, n))), "l3": bad_if}
    seq = ["input", *nodes, "output"]
    g = _graph(nodes, list(zip(seq, seq[1:])), (2,), (n,))
    for mode in ("float", "fixed"):
        with pytest.raises(UnsupportedNodeError) as err:
            check_graph(g, NIR, DT, mode)
        msg = str(err.value)
        assert msg.startswith("3 node(s) cannot be lowered: l1: v_reset != 0")
        assert "; l2: v_leak != 0 in a current-based neuron" in msg and "; l3: v_reset" in msg


def _per_neuron_graph(recurrent: bool = False) -> nir.NIRGraph:
    """Affine → LIF with its own τ, threshold, r and v_leak per neuron → Linear → LIF."""
    rng = np.random.default_rng(5)
    n, m = 6, 3
    lif = nir.LIF(tau=np.array([2, 2, 3, 5, 5, 8.0]) * DT, r=rng.uniform(0.8, 1.5, n),
                  v_leak=rng.uniform(0.0, 0.3, n), v_threshold=rng.uniform(0.5, 1.2, n),
                  v_reset=np.zeros(n))
    nodes = {"aff": nir.Affine(weight=rng.normal(0.6, 0.6, (n, 4)), bias=_full(n, 0.1)),
             "lif": lif, "lin": nir.Linear(weight=rng.normal(0.5, 0.5, (m, n))),
             "out": _lif(m, tau_steps=3.0, theta=0.7)}
    edges = [("input", "aff"), ("aff", "lif"), ("lif", "lin"), ("lin", "out"),
             ("out", "output")]
    if recurrent:
        nodes["rec"] = nir.Linear(weight=rng.normal(0, 0.5, (n, n)))
        edges += [("lif", "rec"), ("rec", "lif")]
    return _graph(nodes, edges, (4,), (m,))


def test_per_neuron_parameters_float_exact_and_fixed_as_uniform_subpopulations() -> None:
    from lrfdyn.sim.interop import check_graph

    g = _per_neuron_graph()
    x = _spikes(np.random.default_rng(2), (4,))
    y, flt = run_graph(g, x, mode="float", conv=NIR)
    assert flt.mismatches == 0 and all(r["agreement"] == 1.0 for r in flt.layers)
    assert {r["name"]: r["spikes_lava"] for r in flt.layers}["lif"] > 0
    _, splits = check_graph(g, NIR, DT, "fixed")
    (s,) = splits
    assert s.node == "lif" and sorted(sorted(i) for _, i in s.parts) == [[0, 1], [2], [3, 4],
                                                                         [5]]
    yi, fix = run_graph(g, x, mode="fixed", conv=NIR)
    assert fix.mismatches == 0, fix.first_mismatch  # Lava = the integer reference
    (sub,) = fix.subpopulations
    assert sub["node"] == "lif" and sub["neurons"] == 6 and sub["subpopulations"] == 4
    assert sorted(sub["sizes"]) == [1, 1, 2, 2] and sub["folded_scale"]
    rows = {r["name"]: r for r in fix.layers}
    assert set(rows) == {"lif", "out"} and rows["lif"]["agreement"] >= 0.9, rows
    assert yi.shape == y.shape and "as 4 uniform sub-population(s)" in fix.summary()


def test_per_neuron_time_constants_in_a_recurrent_layer_are_refused_for_fixed_only() -> None:
    from lrfdyn.sim.interop import check_graph

    g = _per_neuron_graph(recurrent=True)
    check_graph(g, NIR, DT, "float")
    with pytest.raises(UnsupportedNodeError, match=r"^1 node\(s\) cannot be lowered: lif "
                       r"\(per-neuron time constants in a recurrent layer: its 4 sub-pop"):
        check_graph(g, NIR, DT, "fixed")


def test_rockpool_io_types_and_dt_are_recovered() -> None:
    from lrfdyn.sim.nir_input import dt_from_r, io_types_fixed

    n, dt, tau = 3, 1e-3, 0.02
    cuba = nir.CubaLIF(tau_syn=np.full(n, 0.005), tau_mem=np.full(n, tau),
                       r=np.full(n, tau * np.exp(-dt / tau) / dt, np.float32),
                       v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.ones(n))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 25, 4])}),
                            "lin": nir.Linear(weight=np.ones((n, 4))), "lif": cuba,
                            "output": nir.Output(output_type={"output": np.array([1, 25, n])})},
                     edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")],
                     type_check=False)
    fixed_g, notes = io_types_fixed(g)
    assert list(fixed_g.nodes["input"].input_type["input"]) == [4]
    assert list(fixed_g.nodes["output"].output_type["output"]) == [n]
    assert notes[0] == "input: its type (1, 25, 4) holds a batch (and time) axis; " \
        "read as (4,)"
    assert dt_from_r(fixed_g) == pytest.approx(dt, rel=1e-5)


def test_a_file_with_batch_axes_in_its_io_types_is_read(tmp_path) -> None:
    """Norse writes Input/Output types (1, n): `simulate` reads such a file, not refuses it."""
    from lrfdyn.sim.simulate import read_graph

    n = 4
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1, n])}),
        "lin": nir.Linear(weight=np.eye(n) * 2.0),
        "lif": nir.LIF(tau=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([1, n])})},
        edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")], type_check=False)
    nir.write(tmp_path / "g.nir", g)
    got = read_graph(tmp_path / "g.nir")
    assert list(got.nodes["input"].input_type["input"]) == [n]
    assert list(got.nodes["output"].output_type["output"]) == [n]


# ---------------------------------------------------------------- --fixed quantization


def _readout_graph(rng: np.random.Generator) -> nir.NIRGraph:
    """Affine → LIF → Affine → LI: a voltage readout, as Norse's LIBox is."""
    nodes = {
        "fc1": nir.Affine(weight=rng.normal(0.2, 1.0, (12, 10)), bias=_full(12, 0.3)),
        "lif": _lif((12,), tau_steps=5.0),
        "fc2": nir.Affine(weight=rng.normal(0.0, 1.0, (3, 12)), bias=_full(3, 0.2)),
        "li": nir.LI(tau=_full(3, 8 * DT), r=_full(3, 1.0), v_leak=_full(3, 0.0)),
    }
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "output")]
    return _graph(nodes, edges, (10,), (3,))


def test_split_weights_sum_to_the_rounded_targets_as_lava_computes_them() -> None:
    import scipy.sparse as sp

    from lrfdyn.loihi import fixed
    from lrfdyn.loihi.fine import FINE_MAX, split_weights

    rng = np.random.default_rng(3)
    for raw in (rng.normal(0, 4000, (9, 7)), np.abs(rng.normal(0, 9000, (5, 4))),
                -np.abs(rng.normal(0, 300, (5, 4))), rng.normal(0, 3 * FINE_MAX, (6, 6)),
                sp.random(20, 30, density=0.2, random_state=1, data_rvs=lambda n:
                          rng.normal(0, 5000, n))):
        parts, clipped = split_weights(raw)
        assert clipped == 0 and 1 <= len(parts) <= 2
        dense = raw.toarray() if sp.issparse(raw) else raw
        exp0 = min(e for _, e in parts)
        total = sum(np.asarray(sp.csr_matrix(fixed.dense_effective_weights(m)).toarray()
                               if sp.issparse(m) else fixed.dense_effective_weights(m))
                    * 2.0**e for m, e in parts)
        # Lava's dropped LSB and its sign modes lose nothing: exact to the last unit.
        np.testing.assert_array_equal(total, np.round(dense / 2.0**exp0) * 2.0**exp0)
        for m, _ in parts:
            vals = m.data if sp.issparse(m) else m
            assert vals.min(initial=0) >= fixed.WEIGHT_MIN and vals.max(initial=0) <= 254


def test_fine_weights_and_calibration_raise_fixed_agreement_of_a_voltage_readout() -> None:
    """The 8-bit lowering rounds the readout's weights to 1/254 of the largest; split
    14-bit weights (the default) and calibration on the input keep it within 1 % of
    its peak; Lava equals the integer reference in each."""
    from lrfdyn.sim.interop import state_peaks

    rng = np.random.default_rng(5)
    graph = _readout_graph(rng)
    x = (rng.random((20, 3, 10)) < 0.4).astype(np.float64)
    runs = {name: run_graph(graph, x, mode="fixed", conv=NIR, echo_warnings=False, **kw)[1]
            for name, kw in (("coarse", {"fine": False}), ("fine", {}),
                             ("calibrated", {"calibrate": True}))}
    for r in runs.values():
        assert r.mismatches == 0, r.first_mismatch
        assert all(q["clipped"] == 0 for q in r.quantization)
    coarse, fine, cal = (runs[k] for k in ("coarse", "fine", "calibrated"))
    vth = {k: max(q["vth"] for q in r.quantization if q["dst"] == "li")
           for k, r in runs.items()}
    assert vth["coarse"] < vth["fine"] < vth["calibrated"], vth
    assert any(q["synapse"].endswith("#lo") for q in fine.quantization)
    assert coarse.output_agreement < 0.95 <= fine.output_agreement, \
        (coarse.output_agreement, fine.output_agreement)
    assert cal.output_agreement >= fine.output_agreement
    # The calibration is the float model's own peak: the readout's largest |v|.
    from lrfdyn.sim.nir_sim import simulate_nir

    xs = x.transpose(1, 0, 2)
    peaks = state_peaks(graph, NIR, xs)
    np.testing.assert_allclose(peaks["li"][1], np.abs(simulate_nir(graph, xs, NIR)["li"]).max())
