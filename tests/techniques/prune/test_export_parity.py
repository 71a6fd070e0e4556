"""Pruned + factorized tiny models of every architecture reload from disk and export to ONNX with parity.

Default run: one encoder (per-layer head counts, so structure ops) and one GQA decoder; the rest are slow
(EDGELM_SLOW=1), as each torch.export costs ~20-40 s on a 2-core machine.
"""

import pytest

from edgelm.models.loading import load_bundle
from edgelm.verify.parity import check_artifact
from tests.techniques.prune.helpers import run, tiny
from tests.tiny import DECODERS, ENCODERS

DEFAULT_RUN = {"bert", "qwen2"}
MATRIX = [pytest.param(a, marks=() if a in DEFAULT_RUN else pytest.mark.slow) for a in ENCODERS + DECODERS]


@pytest.mark.parametrize("arch", MATRIX)
def test_pruned_factorized_model_reloads_and_exports_with_parity(arch, tiny_model, tmp_path):
    from edgelm.export.onnx import export_onnx

    bundle = tiny(tiny_model, arch)
    # decoders keep uniform head counts: the KV-cache graph has one layout for all layers
    scope = "global" if arch in ENCODERS else "uniform"
    pruned = run("prune", bundle, tmp_path / "p", heads=0.5, ffn=0.5, round_to=1, scope=scope,
                 importance="magnitude", calib_samples=2, calib_seq_len=16).bundle
    factorized = run("lowrank", pruned, tmp_path / "l", ratio=0.3, method="svd").bundle
    factorized.save(tmp_path / "saved")
    reloaded = load_bundle(tmp_path / "saved")
    assert reloaded.extra.get("structure") == factorized.extra.get("structure")
    (tmp_path / "onnx").mkdir()
    result = export_onnx(reloaded, tmp_path / "onnx")
    figures = check_artifact(reloaded, result.path, "onnx")
    assert figures["max_abs_diff"] <= 1e-4 and figures["cosine"] > 0.9999
    if arch in DECODERS:
        assert figures["greedy_match"] == 1.0
