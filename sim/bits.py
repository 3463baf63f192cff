"""Memory in bits: :class:`Memory` (neuron state, synaptic weights, delay buffers) and
:func:`process_memory`, read off one built Lava process's Vars.

Both :mod:`lrfdyn.sim.memory` (the attention memory table) and :mod:`lrfdyn.sim.dendritic`
(the whole dendritic network) count with these, so they live below both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.loihi import fixed

#: Bits of one delay-buffer entry of a graded payload (spikes take ``fixed.BUFFER_BITS``).
GRADED_BUFFER_BITS = fixed.UV_BITS


@dataclass
class Memory:
    """Bits of neuron state, synaptic weights and buffers; ``bias_buffers`` is the part of
    ``buffers`` held by synapses from the always-on bias source (delayed to their
    group's latency, so they grow with depth), shown apart and not added twice."""

    state: int = 0
    weights: int = 0
    buffers: int = 0
    bias_buffers: int = 0

    @property
    def total(self) -> int:
        return self.state + self.weights + self.buffers

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.state + other.state, self.weights + other.weights,
                      self.buffers + other.buffers, self.bias_buffers + other.bias_buffers)

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total": self.total}


def process_memory(proc: Any) -> Memory:
    """Memory of one Lava process, from its Vars."""
    kind = type(proc).__name__
    size = lambda var: int(np.prod(var.shape))  # noqa: E731
    if kind == "DendriteCompartments":  # its decay is per compartment
        return Memory(state=(size(proc.u) + size(proc.v)) * fixed.UV_BITS
                      + size(proc.dv) * fixed.DECAY_BITS)
    if hasattr(proc, "u") and hasattr(proc, "v"):  # LIF and its subclasses
        return Memory(state=(size(proc.u) + size(proc.v)) * fixed.UV_BITS)
    if kind in ("GradedVec", "ProdNeuron"):
        return Memory(state=size(proc.v) * fixed.UV_BITS)
    graded = hasattr(proc, "num_message_bits") and \
        int(np.asarray(proc.num_message_bits.init).ravel()[0]) > 0
    bits = GRADED_BUFFER_BITS if graded else fixed.BUFFER_BITS
    if hasattr(proc, "weight") and hasattr(proc, "a_buf"):  # Lava's Conv: a shared kernel
        return Memory(weights=size(proc.weight) * fixed.WEIGHT_BITS,
                      buffers=size(proc.a_buf) * bits)
    if hasattr(proc, "weights") and hasattr(proc, "a_buff"):  # Dense, Sparse, Delay*
        w = proc.weights.init
        stored = int(w.nnz) if sp.issparse(w) else int(np.asarray(w).size)
        return Memory(weights=stored * fixed.WEIGHT_BITS, buffers=size(proc.a_buff) * bits)
    return Memory()  # sources and recorders are host-side I/O
