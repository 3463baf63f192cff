"""Build Lava processes from a :class:`~lrfdyn.loihi.lower.LoweredNetwork`.

One process per neuron group and per synapse layer, a ``RingBuffer`` source
that holds the integer input of every sample back to back, and a
:class:`~lrfdyn.loihi.processes.recorder.SpikeRecorder` on every group:

* LIF groups are Lava's ``LIF``; relays are ``GradedVec`` (exponent 0),
  ``ProdNeuron`` (a shifter: ``(a_in1·a_in2) >> exp`` with a constant 1 on ``a_in2``)
  or, for a rectifying graded node, ``GradedReluVec``;
* conv layers are Lava's ``Conv``, with the kernel stored once (its fast CPU model is
  :mod:`lrfdyn.loihi.processes.conv`); explicit layers are ``Dense`` or ``Sparse``,
  with their ``Delay`` variants where lowering padded a shortcut.
Processes declare structure only; the ``fixed_pt`` models that run them are
Lava's bit-accurate ones. A float network (:mod:`lrfdyn.loihi.float_lower`) builds
the same processes with float values. Groups that reset like snnTorch (float
only) or never spike become :class:`~lrfdyn.loihi.processes.nir_neuron.NirLIF`; the
latter record their voltage instead of spikes.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.process.process import AbstractProcess
from lava.proc.dense.process import DelayDense, Dense
from lava.proc.sparse.process import DelaySparse, Sparse
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.process import LIF

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import DendriticBlock
from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi.ir import (FloatParams, LoweredNetwork, NeuronGroup, RelayParams, SynapseSpec,
                             bias_offset, phase_offset)
from lrfdyn.loihi.processes.nir_neuron import NirLIF, open_voltage_recording
from lrfdyn.loihi.processes.recorder import SpikeRecorder, open_recording


@dataclass(eq=False)
class LavaNetwork:
    """The Lava processes of one lowered network, with the handles a runner needs.

    Each sample occupies ``block_steps = steps_per_sample + drain`` Lava steps: T input
    steps, the pipeline's latency, then ``drain`` silent steps after which every
    neuron and synapse buffer is back at exactly 0 (see :func:`drain_steps`). With
    ``drain = 0`` the runner must reset state between samples instead.
    """

    source: Source
    bias: list[Source]
    lifs: dict[str, LIF]
    synapses: dict[str, AbstractProcess]
    recorders: dict[str, SpikeRecorder]
    recordings: dict[str, np.memmap]
    steps_per_sample: int
    drain: int
    folder: Path

    @property
    def block_steps(self) -> int:
        return self.steps_per_sample + self.drain

    @property
    def processes(self) -> list[AbstractProcess]:
        return [self.source, *self.bias, *self.lifs.values(), *self.synapses.values(),
                *self.recorders.values()]

    def sample_spikes(self, group: str, i: int) -> np.ndarray:
        """Spikes of ``group`` during sample ``i``'s first steps_per_sample steps."""
        start = i * self.block_steps
        return np.array(self.recordings[group][start : start + self.steps_per_sample])

    def close(self) -> None:
        """Drop the recording files (call after the runtime has stopped)."""
        self.recordings.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def steps_to_zero(d: int) -> int | None:
    """Steps after which a 24-bit value decayed with constant ``d`` is exactly 0 (None: never)."""
    x, steps = np.int64(1 << (fixed.UV_BITS - 1)), 0
    while x > 0:
        if steps > 4096:
            return None
        x = fixed.decay(x, d)
        steps += 1
    return steps


def drain_steps(net: LoweredNetwork) -> int:
    """Silent steps after a sample that return the whole network to its initial state.

    Without input or bias, u (du = 4095) is 0 from the next step and v decays
    toward 0, rounding toward zero, so it reaches exactly 0 and never crosses a
    threshold on the way. After the pipeline has emptied (its latency plus the
    longest delay) every state is 0 again: the next sample sees a fresh network.
    Returns 0 when some group never decays to 0 (dv = 0); the runner then resets
    state explicitly.
    """
    lifs = [g for g in net.groups.values() if not g.graded]  # relays keep nothing
    if not all(isinstance(g.params, fixed.LifParams) for g in lifs):
        return 0  # float state decays toward 0 but never reaches it exactly
    decays = [steps_to_zero(g.params.dv) for g in lifs]
    if any(s is None for s in decays) or any(g.params.du != fixed.DECAY_UNITY - 1 for g in lifs):
        return 0
    longest_delay = max((s.delay for s in net.synapses), default=0)
    return net.latency + longest_delay + max(decays, default=0) + 1


