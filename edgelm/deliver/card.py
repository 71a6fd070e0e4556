"""The headline card of a run: the answers a reader wants first (what to ship, how much smaller, how much faster
than what, at what quality cost, verified or not, gates), read from run.json and bench.json alone.

Quality figures are read generically: every declared metric (edgelm.core.metrics) of the last eval stage that has a
better direction shows, paired with its `reference_<key>` when the run measured one, so a new metric (a KLD, a new
task score) appears on the card without code here. Speed reads every runtime of every bench stage's `speedup`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgelm.core.metrics import SHOWN, metric
from edgelm.core.ui import label, number
from edgelm.pipeline.gates import SHIPPING_KINDS

ARTIFACT_FILES = {"ort": "model.ort", "onnx": "model.onnx", "pte": "model.pte"}  # the order size_mb counts them
NOT_QUALITY_UNITS = ("MB", "ms", "s", "tok/s", "x")  # size and speed have their own card items
QUALITY_DETAILS = 4  # figures under the quality answer; the stage table and run.json have the rest


@dataclass
class Item:
    question: str
    answer: str
    detail: str = ""
    ok: bool | None = None  # pass/fail items (parity, gates) say which


def card(run: dict, benches: dict[str, dict] | None = None) -> list[Item]:
    return [ship_item(run), size_item(run), *speed_items(run, benches or {}), quality_item(run), parity_item(run),
            gates_item(run)]


def stages_of(run: dict, kinds: tuple[str, ...]) -> list[dict]:
    return [st for st in run["stages"] if st["kind"] in kinds]


def last_of(run: dict, kinds: tuple[str, ...]) -> dict | None:
    found = stages_of(run, kinds)
    return found[-1] if found else None


def fmt_value(key: str, value) -> str:
    entry = metric(key)
    unit = entry.unit if entry else None
    return number(value, unit) + SHOWN.get(unit or "", "")


# --- ship and size ----------------------------------------------------------------------------------------
def ship_item(run: dict) -> Item:
    shipped, ev = last_of(run, SHIPPING_KINDS), last_of(run, ("eval",))
    if shipped is None:
        return Item("Ship", "nothing exported", "the run has no export or quantize stage")
    formats = list(shipped["metrics"].get("size_mb_by_format") or {})
    fmt = next((f for f in ARTIFACT_FILES if f in formats), formats[0] if formats else "onnx")
    runtime = ev["metrics"].get("runtime") if ev else None
    runtime = runtime or next(iter(_speedups(run)), None)
    return Item("Ship", f"{shipped['name']}/{ARTIFACT_FILES.get(fmt, fmt)}",
                f"{fmt} format · runs on {runtime or 'any ONNX runtime'}" + _method(shipped))


def _method(stage: dict) -> str:
    quant = stage["metrics"].get("quantization")
    return f" · {quant['method']}" if isinstance(quant, dict) and quant.get("method") else ""


def fp32_size(run: dict) -> float | None:
    """The float export before any compression: the first quantize stage's float side, else the first export."""
    first = next((st for st in run["stages"] if st["kind"] in SHIPPING_KINDS), None)
    if first is None:
        return None
    return first["metrics"].get("size_mb_float") or first["metrics"].get("size_mb")


def size_item(run: dict) -> Item:
    shipped = last_of(run, SHIPPING_KINDS)
    size = shipped["metrics"].get("size_mb") if shipped else None
    fp32 = fp32_size(run)
    if not size:
        return Item("Size", "not measured")
    if not fp32 or fp32 == size:
        return Item("Size", f"{number(size, 'MB')} MB", "the float export itself (nothing quantized)")
    return Item("Size", f"{fp32 / size:.1f}× smaller", f"{number(size, 'MB')} MB vs {number(fp32, 'MB')} MB fp32")


# --- speed ------------------------------------------------------------------------------------------------
def _speedups(run: dict) -> dict:
    found = {}
    for st in stages_of(run, ("bench",)):
        found.update(st["metrics"].get("speedup") or {})
    return found


def baseline_words(run: dict, baseline: str | None) -> str:
    """What a bench baseline was: the float model, a stock quantization, the source model or a path."""
    stage = next((st for st in run["stages"] if st["name"] == baseline), None)
    if stage is None:
        return {"source": "the source model", None: "no baseline"}.get(baseline, str(baseline))
    if stage["kind"] == "export":
        return f"the float model ({baseline})"
    method = _method(stage).removeprefix(" · ")
    return f"this run's {method} ({baseline})" if method else baseline


