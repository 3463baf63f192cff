"""Export a trained lrfdyn model to a NIR graph.

Dispatch is by table: :data:`EXPORTERS` maps a module type to a function that
appends that module's NIR nodes to a :class:`GraphBuilder` and returns the name
of the node that carries its output. A module type without an exporter raises
:class:`~lrfdyn.errors.UnsupportedNodeError` naming it; nothing is skipped.

Conventions of the graphs written here (the contract with :mod:`lrfdyn.loihi`):

* ``graph.metadata`` holds ``dt`` (seconds per step), ``timesteps`` (T),
  ``producer = "lrfdyn"``, ``input_encoding = "graded"`` and ``input_levels = 255``:
  the input node receives the 8-bit pixels divided by 255, every step.
* A Spikformer LIF with time constant tau steps is ``nir.LIF(tau=tau·dt, r=1,
  v_leak=0, v_threshold=v_th, v_reset=0)``: forward Euler with step dt gives
  ``v ← (1 − 1/tau)·v + (1/tau)·x`` exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import nir
import numpy as np
from torch import nn

from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.export import transformer  # noqa: F401 - registers the Spikformer's exporter
from lrfdyn.export.builder import EXPORTERS, GraphBuilder, lif_node, register
from lrfdyn.io import write_with
from lrfdyn.train.models.layers import LIF
from lrfdyn.train.models.mlp import SpikingMLP
from lrfdyn.train.units import DT

#: The input receives 8-bit pixels divided by this, every step (direct encoding).
INPUT_LEVELS = 255


def export_module(g: GraphBuilder, module: nn.Module, name: str, src: str) -> str:
    """Export one module whose input is node ``src``; return its output node's name."""
    try:
        fn = EXPORTERS[type(module)]
    except KeyError:
        raise UnsupportedNodeError(
            f"{name}: {type(module).__name__} has no NIR export; supported modules are "
            f"{sorted(t.__name__ for t in EXPORTERS)}"
        ) from None
    return fn(g, module, name, src)


@register(nn.Linear)
def _linear(g: GraphBuilder, m: nn.Linear, name: str, src: str) -> str:
    weight = m.weight.detach().cpu().numpy().astype(np.float32)
    if m.bias is None:
        return g.add(name, nir.Linear(weight=weight), src)
    bias = m.bias.detach().cpu().numpy().astype(np.float32)
    return g.add(name, nir.Affine(weight=weight, bias=bias), src)


@register(LIF)
def _lif(g: GraphBuilder, m: LIF, name: str, src: str) -> str:
    return g.add(name, lif_node(m, (_output_size(g, src),)), src)


@register(SpikingMLP)
def _mlp(g: GraphBuilder, m: SpikingMLP, name: str, src: str) -> str:
    shape = next(iter(g.nodes[src].output_type.values()))
    src = g.add("flatten", nir.Flatten(input_type={"input": np.asarray(shape)}, start_dim=0), src)
    for child_name, child in m.layers.named_children():
        src = export_module(g, child, f"layers.{child_name}", src)
    return src


def _output_size(g: GraphBuilder, name: str) -> int:
    out = g.nodes[name].output_type
    return int(np.prod(next(iter(out.values()))))


def model_to_nir(model: nn.Module, input_shape: tuple[int, ...], timesteps: int) -> nir.NIRGraph:
    """Build the NIR graph of ``model`` for inputs of ``input_shape`` (without batch)."""
    g = GraphBuilder()
    src = g.add("input", nir.Input(input_type={"input": np.array(input_shape)}))
    last = export_module(g, model, "model", src)
    g.add("output", nir.Output(output_type={"output": np.array([_output_size(g, last)])}), last)
    graph = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={
        "producer": "lrfdyn",
        "dt": DT,
        "timesteps": int(timesteps),
        "input_encoding": "graded",
        "input_levels": INPUT_LEVELS,
        "image_shape": list(input_shape),
        **g.metadata,
    })
    return graph


def write_nir(graph: nir.NIRGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` atomically (NIR's writer picks the format from the suffix)."""
    return write_with(path, lambda tmp: nir.write(tmp, graph))

