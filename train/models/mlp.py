"""A spiking MLP: the foundation network that runs end to end on Lava.

Input encoding is direct: every step, the first Linear receives the image's
pixel values as a graded input ``x = p/255`` (p the 8-bit pixel). On Loihi the
same values travel as 8-bit graded spikes ``p`` and the 1/255 is folded into the
first layer's weights. Every hidden and output neuron is a Spikformer LIF; the
class is the argmax of the output spike counts over the T steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lrfdyn.train.models.layers import LIF, time_distributed


@dataclass
class MLPConfig:
    """Shape of the spiking MLP."""

    in_features: int = 64
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    num_classes: int = 10
    timesteps: int = 8
    tau: float = 2.0
    v_th: float = 1.0
    init_gain: float = 2.0


class SpikingMLP(nn.Module):
    """``[Linear -> LIF] × (len(hidden)+1)``, run for ``timesteps`` steps on a static image."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.in_features, *cfg.hidden, cfg.num_classes]
        self.layers = nn.ModuleList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            linear = nn.Linear(n_in, n_out)
            # With tau = 2 only half of each input reaches v; PyTorch's default init
            # (std ≈ 0.58/sqrt(fan_in)) leaves the deeper layers silent, so start louder.
            nn.init.normal_(linear.weight, std=cfg.init_gain / n_in**0.5)
            nn.init.zeros_(linear.bias)
            self.layers.append(linear)
            self.layers.append(LIF(cfg.tau, cfg.v_th))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run on images in [0, 1] of shape (B, C, H, W).

        Returns:
            Output spikes ``(T, B, num_classes)`` and every LIF layer's spikes by name.
        """
        x = images.flatten(1).unsqueeze(0).expand(self.cfg.timesteps, -1, -1)
        record: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.named_children():
            if isinstance(layer, LIF):
                x, _ = layer(x)
                record[f"layers.{name}"] = x
            else:
                x = time_distributed(layer, x)
        return x, record
