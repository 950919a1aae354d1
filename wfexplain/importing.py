"""``wfexplain import``: turn a classifier trained elsewhere into a wfexplain checkpoint.

The network is rebuilt from its architecture spec (:func:`wfexplain.backbones.build_network`),
its weights are read without pickle code execution (safetensors, or ``torch.load`` with
``weights_only=True``), its gate sites are found and probed (:func:`wfexplain.wrap`), and the
checkpoint records the architecture, the preprocessing and the dataset directory, so every
later command and the dashboard rebuild and feed it exactly as it was trained, with no
``--data-dir``. The test accuracy of the imported network is measured and recorded, and the
checkpoint is loaded back before it is swapped in (:func:`wfexplain.save`).

The preprocessing (input size, square or ``(H, W)``; mean, std; the resize: ``crop_pct``, ``interpolation``)
is never guessed: :func:`wfexplain.preprocessing.resolve_preprocessing` takes each value from the caller, named
torchvision weights, a ``config.json`` / ``preprocessor_config.json`` beside the weights, the network's own
``pretrained_cfg`` or the dataset, and names the options that give what no source has.

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
from .data import DatasetError, fingerprint, load_dataset, with_preprocessing
from .evaluation import predict
from .evaluation.metrics import accuracy
from .gate_coverage import coverage
from .manifest import CheckpointError, Manifest
from .preprocessing import resolve_preprocessing

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
                      img_size: int | Sequence[int] | None = None, in_chans: int | None = None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      crop_pct: float | str | None = None, interpolation: str | None = None,
                      torchvision_weights: str | None = None, head: Sequence[str] | None = None,
                      sites: Sequence[str] | None = None, exclude: Sequence[str] = (),
                      retrain_config: TrainConfig = TrainConfig(), overwrite: bool = False, device: str = "cpu",
                      workers: int = 0, trust: bool = False) -> dict:
    """Write a checkpoint of a network trained elsewhere; returns ``{"path", "accuracy", "sites", "manifest",
    "preprocessing", "coverage"}`` (:func:`resolve_preprocessing`'s result: the values, their sources and notes;
    :func:`wfexplain.coverage`'s: what is gated per stage, what is not and why).

    Args:
        arch: ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory`` (imported only with ``trust``
            or ``$WFEXPLAIN_TRUSTED_MODULES``, like every later command that loads the checkpoint), or a
            Hugging Face-style folder, ``timm:local-dir:PATH`` / ``timm:hf-hub:ORG/NAME`` (None: ``weights``'s).
        weights: its trained weights, or a folder holding ``config.json`` + ``model.safetensors`` (None: those of
            the folder ``arch`` names).
        dataset: one of :func:`wfexplain.data.list_datasets` (class names and images come from it).
        data_dir: where the dataset lives (recorded, absolute).
        in_chans: its input channels (default: the dataset's).
        img_size, mean, std, crop_pct, interpolation: the preprocessing it was trained with (default: recorded
            beside the weights, by the network or by the dataset: :mod:`wfexplain.preprocessing`; never guessed).
            ``img_size``: a side or ``(H, W)``; ``crop_pct``: in (0, 1] (resize keeping the aspect, then crop the
            centre), or ``"none"`` (resize the whole image); ``interpolation``: one of
            :data:`wfexplain.data.INTERPOLATIONS`.
        torchvision_weights: the torchvision weights (``ResNet18_Weights.IMAGENET1K_V1``, or ``IMAGENET1K_V1`` of
            ``arch``) whose ``transforms()`` give the preprocessing (``arch`` must be ``torchvision:NAME``).
        head: classifier head path(s) (default: every layer that feeds the logits directly, :mod:`wfexplain.heads`).
        sites: gate only the sites found under these module paths (default: all found).
        exclude: gate none of the sites under these module paths (e.g. ``aux1``, ``aux2``: branches run only in
            training).
        retrain_config: the recipe the benchmark's Retrain oracle will use for this network.
    """
    check_target(out, overwrite)
    arch, weights, folder = _folder(arch, weights)
    arch, arch_kwargs = resolve_spec(arch, arch_kwargs)  # recorded as timm:ARCH + arguments: the folder may go
    in_chans = in_chans or (folder.in_chans if folder else None)
    chans = in_chans if dataset == "imagefolder" else None
    test = load_dataset(dataset, "test", data_dir, False, None, chans)  # an image folder's size: set below
    base = test.info
    c = in_chans or base.in_chans
    state = read_weights(weights)

    def preprocessing(net: nn.Module | None) -> dict:
        return resolve_preprocessing(net, weights, base, c, img_size=img_size, mean=mean, std=std, crop_pct=crop_pct,
                                     interpolation=interpolation, torchvision_weights=torchvision_weights, arch=arch,
                                     arch_kwargs=arch_kwargs, config_dir=folder.folder if folder else None)

    pre = preprocessing(None) if arch in list_backbones() else None  # built-ins record none and need the size to build
    if pre and not isinstance(pre["img_size"], int):
        raise ValueError(f"the built-in backbone {arch} takes square inputs, not {pre['img_size']} (height, width)")
    try:  # bounded by the weights: arch_kwargs cannot make us allocate more than the file holds
        net = build_network(arch, base.num_classes, c, pre["img_size"] if pre else base.img_size,
                            arch_kwargs, trust=trust, expect={k: tuple(v.shape) for k, v in state.items()})
    except BuildRefused as e:
        raise CheckpointError(f"{weights} does not match the network {arch}: {e}") from None
    pre = pre or preprocessing(net)
    expected = net.state_dict()
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    h, w = (pre["img_size"],) * 2 if isinstance(pre["img_size"], int) else pre["img_size"]
    model = wrap(net, base.class_names, input_size=(c, h, w), mean=pre["mean"], std=pre["std"], head=head,
                 crop_pct=pre["crop_pct"], interpolation=pre["interpolation"], arch=arch, arch_kwargs=arch_kwargs,
                 dataset=dataset, sites=list(sites) if sites else "auto", exclude=exclude).to(device)
    try:
        test = with_preprocessing(test, model.info)
    except DatasetError as e:
        raise ValueError(str(e)) from None
    acc = accuracy(predict(model, test, workers=workers), test.targets)
    manifest: Manifest = save(model.cpu(), out, overwrite=overwrite, data_dir=data_dir, trust=trust,
                              train_config=dataclasses.asdict(retrain_config), backbone_description=model.description,
                              dataset_fingerprint={"test": fingerprint(test)}, metrics={"original_accuracy": acc})
    return {"path": Path(out), "accuracy": acc, "sites": len(model.sites), "manifest": manifest, "preprocessing": pre,
            "coverage": coverage(model)}
