"""Loihi fixed-point arithmetic: the one place it is defined.

Everything here is a pure numpy function on integer arrays. Training's deploy
mode, the lowering to Lava and the integer reference executor all call these
functions, so a quantized PyTorch model, the reference and Lava's ``fixed_pt``
models share one definition of every shift, decay and saturation.

The ground truth is Lava's own bit-accurate models (lava-nc 0.10):
``lava/proc/lif/models.py`` (``AbstractPyLifModelFixed``, ``PyLifModelBitAcc``),
``lava/proc/dense/models.py`` (``PyDenseModelBitAcc``) and
``lava/proc/conv/models.py`` (``PyConvModelFixed``). ``tests/loihi/test_fixed.py``
checks this module against those models, run in real Lava.

CUBA LIF, one step (all integers)::

    u[t] = wrap24( sign(u)·((|u|·(4096 − (du+1))) >> 12) + (a_in[t] << 6) )
    v[t] = clip24( sign(v)·((|v|·(4096 − dv)) >> 12) + u[t] + (bias_mant << bias_exp) )
    s[t] = v[t] > (vth << 6);   v[t] ← 0 where s[t]

Dense synapse: weights are clipped to 8 bits (sign mode from the matrix),
mixed-sign matrices lose their least significant bit, and the summed input is
shifted by ``weight_exp``. The fixed-point Conv uses its weights as given,
ignores ``weight_exp`` and wraps its output to 24-bit signed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

try:  # the integer reference runs these on torch tensors; export needs only numpy
    import torch
except ImportError:  # pragma: no cover
    torch = None

from lrfdyn.errors import LoihiRangeError

#: Width of the neuron state registers u and v.
UV_BITS = 24
#: Decay constants du and dv are unsigned 12-bit fractions of 4096.
DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS
#: The synaptic input and the threshold are MSB-aligned with u and v by this shift.
ACT_SHIFT = 6
VTH_SHIFT = 6
#: Unsigned threshold mantissa width (PyLifModelBitAcc: vth precision 17).
VTH_BITS = 17
#: Signed bias mantissa width and unsigned bias exponent width.
BIAS_MANT_BITS = 13
BIAS_EXP_BITS = 3
#: Synaptic weight width. Mixed-sign Dense weights keep 7 bits plus sign, as even numbers.
WEIGHT_BITS = 8
#: DelayDense delays (lava.proc.dense.process.DelayDense) up to this many steps.
MAX_DELAY = 63
#: Width of a synapse layer's output buffer entry (Lava Dense/Sparse: a_buff precision 16),
#: one per target neuron and delay slot.
BUFFER_BITS = 16

_UV_MAX = 1 << (UV_BITS - 1)
VTH_MAX = (1 << VTH_BITS) - 1
BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
BIAS_MANT_MIN = -(1 << (BIAS_MANT_BITS - 1))
BIAS_EXP_MAX = (1 << BIAS_EXP_BITS) - 1
#: Even mantissas in [-256, 254] survive Lava's clip and LSB truncation unchanged.
WEIGHT_MAX = (1 << WEIGHT_BITS) - 2
WEIGHT_MIN = -(1 << WEIGHT_BITS)


# ---------------------------------------------------------------- arithmetic


def _int64(x):
    """x as int64, keeping a torch tensor a torch tensor (so the reference can run on CUDA)."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.to(torch.int64)
    return np.asarray(x, dtype=np.int64)


def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def decay(x, d):
    """``sign(x)·((|x|·(4096 − d)) >> 12)``: a decay that rounds toward zero."""
    x = _int64(x)
    keep = DECAY_UNITY - (d if _is_torch(d) else np.asarray(d, dtype=np.int64))
    if _is_torch(x):
        if not _is_torch(keep) and keep.ndim == 0:  # the reference's hot path: scalar decays
            if keep == 0:
                return torch.zeros_like(x)
            if keep == DECAY_UNITY:
                return x
        keep = torch.as_tensor(keep, dtype=torch.int64, device=x.device)
        # Exact: |x|·keep < 2^36, and truncating division is sign·(|·| >> 12).
        return torch.div(x * keep, DECAY_UNITY, rounding_mode="trunc")
    return np.sign(x) * ((np.abs(x) * keep) >> DECAY_BITS)


