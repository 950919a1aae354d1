"""One fast, exact inference path for scoring forget sets: the dashboard, ``evaluate`` and the benchmark.

A forget set's filter is a change of weights (Poppi et al., arXiv 2304.02049), so instead of gating
activations with hooks, :class:`Predictor` bakes each set into a hook-free working copy of the
backbone (:func:`wfexplain.gates.bake_into`) and runs that, with three exact rewrites on top:

1. *Folding*: an eval-mode ``BatchNorm2d`` that reads a convolution's output directly is folded into
   that convolution (``W·γ/σ``, bias ``β − μγ/σ``); its gate then scales the convolution's rows.
2. *Prefix cache*: everything before the first gate (and the first gate's channel-wise, positively
   homogeneous followers: ReLU and max-pool commute with a gate ≥ 0) does not depend on the forget
   set. It is computed once per input batch; each set multiplies the cached activation by its first
   gate. Known for :class:`~wfexplain.backbones.SmallCNN`, torchvision ``ResNet`` and timm
   ``VisionTransformer`` (any width or depth); other networks run whole.
3. *Layout*: ``channels_last`` for the networks where it was measured faster (:data:`CHANNELS_LAST`), by a rule
   that load on the machine cannot flip (a wall-clock choice at build time picked the 1.5x-slower layout in 3 of 8
   builds under load); inputs in chunks of ``chunk`` images (the default chosen by ``perf/live.py``).

Interactive work first: calls serialise on one working copy, and a *background* call (``background=True``: the
dashboard's precompute) gives way between chunks to any interactive call waiting, then waits until none has come
for :data:`GRACE_S` before it goes on (re-baking its own set), so an interactive request waits for one chunk of
background work at most, never for a whole set (on the hook path, with no working copy, per set).

Every rewrite is checked when the predictor is built: its logits must match the hook path
(``model(x, forget=...)``) within ``tolerance`` relative on the first inputs for three forget sets.
A rewrite that is not exact for this network is dropped (the next simpler one is tried, down to the
hooks themselves) and the reason is recorded in :attr:`Predictor.notes`. Reduced precision
(``precision="bfloat16"``, or ``"auto"``: bfloat16 where :data:`BFLOAT16_FASTER` says it pays) is used only when asked,
and only if its predictions agree with float32 on at least ``min_agreement`` of the inputs (checked at build time;
otherwise float32, with a note).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import gates as G
from . import hooks
from .filtering import FilteredModel, Forget, set_gates
from .sites import GateSite

CHUNK = 256  # images per forward pass of the working copy
GRACE_S = 0.5  # a background call resumes only after this long without an interactive request
# Networks (type names) whose working copy runs channels_last: SmallCNN 2.4x faster; torchvision ResNet-18 1.3x
# slower, hence contiguous, as every network not listed (measured on this project's 2-core CPU, float32).
CHANNELS_LAST = ("SmallCNN",)
# Networks whose fast path runs faster in bfloat16 on a CPU (measured with AMX: SmallCNN 3.1x faster; ResNet-18 at
# 28x28 1.13x slower, 1.0x channels_last; the ViT 1.02x slower, and refused by the guard anyway); on CUDA, every one.
BFLOAT16_FASTER = ("SmallCNN",)
_CHECK_IMAGES = 64  # inputs on which every rewrite is checked against the hook path


@dataclass(frozen=True)
class Split:
    """Where a network is cut: the forget-independent prefix and the rest that each forget set reruns."""

    prefix: Callable[[Any, torch.Tensor], torch.Tensor]  # (plain network, x) -> cached activation
    rest: Callable[[Any, torch.Tensor], torch.Tensor]  # (working copy, gated activation) -> logits
    modules: tuple[str, ...]  # module paths the prefix runs
    boundary: str  # the site (if gated) whose gate multiplies the cached activation


def _split(net: nn.Module) -> Split | None:
    from .backbones import SmallCNN

    name = type(net).__name__
    if isinstance(net, SmallCNN):
        def cnn_rest(m: Any, h: torch.Tensor) -> torch.Tensor:
            return m.head(m.dropout(torch.relu(m.fc(m.features[4:](h).flatten(1)))))
        return Split(lambda m, x: m.features[:4](x), cnn_rest, tuple(f"features.{i}" for i in range(4)), "features.1")
    if name == "ResNet" and type(net).__module__.startswith("torchvision."):
        def resnet_rest(m: Any, h: torch.Tensor) -> torch.Tensor:
            return m.fc(torch.flatten(m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(h))))), 1))
        return Split(lambda m, x: m.maxpool(m.relu(m.bn1(m.conv1(x)))), resnet_rest, ("conv1", "bn1", "relu", "maxpool"),
                     "bn1")
    embed = getattr(net, "patch_embed", None)
    if name == "VisionTransformer" and type(net).__module__.startswith("timm.") and getattr(embed, "flatten", False):
        def vit_rest(m: Any, h: torch.Tensor) -> torch.Tensor:
            x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed.norm(h))))
            return m.forward_head(m.norm(m.blocks(x)))
        return Split(lambda m, x: m.patch_embed.proj(x).flatten(2).transpose(1, 2), vit_rest, ("patch_embed.proj",),
                     "patch_embed.norm")
    return None


def _fold_batchnorms(net: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Fold every eval-mode ``BatchNorm2d`` whose input is a convolution's output into that convolution, in place.

    The data flow is read from one traced forward pass (the norm must receive the very tensor the
    convolution returned). Returns ``{norm path: conv path}``; the norms become ``Identity``.
    """
    produced: dict[int, str] = {}  # id of a convolution's output -> its path
    pairs: dict[str, str] = {}
    convs = {path: m for path, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    norms = {path: m for path, m in net.named_modules()
             if type(m) is nn.BatchNorm2d and m.track_running_stats and m.affine}

    def conv_ran(path: str, _m: nn.Module, _inputs: tuple, out: object) -> None:
        produced[id(out)] = path

    def norm_runs(path: str, _m: nn.Module, inputs: tuple, _out: object) -> None:
        if id(inputs[0]) in produced:
            pairs[path] = produced[id(inputs[0])]

    with hooks.watch(convs, on_output=conv_ran), hooks.watch(norms, on_input=norm_runs), torch.no_grad():
        net(x[:2])
    modules = dict(net.named_modules())
    with torch.no_grad():
        for bn_path, conv_path in pairs.items():
            bn, conv = modules[bn_path], modules[conv_path]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift)
            parent, _, child = bn_path.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return pairs


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``: the tolerance measure of every exactness check here."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


