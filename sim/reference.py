"""The integer reference executor: a lowered network run in numpy with Loihi arithmetic.

It runs in *logical* time: within one step every group sees its sources'
output of the same step, as the float model does. Lava adds one step per
synapse; lowering equalized those latencies, so Lava's group ``g`` at step
``t + latency(g)`` must equal the reference at step ``t`` (DESIGN.md §3.5).
Samples run as a batch: they are independent by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.lower import BIAS_SOURCE, LoweredNetwork
from lrfdyn.errors import ValidationError


def run_reference(
    net: LoweredNetwork, x: np.ndarray, steps: int | None = None, *,
    inputs: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Run a batch of integer inputs through ``net``.

    Args:
        net: the lowered network.
        x: integer input payloads of shape (B, input_size), presented for the first
            ``net.input.timesteps`` steps and zero afterwards.
        steps: logical steps to run (default: the input's T).
        inputs: groups whose synaptic input comes from a function of this step's
            values (by source name) instead of their synapses; how dendritic mode
            feeds an attention LIF from its token stream.

    Returns:
        Boolean spikes of every group, shape (B, steps, group_size), by group name.
    """
    x = check_samples(net, x)
    steps = net.input.timesteps if steps is None else steps
    batch = x.shape[0]
    state = {g: fixed.LifState.zeros((batch, grp.size)) for g, grp in net.groups.items()}
    spikes = {g: np.zeros((batch, steps, grp.size), bool) for g, grp in net.groups.items()}
    # Lava clips and truncates each weight matrix once, on its first step; so does this.
    incoming = {g: [(syn, fixed.dense_effective_weights(syn.weights))
                    for syn in net.incoming(g)] for g in net.groups}
    zero = np.zeros_like(x)
    on = np.ones((batch, 1), np.int64)
    for t in range(steps):
        current = {net.input.name: x if t < net.input.timesteps else zero, BIAS_SOURCE: on}
        for g, grp in net.groups.items():
            if inputs and g in inputs:
                a_in = inputs[g](current)
            else:
                a_in = np.zeros((batch, grp.size), np.int64)
                for syn, effective in incoming[g]:
                    a_in += fixed.accumulate(effective, current[syn.src], syn.weight_exp)
            s, state[g] = fixed.lif_step(state[g], a_in, grp.params)
            spikes[g][:, t] = s
            current[g] = s
    return spikes


def check_samples(net: LoweredNetwork, x: np.ndarray) -> np.ndarray:
    """``x`` as int64 (N, input_size), or one clear error if it does not fit the network."""
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != net.input.size:
        raise ValidationError(
            f"samples have shape {x.shape[1:]}, but the network's input has {net.input.size} "
            "values; pick the data set the model was trained on (--data)"
        )
    return x


def readout(spikes: np.ndarray, timesteps: int) -> np.ndarray:
    """Class = argmax of output spike counts over the first T steps, ties to the lowest index."""
    return spikes[:, :timesteps].sum(axis=1).argmax(axis=1)