def wrap_current(u):
    """Two's-complement wrap of u as Lava does it (note: +2^23 itself is not wrapped)."""
    u = _int64(u)
    where = torch.where if _is_torch(u) else np.where
    wrapped = where(u > _UV_MAX, u - 2 * _UV_MAX, u)
    return where(wrapped <= -_UV_MAX, u + 2 * _UV_MAX, wrapped)


def clip_voltage(v):
    """Saturate v to ±(2^23 − 1)."""
    v = _int64(v)
    if _is_torch(v):
        return torch.clamp(v, -_UV_MAX + 1, _UV_MAX - 1)
    return np.clip(v, -_UV_MAX + 1, _UV_MAX - 1)


def wrap_signed(x, bits: int = UV_BITS):
    """Two's-complement wrap to ``bits`` (the fixed-point Conv's output "clamp").

    Lava's ``lava.proc.conv.utils.signed_clamp`` wraps rather than saturates, so
    +2^23 becomes −2^23 (docs/design.md §3.3).
    """
    half = 1 << (bits - 1)
    if not (_is_torch(x) and x.dtype == torch.int32):  # int32: the caller bounded |x| < 2^30
        x = _int64(x)
    return (x + half) % (2 * half) - half


def shift(x, exp: int):
    """Arithmetic shift: left by ``exp`` if positive, else right (flooring) by ``-exp``."""
    if not (_is_torch(x) and x.dtype in (torch.int32, torch.int64)):
        x = _int64(x)  # an int32 tensor stays int32: the caller bounded it
    return x << exp if exp > 0 else x >> -exp


def scaled_bias(bias_mant: np.ndarray, bias_exp: np.ndarray) -> np.ndarray:
    """``bias_mant << bias_exp`` (a negative exponent shifts right, as Lava does)."""
    mant = np.asarray(bias_mant, dtype=np.int64)
    exp = np.asarray(bias_exp, dtype=np.int64)
    return np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0))


# ---------------------------------------------------------------- neurons


@dataclass(frozen=True, eq=False)
class LifParams:
    """Integer parameters of a Loihi CUBA LIF group; scalars broadcast over the group."""

    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray | int = 0
    bias_exp: np.ndarray | int = 0

    def __post_init__(self) -> None:
        for name in ("du", "dv"):
            val = getattr(self, name)
            if not 0 <= val < DECAY_UNITY:
                raise LoihiRangeError(
                    f"{name}={val} is outside Loihi's 12-bit decay range 0..{DECAY_UNITY - 1}; "
                    "choose a time constant tau >= 1 step"
                )
        if not 0 <= self.vth <= VTH_MAX:
            raise LoihiRangeError(
                f"vth={self.vth} is outside Loihi's {VTH_BITS}-bit threshold range 0..{VTH_MAX}; "
                "rescale the layer (smaller weights or a larger weight exponent)"
            )
        mant = np.asarray(self.bias_mant)
        if mant.size and (mant.min() < BIAS_MANT_MIN or mant.max() > BIAS_MANT_MAX):
            raise LoihiRangeError(
                f"bias mantissa {int(mant.min())}..{int(mant.max())} exceeds Loihi's "
                f"{BIAS_MANT_BITS}-bit range; raise bias_exp"
            )


@dataclass(eq=False)
class LifState:
    """Current u and voltage v of a LIF group (int64 holding 24-bit values)."""

    u: np.ndarray
    v: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> LifState:
        return cls(np.zeros(shape, np.int64), np.zeros(shape, np.int64))


