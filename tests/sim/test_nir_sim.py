"""The numpy NIR simulation against hand-written semantics, one primitive at a time.

Linear primitives are checked against torch's own functional ops (independent of
the sparse matrices of ``loihi/linear.py``); neurons against a few lines of numpy
written from the equations of ``loihi/neurons.py``. No Lava here.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfdyn.loihi.neurons import CONVENTIONS, NIR
from lrfdyn.sim.nir_sim import simulate_nir

DT = 1e-3
RNG = np.random.default_rng(0)


def _chain(in_shape: tuple[int, ...], *nodes: nir.NIRNode, dt: float = DT) -> nir.NIRGraph:
    """Input → nodes… → Output, in a line."""
    names = [f"n{i}" for i in range(len(nodes))]
    graph_nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}),
                   **dict(zip(names, nodes)), "output": nir.Output(output_type={"output":
                                                                          np.array([1])})}
    seq = ["input", *names, "output"]
    return nir.NIRGraph(nodes=graph_nodes, edges=list(zip(seq, seq[1:])),
                        metadata={"dt": dt}, type_check=False)


def _threshold(n: int, theta: float = 0.5) -> nir.Threshold:
    return nir.Threshold(threshold=np.full(n, theta))


def _li(n: int) -> nir.LI:
    """tau = dt: v = x exactly, so a linear node's output reads out unchanged."""
    return nir.LI(tau=np.full(n, DT), r=np.ones(n), v_leak=np.zeros(n))


def _conv2d_case():
    w = RNG.normal(size=(4, 1, 3, 3))
    b = RNG.normal(size=4)
    node = nir.Conv2d(input_shape=(6, 6), weight=w, bias=b, stride=(2, 1), padding=(1, 2),
                      dilation=(1, 2), groups=2)
    ref = lambda x: F.conv2d(x, torch.tensor(w), torch.tensor(b), stride=(2, 1),  # noqa: E731
                             padding=(1, 2), dilation=(1, 2), groups=2)
    return (2, 6, 6), node, ref


def _conv1d_case():
    w = RNG.normal(size=(3, 2, 3))
    b = RNG.normal(size=3)
    node = nir.Conv1d(input_shape=7, weight=w, bias=b, stride=2, padding=1, dilation=2,
                      groups=1)
    ref = lambda x: F.conv1d(x, torch.tensor(w), torch.tensor(b), stride=2,  # noqa: E731
                             padding=1, dilation=2)
    return (2, 7), node, ref


def _linear_cases():
    w = RNG.normal(size=(3, 5))
    b = RNG.normal(size=3)
    s = RNG.normal(size=5)
    return {
        "Affine": ((5,), nir.Affine(weight=w, bias=b), lambda x: x @ torch.tensor(w).T
                   + torch.tensor(b)),
        "Linear": ((5,), nir.Linear(weight=w), lambda x: x @ torch.tensor(w).T),
        "Scale": ((5,), nir.Scale(scale=s), lambda x: x * torch.tensor(s)),
        "Conv1d": _conv1d_case(),
        "Conv2d": _conv2d_case(),
        "Flatten": ((2, 3, 2), nir.Flatten(input_type={"input": np.array([2, 3, 2])}),
                    lambda x: x.flatten(1)),
        "SumPool2d": ((2, 4, 6), nir.SumPool2d(kernel_size=np.array([2, 3]),
                                               stride=np.array([2, 3]), padding=np.array([0, 0])),
                      lambda x: F.avg_pool2d(x, (2, 3), (2, 3)) * 6),
        "AvgPool2d": ((2, 4, 4), nir.AvgPool2d(kernel_size=np.array([2, 2]),
                                               stride=np.array([1, 1]), padding=np.array([0, 0])),
                      lambda x: F.avg_pool2d(x, 2, 1)),
    }


