"""Integrity of the caches a process reads back: a per-install secret key, HMACs of tensors, and the
temporaries a dead writer left.

A cache directory may be writable by others (a shared checkpoint folder), so a file with the right
name proves nothing. A cache that must not lie signs what it writes with :func:`tensors_mac` under
:func:`install_key` and verifies the signature (``hmac.compare_digest``) before it trusts a byte.

The key: 32 random bytes (:mod:`secrets`) in :func:`key_file` (``$WFEXPLAIN_KEY_FILE``, else
``$XDG_CONFIG_HOME/wfexplain/cache.key``, else ``~/.config/wfexplain/cache.key``), mode 0600, created
once and atomically (:func:`create_key`) so that processes racing to create it agree. A key file that
is not a regular 32-byte file of this user without group/other permissions is not trusted. Where no
key file can be made or trusted, :func:`install_key` gives a random key of this process (and says
why): what it signs is then only accepted by this same process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

KEY_ENV = "WFEXPLAIN_KEY_FILE"
KEY_BYTES = 32


def key_file() -> Path:
    """Where the per-install key lives: ``$WFEXPLAIN_KEY_FILE``, else under ``$XDG_CONFIG_HOME`` (``~/.config``)."""
    named = os.environ.get(KEY_ENV)
    if named:
        return Path(named).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "wfexplain" / "cache.key"


def _read_key(path: Path) -> bytes:
    """The key in ``path``; ValueError when the file cannot be trusted (type, owner, permissions, size)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise ValueError(f"{path} belongs to another user")
        if st.st_mode & 0o077:
            raise ValueError(f"{path} is readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}, want 600)")
        with os.fdopen(os.dup(fd), "rb") as f:
            key = f.read(KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
    return key


def create_key(path: str | os.PathLike) -> bytes:
    """The key in ``path``, made first if there is none: 32 bytes of :mod:`secrets`, mode 0600.

    The new key is written to a private temporary file and hard-linked into place, which fails if
    ``path`` exists (like ``O_EXCL``) but never shows a half-written key: of processes racing to
    create it, exactly one wins and all read its key. (Where hard links are not supported, the key
    is created with ``O_CREAT | O_EXCL`` directly and a loser waits for the winner's 32 bytes.)

    Raises:
        OSError: the key cannot be created or read; ValueError: the file there cannot be trusted.
    """
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)  # another process was first: its key
        except OSError:  # no hard links here: create the file itself exclusively
            return _create_key_exclusively(path, key)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _create_key_exclusively(path: Path, key: bytes) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # the winner writes 32 bytes right after creating the file
            with contextlib.suppress(ValueError):
                return _read_key(path)
            time.sleep(0.01)
        return _read_key(path)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


_KEYS: dict[str, tuple[bytes, str]] = {}  # key file -> (key, problem), once per process
_KEYS_LOCK = threading.Lock()
_PROCESS_KEY = secrets.token_bytes(KEY_BYTES)  # the fallback: valid in this process only


def install_key() -> tuple[bytes, str]:
    """``(key, problem)``: the per-install key (:func:`key_file`, created on first use; ``problem`` "")
    or, where it cannot be created or trusted, this process's random key and why."""
    path = key_file()
    with _KEYS_LOCK:
        if str(path) not in _KEYS:
            try:
                _KEYS[str(path)] = (create_key(path), "")
            except (OSError, ValueError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                _KEYS[str(path)] = (_PROCESS_KEY, f"no usable key file ({why}): files signed now are only "
                                                  "reused by this process")
        return _KEYS[str(path)]


def key_id(key: bytes) -> str:
    """A public name of a key (recorded beside a signature, so a file signed with another key is told apart)."""
    return hashlib.sha256(b"wfexplain-key-id\0" + key).hexdigest()[:16]


def tensors_mac(key: bytes, context: Sequence[str], tensors: Mapping[str, torch.Tensor]) -> str:
    """HMAC-SHA256 (hex) of ``context`` (e.g. a format name and a cache key), then of each tensor in sorted
    name order as its name, dtype, shape and raw bytes; every field prefixed by its 8-byte length."""
    mac = hmac.new(key, digestmod=hashlib.sha256)

    def field(data: bytes) -> None:
        mac.update(len(data).to_bytes(8, "little"))
        mac.update(data)

    field(str(len(context)).encode())
    for text in context:
        field(text.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        field(name.encode())
        field(str(t.dtype).encode())
        field(",".join(map(str, t.shape)).encode())
        field(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return mac.hexdigest()
