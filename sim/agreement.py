"""How a Lava run of a NIR graph agrees with its float semantics, layer by layer.

* :func:`by_node` puts Lava's groups back into the graph's neuron nodes, over the
  input's T steps, in float units (sub-populations of :mod:`lrfdyn.sim.per_neuron`
  gathered; an integer voltage readout as ``v_int / Λ``).
* :func:`agreement` gives each layer's share of (neuron, step) equal to the float
  semantics (and to a float model that resets as Loihi does); spikes must be equal,
  voltages within :data:`VOLTAGE_RTOL`, integer voltages within
  :data:`FIXED_VOLTAGE_TOL` of the layer's peak.
* :func:`local_agreement` drives each layer's float model with what Lava sent it, so a
  layer's own quantization is told apart from the flips it inherits;
  :func:`state_peaks` drives each layer the same way with the float model's own
  spikes, for the calibration of :class:`~lrfdyn.loihi.fine.FineQuantizer`.
* :func:`silent_layers` names spiking layers that never spiked although fed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import nir
import numpy as np

from lrfdyn.loihi.ir import GroupKind, LoweredNetwork, NeuronGroup
from lrfdyn.loihi.neurons import Convention
from lrfdyn.loihi.wiring import GroupPlan, Wiring, wire
from lrfdyn.sim.nir_sim import NeuronState, simulate_nir
from lrfdyn.sim.per_neuron import Split

#: Voltages (never spikes) agree when within this relative difference.
VOLTAGE_RTOL = 1e-9
#: An integer voltage readout agrees within this share of the layer's peak |v|.
FIXED_VOLTAGE_TOL = 0.01


class Layer(NamedTuple):
    """One NIR neuron node's Lava output: values (B, T, size) in float units."""

    values: np.ndarray
    spiking: bool
    shape: tuple[int, ...]
    integer: bool


def original_node(group: str, splits: list[Split]) -> str:
    """The NIR node a Lava group stands for (a sub-population's whole node)."""
    for s in splits:
        if any(group == p for p, _ in s.parts):
            return s.node
    return group


def by_node(net: LoweredNetwork, lava: dict[str, np.ndarray], splits: list[Split],
            semantics: dict[str, np.ndarray], t_in: int) -> dict[str, Layer]:
    """Each NIR neuron node's Lava output over the T input steps, in float units;
    sub-populations put back together."""
    def window(name: str) -> np.ndarray:
        g = net.groups[name]
        return _readout(g, lava[name][:, g.latency : g.latency + t_in])

    out: dict[str, Layer] = {}
    parts = {p for s in splits for p, _ in s.parts}
    for name, g in net.groups.items():
        if name in semantics and name not in parts:
            out[name] = Layer(window(name), g.spiking, tuple(g.shape),
                              _in_units(g))
    for s in splits:
        first = net.groups[s.parts[0][0]]
        whole = np.zeros((len(lava[first.name]), t_in, s.size),
                         bool if first.spiking else np.float64)
        for p, idx in s.parts:
            whole[:, :, idx] = window(p)
        out[s.node] = Layer(whole, first.spiking, (s.size,), _in_units(first))
    return out


def silent_layers(graph: nir.NIRGraph, conv: Convention, got: dict[str, Layer],
                  xs: np.ndarray, t_in: int) -> list[str]:
    """Spiking layers that never spiked on Lava although something fed them."""
    w = wire(graph, conv, timesteps=t_in, shared=False)
    active = {w.input.name: int(np.count_nonzero(xs))}
    active.update({n: int(np.count_nonzero(layer.values)) for n, layer in got.items()})
    out = []
    for p in w.groups:
        if p.name not in got or not got[p.name].spiking or active[p.name]:
            continue
        fed = sum(active.get(s, 0) for s in p.inputs.sources if s != p.name)
        if fed:
            out.append(f"{p.name} never spiked in {t_in} steps although its input carried "
                       f"{fed} non-zero values; the run may be wrong (check --convention and "
                       "--dt)")
    return out


def voltages_within_tolerance(lava: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                              net: LoweredNetwork) -> dict[str, np.ndarray]:
    """Voltage readouts with every value inside :data:`VOLTAGE_RTOL` set to the expected."""
    out = dict(lava)
    for name, g in net.groups.items():
        if g.spiking:
            continue
        got = lava[name][:, g.latency :]
        want = expected[name][:, : got.shape[1]]
        close = np.isclose(got, want, rtol=VOLTAGE_RTOL, atol=VOLTAGE_RTOL)
        out[name] = lava[name].copy()
        out[name][:, g.latency :] = np.where(close, want, got)
    return out


def _in_units(g: NeuronGroup) -> bool:
    """An integer LIF (of the fixed lowering): its voltage is in Λ units per float unit."""
    return g.kind == GroupKind.LIF and g.units is not None


def _readout(g: NeuronGroup, recorded: np.ndarray) -> np.ndarray:
    """Spikes as recorded; an integer voltage readout back in float units (v_int / Λ)."""
    if g.spiking or not _in_units(g):
        return recorded
    return recorded / g.units.units


