from __future__ import annotations

import pytest
import torch
from torch import nn

from regionspot.weights import CheckpointError, load_strict


def test_load_strict_names_the_problems() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = dict(module.state_dict())
    del state["0.bias"]
    state["2.weight"] = torch.zeros(1)
    state["1.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as error:
        load_strict(module, state, "toy weights")
    message = str(error.value)
    assert "toy weights" in message and "missing [0.bias]" in message
    assert "unexpected [2.weight]" in message and "1.weight: checkpoint (5, 5) vs model (2, 4)" in message
