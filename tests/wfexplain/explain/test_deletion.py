"""Deletion curves: do the memory rankings switch off what a class needs (wfexplain.explain.deletion, `explanations`)?"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wfexplain import wrap
from wfexplain.checkpoint import load
from wfexplain.cli import main
from wfexplain.data import subset_tensors
from wfexplain.explain import deletion as D
from wfexplain.explain.analysis import component_activations
from wfexplain.explain.deletion_report import nearest_class
from wfexplain.hooks import count
from wfexplain.splits import checkpoint_split, checkpoint_train_split

# Rows: classes 0..2; channel c carries class c; channel 3 is suppressed by the filters of classes 0 and 2 alike.
ALPHA = torch.tensor([[0.0, 1.0, 1.0, 0.2],
                      [1.0, 0.0, 1.0, 1.0],
                      [1.0, 1.0, 0.0, 0.3]])


def bars(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images per class of the bar recipe (a bright bar at rows 2+5c..4+5c, 16x16), normalised by 0.5/0.5."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n)
    x = rng.integers(0, 80, (len(y), 16, 16)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 2 + 5 * c: 5 + 5 * c] = 230
    return (torch.as_tensor(x)[:, None] / 255 - 0.5) / 0.5, torch.as_tensor(y)


class Wired(nn.Module):
    """Hand-wired: channel c (c < 3) responds to class c's bar only, channel 3 to nothing in particular;
    logit c = 5 x channel c, biases -1, -1, 0 (a silent network says class 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 16)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for c in range(3):
                self.conv.weight[c, 0, 2 + 5 * c: 5 + 5 * c] = 1 / 48
            self.conv.weight[3, 0, 15] = -1 / 16
            self.head.weight.copy_(torch.eye(3, 4) * 5)
            self.head.bias.copy_(torch.tensor([-1.0, -1.0, 0.0]))

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def wired():
    model = wrap(Wired().eval(), ["top", "middle", "bottom"], input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    assert [(s.path, s.kind, s.size) for s in model.sites] == [("bn", "channels", 4)]
    with torch.no_grad():
        model.alphas["bn"].copy_(ALPHA)
    return model


def test_counts_and_area_by_hand():
    assert D.n_off(30, 0.1) == 3 and D.n_off(3, 0.01) == 1 and D.n_off(4, 1.0) == 4 and D.n_off(256, 0.2) == 52
    assert D.auc([0.1, 0.2], [0.2, 0.4]) == pytest.approx(0.3)
    assert D.auc([0.1, 0.2, 0.4], [0.0, 0.2, 0.2]) == pytest.approx((0.01 + 0.04) / 0.3)
    assert D.auc([0.5], [0.7]) == 0.7
    assert D.order(torch.tensor([0.1, float("nan"), 0.5, 0.1])).tolist() == [2, 0, 3, 1]
    gates = D.deletion_gates({"a": 4}, {"a": torch.tensor([2, 0, 3, 1])}, 0.5)
    assert gates["a"].tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="fractions"):
        D.DeletionConfig(fractions=(0.0, 0.1))
    assert D.DeletionConfig(fractions=(0.2, 0.1, 0.2)).fractions == (0.1, 0.2)


def test_shared_components_and_nearest_class_by_hand():
    parts = D.shared_components({"bn": ALPHA}, [0])["bn"]
    assert parts["off"].tolist() == [True, False, False, True]
    assert parts["shared"].tolist() == [False, False, False, True]  # class 2 switches channel 3 off too
    assert parts["unique"].tolist() == [True, False, False, False]
    both = D.shared_components({"bn": ALPHA}, [0, 2])["bn"]
    assert both["off"].tolist() == [True, False, True, True] and not both["shared"].any()
    near = nearest_class({"bn": ALPHA})
    assert near["nearest"][0] == 2 and near["nearest"][2] == 0  # they share channel 3


def test_the_memory_ranking_switches_off_what_the_class_needs_first(wired):
    x, y = bars(10, seed=1)
    xt, yt = bars(12, seed=2)
    out = D.measure(wired, x, y, xt, yt, classes=[0], sets=[[0, 1]], fractions=(0.25,), draws=8, seed=3)
    assert out["original_accuracy"] == 1.0 and out["components_off"] == {"bn": [1]}
    top = out["classes"]["0"]
    for ranking in ("memory", "activation", "grad_x_activation"):  # all three find channel 0
        assert top["rankings"][ranking]["curve"]["class_accuracy"] == [0.0], ranking
        assert top["rankings"][ranking]["auc"] == {"class_drop": 1.0, "others_drop": 0.0, "selectivity": 1.0}
    rand = top["rankings"]["random"]["auc"]
    assert rand["selectivity"] < 1.0 and rand["selectivity_std"] > 0  # some draws miss channel 0
    assert out["summary"]["memory_beats_random"] == 1
    assert top["agreement"]["activation"]["top_overlap"] == 1.0
    pair = out["sets"]["0-1"]
    assert pair["rankings"]["memory"]["curve"]["class_accuracy"] == [0.5]  # one of the set's two channels at 25%
    assert pair["components"] == {"bn": {"off": 3, "shared": 1, "unique": 2}}
    assert pair["deleted"]["unique"] == {"accuracy": 0.0, "others_accuracy": 1.0, "components": 2}
    json.loads(json.dumps(out))  # JSON-ready


