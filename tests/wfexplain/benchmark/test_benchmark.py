"""The evaluation suite end to end on a tiny generated image folder: oracle, WF, baselines, metrics, files."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from wfexplain import cli, load
from wfexplain.benchmark.catalogue import METRICS, method_keys
from wfexplain.benchmark.reports import benchmark_table
from wfexplain.benchmark.runner import BenchmarkConfig, run_benchmark
from wfexplain.benchmark.scoring import SCORED
from wfexplain.checkpoint import CheckpointError
from wfexplain.pipeline import oracle_path, retrain
from wfexplain.splits import checkpoint_train_split

TINY = {"steps": 20, "batch_size": 16, "forget_batch_size": 8}
OVERRIDES = {"finetune": {"steps": 20, "batch_size": 16}, "neggrad_plus": TINY, "random_labels": TINY, "salun": TINY,
             "ssd": {"train_images": 72}, "scrub": {**TINY, "max_steps": 5}, "l1_sparse": {"steps": 20, "batch_size": 16},
             "wf": {"batch_size": 16}, "wf_removed": {"steps": 10, "batch_size": 16}}
FAST = {"limit": None, "train_limit": 60, "seeds": 1, "tune": False, "overrides": OVERRIDES}
METHODS = tuple(m for m in method_keys() if m != "original")


def run(path, forget=None, *, progress=None, should_stop=None, **kw):
    """run_benchmark with keyword configuration (lists become the config's tuples)."""
    if forget is not None:
        kw["forget_classes"] = forget
    for key in ("forget_classes", "methods"):
        if kw.get(key) is not None:
            kw[key] = tuple(kw[key])
    if kw.get("out") is not None:
        kw["out"] = str(kw["out"])
    return run_benchmark(path, BenchmarkConfig(**kw), progress, should_stop)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, trained_bars, bar_data):
    """The shared tiny CNN (trained_bars), copied and unlearned; its data folder."""
    path = Path(shutil.copytree(trained_bars, tmp_path_factory.mktemp("bench") / "ckpt"))
    assert cli.main(["unlearn", "--checkpoint", str(path), "--data-dir", str(bar_data), "--steps", "40", "--batch-size",
                     "16", "--lr", "0.05"]) == 0
    return path, bar_data


def test_retrain_oracle_never_sees_the_class_and_is_stored(ckpt):
    path, data = ckpt
    r = retrain(path, [1], seed=0, data_dir=str(data))
    assert r["path"] == oracle_path(path, [1], 0) and (r["path"] / "manifest.json").is_file()
    oracle = load(r["path"])
    base = load(path).manifest
    assert oracle.manifest.retrain_of == {"model_sha256": base.files["model.safetensors"], "forget": [1], "seed": 0}
    seen = checkpoint_train_split(base, str(data))  # the backbone's own training images (validation held out)
    assert oracle.manifest.train_images == int((seen.targets != 1).sum()) == 65 - int((seen.targets == 1).sum())
    assert oracle.manifest.train_config["epochs"] == base.train_config["epochs"]  # same recipe


def test_an_oracle_of_another_checkpoint_is_never_reused(ckpt, tmp_path, make_model):
    """An oracle copied (or left behind) under another checkpoint is ignored with a warning, then replaced."""
    import shutil

    from wfexplain.checkpoint import read_manifest, save_checkpoint
    from wfexplain.pipeline import load_oracle as _load_oracle

    path, data = ckpt
    retrain(path, [0], seed=0, data_dir=str(data), overwrite=True)
    net, _, stale = _load_oracle(path, read_manifest(path), [0], 0)
    assert net is not None and not stale
    other = tmp_path / "other"
    shutil.copytree(path, other)
    model = load(other)
    with torch.no_grad():
        model.backbone.head.bias.add_(1.0)  # another backbone: another digest
    save_checkpoint(model, other, model.manifest.recorded(), overwrite=True, carry=["retrain"])
    with pytest.warns(UserWarning, match="trained for another checkpoint"):
        net, _, stale = _load_oracle(other, read_manifest(other), [0], 0)
    assert net is None and stale
    with pytest.raises(FileExistsError):
        retrain(other, [0], seed=0, data_dir=str(data))


