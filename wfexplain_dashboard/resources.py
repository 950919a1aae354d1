"""Cached, shared resources and the per-session view (the catalogue: :mod:`.catalogue`; safe text: :mod:`.text`;
live scores: :mod:`.scoring`).

Models and datasets are cached with ``st.cache_resource`` and shared by every session
and thread: they are never mutated. Conditions (the forget set) are arguments of the
model call. Per-session choices live in ``st.session_state``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
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
from wfexplain.explain.deletion import DeletionConfig
from wfexplain.filtering import FilteredModel
from wfexplain.inference import Predictor
from wfexplain.manifest import MANIFEST_FILE
from wfexplain.splits import checkpoint_split

from .settings import DEVICE, EVAL_LIMIT, PRECISION, PRECOMPUTE, data_choices
from .text import escape_markdown, public_text


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


def ood_detector(view: View):
    """The session checkpoint's out-of-distribution :class:`~wfexplain.explain.ood.Detector`, built once per checkpoint
    and data (:func:`~wfexplain.explain.ood.checkpoint_detector`: thresholds on up to 2,000 validation images, the
    Mahalanobis statistics on up to 5,000 training images, its rate measured on the evaluation subset's size of test
    images); None when the checkpoint's training data cannot be read."""
    try:
        return _ood_detector(view.path, _stamp(view.path), view.data)
    except (OSError, ValueError):  # DatasetError is an OSError, CheckpointError a ValueError
        return None


@st.cache_resource(show_spinner="Calibrating the out-of-distribution check on the checkpoint's own images…",
                   max_entries=8)
def _ood_detector(path: str, stamp: float, data: str | None):
    from wfexplain.explain.ood import checkpoint_detector

    root = data_choices()[data] if data is not None else None
    return checkpoint_detector(_load(path, stamp), root, cal_limit=2000, fit_limit=5000, test_limit=EVAL_LIMIT)


