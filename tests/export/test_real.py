"""Real built-in models through the CLI. MiniLM ONNX runs by default (the one cheap real test); the SmolLM2
export (ONNX + ORT, 32 greedy tokens) and MiniLM .pte are slow and need EDGELM_SLOW=1."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgelm.cli import main
from edgelm.export.manifest import Manifest
from tests.conftest import require_builtin


def _export(out, *args):
    result = CliRunner().invoke(main, ["export", *args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), Manifest.load(out)


@pytest.mark.real
def test_minilm_onnx(tmp_path):
    require_builtin("minilm-l6")
    report, manifest = _export(tmp_path / "minilm", "minilm-l6", "--format", "onnx")
    onnx = manifest.parity["onnx"]
    assert onnx["max_abs_diff"] <= 1e-3 and onnx["cosine"] > 0.9999
    assert manifest.task == "feature-extraction" and manifest.outputs[0].shape == ["batch", 384]
    assert manifest.preprocessing["normalize"] is True  # all-MiniLM-L6-v2 ships a Normalize module
    assert manifest.optimization["fusions"]  # fusions happened and are recorded
    assert report["metrics"]["size_mb"] > 50 and "tokenizer.json" in manifest.files


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_onnx_and_ort_greedy_32(tmp_path):
    require_builtin("smollm2-135m")
    _, manifest = _export(tmp_path / "smollm2", "smollm2-135m", "--format", "onnx", "ort", "--greedy-steps", "32")
    for fmt in ("onnx", "ort"):
        figures = manifest.parity[fmt]
        assert figures["max_abs_diff"] <= 1e-3 and figures["greedy_match"] == 1.0 and figures["greedy_steps"] == 32
        assert figures["sample"]["artifact"] == figures["sample"]["torch"]
    assert manifest.kv_cache.num_kv_heads == 3 and manifest.kv_cache.num_layers == 30  # GQA: 9 query heads, 3 kv
    assert "model.onnx.data" in manifest.files
    fusions = manifest.optimization["fusions"]  # every layer's norms, rotary and attention are fused
    assert fusions["rms_normalization"] == 61 and fusions["skip_rms_normalization"] == 60
    assert fusions["rotary_embedding"] == 60 and fusions["sdpa"] == 30
    assert fusions["GroupQueryAttention"] == 30  # then each layer's attention, rotary and cache append: one op
    assert manifest.optimization["group_query_attention"]["packed_matmul_pairs"] == 30  # gate + up


@pytest.mark.real
@pytest.mark.slow
def test_minilm_pte(tmp_path):
    pytest.importorskip("executorch", reason="executorch not installed (pip install 'edgelm[mobile]')")
    require_builtin("minilm-l6")
    _, manifest = _export(tmp_path / "minilm-pte", "minilm-l6", "--format", "pte")
    assert manifest.parity["pte"]["max_abs_diff"] <= 1e-3 and manifest.executorch["num_delegated_nodes"] > 0
