"""The shared sidebar: checkpoint picker, model card and the forget set, mirrored in the URL.

``?ckpt=fmnist-cnn&forget=0,6`` reopens a view exactly; the page is the URL path; ``?job=TOKEN`` (a job's link)
shows that job in the server's job list with its Cancel. ``ckpt`` is a
catalogue id (:func:`~wfexplain_dashboard.catalogue.checkpoint_catalogue`), never a path: anything else is
refused with one message that does not depend on the server's disk. Malformed ``forget`` entries are
dropped with a notice.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import streamlit as st

from wfexplain import forget as forget_sets

from .catalogue import checkpoint_catalogue
from .job_panel import TOKEN as JOB_TOKEN
from .job_panel import server_jobs
from .resources import View, get_model
from .settings import DEFAULT_CHECKPOINT, data_choices
from .text import escape_markdown, public_text

VIEWS = Path(__file__).resolve().parent / "views"
PICK = "checkpoint_pick"  # the picker's session-state key
FORGET_KEY = "forget_classes"  # the forget-set multiselect's session-state key (class names)
RECORDED = "as recorded in the checkpoint"
NOTICES = "_notices"  # session-state key: [kind, text, view] of each notice still shown
_ID_SHAPED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def parse_forget(raw: str, n: int) -> tuple[list[int], str | None]:
    """The class indices of a ``?forget=`` value (sorted, duplicates merged) and a notice naming what was dropped."""
    kept, dropped, cut = forget_sets.parse(raw, n)
    notes = []
    if cut and not kept and not dropped:
        notes.append(f"Ignored the link's forget list: {cut}.")
    if dropped:
        shown = ", ".join(f"“{escape_markdown(p, 12)}”" for p in dropped[:5])
        more = f" and {len(dropped) - 5:,} more" if len(dropped) > 5 else ""
        notes.append(f"Ignored in the link's forget list: {shown}{more} (class indices are 0 to {n - 1}).")
    if cut and (kept or dropped):
        notes.append(f"Of the link's forget list, {cut}.")
    return kept, " ".join(notes) or None


def refusal(requested: str, fallback: str, catalogue: dict | None = None) -> str:
    """The one message for a checkpoint that cannot be shown, whatever the reason (it reveals nothing of the disk)."""
    known = requested in (catalogue or {}) or _ID_SHAPED.fullmatch(requested[:200])
    what = f"Checkpoint “{escape_markdown(requested)}”" if known else "The requested checkpoint"
    return f"{what} is not available on this server; showing {escape_markdown(fallback)}."


def _notice(kind: str, text: str) -> None:
    """Keep a notice about the link or the view until the user changes the view (it outlives reruns: a page that
    draws itself twice, e.g. an estimate then all images, must not make it vanish); :func:`_show_notices` draws it."""
    notices = st.session_state.setdefault(NOTICES, [])
    if not any(n[:2] == [kind, text] for n in notices):  # a run that repeats itself does not pile them up
        notices.append([kind, text, None])


def _show_notices(view_key: tuple) -> None:
    """Draw the notices made for this view (new ones are adopted by it); drop those of a view the user left."""
    kept = [n for n in st.session_state.get(NOTICES, []) if n[2] in (None, view_key)]
    for n in kept:
        n[2] = view_key
        {"info": st.info, "warning": st.warning}[n[0]](n[1])
    st.session_state[NOTICES] = kept


def _init_from_url() -> None:
    if "_ckpt" in st.session_state:
        return
    q = st.query_params
    st.session_state["_ckpt"] = q.get("ckpt", DEFAULT_CHECKPOINT)
    st.session_state["_url_forget"] = q.get("forget", "")
    st.session_state[JOB_TOKEN] = q.get("job", "")[:64]  # a job's link: its Cancel, for this session only
    q.pop("job", None)  # not left in the address bar, where a shared view would hand it on


def _picker(catalogue: dict, value: str) -> None:
    """The checkpoint picker (catalogue ids only), showing ``value``; written only when it differs, so a click
    made during this run is not lost."""
    if st.session_state.get(PICK) != value:
        st.session_state[PICK] = value
    st.selectbox("Checkpoint", list(catalogue), key=PICK, help="The checkpoints this server offers")


def _try_load(ckpt_id: str, catalogue: dict):
    """The model of a catalogue id, or None after showing the error (server paths replaced by ids)."""
    path = catalogue[ckpt_id]
    try:
        return get_model(str(path))
    except Exception as e:  # any failure of a listed checkpoint is shown, never a traceback
        text = public_text(f"{type(e).__name__}: {e}", {str(path): ckpt_id})
        st.error(f"`{ckpt_id}` could not be loaded: {escape_markdown(text, 300)}")
        return None


def _pick_data() -> str | None:
    """The session's test-data directory: the checkpoint's recorded one, or one the server offers."""
    choices = data_choices()
    if not choices:
        return None
    options = [RECORDED, *choices]
    pick = st.selectbox("Test data", options, key="data_choice",
                        help="The checkpoint's recorded data directory, or one of those this server offers "
                             "(WFEXPLAIN_DATA_DIRS)")
    return None if pick == RECORDED else pick


def _model_card(view: View) -> None:
    m = view.model
    man = m.manifest
    acc = man.metrics.get("original_accuracy") if man else None
    st.caption(  # backbone and dataset names are manifest data: escaped
        f"**{escape_markdown(m.backbone_name, 60)}** on **{escape_markdown(m.info.name, 60)}** · {m.num_classes} classes · "
        f"{sum(s.size for s in m.sites):,} gated components in {len(m.sites)} layers"
        + (f" · test accuracy {acc:.1%} (the full test split, recorded when trained)" if acc is not None else "")
    )


def _fallback(previous: View | None, not_this: str, catalogue: dict) -> str | None:
    """What to show instead of ``not_this``: the session's previous checkpoint, else the default, else any."""
    for ckpt_id in (previous.name if previous is not None else None, DEFAULT_CHECKPOINT, *catalogue):
        if ckpt_id in catalogue and ckpt_id != not_this:
            return ckpt_id
    return None


