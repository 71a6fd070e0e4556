"""Importance 'taylor': first-order saliency of the task loss (prune/scoring.py)."""

from __future__ import annotations

from edgelm.techniques.prune.importance import importance_score


@importance_score("taylor", "|w·grad| of the task loss")
def score(model, layers, batches, task):
    from edgelm.techniques.prune.scoring import taylor_saliency, weight_scores

    saliency = taylor_saliency(model, batches, task)
    return weight_scores(model, layers, lambda m: saliency[id(m.weight)])