@pytest.mark.parametrize("kind", list(_linear_cases()))
def test_linear_primitive_equals_torch(kind: str) -> None:
    in_shape, node, ref = _linear_cases()[kind]
    x = RNG.random((2, 3) + in_shape)  # (B, T, …)
    want = ref(torch.tensor(x.reshape((6,) + in_shape))).reshape(2, 3, -1).numpy()
    got = simulate_nir(_chain(in_shape, node, _li(want.shape[-1])),
                       x.reshape(2, 3, -1))["n1"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _run_neuron(node: nir.NIRNode, x: np.ndarray, conv=NIR) -> np.ndarray:
    return simulate_nir(_chain((x.shape[-1],), node, dt=conv.dt), x, conv)["n0"]


def _euler(x: np.ndarray, leak: float, gain: float, theta: float | None,
           bias: float = 0.0) -> np.ndarray:
    v, out = np.zeros(x.shape[::2]), []
    for t in range(x.shape[1]):
        v = v + leak * (bias - v) + gain * x[:, t]
        if theta is None:
            out.append(v.copy())
            continue
        s = v > theta
        v = np.where(s, 0.0, v)
        out.append(s.astype(float))
    return np.stack(out, axis=1)


X = RNG.random((2, 25, 4)) * 1.5


def test_lif_is_forward_euler_with_reset_to_zero() -> None:
    n = 4
    node = nir.LIF(tau=np.full(n, 4 * DT), r=np.full(n, 2.0), v_leak=np.full(n, 0.1),
                   v_threshold=np.ones(n), v_reset=np.zeros(n))
    got = _run_neuron(node, X)
    assert 0 < got.sum() < got.size
    np.testing.assert_array_equal(got, _euler(X, 0.25, 0.5, 1.0, bias=0.1))


def test_if_integrates_dt_r_x_and_under_norse_r_x() -> None:
    n = 4
    node = nir.IF(r=np.full(n, 300.0), v_threshold=np.ones(n), v_reset=np.zeros(n))
    np.testing.assert_array_equal(_run_neuron(node, X), _euler(X, 0.0, 0.3, 1.0))
    node = nir.IF(r=np.full(n, 0.3), v_threshold=np.ones(n), v_reset=np.zeros(n))
    np.testing.assert_array_equal(_run_neuron(node, X, CONVENTIONS["norse"]),
                                  _euler(X, 0.0, 0.3, 1.0))


def test_li_and_integrator_read_out_their_voltage() -> None:
    n = 4
    li = nir.LI(tau=np.full(n, 5 * DT), r=np.ones(n), v_leak=np.zeros(n))
    np.testing.assert_allclose(_run_neuron(li, X), _euler(X, 0.2, 0.2, None), rtol=1e-12)
    integ = nir.I(r=np.full(n, 100.0))
    np.testing.assert_allclose(_run_neuron(integ, X), _euler(X, 0.0, 0.1, None), rtol=1e-12)


def test_threshold_is_memoryless() -> None:
    got = _run_neuron(_threshold(4, 0.7), X)
    np.testing.assert_array_equal(got, (X > 0.7).astype(float))


def _cuba(n: int) -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=np.full(n, 2 * DT), tau_mem=np.full(n, 4 * DT),
                       r=np.full(n, 2.0), v_leak=np.zeros(n), v_threshold=np.full(n, 0.3),
                       v_reset=np.zeros(n), w_in=np.full(n, 1.5))


def test_cuba_lif_euler_uses_the_new_current() -> None:
    i = v = np.zeros((2, 4))
    want = []
    for t in range(X.shape[1]):
        i = i + 0.5 * (-i + 1.5 * X[:, t])
        v = v + 0.25 * (-v + 2.0 * i)
        s = v > 0.3
        v = np.where(s, 0.0, v)
        want.append(s)
    got = _run_neuron(_cuba(4), X)
    assert 0 < got.sum() < got.size
    np.testing.assert_array_equal(got, np.stack(want, axis=1).astype(float))


def test_cuba_lif_under_norse_adds_input_unscaled() -> None:
    n, dt = 4, 1e-3
    # Norse writes tau = dt / tau_inv: tau_syn_inv = 500, tau_mem_inv = 250 per second.
    node = nir.CubaLIF(tau_syn=np.full(n, dt / 500), tau_mem=np.full(n, dt / 250),
                       r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.3),
                       v_reset=np.zeros(n), w_in=np.ones(n))
    i = v = np.zeros((2, n))
    want = []
    for t in range(X.shape[1]):  # norse.torch.functional.lif.lif_feed_forward_step (1.1)
        i_new = i + X[:, t]
        v_dec = v + dt * 250 * (-v + i_new)
        i = i_new - dt * 500 * i_new
        s = v_dec > 0.3
        v = np.where(s, 0.0, v_dec)
        want.append(s)
    got = _run_neuron(node, X, CONVENTIONS["norse"])
    assert 0 < got.sum()
    np.testing.assert_array_equal(got, np.stack(want, axis=1).astype(float))


