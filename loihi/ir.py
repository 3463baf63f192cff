"""The lowered network: what lowering hands to Lava and to the integer reference.

:class:`LoweredNetwork` is plain data: typed synapse layers (:class:`SynapseSpec`) with
integer weights and exponents, neuron groups (:class:`NeuronGroup`) with their decays and
thresholds, the wiring and the latency of every group. :mod:`lrfdyn.loihi.build` turns it
into Lava processes and :mod:`lrfdyn.sim.reference` runs it in torch; both read the same
object, so they cannot disagree about a parameter.

Sources. Besides the input and the groups (by name), a synapse may read a
:class:`ClockSource`, typed: the always-on bias and the phase source of block sums. Every
group takes its bias, undelayed, from the bias source that starts one step before its
latency (:mod:`lrfdyn.loihi.schedule`); nothing is delayed per neuron (docs/design.md §3.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.layers import ConvMap

#: Lowering format version, recorded in simulate reports and netx files (3: graded
#: extension nodes, and a relay's one-unit rounding offset kept).
LOWERING_VERSION = 3
#: Graded payloads (relay outputs) are 24-bit signed values.
GRADED_BITS = fixed.UV_BITS
#: Largest magnitude of a graded payload or a conv's summed output (24-bit signed).
GRADED_MAX = (1 << (fixed.UV_BITS - 1)) - 1
#: Largest LIF input: u holds ``a_in << 6`` in 24 bits.
CURRENT_MAX = (1 << (fixed.UV_BITS - 1 - fixed.ACT_SHIFT)) - 1
#: A delay relay repeats its input this many steps later (Loihi's longest delay + 1).
DELAY_RELAY_STEPS = fixed.MAX_DELAY + 1
#: Payload bits of a ternary group's spikes (Lava's ``TernaryLIF`` sends 2-bit signed values).
TERNARY_BITS = 2
#: Below this density a synapse layer is stored and simulated as a Lava Sparse process.
SPARSE_BELOW = 0.25


#: A LIF's reset: to zero (Loihi), or snnTorch's subtraction one step late (float only).
RESETS = ("zero", "subtract", "subtract_next")
#: The kinds of clock source: the always-on bias, and the phases of block sums.
CLOCK_KINDS = ("bias", "phase")


@dataclass(frozen=True, order=True)
class ClockSource:
    """A stream driven by the clock alone, the same for every copy of a network and every
    sample; it never sets a group's latency.

    * ``bias``: one neuron that spikes at each of a sample's steps, from Lava step
      ``start`` on. A bias synapse reads it undelayed, so a group of latency L reads the
      source that starts at L − 1, and every group of that latency shares it.
    * ``phase``: one neuron per phase of a block sum's time blocks; neuron p spikes at the
      logical steps of phase p (:attr:`LoweredNetwork.phases`), from Lava step ``start``.

    Its identity is its type and fields, never a name: a NIR node called ``bias`` is a
    group like any other. ``str()`` gives a label for reports (``bias``, ``bias@9``).
    """

    kind: str
    start: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CLOCK_KINDS:
            raise ValidationError(f"clock source kind {self.kind!r}: expected one of "
                                  f"{', '.join(CLOCK_KINDS)}")
        if isinstance(self.start, bool) or not isinstance(self.start, (int, np.integer)) \
                or self.start < 0:
            raise ValidationError(f"clock source {self.kind}: start {self.start!r} must be a "
                                  "whole number of steps >= 0")

    def later(self, steps: int) -> ClockSource:
        """The same stream, starting ``steps`` Lava steps later."""
        return ClockSource(self.kind, int(self.start + steps))

    def __str__(self) -> str:
        return self.kind if self.start == 0 else f"{self.kind}@{self.start}"


#: A synapse's source: the input or a group, by name, or a clock source.
Source = Union[str, ClockSource]
#: The always-on source that carries biases, starting at Lava step 0.
BIAS_SOURCE = ClockSource("bias")
#: The phase source of block sums, starting at Lava step 0.
PHASE_SOURCE = ClockSource("phase")


def bias_offset(src: Source) -> int | None:
    """The step at which a bias source starts, or None for any other source."""
    return src.start if isinstance(src, ClockSource) and src.kind == "bias" else None


def phase_offset(src: Source) -> int | None:
    """As :func:`bias_offset`, for the phase source."""
    return src.start if isinstance(src, ClockSource) and src.kind == "phase" else None


def clock_offset(src: Source) -> int | None:
    """The start step of a clock source (bias or phase), or None for the input and for
    groups."""
    return src.start if isinstance(src, ClockSource) else None


# ---------------------------------------------------------------- lowered network


@dataclass(eq=False)
class InputSpec:
    """The network input: integer payloads sent every step (graded when levels > 1)."""

    name: str
    size: int
    levels: int
    timesteps: int

    @property
    def num_message_bits(self) -> int:
        return message_bits(self.levels)


def message_bits(levels: int) -> int:
    """Payload bits of a source with ``levels`` (1 = binary spikes, which carry none)."""
    return 0 if levels == 1 else max(1, math.ceil(math.log2(levels + 1)))


@dataclass(eq=False)
class SynapseSpec:
    """A synapse layer from ``src`` (input, bias or group) to group ``dst``.

    ``weights`` is the integer ``(n_dst, n_src)`` matrix of a Dense/Sparse layer, or the
    integer kernel ``(c_out, c_in/groups, kh, kw)`` of a Conv layer, whose geometry is
    ``conv``. ``port`` is the target's input port (a shifter's constant is ``a_in2``).
    """

    name: str
    src: Source
    dst: str
    weights: np.ndarray | sp.csr_matrix
    weight_exp: int
    delay: int = 0
    num_message_bits: int = 0
    clipped: int = 0
    scale: float = 1.0
    #: Logical steps between the source's output and the target seeing it (NIR Delay).
    lag: int = 0
    #: Carries the previous step's spikes of a group back into itself.
    recurrent: bool = False
    conv: ConvMap | None = None
    port: str = "a_in"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the layer against Loihi's limits; lowering calls it again after it sets
        the delay."""
        w = self.weights
        if self.conv is None and w.ndim != 2:
            raise ValidationError(f"synapse {self.name}: weights must be 2-D, got {w.shape}")
        vals = w.data if sp.issparse(w) else w
        if vals.size and (vals.min() < fixed.WEIGHT_MIN or vals.max() > fixed.WEIGHT_MAX):
            raise ValidationError(
                f"synapse {self.name}: integer weights {vals.min()}..{vals.max()} exceed "
                f"Loihi's 8-bit range {fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}"
            )
        if self.conv is not None and self.weight_exp != 0:
            raise ValidationError(f"synapse {self.name}: Lava's Conv has no weight exponent")
        if not 0 <= self.delay <= fixed.MAX_DELAY:
            raise ValidationError(
                f"synapse {self.name}: delay {self.delay} exceeds Loihi's maximum "
                f"{fixed.MAX_DELAY}; shorten the shortcut path"
            )

    @property
    def kind(self) -> str:
        """``conv`` (a shared kernel), ``sparse`` or ``dense``."""
        if self.conv is not None:
            return "conv"
        return "sparse" if sp.issparse(self.weights) else "dense"

    @property
    def is_sparse(self) -> bool:
        return self.kind == "sparse"

    @property
    def n_src(self) -> int:
        return self.conv.n_in if self.conv is not None else int(self.weights.shape[1])

    @property
    def n_dst(self) -> int:
        return self.conv.n_out if self.conv is not None else int(self.weights.shape[0])

    @property
    def fan_out(self) -> np.ndarray:
        """Non-zero synapses leaving each source neuron (what one spike costs)."""
        if self.conv is not None:
            return self.conv.fan_out()
        if sp.issparse(self.weights):
            return np.asarray((self.weights != 0).sum(axis=0)).ravel()
        return np.count_nonzero(self.weights, axis=0)

    @property
    def nnz(self) -> int:
        """Connections the layer makes (for a conv, every position's non-zero taps)."""
        return int(self.fan_out.sum())

    @property
    def stored_weights(self) -> int:
        """Weights the layer stores: a conv's kernel once, a dense matrix whole, a sparse
        one's non-zeros."""
        if self.conv is not None or not sp.issparse(self.weights):
            return int(self.weights.size)
        return int(self.weights.nnz)

    @property
    def buffer_bits(self) -> int:
        """One output buffer entry per target neuron and delay slot: 16 bits for spikes,
        24 for graded payloads. A clock stream (bias, phase) arrives undelayed from a
        source that starts at its target's latency; it adds into slot 0 of the
        accumulator its target's data synapses already hold, so it stores none."""
        if self.delay == 0 and clock_offset(self.src) is not None:
            return 0
        bits = GRADED_BITS if self.num_message_bits else fixed.BUFFER_BITS
        return self.n_dst * (self.delay + 1) * bits

    @property
    def memory_bits(self) -> int:
        """8 bits per stored weight plus the output buffers."""
        return self.stored_weights * fixed.WEIGHT_BITS + self.buffer_bits

    def effective(self) -> np.ndarray | sp.csr_matrix:
        """The weights Lava's model computes with (Dense/Sparse clip and truncate;
        Conv uses its integers as given)."""
        if self.conv is not None:
            return np.asarray(self.weights, np.int64)
        return fixed.dense_effective_weights(self.weights)


