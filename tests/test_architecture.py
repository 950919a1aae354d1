"""The layering rules of the codebase (docs/development.md), as tests."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "wfexplain"
MAX_LINES = 350

# Groups of the library, lowest first: a module may import only from its own rank or below.
RANKS = {
    0: {"data", "forget", "atomic", "construction", "heads", "integrity", "sites",
        "gates", "hooks", "distributed", "objectives", "latex", "hfdir"},
    1: {"backbones", "filtering", "engine", "manifest", "checkpoint", "upgrade", "shipped", "splits"},
    2: {"evaluation", "pipeline", "api", "importing", "baselines", "inference", "answers", "removal", "baked"},
    3: {"benchmark", "explain", "figures", "export"},
    4: {"cli", "__main__", "__init__"},
}
RANK = {group: rank for rank, groups in RANKS.items() for group in groups}


def group_of(path: Path) -> str:
    rel = path.relative_to(LIBRARY)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}
    return out


LIBRARY_FILES = sorted(p for p in LIBRARY.rglob("*.py"))


def test_library_files_are_not_too_long():
    long = {str(p.relative_to(ROOT)): n for p in LIBRARY_FILES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"library files over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(LIBRARY)))
def test_library_imports_point_down_and_never_to_the_dashboard(path):
    mine = RANK[group_of(path)]
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in ("streamlit", "wfexplain_dashboard"), f"{path.name} imports {module}"
        if top == "wfexplain" and module.count("."):
            other = module.split(".")[1]
            if other in RANK:
                assert RANK[other] <= mine, f"{path.relative_to(ROOT)} (rank {mine}) imports {module} (rank {RANK[other]})"


def test_every_library_module_has_a_rank():
    assert {group_of(p) for p in LIBRARY_FILES} <= set(RANK)


def test_the_compare_tables_do_not_pull_in_the_benchmark_runner():
    imports = imported_modules(LIBRARY / "benchmark" / "comparison.py")
    assert not {m for m in imports if m.startswith(("wfexplain.benchmark.runner", "wfexplain.benchmark.scoring",
                                                    "wfexplain.engine", "wfexplain.baselines"))}


def test_importing_the_library_never_imports_streamlit():
    code = ("import sys, pkgutil, importlib, wfexplain\n"
            "for m in pkgutil.walk_packages(wfexplain.__path__, 'wfexplain.'):\n"
            "    m.name.endswith('__main__') or importlib.import_module(m.name)\n"
            "assert 'streamlit' not in sys.modules, 'streamlit imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("path", sorted((ROOT / "wfexplain_dashboard" / "views").glob("*.py")), ids=lambda p: p.name)
def test_views_are_thin(path):
    """Pages draw: they never import torch (or the models' libraries) and never read the environment."""
    imports = {m.split(".")[0] for m in imported_modules(path)}
    assert not imports & {"torch", "torchvision", "timm", "captum", "os"}, f"{path.name} imports {imports}"


def test_no_pages_folder():
    """With a pages/ folder next to app.py, Streamlit serves deep links without the router (see app.py)."""
    assert not (ROOT / "pages").exists() and not (ROOT / "wfexplain_dashboard" / "pages").exists()


def test_dashboard_settings_are_the_only_reader_of_the_environment():
    for path in (ROOT / "wfexplain_dashboard").glob("*.py"):
        if path.name not in ("settings.py", "__main__.py"):  # the launcher passes the environment on to the server
            assert "os.environ" not in path.read_text(), f"{path.name} reads the environment itself"
