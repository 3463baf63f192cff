"""Spiking self-attention variants with one interface, selected by name (docs/design.md §1.1).

Every variant maps binary input spikes ``x (T, B, N, d)`` on an ``(H, W)`` token grid
(N = H·W, raster order) to the *synaptic current* of its output projection,
``out = BN(Linear(s_attn)) (T, B, N, d)``, and a state dict of its internal spike
tensors by name. The neuron that receives ``out`` lives in the block
(:mod:`lrfdyn.train.models.spikformer`), where the current is summed with the
shortcut's current (membrane shortcut), so spike tensors are never added.

Variants (:data:`ATTENTIONS`):

* ``ssa`` (Spikformer): ``Q, K, V = SN(BN(Linear(x)))`` (binary, h heads) and
  ``s = SN_{0.5}(Q·(Kᵀ·V)·s)`` with s = 0.125, no softmax.
* ``lrf_ssa``: ``s = SN_{0.5}((1−λ)·Q(KᵀV)s + λ·r)``, ``r = Σ_δ DWConv_δ(V)`` with 3×3
  depthwise convolutions over the token grid at dilations δ (Ω ≤ 5 → δ = (3, 5)),
  ``λ = sigmoid(λ̃)`` a learned scalar.
* ``lrf_dyn``: per channel k dendrites, ``x_n = A x_{n−1} + Γ u_n``, ``y_n = C x_n``
  over tokens (:mod:`lrfdyn.train.functional.dendrite`), then
  ``s = SN_{0.5}(BN(y + Σ_δ DWConv_δ(y))) [∧ Q]``; ``u = V`` or ``K ∧ V``.
* ``statten``: SSA whose Q, K, V of ``block`` consecutive time steps are concatenated
  along the token axis, so ``Q(KᵀV)`` mixes tokens across the steps of a block.
* ``a2os2a``: ternary Q, K ∈ {−1, 0, 1}, binary V, a multi-level ReLU spiking neuron on
  the scores ``QKᵀ``, and ``s = SN_{0.5}(R(QKᵀ)·V·s)``: additions only.

Ω ↔ dilations (:func:`dilations_for_omega`): a 3×3 kernel at dilation δ reaches tokens
δ rows/columns away, so "Ω ≤ w" uses the largest reaches up to w:
Ω ≤ 1 → (1,), Ω ≤ 3 → (1, 3), Ω ≤ 5 → (3, 5) (the paper's setting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.train.functional import dendrite as dfn
from lrfdyn.train.models.layers import LIF
from lrfdyn.train.surrogate import spike_fn

#: Spikformer's fixed attention scale and the attention neuron's threshold.
SSA_SCALE = 0.125
ATTN_V_TH = 0.5
#: Threshold of the AND neuron fed by two binary spike trains: fires iff both spike (1 < 1.5 ≤ 2).
AND_THRESHOLD = 1.5

_OMEGA_DILATIONS: dict[int, tuple[int, ...]] = {1: (1,), 3: (1, 3), 5: (3, 5)}


def dilations_for_omega(omega: int) -> tuple[int, ...]:
    """The LRF dilations for the paper's receptive-field setting Ω ≤ ``omega`` (1, 3 or 5)."""
    try:
        return _OMEGA_DILATIONS[omega]
    except KeyError:
        raise ValidationError(
            f"Omega must be one of {sorted(_OMEGA_DILATIONS)}; got {omega}"
        ) from None