@dataclass(frozen=True)
class RelayParams:
    """A relay's output is ``(Σ a_in) >> exp``: ``ProdNeuron`` (a shifter, whose constant
    ``a_in2`` is 1) where ``shifter`` or exp > 0, else ``GradedVec``; with ``rectify``,
    ``max(Σ a_in, 0)`` (stock ``GradedReluVec``)."""

    exp: int = 0
    shifter: bool = False
    rectify: bool = False

    @property
    def prod(self) -> bool:
        return self.shifter or self.exp > 0


@dataclass(frozen=True)
class FloatParams:
    """Lava float LIF parameters of a ``floating_pt`` network (the float lowering); field
    names match :class:`~lrfdyn.loihi.fixed.LifParams`."""

    du: float | np.ndarray
    dv: float | np.ndarray
    vth: float | np.ndarray
    bias_mant: float = 0.0
    bias_exp: int = 0
    #: Fires at v >= vth; sends ⌊v/vth⌋ spikes as one payload (Sinabs' MultiSpike).
    ge: bool = False
    multi: bool = False

    @property
    def per_neuron(self) -> bool:
        return any(np.ndim(v) > 0 for v in (self.du, self.dv, self.vth))

    @property
    def nir_kwargs(self) -> dict:
        """What :class:`~lrfdyn.loihi.processes.nir_neuron.NirLIF` needs beyond a stock LIF
        (empty where Lava's stock LIF runs the group exactly)."""
        if not (self.ge or self.multi or self.per_neuron):
            return {}
        return {"ge": self.ge, "multi": self.multi}


