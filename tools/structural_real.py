"""Real-model figures for structural compression (issue 7). Run by hand, under the heavy lock:

    flock /tmp/edgelm-heavy.lock python tools/structural_real.py lowrank  [--tokens 16384]
    flock /tmp/edgelm-heavy.lock python tools/structural_real.py prune-lm [--steps 60]
    flock /tmp/edgelm-heavy.lock python tools/structural_real.py minilm   --teacher /work/artifacts/minilm-sst2-lora

Perplexity: WikiText-2 valid (../shared/data/wikitext-2/valid.txt), the first --tokens tokens, non-overlapping
--window-token windows (stride = window), through edgelm.evaluate.perplexity. Prints one JSON object per experiment (stdout) with machine facts.
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
    """edgelm.evaluate's sliding-window perplexity with stride = window (non-overlapping windows)."""
    from edgelm.evaluate import perplexity as evaluate_perplexity, torch_model

    return evaluate_perplexity(torch_model(bundle), text, window=window, stride=window, max_tokens=tokens)["perplexity"]


def run_stage(kind: str, bundle, config: dict, workdir: Path, data=None, initial=None):
    from edgelm.stages.base import StageContext, get_stage

    stage = get_stage(kind)
    ctx = StageContext(workdir=workdir, data=data, initial_bundle=initial or (lambda: bundle))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = stage().run(bundle, stage.Config.model_validate(config), ctx)
    return result, time.perf_counter() - t0


def lowrank(args) -> dict:
    from edgelm.loading import load_model
    from edgelm.stages.lowrank import select_targets, weight_matrix

    text = (DATA / "wikitext-2" / "valid.txt").read_text()
    base = load_model("smollm2-135m")
    total = sum(p.numel() for p in base.model.parameters())
    targets = select_targets(base.model, [], [])
    linear = sum(weight_matrix(base.model.get_submodule(p)).numel() for p in targets)
    ratio = round(args.reduction * total / linear, 4)  # per-layer ratio that removes `reduction` of the model
    out = {"experiment": "smollm2-135m lowrank", "eval": f"wikitext-2 valid, first {args.tokens} tokens, "
           f"window {args.window}, stride {args.window}", "target_model_reduction": args.reduction,
           "per_layer_ratio": ratio, "params_base": total}
    out["ppl_base"] = round(perplexity(base, text, args.tokens, args.window), 3)
    for method in ("svd", "activation"):
        result, seconds = run_stage("lowrank", base, {"ratio": ratio, "method": method}, Path(args.work) / method)
        m = result.metrics
        ppl = perplexity(result.bundle, text, args.tokens, args.window)
        out[method] = {"ppl": round(ppl, 3), "ppl_increase": round(ppl - out["ppl_base"], 3),
                       "param_reduction": m["param_reduction"], "params_after": m["params_after"],
                       "factorized": m["factorized"], "stage_seconds": round(seconds, 1)}
        print(json.dumps({method: out[method]}), file=sys.stderr, flush=True)
    out["aware_over_plain_increase"] = round(out["activation"]["ppl_increase"] / out["svd"]["ppl_increase"], 4)
    out["target_met"] = out["aware_over_plain_increase"] <= 0.5
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["lowrank", "prune-lm", "minilm"])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--reduction", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--teacher", default="/work/artifacts/minilm-sst2-lora")
    parser.add_argument("--work", default="/tmp/edgelm-structural")
    args = parser.parse_args(argv)
    os.environ.setdefault("EDGELM_QUIET", "1")
    fn = {"lowrank": lowrank}[args.experiment]
    out = fn(args)
    out["machine"] = machine()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
