import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from wfexplain.backbones import create_backbone
from wfexplain.baselines import (
    BASELINES,
    _common,
    default_config,
    finetune,
    l1_sparse,
    neggrad_plus,
    random_labels,
    run_baseline,
    salun,
    scrub,
    ssd,
)
from wfexplain.data import TensorImages
from wfexplain.engine import TrainConfig, train_classifier

FORGET = 0  # the class every test forgets
NAMES = ["finetune", "l1_sparse", "neggrad_plus", "random_labels", "salun", "scrub", "ssd"]  # registration order
# Tiny budgets: a few steps on 16x16 images keep every run well under a second.
TINY = {
    "finetune": finetune.Config(steps=20, batch_size=32, lr=0.1),
    "l1_sparse": l1_sparse.Config(steps=20, batch_size=32, lr=0.1, alpha=1e-3),
    "neggrad_plus": neggrad_plus.Config(steps=20, batch_size=32, forget_batch_size=16, lr=0.01, beta=0.9),
    "random_labels": random_labels.Config(steps=20, batch_size=32, forget_batch_size=16, lr=0.02),
    "salun": salun.Config(mask_batch_size=32, steps=20, batch_size=32, forget_batch_size=16, lr=0.02),
    # Unbounded KL ascent: two max steps at temperature 1 already move the forget set far from the teacher.
    "scrub": scrub.Config(steps=20, max_steps=2, max_every=2, batch_size=32, forget_batch_size=16, lr=0.1, temperature=1.0),
    # One forget class of three: imp_Df / imp_D stays near 3, so alpha must be below it.
    "ssd": ssd.Config(alpha=2.0, lambda_=1.0, batch_size=16, train_images=96),
}


@pytest.fixture(scope="module")
def bars(tiny_info):
    """``bars(n, seed)``: learnable toy images; class c has a bright bar at rows 2 + 5c .. 4 + 5c."""

    def make(n: int, seed: int) -> TensorImages:
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 3
        x = rng.integers(0, 80, (n, 16, 16), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, 2 + 5 * c: 5 + 5 * c] = 230
        return TensorImages(x, y, tiny_info(3))

    return make


@torch.no_grad()
def class_accuracy(net: torch.nn.Module, ds: TensorImages) -> torch.Tensor:
    net.eval()
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    ok = (net(x).argmax(1) == ds.targets).float()
    return torch.stack([ok[ds.targets == c].mean() for c in range(3)])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a loaded 2-core machine it makes them ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(one_thread, bars):
    torch.manual_seed(0)
    net = create_backbone("cnn", 3, 1, 16)
    train_classifier(net, bars(240, 0), TrainConfig(epochs=2, batch_size=32, shift=0.0))
    net.eval().requires_grad_(False)  # like wfexplain.load(...).backbone
    train, test = bars(240, 0), bars(90, 1)
    retain = Subset(train, torch.nonzero(train.targets != FORGET).flatten().tolist())
    forget = Subset(train, torch.nonzero(train.targets == FORGET).flatten().tolist())
    original = class_accuracy(net, test)
    assert original.min() > 0.9, original  # the toy classifier learned every class
    return net, retain, forget, test, original


