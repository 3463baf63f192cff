"""Re-import a NIR graph into a float PyTorch module with nirtorch, and run it.

This reads the contract back on the PyTorch side: the module nirtorch builds
from the NIR file must reproduce the trained model's spikes (tested), and it
gives ``simulate`` a float accuracy computed from the file alone.

NIR's LIF is continuous-time, ``tau·dv/dt = (v_leak − v) + r·I``; lrfdyn
discretizes it with forward Euler at the graph's ``dt``, resets to ``v_reset``
and spikes on ``v >= v_threshold`` like the training model.
"""

from __future__ import annotations

import re

import nir
import nirtorch
import numpy as np
import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.nir_types import block_sum_extension, graded_extension, ternary_extension, \
    unpoisoned_ternary
from lrfdyn.train.surrogate import spike_fn


class EulerLIF(nn.Module):
    """A NIR LIF node stepped with forward Euler; ``forward(x, state) -> (z, state)``."""

    def __init__(self, node: nir.LIF, dt: float) -> None:
        super().__init__()
        as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        # Divide in float64: tau = 2e-3 s at dt = 1e-3 s must give exactly 2 steps.
        self.register_buffer("tau_steps", as_t(np.asarray(node.tau, np.float64) / dt))
        self.register_buffer("r", as_t(node.r))
        self.register_buffer("v_leak", as_t(node.v_leak))
        self.register_buffer("v_th", as_t(node.v_threshold))
        self.register_buffer("v_reset", as_t(node.v_reset))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = v + (self.r * x + self.v_leak - v) / self.tau_steps
        z = spike_fn(v - self.v_th)
        return z, torch.where(z > 0, self.v_reset.expand_as(v), v)


class EulerTernaryLIF(EulerLIF):
    """lrfdyn's ternary LIF (``ternary/1``): +1 at ``v >= θ``, −1 at ``v <= −θ``, and
    ``v ← v_reset`` after either, as A²OS²A trains it."""

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = v + (self.r * x + self.v_leak - v) / self.tau_steps
        s = spike_fn(v - self.v_th) - spike_fn(-v - self.v_th)
        return s, torch.where(s != 0, self.v_reset.expand_as(v), v)


def lif(node: nir.LIF, dt: float) -> EulerLIF:
    """A LIF, or the ternary LIF its metadata marks it as (its NaN v_leak is 0 by definition)."""
    if ternary_extension(node):
        return EulerTernaryLIF(unpoisoned_ternary(node), dt)
    return EulerLIF(node, dt)


def affine_to_linear(node: nir.Affine) -> nn.Linear:
    """nirtorch 2.6's default Affine mapper assigns ``weight.bias``, losing the bias; this doesn't."""
    weight = torch.as_tensor(np.asarray(node.weight, np.float32))
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.as_tensor(np.asarray(node.bias, np.float32)))
    return linear


