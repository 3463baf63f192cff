"""Checks of model configs and checkpoints, before any model is built or any file written.

Each check raises one :class:`~lrfdyn.errors.LrfdynError` whose one-line message names
the offending value (:func:`~lrfdyn.errors.show`) and says what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lrfdyn.errors import (
    MAX_SEED,
    MAX_SIZE,
    MAX_TIMESTEPS,
    CheckpointError,
    ValidationError,
    check_int,
    check_real,
    is_int,
    one_line,
    show,
)
from lrfdyn.train.models import ARCHITECTURES, build_model


# ---------------------------------------------------------------- model configs


def _annotation(cfg_cls: type, name: str) -> str:
    field = next(f for f in dataclasses.fields(cfg_cls) if f.name == name)
    t = field.type
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def check_model_config(arch: str, config: Any, *, where: str) -> dict[str, Any]:
    """A model config dict whose keys, types and ranges fit ``arch``'s config dataclass.

    The rule, uniform over lrfdyn's architectures: every int is a size or count ≥ 1
    (timesteps below :data:`MAX_TIMESTEPS`), every float finite and > 0 (τ at least 1
    step, so the LIF decay 1 − 1/τ is not negative), every list of ints a list of sizes.
    """
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValidationError(f"{where}: unknown architecture {show(arch)}; choose one of "
                              f"{sorted(ARCHITECTURES)}")
    if not isinstance(config, Mapping):
        raise ValidationError(f"{where}: the {arch} model config must be a mapping, got "
                              f"{type(config).__name__}")
    cfg_cls = ARCHITECTURES[arch][0]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    bad_keys = [k for k in config if not isinstance(k, str)]
    unknown = sorted(set(config) - names - set(bad_keys))
    if bad_keys or unknown:
        raise ValidationError(f"{where}: unknown {arch} config keys "
                              f"{show(bad_keys + unknown)}; valid keys are {sorted(names)}")
    for key, value in config.items():
        kind = _annotation(cfg_cls, key)
        name = f"{arch} {key}"
        if kind == "int":
            check_int(name, value, low=1, where=where,
                      high=MAX_TIMESTEPS if key == "timesteps" else MAX_SIZE)
        elif kind == "float":
            check_real(name, value, positive=True, where=where,
                       low=1.0 if key == "tau" else None)
            if float(value) > MAX_SIZE:
                raise ValidationError(f"{where}: {name} = {float(value):g} is absurdly large")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValidationError(f"{where}: {name} must be true or false, got "
                                      f"{show(value)}")
        elif kind == "str":
            if not isinstance(value, str):
                raise ValidationError(f"{where}: {name} must be a string, got {show(value)}")
        elif kind.startswith("list[int]"):
            if not isinstance(value, (list, tuple)):
                raise ValidationError(f"{where}: {name} must be a list of integers, got "
                                      f"{show(value)}")
            for i, v in enumerate(value):
                check_int(f"{name}[{i}]", v, low=1, high=MAX_SIZE, where=where)
    try:
        cfg_cls(**dict(config))  # the dataclass's own cross-field checks
    except ValidationError as exc:
        raise ValidationError(f"{where}: {one_line(exc)}") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValidationError(f"{where}: invalid {arch} config ({one_line(exc)})") from None
    return dict(config)


# ---------------------------------------------------------------- checkpoints


def check_checkpoint_payload(payload: dict[str, Any], path: Path) -> None:
    """Every key, type, shape and value a checkpoint needs to build and export its model."""
    where = str(path)
    fix = "pass a checkpoint.pt written by `lrfdyn train`"
    missing = [k for k in ("arch", "config", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"{where}: checkpoint has no {', '.join(map(repr, missing))}; "
                              f"{fix}")
    arch, config, state = payload["arch"], payload["config"], payload["state_dict"]
    extra = payload.get("extra", {})
    if config is None or not isinstance(config, dict):
        raise CheckpointError(f"{where}: checkpoint config must be a mapping, got "
                              f"{show(config)}; {fix}")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: checkpoint state_dict must be a mapping, got "
                              f"{type(state).__name__}; {fix}")
    if not isinstance(extra, dict):
        raise CheckpointError(f"{where}: checkpoint extra must be a mapping, got "
                              f"{type(extra).__name__}; {fix}")
    try:
        check_model_config(arch, config, where=f"{where}: checkpoint")
    except ValidationError as exc:
        raise CheckpointError(f"{exc}; {fix}") from None
    # The state dict the config implies: on the meta device (shapes only, no memory),
    # else on the CPU for models whose init reads values; never moving the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                expected = build_model(arch, config).state_dict()
        except Exception:  # noqa: BLE001 - retried for real just below
            try:
                expected = build_model(arch, config).state_dict()
            except Exception as exc:  # noqa: BLE001 - a config the model cannot take
                raise CheckpointError(f"{where}: cannot build {arch} from its config "
                                      f"({one_line(exc)}); {fix}") from None
    bad = [k for k in state if not isinstance(k, str)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - set(bad), key=str)
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {show(missing)}")
        if unexpected or bad:
            parts.append(f"unexpected {show(bad + unexpected)}")
        raise CheckpointError(f"{where}: state_dict does not fit its {arch} config "
                              f"({'; '.join(parts)}); {fix}")
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{where}: state_dict[{key!r}] is a {type(got).__name__}, "
                                  f"not a tensor; {fix}")
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{where}: state_dict[{key!r}] has shape "
                                  f"{tuple(got.shape)}, its config needs {tuple(want.shape)}; "
                                  f"{fix}")
        if got.is_complex():  # real dtypes cast on load; a complex weight has no meaning
            raise CheckpointError(f"{where}: state_dict[{key!r}] has dtype {got.dtype}, "
                                  f"expected {want.dtype}; {fix}")
        if got.is_floating_point():
            finite = torch.isfinite(got)
            if not bool(finite.all()):
                n = int((~finite).sum())
                raise CheckpointError(f"{where}: state_dict[{key!r}] has {n} NaN or infinite "
                                      f"values; the weights are corrupt: retrain")
    _check_extra(extra, arch, config, where, fix)


def _check_extra(extra: dict[str, Any], arch: str, config: dict[str, Any], where: str,
                 fix: str) -> None:
    if "data" in extra and not isinstance(extra["data"], str):
        raise CheckpointError(f"{where}: checkpoint extra 'data' must be a data set name, got "
                              f"{show(extra['data'])}; {fix}")
    for key in ("seed", "split_seed"):
        if key in extra:
            try:
                check_int(f"extra {key!r}", extra[key], low=0, high=MAX_SEED, where=where)
            except ValidationError as exc:
                raise CheckpointError(f"{exc}; {fix}") from None
    shape = extra.get("image_shape")
    if shape is None:
        return
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(is_int(v) and 1 <= v <= MAX_SIZE for v in shape)):
        raise CheckpointError(f"{where}: checkpoint image_shape must be [C, H, W] of positive "
                              f"integers, got {show(shape)}; {fix}")
    c, h, w = (int(v) for v in shape)
    if "in_features" in config and c * h * w != int(config["in_features"]):
        raise CheckpointError(f"{where}: image_shape {[c, h, w]} has {c * h * w} values, the "
                              f"{arch} takes in_features={config['in_features']}; {fix}")
    if "img_size" in config and (h != config["img_size"] or w != config["img_size"]
                                 or c != config.get("in_channels", c)):
        raise CheckpointError(f"{where}: image_shape {[c, h, w]} does not match the {arch}'s "
                              f"{config.get('in_channels', '?')}x{config['img_size']}x"
                              f"{config['img_size']} input; {fix}")
