"""Flatten nested NIR graphs into one level of nodes before lowering.

NIR nests graphs (a ``NIRGraph`` node, e.g. snnTorch's RLeaky or a Sinabs block).
Lowering only needs neurons and the linear maps between them, so each subgraph
is inlined: its nodes are renamed ``sub.node``, and its own Input and Output
nodes dissolve into the parent's edges. An edge may name the subgraph itself
(``sub``, when it has one Input or Output) or one of its ports (``sub.input``).
"""

from __future__ import annotations

import nir

from lrfdyn.errors import ValidationError


def flatten(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with every nested NIRGraph inlined (recursively); unchanged if none."""
    if not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        return graph
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    # Where an edge into (out of) a parent-level name really starts (ends) after inlining.
    entries: dict[str, list[str]] = {}
    exits: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        sub = flatten(node)
        ports_in = [n for n, v in sub.nodes.items() if isinstance(v, nir.Input)]
        ports_out = [n for n, v in sub.nodes.items() if isinstance(v, nir.Output)]
        inner = lambda n: f"{name}.{n}"  # noqa: E731
        for n, v in sub.nodes.items():
            if n not in ports_in and n not in ports_out:
                nodes[inner(n)] = v
        for src, dst in sub.edges:
            if src in ports_in and dst in ports_out:
                raise ValidationError(f"subgraph {name!r} wires its input straight to its output")
            if src not in ports_in and dst not in ports_out:
                edges.append((inner(src), inner(dst)))
        for port in ports_in:
            entries[inner(port)] = [inner(d) for s, d in sub.edges if s == port]
        for port in ports_out:
            exits[inner(port)] = [inner(s) for s, d in sub.edges if d == port]
        if len(ports_in) == 1:
            entries[name] = entries[inner(ports_in[0])]
        if len(ports_out) == 1:
            exits[name] = exits[inner(ports_out[0])]
    for src, dst in graph.edges:
        for s in exits.get(src, [src]):
            for d in entries.get(dst, [dst]):
                edges.append((s, d))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata),
                        type_check=False)
