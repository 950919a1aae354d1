"""``wfexplain import``: turn a classifier trained elsewhere into a wfexplain checkpoint.

The network is rebuilt from its architecture spec (:func:`wfexplain.backbones.build_network`),
its weights are read without pickle code execution (safetensors, or ``torch.load`` with
``weights_only=True``), its gate sites are found and probed (:func:`wfexplain.wrap`), and the
checkpoint records the architecture, the preprocessing and the dataset directory, so every
later command and the dashboard rebuild and feed it exactly as it was trained, with no
``--data-dir``. The test accuracy of the imported network is measured and recorded, and the
checkpoint is loaded back before it is swapped in (:func:`wfexplain.save`).

The preprocessing (input size, mean, std) is never guessed (:func:`resolve_preprocessing`): each
value comes from the first source that has it, in this order:

1. the caller (``--img-size``, ``--mean``, ``--std``; ``img_size`` among the architecture's arguments);
2. ``config.json`` / ``preprocessor_config.json`` beside the weights (timm hub: its ``pretrained_cfg``'s
   ``input_size``, ``mean``, ``std``; Hugging Face: ``image_size``, ``image_mean``, ``image_std``, ``size``);
3. the network's own configuration (timm's ``pretrained_cfg``), and the dataset's preprocessing
   (fashion-mnist, mnist, cifar10; never ``imagefolder``), each only when its channels are the network's;
   where both have a value and they disagree, the import refuses and asks for it.

A value no source has is an error naming the option that gives it.

A Hugging Face-style folder (``config.json`` + ``model.safetensors``, as timm's ``save_for_hf`` /
``push_to_hf_hub`` write it) is imported whole: given as ``weights`` (the architecture then defaults to
``timm:local-dir:FOLDER``) or named by ``timm:local-dir:PATH`` / ``timm:hf-hub:ORG/NAME`` (the local cache
only), it gives the architecture and its ``model_args``, the input channels and, as the config beside the
weights, the preprocessing (:func:`wfexplain.hfdir.read_config`: JSON only; its weights are read here, with
:func:`read_weights`, never by timm). The checkpoint records the resolved ``timm:ARCH`` and arguments, so it
does not depend on the folder (:func:`wfexplain.backbones.resolve_spec`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import hfdir
from .api import save, wrap
from .backbones import BuildRefused, build_network, list_backbones, resolve_spec
from .checkpoint import check_target, read_tensors
from .configs import TrainConfig
from .data import DatasetError, DatasetInfo, fingerprint, load_dataset, with_preprocessing
from .evaluation import predict
from .evaluation.metrics import accuracy
from .manifest import IMG_SIZE_RANGE, CheckpointError, Manifest

_NESTED = ("state_dict", "model_state_dict", "model", "net", "module")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with ``weights_only=True``.

    A checkpoint dict holding the state dict under a usual key (``state_dict``, ``model``, ...) is
    unwrapped, and a ``module.`` prefix (DataParallel) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist")
    if p.suffix == ".safetensors":
        return read_tensors(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refused by weights_only, truncated file, not a torch file...
        raise CheckpointError(f"{p} cannot be read as weights (torch.load, weights_only=True): {e}") from None
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _NESTED if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{p} holds a dict without a state dict (keys: {', '.join(map(str, list(obj)[:6]))})")
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_OPTIONS = {"img_size": "--img-size", "mean": "--mean", "std": "--std"}
_OWN = "the network's pretrained_cfg"


def _size(v, where: str) -> int | None:
    """A square side from ``224``, ``[224, 224]``, ``[3, 224, 224]`` or ``{"height": 224, "width": 224}``."""
    if isinstance(v, dict):
        v = [v["height"], v["width"]] if "height" in v and "width" in v else v.get("shortest_edge")
    if isinstance(v, list | tuple) and len(v) in (2, 3):
        if v[-1] != v[-2]:
            raise ValueError(f"{where}: input size {list(v)} is not square; wfexplain takes square inputs")
        v = v[-1]
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not IMG_SIZE_RANGE[0] <= v <= IMG_SIZE_RANGE[1]:
        raise ValueError(f"{where}: input size {v!r} is not a side of {IMG_SIZE_RANGE[0]} to {IMG_SIZE_RANGE[1]} px")
    return v


def _stats(v, chans: int, where: str, positive: bool = False) -> tuple[float, ...] | None:
    if v is None:
        return None
    v = [v] * chans if isinstance(v, int | float) and not isinstance(v, bool) else v
    if not isinstance(v, list | tuple) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                    and math.isfinite(x) and (x > 0 or not positive) for x in v):
        raise ValueError(f"{where}: {v!r} is not a list of finite numbers" + (" above 0" if positive else ""))
    return tuple(float(x) for x in v)


def _recorded(cfg: dict, chans: int, where: str) -> dict:
    """``img_size``/``mean``/``std`` a configuration dict records for ``chans`` channels ({} where it is for others)."""
    size = next((cfg[k] for k in ("input_size", "img_size", "image_size") if cfg.get(k) is not None), None)
    mean = _stats(cfg.get("mean", cfg.get("image_mean")), chans, where)
    std = _stats(cfg.get("std", cfg.get("image_std")), chans, where, positive=True)
    cfg_chans = size[0] if isinstance(size, list | tuple) and len(size) == 3 else cfg.get("num_channels")
    if cfg_chans not in (None, chans) or any(v is not None and len(v) != chans for v in (mean, std)):
        return {}
    found = {"img_size": _size(size, where), "mean": mean, "std": std}
    return {k: v for k, v in found.items() if v is not None}


def _config_files(folder: Path, chans: int) -> tuple[dict, dict[str, list[str]]]:
    """What ``config.json`` / ``preprocessor_config.json`` in ``folder`` record (timm hub or Hugging Face):
    ``{key: (value, file name)}``, and per file what it asks for that wfexplain does not apply."""
    found: dict = {}
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
        crop = obj.get("crop_size") if obj.get("do_center_crop") else None
        for cfg in (obj.get("pretrained_cfg"), {**obj, "img_size": crop or obj.get("size")}):
            if isinstance(cfg, dict):
                found.update({k: (v, name) for k, v in _recorded(cfg, chans, str(path)).items() if k not in found})
                notes.setdefault(name, []).extend(_unapplied(cfg, name))
    return found, notes


def _unapplied(cfg: dict, source: str) -> list[str]:
    extra = {k: cfg[k] for k in ("interpolation", "crop_pct") if cfg.get(k) not in (None, "bilinear", 1, 1.0)}
    return [f"{source} also asks for {', '.join(f'{k}={v}' for k, v in extra.items())}, which wfexplain does not "
            "apply (it resizes the whole image, bilinearly)"] if extra else []


def resolve_preprocessing(net: nn.Module | None, weights: str | os.PathLike, dataset: DatasetInfo, chans: int, *,
                          img_size: int | None = None, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None, arch_kwargs: dict | None = None,
                          config_dir: str | os.PathLike | None = None) -> dict:
    """``{"img_size", "mean", "std", "sources", "notes"}`` of an imported network (see the module docstring).

    ``net``: the built network, whose own configuration (timm ``pretrained_cfg``) is a source (None: none).
    ``config_dir``: where the config files are (default: beside the weights).

    Raises:
        ValueError: naming the options that give what no source has, or two sources that disagree.
    """
    value: dict = {k: (tuple(v), "given") for k, v in (("mean", mean), ("std", std)) if v}
    size = img_size or _size((arch_kwargs or {}).get("img_size"), "arch_kwargs")
    if size:
        value["img_size"] = (size, "given" if img_size else "arch_kwargs")
    files, file_notes = _config_files(Path(config_dir) if config_dir else Path(weights).parent, chans)
    value.update({k: v for k, v in files.items() if k not in value})
    cfg = getattr(net, "pretrained_cfg", None)
    own = _recorded(cfg, chans, _OWN) if isinstance(cfg, dict) else {}
    has_stats = dataset.name != "imagefolder" and dataset.in_chans == chans
    theirs = {"img_size": dataset.img_size, "mean": dataset.mean, "std": dataset.std} if has_stats else {}
    clash = [k for k in _OPTIONS if k not in value and k in own and k in theirs and own[k] != theirs[k]]
    if clash:
        raise ValueError(f"import needs {_listed(clash)}: the network's own configuration (timm pretrained_cfg: "
                         + ", ".join(f"{k} {own[k]}" for k in clash) + f") and {dataset.name}'s preprocessing ("
                         + ", ".join(f"{k} {theirs[k]}" for k in clash) + ") disagree; give the ones it was trained with")
    for k in _OPTIONS:
        if k not in value and (k in own or k in theirs):
            value[k] = (own[k], _OWN) if k in own else (theirs[k], dataset.name)
    missing = [k for k in _OPTIONS if k not in value]
    if missing:
        model = "the network's pretrained_cfg is for other channels" if isinstance(cfg, dict) and not own \
            else "the model records no preprocessing"
        data = f"{dataset.name} has none" if dataset.name == "imagefolder" else \
            f"{dataset.name}'s is for {dataset.in_chans} channel(s), not {chans}" if not has_stats else ""
        beside = "" if files else f", nor does a {' or '.join(_CONFIG_FILES)} beside the weights"
        raise ValueError(f"import needs {_listed(missing)} ({model}{beside}" + (f", and {data}" if data else "") + ")")
    used = {src for _, src in value.values()}
    notes = [n for name, ns in file_notes.items() if name in used for n in ns]
    if _OWN in used and isinstance(cfg, dict):
        notes += [f"{_OWN} describes timm's own pretrained weights: pass {_listed([k for k in _OPTIONS if value[k][1] == _OWN])}"
                  " if these weights were trained otherwise", *_unapplied(cfg, _OWN)]
    return {"img_size": value["img_size"][0], "mean": value["mean"][0], "std": value["std"][0],
            "sources": {k: v[1] for k, v in value.items()}, "notes": notes}


def _listed(keys: Sequence[str]) -> str:
    names = [_OPTIONS[k] for k in keys]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _folder(arch: str | None, weights: str | os.PathLike | None) -> tuple[str, Path, hfdir.HubConfig | None]:
    """``(arch, weights file, folder config)`` where ``weights`` is a Hugging Face-style folder or ``arch`` names one."""
    name = arch.partition(":")[2] if arch and arch.startswith("timm:") else ""
    if weights is not None and Path(weights).is_dir():
        arch = arch or f"timm:local-dir:{Path(weights).absolute()}"
        name = arch.partition(":")[2] if arch.startswith("timm:") else ""
        cfg = hfdir.read_config(name) if name.startswith(hfdir.PREFIXES) else None
        return arch, hfdir.weights_in(Path(weights)), cfg
    if not arch:
        raise ValueError("import needs --arch, unless --weights is a folder holding config.json (timm's save_for_hf)")
    if not name.startswith(hfdir.PREFIXES):
        if weights is None:
            raise ValueError(f"import needs --weights for {arch}")
        return arch, Path(weights), None
    cfg = hfdir.read_config(name)
    return arch, Path(weights) if weights is not None else hfdir.weights_in(cfg.folder, name), cfg


def import_checkpoint(arch: str | None, weights: str | os.PathLike | None, dataset: str, out: str | os.PathLike, *,
                      data_dir: str | os.PathLike | None = None, arch_kwargs: dict | None = None,
                      img_size: int | None = None, in_chans: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, head: Sequence[str] | None = None,
                      retrain_config: TrainConfig = TrainConfig(), overwrite: bool = False, device: str = "cpu",
                      workers: int = 0, trust: bool = False) -> dict:
    """Write a checkpoint of a network trained elsewhere; returns ``{"path", "accuracy", "sites", "manifest",
    "preprocessing"}`` (:func:`resolve_preprocessing`'s result: the values, their sources and notes).

    Args:
        arch: ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory`` (imported only with ``trust``
            or ``$WFEXPLAIN_TRUSTED_MODULES``, like every later command that loads the checkpoint), or a
            Hugging Face-style folder, ``timm:local-dir:PATH`` / ``timm:hf-hub:ORG/NAME`` (None: ``weights``'s).
        weights: its trained weights, or a folder holding ``config.json`` + ``model.safetensors`` (None: those of
            the folder ``arch`` names).
        dataset: one of :func:`wfexplain.data.list_datasets` (class names and images come from it).
        data_dir: where the dataset lives (recorded, absolute).
        in_chans: its input channels (default: the dataset's).
        img_size, mean, std: the preprocessing it was trained with (default: recorded beside the weights, by the
            network or by the dataset: see the module docstring; never guessed).
        head: classifier head path(s) (default: every layer that feeds the logits directly, :mod:`wfexplain.heads`).
        retrain_config: the recipe the benchmark's Retrain oracle will use for this network.
    """
    check_target(out, overwrite)
    arch, weights, folder = _folder(arch, weights)
    arch, arch_kwargs = resolve_spec(arch, arch_kwargs)  # recorded as timm:ARCH + arguments: the folder may go
    in_chans = in_chans or (folder.in_chans if folder else None)
    chans = in_chans if dataset == "imagefolder" else None
    test = load_dataset(dataset, "test", data_dir, False, img_size, chans)  # an image folder's size: set below
    base = test.info
    c = in_chans or base.in_chans
    state = read_weights(weights)

    def preprocessing(net: nn.Module | None) -> dict:
        return resolve_preprocessing(net, weights, base, c, img_size=img_size, mean=mean, std=std,
                                     arch_kwargs=arch_kwargs, config_dir=folder.folder if folder else None)

    pre = preprocessing(None) if arch in list_backbones() else None  # built-ins record none and need the size to build
    try:  # bounded by the weights: arch_kwargs cannot make us allocate more than the file holds
        net = build_network(arch, base.num_classes, c, pre["img_size"] if pre else img_size or base.img_size,
                            arch_kwargs, trust=trust, expect={k: tuple(v.shape) for k, v in state.items()})
    except BuildRefused as e:
        raise CheckpointError(f"{weights} does not match the network {arch}: {e}") from None
    pre = pre or preprocessing(net)
    expected = net.state_dict()
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    size = pre["img_size"]
    model = wrap(net, base.class_names, input_size=(c, size, size), mean=pre["mean"], std=pre["std"], head=head,
                 arch=arch, arch_kwargs=arch_kwargs, dataset=dataset).to(device)
    try:
        test = with_preprocessing(test, model.info)
    except DatasetError as e:
        raise ValueError(str(e)) from None
    acc = accuracy(predict(model, test, workers=workers), test.targets)
    manifest: Manifest = save(model.cpu(), out, overwrite=overwrite, data_dir=data_dir, trust=trust,
                              train_config=dataclasses.asdict(retrain_config), backbone_description=model.description,
                              dataset_fingerprint={"test": fingerprint(test)}, metrics={"original_accuracy": acc})
    return {"path": Path(out), "accuracy": acc, "sites": len(model.sites), "manifest": manifest, "preprocessing": pre}