@pytest.mark.slow
def test_benchmark_schema_files_and_oracle_reuse(ckpt):
    path, data = ckpt
    calls = []
    bench = run(path, forget_classes=[1], pairs=1, data_dir=str(data), progress=lambda *a: calls.append(a), **FAST)
    assert bench["weights"] == load(path).manifest.files  # which weights these results describe
    assert set(bench["methods"]) == {"original", *METHODS}
    assert bench["forget_sets"][0] == [1] and len(bench["forget_sets"]) == 2 and len(bench["forget_sets"][1]) == 2
    assert set(bench["by_size"]) == {"1", "2"} and set(bench["per_set"]) == {"1", "-".join(map(str, bench["forget_sets"][1]))}
    for m in METHODS:
        assert set(bench["methods"][m]) == set(METRICS)
        for k, v in bench["methods"][m].items():
            assert set(v) == {"mean", "std", "n"}
            lo, hi = METRICS[k].bounds
            assert math.isnan(v["mean"]) or lo <= v["mean"] <= hi, (m, k, v)
    # The oracle never saw class 1: it cannot predict it; WF forgets it too on this easy data.
    assert bench["methods"]["retrain"]["forget_accuracy_test"]["mean"] == 0.0
    assert bench["methods"]["wf"]["forget_accuracy_test"]["mean"] < bench["methods"]["original"]["forget_accuracy_test"]["mean"]
    assert bench["methods"]["original"]["relearn_steps_lr1e3"]["mean"] == 0.0  # already knows the class
    assert math.isnan(bench["methods"]["retrain"]["attack_auc"]["mean"])  # one seed: no second oracle to compare
    assert 0.0 <= bench["methods"]["wf"]["attack_auc"]["mean"] <= 1.0
    entry = bench["per_set"]["1"]["wf"]
    assert len(entry["per_class_accuracy"]) == 3 and math.isclose(sum(entry["forget_predictions"]), 1.0, rel_tol=1e-6)
    assert bench["config"]["ssd"]["1"]["train_images"] == 72  # overrides are recorded, per set
    assert bench["config"]["wf_removed"]["1"]["removal"]["steps"] == 10
    assert bench["selection"] == {"tuned": False, "validation": None, "test_read_after_choosing": True}
    parity = bench["cost"]["parity"]
    assert parity["requests"] == {"1": 3, "2": 3, "3": 1}  # three classes: every single, every pair, the triple
    assert parity["methods"]["finetune"]["3"]["extrapolated"] and not parity["methods"]["finetune"]["2"]["extrapolated"]
    assert parity["totals"]["wf"] >= parity["wf_round_seconds"]
    assert "stored oracle" in bench["cost"]["retrain_seconds_source"]  # reused from the previous test
    assert calls[-1][0] == calls[-1][1]  # progress reached its total
    # do WF's memories explain? deletion curves of its forget sets, on the benchmark's own images
    expl, pair = bench["explanations"], "-".join(map(str, bench["forget_sets"][1]))
    assert set(expl["classes"]) == {"1"} and set(expl["sets"]) == {pair} and expl["num_images"] == 24
    assert set(expl["classes"]["1"]["rankings"]) == {"memory", "activation", "grad_x_activation", "random"}
    assert "curve" not in expl["classes"]["1"]["rankings"]["memory"]  # compact, as --record keeps it
    on_disk = json.loads((path / "benchmark.json").read_text())
    assert on_disk["forget_classes"] == [1] and on_disk["seeds"] == 1
    md = (path / "benchmark.md").read_text()
    assert "| WF (weight filtering) |" in md and "## sets of 2 classes" in md and "Cost at parity" in md
    assert r"\toprule" in (path / "benchmark.tex").read_text()


