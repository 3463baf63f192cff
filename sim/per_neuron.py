"""Per-neuron NIR parameters as uniform Loihi sub-populations (``--fixed``).

A Loihi LIF process shares one (du, dv) and one threshold among its neurons, while
peers train them per neuron (snnTorch's learnable β and thresholds, Norse's τ).
:func:`split_per_neuron` rewrites such a node exactly: thresholds, r and w_in fold
into a ``Scale`` in front (v is linear in its input, so ``v > θ_j`` is
``v·θ/θ_j > θ``), and each distinct integer (du, dv) becomes its own sub-population,
reading its neurons through a 0/1 ``Linear`` and sending through another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, Convention, Dynamics

_DECAY_FIELDS = ("tau", "tau_syn", "tau_mem")
_FIELDS = {
    nir.LIF: ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    nir.IF: ("r", "v_threshold", "v_reset"),
    nir.LI: ("tau", "r", "v_leak"),
    nir.I: ("r",),
    nir.CubaLIF: ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    nir.CubaLI: ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    nir.Threshold: ("threshold",),
}


@dataclass
class Split:
    """How one per-neuron NIR node became uniform Loihi sub-populations.

    ``parts`` are the sub-population node names and the original neuron indices each
    holds; every part shares one integer (du, dv); thresholds and gains that differ per
    neuron are folded exactly into a ``Scale`` in front (``folded``).
    """

    node: str
    size: int
    parts: list[tuple[str, np.ndarray]]
    folded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "neurons": self.size, "subpopulations": len(self.parts),
                "sizes": [int(len(i)) for _, i in self.parts], "folded_scale": self.folded}


def _decay_keys(dyn: Dynamics, size: int) -> np.ndarray:
    """Each neuron's integer (du, dv), as Loihi would hold them: (size, 2)."""
    dv = np.broadcast_to(np.asarray(dyn.dv, np.float64), (size,))
    du = np.broadcast_to(np.asarray(dyn.du, np.float64), (size,))
    if dyn.memoryless:
        return np.zeros((size, 2), np.int64)
    dv_int = np.rint((1.0 - (1.0 - dv)) * fixed.DECAY_UNITY)
    du_int = np.clip(np.rint(du * fixed.DECAY_UNITY) - 1, 0, fixed.DECAY_UNITY - 1)
    return np.stack([du_int, dv_int], axis=1).astype(np.int64)


def _flat(values: Any, size: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, np.float64).ravel(), (size,)) \
        if np.size(values) in (1, size) else np.asarray(values, np.float64).ravel()


def _part_node(node: nir.NIRNode, idx: np.ndarray, theta: float | None) -> nir.NIRNode:
    """The uniform node of one sub-population: its decays, unit gains, one threshold."""
    kw = {}
    for f in _FIELDS[type(node)]:
        vals = np.asarray(getattr(node, f), np.float64).ravel()
        if f in _DECAY_FIELDS:
            kw[f] = np.full(len(idx), vals[idx[0]] if vals.size > 1 else vals[0])
        elif f in ("v_threshold", "threshold"):
            kw[f] = np.full(len(idx), theta)
        elif f in ("v_leak", "v_reset"):
            kw[f] = np.zeros(len(idx))
        else:  # r, w_in: their per-neuron part is folded into the Scale in front
            kw[f] = np.ones(len(idx))
    return type(node)(**kw)


