"""Reports are renderings of JSON (run.json and bench.json are the source of truth): Markdown and a
self-contained HTML page (inline CSS and SVG plots, no network). `edgelm report PATH` re-renders them."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import VOCABULARY, metric, with_unit
from edgelm.core.records import RunRecord
from edgelm.core.ui import STAGE_FIGURES, is_figure, number, stage_setting
from edgelm.stages.stock import STOCK_NAME
from edgelm.deliver.card import SHIPPING_KINDS, is_number, card, last_of
from edgelm.measure.bench_report import (bench_html_body, bench_markdown, fmt, html_table, md_table, page,
                                         write_bench_reports)



def run_markdown(run: dict, benches: dict[str, dict] | None = None) -> str:
    benches = benches or {}
    lines = [f"# edgelm run report{(': ' + run['recipe']) if run.get('recipe') else ''}", "",
             *md_table(["", "answer", "detail"], [[f"**{i.question}**", i.answer, i.detail] for i in card(run, benches)]),
             f"Input model: `{run['input'].get('model')}` · seed {run['seed']} · total {run['total_seconds']:.1f} s", "",
             "## Stages", "", *md_table(*stage_table(run))]
    if run.get("gates"):
        lines += ["## Gates", "", *md_table(*gate_table(run))]
    for name, (header, rows) in sensitivity_tables(run):
        lines += [f"## Sensitivity: {name}", "", *md_table(header, rows)]
    table = candidates_table(run, benches)
    if table:
        lines += ["## Candidates", "", *md_table(*table)]
    table = runtimes_table(run, benches)
    if table:
        lines += ["## Runtimes", "", *md_table(*table[:2]), table[2], ""]
    for st in classified_stages(run):
        lines += [f"## Classification: {st['name']}", "", scores_line(st["metrics"]), "",
                  *md_table(*recall_table(st["metrics"])), *md_table(*confusion_table(st["metrics"]))]
    for name, bench in benches.items():
        lines += [bench_markdown(bench, level=2).replace("## edgelm bench", f"## Bench ({name})", 1)]
    env = run["environment"]
    lines += [f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs; "
              + ", ".join(f"{k} {v}" for k, v in env["versions"].items())]
    return "\n".join(lines) + "\n"


TABLE_COLUMNS = 9  # metric columns of the stage table; the rest stay in run.json


def stage_table(run: dict):
    """One row per stage: what it did, its time, then the run's figures as columns (picked from the metric
    vocabulary: the console's preferred figures first, then any other figure with a better direction)."""
    keys, rss = table_keys(run), any(st.get("peak_rss_mb") for st in run["stages"])
    header = ["stage", "kind", "did", "time s", *(["peak RSS MB"] if rss else []), *(column_title(k) for k in keys)]
    rows = [[st["name"] + ("" if st["status"] == "ran" else f" ({st['status']})"), st["kind"],
             stage_setting(st["metrics"]), f"{st['seconds']:.1f}",
             *([cell(st.get("peak_rss_mb"), "peak_rss_mb")] if rss else []), *(cell(st["metrics"].get(k), k) for k in keys)]
            for st in run["stages"]]
    return header, rows


def table_keys(run: dict) -> list[str]:
    present = [k for st in run["stages"] for k, v in st["metrics"].items() if is_figure(k, v) or
               (k in STAGE_FIGURES and isinstance(v, dict) and v)]
    ordered = [k for k in STAGE_FIGURES if k in present] + [k for k in VOCABULARY if k in present and k not in STAGE_FIGURES]
    return ordered[:TABLE_COLUMNS]


def column_title(key: str) -> str:
    entry = metric(key)
    return entry.title() + (" ×" if entry.unit == "x" else "")


def cell(value, key: str) -> str:
    """A figure without its unit (the header has it); a {runtime: value} map as `runtime value` pairs."""
    if value is None:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k} {number(v, metric(key).unit)}" for k, v in value.items())
    return number(value, metric(key).unit)


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
    parts = [card_html(card(run, benches)),
             f"<p class=muted>Input model <code>{html.escape(str(run['input'].get('model')))}</code> · seed "
             f"{run['seed']} · total {run['total_seconds']:.1f} s · recipe {html.escape(str(run.get('recipe')))}</p>",
             "<h2>Stages</h2>", html_table(*stage_table(run))]
    if run.get("gates"):
        parts += ["<h2>Gates</h2>", html_table(*gate_table(run))]
    table, pareto = candidates_table(run, benches), candidates_plot(run, benches)
    if table:
        parts += ["<h2>Candidates</h2>", html_table(*table)]
    if pareto:
        parts += ["<h2>Candidates: accuracy vs latency</h2>", f"<figure>{pareto}</figure>"]
    table = runtimes_table(run, benches)
    if table:
        parts += ["<h2>Runtimes</h2>", html_table(*table[:2]), f"<p>{html.escape(table[2])}</p>"]
    for name, table in sensitivity_tables(run):
        parts += [f"<h2>Sensitivity: {html.escape(name)}</h2>", html_table(*table)]
    for st in classified_stages(run):
        parts += classification_html(st)
    for name, bench in benches.items():
        parts += [f"<h2>Bench ({html.escape(name)})</h2>", bench_html_body(bench, level=2)]
    return page(f"edgelm run report{(': ' + run['recipe']) if run.get('recipe') else ''}", "\n".join(parts), CARD_CSS)


