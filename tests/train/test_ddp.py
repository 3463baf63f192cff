"""Data-parallel training under torchrun: two gloo ranks on digits, two epochs, small MLP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrfdyn.train.checkpoint import load_checkpoint
from lrfdyn.train.data import load_dataset

MODEL = {"hidden": [48, 32]}
#: Small and brisk: two short epochs reach ~80 % on one process (chance is 10 %).
TRAIN = {"data": "digits", "epochs": 2, "lr": 1e-2, "batch_size": 32, "seed": 0, "model": MODEL}


def _torchrun(out: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lrfdyn", "train", "--config", str(config), "--out", str(out), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_ddp_two_ranks_take_disjoint_shards_and_train(tmp_path: Path) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(TRAIN))
    out = tmp_path / "ddp"
    proc = _torchrun(out, config)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ckpt = load_checkpoint(out / "checkpoint.pt")
    record = ckpt.extra["history"][-1]
    n_train = len(load_dataset("digits", seed=0).x_train)
    half = n_train // 2
    # Both ranks ran equal, disjoint halves of the (trimmed) shuffled training set.
    assert record["ranks"] == 2
    assert record["shard_sizes"] == [half, half]
    assert record["distinct_samples"] == 2 * half
    # Only rank 0 reports: one metrics file, one JSON document on stdout.
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == metrics
    assert metrics["float_accuracy"] == pytest.approx(record["test_acc"])
    # Half the optimizer steps of a single process, still well above chance (10 %).
    assert record["test_acc"] > 0.5

    # A single process with the same seed takes every sample in twice as many steps, so its
    # weights must differ from the two-rank run's (which averaged two ranks' gradients).
    from lrfdyn.train.trainer import TrainConfig, train

    single = train(TrainConfig(**{**TRAIN, "out": str(tmp_path / "single")}), progress=False)
    srec = load_checkpoint(single.checkpoint).extra["history"][-1]
    assert srec["ranks"] == 1 and srec["shard_sizes"] == [n_train]
    sd_single = load_checkpoint(single.checkpoint).state_dict
    assert any(not torch.equal(v, sd_single[k]) for k, v in ckpt.state_dict.items())
