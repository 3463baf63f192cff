"""A NIR graph and its input array made ready to run, whoever wrote them.

* The input is (T, *shape) or (T, B, *shape), in the shape of the graph's Input node;
  an Input type with leading axes of size 1 (a batch or time axis the producer wrote
  into it, or one channel) also accepts the shape without them (:func:`input_batch`).
* Input/Output types holding a batch (Norse) or batch and time axis (Rockpool) are
  read as the size their neighbour holds (:func:`io_types_fixed`).
* dt comes from ``--dt``, the graph, Rockpool's r, or the convention's default, and
  says which (:func:`with_dt`); τ/dt outside :data:`TAU_STEPS_RANGE` is flagged
  (:func:`time_constant_warnings`).
* Every neuron node's parameters are checked at once, and ``--fixed`` splits the
  per-neuron ones (:func:`check_graph`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import UnsupportedNodeError, ValidationError, check_real
from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.neurons import NEURON_LOWERINGS, Convention
from lrfdyn.sim.per_neuron import Split, split_per_neuron

#: τ/dt outside these bounds is flagged: a wrong --dt or --convention, most likely.
TAU_STEPS_RANGE = (1.0, 1e4)


def _fmt_shape(shape: tuple[Any, ...]) -> str:
    """``(T, B, 1, 28, 28)``: a shape as a person writes it (no nested tuples)."""
    return "(" + ", ".join(str(v) for v in shape) + ("," if len(shape) == 1 else "") + ")"


def accepted_input_shapes(graph_input_shape: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """The input array shapes a graph with this Input type accepts, as written in errors."""
    shape = tuple(int(v) for v in graph_input_shape)
    forms = [shape]
    core = shape
    while len(core) > 1 and core[0] == 1:  # a batch, time or channel axis of size 1
        core = core[1:]
        forms.append(core)
    out = []
    for f in forms:
        out += [("T", *f), ("T", "B", *f)]
    return out


def input_batch(graph_input_shape: tuple[int, ...], x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``x`` as (B, T, size), and whether it had a batch axis; one clear error otherwise.

    Accepts (T, *shape) and (T, B, *shape); where the Input type starts with axes of size
    1 (Norse's and Rockpool's batch axis, or a single channel (1, H, W)), also the shape
    without them, so (T, H, W) and (T, B, H, W) run a (1, H, W) graph.
    """
    x = np.asarray(x)
    shape = tuple(int(v) for v in graph_input_shape)
    forms = [f[1:] for f in accepted_input_shapes(shape)[::2]]
    for f in forms:  # unbatched first: (T, 1, H, W) for (1, H, W) is one sample
        if x.shape[1:] == f:
            return x.reshape(x.shape[0], 1, -1).transpose(1, 0, 2), False
    for f in forms:
        if x.ndim == len(f) + 2 and x.shape[2:] == f:
            return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2), True
    accepted = " or ".join(_fmt_shape(f) for f in accepted_input_shapes(shape))
    raise ValidationError(
        f"input has shape {_fmt_shape(x.shape)}, but the graph's Input is "
        f"{_fmt_shape(shape)}; give {accepted} (T steps, B samples)"
    )


