"""The baseline executor of the first lowering: the numpy integer reference of commit 8f89918.

Before the weight-shared lowering, :func:`lrfdyn.loihi.lower.lower` fused every chain
into one explicit per-position matrix per (source, target), and the integer reference
(``sim/reference.py`` at 8f89918) ran those Dense/Sparse matrices in numpy, one
``W @ x`` per synapse layer and step. That executor is kept here, unchanged but for a
guard, as the *baseline* the ``scale`` benchmark group measures the new torch
reference (typed layers: convs stay convs) against.

It works on networks from ``lower(graph, shared=False)`` (the first lowering
reproduced), whose synapses are all Dense/Sparse and whose groups are all LIFs; a bias
source (one per start step) sends a spike at every logical step. It uses
:func:`lrfdyn.loihi.fixed.accumulate`, :func:`~lrfdyn.loihi.fixed.dense_effective_weights`
and :func:`~lrfdyn.loihi.fixed.lif_step` on numpy arrays, as it did then. A network it
cannot run (conv layers, relays) is refused with a clear error
rather than run wrongly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import LoweredNetwork, bias_offset
from lrfdyn.sim.reference import check_samples


def check_first_lowering(net: LoweredNetwork) -> None:
    """Refuse a network the first lowering could not have produced."""
    bad = [f"synapse {s.name} is {s.kind}" for s in net.synapses if s.kind == "conv"]
    bad += [f"synapse {s.name} feeds port {s.port}" for s in net.synapses if s.port != "a_in"]
    bad += [f"synapse {s.name} comes from {s.src}" for s in net.synapses
            if s.src not in net.groups and s.src != net.input.name and bias_offset(s.src) is None]
    bad += [f"group {g} is a {grp.kind}" for g, grp in net.groups.items() if grp.kind != "lif"]
    if bad:
        raise ValidationError("not a network of the first lowering (use lower(graph, "
                              "shared=False)): " + "; ".join(bad[:5]))


def run_reference(
    net: LoweredNetwork, x: np.ndarray, steps: int | None = None, *,
    inputs: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Run a batch of integer inputs through ``net`` (8f89918's ``run_reference``).

    Args:
        net: the lowered network (from ``lower(graph, shared=False)``).
        x: integer input payloads of shape (B, input_size), presented for the first
            ``net.input.timesteps`` steps and zero afterwards; or (B, T, input_size), a
            different input at each of the T steps.
        steps: logical steps to run (default: the input's T).
        inputs: groups whose synaptic input comes from a function of this step's
            values (by source name) instead of their synapses; how dendritic mode
            feeds an attention LIF from its token stream.

    Returns:
        Boolean spikes of every group, shape (B, steps, group_size), by group name; the
        integer voltage instead for a group that never spikes (a LI, I or CubaLI readout).
    """
    check_first_lowering(net)
    x = check_samples(net, x)
    steps = net.input.timesteps if steps is None else steps
    batch = x.shape[0]
    state = {g: fixed.LifState.zeros((batch, grp.size)) for g, grp in net.groups.items()}
    spikes = {g: np.zeros((batch, steps, grp.size), bool if grp.spiking else np.int64)
              for g, grp in net.groups.items()}
    # Lava clips and truncates each weight matrix once, on its first step; so does this.
    incoming = {g: [(syn, fixed.dense_effective_weights(syn.weights))
                    for syn in net.incoming(g)] for g in net.groups}

    def sent(src: str, t: int) -> np.ndarray:
        """What ``src`` sent at logical step t (nothing before the sample starts)."""
        if t < 0 or (src == net.input.name and t >= net.input.timesteps):
            return np.zeros((batch, 1), np.int64)
        if bias_offset(src) is not None:
            return np.ones((batch, 1), np.int64)
        if src == net.input.name:
            return x[:, t] if x.ndim == 3 else x
        return spikes[src][:, t]

    for t in range(steps):
        done: list[str] = []
        for g, grp in net.groups.items():
            if inputs and g in inputs:
                # This step's values of the input, the bias and the groups already updated.
                now = {src: sent(src, t) for src in (net.input.name, *net.bias_sources, *done)}
                a_in = inputs[g](now)
            else:
                a_in = np.zeros((batch, grp.size), np.int64)
                for syn, effective in incoming[g]:
                    lagged = sent(syn.src, t - syn.lag - int(syn.recurrent))
                    if lagged.any():
                        a_in += fixed.accumulate(effective, lagged, syn.weight_exp)
            s, state[g] = fixed.lif_step(state[g], a_in, grp.params, grp.spiking)
            spikes[g][:, t] = s if grp.spiking else state[g].v
            done.append(g)
    return spikes
