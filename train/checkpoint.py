"""Checkpoints: a state dict plus the JSON config that rebuilds the model.

The file is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrfdyn.errors import CheckpointError, FormatVersionError
from lrfdyn.io import input_file, write_with
from lrfdyn.train.checks import check_checkpoint_payload
from lrfdyn.train.models import build_model, model_config

FORMAT = "lrfdyn-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds. ``extra`` carries training state (optimizer, epoch, metrics)."""

    arch: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any]

    def build(self) -> nn.Module:
        model = build_model(self.arch, self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, arch: str, **extra: Any
) -> Path:
    """Write ``model`` atomically; ``extra`` must be tensors and JSON-like values."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": model_config(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, safely."""
    path = input_file(path, "checkpoint file", "train one with `lrfdyn train`", CheckpointError)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles on stderr: one line only
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            TypeError, AttributeError, KeyError, IndexError, OverflowError, UnicodeError,
            NotImplementedError) as exc:  # torch's unpickler raises many types for bad bytes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({first[:160]!r}); "
            "pass a checkpoint.pt written by `lrfdyn train`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an lrfdyn checkpoint (no '{FORMAT}' header); "
            "pass a checkpoint.pt written by `lrfdyn train`"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} is not "
            f"supported (this lrfdyn reads version {FORMAT_VERSION}); retrain or upgrade lrfdyn"
        )
    check_checkpoint_payload(payload, path)  # keys, types, shapes, finite weights, ranges
    return Checkpoint(
        arch=payload["arch"],
        config=payload["config"],
        state_dict=payload["state_dict"],
        extra=payload.get("extra", {}),
    )
