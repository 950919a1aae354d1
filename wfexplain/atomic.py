"""Crash-safe writes: a file or a whole directory is replaced at once, never half-way.

Files: written to a temporary sibling, fsynced, then ``os.replace``-d over the target.
Directories (checkpoints): :func:`replace_dir` yields a temporary sibling directory; when
the block ends normally every file in it is fsynced and it is swapped in for the target with
one ``renameat2(RENAME_EXCHANGE)`` (Linux), so at every instant the target path holds the
complete old or the complete new directory; the old one is then deleted. Where the exchange is
not available (other systems, some file systems) the old directory is renamed aside first and
restored by the next write if a crash hits between the two renames. Temporaries carry the
writer's pid, and stale ones (their process gone) are removed by the next write, before it decides
anything.

JSON is strict everywhere (RFC 8259): NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import ctypes
import glob
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_TAG = ".wfx-"  # temporaries: .<name>.wfx-<pid>-<token> (new) and .<name>.wfx-<pid>-<token>.old


def _fsync_dir(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make renames in it durable (POSIX)
        fd = os.open(path, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # read-only is enough for fsync, and works on read-only (carried) files
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write ``path`` through ``write(tmp_path)``: the old or the new file, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        _fsync_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def strict(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON text (never NaN)."""
    return json.dumps(strict(obj), allow_nan=False, **kw)


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write pretty, strict JSON."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(dumps(obj, indent=2) + "\n"))


# ---------------------------------------------------------------- directories


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(err, os.strerror(err), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``target`` whose writer is gone; restore an old copy left by a crash."""
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.glob(f".{glob.escape(target.name)}{_TAG}*"):
        pid = p.name[len(target.name) + len(_TAG) + 1:].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if p.name.endswith(".old") and not target.exists():  # fallback swap cut between its two renames
            os.rename(p, target)
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _carry(src: Path, dst: Path, names: Sequence[str]) -> None:
    """Hard-link (or copy) the named entries of ``src`` into ``dst``: cheap, and ``src`` stays whole."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    for name in names:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, dst / name, copy_function=link)
        elif p.is_file():
            link(p, dst / name)


@contextmanager
def replace_dir(target: str | os.PathLike, *, overwrite: bool = False, carry: Sequence[str] = ()) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it in for ``target`` at once.

    Args:
        target: the directory to create or replace.
        overwrite: allow replacing an existing, non-empty ``target`` (else ``FileExistsError`` before
            anything is written).
        carry: entries of the existing ``target`` to keep (hard-linked into the new directory first).

    Yields:
        The temporary directory to fill. If the block raises (or the process dies), ``target`` is untouched.
    """
    target = Path(target)
    if target.parent.is_dir():
        clean_stale(target)  # first: a checkpoint a crash left aside is back before anything is decided
    exists = target.exists()
    if exists and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if exists and not overwrite and any(target.iterdir()):  # an empty directory counts as absent
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}{_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        if exists:
            _carry(target, tmp, carry)
        yield tmp
        for p in sorted(tmp.rglob("*"), reverse=True):
            _fsync_dir(p) if p.is_dir() else _fsync_file(p)
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        if not target.exists():
            os.rename(tmp, target)
        elif not _exchange(tmp, target):
            old = tmp.with_name(tmp.name + ".old")
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            tmp = old
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
