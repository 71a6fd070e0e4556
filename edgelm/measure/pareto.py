"""Pareto dominance over any number of objectives, each maximised or minimised."""

from __future__ import annotations

from typing import Hashable, Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is no worse than b on every objective and better on at least one."""
    signs = [1 if d == "maximize" else -1 for d in directions]
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return no_worse and any(s * x > s * y for s, x, y in zip(signs, a, b))


def pareto_front(points: dict[Hashable, Sequence[float]], directions: Sequence[str]) -> list:
    """The keys of the points no other point dominates (the non-dominated set)."""
    return [k for k, p in points.items() if not any(dominates(q, p, directions) for j, q in points.items() if j != k)]
