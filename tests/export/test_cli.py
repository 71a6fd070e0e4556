"""`edgelm export` end to end on a tiny decoder: folder layout, manifest, clean --json stdout, idempotence."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgelm.models.loading import load_bundle
from edgelm.cli import main
from edgelm.export.manifest import Manifest, sha256_file


def test_export_ort_only_writes_the_contract_folder(tiny_model, tmp_path):
    out = tmp_path / "exp"
    args = ["export", str(tiny_model("llama")), "-o", str(out), "--format", "ort", "--greedy-steps", "8", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the ORT converter's chatter must not reach stdout
    assert report["schema_version"] == 1 and report["metrics"]["formats"] == ["ort"]
    names = {p.name for p in out.iterdir()}
    assert {"model.ort", "model.required_operators.config", "manifest.json", "tokenizer.json", "edgelm.json"} <= names
    assert "model.onnx" not in names  # only an intermediate when onnx was not asked for
    manifest = Manifest.load(out)
    assert manifest.files["model.ort"].sha256 == sha256_file(out / "model.ort")
    assert manifest.kv_cache.num_kv_heads == 2 and manifest.parity["ort"]["greedy_match"] == 1.0
    assert manifest.ort_mobile["required_operators_config"] == "model.required_operators.config"
    assert manifest.metrics["size_mb"] == round(manifest.files["model.ort"].bytes / 1e6, 3)  # MB = 10^6 bytes
    assert manifest.postprocessing["decoding"] == "greedy"
    bundle = load_bundle(out)
    assert bundle.artifacts["ort"] == out / "model.ort" and bundle.model is not None  # torch model kept by reference
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "up to date"
