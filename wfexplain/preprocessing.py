"""Where an imported network's preprocessing comes from (:func:`resolve_preprocessing`); never guessed.

Each value comes from the first source that has it, in this order:

1. the caller (``--img-size``, ``--mean``, ``--std``, ``--crop-pct``, ``--interpolation``; ``img_size`` among the
   architecture's arguments);
2. torchvision weights the caller names (``--torchvision-weights ResNet18_Weights.IMAGENET1K_V1``, for a
   ``torchvision:NAME`` architecture): the parameters of their ``transforms()`` (``crop_size``, ``resize_size``,
   ``interpolation``, ``mean``, ``std``; nothing is downloaded);
3. ``config.json`` / ``preprocessor_config.json`` beside the weights (timm hub: its ``pretrained_cfg``'s
   ``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``; Hugging Face: ``image_size``/``size``,
   ``crop_size`` with ``do_center_crop``, ``resample``, ``image_mean``, ``image_std``);
4. the network's own configuration (timm's ``pretrained_cfg``), and the dataset's preprocessing
   (fashion-mnist, mnist, cifar10; never ``imagefolder``), each only when its channels are the network's;
   where both have a value and they disagree, the import refuses and asks for it.

The input size, mean and std are required: a value no source has is an error naming the option that gives
it. The resize (``crop_pct``, ``interpolation``) goes with the input size: given, or from the source the
size came from, else the defaults (the whole image resized, bilinearly). The input size may be
``(H, W)`` (a timm ``input_size`` of ``[3, H, W]``, ``--img-size H W``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from .data import INTERPOLATIONS, DatasetInfo
from .manifest import IMG_SIZE_RANGE

__all__ = ["NO_CROP", "resolve_preprocessing"]

_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_OPTIONS = {"img_size": "--img-size", "mean": "--mean", "std": "--std", "crop_pct": "--crop-pct",
            "interpolation": "--interpolation"}
_REQUIRED = ("img_size", "mean", "std")
_RESIZE = ("crop_pct", "interpolation")  # given, or taken from the source of the input size (else the defaults)
_OWN = "the network's pretrained_cfg"
_RESAMPLE = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # Hugging Face's "resample": PIL's numbers
NO_CROP = "none"  # crop_pct given as "none": the whole image resized, whatever a source records


def _size(v, where: str) -> int | tuple[int, int] | None:
    """A side (square) or ``(H, W)`` from ``224``, ``[224]``, ``[32, 48]``, ``[3, 32, 48]``, ``{"height", "width"}`` or
    ``{"shortest_edge"}``."""
    if isinstance(v, dict):
        v = [v["height"], v["width"]] if "height" in v and "width" in v else v.get("shortest_edge")
    if v is None:
        return None
    sides = list(v)[-2:] if isinstance(v, list | tuple) and len(v) in (1, 2, 3) else [v]
    lo, hi = IMG_SIZE_RANGE
    if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in sides):
        raise ValueError(f"{where}: input size {v!r} is not a side or a (height, width) of {lo} to {hi} px")
    return sides[0] if sides[0] == sides[-1] else (sides[0], sides[1])


def _crop(v, where: str) -> float | str | None:
    if v is None or v == NO_CROP:
        return v
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v <= 1:
        raise ValueError(f"{where}: crop_pct {v!r} is not a number in (0, 1] (or {NO_CROP!r}: no crop)")
    return float(v)


def _interpolation(v, where: str) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(_RESAMPLE):
        v = _RESAMPLE[v]
    if v is not None and v not in INTERPOLATIONS:
        raise ValueError(f"{where}: interpolation {v!r} is not one of {', '.join(INTERPOLATIONS)}")
    return v


def _pct(crop: int, resize: int) -> float:
    """``crop / resize``, as a crop_pct whose resize (``floor(crop / crop_pct)``) is ``resize`` exactly."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0)
    return pct


def _stats(v, chans: int, where: str, positive: bool = False) -> tuple[float, ...] | None:
    if v is None:
        return None
    v = [v] * chans if isinstance(v, int | float) and not isinstance(v, bool) else v
    if not isinstance(v, list | tuple) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                    and math.isfinite(x) and (x > 0 or not positive) for x in v):
        raise ValueError(f"{where}: {v!r} is not a list of finite numbers" + (" above 0" if positive else ""))
    return tuple(float(x) for x in v)


