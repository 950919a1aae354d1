"""Cached, shared resources and the per-session view.

Models and datasets are cached with ``st.cache_resource`` and shared by every session
and thread: they are never mutated. Conditions (the forget set) are arguments of the
model call. Per-session choices live in ``st.session_state``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from torch.utils.data import DataLoader, Subset

import wfexplain
from wfexplain import explain, export, figures
from wfexplain.data import load_dataset, stratified_subset
from wfexplain.distributed import resolve_device
from wfexplain.filtering import FilteredModel
from wfexplain.metrics import accuracy, per_class_accuracy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = ROOT / "checkpoints"
DEFAULT_CHECKPOINT = "fmnist-cnn"
EVAL_LIMIT = int(os.environ.get("WFEXPLAIN_EVAL_LIMIT", "2000"))  # test images behind the live views
DEVICE = os.environ.get("WFEXPLAIN_DEVICE", "cpu")  # cpu, cuda or cuda:N (models, predictions, attributions, jobs)


@dataclass(frozen=True)
class View:
    """What the current session looks at."""

    path: str  # checkpoint directory
    name: str  # short name shown in the UI (and in ?ckpt=)
    model: FilteredModel  # shared; never mutate
    forget: tuple[int, ...]  # the session's forget set (class indices)

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


def shipped_checkpoints() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED_DIR.glob("*/manifest.json"))


def resolve(name_or_path: str) -> Path:
    """A shipped checkpoint name or a directory path."""
    shipped = SHIPPED_DIR / name_or_path
    return shipped if (shipped / "manifest.json").is_file() else Path(name_or_path).expanduser()


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=8)
def _load(path: str, stamp: float) -> FilteredModel:
    return wfexplain.load(path, resolve_device(DEVICE))


def _stamp(path: str) -> float:
    manifest = Path(path) / "manifest.json"
    return manifest.stat().st_mtime if manifest.is_file() else 0.0


def get_model(path: str) -> FilteredModel:
    """The shared model of a checkpoint; reloaded when its manifest changes on disk."""
    return _load(path, _stamp(path))


@st.cache_resource(show_spinner="Loading test images…", max_entries=8)
def get_eval_data(dataset: str, img_size: int, limit: int = EVAL_LIMIT) -> EvalData:
    test = load_dataset(dataset, "test", img_size=img_size)
    idx = stratified_subset(test.targets, limit, seed=0)
    x, y = next(iter(DataLoader(Subset(test, idx.tolist()), batch_size=len(idx))))
    return EvalData(x, y, idx, test)


def eval_data(view: View) -> EvalData:
    return get_eval_data(view.model.info.name, view.model.info.img_size)


def predictions(path: str, forget: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, softmax probabilities) on the evaluation subset under a forget set."""
    return _predictions(path, _stamp(path), tuple(forget))


@st.cache_data(show_spinner=False, max_entries=512)
def _predictions(path: str, stamp: float, forget: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    model = _load(path, stamp)
    data = get_eval_data(model.info.name, model.info.img_size)
    with torch.inference_mode():
        device = next(model.parameters()).device
        probs = torch.cat([model(x.to(device), forget=list(forget) or None).softmax(1).cpu() for x in data.images.split(500)])
    return probs.argmax(1).numpy(), probs.numpy()


def attribution(path: str, x: np.ndarray, target: int, method: str,
                forget: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """One attribution map ``[H, W]`` and its insertion/deletion scores, cached per input and forget set."""
    return _attribution(path, _stamp(path), x, target, method, tuple(forget))


@st.cache_data(show_spinner=False, max_entries=256)
def _attribution(path: str, stamp: float, x: np.ndarray, target: int, method: str,
                 forget: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    model = _load(path, stamp)
    xt, f = torch.from_numpy(x).to(next(model.parameters()).device), list(forget) or None
    amap = explain.attribute(model, xt, target, method, forget=f)[0]
    return amap.cpu().numpy(), explain.insertion_deletion(model, xt, amap, target, forget=f)


def memory_figure_files(path: str, layers: tuple[str, ...], order: str) -> dict[str, bytes]:
    """The memory heatmap in every :data:`~wfexplain.figures.FIGURE_FORMATS` plus a screen ``"preview"`` PNG."""
    return _memory_figure_files(path, _stamp(path), tuple(layers), order)


@st.cache_data(show_spinner="Drawing the heatmap…", max_entries=32)
def _memory_figure_files(path: str, stamp: float, layers: tuple[str, ...], order: str) -> dict[str, bytes]:
    model = _load(path, stamp)
    fig = figures.memory_figure(model.memory, list(model.class_names), layers=list(layers), order_mode=order)
    return {**{fmt: figures.figure_bytes(fig, fmt) for fmt in figures.FIGURE_FORMATS},
            "preview": figures.figure_bytes(fig, "png", dpi=110)}


def memory_files(path: str) -> dict[str, bytes]:
    """The memory matrices as ``"csv"`` and ``"npz"`` bytes."""
    return _memory_files(path, _stamp(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _memory_files(path: str, stamp: float) -> dict[str, bytes]:
    model = _load(path, stamp)
    names = list(model.class_names)
    return {"csv": export.memory_csv(model.memory, names), "npz": export.memory_npz(model.memory, names)}


def baked_file(path: str, forget: tuple[int, ...], hard_threshold: float | None) -> bytes:
    """The baked backbone's state dict (safetensors bytes) for a forget set."""
    return _baked_file(path, _stamp(path), tuple(forget), hard_threshold)


@st.cache_data(show_spinner="Baking the filter into the weights…", max_entries=4)  # up to ~45 MB each (resnet18)
def _baked_file(path: str, stamp: float, forget: tuple[int, ...], hard_threshold: float | None) -> bytes:
    return export.baked_safetensors(_load(path, stamp), list(forget), hard_threshold=hard_threshold)


def current() -> View:
    """The session's view, as set up by the sidebar in ``app.py``."""
    return st.session_state["_view"]


def single_class_report(view: View) -> dict:
    """An :func:`wfexplain.evaluation.evaluate`-shaped report on the evaluation subset, from cached predictions."""
    y = eval_data(view).targets
    n = view.model.num_classes
    original = torch.as_tensor(predictions(view.path, ())[0])
    rows = [per_class_accuracy(torch.as_tensor(predictions(view.path, (c,))[0]), y, n) for c in range(n)]
    return {"num_images": len(y), "original_per_class": per_class_accuracy(original, y, n),
            "original_accuracy": accuracy(original, y), "forget_matrix": rows}
