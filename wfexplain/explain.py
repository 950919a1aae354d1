"""Attribution maps and their faithfulness scores for filtered models.

Attributions come from Captum (Kokhlikyan et al., "Captum: A unified and generic model
interpretability library for PyTorch", arXiv 2009.07896; https://captum.ai), version 0.9
attribution API. The forget set always travels as an argument of the forward call
(captum's ``additional_forward_args``), never as state on the model, so one
:class:`~wfexplain.filtering.FilteredModel` can be explained from many threads at once.
Layer methods register temporary hooks, so they run on a private ``copy.deepcopy`` of
the model made inside the call; the shared instance never gets a hook. Grad-CAM works on
any backbone: :func:`gradcam_layers` probes a private copy once (per backbone and input
size) for the layers it can explain, :func:`default_gradcam_layer` picks one.

:func:`insertion_deletion` scores a saliency map with the insertion and deletion
metrics of Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models" (BMVC 2018).
"""

from __future__ import annotations

import copy
import math
import threading
import weakref

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torchvision.transforms.functional import gaussian_blur

from .filtering import FilteredModel, Forget

METHODS: tuple[str, ...] = ("Integrated Gradients", "Saliency", "Gradient SHAP", "Occlusion", "Layer Grad-CAM")

_OPTIONS = {
    "Integrated Gradients": {"n_steps", "internal_batch_size", "method"},
    "Saliency": set(),
    "Gradient SHAP": {"n_samples", "n_baselines", "noise", "seed"},
    "Occlusion": {"window", "stride", "perturbations_per_eval"},
    "Layer Grad-CAM": {"layer"},
}


def list_methods() -> list[str]:
    """Names accepted by :func:`attribute`, in display order."""
    return list(METHODS)


