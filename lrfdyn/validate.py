"""The command line's checks of output paths, made before any work.

Each check raises one :class:`~lrfdyn.errors.OutputPathError` with a one-line message that
names the path (``repr``, so a hostile name prints as data) and says what to do, so a bad
path never leaves a half-written output or a started Lava process behind. The checks of
what a command reads live beside the readers: single values in :mod:`lrfdyn.errors`,
input arrays in :mod:`lrfdyn.io`, NIR graphs in :mod:`lrfdyn.nir_types`, training
configs in :mod:`lrfdyn.train.trainer`, model configs and checkpoints in
:mod:`lrfdyn.train.checks`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrfdyn.errors import OutputPathError, show

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

