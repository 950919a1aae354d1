"""Weight filtering: per-class memory matrices that gate a frozen backbone.

Implements the filtering of Poppi et al., "Multi-Class Unlearning for Image
Classification via Weight Filtering" (arXiv 2304.02049) as specified in DESIGN.md §1.
Each gate site ``l`` owns a memory matrix ``alpha_l`` in ``[0,1]^(N x K_l)``; row ``c``
is the filter that forgets class ``c``; a forget set ``S`` uses the product of its rows.

Gating is applied on the activation side by forward hooks installed once on the
backbone. The gate values of a call travel in a :class:`contextvars.ContextVar`, so a
single :class:`FilteredModel` can serve many threads (Streamlit sessions) at once,
each with its own forget set: the condition is an argument of ``forward``, never state
stored on the model. :func:`bake` folds a filter into the weights of a fresh copy.
"""

from __future__ import annotations

import contextvars
import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .backbones import GateSite, create_backbone, gate_sites
from .data import DatasetInfo, build_transform

if TYPE_CHECKING:
    from .manifest import Manifest

Forget = None | int | Sequence[int] | torch.Tensor

# Gate values of the call in progress in this thread/context: {site path: [B or 1, K]}.
_ACTIVE_GATES: contextvars.ContextVar[dict[str, torch.Tensor] | None] = contextvars.ContextVar(
    "wfexplain_gates", default=None
)


def _expand(gate: torch.Tensor, site: GateSite, ndim: int, channel_dim: int) -> torch.Tensor:
    """Reshape ``gate [B, K]`` so it broadcasts over an activation of ``ndim`` dims."""
    if site.kind == "heads":
        gate = gate.repeat_interleave(site.head_dim, dim=1)
    shape = [gate.shape[0]] + [1] * (ndim - 1)
    shape[channel_dim] = gate.shape[1]
    return gate.view(shape)


def _output_hook(site: GateSite):
    def hook(module, inputs, output):
        gates = _ACTIVE_GATES.get()
        if gates is None:
            return None
        dim = 1 if site.kind == "bn" else output.ndim - 1
        return output * _expand(gates[site.path], site, output.ndim, dim)

    return hook


def _input_hook(site: GateSite):
    def hook(module, inputs):
        gates = _ACTIVE_GATES.get()
        if gates is None:
            return None
        x = inputs[0]
        return (x * _expand(gates[site.path], site, x.ndim, x.ndim - 1), *inputs[1:])

    return hook


