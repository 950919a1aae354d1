"""The deletion-curve figure, table and sentence (wfexplain.figures.deletion) on hand-made numbers: one line per
ranking, AUC and selectivity in the legend, class names drawn as written, a verdict computed from the numbers."""

import math

import pytest

from wfexplain import figures
from wfexplain.figures.deletion import RANKING_LABELS

FRACTIONS = [0.01, 0.05, 0.2]
HOSTILE = ["$x^2$ <script>alert(1)</script>", "a$b", "\\frac{", "=1+2"]


def curve(drops: list[float], others: list[float], std: float | None = None) -> dict:
    out = {"class_drop": drops, "others_drop": others, "class_accuracy": [1 - d for d in drops],
           "others_accuracy": [1 - o for o in others]}
    if std is not None:
        out |= {k + "_std": [std] * len(v) for k, v in list(out.items())}
    return out


def aucs(sel: float, cls: float = 0.5, std: float | None = None) -> dict:
    out = {"class_drop": cls, "others_drop": cls - sel, "selectivity": sel}
    if std is not None:
        out |= {"class_drop_std": std, "others_drop_std": std, "selectivity_std": std}
    return out


def entry(names=("Sandal", "Sneaker"), members=(5, 7)) -> dict:
    return {"names": list(names), "members": list(members), "rankings": {
        "memory": {"auc": aucs(0.6, 0.7), "curve": curve([0.1, 0.6, 0.9], [0.0, 0.05, 0.1])},
        "activation": {"auc": aucs(0.3), "curve": curve([0.1, 0.4, 0.6], [0.0, 0.1, 0.3])},
        "grad_x_activation": {"auc": aucs(0.5), "curve": curve([0.1, 0.5, 0.8], [0.0, 0.1, 0.2])},
        "random": {"auc": aucs(0.0, 0.05, std=0.02), "curve": curve([0.0, 0.05, 0.1], [0.0, 0.05, 0.1], std=0.02)}}}


def test_two_panels_one_line_per_ranking_with_auc_and_selectivity():
    fig = figures.deletion_figure(entry(), FRACTIONS)
    cls, others = fig.axes
    for ax, key in ((cls, "class_drop"), (others, "others_drop")):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert [ln.get_label().split(":")[0].split(" (mean")[0] for ln in lines] == list(RANKING_LABELS.values())
        assert list(lines[0].get_ydata()) == entry()["rankings"]["memory"]["curve"][key]
        assert list(lines[0].get_xdata()) == FRACTIONS and ax.get_xscale() == "log"
        assert len(ax.collections) == 1  # the random draws' ±1 std band
    legend = [t.get_text() for t in cls.get_legend().get_texts()]
    assert legend[0] == "memory (the filter's ranking): AUC 0.700, selectivity 0.600"
    assert legend[3] == "random (mean ± 1 std of the draws): AUC 0.050, selectivity 0.000 ± 0.020"
    assert [t.get_text() for t in others.get_legend().get_texts()][1] == "activation selectivity: AUC 0.200"
    assert fig._suptitle.get_text() == "Sandal + Sneaker"
    assert cls.get_title(loc="left") == "accuracy drop of the set's classes"


@pytest.mark.slow  # renders PNG, SVG and PDF
def test_hostile_class_names_are_drawn_as_written():
    fig = figures.deletion_figure(entry(HOSTILE, (0, 1, 2, 3)), FRACTIONS)
    assert fig._suptitle.get_text().replace("\n", "") == " + ".join(HOSTILE)
    assert not fig._suptitle.get_parse_math()
    files = {fmt: figures.figure_bytes(fig, fmt) for fmt in figures.FIGURE_FORMATS}  # "$x^2$ ... a$b" is no mathtext
    assert all(files.values())
    assert b"<script>" not in files["svg"] and b"&lt;script&gt;alert(1)&lt;/script&gt;" in files["svg"]
    named = figures.deletion_figure(entry(), FRACTIONS, name="$" * 300)  # long: cut and wrapped
    assert named._suptitle.get_text().count("\n") >= 2 and len(named._suptitle.get_text()) < 260
    figures.figure_bytes(named, "png", dpi=50)


def test_table_and_verdict_come_from_the_numbers():
    rows = figures.deletion_table(figures.deletion_aucs(entry()))
    assert [r["ranking"] for r in rows] == list(RANKING_LABELS.values())
    assert rows[0]["selectivity"] == 0.6 and rows[0]["selectivity std"] is None and rows[3]["selectivity std"] == 0.02
    assert figures.deletion_verdict(figures.deletion_aucs(entry()), 5) == (
        "The memory's ranking is more selective than the best baseline, gradient × activation (0.600 vs 0.500), "
        "and above random: random 0.000 ± 0.020 over 5 draws.")
    worse = {"memory": aucs(0.01), "activation": aucs(0.4), "grad_x_activation": aucs(0.2),
             "random": aucs(0.0, std=0.05)}
    assert figures.deletion_verdict(worse) == (
        "The memory's ranking is less selective than the best baseline, activation selectivity (0.010 vs 0.400), "
        "and not above random (within one standard deviation of it): random 0.000 ± 0.050.")
    summary = {"memory": aucs(0.2), "activation": aucs(0.2), "grad_x_activation": aucs(0.1), "random": aucs(0.3),
               "agreement": {}, "memory_beats_random": 0}  # a report's summary: means, no std
    assert figures.deletion_verdict(figures.deletion_aucs(summary), 5) == (
        "The memory's ranking is as selective as the best baseline, activation selectivity (0.200 vs 0.200), "
        "and not above random (mean 0.300 over 5 draws).")
    assert "nothing can be concluded" in figures.deletion_verdict({**worse, "memory": aucs(math.nan)})


def test_a_recorded_entry_has_no_curves_to_draw():
    recorded = {"names": ["x"], "rankings": {r: {"auc": aucs(0.1)} for r in RANKING_LABELS}}
    with pytest.raises(ValueError, match="no deletion curves"):
        figures.deletion_figure(recorded, FRACTIONS)
