"""evaluate over forget sets of any size: seeded sampled sets, per-size summaries, the --sets/--samples CLI."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wfexplain.backbones import create_backbone
from wfexplain.checkpoint import read_manifest
from wfexplain.cli import main
from wfexplain.engine import TrainConfig, train_classifier
from wfexplain.evaluation import evaluate, forget_sets
from wfexplain.evaluation.quality import set_sizes
from wfexplain.filtering import FilteredModel

SUMMARY = ("forget_accuracy_mean", "forget_accuracy_max", "retain_accuracy_mean", "original_retain_accuracy_mean")


@pytest.fixture(scope="module")
def model(synthetic, tiny_info):
    """A cnn that has learnt the 5 toy classes, with seeded random gates in [0.6, 1]: sets forget unequally."""
    torch.manual_seed(0)
    backbone = create_backbone("cnn", 5, 1, 16)
    train_classifier(backbone, synthetic(300, 0), TrainConfig(epochs=2, batch_size=50, shift=0.0))
    model = FilteredModel("cnn", tiny_info(), backbone)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(0.6 + 0.4 * torch.rand(a.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def data(synthetic):
    return synthetic(100, 9)


# ---------------------------------------------------------------- which sets


def test_sampled_sets_are_seeded_distinct_sorted_and_valid():
    sets, sampled = forget_sets(10, 3, samples=20, seed=0)
    assert sampled and len(sets) == 20 and len(set(sets)) == 20
    assert all(len(s) == 3 and list(s) == sorted(set(s)) and s[0] >= 0 and s[-1] < 10 for s in sets)
    assert sets == sorted(sets)
    assert forget_sets(10, 3, samples=20, seed=0) == (sets, True)  # same seed, same sets
    assert forget_sets(10, 3, samples=20, seed=1)[0] != sets  # another seed, other sets
    five, _ = forget_sets(10, 5, samples=20, seed=0)
    assert len(set(five)) == 20 and all(len(s) == 5 for s in five)


@pytest.mark.slow
def test_sampled_sets_are_the_same_in_another_process():
    code = "from wfexplain.evaluation import forget_sets; print(forget_sets(10, 3, 20, 7)[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(forget_sets(10, 3, 20, 7)[0])


def test_every_set_when_there_are_at_most_samples():
    assert forget_sets(5, 3, samples=20) == (list(itertools.combinations(range(5), 3)), False)
    assert forget_sets(5, 3, samples=10) == (list(itertools.combinations(range(5), 3)), False)  # C(5,3) = 10
    nine, sampled = forget_sets(5, 3, samples=9)
    assert sampled and len(set(nine)) == 9
    assert forget_sets(6, 2, samples=3) == (list(itertools.combinations(range(6), 2)), False)  # pairs: all
    assert len(forget_sets(12, 4, samples=20)[0]) == 20 < math.comb(12, 4)


# ---------------------------------------------------------------- the report


def test_size_summary_matches_a_hand_computation(model, data):
    report = evaluate(model, data, sets=(1, 3), samples=4, seed=3)
    entry = report["sets"]["3"]
    assert entry["count"] == 4 and entry["sampled"] is True
    assert entry["members"] == [list(s) for s in forget_sets(5, 3, 4, 3)[0]]
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.as_tensor(data.targets)
    with torch.no_grad():
        original = model(x).argmax(1)
        rows = []
        for s in entry["members"]:
            p = model(x, forget=s).argmax(1)
            inside = torch.isin(y, torch.tensor(s))
            rows.append(((p == y)[inside].float().mean().item(), (p == y)[~inside].float().mean().item(),
                         (original == y)[~inside].float().mean().item()))
    fa, ra, ra0 = zip(*rows, strict=True)
    expected = {"forget_accuracy_mean": sum(fa) / 4, "forget_accuracy_max": max(fa),
                "retain_accuracy_mean": sum(ra) / 4, "original_retain_accuracy_mean": sum(ra0) / 4}
    assert {k: entry[k] for k in SUMMARY} == pytest.approx(expected, abs=1e-6)
    assert entry["worst"] == entry["members"][fa.index(max(fa))]
    assert len(set(fa)) > 1, "the gates must forget the sets unequally for 'worst' to mean something"
    assert "pairs" not in report and set(report["sets"]) == {"1", "3"}


def test_every_size_is_reported_and_worst_is_the_max(model, data):
    report = evaluate(model, data, sets=(1, 2, 3, 4), samples=20)
    assert list(report["sets"]) == ["1", "2", "3", "4"]
    for size, count in (("1", 5), ("2", 10), ("3", 10), ("4", 5)):
        entry = report["sets"][size]
        assert entry["count"] == count and entry["sampled"] is False
        assert len(entry["worst"]) == int(size)
    assert {k: report["sets"]["1"][k] for k in SUMMARY} == report["single"]
    assert {k: report["sets"]["2"][k] for k in SUMMARY} == report["pairs"]
    assert "members" not in report["sets"]["2"] and len(report["sets"]["4"]["members"]) == 5
    # the worst single class is the row of the forget matrix with the highest accuracy on its own class
    matrix = torch.tensor(report["forget_matrix"])
    assert report["sets"]["1"]["worst"] == [int(matrix.diagonal().argmax())]
    assert matrix.diagonal().max().item() == pytest.approx(report["single"]["forget_accuracy_max"])


def test_pairs_flag_equals_sets_1_2_and_default_is_single(model, data):
    a, b = evaluate(model, data, pairs=True), evaluate(model, data, sets=(1, 2))
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert evaluate(model, data, sets=(2,))["pairs"] == a["pairs"]  # 1 is always evaluated
    c = evaluate(model, data, pairs=True, sets=(3,))
    assert list(c["sets"]) == ["1", "2", "3"] and c["pairs"] == a["pairs"]
    single = evaluate(model, data)
    assert list(single["sets"]) == ["1"] and "pairs" not in single and single["single"] == a["single"]


def test_progress_counts_every_set_and_the_original(model, data):
    calls = []
    evaluate(model, data, sets=(3,), samples=4, progress=lambda done, total, m: calls.append((done, total)))
    assert calls == [(i, 1 + 5 + 4) for i in range(1, 11)]


@pytest.mark.parametrize("sizes", [(5,), (0,), (1, 7), (-1,), (2.0,), (True,)])
def test_invalid_sizes_are_refused(model, data, sizes):
    with pytest.raises(ValueError, match=r"1\.\.4"):
        evaluate(model, data, sets=sizes)


# ---------------------------------------------------------------- the CLI


def make_five_class_folder(root: Path, n_train: int = 12, n_test: int = 6) -> None:
    """An image folder of 5 learnable classes (a bright band at a class-specific row), 16x16 grayscale."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(5):
            folder = root / split / f"band{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                img = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
                img[3 * c: 3 * c + 2] = 230
                Image.fromarray(img, "L").save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    make_five_class_folder(root / "data")
    path = root / "ckpt"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(root / "data"), "--img-size", "16",
                 "--out", str(path), "--epochs", "1", "--batch-size", "16"]) == 0
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_sets_json_and_record(ckpt, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--sets", "1", "3", "--samples", "4", "--json",
                 "--record"]) == 0
    report = json.loads(capsys.readouterr().out)
    three = report["sets"]["3"]
    assert three["count"] == 4 and three["sampled"] is True and len(three["members"]) == 4
    assert three["members"] == [list(s) for s in forget_sets(5, 3, 4, 0)[0]]
    assert three["worst"] in three["members"] and "pairs" not in report
    recorded = json.loads((ckpt / "manifest.json").read_text())["metrics"]["evaluation"]
    assert recorded["sets"] == report["sets"]
    assert set_sizes(read_manifest(ckpt))[1] == (1, 3)