#: What a group's neurons compute with.
GroupParams = Union[fixed.LifParams, RelayParams, FloatParams]


class GroupKind(str, Enum):
    """What a group is. A str, so a kind prints and serializes as its value."""

    #: CUBA LIF neurons from a NIR neuron node (spiking, ternary or a voltage readout).
    LIF = "lif"
    #: A linear node kept as graded neurons that pass on their summed input.
    RELAY = "relay"
    #: A graded relay that repeats its source a number of steps later.
    DELAY = "delay"
    #: The dendritic network's stream parts, counted for mapping (:func:`as_lowered`).
    COMPARTMENT = "compartment"
    SERIALIZER = "serializer"
    DESERIALIZER = "deserializer"
    STREAM = "stream"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Units:
    """How a group's integers relate to the float model of the NIR file.

    ``units`` integer units stand for one float unit of the group's input current (a LIF:
    Λ = gain·vth/v_threshold, so the threshold is exact) or of its output (a relay).
    A relay sums at ``pre_units`` before its right shift. A LIF also keeps its float
    ``gain`` (dt/τ·r), ``v_th`` and ``tau_steps`` (τ/dt), which the dendritic lowering and
    the layer-by-layer agreement read back.
    """

    units: float
    pre_units: float | None = None
    gain: float | None = None
    v_th: float | None = None
    tau_steps: float | None = None

    def __post_init__(self) -> None:
        for name in ("units", "pre_units", "gain", "v_th", "tau_steps"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise ValidationError(f"group units: {name} = {v!r} must be finite")
        if not float(self.units) > 0:
            raise ValidationError(f"group units: {self.units!r} integer units per float unit "
                                  "must be > 0")


@dataclass(eq=False)
class NeuronGroup:
    """A group of Loihi neurons: CUBA LIF from a NIR neuron node, or a graded relay."""

    name: str
    size: int
    params: GroupParams
    latency: int = 0
    shape: tuple[int, ...] = ()
    #: Integer units per float unit (None where the group has no float counterpart).
    units: Units | None = None
    #: ``subtract_next`` (snnTorch) in float networks only.
    reset: str = "zero"
    #: False for a voltage readout (LI, I, CubaLI) and for relays: their value is read.
    spiking: bool = True
    kind: GroupKind = GroupKind.LIF
    #: A ternary LIF (lrfdyn's ternary/1, Lava's ``TernaryLIF``): it sends −1, 0 or +1
    #: as a signed payload, so ``spiking`` is False (its value is read).
    ternary: bool = False

    def __post_init__(self) -> None:
        try:
            self.kind = GroupKind(self.kind)
        except ValueError:
            raise ValidationError(f"group {self.name}: kind {self.kind!r} is not one of "
                                  f"{', '.join(k.value for k in GroupKind)}") from None
        if not isinstance(self.params, (fixed.LifParams, RelayParams, FloatParams)):
            raise ValidationError(f"group {self.name}: params of type "
                                  f"{type(self.params).__name__} are not a group's parameters")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) \
                or self.size < 0:
            raise ValidationError(f"group {self.name}: size {self.size!r} must be a count >= 0")
        if self.reset not in RESETS:
            raise ValidationError(f"group {self.name}: reset {self.reset!r} is not one of "
                                  f"{', '.join(RESETS)}")

    @property
    def graded(self) -> bool:
        """Sends integer payloads rather than spikes."""
        return self.kind != GroupKind.LIF

    @property
    def relay(self) -> RelayParams:
        """A graded group's shift and rectifier (none where its params are not a relay's)."""
        return self.params if isinstance(self.params, RelayParams) else RelayParams()

    @property
    def state_bits(self) -> int:
        """u and v of every LIF at 24 bits each; one 24-bit value per relay neuron."""
        words = 2 if self.kind == GroupKind.LIF else 1
        return self.size * words * fixed.UV_BITS