def test_snntorch_reset_subtracts_the_threshold_one_step_late() -> None:
    n, beta = 4, 0.8
    node = nir.LIF(tau=np.full(n, 1e-4 / (1 - beta)), r=np.full(n, 1 / (1 - beta)),
                   v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    v, s, want = np.zeros((2, n)), np.zeros((2, n), bool), []
    for t in range(X.shape[1]):
        v = beta * v + X[:, t] - s * 1.0
        s = v > 1.0
        want.append(s)
    got = _run_neuron(node, X, CONVENTIONS["snntorch"])
    np.testing.assert_array_equal(got, np.stack(want, axis=1).astype(float))


def test_delay_shifts_each_element_by_its_own_steps() -> None:
    d = nir.Delay(delay=np.array([0, 1, 3, 2]) * DT)
    got = simulate_nir(_chain((4,), d, _li(4)), X)["n1"]
    want = np.zeros_like(X)
    for j, k in enumerate([0, 1, 3, 2]):
        want[:, k:, j] = X[:, : X.shape[1] - k, j]
    np.testing.assert_allclose(got, want, atol=1e-12)


def recurrent_graph() -> nir.NIRGraph:
    """input → Affine → LIF, which feeds itself through a Linear (snnTorch's RLeaky)."""
    n = 4
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "a": nir.Affine(weight=RNG.normal(0.5, 1, (n, 3)), bias=np.full(n, 0.1)),
        "l": nir.LIF(tau=np.full(n, 2 * DT), r=np.ones(n), v_leak=np.zeros(n),
                     v_threshold=np.full(n, 0.5), v_reset=np.zeros(n)),
        "rec": nir.Linear(weight=RNG.normal(0, 1.0, (n, n))),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "a"), ("a", "l"), ("l", "rec"), ("rec", "l"), ("l", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


def test_recurrent_edge_feeds_the_previous_steps_spikes() -> None:
    g = recurrent_graph()
    w_in, b = g.nodes["a"].weight, g.nodes["a"].bias
    w_rec = g.nodes["rec"].weight
    x = RNG.random((2, 20, 3))
    v, s, want = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(20):
        v = v + 0.5 * (-v + x[:, t] @ w_in.T + b + s @ w_rec.T)
        s = (v > 0.5).astype(float)
        v = np.where(s > 0, 0.0, v)
        want.append(s)
    got = simulate_nir(g, x)["l"]
    assert 0 < got.sum() < got.size
    np.testing.assert_array_equal(got, np.stack(want, axis=1))


def test_subgraph_runs_as_its_flattened_nodes() -> None:
    inner = recurrent_graph()
    outer = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}), "block": inner,
               "output": nir.Output(output_type={"output": np.array([4])})},
        edges=[("input", "block"), ("block", "output")], metadata={"dt": DT},
        type_check=False)
    x = RNG.random((1, 15, 3))
    np.testing.assert_array_equal(simulate_nir(outer, x)["block.l"],
                                  simulate_nir(inner, x)["l"])


def test_an_unknown_convention_is_one_clear_error() -> None:
    from lrfdyn.errors import ValidationError
    from lrfdyn.loihi.neurons import convention

    with pytest.raises(ValidationError, match="unknown convention 'brian2'; choose one of nir"):
        convention("brian2")


def test_dt_comes_from_the_graph_else_from_the_convention() -> None:
    from lrfdyn.loihi.wiring import wire

    node = nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2),
                   v_threshold=np.ones(2), v_reset=np.zeros(2))
    g = _chain((2,), node)
    assert wire(g, NIR, timesteps=1).groups[0].dynamics.dv == pytest.approx(1.0)
    del g.metadata["dt"]  # snnTorch's step, 1e-4, is a tenth of tau
    assert wire(g, CONVENTIONS["snntorch"], timesteps=1).dt == 1e-4
    assert wire(g, CONVENTIONS["snntorch"], timesteps=1).groups[0].dynamics.dv == \
        pytest.approx(0.1)


