"""Real-model figures for structural compression (issue 7). Run by hand, under the heavy lock:

    flock /tmp/edgelm-heavy.lock python tools/structural_real.py lowrank  [--tokens 16384]
    flock /tmp/edgelm-heavy.lock python tools/structural_real.py prune-lm [--steps 60]
    flock /tmp/edgelm-heavy.lock python tools/structural_real.py minilm   --teacher /work/artifacts/minilm-sst2-lora

Perplexity: WikiText-2 valid (../shared/data/wikitext-2/valid.txt), the first --tokens tokens, non-overlapping
--window-token windows (stride = window), through edgelm.measure.quality.perplexity. Prints one JSON object per experiment (stdout) with machine facts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def machine() -> dict:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def perplexity(bundle, text: str, tokens: int, window: int) -> float:
    """edgelm.measure.quality's sliding-window perplexity with stride = window (non-overlapping windows)."""
    from edgelm.measure.quality import perplexity as evaluate_perplexity, torch_model

    return evaluate_perplexity(torch_model(bundle), text, window=window, stride=window, max_tokens=tokens)["perplexity"]


def run_stage(kind: str, bundle, config: dict, workdir: Path, data=None, initial=None):
    """Run one stage in-process (stage metrics + seconds)."""
    from edgelm.core.stage import StageContext, get_stage

    stage = get_stage(kind)
    ctx = StageContext(workdir=workdir, data=data, initial_bundle=initial or (lambda: bundle))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = stage().run(bundle, stage.Config.model_validate(config), ctx)
    return result, time.perf_counter() - t0


def lowrank(args) -> dict:
    from edgelm.models.loading import load_model
    from edgelm.techniques.lowrank.stage import select_targets, weight_matrix

    text = (DATA / "wikitext-2" / "valid.txt").read_text()
    base = load_model("smollm2-135m")
    total = sum(p.numel() for p in base.model.parameters())
    targets = select_targets(base.model, [], [])
    linear = sum(weight_matrix(base.model.get_submodule(p)).numel() for p in targets)
    ratio = round(args.reduction * total / linear, 4)  # per-layer ratio that removes `reduction` of the model
    out = {"experiment": "smollm2-135m lowrank", "eval": f"wikitext-2 valid, first {args.tokens} tokens, "
           f"window {args.window}, stride {args.window}", "target_model_reduction": args.reduction,
           "per_layer_ratio": ratio, "params_base": total,
           "calibration": f"{args.calib_samples} x 256-token windows of Python's bundled docs (edgelm.data.readers.calibration_texts)"}
    out["ppl_base"] = round(perplexity(base, text, args.tokens, args.window), 3)
    print(json.dumps({"ppl_base": out["ppl_base"]}), file=sys.stderr, flush=True)
    for method in ("svd", "activation"):
        config = {"ratio": ratio, "method": method, "calib_samples": args.calib_samples}
        result, seconds = run_stage("lowrank", base, config, Path(args.work) / method)
        m = result.metrics
        ppl = perplexity(result.bundle, text, args.tokens, args.window)
        out[method] = {"ppl": round(ppl, 3), "ppl_increase": round(ppl - out["ppl_base"], 3),
                       "param_reduction": m["param_reduction"], "params_after": m["params_after"],
                       "factorized": m["factorized"], "stage_seconds": round(seconds, 1)}
        print(json.dumps({method: out[method]}), file=sys.stderr, flush=True)
    out["aware_over_plain_increase"] = round(out["activation"]["ppl_increase"] / out["svd"]["ppl_increase"], 4)
    out["target_met"] = out["aware_over_plain_increase"] <= 0.5
    return out


