"""Atomic output: a reader sees the old file or the complete new one, never a torn one.

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
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lrfdyn.errors import OutputPathError


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
    """A ``.npy`` array, checked header first (:func:`lrfdyn.validate.check_array_file`)."""
    from lrfdyn.validate import check_array_file

    return check_array_file(path)
