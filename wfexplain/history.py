"""Per-step metrics of a run (training, unlearning, removal), kept instead of only the last ones.

The loops report progress through ``progress(step, total, metrics)`` (:mod:`wfexplain.engine`); a
:class:`Recorder` wraps that callback and keeps every report as a row (``stage``, ``step``, ``total``
and the metrics), optionally sending each metric to TensorBoard too (``torch.utils.tensorboard``,
which needs the ``tensorboard`` package: asked for explicitly, never implied). A checkpoint keeps its
rows beside the manifest as ``history.csv`` (:data:`HISTORY_FILE`): the training stage written by
``train``, the unlearning stage replaced by each ``unlearn``.

A report whose metrics hold :data:`PHASE` (``{"phase": "validation"}``, ``{"phase": "final evaluation"}``) says the
loop is paused for other work at that step: it is passed on (a progress bar says so, an ETA leaves it out of the pace)
but not recorded as a row.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .atomic import within

HISTORY_FILE = "history.csv"
PHASE = "phase"  # the metric key of a pause report (see the module docstring)
FINAL = "final evaluation"  # the pause after a loop's last step
_FIXED = ("stage", "step", "total")

Progress = Callable[[int, int, dict], None]

__all__ = ["FINAL", "HISTORY_FILE", "PHASE", "Recorder", "history_csv", "merge", "read_history"]


class Recorder:
    """Every ``progress`` report of one stage, in order; with ``tensorboard`` (a log directory) also as scalars."""

    def __init__(self, stage: str, tensorboard: str | os.PathLike | None = None):
        self.stage = stage
        self.rows: list[dict] = []
        self._writer = None
        if tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ModuleNotFoundError("sending metrics to TensorBoard needs the tensorboard package: "
                                          "pip install tensorboard") from None
            self._writer = SummaryWriter(str(tensorboard))

    def wrap(self, progress: Progress | None = None) -> Progress:
        """``progress`` with every report recorded first."""
        def report(step: int, total: int, metrics: dict) -> None:
            if PHASE in metrics:  # a pause of the loop (validation, final evaluation), not a step: passed on only
                if progress is not None:
                    progress(step, total, metrics)
                return
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self.rows.append({"stage": self.stage, "step": int(step), "total": int(total), **numbers})
            if self._writer is not None:
                for name, value in numbers.items():
                    self._writer.add_scalar(f"{self.stage}/{name}", value, step)
            if progress is not None:
                progress(step, total, metrics)

        return report

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def history_csv(rows: Sequence[Mapping]) -> bytes:
    """Rows as CSV: ``stage, step, total``, then every metric found (sorted); a missing or NaN value is empty."""
    metrics = sorted({k for r in rows for k in r} - set(_FIXED))
    out = io.StringIO()
    writer = csv.DictWriter(out, [*_FIXED, *metrics], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r.get(k)) for k in (*_FIXED, *metrics)})
    return out.getvalue().encode("utf-8")


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def read_history(directory: str | os.PathLike) -> list[dict]:
    """The rows of ``<directory>/history.csv`` (empty when there is none, or it is not a history: never an error)."""
    path = Path(directory) / HISTORY_FILE
    try:
        within(directory, path)
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return []
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        try:
            row: dict = {"stage": str(raw["stage"]), "step": int(raw["step"]), "total": int(raw["total"])}
            row |= {k: float(v) for k, v in raw.items() if k not in _FIXED and k is not None and v not in ("", None)}
        except (KeyError, TypeError, ValueError):
            return []
        rows.append(row)
    return rows


def merge(old: Iterable[Mapping], new: Sequence[Mapping]) -> list[dict]:
    """``old`` rows with the stages of ``new`` replaced by ``new``'s rows (a new unlearning round replaces the last)."""
    replaced = {r["stage"] for r in new}
    return [dict(r) for r in old if r.get("stage") not in replaced] + [dict(r) for r in new]