def input_schedule(net: LoweredNetwork, x: np.ndarray, drain: int = 0) -> np.ndarray:
    """Source data for samples ``x``: (N, size) held for T steps, or (N, T, size); then zeros.

    Each sample's block is ``steps_per_sample + drain`` steps long.

    Returns:
        int32 (float64 for float samples) array (size, N·block), the layout Lava's
        RingBuffer expects.
    """
    steps = net.steps_per_sample() + drain
    dtype = np.float64 if np.asarray(x).dtype.kind == "f" else np.int32
    block = np.zeros((x.shape[0], steps, net.input.size), dtype)
    block[:, : net.input.timesteps] = x if x.ndim == 3 else x[:, None, :]
    return block.reshape(-1, net.input.size).T.copy()


def recording_folder() -> Path:
    """A fresh folder for the recorders' files, in /dev/shm (memory) where there is one."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="lrfdyn-", dir=shm if shm.is_dir() else None))


def build_lava(net: LoweredNetwork, x: np.ndarray) -> LavaNetwork:
    """Create (but do not compile) the processes that run samples ``x`` on ``net``."""
    steps = net.steps_per_sample()
    drain = drain_steps(net)
    block = steps + drain
    total = len(x) * block
    source = Source(data=input_schedule(net, x, drain))
    # Each bias source spikes for one sample's steps from its start, and is silent
    # while the network drains.
    sources = {net.input.name: source}
    for name in net.bias_sources:  # one per start step: each group's bias begins at its latency
        lag = bias_offset(name)
        on = np.zeros((len(x), block), np.int32)
        on[:, lag:lag + steps] = 1
        sources[name] = Source(data=on.reshape(1, total))
    for name in net.phase_sources:  # the phases of the T input steps, as the bias is lagged
        lag = phase_offset(name)
        pattern = np.asarray(net.phases, np.int32)
        on = np.zeros((len(x), block, pattern.shape[1]), np.int32)
        on[:, lag:lag + len(pattern)] = pattern
        sources[name] = Source(data=on.reshape(-1, pattern.shape[1]).T.copy())
    bias = [p for n, p in sources.items() if n != net.input.name]
    folder = recording_folder()
    lifs = {name: _neuron_process(name, g, folder, total) for name, g in net.groups.items()}
    synapses: dict[str, AbstractProcess] = {}
    for s in net.synapses:
        src_port = sources[s.src].s_out if s.src in sources else lifs[s.src].s_out
        dst_port = input_port(lifs[s.dst], s.port)
        synapses[s.name] = connect_synapse(s, src_port, dst_port)
    recorders, recordings = {}, {}
    for i, (name, lif) in enumerate(lifs.items()):
        group = net.groups[name]
        size = group.size
        if isinstance(lif, NirLIF) and lif.proc_params["record"]:
            recordings[name] = open_voltage_recording(lif.proc_params["record"], total, size)
            continue
        values = group.graded or group.ternary  # a ternary spike's sign is recorded too
        path = str(folder / f"group{i}.{'int32' if values else 'bool'}")
        recordings[name] = open_recording(path, total, size, graded=values)
        recorders[name] = SpikeRecorder(shape=(size,), steps=total, path=path,
                                        graded=values)
        lif.s_out.connect(recorders[name].a_in)
    lava_net = LavaNetwork(source, bias, lifs, synapses, recorders, recordings, steps, drain,
                           folder)
    # Callers that never run or close the network still leave nothing in /dev/shm.
    weakref.finalize(lava_net, shutil.rmtree, folder, True)
    return lava_net


def relay_process(name: str, g: NeuronGroup, folder: Path, steps: int) -> AbstractProcess:
    """A stock graded neuron: ``GradedReluVec`` (rectified), ``ProdNeuron`` (a shift, or a
    product with a_in2) or ``GradedVec``."""
    from lava.proc.graded.process import GradedReluVec, GradedVec
    from lava.proc.prodneuron.process import ProdNeuron

    p = g.relay
    if p.rectify:  # sends v·(v > vth): max(v, 0) at vth = 0
        return GradedReluVec(shape=(g.size,), vth=0, exp=0)
    # vth = 0: every non-zero value passes (both send v·(|v| > vth)).
    return ProdNeuron(shape=(g.size,), vth=0, exp=p.exp) if p.prod else \
        GradedVec(shape=(g.size,), vth=0, exp=0)


def _lif_process(name: str, g: NeuronGroup, folder: Path, steps: int) -> AbstractProcess:
    """Lava's LIF; its ``TernaryLIF`` for a ternary group; :class:`NirLIF` where a group
    resets late, never spikes or (float) fires at v >= vth, sends counts or has
    per-neuron parameters."""
    bias = dict(bias_mant=np.broadcast_to(g.params.bias_mant, (g.size,)).astype(np.int32),
                bias_exp=np.broadcast_to(g.params.bias_exp, (g.size,)).astype(np.int32))
    if g.ternary:
        # Stock: PyTernLifModelFixed runs AbstractPyLifModelFixed's u/v update (as LIF's
        # bit-accurate model does) and sends +1 above vth_hi << 6, −1 below vth_lo << 6.
        from lava.proc.lif.process import TernaryLIF

        return TernaryLIF(shape=(g.size,), du=g.params.du, dv=g.params.dv,
                          vth_hi=g.params.vth, vth_lo=-g.params.vth, name=name, **bias)
    common = dict(shape=(g.size,), du=g.params.du, dv=g.params.dv, vth=g.params.vth,
                  name=name, **bias)
    extra = g.params.nir_kwargs if isinstance(g.params, FloatParams) else {}
    if g.reset == "zero" and g.spiking and not extra:
        return LIF(**common)
    record = "" if g.spiking else str(folder / f"{name}.v")
    return NirLIF(reset=g.reset, record=record, steps=steps, **common, **extra)


#: The Lava process of each group, by the type of its parameters (as nirtorch maps NIR
#: node types): one entry per kind of neuron the lowering makes.
NEURON_PROCESSES: dict[type, Callable[[str, NeuronGroup, Path, int], AbstractProcess]] = {
    RelayParams: relay_process,
    fixed.LifParams: _lif_process,
    FloatParams: _lif_process,
}


def _neuron_process(name: str, g: NeuronGroup, folder: Path, steps: int) -> AbstractProcess:
    """The group's process from :data:`NEURON_PROCESSES`, by exact parameter type."""
    make = NEURON_PROCESSES.get(type(g.params))
    if make is None:
        raise UnsupportedNodeError(f"group {name}: no Lava process for parameters of type "
                                   f"{type(g.params).__name__}")
    return make(name, g, folder, steps)