def predictions(view: View, forget: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, their softmax probabilities) on the evaluation subset under a forget set."""
    labels, confidence = live_answers(view).get(tuple(forget))
    return labels.long().numpy(), confidence.float().numpy()


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
    answers = Answers(Predictor(_load(path, stamp), _eval_data(path, stamp, data).images, precision=PRECISION), path)
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


def _caller_side(progress: Callable | None) -> Callable:
    """``progress`` for a cached function to call while it computes: run in the caller's context, not the cached
    function's, so it may draw into an element made outside (Streamlit would otherwise record those calls and replay
    them on a cache hit, where the element no longer exists: ``CacheReplayClosureError``)."""
    import contextvars

    outside = contextvars.copy_context()

    def report(*args) -> None:
        if progress is not None:
            outside.run(progress, *args)

    return report


# ---------------------------------------------------------------- deletion curves (the Memory page)

DELETION = DeletionConfig()  # the fractions, draws and seed of `wfexplain explanations` by default


def training_images(view: View) -> tuple[int, str | None]:
    """(how many training images the checkpoint's backbone saw, None), or (0, why they cannot be read: no server
    path in it), e.g. for an imported model whose training data is not on this server."""
    try:
        return _training_images(view.path, _stamp(view.path), view.data), None
    except (OSError, ValueError) as e:  # DatasetError is an OSError, CheckpointError a ValueError
        return 0, public_text(str(e))


@st.cache_data(show_spinner="Looking for the checkpoint's training images…", max_entries=16)
def _training_images(path: str, stamp: float, data: str | None) -> int:
    from wfexplain.splits import checkpoint_train_split

    root = data_choices()[data] if data is not None else None
    return len(checkpoint_train_split(_load(path, stamp).checkpoint_manifest(), root))


def deletion_report(view: View, members: tuple[int, ...], test_limit: int, train_limit: int, progress=None) -> dict:
    """:func:`wfexplain.explain.deletion.measure` of one class (``members`` of one) or one forget set on seeded,
    class-stratified subsets of ``test_limit`` test and ``train_limit`` training images, with the CLI's fractions,
    draws and seed; cached per checkpoint (path and manifest time), data, set and limits. ``progress(done, total,
    step)`` is called while it measures (not on a cached answer; :func:`_caller_side`)."""
    say = _caller_side(progress)
    return _deletion_report(view.path, _stamp(view.path), view.data, tuple(sorted(members)), int(test_limit),
                            int(train_limit), DELETION.fractions, DELETION.draws, DELETION.seed,
                            _progress=lambda done, total, info: say(done, total, str(info.get("step", ""))))


@st.cache_data(show_spinner=False, max_entries=32)
def _deletion_report(path: str, stamp: float, data: str | None, members: tuple[int, ...], test_limit: int,
                     train_limit: int, fractions: tuple[float, ...], draws: int, seed: int, _progress=None) -> dict:
    from wfexplain.explain.deletion import measure
    from wfexplain.splits import checkpoint_train_split

    say = _progress or (lambda done, total, info: None)
    say(0, 1, {"step": "reading the images"})
    # A private copy: measuring hooks the network, and the shared one serves the other sessions meanwhile.
    model = wfexplain.load(path, resolve_device(DEVICE))
    manifest, root = model.checkpoint_manifest(), data_choices()[data] if data is not None else None
    x, y, _ = subset_tensors(checkpoint_split(manifest, "test", root), test_limit, seed)
    xt, yt, _ = subset_tensors(checkpoint_train_split(manifest, root), train_limit, seed)
    say(0, 1, {"step": "activations and gradients of the training images"})
    one = len(members) == 1
    report = measure(model, x, y, xt, yt, classes=list(members) if one else [], sets=[] if one else [list(members)],
                     fractions=fractions, draws=draws, seed=seed, progress=_progress)
    return {**report, "limit": test_limit, "train_limit": train_limit}


@st.cache_data(show_spinner="Drawing the deletion curves…", max_entries=32)
def deletion_figure_files(entry: dict, fractions: tuple[float, ...], title: str) -> dict[str, bytes]:
    """The deletion curves of one class's or set's entry in every :data:`~wfexplain.figures.FIGURE_FORMATS` plus a
    screen ``"preview"`` PNG (``title``: plain text, drawn as written)."""
    from wfexplain import figures  # matplotlib: only when curves are drawn

    fig = figures.deletion_figure(entry, fractions, title)
    return {**{fmt: figures.figure_bytes(fig, fmt) for fmt in figures.FIGURE_FORMATS},
            "preview": figures.figure_bytes(fig, "png", dpi=110)}


# ---------------------------------------------------------------- attributions with options, and over data (Explain)


def attribution(path: str, x: np.ndarray, target: int, method: str, forget: tuple[int, ...],
                       options: tuple[tuple[str, object], ...] = ()) -> tuple[np.ndarray, dict]:
    """One attribution map ``[H, W]`` and its insertion/deletion scores, cached per input, forget set and method
    options (``MethodOptions.for_method(method).items()``: IG ``n_steps``, Gradient SHAP ``n_samples``, Occlusion
    ``window``/``stride``, Grad-CAM ``layer``)."""
    return _attribution(path, _stamp(path), x, target, method, tuple(forget), tuple(sorted(options)))


@st.cache_data(show_spinner=False, max_entries=256)
def _attribution(path: str, stamp: float, x: np.ndarray, target: int, method: str, forget: tuple[int, ...],
                        options: tuple[tuple[str, object], ...]) -> tuple[np.ndarray, dict]:
    model = _load(path, stamp)
    xt, f = torch.from_numpy(x).to(next(model.parameters()).device), list(forget) or None
    amap = explain.attribute(model, xt, target, method, forget=f, **dict(options))[0]
    return amap.cpu().numpy(), explain.insertion_deletion(model, xt, amap, target, forget=f)


def class_attributions(view: View, cls: int, n: int, method: str, options: tuple[tuple[str, object], ...],
                       forget: tuple[int, ...], target: str, progress=None) -> dict:
    """:func:`wfexplain.explain.over_data.class_attributions` of the first ``n`` images of class ``cls`` in the
    evaluation subset (their test-split ids kept), for one method, original vs filtered under ``forget``, with
    ``target`` ``"true"``, ``"original"`` or ``"filtered"``; cached per checkpoint (path and manifest time), data,
    class, ``n``, method, options, forget set and target, so adding a method computes only that method.
    ``progress(done, total)`` is called while it computes (not on a cached answer; :func:`_caller_side`). If the test
    data cannot be read, the page says why."""
    eval_data(view)
    return _class_attributions(view.path, _stamp(view.path), view.data, int(cls), int(n), method,
                               tuple(sorted(options)), tuple(sorted(forget)), target, _progress=_caller_side(progress))


@st.cache_data(show_spinner=False, max_entries=32)
def _class_attributions(path: str, stamp: float, data: str | None, cls: int, n: int, method: str,
                        options: tuple[tuple[str, object], ...], forget: tuple[int, ...], target: str,
                        _progress=None) -> dict:
    from wfexplain.explain import over_data

    model, ev = _load(path, stamp), _eval_data(path, stamp, data)
    rows = torch.nonzero(ev.targets == cls).flatten()[:n]
    return over_data.class_attributions(model, ev.images[rows], ev.targets[rows], ev.indices[rows], method,
                                        list(forget), target, dict(options), progress=_progress)


@st.cache_data(show_spinner=False, max_entries=64)
def attribution_panel(seen: np.ndarray, photo: np.ndarray, original: np.ndarray, filtered: np.ndarray,
                      title: str) -> dict[str, bytes]:
    """One method's Explain panel (the photo, the model's input, both maps and their difference) in every
    :data:`~wfexplain.figures.FIGURE_FORMATS` plus a screen ``"preview"`` PNG: drawn once per input, maps and title, so
    a rerun (another method added, a download) does not draw every panel again in three formats."""
    from wfexplain import figures  # matplotlib: only when a panel is drawn

    fig = figures.attribution_figure(seen, {"original": original, "filtered": filtered}, title=title, original=photo,
                                     difference=filtered - original, difference_title="filtered − original")
    return {**{fmt: figures.figure_bytes(fig, fmt) for fmt in figures.FIGURE_FORMATS},
            "preview": figures.figure_bytes(fig, "png", dpi=110)}
