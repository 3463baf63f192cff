"""The integer reference executor: a lowered network run in torch with Loihi arithmetic.

It runs the same typed synapse layers Lava runs (docs/design.md §7): a conv is a
``conv2d`` with its one kernel, never a matrix per position, so it scales to
ImageNet-size networks, batched over samples, on CUDA when asked.

Exactness. Integers travel as floats through ``conv2d`` and sparse products,
which are exact while every partial sum stays below 2^24 (float32, most spike-driven
layers) or 2^53 (float64); each layer's worst case (8-bit weights × its largest
payload × its fan-in) picks its type once, before the first step, and a layer beyond
2^53 is refused. Neuron arithmetic is :mod:`lrfdyn.loihi.fixed`'s, on int64 tensors.
The CPU result is the contract; ``device="cuda"`` runs the same operations.

Time is *logical*: within one step every group sees its sources' output of the
same step, as the float model does, except where a synapse carries a lag (a NIR
Delay, or a group's recurrent edge into itself, which sees the previous step).
Lava adds one step per synapse; lowering equalized those latencies, so Lava's
group ``g`` at step ``t + latency(g)`` must equal the reference at step ``t``
(docs/design.md §3.5). Samples are independent by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import LoweredNetwork, SynapseSpec, bias_offset, phase_offset

#: float64 (float32) holds every integer below this exactly.
_EXACT = float(1 << 53)
_EXACT32 = float(1 << 24)
_INT32_MAX = (1 << 31) - 1


class SynapseLayer:
    """One synapse layer, ready to apply to a batch: effective integer weights on device."""

    def __init__(self, s: SynapseSpec, payload_max: float, device: torch.device) -> None:
        self.spec = s
        eff = s.effective()
        if s.conv is not None:
            c = s.conv
            self.weight = torch.as_tensor(np.asarray(eff, np.float64), device=device)
            self.geometry = (c.in_shape, c.stride, c.padding, c.dilation, c.groups)
            fan_in = int(np.prod(eff.shape[1:]))
            peak = float(np.max(np.abs(eff), initial=0))
        else:
            m = sp.csr_matrix(eff, dtype=np.float64) if sp.issparse(eff) else None
            if m is not None:
                coo = m.tocoo()
                idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
                self.weight = torch.sparse_coo_tensor(
                    idx, torch.as_tensor(coo.data), coo.shape,
                    check_invariants=False).coalesce().to(device)
                rows = np.diff(m.indptr)
                fan_in = int(rows.max(initial=0))
                peak = float(np.max(np.abs(coo.data), initial=0))
            else:
                dense = np.asarray(eff, np.float64)
                self.weight = torch.as_tensor(dense, device=device)
                fan_in = dense.shape[1]
                peak = float(np.max(np.abs(dense), initial=0))
            self.geometry = None
        reach = peak * payload_max * max(fan_in, 1)
        #: Largest |summed input| this layer can deliver (after a Dense weight_exp).
        self.reach = reach if s.conv is not None else reach * 2.0 ** s.weight_exp
        # int32 halves the memory traffic of everything downstream where it holds the sum;
        # a Dense sum is converted before its weight_exp shift, so both sides must fit.
        self.out_dtype = int_type(max(reach, self.reach))
        # A one-weight-per-channel conv (a one-to-one read, a BN scale) is a broadcast.
        self.diagonal = None
        if s.conv is not None and s.conv.pointwise and s.conv.depthwise:
            c = s.conv.out_shape[0]
            self.diagonal = torch.as_tensor(np.asarray(eff, np.int64).reshape(c, 1),
                                            device=device)
        self.wraps = reach >= (1 << (fixed.UV_BITS - 1))
        # float32 is exact below 2^24 and several times faster (spike-driven layers).
        self.dtype = torch.float32 if reach < _EXACT32 else torch.float64
        self.weight = self.weight.to(self.dtype)
        if reach >= _EXACT:
            raise ValidationError(
                f"synapse {s.name}: its sums can exceed 2^53 and would not be exact in "
                "float64; this network is outside the reference's range"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Summed input ``(B, n_dst)`` int64 for payloads ``x (B, n_src)``."""
        if self.diagonal is not None:
            y = (x.to(self.out_dtype).reshape(x.shape[0], self.diagonal.shape[0], -1)
                 * self.diagonal.to(self.out_dtype))
            y = y.reshape(x.shape[0], -1)
            return fixed.wrap_signed(y) if self.wraps else y
        xf = x.to(self.dtype)
        if self.geometry is not None:
            in_shape, stride, padding, dilation, groups = self.geometry
            y = F.conv2d(xf.reshape(-1, *in_shape), self.weight, stride=stride,
                         padding=padding, dilation=dilation, groups=groups)
            # Lava's fixed-point Conv wraps its output to 24 bits and ignores weight_exp.
            y = y.reshape(x.shape[0], -1).to(self.out_dtype)
            return fixed.wrap_signed(y) if self.wraps else y
        if self.weight.is_sparse:
            y = torch.sparse.mm(self.weight, xf.T).T
        else:  # x @ Wᵀ keeps the batch-major layout every later elementwise step reads
            y = xf @ self.weight.T
        return fixed.shift(y.to(self.out_dtype), self.spec.weight_exp)


