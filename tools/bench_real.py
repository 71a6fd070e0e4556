"""Benchmark the real built-in models end to end on every runtime available here and write the reports.

    flock /tmp/edgelm-heavy.lock python tools/bench_real.py --out runs/bench-real [--seconds 10] [--repeat]

- MiniLM (minilm-l6): SST-2 dev sentences one per call at their own lengths, and fixed b1 x s128, on torch-cpu,
  ort-cpu, ort-mobile (1/2/4 threads), executorch, torch-cuda, ort-cuda (absent ones skipped with the reason).
- SmolLM2 (smollm2-135m): greedy decoding of 128 tokens after a 32-token prompt (TTFT, prefill / decode tok/s).
- --repeat runs the MiniLM bench a second time and reports how far each median moved (reproducibility).

Exports come from the export stage (`edgelm export`, or --reuse an existing export folder); a format that fails
to export is left out and its runtime reported as skipped.
Writes OUT/<model>.json (source of truth), .md/.html per model and OUT/summary.md with p50s side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2_DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
ALL_RUNTIMES = ["torch-cpu", "ort-cpu", "ort-mobile", "executorch", "torch-cuda", "ort-cuda"]


def export(model: str, folder: Path, formats: list[str], existing: str | None = None) -> Path:
    """The export stage's folder for MODEL (reused when present)."""
    from edgelm.core.stage import get_stage

    if existing and (Path(existing) / "edgelm.json").is_file():
        print(f"[bench_real] reusing the export in {existing}", file=sys.stderr)
        return Path(existing)
    if (folder / "edgelm.json").is_file():
        return folder
    from edgelm.pipeline.runner import run_single

    for fewer in range(len(formats)):  # a format that fails to export is left out (its runtime is then skipped)
        asked = formats[:len(formats) - fewer]
        try:
            run_single("export", get_stage("export").Config(formats=asked), model, folder)
            return folder
        except Exception as exc:  # noqa: BLE001 - reported, then retried without the last format
            print(f"[bench_real] export {model} {asked} failed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
    raise SystemExit(f"export of {model} failed in every format")


def bench(folder: Path, out: Path, name: str, **settings) -> dict:
    from edgelm.runtimes.base import resolve_target
    from edgelm.measure.suite import BenchSettings, run_bench, write_bench_json
    from edgelm.measure.bench_report import write_bench_reports

    result = run_bench([resolve_target(folder, name=name)], BenchSettings(compare=False, **settings))
    write_bench_json(result, out / f"{name}.json")
    write_bench_reports(result, out, name)
    return result


def p50_lines(result: dict) -> list[str]:
    lines = []
    for case in result["cases"]:
        cells = []
        for r in result["rows"]:
            label = r["runtime"] + (f"×{r['threads']}t" if r["runtime"] == "ort-mobile" else "")
            if r.get("case") == case["label"] and "p50_ms" in r:
                extra = f", decode {r['decode_tok_s']} tok/s, TTFT {r['ttft_ms']} ms" if r.get("decode_tok_s") else ""
                cells.append(f"{label} {r['p50_ms']} ms{extra}")
            elif "skipped" in r and r.get("case", case["label"]) == case["label"]:
                cells.append(f"{label} skipped ({r['skipped'][:90]})")
            elif "error" in r and r.get("case", case["label"]) == case["label"]:
                cells.append(f"{label} error ({r['error'][:90]})")
        lines.append(f"- {case['label']}: " + "; ".join(cells))
    return lines


def drift(first: dict, second: dict) -> list[str]:
    """How far each (runtime, threads, case) median moved between two identical runs."""
    before = {(r["runtime"], r["threads"], r["case"]): r["p50_ms"] for r in first["rows"] if "p50_ms" in r}
    lines = []
    for r in second["rows"]:
        key = (r.get("runtime"), r.get("threads"), r.get("case"))
        if "p50_ms" in r and key in before:
            change = (r["p50_ms"] - before[key]) / before[key] * 100
            lines.append(f"- {key[0]}{'×' + str(key[1]) + 't' if key[1] else ''} {key[2]}: {before[key]} -> {r['p50_ms']} ms "
                         f"({change:+.1f}%){'' if abs(change) <= 10 else '  ** over 10% **'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-real")
    parser.add_argument("--seconds", type=float, default=8.0, help="time budget per case and runtime")
    parser.add_argument("--samples", type=int, default=200, help="SST-2 dev sentences")
    parser.add_argument("--runtimes", nargs="+", default=ALL_RUNTIMES)
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "smollm2-135m"])
    parser.add_argument("--repeat", action="store_true", help="run the MiniLM bench twice and report the drift")
    parser.add_argument("--decoder-formats", nargs="+", default=["onnx", "ort", "pte"],
                        help="formats to export SmolLM2 to (a .pte decoder export takes many minutes)")
    parser.add_argument("--reuse", nargs="+", default=[], metavar="MODEL=DIR",
                        help="use an existing export folder for MODEL when it holds edgelm.json (saves re-exporting)")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = ["# edgelm real-model benchmarks", ""]
    if "minilm-l6" in args.models:
        folder = folder_minilm = export("minilm-l6", args.out / "minilm-l6-export", ["onnx", "ort", "pte"], reuse.get("minilm-l6"))
        common = dict(runtimes=args.runtimes, shapes=["1x128"], data=str(SST2_DEV) if SST2_DEV.is_file() else None,
                      max_samples=args.samples, seconds=args.seconds)
        first = bench(folder, args.out, "minilm-l6", **common)
        summary += ["## MiniLM-L6 (all-MiniLM-L6-v2, sentence embeddings)", "", *p50_lines(first), ""]
    if "smollm2-135m" in args.models:
        folder = export("smollm2-135m", args.out / "smollm2-135m-export", args.decoder_formats, reuse.get("smollm2-135m"))
        result = bench(folder, args.out, "smollm2-135m", runtimes=args.runtimes, shapes=[], prompt_len=32, new_tokens=128,
                       seconds=max(args.seconds, 20.0))
        summary += ["## SmolLM2-135M-Instruct (greedy decode, 32-token prompt, 128 new tokens)", "", *p50_lines(result), ""]
    if args.repeat and "minilm-l6" in args.models:  # last, so the side-by-side figures exist even if cut short
        second = bench(folder_minilm, args.out, "minilm-l6-repeat", **common)
        summary += ["## MiniLM-L6, same bench again (median drift)", "", *drift(first, second), ""]
    machine = json.loads((args.out / f"{'minilm-l6' if 'minilm-l6' in args.models else 'smollm2-135m'}.json").read_text())["machine"]
    summary += [f"Machine: {machine['cpu_model']} ({', '.join(machine['flags'])}), {machine['usable_cores']} cores, "
                f"load avg {machine['load_avg_1m']} at start."]
    (args.out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
