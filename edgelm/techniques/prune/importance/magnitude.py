"""Importance 'magnitude': the weights a unit owns (prune/scoring.py); reads no data."""

from __future__ import annotations

from edgelm.techniques.prune.importance import importance_score


@importance_score("magnitude", "‖W‖")
def score(model, layers, batches, task):
    from edgelm.techniques.prune.scoring import weight_scores

    return weight_scores(model, layers, lambda m: m.weight.detach().float() ** 2)
