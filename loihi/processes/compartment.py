"""A dendritic compartment process: a leaky CUBA state that sends its voltage as a graded spike.

LRF-Dyn's dendrite i of channel c holds ``x`` with leak ``1 − 1/τ_i``. A Loihi CUBA
neuron's voltage v is such a leaky state, but Lava's stock ``LIF`` only sends binary
spikes and ``GradedVec`` (the stock graded neuron) forgets its input every step.
So this process is of our own: Loihi's CUBA u/v arithmetic with no threshold, v sent
as a 24-bit graded payload every step, and a periodic reset (the idea of Lava's
``LIFReset``) that starts each token stream from x = 0. Its arithmetic is
:func:`lrfdyn.loihi.fixed.compartment_step`, which the integer reference calls too.

On Loihi 2 such a neuron needs a few lines of neuron microcode, which lava-loihi
owns; here it runs on Lava's CPU backend only, and the README says so.
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


class DendriteCompartments(AbstractProcess):
    """``shape`` compartments with per-compartment decay ``dv``; reset on steps
    ``t ≡ reset_phase (mod reset_interval)`` (Lava steps count from 1)."""

    def __init__(self, *, shape: tuple[int, ...], dv: np.ndarray, reset_interval: int,
                 reset_phase: int = 1, name: str | None = None) -> None:
        super().__init__(shape=shape, reset_interval=reset_interval, reset_phase=reset_phase,
                         name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.dv = Var(shape=shape, init=np.asarray(dv, np.int32))


@implements(proc=DendriteCompartments, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDendriteCompartmentsModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        interval = int(self.proc_params["reset_interval"])
        reset = self.time_step % interval == int(self.proc_params["reset_phase"]) % interval
        out, state = fixed.compartment_step(fixed.LifState(self.u, self.v), a_in, self.dv,
                                            reset=reset)
        self.u[:] = state.u
        self.v[:] = state.v
        self.s_out.send(out.astype(np.int32))


#: For ``exception_proc_model_map``, so the model is never left to Lava's module search.
COMPARTMENT_MODELS = {DendriteCompartments: PyDendriteCompartmentsModel}
