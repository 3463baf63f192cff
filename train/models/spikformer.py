"""A Spikformer-style spiking transformer with a selectable attention block.

Layout (tensors time-first, ``(T, B, ...)``)::

    image (B, C, H, W) in [0, 1], repeated every step (direct encoding)
    stem:   [Conv3×3_stride(s_i) → BN → LIF] for all but the last stage, then
            Conv3×3 → BN  = I_0 (current), tokens N = H'·W' in raster order
    rpe:    I_0 ← I_0 + BN(Conv3×3(LIF(I_0)))               (relative position embedding)
    block l (l = 1…L), input spikes s = LIF(I) and current I:
            I ← I + Attn(s)              s = LIF(I)         (attention branch)
            I ← I + BN(Linear(LIF(BN(Linear(s)))))   s = LIF(I)   (MLP branch)
    head:   LIF(Linear(mean_n s))  → output spikes (T, B, classes)

Downsampling is by stride-2 convolutions only (no max-pooling, which has no
synaptic form).

**Membrane shortcut.** Spikformer's residual ``x + f(x)`` adds spike tensors; here
the residual stream is the *synaptic current* I instead. Each block neuron
``LIF(I + f(s))`` receives, in one membrane, the current of the shortcut (the same
synaptic inputs that drove the previous neuron of the stream) plus the branch's
output current (its final Linear/Conv + BN). On hardware this is plain synaptic
summation: the neuron after branch l has synapses from the stem's last conv and from
every earlier branch's output layer, all fed by binary spikes, with latencies
equalized by delays (docs/design.md §3.5). Spike tensors are never added, every tensor
between neurons is binary (A²OS²A's ternary/multi-level values stay inside its
attention), and every BN folds into the weights before it.

The readout is the output LIF's spike count over T, as for the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.train.models.attention import (
    ATTENTIONS,
    AttentionConfig,
    LinearBN,
    SpikingAttention,
    build_attention,
)
from lrfdyn.train.models.layers import LIF, time_distributed


@dataclass
class SpikformerConfig:
    """Shape of the spiking transformer (JSON-compatible: lists, not tuples).

    Attributes:
        img_size: Input height = width.
        in_channels: Input channels.
        num_classes: Output neurons.
        dim: Token channels d.
        depth: Transformer blocks L.
        heads: Attention heads.
        mlp_ratio: Hidden width of the MLP branch as a multiple of d.
        timesteps: Simulation steps T.
        attention: Attention variant, a key of :data:`~lrfdyn.train.models.attention.ATTENTIONS`.
        k_dendrites: LRF-Dyn dendrites per channel.
        token: LRF-Dyn token input, ``"v"`` or ``"kv"``.
        gate: LRF-Dyn gate, ``"none"`` or ``"q"``.
        lrf_dilations: Dilations of the LRF depthwise convolutions (Ω ≤ 5 → [3, 5]).
        statten_block: STAtten time steps per block.
        a2os2a_levels: A²OS²A ReLU-neuron levels per step.
        stem_strides: Stride of each stem convolution; their product divides img_size.
        rpe: Whether to add Spikformer's relative-position-embedding convolution.
        tau: LIF time constant (steps) of every neuron.
        v_th: LIF threshold (the attention neuron uses 0.5).
        head_gain: Std of the head's weights times sqrt(d); louder than PyTorch's
            default so the output neurons fire from the start.
    """

    img_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    dim: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    timesteps: int = 4
    attention: str = "ssa"
    k_dendrites: int = 8
    token: str = "v"
    gate: str = "none"
    lrf_dilations: list[int] = field(default_factory=lambda: [3, 5])
    statten_block: int = 2
    a2os2a_levels: int = 4
    stem_strides: list[int] = field(default_factory=lambda: [1, 2, 2])
    rpe: bool = True
    tau: float = 2.0
    v_th: float = 1.0
    head_gain: float = 4.0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValidationError(
                f"unknown attention {self.attention!r}; choose one of {sorted(ATTENTIONS)}"
            )
        if min(self.img_size, self.in_channels, self.num_classes, self.depth, self.timesteps) < 1:
            raise ValidationError(
                "img_size, in_channels, num_classes, depth and timesteps must be positive"
            )
        if not self.stem_strides or min(self.stem_strides) < 1:
            raise ValidationError(f"stem_strides must be positive ints; got {self.stem_strides}")
        down = 1
        for s in self.stem_strides:
            down *= s
        if self.img_size % down:
            raise ValidationError(
                f"img_size={self.img_size} is not divisible by the stem's downsampling {down}"
            )
        if self.dim >> (len(self.stem_strides) - 1) < 1 or self.mlp_ratio <= 0:
            raise ValidationError(
                f"dim={self.dim} too small for {len(self.stem_strides)} stem stages, "
                f"or mlp_ratio={self.mlp_ratio} not positive"
            )
        self.attention_config()  # validates the attention fields

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (H', W') after the stem."""
        side = self.img_size
        for s in self.stem_strides:
            side = (side - 1) // s + 1  # 3×3 conv, padding 1
        return side, side

    def attention_config(self) -> AttentionConfig:
        return AttentionConfig(
            dim=self.dim, heads=self.heads, tau=self.tau, v_th=self.v_th,
            k_dendrites=self.k_dendrites, token=self.token, gate=self.gate,
            lrf_dilations=list(self.lrf_dilations), statten_block=self.statten_block,
            a2os2a_levels=self.a2os2a_levels,
        )


