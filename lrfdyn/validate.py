"""Validation at every boundary: checkpoints, configs, NIR graphs, input arrays, output paths.

Each check raises one :class:`~lrfdyn.errors.LrfdynError` with a one-line message that
names the offending value (``repr`` for anything a file supplied, so a hostile name
prints as data, never as terminal control characters or several lines) and says what
to do. The checks run before any work, so a bad input never leaves a half-written
output or a started Lava process behind.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lrfdyn.errors import (
    CheckpointError,
    NIRFileError,
    OutputPathError,
    ValidationError,
)

#: Simulated time steps per sample beyond which a graph or model is refused at once:
#: at ~1 ms per Lava step, 10^7 steps is about 3 hours per sample.
MAX_TIMESTEPS = 10**7 - 1
#: Largest input array (values) ``simulate --input`` reads; far beyond any real run,
#: well below what would exhaust memory.
MAX_INPUT_VALUES = 2**31
#: Largest size-like integer in a model config (widths, channels, image sizes).
MAX_SIZE = 2**24
#: Seeds must fit numpy's and torch's generators.
MAX_SEED = 2**32 - 1
#: Printed values are cut at this many characters.
SHOW = 80


def show(value: Any) -> str:
    """``repr`` of a file-supplied value, cut to one short line."""
    text = repr(value)
    return text if len(text) <= SHOW else text[: SHOW - 3] + "..."


def one_line(text: str, limit: int = 160) -> str:
    """The first line of an exception's text, cut: a detail for a one-line message."""
    text = str(text).strip()
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


# ---------------------------------------------------------------- scalars


