"""The metric vocabulary: one unit per key, the generated doc in step with it, and tiny runs that report only
declared keys (run.json, every stage's metrics.json, export manifests, the app bundle's manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import (UNITS, VOCABULARY, _ENTRIES, files_mb, markdown, param_mb, reported_keys, undeclared,
                                 with_unit)
from edgelm.core.records import Manifest, RunRecord, StageMetrics
from tests.deliver.runs import tiny_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_each_key_is_declared_once_with_a_known_unit():
    assert len(_ENTRIES) == len(VOCABULARY), "a key is declared twice"
    assert {m.unit for m in _ENTRIES} <= set(UNITS)
    assert all(m.better in ("higher", "lower", None) and m.meaning for m in _ENTRIES)
    assert VOCABULARY["accuracy"].unit == "pt" and VOCABULARY["size_mb"].unit == "MB" and VOCABULARY["param_mb"].unit == "MB"


def test_doc_is_generated_from_the_vocabulary():
    assert DOC.read_text() == markdown(), "docs/metrics.md is stale: python -m edgelm.core.metrics > docs/metrics.md"


def test_sizes_are_megabytes_of_ten_to_the_sixth_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1_500_000)
    (tmp_path / "b").write_bytes(b"x" * 250_000)
    assert files_mb([tmp_path / "a", tmp_path / "b"]) == 1.75
    assert param_mb(1_000_000) == 4.0


def test_values_print_with_their_unit():
    assert with_unit("accuracy", 84.0) == "84.0 pt" and with_unit("size_mb", 23.4) == "23.4 MB"
    assert with_unit("speedup", {"ort-cpu": 2.1}) == "ort-cpu 2.1×" and with_unit("reference", "input") == "input"


def test_records_reject_damage_in_one_line(tmp_path):
    (tmp_path / "run.json").write_text('{"stages": "x"}')
    with pytest.raises(EdgelmError, match="invalid run record") as info:
        RunRecord.load(tmp_path)
    assert "\n" not in str(info.value) and RunRecord.read(tmp_path) is None and StageMetrics.read(tmp_path) is None


def run_keys(out: Path) -> dict[str, set[str]]:
    """{file: metric keys} for run.json, each stage's metrics.json and manifest.json, and the bundle manifest."""
    run = RunRecord.load(out)
    keys = {"run.json": {k for s in run.stages for k in reported_keys(s.metrics)}}
    for stage in run.stages:
        keys[f"{stage.name}/metrics.json"] = reported_keys(StageMetrics.load(out / stage.name).metrics)
        if (out / stage.name / Manifest.FILE).is_file():
            keys[f"{stage.name}/manifest.json"] = set(Manifest.load(out / stage.name).metrics)
    keys["bundle/manifest.json"] = set(Manifest.load(out / "bundle").metrics)
    return keys


@pytest.mark.parametrize("kind", ["classifier", "generator"])
def test_tiny_runs_report_only_declared_keys_in_their_units(kind, tiny_model, tmp_path_factory):
    out = Path(tiny_run(kind, tiny_model, tmp_path_factory)["out"])
    missing = {name: undeclared(keys) for name, keys in run_keys(out).items() if undeclared(keys)}
    assert not missing, f"keys not in edgelm/core/metrics.py: {missing}"
    run = json.loads((out / "run.json").read_text())
    assert run["units"]["size_mb"] == "MB" and run["units"]["seconds"] == "s"
    export = Manifest.load(out / "01-export")
    shipped = "model.ort" if kind == "classifier" else "model.onnx"
    assert export.metrics["size_mb"] == files_mb(p for p in (out / "01-export").glob(shipped + "*"))


def test_accuracy_reaches_the_files_in_percentage_points(tiny_model, tmp_path_factory):
    out = Path(tiny_run("classifier", tiny_model, tmp_path_factory)["out"])
    evaluated = StageMetrics.load(out / "02-eval")
    assert evaluated.units["accuracy"] == "pt" and 0.0 <= evaluated.metrics["accuracy"] <= 100.0
    bundle = Manifest.load(out / "bundle")
    assert bundle.metrics["accuracy"] == evaluated.metrics["accuracy"] and bundle.units["accuracy"] == "pt"
