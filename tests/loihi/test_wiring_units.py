"""Unit tests of loihi/wiring.py beyond test_lower_units': when a node feeding several
groups becomes a relay (the storage rule at its tie), and which inputs are graded. No Lava.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from lrfdyn.loihi.lower import lower


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n), v_reset=np.zeros(n))


def _two_readers(a: np.ndarray) -> nir.NIRGraph:
    """input (3) → A → l1 and l2, l1 → B (identity) → l2."""
    n = a.shape[0]
    nodes = {"input": nir.Input(input_type={"input": np.array([a.shape[1]])}),
             "A": nir.Linear(weight=a), "l1": _lif(n), "l2": _lif(n),
             "B": nir.Linear(weight=np.eye(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    edges = [("input", "A"), ("A", "l1"), ("A", "l2"), ("l1", "B"), ("B", "l2"),
             ("l2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                        metadata={"dt": 1e-3, "timesteps": 3, "input_levels": 1})


def test_a_node_feeding_two_groups_is_relayed_only_when_that_stores_less():
    # A's 2 outputs, read by 2 groups. Composed: its weights stored twice; relayed: once,
    # plus one weight per neuron into each reader (2·2 = 4). 4 weights: 2·4 = 4 + 4, a tie,
    # and a relay would cost a step for nothing: composed.
    tie = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]])
    assert list(lower(_two_readers(tie)).groups) == ["l1", "l2"]
    # 5 weights: 2·5 = 10 > 5 + 4: relayed
    more = np.array([[1.0, 2.0, 5.0], [0.0, 3.0, 4.0]])
    net = lower(_two_readers(more))
    assert list(net.groups) == ["A", "l1", "l2"] and net.groups["A"].kind == "relay"


@pytest.mark.parametrize("levels, bits", [(1, 0), (2, 24), (255, 24)])
def test_an_input_of_more_than_one_level_sends_graded_payloads(levels, bits):
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "w": nir.Linear(weight=np.array([[0.5, 1.0, 0.0], [0.0, 0.25, 1.0]])),
             "l": _lif(2), "output": nir.Output(output_type={"output": np.array([2])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "w"), ("w", "l"), ("l", "output")],
                     type_check=False,
                     metadata={"dt": 1e-3, "timesteps": 3, "input_levels": levels})
    (syn,) = lower(g).synapses
    assert syn.src == "input" and syn.num_message_bits == bits
