"""Reports are renderings of JSON (run.json and bench.json are the source of truth): Markdown and a
self-contained HTML page (inline CSS and SVG plots, no network). `edgelm report PATH` re-renders them."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import with_unit
from edgelm.core.records import RunRecord
from edgelm.measure.bench_report import (bench_html_body, bench_markdown, fmt, html_table, md_table, page,
                                         write_bench_reports)



def run_markdown(run: dict, benches: dict[str, dict] | None = None) -> str:
    lines = [f"# edgelm run report{(': ' + run['recipe']) if run.get('recipe') else ''}", "",
             f"Input model: `{run['input'].get('model')}` · seed {run['seed']} · total {run['total_seconds']:.1f} s", "",
             *md_table(*stage_table(run))]
    if run.get("gates"):
        lines += ["## Gates", "", *md_table(*gate_table(run))]
    for name, (header, rows) in sensitivity_tables(run):
        lines += [f"## Sensitivity: {name}", "", *md_table(header, rows)]
    for st in classified_stages(run):
        lines += [f"## Classification: {st['name']}", "", scores_line(st["metrics"]), "",
                  *md_table(*recall_table(st["metrics"])), *md_table(*confusion_table(st["metrics"]))]
    for name, bench in (benches or {}).items():
        lines += [bench_markdown(bench, level=2).replace("## edgelm bench", f"## Bench ({name})", 1)]
    env = run["environment"]
    lines += [f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs; "
              + ", ".join(f"{k} {v}" for k, v in env["versions"].items())]
    return "\n".join(lines) + "\n"


def stage_table(run: dict):
    rows = []
    for st in run["stages"]:
        shown = ", ".join(f"{k}={with_unit(k, v, fmt)}" for k, v in st["metrics"].items()
                          if isinstance(v, (int, float, str)))[:200]
        speed = st["metrics"].get("speedup")
        if isinstance(speed, dict) and speed:
            shown += (", " if shown else "") + "speedup " + ", ".join(f"{k} {v:.2f}×" for k, v in speed.items())
        rows.append([st["name"], st["status"], f"{st['seconds']:.1f}", shown])
    return ["stage", "status", "seconds", "metrics"], rows


def gate_table(run: dict):
    """One row per gate: what it read (metric of which stage), its target and the measured figure with its unit."""
    rows = [[g["gate"], f"{g.get('metric') or '?'} of {g.get('source') or 'no stage'}", str(g["target"]),
             _gate_measured(g), "✅" if g["ok"] else "❌"] for g in run.get("gates", [])]
    return ["gate", "reads", "target", "measured", "ok"], rows


def _gate_measured(gate: dict) -> str:
    if gate["measured"] is None:
        return "not measured" + (f": {gate['note']}" if gate.get("note") else "")
    return with_unit(gate.get("metric") or "", gate["measured"], fmt)


def sensitivity_tables(run: dict):
    """Tables for stage metrics named *sensitivity*: a list of dicts, a {name: value} or a {name: {...}} mapping."""
    out = []
    for st in run["stages"]:
        for key, value in st["metrics"].items():
            if "sensitivity" not in key:
                continue
            if isinstance(value, dict):
                value = [{"name": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in value.items()]
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                header = list(dict.fromkeys(k for v in value for k in v))
                out.append((f"{st['name']} {key}", (header, [[fmt(v.get(k)) for k in header] for v in value])))
    return out


def classified_stages(run: dict) -> list[dict]:
    """Stages whose metrics hold a confusion matrix (eval with accuracy)."""
    return [st for st in run["stages"] if isinstance(st["metrics"].get("confusion_matrix"), dict)]


def scores_line(metrics: dict) -> str:
    keys = [k for k in ("accuracy", "reference_accuracy", "f1", "kappa", "n") if metrics.get(k) is not None]
    names = {"reference_accuracy": "reference accuracy", "f1": "macro-F1", "kappa": "quadratic weighted kappa",
             "n": "examples"}
    return " · ".join(f"{names.get(k, k)} {with_unit(k, metrics[k], fmt)}" for k in keys)


def recall_table(metrics: dict):
    recall = metrics.get("recall_by_label") or {}
    return ["label", "recall pt"], [[name, fmt(value)] for name, value in recall.items()]


def confusion_table(metrics: dict):
    """Rows: true label; columns: predicted label."""
    matrix = metrics["confusion_matrix"]
    header = ["true \\ predicted", *matrix["labels"]]
    return header, [[name, *map(str, row)] for name, row in zip(matrix["labels"], matrix["counts"])]


def classification_html(st: dict) -> list[str]:
    from edgelm.measure.plots import confusion_matrix

    matrix = st["metrics"]["confusion_matrix"]
    return [f"<h2>Classification: {html.escape(st['name'])}</h2>", f"<p>{html.escape(scores_line(st['metrics']))}</p>",
            html_table(*recall_table(st["metrics"])),
            confusion_matrix(matrix["labels"], matrix["counts"], f"confusion matrix ({st['name']})")]


# --- HTML -------------------------------------------------------------------------------------------------


def run_html(run: dict, benches: dict[str, dict]) -> str:
    parts = [f"<p>Input model <code>{html.escape(str(run['input'].get('model')))}</code> · seed {run['seed']} · "
             f"total {run['total_seconds']:.1f} s</p>", html_table(*stage_table(run))]
    if run.get("gates"):
        parts += ["<h2>Gates</h2>", html_table(*gate_table(run))]
    for name, table in sensitivity_tables(run):
        parts += [f"<h2>Sensitivity: {html.escape(name)}</h2>", html_table(*table)]
    for st in classified_stages(run):
        parts += classification_html(st)
    for name, bench in benches.items():
        parts += [f"<h2>Bench ({html.escape(name)})</h2>", bench_html_body(bench, level=2)]
    return page(f"edgelm run report{(': ' + run['recipe']) if run.get('recipe') else ''}", "\n".join(parts))


# --- files ------------------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgelmError(f"{path}: cannot read it ({exc}); is this an edgelm {what}?") from None
    if not isinstance(data, dict):
        raise EdgelmError(f"{path}: not an edgelm {what} (expected a JSON object)")
    return data


def render_run(run_dir: str | Path) -> list[Path]:
    """report.md + report.html of a run folder (with the bench.json of any bench stage folded in)."""
    run_dir = Path(run_dir)
    run = RunRecord.load(run_dir).model_dump()
    benches = {st["name"]: _read(run_dir / st["name"] / "bench.json", "bench")
               for st in run["stages"] if (run_dir / st["name"] / "bench.json").is_file()}
    md, page_path = run_dir / "report.md", run_dir / "report.html"
    md.write_text(run_markdown(run, benches))
    page_path.write_text(run_html(run, benches))
    return [md, page_path]


def render_path(path: str | Path) -> list[Path]:
    """`edgelm report PATH`: a run folder, a bench.json file, or a folder holding bench.json."""
    path = Path(path)
    if path.is_dir() and (path / RunRecord.FILE).is_file():
        return render_run(path)
    bench_file = path if path.is_file() else path / "bench.json"
    if bench_file.is_file():
        bench = _read(bench_file, "bench JSON")
        if bench.get("kind") != "edgelm-bench":
            raise EdgelmError(f"{bench_file}: not an edgelm bench JSON (no kind: edgelm-bench)")
        return write_bench_reports(bench, bench_file.parent, bench_file.stem)
    raise EdgelmError(f"{path}: no run.json or bench.json here; pass a run folder or a bench JSON file")
