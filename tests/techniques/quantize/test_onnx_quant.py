"""The onnxruntime.quantization paths on tiny exported graphs: each method writes the quantized ops it promises,
shrinks the weights, stays close to the float graph, honours `exclude`, and works on fused graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgelm.data.readers import calibration_texts
from edgelm.core.errors import EdgelmError
from edgelm.verify import fidelity
from edgelm.verify.feeds import TextCalibrationReader
from edgelm.export.onnx_io import size_mb
from edgelm.measure.machine import int8_matmul_saturates
from edgelm.techniques.quantize.onnx_quant import QuantOptions, needs_calibration, quantize_onnx

TEXTS = calibration_texts(6, seed=3)
EXPECTED_OPS = {"int8-dynamic": "MatMulInteger", "int8-static": "QuantizeLinear", "int4": "MatMulNBits"}


def op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def quantize(src, dst, tokenizer, **options):
    opts = QuantOptions(**options)
    reader = TextCalibrationReader(src, tokenizer, TEXTS) if needs_calibration(opts) else None
    return quantize_onnx(src, dst, opts, reader)


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static", "int4", "fp16"])
def test_encoder_classifier_methods(method, tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("bert", "sequence-classification")
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    # on x86 without VNNI onnxruntime's u8s8 MatMulInteger saturates int16 pair sums: int8-dynamic read 12.8 dB there
    # vs 36.8 with VNNI (int8-static passed there as is; 7-bit weights would cost it 36 -> 26 dB here)
    saturates = method == "int8-dynamic" and int8_matmul_saturates()
    info = quantize(src, dst, tok, method=method, reduce_range=saturates)
    assert info["method"] == method and info["excluded_nodes"] == []
    if method in EXPECTED_OPS:
        assert EXPECTED_OPS[method] in op_types(dst)
    else:  # fp16: weights stored as float16, inputs/outputs stay as they were
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer if len(t.dims) == 2]
        floats = [w for w in weights if w.dtype in (np.float16, np.float32)]
        assert floats and all(w.dtype == np.float16 for w in floats)
    assert size_mb(dst) < size_mb(src)
    figures = fidelity.compare("sequence-classification", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert fidelity.check(figures, method).checks["label_agreement"]["ok"], figures
    assert figures["sqnr_db"] > (5 if method == "int4" else 25), figures  # 2 random-init logits: int4 is coarse


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static"])
def test_reduce_range_stores_7_bit_weights(method, tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("bert", "sequence-classification")
    info = quantize(src, tmp_path / "model.onnx", tiny_tokenizer(folder), method=method, reduce_range=True)
    assert info["params"]["reduce_range"] is True
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_int4_decoder_quantizes_the_embedding_table(tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("llama", "causal-lm")
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method="int4", block_size=16)
    model = onnx.load(str(dst))
    assert {"MatMulNBits", "GatherBlockQuantized"} <= {n.op_type for n in model.graph.node}
    table = next(t for t in onnx.load(str(src)).graph.initializer if "embed_tokens" in t.name)
    shapes = {tuple(table.dims), tuple(reversed(table.dims))}  # the table and the (transposed) LM head
    float_tables = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and tuple(t.dims) in shapes]
    assert not float_tables, f"float embedding / LM head left: {float_tables}"
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    checks = fidelity.check(figures, "int4").checks
    assert checks["top1_agreement"]["ok"] and checks["perplexity_ratio"]["ok"], figures


@pytest.mark.parametrize("algorithm", ["kquant", "hqq", "gptq"])
def test_int4_algorithms(algorithm, tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("llama", "causal-lm")
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method="int4", algorithm=algorithm, block_size=16)  # K=32/64: even block counts (kquant)
    assert {"MatMulNBits", "GatherBlockQuantized"} <= op_types(dst)
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    # random-init tiny logits are nearly flat, so top-1 flips easily; SQNR and perplexity are the honest measures here
    assert figures["sqnr_db"] > 10 and figures["perplexity_ratio"] < 1.05, figures


def test_kquant_odd_block_count_and_zero_point_packing(tiny_onnx, tiny_tokenizer, tmp_path):
    """One block per column (hidden 32, block 32) is where onnxruntime's own k-quant packing fails; ours packs
    zero points per column, and the weights MatMulNBits decodes are exactly the ones k-quant chose."""
    from edgelm.techniques.quantize.kquant import quantize_weight

    folder, src = tiny_onnx("llama", "causal-lm")
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int4", algorithm="kquant", block_size=32))
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["sqnr_db"] > 10 and figures["perplexity_ratio"] < 1.05, figures
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor_k_quant_cpu

    w = np.random.default_rng(0).normal(size=(96, 8)).astype(np.float32)  # 3 blocks of 32: odd
    packed, scales, zp = quantize_weight(w, 32)
    q = np.stack([packed & 15, packed >> 4], -1).reshape(8, 3, 32).astype(np.float32)
    z = np.stack([zp & 15, zp >> 4], -1).reshape(8, -1)[:, :3].astype(np.float32)
    decoded = ((q - z[..., None]) * scales[..., None]).reshape(8, 96).T
    ref_q, ref_scale, ref_zp = quant_tensor_k_quant_cpu(w.T.copy(), 4, 32)  # what k-quant chose, unpacked
    expected = ((ref_q - ref_zp) * ref_scale).reshape(8, 96).T
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(decoded - w).max() < 0.5


def test_gptq_without_calibration_is_a_clear_error(tiny_onnx, tmp_path):
    _, src = tiny_onnx("llama", "causal-lm")
    with pytest.raises(EdgelmError, match="calibration data"):
        quantize_onnx(src, tmp_path / "m.onnx", QuantOptions(method="int4", algorithm="gptq"))


@pytest.mark.parametrize("method", ["int8-dynamic", "int4"])
def test_excluded_node_stays_float(method, tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("llama", "causal-lm")
    weights = {t.name for t in onnx.load(str(src)).graph.initializer}
    target = next(n for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul" and n.input[1] in weights)
    quantize(src, tmp_path / "model.onnx", tiny_tokenizer(folder), method=method, exclude=[target.name])
    kept = [n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node if n.name == target.name]
    assert kept and kept[0].op_type == "MatMul" and kept[0].input[1] == target.input[1]


def test_unknown_excluded_node_is_a_clear_error(tiny_onnx, tmp_path):
    _, src = tiny_onnx("bert", "sequence-classification")
    with pytest.raises(EdgelmError, match="not in model.onnx"):
        quantize_onnx(src, tmp_path / "m.onnx", QuantOptions(exclude=["no_such_node"]))


@pytest.mark.parametrize("arch,task", [("bert", "sequence-classification"), ("llama", "causal-lm")])
@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static", "int4", "fp16"])
def test_fused_graph(arch, task, method, fused_onnx, tiny_tokenizer, tmp_path):
    folder, src = fused_onnx(arch, task)
    tok = tiny_tokenizer(folder)
    assert {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"} & op_types(src)
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method=method)
    figures = fidelity.compare(task, fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert fidelity.check(figures, method).ok, figures


def test_fused_graph_needs_default_tensor_type(fused_onnx, tmp_path):
    """The pitfall the int8 paths guard against: without DefaultTensorType onnxruntime cannot type the weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, src = fused_onnx("llama", "causal-lm")
    with pytest.raises(RuntimeError, match="DefaultTensorType"):
        quantize_dynamic(str(src), str(tmp_path / "m.onnx"), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


@pytest.mark.parametrize("symmetric,algorithm,shared", [(True, "rtn", True), (False, "rtn", True), (True, "hqq", False),
                                                     (True, "affine", True)])
def test_int4_tied_lm_head_shares_one_table(symmetric, algorithm, shared, tied_onnx, tiny_tokenizer, tmp_path):
    """HQQ's float zero points cannot feed GatherBlockQuantized (its zero points share the data's type), so
    there the table is quantized separately (RTN) rather than failing at load."""
    from edgelm.techniques.quantize.tied import find_tied_pair

    folder, src = tied_onnx
    tok = tiny_tokenizer(folder)
    assert find_tied_pair(onnx.load(str(src))) is not None
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method="int4", symmetric=symmetric, algorithm=algorithm)
    vocab, hidden = next(t.dims for t in onnx.load(str(src)).graph.initializer if "embed_tokens" in t.name)
    model = onnx.load(str(dst))
    assert {p.key: p.value for p in model.metadata_props}["edgelm.tied_embedding"] == str(shared)
    packed = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT4)
              and t.dims and t.dims[0] == vocab and np.prod(t.dims) * 2 >= vocab * hidden
              and not t.name.endswith("_offsets_Q8")]  # 4-bit tables, not zero points or affine block offsets
    assert len(packed) == (1 if shared else 2), [t.name for t in packed]
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and {vocab, hidden} <= set(t.dims)]
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert fidelity.check(figures, "int4").checks["perplexity_ratio"]["ok"] and figures["top1_agreement"] > 0.9, figures