def _choose_model(catalogue: dict) -> tuple[str, object]:
    """The checkpoint id to show and its model: the request if it loads, else a fallback (with the refusal)."""
    previous: View | None = st.session_state.get("_view")
    requested = st.session_state.get(PICK, st.session_state["_ckpt"])  # the picker once drawn, else the URL
    if requested not in catalogue:  # from the URL, or gone from the disk since
        fallback = _fallback(previous, requested, catalogue)
        _notice("warning", refusal(requested, fallback, catalogue))
        requested = fallback
    model = _try_load(requested, catalogue)
    if model is None:
        fallback = _fallback(previous, requested, catalogue)
        if fallback is not None:
            _notice("warning", refusal(requested, fallback, catalogue))
            model = previous.model if previous is not None and previous.name == fallback else (
                _try_load(fallback, catalogue))
        if model is None:  # nothing else loads: the errors and the picker are the page
            _show_notices((requested, ()))
            _picker(catalogue, requested)
            st.stop()
        requested = fallback
    _picker(catalogue, requested)
    return requested, model


def app_pages() -> list:
    """The dashboard's pages for ``st.navigation``, in menu order; Forget is served at ``/`` and at ``/forget``.

    Streamlit serves the default page at the root only: its ``url_path`` is ``""`` and a URL resolves by
    comparing its path with each page's ``url_path`` (``PagesManager._resolve_page_script``), so ``/forget``
    matched no page and opened the "Page not found" dialog. A default page's own ``url_path`` cannot be reused
    either (a page's identity is the hash of it, and two equal ones are refused). Hence two entries for
    ``views/forget.py``: the default, shown in the menu (its internal ``url_path`` "home" is never a URL),
    and a hidden one at ``forget`` that the link ``/forget`` opens.
    """

    def page(file: str, title: str, icon: str, url_path: str, **kw):
        return st.Page(VIEWS / file, title=title, icon=f":material/{icon}:", url_path=url_path, **kw)

    return [
        page("about.py", "About", "info", "about"),
        page("models.py", "Models", "model_training", "models"),
        page("forget.py", "Forget", "visibility_off", "home", default=True),
        page("memory.py", "Memory matrices", "grid_on", "memory"),
        page("explain.py", "Explain", "image_search", "explain"),
        page("compare.py", "Compare", "compare_arrows", "compare"),
        page("export.py", "Export", "download", "export"),
        page("forget.py", "Forget", "visibility_off", "forget", visibility="hidden"),
    ]