@dataclass
class AttentionConfig:
    """Hyperparameters shared by all variants (each uses the fields it needs).

    Attributes:
        dim: Channels d.
        heads: Heads h (d must divide by h); used by the product-based variants.
        tau: LIF time constant (steps) of every neuron.
        v_th: Threshold of the Q/K/V neurons.
        attn_v_th: Threshold of the attention-output neuron (Spikformer: 0.5).
        scale: Attention scale s (Spikformer: 0.125).
        k_dendrites: Dendrites per channel (LRF-Dyn).
        token: LRF-Dyn token input, ``"v"`` (u = V) or ``"kv"`` (u = K ∧ V).
        gate: LRF-Dyn output gate, ``"none"`` or ``"q"`` (s ∧ Q).
        lrf_dilations: Dilations of the 3×3 depthwise LRF convolutions.
        lrf_lambda_init: Initial λ of LRF-SSA (λ = sigmoid(λ̃), learned).
        tau_init: Range (min, max) of the initial dendrite time constants, log-spaced.
        statten_block: Time steps per STAtten block.
        a2os2a_levels: Largest spike count L of A²OS²A's ReLU neuron per step.
        a2os2a_theta: Threshold step θ of A²OS²A's ReLU neuron.
    """

    dim: int = 128
    heads: int = 4
    tau: float = 2.0
    v_th: float = 1.0
    attn_v_th: float = ATTN_V_TH
    scale: float = SSA_SCALE
    k_dendrites: int = 8
    token: str = "v"
    gate: str = "none"
    lrf_dilations: list[int] = field(default_factory=lambda: [3, 5])
    lrf_lambda_init: float = 0.5
    tau_init: tuple[float, float] = (2.0, 16.0)
    statten_block: int = 2
    a2os2a_levels: int = 4
    a2os2a_theta: float = 1.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValidationError(
                f"dim={self.dim} must be a positive multiple of heads={self.heads}"
            )
        if self.token not in ("v", "kv"):
            raise ValidationError(f"token must be 'v' or 'kv'; got {self.token!r}")
        if self.gate not in ("none", "q"):
            raise ValidationError(f"gate must be 'none' or 'q'; got {self.gate!r}")
        if self.k_dendrites < 1:
            raise ValidationError(f"k_dendrites must be >= 1; got {self.k_dendrites}")
        if not self.lrf_dilations or min(self.lrf_dilations) < 1:
            raise ValidationError(
                f"lrf_dilations must be a non-empty list of positive ints; got {self.lrf_dilations}"
            )
        if not 0.0 < self.lrf_lambda_init < 1.0:
            raise ValidationError(f"lrf_lambda_init must lie in (0, 1); got {self.lrf_lambda_init}")
        if not 1.0 < self.tau_init[0] <= self.tau_init[1]:
            raise ValidationError(f"tau_init must satisfy 1 < min <= max; got {self.tau_init}")
        if self.statten_block < 1:
            raise ValidationError(f"statten_block must be >= 1; got {self.statten_block}")
        if self.a2os2a_levels < 1 or self.a2os2a_theta <= 0:
            raise ValidationError(
                f"a2os2a_levels ({self.a2os2a_levels}) and a2os2a_theta ({self.a2os2a_theta}) "
                "must be positive"
            )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class LinearBN(nn.Module):
    """``BN(Linear(x))`` over the last axis of ``(..., d_in)``; BN folds into the weights."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)  # BN's shift is the bias
        self.bn = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)


def and_neuron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """AND of two binary spike trains as a memoryless threshold neuron.

    ``s = H(a + b − 1.5)``: both trains feed one neuron through unit synapses and it
    fires iff both spike; the surrogate gradient reaches both inputs. No product of
    activations is formed.
    """
    return spike_fn(a + b - AND_THRESHOLD)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(..., N, d) → (..., h, N, d/h)``."""
    *lead, n, d = x.shape
    return x.reshape(*lead, n, heads, d // heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., h, N, d/h) → (..., N, d)``."""
    *lead, h, n, dh = x.shape
    return x.transpose(-3, -2).reshape(*lead, n, h * dh)


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float
) -> torch.Tensor:
    """Per head ``Q·(Kᵀ·V)·s`` on ``(..., N, d)`` tensors (Spikformer's order: O(N d²/h))."""
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    return _merge_heads(qh @ (kh.transpose(-2, -1) @ vh)) * scale


