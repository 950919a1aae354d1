"""Exports: bytes for the dashboard's download buttons, and a directory writer for the CLI.

Every writer returns ``bytes`` (``st.download_button`` takes them as they are);
:func:`export_all` writes a directory, each file atomically (temporary file in the same
directory + ``os.replace``), so an interrupted export never leaves a truncated file. No
pickle anywhere: NPZ holds plain arrays (loadable with ``allow_pickle=False``) and
baked models are safetensors. This module never imports streamlit.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import save as safetensors_save
from torch import nn

from .atomic import atomic_write, check_space, replace_dir
from .baked import BAKED_FORMAT as BAKED_FORMAT  # re-exported with rebuild_baked and baked_onnx: export's names
from .baked import baked_metadata
from .baked import baked_onnx as baked_onnx
from .baked import rebuild_baked as rebuild_baked
from .explain import analysis
from .figures.common import to_numpy
from .figures.paper import FIGURE_FORMATS, figure_bytes, memory_figure
from .filtering import FilteredModel, bake
from .forget import classes as forget_list
from .forget import key as forget_key
from .history import history_csv
from .latex import table_latex
from .spreadsheet import csv_safe


def _memory_arrays(memory) -> dict[str, np.ndarray]:
    if isinstance(memory, FilteredModel):
        memory = memory.memory
    return {layer: to_numpy(a).astype(np.float32) for layer, a in memory.items()}


# ---------------------------------------------------------------- memory


def memory_csv(memory, class_names: Sequence[str]) -> bytes:
    """Long-format CSV, one row per entry: ``layer, component, class_index, class_name, alpha``.

    Text cells are made inert for spreadsheets (:func:`csv_safe`, the OWASP CSV-injection rule)."""
    frames = []
    names = [str(c) for c in class_names]
    for layer, a in _memory_arrays(memory).items():
        n, k = a.shape
        if n != len(names):
            raise ValueError(f"layer {layer!r} has {n} classes but {len(names)} class names were given")
        cls, comp = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        frames.append(pd.DataFrame({
            "layer": layer, "component": comp.ravel(), "class_index": cls.ravel(),
            "class_name": [names[c] for c in cls.ravel()], "alpha": a.ravel().astype(np.float64),
        }))
    df = pd.concat(frames, ignore_index=True)
    return csv_safe(df).to_csv(index=False, float_format="%.9g").encode("utf-8")


def memory_npz(memory, class_names: Sequence[str]) -> bytes:
    """Compressed NPZ: one float32 ``[N, K]`` array per layer (key = layer path) and
    ``class_names`` (a unicode array; loads with ``allow_pickle=False``)."""
    arrays = _memory_arrays(memory)
    if "class_names" in arrays:
        raise ValueError("a layer is named 'class_names', which clashes with the class-name array")
    buf = io.BytesIO()
    # numpy's stub types **kwds beside allow_pickle: bool, and mypy checks the unpacked arrays against both
    np.savez_compressed(buf, **arrays, class_names=np.array([str(c) for c in class_names], dtype=str))  # type: ignore[arg-type]
    return buf.getvalue()


# ---------------------------------------------------------------- metrics tables


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def metrics_table(report: Mapping, class_names: Sequence[str], mean_row: bool = False) -> pd.DataFrame:
    """Per-class metrics of the single-class filters from an :func:`~wfexplain.evaluation.evaluate` report.

    With ``F = report["forget_matrix"]`` (row c = filter {c}, column k = accuracy on test
    class k) and ``o = report["original_per_class"]``, row ``c`` has:

    - ``original_accuracy`` = ``o[c]`` (original network, higher is better);
    - ``forget_accuracy`` = ``F[c][c]`` (class c under its own filter, lower is better);
    - ``retain_accuracy`` = ``mean_{k != c} F[c][k]`` (the other classes under filter c,
      higher is better) — an unweighted mean over classes, NaN entries skipped;
    - ``original_retain_accuracy`` = ``mean_{k != c} o[k]`` (the same classes, original
      network: the reference for ``retain_accuracy``).

    Accuracies are fractions in ``[0, 1]``. ``mean_row`` appends a ``"mean"`` row.
    The index is the class index.
    """
    fm = [[float(v) for v in row] for row in report["forget_matrix"]]
    orig = [float(v) for v in report["original_per_class"]]
    n = len(fm)
    names = [str(c) for c in class_names]
    if len(names) != n or len(orig) != n or any(len(r) != n for r in fm):
        raise ValueError(f"the report has {n} classes (forget matrix {n} x {[len(r) for r in fm]}, "
                         f"{len(orig)} original accuracies) but {len(names)} class names were given")
    rows = [{"class": names[c], "original_accuracy": orig[c], "forget_accuracy": fm[c][c],
             "retain_accuracy": _nanmean([fm[c][k] for k in range(n) if k != c]),
             "original_retain_accuracy": _nanmean([orig[k] for k in range(n) if k != c])} for c in range(n)]
    df = pd.DataFrame(rows, index=pd.RangeIndex(n, name="class_index"))
    if mean_row:
        means = {col: _nanmean(df[col].tolist()) for col in df.columns if col != "class"}
        df = pd.concat([df, pd.DataFrame([{"class": "mean", **means}], index=pd.Index(["mean"], name="class_index"))])
    return df


def in_percent(df: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A :func:`metrics_table` with every accuracy in percent, rounded to ``digits`` decimals (columns ``*_pct``).

    Rounding happens here, once, so files carry no float32 noise (``0.8799999952316284`` -> ``88.0``).
    """
    cols = [c for c in df.columns if str(c).endswith("accuracy")]
    out = df.copy()
    out[cols] = (out[cols].astype(float) * 100).round(digits)
    return out.rename(columns={c: f"{c}_pct" for c in cols})


