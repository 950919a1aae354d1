"""Every setting of the dashboard server, read from the environment: nothing here comes from a browser.

| variable | default | meaning |
|---|---|---|
| ``WFEXPLAIN_SHIPPED_CHECKPOINTS`` | a checkout's ``checkpoints/``, else the installed ones | the shipped ones (bare ids) |
| ``WFEXPLAIN_USER_CHECKPOINTS`` | ``~/wfexplain-checkpoints`` | where the Models page writes (ids ``user/NAME``) |
| ``WFEXPLAIN_CHECKPOINT_DIRS`` | (none) | further allowed checkpoint roots, ``os.pathsep``-separated |
| ``WFEXPLAIN_DATA_DIRS`` | (none) | test-data directories a session may pick |
| ``WFEXPLAIN_EVAL_LIMIT`` | 2000 | test images behind the live views |
| ``WFEXPLAIN_DEVICE`` | cpu | cpu, cuda or cuda:N for models, predictions, attributions and jobs |
| ``WFEXPLAIN_MAX_JOBS`` | 1 | jobs running at once across all sessions |
| ``WFEXPLAIN_PRECOMPUTE`` | 1 | 1: evaluate every single class and pair in the background when a checkpoint opens; 0: on demand |
| ``WFEXPLAIN_PRECISION`` | auto | the live path: bfloat16 where faster and within 99.9% of float32 (guarded), or either |
| ``WFEXPLAIN_CACHE_DIR`` | ``<checkpoint>/cache`` | where precomputed answers are kept (read by :mod:`wfexplain.answers`) |
| ``WFEXPLAIN_KEY_FILE`` | ``~/.config/wfexplain/cache.key`` | the key that signs them (read by :mod:`wfexplain.integrity`) |
| ``WFEXPLAIN_MAX_EPOCHS`` / ``_TRAIN_IMAGES`` / ``_UNLEARN_STEPS`` | 50 / 60,000 / 5,000 | caps of one job |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wfexplain.shipped import shipped_dir


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A positive integer server setting; a malformed one is a clear startup error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is below its minimum {minimum}")
    return value


def _paths(variable: str) -> list[Path]:
    return [Path(os.path.abspath(os.path.expanduser(p))) for p in os.environ.get(variable, "").split(os.pathsep) if p.strip()]


SHIPPED_DIR = shipped_dir()  # a checkout's, or the installed ones; None: none here
DEFAULT_CHECKPOINT = "fmnist-cnn"
EVAL_LIMIT = env_int("WFEXPLAIN_EVAL_LIMIT", 2000)
DEVICE = os.environ.get("WFEXPLAIN_DEVICE", "cpu")
MAX_JOBS = env_int("WFEXPLAIN_MAX_JOBS", 1)
PRECOMPUTE = env_int("WFEXPLAIN_PRECOMPUTE", 1, minimum=0) > 0
PRECISION = os.environ.get("WFEXPLAIN_PRECISION", "auto")
if PRECISION not in ("auto", "bfloat16", "float32"):
    raise ValueError(f"WFEXPLAIN_PRECISION must be auto, bfloat16 or float32, got {PRECISION!r}")


def user_checkpoint_dir() -> Path:
    """Where the Models page writes new checkpoints (``$WFEXPLAIN_USER_CHECKPOINTS``, default ``~/wfexplain-checkpoints``)."""
    return Path(os.environ.get("WFEXPLAIN_USER_CHECKPOINTS") or "~/wfexplain-checkpoints").expanduser()


def extra_checkpoint_roots() -> list[Path]:
    """The directories of ``$WFEXPLAIN_CHECKPOINT_DIRS`` (``os.pathsep``-separated), each a checkpoint or a folder of them."""
    return _paths("WFEXPLAIN_CHECKPOINT_DIRS")


def data_choices() -> dict[str, Path]:
    """Test-data directories a session may pick (id -> path): each ``$WFEXPLAIN_DATA_DIRS`` entry and its sub-folders."""
    out: dict[str, Path] = {}
    for root in _paths("WFEXPLAIN_DATA_DIRS"):
        if root.is_dir():
            for d in [root, *sorted(c for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))]:
                out.setdefault(root.name if d == root else f"{root.name}/{d.name}", d)
    return out


def data_path(data_id: str | None) -> str | None:
    """The directory of a :func:`data_choices` id (None, or an id no longer offered: the checkpoint's recorded one)."""
    path = data_choices().get(data_id) if data_id else None
    return str(path) if path is not None else None


@dataclass(frozen=True)
class JobCaps:
    """What a dashboard page may request of one job; pages use them as widget maxima and :meth:`check` again."""

    epochs: int
    train_images: int
    unlearn_steps: int

    def check(self, epochs: int | None = None, train_images: int | None = None,
              unlearn_steps: int | None = None) -> None:
        """Raise ``ValueError`` (a message for the user) when a request exceeds this server's caps."""
        for what, value, cap in (("epochs", epochs, self.epochs), ("training images", train_images, self.train_images),
                                 ("unlearning steps", unlearn_steps, self.unlearn_steps)):
            if value is not None and not 0 < value <= cap:
                raise ValueError(f"{value:,} {what} is outside this server's limit (1 to {cap:,}).")


def job_caps() -> JobCaps:
    """``$WFEXPLAIN_MAX_EPOCHS`` (50), ``$WFEXPLAIN_MAX_TRAIN_IMAGES`` (60,000), ``$WFEXPLAIN_MAX_UNLEARN_STEPS`` (5,000)."""
    return JobCaps(env_int("WFEXPLAIN_MAX_EPOCHS", 50), env_int("WFEXPLAIN_MAX_TRAIN_IMAGES", 60_000),
                   env_int("WFEXPLAIN_MAX_UNLEARN_STEPS", 5_000))
