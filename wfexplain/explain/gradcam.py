"""Grad-CAM for any backbone: which layers it can explain, the default one, and the map itself.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017) weights a layer's activation by the spatially averaged gradient of the
target logit. :func:`gradcam_layers` probes a private copy of the backbone once (per backbone and
input size) for the layers it can explain; :func:`default_gradcam_layer` takes the registry's choice
for built-in backbones (:mod:`wfexplain.backbones`), else the last activation of at least 2x2, or
the last block's norm of a token model. Hooks live on private copies and are removed in ``finally``.
"""

from __future__ import annotations

import copy
import math
import threading
import weakref
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam

from ..backbones import get_spec, list_backbones
from ..filtering import FilteredModel, Forget
from ..hooks import watch


def _targets(target: int | torch.Tensor, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    return t.expand(batch).clone() if t.ndim == 0 else t



_NCHW = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.modules.pooling._MaxPoolNd, torch.nn.modules.pooling._AvgPoolNd,
         torch.nn.modules.pooling._AdaptiveAvgPoolNd, torch.nn.modules.pooling._AdaptiveMaxPoolNd)
_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backbone -> {(in_chans, img_size): candidates}
_LAYERS_LOCK = threading.Lock()


def _token_layout(bb: torch.nn.Module) -> tuple[int, tuple[int, int], list[str]] | None:
    """``(prefix tokens, patch grid, token layers)`` of a ViT backbone, or None for other models."""
    if hasattr(bb, "patch_embed") and hasattr(bb, "blocks"):  # timm VisionTransformer and kin
        prefix = getattr(bb, "num_prefix_tokens", int(getattr(bb, "cls_token", None) is not None))
        grid = tuple(getattr(bb.patch_embed, "grid_size", None) or (0, 0))
        blocks = cast(Iterable[torch.nn.Module], bb.blocks)  # a Sequential or ModuleList of blocks
        return prefix, grid, [f"blocks.{i}.norm1" for i, b in enumerate(blocks) if hasattr(b, "norm1")]
    layers = getattr(getattr(bb, "encoder", None), "layers", None)
    if hasattr(bb, "conv_proj") and layers is not None:  # torchvision VisionTransformer: class token first
        side = cast(int, bb.image_size) // cast(int, bb.patch_size)  # plain int attributes, not submodules
        return 1, (side, side), [f"encoder.layers.{n}.ln_1" for n, m in layers.named_children() if hasattr(m, "ln_1")]
    return None


def _patch_grid(grid: tuple[int, ...], n: int) -> tuple[int, int] | None:
    """The ``(gh, gw)`` grid of ``n`` patch tokens: ``grid`` when it fits, else a square one, else None."""
    if len(grid) == 2 and grid[0] * grid[1] == n:
        return grid[0], grid[1]
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


