"""Checkpoints: ``model.safetensors`` + ``memory.safetensors`` + ``manifest.json``.

No pickle anywhere. A checkpoint directory is written whole: its files go to a temporary
sibling directory that is then swapped in at once (:func:`wfexplain.atomic.replace_dir`), so
the path always holds the complete old or the complete new checkpoint. An existing checkpoint
is replaced only when the caller says so (``overwrite``; ``--force`` on the command line), and
what was derived from the old one (Retrain oracles, benchmarks, the run store) goes with it
unless it is carried over explicitly because it is still valid.

Loading validates in an order that never allocates from untrusted numbers: the manifest
(:class:`~wfexplain.manifest.Manifest`: types and ranges), the SHA-256 of both weight files,
the safetensors headers against the manifest, and only then builds the network and compares
names and shapes. Every error names the file and what does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .atomic import PathEscape, dir_lock, replace_dir, within, write_json
from .backbones import BuildRefused, default_heads
from .filtering import FilteredModel
from .manifest import MANIFEST_FILE, MEMORY_FILE, MODEL_FILE, WEIGHT_FILES, CheckpointError, Manifest
from .sites import GateSite, discover_sites

__all__ = ["MANIFEST_FILE", "MEMORY_FILE", "MODEL_FILE", "CheckpointError", "Manifest", "check_target", "file_sha256",
           "is_checkpoint", "load", "read_manifest", "read_tensors", "save_checkpoint", "update_manifest"]


def package_versions() -> dict[str, str]:
    """The versions that wrote a checkpoint (read from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"wfexplain": __version__, "torch": torch.__version__, "torchvision": installed("torchvision"),
            "timm": installed("timm"), "python": platform.python_version()}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST_FILE).is_file()


def check_target(directory: str | os.PathLike, overwrite: bool) -> None:
    """Fail before any work if ``directory`` cannot be written: it exists (without ``overwrite``) or is not writable.

    An empty existing directory counts as absent.
    """
    d = Path(directory)
    if d.exists() and not (d.is_dir() and not any(d.iterdir())) and not overwrite:
        what = "a checkpoint" if is_checkpoint(d) else "not empty" if d.is_dir() else "a file"
        raise FileExistsError(f"{d} already exists ({what})")
    if d.exists() and not d.is_dir():
        raise FileExistsError(f"{d} is a file, not a directory")
    ancestor = d.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot create {d}: {ancestor} is not a directory")
    try:
        Path(tempfile.mkdtemp(dir=ancestor, prefix=".wfx-probe-")).rmdir()
    except OSError as e:
        raise PermissionError(f"cannot write {d}: {ancestor} is not writable ({e.strerror})") from None