CARD_CSS = """.card{display:grid;grid-template-columns:repeat(3,1fr);gap:10px;margin:1em 0 1.4em}
.tile{border:1px solid #ddd;border-radius:8px;padding:10px 14px;background:#fafafa}
.tile .q{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#666}
.tile .a{font-size:24px;font-weight:600;margin:2px 0 4px;word-break:break-all}.tile .d{font-size:13px;color:#444}
.tile.ok{border-color:#7c7;background:#f3fbf3}.tile.fail{border-color:#e77;background:#fdf2f2}
.tile.ok .a{color:#080}.tile.fail .a{color:#b00}td:nth-child(-n+3){white-space:nowrap}"""


def card_html(items) -> str:
    tiles = "".join(f'<div class="tile{_tile_class(i)}"><div class=q>{html.escape(i.question)}</div>'
                    f'<div class=a>{html.escape(i.answer)}</div><div class=d>{html.escape(i.detail)}</div></div>'
                    for i in items)
    return f"<div class=card>{tiles}</div>"


def _tile_class(item) -> str:
    return "" if item.ok is None else " ok" if item.ok else " fail"


def candidates_plot(run: dict, benches: dict[str, dict]) -> str | None:
    """The Pareto plot when the run's JSON holds two or more candidates with a quality figure and a latency."""
    from edgelm.measure.plots import pareto_plot

    points = candidates(run, benches)
    if len(points) < 2:
        return None
    y = next((k for k in CANDIDATE_QUALITY if all(p.get(k) is not None for p in points)), None)
    return pareto_plot(points, "candidates", y=y) if y else None


CANDIDATE_QUALITY = ("accuracy", "icl_accuracy", "fidelity_cosine_mean", "perplexity")


def candidates(run: dict, benches: dict[str, dict]) -> list[dict]:
    """`run["candidates"]` (a search's trials) plus each benched artifact: its stage's size and quality figures
    with the bench p50 (first case, fewest threads)."""
    points = list(run.get("candidates") or [])
    by_name = {st["name"]: st for st in run["stages"]}
    for bench in benches.values():
        for artifact, folder in (bench.get("artifacts") or {}).items():
            rows = sorted((r for r in bench["rows"] if r.get("artifact") == artifact and r.get("p50_ms")
                           and r.get("case") == bench["cases"][0]["label"]), key=lambda r: r.get("threads") or 0)
            stage = by_name.get(Path(str(folder)).name)
            if rows and stage:
                points.append({"name": stage["name"], **stage_quality(stage, run), **_row_figures(rows[0])})
    return points


def _row_figures(row: dict) -> dict:
    return {k: row[k] for k in ("p50_ms", "size_mb", "accuracy") if row.get(k) is not None}


def stage_quality(stage: dict, run: dict) -> dict:
    """Quality figures of an artifact stage: its own, its quantize parity's accuracy, or the eval that scored it."""
    m = stage["metrics"]
    found = {k: m[k] for k in CANDIDATE_QUALITY if is_number(m.get(k))}
    parity = m.get("parity") if isinstance(m.get("parity"), dict) else {}
    if "accuracy" not in found and is_number(parity.get("accuracy")):
        found["accuracy"] = parity["accuracy"]
    ev = scoring_eval(run, stage)
    if ev is None and stage is last_of(run, SHIPPING_KINDS):
        ev = last_of(run, ("eval",))
    if ev is not None:
        found.update({k: ev["metrics"][k] for k in CANDIDATE_QUALITY if is_number(ev["metrics"].get(k))})
    return found


PASS_THROUGH = ("eval", "bench")  # stages that measure the model they get and hand it on unchanged


def scoring_eval(run: dict, stage: dict) -> dict | None:
    """The eval stage that scored `stage`'s model: the first eval after it before any stage changes the model."""
    later = run["stages"][[st["name"] for st in run["stages"]].index(stage["name"]) + 1:]
    for st in later:
        if st["kind"] == "eval":
            return st
        if st["kind"] not in PASS_THROUGH:
            return None
    return None


