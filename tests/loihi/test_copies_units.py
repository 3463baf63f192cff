"""Unit tests of loihi/copies.py on hand-made networks and arrays: the copy-major layouts
written out element by element, block-diagonal and row-tiled weights, and which networks
can be copied. No Lava."""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import pytest
import scipy.sparse as sp

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.copies import (choose_stream_copies, copies_for, copy_network,
                                 fits_copies, split_copies, stack_samples)
from lrfdyn.loihi.fixed import LifParams
from lrfdyn.loihi.ir import (BIAS_SOURCE, InputSpec, LoweredNetwork, NeuronGroup,
                             SynapseSpec)
from lrfdyn.loihi.lower import lower


def test_time_series_samples_are_stacked_copy_major_at_every_step():
    x = np.arange(3 * 2 * 4).reshape(3, 2, 4)  # N = 3 samples, T = 2 steps, n = 4
    blocks = stack_samples(x, 2)
    assert blocks.tolist() == [
        [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]],  # samples 0 and 1
        [[16, 17, 18, 19, 0, 0, 0, 0], [20, 21, 22, 23, 0, 0, 0, 0]],  # 2 and silence
    ]
    # what a run records, (B, steps, k·n), goes back to one row per sample
    assert np.array_equal(split_copies(blocks, 2, 3), x)


def _net() -> LoweredNetwork:
    """input (2) → l (2 LIFs) through a sparse layer, and a bias column from the always-on
    source."""
    w = sp.csr_matrix(np.array([[1, 0], [0, 2]], np.int64))
    bias = np.array([[3], [4]], np.int64)
    groups = {"l": NeuronGroup("l", 2, LifParams(du=4095, dv=100, vth=7), shape=(2,),
                               latency=1)}
    syn = [SynapseSpec("input->l", "input", "l", w, 0),
           SynapseSpec("l.bias", BIAS_SOURCE, "l", bias, 0)]
    return LoweredNetwork(InputSpec("input", 2, 1, 3), groups, syn, "l", 1e-3)


def test_sparse_layers_become_block_diagonal_and_clock_rows_are_tiled():
    wide = copy_network(_net(), 2)
    data, bias = wide.synapses
    assert sp.issparse(data.weights)
    assert data.weights.toarray().tolist() == [[1, 0, 0, 0], [0, 2, 0, 0],
                                               [0, 0, 1, 0], [0, 0, 0, 2]]
    assert bias.src == BIAS_SOURCE and bias.weights.tolist() == [[3], [4], [3], [4]]
    g = wide.groups["l"]
    assert (g.size, g.shape, g.latency) == (4, (2, 2), 1)
    assert (g.params.du, g.params.dv, g.params.vth) == (4095, 100, 7)  # shared: not tiled
    assert wide.input.size == 4 and wide.copies == 2


def test_one_copy_is_the_network_itself():
    net = _net()
    one = copy_network(net, 1)
    assert one.copies == 1 and one.groups["l"].shape == (2,) and one.groups["l"].size == 2
    assert one.synapses[0].weights.shape == (2, 2)
    with pytest.raises(ValidationError, match="copies must be at least 1, got 0"):
        copy_network(net, 0)


def _conv_graph() -> nir.NIRGraph:
    """input (1, 4, 4) → a 3×3 conv (2 filters) → LIF (2, 4, 4) → output."""
    full = lambda shape, v: np.full(shape, float(v))  # noqa: E731
    shape = (2, 4, 4)
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=full((2, 1, 3, 3), 0.3),
                                bias=np.zeros(2), stride=1, padding=1, dilation=1, groups=1),
             "l": nir.LIF(tau=full(shape, 2e-3), r=full(shape, 1), v_leak=full(shape, 0),
                          v_threshold=full(shape, 1), v_reset=full(shape, 0)),
             "output": nir.Output(output_type={"output": np.array(shape)})}
    seq = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(seq, seq[1:])), type_check=False,
                        metadata={"dt": 1e-3, "timesteps": 3, "input_levels": 1})


def test_a_conv_from_a_clock_source_cannot_be_copied():
    net = lower(_conv_graph())
    assert fits_copies(net)
    i = next(i for i, s in enumerate(net.synapses) if s.conv is not None)
    bad = dataclasses.replace(net, synapses=[
        dataclasses.replace(s, src=BIAS_SOURCE) if j == i else s
        for j, s in enumerate(net.synapses)])
    assert not fits_copies(bad)
    with pytest.raises(ValidationError, match="a conv from a shared source cannot be copied"):
        copy_network(bad, 2)


def test_the_copy_count_rule():
    assert copies_for(1000, budget=10_000, limit=32) == 10
    assert copies_for(1000, 3, budget=10_000, limit=32) == 3  # no more than the samples
    assert copies_for(1000, 0, budget=10_000, limit=32) == 1  # at least 1
    assert copies_for(10, budget=10_000, limit=32) == 32  # at most the limit
    assert copies_for(20_000, budget=10_000) == 1
    assert copies_for(0, budget=5, limit=32) == 5  # an empty network counts as one neuron

    class Block:
        def __init__(self, sizes):
            self._s = sizes

        def sizes(self):
            return self._s

    # the largest block sets it: 600 + 400 neurons
    assert choose_stream_copies([Block({"a": 10}), Block({"b": 600, "c": 400})],
                                budget=10_000) == 10
    assert choose_stream_copies([], 4, budget=10) == 4


@pytest.mark.parametrize("copies, sparse", [(16, False), (17, True)])
def test_a_block_diagonal_dense_layer_past_2_to_the_22_weights_becomes_sparse(copies, sparse):
    # 128·128 weights: 16 copies store 128²·16² = 2^22 (kept dense), 17 copies 4.7 M
    w = np.random.default_rng(0).integers(-5, 6, (128, 128))
    groups = {"l": NeuronGroup("l", 128, LifParams(du=4095, dv=100, vth=7), shape=(128,))}
    net = LoweredNetwork(InputSpec("input", 128, 1, 3), groups,
                         [SynapseSpec("input->l", "input", "l", w, 0)], "l", 1e-3)
    (s,) = copy_network(net, copies).synapses
    assert sp.issparse(s.weights) == sparse
    full = s.weights.toarray() if sparse else s.weights
    assert full.shape == (128 * copies, 128 * copies)
    assert np.array_equal(full, sp.block_diag([w] * copies).toarray())


def test_the_budget_and_the_limit_are_keyword_arguments():
    with pytest.raises(TypeError):
        copies_for(1000, None, 10_000)  # a third positional argument is not the budget
