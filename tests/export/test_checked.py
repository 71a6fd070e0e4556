"""Every graph rewrite is checked and falls back: a GPT-2 at real proportions (head size 64), whose attention
fusions onnxruntime refuses (a Gemm left with a 3-D input), exports with the other fusions and the reason in
the manifest's optimization record; a rewrite that raises or writes an invalid graph leaves the file as it was."""

from __future__ import annotations

import shutil

import onnx
import pytest

from tests.tiny import build_tiny


@pytest.fixture(scope="module")
def gpt2_head64(tmp_path_factory):
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    folder = build_tiny(tmp_path_factory.mktemp("gpt2-h64"), "gpt2", n_embd=128, n_head=2, n_layer=2)
    bundle = load_model(str(folder))
    return bundle, export_onnx(bundle, tmp_path_factory.mktemp("gpt2-h64-onnx"), fuse=True)


def test_refused_attention_fusion_falls_back_to_the_other_fusions(gpt2_head64):
    from edgelm.verify.parity import check_artifact

    bundle, result = gpt2_head64
    record = result.optimization
    assert record["attempt"] == "without the attention fusions"
    assert len(record["fallbacks"]) == 1 and "onnxruntime cannot run" in record["fallbacks"][0]
    assert record["fusions"]["skip_layer_normalization"] > 0 and "sdpa" not in record["fusions"]
    assert check_artifact(bundle, result.path, "onnx")["greedy_match"] == 1.0
    assert not (result.path.parent / ".candidate").exists()


def test_a_rewrite_that_raises_or_breaks_the_graph_leaves_the_file(gpt2_head64, tmp_path):
    from edgelm.export.checked import rewrite_checked

    path = tmp_path / "model.onnx"
    shutil.copy(gpt2_head64[1].path, path)
    before = path.read_bytes()

    def raises(model):
        raise RuntimeError("pattern went wrong")

    def dangling_input(model):
        model.graph.node[0].input[0] = "no_such_tensor"
        return {"n": 1}

    first = rewrite_checked(path, raises, 1e-3, "n", "diff", "nothing")
    second = rewrite_checked(path, dangling_input, 1e-3, "n", "diff", "nothing")
    assert first["n"] == 0 and "pattern went wrong" in first["reason"]
    assert second["n"] == 0 and "not a valid ONNX model" in second["reason"]
    assert path.read_bytes() == before


def test_onnxruntime_default_domain_ops_pass_the_structural_check(tmp_path):
    from onnx import TensorProto, helper

    from edgelm.export.checked import check_structure

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = onnx.numpy_helper.from_array(__import__("numpy").ones(4, "float32"), "scale")
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], ["y"], axis=-1)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [scale]), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    check_structure(tmp_path / "m.onnx")  # raises when the stand-in domain is not applied
    model.graph.node[0].op_type = "NoSuchOp"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception, match="NoSuchOp"):
        check_structure(tmp_path / "bad.onnx")


def test_rewrites_apply_to_an_export_with_external_data(tmp_path):
    """Large models keep their weights in model.onnx.data: the structural check must find it beside the
    candidate (it refused every rewrite of such exports before), and the data file stays readable."""
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model
    from tests.arch_fixtures import build_arch

    bundle = load_model(str(build_arch(tmp_path / "llama", "llama-9x3-h64-tied")))
    (tmp_path / "onnx").mkdir()
    result = export_onnx(bundle, tmp_path / "onnx", fuse=True, external_data=True)
    record = result.optimization
    assert record["fallbacks"] == [] and record["fusions"]["GroupQueryAttention"] == 2
    data = result.path.with_name("model.onnx.data")
    assert data.stat().st_mode & 0o044 == 0o044 and not (tmp_path / "onnx" / ".candidate").exists()


def test_check_sessions_drop_prepacking_for_float_graphs_only(tmp_path):
    """Pre-packed weight copies double a float session's memory and buy a check nothing; MatMulNBits needs its
    pre-packing (without it an int4 decoder decodes ~30x slower), so a quantized graph keeps it."""
    import numpy as np
    from onnx import TensorProto, helper

    from edgelm.export.checked import check_session_options

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])
    weight = onnx.numpy_helper.from_array(np.ones((32, 32), "float32"), "w")
    float_graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    onnx.save(helper.make_model(float_graph), str(tmp_path / "float.onnx"))
    int4 = helper.make_node("MatMulNBits", ["x", "w"], ["y"], domain="com.microsoft", K=32, N=32, bits=4, block_size=32)
    onnx.save(helper.make_model(helper.make_graph([int4], "g", [x], [y], [weight])), str(tmp_path / "int4.onnx"))

    def prepacking(path):
        try:
            return check_session_options(path).get_session_config_entry("session.disable_prepacking") != "1"
        except RuntimeError:  # the entry was never set: onnxruntime's default, pre-packing on
            return True

    assert not prepacking(tmp_path / "float.onnx") and not prepacking(tmp_path / "float.ort")  # .ort: its .onnx
    assert prepacking(tmp_path / "int4.onnx") and prepacking(tmp_path / "int4.ort") and prepacking(tmp_path / "lone.ort")