def candidate_label(run: dict, stage: dict) -> str:
    """What a stage's artifact is: the stage that made the model (`lora`, `bilstm student from 01-finetune`),
    then the export / quantize steps after it."""
    names = [st["name"] for st in run["stages"]]
    steps = []
    for st in reversed(run["stages"][:names.index(stage["name"]) + 1]):
        if st["kind"] in PASS_THROUGH:
            continue
        m = st["metrics"]
        if st["kind"] not in SHIPPING_KINDS:
            steps.append(f"{st['name']} {stage_setting(m)}".strip())
            break
        if st["kind"] == "quantize":
            steps.append(stage_setting(m))
    return " → ".join(reversed(steps)) or "the input model"


REFERENCE_LABELS = {"source": "the input model", STOCK_NAME: "the stock toolchain's int8 (bench reference)"}


def candidates_table(run: dict, benches: dict[str, dict]):
    """(header, rows): every benched artifact (the run's stages and the bench references such as the stock int8)
    with what it is, its quality, size and latency on each runtime, and its speed against each reference —
    a BiLSTM student or an adapter beside the transformer it came from, in one table."""
    by_name, rows = {st["name"]: st for st in run["stages"]}, []
    for bench in benches.values():
        case = bench["cases"][0]["label"] if bench.get("cases") else None
        for artifact, folder in (bench.get("artifacts") or {}).items():
            stage = by_name.get(Path(str(folder)).name)
            what = candidate_label(run, stage) if stage else REFERENCE_LABELS.get(artifact, str(folder))
            quality = stage_quality(stage, run) if stage else {}
            for r in (r for r in bench["rows"] if r.get("artifact") == artifact and r.get("p50_ms")
                      and r.get("case") == case):
                ratios = {c["baseline"]: c["ratio"]["median"] for c in bench.get("comparisons", [])
                          if c.get("artifact") == artifact and c.get("runtime") == r["runtime"]
                          and c.get("case") == case and "ratio" in c}
                runtime = r["runtime"] + (f" ×{r['threads']}t" if r.get("threads") else "")
                rows.append([stage["name"] if stage else artifact, what, cell(quality.get("accuracy"), "accuracy"),
                             cell(r.get("size_mb"), "size_mb"), runtime, cell(r["p50_ms"], "p50_ms"),
                             ", ".join(f"{x:.2f}× {b}" for b, x in ratios.items()) or "–"])
    header = ["artifact", "what", "accuracy pt", "size MB", "runtime", "p50 ms", "speed vs references"]
    return (header, rows) if len(rows) > 1 else None


RUNTIME_QUALITY = ("perplexity", "perplexity_ratio", "kld_mean", "top1_agreement")
RUNTIME_SPEED = ("decode_tok_s", "ttft_ms", "peak_rss_mb", "size_mb", "rounds")


def runtimes_table(run: dict, benches: dict[str, dict]):
    """(header, rows, recommendation line) for a decoder: the candidate on each runtime it was benched on, its
    decode speed beside its artifact's quality from the eval on that engine (.onnx and .ort share a graph), so
    the fastest runtime at equal quality can be read off; None when fewer than two runtimes decoded."""
    from edgelm.measure.recommend import engine

    evals = [st["metrics"] for st in run["stages"] if st["kind"] == "eval"]
    quality = {engine(name): figures for m in evals for name, figures in (m.get("by_runtime") or {}).items()
               if "skipped" not in figures}
    picks = [st["metrics"]["recommended_runtime"] for st in run["stages"] if st["metrics"].get("recommended_runtime")]
    rows = [r for bench in benches.values() for r in bench["rows"] if r.get("artifact") == "candidate"
            and r.get("decode_tok_s") and r.get("inputs") == "decode"]
    if len({r["runtime"] for r in rows}) < 2:
        return None
    header = ["runtime", "threads", *(column_title(k) for k in RUNTIME_SPEED + RUNTIME_QUALITY), "recommended"]
    table = [[r["runtime"], fmt(r.get("threads")), *(cell(r.get(k), k) for k in RUNTIME_SPEED),
              *(cell(quality.get(engine(r["runtime"]), {}).get(k), k) for k in RUNTIME_QUALITY),
              "yes" if picks and picks[-1]["runtime"] == r["runtime"] and picks[-1].get("threads") == r.get("threads") else ""]
             for r in rows]
    line = f"Recommended: {picks[-1]['runtime']}: {picks[-1]['why']}" if picks else "No recommendation: no eval figures."
    return header, table, line


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


# --- compare ----------------------------------------------------------------------------------------------


