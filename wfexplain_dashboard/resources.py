"""Cached, shared resources and the per-session view.

Models and datasets are cached with ``st.cache_resource`` and shared by every session
and thread: they are never mutated. Conditions (the forget set) are arguments of the
model call. Per-session choices live in ``st.session_state``.
"""

from __future__ import annotations

import atexit
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import wfexplain
from wfexplain import explain  # its names load Captum on first use only
from wfexplain.answers import Answers
from wfexplain.data import subset_tensors
from wfexplain.distributed import resolve_device
from wfexplain.evaluation.metrics import accuracy, forget_accuracy, per_class_accuracy, retain_accuracy
from wfexplain.filtering import FilteredModel
from wfexplain.inference import Predictor
from wfexplain.manifest import MANIFEST_FILE
from wfexplain.splits import checkpoint_split

from .settings import (
    DEVICE,
    EVAL_LIMIT,
    PRECOMPUTE,
    SHIPPED_DIR,
    data_choices,
    extra_checkpoint_roots,
    user_checkpoint_dir,
)


@dataclass(frozen=True)
class View:
    """What the current session looks at."""

    path: str  # checkpoint directory (server-side: never shown)
    name: str  # its catalogue id, shown in the UI and in ?ckpt= (see checkpoint_catalogue)
    model: FilteredModel  # shared; never mutate
    forget: tuple[int, ...]  # the session's forget set (class indices)
    data: str | None = None  # id of the session's test-data directory (data_choices); None: the recorded one

    @property
    def forget_names(self) -> list[str]:
        return [self.model.class_names[c] for c in self.forget]


@dataclass(frozen=True)
class EvalData:
    """A seeded class-stratified subset of the test split, preprocessed once."""

    images: torch.Tensor  # [N, C, H, W] normalised inputs
    targets: torch.Tensor  # [N]
    indices: torch.Tensor  # positions in the full test split
    dataset: object  # the full test split (for .pil(i))


# ---------------------------------------------------------------- the checkpoints this server offers
# Server-side only: nothing a browser sends is ever turned into a path. A session names a checkpoint by its
# catalogue id; whatever is not in the catalogue is refused with one message that says nothing about the disk.


def _is_checkpoint(real: Path, root: Path) -> bool:
    try:
        manifest = (real / MANIFEST_FILE).resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_relative_to(root) and manifest.is_relative_to(root) and manifest.is_file()


def _scan(root: Path) -> list[tuple[str, Path]]:
    """``(name, resolved path)`` of the checkpoint directories directly under ``root`` (or ``root`` itself)."""
    try:
        real_root = root.resolve(strict=True)
        if _is_checkpoint(real_root, real_root):
            return [(root.name or real_root.name, real_root)]
        entries = sorted(real_root.iterdir()) if real_root.is_dir() else []
    except (OSError, RuntimeError):
        return []
    found = []
    for entry in entries:
        try:
            real = entry.resolve(strict=True)  # a symlink leaving the root is dropped
        except (OSError, RuntimeError):
            continue
        if real != real_root and real.is_dir() and _is_checkpoint(real, real_root):
            found.append((entry.name, real))
    return found


def _roots() -> list[tuple[str, Path, Path]]:
    """``(id prefix, root, folder the prefix stands for)``: shipped (bare names), user, then the extra roots."""
    roots = [("", SHIPPED_DIR, SHIPPED_DIR), ("user/", user_checkpoint_dir(), user_checkpoint_dir())]
    for root in extra_checkpoint_roots():
        folder = root.parent if (root / MANIFEST_FILE).is_file() else root  # a checkpoint itself: parent/NAME
        roots.append((f"{folder.name or 'root'}/", root, folder))
    return roots


def checkpoint_catalogue() -> dict[str, Path]:
    """Every checkpoint this server offers: public id -> resolved directory (scanned on each call: cheap).

    Shipped checkpoints by bare name (``fmnist-cnn``), the user folder's as ``user/NAME``, an extra root's as
    ``<root basename>/NAME``; a colliding id gets ``-2``, ``-3``… and a directory reached twice is listed once.
    """
    catalogue: dict[str, Path] = {}
    seen: set[Path] = set()
    for prefix, root, _ in _roots():
        for name, path in _scan(root):
            if path in seen:
                continue
            seen.add(path)
            label, k = f"{prefix}{name}", 1
            while label in catalogue:
                k += 1
                label = f"{prefix}{name}-{k}"
            catalogue[label] = path
    return catalogue


