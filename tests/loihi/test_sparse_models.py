"""lrfdyn's faster Sparse/DelaySparse models give exactly Lava's own spikes."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lrfdyn.loihi.lower import lower
from lrfdyn.sim.lava_run import run_lava


def test_fast_models_equal_lavas_own_on_a_sparse_delayed_network(make_shortcut_graph) -> None:
    net = lower(make_shortcut_graph(seed=7))
    for s in net.synapses:  # force the Sparse and DelaySparse processes
        s.weights = sp.csr_matrix(s.weights)
    assert any(s.delay for s in net.synapses) and all(s.is_sparse for s in net.synapses)
    x = np.random.default_rng(3).integers(0, 256, (3, 12))
    fast = run_lava(net, x).spikes
    stock = run_lava(net, x, stock_models=True).spikes
    for g in net.groups:
        assert np.array_equal(fast[g], stock[g]), g
    assert sum(int(v.sum()) for v in stock.values()) > 0


def test_delay_split_equals_lavas_construction() -> None:
    from lrfdyn.loihi.processes.sparse import delay_split  # imports the 3.11 shim before lava

    from lava.proc.sparse.models import AbstractPyDelaySparseModel

    rng = np.random.default_rng(0)
    weights = sp.random(7, 9, density=0.5, random_state=1, format="csr") * 100
    weights.data = np.round(weights.data).astype(np.int64) + 1
    delays = weights.copy()
    delays.data = rng.integers(0, 4, delays.nnz)
    want = AbstractPyDelaySparseModel.get_delay_wgts_mat(weights, delays, 3)
    got = delay_split(weights, delays, 3)
    assert got.shape == want.shape and (got != want).nnz == 0
