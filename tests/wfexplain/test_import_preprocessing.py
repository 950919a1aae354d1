"""`wfexplain import` never guesses the preprocessing: options, a config beside the weights, the network's own
(timm pretrained_cfg) or the dataset's (not imagefolder's), else a one-line error naming what is missing."""

import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import wfexplain
from wfexplain.cli import main
from wfexplain.data import DatasetInfo
from wfexplain.importing import import_checkpoint, resolve_preprocessing

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR = DatasetInfo("cifar10", tuple("abc"), 3, 32, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
FOLDER = DatasetInfo("imagefolder", tuple("abc"), 3, 64, *IMAGENET)  # the loader's placeholders: never a source


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_bar_folder):
    root = tmp_path_factory.mktemp("pre")
    make_bar_folder(root / "data", n_train=2, n_test=2)
    torch.manual_seed(0)
    for name, net in (("mobilenet", torchvision.models.mobilenet_v3_small(num_classes=3)),
                      ("resnet10t", timm.create_model("resnet10t", num_classes=3))):
        (root / name).mkdir()
        save_file({k: v.contiguous() for k, v in net.eval().state_dict().items()}, str(root / name / "w.safetensors"))
    return root


def _argv(setup, arch: str, weights: str, out: str, *extra: str) -> list[str]:
    return ["import", "--arch", arch, "--weights", str(setup / weights / "w.safetensors"), "--dataset", "imagefolder",
            "--data-dir", str(setup / "data"), "--in-chans", "3", "--out", str(setup / out), *extra]


def test_import_without_preprocessing_fails_naming_what_is_missing(setup, capsys):
    assert main(_argv(setup, "torchvision:mobilenet_v3_small", "mobilenet", "none")) == 1  # the library refuses
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("error: import needs --img-size, --mean and --std (the model records no "
                                    "preprocessing, nor does a config.json or preprocessor_config.json beside the "
                                    "weights, and imagefolder has none)")
    assert "Traceback" not in err
    assert main(_argv(setup, "torchvision:mobilenet_v3_small", "mobilenet", "none", "--img-size", "32")) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: import needs --mean and --std (")
    assert not (setup / "none").exists()


def test_import_uses_the_timm_pretrained_cfg(setup):
    result = import_checkpoint("timm:resnet10t", setup / "resnet10t" / "w.safetensors", "imagefolder", setup / "cfg",
                               data_dir=setup / "data", in_chans=3)
    pre = result["preprocessing"]
    assert set(pre["sources"].values()) == {"the network's pretrained_cfg"}
    assert (pre["crop_pct"], pre["interpolation"]) == (0.875, "bicubic")  # recorded and applied, no longer a note
    assert any("--crop-pct and --interpolation if these weights were trained otherwise" in n for n in pre["notes"])
    info = wfexplain.load(setup / "cfg").info
    assert (info.img_size, info.mean, info.std, info.crop_pct, info.interpolation) == (176, *IMAGENET, 0.875, "bicubic")


def test_a_config_beside_the_weights_is_used_and_options_win(setup, capsys):
    (setup / "mobilenet" / "config.json").write_text(json.dumps({  # as timm writes them on the Hugging Face hub
        "architecture": "mobilenetv3_small_100", "num_classes": 3,
        "pretrained_cfg": {"input_size": [3, 48, 48], "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2],
                           "interpolation": "bilinear", "crop_pct": 1.0}}))
    try:
        assert main(_argv(setup, "torchvision:mobilenet_v3_small", "mobilenet", "hub", "--std", "0.3", "0.3", "0.3")) == 0
        assert "preprocessing: 48 px (config.json), mean [0.4, 0.4, 0.4] (config.json), std [0.3, 0.3, 0.3] (given)" \
            in capsys.readouterr().err
        info = wfexplain.load(setup / "hub").info
        assert (info.img_size, info.mean, info.std) == (48, (0.4,) * 3, (0.3,) * 3)
    finally:
        (setup / "mobilenet" / "config.json").unlink()


def test_a_hugging_face_preprocessor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_center_crop": True, "crop_size": {"height": 40, "width": 40}, "size": {"shortest_edge": 46},
        "image_mean": [0.5, 0.5, 0.5], "image_std": 0.25, "resample": 3}))
    pre = resolve_preprocessing(None, tmp_path / "w.safetensors", FOLDER, 3)
    assert (pre["img_size"], pre["mean"], pre["std"]) == (40, (0.5,) * 3, (0.25,) * 3)
    assert (pre["crop_pct"], pre["interpolation"]) == (40 / 46, "bicubic")  # shorter side to 46, centre 40x40 cut
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 40, "width": 30}, "image_mean": 0.5,
                                                                    "image_std": 0.25}))
    pre = resolve_preprocessing(None, tmp_path / "w.safetensors", FOLDER, 3)
    assert (pre["img_size"], pre["crop_pct"], pre["interpolation"]) == ((40, 30), None, "bilinear")
    assert pre["sources"] == dict.fromkeys(("img_size", "mean", "std"), "preprocessor_config.json")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 40, "width": 3000}}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: input size \[40, 3000\] is not a side or a "
                                         r"\(height, width\) of 4 to 1024 px"):
        resolve_preprocessing(None, tmp_path / "w.safetensors", FOLDER, 3)


def test_the_dataset_is_a_source_when_the_network_records_nothing_for_its_channels(tmp_path):
    w = tmp_path / "w.safetensors"
    assert resolve_preprocessing(torchvision.models.mobilenet_v3_small(num_classes=3), w, CIFAR, 3)["sources"] \
        == {"img_size": "cifar10", "mean": "cifar10", "std": "cifar10"}
    gray = DatasetInfo("fashion-mnist", tuple("abc"), 1, 28, (0.286,), (0.353,))
    pre = resolve_preprocessing(timm.create_model("resnet10t", num_classes=3, in_chans=1), w, gray, 1)
    assert (pre["img_size"], pre["mean"]) == (28, (0.286,))  # its pretrained_cfg is for 3 channels
    with pytest.raises(ValueError, match=r"import needs --img-size, --mean and --std: the network's own "
                                         r"configuration .* and cifar10's preprocessing .* disagree"):
        resolve_preprocessing(timm.create_model("resnet10t", num_classes=3), w, CIFAR, 3)
    pre = resolve_preprocessing(timm.create_model("resnet10t", num_classes=3), w, CIFAR, 3, img_size=32,
                                mean=CIFAR.mean, std=CIFAR.std)
    assert set(pre["sources"].values()) == {"given"} and not pre["notes"]


def test_the_cli_takes_a_non_square_size_a_crop_and_a_filter(setup, capsys):
    assert main(_argv(setup, "timm:resnet10t", "resnet10t", "cli", "--img-size", "24", "32", "--crop-pct", "0.9",
                      "--interpolation", "bicubic", "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.2", "0.2")) == 0
    assert "preprocessing: 24x32 px (given)" in capsys.readouterr().err
    info = wfexplain.load(setup / "cli").info
    assert (info.input_hw, info.crop_pct, info.interpolation) == ((24, 32), 0.9, "bicubic")
    assert main(_argv(setup, "timm:resnet10t", "resnet10t", "bad", "--img-size", "16", "16", "16")) == 2
    for bad in (["--crop-pct", "1.5"], ["--interpolation", "cubic"], ["--img-size", "2"]):
        with pytest.raises(SystemExit) as e:  # argparse's own refusal: usage, exit 2
            main(_argv(setup, "timm:resnet10t", "resnet10t", "bad", *bad))
        assert e.value.code == 2
    assert not (setup / "bad").exists()
