"""The recorded preprocessing: resize filter (interpolation), crop_pct (resize keeping the aspect, centre crop) and
non-square (H, W) inputs, as timm's and torchvision's eval transforms do; old manifests read as before."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

import wfexplain
import wfexplain.checkpoint as checkpoint
from wfexplain.checkpoint import CheckpointError, save_checkpoint
from wfexplain.data import DatasetInfo, TensorImages, build_transform, with_preprocessing
from wfexplain.importing import import_checkpoint
from wfexplain.manifest import Manifest
from wfexplain.preprocessing import resolve_preprocessing

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FOLDER = DatasetInfo("imagefolder", tuple("abc"), 3, 64, *IMAGENET)  # the loader's placeholders: never a source
VIT = "vit_tiny_patch16_224"
VIT_ARGS = {"patch_size": 4, "embed_dim": 24, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def _photo(h: int = 50, w: int = 73, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _info(hw=(32, 32), crop_pct=None, interpolation="bilinear", chans=3) -> DatasetInfo:
    stats = IMAGENET if chans == 3 else ((0.5,), (0.25,))
    return DatasetInfo("x", tuple("abc"), chans, hw[0], *stats, interpolation, crop_pct, hw[1])


# ---------------------------------------------------------------- the transform


@pytest.mark.parametrize(("hw", "crop_pct", "interpolation"), [
    ((32, 32), 0.875, "bicubic"), ((32, 32), 0.95, "bilinear"), ((28, 28), 1.0, "nearest"),
    ((24, 40), 0.9, "bicubic"), ((40, 24), 0.875, "bilinear"), ((32, 32), 0.875, "lanczos")])
@pytest.mark.parametrize("photo", [(50, 73), (81, 40), (32, 32)])
def test_a_crop_transform_equals_timms_eval_transform(hw, crop_pct, interpolation, photo):
    im = _photo(*photo)
    ours = build_transform(_info(hw, crop_pct, interpolation))(im)
    timms = create_transform(input_size=(3, *hw), crop_pct=crop_pct, interpolation=interpolation, mean=IMAGENET[0],
                             std=IMAGENET[1])(im)
    assert ours.shape == (3, *hw) and torch.equal(ours, timms)


def test_without_crop_the_whole_image_is_resized_as_before():
    from torchvision import transforms

    im = _photo()
    for hw in ((32, 32), (20, 36)):
        old = transforms.Compose([transforms.Resize(hw), transforms.ToTensor(), transforms.Normalize(*IMAGENET)])(im)
        assert torch.equal(build_transform(_info(hw))(im), old)
    bicubic = build_transform(_info((32, 32), interpolation="bicubic"))(im)
    assert bicubic.shape == (3, 32, 32) and not torch.equal(bicubic, build_transform(_info((32, 32)))(im))


def test_in_memory_images_are_resized_and_cropped_like_pil_images():
    photos = np.stack([np.asarray(_photo(40, 60, seed=s)) for s in range(3)])
    for info, tol in ((_info((32, 32), 0.875), 0.03), (_info((24, 40), 0.9), 0.03), (_info((32, 32), 0.875, "bicubic"), 0),
                      (_info((20, 36), None, "nearest"), 0)):
        ds = TensorImages(photos, np.zeros(3, dtype=np.int64), info)
        batch = torch.stack([x for x, _ in ds.__getitems__([0, 1, 2])])
        pil = torch.stack([build_transform(info)(ds.pil(i)) for i in range(3)])
        assert batch.shape == (3, 3, *info.input_hw)
        torch.testing.assert_close(batch, pil, atol=tol, rtol=0)  # bilinear: torch on floats vs PIL on bytes


def test_built_in_datasets_are_fed_exactly_as_before():
    """No crop, bilinear: in-memory images untouched at their size, else torch's antialiased bilinear resize."""
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    gray = DatasetInfo("fashion-mnist", tuple("abcd"), 1, 28, (0.286,), (0.353,))
    ds = TensorImages(images, np.arange(4), gray)
    x = torch.from_numpy(images).float().div(255.0)[:, None]
    assert torch.equal(torch.stack([ds[i][0] for i in range(4)]), (x - 0.286) / 0.353)
    big = with_preprocessing(ds, DatasetInfo("fashion-mnist", tuple("abcd"), 3, 32, *IMAGENET))
    old = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", antialias=True,
                                          align_corners=False)
    old = (old - torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    assert torch.equal(torch.stack([x for x, _ in big.__getitems__([0, 1, 2, 3])]), old)


def test_preprocessing_is_checked():
    with pytest.raises(ValueError, match="interpolation must be one of bilinear, bicubic"):
        _info(interpolation="random")
    for bad in (0, 1.5, -0.1, float("nan"), True, "0.9"):
        with pytest.raises(ValueError, match=r"crop_pct must be a number in \(0, 1\]"):
            _info(crop_pct=bad)
    with pytest.raises(ValueError, match="resizes a 512 px input to more than 4096 px"):
        _info((512, 512), crop_pct=0.1)
    assert _info((32, 32)).img_width is None and _info((32, 48)).input_size == (3, 32, 48)


# ---------------------------------------------------------------- the manifest


@pytest.fixture
def ckpt(tmp_path, make_model):
    save_checkpoint(make_model("cnn"), tmp_path / "ck", {})
    return tmp_path / "ck"


def _rewrite(ckpt: Path, **dataset) -> dict:
    m = json.loads((ckpt / "manifest.json").read_text())
    m["dataset"].update(dataset)
    (ckpt / "manifest.json").write_text(json.dumps(m))
    return m


def test_the_resize_is_recorded_only_where_it_is_not_the_default(ckpt):
    raw = json.loads((ckpt / "manifest.json").read_text())
    assert set(raw["dataset"]) == {"name", "class_names", "in_chans", "img_size", "mean", "std"}
    info = checkpoint.read_manifest(ckpt).dataset
    assert (info.interpolation, info.crop_pct, info.img_width) == ("bilinear", None, None)
    for interpolation in ("bicubic", "bilinear"):
        _rewrite(ckpt, interpolation=interpolation, crop_pct=0.875)
        m = checkpoint.read_manifest(ckpt)
        assert (m.dataset.interpolation, m.dataset.crop_pct) == (interpolation, 0.875)
        written = m.to_json()["dataset"]
        assert written.get("interpolation") == (None if interpolation == "bilinear" else "bicubic")
        assert written["crop_pct"] == 0.875 and Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize(("field", "value", "message"), [
    ("crop_pct", 0, r"crop_pct must be a number in \(0, 1\] or None, found 0"),
    ("crop_pct", 1.01, "crop_pct must be a number in"),
    ("crop_pct", "0.9", "crop_pct must be int/float or null"),
    ("crop_pct", True, "crop_pct must be int/float or null"),
    ("interpolation", "random", "interpolation must be one of bilinear, bicubic, nearest, box, hamming, lanczos"),
    ("interpolation", 3, "interpolation must be str or null"),
    ("img_size", [16, 5000], "img_size must be in 4..1,024, found 5,000"),
    ("img_size", [16, "16"], "img_size must be int, found str"),
    ("img_size", [3, 16, 16], "img_size must be int, found list"),
    ("resize", "whole", r"dataset: unknown field\(s\) 'resize'"),
])
def test_a_bad_resize_in_the_manifest_is_named(ckpt, field, value, message):
    _rewrite(ckpt, **{field: value})
    with pytest.raises(CheckpointError, match=message):
        wfexplain.load(ckpt)


def test_shipped_manifests_read_and_write_back_unchanged():
    paths = sorted(Path("checkpoints").glob("**/manifest.json"))
    assert len(paths) >= 4
    for path in paths:
        raw = json.loads(path.read_text())
        manifest = Manifest.from_json(raw, str(path))
        assert manifest.to_json()["dataset"] == raw["dataset"], path
        info = manifest.dataset
        assert (info.interpolation, info.crop_pct, info.img_width) == ("bilinear", None, None), path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_a_shipped_checkpoint_scores_what_it_recorded():
    from wfexplain.evaluation import predict
    from wfexplain.splits import checkpoint_split

    model = wfexplain.load("checkpoints/fmnist-cnn")
    manifest = checkpoint.read_manifest("checkpoints/fmnist-cnn")
    test = checkpoint_split(manifest, "test")
    acc = (predict(model, test) == test.targets).float().mean().item()
    assert acc == pytest.approx(manifest.metrics["original_accuracy"], abs=1e-6)


# ---------------------------------------------------------------- import


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_bar_folder):
    root = tmp_path_factory.mktemp("bars")
    make_bar_folder(root, n_train=2, n_test=3)
    return root


