"""Deletion curves (:mod:`wfexplain.explain.deletion`) for a paper or the Memory page: one class or forget set, its
accuracy drop and the other classes' drop against the share of each layer's components switched off, one line per
ranking; and the plain numbers behind them (a table and a sentence saying what holds).

The figure is matplotlib, created directly (never through ``pyplot``; render it with
:func:`~wfexplain.figures.paper.figure_bytes`). Class names are data: they are drawn as written (``parse_math=False``,
never mathtext), and :func:`deletion_verdict` names none, so the caller escapes the names it adds. matplotlib is
imported when a figure is drawn, not by the table or the sentence.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..explain.deletion_report import RANKINGS
from .common import FORGOTTEN_COLOR, ORIGINAL_COLOR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RANKING_LABELS = {"memory": "memory (the filter's ranking)", "activation": "activation selectivity",
                  "grad_x_activation": "gradient × activation", "random": "random"}
RANKING_COLORS = {"memory": FORGOTTEN_COLOR, "activation": "#1f77b4", "grad_x_activation": "#2ca02c",
                  "random": ORIGINAL_COLOR}
BASELINES = ("activation", "grad_x_activation")
TABLE_COLUMNS = ("ranking", "class drop (AUC)", "others' drop (AUC)", "selectivity", "selectivity std")


def deletion_aucs(entry: Mapping) -> dict[str, dict[str, float]]:
    """Ranking -> its AUCs (``class_drop``, ``others_drop``, ``selectivity``; random also ``*_std``) of a class's or a
    set's entry of :func:`~wfexplain.explain.deletion.measure` (or of its ``--record``-ed compact copy), or of a
    report's ``summary`` (the means over classes, no std)."""
    if "rankings" in entry:
        return {r: dict(entry["rankings"][r]["auc"]) for r in RANKINGS if r in entry["rankings"]}
    return {r: dict(entry[r]) for r in RANKINGS if r in entry}


def deletion_table(aucs: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """One row per ranking (:data:`TABLE_COLUMNS`): its mean class drop, mean drop of the others and selectivity (class
    drop - others' drop) over the fractions; ``selectivity std`` over the random draws (None for the others)."""
    return [{"ranking": RANKING_LABELS[r], "class drop (AUC)": float(a["class_drop"]),
             "others' drop (AUC)": float(a["others_drop"]), "selectivity": float(a["selectivity"]),
             "selectivity std": float(a["selectivity_std"]) if "selectivity_std" in a else None}
            for r, a in aucs.items()]


def deletion_verdict(aucs: Mapping[str, Mapping[str, float]], draws: int | None = None) -> str:
    """What the numbers say, in one plain sentence naming no class: is the memory's ranking more selective than the
    best baseline (activation selectivity, gradient × activation), and above random? Above random means above the
    draws' mean by more than one standard deviation when the std is known (``random.selectivity_std``), else above the
    mean."""
    mem = aucs.get("memory", {}).get("selectivity", math.nan)
    base = {r: aucs[r]["selectivity"] for r in BASELINES if r in aucs and math.isfinite(aucs[r]["selectivity"])}
    rnd = aucs.get("random", {})
    mean, std = rnd.get("selectivity", math.nan), rnd.get("selectivity_std")
    if not math.isfinite(mem) or not base or not math.isfinite(mean):
        return "The numbers are incomplete (a ranking is missing or not finite): nothing can be concluded."
    best = max(base, key=lambda r: base[r])
    versus = "more" if mem > base[best] else "less" if mem < base[best] else "as"
    out = (f"The memory's ranking is {versus} selective {'as' if versus == 'as' else 'than'} the best baseline, "
           f"{RANKING_LABELS[best]} ({mem:.3f} vs {base[best]:.3f})")
    of = f" over {draws} draws" if draws else ""
    if std is not None and math.isfinite(std):
        where = ("above random" if mem > mean + std else "below random" if mem < mean - std
                 else "not above random (within one standard deviation of it)")
        out += f", and {where}: random {mean:.3f} ± {std:.3f}{of}."
    else:
        out += f", and {'above' if mem > mean else 'not above'} random (mean {mean:.3f}{of})."
    return out


def _title(name: str, width: int = 90, limit: int = 240) -> str:
    name = name if len(name) <= limit else name[: limit - 1] + "…"
    return "\n".join(textwrap.wrap(name, width, break_long_words=True, break_on_hyphens=False)) or name


def deletion_figure(entry: Mapping, fractions: Sequence[float], name: str | None = None, width: float = 7.0) -> Figure:
    """Two panels for one class or forget set (an entry of :func:`~wfexplain.explain.deletion.measure`'s
    ``classes`` or ``sets``, with its curves): the class's (set's) accuracy drop, then the other classes' (pooled),
    against the fraction of every layer's components switched off; one line per ranking (random: the draws' mean and
    a ±1 std band), AUC and selectivity in the legends. ``name`` (default: the entry's class names joined by " + ") is
    the title, drawn as written. ``width`` in inches (7 = a two-column paper's text width)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    rankings = entry.get("rankings", {})
    if not rankings or any("curve" not in v for v in rankings.values()):
        raise ValueError("this entry holds no deletion curves (a --record-ed summary keeps only the AUCs)")
    f = [float(v) for v in fractions]
    title = " + ".join(map(str, entry.get("names", []))) if name is None else str(name)
    fig = Figure(figsize=(width, 3.6 + 0.15 * title.count("\n")), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("class_drop", "accuracy drop of the " + ("set's classes" if len(entry.get("members", [])) > 1
                                                         else "class")),
              ("others_drop", "accuracy drop of the other classes"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for r in RANKINGS:
            if r not in rankings:
                continue
            curve, auc = rankings[r]["curve"], rankings[r]["auc"]
            spread = r == "random" and f"{key}_std" in curve
            text = f"{RANKING_LABELS[r]}{' (mean ± 1 std of the draws)' if spread else ''}: AUC {auc[key]:.3f}"
            if key == "class_drop":
                text += f", selectivity {auc['selectivity']:.3f}"
                text += f" ± {auc['selectivity_std']:.3f}" if "selectivity_std" in auc else ""
            if spread:
                mean, std = curve[key], curve[f"{key}_std"]
                ax.fill_between(f, [m - s for m, s in zip(mean, std, strict=True)],
                                [m + s for m, s in zip(mean, std, strict=True)], color=RANKING_COLORS[r], alpha=0.2,
                                linewidth=0)
            ax.plot(f, curve[key], marker="o", markersize=3, linewidth=1.4, color=RANKING_COLORS[r],
                    linestyle="--" if r == "random" else "-", label=text)
        ax.axhline(0.0, color="black", linewidth=0.5)
        if len(f) > 1 and f[0] > 0 and f[-1] / f[0] >= 5:  # 1%..20%: a log axis spreads the small fractions
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(f, [f"{v:.0%}" if v * 100 == round(v * 100) else f"{v:.1%}" for v in f])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("components switched off (share of each layer)", fontsize=7)
        ax.set_title(label, fontsize=8, loc="left")
        legend = ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.2), frameon=False)  # below: no overlap
        for t in legend.get_texts():
            t.set_parse_math(False)
    axes[0].set_ylabel("accuracy drop (original − after)", fontsize=7)
    fig.suptitle(_title(title), fontsize=9, parse_math=False)  # names a class: data, never mathtext
    return fig