def with_forget_set_row(table: pd.DataFrame, row: Mapping) -> pd.DataFrame:
    """``table`` (of :func:`in_percent`) with one more row, e.g. a whole forget set's accuracies (rounded alike)."""
    extra = pd.DataFrame([dict(row)], index=pd.Index(["set"], name=table.index.name))
    numeric = [c for c in extra.columns if c != "class"]
    extra[numeric] = extra[numeric].astype(float).round(1)
    return pd.concat([table, extra[table.columns]])


def metrics_caption(model: FilteredModel, num_images: int | None) -> str:
    """The caption of a metric table: what each column is, its direction, its unit and the images behind it."""
    return (f"Single-class forgetting with weight filtering (Poppi et al., arXiv 2304.02049) on "
            f"{model.backbone_name} / {model.info.name}, accuracies in percent"
            + (f", on {num_images:,} seeded, class-stratified test images" if num_images else "")
            + ". For each class: Forget, its own test images under its filter (lower is better); Retain, the other "
            "classes' images under the same filter (higher is better); Original and Orig. retain, the same images "
            "under the original network, for reference.")


def metrics_export(model: FilteredModel, report: Mapping, label: str,
                   set_row: Mapping | None = None) -> tuple[pd.DataFrame, str, bytes]:
    """``(table, caption, LaTeX)`` of ``wfexplain export`` and the dashboard's Export page: the table in percent
    with a mean row, plus ``set_row`` (one filter forgetting a set, :func:`with_forget_set_row`) if given."""
    table = in_percent(metrics_table(report, list(model.class_names), mean_row=True))
    caption = metrics_caption(model, report.get("num_images"))
    if set_row is not None:
        table = with_forget_set_row(table, set_row)
        caption += " The last row is one filter forgetting the whole set (Forget: the set's images; Retain: all others)."
    return table, caption, table_latex(table, caption, label, float_format="{:.1f}")


