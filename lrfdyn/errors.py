"""User-facing errors, and the checks of single values that raise them.

Every error here carries a one-line message that says what is wrong and what to
do about it. The CLI prints exactly that line (``lrfdyn: error: <msg>``) and
exits with status 2; anything else is a bug and keeps its traceback.

The value checks (:func:`check_int`, :func:`check_real`, :func:`check_finite_array`)
name the offending value with ``repr`` (:func:`show`), so a hostile name from a file
prints as data, never as terminal control characters or several lines. Every stage
uses them, so they sit here, below every stage; the checks of whole artifacts live
beside what reads them (:mod:`lrfdyn.io`, :mod:`lrfdyn.nir_types`,
:mod:`lrfdyn.train.checks`, :mod:`lrfdyn.validate` for the command line's outputs).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


class LrfdynError(Exception):
    """Base: a user-facing error with a one-line message and a suggested fix."""


class ValidationError(LrfdynError):
    """A spec, graph or value is malformed or inconsistent."""


class LoihiRangeError(ValidationError):
    """A value does not fit the bit width Loihi gives it."""


class UnsupportedNodeError(LrfdynError):
    """A NIR node type or model block has no lowering or export."""


class ResourceError(LrfdynError):
    """The network does not fit the hardware model (cores, synapses, memory)."""


class FormatVersionError(LrfdynError):
    """An artifact was written by an incompatible version of lrfdyn."""


class CheckpointError(LrfdynError):
    """A checkpoint is missing, unreadable or not an lrfdyn checkpoint."""


class NIRFileError(LrfdynError):
    """A NIR file is missing or cannot be parsed."""


class DataError(LrfdynError):
    """A data set is missing or malformed."""


class LavaRunError(LrfdynError):
    """Lava failed to compile or run a network."""


class HardwareUnavailableError(LrfdynError):
    """Loihi 2 hardware or the lava-loihi extension is not present."""


class OutputPathError(LrfdynError):
    """An output path cannot be written, or would overwrite one of the command's inputs."""


# ---------------------------------------------------------------- value checks

#: Simulated time steps per sample beyond which a graph or model is refused at once:
#: at ~1 ms per Lava step, 10^7 steps is about 3 hours per sample.
MAX_TIMESTEPS = 10**7 - 1
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


def is_int(value: Any) -> bool:
    """An integer, not a bool (``True`` is an ``int`` in Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number, not a bool."""
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
