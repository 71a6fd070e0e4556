"""Which slices of a block's projections belong together (the layout itself: edgelm.models.anatomy).

Coupling: a pruning *unit* of attention is a KV group (one key/value head plus the query heads that share it,
so GQA stays consistent; for plain multi-head attention a group is one head). An MLP unit is one neuron across
gate/up rows and the down-projection column.
"""

from __future__ import annotations

from edgelm.models.anatomy import Attention, Mlp


# --- index maps: which output rows / input columns a kept unit owns
def qkv_rows(att: Attention, keep_groups: list[int]) -> dict[str, list[int]]:
    """Row indices to keep in each q/k/v projection (or the fused one) for the kept KV groups."""
    hd, per = att.head_dim, att.heads_per_group
    q_heads = [g * per + j for g in keep_groups for j in range(per)]
    q_rows = [h * hd + d for h in q_heads for d in range(hd)]
    kv_rows = [g * hd + d for g in keep_groups for d in range(hd)]
    if att.fused is None:
        return {att.qkv[0]: q_rows, att.qkv[1]: kv_rows, att.qkv[2]: kv_rows}
    if att.fused == "interleaved":  # heads == kv_heads here: block h = [q_h | k_h | v_h]
        return {att.qkv[0]: [h * 3 * hd + d for h in keep_groups for d in range(3 * hd)]}
    q_width, kv_width = att.heads * hd, att.kv_heads * hd
    return {att.qkv[0]: q_rows + [q_width + r for r in kv_rows] + [q_width + kv_width + r for r in kv_rows]}


def o_columns(att: Attention, keep_groups: list[int]) -> list[int]:
    hd, per = att.head_dim, att.heads_per_group
    return [(g * per + j) * hd + d for g in keep_groups for j in range(per) for d in range(hd)]


def up_rows(mlp: Mlp, keep: list[int]) -> list[int]:
    return keep + [mlp.neurons + j for j in keep] if mlp.fused_gate_up else list(keep)