@pytest.mark.slow
def test_tuning_chooses_on_validation_with_the_same_budget_and_never_reads_test(ckpt, monkeypatch):
    import wfexplain.benchmark.runner as bm

    path, data = ckpt
    grids = {m: {"steps": (5, 15)} for m in ("wf", "wf_removed", "finetune")}
    order = []
    real_split = bm.checkpoint_split
    monkeypatch.setattr(bm, "checkpoint_split", lambda *a, **k: order.append("test") or real_split(*a, **k))
    real_tune = bm.tune
    monkeypatch.setattr(bm, "tune", lambda *a, **k: order.append("tune") or real_tune(*a, **k))
    bench = run(path, [0], data_dir=str(data), methods=["wf", "wf_removed", "finetune"], grids=grids, out=None,
                **{**FAST, "tune": True})
    assert order == ["tune", "test"]  # the test split is read after every choice
    t = bench["tuning"]
    assert t["budget"] == {"wf": 2, "wf_removed": 2, "finetune": 2} and t["grids"]["finetune"] == {"steps": [5, 15]}
    assert set(t["retrain"]["0"]) == {"forget", "retain"}
    rows = t["points"]["finetune"]["0"]
    assert [r["config"] for r in rows] == [{"steps": 5}, {"steps": 15}]
    best = min(rows, key=lambda r: r["distance"])
    assert t["chosen"]["finetune"]["0"] == best["config"]
    assert bench["config"]["finetune"]["0"]["steps"] == best["config"]["steps"]  # the chosen point is what ran
    assert bench["config"]["finetune"]["0"]["batch_size"] == 16  # on top of the fixed overrides
    assert bench["selection"]["tuned"] and bench["selection"]["validation"]["images_scored"] == len(
        bm.checkpoint_validation_split(load(path).checkpoint_manifest(), str(data)))
    alone = run(path, [0], data_dir=str(data), methods=["finetune"], grids={"finetune": {"steps": (5, 15)}}, out=None,
                **{**FAST, "tune": True})  # a baseline tuned without WF
    assert set(alone["tuning"]["chosen"]) == {"finetune"} and alone["config"]["finetune"]["0"]["steps"] in (5, 15)
    with pytest.raises(ValueError, match="same tuning budget"):
        run(path, [0], data_dir=str(data), methods=["wf", "finetune"], out=None,
            grids={"wf": {"steps": (5,)}, "finetune": {"steps": (5, 15)}}, **{**FAST, "tune": True})


def test_tuning_is_refused_without_a_validation_split(ckpt, tmp_path):
    from wfexplain.checkpoint import update_manifest

    path, data = ckpt
    copy = Path(shutil.copytree(path, tmp_path / "noval", ignore=shutil.ignore_patterns("benchmark-runs", "retrain")))
    update_manifest(copy, lambda m: m.replace(validation=None))
    with pytest.raises(ValueError, match="tuning needs a validation split"):
        run(copy, [0], data_dir=str(data), methods=["finetune"], out=None, **{**FAST, "tune": True})


def test_bring_your_own_network(ckpt, tmp_path):
    path, data = ckpt
    state = {k: v.contiguous() for k, v in load(path).backbone.state_dict().items()}
    good = tmp_path / "mine.safetensors"
    save_file(state, str(good))
    bench = run(path, [0], methods=["retrain"], extra={"mine": good}, data_dir=str(data), out=None, **FAST)
    # The unmodified original brought back: scores exactly like "original".
    assert bench["methods"]["mine"]["forget_accuracy_test"] == bench["methods"]["original"]["forget_accuracy_test"]
    bad = tmp_path / "bad.safetensors"
    save_file({"head.weight": torch.zeros(2, 2)}, str(bad))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors does not match backbone cnn"):
        run(path, [0], methods=["retrain"], extra={"bad": bad}, data_dir=str(data), out=None, **FAST)


def test_bad_arguments_name_the_choices(ckpt):
    path, data = ckpt
    with pytest.raises(ValueError, match="choose from original, retrain, wf, wf_removed"):
        run(path, [0], methods=["sgd"], data_dir=str(data), out=None)
    with pytest.raises(ValueError, match=r"valid classes are 0\.\.2"):
        run(path, [7], data_dir=str(data), out=None)


def test_cancel_writes_nothing(ckpt, tmp_path):
    path, data = ckpt
    assert run(path, [2], data_dir=str(data), should_stop=lambda: True, out=tmp_path, **FAST) is None
    assert not any(tmp_path.iterdir())


def test_table_marks_gap_to_retrain():
    stat = lambda m: {"mean": m, "std": 0.0}  # noqa: E731
    bench = {"methods": {"retrain": {k: stat(0.5) for k in METRICS}, "wf": {k: stat(0.25) for k in METRICS}}}
    md = benchmark_table(bench, "md")
    assert "| WF (weight filtering) | 25.0 ± 0.0 (-25.0)" in md and "| Retrain (oracle) | 50.0 ± 0.0 |" in md
    assert "Forget acc. (test) (%) ↓" in md and "$\\downarrow$" in benchmark_table(bench, "tex")


