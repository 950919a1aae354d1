"""Coverage of a filtered network: what is gated per stage and kind, what is left ungated and why, and which gates
never changed the output.

:func:`wfexplain.wrap` records a :class:`Coverage` for the model it returns (its probe measures every site:
:func:`inert_sites`); :func:`coverage` returns it, or computes it for a model loaded from a checkpoint (the
layers left ungated from discovery, :mod:`wfexplain.sites` and :mod:`wfexplain.layout`; the probe part only where
it is cheap). A site's *stage* is its top-level module where that name holds a digit (``layer1``, ``inception3a``),
else the first element of a container on its path (``blocks.0``, ``stages.2``, ``encoder.layers.encoder_layer_3``),
else its top-level module (``patch_embed``, ``stem``, ``norm``).
"""

from __future__ import annotations

import re
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from .filtering import FilteredModel
from .gates import ungated_copy
from .layout import check_layout
from .sites import KINDS, GateSite, discover_sites, skipped

_RECORDED: weakref.WeakKeyDictionary[FilteredModel, Coverage] = weakref.WeakKeyDictionary()
_EXCLUDED = "not among the checkpoint's gate sites (left out when it was made: excluded, or not asked for)"


def stage(net: nn.Module, path: str) -> str:
    """The stage of a module path of ``net`` (module docstring)."""
    parts = path.split(".")
    if re.search(r"\d", parts[0]):
        return parts[0]
    for i in range(1, len(parts) - 1):  # the first element of a container, above the layer itself
        if isinstance(net.get_submodule(".".join(parts[:i])), nn.Sequential | nn.ModuleList | nn.ModuleDict):
            return ".".join(parts[:i + 1])
    return parts[0]