def _normalise(model: FilteredModel, pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.info.mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(model.info.std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    return (pixels - mean) / std


def black_baseline(model: FilteredModel, x: torch.Tensor) -> torch.Tensor:
    """The black image (pixel value 0) in the model's normalised input space, shaped like ``x``."""
    return _normalise(model, torch.zeros_like(x))


def _forget_arg(forget: Forget, batch: int) -> Forget:
    # Captum expands tensor arguments along dim 0 together with the inputs; a shared
    # [1, N] mask must first become [B, N] so the expanded rows stay aligned, and a
    # tensor of class indices becomes a plain list that captum leaves alone.
    if isinstance(forget, torch.Tensor) and forget.dtype != torch.bool:
        return forget.flatten().tolist()
    if isinstance(forget, torch.Tensor) and forget.ndim == 2 and forget.shape[0] == 1:
        return forget.expand(batch, -1).contiguous()
    return forget


def _targets(target: int | torch.Tensor, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    return t.expand(batch).clone() if t.ndim == 0 else t


def attribute(model: FilteredModel, x: torch.Tensor, target: int | torch.Tensor, method: str,
              forget: Forget = None, **options) -> torch.Tensor:
    """Per-pixel attribution map of ``target`` under the forget set ``forget``.

    Baselines are the black image in pixel space (normalised value ``-mean/std``).
    Pixel methods sum the per-channel attributions (Occlusion averages them: its window
    covers every channel, so all channels hold the same value). "Gradient SHAP" is the
    expected-gradients estimator of captum's ``GradientShap`` (baseline drawn from the
    black image plus ``n_baselines`` dark noisy images, path point ``b + u (x - b)``,
    ``u ~ U(0, 1)``, gradients by captum ``Saliency`` in one batch of ``B * n_samples``), drawn from a local seeded
    ``torch.Generator`` because captum's class samples from the global NumPy RNG.
    "Layer Grad-CAM" explains ``layer`` (default :func:`default_gradcam_layer`; choices in
    :func:`gradcam_layers`) on a private copy of the model with captum ``LayerGradCam``. For
    token models (timm and torchvision ViTs) it applies the Grad-CAM formula by hand: on a
    token layer, weights are the mean over patch tokens of ``d logit / d tokens`` and
    ``cam = ReLU(sum_d w_d A[token, d])`` on the patch grid (prefix tokens dropped: timm
    ``num_prefix_tokens``, torchvision's class token); on a 4-D layer, the usual channel form.
    Grad-CAM maps are ReLU'd and upsampled bilinearly to ``H x W``.

    Args:
        model: the (shared, eval-mode) filtered model; never modified.
        x: normalised input batch ``[B, C, H, W]``.
        target: class index, or a LongTensor ``[B]`` of per-image indices.
        method: one of :data:`METHODS`.
        forget: forget set passed to ``model(x, forget)`` (None, index, list, bool ``[B or 1, N]``).
        **options: per method: IG ``n_steps`` (32), ``internal_batch_size``, ``method``;
            Gradient SHAP ``n_samples`` (16), ``n_baselines`` (4), ``noise`` (0.1, pixel
            units), ``seed`` (0); Occlusion ``window``, ``stride``, ``perturbations_per_eval``
            (32); Layer Grad-CAM ``layer`` (module path inside ``model.backbone``; an unknown
            path raises ValueError naming some candidates).

    Returns:
        A detached float tensor ``[B, H, W]``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        raise TypeError(f"{method} does not take option(s) {sorted(unknown)}; valid: {sorted(_OPTIONS[method])}")
    if model.backbone.training:
        raise ValueError("explanations need the backbone in eval mode")
    b, _, h, _ = x.shape
    forget = _forget_arg(forget, b)
    xg = x.detach().clone().requires_grad_(True)  # captum toggles requires_grad on its inputs
    black = black_baseline(model, x.detach())
    kw = {"target": target, "additional_forward_args": (forget,)}
    with torch.enable_grad():
        if method == "Integrated Gradients":
            attr = IntegratedGradients(model).attribute(
                xg, baselines=black, n_steps=options.get("n_steps", 32), **kw,
                method=options.get("method", "gausslegendre"), internal_batch_size=options.get("internal_batch_size", max(b, 64)))
            out = attr.sum(1)
        elif method == "Saliency":
            out = Saliency(model).attribute(xg, abs=True, **kw).sum(1)
        elif method == "Gradient SHAP":
            out = _gradient_shap(model, x.detach(), black, target, forget, **options).sum(1)
        elif method == "Occlusion":
            win = options.get("window", max(1, round(h / 7)))
            stride = options.get("stride", max(1, win // 2))
            attr = Occlusion(model).attribute(
                xg, sliding_window_shapes=(x.shape[1], win, win), strides=(x.shape[1], stride, stride), baselines=black,
                perturbations_per_eval=options.get("perturbations_per_eval", 32), **kw)
            out = attr.mean(1)
        else:
            out = _grad_cam(model, xg, target, forget, options.get("layer"))[:, 0]
    return out.detach().float()


def _gradient_shap(model, x, black, target, forget, n_samples=16, n_baselines=4, noise=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    pixels = (noise * torch.randn((n_baselines, *x.shape[1:]), generator=gen, dtype=x.dtype)).clamp(0, 1)
    baselines = torch.cat([black[:1], _normalise(model, pixels.to(x.device))])  # black + dark noisy images
    idx = torch.randint(len(baselines), (n_samples, b), generator=gen)
    u = torch.rand((n_samples * b, 1, 1, 1), generator=gen, dtype=x.dtype).to(x.device)
    base = baselines[idx.flatten().to(x.device)]  # sample-major: row s * B + i is sample s of image i
    xs = x.repeat(n_samples, 1, 1, 1)
    if isinstance(forget, torch.Tensor) and forget.ndim == 2 and forget.shape[0] == b:
        forget = forget.repeat(n_samples, 1)
    t = _targets(target, b, x.device).repeat(n_samples)
    point = (base + u * (xs - base)).requires_grad_(True)  # one batched pass over all samples
    grad = Saliency(model).attribute(point, target=t, abs=False, additional_forward_args=(forget,))
    return ((xs - base) * grad).view(n_samples, *x.shape).mean(0)


_NCHW = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.modules.pooling._MaxPoolNd, torch.nn.modules.pooling._AvgPoolNd,
         torch.nn.modules.pooling._AdaptiveAvgPoolNd, torch.nn.modules.pooling._AdaptiveMaxPoolNd)
_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backbone -> {(in_chans, img_size): candidates}
_LAYERS_LOCK = threading.Lock()


def _token_layout(bb: torch.nn.Module) -> tuple[int, tuple[int, int], list[str]] | None:
    """``(prefix tokens, patch grid, token layers)`` of a ViT backbone, or None for other models."""
    if hasattr(bb, "patch_embed") and hasattr(bb, "blocks"):  # timm VisionTransformer and kin
        prefix = getattr(bb, "num_prefix_tokens", int(getattr(bb, "cls_token", None) is not None))
        grid = tuple(getattr(bb.patch_embed, "grid_size", None) or (0, 0))
        return prefix, grid, [f"blocks.{i}.norm1" for i, b in enumerate(bb.blocks) if hasattr(b, "norm1")]
    layers = getattr(getattr(bb, "encoder", None), "layers", None)
    if hasattr(bb, "conv_proj") and layers is not None:  # torchvision VisionTransformer: class token first
        side = bb.image_size // bb.patch_size
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

    A module is a candidate when its output on the probe ``zeros(1, in_chans, img_size, img_size)``
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
    key = (info.in_chans, info.img_size)
    with _LAYERS_LOCK:
        cached = _LAYERS.get(bb, {}).get(key)
    if cached is not None:
        return list(cached)
    private = copy.deepcopy(bb).eval()
    seen: dict[str, tuple[int, ...]] = {}  # path -> output shape, ordered by last firing
    nchw: set[tuple[int, int]] = set()

    def record(path):
        def hook(module, inputs, output):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            seen.pop(path, None)
            seen[path] = shape
            if isinstance(module, _NCHW) and len(shape) == 4:
                nchw.add(shape[2:])
        return hook

    handles = [m.register_forward_hook(record(p)) for p, m in private.named_modules() if p]
    param = next(private.parameters(), None)
    probe = torch.zeros(1, info.in_chans, info.img_size, info.img_size, device=param.device if param is not None else "cpu",
                        dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    try:
        with torch.no_grad():
            private(probe)
    except Exception as e:
        raise ValueError(f"cannot probe the {model.backbone_name!r} backbone with a {info.in_chans}x{info.img_size}"
                         f"x{info.img_size} input: {e}") from e
    finally:
        for h in handles:
            h.remove()
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
    if name == "cnn":
        last = max(i for i, m in enumerate(bb.features) if isinstance(m, torch.nn.ReLU))
        return f"features.{last}"
    if name == "resnet18":
        # Output side of layer1..4: stride-2 stem conv and max-pool, then stride 2 per stage.
        sides = [math.ceil(size / 2 ** (k + 2)) for k in range(4)]
        return next((f"layer{k + 1}" for k in (3, 2, 1) if sides[k] >= 2), "layer1")
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
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        logits = private(xg, forget)
    finally:
        handle.remove()
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


@torch.no_grad()
def insertion_deletion(model: FilteredModel, x: torch.Tensor, saliency: torch.Tensor, target: int,
                       forget: Forget = None, steps: int = 32, blur_sigma: float | None = None) -> dict:
    """RISE insertion and deletion curves of one saliency map (Petsiuk et al. 2018).

    Pixels (all channels at once) are ranked by decreasing saliency. *Deletion* starts
    from ``x`` and replaces them, in that order, with the black baseline: a faithful map
    makes the target probability fall fast, so **lower deletion AUC is better**.
    *Insertion* starts from a Gaussian-blurred copy of ``x`` and restores the original
    pixels in the same order: **higher insertion AUC is better**.

    Args:
        model: the filtered model.
        x: one normalised image ``[1, C, H, W]``.
        saliency: its map ``[H, W]`` (higher = more important).
        target: class whose softmax probability is tracked.
        forget: forget set the model is evaluated under.
        steps: the curves have ``steps + 1`` points at fractions ``0, 1/steps, ..., 1``.
        blur_sigma: Gaussian blur sigma in pixels for the insertion start (default ``H / 8``).

    Returns:
        ``{"deletion_auc", "insertion_auc"}`` (trapezoid rule over fraction, in [0, 1]) and
        the lists ``"fractions"``, ``"deletion_curve"``, ``"insertion_curve"``.
    """
    if x.ndim != 4 or x.shape[0] != 1 or tuple(saliency.shape) != tuple(x.shape[-2:]):
        raise ValueError(f"need x [1, C, H, W] and saliency [H, W]; got {tuple(x.shape)} and {tuple(saliency.shape)}")
    _, _, h, w = x.shape
    order = saliency.flatten().argsort(descending=True, stable=True).to(x.device)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(h * w, device=x.device)
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    counts = (fractions * h * w).round().long().to(x.device)
    masks = (rank[None, :] < counts[:, None]).view(steps + 1, 1, h, w).to(x.dtype)  # 1 = pixel taken
    sigma = blur_sigma or h / 8
    kernel = min(2 * math.ceil(2 * sigma) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
    blurred = gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    deleted = x * (1 - masks) + black_baseline(model, x) * masks
    inserted = blurred * (1 - masks) + x * masks
    batch = torch.cat([deleted, inserted])
    probs = model(batch, _forget_arg(forget, len(batch))).softmax(dim=1)[:, int(target)].double().cpu()
    dele, ins = probs[: steps + 1], probs[steps + 1 :]
    return {
        "deletion_auc": float(torch.trapezoid(dele, fractions)),
        "insertion_auc": float(torch.trapezoid(ins, fractions)),
        "fractions": fractions.tolist(),
        "deletion_curve": dele.tolist(),
        "insertion_curve": ins.tolist(),
    }


@torch.no_grad()
def top_k(model: FilteredModel, x: torch.Tensor, forget: Forget = None, k: int = 3) -> list[list[tuple[int, float]]]:
    """The ``k`` most probable classes of each image under ``forget``.

    Args:
        model: the filtered model.
        x: normalised input batch ``[B, C, H, W]``.
        forget: forget set the model is evaluated under.
        k: number of classes (capped at the number of classes).

    Returns:
        Per image, ``[(class index, probability), ...]`` sorted by decreasing probability.
    """
    probs = model(x.to(next(model.parameters()).device), _forget_arg(forget, x.shape[0])).softmax(dim=1)
    vals, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(int(i), float(v)) for i, v in zip(ri, rv, strict=True)] for ri, rv in zip(idx.tolist(), vals.tolist(), strict=True)]
