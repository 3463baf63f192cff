"""Lower a NIR graph to a float network for Lava's ``floating_pt`` models.

The wiring, latencies and delays are the integer lowering's own
(:func:`lrfdyn.loihi.wiring.wire` and :func:`~lrfdyn.loihi.schedule.assign_latencies`);
only the numbers differ. Each synapse carries ``gain·W`` in float, so Lava's
float LIF (``u ← (1 − du)·u + a_in``, ``v ← (1 − dv)·v + u``) steps exactly the
discrete neuron of :mod:`lrfdyn.loihi.neurons`. The result is a
:class:`~lrfdyn.loihi.ir.LoweredNetwork` whose groups hold
:class:`FloatParams`, so :mod:`lrfdyn.loihi.build` builds it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import (BIAS_SOURCE, SPARSE_BELOW, FloatParams, LoweredNetwork, NeuronGroup,
                             SynapseSpec)
from lrfdyn.loihi.quantize import synapse_name
from lrfdyn.loihi.schedule import assign_latencies
from lrfdyn.loihi.wiring import wire
from lrfdyn.loihi.neurons import NIR, Convention

#: Graded float payloads: Lava's float Dense multiplies rather than selects when this is > 0.
GRADED_BITS = 24


@dataclass(eq=False)
class FloatSynapse(SynapseSpec):
    """A synapse with float weights: no 8-bit range, only Lava's delay limit."""

    def __post_init__(self) -> None:
        if not 0 <= self.delay <= fixed.MAX_DELAY:
            raise ValidationError(
                f"synapse {self.name}: delay {self.delay} exceeds Lava's maximum "
                f"{fixed.MAX_DELAY}; shorten the NIR Delay or the shortcut path"
            )


def lower_float(graph: nir.NIRGraph, conv: Convention = NIR, *,
                timesteps: int) -> LoweredNetwork:
    """The float network of ``graph``: every input step is a float vector (graded)."""
    w = wire(graph, conv, timesteps=timesteps, levels=1, shared=False)
    groups: dict[str, NeuronGroup] = {}
    synapses: list[SynapseSpec] = []
    # Sources whose payload is a value, not a spike: the input, and spike counts.
    graded = {w.input.name} | {p.name for p in w.groups if p.dynamics.multi_spike}
    for plan in w.groups:
        dyn, e = plan.dynamics, plan.inputs
        for tap, m in e.terms:
            # A per-neuron gain scales each target's row.
            weights = (sp.diags(dyn.gain) @ m.matrix() if np.ndim(dyn.gain)
                       else dyn.gain * m.matrix()).tocsr()
            synapses.append(FloatSynapse(
                name=synapse_name(tap, plan.name), src=tap.source, dst=plan.name,
                weights=weights if weights.nnz < SPARSE_BELOW * math.prod(weights.shape)
                else weights.toarray(),
                weight_exp=0, lag=tap.lag,
                num_message_bits=GRADED_BITS if tap.source in graded else 0,
            ))
        bias = e.bias * dyn.gain + np.broadcast_to(dyn.bias, e.bias.shape)
        if np.any(bias != 0):
            synapses.append(FloatSynapse(name=f"{plan.name}.bias", src=BIAS_SOURCE,
                                         dst=plan.name, weights=bias[:, None], weight_exp=0))
        groups[plan.name] = NeuronGroup(
            name=plan.name, size=e.bias.size, shape=e.shape, reset=dyn.reset,
            spiking=dyn.spiking,
            params=FloatParams(du=dyn.du, dv=dyn.dv,
                               vth=math.inf if dyn.v_th is None else dyn.v_th,
                               ge=dyn.spike_ge, multi=dyn.multi_spike),
        )
    assign_latencies(w, groups, synapses)
    return LoweredNetwork(input=w.input, groups=groups, synapses=synapses, output=w.output,
                          dt=w.dt, metadata={**w.metadata, "convention": conv.name})


def is_float(net: LoweredNetwork) -> bool:
    return any(isinstance(g.params, FloatParams) for g in net.groups.values())

