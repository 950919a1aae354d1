"""A model trained elsewhere: plain PyTorch training of a timm model on an RGB image folder with its own
normalisation, then `wfexplain import`, evaluate in a new process, unlearn, evaluate, and every dashboard page."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import wfexplain
from tests import ROOT
from wfexplain.cli import main

pytestmark = pytest.mark.slow  # end to end: plain PyTorch training, new processes, every page

MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)  # deliberately not ImageNet's nor the folder default
COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 50, 40)}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def make_rgb_folder(root: Path, n_train: int = 24, n_test: int = 10) -> None:
    """Three colour classes with noise and a random bright square: learnable, not trivial."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(n):
                img = np.clip(rng.normal(colour, 60, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                y, x = rng.integers(0, 24, size=2)
                img[y:y + 8, x:x + 8] = 255
                Image.fromarray(img, "RGB").save(folder / f"{k}.png")


def user_transform():
    return transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


@torch.no_grad()
def plain_accuracy(net, folder: Path) -> float:
    ds = datasets.ImageFolder(str(folder), transform=user_transform())
    correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in DataLoader(ds, batch_size=64))
    return correct / len(ds)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    data = root / "data"
    make_rgb_folder(data)
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=3)
    train = DataLoader(datasets.ImageFolder(str(data / "train"), transform=user_transform()), batch_size=16, shuffle=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(4):
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    acc = plain_accuracy(net, data / "test")
    weights = root / "resnet10t.pth"
    torch.save({"epoch": 4, "state_dict": net.state_dict()}, weights)  # a typical training checkpoint
    save_file(net.state_dict(), str(root / "resnet10t.safetensors"))
    ckpt = root / "ck"
    argv = ["import", "--arch", "timm:resnet10t", "--weights", str(weights), "--dataset", "imagefolder",
            "--data-dir", str(data), "--img-size", "32", "--in-chans", "3", "--mean", *map(str, MEAN),
            "--std", *map(str, STD), "--out", str(ckpt), "--retrain-config", '{"epochs": 4, "batch_size": 16}']
    assert main(argv) == 0
    return {"root": root, "data": data, "ckpt": ckpt, "acc": acc, "net": net}


def test_import_records_how_to_rebuild_and_feed_the_model(imported):
    manifest = wfexplain.load(imported["ckpt"]).manifest
    assert manifest.backbone == "timm:resnet10t" and manifest.heads == ["fc"]
    assert manifest.dataset.mean == MEAN and manifest.dataset.std == STD and manifest.dataset.img_size == 32
    assert manifest.data_dir == str(imported["data"].resolve())
    assert manifest.metrics["original_accuracy"] == pytest.approx(imported["acc"])
    assert {s["kind"] for s in manifest.sites} == {"channels"}


def test_evaluate_in_a_new_process_matches_plain_pytorch(imported):
    """No --data-dir: the checkpoint's own directory and normalisation are used."""
    out = subprocess.run([sys.executable, "-m", "wfexplain", "evaluate", "--checkpoint", str(imported["ckpt"]),
                          "--json"], capture_output=True, text=True, env=ENV, cwd=imported["root"], check=True).stdout
    report = json.loads(out)
    assert report["backbone"] == "timm:resnet10t" and report["num_images"] == 30
    assert report["original_accuracy"] == pytest.approx(imported["acc"], abs=1e-6)
    assert imported["acc"] > 0.6, "the plain PyTorch model should have learnt the colours"


def test_import_refuses_mismatched_weights_and_existing_out(imported, capsys):
    other = imported["root"] / "other.safetensors"
    state = dict(imported["net"].state_dict())
    state["fc.weight"] = torch.zeros(7, 512)
    save_file(state, str(other))
    argv = ["import", "--arch", "timm:resnet10t", "--weights", str(other), "--dataset", "imagefolder",
            "--data-dir", str(imported["data"]), "--img-size", "32", "--out", str(imported["root"] / "x")]
    assert main(argv) == 1  # a runtime failure: the weights do not fit
    assert "fc.weight: expected (3, 512), found (7, 512)" in capsys.readouterr().err
    argv[argv.index("--weights") + 1] = str(imported["root"] / "resnet10t.safetensors")
    argv[-1] = str(imported["ckpt"])
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err


def test_unlearn_evaluate_and_every_page(imported, monkeypatch, capsys):
    ck = imported["root"] / "unlearned"
    assert main(["unlearn", "--checkpoint", str(imported["ckpt"]), "--out", str(ck), "--steps", "60",
                 "--batch-size", "16", "--lr", "0.05", "--eval-limit", "30"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)["single"]
    assert single["forget_accuracy_mean"] < 0.5 * imported["acc"]
    baked = wfexplain.bake(wfexplain.load(ck), [0])
    assert type(baked).__name__ == type(imported["net"]).__name__ and set(baked.state_dict()) == set(
        imported["net"].state_dict())

    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(ck))
    at = AppTest.from_file(str(ROOT / "wfexplain_dashboard" / "app.py"), default_timeout=180)
    at.query_params["ckpt"] = f"{ck.parent.name}/{ck.name}"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["_view"].model.backbone_name == "timm:resnet10t"
    for page in ("views/forget.py", "views/memory.py", "views/explain.py", "views/compare.py", "views/export.py",
                 "views/models.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_python_api_on_any_map_style_dataset(imported):
    """wfexplain.wrap / unlearn / evaluate / save / load on a plain list of (tensor, label) pairs."""
    net = imported["net"]
    tf = user_transform()
    folder = datasets.ImageFolder(str(imported["data"] / "train"))
    train = [(tf(img.convert("RGB")), label) for img, label in folder]
    model = wfexplain.wrap(net, list(COLOURS), input_size=(3, 32, 32), mean=MEAN, std=STD, arch="timm:resnet10t")
    result = wfexplain.unlearn(model, train, wfexplain.UnlearnConfig(steps=20, batch_size=16, lr=0.05))
    assert result["steps"] == 20 and not result["cancelled"]
    report = wfexplain.evaluate(model, train)
    assert set(report["single"]) >= {"forget_accuracy_mean", "retain_accuracy_mean"}
    wfexplain.save(model, imported["root"] / "api-ck")
    again = wfexplain.load(imported["root"] / "api-ck")
    x = torch.stack([train[0][0], train[1][0]])
    with torch.no_grad():
        torch.testing.assert_close(again(x, forget=[1]), model(x, forget=[1]))
    with pytest.raises(ValueError, match="already carries the gates of another FilteredModel"):
        wfexplain.wrap(net, list(COLOURS), input_size=(3, 32, 32), mean=MEAN, std=STD)
    unnamed = wfexplain.wrap(wfexplain.ungated_copy(net), list(COLOURS), input_size=(3, 32, 32), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="say how to rebuild"):
        wfexplain.save(unnamed, imported["root"] / "no-arch")
    with pytest.raises(ValueError, match="does not rebuild this network"):
        wfexplain.save(unnamed, imported["root"] / "wrong-arch", arch="timm:resnet18")
    assert not (imported["root"] / "no-arch").exists() and not (imported["root"] / "wrong-arch").exists()


def test_dashboard_data_directory_when_the_recorded_one_moved(imported, monkeypatch, tmp_path):
    """The recorded data directory is gone: a friendly error, then the sidebar picks one the server offers."""
    import shutil

    moved = tmp_path / "offered" / "colours"
    shutil.copytree(imported["data"], moved)
    ck = tmp_path / "cks" / "moved"
    argv = ["import", "--arch", "timm:resnet10t", "--weights", str(imported["root"] / "resnet10t.safetensors"),
            "--dataset", "imagefolder", "--data-dir", str(tmp_path / "gone"), "--img-size", "32", "--mean",
            *map(str, MEAN), "--std", *map(str, STD), "--out", str(ck)]
    shutil.copytree(imported["data"], tmp_path / "gone")
    assert main(argv) == 0
    shutil.rmtree(tmp_path / "gone")
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(ck))
    at = AppTest.from_file(str(ROOT / "wfexplain_dashboard" / "app.py"), default_timeout=180)
    at.query_params["ckpt"] = "cks/moved"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (err,) = [e.value for e in at.error]
    assert "cannot be read" in err and str(tmp_path) not in err and "WFEXPLAIN_DATA_DIRS" in err
    monkeypatch.setenv("WFEXPLAIN_DATA_DIRS", str(tmp_path / "offered"))
    at = AppTest.from_file(str(ROOT / "wfexplain_dashboard" / "app.py"), default_timeout=180)
    at.query_params["ckpt"] = "cks/moved"
    at.run()
    (pick,) = [s for s in at.selectbox if s.label == "Test data"]
    pick.select("offered/colours").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert any(m.label.startswith("Forget accuracy") for m in at.metric)


def test_benchmark_and_export_work_on_an_imported_model(imported, tmp_path, capsys):
    """Retrain rebuilds the same architecture (timm resnet10t) and trains it with the recorded recipe."""
    ck = tmp_path / "bench-ck"
    assert main(["unlearn", "--checkpoint", str(imported["ckpt"]), "--out", str(ck), "--steps", "30",
                 "--batch-size", "16", "--lr", "0.05", "--eval-limit", "30"]) == 0
    assert main(["benchmark", "--checkpoint", str(ck), "--forget", "1", "--seeds", "1", "--methods", "wf", "finetune",
                 "--train-limit", "30", "--wf-round", "checkpoint", "--no-tune", "--json"]) == 0  # tuning: test_benchmark
    bench = json.loads(capsys.readouterr().out)
    assert bench["backbone"] == "timm:resnet10t"
    assert bench["methods"]["retrain"]["forget_accuracy_test"]["mean"] == 0.0  # never saw class 1
    oracle = wfexplain.load(ck / "retrain" / "forget-1-seed0")
    assert type(oracle.backbone).__name__ == type(imported["net"]).__name__
    out = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(ck), "--out", str(out), "--forget", "1", "--no-metrics",
                 "--formats", "png"]) == 0
    assert (out / "baked_forget_1.safetensors").is_file() and (out / "memory_heatmaps.png").is_file()
