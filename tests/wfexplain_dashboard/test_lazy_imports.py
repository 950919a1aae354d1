"""Start-up of the dashboard: its router and first page import nothing heavy before something needs it (issue 16).

Each case runs in a fresh interpreter (``imported_after``, conftest.py), so what the test process has already
imported does not count.
"""

import ast

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow  # fresh interpreters

UI_HEAVY = ("captum", "matplotlib", "sklearn")  # what the dashboard's first page must not need
TIMEOUT = 600  # seconds: a fresh interpreter imports torch on a busy CPU


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


def test_forget_page_imports_no_captum_matplotlib_sklearn(imported_after):
    """The router and sidebar (``app.py``) and the default page (``views/forget.py``) need none of them."""
    app = page_imports("app.py")
    forget = page_imports("views/forget.py")
    assert "from wfexplain import figures" in forget and "getattr(figures, 'accuracy_bars', None)" in forget
    assert imported_after(f"{app}\n{forget}", UI_HEAVY) == []


def test_forget_page_runs_without_captum_matplotlib_sklearn(shipped_checkpoint, imported_after):
    """The app itself, headless (as test_app.py runs it): its first page, Forget, on the shipped fmnist-cnn."""
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
