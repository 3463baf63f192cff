"""NIR types that nir 1.0.8 gets wrong, fixed in one place for export and for reading;
lrfdyn's NIR extensions; and the checks of a NIR graph read from a file (:func:`check_graph`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import (
    MAX_SEED,
    MAX_TIMESTEPS,
    NIRFileError,
    ValidationError,
    check_finite_array,
    check_int,
    check_real,
    is_int,
    is_real,
    one_line,
    show,
)


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
#: Every extension this version reads (:func:`check_graph` refuses any other).
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


# ---------------------------------------------------------------- NIR graphs

#: Node fields that are not parameters.
_NOT_PARAMS = ("input_type", "output_type", "metadata", "nodes", "edges")
#: Time constants: dividing by them must give a positive number of steps.
_TAU_FIELDS = ("tau", "tau_mem", "tau_syn")


def check_graph(graph: Any, path: Path | str) -> None:
    """A NIR graph's names, edges, Input/Output nodes, parameters and metadata."""
    where = str(path)
    fix = "re-export it with `lrfdyn export` or fix its producer"
    _check_nodes(graph, where, fix, prefix="")
    check_endpoints(graph, path)
    check_graph_metadata(graph.metadata, where, neurons=_neuron_count(graph))


def check_endpoints(graph: Any, path: Path | str) -> None:
    """A graph with an Input and an Output node (as written, before nir infers types)."""
    kinds = [type(n) for n in graph.nodes.values()]
    if nir.Input not in kinds or nir.Output not in kinds:
        lacking = " and ".join(k.__name__ for k in (nir.Input, nir.Output) if k not in kinds)
        raise NIRFileError(f"{path}: the graph has no {lacking} node; a runnable graph needs "
                           "both; re-export it with `lrfdyn export` or fix its producer")


def _check_nodes(graph: Any, where: str, fix: str, prefix: str) -> None:
    names = set(graph.nodes)
    for name, node in graph.nodes.items():
        if not isinstance(name, str) or not name:
            raise NIRFileError(f"{where}: node name {show(name)} is not a non-empty string; {fix}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise NIRFileError(f"{where}: node name {show(prefix + name)} has control "
                               f"characters; {fix}")
        label = f"node {show(prefix + name)} ({type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            _check_nodes(node, where, fix, prefix=f"{prefix}{name}.")
            continue
        if not dataclasses.is_dataclass(node):
            raise NIRFileError(f"{where}: {label} is not a NIR node; {fix}")
        kind = extension_kind(node)
        if kind is not None:
            if kind not in KNOWN_EXTENSIONS:
                known = ", ".join(map(repr, KNOWN_EXTENSIONS))
                raise NIRFileError(f"{where}: {label} uses lrfdyn extension {show(kind)}, "
                                   f"which this version does not know (it knows {known}); "
                                   "upgrade lrfdyn or re-export the model")
            continue  # its carrier's fields are NaN on purpose (lrfdyn.nir_types.graded_node)
        for f in dataclasses.fields(node):
            if f.name in _NOT_PARAMS:
                continue
            value = getattr(node, f.name)
            if value is None or isinstance(value, str):
                continue
            try:
                arr = check_finite_array(f.name, value)
            except ValidationError as exc:
                raise NIRFileError(f"{where}: {label}: {one_line(exc)}; {fix}") from None
            if f.name in _TAU_FIELDS and arr.size and float(arr.min()) <= 0:
                raise NIRFileError(f"{where}: {label}: {f.name} must be positive, has "
                                   f"{float(arr.min()):g}; {fix}")
        if isinstance(node, nir.Affine):
            w, b = np.asarray(node.weight), np.asarray(node.bias)
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise NIRFileError(f"{where}: {label}: bias has shape {b.shape}, weight "
                                   f"{w.shape} needs ({w.shape[0] if w.ndim else '?'},); {fix}")
        if isinstance(node, nir.Conv2d):
            w, b = np.asarray(node.weight), np.asarray(node.bias)
            if w.ndim != 4 or b.size not in (0, 1, w.shape[0]):
                raise NIRFileError(f"{where}: {label}: bias has {b.size} values, the weight "
                                   f"{w.shape} has {w.shape[0] if w.ndim else '?'} output "
                                   f"channels; {fix}")
    for edge in graph.edges:
        if (not isinstance(edge, (tuple, list)) or len(edge) != 2
                or not all(isinstance(e, str) for e in edge)):
            raise NIRFileError(f"{where}: edge {show(edge)} is not a pair of node names; {fix}")
        for end in edge:
            head = end.split(".", 1)[0]
            if end not in names and head not in names:
                raise NIRFileError(f"{where}: edge {show(tuple(edge))} names no node "
                                   f"{show(prefix + end)}; {fix}")


def _neuron_count(graph: Any) -> int:
    total = 0
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            total += _neuron_count(node)
        elif isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI, nir.I)):
            for f in ("v_threshold", "tau", "r"):
                if hasattr(node, f):
                    total += int(np.asarray(getattr(node, f)).size)
                    break
    return total


def check_graph_metadata(meta: Any, where: str, *, neurons: int = 0) -> None:
    """The metadata keys lrfdyn reads: types, ranges, and a fast refusal of absurd runs."""
    fix = "fix the graph's metadata or re-export it with `lrfdyn export`"
    if not isinstance(meta, Mapping):
        raise NIRFileError(f"{where}: graph metadata is not a mapping; {fix}")

    def scalar(key: str) -> Any:
        v = meta[key]
        if isinstance(v, np.ndarray):
            if v.ndim != 0:
                raise NIRFileError(f"{where}: metadata {key!r} must be one number, got an array "
                                   f"of shape {v.shape}; {fix}")
            v = v.item()
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return v

    try:
        if "dt" in meta:
            check_real("metadata 'dt'", scalar("dt"), positive=True, where=where, fix=fix)
        if "timesteps" in meta:
            t = scalar("timesteps")
            if is_real(t) and not is_int(t) and float(t).is_integer():
                t = int(t)
            t = check_int("metadata 'timesteps'", t, low=1, where=where, fix=fix)
            if t > MAX_TIMESTEPS:
                per_sample_gb = t * max(neurons, 1) / 1e9
                hours = t * 1e-3 / 3600
                raise NIRFileError(
                    f"{where}: metadata 'timesteps' = {t} is absurd: recording its spikes needs "
                    f"about {per_sample_gb:.3g} GB per sample ({max(neurons, 1)} neurons x {t} "
                    f"steps) and Lava about {hours:.3g} h per sample at ~1 ms a step; lrfdyn "
                    f"runs at most {MAX_TIMESTEPS} steps; {fix}")
        for key in ("split_seed", "seed"):
            if key in meta:
                check_int(f"metadata {key!r}", scalar(key), low=0, high=MAX_SEED, where=where,
                          fix=fix)
        if "input_levels" in meta:
            check_real("metadata 'input_levels'", scalar("input_levels"), positive=True,
                       where=where, fix=fix)
        if "dataset" in meta and not isinstance(scalar("dataset"), str):
            raise NIRFileError(f"{where}: metadata 'dataset' must be a data set name, got "
                               f"{show(meta['dataset'])}; {fix}")
    except ValidationError as exc:
        raise NIRFileError(str(exc)) from None
