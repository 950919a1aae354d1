"""Scoped hooks: seen inside the block, gone after it, even when the forward pass is stopped by raising."""

import pytest
import torch
from torch import nn

from wfexplain.hooks import count, watch


def test_watch_sees_inputs_and_outputs_and_removes_its_hooks():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    seen = []
    with watch({"0": net[0], "2": net[2]}, on_output=lambda p, m, i, o: seen.append((p, tuple(o.shape))),
               on_input=lambda p, m, i, o: seen.append((p + "<", tuple(i[0].shape)))):
        assert count(net) == 4
        net(torch.zeros(5, 3))
    assert seen == [("0<", (5, 3)), ("0", (5, 4)), ("2<", (5, 4)), ("2", (5, 2))]
    assert count(net) == 0


def test_watch_removes_its_hooks_when_the_forward_pass_raises():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))

    def stop(*_):
        raise StopIteration

    with pytest.raises(StopIteration), watch({"0": net[0]}, on_output=stop):
        net(torch.zeros(1, 3))
    assert count(net) == 0