def speed_items(run: dict, benches: dict[str, dict]) -> list[Item]:
    items = []
    for st in stages_of(run, ("bench",)):
        speedup, base = st["metrics"].get("speedup") or {}, st["metrics"].get("baseline")
        if not speedup:
            items.append(Item("Speed", "not compared", st["metrics"].get("speedup_skipped") or "no baseline timed"))
            continue
        runtime, ratio = next(iter(speedup.items()))
        others = [f"{r} {v:.2f}×" for r, v in list(speedup.items())[1:]]
        detail = [f"than {baseline_words(run, base)} on {runtime}", *others, *peer_lines(benches.get(st["name"]))]
        if not _float_baseline(run, base):
            detail.append("float model not timed")
        items.append(Item("Speed", faster(ratio), " · ".join(detail)))
        items += stock_items(st["metrics"])
    return items or [Item("Speed", "not measured", "no bench stage in this run")]


def stock_items(metrics: dict) -> list[Item]:
    """Speed against the stock toolchain's int8 (torch export -> ORT transformers optimizer -> quantize_dynamic),
    timed in the same interleaved bench."""
    return [Item("vs stock", faster(ratio), f"than the stock toolchain's int8 on {runtime} (steps in bench.json: "
                 "stock_recipe)") for runtime, ratio in (metrics.get("speedup_vs_stock") or {}).items()]


def faster(ratio: float) -> str:
    """A speed ratio (baseline time / candidate time) in words."""
    return f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"


def _float_baseline(run: dict, baseline: str | None) -> bool:
    return baseline == "source" or any(st["name"] == baseline and st["kind"] == "export" for st in run["stages"])


def candidate_rows(bench: dict | None) -> list[dict]:
    """The candidate's timed rows of the first case, one per runtime (fewest threads)."""
    if not bench or not bench.get("cases"):
        return []
    case = bench["cases"][0]["label"]
    rows = [r for r in bench["rows"] if r.get("artifact") == "candidate" and r.get("case") == case and r.get("p50_ms")]
    best = {}
    for r in sorted(rows, key=lambda r: r.get("threads") or 0):
        best.setdefault(r["runtime"], r)
    return list(best.values())


def peer_lines(bench: dict | None) -> list[str]:
    """p50 of the candidate per runtime and, with several runtimes, each one against the first (peer runtimes)."""
    rows = candidate_rows(bench)
    if not rows:
        return []
    first = rows[0]
    threads = f" at {first['threads']} thread{'s' if first['threads'] > 1 else ''}" if first.get("threads") else ""
    lines = [f"p50 {number(first['p50_ms'], 'ms')} ms{threads}"]
    if first.get("decode_tok_s"):
        lines.append(f"decode {number(first['decode_tok_s'], 'tok/s')} tok/s")
    lines += [f"{faster(r['p50_ms'] / first['p50_ms'])} than on {r['runtime']}" for r in rows[1:]]
    return lines


# --- quality ----------------------------------------------------------------------------------------------
def quality_stage(run: dict) -> dict | None:
    """The last eval stage (other stages' figures, a prune's parameter share, are no quality of the artifact)."""
    return last_of(run, ("eval",))


def quality_keys(metrics: dict) -> list[str]:
    """Declared numeric figures with a better direction, no size/speed, no reference_/teacher_ side."""
    keys = []
    for key, value in metrics.items():
        entry = metric(key)
        if (entry and entry.better and entry.unit not in NOT_QUALITY_UNITS and is_number(value)
                and not key.startswith(("reference_", "teacher_"))):
            keys.append(key)
    return keys


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def quality_facts(metrics: dict) -> tuple[list[tuple[str, float, float]], list[str]]:
    """(pairs (key, reference, candidate), singles). Differences of a shown pair (`*_drop_pt`, `*_ratio`) are left
    out as repeats."""
    keys = quality_keys(metrics)
    pairs = [(k, metrics[f"reference_{k}"], metrics[k]) for k in keys if is_number(metrics.get(f"reference_{k}"))]
    paired = {k for k, _, _ in pairs}
    singles = [k for k in keys if k not in paired and not (pairs and k.endswith(("_drop_pt", "_ratio")))]
    return pairs, singles


