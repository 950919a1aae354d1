"""Privacy metrics as the reference code computes them (wfexplain.evaluation.privacy)."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wfexplain.evaluation.metrics import zrf
from wfexplain.evaluation.privacy import (
    logit_confidence,
    mean_loss,
    mia_efficacy_salun,
    retrain_attack,
    split_halves,
    zrf_reference_code,
)

TINY = torch.finfo(torch.float64).tiny


def _softmax_rows(b: int, n: int, seed: int, scale: float = 3.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, n, generator=g, dtype=torch.float64)).softmax(1).to(dtype)


# ---------------------------------------------------------------- ZRF of the reference code


def _reference_unlearning_score(model_preds: torch.Tensor, gold_model_preds: torch.Tensor) -> torch.Tensor:
    """Direct transcription of bad-teaching-unlearning/metrics.py (JSDiv, UnLearningScore's last line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's reduction="mean" warning

        def JSDiv(p, q):
            m = (p + q) / 2
            return 0.5 * F.kl_div(torch.log(p), m) + 0.5 * F.kl_div(torch.log(q), m)

        return 1 - JSDiv(model_preds, gold_model_preds)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zrf_reference_code_equals_the_reference(dtype):
    for seed in range(3):
        p, q = _softmax_rows(64, 20, seed, dtype=dtype), _softmax_rows(64, 20, 100 + seed, scale=0.5, dtype=dtype)
        expected = _reference_unlearning_score(p, q).item()
        assert zrf_reference_code(p, q) == pytest.approx(expected, abs=1e-12 if dtype == torch.float64 else 1e-6)
    p, q = _softmax_rows(8, 5, 7, dtype=torch.float64), _softmax_rows(8, 5, 8, dtype=torch.float64)
    assert zrf_reference_code(p.numpy(), q.numpy()) == pytest.approx(_reference_unlearning_score(p, q).item(), abs=1e-12)


def test_zrf_reference_code_known_values_and_quirks():
    p = _softmax_rows(16, 10, 1)
    assert zrf_reference_code(p, p.clone()) == 1.0
    assert math.isnan(zrf_reference_code(torch.empty(0, 10), torch.empty(0, 10)))
    q = _softmax_rows(16, 10, 2, scale=0.1)
    # mean over B*N elements and KL(m||p): not the paper's per-sample JS (metrics.zrf)
    assert 1 - zrf_reference_code(p, q) < 1 - zrf(p, q)
    # one-hot p vs uniform q: the reference's log(0) = -inf gives -inf; ours clamps p at float32's tiny (finite, low)
    assert _reference_unlearning_score(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])).item() == -math.inf
    tiny = torch.finfo(torch.float32).tiny
    m = torch.tensor([0.75, 0.25])
    by_hand = 1 - (0.5 * (m * (m.log() - torch.tensor([1.0, tiny]).log())).mean()
                   + 0.5 * (m * (m.log() - torch.tensor([0.5, 0.5]).log())).mean())
    assert zrf_reference_code(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(by_hand.item())
    assert -20 < by_hand.item() < -2  # far below any score of a network with no exact zero


def test_zrf_reference_code_element_zero_in_both_counts_zero_instead_of_nan():
    p, q = _softmax_rows(6, 2, 3, dtype=torch.float64), _softmax_rows(6, 2, 4, dtype=torch.float64)
    zero = torch.zeros(6, 1, dtype=torch.float64)
    p3, q3 = torch.cat([p, zero], 1), torch.cat([q, zero], 1)
    assert math.isnan(_reference_unlearning_score(p3, q3).item())  # the reference
    # the zero column adds 0 to the sum and 1/3 of the elements to the mean
    assert 1 - zrf_reference_code(p3, q3) == pytest.approx((1 - zrf_reference_code(p, q)) * 2 / 3, rel=1e-12)


# ---------------------------------------------------------------- logit-scaled confidence, mean loss


def test_logit_confidence_known_values():
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [0.1, 0.6, 0.3]])
    phi = logit_confidence(probs, torch.tensor([0, 0, 2]))
    assert phi.shape == (3,) and phi.dtype == torch.float64
    expected = torch.tensor([0.0, math.log(9), math.log(0.3 / 0.7)], dtype=torch.float64)
    assert torch.allclose(phi, expected, atol=1e-6)


