"""Lava's LIF with the two behaviours its stock models lack.

Lava's ``PyLifModelFloat`` resets v to 0 in the step that spikes, and a LIF's
voltage can only be read back with ``Var.get`` (element by element in Lava 0.10).
:class:`NirLIF` is the stock ``LIF`` process with two more parameters:

* ``reset="subtract_next"`` is snnTorch's default reset (``reset_delay=True``):
  nothing happens in the step that spikes, and the next step subtracts the
  threshold, ``v[t] = (1 − dv)·v[t−1] + u[t] − v_th·s[t−1]``. The last spikes are
  kept in the Var ``pending`` so that a reset between samples can clear them.
* ``reset="subtract"`` (Sinabs, Rockpool) subtracts the threshold in the step that
  spikes, ``v[t] ← v[t] − v_th·s[t]``.
* ``ge`` fires at ``v ≥ v_th`` (SpikingJelly, Sinabs) instead of ``v > v_th``;
  ``multi`` sends ``⌊v/v_th⌋`` spikes per step as one graded payload (Sinabs' MultiSpike),
  each subtracting v_th.
* ``du``, ``dv`` and ``vth`` may be one value per neuron (trained per-neuron τ and
  thresholds), which Lava's stock ``LIF`` Vars cannot hold (they are shape (1,)).
* ``record`` names a file into which the model writes v after every step, as the
  spike recorder does for spikes: how LI, I and CubaLI nodes, which never spike,
  are read out. Such a neuron sends no spikes.

:class:`PyNirLifModelFloat` does both; :class:`PyNirLifModelFixed` only records
(bit-accurate otherwise, inheriting Lava's abstract integer LIF). On Loihi 2 the
recording would be a voltage probe; the delayed reset has no stock integer model,
so the integer lowering keeps Loihi's reset to 0 and says so.
"""

from __future__ import annotations

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIF


class NirLIF(LIF):
    """A LIF with a choice of reset and an optional voltage recording (see module doc)."""

    def __init__(self, *, shape: tuple[int, ...], reset: str = "zero", record: str = "",
                 steps: int = 0, ge: bool = False, multi: bool = False, **kwargs) -> None:
        super().__init__(shape=shape, reset=reset, record=record, steps=steps, ge=ge,
                         multi=multi, **kwargs)
        self.pending = Var(shape=shape, init=0)
        if any(np.ndim(kwargs.get(k, 0)) > 0 for k in ("du", "dv", "vth")):
            # Per neuron: every one of the three becomes a Var with one value per neuron.
            for k in ("du", "dv", "vth"):
                setattr(self, k, Var(shape=shape, init=np.broadcast_to(
                    np.asarray(kwargs.get(k, 0), np.float64), shape).copy()))


class _VoltageRecording:
    """Writes v after every step into the file named by the process's ``record``."""

    def _open_recording(self, proc_params) -> None:  # noqa: ANN001
        self._v_out = None
        self._spiking = not proc_params["record"]
        if proc_params["record"]:
            size = int(np.prod(proc_params["shape"]))
            self._v_out = np.memmap(proc_params["record"], dtype=np.float64, mode="r+",
                                    shape=(int(proc_params["steps"]), size))

    def _record(self) -> None:
        if self._v_out is not None:
            self._v_out[(self.time_step - 1) % self._v_out.shape[0]] = self.v.ravel()


@implements(proc=NirLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyNirLifModelFloat(_VoltageRecording, AbstractPyLifModelFloat):
    # Lava's PyLifModelFloat already implements LIF, so the two lines it adds are repeated.
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    # np.ndarray holds one value (shape (1,)) or one per neuron alike.
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, float)
    pending: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params) -> None:  # noqa: ANN001  (Lava's signature)
        super().__init__(proc_params)
        self._reset = proc_params["reset"]
        self._ge = bool(proc_params.get("ge", False))
        self._multi = bool(proc_params.get("multi", False))
        self._open_recording(proc_params)

    def spiking_activation(self) -> np.ndarray:
        if not self._spiking:
            return np.zeros(self.v.shape, bool)
        if self._multi:  # a count, sent as a graded payload
            return np.where(self.v >= self.vth, np.floor(self.v / self.vth), 0.0)
        return self.v >= self.vth if self._ge else self.v > self.vth

    def subthr_dynamics(self, activation_in: np.ndarray) -> None:
        super().subthr_dynamics(activation_in)
        if self._reset == "subtract_next":
            self.v[:] -= self.vth * self.pending

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        if self._reset == "subtract_next":
            self.pending[:] = spike_vector
        elif self._reset == "subtract":
            self.v[:] -= self.vth * spike_vector
        else:
            self.v[spike_vector > 0] = 0

    def run_spk(self) -> None:
        super().run_spk()
        self._record()


@implements(proc=NirLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyNirLifModelFixed(_VoltageRecording, AbstractPyLifModelFixed):
    # The two lines of Lava's PyLifModelBitAcc, which already implements LIF.
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    pending: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)

    def __init__(self, proc_params) -> None:  # noqa: ANN001  (Lava's signature)
        super().__init__(proc_params)
        if proc_params["reset"] != "zero":
            raise ValueError("the integer NirLIF resets to 0 only")  # lowering never asks
        self.effective_vth = 0
        self._open_recording(proc_params)

    def scale_threshold(self) -> None:
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self) -> np.ndarray:
        return (self.v > self.effective_vth) & self._spiking

    def run_spk(self) -> None:
        super().run_spk()
        self._record()


def open_voltage_recording(path: str, steps: int, size: int) -> np.memmap:
    """Create the zeroed file a recording :class:`NirLIF` writes v into, mapped for reading."""
    return np.memmap(path, dtype=np.float64, mode="w+", shape=(steps, size))


#: For ``exception_proc_model_map``, by the run's tag.
NIR_NEURON_MODELS = {"floating_pt": {NirLIF: PyNirLifModelFloat},
                     "fixed_pt": {NirLIF: PyNirLifModelFixed}}
