"""A direct numpy simulation of a NIR graph: the float semantics every lowering must meet.

It walks the graph node by node at every step, with no composition of linear
nodes, no latencies and no quantization: each linear node applies its own
matrix, each ``Delay`` keeps a history of its input, and each neuron node steps
the discrete neuron of :mod:`lrfdyn.loihi.neurons` under the chosen convention.
A node that reaches itself again while it is being evaluated (a recurrent loop)
reads its own output of the previous step, which is snnTorch's RLeaky.

Lava's float run must equal it spike for spike; the integer lowering's
agreement with it is what quantization costs.
"""

from __future__ import annotations

import nir
import numpy as np

from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.linear import linear_map
from lrfdyn.loihi.lower import delay_steps, wire
from lrfdyn.loihi.neurons import NIR, Convention, Dynamics


class _Neuron:
    """State of one neuron node: current, voltage and (snnTorch's reset) last spikes."""

    def __init__(self, dyn: Dynamics, batch: int, size: int) -> None:
        self.dyn = dyn
        self.i = np.zeros((batch, size))
        self.v = np.zeros((batch, size))
        self.pending = np.zeros((batch, size))

    def step(self, x: np.ndarray) -> np.ndarray:
        d = self.dyn
        self.i = (1.0 - d.du) * self.i + d.gain * x
        self.v = (1.0 - d.dv) * self.v + self.i + d.bias
        if not d.spiking:
            return self.v.copy()
        if d.reset == "subtract_next":
            self.v = self.v - d.v_th * self.pending
        s = spikes(self.v, d)
        if d.reset == "subtract_next":
            self.pending = s
        elif d.reset == "subtract":
            self.v = self.v - d.v_th * s
        else:
            self.v = np.where(s > 0, 0.0, self.v)
        return s


def spikes(v: np.ndarray, d: Dynamics) -> np.ndarray:
    """Spikes of voltages v (0/1, or counts ⌊v/v_th⌋ under Sinabs' MultiSpike)."""
    if d.multi_spike:
        return np.where(v >= d.v_th, np.floor(v / d.v_th), 0.0)
    return ((v >= d.v_th) if d.spike_ge else (v > d.v_th)).astype(np.float64)


def simulate_nir(graph: nir.NIRGraph, x: np.ndarray, conv: Convention = NIR,
                 steps: int | None = None) -> dict[str, np.ndarray]:
    """Run inputs ``x`` (B, T, input_size) through ``graph``.

    Args:
        steps: steps to run (default T); the input is zero after step T.

    Returns:
        Every neuron node's output, (B, steps, size): spikes as 0/1 (counts under a
        multi-spike convention), or the voltage of a node that never spikes.
    """
    graph = flatten(graph)
    x = np.asarray(x, np.float64)
    batch, t_in = x.shape[:2]
    steps = t_in if steps is None else steps
    # Only the neurons' shapes come from the lowering's walk; nothing else is shared.
    w = wire(graph, conv, timesteps=t_in)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    shapes = {w.input.name: w.input_shape, **{p.name: p.inputs.shape for p in w.groups}}
    neurons = {p.name: _Neuron(p.dynamics, batch, p.inputs.bias.size) for p in w.groups}
    maps = {}
    history: dict[str, list[np.ndarray]] = {}
    last = {p.name: np.zeros((batch, p.inputs.bias.size)) for p in w.groups}
    out: dict[str, list[np.ndarray]] = {n: [] for n in neurons}

    def value(n: str, t: int, busy: set[str], now: dict[str, np.ndarray]) -> np.ndarray:
        if n in now:
            return now[n]
        if n == w.input.name:
            return x[:, t] if t < t_in else np.zeros_like(x[:, 0])
        if n in busy:  # a loop back into a neuron: its output of the previous step
            return last[n]
        busy.add(n)
        total = sum(value(p, t, busy, now) for p in preds[n])
        node = graph.nodes[n]
        if n in neurons:
            result = neurons[n].step(total)
            out[n].append(result)
        elif isinstance(node, nir.Delay):
            history.setdefault(n, []).append(total)
            lags = np.broadcast_to(delay_steps(node, w.dt, n), (total.shape[1],))
            result = np.zeros_like(total)
            for k in np.unique(lags):
                if t >= k:
                    result[:, lags == k] = history[n][t - k][:, lags == k]
        elif isinstance(node, nir.Output):
            result = total
        else:
            if n not in maps:
                maps[n] = linear_map(node, next(shapes[p] for p in preds[n] if p in shapes), n)
                shapes[n] = maps[n].out_shape
            m = maps[n]
            result = np.asarray((m.matrix @ total.T).T)
            if m.bias is not None:
                result = result + m.bias
        if n not in shapes:  # Delay and Output keep their input's shape
            shapes[n] = next(shapes[p] for p in preds[n] if p in shapes)
        busy.discard(n)
        now[n] = result
        return result

    for t in range(steps):
        now: dict[str, np.ndarray] = {}
        # Groups in the lowering's order, so that a loop is always entered at its neuron.
        for n in [p.name for p in w.groups] + list(graph.nodes):
            value(n, t, set(), now)
        last.update({n: now[n] for n in neurons})
    return {n: np.stack(v, axis=1) for n, v in out.items()}
