"""The benchmark's catalogue: the unlearning methods compared and the metrics each is scored on.

Metrics follow the papers named in each entry (see docs/benchmark.md for their formulas and
directions); Retrain, the oracle that never saw the forgotten class, is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

BENCHMARK_FILE = "benchmark.json"  # beside the checkpoint (or in --out), with .md and .tex tables


@dataclass(frozen=True)
class Metric:
    """A benchmark column: what it measures, its direction and its formula."""

    label: str
    higher_is_better: bool
    formula: str
    reference: str

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {
    "forget_accuracy_test": Metric(
        "Forget acc. (test)", False, "accuracy on test images of the forgotten class", "Poppi et al. 2023; Retrain ~0"),
    "retain_accuracy_test": Metric(
        "Retain acc. (test)", True, "accuracy on test images of the other classes", "Poppi et al. 2023"),
    "forget_accuracy_train": Metric(
        "Forget acc. (train)", False, "accuracy on training images of the forgotten class", "Poppi et al. 2023"),
    "retain_accuracy_train": Metric(
        "Retain acc. (train)", True, "accuracy on training images of the other classes", "Poppi et al. 2023"),
    "mia_efficacy": Metric(
        "MIA-efficacy", True,
        "fraction of forget-train images an SVC on true-class confidence (fit: retain-train = member, "
        "test = non-member) calls non-member", "Jia et al. 2023 (Model Sparsity); Fan et al. 2024 (SalUn)"),
    "zrf": Metric(
        "ZRF", True, "1 - mean_i JS(p_model(x_i) || p_random(x_i)) over forget images, JS with m = (p+q)/2, natural log",
        "Chundawat et al. 2023"),
    "relearn_steps": Metric(
        "Relearn steps", True, "fine-tuning steps on a few forget images until forget accuracy is back to 50%",
        "Golatkar et al. 2020"),
    "probe_accuracy": Metric(
        "Probe acc.", False,
        "accuracy on the forgotten class's test images of a linear probe fit on penultimate features",
        "residual knowledge (linear probing, Alain & Bengio 2016)"),
    "seconds": Metric("Time (s)", False, "wall-clock time of the unlearning itself", "measured"),
}

METHODS: tuple[str, ...] = ("retrain", "wf", "finetune", "neggrad_plus", "random_labels", "salun", "ssd")