def test_logit_confidence_is_finite_at_saturation():
    logits = torch.tensor([[40.0, 0.0, 0.0], [0.0, 800.0, 0.0]])
    probs = logits.softmax(1)  # float32: p_y rounds to exactly 1.0 in both rows, the others are 0 in the second
    assert probs[0, 0].item() == 1.0
    phi = logit_confidence(probs, torch.tensor([0, 0]))
    assert phi[0].item() == pytest.approx(40.0 - math.log(2), abs=1e-3)  # log p_y - log Σ_{k≠y} p_k
    assert torch.isfinite(phi).all()
    assert phi[1].item() == pytest.approx(math.log(TINY), rel=1e-9)  # p_y = 0 clamped at tiny, rest = 1
    assert logit_confidence(probs.numpy(), np.array([0, 1]))[1].item() == pytest.approx(-math.log(TINY), rel=1e-9)


def test_mean_loss():
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert mean_loss(probs, torch.tensor([0, 1])) == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)
    assert mean_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(-math.log(TINY))
    assert math.isnan(mean_loss(torch.empty(0, 2), torch.empty(0, dtype=torch.long)))


# ---------------------------------------------------------------- attack calibrated on Retrain


def test_retrain_attack_identical_inputs_are_indistinguishable():
    r = np.random.default_rng(0).normal(2.0, 1.5, 1000)
    out = retrain_attack(r, r.copy(), seed=3, fpr=0.05)
    assert out["auc"] == 0.5
    assert out["n"] == 500 and out["fpr"] == 0.05
    assert out["tpr_at_fpr"] <= 0.05
    assert out["tpr_at_fpr"] == pytest.approx(0.05, abs=0.005)


@pytest.mark.parametrize("shift", [-6.0, 6.0])
def test_retrain_attack_detects_a_shift_in_either_direction(shift):
    rng = np.random.default_rng(1)
    r = rng.normal(0.0, 1.0, 400)
    t = r + shift + rng.normal(0.0, 0.3, 400)
    out = retrain_attack(torch.as_tensor(t), torch.as_tensor(r), seed=0, fpr=0.01)
    assert out["auc"] > 0.99
    assert out["tpr_at_fpr"] > 0.9


def _manual_attack(t: np.ndarray, r: np.ndarray, a: np.ndarray, b: np.ndarray, fpr: float) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    mu, sigma = r[a].mean(), r[a].std()
    pos, neg = np.abs(t[b] - mu) / sigma, np.abs(r[b] - mu) / sigma
    auc = roc_auc_score(np.r_[np.ones(len(b)), np.zeros(len(b))], np.r_[pos, neg])
    return auc, (pos > np.quantile(neg, 1 - fpr, method="higher")).mean()


def test_retrain_attack_auc_matches_sklearn_and_the_split_depends_on_the_seed_only():
    rng = np.random.default_rng(2)
    a, b = split_halves(101, seed=5)
    assert len(a) == 50 and len(b) == 51 and sorted(np.concatenate([a, b]).tolist()) == list(range(101))
    assert np.array_equal(split_halves(101, seed=5)[1], b) and not np.array_equal(split_halves(101, seed=6)[1], b)
    for _ in range(3):  # any scores (ties included): the halves of split_halves(n, seed)
        r = np.round(rng.normal(0.0, 1.0, 101), 1)
        t = np.round(r + rng.normal(0.3, 0.5, 101), 1)
        out = retrain_attack(t, r, seed=5, fpr=0.1)
        auc, tpr = _manual_attack(t, r, a, b, 0.1)
        assert out["auc"] == pytest.approx(auc, abs=1e-12) and out["tpr_at_fpr"] == tpr and out["n"] == 51
        assert out == retrain_attack(t, r, seed=5, fpr=0.1)  # deterministic
    assert retrain_attack(t, r, seed=6) != retrain_attack(t, r, seed=5)