def _per_neuron(conv):
    import dataclasses

    return dataclasses.replace(conv, per_neuron=True)


def test_per_neuron_tau_and_threshold_step_each_neuron_on_its_own() -> None:
    taus, thetas = np.array([2.0, 3.0, 5.0, 8.0]), np.array([0.5, 0.8, 1.0, 1.3])
    node = nir.LIF(tau=taus * DT, r=np.ones(4), v_leak=np.zeros(4), v_threshold=thetas,
                   v_reset=np.zeros(4))
    got = _run_neuron(node, X, _per_neuron(NIR))
    for j in range(4):
        want = _euler(X[:, :, j : j + 1], 1 / taus[j], 1 / taus[j], thetas[j])
        np.testing.assert_array_equal(got[:, :, j : j + 1], want)
    with pytest.raises(Exception, match="per-neuron tau is not supported"):
        _run_neuron(node, X, NIR)  # the integer lowering's convention keeps one value


def test_sinabs_iaf_sends_multi_spikes_and_subtracts_them() -> None:
    n = 4
    node = nir.IF(r=np.ones(n), v_threshold=np.full(n, 0.7))
    x = X * 2.0
    v, want = np.zeros((2, n)), []
    for t in range(x.shape[1]):  # sinabs.layers.IAF: MultiSpike, MembraneSubtract
        v = v + x[:, t]
        s = np.where(v >= 0.7, np.floor(v / 0.7), 0.0)
        v = v - 0.7 * s
        want.append(s)
    got = _run_neuron(node, x, CONVENTIONS["sinabs"])
    assert got.max() >= 2
    np.testing.assert_array_equal(got, np.stack(want, axis=1))


def test_rockpool_cuba_decays_the_input_with_the_current() -> None:
    n, dt, tau_syn, tau_mem = 4, 1e-3, 4e-3, 1e-2
    node = nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem),
                       r=np.full(n, 9.9), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       w_in=np.ones(n))
    a, b = np.exp(-dt / tau_mem), np.exp(-dt / tau_syn)
    i = v = np.zeros((2, n))
    want = []
    for t in range(X.shape[1]):  # rockpool LIFTorch.forward (3.1)
        i = b * (i + X[:, t])
        v = a * v + i
        s = np.where(v >= 1.0, np.floor(v), 0.0)
        v = v - s
        want.append(s)
    got = _run_neuron(node, X, CONVENTIONS["rockpool"])
    assert got.sum() > 0
    np.testing.assert_allclose(got, np.stack(want, axis=1))


def test_spikingjelly_fires_at_the_threshold_itself() -> None:
    node = nir.IF(r=np.full(1, 1e4), v_threshold=np.ones(1), v_reset=np.zeros(1))
    x = np.ones((1, 3, 1))  # dt·r·x = 1 = v_th exactly
    assert _run_neuron(node, x, CONVENTIONS["spikingjelly"]).ravel().tolist() == [1, 1, 1]
    strict = simulate_nir(_chain((1,), node, dt=1e-4), x, NIR)["n0"]  # NIR's v > v_th
    assert strict.ravel().tolist() == [0, 1, 0]


# ---------------------------------------------------------------- conv + pooling CNN (issue 26)


