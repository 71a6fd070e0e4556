"""Recipe gates: compare targets with what the run measured; a miss raises GateFailed (exit 3).

Stages report the figures gates read under fixed metric names (the contract stage authors follow):
- `size_mb`            artifact size on disk (export / quantize); the last stage that reports it counts
- `accuracy_drop_pt`   accuracy points lost against the reference (eval)
- `speedup`            {runtime: baseline_p50 / artifact_p50} measured interleaved in one run (bench)
"""

from __future__ import annotations

from edgelm.core.errors import GateFailed


def _latest(stage_metrics: list[dict], key: str):
    for metrics in reversed(stage_metrics):
        if metrics.get(key) is not None:
            return metrics[key]
    return None


def evaluate_gates(gates, stage_metrics: list[dict]) -> list[dict]:
    """Rows of {gate, target, measured, ok}; measured is None when no stage produced the figure."""
    if gates is None:
        return []
    rows = []
    if gates.max_size_mb is not None:
        size = _latest(stage_metrics, "size_mb")
        rows.append({"gate": "max_size_mb", "target": f"<= {gates.max_size_mb}", "measured": size,
                     "ok": size is not None and size <= gates.max_size_mb})
    if gates.max_accuracy_drop is not None:
        drop = _latest(stage_metrics, "accuracy_drop_pt")
        rows.append({"gate": "max_accuracy_drop", "target": f"<= {gates.max_accuracy_drop} pt", "measured": drop,
                     "ok": drop is not None and drop <= gates.max_accuracy_drop})
    if gates.min_speedup is not None:
        g = gates.min_speedup
        speed = (_latest(stage_metrics, "speedup") or {}).get(g.runtime)
        rows.append({"gate": f"min_speedup ({g.runtime} vs {g.baseline})", "target": f">= {g.value}x", "measured": speed,
                     "ok": speed is not None and speed >= g.value})
    return rows


def check_gates(rows: list[dict]) -> None:
    failed = [r for r in rows if not r["ok"]]
    if failed:
        parts = [f"{r['gate']}: target {r['target']}, measured {'not measured' if r['measured'] is None else r['measured']}" for r in failed]
        raise GateFailed("gate failed — " + "; ".join(parts), rows)