def run_reference(
    net: LoweredNetwork, x: np.ndarray, steps: int | None = None, *,
    inputs: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] | None = None,
    record: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = 64,
    lava_window: bool = False,
) -> dict[str, np.ndarray]:
    """Run a batch of integer inputs through ``net``.

    Args:
        net: the lowered network.
        x: integer input payloads of shape (B, input_size), presented for the first
            ``net.input.timesteps`` steps and zero afterwards; or (B, T, input_size), a
            different input at each of the T steps.
        steps: logical steps to run (default: the input's T).
        inputs: groups whose synaptic input comes from a function of this step's
            values (numpy, by source name) instead of their synapses; how dendritic
            mode feeds an attention LIF from its token stream.
        record: the groups to return (default: all). Big networks record the output only.
        device: torch device; the CPU result is the contract.
        batch_size: samples per pass (None: all at once).
        lava_window: compute each group only for the steps a Lava run of ``steps`` steps
            records of it (``t < steps − latency``, the steps
            :func:`~lrfdyn.sim.report.first_mismatches` compares); later steps are 0. A
            group deep in the pipeline then costs T steps, not ``steps``. Not with
            ``inputs``, whose callbacks expect every source at every step.

    Returns:
        Boolean spikes of every recorded group, shape (B, steps, group_size), by name; the
        integer value instead for a group that never spikes (a LI, I or CubaLI readout,
        or a relay).
    """
    x = check_samples(net, x)
    keep = set(net.groups) if record is None else set(record)  # a generator is read once
    unknown = keep - set(net.groups)
    if unknown:
        raise ValidationError(f"cannot record unknown groups {sorted(unknown)}")
    if batch_size is not None and len(x) > batch_size:
        parts = [run_reference(net, x[i:i + batch_size], steps, inputs=inputs, record=keep,
                               device=device, batch_size=None, lava_window=lava_window)
                 for i in range(0, len(x), batch_size)]
        return {k: np.concatenate([p[k] for p in parts]) for k in keep}
    steps = net.input.timesteps if steps is None else steps
    device = torch.device(device)
    batch = x.shape[0]
    xt = torch.as_tensor(x, dtype=torch.int64, device=device)
    fed = set(inputs or ())
    incoming, bound = synapse_layers(net, device, fed)
    # A group that reads a later step of its source (a lead: negative lag, a block sum
    # reading the rest of its time block) runs that many passes behind it. Without leads
    # every offset is 0 and pass t is logical step t for every group.
    offset: dict[str, int] = {}
    for g in net.groups:
        offset[g] = max([0, *(offset[s.src] - s.lag for s in net.incoming(g)
                              if s.src in offset and not s.recurrent)])
    # A source's step is kept while a reader can still ask for it.
    horizon = {g: -1 for g in net.groups}
    for s in net.synapses:
        if s.src in horizon:
            horizon[s.src] = max(horizon[s.src], offset[s.dst] + s.lag + int(s.recurrent))
    # int32 layer outputs are summed in int32 only where the group's total bound fits it.
    reach_in = {g: sum(layer.reach for layer in incoming[g]) for g in net.groups}
    acc = {g: int_type(reach_in[g]) for g in net.groups}
    # A ProdNeuron's second factor: the constant 1 of a shifter, or a block sum's phase.
    factor2 = {g: [SynapseLayer(s, bound[s.src], device) for s in net.incoming(g)
                   if s.port == "a_in2"] for g in net.groups}
    # LIF groups with shift decays run TorchLif (int32 where their input bound allows).
    kernels = {g: fixed.TorchLif.build(grp.params, grp.spiking, reach_in[g], device)
               for g, grp in net.groups.items()
               if not grp.graded and g not in fed}
    state = {g: fixed.LifState(*(torch.zeros((batch, grp.size), device=device,
                                             dtype=kernels[g].dtype if kernels.get(g)
                                             else torch.int64)
                                 for _ in range(2)))
             for g, grp in net.groups.items() if not grp.graded}
    out = {g: np.zeros((batch, steps, net.groups[g].size),
                       bool if net.groups[g].spiking else np.int64) for g in keep}
    sent_at: dict[str, dict[int, torch.Tensor]] = {g: {} for g in net.groups}
    zeros_in = torch.zeros((batch, net.input.size), dtype=torch.int64, device=device)
    # Past its window a group sends nothing: its readers' windows end earlier.
    until = {g: steps - grp.latency if lava_window else steps for g, grp in net.groups.items()}
    ones = torch.ones((batch, 1), dtype=torch.int64, device=device)
    phase = [torch.as_tensor(net.phase_at(t), dtype=torch.int64, device=device).repeat(batch, 1)
             for t in range(steps)]

    def sent(src: str, when: int) -> torch.Tensor | None:
        """What ``src`` sent at logical step ``when`` (None: outside the sample)."""
        if when < 0:
            return None
        if bias_offset(src) is not None:
            return ones
        if phase_offset(src) is not None:
            return phase[when] if when < steps else None
        if src == net.input.name:
            if when >= net.input.timesteps:
                return zeros_in
            return xt[:, when] if xt.ndim == 3 else xt
        return sent_at[src].get(when)

    def summed(layers: list[SynapseLayer], g: str, t: int) -> torch.Tensor | None:
        total = None
        for layer in layers:
            s = layer.spec
            lagged = sent(s.src, t - s.lag - int(s.recurrent))
            if lagged is not None and (lagged is ones or bool(lagged.any())):
                y = layer(lagged).to(acc[g])
                total = y if total is None else total + y
        return total

    for tau in range(steps + max(offset.values(), default=0)):
        for g, grp in net.groups.items():
            t = tau - offset[g]
            if not offset[g] <= tau < offset[g] + until[g]:
                continue
            if g in fed:
                visible = {src: v for src in (net.input.name, *net.bias_sources)
                           if (v := sent(src, t)) is not None}
                visible.update({h: v[t] for h, v in sent_at.items() if t in v})
                a_in = torch.as_tensor(
                    inputs[g]({k: v.cpu().numpy() for k, v in visible.items()}),
                    dtype=torch.int64, device=device)
            else:
                a_in = summed(incoming[g], g, t)
                if a_in is None:
                    a_in = torch.zeros((batch, grp.size), dtype=torch.int64, device=device)
            if grp.graded:
                if factor2[g]:
                    a_in2 = summed(factor2[g], g, t)
                    a_in = a_in * a_in2 if a_in2 is not None else torch.zeros_like(a_in)
                exp = grp.relay.exp
                value = a_in >> exp if exp else a_in
                if grp.relay.rectify:
                    value = value.clamp(min=0)
            elif grp.ternary:
                value = _ternary_step(state, g, a_in, grp.params)
            elif kernels.get(g) is not None:
                st = state[g]
                s_out, st.u, st.v = kernels[g](st.u, st.v, a_in.to(kernels[g].dtype))
                value = s_out if grp.spiking else st.v
            else:
                s_out, state[g] = fixed.lif_step(state[g], a_in, grp.params, grp.spiking)
                value = s_out if grp.spiking else state[g].v
            sent_at[g][t] = value
            if g in keep:
                out[g][:, t] = value.cpu().numpy()
        for g, kept in sent_at.items():  # forget what no reader asks for any more
            oldest = tau + 1 - horizon[g]
            sent_at[g] = {when: v for when, v in kept.items() if when >= oldest}
    return out


