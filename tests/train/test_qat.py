"""Quantization-aware fine-tuning: the fake quantizer matches Loihi's mantissa rounding,
the straight-through swap restores the float weights, and a QAT run records its epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.fixed import WEIGHT_MAX, quantize_to_mantissa
from lrfdyn.train.trainer import TrainConfig, fake_quantize_weight, quantized_weights, train


def test_fake_quantize_matches_quantize_to_mantissa() -> None:
    torch.manual_seed(0)
    w = torch.randn(32, 17, dtype=torch.float64)
    scale = WEIGHT_MAX / float(w.abs().max())
    q = quantize_to_mantissa(w.numpy(), scale)
    assert q.clipped == 0
    got = fake_quantize_weight(w)
    assert np.array_equal((got * scale).round().numpy().astype(np.int64), q.mant)
    assert torch.allclose(got, torch.as_tensor(q.mant / scale))
    assert float((got * scale).abs().max()) == pytest.approx(WEIGHT_MAX)
    assert torch.equal(fake_quantize_weight(torch.zeros(3)), torch.zeros(3))


def test_quantized_weights_is_a_straight_through_swap() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    w0 = lin.weight.detach().clone()
    x = torch.randn(4, 5)
    with quantized_weights(lin):
        assert torch.equal(lin.weight, fake_quantize_weight(w0))
        lin(x).square().sum().backward()
    assert torch.equal(lin.weight, w0)  # float weights back for the optimizer step
    # The gradient is the one of the quantized layer (identity through the rounding).
    wq = fake_quantize_weight(w0).requires_grad_(True)
    nn.functional.linear(x, wq, lin.bias.detach()).square().sum().backward()
    assert torch.allclose(lin.weight.grad, wq.grad)


def test_qat_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="qat_epochs"):
        TrainConfig(epochs=2, qat_epochs=3)


def test_train_with_qat_records_fake_quant_accuracy(tmp_path: Path) -> None:
    cfg = TrainConfig(data="digits", epochs=2, qat_epochs=1, lr=1e-2, batch_size=32,
                      model={"hidden": [48, 32]}, out=str(tmp_path))
    res = train(cfg, progress=False)
    first, last = res.history
    assert not first["qat"] and "test_acc_fake_quant" not in first
    assert last["qat"] and 0.0 <= last["test_acc_fake_quant"] <= 1.0
    assert last["test_acc"] > 0.3  # trains through the quantized epoch (chance is 0.1)
