"""The dashboard, headless: every page through Streamlit's AppTest on the shipped fmnist-cnn (``open_app``, conftest.py)."""

import io
import json
import re

import numpy as np
import pytest
import streamlit.testing.v1.app_test as app_test_module
import torch
from safetensors.torch import load as safetensors_load
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

import wfexplain
from tests import ROOT
from wfexplain.data import load_dataset, stratified_subset
from wfexplain_dashboard.settings import EVAL_LIMIT

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"
PAGES = {  # page script -> title
    "views/about.py": "About wfexplain",
    "views/models.py": "Models",
    "views/forget.py": "Forget",
    "views/memory.py": "Memory matrices",
    "views/explain.py": "Explain",
    "views/compare.py": "Compare",
    "views/export.py": "Export",
}

pytestmark = [pytest.mark.slow,  # AppTest runs of the whole app
              pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")]


def forget_metric(at: AppTest) -> str:
    (m,) = [m for m in at.metric if m.label.startswith("Forget accuracy")]
    return m.value


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_runs(page, assert_clean, open_app):
    at = open_app(page)
    assert_clean(at)
    assert [t.value for t in at.title] == [PAGES[page]]
    assert at.session_state["_view"].name == "fmnist-cnn"
    assert at.query_params["ckpt"] == "fmnist-cnn"


def test_models_form_rejects_a_bad_name(open_app, start_job):
    at = open_app("views/models.py")
    start_job(at, "a/b")
    assert any("plain directory name" in e.value for e in at.error)
    assert "job" not in at.session_state


def test_models_job_runs_reports_and_clears(monkeypatch, tmp_path, assert_clean, open_app, start_job):
    """The job panel: progress while running, the saved path when done, Clear; Cancel stops a run."""
    import threading

    import wfexplain.pipeline

    release = threading.Event()
    calls = []

    def fake_train(dataset, backbone, out, cfg, progress, should_stop, **kw):
        calls.append((dataset, backbone, out, cfg.epochs))
        progress(1, 2, {"loss": 0.5})
        while not release.wait(0.01):
            if should_stop():
                return {"cancelled": True}
        progress(2, 2, {"loss": 0.25})
        return {"path": str(out), "cancelled": False}

    monkeypatch.setattr(wfexplain.pipeline, "train_checkpoint", fake_train)
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path))
    at = open_app("views/models.py")
    start_job(at, "mine")
    assert calls and calls[0][2] == (tmp_path / "mine").resolve()
    (text,) = [p.text for p in at.main.get("progress")]  # the sidebar's server job list has a bar of its own
    assert re.fullmatch(r"user/mine: step 1/2 · \d+ s elapsed · about \d+ s left · loss 0\.5", text), text
    assert next(b for b in at.main.button if b.label == "Start").disabled  # one job at a time
    release.set()
    at.session_state["job"].join(30)
    at.run()
    assert_clean(at)
    assert any("Saved the checkpoint `user/mine`" in s.value for s in at.success)  # its id, not a server path
    assert not any(str(tmp_path) in m.value for m in [*at.markdown, *at.success, *at.caption])
    at.button(key="job_clear").click().run()
    assert "job" not in at.session_state and not at.success

    release.clear()
    start_job(at, "other")
    at.button(key="job_cancel").click().run()
    at.session_state["job"].join(30)
    at.run()
    assert_clean(at)
    assert any("Cancelled" in w.value for w in at.warning)


def test_forget_set_changes_the_forget_metric(assert_clean, open_app):
    at = open_app()  # the default page is Forget
    assert_clean(at)
    assert forget_metric(at) == "—"  # nothing forgotten yet
    at.multiselect(key="forget_classes").set_value(["Trouser"]).run()
    assert_clean(at)
    shown = forget_metric(at)
    assert shown != "—"
    assert at.query_params["forget"] == "1"

    # The displayed value is the accuracy on the evaluation subset's Trouser images under filter {1}.
    model = wfexplain.load(CHECKPOINT)
    test = load_dataset("fashion-mnist", "test", img_size=model.info.img_size)
    idx = stratified_subset(test.targets, EVAL_LIMIT, seed=0)
    trousers = [int(i) for i in idx if int(test.targets[i]) == 1]
    x = torch.stack([test[i][0] for i in trousers])
    with torch.inference_mode():
        acc = (model(x, forget=[1]).argmax(1) == 1).float().mean().item()
    assert shown == f"{acc:.1%}"