def _ternary_step(state: dict, g: str, a_in, params: fixed.LifParams):
    """A ternary group's step (Lava's ``TernaryLIF``): its signed spikes, int64."""
    s_out, state[g] = fixed.ternary_step(state[g], a_in, params)
    return s_out


def int_type(bound: float) -> torch.dtype:
    """The narrowest integer type that holds every value of magnitude up to ``bound``."""
    return torch.int32 if bound <= _INT32_MAX else torch.int64


def synapse_layers(net: LoweredNetwork, device: torch.device, fed: Collection[str] = ()
                   ) -> tuple[dict[str, list[SynapseLayer]], dict[str, float]]:
    """Every group's ``a_in`` synapse layers, and the largest payload each source sends.

    A relay's payload bound tightens from the 24-bit range to what its inputs can sum to,
    shifted by its exponent (plus one for rounding), so that its readers can use the
    faster number types; ``fed`` groups (fed by a callback) keep the 24-bit range.
    """
    bound = _payload_bounds(net)
    incoming: dict[str, list[SynapseLayer]] = {}
    for g, grp in net.groups.items():  # sources first: a relay's bound tightens its readers'
        incoming[g] = [SynapseLayer(s, bound[s.src], device) for s in net.incoming(g)
                       if s.port == "a_in"]
        if grp.graded and g not in fed:
            exp = grp.relay.exp
            reach = sum(layer.reach for layer in incoming[g])
            bound[g] = min(bound[g], reach / 2.0 ** exp + 1.0)
    return incoming, bound


