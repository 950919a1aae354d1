"""Do the memories explain? Deletion curves of the components a class's filter switches off (issue "Explanations").

For a class ``c`` (or a forget set ``S``) each gate site (layer) ``l`` with ``K_l`` components is ranked four ways,
highest score first (stable: ties keep component order):

- ``memory``: ``spec[c,k]`` (:func:`~wfexplain.explain.analysis.specificity` of the memory row); for a set
  ``1 - prod_{c in S} alpha[c,k]`` (one minus the combined gate the filter of ``S`` applies);
- ``activation``: class selectivity of the activations, ``mu[c,k] - mean_{c' not in S} mu[c',k]`` (for a set the
  first term is ``mean_{c in S} mu[c,k]``), where ``mu[c,k]`` is the mean over class-``c`` TRAINING images of the
  component's activation reduced to one number per image as :func:`~.analysis.component_activations` does: a
  channel's spatial mean (``channels``; ``norm_act``: before the fused activation), a feature's value averaged over
  tokens (``features``, ``residual``), the L2 norm of a head's output averaged over tokens (``heads``, ``mha``);
- ``grad_x_activation``: ``|mean_{c in S} T[c,k]|``, ``T[c,k]`` the mean over class-``c`` training images of
  ``dz_c/dg_k`` at ``g = 1`` (``z_c`` the logit of ``c``, ``g_k`` the gate) ``= sum_e a_e dz_c/da_e`` over every
  element ``e`` the gate scales (positions, tokens, head features): gradient x activation, the first-order
  estimate of the logit lost when ``k`` is switched off (one backward pass per batch);
- ``random``: ``draws`` seeded permutations per layer (the same draws for every class and set).
Deleting a fraction ``f`` switches off (gate 0) the top ``n_l = ceil(f K_l)`` components of every layer (at least
1, at most ``K_l``) and measures the accuracy on the class's images (``S``'s) and on the others' (pooled), on the
images the caller passes (the test split). ``drop(f) = accuracy(original) - accuracy(f)``; its area
``AUC = trapz(drop, f) / (f_max - f_min)`` (the drop itself for a single fraction) is the mean drop over the range;
``selectivity = class AUC - others' AUC``. Random: mean and sample std (ddof 1) over draws. Gates are baked into
hook-free copies (:func:`wfexplain.filtering.bake_gates`, exact); the model is never modified.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import gates as G
from ..evaluation.metrics import forget_accuracy, retain_accuracy
from ..filtering import FilteredModel, bake_gates
from ..hooks import watch
from ..sites import GateSite
from .analysis import as_memory, specificity
from .deletion_report import RANKINGS, nearest_class, summarize

FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)
Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class DeletionConfig:
    """How :func:`measure` deletes: fractions (ascending), random draws, seed, the ``shared`` threshold, the top share
    of the overlap, the batch size."""

    fractions: tuple[float, ...] = FRACTIONS
    draws: int = 5
    seed: int = 0
    threshold: float = 0.5
    top: float = 0.1
    batch_size: int = 256

    def __post_init__(self) -> None:
        f = tuple(sorted({float(v) for v in self.fractions}))
        if not f or not all(0 < v <= 1 for v in f):
            raise ValueError(f"fractions must be in (0, 1], got {list(self.fractions)}")
        object.__setattr__(self, "fractions", f)
        if self.draws < 1 or self.batch_size < 1 or self.seed < 0:
            raise ValueError("draws and batch_size must be at least 1, seed at least 0")
        if not (0 < self.threshold < 1 and 0 < self.top <= 1):
            raise ValueError(f"threshold must be in (0, 1) and top in (0, 1], got {self.threshold}, {self.top}")


@dataclass(frozen=True)
class ComponentStats:
    """Per layer ``[N, K]``: ``mean_activation`` (``mu``), ``taylor`` (``T``) per class; ``counts [N]`` images."""

    mean_activation: dict[str, torch.Tensor]
    taylor: dict[str, torch.Tensor]
    counts: torch.Tensor


def n_off(k: int, fraction: float) -> int:
    """``ceil(f K)`` within ``[1, K]`` (``1e-9`` guards ``ceil(0.1 * 30) = 4``)."""
    return min(k, max(1, math.ceil(fraction * k - 1e-9)))


def _reduce(site: GateSite, t: torch.Tensor, batch: int) -> torch.Tensor:
    """One number per image and component ``[B, K]`` (batch-folded activations: each sample's rows together)."""
    t = t.detach().float()
    if site.kind in ("heads", "mha"):  # heads: [B, T, K*d]; mha: [B, K, L, d]
        t = t.transpose(1, 2) if site.kind == "mha" else t
        return t.reshape(batch, -1, site.size, site.head_dim).norm(dim=-1).mean(1)
    return t.movedim(site.dim, -1).reshape(batch, -1, site.size).mean(1)


def _capture(model: FilteredModel, seen: dict[str, torch.Tensor], batch: list[int]) -> contextlib.ExitStack:
    """Hooks that put each site's reduced activation of the current batch in ``seen`` (first call per batch)."""
    modules = dict(model.backbone.named_modules())
    stack = contextlib.ExitStack()
    for site in model.sites:
        def keep(t: torch.Tensor, site: GateSite = site) -> None:
            if site.path not in seen:
                seen[site.path] = _reduce(site, t, batch[0])

        m = modules[site.path]
        if site.kind == "mha":
            def seen_heads(p, mod, inputs, o, keep=keep) -> None:
                a = G.mha_call(*inputs)
                with torch.no_grad():
                    keep(G.mha_heads(mod, a["query"], a["key"], a["value"], a.get("key_padding_mask"),
                                     a.get("attn_mask")))
            stack.enter_context(watch({site.path: m}, on_output=seen_heads, with_kwargs=True))
        else:  # heads and norm_act: what their gate's pre-hook scales; the other kinds: the module's output
            before = site.kind in ("heads", "norm_act")

            def saw(p, mod, inputs, out, keep=keep, before=before) -> None:
                keep(inputs[0] if before else out)
            stack.enter_context(watch({site.path: m.drop if site.kind == "norm_act" else m},
                                      on_input=saw if before else None, on_output=None if before else saw))
    return stack


def component_statistics(model: FilteredModel, images: torch.Tensor, labels: torch.Tensor,
                         batch_size: int = 256) -> ComponentStats:
    """``mu`` and ``T`` (module docstring) of every component on ``images`` (training images), one forward and
    backward pass per batch with all gates at 1; the capture hooks are removed on return, the model unchanged."""
    n, device = model.num_classes, next(model.backbone.parameters()).device
    labels = labels.long().cpu()
    act = {s.path: torch.zeros(n, s.size, dtype=torch.float64) for s in model.sites}
    tay = {s.path: torch.zeros(n, s.size, dtype=torch.float64) for s in model.sites}
    seen: dict[str, torch.Tensor] = {}
    batch = [0]
    with _capture(model, seen, batch), torch.enable_grad():
        for xb, yb in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            seen.clear()
            batch[0] = len(yb)
            gates = {s.path: torch.ones(len(yb), s.size, device=device, requires_grad=True) for s in model.sites}
            z = model.run_gated(xb.to(device), gates).gather(1, yb.to(device)[:, None]).sum()
            grads = torch.autograd.grad(z, list(gates.values()))
            for s, g in zip(model.sites, grads, strict=True):
                act[s.path].index_add_(0, yb, seen[s.path].cpu().double())
                tay[s.path].index_add_(0, yb, g.detach().cpu().double())
    counts = torch.bincount(labels, minlength=n).double()
    mean = {p: torch.where((counts == 0)[:, None], torch.nan, v / counts.clamp_min(1)[:, None]) for p, v in act.items()}
    return ComponentStats(mean, {p: torch.where(mean[p].isnan(), torch.nan, v / counts.clamp_min(1)[:, None])
                                 for p, v in tay.items()}, counts)


def scores(memory, stats: ComponentStats, members: Sequence[int]) -> dict[str, dict[str, torch.Tensor]]:
    """Ranking -> layer -> score ``[K]`` (highest deleted first) for one class (``members = [c]``) or a set."""
    mem = as_memory(memory)
    s = list(members)
    out: dict[str, dict[str, torch.Tensor]] = {"memory": {}, "activation": {}, "grad_x_activation": {}}
    for layer, a in mem.items():
        out["memory"][layer] = specificity(a)[s[0]] if len(s) == 1 else 1 - a[s].prod(0)
        mu = stats.mean_activation[layer]
        rest = [c for c in range(a.shape[0]) if c not in s]
        out["activation"][layer] = mu[s].mean(0) - (mu[rest].nanmean(0) if rest else 0.0)
        out["grad_x_activation"][layer] = stats.taylor[layer][s].mean(0).abs()
    return out


def order(score: torch.Tensor) -> torch.Tensor:
    """Component indices, highest score first (stable; NaN last)."""
    return torch.argsort(-torch.nan_to_num(score.double(), nan=-math.inf), stable=True)


def deletion_gates(sizes: dict[str, int], orders: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Gates ``[K]`` per layer: 0 for the first ``n_off(K, fraction)`` components of each layer's order, else 1."""
    out = {}
    for layer, k in sizes.items():
        g = torch.ones(k)
        g[orders[layer][: n_off(k, fraction)]] = 0.0
        out[layer] = g
    return out


def predict(model: FilteredModel, images: torch.Tensor, gates: dict[str, torch.Tensor] | None,
            batch_size: int = 256) -> torch.Tensor:
    """Predicted classes ``[B]`` (CPU) under ``gates`` ``{layer: [K]}`` (None: the original network), through a baked,
    hook-free copy of the backbone."""
    net = bake_gates(model, gates or {s.path: torch.ones(s.size) for s in model.sites}).eval().requires_grad_(False)
    device = next(net.parameters()).device
    with torch.inference_mode():
        return torch.cat([net(b.to(device)).argmax(1).cpu() for b in images.split(batch_size)])


def auc(fractions: Sequence[float], drops: Sequence[float]) -> float:
    """``trapz(drop, f) / (f_max - f_min)``: the mean drop over the fraction range (the drop for one fraction)."""
    f, d = np.asarray(fractions, dtype=float), np.asarray(drops, dtype=float)
    if len(f) == 1:
        return float(d[0])
    return float(np.sum((d[1:] + d[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))


def agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], top: float = 0.1) -> dict:
    """How two rankings agree: per-layer Spearman rho (NaN for ``K < 3`` or a constant score), their K-weighted mean,
    and the overlap of the top ``n_off(K, top)`` of each layer pooled over layers, with its chance level
    ``sum_l n_l^2 / K_l / sum_l n_l`` (about ``top``)."""
    from scipy.stats import spearmanr  # only when agreement is measured
    rho, hit, total, chance = {}, 0, 0, 0.0
    for layer in a:
        x, y = a[layer].double().numpy(), b[layer].double().numpy()
        ok = len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 and np.isfinite(x).all() and np.isfinite(y).all()
        rho[layer] = float(spearmanr(x, y)[0]) if ok else math.nan
        n = n_off(len(x), top)
        hit += len(set(order(a[layer])[:n].tolist()) & set(order(b[layer])[:n].tolist()))
        total, chance = total + n, chance + n * n / len(x)
    w = {layer: len(a[layer]) for layer in a if not math.isnan(rho[layer])}
    mean = sum(rho[layer] * k for layer, k in w.items()) / sum(w.values()) if w else math.nan
    return {"spearman": mean, "spearman_per_layer": rho, "top_overlap": hit / total, "top_chance": chance / total}


def _accuracies(preds: torch.Tensor, labels: torch.Tensor, members: Sequence[int]) -> tuple[float, float]:
    return forget_accuracy(preds, labels, members), retain_accuracy(preds, labels, members)


def _curve(accs: list[tuple[float, float]], base: tuple[float, float], fractions: Sequence[float]) -> dict:
    cls, oth = [a for a, _ in accs], [o for _, o in accs]
    cd, od = [base[0] - a for a in cls], [base[1] - o for o in oth]
    ca, oa = auc(fractions, cd), auc(fractions, od)
    return {"auc": {"class_drop": ca, "others_drop": oa, "selectivity": ca - oa},
            "curve": {"class_accuracy": cls, "others_accuracy": oth, "class_drop": cd, "others_drop": od}}


def _random(curves: list[dict]) -> dict:
    """Mean and sample std over draws of every number of :func:`_curve`."""

    def stat(vals: list) -> tuple:
        v = np.asarray(vals, dtype=float)
        return v.mean(0).tolist(), (v.std(0, ddof=1) if len(v) > 1 else np.zeros_like(v[0])).tolist()

    out: dict = {"auc": {}, "curve": {}}
    for part in out:
        for key in curves[0][part]:
            out[part][key], out[part][key + "_std"] = stat([c[part][key] for c in curves])
    return out


def shared_components(memory, members: Sequence[int], threshold: float = 0.5) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer, boolean ``[K]``: ``off`` (``prod_{c in S} alpha[c,k] < t``), ``shared`` (off and
    ``alpha[c',k] < t`` for at least one retained class ``c'``) and ``unique`` (off, not shared)."""
    out = {}
    for layer, a in as_memory(memory).items():
        off = a[list(members)].prod(0) < threshold
        rest = [c for c in range(a.shape[0]) if c not in members]
        by_rest = (a[rest] < threshold).any(0) if rest else torch.zeros_like(off)
        out[layer] = {"off": off, "shared": off & by_rest, "unique": off & ~by_rest}
    return out


def measure(model: FilteredModel, images: torch.Tensor, labels: torch.Tensor, train_images: torch.Tensor,
            train_labels: torch.Tensor, classes: Sequence[int] | None = None, sets: Sequence[Sequence[int]] = (),
            fractions: Sequence[float] = FRACTIONS, draws: int = 5, seed: int = 0, threshold: float = 0.5,
            batch_size: int = 256, progress: Progress | None = None) -> dict:
    """Everything of the module docstring, JSON-ready: rankings from ``train_*``, accuracies on ``images``/``labels``.

    Returns ``{"config", "fractions", "layers", "components_off" (layer -> n per fraction), "original_accuracy",
    "classes": {c: {"name", "members", "original", "rankings": {ranking: {"auc", "curve"}}, "agreement":
    {"activation"|"grad_x_activation": agreement with memory}}}, "sets": {"a-b": the same plus "components" (per layer
    off/shared/unique counts) and "deleted" (accuracies with only the shared, or only the unique, components off)},
    "summary" (means over classes), "nearest_class", "num_images", "num_train_images", "seconds"}``.
    """
    start = time.perf_counter()
    cfg = DeletionConfig(tuple(fractions), draws, seed, threshold, batch_size=batch_size)
    n, names = model.num_classes, model.class_names
    classes = list(range(n)) if classes is None else sorted({int(c) for c in classes})
    groups = [sorted({int(c) for c in s}) for s in sets]
    labels, train_labels = labels.long().cpu(), train_labels.long().cpu()
    for c in {c for s in [classes, *groups] for c in s}:
        if not 0 <= c < n:
            raise ValueError(f"class {c} out of range: valid classes are 0..{n - 1}")
        if not (train_labels == c).any() or not (labels == c).any():
            raise ValueError(f"class {c} ({names[c]}) has no training or no evaluation images")
    if any(not 0 < len(s) < n for s in groups):
        raise ValueError(f"a forget set needs 1..{n - 1} classes")
    sizes = {s.path: s.size for s in model.sites}
    total = 1 + len(cfg.fractions) * (cfg.draws + 3 * len(classes) + 3 * len(groups)) + 2 * len(groups)
    done = 0

    def run(gates: dict[str, torch.Tensor] | None, what: str) -> torch.Tensor:
        nonlocal done
        preds = predict(model, images, gates, cfg.batch_size)
        done += 1
        if progress is not None:
            progress(done, total, {"step": what})
        return preds

    stats = component_statistics(model, train_images, train_labels, cfg.batch_size)
    base = run(None, "original")
    rng = [np.random.default_rng([cfg.seed, d]) for d in range(cfg.draws)]
    rand = [{p: torch.as_tensor(r.permutation(k)) for p, k in sizes.items()} for r in rng]
    rand_preds = [[run(deletion_gates(sizes, o, f), f"random {d}") for f in cfg.fractions] for d, o in enumerate(rand)]

    def target(members: list[int]) -> dict:
        sc = scores(model, stats, members)
        b = _accuracies(base, labels, members)
        out: dict = {"members": members, "names": [names[c] for c in members],
                     "original": {"accuracy": b[0], "others_accuracy": b[1]}, "rankings": {}}
        for r in RANKINGS[:3]:
            orders = {p: order(v) for p, v in sc[r].items()}
            accs = [_accuracies(run(deletion_gates(sizes, orders, f), f"{r} {members}"), labels, members)
                    for f in cfg.fractions]
            out["rankings"][r] = _curve(accs, b, cfg.fractions)
        out["rankings"]["random"] = _random([_curve([_accuracies(p, labels, members) for p in per], b, cfg.fractions)
                                            for per in rand_preds])
        out["agreement"] = {r: agreement(sc["memory"], sc[r], cfg.top) for r in ("activation", "grad_x_activation")}
        return out

    report_classes = {str(c): {"name": names[c], **target([c])} for c in classes}
    report_sets = {}
    for s in groups:
        r = target(s)
        parts = shared_components(model, s, cfg.threshold)
        r["components"] = {p: {k: int(v.sum()) for k, v in d.items()} for p, d in parts.items()}
        r["deleted"] = {}
        for kind in ("shared", "unique"):
            acc = _accuracies(run({p: (~d[kind]).float() for p, d in parts.items()}, kind), labels, s)
            r["deleted"][kind] = {"accuracy": acc[0], "others_accuracy": acc[1],
                                  "components": sum(int(d[kind].sum()) for d in parts.values())}
        report_sets["-".join(map(str, s))] = r
    return {"config": asdict(cfg), "fractions": list(cfg.fractions),
            "layers": [{"layer": s.path, "kind": s.kind, "components": s.size} for s in model.sites],
            "components_off": {p: [n_off(k, f) for f in cfg.fractions] for p, k in sizes.items()},
            "original_accuracy": float((base == labels).float().mean()),
            "classes": report_classes, "sets": report_sets, "summary": summarize(report_classes),
            "nearest_class": nearest_class(model), "num_images": len(labels), "num_train_images": len(train_labels),
            "seconds": time.perf_counter() - start}
