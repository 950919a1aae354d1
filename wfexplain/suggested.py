"""The commands the dashboard and error messages suggest, built once here so that each runs as printed.

A checkpoint (or data) directory is named by :func:`shown_path`: relative to the server's working directory when it
lies inside it (``checkpoints/fmnist-cnn`` runs from there), else by its name alone, so that a page never shows where
the server keeps its files. Every argument is quoted for a POSIX shell. tests/wfexplain/test_suggested.py runs each
command on a real checkpoint.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

PAIRS = TRIPLES = 5  # the combinations a suggested benchmark asks for (fewer when the classes have fewer)


def shown_path(directory: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``directory`` relative to ``cwd`` (default: the working directory) when inside it, else its name alone."""
    path, base = Path(directory).resolve(), Path(cwd or Path.cwd()).resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else path.name


def command(subcommand: str, checkpoint: str | os.PathLike, *args: str | int, data_dir: str | None = None) -> str:
    """``wfexplain SUBCOMMAND --checkpoint DIR ARGS... [--data-dir DIR]``, quoted; directories as :func:`shown_path`."""
    parts = ["wfexplain", subcommand, "--checkpoint", shown_path(checkpoint), *map(str, args)]
    if data_dir:
        parts += ["--data-dir", shown_path(data_dir)]
    return shlex.join(parts)


def _forget(forget: Sequence[int]) -> list[str]:
    return ["--forget", *map(str, sorted(forget))] if forget else []


def evaluate_sets(checkpoint, size: int, data_dir: str | None = None) -> str:
    """Evaluate forget sets of ``size`` classes and record the summary in the checkpoint's manifest."""
    return command("evaluate", checkpoint, "--sets", size, "--record", data_dir=data_dir)


def export(checkpoint, forget: Sequence[int], data_dir: str | None = None) -> str:
    """Export the figures, tables and (with a forget set) the baked model into ``export-NAME`` next to the command."""
    name = Path(checkpoint).name
    return command("export", checkpoint, "--out", f"export-{name}", *_forget(forget), data_dir=data_dir)


def remove(checkpoint, forget: Sequence[int], data_dir: str | None = None, steps: int | None = None,
           threshold: float | None = None) -> str:
    """Remove ``forget`` for good (a short training) into ``NAME-without-0-6.safetensors`` next to the command, with
    ``--steps``/``--threshold`` when given."""
    out = f"{Path(checkpoint).name}-without-{'-'.join(map(str, sorted(forget)))}.safetensors"
    extra = [*(["--steps", str(steps)] if steps is not None else []),
             *(["--threshold", f"{threshold:g}"] if threshold is not None else [])]
    return command("remove", checkpoint, *_forget(forget), "--out", out, *extra, data_dir=data_dir)


def benchmark(checkpoint, num_classes: int, tune: bool = True) -> str:
    """``wfexplain benchmark --checkpoint DIR --pairs 5 --triples 5``: as many pairs and triples as ``num_classes`` has
    (up to 5, none below), and ``--no-tune`` when the checkpoint has no validation split to tune on."""
    args: list[str | int] = []
    for flag, size, most in (("--pairs", 2, PAIRS), ("--triples", 3, TRIPLES)):
        if count := min(most, math.comb(max(num_classes, 0), size)):
            args += [flag, count]
    return command("benchmark", checkpoint, *args, *([] if tune else ["--no-tune"]))
