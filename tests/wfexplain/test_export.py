import io
import json
import struct

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from matplotlib.figure import Figure
from safetensors.torch import load as safetensors_load

from wfexplain import export as E
from wfexplain import figures as F
from wfexplain.backbones import create_backbone

NAMES = ["T-shirt/top", "a_b", "50% & more", "d", "e"]


def _layer_titles(fig: go.Figure):
    return fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


def _safetensors_metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])["__metadata__"]


# ---------------------------------------------------------------- plotly


def test_plotly_builders_traces_and_labels():
    alpha = torch.nn.Parameter(torch.rand(5, 6))  # a live parameter is accepted
    fig = F.memory_heatmap(alpha, NAMES, order=torch.tensor([5, 4, 3, 2, 1, 0]))
    assert len(fig.data) == 1 and list(fig.data[0].x) == ["5", "4", "3", "2", "1", "0"]
    np.testing.assert_allclose(np.asarray(fig.data[0].z)[:, 0], alpha.detach()[:, 5].numpy(), rtol=1e-6)
    assert all(_layer_titles(fig))
    binary = F.memory_heatmap(alpha, NAMES, threshold=0.5)
    assert set(np.unique(np.asarray(binary.data[0].z))) <= {0.0, 1.0}

    fig = F.accuracy_bars([0.9] * 5, [0.1, 0.8, 0.2, 0.9, 0.9], NAMES, forget=[0, 2])
    assert len(fig.data) == 2 and fig.layout.barmode == "group"
    assert len(fig.layout.shapes) == 2  # the two forgotten classes are shaded
    assert "lower is better" in fig.layout.title.text and all(_layer_titles(fig))

    cm0, cm1 = np.eye(5) * 10, np.full((5, 5), 2.0)
    fig = F.confusion_shift(cm0, cm1, NAMES)
    assert len(fig.data) == 1 and fig.data[0].zmid == 0
    np.testing.assert_allclose(np.asarray(fig.data[0].z), cm1 - cm0)
    assert fig.data[0].zmin == -fig.data[0].zmax and all(_layer_titles(fig))

    fig = F.prediction_flow([0, 0, 0, 2, 2, 3], [1, 3, 0, 2, 2, 3], NAMES, forget=[0, 2])
    (sankey,) = fig.data
    assert isinstance(sankey, go.Sankey)
    assert list(sankey.node.label) == ["true: T-shirt/top", "true: 50% &amp; more", "predicted: T-shirt/top",
                                       "predicted: a_b", "predicted: 50% &amp; more", "predicted: d"]  # plotly_text
    assert sum(sankey.link.value) == 5  # the images of classes 0 and 2

    sim = np.eye(5)
    sim[0, 1] = sim[1, 0] = 0.7
    fig = F.similarity_heatmap(sim, NAMES, order=[1, 0, 2, 3, 4])
    assert len(fig.data) == 1 and list(fig.data[0].x)[:2] == ["a_b", "T-shirt/top"]
    assert np.asarray(fig.data[0].z)[0, 1] == pytest.approx(0.7) and all(_layer_titles(fig))

    fig = F.sparsity_heatmap({"l1": [0.1] * 5, "l2": [0.2] * 5, "l3": [0.0] * 5}, NAMES, threshold=0.5)
    assert len(fig.data) == 1 and all(_layer_titles(fig))

    fig = F.component_profile_bar([0.1, 0.9, 1.0, 0.5, 0.2], NAMES)
    assert len(fig.data) == 1 and all(_layer_titles(fig))
    with pytest.raises(ValueError, match="class names"):
        F.component_profile_bar([0.1, 0.9], NAMES)