class Threshold(nn.Module):
    """NIR Threshold, memoryless: ``z = H(x − θ)`` (spikes on equality, like the LIF)."""

    def __init__(self, node: nir.Threshold) -> None:
        super().__init__()
        self.register_buffer("theta", torch.as_tensor(np.asarray(node.threshold, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spike_fn(x - self.theta)


class Scale(nn.Module):
    """NIR Scale: one factor per channel (leading axis) or per element."""

    def __init__(self, node: nir.Scale) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(node.scale, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        if s.dim() == 1 and x.dim() > 2:  # per channel on (B, C, ...)
            s = s.reshape(-1, *([1] * (x.dim() - 2)))
        return x * s


class Graded(nn.Module):
    """lrfdyn's graded extension node: the summed input, rectified where it says so."""

    def __init__(self, rectify: bool) -> None:
        super().__init__()
        self.rectify = rectify

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.rectify else x


class BlockSum(nn.Module):
    """lrfdyn's block-sum extension node: at step t, the sum of its input over the steps
    of t's time block. A step's value needs later steps, so :func:`run_float` runs the
    sequence again until every block sum saw the inputs it summed (:meth:`settle`); until
    then it sends the sums of the previous pass (zeros in the first)."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block
        self.seen: list[torch.Tensor] = []
        self.sums: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = len(self.seen)
        self.seen.append(x)
        return torch.zeros_like(x) if self.sums is None else self.sums[t]

    def settle(self) -> bool:
        """End a pass: whether the sums sent in it were those of the inputs it saw."""
        seen = torch.stack(self.seen)
        sums = torch.empty_like(seen)
        for t0 in range(0, len(seen), self.block):
            sums[t0:t0 + self.block] = seen[t0:t0 + self.block].sum(dim=0)
        settled = self.sums is not None and torch.equal(torch.stack(self.sums), sums)
        self.sums, self.seen = list(sums), []
        return settled

    def reset(self) -> None:
        self.seen, self.sums = [], None


def scale_or_graded(node: nir.Scale) -> nn.Module:
    """A Scale, or the graded or block-sum extension node its metadata marks it as."""
    block = block_sum_extension(node)
    if block is not None:
        return BlockSum(block)
    rectify = graded_extension(node)
    return Scale(node) if rectify is None else Graded(rectify)


def flatten(node: nir.Flatten) -> nn.Flatten:
    """NIR counts Flatten's dims without the batch axis; nirtorch 2.6 passes them to torch as is."""
    end = node.end_dim if node.end_dim < 0 else node.end_dim + 1
    return nn.Flatten(start_dim=node.start_dim + 1, end_dim=end)


def conv2d(node: nir.Conv2d) -> nn.Conv2d:
    """nirtorch 2.6 takes ``weight.shape[1]`` as the input channels, wrong for groups > 1."""
    groups = int(np.asarray(node.groups))
    w = torch.as_tensor(np.asarray(node.weight, np.float32))
    m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                  stride=tuple(np.atleast_1d(node.stride).tolist()),
                  padding=tuple(np.atleast_1d(node.padding).tolist()),
                  dilation=tuple(np.atleast_1d(node.dilation).tolist()), groups=groups)
    m.weight.data = w
    m.bias.data = torch.as_tensor(np.asarray(node.bias, np.float32))
    return m


def _safe(name: str, i: int) -> str:
    """An identifier torch.fx can write into Python source as is: ``n<i>_<letters>``."""
    return f"n{i}_{_UNSAFE.sub('_', name)[:32]}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe_names(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, dict[str, str]]:
    """``graph`` with every node renamed to a safe identifier, and the map new -> original.

    torch.fx writes module names into the Python source it generates and compiles, and
    nirtorch 2.6 passes NIR node names through nearly unescaped (``getattr(self, "<name>")``):
    a crafted name in a NIR file would be code, a newline or backslash a SyntaxError. So
    no name from a file reaches fx: nodes become ``n<i>_<ascii letters of the name>``
    (subgraphs too), Input/Output ports are rebuilt with nir's own port names, and the
    originals are kept for messages.
    """
    originals: dict[str, str] = {}
    return _renamed(graph, originals, ""), originals


def _renamed(graph: nir.NIRGraph, originals: dict[str, str], prefix: str) -> nir.NIRGraph:
    mapping: dict[str, str] = {}
    nodes: dict[str, nir.NIRNode] = {}
    for i, (name, node) in enumerate(graph.nodes.items()):
        new = _safe(str(name), len(originals))
        originals[new] = prefix + str(name)
        mapping[name] = new
        if isinstance(node, nir.NIRGraph):
            node = _renamed(node, originals, f"{prefix}{name}.")
        elif isinstance(node, nir.Input):
            node = nir.Input(input_type={"input": np.asarray(
                next(iter(node.input_type.values())))})
        elif isinstance(node, nir.Output):
            node = nir.Output(output_type={"output": np.asarray(
                next(iter(node.output_type.values())))})
        nodes[new] = node

    def end(e: str) -> str:
        if e in mapping:
            return mapping[e]
        head, _, tail = str(e).partition(".")
        sub = graph.nodes.get(head)
        if tail and isinstance(sub, nir.NIRGraph):  # "subgraph.port"
            inner = nodes[mapping[head]]
            inner_map = dict(zip(sub.nodes, inner.nodes))
            if tail in inner_map:
                return f"{mapping[head]}.{inner_map[tail]}"
        raise ValidationError(f"edge end {e!r} names no node of the graph")

    edges = [(end(a), end(b)) for a, b in graph.edges]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata),
                        type_check=False)


def nir_to_module(graph: nir.NIRGraph) -> nn.Module:
    """nirtorch GraphModule of ``graph``; call it once per time step with its state.

    Start every sequence with :func:`fresh_state`, never ``None``: nirtorch 2.6 uses
    one dict literal as the default state and mutates it, so ``None`` would carry
    the previous sequence's membrane potentials into the next one. The module's
    children carry safe names (:func:`safe_names`), not the file's.
    """
    graph, _ = safe_names(graph)
    dt = float(graph.metadata.get("dt", 1.0))
    node_map = {
        nir.LIF: lambda node: lif(node, dt),
        nir.Affine: affine_to_linear,
        nir.Threshold: Threshold,
        nir.Scale: scale_or_graded,
        nir.Flatten: flatten,
        nir.Conv2d: conv2d,
    }
    return nirtorch.nir_to_torch(graph, node_map)


def fresh_state(module: nn.Module) -> dict[str, None]:
    """An empty state for every submodule of a nirtorch GraphModule."""
    return {name: None for name, _ in module.named_children()}


@torch.no_grad()
def run_float(graph: nir.NIRGraph, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Output spikes (N, T, classes) of the float re-import for 8-bit images."""
    module = nir_to_module(graph)
    timesteps = int(graph.metadata["timesteps"])
    levels = float(graph.metadata.get("input_levels", 1))
    block_sums = [m for m in module.modules() if isinstance(m, BlockSum)]
    outs = []
    for i in range(0, len(images), batch_size):
        x = torch.as_tensor(np.asarray(images[i : i + batch_size]), dtype=torch.float32)
        x = x / levels
        for m in block_sums:
            m.reset()
        # One pass without block sums; otherwise one more per block sum in a chain, then one
        # that confirms nothing changed.
        for _ in range(len(block_sums) + 2):
            state = fresh_state(module)
            steps = []
            for _ in range(timesteps):
                out, state = module(x, state)
                steps.append(out)
            if all([m.settle() for m in block_sums]):
                break
        outs.append(torch.stack(steps, 1))
    return torch.cat(outs).numpy()
