"""int4 'affine': each block of a MatMul weight is min/max quantized to 16 levels with a *float* offset, so
w = scale * (q - 8) + offset. Weights that came from an affine 4-bit grid (GGUF Q4_0/Q4_1, as the built-in
SmolLM2) are recovered exactly; other weights get asymmetric min/max rounding without an integer zero point.

MatMulNBits has no float offset when its scales are float32 and its zero points are integers, and float zero
points would cost a float32 per block (the size of the scales again). The offset term is computed apart instead:
x @ W = MatMulNBits(x) + blocksum(x) @ C, with blocksum(x) = x @ S (S: K x blocks of ones, one per width K, shared)
and C (blocks x N) an 8-bit MatMulNBits of its own (groups of 16 blocks): about 1/20 of a byte per weight at
block 32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

LEVELS = 15  # 4-bit: q in 0..15, symmetric MatMulNBits subtracts its default zero point 8
OFFSET_BLOCK = 16  # the smallest MatMulNBits block: the offsets' K is only K / block_size (18 for K = 576)


def affine_matmuls(model: onnx.ModelProto, block_size: int, accuracy_level: int | None, exclude=(), only=None) -> int:
    """Replace every MatMul with a 2-D float initializer weight (not in `exclude`; only those in `only` when
    given) by MatMulNBits + offset term."""
    inits = {t.name: t for t in model.graph.initializer}
    sums: dict[tuple[str, int], str] = {}  # (input, K) -> its block sums, shared by the MatMuls reading it
    done = 0
    for node in list(model.graph.node):
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is None or node.name in exclude or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        if only is not None and node.name not in only:
            continue
        _replace(model, node, weight, block_size, accuracy_level, sums)
        if not any(weight.name in n.input for n in model.graph.node):
            model.graph.initializer.remove(weight)
        done += 1
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def _replace(model, node, weight, block_size: int, accuracy_level: int | None, sums: dict) -> None:
    name, (k, n), out = weight.name, weight.dims, node.output[0]
    packed, scales, offsets = quantize_weight(numpy_helper.to_array(weight), block_size)
    q8, s8 = offsets_8bit(offsets)
    model.graph.initializer.extend([numpy_helper.from_array(packed, f"{name}_Q4"),
                                    numpy_helper.from_array(scales, f"{name}_scales"),
                                    numpy_helper.from_array(q8, f"{name}_offsets_Q8"),
                                    numpy_helper.from_array(s8, f"{name}_offsets_scales")])
    attrs = dict(K=k, N=n, bits=4, block_size=block_size, **({"accuracy_level": accuracy_level} if accuracy_level else {}))
    new = [helper.make_node("MatMulNBits", [node.input[0], f"{name}_Q4", f"{name}_scales"], [f"{out}_nbits"],
                            name=f"{node.name}_Q4", domain="com.microsoft", **attrs)]
    key = (node.input[0], k, block_size)
    if key not in sums:
        ones = f"blocksum_{k}_{block_size}"
        if not any(t.name == ones for t in model.graph.initializer):
            model.graph.initializer.append(numpy_helper.from_array(block_ones(k, block_size), ones))
        sums[key] = f"{node.name}_blocksum"
        new.append(helper.make_node("MatMul", [node.input[0], ones], [sums[key]], name=f"{node.name}_blocksum"))
    # float math on the block sums (they can be large): no accuracy_level on the 8-bit offset product
    new += [helper.make_node("MatMulNBits", [sums[key], f"{name}_offsets_Q8", f"{name}_offsets_scales"], [f"{out}_offset"],
                             name=f"{node.name}_offset", domain="com.microsoft", K=offsets.shape[0], N=n, bits=8,
                             block_size=OFFSET_BLOCK),
            helper.make_node("Add", [f"{out}_nbits", f"{out}_offset"], [out], name=f"{node.name}_affine")]
    at = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for i, extra in enumerate(new):
        model.graph.node.insert(at + i, extra)


def block_ones(k: int, block_size: int) -> np.ndarray:
    """S [K, blocks]: x @ S sums x over each block of K."""
    s = np.zeros((k, -(-k // block_size)), dtype=np.float32)
    s[np.arange(k), np.arange(k) // block_size] = 1.0
    return s


def quantize_weight(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] float weight -> MatMulNBits B uint8 [N, blocks, block/2] (low nibble first), scales float32
    [N, blocks] and float offsets [blocks, N], with w ~= scale * (q - 8) + offset per block."""
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.pad(w.astype(np.float32), ((0, blocks * block_size - k), (0, 0)), mode="edge")  # min/max unchanged
    b = padded.T.reshape(n, blocks, block_size)
    lo, hi = b.min(axis=2), b.max(axis=2)
    scale = (hi - lo) / LEVELS
    scale[scale == 0] = 1.0
    q = np.clip(np.round((b - lo[..., None]) / scale[..., None]), 0, LEVELS).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    offsets = (lo + 8 * scale).T
    return packed, scale.astype(np.float32), offsets.astype(np.float32)


