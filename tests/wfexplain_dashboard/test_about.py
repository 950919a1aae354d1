"""The About page: what the tool is, the paper, and a first walk whose buttons set the forget set and open a page."""

import pytest

from tests import ROOT

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"

pytestmark = [pytest.mark.slow,  # AppTest runs of the whole app
              pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")]


def test_about_says_what_it_is_and_its_walk_sets_the_forget_set(open_app, assert_clean):
    at = open_app("views/about.py")
    assert_clean(at)
    text = " ".join(m.value for m in at.main.markdown)
    assert "memory matrix" in text and "arxiv.org/abs/2304.02049" in text
    labels = [b.label for b in at.main.button]
    assert len(labels) == 5 and labels[0] == "1. Forget one class: T-shirt/top"
    pair = labels[1].split(": ", 1)[1].split(" + ")
    assert len(pair) == 2 and all(p in at.session_state["_view"].model.class_names for p in pair)
    at.button(key="walk_pair").click().run()
    assert_clean(at)
    assert [t.value for t in at.title] == ["Forget"]
    assert sorted(at.session_state["forget_classes"]) == sorted(pair)
    assert at.query_params["forget"] == ",".join(str(at.session_state["_view"].model.class_names.index(p))
                                                 for p in sorted(pair, key=at.session_state["_view"].model.class_names.index))


def test_forget_page_links_to_about(open_app, assert_clean):
    at = open_app()
    assert_clean(at)
    assert any("first walk" in link.label for link in at.main.get("page_link"))
