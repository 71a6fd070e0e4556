"""Torch-side quantization for ExecuTorch: torchao 8da8w / 8da4w on Linear layers of a copy of the model, and
(slow: lowering takes minutes on 2 cores) the quantize stage writing a parity-checked quantized model.pte."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.models.loading import load_model
from edgelm.techniques.quantize.torch_quant import quantize_linear_layers, scheme_for


def test_scheme_per_method():
    assert scheme_for("causal-lm", "int4") == "8da4w"
    assert scheme_for("feature-extraction", "int8-dynamic") == "8da8w"
    assert scheme_for("sequence-classification", "fp16") is None


@pytest.mark.parametrize("arch,task,scheme", [("llama", "causal-lm", "8da4w"), ("bert", "sequence-classification", "8da8w")])
def test_quantized_copy_is_close_and_input_untouched(arch, task, scheme, tiny_model):
    bundle = load_model(str(tiny_model(arch, task)), task=task)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    quantized = quantize_linear_layers(bundle.model, scheme, group_size=32)
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items()), "input model changed"
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 3]])
    with torch.no_grad():
        ref, out = bundle.model(input_ids=ids).logits, quantized(input_ids=ids).logits
    assert not torch.equal(ref, out), "nothing was quantized"
    cosine = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)
    assert cosine > 0.95, float(cosine)


def test_int4_group_must_suit_xnnpack(tiny_model):
    bundle = load_model(str(tiny_model("llama", "causal-lm")), task="causal-lm")
    with pytest.raises(EdgelmError, match="multiple of 32"):
        quantize_linear_layers(bundle.model, "8da4w", group_size=16)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="ExecuTorch not installed (extra: mobile)")
def test_stage_writes_quantized_pte(tiny_onnx, tmp_path):
    from edgelm.export.manifest import Manifest
    from edgelm.pipeline.run import run_one
    from edgelm.core.stage import StageContext, get_stage

    folder, onnx_path = tiny_onnx("llama", "causal-lm")
    bundle = load_model(str(folder), task="causal-lm").derive(artifacts={"onnx": onnx_path})
    ctx = StageContext(workdir=tmp_path / ".q.tmp")
    record, out = run_one("quantize", get_stage("quantize").Config(method="int4", pte=True, parity_samples=4),
                          bundle, ctx, tmp_path / "q", "h")
    pte = record.metrics["pte"]
    assert pte["scheme"] == "8da4w" and pte["parity"]["ok"], pte
    assert out.artifacts["pte"].is_file()
    manifest = Manifest.load(tmp_path / "q")
    assert "model.pte" in manifest.files and manifest.executorch["delegated_ops"]
    assert any(op.startswith("torchao_") for op in manifest.executorch["delegated_ops"])
