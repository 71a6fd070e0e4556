"""int4 'affine': min/max blocks with float offsets, exact on weights that already sit on a 4-bit affine grid
(GGUF Q4_1, as the built-in SmolLM2), with the offset term computed beside MatMulNBits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgelm.data.readers import calibration_texts
from edgelm.verify import fidelity
from edgelm.techniques.quantize.affine import block_ones, quantize_weight
from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

TEXTS = calibration_texts(6, seed=3)


def on_q4_1_grid(w: np.ndarray, block: int = 32) -> np.ndarray:
    """w [K, N] snapped to GGUF Q4_1 (blocks of `block` along K: min + d * q, q in 0..15, d and min in fp16)."""
    k, n = w.shape
    b = w.T.reshape(n, k // block, block)
    lo = b.min(axis=2, keepdims=True).astype(np.float16).astype(np.float32)
    d = ((b.max(axis=2, keepdims=True) - lo) / 15).astype(np.float16).astype(np.float32)
    d[d == 0] = 1.0
    q = np.clip(np.round((b - lo) / d), 0, 15)
    return (lo + d * q).reshape(n, k).T.astype(np.float32)


def decode(packed, scales, offsets, k):
    n, blocks, _ = packed.shape
    q = np.stack([packed & 15, packed >> 4], -1).reshape(n, blocks, -1).astype(np.float32)
    w = (q - 8) * scales[..., None] + offsets.T[..., None]
    return w.reshape(n, -1)[:, :k].T


def test_q4_1_grid_is_recovered_exactly():
    w = on_q4_1_grid(np.random.default_rng(0).normal(size=(96, 8)).astype(np.float32))
    np.testing.assert_allclose(decode(*quantize_weight(w, 32), 96), w, rtol=0, atol=1e-6)


def test_other_weights_round_to_the_nearest_level_and_odd_widths_pad():
    w = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)  # 2 blocks of 32, the second padded
    packed, scales, offsets = quantize_weight(w, 32)
    assert packed.shape == (3, 2, 16) and offsets.shape == (2, 3)
    assert np.abs(decode(packed, scales, offsets, 40) - w).max() <= scales.max() / 2 + 1e-6
    assert block_ones(40, 32).sum(axis=0).tolist() == [32, 8]


def test_graph_on_a_grid_matches_float_far_better_than_rtn(tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("llama", "causal-lm")
    model = onnx.load(str(src))
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.ndim == 2 and w.shape[0] % 32 == 0 and t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(on_q4_1_grid(w), t.name))
    grid = tmp_path / "grid" / "model.onnx"
    grid.parent.mkdir()
    onnx.save(model, str(grid))
    tok = tiny_tokenizer(folder)
    reference = fidelity.run_graph(grid, tok, TEXTS)
    sqnr = {}
    for algorithm in ("affine", "rtn"):
        dst = tmp_path / algorithm / "model.onnx"
        quantize_onnx(grid, dst, QuantOptions(method="int4", algorithm=algorithm, block_size=32, accuracy_level=None,
                                              quantize_embedding=False))
        ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
        assert "MatMulNBits" in ops and "MatMul" in ops  # the block sums / offset term run as plain MatMuls
        sqnr[algorithm] = fidelity.compare("causal-lm", reference, fidelity.run_graph(dst, tok, TEXTS))["sqnr_db"]
    assert sqnr["affine"] > 35 and sqnr["affine"] > sqnr["rtn"] + 15, sqnr


@pytest.mark.parametrize("table_block_size", [None, 16])
def test_tied_table_on_a_grid_is_shared_and_exact(table_block_size, tied_onnx, tiny_tokenizer, tmp_path):
    """The tied embedding lookup reads the affine LM head's 4-bit table and adds the token's block offsets: on a
    Q4_1 grid the whole model (table included) matches float, with one 4-bit table in the file."""
    folder, src = tied_onnx
    model = onnx.load(str(src))
    table = next(t for t in model.graph.initializer if "embed_tokens" in t.name)
    vocab, hidden = table.dims
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if t.data_type == onnx.TensorProto.FLOAT and w.ndim == 2 and list(w.shape) == [vocab, hidden]:
            t.CopyFrom(numpy_helper.from_array(on_q4_1_grid(w.T, table_block_size or 32).T.copy(), t.name))
        elif t.data_type == onnx.TensorProto.FLOAT and w.ndim == 2 and list(w.shape) == [hidden, vocab]:  # the LM head
            t.CopyFrom(numpy_helper.from_array(on_q4_1_grid(w, table_block_size or 32), t.name))
        elif t.data_type == onnx.TensorProto.FLOAT and w.ndim == 2 and w.shape[0] % 32 == 0:
            t.CopyFrom(numpy_helper.from_array(on_q4_1_grid(w), t.name))
    grid = tmp_path / "grid" / "model.onnx"
    grid.parent.mkdir()
    onnx.save(model, str(grid))
    dst = tmp_path / "affine" / "model.onnx"
    quantize_onnx(grid, dst, QuantOptions(method="int4", algorithm="affine", block_size=32, accuracy_level=None,
                                          table_block_size=table_block_size))
    out = onnx.load(str(dst))
    assert {p.key: p.value for p in out.metadata_props}["edgelm.tied_embedding"] == "True"
    assert "GatherBlockQuantized" in {n.op_type for n in out.graph.node}
    assert not [t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and {vocab, hidden} <= set(t.dims)]
    tok = tiny_tokenizer(folder)
    figures = fidelity.compare("causal-lm", fidelity.run_graph(grid, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["sqnr_db"] > 35 and figures["top1_agreement"] == 1.0, figures
