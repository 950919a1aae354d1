"""Answers before they are asked: every single class and every pair, evaluated once per checkpoint and
evaluation subset, kept on disk and read back instantly by later sessions and restarts.

:class:`Answers` holds, per input, the predicted label and its softmax probability (the confidence) of a
:class:`~wfexplain.inference.Predictor`'s inputs under forget sets: what the pages show, 4 bytes an input, so a set
takes the same room at 1,000 classes as at 10 (the full probability rows took 8 GB of memory for the 1,001 sets of a
1,000-class model, and the file rewritten every 16 sets grew to 129 GB of writes). :meth:`Answers.fill` computes
every single class and every pair (the dashboard runs :meth:`Answers.background` in a thread when a checkpoint is
opened) and writes them to one safetensors file, ``answers-<key>.safetensors``, in the cache directory
(``<checkpoint>/cache`` unless ``$WFEXPLAIN_CACHE_DIR`` names another).

Keyed: the key is made of the SHA-256 digests of the checkpoint's weight files and of the inputs'
bytes, and of the predictor's precision, so a file is only ever read for exactly the model, images and arithmetic it
was computed with.

Signed: a cache directory may be writable by others (a shared checkpoint folder), and a file with
the right name is not proof of anything. Each file therefore carries, in its safetensors metadata
(``format``, ``key``, ``key_id``, ``hmac_sha256``), an HMAC-SHA256 of its content under the
per-install secret key (:mod:`wfexplain.integrity`: ``$WFEXPLAIN_KEY_FILE``, else
``$XDG_CONFIG_HOME/wfexplain/cache.key``, else ``~/.config/wfexplain/cache.key``, mode 0600), computed
by :func:`~wfexplain.integrity.tensors_mac` over :data:`FORMAT`, the key, then every tensor's name,
dtype, shape and bytes in sorted order. Where no key file can be made or trusted, a random key of
this process signs: its files are then only read back by this same process.

Validated: a file whose HMAC verifies is still checked entry by entry (:func:`check_answers`):
labels of shape ``(n,)``, integer, in ``0..k-1``; confidences of shape ``(n,)``, finite, between ``1/k`` (the
top class of a softmax has at least that) and 1, within :data:`TOLERANCE` (float16 storage). A file failing any
check (unreadable, unsigned, wrong HMAC, bad content) is never shown: it is ignored, counted in :attr:`Answers.rejected`, said in
:attr:`Answers.note`, and recomputed (the next write replaces it).

Written: the file is replaced atomically (temporary file, fsync, rename); temporaries a dead process
left are removed by the next write. An unwritable cache directory or a full disk only means the
answers live in memory (with a note).

:meth:`Answers.estimate` scores a never-seen set on a seeded, class-stratified part of the inputs
first (a clearly labelled estimate), for a view that refines it with :meth:`Answers.get` afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import forget as forget_sets
from .atomic import PathEscape, atomic_write, within
from .data import stratified_subset
from .inference import Predictor
from .integrity import KEY_ENV, install_key, key_id, tensors_mac

__all__ = ["CACHE_ENV", "KEY_ENV", "Answers", "cache_dir", "check_answers", "set_bytes", "singles_and_pairs"]

Progress = Callable[[int, int, dict], None]
CACHE_ENV = "WFEXPLAIN_CACHE_DIR"
FORMAT = "wfexplain-answers/2"  # in every file's metadata and in its HMAC (/1 kept whole probability rows)
TOLERANCE = 1e-2  # on a confidence's bounds (float16 storage errs by ~1e-3)
EXTRA_SETS = 256  # larger sets kept in memory per checkpoint and data (least recently used dropped)
MAX_PAIR_CLASSES = 20  # above this many classes only the singles are precomputed (pairs grow as N²/2)
ESTIMATE_SHARE, ESTIMATE_S = 0.2, 0.2  # an estimate's largest share of the inputs, and the seconds it aims at


def singles_and_pairs(num_classes: int) -> list[tuple[int, ...]]:
    """The original model, every class and (up to :data:`MAX_PAIR_CLASSES` classes) every pair:
    what :meth:`Answers.fill` precomputes."""
    pairs = itertools.combinations(range(num_classes), 2) if num_classes <= MAX_PAIR_CLASSES else ()
    return [(), *((c,) for c in range(num_classes)), *pairs]


def cache_dir(checkpoint: str | os.PathLike) -> Path:
    """``$WFEXPLAIN_CACHE_DIR`` (the server's choice), else ``<checkpoint>/cache``, which must resolve inside the
    checkpoint (:class:`~wfexplain.atomic.PathEscape` otherwise: a planted symlink never makes us write elsewhere)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    within(checkpoint, Path(checkpoint) / "cache")
    return Path(checkpoint) / "cache"



def check_answers(tensors: Mapping[str, torch.Tensor], names: Iterable[str], n: int, k: int) -> str:
    """Why the entries of an answers file are not valid answers for ``n`` inputs and ``k`` classes ("" if they are).

    Every tensor must be ``labels/<set>`` or ``confidence/<set>`` of a set in ``names``, in pairs; labels:
    shape ``(n,)``, an integer dtype, values in ``0..k-1``; confidences: shape ``(n,)``, a floating dtype, finite,
    in ``[1/k, 1]`` within :data:`TOLERANCE`.
    """
    names = set(names)
    sets: set[str] = set()
    for entry in tensors:
        kind, _, name = entry.partition("/")
        if kind not in ("labels", "confidence") or name not in names:
            return f"an unexpected entry {entry[:40]!r}"
        sets.add(name)
    for name in sorted(sets):
        labels, conf = tensors.get(f"labels/{name}"), tensors.get(f"confidence/{name}")
        what = f"set {name or 'none'}"
        if labels is None or conf is None:
            return f"{what}: labels or confidences missing"
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            return f"{what}: labels of dtype {labels.dtype}"
        if tuple(labels.shape) != (n,):
            return f"{what}: labels of shape {tuple(labels.shape)}, not ({n},)"
        if not conf.dtype.is_floating_point:
            return f"{what}: confidences of dtype {conf.dtype}"
        if tuple(conf.shape) != (n,):
            return f"{what}: confidences of shape {tuple(conf.shape)}, not ({n},)"
        if n == 0:
            continue
        lab, c = labels.long(), conf.float()
        if int(lab.min()) < 0 or int(lab.max()) >= k:
            return f"{what}: a label out of 0..{k - 1} ({int(lab.min())}..{int(lab.max())})"
        if not bool(torch.isfinite(c).all()):
            return f"{what}: non-finite confidences"
        if bool((c < 1 / k - TOLERANCE).any() | (c > 1 + TOLERANCE).any()):
            return f"{what}: confidences outside [1/{k}, 1]"
    return ""


def set_bytes(n: int, k: int) -> int:
    """Bytes one set's answers take for ``n`` inputs and ``k`` classes, in memory and on disk (labels, confidences)."""
    return n * (_label_dtype(k).itemsize + 2)


def _label_dtype(k: int) -> torch.dtype:
    return torch.int16 if k <= 2**15 else torch.int32



class Answers:
    """Predictions under forget sets of one model on fixed inputs, memoised in memory and on disk (thread-safe).

    Attributes:
        key: digest of the checkpoint's weight files, of the inputs and of the predictor's precision (names the file).
        path: the answers file (None: memory only, e.g. a model without a checkpoint).
        done, total: sets known so far, of the singles and pairs :meth:`fill` computes.
        rejected: answers files ignored because they failed a check (unsigned, tampered, bad content).
        error: why the last :meth:`background` run stopped early ("" if it did not).
        note: what a page should say about the cache ("" if nothing): rejected files, writes that
            failed, a background run that stopped.
    """

    def __init__(self, predictor: Predictor, checkpoint: str | os.PathLike | None = None):
        self.predictor = predictor
        model = predictor.model
        files = model.manifest.files if model.manifest is not None else {}
        h = hashlib.sha256()
        for name in sorted(files):
            h.update(f"{name}={files[name]};".encode())
        h.update(predictor.x.detach().cpu().contiguous().numpy().tobytes())
        h.update(f";dtype={predictor.dtype}".encode())  # bfloat16 answers are not float32's
        self.key = h.hexdigest()[:24]
        escaped = ""
        try:
            folder = cache_dir(checkpoint) if checkpoint and files else None
            self.path = folder / f"answers-{self.key}.safetensors" if folder else None
            if folder is not None:
                within(folder, folder / f"answers-{self.key}.safetensors")
        except PathEscape:
            self.path, escaped = None, "answers kept in memory only: the cache directory leads outside the checkpoint"
        self._lock = threading.Lock()
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # singles and pairs (written to disk)
        self._extra: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # other sets, most recent last
        self._named = {forget_sets.key(s) for s in singles_and_pairs(model.num_classes)}
        self.seconds_per_set = float("nan")  # of the last computed set
        self.done, self.total = 0, len(singles_and_pairs(model.num_classes))
        self.rejected = 0
        self.error = ""
        self._notes = dict.fromkeys(("key", "read", "write", "fill"), "")  # fixed slots: read while others write
        self._secret = b""
        self._say("write", escaped)
        if self.path is not None:
            self._secret, problem = install_key()
            self._say("key", problem)
        self._read()

    @property
    def note(self) -> str:
        """Everything worth saying about the cache, "" if nothing (lower case, no final period)."""
        return "; ".join(text for text in self._notes.values() if text)

    def _say(self, slot: str, text: str) -> None:
        self._notes[slot] = text

    # ------------------------------------------------------------ disk
    def _reject(self, why: str) -> None:
        self.rejected += 1
        self._say("read", f"ignored {why}; its answers are recomputed")

    def _read(self) -> None:
        """Load the answers file if it is signed with our key and holds valid answers; else ignore and count it."""
        if self.path is None or not self.path.is_file():
            return
        n, k = self.predictor.x.shape[0], self.predictor.model.num_classes
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except Exception as e:  # a damaged cache file is recomputed, never trusted
            return self._reject(f"an unreadable answers file ({type(e).__name__})")
        mac = meta.get("hmac_sha256")
        if meta.get("format") != FORMAT or not isinstance(mac, str):
            return self._reject("an unsigned answers file (written by an older version, or forged)")
        if meta.get("key_id") != key_id(self._secret):
            return self._reject("an answers file signed with another key (another install, or a process "
                                "without a key file)")
        try:
            expected = tensors_mac(self._secret, (FORMAT, self.key), tensors)
        except Exception as e:  # tensors whose bytes cannot be read back
            return self._reject(f"an unreadable answers file ({type(e).__name__})")
        if not hmac.compare_digest(mac, expected):
            return self._reject("a tampered answers file (its HMAC does not match its content)")
        why = check_answers(tensors, self._named, n, k)
        if why:
            return self._reject(f"an answers file with invalid content ({why})")
        for name in self._named:
            if f"labels/{name}" in tensors:
                self._store[name] = (tensors[f"labels/{name}"], tensors[f"confidence/{name}"])
        self.done = len(self._store)

    def _tensors(self) -> dict[str, torch.Tensor]:
        """The singles and pairs known so far, as stored (int16 labels, float16 confidences)."""
        with self._lock:
            tensors = {}
            for name, (labels, conf) in self._store.items():
                tensors[f"labels/{name}"], tensors[f"confidence/{name}"] = labels.contiguous(), conf.contiguous()
        return tensors

    def _write(self, tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Sign and atomically replace the answers file; a failure (unwritable directory, full disk) keeps
        the answers in memory with a note. ``tensors``: what to write (default: every single and pair known)."""
        if self.path is None:
            return
        tensors = self._tensors() if tensors is None else tensors
        meta = {"format": FORMAT, "key": self.key, "key_id": key_id(self._secret),
                "hmac_sha256": tensors_mac(self._secret, (FORMAT, self.key), tensors)}
        try:  # whole or absent; a dead writer's temporary removed; safetensors' own errors reported as OSError
            atomic_write(self.path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            self._say("write", f"answers kept in memory only: they cannot be written to the cache directory ({why})")
        else:
            self._say("write", "")

    # ------------------------------------------------------------ answers
    def get(self, forget, background: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels [N], confidences [N])`` under ``forget`` (each input's predicted class and its softmax probability;
        int16 and float16, as stored), computed on first request (``background``:
        by work that gives way to interactive requests, :meth:`~wfexplain.inference.Predictor.logits`)."""
        key = forget_sets.key(forget)  # the set's name in the file: "3", "1-5" ("": the original model)
        with self._lock:
            hit = self._store.get(key) or self._extra.get(key)
            if key in self._extra:
                self._extra.move_to_end(key)
        if hit is not None:
            return hit
        start, yields = time.perf_counter(), self.predictor.yields
        probs = self.predictor.logits(list(forget) or None, background=background).softmax(1).cpu()
        if not background or self.predictor.yields == yields:  # a background set that gave way: not its own time
            self.seconds_per_set = time.perf_counter() - start
        conf, labels = probs.max(1)
        answer = (labels.to(_label_dtype(probs.shape[1])), conf.half())  # as stored on disk: the same either way
        with self._lock:
            if key in self._named:
                self._store[key] = answer
            else:
                self._extra[key] = answer
                while len(self._extra) > EXTRA_SETS:
                    self._extra.popitem(last=False)
        return answer

    def has(self, forget) -> bool:
        key = forget_sets.key(forget)
        with self._lock:
            return key in self._store or key in self._extra

    def estimate(self, forget, targets: torch.Tensor, share: float | None = None,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, labels, confidences)`` on a seeded, class-stratified ``share`` of the inputs (``targets``: their
        labels; at least one image a class). ``share`` None: as much as fits :data:`ESTIMATE_S` at the pace of the last
        set computed, at most :data:`ESTIMATE_SHARE`."""
        if share is None:
            pace = self.seconds_per_set
            share = ESTIMATE_SHARE if not pace > 0 else min(ESTIMATE_SHARE, ESTIMATE_S / pace)
        rows = stratified_subset(targets, max(targets.unique().numel(), round(share * len(targets))), seed)
        conf, labels = self.predictor.logits(list(forget) or None, rows=rows).softmax(1).cpu().max(1)
        return rows, labels, conf

    def fill(self, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             write_every: int = 16) -> dict:
        """Compute every single class and every pair not yet known, then write the file.

        A failed write never stops it (the answers stay in memory, see :attr:`note`).
        Returns ``{"computed", "total", "cancelled", "path"}``.
        """
        sets = singles_and_pairs(self.predictor.model.num_classes)
        computed = 0
        for i, s in enumerate(sets, 1):
            if should_stop and should_stop():
                self._write()
                return {"computed": computed, "total": len(sets), "cancelled": True, "path": self.path}
            if not self.has(s):
                self.get(s, background=True)
                computed += 1
                if computed % write_every == 0:
                    self._write()
            self.done = i
            if progress:
                progress(i, len(sets), {})
        if computed or (self.path is not None and not self.path.is_file()):
            self._write()
        return {"computed": computed, "total": len(sets), "cancelled": False, "path": self.path}

    def background(self, should_stop: Callable[[], bool] | None = None) -> dict | None:
        """:meth:`fill` for a background thread: it never raises. Whatever stops it early is recorded in
        :attr:`error` and :attr:`note` (a page then says so instead of showing progress that never moves);
        the sets computed so far stay usable and the others are computed when asked for."""
        self.error = ""
        self._say("fill", "")
        try:
            return self.fill(should_stop=should_stop)
        except BaseException as e:  # a thread's last word: recorded, never lost
            self.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self._say("fill", f"background evaluation stopped after {self.done} of {self.total} sets ({self.error}); "
                              "the others are evaluated when first chosen")
            if not isinstance(e, Exception):
                raise
            return None
