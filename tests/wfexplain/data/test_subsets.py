"""stratified_subset (seeded, class-stratified, exact size) and the dataset registry's names and arguments."""

import pytest
import torch

from wfexplain.data import list_datasets, load_dataset, stratified_subset

# ---------------------------------------------------------------- stratified_subset


def imbalanced_targets(counts, seed: int = 0) -> torch.Tensor:
    t = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    return t[torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))]


def test_stratified_subset_none_or_large_limit_takes_all():
    t = imbalanced_targets([30, 20, 10])
    assert torch.equal(stratified_subset(t, None), torch.arange(60))
    assert torch.equal(stratified_subset(t, 60), torch.arange(60))
    assert torch.equal(stratified_subset(t, 1000), torch.arange(60))


def check_subset(t: torch.Tensor, idx: torch.Tensor, limit: int) -> None:
    assert len(idx) == limit
    assert torch.equal(idx, idx.sort().values)
    assert len(idx.unique()) == limit
    assert int(idx.min()) >= 0 and int(idx.max()) < len(t)
    assert set(t[idx].tolist()) == set(t.tolist())  # every class present


def test_stratified_subset_imbalanced():
    counts = [700, 200, 60, 30, 10]
    t = imbalanced_targets(counts)
    idx = stratified_subset(t, 100, seed=0)
    check_subset(t, idx, 100)
    # Proportional shares, within one sample.
    got = torch.bincount(t[idx], minlength=5).tolist()
    for g, n in zip(got, counts, strict=True):
        assert abs(g - n * 100 / len(t)) <= 1, (got, counts)
    assert torch.equal(stratified_subset(t, 100, seed=0), idx)
    assert not torch.equal(stratified_subset(t, 100, seed=1), idx)


def test_stratified_subset_rare_classes_keep_exact_size():
    # Rare classes (quota < 1) get one sample each; the total must still be exactly ``limit``.
    counts = [500, 300, 150, 40, 6, 4]
    t = imbalanced_targets(counts, seed=1)
    for seed in (0, 1):
        idx = stratified_subset(t, 100, seed=seed)
        check_subset(t, idx, 100)
        assert torch.equal(stratified_subset(t, 100, seed=seed), idx)


# ---------------------------------------------------------------- registry and arguments


def test_list_datasets():
    assert list_datasets() == ["fashion-mnist", "mnist", "cifar10", "imagefolder"]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as e:
        load_dataset("svhn", "train")
    for name in list_datasets():
        assert name in str(e.value)


@pytest.mark.parametrize("name", ["mnist", "imagefolder", "svhn"])
def test_bad_split_raises(name):
    with pytest.raises(ValueError, match="split"):
        load_dataset(name, "val")
