"""The shared sidebar: checkpoint picker, model card and the forget set, mirrored in the URL.

``?ckpt=fmnist-cnn&forget=0,6`` reopens a view exactly; the page is the URL path.
"""

from __future__ import annotations

import streamlit as st

from wfexplain.checkpoint import CheckpointError
from wfexplain.data import DatasetError

from .resources import DEFAULT_CHECKPOINT, View, get_model, resolve, shipped_checkpoints

OTHER = "Other directory…"


def _parse_forget(raw: str, n: int) -> list[int]:
    out = []
    for part in raw.split(","):
        if part.strip().isdigit() and int(part) < n:
            out.append(int(part))
    return sorted(set(out))


def _init_from_url() -> None:
    if "_ckpt" in st.session_state:
        return
    q = st.query_params
    st.session_state["_ckpt"] = q.get("ckpt", DEFAULT_CHECKPOINT)
    st.session_state["_url_forget"] = q.get("forget", "")


def _pick_checkpoint() -> str:
    shipped = shipped_checkpoints()
    current = st.session_state["_ckpt"]
    options = [*shipped, OTHER]
    index = options.index(current) if current in shipped else len(shipped)
    choice = st.selectbox("Checkpoint", options, index=index, help="Shipped checkpoints, or any checkpoint directory")
    if choice == OTHER:
        typed = st.text_input("Checkpoint directory", value="" if current in shipped else current,
                              placeholder="/path/to/checkpoint", help="A directory written by `wfexplain train`")
        return typed.strip() or current
    return choice


def _model_card(view: View) -> None:
    m = view.model
    man = m.manifest
    acc = man.get("metrics", {}).get("original_accuracy")
    st.caption(
        f"**{m.backbone_name}** on **{m.info.name}** · {m.num_classes} classes · "
        f"{sum(s.size for s in m.sites):,} gated components in {len(m.sites)} layers"
        + (f" · test accuracy {acc:.1%}" if acc is not None else "")
    )


def render_sidebar() -> View:
    """Draw the sidebar and return the session's :class:`View` (also stored in session state)."""
    _init_from_url()
    with st.sidebar:
        wanted = _pick_checkpoint()
        try:
            model = get_model(str(resolve(wanted)))
            st.session_state["_ckpt"] = wanted
        except (CheckpointError, DatasetError, OSError, ValueError) as e:
            st.error(f"Could not load checkpoint `{wanted}`: {e}")
            previous = st.session_state.get("_view")
            if previous is None:  # nothing loaded yet: fall back to the default
                st.session_state["_ckpt"] = DEFAULT_CHECKPOINT
                if wanted == DEFAULT_CHECKPOINT:
                    st.stop()  # nothing else to fall back to: the error is the page
                try:
                    model = get_model(str(resolve(DEFAULT_CHECKPOINT)))
                except (CheckpointError, DatasetError, OSError, ValueError) as e2:
                    st.error(f"The default checkpoint `{DEFAULT_CHECKPOINT}` cannot be loaded either: {e2}")
                    st.stop()
                st.info(f"Showing `{DEFAULT_CHECKPOINT}` instead.")
                wanted = DEFAULT_CHECKPOINT
            else:
                st.info(f"Keeping `{previous.name}` loaded.")
                model, wanted = previous.model, previous.name
        names = list(model.class_names)
        if "_url_forget" in st.session_state:  # first run: the URL decides
            st.session_state["forget_classes"] = [names[c] for c in _parse_forget(st.session_state.pop("_url_forget"),
                                                                                   len(names))]
        kept = [c for c in st.session_state.get("forget_classes", []) if c in names]
        if kept != st.session_state.get("forget_classes"):  # only when needed: a write overrides the browser's
            st.session_state["forget_classes"] = kept  # value, and a click made during this run would be lost
        chosen = st.multiselect("Forget classes", names, key="forget_classes",
                                help="Any subset: the product of their filters is applied live")
        forget = tuple(sorted(names.index(c) for c in chosen))
        view = View(str(resolve(wanted)), wanted, model, forget)
        _model_card(view)
    st.session_state["_view"] = view
    st.query_params["ckpt"] = wanted
    if forget:
        st.query_params["forget"] = ",".join(map(str, forget))
    else:
        st.query_params.pop("forget", None)
    return view
