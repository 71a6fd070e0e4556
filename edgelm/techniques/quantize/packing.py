"""Packing shared by the quantizers: two 4-bit values per byte, int8 per output column; and 4-bit
GatherBlockQuantized tables stored as uint8 nibbles (`bits=4`) instead of ONNX int4/uint4 tensors.

The ORT format (.ort, ONNX Runtime Mobile) has no int4 tensor type: a model with an int4 initializer converts
but fails to load ("Unsupported tensor data type ... Invalid ORT format model"). GatherBlockQuantized also takes
uint8 data holding two 4-bit values per byte (low nibble first) with an implicit zero point of 8, which both the
.onnx and the .ort load, so int4 tables are rewritten to it: value + 8, same scales, same results.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

OFFSET = {onnx.TensorProto.INT4: 8, onnx.TensorProto.UINT4: 0}


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 values 0..15 [..., even] -> uint8 [..., half], low nibble first (MatMulNBits' and GatherBlockQuantized's
    layout)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def int8_columns(w: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one float32 scale per index of `axis` (the output column): (q, scale)."""
    scale = (np.abs(w).max(axis=1 - axis) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / np.expand_dims(scale, 1 - axis)), -127, 127).astype(np.int8), scale


def replace_float_matmuls(model: onnx.ModelProto, rewrite, exclude=(), only=None) -> int:
    """rewrite(node, weight) for every MatMul whose B is a 2-D float initializer (not in `exclude`; only those in
    `only` when given); weights no node reads any more are dropped and the com.microsoft opset is declared."""
    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for node in list(model.graph.node):
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is None or node.name in exclude or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        if only is not None and node.name not in only:
            continue
        rewrite(node, weight)
        if not any(weight.name in n.input for n in model.graph.node):
            model.graph.initializer.remove(weight)
        done += 1
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def nbits_attrs(weight: onnx.TensorProto, block_size: int, accuracy_level: int | None) -> dict:
    """MatMulNBits attributes for a 4-bit [K, N] weight."""
    k, n = weight.dims
    return dict(K=k, N=n, bits=4, block_size=block_size, **({"accuracy_level": accuracy_level} if accuracy_level else {}))


def gather_tables_as_uint8(model: onnx.ModelProto) -> int:
    """Rewrite every int4 GatherBlockQuantized table (and its zero points) in place; returns how many."""
    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "GatherBlockQuantized" or node.input[0] not in inits:
            continue
        data = inits[node.input[0]]
        zero_point = inits.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if data.data_type not in OFFSET or _users(model, data.name) > 1:
            continue
        if zero_point is None and data.data_type == onnx.TensorProto.UINT4:
            continue  # uint4's implicit zero point is 0, uint8's is 8: would need explicit zero points
        if zero_point is not None and zero_point.data_type not in OFFSET:
            continue
        _replace(model, data, _packed(data))
        if zero_point is not None:
            _replace(model, zero_point, _packed(zero_point))
        _set_bits(node)
        done += 1
    return done


def _packed(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """uint8 [.., last/2] with value + offset, low nibble first (an odd last dimension gets a zero nibble)."""
    values = numpy_helper.to_array(tensor).astype(np.int16) + OFFSET[tensor.data_type]
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], 1), values.dtype)], axis=-1)
    return numpy_helper.from_array(pack_nibbles(values), tensor.name)


def _replace(model: onnx.ModelProto, old: onnx.TensorProto, new: onnx.TensorProto) -> None:
    index = list(model.graph.initializer).index(old)
    model.graph.initializer[index].CopyFrom(new)


def _set_bits(node) -> None:
    kept = [a for a in node.attribute if a.name != "bits"]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute("bits", 4)])


def _users(model: onnx.ModelProto, name: str) -> int:
    return sum(name in n.input for n in model.graph.node)
