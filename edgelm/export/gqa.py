"""Decoder attention as onnxruntime's GroupQueryAttention: one op per layer for what the fused dynamo graph does
in about twenty (rotary on q and k, KV-cache Concat, repeating the KV heads for grouped queries, attention).

onnxscript fuses a LLaMA-family decoder's attention as MultiHeadAttention, which leaves the rotary ops, the cache
Concat and an Expand of the whole cache to all query heads on every decode step. GroupQueryAttention does the
rotary (from cos/sin tables), appends to the cache and attends over the shared KV heads itself. The rewrite is
pattern-light: it follows each MultiHeadAttention's inputs back to the q/k/v projections and the cache Concats
and keeps the rest; `fuse_file` then checks the rewritten graph against the original on onnxruntime (prefill
and a decode step) and keeps the original when they differ.

Positions: GroupQueryAttention rotates by absolute cache position (past length + index), not by `position_ids`.
Rotary depends only on position differences, so this is exact for any constant offset and for left padding
(whose padded keys the attention mask hides); `position_ids` stays a graph input for compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS = "com.microsoft"
HEAD_SPLIT_PERM = [0, 2, 1, 3]
MASKED = -1e9  # additive bias of a padded key: finite, so a row with every key masked stays finite


@dataclass
class _Layer:
    mha: onnx.NodeProto
    q: str
    k: str
    v: str
    key_concat: onnx.NodeProto
    value_concat: onnx.NodeProto
    bias: str


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model, self.graph = model, model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.inits = {t.name: t for t in self.graph.initializer}
        self.inputs = {i.name: i for i in self.graph.input}

    def node_of(self, tensor: str):
        return self.producer.get(tensor)

    def perm(self, node) -> list[int] | None:
        return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def fuse_group_query_attention(model: onnx.ModelProto) -> int:
    """Rewrite every matching MultiHeadAttention layer in place; returns how many (0: model unchanged)."""
    g = _Graph(model)
    layers = [layer for mha in g.graph.node if mha.op_type == "MultiHeadAttention" and mha.domain == MS
              for layer in [_match(g, mha)] if layer is not None]
    inv_freq = _inv_freq(g)
    if not layers or inv_freq is None:
        return 0
    kv_heads, head_size = _cache_dims(g, layers[0])
    if kv_heads is None or 2 * inv_freq.size != head_size or head_size % 16:  # partial rotary; the op's head sizes
        return 0
    shared = _shared_inputs(g, inv_freq)
    for layer in layers:
        _replace(g, layer, kv_heads, shared)
    _drop_dead_nodes(g.graph)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return len(layers)


def _match(g: _Graph, mha) -> _Layer | None:
    """q/k/v projections ([batch, seq, hidden] before the head split) and the cache Concats of one layer."""
    ins = list(mha.input) + [""] * (8 - len(mha.input))
    if any(ins[i] for i in (3, 4, 6, 7)):  # packed bias, key padding mask or the op's own cache: not this pattern
        return None
    key_concat, value_concat = _cache_concat(g, ins[1]), _cache_concat(g, ins[2])
    if key_concat is None or value_concat is None:
        return None
    q, q_rotated = _head_input(g, ins[0])
    k, k_rotated = _head_input(g, key_concat.input[1])
    v, v_rotated = _head_input(g, value_concat.input[1])
    if not (q and k and v and q_rotated and k_rotated and not v_rotated):
        return None
    return _Layer(mha, q, k, v, key_concat, value_concat, ins[5])


def _cache_concat(g: _Graph, tensor: str, depth: int = 8):
    """Walk up first inputs to the Concat(past_key_values.*, new) that makes a present output."""
    for _ in range(depth):
        node = g.node_of(tensor)
        if node is None:
            return None
        if node.op_type == "Concat" and node.input[0] in g.inputs and len(node.input) == 2:
            return node
        tensor = node.input[0]
    return None


def _head_input(g: _Graph, tensor: str, depth: int = 10) -> tuple[str | None, bool]:
    """(the [batch, seq, hidden] tensor before Reshape + Transpose(0,2,1,3), whether a rotary Add was passed)."""
    rotated = False
    for _ in range(depth):
        node = g.node_of(tensor)
        if node is None:
            return None, rotated
        if node.op_type == "Transpose" and g.perm(node) == HEAD_SPLIT_PERM:
            split = g.node_of(node.input[0])
            if split is not None and split.op_type == "Reshape":
                return split.input[0], rotated
        rotated |= node.op_type == "Add"
        tensor = node.input[0]
    return None, rotated


def _inv_freq(g: _Graph) -> np.ndarray | None:
    """The rotary inverse frequencies: the 1-D initializer multiplied into the Cos table's argument."""
    cos = [n for n in g.graph.node if n.op_type == "Cos"]
    if len(cos) != 1:
        return None
    frontier, seen = [cos[0].input[0]], set()
    while frontier:
        node = g.node_of(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Mul":
            for i in node.input:
                if i in g.inits:
                    return numpy_helper.to_array(g.inits[i]).astype(np.float32).reshape(-1)
        frontier.extend(node.input)
    return None


def _cache_dims(g: _Graph, layer: _Layer) -> tuple[int | None, int | None]:
    past = g.inputs[layer.key_concat.input[0]].type.tensor_type.shape.dim
    if len(past) != 4 or not past[1].HasField("dim_value") or not past[3].HasField("dim_value"):
        return None, None
    return past[1].dim_value, past[3].dim_value


def _shared_inputs(g: _Graph, inv_freq: np.ndarray) -> dict:
    """cos/sin tables, seqlens_k / total_sequence_length and the padding bias, all from attention_mask alone (every
    row its full length: the bias, not seqlens, hides padding). Nothing reads the past inputs' shapes, so a caller
    may pass one preallocated buffer as both past and present (the op's shared-buffer mode, `generate.py`). The tables are computed in the graph from the inverse frequencies:
    the tables have one row per position of this call's total length (a few thousand values per step, where a
    table for the model's whole context would be a constant the .ort format stores, or recomputes every call)."""
    g.graph.initializer.extend([numpy_helper.from_array(inv_freq.reshape(1, -1), "gqa_inv_freq"),
                                numpy_helper.from_array(np.array(0, dtype=np.float32), "gqa_zero_f"),
                                numpy_helper.from_array(np.array(1, dtype=np.float32), "gqa_one_f"),
                                numpy_helper.from_array(np.array(1, dtype=np.int64), "gqa_one"),
                                numpy_helper.from_array(np.array(0, dtype=np.int64), "gqa_zero"),
                                numpy_helper.from_array(np.array([1], dtype=np.int64), "gqa_last_axis"),
                                numpy_helper.from_array(np.array(MASKED, dtype=np.float32), "gqa_masked"),
                                numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "gqa_bias_axes")])
    node = helper.make_node
    nodes = [node("Shape", ["attention_mask"], ["gqa_mask_shape"], name="gqa_mask_shape"),
             node("Gather", ["gqa_mask_shape", "gqa_one"], ["gqa_total64"], name="gqa_total", axis=0),
             node("Cast", ["gqa_total64"], ["gqa_positions"], name="gqa_positions", to=onnx.TensorProto.FLOAT),
             node("Range", ["gqa_zero_f", "gqa_positions", "gqa_one_f"], ["gqa_position"], name="gqa_position"),
             node("Unsqueeze", ["gqa_position", "gqa_last_axis"], ["gqa_position_1"], name="gqa_position_1"),
             node("Mul", ["gqa_position_1", "gqa_inv_freq"], ["gqa_angles"], name="gqa_angles"),
             node("Cos", ["gqa_angles"], ["gqa_cos_cache"], name="gqa_cos_cache"),
             node("Sin", ["gqa_angles"], ["gqa_sin_cache"], name="gqa_sin_cache"),
             node("Cast", ["gqa_total64"], ["gqa_total_sequence_length"], name="gqa_total_i32", to=onnx.TensorProto.INT32),
             node("Gather", ["gqa_mask_shape", "gqa_zero"], ["gqa_batch"], name="gqa_batch", axis=0),
             node("Sub", ["gqa_total64", "gqa_one"], ["gqa_last64"], name="gqa_last"),
             node("Unsqueeze", ["gqa_batch", "gqa_zero"], ["gqa_batch_1d"], name="gqa_batch_1d"),
             node("Expand", ["gqa_last64", "gqa_batch_1d"], ["gqa_seqlens64"], name="gqa_seqlens"),
             node("Cast", ["gqa_seqlens64"], ["gqa_seqlens_k"], name="gqa_seqlens_i32", to=onnx.TensorProto.INT32),
             # padding as an additive bias [batch, 1, seq, total]; the op applies the causal part itself
             node("Cast", ["attention_mask"], ["gqa_mask_f"], name="gqa_mask_f", to=onnx.TensorProto.FLOAT),
             node("Sub", ["gqa_one_f", "gqa_mask_f"], ["gqa_padding"], name="gqa_padding"),
             node("Mul", ["gqa_padding", "gqa_masked"], ["gqa_padding_bias"], name="gqa_padding_bias"),
             node("Unsqueeze", ["gqa_padding_bias", "gqa_bias_axes"], ["gqa_padding_bias_4d"], name="gqa_padding_bias_4d"),
             node("Shape", ["input_ids"], ["gqa_seq_1d"], name="gqa_seq_1d", start=1, end=2),
             node("Concat", ["gqa_last_axis", "gqa_last_axis", "gqa_seq_1d", "gqa_last_axis"], ["gqa_bias_shape"],
                  name="gqa_bias_shape", axis=0),
             node("Expand", ["gqa_padding_bias_4d", "gqa_bias_shape"], ["gqa_attention_bias"], name="gqa_attention_bias")]
    for i, new in enumerate(nodes):
        g.graph.node.insert(i, new)
    return {"seqlens": "gqa_seqlens_k", "total": "gqa_total_sequence_length", "cos": "gqa_cos_cache", "sin": "gqa_sin_cache",
            "bias": "gqa_attention_bias"}