def _payload_bounds(net: LoweredNetwork) -> dict[str, float]:
    """Largest magnitude each source can send: 1 for spikes, the 24-bit range for graded
    (which :func:`synapse_layers` tightens to what a relay's inputs can sum to)."""
    bounds = {net.input.name: float(max(net.input.levels, 1)),
              **{b: 1.0 for b in (*net.bias_sources, *net.phase_sources)}}
    for g, grp in net.groups.items():
        bounds[g] = float(1 << (fixed.UV_BITS - 1)) if grp.graded or not grp.spiking else 1.0
        if grp.ternary:
            bounds[g] = 1.0  # −1, 0 or +1
    return bounds


def check_samples(net: LoweredNetwork, x: np.ndarray) -> np.ndarray:
    """``x`` as int64 (N, input_size) or (N, T, input_size), or one clear error."""
    x = np.asarray(x, dtype=np.int64)
    one_per_step = x.ndim == 3 and x.shape[1] == net.input.timesteps
    if not (x.ndim == 2 or one_per_step) or x.shape[-1] != net.input.size:
        raise ValidationError(
            f"samples have shape {x.shape[1:]}, but the network's input has {net.input.size} "
            "values; pick the data set the model was trained on (--data)"
        )
    return x


def readout(spikes: np.ndarray, timesteps: int) -> np.ndarray:
    """Class = argmax of output spike counts over the first T steps, ties to the lowest index."""
    return spikes[:, :timesteps].sum(axis=1).argmax(axis=1)
