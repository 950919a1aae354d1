"""CSV for spreadsheets: every text cell made inert by the OWASP CSV-injection rule, numbers left as numbers.

Every CSV this project writes (memory matrices, metric tables, benchmark tables) goes through :func:`csv_safe`:
class names, layer names and labels are data (image folder names, manifests).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["FORMULA_STARTS", "csv_cell", "csv_safe"]

# OWASP "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): a spreadsheet runs a cell that
# starts with one of these as a formula (tab and carriage return included, as OWASP lists them).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """One CSV cell made inert for spreadsheets, by the OWASP CSV-injection rule.

    A string that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single
    quote (``=2+5`` -> ``'=2+5``), which spreadsheets show but never evaluate. Anything else is returned
    unchanged; numbers in particular (``-0.5`` stays a number), since only text can carry a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` ready for ``to_csv``: :func:`csv_cell` applied to every header and every text cell.

    Every CSV this project writes goes through it (class names, layer names and labels are data: image folder
    names, manifests). Numeric columns are not touched, so their values and dtypes are kept.
    """
    out = df.rename(columns=csv_cell)
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if not pd.api.types.is_numeric_dtype(col.dtype):
            out.isetitem(i, col.map(csv_cell, na_action="ignore"))
    return out