@pytest.mark.slow
def test_run_store_resumes_an_interrupted_run_and_recomputes_only_what_changed(ckpt, monkeypatch):
    import wfexplain.benchmark.unlearning as bm

    path, data = ckpt
    args = {"data_dir": str(data), "out": None, **FAST}
    seen = []

    def progress(step, total, what):
        seen.append(what.get("method"))

    # Interrupted right after fine-tuning: Retrain, WF (and its round) and fine-tuning are stored.
    assert run(path, [2], progress=progress, should_stop=lambda: "finetune" in seen, **args) is None

    baselines = []
    real = bm.run_baseline

    def counted(name, *a, **k):
        baselines.append(name)
        return real(name, *a, **k)

    def never(*a, **k):
        raise AssertionError("a stored result was recomputed")

    monkeypatch.setattr(bm, "run_baseline", counted)
    monkeypatch.setattr(bm, "train_memory", never)
    monkeypatch.setattr(bm, "retrain", never)
    resumed = run(path, [2], **args)
    assert baselines == ["l1_sparse", "neggrad_plus", "random_labels", "salun", "scrub", "ssd"]
    assert "stored round" in resumed["cost"]["wf_seconds_source"]

    baselines.clear()  # everything stored now: the same run only aggregates, to the same numbers
    again = run(path, [2], **args)
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(resumed["methods"], sort_keys=True)  # NaN-safe
    assert baselines == []

    changed = {**OVERRIDES, "finetune": {"steps": 21, "batch_size": 16}}
    run(path, [2], **{**args, "overrides": changed})
    assert baselines == ["finetune"]  # only the method whose configuration changed

    stores = [json.loads((s / "store.json").read_text()) for s in (path / "benchmark-runs").iterdir()]
    scored = [k for k in stores if k.get("train_limit") == FAST["train_limit"] and "test_images_sha256" in k]
    assert len(scored) == 1


def test_without_the_store_nothing_is_kept(ckpt, tmp_path):
    path, data = ckpt
    before = sorted(p for p in (path / "benchmark-runs").rglob("*")) if (path / "benchmark-runs").exists() else []
    run(path, [0], methods=["retrain", "finetune"], data_dir=str(data), out=None, resume=False,
                  **{**FAST, "train_limit": 30})
    after = sorted(p for p in (path / "benchmark-runs").rglob("*")) if (path / "benchmark-runs").exists() else []
    assert after == before


def _shifted_copy(src, dst):
    """The same folder with every bar moved to the next class's rows: other images, same classes and counts."""
    import shutil

    import numpy as np
    from PIL import Image

    shutil.copytree(src, dst)
    for png in dst.rglob("*.png"):
        with Image.open(png) as im:
            arr = np.asarray(im)
        Image.fromarray(np.roll(arr, 5, axis=0), "L").save(png)


def test_another_data_directory_is_another_store_and_never_reads_the_first_ones_results(ckpt, tmp_path):
    """Same checkpoint, other images: the second run scores its own images (before: the first run's numbers
    came back as a "stored result")."""
    path, data = ckpt
    other = tmp_path / "other-data"
    _shifted_copy(data, other)
    args = {**FAST, "methods": ["retrain"], "out": None}
    first = run(path, [1], data_dir=str(data), **args)
    second = run(path, [1], data_dir=str(other), **args)
    fresh = run(path, [1], data_dir=str(other), resume=False, **args)
    retain = lambda b: b["methods"]["original"]["retain_accuracy_test"]["mean"]  # noqa: E731
    assert retain(second) == retain(fresh) != retain(first)
    inputs = [json.loads((s / "store.json").read_text()) for s in (path / "benchmark-runs").iterdir()]
    stores = {k["test_images_sha256"]: k for k in inputs if "test_images_sha256" in k}  # not the tuning's stores
    assert len(stores) >= 2  # one per data directory (the weights and limits are the same)
    keys = list(stores.values())
    assert all(k["weights_sha256"] == load(path).manifest.files and k["train_limit"] == FAST["train_limit"] for k in keys)
    assert len({k["unlearning_split_sha256"] for k in keys}) == len(keys)  # the training images differ too