def is_int(value: Any) -> bool:
    """An integer, not a bool (``True`` is an ``int`` in Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)))


def _affixes(where: str, fix: str) -> tuple[str, str]:
    """The ``<where>: `` before and the ``; <fix>`` after a one-line error."""
    return (f"{where}: " if where else ""), (f"; {fix}" if fix else "")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              where: str = "", fix: str = "") -> int:
    """``value`` as an int in [low, high], or one error naming ``name``."""
    at, tail = _affixes(where, fix)
    if not is_int(value):
        raise ValidationError(f"{at}{name} must be an integer, got {show(value)} "
                              f"({type(value).__name__}){tail}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        rng = (f"at least {low}" if high is None else
               f"at most {high}" if low is None else f"in {low}..{high}")
        raise ValidationError(f"{at}{name} must be {rng}, got {v}{tail}")
    return v


def check_real(name: str, value: Any, *, positive: bool = False, nonneg: bool = False,
               low: float | None = None, where: str = "", fix: str = "") -> float:
    """``value`` as a finite float (> 0, ≥ 0 or ≥ low when asked), or one error."""
    at, tail = _affixes(where, fix)
    if not is_real(value):
        raise ValidationError(f"{at}{name} must be a number, got {show(value)} "
                              f"({type(value).__name__}){tail}")
    v = float(value)
    if not math.isfinite(v):
        raise ValidationError(f"{at}{name} must be finite, got {v}{tail}")
    if positive and v <= 0:
        raise ValidationError(f"{at}{name} must be positive, got {v:g}{tail}")
    if nonneg and v < 0:
        raise ValidationError(f"{at}{name} must not be negative, got {v:g}{tail}")
    if low is not None and v < low:
        raise ValidationError(f"{at}{name} must be at least {low:g}, got {v:g}{tail}")
    return v


def check_finite_array(name: str, values: Any, *, where: str = "", fix: str = "") -> np.ndarray:
    """A real, finite numeric array, or one error that says which and how many values."""
    at, tail = _affixes(where, fix)
    try:
        arr = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - ragged lists, odd objects
        raise ValidationError(f"{at}{name} is not an array ({one_line(exc)}){tail}") from None
    if np.iscomplexobj(arr):
        raise ValidationError(f"{at}{name} is complex ({arr.dtype}); spiking networks take "
                              f"real values{tail}")
    if arr.dtype.kind not in "biuf":
        raise ValidationError(f"{at}{name} has dtype {arr.dtype}, not a real number type{tail}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            n_nan = int(np.isnan(arr).sum())
            raise ValidationError(
                f"{at}{name} has {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values "
                f"(of {arr.size}){tail}")
    return arr


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
    from lrfdyn.train.models import ARCHITECTURES

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


# ---------------------------------------------------------------- training configs


def check_train_config(data: Any) -> dict[str, Any]:
    """A training config's values, type by type, before anything is built or written."""
    from lrfdyn.train.trainer import KNOWN_INPUTS, TrainConfig

    where = "training config"
    if not isinstance(data, Mapping):
        raise ValidationError(f"a training config must be a mapping, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = list(data)
    unknown = sorted((k for k in keys if k not in fields), key=repr)
    if unknown:
        raise ValidationError(f"unknown training config keys {show(unknown)}; valid keys are "
                              f"{sorted(fields)}")
    d = dict(data)
    for key in ("data", "arch", "out"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            raise ValidationError(f"{where}: {key} must be a non-empty string, got "
                                  f"{show(d[key])}")
    if "data" in d and d["data"] not in KNOWN_INPUTS:
        raise ValidationError(f"{where}: unknown data set {show(d['data'])}; choose one of "
                              f"{', '.join(KNOWN_INPUTS)}")
    if d.get("data_dir") is not None and (not isinstance(d["data_dir"], str)
                                          or not d["data_dir"]):
        raise ValidationError(f"{where}: data_dir must be a folder path, got "
                              f"{show(d['data_dir'])}")
    for key, low in (("epochs", 0), ("qat_epochs", 0), ("batch_size", 1)):
        if key in d:
            check_int(key, d[key], low=low, high=10**6, where=where)
    for key in ("seed", "split_seed"):
        if key in d:
            check_int(key, d[key], low=0, high=MAX_SEED, where=where)
    if "lr" in d:
        check_real("lr", d["lr"], positive=True, where=where)
    if "weight_decay" in d:
        check_real("weight_decay", d["weight_decay"], nonneg=True, where=where)
    if "logit_scale" in d:
        check_real("logit_scale", d["logit_scale"], positive=True, where=where)
    if "bn_calibration" in d and not isinstance(d["bn_calibration"], bool):
        raise ValidationError(f"{where}: bn_calibration must be true or false, got "
                              f"{show(d['bn_calibration'])}")
    arch = d.get("arch", "mlp")
    model = d.get("model", {})
    if not isinstance(model, Mapping):
        raise ValidationError(f"{where}: model must be a mapping of {arch} config keys, got "
                              f"{type(model).__name__}")
    from lrfdyn.train.trainer import shape_defaults

    # The data set fills in the input shape before the model's cross-field checks run.
    shape, classes = KNOWN_INPUTS[d.get("data", "digits")]
    check_model_config(arch, {**shape_defaults(arch, shape, classes), **model},
                       where=f"{where} model")
    return d


# ---------------------------------------------------------------- checkpoints


def check_checkpoint_payload(payload: dict[str, Any], path: Path) -> None:
    """Every key, type, shape and value a checkpoint needs to build and export its model."""
    import torch

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
    from lrfdyn.train.models import build_model

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


# ---------------------------------------------------------------- NIR graphs

#: Node fields that are not parameters.
_NOT_PARAMS = ("input_type", "output_type", "metadata", "nodes", "edges")
#: Time constants: dividing by them must give a positive number of steps.
_TAU_FIELDS = ("tau", "tau_mem", "tau_syn")


def check_graph(graph: Any, path: Path | str) -> None:
    """A NIR graph's names, edges, Input/Output nodes, parameters and metadata."""
    import nir

    where = str(path)
    fix = "re-export it with `lrfdyn export` or fix its producer"
    _check_nodes(graph, where, fix, prefix="")
    check_endpoints(graph, path)
    check_graph_metadata(graph.metadata, where, neurons=_neuron_count(graph))


def check_endpoints(graph: Any, path: Path | str) -> None:
    """A graph with an Input and an Output node (as written, before nir infers types)."""
    import nir

    kinds = [type(n) for n in graph.nodes.values()]
    if nir.Input not in kinds or nir.Output not in kinds:
        lacking = " and ".join(k.__name__ for k in (nir.Input, nir.Output) if k not in kinds)
        raise NIRFileError(f"{path}: the graph has no {lacking} node; a runnable graph needs "
                           "both; re-export it with `lrfdyn export` or fix its producer")


def _check_nodes(graph: Any, where: str, fix: str, prefix: str) -> None:
    import nir

    names = set(graph.nodes)
    for name, node in graph.nodes.items():
        if not isinstance(name, str) or not name:
            raise NIRFileError(f"{where}: node name {show(name)} is not a non-empty string; {fix}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise NIRFileError(f"{where}: node name {show(prefix + name)} has control "
                               f"characters; {fix}")
        label = f"node {show(prefix + name)} ({type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            _check_nodes(node, where, fix, prefix=f"{prefix}{name}.")
            continue
        if not dataclasses.is_dataclass(node):
            raise NIRFileError(f"{where}: {label} is not a NIR node; {fix}")
        from lrfdyn.nir_types import KNOWN_EXTENSIONS, extension_kind

        kind = extension_kind(node)
        if kind is not None:
            if kind not in KNOWN_EXTENSIONS:
                known = ", ".join(map(repr, KNOWN_EXTENSIONS))
                raise NIRFileError(f"{where}: {label} uses lrfdyn extension {show(kind)}, "
                                   f"which this version does not know (it knows {known}); "
                                   "upgrade lrfdyn or re-export the model")
            continue  # its carrier's fields are NaN on purpose (lrfdyn.nir_types.graded_node)
        for f in dataclasses.fields(node):
            if f.name in _NOT_PARAMS:
                continue
            value = getattr(node, f.name)
            if value is None or isinstance(value, str):
                continue
            try:
                arr = check_finite_array(f.name, value)
            except ValidationError as exc:
                raise NIRFileError(f"{where}: {label}: {one_line(exc)}; {fix}") from None
            if f.name in _TAU_FIELDS and arr.size and float(arr.min()) <= 0:
                raise NIRFileError(f"{where}: {label}: {f.name} must be positive, has "
                                   f"{float(arr.min()):g}; {fix}")
        if isinstance(node, nir.Affine):
            w, b = np.asarray(node.weight), np.asarray(node.bias)
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise NIRFileError(f"{where}: {label}: bias has shape {b.shape}, weight "
                                   f"{w.shape} needs ({w.shape[0] if w.ndim else '?'},); {fix}")
        if isinstance(node, nir.Conv2d):
            w, b = np.asarray(node.weight), np.asarray(node.bias)
            if w.ndim != 4 or b.size not in (0, 1, w.shape[0]):
                raise NIRFileError(f"{where}: {label}: bias has {b.size} values, the weight "
                                   f"{w.shape} has {w.shape[0] if w.ndim else '?'} output "
                                   f"channels; {fix}")
    for edge in graph.edges:
        if (not isinstance(edge, (tuple, list)) or len(edge) != 2
                or not all(isinstance(e, str) for e in edge)):
            raise NIRFileError(f"{where}: edge {show(edge)} is not a pair of node names; {fix}")
        for end in edge:
            head = end.split(".", 1)[0]
            if end not in names and head not in names:
                raise NIRFileError(f"{where}: edge {show(tuple(edge))} names no node "
                                   f"{show(prefix + end)}; {fix}")


def _neuron_count(graph: Any) -> int:
    import nir

    total = 0
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            total += _neuron_count(node)
        elif isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI, nir.I)):
            for f in ("v_threshold", "tau", "r"):
                if hasattr(node, f):
                    total += int(np.asarray(getattr(node, f)).size)
                    break
    return total


