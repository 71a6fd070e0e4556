"""The quantize stage and `edgelm quantize`: the published folder (model + tokenizer + manifest with quantization
and re-hashed files), parity against float and torch, sensitivity / auto, and the errors a user can fix."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edgelm.models.bundle import ModelBundle
from edgelm.data.readers import DataConfig
from edgelm.core.errors import EdgelmError
from edgelm.export.manifest import Manifest, sha256_file
from edgelm.models.loading import load_bundle, load_model
from edgelm.pipeline.run import run_one
from edgelm.core.stage import StageContext, get_stage
from tests.techniques.quantize.conftest import fused_onnx, tiny_onnx, tiny_tokenizer  # noqa: F401  (shared fixtures)
from tests.stages.test_all_stages import LABELLED


def float_bundle(tiny_onnx, arch, task, tmp_path):
    """A bundle holding a torch model and a float model.onnx (what the export stage hands over)."""
    folder, onnx_path = tiny_onnx(arch, task)
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    shutil.copy(onnx_path, export_dir / "model.onnx")
    bundle = load_model(str(folder), task=task)
    bundle.tokenizer.save_pretrained(export_dir)
    return bundle.derive(artifacts={"onnx": export_dir / "model.onnx"})


def quantize(bundle, tmp_path, data=None, **config):
    stage = get_stage("quantize")
    ctx = StageContext(workdir=tmp_path / ".q.tmp", data=data, run_dir=tmp_path)
    record, out = run_one("quantize", stage.Config.model_validate(config), bundle, ctx, tmp_path / "q", "h")
    return record.metrics, out


def test_int4_decoder_folder_manifest_and_parity(tiny_onnx, tmp_path):
    bundle = float_bundle(tiny_onnx, "llama", "causal-lm", tmp_path)
    metrics, out = quantize(bundle, tmp_path, method="int4", parity_samples=8)
    folder = tmp_path / "q"
    assert out.artifacts["onnx"] == folder / "model.onnx" and (folder / "tokenizer.json").is_file()
    manifest = Manifest.load(folder)
    assert manifest.quantization["method"] == "int4" and manifest.quantization["params"]["block_size"] == 32
    assert manifest.quantization["op_counts"]["MatMulNBits"] > 0
    for name, entry in manifest.files.items():
        assert sha256_file(folder / name) == entry.sha256
    assert metrics["size_mb"] < metrics["size_mb_float"] and metrics["size_mb"] == manifest.metrics["size_mb"]
    assert metrics["size_mb"] == round(sum(p.stat().st_size for p in folder.glob("model.onnx*")) / 1e6, 3)  # MB
    assert metrics["parity"]["ok"] and metrics["parity_torch"]["ok"], metrics
    assert manifest.parity["quantized_vs_float"]["figures"]["perplexity_ratio"] == metrics["parity"]["figures"]["perplexity_ratio"]
    reloaded = load_bundle(folder)
    assert reloaded.artifacts["onnx"].is_file() and reloaded.history[-1]["config"]["method"] == "int4"


def test_sensitivity_and_auto_on_a_classifier(tiny_onnx, tmp_path):
    bundle = float_bundle(tiny_onnx, "bert", "sequence-classification", tmp_path)
    (tmp_path / "data.tsv").write_text(LABELLED)
    metrics, _ = quantize(bundle, tmp_path, DataConfig(path=str(tmp_path / "data.tsv")), method="int8-dynamic",
                          sensitivity=True, auto=True, max_accuracy_drop_pt=0.0, parity_samples=8)
    layers = [row["layer"] for row in metrics["sensitivity"]]
    assert {"layer.00", "layer.01"} <= set(layers), layers
    assert all("sqnr_db" in r and "accuracy_kept_float" in r for r in metrics["sensitivity"])
    auto = metrics["auto"]
    assert auto["met"] and auto["steps"][-1]["accuracy_drop_pt"] <= 0.0
    kept_nodes = [n for r in metrics["sensitivity"] if r["layer"] in auto["kept_float"] for n in r["nodes"]]
    assert sorted(metrics["quantization"]["excluded_nodes"]) == sorted(kept_nodes)
    assert "accuracy_drop_pt" in metrics and metrics["accuracy_drop_pt"] <= 0.0


def test_parity_miss_fails_unless_warn(tiny_onnx, tmp_path):
    bundle = float_bundle(tiny_onnx, "bert", "sequence-classification", tmp_path)
    with pytest.raises(EdgelmError, match="parity missed: label_agreement"):
        quantize(bundle, tmp_path, method="int4", tolerance=["label_agreement=1.01"], parity_samples=4)
    metrics, _ = quantize(bundle, tmp_path, method="int4", tolerance=["label_agreement=1.01"], parity_samples=4,
                          on_parity_fail="warn")
    assert metrics["parity"]["ok"] is False and metrics["parity"]["checks"]["label_agreement"]["tolerance"] == 1.01


def test_input_without_onnx_or_model_is_a_clear_error(tmp_path):
    bundle = ModelBundle(model=None, tokenizer=None, task="causal-lm", source="x")
    with pytest.raises(EdgelmError, match="run export first"):
        quantize(bundle, tmp_path)


def test_cli_quantize_export_folder(tiny_onnx, tmp_path):
    bundle = float_bundle(tiny_onnx, "bert", "sequence-classification", tmp_path)
    bundle_dir = bundle.artifacts["onnx"].parent
    bundle.save(bundle_dir)
    from edgelm.cli import main

    result = CliRunner().invoke(main, ["quantize", str(bundle_dir), "-o", str(tmp_path / "fp16"), "--method", "fp16",
                                       "--parity-samples", "4", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["metrics"]["quantization"]["method"] == "fp16" and (tmp_path / "fp16" / "model.onnx").is_file()
    bad = CliRunner().invoke(main, ["quantize", str(bundle_dir), "-o", str(tmp_path / "bad"), "--tolerance", "nonsense"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output and "Traceback" not in bad.output


def test_ort_input_gets_a_reconverted_ort(tiny_onnx, tmp_path):
    import numpy as np
    import onnxruntime as ort

    bundle = float_bundle(tiny_onnx, "bert", "sequence-classification", tmp_path)
    bundle = bundle.derive(artifacts={**bundle.artifacts, "ort": bundle.artifacts["onnx"]})  # input shipped a .ort
    metrics, out = quantize(bundle, tmp_path, method="int8-dynamic", parity_samples=4)
    folder = tmp_path / "q"
    assert out.artifacts["ort"] == folder / "model.ort"
    assert metrics["size_mb"] == metrics["size_mb_by_format"]["ort"] == round((folder / "model.ort").stat().st_size / 1e6, 3)
    manifest = Manifest.load(folder)
    assert manifest.ort_mobile and "model.ort" in manifest.files
    feeds = {"input_ids": np.array([[2, 5, 6, 3]]), "attention_mask": np.ones((1, 4), np.int64),
             "token_type_ids": np.zeros((1, 4), np.int64)}
    run = {f: ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]) for f in ("model.onnx", "model.ort")}
    outputs = {f: s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0] for f, s in run.items()}
    np.testing.assert_allclose(outputs["model.onnx"], outputs["model.ort"], atol=1e-4)
