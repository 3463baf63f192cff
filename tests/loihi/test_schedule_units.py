"""Unit tests of loihi/schedule.py beyond test_lower_units': a delay relay repeats its
source's values exactly (an identity of weight 1, exponent 0), so the integer reference
sees the same values at the relay as at its source. No Lava."""

from __future__ import annotations

import nir
import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import DELAY_RELAY_STEPS
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import run_reference


def _long_shortcut(depth: int, levels: int = 1) -> nir.NIRGraph:
    """input → a → depth LIFs → out, and a shortcut a → out that needs a delay beyond
    Loihi's 63 steps (the graph of test_layers' long-delay test, without biases)."""
    n = 3
    lif = lambda: nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),  # noqa: E731
                          v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}),
             "w_in": nir.Linear(weight=np.eye(n) * 3.0), "a": lif()}
    edges = [("input", "w_in"), ("w_in", "a")]
    prev = "a"
    for i in range(depth):
        nodes[f"w{i}"] = nir.Linear(weight=np.eye(n) * 2.5)
        nodes[f"h{i}"] = lif()
        edges += [(prev, f"w{i}"), (f"w{i}", f"h{i}")]
        prev = f"h{i}"
    nodes["w_last"] = nir.Linear(weight=np.eye(n) * 1.5)
    nodes["w_skip"] = nir.Linear(weight=np.eye(n) * 1.5)
    nodes["out"] = lif()
    nodes["output"] = nir.Output(output_type={"output": np.array([n])})
    edges += [(prev, "w_last"), ("w_last", "out"), ("a", "w_skip"), ("w_skip", "out"),
              ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                        metadata={"dt": 1e-3, "timesteps": 4, "input_levels": levels})


def test_a_delay_relay_repeats_its_source_value_for_value():
    net = lower(_long_shortcut(70, levels=1))
    relays = [g for g in net.groups.values() if g.kind == "delay"]
    assert relays
    into = {s.dst: s for s in net.synapses if s.dst in {r.name for r in relays}}
    for r in relays:
        s = into[r.name]
        # weight 1 per neuron, no exponent: what Lava's Dense computes is the identity
        eff = s.effective()
        eff = eff.toarray() if hasattr(eff, "toarray") else np.asarray(eff)
        assert np.array_equal(eff * 2**s.weight_exp, np.eye(r.size)), r.name
        assert s.delay <= fixed.MAX_DELAY and r.params.exp == 0 and not r.params.prod
    x = np.array([[1, 0, 1], [0, 1, 1]], np.int64)
    out = run_reference(net, x, net.steps_per_sample())
    src = "a"
    for r in sorted(relays, key=lambda g: g.latency):
        # each relay sends, in logical time, exactly what the group it repeats sent
        assert np.array_equal(out[r.name].astype(np.int64), out[src].astype(np.int64)), r.name
        assert r.latency - net.groups[src].latency <= DELAY_RELAY_STEPS
        src = r.name
    assert out["a"].any()
