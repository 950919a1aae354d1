"""The dashboard's URL routing (``/forget`` is the Forget page) and the Models form keeping a typed checkpoint name."""

import pytest
import streamlit.commands.navigation as navigation
from streamlit.testing.v1 import AppTest

from tests import ROOT

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"

needs_checkpoint = pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(),
                                      reason="checkpoints/fmnist-cnn is missing")


def _resolve(url_name: str) -> None:
    """A bare router: the app's pages, resolved for a browser that opened ``/<url_name>`` (its pages manager's intent)."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from wfexplain_dashboard.sidebar import app_pages

    ctx = get_script_run_ctx()
    ctx.pages_manager.set_script_intent("", url_name)  # what a session does with the URL's path before a run
    page = st.navigation(app_pages(), position="hidden")
    st.session_state["resolved"] = (page.title, page.url_path, str(page._page))
    st.session_state["registry"] = {info["url_pathname"]: str(info["script_path"])
                                    for info in ctx.pages_manager.get_pages().values()}


@pytest.fixture
def resolve(monkeypatch, assert_clean):
    """``resolve(url_name)``: (title, url_path, script) of the page resolved, the registry, the paths not found."""

    def run(url_name: str) -> tuple[tuple, dict, list]:
        not_found: list[str] = []
        monkeypatch.setattr(navigation, "send_page_not_found", lambda ctx: not_found.append(url_name))
        at = AppTest.from_function(_resolve, args=(url_name,), default_timeout=60)
        at.run()
        assert_clean(at)
        return at.session_state["resolved"], at.session_state["registry"], not_found

    return run


def test_forget_url_path_opens_the_forget_page(resolve):
    """``/forget`` matched no page (the default page's url_path is "") and opened "Page not found"."""
    (title, url_path, script), registry, not_found = resolve("forget")
    assert (title, url_path) == ("Forget", "forget") and script == str(ROOT / "wfexplain_dashboard" / "views" / "forget.py")
    assert not_found == []
    # the registry maps both
    assert registry["forget"] == registry[""] == str(ROOT / "wfexplain_dashboard" / "views" / "forget.py")


@pytest.mark.parametrize(("url", "title"), [("", "Forget"), ("about", "About"), ("memory", "Memory matrices"),
                                            ("models", "Models"), ("explain", "Explain"), ("compare", "Compare"),
                                            ("export", "Export")])
def test_every_page_path_resolves(url, title, resolve):
    (shown, url_path, _), registry, not_found = resolve(url)
    assert (shown, url_path, not_found) == (title, url, [])
    assert set(registry) == {"", "forget", "about", "memory", "models", "explain", "compare", "export"}


@pytest.mark.parametrize("url", ["home", "nosuchpage"])
def test_other_paths_are_still_not_found(url, resolve):
    """The default page's internal url_path ("home") is no URL; unknown paths keep Streamlit's notice and ours."""
    (title, url_path, _), _, not_found = resolve(url)
    assert (title, url_path, not_found) == ("Forget", "", [url])


@pytest.mark.slow
@needs_checkpoint
def test_forget_page_at_its_own_path_in_the_app(assert_clean, open_app):
    at = open_app("views/forget.py", forget="1")  # AppTest opens the page registered at url path "forget"
    assert_clean(at)
    assert [t.value for t in at.title] == ["Forget"]
    assert not [i.value for i in at.info if "There is no page" in i.value]
    assert [c.value for c in at.code] == ["/forget?ckpt=fmnist-cnn&forget=1"]
    at = open_app(forget="1")  # and "/" still opens it
    assert [t.value for t in at.title] == ["Forget"] and [c.value for c in at.code] == ["/?ckpt=fmnist-cnn&forget=1"]


# ---------------------------------------------------------------- the Models form


@pytest.fixture
def fake_training(monkeypatch, tmp_path):
    import wfexplain.pipeline

    calls = []

    def fake_train(dataset, backbone, out, cfg, progress, should_stop, **kw):
        calls.append((dataset, backbone, out.name))
        return {"path": str(out), "cancelled": False}

    monkeypatch.setattr(wfexplain.pipeline, "train_checkpoint", fake_train)
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path))
    return calls


@pytest.fixture
def submit(assert_clean):
    """``submit(at, name=None, dataset=None, backbone=None)``: one submission of the Train form, whatever is given
    changed at once, then Start."""

    def run(at: AppTest, name: str | None = None, dataset: str | None = None, backbone: str | None = None) -> None:
        if name is not None:
            at.text_input(key="train_name").input(name)
        if dataset is not None:
            next(s for s in at.main.selectbox if s.label == "Dataset").set_value(dataset)
        if backbone is not None:
            next(s for s in at.main.selectbox if s.label == "Backbone").set_value(backbone)
        next(b for b in at.main.button if b.label == "Start").click().run()
        assert_clean(at)
        at.session_state["job"].join(30)

    return run


@pytest.mark.slow
@needs_checkpoint
def test_a_typed_checkpoint_name_survives_a_dataset_and_backbone_change(fake_training, open_app, submit):
    at = open_app("views/models.py")
    assert at.text_input(key="train_name").value == "fashion-mnist-cnn"
    submit(at, name="my-run", dataset="mnist", backbone="resnet18")
    assert fake_training == [("mnist", "resnet18", "my-run")]  # the job got the typed name, not "mnist-resnet18"
    assert at.text_input(key="train_name").value == "my-run"


@pytest.mark.slow
@needs_checkpoint
def test_an_untouched_default_name_follows_the_dataset_and_backbone(fake_training, open_app, submit):
    at = open_app("views/models.py")
    submit(at, dataset="mnist")
    assert fake_training == [("mnist", "cnn", "mnist-cnn")]
    assert at.text_input(key="train_name").value == "mnist-cnn"
    at.button(key="job_clear").click().run()
    submit(at, backbone="vit")
    assert fake_training[-1] == ("mnist", "vit", "mnist-vit") and at.text_input(key="train_name").value == "mnist-vit"


@pytest.mark.slow
@needs_checkpoint
def test_an_emptied_name_is_the_users_and_refused(fake_training, assert_clean, open_app):
    at = open_app("views/models.py")
    at.text_input(key="train_name").input("")
    next(s for s in at.main.selectbox if s.label == "Dataset").set_value("mnist")
    next(b for b in at.main.button if b.label == "Start").click().run()
    assert_clean(at)
    assert any("plain directory name" in e.value for e in at.error) and fake_training == []
    assert at.text_input(key="train_name").value == ""
