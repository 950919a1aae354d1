"""Command-line option types that validate up front: a bad value exits 2 naming the option, before any work.

Options of the recipes come from the config dataclasses of :mod:`wfexplain.configs` (each field's
default and its :func:`~wfexplain.configs.in_range` range), checked by the same
:func:`~wfexplain.configs.check_range` as the configs themselves, so the parser and the library can
never disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re

from ..configs import check_range, field_range

INF = math.inf


class UsageError(ValueError):
    """An option's value is invalid for this checkpoint or these other options (exit 2, option named)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")


def ranged(kind: type, lo: float = -INF, hi: float = INF, *, open_lo: bool = False, open_hi: bool = False):
    """An argparse ``type=`` that parses ``kind`` and checks the range (NaN and infinities refused)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        try:
            check_range("value", value, lo, hi, open_lo, open_hi, integer=kind is int)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value ")) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = ranged(int, 1)  # image counts, seeds, sizes: at least one
INDEX = ranged(int, 0)  # class indices, seeds, worker counts
FRACTION = ranged(float, 0, 1)  # thresholds


def add_config_args(p: argparse.ArgumentParser, cls) -> None:
    """One option per field of a config dataclass, with the field's own range."""
    for f in dataclasses.fields(cls):
        assert isinstance(f.type, str)  # the config modules postpone annotations: field types are their names
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
            continue
        kind = {"int": int, "float": float}[f.type]
        lo, hi, open_lo, open_hi = field_range(f) or (-INF, INF, False, False)
        p.add_argument(flag, type=ranged(kind, lo, hi, open_lo=open_lo, open_hi=open_hi), default=f.default,
                       help=f"(default: {f.default})")


def config_from(args, cls):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def at_least(option: str, value: int | None, minimum: int, why: str) -> None:
    """``value`` (None: not given) is at least ``minimum``, or a :class:`UsageError` saying ``why``."""
    if value is not None and value < minimum:
        raise UsageError(option, f"must be at least {minimum} ({why}), got {value}")


def json_object(text: str) -> dict:
    """An argparse ``type=`` for a JSON object (``--arch-kwargs``, ``--retrain-config``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def device(text: str) -> str:
    """An argparse ``type=`` for ``--device`` (whether that GPU exists is checked when the command runs: exit 1)."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]{1,3})?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text
