"""LaTeX tables for papers: a booktabs ``table`` that compiles cleanly in a one-column article.

:func:`table_latex` writes the metric tables of :mod:`wfexplain.export` (and any small
DataFrame); :func:`latex_escape` makes plain text (class names, captions) safe for pdflatex
with its default fonts. ``tests/wfexplain/test_latex.py`` compiles both with pdflatex.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np
import pandas as pd

# Short LaTeX headers of metrics_table's (and in_percent's) columns: table_latex puts "Accuracy (\%)" above them.
_LATEX_HEADERS = {"class": "Class", "original_accuracy": r"Original $\uparrow$", "forget_accuracy": r"Forget $\downarrow$",
                  "retain_accuracy": r"Retain $\uparrow$", "original_retain_accuracy": r"Orig.\ retain"}
_LATEX_HEADERS |= {f"{k}_pct": v for k, v in list(_LATEX_HEADERS.items()) if k != "class"}


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "[": "{[}", "]": "{]}",  # a cell starting with [ after \\ would be read as \\'s optional argument
}
# Letters of U+00A0..U+017F pdflatex's default fonts lack (TeX Live 2022), in ASCII; ą ę į ų lose the accent.
_SPELLED = {"«": "<<", "»": ">>", "Ð": "D", "Þ": "Th", "ð": "d", "þ": "th", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h",
            "ĸ": "k", "Ŀ": "L", "ŀ": "l", "Ŋ": "N", "ŋ": "n", "Ŧ": "T", "ŧ": "t", "ſ": "s", "ŉ": "'n"}
_WRAP_EM = 11  # a text column estimated wider than this wraps, ragged right, in a p{11em} column


def _latex_char(ch: str) -> str:
    if ch in _LATEX_SPECIAL or ch in _SPELLED:
        return _LATEX_SPECIAL.get(ch) or latex_escape(_SPELLED[ch])
    if ch.isascii():
        return ch if ch.isprintable() else " " if ch.isspace() else ""  # no blank line (\par) inside a cell
    if ("\xa0" <= ch < "\u0180" and ch not in "ĄąĘęĮįŲų") or ch in "–—‘’“”…•€†‡™":
        return ch  # UTF-8, which LaTeX's default utf8 input sets
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return latex_escape(base if base and base != ch else f"[U+{ord(ch):04X}]")


def latex_escape(text: str) -> str:
    """Plain text as LaTeX that pdflatex sets with its default fonts: ``\\ & % $ # _ { } ~ ^ < > | [ ]``
    escaped, control characters a space or nothing; letters LaTeX sets (``é ü ñ ł``) stay UTF-8, others lose
    the accent (``ą`` -> ``a``) or are spelled in ASCII (``þ`` -> ``th``); glyphs the default fonts lack
    (CJK, Greek, emoji, ...) become their code point (``[U+732B]``)."""
    return "".join(_latex_char(ch) for ch in str(text))


def _width_em(tex: str) -> float:  # a generous estimate of escaped text's width in Computer Modern
    plain = re.sub(r"[{}\\]", "", re.sub(r"\\[A-Za-z]+\{\}", "x", tex))
    return sum(1.05 if c in "MW" else 0.8 if c.isupper() or c in "mw%&" else 0.5 for c in plain)


def table_latex(df: pd.DataFrame, caption: str, label: str, float_format: str = "{:.3f}") -> bytes:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``) that fits a one-column article.

    Its own writer (pandas' needs jinja2): :func:`metrics_table` columns get short headers with their direction
    (up = higher is better) under one ``Accuracy`` (``Accuracy (\\%)`` for ``*_pct``); other headers, text cells
    and ``caption`` are escaped, ``label`` is not. Floats use ``float_format``, NaN prints ``--``. A text column
    with a cell too long for one line (a forget set's names) wraps, ragged right, at 11 em; nothing is scaled.
    ``\\midrule`` precedes a mean and a forget-set row.
    """
    cols = list(df.columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in cols]
    text = {c: [latex_escape(v) for v in df[c]] for c, num in zip(cols, numeric, strict=True) if not num}
    wrap = {c for c, cells in text.items() if max(map(_width_em, cells), default=0) > _WRAP_EM}

    def cell(value, c, i: int) -> str:
        if c in text:
            s = text[c][i]
            if c in wrap:  # snake_case names may break after an underscore
                return r"\raggedright " + s.replace(r"\_", r"\_\allowbreak{}")
            return "{}" + s if s[:1] == "*" else s  # \\* would be a command
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "--"
        return float_format.format(float(value)) if isinstance(value, float | np.floating) else str(value)

    spec = "".join(f"p{{{_WRAP_EM}em}}" if c in wrap else "l" if c in text else "r" for c in cols)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{@{}" + spec + "@{}}", r"\toprule"]
    group = [i for i, c in enumerate(cols) if c != "class" and str(c) in _LATEX_HEADERS]
    if group and group == list(range(group[0], group[-1] + 1)):  # one header over the accuracy columns
        unit = r" (\%)" if all(str(cols[i]).endswith("_pct") for i in group) else ""
        head = [""] * group[0] + [rf"\multicolumn{{{len(group)}}}{{c}}{{Accuracy{unit}}}"] + [""] * (len(cols) - group[-1] - 1)
        trim = "l" + ("r" if group[-1] < len(cols) - 1 else "")
        lines += [" & ".join(head) + r" \\", rf"\cmidrule({trim}){{{group[0] + 1}-{group[-1] + 1}}}"]
    lines += [" & ".join(_LATEX_HEADERS.get(str(c), latex_escape(c)) for c in cols) + r" \\", r"\midrule"]
    for i, (index, row) in enumerate(df.iterrows()):
        if str(row.get("class", "")) == "mean" or str(index) == "set":
            lines.append(r"\midrule")
        lines.append(" & ".join(cell(row[c], c, i) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines).encode("utf-8")
