"""What every exporter shares: the graph under construction, the table of exporters,
and the NIR nodes that several block exporters build.

:data:`EXPORTERS` maps a module type to a function that appends that module's NIR nodes
to a :class:`GraphBuilder` and returns the name of the node that carries its output;
exporters fill it with ``@register(ModuleType)`` when their module is imported
(:mod:`lrfdyn.export.to_nir` imports them all). The node builders here (a Spikformer LIF,
a grouped Conv2d, a folded Linear + BN, a q/k/v spike layer) are used by both
:mod:`lrfdyn.export.transformer` and :mod:`lrfdyn.export.a2os2a`, so neither imports the other's
internals.
"""

from __future__ import annotations

from collections.abc import Callable

import nir
import numpy as np
import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.nir_types import grouped_input_type
from lrfdyn.registry import registrar
from lrfdyn.train.models.attention import LinearBN
from lrfdyn.train.models.layers import LIF
from lrfdyn.train.units import DT, tau_to_seconds


class GraphBuilder:
    """Collects named NIR nodes and edges; node names are unique and deterministic."""

    def __init__(self) -> None:
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        #: Graph metadata an exporter adds (e.g. the NIR extensions it used).
        self.metadata: dict[str, object] = {}

    def add(self, name: str, node: nir.NIRNode, *sources: str) -> str:
        if name in self.nodes:
            raise ValidationError(f"duplicate NIR node name {name!r}")
        self.nodes[name] = node
        self.edges.extend((src, name) for src in sources)
        return name


Exporter = Callable[[GraphBuilder, nn.Module, str, str], str]
#: Module type -> its exporter; filled by ``@register(ModuleType)``.
EXPORTERS: dict[type, Exporter] = {}
register = registrar(EXPORTERS)


def lif_node(m: LIF, shape: tuple[int, ...]) -> nir.LIF:
    """A Spikformer LIF layer of the given shape as a NIR LIF."""
    return nir.LIF(
        # float64: a float32 2e-3 would read back as 2.0000001 steps.
        tau=np.full(shape, tau_to_seconds(m.p.tau, DT), np.float64),
        r=np.ones(shape, np.float32),
        v_leak=np.zeros(shape, np.float32),
        v_threshold=np.full(shape, m.p.v_th, np.float32),
        v_reset=np.zeros(shape, np.float32),
    )


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as ``y = scale·x + shift`` (float64)."""
    var = bn.running_var.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
    return scale.numpy(), shift.numpy()


def conv_node(weight: np.ndarray, bias: np.ndarray, shape: tuple[int, int, int], *,
              stride: int = 1, padding: tuple[int, int] = (0, 0), dilation: int = 1,
              groups: int = 1) -> nir.Conv2d:
    """A Conv2d node with its groups, as NIR defines them (``weight`` is
    ``(c_out, c_in // groups, kh, kw)``); see :func:`lrfdyn.nir_types.grouped_input_type`."""
    node = nir.Conv2d(
        input_shape=(shape[1], shape[2]), weight=weight.astype(np.float32),
        stride=(stride, stride), padding=padding, dilation=(dilation, dilation), groups=groups,
        bias=bias.astype(np.float32),
    )
    return grouped_input_type(node)


def linear_bn(g: GraphBuilder, name: str, m: LinearBN, src: str,
              shape: tuple[int, int, int]) -> str:
    """Per-token ``BN(Linear(x))`` as a 1×1 Conv2d on the (C, H, W) grid."""
    scale, shift = bn_scale_shift(m.bn)
    w = m.linear.weight.detach().double().numpy() * scale[:, None]
    return g.add(name, conv_node(w[:, :, None, None], shift, shape), src)


def qkv_spikes(g: GraphBuilder, name: str, m: nn.Module, kind: str, src: str,
               shape: tuple[int, int, int]) -> str:
    """``SN(BN(Linear_kind(x)))`` for kind in q, k, v: the conv and its LIF."""
    cur = linear_bn(g, f"{name}.{kind}", getattr(m, kind), src, shape)
    return g.add(f"{name}.{kind}_lif", lif_node(getattr(m, f"{kind}_lif"), shape), cur)