def check_graph_metadata(meta: Any, where: str, *, neurons: int = 0) -> None:
    """The metadata keys lrfdyn reads: types, ranges, and a fast refusal of absurd runs."""
    fix = "fix the graph's metadata or re-export it with `lrfdyn export`"
    if not isinstance(meta, Mapping):
        raise NIRFileError(f"{where}: graph metadata is not a mapping; {fix}")

    def scalar(key: str) -> Any:
        v = meta[key]
        if isinstance(v, np.ndarray):
            if v.ndim != 0:
                raise NIRFileError(f"{where}: metadata {key!r} must be one number, got an array "
                                   f"of shape {v.shape}; {fix}")
            v = v.item()
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return v

    try:
        if "dt" in meta:
            check_real("metadata 'dt'", scalar("dt"), positive=True, where=where, fix=fix)
        if "timesteps" in meta:
            t = scalar("timesteps")
            if is_real(t) and not is_int(t) and float(t).is_integer():
                t = int(t)
            t = check_int("metadata 'timesteps'", t, low=1, where=where, fix=fix)
            if t > MAX_TIMESTEPS:
                per_sample_gb = t * max(neurons, 1) / 1e9
                hours = t * 1e-3 / 3600
                raise NIRFileError(
                    f"{where}: metadata 'timesteps' = {t} is absurd: recording its spikes needs "
                    f"about {per_sample_gb:.3g} GB per sample ({max(neurons, 1)} neurons x {t} "
                    f"steps) and Lava about {hours:.3g} h per sample at ~1 ms a step; lrfdyn "
                    f"runs at most {MAX_TIMESTEPS} steps; {fix}")
        for key in ("split_seed", "seed"):
            if key in meta:
                check_int(f"metadata {key!r}", scalar(key), low=0, high=MAX_SEED, where=where,
                          fix=fix)
        if "input_levels" in meta:
            check_real("metadata 'input_levels'", scalar("input_levels"), positive=True,
                       where=where, fix=fix)
        if "dataset" in meta and not isinstance(scalar("dataset"), str):
            raise NIRFileError(f"{where}: metadata 'dataset' must be a data set name, got "
                               f"{show(meta['dataset'])}; {fix}")
    except ValidationError as exc:
        raise NIRFileError(str(exc)) from None


