"""Tests for the attention variants and the Spikformer backbone (lrfdyn.train.models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.train.data import load_dataset
from lrfdyn.train.models import ARCHITECTURES, build_model
from lrfdyn.train.models.attention import (
    ATTENTIONS,
    AttentionConfig,
    LRFDyn,
    build_attention,
    count_parameters,
    dilations_for_omega,
)
from lrfdyn.train.models.spikformer import Spikformer, SpikformerConfig

#: (attention, extra config) pairs: every registered variant plus LRF-Dyn's token/gate options.
VARIANTS = [(name, {}) for name in ATTENTIONS] + [
    ("lrf_dyn", {"token": "kv"}),
    ("lrf_dyn", {"gate": "q"}),
    ("lrf_dyn", {"token": "kv", "gate": "q"}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in extra.items()) for name, extra in VARIANTS]
GRID = (4, 4)


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@pytest.mark.parametrize(("name", "extra"), VARIANTS, ids=IDS)
def test_attention_shapes_and_spike_values(name: str, extra: dict[str, str]) -> None:
    torch.manual_seed(0)
    attn = build_attention(name, AttentionConfig(dim=16, heads=2, **extra))
    x = (torch.rand(3, 2, GRID[0] * GRID[1], 16) < 0.3).float()
    out, state = attn(x, GRID)
    assert out.shape == x.shape
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert is_binary(state["attn"])
    for key, spikes in state.items():
        if name == "a2os2a" and key in ("q", "k"):
            assert bool(((spikes == -1) | (spikes == 0) | (spikes == 1)).all()), key
        elif name == "a2os2a" and key == "weights":
            levels = AttentionConfig().a2os2a_levels
            assert bool(((spikes >= 0) & (spikes <= levels) & (spikes == spikes.round())).all())
        else:
            assert is_binary(spikes), key


def test_parameter_counts_at_d512() -> None:
    """LRF (LRF-SSA's convolutions, LRF-Dyn's dendrites + convolutions) adds < 0.2 M."""
    cfg = AttentionConfig(dim=512, heads=8)
    ssa = count_parameters(build_attention("ssa", cfg))
    counts = {name: count_parameters(build_attention(name, cfg)) for name in ATTENTIONS}
    full = LRFDyn(AttentionConfig(dim=512, heads=8, token="kv", gate="q"))
    counts["lrf_dyn(kv,q)"] = count_parameters(full)
    print("\nattention parameters at d=512, h=8:", counts)
    print("LRF-Dyn extra parameters:", full.extra_parameters())
    assert counts["lrf_ssa"] - ssa < 200_000
    assert counts["lrf_dyn(kv,q)"] - ssa == full.extra_parameters() < 200_000
    assert counts["statten"] == counts["a2os2a"] == ssa
    # token=v, gate=none needs neither Q nor K: two LinearBN layers fewer than SSA.
    assert counts["lrf_dyn"] == ssa - 2 * (512 * 512 + 2 * 512) + full.extra_parameters()


def tiny_config(name: str, **extra: str) -> dict[str, object]:
    return dict(img_size=8, in_channels=1, num_classes=10, dim=32, depth=1, heads=2,
                timesteps=2, attention=name, stem_strides=[1, 2], **extra)


@pytest.fixture(scope="module")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits")
    x = torch.as_tensor(data.x_train[:64], dtype=torch.float32) / 255.0
    return x, torch.as_tensor(data.y_train[:64])


@pytest.mark.parametrize(("name", "extra"), VARIANTS, ids=IDS)
def test_tiny_spikformer_trains(
    name: str, extra: dict[str, str], digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_batch
    torch.manual_seed(0)
    model = build_model("spikformer", tiny_config(name, **extra))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        out, record = model(x)
        loss = nn.functional.cross_entropy(out.sum(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert out.shape == (2, 64, 10)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    # Between neurons everything is binary: stem, tokens, block outputs, MLP, head.
    for key, spikes in record.items():
        if ".attn." not in key:
            assert is_binary(spikes), key
    assert {"tokens", "blocks.0.attn_out", "blocks.0.out", "head"} <= set(record)
    if name == "lrf_dyn":
        grad = model.blocks[0].attn.tau_raw.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_registry_and_token_grid() -> None:
    assert ARCHITECTURES["spikformer"] == (SpikformerConfig, Spikformer)
    cfg = SpikformerConfig(img_size=32, dim=64, stem_strides=[1, 2, 2])
    assert cfg.grid == (8, 8)
    assert dilations_for_omega(5) == (3, 5)
    assert dilations_for_omega(1) == (1,)


@pytest.mark.parametrize(
    "bad",
    [
        {"attention": "softmax"},
        {"token": "q"},
        {"gate": "k"},
        {"dim": 30, "heads": 4},
        {"img_size": 10, "stem_strides": [2, 2]},
        {"lrf_dilations": []},
        {"statten_block": 0},
    ],
)
def test_bad_config_raises(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SpikformerConfig(**{**dict(dim=32, heads=2), **bad})


def test_wrong_input_raises() -> None:
    model = Spikformer(SpikformerConfig(**tiny_config("ssa")))
    with pytest.raises(ValidationError):
        model(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValidationError):
        build_attention("ssa", AttentionConfig(dim=16, heads=2))(torch.zeros(2, 1, 15, 16), GRID)