def _replace(g: _Graph, layer: _Layer, kv_heads: int, shared: dict) -> None:
    mha = layer.mha
    attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
    extra = {"scale": attrs["scale"]} if "scale" in attrs else {}
    qkv = _packed_projection(g, layer)
    q, k, v = (qkv, "", "") if qkv else (layer.q, layer.k, layer.v)
    gqa = helper.make_node(
        "GroupQueryAttention",
        [q, k, v, layer.key_concat.input[0], layer.value_concat.input[0], shared["seqlens"],
         shared["total"], shared["cos"], shared["sin"], "", shared["bias"] if layer.bias else ""],
        [mha.output[0], layer.key_concat.output[0], layer.value_concat.output[0]],
        name=mha.name.replace("MultiHeadAttention", "GroupQueryAttention"), domain=MS,
        num_heads=attrs["num_heads"], kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0, **extra)
    at = list(g.graph.node).index(mha)
    for node in (mha, layer.key_concat, layer.value_concat):
        g.graph.node.remove(node)
    g.graph.node.insert(at - 2, gqa)  # the two Concats came before the MHA


def _packed_projection(g: _Graph, layer: _Layer) -> str | None:
    """One MatMul for q, k and v (GroupQueryAttention's packed input) when all three are MatMuls of one input by
    2-D float initializers; None (left as three) otherwise. A decode step then runs one weight op, not three."""
    nodes = [g.node_of(t) for t in (layer.q, layer.k, layer.v)]
    if any(n is None or n.op_type != "MatMul" or n.input[1] not in g.inits for n in nodes):
        return None
    weights = [g.inits[n.input[1]] for n in nodes]
    if len({n.input[0] for n in nodes}) != 1 or any(len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT for w in weights):
        return None
    name = f"{nodes[0].name}_qkv"
    g.graph.node.insert(list(g.graph.node).index(nodes[0]), _concat_matmul(g, nodes, name))
    return name