def test_a_non_square_timm_model_is_imported_and_evaluated(data, tmp_path):
    torch.manual_seed(0)
    net = timm.create_model(VIT, num_classes=3, img_size=(16, 24), **VIT_ARGS).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    result = import_checkpoint(f"timm:{VIT}", tmp_path / "w.safetensors", "imagefolder", tmp_path / "ck", data_dir=data,
                               in_chans=3, arch_kwargs={**VIT_ARGS, "img_size": [16, 24]}, mean=IMAGENET[0],
                               std=IMAGENET[1], crop_pct=0.9, interpolation="bicubic")
    pre = result["preprocessing"]
    assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == ((16, 24), 0.9, "bicubic")
    assert json.loads((tmp_path / "ck" / "manifest.json").read_text())["dataset"]["img_size"] == [16, 24]
    model = wfexplain.load(tmp_path / "ck")
    assert model.info.input_size == (3, 16, 24) and (model.info.crop_pct, model.info.interpolation) == (0.9, "bicubic")
    im = Image.open(next((data / "test" / "top").iterdir()))
    timms = create_transform(input_size=(3, 16, 24), crop_pct=0.9, interpolation="bicubic", mean=IMAGENET[0],
                             std=IMAGENET[1])(im.convert("RGB"))
    assert torch.equal(model.transform(im), timms)
    with torch.no_grad():
        torch.testing.assert_close(model(timms[None]), net(timms[None]), atol=1e-5, rtol=1e-5)
    test = with_preprocessing(wfexplain.data.load_dataset("imagefolder", "test", data, in_chans=3), model.info)
    report = wfexplain.evaluate(model, test)
    assert report["original_accuracy"] == pytest.approx(result["accuracy"])


