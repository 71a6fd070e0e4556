"""Tied token embedding / LM head under int4.

torch.onnx.export writes a tied LM head as a second, transposed copy of the embedding table. Quantizing both
separately keeps two int4 tables (for SmolLM2-135M about 18 MB each). Instead the LM head is quantized to
MatMulNBits and the embedding lookup becomes a GatherBlockQuantized reading the very same bytes: MatMulNBits
stores B as uint8 [N, blocks, blob] (zero point 8, or packed zero points), which is what GatherBlockQuantized
decodes from uint8 [N, K/2] data with the same scales and zero points. Only a Reshape sits between the two views (folded by onnxruntime at load).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class TiedPair:
    gather: str  # node name of the embedding Gather
    lm_head: str  # node name of the LM head MatMul
    table: str  # initializer name of the embedding table [vocab, hidden]


def find_tied_pair(model: onnx.ModelProto) -> TiedPair | None:
    """The embedding Gather and the LM head MatMul whose weight is the transposed embedding table, if any
    (an optimised graph's FusedMatMul(transB) LM head is found after `unfuse_transposed_lm_head`)."""
    inputs = {i.name for i in model.graph.input}
    inits = {t.name: t for t in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits and n.input[1] in inputs]
    for gather in gathers:
        table = inits[gather.input[0]]
        if len(table.dims) != 2:
            continue
        transposed_dims = [table.dims[1], table.dims[0]]
        for node in model.graph.node:
            if node.op_type != "MatMul" or node.input[1] not in inits or list(inits[node.input[1]].dims) != transposed_dims:
                continue
            if np.array_equal(numpy_helper.to_array(table).T, numpy_helper.to_array(inits[node.input[1]])):
                return TiedPair(gather.name, node.name, table.name)
    return None


def unfuse_transposed_lm_head(model: onnx.ModelProto, exclude=()) -> bool:
    """The export optimiser folds the tied LM head's Transpose into FusedMatMul(transB=1) over the embedding
    table; the int4 quantizer only takes MatMul with a [K, N] weight. Rewrite it as a plain MatMul over a
    transposed copy of the table (the tie is then found as in an unoptimised graph)."""
    inits = {t.name: t for t in model.graph.initializer}
    gather_tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    changed = False
    for node in list(model.graph.node):
        if node.op_type != "FusedMatMul" or node.input[1] not in gather_tables or node.name in exclude:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transB") != 1 or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("transBatchA", 0) or attrs.get("transBatchB", 0) or len(inits[node.input[1]].dims) != 2:
            continue
        transposed = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]).T.copy(), node.input[1] + "_T")
        model.graph.initializer.append(transposed)
        index = list(model.graph.node).index(node)
        matmul = helper.make_node("MatMul", [node.input[0], transposed.name], list(node.output), name=node.name)
        matmul.metadata_props.extend(node.metadata_props)
        model.graph.node.remove(node)
        model.graph.node.insert(index, matmul)
        changed = True
    return changed


def tie_to_lm_head(model: onnx.ModelProto, pair: TiedPair, block_size: int) -> bool:
    """Replace the float embedding Gather by a GatherBlockQuantized over the LM head's MatMulNBits weights.
    Zero points (asymmetric blocks) are shared too: both ops pack them as uint8 [N, ceil(blocks / 2)].
    Returns False (model untouched) when the LM head is not a 4-bit MatMulNBits (excluded, or another op) or its
    zero points are float (HQQ)."""
    nodes = {n.name: n for n in model.graph.node}
    head = next((n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.startswith(pair.lm_head)), None)
    gather = nodes.get(pair.gather)
    if head is None or gather is None or len(head.input) > 4 and head.input[4]:  # g_idx (act-order GPTQ): no
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    if attrs.get("bits", 4) != 4 or not _packed_zero_points(model, head):
        return False
    vocab, hidden, block = attrs["N"], attrs["K"], attrs.get("block_size", block_size)
    width = padded_width(hidden, block)
    shape_name = f"{pair.gather}_tied_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.array([vocab, width // 2], dtype=np.int64), shape_name))
    data_view = f"{pair.gather}_tied_data"
    reshape = helper.make_node("Reshape", [head.input[1], shape_name], [data_view], name=f"{pair.gather}_tied_reshape")
    zero_points = [head.input[3]] if len(head.input) > 3 and head.input[3] else []
    rows = gather.output[0] if width == hidden else f"{gather.output[0]}_padded"
    lookup = helper.make_node("GatherBlockQuantized", [data_view, gather.input[1], head.input[2]] + zero_points, [rows],
                              name=pair.gather, domain="com.microsoft", gather_axis=0, quantize_axis=1,
                              block_size=block, bits=4)
    index = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for node in reversed([reshape, lookup, *_drop_padding(model, pair.gather, rows, gather.output[0], hidden)]):
        model.graph.node.insert(index, node)
    _drop_initializer(model, pair.table)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return True


def padded_width(k: int, block_size: int) -> int:
    """MatMulNBits pads K up to whole blocks (zeros in the packed blob); a lookup of its rows decodes that width."""
    return -(-k // block_size) * block_size


def _drop_padding(model: onnx.ModelProto, name: str, rows: str, out: str, hidden: int) -> list:
    """Slice a padded lookup's rows back to `hidden` columns (nothing when the rows are not padded)."""
    if rows == out:
        return []
    bounds = [numpy_helper.from_array(np.array([v], dtype=np.int64), f"{name}_tied_{key}")
              for key, v in (("start", 0), ("end", hidden), ("axis", -1))]
    model.graph.initializer.extend(bounds)
    return [helper.make_node("Slice", [rows, *(b.name for b in bounds)], [out], name=f"{name}_tied_slice")]


def _packed_zero_points(model: onnx.ModelProto, head) -> bool:
    """True when the head has no zero points or packed uint8 ones; HQQ writes float zero points, which
    GatherBlockQuantized rejects (its zero points share the data's type), so such a table is not shared."""
    if len(head.input) <= 3 or not head.input[3]:
        return True
    zp = next((t for t in model.graph.initializer if t.name == head.input[3]), None)
    return zp is not None and zp.data_type == onnx.TensorProto.UINT8


def _drop_initializer(model: onnx.ModelProto, name: str) -> None:
    if any(name in n.input for n in model.graph.node):
        return
    for tensor in list(model.graph.initializer):
        if tensor.name == name:
            model.graph.initializer.remove(tensor)