def page_at(url_path: str):
    """The page of :func:`app_pages` served at ``url_path``, for ``st.switch_page`` and ``st.page_link``."""
    return next(p for p in app_pages() if p.url_path == url_path)  # "forget": the hidden entry, served at /forget


def unknown_page(requested: str | None, known: list[str]) -> str | None:
    """The page name a URL asked for when no page has it (Streamlit then runs the default page silently)."""
    return requested if requested and requested.strip("/") not in known else None


def page_notice(pages: list, shown) -> None:
    """A visible notice when the URL named a page that does not exist (``/nosuchpage``)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    requested = ctx.pages_manager.intended_page_name if ctx is not None else None
    if (name := unknown_page(requested, [p.url_path for p in pages])) is not None:
        st.info(f"There is no page “{escape_markdown(name)}”; showing {shown.title}. Pages: "
                + ", ".join(p.title for p in pages if p.visibility != "hidden") + ".")


def share_link(view: View, page_path: str = "") -> str:
    """A link that reopens this session's view, built from its state (not from the address bar, which can lag)."""
    query = "ckpt=" + quote(view.name, safe="/") + ("&forget=" + forget_sets.to_text(view.forget) if view.forget else "")
    page = st.context.url or f"/{page_path}"  # the page's own URL in the browser (None when run headless)
    return f"{page}{'' if urlsplit(page).path else '/'}?{query}"  # the root page's URL comes without its "/"


def render_sidebar(page_path: str = "") -> View:
    """Draw the sidebar and return the session's :class:`View` (also stored in session state)."""
    _init_from_url()
    with st.sidebar:
        catalogue = checkpoint_catalogue()
        if not catalogue:
            st.error("No checkpoints are available on this server.")
            st.stop()
        wanted, model = _choose_model(catalogue)
        st.session_state["_ckpt"] = wanted
        names = list(model.class_names)
        if "_url_forget" in st.session_state:  # first run: the URL decides
            forget_url, notice = parse_forget(st.session_state.pop("_url_forget"), len(names))
            st.session_state[FORGET_KEY] = [names[c] for c in forget_url]
            if notice:
                _notice("info", notice)
        previous = st.session_state.get(FORGET_KEY, [])
        kept = [c for c in previous if c in names]
        if kept != previous:  # only when needed: a write overrides the browser's value, and a click made during
            st.session_state[FORGET_KEY] = kept  # this run would be lost
            gone = ", ".join(escape_markdown(c) for c in previous if c not in names)
            _notice("info", f"{gone}: not {'a class' if len(previous) - len(kept) == 1 else 'classes'} of "
                            f"`{wanted}`, so no longer in the forget set.")
        chosen = st.multiselect("Forget classes", names, key=FORGET_KEY,
                                help="Any subset is applied live (the product of their filters); the Forget page "
                                     "says how well sets of that size were trained and measured")
        forget = tuple(sorted(names.index(c) for c in chosen))
        view = View(str(catalogue[wanted]), wanted, model, forget, _pick_data())
        _show_notices((wanted, forget))
        _model_card(view)
        server_jobs()
        with st.expander("Share this view"):
            st.code(share_link(view, page_path), language=None, wrap_lines=True)
            st.caption("Built from this session's checkpoint, forget set and page; copy it with the button.")
    st.session_state["_view"] = view
    st.query_params["ckpt"] = wanted
    if forget:
        st.query_params["forget"] = forget_sets.to_text(forget)
    else:
        st.query_params.pop("forget", None)
    return view
