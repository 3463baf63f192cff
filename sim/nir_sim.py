"""A direct numpy simulation of a NIR graph: the float semantics every lowering must meet.

It walks the graph node by node at every step, with no composition of linear
nodes, no latencies and no quantization: each linear node applies its own
matrix, each ``Delay`` keeps a history of its input, and each neuron node steps
the discrete neuron of :mod:`lrfdyn.loihi.neurons` under the chosen convention
(:class:`NeuronState`, the float step every float executor shares). Linear nodes
the lowering keeps as relay groups are linear nodes here too.
A node that reaches itself again while it is being evaluated (a recurrent loop)
reads its own output of the previous step, which is snnTorch's RLeaky.

Lava's float run must equal it spike for spike; the integer lowering's
agreement with it is what quantization costs.
"""

from __future__ import annotations

from typing import NamedTuple

import nir
import numpy as np

from lrfdyn.loihi.graph import flatten
from lrfdyn.loihi.linear import linear_map
from lrfdyn.loihi.neurons import NIR, Convention, Dynamics
from lrfdyn.loihi.wiring import delay_steps, wire


class NeuronState(NamedTuple):
    """Float state of one neuron node, and its discrete step (:mod:`lrfdyn.loihi.neurons`).

    With input ``x(t)`` and the node's :class:`~lrfdyn.loihi.neurons.Dynamics` ``d``::

        i(t) = (1 − du)·i(t−1) + gain·x(t)
        v(t) = (1 − dv)·v(t−1) + i(t) + bias
        s(t) = v(t) > v_th            (≥ under ``spike_ge``; ⌊v/v_th⌋ under ``multi_spike``;
                                       +1 / −1 / 0 for a ternary node)

    then the reset: ``zero`` sets v to 0 where s ≠ 0, ``subtract`` takes ``v_th·s`` off,
    and ``subtract_next`` (snnTorch) takes off ``v_th·s(t−1)`` before the threshold
    test, which is why the last spikes are part of the state. A node without a
    threshold (LI, I, CubaLI) sends its voltage and never resets. Arrays are
    (batch, size); every parameter is a scalar or one value per neuron.
    """

    i: np.ndarray
    v: np.ndarray
    #: The previous step's spikes (snnTorch's delayed subtraction), else zeros.
    pending: np.ndarray

    @classmethod
    def zeros(cls, batch: int, size: int) -> NeuronState:
        """The state before the first step: all zero."""
        return cls(np.zeros((batch, size)), np.zeros((batch, size)), np.zeros((batch, size)))

    def integrate(self, x: np.ndarray, d: Dynamics) -> NeuronState:
        """``i(t)`` and ``v(t)`` after input ``x``, before any threshold test or reset."""
        i = (1.0 - d.du) * self.i + d.gain * x
        return NeuronState(i, (1.0 - d.dv) * self.v + i + d.bias, self.pending)

    def fire(self, d: Dynamics) -> tuple[np.ndarray, NeuronState]:
        """The output of an integrated state (spikes, or v without a threshold) and the
        state after the reset."""
        if not d.spiking:
            return self.v.copy(), self
        v = self.v - d.v_th * self.pending if d.reset == "subtract_next" else self.v
        s = spikes(v, d)
        pending = s if d.reset == "subtract_next" else self.pending
        if d.reset == "subtract":
            v = v - d.v_th * s
        elif d.reset == "zero":
            v = np.where(s != 0, 0.0, v)
        return s, NeuronState(self.i, v, pending)

    def step(self, x: np.ndarray, d: Dynamics) -> tuple[np.ndarray, NeuronState]:
        """One step, ``(x, state, d) -> (out, state)``: :meth:`integrate`, then :meth:`fire`."""
        return self.integrate(x, d).fire(d)


def spikes(v: np.ndarray, d: Dynamics) -> np.ndarray:
    """Spikes of voltages v (0/1, counts ⌊v/v_th⌋ under Sinabs' MultiSpike, or ±1/0 for a
    ternary node)."""
    if d.ternary:
        return (v > d.v_th).astype(np.float64) - (v < -np.asarray(d.v_th)).astype(np.float64)
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
    # Only the neurons' dynamics and shapes come from the lowering's walk. Its other
    # groups are relays, linear nodes it chose to keep as graded neurons (a pooling
    # whose composition with the next layer would not stay shared): here they are
    # linear nodes like any other.
    w = wire(graph, conv, timesteps=t_in)
    cells = [p for p in w.groups if p.dynamics is not None]
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    shapes = {w.input.name: w.input_shape, **{p.name: p.inputs.shape for p in cells}}
    dyns = {p.name: p.dynamics for p in cells}
    states = {p.name: NeuronState.zeros(batch, p.inputs.bias.size) for p in cells}
    maps = {}
    history: dict[str, list[np.ndarray]] = {}
    last = {p.name: np.zeros((batch, p.inputs.bias.size)) for p in cells}
    out: dict[str, list[np.ndarray]] = {n: [] for n in states}

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
        if n in states:
            result, states[n] = states[n].step(total, dyns[n])
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
        for n in [p.name for p in cells] + list(graph.nodes):
            value(n, t, set(), now)
        last.update({n: now[n] for n in states})
    return {n: np.stack(v, axis=1) for n, v in out.items()}
