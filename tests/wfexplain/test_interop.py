"""Interoperability: timm's model folders (local-dir, hf-hub from the cache only), baked models rebuilt from their file
alone, ONNX and torch.export of baked models, and torch.compile of a FilteredModel without graph breaks."""

import json
import threading

import pytest
import timm
import torch

import wfexplain
from wfexplain import bake
from wfexplain.backbones import BuildRefused, build_network, check_spec, resolve_spec
from wfexplain.export import baked_onnx, baked_safetensors, rebuild_baked
from wfexplain.filtering import FilteredModel
from wfexplain.importing import import_checkpoint

VIT = "vit_tiny_patch16_224"
VIT_ARGS = {"img_size": 16, "patch_size": 4, "embed_dim": 24, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def _randomize(model: FilteredModel, seed: int = 0) -> FilteredModel:
    torch.manual_seed(seed)
    with torch.no_grad():
        for a in model.alphas.values():
            a.uniform_(0, 1)
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A timm save_for_hf folder (config.json + model.safetensors) of a tiny ViT: 1 channel, 3 classes, 16 px."""
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    net = timm.create_model(VIT, pretrained=False, num_classes=3, in_chans=1, **VIT_ARGS).eval()
    path = tmp_path_factory.mktemp("hf") / "tiny-vit"
    save_for_hf(net, str(path), safe_serialization=True)
    return path, net


def _shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


# ---------------------------------------------------------------- timm:local-dir / timm:hf-hub


def test_specs_accept_timm_model_sources_and_refuse_malformed_ones():
    for spec in ("timm:local-dir:/models/my vit", "timm:hf-hub:org/name", "timm:hf-hub:org/name@v1.0"):
        assert check_spec(spec) == spec
    for spec in ("timm:hf-hub:no-slash", "timm:local-dir:/a\nb", "timm:hf-hub:org/name@"):
        with pytest.raises(ValueError, match="unknown architecture"):
            check_spec(spec)


def test_local_dir_builds_the_folders_architecture_without_reading_its_weights(folder, monkeypatch):
    path, net = folder
    (path / "pytorch_model.bin").write_bytes(b"not read")  # timm would torch.load it: wfexplain never does
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    spec = f"timm:local-dir:{path}"
    assert resolve_spec(spec, {"drop_rate": 0.1}) == (f"timm:{VIT}", {**VIT_ARGS, "img_size": [16, 16],
                                                                     "global_pool": "token", "drop_rate": 0.1})
    built = build_network(spec, 3, 1, 16, expect=_shapes(net))
    assert _shapes(built) == _shapes(net)
    with pytest.raises(BuildRefused):  # bounded by the weights like any spec
        build_network(spec, 3, 1, 16, {"depth": 12}, expect=_shapes(net))


@pytest.mark.parametrize("target", ["/etc", "/etc/passwd", "/nonexistent"])
def test_local_dir_refuses_paths_that_are_not_model_folders(target):
    with pytest.raises(ValueError, match=r"not a directory holding a config\.json"):
        build_network(f"timm:local-dir:{target}", 3, 1, 16)


@pytest.mark.parametrize(("config", "match"), [
    ({"architecture": VIT, "model_args": {"checkpoint_path": "/tmp/w.pth"}}, "may not set checkpoint_path"),
    ({"architecture": VIT, "model_args": {"pretrained_cfg_overlay": {"file": "/x"}}}, "may not set pretrained_cfg"),
    ({"architecture": "../../evil"}, "names no timm architecture"),
    ({"architecture": "no_such_model_xyz"}, "timm has no model"),
    ([1, 2], "not a JSON object"),
])
def test_a_folders_config_is_data_checked_like_arch_kwargs(tmp_path, config, match):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        build_network(f"timm:local-dir:{tmp_path}", 3, 1, 16)


def test_a_huge_or_broken_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_bytes(b"{" + b" " * (1 << 20) + b"}")
    with pytest.raises(ValueError, match="over 1,048,576 bytes"):
        build_network(f"timm:local-dir:{tmp_path}", 3, 1, 16)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as a JSON config"):
        build_network(f"timm:local-dir:{tmp_path}", 3, 1, 16)


def test_hf_hub_comes_from_the_local_cache_only(folder, tmp_path, monkeypatch):
    import huggingface_hub.constants

    path, net = folder
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=f"not in the local Hugging Face cache \\({tmp_path}"):
        build_network("timm:hf-hub:someone/tiny-vit", 3, 1, 16)
    repo = tmp_path / "models--someone--tiny-vit"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((path / name).read_bytes())
    assert _shapes(build_network("timm:hf-hub:someone/tiny-vit", 3, 1, 16, expect=_shapes(net))) == _shapes(net)


# ---------------------------------------------------------------- import of a Hugging Face-style folder


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_bar_folder):
    root = tmp_path_factory.mktemp("bars")
    make_bar_folder(root, n_train=2, n_test=4)
    return root


@pytest.mark.parametrize("how", ["weights", "arch"])
def test_import_takes_architecture_channels_and_preprocessing_from_the_folder(folder, data, tmp_path, how):
    path, net = folder
    arch, weights = (None, path) if how == "weights" else (f"timm:local-dir:{path}", None)
    result = import_checkpoint(arch, weights, "imagefolder", tmp_path / "ckpt", data_dir=data)
    assert result["preprocessing"]["sources"] == {"img_size": "arch_kwargs", "mean": "config.json", "std": "config.json"}
    assert any("interpolation=bicubic" in n for n in result["preprocessing"]["notes"])
    model = wfexplain.load(tmp_path / "ckpt")  # the checkpoint records timm:ARCH: the folder may go
    assert model.backbone_name == f"timm:{VIT}" and model.arch_kwargs["embed_dim"] == 24
    assert (model.info.in_chans, model.info.img_size, model.info.mean, model.info.std) == (1, 16, (0.5,), (0.5,))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- baked models: metadata, rebuild, ONNX, torch.export


@pytest.fixture(scope="module")
def timm_model(tiny_info):
    """A FilteredModel over a timm ViT with non-default constructor arguments."""
    torch.manual_seed(1)
    return _randomize(FilteredModel(f"timm:{VIT}", tiny_info(), arch_kwargs=VIT_ARGS))


@pytest.mark.parametrize("which", ["cnn", "timm"])
def test_a_baked_file_alone_rebuilds_the_network(which, timm_model, make_model):
    model = make_model("cnn") if which == "cnn" else timm_model
    data = baked_safetensors(model, [1, 3])
    rebuilt = rebuild_baked(data)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), bake(model, [1, 3]).eval()(x))
        torch.testing.assert_close(rebuilt(x), model(x, forget=[1, 3]), atol=1e-4, rtol=1e-4)


def test_rebuild_refuses_other_files_and_is_bounded_by_the_weights(timm_model):
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        rebuild_baked(b"garbage")
    data = baked_safetensors(timm_model, [0])
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    for change, error in (({"format": "other"}, ValueError), ({"arch_kwargs": json.dumps({**VIT_ARGS, "depth": 40})},
                                                              BuildRefused)):
        raw = json.dumps({**header, "__metadata__": {**header["__metadata__"], **change}}).encode()
        raw += b" " * (-len(raw) % 8)
        with pytest.raises(error):
            rebuild_baked(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cnn", "timm"])
def test_baked_onnx_matches_the_filtered_model(which, timm_model, make_model):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    model = make_model("cnn") if which == "cnn" else timm_model
    data = baked_onnx(model, [0, 2])
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["forget"]) == [0, 2] and meta["backbone"] == model.backbone_name
    x = torch.randn(5, 1, 16, 16)  # another batch size than the export's
    with torch.no_grad():
        expected = model(x, forget=[0, 2]).numpy()
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(proto).run(None, {"image": x.numpy()})[0]
    else:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"image": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-4, rtol=1e-4)


def test_baked_onnx_names_a_missing_package(monkeypatch, make_model):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"onnxscript.*wfexplain\[onnx\]"):
        baked_onnx(make_model("cnn"), [0])


def test_torch_export_of_a_baked_and_of_a_filtered_model(make_model):
    model = make_model("cnn")
    x, y = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    baked = torch.export.export(bake(model, [1]).eval(), (x,))
    torch.testing.assert_close(baked.module()(y), model(y, forget=[1]), atol=1e-4, rtol=1e-4)
    mask = torch.tensor([[True, False, False, True, False], [False] * 5])
    other = torch.tensor([[False, True, False, False, False], [True] * 5])
    program = torch.export.export(model, (x,), kwargs={"forget": mask})  # the forget set as a tensor input
    with torch.no_grad():
        assert torch.equal(program.module()(y, forget=other), model(y, forget=other))
    fixed = torch.export.export(model, (x,), kwargs={"forget": [2]})  # or fixed at export
    with torch.no_grad():
        assert torch.equal(fixed.module()(y, forget=[2]), model(y, forget=[2]))


# ---------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_filtered_model_compiles_without_graph_breaks(make_model):
    torch._dynamo.reset()
    model = make_model("cnn")
    x = torch.randn(4, 1, 16, 16)
    masks = [torch.rand(4, 5) < 0.4 for _ in range(4)]
    for forget in ([1, 3], masks[0], None):
        assert torch._dynamo.explain(model)(x, forget=forget).graph_break_count == 0
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = [model(x, forget=m) for m in masks]
    errors = []

    def work(i):  # one compiled model, many threads, each with its own forget sets
        try:
            for _ in range(5):
                with torch.no_grad():
                    torch.testing.assert_close(compiled(x, forget=masks[i]), expected[i], atol=1e-5, rtol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with torch.no_grad():
        compiled(x, forget=masks[0])  # compiled once, before the threads
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    torch._dynamo.reset()


@pytest.mark.slow
def test_the_cli_imports_a_folder_and_exports_onnx(folder, data, tmp_path, capsys):
    """`import --weights FOLDER` (no --arch) and `export --forget C --onnx`, as a user types them."""
    from wfexplain.cli import main

    path, _ = folder
    assert main(["import", "--weights", str(path), "--dataset", "imagefolder", "--data-dir", str(data),
                 "--out", str(tmp_path / "ck")]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "ex"), "--no-metrics",
                 "--formats", "svg", "--onnx"]) == 2  # a baked model needs its forget set
    assert main(["export", "--checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "ex"), "--no-metrics",
                 "--formats", "svg", "--forget", "1", "--onnx"]) == 0
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "ex" / "baked_forget_1.onnx")))
    assert main(["import", "--dataset", "imagefolder", "--out", str(tmp_path / "x")]) == 2
    assert "give --arch, --weights or both" in capsys.readouterr().err