def prune_lm(args) -> dict:
    """SmolLM2-135M: 25% of FFN neurons pruned (activation importance, pydoc calibration), then a short
    distillation from the unpruned model on WikiText-2 valid text that lies AFTER the evaluated span."""
    from edgelm.data.readers import DataConfig
    from edgelm.models.loading import load_model

    text = (DATA / "wikitext-2" / "valid.txt").read_text()
    base = load_model("smollm2-135m")
    eval_chars = len(base.tokenizer.decode(base.tokenizer(text, add_special_tokens=False)["input_ids"][:args.tokens]))
    train_file = Path(args.work) / "distill-train.txt"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text(text[eval_chars + 1000:])  # a margin after the scored tokens: no overlap
    out = {"experiment": "smollm2-135m prune ffn 25% + distill", "eval": f"wikitext-2 valid, first {args.tokens} "
           f"tokens, window {args.window}, stride {args.window}", "distill_data": f"wikitext-2 valid from char "
           f"{eval_chars + 1000} on (disjoint from the evaluated span)"}
    out["ppl_base"] = round(perplexity(base, text, args.tokens, args.window), 3)
    pruned, seconds = run_stage("prune", base, {"ffn": 0.25}, Path(args.work) / "prune")
    out["prune"] = {k: pruned.metrics[k] for k in ("params_before", "params_after", "param_reduction")}
    out["prune"]["ffn_kept_per_layer"] = sorted({row["ffn"] for row in pruned.metrics["layers"]})
    out["prune"]["stage_seconds"] = round(seconds, 1)
    out["ppl_pruned"] = round(perplexity(pruned.bundle, text, args.tokens, args.window), 3)
    print(json.dumps(out), file=sys.stderr, flush=True)
    config = {"max_steps": args.steps, "batch_size": 4, "max_length": 128, "learning_rate": 1e-4,
              "hidden_weight": 0.0, "eval_fraction": 0.0, "max_samples": args.steps * 4}
    distilled, seconds = run_stage("distill", pruned.bundle, config, Path(args.work) / "distill",
                                   data=DataConfig(path=str(train_file)), initial=lambda: base)
    out["distill"] = {"config": config, "steps": distilled.metrics["steps"], "train_seconds": distilled.metrics["train_seconds"],
                      "loss_terms_last_step": distilled.metrics["loss_terms"]}
    out["ppl_distilled"] = round(perplexity(distilled.bundle, text, args.tokens, args.window), 3)
    return out


def minilm(args) -> dict:
    """MiniLM SST-2 teacher -> prune (heads, FFN) -> distill -> int8 ONNX of both -> ort-cpu bench, b1, dev lengths."""
    import subprocess

    sst2 = DATA / "sst2"
    work = Path(args.work)
    student, distilled = work / "pruned", work / "distilled"
    t_int8, s_int8 = work / "teacher-int8", work / "student-int8"

    def cli(*argv):
        cmd = [sys.executable, "-m", "edgelm", *map(str, argv)] + (["--force"] if "-o" in argv else [])
        print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)

    cli("prune", args.teacher, "-o", student, "--heads", args.heads, "--ffn", args.ffn, "--data", sst2 / "train.tsv")
    cli("distill", student, "--teacher", args.teacher, "--data", sst2 / "train.tsv", "--eval-data", sst2 / "dev.tsv",
        "--max-samples", args.samples, "--epochs", args.epochs, "--learning-rate", 1e-4, "--batch-size", 32, "-o", distilled)
    cli("quantize", args.teacher, "-o", t_int8, "--method", "int8-dynamic")
    cli("quantize", distilled, "-o", s_int8, "--method", "int8-dynamic")
    cli("bench", t_int8, s_int8, "--runtime", "ort-cpu", "--data", sst2 / "dev.tsv", "--json", work / "bench.json")
    from edgelm.core.records import StageMetrics

    metrics = StageMetrics.load(distilled).model_dump()
    return {"experiment": "minilm sst2 prune + distill", "teacher": args.teacher, "prune": {"heads": args.heads, "ffn": args.ffn},
            "distill_metrics": metrics, "bench_json": str(work / "bench.json"),
            "bench": json.loads((work / "bench.json").read_text())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["lowrank", "prune-lm", "minilm"])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--reduction", type=float, default=0.2)
    parser.add_argument("--calib-samples", type=int, default=32, help="lowrank: calibration windows of 256 tokens")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--teacher", default="/work/artifacts/minilm-sst2-lora")
    parser.add_argument("--heads", type=float, default=0.5)
    parser.add_argument("--ffn", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=30000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--work", default="/tmp/edgelm-structural")
    args = parser.parse_args(argv)
    os.environ.setdefault("EDGELM_QUIET", "1")
    fn = {"lowrank": lowrank, "prune-lm": prune_lm, "minilm": minilm}[args.experiment]
    out = fn(args)
    out["machine"] = machine()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