def save_checkpoint(model: FilteredModel, directory: str | os.PathLike, fields: dict | None = None, *,
                    half: bool = False, overwrite: bool = False, carry: Sequence[str] = (),
                    expect: Mapping[str, str] | None = None, extra: Mapping[str, bytes] | None = None) -> Manifest:
    """Write (or replace, whole) a checkpoint directory and return its manifest.

    Args:
        model: the filtered model to save.
        directory: target directory.
        fields: further :class:`~wfexplain.manifest.Manifest` fields (configs, metrics, timings, ...).
        half: store the backbone's floating tensors in float16 (loaded back as float32).
        overwrite: replace an existing directory (else ``FileExistsError``, nothing written).
        carry: entries of the existing directory to keep, e.g. ``model.safetensors`` when only
            the memory changed (the backbone file is then not rewritten) or ``retrain``.
        expect: the weight files' digests (``Manifest.files``) the directory held when the caller loaded it:
            checked under the directory's lock, with the carried files' contents, so a checkpoint another
            writer changed meanwhile is refused (``CheckpointError``, nothing written), never overwritten.
        extra: further files to write beside the weights (e.g. ``history.csv``), by plain file name.

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False (checked again under the lock).
    """
    def to_disk(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu().contiguous()
        return t.half() if half and t.is_floating_point() else t

    with replace_dir(directory, overwrite=overwrite, carry=carry) as tmp:
        if expect is not None:
            _check_unchanged(Path(directory), tmp, expect)
        if MODEL_FILE not in carry:
            save_file({k: to_disk(v) for k, v in model.backbone.state_dict().items()}, str(tmp / MODEL_FILE))
        save_file({k: v.detach().cpu().float().contiguous() for k, v in model.memory.items()}, str(tmp / MEMORY_FILE))
        for name, data in (extra or {}).items():
            if Path(name).name != name or name in (*WEIGHT_FILES, MANIFEST_FILE):
                raise ValueError(f"{name!r} is not a file name a checkpoint can hold beside its weights")
            (tmp / name).write_bytes(data)
        manifest = Manifest(
            **{"versions": package_versions(), **(fields or {})},
            backbone=model.backbone_name, dataset=model.info, storage_dtype="float16" if half else "float32",
            memory_shapes={k: (v.shape[0], v.shape[1]) for k, v in model.memory.items()}, arch_kwargs=model.arch_kwargs,
            heads=list(model.heads), sites=[s.to_json() for s in model.sites],
            files={name: file_sha256(tmp / name) for name in WEIGHT_FILES},
        )
        manifest = Manifest.from_json(manifest.to_json(), str(Path(directory) / MANIFEST_FILE))  # readable back
        write_json(tmp / MANIFEST_FILE, manifest.to_json())
    return manifest


def _check_unchanged(d: Path, tmp: Path, expect: Mapping[str, str]) -> None:
    """The directory (under its lock) still records, and ``tmp``'s carried files still hold, ``expect``."""
    try:
        found = read_manifest(d).files
    except CheckpointError:
        found = None
    if found != dict(expect) or any(file_sha256(tmp / n) != expect[n] for n in expect if (tmp / n).is_file()):
        raise CheckpointError(f"{d} changed since it was loaded (another process rewrote the checkpoint); nothing "
                              "was written: load it again and redo the work")


def update_manifest(directory: str | os.PathLike, change: Callable[[Manifest], Manifest],
                    expect: Mapping[str, str] | None = None, extra: Mapping[str, bytes] | None = None) -> Manifest:
    """Replace only the manifest by ``change(current manifest)``, under the directory's lock (a read-modify-write:
    concurrent updates each see the other's result, none is lost). Weight files and everything else are kept;
    the directory is swapped whole. ``expect``: the weight digests the change was computed for (else refused).
    """
    d = Path(directory)
    with dir_lock(d):
        current = read_manifest(d)
        if expect is not None and current.files != dict(expect):
            raise CheckpointError(f"{d} changed since it was loaded (its weight files differ); the manifest was not updated")
        read_verified(d, current)  # the files on disk are the ones it records
        manifest = change(current)
        if manifest.files != current.files:
            raise CheckpointError(f"{d / MANIFEST_FILE}: the new manifest records other weight files than the directory holds")
        replace_manifest(d, manifest)
    return manifest


def replace_manifest(d: Path, manifest: Manifest) -> None:
    """Swap in ``d`` with ``manifest`` (validated) and every other entry kept; the caller holds ``d``'s lock and
    has checked the weight files."""
    keep = [p.name for p in d.iterdir() if p.name != MANIFEST_FILE and not p.name.startswith(".")]  # not temporaries
    with replace_dir(d, overwrite=True, carry=keep) as tmp:
        write_json(tmp / MANIFEST_FILE, Manifest.from_json(manifest.to_json(), str(d / MANIFEST_FILE)).to_json())


def read_json(path: Path):
    """Parsed JSON, or ``CheckpointError`` naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def inside(directory: str | os.PathLike, name: str) -> Path:
    """``directory / name``, refused (``CheckpointError``) if it resolves outside ``directory`` (a planted symlink)."""
    path = Path(directory) / name
    try:
        within(directory, path)
    except PathEscape as e:
        raise CheckpointError(str(e)) from None
    return path


def read_manifest(directory: str | os.PathLike, require_digests: bool = True) -> Manifest:
    """The validated manifest of a checkpoint directory."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    path = inside(d, MANIFEST_FILE)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a wfexplain checkpoint (needs {MODEL_FILE}, "
                              f"{MEMORY_FILE}, {MANIFEST_FILE})")
    return Manifest.from_json(read_json(path), str(path), require_digests)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def read_verified(directory: Path, manifest: Manifest) -> dict[str, bytes]:
    """The bytes of both weight files, each read once and checked against the SHA-256 the manifest recorded.

    The tensors are later parsed from these very bytes, so a file swapped between the check and
    the parse (a concurrent rewrite) cannot slip in.
    """
    blobs = {}
    for name in WEIGHT_FILES:
        path = inside(directory, name)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        data = path.read_bytes()
        if (found := hashlib.sha256(data).hexdigest()) != manifest.files[name]:
            raise CheckpointError(f"{path} does not match its manifest: SHA-256 {found[:12]}…, recorded "
                                  f"{manifest.files[name][:12]}… (the file was replaced, or a rewrite was interrupted)")
        blobs[name] = data
    return blobs