def gradcam_layers(model) -> list[tuple[str, tuple[int, int]]]:
    """Module paths of ``model.backbone`` that Grad-CAM can explain, in execution order, with their ``(H, W)``.

    A module is a candidate when its output on the probe ``zeros(1, C, H, W)`` (the model's input size)
    is ``[B, C, H, W]`` with ``H, W >= 2`` and ``(H, W)`` also produced by a Conv2d, BatchNorm2d or
    pooling layer (this rules out channels-last ``[B, H, W, C]`` activations, e.g. inside ConvNeXt
    blocks). The classifier head (2-D outputs, or 1x1 after global pooling) is never one. A module
    called twice is placed where, and sized as, it ran last (what a hook sees last). Token models
    (timm ``patch_embed`` + ``blocks``; torchvision ``conv_proj`` + ``encoder.layers``) add each
    block's ``norm1`` / ``ln_1``, sized as the patch grid. Only ``model.backbone``,
    ``model.backbone_name`` and ``model.info`` are used; the probe runs on a private copy of the
    backbone (the shared one never gets a hook) and its result is cached per backbone and input size.
    """
    bb, info = model.backbone, model.info
    key = info.input_size
    with _LAYERS_LOCK:
        cached = _LAYERS.get(bb, {}).get(key)
    if cached is not None:
        return list(cached)
    private = copy.deepcopy(bb).eval()
    seen: dict[str, tuple[int, ...]] = {}  # path -> output shape, ordered by last firing
    nchw: set[tuple[int, int]] = set()

    def record(path, module, inputs, output) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        seen.pop(path, None)
        seen[path] = shape
        if isinstance(module, _NCHW) and len(shape) == 4:
            nchw.add(shape[2:])

    param = next(private.parameters(), None)
    probe = torch.zeros(1, *info.input_size, device=param.device if param is not None else "cpu",
                        dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    try:
        with torch.no_grad(), watch({p: m for p, m in private.named_modules() if p}, on_output=record):
            private(probe)
    except Exception as e:
        raise ValueError(f"cannot probe the {model.backbone_name!r} backbone with a "
                         f"{'x'.join(map(str, info.input_size))} input: {e}") from e
    layout = _token_layout(private)
    out = []
    for p, s in seen.items():
        if len(s) == 4 and min(s[2:]) >= 2 and s[2:] in nchw:
            out.append((p, (s[2], s[3])))
        elif layout and p in layout[2] and len(s) == 3 and (grid := _patch_grid(layout[1], s[1] - layout[0])):
            out.append((p, grid))
    with _LAYERS_LOCK:
        _LAYERS.setdefault(bb, {})[key] = tuple(out)
    return out


def default_gradcam_layer(model) -> str:
    """The Grad-CAM layer used when none is given.

    "cnn": the last ReLU of ``features``; "resnet18": the deepest of ``layer3..layer1`` whose
    output is at least 2x2 (``layer4`` is 1x1 for 28-32 px inputs); "vit" and other token
    models: the last block's ``norm1`` / ``ln_1`` (with a class-token head the patch tokens
    *after* the last block do not reach the logits, so their gradient is zero); any other
    model: the last candidate of :func:`gradcam_layers`, i.e. the last activation of at least 2x2.

    Raises:
        ValueError: the model has no candidate layer at its input size.
    """
    bb, name, size = model.backbone, model.backbone_name, model.info.img_size
    choose = get_spec(name).gradcam_layer if name in list_backbones() else None
    if choose is not None:
        return choose(bb, size)
    layout = _token_layout(bb)
    if layout and layout[2]:
        return layout[2][-1]
    layers = gradcam_layers(model)
    if not layers:
        raise ValueError(f"no Grad-CAM layer in the {name!r} backbone at {size}x{size} input: no module outputs a "
                         "[B, C, H, W] activation of at least 2x2; pass layer=<module path>")
    return layers[-1][0]


def _grad_cam(model: FilteredModel, xg: torch.Tensor, target, forget: Forget, layer: str | None) -> torch.Tensor:
    private = copy.deepcopy(model).eval()  # layer methods hook modules: never the shared instance
    modules = dict(private.backbone.named_modules())
    path = layer or default_gradcam_layer(model)
    if not path or path not in modules:
        try:
            found = [p for p, _ in gradcam_layers(model)][::-1]  # deepest first
        except ValueError:
            found = []
        hint = f"; Grad-CAM candidates ({len(found)}, see gradcam_layers) include {', '.join(found[:5])}" if found else ""
        raise ValueError(f"no module {path!r} in the {model.backbone_name} backbone{hint}")
    module, layout = modules[path], _token_layout(private.backbone)
    if layout is None:
        cam = LayerGradCam(private, module).attribute(xg, target=target, additional_forward_args=(forget,),
                                                      relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(xg.shape[-2:]), interpolate_mode="bilinear")
    acts: list = []
    with watch({path: module}, on_output=lambda p, m, i, o: acts.append(o)):
        logits = private(xg, forget)
    act = acts[-1] if acts else None
    if not isinstance(act, torch.Tensor) or act.ndim not in (3, 4):
        raise ValueError(f"Grad-CAM layer {path!r} must output [B, C, H, W] or tokens [B, T, D]")
    t = _targets(target, xg.shape[0], logits.device)
    (grads,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act)
    if act.ndim == 4:
        cam = F.relu(torch.einsum("bchw,bc->bhw", act, grads.mean(dim=(2, 3))))[:, None]
    else:
        prefix = layout[0]
        grid = _patch_grid(layout[1], act.shape[1] - prefix)
        if grid is None:
            raise ValueError(f"cannot lay the {act.shape[1] - prefix} patch tokens of {path!r} out on a grid")
        gh, gw = grid
        tokens, grads = act[:, prefix:], grads[:, prefix:]
        weights = grads.mean(dim=1)  # [B, D]: global-average-pooled gradients, as in Grad-CAM
        cam = F.relu(torch.einsum("btd,bd->bt", tokens, weights)).reshape(-1, 1, gh, gw)
    return LayerAttribution.interpolate(cam, tuple(xg.shape[-2:]), interpolate_mode="bilinear")
