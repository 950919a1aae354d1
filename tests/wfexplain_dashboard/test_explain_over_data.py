"""The Explain page's data mode: a class over many test images on the shipped fmnist-cnn (``open_app``, conftest.py),
mean ± std AUCs, the .npy of the maps with the images' ids, and a cache per method."""

import io
import re

import numpy as np
import pytest
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from tests import ROOT
from wfexplain.data import load_dataset, stratified_subset
from wfexplain.explain import over_data
from wfexplain_dashboard.settings import EVAL_LIMIT

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"
DATA_MODE = "A class over many test images"

pytestmark = [pytest.mark.slow,  # AppTest runs of the whole app
              pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")]


def test_class_mode_shows_mean_scores_downloads_the_maps_and_computes_only_an_added_method(open_app, assert_clean,
                                                                                          monkeypatch):
    from wfexplain_dashboard import resources

    storage = MemoryMediaFileStorage("/mock/media")  # one store for all runs: the download buttons' bytes
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", lambda endpoint: storage)
    calls = []
    real = over_data.class_attributions

    def counting(model, images, labels, ids, method, *args, **kw):
        calls.append(method)
        return real(model, images, labels, ids, method, *args, **kw)

    monkeypatch.setattr(over_data, "class_attributions", counting)
    resources._class_attributions.clear()

    def download(at, key: str) -> bytes:
        (button,) = [b for b in at.get("download_button") if b.key == key]
        return storage.get_file(button.proto.url.rsplit("/", 1)[-1]).content

    at = open_app("views/explain.py", forget="1")
    assert_clean(at)
    assert at.radio(key="explain_target").options == ["Predicted (original)", "Predicted (filtered)", "Chosen class"]
    at.multiselect(key="explain_methods").set_value(["Saliency"])
    at.radio(key="explain_mode").set_value(DATA_MODE)
    at.session_state["explain_data_n"] = 8
    at.run()
    assert_clean(at)
    assert at.radio(key="explain_data_target").options == ["True class", "Predicted (original)", "Predicted (filtered)"]
    assert at.selectbox(key="explain_data_class").value == 1  # the sidebar's first forgotten class: Trouser
    assert calls == ["Saliency"]
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### Saliency"]
    (table,) = [d.value for d in at.dataframe]
    assert list(table.index) == ["original", "filtered"] and list(table.columns) == ["insertion AUC ↑", "deletion AUC ↓"]
    assert all(re.fullmatch(r"[01]\.\d{3} ± \d\.\d{3}", v) for v in table.to_numpy().ravel())

    test = load_dataset("fashion-mnist", "test")
    idx = stratified_subset(test.targets, EVAL_LIMIT, seed=0)
    expected_ids = idx[test.targets[idx] == 1][:8].numpy()
    rows = np.load(io.BytesIO(download(at, "dl_data_Saliency_npy")), allow_pickle=False)
    np.testing.assert_array_equal(rows["id"], expected_ids)
    assert (rows["label"] == 1).all() and (rows["target"] == 1).all()  # target: the true class
    assert rows["original"].shape == rows["filtered"].shape == (8, 28, 28)
    assert not np.allclose(rows["original"], rows["filtered"])
    csv = download(at, "dl_data_Saliency_csv").decode().splitlines()
    assert csv[0].startswith("id,label,target,insertion_original") and len(csv) == 9
    assert any(c.value.startswith("Mean attribution maps over the first 8 test images of **Trouser** (test-split ids "
                                  f"{expected_ids[0]}, ") for c in at.caption)

    calls.clear()
    at.multiselect(key="explain_methods").set_value(["Saliency", "Occlusion"]).run()
    assert_clean(at)
    assert calls == ["Occlusion"]  # Saliency comes from the cache
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### Saliency", "#### Occlusion"]
    assert len(at.dataframe) == 2
    np.testing.assert_array_equal(np.load(io.BytesIO(download(at, "dl_data_Saliency_npy")))["original"],
                                  rows["original"])

    calls.clear()
    at.number_input(key="explain_occlusion_window").set_value(7).run()  # one method's parameter: only that method
    assert_clean(at)
    assert calls == ["Occlusion"]


def test_class_mode_escapes_hostile_class_names(hostile_checkpoint, monkeypatch, tmp_path, open_app, assert_clean):
    """Class names are data: the caption, headings and table of the data mode show them as text (2 images a class)."""
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))
    at = open_app("views/explain.py", ckpt="user/evil", forget="0,1")
    at.multiselect(key="explain_methods").set_value(["Saliency"])
    at.radio(key="explain_mode").set_value(DATA_MODE).run()
    assert_clean(at)
    assert at.number_input(key="explain_data_n").value == 2  # all the class has, not the default 16
    shown = [e.value for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind)]
    assert any(r"of **\!\[img\]\(http\:evil.example\)**" in t for t in shown)  # class 0 of the sorted names
    assert not [t for t in shown if re.search(r"(?<!\\)(\]\(|<a|!\[|<b>|\*\*bold|:red\[)", t)]
    assert len(at.dataframe) == 1