def split_per_neuron(graph: nir.NIRGraph, conv: Convention, dt: float
                     ) -> tuple[nir.NIRGraph, list[Split], list[str]]:
    """The graph with every per-neuron node made of uniform nodes Loihi can hold.

    * Thresholds, r and w_in that differ per neuron are folded exactly into a ``Scale``
      in front (v is linear in the input, so ``v > θ_j`` is ``v·θ/θ_j > θ``).
    * Decays that differ per neuron: one sub-population per distinct integer (du, dv),
      each reading its neurons through a 0/1 ``Linear`` and sending through another.

    Returns the new graph, what was split, and the refusals (every node at once).
    """
    graph = flatten(graph)
    per_neuron = dataclasses.replace(conv, per_neuron=True)
    nodes = dict(graph.nodes)
    edges = list(graph.edges)
    splits: list[Split] = []
    refused: list[str] = []
    for n, node in graph.nodes.items():
        if type(node) not in _FIELDS:
            continue
        dyn = NEURON_LOWERINGS[type(node)](node, dt, n, per_neuron)
        if not dyn.per_neuron:
            continue
        size = max(np.size(v) for v in (dyn.gain, dyn.dv, dyn.du, dyn.v_th, dyn.bias)
                   if v is not None)
        keys = _decay_keys(dyn, size)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        groups = [np.flatnonzero(inverse.ravel() == k) for k in range(len(uniq))]
        loop = _in_loop(edges, n)
        shape = _declared(node)
        if len(groups) > 1 and loop:
            refused.append(f"{n} (per-neuron time constants in a recurrent layer: its "
                           f"{len(groups)} sub-populations would feed each other)")
            continue
        if len(groups) > 1 and len(shape) > 1:
            refused.append(f"{n} (per-neuron time constants in a {shape} layer: NIR has no "
                           "reshape to gather its sub-populations)")
            continue
        theta_all = None if dyn.v_th is None else _flat(dyn.v_th, size)
        theta = None if theta_all is None else float(np.mean(theta_all))
        gain_all, bias_all = _flat(dyn.gain, size), _flat(dyn.bias, size)
        scale = np.ones(size)
        parts: list[tuple[str, np.ndarray]] = []
        new_nodes: dict[str, nir.NIRNode] = {}
        for k, idx in enumerate(groups):
            pname = n if len(groups) == 1 else f"{n}.p{k}"
            part = _part_node(node, idx, theta)
            pd = NEURON_LOWERINGS[type(node)](part, dt, pname, conv)
            ratio = np.ones(len(idx)) if theta_all is None else theta / theta_all[idx]
            scale[idx] = gain_all[idx] * ratio / pd.gain
            if "v_leak" in _FIELDS[type(node)] and np.any(bias_all[idx] != 0):
                part = dataclasses.replace(part, v_leak=bias_all[idx] * ratio / pd.dv) \
                    if pd.dv else part
            new_nodes[pname] = part
            parts.append((pname, idx))
        folded = not np.allclose(scale, 1.0, rtol=0, atol=0)
        splits.append(Split(n, size, parts, folded))
        # Rewire: preds -> [fold] -> [gather_k] -> part_k -> [scatter_k] -> succs.
        preds = [parts[0][0] if s == n else s for s, d in edges if d == n]
        succs = [d for s, d in edges if s == n and d != n]
        edges = [(s, d) for s, d in edges if n not in (s, d)]
        del nodes[n]
        nodes.update(new_nodes)
        own = _own_weights(nodes, edges, preds)
        if own is not None:
            # One weighted node feeds n alone: each part gets its own rows of it, scaled,
            # so no shared intermediate (which lowering would relay) appears.
            w, b = own
            (p,) = preds
            upstream = [s for s, d in edges if d == p]
            edges = [(s, d) for s, d in edges if p not in (s, d)]
            del nodes[p]
            for pname, idx in parts:
                q = f"{p}.{pname}" if len(parts) > 1 else p
                nodes[q] = nir.Affine(weight=scale[idx, None] * w[idx],
                                      bias=scale[idx] * b[idx])
                edges += [(u, q) for u in upstream] + [(q, pname)]
            preds, folded, parts_fed = [], False, True
        else:
            parts_fed = False
        feeders = preds
        if folded:
            nodes[f"{n}.fold"] = nir.Scale(scale=scale)
            edges += [(s, f"{n}.fold") for s in preds]
            feeders = [f"{n}.fold"]
        for pname, idx in parts:
            if parts_fed:
                continue
            if len(parts) == 1:
                edges += [(f, pname) for f in feeders]
            else:
                nodes[f"{pname}.gather"] = nir.Linear(weight=np.eye(size)[idx])
                edges += [(f, f"{pname}.gather") for f in feeders]
                edges.append((f"{pname}.gather", pname))
        for d in succs:
            if len(parts) == 1 or isinstance(graph.nodes[d], nir.Output):
                edges.append((parts[0][0], d))
                continue
            for pname, idx in parts:
                if f"{pname}.scatter" not in nodes:
                    nodes[f"{pname}.scatter"] = nir.Linear(weight=np.eye(size)[:, idx])
                    edges.append((pname, f"{pname}.scatter"))
                edges.append((f"{pname}.scatter", d))
    out = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                       metadata=dict(graph.metadata))
    return out, splits, refused


def _own_weights(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]],
                 preds: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of the single Affine/Linear feeding a node and nothing else, else None."""
    if len(preds) != 1 or not isinstance(nodes.get(preds[0]), (nir.Affine, nir.Linear)):
        return None
    p = preds[0]
    if [d for s, d in edges if s == p] or not [s for s, d in edges if d == p]:
        return None  # the node's edge to n is already removed: any left is another consumer
    w = np.asarray(nodes[p].weight, np.float64)
    if w.ndim != 2:
        return None
    b = np.asarray(getattr(nodes[p], "bias", np.zeros(w.shape[0])), np.float64).ravel()
    return w, np.broadcast_to(b, (w.shape[0],)).copy()


def _in_loop(edges: list[tuple[str, str]], start: str) -> bool:
    """Whether ``start`` reaches itself again along the edges."""
    seen, todo = set(), [d for s, d in edges if s == start]
    while todo:
        a = todo.pop()
        if a == start:
            return True
        if a not in seen:
            seen.add(a)
            todo += [d for s, d in edges if s == a]
    return False


def _declared(node: nir.NIRNode) -> tuple[int, ...]:
    shape = np.atleast_1d(next(iter(node.input_type.values()), np.array([])))
    return tuple(int(v) for v in shape)