def lif_step(
    state: LifState, a_in, p: LifParams, spiking: bool = True
) -> tuple[np.ndarray, LifState]:
    """One bit-accurate Loihi CUBA LIF update (see the module docstring).

    Works on numpy arrays and on torch tensors alike (one definition for both).

    Args:
        state: u and v before the step.
        a_in: summed synaptic input of this step, in weight units.
        p: the group's integer parameters.
        spiking: False for a voltage readout, which never spikes nor resets.

    Returns:
        The boolean spikes and the new state (v already reset where it spiked).
    """
    a_in = _int64(a_in)
    u = wrap_current(decay(state.u, p.du + 1) + (a_in << ACT_SHIFT))
    v = clip_voltage(decay(state.v, p.dv) + u + _bias_of(p, u))
    spikes = (v > (int(p.vth) << VTH_SHIFT)) & spiking
    return spikes, LifState(u, (torch.where if _is_torch(v) else np.where)(spikes, 0, v))


def ternary_step(state: LifState, a_in, p: LifParams) -> tuple[np.ndarray, LifState]:
    """One step of Lava's ``TernaryLIF`` (``PyTernLifModelFixed``, vth_hi = vth,
    vth_lo = −vth): the u/v update of :func:`lif_step` (both models inherit it from
    ``AbstractPyLifModelFixed``), then ``s = (v > vth << 6) − (v < −vth << 6)`` and
    ``v ← 0`` where ``s ≠ 0``. Returns int64 values in {−1, 0, 1} and the new state."""
    a_in = _int64(a_in)
    u = wrap_current(decay(state.u, p.du + 1) + (a_in << ACT_SHIFT))
    v = clip_voltage(decay(state.v, p.dv) + u + _bias_of(p, u))
    vth = int(p.vth) << VTH_SHIFT
    s = _int64(v > vth) - _int64(v < -vth)
    return s, LifState(u, (torch.where if _is_torch(v) else np.where)(s != 0, 0, v))


def _bias_of(p: LifParams, like):
    """``bias_mant << bias_exp`` in ``like``'s kind; a torch copy is cached per device."""
    bias = scaled_bias(p.bias_mant, p.bias_exp)
    if not _is_torch(like):
        return bias
    cache = p.__dict__.setdefault("_torch_bias", {})  # frozen dataclass: bypass __setattr__
    if like.device not in cache:
        cache[like.device] = torch.as_tensor(bias, dtype=torch.int64, device=like.device)
    return cache[like.device]