def test_url_query_params_preselect_the_forget_set(assert_clean, open_app):
    at = open_app(ckpt="fmnist-cnn", forget="0,6")
    assert_clean(at)
    assert at.multiselect(key="forget_classes").value == ["T-shirt/top", "Shirt"]
    assert at.session_state["_view"].forget == (0, 6)
    assert forget_metric(at) != "—"
    assert at.query_params["forget"] == "0,6"
    # Out-of-range and malformed entries are dropped, with a notice naming them.
    at = open_app(forget="99,x,1")
    assert_clean(at)
    assert at.multiselect(key="forget_classes").value == ["Trouser"]
    assert any("“99”, “x”" in i.value for i in at.sidebar.info)


def test_unloadable_catalogue_checkpoint_shows_its_error_and_keeps_the_model(monkeypatch, tmp_path, assert_clean, open_app):
    """A listed checkpoint that fails to load: the refusal, its error with the id for the path, the old model kept."""
    broken = tmp_path / "extra" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(tmp_path / "extra"))
    at = open_app()
    at.multiselect(key="forget_classes").set_value(["Trouser"]).run()
    before = forget_metric(at)
    assert "extra/broken" in at.sidebar.selectbox[0].options
    at.sidebar.selectbox[0].select("extra/broken").run()
    assert_clean(at)
    assert [w.value for w in at.sidebar.warning] == [
        "Checkpoint “extra/broken” is not available on this server; showing fmnist-cnn."]
    assert any("extra/broken" in e.value for e in at.sidebar.error)
    assert not any(str(tmp_path) in e.value for e in at.sidebar.error)
    assert at.session_state["_view"].name == "fmnist-cnn"
    assert at.query_params["ckpt"] == "fmnist-cnn"
    assert forget_metric(at) == before  # the page still shows the previous model


def test_export_reruns_reuse_the_rendered_files(monkeypatch, assert_clean, open_app):
    """Widget changes elsewhere on the page must not redraw the heatmap or re-bake the model."""
    from wfexplain import export, figures
    from wfexplain_dashboard import resources

    calls = {"figure": 0, "bake": 0}
    draw, bake = figures.memory_figure, export.baked_safetensors

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(figures, "memory_figure", counted("figure", draw))
    monkeypatch.setattr(export, "baked_safetensors", counted("bake", bake))
    resources._memory_figure_files.clear()
    resources._baked_file.clear()
    at = open_app("views/export.py", forget="2")
    assert_clean(at)
    at.toggle[0].set_value(True).run()  # hard bake: a new baked file, same heatmap
    assert_clean(at)
    at.run()
    assert calls == {"figure": 1, "bake": 2}


