"""ORT Mobile (.ort + required-operators config) and ExecuTorch (.pte, XNNPACK) on tiny bert and llama.

.ort reuses the session's ONNX exports (cheap). .pte lowering costs ~1-2 min per model on a 2-core machine, so
those tests are marked slow (EDGELM_SLOW=1); they skip with the reason when executorch is absent.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from edgelm.export.ort_mobile import convert_to_ort, parse_ops_config
from edgelm.parity import check_artifact
from tests.export.shared import exported

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch not installed (pip install 'edgelm[mobile]')")


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_ort_format_and_operator_config(arch, tiny_model, tmp_path_factory, tmp_path):
    bundle, result = exported(tiny_model, tmp_path_factory, arch)
    shutil.copy(result.path, tmp_path / "model.onnx")
    ort = convert_to_ort(tmp_path / "model.onnx", tmp_path)
    assert ort.path.name == "model.ort" and ort.path.read_bytes()[4:8] == b"ORTM"  # flatbuffer file identifier
    ops = parse_ops_config(ort.config_path)
    assert "MatMul" in {op for by_opset in ops["ai.onnx"].values() for op in by_opset}
    assert not ort.config_path.read_text().count(str(tmp_path))  # no temp paths leak into the shipped config
    figures = check_artifact(bundle, ort.path, "ort")
    assert figures["max_abs_diff"] <= 1e-4
    if arch == "llama":
        assert figures["greedy_match"] == 1.0


@needs_executorch
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_pte_lowered_to_xnnpack(arch, tiny_model, tmp_path):
    from edgelm.export.executorch import export_pte
    from edgelm.loading import load_model

    task = "causal-lm" if arch == "llama" else None
    bundle = load_model(str(tiny_model(arch, task)), task=task)
    pte = export_pte(bundle, tmp_path)
    entry = pte.manifest_entry()
    assert entry["num_delegated_nodes"] > 0 and "aten_linear_default" in entry["delegated_ops"]
    assert "getitem" not in entry["non_delegated_ops"]
    figures = check_artifact(bundle, pte.path, "pte")
    assert figures["max_abs_diff"] <= 1e-4
    if arch == "llama":
        assert entry["static_kv_cache"]["max_cache_len"] == 128 and figures["greedy_match"] == 1.0


def test_pte_without_executorch_says_how_to_get_it(monkeypatch):
    from edgelm.errors import EdgelmError
    from edgelm.export import executorch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(EdgelmError, match=r"edgelm\[mobile\]"):
        executorch.require_executorch()
