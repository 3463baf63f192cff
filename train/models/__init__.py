"""Spiking network architectures, by name.

``ARCHITECTURES`` maps an architecture name to its config dataclass and module
class; :func:`build_model` builds one from a JSON-compatible config dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.train.models.mlp import MLPConfig, SpikingMLP
from lrfdyn.train.models.spikformer import Spikformer, SpikformerConfig

ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, SpikingMLP),
    "spikformer": (SpikformerConfig, Spikformer),
}


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``arch`` from a config dict (unknown keys are an error)."""
    try:
        cfg_cls, model_cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValidationError(
            f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValidationError(
            f"unknown {arch} config keys {unknown}; valid keys are {sorted(names)}"
        )
    return model_cls(cfg_cls(**config))


def model_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-compatible config a model was built from."""
    return dataclasses.asdict(model.cfg)  # type: ignore[arg-type]