@dataclass(frozen=True)
class Coverage:
    """Gated components per stage and kind, the layers left ungated, and the gates that changed nothing."""

    stages: list[dict]  # {"stage", "kind", "sites", "components"}, in network order
    skipped: list[tuple[str, str]]  # (layer path, why it is left ungated)
    inert: list[str] | None = None  # sites whose gate, zeroed alone, left the probe's logits unchanged (None: not run)
    folded: dict[str, int] = field(default_factory=dict)  # sites on a batch-folded activation: rows per sample

    @classmethod
    def of(cls, net: nn.Module, sites: list[GateSite], left: list[tuple[str, str]], inert: list[str] | None = None,
           folded: dict[str, int] | None = None) -> Coverage:
        """From the ``sites`` gated in ``net``, the layers ``left`` ungated (with why), and what the probe found."""
        rows: dict[tuple[str, str], dict] = {}
        for s in sites:
            name = stage(net, s.path)
            row = rows.setdefault((name, s.kind), {"stage": name, "kind": s.kind, "sites": 0, "components": 0})
            row["sites"] += 1
            row["components"] += s.size
        return cls(list(rows.values()), list(dict.fromkeys(left)), inert, dict(folded or {}))

    def to_json(self) -> dict:
        return {"stages": self.stages, "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "inert": self.inert, "folded": self.folded}

    def table(self) -> list[dict]:
        """One row per stage: ``{"stage", KIND: "SITES (COMPONENTS)", ...}`` for the kinds present."""
        kinds = [k for k in KINDS if any(r["kind"] == k for r in self.stages)]
        out: dict[str, dict] = {}
        for r in self.stages:
            row = out.setdefault(r["stage"], {"stage": r["stage"], **{k: "" for k in kinds}})
            row[r["kind"]] = f"{r['sites']} ({r['components']:,})"
        return list(out.values())

    def notes(self) -> list[dict]:
        """The layers left ungated and the gates that changed nothing: ``{"layer", "status", "reason"}``."""
        return [{"layer": p, "status": "ungated", "reason": r} for p, r in self.skipped] + [
            {"layer": p, "status": "no effect", "reason": "gated, but zeroing its gate alone never changed the logits "
                                                          "in the probe"} for p in self.inert or ()]

    def lines(self, limit: int = 8) -> list[str]:
        """A compact text table (cells: sites (components)), then the ungated layers and the inert sites."""
        table = self.table()
        sites, comps = sum(r["sites"] for r in self.stages), sum(r["components"] for r in self.stages)
        head = f"coverage: {sites} gate sites, {comps:,} components in {len(table)} stages; {len(self.skipped)} " \
               f"layers left ungated; " + ("no-effect probe not run" if self.inert is None else
                                           f"{len(self.inert)} sites never changed the output in the probe") \
               + (f"; {len(self.folded)} on a batch-folded activation (gated per sample)" if self.folded else "")
        cols = list(table[0]) if table else ["stage"]
        width = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in cols}
        out = [head, "  " + "  ".join(c.ljust(width[c]) for c in cols)]
        out += ["  " + "  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in table]
        why: dict[str, list[str]] = {}
        for p, r in self.skipped:
            why.setdefault(r, []).append(p)
        if self.inert:
            why["gated, but zeroing its gate alone never changed the logits in the probe (kept: check it)"] = self.inert
        for r, paths in why.items():
            more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
            out.append(f"  {'no effect' if paths is self.inert else 'ungated'}: {', '.join(paths[:limit])}{more}: {r}")
        return [line.rstrip() for line in out]


def record(model: FilteredModel, cov: Coverage) -> Coverage:
    """Keep ``cov`` as ``model``'s coverage (what :func:`coverage` returns for it)."""
    _RECORDED[model] = cov
    return cov


@torch.no_grad()
def inert_sites(model: FilteredModel, x: torch.Tensor, chunk: int = 32, tolerance: float = 1e-5) -> list[str]:
    """The sites whose gate, zeroed alone (every other gate 1), leaves the logits of every input in ``x`` unchanged
    (relative change at most ``tolerance``); one batched forward pass per ``chunk`` rows."""
    base = model.run_gated(x, None)
    n, out, scale = len(x), [], float(base.abs().max().clamp_min(1e-12))
    per = max(1, chunk // n)
    ones = {s.path: torch.ones(1, s.size, device=x.device, dtype=x.dtype) for s in model.sites}
    for i in range(0, len(model.sites), per):
        group = model.sites[i:i + per]
        gates = dict(ones)
        for j, s in enumerate(group):
            g = torch.ones(len(group) * n, s.size, device=x.device, dtype=x.dtype)
            g[j * n:(j + 1) * n] = 0
            gates[s.path] = g
        got = model.run_gated(x.repeat(len(group), *[1] * (x.ndim - 1)), gates).view(len(group), n, -1)
        out += [s.path for j, s in enumerate(group) if float((got[j] - base.view(n, -1)).abs().max()) <= tolerance * scale]
    return out


def coverage(model: FilteredModel, probe: bool | None = None, budget_s: float = 3.0) -> Coverage:
    """The coverage :func:`wfexplain.wrap` recorded for ``model``, or computed from the model: the sites it gates,
    the layers discovery leaves ungated, and the discovered sites the model does not gate (why, from
    :func:`wfexplain.layout.check_layout`). ``probe``: also find the inert sites (None: only where one batched
    pass over them is estimated to take under ``budget_s`` seconds)."""
    known = _RECORDED.get(model)
    if known is not None and (known.inert is not None or not probe):  # "where cheap" was decided when it was recorded
        return known
    net, size = model.backbone, model.info.input_size
    left = skipped(net, model.heads)
    gated = {s.path for s in model.sites}
    missing = [s for s in discover_sites(net, model.heads) if s.path not in gated]
    folded: dict[str, int] = {}
    if missing or probe is not False:
        # on a copy: hooks added to a network other threads may be running would race with them
        layout = check_layout(ungated_copy(net), [*missing, *model.sites], size)
        folded = {p: r for p, r in layout.folded.items() if p in gated}
        left += [*layout.refused, *((s.path, _EXCLUDED) for s in layout.sites if s.path not in gated),
                 *((p, f"never run in an eval-mode forward pass; {_EXCLUDED}") for p in layout.never_run)]
    inert = None
    if probe is not False:
        param = next(net.parameters())
        x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
        start = time.perf_counter()
        model.run_gated(x, None)
        if probe or (time.perf_counter() - start) * len(model.sites) < budget_s:  # one row per site, batched
            inert = inert_sites(model, x)
    return record(model, Coverage.of(net, model.sites, left, inert, folded))
