"""``wfexplain import``: turn a classifier trained elsewhere into a wfexplain checkpoint.

The network is rebuilt from its architecture spec (:func:`wfexplain.backbones.build_network`),
its weights are read without pickle code execution (safetensors, or ``torch.load`` with
``weights_only=True``), its gate sites are found and probed (:func:`wfexplain.wrap`), and the
checkpoint records the architecture, the preprocessing and the dataset directory, so every
later command and the dashboard rebuild and feed it exactly as it was trained, with no
``--data-dir``. The test accuracy of the imported network is measured and recorded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .api import save, wrap
from .backbones import BuildRefused, build_network
from .checkpoint import check_target, read_tensors
from .data import DatasetError, fingerprint, load_dataset, with_preprocessing
from .engine import TrainConfig
from .evaluation import predict
from .evaluation.metrics import accuracy
from .manifest import CheckpointError, Manifest

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


def import_checkpoint(arch: str, weights: str | os.PathLike, dataset: str, out: str | os.PathLike, *,
                      data_dir: str | os.PathLike | None = None, arch_kwargs: dict | None = None,
                      img_size: int | None = None, in_chans: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, head: Sequence[str] | None = None,
                      retrain_config: TrainConfig = TrainConfig(), overwrite: bool = False, device: str = "cpu",
                      workers: int = 0, trust: bool = False) -> dict:
    """Write a checkpoint of a network trained elsewhere; returns ``{"path", "accuracy", "sites", "manifest"}``.

    Args:
        arch: ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory`` (imported only with ``trust``
            or ``$WFEXPLAIN_TRUSTED_MODULES``, like every later command that loads the checkpoint).
        weights: its trained weights.
        dataset: one of :func:`wfexplain.data.list_datasets` (class names and images come from it).
        data_dir: where the dataset lives (recorded, absolute).
        img_size, in_chans, mean, std: the preprocessing the network was trained with (default: the dataset's).
        head: classifier head path(s) (default: found automatically).
        retrain_config: the recipe the benchmark's Retrain oracle will use for this network.
    """
    check_target(out, overwrite)
    chans = in_chans if dataset == "imagefolder" else None
    test = load_dataset(dataset, "test", data_dir, False, img_size, chans)
    base = test.info
    c, size = in_chans or base.in_chans, img_size or base.img_size
    same = c == base.in_chans  # the dataset's statistics fit; other channels default to 0.5 / 0.5
    mean = tuple(mean or (base.mean if same else (0.5,) * c))
    std = tuple(std or (base.std if same else (0.5,) * c))
    state = read_weights(weights)
    try:  # bounded by the weights: arch_kwargs cannot make us allocate more than the file holds
        net = build_network(arch, base.num_classes, c, size, arch_kwargs, trust=trust,
                            expect={k: tuple(v.shape) for k, v in state.items()})
    except BuildRefused as e:
        raise CheckpointError(f"{weights} does not match the network {arch}: {e}") from None
    expected = net.state_dict()
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model = wrap(net, base.class_names, input_size=(c, size, size), mean=mean, std=std, head=head, arch=arch,
                 arch_kwargs=arch_kwargs, dataset=dataset).to(device)
    try:
        test = with_preprocessing(test, model.info)
    except DatasetError as e:
        raise ValueError(str(e)) from None
    acc = accuracy(predict(model, test, workers=workers), test.targets)
    manifest: Manifest = save(model.cpu(), out, overwrite=overwrite, data_dir=data_dir,
                              train_config=dataclasses.asdict(retrain_config), backbone_description=model.description,
                              dataset_fingerprint={"test": fingerprint(test)}, metrics={"original_accuracy": acc})
    return {"path": Path(out), "accuracy": acc, "sites": len(model.sites), "manifest": manifest}