def change_text(key: str, reference: float, value: float) -> str:
    """`+0.6 pt accuracy` for points; `perplexity ×1.061` for ratios."""
    if metric(key).unit == "pt":
        return f"{number(value - reference, 'pt', signed=True)} pt {label(key)}"
    return f"{label(key)} ×{value / reference:.3f}" if reference else f"{label(key)} {number(value)}"


def quality_item(run: dict) -> Item:
    stage = quality_stage(run)
    if stage is None:
        return Item("Quality", "not measured", "no eval stage in this run")
    m = stage["metrics"]
    pairs, singles = quality_facts(m)
    against = {"input": "the input model", None: "the float model"}.get(m.get("reference"), m.get("reference"))
    details = [f"{label(k)} {fmt_value(k, v)} vs {fmt_value(k, r)}" for k, r, v in pairs]
    details += [f"{label(k)} {fmt_value(k, m[k])}" for k in singles[1 if not pairs else 0:]]
    details = details[:QUALITY_DETAILS]
    where = f"{stage['name']} on {m['runtime']}" if m.get("runtime") else stage["name"]
    if pairs:
        return Item("Quality", change_text(*pairs[0]), f"vs {against}: " + " · ".join(details) + f" ({where})")
    if singles:
        return Item("Quality", f"{label(singles[0])} {fmt_value(singles[0], m[singles[0]])}",
                    " · ".join([*details, f"vs {against}", where]))
    return Item("Quality", "not measured", f"{stage['name']} has no quality figure")


# --- verified ---------------------------------------------------------------------------------------------
def parity_checks(run: dict) -> list[tuple[str, bool, str]]:
    """(what, ok, why) per recorded parity check. An export's parity has no `ok`: the stage stops on a miss."""
    checks = []
    for st in run["stages"]:
        m = st["metrics"]
        if st["kind"] == "export" and isinstance(m.get("parity"), dict):
            checks += [(f"{st['name']} {fmt} vs torch", bool(e.get("ok", True)), "") for fmt, e in m["parity"].items()
                       if isinstance(e, dict)]
        elif isinstance(m.get("parity"), dict) and "ok" in m["parity"]:
            checks.append((f"{st['name']} vs float", bool(m["parity"]["ok"]), _first_check(m["parity"])))
        if isinstance(m.get("parity_torch"), dict) and "ok" in m["parity_torch"]:
            checks.append((f"{st['name']} vs torch", bool(m["parity_torch"]["ok"]), ""))
    return checks


def _first_check(parity: dict) -> str:
    for name, check in (parity.get("checks") or {}).items():
        op = "≥" if check["value"] >= check["tolerance"] else "<"
        return f"{name.replace('_', ' ')} {check['value']} {op} {check['tolerance']}"
    return ""


def parity_item(run: dict) -> Item:
    checks = parity_checks(run)
    if not checks:
        return Item("Verified", "not checked", "no parity check recorded", ok=None)
    failed = [c for c in checks if not c[1]]
    shown = failed or checks
    detail = " · ".join(f"{'✓' if ok else '✗'} {what}" + (f" ({why})" if why else "") for what, ok, why in shown[-4:])
    answer = f"parity FAILED ({len(failed)} of {len(checks)})" if failed else f"parity passed ({len(checks)} checks)"
    return Item("Verified", answer, detail, ok=not failed)


def gates_item(run: dict) -> Item:
    gates = run.get("gates") or []
    if not gates:
        return Item("Gates", "none set", "--max-accuracy-drop, --min-speedup, --max-size-mb set them", ok=None)
    failed = [g for g in gates if not g["ok"]]
    detail = " · ".join(f"{'✓' if g['ok'] else '✗'} {g['gate']} {g['target']}: "
                        + (fmt_value(g.get("metric") or "", g["measured"]) if g["measured"] is not None else "not measured")
                        for g in gates)
    answer = f"{len(failed)} of {len(gates)} FAILED" if failed else f"all {len(gates)} passed"
    return Item("Gates", answer, detail, ok=not failed)


def card_lines(run: dict, benches: dict[str, dict] | None = None, width: int = 100) -> list[str]:
    """The card as console lines (`edgelm compress`'s result): question, answer, then as much detail as fits."""
    lines = []
    for item in card(run, benches):
        line = f"{item.question.lower():<9} {item.answer}" + (f"  ({item.detail})" if item.detail else "")
        lines.append(line if len(line) <= width else line[:width - 2] + "…)")
    return lines
