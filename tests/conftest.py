"""Shared fixtures: a small trained MLP on digits, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the demo MLP briefly (3 epochs, ~2 s) and export it; returns the run folder."""
    from lrfdyn.export.to_nir import write_nir
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_run")
    cfg = TrainConfig(data="digits", epochs=3, out=str(out), model={"hidden": [48, 32]})
    train(cfg, progress=False)
    write_nir(checkpoint_to_nir(out / "checkpoint.pt"), out / "model.nir")
    return out
