"""Thin modules over the pure steps in :mod:`lrfdyn.train.functional`.

Tensors carry time first: ``(T, B, ...)``. Every module's ``forward`` returns
``(out, state)``; the state of a LIF layer is its final membrane potential.
"""

from __future__ import annotations

import torch
from torch import nn

from lrfdyn.train.functional.lif import LIFParameters, LIFState, lif_step


class LIF(nn.Module):
    """A layer of Spikformer LIF neurons (fixed tau and threshold; no trainable state)."""

    def __init__(self, tau: float = 2.0, v_th: float = 1.0, alpha: float = 4.0) -> None:
        super().__init__()
        self.p = LIFParameters(tau=tau, v_th=v_th, alpha=alpha)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, LIFState | None]:
        state: LIFState | None = None
        out = []
        for x_t in x:
            z, state = lif_step(x_t, state, self.p)
            out.append(z)
        return torch.stack(out), state

    def extra_repr(self) -> str:
        return f"tau={self.p.tau}, v_th={self.p.v_th}"


def time_distributed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless module to ``(T, B, ...)`` by folding time into the batch."""
    t, b = x.shape[:2]
    y = module(x.reshape(t * b, *x.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])
