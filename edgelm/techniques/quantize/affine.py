"""int4 'affine': each block of a MatMul weight is min/max quantized to 16 levels with a *float* offset, so
w = scale * (q - 8) + offset. Weights that came from an affine 4-bit grid (GGUF Q4_0/Q4_1, as the built-in
SmolLM2) are recovered exactly; other weights get asymmetric min/max rounding without an integer zero point.

MatMulNBits has no float offset when its scales are float32 and its zero points are integers, and float zero
points would cost a float32 per block (the size of the scales again). The offset term is computed apart instead:
x @ W = MatMulNBits(x) + blocksum(x) @ C, with blocksum(x) = x @ S (S: K x blocks of ones, one per width K, shared)
and C (blocks x N) stored int8 per column behind a DequantizeLinear: 1/32 of a byte per weight at block 32.
(Measured on SmolLM2, 2 threads: 8-bit MatMulNBits for C was slower, 76 vs ~83 tok/s, and 3.4 MB larger. The
extra small ops per layer are what costs: RTN without offsets decodes at ~127 tok/s.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.techniques.quantize.tied import padded_width
from edgelm.techniques.quantize.packing import int8_columns, nbits_attrs, pack_nibbles, replace_float_matmuls

LEVELS = 15  # 4-bit: q in 0..15, symmetric MatMulNBits subtracts its default zero point 8


def affine_matmuls(model: onnx.ModelProto, block_size: int, accuracy_level: int | None, exclude=(), only=None) -> int:
    """Replace every MatMul with a 2-D float initializer weight (not in `exclude`; only those in `only` when
    given) by MatMulNBits + offset term."""
    sums: dict[tuple[str, int, int], str] = {}  # (input, K, block) -> its block sums, shared by the MatMuls reading it
    return replace_float_matmuls(model, lambda node, weight: _replace(model, node, weight, block_size, accuracy_level, sums),
                                 exclude, only)


def _replace(model, node, weight, block_size: int, accuracy_level: int | None, sums: dict) -> None:
    name, k, out = weight.name, weight.dims[0], node.output[0]
    packed, scales, offsets = quantize_weight(numpy_helper.to_array(weight), block_size)
    q8, s8 = int8_columns(offsets)
    model.graph.initializer.extend([numpy_helper.from_array(packed, f"{name}_Q4"),
                                    numpy_helper.from_array(scales, f"{name}_scales"),
                                    numpy_helper.from_array(q8, f"{name}_offsets_int8"),
                                    numpy_helper.from_array(s8, f"{name}_offsets_scale")])
    new = [helper.make_node("MatMulNBits", [node.input[0], f"{name}_Q4", f"{name}_scales"], [f"{out}_nbits"],
                            name=f"{node.name}_Q4", domain="com.microsoft", **nbits_attrs(weight, block_size, accuracy_level))]
    key = (node.input[0], k, block_size)
    if key not in sums:
        ones = f"blocksum_{k}_{block_size}"
        if not any(t.name == ones for t in model.graph.initializer):
            model.graph.initializer.append(numpy_helper.from_array(block_ones(k, block_size), ones))
        sums[key] = f"{node.name}_blocksum"
        new.append(helper.make_node("MatMul", [node.input[0], ones], [sums[key]], name=f"{node.name}_blocksum"))
    new += [helper.make_node("DequantizeLinear", [f"{name}_offsets_int8", f"{name}_offsets_scale"], [f"{name}_offsets"],
                             name=f"{name}_offsets_dequantize", axis=1),
            helper.make_node("MatMul", [sums[key], f"{name}_offsets"], [f"{out}_offset"], name=f"{node.name}_offset"),
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


COLUMNS_PER_CHUNK = 8192  # output columns quantized at a time: each is independent, so the result is the same


def quantize_weight(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] float weight -> MatMulNBits B uint8 [N, blocks, block/2] (low nibble first), scales float32
    [N, blocks] and float offsets [blocks, N], with w ~= scale * (q - 8) + offset per block. Done COLUMNS_PER_CHUNK
    columns at a time: the float temporaries of a whole LM head (Llama-3.2-1B: 2048 x 128256, 1 GB each) would
    be several copies of the table at once."""
    parts = [_quantize_columns(w[:, start:start + COLUMNS_PER_CHUNK], block_size)
             for start in range(0, w.shape[1], COLUMNS_PER_CHUNK)]
    if len(parts) == 1:
        return parts[0]
    packed, scales, offsets = zip(*parts)
    return np.concatenate(packed), np.concatenate(scales), np.concatenate(offsets, axis=1)


