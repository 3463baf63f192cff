"""The Spikformer LIF neuron as a pure step, in float (training) and Loihi integers (deploy).

Float step with time constant tau (in steps) and hard reset to 0::

    v[t] = (1 − 1/tau)·v[t−1] + (1/tau)·x[t]
    s[t] = H(v[t] − v_th)             (surrogate gradient in the backward pass)
    v[t] ← v[t]·(1 − s[t])

The integer counterpart is :func:`lrfdyn.loihi.fixed.lif_step` with du = 4095
(the current holds only this step's input) and dv = 4096/tau. Loihi spikes on
``v > vth``; the float model's ``>=`` only differs on exact ties, which training
never depends on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lrfdyn.train.surrogate import spike_fn


class LIFParameters(NamedTuple):
    """Time constant in steps, threshold, and the surrogate's sharpness."""

    tau: float = 2.0
    v_th: float = 1.0
    alpha: float = 4.0


class LIFState(NamedTuple):
    v: torch.Tensor


def lif_step(
    x: torch.Tensor, state: LIFState | None, p: LIFParameters = LIFParameters()
) -> tuple[torch.Tensor, LIFState]:
    """One float LIF step; ``state=None`` starts from v = 0."""
    v_prev = torch.zeros_like(x) if state is None else state.v
    v = v_prev + (x - v_prev) / p.tau
    z = spike_fn(v - p.v_th, p.alpha)
    return z, LIFState(v * (1.0 - z))


def lif_sequence(
    x: torch.Tensor, p: LIFParameters = LIFParameters()
) -> torch.Tensor:
    """Run :func:`lif_step` over the leading time axis of ``x`` (shape (T, ...))."""
    state: LIFState | None = None
    out = []
    for x_t in x:
        z, state = lif_step(x_t, state, p)
        out.append(z)
    return torch.stack(out)
