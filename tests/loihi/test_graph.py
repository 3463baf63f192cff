"""Subgraph flattening: names, ports and nesting."""

from __future__ import annotations

import nir
import numpy as np

from lrfdyn.loihi.graph import flatten


def _io(n: int) -> dict:
    return {"input": nir.Input(input_type={"input": np.array([n])}),
            "output": nir.Output(output_type={"output": np.array([n])})}


def _block(inner: nir.NIRNode) -> nir.NIRGraph:
    return nir.NIRGraph(nodes={**_io(2), "x": inner}, edges=[("input", "x"), ("x", "output")],
                        type_check=False)


def test_nested_subgraphs_inline_with_dotted_names_and_dissolved_ports() -> None:
    inner = _block(nir.Scale(scale=np.ones(2)))
    outer = nir.NIRGraph(
        nodes={**_io(2), "a": _block(inner), "b": _block(nir.Scale(scale=np.ones(2)))},
        # "a" is reached by name, "b" through its named ports.
        edges=[("input", "a"), ("a", "b.input"), ("b.output", "output")],
        metadata={"dt": 1e-3}, type_check=False)
    flat = flatten(outer)
    assert set(flat.nodes) == {"input", "output", "a.x.x", "b.x"}
    assert sorted(flat.edges) == sorted([("input", "a.x.x"), ("a.x.x", "b.x"),
                                         ("b.x", "output")])
    assert flat.metadata == {"dt": 1e-3}


def test_a_graph_without_subgraphs_is_returned_as_is() -> None:
    g = _block(nir.Scale(scale=np.ones(2)))
    assert flatten(g) is g
