"""Start-up: nothing heavy is imported before something needs it (issue 16).

Each case runs in a fresh interpreter, so what the test process has already imported does not count.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
HEAVY = ("captum", "matplotlib", "plotly", "scipy", "sklearn", "timm", "torchvision")
UI_HEAVY = ("captum", "matplotlib", "sklearn")  # what the dashboard's first page must not need
TIMEOUT = 600  # seconds: a fresh interpreter imports torch on a busy CPU


def imported_after(code: str, roots: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``roots`` that are in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(roots)!r})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def test_import_wfexplain_is_light():
    assert imported_after("import wfexplain") == []


def test_public_names_still_resolve():
    code = "import wfexplain\nfor n in wfexplain.__all__: getattr(wfexplain, n)\nfrom wfexplain import *  # noqa: F403"
    assert imported_after(code) == []


def test_figures_package_loads_its_builders_on_first_use():
    assert imported_after("import wfexplain.figures") == []
    assert imported_after("from wfexplain.figures import accuracy_bars", UI_HEAVY) == []
    assert "matplotlib" in imported_after("from wfexplain.figures import memory_figure", ("matplotlib",))


@needs("fmnist-cnn")
def test_cnn_checkpoint_loads_and_runs_without_heavy_imports():
    assert imported_after(load_and_run("fmnist-cnn")) == []


@needs("fmnist-vit")
def test_vit_checkpoint_imports_timm_only():
    mods = imported_after(load_and_run("fmnist-vit"))
    assert "timm" in mods
    assert not [m for m in mods if m.split(".")[0] in UI_HEAVY], mods


def test_backbones_import_their_library_when_built():
    code = "from wfexplain import create_backbone\ncreate_backbone('resnet18', 10)"
    mods = imported_after(code, ("timm", "torchvision"))
    assert "torchvision" in mods and "timm" not in mods


def page_imports(page: str) -> str:
    """Code importing what a page script imports, and touching every ``module.attribute`` it reads of those."""
    tree = ast.parse((ROOT / "wfexplain_dashboard" / page).read_text())
    lines, modules = ["import os", "os.environ.setdefault('WFEXPLAIN_EVAL_LIMIT', '500')"], set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            lines += [f"import {a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            lines.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
            modules |= {a.asname or a.name for a in node.names}
    used = {(n.value.id, n.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules}
    lines += [f"getattr({m}, {a!r}, None)" for m, a in sorted(used)]  # lazy attributes load here
    return "\n".join(lines)


def test_forget_page_imports_no_captum_matplotlib_sklearn():
    """The router and sidebar (``app.py``) and the default page (``views/forget.py``) need none of them."""
    app = page_imports("app.py")
    forget = page_imports("views/forget.py")
    assert "from wfexplain import figures" in forget and "getattr(figures, 'accuracy_bars', None)" in forget
    assert imported_after(f"{app}\n{forget}", UI_HEAVY) == []


@needs("fmnist-cnn")
def test_forget_page_runs_without_captum_matplotlib_sklearn():
    """The app itself, headless (as tests/test_app.py runs it): its first page, Forget, on the shipped fmnist-cnn."""
    code = f"""
import os
os.environ.setdefault("WFEXPLAIN_EVAL_LIMIT", "500")
os.environ["WFEXPLAIN_PRECOMPUTE"] = "1"  # the background thread must also stop cleanly at exit (rc 0)
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "wfexplain_dashboard" / "app.py")!r}, default_timeout={TIMEOUT})
at.run()
assert not at.exception, [e.value for e in at.exception]
assert [t.value for t in at.title] == ["Forget"], [t.value for t in at.title]
"""
    assert imported_after(code, UI_HEAVY) == []