def _recorded(cfg: dict, chans: int, where: str) -> dict:
    """What a configuration dict records for ``chans`` channels ({} where it is for others): ``img_size``, ``mean``,
    ``std``, ``crop_pct``, ``interpolation`` (timm's names, or Hugging Face's ``image_*`` and ``resample``)."""
    size = next((cfg[k] for k in ("input_size", "img_size", "image_size") if cfg.get(k) is not None), None)
    mean = _stats(cfg.get("mean", cfg.get("image_mean")), chans, where)
    std = _stats(cfg.get("std", cfg.get("image_std")), chans, where, positive=True)
    cfg_chans = size[0] if isinstance(size, list | tuple) and len(size) == 3 else cfg.get("num_channels")
    if cfg_chans not in (None, chans) or any(v is not None and len(v) != chans for v in (mean, std)):
        return {}
    found = {"img_size": _size(size, where), "mean": mean, "std": std, "crop_pct": _crop(cfg.get("crop_pct"), where),
             "interpolation": _interpolation(cfg.get("interpolation", cfg.get("resample")), where)}
    return {k: v for k, v in found.items() if v is not None}


def _config_files(folder: Path, chans: int) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """What ``config.json`` / ``preprocessor_config.json`` in ``folder`` record (timm hub or Hugging Face), per file,
    and per file what it asks for that wfexplain does not apply."""
    found: dict[str, dict] = {}
    notes: dict[str, list[str]] = {}
    for name in _CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            obj = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} cannot be read as JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a JSON object")
        top = {**obj, "img_size": obj.get("size")}
        crop = _size(obj.get("crop_size"), str(path)) if obj.get("do_center_crop") else None
        if crop is not None:  # Hugging Face: the shorter side resized to size.shortest_edge, then the centre cropped
            short = obj["size"].get("shortest_edge") if isinstance(obj.get("size"), dict) else None
            top.update(img_size=crop, **({"crop_pct": _pct(crop, short)} if isinstance(crop, int) and isinstance(
                short, int) and short >= crop else {}))
        for cfg in (obj.get("pretrained_cfg"), top):
            if isinstance(cfg, dict):
                found[name] = {**_recorded(cfg, chans, str(path)), **found.get(name, {})}
                notes.setdefault(name, []).extend(_unapplied(cfg, name))
    return found, notes


def _unapplied(cfg: dict, source: str) -> list[str]:
    mode = cfg.get("crop_mode")
    return [f"{source} also asks for crop_mode={mode}, which wfexplain does not apply (it resizes keeping the aspect, "
            "then crops the centre)"] if mode not in (None, "center") and cfg.get("crop_pct") is not None else []


def _torchvision(arch: str | None, weights: str) -> tuple[str, dict]:
    """``(name, what they record)`` of torchvision weights (``ResNet18_Weights.IMAGENET1K_V1``, or ``IMAGENET1K_V1`` /
    ``DEFAULT`` of ``arch``'s): the parameters of their ``transforms()`` (nothing is downloaded)."""
    model = arch.partition(":")[2] if arch and arch.startswith("torchvision:") else ""
    if not model:
        raise ValueError(f"--torchvision-weights names the preprocessing of torchvision weights: the architecture must "
                         f"be torchvision:NAME, not {arch}")
    from torchvision.models import get_model_weights, get_weight

    try:
        enum = get_model_weights(model)
        w = get_weight(weights) if "." in weights else enum[weights]
    except (KeyError, ValueError) as e:
        raise ValueError(f"--torchvision-weights {weights}: no such torchvision weights ({e})") from None
    t = w.transforms()
    crop, resize = getattr(t, "crop_size", None), getattr(t, "resize_size", None)
    if w not in list(enum) or not (isinstance(crop, list) and isinstance(resize, list) and len(crop) == len(resize) == 1):
        raise ValueError(f"--torchvision-weights {w}: not image classification weights of torchvision:{model} "
                         f"(those are {', '.join(map(str, enum))})")
    return str(w), {"img_size": crop[0], "mean": tuple(t.mean), "std": tuple(t.std), "crop_pct": _pct(crop[0], resize[0]),
                    "interpolation": t.interpolation.value}