class LocalReceptiveField(nn.Module):
    """``r = Σ_δ DWConv3×3_δ(z)`` over the (H, W) token grid, zero padded ("same")."""

    def __init__(self, dim: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, 3, padding=dl, dilation=dl, groups=dim) for dl in dilations
        )

    def forward(self, z: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``z (..., N, d)`` with N = H·W in raster order → ``(..., N, d)``."""
        h, w = grid
        *lead, n, d = z.shape
        if n != h * w:
            raise ValidationError(f"token count {n} does not match grid {h}x{w}")
        img = z.reshape(-1, h, w, d).permute(0, 3, 1, 2)
        r = sum(conv(img) for conv in self.convs)
        return r.permute(0, 2, 3, 1).reshape(*lead, n, d)


class SpikingAttention(nn.Module):
    """Base: optional Q/K/V spike generators, the attention neuron and the projection.

    Subclasses implement :meth:`attend`, which returns the attention neuron's spikes
    ``(T, B, N, d)`` and adds internal spike tensors to the state dict.
    """

    needs: tuple[str, ...] = ("q", "k", "v")

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        for name in self.needs:
            setattr(self, name, LinearBN(d, d))
            setattr(self, f"{name}_lif", self._make_qkv_neuron(name))
        self.attn_lif = LIF(cfg.tau, cfg.attn_v_th)
        self.proj = LinearBN(d, d)

    def _make_qkv_neuron(self, name: str) -> nn.Module:
        return LIF(self.cfg.tau, self.cfg.v_th)

    def spikes(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``SN(BN(Linear_name(x)))`` for name in q, k, v."""
        s, _ = getattr(self, f"{name}_lif")(getattr(self, name)(x))
        return s

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Binary spikes ``x (T, B, N, d)`` → (projection current ``(T, B, N, d)``, spikes)."""
        if x.dim() != 4 or x.shape[-1] != self.cfg.dim:
            raise ValidationError(
                f"attention expects (T, B, N, {self.cfg.dim}) spikes; got {tuple(x.shape)}"
            )
        if x.shape[2] != grid[0] * grid[1]:
            raise ValidationError(f"token count {x.shape[2]} does not match grid {grid}")
        state: dict[str, torch.Tensor] = {}
        s = self.attend(x, grid, state)
        state["attn"] = s
        return self.proj(s), state


class SSA(SpikingAttention):
    """Spikformer SSA: ``s = SN_{0.5}(Q·(Kᵀ·V)·0.125)`` with binary Q, K, V."""

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        q, k, v = (self.spikes(n, x) for n in ("q", "k", "v"))
        state.update(q=q, k=k, v=v)
        s, _ = self.attn_lif(linear_attention(q, k, v, self.cfg.heads, self.cfg.scale))
        return s


class LRFSSA(SpikingAttention):
    """LRF-SSA: ``s = SN_{0.5}((1−λ)·Q(KᵀV)s + λ·Σ_δ DWConv_δ(V))``, ``λ = sigmoid(λ̃)`` learned.

    The extra parameters are the depthwise convolutions (10·d each) and λ̃.
    """

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        self.lrf = LocalReceptiveField(cfg.dim, cfg.lrf_dilations)
        lam = cfg.lrf_lambda_init
        self.lambda_raw = nn.Parameter(torch.tensor(math.log(lam / (1.0 - lam))))

    @property
    def lam(self) -> torch.Tensor:
        """The fusion weight λ ∈ (0, 1)."""
        return torch.sigmoid(self.lambda_raw)

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        q, k, v = (self.spikes(n, x) for n in ("q", "k", "v"))
        state.update(q=q, k=k, v=v)
        ssa = linear_attention(q, k, v, self.cfg.heads, self.cfg.scale)
        lam = self.lam
        s, _ = self.attn_lif((1.0 - lam) * ssa + lam * self.lrf(v, grid))
        return s


class LRFDyn(SpikingAttention):
    """LRF-Dyn: dendritic dynamics over tokens plus a local receptive field.

    Per channel c with k dendrites (A, Γ, C all **per channel**)::

        u_n = V_n                 (token="v")   or   H(K_n + V_n − 1.5)   (token="kv")
        x_n = A x_{n−1} + Γ u_n,  y_n = C x_n    (n over tokens, raster order; x_{−1} = 0)
        s   = SN_{0.5}(BN(y + Σ_δ DWConv_δ(y)))      [then H(s + Q − 1.5) if gate="q"]

    A is tri-diagonal with diagonal ``1 − 1/τ_i`` (``τ_i = 1 + softplus(ρ_i)``) and
    off-diagonals ``β_i = ½·tanh(b_i)·min(1/τ_i, 1/τ_{i+1})``, which keeps ‖A‖₂ < 1.
    The dendrites restart from x = 0 for every time step and sample. Training uses the
    exact FFT form ``y = K ∗ u``, ``K_m = C A^m Γ`` (``path="fft"``); ``path="recurrence"``
    steps x token by token (the reference and the streaming form, k·d state values).
    The BN folds into C and the convolutions at export. Q and K are only built when
    the gate or the token input uses them.
    """

    def __init__(self, cfg: AttentionConfig) -> None:
        self.needs = tuple(
            n for n, used in (("q", cfg.gate == "q"), ("k", cfg.token == "kv"), ("v", True))
            if used
        )
        super().__init__(cfg)
        d, kd = cfg.dim, cfg.k_dendrites
        # Log-spaced time constants give each channel short and long memories from the start.
        tau0 = torch.logspace(math.log10(cfg.tau_init[0]), math.log10(cfg.tau_init[1]), kd)
        self.tau_raw = nn.Parameter(dfn.raw_from_tau(tau0).repeat(d, 1))
        self.beta_raw = nn.Parameter(torch.zeros(d, max(kd - 1, 0)))
        self.gamma = nn.Parameter(torch.ones(d, kd))
        self.c = nn.Parameter(torch.randn(d, kd) / math.sqrt(kd))
        self.lrf = LocalReceptiveField(d, cfg.lrf_dilations)
        self.bn = nn.BatchNorm1d(d)
        self.path = "fft"

    def dendrite_parameters(self) -> dfn.DendriteParameters:
        """The current ``{A, Γ, C}`` (what export stores)."""
        tau = dfn.tau_from_raw(self.tau_raw)
        a = dfn.build_a(tau, dfn.beta_from_raw(self.beta_raw, tau))
        return dfn.DendriteParameters(a, self.gamma, self.c)

    def kernel(self, n: int) -> torch.Tensor:
        """``K_m = C A^m Γ`` for m < n, shape ``(n, d)``."""
        return dfn.dendrite_kernel(self.dendrite_parameters(), n)

    def recurrence(self, u: torch.Tensor) -> torch.Tensor:
        """Token-by-token reference ``y`` for ``u (..., N, d)``."""
        y, _ = dfn.dendrite_recurrence(u, self.dendrite_parameters())
        return y

    def dendrites(self, u: torch.Tensor) -> torch.Tensor:
        """``y`` for ``u (..., N, d)`` along ``self.path`` ("fft" or "recurrence")."""
        if self.path == "fft":
            return dfn.causal_conv_fft(u, self.kernel(u.shape[-2]))
        if self.path == "recurrence":
            return self.recurrence(u)
        raise ValidationError(f"LRF-Dyn path must be 'fft' or 'recurrence'; got {self.path!r}")

    def streaming_state_size(self) -> int:
        """State values one token stream keeps between tokens: k·d."""
        return dfn.state_size(self.cfg.dim, self.cfg.k_dendrites)

    def extra_parameters(self) -> int:
        """Parameters LRF-Dyn adds beyond the V (and optional Q/K) generators and projection."""
        extra = [self.tau_raw, self.beta_raw, self.gamma, self.c]
        return sum(p.numel() for p in extra) + count_parameters(self.lrf) + count_parameters(
            self.bn
        )

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        v = self.spikes("v", x)
        state["v"] = v
        u = v
        if self.cfg.token == "kv":
            k = self.spikes("k", x)
            u = and_neuron(k, v)
            state.update(k=k, u=u)
        y = self.dendrites(u)
        z = y + self.lrf(y, grid)
        z = self.bn(z.reshape(-1, z.shape[-1])).reshape(z.shape)
        s, _ = self.attn_lif(z)
        if self.cfg.gate == "q":
            q = self.spikes("q", x)
            state.update(q=q, pre_gate=s)
            s = and_neuron(s, q)
        return s


class STAtten(SpikingAttention):
    """STAtten: SSA over blocks of ``b = statten_block`` consecutive time steps.

    The tokens of the b steps of a block are concatenated, ``Q̂, K̂, V̂ (b·N, d)``, so
    ``Q̂·(K̂ᵀ·V̂)·s`` lets a token at step t attend to every token at every step of its
    block; a trailing partial block (T not a multiple of b) is its own shorter block.
    Within a block the output at step t depends on later steps, so a streaming
    deployment needs a latency of b − 1 steps.
    """

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        q, k, v = (self.spikes(n, x) for n in ("q", "k", "v"))
        state.update(q=q, k=k, v=v)
        t, b, n, d = q.shape
        out = []
        for t0 in range(0, t, self.cfg.statten_block):
            sl = slice(t0, min(t0 + self.cfg.statten_block, t))
            # (tb, B, N, d) → (B, tb·N, d): time joins the token axis.
            qb, kb, vb = (z[sl].transpose(0, 1).reshape(b, -1, d) for z in (q, k, v))
            a = linear_attention(qb, kb, vb, self.cfg.heads, self.cfg.scale)
            out.append(a.reshape(b, -1, n, d).transpose(0, 1))
        s, _ = self.attn_lif(torch.cat(out, dim=0))
        return s


class TernaryLIF(nn.Module):
    """LIF with thresholds ±v_th emitting {−1, 0, 1}; reset to 0 after either spike.

    ``v ← v + (x − v)/τ``; ``s = H(v − θ) − H(−v − θ)``; ``v ← v·(1 − |s|)``.
    """

    def __init__(self, tau: float, v_th: float) -> None:
        super().__init__()
        self.tau, self.v_th = tau, v_th

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            v = v + (x_t - v) / self.tau
            s = spike_fn(v - self.v_th) - spike_fn(-v - self.v_th)
            v = v * (1.0 - s.abs())
            out.append(s)
        return torch.stack(out), v


def relu_spike(x: torch.Tensor, theta: float, levels: int) -> torch.Tensor:
    """Memoryless multi-level ReLU neuron: ``a = min(⌊max(x, 0)/θ⌋, L)`` spikes per step.

    Straight-through gradient of ``clamp(x/θ, 0, L)``. With integer scores and θ = 1
    the output is the clipped integer score, so ``a·V`` is repeated addition.
    """
    soft = torch.clamp(x / theta, 0.0, float(levels))
    return soft + (torch.floor(soft) - soft).detach()


class A2OS2A(SpikingAttention):
    """A²OS²A: addition-only attention with hybrid neurons.

    ``Q, K = TernarySN(BN(Linear(x))) ∈ {−1, 0, 1}`` (thresholds ±v_th),
    ``V = SN(BN(Linear(x))) ∈ {0, 1}``, per head ``S = Q·Kᵀ ∈ [−d/h, d/h]`` (integer),
    ``R = min(⌊relu(S)/θ⌋, L)`` (non-negative, multi-level, no softmax) and
    ``s = SN_{0.5}(R·V·s)``. Every product has a ±1/0 or small-integer factor, so the
    attention is additions only; the N×N score matrix makes it O(N² d).
    """

    def _make_qkv_neuron(self, name: str) -> nn.Module:
        if name in ("q", "k"):
            return TernaryLIF(self.cfg.tau, self.cfg.v_th)
        return LIF(self.cfg.tau, self.cfg.v_th)

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int], state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        q, k, v = (self.spikes(n, x) for n in ("q", "k", "v"))
        h = self.cfg.heads
        scores = split_heads(q, h) @ split_heads(k, h).transpose(-2, -1)  # (T, B, h, N, N)
        weights = relu_spike(scores, self.cfg.a2os2a_theta, self.cfg.a2os2a_levels)
        state.update(q=q, k=k, v=v, weights=weights)
        s, _ = self.attn_lif(_merge_heads(weights @ split_heads(v, h)) * self.cfg.scale)
        return s


ATTENTIONS: dict[str, type[SpikingAttention]] = {
    "ssa": SSA,
    "lrf_ssa": LRFSSA,
    "lrf_dyn": LRFDyn,
    "statten": STAtten,
    "a2os2a": A2OS2A,
}


def build_attention(name: str, cfg: AttentionConfig) -> SpikingAttention:
    """The attention variant ``name`` (a key of :data:`ATTENTIONS`)."""
    try:
        cls = ATTENTIONS[name]
    except KeyError:
        raise ValidationError(
            f"unknown attention {name!r}; choose one of {sorted(ATTENTIONS)}"
        ) from None
    return cls(cfg)
