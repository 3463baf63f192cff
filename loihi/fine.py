"""Finer integer weights for spike-driven synapses: the quantizer of NIR interop graphs.

The default quantizer (:class:`lrfdyn.loihi.quantize.Quantizer`) maps a LIF's largest
spike-driven weight to 254, so every weight is rounded to 1/254 of the largest (1/127
where Lava drops the LSB of a mixed-sign matrix) and the threshold follows. On the
peers' small graphs that rounding flips spikes, and a voltage readout (LI, CubaLI),
which sums every weight it receives, drifts off by more than 1 % of its peak.

:class:`FineQuantizer` gives each spike-driven Dense/Sparse synapse (and each bias) up
to 14 bits by sending it as two synapses from the same source::

    W_int = hi·2^(6+e) + lo·2^e      hi even in −254..254, lo in 0..127

``hi`` is even, so a mixed-sign Dense loses nothing to Lava's dropped LSB, and ``lo``
is never negative, so it is an excitatory Dense that keeps all 8 bits. The target
scale T (integer input per unit of float current) then grows until one of:

* the largest weight reaches 254·2^6 (:data:`FINE_MAX`);
* Loihi's 17-bit threshold (``vth = T·θ/gain``);
* the 24-bit registers: ``u = Λ·i`` and ``v = Λ·v_float`` with ``Λ = 64·T/gain`` must
  stay inside ±2^23. Without calibration the bound is the worst case (every input
  spiking every step, through the decays); with ``peaks`` (the float model's largest
  |i| and |v| of each group on the given input, :func:`lrfdyn.sim.interop.state_peaks`)
  it is those peaks times :data:`CALIBRATION_MARGIN`.

The scale never drops below the default's, so nothing gets coarser. Convs and graded
(relay, 8-bit input) terms are quantized as the default does; interop lowers with
``shared=False``, so its convs are explicit matrices and take the finer weights too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from lrfdyn.loihi import fixed
from lrfdyn.loihi.layers import ConvMap, LinearMap
from lrfdyn.loihi.ir import BIAS_SOURCE, GRADED_MAX, SynapseSpec
from lrfdyn.loihi.quantize import Quantizer, abs_apply, is_sparse_enough, max_abs
from lrfdyn.loihi.wiring import GroupPlan, Wiring

#: hi·2^6 + lo with lo in 0..127 (a synapse's mantissas stop at 254, see the module doc).
HI_SHIFT = 6
#: Largest split weight: hi 254 (even, mixed-sign safe) shifted by 6.
FINE_MAX = fixed.WEIGHT_MAX << HI_SHIFT
#: Calibrated peaks are multiplied by this before bounding the registers.
CALIBRATION_MARGIN = 1.5
#: Steps of pipeline fill a bias keeps adding after the input ends (worst-case bound).
_FILL_STEPS = 64


def split_weights(raw: np.ndarray | sp.spmatrix) -> tuple[list[tuple[Any, int]], int]:
    """Integer targets ``raw`` (already scaled) as [(mantissas, exp), …] whose effective
    sum is ``round(raw)`` to 2^e, and how many entries were clipped."""
    sparse = sp.issparse(raw)
    mat = sp.csr_matrix(raw, dtype=np.float64, copy=True) if sparse else None
    vals = mat.data if sparse else np.asarray(raw, np.float64)
    peak = float(np.max(np.abs(vals), initial=0.0))
    e0 = max(0, math.ceil(math.log2(peak / FINE_MAX) - 1e-12)) if peak > FINE_MAX else 0
    w = np.round(vals / 2.0**e0)
    clipped = int(np.count_nonzero(np.abs(w) > FINE_MAX))
    w = np.clip(w, -FINE_MAX, FINE_MAX)
    hi = 2.0 * np.floor(w / 2.0 ** (HI_SHIFT + 1))
    lo = w - hi * 2.0**HI_SHIFT  # 0..127
    parts = []
    for part, exp in ((hi, e0 + HI_SHIFT), (lo, e0)):
        if not np.any(part):
            continue
        if sparse:
            m = mat.copy()
            m.data = part
            m.eliminate_zeros()
            parts.append((m.astype(np.int64), exp))
        else:
            parts.append((part.astype(np.int64), exp))
    return parts, clipped


def _geometric(decay: float, steps: int) -> float:
    """Σ_{k<steps} (1 − decay)^k: how far a constant input builds up through a decay."""
    keep = 1.0 - float(decay)
    return float(steps) if keep >= 1.0 else (1.0 - keep**steps) / (1.0 - keep)


class FineQuantizer(Quantizer):
    """:class:`~lrfdyn.loihi.quantize.Quantizer` with split spike-driven weights (module doc).

    ``peaks``: group name -> (max |i|, max |v|) of the float model on the input that will
    run (calibration); groups absent from it are bounded by the worst case.
    """

    def __init__(self, w: Wiring, plans: list[GroupPlan],
                 peaks: dict[str, tuple[float, float]] | None = None) -> None:
        super().__init__(w, plans)
        self.peaks = peaks or {}

    def _fine(self, src: str, m: LinearMap) -> bool:
        return not isinstance(m, ConvMap) and not self.graded(src)

    def target_limit(self, n: str) -> float:
        coarse = super().target_limit(n)
        p = self.plans[n]
        if (p.kind != "lif" or p.dynamics.memoryless
                or not any(self._fine(t.source, m) for t, m in p.inputs.terms)):
            return coarse  # a memoryless group's input must stay below 64: no room
        limit = math.inf
        for tap, m in p.inputs.terms:
            peak = max_abs(m)
            if peak == 0:
                continue
            if self._fine(tap.source, m):
                limit = min(limit, FINE_MAX / peak)
            else:  # as the default: 8-bit weights, graded payloads' exponents
                limit = min(limit, self._coarse_term_limit(n, tap, m, peak))
        limit = min(limit, self._register_limit(n))
        return max(coarse, limit)

    def _coarse_term_limit(self, n: str, tap, m: LinearMap, peak: float) -> float:
        if (tap.source in self.component and isinstance(m, ConvMap)
                and self.component.get(tap.source) == self.component.get(n)):
            return math.inf
        exp = 0
        if not isinstance(m, ConvMap) and self.graded(tap.source):
            exp = -math.ceil(math.log2(float(np.max(self.src_bound_int(tap.source))) + 1))
        return fixed.WEIGHT_MAX * self.src_scale(tap.source) * 2.0**exp / peak

    def _register_limit(self, n: str) -> float:
        """Largest T keeping Λ·|i| and Λ·|v| inside 24 bits (Λ = 64·T/gain)."""
        dyn = self.plans[n].dynamics
        gain = float(dyn.gain)
        if n in self.peaks:
            i_peak, v_peak = (CALIBRATION_MARGIN * float(v) for v in self.peaks[n])
        else:
            i_peak, v_peak = self._worst_case(n)
        peak = max(i_peak, v_peak)
        if peak <= 0 or gain <= 0:
            return math.inf
        return gain * GRADED_MAX / (64.0 * peak)

    def _worst_case(self, n: str) -> tuple[float, float]:
        """(max |i|, max |v|) if every input spiked every step; a spiking group's v is
        bounded below only (above its threshold it resets, and a clip still spikes)."""
        p = self.plans[n]
        dyn = p.dynamics
        steps = self.w.input.timesteps + _FILL_STEPS
        bias = float(np.max(np.abs(dyn.bias), initial=0.0))
        total = float(np.max(self.float_bound(p.inputs), initial=0.0))
        i_peak = float(dyn.gain) * total * _geometric(dyn.du, steps)
        if dyn.spiking:
            neg = np.maximum(-p.inputs.bias, 0.0)
            for tap, m in p.inputs.terms:
                src_b = self.bound.get(tap.source) if self.graded(tap.source) else None
                ones = src_b if src_b is not None else np.ones(m.n_in)
                if isinstance(m, ConvMap) or self.graded(tap.source):
                    neg = neg + abs_apply(m, ones)
                else:
                    neg = neg + np.asarray(-(m.matrix_.minimum(0)) @ ones).ravel()
            i_neg = float(dyn.gain) * float(np.max(neg, initial=0.0)) * _geometric(dyn.du, steps)
            return i_peak, (i_neg + bias) * _geometric(dyn.dv, steps)
        return i_peak, (i_peak + bias) * _geometric(dyn.dv, steps)

    # -- synapses

    def quantize_terms(self, n: str, e, factor, *, bias_units: float | None) -> None:
        before = len(self.synapses)
        super().quantize_terms(n, e, factor, bias_units=bias_units)
        if self.plans[n].kind != "lif" or self.plans[n].dynamics.memoryless:
            return
        made = self.synapses[before:]
        kept = made[len(e.terms):]  # a relay's bias; a LIF's bias comes in quantize_lif
        out: list[SynapseSpec] = []
        for (tap, m), spec in zip(e.terms, made):
            if not self._fine(tap.source, m):
                out.append(spec)
                continue
            out += self._split(spec, m.matrix_ * spec.scale)
        self.synapses[before:] = out + kept

    def quantize_lif(self, n: str, p: GroupPlan) -> None:
        super().quantize_lif(n, p)
        if p.dynamics.memoryless:
            return
        for k, s in enumerate(self.synapses):
            if s.dst == n and s.src == BIAS_SOURCE and s.name == f"{n}.bias":
                dyn = p.dynamics
                bias = p.inputs.bias * dyn.gain + np.broadcast_to(dyn.bias, (p.inputs.size,))
                lam = self.groups[n].units.units
                raw = (bias * lam / (1 << fixed.ACT_SHIFT))[:, None]
                self.synapses[k:k + 1] = self._split(s, raw)
                break

    def _split(self, spec: SynapseSpec, raw) -> list[SynapseSpec]:
        parts, clipped = split_weights(raw)
        out = []
        for j, (mant, exp) in enumerate(parts):
            if sp.issparse(mant) and not is_sparse_enough(mant):
                mant = mant.toarray()
            out.append(SynapseSpec(
                name=spec.name if j == 0 else f"{spec.name}#lo", src=spec.src, dst=spec.dst,
                weights=mant, weight_exp=exp, num_message_bits=spec.num_message_bits,
                clipped=clipped if j == 0 else 0, scale=spec.scale, lag=spec.lag))
        return out or [spec]