def _concat_matmul(g: _Graph, nodes: list, name: str) -> onnx.NodeProto:
    """One MatMul (output `name`) of the nodes' shared input by their weights side by side (new initializer)."""
    weights = [numpy_helper.to_array(g.inits[n.input[1]]) for n in nodes]
    g.graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}_weight"))
    return helper.make_node("MatMul", [nodes[0].input[0], f"{name}_weight"], [name], name=name)


def pack_sibling_matmuls(model: onnx.ModelProto) -> int:
    """Two MatMuls of one input by float [K, N] initializers of the same shape (an MLP's gate and up projections)
    -> one MatMul of twice the width + Split into the same two outputs: one weight op per decode step, not two.
    Returns how many pairs were packed."""
    g = _Graph(model)
    by_input: dict[str, list] = {}
    for node in g.graph.node:
        weight = g.inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is not None and len(weight.dims) == 2 and weight.data_type == onnx.TensorProto.FLOAT:
            by_input.setdefault(node.input[0], []).append(node)
    packed = 0
    for nodes in by_input.values():
        if len(nodes) != 2 or g.inits[nodes[0].input[1]].dims != g.inits[nodes[1].input[1]].dims:
            continue
        first, second = nodes
        width = g.inits[first.input[1]].dims[1]
        name = f"{first.name}_pair"
        g.graph.initializer.append(numpy_helper.from_array(np.array([width, width], dtype=np.int64), f"{name}_split"))
        at = list(g.graph.node).index(first)
        new = [_concat_matmul(g, nodes, name),
               helper.make_node("Split", [name, f"{name}_split"], [first.output[0], second.output[0]],
                                name=f"{name}_split", axis=-1)]
        for node in nodes:
            g.graph.node.remove(node)
        for i, node in enumerate(new):
            g.graph.node.insert(at + i, node)
        packed += 1
    _drop_dead_nodes(g.graph)
    return packed


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


# --- on a saved export, checked ------------------------------------------------------------------------------
def fuse_file(path: Path, atol: float = 1e-3) -> dict:
    """Rewrite the decoder at `path` in place when onnxruntime gives the same logits (prompt and one cached step,
    relative to the logits' scale) as the original. Returns what happened."""
    from edgelm.export.checked import rewrite_checked

    def rewrite(model):
        count = fuse_group_query_attention(model)
        return {"GroupQueryAttention": count, "packed_matmul_pairs": pack_sibling_matmuls(model) if count else 0}

    return rewrite_checked(path, rewrite, atol, "GroupQueryAttention", "max_logit_diff",
                           "no attention layer to rewrite (MultiHeadAttention with full-head rotary, a KV cache and "
                           "a head size that is a multiple of 16)")
