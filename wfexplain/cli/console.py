"""Where the command's words go: :mod:`logging` on stderr, tqdm progress bars, Ctrl-C.

The library logs through ``logging.getLogger(__name__)`` and never prints; for the duration of a
command the CLI attaches one stderr handler to the ``wfexplain`` logger: WARNING with ``-q``, INFO by
default, DEBUG with ``-v``. Under torchrun only rank 0 logs below WARNING; errors come from every
rank, prefixed with it. Progress bars are drawn only where INFO is logged (never with ``-q``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

from tqdm import tqdm

from .. import distributed as dist

LOGGER = logging.getLogger("wfexplain")
_log = logging.getLogger("wfexplain.cli")


def main_rank() -> bool:
    return dist.is_main() and os.environ.get("RANK", "0") == "0"  # RANK: also after the process group is gone


class _Stderr(logging.StreamHandler):
    """The ``sys.stderr`` of the moment (tests swap it); rank 0 only below WARNING; errors and warnings prefixed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or main_rank()) and bool(super().filter(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno < logging.WARNING:
            return text
        rank = f"[rank {os.environ.get('RANK', '?')}] " if dist.launched() else ""
        return f"{rank}{'error' if record.levelno >= logging.ERROR else 'warning'}: {text}"


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """Log ``wfexplain.*`` records of ``level`` and up to stderr while the block runs, then restore the logger."""
    handler, saved = _Stderr(), (LOGGER.level, LOGGER.propagate)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(saved[0])
        LOGGER.propagate = saved[1]


def log(msg: str) -> None:
    _log.info(msg)


def debug(msg: str) -> None:
    _log.debug(msg)


def error(msg: str) -> None:
    """Errors are logged by every rank, prefixed with it under torchrun."""
    _log.error(msg)


class Interrupt:
    """SIGINT sets a flag the loops poll, so they stop between steps."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        self.stop = True
        log("\ninterrupt: stopping after this step (nothing will be written)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)

    def __call__(self) -> bool:
        return self.stop


class _Bar:
    """A tqdm bar on stderr, drawn from the first progress report on (an early error prints no empty bar)."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None

    def progress(self, step: int, total: int, metrics: dict) -> None:
        if self.bar is None:
            self.bar = tqdm(desc=self.desc, file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                            disable=not (main_rank() and _log.isEnabledFor(logging.INFO)))
        self.bar.total = total
        self.bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in metrics.items()}, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def bar(desc: str):
    """A progress bar and the ``progress`` callback the library's loops report to."""
    b = _Bar(desc)
    return b, b.progress
