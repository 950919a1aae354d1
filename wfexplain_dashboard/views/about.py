"""About: what weight filtering is, the paper and the docs, and a first walk through the pages."""

import streamlit as st

from wfexplain.explain import analysis
from wfexplain_dashboard.resources import current
from wfexplain_dashboard.sidebar import FORGET_KEY, page_at
from wfexplain_dashboard.text import escape_markdown

PAPER = "https://arxiv.org/abs/2304.02049"

view = current()
model = view.model
names = list(model.class_names)
st.title("About wfexplain")
st.markdown(
    "**wfexplain makes an image classifier forget any chosen classes, live, and shows which weights carry each "
    "class.** One training round learns a *memory matrix* per layer: for every class, a gate on each component "
    "(channel, unit, attention head) of the frozen network, so that multiplying the rows of the classes to forget "
    "switches off what they need and keeps what the others need. Forgetting is then a toggle, for any class or "
    "combination, and the memories themselves are a map of where each class lives in the network.")
st.markdown(f"The method: Poppi et al., *Multi-Class Unlearning for Image Classification via Weight Filtering*, "
            f"[arXiv 2304.02049]({PAPER}). The documentation (method, benchmark, formats, dashboard) is in the "
            "`docs/` folder of the source tree; `wfexplain --help` lists the command line.")


def _step(label: str, help_text: str, url_path: str, forget: list[int] | None, key: str) -> None:
    """A button that sets the sidebar's forget set (when given) and opens a page."""
    def choose() -> None:
        if forget is not None:
            st.session_state[FORGET_KEY] = [names[c] for c in forget]

    if st.button(label, help=help_text, key=key, on_click=choose):
        st.switch_page(page_at(url_path))


st.subheader("A first walk")
first = 0
pair = analysis.most_alike(model)  # the pair whose filters switch off the most alike components
named = lambda cs: " + ".join(escape_markdown(names[c], 40) for c in cs)  # noqa: E731 (class names are data)
_step(f"1. Forget one class: {named([first])}", "The Forget page: accuracy per class before and after, and where "
      "the forgotten class's images now go.", "forget", [first], "walk_one")
_step(f"2. Forget the two classes the memories find most alike: {named(pair)}", "Any combination is one toggle: "
      "the product of the classes' filters, no retraining.", "forget", list(pair), "walk_pair")
_step("3. See which components that pair switches off", "The Memory page: each layer's memory matrix, the "
      "classes' suppression and how alike their filters are.", "memory", list(pair), "walk_memory")
_step("4. Explain an image, or upload your own", "Captum attributions before and after forgetting, and a warning "
      "when an upload looks unlike the training data.", "explain", None, "walk_explain")
_step("5. Compare with retraining and other unlearning methods", "The benchmark: Retrain, weight filtering and "
      "the baselines, tuned alike, on forgetting, utility, privacy and cost.", "compare", None, "walk_compare")
st.caption("The sidebar holds the checkpoint and the forget set on every page; the address bar keeps them, so a "
           "view can be shared as a link.")
