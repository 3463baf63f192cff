"""NIR types that nir 1.0.8 gets wrong, fixed in one place for export and for reading."""

from __future__ import annotations

import nir
import numpy as np


def grouped_input_type(node: nir.Conv2d) -> nir.Conv2d:
    """Give a grouped Conv2d its true input type.

    nir 1.0.8 infers a Conv2d's input channels as ``weight.shape[1]``, ignoring ``groups``,
    so a depthwise conv fails the graph's type check. Writing it ungrouped instead (the
    first exporter's way) stores ``c·c·kh·kw`` values: 764 MB per block for the 27×27
    token kernel of a 512-channel ImageNet model. lrfdyn writes groups as the spec
    defines them and fixes the type here; a reader of its files passes
    ``type_check=False`` to ``nir.read`` and then calls :func:`with_group_types`.
    """
    groups = int(np.asarray(node.groups))
    if groups > 1 and node.input_shape is not None:
        node.input_type = {"input": np.array([node.weight.shape[1] * groups,
                                              *np.atleast_1d(node.input_shape)])}
    return node


def with_group_types(graph: nir.NIRNode) -> nir.NIRNode:
    """Fix every grouped conv's input type in ``graph`` (and its subgraphs), then check it.

    For a graph read with ``nir.read(path, type_check=False)``: nir's own check would
    reject every file with a depthwise conv.
    """
    if not isinstance(graph, nir.NIRGraph):
        return graph
    for node in graph.nodes.values():
        if isinstance(node, nir.Conv2d):
            grouped_input_type(node)
        elif isinstance(node, nir.NIRGraph):
            with_group_types(node)
    graph.infer_types()
    for node in graph.nodes.values():  # inference re-derives grouped convs' types wrongly
        if isinstance(node, nir.Conv2d):
            grouped_input_type(node)
    graph.check_types()
    return graph
