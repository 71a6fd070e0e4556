"""Issue 25's figures in one command per task: bottleneck adapters vs LoRA, and a distilled BiLSTM student vs its
MiniLM teacher and the stock toolchain's int8 MiniLM, side by side in one interleaved bench.

    flock /tmp/edgelm-heavy.lock python tools/student_compare.py sst2 --out runs/students-sst2
    flock /tmp/edgelm-heavy.lock python tools/student_compare.py trec --out runs/students-trec

(from the project root: the recipes read ../shared/data). `--train-only` first runs the training stages outside
the lock (they time nothing); the full command then resumes after them.

1. Runs the example recipes (resumable: a finished stage is not re-run): sst2 runs models/examples/bilstm-sst2.yaml
   (LoRA teacher -> int8 -> eval -> BiLSTM student -> int8 -> eval -> bench) and adapter-sst2.yaml (bottleneck
   adapters -> int8 -> eval -> bench); trec runs bilstm-trec.yaml.
2. Builds the stock toolchain's int8 of the LoRA teacher (edgelm.stages.stock) and times every int8 artifact on
   the runtime (ort-mobile, 1 thread) on the eval sentences one per call: each candidate interleaved with the
   LoRA int8 and with the stock int8 in a fresh process per pair (medians of per-pair ratios), as `edgelm bench`.
3. Writes OUT/compare.json (every figure with where it came from) and OUT/compare.md (the table).

Accuracy is each run's eval stage on the eval data (SST-2 dev, TREC-6 test), the int8 artifact on onnxruntime;
the float figure is the fine-tune's single end-of-epoch evaluation (1 epoch: nothing is picked on it). The BiLSTM's
epoch is picked on a held-out 10% of the training rows (select_on: held-out), never on the eval data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "models" / "examples"
TASKS = {  # task: {run folder name: recipe}; the first holds the LoRA teacher and the BiLSTM student
    "sst2": {"lora-bilstm": "bilstm-sst2.yaml", "adapter": "adapter-sst2.yaml"},
    "trec": {"lora-bilstm": "bilstm-trec.yaml"},
}
# (row label, run folder, int8 stage, eval stage of that int8, training stage): stage folders of the recipes above
ROWS = [("MiniLM + LoRA (merged), int8", "lora-bilstm", "03-quantize", "04-eval", "01-finetune"),
        ("MiniLM + bottleneck adapters, int8", "adapter", "03-quantize", "04-eval", "01-finetune"),
        ("BiLSTM student, int8", "lora-bilstm", "07-quantize", "08-eval", "05-distill")]
BASELINE, STOCK = "lora-int8", "stock-int8"
TARGETS = {"MiniLM + bottleneck adapters, int8": "adapter-int8", "BiLSTM student, int8": "bilstm-int8"}


def run_recipes(task: str, out: Path, overrides: list[str], only: list[str] | None = None) -> dict[str, Path]:
    from edgelm.api import run

    folders = {}
    for name, recipe in TASKS[task].items():
        if only and name not in only:
            continue
        folders[name] = out / name
        print(f"[student_compare] edgelm run {recipe} -o {folders[name]}", file=sys.stderr)
        run(EXAMPLES / recipe, out=folders[name], overrides=overrides)
    return folders


def stage_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    return json.loads(path.read_text()).get("metrics", {}) if path.is_file() else {}


def interleaved_bench(folders: dict[str, Path], out: Path, settings: dict, eval_data: str) -> dict:
    """Every int8 candidate interleaved with the LoRA int8 and the stock int8 of the LoRA teacher."""
    from edgelm.models.loading import load_bundle
    from edgelm.measure.suite import BenchSettings, run_bench, write_bench_json
    from edgelm.measure.bench_report import write_bench_reports
    from edgelm.runtimes.base import resolve_target
    from edgelm.stages.stock import stock_target

    teacher = folders["lora-bilstm"]
    baseline = resolve_target(teacher / "03-quantize", name=BASELINE)
    targets = [baseline] + [resolve_target(folders[run] / stage, name=TARGETS[label])  # the LoRA int8 vs stock too
                            for label, run, stage, *_ in ROWS if label in TARGETS and run in folders]
    formats = sorted({"onnx", "ort"} if "ort-mobile" in settings["runtimes"] else {"onnx"})
    stock, _ = stock_target(load_bundle(teacher / "01-finetune"), formats, out / STOCK)
    bench = run_bench(targets, BenchSettings(**settings, data=eval_data), baseline=baseline, extra_baselines=[stock])
    write_bench_json(bench, out / "bench.json")
    write_bench_reports(bench, out, "bench")
    return bench


def bench_figures(bench: dict, artifact: str) -> dict:
    """p50 / size of `artifact` on the bench's first runtime and case, and its ratios against each reference."""
    case = bench["cases"][0]["label"]
    row = next((r for r in bench["rows"] if r["artifact"] == artifact and r.get("case") == case and "p50_ms" in r), {})
    ratios = {c["baseline"]: c["ratio"] for c in bench["comparisons"]
              if c["artifact"] == artifact and c.get("case") == case and "ratio" in c}
    spread = ratios.get(STOCK) or {}
    return {"p50_ms": row.get("p50_ms"), "p90_ms": row.get("p90_ms"), "size_mb": row.get("size_mb"),
            "runtime": row.get("runtime"), "threads": row.get("threads"),
            "vs_lora_int8": (ratios.get(BASELINE) or {}).get("median"), "vs_stock_int8": spread.get("median"),
            "vs_stock_p10_p90": f"{spread['p10']:.3g}–{spread['p90']:.3g}" if "p10" in spread else None}