def agreement(got: dict[str, Layer], semantics: dict[str, np.ndarray],
              loihi_reset: dict[str, np.ndarray] | None, t_in: int) -> list[dict[str, Any]]:
    """Per layer over the T input steps: the share of (neuron, step) equal to the semantics
    (and, where given, to the float model that resets as Loihi does)."""
    rows = []
    for name, (values, spiking, _, integer) in got.items():
        row: dict[str, Any] = {"name": name, "neurons": int(values.shape[-1])}
        refs = [("agreement", semantics[name][:, :t_in])]
        if loihi_reset is not None:
            refs.append(("agreement_loihi_reset", loihi_reset[name][:, :t_in]))
        for key, want in refs:
            if spiking:
                same = values == want.astype(bool)
                if key == "agreement":
                    row.update(spikes_float=int(np.count_nonzero(want)),
                               spikes_lava=int(np.count_nonzero(values)))
            else:
                tol = FIXED_VOLTAGE_TOL * float(np.abs(want).max(initial=0)) if integer else 0.0
                same = np.isclose(values, want, rtol=0 if integer else VOLTAGE_RTOL,
                                  atol=tol if integer else VOLTAGE_RTOL)
                if key == "agreement":
                    row.update(spikes_float=0, spikes_lava=0,
                               max_abs_error=float(np.abs(values - want).max(initial=0)))
            row[key] = float(same.mean())
        rows.append(row)
    return rows


def _driven_input(p: GroupPlan, w: Wiring, xs: np.ndarray, sent: Mapping[str, np.ndarray],
                  t_in: int) -> np.ndarray:
    """Group ``p``'s summed input (B, t_in, size) over the first t_in steps, when the
    network input sends ``xs`` and each group ``g`` sends ``sent[g]`` (B, ≥ t_in, size):
    ``Σ_taps M·src(t − lag)`` plus the bias, a recurrent edge one step later."""
    batch, size = len(xs), p.inputs.bias.size
    total = np.zeros((batch, t_in, size)) + p.inputs.bias
    for tap, m in p.inputs.terms:
        src = xs if tap.source == w.input.name else sent[tap.source]
        src = np.asarray(src[:, :t_in], np.float64)
        lag = tap.lag + int((tap.source, p.name) in w.recurrent)
        part = np.asarray(m.matrix() @ src.reshape(batch * t_in, -1).T).T
        part = part.reshape(batch, t_in, size)
        if lag:
            part = np.concatenate([np.zeros((batch, lag, size)), part[:, :-lag]], axis=1)
        total += part
    return total


def local_agreement(graph: nir.NIRGraph, conv: Convention, got: dict[str, Layer],
                    xs: np.ndarray, t_in: int) -> dict[str, float]:
    """Each layer's agreement with its float model driven by what Lava actually sent it:
    the cost of quantizing that layer alone, apart from the flips it inherits."""
    w = wire(graph, conv, timesteps=t_in, shared=False)
    sent = {n: layer.values for n, layer in got.items()}
    out = {}
    for p in w.groups:
        if p.name not in got:
            continue
        total = _driven_input(p, w, xs, sent, t_in)
        state, outs = NeuronState.zeros(len(xs), p.inputs.bias.size), []
        for t in range(t_in):
            o, state = state.step(total[:, t], p.dynamics)
            outs.append(o)
        want = np.stack(outs, axis=1)
        layer = got[p.name]
        if layer.spiking:
            same = layer.values == want.astype(bool)
        else:
            tol = FIXED_VOLTAGE_TOL * float(np.abs(want).max(initial=0))
            same = np.isclose(layer.values, want, rtol=0, atol=tol)
        out[p.name] = float(same.mean())
    return out


def state_peaks(graph: nir.NIRGraph, conv: Convention, xs: np.ndarray
                ) -> dict[str, tuple[float, float]]:
    """Each neuron group's largest |i| and the |v| its register must hold (float units,
    v before its reset) when the float model that resets as Loihi does runs ``xs``
    (B, T, size): the calibration of :class:`~lrfdyn.loihi.fine.FineQuantizer`. A spiking
    group's v needs room only as far down as a clip could still change a later spike.
    ``graph`` is the one being lowered."""
    loihi = dataclasses.replace(conv, reset="zero", multi_spike=False)
    xs = np.asarray(xs, np.float64)
    batch, t_in = xs.shape[:2]
    sem = simulate_nir(graph, xs, loihi)
    w = wire(graph, loihi, timesteps=t_in, shared=False)
    out = {}
    for p in w.groups:
        total = _driven_input(p, w, xs, sem, t_in)
        d = p.dynamics
        state, i_peak, vs = NeuronState.zeros(batch, p.inputs.bias.size), 0.0, []
        for t in range(t_in):
            state = state.integrate(total[:, t], d)
            vs.append(state.v)  # before the reset
            i_peak = max(i_peak, float(np.abs(state.i).max(initial=0)))
            _, state = state.fire(d)
            _, state = state.fire(d)
        v = np.stack(vs, axis=1)
        if not d.spiking:
            v_peak = float(np.abs(v).max(initial=0))
        else:
            # Above threshold v resets (a clip there still spikes). Below, clipping v at
            # −C raises it by at most −C − v(t), which can only cause a spike if v later
            # rises by more than C + θ: C need not exceed min(−v(t), rise(t) − θ).
            later = np.maximum.accumulate(v[:, ::-1], axis=1)[:, ::-1]
            rise = np.concatenate([later[:, 1:], np.full_like(v[:, :1], -np.inf)], axis=1) - v
            need = np.minimum(-v, rise - np.asarray(d.v_th, np.float64))
            v_peak = float(np.maximum(need, 0.0).max(initial=0))
        out[p.name] = (i_peak, v_peak)
    return out
