"""Unit tests of sim/bits.py: :class:`Memory` arithmetic and :func:`process_memory` of each
kind of Lava process, counted by hand (24-bit u and v, 12-bit decays, 8-bit weights,
16-bit spike buffer entries, 24-bit graded ones). Lava processes are built, never run."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.proc.conv.process import Conv
from lava.proc.dense.process import DelayDense, Dense
from lava.proc.graded.process import GradedVec
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIF
from lava.proc.prodneuron.process import ProdNeuron
from lava.proc.sparse.process import Sparse

from lrfdyn.sim.bits import GRADED_BUFFER_BITS, Memory, process_memory


def test_memory_adds_field_by_field_and_its_total_leaves_out_the_bias_share():
    a = Memory(state=1, weights=20, buffers=300, bias_buffers=100)
    b = Memory(state=4000, weights=50000, buffers=600000, bias_buffers=7)
    s = a + b
    assert (s.state, s.weights, s.buffers, s.bias_buffers) == (4001, 50020, 600300, 107)
    # bias buffers are part of buffers: not added twice
    assert s.total == 4001 + 50020 + 600300
    assert s.to_dict() == {"state": 4001, "weights": 50020, "buffers": 600300,
                           "bias_buffers": 107, "total": 654321}
    assert Memory().total == 0 and GRADED_BUFFER_BITS == 24


def test_neurons_store_their_state_and_nothing_else():
    assert process_memory(LIF(shape=(5,))) == Memory(state=(5 + 5) * 24)
    assert process_memory(GradedVec(shape=(3,))) == Memory(state=3 * 24)
    assert process_memory(ProdNeuron(shape=(7,))) == Memory(state=7 * 24)


def test_dense_layers_store_every_weight_and_one_buffer_entry_per_target_and_slot():
    w = np.array([[1, 0, 2, 0], [0, 0, 0, 3], [4, 0, 0, 0]])
    # spikes: 12 stored weights (zeros too) · 8 bits, 3 targets · 16 bits
    assert process_memory(Dense(weights=w)) == Memory(weights=12 * 8, buffers=3 * 16)
    # a graded payload, however few its bits, takes 24-bit entries
    for bits in (1, 8, 24):
        assert process_memory(Dense(weights=w, num_message_bits=bits)) == \
            Memory(weights=12 * 8, buffers=3 * 24), bits
    # delay 2: three slots per target
    d = DelayDense(weights=w, delays=np.full(w.shape, 2))
    assert process_memory(d) == Memory(weights=12 * 8, buffers=3 * 3 * 16)


def test_sparse_layers_store_their_non_zeros_only():
    w = sp.csr_matrix(np.array([[0, 5, 0], [0, 0, 0], [6, 0, 7]]))
    assert process_memory(Sparse(weights=w)) == Memory(weights=3 * 8, buffers=3 * 16)
    assert process_memory(Sparse(weights=w, num_message_bits=24)) == \
        Memory(weights=3 * 8, buffers=3 * 24)


def test_a_conv_stores_its_kernel_once_and_an_output_buffer_per_position():
    # 2 filters of 3×3 over one channel of a 5×5 input: 18 weights, a 3×3×2 output
    conv = Conv(weight=np.ones((2, 3, 3, 1)), input_shape=(5, 5, 1))
    assert process_memory(conv) == Memory(weights=18 * 8, buffers=3 * 3 * 2 * 16)
    graded = Conv(weight=np.ones((2, 3, 3, 1)), input_shape=(5, 5, 1), num_message_bits=16)
    assert process_memory(graded) == Memory(weights=18 * 8, buffers=3 * 3 * 2 * 24)


def test_sources_and_other_host_side_processes_store_nothing():
    assert process_memory(RingBuffer(data=np.zeros((4, 6)))) == Memory()
    assert process_memory(object()) == Memory()


def test_dendrite_compartments_also_store_one_decay_per_compartment():
    from lrfdyn.loihi.processes.compartment import DendriteCompartments

    proc = DendriteCompartments(shape=(4,), dv=np.full(4, 100), reset_interval=3)
    # u and v like a LIF's (which it also has), plus a 12-bit dv per compartment
    assert process_memory(proc) == Memory(state=(4 + 4) * 24 + 4 * 12)