def resolve_preprocessing(net: nn.Module | None, weights: str | os.PathLike, dataset: DatasetInfo, chans: int, *,
                          img_size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None, crop_pct: float | str | None = None,
                          interpolation: str | None = None, torchvision_weights: str | None = None,
                          arch: str | None = None, arch_kwargs: dict | None = None,
                          config_dir: str | os.PathLike | None = None) -> dict:
    """``{"img_size", "mean", "std", "crop_pct", "interpolation", "sources", "notes"}`` of an imported network (see the
    module docstring). ``img_size`` is a side, or ``(H, W)`` where they differ; ``sources`` names where each value
    came from (``crop_pct`` and ``interpolation`` only where one was given or recorded: else None and bilinear).

    ``net``: the built network, whose own configuration (timm ``pretrained_cfg``) is a source (None: none).
    ``crop_pct``: a number in (0, 1], or ``"none"`` (the whole image resized, whatever a source records).
    ``torchvision_weights``: torchvision weights of ``arch`` (``torchvision:NAME``) whose ``transforms()`` is a source.
    ``config_dir``: where the config files are (default: beside the weights).

    Raises:
        ValueError: naming the options that give what no source has, or two sources that disagree.
    """
    value: dict = {k: (tuple(v), "given") for k, v in (("mean", mean), ("std", std)) if v}
    size = _size(img_size, "--img-size") or _size((arch_kwargs or {}).get("img_size"), "arch_kwargs")
    if size:
        value["img_size"] = (size, "given" if img_size else "arch_kwargs")
    value.update({k: (v, "given") for k, v in (("crop_pct", _crop(crop_pct, "--crop-pct")),
                                               ("interpolation", _interpolation(interpolation, "--interpolation")))
                  if v is not None})
    recorded = dict([_torchvision(arch, torchvision_weights)]) if torchvision_weights else {}
    files, file_notes = _config_files(Path(config_dir) if config_dir else Path(weights).parent, chans)
    for src, rec in {**recorded, **files}.items():
        value.update({k: (v, src) for k, v in rec.items() if k not in value and k not in _RESIZE})
    cfg = getattr(net, "pretrained_cfg", None)
    own = _recorded(cfg, chans, _OWN) if isinstance(cfg, dict) else {}
    has_stats = dataset.name != "imagefolder" and dataset.in_chans == chans
    theirs = {"img_size": dataset.img_size, "mean": dataset.mean, "std": dataset.std} if has_stats else {}
    clash = [k for k in _REQUIRED if k not in value and k in own and k in theirs and own[k] != theirs[k]]
    if clash:
        raise ValueError(f"import needs {_listed(clash)}: the network's own configuration (timm pretrained_cfg: "
                         + ", ".join(f"{k} {own[k]}" for k in clash) + f") and {dataset.name}'s preprocessing ("
                         + ", ".join(f"{k} {theirs[k]}" for k in clash) + ") disagree; give the ones it was trained with")
    for k in _REQUIRED:
        if k not in value and (k in own or k in theirs):
            value[k] = (own[k], _OWN) if k in own else (theirs[k], dataset.name)
    missing = [k for k in _REQUIRED if k not in value]
    if missing:
        model = "the network's pretrained_cfg is for other channels" if isinstance(cfg, dict) and not own \
            else "the model records no preprocessing"
        data = f"{dataset.name} has none" if dataset.name == "imagefolder" else \
            f"{dataset.name}'s is for {dataset.in_chans} channel(s), not {chans}" if not has_stats else ""
        beside = "" if any(files.values()) else f", nor does a {' or '.join(_CONFIG_FILES)} beside the weights"
        raise ValueError(f"import needs {_listed(missing)} ({model}{beside}" + (f", and {data}" if data else "") + ")")
    src, every = value["img_size"][1], {**recorded, **files, _OWN: own}
    value.update({k: (v, src) for k, v in every.get(src, {}).items() if k in _RESIZE and k not in value})
    used = {s for _, s in value.values()}  # the resize goes with the size: crop_pct and interpolation from its source
    notes = [n for name, ns in file_notes.items() if name in used for n in ns]
    for s, rec in every.items():
        unused = {k: rec[k] for k in _RESIZE if k in rec and value.get(k, (None, ""))[1] != s}
        if s in used and unused:
            notes.append(f"{s} also records {', '.join(f'{k}={v}' for k, v in unused.items())}, not applied: the "
                         f"input size comes from {src} (give {_listed(list(unused))} to apply them)")
    if _OWN in used and isinstance(cfg, dict):
        notes += [f"{_OWN} describes timm's own pretrained weights: pass {_listed([k for k in value if value[k][1] == _OWN])}"
                  " if these weights were trained otherwise", *_unapplied(cfg, _OWN)]
    crop = value.get("crop_pct", (None,))[0]
    return {"img_size": value["img_size"][0], "mean": value["mean"][0], "std": value["std"][0],
            "crop_pct": None if crop == NO_CROP else crop, "interpolation": value.get("interpolation", ("bilinear",))[0],
            "sources": {k: v[1] for k, v in value.items()}, "notes": notes}


def _listed(keys: Sequence[str]) -> str:
    names = [_OPTIONS[k] for k in keys]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
