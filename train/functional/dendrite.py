"""LRF-Dyn dendritic dynamics as pure functions (docs/design.md §4).

Every channel c of a d-channel token stream owns k dendritic compartments
``x ∈ R^k``. Over the token index n = 0…N−1 (raster order over the token grid)::

    x_n = A x_{n−1} + Γ u_n          (x_{−1} = 0)
    y_n = C x_n

with a tri-diagonal, symmetric ``A ∈ R^{k×k}`` per channel::

    A_ii     = 1 − 1/τ_i             (leak of dendrite i, τ_i > 1)
    A_i,i+1  = A_i+1,i = β_i         (coupling between adjacent dendrites)

and ``Γ, C ∈ R^k`` per channel. A does not depend on n, so the recurrence is the
causal convolution ``y_n = Σ_{m≤n} K_m u_{n−m}`` with ``K_m = C A^m Γ``. Training
evaluates it with an FFT (zero-padded to 2N, so the circular convolution is the
linear one); :func:`dendrite_recurrence` is the step-by-step reference and the
streaming form, whose state is x alone: k·d values per stream.

Stability: with ``τ_i = 1 + softplus(ρ_i)`` and
``β_i = ½·tanh(b_i)·min(1/τ_i, 1/τ_{i+1})``, every Gershgorin disc of the
symmetric A lies strictly inside (−1, 1) (row i: ``1 − 1/τ_i ± (|β_{i−1}| + |β_i|)``
with ``|β_{i−1}| + |β_i| < 1/τ_i``), so ‖A‖₂ < 1 and K_m decays geometrically.

Shapes: parameters are batched over channels, ``A: (d, k, k)``, ``gamma, c: (d, k)``;
token tensors are ``(..., N, d)`` (tokens, then channels). All functions work in the
dtype of their inputs; nothing here knows about time steps, so there is no ``dt``:
the recurrence runs over tokens within one time step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lrfdyn.errors import ValidationError


class DendriteParameters(NamedTuple):
    """Per-channel dendrite matrices: ``A (d, k, k)``, ``gamma (d, k)``, ``c (d, k)``."""

    A: torch.Tensor
    gamma: torch.Tensor
    c: torch.Tensor


class DendriteState(NamedTuple):
    """Compartment values ``x (..., d, k)``: the whole streaming state (k·d per stream)."""

    x: torch.Tensor


def tau_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Unconstrained parameter → time constant in tokens, ``τ = 1 + softplus(raw) > 1``."""
    return 1.0 + F.softplus(raw)


def raw_from_tau(tau: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tau_from_raw` (for initialisation); needs ``τ > 1``."""
    if bool((tau <= 1.0).any()):
        raise ValidationError("dendrite time constants must exceed 1 token; got tau <= 1")
    s = tau - 1.0
    return s + torch.log(-torch.expm1(-s))  # softplus⁻¹(s) = log(eˢ − 1), stably


def beta_from_raw(raw: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Coupling ``β_i = ½·tanh(raw_i)·min(1/τ_i, 1/τ_{i+1})``, shape ``(..., k−1)``.

    The bound keeps A's spectral radius below 1 for any raw value (module docstring).
    """
    inv = 1.0 / tau
    bound = 0.5 * torch.minimum(inv[..., :-1], inv[..., 1:])
    return torch.tanh(raw) * bound


def build_a(tau: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Tri-diagonal ``A`` from ``tau (..., k)`` and ``beta (..., k−1)``.

    Returns:
        ``A (..., k, k)`` with diagonal ``1 − 1/τ`` and both off-diagonals ``β``.
    """
    k = tau.shape[-1]
    if beta.shape[-1] != k - 1 or beta.shape[:-1] != tau.shape[:-1]:
        raise ValidationError(
            f"beta must have shape (..., k-1) = {(*tau.shape[:-1], k - 1)}; got {tuple(beta.shape)}"
        )
    a = torch.diag_embed(1.0 - 1.0 / tau)
    if k > 1:
        a = a + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
    return a


def dendrite_kernel(p: DendriteParameters, n: int) -> torch.Tensor:
    """Token kernel ``K_m = C A^m Γ`` for m = 0…n−1, per channel.

    The vectors ``A^m Γ`` are built by doubling (``[v, A^{2^j} v]``), so the cost is
    ⌈log₂ n⌉ batched matrix products instead of n.

    Returns:
        ``K (n, d)``: kernel tap m of channel c at ``K[m, c]``.
    """
    if n < 1:
        raise ValidationError(f"kernel length must be positive; got {n}")
    vecs = p.gamma.unsqueeze(-1)  # (d, k, 1): A⁰Γ
    power = p.A
    while vecs.shape[-1] < n:
        vecs = torch.cat([vecs, power @ vecs], dim=-1)  # columns A^m Γ, m < 2·len
        power = power @ power
    vecs = vecs[..., :n]  # (d, k, n)
    return torch.einsum("dk,dkn->nd", p.c, vecs)


def causal_conv_fft(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution over tokens, ``y_n = Σ_{m=0}^{n} K_m u_{n−m}``, via FFT.

    Args:
        u: Input ``(..., N, d)``.
        kernel: ``(N, d)`` (or longer; only the first N taps matter).

    Returns:
        ``y (..., N, d)`` in the dtype of ``u``. Zero padding to 2N makes the circular
        convolution of the FFT equal to the linear (causal) one on the first N outputs.
    """
    n = u.shape[-2]
    if kernel.shape[-2] < n or kernel.shape[-1] != u.shape[-1]:
        raise ValidationError(
            f"kernel {tuple(kernel.shape)} does not cover input {tuple(u.shape)} (N, d)"
        )
    size = 2 * n
    uf = torch.fft.rfft(u, n=size, dim=-2)
    kf = torch.fft.rfft(kernel[:n], n=size, dim=-2)
    return torch.fft.irfft(uf * kf, n=size, dim=-2)[..., :n, :].to(u.dtype)


def dendrite_step(
    u: torch.Tensor, state: DendriteState | None, p: DendriteParameters
) -> tuple[torch.Tensor, DendriteState]:
    """One token: ``x_n = A x_{n−1} + Γ u_n``, ``y_n = C x_n``.

    Args:
        u: Token input ``(..., d)``.
        state: Previous compartments, or ``None`` for x = 0.
        p: Dendrite parameters.

    Returns:
        ``y (..., d)`` and the new state ``x (..., d, k)``.
    """
    drive = u.unsqueeze(-1) * p.gamma  # (..., d, k)
    x = drive if state is None else torch.einsum("dij,...dj->...di", p.A, state.x) + drive
    return (x * p.c).sum(-1), DendriteState(x)


def dendrite_recurrence(
    u: torch.Tensor, p: DendriteParameters, state: DendriteState | None = None
) -> tuple[torch.Tensor, DendriteState]:
    """Run :func:`dendrite_step` over the token axis of ``u (..., N, d)`` (the reference).

    Returns:
        ``y (..., N, d)`` and the final state.
    """
    out = []
    for n in range(u.shape[-2]):
        y, state = dendrite_step(u[..., n, :], state, p)
        out.append(y)
    if state is None:
        raise ValidationError("dendrite_recurrence needs at least one token")
    return torch.stack(out, dim=-2), state


def state_size(d: int, k: int) -> int:
    """Streaming state per stream: the k compartments of each of d channels."""
    return d * k