def _quantize_columns(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.pad(w.astype(np.float32), ((0, blocks * block_size - k), (0, 0)), mode="edge")  # min/max unchanged
    b = padded.T.reshape(n, blocks, block_size)
    lo, hi = b.min(axis=2), b.max(axis=2)
    scale = (hi - lo) / LEVELS
    scale[scale == 0] = 1.0
    q = np.clip(np.round((b - lo[..., None]) / scale[..., None]), 0, LEVELS).astype(np.uint8)
    packed = pack_nibbles(q)
    offsets = (lo + 8 * scale).T
    return packed, scale.astype(np.float32), offsets.astype(np.float32)


def _offsets_source(model: onnx.ModelProto, pair):
    """(embedding lookup, LM head offsets DequantizeLinear, hidden size) when the LM head is affine and the lookup
    takes rank-2 token ids; None otherwise. Holds before and after `tie_to_lm_head` (same lookup name and ids)."""
    nodes = {n.name: n for n in model.graph.node}
    lookup, head = nodes.get(pair.gather), nodes.get(f"{pair.lm_head}_Q4")
    ids = next((i for i in model.graph.input if lookup is not None and i.name == lookup.input[1]), None)
    if head is None or lookup is None or ids is None or len(ids.type.tensor_type.shape.dim) != 2:
        return None
    offsets = nodes.get(f"{head.input[1].removesuffix('_Q4')}_offsets_dequantize")
    hidden = next(a.i for a in head.attribute if a.name == "K")
    return None if offsets is None else (lookup, offsets, hidden)


def can_tie_offsets(model: onnx.ModelProto, pair) -> bool:
    return _offsets_source(model, pair) is not None


def tie_offsets(model: onnx.ModelProto, pair, block_size: int) -> bool:
    """After `tie_to_lm_head` on an affine LM head, the GatherBlockQuantized lookup decodes scale * (q - 8) only:
    add each token's block offsets (the LM head's offsets [blocks, vocab], gathered by column, spread over the
    block's hidden positions). Needs rank-2 token ids; returns False (nothing changed) otherwise.

    The lookup gathers the *int8* offsets and their column scales. onnxruntime turns a DequantizeLinear -> MatMul
    into an 8-bit MatMulNBits only when the DequantizeLinear's inputs are its own, and never folds a
    DequantizeLinear: with the table sharing them, the head's offsets were dequantized on every call (1.1 ms of a
    6.5 ms SmolLM2 decode step; 2 x 1.1 ms when the lookup read the dequantized tensor). So the head's offsets
    become Cast + Mul, which onnxruntime folds once at load."""
    source = _offsets_source(model, pair)
    if source is None:
        return False
    lookup, offsets, hidden = source
    hidden = padded_width(hidden, block_size)  # a padded lookup decodes whole blocks; it is sliced after the offsets
    (q8, s8), ids = offsets.input[:2], lookup.input[1]
    out, spread, p = lookup.output[0], f"blockspread_{hidden}_{block_size}", pair.gather
    model.graph.initializer.append(numpy_helper.from_array(block_ones(hidden, block_size).T.copy(), spread))
    at = list(model.graph.node).index(offsets)
    model.graph.node.remove(offsets)
    model.graph.node.insert(at, helper.make_node("Cast", [q8], [f"{offsets.output[0]}_q"], name=f"{offsets.name}_cast",
                                                 to=onnx.TensorProto.FLOAT))
    model.graph.node.insert(at + 1, helper.make_node("Mul", [f"{offsets.output[0]}_q", s8], [offsets.output[0]],
                                                     name=f"{offsets.name}_scale"))
    minus_one = f"{p}_offsets_last_axis"
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), minus_one))
    lookup.output[0] = f"{out}_symmetric"
    new = [helper.make_node("Gather", [q8, ids], [f"{out}_offsets_int8"], name=f"{p}_offsets", axis=1),
           helper.make_node("Cast", [f"{out}_offsets_int8"], [f"{out}_offsets_q"], name=f"{p}_offsets_cast",
                            to=onnx.TensorProto.FLOAT),
           helper.make_node("Transpose", [f"{out}_offsets_q"], [f"{out}_offsets_t"], name=f"{p}_offsets_t", perm=[1, 2, 0]),
           helper.make_node("MatMul", [f"{out}_offsets_t", spread], [f"{out}_offsets_h"], name=f"{p}_offsets_spread"),
           helper.make_node("Gather", [s8, ids], [f"{out}_offsets_scale"], name=f"{p}_offsets_scale"),
           helper.make_node("Unsqueeze", [f"{out}_offsets_scale", minus_one], [f"{out}_offsets_scale_1"],
                            name=f"{p}_offsets_scale_unsqueeze"),
           helper.make_node("Mul", [f"{out}_offsets_h", f"{out}_offsets_scale_1"], [f"{out}_offsets"], name=f"{p}_offsets_scaled"),
           helper.make_node("Add", [f"{out}_symmetric", f"{out}_offsets"], [out], name=f"{p}_affine")]
    at = list(model.graph.node).index(lookup) + 1
    for i, node in enumerate(new):
        model.graph.node.insert(at + i, node)
    return True
