"""The benchmark's catalogue: the metrics every network is scored on, the methods compared, the forget sets.

Each metric is registered once, as a :class:`Metric` (formula, direction, unit, family, reference); the
scoring, the run store's validation, the tables, the Compare page and the docs' metric table derive from
:data:`METRICS`. The methods come from the registry of :mod:`wfexplain.methods` (importing
:mod:`wfexplain.baselines` registers the baselines). Retrain, the oracle that never saw the forget set, is
the reference: a column's "best" method is the one closest to Retrain (:attr:`Metric.versus_retrain`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from .. import baselines  # noqa: F401  (registers every baseline)
from ..methods import methods

BENCHMARK_FILE = "benchmark.json"  # beside the checkpoint (or in --out), with .md, .tex and .csv tables
FAMILIES = ("Forgetting", "Utility", "Privacy", "Residual knowledge", "Cost")
UNITS = {"%": "percentage of images", "AUC": "ROC AUC", "steps": "optimisation steps", "nats": "natural-log loss",
         "score": "unitless score", "s": "seconds"}


@dataclass(frozen=True)
class Metric:
    """A benchmark column.

    Attributes:
        key: its name in files.
        label: its display name.
        higher_is_better: the direction the literature reads it in (the arrow in headers).
        unit: a key of :data:`UNITS`; ``"%"`` values are fractions shown as percentages.
        family: a member of :data:`FAMILIES` (the Compare page's tables).
        formula: how it is computed, in one line.
        reference: the paper (and, where the code differs, the code) it follows.
        versus_retrain: its best method is the one closest to Retrain's value (False: by direction; time only).
        bounds: the range a value may take (the run store refuses others).
    """

    key: str
    label: str
    higher_is_better: bool
    unit: str
    family: str
    formula: str
    reference: str
    versus_retrain: bool = True
    bounds: tuple[float, float] = (0.0, math.inf)

    def __post_init__(self) -> None:
        if self.unit not in UNITS or self.family not in FAMILIES:
            raise ValueError(f"metric {self.key!r}: unit must be one of {list(UNITS)}, family one of {FAMILIES}")

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def percent(self) -> bool:
        return self.unit == "%"


_ALL: tuple[Metric, ...] = (
    Metric("forget_accuracy_test", "Forget acc. (test)", False, "%", "Forgetting",
           "accuracy on test images of the forget set", "Poppi et al. 2023; Retrain ≈ 0", bounds=(0, 1)),
    Metric("forget_accuracy_train", "Forget acc. (train)", False, "%", "Forgetting",
           "accuracy on training images of the forget set", "Poppi et al. 2023", bounds=(0, 1)),
    Metric("zrf_paper", "ZRF (paper)", True, "score", "Forgetting",
           "1 − mean_i JS(p_model(x_i) ‖ p_random(x_i)) over forget-train images, JS with m = (p+q)/2, natural log",
           "Chundawat et al. 2023, Eq. (ZRF) as written", bounds=(1 - math.log(2), 1)),
    Metric("zrf_code", "ZRF (ref. code)", True, "score", "Forgetting",
           "1 − [½ mean KL(m ‖ p) + ½ mean KL(m ‖ q)] averaged over every element, as the authors' code computes it",
           "Chundawat et al. 2023, github.com/vikram2000b/bad-teaching-unlearning (UnLearningScore)",
           bounds=(-math.inf, 1)),
    Metric("retain_accuracy_test", "Retain acc. (test)", True, "%", "Utility",
           "accuracy on test images of the other classes", "Poppi et al. 2023", bounds=(0, 1)),
    Metric("retain_accuracy_train", "Retain acc. (train)", True, "%", "Utility",
           "accuracy on training images of the other classes", "Poppi et al. 2023", bounds=(0, 1)),
    Metric("mia_efficacy_salun", "MIA-efficacy (SalUn)", True, "%", "Privacy",
           "fraction of forget-train images an SVC on true-class confidence (fit: retain-train = member, test images "
           "of the retained classes = non-member) calls non-member",
           "Jia et al. 2023; Fan et al. 2024 (SalUn), SVC_MIA protocol", bounds=(0, 1)),
    Metric("attack_auc", "Attack AUC vs Retrain", False, "AUC", "Privacy",
           "ROC AUC of a per-example attack telling this model's logit-confidence on forget-train images from "
           "Retrain's (two-sided threshold calibrated on Retrain, held-out halves); 0.5 = indistinguishable",
           "U-LiRA framing, Hayes et al. 2024; LiRA score, Carlini et al. 2022", bounds=(0, 1)),
    Metric("attack_tpr_at_1fpr", "Attack TPR @1% FPR", False, "%", "Privacy",
           "true-positive rate of the same attack at the threshold giving 1% false positives on Retrain",
           "Carlini et al. 2022 (low-FPR reporting)", bounds=(0, 1)),
    Metric("relearn_steps_lr1e3", "Relearn steps (lr 1e-3)", True, "steps", "Residual knowledge",
           "Adam steps (lr 1e-3) on 32 forget images until forget test accuracy is back to 50% (cap 100)",
           "Golatkar et al. 2020 (relearn time)", bounds=(0, 100)),
    Metric("relearn_steps_lr1e4", "Relearn steps (lr 1e-4)", True, "steps", "Residual knowledge",
           "the same at lr 1e-4 (cap 200)", "Golatkar et al. 2020 (relearn time)", bounds=(0, 200)),
    Metric("probe_accuracy", "Probe acc.", False, "%", "Residual knowledge",
           "accuracy on the forget set's test images of a linear probe fit on penultimate features",
           "linear probing, Alain & Bengio 2016", bounds=(0, 1)),
    Metric("forget_loss_train", "Forget loss (train)", True, "nats", "Residual knowledge",
           "mean cross-entropy on the forget set's training images", "loss-based evidence (Yeom et al. 2018)"),
    Metric("seconds", "Time (s)", False, "s", "Cost", "wall-clock time of the unlearning itself", "measured",
           versus_retrain=False),
)
METRICS: dict[str, Metric] = {m.key: m for m in _ALL}


def method_keys() -> tuple[str, ...]:
    """Every registered method (references, ours, baselines), in registration order."""
    return tuple(methods())


def benchmark_sets(num_classes: int, classes: list[int], pairs: int, triples: int, seed: int = 0) -> list[tuple[int, ...]]:
    """The forget sets a benchmark scores: each class of ``classes`` alone, then ``pairs`` pairs and ``triples``
    triples of classes: the first ones of a permutation of all sorted combinations of that size drawn by a
    ``torch.Generator`` seeded with ``seed + size`` (the same on every machine, and a larger count extends a
    smaller one)."""
    out: list[tuple[int, ...]] = [(c,) for c in classes]
    for size, count in ((2, pairs), (3, triples)):
        every = list(itertools.combinations(range(num_classes), size))
        if count < 0 or count > len(every):
            raise ValueError(f"{count} sets of {size} classes asked for; {num_classes} classes have {len(every)}")
        g = torch.Generator().manual_seed(seed + size)
        out += [every[i] for i in torch.randperm(len(every), generator=g)[:count].tolist()]
    return out


def markdown_tables() -> str:
    """The docs' method and metric tables (docs/benchmark.md holds this text; a test keeps them equal)."""
    rows = ["| method | role | what it does | paper | tuning grid |", "|---|---|---|---|---|"]
    for m in methods().values():
        grid = "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in m.grid.items()) or "—"
        rows.append(f"| `{m.key}` ({m.label}) | {m.role} | {m.summary} | {m.paper} | {grid} |")
    rows += ["", "| metric | family | unit | read | best mark | formula | reference |", "|---|---|---|---|---|---|---|"]
    for k in METRICS.values():
        best = "closest to Retrain" if k.versus_retrain else ("highest" if k.higher_is_better else "lowest")
        rows.append(f"| `{k.key}` ({k.label}) | {k.family} | {k.unit} | {k.arrow} | {best} | {k.formula} | "
                    f"{k.reference} |")
    return "\n".join(rows) + "\n"
