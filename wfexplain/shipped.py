"""The shipped checkpoints, found in a checkout and in an install, and copied out of either (``wfexplain fetch-demo``).

A checkout holds them in ``checkpoints/`` beside the package; a wheel installs them as the data-only
package ``wfexplain_checkpoints`` (model, memory, manifest and benchmark tables of each; the Retrain
oracles stay in the repository). Nothing is downloaded: both are local files.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .atomic import replace_dir
from .checkpoint import is_checkpoint, load

__all__ = ["SHIPPED_ENV", "fetch_demo", "shipped_checkpoints", "shipped_dir"]

SHIPPED_ENV = "WFEXPLAIN_SHIPPED_CHECKPOINTS"


def shipped_dir() -> Path | None:
    """``$WFEXPLAIN_SHIPPED_CHECKPOINTS``, else a checkout's ``checkpoints/``, else the installed
    ``wfexplain_checkpoints`` package; None when there are none."""
    if os.environ.get(SHIPPED_ENV):
        return Path(os.environ[SHIPPED_ENV]).expanduser()
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "checkpoints").is_dir():  # a checkout
        return root / "checkpoints"
    spec = importlib.util.find_spec("wfexplain_checkpoints")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def shipped_checkpoints() -> dict[str, Path]:
    """Name -> directory of every shipped checkpoint (empty when none is installed)."""
    root = shipped_dir()
    if root is None or not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_checkpoint(p)}


def fetch_demo(out: str | os.PathLike, names: Sequence[str] = (), overwrite: bool = False) -> list[Path]:
    """Copy shipped checkpoints (all, or ``names``) into ``out/<name>``: each written whole (the checkpoint
    lock, a sibling directory swapped in), loaded back first, refused if it exists unless ``overwrite``.

    Raises:
        ValueError: a name that is not shipped (the shipped ones named); FileExistsError: a target exists.
    """
    shipped = shipped_checkpoints()
    unknown = [n for n in names if n not in shipped]
    if unknown or not shipped:
        have = ", ".join(shipped) or "none (install wfexplain with its checkpoints, or use a checkout)"
        raise ValueError(f"no shipped checkpoint {', '.join(unknown)}; shipped: {have}" if unknown else
                         f"no shipped checkpoints found; shipped: {have}")
    written = []
    for name in names or list(shipped):
        load(shipped[name])  # whole and unchanged (digests) before it is copied anywhere
        target = Path(out) / name
        with replace_dir(target, overwrite=overwrite) as tmp:
            for f in shipped[name].iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, tmp / f.name)
        written.append(target)
    return written