def test_set_and_many_layer_figures():
    """The Memory page's forget-set heatmap, per-layer unique/shared/kept bars and layers x classes sparsity."""
    from wfexplain.figures import dashboard as D

    alpha = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    gate = alpha[3] * alpha[1]
    fig = D.set_memory_heatmap(alpha, gate, NAMES, forget=[3, 1], order=[5, 4, 3, 2, 1, 0])
    (trace,) = fig.data
    assert list(trace.y) == ["∏ combined gate of the set", "a_b (forgotten)", "d (forgotten)", "T-shirt/top",
                             "50% &amp; more", "e"]  # the set's rows first, names escaped once
    z = np.asarray(trace.z)
    np.testing.assert_allclose(z[0], gate.numpy()[[5, 4, 3, 2, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(z[1:], alpha.numpy()[[1, 3, 0, 2, 4]][:, [5, 4, 3, 2, 1, 0]], rtol=1e-6)
    assert (trace.zmin, trace.zmax) == (0.0, 1.0) and [s.y0 for s in fig.layout.shapes] == [0.5, 2.5]
    binary = D.set_memory_heatmap(alpha, gate, NAMES, forget=[0], threshold=0.5).data[0]
    assert set(np.unique(np.asarray(binary.z))) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="components"):
        D.set_memory_heatmap(alpha, gate[:3], NAMES, forget=[0])

    rows = [{"layer": f"blocks.{i}.<b>x</b>", "components": 8, "unique": i % 3, "shared": 2, "kept": 6 - i % 3}
            for i in range(26)]
    fig = D.set_components_bars(rows, threshold=0.5)
    assert [t.name for t in fig.data] == ["unique to the set", "shared with a retained class", "kept (gate ≥ threshold)"]
    assert fig.layout.barmode == "stack" and all(t.orientation == "h" for t in fig.data)
    assert len({t.marker.color for t in fig.data}) == 3  # three fixed colours, however many layers
    np.testing.assert_allclose(sum(np.asarray(t.x) for t in fig.data), 1.0)
    assert fig.data[0].y[0] == "blocks.0.&lt;b&gt;x&lt;/b&gt;" and len(fig.data[0].y) == 26
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.height >= 26 * 20 and all(_layer_titles(fig))
    assert "<b>" not in fig.to_json()

    sparsity = {f"l{i}": [i / 30] * 5 for i in range(26)}
    fig = D.sparsity_heatmap(sparsity, NAMES, threshold=0.5)
    (trace,) = fig.data
    assert np.asarray(trace.z).shape == (26, 5) and list(trace.x)[2] == "50% &amp; more"
    assert trace.zmin == 0.0 and trace.zmax == pytest.approx(25 / 30) and all(_layer_titles(fig))
    assert fig.layout.height >= 26 * 20 and "alpha &lt; 0.5" in fig.layout.title.text
    with pytest.raises(ValueError, match="class names"):
        D.sparsity_heatmap({"l": [0.1, 0.2]}, NAMES)
    hostile = ["<a href='http://evil.example'>x</a>", *NAMES[1:]]
    for fig in (D.sparsity_heatmap({"l": [0.1] * 5}, hostile), D.set_memory_heatmap(alpha, gate, hostile, [0])):
        assert "<a" not in fig.to_json() and "\\u003ca" not in fig.to_json().lower()


# ---------------------------------------------------------------- matplotlib


def test_memory_figure_layout(make_model):
    model = make_model("cnn")
    fig = F.memory_figure(model.memory, model.class_names, order_mode="specificity")
    assert isinstance(fig, Figure)
    layers = len(model.sites)
    assert len(fig.axes) == layers + 1  # one panel per layer + ONE colorbar
    panels = fig.axes[:layers]
    for ax in panels:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(loc="left")
        assert [t.get_text() for t in ax.get_yticklabels()] == list(model.class_names)
        (mesh,) = ax.collections  # a pcolormesh: vector cells
        assert mesh.get_clim() == (0.0, 1.0)
    assert fig.axes[-1].get_ylabel().startswith("alpha")
    w, h = fig.get_size_inches()
    assert 3 <= w <= 8 and h < 20

    some = F.memory_figure(model, model.class_names, layers=["fc", "features.1"], order_mode="clustered")
    assert len(some.axes) == 3 and some.axes[0].get_title(loc="left").startswith("fc")
    with pytest.raises(ValueError, match="unknown layer"):
        F.memory_figure(model.memory, model.class_names, layers=["nope"])


def test_dashboard_figures_wrap_their_titles_and_memory_colours_match_the_paper():
    """Plotly cuts long titles off: every dashboard title is wrapped into short lines with room above;
    the thresholded heatmap's colour bar is two flat blocks, and the value heatmap uses the paper's colour map."""
    alpha = torch.rand(5, 6)
    figs = [F.memory_heatmap(alpha, NAMES), F.accuracy_bars([0.9] * 5, [0.5] * 5, NAMES, [0]),
            F.confusion_shift(np.eye(5), np.eye(5), NAMES), F.prediction_flow([0, 1], [1, 1], NAMES, [0]),
            F.similarity_heatmap(np.eye(5), NAMES), F.sparsity_heatmap({"a": [0.1] * 5}, NAMES, 0.5),
            F.component_profile_bar([0.2] * 5, NAMES, title="features.10[3]: alpha in each class's filter")]
    for fig in figs:
        lines = fig.layout.title.text.split("<br>")
        assert max(map(len, lines)) <= 100 and fig.layout.margin.t >= 30 + 20 * len(lines), fig.layout.title.text
    assert len(figs[-1].layout.title.text.split("<br>")) > 1  # the long one is wrapped, not cut
    binary = F.memory_heatmap(alpha, NAMES, threshold=0.5).data[0]
    stops = [(float(v), c) for v, c in binary.colorscale]
    assert stops[0][1] == stops[1][1] and stops[2][1] == stops[3][1] and stops[1][0] == stops[2][0] == 0.5
    assert list(binary.colorbar.ticktext) == ["on (kept)", "off"]
    assert F.memory_heatmap(alpha, NAMES).data[0].colorscale[0][1].lower() in ("#440154", "rgb(68,1,84)")
    assert F.memory_figure({"a": alpha}, NAMES).axes[0].collections[0].cmap.name == "viridis"


def test_attribution_figure_shared_symmetric_scale():
    rng = np.random.default_rng(0)
    maps = {"original": rng.normal(size=(8, 8)), "filtered": 3 * rng.normal(size=(1, 8, 8))}
    fig = F.attribution_figure(torch.rand(1, 8, 8), maps, title="t", difference=rng.normal(size=(8, 8)),
                               overlay=False)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 4  # input, two maps, difference
    lim = max(np.abs(m).max() for m in maps.values())
    assert images[1].get_clim() == images[2].get_clim() == pytest.approx((-lim, lim))
    lo, hi = images[3].get_clim()
    assert lo == -hi
    assert len(fig.axes) == 4 + 2  # panels + colorbar of the maps + colorbar of the difference
    no_diff = F.attribution_figure(np.random.rand(8, 8, 3), {"a": np.ones((8, 8))})
    assert len([ax for ax in no_diff.axes if ax.get_images()]) == 2


def test_attribution_overlay_shows_the_input_where_the_map_is_zero():
    """Overlaid maps: the model input in grey where the attribution is 0, the map's colour where it peaks;
    the photo as given comes first; one embedded image per panel."""
    import re

    image = np.linspace(0, 1, 64).reshape(8, 8)
    attr = np.zeros((8, 8))
    attr[2, 3], attr[5, 5] = 2.0, -2.0
    photo = np.random.default_rng(0).random((40, 30, 3))
    fig = F.attribution_figure(image, {"filtered": attr}, original=photo, title="IG · target Bag · forgetting Bag")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["as given", "model input", "filtered"]
    assert panels[0].get_images()[0].get_array().shape == (40, 30, 3)  # the photo, not resized to the input
    drawn = np.asarray(panels[2].get_images()[0].get_array())
    assert drawn.shape == (8, 8, 3)
    untouched = attr == 0
    np.testing.assert_allclose(drawn[untouched], np.repeat(image[untouched][:, None], 3, axis=1))
    assert drawn[2, 3, 0] > drawn[2, 3, 2] and drawn[5, 5, 2] > drawn[5, 5, 0]  # red for +, blue for -
    pdf = F.figure_bytes(fig, "pdf")
    assert len(re.findall(rb"/Subtype\s*/Image", pdf)) <= 3 + 1  # one per panel (+ the colour bar's gradient)
    with pytest.raises(ValueError, match="cannot overlay"):
        F.attribution_figure(image, {"x": np.ones((4, 4))})


def test_figure_bytes_formats():
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    assert F.figure_bytes(fig, "png", dpi=50).startswith(b"\x89PNG")
    assert b"<svg" in F.figure_bytes(fig, "svg")
    assert F.figure_bytes(fig, "pdf").startswith(b"%PDF")
    assert F.figure_bytes(fig, "pdf") == F.figure_bytes(fig, "pdf")  # no creation date embedded
    with pytest.raises(ValueError, match="png, svg, pdf"):
        F.figure_bytes(fig, "jpg")
    with pytest.raises(TypeError):
        F.figure_bytes(go.Figure(), "png")


# ---------------------------------------------------------------- data exports


def test_memory_csv_round_trip(make_model):
    model = make_model("vit")
    df = pd.read_csv(io.BytesIO(E.memory_csv(model.memory, model.class_names)))
    assert list(df.columns) == ["layer", "component", "class_index", "class_name", "alpha"]
    assert len(df) == sum(5 * s.size for s in model.sites)
    for layer, alpha in model.memory.items():
        part = df[df.layer == layer]
        m = np.zeros(tuple(alpha.shape))
        m[part.class_index, part.component] = part.alpha
        np.testing.assert_allclose(m, alpha.detach().numpy(), rtol=1e-7, atol=0)
        assert (part.class_name == [model.class_names[c] for c in part.class_index]).all()


def test_memory_npz_loads_without_pickle(make_model):
    model = make_model("cnn")
    with np.load(io.BytesIO(E.memory_npz(model.memory, NAMES)), allow_pickle=False) as npz:
        assert set(npz.files) == {*model.memory, "class_names"}
        assert list(npz["class_names"]) == NAMES
        for layer, alpha in model.memory.items():
            np.testing.assert_array_equal(npz[layer], alpha.detach().numpy())


REPORT = {
    "original_per_class": [0.9, 0.8, 0.7],
    "forget_matrix": [[0.1, 0.8, 0.6], [0.9, 0.0, 0.7], [0.8, float("nan"), 0.2]],
}


def test_metrics_table_by_hand():
    df = E.metrics_table(REPORT, ["x", "y", "z"])
    assert list(df["class"]) == ["x", "y", "z"]
    np.testing.assert_allclose(df["original_accuracy"], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(df["forget_accuracy"], [0.1, 0.0, 0.2])
    np.testing.assert_allclose(df["retain_accuracy"], [0.7, 0.8, 0.8])  # NaN entry skipped
    np.testing.assert_allclose(df["original_retain_accuracy"], [0.75, 0.8, 0.85])
    with_mean = E.metrics_table(REPORT, ["x", "y", "z"], mean_row=True)
    assert with_mean.iloc[-1]["class"] == "mean"
    assert with_mean.iloc[-1]["forget_accuracy"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="class names"):
        E.metrics_table(REPORT, ["x", "y"])
    back = pd.read_csv(io.BytesIO(E.table_csv(df)))
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))


def test_table_latex_booktabs_and_escaping():
    report = {"original_per_class": [0.9, 0.8, 0.7],
              "forget_matrix": [[0.1, 0.8, 0.6], [0.9, float("nan"), 0.7], [0.8, 0.9, 0.2]]}
    df = E.metrics_table(report, ["T-shirt/top", "a_b", "50% & more"], mean_row=True)
    tex = E.table_latex(df, "Results 100%", "tab:res").decode()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{@{}lrrrr@{}}", r"\label{tab:res}",
                r" & \multicolumn{4}{c}{Accuracy} \\", r"\cmidrule(l){2-5}"):
        assert cmd in tex
    assert r"\caption{Results 100\%}" in tex
    assert "T-shirt/top &" in tex and r"a\_b &" in tex and r"50\% \& more &" in tex
    assert r"$\downarrow$" in tex  # forget accuracy: lower is better
    assert "a\\_b & 0.800 & -- &" in tex  # NaN forget accuracy
    assert tex.count(r"\\") == 2 + 3 + 1  # two header rows, 3 classes, mean
    generic = E.table_latex(pd.DataFrame({"my_col": [1, 2], "name": ["#1", "~x"]}), "c", "l").decode()
    assert r"my\_col & name" in generic and r"\#1" in generic and r"\textasciitilde{}x" in generic


