"""Text from data made safe to show: server paths replaced by public ids, Markdown escaped.

Class names, checkpoint and file names and messages quoting them are data: every page passes them
through :func:`escape_markdown` before any Markdown, and every message through :func:`public_text`.
"""

from __future__ import annotations

import re
from pathlib import Path

from .catalogue import _roots, checkpoint_catalogue

# Absolute (or ~) paths left in a message after the known ones are replaced by their ids.
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`<>|,;:()\[\]{}]+")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>!|~$:&])")  # what acts inside a line (# + - . only open one)
_BLOCK_OPENER = re.compile(r"[#+=-]|\d+\.")  # what acts at a line's start: heading, list item, setext underline


def public_text(text: str, known: dict[str, str] | None = None) -> str:
    """``text`` with server paths replaced: catalogue directories by their ids, any other absolute path by ``…``."""
    pairs = dict(known or {})
    for prefix, _, folder in _roots():
        for form in {str(folder), str(_real(folder))}:
            pairs.setdefault(form.rstrip("/") + "/", prefix)
    for ckpt_id, path in checkpoint_catalogue().items():
        pairs.setdefault(str(path), ckpt_id)
    for old in sorted(pairs, key=len, reverse=True):
        if len(old) > 1:
            text = text.replace(old, pairs[old])
    return _PATH.sub("…", text)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def public_manifest(manifest) -> dict:
    """A checkpoint's manifest as the dashboard shows it: every string passed through :func:`public_text`."""
    def clean(v):
        if isinstance(v, str):
            return public_text(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, list) else v

    return clean(manifest.to_json())


def escape_markdown(text: str, limit: int = 40, line_start: bool = False) -> str:
    """``text`` cut to ``limit`` characters, on one line and escaped: safe inside a line of Streamlit markdown.

    Data (class names, checkpoint and file names, messages quoting them) pass through it before any markdown
    (st.markdown, captions, image captions, alerts, radio labels, metric values): every character that links,
    formats or embeds inside a line (``[ ] ( ) < > ! * _ ` $ : & | ~ { } \\``) is backslash-escaped and line
    breaks become spaces. ``line_start``: the text begins the markdown (e.g. an image caption that is a class
    name), so a character that would open a block there (``#``, ``+``, ``-``, ``=``, ``1.``) is escaped too and
    leading spaces (an indented code block) are dropped. The text reads exactly as given.
    """
    cut = text if len(text) <= limit else text[:limit] + "…"
    out = _MARKDOWN.sub(r"\\\1", " ".join(cut.splitlines()))
    if line_start:
        out = out.lstrip()
        if m := _BLOCK_OPENER.match(out):
            out = out[: m.end() - 1] + "\\" + out[m.end() - 1 :]
    return out