class FilteredModel(nn.Module):
    """A frozen backbone plus one memory matrix per gate site.

    Call it as ``model(x, forget=...)`` where ``forget`` is ``None`` (original
    network), a class index, a sequence of class indices, or a boolean tensor
    ``[B, num_classes]`` giving each sample its own forget set. Returns logits.
    """

    def __init__(self, backbone_name: str, info: DatasetInfo, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone_name = backbone_name
        self.info = info
        if backbone is None:
            backbone = create_backbone(backbone_name, info.num_classes, info.in_chans, info.img_size)
        self.backbone = backbone
        self.backbone.eval().requires_grad_(False)
        self.sites = gate_sites(backbone_name, self.backbone)
        # ParameterDict keys cannot contain dots; the public ``memory`` uses site paths.
        self.alphas = nn.ParameterDict({
            _key(s.path): nn.Parameter(torch.ones(info.num_classes, s.size)) for s in self.sites
        })
        self.transform = build_transform(info)
        self.manifest: Manifest | None = None  # filled by wfexplain.load
        modules = dict(self.backbone.named_modules())
        for site in self.sites:
            m = modules[site.path]
            if site.kind == "heads":
                m.register_forward_pre_hook(_input_hook(site))
            else:
                m.register_forward_hook(_output_hook(site))

    # ------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def memory(self) -> Mapping[str, torch.Tensor]:
        """Layer (gate-site path) -> memory matrix ``[num_classes, K]`` (detached views of the parameters)."""
        return {s.path: self.alphas[_key(s.path)].detach() for s in self.sites}

    def train(self, mode: bool = True):
        # The backbone is frozen: BatchNorm and dropout always stay in eval mode.
        super().train(mode)
        self.backbone.eval()
        return self

    # ------------------------------------------------------------ forward
    def forget_mask(self, forget: Forget, batch: int = 1) -> torch.Tensor | None:
        """Normalise a forget spec to a float mask ``[B or 1, num_classes]`` (None = no filter)."""
        n = self.num_classes
        if forget is None:
            return None
        if isinstance(forget, torch.Tensor) and forget.dtype == torch.bool:
            if forget.ndim != 2 or forget.shape[1] != n or forget.shape[0] not in (1, batch):
                raise ValueError(f"forget mask must be bool [{batch} or 1, {n}], got {tuple(forget.shape)}")
            return forget.float()
        if isinstance(forget, torch.Tensor):
            forget = forget.tolist()
        classes = [int(forget)] if isinstance(forget, numbers.Integral) else [int(c) for c in forget]
        bad = [c for c in classes if not 0 <= c < n]
        if bad:
            raise ValueError(f"class index {bad[0]} out of range: valid classes are 0..{n - 1}")
        mask = torch.zeros(1, n)
        mask[0, classes] = 1.0
        return mask if classes else None

    def gates(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-site gates ``[B, K] = prod_{c in S} alpha[c]`` for a forget mask ``[B, N]``."""
        mask = mask.to(next(iter(self.alphas.values())).device)
        out = {}
        for s in self.sites:
            alpha = self.alphas[_key(s.path)]
            # 1 - m_c (1 - alpha_c) is alpha_c for c in S and 1 otherwise.
            out[s.path] = (1 - mask[:, :, None] * (1 - alpha[None])).prod(dim=1)
        return out

    def forward(self, x: torch.Tensor, forget: Forget = None) -> torch.Tensor:
        mask = self.forget_mask(forget, x.shape[0])
        token = _ACTIVE_GATES.set(None if mask is None else self.gates(mask))
        try:
            return self.backbone(x)
        finally:
            _ACTIVE_GATES.reset(token)

    @torch.no_grad()
    def clamp_(self) -> None:
        for p in self.alphas.values():
            p.clamp_(0.0, 1.0)

    def combined_gates(self, forget: Forget) -> dict[str, torch.Tensor]:
        """Gate values ``[K]`` per site for one forget set (all ones for None)."""
        mask = self.forget_mask(forget)
        if mask is None:
            return {s.path: torch.ones(s.size) for s in self.sites}
        return {k: v[0].detach() for k, v in self.gates(mask).items()}


def _key(path: str) -> str:
    return path.replace(".", "__")


@torch.no_grad()
def bake(model: FilteredModel, forget: Forget, hard_threshold: float | None = None) -> nn.Module:
    """Fold a forget set's filter into the weights of a plain copy of the backbone.

    Args:
        model: the filtered model (left untouched).
        forget: a class index or sequence of indices.
        hard_threshold: if set, components whose combined gate is below it are zeroed
            (a "hard" bake); the others keep their learned gate.

    Returns:
        An ordinary torchvision/timm module with no hooks and no gates whose output
        equals ``model(x, forget=forget)`` (up to float tolerance for a soft bake).
    """
    if isinstance(forget, torch.Tensor) and forget.dtype == torch.bool:
        raise ValueError("bake needs one forget set (class index or list), not a per-sample mask")
    baked = create_backbone(model.backbone_name, model.num_classes, model.info.in_chans, model.info.img_size)
    baked.load_state_dict(copy.deepcopy(model.backbone.state_dict()))
    baked.eval()
    modules = dict(baked.named_modules())
    for site, (path, gate) in zip(model.sites, model.combined_gates(forget).items(), strict=True):
        assert site.path == path
        g = gate.to("cpu", torch.float32)
        if hard_threshold is not None:
            g = torch.where(g < hard_threshold, torch.zeros_like(g), g)
        m = modules[path]
        if site.kind == "heads":
            m.weight.mul_(g.repeat_interleave(site.head_dim)[None, :])
        else:  # "bn" and "linear" both scale weight rows and bias
            m.weight.mul_(g.view(-1, *[1] * (m.weight.ndim - 1)))
            if m.bias is not None:
                m.bias.mul_(g)
    return baked