@dataclass(eq=False)
class LoweredNetwork:
    """Everything needed to run a network on Lava or on the integer reference."""

    input: InputSpec
    groups: dict[str, NeuronGroup]  # in topological order
    synapses: list[SynapseSpec]
    output: str
    dt: float
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Samples side by side: every group holds this many copies of the network's
    #: neurons, and the clock sources are shared (:mod:`lrfdyn.loihi.copies`).
    copies: int = 1

    @property
    def latency(self) -> int:
        """Steps from an input to the output group's response to it."""
        return self.groups[self.output].latency

    def incoming(self, group: str) -> list[SynapseSpec]:
        return [s for s in self.synapses if s.dst == group]

    @property
    def has_bias(self) -> bool:
        return any(bias_offset(s.src) is not None for s in self.synapses)

    #: ``(T, P)`` 0/1: which neuron of :data:`PHASE_SOURCE` spikes at each of a sample's T
    #: logical steps (None without block-sum nodes). It is silent from step T on.
    phases: np.ndarray | None = None

    @property
    def bias_sources(self) -> list[ClockSource]:
        """The bias sources the synapses read, by start step."""
        return sorted({s.src for s in self.synapses if bias_offset(s.src) is not None})

    @property
    def phase_sources(self) -> list[ClockSource]:
        """The phase sources the synapses read, by start step."""
        return sorted({s.src for s in self.synapses if phase_offset(s.src) is not None})

    def phase_at(self, t: int) -> np.ndarray:
        """The phase source's spikes (P,) at logical step ``t`` of a sample."""
        if self.phases is None or not 0 <= t < len(self.phases):
            return np.zeros(0 if self.phases is None else self.phases.shape[1], np.int64)
        return self.phases[t]

    def steps_per_sample(self) -> int:
        """Lava steps per sample: T input steps plus the pipeline's fill."""
        return self.input.timesteps + self.latency

    def quantization_report(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.synapses:
            g = self.groups[s.dst]
            vals = s.weights.data if sp.issparse(s.weights) else np.asarray(s.weights)
            row = {
                "synapse": s.name, "src": str(s.src), "dst": s.dst, "kind": s.kind,
                "shape": list(np.shape(s.weights)), "weight_exp": s.weight_exp,
                "synapses": s.nnz, "stored_weights": s.stored_weights,
                "weight_min": int(vals.min(initial=0)), "weight_max": int(vals.max(initial=0)),
                "clipped": s.clipped, "delay": s.delay, "scale": s.scale,
            }
            if isinstance(g.params, fixed.LifParams):
                row.update({"vth": g.params.vth, "du": g.params.du, "dv": g.params.dv})
            elif isinstance(g.params, RelayParams):
                row["relay_exp"] = g.params.exp
            rows.append(row)
        return rows
