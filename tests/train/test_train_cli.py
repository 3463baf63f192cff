"""`lrfdyn train` on a model whose export is not supported reports float accuracy and says
why the Loihi-integer accuracy is not available, instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lrfdyn.cli import main
from lrfdyn.train import trainer
from lrfdyn.train.checkpoint import save_checkpoint
from lrfdyn.train.models import build_model

MODEL = {"img_size": 8, "in_channels": 1, "dim": 16, "depth": 1, "heads": 2, "timesteps": 2,
         "stem_strides": [1, 2], "attention": "ssa"}


def test_train_reports_quantized_accuracy_not_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_train(cfg: trainer.TrainConfig, **_: object) -> trainer.TrainResult:
        # Training itself is covered elsewhere; an untrained SSA checkpoint suffices here.
        torch.manual_seed(0)
        path = save_checkpoint(Path(cfg.out) / "checkpoint.pt", build_model("spikformer", MODEL),
                               "spikformer", data=cfg.data, seed=cfg.seed)
        return trainer.TrainResult(checkpoint=path, float_accuracy=0.5, history=[])

    monkeypatch.setattr(trainer, "train", fake_train)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"data": "digits", "arch": "spikformer", "model": MODEL}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["float_accuracy"] == 0.5 and printed["quantized_accuracy"] is None
    assert printed["quantized_accuracy_note"].startswith("not available: ")
    assert "ssa" in printed["quantized_accuracy_note"]
    # The human summary says the same.
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert "Loihi-int accuracy  not available: " in capsys.readouterr().out
