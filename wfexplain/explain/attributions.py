"""Attribution maps and their faithfulness scores for filtered models.

Attributions come from Captum (Kokhlikyan et al., "Captum: A unified and generic model
interpretability library for PyTorch", arXiv 2009.07896; https://captum.ai), version 0.9
attribution API. The forget set always travels as an argument of the forward call
(captum's ``additional_forward_args``), never as state on the model, so one
:class:`~wfexplain.filtering.FilteredModel` can be explained from many threads at once.
Layer methods register temporary hooks, so they run on a private ``copy.deepcopy`` of
the model made inside the call; the shared instance never gets a hook. Grad-CAM lives in
:mod:`wfexplain.explain.gradcam`.

:func:`insertion_deletion` scores a saliency map with the insertion and deletion
metrics of Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models" (BMVC 2018).
"""

from __future__ import annotations

import math

import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
from torchvision.transforms.functional import gaussian_blur

from ..filtering import FilteredModel, Forget
from .gradcam import _grad_cam, _targets

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
