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

Concurrent writers: every write of a directory holds its inter-process lock (:func:`dir_lock`, a
``.<name>.lock`` file beside it, ``flock`` through the ``filelock`` package) from its first check to
the swap, so two writers are serialised, and a writer told not to overwrite re-checks under the
lock and refuses if another one got there first. A writer that read the directory earlier checks,
under the lock, that it has not changed since (:func:`wfexplain.checkpoint.save_checkpoint`'s ``expect``).

JSON is strict everywhere (RFC 8259): NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

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


class PathEscape(ValueError):
    """A file a checkpoint or cache uses resolves (through a symlink or ``..``) outside its allowed root."""


def within(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` resolved (symlinks followed), if it stays inside ``root`` (resolved); else :class:`PathEscape`.

    Every file a checkpoint directory holds (weights, manifest, cache, ``retrain/``, benchmark files) is
    opened through this, so a symlink planted in an allowed directory cannot reach, or write, anything outside it.
    """
    base = Path(root).resolve()
    real = Path(path).resolve()
    if not real.is_relative_to(base):
        raise PathEscape(f"{path} leads outside {root} (to {real}); refusing to use it")
    return real


class NoSpace(OSError):
    """A write failed for lack of space (disk full, quota, file size limit): nothing was written."""


_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def writing(target: str | os.PathLike) -> Iterator[None]:
    """Report a failed write of ``target`` as an ``OSError`` naming it: :class:`NoSpace` when space ran out.

    safetensors raises its own ``SafetensorError`` (not an ``OSError``) with ``(os error N)`` in its text.
    """
    try:
        yield
    except NoSpace:
        raise
    except Exception as e:
        code = e.errno if isinstance(e, OSError) else None
        if type(e).__name__ == "SafetensorError":
            found = re.search(r"os error (\d+)|code: (\d+)", str(e))
            code = int(found.group(1) or found.group(2)) if found else None
        elif not isinstance(e, OSError):
            raise
        if code in _SPACE:
            raise NoSpace(code, f"no space left to write {target} ({os.strerror(code)}; {_free(Path(target))} free): "
                                "nothing was written, what was there is unchanged") from None
        if not isinstance(e, OSError):
            raise OSError(code or errno.EIO, f"cannot write {target}: {e}") from None
        raise


def _free_bytes(target: str | os.PathLike) -> int:
    """Free bytes on the file system ``target`` (or its nearest existing ancestor) would be written to."""
    path = Path(target)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _free(target: Path) -> str:
    try:
        return f"{_free_bytes(target) / 2**20:,.0f} MiB"
    except OSError:
        return "unknown"


def check_space(target: str | os.PathLike, nbytes: int) -> None:
    """:class:`NoSpace` unless the file system of ``target`` has ``nbytes`` free: checked before long work."""
    free = _free_bytes(target)
    if free < nbytes:
        raise NoSpace(errno.ENOSPC, f"not enough space to write {target}: it needs about {nbytes / 2**20:,.1f} MiB, "
                                    f"{free / 2**20:,.1f} MiB are free")


def atomic_write(path: str | os.PathLike, write, overwrite: bool = True) -> None:
    """Write ``path`` through ``write(tmp_path)``: the old or the new file, never a partial one.

    The temporary (``.<name>.wfx-<pid>-<token>``) is removed on failure, and one a killed writer left is
    removed by the next write of ``path``. Without ``overwrite`` the file is linked into place only if
    ``path`` is still absent at that instant (``FileExistsError`` otherwise: a concurrent writer won).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = path.parent / f".{path.name}{_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with writing(path):
            write(str(tmp))
            os.chmod(tmp, 0o644)
            _fsync_file(tmp)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise FileExistsError(f"{path} already exists (written meanwhile by another process)") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.unlink(missing_ok=True)
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
    """Hard-link (or copy) the named entries of ``src`` into ``dst``: cheap, and ``src`` stays whole.

    Symlinks are carried as symlinks (never followed); anything but files, folders and symlinks is refused.
    """
    def link(a, b):
        try:
            os.link(a, b, follow_symlinks=False)
        except OSError:
            shutil.copy2(a, b, follow_symlinks=False)

    for name in names:
        p = src / name
        if p.is_symlink():
            os.symlink(os.readlink(p), dst / name)
        elif p.is_dir():
            shutil.copytree(p, dst / name, symlinks=True, copy_function=link)
        elif p.is_file():
            link(p, dst / name)
        elif p.exists():
            raise OSError(errno.EINVAL, f"cannot carry {p} into the new directory: not a file, folder or symlink")


LOCK_SECONDS = 600.0  # a writer waits this long for another one, then fails naming the lock (filelock.Timeout)


def dir_lock(target: str | os.PathLike) -> FileLock:
    """The inter-process lock of a directory's writers (re-entrant within a thread; blocks other threads
    and processes for up to :data:`LOCK_SECONDS`). The lock file (``.<name>.lock``) lives beside the
    directory, so it survives the directory's swaps; it stays there, empty, after the write."""
    target = Path(target)
    parent = target.parent.resolve()
    parent.mkdir(parents=True, exist_ok=True)
    return FileLock(parent / f".{target.name}.lock", is_singleton=True, timeout=LOCK_SECONDS)


@contextmanager
def replace_dir(target: str | os.PathLike, *, overwrite: bool = False,
                carry: Sequence[str] | Callable[[Path], Sequence[str]] = ()) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it in for ``target`` at once.

    Args:
        target: the directory to create or replace.
        overwrite: allow replacing an existing, non-empty ``target`` (else ``FileExistsError`` before
            anything is written).
        carry: entries of the existing ``target`` to keep (hard-linked into the new directory first), or a
            function of ``target`` naming them (called under the lock).

    Yields:
        The temporary directory to fill. If the block raises (or the process dies), ``target`` is untouched.
        The block runs under :func:`dir_lock`: no other writer of ``target`` runs meanwhile.
    """
    with dir_lock(target), writing(target):
        yield from _replace_dir(Path(target), overwrite, carry)


def _replace_dir(target: Path, overwrite: bool, carry: Sequence[str] | Callable[[Path], Sequence[str]]) -> Iterator[Path]:
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
            _carry(target, tmp, carry(target) if callable(carry) else carry)
        yield tmp
        for p in sorted(tmp.rglob("*"), reverse=True):
            _fsync_dir(p) if p.is_dir() else _fsync_file(p)
        os.chmod(tmp, target.stat().st_mode & 0o7777 if exists else 0o755)  # a private directory stays private
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
