"""Decoder attention as GroupQueryAttention: the export stage's fused decoder graph runs one attention op per
layer, computes what the MultiHeadAttention graph it replaces computes (left-padded batches too), and a rewrite
that changes the logits is refused."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort

import pytest

from tests.tiny import build_tiny


@pytest.fixture(scope="module")
def gqa_llama(tmp_path_factory):
    """(bundle, fused export, export without fusions) of a tiny llama with head size 16 (onnxruntime's
    GroupQueryAttention needs a multiple of 16; the shared tiny llama has 8 and keeps MultiHeadAttention)."""
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    folder = build_tiny(tmp_path_factory.mktemp("tiny-llama-h16"), "llama", hidden_size=64)
    bundle = load_model(str(folder))
    fused = export_onnx(bundle, tmp_path_factory.mktemp("gqa-fused"), fuse=True)
    raw = export_onnx(bundle, tmp_path_factory.mktemp("gqa-raw"))
    return bundle, fused, raw


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _mha_copy(gqa_llama, tmp_path):
    """The fused graph before the GroupQueryAttention rewrite (onnxscript fusions only)."""
    import onnx_ir as ir

    from edgelm.export.optimize import optimize_model

    raw = gqa_llama[2]
    model, _ = optimize_model(ir.load(str(raw.path)))
    path = tmp_path / "mha.onnx"
    ir.save(model, str(path))
    return path


def test_fused_decoder_runs_one_attention_op_per_layer(gqa_llama):
    bundle, fused, _ = gqa_llama
    layers = bundle.model.config.num_hidden_layers
    ops = _ops(fused.path)
    assert ops["GroupQueryAttention"] == layers and not ops["MultiHeadAttention"]
    assert not ops["Neg"] and not any(n.startswith("present.") for n in _concat_outputs(fused.path))  # in the op now
    assert fused.optimization["fusions"]["GroupQueryAttention"] == layers
    assert fused.optimization["group_query_attention"]["packed_matmul_pairs"] == layers  # gate + up
    assert ops["Split"] >= layers and ops["MatMul"] == 4 * layers + 1  # qkv, o, gate|up, down per layer; lm head
    assert fused.optimization["group_query_attention"]["max_logit_diff"] < 1e-4
    assert [t.name for t in fused.inputs][:3] == ["input_ids", "attention_mask", "position_ids"]


def test_left_padded_batch_matches_the_graph_it_replaces(gqa_llama, tmp_path):
    """Prompt logits at the real positions and the next step's logits (each graph fed its own cache) agree.
    The cached keys differ: GroupQueryAttention rotates by cache position, the original by position_ids, which
    for the padded row is a constant shift, so attention between real tokens is unchanged."""
    fused = gqa_llama[1]
    mha = _mha_copy(gqa_llama, tmp_path)
    assert _ops(mha)["MultiHeadAttention"] and not _ops(mha)["GroupQueryAttention"]
    prompt, step = [], []
    for path in (mha, fused.path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feeds = _padded_feeds(session)
        out = dict(zip(names, session.run(None, feeds)))
        prompt.append(out["logits"])
        mask = np.concatenate([feeds["attention_mask"], np.ones((2, 1), np.int64)], axis=1)
        nxt = {"input_ids": np.array([[4], [6]]), "attention_mask": mask, "position_ids": feeds["position_ids"][:, -1:] + 1}
        nxt |= {n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")}
        step.append(session.run(["logits"], nxt)[0])
    real = _padded_feeds(session)["attention_mask"].astype(bool)
    np.testing.assert_allclose(prompt[0][real], prompt[1][real], atol=1e-4)
    np.testing.assert_allclose(step[0], step[1], atol=1e-4)


def test_a_rewrite_that_changes_the_logits_is_refused(gqa_llama, tmp_path, monkeypatch):
    import edgelm.export.gqa as gqa

    mha = _mha_copy(gqa_llama, tmp_path)
    before = mha.read_bytes()
    real = gqa.fuse_group_query_attention

    def wrong_scale(model):
        count = real(model)
        for node in model.graph.node:
            if node.op_type == "GroupQueryAttention":
                node.attribute.append(onnx.helper.make_attribute("scale", 0.5))
        return count

    monkeypatch.setattr(gqa, "fuse_group_query_attention", wrong_scale)
    result = gqa.fuse_file(mha)
    assert result["GroupQueryAttention"] == 0 and "differs from the original" in result["reason"]
    assert mha.read_bytes() == before


def test_graph_without_rotary_is_left_alone(tiny_model, tmp_path_factory, tmp_path):
    from edgelm.export.gqa import fuse_file
    from tests.export.shared import exported

    _, raw = exported(tiny_model, tmp_path_factory, "gpt2")
    copy = tmp_path / "model.onnx"
    shutil.copy(raw.path, copy)
    result = fuse_file(copy)
    assert result["GroupQueryAttention"] == 0 and "no attention layer" in result["reason"]
    assert copy.read_bytes() == raw.path.read_bytes()


def _concat_outputs(path) -> list[str]:
    return [o for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "Concat" for o in n.output]


def _padded_feeds(session) -> dict:
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": np.array([[0, 0, 5, 9, 2, 7], [3, 8, 5, 9, 2, 7]], dtype=np.int64), "attention_mask": mask,
             "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            feeds[i.name] = np.zeros((2, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    return feeds


def test_head_size_8_keeps_multi_head_attention_and_says_why(tiny_model, tmp_path_factory):
    from tests.export.shared import exported

    _, fused = exported(tiny_model, tmp_path_factory, "llama", optimize=True)  # the shared tiny llama: head size 8
    assert _ops(fused.path)["MultiHeadAttention"] and not _ops(fused.path)["GroupQueryAttention"]
    assert "multiple of 16" in fused.optimization["group_query_attention"]["reason"]


def test_int4_affine_keeps_the_packed_projection_and_the_logits(gqa_llama, tmp_path):
    from edgelm.models.generate import OnnxCausalLM
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    bundle, fused, _ = gqa_llama
    dst = tmp_path / "int4.onnx"
    quantize_onnx(fused.path, dst, QuantOptions(method="int4", algorithm="affine", block_size=16))
    model = onnx.load(str(dst))
    config = bundle.model.config
    head = config.hidden_size // config.num_attention_heads
    packed = (config.num_attention_heads + 2 * config.num_key_value_heads) * head
    widths = [next(a.i for a in n.attribute if a.name == "N") for n in model.graph.node
              if n.op_type == "MatMulNBits" and n.name.endswith("_qkv_Q4")]
    assert widths == [packed] * config.num_hidden_layers  # q, k and v: one 4-bit op per layer
    ids = np.array([[3, 8, 5, 9, 2, 7, 11, 4]])
    ref, _ = OnnxCausalLM(fused.path).prefill(ids)
    got, _ = OnnxCausalLM(dst).prefill(ids)
    cosine = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cosine > 0.99


def test_sliding_window_models_keep_their_masked_attention():
    """A rewrite would replace the exporter's window mask with padding + causal; a short check prompt cannot see the
    difference, so such models are not rewritten."""
    from transformers import AutoConfig

    from edgelm.export.optimize import sliding_window

    assert sliding_window(AutoConfig.for_model("mistral", sliding_window=4096)) == 4096
    assert sliding_window(AutoConfig.for_model("mistral", sliding_window=None)) is None
    assert sliding_window(AutoConfig.for_model("qwen2", sliding_window=4096, use_sliding_window=False)) is None
    assert sliding_window(AutoConfig.for_model("llama")) is None
    gemma2 = AutoConfig.for_model("gemma2", sliding_window=64)
    assert sliding_window(gemma2) == 64  # alternating local/global layers


def test_length_dependent_rotary_is_not_rewritten():
    from transformers import AutoConfig

    from edgelm.export.optimize import length_dependent_attention

    dynamic = AutoConfig.for_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert "dynamic" in length_dependent_attention(dynamic)
    assert length_dependent_attention(AutoConfig.for_model("llama")) is None
    assert "sliding-window" in length_dependent_attention(AutoConfig.for_model("mistral", sliding_window=4096))


@pytest.mark.parametrize("method", ["fp16", "int8-dynamic"])
def test_other_methods_run_on_the_rewritten_graph(method, gqa_llama, tmp_path):
    from edgelm.models.generate import OnnxCausalLM
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    _, fused, _ = gqa_llama
    dst = tmp_path / "model.onnx"
    quantize_onnx(fused.path, dst, QuantOptions(method=method))
    assert _ops(dst)["GroupQueryAttention"] == _ops(fused.path)["GroupQueryAttention"]
    ids = np.array([[3, 8, 5, 9, 2, 7, 11, 4]])
    ref, state = OnnxCausalLM(fused.path).prefill(ids)
    lm = OnnxCausalLM(dst)
    got, got_state = lm.prefill(ids)
    step, _ = lm.decode(np.array([6]), got_state)  # the cache round-trips through the quantized graph
    cosine = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cosine > 0.99 and np.isfinite(step).all()
