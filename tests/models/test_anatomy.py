"""anatomy: the block stack, each block's attention and MLP projections, Linear vs Conv1D, head counts."""

import pytest
import torch
from torch import nn

from edgelm.core.errors import EdgelmError
from edgelm.models import anatomy
from edgelm.models.loading import load_model
from tests.tiny import TINY_CONFIGS

FUSED = {"gpt2": "concat", "phi3": "concat", "gpt_neox": "interleaved"}
LAYER0 = {  # stack path, then layer 0's projections in module order
    "bert": ("encoder.layer", ["attention.self.query", "attention.self.key", "attention.self.value",
                               "attention.output.dense", "intermediate.dense", "output.dense"]),
    "gpt2": ("transformer.h", ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]),
    "llama": ("model.layers", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
}


def tiny(tiny_model, arch):
    return load_model(str(tiny_model(arch))).model


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_finds_attention_and_mlp_of_every_layer(arch, tiny_model):
    model = tiny(tiny_model, arch)
    layers = anatomy.find_layers(model)
    hidden, heads, kv_heads, head_dim = anatomy.head_geometry(model)
    assert len(layers) == model.config.num_hidden_layers == anatomy.count_layers(model)
    for layer in layers:
        att, mlp = layer.attention, layer.mlp
        assert att is not None and mlp is not None
        assert (att.heads, att.kv_heads, att.head_dim) == (heads, kv_heads, head_dim)
        assert att.fused == FUSED.get(arch)
        assert att.o not in att.qkv and mlp.down not in mlp.up
        assert anatomy.dims(model.get_submodule(att.o)) == (heads * head_dim, hidden)
        assert anatomy.dims(model.get_submodule(mlp.down)) == (mlp.neurons, hidden)
        assert mlp.fused_gate_up == (arch == "phi3")
        assert len(mlp.up) == (2 if arch in ("llama", "mistral", "qwen2", "qwen3", "gemma2") else 1)


@pytest.mark.parametrize("arch", sorted(LAYER0))
def test_block_projections_are_every_layer_in_module_order(arch, tiny_model):
    model = tiny(tiny_model, arch)
    stack, names = LAYER0[arch]
    found = anatomy.block_projections(model)
    assert list(found) == [f"{stack}.{i}.{n}" for i in range(2) for n in names]
    assert found == {p: anatomy.dims(model.get_submodule(p)) for p in found}
    assert [p for layer in anatomy.find_layers(model) for p in layer.projections] == list(found)


def test_gpt2_conv1d_is_a_transposed_projection(tiny_model):
    model = tiny(tiny_model, "gpt2")
    c_fc = model.get_submodule("transformer.h.0.mlp.c_fc")
    assert anatomy.is_conv1d(c_fc) and not isinstance(c_fc, nn.Linear) and anatomy.is_projection(c_fc)
    assert tuple(c_fc.weight.shape) == (32, 128) and anatomy.dims(c_fc) == (32, 128)
    with torch.no_grad():
        anatomy.weight_out_in(c_fc)[:, 3] = 0  # input channel 3 of the (out, in) view: a row of the stored weight
    assert c_fc.weight[3].abs().sum() == 0 and c_fc.weight[4].abs().sum() > 0
    llama = tiny(tiny_model, "llama")
    assert anatomy.head_geometry(llama) == (32, 4, 2, 8)
    assert anatomy.find_layers(llama)[0].attention.heads_per_group == 2


@pytest.mark.parametrize("n_heads", [3, 2], ids=["other-length", "stack-length"])
@pytest.mark.parametrize("arch", sorted(LAYER0))
def test_extra_heads_larger_than_the_stack_are_not_the_blocks(arch, n_heads, tiny_model):
    """finetune used to take the ModuleList with the most parameters: with Medusa-style decoding heads (a list of
    wide Linear layers after the backbone) that was the heads, and LoRA adapted them instead of the blocks. The
    block stack is the backbone's list of num_hidden_layers blocks, the first such list in module order."""
    model = tiny(tiny_model, arch)
    model.medusa_heads = nn.ModuleList(nn.Linear(32, 1024) for _ in range(n_heads))
    lists = {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList)}
    largest = max(lists, key=lambda name: sum(p.numel() for p in lists[name].parameters()))
    assert largest == "medusa_heads"  # what the old finetune lookup chose
    path, stack = anatomy.layer_stack(model)
    assert path == LAYER0[arch][0] and len(stack) == 2
    assert not any("medusa" in p for p in anatomy.block_projections(model))


def test_model_without_layer_stack_is_a_clear_error():
    class Flat(nn.Module):
        config = type("C", (), {"num_hidden_layers": 2})()

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)

    with pytest.raises(EdgelmError, match="no transformer layer stack.*not supported for structural compression"):
        anatomy.find_layers(Flat())
    with pytest.raises(EdgelmError, match=r"identical blocks\); use --method full$"):
        anatomy.block_projections(Flat(), remedy="use --method full")


def test_parent_module_of_a_nested_and_a_top_level_path(tiny_model):
    model = tiny(tiny_model, "llama")
    parent, name = anatomy.parent_module(model, "model.layers.1")
    assert parent is model.model.layers and name == "1"
    assert anatomy.parent_module(model, "lm_head") == (model, "lm_head")