def test_a_tampered_stored_result_is_ignored(ckpt):
    from safetensors.torch import load_file

    from wfexplain.benchmark.scoring import Probe
    from wfexplain.benchmark.store import RunStore
    from wfexplain.benchmark.tuning import base_configs
    from wfexplain.data import subset_tensors
    from wfexplain.splits import checkpoint_split

    path, data = ckpt
    manifest = load(path).checkpoint_manifest()
    train = checkpoint_train_split(manifest, str(data))
    probe = Probe(*subset_tensors(checkpoint_split(manifest, "test", str(data)), None)[:2],
                  *subset_tensors(train, 60)[:2])
    store = RunStore(path, manifest, train, RunStore.probe_inputs(None, 60, probe))
    config = base_configs(["finetune"], None)["finetune"]
    metrics = {k: 0.5 for k in SCORED} | {"relearn_steps_lr1e3": 3.0, "seconds": float("nan")}
    result = {"metrics": metrics, "per_class_accuracy": [1.0, float("nan"), 0.0], "forget_predictions": [0.0, 1.0, 0.0],
              "forget_scores": [1.5, -2.0]}
    store.put(0, (2,), "finetune", config, result)
    back = store.get(0, (2,), "finetune", config)
    assert back["metrics"]["retain_accuracy_test"] == 0.5 and math.isnan(back["metrics"]["seconds"])
    assert math.isnan(back["per_class_accuracy"][1]) and back["forget_scores"] == [1.5, -2.0]
    assert store.get(0, (2,), "finetune", {**config, "steps": 1}) is None  # another configuration
    assert store.get(1, (2,), "finetune", config) is None
    assert store.get(0, (0, 2), "finetune", config) is None  # another forget set
    file = store._path(0, (2,), "finetune", config)
    good = file.read_text()
    for bad in (good.replace('"retain_accuracy_test": 0.5', '"retain_accuracy_test": 7.0'),
                good.replace('"retain_accuracy_test": 0.5', '"retain_accuracy_test": Infinity'),
                good.replace('"retain_accuracy_test": 0.5', '"retain_accuracy_test": NaN'),
                good.replace('"retain_accuracy_test": 0.5', '"retain_accuracy_test": "0.5"'),
                good.replace('"relearn_steps_lr1e3": 3.0', '"relearn_steps_lr1e3": true'),
                good.replace('"relearn_steps_lr1e3": 3.0', '"relearn_steps_lr1e3": 300.0'),  # above its cap
                good.replace('    1.5,', '    null,'),
                good.replace('"forget_predictions": [', '"forget_predictions": [null, '),
                good.replace(f'"store_key": "{store.key}"', f'"store_key": "{"0" * 64}"'),
                good.replace('"seed": 0', '"seed": 1'),
                "[]", "{}"):
        assert bad != good or bad in ("[]", "{}")
        file.write_text(bad)
        assert store.get(0, (2,), "finetune", config) is None, bad
    file.write_text(good)
    assert store.get(0, (2,), "finetune", config) is not None
    point = {"forget": 0.25, "retain": 0.9, "seconds": 1.0}
    store.put_point(0, (2,), "finetune", config, point)
    assert store.get_point(0, (2,), "finetune", config) == point
    assert store.get_point(0, (2,), "neggrad_plus", config) is None
    tuned = store._path(0, (2,), "tune-finetune", config)
    tuned.write_text(tuned.read_text().replace('"forget": 0.25', '"forget": 1.25'))
    assert store.get_point(0, (2,), "finetune", config) is None  # out of [0, 1]
    memory = {k: v.detach() for k, v in load(path).memory.items()}
    store.put_round(0, {"round": "run"}, memory, 1.5)
    assert store.get_round(0, {"round": "run"}, memory)[1] == 1.5
    assert store.get_round(0, {"round": "other"}, memory) is None
    round_file = store._round_path(0, {"round": "run"})
    with safe_open(str(round_file), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(round_file))
    name = next(iter(tensors))
    save_file({**tensors, name: torch.full_like(tensors[name], float("nan"))}, str(round_file), metadata=meta)
    assert store.get_round(0, {"round": "run"}, memory) is None  # non-finite memory
    save_file({k: v for k, v in tensors.items() if k != name}, str(round_file), metadata=meta)
    assert store.get_round(0, {"round": "run"}, memory) is None  # a matrix missing
