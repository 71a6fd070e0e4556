"""Activation-aware int4 (edgelm.techniques.quantize.calibrated / awq): GPTQ and the importance-weighted blocks
lower the error they target against plain rounding on the same blocks; the AWQ fold leaves the float graph's
function unchanged and adds no op; each calibrated algorithm writes plain asymmetric MatMulNBits that share the
tied table, and is close to the float graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgelm.data.readers import calibration_texts
from edgelm.techniques.quantize.calibrated import (DAMP, block_params, dequantized, gptq_codes, input_moments,
                                                   round_blocks)
from edgelm.verify import fidelity
from edgelm.verify.feeds import TextCalibrationReader

TEXTS = calibration_texts(6, seed=3)


def correlated(k: int, n: int, tokens: int = 2048, seed: int = 0):
    """(weights [k, n], inputs [tokens, k]) with uneven, correlated channels, as real activations have."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k)) * np.exp(rng.normal(size=k))[None]
    return rng.normal(size=(k, n)).astype(np.float32), (rng.normal(size=(tokens, k)) @ mix).astype(np.float32)


def output_error(w, x, codes, scale, zero) -> float:
    return float(np.square(x @ (w - dequantized(codes, scale, zero.astype(np.float32), w.shape[0]))).mean())


@pytest.mark.parametrize("k,block", [(96, 32), (80, 32)])  # 80: a padded last block
def test_gptq_and_weighted_blocks_beat_plain_rounding(k, block):
    w, x = correlated(k, 48)
    h = (x.T @ x / len(x)).astype(np.float64)
    scale, zero = block_params(w, None, block)
    plain = output_error(w, x, round_blocks(w, scale, zero, block), scale, zero)
    gptq = output_error(w, x, gptq_codes(w, h, scale, zero, block), scale, zero)
    assert gptq < 0.8 * plain, (gptq, plain)
    importance = np.diag(h)
    ws, wz = block_params(w, importance, block)
    weighted = lambda s, z: float((importance[:, None] * np.square(  # noqa: E731
        w - dequantized(round_blocks(w, s, z, block), s, z.astype(np.float32), k))).sum())
    assert weighted(ws, wz) < weighted(scale, zero)


def reference_gptq(w, h, scale, zero, block, damp):
    """GPTQ as the paper writes it (one column at a time, the whole rest updated each step, act-order, static
    groups), on W [N, K] as torch.nn.Linear stores it: the oracle for the lazy-batched [K, N] implementation."""
    wt, k = w.T.astype(np.float64).copy(), w.shape[0]
    perm = np.argsort(-np.diag(h), kind="stable")
    hp = h[perm][:, perm] + damp * np.mean(np.diag(h)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(hp)).T
    wt = wt[:, perm]
    q = np.zeros_like(wt)
    for j in range(k):
        s, z = scale[:, perm[j] // block], zero[:, perm[j] // block].astype(np.float64)
        q[:, j] = (np.clip(np.round(wt[:, j] / s) + z, 0, 15) - z) * s
        wt[:, j + 1:] -= np.outer((wt[:, j] - q[:, j]) / u[j, j], u[j, j + 1:])
    out = np.empty_like(q)
    out[:, perm] = q
    return out.T


def test_gptq_matches_the_reference_algorithm():
    w, x = correlated(160, 40, seed=1)
    h = (x.T @ x / len(x)).astype(np.float64)
    scale, zero = block_params(w, np.diag(h), 32)
    ours = dequantized(gptq_codes(w, h, scale, zero, 32, lazy=48), scale, zero.astype(np.float32), 160)
    ref = reference_gptq(w, h, scale, zero, 32, DAMP)
    err = lambda q: float(np.square(x @ (w - q)).mean())  # noqa: E731
    assert np.mean(np.isclose(ours, ref, atol=1e-5)) > 0.98  # float32 updates may flip a rare tie
    assert abs(err(ours) - err(ref)) < 0.02 * err(ref), (err(ours), err(ref))


def test_awq_fold_keeps_the_float_function_and_adds_no_op(export_fused_onnx, tiny_onnx, tiny_tokenizer):
    from edgelm.techniques.quantize.awq import fold_scales

    for folder, src in (export_fused_onnx("llama", "causal-lm"), tiny_onnx("llama", "causal-lm")):
        tok = tiny_tokenizer(folder)
        model = onnx.load(str(src))
        moments = input_moments(model, TextCalibrationReader(src, tok, TEXTS))
        nodes = len(model.graph.node)
        assert fold_scales(model, moments, 16) >= 2  # the layers' norms / up projections took scales
        assert len(model.graph.node) == nodes
        folded = src.parent / "folded.onnx"
        onnx.save(model, str(folded))
        figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(folded, tok, TEXTS))
        assert figures["max_abs_diff"] < 1e-3, figures


