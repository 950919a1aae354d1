"""Attributions over data (wfexplain/explain/over_data.py): maps and AUCs of N images, original vs filtered."""

import io

import numpy as np
import pytest
import torch

from wfexplain.explain import over_data
from wfexplain.explain.over_data import SCORES, MethodOptions, class_attributions, file_name, scores_csv, to_npy


def _images(n=5, seed=1):
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def _run(model, n=5, **kw):
    labels, ids = torch.arange(n) % 5, torch.arange(100, 100 + n)
    kw = {"method": "Saliency", "forget": [2], **kw}
    return class_attributions(model, _images(n), labels, ids, **kw)


def test_maps_targets_progress_and_npy_round_trip(make_model):
    model = make_model("cnn")
    calls = []
    out = _run(model, n=5, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert out["maps_original"].shape == out["maps_filtered"].shape == (5, 16, 16)
    assert out["maps_original"].dtype == np.float32
    np.testing.assert_array_equal(out["targets"], [0, 1, 2, 3, 4])  # "true": the labels
    np.testing.assert_array_equal(out["ids"], np.arange(100, 105))
    np.testing.assert_allclose(out["mean_filtered"], out["maps_filtered"].mean(0))
    assert out["mean_image"].shape == (16, 16) and 0 <= out["mean_image"].min() <= out["mean_image"].max() <= 1
    for k in SCORES:
        assert out[k].shape == (5,) and ((out[k] >= 0) & (out[k] <= 1)).all()
        assert out["summary"][k] == pytest.approx((out[k].mean(), out[k].std(ddof=1)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert out["forget"] == [2] and out["method"] == "Saliency" and out["seconds"] > 0

    rows = np.load(io.BytesIO(to_npy(out)), allow_pickle=False)
    assert rows.dtype.names == ("id", "label", "target", "original", "filtered", *SCORES)
    np.testing.assert_array_equal(rows["id"], np.arange(100, 105))
    np.testing.assert_array_equal(rows["target"], out["targets"])
    np.testing.assert_array_equal(rows["original"], out["maps_original"])
    np.testing.assert_array_equal(rows["filtered"], out["maps_filtered"])
    np.testing.assert_array_equal(rows["deletion_filtered"], out["deletion_filtered"])

    lines = scores_csv(out).decode().splitlines()
    assert lines[0] == "id,label,target," + ",".join(SCORES) and len(lines) == 6
    assert lines[1].startswith("100,0,0,")


@pytest.mark.parametrize("target", ["original", "filtered"])
def test_targets_are_the_models_predictions(make_model, target):
    model = make_model("cnn")
    x = _images(12)
    with torch.no_grad():
        before = model(x).argmax(1)
    forget = [int(before.mode().values)]  # the class the original model predicts most: the filtered model moves them
    with torch.no_grad():
        expected = before if target == "original" else model(x, forget).argmax(1)
    assert (expected != before).any() == (target == "filtered")
    out = class_attributions(model, x, torch.zeros(12, dtype=torch.long), torch.arange(12), "Saliency", forget,
                             target=target, batch_size=5)
    np.testing.assert_array_equal(out["targets"], expected.numpy())


def test_forgetting_changes_the_maps_and_nothing_forgotten_does_not(make_model):
    model = make_model("cnn")
    forgotten = _run(model, forget=[2], method="Integrated Gradients", options=MethodOptions(ig_steps=8))
    assert not np.allclose(forgotten["maps_original"], forgotten["maps_filtered"], atol=1e-4)
    nothing = _run(model, forget=None)
    np.testing.assert_array_equal(nothing["maps_original"], nothing["maps_filtered"])
    assert nothing["forget"] == []


def test_method_options_reach_attribute(make_model, monkeypatch):
    seen = []
    real = over_data.attribute

    def spy(*args, **kw):
        seen.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(over_data, "attribute", spy)
    opts = MethodOptions(ig_steps=4, shap_samples=2, occlusion_window=4, gradcam_layer="features.1")
    assert opts.for_method("Integrated Gradients") == {"n_steps": 4}
    assert opts.for_method("Occlusion") == {"window": 4} and opts.for_method("Saliency") == {}
    _run(make_model("cnn"), n=2, method="Integrated Gradients", options=opts)
    _run(make_model("cnn"), n=2, method="Gradient SHAP", options={"n_samples": 2})
    assert [k.get("n_steps") for k in seen[:2]] == [4, 4] and [k.get("n_samples") for k in seen[2:]] == [2, 2]
    assert [k["forget"] for k in seen] == [None, [2]] * 2


@pytest.mark.parametrize(("change", "message"), [
    ({"method": "LIME"}, "unknown attribution method 'LIME'"),
    ({"target": "best"}, "unknown target 'best'; choose one of true, original, filtered"),
    ({"images": torch.zeros(0, 1, 16, 16), "labels": [], "ids": []}, "no images to explain: N is 0"),
    ({"labels": [0, 1]}, "mismatched lengths: 3 images, 2 labels, 3 ids"),
    ({"ids": [1, 2, 3, 4]}, "mismatched lengths: 3 images, 3 labels, 4 ids"),
    ({"labels": [0, 1, 9]}, "labels must be class indices 0..4"),
    ({"options": {"n_steps": 3}}, "Saliency does not take option(s) ['n_steps']"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
])
def test_bad_inputs_raise_a_value_error_naming_the_problem(make_model, change, message):
    args = {"images": _images(3), "labels": [0, 1, 2], "ids": [7, 8, 9], "method": "Saliency", **change}
    with pytest.raises(ValueError) as err:
        class_attributions(make_model("cnn"), **args)
    assert message in str(err.value)


def test_file_names_say_what_the_file_holds():
    assert file_name("user/a", "Layer Grad-CAM", 3, 16, "filtered", [5, 1], "npy") == \
        "user_a-attributions-Layer_Grad_CAM-class3-n16-target_filtered-forget1-5.npy"
    assert file_name("c", "Saliency", 0, 8, "true", (), "csv").endswith("-forgetnone.csv")
