"""Forget sets: the one place where a set of classes to forget is parsed, normalised, turned into a mask or text.

A forget set ``S`` selects rows of every memory matrix (Poppi et al., arXiv 2304.02049: the filter
of ``S`` is the product of its classes' rows). It can be written as None (forget nothing), a class
index, a sequence or tensor of indices, a boolean mask ``[B, num_classes]`` (one set per sample),
or, in a URL, a comma-separated string. Every name of a set, on disk or in a URL, is :func:`key`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import numpy as np
import torch

Forget = None | int | Sequence[int] | torch.Tensor
MAX_TEXT_CHARS = 2_000  # a longer textual forget list is ignored whole
MAX_TEXT_ENTRIES = 500  # entries read from a textual forget list; the rest are ignored
_INDEX = re.compile(r"[0-9]{1,6}")  # ASCII decimal only: '²'.isdigit() is True, int('²') fails


def classes(forget: Forget, num_classes: int | None = None, allow_empty: bool = True) -> list[int]:
    """Sorted unique class indices of a forget set (not a mask); ValueError naming a class out of range."""
    if forget is None:
        out: list[int] = []
    elif isinstance(forget, torch.Tensor) and forget.dtype == torch.bool:
        raise ValueError("a per-sample mask is not one forget set: pass class indices")
    else:
        if isinstance(forget, torch.Tensor):
            forget = forget.flatten().tolist()
        # int is an Integral already; it is named so that type checkers narrow it out of the else branch
        items = [forget] if isinstance(forget, int | numbers.Integral | np.integer) else list(forget)
        if not all(isinstance(c, numbers.Integral | np.integer) and not isinstance(c, bool) for c in items):
            raise ValueError(f"class indices must be integers, got {items[:5]!r}")
        out = sorted({int(c) for c in items})
    if num_classes is not None:
        bad = [c for c in out if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"class index {bad[0]} out of range: valid classes are 0..{num_classes - 1}")
    if not out and not allow_empty:
        raise ValueError(f"no forget class given: valid classes are 0..{(num_classes or 1) - 1}")
    return out


def mask(forget: Forget, num_classes: int, batch: int = 1) -> torch.Tensor | None:
    """A float mask ``[B or 1, num_classes]`` (1 = forget) for a forget set or a per-sample bool mask; None: nothing."""
    if forget is None:
        return None
    if isinstance(forget, torch.Tensor) and forget.dtype == torch.bool:
        if forget.ndim != 2 or forget.shape[1] != num_classes or forget.shape[0] not in (1, batch):
            raise ValueError(f"forget mask must be bool [{batch} or 1, {num_classes}], got {tuple(forget.shape)}")
        return forget.float()
    chosen = classes(forget, num_classes)
    if not chosen:
        return None
    out = torch.zeros(1, num_classes)
    out[0, chosen] = 1.0
    return out


def parse(text: str, num_classes: int) -> tuple[list[int], list[str], str | None]:
    """A textual forget list (``"0,6"``): the valid class indices, the dropped entries, and why the text was cut.

    Entries that are not ASCII decimal indices below ``num_classes`` are dropped (duplicates merged);
    a text over :data:`MAX_TEXT_CHARS` is ignored whole, entries past :data:`MAX_TEXT_ENTRIES` are not read.
    """
    if len(text) > MAX_TEXT_CHARS:
        return [], [], f"it is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}"
    parts = [p.strip() for p in text.split(",")]
    cut = f"only the first {MAX_TEXT_ENTRIES:,} entries were read" if len(parts) > MAX_TEXT_ENTRIES else None
    kept, dropped = set(), []
    for part in parts[:MAX_TEXT_ENTRIES]:
        if _INDEX.fullmatch(part) and int(part) < num_classes:
            kept.add(int(part))
        elif part:
            dropped.append(part)
    return sorted(kept), dropped, cut


def key(forget: Forget, sep: str = "-") -> str:
    """The one textual form of a forget set: its sorted unique class indices joined by ``sep`` ("" for none).

    ``"-"`` (the default) names it on disk: answers-file entries (``"1-5"``), Retrain oracles
    (``retrain/forget-1-5-seed0``), baked and removed files (``baked_forget_1-5.safetensors``).
    ``","`` is the list a URL or a command line gives (:func:`to_text`, read back by :func:`parse`).
    """
    return sep.join(map(str, classes(forget)))


def to_text(forget: Forget) -> str:
    """The comma-separated form of a forget set (``"0,6"``), as :func:`parse` reads it."""
    return key(forget, sep=",")
