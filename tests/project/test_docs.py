"""The docs derive from the registries: the benchmark's method and metric tables are the ones the code generates."""

import re

from tests import ROOT
from wfexplain.benchmark.catalogue import METRICS, markdown_tables
from wfexplain.methods import methods


def test_benchmark_docs_hold_the_registries_tables():
    text = (ROOT / "docs" / "benchmark.md").read_text()
    block = re.search(r"<!-- registry:begin -->\n(.*?)<!-- registry:end -->", text, re.S)
    assert block, "docs/benchmark.md lost its registry block"
    assert block.group(1) == markdown_tables(), "regenerate the block with wfexplain benchmark --list"


def test_every_registered_method_and_metric_is_documented_once():
    tables = markdown_tables()
    for key in [*methods(), *METRICS]:
        assert tables.count(f"| `{key}` (") == 1, key


def test_every_tuned_method_gets_the_same_budget():
    budgets = {k: len(m.grid_points()) for k, m in methods().items() if m.grid}
    assert set(budgets) == {k for k, m in methods().items() if m.role != "reference"}
    assert len(set(budgets.values())) == 1, budgets
