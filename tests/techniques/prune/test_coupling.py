"""coupling: the rows and columns a kept KV group or FFN neuron owns."""

from edgelm.models.anatomy import Attention, Mlp
from edgelm.techniques.prune import coupling


def test_gqa_rows_keep_query_heads_with_their_kv_head():
    att = Attention(["q", "k", "v"], "o", "p", heads=4, kv_heads=2, head_dim=2)
    rows = coupling.qkv_rows(att, [1])
    assert rows["q"] == [4, 5, 6, 7]  # query heads 2 and 3 share kv head 1
    assert rows["k"] == rows["v"] == [2, 3]
    assert coupling.o_columns(att, [1]) == [4, 5, 6, 7]


def test_fused_layouts():
    concat = Attention(["qkv"], "o", "p", heads=2, kv_heads=1, head_dim=2, fused="concat")
    assert coupling.qkv_rows(concat, [0])["qkv"] == [0, 1, 2, 3, 4, 5, 6, 7]
    inter = Attention(["qkv"], "o", "p", heads=2, kv_heads=2, head_dim=2, fused="interleaved")
    assert coupling.qkv_rows(inter, [1])["qkv"] == [6, 7, 8, 9, 10, 11]
    mlp = Mlp(["gate_up"], "down", neurons=4, fused_gate_up=True)
    assert coupling.up_rows(mlp, [1, 3]) == [1, 3, 5, 7]
