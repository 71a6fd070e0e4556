"""Graph fusions: the export stage's in-memory path (export_onnx(fuse=True)) gives the same graph as fusing the
saved file (optimize_onnx), records its fusions, and passes parity; the slow-rule switch is scoped."""

from __future__ import annotations

import shutil
from collections import Counter

from edgelm.verify.parity import check_artifact
from tests.export.shared import exported


def _ops(path) -> Counter:
    import onnx

    return Counter((n.domain, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_in_memory_fusion_matches_fusing_the_saved_file(tiny_model, tmp_path_factory, tmp_path):
    from edgelm.export.optimize import optimize_onnx

    bundle, fused = exported(tiny_model, tmp_path_factory, "llama", optimize=True)
    _, raw = exported(tiny_model, tmp_path_factory, "llama")
    copy = tmp_path / "model.onnx"
    shutil.copy(raw.path, copy)
    from_file = optimize_onnx(copy, bundle)
    assert fused.optimization["fusions"] == from_file["fusions"]
    assert {"rms_normalization", "rotary_embedding", "sdpa"} <= set(fused.optimization["fusions"])
    assert _ops(fused.path) == _ops(copy)
    assert fused.optimization["nodes_after"] < fused.optimization["nodes_before"]
    assert [t.name for t in fused.inputs] == [t.name for t in raw.inputs]
    assert fused.inputs[0].shape == ["batch", "sequence"]  # readable dims survive the fusions
    figures = check_artifact(bundle, fused.path, "onnx")
    assert figures["greedy_match"] == 1.0 and figures["max_abs_diff"] <= 1e-4


def test_slow_rules_are_left_out_only_inside_the_block():
    from onnxscript import rewriter

    from edgelm.export.optimize import SLOW_UNUSED_RULES, without_slow_rules

    def names():
        return {r.name for r in rewriter._DEFAULT_REWRITE_RULES}

    before = names()
    assert set(SLOW_UNUSED_RULES) <= before  # still in onnxscript's defaults, else the switch is dead code
    with without_slow_rules():
        assert not set(SLOW_UNUSED_RULES) & names() and names() == before - set(SLOW_UNUSED_RULES)
    assert names() == before