@pytest.mark.parametrize("backbone", ["cnn", "vit"])
def test_baked_safetensors_reproduces_filtered_model(make_model, backbone):
    model = make_model(backbone)
    data = E.baked_safetensors(model, [1, 3])
    state = safetensors_load(data)
    meta = _safetensors_metadata(data)
    assert meta["backbone"] == backbone and json.loads(meta["forget"]) == [1, 3]
    assert json.loads(meta["class_names"]) == list(model.class_names)
    fresh = create_backbone(meta["backbone"], int(meta["num_classes"]), int(meta["in_chans"]), int(meta["img_size"]))
    fresh.load_state_dict(state)  # strict
    fresh.eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x, forget=[1, 3]), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least one class"):
        E.baked_safetensors(model, [])


def _no_temp_files(directory):
    return not [p for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_export_all_writes_expected_files(make_model, tmp_path):
    model = make_model("cnn")
    report = {"original_per_class": [0.9] * 5, "forget_matrix": np.full((5, 5), 0.5).tolist()}
    out = tmp_path / "exports"
    paths = E.export_all(model, out, forget=[2, 0], report=report, layers=["features.1", "fc"])
    names = {p.name for p in paths}
    assert names == {"memory_heatmaps.png", "memory_heatmaps.svg", "memory_heatmaps.pdf", "memory.csv", "memory.npz",
                     "metrics.csv", "metrics.tex", "baked_forget_0-2.safetensors"}
    assert {p.name for p in out.iterdir()} == names and _no_temp_files(out)
    assert all(p.stat().st_size > 0 for p in paths)
    assert (out / "memory_heatmaps.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "memory_heatmaps.pdf").read_bytes().startswith(b"%PDF")
    assert rb"\toprule" in (out / "metrics.tex").read_bytes()
    assert set(safetensors_load((out / "baked_forget_0-2.safetensors").read_bytes())) == set(model.backbone.state_dict())


def test_export_all_minimal_and_validation(make_model, tmp_path):
    model = make_model("cnn")
    paths = E.export_all(model, tmp_path / "a", formats=["svg"])
    assert sorted(p.name for p in paths) == ["memory.csv", "memory.npz", "memory_heatmaps.svg"]
    assert _no_temp_files(tmp_path / "a")
    for bad in ({"formats": ["png", "gif"]}, {"forget": [9]}, {"layers": ["nope"]}, {"order_mode": "random"}):
        with pytest.raises(ValueError):
            E.export_all(model, tmp_path / "b", **bad)
        assert not (tmp_path / "b").exists(), f"nothing may be written for invalid {bad}"


def test_tables_in_percent_rounded_with_a_forget_set_row_and_a_descriptive_caption(make_model):
    report = {"forget_matrix": [[0.0099999998, 0.8799999952316284, 0.9], [0.9, 0.02, 0.9], [0.9, 0.9, 0.0]],
              "original_per_class": [0.9, 0.9, 0.9], "num_images": 30}
    df = E.in_percent(E.metrics_table(report, ["x", "y", "z"], mean_row=True))
    assert list(df.columns) == ["class", "original_accuracy_pct", "forget_accuracy_pct", "retain_accuracy_pct",
                                "original_retain_accuracy_pct"]
    assert df.loc[0, "forget_accuracy_pct"] == 1.0 and df.loc[0, "retain_accuracy_pct"] == 89.0
    csv = E.table_csv(df).decode()
    assert "0.8799999952316284" not in csv and "89.0" in csv
    df = E.with_forget_set_row(df, {"class": "forget set: x + y", "original_accuracy_pct": 90.0,
                                    "forget_accuracy_pct": 1.23456, "retain_accuracy_pct": 89.9999,
                                    "original_retain_accuracy_pct": 90.0})
    assert df.iloc[-1]["class"] == "forget set: x + y" and df.iloc[-1]["forget_accuracy_pct"] == 1.2
    caption = E.metrics_caption(make_model("cnn"), 30)
    tex = E.table_latex(df, caption, "tab:x", float_format="{:.1f}").decode()
    assert r"\multicolumn{4}{c}{Accuracy (\%)}" in tex and r"Forget $\downarrow$" in tex and "& 1.2 &" in tex
    assert r"\begin{tabular}{@{}lrrrr@{}}" in tex  # "forget set: x + y" fits on one line
    assert tex.count(r"\midrule") == 3  # under the header, above the mean row, above the forget-set row
    assert "in percent, on 30 seeded, class-stratified test images" in caption and "lower is better" in caption


@pytest.mark.slow
def test_paper_figures_are_vector_with_truetype_fonts(make_model):
    """Venues' PDF checks: no Type 3 fonts; heatmap cells are vector rectangles (one image only for big panels)."""
    import re

    model = make_model("cnn")
    fig = F.memory_figure(model.memory, model.class_names)
    pdf = F.figure_bytes(fig, "pdf")
    assert b"/Type3" not in pdf and b"/FontFile2" in pdf  # TrueType (Type 42) embedded
    images = len(re.findall(rb"/Subtype\s*/Image", pdf))
    assert images <= 1  # at most the colour bar's gradient; the 4 panels (<= 2,560 cells each) are vector
    svg = F.figure_bytes(fig, "svg")
    assert svg.count(b"<image") <= 1 and b"<text" in svg  # text stays text
    big = {"wide": torch.rand(5, 1000)}  # 5,000 cells: one embedded image for the panel, not 5,000 paths
    pdf_big = F.figure_bytes(F.memory_figure(big, model.class_names), "pdf")
    assert len(re.findall(rb"/Subtype\s*/Image", pdf_big)) <= 2
