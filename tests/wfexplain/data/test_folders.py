"""Image folders (train/ and test/ of class folders): classes, channels from the majority mode, sizes, and
the layouts and files that are refused by name."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wfexplain.data import DatasetError, ImageFolderImages, MixedModesWarning, fingerprint, load_dataset


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
