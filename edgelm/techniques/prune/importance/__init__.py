"""Pruning importance scores, registered by name: one module per score in this package (the prune stage's
`importance`). A score maps (model, layers, calibration batches, task) to ({layer: [score per KV group]},
{layer: [score per neuron]}); the math lives in prune/scoring.py. The registry is read when the CLI starts
(choices, help), so these modules import torch-side code inside their functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgelm.core.registry import Registry


@dataclass(frozen=True)
class ImportanceScore:
    summary: str  # a few words, shown in the prune stage's help
    score: Callable  # (model, layers, batches, task) -> (head scores, neuron scores)


IMPORTANCE_SCORES: Registry[ImportanceScore] = Registry("pruning importance", __name__)


def importance_score(name: str, summary: str) -> Callable:
    """Decorator: register the decorated `score(model, layers, batches, task)` as importance `name`."""

    def register(score: Callable) -> Callable:
        IMPORTANCE_SCORES.register(name, ImportanceScore(summary, score))
        return score

    return register


def summaries() -> str:
    """'name (summary), ...' for every registered score (the prune stage's help)."""
    return ", ".join(f"{name} ({entry.summary})" for name, entry in IMPORTANCE_SCORES.items())
