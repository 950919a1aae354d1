"""Multi-process runs with PyTorch's own engine: ``torch.distributed`` + ``DistributedDataParallel``.

Launch any command under ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); :func:`session` joins the process group (``nccl`` on GPUs,
``gloo`` on CPUs unless overridden). Without ``torchrun`` (``WORLD_SIZE`` unset or 1)
everything here degrades to single-process no-ops, so the library has one code path.

Conventions (README, "Scaling out"):
- data is sharded with ``DistributedSampler``: rank ``r`` gets positions ``r, r+W, r+2W, ...``
  of one seeded permutation, so the union of the ranks' batches at a step is the batch a
  single process with the same seed and global batch would see;
- only rank 0 writes checkpoints, manifests and logs; evaluation predictions are gathered
  so every rank computes the same numbers as a single process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """Ranks disagree (e.g. diverged replicas); nothing is written."""


def lost_peer(e: BaseException) -> bool:
    """True for the error a rank gets when another rank died in the middle of a collective."""
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and "closed by peer" in str(e))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a ``torchrun`` worker of a run with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str | None = None) -> torch.device:
    """``cpu`` (default), ``cuda`` or ``cuda:N``; under torchrun ``cuda`` means this rank's local GPU."""
    name = name or "cpu"
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"unknown device {name!r}: choose cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} requested but no CUDA GPU is available to torch (use --device cpu)")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return torch.device(name)


@contextlib.contextmanager
def session(device: torch.device, backend: str | None = None) -> Iterator[None]:
    """Join the torchrun process group for the duration of a command (no-op when not launched)."""
    if not launched() or dist.is_initialized():
        yield
        return
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach it
        raise
    # Leave together: a rank that tears down its gloo pairs while a peer still uses them can make
    # that peer abort at exit ("terminate called without an active exception", seen in CI).
    dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (consensus for cancellation)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_across(x: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over ranks; ``x`` itself in a single process."""
    if world_size() == 1:
        return x
    t = x.detach().to(_collective_device()).clone()
    dist.all_reduce(t)
    return (t / world_size()).to(x.device)


def interleave(local: torch.Tensor) -> torch.Tensor:
    """Reassemble a batch split by :class:`DistributedSampler`: global position ``j*W + r`` came from rank ``r``.

    Every rank must pass a tensor of the same shape; returns the global batch on every rank.
    """
    w = world_size()
    if w == 1:
        return local
    t = local.to(_collective_device())
    parts = [torch.empty_like(t) for _ in range(w)]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1).to(local.device)


def check_identical(tensors: Mapping[str, torch.Tensor], what: str) -> str:
    """Digest of ``tensors``; under torchrun, raise unless every rank holds exactly the same values.

    DDP keeps replicas identical by construction; this makes the guarantee visible (the CLI
    logs it) and catches a diverged rank before rank 0 writes anything.
    """
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    if world_size() > 1:
        digests: list[str | None] = [None] * world_size()
        dist.all_gather_object(digests, digest)
        if len(set(digests)) > 1:
            raise DistributedError(f"{what} differ across ranks (digests {digests}): refusing to write")
    return digest


def shard(n: int) -> range:
    """This rank's contiguous slice of ``range(n)`` for evaluation (ranks differ in size by at most 1)."""
    w, r = world_size(), rank()
    return range(r * n // w, (r + 1) * n // w)


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's :func:`shard` result (first dim) in rank order; ``local`` when single."""
    w = world_size()
    if w == 1:
        return local
    sizes = [(r + 1) * n // w - r * n // w for r in range(w)]
    t = local.to(_collective_device())
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(local.device)


def _collective_device() -> torch.device:
    # nccl needs CUDA tensors, gloo works on CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
