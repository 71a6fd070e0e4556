"""A recipe chains prune -> distill -> lowrank through the real pipeline; the result reloads with its structure."""

import json

import torch

from edgelm.models.loading import load_bundle
from edgelm.pipeline.recipe import parse_recipe
from edgelm.pipeline.runner import run_recipe
from edgelm.models.structure import LowRankLinear
from tests.techniques.prune.helpers import output


def test_prune_distill_lowrank_recipe(tiny_model, tmp_path):
    recipe = parse_recipe({"model": str(tiny_model("llama")), "stages": [
        {"kind": "prune", "ffn": 0.5, "heads": 0.5, "round_to": 8, "calib_samples": 4, "calib_seq_len": 16},
        {"kind": "distill", "max_steps": 2, "batch_size": 4, "max_length": 16, "max_samples": 8},
        {"kind": "lowrank", "ratio": 0.3, "calib_samples": 4, "calib_seq_len": 16},
    ]})
    run_recipe(recipe, tmp_path / "run")
    final = load_bundle(tmp_path / "run" / "03-lowrank")
    assert [h["kind"] for h in final.history] == ["prune", "distill", "lowrank"]
    assert any(isinstance(m, LowRankLinear) for m in final.model.modules())
    assert final.model.config.intermediate_size == 32  # uniform FFN pruning lives in the plain config
    distilled = load_bundle(tmp_path / "run" / "02-distill")
    assert not torch.equal(output(distilled.model), output(load_bundle(tmp_path / "run" / "01-prune").model))
    metrics = json.loads((tmp_path / "run" / "02-distill" / "metrics.json").read_text())
    assert "teacher" in json.dumps(metrics) and '"input"' in json.dumps(metrics)  # teacher = the run's input model
