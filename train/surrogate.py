"""Surrogate gradient for the Heaviside spike function."""

from __future__ import annotations

import torch


class _SpikeFn(torch.autograd.Function):
    """Forward: H(x) = 1[x >= 0]. Backward: derivative of sigmoid(alpha·x) (SpikingJelly's default)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * sig * (1.0 - sig), None


def spike_fn(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    return _SpikeFn.apply(x, alpha)
