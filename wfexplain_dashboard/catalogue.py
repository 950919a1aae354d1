"""The checkpoints this server offers: a catalogue of public ids, scanned from the allowed roots only."""

from __future__ import annotations

from pathlib import Path

from wfexplain.manifest import MANIFEST_FILE

from .settings import SHIPPED_DIR, extra_checkpoint_roots, user_checkpoint_dir

# ---------------------------------------------------------------- the checkpoints this server offers
# Server-side only: nothing a browser sends is ever turned into a path. A session names a checkpoint by its
# catalogue id; whatever is not in the catalogue is refused with one message that says nothing about the disk.


def _is_checkpoint(real: Path, root: Path) -> bool:
    try:
        manifest = (real / MANIFEST_FILE).resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_relative_to(root) and manifest.is_relative_to(root) and manifest.is_file()


def _scan(root: Path) -> list[tuple[str, Path]]:
    """``(name, resolved path)`` of the checkpoint directories directly under ``root`` (or ``root`` itself)."""
    try:
        real_root = root.resolve(strict=True)
        if _is_checkpoint(real_root, real_root):
            return [(root.name or real_root.name, real_root)]
        entries = sorted(real_root.iterdir()) if real_root.is_dir() else []
    except (OSError, RuntimeError):
        return []
    found = []
    for entry in entries:
        try:
            real = entry.resolve(strict=True)  # a symlink leaving the root is dropped
        except (OSError, RuntimeError):
            continue
        if real != real_root and real.is_dir() and _is_checkpoint(real, real_root):
            found.append((entry.name, real))
    return found


def _roots() -> list[tuple[str, Path, Path]]:
    """``(id prefix, root, folder the prefix stands for)``: shipped (bare names), user, then the extra roots."""
    roots = [("", SHIPPED_DIR, SHIPPED_DIR)] if SHIPPED_DIR is not None else []
    roots.append(("user/", user_checkpoint_dir(), user_checkpoint_dir()))
    for root in extra_checkpoint_roots():
        folder = root.parent if (root / MANIFEST_FILE).is_file() else root  # a checkpoint itself: parent/NAME
        roots.append((f"{folder.name or 'root'}/", root, folder))
    return roots


def checkpoint_catalogue() -> dict[str, Path]:
    """Every checkpoint this server offers: public id -> resolved directory (scanned on each call: cheap).

    Shipped checkpoints by bare name (``fmnist-cnn``), the user folder's as ``user/NAME``, an extra root's as
    ``<root basename>/NAME``; a colliding id gets ``-2``, ``-3``… and a directory reached twice is listed once.
    """
    catalogue: dict[str, Path] = {}
    seen: set[Path] = set()
    for prefix, root, _ in _roots():
        for name, path in _scan(root):
            if path in seen:
                continue
            seen.add(path)
            label, k = f"{prefix}{name}", 1
            while label in catalogue:
                k += 1
                label = f"{prefix}{name}-{k}"
            catalogue[label] = path
    return catalogue
