import pytest

from edgelm.techniques.prune import coupling
from tests.techniques.prune.helpers import tiny
from tests.tiny import TINY_CONFIGS

FUSED = {"gpt2": "concat", "phi3": "concat", "gpt_neox": "interleaved"}


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_discovers_attention_and_mlp_of_every_layer(arch, tiny_model):
    model = tiny(tiny_model, arch).model
    layers = coupling.discover(model)
    hidden, heads, kv_heads, head_dim = coupling.head_geometry(model)
    assert len(layers) == model.config.num_hidden_layers
    for layer in layers:
        att, mlp = layer.attention, layer.mlp
        assert att is not None and mlp is not None
        assert (att.heads, att.kv_heads, att.head_dim) == (heads, kv_heads, head_dim)
        assert att.fused == FUSED.get(arch)
        assert att.o not in att.qkv and mlp.down not in mlp.up
        assert coupling.dims(model.get_submodule(att.o)) == (heads * head_dim, hidden)
        assert coupling.dims(model.get_submodule(mlp.down)) == (mlp.neurons, hidden)
        assert mlp.fused_gate_up == (arch == "phi3")
        assert len(mlp.up) == (2 if arch in ("llama", "mistral", "qwen2", "qwen3", "gemma2") else 1)


def test_gqa_rows_keep_query_heads_with_their_kv_head():
    att = coupling.Attention(["q", "k", "v"], "o", "p", heads=4, kv_heads=2, head_dim=2)
    rows = coupling.qkv_rows(att, [1])
    assert rows["q"] == [4, 5, 6, 7]  # query heads 2 and 3 share kv head 1
    assert rows["k"] == rows["v"] == [2, 3]
    assert coupling.o_columns(att, [1]) == [4, 5, 6, 7]


def test_fused_layouts():
    concat = coupling.Attention(["qkv"], "o", "p", heads=2, kv_heads=1, head_dim=2, fused="concat")
    assert coupling.qkv_rows(concat, [0])["qkv"] == [0, 1, 2, 3, 4, 5, 6, 7]
    inter = coupling.Attention(["qkv"], "o", "p", heads=2, kv_heads=2, head_dim=2, fused="interleaved")
    assert coupling.qkv_rows(inter, [1])["qkv"] == [6, 7, 8, 9, 10, 11]
    mlp = coupling.Mlp(["gate_up"], "down", neurons=4, fused_gate_up=True)
    assert coupling.up_rows(mlp, [1, 3]) == [1, 3, 5, 7]


def test_model_without_layer_stack_is_a_clear_error():
    from torch import nn

    from edgelm.core.errors import EdgelmError

    class Flat(nn.Module):
        config = type("C", (), {"num_hidden_layers": 2})()

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)

    with pytest.raises(EdgelmError, match="no transformer layer stack"):
        coupling.discover(Flat())
