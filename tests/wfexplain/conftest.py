"""Shared by the library's tests: toy data a tiny CNN learns, and foreign networks that look trained."""

import numpy as np
import pytest
import torch
from torch import nn

from wfexplain.data import TensorImages


def perturbed(net: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking statistics: random BN stats and affines, no zero-initialised residuals or heads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        for p in net.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
            elif float(p.abs().max()) == 0.0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="session")
def synthetic(tiny_info):
    """``synthetic(n, seed)``: ``n`` learnable 16x16 grayscale toy images of 5 classes (``tiny_info()``)."""

    def make(n: int, seed: int) -> TensorImages:
        """Learnable toy images: class c is a bright 4x4 square at a class-specific spot."""
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 5
        x = rng.integers(0, 60, (n, 16, 16), dtype=np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 3)
            x[i, 2 + 6 * r : 6 + 6 * r, 1 + 5 * col : 5 + 5 * col] = 220
        return TensorImages(x, y, tiny_info())

    return make


@pytest.fixture(name="perturbed", scope="session")
def perturbed_fixture():
    """``perturbed(net, seed=0)``: ``net`` in eval mode with trained-looking statistics (random BN statistics and
    affines, no zero-initialised residuals or heads)."""
    return perturbed