def test_statistics_match_the_component_activations_and_a_finite_difference(wired):
    xt, yt = bars(6)
    stats = D.component_statistics(wired, xt, yt, batch_size=5)
    for k in range(4):
        acts = component_activations(wired, xt[yt == 1], "bn", k)
        assert stats.mean_activation["bn"][1, k] == pytest.approx(float(acts.mean()), abs=1e-6)
    # dz_c/dg_k at g = 1, by a finite difference on the mean logit of class c's images
    for c in range(3):
        base = wired.run_gated(xt[yt == c], None)[:, c].mean()
        gate = torch.ones(1, 4)
        gate[0, c] = 0.9
        moved = wired.run_gated(xt[yt == c], {"bn": gate})[:, c].mean()
        assert stats.taylor["bn"][c, c] == pytest.approx(float(base - moved) / 0.1, rel=1e-4)
    assert stats.counts.tolist() == [6.0, 6.0, 6.0]


@pytest.fixture
def bars_model(trained_bars):
    model = load(trained_bars)
    manifest = model.checkpoint_manifest()
    x, y, _ = subset_tensors(checkpoint_split(manifest, "test"), None)
    xt, yt, _ = subset_tensors(checkpoint_train_split(manifest), 30)
    with torch.no_grad():
        for a in model.alphas.values():
            a.uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    return model, x, y, xt, yt


def test_random_draws_are_seeded_and_the_model_is_left_as_it_was(bars_model, monkeypatch):
    model, x, y, xt, yt = bars_model
    deleted = []
    predict = D.predict

    def recording(m, images, gates, batch_size=256):
        deleted.append(None if gates is None else {p: g.clone() for p, g in gates.items()})
        return predict(m, images, gates, batch_size)

    monkeypatch.setattr(D, "predict", recording)
    hooks, alphas = count(model.backbone), {k: v.clone() for k, v in model.memory.items()}
    with torch.no_grad():
        before = model(x), model(x, forget=[1])
    seen = []
    kw = {"classes": [1], "fractions": (0.1, 0.3), "draws": 2}
    runs = []
    for seed in (4, 4, 5):
        deleted.clear()
        one = D.measure(model, x, y, xt, yt, seed=seed, progress=lambda done, total, m: seen.append((done, total)), **kw)
        runs.append((one, deleted[1:5]))  # after the original network: draw 0 and 1 at each fraction
    assert runs[0][0]["classes"] == runs[1][0]["classes"]
    assert all(torch.equal(a[p], b[p]) for a, b in zip(runs[0][1], runs[1][1], strict=True) for p in a)
    assert not all(torch.equal(a[p], b[p]) for a, b in zip(runs[0][1], runs[2][1], strict=True) for p in a)
    assert len(deleted) == seen[-1][0] == seen[-1][1] == 1 + 2 * (2 + 3)
    assert count(model.backbone) == hooks
    assert all(torch.equal(v, alphas[k]) for k, v in model.memory.items())
    with torch.no_grad():
        after = model(x), model(x, forget=[1])
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_baked_path_equals_the_gated_hooks(bars_model):
    model, x, *_ = bars_model
    sizes = {s.path: s.size for s in model.sites}
    orders = {p: torch.randperm(k, generator=torch.Generator().manual_seed(1)) for p, k in sizes.items()}
    gates = D.deletion_gates(sizes, orders, 0.3)
    with torch.no_grad():
        hooked = model.run_gated(x, {p: g[None] for p, g in gates.items()}).argmax(1)
    assert torch.equal(D.predict(model, x, gates), hooked)


OPTIONS = ["--fractions", "0.1", "0.3", "--draws", "2", "--train-limit", "30"]


def test_cli_json_and_record(trained_checkpoint, capsys):
    ck = str(trained_checkpoint)
    assert main(["explanations", "--checkpoint", ck, *OPTIONS, "--forget-set", "0", "2", "--json", "--record", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_train_images"] == 30 and report["num_images"] == 24 and report["fractions"] == [0.1, 0.3]
    assert set(report["classes"]) == {"0", "1", "2"} and set(report["sets"]) == {"0-2"}
    assert report["classes"]["2"]["rankings"]["memory"]["curve"]["class_drop"]
    recorded = json.loads((Path(ck) / "manifest.json").read_text())["metrics"]["explanations"]
    assert recorded["summary"] == report["summary"] and recorded["train_limit"] == 30
    assert "curve" not in recorded["classes"]["0"]["rankings"]["memory"]
    assert main(["explanations", "--checkpoint", ck, *OPTIONS, "--classes", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "selectivity" in out and "middle" in out
    # settings are chosen on the validation images (held out of the backbone's training), recorded apart from test's
    assert main(["explanations", "--checkpoint", ck, *OPTIONS, "--split", "validation", "--json", "--record", "-q"]) == 0
    val = json.loads(capsys.readouterr().out)
    manifest = json.loads((Path(ck) / "manifest.json").read_text())
    assert val["split"] == "validation" and val["num_images"] == manifest["validation"]["images"]
    assert manifest["metrics"]["validation_explanations"]["summary"] == val["summary"]
    assert manifest["metrics"]["explanations"]["summary"] == report["summary"]  # the test split's record kept


@pytest.mark.parametrize("argv, option", [
    (["--fractions", "0"], "--fractions"),
    (["--fractions", "1.5"], "--fractions"),
    (["--classes", "3"], "--classes"),
    (["--forget-set", "0", "1", "2"], "--forget-set"),
    (["--forget-set", "4"], "--forget-set"),
    (["--limit", "2"], "--limit"),
    (["--train-limit", "0"], "--train-limit"),
    (["--draws", "0"], "--draws"),
    (["--threshold", "1"], "--threshold"),
])
def test_cli_bad_options_exit_2(trained_bars, argv, option, capsys):
    before = (trained_bars / "manifest.json").read_bytes()
    with pytest.raises(SystemExit) as e:  # argparse's own refusals
        code = main(["explanations", "--checkpoint", str(trained_bars), *argv])
        raise SystemExit(code)
    assert e.value.code == 2
    assert option in capsys.readouterr().err
    assert (trained_bars / "manifest.json").read_bytes() == before