def test_explain_gallery_then_export_downloads(monkeypatch, assert_clean, open_app):
    # AppTest gives each run a fresh in-memory media store and drops it afterwards; keep
    # one store for all runs so the bytes behind a download button's URL can be read.
    storage = MemoryMediaFileStorage("/mock/media")
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", lambda endpoint: storage)

    def download(at: AppTest, key: str) -> bytes:
        (button,) = [b for b in at.get("download_button") if b.key == key]
        return storage.get_file(button.proto.url.rsplit("/", 1)[-1]).content

    at = open_app("views/explain.py", forget="1")
    assert_clean(at)
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### Integrated Gradients",
                                                                           "#### Layer Grad-CAM"]
    tables = [d.value for d in at.dataframe]
    aucs = [t for t in tables if "insertion AUC ↑" in t.columns]
    assert len(aucs) == 2
    for t in aucs:
        assert list(t.index) == ["original", "filtered"]
        assert np.isfinite(t.to_numpy(dtype=float)).all() and ((t >= 0) & (t <= 1)).all().all()
    assert download(at, "dl_Integrated Gradients_png").startswith(b"\x89PNG")

    at.switch_page("views/export.py").run()
    assert_clean(at)
    magic = {"heatmap_png": b"\x89PNG\r\n\x1a\n", "heatmap_pdf": b"%PDF", "memory_npz": b"PK\x03\x04"}
    for key, head in magic.items():
        assert download(at, key).startswith(head), key
    # Every method drawn on Explain, in three formats, under names that say what each panel shows
    panels = [b.key for b in at.get("download_button") if b.key.startswith("attr_")]
    stems = ["fmnist-cnn-attribution-Integrated_Gradients-target1-forget1",
             "fmnist-cnn-attribution-Layer_Grad_CAM-target1-forget1"]
    assert sorted(panels) == sorted(f"attr_{s}_{f}" for s in stems for f in ("png", "svg", "pdf"))
    for stem in stems:
        assert download(at, f"attr_{stem}_png").startswith(b"\x89PNG")
        assert download(at, f"attr_{stem}_pdf").startswith(b"%PDF")
        assert b"<svg" in download(at, f"attr_{stem}_svg")[:1000]
    assert b"<svg" in download(at, "heatmap_svg")[:1000]
    assert download(at, "memory_csv").decode().startswith("layer,component,class_index,class_name,alpha\n")
    csv = download(at, "metrics_csv").decode().splitlines()
    assert csv[0] == "class,original_accuracy_pct,forget_accuracy_pct,retain_accuracy_pct,original_retain_accuracy_pct"
    assert csv[-1].startswith("forget set: Trouser,")  # the sidebar's set, in percent
    assert download(at, "metrics_tex").decode().startswith("\\begin{table}")
    npz = np.load(io.BytesIO(download(at, "memory_npz")), allow_pickle=False)
    assert list(npz["class_names"])[:2] == ["T-shirt/top", "Trouser"]
    state = safetensors_load(download(at, "baked"))
    backbone = wfexplain.create_backbone("cnn", 10, 1, 28)
    backbone.load_state_dict(state)  # a plain backbone state dict
    table = next(d.value for d in at.dataframe if "forget_accuracy_pct" in d.value.columns)
    assert list(table.index)[-2:] == ["mean", "forget set: Trouser"]
    assert (table["forget_accuracy_pct"] == table["forget_accuracy_pct"].round(1)).all()


def test_explain_upload_valid_and_invalid(assert_clean, open_app):
    at = open_app("views/explain.py")
    at.radio(key="explain_source").set_value("Upload").run()
    assert_clean(at)
    image = load_dataset("fashion-mnist", "test").pil(0)
    at.file_uploader(key="explain_upload").upload("shirt.png", png_bytes(image.resize((56, 56))), "image/png").run()
    assert_clean(at)
    assert not at.error
    assert "#### Integrated Gradients" in [m.value for m in at.markdown]

    at.file_uploader(key="explain_upload").set_value(("bad.png", b"this is not an image", "image/png")).run()
    assert_clean(at)
    assert any("Cannot use this file" in e.value for e in at.error)
    assert "#### Integrated Gradients" not in [m.value for m in at.markdown]


SHIPPED = sorted(p.parent.name for p in (ROOT / "checkpoints").glob("*/manifest.json"))


@pytest.mark.parametrize("ckpt", [c for c in SHIPPED if c != "fmnist-cnn"])
@pytest.mark.parametrize("page", ["views/forget.py", "views/memory.py", "views/explain.py"])
def test_other_shipped_checkpoints_render(ckpt, page, assert_clean, open_app):
    at = open_app(page, ckpt=ckpt, forget="1,2")
    assert_clean(at)
    assert at.session_state["_view"].name == ckpt
    assert at.session_state["forget_classes"] == [wfexplain.load(ROOT / "checkpoints" / ckpt).class_names[c]
                                                  for c in (1, 2)]


def test_explain_grad_cam_layer_choice(assert_clean, open_app):
    at = open_app("views/explain.py", forget="1")
    assert_clean(at)
    (box,) = [s for s in at.selectbox if s.label == "Grad-CAM layer"]
    assert box.value == "features.10" and "features.10 (7×7) — default" in box.options
    captions = [c.value for c in at.caption if c.value.startswith("Grad-CAM on")]
    assert captions == ["Grad-CAM on `features.10` (7×7 of 28×28 input)"]
    box.set_value("features.6").run()
    assert_clean(at)
    assert [c.value for c in at.caption if c.value.startswith("Grad-CAM on")] == [
        "Grad-CAM on `features.6` (14×14 of 28×28 input)"]
    assert "#### Layer Grad-CAM" in [m.value for m in at.markdown]


