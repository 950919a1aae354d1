"""Answers before they are asked: every single class and every pair, evaluated once per checkpoint and
evaluation subset, kept on disk and read back instantly by later sessions and restarts.

:class:`Answers` holds the predicted labels and softmax probabilities of a :class:`~wfexplain.inference.Predictor`'s
inputs under forget sets. :meth:`Answers.fill` computes every single class and every pair (the
dashboard runs it in a background thread when a checkpoint is opened) and writes them to one
safetensors file, ``answers-<key>.safetensors``, in the cache directory (``<checkpoint>/cache`` unless
``$WFEXPLAIN_CACHE_DIR`` names another). The key is made of the SHA-256 digests of the checkpoint's
two weight files and of the inputs' bytes, so a file is only ever read for exactly the model and
images it was computed from; a file that does not match (or cannot be read) is ignored and
recomputed. The file is replaced atomically (temporary file, fsync, rename); an unwritable cache
directory only means the answers live in memory.

:meth:`Answers.estimate` scores a never-seen set on a seeded, class-stratified part of the inputs
first (a clearly labelled estimate), for a view that refines it with :meth:`Answers.get` afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data import stratified_subset
from .inference import Predictor

Progress = Callable[[int, int, dict], None]
CACHE_ENV = "WFEXPLAIN_CACHE_DIR"
EXTRA_SETS = 256  # larger sets kept in memory per checkpoint and data (least recently used dropped)
MAX_PAIR_CLASSES = 20  # above this many classes only the singles are precomputed (pairs grow as N²/2)


def set_key(forget) -> str:
    """``"3"``, ``"1-5"``: the name of a forget set in an answers file ("" for the original model)."""
    return "-".join(map(str, sorted(set(int(c) for c in forget or ()))))


def singles_and_pairs(num_classes: int) -> list[tuple[int, ...]]:
    """The original model, every class and (up to :data:`MAX_PAIR_CLASSES` classes) every pair:
    what :meth:`Answers.fill` precomputes."""
    pairs = itertools.combinations(range(num_classes), 2) if num_classes <= MAX_PAIR_CLASSES else ()
    return [(), *((c,) for c in range(num_classes)), *pairs]


def cache_dir(checkpoint: str | os.PathLike) -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path(checkpoint) / "cache"


class Answers:
    """Predictions under forget sets of one model on fixed inputs, memoised in memory and on disk (thread-safe)."""

    def __init__(self, predictor: Predictor, checkpoint: str | os.PathLike | None = None):
        self.predictor = predictor
        model = predictor.model
        files = model.manifest.files if model.manifest is not None else {}
        h = hashlib.sha256()
        for name in sorted(files):
            h.update(f"{name}={files[name]};".encode())
        h.update(predictor.x.detach().cpu().contiguous().numpy().tobytes())
        self.key = h.hexdigest()[:24]
        self.path = cache_dir(checkpoint) / f"answers-{self.key}.safetensors" if checkpoint and files else None
        self._lock = threading.Lock()
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # singles and pairs (written to disk)
        self._extra: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # other sets, most recent last
        self._named = {set_key(s) for s in singles_and_pairs(model.num_classes)}
        self.seconds_per_set = float("nan")  # of the last computed set
        self.done, self.total = 0, len(singles_and_pairs(model.num_classes))
        self.note = ""
        self._read()

    # ------------------------------------------------------------ disk
    def _read(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        n, k = self.predictor.x.shape[0], self.predictor.model.num_classes
        try:
            tensors = load_file(str(self.path))
        except Exception as e:  # a damaged cache file is recomputed, never trusted
            self.note = f"ignored an unreadable answers file ({type(e).__name__})"
            return
        for key in self._named:
            labels, probs = tensors.get(f"labels/{key}"), tensors.get(f"probs/{key}")
            if labels is not None and probs is not None and labels.shape == (n,) and probs.shape == (n, k):
                self._store[key] = (labels.long(), probs.float())
        self.done = len(self._store)

    def _write(self) -> None:
        if self.path is None:
            return
        with self._lock:
            tensors = {}
            for name, (labels, probs) in self._store.items():
                tensors[f"labels/{name}"] = labels.to(torch.int16).contiguous()
                tensors[f"probs/{name}"] = probs.half().contiguous()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            self.note = f"answers kept in memory only: the cache directory is not writable ({e.strerror or e})"
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ answers
    def get(self, forget) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels [N], probabilities [N, classes])`` under ``forget``, computed on first request."""
        key = set_key(forget)
        with self._lock:
            hit = self._store.get(key) or self._extra.get(key)
            if key in self._extra:
                self._extra.move_to_end(key)
        if hit is not None:
            return hit
        start = time.perf_counter()
        probs = self.predictor.logits(list(forget) or None).softmax(1).cpu()
        self.seconds_per_set = time.perf_counter() - start
        answer = (probs.argmax(1), probs.half().float())  # as stored on disk: the same numbers either way
        with self._lock:
            if key in self._named:
                self._store[key] = answer
            else:
                self._extra[key] = answer
                while len(self._extra) > EXTRA_SETS:
                    self._extra.popitem(last=False)
        return answer

    def has(self, forget) -> bool:
        key = set_key(forget)
        with self._lock:
            return key in self._store or key in self._extra

    def estimate(self, forget, targets: torch.Tensor, share: float = 0.2,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, labels, probabilities)`` on a seeded, class-stratified ``share`` of the inputs
        (``targets``: their labels)."""
        rows = stratified_subset(targets, max(targets.unique().numel(), round(share * len(targets))), seed)
        probs = self.predictor.logits(list(forget) or None, rows=rows).softmax(1).cpu()
        return rows, probs.argmax(1), probs

    def fill(self, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             write_every: int = 16) -> dict:
        """Compute every single class and every pair not yet known, then write the file.

        Returns ``{"computed", "total", "cancelled", "path"}``.
        """
        sets = singles_and_pairs(self.predictor.model.num_classes)
        computed = 0
        for i, s in enumerate(sets, 1):
            if should_stop and should_stop():
                self._write()
                return {"computed": computed, "total": len(sets), "cancelled": True, "path": self.path}
            if not self.has(s):
                self.get(s)
                computed += 1
                if computed % write_every == 0:
                    self._write()
            self.done = i
            if progress:
                progress(i, len(sets), {})
        if computed or (self.path is not None and not self.path.is_file()):
            self._write()
        return {"computed": computed, "total": len(sets), "cancelled": False, "path": self.path}