def _header(data: bytes, path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from the safetensors header of ``data``, without reading the tensors."""
    try:
        n = int.from_bytes(data[:8], "little")
        if not 0 < n <= len(data) - 8:
            raise ValueError(f"header length {n} does not fit a {len(data):,}-byte file")
        header = json.loads(data[8:8 + n])
        return {k: (str(v["dtype"]), tuple(int(x) for x in v["shape"])) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def check_headers(directory: Path, manifest: Manifest, blobs: dict[str, bytes]) -> dict[str, tuple[int, ...]]:
    """The safetensors headers agree with the manifest (before any network is built); returns the weights' shapes."""
    memory = _header(blobs[MEMORY_FILE], directory / MEMORY_FILE)
    check_match(directory / MEMORY_FILE, manifest.memory_shapes, {k: s for k, (_, s) in memory.items()},
                "memory matrices")
    weights = _header(blobs[MODEL_FILE], directory / MODEL_FILE)
    if not weights:
        raise CheckpointError(f"{directory / MODEL_FILE} holds no tensors")
    stored = "F16" if manifest.storage_dtype == "float16" else "F32"
    odd = sorted(k for k, (dtype, _) in weights.items() if dtype.startswith(("F", "BF")) and dtype != stored)
    if odd:
        raise CheckpointError(f"{directory / MODEL_FILE}: tensor {odd[0]} is {weights[odd[0]][0]}, the manifest's "
                              f"storage_dtype is {manifest.storage_dtype}")
    return {k: shape for k, (_, shape) in weights.items()}


def _parse(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors_load(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def check_match(path: Path, expected: dict, got: dict, what: str, against: str = "its manifest") -> None:
    """Names and shapes of ``got`` (tensors or shapes) equal ``expected`` (shapes)."""
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(v)  # noqa: E731
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = [f"{k}: expected {shape(expected[k])}, found {shape(got[k])}"
              for k in expected if k in got and shape(got[k]) != shape(expected[k])]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra)):
        if items:
            problems.append(f"{label} {what} {', '.join(items[:5])}" + (f" (+{len(items) - 5} more)" if len(items) > 5 else ""))
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(f"{path} does not match {against}: " + " | ".join(problems))


def _recorded_layers(manifest: Manifest):
    """Discovery restricted to the layers the memory holds: a checkpoint that records no sites was made
    when discovery found fewer kinds (the ViT before its residual gates) and is read as it was made."""
    def sites(net: nn.Module) -> list[GateSite]:
        heads = manifest.heads or default_heads(manifest.backbone, net, manifest.dataset.num_classes)
        return [s for s in discover_sites(net, heads) if s.path in manifest.memory_shapes]

    return sites


def assemble(d: Path, manifest: Manifest, blobs: dict[str, bytes], trust: bool = False) -> FilteredModel:
    """The network a directory describes, with its weights and memory, from its verified bytes.

    The architecture is built by :meth:`Manifest.build_network`, bounded by the safetensors header (on the
    ``meta`` device first), so a manifest cannot make us allocate a network the file does not hold.
    """
    shapes = check_headers(d, manifest, blobs)
    info = manifest.dataset
    try:
        net = manifest.build_network(shapes, trust=trust)
    except BuildRefused as e:
        raise CheckpointError(f"{d / MODEL_FILE} does not match the network {manifest.backbone} of its manifest: "
                              f"{e}") from None
    except Exception as e:  # any failure of a foreign architecture to build is the checkpoint's problem
        raise CheckpointError(f"{d / MANIFEST_FILE}: cannot rebuild {manifest.backbone}: {e}") from None
    try:
        model = FilteredModel(manifest.backbone, info, net, sites=manifest.sites or _recorded_layers(manifest),
                              heads=manifest.heads, arch_kwargs=manifest.arch_kwargs)
    except Exception as e:  # a recorded site or head that does not fit the network
        raise CheckpointError(f"{d / MANIFEST_FILE}: cannot rebuild {manifest.backbone}: {e}") from None
    check_match(d / MANIFEST_FILE, {k: v.shape for k, v in model.memory.items()}, manifest.memory_shapes,
                "memory matrices", f"backbone {manifest.backbone} built for its dataset entry")
    state = _parse(blobs[MODEL_FILE], d / MODEL_FILE)
    expected = model.backbone.state_dict()
    model.backbone.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    memory = _parse(blobs[MEMORY_FILE], d / MEMORY_FILE)
    with torch.no_grad():
        for k, p in model.memory.items():
            p.copy_(memory[k].float())
    model.manifest = manifest
    return model


def load(directory: str | os.PathLike, device: str | torch.device = "cpu", trust: bool = False) -> FilteredModel:
    """Load a checkpoint directory into a :class:`FilteredModel` (eval mode, float32, on ``device``).

    ``trust`` allows a ``package.module:factory`` architecture to be imported (see
    :func:`wfexplain.backbones.build_network`; ``$WFEXPLAIN_TRUSTED_MODULES`` does it per module).

    Raises:
        CheckpointError: naming the file and what is missing, corrupt or mismatched.
    """
    d = Path(directory)
    manifest = read_manifest(d)
    return assemble(d, manifest, read_verified(d, manifest), trust).to(device).eval()
