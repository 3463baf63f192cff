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
    return _nan_carrier(shape, GRADED, rectify=bool(rectify))


def _nan_carrier(shape: tuple[int, ...], kind: str, **fields: object) -> nir.Scale:
    return nir.Scale(scale=np.full(shape, np.nan, np.float32),
                     metadata={EXTENSION_KEY: kind, **fields, "version": EXTENSION_VERSION})


def _marked(node: nir.NIRNode, kind: str) -> dict | None:
    """The metadata of a node marked as extension ``kind``; None for any other node."""
    meta = getattr(node, "metadata", None) or {}
    return meta if str(meta.get(EXTENSION_KEY, "")) == kind else None


def graded_extension(node: nir.NIRNode) -> bool | None:
    """``rectify`` of a :data:`GRADED` extension node; None for any other node."""
    meta = _marked(node, GRADED)
    return None if meta is None else bool(np.asarray(meta.get("rectify", False)))


#: A graded node that sums its input over blocks of ``block`` time steps (STAtten):
#: ``y(t) = Σ_{s ∈ B(t)} x(s)``, ``B(t) = [b·⌊t/b⌋, min(b·⌊t/b⌋ + b, T))``. A step's
#: output needs the later steps of its block, so it has no causal per-step form; the
#: lowering delays the consumers instead (a latency of b − 1 steps).
BLOCK_SUM = "block_sum"
#: Every extension this version reads (:mod:`lrfdyn.validate` refuses any other).
KNOWN_EXTENSIONS = (GRADED, BLOCK_SUM)


def block_sum_node(shape: tuple[int, ...], *, block: int) -> nir.Scale:
    """The :data:`BLOCK_SUM` extension node, on the same NaN carrier as :func:`graded_node`."""
    return _nan_carrier(shape, BLOCK_SUM, block=int(block))


def block_sum_extension(node: nir.NIRNode) -> int | None:
    """The block length of a :data:`BLOCK_SUM` node; None for any other node."""
    meta = _marked(node, BLOCK_SUM)
    return None if meta is None else int(np.asarray(meta.get("block", 1)))


def mark_extension(metadata: dict, kind: str) -> None:
    """Add ``kind/version`` to a graph's :data:`EXTENSIONS_USED` list (comma-separated)."""
    used = [u for u in str(metadata.get(EXTENSIONS_USED, "")).split(",") if u]
    tag = f"{kind}/{EXTENSION_VERSION}"
    if tag not in used:
        metadata[EXTENSIONS_USED] = ",".join([*used, tag])


def extension_kind(node: nir.NIRNode) -> str | None:
    """The extension a node is marked with (any value of :data:`EXTENSION_KEY`), or None."""
    meta = getattr(node, "metadata", None) or {}
    kind = meta.get(EXTENSION_KEY)
    return None if kind is None else str(kind)


# ---------------------------------------------------------------- ternary/1 (A²OS²A's Q and K)

#: A LIF with two thresholds ±v_threshold that emits {−1, 0, +1} and resets to 0 after
#: either spike: ``v ← v + (r·x − v)·dt/τ``; ``s = +1`` where ``v`` crosses
#: ``+v_threshold``, ``−1`` where it crosses ``−v_threshold``; ``v ← 0`` where ``s ≠ 0``.
#: Readers send ``s`` on as a signed value. NIR 1.0's neurons spike with one sign only.
TERNARY = "ternary"
KNOWN_EXTENSIONS = (*KNOWN_EXTENSIONS, TERNARY)


def ternary_node(tau: np.ndarray, v_threshold: np.ndarray) -> nir.LIF:
    """The :data:`TERNARY` extension node: a ``nir.LIF`` carrier with the true ``tau``,
    ``r = 1``, ``v_threshold`` (the upper threshold; the lower one is its negative) and
    ``v_reset = 0``, whose ``v_leak`` is NaN on purpose.

    Why poison ``v_leak``: a reader that ignores the mark would otherwise run a plausible
    one-sided LIF, spiking +1 only and keeping v below −θ instead of sending −1. With
    ``v_leak`` NaN its membrane is NaN from the first step (every neuron, whatever the
    input), so it never produces plausible spikes. The definition fixes ``v_leak = 0``,
    and lrfdyn reads only the other fields and the metadata.
    """
    shape = np.shape(tau)
    return nir.LIF(tau=np.asarray(tau, np.float64), r=np.ones(shape, np.float32),
                   v_leak=np.full(shape, np.nan, np.float32),
                   v_threshold=np.asarray(v_threshold, np.float32),
                   v_reset=np.zeros(shape, np.float32),
                   metadata={EXTENSION_KEY: TERNARY, "version": EXTENSION_VERSION})


def ternary_extension(node: nir.NIRNode) -> bool:
    """Whether ``node`` is a :data:`TERNARY` extension node."""
    meta = getattr(node, "metadata", None) or {}
    return str(meta.get(EXTENSION_KEY, "")) == TERNARY


def unpoisoned_ternary(node: nir.LIF) -> nir.LIF:
    """The carrier with its defined ``v_leak = 0``: the LIF whose voltage the ternary
    neuron integrates (its spike rule is the extension's own)."""
    import dataclasses

    return dataclasses.replace(node, v_leak=np.zeros(np.shape(node.tau), np.float32),
                               metadata={})