def input_port(proc: AbstractProcess, port: str):
    """The port a synapse feeds: ``a_in``, or a ProdNeuron's ``a_in1``/``a_in2``."""
    if port == "a_in" and not hasattr(proc, "a_in"):
        port = "a_in1"
    return getattr(proc, port)


def connect_synapse(s: SynapseSpec, src_port, dst_port) -> AbstractProcess:
    """The synapse process of ``s``, wired from ``src_port`` into ``dst_port``."""
    if s.conv is not None:
        from lrfdyn.loihi.processes.conv import connect_conv, conv_process

        c = s.conv
        if s.delay:  # Lava's Conv has no delays; lowering routes a delayed conv via relays
            raise ValidationError(f"synapse {s.name}: a conv layer cannot carry a delay "
                                  f"({s.delay}); this is a lowering bug, please report it")
        proc = conv_process(np.asarray(s.weights, np.int32), c.in_shape, c.stride, c.padding,
                            c.dilation, c.groups, num_message_bits=s.num_message_bits,
                            name=s.name)
        connect_conv(src_port, proc, dst_port, c.in_shape, c.out_shape)
        return proc
    proc = _synapse_process(s)
    src_port.connect(proc.s_in)
    proc.a_out.connect(dst_port)
    return proc


def _lava_dtype(w: np.ndarray | sp.spmatrix) -> type:
    """int32 for Loihi integers; float weights stay float."""
    return np.float64 if w.dtype.kind == "f" else np.int32


