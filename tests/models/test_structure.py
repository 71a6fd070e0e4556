"""structure: ops replay onto a fresh model; LowRankLinear; unknown ops are a clear error."""

import pytest
import torch
from torch import nn

from edgelm.core.errors import EdgelmError
from edgelm.models.structure import LowRankLinear, apply_structure


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.heads = 4


def test_ops_replay_in_order():
    model = Block()
    apply_structure(model, [
        {"op": "linear", "path": "layers.0", "in": 4, "out": 2, "bias": False},
        {"op": "lowrank", "path": "layers.1", "in": 4, "rank": 1, "out": 4, "bias": True},
        {"op": "conv1d", "path": "layers.2", "in": 4, "out": 6},
        {"op": "setattr", "path": "", "attr": "heads", "value": 2},
        {"op": "drop", "path": "layers.0"},
    ])
    assert len(model.layers) == 2 and model.heads == 2
    assert isinstance(model.layers[0], LowRankLinear) and model.layers[0].rank == 1
    assert tuple(model.layers[1].weight.shape) == (4, 6)  # Conv1D stores (in, out)
    assert model.layers[1](torch.zeros(1, 4)).shape == (1, 6)


def test_lowrank_linear_is_two_linears_with_the_original_bias():
    layer = LowRankLinear(6, 2, 3, bias=True)
    assert layer[0].bias is None and layer[1].bias.shape == (3,)
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), x @ (layer[1].weight @ layer[0].weight).T + layer[1].bias)


def test_unknown_op_is_an_edgelm_error():
    with pytest.raises(EdgelmError, match="unknown"):
        apply_structure(Block(), [{"op": "teleport", "path": "layers.0"}])
