"""NIR neuron nodes discretized at step dt: the one float model every backend implements.

NIR defines neurons in continuous time. lrfdyn discretizes every neuron node into
:class:`Dynamics`, a current-based (CUBA) neuron stepped once per dt::

    i[t] = (1 − du)·i[t−1] + gain·x[t]             x: the summed input of the node
    v[t] = (1 − dv)·v[t−1] + i[t] + bias
    s[t] = v[t] > v_th                               (spiking nodes only)
    reset "zero":          v[t] ← 0 where s[t]       (NIR's v_reset must be 0)
    reset "subtract_next": v[t+1] gets −v_th·s[t]     (snnTorch's default)

This is Lava's LIF order (``AbstractPyLifModelFloat``): the current is updated
first and the voltage integrates the new current. The integer lowering
(:mod:`lrfdyn.loihi.quantize`) quantizes it, the float lowering
(:mod:`lrfdyn.loihi.float_lower`) keeps it, and the numpy simulation of the NIR
graph (:mod:`lrfdyn.sim.nir_sim`) steps it directly.

How a node maps depends on the *convention* of the framework that wrote the graph,
chosen explicitly (``--convention``), never guessed:

* ``nir``: forward Euler of NIR's equations. ``LIF``: v += dt/τ·(v_leak − v + r·x).
  ``CubaLIF``: i += dt/τ_syn·(−i + w_in·x), then v += dt/τ_mem·(v_leak − v + r·i) with
  the new i. ``IF``/``I``: v += dt·r·x. Reset to 0 in the step that spikes.
* ``snntorch`` (snnTorch 1.0 ``export_to_nir``, dt = 1e-4 written into every τ):
  the same Euler steps, which give β·v + x exactly, but with snnTorch's default reset,
  subtracting the threshold one step after a spike (``reset_delay=True``).
* ``norse`` (Norse 1.1 ``to_nir``): Norse writes τ = dt/τ⁻¹, so τ_true = τ/dt with
  Norse's dt = 1e-3. ``CubaLIF`` (``lif_feed_forward_step``): the input adds to i
  unscaled, v integrates the new i, then i decays. ``IF``: v += r·x (Norse's IAF
  ignores dt).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.registry import registrar

RESETS = ("zero", "subtract_next", "subtract")


@dataclass(frozen=True)
class Convention:
    """How one producer discretizes NIR's continuous-time neurons.

    Attributes:
        name: the ``--convention`` value.
        dt: the step used when the graph's metadata has no ``dt``.
        reset: ``zero`` (immediate, to 0) or ``subtract_next`` (−v_th one step later).
        tau_per_dt: τ in the graph is τ_true·dt (Norse writes dt/τ⁻¹), so divide by dt.
        cuba_unscaled: CubaLIF input adds to i unscaled (w_in and dt/τ_syn unused).
        if_ignores_dt: IF integrates r·x per step, not dt·r·x.
        exp_decay: exact exponential decay ``v ← e^{−dt/τ}·v + r·x`` (Sinabs, Rockpool),
            not Euler.
        spike_ge: a neuron spikes at ``v ≥ v_th`` (SpikingJelly, Sinabs), not ``v > v_th``.
        multi_spike: ``⌊v/v_th⌋`` spikes per step, each subtracting v_th (Sinabs'
            MultiSpike); float only.
        per_neuron: parameters may differ per neuron (float lowering and simulation);
            the integer lowering keeps one value per node.
        ignore_r: r is no gain (Rockpool writes τ·e^{−dt/τ}/dt into it); the input adds
            with weight 1.
        syn_decays_input: a CubaLIF's input decays with i in the step it arrives,
            ``i ← e^{−dt/τ_syn}·(i + x)`` (Rockpool's LIFTorch).
    """

    name: str
    dt: float
    reset: str = "zero"
    tau_per_dt: bool = False
    cuba_unscaled: bool = False
    if_ignores_dt: bool = False
    exp_decay: bool = False
    spike_ge: bool = False
    multi_spike: bool = False
    per_neuron: bool = False
    ignore_r: bool = False
    syn_decays_input: bool = False

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValidationError(f"reset {self.reset!r} is not one of {RESETS}")

    def tau(self, tau: float, dt: float) -> float:
        return tau / dt if self.tau_per_dt else tau


CONVENTIONS = {c.name: c for c in (
    Convention("nir", dt=1e-3),
    Convention("snntorch", dt=1e-4, reset="subtract_next"),
    Convention("norse", dt=1e-3, tau_per_dt=True, cuba_unscaled=True, if_ignores_dt=True),
    # SpikingJelly 2.0 export_to_nir: tau·dt with dt = 1e-4, r = 1/dt for IF; Euler is its
    # own update v += (x − v)/τ; it fires at v ≥ v_th and resets to v_reset (0).
    Convention("spikingjelly", dt=1e-4, spike_ge=True),
    # Sinabs 3.1 to_nir: τ in steps (dt = 1), v ← e^{−1/τ}·v + x (norm_input=False, as its
    # from_nir reads it), IAF v += x, MultiSpike ⌊v/θ⌋ and MembraneSubtract.
    Convention("sinabs", dt=1.0, reset="subtract", exp_decay=True, if_ignores_dt=True,
               spike_ge=True, multi_spike=True),
    # Rockpool 3.1 to_nir (LIFTorch -> CubaLIF): i ← β·(i + x), v ← α·v + i + bias with
    # α, β = e^{−dt/τ}; ⌊v/θ⌋ spikes at v ≥ θ, each subtracting θ. dt is not written (its
    # default is 1 ms); lrfdyn recovers it from r = τ_mem·e^{−dt/τ_mem}/dt.
    Convention("rockpool", dt=1e-3, reset="subtract", exp_decay=True, spike_ge=True,
               multi_spike=True, ignore_r=True, syn_decays_input=True),
)}
NIR = CONVENTIONS["nir"]


def convention(name: str) -> Convention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValidationError(
            f"unknown convention {name!r}; choose one of {', '.join(CONVENTIONS)}"
        ) from None


@dataclass(frozen=True, eq=False)
class Dynamics:
    """One neuron node as the discrete CUBA neuron of the module docstring."""

    # Each is one value, or one per neuron (an array) under a per-neuron convention.
    gain: float | np.ndarray
    dv: float | np.ndarray
    v_th: float | np.ndarray | None
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1))
    du: float | np.ndarray = 1.0
    reset: str = "zero"
    memoryless: bool = False
    tau_steps: float | np.ndarray = 0.0
    spike_ge: bool = False
    multi_spike: bool = False
    #: lrfdyn's ternary/1 extension: +1 above v_th, −1 below −v_th, reset after either.
    ternary: bool = False

    def __post_init__(self) -> None:
        for name in ("du", "dv"):
            d = np.asarray(getattr(self, name))
            if not np.all((d >= 0.0) & (d <= 1.0)):
                raise ValidationError(f"decay {name}={getattr(self, name)} is outside 0..1")
        if self.reset not in RESETS:
            raise ValidationError(f"reset {self.reset!r} is not one of {RESETS}")

    @property
    def spiking(self) -> bool:
        return self.v_th is not None

    @property
    def per_neuron(self) -> bool:
        """Some parameter differs between neurons (float lowering only)."""
        return any(np.ndim(v) > 0 for v in (self.gain, self.dv, self.du, self.v_th)
                   if v is not None)


NeuronLowering = Callable[[Any, float, str, Convention], Dynamics]
NEURON_LOWERINGS: dict[type, NeuronLowering] = {}
register_neuron = registrar(NEURON_LOWERINGS)


def uniform(name: str, field_name: str, values: Any) -> float:
    """The single value of a per-neuron parameter (Loihi shares du/dv/vth per process)."""
    arr = np.asarray(values, np.float64).ravel()
    if arr.size and not np.allclose(arr, arr[0]):
        raise UnsupportedNodeError(
            f"{name}: per-neuron {field_name} is not supported by the Loihi LIF lowering "
            "(Loihi shares du/dv/vth across a process); use one value per layer"
        )
    return float(arr[0])


def param(name: str, field_name: str, values: Any, conv: Convention) -> float | np.ndarray:
    """One value where all neurons share it (as :func:`uniform`), else, under a per-neuron
    convention, the flat per-neuron array."""
    arr = np.asarray(values, np.float64).ravel()
    if conv.per_neuron and arr.size and not arr.min() == arr.max():  # NaN: not equal
        return arr
    return uniform(name, field_name, values)


def _r(name: str, node: Any, conv: Convention) -> float | np.ndarray:
    return 1.0 if conv.ignore_r else param(name, "r", node.r, conv)


def _zero_reset(name: str, node: Any) -> None:
    if uniform(name, "v_reset", node.v_reset) != 0.0:
        raise UnsupportedNodeError(f"{name}: v_reset != 0; Loihi's LIF resets the voltage to 0")


def _leak(name: str, tau: Any, dt: float, conv: Convention | None = None) -> Any:
    """The Euler leak dt/τ, refused where forward Euler would overshoot; under an
    exponential convention the exact ``1 − e^{−dt/τ}``."""
    if conv is not None and conv.exp_decay:
        return 1.0 - np.exp(-dt / tau) if np.ndim(tau) else 1.0 - math.exp(-dt / tau)
    if np.any(np.asarray(tau) < dt):
        raise ValidationError(
            f"{name}: tau={float(np.min(tau)):g} s is shorter than one step dt={dt:g} s; "
            "forward Euler is "
            "unstable (wrong --convention or --dt?)"
        )
    return dt / tau


def _input_gain(conv: Convention, leak: Any, r: Any) -> Any:
    """What multiplies the input: dt/τ·r under Euler, r under exponential decay."""
    return r if conv.exp_decay else leak * r


def _v_leak(node: Any, leak: float) -> np.ndarray:
    """The constant drive dt/τ·v_leak that the leak term adds to v every step."""
    return leak * np.asarray(node.v_leak, np.float64).ravel()


@register_neuron(nir.LIF)
def _lif(node: nir.LIF, dt: float, name: str, conv: Convention) -> Dynamics:
    from lrfdyn.nir_types import ternary_extension, unpoisoned_ternary

    if ternary_extension(node):  # its carrier's v_leak is NaN by definition
        return dataclasses.replace(_lif(unpoisoned_ternary(node), dt, name, conv), ternary=True)
    _zero_reset(name, node)
    tau = conv.tau(param(name, "tau", node.tau, conv), dt)
    g = _leak(name, tau, dt, conv)
    return Dynamics(gain=_input_gain(conv, g, _r(name, node, conv)), dv=g,
                    v_th=param(name, "v_threshold", node.v_threshold, conv),
                    bias=_v_leak(node, g), reset=conv.reset, tau_steps=tau / dt,
                    spike_ge=conv.spike_ge, multi_spike=conv.multi_spike)


@register_neuron(nir.LI)
def _li(node: nir.LI, dt: float, name: str, conv: Convention) -> Dynamics:
    tau = conv.tau(param(name, "tau", node.tau, conv), dt)
    g = _leak(name, tau, dt, conv)
    return Dynamics(gain=_input_gain(conv, g, _r(name, node, conv)), dv=g,
                    v_th=None, bias=_v_leak(node, g), tau_steps=tau / dt)


def _integrating_gain(node: Any, dt: float, name: str, conv: Convention) -> float:
    return _r(name, node, conv) * (1.0 if conv.if_ignores_dt else dt)


@register_neuron(nir.IF)
def _if(node: nir.IF, dt: float, name: str, conv: Convention) -> Dynamics:
    _zero_reset(name, node)
    return Dynamics(gain=_integrating_gain(node, dt, name, conv), dv=0.0,
                    v_th=param(name, "v_threshold", node.v_threshold, conv), reset=conv.reset,
                    spike_ge=conv.spike_ge, multi_spike=conv.multi_spike)


@register_neuron(nir.I)
def _integrator(node: nir.I, dt: float, name: str, conv: Convention) -> Dynamics:
    return Dynamics(gain=_integrating_gain(node, dt, name, conv), dv=0.0, v_th=None)


def _cuba(node: Any, dt: float, name: str, conv: Convention, v_th: float | None) -> Dynamics:
    if np.any(np.asarray(node.v_leak) != 0):
        raise UnsupportedNodeError(
            f"{name}: v_leak != 0 in a current-based neuron; its leak acts on v, which "
            "lrfdyn can only reach through the synaptic current"
        )
    tau_syn = conv.tau(param(name, "tau_syn", node.tau_syn, conv), dt)
    tau_mem = conv.tau(param(name, "tau_mem", node.tau_mem, conv), dt)
    g_syn, g_mem = _leak(name, tau_syn, dt, conv), _leak(name, tau_mem, dt, conv)
    r = _r(name, node, conv)
    # u = g_mem·r·i keeps v's update a plain sum; i's own input gain folds into gain.
    if conv.cuba_unscaled:
        into_i = 1.0
    elif conv.syn_decays_input:
        into_i = 1.0 - g_syn
    else:
        into_i = _input_gain(conv, g_syn, param(name, "w_in", node.w_in, conv))
    return Dynamics(gain=_input_gain(conv, g_mem, r) * into_i, dv=g_mem, du=g_syn, v_th=v_th,
                    reset=conv.reset if v_th is not None else "zero", tau_steps=tau_mem / dt,
                    spike_ge=conv.spike_ge, multi_spike=conv.multi_spike and v_th is not None)


@register_neuron(nir.CubaLIF)
def _cuba_lif(node: nir.CubaLIF, dt: float, name: str, conv: Convention) -> Dynamics:
    _zero_reset(name, node)
    return _cuba(node, dt, name, conv, param(name, "v_threshold", node.v_threshold, conv))


@register_neuron(nir.CubaLI)
def _cuba_li(node: nir.CubaLI, dt: float, name: str, conv: Convention) -> Dynamics:
    return _cuba(node, dt, name, conv, None)


@register_neuron(nir.Threshold)
def _threshold(node: nir.Threshold, dt: float, name: str, conv: Convention) -> Dynamics:
    """A memoryless ``z = H(x − θ)``: v forgets everything each step (dv = 1)."""
    return Dynamics(gain=1.0, dv=1.0, v_th=param(name, "threshold", node.threshold, conv),
                    memoryless=True, spike_ge=conv.spike_ge)
