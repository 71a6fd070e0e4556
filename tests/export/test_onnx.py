"""ONNX export matrix on tiny random-init models: every arch in tests/tiny.py exports and passes parity.

The default run covers one encoder and one GQA decoder (each export costs ~20-40 s of torch.export on a 2-core
machine); the rest of the matrix is marked slow (EDGELM_SLOW=1 runs all twelve).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgelm.core.errors import EdgelmError
from edgelm.verify.parity import check_artifact
from tests.export.shared import exported
from tests.tiny import DECODERS, ENCODERS

DEFAULT_RUN = {"bert", "llama"}
MATRIX = [pytest.param(a, marks=() if a in DEFAULT_RUN else pytest.mark.slow) for a in ENCODERS + DECODERS]


@pytest.mark.parametrize("arch", MATRIX)
def test_export_and_parity(arch, tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, arch)
    names = [t.name for t in result.inputs]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert result.inputs[0].shape == ["batch", "sequence"]
    figures = check_artifact(bundle, result.path, "onnx")
    assert figures["max_abs_diff"] <= 1e-4 and figures["cosine"] > 0.9999
    if arch in DECODERS:
        kv = result.kv_cache
        assert kv is not None and f"past_key_values.{kv.num_layers - 1}.value" in names
        assert [t.name for t in result.outputs][1:3] == ["present.0.key", "present.0.value"]
        assert figures["greedy_match"] == 1.0 and figures["decode_max_abs_diff"] <= 1e-4
    else:
        assert result.kv_cache is None and result.outputs[0].name == "embeddings"


def test_gqa_layout_is_read_from_the_model(tiny_model, tmp_path_factory):
    _, result = exported(tiny_model, tmp_path_factory, "llama")
    kv = result.kv_cache
    assert (kv.num_layers, kv.num_kv_heads, kv.head_dim) == (2, 2, 8)  # 4 query heads share 2 kv heads
    past = next(t for t in result.inputs if t.name == "past_key_values.0.key")
    assert past.shape == ["batch", 2, "past_sequence", 8]


def test_encoder_dynamic_batch_and_sequence(tiny_model, tmp_path_factory):
    import onnxruntime as ort
    import torch

    from edgelm.models.tasks import task_module

    bundle, result = exported(tiny_model, tmp_path_factory, "bert")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 3), (5, 17)]:
        ids = rng.integers(5, 60, (batch, seq))
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq // 2:] = 0  # padding must be pooled out exactly as torch does
        types = np.zeros((batch, seq), np.int64)
        (emb,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        with torch.no_grad():
            ref = task_module(bundle)(*(torch.from_numpy(a) for a in (ids, mask, types))).numpy()
        assert emb.shape == (batch, 32)
        np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_classifier_exports_logits(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification")
    assert result.outputs[0].name == "logits" and result.outputs[0].shape == ["batch", 2]
    figures = check_artifact(bundle, result.path, "onnx")
    assert figures["label_agreement"] == 1.0


def test_untraceable_model_is_one_clear_line(tiny_model, tmp_path):
    import torch

    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    class DataDependentBranch(torch.nn.Module):
        def forward(self, hidden_states, *args, **kwargs):
            if hidden_states.sum() > 0:  # a Python branch on tensor data: torch.export cannot trace it
                return (hidden_states * 2,)
            return (hidden_states,)

    bundle = load_model(str(tiny_model("bert")))
    bundle.model.encoder.layer[0] = DataDependentBranch()
    with pytest.raises(EdgelmError) as info:
        export_onnx(bundle, tmp_path)
    message = str(info.value)
    assert "torch.export cannot trace" in message and "\n" not in message
    assert "test_onnx.py" in message and "forward" in message  # names the module code that failed


@pytest.mark.parametrize("optimize", [False, True], ids=["raw", "optimized"])
def test_prompt_tuned_decoder_graph_carries_its_virtual_tokens(tiny_model, tmp_path, optimize):
    """The graph keeps the plain decoder contract; its logits and greedy tokens are those of torch with the
    virtual tokens prepended (PromptPrefixed), and differ from the base model's."""
    import torch

    from edgelm.export.onnx import export_onnx
    from edgelm.models.generate import OnnxCausalLM
    from edgelm.models.loading import load_model
    from edgelm.verify.parity import torch_prompt_logits
    from edgelm.models.text_tasks import encode_prompt

    bundle = load_model(str(tiny_model("llama")))
    torch.manual_seed(0)
    prompt = torch.randn(3, bundle.model.config.hidden_size)
    bundle = bundle.derive(extra={**bundle.extra, "prompt_tuning": encode_prompt(prompt)})
    result = export_onnx(bundle, tmp_path)
    if optimize:
        from edgelm.export.optimize import optimize_onnx

        optimize_onnx(result.path, bundle)
    figures = check_artifact(bundle, result.path, "onnx")
    assert figures["greedy_match"] == 1.0 and figures["max_abs_diff"] < 1e-3
    ids = np.array([[2, 10, 11, 12, 13]], dtype=np.int64)
    logits, _ = OnnxCausalLM(result.path).prefill(ids)
    np.testing.assert_allclose(logits, torch_prompt_logits(bundle.model, ids, prompt), atol=1e-4)
    assert not np.allclose(logits, torch_prompt_logits(bundle.model, ids), atol=1e-2)
