"""Backbone registry, and how any network is rebuilt from its architecture spec.

One registry (after timm's ``create_model`` / torchvision's ``get_model``): each entry builds a
plain, randomly initialised module (``pretrained=False``; nothing downloads). A checkpoint names
its network by an *architecture spec* (:func:`build_network`):

- a registered name (``cnn``, ``resnet18``, ``vit``);
- ``timm:NAME`` -> ``timm.create_model(NAME, pretrained=False, num_classes=, in_chans=, **kwargs)``;
- ``timm:local-dir:PATH`` / ``timm:hf-hub:ORG/NAME[@REV]`` (timm's model sources; hf-hub from the local cache
  only) -> ``timm:ARCH`` with ``kwargs`` over the ``model_args`` the folder's ``config.json`` records
  (:func:`resolve_spec`, :mod:`wfexplain.hfdir`): its JSON is read, its weights never (they come from the
  checkpoint), and nothing downloads;
- ``torchvision:NAME`` -> ``torchvision.models.get_model(NAME, weights=None, num_classes=, **kwargs)``;
- ``package.module:factory`` -> ``factory(**kwargs)``, imported only from modules the user trusts
  (``$WFEXPLAIN_TRUSTED_MODULES`` or ``trust=True`` passed by the user): importing code named in a
  file is code execution, so a spec read from a file is never trusted on the file's behalf
  (:meth:`wfexplain.manifest.Manifest.build_network` is the one way to build from a manifest).

``kwargs`` never set what the spec's own arguments set (``num_classes``, ``in_chans``, ``weights``,
``pretrained``, ``checkpoint_path``...: :data:`RESERVED_KWARGS`), nor does a folder's ``model_args``. With
``expect`` (the tensor names and shapes the weights hold), :func:`build_network` first builds on the ``meta``
device under a budget (:func:`bounded`: no more tensors or elements than the weights hold, a time limit), compares
names and shapes, and only then allocates: a spec cannot make us build a network its file does not hold.

Gate sites are not part of the registry: every network, built-in or not, gets them from
:func:`wfexplain.sites.discover_sites`; the registry only names each built-in's classifier head.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from . import hfdir
from .construction import BUILD_SECONDS, BuildRefused, bounded, check_shapes, weight_shapes
from .sites import find_heads

# timm and torchvision (which pull torch._dynamo and sympy) are imported by the builders that need them,
# so that importing wfexplain, or loading a "cnn" checkpoint, imports neither.

__all__ = ["RESERVED_KWARGS", "BuildRefused", "build_network", "check_spec", "create_backbone", "default_heads",
           "list_backbones", "resolve_spec", "weight_shapes"]

# Arguments the spec's builder sets itself, or that would load files or download (timm's checkpoint_path
# and pretrained_cfg_overlay=dict(file=...) read a file with torch.load): never taken from arch_kwargs.
RESERVED_KWARGS = {
    "timm": frozenset({"num_classes", "in_chans", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                       "checkpoint_path", "cache_dir", "features_only", "scriptable", "exportable"}),
    "torchvision": frozenset({"num_classes", "weights", "progress", "weights_backbone"}),
}


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[int, int, int], nn.Module]  # (num_classes, in_chans, img_size) -> module
    description: str
    head: str = "head"  # path of the classifier head (never gated; its input = penultimate features)
    gradcam_layer: Callable[[nn.Module, int], str] | None = None  # (module, img_size) -> Grad-CAM layer; None: generic


_REGISTRY: dict[str, BackboneSpec] = {}
_SPEC = re.compile(r"timm:(local-dir:[^\x00-\x1f\x7f]+|hf-hub:[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+(@[A-Za-z0-9_.\-]+)?)"
                   r"|(timm|torchvision):[A-Za-z0-9_.\-]+|[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def register_backbone(name: str, description: str, head: str = "head",
                      gradcam_layer: Callable[[nn.Module, int], str] | None = None):
    """Decorator registering a builder ``(num_classes, in_chans, img_size) -> nn.Module``."""

    def wrap(build):
        _REGISTRY[name] = BackboneSpec(build, description, head, gradcam_layer)
        return build

    return wrap


def list_backbones() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_backbone(name: str, num_classes: int, in_chans: int = 1, img_size: int = 28) -> nn.Module:
    """Build a registered backbone with random weights (never downloads)."""
    return get_spec(name).build(num_classes, in_chans, img_size)


def check_spec(spec: str) -> str:
    """``spec`` if it is a registered name or a well-formed architecture spec, else ValueError listing the forms."""
    if spec in _REGISTRY or (isinstance(spec, str) and _SPEC.fullmatch(spec)):
        return spec
    raise ValueError(f"unknown architecture {spec!r}: use one of {', '.join(_REGISTRY)}, timm:NAME, "
                     "timm:local-dir:PATH, timm:hf-hub:ORG/NAME, torchvision:NAME or package.module:factory")


def resolve_spec(spec: str, kwargs: dict | None = None) -> tuple[str, dict]:
    """``(spec, kwargs)`` with a ``timm:local-dir:``/``timm:hf-hub:`` folder replaced by what its config.json
    records: ``timm:ARCH``, and ``kwargs`` over its ``model_args`` (any other spec is returned as it is).

    Raises:
        ValueError: the folder is refused (:func:`wfexplain.hfdir.folder_of`), or its model_args set a reserved argument.
    """
    kwargs = dict(kwargs or {})
    source, _, name = check_spec(spec).partition(":")
    if source != "timm" or not name.startswith(hfdir.PREFIXES):
        return spec, kwargs
    cfg = hfdir.read_config(name)
    reserved = sorted(set(cfg.model_args) & RESERVED_KWARGS["timm"])
    if reserved:
        raise ValueError(f"{cfg.folder / 'config.json'}: its model_args may not set {', '.join(reserved)} "
                         "(wfexplain never passes arguments that load files or download)")
    return f"timm:{cfg.architecture}", {**cfg.model_args, **kwargs}


def _trusted(module: str, trust: bool) -> bool:
    raw = os.environ.get("WFEXPLAIN_TRUSTED_MODULES", "")
    allowed = [m.strip() for m in raw.replace(os.pathsep, ",").split(",")]
    return trust or any(m and (module == m or module.startswith(m + ".")) for m in allowed)


def build_network(spec: str, num_classes: int, in_chans: int, img_size: int, kwargs: dict | None = None,
                  trust: bool = False, expect: Mapping[str, tuple[int, ...]] | None = None,
                  seconds: float = BUILD_SECONDS) -> nn.Module:
    """A randomly initialised network for an architecture spec (see the module docstring); never downloads.

    With ``expect`` (``name -> shape`` of the weights it must hold), the network is first built on the
    ``meta`` device within :func:`bounded` and compared (:class:`BuildRefused` naming the difference),
    then built for real within the same budget. A constructor that cannot run on ``meta`` (torchvision's
    RegNets copy out of a tensor) is built once on the CPU within the budget instead.
    """
    if expect is None:
        return _build(spec, num_classes, in_chans, img_size, kwargs, trust)
    expect = {k: tuple(v) for k, v in expect.items()}
    try:
        with bounded(expect, seconds), torch.device("meta"):
            skeleton = _build(spec, num_classes, in_chans, img_size, kwargs, trust)
    except (NotImplementedError, RuntimeError) as e:
        if "meta" not in str(e):
            raise
        skeleton = None  # built below, on the CPU, within the same budget
    if skeleton is not None:
        check_shapes(expect, skeleton)
    with bounded(expect, seconds):
        net = _build(spec, num_classes, in_chans, img_size, kwargs, trust)
    check_shapes(expect, net)
    return net


def _build(spec: str, num_classes: int, in_chans: int, img_size: int, kwargs: dict | None, trust: bool) -> nn.Module:
    kwargs = dict(kwargs or {})
    check_spec(spec)
    reserved = sorted(set(kwargs) & RESERVED_KWARGS.get(spec.partition(":")[0], frozenset()))
    if reserved:
        raise ValueError(f"arch_kwargs may not set {', '.join(reserved)}: {spec} sets "
                         f"{'it' if len(reserved) == 1 else 'them'} from the checkpoint (or never, for files and downloads)")
    spec, kwargs = resolve_spec(spec, kwargs)  # a timm folder: timm:ARCH and its model_args (checked there)
    if spec in _REGISTRY:
        if kwargs:
            raise ValueError(f"the built-in backbone {spec!r} takes no arguments, got {sorted(kwargs)}")
        return create_backbone(spec, num_classes, in_chans, img_size)
    source, _, name = spec.partition(":")
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r} (timm {timm.__version__}); see timm.list_models()")
        return _called(spec, kwargs, lambda: timm.create_model(name, pretrained=False, num_classes=num_classes,
                                                               in_chans=in_chans, **kwargs))
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
        if in_chans != 3:
            raise ValueError(f"torchvision:{name} takes 3 input channels, not {in_chans}: build your network in a "
                             "function and use package.module:factory")
        return _called(spec, kwargs, lambda: torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                                                          **kwargs))
    if not _trusted(source, trust):
        raise ValueError(f"{spec}: importing {source!r} would run its code; allow it with "
                         f"WFEXPLAIN_TRUSTED_MODULES={source.split('.')[0]} (or trust=True)")
    try:
        factory = getattr(importlib.import_module(source), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{spec}: cannot import it ({e})") from None
    net = _called(spec, kwargs, lambda: factory(**kwargs))
    if not isinstance(net, nn.Module):
        raise ValueError(f"{spec} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def _called(spec: str, kwargs: dict, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, with an argument it does not take (TypeError) or a value it refuses reported as a ValueError."""
    try:
        return build()
    except BuildRefused:
        raise
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(f"{spec} cannot be built with arch_kwargs {kwargs}: {type(e).__name__}: {e}") from None


