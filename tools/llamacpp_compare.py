"""Decode speed of an edgelm int4 ONNX decoder on onnxruntime-cpu against llama.cpp running the model's own
GGUF, side by side on this machine (batch 1, same thread count, same prompt tokens, greedy).

Each measurement runs in a fresh worker process; the runtimes are interleaved round by round (A B, B A, ...)
so load drift hits both alike. The edgelm side is the registered ort-cpu runtime, and both sides are timed by the
bench worker's `measure_case` (statistics from edgelm.measure.timing); the llama.cpp side is the registered
llama-cpp runtime on any GGUF file (`edgelm bench OUT --runtime ort-cpu llama-cpp` does the same for an export
folder that holds model.onnx and model.gguf).

    flock /tmp/edgelm-heavy.lock python tools/llamacpp_compare.py \
        --onnx OUT/int4 [--onnx OUT/fp32 ...] [--gguf path.gguf] --threads 2 --json llamacpp.json

llama.cpp comes from llama-cpp-python (pip install 'edgelm[llamacpp]', built from source). Absent, the llama.cpp
column is skipped with that reason; nothing is substituted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
PROMPT = ("The history of the city begins in the early medieval period, when a small settlement grew up around a "
          "river crossing. Over the following centuries")


# --- workers (one runtime, one fresh process) -----------------------------------------------------------------
def edgelm_runner(folder: str, threads: int):
    """The folder's model.onnx on the ort-cpu runtime (KV-cache generation through the bench runner)."""
    from edgelm.runtimes.base import Target, open_runner

    path = Path(folder).resolve()
    return open_runner("ort-cpu", Target(path.name, path, "causal-lm", {"onnx": path / "model.onnx"}), threads)


def gguf_runner(gguf: str, threads: int):
    """Any GGUF file on the registered llama-cpp runtime."""
    from edgelm.runtimes.base import Target, open_runner

    path = Path(gguf).resolve()
    return open_runner("llama-cpp", Target(path.name, path.parent, "causal-lm", {"gguf": path}), threads)


def prompt_ids(tokenizer_dir: str, prompt_len: int) -> np.ndarray:
    from edgelm.models.loading import load_tokenizer

    ids = load_tokenizer(Path(tokenizer_dir))(PROMPT, return_tensors="np")["input_ids"][:, :prompt_len]
    return ids.astype(np.int64)


def worker(args) -> dict:
    from edgelm.measure.machine import peak_rss_mb
    from edgelm.measure.timing import Budget
    from edgelm.measure.worker import measure_case

    ids = prompt_ids(args.tokenizer, args.prompt_len)
    if args.worker == "llama.cpp":
        runner = gguf_runner(args.path, args.threads)
    else:
        runner = edgelm_runner(args.path, args.threads)
    case = {"kind": "decode", "prompt_len": ids.shape[1], "new_tokens": args.new_tokens}
    figures = measure_case(runner, case, [{"input_ids": ids}], Budget(seconds=args.seconds))
    return {**figures, "first_token": runner.generator().prefill(ids)[0], "peak_rss_mb": peak_rss_mb()}


# --- orchestration ---------------------------------------------------------------------------------------------
def run_worker(kind: str, path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--path", path, "--tokenizer", args.tokenizer,
           "--threads", str(args.threads), "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens),
           "--seconds", str(args.seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["worker failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def llamacpp_missing() -> str | None:
    from edgelm.runtimes.base import unavailable

    return unavailable("llama-cpp")


def compare(args) -> dict:
    from edgelm.measure.machine import library_versions, machine_info
    from edgelm.measure.timing import median

    runtimes = [(f"ort-cpu:{Path(p).name}", "onnx", p) for p in args.onnx]
    skipped = {}
    reason = llamacpp_missing()
    if reason:
        skipped["llama.cpp"] = reason
    else:
        runtimes.append((f"llama.cpp:{Path(args.gguf).name}", "llama.cpp", args.gguf))
    rounds: dict[str, list[dict]] = {name: [] for name, _, _ in runtimes}
    for r in range(args.rounds):
        order = runtimes if r % 2 == 0 else runtimes[::-1]
        for name, kind, path in order:
            rounds[name].append(run_worker(kind, path, args))
            print(f"round {r + 1}/{args.rounds} {name}: {rounds[name][-1].get('decode_tok_s', rounds[name][-1].get('error'))}",
                  file=sys.stderr)
    rows = []
    for name, results in rounds.items():
        ok = [x for x in results if "decode_tok_s" in x and x["decode_tok_s"]]
        rows.append({"runtime": name, "threads": args.threads, "batch": 1, "prompt_len": args.prompt_len,
                     "new_tokens": args.new_tokens, "rounds": len(results),
                     "decode_tok_s": median([x["decode_tok_s"] for x in ok]) if ok else None,
                     "decode_tok_s_per_round": [x.get("decode_tok_s") for x in results],
                     "ttft_ms": median([x["ttft_ms"] for x in ok]) if ok else None,
                     "p50_ms": median([x["p50_ms"] for x in ok]) if ok else None,
                     "peak_rss_mb": max((x["peak_rss_mb"] for x in ok), default=None),
                     "first_token": ok[0]["first_token"] if ok else None,
                     "errors": [x["error"] for x in results if "error" in x]})
    firsts = {row["first_token"] for row in rows if row["first_token"] is not None}
    return {"schema_version": SCHEMA_VERSION, "rows": rows, "first_tokens_agree": len(firsts) <= 1,
            "skipped": skipped, "machine": machine_info(),
            "versions": {**library_versions(), **_llamacpp_version()}, "prompt": PROMPT}


def _llamacpp_version() -> dict:
    import importlib.metadata as md

    try:
        return {"llama-cpp-python": md.version("llama-cpp-python")}
    except md.PackageNotFoundError:
        return {}


def default_gguf() -> str:
    import importlib.util

    from edgelm.models.loading import BUILTIN_MODELS

    spec = BUILTIN_MODELS["smollm2-135m"]
    package = importlib.util.find_spec(spec["package"])
    return str(Path(package.origin).parent / spec["subpath"]) if package else ""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", nargs="+", default=[], help="edgelm export/quantize folders holding model.onnx")
    parser.add_argument("--gguf", default=None, help="GGUF for llama.cpp (default: the built-in SmolLM2 Q4_1)")
    parser.add_argument("--tokenizer", default=None, help="folder with the tokenizer (default: the first --onnx)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per worker")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per runtime")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=["onnx", "llama.cpp"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker:
        if not args.onnx:
            parser.error("give at least one --onnx folder")
        args.gguf = args.gguf or default_gguf()
        args.tokenizer = args.tokenizer or args.onnx[0]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    result = compare(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
