"""Recipe gates: compare targets with what the run measured; a miss raises GateFailed (exit 3).

Each gate reads one metric of one stage, and its row says which (`metric`, `source`):
- `max_size_mb`        `size_mb` of the artifact the run ships: the last export or quantize stage
- `max_accuracy_drop`  `accuracy_drop_pt` of the last eval stage
- `min_speedup`        `speedup[runtime]` of the last bench stage (its baseline must be the gate's, when named)
A gate's `stage` names another stage folder (NN-kind) to read instead.
"""

from __future__ import annotations

from edgelm.core.errors import GateFailed
from edgelm.core.metrics import shown_unit, unit
from edgelm.core.records import GateRow, StageRecord

SHIPPING_KINDS = ("export", "quantize")  # stages whose folder holds the artifact an app gets


def last_of(stages: list[StageRecord], kinds: tuple[str, ...]) -> StageRecord | None:
    return next((s for s in reversed(stages) if s.kind in kinds), None)


def shipped_stage(stages: list[StageRecord]) -> StageRecord | None:
    """The stage whose artifact the run ships: the last export or quantize stage."""
    return last_of(stages, SHIPPING_KINDS)


def source_stage(stages: list[StageRecord], named: str | None, kinds: tuple[str, ...]) -> StageRecord | None:
    if named is not None:
        return next((s for s in stages if s.name == named), None)
    return last_of(stages, kinds)


def gate_row(gate: str, metric: str, source: StageRecord | None, value: float, op: str, measured, why: str | None):
    """The verdict of one gate; `why` says why nothing was measured."""
    if source is None:
        measured = None
    elif measured is None and why is None:
        why = f"{source.name} reports no {metric}"
    ok = measured is not None and (measured <= value if op == "<=" else measured >= value)
    return GateRow(gate=gate, metric=metric, source=source.name if source else None, target=f"{op} {value}{shown_unit(metric)}",
                   measured=measured, unit=unit(metric) or "", ok=ok, note=None if measured is not None else why)


def size_gate(g, stages):
    source = source_stage(stages, g.stage, SHIPPING_KINDS)
    return gate_row("max_size_mb", "size_mb", source, g.value, "<=", source and source.metrics.get("size_mb"),
                    None if source else "no export or quantize stage in this run")


def accuracy_gate(g, stages):
    source = source_stage(stages, g.stage, ("eval",))
    return gate_row("max_accuracy_drop", "accuracy_drop_pt", source, g.value, "<=",
                    source and source.metrics.get("accuracy_drop_pt"), None if source else "no eval stage in this run")


def speedup_gate(g, stages):
    source = source_stage(stages, g.stage, ("bench",))
    metrics = source.metrics if source else {}
    baseline, why = metrics.get("baseline"), None if source else "no bench stage in this run"
    speed = (metrics.get("speedup") or {}).get(g.runtime)
    if g.baseline is not None and baseline is not None and baseline != g.baseline:
        speed, why = None, f"{source.name} compared against {baseline}, not {g.baseline}"
    elif speed is None and source is not None:
        why = metrics.get("speedup_skipped") or (metrics.get("skipped") or {}).get(g.runtime)
    label = f"min_speedup ({g.runtime} vs {g.baseline or baseline or 'the bench baseline'})"
    return gate_row(label, "speedup", source, g.value, ">=", speed, why)


def evaluate_gates(gates, stages: list[StageRecord]) -> list[GateRow]:
    """One row per gate set in the recipe; measured is None (and the row not ok) when its stage gave no figure."""
    if gates is None:
        return []
    checks = (("max_size_mb", size_gate), ("max_accuracy_drop", accuracy_gate), ("min_speedup", speedup_gate))
    return [check(getattr(gates, name), stages) for name, check in checks if getattr(gates, name) is not None]


def check_gates(rows: list[GateRow]) -> None:
    failed = [r for r in rows if not r.ok]
    if failed:
        parts = [f"{r.gate} ({r.metric} of {r.source or 'no stage'}): target {r.target}, measured {measured_text(r)}"
                 for r in failed]
        raise GateFailed("gate failed — " + "; ".join(parts), [r.model_dump() for r in rows])


def measured_text(row: GateRow) -> str:
    if row.measured is None:
        return "not measured" + (f" ({row.note})" if row.note else "")
    return f"{row.measured}{shown_unit(row.metric)}"
