"""Removal (hard bake + prune + repair on retain data): what it removes, what it keeps, what it refuses."""

import pytest
import torch

from wfexplain.backbones import create_backbone
from wfexplain.engine import TrainConfig, UnlearnConfig, train_classifier, train_memory
from wfexplain.evaluation.metrics import in_set, retain_accuracy
from wfexplain.filtering import FilteredModel, bake
from wfexplain.removal import RemovalConfig, removal_masks, remove


@pytest.fixture(scope="module")
def unlearned(synthetic, tiny_info):
    torch.manual_seed(0)
    backbone = create_backbone("cnn", 5, 1, 16)
    train_classifier(backbone, synthetic(500, 0), TrainConfig(epochs=3, batch_size=50, shift=0.0))
    model = FilteredModel("cnn", tiny_info(), backbone)
    train_memory(model, synthetic(500, 2), UnlearnConfig(steps=200, batch_size=50, lr=5e-2))
    return model


def _accuracies(net, forget, test):
    x = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        pred = net(x).argmax(1)
    f = in_set(test.targets, forget)
    return (pred[f] == test.targets[f]).float().mean().item(), retain_accuracy(pred, test.targets, forget)


def test_removed_weights_stay_zero_and_the_rest_is_repaired(unlearned, synthetic):
    before = {k: v.clone() for k, v in unlearned.state_dict().items()}
    train = synthetic(500, 3)
    out = remove(unlearned, [1, 3], train, RemovalConfig(steps=60, lr=1e-3))
    net = out["model"]
    assert out["cancelled"] is False and out["steps"] == 60 and out["removed_weights"] > 0
    assert type(net) is type(unlearned.backbone) and net.state_dict().keys() == unlearned.backbone.state_dict().keys()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules()), "no hook survives"
    assert all(torch.equal(v, before[k]) for k, v in unlearned.state_dict().items()), "the filtered model is untouched"
    masks, params = out["masks"], dict(net.named_parameters())
    assert out["removed_weights"] == sum(int(m.sum()) for m in masks.values())
    assert all((params[n][m] == 0).all() for n, m in masks.items()), "removed weights stay exactly zero"
    hard = dict(bake(unlearned, [1, 3], hard_threshold=0.5).named_parameters())
    plain = dict(bake(unlearned, None).named_parameters())
    assert all(m[(hard[n] == 0) & (plain[n] != 0)].all() for n, m in masks.items()), "what the hard bake zeroed"
    probe = torch.randn(16, 1, 16, 16)
    pruned, probe_masks = removal_masks(unlearned, [1, 3], 0.5, probe)
    assert all((p[probe_masks[n]] == 0).all() for n, p in pruned.named_parameters())
    assert any(not torch.equal(params[n], p) for n, p in hard.items()), "the repair moved the rest"
    forget_acc, retain_acc = _accuracies(net, [1, 3], synthetic(300, 9))
    assert forget_acc < 0.05 and retain_acc > 0.9


def test_prune_only_and_cancel(unlearned, synthetic):
    train = synthetic(200, 4)
    out = remove(unlearned, 2, train, RemovalConfig(steps=0))
    assert out["steps"] == 0 and out["model"] is not None
    hard = dict(bake(unlearned, [2], hard_threshold=0.5).named_parameters())
    pruned = dict(out["model"].named_parameters())
    assert all(torch.equal(p[p != 0], hard[n][p != 0]) for n, p in pruned.items()), "pruning only zeroes weights"
    calls = []
    out = remove(unlearned, 2, train, RemovalConfig(steps=50), progress=lambda s, t, m: calls.append((s, t)),
                 should_stop=lambda: len(calls) >= 3)
    assert out["cancelled"] is True and out["model"] is None and out["steps"] == 3 and calls[-1] == (3, 50)


def test_bad_requests_are_refused(unlearned, synthetic):
    train = synthetic(100, 5)
    with pytest.raises(ValueError, match="no forget class"):
        remove(unlearned, [], train)
    with pytest.raises(ValueError, match="at least one class to keep"):
        remove(unlearned, [0, 1, 2, 3, 4], train)
    with pytest.raises(ValueError, match=r"valid classes are 0\.\.4"):
        remove(unlearned, [7], train)
    with pytest.raises(ValueError, match="not loaded from a checkpoint"):  # no training split to default to
        remove(unlearned, [1])
    with pytest.raises(ValueError, match="threshold must be"):
        RemovalConfig(threshold=0)
