"""Graphs written by the peers' own NIR exporters, run on Lava against the peers' own output.

Each peer builds a small network, runs it in PyTorch on a fixed random spike
input (T = 25, batch 3), and exports it with its own exporter. lrfdyn runs the
NIR file on Lava under that peer's ``--convention``: ``--float`` must give the
producer's output spikes exactly; ``--fixed`` must equal lrfdyn's integer
reference, and its agreement with the producer is reported. The peers are an
optional install (``make test-peers``); without them these tests skip.
"""

from __future__ import annotations

from collections.abc import Callable

import nir
import numpy as np
import pytest

from lrfdyn.loihi.neurons import convention
from lrfdyn.sim.interop import run_graph

torch = pytest.importorskip("torch")
T, B, N_IN = 25, 3, 10


def _spikes() -> np.ndarray:
    return (np.random.default_rng(1).random((T, B, N_IN)) < 0.4).astype(np.float32)


def _snntorch() -> tuple[nir.NIRGraph, np.ndarray, np.ndarray]:
    """Leaky → RLeaky (a recurrent subgraph) → Synaptic, snnTorch's default reset."""
    snn = pytest.importorskip("snntorch", reason="snnTorch not installed (make test-peers)")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    full = lambda n, v: torch.full((n,), v)  # noqa: E731  (scalar β cannot be type-checked)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_IN, 8), snn.Leaky(beta=full(8, 0.8), threshold=full(8, 1.0),
                                            init_hidden=True),
        torch.nn.Linear(8, 7), snn.RLeaky(beta=full(7, 0.7), threshold=full(7, 1.0),
                                          linear_features=7, init_hidden=True),
        torch.nn.Linear(7, 4), snn.Synaptic(alpha=full(4, 0.5), beta=full(4, 0.75),
                                            threshold=full(4, 1.0), init_hidden=True))
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
                m.bias.add_(0.2)
    x = _spikes()
    with torch.no_grad():
        y = np.stack([net(torch.from_numpy(x[t])).numpy() for t in range(T)])
    return export_to_nir(net, torch.zeros(1, N_IN), ignore_dims=[0]), x, y


def _norse() -> tuple[nir.NIRGraph, np.ndarray, np.ndarray]:
    """LIFBox → LIF (current-based) → IAF."""
    nt = pytest.importorskip("norse.torch", reason="Norse not installed (make test-peers)")
    from norse.torch.utils.export_nir import to_nir

    torch.manual_seed(0)
    net = nt.SequentialState(torch.nn.Linear(N_IN, 8), nt.LIFBoxCell(), torch.nn.Linear(8, 7),
                             nt.LIFCell(), torch.nn.Linear(7, 4), nt.IAFCell())
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8.0)
                m.bias.add_(0.3)
    x, state, out = _spikes(), None, []
    with torch.no_grad():
        for t in range(T):
            z, state = net(torch.from_numpy(x[t]), state)
            out.append(z.numpy())
    return to_nir(net, torch.zeros(1, N_IN)), x, np.stack(out)


def _through_file(graph: nir.NIRGraph, path) -> nir.NIRGraph:
    """The graph written and read back, as a user would pass it, where nir can write it.

    nir 1.0.8 cannot write Norse 1.1's graphs: their 0-d parameters meet h5py's
    "Scalar datasets don't support chunk/filter options". Those run from memory.
    """
    try:
        nir.write(path, graph)
    except TypeError as exc:
        assert "Scalar datasets" in str(exc)
        return graph
    return nir.read(path)


PEERS: dict[str, Callable[[], tuple[nir.NIRGraph, np.ndarray, np.ndarray]]] = {
    "snntorch": _snntorch, "norse": _norse,
}


@pytest.mark.parametrize("peer", list(PEERS))
def test_peer_graph_on_lava_float_equals_the_producer_and_fixed_is_reported(peer: str,
                                                                            tmp_path) -> None:
    graph, x, produced = PEERS[peer]()
    graph = _through_file(graph, tmp_path / "peer.nir")
    assert produced.sum() > 10, "the producer's output hardly spiked; the test would be weak"
    conv = convention(peer)
    y, report = run_graph(graph, x, mode="float", conv=conv)
    assert report.mismatches == 0, report.first_mismatch
    np.testing.assert_array_equal(y, produced.astype(bool))
    y_int, fixed = run_graph(graph, x, mode="fixed", conv=conv)
    assert fixed.mismatches == 0, fixed.first_mismatch
    agreement = float((y_int == produced.astype(bool)).mean())
    assert agreement == pytest.approx(fixed.output_agreement)  # the NIR semantics = producer
    assert agreement >= 0.9, fixed.summary()
    assert all(q["clipped"] == 0 for q in fixed.quantization), fixed.quantization
