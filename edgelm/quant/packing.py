"""4-bit GatherBlockQuantized tables stored as uint8 nibbles (`bits=4`) instead of ONNX int4/uint4 tensors.

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
    low, high = values[..., 0::2], values[..., 1::2]
    return numpy_helper.from_array((low | (high << 4)).astype(np.uint8), tensor.name)


def _replace(model: onnx.ModelProto, old: onnx.TensorProto, new: onnx.TensorProto) -> None:
    index = list(model.graph.initializer).index(old)
    model.graph.initializer[index].CopyFrom(new)


def _set_bits(node) -> None:
    kept = [a for a in node.attribute if a.name != "bits"]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute("bits", 4)])


def _users(model: onnx.ModelProto, name: str) -> int:
    return sum(name in n.input for n in model.graph.node)