def test_retrain_attack_drops_non_finite_and_validates():
    r = np.random.default_rng(3).normal(0.0, 1.0, 10)
    t = r.copy()
    t[0], r[1] = np.nan, np.inf
    assert retrain_attack(t, r)["n"] == 4  # 8 finite pairs, half B has 4
    with pytest.raises(ValueError, match="same images"):
        retrain_attack(t, r[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        retrain_attack(t[:5], r[:5])  # 3 finite pairs
    with pytest.raises(ValueError, match="fpr"):
        retrain_attack(r, r, fpr=0.0)


# ---------------------------------------------------------------- SalUn's MIA-efficacy


def _reference_svc_fit_predict(shadow_train, shadow_test, target_test) -> float:
    """Transcription of Unlearn-Saliency/Classification/evaluation/SVC_MIA.py SVC_fit_predict (target_train empty)."""
    from sklearn.svm import SVC

    n_tr, n_te, n_tt = shadow_train.shape[0], shadow_test.shape[0], target_test.shape[0]
    x_shadow = torch.cat([shadow_train, shadow_test]).cpu().numpy().reshape(n_tr + n_te, -1)
    y_shadow = np.concatenate([np.ones(n_tr), np.zeros(n_te)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x_shadow, y_shadow)
    return float(np.mean([1 - clf.predict(target_test.cpu().numpy().reshape(n_tt, -1)).mean()]))


def test_mia_efficacy_salun_equals_the_reference():
    g = torch.Generator().manual_seed(0)
    member = (1 - 0.05 * torch.rand(300, 1, generator=g)).float()  # retain-train confidences [N, 1] like gather
    nonmember = torch.rand(120, 1, generator=g).float()
    forget = torch.rand(50, 1, generator=g).float() ** 0.3
    expected = _reference_svc_fit_predict(member[:120], nonmember, forget)  # Subset(retain, range(test_len))
    assert mia_efficacy_salun(member, nonmember, forget) == expected
    assert mia_efficacy_salun(member.numpy().ravel(), nonmember.numpy().ravel(), forget.numpy().ravel()) == expected
    seeded = mia_efficacy_salun(member, nonmember, forget, seed=1)
    assert seeded == mia_efficacy_salun(member, nonmember, forget, seed=1)
    assert 0.0 <= seeded <= 1.0


def test_mia_efficacy_salun_validates():
    with pytest.raises(ValueError, match="at least as many members"):
        mia_efficacy_salun(np.ones(5), np.zeros(6), np.ones(3))
    with pytest.raises(ValueError):
        mia_efficacy_salun(np.ones(5), np.zeros(0), np.ones(3))
    assert math.isnan(mia_efficacy_salun(np.ones(5), np.zeros(5), np.zeros(0)))


def test_mia_efficacy_salun_separates_forgotten_from_remembered():
    rng = np.random.default_rng(0)
    beta = lambda mean, sd, n: np.clip(rng.normal(mean, sd, n), 0.0, 1.0)  # noqa: E731
    member, nonmember = beta(0.98, 0.01, 400), beta(0.2, 0.05, 400)
    forgotten, remembered = beta(0.1, 0.02, 100), beta(0.99, 0.005, 100)
    assert mia_efficacy_salun(member, nonmember, forgotten) == pytest.approx(1.0, abs=0.02)
    assert mia_efficacy_salun(member, nonmember, remembered) == pytest.approx(0.0, abs=0.02)
    assert mia_efficacy_salun(torch.from_numpy(member), torch.from_numpy(nonmember).float(),
                              torch.from_numpy(forgotten)) == pytest.approx(1.0, abs=0.02)  # tensors work too
