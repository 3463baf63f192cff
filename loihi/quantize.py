"""Quantization: every group's scale and its incoming synapses as Loihi integers.

:class:`Quantizer` is the default; :class:`lrfdyn.loihi.fine.FineQuantizer` (two-synapse
14-bit weights for NIR interop graphs) is another. :func:`lrfdyn.loihi.lower.lower` takes
any :class:`QuantizerFactory`: it calls ``quantizer(wiring, plans)`` and reads
``run()``'s groups and synapses back (:class:`Quantization`).

Scales. A LIF group's integer input is ``T·x`` for a float current x, where
``T = gain·vth/v_threshold``, so the threshold is exact. A relay's output is
``S·x``, computed as ``(Σ W_int·src) >> exp`` with ``W_int = W·S·2^exp / S_src``. A LIF
that reads relays one-to-one (weight 1) needs ``T = S`` for each of them, so such
relays and groups form a *component* that shares one scale; each relay still picks
its own exponent for full weight resolution. Graded values are kept below the
24-bit registers by worst-case bounds (a LIF's current below 2^17, since u holds
``a_in << 6``); spike-driven sums follow the rule of the first lowering (the largest
weight maps to 254).

Graded extension nodes (:func:`lrfdyn.nir_types.graded_node`, SSA's count and gate)
are relays at scale 1 whose every weight and bias must stay the same integer: they
compute in whole units, and a rectifier gates exactly only then. What cannot is refused.

Biases travel as synapses, not as the LIF's ``bias_mant``. A Loihi bias acts
from the first step, while the input reaches a group only after its latency,
so a neuron bias would integrate alone during the pipeline's fill. Instead each group's
bias is a synapse from :data:`~lrfdyn.loihi.ir.BIAS_SOURCE`, which
:mod:`lrfdyn.loihi.schedule` moves to the copy of the source that starts at the group's
latency.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import (
    BIAS_SOURCE,
    CURRENT_MAX,
    GRADED_BITS,
    GRADED_MAX,
    PHASE_SOURCE,
    SPARSE_BELOW,
    NeuronGroup,
    RelayParams,
    SynapseSpec,
    Units,
    message_bits,
)
from lrfdyn.loihi.layers import ConvMap, LinearMap
from lrfdyn.loihi.linear import Expression, Tap
from lrfdyn.loihi.neurons import Dynamics
from lrfdyn.loihi.wiring import GroupPlan, Wiring, is_graded


def abs_apply(m: LinearMap, v: np.ndarray) -> np.ndarray:
    """``|m|`` applied to a non-negative vector: a per-output bound."""
    x = torch.as_tensor(v, dtype=torch.float64)[None]
    if isinstance(m, ConvMap):
        return m.with_weight(np.abs(m.weight)).apply(x)[0].numpy()
    return np.asarray(abs(m.matrix_) @ v).ravel()


def max_abs(m: LinearMap) -> float:
    """The largest weight magnitude of ``m`` (0 for a map with no weights)."""
    vals = m.weight if isinstance(m, ConvMap) else m.matrix_.data
    return float(np.max(np.abs(vals))) if np.size(vals) else 0.0


class Quantization(Protocol):
    """One quantization of a wiring, as :func:`~lrfdyn.loihi.lower.lower` runs it."""

    def run(self) -> tuple[dict[str, NeuronGroup], list[SynapseSpec]]:
        """The groups (in the plans' order) and every synapse into them, in integers.

        Latencies and delays are left at 0: :mod:`lrfdyn.loihi.schedule` sets them.
        """
        ...


class QuantizerFactory(Protocol):
    """What ``lower(..., quantizer=...)`` takes: ``quantizer(wiring, plans)``.

    ``plans`` are the wiring's groups with their shifter relays, in topological order.
    :class:`Quantizer` and :class:`lrfdyn.loihi.fine.FineQuantizer` are such factories
    (their classes), as is a ``functools.partial`` of one.
    """

    def __call__(self, w: Wiring, plans: list[GroupPlan], /) -> Quantization: ...


class Quantizer:
    """The default quantizer: chooses every group's scale and quantizes its incoming
    synapses, by the rules in this module's docstring.

    ``Quantizer(w, plans).run()`` quantizes the groups in the plans' order (a
    :class:`QuantizerFactory`). Subclasses such as :class:`lrfdyn.loihi.fine.FineQuantizer`
    override the hooks :meth:`target_limit` (the largest scale a group's own terms allow),
    :meth:`quantize_terms` (a group's input synapses) and :meth:`quantize_lif` (a LIF
    group); :meth:`quantize_relay` and :meth:`quantize_exact` make relays and graded
    extension nodes.

    Attributes:
        w: The wiring.
        plans: Group name -> plan; ``order`` lists the names in topological order.
        bound: Float bound of every graded value, per neuron (for the register limits).
        scale: Integer units per float unit of every graded source (1 for spikes).
        component: Group -> the component whose scale it shares (:meth:`component_scale`).
        groups: The groups :meth:`run` has made so far.
        synapses: The synapses :meth:`run` has made so far.
    """

    def __init__(self, w: Wiring, plans: list[GroupPlan]) -> None:
        self.w = w
        self.plans = {p.name: p for p in plans}
        self.order = [p.name for p in plans]
        # Float bound of every graded value (per neuron), for the register limits.
        self.bound: dict[str, np.ndarray] = {w.input.name: np.ones(w.input.size)}
        # Integer units per float unit of every graded source; 1 for spikes.
        self.scale: dict[str, float] = {w.input.name: float(w.input.levels)}
        self.component = self._components()
        self.comp_scale: dict[int, float] = {}
        self.groups: dict[str, NeuronGroup] = {}
        self.synapses: list[SynapseSpec] = []

    # -- structure

    def _components(self) -> dict[str, int]:
        """LIF groups and the relays they read one-to-one through a conv share a scale."""
        parent = {n: n for n in self.order}

        def find(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for n, p in self.plans.items():
            if p.kind != "lif":
                continue
            for tap, m in p.inputs.terms:
                src = tap.source
                if (src in self.plans and self.plans[src].kind == "relay"
                        and not self.plans[src].exact and isinstance(m, ConvMap)):
                    parent[find(src)] = find(n)
        roots: dict[str, int] = {}
        comp = {}
        for n in self.order:
            r = find(n)
            if any(find(m) == r and m != n for m in self.order) or self.plans[n].kind == "lif":
                comp[n] = roots.setdefault(r, len(roots))
        return comp

    def members(self, cid: int) -> list[str]:
        return [n for n in self.order if self.component.get(n) == cid]

    def graded(self, src: str) -> bool:
        return is_graded(self.w, self.plans, src)

    def src_scale(self, src: str) -> float:
        return self.scale[src] if self.graded(src) else 1.0

    def src_bound_int(self, src: str) -> np.ndarray:
        """Largest integer payload of each source neuron."""
        if not self.graded(src):
            return np.ones(1)
        if src == self.w.input.name:
            return np.full(1, float(self.w.input.levels))
        return np.ceil(self.bound[src] * self.scale[src]) + 1.0

    def float_bound(self, e: Expression) -> np.ndarray:
        total = np.abs(e.bias).copy()
        for tap, m in e.terms:
            src_b = self.bound.get(tap.source) if self.graded(tap.source) else None
            total += abs_apply(m, src_b if src_b is not None else np.ones(m.n_in))
        return total

    # -- scales

    def target_limit(self, n: str) -> float:
        """The largest target scale group n's own terms allow (8-bit weights, registers).

        For a LIF the target scale is T = gain·vth/threshold (its integer input per unit
        of float current); for a relay it is its pre-shift scale at exponent 0.
        """
        p = self.plans[n]
        limit = math.inf
        for tap, m in p.inputs.terms:
            peak = max_abs(m)
            if peak == 0 or (p.kind == "lif" and tap.source in self.component
                             and self.component.get(tap.source) == self.component.get(n)
                             and isinstance(m, ConvMap)):
                continue  # a one-to-one read of its own component: weight 1 by construction
            exp = 0
            if not isinstance(m, ConvMap) and self.graded(tap.source):
                # Dense/Sparse take an exponent: as many bits as the payload has.
                exp = -math.ceil(math.log2(float(np.max(self.src_bound_int(tap.source))) + 1))
            limit = min(limit, fixed.WEIGHT_MAX * self.src_scale(tap.source) * 2.0**exp / peak)
        return limit

    def _relay_range_limit(self, n: str) -> float:
        """Largest pre-shift scale keeping a relay's summed input inside 24 bits."""
        b = float(np.max(self.float_bound(self.plans[n].inputs), initial=0.0))
        return GRADED_MAX / (1.05 * b) if b > 0 else math.inf

    def component_scale(self, cid: int) -> float:
        """T of a component: the first LIF's vth sets it, so its threshold is exact."""
        if cid in self.comp_scale:
            return self.comp_scale[cid]
        members = self.members(cid)
        limit = min((self.target_limit(m) for m in members), default=math.inf)
        # A LIF's current from graded relays (worst case) must stay below 2^17.
        for m in members:
            p = self.plans[m]
            if p.kind != "lif":
                continue
            graded_in = [tap.source for tap, mm in p.inputs.terms
                         if self.component.get(tap.source) == cid and tap.source != m
                         and any(self.graded(t.source) for t, _ in
                                 self.plans[tap.source].inputs.terms)]
            if graded_in:
                reach = sum(float(np.max(self.float_bound(self.plans[r].inputs)))
                            for r in graded_in)
                if reach > 0:
                    limit = min(limit, CURRENT_MAX / (1.05 * reach))
        lifs = [m for m in members if self.plans[m].kind == "lif"]
        ref = self.plans[lifs[0]].dynamics
        theta = ref.v_th if ref.spiking else 1.0
        if theta <= 0:
            raise UnsupportedNodeError(f"{lifs[0]}: threshold must be positive, got {theta}")
        vth = min(fixed.VTH_MAX, math.floor(limit * theta / ref.gain)) if math.isfinite(limit) \
            else fixed.VTH_MAX
        for m in lifs:
            dyn = self.plans[m].dynamics
            if dyn.memoryless:
                vth = min(vth, self._memoryless_vth(m, dyn))
        if vth < 1:
            raise LoihiRangeError(
                f"{lifs[0]}: weights are too large relative to the threshold for 8-bit Loihi "
                "weights; retrain with weight decay or a larger threshold"
            )
        self.comp_scale[cid] = vth * ref.gain / theta
        return self.comp_scale[cid]

    def _memoryless_vth(self, n: str, dyn: Dynamics) -> int:
        """Keep a memoryless group's input below 4096 so v carries nothing to the next step."""
        e = self.plans[n].inputs
        theta = dyn.v_th if dyn.spiking else 1.0
        reach = dyn.gain * float(np.max(self.float_bound(e) + np.abs(dyn.bias)))
        if reach <= 0:
            return fixed.VTH_MAX
        # 3/4 of the bound leaves room for rounding the weights to even mantissas.
        return math.floor(0.75 * (fixed.DECAY_UNITY - 1) * theta / (64.0 * reach))

    # -- groups

    def run(self) -> tuple[dict[str, NeuronGroup], list[SynapseSpec]]:
        for n in self.order:
            p = self.plans[n]
            if p.kind == "lif":
                self.quantize_lif(n, p)
            elif p.exact:
                self.quantize_exact(n, p)
            else:
                self.quantize_relay(n, p)
        return self.groups, self.synapses

    def quantize_relay(self, n: str, p: GroupPlan) -> None:
        cid = self.component.get(n)
        range_limit = self._relay_range_limit(n)
        if cid is None:  # read by no LIF one-to-one: its own full-resolution scale
            s_out = min(self.target_limit(n), range_limit)
            if not math.isfinite(s_out):
                s_out = 1.0
            exp = 0
        else:
            s_out = self.component_scale(cid)
            head = min(self.target_limit(n), range_limit) / s_out
            exp = max(0, math.floor(math.log2(head))) if head > 0 else 0
        pre = s_out * 2.0**exp
        self.scale[n] = s_out
        self.bound[n] = self.float_bound(p.inputs)
        # Half a unit before the flooring shift makes it round to nearest: unbiased.
        rounding = np.full(p.inputs.size, 2.0 ** (exp - 1) / pre) if exp else 0.0
        inputs = Expression(p.inputs.terms, p.inputs.bias + rounding, p.inputs.shape)
        self.quantize_terms(n, inputs, lambda src: pre / self.src_scale(src), bias_units=pre)
        self.groups[n] = NeuronGroup(
            name=n, size=p.inputs.size, params=RelayParams(exp, p.shifter),
            shape=p.inputs.shape, units=Units(s_out, pre_units=pre),
            spiking=False, kind="relay")
        if self.groups[n].params.prod:
            # ProdNeuron shifts a_in1·a_in2; a constant 1 on a_in2 makes it a shifter.
            self.synapses.append(SynapseSpec(
                name=f"{n}.unit", src=BIAS_SOURCE, dst=n,
                weights=sp.csr_matrix(np.ones((p.inputs.size, 1), np.int64)), weight_exp=0,
                port="a_in2"))

    def quantize_exact(self, n: str, p: GroupPlan) -> None:
        """A graded extension node: one integer unit per float unit, every weight and bias
        kept exactly, so a rectifier gates exactly as the float graph does."""
        for tap, _ in p.inputs.terms:
            if self.graded(tap.source) and self.src_scale(tap.source) != 1.0:
                raise UnsupportedNodeError(
                    f"{n}: a graded node reads spikes or other graded nodes, not "
                    f"{tap.source!r} (scale {self.src_scale(tap.source):g}); re-export the model")
        self.scale[n] = 1.0
        self.bound[n] = self.float_bound(p.inputs)
        peak = float(np.max(self.bound[n], initial=0.0))
        if peak > GRADED_MAX:
            raise LoihiRangeError(f"{n}: its value can reach {peak:.0f}, beyond the 24-bit "
                                  f"payload ({GRADED_MAX}); use fewer tokens per count")
        self.quantize_terms(n, p.inputs, lambda src: 1.0, bias_units=1.0, exact=True)
        self.groups[n] = NeuronGroup(
            name=n, size=p.inputs.size, params=RelayParams(rectify=p.rectify,
                                                           shifter=p.gate is not None),
            shape=p.inputs.shape, units=Units(1.0, pre_units=1.0),
            spiking=False, kind="relay")
        if p.gate is not None:
            # Rows of block b are on only while phase gate[b] spikes: a_in1 · a_in2.
            rows = p.inputs.size // len(p.gate)
            cols = np.repeat(np.asarray(p.gate), rows)
            self.synapses.append(SynapseSpec(
                name=f"{n}.gate", src=PHASE_SOURCE, dst=n,
                weights=sp.csr_matrix((np.ones(p.inputs.size, np.int64),
                                       (np.arange(p.inputs.size), cols)),
                                      shape=(p.inputs.size, len(self.w.phases))),
                weight_exp=0, port="a_in2"))

    def quantize_lif(self, n: str, p: GroupPlan) -> None:
        dyn = p.dynamics
        t = self.component_scale(self.component[n])
        theta = dyn.v_th if dyn.spiking else 1.0
        vth = round(t * theta / dyn.gain)
        if vth < 1 or vth > fixed.VTH_MAX:
            raise LoihiRangeError(f"{n}: threshold {vth} is outside Loihi's range 1..{fixed.VTH_MAX}")
        lam = 64.0 * vth / theta
        size = p.inputs.size
        bias = p.inputs.bias * dyn.gain + np.broadcast_to(dyn.bias, (size,))
        own = self.component[n]

        def factor(src: str) -> float:
            if self.component.get(src) == own and src in self.groups and \
                    self.groups[src].kind == "relay":
                return 1.0  # one-to-one: the relay already sends T·x
            return t / self.src_scale(src)

        self.quantize_terms(n, p.inputs, factor, bias_units=None)
        if np.any(bias != 0):
            self.synapses.append(_bias_synapse(n, bias * lam))
        # A memoryless group's dv = 4095 forgets v within the step, proven below; any other
        # group with dt/τ = 1 needs dv = 4096, one more than Loihi holds, and is refused.
        dv = fixed.DECAY_UNITY - 1 if dyn.memoryless else fixed.decay_from_factor(1.0 - dyn.dv)
        params = fixed.LifParams(du=_current_decay12(dyn.du), dv=dv, vth=vth)
        group = NeuronGroup(name=n, size=size, params=params, shape=p.inputs.shape,
                            units=Units(lam, gain=dyn.gain, v_th=theta,
                                        tau_steps=dyn.tau_steps),
                            spiking=dyn.spiking and not dyn.ternary, ternary=dyn.ternary)
        self.groups[n] = group
        if dyn.memoryless:
            _check_memoryless(group, self.incoming(n), self)

    def incoming(self, n: str) -> list[SynapseSpec]:
        return [s for s in self.synapses if s.dst == n]

    def quantize_terms(self, n: str, e: Expression, factor, *, bias_units: float | None,
                  exact: bool = False) -> None:
        """Quantize every term of group n's input: integer = float · factor(src).

        ``exact``: every integer must equal its float value (odd mantissas kept, no
        exponent), or the group is refused.
        """
        taken = {s.name for s in self.synapses}
        for tap, m in e.terms:
            scale = factor(tap.source)
            bits = message_bits(int(np.max(self.src_bound_int(tap.source)))) \
                if self.graded(tap.source) else 0
            name = synapse_name(tap, n)
            k = 1
            while name in taken:  # several structures from one source (the LRF's convs)
                k += 1
                name = f"{synapse_name(tap, n)}#{k}"
            taken.add(name)
            if isinstance(m, ConvMap):
                q = fixed.quantize_to_mantissa(m.weight, scale, 0, even=False)
                spec = SynapseSpec(name=name, src=tap.source, dst=n, weights=q.mant,
                                   weight_exp=0, num_message_bits=bits and GRADED_BITS,
                                   clipped=q.clipped, scale=scale, lag=tap.lag,
                                   conv=m.with_weight(q.mant))
            else:
                exp = 0
                peak = max_abs(m) * scale
                if self.graded(tap.source) and peak > 0 and not exact:
                    # The smallest exponent that fits the largest weight into 8 bits.
                    exp = math.ceil(math.log2(peak / fixed.WEIGHT_MAX) - 1e-9)
                q = fixed.quantize_to_mantissa(m.matrix_, scale, exp, even=not exact)
                weights = q.mant if is_sparse_enough(q.mant) else q.mant.toarray()
                spec = SynapseSpec(name=name, src=tap.source, dst=n, weights=weights,
                                   weight_exp=q.exp, num_message_bits=bits and GRADED_BITS,
                                   clipped=q.clipped, scale=scale, lag=tap.lag)
            if exact:
                _require_exact(spec, m, scale)
            self.synapses.append(spec)
        if bias_units is not None and np.any(e.bias != 0):
            # A single-sign column keeps its LSB in Lava: rounding it to even would turn a
            # relay's one-unit rounding offset (exp = 1) into 0.
            mixed = bool((e.bias > 0).any() and (e.bias < 0).any())
            q = quantize_bias(e.bias * bias_units, even=mixed and not exact)
            spec = SynapseSpec(name=f"{n}.bias", src=BIAS_SOURCE, dst=n, weights=q.mant,
                               weight_exp=q.exp, clipped=q.clipped)
            if exact and not np.array_equal(
                    np.asarray(spec.effective()).ravel() * 2.0**q.exp, e.bias * bias_units):
                raise LoihiRangeError(f"{n}: its bias is not an integer Loihi holds exactly; "
                                      "a graded node's biases must be whole numbers that "
                                      "8-bit mantissas with one shared exponent hold (any "
                                      "below 255 do)")
            self.synapses.append(spec)


def _require_exact(spec: SynapseSpec, m: LinearMap, scale: float) -> None:
    """Refuse a synapse into a graded extension node whose integers differ from its floats."""
    if spec.clipped:
        raise LoihiRangeError(
            f"{spec.dst}: synapse {spec.name} needs weights beyond Loihi's 8 bits "
            f"({fixed.WEIGHT_MIN}..{fixed.WEIGHT_MAX}) to stay exact; use fewer tokens per "
            "block (the gate's weight is the token count)")
    if isinstance(m, ConvMap):
        want, got = m.weight * scale, np.asarray(spec.weights, np.float64)
    else:
        want = np.asarray(sp.csr_matrix(m.matrix_).toarray()) * scale
        eff = spec.effective()
        got = (eff.toarray() if sp.issparse(eff) else np.asarray(eff)) * 2.0**spec.weight_exp
    if not np.array_equal(want, got):
        raise LoihiRangeError(
            f"{spec.dst}: synapse {spec.name} has weights that are not integers Loihi holds "
            "exactly (a graded node computes in whole units); re-export the model")


def _current_decay12(fraction: float) -> int:
    """A current decay fraction as Loihi's du, which decays u by (4096 − (du + 1))/4096."""
    return int(np.clip(round(fraction * fixed.DECAY_UNITY) - 1, 0, fixed.DECAY_UNITY - 1))


def synapse_name(tap: Tap, dst: str) -> str:
    return f"{tap.source}->{dst}" + (f"@{tap.lag}" if tap.lag else "")


def is_sparse_enough(m: sp.spmatrix) -> bool:
    return m.nnz < SPARSE_BELOW * m.shape[0] * m.shape[1]


def _check_memoryless(group: NeuronGroup, synapses: list[SynapseSpec], q: Quantizer) -> None:
    """Prove |u| < 4096 for every input, so dv = 4095 forgets v completely each step."""
    worst = np.zeros(group.size)
    for s in synapses:
        payload = q.src_bound_int(s.src) if s.num_message_bits else np.ones(s.n_src)
        payload = np.broadcast_to(payload, (s.n_src,)).astype(np.float64)
        if s.conv is not None:
            worst += abs_apply(s.conv, payload)
        else:
            w = abs(s.weights) if s.is_sparse else np.abs(s.weights)
            worst += np.asarray(w @ payload).ravel() * 2.0**s.weight_exp
    if worst.max(initial=0) * (1 << fixed.ACT_SHIFT) >= fixed.DECAY_UNITY:
        raise LoihiRangeError(
            f"{group.name}: a memoryless neuron's input can reach "
            f"{int(worst.max()) << fixed.ACT_SHIFT} >= 4096, so its voltage would leak into "
            "the next step; lower its fan-in or use a LIF"
        )


def _bias_synapse(group: str, bias_v: np.ndarray) -> SynapseSpec:
    """A synapse from :data:`BIAS_SOURCE` adding ``bias_v`` (voltage units) every step.

    Its input current ``(w·2^exp) << 6`` must equal ``bias_v``; the exponent is the
    smallest that fits the largest bias into 8-bit weights.
    """
    q = quantize_bias(bias_v / (1 << fixed.ACT_SHIFT))
    return SynapseSpec(
        name=f"{group}.bias", src=BIAS_SOURCE, dst=group, weights=q.mant, weight_exp=q.exp,
        clipped=q.clipped, scale=1.0,
    )


def quantize_bias(per_step: np.ndarray, *, even: bool = True) -> fixed.QuantizedWeights:
    """A bias column ``(n, 1)`` for a binary always-on source, adding ``per_step`` input
    units each step; the exponent is the smallest (≥ 0, so whole units) that fits the
    largest bias into 8-bit weights. ``even=False`` keeps odd mantissas (exact for a
    single-sign column, which Lava does not truncate)."""
    peak = float(np.max(np.abs(per_step)))
    exp = max(0, math.ceil(math.log2(peak / fixed.WEIGHT_MAX))) if peak > 0 else 0
    return fixed.quantize_to_mantissa(np.asarray(per_step)[:, None], 1.0, exp, even=even)