class TorchLif:
    """:func:`lif_step` for one torch group, with shift decays, in int32 where it fits.

    The integer reference spends most of its time in this update. The generic step
    multiplies by ``keep`` and divides (36-bit products, int64); where ``keep`` is a
    power of two (τ = 2 is ``dv`` = 2048) the decay is a shift that rounds toward
    zero, and every register fits int32 whenever ``|a_in| < 2^24`` (int64 beyond).
    The wrap and the clip are dropped where the caller's bound on ``|a_in|`` proves
    they cannot act. :meth:`build` returns None for a non-power-of-two decay; the
    caller then uses :func:`lif_step`. Tested bit-identical to it.
    """

    def __init__(self, p: LifParams, spiking: bool, u_shift: int | None, v_shift: int,
                 bias: "torch.Tensor", wraps: bool, clips: bool) -> None:
        self.spiking, self.u_shift, self.v_shift = spiking, u_shift, v_shift
        self.bias, self.wraps, self.clips = bias, wraps, clips
        self.dtype = bias.dtype
        self.sign_bit = 31 if self.dtype == torch.int32 else 63
        self.vth = int(p.vth) << VTH_SHIFT

    @classmethod
    def build(cls, p: LifParams, spiking: bool, a_max: float, device) -> TorchLif | None:
        """A kernel for inputs with ``|a_in| ≤ a_max``, or None where shifts are not exact."""
        if torch is None or not isinstance(p, LifParams) or a_max >= 1 << 40:
            return None
        keep_u, keep_v = DECAY_UNITY - (p.du + 1), DECAY_UNITY - p.dv
        u_shift, v_shift = _pow2_shift(keep_u), _pow2_shift(keep_v)
        if v_shift is None or (keep_u and u_shift is None):
            return None
        bias = scaled_bias(p.bias_mant, p.bias_exp)
        # |u| ≤ (a_max << 6)·Σ (keep_u/4096)^n before the wrap; |v| likewise.
        u_max = (a_max * (1 << ACT_SHIFT)) / (1 - keep_u / DECAY_UNITY)
        v_max = ((min(u_max, _UV_MAX) + float(np.abs(bias).max(initial=0)))
                 / (1 - keep_v / DECAY_UNITY) if keep_v < DECAY_UNITY else float("inf"))
        # int32 holds u = decay(u) + (a_in << 6) < 2^30 and v < 2^23 + 2^30.
        dtype = torch.int32 if a_max < 1 << 24 else torch.int64
        return cls(p, spiking, None if keep_u == 0 else u_shift, v_shift,
                   torch.as_tensor(bias, dtype=dtype, device=device),
                   wraps=u_max >= _UV_MAX, clips=v_max >= _UV_MAX - 1)

    def _decay(self, x: "torch.Tensor", s: int) -> "torch.Tensor":
        # Round toward zero: add 2^s − 1 to negatives before the arithmetic shift.
        return (x + ((x >> self.sign_bit) & ((1 << s) - 1))) >> s if s else x

    def __call__(self, u, v, a_in):
        """One step on tensors of :attr:`dtype`: (spikes, u, v), as :func:`lif_step`."""
        cur = a_in << ACT_SHIFT
        u = cur if self.u_shift is None else self._decay(u, self.u_shift) + cur
        if self.wraps:
            u = torch.where(u > _UV_MAX, u - 2 * _UV_MAX,
                            torch.where(u <= -_UV_MAX, u + 2 * _UV_MAX, u))
        v = self._decay(v, self.v_shift) + u + self.bias
        if self.clips:
            v = torch.clamp(v, -_UV_MAX + 1, _UV_MAX - 1)
        if not self.spiking:
            return torch.zeros_like(v, dtype=torch.bool), u, v
        spikes = v > self.vth
        return spikes, u, v.masked_fill(spikes, 0)


def _pow2_shift(keep: int) -> int | None:
    """``s`` with ``keep·2^s == 4096`` (the decay is a shift by s), else None."""
    if keep <= 0 or keep & (keep - 1):
        return None
    return DECAY_BITS - (keep.bit_length() - 1)


def compartment_step(
    state: LifState, a_in: np.ndarray, dv: np.ndarray | int, reset: bool = False
) -> tuple[np.ndarray, LifState]:
    """One dendritic compartment: the CUBA update of :func:`lif_step` without a threshold.

    u (du = 4095, so it forgets) carries this step's input and v, leaking by ``dv``,
    integrates it; v itself is the graded output, every step. ``reset`` zeroes u and v
    and drops the step's input (the compartment sends 0): how a stream starts afresh.
    """
    if reset:
        zero = np.zeros_like(np.asarray(state.v, dtype=np.int64))
        return zero, LifState(zero, zero.copy())
    a_in = np.asarray(a_in, dtype=np.int64)
    u = wrap_current(a_in << ACT_SHIFT)  # decay(u, du + 1 = 4096) is 0
    v = clip_voltage(decay(state.v, dv) + u)
    return v, LifState(u, v)


# ---------------------------------------------------------------- synapses


