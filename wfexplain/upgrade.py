"""``wfexplain upgrade``: an older checkpoint's manifest rewritten in the current format, its digests recorded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .atomic import dir_lock
from .checkpoint import assemble, file_sha256, inside, is_checkpoint, read_json, read_manifest, replace_manifest
from .manifest import FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, WEIGHT_FILES, CheckpointError

__all__ = ["upgrade"]


def upgrade(directory: str | os.PathLike) -> list[str]:
    """Rewrite an older manifest in the current format, recording the digests of the files present.

    This is an explicit act of trust in the files on disk: they must load (names and shapes),
    and digests the old manifest did record must still match. A Retrain oracle under
    ``<checkpoint>/retrain/`` is tied to that checkpoint's backbone file. Returns what changed.
    """
    d = Path(directory)
    with dir_lock(d):  # no writer changes the files between their digests and the new manifest
        return _upgrade(d)


def _upgrade(d: Path) -> list[str]:
    raw = read_json(inside(d, MANIFEST_FILE)) if d.is_dir() and is_checkpoint(d) else None
    manifest = read_manifest(d, require_digests=False)
    changes = []
    if isinstance(raw, dict) and raw.get("format_version") != FORMAT_VERSION:
        changes.append(f"format_version {raw.get('format_version')} -> {FORMAT_VERSION}")
    blobs = {name: inside(d, name).read_bytes() for name in WEIGHT_FILES if (d / name).is_file()}
    files = {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    for name, digest in manifest.files.items():
        if files.get(name) != digest:
            raise CheckpointError(f"{d / name} does not match the digest its manifest recorded; not upgrading")
    if len(files) < len(WEIGHT_FILES):
        raise CheckpointError(f"{d}: missing {', '.join(n for n in WEIGHT_FILES if n not in files)}")
    if set(manifest.files) != set(WEIGHT_FILES):
        changes.append("recorded the SHA-256 of " + ", ".join(n for n in WEIGHT_FILES if n not in manifest.files))
    manifest = manifest.replace(files=files)
    if manifest.retrain_of is not None and not manifest.retrain_of["model_sha256"]:
        base = d.parent.parent
        if d.parent.name != "retrain" or not is_checkpoint(base):
            raise CheckpointError(f"{d} is a Retrain oracle outside <checkpoint>/retrain/: its checkpoint is unknown")
        manifest = manifest.replace(retrain_of={**manifest.retrain_of, "model_sha256": file_sha256(base / MODEL_FILE)})
        changes.append(f"tied the Retrain oracle to {base.name}'s backbone file")
    assemble(d, manifest, blobs)  # the very bytes hashed above load: names, shapes
    if changes:
        replace_manifest(d, manifest)
    return changes
