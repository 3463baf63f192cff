"""A clocked LIF and a phase recorder: the per-token side of the one dendritic network.

In dendritic mode one model time step of the per-token layers spans one stream
*period* of P Lava steps (the block streams its N tokens one per step). A stock
``LIF`` updates every Lava step, so between two model steps its v would leak P
times. :class:`ClockedLIF` is Loihi's CUBA LIF (:func:`lrfdyn.loihi.fixed.lif_step`,
the arithmetic the integer reference uses) that

* **accumulates** its synaptic input over the period, every step;
* **updates once per period**, at steps ``start + r·P`` (r = 0, 1, …): one
  ``lif_step`` with the period's summed input, spikes sent at that step only;
* **holds** u and v in between and sends nothing;
* **resets** u and v after every ``reset_every``-th update (a sample is
  ``reset_every`` model steps), so each sample starts from a fresh state with no
  drain and no ``Var.set``.

A deserialized attention neuron receives its token's z at the token's own step and
reads it at the update; a shortcut from far upstream may land anywhere in the
window ``(update − P, update]``, which is why most long shortcuts need no delay.

On Loihi 2 this is a few lines of neuron microcode (lava-loihi owns the assembler):
the accumulator is the current u itself with du = 0 between updates (our models use
du = 4095, which makes u exactly the window's sum), the update is the stock CUBA
step gated by a per-core step counter modulo P, plus a counter of updates for the
sample reset. Loihi 2's programmable neurons are documented (Orchard et al., "Efficient
Neuromorphic Signal Processing with Loihi 2", SiPS 2021); no public model of this
neuron exists. Here it runs on Lava's CPU backend.

:class:`PhaseRecorder` records what a process sends at its update steps only (one
row per model step, per neuron its own phase) and counts, per neuron, every value
that is not 0 at any other step; "every neuron, every step" then costs P times
less memory than a full recording.
"""

from __future__ import annotations

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lrfdyn.loihi import fixed


class ClockedLIF(AbstractProcess):
    """``shape`` CUBA LIF neurons updated at steps ``start + r·period`` (Lava steps
    count from 1), input summed over each period, reset after every ``reset_every``
    updates."""

    def __init__(self, *, shape: tuple[int, ...], du: int, dv: int, vth: int, period: int,
                 start: int, reset_every: int, name: str | None = None) -> None:
        super().__init__(shape=shape, du=du, dv=dv, vth=vth, period=period, start=start,
                         reset_every=reset_every, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        #: The period's summed input (on Loihi 2: u itself, see the module docstring).
        self.pending = Var(shape=shape, init=0)


@implements(proc=ClockedLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyClockedLIFModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    pending: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params) -> None:  # noqa: ANN001  (Lava's signature)
        super().__init__(proc_params)
        self._params = fixed.LifParams(du=int(proc_params["du"]), dv=int(proc_params["dv"]),
                                       vth=int(proc_params["vth"]))

    def run_spk(self) -> None:
        self.pending[:] = self.pending + self.a_in.recv()
        k = self.time_step - int(self.proc_params["start"])
        period = int(self.proc_params["period"])
        if k < 0 or k % period:
            self.s_out.send(np.zeros(self.s_out.shape, bool))
            return
        spikes, state = fixed.lif_step(fixed.LifState(self.u, self.v), self.pending,
                                       self._params)
        self.pending[:] = 0
        if (k // period + 1) % int(self.proc_params["reset_every"]) == 0:
            self.u[:] = 0  # the sample's last update: the next sample starts fresh
            self.v[:] = 0
        else:
            self.u[:] = state.u
            self.v[:] = state.v
        self.s_out.send(spikes)


class PhaseRecorder(AbstractProcess):
    """Records ``a_in`` at steps ``start[i] + r·period`` for r < ``rows`` into row r of
    ``path`` (int32, ``(rows + 1, size)``); the last row counts, per neuron, the steps
    at which ``a_in`` was not 0 outside those."""

    def __init__(self, *, shape: tuple[int, ...], rows: int, period: int, start: np.ndarray,
                 path: str) -> None:
        super().__init__(shape=shape, rows=rows, period=period, path=path,
                         start=np.broadcast_to(np.asarray(start, np.int64), shape).copy())
        self.a_in = InPort(shape=shape)


@implements(proc=PhaseRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt", "fixed_pt")
class PyPhaseRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:  # noqa: ANN001  (Lava's signature)
        super().__init__(proc_params)
        self._rows = int(proc_params["rows"])
        self._period = int(proc_params["period"])
        self._start = np.asarray(proc_params["start"], np.int64).ravel()
        self._out = np.memmap(proc_params["path"], dtype=np.int32, mode="r+",
                              shape=(self._rows + 1, self._start.size))
        self._cols = np.arange(self._start.size)

    def run_spk(self) -> None:
        data = self.a_in.recv().ravel().astype(np.int32)
        k = self.time_step - self._start
        row = np.floor_divide(k, self._period)
        on = (k >= 0) & (k % self._period == 0) & (row < self._rows)
        self._out[row[on], self._cols[on]] = data[on]
        off = (data != 0) & ~on
        if off.any():
            self._out[self._rows, off] += 1


def open_phase_recording(path: str, rows: int, size: int) -> np.memmap:
    """Create the zeroed file a :class:`PhaseRecorder` writes into, and map it."""
    return np.memmap(path, dtype=np.int32, mode="w+", shape=(rows + 1, size))


#: For ``exception_proc_model_map``.
CLOCKED_MODELS = {ClockedLIF: PyClockedLIFModel, PhaseRecorder: PyPhaseRecorderModel}
