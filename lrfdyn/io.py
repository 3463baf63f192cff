"""Atomic output: a reader sees the old file or the complete new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary file lives in the destination folder so that the final
    ``os.replace`` is a rename on one file system. On any exception the
    temporary file is removed and ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_array(path: str | os.PathLike[str], array: Any) -> Path:
    """``np.save`` to exactly ``path`` (np.save alone would append ``.npy``), atomically."""
    import numpy as np

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write_with(path, save)


def read_array(path: str | os.PathLike[str]) -> Any:
    """A ``.npy`` array, or one clear error."""
    import numpy as np

    from lrfdyn.errors import ValidationError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{path}: not a readable .npy array ({exc}); write it with "
                              "numpy.save") from None
