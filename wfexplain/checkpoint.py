"""Checkpoints: ``model.safetensors`` + ``memory.safetensors`` + ``manifest.json``.

No pickle anywhere. Every file is written atomically (temporary file, fsync, ``os.replace``),
the manifest last; the manifest records the SHA-256 of both weight files, so a checkpoint whose
files do not belong together (an interrupted rewrite, a file copied from elsewhere) refuses to
load. Loading validates digests, names and shapes and says precisely what does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbones import list_backbones
from .data import DatasetInfo
from .filtering import FilteredModel

FORMAT = "wfexplain-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, MEMORY_FILE, MANIFEST_FILE = "model.safetensors", "memory.safetensors", "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match its manifest."""


def package_versions() -> dict[str, str]:
    import timm
    import torchvision

    from . import __version__

    return {"wfexplain": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: dict) -> None:
    """Atomically write pretty JSON."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def save_checkpoint(model: FilteredModel, directory: str | os.PathLike, manifest: dict, half: bool = False,
                    save_backbone: bool = True) -> Path:
    """Write a checkpoint directory; ``manifest`` is completed with format, model and versions.

    Args:
        model: the filtered model to save.
        directory: target directory (created if needed).
        manifest: extra fields (configs, metrics, timings...).
        half: store the backbone's floating tensors in float16 (loaded back as float32).
        save_backbone: False to rewrite only the memory and manifest.
    """
    d = Path(directory)

    def to_disk(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu().contiguous()
        return t.half() if half and t.is_floating_point() else t

    if save_backbone:
        state = {k: to_disk(v) for k, v in model.backbone.state_dict().items()}
        atomic_write(d / MODEL_FILE, lambda tmp: save_file(state, tmp))
    memory = {k: v.detach().cpu().float().contiguous() for k, v in model.memory.items()}  # tiny: never halved
    atomic_write(d / MEMORY_FILE, lambda tmp: save_file(memory, tmp))
    info = model.info
    full = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        **manifest,
        "backbone": model.backbone_name,
        "dataset": {"name": info.name, "class_names": list(info.class_names), "in_chans": info.in_chans,
                    "img_size": info.img_size, "mean": list(info.mean), "std": list(info.std)},
        "storage_dtype": "float16" if half else "float32",
        "memory_shapes": {k: list(v.shape) for k, v in model.memory.items()},
        "files": {name: {"sha256": file_sha256(d / name)} for name in (MODEL_FILE, MEMORY_FILE)},
        "versions": package_versions(),
    }
    write_json(d / MANIFEST_FILE, full)
    return d


def read_manifest(directory: str | os.PathLike) -> dict:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    path = d / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a wfexplain checkpoint (needs {MODEL_FILE}, "
                              f"{MEMORY_FILE}, {MANIFEST_FILE})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {manifest['format_version']} is newer than this "
                              f"wfexplain supports ({FORMAT_VERSION})")
    missing = [k for k in ("backbone", "dataset") if k not in manifest]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {', '.join(missing)}")
    if manifest["backbone"] not in list_backbones():
        raise CheckpointError(f"{path}: unknown backbone {manifest['backbone']!r}; "
                              f"known: {', '.join(list_backbones())}")
    return manifest


def dataset_info(manifest: dict, path: str | os.PathLike = MANIFEST_FILE) -> DatasetInfo:
    """The :class:`DatasetInfo` a manifest describes (``path`` names the file in errors)."""
    ds = manifest["dataset"]
    try:
        return DatasetInfo(ds["name"], tuple(ds["class_names"]), int(ds["in_chans"]), int(ds["img_size"]),
                           tuple(ds["mean"]), tuple(ds["std"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad dataset entry ({e!r})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def check_digests(directory: Path, manifest: dict) -> None:
    """The weight files are the ones the manifest recorded (manifests written before digests record none)."""
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for name in (MODEL_FILE, MEMORY_FILE):
        expected = (files.get(name) or {}).get("sha256")
        if expected and (found := file_sha256(directory / name)) != expected:
            raise CheckpointError(f"{directory / name} does not match its manifest: SHA-256 {found[:12]}…, recorded "
                                  f"{expected[:12]}… (the file was replaced, or a rewrite was interrupted)")


def check_match(path: Path, expected: dict[str, torch.Size], got: dict[str, torch.Tensor], what: str,
                against: str = "its manifest") -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k])}, found {tuple(got[k].shape)}"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing {what} {', '.join(missing[:5])}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if extra:
        problems.append(f"unexpected {what} {', '.join(extra[:5])}" + (f" (+{len(extra) - 5} more)" if len(extra) > 5 else ""))
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(f"{path} does not match {against}: " + " | ".join(problems))


def load(directory: str | os.PathLike, device: str | torch.device = "cpu") -> FilteredModel:
    """Load a checkpoint directory into a :class:`FilteredModel` (eval mode, float32, on ``device``).

    Raises:
        CheckpointError: naming the file and what is missing, corrupt or mismatched.
    """
    d = Path(directory)
    manifest = read_manifest(d)
    info = dataset_info(manifest, d / MANIFEST_FILE)
    model = FilteredModel(manifest["backbone"], info)
    state = read_tensors(d / MODEL_FILE)
    expected = {k: v.shape for k, v in model.backbone.state_dict().items()}
    check_match(d / MODEL_FILE, expected, state, "weights")
    model.backbone.load_state_dict({k: v.to(model.backbone.state_dict()[k].dtype) for k, v in state.items()})
    memory = read_tensors(d / MEMORY_FILE)
    check_match(d / MEMORY_FILE, {k: v.shape for k, v in model.memory.items()}, memory, "memory matrices")
    check_digests(d, manifest)
    with torch.no_grad():
        for k, p in model.memory.items():
            p.copy_(memory[k].float())
    model.manifest = manifest
    return model.to(device).eval()