def cnn_pool_graph(rng: np.random.Generator) -> nir.NIRGraph:
    """Conv2d → LIF → AvgPool2d → Conv2d (padded) → IF → SumPool2d → Flatten → Affine →
    CubaLIF on (2, 8, 8): the shape of snnTorch's and Sinabs' exported CNNs. A padded
    conv cannot compose with the pooling before it, so the lowering keeps that pooling
    as a relay group (which the float simulation once stepped as a neuron)."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv1": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.0, 0.4, (4, 2, 3, 3)),
                            bias=np.full(4, 0.1), stride=1, padding=1, dilation=1, groups=1),
        "lif": nir.LIF(tau=np.full((4, 8, 8), 3 * DT), r=np.full((4, 8, 8), 2.0),
                       v_leak=np.zeros((4, 8, 8)), v_threshold=np.ones((4, 8, 8)),
                       v_reset=np.zeros((4, 8, 8))),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0.0, 0.5, (4, 4, 3, 3)),
                            bias=np.zeros(4), stride=1, padding=1, dilation=1, groups=1),
        "if": nir.IF(r=np.full((4, 4, 4), 400.0), v_threshold=np.ones((4, 4, 4)),
                     v_reset=np.zeros((4, 4, 4))),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}),
        "aff": nir.Affine(weight=rng.normal(0.0, 0.5, (5, 16)), bias=np.full(5, 0.05)),
        "cuba": _cuba(5),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    seq = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(seq, seq[1:])), metadata={"dt": DT},
                        type_check=False)


def test_conv_pool_cnn_equals_torch_and_the_equations_layer_by_layer() -> None:
    """Each layer against torch's conv/pool ops and the neuron equations written out
    here, applied to the previous layer's spikes over all steps at once."""
    from lrfdyn.loihi.wiring import wire

    g = cnn_pool_graph(np.random.default_rng(5))
    assert [p.name for p in wire(g, NIR, timesteps=1).groups if p.dynamics is None] == ["avg"]
    b, t = 2, 20
    x = (np.random.default_rng(3).random((b, t, 2 * 8 * 8)) < 0.5).astype(np.float64)
    got = simulate_nir(g, x)

    def per_step(op, s: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        out = op(torch.tensor(s.reshape((b * t, *shape))))
        return out.reshape(b, t, -1).numpy()

    n = g.nodes
    conv = lambda name: lambda z: F.conv2d(z, torch.tensor(n[name].weight),  # noqa: E731
                                           torch.tensor(n[name].bias), padding=1)
    lif = _euler(per_step(conv("conv1"), x, (2, 8, 8)), 1 / 3, 2 / 3, 1.0)
    pooled = per_step(lambda z: F.avg_pool2d(z, 2), lif, (4, 8, 8))
    spikes_if = _euler(per_step(conv("conv2"), pooled, (4, 4, 4)), 0.0, 0.4, 1.0)
    summed = per_step(lambda z: F.avg_pool2d(z, 2) * 4, spikes_if, (4, 4, 4))
    current = summed @ n["aff"].weight.T + n["aff"].bias
    i = v = np.zeros((b, 5))
    cuba = []
    for k in range(t):  # _cuba: dt/tau_syn = 1/2, dt/tau_mem = 1/4, r = 2, w_in = 1.5
        i = i + 0.5 * (-i + 1.5 * current[:, k])
        v = v + 0.25 * (-v + 2.0 * i)
        cuba.append(v > 0.3)
        v = np.where(cuba[-1], 0.0, v)
    for name, want in (("lif", lif), ("if", spikes_if), ("cuba", np.stack(cuba, axis=1))):
        assert 0 < want.sum() < want.size, name  # every layer spikes, none saturates
        np.testing.assert_array_equal(got[name], want.astype(np.float64), err_msg=name)
    assert set(got) == {"lif", "if", "cuba"}  # the relayed pooling is no neuron node


def test_neuron_state_steps_purely_and_a_ternary_node_fires_both_ways() -> None:
    """:class:`NeuronState` is the public step every float executor shares."""
    from lrfdyn.loihi.neurons import Dynamics
    from lrfdyn.sim.nir_sim import NeuronState

    d = Dynamics(gain=1.0, dv=0.5, v_th=1.0, bias=np.zeros(3), ternary=True)
    s0 = NeuronState.zeros(1, 3)
    out, s1 = s0.step(np.array([[1.5, -1.5, 0.5]]), d)
    assert out.tolist() == [[1.0, -1.0, 0.0]] and s1.v.tolist() == [[0.0, 0.0, 0.5]]
    assert s0.v.tolist() == [[0.0, 0.0, 0.0]]  # the old state is untouched
    mid = s1.integrate(np.array([[0.0, 0.0, 0.9]]), d)
    assert mid.v.tolist() == [[0.0, 0.0, 0.25 + 0.9]]  # before the threshold and reset
    out, s2 = mid.fire(d)
    assert out.tolist() == [[0.0, 0.0, 1.0]] and s2.v[0, 2] == 0.0
