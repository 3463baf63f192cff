"""Faster CPU ProcessModels for Lava's Sparse synapses, bit-identical to Lava's own.

Lava 0.10's ``PyDelaySparseModelBitAcc`` rebuilds its delay-split weight matrix
(a ``vstack`` of one masked copy of the weights per delay, plus an element-wise
zeroing of the CSR matrix) on *every* time step. On the LRF-Dyn transformer for
28×28 MNIST that is about 1.7 s per step. The weights and delays never change
after the first step, so :class:`CachedDelaySparseModel` builds that matrix once,
in one vectorized pass, and reuses it: the clip/truncate of the weights, the
buffer roll and the ``weight_exp`` shift are Lava's own code paths, inherited
unchanged.

:class:`DotSparseModel` replaces Lava's boolean column slicing of a CSR matrix
(``weights[:, s_in].sum(axis=1)``) with the equal sparse product
``weights @ s_in``: integer sums of the same terms.

``tests/sim/test_models.py`` runs networks with Lava's stock models and with
these, and requires identical spikes. They are selected per process type
through ``exception_proc_model_map`` in the run configuration, so every other
process keeps Lava's stock ``fixed_pt`` model; on Loihi 2 hardware they are not
used at all.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PySparseModelBitAcc
from lava.proc.sparse.process import DelaySparse, Sparse


def delay_split(weights: sp.spmatrix, delays: sp.spmatrix, max_delay: int) -> sp.csr_matrix:
    """Lava's ``get_delay_wgts_mat`` layout, built in one pass.

    Block k of the ``((max_delay+1)·n_out, n_in)`` result holds the weights whose
    delay is k. Lava builds the same matrix with one masked copy per delay and an
    element-wise CSR assignment, which takes minutes for a million synapses.
    """
    coo = sp.coo_matrix(weights)
    n_out = weights.shape[0]
    d = np.asarray(sp.csr_matrix(delays)[coo.row, coo.col]).ravel().astype(np.int64)
    return sp.csr_matrix((coo.data, (coo.row + d * n_out, coo.col)),
                         shape=((max_delay + 1) * n_out, weights.shape[1]))


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class CachedDelaySparseModel(PyDelaySparseModelBitAcc):
    """``PyDelaySparseModelBitAcc`` with its delay-split weight matrix built once."""

    _delay_weights = None

    def calc_act(self, s_in: np.ndarray) -> np.ndarray:
        if self._delay_weights is None:  # weights are clipped/truncated by now
            self._delay_weights = delay_split(self.weights, self.delays,
                                              self.a_buff.shape[-1] - 1)
        return np.reshape(self._delay_weights.dot(s_in),
                          (self.a_buff.shape[-1], self.weights.shape[0])).T


@implements(proc=Sparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class DotSparseModel(PySparseModelBitAcc):
    """``PySparseModelBitAcc`` whose binary input path is a sparse product."""

    def run_spk(self) -> None:
        if self.num_message_bits.item() > 0:
            super().run_spk()
            return
        # Same order as Lava's model: the first step clips and truncates the weights.
        if not self.weights_set:
            super().run_spk()
            return
        self.weight_exp = self.proc_params.get("weight_exp", 0)
        self.a_out.send(self.a_buff)
        s_in = self.s_in.recv().astype(bool)
        a_accum = np.asarray(self.weights @ s_in.astype(self.weights.dtype)).ravel()
        self.a_buff = (np.left_shift(a_accum, self.weight_exp) if self.weight_exp > 0
                       else np.right_shift(a_accum, -self.weight_exp))


#: Process type -> faster bit-identical model, for ``exception_proc_model_map``.
FAST_MODELS: dict[type, type[PyLoihiProcessModel]] = {
    DelaySparse: CachedDelaySparseModel,
    Sparse: DotSparseModel,
}
