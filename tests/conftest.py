import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WFEXPLAIN_PRECOMPUTE", "0")  # dashboard tests turn it on where they test it
if "WFEXPLAIN_CACHE_DIR" not in os.environ:  # precomputed answers never land in the repository's checkpoints
    import tempfile

    os.environ["WFEXPLAIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="wfexplain-answers-")
if "WFEXPLAIN_KEY_FILE" not in os.environ:  # the answers' signing key never lands in the user's ~/.config
    import tempfile

    os.environ["WFEXPLAIN_KEY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="wfexplain-key-"), "cache.key")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wfexplain.data import DatasetInfo
from wfexplain.filtering import FilteredModel

torch.set_num_threads(2)


def tiny_info(num_classes: int = 5, in_chans: int = 1, img_size: int = 16) -> DatasetInfo:
    return DatasetInfo("tiny", tuple(f"class{i}" for i in range(num_classes)), in_chans, img_size,
                       (0.5,) * in_chans, (0.5,) * in_chans)


def randomized(backbone: str, seed: int = 0, **kw) -> FilteredModel:
    """A filtered model with random weights, random BN statistics and random alphas."""
    torch.manual_seed(seed)
    model = FilteredModel(backbone, tiny_info(**kw))
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
        for a in model.alphas.values():
            a.uniform_(0, 1)
    return model.eval()


@pytest.fixture
def make_model():
    return randomized


def make_bar_folder(root: Path, n_train: int = 32, n_test: int = 8) -> None:
    """An image folder of 3 learnable classes (a bright bar at a class-specific row), 16x16 grayscale."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("top", "middle", "bottom")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(n):
                img = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
                img[2 + 5 * c: 5 + 5 * c] = 230
                Image.fromarray(img, "L").save(folder / f"{k}.png")
