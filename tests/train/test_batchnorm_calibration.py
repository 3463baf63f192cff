"""BatchNorm's running statistics are recalibrated before each evaluation: a short
training no longer exports a network whose eval-mode statistics trail its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrfdyn.train.data import load_dataset
from lrfdyn.train.models import build_model
from lrfdyn.train.trainer import TrainConfig, calibrate_batchnorm, images_to_float, train

CFG = {"img_size": 8, "in_channels": 1, "num_classes": 10, "dim": 16, "depth": 1,
       "heads": 2, "timesteps": 2, "attention": "ssa"}


def test_calibration_sets_the_mean_batch_statistics_and_touches_nothing_else():
    torch.manual_seed(0)
    model = build_model("spikformer", CFG).eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    first = bns[0]
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    for m in bns:
        m.running_mean.fill_(100.0)  # stale statistics
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    rng = torch.get_rng_state()
    images = images_to_float(load_dataset("digits").x_train[:20])
    calibrate_batchnorm(model, images, batch_size=8)  # batches of 8, 8 and 4
    hook.remove()
    assert len(seen) == 3
    # per batch: the channel mean and the unbiased variance over every other axis
    dims = [d for d in range(seen[0].dim()) if d != 1]
    means = torch.stack([x.mean(dims) for x in seen])
    vars_ = torch.stack([x.var(dims, unbiased=True) for x in seen])
    torch.testing.assert_close(first.running_mean, means.mean(0))
    torch.testing.assert_close(first.running_var, vars_.mean(0))
    assert all((m.running_mean != 100.0).all() for m in bns)
    assert first.momentum == 0.1 and not model.training  # restored
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_one_epoch_spikformer_on_digits_is_far_above_chance(tmp_path: Path):
    # `lrfdyn train --data digits --attention ssa --epochs 1`: 65 % in training; before
    # calibration the evaluated network was silent and tested at 10 % (chance), now 86.7 %
    cfg = TrainConfig(data="digits", arch="spikformer", epochs=1, model={"attention": "ssa"},
                      out=str(tmp_path))
    res = train(cfg, progress=False)
    assert res.float_accuracy > 0.5, res.history


def test_bn_calibration_false_keeps_the_momentum_average_and_is_validated(tmp_path: Path):
    import pytest

    from lrfdyn.errors import ValidationError
    from lrfdyn.train.trainer import check_train_config

    cfg = TrainConfig(data="digits", arch="spikformer", epochs=1, bn_calibration=False,
                      model={"attention": "ssa"}, out=str(tmp_path))
    assert train(cfg, progress=False).float_accuracy < 0.2  # the silent network, as before
    with pytest.raises(ValidationError, match="bn_calibration must be true or false"):
        check_train_config({"bn_calibration": "yes"})
