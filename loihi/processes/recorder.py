"""A spike recorder process: spikes go straight into a memory-mapped file.

Lava 0.10 reads a Var back (``Var.get``) one element at a time through its
runtime channels; reading a sink ring buffer of 12,544 neurons × 19 steps took
about 2 s per layer per sample. The recorder's CPU model instead writes each
step's spikes into a shared ``numpy.memmap`` that the host process reads
directly, so recording costs nothing per sample. It is a host-side process,
like Lava's own sink; it declares the port and its parameters only.
"""

from __future__ import annotations

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class SpikeRecorder(AbstractProcess):
    """Records ``a_in != 0`` of every step into ``path``: bool array (steps, size).

    With ``graded=True`` it records the payloads themselves (int32).
    """

    def __init__(self, *, shape: tuple[int, ...], steps: int, path: str,
                 graded: bool = False) -> None:
        super().__init__(shape=shape, steps=steps, path=path, graded=graded)
        self.a_in = InPort(shape=shape)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt", "fixed_pt")
class PySpikeRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:  # noqa: ANN001  (Lava's signature)
        super().__init__(proc_params)
        size = int(np.prod(proc_params["shape"]))
        self._graded = bool(proc_params.get("graded", False))
        self._out = np.memmap(proc_params["path"], dtype=_dtype(self._graded), mode="r+",
                              shape=(int(proc_params["steps"]), size))

    def run_spk(self) -> None:
        row = (self.time_step - 1) % self._out.shape[0]
        data = self.a_in.recv().ravel()
        self._out[row] = data if self._graded else data != 0


def _dtype(graded: bool) -> type:
    return np.int32 if graded else bool


def open_recording(path: str, steps: int, size: int, graded: bool = False) -> np.memmap:
    """Create the zeroed file a :class:`SpikeRecorder` writes into, and map it for reading."""
    return np.memmap(path, dtype=_dtype(graded), mode="w+", shape=(steps, size))


#: Named explicitly in run configurations, so the choice of model never depends on Lava's
#: search through the modules beside this one.
RECORDER_MODELS = {SpikeRecorder: PySpikeRecorderModel}