def table_csv(df: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV, without the index (``class`` is a column); headers and text cells made inert for
    spreadsheets (:func:`csv_safe`, the OWASP CSV-injection rule)."""
    return csv_safe(df).to_csv(index=False).encode("utf-8")


# ---------------------------------------------------------------- baked model


def baked_safetensors(model: FilteredModel, forget, hard_threshold: float | None = None) -> bytes:
    """The backbone with ``forget``'s filter folded into its weights, as safetensors bytes.

    :func:`rebuild_baked` rebuilds the module from these bytes alone (or load them with
    ``safetensors.torch.load(data)`` into ``wfexplain.create_backbone(backbone, num_classes, in_chans, img_size)``
    for a built-in backbone); the string metadata (:func:`wfexplain.baked.baked_metadata`) records ``backbone``
    (the architecture spec), ``arch_kwargs`` (JSON), ``forget`` (JSON list), ``class_names`` (JSON),
    ``num_classes``, ``in_chans``, ``img_size``, ``mean``/``std`` (JSON), ``hard_threshold`` and the wfexplain version.
    """
    classes = forget_list(forget)
    if not classes:
        raise ValueError("baked_safetensors needs at least one class to forget")
    return network_safetensors(model, bake(model, classes, hard_threshold=hard_threshold), classes, {
        "hard_threshold": "none" if hard_threshold is None else repr(float(hard_threshold))})


def network_safetensors(model: FilteredModel, net: nn.Module, classes: list[int], extra: Mapping[str, str]) -> bytes:
    """``net`` (a plain copy of ``model``'s backbone without ``classes``) as safetensors bytes, with the metadata
    of :func:`baked_safetensors` plus ``extra`` (a removed model: ``mode``, ``removal``, ``removed_weights``)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    return safetensors_save(state, metadata=baked_metadata(model, classes, extra))


def removed_safetensors(model: FilteredModel, classes: list[int], result: Mapping, cfg) -> bytes:
    """A :func:`wfexplain.removal.remove` result (``cfg`` its :class:`~wfexplain.removal.RemovalConfig`) as bytes;
    the repair's per-step history rides along as CSV text in the metadata (``history``)."""
    return network_safetensors(model, result["model"], classes, {
        "mode": "removed", "removal": json.dumps(dataclasses.asdict(cfg)), "removed_weights": str(result["removed_weights"]),
        "hard_threshold": repr(float(cfg.threshold)), "history": history_csv(result.get("history", [])).decode()})


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` atomically: ``path`` holds the old bytes or the new ones, never a mix (an existing file is
    replaced only with ``overwrite``, checked at the instant the file goes in)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), overwrite)
    return Path(path)


# ---------------------------------------------------------------- directory export


def baked_name(forget, hard_threshold: float | None) -> str:
    """The file name of a baked model: its forget set, and the threshold of a hard bake."""
    hard = f"_hard{hard_threshold:g}" if hard_threshold is not None else ""
    return "baked_forget_" + forget_key(forget) + hard + ".safetensors"


def removed_name(forget) -> str:
    """The file name of a removed model (:func:`removed_safetensors`)."""
    return "removed_forget_" + forget_key(forget) + ".safetensors"


def attribution_name(checkpoint: str, method: str, target: int, forget, fmt: str) -> str:
    """The file name of an attribution panel: checkpoint, method, target and forget set (distinct per choice)."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in method).strip("_")
    chosen = forget_key(forget) or "none"
    return f"{checkpoint.replace('/', '_')}-attribution-{slug}-target{target}-forget{chosen}.{fmt}"


# What an export writes (any formats, forget sets, thresholds): the only entries its directory may hold.
EXPORT_FILE = re.compile(r"memory_heatmaps\.(png|svg|pdf)|memory\.(csv|npz)|metrics\.(csv|tex)"
                         r"|baked_forget_\d+(-\d+)*(_hard[-+.e\d]+)?\.(safetensors|onnx)")


def check_outputs(out_dir: str | os.PathLike, formats: Sequence[str], forget, hard_threshold: float | None,
                  metrics: bool, overwrite: bool = False, onnx: bool = False) -> list[str]:
    """The file names an export writes; ``FileExistsError`` naming those that exist (unless ``overwrite``).

    The directory is the export's own: it is replaced whole, so one holding anything an export does not
    write (another file, a folder, a symlink) is refused (``ValueError``) rather than rebuilt. Callers check
    this before any work (the CLI before its evaluation).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out_dir} is a file, not a directory")
    foreign = sorted(p.name for p in out.iterdir() if p.is_symlink() or not p.is_file()
                     or not EXPORT_FILE.fullmatch(p.name)) if out.is_dir() else []
    if foreign:
        raise ValueError(f"{out_dir} holds {', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}, which export "
                         "does not write: export replaces its directory whole, so give it a directory of its own")
    planned = [f"memory_heatmaps.{fmt}" for fmt in formats] + ["memory.csv", "memory.npz"] + \
        (["metrics.csv", "metrics.tex"] if metrics else [])
    if forget_list(forget):
        planned.append(baked_name(forget, hard_threshold))
        if onnx:
            planned.append(baked_name(forget, hard_threshold).replace(".safetensors", ".onnx"))
    elif onnx:
        raise ValueError("an ONNX export is of a baked model: give the classes to forget")
    existing = [name for name in planned if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}")
    return planned


def export_all(model: FilteredModel, out_dir: str | os.PathLike, forget=(), layers: Sequence[str] | None = None,
               formats: Sequence[str] = FIGURE_FORMATS, report: Mapping | None = None, order_mode: str = "original",
               hard_threshold: float | None = None, overwrite: bool = False, onnx: bool = False) -> list[Path]:
    """Write the paper/archive exports of a model into ``out_dir`` (created if needed).

    Files (the directory is replaced whole: a kill or a full disk leaves the old one, a reader never sees a mix;
    other files in it are kept):

    - ``memory_heatmaps.<fmt>`` for each of ``formats``: :func:`wfexplain.figures.memory_figure`
      of ``layers`` (all by default) ordered by ``order_mode``;
    - ``memory.csv`` and ``memory.npz``: the full memory (all layers);
    - ``metrics.csv`` and ``metrics.tex`` (with a mean row) when an evaluation ``report`` is given;
    - ``baked_forget_<c1>-<c2>....safetensors`` when ``forget`` is non-empty
      (``..._hard<threshold>.safetensors`` when hard-baked), and with ``onnx`` the same network as
      ``baked_forget_....onnx`` (:func:`baked_onnx`; needs the ``onnx`` extra).

    Arguments are validated, and existing files refused unless ``overwrite``, before anything is
    written (``FileExistsError`` naming them). Returns the written paths.
    """
    formats = list(formats)
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad:
        raise ValueError(f"unknown figure format {bad[0]!r}; choose from {', '.join(FIGURE_FORMATS)}")
    if order_mode not in analysis.ORDER_MODES:
        raise ValueError(f"unknown order mode {order_mode!r}; choose one of {', '.join(analysis.ORDER_MODES)}")
    classes = forget_list(forget)
    model.forget_mask(classes or None)  # validates the class indices
    if layers is not None:
        analysis.select_layers(analysis.as_memory(model), layers)  # validates the layer names
    out = Path(out_dir).absolute()
    if Path.cwd().is_relative_to(out):
        raise ValueError(f"{out_dir} is the working directory or holds it: export swaps its directory in whole, "
                         "so name a directory of its own")
    check_outputs(out, formats, classes, hard_threshold, report is not None, overwrite, onnx)
    names = list(model.class_names)
    fig = memory_figure(model.memory, names, layers=layers, order_mode=order_mode)
    files = {f"memory_heatmaps.{fmt}": figure_bytes(fig, fmt) for fmt in formats}
    files |= {"memory.csv": memory_csv(model.memory, names), "memory.npz": memory_npz(model.memory, names)}
    if report is not None:
        df, _, tex = metrics_export(model, report, f"tab:wf-{model.info.name}")
        files |= {"metrics.csv": table_csv(df), "metrics.tex": tex}
    if classes:
        files[baked_name(classes, hard_threshold)] = baked_safetensors(model, classes, hard_threshold)
        if onnx:
            files[baked_name(classes, hard_threshold).replace(".safetensors", ".onnx")] = baked_onnx(
                model, classes, hard_threshold)
    check_space(out, sum(map(len, files.values())))
    # Whole or absent: the directory is rebuilt beside itself (earlier exports' other files hard-linked in) and
    # swapped in at once, under its writers' lock, where the files are checked again against a concurrent export.
    with replace_dir(out, overwrite=True, carry=lambda d: [p.name for p in d.iterdir() if p.name not in files]) as tmp:
        check_outputs(out, formats, classes, hard_threshold, report is not None, overwrite, onnx)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return [out / name for name in files]
