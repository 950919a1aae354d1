"""The recipes: every frozen config dataclass of the library, and the one way their ranges are checked.

A numeric field declares its valid range with :func:`in_range` (stored in the field's metadata);
:class:`Checked` checks every such field in ``__post_init__`` with :func:`check_range`, and the CLI
builds its options from the same metadata (:func:`wfexplain.cli.options.add_config_args`), so the
parser and the library can never disagree. Annotations are postponed: a field's type is its name,
and an ``int`` field must hold an integer.

Recipes: :class:`TrainConfig` (the original classifier), :class:`UnlearnConfig` (the memory
matrices, Poppi et al., arXiv 2304.02049), :class:`RemovalConfig` (:func:`wfexplain.removal.remove`)
and one per baseline of :mod:`wfexplain.baselines` (each module's ``Config``).
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields

INF = math.inf
Range = tuple[float, float, bool, bool]  # (lo, hi, open_lo, open_hi)


def in_range(default, lo: float, hi: float = INF, *, open_lo: bool = False, open_hi: bool = False):
    """A config field with its valid range (checked in ``__post_init__``, and by the CLI's option parser)."""
    return field(default=default, metadata={"range": (lo, hi, open_lo, open_hi)})


def field_range(f: Field) -> Range | None:
    """The range a field declared with :func:`in_range` (None: unchecked)."""
    return f.metadata.get("range")


def check_range(name: str, value, lo: float, hi: float, open_lo: bool, open_hi: bool, integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number (an int if ``integer``) in the range."""
    ok = isinstance(value, int if integer else int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if open_lo else value >= lo) and (value < hi if open_hi else value <= hi)
    if not ok:
        kind = "an integer" if integer else "a number"
        if math.isinf(hi):
            where = f"{'>' if open_lo else '≥'} {lo:g}"
        else:
            where = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
        raise ValueError(f"{name} must be {kind} {where}, got {value!r}")


class Checked:
    """Base of every config: checks each :func:`in_range` field after construction."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            bounds = field_range(f)
            if bounds is not None:
                check_range(f.name, getattr(self, f.name), *bounds, integer=f.type == "int")


# ---------------------------------------------------------------- weight filtering


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Recipe for the original classifier."""

    epochs: int = in_range(10, 1)  # passes over the training split
    batch_size: int = in_range(128, 1)  # images per step
    lr: float = in_range(2e-3, 0, open_lo=True)  # AdamW peak learning rate (one-cycle schedule)
    weight_decay: float = in_range(0.05, 0)  # AdamW weight decay
    label_smoothing: float = in_range(0.1, 0, 1, open_hi=True)  # cross-entropy label smoothing
    shift: float = in_range(0.1, 0, 0.5)  # max random translation as a fraction of the side (augmentation)
    flip: bool = False  # random horizontal flips (off: digits are not symmetric)
    erase: float = in_range(0.0, 0, 1)  # probability of erasing a random rectangle of an image (augmentation)
    bf16: bool = False  # bfloat16 autocast, channels-last: faster on CPUs with AVX512-BF16 (weights stay float32)
    seed: int = in_range(0, 0)  # seeds initialisation, shuffling and augmentation


@dataclass(frozen=True)
class UnlearnConfig(Checked):
    """Recipe for the memory matrices (Poppi et al., arXiv 2304.02049, Sec. 3); the backbone stays frozen."""

    steps: int = in_range(936, 1)  # optimisation steps (936 = 4 epochs of Fashion-MNIST's 60k at batch 256)
    batch_size: int = in_range(256, 2)  # half forget, half retain ("label expansion")
    lr: float = in_range(1e-2, 0, open_lo=True)  # Adam learning rate on the alphas
    lambda_r: float = in_range(1.0, 0)  # weight of the retain cross-entropy
    lambda_f: float = in_range(1.0, 0)  # weight of the bounded forget term 1 / (CE + eps)
    lambda_s: float = in_range(0.1, 0)  # weight of the sparsity term mean(1 - alpha)
    eps: float = in_range(1e-3, 0, open_lo=True)  # keeps the forget term bounded
    ce_cap: float = in_range(5.0, 0)  # per-sample cap on the forget CE (our addition; 0 disables)
    max_set_size: int = in_range(2, 1)  # forget sets of size 1..k are sampled (k < number of classes)
    seed: int = in_range(0, 0)  # seeds shuffling and set sampling


@dataclass(frozen=True)
class RemovalConfig(Checked):
    """Recipe of :func:`wfexplain.removal.remove` (defaults chosen on held-out training images: docs/method.md)."""

    threshold: float = in_range(0.5, 0, 1, open_lo=True)  # components whose gate is below it are removed
    steps: int = in_range(1000, 0)  # repair steps on retain images (0: prune only)
    lr: float = in_range(1e-3, 0, open_lo=True)  # Adam learning rate of the repair
    batch_size: int = in_range(64, 1)  # retain images per repair step
    seed: int = in_range(0, 0)  # seeds the repair's sampling


# ---------------------------------------------------------------- the baselines (wfexplain.baselines)


@dataclass(frozen=True)
class FinetuneConfig(Checked):
    """Recipe for fine-tuning on the retain set (``baselines.finetune.Config``)."""

    steps: int = in_range(150, 1)  # SGD steps (150 x 128 = 19,200 images, ~1/3 epoch of Fashion-MNIST's retain set)
    batch_size: int = in_range(128, 1)  # retain images per step
    lr: float = in_range(0.05, 0, open_lo=True)  # SGD peak learning rate (cosine decay to 0)
    momentum: float = in_range(0.9, 0)  # SGD momentum
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay


@dataclass(frozen=True)
class NegGradPlusConfig(Checked):
    """Recipe for NegGrad+ (``baselines.neggrad_plus.Config``)."""

    steps: int = in_range(100, 1)  # SGD steps
    batch_size: int = in_range(128, 1)  # retain images per step
    forget_batch_size: int = in_range(32, 1)  # forget images per step (same forward pass)
    lr: float = in_range(0.01, 0, open_lo=True)  # SGD peak learning rate (cosine decay to 0)
    momentum: float = in_range(0.9, 0)  # SGD momentum
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay
    beta: float = in_range(0.99, 0, 1)  # weight of the retain CE; the forget CE gets -(1 - beta)


@dataclass(frozen=True)
class RandomLabelsConfig(Checked):
    """Recipe for random-label fine-tuning (``baselines.random_labels.Config``)."""

    steps: int = in_range(100, 1)  # SGD steps
    batch_size: int = in_range(128, 1)  # retain images per step
    forget_batch_size: int = in_range(32, 1)  # relabelled forget images per step (same forward pass)
    lr: float = in_range(0.01, 0, open_lo=True)  # SGD peak learning rate (cosine decay to 0)
    momentum: float = in_range(0.9, 0)  # SGD momentum
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay


@dataclass(frozen=True)
class SalUnConfig(Checked):
    """Recipe for SalUn, saliency mask + random labels (``baselines.salun.Config``)."""

    mask_ratio: float = in_range(0.5, 0, 1, open_lo=True)  # fraction of all weights updated (the paper's default: 50%)
    mask_batch_size: int = in_range(256, 1)  # forget images per gradient batch of the mask (the whole forget set is used)
    steps: int = in_range(100, 1)  # SGD steps of random-label fine-tuning
    batch_size: int = in_range(128, 1)  # retain images per step
    forget_batch_size: int = in_range(32, 1)  # relabelled forget images per step (same forward pass)
    lr: float = in_range(0.01, 0, open_lo=True)  # SGD peak learning rate (cosine decay to 0)
    momentum: float = in_range(0.9, 0)  # SGD momentum
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay (masked weights only)


@dataclass(frozen=True)
class SSDConfig(Checked):
    """Recipe for Selective Synaptic Dampening (``baselines.ssd.Config``; the module documents the choices)."""

    alpha: float = in_range(8.0, 0, open_lo=True)  # selection: dampen parameters with imp_Df > alpha * imp_D (paper: 10)
    lambda_: float = in_range(1.0, 0, open_lo=True)  # dampening: beta = min(lambda * imp_D / imp_Df, 1) (paper: 1)
    batch_size: int = in_range(64, 1)  # images per gradient batch for both importances (official code: 64)
    train_images: int = in_range(20000, 0)  # seeded subset of retain+forget that estimates imp_D (0: all)


@dataclass(frozen=True)
class ScrubConfig(Checked):
    """Recipe for SCRUB, teacher-student max/min distillation (``baselines.scrub.Config``; the module maps it to
    the reference code's ``sgda_*``, ``msteps`` and ``kd_T``)."""

    steps: int = in_range(150, 1)  # min steps: retain batches, gamma * CE + alpha * KL (reference: every epoch)
    max_steps: int = in_range(20, 0)  # max steps: forget batches ascending the KL, early (reference: msteps epochs; more diverge)
    max_every: int = in_range(2, 1)  # a max step before every max_every-th min step until max_steps are done
    batch_size: int = in_range(128, 1)  # retain images per min step (reference sgda_batch_size: 128)
    forget_batch_size: int = in_range(32, 1)  # forget images per max step (reference del_batch_size: 32)
    lr: float = in_range(0.001, 0, open_lo=True)  # SGD peak learning rate, cosine decay to 0 over all steps (reference: 5e-4)
    momentum: float = in_range(0.9, 0)  # SGD momentum (reference sgda_momentum: 0.9)
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay (reference sgda_weight_decay: 5e-4)
    temperature: float = in_range(4.0, 0, open_lo=True)  # distillation temperature T (reference kd_T: 4)
    alpha: float = in_range(0.001, 0)  # weight of the retain KL in the min loss (reference: 0.001)
    gamma: float = in_range(0.99, 0)  # weight of the retain CE in the min loss (reference: 0.99)


@dataclass(frozen=True)
class L1SparseConfig(Checked):
    """Recipe for ℓ1-sparse unlearning, fine-tuning plus a decaying ℓ1 penalty (``baselines.l1_sparse.Config``)."""

    steps: int = in_range(150, 1)  # SGD steps on retain batches (as fine-tuning's default)
    batch_size: int = in_range(128, 1)  # retain images per step
    lr: float = in_range(0.05, 0, open_lo=True)  # SGD peak learning rate (cosine decay to 0)
    momentum: float = in_range(0.9, 0)  # SGD momentum
    weight_decay: float = in_range(5e-4, 0)  # SGD weight decay (on top of the ℓ1 term, as in the reference)
    alpha: float = in_range(5e-4, 0)  # peak ℓ1 weight gamma: the penalty is alpha_t * sum |theta|
    no_l1_steps: int = in_range(0, 0)  # last steps without the ℓ1 term (reference no_l1_epochs); alpha_t decays to 0 before