class Predictor:
    """Logits of ``model`` on fixed inputs ``x`` under one forget set at a time, through the fastest exact path.

    Thread-safe (calls are serialised: the working copy is scratch space). ``mode`` says what runs:
    ``"folded+prefix"``, ``"folded"``, ``"baked+prefix"``, ``"baked"`` or ``"hooks"``.
    """

    def __init__(self, model: FilteredModel, x: torch.Tensor, chunk: int = CHUNK, tolerance: float = 1e-4,
                 precision: str = "float32", min_agreement: float = 0.999):
        if precision not in ("float32", "bfloat16", "auto"):
            raise ValueError(f"precision must be 'float32', 'bfloat16' or 'auto', got {precision!r}")
        self.model, self.chunk, self.tolerance = model, chunk, tolerance
        self.device = next(model.backbone.parameters()).device
        self.x = x.to(self.device)
        self.notes: list[str] = []
        self.layout = "contiguous"
        self._layout: torch.memory_format = torch.contiguous_format
        self.mode = "hooks"
        self._work: nn.Module | None = None
        self._split: Split | None = None
        self._lock = threading.Lock()
        self._turn = threading.Condition()  # guards the two fields below; notified when an interactive call ends
        self._wanted = 0  # interactive calls waiting or running
        self._quiet_since = 0.0  # monotonic time the last interactive call ended
        self.yields = 0  # how often a background call gave way (for tests and perf/live.py)
        checks = [None, [0], list(range(min(2, model.num_classes)))]
        with torch.no_grad():
            reference = [model(self.x[:_CHECK_IMAGES], forget=f) for f in checks]
        for fold, prefix in ((True, True), (True, False), (False, True), (False, False)):
            if not self._build(fold, prefix):
                continue
            head = self.x[:_CHECK_IMAGES]
            errors = [relative_error(self._run(f, head, cached=False), r) for f, r in zip(checks, reference, strict=True)]
            if max(errors) <= tolerance:
                break
            self.notes.append(f"{self.mode} is not exact for this network (relative error {max(errors):.1e}); dropped")
        else:
            self.mode, self._work = "hooks", None
        if self._work is not None and type(model.backbone).__name__ in CHANNELS_LAST:
            self._layout, self.layout = torch.channels_last, "channels_last"
            self._work = self._work.to(memory_format=self._layout)
        self._prefix = self._compute_prefix(self.x) if self._work is not None and self._split is not None else None
        self.dtype = torch.float32
        self.agreement: float | None = None  # bfloat16's agreement with float32 where it was tried
        self.min_agreement = min_agreement
        if precision == "auto":
            faster = self.device.type == "cuda" or type(model.backbone).__name__ in BFLOAT16_FASTER
            precision = "bfloat16" if faster else "float32"
        if precision == "bfloat16" and self._work is not None:
            self._try_bfloat16(min_agreement)

    # ------------------------------------------------------------ construction
    def _build(self, fold: bool, prefix: bool) -> bool:
        model = self.model
        plain = G.ungated_copy(model.backbone).eval().requires_grad_(False)
        split = _split(plain) if prefix else None
        if prefix and split is None:
            return False
        if split is not None:
            inside = [s.path for s in model.sites
                      if any(s.path == p or s.path.startswith(p + ".") for p in split.modules)]
            if any(p != split.boundary for p in inside):
                note = f"prefix cache skipped: gate site(s) {', '.join(inside)} inside the prefix"
                self.notes += [note] if note not in self.notes else []
                return False
            self._plain = copy.deepcopy(plain)  # the unfolded, ungated network the prefix runs
        folded = _fold_batchnorms(plain, self.x) if fold else {}
        if fold and not folded:
            return False
        self._layout = torch.contiguous_format
        self._work = plain
        self._sites = [GateSite(folded[s.path], "channels", s.size) if s.path in folded else s for s in model.sites]
        self._paths = {s.path: t.path for s, t in zip(model.sites, self._sites, strict=True)}
        self._base = [(p, p.detach().clone()) for p in self._work.parameters()]
        self._split = split
        self._boundary = next((s for s in model.sites if split is not None and s.path == split.boundary), None)
        self.mode = ("folded" if fold else "baked") + ("+prefix" if split is not None else "")
        return True

    def _compute_prefix(self, x: torch.Tensor) -> torch.Tensor:
        assert self._split is not None
        with torch.no_grad():
            out = torch.cat([self._split.prefix(self._plain, c) for c in x.split(self.chunk)])
        return out.contiguous(memory_format=self._layout) if out.ndim == 4 else out

    def _try_bfloat16(self, min_agreement: float) -> None:
        """bfloat16 if its top-1 predictions agree with float32's on at least ``min_agreement`` of the inputs for the
        original model, one class and three classes forgotten (the worst of the three is :attr:`agreement`)."""
        sets = [None, [0], list(range(min(3, self.model.num_classes)))]
        reference = [self.logits(f).argmax(1) for f in sets]
        self.dtype = torch.bfloat16
        agreement = min(float((self.logits(f).argmax(1) == r).float().mean()) for f, r in zip(sets, reference, strict=True))
        self.agreement = agreement
        if agreement < min_agreement:
            self.dtype = torch.float32
            self.notes.append(f"bfloat16 refused: its predictions agree with float32 on {agreement:.2%} of the inputs "
                              f"(< {min_agreement:.2%}); float32 used")
        else:
            self.notes.append(f"bfloat16: predictions agree with float32 on {agreement:.2%} of the inputs")

    # ------------------------------------------------------------ running
    @torch.no_grad()
    def _set(self, forget: Forget, hard_threshold: float | None) -> dict[str, torch.Tensor]:
        gates = set_gates(self.model, forget, hard_threshold)
        assert self._work is not None
        for p, base in self._base:
            p.copy_(base)
        G.bake_into(self._work, self._sites, {self._paths[k]: v for k, v in gates.items()})
        return gates

    @torch.no_grad()
    def _run(self, forget: Forget, x: torch.Tensor | None, cached: bool, hard_threshold: float | None = None,
             rows: torch.Tensor | None = None, background: bool = False) -> torch.Tensor:
        inputs = self.x if x is None else x
        if rows is not None:
            inputs = inputs[rows.to(inputs.device)]
        if self._work is None:
            if hard_threshold is not None:
                raise ValueError("hard_threshold needs a baked path; this network runs on hooks")
            return torch.cat([self.model(c, forget=forget) for c in inputs.split(self.chunk)])
        gates = self._set(forget, hard_threshold)
        work, split = self._work, self._split
        if split is None:
            chunks = inputs.contiguous(memory_format=self._layout).split(self.chunk)
        else:
            acts = self._prefix if cached else self._compute_prefix(inputs)
            assert acts is not None
            if cached and rows is not None:
                acts = acts[rows.to(acts.device)]
            chunks = acts.split(self.chunk)
        out = []
        for i, c in enumerate(chunks):
            if background and i and self._give_way():  # another set ran meanwhile: bake this one again
                gates = self._set(forget, hard_threshold)
            if split is None:
                out.append(work(c).float())
                continue
            if self._boundary is not None:
                c = c * G.expand(gates[self._boundary.path].to(self.device)[None], self._boundary, c)
            out.append(split.rest(work, c).float())
        return torch.cat(out)

    # ------------------------------------------------------------ whose turn
    @contextlib.contextmanager
    def _serialised(self, background: bool):
        """Hold the working copy: an interactive call queues ahead of background work; a background call first
        waits for a quiet moment (no interactive call for :data:`GRACE_S`)."""
        if background:
            self._wait_quiet()
            with self._lock:
                yield
            return
        with self._turn:
            self._wanted += 1
        try:
            with self._lock:
                yield
        finally:
            with self._turn:
                self._wanted -= 1
                self._quiet_since = time.monotonic()
                self._turn.notify_all()

    def _wait_quiet(self) -> None:
        with self._turn:
            while True:
                if self._wanted:
                    self._turn.wait()
                elif (left := GRACE_S - (time.monotonic() - self._quiet_since)) > 0:
                    self._turn.wait(left)
                else:
                    return

    def _give_way(self) -> bool:
        """Between two chunks of a background call (the lock held): if an interactive call waits or has just run,
        let it have the working copy and come back after a quiet moment. True if it gave way."""
        with self._turn:
            busy = self._wanted or time.monotonic() - self._quiet_since < GRACE_S
        if not busy:
            return False
        self.yields += 1
        self._lock.release()
        try:
            self._wait_quiet()
        finally:
            self._lock.acquire()
        return True

    def logits(self, forget: Forget = None, hard_threshold: float | None = None,
               rows: torch.Tensor | None = None, background: bool = False) -> torch.Tensor:
        """Logits ``[N, classes]`` (float32, on the model's device) of every input under ``forget``
        (only the inputs at ``rows``, in that order, if given). ``background``: work that gives way to others."""
        with self._serialised(background), torch.autocast(self.device.type, torch.bfloat16,
                                                          enabled=self.dtype == torch.bfloat16):
            return self._run(forget, None, cached=True, hard_threshold=hard_threshold, rows=rows, background=background)

    def forward(self, x: torch.Tensor, forget: Forget = None, hard_threshold: float | None = None) -> torch.Tensor:
        """Logits of other inputs ``x`` under ``forget`` through the same path (their prefix computed, not cached)."""
        with self._serialised(False), torch.autocast(self.device.type, torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            return self._run(forget, x.to(self.device), cached=False, hard_threshold=hard_threshold)

    @property
    def bfloat16(self) -> bool:
        """Whether the fast path runs in bfloat16 (asked for, and its guard passed)."""
        return self.dtype == torch.bfloat16

    def describe(self) -> str:
        """One line for logs and the dashboard: what runs and what was dropped."""
        return f"{self.mode}, {self.layout}, chunks of {self.chunk}" + (f"; {'; '.join(self.notes)}" if self.notes else "")