# ---------------------------------------------------------------- input arrays


def check_array_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ``.npy`` input array, checking its header before any data is loaded.

    Refused by name: a missing, empty or truncated file, pickled objects, structured,
    string, bytes, datetime or complex dtypes, a zero-length axis, fewer than two axes
    (``(T, ...)``), a header claiming more than :data:`MAX_INPUT_VALUES` values, and NaN
    or infinite values. The data are memory-mapped, so the checks cost no copy.
    """
    from numpy.lib import format as npformat

    p = Path(path)
    fix = "write a real-valued (T, ...) or (T, B, ...) array with numpy.save"
    if not p.exists():
        raise ValidationError(f"{p}: no such input array file")
    if not p.is_file():
        raise ValidationError(f"{p}: not a regular file; {fix}")
    size = p.stat().st_size
    if size == 0:
        raise ValidationError(f"{p}: the input array file is empty; {fix}")
    try:
        with open(p, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npformat._read_array_header(f, version)  # 2.0, 3.0
            offset = f.tell()
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise ValidationError(f"{p}: not a .npy array ({one_line(exc)}); {fix}") from None
    if dtype.hasobject:
        raise ValidationError(f"{p}: holds Python objects ({dtype}); lrfdyn never unpickles "
                              f"input; {fix}")
    if dtype.names is not None or dtype.subdtype is not None:
        raise ValidationError(f"{p}: has a structured dtype {show(str(dtype))}; {fix}")
    if dtype.kind == "c":
        raise ValidationError(f"{p}: is complex ({dtype}); spiking inputs are real; {fix}")
    if dtype.kind not in "biuf":
        raise ValidationError(f"{p}: has dtype {dtype} ({_kind_name(dtype.kind)}), not numbers; "
                              f"{fix}")
    if len(shape) < 2:
        raise ValidationError(f"{p}: has shape {shape}; an input needs a time axis and the "
                              f"input's values, (T, ...) or (T, B, ...)")
    if 0 in shape:
        axis = ("time steps" if shape[0] == 0 else "a batch" if len(shape) > 2 and shape[1] == 0
                else "values")
        raise ValidationError(f"{p}: has shape {shape}, with no {axis}; {fix}")
    count = math.prod(int(s) for s in shape)
    if count > MAX_INPUT_VALUES:
        raise ValidationError(f"{p}: its header claims shape {shape} = {count:.3g} values "
                              f"({count * dtype.itemsize / 2**30:.3g} GiB), over lrfdyn's limit "
                              f"of {MAX_INPUT_VALUES:.3g}; split the input")
    if size < offset + count * dtype.itemsize:
        raise ValidationError(f"{p}: is truncated: its header claims {shape} {dtype}, "
                              f"{offset + count * dtype.itemsize} bytes, the file has {size}; "
                              f"{fix}")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{p}: not a readable .npy array ({one_line(exc)}); {fix}") from None
    if dtype.kind == "f":
        flat = arr.reshape(-1)
        step = 1 << 22
        for i in range(0, flat.size, step):  # in chunks: no full temporary mask
            chunk = flat[i : i + step]
            if not np.isfinite(chunk).all():
                n_nan = int(np.isnan(chunk).sum())
                raise ValidationError(
                    f"{p}: has NaN or infinite values (first chunk with them: {n_nan} NaN); "
                    "spiking inputs must be finite")
    return np.array(arr)


def _kind_name(kind: str) -> str:
    return {"U": "strings", "S": "bytes", "M": "datetimes", "m": "timedeltas",
            "V": "raw bytes", "O": "objects"}.get(kind, kind)


# ---------------------------------------------------------------- output paths

_FORBIDDEN_ROOTS = ("/proc", "/sys")


def _real(p: Path) -> str:
    return os.path.realpath(os.path.abspath(p))


def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _nearest_existing(p: Path) -> Path:
    q = Path(os.path.abspath(p))
    while not q.exists() and q != q.parent:
        if q.is_symlink():  # a dangling link: where it points is what is created
            return q
        q = q.parent
    return q


def _check_components(p: Path, flag: str) -> None:
    absolute = os.path.abspath(p)
    if len(absolute.encode()) >= 4096:
        raise OutputPathError(f"{flag} {show(str(p))}: the path is too long; pick a shorter one")
    limit = _name_max(str(_nearest_existing(p)) if _nearest_existing(p).is_dir() else "/")
    for part in Path(absolute).parts:
        if len(part.encode()) > limit:
            raise OutputPathError(f"{flag}: the name {show(part)} is longer than the "
                                  f"{limit} bytes a file name may have; pick a shorter one")
    real = _real(p)
    for root in _FORBIDDEN_ROOTS:
        if real == root or real.startswith(root + "/"):
            raise OutputPathError(f"{flag} {show(str(p))}: {root} is the kernel's, not a place "
                                  "for output; write somewhere else")


def _check_creatable(p: Path, flag: str) -> None:
    """The folders above ``p`` exist or can be made, and the nearest one is writable."""
    anc = _nearest_existing(p.parent if str(p.parent) else Path("."))
    if anc.exists() and not anc.is_dir():
        raise OutputPathError(f"{flag} {show(str(p))}: {show(str(anc))} is a file, not a "
                              "folder; pick another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {show(str(p))}: the folder {show(str(anc))} is not "
                              "writable; pick another path")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _real(a) == _real(b)


def check_output_file(path: Any, flag: str, inputs: Iterable[Any] = ()) -> Path:
    """An output file path: refused in one line before any work if it cannot be written.

    Refused: an empty path, a folder, an over-long name, a parent that is a file, the
    kernel's /proc and /sys, a read-only folder or file, a block device or socket, and
    any path that resolves to one of the command's ``inputs`` (it would be overwritten).
    Character devices (/dev/null, /dev/stdout) and pipes are fine: they are written to
    directly (:mod:`lrfdyn.io`).
    """
    if path is None or str(path) == "":
        raise OutputPathError(f"{flag}: the output path is empty; give a file name")
    p = Path(path)
    if str(path).endswith(os.sep):
        raise OutputPathError(f"{flag} {show(str(path))}: names a folder; give a file name")
    _check_components(p, flag)
    for src in inputs:
        if src is not None and _same_file(p, Path(src)):
            raise OutputPathError(f"{flag} {show(str(p))} is the input file {show(str(src))}: "
                                  "writing it would destroy the input; pick another path")
    real = Path(_real(p))
    if real.exists():
        mode = real.stat().st_mode
        if stat.S_ISDIR(mode):
            raise OutputPathError(f"{flag} {show(str(p))}: is a folder; give a file name")
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            if not os.access(real, os.W_OK):
                raise OutputPathError(f"{flag} {show(str(p))}: not writable")
            return p
        if not stat.S_ISREG(mode):
            raise OutputPathError(f"{flag} {show(str(p))}: is a device or socket, not a file; "
                                  "write to a regular file")
        if not os.access(real, os.W_OK):
            raise OutputPathError(f"{flag} {show(str(p))}: the file is read-only; pick another "
                                  "path or make it writable")
    _check_creatable(real, flag)
    return p


def check_output_dir(path: Any, flag: str, inputs: Iterable[Any] = (),
                     files: Iterable[str] = ()) -> Path:
    """An output folder: creatable or writable, and none of ``files`` in it is an input."""
    if path is None or str(path) == "":
        raise OutputPathError(f"{flag}: the output folder is empty; give a folder name")
    p = Path(path)
    _check_components(p, flag)
    real = Path(_real(p))
    if real.exists():
        if not real.is_dir():
            raise OutputPathError(f"{flag} {show(str(p))}: is a file, not a folder; pick a "
                                  "folder")
        if not os.access(real, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {show(str(p))}: the folder is not writable; pick "
                                  "another")
    else:
        _check_creatable(real, flag)
    for name in files:
        for src in inputs:
            if src is not None and _same_file(p / name, Path(src)):
                raise OutputPathError(
                    f"{flag} {show(str(p))}: would overwrite the input file {show(str(src))} "
                    f"with its {name}; pick another folder")
    return p