def test_forget_page_judges_the_set_and_warns_beyond_trained_sizes(assert_clean, open_app):
    at = open_app(forget="1")
    assert_clean(at)
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == 2 and ":green-badge[" in badges[0] and "Forgotten" in badges[0] and "Retain" in badges[1]
    (fa,) = [m for m in at.metric if m.label.startswith("Forget accuracy")]
    assert fa.delta.endswith(" pp vs original")
    assert not at.warning
    (arithmetic,) = [c.value for c in at.caption if c.value.startswith("Computed in")]  # which ran, and its guard
    assert re.match(r"Computed in bfloat16 .* agree with float32's on \d+\.\d\d% .* margin -?\d\.\d\d pp", arithmetic) or (
        "bfloat16 was refused" in arithmetic), arithmetic
    assert [c.value for c in at.code] == ["/?ckpt=fmnist-cnn&forget=1"]  # Forget is the default page, at /
    at = open_app(forget="5,7,9")  # Sandal, Sneaker, Ankle boot: 3 classes, trained on sets of 1-2
    assert_clean(at)
    (warn,) = [w.value for w in at.warning]
    assert "This set has 3 classes; the filters were trained on sets of 1–2 classes and measured on sets of 1, 2" in warn
    assert [c.value for c in at.code] == ["/?ckpt=fmnist-cnn&forget=5,7,9"]
    at = open_app(forget="0,2,4,6")  # size 4 was never recorded: the command that records it, runnable as printed
    assert [c.value for c in at.main.code] == ["wfexplain evaluate --checkpoint checkpoints/fmnist-cnn --sets 4 --record"]
    at = open_app(forget="5,7,9")
    at.switch_page("views/memory.py").run()
    assert [c.value for c in at.code] == ["/memory?ckpt=fmnist-cnn&forget=5,7,9"]


def test_explain_flags_an_upload_unlike_the_training_data(assert_clean, open_app):
    from PIL import Image

    at = open_app("views/explain.py")
    at.radio(key="explain_source").set_value("Upload").run()
    white = Image.new("RGB", (56, 56), (255, 255, 255))
    at.file_uploader(key="explain_upload").upload("white.png", png_bytes(white), "image/png").run()
    assert_clean(at)
    (warning,) = [w.value for w in at.warning if "unlike the model's training data" in w.value]
    assert "std 0.00" in warning
    assert "its features in 4 inner layers are " in warning and " standard deviations farther" in warning  # calibrated
    assert "These checks flag about 5% of ordinary test images (" in warning and " of 500 measured); thresholds set on " \
           "2,000 training images held out from the Mahalanobis fit (the checkpoint records no validation split" in warning


