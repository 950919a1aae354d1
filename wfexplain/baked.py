"""Baked models outside wfexplain: rebuilt from their safetensors file alone, or exported to ONNX.

A baked model (:func:`wfexplain.filtering.bake`: Poppi et al., arXiv 2304.02049, a filter folded into
the weights) is a plain network. Its safetensors file (``wfexplain.export.baked_safetensors``, format
:data:`BAKED_FORMAT`) records the architecture spec (``backbone``), its ``arch_kwargs``, the classes and
the preprocessing: :func:`rebuild_baked` rebuilds the module from those bytes, bounded by the tensors
the file holds (:func:`wfexplain.backbones.build_network` with ``expect``), reading nothing pickled.
:func:`baked_onnx` exports the baked network with ``torch.onnx.export`` (torch's default, the
``torch.export``-based exporter, which needs the ``onnx`` and ``onnxscript`` packages).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping

import torch
from safetensors.torch import load as safetensors_load
from torch import nn

from ._version import __version__
from .backbones import build_network, check_spec
from .filtering import FilteredModel, bake
from .forget import classes as forget_list

__all__ = ["BAKED_FORMAT", "ONNX_PACKAGES", "baked_header", "baked_metadata", "baked_onnx", "rebuild_baked"]

BAKED_FORMAT = "wfexplain-baked"
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export's default exporter imports (extra "onnx")


def baked_metadata(model: FilteredModel, classes: list[int], extra: Mapping[str, str]) -> dict[str, str]:
    """The string metadata of a baked (or removed) copy of ``model`` without ``classes``, plus ``extra``: the
    architecture (``backbone`` spec, ``arch_kwargs`` JSON, ``num_classes``, ``in_chans``, ``img_size``), the
    classes and the preprocessing (``mean``/``std``; the input is resized whole to ``img_size``, bilinearly, unless
    ``img_width`` (the input is ``img_size`` x ``img_width``), ``interpolation`` or ``crop_pct`` say otherwise: those
    are written only where they are not the default, as in the manifest)."""
    info = model.info
    return {"format": BAKED_FORMAT, "backbone": model.backbone_name,
            "arch_kwargs": json.dumps(model.arch_kwargs, sort_keys=True), "forget": json.dumps(classes),
            "forget_names": json.dumps([info.class_names[c] for c in classes]),
            "class_names": json.dumps(list(info.class_names)), "num_classes": str(info.num_classes),
            "in_chans": str(info.in_chans), "img_size": str(info.img_size), "mean": json.dumps(list(info.mean)),
            "std": json.dumps(list(info.std)), "wfexplain_version": __version__,
            **{k: str(getattr(info, k)) for k in ("img_width", "interpolation", "crop_pct")
               if getattr(info, k) not in (None, "bilinear")}, **extra}


def baked_header(data: bytes) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """``(metadata, {tensor name: shape})`` of a safetensors file's bytes, read from its JSON header only.

    Raises:
        ValueError: not a safetensors file.
    """
    try:
        n = int.from_bytes(data[:8], "little")
        if not 0 < n <= len(data) - 8:
            raise ValueError(f"header length {n} does not fit {len(data):,} bytes")
        header = json.loads(data[8:8 + n])
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not a map of strings")
        return meta, {k: tuple(int(x) for x in v["shape"]) for k, v in header.items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
        raise ValueError(f"not a readable safetensors file: {e}") from None


def rebuild_baked(data: bytes, trust: bool = False) -> nn.Module:
    """The plain network (eval mode, CPU) a baked or removed model file holds, rebuilt from the file alone.

    The network is built from the recorded ``backbone`` spec and ``arch_kwargs`` by
    :func:`wfexplain.backbones.build_network`, bounded by the tensors the header lists, then loaded strictly.
    ``trust``: the *user's* permission to import a ``package.module:factory`` spec (the file never grants it).

    Raises:
        ValueError: not a baked model file, a spec that cannot be built, or weights that do not match it.
    """
    meta, shapes = baked_header(data)
    if meta.get("format") != BAKED_FORMAT:
        raise ValueError(f"not a wfexplain baked model (format {meta.get('format')!r}, expected {BAKED_FORMAT!r})")
    try:
        spec = check_spec(meta["backbone"])
        kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        num_classes, in_chans, img_size = (int(meta[k]) for k in ("num_classes", "in_chans", "img_size"))
    except (KeyError, ValueError) as e:
        raise ValueError(f"the baked model's metadata cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"the baked model's arch_kwargs is a {type(kwargs).__name__}, not a JSON object")
    net = build_network(spec, num_classes, in_chans, img_size, kwargs, trust=trust, expect=shapes)
    expected = net.state_dict()
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in safetensors_load(data).items()})
    return net.eval()


def _require(packages: tuple[str, ...], what: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ModuleNotFoundError(f"{what} needs the package(s) {', '.join(missing)}: pip install 'wfexplain[onnx]' "
                                  f"(or pip install {' '.join(missing)})")


def baked_onnx(model: FilteredModel, forget, hard_threshold: float | None = None, opset: int | None = None) -> bytes:
    """``forget``'s bake of ``model`` (:func:`wfexplain.filtering.bake`) as an ONNX model's bytes.

    One input ``image`` ``[batch, in_chans, H, W]`` (normalised as ``mean``/``std`` say; the batch
    is dynamic), one output ``logits`` ``[batch, num_classes]``. The model's ``metadata_props`` record what
    :func:`wfexplain.export.baked_safetensors` records. Exported by ``torch.onnx.export`` (the ``torch.export``
    path; ``opset``: its default if None).

    Raises:
        ModuleNotFoundError: ``onnx`` or ``onnxscript`` is not installed (the ``onnx`` extra).
        ValueError: an empty forget set.
    """
    _require(ONNX_PACKAGES, "baked_onnx")
    import onnx

    classes = forget_list(forget, model.num_classes, allow_empty=False)
    net = bake(model, classes, hard_threshold=hard_threshold).eval()
    info = model.info
    x = torch.zeros(2, *info.input_size)
    program = torch.onnx.export(net, (x,), input_names=["image"], output_names=["logits"], opset_version=opset,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    if program is None:  # only the legacy TorchScript exporter (dynamo=False) returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto  # the weights inlined: one protobuf (under its 2 GiB limit)
    onnx.helper.set_model_props(proto, baked_metadata(model, classes, {
        "hard_threshold": "none" if hard_threshold is None else repr(float(hard_threshold))}))
    return proto.SerializeToString()
