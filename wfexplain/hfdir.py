"""Hugging Face-style model folders: ``config.json`` + ``model.safetensors``, as timm's ``save_for_hf`` /
``push_to_hf_hub`` write them, named by the architecture specs ``timm:local-dir:PATH`` and
``timm:hf-hub:ORG/NAME[@REVISION]`` (timm's own model sources, ``timm.create_model("local-dir:...")``).

wfexplain never hands such a name to timm: timm would read the folder's weights itself (a
``pytorch_model.bin`` through ``torch.load``) or download. :func:`read_config` reads the one file
``config.json`` (JSON, at most :data:`MAX_CONFIG_BYTES`: data, never code) and returns what timm's
``_parse_model_cfg`` takes from it, the ``architecture`` (a timm model name) and ``model_args``; the
network is then built from those with ``pretrained=False`` and gets its weights from the checkpoint.
A path in a spec read from a manifest is data too: only a directory holding a regular
``config.json`` is accepted, so ``timm:local-dir:/etc`` is refused before anything is read.

``hf-hub`` is offline only: the folder is the model's snapshot in the local Hugging Face cache
(``huggingface_hub.try_to_load_from_cache``, which never touches the network); a model that is not
there is an error naming the cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAX_CONFIG_BYTES", "PREFIXES", "WEIGHT_NAMES", "HubConfig", "folder_of", "read_config", "weights_in"]

PREFIXES = ("local-dir:", "hf-hub:")
MAX_CONFIG_BYTES = 1 << 20
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")  # in timm's order of preference
_REPO = re.compile(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+(@[A-Za-z0-9_.\-]+)?")
_ARCH = re.compile(r"[A-Za-z0-9_.\-]+")
_OURS = ("num_classes", "in_chans")  # model_args wfexplain sets from the checkpoint


@dataclass(frozen=True)
class HubConfig:
    """What a folder's ``config.json`` records (timm's hub format, or its legacy single-dict form)."""

    folder: Path
    architecture: str  # a timm model name
    model_args: dict = field(default_factory=dict)  # constructor arguments (num_classes, in_chans removed)
    pretrained_cfg: dict = field(default_factory=dict)  # preprocessing: input_size, mean, std, interpolation...
    in_chans: int | None = None  # the input channels it records, if any


def _cache_file(repo: str, filename: str) -> Path | None:
    """``filename`` of ``repo[@revision]`` in the local Hugging Face cache (None: not there); never downloads."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
    return Path(found) if isinstance(found, str) else None


def folder_of(name: str) -> Path:
    """The folder a ``local-dir:PATH`` or ``hf-hub:ORG/NAME[@REV]`` names (a directory holding config.json).

    Raises:
        ValueError: not one of these forms, not a directory with a config.json, or not in the local cache.
    """
    source, _, rest = name.partition(":")
    if source == "local-dir":
        folder = Path(rest).expanduser()
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ValueError(f"timm:{name}: {rest} is not a directory holding a config.json (timm's save_for_hf "
                             "format: config.json + model.safetensors)")
        return folder
    if source == "hf-hub" and _REPO.fullmatch(rest):
        found = _cache_file(rest, "config.json")
        if found is None:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise ValueError(f"timm:{name} is not in the local Hugging Face cache ({HF_HUB_CACHE}, $HF_HUB_CACHE): "
                             f"wfexplain never downloads; fetch it first (`hf download {rest.partition('@')[0]}`) "
                             "or use timm:local-dir:PATH")
        return found.parent
    raise ValueError(f"timm:{name} is neither local-dir:PATH nor hf-hub:ORG/NAME[@REVISION]")


def read_config(name: str) -> HubConfig:
    """What the ``config.json`` of the folder ``name`` names (:func:`folder_of`) records; read as JSON only.

    Raises:
        ValueError: the folder is refused, or its config.json is too large, not JSON, or has no valid architecture.
    """
    folder = folder_of(name)
    path = folder / "config.json"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"it is over {MAX_CONFIG_BYTES:,} bytes")
        cfg = json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} cannot be read as a JSON config: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} holds a {type(cfg).__name__}, not a JSON object")
    pretrained = cfg.get("pretrained_cfg", cfg)  # timm's legacy single-dict form is itself the pretrained_cfg
    arch, args = cfg.get("architecture", pretrained.get("architecture") if isinstance(pretrained, dict) else None), \
        cfg.get("model_args", {})
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"{path} names no timm architecture (its 'architecture' is {str(arch)[:60]!r})")
    if not isinstance(args, dict) or not isinstance(pretrained, dict):
        raise ValueError(f"{path}: model_args and pretrained_cfg must be JSON objects")
    size = pretrained.get("input_size")
    chans = args.get("in_chans", size[0] if isinstance(size, list) and len(size) == 3 else None)
    return HubConfig(folder, arch, {k: v for k, v in args.items() if k not in _OURS},
                     {k: v for k, v in pretrained.items() if k != "architecture"},
                     chans if isinstance(chans, int) and not isinstance(chans, bool) else None)


def weights_in(folder: str | Path, name: str | None = None) -> Path:
    """The weights file of a folder (``model.safetensors``, else ``pytorch_model.bin``, read ``weights_only``);
    ``name``: the ``hf-hub:`` spec it came from, whose files may be cached apart from config.json."""
    folder = Path(folder)
    for file in WEIGHT_NAMES:
        if (folder / file).is_file():
            return folder / file
        if name and name.startswith("hf-hub:") and (cached := _cache_file(name.partition(":")[2], file)):
            return cached
    raise ValueError(f"{folder} holds no {' or '.join(WEIGHT_NAMES)}")