def offsets_8bit(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets [blocks, N] as an 8-bit MatMulNBits B: uint8 [N, groups, 16] (zero point 128) and scales
    [N, groups], symmetric per group of 16 blocks (the offsets stay in MatMulNBits' fused kernels: no per-call
    dequantization of the whole matrix)."""
    kb, n = c.shape
    groups = -(-kb // OFFSET_BLOCK)
    padded = np.zeros((n, groups * OFFSET_BLOCK), dtype=np.float32)
    padded[:, :kb] = c.T
    g = padded.reshape(n, groups, OFFSET_BLOCK)
    scale = (np.abs(g).max(axis=2) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = (np.clip(np.round(g / scale[..., None]), -127, 127) + 128).astype(np.uint8)
    return q, scale


def tie_offsets(model: onnx.ModelProto, pair, block_size: int) -> bool:
    """After `tie_to_lm_head` on an affine LM head, the GatherBlockQuantized lookup decodes scale * (q - 8) only:
    add each token's block offsets, read by a second (8-bit) GatherBlockQuantized from the LM head's offset
    MatMulNBits weights and spread over the block's hidden positions. Returns False when the head is not affine."""
    nodes = {n.name: n for n in model.graph.node}
    lookup, offset = nodes.get(pair.gather), nodes.get(f"{pair.lm_head}_offset")
    head = nodes.get(f"{pair.lm_head}_Q4")
    if lookup is None or offset is None or head is None or offset.op_type != "MatMulNBits":
        return False
    hidden = next(a.i for a in head.attribute if a.name == "K")
    vocab = next(a.i for a in offset.attribute if a.name == "N")
    q8 = next(t for t in model.graph.initializer if t.name == offset.input[1])
    width = q8.dims[1] * q8.dims[2]
    out, view, spread = lookup.output[0], f"{pair.gather}_offsets_view", f"blockspread_{hidden}_{block_size}_{width}"
    spread_matrix = np.zeros((width, hidden), dtype=np.float32)
    spread_matrix[: -(-hidden // block_size)] = block_ones(hidden, block_size).T
    model.graph.initializer.extend([numpy_helper.from_array(spread_matrix, spread),
                                    numpy_helper.from_array(np.array([vocab, width], dtype=np.int64), f"{view}_shape")])
    lookup.output[0] = f"{out}_symmetric"
    new = [helper.make_node("Reshape", [offset.input[1], f"{view}_shape"], [view], name=f"{pair.gather}_offsets_reshape"),
           helper.make_node("GatherBlockQuantized", [view, lookup.input[1], offset.input[2]], [f"{out}_offsets"],
                            name=f"{pair.gather}_offsets", domain="com.microsoft", gather_axis=0, quantize_axis=1,
                            block_size=OFFSET_BLOCK, bits=8),
           helper.make_node("MatMul", [f"{out}_offsets", spread], [f"{out}_offsets_h"], name=f"{pair.gather}_offsets_spread"),
           helper.make_node("Add", [f"{out}_symmetric", f"{out}_offsets_h"], [out], name=f"{pair.gather}_affine")]
    at = list(model.graph.node).index(lookup) + 1
    for i, node in enumerate(new):
        model.graph.node.insert(at + i, node)
    return True
