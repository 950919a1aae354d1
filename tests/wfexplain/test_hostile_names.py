"""Class names are data (image folder names, manifests): never markup in plotly, CSV or matplotlib.

A folder named ``<a href=...>x</a>`` or ``[text](http://evil)`` must be drawn as written: no live link in a
plotly label, no formula in a spreadsheet (OWASP CSV injection), no mathtext crash. Markdown and the
dashboard's pages: tests/wfexplain_dashboard/test_hostile_names.py.
"""

import io
import re

import numpy as np
import pandas as pd
import pytest
import torch

from wfexplain import export, figures, spreadsheet
from wfexplain.figures.common import plotly_text

LINK_HTML = "<a href='http://evil.example'>x</a>"
LINK_MD = "[text](http://evil.example)"
HOSTILE = [LINK_HTML, LINK_MD, "=2+5", "-1+cmd|' /C calc'!A0", "**bold** _it_ `code` $x^2$", ":red[alert] :material/warning:",
           "![img](http://evil.example/x.png)", "<b>bold</b><br>&amp;", "@SUM(1+1)", "plain"]
OUR_TAGS = re.compile(r"<br>|</?extra>")  # the only markup the builders themselves write


# ---------------------------------------------------------------- plotly


def strings(obj):
    """Every string inside a plotly figure's dict (labels, titles, hover templates, annotations, legend names)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, np.ndarray) and obj.dtype.kind in "OUS":
        yield from strings(obj.tolist())


def plotly_figures(names: list[str]) -> dict:
    n, rng = len(names), np.random.default_rng(0)
    alpha = torch.rand(n, 6, generator=torch.Generator().manual_seed(0))
    acc = rng.random(n)
    cm = rng.integers(0, 9, (n, n))
    y = np.repeat(np.arange(n), 3)
    preds = {LINK_HTML: rng.dirichlet(np.ones(n)), "retrain": rng.dirichlet(np.ones(n)), LINK_MD: rng.dirichlet(np.ones(n))}
    return {
        "memory_heatmap": figures.memory_heatmap(alpha, names),
        "memory_heatmap binary": figures.memory_heatmap(alpha, names, threshold=0.5, title=LINK_HTML),
        "accuracy_bars": figures.accuracy_bars(acc, acc[::-1], names, [0, 1]),
        "confusion_shift": figures.confusion_shift(cm, cm.T, names),
        "prediction_flow": figures.prediction_flow(y, (y + 1) % n, names, [0, 1, 7]),
        "similarity_heatmap": figures.similarity_heatmap(np.eye(n), names, order=list(range(n))[::-1]),
        "sparsity_heatmap": figures.sparsity_heatmap({"features.<i>0</i>": acc, "head": acc / 2}, names, 0.5),
        "component_profile_bar": figures.component_profile_bar(acc, names, title=LINK_HTML),
        "tradeoff_scatter": figures.tradeoff_scatter(names[:4], [0.9, 0.5, 0.2, 0.7], [0.8, 0.9, 0.7, 0.6],
                                                     [1.0, 10.0, float("nan"), 100.0], front=[0, 1], original_retain=0.9),
        "ab_accuracy_bars": figures.ab_accuracy_bars(acc, acc[::-1], names, [1], LINK_HTML, LINK_MD, images=LINK_HTML),
        "forget_predictions_heatmap": figures.forget_predictions_heatmap(preds, names, 0, LINK_HTML,
                                                                         {LINK_MD: 0.25, "retrain": 0.1}),
    }


@pytest.mark.parametrize("name", list(plotly_figures(HOSTILE)))
def test_plotly_figures_draw_hostile_names_as_text(name):
    fig = plotly_figures(HOSTILE)[name]
    texts = list(strings(fig.to_plotly_json()))
    leftover = [t for t in texts if re.search(r"<[^<>]*>", OUR_TAGS.sub("", t))]
    assert not leftover, leftover  # no tag of a name reaches plotly: no <a>, <b>, <br> from data
    blob = "\n".join(texts)
    assert "<a" not in blob and "&lt;a href='http://evil.example'&gt;x&lt;/a&gt;" in blob
    raw = fig.to_json()
    assert "<a" not in raw and "\\u003ca" not in raw.lower()
    assert LINK_MD in blob  # plotly renders no markdown: "[text](url)" is inert there and drawn as written


def test_plotly_text_is_the_html_escape_plotly_decodes():
    assert plotly_text(LINK_HTML) == "&lt;a href='http://evil.example'&gt;x&lt;/a&gt;"
    assert plotly_text("a & b <br>") == "a &amp; b &lt;br&gt;"
    assert plotly_text("T-shirt/top") == "T-shirt/top" and plotly_text("Men's") == "Men's"  # ordinary names unchanged
    assert plotly_text(3) == "3"


def test_figures_keep_their_own_line_breaks_and_hover_markup():
    fig = figures.ab_accuracy_bars([0.5, 0.4], [0.3, 0.2], ["a", "b"], [0], "A <i>", "B",
                                   images="the benchmark's 10,000 test images")
    assert fig.data[0].hovertemplate.startswith("A &lt;i&gt;<br>%{x}")
    assert fig.data[0].name == "A: A &lt;i&gt;"
    assert fig.layout.title.text.count("<br>") >= 1  # the wrapped title's own breaks survive, escaped text between
    assert "&lt;i&gt;" in fig.layout.title.text and "<i>" not in fig.layout.title.text


# ---------------------------------------------------------------- matplotlib


def test_paper_figures_draw_dollar_signs_as_text():
    """matplotlib reads "$...$" as mathtext: "$^$" as a class name crashed the export and Explain figures."""
    names = ["$^$", "a$b$c", *HOSTILE[:3]]
    fig = figures.memory_figure({"l": torch.rand(len(names), 4)}, names)
    assert figures.figure_bytes(fig, "png", dpi=30).startswith(b"\x89PNG")
    fig = figures.attribution_figure(np.zeros((8, 8)), {"$^$": np.ones((8, 8))}, title="target $^$ · forgetting $\\x$")
    assert b"<svg" in figures.figure_bytes(fig, "svg")


# ---------------------------------------------------------------- CSV (OWASP CSV injection)


def test_csv_cell_rule():
    for s in ("=2+5", "+1", "-1+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1", "\r=1"):
        assert spreadsheet.csv_cell(s) == "'" + s
    for v in ("plain", "a=b", " =1", "", -0.5, -3, 1e-9, None, float("nan")):
        out = spreadsheet.csv_cell(v)
        assert out is v or (isinstance(v, float) and np.isnan(v) and np.isnan(out))


def test_memory_csv_neutralises_formulas_and_keeps_numbers():
    names = ["=2+5", "-1+cmd|' /C calc'!A0", "plain"]
    memory = {"-layer": torch.tensor([[-0.5, 1.0], [0.25, 0.0], [1.0, -2.0]])}
    text = export.memory_csv(memory, names).decode()
    df = pd.read_csv(io.StringIO(text))
    assert set(df["class_name"]) == {"'=2+5", "'-1+cmd|' /C calc'!A0", "plain"}
    assert set(df["layer"]) == {"'-layer"}
    assert df["alpha"].dtype == float and df["alpha"].tolist()[:2] == [-0.5, 1.0]  # numbers stay numbers
    assert df["alpha"].min() == -2.0 and df["class_index"].dtype == np.int64
    for line in text.splitlines()[1:]:
        assert not line.startswith(("=", "+", "@", "\t", "\r")) and not line.startswith("-")


def test_table_csv_neutralises_headers_and_text_cells_only():
    df = pd.DataFrame({"class": ["=2+5", "-1+cmd|' /C calc'!A0", "@x", "mean"], "=HYPERLINK(\"x\")": [-0.5, 1.0, -3.0, 0.0],
                       "count": [-1, 2, 3, 4]})
    back = pd.read_csv(io.BytesIO(export.table_csv(df)))
    assert list(back.columns) == ["class", "'=HYPERLINK(\"x\")", "count"]
    assert back["class"].tolist() == ["'=2+5", "'-1+cmd|' /C calc'!A0", "'@x", "mean"]
    assert back.iloc[:, 1].tolist() == [-0.5, 1.0, -3.0, 0.0] and back["count"].tolist() == [-1, 2, 3, 4]
    assert df["class"].tolist()[0] == "=2+5"  # the caller's table is not modified


def test_metrics_csv_of_a_hostile_report():
    report = {"forget_matrix": [[0.0, 0.9], [0.8, 0.1]], "original_per_class": [0.9, 0.95]}
    table = export.in_percent(export.metrics_table(report, ["=2+5", "-1+cmd|' /C calc'!A0"], mean_row=True))
    text = export.table_csv(table).decode()
    assert "\n'=2+5," in text and "\n'-1+cmd|' /C calc'!A0," in text
    back = pd.read_csv(io.StringIO(text))
    assert back["forget_accuracy_pct"].tolist()[:2] == [0.0, 10.0]