def state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_forgets_and_leaves_the_input_untouched(setup, name):
    net, retain, forget, test, original = setup
    before = state(net)
    calls = []
    out = run_baseline(name, net, retain, forget, 3, TINY[name], seed=0, progress=lambda s, t, m: calls.append((s, t)))
    assert_same(state(net), before)
    assert all(not p.requires_grad for p in net.parameters())
    assert out["cancelled"] is False and out["steps"] > 0 and out["seconds"] >= 0
    model = out["model"]
    assert model is not net and not model.training
    assert all(not p.requires_grad for p in model.parameters())  # the input's flags come back
    after = class_accuracy(model, test)
    assert after[FORGET] < original[FORGET] - 0.3, (original, after)
    assert calls and calls[-1] == (out["steps"], out["steps"]) and [s for s, _ in calls] == list(range(1, out["steps"] + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(setup, name):
    net, retain, forget, *_ = setup
    rng = torch.get_rng_state()
    a = run_baseline(name, net, retain, forget, 3, TINY[name], seed=3)["model"]
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is left alone
    b = run_baseline(name, net, retain, forget, 3, TINY[name], seed=3)["model"]
    assert_same(state(a), state(b))
    if name != "ssd" or TINY[name].train_images < len(retain) + len(forget):
        c = run_baseline(name, net, retain, forget, 3, TINY[name], seed=4)["model"]
        assert any(not torch.equal(x, y) for x, y in zip(state(a).values(), state(c).values(), strict=True))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("after", [0, 3])
def test_should_stop_cancels(setup, name, after):
    net, retain, forget, *_ = setup
    before = state(net)
    calls = []
    out = run_baseline(name, net, retain, forget, 3, TINY[name], progress=lambda s, t, m: calls.append(s),
                       should_stop=lambda: len(calls) >= after)
    assert out["cancelled"] is True and out["model"] is None
    assert out["steps"] == after == len(calls)
    assert_same(state(net), before)


def test_registry():
    assert list(BASELINES) == NAMES
    for name in NAMES:
        cfg = default_config(name)
        assert isinstance(cfg, dict) and cfg == BASELINES[name].config().__dict__
    with pytest.raises(ValueError, match="unknown baseline 'retrain'") as err:
        run_baseline("retrain", torch.nn.Linear(2, 2), [], [], 2)
    for name in NAMES:
        assert name in str(err.value)
    with pytest.raises(TypeError):
        run_baseline("ssd", torch.nn.Linear(2, 2), [], [], 2, finetune.Config())


def test_config_validation():
    with pytest.raises(ValueError):
        finetune.Config(steps=0)
    with pytest.raises(ValueError):
        neggrad_plus.Config(beta=1.5)
    with pytest.raises(ValueError):
        salun.Config(mask_ratio=0.0)
    with pytest.raises(ValueError):
        ssd.Config(alpha=0)
    with pytest.raises(ValueError):
        scrub.Config(temperature=0.0)
    with pytest.raises(ValueError):
        l1_sparse.Config(alpha=-1e-4)


def test_every_grid_has_six_points_of_config_fields():
    for name, method in BASELINES.items():
        fields = set(method.default_config())
        points = method.grid_points()
        assert len(points) == 6 and len({tuple(p.items()) for p in points}) == 6, name
        for point in points:
            assert set(point) <= fields, (name, point)
            method.config(**point)  # every point is a valid config


def test_cfg_as_dict_overrides_defaults(setup):
    net, retain, forget, *_ = setup
    out = run_baseline("finetune", net, retain, forget, 3, {"steps": 2, "batch_size": 8})
    assert out["steps"] == 2


def test_wrong_labels_never_true():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(1000) % 4
    z = _common.wrong_labels(y, 4, g)
    assert not (z == y).any() and set(z.tolist()) == {0, 1, 2, 3}


def test_ssd_only_dampens_selected_parameters(setup):
    net, retain, forget, *_ = setup
    cfg = TINY["ssd"]
    out = ssd.unlearn(net, retain, forget, 3, cfg, seed=0)
    model = out["model"]
    probe = _common.trainable_copy(net)[0].eval()
    dev = torch.device("cpu")
    imp_f = ssd.importance(probe, forget, cfg.batch_size, dev)
    imp_d = ssd.importance(probe, ssd.training_subset(retain, forget, cfg.train_images, 0), cfg.batch_size, dev)
    old, new = dict(net.named_parameters()), dict(model.named_parameters())
    changed = 0
    for n in old:
        assert (new[n].abs() <= old[n].abs()).all(), n  # nothing grows
        assert (torch.sign(new[n]) * torch.sign(old[n]) >= 0).all(), n  # nor flips sign
        low = imp_f[n] <= cfg.alpha * imp_d[n]
        assert torch.equal(new[n][low], old[n][low]), n  # low forget importance: untouched
        expected = old[n] * (cfg.lambda_ * imp_d[n] / imp_f[n]).clamp(max=1)
        torch.testing.assert_close(new[n][~low], expected[~low])
        changed += int((new[n] != old[n]).sum())
    assert 0 < changed <= out["selected"] < sum(p.numel() for p in old.values())


def test_salun_updates_only_salient_weights(setup):
    net, retain, forget, *_ = setup
    cfg = TINY["salun"]
    out = salun.unlearn(net, retain, forget, 3, cfg, seed=0)
    old, new = dict(net.named_parameters()), dict(out["model"].named_parameters())
    total = sum(p.numel() for p in old.values())
    moved = sum(int((new[n] != old[n]).sum()) for n in old)
    assert 0.3 * total < moved <= round(cfg.mask_ratio * total)
    assert out["steps"] == out["mask_batches"] + out["train_steps"] == 3 + cfg.steps


def forget_kl(model: torch.nn.Module, teacher: torch.nn.Module, ds, temperature: float) -> float:
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        return float(scrub.distill_kl(model.eval()(x), teacher.eval()(x), temperature))


def test_scrub_schedule_interleaves_max_steps_early():
    plan = scrub.schedule(scrub.Config(steps=6, max_steps=2, max_every=2))
    assert plan == [True, False, False, True, False, False, False, False]
    assert scrub.schedule(scrub.Config(steps=3, max_steps=0)) == [False] * 3
    assert sum(scrub.schedule(scrub.Config(steps=5, max_steps=10, max_every=2))) == 3  # one per 2 min steps at most


def test_scrub_max_steps_push_the_forget_set_away_from_the_teacher(setup):
    net, retain, forget, *_ = setup
    cfg = TINY["scrub"]
    out = scrub.unlearn(net, retain, forget, 3, cfg, seed=0)
    assert (out["max_steps"], out["min_steps"]) == (2, 20) and out["steps"] == 22
    no_max = scrub.unlearn(net, retain, forget, 3, scrub.Config(**{**cfg.__dict__, "max_steps": 0}), seed=0)
    assert no_max["steps"] == no_max["min_steps"] == 20
    kl, kl_no_max = (forget_kl(o["model"], net, forget, cfg.temperature) for o in (out, no_max))
    assert kl > 10 * max(kl_no_max, 1e-3), (kl, kl_no_max)
    retain_kl = forget_kl(out["model"], net, retain, cfg.temperature)
    assert retain_kl < kl / 2, (retain_kl, kl)  # the min steps keep the retained classes near the teacher


def test_l1_sparse_is_finetuning_plus_a_decaying_l1_term(setup):
    net, retain, forget, *_ = setup
    cfg = TINY["l1_sparse"]
    plain = finetune.Config(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr)
    ft = finetune.unlearn(net, retain, forget, 3, plain, seed=0)["model"]
    zero = l1_sparse.unlearn(net, retain, forget, 3, l1_sparse.Config(**{**cfg.__dict__, "alpha": 0.0}), seed=0)["model"]
    assert_same(state(zero), state(ft))  # alpha = 0: exactly fine-tuning
    sparse = l1_sparse.unlearn(net, retain, forget, 3, cfg, seed=0)["model"]
    norms = [float(l1_sparse.l1_norm(m)) for m in (net, ft, sparse)]
    assert norms[2] < norms[1] - 0.01 * norms[0], norms
    assert [l1_sparse.l1_weight(l1_sparse.Config(steps=4, alpha=1.0), t) for t in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [l1_sparse.l1_weight(l1_sparse.Config(steps=4, alpha=1.0, no_l1_steps=2), t) for t in range(4)] == [1.0, 0.5, 0, 0]
