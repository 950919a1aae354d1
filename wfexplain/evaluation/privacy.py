"""Privacy and residual-knowledge metrics as the unlearning literature's reference code computes them.

Pure functions (tensors or arrays in, floats / dicts out); each docstring gives the formula, the direction and the
reference. The paper-formula versions live in :mod:`wfexplain.evaluation.metrics`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wfexplain.evaluation.metrics import true_class_confidence

ArrayLike = torch.Tensor | np.ndarray

_TINY = torch.finfo(torch.float64).tiny  # ≈ 2.2e-308, -log(_TINY) ≈ 708.4


def _float_tensor(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(x).detach()
    return t if t.is_floating_point() else t.double()


def _numpy_1d(x: ArrayLike) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float64).reshape(-1)


def zrf_reference_code(p_model: ArrayLike, p_random: ArrayLike) -> float:
    """ZRF ("UnLearningScore") exactly as the public code of Chundawat et al. computes it.

    Reference code (github.com/vikram2000b/bad-teaching-unlearning, ``metrics.py``)::

        JSDiv(p, q) = 0.5 * F.kl_div(torch.log(p), m) + 0.5 * F.kl_div(torch.log(q), m),  m = (p + q) / 2
        UnLearningScore = 1 - JSDiv(model_preds, gold_model_preds)

    on the concatenated ``[B, N]`` softmax outputs over the forget set, ``gold_model`` being the randomly initialised
    "incompetent teacher". ``F.kl_div(input, target)`` is ``target * (log target - input)`` elementwise, so each
    half is ``KL(m || p)`` (not the paper's ``KL(p || m)``), and the default ``reduction="mean"`` divides the sum by
    all ``B * N`` elements (not by ``B``). Hence ``1 - score = (1 / (B N)) Σ_i [½ KL(m_i||p_i) + ½ KL(m_i||q_i)]``,
    which is not the paper's per-sample JS averaged over samples (our :func:`metrics.zrf`): it is about ``1/N`` as
    large, and uses the reversed KL direction. 1.0 for identical inputs; higher = closer to the random network.

    Computed in the inputs' (promoted) dtype with the reference's operations, so float32 inputs give its float32
    result. Zeros: where ``p`` (or ``q``) is exactly 0 (a float32 softmax underflows beyond a logit gap of ~104)
    the reference's ``torch.log(0) = -inf`` makes the whole score ``-inf``; here the log's argument is clamped to the
    smallest normal float32 (``log`` ≈ −87.3, the float32 softmax's own resolution), so such a network gets a finite,
    very low score instead; where both are 0 (``m = 0``) the element contributes 0 (the ``0 log 0 = 0`` limit; the
    reference gives nan). Elsewhere the result equals the reference's. nan for no samples.
    """
    p, q = _float_tensor(p_model), _float_tensor(p_random)
    dtype = torch.promote_types(p.dtype, q.dtype)
    p, q = p.to(dtype), q.to(device=p.device, dtype=dtype)
    if p.numel() == 0:
        return float("nan")
    m = (p + q) / 2

    def kl_mean(a: torch.Tensor) -> torch.Tensor:  # F.kl_div(torch.log(a), m) with reduction="mean"
        elem = F.kl_div(torch.log(a.clamp_min(torch.finfo(torch.float32).tiny)), m, reduction="none")
        return torch.where(m == 0, torch.zeros_like(elem), elem).mean()

    return (1 - (0.5 * kl_mean(p) + 0.5 * kl_mean(q))).item()


def logit_confidence(probs: ArrayLike, targets: ArrayLike) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``φ = log p_y - log(1 - p_y)`` of each ``[B, N]`` row, float64, shape ``[B]``.

    Computed as LiRA's reference code does (github.com/tensorflow/privacy, ``research/mi_lira_2021/score.py``:
    ``y_wrong`` = sum of the other classes' probabilities, ``log(y_true + 1e-45) - log(y_wrong + 1e-45)``):
    ``1 - p_y`` is taken as ``Σ_{k≠y} p_k`` in float64, so a float32 softmax that rounds ``p_y`` to exactly 1 still
    gives a finite, ordered value; both terms are clamped at the tiniest float64 (``|φ| <= 708.4``, never inf).
    Higher = more confident in the true class (members score higher).
    Reference: Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022.
    """
    p = _float_tensor(probs).double()
    y = torch.as_tensor(targets).long().view(-1, 1).to(p.device)
    p_true = p.gather(1, y).squeeze(1)
    p_rest = p.scatter(1, y, 0.0).sum(1)
    return torch.log(p_true.clamp_min(_TINY)) - torch.log(p_rest.clamp_min(_TINY))


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(A, B)`` of a seeded permutation of ``range(n)``: ``A`` its first ``n // 2``, ``B`` the rest."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n // 2], perm[n // 2:]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC = Mann-Whitney ``U / (n_pos n_neg)`` with average ranks (a tie counts ½); exact for equal samples."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def retrain_attack(target_scores: ArrayLike, retrain_scores: ArrayLike, seed: int = 0, fpr: float = 0.01) -> dict:
    """Per-example attack that tells the unlearned model from Retrain on the forget set, calibrated on Retrain.

    ``target_scores`` and ``retrain_scores``: 1-D, the same forget-set training images in the same order, scored
    (e.g. :func:`logit_confidence`) under the unlearned model and under the Retrain oracle. Indices where either is
    non-finite are dropped, leaving ``n`` (ValueError if the lengths differ or ``n < 4``). The indices are split by
    :func:`split_halves` (``seed`` and ``n`` alone fix the split, never the scores). On half A the Retrain reference
    is fit: ``μ = mean(retrain[A])``, ``σ = max(std(retrain[A]), 1e-6)`` (ddof 0). On half B each output is scored by
    the two-sided statistic ``s = |φ - μ| / σ`` (flags outputs unlike Retrain's in either direction); positives =
    ``s(target[B])``, negatives = ``s(retrain[B])``. (``σ`` is one scale for all, so it leaves both results unchanged.)

    Returns ``{"auc", "tpr_at_fpr", "fpr", "n": len(B)}``: ``auc`` = ROC AUC of positives vs negatives (ties ½);
    ``tpr_at_fpr`` = fraction of positives strictly above ``t = np.quantile(negatives, 1 - fpr, method="higher")``,
    an order statistic of the negatives, so the empirical FPR (negatives above ``t``) is at most ``fpr``; with fewer
    than ``1 / fpr`` negatives ``t`` is their maximum (empirical FPR 0). Direction: ``auc`` 0.5 and ``tpr_at_fpr`` ≈
    ``fpr`` = indistinguishable from Retrain (best); higher = the unlearning is detectable.
    Reference: Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy",
    2024 (U-LiRA: membership inference calibrated on retrained models), scores of Carlini et al. (S&P 2022).
    """
    t, r = _numpy_1d(target_scores), _numpy_1d(retrain_scores)
    if len(t) != len(r):
        raise ValueError(f"retrain_attack needs scores of the same images (got {len(t)} and {len(r)})")
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    keep = np.isfinite(t) & np.isfinite(r)
    t, r = t[keep], r[keep]
    if len(t) < 4:
        raise ValueError(f"retrain_attack needs at least 4 images with finite scores (got {len(t)})")
    a, b = split_halves(len(t), seed)
    mu, sigma = r[a].mean(), max(float(r[a].std()), 1e-6)
    pos, neg = np.abs(t[b] - mu) / sigma, np.abs(r[b] - mu) / sigma
    thr = np.quantile(neg, 1.0 - fpr, method="higher")
    return {"auc": _auc(pos, neg), "tpr_at_fpr": float((pos > thr).mean()), "fpr": fpr, "n": len(b)}


def mean_loss(probs: ArrayLike, targets: ArrayLike) -> float:
    """Mean cross-entropy ``(1/B) Σ_i -log p_{y_i}`` (``p`` clamped at the tiniest float64, so at most 708.4).

    "Loss on the class's training images": residual knowledge of a forgotten class; higher = more forgotten
    (Retrain gives the target value). nan for no samples.
    """
    y = torch.as_tensor(targets)
    if y.numel() == 0:
        return float("nan")
    conf = true_class_confidence(_float_tensor(probs).double(), y)
    return float(-torch.log(conf.clamp_min(_TINY)).mean())


def mia_efficacy_salun(member_conf: ArrayLike, nonmember_conf: ArrayLike, forget_conf: ArrayLike,
                       seed: int | None = None) -> float:
    """MIA-efficacy exactly as SalUn's code computes it (``SVC_MIA(...)["confidence"]``, the value its tables report).

    Protocol (github.com/OPTML-Group/Unlearn-Saliency, ``Classification/main_forget.py`` / ``main_random.py`` and
    ``evaluation/SVC_MIA.py``): the feature is the true-class softmax probability (:func:`true_class_confidence`);
    ``shadow_test`` (non-members) = ALL of ``nonmember_conf``: the test images, which in class-wise forgetting
    exclude the forgotten class (``dataset.py`` drops its test images), so pass the retained classes' test images
    only; ``shadow_train`` (members) = the FIRST ``len(nonmember_conf)`` of ``member_conf``, the retain-set training
    images in dataset order (``Subset(retain_dataset, range(test_len))``; ValueError if there are fewer); target =
    ``forget_conf`` (the forget images with their true labels). An ``SVC(C=3, gamma="auto", kernel="rbf")`` is fit
    on ``[members, non-members]`` with labels ``[1, 0]``; ``MIA-efficacy = 1 - mean(predict(forget))``, the fraction
    of forget images called non-member. Higher is better (more forgotten); nan for no forget images.
    ``seed=None`` reproduces the reference; an int takes a seeded random subset of the members instead of the first
    (CIFAR's file order is already shuffled, so the two agree in distribution; pass a seed for class-sorted data).
    Reference: Fan et al., "SalUn", ICLR 2024; Jia et al., NeurIPS 2023.
    """
    from sklearn.svm import SVC

    member, nonmember, target = _numpy_1d(member_conf), _numpy_1d(nonmember_conf), _numpy_1d(forget_conf)
    n = len(nonmember)
    if n == 0 or len(member) < n:
        raise ValueError(f"mia_efficacy_salun needs non-members and at least as many members "
                         f"(got {len(member)} members, {n} non-members)")
    if len(target) == 0:
        return float("nan")
    idx = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(len(member))[:n]
    x = np.concatenate([member[idx], nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return float(1 - clf.predict(target.reshape(-1, 1)).mean())
