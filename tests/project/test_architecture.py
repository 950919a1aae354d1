"""The layering rules of the codebase (docs/development.md), as tests."""

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests import ROOT

LIBRARY = ROOT / "wfexplain"
MAX_LINES = 350

# Groups of the library, lowest first: a module may import only from its own rank or below.
RANKS = {
    0: {"data", "forget", "atomic", "construction", "heads", "integrity", "sites", "layout",
        "gates", "hooks", "distributed", "objectives", "latex", "hfdir", "spreadsheet", "history", "configs", "methods",
        "_version", "suggested"},
    1: {"backbones", "filtering", "engine", "manifest", "checkpoint", "upgrade", "shipped", "splits"},
    2: {"evaluation", "pipeline", "api", "gate_coverage", "importing", "preprocessing",
        "baselines", "inference", "answers", "removal", "baked"},
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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in LIBRARY_FILES}


def load_time_imports(path: Path) -> set[str]:
    """The library modules ``path`` imports when it is loaded: every import outside a function or class body.

    ``from P import x`` counts as importing ``P.x`` when that is a module, else ``P`` (a name defined in
    ``P/__init__.py``); ``import P.x`` as ``P.x``. Packages Python loads implicitly on the way to a submodule
    are not counted (every module would then depend on ``wfexplain/__init__.py``). Imports under
    ``if TYPE_CHECKING:`` count: they are the same dependency for the reader and the type checker.
    """
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue  # run later, on first use: lazy imports are allowed to point anywhere allowed
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                out.update(f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names)
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in MODULES and m != module_name(path)}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_library_imports_form_no_cycle():
    """No import cycle among the library's modules, within a rank too: each module can be read (and loaded)
    after the ones it imports. Module-level imports only: an import inside a function runs on first use and
    is allowed to close a loop (the ranks still bound it); ``if TYPE_CHECKING:`` imports count."""
    graph = {name: load_time_imports(path) for name, path in MODULES.items()}
    cycles = import_cycles(graph)
    shown = ["; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in cycles]
    assert not cycles, f"import cycles: {shown}"


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_version_has_one_home():
    import wfexplain
    from wfexplain._version import __version__

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert wfexplain.__version__ is __version__ == pyproject["project"]["version"]
    assert not [p.name for p in LIBRARY_FILES if p.name != "_version.py" and "__version__ = " in p.read_text()]


def test_every_library_module_has_a_rank():
    assert {group_of(p) for p in LIBRARY_FILES} <= set(RANK)


def test_the_compare_tables_do_not_pull_in_the_benchmark_runner():
    imports = imported_modules(LIBRARY / "benchmark" / "comparison.py")
    assert not {m for m in imports if m.startswith(("wfexplain.benchmark.runner", "wfexplain.benchmark.scoring",
                                                    "wfexplain.engine", "wfexplain.baselines"))}


@pytest.mark.slow
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
        text = path.read_text()
        if path.name == "__init__.py":  # sets one thing before torch loads (settings imports torch); reads nothing
            text = text.replace('os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")', "")
        if path.name not in ("settings.py", "__main__.py"):  # the launcher passes the environment on to the server
            assert "os.environ" not in text, f"{path.name} reads the environment itself"


def test_every_download_leaves_the_page_alone():
    """A download button that reruns the page on click (Streamlit's default) redraws it while the file downloads, and
    a second click during that redraw lost the first download: every one passes ``on_click="ignore"``."""
    rerunning = []
    for path in sorted((ROOT / "wfexplain_dashboard").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "download_button":
                on_click = {k.arg: k.value for k in node.keywords}.get("on_click")
                if not (isinstance(on_click, ast.Constant) and on_click.value == "ignore"):
                    rerunning.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not rerunning, rerunning
