"""manifest.json round trip, file hashes and the refresh the quantize stage relies on."""

from __future__ import annotations

import json

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.export.manifest import KVCache, Manifest, TensorSpec, file_entries, refresh_file_hashes, sha256_file


def _manifest(folder):
    (folder / "model.onnx").write_bytes(b"x" * 2048)
    (folder / "tokenizer.json").write_text("{}")
    m = Manifest(task="causal-lm", source="tiny", inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
                 kv_cache=KVCache(num_layers=2, num_kv_heads=2, head_dim=8))
    m.files = file_entries(folder, ["model.onnx", "tokenizer.json"])
    m.save(folder)
    return m


def test_round_trip_and_kv_names(tmp_path):
    saved = _manifest(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == saved and loaded.schema_version == 1
    assert loaded.kv_cache.past_names(1) == ("past_key_values.1.key", "past_key_values.1.value")
    assert loaded.kv_cache.present_names(0) == ("present.0.key", "present.0.value")
    assert loaded.files["model.onnx"].bytes == 2048 and loaded.input_names() == ["input_ids"]


def test_refresh_rehashes_replaced_files(tmp_path):
    _manifest(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"y" * 1024)  # e.g. the quantize stage rewrote it
    (tmp_path / "model.onnx.data").write_bytes(b"z" * 1024)
    refreshed = refresh_file_hashes(tmp_path)
    assert refreshed.files["model.onnx"].sha256 == sha256_file(tmp_path / "model.onnx")
    assert refreshed.files["model.onnx.data"].bytes == 1024 and "tokenizer.json" in refreshed.files
    assert refreshed.metrics["size_mb"] == round(2048 / 1e6, 3)  # MB of model.onnx + its external data, not the tokenizer
    assert refreshed.metrics["size_mb_by_format"] == {"onnx": 0.002} and refreshed.units["size_mb"] == "MB"
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]["model.onnx"]["bytes"] == 1024


def test_missing_or_broken_manifest_is_one_line(tmp_path):
    with pytest.raises(EdgelmError, match="cannot read the export manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"task": 3}')
    with pytest.raises(EdgelmError, match="invalid export manifest"):
        Manifest.load(tmp_path)