class ConvBN(nn.Module):
    """``BN(Conv3×3(x))`` on ``(T, B, C, H, W)`` (time folded into the batch)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return time_distributed(nn.Sequential(self.conv, self.bn), x)


class Block(nn.Module):
    """One transformer block on the current stream I (membrane shortcuts; module docstring)."""

    def __init__(self, cfg: SpikformerConfig) -> None:
        super().__init__()
        hidden = max(1, round(cfg.dim * cfg.mlp_ratio))
        self.attn: SpikingAttention = build_attention(cfg.attention, cfg.attention_config())
        self.attn_out = LIF(cfg.tau, cfg.v_th)
        self.fc1 = LinearBN(cfg.dim, hidden)
        self.fc1_lif = LIF(cfg.tau, cfg.v_th)
        self.fc2 = LinearBN(hidden, cfg.dim)
        self.out = LIF(cfg.tau, cfg.v_th)

    def forward(
        self, s: torch.Tensor, current: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Spikes ``s`` and the current ``I`` that produced them → new spikes, current, record."""
        a, attn_state = self.attn(s, grid)
        record = {f"attn.{k}": v for k, v in attn_state.items()}
        current = current + a  # shortcut current + branch current into one membrane
        s, _ = self.attn_out(current)
        h, _ = self.fc1_lif(self.fc1(s))
        current = current + self.fc2(h)
        s_out, _ = self.out(current)
        record.update({"attn_out": s, "mlp_hidden": h, "out": s_out})
        return s_out, current, record


class Spikformer(nn.Module):
    """Spiking transformer; ``forward(images)`` → (output spikes ``(T, B, classes)``, record)."""

    def __init__(self, cfg: SpikformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = len(cfg.stem_strides)
        widths = [cfg.dim >> (n - 1 - i) for i in range(n)]  # …, d/4, d/2, d
        ins = [cfg.in_channels, *widths[:-1]]
        self.stem = nn.ModuleList(ConvBN(a, b, s) for a, b, s in zip(ins, widths, cfg.stem_strides))
        self.stem_lif = nn.ModuleList(LIF(cfg.tau, cfg.v_th) for _ in range(n - 1))
        if cfg.rpe:
            self.rpe_lif = LIF(cfg.tau, cfg.v_th)
            self.rpe = ConvBN(cfg.dim, cfg.dim)
        self.token_lif = LIF(cfg.tau, cfg.v_th)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        nn.init.normal_(self.head.weight, std=cfg.head_gain / cfg.dim**0.5)
        nn.init.zeros_(self.head.bias)
        self.head_lif = LIF(cfg.tau, cfg.v_th)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run on images in [0, 1] of shape (B, C, H, W).

        Returns:
            Output spikes ``(T, B, num_classes)`` and every spiking layer's output by name.
        """
        cfg = self.cfg
        if images.dim() != 4 or tuple(images.shape[1:]) != (
            cfg.in_channels, cfg.img_size, cfg.img_size
        ):
            raise ValidationError(
                f"expected images (B, {cfg.in_channels}, {cfg.img_size}, {cfg.img_size}); "
                f"got {tuple(images.shape)}"
            )
        record: dict[str, torch.Tensor] = {}
        # Direct encoding: the same image drives the first conv every step, so its current
        # is computed once and repeated.
        current = self.stem[0](images.unsqueeze(0)).expand(cfg.timesteps, -1, -1, -1, -1)
        for i in range(1, len(self.stem)):
            s, _ = self.stem_lif[i - 1](current)
            record[f"stem.{i - 1}"] = s
            current = self.stem[i](s)
        if cfg.rpe:
            s, _ = self.rpe_lif(current)
            record["rpe"] = s
            current = current + self.rpe(s)  # membrane shortcut, as in the blocks
        grid = (current.shape[-2], current.shape[-1])
        current = current.flatten(3).transpose(-1, -2)  # (T, B, N, d), raster order
        s, _ = self.token_lif(current)
        record["tokens"] = s
        for i, block in enumerate(self.blocks):
            s, current, rec = block(s, current, grid)
            record.update({f"blocks.{i}.{k}": v for k, v in rec.items()})
        out, _ = self.head_lif(self.head(s.mean(2)))  # mean over tokens: weights 1/N
        record["head"] = out
        return out, record
