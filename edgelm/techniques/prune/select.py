"""Turn importance scores into a Plan: how many units each layer keeps (uniform or global), and which."""

from __future__ import annotations

from edgelm.core.errors import EdgelmError
from edgelm.techniques.prune.surgery import Plan


def round_keep(n_total: int, ratio: float, multiple: int) -> int:
    """Units to keep after removing `ratio`, rounded to the nearest multiple (never 0, never more than n)."""
    keep = n_total * (1 - ratio)
    if multiple > 1 and n_total >= multiple:
        keep = max(multiple, round(keep / multiple) * multiple)
    return max(1, min(n_total, int(round(keep))))


def top(scores: list[float], k: int) -> list[int]:
    return sorted(sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:k])


def keep_counts(scores: dict[int, list[float]], ratio: float, scope: str, multiple: int) -> dict[int, int]:
    """Per layer, how many units to keep. Global: one threshold over all layers (scores normalised by each
    layer's mean, so layers with larger activations do not take everything), then rounded per layer."""
    if scope == "uniform":
        return {i: round_keep(len(s), ratio, multiple) for i, s in scores.items()}
    flat = []
    for i, s in scores.items():
        mean = sum(s) / len(s) or 1.0
        flat += [(v / mean, i) for v in s]
    n_remove = int(len(flat) * ratio)
    removed = {i: 0 for i in scores}
    for _, i in sorted(flat)[:n_remove]:
        removed[i] += 1
    return {i: round_keep(len(s), removed[i] / len(s), multiple) for i, s in scores.items()}


def make_plan(head_scores: dict, neuron_scores: dict, *, heads: float | None, ffn: float | None, scope: str,
              multiple: int, drop: list[int]) -> Plan:
    plan = Plan(drop_layers=sorted(drop))
    if heads:
        for i, k in keep_counts(head_scores, heads, scope, 1).items():
            if i not in plan.drop_layers and k < len(head_scores[i]):
                plan.keep_groups[i] = top(head_scores[i], k)
    if ffn:
        for i, k in keep_counts(neuron_scores, ffn, scope, multiple).items():
            if i not in plan.drop_layers and k < len(neuron_scores[i]):
                plan.keep_neurons[i] = top(neuron_scores[i], k)
    return plan


def layers_to_drop(influence: list[float], n: int) -> list[int]:
    """The n layers whose output differs least from their input."""
    if n >= len(influence):
        raise EdgelmError(f"drop_layers={n}: the model has only {len(influence)} layers; keep at least one")
    return sorted(sorted(range(len(influence)), key=lambda i: influence[i])[:n]) if n > 0 else []
