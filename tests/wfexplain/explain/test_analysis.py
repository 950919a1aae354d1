import copy

import numpy as np
import pytest
import torch

from wfexplain.explain import analysis as A

# 3 classes x 4 components: component 0 belongs to class 0, 1 to class 1, 2 to class 2,
# component 3 is shared but slightly more suppressed for class 0.
ALPHA = torch.tensor([
    [0.0, 1.0, 1.0, 0.4],
    [1.0, 0.2, 1.0, 0.5],
    [1.0, 1.0, 0.0, 0.5],
])
# spec[c,k] = (1 - alpha[c,k]) - mean_{c' != c} (1 - alpha[c',k]), by hand:
SPEC = torch.tensor([
    [1.0, -0.4, -0.5, 0.1],
    [-0.5, 0.8, -0.5, -0.05],
    [-0.5, -0.4, 1.0, -0.05],
], dtype=torch.float64)


def _hook_counts(model):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.backbone.named_modules()}


def test_suppression_and_specificity_by_hand():
    torch.testing.assert_close(A.suppression(ALPHA), 1 - ALPHA.double())
    torch.testing.assert_close(A.specificity(ALPHA), SPEC)


def test_specificity_matches_definition_on_random_matrix():
    alpha = torch.rand(5, 7, generator=torch.Generator().manual_seed(0))
    s = 1 - alpha.double()
    expected = torch.empty_like(s)
    for c in range(5):
        others = [o for o in range(5) if o != c]
        expected[c] = s[c] - s[others].mean(0)
    torch.testing.assert_close(A.specificity(alpha), expected)
    # numpy input and a live parameter (requires_grad) are accepted too
    torch.testing.assert_close(A.specificity(alpha.numpy()), expected)
    torch.testing.assert_close(A.specificity(torch.nn.Parameter(alpha)), expected)


def test_order_components_original_and_specificity():
    assert A.order_components(ALPHA, "original").tolist() == [0, 1, 2, 3]
    # class 0 group: comp 0 (spec 1.0), comp 3 (0.1); then class 1: comp 1; class 2: comp 2
    perm = A.order_components(ALPHA, "specificity")
    assert perm.dtype == torch.long
    assert perm.tolist() == [0, 3, 1, 2]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_order_components_clustered_groups_columns(metric):
    # components {0,3} are off for class 0, {1,4} for class 1, {2,5} for class 2
    alpha = torch.ones(3, 6)
    for k in range(6):
        alpha[k % 3, k] = 0.1 if k < 3 else 0.2
    perm = A.order_components(alpha, "clustered", metric=metric).tolist()
    assert sorted(perm) == list(range(6))
    pos = {k: i for i, k in enumerate(perm)}
    for a, b in [(0, 3), (1, 4), (2, 5)]:
        assert abs(pos[a] - pos[b]) == 1, perm


def test_order_components_unused_columns_and_errors():
    alpha = torch.ones(3, 5)  # no suppression at all: cosine distances must stay finite
    alpha[0, 2] = 0.0
    perm = A.order_components(alpha, "clustered")
    assert sorted(perm.tolist()) == list(range(5))
    with pytest.raises(ValueError, match=r"original.*specificity.*clustered"):
        A.order_components(ALPHA, "alphabetical")
    with pytest.raises(ValueError, match="cosine"):
        A.order_components(ALPHA, "clustered", metric="manhattan")


