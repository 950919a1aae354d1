"""The dashboard on a shared server: checkpoints only from the catalogue, hostile URLs, the Streamlit config.

AppTest drives ``app.py`` as in test_app.py (``open_app``, conftest.py); the catalogue and the URL parsing are also
tested directly.
"""

import os
import tomllib
from pathlib import Path

import pytest
from streamlit.config import ShowErrorDetailsConfigOptions

from tests import ROOT
from wfexplain.explain import uploads
from wfexplain.forget import MAX_TEXT_CHARS as MAX_PARAM_CHARS
from wfexplain.forget import MAX_TEXT_ENTRIES as MAX_FORGET_ENTRIES
from wfexplain_dashboard import jobs, settings
from wfexplain_dashboard.catalogue import checkpoint_catalogue
from wfexplain_dashboard.sidebar import parse_forget, refusal
from wfexplain_dashboard.text import public_text

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"
needs_checkpoint = pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(),
                                      reason="checkpoints/fmnist-cnn is missing")
REFUSAL = "The requested checkpoint is not available on this server; showing fmnist-cnn."


def shown_text(at) -> str:
    """Everything the page renders as text: markdown, captions, alerts, titles, exceptions, the picker's options."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header",
                                  "subheader", "text", "code") for e in getattr(at, kind)]
    parts += [str(e.value) + str(getattr(e, "stack_trace", "")) for e in at.exception]
    parts += [o for s in at.selectbox for o in s.options]
    return "\n".join(parts)


def forbidden(extra: Path | None = None) -> list[str]:
    return [str(Path.home()), str(ROOT), "/etc", "/work", "/nonexistent", *([str(extra)] if extra else [])]


# ---------------------------------------------------------------- the catalogue


def test_catalogue_roots_ids_and_symlinks(monkeypatch, tmp_path, copy_checkpoint):
    copy_checkpoint(tmp_path / "user" / "mine")
    copy_checkpoint(tmp_path / "a" / "extra" / "run1")
    copy_checkpoint(tmp_path / "b" / "extra" / "run1")  # same root basename and name: deduped
    single = copy_checkpoint(tmp_path / "lab" / "solo")  # an entry that is itself a checkpoint
    (tmp_path / "a" / "extra" / "escape").symlink_to(CHECKPOINT)  # leaves its root: not listed
    (tmp_path / "a" / "extra" / "empty").mkdir()  # no manifest.json: not a checkpoint
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS",
                       os.pathsep.join([str(tmp_path / "a" / "extra"), str(tmp_path / "b" / "extra"), str(single)]))
    cat = checkpoint_catalogue()
    assert cat["fmnist-cnn"] == CHECKPOINT.resolve()
    assert cat["user/mine"] == (tmp_path / "user" / "mine").resolve()
    assert cat["extra/run1"] == (tmp_path / "a" / "extra" / "run1").resolve()
    assert cat["extra/run1-2"] == (tmp_path / "b" / "extra" / "run1").resolve()
    assert cat["lab/solo"] == single.resolve()
    assert not any("escape" in k or "empty" in k for k in cat)
    assert list(cat.values()).count(CHECKPOINT.resolve()) == 1


def test_public_text_replaces_server_paths(monkeypatch, tmp_path, copy_checkpoint):
    copy_checkpoint(tmp_path / "user" / "mine")
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))
    text = public_text(f"FileExistsError: {tmp_path}/user/other exists; {CHECKPOINT}/manifest.json and {Path.home()}/x")
    assert text == "FileExistsError: user/other exists; fmnist-cnn/manifest.json and …"


def test_refusal_is_one_text_for_every_path():
    assert {refusal(p, "fmnist-cnn") for p in ("/etc", "/nonexistent", "~", "../checkpoints/fmnist-cnn",
                                               "%2Fwork", "/" + "a" * 5000)} == {REFUSAL}
    assert refusal("no_such*" + "x" * 100, "fmnist-cnn") == REFUSAL
    assert refusal("nope", "fmnist-cnn") == "Checkpoint “nope” is not available on this server; showing fmnist-cnn."


@pytest.mark.slow
@needs_checkpoint
@pytest.mark.parametrize("ckpt", ["/etc", "/nonexistent", "~", "../checkpoints/fmnist-cnn", "%2Fwork", "/work"])
def test_url_checkpoint_outside_the_catalogue_is_refused(ckpt, assert_clean, open_app):
    at = open_app(ckpt=ckpt)
    assert_clean(at)
    assert [w.value for w in at.sidebar.warning] == [REFUSAL]
    assert not at.sidebar.error
    assert at.session_state["_view"].name == "fmnist-cnn"
    assert at.query_params["ckpt"] == "fmnist-cnn"
    text = shown_text(at)
    assert not [p for p in forbidden() if p in text]


@pytest.mark.slow
@needs_checkpoint
def test_extra_root_checkpoint_is_listed_and_loads_by_id(monkeypatch, tmp_path, assert_clean, copy_checkpoint, open_app):
    copy_checkpoint(tmp_path / "extra" / "mine")
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(tmp_path / "extra"))
    at = open_app(ckpt="extra/mine", forget="1")
    assert_clean(at)
    assert not at.sidebar.warning
    assert at.sidebar.selectbox[0].value == "extra/mine"
    assert at.session_state["_view"].name == "extra/mine"
    assert at.session_state["_view"].forget == (1,)
    assert at.query_params["ckpt"] == "extra/mine"
    assert not [p for p in forbidden(tmp_path) if p in shown_text(at)]
    at.sidebar.selectbox[0].select("fmnist-cnn").run()  # and back through the picker
    at.sidebar.selectbox[0].select("extra/mine").run()
    assert_clean(at)
    assert at.session_state["_view"].name == "extra/mine"


# ---------------------------------------------------------------- ?forget=


def test_parse_forget():
    assert parse_forget("3,1,3, 1", 10) == ([1, 3], None)  # duplicates merged silently
    assert parse_forget("", 10) == ([], None)
    kept, note = parse_forget("42,abc,-1,3,²", 10)
    assert kept == [3] and note == "Ignored in the link's forget list: “42”, “abc”, “-1”, “²” (class indices are 0 to 9)."
    kept, note = parse_forget("9" * 5000, 10)
    assert kept == [] and f"the limit is {MAX_PARAM_CHARS:,}" in note
    kept, note = parse_forget("1" * 1000 + ",2", 10)  # over 6 digits: dropped, echoed truncated
    assert kept == [2] and "“" + "1" * 12 + "…”" in note and "1" * 13 not in note
    kept, note = parse_forget(",".join(["1"] * (MAX_FORGET_ENTRIES + 10) + ["2"]), 10)
    assert kept == [1] and f"first {MAX_FORGET_ENTRIES}" in note
    kept, note = parse_forget(",".join(f"x{i}" for i in range(20)), 10)
    assert "and 15 more" in note


@pytest.mark.slow
@needs_checkpoint
@pytest.mark.parametrize(("forget", "kept"), [("²", ()), ("42,abc,-1,3", (3,)), ("9" * 5000, ()),
                                              (",".join("1" * 2500), ())])
def test_malformed_forget_in_the_url_is_ignored_with_a_notice(forget, kept, assert_clean, open_app):
    at = open_app(forget=forget)
    assert_clean(at)
    assert at.session_state["_view"].forget == kept
    assert len(at.sidebar.info) == 1
    if forget.startswith("42"):
        assert "“42”, “abc”, “-1”" in at.sidebar.info[0].value
    assert all(len(i.value) < 300 for i in at.sidebar.info)


# ---------------------------------------------------------------- Models page and jobs


@pytest.mark.slow
@needs_checkpoint
def test_models_page_refuses_an_existing_name_and_shows_no_paths(monkeypatch, tmp_path, open_app, start_job):
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path))
    at = open_app("views/models.py")
    assert any("the server's user checkpoint folder" in m.value for m in at.markdown)
    start_job(at, "mine")
    assert [e.value for e in at.error] == ["A checkpoint named `mine` already exists; choose another name."]
    assert "job" not in at.session_state
    assert str(tmp_path) not in shown_text(at)


@pytest.mark.slow
@needs_checkpoint
def test_models_page_reports_a_busy_server(monkeypatch, tmp_path, open_app, start_job):
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path))
    limiter = jobs.JobLimiter(1)
    monkeypatch.setattr(jobs, "LIMITER", limiter)
    limiter.acquire()  # another session's job
    at = open_app("views/models.py")
    start_job(at, "fresh")
    assert [e.value for e in at.error] == ["The server is busy: 1 job(s) running; try again when it finishes."]
    assert "job" not in at.session_state


@pytest.mark.slow
@needs_checkpoint
def test_a_failed_job_reports_no_server_path(monkeypatch, tmp_path, assert_clean, open_app, start_job):
    import wfexplain.pipeline

    def failing_train(dataset, backbone, out, cfg, **kw):
        raise FileExistsError(f"{out} exists and is not empty; see also {tmp_path.parent}/elsewhere")

    monkeypatch.setattr(wfexplain.pipeline, "train_checkpoint", failing_train)
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path))
    at = open_app("views/models.py")
    start_job(at, "boom")
    at.session_state["job"].join(30)
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error] == [  # as markdown source: the message is escaped (it quotes data)
        "The run failed: FileExistsError\\: user/boom exists and is not empty; see also …"]
    assert jobs.LIMITER.running == 0


def test_job_caps_from_the_environment(monkeypatch):
    for name in ("WFEXPLAIN_MAX_EPOCHS", "WFEXPLAIN_MAX_TRAIN_IMAGES", "WFEXPLAIN_MAX_UNLEARN_STEPS"):
        monkeypatch.delenv(name, raising=False)
    assert settings.job_caps() == settings.JobCaps(50, 60_000, 5_000)
    monkeypatch.setenv("WFEXPLAIN_MAX_EPOCHS", "3")
    caps = settings.job_caps()
    assert caps.epochs == 3
    caps.check(epochs=3, train_images=60_000, unlearn_steps=1)
    for bad in ({"epochs": 4}, {"train_images": 60_001}, {"unlearn_steps": 5_001}, {"epochs": 0}):
        with pytest.raises(ValueError, match="this server's limit"):
            caps.check(**bad)
    monkeypatch.setenv("WFEXPLAIN_MAX_EPOCHS", "many")
    with pytest.raises(ValueError, match="WFEXPLAIN_MAX_EPOCHS"):
        settings.job_caps()


# ---------------------------------------------------------------- the Streamlit settings


def test_streamlit_config_matches_the_code_and_reaches_both_ways_of_starting():
    """One file: ``wfexplain dashboard`` passes it as flags; a checkout's .streamlit/config.toml links to it."""
    from wfexplain_dashboard.__main__ import command, streamlit_flags

    assert (ROOT / ".streamlit" / "config.toml").resolve() == ROOT / "wfexplain_dashboard" / "streamlit.toml"
    cmd, env = command(["--checkpoint-dir", str(ROOT / "checkpoints"), "--port", "8600"])
    assert set(streamlit_flags()) <= set(cmd) and "--server.port=8600" in cmd and "--server.maxUploadSize=10" in cmd
    assert env["WFEXPLAIN_CHECKPOINT_DIRS"].endswith(str(ROOT / "checkpoints"))
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert "none" in {o.value for o in ShowErrorDetailsConfigOptions}
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == uploads.MAX_BYTES


@pytest.mark.slow
def test_dashboard_processes_wait_passively_unless_told_otherwise(imported_after):
    """OpenMP spin-waiting made the live path 2-3x slower on a shared machine: every way of starting sets PASSIVE
    before torch loads, and a user's own OMP_WAIT_POLICY wins."""
    import subprocess
    import sys

    code = "import wfexplain_dashboard, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def run(e: dict) -> str:
        return subprocess.run([sys.executable, "-c", code], env=e, cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run(env) == "PASSIVE" and run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert "torch" not in imported_after("import wfexplain_dashboard")  # set before torch could load