def test_a_non_square_input_is_refused_for_built_in_backbones(make_model):
    with pytest.raises(ValueError, match="the built-in backbone cnn takes square inputs, not 16x24"):
        wfexplain.wrap(make_model("cnn").backbone, [f"c{i}" for i in range(5)], input_size=(1, 16, 24), mean=[0.5],
                       std=[0.5], arch="cnn")


def test_timm_pretrained_cfg_gives_size_crop_and_filter_together(tmp_path):
    w = tmp_path / "w.safetensors"
    net = timm.create_model("resnet10t", num_classes=3)
    pre = resolve_preprocessing(net, w, FOLDER, 3)
    assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == (176, 0.875, "bicubic")
    assert pre["sources"]["crop_pct"] == pre["sources"]["img_size"] == "the network's pretrained_cfg"
    pre = resolve_preprocessing(net, w, FOLDER, 3, crop_pct="none", interpolation="nearest")  # options win
    assert (pre["crop_pct"], pre["interpolation"]) == (None, "nearest")
    pre = resolve_preprocessing(net, w, FOLDER, 3, img_size=[32, 48], mean=IMAGENET[0], std=IMAGENET[1])
    assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == ((32, 48), None, "bilinear")  # not its resize
    assert not pre["notes"]  # nothing of its pretrained_cfg is used
    for bad, match in (({"crop_pct": 1.5}, r"--crop-pct: crop_pct 1.5 is not a number in \(0, 1\]"),
                       ({"interpolation": "random"}, "--interpolation: interpolation 'random' is not one of"),
                       ({"img_size": [32, 48, 64, 2]}, "--img-size: input size")):
        with pytest.raises(ValueError, match=match):
            resolve_preprocessing(net, w, FOLDER, 3, **bad)


