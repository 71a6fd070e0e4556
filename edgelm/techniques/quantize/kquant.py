"""int4 k-quant for MatMul weights: onnxruntime's llama.cpp-style search of each block's scale and integer zero
point (`quant_tensor_k_quant_cpu`, which weighs the error by |w| and tries 20 scales per block), packed here into
MatMulNBits. onnxruntime's own k-quant node builder packs the 4-bit zero points of all columns as one stream,
which is MatMulNBits' per-column layout only when every column has an even number of blocks (SmolLM2's 576-wide
weights have 9 blocks of 64); packing per column here has no such limit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.techniques.quantize.packing import nbits_attrs, pack_nibbles, replace_float_matmuls


def kquant_matmuls(model: onnx.ModelProto, block_size: int, accuracy_level: int | None, exclude=()) -> int:
    """Replace every MatMul with a 2-D float initializer weight (not in `exclude`) by a k-quant MatMulNBits."""
    def rewrite(node, weight):
        packed, scales, zero_points = quantize_weight(numpy_helper.to_array(weight), block_size)
        name = weight.name
        model.graph.initializer.extend([numpy_helper.from_array(packed, f"{name}_Q4"),
                                        numpy_helper.from_array(scales, f"{name}_scales"),
                                        numpy_helper.from_array(zero_points, f"{name}_zero_points")])
        nbits = helper.make_node("MatMulNBits", [node.input[0], f"{name}_Q4", f"{name}_scales", f"{name}_zero_points"],
                                 list(node.output), name=f"{node.name}_Q4", domain="com.microsoft",
                                 **nbits_attrs(weight, block_size, accuracy_level))
        nbits.metadata_props.extend(node.metadata_props)
        model.graph.node.insert(list(model.graph.node).index(node), nbits)
        model.graph.node.remove(node)

    return replace_float_matmuls(model, rewrite, exclude)


def quantize_weight(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] float weight -> MatMulNBits B uint8 [N, blocks, block/2], scales float32 [N, blocks], zero points
    uint8 [N, ceil(blocks/2)] (low nibble first)."""
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor_k_quant_cpu

    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float32)
    padded[:k] = w
    with np.errstate(divide="ignore", invalid="ignore"):  # constant blocks: the search's D is 0 there, never chosen
        q, scale, zp = quant_tensor_k_quant_cpu(padded.T.copy(), num_bits=4, group_size=block_size)
    q = q.astype(np.uint8).reshape(n, blocks, block_size)
    packed = pack_nibbles(q)
    zp = zp.reshape(n, blocks)
    if blocks % 2:
        zp = np.concatenate([zp, np.zeros((n, 1), dtype=np.uint8)], axis=1)
    zero_points = pack_nibbles(zp)
    return packed, scale.astype(np.float32).reshape(n, blocks), zero_points
