"""The architecture matrix at real proportions (tests/arch_fixtures.py): each case exports with every rewrite
checked (a KV cache for decoders), passes parity against torch, and quantizes to int8 and int4 into graphs
onnxruntime runs (random weights: the quantized outputs are only checked to be finite and shaped; their
agreement with the float model means little on near-flat logits). FAST runs by default, the rest under
EDGELM_SLOW=1."""

from __future__ import annotations

import numpy as np
import pytest

from tests.arch_fixtures import CASES, FAST, REFUSED, build_arch, is_decoder

MATRIX = [pytest.param(c, id=c) if c in FAST else pytest.param(c, id=c, marks=pytest.mark.slow) for c in CASES]


@pytest.fixture
def exported_case(request, tmp_path_factory):
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    case = request.param
    folder = build_arch(tmp_path_factory.mktemp(case), case)
    bundle = load_model(str(folder))
    if case in REFUSED:  # refused in one line naming the model code that cannot be traced
        from edgelm.core.errors import EdgelmError

        with pytest.raises(EdgelmError, match=REFUSED[case]):
            export_onnx(bundle, tmp_path_factory.mktemp(f"{case}-onnx"), fuse=True)
        pytest.skip(f"{case}: refused ({REFUSED[case]})")
    return case, bundle, export_onnx(bundle, tmp_path_factory.mktemp(f"{case}-onnx"), fuse=True)


@pytest.mark.parametrize("exported_case", MATRIX, indirect=True)
def test_exports_with_parity_and_quantizes(exported_case, tmp_path):
    from edgelm.verify.parity import check_artifact

    case, bundle, result = exported_case
    figures = check_artifact(bundle, result.path, "onnx")
    if is_decoder(case):
        assert result.kv_cache is not None and result.kv_cache.head_dim >= 64
        assert figures["greedy_match"] == 1.0
    assert "fallbacks" in result.optimization  # every rewrite went through the check
    for method in ("int8-dynamic", "int4"):
        outputs = _run_quantized(result.path, tmp_path / method / "model.onnx", method, is_decoder(case))
        assert all(np.isfinite(o).all() for o in outputs)


def _run_quantized(src, dst, method: str, decoder: bool) -> list[np.ndarray]:
    import onnxruntime as ort

    from edgelm.export.checked import encoder_feeds
    from edgelm.models.generate import OnnxCausalLM
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    quantize_onnx(src, dst, QuantOptions(method=method))
    if decoder:
        lm = OnnxCausalLM(dst)
        logits, state = lm.prefill(np.array([[2, 7, 9, 11]]))
        step, _ = lm.decode(np.array([5]), state)
        assert logits.shape[1] == 4 and step.shape[1] == 1
        return [logits, step]
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    return session.run(None, encoder_feeds(session))
