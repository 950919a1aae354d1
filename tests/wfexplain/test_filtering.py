import threading

import pytest
import torch

from wfexplain import bake
from wfexplain.backbones import list_backbones

BACKBONES = ["cnn", "resnet18", "vit"]


def test_registry_lists_all():
    assert set(BACKBONES) <= set(list_backbones())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("forget", [[1], [0, 3], [1, 2, 4]])
def test_gated_equals_baked(make_model, backbone, forget):
    model = make_model(backbone)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        gated = model(x, forget=forget)
        plain = model(x)
        baked = bake(model, forget)(x)
    assert not torch.allclose(gated, plain, atol=1e-3), "the filter must change the output"
    torch.testing.assert_close(baked, gated, atol=1e-4, rtol=1e-4)
    # The original module is untouched and the baked one is a plain module.
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    baked_model = bake(model, forget)
    for m in baked_model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not hasattr(m, "parametrizations")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_per_sample_sets_equal_separate_calls(make_model, backbone):
    model = make_model(backbone)
    x = torch.randn(3, 1, 16, 16)
    sets = [[0], [2, 4], []]
    mask = torch.zeros(3, 5, dtype=torch.bool)
    for i, s in enumerate(sets):
        mask[i, s] = True
    with torch.no_grad():
        batched = model(x, forget=mask)
        for i, s in enumerate(sets):
            torch.testing.assert_close(batched[i : i + 1], model(x[i : i + 1], forget=s or None), atol=1e-5, rtol=1e-5)


def test_forget_sets_compose_by_product(make_model):
    model = make_model("cnn")
    pair = model.combined_gates([1, 3])
    for path, alpha in model.memory.items():
        torch.testing.assert_close(pair[path], (alpha[1] * alpha[3]).detach())


def test_ones_memory_is_the_original_network(make_model):
    model = make_model("vit")
    with torch.no_grad():
        for a in model.alphas.values():
            a.fill_(1.0)
        x = torch.randn(2, 1, 16, 16)
        torch.testing.assert_close(model(x, forget=[0, 1]), model(x))


def test_forget_accepts_int_list_tensor(make_model):
    model = make_model("cnn")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a = model(x, forget=2)
        torch.testing.assert_close(a, model(x, forget=[2]))
        torch.testing.assert_close(a, model(x, forget=torch.tensor(2)))
        torch.testing.assert_close(a, model(x, forget=torch.tensor([[False, False, True, False, False]])))


@pytest.mark.parametrize("bad", [5, -1, [0, 7]])
def test_out_of_range_class_names_valid_range(make_model, bad):
    model = make_model("cnn")
    with pytest.raises(ValueError, match=r"valid classes are 0\.\.4"):
        model(torch.randn(1, 1, 16, 16), forget=bad)


def test_hard_bake_zeroes_components_below_threshold(make_model):
    model = make_model("cnn")
    baked = bake(model, [1], hard_threshold=0.5)
    gates = model.combined_gates([1])
    bn = dict(baked.named_modules())[model.sites[0].path]
    orig = dict(model.backbone.named_modules())[model.sites[0].path]
    g = gates[model.sites[0].path]
    assert torch.all(bn.weight[g < 0.5] == 0) and torch.all(bn.bias[g < 0.5] == 0)
    torch.testing.assert_close(bn.weight[g >= 0.5], orig.weight[g >= 0.5] * g[g >= 0.5])


@pytest.mark.parametrize(("backbone", "head"), [("cnn", "head"), ("resnet18", "fc"), ("vit", "head")])
def test_head_is_never_gated(make_model, backbone, head):
    model = make_model(backbone)
    assert isinstance(dict(model.backbone.named_modules())[head], torch.nn.Linear)
    assert head not in {s.path for s in model.sites}


def test_threads_share_one_model(make_model):
    model = make_model("cnn")
    x = torch.randn(8, 1, 16, 16)
    sets = [None, [0], [1], [2, 3], [4], [0, 4], [1, 2, 3], [3]]
    with torch.no_grad():
        expected = [model(x, forget=s) for s in sets]
    results, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            with torch.no_grad():
                for _ in range(20):
                    out = model(x, forget=sets[i])
                    if not torch.equal(out, expected[i]):
                        raise AssertionError(f"thread {i} saw another thread's forget set")
            results[i] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r, e in zip(results, expected, strict=True):
        assert torch.equal(r, e)


@pytest.mark.parametrize("num_classes", [33, 1000])  # past DENSE_UP_TO: the gathered product
def test_gates_from_each_samples_members_equal_the_dense_product(make_model, num_classes):
    """The gate product gathered from each sample's set members (never [B, N, K]) is the dense product of the method,
    ``prod_c (1 - m_c (1 - alpha_c))``, in value and in gradient, with sets of different sizes and an empty one."""
    from wfexplain.objectives import sample_forget_sets

    model = make_model("cnn", num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.rand(a.shape, generator=g))
    y = torch.randint(num_classes, (32,), generator=g)
    mask = torch.cat([sample_forget_sets(y[:16], num_classes, 3, True, g),
                      sample_forget_sets(y[16:], num_classes, 3, False, g)]).float()
    mask[5] = 0  # a sample with nothing forgotten: all ones
    fast = model.gates(mask)
    total = sum(v.sum() for v in fast.values())
    total.backward()
    grads = {k: a.grad.clone() for k, a in model.alphas.items()}
    model.zero_grad()
    alphas = {s.path: model.alphas[s.path.replace(".", "__")] for s in model.sites}
    dense = {p: (1 - mask[:, :, None] * (1 - a[None])).prod(dim=1) for p, a in alphas.items()}
    sum(v.sum() for v in dense.values()).backward()
    for p, v in dense.items():
        torch.testing.assert_close(fast[p], v, rtol=1e-6, atol=1e-7)
        assert torch.equal(fast[p][5], torch.ones_like(v[5]))
    for k, a in model.alphas.items():
        torch.testing.assert_close(grads[k], a.grad, rtol=1e-5, atol=1e-7)