def parity(folder: Path) -> str:
    """The artifact's checks against its torch source: export max |diff| per format, the quantize parity verdict."""
    m = stage_metrics(folder)
    found = m.get("parity") or {}
    if isinstance(found, dict) and "ok" in found:
        figures = found.get("figures") or {}
        shown = ", ".join(f"{k} {v}" for k, v in figures.items() if k in ("top1_agreement", "accuracy", "max_abs_diff"))
        return ("pass" if found["ok"] else "FAIL") + (f" ({shown})" if shown else "")
    diffs = {fmt: p.get("max_abs_diff") for fmt, p in found.items() if isinstance(p, dict)}
    return ", ".join(f"{fmt} max|diff| {d:.2g}" for fmt, d in diffs.items() if d is not None) or "–"


def collect(task: str, folders: dict[str, Path], bench: dict) -> list[dict]:
    rows = []
    for label, run, int8, ev, trained in ROWS:
        if run not in folders:
            continue
        base = folders[run]
        train, scored = stage_metrics(base / trained), stage_metrics(base / ev)
        export = base / f"{int(int8[:2]) - 1:02d}-export"
        rows.append({
            "model": label, "run": str(base), "artifact": str(base / int8),
            "trainable_params": train.get("trainable_params") or train.get("params"),
            "params": scored.get("params"),
            "float_accuracy": train.get("eval_accuracy") if trained.endswith("finetune") else None,
            "int8_accuracy": scored.get("accuracy"), "teacher_accuracy": scored.get("reference_accuracy"),
            "accuracy_drop_pt": scored.get("accuracy_drop_pt"), "eval_data": scored.get("eval_data"),
            "export_parity": parity(export), "quantize_parity": parity(base / int8),
            "int8_size_mb": stage_metrics(base / int8).get("size_mb"),
            **bench_figures(bench, TARGETS.get(label, BASELINE))})
    stock = bench_figures(bench, STOCK)
    rows.insert(0, {"model": "stock toolchain's int8 of the LoRA teacher", "artifact": STOCK, **stock,
                    "int8_size_mb": stock["size_mb"]})
    return rows


COLUMNS = [("model", "model"), ("trainable_params", "trainable params"), ("params", "params"),
           ("float_accuracy", "float acc %"), ("int8_accuracy", "int8 acc %"), ("accuracy_drop_pt", "vs teacher pt"),
           ("export_parity", "export parity"), ("quantize_parity", "int8 parity"), ("int8_size_mb", "int8 MB"),
           ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("vs_lora_int8", "× LoRA int8"),
           ("vs_stock_int8", "× stock int8"), ("vs_stock_p10_p90", "× stock p10–p90")]


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(task: str, rows: list[dict], bench: dict) -> str:
    s = bench["settings"]
    runtime = ", ".join(s["runtimes"])
    lines = [f"# Issue 25 figures: {task}", "",
             f"Bench: {runtime}, threads {s.get('threads')}, {bench['cases'][0]['label']} ({s.get('max_samples')} "
             f"sentences of {s.get('data')}), each candidate interleaved with the LoRA int8 and the stock int8 in "
             f"a fresh process per pair; ×: median per-pair speed ratio (baseline time / candidate time), p10–p90 of "
             f"those ratios.",
             f"Machine: {bench['machine'].get('cpu_model', '?')}, {bench['machine'].get('usable_cores')} usable cores, "
             f"1-min load {bench['machine'].get('load_avg_1m', '?')} at the end.", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(key)) for key, _ in COLUMNS) + " |" for r in rows]
    teacher = next((r.get("teacher_accuracy") for r in rows if r.get("teacher_accuracy") is not None), None)
    lines += ["", f"Teacher (the LoRA fine-tune, float torch) accuracy on the eval data: {cell(teacher)} %; "
              "'vs teacher pt' = teacher − int8 artifact (a reference per run: its own fine-tune)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override for every run (edgelm run --set), e.g. bench.seconds=10")
    parser.add_argument("--max-samples", type=int, default=200, help="eval sentences timed (seeded sample)")
    parser.add_argument("--train-only", action="store_true",
                        help="run the recipes without their bench (no timed figure: no need for the heavy lock); a "
                             "later full run resumes after their last stage")
    parser.add_argument("--only", action="append", choices=sorted({n for runs in TASKS.values() for n in runs}),
                        help="run (and table) only this run folder (repeatable; default: all of the task's)")
    args = parser.parse_args(argv)
    if args.only and "lora-bilstm" not in args.only:
        parser.error("--only: lora-bilstm holds the LoRA teacher every other row is compared with; include it")
    sys.path.insert(0, str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    folders = run_recipes(args.task, args.out, args.overrides + (["bench="] if args.train_only else []), args.only)
    if args.train_only:
        return 0
    from edgelm.pipeline.recipe import load_recipe

    recipe = load_recipe(EXAMPLES / TASKS[args.task]["lora-bilstm"], args.overrides)
    b = recipe.bench or {}
    settings = {"runtimes": b.get("runtimes", ["ort-mobile"]), "threads": b.get("threads", [1]),
                "seconds": b.get("seconds", 5.0), "max_samples": args.max_samples}
    bench = interleaved_bench(folders, args.out / "bench", settings, recipe.eval_data.path)
    rows = collect(args.task, folders, bench)
    (args.out / "compare.json").write_text(json.dumps({"task": args.task, "rows": rows,
                                                       "machine": bench["machine"]}, indent=1))
    (args.out / "compare.md").write_text(markdown(args.task, rows, bench))
    print((args.out / "compare.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