def test_int4_fused_tied_lm_head_is_quantized_and_shared(fused_tied_onnx, tiny_tokenizer, tmp_path):
    """The export optimiser writes a tied LM head as FusedMatMul(transB=1) over the embedding table itself; int4
    must still store one 4-bit table for both (the real SmolLM2 export kept its 113 MB float table before)."""
    folder, src = fused_tied_onnx
    dst = tmp_path / "model.onnx"
    tok = tiny_tokenizer(folder)
    quantize(src, dst, tok, method="int4")
    out = onnx.load(str(dst))
    assert {p.key: p.value for p in out.metadata_props}["edgelm.tied_embedding"] == "True"
    assert {"GatherBlockQuantized", "MatMulNBits"} <= op_types(dst) and "FusedMatMul" not in op_types(dst)
    assert not [t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                and t.dims[0] * t.dims[1] >= 1000], "a float weight table stayed in the file"
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["top1_agreement"] > 0.9, figures


@pytest.mark.parametrize("method,expected", [("int8-dynamic", {"MatMulInteger"}),
                                             ("int8-static", {"QuantizeLinear"})])
def test_export_fused_encoder(method, expected, export_fused_onnx, tiny_tokenizer, tmp_path):
    """On the export stage's fused graph: the fused Attention is split into its QKV MatMul (quantized like every
    MatMul) and a weightless MultiHeadAttention (not QAttention, which breaks padded batches); static QDQ must
    still quantize activations (needs types for the contrib-op outputs)."""
    folder, src = export_fused_onnx("bert", "sequence-classification")
    tok = tiny_tokenizer(folder)
    assert "Attention" in op_types(src)
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method=method)
    ops = op_types(dst)
    assert expected <= ops and {"QAttention", "Attention"}.isdisjoint(ops) and "MultiHeadAttention" in ops, ops
    model = onnx.load(str(dst))
    qkv = [n for n in model.graph.node if n.name.endswith("_qkv") or n.name.endswith("_qkv_quant")]
    assert qkv and all(n.op_type in ("MatMulInteger", "MatMul") for n in qkv)
    float_qkv = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                 and t.dims[1] == 3 * t.dims[0]]
    assert not float_qkv, float_qkv
    figures = fidelity.compare("sequence-classification", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert fidelity.check(figures, method).checks["label_agreement"]["ok"] and figures["sqnr_db"] > 25, figures


def test_int4_fused_encoder_leaves_no_float_weight_matrix(export_fused_onnx, tiny_tokenizer, tmp_path):
    """int4 on the fused graph: MatMuls (the fused Attention's QKV projection too, after the split) become
    MatMulNBits, and what MatMulNBits cannot take (the pooler / classifier Gemm) is stored int8 behind a
    DequantizeLinear, so no float matrix stays."""
    folder, src = export_fused_onnx("bert", "sequence-classification")
    dst = tmp_path / "model.onnx"
    tok = tiny_tokenizer(folder)
    quantize(src, dst, tok, method="int4")
    model = onnx.load(str(dst))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weights = {n.input[1] for n in model.graph.node if n.op_type == "Gemm"}
    assert weights and weights <= dequantized, weights - dequantized
    assert "Attention" not in op_types(dst)  # split: the QKV projection is a MatMulNBits like the others
    assert any(n.op_type == "MatMulNBits" and "_qkv" in n.name for n in model.graph.node)
    float_matrices = [t.name for t in model.graph.initializer
                      if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) > 1
                      and not t.name.endswith(("_scale", "_scales"))]
    assert not float_matrices, float_matrices
    figures = fidelity.compare("sequence-classification", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert fidelity.check(figures, "int4").checks["label_agreement"]["ok"], figures


def test_fused_qkv_weight_built_by_concat_is_stored_int8(export_fused_onnx, tiny_tokenizer, tmp_path):
    """Real fused graphs (MiniLM) build the Attention QKV weight at run time as Concat(Wq, Wk, Wv); int8-dynamic
    folds it so no float QKV weight stays in the file."""
    from onnx import helper

    folder, fused = export_fused_onnx("bert", "sequence-classification")
    model = onnx.load(str(fused))
    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "Attention"]:
        w = numpy_helper.to_array(inits[node.input[1]])
        model.graph.initializer.remove(inits[node.input[1]])
        parts = np.split(w, 3, axis=1)
        names = [f"{node.input[1]}_{k}" for k in "qkv"]
        model.graph.initializer.extend(numpy_helper.from_array(p.copy(), n) for p, n in zip(parts, names))
        model.graph.node.insert(0, helper.make_node("Concat", names, [node.input[1]], axis=1))
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    onnx.save(model, str(src))
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tiny_tokenizer(folder), method="int8-dynamic")
    out = onnx.load(str(dst))
    assert "Concat" not in {n.op_type for n in out.graph.node if n.output[0].endswith(("qkv", "weight"))}
    assert "Attention" not in {n.op_type for n in out.graph.node}
    float_qkv = [t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                 and t.dims[1] == 3 * t.dims[0]]
    assert not float_qkv, float_qkv
    tok = tiny_tokenizer(folder)
    figures = fidelity.compare("sequence-classification", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["sqnr_db"] > 25, figures


def test_int4_tables_load_in_the_ort_format(tiny_onnx, tiny_tokenizer, tmp_path):
    """ORT Mobile has no int4 tensor type: the 4-bit embedding tables are uint8 nibbles, so the .ort loads and
    gives the .onnx's outputs."""
    from edgelm.export.ort_mobile import convert_to_ort

    folder, src = tiny_onnx("bert", "sequence-classification")
    tok = tiny_tokenizer(folder)
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tok, method="int4", block_size=16)
    model = onnx.load(str(dst))
    tables = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert tables and all(any(a.name == "bits" and a.i == 4 for a in n.attribute) for n in tables)
    assert not [t.name for t in model.graph.initializer if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)]
    ort_path = convert_to_ort(dst, tmp_path).path
    onnx_out, ort_out = (fidelity.run_graph(p, tok, TEXTS) for p in (dst, ort_path))
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(onnx_out.values, ort_out.values))
    float_out = fidelity.run_graph(src, tok, TEXTS)
    assert fidelity.compare("sequence-classification", float_out, onnx_out)["sqnr_db"] > 5


