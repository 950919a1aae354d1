"""CIFAR-10 in torchvision's on-disk layout, read by our own allow-listed unpickler: every pickle protocol,
Python 2 pickles, damaged and malicious files; torchvision only for --download."""

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
from torchvision.datasets import CIFAR10

from wfexplain.data import DatasetError, DatasetInfo, load_dataset
from wfexplain.data.cifar import _load_cifar10

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


def test_builtin_datasets_reject_other_in_chans(tmp_path, fake_cifar, write_tiny_idx):
    write_tiny_idx(tmp_path / "idx")
    for name in ("fashion-mnist", "mnist"):
        assert load_dataset(name, "test", root=tmp_path / "idx", in_chans=1).info.in_chans == 1
        with pytest.raises(DatasetError, match=rf"^{name} has 1 channel \(grayscale\), not in_chans=3"):
            load_dataset(name, "test", root=tmp_path / "idx", in_chans=3)
    root, _ = fake_cifar
    assert load_dataset("cifar10", "test", root=root, in_chans=3).info.in_chans == 3
    with pytest.raises(DatasetError, match=r"^cifar10 has 3 channels \(RGB\), not in_chans=1"):
        load_dataset("cifar10", "test", root=root, in_chans=1)