def dense_effective_weights(weights: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
    """The weights Lava's ``PyDenseModelBitAcc`` / ``PySparseModelBitAcc`` actually use.

    8-bit clip and LSB truncation, with the sign mode taken from the matrix itself as
    Lava does: all >= 0 is excitatory, all <= 0 inhibitory, anything else mixed (which
    costs the LSB). A sparse matrix keeps its structure.
    """
    if sp.issparse(weights):
        mat = sp.csr_matrix(weights, dtype=np.int64, copy=True)
        mat.data = _clip_truncate(mat.data)
        return mat
    return _clip_truncate(np.asarray(weights).astype(np.int64))


def _clip_truncate(w: np.ndarray) -> np.ndarray:
    if w.size == 0 or w.min() >= 0:
        return np.clip(w, 0, (1 << WEIGHT_BITS) - 1)
    if w.max() <= 0:
        return -np.clip(-w, 0, (1 << WEIGHT_BITS) - 1)
    return (np.clip(w, WEIGHT_MIN, (1 << WEIGHT_BITS) - 1) >> 1) << 1


def dense_accumulate(
    weights: np.ndarray | sp.spmatrix, x: np.ndarray, weight_exp: int = 0
) -> np.ndarray:
    """Summed input of a Dense or Sparse layer: ``shift(W·x, weight_exp)``, effective weights.

    ``x`` holds binary spikes or graded (integer) payloads, with the input axis last
    (a batch of vectors is allowed).
    """
    return accumulate(dense_effective_weights(weights), x, weight_exp)


def accumulate(
    effective: np.ndarray | sp.spmatrix, x: np.ndarray, weight_exp: int = 0
) -> np.ndarray:
    """``shift(W·x, weight_exp)`` for weights already passed through
    :func:`dense_effective_weights` (so a caller stepping many times clips once)."""
    x = np.asarray(x, dtype=np.int64)
    return shift(np.asarray((effective @ x.T).T, dtype=np.int64), weight_exp)


# ---------------------------------------------------------------- quantization


@dataclass(frozen=True, eq=False)
class QuantizedWeights:
    """An integer weight matrix with its exponent: ``W_float·scale ≈ mant · 2^exp``."""

    mant: np.ndarray
    exp: int
    scale: float
    clipped: int = 0
    meta: dict = field(default_factory=dict)


def quantize_to_mantissa(
    values: np.ndarray | sp.spmatrix, scale: float, exp: int = 0, *, even: bool = True
) -> QuantizedWeights:
    """Round ``values·scale / 2^exp`` to mantissas in [-256, 254], counting clips.

    Even mantissas (the default) are what a mixed-sign Dense keeps after Lava drops
    the LSB, so the same integers mean the same thing in Dense and Sparse. Lava's
    Conv keeps every bit, so its weights take ``even=False``. A sparse matrix stays
    sparse, and weights that round to zero leave it.
    """
    if sp.issparse(values):
        mat = sp.csr_matrix(values, dtype=np.float64, copy=True)
        q = quantize_to_mantissa(mat.data, scale, exp, even=even)
        mat.data = q.mant.astype(np.float64)
        mat.eliminate_zeros()
        return QuantizedWeights(mant=mat.astype(np.int64), exp=exp, scale=scale,
                                clipped=q.clipped)
    raw = np.asarray(values, np.float64) * scale / (2.0**exp)
    mant = 2 * np.round(raw / 2.0) if even else np.round(raw)
    clipped = int(np.count_nonzero((mant < WEIGHT_MIN) | (mant > WEIGHT_MAX)))
    mant = np.clip(mant, WEIGHT_MIN, WEIGHT_MAX).astype(np.int64)
    return QuantizedWeights(mant=mant, exp=exp, scale=scale, clipped=clipped)


def decay_from_factor(keep: float) -> int:
    """12-bit decay constant d such that ``x·(4096 − d)/4096 ≈ keep·x``."""
    d = int(round((1.0 - keep) * DECAY_UNITY))
    if not 0 <= d < DECAY_UNITY:
        raise LoihiRangeError(
            f"leak factor {keep} maps to decay {d}, outside Loihi's 12-bit range; "
            "use 0 < tau"
        )
    return d
