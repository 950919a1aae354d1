"""The Memory page follows the sidebar's forget set: its combined gate, what it switches off per layer (unique to the
set or shared with retained classes) and its accuracies from the Forget page's live scoring; readable on 26 layers."""

import base64
import json
import re

import numpy as np
import pytest

from tests import ROOT

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"
VIT = ROOT / "checkpoints" / "fmnist-vit"
SET_CHART = "Components the set switches off"

pytestmark = [pytest.mark.slow,  # AppTest runs of the whole app
              pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")]


def charts(at) -> dict[str, dict]:
    """The page's plotly figures by the start of their title (line breaks of the wrapped title removed)."""
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out[fig["layout"]["title"]["text"].replace("<br>", " ")] = fig
    return out


def chart(at, start: str) -> dict:
    (fig,) = [f for title, f in charts(at).items() if title.startswith(start)]
    return fig


def values(x) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata" (base64), "shape"}``."""
    if isinstance(x, dict):
        shape = tuple(int(n) for n in str(x.get("shape", "-1")).split(","))
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).reshape(shape)
    return np.asarray(x)


def accuracies(at) -> tuple[str, str]:
    (sentence,) = [m.value for m in at.markdown if "forget accuracy is" in m.value]
    found = re.search(r"forget accuracy is \*\*(.+?)\*\*.*retain accuracy \*\*(.+?)\*\*", sentence)
    assert found, sentence
    return found[1], found[2]


def test_memory_page_shows_the_set_per_layer_and_the_forget_pages_accuracies(open_app, assert_clean):
    at = open_app("views/memory.py", forget="0,6")
    assert_clean(at)
    assert [s.value for s in at.subheader][:2] == ["Forget set: T-shirt/top + Shirt", "What the set switches off, per layer"]
    assert not [i for i in at.info if "Choose classes to forget" in i.value]
    (layer,) = [s for s in at.selectbox if s.label == "Layer"]
    assert layer.value == "features.9"  # the largest spread between classes, not the last layer (fc)

    bars = chart(at, SET_CHART)
    assert [t["name"] for t in bars["data"]] == ["unique to the set", "shared with a retained class",
                                                 "kept (gate ≥ threshold)"]
    assert all(t["orientation"] == "h" and t["y"] == ["features.1", "features.5", "features.9", "fc"] for t in bars["data"])
    np.testing.assert_allclose(np.sum([values(t["x"]) for t in bars["data"]], axis=0), 1.0)
    (total,) = [c.value for c in at.caption if c.value.startswith("Over all 4 layers the set switches off")]
    assert "unique to the set" in total and "shared with at least one retained class" in total

    heat = chart(at, "Memory matrix with the forget set's rows first")["data"][0]
    assert heat["y"][:3] == ["∏ combined gate of the set", "T-shirt/top (forgotten)", "Shirt (forgotten)"]
    assert len(heat["y"]) == 11
    sparsity = chart(at, "Sparsity of each class's filter per layer")["data"][0]
    assert sparsity["type"] == "heatmap" and sparsity["y"] == ["features.1", "features.5", "features.9", "fc"]

    forget_acc, retain_acc = accuracies(at)
    at.switch_page("views/forget.py").run()  # the same live scores as the Forget page's metrics
    assert_clean(at)
    metrics = {m.label.split(" (")[0]: m.value for m in at.metric}
    assert (forget_acc, retain_acc) == (metrics["Forget accuracy"], metrics["Retain accuracy"])


def test_memory_page_invites_a_forget_set_when_there_is_none(open_app, assert_clean):
    at = open_app("views/memory.py")
    assert_clean(at)
    assert any("Choose classes to forget in the sidebar" in i.value for i in at.info)
    assert not any(title.startswith(SET_CHART) for title in charts(at))
    assert not [m for m in at.markdown if "forget accuracy is" in m.value]
    assert chart(at, "Memory matrix (alpha")["data"][0]["y"][0] == "T-shirt/top"  # the plain heatmap


@pytest.mark.skipif(not (VIT / "manifest.json").is_file(), reason="checkpoints/fmnist-vit is missing")
def test_memory_page_reads_on_a_26_layer_vit(open_app, assert_clean):
    at = open_app("views/memory.py", ckpt="fmnist-vit", forget="0,6")
    assert_clean(at)
    (layer,) = [s for s in at.selectbox if s.label == "Layer"]
    assert layer.value != "norm" and layer.value == "blocks.3.mlp.fc2"  # norm is all ones: one flat colour
    bars = chart(at, SET_CHART)
    assert len(bars["data"]) == 3 and all(len(t["y"]) == 26 for t in bars["data"])
    assert bars["layout"]["height"] >= 26 * 20
    sparsity = chart(at, "Sparsity of each class's filter per layer")
    assert len(sparsity["data"]) == 1 and len(sparsity["data"][0]["y"]) == 26  # one heatmap, not 26 bar traces
    assert all(a != "—" for a in accuracies(at))


def test_memory_page_escapes_hostile_class_names_in_the_set_view(hostile_checkpoint, monkeypatch, tmp_path, open_app,
                                                                 assert_clean):
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))
    at = open_app("views/memory.py", ckpt="user/evil", forget="1,2")
    assert_clean(at)
    assert at.session_state["_view"].name == "user/evil"
    names = at.session_state["_view"].model.class_names
    assert list(names[1:3]) == ["# heading", "**bold** _it_ `code` $x^2$"]  # the fixture's names, sorted
    (heading,) = [s.value for s in at.subheader if s.value.startswith("Forget set:")]
    assert heading.startswith(r"Forget set: # heading + \*\*bold\*\* \_it\_")
    shown = [e.value for kind in ("markdown", "caption", "info", "subheader") for e in getattr(at, kind)]
    assert not [t for t in shown if re.search(r"(?<!\\)(\]\(|<a|!\[|<b>|\*\*bold|:red\[)", t)]
    specs = [el.proto.spec for el in at.get("plotly_chart")]
    assert any(SET_CHART in s for s in specs) and not [s for s in specs if "<a" in s or "\\u003ca" in s.lower()
                                                       or "<b>" in s]
    heat = chart(at, "Memory matrix with the forget set's rows first")["data"][0]
    assert heat["y"][1:3] == ["# heading (forgotten)", "**bold** _it_ `code` $x^2$ (forgotten)"]  # no markdown in plotly
    assert "&lt;a href='https:evil.example'&gt;x" in heat["y"]
