"""Importance 'activation' (Wanda-style): input norms times weight norms (prune/scoring.py)."""

from __future__ import annotations

from edgelm.techniques.prune.importance import importance_score


@importance_score("activation", "‖X‖·‖W‖ on calibration data")
def score(model, layers, batches, task):
    from edgelm.techniques.prune.scoring import activation_scores

    return activation_scores(model, layers, batches)