def test_class_similarity_by_hand():
    memory = {
        "a": torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        "b": torch.tensor([[0.0], [0.0], [1.0]]),
    }
    # s0 = [1,0,1], s1 = [0,1,1] -> cos = 1/2; s2 = 0 -> 0 with the others, 1 with itself
    expected = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(A.class_similarity(memory), expected)
    only_b = A.class_similarity(memory, layers=["b"])
    torch.testing.assert_close(only_b, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                                                    dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown layer 'c'"):
        A.class_similarity(memory, layers=["c"])


def test_all_ones_memory_gives_no_nan(make_model):
    model = make_model("cnn")
    with torch.no_grad():
        for a in model.alphas.values():
            a.fill_(1.0)
    sim = A.class_similarity(model)
    assert not torch.isnan(sim).any()
    torch.testing.assert_close(sim, torch.eye(5, dtype=torch.float64))
    dendro = A.class_dendrogram(sim)
    assert np.isfinite(dendro["linkage"]).all() and sorted(dendro["leaves"]) == list(range(5))
    for alpha in model.memory.values():
        assert not torch.isnan(A.specificity(alpha)).any()
        for mode in A.ORDER_MODES:
            assert sorted(A.order_components(alpha, mode).tolist()) == list(range(alpha.shape[1]))
    assert A.overall_sparsity(model) == [0.0] * 5


def test_class_dendrogram_groups_similar_classes():
    sim = torch.tensor([
        [1.0, 0.9, 0.1, 0.2],
        [0.9, 1.0, 0.2, 0.1],
        [0.1, 0.2, 1.0, 0.8],
        [0.2, 0.1, 0.8, 1.0],
    ])
    d = A.class_dendrogram(sim)
    assert d["linkage"].shape == (3, 4)
    assert d["linkage"][0, 2] == pytest.approx(0.1)  # first merge: classes 0 and 1 at 1 - 0.9
    pos = {c: i for i, c in enumerate(d["leaves"])}
    assert abs(pos[0] - pos[1]) == 1 and abs(pos[2] - pos[3]) == 1
    np.testing.assert_allclose(np.diag(d["distance"]), 0.0)


def test_sparsity_by_hand():
    memory = {"a": torch.tensor([[0.1, 0.6, 0.4, 0.5], [1.0, 1.0, 1.0, 1.0]]), "b": torch.tensor([[0.0], [0.2]])}
    assert A.sparsity(memory) == {"a": [0.5, 0.0], "b": [1.0, 1.0]}  # 0.5 is not < 0.5
    assert A.sparsity(memory, threshold=0.3)["a"] == [0.25, 0.0]
    # over all layers every component counts once: (2 + 1) / 5 and (0 + 1) / 5
    assert A.overall_sparsity(memory) == pytest.approx([0.6, 0.2])


def test_top_components_and_profile():
    memory = {"a": ALPHA, "b": torch.tensor([[0.5, 1.0], [1.0, 1.0], [1.0, 0.7]])}
    top = A.top_components(memory, 0, k=3)
    assert [(r["layer"], r["index"]) for r in top] == [("a", 0), ("b", 0), ("a", 3)]
    assert top[0]["alpha"] == pytest.approx(0.0) and top[0]["specificity"] == pytest.approx(1.0)
    assert top[1]["specificity"] == pytest.approx(0.5)
    assert set(top[0]) == {"layer", "index", "alpha", "specificity"}
    assert [(r["layer"], r["index"]) for r in A.top_components(memory, 2, k=2)] == [("a", 2), ("b", 1)]
    assert len(A.top_components(memory, 1, k=100)) == 6
    with pytest.raises(ValueError, match=r"valid classes are 0\.\.2"):
        A.top_components(memory, 3)
    assert A.component_profile(memory, "a", 3) == pytest.approx([0.4, 0.5, 0.5])
    with pytest.raises(ValueError, match="out of range"):
        A.component_profile(memory, "b", 2)


def test_top_activating_picks_crafted_images(make_model):
    model = make_model("cnn")
    with torch.no_grad():  # channel 3 of the first conv = mean of its 3x3 window; BN = identity
        model.backbone.features[0].weight[3] = 1.0 / 9
        bn = model.backbone.features[1]
        bn.running_mean[3], bn.running_var[3], bn.weight[3], bn.bias[3] = 0.0, 1.0 - bn.eps, 1.0, 0.0
    brightness = torch.tensor([0.1, 2.0, -1.0, 5.0, 0.5, 3.0])
    images = brightness.view(-1, 1, 1, 1).expand(-1, 1, 16, 16).clone()
    before = _hook_counts(model)
    state = copy.deepcopy(model.state_dict())
    assert A.top_activating(model, images, "features.1", 3, k=3) == [3, 5, 1]
    assert A.top_activating(model, images, "features.1", 3, k=50) == [3, 5, 1, 4, 0, 2]
    assert _hook_counts(model) == before, "no hook may be left on the model"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize(("backbone", "layer", "index"), [
    ("cnn", "fc", 7),
    ("cnn", "features.5", 2),
    ("vit", "blocks.1.attn.proj", 2),
    ("vit", "blocks.0.mlp.fc1", 5),
])
def test_component_activations_match_manual_hook(make_model, backbone, layer, index):
    model = make_model(backbone)
    images = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    site = next(s for s in model.sites if s.path == layer)
    ref = copy.deepcopy(model)
    module = dict(ref.backbone.named_modules())[layer]
    got = {}

    def keep(x):  # clone: the cnn's ReLU after a BN is in-place; return None: leave the output alone
        got.setdefault("x", x.clone())

    if site.kind == "heads":
        handle = module.register_forward_pre_hook(lambda m, i: keep(i[0]))
    else:
        handle = module.register_forward_hook(lambda m, i, o: keep(o))
    with torch.no_grad():
        ref(images)
    handle.remove()
    x = got["x"]
    if site.kind == "heads":
        h = site.head_dim
        expected = x[..., index * h : (index + 1) * h].norm(dim=-1).mean(1)
    elif site.kind == "features":
        expected = x[..., index].reshape(10, -1).mean(1)
    else:
        expected = x[:, index].mean((1, 2))
    before = _hook_counts(model)
    acts = A.component_activations(model, images, layer, index, batch_size=4)  # several batches
    torch.testing.assert_close(acts, expected, atol=1e-5, rtol=1e-5)
    assert A.top_activating(model, images, layer, index, k=4) == expected.topk(4).indices.tolist()
    assert _hook_counts(model) == before


def test_top_activating_errors_leave_no_hooks(make_model):
    model = make_model("cnn")
    before = _hook_counts(model)
    with pytest.raises(ValueError, match="unknown layer"):
        A.top_activating(model, torch.zeros(2, 1, 16, 16), "nope", 0)
    with pytest.raises(ValueError, match="out of range"):
        A.top_activating(model, torch.zeros(2, 1, 16, 16), "fc", 10_000)
    with pytest.raises(RuntimeError):  # wrong input size fails inside the forward pass
        A.top_activating(model, torch.zeros(2, 1, 24, 24), "fc", 0)
    assert _hook_counts(model) == before


def test_memory_summary(make_model):
    model = make_model("cnn")
    rows = A.memory_summary(model)
    assert [r["layer"] for r in rows] == [s.path for s in model.sites] + ["total"]
    params = sum(p.numel() for p in model.backbone.parameters())
    for r, s in zip(rows, model.sites, strict=False):
        assert (r["kind"], r["components"], r["memory_entries"]) == (s.kind, s.size, 5 * s.size)
    total = rows[-1]
    assert total["components"] == sum(s.size for s in model.sites)
    assert total["memory_entries"] == 5 * total["components"]
    assert total["percent_of_backbone"] == pytest.approx(100 * total["memory_entries"] / params)