def test_int8_static_stores_embedding_and_fused_qkv_int8(export_fused_onnx, tiny_tokenizer, tmp_path):
    """Static QDQ covers MatMul/Gemm; the embedding tables (Gather) and the fused Attention QKV weight are int8 too,
    so no large float weight stays in the file."""
    folder, src = export_fused_onnx("bert", "sequence-classification")
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tiny_tokenizer(folder), method="int8-static")
    model = onnx.load(str(dst))
    float_weights = [t.name for t in model.graph.initializer
                     if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) >= 32]
    assert not float_weights, float_weights


def test_sensitivity_groups_include_the_fused_tied_lm_head(fused_tied_onnx):
    """int4 quantizes the fused LM head, so sensitivity must be able to keep it float (else every 'only this
    layer' run also carries the LM head's error)."""
    from edgelm.techniques.quantize.sensitivity import quantizable_groups

    _, src = fused_tied_onnx
    groups = quantizable_groups(src, QuantOptions(method="int4"))
    assert ["lm_head_fused"] in groups.values(), groups
    assert "lm_head_fused" not in sum(quantizable_groups(src, QuantOptions(method="int8-dynamic")).values(), [])


def test_split_attention_projection_is_exact_on_a_padded_batch(export_fused_onnx, tmp_path):
    """The split (QKV MatMul + Split + MultiHeadAttention with the attention bias) computes what the fused Attention
    computed, padding rows included, before any quantization."""
    import onnxruntime as ort

    from edgelm.techniques.quantize.onnx_quant import split_attention_projection

    _, src = export_fused_onnx("bert", "sequence-classification")
    model = onnx.load(str(src))
    layers = sum(n.op_type == "Attention" for n in model.graph.node)
    assert split_attention_projection(model) == layers > 0
    dst = tmp_path / "split.onnx"
    onnx.save(model, str(dst))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": np.array([[2, 7, 9, 0, 0, 0], [2, 8, 5, 9, 11, 3]], dtype=np.int64), "attention_mask": mask,
             "token_type_ids": np.zeros_like(mask)}
    outs = []
    for path in (src, dst):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_excluded_fused_attention_keeps_its_qkv_projection_float(export_fused_onnx, tiny_tokenizer, tmp_path):
    from edgelm.techniques.quantize.sensitivity import quantizable_groups

    folder, src = export_fused_onnx("bert", "sequence-classification")
    attention = next(n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Attention")
    assert any(attention in names for names in quantizable_groups(src, QuantOptions(method="int8-dynamic")).values())
    dst = tmp_path / "model.onnx"
    quantize(src, dst, tiny_tokenizer(folder), method="int8-dynamic", exclude=[attention])
    nodes = {n.name: n for n in onnx.load(str(dst)).graph.node}
    assert nodes[f"{attention}_qkv"].op_type == "MatMul"  # kept float, the other layer's QKV is quantized
    assert sum(n.op_type == "MatMulInteger" and "_qkv" in n.name for n in nodes.values()) >= 1