def test_explain_answers_a_gif_with_a_message_and_keeps_its_methods_across_uploads(assert_clean, open_app):
    from PIL import Image

    at = open_app("views/explain.py")
    at.multiselect(key="explain_methods").set_value(["Saliency"]).run()
    at.radio(key="explain_source").set_value("Upload").run()  # no file yet: the page stops before the methods
    assert_clean(at)
    frames = [Image.new("L", (28, 28), v) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    at.file_uploader(key="explain_upload").upload("anim.gif", buf.getvalue(), "image/gif").run()
    assert_clean(at)
    assert any("anim.gif is a GIF image; supported formats are PNG, JPEG, WEBP, BMP" in e.value
               for e in at.error)  # our message, not the uploader's bare "!" chip
    image = load_dataset("fashion-mnist", "test").pil(0)
    at.file_uploader(key="explain_upload").upload("shirt.png", png_bytes(image), "image/png").run()
    assert_clean(at)
    assert not at.error
    assert at.multiselect(key="explain_methods").value == ["Saliency"]
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### Saliency"]


def _shared_answers():
    from wfexplain_dashboard import resources

    path = str(CHECKPOINT)
    return resources._answers(path, resources._stamp(path), None)


def test_singles_and_pairs_are_precomputed_in_the_background_and_survive_a_restart(monkeypatch, assert_clean, open_app):
    import time

    from wfexplain.answers import Answers
    from wfexplain_dashboard import resources

    monkeypatch.setattr(resources, "PRECOMPUTE", True)
    resources._answers.clear()
    at = open_app()
    assert_clean(at)
    answers = _shared_answers()
    deadline = time.monotonic() + 300
    while answers.done < answers.total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answers.done == answers.total == 56 and answers.path.is_file()
    at.run()
    assert any("All 55 single classes and pairs are precomputed" in c.value for c in at.caption)
    restarted = Answers(answers.predictor, str(CHECKPOINT))  # a new server process reads the file
    assert restarted.done == 56 and restarted.has((2, 8))
    labels, _ = restarted.get((2, 8))
    assert torch.equal(labels, answers.get((2, 8))[0])


def test_a_precompute_that_cannot_write_or_fails_says_so_instead_of_stalling(monkeypatch, tmp_path, assert_clean, open_app):
    """A full disk (safetensors' own error, not an OSError) keeps the answers in memory with a note; any
    other failure stops the thread with a warning instead of "15 of 56 done" forever."""
    import time

    from safetensors import SafetensorError

    import wfexplain.answers as answers_module
    from wfexplain.answers import Answers
    from wfexplain_dashboard import resources

    def full(*args, **kw):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(resources, "PRECOMPUTE", True)
    monkeypatch.setenv("WFEXPLAIN_CACHE_DIR", str(tmp_path))  # no earlier file: everything is computed and written
    monkeypatch.setattr(answers_module, "save_file", full)
    resources._answers.clear()
    try:
        at = open_app()
        answers = _shared_answers()
        deadline = time.monotonic() + 300
        while answers.done < answers.total and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answers.done == answers.total and not answers.path.exists() and not answers.error
        at.run()
        assert_clean(at)
        assert any("All 55 single classes and pairs are precomputed" in c.value for c in at.caption)
        assert any("memory only" in c.value for c in at.caption)

        def broken(self, **kw):
            raise RuntimeError("the evaluation failed")

        monkeypatch.setattr(Answers, "fill", broken)
        resources._answers.clear()
        at.run()
        answers = _shared_answers()
        deadline = time.monotonic() + 30
        while not answers.error and time.monotonic() < deadline:
            time.sleep(0.05)
        at.run()
        assert_clean(at)
        assert any("stopped after 0 of 56" in w.value and "the evaluation failed" in w.value for w in at.warning)
        assert not any("in the background" in c.value for c in at.caption)
    finally:
        resources._answers.clear()  # later tests get answers of their own


def test_a_never_seen_set_on_a_slow_path_is_estimated_first_then_refined(monkeypatch, assert_clean, open_app):
    at = open_app()
    answers = _shared_answers()
    calls = []
    estimate = answers.estimate
    monkeypatch.setattr(answers, "estimate", lambda *a, **k: calls.append(a[0]) or estimate(*a, **k))
    monkeypatch.setattr(answers, "seconds_per_set", 5.0)  # as slow as a big model on a busy CPU
    triple = ["Pullover", "Coat", "Shirt"]
    assert not answers.has((2, 4, 6))
    at.multiselect(key="forget_classes").set_value(triple).run()
    assert_clean(at)
    assert calls == [(2, 4, 6)] and answers.has((2, 4, 6))
    (images,) = [m for m in at.metric if m.label == "Test images (of 10,000)"]
    assert images.value == f"{EVAL_LIMIT:,}"  # the page ends on all images, not the estimate
    assert not any("Estimate" in i.value for i in at.info)
    assert [m.label for m in at.metric].count("Update time") == 1  # one set of numbers: the estimate's were replaced
    assert not [m for m in at.metric if m.label == "Estimate after"]


def test_verdicts_judge_forgetting_and_retain_damage_apart(assert_clean, open_app):
    """Seven classes forgotten: the first badge reads the forget accuracy alone, the second the retain drop alone
    (on main before this, a set at 0.0% forget accuracy read "Not forgotten" because the rest was damaged)."""
    from wfexplain.evaluation import quality

    at = open_app(forget="0,1,2,3,4,5,6")
    assert_clean(at)
    (fa,) = [float(m.value.rstrip("%")) / 100 for m in at.metric if m.label.startswith("Forget accuracy")]
    (ra,) = [m for m in at.metric if m.label.startswith("Retain accuracy")]
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == 2 and quality.forgetting(fa).label in badges[0]
    assert any(label in badges[1] for label in ("Retain kept", "Retain damaged", "Retain broken")), (badges, ra.value)


def test_a_set_that_leaves_one_class_says_its_retain_accuracy_cannot_show_damage(assert_clean, open_app):
    at = open_app(forget="0,1,2,3,4,5,6,7,8")
    assert_clean(at)
    assert any("only one class is retained, so retain accuracy cannot show damage" in w.value for w in at.warning)


def test_link_notices_outlive_reruns_until_the_view_changes(monkeypatch, assert_clean, open_app):
    """A hand-edited link's notice stays through the estimate's redraw and later reruns; changing the set clears it."""
    answers = _shared_answers()
    monkeypatch.setattr(answers, "seconds_per_set", 5.0)  # the slow path: estimate, then all images
    at = open_app(forget="42,abc,3,8,9")
    assert_clean(at)
    notice = "Ignored in the link's forget list: “42”, “abc”"
    for _ in range(2):
        assert any(notice in i.value for i in at.sidebar.info), [i.value for i in at.sidebar.info]
        at.run()
    at.multiselect(key="forget_classes").set_value(["Trouser"]).run()
    assert_clean(at)
    assert not any(notice in i.value for i in at.sidebar.info)


def test_memories_never_trained_are_flagged(monkeypatch, tmp_path, assert_clean, open_app, copy_checkpoint):
    """A checkpoint fresh from `wfexplain train`: forgetting with its untrained filters is not called forgetting."""
    ckpt = copy_checkpoint(tmp_path / "extra" / "fresh")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["unlearn_config"] = None
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(tmp_path / "extra"))
    at = open_app(ckpt="extra/fresh", forget="1")
    assert_clean(at)
    (warn,) = [w.value for w in at.warning if "never trained" in w.value]
    assert "wfexplain unlearn --checkpoint fresh" in warn