@pytest.mark.parametrize("algorithm", ["gptq", "imatrix", "awq", "awq-gptq"])
def test_calibrated_algorithms_write_plain_asymmetric_nbits(algorithm, tied_onnx, tiny_tokenizer, tmp_path):
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    folder, src = tied_onnx
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    info = quantize_onnx(src, dst, QuantOptions(method="int4", algorithm=algorithm, block_size=16),
                         TextCalibrationReader(src, tok, TEXTS))
    model = onnx.load(str(dst))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(len(n.input) == 4 for n in nbits)  # zero points, no g_idx
    assert {p.key: p.value for p in model.metadata_props}["edgelm.tied_embedding"] == "True"
    assert info["op_counts"].get("MatMul", 0) == onnx_matmuls_without_weights(src)
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["sqnr_db"] > 10 and figures["perplexity_ratio"] < 1.05, figures


def onnx_matmuls_without_weights(path) -> int:
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    return sum(n.op_type == "MatMul" and n.input[1] not in inits for n in model.graph.node)


def test_finer_blocks_spend_the_budget_on_the_most_error_prone_matmuls(tied_onnx, tiny_tokenizer, tmp_path):
    from edgelm.core.errors import EdgelmError
    from edgelm.techniques.quantize.calibrated import _extra_bytes, finer_blocks, quantizable_matmuls
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    folder, src = tied_onnx
    tok = tiny_tokenizer(folder)
    model = onnx.load(str(src))
    moments = input_moments(model, TextCalibrationReader(src, tok, TEXTS))
    costs = {n.name: _extra_bytes(tuple(next(t.dims for t in model.graph.initializer if t.name == n.input[1])), 32)
             for n in quantizable_matmuls(model)}
    assert finer_blocks(model, moments, 32, (), sum(costs.values()) / 1e6) == set(costs)
    one = finer_blocks(model, moments, 32, (), max(costs.values()) / 1e6)
    assert one and sum(costs[n] for n in one) <= max(costs.values()) and one < set(costs)
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int4", algorithm="imatrix", block_size=32,
                                         finer_blocks_mb=max(costs.values()) / 1e6), TextCalibrationReader(src, tok, TEXTS))
    blocks = {n.name.removesuffix("_Q4"): next(a.i for a in n.attribute if a.name == "block_size")
              for n in onnx.load(str(dst)).graph.node if n.op_type == "MatMulNBits"}
    assert {name for name, size in blocks.items() if size == 16} == one
    with pytest.raises(EdgelmError, match="finer_blocks_mb"):
        quantize_onnx(src, dst, QuantOptions(method="int4", algorithm="rtn", finer_blocks_mb=1.0))


def test_calibrated_tied_table_takes_its_own_block_size(tied_onnx, tiny_tokenizer, tmp_path):
    from onnx import helper

    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    folder, src = tied_onnx
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int4", algorithm="gptq", block_size=32, table_block_size=16),
                  TextCalibrationReader(src, tok, TEXTS))
    model = onnx.load(str(dst))
    block = lambda n: next(helper.get_attribute_value(a) for a in n.attribute if a.name == "block_size")  # noqa: E731
    sizes = {n.name: block(n) for n in model.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.input[1] == model.graph.node[
        [m.name for m in model.graph.node].index(lookup.input[0].replace("_tied_data", "_tied_reshape"))].input[0])
    assert sizes[lookup.name] == sizes[head.name] == 16
    assert {size for name, size in sizes.items() if name not in (lookup.name, head.name)} == {32}
    assert {p.key: p.value for p in model.metadata_props}["edgelm.tied_embedding"] == "True"
