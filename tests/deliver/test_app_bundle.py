import hashlib
import json

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.deliver.app_bundle import safe_name, write_bundle
from edgelm.deliver.snippets import render_all
from tests.deliver.runs import tiny_run


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["../model.onnx", "a/b.onnx", ".hidden", "", "x/../../y", "..", "a\\b", "model..onnx"])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(EdgelmError, match="not a plain file name"):
        safe_name(name)


def test_classifier_bundle_files_are_hashed_and_snippets_follow_the_manifest(tiny_model, tmp_path_factory):
    from pathlib import Path

    bundle = Path(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    on_disk = sorted(p.name for p in bundle.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha(bundle / name) and entry["bytes"] == (bundle / name).stat().st_size
    assert {"model.ort", "tokenizer.json", "labels.txt", "README.md", "TextClassifier.kt", "TextClassifier.swift"} <= set(on_disk)
    assert "model.onnx" not in on_disk  # the phone gets the .ort only
    assert (bundle / "labels.txt").read_text().split() == manifest["postprocessing"]["labels"]
    kotlin, swift = (bundle / "TextClassifier.kt").read_text(), (bundle / "TextClassifier.swift").read_text()
    for spec in manifest["inputs"]:
        assert f'feeds["{spec["name"]}"]' in kotlin and f'feeds["{spec["name"]}"]' in swift
    out = manifest["outputs"][0]["name"]
    assert f'"{out}"' in kotlin and f'"{out}"' in swift and '"model.ort"' in kotlin
    assert "accuracy" in manifest["metrics"] and manifest["bundle"]["model"] == "model.ort"
    readme = (bundle / "README.md").read_text()
    assert all(f"`{s['name']}`" in readme for s in manifest["inputs"] + manifest["outputs"])


def test_decoder_snippets_carry_the_kv_cache_layout(tiny_model, tmp_path_factory):
    from pathlib import Path

    bundle = Path(tiny_run("generator", tiny_model, tmp_path_factory)["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    kv = manifest["kv_cache"]
    kotlin = (bundle / "TextGenerator.kt").read_text()
    assert f"numLayers = {kv['num_layers']}" in kotlin and f"kvHeads = {kv['num_kv_heads']}" in kotlin
    assert "past_key_values.$i.$kind" in kotlin and "present.$i.$kind" in kotlin
    swift = (bundle / "TextGenerator.swift").read_text()
    assert f"headDim = {kv['head_dim']}" in swift


def test_executorch_snippet_only_when_a_pte_ships():
    manifest = {"task": "sequence-classification", "bundle": {"model": "model.ort", "format": "ort", "executorch_model": "model.pte"},
                "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}],
                "postprocessing": {"labels": ["a", "b", "c"]}, "files": {}}
    files = render_all(manifest)
    assert "TextClassifierExecuTorch.kt" in files and '"model.pte"' in files["TextClassifierExecuTorch.kt"]
    assert 'listOf("a", "b", "c")' in files["TextClassifier.kt"] and "ONNX Runtime Mobile" in files["README.md"]
    manifest["bundle"]["executorch_model"] = None
    assert "TextClassifierExecuTorch.kt" not in render_all(manifest)


def test_a_run_without_an_export_has_no_bundle(tmp_path):
    stage = {"name": "01-eval", "kind": "eval", "hash": "h", "status": "ran", "seconds": 0.1}
    (tmp_path / "run.json").write_text(json.dumps({"stages": [stage]}))
    (tmp_path / "01-eval").mkdir()
    (tmp_path / "01-eval" / "edgelm.json").write_text(json.dumps({"artifacts": {}}))
    with pytest.raises(EdgelmError, match="no stage exported a model"):
        write_bundle(tmp_path)


def test_the_bundle_decodes_with_lookup_only_when_the_bench_measured_it_helps():
    from edgelm.core.records import RunRecord, StageRecord
    from edgelm.deliver.app_bundle import speculative_decoding

    def run(*measured):
        stages = [StageRecord(name=f"0{i}-bench", kind="bench", hash="h", status="ran", seconds=1.0,
                              metrics={"speculative": m} if m else {}) for i, m in enumerate(measured)]
        return RunRecord(stages=stages)

    helps = {"method": "lookup", "draft_tokens": 8, "ngram_max": 3, "ngram_min": 1, "helps": True,
             "speculative_speedup": 1.9, "acceptance_rate": 0.6, "runtime": "ort-cpu"}
    picked = speculative_decoding(run(helps))
    assert picked["method"] == "lookup" and picked["draft_tokens"] == 8 and picked["measured"]["speculative_speedup"] == 1.9
    assert speculative_decoding(run({**helps, "helps": False})) is None
    assert speculative_decoding(run(helps, {**helps, "helps": False})) is None  # the latest measurement decides
    assert speculative_decoding(run(helps, None)) == picked
    assert speculative_decoding(run()) is None
