"""Start-up: nothing heavy is imported before something needs it (issue 16); the dashboard's pages:
tests/wfexplain_dashboard/test_lazy_imports.py.

Each case runs in a fresh interpreter (``imported_after``, conftest.py), so what the test process has already
imported does not count.
"""

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow  # fresh interpreters

CHECKPOINTS = ROOT / "checkpoints"
UI_HEAVY = ("captum", "matplotlib", "sklearn")  # what the dashboard's first page must not need


def load_and_run(name: str) -> str:
    """Import wfexplain, load a shipped checkpoint and run one forward pass, with and without a forget set."""
    return f"""
import torch
import wfexplain
model = wfexplain.load({str(CHECKPOINTS / name)!r})
x = torch.zeros(2, model.info.in_chans, model.info.img_size, model.info.img_size)
with torch.inference_mode():
    assert model(x).shape == (2, model.num_classes)
    assert model(x, forget=[0]).shape == (2, model.num_classes)
"""


def needs(name: str):
    return pytest.mark.skipif(not (CHECKPOINTS / name / "manifest.json").is_file(), reason=f"checkpoints/{name} is missing")


def test_import_wfexplain_is_light(imported_after):
    assert imported_after("import wfexplain") == []


def test_public_names_still_resolve(imported_after):
    code = "import wfexplain\nfor n in wfexplain.__all__: getattr(wfexplain, n)\nfrom wfexplain import *  # noqa: F403"
    assert imported_after(code) == []


def test_figures_package_loads_its_builders_on_first_use(imported_after):
    assert imported_after("import wfexplain.figures") == []
    assert imported_after("from wfexplain.figures import accuracy_bars", UI_HEAVY) == []
    assert "matplotlib" in imported_after("from wfexplain.figures import memory_figure", ("matplotlib",))


@needs("fmnist-cnn")
def test_cnn_checkpoint_loads_and_runs_without_heavy_imports(imported_after):
    assert imported_after(load_and_run("fmnist-cnn")) == []


@needs("fmnist-vit")
def test_vit_checkpoint_imports_timm_only(imported_after):
    mods = imported_after(load_and_run("fmnist-vit"))
    assert "timm" in mods
    assert not [m for m in mods if m.split(".")[0] in UI_HEAVY], mods


def test_backbones_import_their_library_when_built(imported_after):
    code = "from wfexplain import create_backbone\ncreate_backbone('resnet18', 10)"
    mods = imported_after(code, ("timm", "torchvision"))
    assert "torchvision" in mods and "timm" not in mods
