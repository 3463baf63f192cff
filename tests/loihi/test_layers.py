"""Typed synapse layers: composition keeps sharing and is exact; lowering never multiplies
a kernel out per position; the torch reference's conv path equals explicit matrices."""

from __future__ import annotations

import copy

import nir
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lrfdyn.loihi import fixed
from lrfdyn.loihi.layers import ConvMap, compose, conv_groups
from lrfdyn.loihi.ir import DELAY_RELAY_STEPS, bias_offset
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import run_reference

RNG = np.random.default_rng(0)


def _conv(shape, c_out, k, **kw) -> ConvMap:
    groups = kw.get("groups", 1)
    return ConvMap(RNG.normal(size=(c_out, shape[0] // groups, k, k)), shape, **kw)


CASES = {
    "conv then valid sum-pool": (_conv((3, 8, 8), 4, 3, padding=(1, 1)),
                                 _conv((4, 8, 8), 4, 2, stride=(2, 2), groups=4)),
    "conv then 1x1": (_conv((3, 8, 8), 4, 3, padding=(1, 1)), _conv((4, 8, 8), 5, 1)),
    "1x1 then padded dilated depthwise": (_conv((4, 8, 8), 4, 1),
                                          _conv((4, 8, 8), 4, 3, padding=(3, 3),
                                                dilation=(3, 3), groups=4)),
    "padded depthwise then per-channel scale": (
        _conv((4, 8, 8), 4, 3, padding=(1, 1), groups=4), _conv((4, 8, 8), 4, 1, groups=4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_composition_is_exact_and_stays_a_conv(case) -> None:
    a, b = CASES[case]
    c = compose(b, a)
    assert isinstance(c, ConvMap), f"{case}: a conv after a conv must stay a conv"
    x = torch.randn(3, a.n_in, dtype=torch.float64)
    assert torch.allclose(c.apply(x), b.apply(a.apply(x)), atol=1e-10)
    assert c.stored <= max(a.stored + b.stored, 1 << 16)


def test_a_conv_reading_padding_does_not_compose() -> None:
    """The dendritic token kernel followed by an LRF conv: the LRF reads y's zero padding,
    so no conv equals the chain, and lowering must keep y as a relay instead."""
    dendrite = _conv((4, 6, 6), 4, 11, padding=(5, 5), groups=4)
    lrf = _conv((4, 6, 6), 4, 3, padding=(3, 3), dilation=(3, 3), groups=4)
    assert compose(lrf, dendrite) is None


def test_fan_out_equals_the_explicit_matrix() -> None:
    m = _conv((4, 7, 5), 6, 3, padding=(1, 1), stride=(2, 1), groups=2)
    m.weight[0, 0, 1, 1] = 0.0  # a zero tap is no synapse
    assert np.array_equal(m.fan_out(), np.asarray((m.matrix() != 0).sum(axis=0)).ravel())


def test_groups_of_an_ungrouped_depthwise_conv_are_recovered() -> None:
    full = np.zeros((4, 4, 3, 3))
    for c in range(4):
        full[c, c] = RNG.normal(size=(3, 3))
    w, g = conv_groups(full, 1)
    assert g == 4 and w.shape == (4, 1, 3, 3)
    assert np.array_equal(w[:, 0], full[np.arange(4), np.arange(4)])


def test_lowering_stores_each_kernel_once(tiny_lrf_dyn) -> None:
    _, graph = tiny_lrf_dyn
    shared, fused = lower(graph), lower(graph, shared=False)
    assert sum(s.stored_weights for s in shared.synapses) * 4 < \
        sum(s.stored_weights for s in fused.synapses)
    kinds = {g.name: g.kind for g in shared.groups.values()}
    assert kinds["blocks.0.attn.dendrite"] == "relay"  # LRF∘dendrite is no conv
    assert kinds["blocks.0.attn.attn_lif.in"] == "relay"  # the shifter before the LIF
    dendrite = next(s for s in shared.synapses if s.dst == "blocks.0.attn.dendrite")
    assert dendrite.kind == "conv" and dendrite.weights.shape == (6, 1, 13, 13)


def _explicit(net):
    """``net`` with every conv synapse as the explicit Sparse matrix of its integers."""
    out = copy.deepcopy(net)
    for s in out.synapses:
        if s.conv is not None:
            s.weights = sp.csr_matrix(s.conv.matrix().astype(np.int64))
            s.conv = None
    return out


def test_reference_conv_path_equals_explicit_matrices(tiny_lrf_dyn) -> None:
    """Convs in float64 ``conv2d`` (then Lava's 24-bit wrap) against sparse integer sums.

    Lava's Dense/Sparse models drop the LSB of mixed-sign weights and Conv keeps it, so
    only layers whose integers survive that truncation are compared as matrices.
    """
    _, graph = tiny_lrf_dyn
    net = lower(graph)
    for s in net.synapses:  # make every conv's integers even, so both paths compute alike
        if s.conv is not None:
            s.weights = (np.asarray(s.weights) >> 1) << 1
            s.conv = s.conv.with_weight(s.weights)
    x = RNG.integers(0, 256, (4, net.input.size))
    a = run_reference(net, x, net.steps_per_sample())
    b = run_reference(_explicit(net), x, net.steps_per_sample())
    for g in net.groups:
        assert np.array_equal(a[g], b[g]), g
    assert any(np.any(v) for v in a.values())


def _deep_graph(depth: int) -> nir.NIRGraph:
    """input → a → (depth identity LIFs) → out, plus a shortcut a → out and biases on
    out: the shortcut needs a delay beyond 63 steps, and out's bias a later copy."""
    n = 3
    lif = lambda: nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),  # noqa: E731
                          v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}),
             "w_in": nir.Affine(weight=np.eye(n) * 3.0, bias=np.zeros(n)), "a": lif()}
    edges = [("input", "w_in"), ("w_in", "a")]
    prev = "a"
    for i in range(depth):
        nodes[f"w{i}"] = nir.Linear(weight=np.eye(n) * 2.5)
        nodes[f"h{i}"] = lif()
        edges += [(prev, f"w{i}"), (f"w{i}", f"h{i}")]
        prev = f"h{i}"
    nodes["w_last"] = nir.Affine(weight=np.eye(n) * 1.5, bias=np.full(n, 0.2))
    nodes["w_skip"] = nir.Linear(weight=np.eye(n) * 1.5)
    nodes["out"] = lif()
    nodes["output"] = nir.Output(output_type={"output": np.array([n])})
    edges += [(prev, "w_last"), ("w_last", "out"), ("a", "w_skip"), ("w_skip", "out"),
              ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": 1e-3, "timesteps": 4, "input_levels": 1})


def test_long_delays_go_through_delay_relays_and_a_later_bias() -> None:
    net = lower(_deep_graph(70))
    assert all(s.delay <= fixed.MAX_DELAY for s in net.synapses)
    relays = [g for g in net.groups.values() if g.kind == "delay"]
    assert relays and all(g.latency - net.groups["a"].latency == DELAY_RELAY_STEPS
                          for g in relays)
    assert any(bias_offset(s.src) for s in net.synapses if s.dst == "out")
    # In logical time a delay relay repeats its source; the reference sees no difference.
    x = np.ones((2, 3), np.int64)
    spikes = run_reference(net, x, 8)
    assert np.array_equal(spikes[relays[0].name] != 0, spikes["a"])


@pytest.mark.slow
def test_long_delays_are_exact_on_lava() -> None:
    from lrfdyn.sim.simulate import simulate

    net = lower(_deep_graph(70))
    rep = simulate(net, np.ones((2, 3), np.int64), np.zeros(2, int))
    assert rep.mismatches == 0, rep.first_mismatch
    assert any(layer.spikes for layer in rep.layers if layer.name == "out")