# Absolute (or ~) paths left in a message after the known ones are replaced by their ids.
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`<>|,;:()\[\]{}]+")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>!|~$:&])")  # what acts inside a line (# + - . only open one)
_BLOCK_OPENER = re.compile(r"[#+=-]|\d+\.")  # what acts at a line's start: heading, list item, setext underline


def public_text(text: str, known: dict[str, str] | None = None) -> str:
    """``text`` with server paths replaced: catalogue directories by their ids, any other absolute path by ``…``."""
    pairs = dict(known or {})
    for prefix, _, folder in _roots():
        for form in {str(folder), str(_real(folder))}:
            pairs.setdefault(form.rstrip("/") + "/", prefix)
    for ckpt_id, path in checkpoint_catalogue().items():
        pairs.setdefault(str(path), ckpt_id)
    for old in sorted(pairs, key=len, reverse=True):
        if len(old) > 1:
            text = text.replace(old, pairs[old])
    return _PATH.sub("…", text)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def public_manifest(manifest) -> dict:
    """A checkpoint's manifest as the dashboard shows it: every string passed through :func:`public_text`."""
    def clean(v):
        if isinstance(v, str):
            return public_text(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, list) else v

    return clean(manifest.to_json())


def escape_markdown(text: str, limit: int = 40, line_start: bool = False) -> str:
    """``text`` cut to ``limit`` characters, on one line and escaped: safe inside a line of Streamlit markdown.

    Data (class names, checkpoint and file names, messages quoting them) pass through it before any markdown
    (st.markdown, captions, image captions, alerts, radio labels, metric values): every character that links,
    formats or embeds inside a line (``[ ] ( ) < > ! * _ ` $ : & | ~ { } \\``) is backslash-escaped and line
    breaks become spaces. ``line_start``: the text begins the markdown (e.g. an image caption that is a class
    name), so a character that would open a block there (``#``, ``+``, ``-``, ``=``, ``1.``) is escaped too and
    leading spaces (an indented code block) are dropped. The text reads exactly as given.
    """
    cut = text if len(text) <= limit else text[:limit] + "…"
    out = _MARKDOWN.sub(r"\\\1", " ".join(cut.splitlines()))
    if line_start:
        out = out.lstrip()
        if m := _BLOCK_OPENER.match(out):
            out = out[: m.end() - 1] + "\\" + out[m.end() - 1 :]
    return out


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=8)
def _load(path: str, stamp: float) -> FilteredModel:
    return wfexplain.load(path, resolve_device(DEVICE))


def _stamp(path: str) -> float:
    manifest = Path(path) / MANIFEST_FILE
    return manifest.stat().st_mtime if manifest.is_file() else 0.0


def get_model(path: str) -> FilteredModel:
    """The shared model of a checkpoint; reloaded when its manifest changes on disk."""
    return _load(path, _stamp(path))


@st.cache_resource(show_spinner="Loading test images…", max_entries=8)
def _eval_data(path: str, stamp: float, data: str | None, limit: int = EVAL_LIMIT) -> EvalData:
    root = data_choices()[data] if data is not None else None
    test = checkpoint_split(_load(path, stamp).manifest, "test", root)
    x, y, idx = subset_tensors(test, limit)
    return EvalData(x, y, idx, test)


def eval_data(view: View) -> EvalData:
    """The session checkpoint's evaluation subset, preprocessed as its network expects.

    If the test data cannot be read, the page shows why (no server path) and stops.
    """
    try:
        return _eval_data(view.path, _stamp(view.path), view.data)
    except (OSError, ValueError) as e:  # DatasetError is an OSError
        st.error(f"The test data of `{view.name}` cannot be read: {escape_markdown(public_text(str(e)), 400)}"
                 + (" Choose its directory under **Test data** in the sidebar." if data_choices() else
                    " The server can offer data directories with WFEXPLAIN_DATA_DIRS."))
        st.stop()


def predictions(view: View, forget: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, softmax probabilities) on the evaluation subset under a forget set."""
    labels, probs = live_answers(view).get(tuple(forget))
    return labels.numpy(), probs.numpy()


def live_answers(view: View) -> Answers:
    """The shared :class:`~wfexplain.answers.Answers` of the session's checkpoint and evaluation subset.

    Built once per checkpoint and data (the fast inference path, answers read back from disk when their
    file is signed and valid); with ``WFEXPLAIN_PRECOMPUTE`` a background thread then evaluates every
    single class and pair (:meth:`~wfexplain.answers.Answers.background`: a failure, e.g. a full disk or
    an error mid-way, is recorded in ``answers.error``/``answers.note`` for the page, never lost). If the
    test data cannot be read, the page shows why and stops.
    """
    eval_data(view)
    return _answers(view.path, _stamp(view.path), view.data)


@st.cache_resource(show_spinner="Preparing the fast evaluation path…", max_entries=8)
def _answers(path: str, stamp: float, data: str | None) -> Answers:
    answers = Answers(Predictor(_load(path, stamp), _eval_data(path, stamp, data).images), path)
    if PRECOMPUTE:
        stop = threading.Event()
        thread = threading.Thread(target=answers.background, kwargs={"should_stop": stop.is_set},
                                  name="wfexplain-precompute", daemon=True)
        thread.start()
        atexit.register(_finish, stop, thread)
    return answers


def _finish(stop: threading.Event, thread: threading.Thread) -> None:
    """At exit, let the precompute thread stop between two sets (torch aborts if killed mid-forward)."""
    stop.set()
    thread.join(timeout=30)


def attribution(path: str, x: np.ndarray, target: int, method: str,
                forget: tuple[int, ...], layer: str | None = None) -> tuple[np.ndarray, dict]:
    """One attribution map ``[H, W]`` and its insertion/deletion scores, cached per input, forget set and layer.

    ``layer`` (Layer Grad-CAM only; None = :func:`wfexplain.explain.default_gradcam_layer`) is a module path.
    """
    return _attribution(path, _stamp(path), x, target, method, tuple(forget), layer)


@st.cache_data(show_spinner=False, max_entries=256)
def _attribution(path: str, stamp: float, x: np.ndarray, target: int, method: str,
                 forget: tuple[int, ...], layer: str | None = None) -> tuple[np.ndarray, dict]:
    model = _load(path, stamp)
    xt, f = torch.from_numpy(x).to(next(model.parameters()).device), list(forget) or None
    amap = explain.attribute(model, xt, target, method, forget=f, **({"layer": layer} if layer else {}))[0]
    return amap.cpu().numpy(), explain.insertion_deletion(model, xt, amap, target, forget=f)


def memory_figure_files(path: str, layers: tuple[str, ...], order: str) -> dict[str, bytes]:
    """The memory heatmap in every :data:`~wfexplain.figures.FIGURE_FORMATS` plus a screen ``"preview"`` PNG."""
    return _memory_figure_files(path, _stamp(path), tuple(layers), order)


@st.cache_data(show_spinner="Drawing the heatmap…", max_entries=32)
def _memory_figure_files(path: str, stamp: float, layers: tuple[str, ...], order: str) -> dict[str, bytes]:
    from wfexplain import figures  # matplotlib: only when a heatmap is drawn

    model = _load(path, stamp)
    fig = figures.memory_figure(model.memory, list(model.class_names), layers=list(layers), order_mode=order)
    return {**{fmt: figures.figure_bytes(fig, fmt) for fmt in figures.FIGURE_FORMATS},
            "preview": figures.figure_bytes(fig, "png", dpi=110)}


def memory_files(path: str) -> dict[str, bytes]:
    """The memory matrices as ``"csv"`` and ``"npz"`` bytes."""
    return _memory_files(path, _stamp(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _memory_files(path: str, stamp: float) -> dict[str, bytes]:
    from wfexplain import export  # pandas, matplotlib: only on the Export page

    model = _load(path, stamp)
    names = list(model.class_names)
    return {"csv": export.memory_csv(model.memory, names), "npz": export.memory_npz(model.memory, names)}


def baked_file(path: str, forget: tuple[int, ...], hard_threshold: float | None) -> bytes:
    """The baked backbone's state dict (safetensors bytes) for a forget set."""
    return _baked_file(path, _stamp(path), tuple(forget), hard_threshold)


@st.cache_data(show_spinner="Baking the filter into the weights…", max_entries=4)  # up to ~45 MB each (resnet18)
def _baked_file(path: str, stamp: float, forget: tuple[int, ...], hard_threshold: float | None) -> bytes:
    from wfexplain import export

    return export.baked_safetensors(_load(path, stamp), list(forget), hard_threshold=hard_threshold)


def current() -> View:
    """The session's view, as set up by the sidebar in ``app.py``."""
    return st.session_state["_view"]


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