def integer_input(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Loihi sends integers: spikes (levels 1) or graded payloads up to 255."""
    xi = np.rint(x)
    if not np.array_equal(xi, x) or xi.min(initial=0) < 0 or xi.max(initial=0) > 255:
        raise ValidationError(
            "--fixed needs integer input in 0..255 (spikes or graded counts); this input "
            f"has values {x.min():g}..{x.max():g}; use --float for real-valued input"
        )
    return xi.astype(np.int64), max(1, int(xi.max(initial=1)))


def with_dt(graph: nir.NIRGraph, dt: float | None, conv: Convention
            ) -> tuple[nir.NIRGraph, float, str]:
    """The graph with its dt in the metadata, the dt and where it came from."""
    if dt is not None:
        check_real("dt", dt, positive=True)  # a library caller's dt, refused as --dt is
        source = "--dt"
    elif "dt" in graph.metadata:
        return graph, float(graph.metadata["dt"]), "graph"
    elif conv.ignore_r and (found := dt_from_r(graph)) is not None:
        dt, source = found, "recovered from Rockpool's r = tau·exp(-dt/tau)/dt"
    else:
        dt, source = conv.dt, f"assumed (convention {conv.name}'s default)"
    graph = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, type_check=False,
                         metadata={**graph.metadata, "dt": dt})
    return graph, float(dt), source


def dt_from_r(graph: nir.NIRGraph) -> float | None:
    """Rockpool writes r = τ·e^{−dt/τ}/dt (τ = τ_mem): solve it for dt (it falls with dt)."""
    for node in flatten(graph).nodes.values():
        tau = getattr(node, "tau_mem", getattr(node, "tau", None))
        r = getattr(node, "r", None)
        if tau is None or r is None or not isinstance(node, (nir.CubaLIF, nir.LIF)):
            continue
        tau, r = float(np.ravel(tau)[0]), float(np.ravel(r)[0])
        if not (tau > 0 and r > 0):
            return None
        lo, hi = tau * 1e-9, tau * 50.0
        if not (tau * np.exp(-hi / tau) / hi < r < tau * np.exp(-lo / tau) / lo):
            return None
        for _ in range(200):  # bisection on a log scale
            mid = float(np.sqrt(lo * hi))
            lo, hi = (mid, hi) if tau * np.exp(-mid / tau) / mid > r else (lo, mid)
        return float(f"{np.sqrt(lo * hi):.6g}")  # the float32 r holds ~6 digits
    return None


def io_types_fixed(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
    """Input/Output types that carry a batch axis (Norse: (1, n)) or a batch and a time
    axis (Rockpool: (1, T, n)) read as the n their neighbour holds; nir.read rejects such
    graphs with type checking."""
    notes = []
    nodes = dict(graph.nodes)
    for name, node in graph.nodes.items():
        if not isinstance(node, (nir.Input, nir.Output)):
            continue
        types = node.input_type if isinstance(node, nir.Input) else node.output_type
        shape = tuple(int(v) for v in np.atleast_1d(next(iter(types.values()))))
        nbrs = [d for s, d in graph.edges if s == name] if isinstance(node, nir.Input) else \
            [s for s, d in graph.edges if d == name]
        want = None
        for nb in nbrs:
            other = graph.nodes.get(nb)
            if isinstance(node, nir.Input) and isinstance(other, (nir.Linear, nir.Affine)):
                want = (int(np.shape(other.weight)[1]),)
            elif isinstance(node, nir.Output) and other is not None and \
                    type(other) in NEURON_LOWERINGS:
                declared = np.atleast_1d(next(iter(other.output_type.values()), []))
                want = tuple(int(v) for v in declared) if declared.size else None
        # (1, n) (Norse) or (1, T, n) (Rockpool): leading batch (and time) axes.
        if (want is None or len(shape) < len(want) + 1 or shape[-len(want):] != want
                or shape[0] != 1):
            continue
        fixed_shape = np.array(want)
        nodes[name] = nir.Input(input_type={"input": fixed_shape}) \
            if isinstance(node, nir.Input) else nir.Output(output_type={"output": fixed_shape})
        notes.append(f"{name}: its type {_fmt_shape(shape)} holds a batch (and time) axis; "
                     f"read as {_fmt_shape(want)}")
    if not notes:
        return graph, notes
    return nir.NIRGraph(nodes=nodes, edges=graph.edges, type_check=False,
                        metadata=dict(graph.metadata)), notes


def check_graph(graph: nir.NIRGraph, conv: Convention, dt: float, mode: str
                ) -> tuple[nir.NIRGraph, list[Split]]:
    """Every node's parameters checked at once; one error names every offending node.

    For ``fixed`` it returns the graph with per-neuron nodes split
    (:func:`split_per_neuron`); for ``float`` the flattened graph.
    """
    flat = flatten(graph)
    per_neuron = dataclasses.replace(conv, per_neuron=True)
    problems = []
    for n, node in flat.nodes.items():
        lowering = NEURON_LOWERINGS.get(type(node))
        if lowering is None:
            continue
        try:
            lowering(node, dt, n, per_neuron)
        except (UnsupportedNodeError, ValidationError) as exc:
            msg = str(exc)
            problems.append(msg if msg.startswith(n) else f"{n}: {msg}")
    splits: list[Split] = []
    if not problems and mode == "fixed":
        flat, splits, refused = split_per_neuron(flat, conv, dt)
        problems += refused
    if problems:
        raise UnsupportedNodeError(
            f"{len(problems)} node(s) cannot be lowered: " + "; ".join(problems))
    return flat, splits


def time_constant_warnings(graph: nir.NIRGraph, conv: Convention, dt: float) -> list[str]:
    """τ/dt outside :data:`TAU_STEPS_RANGE`, per node and time constant."""
    lo, hi = TAU_STEPS_RANGE
    out = []
    for n, node in flatten(graph).nodes.items():
        for f in ("tau", "tau_syn", "tau_mem"):
            if type(node) not in NEURON_LOWERINGS or not hasattr(node, f):
                continue
            tau = np.asarray(conv.tau(np.asarray(getattr(node, f), np.float64), dt))
            ratio = tau / dt
            if ratio.size and (ratio.max() > hi or ratio.min() < lo):
                bad = float(ratio.max() if ratio.max() > hi else ratio.min())
                what = "barely leaks in a run" if bad > hi else "forgets within one step"
                out.append(f"{n}: {f}/dt = {bad:.3g} (dt {dt:g} s under convention "
                           f"{conv.name}), so the neuron {what}; check --convention and --dt")
    return out
