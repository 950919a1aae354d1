"""Class names are data: never live markdown on the dashboard (escape_markdown), on any page.

A folder named ``<a href=...>x</a>`` or ``[text](http://evil)`` must be shown as written: no live link in a
markdown caption, a radio label or a chart. Plotly, CSV and matplotlib: tests/wfexplain/test_hostile_names.py.
"""

import re

import pytest

from wfexplain_dashboard.text import escape_markdown

LINK_HTML = "<a href='http://evil.example'>x</a>"
LINK_MD = "[text](http://evil.example)"
HOSTILE = [LINK_HTML, LINK_MD, "=2+5", "-1+cmd|' /C calc'!A0", "**bold** _it_ `code` $x^2$", ":red[alert] :material/warning:",
           "![img](http://evil.example/x.png)", "<b>bold</b><br>&amp;", "@SUM(1+1)", "plain"]


# ---------------------------------------------------------------- markdown


@pytest.mark.parametrize("name", HOSTILE)
def test_escape_markdown_leaves_no_markdown_active(name):
    out = escape_markdown(name, 200)
    unescaped = re.sub(r"\\.", "", out)  # drop every backslash-escaped character
    assert not re.search(r"[\[\]()<>*_`$:!&|~\\]", unescaped), out  # links, images, tags, emphasis, code, math,
    assert re.sub(r"\\(.)", r"\1", out) == name  # directives, entities: all escaped; the text itself unchanged


@pytest.mark.parametrize("text", ["# heading", "1. item", "- item", "+ item", "= underline", "2) item"])
def test_escape_markdown_neutralises_block_openers_at_the_start(text):
    """An image caption starts with a class name: "# x" would be a heading, "1. x" a list."""
    assert escape_markdown(text) == text.replace(")", "\\)")  # inside a line these open nothing
    out = escape_markdown(text, line_start=True)
    assert out.startswith(text[0] if text[0].isdigit() else "\\") and "\\" in out[:3]
    assert re.sub(r"\\(.)", r"\1", out) == text


def test_escape_markdown_examples():
    assert escape_markdown(LINK_MD) == r"\[text\]\(http\://evil.example\)"
    assert escape_markdown(LINK_HTML, 200) == r"\<a href='http\://evil.example'\>x\</a\>"
    assert escape_markdown("$x$ *b* _i_ `c`") == r"\$x\$ \*b\* \_i\_ \`c\`"
    assert escape_markdown("T-shirt/top") == "T-shirt/top"
    assert escape_markdown("    indented\ncode", line_start=True) == "indented code"  # no code block, one line
    assert escape_markdown("-1") == "-1" and escape_markdown("-1", line_start=True) == "\\-1"


# ---------------------------------------------------------------- the pages, headless


UNESCAPED = re.compile(r"(?<!\\)(\]\(|<a|!\[|<b>|\*\*bold|:red\[)")
@pytest.mark.slow
def test_dashboard_pages_escape_hostile_class_names(hostile_checkpoint, monkeypatch, tmp_path, open_app, assert_clean):
    """A checkpoint whose class names (its image folders') are hostile: every page's markdown, captions, image
    captions, radio labels, metric values and plotly charts show them as text."""
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))

    def check(at):
        assert_clean(at)
        assert not at.error, [e.value for e in at.error]
        assert at.session_state["_view"].name == "user/evil"
        md = [e.value for kind in ("markdown", "caption", "warning", "info", "success", "subheader")
              for e in getattr(at, kind)]
        md += [o for r in at.radio for o in r.options] + [m.value for m in at.metric] + [m.label for m in at.metric]
        md += [img.caption for el in at.get("imgs") for img in el.proto.imgs]
        assert not [t for t in md if UNESCAPED.search(t)], [t for t in md if UNESCAPED.search(t)]
        charts = [el.proto.spec for el in at.get("plotly_chart")]
        assert not [c for c in charts if "<a" in c or "\\u003ca" in c.lower() or "<b>" in c]
        return md, charts

    at = open_app(ckpt="user/evil", forget="0,1")  # Forget: gallery captions, bars, confusion, Sankey
    md, charts = check(at)
    # classes 0 and 1 (sorted folder names) are forgotten: their gallery headings are escaped markdown
    assert r"**\!\[img\]\(http\:evil.example\)** — forgotten" in md and "**# heading** — forgotten" in md
    assert len(charts) == 3
    assert any("&lt;a href=" in c for c in charts)
    for page in ("views/memory.py", "views/explain.py", "views/models.py"):
        at.switch_page(page).run()
        md, charts = check(at)
    assert any(r"see \[docs\]\(http\://evil.example\)" in t for t in md)  # the Models page's backbone description
