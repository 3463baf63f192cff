"""Atomic output: a reader sees the old file or the complete new one, never a torn one;
and input arrays read header first (:func:`check_array_file`).

Only regular files are replaced by rename. A symlink is followed, so the file it points
to is replaced and the link stays a link. A character device or a pipe (``/dev/null``,
``/dev/stdout``, ``>(cat)``) is written directly: renaming over it would replace the
device node with a regular file. Block devices and sockets are refused. Failures to
write (a read-only folder, a parent that is a file) are one-line
:class:`~lrfdyn.errors.OutputPathError` s.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lrfdyn.errors import OutputPathError, ValidationError, one_line, show


def _os_error(path: Path, exc: OSError) -> OutputPathError:
    reason = exc.strerror or type(exc).__name__
    return OutputPathError(f"cannot write {str(path)!r}: {reason}; pick another path")


def _special(dest: Path) -> bool:
    """Whether ``dest`` exists and is not a regular file or folder (after symlinks)."""
    try:
        mode = dest.stat().st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        raise OutputPathError(f"{str(dest)!r} is a block device or socket, not a file; "
                              "write to a regular file")
    return False


@contextmanager
def _direct(dest: Path) -> Iterator[Path]:
    """Write into a temporary file, then copy it into the device or pipe ``dest``.

    The writer still sees a regular file (h5py and torch seek); a pipe with no reader
    is refused at once instead of blocking (O_NONBLOCK open, then blocking writes).
    """
    fd, tmp = tempfile.mkstemp(prefix=".lrfdyn-", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            out_fd = os.open(dest, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OutputPathError(f"{str(dest)!r} is a pipe that no process reads; start "
                                      "its reader first") from None
            raise _os_error(dest, exc) from None
        os.set_blocking(out_fd, True)
        with open(out_fd, "wb") as out, open(tmp_path, "rb") as src:
            shutil.copyfileobj(src, out)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary file lives in the destination folder so that the final
    ``os.replace`` is a rename on one file system. On any exception the
    temporary file is removed and ``path`` is left untouched.
    """
    if str(path) == "":
        raise OutputPathError("the output path is empty; give a file name")
    dest = Path(os.path.realpath(path))  # a symlink's target is replaced, not the link
    if _special(dest):
        with _direct(dest) as tmp:
            yield tmp
        return
    if dest.is_dir():
        raise OutputPathError(f"{str(path)!r} is a folder; give a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:200]}.", suffix=".tmp",
                                   dir=dest.parent)
    except OSError as exc:
        raise _os_error(Path(path), exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, dest)
        except OSError as exc:
            raise _os_error(Path(path), exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def input_file(path: str | os.PathLike[str], what: str, hint: str,
               error: type[Exception]) -> Path:
    """``path`` as a Path when it names an existing file; else ``error`` in one line
    (an empty path, a folder, a missing file) ending in ``hint``, e.g. how to make one."""
    if str(path) == "":
        raise error(f"the {what} path is empty; {hint}")
    path = Path(path)
    if not path.is_file():
        found = f"a folder, not a {what}" if path.is_dir() else f"no such {what}"
        raise error(f"{path}: {found}; {hint}")
    return path


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

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write_with(path, save)


def read_array(path: str | os.PathLike[str]) -> Any:
    """A ``.npy`` array, checked header first (:func:`check_array_file`)."""
    return check_array_file(path)


# ---------------------------------------------------------------- input arrays

#: Largest input array (values) ``simulate --input`` reads; far beyond any real run,
#: well below what would exhaust memory.
MAX_INPUT_VALUES = 2**31


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