def test_without_precompute_the_page_does_not_claim_background_work(assert_clean, open_app):
    at = open_app()
    assert_clean(at)
    captions = [c.value for c in at.caption]
    assert any("evaluated when first chosen" in c for c in captions)
    assert not any("in the background" in c for c in captions)


def test_switching_to_a_checkpoint_without_the_forgotten_classes_says_so(assert_clean, open_app):
    from wfexplain_dashboard.sidebar import unknown_page

    at = open_app(forget="1,3")  # Trouser, Dress
    at.selectbox(key="checkpoint_pick").set_value("mnist-cnn").run()
    assert_clean(at)
    assert at.session_state["_view"].name == "mnist-cnn" and at.multiselect(key="forget_classes").value == []
    assert any("Trouser, Dress: not classes of `mnist-cnn`" in i.value for i in at.sidebar.info)
    assert [c.value for c in at.code] == ["/?ckpt=mnist-cnn"]
    at.run()  # kept through reruns (a page drawn twice must not lose it) ...
    assert any("Trouser, Dress: not classes of `mnist-cnn`" in i.value for i in at.sidebar.info)
    at.multiselect(key="forget_classes").set_value(["1"]).run()  # ... until the user changes the view
    assert not at.sidebar.info
    # /nosuchpage: Streamlit runs the default page; the router names what was asked for
    assert unknown_page("nosuchpage", ["forget", "memory"]) == "nosuchpage"
    assert unknown_page("memory", ["forget", "memory"]) is None and unknown_page("", ["forget"]) is None


def test_export_removes_a_forget_set_in_a_job_and_offers_the_model(monkeypatch, assert_clean, open_app):
    storage = MemoryMediaFileStorage("/mock/media")
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", lambda endpoint: storage)
    at = open_app("views/export.py", forget="1")
    assert_clean(at)
    assert not [b for b in at.get("download_button") if b.key == "removed"]
    next(n for n in at.number_input if n.label == "Repair steps").set_value(20).run()
    at.button(key="remove_run").click().run()
    assert_clean(at)
    at.session_state["remove_job"].join(120)
    at.run()
    assert_clean(at)
    assert any("weights removed, repaired in" in s.value for s in at.success), [s.value for s in at.success]
    (button,) = [b for b in at.get("download_button") if b.key == "removed"]
    assert button.proto.label == "Removed model without Trouser (.safetensors)"
    data = storage.get_file(button.proto.url.rsplit("/", 1)[-1]).content
    wfexplain.create_backbone("cnn", 10, 1, 28).load_state_dict(safetensors_load(data))  # a plain state dict
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])  # the safetensors header
    meta = header["__metadata__"]
    assert meta["mode"] == "removed" and meta["forget"] == "[1]" and json.loads(meta["removal"])["steps"] == 20