def test_cli_prints_one_line_per_size(ckpt, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--sets", "3", "--pairs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sizes = [line.split(":")[0].strip() for line in lines[1:]]
    assert sizes == ["size 1", "size 2", "size 3"]
    assert "all 5 sets" in lines[1] and "all 10 sets" in lines[2] and "worst {band" in lines[3]


@pytest.mark.parametrize(("argv", "option"), [
    (["--sets", "5"], "--sets"), (["--sets", "1", "9"], "--sets"), (["--sets", "0"], "--sets"),
    (["--sets", "x"], "--sets"), (["--sets"], "--sets"), (["--samples", "0"], "--samples"),
])
def test_cli_bad_sets_exit_2_naming_the_option(ckpt, capsys, argv, option):
    before = snapshot(ckpt)
    with pytest.raises(SystemExit) as e:  # argparse's own exit for per-option checks
        raise SystemExit(main(["evaluate", "--checkpoint", str(ckpt), *argv]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err, err
    if argv[:2] in (["--sets", "5"], ["--sets", "1"]):
        assert "1..4" in err, err
    assert snapshot(ckpt) == before


def test_set_sizes_reads_recorded_sets():
    class M:  # the two manifest fields set_sizes reads
        def __init__(self, evaluation):
            self.unlearn_config = {"max_set_size": 2}
            self.metrics = {"evaluation": evaluation} if evaluation is not None else {}

    assert set_sizes(M(None)) == (2, ())
    assert set_sizes(M({"single": {}})) == (2, (1,))
    assert set_sizes(M({"single": {}, "pairs": {}})) == (2, (1, 2))
    assert set_sizes(M({"single": {}, "sets": {"1": {}, "5": {}, "3": {}}})) == (2, (1, 3, 5))
    assert set_sizes(M({"single": {}, "sets": {"x": {}, "0": {}}})) == (2, (1,))
