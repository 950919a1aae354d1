"""Live scores of the session's view, from the cached predictions (what the Forget and Export pages show)."""

from __future__ import annotations

import numpy as np
import torch

from wfexplain.evaluation.metrics import accuracy, forget_accuracy, per_class_accuracy, retain_accuracy

from .resources import View, eval_data, predictions


def live_scores(y: np.ndarray, original: np.ndarray, filtered: np.ndarray, num_classes: int,
                forget: tuple[int, ...]) -> dict:
    """Per-class, forget and retain accuracy of the original and the filtered predictions (NaN where no image)."""
    t, p0, p1 = (torch.as_tensor(a) for a in (y, original, filtered))
    return {"original_per_class": per_class_accuracy(p0, t, num_classes), "per_class": per_class_accuracy(p1, t, num_classes),
            "forget": forget_accuracy(p1, t, forget), "original_forget": forget_accuracy(p0, t, forget),
            "retain": retain_accuracy(p1, t, forget), "original_retain": retain_accuracy(p0, t, forget)}


def view_set_row(view: View) -> dict:
    """The session's forget set as one row of the Export page's metric table (accuracies in percent)."""
    data = eval_data(view)
    y = data.targets.numpy()
    s = live_scores(y, predictions(view, ())[0], predictions(view, view.forget)[0], view.model.num_classes, view.forget)
    return {"class": "forget set: " + " + ".join(view.forget_names), "original_accuracy_pct": 100 * s["original_forget"],
            "forget_accuracy_pct": 100 * s["forget"], "retain_accuracy_pct": 100 * s["retain"],
            "original_retain_accuracy_pct": 100 * s["original_retain"]}


def single_class_report(view: View) -> dict:
    """An :func:`wfexplain.evaluation.evaluate`-shaped report on the evaluation subset, from cached predictions."""
    y = eval_data(view).targets
    n = view.model.num_classes
    original = torch.as_tensor(predictions(view, ())[0])
    rows = [per_class_accuracy(torch.as_tensor(predictions(view, (c,))[0]), y, n) for c in range(n)]
    return {"num_images": len(y), "original_per_class": per_class_accuracy(original, y, n),
            "original_accuracy": accuracy(original, y), "forget_matrix": rows}
