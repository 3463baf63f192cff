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


# ---------------------------------------------------------------- lrfdyn's NIR extension

#: Node-metadata key that marks a node as an lrfdyn extension (README, "NIR extension").
EXTENSION_KEY = "lrfdyn_extension"
#: Graph-metadata key listing the extensions a file uses, so a reader sees them up front.
EXTENSIONS_USED = "lrfdyn_extensions"
#: A memoryless graded neuron: ``y = Σ inputs`` (``rectify``: ``max(Σ inputs, 0)``),
#: sent on as an integer payload. NIR 1.0 has no node that sends a value it computed.
GRADED = "graded"
#: Version of the extension's definition, written beside it.
EXTENSION_VERSION = 1


def graded_node(shape: tuple[int, ...], *, rectify: bool) -> nir.Scale:
    """The :data:`GRADED` extension node for ``shape`` neurons.

    Its carrier is a ``Scale`` whose factors are all NaN on purpose: a reader that does
    not know the extension computes NaN from it and fails visibly, instead of running a
    sum where the graph means a rectifier. lrfdyn reads only the metadata.
    """
    return nir.Scale(scale=np.full(shape, np.nan, np.float32),
                     metadata={EXTENSION_KEY: GRADED, "rectify": bool(rectify),
                               "version": EXTENSION_VERSION})


def graded_extension(node: nir.NIRNode) -> bool | None:
    """``rectify`` of a :data:`GRADED` extension node; None for any other node."""
    meta = getattr(node, "metadata", None) or {}
    if str(meta.get(EXTENSION_KEY, "")) != GRADED:
        return None
    return bool(np.asarray(meta.get("rectify", False)))


def extension_kind(node: nir.NIRNode) -> str | None:
    """The extension a node is marked with (any value of :data:`EXTENSION_KEY`), or None."""
    meta = getattr(node, "metadata", None) or {}
    kind = meta.get(EXTENSION_KEY)
    return None if kind is None else str(kind)