def default_heads(spec: str, model: nn.Module, num_classes: int | None = None) -> list[str]:
    """The classifier head path(s) of a network: the registry's for built-ins, else :func:`find_heads`."""
    if spec in _REGISTRY:
        return [get_spec(spec).head]
    heads = find_heads(model, num_classes)
    if not heads:
        raise ValueError(f"no classifier head with {num_classes} outputs found in {type(model).__name__} (traced "
                         "from its logits): pass head='<module path>'")
    return heads


def head_module(model: nn.Module, heads: list[str]) -> nn.Module:
    """The (first) classifier head of a built network (its input are the penultimate features)."""
    return model.get_submodule(heads[0])


# ---------------------------------------------------------------- cnn


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-pool blocks and one hidden FC layer: fast on two CPU cores."""

    def __init__(self, num_classes: int, in_chans: int = 1, img_size: int = 28, widths=(32, 64, 128), hidden=256):
        super().__init__()
        layers, c = [], in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = img_size // 2 ** len(widths)
        self.fc = nn.Linear(c * side * side, hidden)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (input of the classifier head)."""
        return torch.relu(self.fc(self.features(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def _cnn_gradcam(model: nn.Module, img_size: int) -> str:
    """The last ReLU of ``features``."""
    features = cast(SmallCNN, model).features  # the Grad-CAM layer of "cnn" only: a SmallCNN
    return f"features.{max(i for i, m in enumerate(features) if isinstance(m, nn.ReLU))}"


@register_backbone("cnn", "3 conv-BN-ReLU blocks (32/64/128) + FC 256; gates on every BN channel and FC unit",
                   gradcam_layer=_cnn_gradcam)
def _cnn(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return SmallCNN(num_classes, in_chans, img_size)


# ---------------------------------------------------------------- resnet18


def _resnet_gradcam(model: nn.Module, img_size: int) -> str:
    """The deepest of layer3..layer1 whose output is at least 2x2 (layer4 is 1x1 on 28-32 px inputs)."""
    sides = [math.ceil(img_size / 2 ** (k + 2)) for k in range(4)]  # stride-2 stem and max-pool, then 2 per stage
    return next((f"layer{k + 1}" for k in (3, 2, 1) if sides[k] >= 2), "layer1")


@register_backbone("resnet18",
                   "torchvision ResNet-18 (standard 7x7 stride-2 stem + max-pool, input channels adapted); "
                   "gates on every conv output channel (after its BN), downsample branches included", head="fc",
                   gradcam_layer=_resnet_gradcam)
def _resnet18(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    # A 3x3 stride-1 stem trains 4.6x slower on 2 CPU cores (160 vs 735 img/s at 28x28, measured);
    # the standard stem reaches the accuracy target on 28x28 Fashion-MNIST, so it stays.
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
    return model


# ---------------------------------------------------------------- vit


@register_backbone("vit", "timm VisionTransformer, patch 4, width 96, depth 6, 3 heads, MLP 192; "
                   "gates on every attention head and MLP unit, every write into the residual stream "
                   "(attention, MLP, patch embedding) and the final norm")
def _vit(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    import timm

    patch = 4 if img_size % 4 == 0 else 2
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, in_chans=in_chans,
        img_size=img_size, patch_size=patch, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0,
    )
