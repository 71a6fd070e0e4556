"""Encoder LayerNorms as centring + RMS norm: the fused export has no LayerNormalization / SkipLayerNormalization
left, computes what the graph before the rewrite computes (padded rows too), and a rewrite that changes the
outputs is refused."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort

from tests.export.shared import exported


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _fused_only(tiny_model, tmp_path_factory, tmp_path):
    import onnx_ir as ir

    from edgelm.export.optimize import optimize_model

    _, raw = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification")
    model, _ = optimize_model(ir.load(str(raw.path)))
    path = tmp_path / "fused.onnx"
    ir.save(model, str(path))
    return path


def test_fused_encoder_has_no_double_precision_layer_norm_left(tiny_model, tmp_path_factory, tmp_path):
    bundle, fused = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification", optimize=True)
    before = _ops(_fused_only(tiny_model, tmp_path_factory, tmp_path))
    ops = _ops(fused.path)
    norms = before["SkipLayerNormalization"] + before["LayerNormalization"]
    assert norms >= 2 * bundle.model.config.num_hidden_layers
    assert not ops["SkipLayerNormalization"] and not ops["LayerNormalization"]
    assert ops["SimplifiedLayerNormalization"] == norms == fused.optimization["layer_norm"]["layer_norms"]


def test_padded_batch_matches_the_graph_before_the_rewrite(tiny_model, tmp_path_factory, tmp_path):
    _, fused = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification", optimize=True)
    before = _fused_only(tiny_model, tmp_path_factory, tmp_path)
    mask = np.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": np.array([[2, 7, 9, 0, 0, 0, 0], [2, 8, 5, 9, 11, 3, 6]], dtype=np.int64),
             "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
    outs = []
    for path in (before, fused.path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_a_rewrite_that_changes_the_outputs_is_refused(tiny_model, tmp_path_factory, tmp_path, monkeypatch):
    import edgelm.export.layernorm as layernorm

    path = _fused_only(tiny_model, tmp_path_factory, tmp_path)
    before = path.read_bytes()
    real = layernorm.decompose_layer_norms

    def without_centring(model):
        count = real(model)
        for node in model.graph.node:
            if node.op_type == "Sub" and node.name.endswith("_centre"):
                node.op_type = "Add"  # x + mean instead of x - mean
        return count

    monkeypatch.setattr(layernorm, "decompose_layer_norms", without_centring)
    result = layernorm.decompose_file(path)
    assert result["layer_norms"] == 0 and "differs from the original" in result["reason"]
    assert path.read_bytes() == before
