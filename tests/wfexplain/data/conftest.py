"""Shared by the dataset tests: no WFEXPLAIN_DATA from the caller's environment, and tiny idx files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    # Every test starts from the library defaults; tests that need the variable set it themselves.
    monkeypatch.delenv("WFEXPLAIN_DATA", raising=False)


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


@pytest.fixture(name="write_idx", scope="session")
def write_idx_fixture():
    """``write_idx(path, array)``: a uint8 array as an idx file, gzip'd when ``path`` ends in .gz."""
    return write_idx


@pytest.fixture(name="write_tiny_idx", scope="session")
def write_tiny_idx_fixture():
    """``write_tiny_idx(root, n_train=20, n_test=10, seed=0)``: the four MNIST idx files (gzip'd) in ``root``;
    returns ``{split: (images, labels)}``."""
    return write_tiny_idx