def test_a_timm_hub_config_with_a_non_square_input_and_crop(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet10t", "pretrained_cfg": {
        "input_size": [3, 24, 40], "crop_pct": 0.95, "interpolation": "bicubic", "crop_mode": "squash",
        "mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}}))
    pre = resolve_preprocessing(None, tmp_path / "w.safetensors", FOLDER, 3)
    assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == ((24, 40), 0.95, "bicubic")
    assert set(pre["sources"].values()) == {"config.json"}
    assert any("crop_mode=squash, which wfexplain does not apply" in n for n in pre["notes"])


def test_torchvision_weights_give_their_transforms_parameters():
    weights = torchvision.models.get_weight("ResNet18_Weights.IMAGENET1K_V1")
    for name in ("ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", "DEFAULT"):
        pre = resolve_preprocessing(None, "w.safetensors", FOLDER, 3, arch="torchvision:resnet18", torchvision_weights=name)
        assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == (224, 0.875, "bilinear")
        assert (pre["mean"], pre["std"]) == IMAGENET
        assert set(pre["sources"].values()) == {"ResNet18_Weights.IMAGENET1K_V1"}
    info = DatasetInfo("x", tuple("abc"), 3, pre["img_size"], pre["mean"], pre["std"], pre["interpolation"],
                       pre["crop_pct"])
    for im in (_photo(300, 400), _photo(256, 256), _photo(230, 500)):
        assert torch.equal(build_transform(info)(im), weights.transforms()(im))
    v2 = torchvision.models.get_weight("ResNet50_Weights.IMAGENET1K_V2")  # resize 232, crop 224, bilinear
    pre = resolve_preprocessing(None, "w", FOLDER, 3, arch="torchvision:resnet50", torchvision_weights=str(v2))
    info = DatasetInfo("x", tuple("abc"), 3, 224, pre["mean"], pre["std"], pre["interpolation"], pre["crop_pct"])
    assert torch.equal(build_transform(info)(_photo(300, 400)), v2.transforms()(_photo(300, 400)))
    vit = resolve_preprocessing(None, "w", FOLDER, 3, arch="torchvision:vit_b_16", torchvision_weights="IMAGENET1K_SWAG_E2E_V1")
    assert (vit["img_size"], vit["crop_pct"], vit["interpolation"]) == (384, 1.0, "bicubic")
    with pytest.raises(ValueError, match="the architecture must be torchvision:NAME, not timm:resnet18"):
        resolve_preprocessing(None, "w", FOLDER, 3, arch="timm:resnet18", torchvision_weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="not image classification weights of torchvision:resnet50"):
        resolve_preprocessing(None, "w", FOLDER, 3, arch="torchvision:resnet50",
                              torchvision_weights="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match="--torchvision-weights IMAGENET9K: no such torchvision weights"):
        resolve_preprocessing(None, "w", FOLDER, 3, arch="torchvision:resnet18", torchvision_weights="IMAGENET9K")


@pytest.mark.slow
def test_a_crop_model_scores_as_its_own_transform_says(data, tmp_path):
    """Imported with torchvision weights' preprocessing: the recorded accuracy is the one of their transforms()."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    result = import_checkpoint("torchvision:mobilenet_v3_small", tmp_path / "w.safetensors", "imagefolder",
                               tmp_path / "ck", data_dir=data, in_chans=3, torchvision_weights="IMAGENET1K_V1")
    model = wfexplain.load(tmp_path / "ck")
    assert (model.info.img_size, model.info.crop_pct) == (224, 0.875)
    weights = torchvision.models.get_weight("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    files = sorted((data / "test").glob("*/*.png"))
    classes = sorted(p.name for p in (data / "test").iterdir())
    x = torch.stack([weights.transforms()(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad():
        pred = copy.deepcopy(net)(x).argmax(1)
    truth = torch.tensor([classes.index(p.parent.name) for p in files])
    assert result["accuracy"] == pytest.approx((pred == truth).float().mean().item())