def load_run(run_dir: str | Path) -> tuple[dict, dict[str, dict]]:
    """(run.json, {bench stage: bench.json}) of a run folder; anything else is one EdgelmError line."""
    run_dir = Path(run_dir)
    if not (run_dir / RunRecord.FILE).is_file():
        raise EdgelmError(f"{run_dir}: not an edgelm run folder (no {RunRecord.FILE}); pass folders written by "
                          "`edgelm compress` or `edgelm run`")
    try:
        run = RunRecord.load(run_dir).model_dump()
    except ValueError as exc:  # invalid JSON text
        raise EdgelmError(f"{run_dir / RunRecord.FILE}: cannot read it ({exc}); re-run the recipe") from None
    benches = {st["name"]: _read(run_dir / st["name"] / "bench.json", "bench")
               for st in run["stages"] if (run_dir / st["name"] / "bench.json").is_file()}
    return run, benches


def recipe_settings(run_dir: Path, run: dict) -> dict[str, str]:
    """The run's recipe flattened to `key.sub` -> value text: recipe.resolved.yaml, else the input and each
    stage folder's config."""
    import yaml

    resolved = run_dir / "recipe.resolved.yaml"
    if resolved.is_file():
        raw = yaml.safe_load(resolved.read_text()) or {}
        stages = raw.pop("stages", []) or []
    else:
        raw = {"model": run["input"].get("model"), "data": run["input"].get("data"), "eval_data": run["input"].get("eval_data")}
        stages = [_stage_config(run_dir / st["name"], st["kind"]) for st in run["stages"]]
    named = {f"{i + 1:02d}-{st.get('kind')}": {k: v for k, v in st.items() if k != "kind"} for i, st in enumerate(stages)}
    return flatten({**raw, "stages": named})


def _stage_config(folder: Path, kind: str) -> dict:
    try:
        return {"kind": kind, **(json.loads((folder / "metrics.json").read_text()).get("config") or {})}
    except (OSError, ValueError):
        return {"kind": kind}


def flatten(value, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, (list, dict)) else str(value)}


def differing(settings: list[dict[str, str]]) -> list[str]:
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({s.get(k, "–") for s in settings}) > 1]


def compare_tables(run_dirs: list[Path]):
    """(headline table, settings table): one column per run."""
    loaded = [load_run(d) for d in run_dirs]
    names = _column_names(run_dirs)
    cards = [card(run, benches) for run, benches in loaded]
    head = [[item.question, *((c[i].answer, c[i].detail) for c in cards)]
            for i, item in enumerate(cards[0]) if all(len(c) > i and c[i].question == item.question for c in cards)]
    head += [["model", *((str(run["input"].get("model")), "") for run, _ in loaded)],
             ["total time s", *((f"{run['total_seconds']:.1f}", "") for run, _ in loaded)]]
    settings = [recipe_settings(d, run) for d, (run, _) in zip(run_dirs, loaded)]
    diff = [[k, *(s.get(k, "–") for s in settings)] for k in differing(settings)]
    return ["", *names], head, diff


def _column_names(run_dirs: list[Path]) -> list[str]:
    names = [Path(d).name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def render_compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> list[Path]:
    """`edgelm report --compare RUN...`: the runs side by side in OUT (HTML) and OUT with .md."""
    if len(run_dirs) < 2:
        raise EdgelmError("--compare needs two or more run folders")
    header, head, diff = compare_tables([Path(d) for d in run_dirs])
    out = Path(out)
    md = out.with_suffix(".md")
    md_head = [[r[0], *(f"{a} — {d}" if d else a for a, d in r[1:])] for r in head]
    md.write_text("\n".join(["# edgelm runs compared", "", *md_table(header, md_head), "## Recipe settings that differ", "",
                             *(md_table(["setting", *header[1:]], diff) or ["(none)", ""])]) + "\n")
    body = [compare_html(header, head), "<h2>Recipe settings that differ</h2>",
            html_table(["setting", *header[1:]], diff) or "<p>none</p>"]
    out.write_text(page("edgelm runs compared", "\n".join(body), COMPARE_CSS))
    return [out, md]


def compare_html(header: list[str], rows: list[list]) -> str:
    """The headline rows: each run's answer in bold over its detail."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr><td>{html.escape(r[0])}</td>" + "".join(
        f'<td class=l><b>{html.escape(a)}</b><div class=d>{html.escape(d)}</div></td>' for a, d in r[1:]) + "</tr>"
        for r in rows)
    return f"<table class=cmp><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


COMPARE_CSS = """td{vertical-align:top;max-width:420px}td:first-child{font-weight:600;white-space:nowrap}
table.cmp td{font-size:14px;text-align:left}table.cmp b{font-size:17px}table.cmp .d{color:#555;font-size:12px}
table.cmp th{text-align:left}"""
