"""What every figure builder shares: array conversion, class-name checks and the colours of the three models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

FORGOTTEN_COLOR = "#d62728"
ORIGINAL_COLOR = "#7f7f7f"
FILTERED_COLOR = "#1f77b4"


def to_numpy(x) -> np.ndarray:
    """A NumPy view/copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)



def _check_names(class_names: Sequence[str], n: int, what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{what} has {n} classes but {len(names)} class names were given")
    return names

