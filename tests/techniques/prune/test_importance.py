"""Pruning importance scores are registered by name: the prune stage's `importance` takes the registered names,
a score registered in a few lines is chosen by the stage, and an unknown name is one line naming the choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgelm.core.stage import get_stage
from edgelm.techniques.prune.importance import IMPORTANCE_SCORES, ImportanceScore
from tests.techniques.prune.helpers import run, tiny


def test_the_stage_chooses_among_the_registered_scores():
    assert set(IMPORTANCE_SCORES.names()) == {"activation", "magnitude", "taylor"}
    config = get_stage("prune").Config
    assert config(heads=0.5, importance="taylor").importance == "taylor"
    with pytest.raises(ValidationError, match="unknown pruning importance 'nope'; use one of activation, magnitude"):
        config(heads=0.5, importance="nope")


def test_a_registered_score_decides_what_is_cut(tiny_model, tmp_path):
    """A score that ranks the last FFN neurons highest keeps exactly those."""
    def last_neurons_first(model, layers, batches, task):
        return {}, {layer.index: list(range(layer.mlp.neurons)) for layer in layers if layer.mlp}

    IMPORTANCE_SCORES.register("last-first", ImportanceScore("keeps the last neurons", last_neurons_first))
    try:
        bundle = tiny(tiny_model, "bert")
        result = run("prune", bundle, tmp_path, ffn=0.5, importance="last-first", round_to=1, calib_samples=2)
    finally:
        IMPORTANCE_SCORES.unregister("last-first")
    before = bundle.model.encoder.layer[0].intermediate.dense.weight
    after = result.bundle.model.encoder.layer[0].intermediate.dense.weight
    assert after.shape[0] == before.shape[0] // 2 and result.metrics["importance"] == "last-first"
    assert (after == before[before.shape[0] // 2:]).all()