def _synapse_process(s: SynapseSpec) -> AbstractProcess:
    """Dense or Sparse, with a delay variant where lowering padded the path (a conv with a
    delay is refused by lowering)."""
    if s.conv is not None:
        raise ValidationError(f"synapse {s.name}: a conv layer is built by connect_synapse")
    common = dict(weight_exp=s.weight_exp, num_message_bits=s.num_message_bits, name=s.name)
    dtype = _lava_dtype(s.weights)
    if s.is_sparse:
        weights = s.weights.astype(dtype).tocsr()
        if s.delay:
            delays = weights.astype(int)  # Lava insists on the platform int dtype here
            delays.data[:] = s.delay
            return DelaySparse(weights=weights, delays=delays, **common)
        return Sparse(weights=weights, **common)
    weights = np.asarray(s.weights, dtype)
    if s.delay:
        return DelayDense(weights=weights, delays=np.full(weights.shape, s.delay, dtype=int),
                          **common)
    return Dense(weights=weights, **common)


def reset_state(lava_net: LavaNetwork) -> None:
    """Zero every neuron's u and v and every synapse's pending input between samples."""
    for lif in lava_net.lifs.values():
        if not hasattr(lif, "u"):
            continue  # a relay forgets its value every step
        lif.u.set(np.zeros(lif.u.shape, np.int32))
        lif.v.set(np.zeros(lif.v.shape, np.int32))
        if isinstance(lif, NirLIF):
            lif.pending.set(np.zeros(lif.pending.shape, np.int32))
    for conn in lava_net.synapses.values():
        buf = getattr(conn, "a_buff", getattr(conn, "a_buf", None))  # Dense/Sparse | Conv
        if buf is not None:
            buf.set(np.zeros(buf.shape, np.int32))


# ---------------------------------------------------------------- dendritic streams


@dataclass(eq=False)
class LavaStreams:
    """The Lava processes of one streamed LRF-Dyn block (see :mod:`lrfdyn.loihi.dendritic`)."""

    sources: dict[str, Source]
    neurons: dict[str, AbstractProcess]
    synapses: dict[str, AbstractProcess]
    recordings: dict[str, np.memmap]
    folder: Path

    @property
    def runner(self) -> AbstractProcess:
        return next(iter(self.sources.values()))

    def close(self) -> None:
        self.recordings.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def build_streams(block: DendriticBlock, data: dict[str, np.ndarray]) -> LavaStreams:
    """Processes that run the token streams whose source data is ``data``.

    ``data`` maps each source to ``(S, L, size)`` values, as
    :func:`lrfdyn.loihi.dendritic.source_data` lays them out.
    """
    from lava.proc.graded.process import GradedVec
    from lava.proc.prodneuron.process import ProdNeuron

    from lrfdyn.loihi.processes.compartment import DendriteCompartments
    from lrfdyn.loihi.dendritic import COMPARTMENTS, PROD

    total = next(iter(data.values())).shape[0] * block.stream_steps
    sources = {name: Source(data=v.reshape(total, -1).T.astype(np.int32).copy())
               for name, v in data.items()}
    sizes = block.sizes()
    neurons: dict[str, AbstractProcess] = {}
    for name, size in sizes.items():
        if name == COMPARTMENTS:
            neurons[name] = DendriteCompartments(
                shape=(size,), dv=block.dv, reset_interval=block.stream_steps, reset_phase=1,
                name=f"{block.name}.{name}")
        elif name.startswith(PROD + "."):
            neurons[name] = ProdNeuron(shape=(size,), vth=0, exp=0)
        else:
            neurons[name] = GradedVec(shape=(size,), vth=0, exp=0)  # stock: takes no name
    synapses: dict[str, AbstractProcess] = {}
    for la in block.layers:
        spec = SynapseSpec(name=f"{block.name}.{la.name}", src=la.src, dst=la.dst,
                           weights=la.weights, weight_exp=la.weight_exp, delay=la.delay,
                           num_message_bits=la.num_message_bits)
        conn = _synapse_process(spec)
        src = sources[la.src] if la.src in sources else neurons[la.src]
        src.s_out.connect(conn.s_in)
        conn.a_out.connect(getattr(neurons[la.dst], la.port))
        synapses[la.name] = conn
    folder = recording_folder()
    recordings = {}
    for i, (name, proc) in enumerate(neurons.items()):
        path = str(folder / f"stream{i}.int32")
        size = sizes[name]
        recordings[name] = open_recording(path, total, size, graded=True)
        recorder = SpikeRecorder(shape=(size,), steps=total, path=path, graded=True)
        proc.s_out.connect(recorder.a_in)
    streams = LavaStreams(sources, neurons, synapses, recordings, folder)
    weakref.finalize(streams, shutil.rmtree, folder, True)
    return streams
