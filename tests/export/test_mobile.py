"""ORT Mobile (.ort + required-operators config) and ExecuTorch (.pte, XNNPACK) on tiny bert and llama.

.ort reuses the session's ONNX exports (cheap). .pte lowering costs ~1-2 min per model on a 2-core machine, so
those tests are marked slow (EDGELM_SLOW=1); they skip with the reason when executorch is absent.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from edgelm.export.ort_mobile import convert_to_ort, parse_ops_config
from edgelm.verify.parity import check_artifact
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
    from edgelm.models.loading import load_model

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
    from edgelm.core.errors import EdgelmError
    from edgelm.export import executorch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(EdgelmError, match=r"edgelm\[mobile\]"):
        executorch.require_executorch()


def test_ort_does_not_store_a_shared_weight_twice(tmp_path):
    """The int4 tied table is read by the LM head and, through a Reshape view, by the embedding lookup; the stock
    converter's constant folding would store the reshaped copy too (SmolLM2: +14 MB in the .ort)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("Reshape", ["w", "flat"], ["w_flat"]),
             helper.make_node("Gather", ["w_flat", "i"], ["g"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256]),
                                           helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256]),
                               helper.make_tensor_value_info("g", TensorProto.FLOAT, [3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1], np.int64), "flat")])
    src = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(src))
    converted = convert_to_ort(src, tmp_path / "out")
    assert converted.path.stat().st_size < 1.5 * src.stat().st_size, (converted.path.stat().st_size, src.stat().st_size)
    x, i = np.ones((1, 256), np.float32), np.array([0, 7, 65535], np.int64)
    y, g = ort.InferenceSession(str(converted.path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "i": i})
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(g, w.reshape(-1)[i])
